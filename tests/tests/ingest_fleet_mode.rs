//! A small fleet-mode run of `ingest-bench` (issue 16): many agents on their own kept-open
//! connections pushing small batches, every event acknowledged and counted exactly in
//! ClickHouse (the bench fails on a missing or duplicate row), and the report carrying the
//! fleet figures. The full runs and their figures are in BENCHMARKS.md; this only keeps the
//! mode working in CI, on the debug build.

use std::process::Stdio;
use std::time::Duration;

use fleetpulse_tests::harness::{self, collector::workspace_binary};

/// Runs `ingest-bench` in fleet mode with `extra` arguments; returns its JSON report after
/// checking the counts and the per-push figures every run must carry.
async fn fleet_run(extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let ch = harness::shared();
    let bench = workspace_binary("ingest-bench")?;
    let mut command = tokio::process::Command::new(bench);
    command
        .args([
            "--no-build",
            "--events",
            "6000",
            "--agents",
            "200",
            "--batch",
            "10",
            "--raw-chunk",
            "6000",
        ])
        .args(extra)
        .env("CLICKHOUSE_URL", ch.url())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(240), command.output()).await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ingest-bench failed:\n{stderr}");
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last)?;
    assert_eq!(report["events"], 6000, "{report}");
    assert_eq!(report["agents"], 200, "{report}");
    assert_eq!(report["batch"], 10, "{report}");
    assert_eq!(report["pushes"], 600, "{report}");
    for field in [
        "pipeline_eps",
        "pushes_per_s",
        "raw_clickhouse_eps",
        "ratio",
        "collector_cpu_ms_per_push",
        "collector_cpu_s_per_million_events",
        "collector_rss_mib",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v > 0.0),
            "{field} missing or zero in {report}\n{stderr}"
        );
    }
    Ok(report)
}

#[tokio::test]
async fn fleet_mode_bench_stores_every_event_and_reports_per_push_cost() -> anyhow::Result<()> {
    let report = fleet_run(&[]).await?;
    assert_eq!(report["control_db"], "sqlite", "{report}");
    assert_eq!(
        (&report["tls"], &report["connections"]),
        (&serde_json::json!(false), &serde_json::json!(200)),
        "{report}"
    );
    assert!(report["control_db_cpu_ms_per_push"].is_null(), "{report}");
    println!("fleet mode: {report}");
    Ok(())
}

/// The same on a private PostgreSQL control database, whose CPU (postmaster and backends) is
/// reported per push.
#[tokio::test]
async fn fleet_mode_bench_on_postgres_reports_the_control_database_cost() -> anyhow::Result<()> {
    let report = fleet_run(&["--control-db", "postgres"]).await?;
    assert_eq!(report["control_db"], "postgres", "{report}");
    assert!(
        report["control_db_cpu_ms_per_push"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{report}"
    );
    println!("fleet mode on PostgreSQL: {report}");
    Ok(())
}

/// Over TLS, with every push on a new connection (TCP, TLS and HTTP/2 handshakes each time),
/// as a fleet whose devices connect, push and go: all stored, one connection per push.
#[tokio::test]
async fn fleet_mode_bench_over_tls_with_a_connection_per_push() -> anyhow::Result<()> {
    let report = fleet_run(&["--tls", "--pushes-per-connection", "1"]).await?;
    assert_eq!(report["tls"], true, "{report}");
    assert_eq!(report["pushes_per_connection"], 1, "{report}");
    assert_eq!(report["connections"], 600, "{report}");
    println!("fleet mode over TLS, a connection per push: {report}");
    Ok(())
}
