//! Overload soak (issue 13 section 2), bounded for CI: 64 agents over loopback in four tenants,
//! one tenant flooding, ClickHouse paused (SIGSTOP) and resumed in the middle.
//!
//! Every agent behaves like the real shipper: a batch keeps its sequence number until it is
//! acknowledged, a refusal with `retry-after-ms` is retried after the hint, other transient
//! errors after a jittered backoff. Asserted: exact per-tenant row counts in ClickHouse (nothing
//! acknowledged lost, nothing stored twice), the collector's peak RSS (from /proc) bounded, the
//! flooding tenant refused with hints while the well-behaved tenants never are, and the
//! well-behaved tenants' push latency in the loaded phase as a ratio of the same run's
//! unloaded phase (outside the pause).
//!
//! Longer run for BENCHMARKS.md (figures printed as one JSON line):
//! `FLEETPULSE_SOAK_LOADED_SECS=120 FLEETPULSE_SOAK_AGENTS=32 cargo test -p fleetpulse-tests
//! --test collector_soak -- --nocapture`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{
    Collector, Registered, batch, bearer, poll_eq, private, unique_database,
};
use rand::Rng;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set of a process in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What one agent saw.
#[derive(Debug, Default)]
struct AgentLog {
    /// Items acknowledged (each batch once).
    acked_items: u64,
    /// (first attempt, acknowledgement) of every batch.
    pushes: Vec<(Instant, Instant)>,
    resource_exhausted: u64,
    unavailable: u64,
    hints: u64,
}

struct Phase {
    stop: AtomicBool,
    seq_items: AtomicU64,
}

