//! Compiles raw catalog files into a [`Catalog`] and validates them.
//!
//! Checked on every load (and therefore at test time for the embedded catalog):
//! - ids are unique within sources, categories, entries, rules and facilities;
//! - every category of the stable vocabulary is defined and no other is;
//! - every category, source and entry a record refers to exists;
//! - every Graph failure reason is a member of `deviceEnrollmentFailureReason`;
//! - every code parses cleanly (no typo repair inside the catalog) and appears in one entry only;
//! - every symbol (specific or class, after normalisation) and every message pattern belongs to
//!   one entry only — the matcher scope where a duplicate would make the answer depend on order;
//! - every rule is anchored on catalogued codes/symbols, has at least one condition and no other
//!   rule has the same anchor and conditions;
//! - facility ranges are ordered, and none is entirely hidden behind an earlier one;
//! - every phrase list names a real category other than `unknown`, cites known sources and has
//!   phrases of at least two content words (one word is not evidence of a cause).

use std::collections::{HashMap, HashSet};

use super::code::parse_code_detailed;
use super::model::{RawFile, RawPhraseList, RawRule};
use super::text::{normalize_symbol, normalize_text};
use super::{
    CATEGORY_IDS, Catalog, CatalogError, Category, Code, Entry, Facility, GRAPH_FAILURE_REASONS,
    MessagePattern, PLATFORMS, PhraseList, Rule, Source, SymbolStrength, UNKNOWN_CATEGORY,
};
use crate::classify::prose::{self, PhraseSource, ProseIndex};

/// Stage names a rule may test (the proto `EnrollmentStage` values in lower snake case).
pub const STAGES: &[&str] = &[
    "unspecified",
    "discovery",
    "authentication",
    "authorization",
    "certificate_request",
    "dm_client_provisioning",
    "profile_install",
    "enrollment_status_page",
    "device_registration",
    "first_sync",
    "complete",
];

