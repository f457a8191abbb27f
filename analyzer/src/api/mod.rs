//! The HTTP API (`/api/v1`, JSON), health endpoints and metrics.
//!
//! Every `/api/v1` route except the OpenAPI document requires `Authorization: Bearer fpk_...`.
//! A tenant-scoped key has its tenant forced into every query; naming another tenant is a 403.

pub mod alerts;
pub mod doc;
pub mod error;
pub mod metrics;
pub mod server;

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyPool;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::insights::{self, AffectedCursor, InsightId, InsightSettings, InsightSummary};
use crate::keys::{self, KeyScope, Rejection};
use crate::query::affected::{self, DeviceCursor};
use crate::query::devices::{self, DeviceStateView, EventCursor, EventPage};
use crate::query::engine::{BreakdownRow, Point, Summary, TopCode};
use crate::query::engine::{Bucket, Dimension, Engine};
use crate::query::filters::{FILTER_PARAMS, FieldError, Filters, Params};
use crate::query::funnel::{self, FunnelGroup, FunnelPlan};
use doc::{FilterParams, NotFound, QueryErrors, TenantParam};
use error::ApiError;

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

/// The authenticated `/api/v1` routes (relative to `/api/v1`). Register every route with
/// `routes!(handler)` and annotate the handler with `#[utoipa::path]`: that is what puts it in
/// the OpenAPI document (DEVELOPERS.md, "HTTP API routes").
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(breakdown))
        .routes(routes!(timeseries))
        .routes(routes!(top_codes))
        .routes(routes!(funnel_h))
        .routes(routes!(whoami))
        .routes(routes!(affected_devices))
        .routes(routes!(device_events))
        .routes(routes!(device_state))
        .routes(routes!(insights_list))
        .routes(routes!(insight_devices))
        .routes(routes!(catalog))
        .routes(routes!(classify))
        .merge(alerts::routes())
}

/// Routes without a key: the OpenAPI document, health, readiness and metrics.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_h))
}

/// The OpenAPI document of every route [`router`] serves (the dashboard's HTML pages aside).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    OpenApiRouter::<AppState>::with_openapi(doc::ApiDoc::openapi())
        .nest("/api/v1", api_routes())
        .merge(public_routes())
        .into_openapi()
}

/// The document as served, built once.
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi_document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":{{\"reason\":\"{e}\"}}}}"))
    })
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let api = api_routes().layer(middleware::from_fn_with_state(state.clone(), auth));
    let (routes, _) = OpenApiRouter::new()
        .nest("/api/v1", api)
        .merge(public_routes())
        .split_for_parts();
    Router::new()
        .merge(crate::web::router())
        .merge(routes)
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

/// `from` and `to` of an aggregate answer, RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
pub struct Range {
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
}

impl Range {
    fn of(f: &Filters) -> Self {
        Self {
            from: rfc(f.from),
            to: rfc(f.to),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryResponse {
    #[serde(flatten)]
    pub range: Range,
    pub summary: Summary,
}

#[utoipa::path(
    get,
    path = "/summary",
    summary = "Fleet summary for a time range",
    params(FilterParams),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = SummaryResponse), QueryErrors)
)]
async fn summary(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<SummaryResponse>, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &[])?;
    let summary = s.engine.summary(&f).await?;
    Ok(Json(SummaryResponse {
        range: Range::of(&f),
        summary,
    }))
}

pub(crate) fn rfc(t: u32) -> String {
    crate::query::filters::rfc3339(t)
}

/// The dimension of `GET /breakdown/{dimension}` ([`Dimension::NAMES`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DimensionPath {
    #[param(schema_with = dimension_names)]
    pub dimension: String,
}

fn dimension_names() -> utoipa::openapi::schema::Object {
    doc::one_of(Dimension::NAMES)
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BreakdownQuery {
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreakdownResponse {
    #[serde(flatten)]
    pub range: Range,
    pub dimension: String,
    pub rows: Vec<BreakdownRow>,
}

#[utoipa::path(
    get,
    path = "/breakdown/{dimension}",
    summary = "Counts per category, code, platform, os_version, enrollment_method, tenant, stage, outcome or side",
    params(DimensionPath, FilterParams, BreakdownQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = BreakdownResponse), QueryErrors)
)]
async fn breakdown(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(dimension): Path<String>,
    Query(q): Q,
) -> Result<Json<BreakdownResponse>, ApiError> {
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
    Ok(Json(BreakdownResponse {
        range: Range::of(&f),
        dimension,
        rows,
    }))
}

