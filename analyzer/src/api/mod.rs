//! The HTTP API (`/api/v1`, JSON), health endpoints and metrics.
//!
//! Every `/api/v1` route except the OpenAPI document requires `Authorization: Bearer fpk_...`.
//! A tenant-scoped key has its tenant forced into every query; naming another tenant is a 403.

pub mod alerts;
pub mod error;
pub mod metrics;
pub mod server;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use sqlx::AnyPool;

use crate::insights::{self, AffectedCursor, InsightId, InsightSettings};
use crate::keys::{self, KeyScope, Rejection};
use crate::query::affected::{self, DeviceCursor};
use crate::query::devices::{self, EventCursor};
use crate::query::engine::{Bucket, Dimension, Engine};
use crate::query::filters::{FILTER_PARAMS, FieldError, Filters, Params};
use crate::query::funnel;
use error::ApiError;

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Classifies CLI-style JSON objects, one output object per input object.
pub type ClassifyFn = dyn Fn(&[Value]) -> Vec<Value> + Send + Sync;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub keys: AnyPool,
    pub insights: Arc<InsightSettings>,
    pub metrics: Arc<metrics::Metrics>,
    /// Classifies CLI-style JSON objects (`POST /api/v1/classify`), one result per object.
    pub classify_json: Arc<ClassifyFn>,
    /// The catalog as served by `GET /api/v1/catalog`.
    pub catalog_json: Arc<Value>,
    /// Alert state, history, silences and API-created rules.
    pub alerts: crate::alerts::store::AlertStore,
    /// The validated `[alerts]` settings (rules from the config file).
    pub alert_settings: Arc<crate::alerts::config::AlertSettings>,
    /// Base of absolute links (dashboard URLs in alerts), without a trailing slash.
    pub public_url: Arc<String>,
    /// Seconds a received event settles before `/api/v1/export/events` reads it.
    pub feed_settle_secs: u32,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/summary", get(summary))
        .route("/breakdown/{dimension}", get(breakdown))
        .route("/timeseries", get(timeseries))
        .route("/top-codes", get(top_codes))
        .route("/funnel", get(funnel_h))
        .route("/whoami", get(whoami))
        .route("/affected-devices", get(affected_devices))
        .route("/devices/{device_id}/events", get(device_events))
        .route("/devices/{device_id}/state", get(device_state))
        .route("/insights", get(insights_list))
        .route("/insights/{id}/devices", get(insight_devices))
        .route("/catalog", get(catalog))
        .route("/classify", post(classify))
        .merge(alerts::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(crate::web::router())
        .nest("/api/v1", api)
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_h))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return ApiError::Unauthorized("missing API key: send Authorization: Bearer fpk_...")
            .into_response();
    };
    match keys::verify(&state.keys, token).await {
        Ok(Ok(scope)) => {
            req.extensions_mut().insert(scope);
            next.run(req).await
        }
        Ok(Err(Rejection::Malformed)) => {
            ApiError::Unauthorized("malformed API key: expected fpk_<id>_<secret>").into_response()
        }
        Ok(Err(Rejection::Unknown)) => ApiError::Unauthorized("invalid API key").into_response(),
        Ok(Err(Rejection::Revoked)) => {
            ApiError::Unauthorized("this API key has been revoked").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "key verification failed");
            ApiError::Unavailable("the key store could not answer; retry later".to_owned())
                .into_response()
        }
    }
}

/// The tenant a request may read: the key's own, or what an all-tenants key asked for.
pub(crate) fn scoped_tenant(
    scope: &KeyScope,
    requested: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (&scope.tenant, requested) {
        (None, r) => Ok(r),
        (Some(own), None) => Ok(Some(own.clone())),
        (Some(own), Some(r)) if *own == r => Ok(Some(r)),
        (Some(own), Some(r)) => Err(ApiError::Forbidden(format!(
            "this API key is scoped to tenant {own:?} and cannot read tenant {r:?}"
        ))),
    }
}

fn now() -> u32 {
    u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(u32::MAX)
}

fn filters(
    state: &AppState,
    scope: &KeyScope,
    p: &Params,
    extra: &[&str],
) -> Result<Filters, ApiError> {
    let allowed: Vec<&str> = FILTER_PARAMS.iter().chain(extra.iter()).copied().collect();
    p.check_known(&allowed)?;
    let cats = state.engine.cache().classifier().categories();
    let mut f = Filters::parse(p, &cats, now())?;
    f.tenant = scoped_tenant(scope, f.tenant.take())?;
    Ok(f)
}

