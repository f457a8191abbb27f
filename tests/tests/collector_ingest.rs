//! Collector ingest, end to end: what a Push stores in ClickHouse, column by column, and how
//! invalid, oversized, resent and conflicting batches are answered.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    EnrollmentEvent, EnrollmentMethod, EnrollmentStage, GetLimitsRequest, ItemRejection, Limits,
    Outcome, Platform, PushRequest, PushResponse, ReportedError, Source, SourceKind,
};
use fleetpulse_tests::harness::rows::{DeviceStateRow, EnrollmentEventRow, HeartbeatRow};
use fleetpulse_tests::harness::synthetic::{
    Synth, event_item, heartbeat_item, state_item, timestamp,
};
use fleetpulse_tests::harness::{Fixture, batch, bearer, now_secs, recent};
use prost::Message;
use tonic::Code;

/// 2093-01-01T00:00:00Z, the example of a timestamp too far in the future.
const YEAR_2093: i64 = 3_881_606_400;

/// A hand-written event with every field set, including an enum number the protocol does not
/// know yet (must be stored as `unknown_<n>`, never refused).
fn full_event(agent_id: &str) -> EnrollmentEvent {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    EnrollmentEvent {
        event_id: "0b1f6a52-5c8d-4f5e-9c51-8a7d2f0c3e41".into(),
        agent_id: agent_id.into(),
        device_id: "5d3c1f57-ad1e-4e38-9bba-1c9f6a7b9d2e".into(),
        occurred_at: Some(Timestamp {
            seconds: i64::try_from(now).expect("small") - 120,
            nanos: 123_456_789,
        }),
        platform: Platform::Windows as i32,
        os_edition: "Windows 11 Enterprise".into(),
        os_version: "10.0.22631.4602".into(),
        enrollment_method: EnrollmentMethod::AutopilotSelfDeploying as i32,
        stage: EnrollmentStage::CertificateRequest as i32,
        outcome: Outcome::Failed as i32,
        error: Some(ReportedError {
            code: 0x8018_0014,
            has_code: true,
            symbol: "DeviceNotSupported".into(),
            message: "MDM Enroll: Server Returned Fault/Code/Subcode/Value=(DeviceNotSupported)"
                .into(),
        }),
        source: Some(Source {
            kind: SourceKind::EventLog as i32,
            channel: "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin"
                .into(),
            event_id: 52,
            record_id: 4711,
        }),
        user_principal_name: String::new(),
        attributes: HashMap::from([
            ("esp_phase".to_owned(), "DeviceSetup".to_owned()),
            (
                "correlation_id".to_owned(),
                "c0ffee00-0000-4000-8000-000000000001".to_owned(),
            ),
        ]),
    }
}

