//! The knowledge base of enrollment failure signals.
//!
//! The data lives in `analyzer/catalog/*.toml` (compiled from the public documents listed in
//! its `[[source]]` tables) and is embedded into the binary; `--catalog PATH` loads a
//! replacement at run time. Loading validates everything the classifier relies on (see
//! [`build`]): an invalid catalog is refused as a whole with every problem listed, so the
//! classifier never runs on half a knowledge base.

mod build;
pub mod code;
pub mod model;
pub mod scan;
pub mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

pub use code::{Code, CodeError, Correction, ParsedCode, parse_code, parse_code_detailed};

/// The stable category vocabulary (ids used by the API, alerts and SIEM output). Every one must
/// be defined by the catalog; the catalog may not define others without adding them here.
pub const CATEGORY_IDS: &[&str] = &[
    "device_cap",
    "license",
    "tpm",
    "unsupported_device",
    "platform_blocked",
    "not_authorized",
    "tenant_config",
    "already_enrolled",
    "network",
    "clock_skew",
    "authentication",
    "certificate",
    "entra_join",
    "autopilot",
    "server_error",
    "account_state",
    "client_software",
    "user_cancelled",
    "unknown",
];

/// The category given to signals nothing in the catalog explains.
pub const UNKNOWN_CATEGORY: &str = "unknown";

/// Members of Microsoft Graph's `deviceEnrollmentFailureReason` enum (v1.0).
pub const GRAPH_FAILURE_REASONS: &[&str] = &[
    "unknown",
    "authentication",
    "authorization",
    "accountValidation",
    "userValidation",
    "deviceNotSupported",
    "inMaintenance",
    "badRequest",
    "featureNotSupported",
    "enrollmentRestrictionsEnforced",
    "clientDisconnected",
    "userAbandonment",
];

/// Platforms an entry may name.
pub const PLATFORMS: &[&str] = &["all", "windows", "ios", "ipados", "macos", "android"];

/// The embedded catalog files, in load order. `catalog_files_are_all_embedded` (tests) checks
/// this list against the directory so a new file cannot be forgotten.
pub const EMBEDDED_FILES: &[(&str, &str)] = &[
    (
        "00_sources.toml",
        include_str!("../../catalog/00_sources.toml"),
    ),
    (
        "01_categories.toml",
        include_str!("../../catalog/01_categories.toml"),
    ),
    (
        "10_windows_mdm.toml",
        include_str!("../../catalog/10_windows_mdm.toml"),
    ),
    (
        "11_windows_soap.toml",
        include_str!("../../catalog/11_windows_soap.toml"),
    ),
    (
        "12_windows_intune.toml",
        include_str!("../../catalog/12_windows_intune.toml"),
    ),
    (
        "13_legacy_agent.toml",
        include_str!("../../catalog/13_legacy_agent.toml"),
    ),
    (
        "14_entra_dsreg.toml",
        include_str!("../../catalog/14_entra_dsreg.toml"),
    ),
    (
        "15_apple_android.toml",
        include_str!("../../catalog/15_apple_android.toml"),
    ),
    (
        "16_ui_and_graph.toml",
        include_str!("../../catalog/16_ui_and_graph.toml"),
    ),
    (
        "17_real_world.toml",
        include_str!("../../catalog/17_real_world.toml"),
    ),
    ("18_graph.toml", include_str!("../../catalog/18_graph.toml")),
    (
        "19_sdk_and_network.toml",
        include_str!("../../catalog/19_sdk_and_network.toml"),
    ),
    ("20_rules.toml", include_str!("../../catalog/20_rules.toml")),
    (
        "21_phrases.toml",
        include_str!("../../catalog/21_phrases.toml"),
    ),
    (
        "30_facilities.toml",
        include_str!("../../catalog/30_facilities.toml"),
    ),
];

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading catalog {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog directory {path} holds no .toml files")]
    NoFiles { path: PathBuf },
    #[error("parsing catalog file {file}: {source}")]
    Parse {
        file: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("catalog is invalid ({} problems):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid { problems: Vec<String> },
}

/// A public document cited by entries.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub id: String,
    pub title: String,
    pub repo: Option<String>,
    pub path: Option<String>,
    pub commit: Option<String>,
    pub url: Option<String>,
    /// Human-readable reference: `repo:path@commit` when known, else the url, else the title.
    pub reference: String,
}

/// A failure category with its defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: String,
    pub title: String,
    pub definition: String,
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
}

