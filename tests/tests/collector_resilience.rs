//! Collector behaviour across failures, end to end: ClickHouse down and back, the collector
//! restarted gracefully mid-stream, and the collector killed (-9) with a batch in flight.
//! In every case the agent retries with the same sequence number and each event ends up in
//! ClickHouse exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fleetpulse_agent::shipper::{Disposition, disposition};
use fleetpulse_proto::v1::PushResponse;
use fleetpulse_proto::v1::TelemetryItem;
use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_tests::harness::http::metric_value;
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{
    self, Collector, Fixture, Registered, poll_eq, poll_until, unique_database,
};
use tonic::Code;
use tonic::transport::Channel;

/// Ten minutes before the test binary started: fixed, so that regenerating a batch from its
/// seed yields exactly the same contents (a resend, not a conflicting batch).
fn base_time() -> SystemTime {
    static BASE: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| SystemTime::now() - Duration::from_secs(600))
}

fn items(agent: &Registered, seed: u64, n: usize) -> Vec<TelemetryItem> {
    Synth::new(seed).event_items(
        &agent.agent_id,
        &[],
        n,
        base_time(),
        Duration::from_millis(10),
    )
}

/// What an agent does: resend the same batch until it is acknowledged. Failures the agent's
/// shipper retries (`fleetpulse_agent::shipper::disposition`: connection refused or reset, a
/// collector shutting down, an HTTP/2 GOAWAY surfacing as INTERNAL) are retried; a definite
/// refusal panics.
async fn push_until_acked(
    agent: &Registered,
    client: &mut IngestServiceClient<Channel>,
    seq: u64,
    items: Vec<TelemetryItem>,
    timeout: Duration,
) -> PushResponse {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        match agent.push(client, seq, items.clone()).await {
            Ok(r) => return r,
            Err(s) if disposition(s.code()) == Disposition::Retry => {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("batch {seq} refused for good: {s:?}"),
        }
    }
    panic!("batch {seq} not acknowledged within {timeout:?}; last: {last:?}")
}

async fn assert_each_batch_once(ch: &harness::ClickHouseServer, db: &str, batches: u64, per: u64) {
    let total = ch
        .count(&format!("SELECT count() FROM {db}.enrollment_events"), &[])
        .await
        .expect("count");
    let distinct = ch
        .count(
            &format!("SELECT uniqExact(event_id) FROM {db}.enrollment_events"),
            &[],
        )
        .await
        .expect("uniq");
    let wrong = ch
        .query_json(
            &format!(
                "SELECT batch_seq, count() AS n FROM {db}.enrollment_events \
                 GROUP BY batch_seq HAVING n != {per} ORDER BY batch_seq"
            ),
            &[],
        )
        .await
        .expect("per batch");
    assert_eq!((total, distinct), (batches * per, batches * per));
    assert_eq!(
        wrong,
        Vec::<serde_json::Value>::new(),
        "batches stored other than once"
    );
}

