//! The MDM diagnostics report: `MDMDiagReport.xml`, written by `MdmDiagnosticsTool.exe -out
//! <folder>` (and by Settings > Accounts > Access work or school > Export your management
//! logs / "Create report"), root element `<MDMEnterpriseDiagnosticsReport>`.
//!
//! Microsoft documents the tool and the files it writes, not the XML schema. What this parser
//! reads is what real reports show: the element names and nesting come from excerpts that
//! administrators published from their own reports (`tests/corpus/mdm_diagnostics/`, with
//! their sources) and from the paths a published PowerShell reader of real reports walks
//! (ztrhgf/useful_powershell_modules, `ConvertFrom-MDMDiagReportXML`):
//!
//! - `DeviceManagementAccount/Enrollment`: one OMA-DM account per MDM enrollment, with
//!   `EnrollmentId`, `ProtectedInformation/MDMServerName` and
//!   `ProtectedInformation/ConnectionInformation/Server{LastAccess,LastSuccess,LastFailure}Time`
//!   (`yyyyMMddTHHmmssZ`);
//! - `Resources/Enrollment`: per enrollment (`EnrollmentID`) and target (`Scope/ResourceTarget`:
//!   `device` or a user SID) the CSP resources it delivered (`Resources/ResourceName`);
//! - `PolicyManager/ConfigSource`: per enrollment (`EnrollmentId`) and scope the policy areas
//!   it configures (`PolicyScope/Area/PolicyAreaName`), plus `AreaMetadata` /
//!   `IngestedADMXPolicyMetaData` (`PolicyMetadata` per policy);
//! - `Diagnostics/ErrorLog`: per component (`Component`, e.g. `ConfigManager`) the failed CSP
//!   commands (`SubComponent`: `Name`, `Error` as a signed decimal HRESULT, `Metadata1` the
//!   command type, `Metadata2` the CSP URI, `Time`).
//!
//! Rules (stated here because the report mixes enrollment and configuration):
//! - An `ErrorLog` entry is a CSP command that failed on an enrolled device, the same fact as
//!   DeviceManagement-Enterprise-Diagnostics-Provider event 404: a configuration failure, not
//!   an enrollment step. It never becomes a failed enrollment event; the count and the first
//!   failure travel as snapshot attributes (`mdm_diag.csp_error_count`,
//!   `mdm_diag.first_csp_error`) for the administrator.
//! - The device is MDM-enrolled only when an OMA-DM account (`DeviceManagementAccount/
//!   Enrollment`) names its management server. Policy or resource lists alone do not establish
//!   it (a provisioning package also delivers policies), so then `mdm_enrolled` stays unset.
//! - Element names are not localized, and the report is read whatever its encoding
//!   ([`super::decode_text`]).
//! - A published report is often an excerpt: a section cut mid-way, without its root. The
//!   parser reads fragments: sections are recognised by their own names, unclosed elements at
//!   the end are fine, text outside elements and malformed markup are skipped and counted
//!   (`parse.skipped_lines`), and sections it does not read are named in
//!   `mdm_diag.sections_not_read`. Only an input with none of the report's elements is an
//!   error.

use std::collections::BTreeSet;

use fleetpulse_proto::v1::{DeviceState, Platform};
use quick_xml::Reader;
use quick_xml::events::Event;
use time::format_description::well_known::Rfc3339;

use super::{
    Attributes, ParseError, Parsed, Skipped, SourceContext, format_code, line_col, parse_code,
    timestamp_ms,
};

/// The root element of `MDMDiagReport.xml`.
pub const ROOT: &str = "MDMEnterpriseDiagnosticsReport";

/// Report sections (children of the root) this parser reads. Other sections (certificates,
/// app installations, provisioning packages, ...) are named in `mdm_diag.sections_not_read`.
const SECTIONS_READ: &[&str] = &[
    "DeviceManagementAccount",
    "Resources",
    "PolicyManager",
    "Diagnostics",
];

/// Element names that only occur in an MDM diagnostics report: seeing one is what makes an
/// input (or a fragment of one) a report.
const REPORT_ELEMENTS: &[&str] = &[
    ROOT,
    "DeviceManagementAccount",
    "ErrorLog",
    "ConfigSource",
    "PolicyAreaName",
    "PolicyMetadata",
    "IngestedADMXPolicyMetaData",
    "AreaMetadata",
    "ResourceTarget",
    "MDMServerName",
];

