//! The web dashboard end to end in a real browser: ClickHouse and the collector from the
//! harness, a two-tenant fleet from `fleetpulse-agent simulate`, the analyzer binary serving
//! the embedded dashboard, and Debian's headless Chromium driven by
//! `analyzer/web/tests/e2e.mjs` (playwright-core). The fleet has two days of history
//! (`simulate --backfill`). The script checks that every page renders
//! without a console error, that the numbers on screen equal the API's answers for the same
//! filters, filters, drill-down, device timeline, tenant switch, sign-in/out and the message
//! for a wrong key; it writes one screenshot per page to `target/dashboard-screenshots/`
//! (or `$FLEETPULSE_SCREENSHOTS`).
//!
//! Needs Node.js, `npm ci` in `analyzer/web` and the dashboard built into the analyzer
//! (`scripts/test.sh` does both), and `/usr/bin/chromium` (`deploy/install-deps.sh`).

mod analyzer_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use std::time::Duration;

use analyzer_support::{Analyzer, iso, request};
use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::process::spawn_guarded;
use fleetpulse_tests::harness::{Fixture, now_secs, poll_until};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Runs `fleetpulse-agent simulate` to completion and returns its stderr.
async fn simulate(fixture: &Fixture, tokens: &[String], spool: &std::path::Path) -> String {
    let mut command = Command::new(workspace_binary("fleetpulse-agent").unwrap());
    command.args([
        "simulate",
        "--collector",
        &fixture.collector.grpc_url(),
        "--devices",
        "600",
        // Two days of history (about 5,200 events), generated as fast as the collector takes
        // them, with a licence failure spike of three hours yesterday; no live phase.
        "--backfill",
        "2d",
        "--rate",
        "0.03",
        "--duration",
        "0s",
        "--seed",
        "10",
        "--spike",
        "license:x8@1d+3h",
        "--heartbeat-interval-secs",
        "1",
    ]);
    for t in tokens {
        command.args(["--enrollment-token", t]);
    }
    command
        .arg("--spool-dir")
        .arg(spool)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_guarded(command, "fleetpulse-agent simulate").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "simulate failed:\n{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_match_the_api_in_chromium() {
    let root = workspace_root();
    let web = root.join("analyzer/web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first (scripts/test.sh does)",
        web.display()
    );
    let chromium = std::env::var("FLEETPULSE_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "{chromium} missing: run deploy/install-deps.sh (Debian package chromium)"
    );

    let fixture = Fixture::start("dashboard").await.unwrap();
    let contoso = fixture.collector.token_create("contoso").await.unwrap();
    let fabrikam = fixture.collector.token_create("fabrikam").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = simulate(&fixture, &[contoso, fabrikam], &dir.path().join("sim")).await;
    let summary = log.lines().find(|l| l.starts_with("done:")).unwrap_or("");
    assert!(summary.contains(", 0 left in spools"), "{log}");

    let analyzer = Analyzer::start(
        fixture.ch,
        &fixture.db,
        &["--alerts-evaluation-interval", "5s"],
    )
    .await;
    let key_all = analyzer.create_key(&["--all-tenants", "--description", "browser test"]);
    // An alert for the alerts page: a threshold rule the two days of history exceed whatever
    // the hour (the simulated fleet follows the working week).
    let (status, body) = request(
        analyzer.addr,
        "POST",
        "/api/v1/alert-rules",
        Some(&key_all),
        Some(r#"{"name":"e2e-licence","expr":"count(category=license) >= 1 over 2d"}"#),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    poll_until(Duration::from_secs(60), "an alert from the rule", || {
        let addr = analyzer.addr;
        let key = key_all.clone();
        async move {
            let (_, body) =
                request(addr, "GET", "/api/v1/alerts?status=all", Some(&key), None).await;
            match body["alerts"].as_array() {
                Some(a) if !a.is_empty() => Ok(()),
                _ => Err(body.to_string()),
            }
        }
    })
    .await;
    let key_contoso = analyzer.create_key(&["--tenant", "contoso"]);

    // The binary carries the built dashboard (not the "how to build it" page).
    let index = get_text(analyzer.addr, "/").await;
    assert!(
        index.contains("/assets/index-"),
        "the analyzer was built without the dashboard: run `npm ci && npm run build` in analyzer/web, then cargo build\n{index}"
    );

    let now = now_secs();
    let from = iso((now - 2 * 86_400) / 3_600 * 3_600);
    let to = iso((now / 3_600 + 1) * 3_600);
    let shots = std::env::var_os("FLEETPULSE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/dashboard-screenshots"));
    let mut node = Command::new("node");
    node.arg(web.join("tests/e2e.mjs"))
        .current_dir(&web)
        .env("FP_BASE_URL", format!("http://{}", analyzer.addr))
        .env("FP_KEY_ALL", &key_all)
        .env("FP_KEY_TENANT", &key_contoso)
        .env("FP_TENANT", "contoso")
        .env("FP_FROM", &from)
        .env("FP_TO", &to)
        .env("FP_SCREENSHOTS", &shots)
        .env("FP_CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_guarded(node, "node e2e.mjs").unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks failed (screenshots in {}):\n{stderr}\n{stdout}",
        shots.display()
    );
    for page in [
        "signin-error",
        "overview",
        "category",
        "code",
        "device",
        "insights",
        "alerts",
        "overview-dark",
    ] {
        let png = shots.join(format!("{page}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 10_000,
            "{} missing or empty ({len} bytes)",
            png.display()
        );
    }
}

/// The body of a GET as text (the analyzer_support client parses JSON only).
async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}
