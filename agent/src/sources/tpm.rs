//! TPM state from `tpmtool getdeviceinformation` or PowerShell `Get-Tpm` (Format-List).
//!
//! `tpmtool` prints `-Key: Value` lines (`-TPM Present: True`, `-TPM Version: 2.0`,
//! `-TPM Manufacturer ID: INTC`, `-Ready For Storage: True`, ...) with a tab-indented block
//! under `-Lockout Information:`. `Get-Tpm` prints `Key : Value` with padded keys
//! (`TpmPresent : True`, `TpmReady : True`, `ManufacturerIdTxt : INTC`, ...), long values
//! wrapped onto indented continuation lines. The format is detected from the first
//! non-blank line.
//!
//! Mapping to `TpmInfo`:
//! - tpmtool: present = `TPM Present`; spec_version = `TPM Version`; ready =
//!   `Ready For Storage` (the TPM is provisioned for use, which is what `Get-Tpm`'s TpmReady
//!   says); manufacturer = `TPM Manufacturer ID`. `Ready For Attestation` (needed by
//!   Autopilot self-deploying) and the rest travel as attributes.
//! - Get-Tpm: present = `TpmPresent`; ready = `TpmReady`; manufacturer = `ManufacturerIdTxt`
//!   (or the four ASCII bytes of the numeric `ManufacturerId`). Get-Tpm does not print the
//!   spec version; it is inferred from `ManufacturerVersionFull20`, which holds a version on a
//!   TPM 2.0 and "Not Supported for TPM 1.2" on a 1.2 part; without it the version is left
//!   empty rather than guessed.

use fleetpulse_proto::v1::{DeviceState, Platform, TpmInfo};

use super::{
    Attributes, MAX_MANUFACTURER_BYTES, ParseError, Parsed, SourceContext, excerpt, numbered_lines,
    slug, timestamp_ms, truncate_bytes,
};

/// Which tool printed the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmFormat {
    Tpmtool,
    GetTpm,
}

/// One `key: value` pair as printed; `group` is the enclosing block for tpmtool's nested
/// lines ("Lockout Information").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmField {
    pub group: Option<String>,
    pub key: String,
    pub value: String,
}

/// The fields of one output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmReport {
    pub format: TpmFormat,
    pub fields: Vec<TpmField>,
}

impl TpmReport {
    /// The top-level value called `key` (case-insensitive).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.group.is_none() && f.key.eq_ignore_ascii_case(key))
            .map(|f| f.value.as_str())
    }

    fn flag(&self, key: &str) -> Option<bool> {
        match self.value(key)?.trim() {
            v if v.eq_ignore_ascii_case("true") => Some(true),
            v if v.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// The `TpmInfo` this report describes.
    pub fn tpm_info(&self) -> TpmInfo {
        match self.format {
            TpmFormat::Tpmtool => TpmInfo {
                present: self.flag("TPM Present").unwrap_or(false),
                spec_version: self.value("TPM Version").unwrap_or_default().to_owned(),
                ready: self.flag("Ready For Storage").unwrap_or(false),
                manufacturer: truncate_bytes(
                    self.value("TPM Manufacturer ID").unwrap_or_default(),
                    MAX_MANUFACTURER_BYTES,
                ),
            },
            TpmFormat::GetTpm => {
                let manufacturer = self
                    .value("ManufacturerIdTxt")
                    .filter(|m| !m.trim().is_empty())
                    .map(|m| m.trim().to_owned())
                    .or_else(|| self.value("ManufacturerId").and_then(manufacturer_from_id))
                    .unwrap_or_default();
                let spec_version = match self.value("ManufacturerVersionFull20") {
                    Some(v)
                        if v.contains("1.2")
                            && v.to_ascii_lowercase().contains("not supported") =>
                    {
                        "1.2"
                    }
                    Some(v) if !v.trim().is_empty() => "2.0",
                    _ => "",
                };
                TpmInfo {
                    present: self.flag("TpmPresent").unwrap_or(false),
                    spec_version: spec_version.to_owned(),
                    ready: self.flag("TpmReady").unwrap_or(false),
                    manufacturer: truncate_bytes(&manufacturer, MAX_MANUFACTURER_BYTES),
                }
            }
        }
    }
}

/// `1229870147` -> "INTC": the TCG vendor id is four ASCII bytes, big endian, space padded.
fn manufacturer_from_id(id: &str) -> Option<String> {
    let id: u32 = id.trim().parse().ok()?;
    let text: String = id.to_be_bytes().iter().map(|&b| b as char).collect();
    let text = text
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_owned();
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_graphic())).then_some(text)
}