pub(super) fn compile(files: Vec<RawFile>) -> Result<Catalog, CatalogError> {
    let mut problems: Vec<String> = Vec::new();
    let mut raw_sources = Vec::new();
    let mut raw_categories = Vec::new();
    let mut raw_entries = Vec::new();
    let mut raw_rules = Vec::new();
    let mut raw_facilities = Vec::new();
    let mut raw_phrases = Vec::new();
    for file in files {
        raw_sources.extend(file.source);
        raw_categories.extend(file.category);
        raw_entries.extend(file.entry);
        raw_rules.extend(file.rule);
        raw_facilities.extend(file.facility);
        raw_phrases.extend(file.phrases);
    }

    // Sources.
    let mut sources = Vec::with_capacity(raw_sources.len());
    let mut source_index = HashMap::new();
    for raw in raw_sources {
        check_text(&mut problems, "source", &raw.id, "title", &raw.title);
        if source_index.insert(raw.id.clone(), sources.len()).is_some() {
            problems.push(format!("source {:?}: duplicate id", raw.id));
        }
        if let Some(url) = &raw.url
            && !url.starts_with("https://")
        {
            problems.push(format!("source {:?}: url must be an https address", raw.id));
        }
        let reference = match (&raw.repo, &raw.path, &raw.url) {
            (Some(repo), Some(path), _) => match &raw.commit {
                Some(commit) => format!("{repo}:{path}@{commit}"),
                None => format!("{repo}:{path}"),
            },
            (_, _, Some(url)) => url.clone(),
            _ => raw.title.clone(),
        };
        sources.push(Source {
            id: raw.id,
            title: raw.title,
            repo: raw.repo,
            path: raw.path,
            commit: raw.commit,
            url: raw.url,
            reference,
        });
    }

    // Categories.
    let mut categories = Vec::with_capacity(raw_categories.len());
    let mut category_index = HashMap::new();
    for raw in raw_categories {
        let what = format!("category {:?}", raw.id);
        if !CATEGORY_IDS.contains(&raw.id.as_str()) {
            problems.push(format!(
                "{what}: not in the stable vocabulary (catalog::CATEGORY_IDS)"
            ));
        }
        if category_index
            .insert(raw.id.clone(), categories.len())
            .is_some()
        {
            problems.push(format!("{what}: duplicate id"));
        }
        check_reason(&mut problems, &what, &raw.failure_reason);
        for (field, value) in [
            ("title", &raw.title),
            ("definition", &raw.definition),
            ("cause", &raw.cause),
            ("remediation", &raw.remediation),
        ] {
            check_text(&mut problems, "category", &raw.id, field, value);
        }
        categories.push(Category {
            id: raw.id,
            title: raw.title,
            definition: raw.definition,
            failure_reason: raw.failure_reason,
            cause: raw.cause,
            remediation: raw.remediation,
        });
    }
    for id in CATEGORY_IDS {
        if !category_index.contains_key(*id) {
            problems.push(format!("category {id:?}: not defined"));
        }
    }

    let resolve_sources = |problems: &mut Vec<String>, what: &str, ids: &[String]| -> String {
        if ids.is_empty() {
            problems.push(format!("{what}: sources is empty"));
        }
        for id in ids {
            if !source_index.contains_key(id) {
                problems.push(format!("{what}: unknown source {id:?}"));
            }
        }
        ids.first()
            .and_then(|id| source_index.get(id))
            .map(|&i| sources[i].reference.clone())
            .unwrap_or_default()
    };

    // Entries.
    let rule_targets: HashSet<&str> = raw_rules.iter().map(|r| r.entry.as_str()).collect();
    let mut entries: Vec<Entry> = Vec::with_capacity(raw_entries.len());
    let mut entry_index: HashMap<String, usize> = HashMap::new();
    let mut by_code: HashMap<u32, usize> = HashMap::new();
    let mut by_symbol: HashMap<String, (usize, SymbolStrength)> = HashMap::new();
    let mut messages: Vec<MessagePattern> = Vec::new();
    let mut message_owner: HashMap<String, usize> = HashMap::new();
    for raw in raw_entries {
        let index = entries.len();
        let what = format!("entry {:?}", raw.id);
        if entry_index.insert(raw.id.clone(), index).is_some() {
            problems.push(format!("{what}: duplicate id"));
        }
        for (field, value) in [
            ("title", &raw.title),
            ("cause", &raw.cause),
            ("remediation", &raw.remediation),
        ] {
            check_text(&mut problems, "entry", &raw.id, field, value);
        }
        let failure_reason = match (&raw.failure_reason, category_index.get(&raw.category)) {
            (Some(reason), _) => {
                check_reason(&mut problems, &what, reason);
                reason.clone()
            }
            (None, Some(&c)) => categories[c].failure_reason.clone(),
            (None, None) => String::new(),
        };
        if !category_index.contains_key(&raw.category) {
            problems.push(format!("{what}: unknown category {:?}", raw.category));
        }
        check_platforms(&mut problems, &what, &raw.platforms, false);
        let source_doc = resolve_sources(&mut problems, &what, &raw.sources);
        let has_matcher = !(raw.codes.is_empty()
            && raw.symbols.is_empty()
            && raw.class_symbols.is_empty()
            && raw.messages.is_empty()
            && raw.exact_messages.is_empty());
        if !has_matcher && !rule_targets.contains(raw.id.as_str()) {
            problems.push(format!(
                "{what}: has no codes, symbols or messages and no rule points at it"
            ));
        }

        let mut codes = Vec::with_capacity(raw.codes.len());
        for text in &raw.codes {
            match parse_code_detailed(text) {
                Ok(parsed) if parsed.correction.is_some() => problems.push(format!(
                    "{what}: code {text:?} needs typo repair; write the real code"
                )),
                Ok(parsed) => {
                    if let Some(&other) = by_code.get(&parsed.value) {
                        problems.push(format!(
                            "{what}: code {} already belongs to entry {:?}",
                            Code(parsed.value),
                            entry_name(&entries, other, &raw.id)
                        ));
                    } else {
                        by_code.insert(parsed.value, index);
                    }
                    codes.push(Code(parsed.value));
                }
                Err(err) => problems.push(format!("{what}: code {text:?}: {err}")),
            }
        }
        for (list, strength) in [
            (&raw.symbols, SymbolStrength::Specific),
            (&raw.class_symbols, SymbolStrength::Class),
        ] {
            for symbol in list {
                let key = normalize_symbol(symbol);
                if key.is_empty() {
                    problems.push(format!(
                        "{what}: symbol {symbol:?} is empty once normalised"
                    ));
                    continue;
                }
                // Spelling variants of one constant (MENROLL_E_USER_LICENSE and
                // MENROLL_E_USERLICENSE) normalise alike; within one entry that is harmless.
                if let Some(&(other, _)) = by_symbol.get(&key) {
                    if other == index {
                        continue;
                    }
                    problems.push(format!(
                        "{what}: symbol {symbol:?} (normalised {key:?}) already belongs to entry {:?}",
                        entry_name(&entries, other, &raw.id)
                    ));
                } else {
                    by_symbol.insert(key, (index, strength));
                }
            }
        }
        for (list, exact) in [(&raw.messages, false), (&raw.exact_messages, true)] {
            for message in list {
                let text = normalize_text(message);
                if text.len() < 4 {
                    problems.push(format!(
                        "{what}: message {message:?} is shorter than 4 characters once normalised"
                    ));
                    continue;
                }
                if let Some(&other) = message_owner.get(&text) {
                    problems.push(format!(
                        "{what}: message {message:?} already belongs to entry {:?}",
                        entry_name(&entries, other, &raw.id)
                    ));
                    continue;
                }
                message_owner.insert(text.clone(), index);
                messages.push(MessagePattern {
                    text,
                    exact,
                    entry_index: index,
                });
            }
        }
        entries.push(Entry {
            id: raw.id,
            title: raw.title,
            codes,
            symbols: raw.symbols,
            class_symbols: raw.class_symbols,
            messages: raw.messages,
            exact_messages: raw.exact_messages,
            platforms: raw.platforms,
            category: raw.category,
            failure_reason,
            cause: raw.cause,
            remediation: raw.remediation,
            sources: raw.sources,
            source_doc,
        });
    }
    // Longest pattern first: the most specific message wins.
    messages.sort_by_key(|p| std::cmp::Reverse(p.text.len()));

    // Rules.
    let mut rules = Vec::with_capacity(raw_rules.len());
    let mut rule_ids = HashSet::new();
    let mut signatures: HashMap<String, String> = HashMap::new();
    for raw in raw_rules {
        let what = format!("rule {:?}", raw.id);
        if !rule_ids.insert(raw.id.clone()) {
            problems.push(format!("{what}: duplicate id"));
        }
        check_text(&mut problems, "rule", &raw.id, "note", &raw.note);
        let rule = compile_rule(
            &mut problems,
            &what,
            raw,
            &entry_index,
            &by_code,
            &by_symbol,
        );
        let signature = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            rule.codes,
            rule.symbol_keys,
            rule.message_contains,
            rule.context_contains,
            rule.platforms,
            rule.stages
        );
        if let Some(other) = signatures.insert(signature, rule.id.clone()) {
            problems.push(format!(
                "{what}: same anchor and conditions as rule {other:?}"
            ));
        }
        rules.push(rule);
    }

    // Facilities.
    let mut facilities: Vec<Facility> = Vec::with_capacity(raw_facilities.len());
    let mut facility_ids = HashSet::new();
    for raw in raw_facilities {
        let what = format!("facility {:?}", raw.id);
        if !facility_ids.insert(raw.id.clone()) {
            problems.push(format!("{what}: duplicate id"));
        }
        for (field, value) in [
            ("title", &raw.title),
            ("cause", &raw.cause),
            ("remediation", &raw.remediation),
        ] {
            check_text(&mut problems, "facility", &raw.id, field, value);
        }
        let bound = |problems: &mut Vec<String>, field: &str, text: &str| -> u32 {
            match parse_code_detailed(text) {
                Ok(parsed) if parsed.correction.is_none() => parsed.value,
                Ok(_) => {
                    problems.push(format!("{what}: {field} {text:?} needs typo repair"));
                    0
                }
                Err(err) => {
                    problems.push(format!("{what}: {field} {text:?}: {err}"));
                    0
                }
            }
        };
        let from = bound(&mut problems, "from", &raw.from);
        let to = bound(&mut problems, "to", &raw.to);
        if from > to {
            problems.push(format!(
                "{what}: from {} is above to {}",
                Code(from),
                Code(to)
            ));
        }
        if let Some(earlier) = facilities.iter().find(|f| f.from.0 <= from && to <= f.to.0) {
            problems.push(format!(
                "{what}: range is entirely covered by the earlier facility {:?}, so it never applies",
                earlier.id
            ));
        }
        let failure_reason = match (&raw.failure_reason, category_index.get(&raw.category)) {
            (Some(reason), _) => {
                check_reason(&mut problems, &what, reason);
                reason.clone()
            }
            (None, Some(&c)) => categories[c].failure_reason.clone(),
            (None, None) => String::new(),
        };
        if !category_index.contains_key(&raw.category) {
            problems.push(format!("{what}: unknown category {:?}", raw.category));
        }
        let source_doc = resolve_sources(&mut problems, &what, &raw.sources);
        facilities.push(Facility {
            id: raw.id,
            title: raw.title,
            from: Code(from),
            to: Code(to),
            category: raw.category,
            failure_reason,
            cause: raw.cause,
            remediation: raw.remediation,
            sources: raw.sources,
            source_doc,
        });
    }

    // Phrase lists.
    let mut phrase_lists: Vec<PhraseList> = Vec::with_capacity(raw_phrases.len());
    let mut phrase_ids = HashSet::new();
    for raw in raw_phrases {
        let what = format!("phrases {:?}", raw.id);
        if !phrase_ids.insert(raw.id.clone()) {
            problems.push(format!("{what}: duplicate id"));
        }
        phrase_lists.push(compile_phrases(&mut problems, &what, raw, &category_index));
        let last = phrase_lists.len() - 1;
        resolve_sources(&mut problems, &what, &phrase_lists[last].sources);
    }

    if !problems.is_empty() {
        return Err(CatalogError::Invalid { problems });
    }
    let prose = prose_index(&categories, &entries, &phrase_lists);
    Ok(Catalog {
        sources,
        categories,
        entries,
        rules,
        facilities,
        by_code,
        by_symbol,
        messages,
        category_index,
        source_index,
        phrase_lists,
        prose,
    })
}

