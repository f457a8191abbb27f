//! Every failed event, in the order the collector received it, through a resumable cursor:
//! the SIEM feeds and `GET /api/v1/export/events` page through it without gaps or duplicates
//! while ingest continues.
//!
//! Order: `(received_at, tenant, event id as text)`, which is unique per event (contract 6).
//! Only rows received before `now - settle` are read: the collector stamps `received_at`
//! when a batch arrives and the row becomes visible once its insert commits, a few seconds
//! later at most (writer flush age + insert timeout), so a row visible later than `settle`
//! could otherwise land behind a cursor that already moved past it.

use base64::Engine as _;
use clickhouse::Row;
use serde::Deserialize;

use super::QueryError;
use super::classes::{RawSignal, format_code};
use super::engine::{Bind, Engine, Sql};
use super::filters::FieldError;
use super::sql::message_key;
use crate::destinations::record::EventRecord;

/// Position after the last event returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedCursor {
    pub received_at: u32,
    pub tenant: String,
    pub event_id: String,
}

impl FeedCursor {
    /// The position before every event received at or after `t`.
    pub fn at(t: u32) -> Self {
        Self {
            received_at: t,
            tenant: String::new(),
            event_id: String::new(),
        }
    }
    pub fn encode(&self) -> String {
        let v = serde_json::json!([self.received_at, self.tenant, self.event_id]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }
    pub fn decode(s: &str) -> Result<Self, FieldError> {
        let bad = || FieldError::new("cursor", "not a cursor returned by this endpoint");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| bad())?;
        let (t, tenant, event_id): (u32, String, String) =
            serde_json::from_slice(&raw).map_err(|_| bad())?;
        Ok(Self {
            received_at: t,
            tenant,
            event_id,
        })
    }
}

#[derive(Debug, Deserialize, Row)]
struct ExportRow {
    tenant: String,
    event_id: String,
    device_id: String,
    occurred_at: u32,
    occurred_ms: u16,
    received_at: u32,
    platform: String,
    os_version: String,
    enrollment_method: String,
    stage: String,
    error_code: u32,
    error_has_code: u8,
    error_symbol: String,
    error_message: String,
    user_principal_name: String,
    source_kind: String,
}

/// A page of failed events after `cursor`, received before `until`, classified.
pub struct Page {
    pub events: Vec<EventRecord>,
    /// Where the next page starts (unchanged when the page is empty).
    pub next: FeedCursor,
}

/// Reads up to `limit` failed events after `cursor` (of `tenants` when not empty).
pub async fn failed_events(
    engine: &Engine,
    cursor: &FeedCursor,
    until: u32,
    tenants: &[String],
    limit: u64,
) -> Result<Page, QueryError> {
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT tenant, toString(event_id) AS event_id, device_id, toUInt32(occurred_at) AS occurred_at, \
         occurred_ms, toUInt32(received_at) AS received_at, platform, os_version, enrollment_method, stage, \
         error_code, error_has_code, error_symbol, error_message, user_principal_name, source_kind \
         FROM {}.enrollment_events WHERE outcome = 'failed' AND received_at < toDateTime(",
        engine.db()
    ))
    .bind(Bind::U32(until))
    .push(", 'UTC') AND (received_at > toDateTime(")
    .bind(Bind::U32(cursor.received_at))
    .push(", 'UTC') OR (received_at = toDateTime(")
    .bind(Bind::U32(cursor.received_at))
    .push(", 'UTC') AND (tenant > ")
    .bind(Bind::Str(cursor.tenant.clone()))
    .push(" OR (tenant = ")
    .bind(Bind::Str(cursor.tenant.clone()))
    .push(" AND toString(event_id) > ")
    .bind(Bind::Str(cursor.event_id.clone()))
    .push("))))");
    if !tenants.is_empty() {
        sql.push(" AND has(")
            .bind(Bind::Strs(tenants.to_vec()))
            .push(", tenant)");
    }
    // `event_id` here is the alias of its text form: the order the cursor compares in (a
    // UUID column would sort by its numeric halves, not as text).
    sql.push(" ORDER BY received_at, tenant, event_id LIMIT ")
        .bind(Bind::U64(limit));
    let rows: Vec<ExportRow> = sql.query(engine.client()).fetch_all().await?;
    let mut next = cursor.clone();
    let classifier = engine.cache().classifier();
    let events = rows
        .into_iter()
        .map(|r| {
            next = FeedCursor {
                received_at: r.received_at,
                tenant: r.tenant.clone(),
                event_id: r.event_id.clone(),
            };
            let info = classifier.classify(&RawSignal {
                code: (r.error_has_code == 1).then_some(r.error_code),
                symbol: r.error_symbol.clone(),
                message: message_key(&r.error_message),
                platform: r.platform.clone(),
                source: r.source_kind.clone(),
                stage: r.stage.clone(),
            });
            EventRecord {
                event_id: r.event_id,
                tenant: r.tenant,
                device_id: r.device_id,
                occurred_at_ms: i64::from(r.occurred_at) * 1000 + i64::from(r.occurred_ms),
                received_at: i64::from(r.received_at),
                platform: r.platform,
                os_version: r.os_version,
                enrollment_method: r.enrollment_method,
                stage: r.stage,
                error_code: format_code(r.error_code, r.error_has_code == 1),
                error_symbol: r.error_symbol,
                error_message: r.error_message,
                user_principal_name: r.user_principal_name,
                source_kind: r.source_kind,
                category: info.category.clone(),
                failure_reason: info.failure_reason.clone(),
                cause: info.cause.clone(),
                remediation: info.remediation.clone(),
            }
        })
        .collect();
    Ok(Page { events, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_rejects_garbage() {
        let c = FeedCursor {
            received_at: 1_714_557_601,
            tenant: "con\ntoso".into(),
            event_id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        };
        assert_eq!(FeedCursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(
            FeedCursor::decode("!!").unwrap_err(),
            FieldError::new("cursor", "not a cursor returned by this endpoint")
        );
    }
}