/// Parses either tool's output.
pub fn parse_report(text: &str) -> Result<TpmReport, ParseError> {
    let first = numbered_lines(text).find(|(_, line)| !line.trim().is_empty());
    let Some((first_number, first_line)) = first else {
        return Err(ParseError::at_line(
            1,
            "empty input (expected tpmtool or Get-Tpm output)",
        ));
    };
    let format = if first_line.trim_start().starts_with('-') {
        TpmFormat::Tpmtool
    } else if first_line.contains(':') {
        TpmFormat::GetTpm
    } else {
        return Err(ParseError::at_line(
            first_number,
            format!(
                "expected \"-TPM Present: ...\" (tpmtool) or \"TpmPresent : ...\" (Get-Tpm), found \"{}\"",
                excerpt(first_line)
            ),
        ));
    };
    let mut fields: Vec<TpmField> = Vec::new();
    let mut group: Option<String> = None;
    for (number, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        match format {
            TpmFormat::Tpmtool => {
                let nested = line.starts_with('\t') || line.starts_with("  ");
                let Some(body) = line.trim().strip_prefix('-') else {
                    return Err(ParseError::at_line(
                        number,
                        format!("expected \"-Key: Value\", found \"{}\"", excerpt(line)),
                    ));
                };
                let Some((key, value)) = body.split_once(':') else {
                    return Err(ParseError::at_line(
                        number,
                        format!("expected \"-Key: Value\", found \"{}\"", excerpt(line)),
                    ));
                };
                let (key, value) = (key.trim(), value.trim());
                if key.is_empty() {
                    return Err(ParseError::at_line(
                        number,
                        format!("empty key in \"{}\"", excerpt(line)),
                    ));
                }
                if !nested {
                    group = None;
                }
                if !nested && value.is_empty() {
                    // A block header such as "-Lockout Information:".
                    group = Some(key.to_owned());
                    continue;
                }
                fields.push(TpmField {
                    group: group.clone(),
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
            TpmFormat::GetTpm => {
                let continuation = line.starts_with(' ') && !line.contains(" : ");
                if continuation {
                    let Some(last) = fields.last_mut() else {
                        return Err(ParseError::at_line(
                            number,
                            format!("expected \"Key : Value\", found \"{}\"", excerpt(line)),
                        ));
                    };
                    last.value.push_str(line.trim());
                    continue;
                }
                let Some((key, value)) = line.split_once(':') else {
                    return Err(ParseError::at_line(
                        number,
                        format!("expected \"Key : Value\", found \"{}\"", excerpt(line)),
                    ));
                };
                let key = key.trim();
                if key.is_empty() || key.contains(' ') {
                    return Err(ParseError::at_line(
                        number,
                        format!("expected \"Key : Value\", found \"{}\"", excerpt(line)),
                    ));
                }
                fields.push(TpmField {
                    group: None,
                    key: key.to_owned(),
                    value: value.trim().to_owned(),
                });
            }
        }
    }
    let report = TpmReport { format, fields };
    let required = match format {
        TpmFormat::Tpmtool => "TPM Present",
        TpmFormat::GetTpm => "TpmPresent",
    };
    if report.value(required).is_none() {
        let (last, _) = numbered_lines(text).last().unwrap_or((1, ""));
        return Err(ParseError::at_line(
            last,
            format!("missing \"{required}\" (truncated input?)"),
        ));
    }
    Ok(report)
}

/// Parses the output into a snapshot carrying the TPM state (and the other fields as
/// attributes).
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    let report = parse_report(text)?;
    let mut attributes = Attributes::new();
    attributes.add(
        "tpm_source",
        match report.format {
            TpmFormat::Tpmtool => "tpmtool",
            TpmFormat::GetTpm => "get_tpm",
        },
    );
    for field in &report.fields {
        let key = match &field.group {
            Some(group) => format!("tpm.{}.{}", slug(group), slug(&field.key)),
            None => format!("tpm.{}", slug(&field.key)),
        };
        attributes.add(&key, &field.value);
    }
    let mut parsed = Parsed::default();
    parsed.push_state(DeviceState {
        agent_id: ctx.agent_id.clone(),
        device_id: ctx.device_id.clone(),
        captured_at: Some(timestamp_ms(ctx.now)),
        platform: Platform::Windows as i32,
        tpm: Some(report.tpm_info()),
        attributes: attributes.into_map(),
        ..Default::default()
    });
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_manufacturer_ids_decode_to_ascii() {
        assert_eq!(manufacturer_from_id("1229870147").as_deref(), Some("INTC"));
        assert_eq!(manufacturer_from_id("1229346816").as_deref(), Some("IFX"));
        assert_eq!(manufacturer_from_id("0"), None);
    }
}
