//! `dsregcmd /status`: Entra / AD join state, device and tenant details, SSO state and the
//! diagnostic data of the last (failed) registration attempt.
//!
//! The output is a sequence of sections, each introduced by a three-line banner
//! (`+----+` / `| Device State |` / `+----+`) and followed by `Key : Value` lines with
//! right-aligned keys. The parser tolerates the documented quirks: keys with spaces, varying
//! case (`HTTP status` / `HTTP Status`), `Key: Value` without a space before the colon, empty
//! values (`MdmUrl :`), values containing colons (URLs, times, ` : `), CRLF line endings and
//! (through [`super::decode_text`]) UTF-16LE with BOM. A key is split at the first colon that
//! is followed by a space or ends the line, so `https://`, `09:16:50` and later ` : ` stay in
//! the value. Every field is kept: known ones in typed section structs, unknown ones in
//! [`DsregStatus::unknown`] and, from there, in the snapshot's attributes.
//!
//! Anything else (prompts, tool banners, a banner cut short, half a line of a truncated copy)
//! is skipped and counted (`parse.skipped_lines`), never a reason to drop the output. Older
//! layouts (Windows 10 1709/1803, Server 2016) print tenant and device fields under other
//! sections; keys are matched in their own section first and in any section after, so ids
//! and URLs land in their fields whatever the layout. A registered (not joined) device prints
//! its tenant, device id and MDM URL as `Workplace*` fields of a "Work Account N" section;
//! the first account fills the same snapshot fields. Ids are typed only when they are GUIDs
//! (pasted outputs mask or shorten them); a value cut by a narrow console continues on the
//! next, unindented line and is joined back. `dsregcmd` is not localized: its
//! labels are English on every Windows language (localized Microsoft documentation shows
//! the same English output). An input without a single known field is an error: it is
//! another tool's output, not a device state.

use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentMethod, EnrollmentStage, JoinState, Outcome, Platform,
    Source, SourceKind, TpmInfo,
};
use time::{OffsetDateTime, PrimitiveDateTime, macros::format_description};

use super::{
    Attributes, MAX_UPN_BYTES, ParseError, Parsed, Skipped, SourceContext, format_code,
    numbered_lines, parse_code, reported_error, slug, stable_event_id, timestamp_ms,
    truncate_bytes,
};

/// One `Key : Value` line as printed (key and value trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub key: String,
    pub value: String,
    /// 1-based line number in the input.
    pub line: usize,
}

/// One banner-delimited section with its fields in output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The banner title, e.g. "Device State".
    pub name: String,
    /// 1-based line of the banner title.
    pub line: usize,
    pub fields: Vec<Field>,
}

/// Lower case without spaces, hyphens and underscores: the form keys and section names are
/// matched in, so that case and spacing variants of the same key meet.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '\t'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Declares a typed section: one `Option<String>` per documented key (value as printed),
/// and the lookup from the normalised key to the field.
macro_rules! typed_section {
    ($(#[$meta:meta])* $name:ident { $($field:ident => $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $(#[doc = concat!("`", $key, "` (normalised key) as printed.")] pub $field: Option<String>,)*
        }

        impl $name {
            /// Stores the value when `normalized_key` is one of this section's keys.
            fn assign(&mut self, normalized_key: &str, value: &str) -> bool {
                match normalized_key {
                    $($key => {
                        self.$field = Some(value.to_owned());
                        true
                    })*
                    _ => false,
                }
            }

            /// Whether `normalized_key` is one of this section's keys and already has a value.
            #[allow(dead_code)]
            fn is_set(&self, normalized_key: &str) -> bool {
                match normalized_key {
                    $($key => self.$field.is_some(),)*
                    _ => false,
                }
            }
        }
    };
}

typed_section!(
    /// "Device State": the join flags.
    DeviceStateSection {
        azure_ad_joined => "azureadjoined",
        enterprise_joined => "enterprisejoined",
        domain_joined => "domainjoined",
        domain_name => "domainname",
        device_name => "devicename",
    }
);

typed_section!(
    /// "Device Details" (joined and hybrid-joined devices only).
    DeviceDetails {
        device_id => "deviceid",
        thumbprint => "thumbprint",
        device_certificate_validity => "devicecertificatevalidity",
        key_container_id => "keycontainerid",
        key_provider => "keyprovider",
        tpm_protected => "tpmprotected",
        device_auth_status => "deviceauthstatus",
        virtual_desktop => "virtualdesktop",
    }
);

