//! Elastic Common Schema documents (ECS 8.11), as NDJSON for an Elasticsearch/OpenSearch
//! `_bulk` request (`create` with `_id` = record id, so a resend is a 409 instead of a
//! duplicate) and as the pull API's (`/api/v1/export/events`) items.

use serde_json::{Value, json};

use super::record::{Record, ms_rfc3339, rfc3339_ms};

pub const ECS_VERSION: &str = "8.11.0";

/// ECS `event.severity` (numeric; higher is worse).
fn severity(r: &Record) -> u8 {
    match r.severity() {
        "critical" => 9,
        "warning" => 5,
        _ => 2,
    }
}

pub fn document(r: &Record) -> Value {
    match r {
        Record::Event(e) => json!({
            "@timestamp": ms_rfc3339(e.occurred_at_ms),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "id": r.id(),
                "kind": "event",
                "category": ["configuration"],
                "type": ["change"],
                "outcome": "failure",
                "action": "device-enrollment",
                "code": e.error_code,
                "reason": e.failure_reason,
                "dataset": "fleetpulse.enrollment",
                "module": "fleetpulse",
                "severity": severity(r),
                "ingested": ms_rfc3339(e.received_at * 1000),
            },
            "organization": {"id": e.tenant},
            "host": {"id": e.device_id, "name": e.device_id, "os": {"platform": e.platform, "version": e.os_version}},
            "user": {"name": e.user_principal_name},
            "error": {"code": e.error_code, "id": e.error_symbol, "message": e.error_message},
            "labels": {"enrollment_method": e.enrollment_method, "stage": e.stage, "category": e.category, "source_kind": e.source_kind},
            "fleetpulse": {"event_id": e.event_id, "category": e.category, "cause": e.cause, "remediation": e.remediation},
        }),
        Record::Alert(a, _) => json!({
            "@timestamp": ms_rfc3339(rfc3339_ms(&a.sent_at)),
            "ecs": {"version": ECS_VERSION},
            "event": {
                "id": r.id(),
                "kind": "alert",
                "category": ["configuration"],
                "type": ["info"],
                "action": a.kind,
                "dataset": "fleetpulse.alert",
                "module": "fleetpulse",
                "severity": severity(r),
                "reason": a.summary,
                "url": a.dashboard_url,
                "start": a.window_start,
                "end": a.window_end,
            },
            "organization": {"id": a.tenant},
            "rule": {"name": a.rule, "category": a.category},
            "message": a.summary,
            "labels": {"status": a.status, "dimension": a.dimension, "dimension_value": a.dimension_value},
            "fleetpulse": {
                "alert_id": a.alert_id, "observed_rate": a.observed_rate, "expected_rate": a.expected_rate,
                "observed_count": a.observed_count, "expected_count": a.expected_count,
                "affected_devices": a.affected_devices, "affected_users": a.affected_users,
                "concentration": a.concentration, "top_codes": a.top_codes, "remediation": a.remediation,
            },
        }),
    }
}

/// A `_bulk` body: an action line and a document line per record, each ending in `\n`.
pub fn bulk(records: &[Record], index: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let action = json!({"create": {"_index": index, "_id": r.id()}});
        out.extend_from_slice(action.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(document(r).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn bulk_pairs_action_and_document() {
        let e = fixtures::hostile_event();
        let body = String::from_utf8(bulk(
            &[Record::Event(Box::new(e.clone()))],
            "fleetpulse-events",
        ))
        .unwrap();
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        assert!(body.ends_with('\n'));
        let action: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            action,
            json!({"create": {"_index": "fleetpulse-events", "_id": format!("{}/{}", e.tenant, e.event_id)}})
        );
        let doc: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(doc["@timestamp"], "2024-05-01T10:00:00.123Z");
        assert_eq!(doc["error"]["message"], e.error_message.as_str());
        assert_eq!(doc["host"]["name"], "DESKTOP-ÆØÅ 01");
        assert_eq!(doc["event"]["outcome"], "failure");
    }
}
