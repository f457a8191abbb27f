//! Real-world accuracy of the classifier: error reports as users published them
//! (`tests/corpus/errors/*.toml`: code and/or message as pasted, platform, source address) are
//! classified with the embedded catalog and compared with the category an experienced Intune
//! administrator gives them. Separate from the catalog's own tests, which check entries
//! against the documents they come from.
//!
//! Run `cargo test -p fleetpulse-analyzer --test corpus_accuracy -- --nocapture` for the
//! per-category table recorded in BENCHMARKS.md ("Real-world accuracy"). The test fails when
//! fewer than 90% of the real (verbatim or excerpt) tuning reports get the expected category,
//! when a sample names a category outside the vocabulary, or when a file is malformed.
//!
//! Two figures, never mixed: the tuning set (reports the catalog was extended from) carries
//! the floor, because its figure is stable under additions; the held-out set (`holdout =
//! true`: collected in the same searches, set aside before classification, never used to
//! change the catalog) is printed separately as the honest generalisation figure and has no
//! floor, so that adding an honest held-out miss never breaks the suite.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fleetpulse_analyzer::catalog::{CATEGORY_IDS, Catalog, Code};
use fleetpulse_analyzer::classify::Signal;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    sample: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    id: String,
    source: String,
    fidelity: String,
    platform: Option<String>,
    code: Option<String>,
    message: Option<String>,
    expect: String,
    #[serde(default)]
    note: Option<String>,
    /// Collected after the catalog was extended and never used to tune it.
    #[serde(default)]
    holdout: bool,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/errors")
}

#[test]
fn real_world_error_report_accuracy() {
    let catalog = Catalog::embedded();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus/errors exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    // category -> (real total, real correct, reconstructed total, reconstructed correct)
    let mut table: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new();
    let mut misread = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let (mut holdout_total, mut holdout_ok) = (0usize, 0usize);
    // category -> (held-out real total, held-out real correct)
    let mut holdout_rows: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // held-out file (one per collection pass) -> category -> (real total, real correct)
    let mut holdout_batches: BTreeMap<String, BTreeMap<String, (usize, usize)>> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        let file: File = match toml::from_str(&text) {
            Ok(file) => file,
            Err(err) => {
                problems.push(format!("{}: {err}", path.display()));
                continue;
            }
        };
        for sample in file.sample {
            if !ids.insert(sample.id.clone()) {
                problems.push(format!("{}: duplicate id {}", path.display(), sample.id));
            }
            if !sample.source.starts_with("https://") {
                problems.push(format!("{}: source must be an https address", sample.id));
            }
            if !CATEGORY_IDS.contains(&sample.expect.as_str()) {
                problems.push(format!(
                    "{}: {:?} is not a category",
                    sample.id, sample.expect
                ));
            }
            let real = match sample.fidelity.as_str() {
                "verbatim" | "excerpt" => true,
                "reconstructed" => false,
                other => {
                    problems.push(format!("{}: unknown fidelity {other:?}", sample.id));
                    continue;
                }
            };
            let code = match sample.code.as_deref().map(str::parse::<Code>) {
                Some(Ok(code)) => Some(code),
                Some(Err(err)) => {
                    problems.push(format!("{}: code: {err}", sample.id));
                    continue;
                }
                None => None,
            };
            let signal = Signal {
                code,
                symbol: None,
                message: sample.message.as_deref(),
                platform: sample.platform.as_deref(),
                source: None,
                stage: None,
            };
            let answer = catalog.classify(&signal);
            let ok = answer.category == sample.expect;
            if sample.holdout && real {
                holdout_total += 1;
                holdout_ok += usize::from(ok);
                let row = holdout_rows.entry(sample.expect.clone()).or_insert((0, 0));
                row.0 += 1;
                row.1 += usize::from(ok);
                let batch = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let row = holdout_batches
                    .entry(batch)
                    .or_default()
                    .entry(sample.expect.clone())
                    .or_insert((0, 0));
                row.0 += 1;
                row.1 += usize::from(ok);
            }
            let row = table.entry(sample.expect.clone()).or_default();
            if real {
                row.0 += 1;
                row.1 += usize::from(ok);
            } else {
                row.2 += 1;
                row.3 += usize::from(ok);
            }
            if !ok {
                misread.push(format!(
                    "MISCLASSIFIED {} {} (expected {}, got {} by {} {}{}): {}",
                    if sample.holdout { "held-out" } else { "tuning" },
                    sample.id,
                    sample.expect,
                    answer.category,
                    answer.matched_by.as_str(),
                    answer.entry_id.or(answer.facility_id).unwrap_or_default(),
                    answer
                        .code
                        .map(|c| format!(" code {c}"))
                        .unwrap_or_default(),
                    sample.note.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    println!("\nReal-world error report accuracy (tests/corpus/errors, verbatim+excerpt = real)");
    println!(
        "{:<20} {:>6} {:>8} {:>9} {:>14}",
        "expected category", "real", "correct", "accuracy", "reconstructed"
    );
    let (mut total, mut correct) = (0usize, 0usize);
    for (category, (real, ok, rebuilt, rebuilt_ok)) in &table {
        println!(
            "{:<20} {:>6} {:>8} {:>8.1}% {:>8}/{:<5}",
            category,
            real,
            ok,
            percent(*ok, *real),
            rebuilt_ok,
            rebuilt
        );
        total += real;
        correct += ok;
    }
    println!(
        "{:<20} {:>6} {:>8} {:>8.1}%",
        "all",
        total,
        correct,
        percent(correct, total)
    );
    let (tuning_total, tuning_ok) = (total - holdout_total, correct - holdout_ok);
    println!(
        "tuning reports (the catalog was extended from them; floor 90%): {tuning_ok}/{tuning_total} ({:.1}%)",
        percent(tuning_ok, tuning_total)
    );
    println!(
        "held-out reports (never tuned on; no floor): {holdout_ok}/{holdout_total} ({:.1}%)",
        percent(holdout_ok, holdout_total)
    );
    for (category, (n, ok)) in &holdout_rows {
        println!("  held-out {category:<18} {ok}/{n}");
    }
    for (batch, rows) in &holdout_batches {
        let (n, ok) = rows
            .values()
            .fold((0, 0), |(n, ok), (rn, rok)| (n + rn, ok + rok));
        println!("held-out set {batch}: {ok}/{n} ({:.1}%)", percent(ok, n));
        for (category, (n, ok)) in rows {
            println!("  {batch} {category:<18} {ok}/{n}");
        }
    }
    for line in &misread {
        println!("{line}");
    }
    assert!(
        problems.is_empty(),
        "corpus problems:\n{}",
        problems.join("\n")
    );
    assert!(
        tuning_total > 0,
        "no real tuning error reports in the corpus"
    );
    assert!(
        percent(tuning_ok, tuning_total) >= 90.0,
        "only {tuning_ok} of {tuning_total} real tuning error reports classified as expected (floor: 90%)"
    );
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