#[tokio::test]
async fn accepted_batch_is_stored_with_exact_columns() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_exact").await?;
    let agent = fx
        .enroll("contoso", "5d3c1f57-ad1e-4e38-9bba-1c9f6a7b9d2e")
        .await?;
    assert_eq!(agent.tenant, "contoso");
    assert_eq!(
        agent.limits,
        Some(Limits {
            max_batch_items: 5000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_future_skew_seconds: 86_400,
            max_age_seconds: 90 * 86_400,
        })
    );

    let mut synth = Synth::new(11);
    let device = "5d3c1f57-ad1e-4e38-9bba-1c9f6a7b9d2e";
    let full = full_event(&agent.agent_id);
    let mut unknown_enum = synth.event(&agent.agent_id, device, recent());
    unknown_enum.platform = 42;
    unknown_enum.stage = 77;
    let ordinary = synth.event(&agent.agent_id, device, recent());
    let state = synth.device_state(&agent.agent_id, device, recent());
    let heartbeat = synth.heartbeat(&agent.agent_id, device, recent());
    let items = vec![
        event_item(full.clone()),
        event_item(unknown_enum.clone()),
        event_item(ordinary.clone()),
        state_item(state.clone()),
        heartbeat_item(heartbeat.clone()),
    ];

    let before = now_secs();
    let mut client = fx.collector.client().await?;
    let response = agent.push(&mut client, 1, items).await?;
    let after = now_secs();
    assert_eq!(
        response,
        PushResponse {
            batch_seq: 1,
            accepted: 5,
            rejected: vec![],
            duplicate: false,
            rejected_total: 0,
            rejected_items: vec![],
        }
    );

    // Acknowledged means stored: no polling needed.
    let mut stored: Vec<EnrollmentEventRow> = fx
        .ch
        .query_rows(
            &format!(
                "SELECT ?fields FROM {}.enrollment_events ORDER BY event_id",
                fx.db
            ),
            &[],
        )
        .await?;
    assert_eq!(stored.len(), 3);
    for row in &stored {
        assert!(
            (before..=after).contains(&row.received_at),
            "received_at {} outside {before}..={after}",
            row.received_at
        );
    }
    stored = stored.into_iter().map(|r| r.normalized(0)).collect();
    let mut expected: Vec<EnrollmentEventRow> = [&full, &unknown_enum, &ordinary]
        .into_iter()
        .map(|e| EnrollmentEventRow::expected("contoso", 1, 0, e))
        .collect();
    expected.sort_by_key(|r| r.event_id);
    stored.sort_by_key(|r| r.event_id);
    assert_eq!(stored, expected);

    // Spot-check the contract's encodings on the hand-written event, independent of rows.rs.
    let full_row = stored
        .iter()
        .find(|r| r.event_id.to_string() == full.event_id)
        .expect("full event stored");
    assert_eq!(full_row.occurred_ms, 123);
    assert_eq!(
        (
            full_row.platform.as_str(),
            full_row.enrollment_method.as_str()
        ),
        ("windows", "autopilot_self_deploying")
    );
    assert_eq!(
        (
            full_row.stage.as_str(),
            full_row.outcome.as_str(),
            full_row.source_kind.as_str()
        ),
        ("certificate_request", "failed", "event_log")
    );
    assert_eq!(
        (full_row.error_code, full_row.error_has_code),
        (0x8018_0014, 1)
    );
    assert_eq!(full_row.attributes_key, vec!["correlation_id", "esp_phase"]);
    let unknown_row = stored
        .iter()
        .find(|r| r.event_id.to_string() == unknown_enum.event_id)
        .expect("unknown-enum event stored");
    assert_eq!(
        (unknown_row.platform.as_str(), unknown_row.stage.as_str()),
        ("unknown_42", "unknown_77")
    );

    let states: Vec<DeviceStateRow> = fx
        .ch
        .query_rows(&format!("SELECT ?fields FROM {}.device_states", fx.db), &[])
        .await?;
    assert_eq!(states.len(), 1);
    assert!((before..=after).contains(&states[0].received_at));
    assert_eq!(
        states[0].clone().normalized(0),
        DeviceStateRow::expected("contoso", 1, 0, &state)
    );

    let heartbeats: Vec<HeartbeatRow> = fx
        .ch
        .query_rows(
            &format!("SELECT ?fields FROM {}.agent_heartbeats", fx.db),
            &[],
        )
        .await?;
    assert_eq!(heartbeats.len(), 1);
    assert!((before..=after).contains(&heartbeats[0].received_at));
    let mut hb_row = heartbeats[0].clone();
    hb_row.received_at = 0;
    assert_eq!(hb_row, HeartbeatRow::expected("contoso", 1, 0, &heartbeat));
    Ok(())
}

/// Items 1 and 2 are invalid: the good ones are stored, the bad ones listed with field+reason.
fn mixed_batch(agent_id: &str, seq: u64, all_or_nothing: bool) -> (PushRequest, Vec<String>) {
    let mut synth = Synth::new(seq);
    let device = "7a0d5a43-2f2b-4a0e-8f0a-2b1b9c3d4e5f";
    let good_a = synth.event(agent_id, device, recent());
    let mut future = synth.event(agent_id, device, recent());
    future.occurred_at = Some(Timestamp {
        seconds: YEAR_2093,
        nanos: 0,
    });
    let mut no_device = synth.event(agent_id, device, recent());
    no_device.device_id = String::new();
    let good_b = synth.event(agent_id, device, recent());
    let good_ids = vec![good_a.event_id.clone(), good_b.event_id.clone()];
    let request = PushRequest {
        batch_seq: seq,
        items: [good_a, future, no_device, good_b]
            .into_iter()
            .map(event_item)
            .collect(),
        all_or_nothing,
    };
    (request, good_ids)
}

fn mixed_batch_rejections() -> Vec<ItemRejection> {
    vec![
        ItemRejection {
            index: 1,
            field: "items[1].event.occurred_at".into(),
            reason: "2093-01-01T00:00:00Z is more than 24h in the future".into(),
        },
        ItemRejection {
            index: 2,
            field: "items[2].event.device_id".into(),
            reason: "required (1..=128 bytes)".into(),
        },
    ]
}

