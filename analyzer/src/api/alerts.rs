//! `/api/v1/alerts`, `/api/v1/silences` and `/api/v1/alert-rules` (contract 3). Tenant scope
//! comes from the API key: a tenant key sees and changes only its tenant's alerts, silences
//! and rules; another tenant's alert is a 404, naming another tenant a 403.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::doc::{self, Conflict, NotFound, QueryErrors, TenantParam};
use super::error::ApiError;
use super::{AppState, Q, scoped_tenant};
use crate::alerts::config::{parse_duration, valid_rule_name};
use crate::alerts::model::{
    AlertView, MATCHER_NAMES, Matcher, NotificationView, Silence, SilenceView,
};
use crate::alerts::rules::parse_rule;
use crate::alerts::store::{StoreError, StoredRule};
use crate::keys::KeyScope;
use crate::query::filters::{FieldError, Params};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(ack))
        .routes(routes!(silences, create_silence))
        .routes(routes!(delete_silence))
        .routes(routes!(rules, create_rule))
        .routes(routes!(delete_rule))
        .routes(routes!(export_events))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// From a previous page; absent: from the beginning.
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    pub limit: Option<u64>,
}

/// A page of the failed-event feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportPage {
    /// ECS 8.11 documents of failed enrollment events, oldest received first; event.id is the
    /// stable record id (tenant/event_id).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Pass as cursor= to continue; returned even when the page is empty (poll with it).
    pub next_cursor: String,
    /// Only events received before this instant (now - feed_settle_secs) are read.
    #[schema(format = DateTime)]
    pub until: String,
}

/// Every failed event, oldest received first, as ECS documents, through a resumable cursor
/// (no gaps, no duplicates while ingest continues; see `query::export`).
#[utoipa::path(
    get,
    path = "/export/events",
    summary = "Every failed event through a resumable cursor (no gaps or duplicates while ingest continues)",
    params(ExportQuery, TenantParam),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = ExportPage), QueryErrors)
)]
async fn export_events(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<ExportPage>, ApiError> {
    use crate::destinations::{ecs, record::Record};
    use crate::query::export::{self, FeedCursor};
    let p = Params::new(q);
    p.check_known(&["cursor", "limit", "tenant"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let limit = p.int("limit", 1, 10_000, 1000)?;
    let cursor = match p.get("cursor") {
        Some(c) => FeedCursor::decode(c)?,
        None => FeedCursor::default(),
    };
    let until = u32::try_from(now() - i64::from(s.feed_settle_secs)).unwrap_or(0);
    let tenants: Vec<String> = tenant.into_iter().collect();
    let page = export::failed_events(&s.engine, &cursor, until, &tenants, limit).await?;
    let events: Vec<Value> = page
        .events
        .into_iter()
        .map(|e| ecs::document(&Record::Event(Box::new(e))))
        .collect();
    Ok(Json(ExportPage {
        events,
        next_cursor: page.next.encode(),
        until: super::rfc(until),
    }))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "alert store failed");
        Self::Unavailable("the control database could not answer; retry later".to_owned())
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn who(scope: &KeyScope) -> String {
    format!("key:{}", scope.key_id)
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// open = pending, firing and no_data.
    #[param(schema_with = alert_statuses, default = "open")]
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u64>,
}

const ALERT_STATUSES: &[&str] = &["open", "resolved", "all"];

fn alert_statuses() -> utoipa::openapi::schema::Object {
    doc::one_of(ALERT_STATUSES)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsResponse {
    pub alerts: Vec<AlertView>,
}

#[utoipa::path(
    get,
    path = "/alerts",
    summary = "Alerts of the key's tenant (or of tenant= for all-tenant keys), newest first",
    params(AlertsQuery, TenantParam),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = AlertsResponse), QueryErrors)
)]
async fn list(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<AlertsResponse>, ApiError> {
    let p = Params::new(q);
    p.check_known(&["status", "tenant", "limit"])?;
    let open = match p.one_of("status", ALERT_STATUSES)?.as_deref() {
        None | Some("open") => Some(true),
        Some("resolved") => Some(false),
        _ => None,
    };
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let limit = p.int("limit", 1, 1000, 100)?;
    let alerts = s
        .alerts
        .list(tenant.as_deref(), open, i64::try_from(limit).unwrap_or(100))
        .await?;
    let alerts = alerts.iter().map(|a| a.view(&s.public_url)).collect();
    Ok(Json(AlertsResponse { alerts }))
}

/// The alert, if it exists and the key may see it.
async fn visible(
    s: &AppState,
    scope: &KeyScope,
    id: &str,
) -> Result<crate::alerts::model::Alert, ApiError> {
    let missing = || ApiError::NotFound(format!("no alert {id:?}"));
    if id.len() > 64 {
        return Err(missing());
    }
    let a = s.alerts.get(id).await?.ok_or_else(missing)?;
    match &scope.tenant {
        Some(t) if *t != a.tenant => Err(missing()),
        _ => Ok(a),
    }
}

/// The alert of `/alerts/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AlertPath {
    pub id: String,
}