fn compile_phrases(
    problems: &mut Vec<String>,
    what: &str,
    raw: RawPhraseList,
    category_index: &HashMap<String, usize>,
) -> PhraseList {
    if !category_index.contains_key(&raw.category) {
        problems.push(format!("{what}: unknown category {:?}", raw.category));
    }
    if raw.category == UNKNOWN_CATEGORY {
        problems.push(format!(
            "{what}: `unknown` is the absence of evidence, not a phrase category"
        ));
    }
    if raw.phrases.is_empty() {
        problems.push(format!("{what}: has no phrases"));
    }
    for phrase in &raw.phrases {
        if prose::tokens(phrase).len() < 2 {
            problems.push(format!(
                "{what}: phrase {phrase:?} has fewer than two content words"
            ));
        }
    }
    if !raw.platforms.is_empty() {
        check_platforms(problems, what, &raw.platforms, false);
    }
    PhraseList {
        id: raw.id,
        category: raw.category,
        phrases: raw.phrases,
        sources: raw.sources,
        platforms: raw.platforms,
    }
}

/// The prose stage's evidence: every documented text of the catalog, by category (see
/// `classify::prose`). `unknown` contributes nothing: it is the absence of evidence.
fn prose_index(categories: &[Category], entries: &[Entry], lists: &[PhraseList]) -> ProseIndex {
    const ANY: &[String] = &[];
    let mut items: Vec<PhraseSource<'_>> = Vec::new();
    for category in categories.iter().filter(|c| c.id != UNKNOWN_CATEGORY) {
        items.push(PhraseSource {
            category: &category.id,
            text: &category.title,
            origin: format!("category {} title", category.id),
            platforms: ANY,
        });
    }
    let mut words: Vec<(usize, String)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.category == UNKNOWN_CATEGORY {
            continue;
        }
        let texts = std::iter::once((&entry.title, "title")).chain(
            entry
                .messages
                .iter()
                .chain(&entry.exact_messages)
                .map(|m| (m, "message")),
        );
        for (text, kind) in texts {
            items.push(PhraseSource {
                category: &entry.category,
                text,
                origin: format!("entry {} {kind}", entry.id),
                platforms: &entry.platforms,
            });
        }
        for symbol in &entry.symbols {
            if let Some(text) = prose::symbol_words(symbol) {
                words.push((i, text));
            }
        }
    }
    for (i, text) in &words {
        let entry = &entries[*i];
        items.push(PhraseSource {
            category: &entry.category,
            text,
            origin: format!("entry {} symbol", entry.id),
            platforms: &entry.platforms,
        });
    }
    for list in lists {
        for phrase in &list.phrases {
            items.push(PhraseSource {
                category: &list.category,
                text: phrase,
                origin: format!("phrases {}", list.id),
                platforms: &list.platforms,
            });
        }
    }
    ProseIndex::build(items)
}

