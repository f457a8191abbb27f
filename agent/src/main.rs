//! `fleetpulse-agent`: the command line. Everything of substance lives in the library.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};
use fleetpulse_agent::config::{ConfigArgs, Settings};
use fleetpulse_agent::shipper::client::{self, DeviceIdentity, this_platform};
use fleetpulse_agent::spool::Spool;
use fleetpulse_agent::state::AgentState;
use fleetpulse_agent::{graph, inspect, runner, simulate};
use fleetpulse_telemetry::LogFormat;

/// The Fleetpulse device agent.
///
/// Reads enrollment signals of this device (Windows event log, dsregcmd, enrollment registry,
/// TPM; macOS profiles; NDJSON files from other systems), keeps them in a durable on-disk
/// spool and ships them to a Fleetpulse collector over gRPC. Nothing collected is deleted
/// before the collector acknowledged it.
///
/// First use: `fleetpulse-agent register --collector URL --enrollment-token fpe_...`, then
/// `fleetpulse-agent run` (usually as a service, see deploy/agent/).
#[derive(Debug, Parser)]
#[command(name = "fleetpulse-agent", version)]
struct Cli {
    /// Log format on stderr: text for people, json for log shippers.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "FLEETPULSE_AGENT_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Collect and ship until stopped (SIGTERM or Ctrl-C stops gracefully).
    Run(RunArgs),
    /// Register this device with a collector using a tenant enrollment token; writes the
    /// state file (agent id and credential, mode 0600).
    Register(RegisterArgs),
    /// Show the registration and the spool's figures (works while the agent runs).
    Status(StatusArgs),
    /// Parse an OS tool's output and print the protocol messages the agent would send, as
    /// JSON lines (proto3 JSON mapping). Nothing is sent.
    Inspect(inspect::InspectArgs),
    /// Windows only: the Service Control Manager entry point (`sc.exe create FleetpulseAgent
    /// start= auto binPath= "...\fleetpulse-agent.exe service --config ...\agent.toml"`); runs
    /// the agent like `run` until the service is stopped.
    Service(ServiceArgs),
    /// Run a simulated fleet of N devices through the real spool and shipper against a
    /// collector (realistic platform mix, failure causes and codes, failure spikes).
    Simulate(simulate::SimulateArgs),
    /// Microsoft Graph connector: pull Intune's server-side enrollment failures and Autopilot
    /// deployment events of each configured Entra tenant (app-only credentials) and ship them
    /// like agent events (source kind `graph`). See README "Connect a Microsoft tenant".
    Graph(graph::GraphArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Watch this directory for *.ndjson files of events (proto3 JSON mapping, one object per
    /// line) and import them as they grow. Also `sources.import_ndjson` in the config file.
    #[arg(long, env = "FLEETPULSE_AGENT_IMPORT_NDJSON", value_name = "DIR")]
    import_ndjson: Option<std::path::PathBuf>,
    /// Seconds between source polls (default 30; `sources.poll_interval_secs`).
    #[arg(long, env = "FLEETPULSE_AGENT_POLL_INTERVAL_SECS", value_name = "SECS")]
    poll_interval_secs: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct ServiceArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

#[derive(Debug, clap::Args)]
struct RegisterArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tenant enrollment token, from `fleetpulse-collector token create --tenant NAME`.
    #[arg(
        long,
        env = "FLEETPULSE_AGENT_ENROLLMENT_TOKEN",
        value_name = "fpe_..."
    )]
    enrollment_token: String,
    /// Stable device identifier (default: a new random UUID, kept in the state file).
    #[arg(long, env = "FLEETPULSE_AGENT_DEVICE_ID")]
    device_id: Option<String>,
    /// Replace an existing registration (the old credential is forgotten, not revoked).
    #[arg(long)]
    force: bool,
    /// Keep retrying for this many seconds while the collector rate-limits registrations
    /// (RESOURCE_EXHAUSTED), is overloaded or unreachable: after its retry-after-ms hint, else
    /// with exponential backoff. A refused or used-up token fails at once.
    #[arg(
        long,
        env = "FLEETPULSE_AGENT_REGISTER_RETRY_SECS",
        value_name = "SECS",
        default_value_t = 600
    )]
    retry_secs: u64,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    fleetpulse_telemetry::restrict_file_modes();
    let cli = Cli::parse();
    if let Command::Inspect(args) = &cli.command {
        // Pure and synchronous: no runtime, no logging setup, output on stdout only.
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        return match inspect::run(args, &mut out)
            .and_then(|()| out.flush().map_err(inspect::InspectError::Write))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        };
    }
    let _guard = match fleetpulse_telemetry::init("fleetpulse-agent", cli.log_format) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: cannot set up logging: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Service(args) = cli.command {
        // The SCM calls back on its own thread, which builds its own runtime.
        return match fleetpulse_agent::service::run(args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The agent proper (`run`) ships a few events per second: one runtime thread is plenty and
    // keeps the resident set small. The simulator drives many virtual agents: two threads.
    let mut builder = if matches!(cli.command, Command::Simulate(_)) {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    } else {
        limit_malloc_arenas();
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.max_blocking_threads(4).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives every thread that allocates its own malloc arena (64 MiB reserved, a few hundred
/// KiB touched each); with the spool's blocking threads that is most of the agent's resident
/// set. One arena is enough for a process that allocates this little.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning and is thread-safe in glibc.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Register(args) => register(args).await,
        Command::Status(args) => status(args),
        Command::Simulate(args) => simulate::run(args).await.map(|_| ()),
        Command::Graph(args) => match args.command {
            graph::GraphCommand::Register(args) => graph::register(args).await,
            graph::GraphCommand::Run(args) => graph::run(args, stop_signal()).await,
        },
        Command::Inspect(_) | Command::Service(_) => unreachable_inspect(),
    }
}

fn unreachable_inspect() -> anyhow::Result<()> {
    bail!("inspect and service are handled before the runtime starts")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut settings = Settings::resolve(&args.config)?;
    if let Some(dir) = args.import_ndjson {
        settings.import_ndjson = Some(dir);
    }
    if let Some(secs) = args.poll_interval_secs {
        if secs == 0 {
            bail!("--poll-interval-secs must be at least 1");
        }
        settings.poll_interval = std::time::Duration::from_secs(secs);
    }
    runner::run(settings, stop_signal()).await
}

/// A flag that turns true on SIGTERM or Ctrl-C.
fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stop signal received");
        let _ = tx.send(true);
    });
    rx
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args.config)?;
    let Some(collector) = settings.collector.clone() else {
        bail!(
            "--collector is required (or FLEETPULSE_AGENT_COLLECTOR, or `collector` in the config file)"
        );
    };
    if !args.enrollment_token.starts_with("fpe_") {
        bail!(
            "--enrollment-token: expected a token starting with fpe_ (from `fleetpulse-collector token create`)"
        );
    }
    if settings.state_file.exists() && !args.force {
        bail!(
            "{} already holds a registration; pass --force to replace it",
            settings.state_file.display()
        );
    }
    let device = DeviceIdentity {
        device_id: args
            .device_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string()),
        hostname: client::hostname(),
        platform: this_platform(),
    };
    let state = client::register_and_store(
        &collector,
        &settings.tls,
        &args.enrollment_token,
        device,
        &settings.spool_dir,
        &settings.state_file,
        std::time::Duration::from_secs(args.retry_secs),
    )
    .await?;
    println!(
        "registered agent {} for tenant {} with {collector}",
        state.agent_id, state.tenant
    );
    println!(
        "state written to {} (mode 0600)",
        settings.state_file.display()
    );
    Ok(())
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(&args.config)?;
    let state = AgentState::load(&settings.state_file).ok();
    let stats = match Spool::peek_stats(&settings.spool_dir) {
        Ok(stats) => Some(stats),
        Err(err) if !settings.spool_dir.exists() => {
            tracing::debug!(error = %err, "no spool yet");
            None
        }
        Err(err) => return Err(err.into()),
    };
    if args.json {
        let value = serde_json::json!({
            "registered": state.is_some(),
            "agent_id": state.as_ref().map(|s| s.agent_id.clone()),
            "tenant": state.as_ref().map(|s| s.tenant.clone()),
            "collector": state.as_ref().map(|s| s.collector_url.clone()),
            "spool_dir": settings.spool_dir,
            "spool": stats,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match &state {
        Some(state) => println!(
            "agent:     {} (tenant {}, device {})\ncollector: {}",
            state.agent_id, state.tenant, state.device_id, state.collector_url
        ),
        None => println!(
            "agent:     not registered ({} missing or invalid)",
            settings.state_file.display()
        ),
    }
    println!("spool:     {}", settings.spool_dir.display());
    match stats {
        Some(s) => println!(
            "  depth {} item(s) in {} bytes ({} segment(s), {} batch(es) awaiting ack)\n  dropped (spool full) {}, corrupt skipped {}\n  last acked batch {}, next batch {}",
            s.depth,
            s.bytes,
            s.segments,
            s.pending_batches,
            s.dropped_total,
            s.corrupt_total,
            s.last_acked_seq,
            s.next_batch_seq
        ),
        None => println!("  (no spool yet)"),
    }
    Ok(())
}
