//! The prose stage: classifies a report written in words, without a code or name the catalog
//! knows ("the device limit has been reached", "TPM attestation failed", "can't connect to the
//! server"), from the catalog's own documented texts.
//!
//! Pure and deterministic like the rest of the classifier: the index is compiled from the
//! catalog, so a better catalog re-classifies all history.
//!
//! **Evidence.** Every documented text of the catalog is one *phrase* of its category: each
//! entry's documented messages and title, its specific symbol names split into words
//! (`DeviceCapReached` → "device cap reached"), each category's title, and the `[[phrases]]`
//! lists (short wordings from Microsoft's documentation, each list with its sources). A phrase
//! is reduced to its *content tokens*: lower-cased words with the stop words removed and a
//! light suffix stemming (`devices` → `device`, `reached` → `reach`), so word order, tense and
//! filler do not matter.
//!
//! **Weights.** A token weighs what it tells about the category: its inverse *category*
//! frequency, `ln((C + 1) / c)` with `C` categories of which `c` use the token in some phrase.
//! `device` or `failed`, written in almost every category, weigh nearly nothing; `attestation`
//! or `licence`, written in one, weigh most.
//!
//! **Matching.** A phrase matches a report when the report holds enough of its weight
//! (`MIN_COVERAGE` of it, and at least two of its tokens when it has two or more); the phrase
//! then contributes `matched weight × coverage`, half as much again when the report quotes the
//! phrase (its content words contiguous and in the documented order). A category scores its
//! best contribution plus
//! half its second and a quarter of its third (several independent phrases are more evidence
//! than one, with diminishing returns).
//!
//! **Decision.** The best category wins only when its score reaches `MIN_SCORE` and beats the
//! runner-up by `MIN_MARGIN`; otherwise the answer stays `unknown`. Both thresholds were chosen
//! on the tuning reports of `tests/corpus/errors` (the prose stage run alone on every tuning
//! report, and on those an administrator calls unknown), never on a held-out set; see
//! BENCHMARKS.md "Real-world accuracy" for the curve.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// Share of a phrase's weight a report must hold for the phrase to count.
pub const MIN_COVERAGE: f64 = 0.75;
/// Lowest category score that is answered (below it the answer stays `unknown`). 7.0 from
/// the fifth pass's second round to the sixth pass, 6.0 since the sixth pass's phrase lists
/// changed the word weights (the rule's optimum on the tuning reports moved; not chosen on a
/// held-out set).
pub const MIN_SCORE: f64 = 6.0;
/// The best category's score must be at least this multiple of the runner-up's.
pub const MIN_MARGIN: f64 = 1.3;
/// Extra weight of a phrase whose content words appear in the report contiguously and in the
/// documented order (the report quotes the documented wording rather than reusing its words).
pub const VERBATIM_BONUS: f64 = 0.5;
/// Evidence phrases returned with an answer.
const MAX_EVIDENCE: usize = 3;

/// Words that carry no meaning about a failure's cause. Negations (`not`, `no`, `cannot`) are
/// kept: "not licensed" and "licensed" are different reports. Besides grammar words, this
/// drops what every report says whatever its cause: that something failed in an unknown or
/// unexpected way ("Something went wrong", "unknown error", "contact your admin") and the
/// names of the products involved (Company Portal, Intune, Windows): a report that names the
/// Company Portal is not evidence that the Company Portal is the cause.
const STOP_WORDS: &[&str] = &[
    "admin",
    "administrator",
    "azure",
    "company",
    "contact",
    "error",
    "errors",
    "help",
    "intune",
    "issue",
    "microsoft",
    "occurred",
    "portal",
    "problem",
    "something",
    "support",
    "try",
    "unexpected",
    "unknown",
    "went",
    "windows",
    "wrong",
    "a",
    "about",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "during",
    "each",
    "for",
    "from",
    "get",
    "getting",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "me",
    "more",
    "most",
    "my",
    "of",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "out",
    "over",
    "please",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "us",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
];

/// One documented text of a category, as the index keeps it.
#[derive(Debug, Clone)]
struct Phrase {
    category: usize,
    /// The text as documented (shown as evidence).
    text: String,
    /// Where it comes from: `entry <id> message`, `phrases <id>`, `category <id> title`, …
    origin: String,
    /// Distinct content tokens.
    tokens: Vec<String>,
    /// The content tokens in the documented order (repeats kept), for the verbatim bonus.
    sequence: Vec<String>,
    /// Platforms the phrase is documented for (empty: any). A phrase of an iOS message is not
    /// evidence about a Windows report.
    platforms: Vec<String>,
}

