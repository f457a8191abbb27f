//! `api-bench`: latency of every dashboard endpoint of the analyzer at N stored events,
//! against a raw-scan query measured in the same run.
//!
//! Generates N enrollment events over 30 days inside ClickHouse (`INSERT .. SELECT .. FROM
//! numbers(N)`) plus one state snapshot per device, starts `fleetpulse-analyzer serve` (whose
//! migration backfills the rollups; its time is reported), then times, interleaved round by
//! round so that every case sees the same machine load:
//! - the raw-scan baseline: count, failed count and unique failed devices over the 30 days,
//!   sent straight to ClickHouse (what a dashboard without rollups would at least pay);
//! - every dashboard endpoint over the 30 days with an all-tenants key: summary, every
//!   breakdown dimension, time series at every bucket width (5 minutes over the last 7 days,
//!   the most a 5-minute series may hold under the 5,000-point cap), top codes, funnel, the
//!   insight list and each insight's affected devices; with `--raw-endpoints`, each of the
//!   rollup-backed ones again with `source=raw`.
//!
//! The insights are timed once the analyzer's first background insight snapshot exists (its
//! delay after ready is reported), as a running analyzer serves them.
//!
//! Requests go through hyper's pooled HTTP/1.1 client (keep-alive, as a dashboard does). The
//! last stdout line is one JSON object:
//! `{"events":N,"baseline_p50_ms":X,"endpoints":{"<name>":{"p50_ms":..,"p95_ms":..,"ratio":..},..},..}`
//! where `ratio` is the endpoint's p95 over the baseline's p50 (the bar: <= 0.1).
//!
//! Example: `cargo run --release -p fleetpulse-tests --bin api-bench -- --events 10000000`

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::process::{spawn_guarded, terminate};
use fleetpulse_tests::harness::{private, unique_database};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
#[command(
    about = "Latency of every analyzer dashboard endpoint at N events, against a raw-scan baseline measured in the same run",
    long_about = "Generates N events over 30 days in ClickHouse, starts the analyzer (its migration \
backfills the rollups), then times every dashboard endpoint and a raw-scan query sent straight \
to ClickHouse, interleaved round by round. Prints a Markdown table and, as the last line, one \
JSON object with p50/p95 per endpoint and the baseline's p50.\n\nBuild the bench and the \
analyzer in the same profile: the bench starts the `fleetpulse-analyzer` found next to itself."
)]
struct Args {
    /// Events to generate (30 days, 20 tenants, 200k devices, ~90k users).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Timed rounds (each round times every case once), after 2 warm-up rounds.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Use this ClickHouse instead of starting a private one.
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// Reuse this database (generated and migrated by an earlier run with --keep-database)
    /// instead of generating a new one.
    #[arg(long)]
    database: Option<String>,
    /// Keep the database at the end (to rerun with --database).
    #[arg(long)]
    keep_database: bool,
    /// Also time the rollup-backed endpoints with `source=raw` (slow at large N).
    #[arg(long)]
    raw_endpoints: bool,
    /// Leave out the endpoints whose name starts with this (repeatable), e.g. `--skip funnel
    /// --skip insights` at 100M events, where one raw-scan funnel request takes minutes.
    #[arg(long)]
    skip: Vec<String>,
    /// The shape of the ranges the cases ask for: `days` (2024-03-01 to 03-31, whole days:
    /// the dashboard's 30- and 90-day views), `minute` (29.5 days ending at a whole minute,
    /// 06:37 to 18:37: every rolling view before they were aligned to their buckets) or
    /// `hour` (the same length ending at a whole hour, 07:00 to 19:00: the edges of the
    /// dashboard's 7-day view) or `week` (the 7-day view itself: 7 days ending at a whole hour,
    /// 03-23 19:00 to 03-30 19:00, both edges within the days that keep day spans). The 7-day
    /// time series ends where the others do. The unaligned funnel case and the raw-scan
    /// baseline keep their own ranges in every shape.
    #[arg(long, value_enum, default_value_t = Window::Days)]
    window: Window,
}