/// Most points a time series may return.
const MAX_POINTS: u64 = 5_000;

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeseriesQuery {
    /// Bucket width; the range may hold at most 5000 buckets.
    #[param(schema_with = bucket_names, default = "1h")]
    pub bucket: Option<String>,
}

fn bucket_names() -> utoipa::openapi::schema::Object {
    doc::one_of(Bucket::NAMES)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeseriesResponse {
    #[serde(flatten)]
    pub range: Range,
    pub bucket: String,
    pub points: Vec<Point>,
}

#[utoipa::path(
    get,
    path = "/timeseries",
    summary = "Metrics per time bucket (empty buckets as zeros)",
    params(FilterParams, TimeseriesQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = TimeseriesResponse), QueryErrors)
)]
async fn timeseries(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<TimeseriesResponse>, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["bucket"])?;
    let bucket = match p.get("bucket") {
        None => Bucket::Hour,
        Some(b) => Bucket::parse(b).ok_or_else(|| {
            FieldError::new(
                "bucket",
                format!("must be one of: {}", Bucket::NAMES.join(", ")),
            )
        })?,
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
    Ok(Json(TimeseriesResponse {
        range: Range::of(&f),
        bucket: p.get("bucket").unwrap_or("1h").to_owned(),
        points: series,
    }))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopCodesQuery {
    #[param(minimum = 1, maximum = 1000, default = 20)]
    pub limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopCodesResponse {
    #[serde(flatten)]
    pub range: Range,
    pub codes: Vec<TopCode>,
}

#[utoipa::path(
    get,
    path = "/top-codes",
    summary = "Codes behind most failures, with cause and remediation",
    params(FilterParams, TopCodesQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = TopCodesResponse), QueryErrors)
)]
async fn top_codes(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<TopCodesResponse>, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["limit"])?;
    let limit = p.int("limit", 1, 1000, 20)?;
    let codes = s.engine.top_codes(&f, limit).await?;
    Ok(Json(TopCodesResponse {
        range: Range::of(&f),
        codes,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelResponse {
    #[serde(flatten)]
    pub range: Range,
    /// `raw`: one pass over raw rows, every number exact, with time-to-enroll percentiles.
    /// `rollups`: device-set rollups for whole days (raw rows at the edges), counts within the
    /// documented bound (see `estimated`), time-to-enroll percentiles null.
    pub plan: FunnelPlan,
    /// True when a count is a HyperLogLog estimate: unique counts within ~2.1% above 1,024
    /// devices (exact below); `dropped` is a difference of two such counts, within ~2.1% of
    /// their sum.
    pub estimated: bool,
    pub groups: Vec<FunnelGroup>,
}

#[utoipa::path(
    get,
    path = "/funnel",
    summary = "Enrollment funnel per method and platform",
    description = "Per device: category and code filters are refused (400). With `source=auto` \
(the default) a range holding a whole day is answered from device-set rollups (raw rows at the \
partial edge days; `plan: rollups`): counts are unions of uniqCombined(14) device sets, exact up \
to 1,024 devices and within ~2.1% above (`estimated: true`); `dropped` (never enrolled, furthest \
stage) is a difference of two such unions, within ~2.1% of their sum; time-to-enroll percentiles \
are null. Filters on os_version or side, and `source=raw`, use one exact pass over raw rows \
(`plan: raw`) with time-to-enroll percentiles.",
    params(FilterParams),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = FunnelResponse), QueryErrors)
)]
async fn funnel_h(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<FunnelResponse>, ApiError> {
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
    let answer = funnel::funnel(&s.engine, &f).await?;
    Ok(Json(FunnelResponse {
        range: Range::of(&f),
        plan: answer.plan,
        estimated: answer.estimated,
        groups: answer.groups,
    }))
}

/// The presented key's scope.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    pub key_id: String,
    /// The key's tenant; null: all tenants.
    pub tenant: Option<String>,
}

