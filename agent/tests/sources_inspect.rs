//! `inspect`: output format, input from a file, errors as FILE:line:col.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::{InputKind, InspectError, run};
use support::{args, fixture_path};

#[test]
fn prints_one_compact_json_object_per_message_with_sorted_attributes() {
    let out =
        support::inspect(InputKind::MacosProfiles, "macos_profiles_status.txt").expect("runs");
    assert_eq!(
        out,
        concat!(
            r#"{"state":{"agentId":"agent-1","attributes":{"enrolled_via_dep":"No","mdm_enrollment":"Yes (User Approved)","user_approved":"yes"},"#,
            r#""capturedAt":"2024-06-01T00:00:00+00:00","deviceId":"dev-1","#,
            r#""mdmEnrolled":true,"mdmUrl":"https://example.com/mdm/ServerURL","platform":"PLATFORM_MACOS"}}"#,
            "\n"
        )
    );
}

#[test]
fn every_output_line_is_a_telemetry_item_again() {
    for (kind, name) in [
        (InputKind::Dsregcmd, "dsregcmd_prt_failure.txt"),
        (InputKind::EventXml, "event_dm_admin_wevtutil.xml"),
        (InputKind::Registry, "registry_enrollments.txt"),
        (InputKind::Tpm, "get_tpm.txt"),
        (InputKind::MdmDiagnostics, "mdm_diag_report.xml"),
    ] {
        let out = support::inspect(kind, name).expect("runs");
        // The output is valid NDJSON import input: it round-trips through the ndjson parser.
        let reparsed =
            fleetpulse_agent::sources::ndjson::parse(&out, &support::ctx()).expect("reparses");
        let original = fleetpulse_agent::inspect::parse_bytes(
            kind,
            &support::ctx(),
            &support::fixture_bytes(name),
        )
        .expect("parses");
        assert_eq!(reparsed, original, "{name}");
    }
}

#[test]
fn bad_input_reports_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("status.txt");
    std::fs::write(&path, "\n+-----+\n| Device State |\n+-----+\n  garbage\n").expect("write");
    let mut out = Vec::new();
    let err = run(&args(InputKind::Dsregcmd, path.clone()), &mut out).expect_err("rejects");
    assert!(matches!(err, InspectError::Parse { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}:6:1: no dsregcmd fields found (expected \"AzureAdJoined : YES\" under a \"| Device State |\" banner)",
            path.display()
        )
    );
    assert!(out.is_empty(), "nothing printed for a bad input");

    std::fs::write(&path, "{\"stage\": 3,\n").expect("write");
    let err = run(&args(InputKind::Ndjson, path.clone()), &mut out).expect_err("rejects");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:1:", path.display())),
        "{err}"
    );
}

#[test]
fn missing_file_and_bad_flags_are_clear() {
    let missing = fixture_path("does-not-exist.txt");
    let err = run(&args(InputKind::Tpm, missing.clone()), &mut Vec::new()).expect_err("rejects");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display())),
        "{err}"
    );

    let mut bad_now = args(InputKind::Tpm, fixture_path("get_tpm.txt"));
    bad_now.now = Some("yesterday".to_owned());
    let err = run(&bad_now, &mut Vec::new()).expect_err("rejects");
    assert!(
        err.to_string()
            .starts_with("--now: \"yesterday\" is not an RFC 3339 time"),
        "{err}"
    );

    let mut no_device = args(InputKind::Tpm, fixture_path("get_tpm.txt"));
    no_device.device_id = String::new();
    let err = run(&no_device, &mut Vec::new()).expect_err("rejects");
    assert_eq!(
        err.to_string(),
        "--device-id must be 1..=128 bytes, got 0 bytes"
    );
}
