//! Slack-compatible incoming webhook: `{"text": ..., "blocks": [...]}` with mrkdwn, where
//! `&`, `<` and `>` must be escaped as `&amp;`, `&lt;`, `&gt;` (Slack's "Formatting text").

use serde_json::{Value, json};

use super::record::{AlertRecord, truncate};

/// Escapes text for Slack mrkdwn.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn body(a: &AlertRecord) -> Value {
    let icon = match a.kind.as_str() {
        "resolved" => ":white_check_mark:",
        _ if a.severity == "critical" => ":rotating_light:",
        _ => ":warning:",
    };
    let conc = a
        .concentration
        .iter()
        .map(|c| {
            format!(
                "{} *{}* ({:.0}%)",
                escape(&c.dimension),
                escape(&c.value),
                c.share * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Tenant*\n{}", escape(&a.tenant))}),
        json!({"type": "mrkdwn", "text": format!("*Category*\n{}", escape(&a.category))}),
        json!({"type": "mrkdwn", "text": format!("*Observed*\n{:.1}% ({} failures, {} devices)", a.observed_rate * 100.0, a.observed_count, a.affected_devices)}),
        json!({"type": "mrkdwn", "text": format!("*Expected*\n{:.1}% ({:.0})", a.expected_rate * 100.0, a.expected_count)}),
    ];
    if !conc.is_empty() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Concentrated on*\n{conc}")}));
    }
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} {}", escape(truncate(&a.summary, 2900)))}}),
        json!({"type": "section", "fields": fields}),
    ];
    if !a.remediation.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Fix*: {}", escape(truncate(&a.remediation, 2900)))}}));
    }
    blocks.push(json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in Fleetpulse"}, "url": a.dashboard_url}]}));
    json!({"text": format!("{icon} {}", escape(&a.summary)), "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn escapes_and_links() {
        let (a, _) = fixtures::alert();
        let b = body(&a);
        assert_eq!(
            b["blocks"][2]["text"]["text"],
            "*Fix*: Assign an Intune licence | check \"group\" = &lt;all&gt;"
        );
        assert_eq!(
            b["blocks"][1]["fields"][4]["text"],
            "*Concentrated on*\nplatform *ios* (92%)"
        );
        assert_eq!(
            b["blocks"][3]["elements"][0]["url"],
            a.dashboard_url.as_str()
        );
        assert!(
            b["text"]
                .as_str()
                .unwrap()
                .starts_with(":rotating_light: FIRING: license failures")
        );
    }
}
