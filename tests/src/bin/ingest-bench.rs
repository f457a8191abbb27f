//! Ingest benchmark: events per second through the whole pipeline (agents -> gRPC -> collector
//! -> ClickHouse) against the raw limit of this machine (the same rows inserted straight into
//! ClickHouse with the `clickhouse` crate), measured in the same run.
//!
//! ```text
//! cargo run --release -p fleetpulse-tests --bin ingest-bench -- --events 2000000
//! # fleet mode: many agents, small batches, each agent on its own kept-open connection
//! cargo run --release -p fleetpulse-tests --bin ingest-bench -- --events 200000 --agents 1000 --batch 10
//! # cluster mode: the collector on a private 2 shards x 2 replicas cluster with ZooKeeper
//! cargo run --release -p fleetpulse-tests --bin ingest-bench -- --events 500000 --cluster
//! ```
//!
//! Progress goes to stderr; the last stdout line is exactly one JSON object:
//! `{"events":N,"agents":A,"batch":B,"pushes":P,"pipeline_eps":X,"pushes_per_s":..,
//! "raw_clickhouse_eps":Y,"ratio":X/Y,"collector_cpu_s":..,"collector_cpu_ms_per_push":..,
//! "collector_cpu_s_per_million_events":..,"collector_rss_mib":..,"collector_peak_rss_mib":..,
//! "generation":"ahead"|"lazy","control_db":"sqlite"|"postgres","control_db_cpu_ms_per_push":..,
//! "tls":bool,"pushes_per_connection":N,"connections":opened,
//! "push_latency_p50_ms":..,"push_latency_p95_ms":..,..}`.
//! Push latency is each batch's round trip as its agent sees it (first attempt sent to ack,
//! retries included).
//!
//! Up to 2,000,000 events the batches are generated before the clock starts; above (or with
//! `--lazy`) each agent generates its next batch just before sending it, at most
//! `--max-held-items` items held by all agents at once, so `--agents 1000 --batch 5000`
//! (5M events) runs in about 1 GB instead of 19. Each agent's events come from its own seed,
//! so the raw baseline regenerates exactly the same rows, one chunk at a time, outside its
//! clock.
//! The collector's CPU comes from `/proc/<pid>/stat` over the pipeline phase (steadier than
//! wall time on a shared machine); its memory from `/proc/<pid>/status` at the end of it.
//!
//! Pipeline time runs from the first Push to the moment every event is acknowledged and counted
//! in ClickHouse; raw time covers only the inserts. Data generation happens before either clock
//! starts. The collector is the release binary next to this one (rebuilt first when run through
//! cargo), on a fresh database; ClickHouse is a private server unless `CLICKHOUSE_URL` is set.
//!
//! `--cluster`: ClickHouse is a private cluster (`harness::cluster`: ZooKeeper and four servers
//! on this machine, 2 shards x 2 replicas); the collector runs with `--clickhouse-cluster` against
//! the first server, the count reads the Distributed table, and the ClickHouse CPU is the sum
//! of the four servers plus ZooKeeper. The raw baseline stays a plain single-server insert (a
//! MergeTree table on the first server), so the ratios of both modes share one yardstick.
//!
//! `--tls`: the collector serves gRPC over TLS (a throw-away CA from `harness::tls`) and every
//! agent connection is a TLS 1.3 connection (rustls, ALPN h2), as in production. With
//! `--pushes-per-connection N` each agent opens a new connection (TCP, TLS and HTTP/2
//! handshakes) after every N pushes instead of keeping one open, like a fleet whose devices
//! connect, push and go; the report counts the connections opened.
//!
//! `--control-db postgres`: the collector's control database (credentials, batch ledger) is a
//! private PostgreSQL (`harness::postgres`) instead of its default SQLite file, as with several
//! collectors in production; PostgreSQL's CPU (the postmaster and every backend) is reported
//! as `control_db_cpu_ms_per_push` and is not counted as ClickHouse's. With SQLite the ledger
//! runs inside the collector and its CPU is part of the collector's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes};
use clap::Parser;
use fleetpulse_proto::v1::telemetry_item::Kind;
use fleetpulse_proto::v1::{PushRequest, PushResponse, TelemetryItem};
use fleetpulse_tests::harness::cluster::{CLUSTER_NAME, Cluster};
use fleetpulse_tests::harness::process::{cpu_time, memory, raise_fd_limit, tree_cpu_time};
use fleetpulse_tests::harness::rows::{EnrollmentEventRow, raw_table_statements};
use fleetpulse_tests::harness::synthetic::{Synth, event_item};
use fleetpulse_tests::harness::{self, ClickHouseServer, Collector, Registered};
use futures::{StreamExt, TryStreamExt};
use http::uri::PathAndQuery;
use prost::Message;
use tonic::Code;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};

