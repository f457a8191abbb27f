//! Every catalog entry and every rule classifies to its own category when given its own
//! matcher, and every facility answers for its range.

use fleetpulse_analyzer::catalog::Catalog;
use fleetpulse_analyzer::classify::{Classification, Code, MatchedBy, Signal};

fn first_platform(platforms: &[String]) -> Option<&str> {
    platforms.iter().map(String::as_str).find(|p| *p != "all")
}

fn check(
    entry_id: &str,
    category: &str,
    what: &str,
    got: &Classification,
    failures: &mut Vec<String>,
) {
    if got.category != category {
        failures.push(format!(
            "{entry_id} via {what}: category {} (entry {:?}, by {:?}), expected {category}",
            got.category, got.entry_id, got.matched_by
        ));
    }
}

#[test]
fn every_entry_code_classifies_to_the_entry() {
    let catalog = Catalog::embedded();
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in catalog.entries() {
        for code in &entry.codes {
            let got = catalog.classify(&Signal {
                code: Some(*code),
                ..Signal::default()
            });
            checked += 1;
            check(
                &entry.id,
                &entry.category,
                &code.to_string(),
                &got,
                &mut failures,
            );
            if got.entry_id.as_deref() != Some(entry.id.as_str())
                || got.matched_by != MatchedBy::Code
            {
                failures.push(format!(
                    "{} via {code}: {:?} by {:?}",
                    entry.id, got.entry_id, got.matched_by
                ));
            }
            assert_eq!(got.code, Some(code.to_string()));
            assert_eq!(got.failure_reason, entry.failure_reason);
            assert_eq!(got.cause, entry.cause);
            assert_eq!(got.remediation, entry.remediation);
            assert_eq!(got.source_doc, entry.source_doc);
        }
    }
    assert_eq!(failures, Vec::<String>::new());
    assert!(checked >= 150, "{checked} codes checked");
}

#[test]
fn every_entry_symbol_classifies_to_the_entry() {
    let catalog = Catalog::embedded();
    let mut failures = Vec::new();
    for entry in catalog.entries() {
        for symbol in entry.symbols.iter().chain(&entry.class_symbols) {
            for form in [
                symbol.clone(),
                symbol.to_ascii_lowercase(),
                symbol.to_ascii_uppercase(),
            ] {
                let got = catalog.classify(&Signal {
                    symbol: Some(&form),
                    ..Signal::default()
                });
                check(&entry.id, &entry.category, &form, &got, &mut failures);
                if got.entry_id.as_deref() != Some(entry.id.as_str())
                    || got.matched_by != MatchedBy::Symbol
                {
                    failures.push(format!(
                        "{} via {form}: {:?} by {:?}",
                        entry.id, got.entry_id, got.matched_by
                    ));
                }
                assert_eq!(got.code, None);
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new());
}

#[test]
fn every_entry_message_classifies_to_the_entry() {
    let catalog = Catalog::embedded();
    let mut failures = Vec::new();
    for entry in catalog.entries() {
        let platform = first_platform(&entry.platforms);
        for message in entry.messages.iter().chain(&entry.exact_messages) {
            // Also embedded in a longer text, for substring patterns.
            let wrapped = format!("Something went wrong. {message}. Try again later");
            let forms: Vec<&str> = if entry.exact_messages.contains(message) {
                vec![message.as_str()]
            } else {
                vec![message.as_str(), wrapped.as_str()]
            };
            for form in forms {
                let got = catalog.classify(&Signal {
                    message: Some(form),
                    platform,
                    ..Signal::default()
                });
                check(&entry.id, &entry.category, form, &got, &mut failures);
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new());
}

#[test]
fn every_rule_selects_its_entry_from_its_own_conditions() {
    let catalog = Catalog::embedded();
    let mut failures = Vec::new();
    for rule in catalog.rules() {
        let target = catalog.entry(&rule.entry).expect("rule target exists");
        let texts: Vec<&str> = rule
            .message_contains
            .iter()
            .chain(&rule.context_contains)
            .map(String::as_str)
            .collect();
        for code in &rule.codes {
            for text in &texts {
                let got = catalog.classify(&Signal {
                    code: Some(*code),
                    message: Some(text),
                    platform: rule.platforms.first().map(String::as_str),
                    stage: rule.stages.first().map(String::as_str),
                    ..Signal::default()
                });
                check(
                    &target.id,
                    &target.category,
                    &format!("rule {} {code} {text:?}", rule.id),
                    &got,
                    &mut failures,
                );
                if got.rule_id.as_deref() != Some(rule.id.as_str())
                    || got.matched_by != MatchedBy::Rule
                {
                    failures.push(format!(
                        "rule {} {code} {text:?}: rule {:?} by {:?}",
                        rule.id, got.rule_id, got.matched_by
                    ));
                }
                assert_eq!(got.entry_id.as_deref(), Some(target.id.as_str()));
            }
        }
        for symbol in &rule.symbols {
            let text = texts.first().copied().unwrap_or_default();
            let got = catalog.classify(&Signal {
                symbol: Some(symbol),
                message: Some(text),
                ..Signal::default()
            });
            check(
                &target.id,
                &target.category,
                &format!("rule {} {symbol} {text:?}", rule.id),
                &got,
                &mut failures,
            );
        }
    }
    assert_eq!(failures, Vec::<String>::new());
}

#[test]
fn every_facility_answers_for_both_ends_of_its_range_when_no_entry_does() {
    let catalog = Catalog::embedded();
    let mut failures = Vec::new();
    for (index, facility) in catalog.facilities().iter().enumerate() {
        for code in [
            facility.from.0,
            facility.to.0,
            facility.from.0 + (facility.to.0 - facility.from.0) / 2,
        ] {
            if catalog.entry_for_code(code).is_some() {
                continue;
            }
            // An earlier, narrower facility may own this code; only check codes this one owns.
            let owner = catalog
                .facilities()
                .iter()
                .position(|f| f.from.0 <= code && code <= f.to.0);
            if owner != Some(index) {
                continue;
            }
            let got = catalog.classify(&Signal {
                code: Some(Code(code)),
                ..Signal::default()
            });
            if got.category != facility.category
                || got.matched_by != MatchedBy::Facility
                || got.facility_id.as_deref() != Some(facility.id.as_str())
            {
                failures.push(format!("{} at {}: {got:?}", facility.id, Code(code)));
            }
            assert_eq!(got.failure_reason, facility.failure_reason);
            assert_eq!(got.code, Some(Code(code).to_string()));
        }
    }
    assert_eq!(failures, Vec::<String>::new());
}
