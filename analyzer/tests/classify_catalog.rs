//! Catalog validation: the embedded data is valid, complete against the public documents, and
//! invalid catalogs are refused with precise problems.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fleetpulse_analyzer::catalog::scan::{parse_seed_list, scan};
use fleetpulse_analyzer::catalog::{
    CATEGORY_IDS, Catalog, CatalogError, Code, EMBEDDED_FILES, GRAPH_FAILURE_REASONS,
};

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog")
}

fn seed_list() -> fleetpulse_analyzer::catalog::scan::SeedList {
    let text =
        std::fs::read_to_string(catalog_dir().join("seed_codes.txt")).expect("seed_codes.txt");
    parse_seed_list(&text).expect("seed_codes.txt parses")
}

#[test]
fn embedded_catalog_is_valid() {
    let catalog = Catalog::from_files(EMBEDDED_FILES).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        catalog.entries().len() >= 150,
        "{} entries",
        catalog.entries().len()
    );
    assert_eq!(Catalog::embedded().entries().len(), catalog.entries().len());
}

#[test]
fn catalog_files_are_all_embedded_and_identical() {
    let mut on_disk: Vec<String> = std::fs::read_dir(catalog_dir())
        .expect("catalog dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".toml"))
        .collect();
    on_disk.sort();
    let embedded: Vec<String> = EMBEDDED_FILES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, embedded);
    for (name, text) in EMBEDDED_FILES {
        let disk = std::fs::read_to_string(catalog_dir().join(name)).expect("read");
        assert_eq!(&disk, text, "{name}");
    }
}

#[test]
fn loading_the_directory_or_one_file_gives_the_embedded_catalog() {
    let from_dir = Catalog::load(catalog_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        from_dir.entries().len(),
        Catalog::embedded().entries().len()
    );
    assert_eq!(from_dir.signal_table(), Catalog::embedded().signal_table());

    let dir = tempfile::tempdir().expect("tempdir");
    let single = dir.path().join("all.toml");
    let joined: String = EMBEDDED_FILES
        .iter()
        .map(|(_, t)| format!("{t}\n"))
        .collect();
    std::fs::write(&single, joined).expect("write");
    let from_file = Catalog::load(&single).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_file.signal_table(), Catalog::embedded().signal_table());
}

#[test]
fn load_reports_missing_path_and_empty_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    match Catalog::load(&missing) {
        Err(CatalogError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io error, got {other:?}"),
    }
    match Catalog::load(dir.path()) {
        Err(CatalogError::NoFiles { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected NoFiles, got {other:?}"),
    }
}

#[test]
fn vocabulary_is_exactly_the_stable_category_list() {
    let catalog = Catalog::embedded();
    let ids: Vec<&str> = catalog.categories().iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, CATEGORY_IDS);
    for category in catalog.categories() {
        assert!(GRAPH_FAILURE_REASONS.contains(&category.failure_reason.as_str()));
        assert!(!category.definition.is_empty() && !category.cause.is_empty());
    }
    let used: BTreeSet<&str> = catalog
        .entries()
        .iter()
        .map(|e| e.category.as_str())
        .collect();
    for id in CATEGORY_IDS {
        if *id != "unknown" {
            assert!(used.contains(id), "no entry uses category {id}");
        }
    }
    for entry in catalog.entries() {
        assert!(
            GRAPH_FAILURE_REASONS.contains(&entry.failure_reason.as_str()),
            "{}",
            entry.id
        );
        assert!(!entry.source_doc.is_empty(), "{}", entry.id);
    }
}

#[test]
fn every_seed_code_and_symbol_is_catalogued() {
    let catalog = Catalog::embedded();
    let list = seed_list();
    assert!(list.codes.len() >= 140, "{} codes", list.codes.len());
    let missing: Vec<String> = list
        .codes
        .iter()
        .filter(|c| catalog.entry_for_code(**c).is_none())
        .map(|c| Code(*c).to_string())
        .collect();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "codes missing from the catalog"
    );
    let missing: Vec<&String> = list
        .symbols
        .iter()
        .filter(|s| catalog.entry_for_symbol(s).is_none())
        .collect();
    assert_eq!(
        missing,
        Vec::<&String>::new(),
        "symbols missing from the catalog"
    );
    for ignored in &list.ignored {
        assert!(!list.codes.contains(ignored));
    }
}