/// What the presented key may read: the dashboard uses it to validate a sign-in and to offer
/// the tenant switcher only to all-tenant keys.
#[utoipa::path(
    get,
    path = "/whoami",
    summary = "The presented API key's id and tenant scope (null: all tenants)",
    description = "Used by the dashboard to validate a sign-in and to offer the tenant switcher to all-tenant keys only.",
    security(("bearer" = [])),
    responses((status = 200, description = "The key's scope", body = WhoAmI), QueryErrors)
)]
async fn whoami(Extension(scope): Extension<KeyScope>) -> Json<WhoAmI> {
    Json(WhoAmI {
        key_id: scope.key_id,
        tenant: scope.tenant,
    })
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AffectedQuery {
    /// Case-insensitive substring of the device id or the user principal name.
    #[param(min_length = 1, max_length = 128)]
    pub q: Option<String>,
    #[param(minimum = 1, maximum = 1000, default = 50)]
    pub limit: Option<u64>,
    /// next_cursor of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AffectedDevicesResponse {
    #[serde(flatten)]
    pub range: Range,
    #[serde(flatten)]
    pub page: affected::AffectedPage,
}

#[utoipa::path(
    get,
    path = "/affected-devices",
    summary = "Devices with failures matching the filters, most failures first",
    description = "One row per (tenant, device) with its failure count, first and last failure, and the code, symbol, category and stage of its latest failure in scope. Ordered by failures, then the latest failure (most recent first), then an arbitrary but stable device key. Read from the per-device failure rollups (raw failed events at unaligned edges, or all of them with source=raw). `total` is exact up to 1,024 devices and with a search; above that, without a search, it is an estimate within ~2.1% and `total_estimated` is true. Keyset pagination: pass next_cursor back as cursor.",
    params(FilterParams, AffectedQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "One page of affected devices", body = AffectedDevicesResponse), QueryErrors)
)]
async fn affected_devices(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<AffectedDevicesResponse>, ApiError> {
    let p = Params::new(q);
    let f = filters(&s, &scope, &p, &["q", "limit", "cursor"])?;
    let search = p.text("q", 128)?;
    let limit = p.int("limit", 1, 1000, 50)?;
    let cursor = p.get("cursor").map(DeviceCursor::decode).transpose()?;
    let page = affected::affected_devices(&s.engine, &f, search.as_deref(), limit, cursor.as_ref())
        .await?;
    Ok(Json(AffectedDevicesResponse {
        range: Range::of(&f),
        page,
    }))
}

fn device_id_ok(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(FieldError::new("device_id", "must be 1 to 128 bytes long").into());
    }
    Ok(())
}

/// The device of `/devices/{device_id}/...`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// The device id as the agent or Microsoft Graph reported it.
    #[param(min_length = 1, max_length = 128)]
    pub device_id: String,
}

/// Keyset pagination of a device's events.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u64>,
    /// Opaque cursor from next_cursor.
    pub cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/devices/{device_id}/events",
    summary = "A device's events, newest first, client and server side joined",
    params(DevicePath, TenantParam, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = EventPage), QueryErrors)
)]
async fn device_events(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(device_id): Path<String>,
    Query(q): Q,
) -> Result<Json<EventPage>, ApiError> {
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
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/devices/{device_id}/state",
    summary = "A device's latest state snapshot",
    params(DevicePath, TenantParam),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = DeviceStateView), QueryErrors, NotFound)
)]
async fn device_state(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(device_id): Path<String>,
    Query(q): Q,
) -> Result<Json<DeviceStateView>, ApiError> {
    device_id_ok(&device_id)?;
    let p = Params::new(q);
    p.check_known(&["tenant"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    match devices::device_state(&s.engine, tenant.as_deref(), &device_id).await? {
        Some(st) => Ok(Json(st)),
        None => Err(ApiError::NotFound(format!(
            "no state snapshot for device {device_id:?}"
        ))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InsightsResponse {
    pub insights: Vec<InsightSummary>,
    /// The time (RFC 3339) the answer holds for: when the background snapshot it was read from
    /// was computed (every `insights_refresh_secs`, default 60 s; a snapshot older than three
    /// intervals, at least five minutes, is not used), or the request's own time when it was
    /// computed live.
    pub as_of: String,
    /// Whether the answer was read from the background snapshot (`true`) or computed live for
    /// this request (`false`: snapshots off, not refreshed yet, or other insight settings).
    pub from_snapshot: bool,
}

#[utoipa::path(
    get,
    path = "/insights",
    summary = "Proactive insights with counts, cause and remediation",
    params(TenantParam),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = InsightsResponse), QueryErrors)
)]
async fn insights_list(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<InsightsResponse>, ApiError> {
    let p = Params::new(q);
    p.check_known(&["tenant"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let list = insights::list(&s.engine, &s.insights, tenant.as_deref(), now()).await?;
    Ok(Json(InsightsResponse {
        insights: list.insights,
        as_of: list.as_of,
        from_snapshot: list.from_snapshot,
    }))
}

/// The insight of `/insights/{id}/devices` ([`InsightId::ALL`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InsightPath {
    #[param(schema_with = insight_ids)]
    pub id: String,
}

fn insight_ids() -> utoipa::openapi::schema::Object {
    let ids: Vec<&str> = InsightId::ALL.iter().map(|i| i.as_str()).collect();
    doc::one_of(&ids)
}

#[utoipa::path(
    get,
    path = "/insights/{id}/devices",
    summary = "Affected users or devices of one insight",
    params(InsightPath, TenantParam, PageQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = insights::AffectedPage), QueryErrors, NotFound)
)]
async fn insight_devices(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<Json<insights::AffectedPage>, ApiError> {
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
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/catalog",
    summary = "The failure knowledge base",
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Object), QueryErrors)
)]
async fn catalog(State(s): State<AppState>) -> Response {
    Json(s.catalog_json.as_ref().clone()).into_response()
}

