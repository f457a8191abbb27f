//! Event-level exactly-once, end to end (issue 14): the same event id within a batch, across
//! batches of one agent, across agents of one tenant and across a collector restart is stored
//! once by ClickHouse and counted once by the analyzer's summary and device timeline; the same
//! id in another tenant is that tenant's own event.

mod analyzer_support;

use std::time::{Duration, SystemTime};

use analyzer_support::{Analyzer, iso};
use fleetpulse_proto::v1::{EnrollmentEvent, Outcome};
use fleetpulse_tests::harness::synthetic::{Synth, event_item};
use fleetpulse_tests::harness::{Fixture, poll_eq};

/// A copy of `event` as reported by `agent_id` (same id, same time, same content).
fn as_agent(event: &EnrollmentEvent, agent_id: &str) -> EnrollmentEvent {
    EnrollmentEvent {
        agent_id: agent_id.to_owned(),
        ..event.clone()
    }
}

#[tokio::test]
async fn the_same_event_id_is_stored_and_counted_once() -> anyhow::Result<()> {
    let mut fx = Fixture::start("dedup").await?;
    let analyzer = Analyzer::start(fx.ch, &fx.db, &[]).await;
    let key = analyzer.create_key(&["--all-tenants"]);
    let a1 = fx.enroll("contoso", "dev-1").await?;
    let a2 = fx.enroll("contoso", "dev-1-reregistered").await?;
    let b = fx.enroll("fabrikam", "dev-9").await?;
    let mut synth = Synth::new(1414);
    let at = SystemTime::now() - Duration::from_secs(3600);
    let mut failed = synth.event(&a1.agent_id, "dev-1", at);
    failed.outcome = Outcome::Failed as i32;
    let other = synth.event(&a1.agent_id, "dev-1", at + Duration::from_secs(5));
    let mut client = fx.collector.client().await?;

    // Within a batch: two copies, both acknowledged, one stored.
    let r = a1
        .push(
            &mut client,
            1,
            vec![event_item(failed.clone()), event_item(failed.clone())],
        )
        .await?;
    assert_eq!((r.accepted, r.rejected_total), (2, 0));
    // Across batches of one agent: a new batch_seq carrying the same event again.
    a1.push(
        &mut client,
        2,
        vec![event_item(failed.clone()), event_item(other.clone())],
    )
    .await?;
    // Across agents of the tenant (a re-registered device reports the event again).
    a2.push(
        &mut client,
        1,
        vec![event_item(as_agent(&failed, &a2.agent_id))],
    )
    .await?;
    // Across a collector restart.
    fx.collector.restart().await?;
    let mut client = fx.collector.client().await?;
    a1.push(&mut client, 3, vec![event_item(failed.clone())])
        .await?;
    // Another tenant's event with the same id is that tenant's own.
    b.push(
        &mut client,
        1,
        vec![event_item(as_agent(&failed, &b.agent_id))],
    )
    .await?;

    let id = failed.event_id.clone();
    let count = |tenant: &'static str| {
        let (ch, db, id) = (fx.ch, fx.db.clone(), id.clone());
        async move {
            ch.count(
                &format!(
                    "SELECT count() FROM {db}.enrollment_events \
                     WHERE tenant = ? AND event_id = toUUID(?)"
                ),
                &[tenant, &id],
            )
            .await
        }
    };
    assert_eq!(count("contoso").await?, 1);
    assert_eq!(count("fabrikam").await?, 1);
    assert_eq!(fx.count("enrollment_events").await?, 3);

    // The analyzer counts each event once: 2 events and 1 failure for contoso.
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    };
    let from = iso(unix(at) - 3600);
    let to = iso(unix(SystemTime::now()) + 3600);
    let path = format!("/api/v1/summary?tenant=contoso&from={from}&to={to}");
    poll_eq(
        Duration::from_secs(30),
        "contoso summary events and failures",
        (2, 1),
        || {
            let analyzer = &analyzer;
            let (path, key) = (path.clone(), key.clone());
            async move {
                let (status, body) = analyzer.get(&path, Some(&key)).await;
                if status != 200 {
                    return Err(format!("{status}: {body}"));
                }
                Ok::<_, String>((
                    body["summary"]["events"].as_u64().unwrap_or(0),
                    body["summary"]["failures"].as_u64().unwrap_or(0),
                ))
            }
        },
    )
    .await;
    let timeline = analyzer
        .ok("/api/v1/devices/dev-1/events?tenant=contoso", &key)
        .await;
    let ids: Vec<&str> = timeline["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids.iter().filter(|i| **i == id).count(),
        1,
        "timeline: {timeline}"
    );
    assert_eq!(ids.len(), 2, "timeline: {timeline}");

    // Files at rest hold UPNs, host names and error texts: owner-only (issue 14).
    use std::os::unix::fs::PermissionsExt;
    let keys_db = analyzer.db_url.trim_start_matches("sqlite://").to_owned();
    for path in [
        fx.collector.dir().join("control.db"),
        std::path::PathBuf::from(keys_db),
    ] {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
    }
    Ok(())
}
