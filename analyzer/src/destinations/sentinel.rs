//! Microsoft Sentinel through the Azure Monitor Logs Ingestion API: an OAuth2
//! client-credentials token (scope `https://monitor.azure.com//.default`), then
//! `POST {endpoint}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version=2023-01-01`
//! with a JSON array of records whose columns the DCR's stream declares (a custom table
//! `FleetpulseEnrollment_CL`: `TimeGenerated`, `RecordId`, `RecordType`, `Tenant`, ...).

use serde_json::{Value, json};

use super::json;
use super::record::{Record, ms_rfc3339, rfc3339_ms};

pub const API_VERSION: &str = "2023-01-01";

/// The token request's form fields.
pub fn token_form<'a>(client_id: &'a str, client_secret: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("scope", "https://monitor.azure.com//.default"),
    ]
}

/// One stream row.
pub fn row(r: &Record) -> Value {
    let (ms, kind) = match r {
        Record::Alert(a, _) => (rfc3339_ms(&a.sent_at), "alert"),
        Record::Event(e) => (e.occurred_at_ms, "enrollment_failure"),
    };
    json!({
        "TimeGenerated": ms_rfc3339(ms),
        "RecordId": r.id(),
        "RecordType": kind,
        "Tenant": r.tenant(),
        "Category": r.category(),
        "Severity": r.severity(),
        "Data": json::to_value(r),
    })
}

/// The request body for `records` (a JSON array).
pub fn body(records: &[Record]) -> Vec<u8> {
    Value::Array(records.iter().map(row).collect())
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn rows_carry_id_and_time() {
        let e = fixtures::hostile_event();
        let v: Value =
            serde_json::from_slice(&body(&[Record::Event(Box::new(e.clone()))])).unwrap();
        assert_eq!(v[0]["TimeGenerated"], "2024-05-01T10:00:00.123Z");
        assert_eq!(v[0]["RecordId"], format!("{}/{}", e.tenant, e.event_id));
        assert_eq!(v[0]["Data"]["error_code"], "0x80180018");
        assert_eq!(
            token_form("id", "s")[3],
            ("scope", "https://monitor.azure.com//.default")
        );
    }
}
