//! Signal sources: pure parsers over what OS tools print, turned into protocol messages.
//!
//! Every parser here is a pure function `(&str, &SourceContext) -> Result<Parsed, ParseError>`
//! (the event log parser also takes and returns a [`event_xml::Cursor`]). They never touch the
//! machine, so they are tested everywhere on fixtures; the thin platform shims in [`shim`] run
//! the real tools and hand their stdout to the parsers.
//!
//! Shared conventions, so that every source behaves the same:
//! - Input text comes through [`decode_text`], which understands UTF-8 (with or without BOM),
//!   UTF-16 with or without a BOM (what PowerShell's `>` and `cmd /u` write) and the legacy
//!   OEM/ANSI code pages of localized Windows; an undecodable byte is replaced and counted,
//!   never a reason to drop the whole output.
//! - An unknown line, banner or trailer never rejects a whole output: parsers keep what they
//!   understood, count what they skipped ([`Skipped`]: `parse.skipped_lines` and
//!   `parse.first_skipped` attributes) and warn once. Only an input with nothing of the
//!   expected shape in it (another tool's output, an empty file) is an error.
//! - Event ids are deterministic ([`stable_event_id`]): re-reading the same record gives the
//!   same UUID, so resends and re-reads can be deduplicated downstream.
//! - Field limits of the protocol (attribute count and sizes, symbol/message sizes) are applied
//!   here ([`Attributes`], [`truncate_bytes`]) so the collector never rejects what we produce
//!   for size reasons.
//! - Each source emits a *partial* [`DeviceState`] snapshot: only the fields that source can
//!   observe are set. Merging snapshots of several sources is the caller's business.

pub mod dsregcmd;
pub mod event_text;
pub mod event_xml;
pub mod macos_profiles;
pub mod mdm_diag;
pub mod ndjson;
pub mod registry;
pub mod shim;
pub mod tpm;

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, Platform, ReportedError, TelemetryItem, telemetry_item,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// Maximum number of attributes on an event or state (protocol limit).
pub const MAX_ATTRIBUTES: usize = 32;
/// Maximum attribute key size in bytes (protocol limit).
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
/// Maximum attribute value size in bytes (protocol limit).
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
/// Maximum `ReportedError.symbol` size in bytes (protocol limit).
pub const MAX_SYMBOL_BYTES: usize = 256;
/// Maximum `ReportedError.message` size in bytes (protocol limit).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Maximum user principal name size in bytes (protocol limit).
pub const MAX_UPN_BYTES: usize = 256;
/// Maximum TPM manufacturer size in bytes (protocol limit).
pub const MAX_MANUFACTURER_BYTES: usize = 64;
/// Maximum event log channel size in bytes (protocol limit).
pub const MAX_CHANNEL_BYTES: usize = 256;

/// Namespace of Fleetpulse's name-based (v5) event ids. Fixed forever: changing it would give
/// every re-read record a new id and defeat deduplication.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_2c4e_8a3b_4f0e_9b7a_5c2d_1e0f_3a4b);

/// Why an input could not be parsed: where (1-based line, optional 1-based column in
/// characters) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {message}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in characters) when the parser knows it.
    pub column: Option<usize>,
    /// What was wrong, naming the field and the reason.
    pub message: String,
}

/// Longest `ParseError::message` in bytes. Messages may quote the input (serde names an
/// unknown field, a parser quotes the value it could not read), and an input line can be
/// megabytes: the quote is cut here so that an error stays readable in a log line and cannot
/// amplify hostile input.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

impl ParseError {
    /// An error on a whole line.
    pub fn at_line(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            column: None,
            message: bounded_message(message.into()),
        }
    }

    /// An error at a line and column.
    pub fn at(line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            column: Some(column),
            message: bounded_message(message.into()),
        }
    }
}

/// `message` cut to `MAX_ERROR_MESSAGE_BYTES` (on a character boundary), saying how much was
/// left out.
fn bounded_message(message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let suffix = format!("... ({} bytes not shown)", message.len());
    let mut cut = truncate_bytes(&message, MAX_ERROR_MESSAGE_BYTES - suffix.len());
    let omitted = message.len() - cut.len();
    cut.push_str(&format!("... ({omitted} bytes not shown)"));
    cut
}