/// The range shape of the timed cases (see `Args::window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Window {
    Days,
    Minute,
    Hour,
    Week,
}

impl Window {
    /// The query strings of the 30-day (29.5-day, 7-day) range and of the 7-day one.
    fn ranges(self) -> (&'static str, &'static str) {
        match self {
            Window::Days => (
                "from=2024-03-01T00:00:00Z&to=2024-03-31T00:00:00Z",
                "from=2024-03-24T00:00:00Z&to=2024-03-31T00:00:00Z",
            ),
            Window::Minute => (
                "from=2024-03-01T06:37:00Z&to=2024-03-30T18:37:00Z",
                "from=2024-03-23T18:37:00Z&to=2024-03-30T18:37:00Z",
            ),
            Window::Hour => (
                "from=2024-03-01T07:00:00Z&to=2024-03-30T19:00:00Z",
                "from=2024-03-23T19:00:00Z&to=2024-03-30T19:00:00Z",
            ),
            Window::Week => (
                "from=2024-03-23T19:00:00Z&to=2024-03-30T19:00:00Z",
                "from=2024-03-23T19:00:00Z&to=2024-03-30T19:00:00Z",
            ),
        }
    }
}

/// 2024-03-01T00:00:00Z, a Friday.
const T0: u64 = 1_709_251_200;
const DAYS: u64 = 30;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

type Http = HttpClient<HttpConnector, Empty<Bytes>>;

