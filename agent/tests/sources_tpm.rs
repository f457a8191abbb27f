//! TPM parsers: `tpmtool getdeviceinformation` and `Get-Tpm`.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::ParseError;
use fleetpulse_agent::sources::tpm::{self, TpmFormat, parse_report};
use fleetpulse_proto::v1::TpmInfo;
use support::{ctx, fixture};

#[test]
fn tpmtool_sample_matches_golden() {
    support::assert_golden(InputKind::Tpm, "tpmtool_getdeviceinformation.txt");
}

#[test]
fn get_tpm_sample_matches_golden() {
    support::assert_golden(InputKind::Tpm, "get_tpm.txt");
}

#[test]
fn tpmtool_maps_to_tpm_info_and_keeps_nested_lockout_block() {
    let report = parse_report(&fixture("tpmtool_getdeviceinformation.txt")).expect("parses");
    assert_eq!(report.format, TpmFormat::Tpmtool);
    assert_eq!(
        report.tpm_info(),
        TpmInfo {
            present: true,
            spec_version: "2.0".to_owned(),
            ready: true,
            manufacturer: "INTC".to_owned()
        }
    );
    let lockout = report
        .fields
        .iter()
        .find(|f| f.key == "Max Auth Fail")
        .expect("nested field");
    assert_eq!(lockout.group.as_deref(), Some("Lockout Information"));
    assert_eq!(lockout.value, "32");
    // "TPM Spec Version" (1.38) is the spec revision, not the TPM family.
    assert_eq!(report.value("TPM Spec Version"), Some("1.38"));
}

#[test]
fn get_tpm_maps_to_tpm_info_with_version_inferred_from_full20() {
    let report = parse_report(&fixture("get_tpm.txt")).expect("parses");
    assert_eq!(report.format, TpmFormat::GetTpm);
    assert_eq!(
        report.tpm_info(),
        TpmInfo {
            present: true,
            spec_version: "1.2".to_owned(),
            ready: false,
            manufacturer: "IFX".to_owned()
        }
    );
    let tpm20 = "TpmPresent : True\nTpmReady : True\nManufacturerId : 1229870147\nManufacturerVersionFull20 : 7.2.0.1\n";
    assert_eq!(
        parse_report(tpm20).expect("parses").tpm_info(),
        TpmInfo {
            present: true,
            spec_version: "2.0".to_owned(),
            ready: true,
            manufacturer: "INTC".to_owned()
        }
    );
}

#[test]
fn no_tpm_is_reported_as_absent() {
    let parsed = tpm::parse("-TPM Present: False\r\n", &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(state.tpm, Some(TpmInfo::default()));
}

#[test]
fn get_tpm_continuation_lines_are_joined() {
    let text = "TpmPresent : True\nSelfTest   : {1, 2, 3,\n             4}\n";
    let report = parse_report(text).expect("parses");
    assert_eq!(report.value("SelfTest"), Some("{1, 2, 3,4}"));
}

#[test]
fn unknown_lines_are_skipped_and_foreign_input_is_rejected() {
    assert_eq!(
        parse_report(""),
        Err(ParseError::at_line(
            1,
            "empty input (expected tpmtool or Get-Tpm output)"
        ))
    );
    assert_eq!(
        parse_report("\nhello\n"),
        Err(ParseError::at_line(
            2,
            "expected \"-TPM Present: ...\" (tpmtool) or \"TpmPresent : ...\" (Get-Tpm), found \"hello\""
        ))
    );
    let cut = parse_report("-TPM Present: True\n-TPM Vers").expect("keeps what was read");
    assert!(cut.tpm_info().present);
    assert_eq!(cut.skipped.count, 1);
    assert_eq!(
        parse_report("-TPM Version: 2.0\n"),
        Err(ParseError::at_line(
            2,
            "missing \"TPM Present\" (truncated input?)"
        ))
    );
    let prompted =
        parse_report("PS C:\\> Get-Tpm\n\nTpmPresent : True\nTpmReady : False\nSelfTest : {}\n")
            .expect("parses");
    assert_eq!(prompted.format, TpmFormat::GetTpm);
    assert!(prompted.tpm_info().present);
    assert_eq!(prompted.skipped.count, 1);
}

/// tpmtool with labels in a language the parser does not know: the first three fields are
/// read by position (present, version, manufacturer), readiness stays unknown. The labels
/// below are a test input written for this test, not a published output.
#[test]
fn unknown_language_labels_are_read_by_position_and_readiness_stays_unknown() {
    let text = "-TPM vorhanden: Wahr\n-TPM-Version: 2.0\n-TPM-Hersteller-ID: IFX\n-Bereit zur Speicherung: Wahr\n";
    let report = parse_report(text).expect("parses");
    assert_eq!(report.labels, tpm::Labels::Positional);
    assert_eq!(
        report.tpm_info(),
        TpmInfo {
            present: true,
            spec_version: "2.0".to_owned(),
            ready: false,
            manufacturer: "IFX".to_owned()
        }
    );
    let parsed = tpm::parse(text, &ctx()).expect("parses");
    let state = parsed.states().next().expect("snapshot");
    assert_eq!(
        state.attributes.get("tpm.labels").map(String::as_str),
        Some("positional")
    );
    assert_eq!(
        state.attributes.get("tpm.ready_known").map(String::as_str),
        Some("false")
    );
    // A first value that is no boolean establishes nothing: refused, not guessed.
    assert!(parse_report("-Etwas: vielleicht\n-TPM-Version: 2.0\n").is_err());
}

#[test]
fn get_tpm_output_collapsed_onto_one_line_is_unfolded() {
    let collapsed = "Enable-TpmAutoProvisioning TpmReady : False TpmPresent : True ManagedAuthLevel : Full OwnerAuth : OwnerClearDisabled : True LockedOut : False";
    let report = parse_report(collapsed).expect("parses");
    assert_eq!(report.format, TpmFormat::GetTpm);
    assert_eq!(report.value("TpmPresent"), Some("True"));
    assert_eq!(report.value("TpmReady"), Some("False"));
    assert_eq!(report.value("OwnerAuth"), Some(""));
    assert_eq!(report.value("LockedOut"), Some("False"));
    assert_eq!(report.skipped.count, 1);
    // One property per line (the usual output) is left as it is.
    let usual = "TpmPresent                : True\nManufacturerIdTxt         : INTC\n";
    let report = parse_report(usual).expect("parses");
    assert_eq!(report.value("ManufacturerIdTxt"), Some("INTC"));
    assert_eq!(report.skipped.count, 0);
}
