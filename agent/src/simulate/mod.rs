//! `fleetpulse-agent simulate`: a virtual fleet through the real agent pipeline.
//!
//! Each tenant (one enrollment token each) gets `--agents-per-tenant` virtual agents. A
//! virtual agent is a real agent minus the OS sources: it registers with the token (state
//! file in its own directory, reused on the next run), has its own [`Spool`] and [`Shipper`],
//! and sends heartbeats; its devices' traffic comes from the seeded [`model::Generator`].
//! So the simulator exercises exactly the code paths of `fleetpulse-agent run`.
//!
//! Traffic comes from the seeded model (`model.rs`, `profile.rs`, `rhythm.rs`; documented in
//! docs/simulator.md): sessions arrive as a Poisson process following the tenants' working
//! week, fail with their tenant's per-category probabilities and retry until fixed or given
//! up. With the same `--seed` (and `--start-at`) the same run produces the same events; only
//! the batching depends on timing.

pub mod model;
pub mod profile;
pub mod rhythm;
pub mod spike;
pub mod timeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetpulse_proto::v1::{GetLimitsRequest, Platform, TelemetryItem, telemetry_item};
use tokio::sync::watch;

use crate::config::{Compression, ShipperSettings, TlsSettings};
use crate::shipper::client::{self, DeviceIdentity};
use crate::shipper::{SharedSpool, Shipper, ShipperStats, run_heartbeats};
use crate::spool::deadletter::DeadLetter;
use crate::spool::{Spool, SpoolConfig};
use crate::state::{AgentState, STATE_FORMAT};
use model::{Category, Fleet, FleetSpec, Generator};
use profile::{ModelConfig, TenantProfile};
use spike::{Spike, SpikeWindow, parse_duration};
use timeline::{LiveSpan, Timeline};