/// One known failure signal, resolved (failure reason and source reference filled in).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub codes: Vec<Code>,
    pub symbols: Vec<String>,
    pub class_symbols: Vec<String>,
    pub messages: Vec<String>,
    pub exact_messages: Vec<String>,
    pub platforms: Vec<String>,
    pub category: String,
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
    pub sources: Vec<String>,
    /// Reference of the primary source.
    pub source_doc: String,
}

/// A context rule (see [`model::RawRule`]); text conditions are stored normalised.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: String,
    pub note: String,
    pub codes: Vec<Code>,
    pub symbols: Vec<String>,
    pub message_contains: Vec<String>,
    pub context_contains: Vec<String>,
    pub platforms: Vec<String>,
    pub stages: Vec<String>,
    pub entry: String,
    #[serde(skip)]
    pub(crate) entry_index: usize,
    #[serde(skip)]
    pub(crate) symbol_keys: Vec<String>,
}

/// A facility fallback over an inclusive code range.
#[derive(Debug, Clone, Serialize)]
pub struct Facility {
    pub id: String,
    pub title: String,
    pub from: Code,
    pub to: Code,
    pub category: String,
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
    pub sources: Vec<String>,
    pub source_doc: String,
}

/// Short documented wordings of one category, evidence for the prose stage.
#[derive(Debug, Clone, Serialize)]
pub struct PhraseList {
    pub id: String,
    pub category: String,
    pub phrases: Vec<String>,
    pub sources: Vec<String>,
    pub platforms: Vec<String>,
}

/// How strongly a symbol identifies its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymbolStrength {
    Specific,
    Class,
}

/// One message pattern, normalised.
#[derive(Debug, Clone)]
pub(crate) struct MessagePattern {
    pub text: String,
    pub exact: bool,
    pub entry_index: usize,
}

/// A row of the code/symbol lookup table for query-time classification in ClickHouse.
///
/// Code rows have `has_code = 1` and an empty `symbol`; join them on `error_code` where
/// `error_has_code = 1`. Symbol rows have `has_code = 0`, `code = 0` and `symbol` in the
/// classifier's normal form ([`text::normalize_symbol`]: ASCII letters and digits, lower case,
/// no namespace prefix). Context rules and message patterns are not expressible as rows; use
/// [`Catalog::classify_batch`] on distinct tuples when they matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalRow {
    pub code: u32,
    pub has_code: u8,
    pub symbol: String,
    /// 1 for specific symbols (win over the code), 0 for class symbols and code rows.
    pub specific: u8,
    pub category: String,
    pub failure_reason: String,
    pub entry_id: String,
}

/// The compiled, validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub(crate) sources: Vec<Source>,
    pub(crate) categories: Vec<Category>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) facilities: Vec<Facility>,
    pub(crate) by_code: HashMap<u32, usize>,
    pub(crate) by_symbol: HashMap<String, (usize, SymbolStrength)>,
    pub(crate) messages: Vec<MessagePattern>,
    pub(crate) category_index: HashMap<String, usize>,
    pub(crate) source_index: HashMap<String, usize>,
    pub(crate) phrase_lists: Vec<PhraseList>,
    /// Evidence of the prose stage, compiled from the documented texts above.
    pub(crate) prose: crate::classify::prose::ProseIndex,
}