pub(crate) type Q = Query<Vec<(String, String)>>;

async fn summary(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &[])?;
    let sum = s.engine.summary(&f).await?;
    Ok(Json(json!({"from": rfc(f.from), "to": rfc(f.to), "summary": sum})).into_response())
}

pub(crate) fn rfc(t: u32) -> String {
    crate::query::filters::rfc3339(t)
}

async fn breakdown(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(dimension): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let dim = Dimension::parse(&dimension).ok_or_else(|| {
        FieldError::new(
            "dimension",
            format!("must be one of: {}", Dimension::NAMES.join(", ")),
        )
    })?;
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["limit"])?;
    let limit = p.int("limit", 1, 1000, 100)?;
    let rows = s.engine.breakdown(&f, dim, limit).await?;
    Ok(
        Json(json!({"from": rfc(f.from), "to": rfc(f.to), "dimension": dimension, "rows": rows}))
            .into_response(),
    )
}

/// Most points a time series may return.
const MAX_POINTS: u64 = 5_000;

async fn timeseries(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["bucket"])?;
    let bucket = match p.get("bucket") {
        None => Bucket::Hour,
        Some(b) => Bucket::parse(b)
            .ok_or_else(|| FieldError::new("bucket", "must be one of: 5m, 15m, 1h, 1d"))?,
    };
    let points = u64::from(f.to - f.from / bucket.seconds() * bucket.seconds())
        .div_ceil(u64::from(bucket.seconds()));
    if points > MAX_POINTS {
        return Err(FieldError::new(
            "bucket",
            format!("the range holds {points} buckets, more than {MAX_POINTS}; choose a coarser bucket or a shorter range"),
        )
        .into());
    }
    let series = s.engine.timeseries(&f, bucket).await?;
    Ok(Json(json!({"from": rfc(f.from), "to": rfc(f.to), "bucket": p.get("bucket").unwrap_or("1h"), "points": series}))
        .into_response())
}

async fn top_codes(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["limit"])?;
    let limit = p.int("limit", 1, 1000, 20)?;
    let rows = s.engine.top_codes(&f, limit).await?;
    Ok(Json(json!({"from": rfc(f.from), "to": rfc(f.to), "codes": rows})).into_response())
}

async fn funnel_h(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &[])?;
    if f.category.is_some() {
        return Err(FieldError::new(
            "category",
            "the funnel is per device and cannot be filtered by category",
        )
        .into());
    }
    if f.code.is_some() {
        return Err(FieldError::new(
            "code",
            "the funnel is per device and cannot be filtered by error code",
        )
        .into());
    }
    let groups = funnel::funnel(&s.engine, &f).await?;
    Ok(Json(json!({"from": rfc(f.from), "to": rfc(f.to), "groups": groups})).into_response())
}

/// What the presented key may read: the dashboard uses it to validate a sign-in and to offer
/// the tenant switcher only to all-tenant keys.
async fn whoami(Extension(scope): Extension<KeyScope>) -> Response {
    Json(json!({"key_id": scope.key_id, "tenant": scope.tenant})).into_response()
}

async fn affected_devices(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["q", "limit", "cursor"])?;
    let search = p.text("q", 128)?;
    let limit = p.int("limit", 1, 1000, 50)?;
    let cursor = p.get("cursor").map(DeviceCursor::decode).transpose()?;
    let page = affected::affected_devices(&s.engine, &f, search.as_deref(), limit, cursor.as_ref())
        .await?;
    Ok(Json(json!({"from": rfc(f.from), "to": rfc(f.to), "total": page.total, "devices": page.devices, "next_cursor": page.next_cursor})).into_response())
}

fn device_id_ok(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(FieldError::new("device_id", "must be 1 to 128 bytes long").into());
    }
    Ok(())
}