/// The compiled prose index of a catalog.
#[derive(Debug, Clone, Default)]
pub struct ProseIndex {
    categories: Vec<String>,
    phrases: Vec<Phrase>,
    weight: HashMap<String, f64>,
}

/// One phrase that matched: its contribution, its index and the tokens found.
struct Hit {
    points: f64,
    phrase: usize,
    matched: Vec<String>,
}

/// One documented text offered to [`ProseIndex::build`].
#[derive(Debug, Clone)]
pub struct PhraseSource<'a> {
    pub category: &'a str,
    pub text: &'a str,
    /// Where the catalog has it, shown with the evidence.
    pub origin: String,
    /// Platforms of the entry (`all` or empty: any platform).
    pub platforms: &'a [String],
}

/// One documented phrase that matched a report: why the prose stage answered as it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The documented text, as written in the catalog.
    pub phrase: String,
    /// Where the catalog has it (`entry <id> message`, `phrases <id>`, …).
    pub origin: String,
    /// The content tokens of the phrase found in the report.
    pub matched: Vec<String>,
    /// The phrase's contribution to the category score, in hundredths.
    pub points: u32,
}

/// The prose stage's answer for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct ProseVerdict {
    pub category: String,
    /// The winning category's score.
    pub score: f64,
    /// The best other category's score (0 when none matched).
    pub runner_up: f64,
    /// The matched phrases of the winning category, strongest first.
    pub evidence: Vec<Evidence>,
}

impl ProseVerdict {
    /// Whether the verdict is confident enough to be answered.
    pub fn is_confident(&self) -> bool {
        self.score >= MIN_SCORE && self.score >= MIN_MARGIN * self.runner_up
    }
}

