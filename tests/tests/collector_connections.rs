//! A fleet's connections (issue 16): 10,000 concurrent agent connections to one collector over
//! loopback, held open, each used, with the collector's memory per idle and per active
//! connection measured and bounded.
//!
//! `FLEETPULSE_TEST_CONNECTIONS` changes the count (default 10000). The figures are printed
//! on the `connections:` line (see BENCHMARKS.md, "Connections").

use std::time::{Duration, SystemTime};

use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_tests::harness::process::{memory, raise_fd_limit};
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{Fixture, poll_eq};
use futures::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

/// Idle connections may cost the collector at most this much memory each.
const IDLE_BOUND: u64 = 64 * 1024;
/// Connections that carried calls may cost at most this much each.
const ACTIVE_BOUND: u64 = 128 * 1024;
/// Of the connections, this many push a batch of 10 events at the same time.
const PUSHING: usize = 1000;

fn connections() -> usize {
    std::env::var("FLEETPULSE_TEST_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn open_connections(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("fleetpulse_collector_grpc_connections_open "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn ten_thousand_agent_connections_with_bounded_memory() -> anyhow::Result<()> {
    let n = connections();
    // Both ends hold one descriptor per connection; the collector inherits the limit.
    let want = n as u64 + 2048;
    let fds = raise_fd_limit(want)?;
    assert!(
        fds >= want,
        "the open-file hard limit allows {fds} descriptors, {want} are needed: raise ulimit -Hn"
    );
    // One agent's credential pushes over a thousand connections at once here, which its
    // per-agent push limit (admission control, 20/s burst 100) would rightly refuse; this test
    // measures connections, so the agent and tenant push limits are off.
    let fx = Fixture::start_with("connections", |b| {
        b.arg("--agent-pushes-rate")
            .arg("0")
            .arg("--tenant-pushes-rate")
            .arg("0")
    })
    .await?;
    let agent = fx.enroll("contoso", "dev-connections").await?;
    let pid = fx.collector.pid().expect("collector running");
    let mut synth = Synth::new(16);
    let at = SystemTime::now() - Duration::from_secs(600);

    // Baseline after a first push (its one-time allocations are not per connection).
    let mut first = fx.collector.client().await?;
    let items = synth.event_items(&agent.agent_id, &[], 10, at, Duration::from_millis(1));
    assert_eq!(agent.push(&mut first, 1, items).await?.accepted, 10);
    let (base, _) = memory(pid).expect("collector memory");

    // Open n connections (HTTP/2 handshakes done), without a call yet.
    let endpoint = fx.collector.endpoint()?;
    let channels: Vec<Channel> = futures::stream::iter(0..n)
        .map(|_| endpoint.connect())
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let expected_open = n as u64 + 1;
    poll_eq(
        Duration::from_secs(60),
        "open gRPC connections",
        Some(expected_open),
        || async {
            fx.collector
                .http_get("/metrics")
                .await
                .map(|r| open_connections(&r.body))
        },
    )
    .await;
    let (idle, _) = memory(pid).expect("collector memory");

    // Every connection makes an authenticated call (through the gate and the credential cache).
    futures::stream::iter(&channels)
        .map(|ch| {
            let agent = &agent;
            async move {
                let mut client = IngestServiceClient::new(ch.clone());
                agent.get_limits(&mut client).await
            }
        })
        .buffer_unordered(256)
        .try_collect::<Vec<_>>()
        .await?;
    // And a thousand of them push at once: 10 events each, all stored exactly once.
    let pushes: Vec<_> = channels
        .iter()
        .take(PUSHING)
        .enumerate()
        .map(|(i, ch)| {
            let items = synth.event_items(&agent.agent_id, &[], 10, at, Duration::from_millis(1));
            (i as u64 + 2, ch.clone(), items)
        })
        .collect();
    let pushed = pushes.len();
    let accepted: Vec<u32> = futures::stream::iter(pushes)
        .map(|(seq, ch, items)| {
            let agent = &agent;
            async move {
                let mut client = IngestServiceClient::new(ch);
                agent
                    .push(&mut client, seq, items)
                    .await
                    .map(|r| r.accepted)
            }
        })
        .buffer_unordered(PUSHING)
        .try_collect()
        .await?;
    assert!(accepted.iter().all(|a| *a == 10), "{accepted:?}");
    assert_eq!(
        fx.count("enrollment_events").await?,
        10 + 10 * pushed as u64
    );
    let (active, peak) = memory(pid).expect("collector memory");

    // Nothing was dropped on the way.
    let metrics = fx.collector.http_get("/metrics").await?.body;
    assert_eq!(open_connections(&metrics), Some(expected_open));

    let per = |rss: u64| rss.saturating_sub(base) / n as u64;
    println!(
        "connections: {n} open; collector RSS {:.1} MiB before, {:.1} MiB idle ({} B per \
         connection), {:.1} MiB after one call on each and {pushed} concurrent pushes ({} B per \
         connection), peak {:.1} MiB",
        base as f64 / 1_048_576.0,
        idle as f64 / 1_048_576.0,
        per(idle),
        active as f64 / 1_048_576.0,
        per(active),
        peak as f64 / 1_048_576.0,
    );
    assert!(
        per(idle) <= IDLE_BOUND,
        "{} B per idle connection",
        per(idle)
    );
    assert!(
        per(active) <= ACTIVE_BOUND,
        "{} B per active connection",
        per(active)
    );
    drop(channels);
    Ok(())
}
