//! `dsregcmd /status` parser: documented samples, one test per quirk, bad input.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::dsregcmd::{self, TestResult, parse_status, parse_test_result};
use fleetpulse_agent::sources::{ParseError, decode_text};
use fleetpulse_proto::v1::{EnrollmentStage, JoinState, Outcome, ReportedError, TpmInfo};
use support::{ctx, fixture, fixture_bytes};

const BANNER: &str = "+----------------------------------------------------------------------+";

/// A minimal dsregcmd output with one section holding `lines`.
fn section(name: &str, lines: &str) -> String {
    format!("\n{BANNER}\n| {name:<69}|\n{BANNER}\n\n{lines}\n")
}

#[test]
fn failed_sync_join_sample_matches_golden() {
    support::assert_golden(InputKind::Dsregcmd, "dsregcmd_failed_sync_join.txt");
}

#[test]
fn discovery_failure_sample_matches_golden() {
    support::assert_golden(InputKind::Dsregcmd, "dsregcmd_discovery_failure.txt");
}

#[test]
fn prt_failure_sample_matches_golden() {
    support::assert_golden(InputKind::Dsregcmd, "dsregcmd_prt_failure.txt");
}

#[test]
fn entra_joined_sample_matches_golden() {
    support::assert_golden(InputKind::Dsregcmd, "dsregcmd_entra_joined.txt");
}

#[test]
fn failed_sync_join_is_typed_exactly() {
    let status = parse_status(&fixture("dsregcmd_failed_sync_join.txt")).expect("parses");
    assert_eq!(
        status
            .sections
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        [
            "Device State",
            "User State",
            "SSO State",
            "Diagnostic Data",
            "IE Proxy Config for Current User",
            "WinHttp Default Proxy Config",
            "Ngc Prerequisite Check"
        ]
    );
    let d = &status.diagnostics;
    assert_eq!(d.client_error_code.as_deref(), Some("0x801c03f2"));
    assert_eq!(d.server_error_code.as_deref(), Some("DirectoryError"));
    assert_eq!(d.error_phase.as_deref(), Some("join"));
    assert_eq!(d.registration_type.as_deref(), Some("sync"));
    assert_eq!(d.https_status.as_deref(), Some("400"));
    assert_eq!(
        d.previous_registration.as_deref(),
        Some("2019-01-31 09:16:43.000 UTC")
    );
    assert_eq!(status.join_state(), JoinState::DomainJoined);

    let parsed =
        dsregcmd::parse(&fixture("dsregcmd_failed_sync_join.txt"), &ctx()).expect("parses");
    let events: Vec<_> = parsed.events().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stage, EnrollmentStage::DeviceRegistration as i32);
    assert_eq!(events[0].outcome, Outcome::Failed as i32);
    assert_eq!(
        events[0].error,
        Some(ReportedError {
            code: 0x801c_03f2,
            has_code: true,
            symbol: "DirectoryError".to_owned(),
            message: "The device object by the given id (e92325d0-7ac4-4714-88a1-94ae875d5245) isn't found."
                .to_owned(),
        })
    );
    assert_eq!(
        events[0].occurred_at.as_ref().map(|t| t.seconds),
        Some(1_548_926_203)
    );
}

#[test]
fn quirk_banners_delimit_sections_and_a_cut_banner_is_tolerated() {
    let text = format!(
        "{}{}",
        section("Device State", "  AzureAdJoined : YES"),
        section("Tenant Details", "  TenantId : t-1")
    );
    let status = parse_status(&text).expect("parses");
    assert_eq!(status.sections.len(), 2);
    assert_eq!(status.sections[1].name, "Tenant Details");
    assert_eq!(status.sections[1].line, 9);
    assert_eq!(status.tenant_details.tenant_id.as_deref(), Some("t-1"));

    // A banner cut short (no closing rule, no closing bar) still opens its section.
    let cut = format!("\n{BANNER}\n| Device State\n  AzureAdJoined : YES\n");
    let status = parse_status(&cut).expect("parses");
    assert_eq!(status.sections[0].name, "Device State");
    assert_eq!(status.device_state.azure_ad_joined.as_deref(), Some("YES"));
    // A banner with nothing after it holds no device state: that is an error.
    let cut = format!("\n{BANNER}\n| Device State |");
    assert_eq!(
        parse_status(&cut),
        Err(ParseError::at_line(
            3,
            "no dsregcmd fields found (expected \"AzureAdJoined : YES\" under a \"| Device State |\" banner)"
        ))
    );
}

