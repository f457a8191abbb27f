//! `fleetpulse-agent simulate`: a virtual fleet through the real agent pipeline.
//!
//! Each tenant (one enrollment token each) gets `--agents-per-tenant` virtual agents. A
//! virtual agent is a real agent minus the OS sources: it registers with the token (state
//! file in its own directory, reused on the next run), has its own [`Spool`] and [`Shipper`],
//! and sends heartbeats; its devices' traffic comes from the seeded [`model::Generator`].
//! So the simulator exercises exactly the code paths of `fleetpulse-agent run`.
//!
//! Events are generated on a fixed schedule (`--rate` events per second; event `k` happens at
//! `start + k / rate`), so with the same `--seed` (and `--start-at`) the same run produces the
//! same events; only the batching depends on timing.

pub mod model;
pub mod spike;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetpulse_proto::v1::{Platform, TelemetryItem, telemetry_item};
use tokio::sync::watch;

use crate::config::{Compression, ShipperSettings, TlsSettings};
use crate::shipper::client::{self, DeviceIdentity};
use crate::shipper::{SharedSpool, Shipper, ShipperStats, run_heartbeats};
use crate::spool::deadletter::DeadLetter;
use crate::spool::{Spool, SpoolConfig};
use crate::state::{AgentState, STATE_FORMAT};
use model::{Category, Fleet, FleetSpec, Generator};
use spike::{Spike, parse_duration};

/// Arguments of `fleetpulse-agent simulate`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example: a 2000-device fleet of two tenants at 100 events/s for 15 minutes, with a licence \
failure spike after 10 minutes:\n  fleetpulse-agent simulate --collector http://127.0.0.1:7600 \\\n    --enrollment-token fpe_... --enrollment-token fpe_... \\\n    --devices 2000 --rate 100 --duration 15m --seed 42 --spike license:x20@10m"
)]
pub struct SimulateArgs {
    /// Collector gRPC URL.
    #[arg(long, env = "FLEETPULSE_AGENT_COLLECTOR", value_name = "URL")]
    pub collector: String,
    /// Enrollment token of a tenant (`fleetpulse-collector token create --tenant NAME`).
    /// Repeat once per tenant.
    #[arg(
        long = "enrollment-token",
        value_name = "TOKEN",
        env = "FLEETPULSE_AGENT_ENROLLMENT_TOKEN",
        value_delimiter = ','
    )]
    pub enrollment_tokens: Vec<String>,
    /// File with one enrollment token per line (blank lines and # comments ignored), added to
    /// the --enrollment-token ones.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Number of tenants; must equal the number of tokens given (a check against typos).
    #[arg(long)]
    pub tenants: Option<usize>,
    /// Number of simulated devices, spread evenly over the tenants.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Virtual agents per tenant (each with its own registration, spool and shipper).
    #[arg(long, default_value_t = 1)]
    pub agents_per_tenant: usize,
    /// Enrollment events per second over the whole fleet (state snapshots and heartbeats come
    /// on top).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long to generate: 90s, 10m, 1h; 0 = until Ctrl-C.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Random seed: the same seed gives the same fleet and the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Failure spike `<category>:x<factor>@<offset>[+<duration>]`, e.g. license:x20@10m.
    /// Categories: device_limit, license, tpm_attestation, unsupported_device, tenant_config,
    /// already_enrolled, network, certificate, autopilot, platform_restricted. Repeatable.
    #[arg(long = "spike", value_name = "SPEC")]
    pub spikes: Vec<Spike>,
    /// Directory of the virtual agents' state files and spools (reused across runs).
    #[arg(long, default_value = "fleetpulse-sim", value_name = "DIR")]
    pub spool_dir: PathBuf,
    /// Time of the first event (RFC 3339); default: now. Fixing it makes runs byte-identical.
    #[arg(long, value_name = "RFC3339")]
    pub start_at: Option<String>,
    /// PEM CA certificate of the collector (https:// URLs).
    #[arg(long, env = "FLEETPULSE_AGENT_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Seconds between each virtual agent's heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_interval_secs: u64,
    /// After generation, how long to wait for the spools to drain before exiting.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Most items per Push.
    #[arg(long, default_value_t = 500)]
    pub batch_max_items: u32,
    /// Spool cap per virtual agent, in bytes.
    #[arg(long, default_value_t = crate::spool::DEFAULT_MAX_BYTES)]
    pub spool_max_bytes: u64,
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub events: u64,
    pub states: u64,
    pub attempts: u64,
    pub failures_by_category: BTreeMap<String, u64>,
    pub items_acked: u64,
    pub spool_depth_left: u64,
    pub dropped: u64,
    pub agents: usize,
}

struct VirtualAgent {
    tenant: usize,
    state: AgentState,
    spool: SharedSpool,
    stats: Arc<ShipperStats>,
}

