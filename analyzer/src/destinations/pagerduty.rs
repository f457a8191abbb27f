//! PagerDuty Events API v2 (`POST /v2/enqueue`): `trigger` for firing and re-notify,
//! `resolve` for resolved, with `dedup_key` = alert id so one incident follows one episode.

use serde_json::{Value, json};

use super::record::{AlertRecord, truncate};

/// PagerDuty's severity for ours.
pub fn severity(s: &str) -> &'static str {
    match s {
        "critical" => "critical",
        "warning" => "warning",
        _ => "info",
    }
}

pub fn body(a: &AlertRecord, routing_key: &str) -> Value {
    if a.kind == "resolved" {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": a.alert_id});
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.alert_id,
        "payload": {
            // The API rejects summaries over 1024 characters.
            "summary": truncate(&a.summary, 1024),
            "source": format!("fleetpulse/{}", a.tenant),
            "severity": severity(&a.severity),
            "timestamp": a.sent_at,
            "component": a.category,
            "group": a.tenant,
            "class": a.dimension,
            "custom_details": {
                "observed_rate": a.observed_rate,
                "expected_rate": a.expected_rate,
                "observed_count": a.observed_count,
                "expected_count": a.expected_count,
                "affected_devices": a.affected_devices,
                "affected_users": a.affected_users,
                "concentration": a.concentration,
                "top_codes": a.top_codes,
                "remediation": a.remediation,
                "window_start": a.window_start,
                "window_end": a.window_end,
                "notification_id": a.notification_id,
            },
        },
        "links": [{"href": a.dashboard_url, "text": "Open in Fleetpulse"}],
        "client": "Fleetpulse",
        "client_url": a.dashboard_url,
    })
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn trigger_and_resolve() {
        let (mut a, _) = fixtures::alert();
        let b = body(&a, "R0UT1NG");
        assert_eq!(b["event_action"], "trigger");
        assert_eq!(b["dedup_key"], a.alert_id.as_str());
        assert_eq!(b["payload"]["severity"], "critical");
        assert_eq!(b["payload"]["source"], "fleetpulse/contoso");
        a.kind = "resolved".into();
        a.summary = "x".repeat(5000);
        assert_eq!(
            body(&a, "R0UT1NG"),
            json!({"routing_key": "R0UT1NG", "event_action": "resolve", "dedup_key": a.alert_id})
        );
        a.kind = "firing".into();
        assert_eq!(
            body(&a, "k")["payload"]["summary"].as_str().unwrap().len(),
            1024
        );
    }
}