#[test]
fn quirk_keys_with_spaces() {
    let status = parse_status(&section(
        "Diagnostic Data",
        "      AD Connectivity Test : PASS\n    Token acquisition Test : SKIPPED\n      Previous Prt Attempt : x\n    Brand New Field : y",
    ))
    .expect("parses");
    assert_eq!(
        status.diagnostics.ad_connectivity_test.as_deref(),
        Some("PASS")
    );
    assert_eq!(
        status.diagnostics.token_acquisition_test.as_deref(),
        Some("SKIPPED")
    );
    // "Previous Prt Attempt" belongs to SSO State; printed elsewhere (older layouts do) it
    // still lands there. A key nobody knows is kept as an unknown field.
    assert_eq!(status.sso_state.previous_prt_attempt.as_deref(), Some("x"));
    assert_eq!(status.unknown.len(), 1);
    assert_eq!(status.unknown[0].field.key, "Brand New Field");
}

#[test]
fn quirk_varying_case_of_keys() {
    let upper = parse_status(&section("SSO State", "  HTTP Status : 401")).expect("parses");
    let lower = parse_status(&section("SSO State", "  HTTP status : 401")).expect("parses");
    assert_eq!(upper.sso_state.http_status.as_deref(), Some("401"));
    assert_eq!(lower.sso_state.http_status.as_deref(), Some("401"));
    let https = parse_status(&section("Diagnostic Data", "  Https Status : 400")).expect("parses");
    assert_eq!(https.diagnostics.https_status.as_deref(), Some("400"));
    let yes = parse_status(&section(
        "Device State",
        "  AzureAdJoined : Yes\n  DomainJoined : no",
    ))
    .expect("parses");
    assert_eq!(yes.join_state(), JoinState::EntraJoined);
}

#[test]
fn quirk_no_space_before_colon() {
    let status = parse_status(&section(
        "Diagnostic Data",
        "        AadRecoveryEnabled: NO",
    ))
    .expect("parses");
    assert_eq!(
        status.diagnostics.aad_recovery_enabled.as_deref(),
        Some("NO")
    );
}

#[test]
fn quirk_empty_values() {
    let status = parse_status(&section(
        "Tenant Details",
        "  MdmUrl :\n  MdmTouUrl : \n  TenantId : t",
    ))
    .expect("parses");
    assert_eq!(status.tenant_details.mdm_url.as_deref(), Some(""));
    assert_eq!(status.tenant_details.mdm_tou_url.as_deref(), Some(""));
    let parsed = dsregcmd::parse(&section("Tenant Details", "  MdmUrl :"), &ctx()).expect("parses");
    assert_eq!(parsed.states().next().map(|s| s.mdm_url.as_str()), Some(""));
}

#[test]
fn quirk_values_containing_colons() {
    let status = parse_status(&section(
        "Tenant Details",
        "  MdmUrl : https://enrollment.manage.microsoft.com:443/EnrollmentServer/Discovery.svc\n  SettingsUrl : a : b : c",
    ))
    .expect("parses");
    assert_eq!(
        status.tenant_details.mdm_url.as_deref(),
        Some("https://enrollment.manage.microsoft.com:443/EnrollmentServer/Discovery.svc")
    );
    assert_eq!(
        status.tenant_details.settings_url.as_deref(),
        Some("a : b : c")
    );
    let times = parse_status(&section(
        "Diagnostic Data",
        "  Client Time : 2019-01-31 09:16:50.000 UTC",
    ))
    .expect("parses");
    assert_eq!(
        times.diagnostics.client_time.as_deref(),
        Some("2019-01-31 09:16:50.000 UTC")
    );
}

#[test]
fn quirk_crlf_line_endings() {
    let lf = fixture("dsregcmd_failed_sync_join.txt");
    let crlf = lf.replace('\n', "\r\n");
    assert_eq!(parse_status(&crlf), parse_status(&lf));
    assert_eq!(
        parse_status(&crlf)
            .expect("parses")
            .device_state
            .device_name
            .as_deref(),
        Some("DESKTOP-7GN2K1.contoso.com")
    );
}

