//! The HTTP side: `/healthz` (the process is up), `/readyz` (ClickHouse and the control
//! database answer; 503 with a JSON body naming what is down) and `/metrics` (Prometheus).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::json;

use crate::{control::ControlDb, metrics::Metrics, store::Store};

/// Bound of each readiness probe, so `/readyz` answers promptly even when a backend hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub control: Arc<ControlDb>,
    pub metrics: Arc<Metrics>,
    /// The gRPC listener's connection cap, read for `grpc_connections_open` when scraped.
    pub grpc_connections: fleetpulse_net::ConnectionCap,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn probe<E: std::fmt::Display>(
    fut: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let (ch, db) = tokio::join!(probe(state.store.ping()), probe(state.control.ping()));
    let show = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("down: {e}"),
    };
    let body = json!({
        "status": if ch.is_ok() && db.is_ok() { "ready" } else { "not ready" },
        "clickhouse": show(&ch),
        "control_db": show(&db),
    });
    let code = if ch.is_ok() && db.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let open = i64::try_from(state.grpc_connections.open()).unwrap_or(i64::MAX);
    state.metrics.grpc_connections_open.set(open);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