fn compile_rule(
    problems: &mut Vec<String>,
    what: &str,
    raw: RawRule,
    entry_index: &HashMap<String, usize>,
    by_code: &HashMap<u32, usize>,
    by_symbol: &HashMap<String, (usize, SymbolStrength)>,
) -> Rule {
    let target = match entry_index.get(&raw.entry) {
        Some(&i) => i,
        None => {
            problems.push(format!("{what}: unknown entry {:?}", raw.entry));
            0
        }
    };
    if raw.codes.is_empty() && raw.symbols.is_empty() {
        problems.push(format!(
            "{what}: needs at least one code or symbol as anchor"
        ));
    }
    if raw.message_contains.is_empty()
        && raw.context_contains.is_empty()
        && raw.platforms.is_empty()
        && raw.stages.is_empty()
    {
        problems.push(format!(
            "{what}: needs a condition (message_contains, context_contains, platforms or stages)"
        ));
    }
    let mut codes = Vec::new();
    for text in &raw.codes {
        match parse_code_detailed(text) {
            Ok(parsed) if parsed.correction.is_none() => {
                if !by_code.contains_key(&parsed.value) {
                    problems.push(format!(
                        "{what}: code {} is not in any entry; a rule refines catalogued codes only",
                        Code(parsed.value)
                    ));
                }
                codes.push(Code(parsed.value));
            }
            Ok(_) => problems.push(format!("{what}: code {text:?} needs typo repair")),
            Err(err) => problems.push(format!("{what}: code {text:?}: {err}")),
        }
    }
    let mut symbol_keys = Vec::new();
    for symbol in &raw.symbols {
        let key = normalize_symbol(symbol);
        if !by_symbol.contains_key(&key) {
            problems.push(format!(
                "{what}: symbol {symbol:?} is not in any entry; a rule refines catalogued symbols only"
            ));
        }
        symbol_keys.push(key);
    }
    let normalize_all = |list: &[String], field: &str, problems: &mut Vec<String>| {
        list.iter()
            .map(|s| {
                let n = normalize_text(s);
                if n.is_empty() {
                    problems.push(format!("{what}: empty {field} pattern"));
                }
                n
            })
            .collect::<Vec<_>>()
    };
    let message_contains = normalize_all(&raw.message_contains, "message_contains", problems);
    let context_contains = normalize_all(&raw.context_contains, "context_contains", problems);
    check_platforms(problems, what, &raw.platforms, true);
    for stage in &raw.stages {
        if !STAGES.contains(&stage.as_str()) {
            problems.push(format!(
                "{what}: unknown stage {stage:?} (expected one of {})",
                STAGES.join(", ")
            ));
        }
    }
    Rule {
        id: raw.id,
        note: raw.note,
        codes,
        symbols: raw.symbols,
        message_contains,
        context_contains,
        platforms: raw.platforms,
        stages: raw.stages,
        entry: raw.entry,
        entry_index: target,
        symbol_keys,
    }
}