/// Re-scans the shared documents (beside the workspace as `../shared` when present) and
/// requires the checked-in list to match them exactly, so the list cannot drift.
#[test]
fn seed_list_matches_the_shared_documents_when_present() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = workspace.join("../shared");
    let seeds = shared.join("seeds");
    let notes = shared.join("domain/enrollment-errors.md");
    if !seeds.is_dir() || !notes.is_file() {
        eprintln!(
            "{} not present: checked-in seed_codes.txt alone is used",
            shared.display()
        );
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&seeds)
        .expect("seeds dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files.push(notes);
    let mut codes = BTreeSet::new();
    let mut symbols = BTreeSet::new();
    for file in &files {
        let found = scan(&std::fs::read_to_string(file).expect("read seed"));
        codes.extend(found.codes);
        symbols.extend(found.symbols);
    }
    let list = seed_list();
    let listed: BTreeSet<u32> = list.codes.union(&list.ignored).copied().collect();
    let show = |set: BTreeSet<u32>| {
        set.into_iter()
            .map(|c| Code(c).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        show(codes.difference(&listed).copied().collect()),
        Vec::<String>::new(),
        "codes in the documents but not in seed_codes.txt"
    );
    assert_eq!(
        show(listed.difference(&codes).copied().collect()),
        Vec::<String>::new(),
        "codes in seed_codes.txt but no longer in the documents"
    );
    assert_eq!(symbols, list.symbols);
}

#[test]
fn signal_table_has_one_row_per_code_and_symbol() {
    let catalog = Catalog::embedded();
    let rows = catalog.signal_table();
    let code_count: usize = catalog.entries().iter().map(|e| e.codes.len()).sum();
    assert_eq!(rows.iter().filter(|r| r.has_code == 1).count(), code_count);
    let cap = rows
        .iter()
        .find(|r| r.has_code == 1 && r.code == 0x8018_0013)
        .expect("0x80180013 row");
    assert_eq!(
        (
            cap.category.as_str(),
            cap.failure_reason.as_str(),
            cap.entry_id.as_str()
        ),
        (
            "device_cap",
            "enrollmentRestrictionsEnforced",
            "menroll_device_cap_reached"
        )
    );
    let symbol = rows
        .iter()
        .find(|r| r.symbol == "devicecapreached")
        .expect("symbol row");
    assert_eq!((symbol.has_code, symbol.code, symbol.specific), (0, 0, 1));
    let class = rows
        .iter()
        .find(|r| r.symbol == "authorizationerror")
        .expect("class row");
    assert_eq!(
        (class.specific, class.category.as_str()),
        (0, "not_authorized")
    );
    // Sorted: codes ascending first, then symbols.
    let codes: Vec<u32> = rows
        .iter()
        .filter(|r| r.has_code == 1)
        .map(|r| r.code)
        .collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(codes, sorted);
}

/// Builds a catalog from the real sources and categories plus `extra`, returning its problems.
fn problems_with(extra: &str) -> Vec<String> {
    let files = [EMBEDDED_FILES[0], EMBEDDED_FILES[1], ("extra.toml", extra)];
    match Catalog::from_files(&files) {
        Err(CatalogError::Invalid { problems }) => problems,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("catalog unexpectedly valid"),
    }
}

const ENTRY_A: &str = r#"
[[entry]]
id = "a"
title = "A"
codes = ["0x80180013"]
symbols = ["DeviceCapReached"]
platforms = ["windows"]
category = "device_cap"
cause = "c"
remediation = "r"
sources = ["mdm-error-codes"]
"#;

#[test]
fn duplicate_codes_symbols_messages_and_ids_are_refused() {
    let extra = format!(
        "{ENTRY_A}\n{}",
        r#"
[[entry]]
id = "a"
title = "B"
codes = ["80180013", "0x801800zz", "0x80180002b"]
symbols = ["device_cap_reached"]
messages = ["Hi there", "hi   THERE"]
platforms = ["windows", "symbian"]
category = "nope"
failure_reason = "notAReason"
cause = "c"
remediation = " "
sources = ["no-such-doc"]
"#
    );
    let problems = problems_with(&extra);
    let expected = [
        "entry \"a\": duplicate id",
        "entry \"a\": remediation is empty",
        "entry \"a\": failure_reason \"notAReason\" is not a Graph deviceEnrollmentFailureReason member",
        "entry \"a\": unknown category \"nope\"",
        "entry \"a\": unknown platform \"symbian\" (expected one of all, windows, ios, ipados, macos, android)",
        "entry \"a\": unknown source \"no-such-doc\"",
        "entry \"a\": code 0x80180013 already belongs to entry \"a\"",
        "entry \"a\": code \"0x80180002b\" needs typo repair; write the real code",
        "entry \"a\": symbol \"device_cap_reached\" (normalised \"devicecapreached\") already belongs to entry \"a\"",
        "entry \"a\": message \"hi   THERE\" already belongs to entry \"a\"",
    ];
    for want in expected {
        assert!(
            problems.iter().any(|p| p == want),
            "missing problem {want:?} in {problems:#?}"
        );
    }
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("entry \"a\": code \"0x801800zz\": ")),
        "{problems:#?}"
    );
}

