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
    Attributes, MAX_MANUFACTURER_BYTES, ParseError, Parsed, Skipped, SourceContext, numbered_lines,
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

/// tpmtool labels of localized Windows, as published, mapped to the English labels. Only
/// languages with a published output are listed (the source of each is named); other
/// languages fall back to [`Labels::Positional`].
///
/// French: the `tpmtool getdeviceinformation` output pasted in
/// MicrosoftDocs/windows-itpro-docs#5429 (Windows 10, Infineon TPM).
const TRANSLATED_LABELS: &[(&str, &str, &str)] = &[
    ("fr", "TPM présent", "TPM Present"),
    ("fr", "Version du TPM", "TPM Version"),
    ("fr", "ID du fabricant du TPM", "TPM Manufacturer ID"),
    (
        "fr",
        "Nom complet du fabricant du TPM",
        "TPM Manufacturer Full Name",
    ),
    (
        "fr",
        "Version du fabricant du TPM",
        "TPM Manufacturer Version",
    ),
    ("fr", "Version du PPI", "PPI Version"),
    ("fr", "Initialisé", "Is Initialized"),
    ("fr", "Prêt pour le stockage", "Ready For Storage"),
    ("fr", "Prêt pour l'attestation", "Ready For Attestation"),
    (
        "fr",
        "Compatible avec l'attestation",
        "Is Capable For Attestation",
    ),
    (
        "fr",
        "Désactivation obligatoire pour récupérer",
        "Clear Needed To Recover",
    ),
    ("fr", "Désactiver les éléments possibles", "Clear Possible"),
];

/// The English label and language of a translated tpmtool label (typographic apostrophes
/// folded, case ignored).
fn translate_label(label: &str) -> Option<(&'static str, &'static str)> {
    let folded = label.replace('\u{2019}', "'").to_lowercase();
    TRANSLATED_LABELS
        .iter()
        .find(|(_, local, _)| local.to_lowercase() == folded)
        .map(|(lang, _, english)| (*lang, *english))
}

/// How tpmtool's labels were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// English labels, matched by name.
    English,
    /// Labels of a language in [`TRANSLATED_LABELS`] (the language code), mapped to English.
    Translated(&'static str),
    /// Labels of a language the parser does not know: the first three top-level fields are
    /// read by position. tpmtool prints "TPM Present", "TPM Version" and "TPM Manufacturer
    /// ID" first in every output of the corpus (Windows 10 1809 to Windows 11 24H2), and
    /// their values are language-neutral in shape (a boolean, `2.0`/`1.2`, a TCG vendor id);
    /// every other field, readiness included, stays unknown rather than guessed.
    Positional,
}

/// The fields of one output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmReport {
    pub format: TpmFormat,
    pub fields: Vec<TpmField>,
    pub labels: Labels,
    /// Lines of neither tool's shape.
    pub skipped: Skipped,
}