/// Measures collector ingest throughput against raw ClickHouse inserts.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Number of enrollment events to push (and to insert raw).
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Concurrent simulated agents, each with its own credential and its own connection, kept
    /// open across its pushes, each sending its batches one after the other (waiting for the
    /// ack, like a real agent). Fleet mode is many agents with small batches, e.g.
    /// `--agents 1000 --batch 10`.
    #[arg(long, default_value_t = 64)]
    agents: usize,
    /// Items per Push; 0 means the collector's advertised maximum (5000 by default).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Rows per raw INSERT in the baseline.
    #[arg(long, default_value_t = 100_000)]
    raw_chunk: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Do not rebuild the collector binary through cargo before running.
    #[arg(long)]
    no_build: bool,
    /// Extra argument for `fleetpulse-collector serve` (repeatable), e.g. `--collector-arg=--flush-rows=100000`.
    #[arg(long, allow_hyphen_values = true)]
    collector_arg: Vec<String>,
    /// Keep the benchmark databases instead of dropping them.
    #[arg(long)]
    keep: bool,
    /// Run against a private 2 shards x 2 replicas ClickHouse cluster with ZooKeeper (the
    /// collector in cluster mode) instead of one server.
    #[arg(long)]
    cluster: bool,
    /// Give both databases the analyzer's rollups (its materialized views, fed by every insert
    /// into `enrollment_events`) before the run, as in a deployment: the pipeline and the raw
    /// baseline then insert into the same storage, views included. Without it both sides insert
    /// into the bare raw tables.
    #[arg(long)]
    rollups: bool,
    /// Generate each agent's batches while the run goes, one batch just before it is sent,
    /// instead of all of them before the clock starts (automatic above 2,000,000 events: a
    /// 5M-event run held 19 GB when generated ahead). The generation then counts in the bench
    /// client's CPU during the pipeline phase (reported); the raw baseline is generated per
    /// chunk outside its clock either way.
    #[arg(long)]
    lazy: bool,
    /// Lazy generation: at most this many generated items held by all agents at once (an
    /// agent waits for room before generating its next batch), which bounds the bench's memory.
    #[arg(long, default_value_t = 500_000)]
    max_held_items: usize,
    /// The collector's control database (credentials, batch ledger): its default SQLite file,
    /// or a private PostgreSQL as several collectors share in production.
    #[arg(long, value_enum, default_value_t = ControlDb::Sqlite)]
    control_db: ControlDb,
    /// Serve and connect over TLS (a generated CA), as production does.
    #[arg(long)]
    tls: bool,
    /// Pushes an agent sends on one connection before opening a new one (TCP, TLS and HTTP/2
    /// handshakes again); 0 keeps each agent's connection open for the whole run.
    #[arg(long, default_value_t = 0)]
    pushes_per_connection: u64,
}

/// Where the collector keeps its control data during the bench.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ControlDb {
    Sqlite,
    Postgres,
}

impl ControlDb {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Above this many events the batches are generated lazily (see `--lazy`).
const LAZY_ABOVE_EVENTS: u64 = 2_000_000;

/// Creates the analyzer's rollup tables and views in `db` (which holds the raw tables), with a
/// cutover of 0 so the views take every row of the run and the backfill copies nothing.
async fn add_rollups(ch: &ClickHouseServer, db: &str) -> anyhow::Result<()> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Version {
        version: String,
    }
    let version = ch
        .query_rows::<Version>("SELECT version() AS version", &[])
        .await?
        .pop()
        .map(|v| v.version)
        .unwrap_or_default();
    let statements = fleetpulse_analyzer::rollups::fresh_database_statements(db, &version, 0);
    for stmt in &statements {
        ch.execute(stmt)
            .await
            .with_context(|| format!("rollup statement {stmt}"))?;
    }
    eprintln!(
        "bench: {db}: analyzer rollups created ({} statements, ClickHouse {version})",
        statements.len()
    );
    Ok(())
}