#[test]
fn rules_must_reference_catalogued_anchors_and_existing_entries() {
    let extra = format!(
        "{ENTRY_A}\n{}",
        r#"
[[rule]]
id = "r1"
note = "n"
codes = ["0x80180099"]
symbols = ["NotInCatalog"]
message_contains = ["x"]
stages = ["moon"]
entry = "missing"

[[rule]]
id = "r2"
note = "n"
codes = ["0x80180013"]
entry = "a"
"#
    );
    let problems = problems_with(&extra);
    for want in [
        "rule \"r1\": unknown entry \"missing\"",
        "rule \"r1\": code 0x80180099 is not in any entry; a rule refines catalogued codes only",
        "rule \"r1\": symbol \"NotInCatalog\" is not in any entry; a rule refines catalogued symbols only",
        "rule \"r2\": needs a condition (message_contains, context_contains, platforms or stages)",
    ] {
        assert!(
            problems.iter().any(|p| p == want),
            "missing {want:?} in {problems:#?}"
        );
    }
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("rule \"r1\": unknown stage \"moon\""))
    );
}

#[test]
fn shadowed_or_inverted_facilities_are_refused() {
    let extra = r#"
[[facility]]
id = "wide"
title = "t"
from = "0x80180000"
to = "0x8018FFFF"
category = "client_software"
cause = "c"
remediation = "r"
sources = ["facility-notes"]

[[facility]]
id = "narrow"
title = "t"
from = "0x80180010"
to = "0x80180020"
category = "network"
cause = "c"
remediation = "r"
sources = ["facility-notes"]

[[facility]]
id = "inverted"
title = "t"
from = "0x80190010"
to = "0x80190001"
category = "network"
cause = "c"
remediation = "r"
sources = ["facility-notes"]
"#;
    let problems = problems_with(extra);
    assert!(problems.contains(&"facility \"narrow\": range is entirely covered by the earlier facility \"wide\", so it never applies".to_string()), "{problems:#?}");
    assert!(
        problems
            .contains(&"facility \"inverted\": from 0x80190010 is above to 0x80190001".to_string()),
        "{problems:#?}"
    );
}

#[test]
fn missing_categories_and_unknown_fields_are_refused() {
    match Catalog::from_files(&[EMBEDDED_FILES[0]]) {
        Err(CatalogError::Invalid { problems }) => {
            assert_eq!(problems.len(), CATEGORY_IDS.len());
            assert_eq!(problems[0], "category \"device_cap\": not defined");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let bad = "[[entry]]\nid = \"x\"\ncategroy = \"tpm\"\n";
    match Catalog::from_files(&[("bad.toml", bad)]) {
        Err(CatalogError::Parse { file, source }) => {
            assert_eq!(file, "bad.toml");
            assert!(
                source.to_string().contains("unknown field `categroy`"),
                "{source}"
            );
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

#[test]
fn phrase_lists_are_validated_field_by_field() {
    let problems = problems_with(
        r#"
[[phrases]]
id = "p"
category = "nope"
sources = ["no-such-doc"]
platforms = ["symbian"]
phrases = ["attestation", "the TPM attestation failed"]

[[phrases]]
id = "p"
category = "unknown"
sources = []
phrases = []
"#,
    );
    let expected = [
        "phrases \"p\": unknown category \"nope\"",
        "phrases \"p\": phrase \"attestation\" has fewer than two content words",
        "phrases \"p\": unknown platform \"symbian\" (expected one of all, windows, ios, ipados, macos, android)",
        "phrases \"p\": unknown source \"no-such-doc\"",
        "phrases \"p\": duplicate id",
        "phrases \"p\": `unknown` is the absence of evidence, not a phrase category",
        "phrases \"p\": has no phrases",
        "phrases \"p\": sources is empty",
    ];
    for want in expected {
        assert!(
            problems.iter().any(|p| p == want),
            "missing problem {want:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}