#[test]
fn quirk_utf16le_with_bom_as_powershell_redirects_it() {
    let bytes = fixture_bytes("dsregcmd_failed_sync_join.utf16le.txt");
    assert_eq!(&bytes[..2], &[0xFF, 0xFE]);
    let utf16 = decode_text(&bytes).expect("decodes");
    let utf8 = fixture("dsregcmd_failed_sync_join.txt");
    assert_eq!(
        dsregcmd::parse(&utf16, &ctx()),
        dsregcmd::parse(&utf8, &ctx())
    );
    // inspect reads the UTF-16 file directly and prints the same as for the UTF-8 one.
    assert_eq!(
        support::inspect(InputKind::Dsregcmd, "dsregcmd_failed_sync_join.utf16le.txt"),
        support::inspect(InputKind::Dsregcmd, "dsregcmd_failed_sync_join.txt")
    );
}

#[test]
fn quirk_unknown_keys_are_kept_in_attributes() {
    let text = section(
        "Device State",
        "  AzureAdJoined : NO\n  Brand New Field : 42",
    ) + &section(
        "Work Account 1",
        "  WorkplaceTenantName : Fabrikam\n  WorkplaceBrandNew : 7",
    );
    let parsed = dsregcmd::parse(&text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("one snapshot");
    assert_eq!(
        state
            .attributes
            .get("device_state.brand_new_field")
            .map(String::as_str),
        Some("42")
    );
    assert_eq!(
        state
            .attributes
            .get("work_account_1.workplace_brand_new")
            .map(String::as_str),
        Some("7")
    );
    // A known Work Account key is typed, not left unknown.
    assert_eq!(
        state.attributes.get("tenant_name").map(String::as_str),
        Some("Fabrikam")
    );
}

#[test]
fn quirk_fail_test_results_carry_error_and_suberror() {
    assert_eq!(
        parse_test_result("FAIL [0x801c0021/0x80072ee2]"),
        TestResult::Fail {
            error: Some(0x801c_0021),
            sub_error: Some(0x8007_2ee2)
        }
    );
    assert_eq!(
        parse_test_result("FAIL"),
        TestResult::Fail {
            error: None,
            sub_error: None
        }
    );
    assert_eq!(parse_test_result("PASS"), TestResult::Pass);
    assert_eq!(parse_test_result("SKIPPED"), TestResult::Skipped);
    let parsed =
        dsregcmd::parse(&fixture("dsregcmd_discovery_failure.txt"), &ctx()).expect("parses");
    let test_event = parsed.events().nth(1).expect("test failure event");
    assert_eq!(test_event.stage, EnrollmentStage::Discovery as i32);
    assert_eq!(test_event.error.as_ref().map(|e| e.code), Some(0x801c_0021));
    assert_eq!(
        test_event
            .attributes
            .get("sub_error_code")
            .map(String::as_str),
        Some("0x80072ee2")
    );
}

#[test]
fn device_auth_failed_and_prt_failure_become_events() {
    let parsed = dsregcmd::parse(&fixture("dsregcmd_prt_failure.txt"), &ctx()).expect("parses");
    let events: Vec<_> = parsed.events().collect();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].error.as_ref().map(|e| e.message.as_str()),
        Some("FAILED. Device is either disabled or deleted")
    );
    assert_eq!(
        events[1]
            .error
            .as_ref()
            .map(|e| (e.code, e.symbol.as_str())),
        Some((0xc000_006d, "invalid_grant"))
    );
    assert_eq!(events[1].user_principal_name, "john@contoso.com");
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(state.join_state, JoinState::HybridJoined as i32);
    assert_eq!(state.tpm, None);
}

#[test]
fn tpm_protected_and_tenant_details_fill_the_snapshot() {
    let parsed = dsregcmd::parse(&fixture("dsregcmd_entra_joined.txt"), &ctx()).expect("parses");
    assert_eq!(parsed.events().count(), 0);
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(
        state.tpm,
        Some(TpmInfo {
            present: true,
            ..Default::default()
        })
    );
    assert_eq!(
        state.entra_tenant_id,
        "72b988bf-86f1-41af-91ab-2d7cd011db47"
    );
    assert_eq!(
        state.mdm_url,
        "https://enrollment.manage.microsoft.com/EnrollmentServer/Discovery.svc"
    );
    assert_eq!(state.device_name, "CONTOSO-LT-0042");
}