const TENANT: &str = "bench";
/// CPU accounting names of the cluster's servers, in `Cluster::node` order.
const CLUSTER_SERVERS: [&str; 4] = [
    "clickhouse s1r1",
    "clickhouse s1r2",
    "clickhouse s2r1",
    "clickhouse s2r2",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.events == 0 || args.agents == 0 {
        bail!("--events and --agents must be at least 1");
    }
    if args.rollups && args.cluster {
        bail!("--rollups creates single-server views; it cannot be combined with --cluster");
    }
    if !args.no_build {
        build_collector()?;
    }
    // One connection per agent here and in the collector (which inherits the limit).
    let want_fds = u64::try_from(args.agents)
        .unwrap_or(u64::MAX)
        .saturating_add(1024);
    let fds = raise_fd_limit(want_fds).context("raise the open-file limit")?;
    if fds < want_fds {
        bail!(
            "--agents {}: the open-file limit is {fds} (hard limit); raise it",
            args.agents
        );
    }

    let managed;
    let cluster = if args.cluster {
        let c = Cluster::start().context("start a private ClickHouse cluster")?;
        eprintln!(
            "bench: private cluster {} (2 shards x 2 replicas, ZooKeeper), collector on {}",
            c.name(),
            c.node(1, 1).url()
        );
        Some(c)
    } else {
        None
    };
    let ch: &ClickHouseServer = match (&cluster, std::env::var("CLICKHOUSE_URL")) {
        (Some(c), _) => c.node(1, 1),
        (None, Ok(url)) if !url.trim().is_empty() => {
            eprintln!("bench: using ClickHouse at {url}");
            harness::shared()
        }
        (None, _) => {
            managed = harness::private().context("start a private ClickHouse")?;
            eprintln!("bench: private ClickHouse at {}", managed.url());
            &managed
        }
    };

    let pipeline_db = harness::unique_database("bench_pipeline");
    let raw_db = harness::unique_database("bench_raw");
    // The bench measures what the pipeline can store: admission control (rate limits on
    // registrations and pushes, meant to stop one sender from taking the collector) is off, as
    // it is for a trusted fleet that a deployment sizes with these figures. A limit given with
    // `--collector-arg` (e.g. `--collector-arg=--agent-pushes-rate=20:100`) is kept.
    let mut builder =
        Collector::builder(ch.url(), &pipeline_db).without_admission_limits(&args.collector_arg);
    let pki = if args.tls {
        Some(harness::tls::TestPki::generate().context("generate the bench's CA")?)
    } else {
        None
    };
    if let Some(pki) = &pki {
        builder = builder
            .tls(pki.server_tls(false))
            .client_tls(pki.client_tls(false));
    }
    let tls = pki.as_ref().map(|p| tls_connector(&p.ca_pem)).transpose()?;
    let postgres = match args.control_db {
        ControlDb::Sqlite => None,
        ControlDb::Postgres => {
            let pg = harness::Postgres::start().context("start a private PostgreSQL")?;
            let url = pg.create_database("bench_control")?;
            eprintln!("bench: control database {url}");
            builder = builder.database_url(url);
            Some(pg)
        }
    };
    for a in &args.collector_arg {
        builder = builder.arg(a);
    }
    if args.cluster {
        builder = builder.arg("--clickhouse-cluster").arg(CLUSTER_NAME);
    }
    let mut collector = builder.start().await.context("start the collector")?;
    if args.rollups {
        add_rollups(ch, &pipeline_db).await?;
    }
    eprintln!(
        "bench: collector on {} (log {})",
        collector.grpc_addr(),
        collector.log_path().display()
    );

    let token = collector.token_create(TENANT).await?;
    let mut synth = Synth::new(args.seed);
    let devices: Vec<String> = (0..args.agents).map(|_| synth.device_id()).collect();
    let registered = Instant::now();
    let agents: Vec<Registered> = futures::stream::iter(&devices)
        .map(|device| collector.register(&token, device))
        .buffered(16)
        .try_collect()
        .await?;
    eprintln!(
        "bench: registered {} agents in {:.1} s",
        agents.len(),
        registered.elapsed().as_secs_f64()
    );
    let limits = agents[0].limits.unwrap_or_default();
    let batch_items = match args.batch {
        0 => usize::try_from(limits.max_batch_items)
            .unwrap_or(1000)
            .max(1),
        n => n,
    };
    let max_bytes = usize::try_from(limits.max_batch_bytes).unwrap_or(usize::MAX);
    eprintln!(
        "bench: {} agents, batches of up to {batch_items} items / {max_bytes} bytes, generating {} events",
        args.agents, args.events
    );

    let lazy = args.lazy || args.events > LAZY_ABOVE_EVENTS;
    let plan = Plan::new(&args, &agents, batch_items, max_bytes)?;
    let generated = Instant::now();
    let mut sources: Vec<Source> = Vec::with_capacity(agents.len());
    let held = Arc::new(tokio::sync::Semaphore::new(
        args.max_held_items.max(batch_items),
    ));
    for (i, agent) in agents.iter().enumerate() {
        let mut stream = plan.stream(i, agent);
        if lazy {
            sources.push(Source::Lazy(Box::new(stream), Arc::clone(&held)));
        } else {
            // Each batch encoded before the clock starts.
            let mut batches = Vec::new();
            while let Some(b) = stream.next_batch() {
                batches.push(Encoded::of(&b));
            }
            sources.push(Source::Ahead(batches));
        }
    }
    if lazy {
        eprintln!(
            "bench: generating each agent's batches lazily (at most {} items held at once)",
            args.max_held_items.max(batch_items)
        );
    } else {
        eprintln!(
            "bench: generated {} batches in {:.1} s",
            sources
                .iter()
                .map(|s| match s {
                    Source::Ahead(b) => b.len(),
                    Source::Lazy(..) => 0,
                })
                .sum::<usize>(),
            generated.elapsed().as_secs_f64()
        );
    }
    let pushes_done = Arc::new(AtomicU64::new(0));

    // ---- pipeline ----
    let mut processes = vec![
        ("bench client", Some(std::process::id())),
        ("collector", collector.pid()),
    ];
    if let Some(cluster) = &cluster {
        for (name, (shard, replica)) in CLUSTER_SERVERS.iter().zip([(1, 1), (1, 2), (2, 1), (2, 2)])
        {
            processes.push((*name, cluster.node(shard, replica).pid()));
        }
        processes.push(("zookeeper", cluster.zookeeper_pid()));
    } else {
        processes.push(("clickhouse-server", ch.pid()));
    }
    let mut cpu = CpuMeter::new(&processes);
    if let Some(pid) = postgres.as_ref().and_then(harness::Postgres::pid) {
        cpu.add_tree(CONTROL_DB, pid);
    }
    let acked = Arc::new(AtomicU64::new(0));
    let dial = Arc::new(Dial {
        addr: collector.grpc_addr(),
        tls,
        pushes_per_connection: args.pushes_per_connection,
        opened: AtomicU64::new(0),
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (agent, source) in agents.iter().cloned().zip(sources) {
        let acked = Arc::clone(&acked);
        let pushes_done = Arc::clone(&pushes_done);
        tasks.push(tokio::spawn(push_all(
            Arc::clone(&dial),
            agent,
            source,
            acked,
            pushes_done,
        )));
    }
    let progress = {
        let acked = Arc::clone(&acked);
        let total = args.events;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let n = acked.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "bench: pipeline {n}/{total} acked, {:.0} events/s",
                    n as f64 / secs.max(1e-9)
                );
            }
        })
    };
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("agent task panicked")??);
    }
    let acked_at = started.elapsed();
    let pushes = usize::try_from(pushes_done.load(Ordering::Relaxed))?;
    let latency = Percentiles::of(latencies);
    let count_sql = format!("SELECT count() FROM {pipeline_db}.enrollment_events");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = ch.count(&count_sql, &[]).await?;
        if n == args.events {
            break;
        }
        if n > args.events {
            bail!(
                "ClickHouse counts {n} events, more than the {} pushed: duplicates",
                args.events
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "only {n} of {} acknowledged events are in ClickHouse after 120 s",
                args.events
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pipeline = started.elapsed();
    progress.abort();
    let used = cpu.report("pipeline", pipeline);
    let collector_cpu = used
        .iter()
        .find(|(name, _)| *name == "collector")
        .map(|(_, d)| d.as_secs_f64());
    // Every ClickHouse process (and ZooKeeper in cluster mode): the database's share.
    let clickhouse_cpu: f64 = used
        .iter()
        .filter(|(name, _)| !["collector", "bench client", CONTROL_DB].contains(name))
        .map(|(_, d)| d.as_secs_f64())
        .sum();
    let control_db_cpu = used
        .iter()
        .find(|(name, _)| *name == CONTROL_DB)
        .map(|(_, d)| d.as_secs_f64());
    let (rss, peak_rss) = collector.pid().and_then(memory).unwrap_or_default();
    report_writer(&collector, pipeline).await;
    eprintln!(
        "bench: push round trip (first attempt sent to ack, retries included): p50 {:.1} ms, \
         p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms
    );
    let pipeline_eps = args.events as f64 / pipeline.as_secs_f64();
    let pushes_per_s = pushes as f64 / pipeline.as_secs_f64();
    eprintln!(
        "bench: pipeline {} events in {pushes} pushes in {:.2} s (all acked after {:.2} s): \
         {:.0} events/s, {pushes_per_s:.0} pushes/s",
        args.events,
        pipeline.as_secs_f64(),
        acked_at.as_secs_f64(),
        pipeline_eps
    );
    let mib = |b: u64| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0;
    if let Some(cpu_s) = collector_cpu {
        eprintln!(
            "bench: collector {cpu_s:.2} CPU-s: {:.3} ms per push, {:.2} CPU-s per million events; \
             RSS {} MiB (peak {} MiB)",
            1000.0 * cpu_s / pushes as f64,
            cpu_s * 1e6 / args.events as f64,
            mib(rss),
            mib(peak_rss)
        );
    }
    collector.stop().await.context("stop the collector")?;

    // ---- raw ClickHouse ----
    ch.execute(&format!("CREATE DATABASE {raw_db}")).await?;
    for stmt in raw_table_statements(&raw_db) {
        ch.execute(&stmt).await?;
    }
    if args.rollups {
        add_rollups(ch, &raw_db).await?;
    }
    let client = ch.client(&raw_db);
    let cpu = CpuMeter::new(&[
        ("bench client", Some(std::process::id())),
        ("clickhouse-server", ch.pid()),
    ]);
    // Rows are generated per chunk (the same events as the pipeline's, from the same per-agent
    // seeds) and only the inserts are timed.
    let chunk_rows = args.raw_chunk.max(1);
    let mut raw = Duration::ZERO;
    let mut inserted = 0usize;
    let mut chunk: Vec<EnrollmentEventRow> = Vec::with_capacity(chunk_rows);
    let mut agents_left = agents.iter().enumerate();
    let mut current: Option<(&Registered, AgentStream)> = None;
    loop {
        // Fill the chunk.
        while chunk.len() < chunk_rows {
            if current.is_none() {
                current = agents_left.next().map(|(i, a)| (a, plan.stream(i, a)));
            }
            let Some((agent, stream)) = current.as_mut() else {
                break;
            };
            match stream.next_batch() {
                Some(batch) => {
                    for item in &batch.items {
                        if let Some(Kind::Event(e)) = &item.kind {
                            chunk.push(EnrollmentEventRow::expected(
                                &agent.tenant,
                                batch.batch_seq,
                                plan.received_at,
                                e,
                            ));
                        }
                    }
                }
                None => current = None,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let take = chunk.len().min(chunk_rows);
        let started = Instant::now();
        let mut insert = client
            .insert::<EnrollmentEventRow>("enrollment_events")
            .await?;
        for row in &chunk[..take] {
            insert.write(row).await?;
        }
        insert.end().await?;
        raw += started.elapsed();
        chunk.drain(..take);
        inserted += take;
        if inserted.is_multiple_of(chunk_rows * 5) {
            eprintln!("bench: raw {inserted}/{} inserted", args.events);
        }
    }
    cpu.report("raw", raw);
    let raw_count = ch
        .count(
            &format!("SELECT count() FROM {raw_db}.enrollment_events"),
            &[],
        )
        .await?;
    if raw_count != args.events {
        bail!("raw table holds {raw_count} rows, expected {}", args.events);
    }
    let raw_eps = args.events as f64 / raw.as_secs_f64();
    eprintln!(
        "bench: raw {} rows in {:.2} s: {:.0} rows/s",
        args.events,
        raw.as_secs_f64(),
        raw_eps
    );

    if args.cluster {
        // The private cluster and its data are removed when it drops.
    } else if !args.keep {
        ch.execute(&format!("DROP DATABASE {pipeline_db}")).await?;
        ch.execute(&format!("DROP DATABASE {raw_db}")).await?;
    }
    let ratio = pipeline_eps / raw_eps;
    eprintln!("bench: ratio pipeline/raw = {ratio:.3}");
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "events": args.events,
            "agents": args.agents,
            "rollups": args.rollups,
            "batch": batch_items,
            "pushes": pushes,
            "pipeline_eps": pipeline_eps.round(),
            "pushes_per_s": pushes_per_s.round(),
            "raw_clickhouse_eps": raw_eps.round(),
            "ratio": round3(ratio),
            "collector_cpu_s": collector_cpu.map(round3),
            "collector_cpu_ms_per_push": collector_cpu.map(|c| round3(1000.0 * c / pushes as f64)),
            "collector_cpu_s_per_million_events": collector_cpu.map(|c| round3(c * 1e6 / args.events as f64)),
            "clickhouse": if args.cluster { "cluster 2x2" } else { "single" },
            "clickhouse_cpu_s_per_million_events": round3(clickhouse_cpu * 1e6 / args.events as f64),
            "collector_rss_mib": mib(rss),
            "collector_peak_rss_mib": mib(peak_rss),
            "generation": if lazy { "lazy" } else { "ahead" },
            "control_db": args.control_db.name(),
            "tls": args.tls,
            "pushes_per_connection": args.pushes_per_connection,
            "connections": dial.opened.load(Ordering::Relaxed),
            "control_db_cpu_ms_per_push": control_db_cpu.map(|c| round3(1000.0 * c / pushes as f64)),
            "push_latency_p50_ms": round3(latency.p50_ms),
            "push_latency_p95_ms": round3(latency.p95_ms),
            "push_latency_p99_ms": round3(latency.p99_ms),
        })
    );
    Ok(())
}