typed_section!(
    /// "Tenant Details": tenant and service URLs, including the MDM URLs.
    TenantDetails {
        tenant_name => "tenantname",
        tenant_id => "tenantid",
        idp => "idp",
        auth_code_url => "authcodeurl",
        access_token_url => "accesstokenurl",
        mdm_url => "mdmurl",
        mdm_tou_url => "mdmtouurl",
        mdm_compliance_url => "mdmcomplianceurl",
        settings_url => "settingsurl",
        join_srv_version => "joinsrvversion",
        join_srv_url => "joinsrvurl",
        join_srv_id => "joinsrvid",
        key_srv_version => "keysrvversion",
        key_srv_url => "keysrvurl",
        key_srv_id => "keysrvid",
        web_authn_srv_version => "webauthnsrvversion",
        web_authn_srv_url => "webauthnsrvurl",
        web_authn_srv_id => "webauthnsrvid",
        device_management_srv_ver => "devicemanagementsrvver",
        device_management_srv_url => "devicemanagementsrvurl",
        device_management_srv_id => "devicemanagementsrvid",
    }
);

typed_section!(
    /// "User State" (user context): Windows Hello and workplace registration.
    UserState {
        ngc_set => "ngcset",
        ngc_key_id => "ngckeyid",
        can_reset => "canreset",
        workplace_joined => "workplacejoined",
        wam_default_set => "wamdefaultset",
        wam_default_authority => "wamdefaultauthority",
        wam_default_id => "wamdefaultid",
        wam_default_guid => "wamdefaultguid",
    }
);

typed_section!(
    /// "SSO State" (user context): PRT state and the last PRT attempt's diagnostics.
    SsoState {
        azure_ad_prt => "azureadprt",
        azure_ad_prt_update_time => "azureadprtupdatetime",
        azure_ad_prt_expiry_time => "azureadprtexpirytime",
        azure_ad_prt_authority => "azureadprtauthority",
        enterprise_prt => "enterpriseprt",
        enterprise_prt_update_time => "enterpriseprtupdatetime",
        enterprise_prt_expiry_time => "enterpriseprtexpirytime",
        enterprise_prt_authority => "enterpriseprtauthority",
        acquire_prt_diagnostics => "acquireprtdiagnostics",
        refresh_prt_diagnostics => "refreshprtdiagnostics",
        previous_prt_attempt => "previousprtattempt",
        attempt_status => "attemptstatus",
        user_identity => "useridentity",
        credential_type => "credentialtype",
        correlation_id => "correlationid",
        endpoint_uri => "endpointuri",
        http_method => "httpmethod",
        http_error => "httperror",
        http_status => "httpstatus",
        server_error_code => "servererrorcode",
        server_error_description => "servererrordescription",
        on_prem_tgt => "onpremtgt",
        cloud_tgt => "cloudtgt",
        kerb_top_level_names => "kerbtoplevelnames",
    }
);

typed_section!(
    /// "Diagnostic Data": pre-join tests and the last registration attempt, or post-join
    /// recovery state.
    DiagnosticData {
        diagnostics_reference => "diagnosticsreference",
        user_context => "usercontext",
        client_time => "clienttime",
        ad_connectivity_test => "adconnectivitytest",
        ad_configuration_test => "adconfigurationtest",
        drs_discovery_test => "drsdiscoverytest",
        drs_connectivity_test => "drsconnectivitytest",
        token_acquisition_test => "tokenacquisitiontest",
        fallback_to_sync_join => "fallbacktosyncjoin",
        previous_registration => "previousregistration",
        registration_type => "registrationtype",
        error_phase => "errorphase",
        client_error_code => "clienterrorcode",
        server_error_code => "servererrorcode",
        server_message => "servermessage",
        https_status => "httpsstatus",
        request_id => "requestid",
        aad_recovery_enabled => "aadrecoveryenabled",
        key_sign_test => "keysigntest",
        executing_account_name => "executingaccountname",
    }
);

