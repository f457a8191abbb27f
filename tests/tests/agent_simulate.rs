//! `fleetpulse-agent simulate` end to end: a two-tenant virtual fleet through the real spool
//! and shipper into the real collector and ClickHouse, with exact counts; a backfilled history
//! with a reported spike; the collector's age limit refusing too old a backfill.

use std::process::{Command, Output};

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

/// Runs `fleetpulse-agent simulate` with `args` to completion.
async fn simulate(args: &[&str]) -> (Output, String) {
    let mut command = Command::new(workspace_binary("fleetpulse-agent").unwrap());
    command.arg("simulate").args(args);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = spawn_guarded(command, "fleetpulse-agent simulate").unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

/// The latest Tuesday 15:00 UTC at least a day ago (10:00 in New York, 16:00 in Berlin):
/// business hours for both default tenants, within the collector's retention.
fn recent_tuesday_15h_utc() -> String {
    let mut t = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    while t.weekday() != time::Weekday::Tuesday {
        t -= time::Duration::days(1);
    }
    let t = t.replace_time(time::macros::time!(15:00));
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn rfc3339(text: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_backfill_generates_past_history_with_a_reported_spike_then_stops() {
    let fixture = Fixture::start("agent_backfill").await.unwrap();
    let token = fixture.collector.token_create("contoso").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("spikes.ndjson");
    // A flat hour (no daily rhythm or waves), so the volume does not depend on the time of day.
    let model = dir.path().join("flat.toml");
    std::fs::write(&model, "seasonality = false\nwaves = false\n").unwrap();
    let launched = time::OffsetDateTime::now_utc();
    let (output, stderr) = simulate(&[
        "--collector",
        &fixture.collector.grpc_url(),
        "--enrollment-token",
        &token,
        "--devices",
        "300",
        "--rate",
        "2",
        "--backfill",
        "1h",
        "--duration",
        "0s",
        "--model",
        model.to_str().unwrap(),
        "--seed",
        "5",
        "--spike",
        "license:x20@30m+10m",
        "--spike-report",
        report.to_str().unwrap(),
        "--spool-dir",
        dir.path().join("sim").to_str().unwrap(),
    ])
    .await;
    let finished = time::OffsetDateTime::now_utc();
    assert!(output.status.success(), "simulate failed:\n{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("done:"))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    assert!(
        stderr.contains("[backfill "),
        "no backfill progress:\n{stderr}"
    );
    // An hour at 2 sessions/s (retries and two-event failures on top), all of it history,
    // all of it stored.
    let events = figure(summary, "events");
    assert!((6800..9000).contains(&events), "{summary}");
    assert!(
        summary.contains(&format!("{events} events ({events} backfilled)")),
        "{summary}"
    );
    assert!(
        summary.contains(", 0 left in spools, 0 dropped, 0 refused"),
        "{summary}"
    );
    assert_eq!(fixture.count("enrollment_events").await.unwrap(), events);

    // The report: one spike, 30 minutes into the hour of history, 10 minutes long.
    let text = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["category"], "license");
    assert_eq!(lines[0]["multiplier"], 20.0);
    let start = rfc3339(lines[0]["start"].as_str().unwrap());
    let end = rfc3339(lines[0]["end"].as_str().unwrap());
    assert_eq!(end - start, time::Duration::minutes(10));
    let history_start = start - time::Duration::minutes(30);
    assert!(
        history_start > launched - time::Duration::minutes(61)
            && history_start < launched - time::Duration::minutes(59),
        "history starts at {history_start}, launched at {launched}"
    );
    assert!(stderr.contains(&format!(
        "spike license x20 started at {}",
        lines[0]["start"].as_str().unwrap()
    )));
    assert!(stderr.contains(&format!(
        "spike license x20 ended at {}",
        lines[0]["end"].as_str().unwrap()
    )));

    // Every timestamp lies in the hour before launch.
    let secs = |t: time::OffsetDateTime| t.unix_timestamp().to_string();
    let outside = fixture
        .count_where(
            "enrollment_events",
            "toUnixTimestamp(occurred_at) < toUInt32(?) OR toUnixTimestamp(occurred_at) > toUInt32(?)",
            &[&secs(history_start), &secs(finished)],
        )
        .await
        .unwrap();
    assert_eq!(outside, 0);
    let last_hour_span = fixture
        .ch
        .count(
            &format!(
                "SELECT toUInt64(max(occurred_at) - min(occurred_at)) FROM {}.enrollment_events",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap();
    assert!((3500..=3600).contains(&last_hour_span), "{last_hour_span}");
    // The licence spike sits in its window: far denser there than in the rest of the hour.
    let license_in = |inside: bool| {
        let condition = format!(
            "outcome = 'failed' AND has(attributes.value, 'license') AND {} (toUnixTimestamp(occurred_at) >= toUInt32(?) AND toUnixTimestamp(occurred_at) < toUInt32(?))",
            if inside { "" } else { "NOT" }
        );
        let (a, b) = (secs(start), secs(end));
        let fixture = &fixture;
        async move {
            fixture
                .count_where("enrollment_events", &condition, &[&a, &b])
                .await
                .unwrap()
        }
    };
    let (inside, outside) = (license_in(true).await, license_in(false).await);
    // 10 of 60 minutes: without a spike inside would be ~1/5 of outside.
    assert!(
        inside > outside,
        "licence failures: {inside} in the spike window, {outside} outside"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_backfill_beyond_the_collector_retention_is_refused_up_front() {
    let fixture = Fixture::start_with("agent_backfill_reach", |b| {
        b.arg("--retention-days").arg("2")
    })
    .await
    .unwrap();
    let token = fixture.collector.token_create("contoso").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (output, stderr) = simulate(&[
        "--collector",
        &fixture.collector.grpc_url(),
        "--enrollment-token",
        &token,
        "--backfill",
        "3d",
        "--duration",
        "0s",
        "--spool-dir",
        dir.path().join("sim").to_str().unwrap(),
    ])
    .await;
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("reaches further back than the collector accepts")
            && stderr.contains(
                "older than 2 days (its retention_days, advertised as max_age_seconds 172800)"
            ),
        "{stderr}"
    );
    assert_eq!(fixture.count("enrollment_events").await.unwrap(), 0);
    // Zero live time and no history is refused too, naming the way out.
    let (output, stderr) = simulate(&[
        "--collector",
        &fixture.collector.grpc_url(),
        "--enrollment-token",
        &token,
        "--duration",
        "0",
    ])
    .await;
    assert!(!output.status.success());
    assert!(stderr.contains("`--duration forever`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_simulated_fleet_arrives_in_clickhouse_with_exact_counts() {
    let fixture = Fixture::start("agent_sim").await.unwrap();
    let contoso = fixture.collector.token_create("contoso").await.unwrap();
    let fabrikam = fixture.collector.token_create("fabrikam").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim_dir = dir.path().join("sim");
    let start_at = recent_tuesday_15h_utc();
    let (output, stderr) = simulate(&[
        "--start-at",
        &start_at,
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
        sim_dir.to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "simulate failed:\n{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("done:"))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    assert!(
        stderr.contains("acked items"),
        "no progress lines:\n{stderr}"
    );

    // 3 s at 300 sessions/s (weekly average), on a Tuesday afternoon (business hours in both
    // tenants: ~2-3.6x the average).
    let events = figure(summary, "events");
    let states = figure(summary, "states");
    assert!((1200..5000).contains(&events), "{summary}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_backfilled_week_shows_a_daily_rhythm_a_realistic_failure_rate_and_tenant_contrast() {
    let fixture = Fixture::start("agent_realism").await.unwrap();
    let contoso = fixture.collector.token_create("contoso").await.unwrap();
    let fabrikam = fixture.collector.token_create("fabrikam").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (output, stderr) = simulate(&[
        "--collector",
        &fixture.collector.grpc_url(),
        "--enrollment-token",
        &contoso,
        "--enrollment-token",
        &fabrikam,
        "--devices",
        "2000",
        "--rate",
        "0.05",
        "--backfill",
        "7d",
        "--duration",
        "0s",
        "--seed",
        "42",
        "--spool-dir",
        dir.path().join("sim").to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "simulate failed:\n{stderr}");
    let model_line = stderr
        .lines()
        .find(|l| l.starts_with("model:"))
        .unwrap_or_else(|| panic!("no model line in:\n{stderr}"));
    assert!(model_line.contains("first-time-right"), "{model_line}");
    let events = fixture.count("enrollment_events").await.unwrap();
    // A whole week (so the result does not depend on today's weekday): 0.05 sessions/s is
    // ~30,000 sessions, ~38,000 events with retries and two-event failures. Refresh waves
    // (`rhythm::wave`) add up to ~+53 % of a tenant's week each (6 peak hours at 5.4x), and
    // seven days not starting on a Monday straddle two weeks: up to two waves per tenant, about
    // twice the volume at most (2026-11-25 to 12-02 held 39,952 sessions, 50,204 events).
    assert!((28_000..80_000).contains(&events), "{events}\n{stderr}");
    let failed = fixture
        .count_where("enrollment_events", "outcome = 'failed'", &[])
        .await
        .unwrap();
    // Most attempts succeed (the old fleet failed 43 %); failures that take two
    // events (event 52 then 76) count twice here.
    let share = failed as f64 / events as f64;
    assert!((0.08..0.3).contains(&share), "failed share {share}");
    // Tenant contrast: fabrikam (misconfigured) fails several times as often as contoso.
    let rate = |tenant: &'static str| {
        let fixture = &fixture;
        async move {
            let all = fixture
                .count_where("enrollment_events", "tenant = ?", &[tenant])
                .await
                .unwrap();
            let failed = fixture
                .count_where(
                    "enrollment_events",
                    "tenant = ? AND outcome = 'failed'",
                    &[tenant],
                )
                .await
                .unwrap();
            failed as f64 / all.max(1) as f64
        }
    };
    let (healthy, misconfigured) = (rate("contoso").await, rate("fabrikam").await);
    assert!(
        misconfigured > 3.0 * healthy,
        "contoso {healthy}, fabrikam {misconfigured}"
    );
    // Daily rhythm: contoso works at UTC-5; its busiest local hour carries far more sessions
    // than its quietest, and office hours most of them.
    let by_hour: Vec<(u8, u64)> = fixture
        .ch
        .query_json(
            &format!(
                "SELECT toUInt8(intDiv(toUnixTimestamp(occurred_at) - 18000, 3600) % 24) AS h, toUInt32(count()) AS n FROM {}.enrollment_events WHERE tenant = 'contoso' GROUP BY h ORDER BY h",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row["h"].as_u64().unwrap() as u8, row["n"].as_u64().unwrap()))
        .collect();
    let max = by_hour.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let min = (0..24u8)
        .map(|h| by_hour.iter().find(|(x, _)| *x == h).map_or(0, |(_, n)| *n))
        .min()
        .unwrap_or(0);
    assert!(max > 8 * min.max(1), "{by_hour:?}");
    let office: u64 = by_hour
        .iter()
        .filter(|(h, _)| (8..18).contains(h))
        .map(|(_, n)| n)
        .sum();
    let total: u64 = by_hour.iter().map(|(_, n)| n).sum();
    assert!(office * 10 > total * 6, "{by_hour:?}");
    eprintln!(
        "{model_line}\nevents {events}, failed share {share:.3}, contoso {healthy:.3}, fabrikam {misconfigured:.3}, contoso office-hours share {:.3}, busiest/quietest hour {max}/{min}",
        office as f64 / total as f64
    );
}