/// The collector's own account of its ClickHouse writer: how many inserts, how big, and how
/// long they kept the (single) writer busy; busy time close to the wall time means the writer
/// is the bottleneck, small flushes mean the group commit did not gather much.
async fn report_writer(collector: &Collector, wall: Duration) {
    let Ok(metrics) = collector.http_get("/metrics").await else {
        return;
    };
    let value = |name: &str| {
        metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    if let (Some(flushes), Some(rows), Some(busy)) = (
        value("fleetpulse_collector_flush_rows_count"),
        value("fleetpulse_collector_flush_rows_sum"),
        value("fleetpulse_collector_flush_seconds_sum"),
    ) {
        eprintln!(
            "bench: collector writer: {flushes:.0} flushes, {:.0} rows each on average, busy {busy:.2} s of {:.2} s wall ({:.0}%)",
            rows / flushes.max(1.0),
            wall.as_secs_f64(),
            100.0 * busy / wall.as_secs_f64().max(1e-9)
        );
    }
    // Where a push's time went (the collector's `stage_seconds` histograms): mean per stage.
    let stages: Vec<String> = [
        "gate", "push", "claim", "queue", "write", "finish", "lookup", "insert", "commit",
    ]
    .iter()
    .filter_map(|stage| {
        let label = format!("{{stage=\"{stage}\"}}");
        let sum = value(&format!("fleetpulse_collector_stage_seconds_sum{label}"))?;
        let count = value(&format!("fleetpulse_collector_stage_seconds_count{label}"))?;
        Some(format!(
            "{stage} {:.1} ms x {count:.0}",
            1000.0 * sum / count.max(1.0)
        ))
    })
    .collect();
    if !stages.is_empty() {
        eprintln!(
            "bench: collector stages (mean): {} (push, claim, queue, write, finish per push; lookup, insert per flush; commit per ledger group)",
            stages.join(", ")
        );
    }
}

/// Rebuilds the collector with the profile of this binary so the bench never measures a stale
/// build. Only possible when started by cargo (which sets `CARGO`).
fn build_collector() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "release");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--manifest-path",
        manifest,
        "-p",
        "fleetpulse-collector",
        "--bin",
        "fleetpulse-collector",
    ]);
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "bench: building the collector ({})",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build of fleetpulse-collector failed with {status}");
    }
    Ok(())
}