/// The body of `POST /classify`: one signal or an array of at most 10000.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ClassifyRequest {
    One(crate::classify::cli::SignalInput),
    Many(Vec<crate::classify::cli::SignalInput>),
}

/// Mirrors `fleetpulse-analyzer classify`: one object or an array of objects in, one result
/// per object out (an error object for an invalid one, the others still classified).
#[utoipa::path(
    post,
    path = "/classify",
    summary = "Classify signals (mirrors the classify CLI)",
    description = "One result object per signal, in order: the classification, or {\"line\": n, \"error\": reason} for an invalid signal (the others are still classified).",
    request_body = ClassifyRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "One result per signal (an object for an object, an array for an array)", body = Value), QueryErrors)
)]
async fn classify(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    summary = "This document",
    responses((status = 200, description = "OK", body = Object))
)]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// ok (`/healthz`), ready or unavailable (`/readyz`).
    pub status: &'static str,
    /// What is unreachable (`/readyz` when unavailable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Process is up",
    responses((status = 200, description = "OK", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        problems: Vec::new(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    summary = "ClickHouse and the key store reachable",
    responses(
        (status = 200, description = "OK", body = Health),
        (status = 503, description = "Not ready", body = Health)
    )
)]
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
        Json(Health {
            status: "ready",
            problems,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable",
                problems,
            }),
        )
            .into_response()
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"))
)]
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

    fn document() -> Value {
        serde_json::from_str(openapi_json()).unwrap()
    }

    /// Every route goes through `routes!` (and so into the document): a plain axum `.route(`
    /// in the API's modules would serve a path the document does not list.
    #[test]
    fn no_route_outside_the_document() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // The code, not its tests (this test names the calls it looks for).
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for needle in [".route(", ".route_service(", ".nest_service(", ".fallback("] {
                assert!(
                    !text.contains(needle),
                    "{} calls {needle}: register routes with utoipa_axum's routes!(handler) and \
                     annotate the handler with #[utoipa::path] so the OpenAPI document lists it",
                    path.display()
                );
            }
            checked += 1;
        }
        assert!(
            checked >= 5,
            "read only {checked} files in {}",
            dir.display()
        );
    }

    /// The routes of API 1.0 (contract 5 of the previous session: the API is stable).
    #[test]
    fn document_lists_every_route() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut ops = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                ops.push(format!("{method} {path}"));
            }
        }
        ops.sort();
        assert_eq!(
            ops,
            [
                "delete /api/v1/alert-rules/{name}",
                "delete /api/v1/silences/{id}",
                "get /api/v1/affected-devices",
                "get /api/v1/alert-rules",
                "get /api/v1/alerts",
                "get /api/v1/alerts/{id}",
                "get /api/v1/breakdown/{dimension}",
                "get /api/v1/catalog",
                "get /api/v1/devices/{device_id}/events",
                "get /api/v1/devices/{device_id}/state",
                "get /api/v1/export/events",
                "get /api/v1/funnel",
                "get /api/v1/insights",
                "get /api/v1/insights/{id}/devices",
                "get /api/v1/openapi.json",
                "get /api/v1/silences",
                "get /api/v1/summary",
                "get /api/v1/timeseries",
                "get /api/v1/top-codes",
                "get /api/v1/whoami",
                "get /healthz",
                "get /metrics",
                "get /readyz",
                "post /api/v1/alert-rules",
                "post /api/v1/alerts/{id}/ack",
                "post /api/v1/classify",
                "post /api/v1/silences",
            ]
        );
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.0.0");
        // Every /api/v1 route but the document itself needs the key.
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let secured = op.get("security").is_some();
                let public = !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json";
                assert_eq!(secured, !public, "{method} {path}: security");
                if !public {
                    assert!(
                        op["responses"].get("401").is_some(),
                        "{method} {path}: no 401"
                    );
                }
            }
        }
    }

    /// The generated document keeps every path, parameter and response field of the
    /// hand-written API 1.0 document it replaced (frozen in tests/fixtures).
    #[test]
    fn document_keeps_every_parameter_and_field_of_api_1_0() {
        let old: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/openapi-1.0.0-handwritten.json"
        ))
        .unwrap();
        let new = document();
        let mut missing = Vec::new();
        for (path, item) in old["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(now) = new["paths"][path].get(method) else {
                    missing.push(format!("{method} {path}"));
                    continue;
                };
                let names = |op: &Value| -> Vec<String> {
                    op["parameters"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .map(|p| {
                                    format!(
                                        "{}:{}",
                                        p["in"].as_str().unwrap_or(""),
                                        p["name"].as_str().unwrap_or("")
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let have = names(now);
                for p in names(op) {
                    if !have.contains(&p) {
                        missing.push(format!("{method} {path} parameter {p}"));
                    }
                }
                for (status, response) in op["responses"].as_object().unwrap() {
                    let Some(r) = now["responses"].get(status) else {
                        missing.push(format!("{method} {path} response {status}"));
                        continue;
                    };
                    let old_schema =
                        &resolve(&old, response)["content"]["application/json"]["schema"];
                    let new_schema = &resolve(&new, r)["content"]["application/json"]["schema"];
                    let mut had = Vec::new();
                    fields(&old, old_schema, "", &mut had);
                    let mut has = Vec::new();
                    fields(&new, new_schema, "", &mut has);
                    for f in had {
                        if !has.contains(&f) {
                            missing.push(format!("{method} {path} {status} field {f}"));
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "dropped from API 1.0: {missing:#?}");
    }

    /// Follows a `$ref` within `doc`.
    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let mut at = doc;
                for part in r.trim_start_matches("#/").split('/') {
                    at = &at[part];
                }
                resolve(doc, at)
            }
            None => v,
        }
    }

    /// Dotted names of every property reachable in `schema` (through refs, allOf, oneOf,
    /// anyOf and array items).
    fn fields(doc: &Value, schema: &Value, prefix: &str, out: &mut Vec<String>) {
        let schema = resolve(doc, schema);
        for key in ["allOf", "oneOf", "anyOf"] {
            for s in schema[key].as_array().into_iter().flatten() {
                fields(doc, s, prefix, out);
            }
        }
        if let Some(items) = schema.get("items") {
            fields(doc, items, &format!("{prefix}[]"), out);
        }
        for (name, s) in schema["properties"].as_object().into_iter().flatten() {
            let path = format!("{prefix}.{name}");
            out.push(path.clone());
            fields(doc, s, &path, out);
        }
    }

    /// The enum schemas are built from the constants the handlers validate with.
    #[test]
    fn filter_parameters_are_the_parsed_ones() {
        let doc = document();
        let params: Vec<&str> = doc["paths"]["/api/v1/summary"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, FILTER_PARAMS);
        let dimension = &doc["paths"]["/api/v1/breakdown/{dimension}"]["get"]["parameters"][0];
        assert_eq!(dimension["name"], "dimension");
        assert_eq!(
            dimension["schema"]["enum"],
            serde_json::json!(Dimension::NAMES)
        );
    }
}