/// What the caller knows about the device and the moment of collection. Parsers never read
/// the clock or the machine themselves, which keeps them pure and their output reproducible.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceContext {
    /// The agent's id (from registration); empty before registration.
    pub agent_id: String,
    /// Stable device identifier put on every message.
    pub device_id: String,
    /// Platform of the device the output came from.
    pub platform: Platform,
    /// Collection time: `captured_at` of snapshots, and `occurred_at` of events whose source
    /// has no timestamp of its own.
    pub now: OffsetDateTime,
}

/// The messages one parse produced, in input order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub items: Vec<TelemetryItem>,
}

impl Parsed {
    /// Appends an event.
    pub fn push_event(&mut self, event: EnrollmentEvent) {
        self.items.push(TelemetryItem {
            kind: Some(telemetry_item::Kind::Event(event)),
        });
    }

    /// Appends a state snapshot.
    pub fn push_state(&mut self, state: DeviceState) {
        self.items.push(TelemetryItem {
            kind: Some(telemetry_item::Kind::State(state)),
        });
    }

    /// The events, in order.
    pub fn events(&self) -> impl Iterator<Item = &EnrollmentEvent> {
        self.items.iter().filter_map(|item| match &item.kind {
            Some(telemetry_item::Kind::Event(event)) => Some(event),
            _ => None,
        })
    }

    /// The state snapshots, in order.
    pub fn states(&self) -> impl Iterator<Item = &DeviceState> {
        self.items.iter().filter_map(|item| match &item.kind {
            Some(telemetry_item::Kind::State(state)) => Some(state),
            _ => None,
        })
    }
}

/// A deterministic event id: UUIDv5 over the source kind and the parts that identify the
/// observation (e.g. device, channel and record id). Re-reading the same record after a
/// restart yields the same id.
pub fn stable_event_id(source: &str, parts: &[&str]) -> String {
    let mut name = Vec::with_capacity(64);
    name.extend_from_slice(source.as_bytes());
    for part in parts {
        // A separator byte that cannot occur in text keeps ("ab","c") and ("a","bc") apart.
        name.push(0x1f);
        name.extend_from_slice(part.as_bytes());
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
        .hyphenated()
        .to_string()
}

/// Converts a time to a protobuf timestamp, truncated to milliseconds (the protocol keeps
/// millisecond precision; truncating here keeps re-reads byte-identical).
pub fn timestamp_ms(at: OffsetDateTime) -> Timestamp {
    let at = at.to_offset(time::UtcOffset::UTC);
    let millis = at.millisecond();
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::from(millis) * 1_000_000,
    }
}