impl ProseIndex {
    /// Builds the index from phrases. Phrases without content tokens are dropped, and so is a
    /// phrase whose tokens repeat an earlier phrase of the same category and platforms (an
    /// entry's title that is its message is one piece of evidence, not two); `unknown` is
    /// never a phrase category (the caller leaves it out).
    pub fn build<'a>(items: impl IntoIterator<Item = PhraseSource<'a>>) -> ProseIndex {
        let mut index = ProseIndex::default();
        let mut category_of: HashMap<String, usize> = HashMap::new();
        let mut seen: BTreeSet<(String, Vec<String>, Vec<String>)> = BTreeSet::new();
        for PhraseSource {
            category,
            text,
            origin,
            platforms,
        } in items
        {
            let sequence = tokens(text);
            let tokens: Vec<String> = sequence
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if tokens.is_empty() {
                continue;
            }
            let platforms: Vec<String> = if platforms.iter().any(|p| p == "all") {
                Vec::new()
            } else {
                platforms.to_vec()
            };
            if !seen.insert((category.to_string(), tokens.clone(), platforms.clone())) {
                continue;
            }
            let next = index.categories.len();
            let id = *category_of.entry(category.to_string()).or_insert(next);
            if id == next {
                index.categories.push(category.to_string());
            }
            index.phrases.push(Phrase {
                category: id,
                text: text.to_string(),
                origin,
                tokens,
                sequence,
                platforms,
            });
        }
        let mut users: HashMap<&str, BTreeSet<usize>> = HashMap::new();
        for phrase in &index.phrases {
            for token in &phrase.tokens {
                users.entry(token).or_default().insert(phrase.category);
            }
        }
        let total = index.categories.len() as f64;
        index.weight = users
            .into_iter()
            .map(|(token, cats)| (token.to_string(), ((total + 1.0) / cats.len() as f64).ln()))
            .collect();
        index
    }

    /// Number of phrases in the index.
    pub fn len(&self) -> usize {
        self.phrases.len()
    }

    /// Whether the index has no phrases.
    pub fn is_empty(&self) -> bool {
        self.phrases.is_empty()
    }

    fn weight(&self, token: &str) -> f64 {
        self.weight.get(token).copied().unwrap_or(0.0)
    }

    /// Scores a text against every category; `None` when no phrase matched at all. The
    /// verdict may still be below the thresholds: check [`ProseVerdict::is_confident`].
    /// `platform` (lower case, as signals carry it) leaves out phrases documented for other
    /// platforms; an unknown or missing platform leaves out none.
    pub fn score(&self, text: &str, platform: Option<&str>) -> Option<ProseVerdict> {
        let sequence = tokens(text);
        let report: BTreeSet<String> = sequence.iter().cloned().collect();
        if report.is_empty() {
            return None;
        }
        let mut hits: HashMap<usize, Vec<Hit>> = HashMap::new();
        let platform = platform.filter(|p| crate::catalog::PLATFORMS.contains(p) && *p != "all");
        for (i, phrase) in self.phrases.iter().enumerate() {
            if let Some(platform) = platform
                && !phrase.platforms.is_empty()
                && !phrase.platforms.iter().any(|p| p == platform)
            {
                continue;
            }
            let total: f64 = phrase.tokens.iter().map(|t| self.weight(t)).sum();
            if total <= 0.0 {
                continue;
            }
            let matched: Vec<String> = phrase
                .tokens
                .iter()
                .filter(|t| report.contains(*t))
                .cloned()
                .collect();
            if matched.len() < phrase.tokens.len().min(2) {
                continue;
            }
            let got: f64 = matched.iter().map(|t| self.weight(t)).sum();
            let coverage = got / total;
            if coverage < MIN_COVERAGE {
                continue;
            }
            let verbatim = phrase.sequence.len() >= 2
                && sequence
                    .windows(phrase.sequence.len())
                    .any(|w| w == phrase.sequence.as_slice());
            let bonus = if verbatim { 1.0 + VERBATIM_BONUS } else { 1.0 };
            hits.entry(phrase.category).or_default().push(Hit {
                points: got * coverage * bonus,
                phrase: i,
                matched,
            });
        }
        let mut scored: Vec<(f64, usize, Vec<Hit>)> = hits
            .into_iter()
            .map(|(category, mut list)| {
                list.sort_by(|a, b| b.points.total_cmp(&a.points).then(a.phrase.cmp(&b.phrase)));
                let score = list
                    .iter()
                    .take(3)
                    .zip([1.0, 0.5, 0.25])
                    .map(|(hit, factor)| hit.points * factor)
                    .sum();
                (score, category, list)
            })
            .collect();
        // Highest score first; ties broken by category order for determinism.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut ranked = scored.into_iter();
        let (score, category, list) = ranked.next()?;
        let runner_up = ranked.next().map_or(0.0, |(s, _, _)| s);
        let evidence = list
            .into_iter()
            .take(MAX_EVIDENCE)
            .map(|hit| Evidence {
                phrase: self.phrases[hit.phrase].text.clone(),
                origin: self.phrases[hit.phrase].origin.clone(),
                matched: hit.matched,
                points: (hit.points * 100.0).round() as u32,
            })
            .collect();
        Some(ProseVerdict {
            category: self.categories[category].clone(),
            score,
            runner_up,
            evidence,
        })
    }
}

/// Splits a symbol name into words: `DeviceCapReached` → "Device Cap Reached",
/// `ERROR_WINHTTP_TIMEOUT` → "ERROR WINHTTP TIMEOUT". Returns `None` for names that are one
/// word (nothing to gain over the symbol lookup).
pub fn symbol_words(symbol: &str) -> Option<String> {
    let mut out = String::new();
    let mut previous: Option<char> = None;
    for c in symbol.chars() {
        if c == '_' || c == '-' || c == '.' || c == ' ' {
            out.push(' ');
        } else {
            if c.is_ascii_uppercase() && previous.is_some_and(|p| p.is_ascii_lowercase()) {
                out.push(' ');
            }
            out.push(c);
        }
        previous = Some(c);
    }
    let mut words: Vec<&str> = out.split_whitespace().collect();
    // Constant prefixes (`MENROLL_E_`, `DSREG_E_`, `HRESULT_`) name the component, not the
    // failure: keep what follows the `E` of an error constant.
    if let Some(e) = words.iter().position(|w| *w == "E")
        && e <= 2
    {
        words.drain(..=e);
    }
    (words.len() >= 2).then(|| words.join(" "))
}

