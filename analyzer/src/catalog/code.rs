//! Error-code normalisation.
//!
//! Devices, logs and documents write the same HRESULT in many shapes: `0x80180014`,
//! `80180014`, `0X80180014`, signed decimal `-2145910764`, unsigned decimal `2149056532`,
//! embedded in text (`hr 0x8007064c`, `(0x8018000a - 2149056522)`), and with documented typos
//! (`0x80180002b`, nine digits, for 0x8018002B; `0x801c003`, seven digits, for 0x801C0003).
//! Everything downstream works on one canonical `u32`, printed as `0x%08X`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A normalised 32-bit error code (HRESULT, Win32 or NTSTATUS value), printed as `0x%08X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u32);

impl Code {
    /// The raw unsigned value.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl From<u32> for Code {
    fn from(value: u32) -> Self {
        Code(value)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)
    }
}

impl FromStr for Code {
    type Err = CodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_code(s).map(Code)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a string is not an error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("error code is empty")]
    Empty,
    #[error(
        "{input:?} is not an error code: expected hex (0x80180014, 80180014) or decimal (-2145910764, 2149056532)"
    )]
    NotACode { input: String },
    #[error("{input:?} does not fit in 32 bits")]
    OutOfRange { input: String },
    #[error("{input:?} looks like a mistyped code but the intended value is ambiguous")]
    AmbiguousTypo { input: String },
}

/// How a typo in the input was repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// Nine hex digits where one zero of the low word was doubled (`0x80180002b` → 0x8018002B).
    ExtraZero,
    /// Seven hex digits where a leading zero of the low word was dropped (`0x801c003` → 0x801C0003).
    MissingZero,
}

/// A parsed code and whether a documented typo had to be repaired to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedCode {
    pub value: u32,
    pub correction: Option<Correction>,
}

/// Parses one error code written in any of the accepted forms; see [`parse_code_detailed`].
pub fn parse_code(input: &str) -> Result<u32, CodeError> {
    parse_code_detailed(input).map(|p| p.value)
}

/// Parses one error code and reports typo repairs.
///
/// Accepted, after trimming whitespace:
/// - hex with `0x`/`0X` prefix, any case, 1..=8 digits (9 or 7 digits: see typos below);
/// - bare hex of exactly 8 digits (`80180014`, `8018000a`) — documents quote HRESULTs this way,
///   so an 8-character digit string is read as hex, never as decimal;
/// - bare hex containing a letter a-f (`801c03ed`);
/// - decimal otherwise: signed (`-2145910764`, two's complement) or unsigned up to 2^32-1;
/// - text around one code (`hr 0x8007064c`, `Error 80180003:`, `(0x8018000a - 2149056522)`):
///   the first `0x` token wins, then the first bare 8-digit hex token, then a 10-digit or
///   negative decimal token.
///
/// Typos: nine hex digits whose low five digits contain a doubled zero are repaired by dropping
/// one zero of the low word when that gives a single answer (`0x80180002b` → 0x8018002B);
/// seven hex digits starting with `8` get a zero inserted at the start of the low word
/// (`0x801c003` → 0x801C0003).
pub fn parse_code_detailed(input: &str) -> Result<ParsedCode, CodeError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(CodeError::Empty);
    }
    if let Some(parsed) = parse_single_token(trimmed, input)? {
        return Ok(parsed);
    }
    match find_code_in_text(trimmed) {
        Some(found) => Ok(found),
        None => Err(CodeError::NotACode {
            input: input.to_string(),
        }),
    }
}

/// Parses `token` if the whole token is a number form; `Ok(None)` when it is not a number at all.
fn parse_single_token(token: &str, original: &str) -> Result<Option<ParsedCode>, CodeError> {
    if let Some(hex) = token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        return parse_hex_digits(hex, original).map(Some);
    }
    if let Some(rest) = token.strip_prefix('-') {
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit()) {
            return Ok(None);
        }
        let value: i64 = rest.parse::<i64>().map_err(|_| CodeError::OutOfRange {
            input: original.to_string(),
        })?;
        if value > i64::from(i32::MAX) + 1 {
            return Err(CodeError::OutOfRange {
                input: original.to_string(),
            });
        }
        // Two's complement of a value in 1..=2^31 always fits in 32 bits.
        let as_u32 = (-value) as i32 as u32;
        return Ok(Some(ParsedCode {
            value: as_u32,
            correction: None,
        }));
    }
    let token = token.strip_prefix('+').unwrap_or(token);
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let all_decimal = token.chars().all(|c| c.is_ascii_digit());
    if all_decimal && token.len() != 8 {
        let value: u64 = token.parse::<u64>().map_err(|_| CodeError::OutOfRange {
            input: original.to_string(),
        })?;
        let value = u32::try_from(value).map_err(|_| CodeError::OutOfRange {
            input: original.to_string(),
        })?;
        return Ok(Some(ParsedCode {
            value,
            correction: None,
        }));
    }
    parse_hex_digits(token, original).map(Some)
}

