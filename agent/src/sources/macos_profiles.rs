//! macOS MDM enrollment from the `profiles` command.
//!
//! `profiles status -type enrollment` prints `Key: Value` lines:
//! ```text
//! Enrolled via DEP: No
//! MDM enrollment: Yes (User Approved)
//! MDM server: https://mdm.example.com/mdm/server
//! ```
//! (`MDM server` only when enrolled.) macOS 10.13.0-10.13.3 printed a single sentence
//! instead ("An enrollment profile is currently installed on this system" / "There is no
//! enrollment profile installed on this system"), read as `MDM enrollment: Yes` / `No`. `profiles show -type enrollment` prints the Automated
//! Device Enrollment (DEP) activation record as an old-style property list:
//! `Device Enrollment configuration:` followed by `{ Key = Value; ... }`, or an
//! `Error fetching Device Enrollment configuration: ...` line on a Mac without one. The input
//! may hold either output or both concatenated (the shim runs both).
//!
//! Mapping: `mdm_enrolled` from `MDM enrollment: Yes...`; `mdm_url` from `MDM server`;
//! enrollment method Apple ADE when `Enrolled via DEP: Yes`, else unspecified (a
//! profile-based device enrollment and a User Enrollment print the same). Lines of neither
//! shape are skipped and counted; a DEP record cut short keeps what was read. `User Approved`, the DEP record's organisation, configuration
//! URL, supervision and the unknown keys travel as attributes.

use fleetpulse_proto::v1::{DeviceState, EnrollmentMethod, Platform};

use super::{
    Attributes, ParseError, Parsed, Skipped, SourceContext, excerpt, numbered_lines, slug,
    timestamp_ms,
};

/// What the two commands printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilesStatus {
    /// `Key: Value` lines of `profiles status`, in order.
    pub status: Vec<(String, String)>,
    /// Top-level `Key = Value;` entries of the DEP activation record, values unquoted.
    pub dep_record: Vec<(String, String)>,
    /// The error `profiles show` printed instead of a record.
    pub dep_error: Option<String>,
    /// Lines of neither shape (and a DEP record cut short), skipped.
    pub skipped: Skipped,
}

impl ProfilesStatus {
    /// The status value called `key` (case-insensitive).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.status
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn dep_value(&self, key: &str) -> Option<&str> {
        self.dep_record
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

fn starts_yes(value: Option<&str>) -> Option<bool> {
    let value = value?.trim();
    let first = value
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or_default();
    if first.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if first.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_owned(),
    }
}

/// Parses `profiles status -type enrollment` and/or `profiles show -type enrollment` output.
pub fn parse_status(text: &str) -> Result<ProfilesStatus, ParseError> {
    let mut result = ProfilesStatus::default();
    let mut lines = numbered_lines(text);
    let mut last_number = 0;
    while let Some((number, line)) = lines.next() {
        last_number = number;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        const FETCH_ERROR: &str = "Error fetching Device Enrollment configuration";
        if let Some(rest) = trimmed.strip_prefix(FETCH_ERROR) {
            // "…configuration: Client is not DEP enabled.", "…configuration: (34000) Client
            // is not DEP enabled." (current macOS) and "…configuration - Request too soon.
            // Try again later." (a throttled fetch).
            result.dep_error = Some(
                rest.trim_start_matches(|c: char| c == ':' || c == '-' || c.is_whitespace())
                    .to_owned(),
            );
            continue;
        }
        // macOS 10.13.0-10.13.3 printed one sentence instead of the Key: Value lines.
        const LEGACY: [(&str, &str); 2] = [
            ("An enrollment profile is currently installed", "Yes"),
            ("There is no enrollment profile installed", "No"),
        ];
        if let Some((_, enrolled)) = LEGACY.iter().find(|(p, _)| trimmed.starts_with(p)) {
            for (key, value) in [("MDM enrollment", *enrolled), ("legacy status", trimmed)] {
                result.status.push((key.to_owned(), value.to_owned()));
            }
            continue;
        }
        if trimmed.eq_ignore_ascii_case("Device Enrollment configuration:") {
            // A record cut short keeps the entries read before the cut.
            if let Err(err) = parse_record(&mut lines, number, &mut result.dep_record) {
                result.skipped.line(err.line, &err.message);
            }
            continue;
        }
        let Some((key, value)) = trimmed
            .split_once(':')
            .filter(|(key, _)| !key.trim().is_empty())
        else {
            result.skipped.line(number, trimmed);
            continue;
        };
        result
            .status
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    if result.value("MDM enrollment").is_none()
        && result.dep_record.is_empty()
        && result.dep_error.is_none()
    {
        return Err(ParseError::at_line(
            last_number.max(1),
            "missing \"MDM enrollment:\" line (expected `profiles status -type enrollment` output; truncated?)",
        ));
    }
    Ok(result)
}

/// Reads the `{ ... }` property list after "Device Enrollment configuration:", keeping the
/// top-level `Key = Value;` entries and skipping nested arrays and dictionaries.
fn parse_record<'a>(
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
    header_line: usize,
    out: &mut Vec<(String, String)>,
) -> Result<(), ParseError> {
    let mut depth = 0usize;
    let mut last = header_line;
    for (number, line) in lines.by_ref() {
        last = number;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if depth == 0 {
            if trimmed == "{" {
                depth = 1;
                continue;
            }
            if trimmed == "(null)" {
                return Ok(());
            }
            return Err(ParseError::at_line(
                number,
                format!("expected \"{{\", found \"{}\"", excerpt(trimmed)),
            ));
        }
        if depth == 1 && (trimmed == "}" || trimmed == "};") {
            return Ok(());
        }
        let opens = trimmed.ends_with('(') || trimmed.ends_with('{');
        let closes = trimmed.starts_with(')') || trimmed.starts_with('}');
        if depth == 1 && !closes {
            let Some((key, value)) = trimmed.split_once(" = ") else {
                return Err(ParseError::at_line(
                    number,
                    format!("expected \"Key = Value;\", found \"{}\"", excerpt(trimmed)),
                ));
            };
            if !opens {
                let value = value.strip_suffix(';').unwrap_or(value);
                out.push((unquote(key), unquote(value)));
            }
        }
        if opens {
            depth += 1;
        } else if closes {
            depth = depth.saturating_sub(1);
        }
    }
    Err(ParseError::at_line(
        last,
        "truncated input: Device Enrollment configuration is not closed by \"}\"",
    ))
}

/// Parses the output into a macOS snapshot.
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    let status = parse_status(text)?;
    status.skipped.warn_once("macos_profiles");
    let enrolled = starts_yes(status.value("MDM enrollment")).unwrap_or(false);
    let via_dep = starts_yes(status.value("Enrolled via DEP"));
    // Enrolled without DEP is a profile-based enrollment, which `profiles` does not tell
    // apart from User Enrollment: the method stays unspecified rather than guessed.
    let method = match via_dep {
        Some(true) => EnrollmentMethod::AppleAde,
        _ => EnrollmentMethod::Unspecified,
    };

