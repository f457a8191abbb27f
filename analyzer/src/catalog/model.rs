//! The catalog files as written by people (TOML). Every table rejects unknown keys so a typo in
//! a field name is a load error, not a silently ignored rule.
//!
//! A catalog is a set of files; each may hold any of the arrays below, and they are merged in
//! file-name order (the order matters only for `[[rule]]` and `[[facility]]`: first match wins).

use serde::Deserialize;

/// One catalog file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub source: Vec<RawSource>,
    #[serde(default)]
    pub category: Vec<RawCategory>,
    #[serde(default)]
    pub entry: Vec<RawEntry>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub facility: Vec<RawFacility>,
    #[serde(default)]
    pub phrases: Vec<RawPhraseList>,
}

/// A public document that entries cite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub id: String,
    pub title: String,
    /// `owner/name` of the public repository holding the document, when there is one.
    #[serde(default)]
    pub repo: Option<String>,
    /// Path inside `repo`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    /// Public address of the document (a web page, an issue) when it is not (only) a file in a
    /// repository.
    #[serde(default)]
    pub url: Option<String>,
}

/// A failure category: stable id plus its defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCategory {
    pub id: String,
    pub title: String,
    pub definition: String,
    /// Microsoft Graph `deviceEnrollmentFailureReason` member used when an entry sets none.
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
}

/// One known failure signal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub id: String,
    pub title: String,
    /// Error codes in any form `parse_code` accepts.
    #[serde(default)]
    pub codes: Vec<String>,
    /// Specific symbolic names (SOAP subcodes/errortypes naming one failure, constant names,
    /// Apple/Intune reason strings). Matched before the code.
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Generic symbolic names (error classes such as `AuthorizationError`, UI string ids,
    /// Graph reasons, SOAP class subcodes). Matched only after code and message.
    #[serde(default)]
    pub class_symbols: Vec<String>,
    /// Case-insensitive substrings of the message that identify this entry.
    #[serde(default)]
    pub messages: Vec<String>,
    /// Whole messages (after normalisation) that identify this entry; for short generic texts
    /// such as Apple's "Access denied" that must not match inside longer messages.
    #[serde(default)]
    pub exact_messages: Vec<String>,
    /// Platforms the signal occurs on: windows, ios, ipados, macos, android, or all.
    pub platforms: Vec<String>,
    pub category: String,
    /// Overrides the category's Graph reason.
    #[serde(default)]
    pub failure_reason: Option<String>,
    pub cause: String,
    pub remediation: String,
    /// Ids of `[[source]]` documents; the first is the primary reference.
    pub sources: Vec<String>,
}

/// A context rule: when the anchor (any code or symbol) and every given condition hold, the
/// signal is classified by `entry` instead of by its code or symbol alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: String,
    /// Why the rule exists (shown in the catalog endpoint).
    pub note: String,
    #[serde(default)]
    pub codes: Vec<String>,
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Any of these substrings in the message.
    #[serde(default)]
    pub message_contains: Vec<String>,
    /// Any of these substrings in the message, source, stage or platform.
    #[serde(default)]
    pub context_contains: Vec<String>,
    /// The signal's platform is one of these.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// The signal's stage is one of these (proto stage names, lower snake case).
    #[serde(default)]
    pub stages: Vec<String>,
    pub entry: String,
}

/// A facility fallback: a code range whose meaning is known even when the exact code is not.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFacility {
    pub id: String,
    pub title: String,
    /// Inclusive lower bound.
    pub from: String,
    /// Inclusive upper bound.
    pub to: String,
    pub category: String,
    #[serde(default)]
    pub failure_reason: Option<String>,
    pub cause: String,
    pub remediation: String,
    pub sources: Vec<String>,
}

/// A list of short wordings of one category as documentation writes them ("device limit
/// reached", "TPM attestation failed"): evidence for the prose stage
/// (`classify::prose`), which reads reports that no code, name or exact message matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhraseList {
    pub id: String,
    pub category: String,
    /// Each phrase as the source writes it (a few words; order and inflection do not matter
    /// to the matcher, every content word does).
    pub phrases: Vec<String>,
    /// Ids of `[[source]]` documents the phrases are taken from.
    pub sources: Vec<String>,
    /// Platforms the source documents the phrases for (windows, ios, ipados, macos, android,
    /// or all); empty means all. A phrase of an Android article is no evidence about a Windows
    /// report.
    #[serde(default)]
    pub platforms: Vec<String>,
}