/// Arguments of `fleetpulse-agent simulate`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  A 2000-device fleet of two tenants at 100 sessions/s (weekly average) for 15 minutes, with a licence failure \
spike after 10 minutes:\n    fleetpulse-agent simulate --collector http://127.0.0.1:7600 \\\n      --enrollment-token fpe_... --enrollment-token fpe_... \\\n      --devices 2000 --rate 100 --duration 15m --seed 42 --spike license:x20@10m\n  A week of history, then live until Ctrl-C, with a spike starting 5 minutes after launch:\n    fleetpulse-agent simulate --collector http://127.0.0.1:7600 --enrollment-token fpe_... \\\n      --rate 1 --backfill 7d --duration forever --spike license:x20@7d5m+30m \\\n      --spike-report spikes.ndjson\n\nPhases: the backfill is generated as fast as the collector takes it (progress lines say \
`backfill` with the simulated time reached), then live events follow the clock. With --duration 0s \
the run stops after the backfill once the spools are drained (or --drain-timeout passed)."
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
    /// New enrollment sessions per second over the whole fleet, averaged over a week: the
    /// working day and week, refresh waves and fleet growth shape it (business hours run at
    /// ~2-3x, nights and weekends far below); retries of failed sessions, state snapshots and
    /// heartbeats come on top.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Length of the live phase (after the backfill): 90s, 10m, 1h, or `forever` (until
    /// Ctrl-C or SIGTERM). `0s` stops right after the backfill (and the drain).
    #[arg(long, default_value = "60s", value_name = "DURATION|forever")]
    pub duration: LiveSpan,
    /// Generate this span of past history first (7d, 12h, 90m), as fast as the spool and the
    /// collector take it, then continue live. Timestamps lie in the past: without --start-at,
    /// history covers [now - BACKFILL, now) and live events carry the current time. The
    /// collector refuses timestamps older than its retention (`retention_days`, advertised as
    /// `max_age_seconds` by GetLimits): a backfill reaching further back is refused before
    /// anything is generated.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub backfill: Duration,
    /// Write one JSON object per spike to FILE when the run starts:
    /// `{"category","multiplier","start","end"}` with RFC 3339 times (`end` null when the spike
    /// lasts until the run is interrupted).
    #[arg(long, value_name = "FILE")]
    pub spike_report: Option<PathBuf>,
    /// Fleet model file (TOML): base failure rate, category mix, tenant profiles, time zones,
    /// growth, seasonality and waves; see docs/simulator.md. Default: the documented defaults.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Share of new sessions whose first attempt fails in a typical tenant (overrides the
    /// model file's `failure_rate`; default 0.08). Healthy tenants fail 0.4x as often,
    /// misconfigured ones about 2.7x.
    #[arg(long, value_name = "SHARE")]
    pub failure_rate: Option<f64>,
    /// Profiles of the tenants in token order (healthy, typical, misconfigured), comma
    /// separated; overrides the model file's `tenants`. Default: healthy,misconfigured.
    #[arg(long, value_delimiter = ',', value_name = "PROFILE,...")]
    pub tenant_profiles: Vec<TenantProfile>,
    /// Random seed: the same seed gives the same fleet and the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Failure spike `<category>:x<factor>@<offset>[+<duration>]`, e.g. license:x20@10m; the
    /// offset counts from the start of the run, i.e. of the backfill when there is one
    /// (`--backfill 7d --spike license:x20@6d+2h` puts a spike in yesterday's history). Its
    /// start and end are logged and written to --spike-report.
    /// Categories: device_limit, license, tpm_attestation, unsupported_device, tenant_config,
    /// already_enrolled, network, certificate, autopilot, platform_restricted. Repeatable.
    #[arg(long = "spike", value_name = "SPEC")]
    pub spikes: Vec<Spike>,
    /// Directory of the virtual agents' state files and spools (reused across runs).
    #[arg(long, default_value = "fleetpulse-sim", value_name = "DIR")]
    pub spool_dir: PathBuf,
    /// Time of the first event (RFC 3339); default: now minus --backfill. Fixing it makes runs
    /// byte-identical; the live phase then starts once the backfill is generated.
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
    /// Most items per Push (the collector's advertised limit caps it).
    #[arg(long, default_value_t = 5000)]
    pub batch_max_items: u32,
    /// Spool cap per virtual agent, in bytes.
    #[arg(long, default_value_t = crate::spool::DEFAULT_MAX_BYTES)]
    pub spool_max_bytes: u64,
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub events: u64,
    /// Events timestamped before the live phase (history).
    pub backfilled_events: u64,
    pub states: u64,
    pub attempts: u64,
    pub failures_by_category: BTreeMap<String, u64>,
    pub items_acked: u64,
    pub spool_depth_left: u64,
    pub dropped: u64,
    /// Items the collector refused (kept in the spools' dead-letter files).
    pub dead_lettered: u64,
    /// Enrollment sessions started, and how many succeeded at the first attempt.
    pub sessions: u64,
    pub first_time_right: u64,
    /// Sessions that gave up (cause never fixed) and sessions still retrying at the end.
    pub gave_up: u64,
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
    // Retried while the collector rate-limits or sheds registrations: a whole simulated
    // fleet enrolls at once, which is exactly what Register's rate limit slows down.
    let response = client::register_retrying(channel, token, &identity, client::REGISTER_RETRY_FOR)
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
    if args.backfill.is_zero() && args.duration.0 == Some(Duration::ZERO) {
        bail!(
            "--duration 0s without --backfill simulates nothing: give a length, `--duration forever` \
             (until Ctrl-C), or a --backfill"
        );
    }
    let mut timeline = match &args.start_at {
        Some(text) => Timeline::fixed(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--start-at {text:?} is not an RFC 3339 time"))?,
            args.backfill,
            args.duration.0,
        ),
        None => Timeline::ending_now(
            time::OffsetDateTime::now_utc(),
            args.backfill,
            args.duration.0,
        ),
    };
    let mut model = match &args.model {
        Some(path) => ModelConfig::load(path).with_context(|| "--model")?,
        None => ModelConfig::default(),
    };
    if let Some(rate) = args.failure_rate {
        model.failure_rate = rate;
    }
    if !args.tenant_profiles.is_empty() {
        model.tenants = args.tenant_profiles.clone();
    }
    model.validate().context("fleet model")?;
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
    // Heartbeats stop before the shippers, so the final drain has an end.
    let (heartbeat_stop_tx, heartbeat_stop_rx) = watch::channel(false);
    let mut agents = Vec::new();
    let mut tasks = Vec::new();
    let mut heartbeat_tasks = Vec::new();
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
            if agents.is_empty() {
                check_history_reach(ingest.clone(), &timeline).await?;
            }
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
            heartbeat_tasks.push(tokio::spawn({
                let (spool, state, stats, rx) = (
                    spool.clone(),
                    state.clone(),
                    stats.clone(),
                    heartbeat_stop_rx.clone(),
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
    let mut generator = Generator::new(
        fleet,
        args.seed,
        args.spikes.clone(),
        timeline.start,
        timeline.backfill,
        args.rate,
        model,
    );
    for category in generator.impossible_spikes() {
        tracing::warn!(
            category = category.name(),
            "no device of this fleet can fail with this category; its spike adds nothing"
        );
    }
    let windows: Vec<SpikeWindow> = args
        .spikes
        .iter()
        .map(|s| SpikeWindow::on(s, &timeline))
        .collect();
    for window in &windows {
        eprintln!("{}", window.describe());
    }
    if let Some(path) = &args.spike_report {
        spike::write_report(path, &windows)
            .with_context(|| format!("writing --spike-report {}", path.display()))?;
    }
    eprintln!(
        "simulating {} devices, {} tenant(s), {} virtual agent(s), {} sessions/s on weekly average{}{}",
        args.devices,
        tokens.len(),
        agents.len(),
        args.rate,
        if args.backfill.is_zero() {
            String::new()
        } else {
            format!(
                ", history from {} generated first",
                format_time(timeline.start)
            )
        },
        match args.duration.0 {
            None => ", then live until Ctrl-C".to_owned(),
            Some(d) => format!(", then live for {}s", d.as_secs_f64()),
        }
    );

    let mut summary = Summary {
        agents: agents.len(),
        ..Summary::default()
    };
    // The spool holds what the collector has not acknowledged yet; the backfill waits when a
    // spool is half full, so its drop-oldest cap never discards history.
    let backpressure_bytes = (args.spool_max_bytes / 2).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let began = Instant::now();
    let mut last_report = Instant::now();
    let mut last_events = 0u64;
    let mut spike_logged = vec![(false, false); args.spikes.len()];
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let end = timeline.end();
    loop {
        let generated = generator.peek();
        let due = timeline.due(
            generated >= timeline.backfill,
            time::OffsetDateTime::now_utc(),
            Instant::now(),
        );
        let finished_before = end.is_some_and(|end| generated >= end);
        let fast = due.saturating_sub(generated) > FAST_LAG;
        if fast {
            let mut full = false;
            for agent in &agents {
                full |= agent.spool.stats().await?.bytes >= backpressure_bytes;
            }
            let wait = if full {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut ctrl_c => {
                    eprintln!("interrupted: stopping generation, draining spools");
                    break;
                }
            }
            if full {
                continue;
            }
        } else if !finished_before {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut ctrl_c => {
                    eprintln!("interrupted: stopping generation, draining spools");
                    break;
                }
            }
        }
        let due = timeline.due(
            generator.peek() >= timeline.backfill,
            time::OffsetDateTime::now_utc(),
            Instant::now(),
        );
        let round_limit = summary.events + CHUNK_EVENTS;
        let mut buffers: BTreeMap<usize, Vec<TelemetryItem>> = BTreeMap::new();
        while generator.peek() < due && summary.events < round_limit {
            let attempt = generator.next_attempt();
            let history = attempt.at < timeline.backfill;
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
                        summary.backfilled_events += u64::from(history);
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
        // One durable append (one fsync) per virtual agent per round: group commit.
        for (agent_index, items) in buffers {
            summary.dropped += agents[agent_index].spool.append(items, None).await?.dropped;
        }
        let generated = generator.peek();
        log_spike_edges(&args.spikes, &timeline, generated, &mut spike_logged);
        let finished = end.is_some_and(|end| generated >= end);
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
            let phase = if fast {
                let span = due.as_secs_f64().max(1.0);
                format!(
                    "backfill {:>5.1}% at {}",
                    (generated.as_secs_f64() / span * 100.0).min(100.0),
                    format_time(timeline.at(generated))
                )
            } else {
                format!("{:>6.1}s", began.elapsed().as_secs_f64())
            };
            eprintln!(
                "[{phase}] events {} ({per_sec:.0}/s), states {}, acked items {acked}, spool depth {depth}{}",
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

    // Drain: stop the heartbeats, then the shippers; a stopping shipper sends what is spooled
    // at once (no batching delay) and returns when its spool is empty or the collector fails.
    let _ = heartbeat_stop_tx.send(true);
    for task in heartbeat_tasks {
        if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(10), task).await {
            tracing::warn!(error = %err, "heartbeat task panicked");
        }
    }
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + args.drain_timeout;
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "virtual agent shipper failed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "virtual agent shipper panicked"),
            Err(_) => tracing::warn!(
                "a virtual agent's spool did not drain within --drain-timeout; what is left stays spooled for the next run"
            ),
        }
    }
    for agent in &agents {
        summary.spool_depth_left += agent.spool.stats().await?.depth;
    }
    summary.items_acked = agents
        .iter()
        .map(|a| a.stats.items_acked.load(Ordering::Relaxed))
        .sum();
    summary.dead_lettered = agents
        .iter()
        .map(|a| a.stats.items_dead_lettered.load(Ordering::Relaxed))
        .sum();
    let failures: u64 = summary.failures_by_category.values().sum();
    let journeys = &generator.stats;
    summary.sessions = journeys.sessions;
    summary.first_time_right = journeys.first_time_right;
    summary.gave_up = journeys.gave_up;
    let share = |n: u64, of: u64| n as f64 * 100.0 / of.max(1) as f64;
    eprintln!(
        "model: {} sessions, first-time-right {:.1}%, {:.1}% of attempts failed, {} enrolled after retries (median time to enroll {}), {} gave up, {} still retrying",
        journeys.sessions,
        share(journeys.first_time_right, journeys.sessions),
        share(failures, summary.attempts),
        journeys.time_to_enroll_secs.len(),
        journeys.median_time_to_enroll().map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1} h", d.as_secs_f64() / 3600.0)
        ),
        journeys.gave_up,
        journeys
            .sessions
            .saturating_sub(journeys.enrolled + journeys.gave_up),
    );
    eprintln!(
        "done: {} events ({} backfilled) and {} states from {} attempts ({failures} failed: {}), {} items acked, {} left in spools, {} dropped, {} refused by the collector",
        summary.events,
        summary.backfilled_events,
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
        summary.dropped,
        summary.dead_lettered,
    );
    Ok(summary)
}

