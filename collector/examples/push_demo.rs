//! Registers an agent with an enrollment token, pushes one batch of events twice (the second
//! time as a resend after a "lost" acknowledgement) and prints both answers.
//!
//! `cargo run -p fleetpulse-collector --example push_demo -- http://127.0.0.1:7600 fpe_... [events]`

use std::time::{SystemTime, UNIX_EPOCH};

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    EnrollmentEvent, PushRequest, RegisterRequest, TelemetryItem,
    ingest_service_client::IngestServiceClient, telemetry_item::Kind,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7600".into());
    let token = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: push_demo ADDR ENROLLMENT_TOKEN [EVENTS]"))?;
    let events: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(100);
    let mut client = IngestServiceClient::connect(addr).await?;
    let reg = client
        .register(RegisterRequest {
            enrollment_token: token,
            device_id: "demo-device".into(),
            hostname: "demo-host".into(),
            platform: 1,
            agent_version: "0.1.0".into(),
        })
        .await?
        .into_inner();
    println!("registered agent {} in tenant {}", reg.agent_id, reg.tenant);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let items: Vec<TelemetryItem> = (0..events)
        .map(|i| TelemetryItem {
            kind: Some(Kind::Event(EnrollmentEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                agent_id: reg.agent_id.clone(),
                device_id: "demo-device".into(),
                occurred_at: Some(Timestamp {
                    seconds: now - i as i64,
                    nanos: 0,
                }),
                platform: 1,
                stage: 4,
                outcome: 2,
                ..Default::default()
            })),
        })
        .collect();
    let batch = PushRequest {
        batch_seq: 1,
        items,
        all_or_nothing: false,
    };
    for attempt in ["first push", "resend"] {
        let mut req = tonic::Request::new(batch.clone());
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", reg.agent_credential).parse()?,
        );
        let r = client.push(req).await?.into_inner();
        println!(
            "{attempt}: accepted={} duplicate={} rejected={}",
            r.accepted,
            r.duplicate,
            r.rejected.len()
        );
    }
    Ok(())
}
