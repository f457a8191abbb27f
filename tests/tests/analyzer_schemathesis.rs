//! The analyzer's HTTP API under property-based testing against its own OpenAPI document
//! (schemathesis, PyPI): a real analyzer on a real ClickHouse holding events, an all-tenants
//! API key, and every documented operation called with generated valid and invalid
//! parameters and bodies. Checks: no 5xx (`not_a_server_error`), every status documented
//! (`status_code_conformance`), every body, errors included, in the documented shape
//! (`response_schema_conformance`) and content type (`content_type_conformance`).
//!
//! Bounded for CI: `FLEETPULSE_SCHEMATHESIS_EXAMPLES` examples per operation (default 8),
//! fixed seed. The longer run (DEVELOPERS.md, "Fuzzing"):
//! `FLEETPULSE_SCHEMATHESIS_EXAMPLES=200 FLEETPULSE_SCHEMATHESIS_PHASES=examples,coverage,fuzzing,stateful
//! cargo test -p fleetpulse-tests --test analyzer_schemathesis -- --nocapture`.
//! schemathesis comes from `deploy/install-deps.sh` (a venv under ~/.cache/fleetpulse);
//! `FLEETPULSE_SCHEMATHESIS` names another executable.

mod analyzer_support;

use std::path::PathBuf;
use std::process::Command;

use analyzer_support::*;
use fleetpulse_tests::harness::shared;

fn schemathesis() -> PathBuf {
    if let Ok(p) = std::env::var("FLEETPULSE_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    let path = cache.join("fleetpulse/schemathesis-venv/bin/schemathesis");
    assert!(
        path.exists(),
        "{} not found: run deploy/install-deps.sh (or set FLEETPULSE_SCHEMATHESIS)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_conforms_to_its_openapi_document_under_generated_requests() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_schemathesis").await;
    // Events around now, so the default range (the last 24 h) holds data too.
    let rows = events_over(13, 2000, now().saturating_sub(30), 3);
    insert_events(ch, &db, &rows).await;
    let a = Analyzer::start(ch, &db, &[]).await;
    let key = a.create_key(&["--all-tenants"]);
    let examples = std::env::var("FLEETPULSE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "8".into());
    let phases = std::env::var("FLEETPULSE_SCHEMATHESIS_PHASES")
        .unwrap_or_else(|_| "examples,coverage,fuzzing".into());
    let report = tempfile::tempdir().expect("report dir");
    let out = tokio::task::spawn_blocking({
        let url = format!("http://{}/api/v1/openapi.json", a.addr);
        let report = report.path().to_path_buf();
        move || {
            Command::new(schemathesis())
                .arg("run")
                .arg(&url)
                .args(["--header", &format!("Authorization: Bearer {key}")])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                ])
                .args(["--max-examples", &examples, "--seed", "20240601"])
                .args(["--phases", &phases])
                .args(["--workers", "1", "--request-timeout", "30"])
                .args(["--suppress-health-check", "all", "--no-color"])
                .args(["--generation-database", "none"])
                .arg("--report-dir")
                .arg(&report)
                // schemathesis writes a .schemathesis folder in its working directory.
                .current_dir(&report)
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // Every operation was exercised (27 in API 1.0).
    assert!(
        !stdout.contains("No operations"),
        "schemathesis tested nothing:\n{stdout}"
    );
}