async fn device_events(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(device_id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    device_id_ok(&device_id)?;
    let p = Params::new(q);
    p.check_known(&["tenant", "limit", "cursor"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let limit = p.int("limit", 1, 1000, 100)?;
    let cursor = p.get("cursor").map(EventCursor::decode).transpose()?;
    let page = devices::device_events(
        &s.engine,
        tenant.as_deref(),
        &device_id,
        limit,
        cursor.as_ref(),
    )
    .await?;
    Ok(Json(page).into_response())
}

async fn device_state(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(device_id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    device_id_ok(&device_id)?;
    let p = Params::new(q);
    p.check_known(&["tenant"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    match devices::device_state(&s.engine, tenant.as_deref(), &device_id).await? {
        Some(st) => Ok(Json(st).into_response()),
        None => Err(ApiError::NotFound(format!(
            "no state snapshot for device {device_id:?}"
        ))),
    }
}

async fn insights_list(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    p.check_known(&["tenant"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let list = insights::list(&s.engine, &s.insights, tenant.as_deref(), now()).await?;
    Ok(Json(json!({"insights": list})).into_response())
}

async fn insight_devices(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let Some(id) = InsightId::parse(&id) else {
        return Err(ApiError::NotFound(format!("no insight {id:?}")));
    };
    let p = Params::new(q);
    p.check_known(&["tenant", "limit", "cursor"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let limit = p.int("limit", 1, 1000, 100)?;
    let cursor = p.get("cursor").map(AffectedCursor::decode).transpose()?;
    let page = insights::affected(
        &s.engine,
        id,
        &s.insights,
        tenant.as_deref(),
        now(),
        cursor.as_ref(),
        limit,
    )
    .await?;
    Ok(Json(page).into_response())
}

async fn catalog(State(s): State<AppState>) -> Response {
    Json(s.catalog_json.as_ref().clone()).into_response()
}

/// Mirrors `fleetpulse-analyzer classify`: one object or an array of objects in, one result
/// per object out (an error object for an invalid one, the others still classified).
async fn classify(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| FieldError::new("body", format!("not valid JSON: {e}")))?;
    let out = match value {
        Value::Array(items) => {
            if items.len() > 10_000 {
                return Err(FieldError::new("body", "at most 10000 signals per request").into());
            }
            Value::Array((s.classify_json)(&items))
        }
        v @ Value::Object(_) => (s.classify_json)(std::slice::from_ref(&v))
            .into_iter()
            .next()
            .unwrap_or(Value::Null),
        _ => {
            return Err(
                FieldError::new("body", "must be a JSON object or an array of objects").into(),
            );
        }
    };
    Ok(Json(out).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let ch = s.engine.client().query("SELECT 1").fetch_one::<u8>().await;
    let db = sqlx::query("SELECT 1").execute(&s.keys).await;
    let mut problems = Vec::new();
    if let Err(e) = ch {
        problems.push(format!("clickhouse: {e}"));
    }
    if let Err(e) = db {
        problems.push(format!("control database: {e}"));
    }
    if problems.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "problems": problems})),
        )
            .into_response()
    }
}

async fn metrics_h(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_scoping() {
        let scoped = KeyScope {
            key_id: "k".into(),
            tenant: Some("contoso".into()),
        };
        assert_eq!(
            scoped_tenant(&scoped, None).unwrap(),
            Some("contoso".into())
        );
        assert_eq!(
            scoped_tenant(&scoped, Some("contoso".into())).unwrap(),
            Some("contoso".into())
        );
        assert!(matches!(
            scoped_tenant(&scoped, Some("fabrikam".into())),
            Err(ApiError::Forbidden(_))
        ));
        let all = KeyScope {
            key_id: "k".into(),
            tenant: None,
        };
        assert_eq!(scoped_tenant(&all, None).unwrap(), None);
    }

    #[test]
    fn openapi_is_json_and_lists_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/summary",
            "/api/v1/breakdown/{dimension}",
            "/api/v1/timeseries",
            "/api/v1/top-codes",
            "/api/v1/funnel",
            "/api/v1/whoami",
            "/api/v1/affected-devices",
            "/api/v1/devices/{device_id}/events",
            "/api/v1/devices/{device_id}/state",
            "/api/v1/insights",
            "/api/v1/insights/{id}/devices",
            "/api/v1/catalog",
            "/api/v1/classify",
            "/api/v1/openapi.json",
            "/api/v1/alerts",
            "/api/v1/alerts/{id}",
            "/api/v1/alerts/{id}/ack",
            "/api/v1/silences",
            "/api/v1/silences/{id}",
            "/api/v1/alert-rules",
            "/api/v1/alert-rules/{name}",
            "/api/v1/export/events",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
        assert_eq!(doc["openapi"], "3.0.3");
    }
}