/// One failed CSP command of `Diagnostics/ErrorLog`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CspError {
    /// `ErrorLog/Component` (e.g. `ConfigManager`).
    pub component: String,
    /// `SubComponent/Name` (the CSP or policy area, e.g. `BitLocker`).
    pub name: String,
    /// `SubComponent/Error` as an HRESULT, when it is a number.
    pub code: Option<u32>,
    /// The raw `Error` text.
    pub error: String,
    /// `Metadata1`: the command type (`CmdType_Set`, `CmdType_Add`, ...).
    pub command: String,
    /// `Metadata2`: the CSP URI.
    pub uri: String,
    /// `Time` as printed.
    pub time: String,
}

impl CspError {
    /// `0x800701b1 BitLocker CmdType_Set ./Device/... at 2021-09-23 07:07:05.463`.
    pub fn summary(&self) -> String {
        let code = self
            .code
            .map(format_code)
            .unwrap_or_else(|| self.error.clone());
        let mut out = code;
        for part in [&self.name, &self.command, &self.uri] {
            if !part.is_empty() {
                out.push(' ');
                out.push_str(part);
            }
        }
        if !self.time.is_empty() {
            out.push_str(" at ");
            out.push_str(&self.time);
        }
        out
    }
}

/// One OMA-DM account of `DeviceManagementAccount`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmAccount {
    pub enrollment_id: String,
    pub server_name: String,
    pub last_access: String,
    pub last_success: String,
    pub last_failure: String,
}

/// What a report (or a fragment of one) says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether the root element was present (a whole report, not an excerpt).
    pub whole: bool,
    pub accounts: Vec<DmAccount>,
    /// Every enrollment id named anywhere (accounts, resources, policy sources), upper case.
    pub enrollment_ids: BTreeSet<String>,
    /// CSP URIs of `Resources/.../ResourceName` (entries that are not URIs are not counted).
    pub resources: usize,
    /// Distinct `PolicyAreaName` values.
    pub policy_areas: BTreeSet<String>,
    /// `PolicyMetadata` entries (policy definitions of `AreaMetadata` and ingested ADMX).
    pub policy_metadata: usize,
    pub csp_errors: Vec<CspError>,
    /// Sections under the root (or at the top of a fragment) that are not read.
    pub sections_not_read: BTreeSet<String>,
}

/// Where the reader is, for the elements whose meaning depends on their parent.
#[derive(Debug, Default)]
struct Cursor {
    /// Element names from the top of the input down to the current element.
    path: Vec<String>,
    /// The `ErrorLog/Component` in force.
    component: String,
    error: Option<CspError>,
    account: Option<DmAccount>,
    /// Text of the current leaf element.
    text: String,
}

impl Cursor {
    fn inside(&self, name: &str) -> bool {
        self.path.iter().any(|p| p == name)
    }

    fn parent(&self) -> Option<&str> {
        self.path.iter().rev().nth(1).map(String::as_str)
    }
}

