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
use fleetpulse_analyzer::classify::{MatchedBy, Signal, prose};
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
    let files = corpus_files();
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
    // set ("tuning" or a held-out file) -> [unknown reports, of them forced into a category,
    // prose answers, of them right]
    let mut prose_sides: BTreeMap<String, [usize; 4]> = BTreeMap::new();
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
            if real {
                let set = if sample.holdout {
                    path.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    "tuning".to_string()
                };
                let side = prose_sides.entry(set).or_default();
                if sample.expect == "unknown" {
                    side[0] += 1;
                    side[1] += usize::from(!ok);
                }
                if answer.matched_by == MatchedBy::Prose {
                    side[2] += 1;
                    side[3] += usize::from(ok);
                }
            }
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
    println!(
        "prose stage and false positives per set (unknown reports an administrator could not place, and how many the classifier forced into a category; answers of the prose stage, and how many are right)"
    );
    for (set, [unknown, forced, prose, prose_ok]) in &prose_sides {
        println!(
            "  {set:<22} unknown reports forced: {forced}/{unknown}  prose answers right: {prose_ok}/{prose}"
        );
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

/// The corpus files, in name order (tuning files first, then one held-out file per pass).
fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus/errors exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Real reports of the corpus, split by kind: `(tuning, held-out)`.
fn real_reports() -> (Vec<Sample>, Vec<Sample>) {
    let (mut tuning, mut holdout) = (Vec::new(), Vec::new());
    for path in corpus_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let file: File =
            toml::from_str(&text).expect("checked by real_world_error_report_accuracy");
        for sample in file.sample {
            if sample.fidelity == "reconstructed" {
                continue;
            }
            if sample.holdout {
                holdout.push(sample);
            } else {
                tuning.push(sample);
            }
        }
    }
    (tuning, holdout)
}

/// Threshold grid searched for the prose stage (score, margin ratio).
const PROSE_SCORES: [f64; 7] = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
const PROSE_MARGINS: [f64; 4] = [1.0, 1.3, 1.6, 2.0];
/// A wrong category costs this many missed ones: issue 8 asks to say "unknown" rather than
/// guess, and a wrong cause sends an administrator the wrong way.
const WRONG_COST: f64 = 3.0;

/// The prose stage's thresholds are chosen on the TUNING reports only, by a rule written down
/// before looking at any result: the stage is run alone (ignoring every code and name rule)
/// on every real tuning report with a message; each grid pair is scored `correct −
/// WRONG_COST × wrong` (a report an administrator calls `unknown` and the stage places is
/// wrong); the best pair wins, ties going to the higher (more cautious) score, then margin.
/// The test fails when `prose::MIN_SCORE`/`prose::MIN_MARGIN` are not that pair (so a catalog
/// change that moves the optimum is noticed) or when the stage's precision on tuning falls
/// below 85%. Held-out reports are never read here.
#[test]
fn prose_thresholds_are_chosen_on_tuning_reports() {
    let catalog = Catalog::embedded();
    let (tuning, _) = real_reports();
    // (score, margin ratio, expected, predicted)
    let mut rows: Vec<(f64, f64, String, String)> = Vec::new();
    for sample in &tuning {
        let Some(message) = sample.message.as_deref() else {
            continue;
        };
        match catalog.prose_verdict(message, sample.platform.as_deref()) {
            Some(v) => {
                let ratio = if v.runner_up > 0.0 {
                    v.score / v.runner_up
                } else {
                    f64::INFINITY
                };
                if v.category != sample.expect {
                    println!(
                        "PROSE-ALONE tuning {} expected {} got {} (score {:.2}, ratio {:.2}) evidence {:?}",
                        sample.id,
                        sample.expect,
                        v.category,
                        v.score,
                        ratio,
                        v.evidence
                            .iter()
                            .map(|e| format!("{} [{}]", e.phrase, e.origin))
                            .collect::<Vec<_>>()
                    );
                }
                rows.push((v.score, ratio, sample.expect.clone(), v.category));
            }
            None => rows.push((0.0, 0.0, sample.expect.clone(), "unknown".to_string())),
        }
    }
    let unknowns = rows.iter().filter(|r| r.2 == "unknown").count();
    let evaluate = |min_score: f64, margin: f64| {
        let answered: Vec<_> = rows
            .iter()
            .filter(|r| r.0 >= min_score && r.1 >= margin)
            .collect();
        let correct = answered.iter().filter(|r| r.2 == r.3).count();
        let forced = answered.iter().filter(|r| r.2 == "unknown").count();
        (answered.len(), correct, forced)
    };
    println!(
        "\nProse stage alone on {} real tuning reports with a message ({unknowns} of them unknown to an administrator)",
        rows.len()
    );
    println!(
        "{:>9} {:>7} {:>9} {:>8} {:>10} {:>8} {:>8}",
        "min_score", "margin", "answered", "correct", "precision", "forced", "utility"
    );
    let mut best: Option<(f64, f64, f64)> = None;
    for min_score in PROSE_SCORES {
        for margin in PROSE_MARGINS {
            let (answered, correct, forced) = evaluate(min_score, margin);
            let utility = correct as f64 - WRONG_COST * (answered - correct) as f64;
            println!(
                "{min_score:>9.1} {margin:>7.1} {answered:>9} {correct:>8} {:>9.1}% {forced:>5}/{unknowns} {utility:>8.1}",
                percent(correct, answered)
            );
            // Strictly better utility wins; equal utility keeps the earlier, lower pair
            // unless the later one is more cautious, which it always is in this grid order.
            if best.is_none_or(|(u, _, _)| utility >= u) {
                best = Some((utility, min_score, margin));
            }
        }
    }
    let (utility, best_score, best_margin) = best.expect("grid is not empty");
    let (answered, correct, forced) = evaluate(prose::MIN_SCORE, prose::MIN_MARGIN);
    println!(
        "chosen: min_score {} margin {}: {correct}/{answered} answered correctly ({:.1}%), {forced}/{unknowns} unknown reports forced; rule's best: {best_score} / {best_margin} (utility {utility})",
        prose::MIN_SCORE,
        prose::MIN_MARGIN,
        percent(correct, answered)
    );
    assert_eq!(
        (prose::MIN_SCORE, prose::MIN_MARGIN),
        (best_score, best_margin),
        "the prose thresholds are not the tuning set's optimum under the documented rule"
    );
    assert!(answered > 0, "the prose stage answers no tuning report");
    assert!(
        percent(correct, answered) >= 85.0,
        "prose stage precision on tuning {correct}/{answered} is below 85%"
    );
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