impl Catalog {
    /// The catalog compiled into the binary. Validated by the test suite, so loading it cannot
    /// fail in a released build.
    pub fn embedded() -> &'static Catalog {
        static EMBEDDED: OnceLock<Catalog> = OnceLock::new();
        EMBEDDED.get_or_init(|| match Catalog::from_files(EMBEDDED_FILES) {
            Ok(catalog) => catalog,
            // Proven invariant: `embedded_catalog_is_valid` fails the build's tests otherwise.
            Err(err) => panic!("embedded catalog is invalid: {err}"),
        })
    }

    /// Loads a catalog from a directory of `.toml` files (merged in file-name order) or from a
    /// single `.toml` file holding everything.
    pub fn load(path: impl AsRef<Path>) -> Result<Catalog, CatalogError> {
        let path = path.as_ref();
        let io = |source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(io)?;
        let mut files: Vec<(String, String)> = Vec::new();
        if metadata.is_dir() {
            let mut names = Vec::new();
            for item in std::fs::read_dir(path).map_err(io)? {
                let item = item.map_err(io)?;
                let file_path = item.path();
                if file_path.extension().is_some_and(|e| e == "toml") {
                    names.push(file_path);
                }
            }
            names.sort();
            if names.is_empty() {
                return Err(CatalogError::NoFiles {
                    path: path.to_path_buf(),
                });
            }
            for file_path in names {
                let text =
                    std::fs::read_to_string(&file_path).map_err(|source| CatalogError::Io {
                        path: file_path.clone(),
                        source,
                    })?;
                files.push((file_path.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(io)?;
            files.push((path.display().to_string(), text));
        }
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        Catalog::from_files(&borrowed)
    }

    /// Compiles a catalog from `(file name, TOML text)` pairs, in the given order.
    pub fn from_files(files: &[(&str, &str)]) -> Result<Catalog, CatalogError> {
        let mut raw = Vec::with_capacity(files.len());
        for (name, text) in files {
            let parsed: model::RawFile =
                toml::from_str(text).map_err(|source| CatalogError::Parse {
                    file: (*name).to_string(),
                    source: Box::new(source),
                })?;
            raw.push(parsed);
        }
        build::compile(raw)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn facilities(&self) -> &[Facility] {
        &self.facilities
    }

    pub fn phrase_lists(&self) -> &[PhraseList] {
        &self.phrase_lists
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The category with this id.
    pub fn category(&self, id: &str) -> Option<&Category> {
        self.category_index.get(id).map(|&i| &self.categories[i])
    }

    /// The source document with this id.
    pub fn source(&self, id: &str) -> Option<&Source> {
        self.source_index.get(id).map(|&i| &self.sources[i])
    }

    /// The entry with this id.
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The entry listing this exact code.
    pub fn entry_for_code(&self, code: u32) -> Option<&Entry> {
        self.by_code.get(&code).map(|&i| &self.entries[i])
    }

    /// The entry listing this symbol (specific or class), matched case- and
    /// separator-insensitively.
    pub fn entry_for_symbol(&self, symbol: &str) -> Option<&Entry> {
        self.by_symbol
            .get(&text::normalize_symbol(symbol))
            .map(|&(i, _)| &self.entries[i])
    }

    /// Rows for a ClickHouse lookup table: one per catalogued code and one per symbol, sorted
    /// (codes first by value, then symbols alphabetically) so the output is stable.
    pub fn signal_table(&self) -> Vec<SignalRow> {
        let mut rows: Vec<SignalRow> =
            Vec::with_capacity(self.by_code.len() + self.by_symbol.len());
        let mut codes: Vec<(&u32, &usize)> = self.by_code.iter().collect();
        codes.sort();
        for (&code, &index) in codes {
            let entry = &self.entries[index];
            rows.push(SignalRow {
                code,
                has_code: 1,
                symbol: String::new(),
                specific: 0,
                category: entry.category.clone(),
                failure_reason: entry.failure_reason.clone(),
                entry_id: entry.id.clone(),
            });
        }
        let mut symbols: Vec<(&String, &(usize, SymbolStrength))> = self.by_symbol.iter().collect();
        symbols.sort_by(|a, b| a.0.cmp(b.0));
        for (symbol, &(index, strength)) in symbols {
            let entry = &self.entries[index];
            rows.push(SignalRow {
                code: 0,
                has_code: 0,
                symbol: symbol.clone(),
                specific: u8::from(strength == SymbolStrength::Specific),
                category: entry.category.clone(),
                failure_reason: entry.failure_reason.clone(),
                entry_id: entry.id.clone(),
            });
        }
        rows
    }
}