fn entry_name<'a>(entries: &'a [Entry], index: usize, current: &'a str) -> &'a str {
    entries.get(index).map(|e| e.id.as_str()).unwrap_or(current)
}

fn check_text(problems: &mut Vec<String>, kind: &str, id: &str, field: &str, value: &str) {
    if id.trim().is_empty() {
        problems.push(format!("{kind} with empty id"));
    }
    if value.trim().is_empty() {
        problems.push(format!("{kind} {id:?}: {field} is empty"));
    }
}

fn check_reason(problems: &mut Vec<String>, what: &str, reason: &str) {
    if !GRAPH_FAILURE_REASONS.contains(&reason) {
        problems.push(format!(
            "{what}: failure_reason {reason:?} is not a Graph deviceEnrollmentFailureReason member"
        ));
    }
}

fn check_platforms(
    problems: &mut Vec<String>,
    what: &str,
    platforms: &[String],
    allow_empty: bool,
) {
    if platforms.is_empty() && !allow_empty {
        problems.push(format!("{what}: platforms is empty"));
    }
    for platform in platforms {
        if !PLATFORMS.contains(&platform.as_str()) {
            problems.push(format!(
                "{what}: unknown platform {platform:?} (expected one of {})",
                PLATFORMS.join(", ")
            ));
        }
    }
}