/// GET `path` and read the whole body; fails on any status but 200.
async fn get(http: &Http, addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<Bytes> {
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())?;
    let resp = http
        .request(req)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

fn generate_events_sql(db: &str, n: u64) -> String {
    format!(
        "INSERT INTO {db}.enrollment_events (tenant, event_id, agent_id, batch_seq, device_id, occurred_at, \
         occurred_ms, received_at, platform, os_edition, os_version, enrollment_method, stage, outcome, error_code, \
         error_has_code, error_symbol, error_message, source_kind, source_channel, source_event_id, \
         source_record_id, user_principal_name) \
         SELECT concat('tenant', toString(d % 20)), generateUUIDv4(), concat('agent', toString(d)), 1, \
         concat('dev', toString(d)), toDateTime({T0} + intHash32(number) % ({DAYS} * 86400), 'UTC'), \
         toUInt16(number % 1000), toDateTime(now() - 3600), \
         ['windows', 'ios', 'android', 'macos'][d % 4 + 1], '', \
         ['10.0.22631.4602', '10.0.19045.5247', '17.5.1', '14'][d % 4 + 1], \
         ['entra_join', 'apple_ade', 'android_work_profile', 'autopilot_user_driven'][d % 4 + 1], \
         ['discovery', 'authentication', 'authorization', 'certificate_request', 'complete'][number % 5 + 1], \
         o, if(o = 'failed', [2149056532, 2149056536, 2149319658, 2147942405, 305419896][e + 1], 0), \
         toUInt8(o = 'failed'), if(o = 'failed' AND e = 4, 'DeviceCapReached', ''), \
         if(o = 'failed', ['', 'The license of user is in bad state', '', 'Access is denied.', ''][e + 1], ''), \
         if(number % 8 = 0, 'graph', 'simulator'), '', 0, 0, concat('user', toString(d % 90000), '@example.com') \
         FROM (SELECT number, intHash32(number * 3) % 200000 AS d, \
         ['succeeded', 'failed', 'in_progress', 'succeeded'][intHash32(number * 7) % 4 + 1] AS o, \
         intHash32(number * 11) % 5 AS e FROM numbers({n}))"
    )
}

/// One snapshot per device (200k), so that the insights have state to read.
fn generate_states_sql(db: &str) -> String {
    format!(
        "INSERT INTO {db}.device_states (tenant, agent_id, batch_seq, device_id, captured_at, received_at, \
         platform, os_edition, os_version, join_state, mdm_enrolled, mdm_url, entra_tenant_id, tpm_present, \
         tpm_spec_version, tpm_ready, tpm_manufacturer, primary_user_upn, last_attempt_at, last_outcome, \
         last_error_code, last_error_has_code, last_error_symbol, last_error_message, license_state, \
         enrollment_method, device_name) \
         SELECT concat('tenant', toString(d % 20)), concat('agent', toString(d)), 1, concat('dev', toString(d)), \
         toDateTime({T0} + intHash32(d) % ({DAYS} * 86400), 'UTC'), toDateTime(now() - 3600), \
         ['windows', 'ios', 'android', 'macos'][d % 4 + 1], '', '', \
         ['entra_joined', 'hybrid_joined', 'not_joined', 'entra_joined'][intHash32(d * 5) % 4 + 1], \
         toUInt8(intHash32(d * 13) % 10 != 0), '', '', toUInt8(d % 50 != 0), if(d % 50 = 1, '1.2', '2.0'), 1, '', \
         concat('user', toString(d % 90000), '@example.com'), toDateTime({T0}, 'UTC'), '', 0, 0, '', '', \
         if(d % 97 = 0, 'unlicensed', 'licensed'), \
         ['entra_join', 'apple_ade', 'android_work_profile', 'autopilot_self_deploying'][d % 4 + 1], '' \
         FROM (SELECT number AS d FROM numbers(200000))"
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let owned;
    let url = match &args.clickhouse_url {
        Some(u) => u.clone(),
        None => {
            owned = private().context("starting ClickHouse")?;
            owned.url().to_owned()
        }
    };
    let ch = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    let db = match &args.database {
        Some(db) => db.clone(),
        None => {
            let db = unique_database("api_bench");
            ch.query(&format!("CREATE DATABASE {db}")).execute().await?;
            for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
                ch.query(&stmt).execute().await?;
            }
            eprintln!("generating {} events in ClickHouse ...", args.events);
            let t = Instant::now();
            ch.query(&generate_events_sql(&db, args.events))
                .execute()
                .await
                .context("generating events")?;
            ch.query(&generate_states_sql(&db))
                .execute()
                .await
                .context("generating device states")?;
            eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
            db
        }
    };
    let events: u64 = ch
        .query(&format!("SELECT count() FROM {db}.enrollment_events"))
        .fetch_one()
        .await?;

    let dir = tempfile::tempdir()?;
    let ready = dir.path().join("ready.json");
    let db_url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let bin = workspace_binary("fleetpulse-analyzer")?;
    let out = Command::new(&bin)
        .args(["key", "create", "--all-tenants", "--database-url", &db_url])
        .output()?;
    if !out.status.success() {
        bail!(
            "key create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let t = Instant::now();
    let mut cmd = Command::new(&bin);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backfill-grace-secs",
        "0",
        "--clickhouse-url",
        &url,
    ])
    .args(["--clickhouse-database", &db, "--database-url", &db_url])
    .arg("--ready-file")
    .arg(&ready)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = spawn_guarded(cmd, "fleetpulse-analyzer")?;
    let deadline = Instant::now() + Duration::from_secs(4 * 3600);
    let addr: SocketAddr = loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(a) = v["http"].as_str()
        {
            break a.parse()?;
        }
        if Instant::now() > deadline {
            bail!("analyzer not ready within four hours");
        }
        eprint!(".");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let backfill_s = t.elapsed().as_secs_f64();
    eprintln!("\nanalyzer ready (migration + rollup backfill) in {backfill_s:.1} s");
    let http: Http = HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();
    // The insights are read from the snapshot `serve` refreshes in the background (at once,
    // then every minute): time them from the first snapshot on, as a running analyzer serves
    // them.
    let t = Instant::now();
    let first_snapshot_s = loop {
        let body = get(&http, addr, "/api/v1/insights", &token).await?;
        if serde_json::from_slice::<Value>(&body)?["from_snapshot"] == true {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("no insight snapshot within 30 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("first insight snapshot {first_snapshot_s:.1} s after ready");
    // The span-backed questions read their days (and hours) until the span builder's first
    // pass (week spans of all history, day spans of the last days) is done: time them from then on, as a running analyzer serves them. At
    // 10M the pass takes seconds; at 100M it is minutes.
    let t = Instant::now();
    let first_span_pass_s = loop {
        let body = get(&http, addr, "/metrics", &token).await?;
        let passes = fleetpulse_tests::harness::http::metric_value(
            &String::from_utf8_lossy(&body),
            "fleetpulse_analyzer_week_span_passes_total",
        );
        if passes.is_some_and(|n| n >= 1.0) {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(3600) {
            bail!("the week span builder completed no pass within an hour");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "first span pass (week and day spans) done {first_span_pass_s:.1} s after the snapshot"
    );

    #[derive(Debug, serde::Deserialize, clickhouse::Row)]
    struct TableSize {
        table: String,
        rows: u64,
        bytes: u64,
    }
    let sizes: Vec<TableSize> = ch
        .query(
            "SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts \
             WHERE database = ? AND active GROUP BY table ORDER BY table",
        )
        .bind(db.as_str())
        .fetch_all()
        .await?;
    let is_rollup = |t: &str| {
        t.starts_with("rollup_")
            || t.starts_with("insight_snapshot")
            || ["signal_dictionary", "device_latest", "device_facts"].contains(&t)
    };
    let rollup_bytes: u64 = sizes
        .iter()
        .filter(|s| is_rollup(&s.table))
        .map(|s| s.bytes)
        .sum();
    let raw_bytes: u64 = sizes
        .iter()
        .filter(|s| s.table == "enrollment_events")
        .map(|s| s.bytes)
        .sum();

    let (range, last_week) = args.window.ranges();
    let mut cases: Vec<(String, String)> =
        vec![("summary".into(), format!("/api/v1/summary?{range}"))];
    for dim in fleetpulse_analyzer::query::engine::Dimension::NAMES {
        cases.push((
            format!("breakdown/{dim}"),
            format!("/api/v1/breakdown/{dim}?{range}"),
        ));
    }
    cases.push((
        "timeseries/5m (7 days)".into(),
        format!("/api/v1/timeseries?{last_week}&bucket=5m"),
    ));
    for b in ["15m", "1h", "1d"] {
        cases.push((
            format!("timeseries/{b}"),
            format!("/api/v1/timeseries?{range}&bucket={b}"),
        ));
    }
    cases.push(("top-codes".into(), format!("/api/v1/top-codes?{range}")));
    let rollup_backed = cases.len();
    cases.push((
        "affected-devices".into(),
        format!("/api/v1/affected-devices?{range}&category=device_cap"),
    ));
    cases.push(("funnel".into(), format!("/api/v1/funnel?{range}")));
    // The dashboard's "last 30 days" is not day-aligned: partial days at both edges.
    cases.push((
        "funnel (unaligned)".into(),
        "/api/v1/funnel?from=2024-03-01T06:30:00Z&to=2024-03-30T18:00:00Z".into(),
    ));
    // The exact one-pass plan (time-to-enroll percentiles): the dashboard's "compute" button.
    cases.push((
        "funnel (source=raw)".into(),
        format!("/api/v1/funnel?{range}&source=raw"),
    ));
    cases.push(("insights".into(), "/api/v1/insights".into()));
    for id in fleetpulse_analyzer::insights::InsightId::ALL {
        let id = id.as_str();
        cases.push((
            format!("insights/{id}/devices"),
            format!("/api/v1/insights/{id}/devices"),
        ));
    }
    cases.retain(|(name, _)| !args.skip.iter().any(|s| name.starts_with(s.as_str())));
    let rollup_backed = rollup_backed.min(cases.len());
    if args.raw_endpoints {
        let raw: Vec<(String, String)> = cases[..rollup_backed]
            .iter()
            .map(|(n, p)| (format!("{n} source=raw"), format!("{p}&source=raw")))
            .collect();
        cases.extend(raw);
    }

    let raw_scan = format!(
        "SELECT count(), countIf(outcome = 'failed'), uniqIf(tenant, device_id, outcome = 'failed') \
         FROM {db}.enrollment_events WHERE occurred_at >= toDateTime({T0}, 'UTC') AND occurred_at < toDateTime({}, 'UTC')",
        T0 + DAYS * 86400
    );
    // Index 0 is the baseline, then the cases in order.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len() + 1];
    for round in 0..args.iterations + 2 {
        let t = Instant::now();
        ch.query(&raw_scan).fetch_one::<(u64, u64, u64)>().await?;
        let base = t.elapsed().as_secs_f64() * 1000.0;
        let mut times = vec![base];
        for (_, path) in &cases {
            let t = Instant::now();
            get(&http, addr, path, &token).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if round >= 2 {
            for (s, t) in samples.iter_mut().zip(times) {
                s.push(t);
            }
        }
        eprint!("\rround {}/{}", round + 1, args.iterations + 2);
    }
    eprintln!();
    let stats = |s: &mut Vec<f64>| {
        s.sort_by(|a, b| a.total_cmp(b));
        (percentile(s, 0.5), percentile(s, 0.95))
    };
    let (base_p50, base_p95) = stats(&mut samples[0]);

    println!(
        "# api-bench: {events} events, {} rounds, ranges {range}; analyzer ready (migration + backfill) in {backfill_s:.1} s",
        args.iterations
    );
    println!(
        "# storage: raw events {:.1} MiB, rollups + signal dictionary + device rollups + insight snapshots {:.1} MiB",
        raw_bytes as f64 / 1048576.0,
        rollup_bytes as f64 / 1048576.0
    );
    for s in sizes.iter().filter(|s| is_rollup(&s.table)) {
        println!(
            "#   {}: {} rows, {:.2} MiB",
            s.table,
            s.rows,
            s.bytes as f64 / 1048576.0
        );
    }
    println!("raw-scan baseline (ClickHouse direct): p50 {base_p50:.1} ms, p95 {base_p95:.1} ms");
    println!("| endpoint | p50 | p95 | p95 / baseline p50 | bar (<= 0.1) |");
    println!("| --- | --- | --- | --- | --- |");
    let mut endpoints = Map::new();
    for ((name, _), s) in cases.iter().zip(samples.iter_mut().skip(1)) {
        let (p50, p95) = stats(s);
        let ratio = p95 / base_p50;
        println!(
            "| {name} | {p50:.1} ms | {p95:.1} ms | {ratio:.3} | {} |",
            if ratio <= 0.1 { "met" } else { "not met" }
        );
        endpoints.insert(
            name.clone(),
            json!({"p50_ms": round2(p50), "p95_ms": round2(p95), "ratio": round3(ratio)}),
        );
    }
    let _ = terminate(&mut child, Duration::from_secs(10));
    if !args.keep_database && args.database.is_none() {
        ch.query(&format!("DROP DATABASE {db}")).execute().await?;
    } else {
        eprintln!("kept database {db}");
    }
    println!(
        "{}",
        json!({
            "events": events,
            "baseline_p50_ms": round2(base_p50),
            "baseline_p95_ms": round2(base_p95),
            "endpoints": endpoints,
            "backfill_s": round2(backfill_s),
            "first_insight_snapshot_s": round2(first_snapshot_s),
            "first_span_pass_s": round2(first_span_pass_s),
            "raw_bytes": raw_bytes,
            "rollup_bytes": rollup_bytes,
            "window": format!("{:?}", args.window).to_lowercase(),
        })
    );
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
