//! `api-bench`: dashboard endpoint latency of the analyzer at N stored events, with and
//! without rollups, against a raw-scan query measured in the same run.
//!
//! Generates N enrollment events inside ClickHouse (`INSERT .. SELECT .. FROM numbers(N)`),
//! starts `fleetpulse-analyzer serve` (whose migration backfills the rollups), then times
//! `GET /api/v1/summary`, `/breakdown/category` and `/timeseries?bucket=1h` over 30 days with
//! `source=auto` (rollups) and `source=raw`, plus the equivalent hand-written raw-scan query
//! sent straight to ClickHouse. Prints p50/p95 per case and the ratios.
//!
//! Example: `cargo run -p fleetpulse-tests --bin api-bench -- --events 10000000 --iterations 30`

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::process::{spawn_guarded, terminate};
use fleetpulse_tests::harness::{private, unique_database};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
#[command(about = "Analyzer API latency at N events, rollups vs raw, with a raw-scan baseline")]
struct Args {
    /// Events to generate (spread over 30 days, 20 tenants, 200k devices).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Timed requests per case (after 3 warm-up requests).
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Use this ClickHouse instead of starting a private one.
    #[arg(long)]
    clickhouse_url: Option<String>,
}

const T0: u64 = 1_709_251_200;
const DAYS: u64 = 30;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn get(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

struct Stats {
    p50: f64,
    p95: f64,
}

async fn time<F, Fut>(iterations: usize, mut f: F) -> anyhow::Result<Stats>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..3 {
        f().await?;
    }
    let mut ms = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok(Stats {
        p50: percentile(&ms, 0.5),
        p95: percentile(&ms, 0.95),
    })
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
    let db = unique_database("api_bench");
    ch.query(&format!("CREATE DATABASE {db}")).execute().await?;
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.query(&stmt).execute().await?;
    }
    eprintln!("generating {} events in ClickHouse ...", args.events);
    let t = Instant::now();
    let gen_sql = format!(
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
         'simulator', '', 0, 0, concat('user', toString(d % 90000), '@example.com') \
         FROM (SELECT number, intHash32(number * 3) % 200000 AS d, \
         ['succeeded', 'failed', 'in_progress', 'succeeded'][intHash32(number * 7) % 4 + 1] AS o, \
         intHash32(number * 11) % 5 AS e FROM numbers({}))",
        args.events
    );
    ch.query(&gen_sql)
        .execute()
        .await
        .context("generating events")?;
    eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());

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
    let deadline = Instant::now() + Duration::from_secs(3600);
    let addr: SocketAddr = loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(a) = v["http"].as_str()
        {
            break a.parse()?;
        }
        if Instant::now() > deadline {
            bail!("analyzer not ready within an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "analyzer ready (migration + rollup backfill) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut rollup_rows = Vec::new();
    for table in [
        "rollup_events_hourly",
        "rollup_events_daily",
        "rollup_events_weekly",
        "rollup_totals_hourly",
        "rollup_totals_daily",
        "rollup_totals_weekly",
    ] {
        let n: u64 = ch
            .query(&format!("SELECT count() FROM {db}.{table}"))
            .fetch_one()
            .await?;
        rollup_rows.push(format!("{table} {n}"));
    }

    let range = "from=2024-03-01T00:00:00Z&to=2024-03-31T00:00:00Z";
    let cases = [
        ("summary", format!("/api/v1/summary?{range}")),
        (
            "breakdown/category",
            format!("/api/v1/breakdown/category?{range}"),
        ),
        (
            "timeseries 1h, one tenant",
            format!("/api/v1/timeseries?{range}&bucket=1h&tenant=tenant3"),
        ),
    ];
    let raw_scan = format!(
        "SELECT count(), countIf(outcome = 'failed'), uniqIf(tenant, device_id, outcome = 'failed') \
         FROM {db}.enrollment_events WHERE occurred_at >= toDateTime({T0}, 'UTC') AND occurred_at < toDateTime({}, 'UTC')",
        T0 + DAYS * 86400
    );
    let baseline = time(args.iterations, || {
        let ch = ch.clone();
        let q = raw_scan.clone();
        async move {
            ch.query(&q).fetch_one::<(u64, u64, u64)>().await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "# api-bench: {} events, {} iterations per case",
        args.events, args.iterations
    );
    println!("# rollup rows: {}", rollup_rows.join(", "));
    println!(
        "raw-scan query (ClickHouse direct): p50 {:.1} ms, p95 {:.1} ms",
        baseline.p50, baseline.p95
    );
    println!(
        "| endpoint | rollups p50 | rollups p95 | raw p50 | raw p95 | rollups p95 / raw-scan p95 |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, path) in &cases {
        let mut r = Vec::new();
        for source in ["auto", "raw"] {
            let p = format!("{path}&source={source}");
            let s = time(args.iterations, || {
                let p = p.clone();
                let token = token.clone();
                async move {
                    let status = get(addr, &p, &token).await?;
                    if status != 200 {
                        bail!("GET {p} answered {status}");
                    }
                    Ok(())
                }
            })
            .await?;
            r.push(s);
        }
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} |",
            r[0].p50,
            r[0].p95,
            r[1].p50,
            r[1].p95,
            r[0].p95 / baseline.p95
        );
    }
    let _ = terminate(&mut child, Duration::from_secs(10));
    ch.query(&format!("DROP DATABASE {db}")).execute().await?;
    Ok(())
}