/// Reads a report or a fragment of one; see the module documentation for what is kept.
pub fn read_report(text: &str) -> Result<(Report, Skipped), ParseError> {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.trim_text(true);
    // Published excerpts are cut: end tags may be missing or belong to elements cut away.
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut report = Report::default();
    let mut skipped = Skipped::default();
    let mut recognised = false;
    let mut cursor = Cursor::default();
    let mut skipped_lines: BTreeSet<usize> = BTreeSet::new();
    // Counts the line holding byte `at` as skipped, once per line.
    let mut skip_line_at = |at: usize| {
        let (line, _) = line_col(text, at);
        if skipped_lines.insert(line) {
            skipped.line(line, text.lines().nth(line - 1).unwrap_or_default());
        }
    };
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(_) => {
                skip_line_at(usize::try_from(reader.error_position()).unwrap_or(before));
                let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
                if after <= before || after >= text.len() {
                    break;
                }
                continue;
            }
        };
        match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if !is_element_name(&name) {
                    // `<# ... #>` of a PowerShell comment around a pasted section, `<->`, ...
                    skip_line_at(before);
                    continue;
                }
                recognised |= REPORT_ELEMENTS.contains(&name.as_str());
                open(&mut cursor, &mut report, &name);
                cursor.path.push(name);
                cursor.text.clear();
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if !is_element_name(&name) {
                    skip_line_at(before);
                    continue;
                }
                recognised |= REPORT_ELEMENTS.contains(&name.as_str());
                note_section(&cursor, &mut report, &name);
            }
            Event::Text(content) => {
                let value = match content.unescape() {
                    Ok(value) => value.into_owned(),
                    Err(_) => String::from_utf8_lossy(&content).into_owned(),
                };
                if cursor.path.is_empty() {
                    if !value.trim().is_empty() {
                        skip_line_at(before);
                    }
                } else {
                    cursor.text.push_str(&value);
                }
            }
            Event::CData(content) => cursor.text.push_str(&String::from_utf8_lossy(&content)),
            Event::End(_) => {
                if cursor.path.is_empty() {
                    continue;
                }
                let value = std::mem::take(&mut cursor.text);
                close(&mut cursor, &mut report, value.trim());
                cursor.path.pop();
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    // Cut excerpts end inside open elements: keep what the open ones gathered.
    if let Some(error) = cursor.error.take() {
        report.csp_errors.push(error);
    }
    if let Some(account) = cursor.account.take() {
        report.accounts.push(account);
    }
    if !recognised {
        let found = skipped.found_suffix();
        return Err(ParseError::at_line(
            1,
            format!(
                "no MDM diagnostics report elements found (expected MDMDiagReport.xml, root <{ROOT}>{found})"
            ),
        ));
    }
    Ok((report, skipped))
}

/// Whether quick-xml's tag name is an XML name (quick-xml does not check): names start with a
/// letter or `_`.
fn is_element_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// A section name is noted when it sits directly under the root, or at the top of a fragment.
fn note_section(cursor: &Cursor, report: &mut Report, name: &str) {
    let at_section_level = match cursor.path.as_slice() {
        [] => name != ROOT,
        [root] => root == ROOT,
        _ => false,
    };
    if at_section_level && !SECTIONS_READ.contains(&name) && !REPORT_ELEMENTS.contains(&name) {
        report.sections_not_read.insert(name.to_owned());
    }
}

fn open(cursor: &mut Cursor, report: &mut Report, name: &str) {
    note_section(cursor, report, name);
    match name {
        _ if name == ROOT => report.whole = true,
        "SubComponent" if cursor.path.last().is_some_and(|p| p == "ErrorLog") => {
            if let Some(done) = cursor.error.take() {
                report.csp_errors.push(done);
            }
            cursor.error = Some(CspError {
                component: cursor.component.clone(),
                ..Default::default()
            });
        }
        "ErrorLog" => cursor.component.clear(),
        "Enrollment"
            if cursor
                .path
                .last()
                .is_some_and(|p| p == "DeviceManagementAccount") =>
        {
            if let Some(done) = cursor.account.take() {
                report.accounts.push(done);
            }
            cursor.account = Some(DmAccount::default());
        }
        _ => {}
    }
}

fn close(cursor: &mut Cursor, report: &mut Report, value: &str) {
    let Some(name) = cursor.path.last().cloned() else {
        return;
    };
    let parent = cursor.parent().map(str::to_owned);
    match name.as_str() {
        "EnrollmentId" | "EnrollmentID" if !value.is_empty() => {
            report.enrollment_ids.insert(value.to_ascii_uppercase());
            if let Some(account) = cursor.account.as_mut()
                && parent.as_deref() == Some("Enrollment")
            {
                account.enrollment_id = value.to_owned();
            }
        }
        "ResourceName" if value.starts_with("./") => report.resources += 1,
        "PolicyAreaName" if !value.is_empty() => {
            report.policy_areas.insert(value.to_owned());
        }
        "PolicyMetadata" => report.policy_metadata += 1,
        "Component" if parent.as_deref() == Some("ErrorLog") => {
            cursor.component = value.to_owned();
        }
        "SubComponent" if parent.as_deref() == Some("ErrorLog") => {
            if let Some(done) = cursor.error.take() {
                report.csp_errors.push(done);
            }
        }
        "Enrollment" if parent.as_deref() == Some("DeviceManagementAccount") => {
            if let Some(done) = cursor.account.take() {
                report.accounts.push(done);
            }
        }
        _ => {}
    }
    if parent.as_deref() == Some("SubComponent")
        && cursor.inside("ErrorLog")
        && let Some(error) = cursor.error.as_mut()
    {
        match name.as_str() {
            "Name" => error.name = value.to_owned(),
            "Error" => {
                error.error = value.to_owned();
                error.code = parse_code(value);
            }
            "Metadata1" => error.command = value.to_owned(),
            "Metadata2" => error.uri = value.to_owned(),
            "Time" => error.time = value.to_owned(),
            _ => {}
        }
    }
    if cursor.inside("DeviceManagementAccount")
        && let Some(account) = cursor.account.as_mut()
    {
        match name.as_str() {
            "MDMServerName" => account.server_name = value.to_owned(),
            "ServerLastAccessTime" => account.last_access = value.to_owned(),
            "ServerLastSuccessTime" => account.last_success = value.to_owned(),
            "ServerLastFailureTime" => account.last_failure = value.to_owned(),
            _ => {}
        }
    }
}

