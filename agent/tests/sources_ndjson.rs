//! NDJSON import in the proto3 JSON mapping.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::{MAX_ERROR_MESSAGE_BYTES, ParseError, ndjson};
use fleetpulse_proto::v1::{EnrollmentStage, Outcome, Platform, SourceKind};
use support::ctx;

#[test]
fn items_and_bare_events_match_golden() {
    support::assert_golden(InputKind::Ndjson, "import_events.ndjson");
}

#[test]
fn given_fields_are_kept_and_missing_ones_filled() {
    let text = support::fixture("import_events.ndjson");
    let parsed = ndjson::parse(&text, &ctx()).expect("parses");
    assert_eq!(parsed.items.len(), 3);
    let events: Vec<_> = parsed.events().collect();
    // Given: kept.
    assert_eq!(events[0].event_id, "2f0c1c9e-6a55-4e55-9d7f-0a3f5b8c1d21");
    assert_eq!(events[0].device_id, "ios-0042");
    assert_eq!(
        events[0].source.as_ref().map(|s| s.kind),
        Some(SourceKind::Api as i32)
    );
    // Missing: filled from the context, deterministic id.
    assert_eq!(events[1].device_id, "dev-1");
    assert_eq!(events[1].agent_id, "agent-1");
    assert_eq!(events[1].stage, EnrollmentStage::ProfileInstall as i32);
    assert_eq!(events[1].outcome, Outcome::Succeeded as i32);
    assert_eq!(events[1].platform, Platform::Android as i32);
    assert_eq!(
        events[1].source.as_ref().map(|s| s.kind),
        Some(SourceKind::FileImport as i32)
    );
    let again = ndjson::parse(&text, &ctx()).expect("parses");
    assert_eq!(
        again.events().nth(1).map(|e| e.event_id.clone()),
        Some(events[1].event_id.clone())
    );
}

#[test]
fn syntax_errors_carry_line_and_serde_column() {
    let text = "{\"event\":{}}\n{\"stage\": \"ENROLLMENT_STAGE_DISCOVERY\",}\n";
    assert_eq!(
        ndjson::parse(text, &ctx()),
        Err(ParseError::at(2, 40, "trailing comma"))
    );
    let truncated = "{\"occurredAt\":\"2024-05-01T12:05:00Z\",\"stage\":\"ENROLLMENT_STA";
    assert_eq!(
        ndjson::parse(truncated, &ctx()),
        Err(ParseError::at(1, 60, "EOF while parsing a string"))
    );
}

#[test]
fn type_errors_name_the_field() {
    let text = "{\"stage\": \"ENROLLMENT_STAGE_NOPE\"}";
    let err = ndjson::parse(text, &ctx()).expect_err("unknown enum value");
    assert_eq!(err.line, 1);
    assert!(err.message.contains("ENROLLMENT_STAGE_NOPE"), "{err}");
    let text = "{\"stageX\": 1}";
    let err = ndjson::parse(text, &ctx()).expect_err("unknown field");
    assert!(err.message.contains("unknown field `stageX`"), "{err}");
    // serde quotes an unknown field's name whole; a 5,000-byte name (found by the fuzzer,
    // fuzz/corpus/ndjson_import/crash-6ba79a40) must not make a 5 KB error message.
    let name = "\u{e9}".repeat(2500);
    let err = ndjson::parse(&format!("{{\"{name}\": 1}}"), &ctx()).expect_err("unknown field");
    assert!(
        err.message.starts_with("unknown field `\u{e9}\u{e9}"),
        "{err}"
    );
    assert!(
        err.message.len() <= MAX_ERROR_MESSAGE_BYTES,
        "{}",
        err.message.len()
    );
    assert!(err.message.ends_with("bytes not shown)"), "{err}");
    assert_eq!(
        ndjson::parse("[1]", &ctx()),
        Err(ParseError::at(1, 1, "expected a JSON object"))
    );
    assert_eq!(
        ndjson::parse("{}", &ctx()),
        Err(ParseError::at(
            1,
            1,
            "empty object: expected an EnrollmentEvent or a TelemetryItem"
        ))
    );
}
