//! ClickHouse cluster mode for real: ZooKeeper and four `clickhouse-server` processes (2 shards
//! x 2 replicas, `harness::cluster`), collectors and analyzers started with
//! `--clickhouse-cluster`, the control plane on a shared PostgreSQL. Every case counts exactly
//! and compares the analyzers' answers with the same telemetry ingested on a single server.
//!
//! The cases share one cluster and run one at a time (a case may stop a replica or ZooKeeper).

mod analyzer_support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use analyzer_support::{Analyzer, iso};
use fleetpulse_proto::v1::telemetry_item::Kind;
use fleetpulse_proto::v1::{PushRequest, TelemetryItem};
use fleetpulse_tests::harness::cluster::{Cluster, shared_cluster};
use fleetpulse_tests::harness::synthetic::{Synth, event_item, state_item};
use fleetpulse_tests::harness::{
    ClickHouseServer, Collector, Postgres, batch, poll_eq, poll_until, shared, unique_database,
};
use serde_json::Value;

/// The cases stop servers of the shared cluster: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TENANTS: [&str; 2] = ["contoso", "fabrikam"];
const DEVICES_PER_TENANT: usize = 24;
const ITEMS_PER_BATCH: usize = 40;
const HOUR: u64 = 3600;

/// The telemetry of one case: per tenant, batches of items that depend only on the seed and
/// the agent id (the same content for the cluster's and the single server's agent).
fn batches(
    seed: u64,
    tenant_index: usize,
    agent_id: &str,
    count: usize,
    now: u64,
) -> Vec<PushRequest> {
    let mut synth = Synth::new(seed * 10 + tenant_index as u64);
    let devices: Vec<String> = (0..DEVICES_PER_TENANT)
        .map(|d| format!("dev-{tenant_index}-{d:02}"))
        .collect();
    (0..count)
        .map(|b| {
            let items: Vec<TelemetryItem> = (0..ITEMS_PER_BATCH)
                .map(|i| {
                    let n = b * ITEMS_PER_BATCH + i;
                    let device = &devices[n % devices.len()];
                    // Spread over the last 30 hours, whole minutes apart.
                    let at = SystemTime::UNIX_EPOCH
                        + Duration::from_secs(now - 30 * HOUR + (n as u64 * 397) % (30 * HOUR));
                    if n % 10 == 9 {
                        state_item(synth.device_state(agent_id, device, at))
                    } else {
                        event_item(synth.event(agent_id, device, at))
                    }
                })
                .collect();
            batch(b as u64 + 1, items)
        })
        .collect()
}