#[utoipa::path(
    get,
    path = "/alerts/{id}",
    summary = "One alert with its notifications",
    params(AlertPath),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = AlertView), QueryErrors, NotFound)
)]
async fn show(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
) -> Result<Json<AlertView>, ApiError> {
    let a = visible(&s, &scope, &id).await?;
    let mut v = a.view(&s.public_url);
    let notes = s
        .alerts
        .notifications(&a.alert_id)
        .await?
        .into_iter()
        .map(|(id, kind, at, silenced_by)| NotificationView {
            notification_id: id,
            kind,
            created_at: super::rfc(u32::try_from(at.max(0)).unwrap_or(u32::MAX)),
            silenced_by,
        })
        .collect();
    v.notifications = Some(notes);
    Ok(Json(v))
}

/// `POST /alerts/{id}/ack` (the body is optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// Who acknowledges; recorded with the key id.
    #[schema(min_length = 1, max_length = 256)]
    by: Option<String>,
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| FieldError::new("body", format!("invalid JSON: {e}")).into())
}

#[utoipa::path(
    post,
    path = "/alerts/{id}/ack",
    summary = "Acknowledge an open alert (stops re-notification; idempotent)",
    params(AlertPath),
    request_body(content = Option<AckBody>, description = "Optional"),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = AlertView), QueryErrors, NotFound, Conflict)
)]
async fn ack(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<AlertView>, ApiError> {
    let b: AckBody = json_body(&body)?;
    let by = match b.by {
        Some(by) if by.is_empty() || by.len() > 256 => {
            return Err(FieldError::new("by", "must be 1 to 256 bytes long").into());
        }
        Some(by) => format!("{by} ({})", who(&scope)),
        None => who(&scope),
    };
    let a = visible(&s, &scope, &id).await?;
    if !a.status.is_open() {
        return Err(ApiError::Conflict(format!(
            "alert {id} is resolved; only open alerts can be acknowledged"
        )));
    }
    let a = s
        .alerts
        .ack(&a.alert_id, &by, now())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))?;
    Ok(Json(a.view(&s.public_url)))
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SilencesQuery {
    #[param(schema_with = true_false, default = "false")]
    pub include_expired: Option<String>,
}

fn true_false() -> utoipa::openapi::schema::Object {
    doc::one_of(&["true", "false"])
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SilencesResponse {
    pub silences: Vec<SilenceView>,
}

#[utoipa::path(
    get,
    path = "/silences",
    summary = "Active silences (include_expired=true for all)",
    params(TenantParam, SilencesQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = SilencesResponse), QueryErrors)
)]
async fn silences(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Json<SilencesResponse>, ApiError> {
    let p = Params::new(q);
    p.check_known(&["tenant", "include_expired"])?;
    let tenant = scoped_tenant(&scope, p.text("tenant", 128)?)?;
    let include_expired =
        p.one_of("include_expired", &["true", "false"])?.as_deref() == Some("true");
    let now = now();
    let list = s
        .alerts
        .silences(tenant.as_deref(), include_expired, now)
        .await?;
    let silences = list.iter().map(|x| x.view(now)).collect();
    Ok(Json(SilencesResponse { silences }))
}

/// A silence request (`POST /api/v1/silences`, `alerts silence add`). Give ends_at or
/// duration. A tenant-scoped key's tenant is added as a matcher (naming another tenant is a
/// 403).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SilenceRequest)]
pub struct SilenceBody {
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// RFC 3339; default now.
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// RFC 3339; or `duration`.
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    /// e.g. "2h"; or `ends_at`.
    #[schema(example = "2h")]
    pub duration: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub comment: String,
    #[schema(min_length = 1, max_length = 256)]
    pub created_by: Option<String>,
}

fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            FieldError::new(
                field,
                "must be an RFC 3339 timestamp such as 2024-05-01T00:00:00Z",
            )
            .into()
        })
}

/// Longest silence.
const MAX_SILENCE_SECS: i64 = 90 * 86_400;