fn read_tokens(args: &SimulateArgs) -> anyhow::Result<Vec<String>> {
    let mut tokens: Vec<String> = args
        .enrollment_tokens
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(path) = &args.tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --tokens-file {}", path.display()))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if tokens.is_empty() {
        bail!("no enrollment token: give --enrollment-token (once per tenant) or --tokens-file");
    }
    if let Some(tenants) = args.tenants
        && tenants != tokens.len()
    {
        bail!(
            "--tenants {tenants} but {} enrollment token(s) were given: each tenant needs its own token",
            tokens.len()
        );
    }
    Ok(tokens)
}

/// Loads a virtual agent's state, or registers it.
async fn load_or_register(
    dir: &Path,
    collector: &str,
    token: &str,
    tls: &TlsSettings,
    identity: DeviceIdentity,
) -> anyhow::Result<AgentState> {
    let path = dir.join("state.json");
    if let Ok(state) = AgentState::load(&path)
        && state.collector_url == collector
    {
        return Ok(state);
    }
    let channel = client::channel(collector, tls)?;
    let response = client::register(channel, token, &identity)
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "registering virtual agent {}: {}: {}",
                identity.device_id,
                crate::shipper::code_name(s.code()),
                s.message()
            )
        })?;
    let state = AgentState {
        format: STATE_FORMAT,
        collector_url: collector.to_owned(),
        agent_id: response.agent_id,
        agent_credential: response.agent_credential,
        tenant: response.tenant,
        device_id: identity.device_id,
        hostname: identity.hostname,
        registered_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        batch_seq_reserved: 1,
    };
    state.store(&path)?;
    Ok(state)
}

