//! MDM enrollment state from the registry, as printed by
//! `reg query HKLM\SOFTWARE\Microsoft\Enrollments /s`, or as exported by `reg export` /
//! regedit (`.reg` files, which administrators publish and attach to tickets far more often:
//! `[HKEY_...]` key lines and `"Name"=dword:00000001` / `"Name"="text"` values, read into the
//! same keys and values, see [`reg_file_value`]).
//!
//! The output is a list of keys (`HKEY_LOCAL_MACHINE\...`, unindented), each followed by its
//! values, one per line: four spaces, name, four spaces, `REG_*` type, four spaces, data (the
//! data may be absent for empty strings). Value names may contain spaces; the type token is
//! what separates name from data.
//!
//! Each direct subkey of `...\Enrollments` named by a GUID is one enrollment. Its
//! `EnrollmentState` is read with the meanings of Intune's `enrollmentState` (0 unknown,
//! 1 enrolled, 2 pendingReset, 3 failed, 4 notContacted, 5 blocked). Microsoft does not
//! document the registry value itself; this mapping is the one the community (e.g. Fleet's
//! Windows MDM notes) uses, and at least one Windows 11 build was reported to show 3 on a
//! working enrollment, so the raw value always travels along in the attributes.
//!
//! Output: one snapshot (`mdm_enrolled` when an enrollment with a `ProviderID` is in state 1;
//! URL, UPN and tenant from the primary enrollment) and one failed event per enrollment in
//! state 3 (failed) or 5 (blocked).
//!
//! The Autopilot profile the device downloaded is kept by Windows under
//! `HKLM\SOFTWARE\Microsoft\Provisioning\Diagnostics\Autopilot` (part of the MDM diagnostics
//! registry dump; the agent queries it next to the enrollments): its documented profile values
//! (the `CloudAssigned*` properties of the Autopilot configuration file, and
//! `IsAutoPilotDisabled`) travel as `autopilot.*` attributes, with `autopilot.profile` =
//! `downloaded` when the key names a tenant and `none` when it is present without one (an
//! empty tenant id is how an unregistered or unassigned device looks). They never set the
//! snapshot's tenant: the profile's tenant is where the device is registered, not proof of a
//! join.

use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentStage, Outcome, Platform, Source, SourceKind,
};

use super::{
    Attributes, MAX_UPN_BYTES, ParseError, Parsed, Skipped, SourceContext, numbered_lines,
    parse_code, reported_error, stable_event_id, timestamp_ms, truncate_bytes,
};

/// One registry value as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegValue {
    pub name: String,
    /// `REG_SZ`, `REG_DWORD`, ...
    pub kind: String,
    pub data: String,
    pub line: usize,
}

/// One key with its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegKey {
    pub path: String,
    pub line: usize,
    pub values: Vec<RegValue>,
}

impl RegKey {
    /// The data of the value called `name` (case-insensitive).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
            .map(|v| v.data.as_str())
    }
}

/// One enrollment (`...\Enrollments\<GUID>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub guid: String,
    pub key: RegKey,
    pub state: Option<u32>,
}

impl Enrollment {
    pub fn provider_id(&self) -> Option<&str> {
        self.key.value("ProviderID").filter(|p| !p.is_empty())
    }
}

/// The name of an `EnrollmentState` value (Intune `enrollmentState` members).
pub fn enrollment_state_name(state: u32) -> &'static str {
    match state {
        0 => "unknown",
        1 => "enrolled",
        2 => "pending_reset",
        3 => "failed",
        4 => "not_contacted",
        5 => "blocked",
        _ => "unrecognized",
    }
}

const REG_TYPES: &[&str] = &[
    "REG_SZ",
    "REG_EXPAND_SZ",
    "REG_MULTI_SZ",
    "REG_DWORD",
    "REG_DWORD_BIG_ENDIAN",
    "REG_QWORD",
    "REG_BINARY",
    "REG_NONE",
    "REG_LINK",
    "REG_RESOURCE_LIST",
    "REG_FULL_RESOURCE_DESCRIPTOR",
    "REG_RESOURCE_REQUIREMENTS_LIST",
];

/// Splits `Name    REG_TYPE    Data` (leading indentation already removed).
fn split_value(line: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(found) = line[from..].find("    REG_") {
        let type_start = from + found + 4;
        let rest = &line[type_start..];
        let type_len = rest.find(' ').unwrap_or(rest.len());
        let kind = &rest[..type_len];
        if REG_TYPES.contains(&kind) {
            let data = rest[type_len..]
                .strip_prefix("    ")
                .unwrap_or(&rest[type_len..]);
            return Some((line[..from + found].trim(), kind, data.trim_end()));
        }
        from = type_start;
    }
    None
}

