//! The compatibility lane for current ClickHouse releases: every query the analyzer's API
//! produces, for a matrix of endpoints, filters, dimensions, buckets and sources, is captured
//! on this machine's ClickHouse 18.16 (`FLEETPULSE_ANALYZER_SQL_LOG`) and replayed by
//! `scripts/chdb-compat.py` on chDB (ClickHouse 26.x in-process) over the same rows, after
//! every collector and analyzer migration ran there; the answers must be equal, and the
//! rollups must not double count a retried, deduplicated insert. Needs Python with `chdb`
//! (`deploy/install-deps.sh` installs it; `FLEETPULSE_CHDB_PYTHON` names another interpreter).

mod analyzer_support;

use std::path::PathBuf;
use std::process::Command;

use analyzer_support::*;
use fleetpulse_tests::harness::{shared, unique_database};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with chDB: `FLEETPULSE_CHDB_PYTHON`, else the virtualenv install-deps.sh
/// creates, else `python3`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLEETPULSE_CHDB_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(venv) = cache.map(|c| c.join("fleetpulse/chdb-venv/bin/python3"))
        && venv.exists()
    {
        return venv;
    }
    "python3".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_sql_answers_the_same_on_current_clickhouse() {
    let py = python();
    let version = Command::new(&py)
        .args([
            "-c",
            "import chdb; print(chdb.query('SELECT version()', 'TabSeparated'), end='')",
        ])
        .output()
        .expect("run python");
    assert!(
        version.status.success(),
        "{} cannot import chdb (run deploy/install-deps.sh): {}",
        py.display(),
        String::from_utf8_lossy(&version.stderr)
    );
    let chdb_version = String::from_utf8_lossy(&version.stdout).trim().to_owned();

    let ch = shared();
    let db = unique_database("analyzer_chdb");
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    insert_events(ch, &db, &events_over(7, 3000, now().saturating_sub(60), 12)).await;
    // State snapshots for the insights (one per device, every insight non-empty).
    ch.execute(&format!(
        "INSERT INTO {db}.device_states (tenant, agent_id, device_id, captured_at, received_at, platform, \
         join_state, mdm_enrolled, tpm_present, tpm_spec_version, primary_user_upn, last_attempt_at, \
         license_state, enrollment_method) \
         SELECT ['contoso', 'fabrikam'][d % 2 + 1], concat('agent-', toString(d)), \
         concat('dev-', substring(toString(1000 + d), 2, 3)), toDateTime({T0} + d * 600, 'UTC'), now(), \
         'windows', ['entra_joined', 'hybrid_joined', 'not_joined'][d % 3 + 1], toUInt8(d % 4 != 0), \
         toUInt8(d % 5 != 0), if(d % 7 = 0, '1.2', '2.0'), concat('user', toString(d % 9), '@contoso.com'), \
         toDateTime({T0}, 'UTC'), if(d % 11 = 0, 'unlicensed', 'licensed'), \
         ['autopilot_self_deploying', 'entra_join'][d % 2 + 1] FROM (SELECT number AS d FROM numbers(200))"
    ))
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sql.log");
    let analyzer = Analyzer::start_with_sql_log(ch, &db, &log).await;
    // Each span-backed question is sent beside its span check; asked before the spans exist,
    // its answer is discarded for the days', yet the logged SQL would be replayed on chDB
    // before the builder's INSERTs and compared with 18.16's answer after them.
    analyzer
        .await_first_span_pass(std::time::Duration::from_secs(120))
        .await;
    let token = analyzer.create_key(&["--all-tenants"]);

    let aligned = format!("from={}&to={}", iso(T0), iso(T0 + 3 * DAY));
    let with_week = format!(
        "from={}&to={}",
        iso(T0 + 5 * 3600 + 17 * 60),
        iso(T0 + 11 * DAY + 3 * 3600 + 59)
    );
    let short = format!("from={}&to={}", iso(T0 + 3600 + 7), iso(T0 + 9 * 3600));
    let filters = [
        "",
        "&tenant=contoso",
        "&platform=ios",
        "&category=device_cap",
        "&side=server",
        "&side=client&stage=complete",
        "&method=entra_join&os_version=14",
        "&outcome=failed",
        "&code=0x80180014",
    ];
    let mut paths = Vec::new();
    for source in ["auto", "raw"] {
        for range in [&aligned, &with_week] {
            for extra in filters {
                let q = format!("{range}{extra}&source={source}");
                paths.push(format!("/api/v1/summary?{q}"));
                paths.push(format!("/api/v1/top-codes?{q}&limit=50"));
                for dim in fleetpulse_analyzer::query::engine::Dimension::NAMES {
                    paths.push(format!("/api/v1/breakdown/{dim}?{q}"));
                }
            }
        }
        for extra in ["", "&tenant=fabrikam", "&category=unknown", "&side=client"] {
            for (bucket, range) in [
                ("5m", &short),
                ("15m", &short),
                ("1h", &with_week),
                ("1d", &with_week),
            ] {
                paths.push(format!(
                    "/api/v1/timeseries?{range}{extra}&bucket={bucket}&source={source}"
                ));
            }
        }
    }
    // The dashboard's 7-day view (7 days ending at a whole hour): a day's tail and a day's
    // head (migration 0012), both within the days the builder keeps day spans for.
    let week_view = format!(
        "from={}&to={}",
        iso(T0 + 4 * DAY + 19 * 3600),
        iso(T0 + 11 * DAY + 19 * 3600)
    );
    for extra in ["", "&tenant=contoso", "&platform=ios", "&outcome=failed"] {
        paths.push(format!("/api/v1/summary?{week_view}{extra}"));
        for dim in fleetpulse_analyzer::query::engine::Dimension::NAMES {
            paths.push(format!("/api/v1/breakdown/{dim}?{week_view}{extra}"));
        }
    }
    // The device-set rollups (with raw edges, and over whole days) and the raw plan.
    for extra in [
        "",
        "&platform=windows",
        "&tenant=contoso&stage=complete",
        "&side=server",
        "&source=raw",
    ] {
        paths.push(format!("/api/v1/funnel?{with_week}{extra}"));
    }
    paths.push(format!("/api/v1/funnel?{aligned}&outcome=failed"));
    for extra in [
        "",
        "&category=device_cap",
        "&code=0x80180018",
        "&q=dev-01&side=client",
    ] {
        paths.push(format!(
            "/api/v1/affected-devices?{with_week}{extra}&limit=20"
        ));
    }
    paths.push("/api/v1/insights".to_owned());
    for id in fleetpulse_analyzer::insights::InsightId::ALL {
        paths.push(format!("/api/v1/insights/{}/devices", id.as_str()));
    }
    paths.push("/api/v1/devices/dev-007/events?tenant=contoso".to_owned());
    paths.push("/api/v1/devices/dev-008/state?tenant=contoso".to_owned());
    for path in &paths {
        let (status, body) = analyzer.get(path, Some(&token)).await;
        assert!(
            status == 200 || status == 404,
            "GET {path}: {status} {body}"
        );
    }
    drop(analyzer);

    // The insight snapshots (migration 0006): an analyzer refreshing them at its start (once:
    // the next refresh is an hour away), then the same insight requests read the snapshot.
    // Its queries are appended to the log: the refresh's INSERTs run on chDB too, and the
    // snapshot reads compare the stored answers of both sides.
    let snapshot_log = dir.path().join("sql-snapshot.log");
    let analyzer = Analyzer::start_with_env(
        ch,
        &db,
        &["--insights-refresh-secs", "3600"],
        &[(
            fleetpulse_analyzer::query::engine::sql_log::ENV,
            &snapshot_log,
        )],
    )
    .await;
    let token = analyzer.create_key(&["--all-tenants"]);
    // Waiting on the table, not the API: a request before the refresh completes would log a
    // snapshot lookup that chDB, replaying the log, answers before the refresh's INSERTs.
    let marker = format!("SELECT count() FROM {db}.insight_snapshots");
    fleetpulse_tests::harness::poll_until(
        std::time::Duration::from_secs(60),
        "an insight snapshot",
        || {
            let marker = marker.clone();
            async move {
                match ch.count(&marker, &[]).await {
                    Ok(1) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let mut snapshot_paths = vec!["/api/v1/insights?tenant=contoso".to_owned()];
    for id in fleetpulse_analyzer::insights::InsightId::ALL {
        snapshot_paths.push(format!("/api/v1/insights/{}/devices", id.as_str()));
        snapshot_paths.push(format!(
            "/api/v1/insights/{}/devices?tenant=fabrikam&limit=3",
            id.as_str()
        ));
    }
    for path in &snapshot_paths {
        let page = analyzer.ok(path, &token).await;
        assert_eq!(page["from_snapshot"], true, "{path}: {page}");
    }
    drop(analyzer);
    let mut all = std::fs::read_to_string(&log).unwrap();
    all.push_str(&std::fs::read_to_string(&snapshot_log).unwrap());
    std::fs::write(&log, all).unwrap();
    let snapshot_writes = std::fs::read_to_string(&snapshot_log)
        .unwrap()
        .matches("INSERT INTO")
        .count();

    let migrations = dir.path().join("migrations.sql");
    let stmts =
        fleetpulse_analyzer::rollups::fresh_database_statements(&db, &chdb_version, now() + 1);
    std::fs::write(&migrations, stmts.join("\n;;\n")).unwrap();
    let out = Command::new(&py)
        .arg(repo().join("scripts/chdb-compat.py"))
        .args(["--clickhouse-url", ch.url(), "--database", &db])
        .arg("--migrations")
        .arg(&migrations)
        .arg("--sql-log")
        .arg(&log)
        .output()
        .expect("run chdb-compat.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(out.status.success(), "chDB lane failed: {report:#}");
    assert_eq!(report["chdb_version"], chdb_version.as_str());
    assert!(
        report["chdb_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("2")
    );
    // Every request above sends at least one query; most send two or more.
    let compared = report["queries_compared"].as_u64().unwrap_or(0);
    assert!(
        compared as usize >= paths.len(),
        "only {compared} queries compared for {} requests",
        paths.len()
    );
    // 0003's 14 rollups, 0004's 12, 0007's 3 and 0008's 3.
    assert_eq!(report["dedup_trap"]["rollups_checked"], 37, "{report}");
    // The finalize passes at both starts (4 widths x fleet and per tenant) and the snapshot
    // refresh (7 insights, the counts, the marker) ran on chDB too.
    assert!(
        report["finalize_statements"].as_u64().unwrap_or(0) >= 16 + 9,
        "{report}"
    );
    assert!(snapshot_writes >= 8 + 9, "{snapshot_writes}");
    eprintln!(
        "chDB lane: {compared} queries equal on {} and {}",
        report["server_version"], report["chdb_version"]
    );
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}