typed_section!(
    /// "Ngc Prerequisite Check": Windows Hello for Business provisioning prerequisites.
    NgcPrerequisiteCheck {
        is_device_joined => "isdevicejoined",
        is_user_azure_ad => "isuserazuread",
        policy_enabled => "policyenabled",
        post_logon_enabled => "postlogonenabled",
        device_eligible => "deviceeligible",
        session_is_not_remote => "sessionisnotremote",
        cert_enrollment => "certenrollment",
        adfs_refresh_token => "adfsrefreshtoken",
        adfs_ra_is_ready => "adfsraisready",
        logon_cert_template_ready => "logoncerttemplateready",
        pre_req_result => "prereqresult",
        on_prem_tgt => "onpremtgt",
        cloud_tgt => "cloudtgt",
    }
);

typed_section!(
    /// "Work Account N" (Windows 11 and current Windows 10 builds, user context): one section
    /// per work or school account registered on the device (Entra registered / "Access work or
    /// school"). Only the first account is typed; later ones stay in the unknown fields.
    WorkAccount {
        workplace_device_id => "workplacedeviceid",
        workplace_thumbprint => "workplacethumbprint",
        workplace_tenant_id => "workplacetenantid",
        workplace_tenant_name => "workplacetenantname",
        workplace_mdm_url => "workplacemdmurl",
        workplace_settings_url => "workplacesettingsurl",
        workplace_idp => "workplaceidp",
    }
);

/// A field that no typed section knows, with the section it appeared in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    pub section: String,
    pub field: Field,
}

/// Everything `dsregcmd /status` printed: the raw sections in order, the typed view of the
/// documented sections, and the fields nothing typed knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsregStatus {
    pub sections: Vec<Section>,
    pub device_state: DeviceStateSection,
    pub device_details: DeviceDetails,
    pub tenant_details: TenantDetails,
    pub user_state: UserState,
    pub sso_state: SsoState,
    pub diagnostics: DiagnosticData,
    pub ngc_prerequisite_check: NgcPrerequisiteCheck,
    /// The first "Work Account N" section (or Workplace* fields printed elsewhere).
    pub work_account: WorkAccount,
    pub unknown: Vec<UnknownField>,
    /// Lines that are neither banners nor `Key : Value` fields.
    pub skipped: Skipped,
}

/// A diagnostic test result (`PASS`, `FAIL [0x801c0021/0x80072ee2]`, `SKIPPED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestResult {
    Pass,
    Skipped,
    /// Failed, with the error and sub-error codes when printed.
    Fail {
        error: Option<u32>,
        sub_error: Option<u32>,
    },
    /// Anything else, as printed.
    Other(String),
}

/// Parses a diagnostic test result.
pub fn parse_test_result(value: &str) -> TestResult {
    let trimmed = value.trim();
    let upper = trimmed.to_ascii_uppercase();
    if upper.starts_with("PASS") {
        return TestResult::Pass;
    }
    if upper.starts_with("SKIP") {
        return TestResult::Skipped;
    }
    if upper.starts_with("FAIL") {
        let inner = trimmed.find('[').and_then(|open| {
            trimmed[open + 1..]
                .find(']')
                .map(|close| &trimmed[open + 1..open + 1 + close])
        });
        let (error, sub_error) = match inner {
            Some(inner) => {
                let mut parts = inner.split('/');
                let error = parts.next().and_then(parse_code);
                let sub_error = parts.next().and_then(parse_code);
                (error, sub_error)
            }
            None => (None, None),
        };
        return TestResult::Fail { error, sub_error };
    }
    TestResult::Other(trimmed.to_owned())
}

/// `YES` / `NO` (any case) as a boolean; anything else is unknown.
pub fn yes_no(value: Option<&String>) -> Option<bool> {
    let value = value?.trim();
    if value.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if value.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

/// Whether `value` is a GUID (`8-4-4-4-12` hex digits), the form of every Entra tenant and
/// device id.
pub fn is_guid(value: &str) -> bool {
    let value = value.trim();
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The first `0x…` code in a value such as `FAILED. Error: 0xd000023c`.
fn first_code_in(value: &str) -> Option<u32> {
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|token| token.starts_with("0x") || token.starts_with("0X"))
        .find_map(parse_code)
}

/// Parses dsregcmd's time format, `2019-01-31 09:16:50.000 UTC`.
pub fn parse_dsreg_time(value: &str) -> Option<OffsetDateTime> {
    let value = value.trim();
    let value = value.strip_suffix("UTC").unwrap_or(value).trim_end();
    let with_fraction =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
    let without_fraction = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(value, with_fraction)
        .or_else(|_| PrimitiveDateTime::parse(value, without_fraction))
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Splits `Key : Value` at the first colon followed by a space or ending the line.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let colon = (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t')
    })?;
    Some((line[..colon].trim(), line[colon + 1..].trim()))
}

