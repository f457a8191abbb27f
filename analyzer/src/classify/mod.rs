//! Classification of raw enrollment failure signals against the catalog.
//!
//! Pure and deterministic: the same signal and catalog always give the same answer, so history
//! can be re-classified at query time whenever the catalog improves.
//!
//! Order of evidence (first hit wins):
//! 1. **Context rules** (`[[rule]]` in the catalog): a code or symbol plus message/context
//!    conditions, e.g. 0x80180014 + "SDM One Time Limit Check" → Autopilot redeploy.
//! 2. **Specific symbols**: the signal's symbol, then symbols found in the message (a
//!    `Fault/Code/Subcode/Value=(…)` or `<errortype>` value, constant names, or the whole
//!    message read as a symbol, so ErrorType `AuthorizationError` + Message `DeviceCapReached`
//!    is a device cap).
//! 3. **Code**: the signal's code, or the first code written in the message when it has none.
//! 4. **Message text**: documented messages (longest pattern first; platform-aware).
//! 5. **Class symbols**: generic names (error classes, UI string ids, Graph reasons).
//! 6. **Facility** ranges for codes no entry lists.
//! 7. **Prose** (`prose`): a report in words that none of the above reached is scored
//!    against every documented text of the catalog; a confident best category is answered
//!    with the matched evidence, anything else stays `unknown`.
//! 8. Otherwise `unknown`, keeping the code.

pub mod cli;
pub mod prose;

use std::collections::HashMap;

use serde::Serialize;

use crate::catalog::code::find_code_in_text;
use crate::catalog::scan;
use crate::catalog::text::{normalize_symbol, normalize_text};
use crate::catalog::{Catalog, Entry, Rule, SymbolStrength, UNKNOWN_CATEGORY};

pub use crate::catalog::code::{
    Code, CodeError, Correction, ParsedCode, parse_code, parse_code_detailed,
};

/// One failure signal as observed. All parts are optional; pass what the event carries.
///
/// `platform` and `stage` use the proto enum names in lower snake case (`windows`,
/// `certificate_request`); `source` is free text such as the source kind or event channel
/// (`event_log`, `Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot`) and, like
/// the message, is searched by context rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Signal<'a> {
    pub code: Option<Code>,
    pub symbol: Option<&'a str>,
    pub message: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub source: Option<&'a str>,
    pub stage: Option<&'a str>,
}

/// Which evidence decided the classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// A context rule (code or symbol plus message/context).
    Rule,
    Symbol,
    Code,
    Message,
    Facility,
    /// The prose stage: documented wordings of the category found in the message.
    Prose,
    /// Nothing matched: category `unknown`.
    None,
}

impl MatchedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Rule => "rule",
            MatchedBy::Symbol => "symbol",
            MatchedBy::Code => "code",
            MatchedBy::Message => "message",
            MatchedBy::Facility => "facility",
            MatchedBy::Prose => "prose",
            MatchedBy::None => "none",
        }
    }
}

/// The answer for one signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// Stable category id (see `catalog::CATEGORY_IDS`).
    pub category: String,
    /// The signal's code (or the code found in its message) as `0x%08X`.
    pub code: Option<String>,
    /// Microsoft Graph `deviceEnrollmentFailureReason` member.
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
    /// Reference of the public document behind the answer.
    pub source_doc: String,
    pub matched_by: MatchedBy,
    /// The catalog entry used, when one was.
    pub entry_id: Option<String>,
    /// The context rule that selected the entry, when one did.
    pub rule_id: Option<String>,
    /// The facility range used, when the answer came from a facility fallback.
    pub facility_id: Option<String>,
    /// For a prose answer: the documented phrases found in the message, strongest first, so
    /// a dashboard or SIEM can show why (empty, and not serialised, for other answers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<prose::Evidence>,
}

/// Everything derived once from a signal before matching.
struct Prepared {
    code: Option<u32>,
    message: Option<String>,
    /// Normalised symbols: the signal's own first, then those found in the message.
    symbols: Vec<String>,
    /// Message, source, stage and platform, normalised and joined.
    context: String,
    platform: Option<String>,
    stage: Option<String>,
}