fn parse_hex_digits(hex: &str, original: &str) -> Result<ParsedCode, CodeError> {
    let digits = hex.trim_start_matches('0');
    let significant = if digits.is_empty() { "0" } else { digits };
    match hex.len() {
        9 if hex.starts_with('8') => repair_nine_digits(hex, original),
        7 if hex.starts_with('8') => {
            let repaired = format!("{}0{}", &hex[..4], &hex[4..]);
            let value = u32::from_str_radix(&repaired, 16).map_err(|_| CodeError::NotACode {
                input: original.to_string(),
            })?;
            Ok(ParsedCode {
                value,
                correction: Some(Correction::MissingZero),
            })
        }
        _ if significant.len() > 8 => Err(CodeError::OutOfRange {
            input: original.to_string(),
        }),
        _ => {
            let value = u32::from_str_radix(significant, 16).map_err(|_| CodeError::NotACode {
                input: original.to_string(),
            })?;
            Ok(ParsedCode {
                value,
                correction: None,
            })
        }
    }
}

/// Drops one zero from the low five digits; accepted only when every choice agrees.
fn repair_nine_digits(hex: &str, original: &str) -> Result<ParsedCode, CodeError> {
    let (high, low) = hex.split_at(4);
    let mut candidate: Option<String> = None;
    for (index, ch) in low.char_indices() {
        if ch != '0' {
            continue;
        }
        let mut shorter = String::with_capacity(4);
        shorter.push_str(&low[..index]);
        shorter.push_str(&low[index + 1..]);
        match &candidate {
            None => candidate = Some(shorter),
            Some(existing) if existing.eq_ignore_ascii_case(&shorter) => {}
            Some(_) => {
                return Err(CodeError::AmbiguousTypo {
                    input: original.to_string(),
                });
            }
        }
    }
    let Some(low) = candidate else {
        return Err(CodeError::OutOfRange {
            input: original.to_string(),
        });
    };
    let value =
        u32::from_str_radix(&format!("{high}{low}"), 16).map_err(|_| CodeError::NotACode {
            input: original.to_string(),
        })?;
    Ok(ParsedCode {
        value,
        correction: Some(Correction::ExtraZero),
    })
}

/// One code-like token found in free text, with its byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken<'a> {
    pub text: &'a str,
    pub offset: usize,
    pub kind: TokenKind,
}

/// Shape of a code-like token; also its priority when several appear in one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenKind {
    /// `0x…` with 1..=9 hex digits.
    Prefixed,
    /// Exactly 8 hex digits starting with `8` (how documents quote HRESULTs), at least one
    /// decimal digit, not part of a GUID.
    BareHex,
    /// A 10-digit or negative decimal of HRESULT magnitude (`2149056522`, `-2145648611`).
    Decimal,
}