#[tokio::test]
async fn invalid_items_are_rejected_one_by_one_and_the_rest_stored() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_partial").await?;
    let agent = fx.enroll("contoso", "dev-partial").await?;
    let mut client = fx.collector.client().await?;
    let (request, good_ids) = mixed_batch(&agent.agent_id, 1, false);
    let response = agent.push_request(&mut client, request).await?;
    assert_eq!(
        response,
        PushResponse {
            batch_seq: 1,
            accepted: 2,
            rejected: mixed_batch_rejections(),
            duplicate: false,
            rejected_total: 2,
            rejected_items: vec![1, 2],
        }
    );
    let ids = fx
        .ch
        .query_json(
            &format!(
                "SELECT toString(event_id) AS id FROM {}.enrollment_events ORDER BY id",
                fx.db
            ),
            &[],
        )
        .await?;
    let mut expected_ids = good_ids;
    expected_ids.sort();
    assert_eq!(
        ids,
        expected_ids
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn all_or_nothing_batch_with_an_invalid_item_stores_nothing() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_aon").await?;
    let agent = fx.enroll("contoso", "dev-aon").await?;
    let mut client = fx.collector.client().await?;
    let (request, _) = mixed_batch(&agent.agent_id, 1, true);
    let status = agent
        .push_request(&mut client, request)
        .await
        .expect_err("an invalid item fails an all_or_nothing batch");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "items[1].event.occurred_at: 2093-01-01T00:00:00Z is more than 24h in the future; \
         items[2].event.device_id: required (1..=128 bytes)"
    );

    // The writer is FIFO: once a later batch is acknowledged, anything of batch 1 would be in.
    let later =
        Synth::new(5).event_items(&agent.agent_id, &[], 3, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 2, later).await?.accepted, 3);
    assert_eq!(
        fx.count_where("enrollment_events", "batch_seq = 1", &[])
            .await?,
        0
    );
    assert_eq!(fx.count("enrollment_events").await?, 3);
    Ok(())
}

#[tokio::test]
async fn oversized_batches_are_resource_exhausted_and_store_nothing() -> anyhow::Result<()> {
    let fx = Fixture::start_with("ingest_oversized", |b| {
        b.arg("--max-batch-items")
            .arg("10")
            .arg("--max-batch-bytes")
            .arg("20000")
    })
    .await?;
    let agent = fx.enroll("contoso", "dev-big").await?;
    let mut client = fx.collector.client().await?;
    let limits = client
        .get_limits(bearer(&agent.credential, GetLimitsRequest {}))
        .await?
        .into_inner();
    assert_eq!(
        (limits.max_batch_items, limits.max_batch_bytes),
        (10, 20_000)
    );

    let mut synth = Synth::new(3);
    let eleven = synth.event_items(&agent.agent_id, &[], 11, recent(), Duration::from_secs(1));
    let status = agent
        .push(&mut client, 1, eleven)
        .await
        .expect_err("11 items exceed max_batch_items = 10");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "items: 11 items exceed max_batch_items = 10; split the batch"
    );

    // Ten items under the item limit but over the byte limit (4 KiB messages each).
    let mut heavy = synth.event_items(&agent.agent_id, &[], 10, recent(), Duration::from_secs(1));
    for item in &mut heavy {
        if let Some(fleetpulse_proto::v1::telemetry_item::Kind::Event(e)) = &mut item.kind {
            e.error = Some(ReportedError {
                code: 0x8018_0001,
                has_code: true,
                symbol: "MENROLL_E_DEVICE_MESSAGE_FORMAT_ERROR".into(),
                message: "x".repeat(4000),
            });
        }
    }
    let request = batch(2, heavy);
    let encoded = request.encoded_len();
    assert!(encoded > 20_000, "{encoded}");
    let status = agent
        .push_request(&mut client, request)
        .await
        .expect_err("over max_batch_bytes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        format!("the batch is {encoded} bytes, over max_batch_bytes = 20000; split the batch")
    );

    let ok = synth.event_items(&agent.agent_id, &[], 10, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 3, ok).await?.accepted, 10);
    assert_eq!(fx.count("enrollment_events").await?, 10);
    assert_eq!(
        fx.count_where("enrollment_events", "batch_seq != 3", &[])
            .await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn resend_after_lost_ack_is_stored_once_and_answered_duplicate() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_lost_ack").await?;
    let agent = fx.enroll("contoso", "dev-lost-ack").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(21);
    let items = synth.event_items(&agent.agent_id, &[], 25, recent(), Duration::from_secs(1));

    let first = agent.push(&mut client, 1, items.clone()).await?;
    assert_eq!((first.accepted, first.duplicate), (25, false));
    // The agent never saw `first` (lost ack) and resends the same batch.
    let resend = agent.push(&mut client, 1, items.clone()).await?;
    assert_eq!(
        resend,
        PushResponse {
            batch_seq: 1,
            accepted: 25,
            rejected: vec![],
            duplicate: true,
            rejected_total: 0,
            rejected_items: vec![],
        }
    );
    // And again over a fresh connection, as after an agent restart.
    let mut other = fx.collector.client().await?;
    assert!(agent.push(&mut other, 1, items).await?.duplicate);
    assert_eq!(fx.count("enrollment_events").await?, 25);

    // Two copies racing: exactly one stores, the other is a duplicate (or told to retry).
    let racing = synth.event_items(&agent.agent_id, &[], 40, recent(), Duration::from_secs(1));
    let (a, b) = tokio::join!(
        push_until_answered(&agent, client.clone(), 2, racing.clone()),
        push_until_answered(&agent, other.clone(), 2, racing),
    );
    let (a, b) = (a?, b?);
    assert_eq!((a.accepted, b.accepted), (40, 40));
    assert!(
        a.duplicate != b.duplicate,
        "exactly one original: {a:?} / {b:?}"
    );
    assert_eq!(fx.count("enrollment_events").await?, 65);
    assert_eq!(
        fx.count_where("enrollment_events", "batch_seq = 2", &[])
            .await?,
        40
    );

    // A partially rejected batch resent: same answer, rejects included, nothing stored twice.
    let (request, _) = mixed_batch(&agent.agent_id, 3, false);
    let original = agent.push_request(&mut client, request.clone()).await?;
    let again = agent.push_request(&mut client, request).await?;
    assert_eq!(again.rejected, mixed_batch_rejections());
    assert_eq!((again.accepted, again.duplicate), (original.accepted, true));
    assert_eq!(
        fx.count_where("enrollment_events", "batch_seq = 3", &[])
            .await?,
        2
    );
    Ok(())
}

