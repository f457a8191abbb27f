//! Fuzz target bodies for the analyzer's parsers of untrusted text, as plain functions so they
//! run on stable: the seed-corpus replay test (`tests/tests/fuzz_corpus.rs`) and the
//! coverage-guided targets under `fuzz/` call the same code.
//!
//! - [`classify`]: the classifier's input (`classify` CLI lines, `POST /api/v1/classify`
//!   objects) with the embedded catalog: code parsing, message matching, rules.
//! - [`code`]: the error-code reader (`0x80180014`, HRESULT decimals, codes inside free text).
//! - [`api_query`]: the API's query-string handling: unknown/repeated parameters, filters,
//!   pagination cursors, alert rule expressions and durations.
//!
//! The bodies panic when an invariant breaks (crash, output not matching input, an error that
//! does not name a field).

use crate::catalog::Catalog;
use crate::catalog::code::{code_tokens, find_code_in_text, parse_code_detailed};
use crate::classify::cli::run_with_catalog;
use crate::query::filters::{FILTER_PARAMS, Filters, Params};

/// NDJSON lines of signals through the classifier, as `fleetpulse-analyzer classify` reads
/// them: one output object per non-blank input line, numbered by input line.
pub fn classify(data: &[u8]) {
    let mut out = Vec::new();
    let stats = match run_with_catalog(Catalog::embedded(), data, &mut out) {
        Ok(stats) => stats,
        Err(e) => panic!("classifying from memory failed: {e}"),
    };
    let text = String::from_utf8(out).expect("the classifier writes UTF-8");
    let mut lines = 0;
    let mut last = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        let n = v["line"]
            .as_u64()
            .expect("every output names its input line");
        assert!(n > last, "output lines out of order: {n} after {last}");
        last = n;
        assert!(
            v.get("category").is_some() != v.get("error").is_some(),
            "an output is a classification or an error: {line}"
        );
        lines += 1;
    }
    assert_eq!(
        lines,
        stats.lines - stats.blank,
        "one output per non-blank line"
    );
}

/// Free text through the code reader: whatever is parsed prints back to the same value, and
/// tokens lie inside the text.
pub fn code(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = parse_code_detailed(&text) {
        let printed = format!("0x{:08X}", parsed.value);
        let again = parse_code_detailed(&printed).expect("a printed code parses");
        assert_eq!(
            again.value, parsed.value,
            "{printed} reads back differently"
        );
        assert!(again.correction.is_none(), "{printed} needed a correction");
    }
    for token in code_tokens(&text) {
        assert_eq!(
            text.get(token.offset..token.offset + token.text.len()),
            Some(token.text),
            "token outside the text"
        );
    }
    let _ = find_code_in_text(&text);
}

/// A query string as the aggregate routes read it (`a=b&c=d`, not percent-decoded: the HTTP
/// layer decodes before our code sees the pairs), plus the values as cursors, a rule
/// expression and a duration.
pub fn api_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    let categories: Vec<String> = Catalog::embedded()
        .categories()
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let params = Params::new(pairs.clone());
    let mut allowed: Vec<&str> = FILTER_PARAMS.to_vec();
    allowed.extend(["limit", "cursor", "q", "bucket"]);
    match params.check_known(&allowed) {
        Ok(()) => {
            if let Err(e) = Filters::parse(&params, &categories, 1_717_200_000) {
                field_named(&e.field, &pairs);
            } else if let Ok(f) = Filters::parse(&params, &categories, 1_717_200_000) {
                assert!(f.from < f.to, "accepted an empty range");
            }
            if let Err(e) = params.int("limit", 1, 1000, 100) {
                assert_eq!(e.field, "limit");
            }
            if let Err(e) = params.text("q", 128) {
                assert_eq!(e.field, "q");
            }
        }
        Err(e) => field_named(&e.field, &pairs),
    }
    for (_, v) in &pairs {
        let _ = crate::query::affected::DeviceCursor::decode(v);
        let _ = crate::query::devices::EventCursor::decode(v);
        let _ = crate::query::export::FeedCursor::decode(v);
        let _ = crate::insights::AffectedCursor::decode(v);
        let _ = crate::alerts::config::parse_duration(v);
        if let Err(reason) = crate::alerts::rules::parse_rule(v, &categories) {
            assert!(!reason.is_empty(), "a rule refused without a reason");
        }
    }
}

fn field_named(field: &str, pairs: &[(String, String)]) {
    assert!(
        pairs.iter().any(|(k, _)| k == field) || ["to", "from"].contains(&field),
        "error names {field:?}, not a parameter of the request"
    );
}
