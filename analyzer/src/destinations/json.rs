//! The plain JSON form of a record (syslog `format = "json"`): alert notifications exactly
//! as the webhook sends them, failure events as an object with `type` and `record_id`.

use serde_json::{Value, json};

use super::record::{Record, ms_rfc3339};

pub fn to_value(r: &Record) -> Value {
    match r {
        Record::Alert(_, v) => {
            let mut v = v.clone();
            if let Value::Object(m) = &mut v {
                m.insert("type".into(), json!("alert"));
                m.insert("record_id".into(), json!(r.id()));
            }
            v
        }
        Record::Event(e) => json!({
            "type": "enrollment_failure",
            "record_id": r.id(),
            "event_id": e.event_id,
            "tenant": e.tenant,
            "device_id": e.device_id,
            "occurred_at": ms_rfc3339(e.occurred_at_ms),
            "received_at": ms_rfc3339(e.received_at * 1000),
            "platform": e.platform,
            "os_version": e.os_version,
            "enrollment_method": e.enrollment_method,
            "stage": e.stage,
            "error_code": e.error_code,
            "error_symbol": e.error_symbol,
            "error_message": e.error_message,
            "user_principal_name": e.user_principal_name,
            "source_kind": e.source_kind,
            "category": e.category,
            "failure_reason": e.failure_reason,
            "cause": e.cause,
            "remediation": e.remediation,
        }),
    }
}

/// One line of JSON (control characters escaped by serde_json, so never a raw newline).
pub fn encode(r: &Record) -> String {
    to_value(r).to_string()
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn hostile_event_round_trips_on_one_line() {
        let e = fixtures::hostile_event();
        let line = encode(&Record::Event(Box::new(e.clone())));
        assert!(!line.contains('\n') && !line.contains('\r'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error_message"], e.error_message.as_str());
        assert_eq!(v["record_id"], format!("{}/{}", e.tenant, e.event_id));
        assert_eq!(v["occurred_at"], "2024-05-01T10:00:00.123Z");
    }
}