/// Pushes until the collector answers other than UNAVAILABLE (a concurrent copy in flight).
async fn push_until_answered(
    agent: &fleetpulse_tests::harness::Registered,
    mut client: fleetpulse_proto::v1::ingest_service_client::IngestServiceClient<
        tonic::transport::Channel,
    >,
    seq: u64,
    items: Vec<fleetpulse_proto::v1::TelemetryItem>,
) -> Result<PushResponse, tonic::Status> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match agent.push(&mut client, seq, items.clone()).await {
            Err(s) if s.code() == Code::Unavailable && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn same_sequence_with_different_contents_is_failed_precondition() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_conflict").await?;
    let agent = fx.enroll("contoso", "dev-conflict").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(31);
    let original = synth.event_items(&agent.agent_id, &[], 5, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 7, original).await?.accepted, 5);

    let different = synth.event_items(&agent.agent_id, &[], 5, recent(), Duration::from_secs(1));
    let status = agent
        .push(&mut client, 7, different)
        .await
        .expect_err("batch 7 already holds other contents");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        "batch_seq 7 was already used for different contents; \
         give new contents a new sequence number"
    );
    assert_eq!(fx.count("enrollment_events").await?, 5);
    Ok(())
}

/// A batch claimed by a collector from before digest v2 (its ledger row holds the SHA-256
/// digest) is still recognised when its agent resends it after the upgrade, and a reused
/// sequence number is still refused.
#[tokio::test]
async fn a_batch_claimed_before_digest_v2_is_recognised_when_resent() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_digest_v1").await?;
    let agent = fx.enroll("contoso", "dev-digest-v1").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(37);
    let items = synth.event_items(&agent.agent_id, &[], 5, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 3, items.clone()).await?.accepted, 5);

    // What the older collector stored for this batch: the v1 digest of the same items.
    let db = fleetpulse_collector::control::ControlDb::connect(fx.collector.database_url()).await?;
    let rewritten =
        sqlx::query("UPDATE ingest_batches SET digest = $1 WHERE agent_id = $2 AND batch_seq = 3")
            .bind(fleetpulse_collector::digest::batch_digest_v1(
                &fleetpulse_collector::push::items_of(&items),
            ))
            .bind(agent.agent_id.as_str())
            .execute(db.pool())
            .await?
            .rows_affected();
    assert_eq!(rewritten, 1);

    let again = agent.push(&mut client, 3, items).await?;
    assert_eq!((again.accepted, again.duplicate), (5, true));
    let different = synth.event_items(&agent.agent_id, &[], 5, recent(), Duration::from_secs(1));
    let status = agent
        .push(&mut client, 3, different)
        .await
        .expect_err("batch 3 already holds other contents");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(fx.count("enrollment_events").await?, 5);
    Ok(())
}