/// Validates a silence request; the tenant of a tenant key is forced into the matchers.
pub fn silence_from(b: SilenceBody, scope: &KeyScope, now: i64) -> Result<Silence, ApiError> {
    let mut matchers = b.matchers;
    for (i, m) in matchers.iter().enumerate() {
        if !MATCHER_NAMES.contains(&m.name.as_str()) {
            return Err(FieldError::new(
                &format!("matchers[{i}].name"),
                format!("must be one of: {}", MATCHER_NAMES.join(", ")),
            )
            .into());
        }
        if m.value.is_empty() || m.value.len() > 256 {
            return Err(FieldError::new(
                &format!("matchers[{i}].value"),
                "must be 1 to 256 bytes long",
            )
            .into());
        }
        if matchers[..i].iter().any(|x| x.name == m.name) {
            return Err(
                FieldError::new(&format!("matchers[{i}].name"), "given more than once").into(),
            );
        }
    }
    let named = matchers
        .iter()
        .find(|m| m.name == "tenant")
        .map(|m| m.value.clone());
    let tenant = scoped_tenant(scope, named.clone())?;
    if named.is_none()
        && let Some(t) = tenant
    {
        matchers.push(Matcher {
            name: "tenant".into(),
            value: t,
        });
    }
    if matchers.is_empty() {
        return Err(FieldError::new(
            "matchers",
            "give at least one matcher (a silence of everything is a mistake waiting to happen)",
        )
        .into());
    }
    let starts_at = match &b.starts_at {
        Some(v) => parse_time("starts_at", v)?,
        None => now,
    };
    let ends_at = match (&b.ends_at, &b.duration) {
        (Some(v), None) => parse_time("ends_at", v)?,
        (None, Some(d)) => {
            let d = parse_duration(d).map_err(|r| FieldError::new("duration", r))?;
            starts_at + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
        }
        (Some(_), Some(_)) => {
            return Err(FieldError::new("duration", "give ends_at or duration, not both").into());
        }
        (None, None) => {
            return Err(FieldError::new("ends_at", "required (or duration, e.g. \"2h\")").into());
        }
    };
    if ends_at <= starts_at.max(now) {
        return Err(FieldError::new("ends_at", "must be later than now and than starts_at").into());
    }
    if ends_at - starts_at > MAX_SILENCE_SECS {
        return Err(FieldError::new("ends_at", "a silence lasts at most 90 days").into());
    }
    if b.comment.len() > 1024 {
        return Err(FieldError::new("comment", "must be at most 1024 bytes").into());
    }
    let created_by = match b.created_by {
        Some(c) if c.is_empty() || c.len() > 256 => {
            return Err(FieldError::new("created_by", "must be 1 to 256 bytes long").into());
        }
        Some(c) => format!("{c} ({})", who(scope)),
        None => who(scope),
    };
    Ok(Silence {
        id: uuid::Uuid::new_v4().to_string(),
        matchers,
        starts_at,
        ends_at,
        created_by,
        comment: b.comment,
        created_at: now,
    })
}

#[utoipa::path(
    post,
    path = "/silences",
    summary = "Create a silence",
    request_body = SilenceBody,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = SilenceView), QueryErrors)
)]
async fn create_silence(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: SilenceBody = json_body(&body)?;
    let now = now();
    let silence = silence_from(b, &scope, now)?;
    s.alerts.create_silence(&silence).await?;
    Ok((StatusCode::CREATED, Json(silence.view(now))).into_response())
}

/// The silence of `/silences/{id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SilencePath {
    pub id: String,
}

#[utoipa::path(
    delete,
    path = "/silences/{id}",
    summary = "End a silence now",
    params(SilencePath),
    security(("bearer" = [])),
    responses((status = 204, description = "Expired"), QueryErrors, NotFound)
)]
async fn delete_silence(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if s.alerts
        .expire_silence(&id, scope.tenant.as_deref(), now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("no active silence {id:?}")))
    }
}

/// A threshold rule.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AlertRule)]
pub struct RuleView {
    pub name: String,
    pub tenant: Option<String>,
    #[schema(example = "failure_rate(category=license) > 20% over 15m")]
    pub expr: String,
    /// config (the config file) or api (created through the API).
    pub source: &'static str,
    /// Who created an API rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertRulesResponse {
    pub rules: Vec<RuleView>,
}

#[utoipa::path(
    get,
    path = "/alert-rules",
    summary = "Threshold rules: from the config file and created through the API",
    security(("bearer" = [])),
    responses((status = 200, description = "OK", body = AlertRulesResponse), QueryErrors)
)]
async fn rules(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
) -> Result<Json<AlertRulesResponse>, ApiError> {
    let mut rules: Vec<RuleView> = s
        .alert_settings
        .rules
        .iter()
        .filter(|r| scope.tenant.is_none() || r.tenant.is_none() || r.tenant == scope.tenant)
        .map(|r| RuleView {
            name: r.name.clone(),
            tenant: r.tenant.clone(),
            expr: r.text.clone(),
            source: "config",
            created_by: None,
        })
        .collect();
    for r in s.alerts.api_rules().await? {
        if scope.tenant.is_none() || r.tenant == scope.tenant {
            rules.push(RuleView {
                name: r.name,
                tenant: r.tenant,
                expr: r.expr,
                source: "api",
                created_by: Some(r.created_by),
            });
        }
    }
    Ok(Json(AlertRulesResponse { rules }))
}