/// Longest message still read as a bare symbol (`DeviceCapReached`, `device cap reached`).
const MAX_SYMBOL_MESSAGE: usize = 80;

impl Catalog {
    /// Classifies one signal. Never fails: unexplained signals get category `unknown`.
    pub fn classify(&self, signal: &Signal<'_>) -> Classification {
        let prepared = prepare(signal);
        if let Some(rule) = self.rules.iter().find(|r| rule_matches(r, &prepared)) {
            return self.entry_answer(
                &self.entries[rule.entry_index],
                &prepared,
                MatchedBy::Rule,
                Some(rule.id.clone()),
            );
        }
        for symbol in &prepared.symbols {
            if let Some(&(index, SymbolStrength::Specific)) = self.by_symbol.get(symbol) {
                return self.entry_answer(&self.entries[index], &prepared, MatchedBy::Symbol, None);
            }
        }
        if let Some(index) = prepared.code.and_then(|c| self.by_code.get(&c)) {
            return self.entry_answer(&self.entries[*index], &prepared, MatchedBy::Code, None);
        }
        if let Some(message) = &prepared.message
            && let Some(pattern) = self.messages.iter().find(|p| {
                let hit = if p.exact {
                    *message == p.text
                } else {
                    message.contains(p.text.as_str())
                };
                hit && platform_allows(&self.entries[p.entry_index], prepared.platform.as_deref())
            })
        {
            return self.entry_answer(
                &self.entries[pattern.entry_index],
                &prepared,
                MatchedBy::Message,
                None,
            );
        }
        for symbol in &prepared.symbols {
            if let Some(&(index, SymbolStrength::Class)) = self.by_symbol.get(symbol) {
                return self.entry_answer(&self.entries[index], &prepared, MatchedBy::Symbol, None);
            }
        }
        if let Some(code) = prepared.code
            && let Some(facility) = self
                .facilities
                .iter()
                .find(|f| f.from.0 <= code && code <= f.to.0)
        {
            return Classification {
                category: facility.category.clone(),
                code: Some(Code(code).to_string()),
                failure_reason: facility.failure_reason.clone(),
                cause: facility.cause.clone(),
                remediation: facility.remediation.clone(),
                source_doc: facility.source_doc.clone(),
                matched_by: MatchedBy::Facility,
                entry_id: None,
                rule_id: None,
                facility_id: Some(facility.id.clone()),
                evidence: Vec::new(),
            };
        }
        if let Some(answer) = self.prose_answer(signal.message, &prepared) {
            return answer;
        }
        self.unknown(prepared.code)
    }

    /// The prose stage alone, on any text: the best category with its scores and evidence,
    /// confident or not. Used by the classifier (which answers only confident verdicts) and
    /// by the corpus suite to choose and check the thresholds on the tuning reports.
    pub fn prose_verdict(&self, text: &str, platform: Option<&str>) -> Option<prose::ProseVerdict> {
        self.prose
            .score(text, platform.map(str::to_ascii_lowercase).as_deref())
    }

    fn prose_answer(&self, message: Option<&str>, prepared: &Prepared) -> Option<Classification> {
        let code = prepared.code;
        let verdict = self
            .prose
            .score(non_empty(message)?, prepared.platform.as_deref())?;
        if !verdict.is_confident() {
            return None;
        }
        let category = self.category(&verdict.category)?;
        Some(Classification {
            category: category.id.clone(),
            code: code.map(|c| Code(c).to_string()),
            failure_reason: category.failure_reason.clone(),
            cause: category.cause.clone(),
            remediation: category.remediation.clone(),
            source_doc: String::new(),
            matched_by: MatchedBy::Prose,
            entry_id: None,
            rule_id: None,
            facility_id: None,
            evidence: verdict.evidence,
        })
    }