/// Parses `reg query ... /s` output into keys and values.
pub fn parse_keys(text: &str) -> Result<Vec<RegKey>, ParseError> {
    parse_keys_detailed(text).map(|(keys, _)| keys)
}

/// Parses `reg query ... /s` output into keys and values, skipping (and counting) lines that
/// are neither: the localized "End of search" trailer, prompts, half lines of a cut copy.
/// Only an output without any key is an error.
pub fn parse_keys_detailed(text: &str) -> Result<(Vec<RegKey>, Skipped), ParseError> {
    let mut keys: Vec<RegKey> = Vec::new();
    let mut skipped = Skipped::default();
    for (number, line) in numbered_lines(text) {
        if line.trim().is_empty() || line.trim_start().starts_with("End of search:") {
            continue;
        }
        // `.reg` export: `[HKEY_...]` opens a key (published copies keep a trailing blank).
        if let Some(path) = line
            .trim()
            .strip_prefix("[HKEY_")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            keys.push(RegKey {
                path: format!("HKEY_{path}"),
                line: number,
                values: Vec::new(),
            });
            continue;
        }
        if let (Some(key), Some(value)) = (keys.last_mut(), reg_file_value(line.trim(), number)) {
            key.values.push(value);
            continue;
        }
        if line.starts_with("HKEY_") || line.starts_with("HKLM\\") || line.starts_with("HKCU\\") {
            keys.push(RegKey {
                path: line.trim_end().to_owned(),
                line: number,
                values: Vec::new(),
            });
            continue;
        }
        let value = line
            .starts_with(' ')
            .then(|| split_value(line.trim_start()))
            .flatten();
        match (keys.last_mut(), value) {
            (Some(key), Some((name, kind, data))) => key.values.push(RegValue {
                name: name.to_owned(),
                kind: kind.to_owned(),
                data: data.to_owned(),
                line: number,
            }),
            _ => skipped.line(number, line),
        }
    }
    if keys.is_empty() {
        let found = skipped.found_suffix();
        return Err(ParseError::at_line(
            1,
            format!("no registry keys found (expected `reg query ... /s` output{found})"),
        ));
    }
    Ok((keys, skipped))
}

/// One value line of a `.reg` export, as `reg query` would print it: `"Name"=dword:0000000a`
/// becomes `REG_DWORD` `0xa`, `"Name"="text"` (with `\\` and `\"` escapes) `REG_SZ`, `@=` the
/// default value `(Default)`, `hex...:` values keep their hex text under `REG_BINARY` (their
/// continuation lines are skipped). None for anything else.
fn reg_file_value(line: &str, number: usize) -> Option<RegValue> {
    let (name, data) = if let Some(rest) = line.strip_prefix("@=") {
        ("(Default)".to_owned(), rest)
    } else {
        let rest = line.strip_prefix('"')?;
        let end = closing_quote(rest)?;
        let data = rest[end + 1..].strip_prefix('=')?;
        (unescape_reg(&rest[..end]), data)
    };
    let (kind, data) = if let Some(hex) = data.strip_prefix("dword:") {
        let value = u32::from_str_radix(hex.trim(), 16).ok()?;
        ("REG_DWORD", format!("{value:#x}"))
    } else if let Some(text) = data.strip_prefix('"') {
        let end = closing_quote(text)?;
        ("REG_SZ", unescape_reg(&text[..end]))
    } else if data.starts_with("hex") {
        ("REG_BINARY", data.trim_end_matches('\\').to_owned())
    } else {
        return None;
    };
    Some(RegValue {
        name,
        kind: kind.to_owned(),
        data,
        line: number,
    })
}

/// The index of the first unescaped `"` of a `.reg` string body.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape_reg(text: &str) -> String {
    text.replace("\\\"", "\"").replace("\\\\", "\\")
}

fn is_guid(name: &str) -> bool {
    let name = name
        .strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name);
    let groups: Vec<&str> = name.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The enrollments among the keys: direct GUID-named subkeys of `...\Enrollments`.
pub fn enrollments(keys: &[RegKey]) -> Result<Vec<Enrollment>, ParseError> {
    let mut found = Vec::new();
    for key in keys {
        let mut parts = key.path.rsplitn(2, '\\');
        let (Some(leaf), Some(parent)) = (parts.next(), parts.next()) else {
            continue;
        };
        let parent_is_root = parent
            .rsplit('\\')
            .next()
            .is_some_and(|p| p.eq_ignore_ascii_case("Enrollments"));
        if !parent_is_root || !is_guid(leaf) {
            continue;
        }
        let state = match key
            .values
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case("EnrollmentState"))
        {
            // A value that is not a number establishes no state; it still travels as the
            // raw value in the key.
            Some(value) => parse_code(&value.data),
            None => None,
        };
        found.push(Enrollment {
            guid: leaf.to_owned(),
            key: key.clone(),
            state,
        });
    }
    Ok(found)
}

