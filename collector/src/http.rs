//! The HTTP side: `/healthz` (the process is up), `/readyz` (the ClickHouse schema is in
//! place, ClickHouse and the control database answer; 503 with a JSON body naming what is
//! down) and `/metrics` (Prometheus). Served from the start, also while the collector waits
//! for an unreachable ClickHouse, so orchestrators see "alive, not ready".

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

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
    pub startup: Arc<Startup>,
}

/// Whether start-up finished (ClickHouse reached, migrations applied, ingest served), or what
/// it waits for.
#[derive(Debug)]
pub struct Startup {
    waiting: Mutex<Option<String>>,
}

impl Startup {
    /// Start-up in progress.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(Some("starting".into())),
        })
    }

    /// Records what start-up waits for.
    pub fn waiting(&self, why: String) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = Some(why);
        }
    }

    pub fn done(&self) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = None;
        }
    }

    /// What start-up waits for, or None once done.
    pub fn pending(&self) -> Option<String> {
        self.waiting
            .lock()
            .map(|w| w.clone())
            .unwrap_or_else(|_| Some("unknown".into()))
    }
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
    let startup = state.startup.pending();
    let ready = ch.is_ok() && db.is_ok() && startup.is_none();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "clickhouse": show(&ch),
        "control_db": show(&db),
        "startup": startup.unwrap_or_else(|| "done".into()),
    });
    let code = if ready {
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
