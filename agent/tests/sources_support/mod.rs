//! Shared helpers of the `sources_*` tests: a fixed context, fixture loading and the golden
//! comparison through `inspect` (which is what an administrator sees).
#![allow(dead_code)]

use std::path::PathBuf;

use fleetpulse_agent::inspect::{InputKind, InspectArgs};
use fleetpulse_agent::sources::{SourceContext, decode_text};
use fleetpulse_proto::v1::Platform;

pub const NOW: &str = "2024-06-01T00:00:00Z";

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|err| panic!("reading fixture {name}: {err}"))
}

/// A fixture decoded as the agent decodes tool output.
pub fn fixture(name: &str) -> String {
    decode_text(&fixture_bytes(name)).unwrap_or_else(|err| panic!("decoding fixture {name}: {err}"))
}

pub fn ctx() -> SourceContext {
    SourceContext {
        agent_id: "agent-1".to_owned(),
        device_id: "dev-1".to_owned(),
        platform: Platform::Windows,
        now: time::macros::datetime!(2024-06-01 00:00:00 UTC),
    }
}

pub fn args(kind: InputKind, file: PathBuf) -> InspectArgs {
    InspectArgs {
        kind,
        file,
        device_id: "dev-1".to_owned(),
        agent_id: "agent-1".to_owned(),
        now: Some(NOW.to_owned()),
    }
}

/// Runs `inspect` on a fixture and returns its stdout.
pub fn inspect(kind: InputKind, name: &str) -> Result<String, String> {
    let mut out = Vec::new();
    fleetpulse_agent::inspect::run(&args(kind, fixture_path(name)), &mut out)
        .map_err(|err| err.to_string())?;
    String::from_utf8(out).map_err(|err| err.to_string())
}

/// Asserts that `inspect` prints exactly the golden file `<fixture stem>.expected.ndjson`.
pub fn assert_golden(kind: InputKind, name: &str) {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let expected = String::from_utf8(fixture_bytes(&format!("{stem}.expected.ndjson")))
        .expect("golden is UTF-8");
    let actual = inspect(kind, name).unwrap_or_else(|err| panic!("inspect {name}: {err}"));
    assert_eq!(
        actual, expected,
        "inspect output of {name} differs from its golden file"
    );
}