/// Parses the output into a snapshot plus events for failed or blocked enrollments.
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    let (keys, skipped) = parse_keys_detailed(text)?;
    skipped.warn_once("registry");
    let enrollments = enrollments(&keys)?;
    let mut parsed = Parsed::default();

    for enrollment in &enrollments {
        let Some(state @ (3 | 5)) = enrollment.state else {
            continue;
        };
        let path_message = format!("{} EnrollmentState={:#x}", enrollment.key.path, state);
        let mut attributes = enrollment_attributes(enrollment);
        attributes.add("enrollment_state_name", enrollment_state_name(state));
        parsed.push_event(EnrollmentEvent {
            event_id: stable_event_id(
                "registry.enrollment",
                &[&ctx.device_id, &enrollment.guid, &state.to_string()],
            ),
            agent_id: ctx.agent_id.clone(),
            device_id: ctx.device_id.clone(),
            occurred_at: Some(timestamp_ms(ctx.now)),
            platform: Platform::Windows as i32,
            stage: EnrollmentStage::Complete as i32,
            outcome: Outcome::Failed as i32,
            error: Some(reported_error(None, "", &path_message)),
            source: Some(Source {
                kind: SourceKind::MdmDiagnostics as i32,
                ..Default::default()
            }),
            user_principal_name: truncate_bytes(
                enrollment.key.value("UPN").unwrap_or_default(),
                MAX_UPN_BYTES,
            ),
            attributes: attributes.into_map(),
            ..Default::default()
        });
    }

    // The primary enrollment: an MDM one (with a ProviderID), preferring Intune's
    // "MS DM Server", then an enrolled one, then the first.
    let mdm: Vec<&Enrollment> = enrollments
        .iter()
        .filter(|e| e.provider_id().is_some())
        .collect();
    let primary = mdm
        .iter()
        .find(|e| e.provider_id() == Some("MS DM Server") && e.state == Some(1))
        .or_else(|| mdm.iter().find(|e| e.state == Some(1)))
        .or_else(|| mdm.first())
        .copied();

    let mut attributes = Attributes::new();
    skipped.annotate(&mut attributes);
    attributes.add("enrollment_count", &enrollments.len().to_string());
    attributes.add("mdm_enrollment_count", &mdm.len().to_string());
    if let Some(autopilot) = autopilot_key(&keys) {
        attributes.extend(autopilot_attributes(autopilot));
    }
    if let Some(primary) = primary {
        attributes.extend(enrollment_attributes(primary));
    }
    let state = DeviceState {
        agent_id: ctx.agent_id.clone(),
        device_id: ctx.device_id.clone(),
        captured_at: Some(timestamp_ms(ctx.now)),
        platform: Platform::Windows as i32,
        mdm_enrolled: mdm.iter().any(|e| e.state == Some(1)),
        mdm_url: primary
            .and_then(|e| e.key.value("DiscoveryServiceFullURL"))
            .unwrap_or_default()
            .to_owned(),
        entra_tenant_id: primary
            .and_then(|e| e.key.value("AADTenantID"))
            .unwrap_or_default()
            .to_owned(),
        primary_user_upn: truncate_bytes(
            primary.and_then(|e| e.key.value("UPN")).unwrap_or_default(),
            MAX_UPN_BYTES,
        ),
        attributes: attributes.into_map(),
        ..Default::default()
    };
    parsed.push_state(state);
    Ok(parsed)
}

/// The Autopilot diagnostics key (`...\Provisioning\Diagnostics\Autopilot`), when present.
pub fn autopilot_key(keys: &[RegKey]) -> Option<&RegKey> {
    keys.iter().find(|key| {
        let path = key.path.to_ascii_lowercase();
        path.ends_with(r"\provisioning\diagnostics\autopilot")
    })
}

/// The Autopilot profile values Microsoft documents (the Autopilot configuration file's
/// properties), as `autopilot.*` attributes.
fn autopilot_attributes(key: &RegKey) -> Attributes {
    let mut attributes = Attributes::new();
    let tenant = key
        .value("CloudAssignedTenantId")
        .map(str::trim)
        .filter(|t| !t.is_empty());
    attributes.add(
        "autopilot.profile",
        if tenant.is_some() {
            "downloaded"
        } else {
            "none"
        },
    );
    for name in [
        "CloudAssignedTenantId",
        "CloudAssignedTenantDomain",
        "CloudAssignedForcedEnrollment",
        "CloudAssignedOobeConfig",
        "CloudAssignedDomainJoinMethod",
        "CloudAssignedDeviceName",
        "IsAutoPilotDisabled",
        "ZtdCorrelationId",
    ] {
        if let Some(value) = key.value(name).filter(|v| !v.trim().is_empty()) {
            attributes.add(&format!("autopilot.{}", super::slug(name)), value.trim());
        }
    }
    attributes
}

