//! `/api/v1/alerts`, `/api/v1/silences` and `/api/v1/alert-rules` (contract 3). Tenant scope
//! comes from the API key: a tenant key sees and changes only its tenant's alerts, silences
//! and rules; another tenant's alert is a 404, naming another tenant a 403.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, Q, scoped_tenant};
use crate::alerts::config::{parse_duration, valid_rule_name};
use crate::alerts::model::{MATCHER_NAMES, Matcher, Silence};
use crate::alerts::rules::parse_rule;
use crate::alerts::store::{StoreError, StoredRule};
use crate::keys::KeyScope;
use crate::query::filters::{FieldError, Params};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/alerts", get(list))
        .route("/alerts/{id}", get(show))
        .route("/alerts/{id}/ack", post(ack))
        .route("/silences", get(silences).post(create_silence))
        .route("/silences/{id}", axum::routing::delete(delete_silence))
        .route("/alert-rules", get(rules).post(create_rule))
        .route("/alert-rules/{name}", axum::routing::delete(delete_rule))
        .route("/export/events", get(export_events))
}

/// Every failed event, oldest received first, as ECS documents, through a resumable cursor
/// (no gaps, no duplicates while ingest continues; see `query::export`).
async fn export_events(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
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
    Ok(Json(
        json!({"events": events, "next_cursor": page.next.encode(), "until": super::rfc(until)}),
    )
    .into_response())
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

async fn list(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q);
    p.check_known(&["status", "tenant", "limit"])?;
    let open = match p.one_of("status", &["open", "resolved", "all"])?.as_deref() {
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
    let items: Vec<Value> = alerts.iter().map(|a| a.to_json(&s.public_url)).collect();
    Ok(Json(json!({"alerts": items})).into_response())
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

async fn show(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = visible(&s, &scope, &id).await?;
    let mut v = a.to_json(&s.public_url);
    let notes: Vec<Value> = s
        .alerts
        .notifications(&a.alert_id)
        .await?
        .into_iter()
        .map(|(id, kind, at, silenced_by)| {
            json!({"notification_id": id, "kind": kind, "created_at": super::rfc(u32::try_from(at.max(0)).unwrap_or(u32::MAX)), "silenced_by": silenced_by})
        })
        .collect();
    if let Value::Object(m) = &mut v {
        m.insert("notifications".into(), Value::Array(notes));
    }
    Ok(Json(v).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| FieldError::new("body", format!("invalid JSON: {e}")).into())
}

async fn ack(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
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
    Ok(Json(a.to_json(&s.public_url)).into_response())
}

async fn silences(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    Query(q): Q,
) -> Result<Response, ApiError> {
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
    let items: Vec<Value> = list.iter().map(|x| x.to_json(now)).collect();
    Ok(Json(json!({"silences": items})).into_response())
}

/// A silence request (`POST /api/v1/silences`, `alerts silence add`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceBody {
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// RFC 3339; default now.
    pub starts_at: Option<String>,
    /// RFC 3339; or `duration`.
    pub ends_at: Option<String>,
    /// e.g. "2h"; or `ends_at`.
    pub duration: Option<String>,
    #[serde(default)]
    pub comment: String,
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

async fn create_silence(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b: SilenceBody = json_body(&body)?;
    let now = now();
    let silence = silence_from(b, &scope, now)?;
    s.alerts.create_silence(&silence).await?;
    Ok((StatusCode::CREATED, Json(silence.to_json(now))).into_response())
}

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

async fn rules(
    State(s): State<AppState>,
    Extension(scope): Extension<KeyScope>,
) -> Result<Response, ApiError> {
    let mut out: Vec<Value> = s
        .alert_settings
        .rules
        .iter()
        .filter(|r| scope.tenant.is_none() || r.tenant.is_none() || r.tenant == scope.tenant)
        .map(|r| json!({"name": r.name, "tenant": r.tenant, "expr": r.text, "source": "config"}))
        .collect();
    for r in s.alerts.api_rules().await? {
        if scope.tenant.is_none() || r.tenant == scope.tenant {
            out.push(json!({"name": r.name, "tenant": r.tenant, "expr": r.expr, "source": "api", "created_by": r.created_by}));
        }
    }
    Ok(Json(json!({"rules": out})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    expr: String,
    tenant: Option<String>,
}

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
        Json(json!({"name": rule.name, "tenant": rule.tenant, "expr": rule.expr, "source": "api", "created_by": rule.created_by})),
    )
        .into_response())
}

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