#[tokio::test]
async fn clickhouse_outage_answers_unavailable_and_loses_nothing() -> anyhow::Result<()> {
    let ch = harness::private()?;
    let db = unique_database("outage");
    let collector = Collector::builder(ch.url(), &db)
        .arg("--clickhouse-timeout-secs")
        .arg("3")
        .arg("--batch-lease-secs")
        .arg("11")
        .start()
        .await?;
    let token = collector.token_create("contoso").await?;
    let agent = collector.register(&token, "dev-outage").await?;
    let mut client = collector.client().await?;
    assert_eq!(
        agent
            .push(&mut client, 1, items(&agent, 1, 10))
            .await?
            .accepted,
        10
    );

    ch.stop()?;
    for attempt in 0..3 {
        let started = Instant::now();
        let status = agent
            .push(&mut client, 2, items(&agent, 2, 10))
            .await
            .expect_err("ClickHouse is down");
        let took = started.elapsed();
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "attempt {attempt}: {status:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "attempt {attempt} took {took:?}"
        );
    }
    let ready = collector.http_get("/readyz").await?;
    assert_eq!(ready.status, 503, "{ready:?}");

    ch.start()?;
    let response = push_until_acked(
        &agent,
        &mut client,
        2,
        items(&agent, 2, 10),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!((response.accepted, response.duplicate), (10, false));
    assert_eq!(
        agent
            .push(&mut client, 3, items(&agent, 3, 10))
            .await?
            .accepted,
        10
    );
    assert_each_batch_once(&ch, &db, 3, 10).await;
    poll_eq(Duration::from_secs(10), "/readyz status", 200, || async {
        collector.http_get("/readyz").await.map(|r| r.status)
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_restarted_mid_stream_stores_every_batch_once() -> anyhow::Result<()> {
    let mut fx = Fixture::start("restart_stream").await?;
    let agent = fx.enroll("contoso", "dev-stream").await?;
    const BATCHES: u64 = 40;
    const PER: usize = 50;
    let acked = Arc::new(AtomicU64::new(0));
    let stream = {
        let agent = agent.clone();
        let acked = Arc::clone(&acked);
        let mut client = fx.collector.lazy_client()?;
        tokio::spawn(async move {
            for seq in 1..=BATCHES {
                let batch = items(&agent, 100 + seq, PER);
                let r = push_until_acked(&agent, &mut client, seq, batch, Duration::from_secs(120))
                    .await;
                assert_eq!(r.accepted, PER as u32, "batch {seq}");
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    for after in [8, 20] {
        poll_until(
            Duration::from_secs(60),
            "batches acknowledged before restart",
            || async {
                let n = acked.load(Ordering::SeqCst);
                if n >= after { Ok(n) } else { Err(n) }
            },
        )
        .await;
        fx.collector.restart().await?;
    }
    stream.await?;
    assert_each_batch_once(fx.ch, &fx.db, BATCHES, PER as u64).await;
    Ok(())
}

/// Rows handed to the collector's writer and not yet confirmed by ClickHouse.
const PENDING_ROWS_METRIC: &str = "fleetpulse_collector_pending_rows";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_mid_flush_then_resend_is_stored_once() -> anyhow::Result<()> {
    let mut fx = Fixture::start_with("kill9", |b| {
        b.args(["--clickhouse-timeout-secs", "2", "--batch-lease-secs", "9"])
    })
    .await?;
    let agent = fx.enroll("contoso", "dev-kill9").await?;
    const N: usize = 5000;
    let first = items(&agent, 1, N);
    let in_flight = {
        let agent = agent.clone();
        let first = first.clone();
        let mut client = fx.collector.client().await?;
        tokio::spawn(async move { agent.push(&mut client, 1, first).await })
    };
    // Kill -9 as soon as the batch's rows are in the writer (the insert is running), or, if
    // the push completes before we see that, right after: then its ack is the one "lost".
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut killed_mid_flush = false;
    while !in_flight.is_finished() && Instant::now() < deadline {
        let metrics = fx.collector.http_get("/metrics").await?;
        if metric_value(&metrics.body, PENDING_ROWS_METRIC).is_some_and(|v| v > 0.0) {
            killed_mid_flush = true;
            break;
        }
    }
    fx.collector.kill();
    let first_answer = in_flight.await?;
    eprintln!("killed mid-flush: {killed_mid_flush}; first attempt: {first_answer:?}");

    fx.collector.start_again().await?;
    let mut client = fx.collector.lazy_client()?;
    // The agent never saw an ack: it resends. A killed attempt still holds the batch's lease
    // (9 s); until it expires the resend is told UNAVAILABLE, then it takes the batch over and
    // stores only what the killed attempt did not.
    let resent = push_until_acked(&agent, &mut client, 1, first, Duration::from_secs(60)).await;
    assert_eq!(resent.accepted, N as u32);
    if first_answer.is_ok() {
        assert!(
            resent.duplicate,
            "the first attempt was acknowledged: {resent:?}"
        );
    }
    let again = push_until_acked(
        &agent,
        &mut client,
        1,
        items(&agent, 1, N),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!((again.accepted, again.duplicate), (N as u32, true));
    let next = push_until_acked(
        &agent,
        &mut client,
        2,
        items(&agent, 2, 50),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!((next.accepted, next.duplicate), (50, false));
    let total = fx.count("enrollment_events").await?;
    let distinct = fx
        .ch
        .count(
            &format!(
                "SELECT uniqExact(event_id) FROM {}.enrollment_events",
                fx.db
            ),
            &[],
        )
        .await?;
    assert_eq!((total, distinct), (N as u64 + 50, N as u64 + 50));
    Ok(())
}