/// Lists every code-like token in `text`, in order of appearance.
///
/// Tokens glued to letters, digits, `_` or (for bare tokens) `-` on either side are skipped,
/// so GUIDs, 64-bit keyword masks and `0x8018xxxx` placeholders are not mistaken for codes.
pub fn code_tokens(text: &str) -> Vec<FoundToken<'_>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let prev = if i == 0 { None } else { Some(bytes[i - 1]) };
        let glued_before = prev.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if glued_before {
            i += 1;
            continue;
        }
        // 0x-prefixed.
        if bytes[i] == b'0' && i + 1 < bytes.len() && (bytes[i + 1] == b'x' || bytes[i + 1] == b'X')
        {
            let start = i + 2;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            let glued_after =
                end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
            let len = end - start;
            if !glued_after && (1..=9).contains(&len) {
                found.push(FoundToken {
                    text: &text[i..end],
                    offset: i,
                    kind: TokenKind::Prefixed,
                });
            }
            i = end.max(i + 1);
            continue;
        }
        let negative = bytes[i] == b'-' && i + 1 < bytes.len() && bytes[i + 1].is_ascii_digit();
        let start = if negative { i + 1 } else { i };
        if start < bytes.len() && bytes[start].is_ascii_hexdigit() {
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_hexdigit() {
                end += 1;
            }
            let glued_after = end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b'-');
            let dash_before = !negative && prev == Some(b'-');
            let word = &text[start..end];
            let all_decimal = word.bytes().all(|b| b.is_ascii_digit());
            if !glued_after && !dash_before {
                if !negative
                    && word.len() == 8
                    && word.starts_with('8')
                    && word.bytes().any(|b| b.is_ascii_digit())
                {
                    found.push(FoundToken {
                        text: word,
                        offset: start,
                        kind: TokenKind::BareHex,
                    });
                } else if all_decimal && word.len() == 10 && !negative {
                    if word
                        .parse::<u64>()
                        .is_ok_and(|v| (0x8000_0000..=0xFFFF_FFFF).contains(&v))
                    {
                        found.push(FoundToken {
                            text: word,
                            offset: start,
                            kind: TokenKind::Decimal,
                        });
                    }
                } else if all_decimal && negative && word.len() == 10 {
                    let token = &text[i..end];
                    if token.parse::<i64>().is_ok_and(|v| v >= i64::from(i32::MIN)) {
                        found.push(FoundToken {
                            text: token,
                            offset: i,
                            kind: TokenKind::Decimal,
                        });
                    }
                }
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// Finds the failure code written in free text: the first token whose value has the HRESULT
/// severity bit set (a failure), else the first non-zero one, else the first; within each of
/// those, `0x` tokens before bare hex before decimals (see [`parse_code_detailed`]).
///
/// Messages often carry a flag or success code before the failure: in "Auto MDM Enroll:
/// Device Credential (0x1), Failed (Unknown Win32 Error code: 0x8018002b)" the failure is
/// 0x8018002B, not the credential type 0x1.
pub fn find_code_in_text(text: &str) -> Option<ParsedCode> {
    let parsed: Vec<(TokenKind, usize, ParsedCode)> = code_tokens(text)
        .iter()
        .filter_map(|t| {
            parse_single_token(t.text, t.text)
                .ok()
                .flatten()
                .map(|p| (t.kind, t.offset, p))
        })
        .collect();
    let rank = |value: u32| {
        if value & 0x8000_0000 != 0 {
            0
        } else if value != 0 {
            1
        } else {
            2
        }
    };
    parsed
        .into_iter()
        .min_by_key(|(kind, offset, p)| (rank(p.value), *kind, *offset))
        .map(|(_, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        for input in [
            "0x80180014",
            "80180014",
            "0X80180014",
            "-2145910764",
            "2149056532",
            "  0x80180014\t",
            "0x80180014 ",
        ] {
            assert_eq!(parse_code(input), Ok(0x8018_0014), "{input}");
        }
        assert_eq!(parse_code("hr 0x8007064c"), Ok(0x8007_064C));
        assert_eq!(
            parse_code(
                "Auto MDM Enroll: Device Credential (0x1), Failed (Unknown Win32 Error code: 0x8018002b)"
            ),
            Ok(0x8018_002B)
        );
        assert_eq!(parse_code("state 0x0, result 0x12"), Ok(0x12));
        assert_eq!(parse_code("(0x8018000a - 2149056522)"), Ok(0x8018_000A));
        assert_eq!(parse_code("Error 80180003:"), Ok(0x8018_0003));
        assert_eq!(parse_code("801c03ed"), Ok(0x801C_03ED));
        assert_eq!(parse_code("0xAB2"), Ok(0xAB2));
        assert_eq!(parse_code("1612"), Ok(1612));
    }

    #[test]
    fn repairs_documented_typos() {
        assert_eq!(
            parse_code_detailed("0x80180002b"),
            Ok(ParsedCode {
                value: 0x8018_002B,
                correction: Some(Correction::ExtraZero)
            })
        );
        assert_eq!(
            parse_code_detailed("0x801c003"),
            Ok(ParsedCode {
                value: 0x801C_0003,
                correction: Some(Correction::MissingZero)
            })
        );
        assert_eq!(
            parse_code("0x801c00300"),
            Err(CodeError::AmbiguousTypo {
                input: "0x801c00300".into()
            })
        );
    }

    #[test]
    fn rejects_non_codes() {
        assert_eq!(parse_code("   "), Err(CodeError::Empty));
        assert!(matches!(
            parse_code("The machine is already enrolled"),
            Err(CodeError::NotACode { .. })
        ));
        assert!(matches!(
            parse_code("99999999999"),
            Err(CodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_code("-2147483649"),
            Err(CodeError::OutOfRange { .. })
        ));
        assert!(matches!(parse_code("0x"), Err(CodeError::NotACode { .. })));
    }

    #[test]
    fn tokens_skip_guids_masks_and_placeholders() {
        let text = "GUID 6bff0bd9-820b-484b and 0x8000000000000000 and 0x8018xxxx and 8018000a.";
        let tokens: Vec<&str> = code_tokens(text).iter().map(|t| t.text).collect();
        assert_eq!(tokens, vec!["8018000a"]);
        let text = "FAIL [0x801c0021/0x80072ee2] code -2145648611";
        let tokens: Vec<&str> = code_tokens(text).iter().map(|t| t.text).collect();
        assert_eq!(tokens, vec!["0x801c0021", "0x80072ee2", "-2145648611"]);
    }

    #[test]
    fn display_is_upper_hex_with_prefix() {
        assert_eq!(Code(0x8018_000A).to_string(), "0x8018000A");
        assert_eq!(Code(0xAB2).to_string(), "0x00000AB2");
    }
}