/// A rule to create (a tenant key's tenant is forced).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlertRuleRequest)]
pub struct RuleBody {
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    name: String,
    #[serde(default)]
    #[schema(example = "failure_rate(category=license) > 20% over 15m")]
    expr: String,
    tenant: Option<String>,
}

#[utoipa::path(
    post,
    path = "/alert-rules",
    summary = "Create a threshold rule (a tenant key's tenant is forced)",
    request_body = RuleBody,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = RuleView), QueryErrors, Conflict)
)]
async fn create_rule(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: RuleBody = json_body(&body)?;
    if !valid_rule_name(&b.name) {
        return Err(
            FieldError::new("name", "must be 1 to 64 letters, digits, '_', '.' or '-'").into(),
        );
    }
    let cats = s.engine.cache().classifier().categories();
    parse_rule(&b.expr, &cats).map_err(|r| FieldError::new("expr", r))?;
    let tenant = scoped_tenant(&scope, b.tenant)?;
    let taken = s.alert_settings.rules.iter().any(|r| r.name == b.name);
    let rule = StoredRule {
        name: b.name,
        tenant,
        expr: b.expr,
        created_by: who(&scope),
        created_at: now(),
    };
    if taken || !s.alerts.create_rule(&rule).await? {
        return Err(ApiError::Conflict(format!(
            "a rule named {:?} exists",
            rule.name
        )));
    }
    Ok((
        StatusCode::CREATED,
        Json(RuleView {
            name: rule.name,
            tenant: rule.tenant,
            expr: rule.expr,
            source: "api",
            created_by: Some(rule.created_by),
        }),
    )
        .into_response())
}

/// The rule of `/alert-rules/{name}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RulePath {
    pub name: String,
}

#[utoipa::path(
    delete,
    path = "/alert-rules/{name}",
    summary = "Delete an API-created rule",
    params(RulePath),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), QueryErrors, NotFound)
)]
async fn delete_rule(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if s.alerts.delete_rule(&name, scope.tenant.as_deref()).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("no API-created rule {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(t: Option<&str>) -> KeyScope {
        KeyScope {
            key_id: "k1".into(),
            tenant: t.map(str::to_owned),
        }
    }

    #[test]
    fn silence_validation() {
        let now = 1_700_000_000;
        let b = SilenceBody {
            matchers: vec![Matcher {
                name: "category".into(),
                value: "tpm".into(),
            }],
            duration: Some("2h".into()),
            ..SilenceBody::default()
        };
        let s = silence_from(b, &scope(Some("contoso")), now).unwrap();
        assert_eq!(s.tenant(), Some("contoso"));
        assert_eq!(s.ends_at - s.starts_at, 7200);
        assert_eq!(s.created_by, "key:k1");
        let b = SilenceBody {
            matchers: vec![Matcher {
                name: "tenant".into(),
                value: "fabrikam".into(),
            }],
            duration: Some("2h".into()),
            ..SilenceBody::default()
        };
        assert!(matches!(
            silence_from(b, &scope(Some("contoso")), now),
            Err(ApiError::Forbidden(_))
        ));
        let b = SilenceBody {
            matchers: vec![Matcher {
                name: "colour".into(),
                value: "x".into(),
            }],
            duration: Some("2h".into()),
            ..SilenceBody::default()
        };
        match silence_from(b, &scope(None), now) {
            Err(ApiError::BadRequest(e)) => assert_eq!(e.field, "matchers[0].name"),
            other => panic!("{other:?}"),
        }
        let b = SilenceBody {
            duration: Some("2h".into()),
            ..SilenceBody::default()
        };
        match silence_from(b, &scope(None), now) {
            Err(ApiError::BadRequest(e)) => assert_eq!(e.field, "matchers"),
            other => panic!("{other:?}"),
        }
        let b = SilenceBody {
            matchers: vec![Matcher {
                name: "category".into(),
                value: "tpm".into(),
            }],
            ..SilenceBody::default()
        };
        match silence_from(b, &scope(None), now) {
            Err(ApiError::BadRequest(e)) => assert_eq!(e.field, "ends_at"),
            other => panic!("{other:?}"),
        }
    }
}