/// A boolean as the tools print it. Get-Tpm prints .NET's `True`/`False` on every Windows
/// language; the localized words accepted for tpmtool are the Windows display names of the
/// boolean values in the languages the fleet uses (de, fr, es, it, pt-BR, nl); Japanese
/// Windows prints `True`/`False`.
fn boolean(value: &str) -> Option<bool> {
    const TRUE: &[&str] = &[
        "true",
        "wahr",
        "vrai",
        "verdadero",
        "vero",
        "verdadeiro",
        "waar",
    ];
    const FALSE: &[&str] = &["false", "falsch", "faux", "falso", "onwaar"];
    let value = value.trim().to_lowercase();
    if TRUE.contains(&value.as_str()) {
        Some(true)
    } else if FALSE.contains(&value.as_str()) {
        Some(false)
    } else {
        None
    }
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
        boolean(self.value(key)?)
    }

    /// Top-level fields (not inside a block such as "Lockout Information"), in order.
    pub fn top_level(&self) -> impl Iterator<Item = &TpmField> {
        self.fields.iter().filter(|f| f.group.is_none())
    }

    /// The value of the `index`-th top-level field when read by position.
    fn positional(&self, index: usize) -> Option<&str> {
        self.top_level().nth(index).map(|f| f.value.as_str())
    }

    /// Whether `ready` was established by the output (false for positional reads).
    pub fn ready_known(&self) -> bool {
        match (self.format, self.labels) {
            (TpmFormat::GetTpm, _) => self.flag("TpmReady").is_some(),
            (TpmFormat::Tpmtool, Labels::English | Labels::Translated(_)) => {
                self.flag("Ready For Storage").is_some()
            }
            (TpmFormat::Tpmtool, Labels::Positional) => false,
        }
    }

    /// The `TpmInfo` this report describes.
    pub fn tpm_info(&self) -> TpmInfo {
        match self.format {
            TpmFormat::Tpmtool if self.labels == Labels::Positional => {
                let version = self
                    .positional(1)
                    .filter(|v| matches!(v.trim(), "1.2" | "2.0"))
                    .unwrap_or_default();
                let manufacturer = self
                    .positional(2)
                    .filter(|v| {
                        let v = v.trim();
                        (1..=4).contains(&v.len())
                            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
                    })
                    .unwrap_or_default();
                TpmInfo {
                    present: self.positional(0).and_then(boolean).unwrap_or(false),
                    spec_version: version.trim().to_owned(),
                    ready: false,
                    manufacturer: truncate_bytes(manufacturer.trim(), MAX_MANUFACTURER_BYTES),
                }
            }
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

/// How a line of either tool looks.
fn tpmtool_field(line: &str) -> Option<(&str, &str)> {
    let body = line.trim().strip_prefix('-')?;
    let (key, value) = body.split_once(':')?;
    let key = key.trim();
    (!key.is_empty()).then_some((key, value.trim()))
}

/// A `Property : Value` line of Get-Tpm. A cmd.exe prompt (`C:\\Users\\me>tpmtool.exe
/// getdeviceinformation`, pasted before the output) also splits into a one-word key and a
/// value at its drive colon: a value that starts with a path separator right after the colon
/// is a path, never a property value (PowerShell prints `Name : value`).
fn get_tpm_field(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    if value.starts_with(['\\', '/']) {
        return None;
    }
    let key = key.trim();
    let is_property = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    is_property.then_some((key, value.trim()))
}

/// The TpmObject properties Get-Tpm (and the other TrustedPlatformModule cmdlets) print.
const GET_TPM_PROPERTIES: &[&str] = &[
    "TpmPresent",
    "TpmReady",
    "TpmEnabled",
    "TpmActivated",
    "TpmOwned",
    "RestartPending",
    "ManufacturerIdTxt",
    "ManufacturerId",
    "ManufacturerVersionFull20",
    "ManufacturerVersion",
    "ManagedAuthLevel",
    "OwnerAuth",
    "OwnerClearDisabled",
    "AutoProvisioning",
    "LockedOut",
    "LockoutHealTime",
    "LockoutCount",
    "LockoutMax",
    "SelfTest",
];

/// Puts back the line breaks of a Get-Tpm output collapsed onto one line (an issue title, a
/// chat message or a ticket field keeps the words and drops the newlines: "TpmReady : False
/// TpmPresent : True ManagedAuthLevel : Full …"). A line is split before every known property
/// name that starts a word and is followed by a colon, but only when it holds two or more of
/// them, so a normal output is returned unchanged.
fn unfold_collapsed_get_tpm(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let starts: Vec<usize> = line
            .char_indices()
            .filter(|&(i, _)| i == 0 || line[..i].ends_with(char::is_whitespace))
            .map(|(i, _)| i)
            .filter(|&i| {
                GET_TPM_PROPERTIES.iter().any(|name| {
                    line[i..]
                        .strip_prefix(name)
                        .is_some_and(|rest| rest.trim_start_matches(' ').starts_with(':'))
                })
            })
            .collect();
        if starts.len() < 2 {
            out.push_str(line);
            continue;
        }
        let mut from = 0;
        for &start in &starts {
            if start > from {
                out.push_str(line[from..start].trim_end());
                out.push('\n');
            }
            from = start;
        }
        out.push_str(&line[from..]);
    }
    out
}

/// Parses either tool's output.
///
/// The format is decided by the first line shaped like a field of either tool (`-Key: Value`
/// for tpmtool, `Property : Value` for Get-Tpm); prompts and banners before it
/// (`PS C:\> Get-Tpm`), and any later line of neither shape, are skipped and counted in
/// [`TpmReport::skipped`]. The only errors are an input with no field at all and one
/// without the presence field (a truncated or foreign file).
pub fn parse_report(text: &str) -> Result<TpmReport, ParseError> {
    let unfolded = unfold_collapsed_get_tpm(text);
    let text = unfolded.as_str();
    let mut skipped = Skipped::default();
    let mut format = None;
    for (number, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        if tpmtool_field(line).is_some() {
            format = Some(TpmFormat::Tpmtool);
            break;
        }
        if get_tpm_field(line).is_some() {
            format = Some(TpmFormat::GetTpm);
            break;
        }
        skipped.line(number, line);
    }
    let Some(format) = format else {
        let (line, found) = skipped.first.clone().unwrap_or((1, String::new()));
        return Err(ParseError::at_line(
            line,
            if found.is_empty() {
                "empty input (expected tpmtool or Get-Tpm output)".to_owned()
            } else {
                format!(
                    "expected \"-TPM Present: ...\" (tpmtool) or \"TpmPresent : ...\" (Get-Tpm), found \"{found}\""
                )
            },
        ));
    };
    let mut fields: Vec<TpmField> = Vec::new();
    let mut group: Option<String> = None;
    let mut started = false;
    let mut translated: Option<&'static str> = None;
    for (number, line) in numbered_lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        match format {
            TpmFormat::Tpmtool => {
                let Some((key, value)) = tpmtool_field(line) else {
                    if started {
                        skipped.line(number, line);
                    }
                    continue;
                };
                started = true;
                let nested = line.starts_with('\t') || line.starts_with("  ");
                if !nested {
                    group = None;
                }
                if !nested && value.is_empty() {
                    // A block header such as "-Lockout Information:".
                    group = Some(key.to_owned());
                    continue;
                }
                let key = match translate_label(key) {
                    Some((lang, english)) => {
                        translated.get_or_insert(lang);
                        english
                    }
                    None => key,
                };
                fields.push(TpmField {
                    group: group.clone(),
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
            TpmFormat::GetTpm => {
                let continuation = started && line.starts_with(' ') && !line.contains(" : ");
                if continuation && let Some(last) = fields.last_mut() {
                    last.value.push_str(line.trim());
                    continue;
                }
                let Some((key, value)) = get_tpm_field(line) else {
                    if started {
                        skipped.line(number, line);
                    }
                    continue;
                };
                started = true;
                fields.push(TpmField {
                    group: None,
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
        }
    }
    let mut report = TpmReport {
        format,
        fields,
        labels: translated.map_or(Labels::English, Labels::Translated),
        skipped,
    };
    if format == TpmFormat::Tpmtool && report.value("TPM Present").is_none() {
        report.labels = Labels::Positional;
    }
    let present_known = match (format, report.labels) {
        (TpmFormat::GetTpm, _) => report.value("TpmPresent").is_some(),
        (TpmFormat::Tpmtool, Labels::English | Labels::Translated(_)) => true,
        (TpmFormat::Tpmtool, Labels::Positional) => report
            .top_level()
            .next()
            .is_some_and(|f| boolean(&f.value).is_some()),
    };
    if !present_known {
        let (last, _) = numbered_lines(text).last().unwrap_or((1, ""));
        let required = match format {
            TpmFormat::Tpmtool => "TPM Present",
            TpmFormat::GetTpm => "TpmPresent",
        };
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
    report.skipped.warn_once("tpm");
    let mut attributes = Attributes::new();
    attributes.add(
        "tpm_source",
        match report.format {
            TpmFormat::Tpmtool => "tpmtool",
            TpmFormat::GetTpm => "get_tpm",
        },
    );
    report.skipped.annotate(&mut attributes);
    match report.labels {
        Labels::Positional => attributes.add("tpm.labels", "positional"),
        Labels::Translated(lang) => attributes.add("tpm.labels", lang),
        Labels::English => {}
    }
    if !report.ready_known() {
        attributes.add("tpm.ready_known", "false");
    }
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
    fn a_cmd_prompt_before_the_output_is_skipped_not_read_as_a_field() {
        let tpmtool = "C:\\Users\\Szef>tpmtool.exe  getdeviceinformation\n\n-TPM Present: True\n-TPM Version: 1.2\n-TPM Manufacturer ID: STM\n-Is Initialized: True\n-Ready For Storage: True\n";
        let report = parse_report(tpmtool).expect("tpmtool output after a cmd prompt");
        assert_eq!(report.format, TpmFormat::Tpmtool);
        assert_eq!(report.skipped.count, 1);
        assert_eq!(report.value("TPM Manufacturer ID"), Some("STM"));
        let get_tpm = "C:\\>powershell Get-Tpm\n\nTpmPresent : True\nTpmReady : True\n";
        let report = parse_report(get_tpm).expect("Get-Tpm output after a cmd prompt");
        assert_eq!(report.format, TpmFormat::GetTpm);
        assert_eq!(report.skipped.count, 1);
        assert_eq!(get_tpm_field("C:/tools>tpmtool getdeviceinformation"), None);
        assert_eq!(
            get_tpm_field("TpmPresent : True"),
            Some(("TpmPresent", "True"))
        );
    }

    #[test]
    fn numeric_manufacturer_ids_decode_to_ascii() {
        assert_eq!(manufacturer_from_id("1229870147").as_deref(), Some("INTC"));
        assert_eq!(manufacturer_from_id("1229346816").as_deref(), Some("IFX"));
        assert_eq!(manufacturer_from_id("0"), None);
    }
}
