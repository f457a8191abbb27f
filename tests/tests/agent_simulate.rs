//! `fleetpulse-agent simulate` end to end: a two-tenant virtual fleet through the real spool
//! and shipper into the real collector and ClickHouse, with exact counts.

use std::process::Command;

use fleetpulse_tests::harness::process::spawn_guarded;
use fleetpulse_tests::harness::{Fixture, collector::workspace_binary};

fn figure(summary: &str, before: &str) -> u64 {
    // "done: 600 events and 214 states from ..." -> the number before `before`.
    let words: Vec<&str> = summary.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == before)
        .unwrap_or_else(|| panic!("no {before:?} in {summary}"));
    words[at - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number before {before:?} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_simulated_fleet_arrives_in_clickhouse_with_exact_counts() {
    let fixture = Fixture::start("agent_sim").await.unwrap();
    let contoso = fixture.collector.token_create("contoso").await.unwrap();
    let fabrikam = fixture.collector.token_create("fabrikam").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(workspace_binary("fleetpulse-agent").unwrap());
    command.args([
        "simulate",
        "--collector",
        &fixture.collector.grpc_url(),
        "--enrollment-token",
        &contoso,
        "--enrollment-token",
        &fabrikam,
        "--tenants",
        "2",
        "--devices",
        "400",
        "--agents-per-tenant",
        "2",
        "--rate",
        "300",
        "--duration",
        "3s",
        "--seed",
        "7",
        "--spike",
        "license:x20@1s",
        "--heartbeat-interval-secs",
        "1",
        "--spool-dir",
    ]);
    command.arg(dir.path().join("sim"));
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = spawn_guarded(command, "fleetpulse-agent simulate").unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "simulate failed:\n{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("done:"))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    assert!(stderr.contains("events/s"), "no progress lines:\n{stderr}");

    // The schedule is exact: 3 s at 300 events/s.
    let events = figure(summary, "events");
    let states = figure(summary, "states");
    assert_eq!(events, 900, "{summary}");
    assert!(
        summary.contains(", 0 left in spools, 0 dropped"),
        "{summary}"
    );
    assert_eq!(fixture.count("enrollment_events").await.unwrap(), events);
    assert_eq!(fixture.count("device_states").await.unwrap(), states);
    // Two tenants, four virtual agents, each sending heartbeats.
    let tenants = fixture
        .ch
        .count(
            &format!(
                "SELECT uniqExact(tenant) FROM {}.enrollment_events",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(tenants, 2);
    let agents = fixture
        .ch
        .count(
            &format!(
                "SELECT uniqExact(agent_id) FROM {}.agent_heartbeats",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(agents, 4);
    // Realistic content: Windows is the largest platform, the device-cap failures carry the
    // real HRESULT, and the licence spike shows in the data.
    let windows = fixture
        .count_where("enrollment_events", "platform = ?", &["windows"])
        .await
        .unwrap();
    assert!(
        windows * 2 > events,
        "{windows} of {events} events are Windows"
    );
    let license = fixture
        .count_where(
            "enrollment_events",
            "has(attributes.value, ?) AND outcome = 'failed'",
            &["license"],
        )
        .await
        .unwrap();
    assert!(
        license > events / 10,
        "licence failures during a x20 spike: {license} of {events}"
    );
    let cap_codes = fixture
        .count_where("enrollment_events", "error_code = 2149056531 AND error_symbol IN ('DeviceCapReached', 'MENROLL_E_DEVICECAPREACHED')", &[])
        .await
        .unwrap();
    let cap_all = fixture
        .count_where("enrollment_events", "error_code = 2149056531", &[])
        .await
        .unwrap();
    assert_eq!(cap_codes, cap_all);
}
