//! `reg query HKLM\SOFTWARE\Microsoft\Enrollments /s` parser.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::ParseError;
use fleetpulse_agent::sources::registry::{self, enrollment_state_name, enrollments, parse_keys};
use fleetpulse_proto::v1::{EnrollmentStage, Outcome};
use support::{ctx, fixture};

#[test]
fn enrollments_sample_matches_golden() {
    support::assert_golden(InputKind::Registry, "registry_enrollments.txt");
}

#[test]
fn keys_values_and_enrollments_are_read_exactly() {
    let keys = parse_keys(&fixture("registry_enrollments.txt")).expect("parses");
    assert_eq!(keys.len(), 8);
    let first = &keys[1];
    assert_eq!(
        first.path,
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Enrollments\4A9EAC9B-04E6-4BD2-9B05-2C18DDDAC8D3"
    );
    assert_eq!(first.value("ProviderID"), Some("MS DM Server"));
    assert_eq!(first.value("EnrollmentState"), Some("0x1"));
    assert_eq!(keys[7].values[0].name, "(Default)");
    assert_eq!(keys[7].values[0].data, "");

    let found = enrollments(&keys).expect("enrollments");
    assert_eq!(
        found
            .iter()
            .map(|e| (e.guid.as_str(), e.state))
            .collect::<Vec<_>>(),
        [
            ("4A9EAC9B-04E6-4BD2-9B05-2C18DDDAC8D3", Some(1)),
            ("7E1F22AB-91C4-4B5E-A3A0-6B8D7F0C1E22", Some(3)),
            ("C0A3B0E2-7F7A-4B6C-9F0D-1A2B3C4D5E6F", Some(1)),
        ]
    );
    assert_eq!(
        (0..=6).map(enrollment_state_name).collect::<Vec<_>>(),
        [
            "unknown",
            "enrolled",
            "pending_reset",
            "failed",
            "not_contacted",
            "blocked",
            "unrecognized"
        ]
    );
}

#[test]
fn failed_enrollment_state_becomes_a_failed_event_and_enrolled_one_the_snapshot() {
    let parsed = registry::parse(&fixture("registry_enrollments.txt"), &ctx()).expect("parses");
    let events: Vec<_> = parsed.events().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, Outcome::Failed as i32);
    assert_eq!(events[0].stage, EnrollmentStage::Complete as i32);
    assert_eq!(
        events[0]
            .attributes
            .get("enrollment_state")
            .map(String::as_str),
        Some("3")
    );
    let state = parsed.states().next().expect("snapshot");
    assert!(state.mdm_enrolled);
    assert_eq!(state.primary_user_upn, "joe@contoso.com");
    assert_eq!(
        state.mdm_url,
        "https://enrollment.manage.microsoft.com/enrollmentserver/discovery.svc"
    );
}

#[test]
fn no_mdm_enrollment_means_not_enrolled_and_empty_url() {
    let text = "\r\nHKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Enrollments\r\n    ExternallyManaged    REG_DWORD    0x0\r\n";
    let parsed = registry::parse(text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert!(!state.mdm_enrolled);
    assert_eq!(state.mdm_url, "");
    assert_eq!(
        state.attributes.get("enrollment_count").map(String::as_str),
        Some("0")
    );
}

#[test]
fn unknown_lines_are_skipped_and_foreign_input_is_rejected() {
    assert_eq!(
        parse_keys("    EnrollmentState    REG_DWORD    0x1\n"),
        Err(ParseError::at_line(
            1,
            "no registry keys found (expected `reg query ... /s` output, found \"EnrollmentState    REG_DWORD    0x1\" on line 1)"
        ))
    );
    let cut = parse_keys("HKEY_LOCAL_MACHINE\\X\n    EnrollmentSta").expect("keeps the key");
    assert_eq!(cut.len(), 1);
    assert!(cut[0].values.is_empty());
    assert_eq!(
        parse_keys(""),
        Err(ParseError::at_line(
            1,
            "no registry keys found (expected `reg query ... /s` output)"
        ))
    );
    // A state that is not a number establishes nothing: no failure event, raw value kept.
    let bad_state = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Enrollments\\4A9EAC9B-04E6-4BD2-9B05-2C18DDDAC8D3\n    EnrollmentState    REG_SZ    soon\nEnde der Suche: 1 Übereinstimmung(en) gefunden.\n";
    let parsed = registry::parse(bad_state, &ctx()).expect("parses");
    assert_eq!(parsed.events().count(), 0);
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(
        state
            .attributes
            .get("parse.skipped_lines")
            .map(String::as_str),
        Some("1")
    );
}
