//! Microsoft Teams through a Workflows (Power Automate) webhook: "Post to a channel when a
//! webhook request is received" expects a message with one Adaptive Card attachment.

use serde_json::{Value, json};

use super::record::AlertRecord;

pub fn body(a: &AlertRecord) -> Value {
    let mut facts = vec![
        json!({"title": "Tenant", "value": a.tenant}),
        json!({"title": "Category", "value": a.category}),
        json!({"title": "Observed", "value": format!("{:.1}% ({} failures, {} devices, {} users)", a.observed_rate * 100.0, a.observed_count, a.affected_devices, a.affected_users)}),
        json!({"title": "Expected", "value": format!("{:.1}% ({:.0})", a.expected_rate * 100.0, a.expected_count)}),
        json!({"title": "Window", "value": format!("{} to {}", a.window_start, a.window_end)}),
    ];
    for c in &a.concentration {
        facts.push(json!({"title": format!("Concentrated on {}", c.dimension), "value": format!("{} ({:.0}% of the excess)", c.value, c.share * 100.0)}));
    }
    let colour = match (a.kind.as_str(), a.severity.as_str()) {
        ("resolved", _) => "Good",
        (_, "critical") => "Attention",
        _ => "Warning",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "color": colour, "wrap": true, "text": a.summary}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if !a.remediation.is_empty() {
        body.push(
            json!({"type": "TextBlock", "wrap": true, "text": format!("Fix: {}", a.remediation)}),
        );
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": [{"type": "Action.OpenUrl", "title": "Open in Fleetpulse", "url": a.dashboard_url}],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn adaptive_card_shape() {
        let (a, _) = fixtures::alert();
        let b = body(&a);
        let card = &b["attachments"][0]["content"];
        assert_eq!(
            b["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(
            card["body"][1]["facts"][5]["value"],
            "ios (92% of the excess)"
        );
        assert_eq!(card["actions"][0]["url"], a.dashboard_url.as_str());
    }
}