/// Sends batches until `phase.stop`, each retried until acknowledged, like the shipper.
async fn run_agent(
    mut client: IngestServiceClient<Channel>,
    agent: Registered,
    seed: u64,
    batch_items: usize,
    pause_between: Duration,
    phase: Arc<Phase>,
    log: Arc<Mutex<AgentLog>>,
) {
    let mut synth = Synth::new(seed);
    let mut seq = 0u64;
    let start = SystemTime::now() - Duration::from_secs(3600);
    while !phase.stop.load(Ordering::Relaxed) {
        seq += 1;
        let items = synth.event_items(
            &agent.agent_id,
            &[],
            batch_items,
            start + Duration::from_secs(seq),
            Duration::from_millis(1),
        );
        let first = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let request = bearer(&agent.credential, batch(seq, items.clone()));
            match client.push(request).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    assert_eq!(resp.rejected_total, 0, "{resp:?}");
                    let mut l = log.lock().await;
                    l.acked_items += batch_items as u64;
                    l.pushes.push((first, Instant::now()));
                    phase
                        .seq_items
                        .fetch_add(batch_items as u64, Ordering::Relaxed);
                    break;
                }
                Err(status) => {
                    let hint = status
                        .metadata()
                        .get("retry-after-ms")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    {
                        let mut l = log.lock().await;
                        match status.code() {
                            Code::ResourceExhausted => l.resource_exhausted += 1,
                            Code::Unavailable => l.unavailable += 1,
                            _ => {}
                        }
                        if hint.is_some() {
                            l.hints += 1;
                        }
                    }
                    assert!(
                        matches!(
                            status.code(),
                            Code::Unavailable
                                | Code::ResourceExhausted
                                | Code::DeadlineExceeded
                                | Code::Cancelled
                                | Code::Unknown
                        ),
                        "not a transient refusal: {status:?}"
                    );
                    if status.code() == Code::ResourceExhausted {
                        assert!(hint.is_some(), "a rate limit without a hint: {status:?}");
                    }
                    let wait = match hint {
                        Some(ms) => {
                            let ms = ms + rand::thread_rng().gen_range(0..=ms / 5);
                            Duration::from_millis(ms)
                        }
                        None => {
                            let d = backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            d
                        }
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if !pause_between.is_zero() {
            tokio::time::sleep(pause_between).await;
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[v.len() / 2]
}

fn p95(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_soak_flooding_tenant_and_paused_clickhouse() -> anyhow::Result<()> {
    let unloaded_secs = env_u64("FLEETPULSE_SOAK_UNLOADED_SECS", 8);
    let loaded_secs = env_u64("FLEETPULSE_SOAK_LOADED_SECS", 20);
    let per_tenant = env_u64("FLEETPULSE_SOAK_AGENTS", 16) as usize;
    let pause_secs = env_u64("FLEETPULSE_SOAK_PAUSE_SECS", 5);
    let suite_started = Instant::now();

    let ch = private()?;
    let db = unique_database("soak");
    let collector = Collector::builder(ch.url(), &db)
        .args([
            "--clickhouse-timeout-secs",
            "5",
            "--batch-lease-secs",
            "15",
            "--max-pending-rows",
            "20000",
            "--max-batch-items",
            "1000",
            "--tenant-events-rate",
            "1000:2000",
        ])
        .start()
        .await?;
    let pid = collector.pid().expect("collector running");
    let rss_start = peak_rss_kib(pid);

    // Four tenants of `per_tenant` agents each; tenant 0 floods.
    let tenants = ["flood", "calm-a", "calm-b", "calm-c"];
    let mut agents = Vec::new();
    for tenant in tenants {
        let token = collector.token_create(tenant).await?;
        for i in 0..per_tenant {
            agents.push((
                tenant,
                collector.register(&token, &format!("{tenant}-{i}")).await?,
            ));
        }
    }
    let endpoint = collector.endpoint()?;

    let calm_phase = Arc::new(Phase {
        stop: AtomicBool::new(false),
        seq_items: AtomicU64::new(0),
    });
    let flood_phase = Arc::new(Phase {
        stop: AtomicBool::new(false),
        seq_items: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    let mut logs: Vec<(&str, Arc<Mutex<AgentLog>>)> = Vec::new();
    let mut flood_agents = Vec::new();
    for (seed, (tenant, agent)) in agents.into_iter().enumerate() {
        let log = Arc::new(Mutex::new(AgentLog::default()));
        logs.push((tenant, log.clone()));
        let client = IngestServiceClient::new(endpoint.connect().await?)
            .max_decoding_message_size(16 * 1024 * 1024);
        if tenant == "flood" {
            flood_agents.push((client, agent, seed as u64, log));
            continue;
        }
        // Well-behaved: 20 events every half second per agent.
        tasks.push(tokio::spawn(run_agent(
            client,
            agent,
            seed as u64,
            20,
            Duration::from_millis(500),
            calm_phase.clone(),
            log,
        )));
    }

    // Phase 1: unloaded.
    tokio::time::sleep(Duration::from_secs(unloaded_secs)).await;
    let loaded_from = Instant::now();
    // Phase 2: the flood (500-item batches back to back from every agent of the tenant, far
    // beyond its 1000 items/s).
    for (client, agent, seed, log) in flood_agents {
        tasks.push(tokio::spawn(run_agent(
            client,
            agent,
            seed,
            500,
            Duration::ZERO,
            flood_phase.clone(),
            log,
        )));
    }
    let third = Duration::from_secs(loaded_secs) / 3;
    tokio::time::sleep(third).await;
    // ClickHouse paused in the middle of the loaded phase.
    let paused_at = Instant::now();
    let ch_pid = ch.pid().expect("private ClickHouse");
    // SAFETY: kill(2) on the pid of our own private ClickHouse child.
    unsafe { libc::kill(ch_pid as libc::pid_t, libc::SIGSTOP) };
    tokio::time::sleep(Duration::from_secs(pause_secs)).await;
    // SAFETY: as above.
    unsafe { libc::kill(ch_pid as libc::pid_t, libc::SIGCONT) };
    let resumed_at = Instant::now();
    let rest =
        Duration::from_secs(loaded_secs).saturating_sub(third + Duration::from_secs(pause_secs));
    tokio::time::sleep(rest).await;
    let loaded_until = Instant::now();

    // Drain: no new batches; every started batch is retried until acknowledged.
    flood_phase.stop.store(true, Ordering::Relaxed);
    calm_phase.stop.store(true, Ordering::Relaxed);
    let drain = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
        .await
        .expect("every agent's batches acknowledged within 60 s of the end");
    for r in drain {
        r?;
    }
    let drained_at = Instant::now();

    // Exact counts per tenant: what agents had acknowledged, nothing more, nothing less.
    let mut expected = std::collections::BTreeMap::new();
    for (tenant, log) in &logs {
        *expected.entry(*tenant).or_insert(0u64) += log.lock().await.acked_items;
    }
    let count_sql = format!("SELECT count() FROM {db}.enrollment_events WHERE tenant = ?");
    for (tenant, items) in &expected {
        let binds = [*tenant];
        poll_eq(
            Duration::from_secs(10),
            &format!("rows of tenant {tenant}"),
            *items,
            || ch.count(&count_sql, &binds),
        )
        .await;
    }

    // Latency of the well-behaved tenants: unloaded vs loaded outside the pause window (plus
    // the backlog after it), as a ratio of medians within this run.
    let settle = Duration::from_secs(3);
    let mut unloaded = Vec::new();
    let mut loaded = Vec::new();
    let (mut calm_exhausted, mut flood_exhausted, mut flood_hints, mut shed) = (0, 0, 0, 0);
    for (tenant, log) in &logs {
        let l = log.lock().await;
        if *tenant == "flood" {
            flood_exhausted += l.resource_exhausted;
            flood_hints += l.hints;
            continue;
        }
        calm_exhausted += l.resource_exhausted;
        shed += l.unavailable;
        for (first, ack) in &l.pushes {
            let latency = *ack - *first;
            if *first < loaded_from {
                unloaded.push(latency);
            } else if *first < loaded_until
                && !(*first + settle >= paused_at && *first <= resumed_at + settle)
            {
                loaded.push(latency);
            }
        }
    }
    let rss_peak = peak_rss_kib(pid);
    let (u50, l50) = (median(unloaded.clone()), median(loaded.clone()));
    let ratio = l50.as_secs_f64() / u50.as_secs_f64().max(1e-6);
    let loaded_secs_f = (loaded_until - loaded_from).as_secs_f64();
    let figures = serde_json::json!({
        "agents": per_tenant * tenants.len(),
        "unloaded_secs": unloaded_secs,
        "loaded_secs": loaded_secs,
        "pause_secs": pause_secs,
        "rows": expected,
        "flood_events_per_sec_loaded": flood_phase.seq_items.load(Ordering::Relaxed) as f64 / loaded_secs_f,
        "calm_events_per_sec": calm_phase.seq_items.load(Ordering::Relaxed) as f64
            / (loaded_until - suite_started).as_secs_f64().max(1.0),
        "calm_latency_ms": {
            "unloaded_p50": u50.as_millis(), "unloaded_p95": p95(unloaded.clone()).as_millis(),
            "loaded_p50": l50.as_millis(), "loaded_p95": p95(loaded.clone()).as_millis(),
            "ratio_p50": (ratio * 100.0).round() / 100.0,
            "samples": [unloaded.len(), loaded.len()],
        },
        "flood_resource_exhausted": flood_exhausted,
        "flood_hints": flood_hints,
        "calm_unavailable": shed,
        "collector_rss_mib": {"start": rss_start / 1024, "peak": rss_peak / 1024},
        "drain_secs": (drained_at - loaded_until).as_secs_f64(),
        "suite_secs": suite_started.elapsed().as_secs_f64(),
    });
    println!("SOAK {figures}");

    assert!(
        flood_exhausted > 0,
        "the flood never hit its limit: {figures}"
    );
    assert!(flood_hints >= flood_exhausted, "{figures}");
    assert_eq!(
        calm_exhausted, 0,
        "well-behaved tenants rate-limited: {figures}"
    );
    assert!(
        unloaded.len() >= 10 && loaded.len() >= 10,
        "too few samples: {figures}"
    );
    assert!(
        ratio <= 4.0,
        "well-behaved tenants' median push latency grew {ratio:.2}x under the flood: {figures}"
    );
    assert!(
        rss_peak < 512 * 1024,
        "collector peak RSS {} MiB: {figures}",
        rss_peak / 1024
    );
    let metrics = collector.http_get("/metrics").await?.body;
    assert!(
        metrics.contains("fleetpulse_collector_rate_limited_total{limit=\"tenant_events\"}"),
        "{metrics}"
    );
    drop(collector);
    drop(ch);
    Ok(())
}
