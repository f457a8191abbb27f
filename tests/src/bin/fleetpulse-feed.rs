//! A steady synthetic telemetry stream into a collector, for demos (`scripts/run.sh` uses it
//! when the agent's own simulator is not available) and for soak runs.
//!
//! Registers `--agents` devices with an enrollment token, then every second each agent pushes
//! its share of `--rate` enrollment events (plus a device-state snapshot and a heartbeat every
//! 30 s), exactly as an agent would: sequence numbers from 1, a batch is retried unchanged on
//! UNAVAILABLE until acknowledged. Runs until Ctrl-C or SIGTERM; progress every 10 s on stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_proto::v1::{Platform, PushRequest, RegisterRequest};
use fleetpulse_tests::harness::bearer;
use fleetpulse_tests::harness::synthetic::{Synth, heartbeat_item, state_item};
use tokio::signal::unix::{SignalKind, signal};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Streams realistic synthetic enrollment telemetry into a Fleetpulse collector.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Collector gRPC URL (`https://...` for TLS).
    #[arg(
        long,
        env = "FLEETPULSE_FEED_COLLECTOR",
        default_value = "http://127.0.0.1:7600"
    )]
    collector: String,
    /// Tenant enrollment token (`fleetpulse-collector token create --tenant T`).
    #[arg(long, env = "FLEETPULSE_FEED_TOKEN")]
    token: String,
    /// Simulated agents (devices).
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Enrollment events per second across all agents.
    #[arg(long, default_value_t = 200)]
    rate: usize,
    /// Seed of the synthetic data (same seed, same devices and events).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// PEM CA certificate to trust for an `https://` collector.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
}

struct Agent {
    id: String,
    device: String,
    credential: String,
    next_seq: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut endpoint = Endpoint::from_shared(args.collector.clone())
        .context("parse --collector")?
        .connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca {
        let pem = std::fs::read_to_string(ca).with_context(|| format!("read {}", ca.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))?;
    }
    // Set on Ctrl-C/SIGTERM so that a retry loop waiting for a dead collector ends too.
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let stopping = Arc::clone(&stopping);
        let mut sigterm = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
            }
            stopping.store(true, Ordering::SeqCst);
        });
    }
    let channel = endpoint.connect_lazy();
    let client = IngestServiceClient::new(channel);
    let mut synth = Synth::new(args.seed);
    let mut agents = Vec::with_capacity(args.agents);
    for _ in 0..args.agents.max(1) {
        let device = synth.device_id();
        let registered = retry_unavailable(&stopping, || {
            let mut client = client.clone();
            let request = RegisterRequest {
                enrollment_token: args.token.clone(),
                device_id: device.clone(),
                hostname: format!("DESKTOP-{}", &device[..8].to_ascii_uppercase()),
                platform: Platform::Windows as i32,
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            async move { client.register(request).await }
        })
        .await
        .context("register")?
        .into_inner();
        agents.push(Agent {
            id: registered.agent_id,
            device,
            credential: registered.agent_credential,
            next_seq: 1,
        });
    }
    eprintln!(
        "feed: {} agents registered at {}, {} events/s; Ctrl-C stops",
        agents.len(),
        args.collector,
        args.rate
    );

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let per_agent = args.rate.div_ceil(agents.len());
    let started = Instant::now();
    let mut sent = 0u64;
    let mut last_report = Instant::now();
    let mut seconds = 0u64;
    while !stopping.load(Ordering::SeqCst) {
        tick.tick().await;
        let now = SystemTime::now();
        for agent in &mut agents {
            let mut items = synth.event_items(
                &agent.id,
                std::slice::from_ref(&agent.device),
                per_agent,
                now,
                Duration::from_millis(3),
            );
            if seconds.is_multiple_of(30) {
                items.push(state_item(synth.device_state(
                    &agent.id,
                    &agent.device,
                    now,
                )));
                items.push(heartbeat_item(synth.heartbeat(
                    &agent.id,
                    &agent.device,
                    now,
                )));
            }
            let batch = PushRequest {
                batch_seq: agent.next_seq,
                items,
                all_or_nothing: false,
            };
            let credential = agent.credential.clone();
            let response = retry_unavailable(&stopping, || {
                let mut client = client.clone();
                let request = bearer(&credential, batch.clone());
                async move { client.push(request).await }
            })
            .await;
            match response {
                Ok(r) => {
                    let r = r.into_inner();
                    sent += u64::from(r.accepted);
                    for rejection in r.rejected {
                        eprintln!("feed: rejected {}: {}", rejection.field, rejection.reason);
                    }
                }
                Err(status) => eprintln!(
                    "feed: agent {} batch {} dropped: {status}",
                    agent.id, agent.next_seq
                ),
            }
            agent.next_seq += 1;
        }
        seconds += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "feed: {sent} items acknowledged in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!("feed: stopped after {sent} acknowledged items");
    Ok(())
}

/// Retries `f` while it answers UNAVAILABLE (collector or storage down), with backoff up to
/// 5 s, until `stopping` is set.
async fn retry_unavailable<T, F, Fut>(stopping: &AtomicBool, mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match f().await {
            Err(s) if s.code() == Code::Unavailable && !stopping.load(Ordering::SeqCst) => {
                eprintln!(
                    "feed: collector unavailable ({}), retrying in {backoff:?}",
                    s.message()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
