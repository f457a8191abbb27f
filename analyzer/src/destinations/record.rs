//! The two kinds of records destinations carry, in the shape every encoder reads: alert
//! notifications (from the outbox) and enrollment failure events (from ClickHouse through a
//! cursor). Both carry a stable id, so a SIEM that does not deduplicate can.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alerts::detect::Concentration;
use crate::alerts::model::TopCode;

/// An alert notification as recorded in the outbox (see `alerts::model::notification_json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub notification_id: String,
    pub alert_id: String,
    /// `firing`, `renotify` or `resolved`.
    pub kind: String,
    pub status: String,
    /// `critical`, `warning` or `info`.
    #[serde(default)]
    pub severity: String,
    pub rule: String,
    pub tenant: String,
    pub category: String,
    pub dimension: String,
    pub dimension_value: String,
    pub window_start: String,
    pub window_end: String,
    pub observed_rate: f64,
    pub expected_rate: f64,
    pub observed_count: u64,
    pub expected_count: f64,
    pub affected_devices: u64,
    pub affected_users: u64,
    #[serde(default)]
    pub concentration: Vec<Concentration>,
    #[serde(default)]
    pub top_codes: Vec<TopCode>,
    pub remediation: String,
    pub summary: String,
    pub dashboard_url: String,
    pub started_at: String,
    pub resolved_at: Option<String>,
    pub sent_at: String,
}

/// One failed enrollment event, classified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event's UUID (unique per tenant; contract 6).
    pub event_id: String,
    pub tenant: String,
    pub device_id: String,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    /// Unix seconds.
    pub received_at: i64,
    pub platform: String,
    pub os_version: String,
    pub enrollment_method: String,
    pub stage: String,
    /// `0x%08X`, or None when the event carried no code.
    pub error_code: Option<String>,
    pub error_symbol: String,
    pub error_message: String,
    pub user_principal_name: String,
    pub source_kind: String,
    pub category: String,
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
}

/// What a destination delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Alert(Box<AlertRecord>, Value),
    Event(Box<EventRecord>),
}

impl Record {
    /// The record's stable id: the notification id, or `tenant/event_id` for events.
    pub fn id(&self) -> String {
        match self {
            Self::Alert(a, _) => a.notification_id.clone(),
            Self::Event(e) => format!("{}/{}", e.tenant, e.event_id),
        }
    }
    pub fn tenant(&self) -> &str {
        match self {
            Self::Alert(a, _) => &a.tenant,
            Self::Event(e) => &e.tenant,
        }
    }
    pub fn category(&self) -> &str {
        match self {
            Self::Alert(a, _) => &a.category,
            Self::Event(e) => &e.category,
        }
    }
    /// `critical`, `warning` or `info`; failure events are `warning`.
    pub fn severity(&self) -> &str {
        match self {
            Self::Alert(a, _) if !a.severity.is_empty() => &a.severity,
            Self::Alert(..) => "warning",
            Self::Event(_) => "warning",
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Unix milliseconds of an RFC 3339 time (0 when unparsable).
pub fn rfc3339_ms(s: &str) -> i64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, UTC (`2024-05-01T10:00:00.123Z`).
pub fn ms_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let base =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        base.year(),
        u8::from(base.month()),
        base.day(),
        base.hour(),
        base.minute(),
        base.second()
    )
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A failure event full of hostile values.
    pub fn hostile_event() -> EventRecord {
        EventRecord {
            event_id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            tenant: "con|toso=\\]\"".into(),
            device_id: "DESKTOP-ÆØÅ 01".into(),
            occurred_at_ms: 1_714_557_600_123,
            received_at: 1_714_557_601,
            platform: "windows".into(),
            os_version: "10.0.22631.4602".into(),
            enrollment_method: "autopilot_user_driven".into(),
            stage: "authorization".into(),
            error_code: Some("0x80180018".into()),
            error_symbol: "MENROLL_E_USERLICENSE".into(),
            error_message: "line1\nline2\r| a=b \\ ] \"quoted\" é".into(),
            user_principal_name: "jörg@contoso.com".into(),
            source_kind: "event_log".into(),
            category: "license".into(),
            failure_reason: "The user has no Intune licence".into(),
            cause: "No licence".into(),
            remediation: "Assign an Intune licence".into(),
        }
    }

    pub fn alert() -> (AlertRecord, Value) {
        let v = serde_json::json!({
            "notification_id": "0b9ef3c2-6a51-5f0e-9d7e-6c1f3b1b2a10",
            "alert_id": "7d3c3f2e-95a4-5a0c-8f6c-2a6f0c1b9e01",
            "kind": "firing",
            "status": "firing",
            "severity": "critical",
            "rule": "spike",
            "tenant": "contoso",
            "category": "license",
            "dimension": "category",
            "dimension_value": "license",
            "window_start": "2024-05-01T09:55:00Z",
            "window_end": "2024-05-01T10:00:00Z",
            "observed_rate": 0.25,
            "expected_rate": 0.02,
            "observed_count": 50,
            "expected_count": 4.0,
            "attempts": 200,
            "affected_devices": 40,
            "affected_users": 38,
            "concentration": [{"dimension": "platform", "value": "ios", "share": 0.92, "baseline_share": 0.25}],
            "top_codes": [{"code": "0x80180018", "symbol": "", "count": 50, "cause": "No licence", "remediation": "Assign a licence"}],
            "remediation": "Assign an Intune licence | check \"group\" = <all>",
            "summary": "FIRING: license failures in tenant contoso at 25.0% of attempts (expected 2.0%): 50 failures on 40 devices",
            "dashboard_url": "https://fleet.example.com/#/category/license?tenant=contoso&from=2024-05-01T08%3A55%3A00Z&to=2024-05-01T10%3A00%3A00Z",
            "started_at": "2024-05-01T10:00:00Z",
            "resolved_at": null,
            "sent_at": "2024-05-01T10:00:05Z",
        });
        (serde_json::from_value(v.clone()).unwrap(), v)
    }
}
