//! Splunk HTTP Event Collector (`POST /services/collector/event`, `Authorization: Splunk
//! <token>`): a batch is event objects concatenated (one per line), each with `time` (epoch
//! seconds with milliseconds), `host`, `source`, `sourcetype`, optional `index`, the record as
//! `event`, and the record id in `fields.record_id` (indexed, for deduplication).

use serde_json::{Value, json};

use super::json;
use super::record::{Record, rfc3339_ms};

pub fn event(r: &Record, host: &str, index: Option<&str>) -> Value {
    let (ms, sourcetype) = match r {
        Record::Alert(a, _) => (rfc3339_ms(&a.sent_at), "fleetpulse:alert"),
        Record::Event(e) => (e.occurred_at_ms, "fleetpulse:enrollment_failure"),
    };
    let mut v = json!({
        "time": format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000)).parse::<f64>().unwrap_or(0.0),
        "host": host,
        "source": "fleetpulse",
        "sourcetype": sourcetype,
        "event": json::to_value(r),
        "fields": {"record_id": r.id(), "tenant": r.tenant()},
    });
    if let (Some(i), Value::Object(m)) = (index, &mut v) {
        m.insert("index".into(), json!(i));
    }
    v
}

/// The body of one HEC request carrying `records`.
pub fn batch(records: &[Record], host: &str, index: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(event(r, host, index).to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn batch_of_concatenated_events() {
        let e = Record::Event(Box::new(fixtures::hostile_event()));
        let (a, v) = fixtures::alert();
        let body = batch(
            &[e, Record::Alert(Box::new(a), v)],
            "analyzer-1",
            Some("security"),
        );
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time"], 1_714_557_600.123);
        assert_eq!(lines[0]["sourcetype"], "fleetpulse:enrollment_failure");
        assert_eq!(lines[0]["index"], "security");
        assert_eq!(
            lines[0]["event"]["error_message"],
            "line1\nline2\r| a=b \\ ] \"quoted\" é"
        );
        assert_eq!(
            lines[1]["fields"]["record_id"],
            "0b9ef3c2-6a51-5f0e-9d7e-6c1f3b1b2a10"
        );
        assert_eq!(lines[1]["time"], 1_714_557_605.0);
    }
}