/// Runs the simulation (progress on stderr) and returns its figures.
pub async fn run(args: SimulateArgs) -> anyhow::Result<Summary> {
    let tokens = read_tokens(&args)?;
    if args.devices == 0
        || args.agents_per_tenant == 0
        || !(args.rate > 0.0 && args.rate.is_finite())
    {
        bail!("--devices, --agents-per-tenant and --rate must be greater than zero");
    }
    let start = match &args.start_at {
        Some(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--start-at {text:?} is not an RFC 3339 time"))?
        }
        None => time::OffsetDateTime::now_utc(),
    };
    let tls = TlsSettings {
        ca_cert: args.ca_cert.clone(),
        client_cert: args.client_cert.clone(),
        client_key: args.client_key.clone(),
    };
    let channel = client::channel(&args.collector, &tls)?;
    let settings = ShipperSettings {
        batch_max_items: args.batch_max_items,
        compression: Compression::Gzip,
        ..ShipperSettings::default()
    };
    let spool_config = SpoolConfig::with_max_bytes(args.spool_max_bytes);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut agents = Vec::new();
    let mut tasks = Vec::new();
    for (tenant, token) in tokens.iter().enumerate() {
        for index in 0..args.agents_per_tenant {
            let dir = args
                .spool_dir
                .join(format!("tenant-{tenant}"))
                .join(format!("agent-{index}"));
            let identity = DeviceIdentity {
                device_id: format!("fleetpulse-sim-{}-t{tenant}-a{index}", args.seed),
                hostname: format!("fleetpulse-sim-t{tenant}-a{index}"),
                platform: Platform::Windows,
            };
            let state = load_or_register(&dir, &args.collector, token, &tls, identity).await?;
            let mut spool = Spool::open(&dir.join("spool"), spool_config)?;
            if spool.created() {
                spool.ensure_next_seq_at_least(state.batch_seq_reserved)?;
            }
            let dead_letter = DeadLetter::new(spool.dir());
            let spool = SharedSpool::new(spool);
            let stats = Arc::new(ShipperStats::default());
            let ingest = client::ingest_client(channel.clone(), &state.agent_credential)?;
            let shipper = Shipper::new(
                spool.clone(),
                dead_letter,
                ingest,
                settings.clone(),
                state.clone(),
                Some(dir.join("state.json")),
                stats.clone(),
            );
            tasks.push(tokio::spawn(shipper.run(shutdown_rx.clone())));
            tasks.push(tokio::spawn({
                let (spool, state, stats, rx) = (
                    spool.clone(),
                    state.clone(),
                    stats.clone(),
                    shutdown_rx.clone(),
                );
                async move {
                    run_heartbeats(
                        spool,
                        state,
                        stats,
                        Duration::from_secs(args.heartbeat_interval_secs.max(1)),
                        rx,
                    )
                    .await;
                    Ok(())
                }
            }));
            agents.push(VirtualAgent {
                tenant,
                state,
                spool,
                stats,
            });
        }
    }
    let tenant_names: Vec<String> = (0..tokens.len())
        .map(|t| {
            agents
                .iter()
                .find(|a| a.tenant == t)
                .map_or_else(|| format!("tenant{t}"), |a| a.state.tenant.clone())
        })
        .collect();
    let fleet = Fleet::generate(&FleetSpec {
        tenants: tenant_names,
        devices: args.devices,
        agents_per_tenant: args.agents_per_tenant,
        seed: args.seed,
    });
    let mut generator = Generator::new(fleet, args.seed, args.spikes.clone(), start);
    for category in generator.impossible_spikes() {
        tracing::warn!(
            category = category.name(),
            "no device of this fleet can fail with this category; its spike adds nothing"
        );
    }
    eprintln!(
        "simulating {} devices, {} tenant(s), {} virtual agent(s), {} events/s{}",
        args.devices,
        tokens.len(),
        agents.len(),
        args.rate,
        if args.duration.is_zero() {
            " until Ctrl-C".to_owned()
        } else {
            format!(" for {}s", args.duration.as_secs_f64())
        }
    );

    let mut summary = Summary {
        agents: agents.len(),
        ..Summary::default()
    };
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_report = Instant::now();
    let mut last_events = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => {
                eprintln!("interrupted: stopping generation, draining spools");
                break;
            }
        }
        let mut elapsed = began.elapsed();
        let finished = !args.duration.is_zero() && elapsed >= args.duration;
        if finished {
            elapsed = args.duration;
        }
        let target = (elapsed.as_secs_f64() * args.rate).floor() as u64;
        let mut buffers: BTreeMap<usize, Vec<TelemetryItem>> = BTreeMap::new();
        while summary.events < target {
            let at = Duration::from_secs_f64(summary.events as f64 / args.rate);
            let attempt = generator.attempt(at);
            let device = &generator.fleet.devices[attempt.device];
            let agent_index = device.tenant * args.agents_per_tenant + device.agent;
            let agent_id = &agents[agent_index].state.agent_id;
            summary.attempts += 1;
            if let Some(cause) = attempt.cause {
                *summary
                    .failures_by_category
                    .entry(cause.name().to_owned())
                    .or_default() += 1;
            }
            let buffer = buffers.entry(agent_index).or_default();
            for mut item in attempt.items {
                match &mut item.kind {
                    Some(telemetry_item::Kind::Event(event)) => {
                        event.agent_id.clone_from(agent_id);
                        summary.events += 1;
                    }
                    Some(telemetry_item::Kind::State(state)) => {
                        state.agent_id.clone_from(agent_id);
                        summary.states += 1;
                    }
                    _ => {}
                }
                buffer.push(item);
            }
        }
        // One durable append (one fsync) per virtual agent per tick: group commit.
        for (agent_index, items) in buffers {
            summary.dropped += agents[agent_index].spool.append(items, None).await?.dropped;
        }
        if last_report.elapsed() >= Duration::from_secs(1) || finished {
            let acked: u64 = agents
                .iter()
                .map(|a| a.stats.items_acked.load(Ordering::Relaxed))
                .sum();
            let mut depth = 0;
            for agent in &agents {
                depth += agent.spool.stats().await?.depth;
            }
            let per_sec = (summary.events - last_events) as f64
                / last_report.elapsed().as_secs_f64().max(0.001);
            eprintln!(
                "[{:>6.1}s] events {} ({per_sec:.0}/s), states {}, acked items {acked}, spool depth {depth}{}",
                elapsed.as_secs_f64(),
                summary.events,
                summary.states,
                unauthenticated_note(&agents),
            );
            last_report = Instant::now();
            last_events = summary.events;
        }
        if finished {
            break;
        }
    }

    // Drain: wait (bounded) until every spool is empty, then stop the shippers.
    let deadline = Instant::now() + args.drain_timeout;
    loop {
        let mut depth = 0;
        for agent in &agents {
            depth += agent.spool.stats().await?.depth;
        }
        summary.spool_depth_left = depth;
        if depth == 0
            || Instant::now() >= deadline
            || agents
                .iter()
                .any(|a| a.stats.unauthenticated.load(Ordering::Relaxed))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = shutdown_tx.send(true);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "virtual agent task failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "virtual agent task panicked"),
            Err(_) => tracing::warn!("virtual agent task did not stop within 10s"),
        }
    }
    summary.items_acked = agents
        .iter()
        .map(|a| a.stats.items_acked.load(Ordering::Relaxed))
        .sum();
    let failures: u64 = summary.failures_by_category.values().sum();
    eprintln!(
        "done: {} events and {} states from {} attempts ({failures} failed: {}), {} items acked, {} left in spools, {} dropped",
        summary.events,
        summary.states,
        summary.attempts,
        summary
            .failures_by_category
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        summary.items_acked,
        summary.spool_depth_left,
        summary.dropped
    );
    Ok(summary)
}

fn unauthenticated_note(agents: &[VirtualAgent]) -> &'static str {
    if agents
        .iter()
        .any(|a| a.stats.unauthenticated.load(Ordering::Relaxed))
    {
        " (an agent's credential was refused: see the log)"
    } else {
        ""
    }
}

/// Every failure category, for `--help` and validation messages.
pub fn categories() -> Vec<&'static str> {
    Category::ALL.iter().map(|c| c.name()).collect()
}
