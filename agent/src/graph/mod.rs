//! The Microsoft Graph connector (`fleetpulse-agent graph`): pulls what Intune recorded server
//! side about enrollments (troubleshooting events, Autopilot deployment events) for each
//! configured Entra tenant and ships it as ordinary `EnrollmentEvent`s (`source.kind = GRAPH`).
//!
//! To the collector the connector is one more agent per tenant: each tenant has its own
//! registration (state file with an agent credential, so the Fleetpulse tenant comes from that
//! credential as for every sender), its own spool and its own shipper. It therefore inherits the
//! agent's guarantees unchanged: durable spooling, `batch_seq` exactly-once delivery, dead
//! letters for refused items, heartbeats. What is new here is the pulling side:
//! - [`auth`]: app-only tokens (client credentials, secret or certificate assertion);
//! - [`client`]: paced Graph requests with throttling and token refresh;
//! - [`map`]: pure mapping of Graph records onto events;
//! - [`cursor`]: the per-collection watermark with overlap and `nextLink` resume, committed in
//!   the spool with the events it covers;
//! - [`connector`]: the per-tenant loop tying them together.

pub mod auth;
pub mod client;
pub mod config;
pub mod connector;
pub mod cursor;
pub mod map;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::config::{ConfigArgs, Settings};
use crate::runner::open_spool;
use crate::shipper::client::{self as grpc, DeviceIdentity};
use crate::shipper::{SharedSpool, Shipper, ShipperStats, run_heartbeats};

use crate::spool::deadletter::DeadLetter;
use crate::state::AgentState;
use config::{GraphFile, GraphSettings, TenantSettings};
use connector::TenantConnector;

/// `fleetpulse-agent graph`: the Microsoft Graph (Intune) connector.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    #[command(subcommand)]
    pub command: GraphCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum GraphCommand {
    /// Register one configured tenant with the collector (once per tenant), using an
    /// enrollment token of the Fleetpulse tenant its events belong to.
    Register(GraphRegisterArgs),
    /// Pull every configured tenant's Graph events and ship them, until stopped (or once with
    /// --once).
    Run(GraphRunArgs),
}

#[derive(Debug, clap::Args)]
pub struct GraphRegisterArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The `[[tenant]]` name in the config file.
    #[arg(long, value_name = "NAME")]
    pub tenant: String,
    /// Fleetpulse enrollment token (`fleetpulse-collector token create --tenant T`).
    #[arg(
        long,
        env = "FLEETPULSE_GRAPH_ENROLLMENT_TOKEN",
        value_name = "fpe_..."
    )]
    pub enrollment_token: String,
    /// Replace an existing registration of this tenant.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct GraphRunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Poll each tenant once, wait until the collector acknowledged everything spooled (at
    /// most --drain-timeout-secs), then exit; non-zero exit when a poll failed (its cursor is
    /// kept, so the next run resumes). For cron-style scheduling and tests.
    #[arg(long)]
    pub once: bool,
    /// With --once: how long to wait for the collector to take the spooled events.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub drain_timeout_secs: u64,
    /// Seconds between polls (default 300; `poll_interval_secs` in the file).
    #[arg(long, env = "FLEETPULSE_GRAPH_POLL_INTERVAL_SECS", value_name = "SECS")]
    pub poll_interval_secs: Option<u64>,
}

/// Loads and resolves the connector's configuration (`--config` is required).
pub fn load_settings(args: &ConfigArgs) -> anyhow::Result<GraphSettings> {
    let Some(path) = &args.config else {
        bail!("--config FILE is required: the connector's TOML file listing the [[tenant]]s");
    };
    let file = GraphFile::load(path)?;
    Ok(GraphSettings::resolve(args, &file)?)
}

/// The agent settings of one tenant's pipeline (its own state file and spool).
fn tenant_agent_settings(settings: &GraphSettings, tenant: &TenantSettings) -> Settings {
    let mut agent = settings.agent.clone();
    agent.state_file = tenant.state_file.clone();
    agent.spool_dir = tenant.spool_dir.clone();
    agent
}

/// `graph register`.
pub async fn register(args: GraphRegisterArgs) -> anyhow::Result<()> {
    let settings = load_settings(&args.config)?;
    let tenant = settings.tenant(&args.tenant)?;
    let Some(collector) = settings.agent.collector.clone() else {
        bail!("--collector is required (or `collector` in the config file)");
    };
    if !args.enrollment_token.starts_with("fpe_") {
        bail!("--enrollment-token: expected a token starting with fpe_");
    }
    if tenant.state_file.exists() && !args.force {
        bail!(
            "{} already holds a registration of tenant {}; pass --force to replace it",
            tenant.state_file.display(),
            tenant.name
        );
    }
    let device = DeviceIdentity {
        device_id: format!("graph-connector:{}", tenant.directory_id),
        hostname: grpc::hostname(),
        platform: fleetpulse_proto::v1::Platform::Unspecified,
    };
    let state = grpc::register_and_store(
        &collector,
        &settings.agent.tls,
        &args.enrollment_token,
        device,
        &tenant.spool_dir,
        &tenant.state_file,
        grpc::REGISTER_RETRY_FOR,
    )
    .await?;
    println!(
        "registered Graph tenant {} ({}) as agent {} of Fleetpulse tenant {}",
        tenant.name, tenant.directory_id, state.agent_id, state.tenant
    );
    Ok(())
}

