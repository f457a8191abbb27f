//! `MDMDiagReport.xml` (MdmDiagnosticsTool) parser.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::mdm_diag::{self, read_report};
use support::{ctx, fixture};

#[test]
fn whole_report_matches_golden() {
    support::assert_golden(InputKind::MdmDiagnostics, "mdm_diag_report.xml");
}

#[test]
fn the_report_is_read_exactly() {
    let (report, skipped) = read_report(&fixture("mdm_diag_report.xml")).expect("parses");
    assert_eq!(skipped.count, 0);
    assert!(report.whole);
    assert_eq!(report.accounts.len(), 1);
    assert_eq!(report.accounts[0].server_name, "MS DM Server");
    assert_eq!(report.accounts[0].last_success, "20210922T101500Z");
    assert_eq!(report.csp_errors.len(), 2);
    assert_eq!(report.csp_errors[1].name, "WiFi");
    assert_eq!(report.csp_errors[1].code, Some(0x8007_0002));
    assert_eq!(
        report.sections_not_read.iter().collect::<Vec<_>>(),
        ["Certificates"]
    );
}

#[test]
fn utf16_reports_read_like_utf8_ones() {
    let text = fixture("mdm_diag_report.xml");
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let from_utf16 =
        fleetpulse_agent::inspect::parse_bytes(InputKind::MdmDiagnostics, &ctx(), &utf16)
            .expect("parses");
    assert_eq!(from_utf16, mdm_diag::parse(&text, &ctx()).expect("parses"));
}

#[test]
fn another_tools_output_is_refused_with_the_reason() {
    let err = mdm_diag::parse(&fixture("dsregcmd_entra_joined.txt"), &ctx()).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(
        err.message
            .starts_with("no MDM diagnostics report elements found (expected MDMDiagReport.xml"),
        "{err}"
    );
}