/// `20210923T070705Z` (how the OMA-DM account stores times) as RFC 3339; other text as is.
pub fn account_time(value: &str) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(value.trim(), &format)
        .ok()
        .and_then(|t| t.assume_utc().format(&Rfc3339).ok())
        .unwrap_or_else(|| value.trim().to_owned())
}

/// Parses a report into one state snapshot (no events: see the module rules).
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    let (report, skipped) = read_report(text)?;
    skipped.warn_once("mdm_diagnostics");
    let mut attributes = Attributes::new();
    skipped.annotate(&mut attributes);
    attributes.add(
        "mdm_diag.report",
        if report.whole { "whole" } else { "fragment" },
    );
    attributes.add(
        "mdm_diag.enrollment_count",
        &report.enrollment_ids.len().to_string(),
    );
    if !report.enrollment_ids.is_empty() {
        let ids: Vec<&str> = report.enrollment_ids.iter().map(String::as_str).collect();
        attributes.add("mdm_diag.enrollment_ids", &ids.join(","));
    }
    attributes.add("mdm_diag.resource_count", &report.resources.to_string());
    attributes.add(
        "mdm_diag.policy_area_count",
        &report.policy_areas.len().to_string(),
    );
    attributes.add(
        "mdm_diag.policy_metadata_count",
        &report.policy_metadata.to_string(),
    );
    attributes.add(
        "mdm_diag.csp_error_count",
        &report.csp_errors.len().to_string(),
    );
    if let Some(first) = report.csp_errors.first() {
        attributes.add("mdm_diag.first_csp_error", &first.summary());
    }
    // The account with a server is the MDM enrollment; prefer the one that synced last.
    let account = report
        .accounts
        .iter()
        .filter(|a| !a.server_name.is_empty())
        .max_by(|a, b| a.last_success.cmp(&b.last_success));
    if let Some(account) = account {
        attributes.add("mdm_diag.enrollment_id", &account.enrollment_id);
        attributes.add("mdm_diag.mdm_server_name", &account.server_name);
        for (key, value) in [
            ("mdm_diag.server_last_access", &account.last_access),
            ("mdm_diag.server_last_success", &account.last_success),
            ("mdm_diag.server_last_failure", &account.last_failure),
        ] {
            if !value.is_empty() {
                attributes.add(key, &account_time(value));
            }
        }
        // Both times are `yyyyMMddTHHmmssZ`: text order is time order.
        if !account.last_failure.is_empty() && account.last_failure > account.last_success {
            attributes.add("mdm_diag.last_session", "failed");
        }
    }
    if !report.sections_not_read.is_empty() {
        let names: Vec<&str> = report
            .sections_not_read
            .iter()
            .map(String::as_str)
            .collect();
        attributes.add("mdm_diag.sections_not_read", &names.join(","));
    }
    let mut parsed = Parsed::default();
    parsed.push_state(DeviceState {
        agent_id: ctx.agent_id.clone(),
        device_id: ctx.device_id.clone(),
        captured_at: Some(timestamp_ms(ctx.now)),
        platform: Platform::Windows as i32,
        mdm_enrolled: account.is_some(),
        attributes: attributes.into_map(),
        ..Default::default()
    });
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SourceContext {
        SourceContext {
            agent_id: "a".into(),
            device_id: "d".into(),
            platform: Platform::Windows,
            now: time::macros::datetime!(2025-01-01 00:00:00 UTC),
        }
    }

    /// A whole report in the shape a published reader of real reports walks (the element paths
    /// of `ConvertFrom-MDMDiagReportXML`, see the module documentation); values ours.
    const WHOLE: &str = include_str!("../../tests/fixtures/mdm_diag_report.xml");

    fn attr(parsed: &Parsed, key: &str) -> Option<String> {
        parsed.states().next().unwrap().attributes.get(key).cloned()
    }

    #[test]
    fn a_whole_report_gives_the_account_and_the_csp_failures_without_enrollment_events() {
        let parsed = parse(WHOLE, &ctx()).unwrap();
        assert_eq!(parsed.events().count(), 0);
        let state = parsed.states().next().unwrap();
        assert!(state.mdm_enrolled);
        assert_eq!(attr(&parsed, "mdm_diag.report").as_deref(), Some("whole"));
        assert_eq!(
            attr(&parsed, "mdm_diag.mdm_server_name").as_deref(),
            Some("MS DM Server")
        );
        assert_eq!(
            attr(&parsed, "mdm_diag.server_last_failure").as_deref(),
            Some("2021-09-23T07:07:05Z")
        );
        assert_eq!(
            attr(&parsed, "mdm_diag.last_session").as_deref(),
            Some("failed")
        );
        assert_eq!(
            attr(&parsed, "mdm_diag.csp_error_count").as_deref(),
            Some("2")
        );
        assert_eq!(
            attr(&parsed, "mdm_diag.first_csp_error").as_deref(),
            Some(
                "0x800701b1 BitLocker CmdType_Set ./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption at 2021-09-23 07:07:05.463"
            )
        );
        assert_eq!(
            attr(&parsed, "mdm_diag.sections_not_read").as_deref(),
            Some("Certificates")
        );
        let (report, skipped) = read_report(WHOLE).unwrap();
        assert_eq!(skipped.count, 0);
        assert_eq!(report.csp_errors[0].component, "ConfigManager");
        assert_eq!(report.csp_errors[1].code, Some(0x8007_0002));
    }

    #[test]
    fn cut_fragments_and_stray_text_are_read_not_refused() {
        let text = "PS C:\\> type MDMDiagReport.xml\n<ErrorLog>\n  <Component>ConfigManager</Component>\n  <SubComponent>\n    <Name>BitLocker</Name>\n    <Error>-2147024463</Error>\n";
        let (report, skipped) = read_report(text).unwrap();
        assert_eq!(report.csp_errors.len(), 1);
        assert_eq!(report.csp_errors[0].code, Some(0x8007_01b1));
        assert!(!report.whole);
        assert_eq!(skipped.count, 1);
        assert_eq!(skipped.first.as_ref().map(|f| f.0), Some(1));
        let parsed = parse(text, &ctx()).unwrap();
        assert!(!parsed.states().next().unwrap().mdm_enrolled);
        assert_eq!(attr(&parsed, "parse.skipped_lines").as_deref(), Some("1"));
    }

    #[test]
    fn malformed_markup_is_skipped_and_counted() {
        let text = "<PolicyManager>\n<# a comment marker #>\n<ConfigSource><EnrollmentId>ab</EnrollmentId><PolicyScope><Area><PolicyAreaName>Update</PolicyAreaName></Area></PolicyScope></ConfigSource>\n</PolicyManager>\n";
        let (report, skipped) = read_report(text).unwrap();
        assert!(skipped.count >= 1, "{skipped:?}");
        assert_eq!(
            report.enrollment_ids.iter().next().map(String::as_str),
            Some("AB")
        );
        assert!(report.policy_areas.contains("Update"));
    }

    #[test]
    fn other_documents_are_refused_naming_what_was_found() {
        let err = read_report("Device State\n AzureAdJoined : YES\n").unwrap_err();
        assert!(err.message.contains("no MDM diagnostics report elements"));
        assert!(err.message.contains("Device State"), "{err}");
        assert!(read_report("<Events><Event/></Events>").is_err());
        assert!(read_report("").is_err());
    }

    #[test]
    fn account_times_become_rfc3339_and_odd_ones_stay_as_printed() {
        assert_eq!(account_time("20210923T070705Z"), "2021-09-23T07:07:05Z");
        assert_eq!(account_time("yesterday"), "yesterday");
    }
}