/// Content tokens of a text: lower-cased ASCII words (letters and digits) of two or more
/// characters, stop words removed, contractions expanded (`can't` → `cannot`), and a light
/// suffix stemming.
///
/// The stemming is hand-written rather than a Snowball stemmer on purpose: the documented
/// texts and reports share vocabulary closely, and the few inflections that matter (plural
/// `s`, `ed`, `ing`) are enough; Snowball's stronger stripping merges product words that must
/// stay apart (`registration`/`register`, `management`/`managed` are different evidence).
pub fn tokens(text: &str) -> Vec<String> {
    let normalized = crate::catalog::text::normalize_text(text);
    normalized
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 2)
        .filter(|w| !STOP_WORDS.contains(w))
        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()))
        .map(stem)
        .collect()
}

fn stem(word: &str) -> String {
    // British and American spellings of the same evidence meet.
    let w = match word {
        "licence" => "license",
        "licences" => "licenses",
        "licenced" => "licensed",
        "enrol" => "enroll",
        "enrolment" => "enrollment",
        "enrolments" => "enrollments",
        other => other,
    };
    let stemmed = strip_suffix(w);
    // A final silent `e` goes too, so `license`/`licensed` and `update`/`updated` meet.
    match stemmed.strip_suffix('e') {
        Some(rest) if rest.len() >= 4 => rest.to_string(),
        _ => stemmed,
    }
}

fn strip_suffix(w: &str) -> String {
    let strip = |suffix: &str, min: usize| -> Option<&str> {
        w.strip_suffix(suffix).filter(|rest| rest.len() >= min)
    };
    if let Some(rest) = strip("ies", 3) {
        return format!("{rest}y");
    }
    if let Some(rest) = strip("ing", 4) {
        return undouble(rest);
    }
    if let Some(rest) = strip("ed", 4) {
        return undouble(rest);
    }
    if !w.ends_with("ss")
        && !w.ends_with("us")
        && !w.ends_with("is")
        && let Some(rest) = strip("s", 3)
    {
        return rest.to_string();
    }
    w.to_string()
}