/// One running tenant pipeline.
struct Pipeline {
    name: String,
    connector: TenantConnector,
    spool: SharedSpool,
    shipper: tokio::task::JoinHandle<Result<(), crate::shipper::ShipperError>>,
    heartbeats: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

fn start_pipeline(settings: &GraphSettings, tenant: &TenantSettings) -> anyhow::Result<Pipeline> {
    let agent = tenant_agent_settings(settings, tenant);
    let state = AgentState::load(&tenant.state_file).map_err(|err| {
        anyhow::anyhow!(
            "tenant {}: {err} (register it with `fleetpulse-agent graph register --tenant {} --enrollment-token fpe_...`)",
            tenant.name,
            tenant.name
        )
    })?;
    let collector = agent
        .collector
        .clone()
        .unwrap_or_else(|| state.collector_url.clone());
    let spool = SharedSpool::new(open_spool(&agent, &state)?);
    let dead_letter = DeadLetter::new(&tenant.spool_dir);
    let channel = grpc::channel(&collector, &agent.tls)?;
    let ingest = grpc::ingest_client(channel, &state.agent_credential)?;
    let stats = Arc::new(ShipperStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let shipper = Shipper::new(
        spool.clone(),
        dead_letter,
        ingest,
        agent.shipper.clone(),
        state.clone(),
        Some(tenant.state_file.clone()),
        stats.clone(),
    );
    let shipper = tokio::spawn(shipper.run(stop_rx.clone()));
    let heartbeats = tokio::spawn(run_heartbeats(
        spool.clone(),
        state.clone(),
        stats,
        agent.shipper.heartbeat_interval,
        stop_rx,
    ));
    let http = reqwest::Client::builder()
        .user_agent(concat!("fleetpulse-graph/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTPS client")?;
    let client = client::GraphClient::new(http, tenant)?;
    let connector = TenantConnector::new(
        tenant.clone(),
        client,
        spool.clone(),
        state.agent_id.clone(),
        agent.spool.max_bytes,
    );
    tracing::info!(tenant = %tenant.name, directory = %tenant.directory_id, agent_id = %state.agent_id, fleetpulse_tenant = %state.tenant, collector = %collector, "Graph tenant pipeline started");
    Ok(Pipeline {
        name: tenant.name.clone(),
        connector,
        spool,
        shipper,
        heartbeats,
        stop,
    })
}

/// `graph run`: every tenant in its own task; returns an error when a tenant failed (with
/// `--once`) or could not start.
pub async fn run(args: GraphRunArgs, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut settings = load_settings(&args.config)?;
    if let Some(secs) = args.poll_interval_secs {
        if secs == 0 {
            bail!("--poll-interval-secs must be at least 1");
        }
        settings.poll_interval = Duration::from_secs(secs);
    }
    let mut pipelines = Vec::new();
    for tenant in &settings.tenants {
        pipelines.push(start_pipeline(&settings, tenant)?);
    }
    let mut tasks = Vec::new();
    for pipeline in pipelines {
        let shutdown = shutdown.clone();
        let interval = settings.poll_interval;
        let once = args.once;
        let drain = Duration::from_secs(args.drain_timeout_secs);
        tasks.push(tokio::spawn(tenant_loop(
            pipeline, interval, once, drain, shutdown,
        )));
    }
    let mut failed = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failed.push(format!("{err:#}")),
            Err(err) => failed.push(format!("tenant task failed: {err}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

async fn tenant_loop(
    mut pipeline: Pipeline,
    interval: Duration,
    once: bool,
    drain: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    loop {
        let polled = pipeline
            .connector
            .poll(time::OffsetDateTime::now_utc(), &shutdown)
            .await;
        if once {
            if let Err(err) = polled {
                result = Err(anyhow::anyhow!("tenant {}: {err}", pipeline.name));
            }
            wait_drained(&pipeline, drain, &shutdown).await;
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    let stats = pipeline.connector.client().stats.clone();
    tracing::info!(
        tenant = %pipeline.name,
        graph_requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        throttled = stats.throttled.load(std::sync::atomic::Ordering::Relaxed),
        retries = stats.retries.load(std::sync::atomic::Ordering::Relaxed),
        token_requests = pipeline.connector.client().tokens().requests.load(std::sync::atomic::Ordering::Relaxed),
        "Graph tenant pipeline stopping"
    );
    let _ = pipeline.stop.send(true);
    let _ = pipeline.heartbeats.await;
    match tokio::time::timeout(Duration::from_secs(5), pipeline.shipper).await {
        Ok(Ok(shipped)) => shipped?,
        Ok(Err(err)) => bail!("shipper task of tenant {} failed: {err}", pipeline.name),
        Err(_) => {
            tracing::warn!(tenant = %pipeline.name, "shipper did not finish within 5 s; unsent data stays spooled")
        }
    }
    result
}

/// Waits until the spool holds nothing unacknowledged (or the deadline, or shutdown).
async fn wait_drained(pipeline: &Pipeline, limit: Duration, shutdown: &watch::Receiver<bool>) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match pipeline.spool.stats().await {
            Ok(stats) if stats.depth == 0 => return,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(tenant = %pipeline.name, error = %err, "cannot read spool figures");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            tracing::warn!(tenant = %pipeline.name, "not everything was acknowledged in time; it stays spooled for the next run");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a tenant's refused Graph records are kept (for `status`-like tooling and tests).
pub fn refused_file(tenant: &TenantSettings) -> PathBuf {
    tenant.spool_dir.join(connector::REFUSED_FILE)
}
