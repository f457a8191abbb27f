//! macOS `profiles status/show -type enrollment` parser.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::ParseError;
use fleetpulse_agent::sources::macos_profiles::{self, parse_status};
use fleetpulse_proto::v1::{EnrollmentMethod, Platform};
use support::{ctx, fixture};

#[test]
fn user_approved_status_matches_golden() {
    support::assert_golden(InputKind::MacosProfiles, "macos_profiles_status.txt");
}

#[test]
fn ade_status_with_dep_record_matches_golden() {
    support::assert_golden(InputKind::MacosProfiles, "macos_profiles_dep.txt");
}

#[test]
fn enrollment_method_follows_dep_flag() {
    let user =
        macos_profiles::parse(&fixture("macos_profiles_status.txt"), &ctx()).expect("parses");
    let state = user.states().next().expect("snapshot");
    assert_eq!(state.platform, Platform::Macos as i32);
    assert!(state.mdm_enrolled);
    // Enrolled, not via DEP: profile-based or User Enrollment, `profiles` cannot tell.
    assert_eq!(
        state.enrollment_method,
        EnrollmentMethod::Unspecified as i32
    );
    assert_eq!(state.mdm_url, "https://example.com/mdm/ServerURL");

    let ade = macos_profiles::parse(&fixture("macos_profiles_dep.txt"), &ctx()).expect("parses");
    let state = ade.states().next().expect("snapshot");
    assert_eq!(state.enrollment_method, EnrollmentMethod::AppleAde as i32);
    assert_eq!(
        state
            .attributes
            .get("dep.organization_name")
            .map(String::as_str),
        Some("Contoso Ltd")
    );
    assert_eq!(
        state
            .attributes
            .get("dep.is_supervised")
            .map(String::as_str),
        Some("1")
    );
}

#[test]
fn dep_record_skips_nested_lists() {
    let status = parse_status(&fixture("macos_profiles_dep.txt")).expect("parses");
    assert_eq!(
        status
            .dep_record
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        [
            "AllowPairing",
            "AwaitDeviceConfigured",
            "ConfigurationURL",
            "IsMDMUnremovable",
            "IsMandatory",
            "IsSupervised",
            "OrganizationAddress",
            "OrganizationDepartment",
            "OrganizationEmail",
            "OrganizationMagic",
            "OrganizationName",
            "OrganizationPhone",
        ]
    );
}

#[test]
fn not_enrolled_mac() {
    let text = "Enrolled via DEP: No\nMDM enrollment: No\nError fetching Device Enrollment configuration: Client is not DEP enabled.\n";
    let parsed = macos_profiles::parse(text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert!(!state.mdm_enrolled);
    assert_eq!(state.mdm_url, "");
    assert_eq!(
        state.enrollment_method,
        EnrollmentMethod::Unspecified as i32
    );
    assert_eq!(
        state.attributes.get("dep_error").map(String::as_str),
        Some("Client is not DEP enabled.")
    );
}

#[test]
fn unknown_lines_are_skipped_and_foreign_input_is_rejected() {
    assert_eq!(
        parse_status("Enrolled via DEP: No\n"),
        Err(ParseError::at_line(
            2,
            "missing \"MDM enrollment:\" line (expected `profiles status -type enrollment` output; truncated?)"
        ))
    );
    let garbage = parse_status("MDM enrollment: Yes\ngarbage line\n").expect("parses");
    assert_eq!(garbage.skipped.first, Some((2, "garbage line".to_owned())));
    let cut = parse_status(
        "MDM enrollment: Yes\nDevice Enrollment configuration:\n{\n    IsSupervised = 1;\n",
    )
    .expect("keeps the record read so far");
    assert_eq!(
        cut.dep_record,
        vec![("IsSupervised".to_owned(), "1".to_owned())]
    );
    assert_eq!(cut.skipped.count, 1);
}

#[test]
fn dep_fetch_errors_keep_message_and_code_whatever_the_separator() {
    let mut macos = ctx();
    macos.platform = Platform::Macos;
    for (text, error, code) in [
        (
            "Error fetching Device Enrollment configuration: (34000) Client is not DEP enabled.\n",
            "(34000) Client is not DEP enabled.",
            Some("34000"),
        ),
        (
            "Error fetching Device Enrollment configuration - Request too soon.  Try again later.\n",
            "Request too soon.  Try again later.",
            None,
        ),
    ] {
        let status = parse_status(text).expect("a fetch error is a reading, not a refusal");
        assert_eq!(status.dep_error.as_deref(), Some(error));
        let parsed = macos_profiles::parse(text, &macos).expect("parses");
        let state = parsed.states().next().expect("snapshot");
        assert_eq!(
            state.attributes.get("dep_error_code").map(String::as_str),
            code
        );
        assert_eq!(
            state.enrollment_method,
            EnrollmentMethod::Unspecified as i32
        );
        assert_eq!(parsed.events().count(), 0);
    }
}