/// `enrolled` → `enroll` keeps its double l (the stem of `enroll`), but `blocked` → `block`
/// and `mapped` → `map`: a doubled final consonant other than `l`, `s` or `z` is undone.
fn undouble(rest: &str) -> String {
    let bytes = rest.as_bytes();
    let n = bytes.len();
    if n >= 2 && bytes[n - 1] == bytes[n - 2] && !matches!(bytes[n - 1], b'l' | b's' | b'z') {
        return rest[..n - 1].to_string();
    }
    rest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: &[String] = &[];

    fn phrase<'a>(category: &'a str, text: &'a str, origin: &str) -> PhraseSource<'a> {
        PhraseSource {
            category,
            text,
            origin: origin.to_string(),
            platforms: ANY,
        }
    }

    fn index() -> ProseIndex {
        ProseIndex::build([
            phrase("device_cap", "Device limit reached", "a"),
            phrase(
                "device_cap",
                "The user has enrolled the maximum number of devices",
                "b",
            ),
            phrase("tpm", "TPM attestation failed", "c"),
            phrase("tpm", "TPM firmware needs update", "d"),
            phrase("network", "Cannot connect to the server", "e"),
            phrase("network", "The device failed to reach the server", "f"),
            phrase(
                "license",
                "The user is not licensed for a subscription",
                "g",
            ),
        ])
    }

    #[test]
    fn tokens_drop_stop_words_and_stem() {
        assert_eq!(
            tokens("The devices have reached the limit"),
            vec!["devic", "reach", "limit"]
        );
        assert_eq!(tokens("Can't connect"), vec!["cannot", "connect"]);
        assert_eq!(
            tokens("Enrolled, enrolling; blocked"),
            vec!["enroll", "enroll", "block"]
        );
        assert_eq!(
            tokens("status 0x801c0003 of 2019"),
            vec!["status", "0x801c0003"]
        );
        assert_eq!(tokens("policies access"), vec!["policy", "access"]);
        assert_eq!(tokens("licence licensed"), vec!["licens", "licens"]);
    }

    #[test]
    fn symbols_split_into_words() {
        assert_eq!(
            symbol_words("DeviceCapReached").as_deref(),
            Some("Device Cap Reached")
        );
        assert_eq!(
            symbol_words("ERROR_WINHTTP_TIMEOUT").as_deref(),
            Some("ERROR WINHTTP TIMEOUT")
        );
        assert_eq!(symbol_words("Unknown"), None);
        assert_eq!(
            symbol_words("MENROLL_E_DEVICE_CAP_REACHED").as_deref(),
            Some("DEVICE CAP REACHED")
        );
    }

    #[test]
    fn a_reworded_report_finds_its_category_with_evidence() {
        let verdict = index()
            .score(
                "Enrollment fails: the device limit has been reached for this user",
                None,
            )
            .expect("matches");
        assert_eq!(verdict.category, "device_cap");
        assert_eq!(verdict.evidence[0].phrase, "Device limit reached");
        assert_eq!(verdict.evidence[0].origin, "a");
        assert_eq!(verdict.evidence[0].matched, vec!["devic", "limit", "reach"]);
        assert_eq!(verdict.runner_up, 0.0);
    }

    #[test]
    fn quoting_the_documented_wording_weighs_more_than_reusing_its_words() {
        let index = index();
        let quoted = index
            .score("Error: Device limit reached", None)
            .expect("matches");
        let reworded = index
            .score("the limit of each device was reached", None)
            .expect("matches");
        assert_eq!(quoted.category, "device_cap");
        assert_eq!(reworded.category, "device_cap");
        let ratio = quoted.score / reworded.score;
        assert!((ratio - (1.0 + VERBATIM_BONUS)).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn confidence_needs_both_the_score_and_the_margin() {
        let verdict = |score: f64, runner_up: f64| ProseVerdict {
            category: "tpm".to_string(),
            score,
            runner_up,
            evidence: Vec::new(),
        };
        assert!(verdict(MIN_SCORE, 0.0).is_confident());
        assert!(!verdict(MIN_SCORE - 0.01, 0.0).is_confident());
        assert!(verdict(MIN_SCORE * MIN_MARGIN, MIN_SCORE).is_confident());
        assert!(!verdict(MIN_SCORE * MIN_MARGIN - 0.01, MIN_SCORE).is_confident());
    }

    #[test]
    fn words_shared_by_categories_are_weak_evidence() {
        // "device" and "server" are written in several categories: alone they are not enough.
        let index = index();
        let verdict = index.score("the device and the server", None);
        assert!(
            verdict.as_ref().is_none_or(|v| !v.is_confident()),
            "{verdict:?}"
        );
        assert!(index.weight("devic") < index.weight("attestation"));
    }

    #[test]
    fn unrelated_text_stays_unknown() {
        assert_eq!(index().score("The printer is out of paper", None), None);
        assert_eq!(index().score("", None), None);
    }

    #[test]
    fn a_close_call_between_categories_is_not_confident() {
        let verdict = index()
            .score(
                "TPM attestation failed and we cannot connect to the server",
                None,
            )
            .expect("matches");
        assert_eq!(verdict.category, "network");
        assert!(verdict.runner_up > 0.0);
        assert!(
            verdict.score < MIN_MARGIN * verdict.runner_up,
            "{verdict:?}"
        );
        assert!(!verdict.is_confident());
    }

    #[test]
    fn partial_phrases_below_coverage_do_not_count() {
        // One word of "The user is not licensed for a subscription" is not the phrase.
        let verdict = index().score("subscription", None);
        assert!(verdict.is_none(), "{verdict:?}");
    }

    #[test]
    fn duplicate_phrases_count_once_and_generic_words_not_at_all() {
        let index = ProseIndex::build([
            phrase("tpm", "TPM attestation failed", "title"),
            phrase("tpm", "TPM attestation failed", "message"),
            phrase("network", "Cannot connect to the server", "e"),
        ]);
        assert_eq!(index.len(), 2);
        // "unknown error", "Something went wrong" and product names are no evidence.
        assert_eq!(
            tokens("Something went wrong: unknown error in Company Portal"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn phrases_of_another_platform_are_left_out() {
        let ios = ["ios".to_string()];
        let index = ProseIndex::build([
            PhraseSource {
                category: "client_software",
                text: "Workplace Join failed",
                origin: "ios entry".to_string(),
                platforms: &ios,
            },
            phrase("entra_join", "Device registration failed", "any"),
        ]);
        let report = "Workplace Join failed (event 304)";
        assert!(index.score(report, Some("ios")).is_some());
        assert_eq!(index.score(report, Some("windows")), None);
        // An unknown platform filters nothing.
        assert!(index.score(report, None).is_some());
    }
}