#[test]
fn work_account_section_gives_the_tenant_device_and_mdm_url_of_a_registered_device() {
    let text = section(
        "Device State",
        "             AzureAdJoined : NO\n              DomainJoined : NO",
    ) + &section(
        "User State",
        "           WorkplaceJoined : YES\n          WorkAccountCount : 2",
    ) + &section(
        "Work Account 1",
        "         WorkplaceDeviceId : a011becc-6f67-4413-831f-b8deeef8e2ff\n\
             \x20             TpmProtected : YES\n\
             \x20        WorkplaceTenantId : 028226e0-99ea-4fab-9d1b-daa440c9e286\n\
             \x20      WorkplaceTenantName : Contoso\n\
             \x20          WorkplaceMdmUrl : https://enrollment.manage.microsoft.com/enrollmentserver/discovery.svc",
    ) + &section(
        "Work Account 2",
        "         WorkplaceTenantId : 11111111-2222-3333-4444-555555555555",
    );
    let parsed = dsregcmd::parse(&text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(state.join_state, JoinState::WorkplaceRegistered as i32);
    // The first work account is typed; the second stays an attribute.
    assert_eq!(
        state.entra_tenant_id,
        "028226e0-99ea-4fab-9d1b-daa440c9e286"
    );
    assert_eq!(
        state.mdm_url,
        "https://enrollment.manage.microsoft.com/enrollmentserver/discovery.svc"
    );
    assert_eq!(
        state.attributes.get("entra_device_id").map(String::as_str),
        Some("a011becc-6f67-4413-831f-b8deeef8e2ff")
    );
    assert_eq!(
        state.attributes.get("tenant_name").map(String::as_str),
        Some("Contoso")
    );
    assert_eq!(
        state
            .attributes
            .get("work_account_2.workplace_tenant_id")
            .map(String::as_str),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert!(state.tpm.as_ref().is_some_and(|t| t.present));
}

#[test]
fn masked_or_shortened_ids_are_kept_as_printed_but_never_typed() {
    let text = section(
        "Device State",
        "             AzureAdJoined : YES\n              DomainJoined : NO",
    ) + &section(
        "Device Details",
        "                  DeviceId : 94300356f6eaf797",
    ) + &section(
        "Tenant Details",
        "                  TenantId : xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
    );
    let parsed = dsregcmd::parse(&text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(state.entra_tenant_id, "");
    assert_eq!(state.attributes.get("entra_device_id"), None);
    assert_eq!(
        state
            .attributes
            .get("entra_device_id_as_printed")
            .map(String::as_str),
        Some("94300356f6eaf797")
    );
    assert_eq!(
        state
            .attributes
            .get("entra_tenant_id_as_printed")
            .map(String::as_str),
        Some("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
    );
    assert!(dsregcmd::is_guid("C5FF949D-2696-4b68-9e13-055f19ed2d51"));
    assert!(!dsregcmd::is_guid("c5ff949d-2696-4b68-9e13-055f19ed2d5"));
}

#[test]
fn a_line_wrapped_by_a_narrow_console_continues_the_value_above() {
    let long = "    Auto Detect PAC Status : Failed to auto detect the Proxy Auto-Configuration (PAC) script u";
    let text = section("Device State", "             AzureAdJoined : NO")
        + &section(
            "URL Specific Proxy Config",
            &format!(
                "{long}\nsing WPAD. code: 0x80072f94\n\n    Executing Account Name : RCMLAB\\S$"
            ),
        );
    let status = parse_status(&text).expect("parses");
    let fields = &status.sections[1].fields;
    assert_eq!(fields.len(), 2);
    assert_eq!(
        fields[0].value,
        "Failed to auto detect the Proxy Auto-Configuration (PAC) script using WPAD. code: 0x80072f94"
    );
    assert_eq!(status.skipped.count, 0);
    // A flush-left known field after a long line is a field, not a continuation.
    let flush = format!(
        "{}\nAzureAdPrt : NO\n",
        "AzureAdPrtAuthority : https://login.microsoftonline.com/96fa76d0-0000-0000-0000-eb60cc220000/x"
    );
    let status = parse_status(&flush).expect("parses");
    assert_eq!(status.sso_state.azure_ad_prt.as_deref(), Some("NO"));
}

#[test]
fn device_auth_failure_carries_the_code_printed_in_its_value() {
    let text = "DeviceAuthStatus : FAILED. Error: 0xd000023c\n";
    let parsed = dsregcmd::parse(text, &ctx()).expect("parses");
    let events: Vec<_> = parsed.events().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stage, EnrollmentStage::Authentication as i32);
    assert_eq!(
        events[0].error.as_ref().map(|e| (e.has_code, e.code)),
        Some((true, 0xd000_023c))
    );
}

#[test]
fn entra_and_domain_joined_is_hybrid_even_when_enterprise_joined() {
    let state_of = |azure: &str, enterprise: &str, domain: &str| {
        let text = section(
            "Device State",
            &format!(
                "             AzureAdJoined : {azure}\n          EnterpriseJoined : {enterprise}\n              DomainJoined : {domain}"
            ),
        );
        dsregcmd::parse(&text, &ctx())
            .expect("parses")
            .states()
            .next()
            .expect("snapshot")
            .join_state
    };
    assert_eq!(
        state_of("YES", "YES", "YES"),
        JoinState::HybridJoined as i32
    );
    assert_eq!(
        state_of("NO", "YES", "YES"),
        JoinState::EnterpriseJoined as i32
    );
    assert_eq!(state_of("YES", "NO", "YES"), JoinState::HybridJoined as i32);
}

#[test]
fn event_ids_are_stable_across_reads() {
    let a = dsregcmd::parse(&fixture("dsregcmd_discovery_failure.txt"), &ctx()).expect("parses");
    let mut later = ctx();
    later.now = time::macros::datetime!(2024-06-02 00:00:00 UTC);
    let b = dsregcmd::parse(&fixture("dsregcmd_discovery_failure.txt"), &later).expect("parses");
    let ids = |p: &fleetpulse_agent::sources::Parsed| {
        p.events().map(|e| e.event_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(ids(&a).len(), 2);
}

#[test]
fn unknown_lines_are_skipped_and_counted_and_foreign_input_is_rejected() {
    assert_eq!(
        parse_status("hello world\n"),
        Err(ParseError::at_line(
            2,
            "no dsregcmd fields found (expected \"AzureAdJoined : YES\" under a \"| Device State |\" banner)"
        ))
    );
    let text = section(
        "Device State",
        "  AzureAdJoined : YES\n  this line has no key",
    );
    let status = parse_status(&text).expect("parses");
    assert_eq!(status.device_state.azure_ad_joined.as_deref(), Some("YES"));
    assert_eq!(status.skipped.count, 1);
    assert_eq!(
        status.skipped.first,
        Some((7, "this line has no key".to_owned()))
    );
    let parsed = dsregcmd::parse(&text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(
        state
            .attributes
            .get("parse.skipped_lines")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        state
            .attributes
            .get("parse.first_skipped")
            .map(String::as_str),
        Some("line 7: this line has no key")
    );
    assert!(parse_status("\n\n").is_err());
    let truncated_mid_line = section("Device State", "  AzureAdJoined : YES\n  DomainJoi");
    let status = parse_status(&truncated_mid_line).expect("parses");
    assert_eq!(status.skipped.first, Some((7, "DomainJoi".to_owned())));
    // A prompt and a tool banner before the output are skipped too.
    let prompted = format!(
        "PS C:\\> dsregcmd /status\n{}",
        section("Device State", "  AzureAdJoined : NO")
    );
    assert_eq!(parse_status(&prompted).expect("parses").skipped.count, 1);
}

#[test]
fn a_field_in_markdown_bold_is_read_as_the_field() {
    let text = section(
        "User State",
        "                    **NgcSet : YES**\n           WorkplaceJoined : NO",
    );
    let status = parse_status(&text).expect("parses");
    assert_eq!(status.user_state.ngc_set.as_deref(), Some("YES"));
    assert_eq!(status.user_state.workplace_joined.as_deref(), Some("NO"));
    assert!(status.unknown.is_empty());
}