/// The backfill is generated in rounds of at most this many events (one spool append per
/// virtual agent per round), so memory stays bounded and progress flows.
const CHUNK_EVENTS: u64 = 20_000;

/// Generation runs flat out (no tick) while it is more than this far behind the clock.
const FAST_LAG: Duration = Duration::from_secs(2);

/// Margin kept from the collector's maximum age, for the time the backfill itself takes.
const REACH_MARGIN: Duration = Duration::from_secs(3600);

fn format_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Refuses, before generating anything, history the collector would refuse: timestamps older
/// than its advertised `max_age_seconds` (its retention) minus an hour of margin.
async fn check_history_reach(
    mut ingest: client::IngestClient,
    timeline: &Timeline,
) -> anyhow::Result<()> {
    if timeline.backfill.is_zero() && timeline.start >= time::OffsetDateTime::now_utc() {
        return Ok(());
    }
    let limits = match ingest.get_limits(GetLimitsRequest {}).await {
        Ok(limits) => limits.into_inner(),
        Err(status) => {
            tracing::warn!(error = %status.message(), "could not read the collector's limits; old events it refuses will be dead-lettered");
            return Ok(());
        }
    };
    if limits.max_age_seconds == 0 {
        return Ok(());
    }
    let max_age = Duration::from_secs(u64::from(limits.max_age_seconds));
    let oldest_allowed = time::OffsetDateTime::now_utc() - max_age.saturating_sub(REACH_MARGIN);
    if timeline.start < oldest_allowed {
        bail!(
            "history starting at {} reaches further back than the collector accepts: it refuses \
             timestamps older than {} days (its retention_days, advertised as max_age_seconds {}), \
             and the simulator keeps an hour of margin; use a shorter --backfill (or a later \
             --start-at), or raise the collector's retention_days",
            format_time(timeline.start),
            max_age.as_secs() / 86_400,
            limits.max_age_seconds,
        );
    }
    Ok(())
}

/// Logs each spike's start and end once generation passes them.
fn log_spike_edges(
    spikes: &[Spike],
    timeline: &Timeline,
    generated: Duration,
    logged: &mut [(bool, bool)],
) {
    for (spike, (started, ended)) in spikes.iter().zip(logged.iter_mut()) {
        if !*started && generated >= spike.start {
            *started = true;
            eprintln!(
                "spike {} x{} started at {}",
                spike.category.name(),
                spike.factor,
                format_time(timeline.at(spike.start))
            );
        }
        if let Some(d) = spike.duration
            && !*ended
            && generated >= spike.start + d
        {
            *ended = true;
            eprintln!(
                "spike {} x{} ended at {}",
                spike.category.name(),
                spike.factor,
                format_time(timeline.at(spike.start + d))
            );
        }
    }
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