/// Truncates `value` to at most `max` bytes on a character boundary.
pub fn truncate_bytes(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while end > 0 && !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// Builds a `ReportedError` within the protocol's size limits.
pub fn reported_error(code: Option<u32>, symbol: &str, message: &str) -> ReportedError {
    ReportedError {
        code: code.unwrap_or(0),
        has_code: code.is_some(),
        symbol: truncate_bytes(symbol, MAX_SYMBOL_BYTES),
        message: truncate_bytes(message, MAX_MESSAGE_BYTES),
    }
}

/// Attribute collector that enforces the protocol limits: at most [`MAX_ATTRIBUTES`] entries,
/// first come first kept (so callers add the most useful ones first), keys and values
/// truncated to their byte limits, empty keys dropped.
#[derive(Debug, Default, Clone)]
pub struct Attributes {
    entries: Vec<(String, String)>,
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value` unless the key is already present or the map is full.
    pub fn add(&mut self, key: &str, value: &str) {
        let key = truncate_bytes(key, MAX_ATTRIBUTE_KEY_BYTES);
        if key.is_empty()
            || self.entries.len() >= MAX_ATTRIBUTES
            || self.entries.iter().any(|(k, _)| *k == key)
        {
            return;
        }
        self.entries
            .push((key, truncate_bytes(value, MAX_ATTRIBUTE_VALUE_BYTES)));
    }

    /// Adds the pair when `value` is present.
    pub fn add_opt(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.add(key, value);
        }
    }

    /// Adds every entry of `other`, in its order, under the same limits.
    pub fn extend(&mut self, other: Attributes) {
        for (key, value) in other.entries {
            self.add(&key, &value);
        }
    }

    pub fn into_map(self) -> std::collections::HashMap<String, String> {
        self.entries.into_iter().collect()
    }
}

/// Turns a field name into an attribute key fragment: lower snake case, splitting words at
/// spaces and punctuation and at camel-case boundaries ("Https Status" -> "https_status",
/// "DiscoveryServiceFullURL" -> "discovery_service_full_url", "AADTenantID" ->
/// "aad_tenant_id").
pub fn slug(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    let mut pending_sep = false;
    for (i, &ch) in chars.iter().enumerate() {
        if !ch.is_ascii_alphanumeric() {
            pending_sep = true;
            continue;
        }
        if ch.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                pending_sep = true;
            }
        }
        if pending_sep && !out.is_empty() {
            out.push('_');
        }
        pending_sep = false;
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// Parses an error code as devices print it: `0x8018002b`, `0x8018002B`, `8018002b` (only
/// when it has exactly 8 hex digits), unsigned decimal `2149056555` or signed decimal
/// `-2145910765`. Returns `None` for anything else rather than guessing.
pub fn parse_code(text: &str) -> Option<u32> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 8 {
            return None;
        }
        return u32::from_str_radix(hex, 16).ok();
    }
    if let Some(negative) = text.strip_prefix('-') {
        let value: i64 = negative.parse().ok()?;
        if value == 0 || value > i64::from(i32::MAX) + 1 {
            return None;
        }
        // Two's complement reinterpretation of the signed 32-bit HRESULT.
        return Some((-value) as i32 as u32);
    }
    if text.len() == 8 && text.chars().any(|c| c.is_ascii_alphabetic()) {
        return u32::from_str_radix(text, 16).ok();
    }
    text.parse::<u32>().ok()
}

/// Formats a code the way Windows documentation does (`0x8018002b`).
pub fn format_code(code: u32) -> String {
    format!("{code:#010x}")
}

/// How [`decode_text_detailed`] read the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Utf16Le,
    Utf16Be,
    /// OEM code page 850 (console output of Western European Windows).
    Cp850,
    /// OEM code page 437 (console output of US Windows).
    Cp437,
    /// ANSI code page 1252 (files written by Windows PowerShell `Out-File -Encoding Default`).
    Windows1252,
    /// Code page 932 (Japanese Windows console and ANSI output).
    ShiftJis,
}

impl TextEncoding {
    pub fn name(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Utf16Le => "utf-16le",
            TextEncoding::Utf16Be => "utf-16be",
            TextEncoding::Cp850 => "cp850",
            TextEncoding::Cp437 => "cp437",
            TextEncoding::Windows1252 => "windows-1252",
            TextEncoding::ShiftJis => "shift_jis",
        }
    }
}

/// Decoded tool output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedText {
    pub text: String,
    pub encoding: TextEncoding,
    /// Characters that could not be decoded and became U+FFFD (or were NULs dropped). Never
    /// a reason to lose the record: the rest of the output is still read.
    pub replaced: usize,
}

/// Decodes tool output to text; see [`decode_text_detailed`]. Never fails on content: the
/// `Result` is kept so callers keep one error path.
pub fn decode_text(bytes: &[u8]) -> Result<String, ParseError> {
    Ok(decode_text_detailed(bytes).text)
}

/// Decodes what a Windows, macOS or Linux tool printed, whatever its encoding:
///
/// 1. a byte order mark decides (UTF-8, UTF-16LE — what PowerShell 5 redirection writes —
///    or UTF-16BE);
/// 2. UTF-16 without a BOM (`cmd /u`, some remote shells) is recognised by its NUL bytes
///    in every other position;
/// 3. valid UTF-8 is UTF-8;
/// 4. anything else is a legacy single- or double-byte code page: console output of
///    non-English Windows is in the OEM code page (850 in Western Europe, 437 in the US, 932
///    in Japan), files written by Windows PowerShell in the ANSI code page (1252). The bytes
///    are decoded with each candidate and the reading whose non-ASCII characters look most
///    like words (letters whose case fits their neighbours, no control characters, no
///    undecodable bytes) wins; ties go to CP850, then 1252.
///
/// Undecodable bytes become U+FFFD and are counted: one bad byte never costs a device its
/// record. The tables come from `encoding_rs` (1252, Shift_JIS) and `oem_cp` (437, 850)
/// rather than hand-written ones.
pub fn decode_text_detailed(bytes: &[u8]) -> DecodedText {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return decode_utf8_or_legacy(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return decode_utf16(rest, u16::from_le_bytes, TextEncoding::Utf16Le);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return decode_utf16(rest, u16::from_be_bytes, TextEncoding::Utf16Be);
    }
    match utf16_without_bom(bytes) {
        Some(TextEncoding::Utf16Le) => {
            return decode_utf16(bytes, u16::from_le_bytes, TextEncoding::Utf16Le);
        }
        Some(TextEncoding::Utf16Be) => {
            return decode_utf16(bytes, u16::from_be_bytes, TextEncoding::Utf16Be);
        }
        _ => {}
    }
    decode_utf8_or_legacy(bytes)
}

/// UTF-16 without BOM: at least 4 bytes, and NULs fill one byte of most code units (ASCII
/// text in UTF-16) while the other byte is mostly not NUL.
fn utf16_without_bom(bytes: &[u8]) -> Option<TextEncoding> {
    if bytes.len() < 4 {
        return None;
    }
    let units = bytes.len() / 2;
    let (mut even_nul, mut odd_nul) = (0usize, 0usize);
    for pair in bytes.chunks_exact(2) {
        even_nul += usize::from(pair[0] == 0);
        odd_nul += usize::from(pair[1] == 0);
    }
    let mostly = |count: usize| count * 10 >= units * 6;
    let rarely = |count: usize| count * 10 <= units;
    if mostly(odd_nul) && rarely(even_nul) {
        Some(TextEncoding::Utf16Le)
    } else if mostly(even_nul) && rarely(odd_nul) {
        Some(TextEncoding::Utf16Be)
    } else {
        None
    }
}

fn decode_utf8_or_legacy(bytes: &[u8]) -> DecodedText {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return without_nuls(text.to_owned(), TextEncoding::Utf8, 0);
    }
    let candidates = [
        TextEncoding::Cp850,
        TextEncoding::Windows1252,
        TextEncoding::Cp437,
        TextEncoding::ShiftJis,
    ];
    let mut best: Option<(i64, DecodedText)> = None;
    for encoding in candidates {
        let (text, replaced) = decode_legacy(bytes, encoding);
        let score = plausibility(&text) - 4 * i64::try_from(replaced).unwrap_or(i64::MAX / 8);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((
                score,
                DecodedText {
                    text,
                    encoding,
                    replaced,
                },
            ));
        }
    }
    match best {
        Some((_, decoded)) => without_nuls(decoded.text, decoded.encoding, decoded.replaced),
        // The candidate list is not empty, so `best` is always set; stay total anyway.
        None => without_nuls(
            String::from_utf8_lossy(bytes).into_owned(),
            TextEncoding::Utf8,
            0,
        ),
    }
}

fn decode_legacy(bytes: &[u8], encoding: TextEncoding) -> (String, usize) {
    let table = match encoding {
        TextEncoding::Cp850 => Some(&oem_cp::code_table::DECODING_TABLE_CP850),
        TextEncoding::Cp437 => Some(&oem_cp::code_table::DECODING_TABLE_CP437),
        _ => None,
    };
    if let Some(table) = table {
        let text = bytes
            .iter()
            .map(|&b| {
                if b < 0x80 {
                    char::from(b)
                } else {
                    table[usize::from(b - 0x80)]
                }
            })
            .collect();
        return (text, 0);
    }
    let codec = match encoding {
        TextEncoding::ShiftJis => encoding_rs::SHIFT_JIS,
        _ => encoding_rs::WINDOWS_1252,
    };
    let (text, _) = codec.decode_without_bom_handling(bytes);
    let replaced = text.chars().filter(|&c| c == '\u{FFFD}').count();
    (text.into_owned(), replaced)
}

/// How word-like the non-ASCII characters of a decoding are: +2 per letter, -3 when a
/// capital sits right after a lower-case ASCII letter ("PrÚsent" is CP850 read as 1252),
/// -4 per control or replacement character, -1 per other symbol.
fn plausibility(text: &str) -> i64 {
    let mut score = 0i64;
    let mut previous = ' ';
    for c in text.chars() {
        if !c.is_ascii() {
            if c == '\u{FFFD}' || c.is_control() {
                score -= 4;
            } else if c.is_alphabetic() {
                score += 2;
                if c.is_uppercase() && previous.is_ascii_lowercase() {
                    score -= 3;
                }
            } else {
                score -= 1;
            }
        }
        previous = c;
    }
    score
}

/// NULs are never meaningful in tool text (they are what a wrong UTF-16 guess leaves);
/// they are dropped and counted.
fn without_nuls(text: String, encoding: TextEncoding, replaced: usize) -> DecodedText {
    let nuls = text.matches('\0').count();
    let text = if nuls > 0 {
        text.replace('\0', "")
    } else {
        text
    };
    DecodedText {
        text,
        encoding,
        replaced: replaced + nuls,
    }
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16, encoding: TextEncoding) -> DecodedText {
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut replaced = 0usize;
    let mut text = String::with_capacity(bytes.len() / 2);
    for decoded in char::decode_utf16(units) {
        match decoded {
            Ok(ch) => text.push(ch),
            Err(_) => {
                replaced += 1;
                text.push('\u{FFFD}');
            }
        }
    }
    if !bytes.len().is_multiple_of(2) {
        // A truncated last code unit.
        replaced += 1;
    }
    without_nuls(text, encoding, replaced)
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
pub fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while pos > 0 && !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Iterates over lines with their 1-based numbers, without the `\r` of CRLF endings.
pub fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.strip_suffix('\r').unwrap_or(line)))
}

/// Shortens a line for an error message ("found ...") without splitting a character.
pub fn excerpt(line: &str) -> String {
    const MAX_CHARS: usize = 60;
    let trimmed = line.trim();
    if trimmed.chars().count() <= MAX_CHARS {
        trimmed.to_owned()
    } else {
        let cut: String = trimmed.chars().take(MAX_CHARS).collect();
        format!("{cut}...")
    }
}

/// Lines a parser did not understand and skipped: counted, the first one kept for the
/// administrator, reported once as attributes and once as a warning. Skipping is how parsers
/// survive new fields, banners, prompts and trailers of tool versions they have not seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    pub count: usize,
    /// 1-based line number and excerpt of the first skipped line.
    pub first: Option<(usize, String)>,
}

impl Skipped {
    /// Records one skipped line.
    pub fn line(&mut self, number: usize, line: &str) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((number, excerpt(line)));
        }
    }

    /// Adds `parse.skipped_lines` and `parse.first_skipped` when something was skipped.
    pub fn annotate(&self, attributes: &mut Attributes) {
        if self.count == 0 {
            return;
        }
        attributes.add("parse.skipped_lines", &self.count.to_string());
        if let Some((line, text)) = &self.first {
            attributes.add("parse.first_skipped", &format!("line {line}: {text}"));
        }
    }

    /// `, found "<first skipped line>" on line N` (empty when nothing was skipped): what an
    /// "input of the wrong shape" error shows the administrator.
    pub fn found_suffix(&self) -> String {
        self.first
            .as_ref()
            .map(|(line, text)| format!(", found \"{text}\" on line {line}"))
            .unwrap_or_default()
    }

    /// One warning per parse, naming the source, the count and the first skipped line.
    pub fn warn_once(&self, source: &str) {
        if let Some((line, text)) = &self.first {
            tracing::warn!(
                source,
                skipped_lines = self.count,
                first_line = *line,
                first = %text,
                "skipped lines the parser does not understand; kept everything else"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_in_every_documented_spelling() {
        assert_eq!(parse_code("0x8018002b"), Some(0x8018_002b));
        assert_eq!(parse_code("0x8018002B"), Some(0x8018_002b));
        assert_eq!(parse_code("8018002b"), Some(0x8018_002b));
        assert_eq!(parse_code("-2145910765"), Some(0x8018_0013));
        assert_eq!(parse_code("2149056522"), Some(0x8018_000a));
        assert_eq!(parse_code("0x80180002b"), None);
        assert_eq!(parse_code("DirectoryError"), None);
        assert_eq!(parse_code("-0"), None);
        assert_eq!(format_code(0x801c_0021), "0x801c0021");
    }

    #[test]
    fn event_ids_are_stable_and_separated() {
        let a = stable_event_id("event_log", &["dev", "chan", "1"]);
        assert_eq!(a, stable_event_id("event_log", &["dev", "chan", "1"]));
        assert_ne!(a, stable_event_id("event_log", &["dev", "chan", "2"]));
        assert_ne!(
            stable_event_id("x", &["ab", "c"]),
            stable_event_id("x", &["a", "bc"])
        );
        assert_eq!(Uuid::parse_str(&a).map(|u| u.get_version_num()), Ok(5));
    }

    #[test]
    fn timestamps_keep_milliseconds_only() {
        let at = time::macros::datetime!(2017-06-29 13:18:40.644619600 UTC);
        assert_eq!(
            timestamp_ms(at),
            Timestamp {
                seconds: 1_498_742_320,
                nanos: 644_000_000
            }
        );
    }

    #[test]
    fn attributes_respect_protocol_limits() {
        let mut attributes = Attributes::new();
        for i in 0..40 {
            attributes.add(&format!("k{i}"), "v");
        }
        attributes.add("k0", "again");
        attributes.add(&"x".repeat(100), "y");
        let map = attributes.into_map();
        assert_eq!(map.len(), MAX_ATTRIBUTES);
        assert_eq!(map.get("k0").map(String::as_str), Some("v"));
        assert!(!map.contains_key("k32"));
        let mut long = Attributes::new();
        long.add(&"é".repeat(40), &"é".repeat(600));
        let (key, value) = long.into_map().into_iter().next().unwrap_or_default();
        assert_eq!(key.len(), 64);
        assert_eq!(value.len(), 1024);
    }

    #[test]
    fn decode_handles_boms_utf16_without_bom_and_legacy_code_pages() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFab").as_deref(), Ok("ab"));
        assert_eq!(decode_text(b"\xFF\xFEa\0b\0").as_deref(), Ok("ab"));
        assert_eq!(decode_text(b"\xFE\xFF\0a\0b").as_deref(), Ok("ab"));
        // UTF-16LE without BOM (cmd /u).
        let le: Vec<u8> = "-TPM Present: True\r\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let decoded = decode_text_detailed(&le);
        assert_eq!(decoded.text, "-TPM Present: True\r\n");
        assert_eq!(decoded.encoding, TextEncoding::Utf16Le);
        // German console output in CP850 ("Für", "Geräte") and the same in Windows-1252.
        let cp850 = decode_text_detailed(b"F\x81r alle Ger\x84te");
        assert_eq!(cp850.text, "Für alle Geräte");
        assert_eq!(cp850.encoding, TextEncoding::Cp850);
        let ansi = decode_text_detailed(b"F\xFCr alle Ger\xE4te");
        assert_eq!(ansi.text, "Für alle Geräte");
        assert_eq!(ansi.encoding, TextEncoding::Windows1252);
        // French: "Présent" in 1252 must not read as CP850's "PrÚsent".
        assert_eq!(decode_text(b"Pr\xE9sent").as_deref(), Ok("Présent"));
        assert_eq!(decode_text(b"Pr\x82sent").as_deref(), Ok("Présent"));
        // Japanese (CP932): "有効" (enabled).
        let sjis = decode_text_detailed(b"TPM: \x97\x4C\x8C\xF8");
        assert_eq!(sjis.text, "TPM: 有効");
        assert_eq!(sjis.encoding, TextEncoding::ShiftJis);
        // A truncated UTF-8 sequence still decodes the rest.
        let cut = decode_text_detailed(b"ok\nx\xC3");
        assert!(cut.text.starts_with("ok\nx"), "{cut:?}");
        // Odd UTF-16 length and stray NULs are counted, not fatal.
        let odd = decode_text_detailed(b"\xFF\xFEa\0b");
        assert_eq!((odd.text.as_str(), odd.replaced), ("a", 1));
        let nul = decode_text_detailed(b"a\0b");
        assert_eq!((nul.text.as_str(), nul.replaced), ("ab", 1));
    }

    #[test]
    fn parse_error_display_names_line_and_column() {
        assert_eq!(ParseError::at_line(12, "bad").to_string(), "line 12: bad");
        assert_eq!(
            ParseError::at(3, 7, "bad").to_string(),
            "line 3, column 7: bad"
        );
    }

    #[test]
    fn slugs_are_lower_snake_case() {
        assert_eq!(slug("Https Status"), "https_status");
        assert_eq!(slug("Fallback to Sync-Join"), "fallback_to_sync_join");
        assert_eq!(slug("  -Is Locked Out"), "is_locked_out");
        assert_eq!(
            slug("DiscoveryServiceFullURL"),
            "discovery_service_full_url"
        );
        assert_eq!(slug("AADTenantID"), "aad_tenant_id");
        assert_eq!(
            slug("ManufacturerVersionFull20"),
            "manufacturer_version_full20"
        );
        assert_eq!(slug("IsMDMUnremovable"), "is_mdm_unremovable");
        assert_eq!(slug("TPM Manufacturer ID"), "tpm_manufacturer_id");
    }
}