fn events_in(batches: &[PushRequest]) -> u64 {
    batches
        .iter()
        .flat_map(|b| &b.items)
        .filter(|i| matches!(i.kind, Some(Kind::Event(_))))
        .count() as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

async fn count(ch: &ClickHouseServer, sql: &str) -> u64 {
    ch.count(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Collectors of the cluster: two, connected to different servers, sharing PostgreSQL.
async fn cluster_collectors(cluster: &Cluster, db: &str, pg_url: &str) -> (Collector, Collector) {
    let start = |node: &ClickHouseServer| {
        Collector::builder(node.url(), db)
            .database_url(pg_url)
            .args(["--clickhouse-cluster", cluster.name()])
            .start()
    };
    // Started at once: both migrate the same database concurrently.
    let (a, b) = tokio::join!(start(cluster.node(1, 1)), start(cluster.node(2, 2)));
    (a.expect("collector A"), b.expect("collector B"))
}

/// The API paths compared between deployments: every endpoint family over the data's window.
fn answer_paths(now: u64) -> Vec<String> {
    let from = (now - 32 * HOUR) / HOUR * HOUR;
    let to = (now / HOUR + 1) * HOUR;
    let range = format!("from={}&to={}", iso(from as u32), iso(to as u32));
    let edge = format!(
        "from={}&to={}",
        iso((from + 17 * 60 + 5) as u32),
        iso((to - 23 * 60) as u32)
    );
    let mut paths = Vec::new();
    for source in ["auto", "raw"] {
        for r in [&range, &edge] {
            for extra in [
                "",
                "&tenant=contoso",
                "&outcome=failed",
                "&platform=windows",
            ] {
                let q = format!("{r}{extra}&source={source}");
                paths.push(format!("/api/v1/summary?{q}"));
                paths.push(format!("/api/v1/top-codes?{q}&limit=50"));
                for dim in fleetpulse_analyzer::query::engine::Dimension::NAMES {
                    paths.push(format!("/api/v1/breakdown/{dim}?{q}"));
                }
            }
        }
        for bucket in ["5m", "1h", "1d"] {
            paths.push(format!(
                "/api/v1/timeseries?{range}&bucket={bucket}&source={source}"
            ));
        }
    }
    paths.push(format!("/api/v1/funnel?{range}"));
    paths.push(format!("/api/v1/affected-devices?{range}&limit=100"));
    paths.push("/api/v1/insights".to_owned());
    for id in fleetpulse_analyzer::insights::InsightId::ALL {
        paths.push(format!("/api/v1/insights/{}/devices", id.as_str()));
    }
    paths.push("/api/v1/devices/dev-0-03/events?tenant=contoso".to_owned());
    paths.push("/api/v1/devices/dev-1-05/state?tenant=fabrikam".to_owned());
    paths
}

/// Removes what legitimately differs between two deployments fed the same telemetry: the
/// agent ids (each deployment registered its own agent) and the times rows were received.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("agent_id");
            map.remove("received_at");
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

async fn answers(analyzer: &Analyzer, token: &str, paths: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for path in paths {
        let (status, mut body) = analyzer.get(path, Some(token)).await;
        assert!(
            status == 200 || status == 404,
            "GET {path}: {status} {body}"
        );
        normalise(&mut body);
        out.insert(path.clone(), body);
    }
    out
}

fn assert_same_answers(
    what: &str,
    left: &BTreeMap<String, Value>,
    right: &BTreeMap<String, Value>,
) {
    for (path, l) in left {
        assert_eq!(Some(l), right.get(path), "{what}: GET {path} differs");
    }
    assert_eq!(left.len(), right.len());
}

/// The single-server reference: the same telemetry through one collector into the shared
/// server, read by one analyzer.
struct Reference {
    analyzer: Analyzer,
    token: String,
    _collector: Collector,
}

async fn reference(seed: u64, per_tenant: usize, now: u64) -> Reference {
    let ch = shared();
    let db = unique_database("cluster_reference");
    let collector = Collector::builder(ch.url(), &db).start().await.unwrap();
    let analyzer = Analyzer::start(ch, &db, &[]).await;
    let mut client = collector.client().await.unwrap();
    for (t, tenant) in TENANTS.iter().enumerate() {
        let token = collector.token_create(tenant).await.unwrap();
        let agent = collector.register(&token, "agent-host").await.unwrap();
        for b in batches(seed, t, &agent.agent_id, per_tenant, now) {
            let r = agent.push_request(&mut client, b).await.unwrap();
            assert!(r.rejected.is_empty(), "{r:?}");
        }
    }
    let token = analyzer.create_key(&["--all-tenants"]);
    Reference {
        analyzer,
        token,
        _collector: collector,
    }
}

/// `count()` of a Distributed table read through `node` reaches `expected` (and stays exact:
/// [`poll_eq`] fails on a timeout, a later check on the total catches any excess).
async fn everywhere(node: &ClickHouseServer, db: &str, table: &str, expected: u64) {
    let sql = format!("SELECT count() FROM {db}.{table}");
    poll_eq(
        Duration::from_secs(60),
        &format!("{table} through {}", node.url()),
        expected,
        || node.count(&sql, &[]),
    )
    .await;
}

/// Each shard's replicas hold the same rows (polled: replication is asynchronous).
async fn replicas_converge(cluster: &Cluster, db: &str, table: &str) -> [u64; 2] {
    let mut per_shard = [0; 2];
    for shard in 1..=2 {
        let sql = format!("SELECT count() FROM {db}.{table}_local");
        let first = cluster.node(shard, 1);
        let second = cluster.node(shard, 2);
        per_shard[shard - 1] = poll_until(
            Duration::from_secs(60),
            &format!("replicas of shard {shard} to hold the same {table} rows"),
            || async {
                let (a, b) = (count(first, &sql).await, count(second, &sql).await);
                if a == b { Ok(a) } else { Err((a, b)) }
            },
        )
        .await;
    }
    per_shard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_with_resends_and_two_analyzers_match_a_single_server() {
    let _serial = SERIAL.lock().await;
    let cluster = shared_cluster();
    cluster.ensure_running().unwrap();
    let pg = Postgres::start().unwrap();
    let pg_url = pg.create_database("cluster").unwrap();
    let db = unique_database("cluster_resend");
    let now = now_secs();
    const PER_TENANT: usize = 12;

    let (a, b) = cluster_collectors(cluster, &db, &pg_url).await;
    // Two analyzers at once on two other servers: they migrate one after the other (lease in
    // PostgreSQL) and agree on one cutover.
    let extra = ["--clickhouse-cluster", cluster.name()];
    let (an1, an2) = tokio::join!(
        Analyzer::start_with_db(cluster.node(1, 2), &db, Some(&pg_url), &extra),
        Analyzer::start_with_db(cluster.node(2, 1), &db, Some(&pg_url), &extra),
    );
    let cutovers = count(
        cluster.node(2, 2),
        &format!(
            "SELECT uniqExact(cutover) FROM {db}.analyzer_schema_migrations WHERE version = 3"
        ),
    )
    .await;
    assert_eq!(cutovers, 1, "two analyzers chose two cutovers");

    let mut ca = a.client().await.unwrap();
    let mut cb = b.client().await.unwrap();
    let mut expected_events = 0;
    let mut duplicates = 0;
    for (t, tenant) in TENANTS.iter().enumerate() {
        // Registered through A; B knows the credential through the shared PostgreSQL.
        let token = a.token_create(tenant).await.unwrap();
        let agent = a.register(&token, "agent-host").await.unwrap();
        let all = batches(42, t, &agent.agent_id, PER_TENANT, now);
        expected_events += events_in(&all);
        for (i, request) in all.iter().enumerate() {
            // Batches alternate between the collectors.
            let (first, other) = if i % 2 == 0 {
                (&mut ca, &mut cb)
            } else {
                (&mut cb, &mut ca)
            };
            let r = agent.push_request(first, request.clone()).await.unwrap();
            assert_eq!((r.accepted as usize, r.duplicate), (ITEMS_PER_BATCH, false));
            // Every third batch: its ack is "lost", the agent resends it to the other
            // collector; every fifth also to the same one again.
            if i % 3 == 0 {
                let again = agent.push_request(other, request.clone()).await.unwrap();
                assert_eq!(
                    (again.accepted as usize, again.duplicate),
                    (ITEMS_PER_BATCH, true)
                );
                duplicates += 1;
            }
            if i % 5 == 0 {
                let again = agent.push_request(first, request.clone()).await.unwrap();
                assert!(again.duplicate);
                duplicates += 1;
            }
        }
    }
    assert!(duplicates >= 8);
    let total_items = (TENANTS.len() * PER_TENANT * ITEMS_PER_BATCH) as u64;
    let expected_states = total_items - expected_events;

    // Exact counts through every server's Distributed table, per shard, and per replica.
    // (The harness's client reads any replica, unlike the product's sessions, which read the
    // replicas the inserts went to: poll until every replica has fetched its shard's parts.)
    for node in cluster.nodes() {
        everywhere(node, &db, "enrollment_events", expected_events).await;
        everywhere(node, &db, "device_states", expected_states).await;
    }
    let shards = replicas_converge(cluster, &db, "enrollment_events").await;
    assert_eq!(shards[0] + shards[1], expected_events);
    assert!(
        shards[0] > 0 && shards[1] > 0,
        "sharding put everything on one shard: {shards:?}"
    );
    // A device's events live on one shard.
    for shard in 1..=2 {
        let other = 3 - shard;
        let devices_here = count(
            cluster.node(shard, 1),
            &format!(
                "SELECT count() FROM (SELECT DISTINCT tenant, device_id FROM {db}.enrollment_events_local) \
                 WHERE (tenant, device_id) IN (SELECT tenant, device_id FROM remote('127.0.0.1:{}', {db}.enrollment_events_local))",
                cluster.node(other, 1).tcp_port().unwrap_or_default()
            ),
        )
        .await;
        assert_eq!(devices_here, 0, "devices on both shards");
    }
    // Rollups count every event once: their totals equal the raw count.
    let rollup_events = count(
        cluster.node(1, 1),
        &format!("SELECT toUInt64(countMerge(events)) FROM {db}.rollup_outcomes_hourly"),
    )
    .await;
    assert_eq!(rollup_events, expected_events);

    // Every answer of both analyzers equals the single server's.
    let single = reference(42, PER_TENANT, now).await;
    let paths = answer_paths(now);
    let token = an1.create_key(&["--all-tenants"]);
    let one = answers(&an1, &token, &paths).await;
    let two = answers(&an2, &token, &paths).await;
    let reference_answers = answers(&single.analyzer, &single.token, &paths).await;
    let summary = &reference_answers[&paths[0]];
    assert_eq!(
        summary["summary"]["events"].as_u64(),
        Some(expected_events),
        "reference summary: {summary}"
    );
    assert_same_answers("analyzer 1 vs single server", &one, &reference_answers);
    assert_same_answers("analyzer 2 vs analyzer 1", &two, &one);
    drop((an1, an2, a, b, single));
}
