//! Measures one 5000-event Push's CPU on the event path: prost decode + `event_row` + drop
//! (today, without the crate's serialisation, which comes on top) against view decode +
//! RowBinary (the borrowed path). Alternates A and B, medians of each.
//! `cargo run --release -p fleetpulse-collector --example view_bench`
use std::{sync::Arc, time::Instant};

use bytes::BytesMut;
use fleetpulse_collector::{
    event_view::decode_event,
    store::{
        event_rowbinary::put_event_row,
        rows::{RowContext, event_row},
    },
};
use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    EnrollmentEvent, PushRequest, ReportedError, Source, TelemetryItem, telemetry_item::Kind,
};
use prost::Message;
use uuid::Uuid;

fn main() {
    let items: Vec<TelemetryItem> = (0..5000u64)
        .map(|i| TelemetryItem {
            kind: Some(Kind::Event(EnrollmentEvent {
                event_id: Uuid::from_u64_pair(i * 7919, i).to_string(),
                agent_id: "6f1c2a8e-1b2c-4d3e-8f4a-5b6c7d8e9f00".into(),
                device_id: format!("5d3c1f57-ad1e-4e38-9bba-{:012}", i % 4000),
                occurred_at: Some(Timestamp { seconds: 1_767_225_600 + i as i64, nanos: 5_000_000 }),
                platform: 1,
                os_edition: "Windows 11 Enterprise".into(),
                os_version: "10.0.22631.4602".into(),
                enrollment_method: 2,
                stage: 5,
                outcome: 2,
                error: Some(ReportedError {
                    code: 0x8018_0014,
                    has_code: true,
                    symbol: "DeviceCapReached".into(),
                    message: "The device could not be enrolled because the user has reached the device limit.".into(),
                }),
                source: Some(Source { kind: 1, channel: "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin".into(), event_id: 76, record_id: i }),
                user_principal_name: "joe@contoso.com".into(),
                attributes: [("autopilot_profile".to_owned(), "Corp-Default".to_owned())].into(),
            })),
        })
        .collect();
    let body = PushRequest {
        batch_seq: 1,
        items,
        ..Default::default()
    }
    .encode_to_vec();
    println!("body {} bytes", body.len());
    let ctx = RowContext {
        tenant: Arc::from("contoso"),
        agent_id: Arc::from("6f1c2a8e-1b2c-4d3e-8f4a-5b6c7d8e9f00"),
        batch_seq: 1,
        received_at: 1_767_300_000,
        registered_device_id: String::new(),
    };
    let old = || {
        let req = PushRequest::decode(body.as_slice()).unwrap();
        let mut rows = Vec::with_capacity(req.items.len());
        for item in req.items {
            if let Some(Kind::Event(e)) = item.kind {
                let id = Uuid::try_parse(&e.event_id).unwrap();
                rows.push(event_row(&ctx, e, id, 1, 2));
            }
        }
        std::hint::black_box(&rows);
        drop(rows);
    };
    let new = || {
        // Walk PushRequest.items (field 2) and TelemetryItem.event (field 1) by hand.
        let mut out = BytesMut::with_capacity(body.len() * 2);
        let mut buf = body.as_slice();
        while !buf.is_empty() {
            let (field, wire) = prost::encoding::decode_key(&mut buf).unwrap();
            if wire != prost::encoding::WireType::LengthDelimited {
                prost::encoding::decode_varint(&mut buf).unwrap();
                continue;
            }
            let len = prost::encoding::decode_varint(&mut buf).unwrap() as usize;
            let (item, rest) = buf.split_at(len);
            buf = rest;
            if field != 2 {
                continue;
            }
            let mut ib = item;
            let _ = prost::encoding::decode_key(&mut ib).unwrap();
            let elen = prost::encoding::decode_varint(&mut ib).unwrap() as usize;
            let view = decode_event(&ib[..elen]).unwrap();
            let id = Uuid::try_parse(view.event_id).unwrap();
            put_event_row(&mut out, &ctx, &view, id, 1, 2);
        }
        std::hint::black_box(&out);
    };
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..20 {
            f();
        }
        start.elapsed().as_secs_f64() * 1000.0 / 20.0
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        a.push(time(&old));
        b.push(time(&new));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!(
        "per 5000-event push, median of 15 x 20: prost+rows {:.2} ms, views+rowbinary {:.2} ms, ratio {:.2}",
        a[7],
        b[7],
        b[7] / a[7]
    );
}