    /// Classifies many signals, in order. Identical signals are classified once, so feeding
    /// the distinct `(code, symbol, message, …)` tuples of a query result is cheap even when
    /// they repeat.
    pub fn classify_batch(&self, signals: &[Signal<'_>]) -> Vec<Classification> {
        let mut seen: HashMap<&Signal<'_>, usize> = HashMap::with_capacity(signals.len());
        let mut out: Vec<Classification> = Vec::with_capacity(signals.len());
        for signal in signals {
            match seen.get(signal) {
                Some(&first) => {
                    let copy = out[first].clone();
                    out.push(copy);
                }
                None => {
                    seen.insert(signal, out.len());
                    out.push(self.classify(signal));
                }
            }
        }
        out
    }

    fn entry_answer(
        &self,
        entry: &Entry,
        prepared: &Prepared,
        matched_by: MatchedBy,
        rule_id: Option<String>,
    ) -> Classification {
        Classification {
            category: entry.category.clone(),
            code: prepared.code.map(|c| Code(c).to_string()),
            failure_reason: entry.failure_reason.clone(),
            cause: entry.cause.clone(),
            remediation: entry.remediation.clone(),
            source_doc: entry.source_doc.clone(),
            matched_by,
            entry_id: Some(entry.id.clone()),
            rule_id,
            facility_id: None,
            evidence: Vec::new(),
        }
    }

    fn unknown(&self, code: Option<u32>) -> Classification {
        let (failure_reason, cause, remediation) = match self.category(UNKNOWN_CATEGORY) {
            Some(c) => (
                c.failure_reason.clone(),
                c.cause.clone(),
                c.remediation.clone(),
            ),
            // Unreachable for a validated catalog (every vocabulary category is defined).
            None => ("unknown".to_string(), String::new(), String::new()),
        };
        Classification {
            category: UNKNOWN_CATEGORY.to_string(),
            code: code.map(|c| Code(c).to_string()),
            failure_reason,
            cause,
            remediation,
            source_doc: String::new(),
            matched_by: MatchedBy::None,
            entry_id: None,
            rule_id: None,
            facility_id: None,
            evidence: Vec::new(),
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn prepare(signal: &Signal<'_>) -> Prepared {
    let raw_message = non_empty(signal.message);
    let message = raw_message.map(normalize_text);
    let code = signal
        .code
        .map(Code::value)
        .or_else(|| raw_message.and_then(find_code_in_text).map(|p| p.value));

    let mut symbols: Vec<String> = Vec::new();
    let push = |symbols: &mut Vec<String>, key: String| {
        if !key.is_empty() && !symbols.contains(&key) {
            symbols.push(key);
        }
    };
    if let Some(symbol) = non_empty(signal.symbol) {
        push(&mut symbols, normalize_symbol(symbol));
    }
    if let Some(raw) = raw_message {
        for value in embedded_symbols(raw) {
            push(&mut symbols, normalize_symbol(value));
        }
        for constant in scan::scan(raw).symbols {
            push(&mut symbols, normalize_symbol(&constant));
        }
        for identifier in identifier_tokens(raw) {
            push(&mut symbols, normalize_symbol(identifier));
        }
        if raw.len() <= MAX_SYMBOL_MESSAGE {
            push(&mut symbols, normalize_symbol(raw));
        }
    }

    let platform = non_empty(signal.platform).map(|p| p.to_ascii_lowercase());
    let stage = non_empty(signal.stage).map(|s| s.to_ascii_lowercase());
    let mut context = String::new();
    for part in [raw_message, signal.source, signal.stage, signal.platform]
        .into_iter()
        .flatten()
    {
        if !context.is_empty() {
            context.push_str(" | ");
        }
        context.push_str(&normalize_text(part));
    }
    Prepared {
        code,
        message,
        symbols,
        context,
        platform,
        stage,
    }
}

/// Identifier-shaped words of a message: SDK result and status names as apps and logs print
/// them (`NOT_LICENSED`, `ERROR_WINHTTP_TIMEOUT`, `IntuneMAMEnrollmentStatusNilAccount`,
/// `DeviceCapReached` quoted in prose) and Entra's `AADSTS<number>` error names, which a
/// substring pattern cannot match safely (`AADSTS50020` is a prefix of `AADSTS500208`). A word counts when it is at least six characters long
/// and either upper snake case with an underscore, or camel case with three or more capitals
/// (so ordinary words such as `Enrollment` or `Subcode` never do). They are only looked up as
/// catalog symbols, so an identifier the catalog does not know costs nothing.
fn identifier_tokens(message: &str) -> Vec<&str> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map(|word| word.trim_matches('_'))
        .filter(|word| word.len() >= 6)
        .filter(|word| {
            let upper = word.chars().filter(char::is_ascii_uppercase).count();
            let lower = word.chars().filter(char::is_ascii_lowercase).count();
            let snake = word.contains('_') && lower == 0 && upper >= 2;
            let camel = !word.contains('_')
                && lower > 0
                && upper >= 3
                && word.starts_with(|c: char| c.is_ascii_alphabetic());
            // Entra sign-in errors: AADSTS followed by the error number (AADSTS65001).
            let aadsts = word.len() > 6
                && word[..6].eq_ignore_ascii_case("AADSTS")
                && word[6..].chars().all(|c| c.is_ascii_digit());
            snake || camel || aadsts
        })
        .collect()
}

/// Symbol values a client writes into a message: the event-52 form
/// `Fault/Code/Subcode/Value=(X)` and XML elements `<errortype>X</errortype>`,
/// `<ErrorType>X</ErrorType>`, `<message>X</message>`, `<s:value>X</s:value>`.
fn embedded_symbols(message: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let lower = message.to_ascii_lowercase();
    let marker = "subcode/value=(";
    let mut from = 0;
    while let Some(pos) = lower[from..].find(marker) {
        let start = from + pos + marker.len();
        match message[start..].find(')') {
            Some(end) => {
                found.push(&message[start..start + end]);
                from = start + end;
            }
            None => break,
        }
    }
    for tag in ["errortype", "message", "s:value"] {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&open) {
            let start = from + pos + open.len();
            match lower[start..].find(&close) {
                Some(end) => {
                    found.push(&message[start..start + end]);
                    from = start + end;
                }
                None => break,
            }
        }
    }
    found
}

fn rule_matches(rule: &Rule, prepared: &Prepared) -> bool {
    let anchored = prepared
        .code
        .is_some_and(|c| rule.codes.iter().any(|rc| rc.0 == c))
        || rule
            .symbol_keys
            .iter()
            .any(|key| prepared.symbols.iter().any(|s| s == key));
    if !anchored {
        return false;
    }
    if !rule.message_contains.is_empty() {
        let Some(message) = &prepared.message else {
            return false;
        };
        if !rule
            .message_contains
            .iter()
            .any(|p| message.contains(p.as_str()))
        {
            return false;
        }
    }
    if !rule.context_contains.is_empty()
        && !rule
            .context_contains
            .iter()
            .any(|p| prepared.context.contains(p.as_str()))
    {
        return false;
    }
    if !rule.platforms.is_empty()
        && !prepared
            .platform
            .as_deref()
            .is_some_and(|p| rule.platforms.iter().any(|rp| rp == p))
    {
        return false;
    }
    if !rule.stages.is_empty()
        && !prepared
            .stage
            .as_deref()
            .is_some_and(|s| rule.stages.iter().any(|rs| rs == s))
    {
        return false;
    }
    true
}

/// A message pattern of a platform-specific entry does not apply to a signal from another
/// known platform (Apple's "Access denied" is not a Windows failure). Unknown or missing
/// platforms do not filter.
fn platform_allows(entry: &Entry, platform: Option<&str>) -> bool {
    let Some(platform) = platform else {
        return true;
    };
    let known = crate::catalog::PLATFORMS.contains(&platform) && platform != "all";
    !known || entry.platforms.iter().any(|p| p == "all" || p == platform)
}