fn enrollment_attributes(enrollment: &Enrollment) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.add("enrollment_guid", &enrollment.guid);
    if let Some(state) = enrollment.state {
        attributes.add("enrollment_state", &state.to_string());
    }
    for name in [
        "ProviderID",
        "EnrollmentType",
        "DiscoveryServiceFullURL",
        "AADResourceID",
        "AADTenantID",
        "IsFederated",
        "RenewErrorCode",
        "RenewStatus",
    ] {
        if let Some(value) = enrollment.key.value(name) {
            attributes.add(&super::slug(name), value);
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_export_files_read_like_reg_query() {
        let text = "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Enrollments\\C3A8C2E4-91D7-4E31-A8B9-0F5D6C1B2A77] \r\n\"EnrollmentState\"=dword:00000003 \r\n\"ProviderID\"=\"MS DM Server\"\r\n\"UPN\"=\"a\\\\b \\\"q\\\"\"\r\n@=\"default\"\r\n\"Blob\"=hex:01,02,\\\r\n  03\r\n";
        let (keys, skipped) = parse_keys_detailed(text).unwrap();
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!(
            key.path,
            "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Enrollments\\C3A8C2E4-91D7-4E31-A8B9-0F5D6C1B2A77"
        );
        let value = |name: &str| key.values.iter().find(|v| v.name == name).cloned().unwrap();
        assert_eq!(value("EnrollmentState").kind, "REG_DWORD");
        assert_eq!(value("EnrollmentState").data, "0x3");
        assert_eq!(value("ProviderID").data, "MS DM Server");
        assert_eq!(value("UPN").data, "a\\b \"q\"");
        assert_eq!(value("(Default)").data, "default");
        assert_eq!(value("Blob").kind, "REG_BINARY");
        // The header line and the hex continuation line.
        assert_eq!(skipped.count, 2);
        let enrollments = enrollments(&keys).unwrap();
        assert_eq!(enrollments.len(), 1);
    }

    #[test]
    fn the_autopilot_key_travels_as_attributes_without_setting_the_tenant() {
        let text = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Provisioning\\Diagnostics\\Autopilot\r\n    CloudAssignedTenantId    REG_SZ    72f988bf-86f1-41af-91ab-2d7cd011db47\r\n    CloudAssignedTenantDomain    REG_SZ    contoso.onmicrosoft.com\r\n    CloudAssignedForcedEnrollment    REG_DWORD    0x1\r\n    CloudAssignedLanguage    REG_SZ\r\n";
        let ctx = SourceContext {
            agent_id: "a".into(),
            device_id: "d".into(),
            platform: Platform::Windows,
            now: time::macros::datetime!(2025-01-01 00:00:00 UTC),
        };
        let parsed = parse(text, &ctx).unwrap();
        let state = parsed.states().next().unwrap();
        let attr = |k: &str| state.attributes.get(k).map(String::as_str);
        assert_eq!(attr("autopilot.profile"), Some("downloaded"));
        assert_eq!(
            attr("autopilot.cloud_assigned_tenant_domain"),
            Some("contoso.onmicrosoft.com")
        );
        assert_eq!(
            attr("autopilot.cloud_assigned_forced_enrollment"),
            Some("0x1")
        );
        assert_eq!(attr("autopilot.cloud_assigned_language"), None);
        assert_eq!(state.entra_tenant_id, "");
        assert_eq!(parsed.events().count(), 0);
    }

    #[test]
    fn values_split_on_the_type_token() {
        assert_eq!(
            split_value("EnrollmentState    REG_DWORD    0x1"),
            Some(("EnrollmentState", "REG_DWORD", "0x1"))
        );
        assert_eq!(split_value("UPN    REG_SZ"), Some(("UPN", "REG_SZ", "")));
        assert_eq!(
            split_value("Some Name    REG_SZ    a    REG_SZ    b"),
            Some(("Some Name", "REG_SZ", "a    REG_SZ    b"))
        );
        assert_eq!(split_value("no type here"), None);
    }

    #[test]
    fn guids_are_recognised() {
        assert!(is_guid("4A9EAC9B-04E6-4BD2-9B05-2C18DDDAC8D3"));
        assert!(is_guid("{4A9EAC9B-04E6-4BD2-9B05-2C18DDDAC8D3}"));
        assert!(!is_guid("Context"));
        assert!(!is_guid("FFFFFFFF-FFFF-FFFF-FFFF"));
    }
}
