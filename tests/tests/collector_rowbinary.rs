//! The RowBinary an event view writes (`collector/src/store/event_rowbinary.rs`) stores exactly
//! what the `clickhouse` crate's serialisation of the same event's `EventRow` stores: the same
//! generated events are inserted both ways into two tables of one schema, and every column of
//! every row is compared.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use fleetpulse_collector::config::Config;
use fleetpulse_collector::event_view::decode_event;
use fleetpulse_collector::store::{
    Store,
    event_rowbinary::{put_event_row, row_size_hint},
    migrations,
    rows::{EventRow, RowContext, event_row},
};
use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{EnrollmentEvent, ReportedError, Source};
use fleetpulse_tests::harness::{shared, unique_database};
use prost::Message;
use uuid::Uuid;

/// Events covering every column: empty and long strings, multi-byte text, absent and present
/// sub-messages, unknown enum numbers, attributes.
fn events() -> Vec<(EnrollmentEvent, Uuid)> {
    (0..300u32)
        .map(|i| {
            let text = |what: &str| match i % 4 {
                0 => String::new(),
                1 => format!("{what}-{i}"),
                2 => format!("{what} é€😀 {}", "x".repeat((i as usize * 7) % 300)),
                _ => format!("{what}\t\"quoted\"\n{i}"),
            };
            let id = Uuid::from_u64_pair(0x1234_5678_9abc_def0 ^ u64::from(i), u64::from(i) + 1);
            let event = EnrollmentEvent {
                event_id: id.to_string(),
                agent_id: "agent-1".into(),
                device_id: format!("dev-{}", i % 17),
                occurred_at: Some(Timestamp {
                    seconds: 1_767_225_600 + i64::from(i),
                    nanos: (i * 1_000_003) as i32 % 1_000_000_000,
                }),
                platform: (i % 9) as i32,
                os_edition: text("edition"),
                os_version: text("10.0"),
                enrollment_method: if i % 11 == 0 { 99 } else { (i % 6) as i32 },
                stage: (i % 14) as i32,
                outcome: (i % 5) as i32,
                error: (i % 3 != 0).then(|| ReportedError {
                    code: 0x8018_0000 + i,
                    has_code: i % 2 == 0,
                    symbol: text("Symbol"),
                    message: text("message"),
                }),
                source: (i % 4 != 1).then(|| Source {
                    kind: (i % 5) as i32,
                    channel: text("channel"),
                    event_id: i * 3,
                    record_id: u64::from(i) << 33,
                }),
                user_principal_name: text("user@contoso.com"),
                attributes: (0..i % 4)
                    .map(|k| (format!("key{k}"), text("value")))
                    .collect::<HashMap<_, _>>(),
            };
            (event, id)
        })
        .collect()
}

#[tokio::test]
async fn view_rows_store_what_event_rows_store() -> anyhow::Result<()> {
    let ch = shared();
    let db = unique_database("rowbinary");
    ch.execute(&format!("CREATE DATABASE {db}")).await?;
    let config = Config {
        clickhouse_url: ch.url().to_owned(),
        clickhouse_database: db.clone(),
        ..Config::default()
    };
    let store = Store::new(&config)?;
    migrations::run(&store).await?;
    ch.execute(&format!(
        "CREATE TABLE {db}.events_from_views AS {db}.enrollment_events"
    ))
    .await?;

    let ctx = RowContext {
        tenant: Arc::from("contoso"),
        agent_id: Arc::from("agent-1"),
        batch_seq: 42,
        received_at: 1_767_300_000,
        registered_device_id: String::new(),
    };
    let events = events();

    // The crate's serialisation of EventRow, as the writer inserts today.
    let mut insert = store
        .client()
        .insert_unescaped::<EventRow>(&format!("{db}.enrollment_events"))
        .await?;
    for (e, id) in &events {
        let ts = e.occurred_at.unwrap_or_default();
        let row = event_row(
            &ctx,
            e.clone(),
            *id,
            ts.seconds as u32,
            (ts.nanos / 1_000_000) as u16,
        );
        insert.write(&row).await?;
    }
    insert.end().await?;

    // The same events through views, written as RowBinary.
    let encoded: Vec<Vec<u8>> = events.iter().map(|(e, _)| e.encode_to_vec()).collect();
    let mut body = BytesMut::new();
    for ((e, id), bytes) in events.iter().zip(&encoded) {
        let view = decode_event(bytes).expect("a prost-encoded event decodes");
        let hint = row_size_hint(&ctx, &view);
        let before = body.len();
        let ts = e.occurred_at.unwrap_or_default();
        put_event_row(
            &mut body,
            &ctx,
            &view,
            *id,
            ts.seconds as u32,
            (ts.nanos / 1_000_000) as u16,
        );
        assert!(
            body.len() - before <= hint,
            "row {id}: {} bytes, hint {hint}",
            body.len() - before
        );
    }
    let mut raw = store.client().insert_formatted_with(format!(
        "INSERT INTO {db}.events_from_views FORMAT RowBinary"
    ));
    raw.send(body.freeze()).await?;
    raw.end().await?;

    // Attribute order inside a row is the map's (random for EventRow): compare them sorted.
    let dump = |table: &str| {
        let sql = format!(
            "SELECT tenant, event_id, agent_id, batch_seq, device_id, occurred_at, occurred_ms, \
             received_at, platform, os_edition, os_version, enrollment_method, stage, outcome, \
             error_code, error_has_code, error_symbol, error_message, source_kind, \
             source_channel, source_event_id, source_record_id, user_principal_name, \
             arraySort(arrayMap((k, v) -> concat(k, '=', v), `attributes.key`, `attributes.value`)) \
             FROM {db}.{table} ORDER BY event_id"
        );
        let client = ch.admin_client();
        async move {
            let bytes = client
                .query(&sql)
                .fetch_bytes("TabSeparated")?
                .collect()
                .await?;
            anyhow::Ok(String::from_utf8(bytes.to_vec())?)
        }
    };
    let from_rows = dump("enrollment_events").await?;
    let from_views = dump("events_from_views").await?;
    assert_eq!(from_rows.lines().count(), events.len());
    assert_eq!(from_views, from_rows);
    ch.execute(&format!("DROP DATABASE {db}")).await?;
    Ok(())
}