/// A field highlighted in a Markdown paste (`**NgcSet : YES**`) is the field itself.
fn strip_markdown_emphasis<'a>((key, value): (&'a str, &'a str)) -> (&'a str, &'a str) {
    for mark in ["**", "__"] {
        if let Some(inner) = key.strip_prefix(mark) {
            return (
                inner.trim(),
                value.strip_suffix(mark).unwrap_or(value).trim(),
            );
        }
    }
    (key, value)
}

fn is_banner_rule(line: &str) -> bool {
    line.starts_with("+-") || (line.starts_with("+") && line.chars().skip(1).all(|c| c == '-'))
}

/// Assigns a field to the typed view: first the section it was printed in, then (older
/// layouts such as Windows 10 1709/1803 and Server 2016 print tenant, device and PRT fields
/// under "Device State" or "User State"; truncated copies lose their banners) any section
/// that knows the key. Diagnostic data comes before SSO state so a bare "Server ErrorCode"
/// next to a registration attempt lands with the registration.
fn assign_typed(status: &mut DsregStatus, section: &str, key: &str, value: &str) -> bool {
    // Windows 10 1607-1709 printed "dmComplianceUrl" for today's "MdmComplianceUrl".
    let key = match key {
        "dmcomplianceurl" => "mdmcomplianceurl",
        other => other,
    };
    let own = match section {
        // Only the first work account is typed (a later account's fields stay unknown).
        s if s.starts_with("workaccount") => {
            !status.work_account.is_set(key) && status.work_account.assign(key, value)
        }
        "devicestate" => status.device_state.assign(key, value),
        "devicedetails" => status.device_details.assign(key, value),
        "tenantdetails" => status.tenant_details.assign(key, value),
        "userstate" => status.user_state.assign(key, value),
        "ssostate" => status.sso_state.assign(key, value),
        "diagnosticdata" => status.diagnostics.assign(key, value),
        "ngcprerequisitecheck" => status.ngc_prerequisite_check.assign(key, value),
        _ => false,
    };
    own || status.device_state.assign(key, value)
        || status.device_details.assign(key, value)
        || status.tenant_details.assign(key, value)
        || status.user_state.assign(key, value)
        || status.diagnostics.assign(key, value)
        || status.sso_state.assign(key, value)
        || status.ngc_prerequisite_check.assign(key, value)
        || (!section.starts_with("workaccount")
            && !status.work_account.is_set(key)
            && status.work_account.assign(key, value))
}

/// Whether `key` (normalised) is a key some typed section knows.
fn is_known_key(key: &str) -> bool {
    assign_typed(&mut DsregStatus::default(), "", key, "")
}

/// A console narrower than the line wraps it: the rest of the value continues at column 0 on
/// the next line ("... (PAC) script u" / "sing WPAD. code: 0x80072f94"). Such a line follows a
/// field line at least as long as the narrowest console (80 columns) without a blank line in
/// between, starts without indentation and is not itself a known field.
const NARROWEST_CONSOLE_COLUMNS: usize = 79;

fn is_wrapped_continuation(previous_raw: Option<&str>, raw: &str) -> bool {
    let Some(previous) = previous_raw else {
        return false;
    };
    if previous.trim_end().chars().count() < NARROWEST_CONSOLE_COLUMNS
        || raw.starts_with(char::is_whitespace)
        || raw.trim().is_empty()
        || raw.trim_start().starts_with('|')
        || is_banner_rule(raw.trim())
    {
        return false;
    }
    match split_key_value(raw.trim()) {
        Some((key, _)) => !is_known_key(&normalize(key)),
        None => true,
    }
}

