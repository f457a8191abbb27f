//! NDJSON import: telemetry from any other system, one JSON object per line, in the
//! protocol's proto3 JSON mapping (camelCase names, enum names as strings, 64-bit integers as
//! strings, timestamps as RFC 3339).
//!
//! Each line is either a `TelemetryItem` (`{"event": {...}}`, `{"state": {...}}` or
//! `{"heartbeat": {...}}`) or a bare `EnrollmentEvent` (`{"eventId": ..., "stage": ...}`).
//! The two cannot be confused: an object whose only key is `event`, `state` or `heartbeat` is
//! an item, anything else is read as an event (and `EnrollmentEvent` has no such field).
//! Blank lines are skipped. Unknown fields are errors (pbjson rejects them), so a typo does
//! not silently drop data.
//!
//! What the file leaves empty is filled from the context, what it sets is kept: `agentId`
//! and `deviceId` (when empty), `eventId` (when empty: a v5 UUID over the line's content, so
//! re-importing the same file gives the same ids), `source.kind` (when unspecified:
//! `SOURCE_KIND_FILE_IMPORT`) and `platform` (when unspecified).

use fleetpulse_proto::v1::{
    EnrollmentEvent, Platform, Source, SourceKind, TelemetryItem, telemetry_item,
};

use super::{ParseError, Parsed, SourceContext, numbered_lines, stable_event_id};

/// Parses NDJSON text.
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    for (number, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        // A first pass as untyped JSON finds syntax errors (with serde's column) and tells
        // an item from a bare event.
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|err| json_error(number, &err))?;
        let Some(object) = value.as_object() else {
            return Err(ParseError::at(number, 1, "expected a JSON object"));
        };
        if object.is_empty() {
            return Err(ParseError::at(
                number,
                1,
                "empty object: expected an EnrollmentEvent or a TelemetryItem",
            ));
        }
        let is_item = object.len() == 1
            && ["event", "state", "heartbeat"]
                .iter()
                .any(|k| object.contains_key(*k));
        let mut item = if is_item {
            serde_json::from_str::<TelemetryItem>(line).map_err(|err| json_error(number, &err))?
        } else {
            let event = serde_json::from_str::<EnrollmentEvent>(line)
                .map_err(|err| json_error(number, &err))?;
            TelemetryItem {
                kind: Some(telemetry_item::Kind::Event(event)),
            }
        };
        fill_defaults(&mut item, ctx, line);
        parsed.items.push(item);
    }
    Ok(parsed)
}

fn json_error(line: usize, err: &serde_json::Error) -> ParseError {
    // serde_json's column is 1-based (0 only for errors with no position).
    let column = err.column().max(1);
    let message = err.to_string();
    // Drop serde's own " at line 1 column N" suffix: the position is ours to report.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    ParseError::at(line, column, message)
}

fn fill_defaults(item: &mut TelemetryItem, ctx: &SourceContext, line: &str) {
    match &mut item.kind {
        Some(telemetry_item::Kind::Event(event)) => {
            if event.event_id.is_empty() {
                event.event_id = stable_event_id("file_import", &[&ctx.device_id, line.trim()]);
            }
            if event.agent_id.is_empty() {
                event.agent_id.clone_from(&ctx.agent_id);
            }
            if event.device_id.is_empty() {
                event.device_id.clone_from(&ctx.device_id);
            }
            if event.platform == Platform::Unspecified as i32 {
                event.platform = ctx.platform as i32;
            }
            let source = event.source.get_or_insert_with(Source::default);
            if source.kind == SourceKind::Unspecified as i32 {
                source.kind = SourceKind::FileImport as i32;
            }
        }
        Some(telemetry_item::Kind::State(state)) => {
            if state.agent_id.is_empty() {
                state.agent_id.clone_from(&ctx.agent_id);
            }
            if state.device_id.is_empty() {
                state.device_id.clone_from(&ctx.device_id);
            }
            if state.platform == Platform::Unspecified as i32 {
                state.platform = ctx.platform as i32;
            }
        }
        Some(telemetry_item::Kind::Heartbeat(heartbeat)) => {
            if heartbeat.agent_id.is_empty() {
                heartbeat.agent_id.clone_from(&ctx.agent_id);
            }
            if heartbeat.device_id.is_empty() {
                heartbeat.device_id.clone_from(&ctx.device_id);
            }
        }
        None => {}
    }
}