/// Past the ledger window a batch's ledger row is compacted away (issue 16: the ledger must
/// not hold every push for the whole retention). A late resend is then verified against
/// ClickHouse: a batch stored whole is answered as a duplicate and stored nothing again, a
/// number under the agent's floor that was never seen is stored, and a reused number
/// (refused while the row existed) stores only the rows ClickHouse lacks.
#[tokio::test]
async fn a_resend_after_the_ledger_window_is_verified_against_clickhouse() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_compacted").await?;
    let device = "3f4e5d6c-7b8a-4c9d-8e1f-2a3b4c5d6e7f";
    let agent = fx.enroll("contoso", device).await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(41);
    let mut mixed = synth.event_items(&agent.agent_id, &[], 3, recent(), Duration::from_secs(1));
    mixed.push(state_item(synth.device_state(
        &agent.agent_id,
        device,
        recent(),
    )));
    mixed.push(heartbeat_item(synth.heartbeat(
        &agent.agent_id,
        device,
        recent(),
    )));
    let five = synth.event_items(&agent.agent_id, &[], 5, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 4, mixed.clone()).await?.accepted, 5);
    assert_eq!(agent.push(&mut client, 6, five.clone()).await?.accepted, 5);
    let counts = || async {
        anyhow::Ok([
            fx.count("enrollment_events").await?,
            fx.count("device_states").await?,
            fx.count("agent_heartbeats").await?,
        ])
    };
    assert_eq!(counts().await?, [8, 1, 1]);

    // Two compaction runs as a collector would make them two days on: the first raises the
    // agent's floor to 6, the second (an hour later) deletes both rows under it.
    let db = fleetpulse_collector::control::ControlDb::connect(fx.collector.database_url()).await?;
    let later = i64::from(now_secs()) * 1000 + 48 * 3_600_000;
    let keep = 24 * 3_600_000;
    let first = db.compact_ledger(later, keep).await?;
    assert_eq!((first.raised, first.deleted), (1, 0));
    let second = db.compact_ledger(later + 3_600_000, keep).await?;
    assert_eq!((second.promoted, second.deleted), (1, 2));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ingest_batches")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(rows, 0);

    // Stored whole: a duplicate, nothing written again (the heartbeat is found too).
    let again = agent.push(&mut client, 4, mixed).await?;
    assert_eq!((again.accepted, again.duplicate), (5, true));
    assert_eq!(counts().await?, [8, 1, 1]);

    // Never seen, under the floor: verified, then stored.
    let unseen = synth.event_items(&agent.agent_id, &[], 2, recent(), Duration::from_secs(1));
    let stored = agent.push(&mut client, 5, unseen).await?;
    assert_eq!((stored.accepted, stored.duplicate), (2, false));
    assert_eq!(counts().await?, [10, 1, 1]);

    // Number 6 reused with one new event: only the new one is written.
    let mut reused = five;
    reused[4] = synth
        .event_items(&agent.agent_id, &[], 1, recent(), Duration::from_secs(1))
        .remove(0);
    let answer = agent.push(&mut client, 6, reused).await?;
    assert_eq!((answer.accepted, answer.duplicate), (5, false));
    assert_eq!(counts().await?, [11, 1, 1]);

    let metrics = fx.collector.http_get("/metrics").await?;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "fleetpulse_collector_batches_recovered_compacted_total 3"),
        "{}",
        metrics.body
    );
    Ok(())
}

#[tokio::test]
async fn malformed_batches_are_invalid_argument() -> anyhow::Result<()> {
    let fx = Fixture::start("ingest_malformed").await?;
    let agent = fx.enroll("contoso", "dev-malformed").await?;
    let mut client = fx.collector.client().await?;
    let one = Synth::new(1).event_items(&agent.agent_id, &[], 1, recent(), Duration::from_secs(1));

    let status = agent.push(&mut client, 0, one).await.expect_err("seq 0");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "batch_seq: must be at least 1");

    let status = agent
        .push(&mut client, 1, vec![])
        .await
        .expect_err("no items");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "items: the batch is empty; send 1..=5000 items"
    );
    assert_eq!(fx.count("enrollment_events").await?, 0);
    Ok(())
}

#[test]
fn mixed_batch_is_what_the_tests_claim() {
    let (req, good) = mixed_batch("a", 1, false);
    assert_eq!(req.items.len(), 4);
    assert_eq!(good.len(), 2);
    assert_eq!(
        timestamp(UNIX_EPOCH + Duration::from_secs(YEAR_2093 as u64)).seconds,
        YEAR_2093
    );
}
