//! Extracts the error codes and constant names that public documents mention, so a test can
//! prove the catalog covers every one of them.
//!
//! The extracted set is checked in as `analyzer/catalog/seed_codes.txt` (CI clones may lack the
//! documents); when the documents are present the test re-scans them and compares.

use std::collections::BTreeSet;

use super::code::{code_tokens, parse_code_detailed};

/// Prefixes of constant names worth catalogueing (enrollment, registration, ADAL, WinINet, TPM).
const SYMBOL_PREFIXES: &[&str] = &[
    "MENROLL_",
    "MREGISTER_",
    "DSREG_",
    "ERROR_ADAL_",
    "WININET_E_",
    "TPM_E_",
    "NTE_",
];

/// What a document mentions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Normalised codes (documented typos repaired).
    pub codes: BTreeSet<u32>,
    /// Constant names with one of [`SYMBOL_PREFIXES`], as written.
    pub symbols: BTreeSet<String>,
}

/// Scans one document.
///
/// Codes: `0x`-prefixed tokens, bare 8-digit hex starting with `8` (`80180003`, `801c03ed`),
/// and 10-digit or negative decimals of HRESULT magnitude. Tokens glued to letters or digits
/// (GUIDs, `0x8018xxxx` placeholders, 64-bit masks) are skipped.
pub fn scan(text: &str) -> Scanned {
    let mut out = Scanned::default();
    for token in code_tokens(text) {
        if let Ok(parsed) = parse_code_detailed(token.text) {
            out.codes.insert(parsed.value);
        }
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && bytes[i].is_ascii_uppercase() {
            let mut end = i;
            while end < bytes.len()
                && (bytes[end].is_ascii_uppercase()
                    || bytes[end].is_ascii_digit()
                    || bytes[end] == b'_')
            {
                end += 1;
            }
            let glued = end < bytes.len() && bytes[end].is_ascii_alphanumeric();
            let word = &text[i..end];
            let word = word.trim_end_matches('_');
            if !glued
                && SYMBOL_PREFIXES
                    .iter()
                    .any(|p| word.starts_with(p) && word.len() > p.len() + 1)
            {
                out.symbols.insert(word.to_string());
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    out
}

/// The checked-in list format: one item per line, `code 0x%08X` or `symbol NAME`, optionally
/// followed by `  # comment`; `ignore 0x%08X  # reason` lists codes deliberately not catalogued.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedList {
    pub codes: BTreeSet<u32>,
    pub symbols: BTreeSet<String>,
    pub ignored: BTreeSet<u32>,
}

/// Parses `seed_codes.txt`; errors name the line.
pub fn parse_seed_list(text: &str) -> Result<SeedList, String> {
    let mut list = SeedList::default();
    for (number, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (kind, value) = content
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("line {}: expected `<kind> <value>`", number + 1))?;
        let value = value.trim();
        match kind {
            "code" | "ignore" => {
                let code =
                    parse_code_detailed(value).map_err(|e| format!("line {}: {e}", number + 1))?;
                if kind == "code" {
                    list.codes.insert(code.value);
                } else {
                    list.ignored.insert(code.value);
                }
            }
            "symbol" => {
                list.symbols.insert(value.to_string());
            }
            other => return Err(format!("line {}: unknown kind {other:?}", number + 1)),
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_codes_typos_decimals_and_constants() {
        let text = "Error 0x801c003: x (0x801c0003). Event 76 (0x80180002b). code 2149056522; \
                    DSREG_E_DEVICE_AUTHORIZATION_ERROR and MENROLL_E_DEVICECAPREACHED, \
                    Keywords 0x8000000000000000, GUID 9B5DC01F-D64E, 0x8018xxxx, -2145648611.";
        let scanned = scan(text);
        assert_eq!(
            scanned.codes.into_iter().collect::<Vec<_>>(),
            vec![0x8018_000A, 0x8018_002B, 0x801C_0003, 0x801C_001D]
        );
        assert_eq!(
            scanned.symbols.into_iter().collect::<Vec<_>>(),
            vec![
                "DSREG_E_DEVICE_AUTHORIZATION_ERROR".to_string(),
                "MENROLL_E_DEVICECAPREACHED".to_string()
            ]
        );
    }

    #[test]
    fn seed_list_parses_and_reports_bad_lines() {
        let list = parse_seed_list("code 0x80180014  # x\n\nsymbol DSREG_X\nignore 0x1 # flag\n")
            .expect("valid list");
        assert!(list.codes.contains(&0x8018_0014));
        assert!(list.symbols.contains("DSREG_X"));
        assert!(list.ignored.contains(&1));
        assert_eq!(
            parse_seed_list("code zz"),
            Err("line 1: \"zz\" is not an error code: expected hex (0x80180014, 80180014) or decimal (-2145910764, 2149056532)".to_string())
        );
        assert_eq!(
            parse_seed_list("thing 1"),
            Err("line 1: unknown kind \"thing\"".to_string())
        );
    }
}