    let mut attributes = Attributes::new();
    status.skipped.annotate(&mut attributes);
    attributes.add_opt("enrolled_via_dep", status.value("Enrolled via DEP"));
    attributes.add_opt("mdm_enrollment", status.value("MDM enrollment"));
    if let Some(mdm) = status.value("MDM enrollment") {
        attributes.add(
            "user_approved",
            if mdm.to_ascii_lowercase().contains("user approved") {
                "yes"
            } else {
                "no"
            },
        );
    }
    attributes.add_opt("dep_error", status.dep_error.as_deref());
    // Current macOS prefixes the message with its error code: "(34000) Client is not DEP
    // enabled.", "(34006) …" when Apple's service cannot be reached.
    if let Some(code) = status
        .dep_error
        .as_deref()
        .and_then(|e| e.strip_prefix('('))
        .and_then(|e| e.split_once(')'))
        .map(|(code, _)| code)
        .filter(|code| !code.is_empty() && code.chars().all(|c| c.is_ascii_digit()))
    {
        attributes.add("dep_error_code", code);
    }
    for key in [
        "OrganizationName",
        "ConfigurationURL",
        "IsSupervised",
        "IsMandatory",
        "IsMDMUnremovable",
        "OrganizationDepartment",
    ] {
        attributes.add_opt(&format!("dep.{}", slug(key)), status.dep_value(key));
    }
    for (key, value) in &status.status {
        let known = ["enrolled via dep", "mdm enrollment", "mdm server"];
        if !known.contains(&key.to_ascii_lowercase().as_str()) {
            attributes.add(&format!("profiles.{}", slug(key)), value);
        }
    }

    let mut parsed = Parsed::default();
    parsed.push_state(DeviceState {
        agent_id: ctx.agent_id.clone(),
        device_id: ctx.device_id.clone(),
        captured_at: Some(timestamp_ms(ctx.now)),
        platform: Platform::Macos as i32,
        mdm_enrolled: enrolled,
        mdm_url: status.value("MDM server").unwrap_or_default().to_owned(),
        enrollment_method: method as i32,
        attributes: attributes.into_map(),
        ..Default::default()
    });
    Ok(parsed)
}
