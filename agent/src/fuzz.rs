//! Fuzz target bodies for every agent source parser and the NDJSON import, as plain functions
//! so they run on stable: the seed-corpus replay test (`tests/tests/fuzz_corpus.rs`) and the
//! coverage-guided targets under `fuzz/` call the same code.
//!
//! Input is raw bytes as a tool or a file would give them: they go through
//! [`crate::inspect::parse_bytes`] (text decoding, then the source's parser) exactly as
//! `fleetpulse-agent inspect` and the collection loop read them. The bodies panic when an
//! invariant breaks: a parser crash, an error pointing outside the input, or, for the source
//! parsers, a message beyond the protocol's field limits (the collector would reject what the
//! agent produced: the sources promise to apply the limits themselves).

use fleetpulse_proto::v1::{Platform, TelemetryItem, telemetry_item::Kind};
use time::OffsetDateTime;

use crate::inspect::{InputKind, parse_bytes};
use crate::sources::{
    MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_ATTRIBUTES, MAX_CHANNEL_BYTES,
    MAX_ERROR_MESSAGE_BYTES, MAX_MANUFACTURER_BYTES, MAX_MESSAGE_BYTES, MAX_SYMBOL_BYTES,
    MAX_UPN_BYTES, SourceContext,
};

/// `dsregcmd /status` output.
pub fn dsregcmd(data: &[u8]) {
    source(InputKind::Dsregcmd, data);
}

/// Event log exports (wevtutil XML) and Event Viewer text renderings.
pub fn event_log(data: &[u8]) {
    source(InputKind::EventXml, data);
}

/// `reg query` output and `.reg` exports.
pub fn registry(data: &[u8]) {
    source(InputKind::Registry, data);
}

/// `tpmtool getdeviceinformation` and `Get-Tpm` output.
pub fn tpm(data: &[u8]) {
    source(InputKind::Tpm, data);
}

/// `MDMDiagReport.xml` of `MdmDiagnosticsTool.exe` (whole or a section).
pub fn mdm_diagnostics(data: &[u8]) {
    source(InputKind::MdmDiagnostics, data);
}

/// `profiles status` / `profiles show` output (macOS).
pub fn macos_profiles(data: &[u8]) {
    source(InputKind::MacosProfiles, data);
}

/// NDJSON import of telemetry in the proto3 JSON mapping.
pub fn ndjson(data: &[u8]) {
    source(InputKind::Ndjson, data);
}

fn context() -> SourceContext {
    SourceContext {
        agent_id: "fuzz-agent".into(),
        device_id: "fuzz-device".into(),
        platform: Platform::Windows,
        // 2024-06-01T00:00:00Z: fuzz runs must be reproducible.
        now: OffsetDateTime::from_unix_timestamp(1_717_200_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

fn source(kind: InputKind, data: &[u8]) {
    let ctx = context();
    match parse_bytes(kind, &ctx, data) {
        Ok(parsed) => {
            if kind != InputKind::Ndjson {
                for item in &parsed.items {
                    within_protocol_limits(kind, item);
                }
            }
        }
        Err(e) => {
            // Lines are counted in the decoded text, which has at most one line per input
            // byte (UTF-16 halves that), plus the line after a trailing newline.
            assert!(
                e.line >= 1 && e.line <= data.len() + 1,
                "{kind:?}: error at line {} of a {}-byte input: {e}",
                e.line,
                data.len()
            );
            assert!(!e.message.is_empty(), "{kind:?}: error without a reason");
            assert!(
                e.message.len() <= MAX_ERROR_MESSAGE_BYTES,
                "{kind:?}: error message of {} bytes",
                e.message.len()
            );
        }
    }
}

fn attributes_ok(kind: InputKind, attributes: &std::collections::HashMap<String, String>) {
    assert!(
        attributes.len() <= MAX_ATTRIBUTES,
        "{kind:?}: {} attributes",
        attributes.len()
    );
    for (k, v) in attributes {
        assert!(
            !k.is_empty() && k.len() <= MAX_ATTRIBUTE_KEY_BYTES,
            "{kind:?}: attribute key of {} bytes",
            k.len()
        );
        assert!(
            v.len() <= MAX_ATTRIBUTE_VALUE_BYTES,
            "{kind:?}: attribute {k} of {} bytes",
            v.len()
        );
    }
}

fn within_protocol_limits(kind: InputKind, item: &TelemetryItem) {
    match &item.kind {
        Some(Kind::Event(e)) => {
            attributes_ok(kind, &e.attributes);
            assert!(!e.event_id.is_empty(), "{kind:?}: event without an id");
            assert!(
                e.user_principal_name.len() <= MAX_UPN_BYTES,
                "{kind:?}: UPN"
            );
            if let Some(err) = &e.error {
                assert!(err.symbol.len() <= MAX_SYMBOL_BYTES, "{kind:?}: symbol");
                assert!(err.message.len() <= MAX_MESSAGE_BYTES, "{kind:?}: message");
            }
            if let Some(src) = &e.source {
                assert!(src.channel.len() <= MAX_CHANNEL_BYTES, "{kind:?}: channel");
            }
        }
        Some(Kind::State(s)) => {
            attributes_ok(kind, &s.attributes);
            assert!(s.primary_user_upn.len() <= MAX_UPN_BYTES, "{kind:?}: UPN");
            if let Some(tpm) = &s.tpm {
                assert!(
                    tpm.manufacturer.len() <= MAX_MANUFACTURER_BYTES,
                    "{kind:?}: TPM manufacturer"
                );
            }
            if let Some(err) = &s.last_enrollment_error {
                assert!(err.symbol.len() <= MAX_SYMBOL_BYTES, "{kind:?}: symbol");
                assert!(err.message.len() <= MAX_MESSAGE_BYTES, "{kind:?}: message");
            }
        }
        Some(Kind::Heartbeat(_)) | None => {}
    }
}