/// CPU seconds each process spent during a phase: where the time goes, on a machine whose
/// two cores the bench client, the collector and ClickHouse share.
/// The name under which the PostgreSQL control database's CPU is reported.
const CONTROL_DB: &str = "postgresql";

struct CpuMeter {
    /// (name, pid, CPU at the start, whether the process's descendants count too).
    start: Vec<(&'static str, u32, Duration, bool)>,
}

impl CpuMeter {
    fn new(processes: &[(&'static str, Option<u32>)]) -> Self {
        let start = processes
            .iter()
            .filter_map(|(name, pid)| {
                let pid = (*pid)?;
                Some((*name, pid, cpu_time(pid)?, false))
            })
            .collect();
        Self { start }
    }

    /// Also measures `pid` with all its descendants (a server forking a process per
    /// connection).
    fn add_tree(&mut self, name: &'static str, pid: u32) {
        if let Some(t) = tree_cpu_time(pid) {
            self.start.push((name, pid, t, true));
        }
    }

    /// Prints and returns the CPU time each process used since [`CpuMeter::new`].
    fn report(&self, phase: &str, wall: Duration) -> Vec<(&'static str, Duration)> {
        let used: Vec<(&'static str, Duration)> = self
            .start
            .iter()
            .filter_map(|(name, pid, before, tree)| {
                let now = if *tree {
                    tree_cpu_time(*pid)?
                } else {
                    cpu_time(*pid)?
                };
                Some((*name, now.saturating_sub(*before)))
            })
            .collect();
        let parts: Vec<String> = used
            .iter()
            .map(|(name, used)| {
                format!(
                    "{name} {:.1} s ({:.0}% of one core)",
                    used.as_secs_f64(),
                    100.0 * used.as_secs_f64() / wall.as_secs_f64().max(1e-9)
                )
            })
            .collect();
        if !parts.is_empty() {
            eprintln!(
                "bench: {phase} CPU over {:.1} s wall: {}",
                wall.as_secs_f64(),
                parts.join(", ")
            );
        }
        used
    }
}

/// What every agent's stream shares: how many events each sends, from when, in what batches.
struct Plan {
    seed: u64,
    per_agent: u64,
    remainder: u64,
    start: SystemTime,
    received_at: u32,
    batch_items: usize,
    max_bytes: usize,
}

impl Plan {
    fn new(
        args: &Args,
        agents: &[Registered],
        batch_items: usize,
        max_bytes: usize,
    ) -> anyhow::Result<Self> {
        let now = SystemTime::now();
        Ok(Self {
            seed: args.seed,
            per_agent: args.events / agents.len() as u64,
            remainder: args.events % agents.len() as u64,
            start: now - Duration::from_secs(3_600),
            received_at: u32::try_from(now.duration_since(UNIX_EPOCH)?.as_secs())?,
            batch_items,
            max_bytes,
        })
    }

    /// Agent `index`'s events; the same every time it is called (its own seed).
    fn stream(&self, index: usize, agent: &Registered) -> AgentStream {
        let n = self.per_agent + u64::from((index as u64) < self.remainder);
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let mut synth =
            Synth::new(self.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // 50 devices behind each agent (a site relay), events spread over the last hour.
        let devices: Vec<String> = (0..50).map(|_| synth.device_id()).collect();
        AgentStream {
            synth,
            agent_id: agent.agent_id.clone(),
            devices,
            total: n,
            produced: 0,
            start: self.start,
            step: Duration::from_secs(3_000) / u32::try_from(n.max(1)).unwrap_or(u32::MAX),
            batch_items: self.batch_items,
            max_bytes: self.max_bytes,
            carry: None,
            next_seq: 1,
        }
    }
}

/// One agent's events in order, cut into batches (sequence numbers from 1) on demand.
struct AgentStream {
    synth: Synth,
    agent_id: String,
    devices: Vec<String>,
    total: usize,
    produced: usize,
    start: SystemTime,
    step: Duration,
    batch_items: usize,
    max_bytes: usize,
    /// The item that did not fit in the previous batch.
    carry: Option<TelemetryItem>,
    next_seq: u64,
}

impl AgentStream {
    fn next_item(&mut self) -> Option<TelemetryItem> {
        if let Some(item) = self.carry.take() {
            return Some(item);
        }
        if self.produced == self.total {
            return None;
        }
        let i = self.produced;
        self.produced += 1;
        let device = &self.devices[i % self.devices.len()];
        let at = self.start + self.step * u32::try_from(i).unwrap_or(u32::MAX);
        Some(event_item(self.synth.event(&self.agent_id, device, at)))
    }

    /// The next batch: up to `batch_items` items and `max_bytes` encoded bytes.
    fn next_batch(&mut self) -> Option<PushRequest> {
        let mut items: Vec<TelemetryItem> = Vec::new();
        let mut bytes = 16usize;
        while let Some(item) = self.next_item() {
            let len = item.encoded_len() + 8;
            if !items.is_empty()
                && (items.len() == self.batch_items || bytes + len > self.max_bytes)
            {
                self.carry = Some(item);
                break;
            }
            bytes += len;
            items.push(item);
        }
        if items.is_empty() {
            return None;
        }
        let batch_seq = self.next_seq;
        self.next_seq += 1;
        Some(PushRequest {
            batch_seq,
            items,
            all_or_nothing: false,
        })
    }
}

/// Where an agent task takes its batches from.
enum Source {
    /// Generated and encoded before the clock started.
    Ahead(Vec<Encoded>),
    /// Generated one at a time just before sending, while the shared room allows.
    Lazy(Box<AgentStream>, Arc<tokio::sync::Semaphore>),
}

/// Push round trips, summarised.
struct Percentiles {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Self {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// One agent: push each batch, retrying UNAVAILABLE with backoff, until all are acknowledged.
/// Returns each batch's round trip (first attempt sent to ack, retries included).
async fn push_all(
    dial: Arc<Dial>,
    agent: Registered,
    source: Source,
    acked: Arc<AtomicU64>,
    pushes: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Duration>> {
    let mut client = AgentClient::new(dial, &agent)?;
    let mut latencies = Vec::new();
    match source {
        Source::Ahead(batches) => {
            for batch in batches {
                let took = client.push(&batch).await?;
                latencies.push(took);
                acked.fetch_add(batch.items, Ordering::Relaxed);
                pushes.fetch_add(1, Ordering::Relaxed);
            }
        }
        Source::Lazy(mut stream, held) => loop {
            let room = u32::try_from(stream.batch_items).unwrap_or(u32::MAX);
            let _room = held.acquire_many(room).await?;
            let Some(batch) = stream.next_batch() else {
                break;
            };
            let batch = Encoded::of(&batch);
            let took = client.push(&batch).await?;
            latencies.push(took);
            acked.fetch_add(batch.items, Ordering::Relaxed);
            pushes.fetch_add(1, Ordering::Relaxed);
        },
    }
    Ok(latencies)
}

/// Where and how agents connect: the collector's address, TLS or not, and how many pushes a
/// connection carries before the agent opens a new one (0: one connection for the run).
struct Dial {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    pushes_per_connection: u64,
    /// Connections opened by all agents.
    opened: AtomicU64,
}

/// One simulated agent: its credential header and its current connection, replaced after
/// `pushes_per_connection` pushes.
struct AgentClient<'a> {
    dial: Arc<Dial>,
    agent: &'a Registered,
    auth: MetadataValue<Ascii>,
    connection: Option<tonic::client::Grpc<AgentConnection>>,
    pushes_on_connection: u64,
}

impl<'a> AgentClient<'a> {
    fn new(dial: Arc<Dial>, agent: &'a Registered) -> anyhow::Result<Self> {
        let auth = format!("Bearer {}", agent.credential)
            .parse()
            .context("the agent credential is not a valid header value")?;
        Ok(Self {
            dial,
            agent,
            auth,
            connection: None,
            pushes_on_connection: 0,
        })
    }

    /// Pushes one batch until it is acknowledged, on the current connection or a new one.
    async fn push(&mut self, batch: &Encoded) -> anyhow::Result<Duration> {
        let limit = self.dial.pushes_per_connection;
        if limit > 0 && self.pushes_on_connection >= limit {
            self.connection = None;
        }
        let client = match &mut self.connection {
            Some(c) => c,
            None => {
                let addr = self.dial.addr;
                let opened = AgentConnection::open(addr, self.dial.tls.as_ref())
                    .await
                    .with_context(|| {
                        format!("agent {}: connecting to {addr}", self.agent.agent_id)
                    })?;
                self.dial.opened.fetch_add(1, Ordering::Relaxed);
                self.pushes_on_connection = 0;
                self.connection.insert(opened)
            }
        };
        let took = push_one(client, self.agent, &self.auth, batch).await?;
        self.pushes_on_connection += 1;
        Ok(took)
    }
}

/// A client configuration trusting `ca_pem` only, offering HTTP/2 by ALPN (as tonic's TLS
/// channel does), without session resumption.
fn tls_connector(ca_pem: &str) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("reading the bench CA")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection makes a full handshake: the simulated agents share one process, and a
    // shared session cache would let them resume each other's sessions, which a fleet of
    // separate devices (against a server cache far smaller than the fleet) does not.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A `PushRequest` encoded once, as an agent's spool holds it: every attempt sends these
/// bytes. The collector receives exactly what `IngestServiceClient::push` would send; the
/// bench only skips re-encoding the batch and freeing its decoded copy on every push, which
/// is load-generator work on the cores the collector is measured on (issue 16: at batch 10
/// the client used 0.08-0.10 ms of CPU per push, a third of it in the allocator).
struct Encoded {
    bytes: Bytes,
    items: u64,
    batch_seq: u64,
}

impl Encoded {
    fn of(request: &PushRequest) -> Self {
        Self {
            bytes: Bytes::from(request.encode_to_vec()),
            items: request.items.len() as u64,
            batch_seq: request.batch_seq,
        }
    }
}

/// Sends pre-encoded `PushRequest` bytes and decodes the `PushResponse`.
#[derive(Clone, Copy)]
struct PushCodec;

impl tonic::codec::Codec for PushCodec {
    type Encode = Bytes;
    type Decode = PushResponse;
    type Encoder = PushCodec;
    type Decoder = PushCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl tonic::codec::Encoder for PushCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for PushCodec {
    type Item = PushResponse;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<PushResponse>, Status> {
        PushResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the PushResponse: {e}")))
    }
}

/// One simulated agent's HTTP/2 connection to the collector, driven by hyper directly.
///
/// Why not tonic's `Channel`: it puts a tower `Buffer` (an mpsc queue and a worker task) in
/// front of every connection, so each call crosses one more task than the wire needs. With
/// 1,000 agents on the two cores the collector is measured on, that hand-off was load-generator
/// CPU taken from the collector (issue 16). The bytes on the wire are the same gRPC calls:
/// tonic's `Grpc` still frames the request and reads the status.
#[derive(Clone)]
struct AgentConnection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl AgentConnection {
    /// Connects (TCP within 5 s as tonic's endpoint did, no delay, the TLS handshake when
    /// `tls` is given, the HTTP/2 handshake) and spawns the connection's driver.
    async fn open(
        addr: SocketAddr,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> anyhow::Result<tonic::client::Grpc<Self>> {
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .context("TCP connect timed out after 5 s")??;
        tcp.set_nodelay(true)?;
        let (send, origin) = match tls {
            None => (Self::h2(addr, tcp).await?, format!("http://{addr}")),
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from("localhost")?;
                let stream = connector.connect(name, tcp).await?;
                (
                    Self::h2(addr, stream).await?,
                    format!("https://localhost:{}", addr.port()),
                )
            }
        };
        Ok(
            tonic::client::Grpc::with_origin(Self { send }, origin.parse()?)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
    }

    /// The HTTP/2 handshake over `io`; the connection's driver runs until the sender is
    /// dropped.
    async fn h2<IO>(
        addr: SocketAddr,
        io: IO,
    ) -> anyhow::Result<hyper::client::conn::http2::SendRequest<tonic::body::Body>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(io))
                .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("bench: agent connection to {addr} ended: {e}");
            }
        });
        Ok(send)
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AgentConnection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}

/// Pushes one batch until it is acknowledged; its round trip.
async fn push_one(
    client: &mut tonic::client::Grpc<AgentConnection>,
    agent: &Registered,
    auth: &MetadataValue<Ascii>,
    batch: &Encoded,
) -> anyhow::Result<Duration> {
    let path = PathAndQuery::from_static("/fleetpulse.v1.IngestService/Push");
    let mut backoff = Duration::from_millis(20);
    let sent = Instant::now();
    loop {
        client
            .ready()
            .await
            .map_err(|e| anyhow::anyhow!("agent {}: connection not ready: {e}", agent.agent_id))?;
        let mut request = tonic::Request::new(batch.bytes.clone());
        request.metadata_mut().insert("authorization", auth.clone());
        match client.unary(request, path.clone(), PushCodec).await {
            Ok(response) => {
                let r = response.into_inner();
                if !r.rejected.is_empty() {
                    bail!(
                        "agent {} batch {}: {} items rejected, first: {:?}",
                        agent.agent_id,
                        batch.batch_seq,
                        r.rejected.len(),
                        r.rejected[0]
                    );
                }
                if u64::from(r.accepted) != batch.items {
                    bail!(
                        "batch {}: accepted {} of {}",
                        batch.batch_seq,
                        r.accepted,
                        batch.items
                    );
                }
                return Ok(sent.elapsed());
            }
            // UNAVAILABLE means "nothing acknowledged, keep it and retry" (ClickHouse busy,
            // writer queue full); anything else is a failure of the run.
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(s) => bail!("agent {} batch {}: {s}", agent.agent_id, batch.batch_seq),
        }
    }
}