/// Parses the text of `dsregcmd /status` into its sections and typed view.
///
/// Banner rules are decoration; a `| Title |` line opens a section (also when its rules are
/// missing or cut); `Key : Value` lines before any banner go to an unnamed section. Anything
/// else (prompts, tool banners, localized notices, half lines of a cut copy) is skipped and
/// counted in [`DsregStatus::skipped`]. Only an input without a single `Key : Value` field
/// the typed view knows is an error: that is another tool's output, not a device state.
pub fn parse_status(text: &str) -> Result<DsregStatus, ParseError> {
    let mut status = DsregStatus::default();
    let mut last_line = 0;
    // The raw text of the previous line when it was a `Key : Value` field.
    let mut previous_field_raw: Option<&str> = None;
    for (number, raw) in numbered_lines(text) {
        last_line = number;
        let line = raw.trim();
        if is_wrapped_continuation(previous_field_raw, raw) {
            if let Some(field) = status
                .sections
                .last_mut()
                .and_then(|section| section.fields.last_mut())
            {
                field.value.push_str(line);
            }
            previous_field_raw = None;
            continue;
        }
        previous_field_raw = None;
        if line.is_empty() || is_banner_rule(line) {
            continue;
        }
        if let Some(title) = line.strip_prefix('|') {
            let name = title.strip_suffix('|').unwrap_or(title).trim().to_owned();
            status.sections.push(Section {
                name,
                line: number,
                fields: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = split_key_value(line)
            .map(strip_markdown_emphasis)
            .filter(|(key, _)| !key.is_empty())
        else {
            status.skipped.line(number, line);
            continue;
        };
        if status.sections.is_empty() {
            status.sections.push(Section {
                name: String::new(),
                line: number,
                fields: Vec::new(),
            });
        }
        if let Some(section) = status.sections.last_mut() {
            section.fields.push(Field {
                key: key.to_owned(),
                value: value.to_owned(),
                line: number,
            });
            previous_field_raw = Some(raw);
        }
    }
    let sections = status.sections.clone();
    let mut known_fields = 0usize;
    for section in &sections {
        let section_key = normalize(&section.name);
        for field in &section.fields {
            let key = normalize(&field.key);
            if assign_typed(&mut status, &section_key, &key, &field.value) {
                known_fields += 1;
            } else {
                status.unknown.push(UnknownField {
                    section: section.name.clone(),
                    field: field.clone(),
                });
            }
        }
    }
    if known_fields == 0 {
        return Err(ParseError::at_line(
            last_line.max(1),
            "no dsregcmd fields found (expected \"AzureAdJoined : YES\" under a \"| Device State |\" banner)",
        ));
    }
    Ok(status)
}

impl DsregStatus {
    /// The join state from the Device State flags (and WorkplaceJoined from User State).
    /// Entra joined and domain joined is a hybrid join even when EnterpriseJoined is also YES:
    /// Microsoft's state table calls a device "on-premises DRS joined" only when it is
    /// EnterpriseJoined without AzureAdJoined.
    pub fn join_state(&self) -> JoinState {
        let azure = yes_no(self.device_state.azure_ad_joined.as_ref());
        let domain = yes_no(self.device_state.domain_joined.as_ref());
        let enterprise = yes_no(self.device_state.enterprise_joined.as_ref());
        let workplace = yes_no(self.user_state.workplace_joined.as_ref());
        match (azure, domain, enterprise) {
            (None, None, None) => JoinState::Unspecified,
            (Some(true), Some(true), _) => JoinState::HybridJoined,
            (_, _, Some(true)) => JoinState::EnterpriseJoined,
            (Some(true), _, _) => JoinState::EntraJoined,
            (_, Some(true), _) => JoinState::DomainJoined,
            _ if workplace == Some(true) => JoinState::WorkplaceRegistered,
            _ => JoinState::NotJoined,
        }
    }

    /// Whether the diagnostic data records a (failed) registration attempt.
    fn has_registration_attempt(&self) -> bool {
        let diag = &self.diagnostics;
        [
            &diag.previous_registration,
            &diag.error_phase,
            &diag.registration_type,
        ]
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
            || diag
                .client_error_code
                .as_deref()
                .and_then(parse_code)
                .is_some_and(|c| c != 0)
    }

    /// The enrollment path the join state implies; unspecified when the output does not
    /// establish one.
    fn enrollment_method(&self) -> EnrollmentMethod {
        match self.join_state() {
            JoinState::HybridJoined => EnrollmentMethod::HybridJoin,
            JoinState::EntraJoined => EnrollmentMethod::EntraJoin,
            JoinState::WorkplaceRegistered => EnrollmentMethod::UserDrivenByod,
            // A registration attempt on a domain-joined device is a hybrid join; without one
            // the output does not establish any enrollment path.
            JoinState::DomainJoined if self.has_registration_attempt() => {
                EnrollmentMethod::HybridJoin
            }
            _ => EnrollmentMethod::Unspecified,
        }
    }
}

/// Parses `dsregcmd /status` output into a device state snapshot plus failure events.
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    let status = parse_status(text)?;
    status.skipped.warn_once("dsregcmd");
    Ok(to_items(&status, ctx))
}

/// Turns a parsed status into protocol messages: the failure events first (join failure,
/// failed diagnostic tests, device auth failure, PRT failure), then the snapshot.
pub fn to_items(status: &DsregStatus, ctx: &SourceContext) -> Parsed {
    let mut parsed = Parsed::default();
    let method = status.enrollment_method();
    let base_event =
        |stage: EnrollmentStage, occurred_at: OffsetDateTime, id: String| EnrollmentEvent {
            event_id: id,
            agent_id: ctx.agent_id.clone(),
            device_id: ctx.device_id.clone(),
            occurred_at: Some(timestamp_ms(occurred_at)),
            platform: Platform::Windows as i32,
            enrollment_method: method as i32,
            stage: stage as i32,
            outcome: Outcome::Failed as i32,
            source: Some(Source {
                kind: SourceKind::Dsregcmd as i32,
                ..Default::default()
            }),
            ..Default::default()
        };

    let diag = &status.diagnostics;
    let client_time = diag.client_time.as_deref().and_then(parse_dsreg_time);
    let mut join_failure = None;

    // 1. The last registration attempt failed (Error Phase / Client ErrorCode).
    let client_code = diag.client_error_code.as_deref().and_then(parse_code);
    let has_phase = diag.error_phase.as_deref().is_some_and(|p| !p.is_empty());
    if has_phase || client_code.is_some_and(|c| c != 0) {
        let attempt_at = diag
            .previous_registration
            .as_deref()
            .and_then(parse_dsreg_time)
            .or(client_time)
            .unwrap_or(ctx.now);
        let phase = diag.error_phase.as_deref().unwrap_or_default();
        let stage = match phase.to_ascii_lowercase().as_str() {
            "discover" => EnrollmentStage::Discovery,
            "auth" => EnrollmentStage::Authentication,
            _ => EnrollmentStage::DeviceRegistration,
        };
        let error = reported_error(
            client_code,
            diag.server_error_code.as_deref().unwrap_or_default(),
            diag.server_message.as_deref().unwrap_or_default(),
        );
        let id = stable_event_id(
            "dsregcmd.join",
            &[
                &ctx.device_id,
                diag.previous_registration
                    .as_deref()
                    .or(diag.client_time.as_deref())
                    .unwrap_or_default(),
                diag.client_error_code.as_deref().unwrap_or_default(),
                phase,
                diag.server_error_code.as_deref().unwrap_or_default(),
            ],
        );
        let mut attributes = Attributes::new();
        attributes.add_opt("error_phase", diag.error_phase.as_deref());
        attributes.add_opt("registration_type", diag.registration_type.as_deref());
        attributes.add_opt("https_status", diag.https_status.as_deref());
        attributes.add_opt("request_id", diag.request_id.as_deref());
        attributes.add_opt("user_context", diag.user_context.as_deref());
        attributes.add_opt(
            "fallback_to_sync_join",
            diag.fallback_to_sync_join.as_deref(),
        );
        let mut event = base_event(stage, attempt_at, id);
        event.error = Some(error.clone());
        event.attributes = attributes.into_map();
        join_failure = Some((attempt_at, error));
        parsed.push_event(event);
    }

    // 2. Failed pre-join diagnostic tests.
    let tests = [
        (
            "AD Connectivity Test",
            &diag.ad_connectivity_test,
            EnrollmentStage::Discovery,
        ),
        (
            "AD Configuration Test",
            &diag.ad_configuration_test,
            EnrollmentStage::Discovery,
        ),
        (
            "DRS Discovery Test",
            &diag.drs_discovery_test,
            EnrollmentStage::Discovery,
        ),
        (
            "DRS Connectivity Test",
            &diag.drs_connectivity_test,
            EnrollmentStage::Discovery,
        ),
        (
            "Token acquisition Test",
            &diag.token_acquisition_test,
            EnrollmentStage::Authentication,
        ),
    ];
    for (name, value, stage) in tests {
        let Some(value) = value else { continue };
        let TestResult::Fail { error, sub_error } = parse_test_result(value) else {
            continue;
        };
        let id = stable_event_id(
            "dsregcmd.test",
            &[
                &ctx.device_id,
                diag.client_time.as_deref().unwrap_or_default(),
                name,
                value,
            ],
        );
        let mut event = base_event(stage, client_time.unwrap_or(ctx.now), id);
        event.error = Some(reported_error(error, "", &format!("{name} : {value}")));
        let mut attributes = Attributes::new();
        attributes.add("test", &slug(name));
        if let Some(sub_error) = sub_error {
            attributes.add("sub_error_code", &format_code(sub_error));
        }
        attributes.add_opt("user_context", diag.user_context.as_deref());
        event.attributes = attributes.into_map();
        parsed.push_event(event);
    }

    // 3. The device object is disabled or deleted in Entra (DeviceAuthStatus FAILED).
    if let Some(auth) = status.device_details.device_auth_status.as_deref()
        && auth.trim().to_ascii_uppercase().starts_with("FAILED")
    {
        let id = stable_event_id(
            "dsregcmd.device_auth",
            &[
                &ctx.device_id,
                status
                    .device_details
                    .device_id
                    .as_deref()
                    .unwrap_or_default(),
                auth,
            ],
        );
        let mut event = base_event(EnrollmentStage::Authentication, ctx.now, id);
        // Current builds print the failure code in the value ("FAILED. Error: 0xd000023c").
        event.error = Some(reported_error(first_code_in(auth), "", auth));
        let mut attributes = Attributes::new();
        attributes.add_opt(
            "entra_device_id",
            status.device_details.device_id.as_deref(),
        );
        event.attributes = attributes.into_map();
        parsed.push_event(event);
    }

    // 4. No PRT, with a recorded failed attempt.
    let sso = &status.sso_state;
    if yes_no(sso.azure_ad_prt.as_ref()) == Some(false)
        && (sso.attempt_status.is_some() || sso.server_error_code.is_some())
    {
        let attempt_at = sso
            .previous_prt_attempt
            .as_deref()
            .and_then(parse_dsreg_time)
            .unwrap_or(ctx.now);
        let id = stable_event_id(
            "dsregcmd.prt",
            &[
                &ctx.device_id,
                sso.previous_prt_attempt.as_deref().unwrap_or_default(),
                sso.attempt_status.as_deref().unwrap_or_default(),
                sso.correlation_id.as_deref().unwrap_or_default(),
            ],
        );
        let mut event = base_event(EnrollmentStage::Authentication, attempt_at, id);
        event.error = Some(reported_error(
            sso.attempt_status.as_deref().and_then(parse_code),
            sso.server_error_code.as_deref().unwrap_or_default(),
            sso.server_error_description.as_deref().unwrap_or_default(),
        ));
        event.user_principal_name = truncate_bytes(
            sso.user_identity.as_deref().unwrap_or_default(),
            MAX_UPN_BYTES,
        );
        let mut attributes = Attributes::new();
        attributes.add("token", "azure_ad_prt");
        attributes.add_opt("http_status", sso.http_status.as_deref());
        attributes.add_opt("http_error", sso.http_error.as_deref());
        attributes.add_opt("http_method", sso.http_method.as_deref());
        attributes.add_opt("endpoint_uri", sso.endpoint_uri.as_deref());
        attributes.add_opt("correlation_id", sso.correlation_id.as_deref());
        attributes.add_opt("credential_type", sso.credential_type.as_deref());
        event.attributes = attributes.into_map();
        parsed.push_event(event);
    }

    parsed.push_state(device_state(status, ctx, join_failure));
    parsed
}

fn device_state(
    status: &DsregStatus,
    ctx: &SourceContext,
    join_failure: Option<(OffsetDateTime, fleetpulse_proto::v1::ReportedError)>,
) -> DeviceState {
    let details = &status.device_details;
    let tenant = &status.tenant_details;
    let tpm = (yes_no(details.tpm_protected.as_ref()) == Some(true)).then(|| TpmInfo {
        // The device key lives in the TPM, so a TPM is present; its version and readiness
        // are not printed by dsregcmd.
        present: true,
        ..Default::default()
    });

    let work = &status.work_account;
    // Ids as printed are only typed when they are ids: documentation and pastes mask them
    // ("xxxxxxxx-xxxx-…") or shorten them, and a masked id must not become a tenant id.
    let device_id = details
        .device_id
        .as_deref()
        .or(work.workplace_device_id.as_deref());
    let tenant_id = tenant
        .tenant_id
        .as_deref()
        .or(work.workplace_tenant_id.as_deref());

    let mut attributes = Attributes::new();
    status.skipped.annotate(&mut attributes);
    match device_id {
        Some(id) if is_guid(id) => attributes.add("entra_device_id", id.trim()),
        Some(id) => attributes.add("entra_device_id_as_printed", id),
        None => {}
    }
    if let Some(id) = tenant_id.filter(|id| !is_guid(id)) {
        attributes.add("entra_tenant_id_as_printed", id);
    }
    attributes.add_opt("domain_name", status.device_state.domain_name.as_deref());
    attributes.add_opt("tpm_protected", details.tpm_protected.as_deref());
    attributes.add_opt("key_provider", details.key_provider.as_deref());
    attributes.add_opt("device_auth_status", details.device_auth_status.as_deref());
    attributes.add_opt(
        "device_certificate_validity",
        details.device_certificate_validity.as_deref(),
    );
    attributes.add_opt(
        "tenant_name",
        tenant
            .tenant_name
            .as_deref()
            .or(work.workplace_tenant_name.as_deref()),
    );
    attributes.add_opt("mdm_tou_url", tenant.mdm_tou_url.as_deref());
    attributes.add_opt("mdm_compliance_url", tenant.mdm_compliance_url.as_deref());
    attributes.add_opt(
        "workplace_joined",
        status.user_state.workplace_joined.as_deref(),
    );
    attributes.add_opt("ngc_set", status.user_state.ngc_set.as_deref());
    attributes.add_opt("workplace_mdm_url", work.workplace_mdm_url.as_deref());
    attributes.add_opt(
        "workplace_settings_url",
        work.workplace_settings_url.as_deref(),
    );
    attributes.add_opt("azure_ad_prt", status.sso_state.azure_ad_prt.as_deref());
    attributes.add_opt(
        "azure_ad_prt_update_time",
        status.sso_state.azure_ad_prt_update_time.as_deref(),
    );
    attributes.add_opt("enterprise_prt", status.sso_state.enterprise_prt.as_deref());
    attributes.add_opt("error_phase", status.diagnostics.error_phase.as_deref());
    attributes.add_opt(
        "client_error_code",
        status.diagnostics.client_error_code.as_deref(),
    );
    attributes.add_opt(
        "aad_recovery_enabled",
        status.diagnostics.aad_recovery_enabled.as_deref(),
    );
    attributes.add_opt("key_sign_test", status.diagnostics.key_sign_test.as_deref());
    attributes.add_opt(
        "pre_req_result",
        status.ngc_prerequisite_check.pre_req_result.as_deref(),
    );
    for unknown in &status.unknown {
        let key = format!("{}.{}", slug(&unknown.section), slug(&unknown.field.key));
        attributes.add(&key, &unknown.field.value);
    }

    let (last_at, last_outcome, last_error) = match join_failure {
        Some((at, error)) => (Some(timestamp_ms(at)), Outcome::Failed, Some(error)),
        None => (None, Outcome::Unspecified, None),
    };

    DeviceState {
        agent_id: ctx.agent_id.clone(),
        device_id: ctx.device_id.clone(),
        captured_at: Some(timestamp_ms(ctx.now)),
        platform: Platform::Windows as i32,
        join_state: status.join_state() as i32,
        // dsregcmd cannot tell whether the device is MDM-managed (MDM URLs present do not
        // prove it, per Microsoft); the registry source reports enrollment.
        mdm_enrolled: false,
        mdm_url: tenant
            .mdm_url
            .as_deref()
            .or(work.workplace_mdm_url.as_deref())
            .unwrap_or_default()
            .to_owned(),
        entra_tenant_id: tenant_id
            .filter(|id| is_guid(id))
            .map(|id| id.trim().to_owned())
            .unwrap_or_default(),
        tpm,
        primary_user_upn: truncate_bytes(
            status
                .sso_state
                .user_identity
                .as_deref()
                .unwrap_or_default(),
            MAX_UPN_BYTES,
        ),
        last_enrollment_attempt_at: last_at,
        last_enrollment_outcome: last_outcome as i32,
        last_enrollment_error: last_error,
        enrollment_method: status.enrollment_method() as i32,
        device_name: status.device_state.device_name.clone().unwrap_or_default(),
        attributes: attributes.into_map(),
        ..Default::default()
    }
}
