//! Operability, end to end: HTTP health, readiness and metrics, gRPC health and reflection.

use std::time::{Duration, SystemTime};

use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{
    self, Collector, Fixture, batch, bearer, poll_eq, unique_database,
};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn healthz_and_readyz_follow_clickhouse() -> anyhow::Result<()> {
    let ch = harness::private()?;
    let db = unique_database("ops_ready");
    let collector = Collector::builder(ch.url(), &db)
        .arg("--clickhouse-timeout-secs")
        .arg("2")
        .start()
        .await?;
    let health = collector.http_get("/healthz").await?;
    assert_eq!(health.status, 200);
    assert_eq!(json(&health.body)?, serde_json::json!({"status": "ok"}));
    let ready = collector.http_get("/readyz").await?;
    assert_eq!(ready.status, 200);
    assert_eq!(
        json(&ready.body)?,
        serde_json::json!({"status": "ready", "clickhouse": "ok", "control_db": "ok", "startup": "done"})
    );

    ch.stop()?;
    let down = collector.http_get("/readyz").await?;
    assert_eq!(down.status, 503);
    let body = json(&down.body)?;
    assert_eq!(body["status"], "not ready", "{body}");
    assert_eq!(body["control_db"], "ok", "{body}");
    let clickhouse = body["clickhouse"].as_str().unwrap_or_default();
    assert!(
        clickhouse.starts_with("down: ") && clickhouse.len() > "down: ".len(),
        "the reason is named: {body}"
    );
    assert_eq!(body["startup"], "done", "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(4), "{body}");
    assert_eq!(
        collector.http_get("/healthz").await?.status,
        200,
        "the process is still up"
    );

    ch.start()?;
    poll_eq(
        Duration::from_secs(15),
        "/readyz after ClickHouse came back",
        200,
        || async { collector.http_get("/readyz").await.map(|r| r.status) },
    )
    .await;
    Ok(())
}

fn json(body: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(body)?)
}

#[tokio::test]
async fn metrics_count_exactly_what_was_pushed() -> anyhow::Result<()> {
    let fx = Fixture::start("ops_metrics").await?;
    let agent = fx.enroll("contoso", "dev-metrics").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(5);
    let at = SystemTime::now() - Duration::from_secs(60);
    let mut items = synth.event_items(&agent.agent_id, &[], 7, at, Duration::from_millis(5));
    if let Some(fleetpulse_proto::v1::telemetry_item::Kind::Event(e)) = &mut items[3].kind {
        e.device_id.clear();
    }
    let response = agent.push(&mut client, 1, items.clone()).await?;
    assert_eq!((response.accepted, response.rejected.len()), (6, 1));
    assert!(agent.push(&mut client, 1, items.clone()).await?.duplicate);
    let forged = format!("fpa_{}_{}", agent.agent_id, "0".repeat(64));
    let status = client
        .push(bearer(&forged, batch(2, items)))
        .await
        .expect_err("forged credential");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let metrics = fx.collector.http_get("/metrics").await?;
    assert_eq!(metrics.status, 200);
    for expected in EXPECTED_METRICS {
        assert!(
            metrics.body.lines().any(|l| l == *expected),
            "missing line {expected:?} in /metrics:\n{}",
            metrics.body
        );
    }
    Ok(())
}

/// After one registration, one push of 7 events (one invalid), its duplicate resend and one
/// push with a forged credential.
const EXPECTED_METRICS: &[&str] = &[
    "fleetpulse_collector_registrations_total 1",
    "fleetpulse_collector_batches_received_total 3",
    "fleetpulse_collector_batches_accepted_total 1",
    "fleetpulse_collector_batches_duplicate_total 1",
    "fleetpulse_collector_batches_rejected_total{reason=\"unauthenticated\"} 1",
    "fleetpulse_collector_auth_failures_total{reason=\"unknown\"} 1",
    "fleetpulse_collector_items_received_total{kind=\"event\"} 14",
    "fleetpulse_collector_items_accepted_total{kind=\"event\"} 6",
    "fleetpulse_collector_items_rejected_total{kind=\"event\",reason=\"device_id\"} 1",
    "fleetpulse_collector_flush_rows_sum 6.0",
    "fleetpulse_collector_flush_rows_count 1",
    "fleetpulse_collector_clickhouse_errors_total 0",
    "fleetpulse_collector_pending_rows 0",
];

#[tokio::test]
async fn grpc_health_serves_and_reflection_lists_the_ingest_service() -> anyhow::Result<()> {
    let fx = Fixture::start("ops_grpc").await?;
    let channel = fx.collector.channel().await?;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "fleetpulse.v1.IngestService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let response = responses.next().await.expect("one reflection response")?;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"fleetpulse.v1.IngestService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    Ok(())
}
