//! `fleetpulse-analyzer classify`: NDJSON in, NDJSON out.
//!
//! Each input line is one JSON object with any of `code` (string in any accepted form, or an
//! integer: signed or unsigned 32-bit), `symbol`, `message`, `platform`, `source`, `stage`
//! (strings or null). Unknown keys are refused so a misspelt field is reported, not ignored.
//!
//! Each non-blank input line produces exactly one output line, in input order:
//! `{"line":N,"category":…,"code":"0x%08X"|null,"failure_reason":…,"cause":…,"remediation":…,
//! "source_doc":…,"matched_by":…,"entry_id":…,"rule_id":…,"facility_id":…}` plus
//! `"code_corrected_from"` when a documented typo was repaired, and `"evidence"` (the documented
//! phrases found, with their origin, matched words and points) when the prose stage answered
//! (`"matched_by":"prose"`); a malformed line produces
//! `{"line":N,"error":"…"}` and processing continues. Blank (whitespace-only) lines produce no
//! output but still count for line numbers, so `line` always points at the input line.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Classification, Signal};
use crate::catalog::code::parse_code_detailed;
use crate::catalog::{Catalog, CatalogError, Code, UNKNOWN_CATEGORY};

/// Options of `fleetpulse-analyzer classify`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    about = "Classify enrollment failure signals read as JSON lines on stdin",
    long_about = "Reads one JSON object per line from stdin, with any of the keys code (\"0x80180014\", \"80180014\", -2145910764, 2149056532, ...), symbol, message, platform, source and stage, and writes one JSON object per input line to stdout with category, normalised code (0x%08X), Graph failure_reason, cause, remediation and source_doc. A malformed line yields {\"line\": N, \"error\": \"...\"} and the remaining lines still run; blank lines are skipped without output.\n\nExample:\n  echo '{\"code\":\"0x80180014\",\"message\":\"Enrollment blocked for AP device by SDM One Time Limit Check\"}' | fleetpulse-analyzer classify"
)]
pub struct ClassifyArgs {
    /// Use this catalog instead of the embedded one: a directory of .toml files (merged in name
    /// order) or a single .toml file. It is validated before any line is read.
    #[arg(long, value_name = "PATH", env = "FLEETPULSE_ANALYZER_CATALOG")]
    pub catalog: Option<PathBuf>,
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClassifyStats {
    /// Input lines read, blank ones included.
    pub lines: u64,
    /// Whitespace-only lines (no output).
    pub blank: u64,
    /// Lines classified (one output object each).
    pub classified: u64,
    /// Of the classified lines, those with category `unknown`.
    pub unknown: u64,
    /// Malformed lines (one error object each).
    pub errors: u64,
}

/// Why a run stopped. Malformed input lines never stop a run.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("reading input: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing output: {0}")]
    Write(#[source] std::io::Error),
}

/// Runs the command: loads the catalog named by `args` (or the embedded one), then classifies
/// `input` into `out`.
pub fn run(
    args: &ClassifyArgs,
    input: impl BufRead,
    out: impl Write,
) -> Result<ClassifyStats, ClassifyError> {
    match &args.catalog {
        Some(path) => {
            let catalog = Catalog::load(path)?;
            run_with_catalog(&catalog, input, out)
        }
        None => run_with_catalog(Catalog::embedded(), input, out),
    }
}

/// Classifies `input` into `out` with an already loaded catalog.
pub fn run_with_catalog(
    catalog: &Catalog,
    mut input: impl BufRead,
    out: impl Write,
) -> Result<ClassifyStats, ClassifyError> {
    let mut out = BufWriter::new(out);
    let mut stats = ClassifyStats::default();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        buffer.clear();
        let read = input
            .read_until(b'\n', &mut buffer)
            .map_err(ClassifyError::Read)?;
        if read == 0 {
            break;
        }
        stats.lines += 1;
        let line_number = stats.lines;
        let outcome = match std::str::from_utf8(&buffer) {
            Err(err) => Err(format!("line is not valid UTF-8: {err}")),
            Ok(text) if text.trim().is_empty() => {
                stats.blank += 1;
                continue;
            }
            Ok(text) => classify_line(catalog, text),
        };
        match outcome {
            Ok(line) => {
                stats.classified += 1;
                if line.classification.category == UNKNOWN_CATEGORY {
                    stats.unknown += 1;
                }
                write_json(
                    &mut out,
                    &OutputLine {
                        line: line_number,
                        classification: &line.classification,
                        code_corrected_from: line.corrected_from.as_deref(),
                    },
                )?;
            }
            Err(error) => {
                stats.errors += 1;
                write_json(
                    &mut out,
                    &ErrorLine {
                        line: line_number,
                        error: &error,
                    },
                )?;
            }
        }
    }
    out.flush().map_err(ClassifyError::Write)?;
    Ok(stats)
}

#[derive(Serialize)]
struct OutputLine<'a> {
    line: u64,
    #[serde(flatten)]
    classification: &'a Classification,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_corrected_from: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    line: u64,
    error: &'a str,
}

fn write_json(out: &mut impl Write, value: &impl Serialize) -> Result<(), ClassifyError> {
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| ClassifyError::Write(std::io::Error::other(e)))?;
    out.write_all(b"\n").map_err(ClassifyError::Write)
}

/// One signal to classify (a line of `classify`'s input, an object of `POST /api/v1/classify`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Signal)]
pub struct SignalInput {
    /// Error code: hex (0x80180014), unsigned decimal or signed HRESULT decimal, as a string
    /// or an integer.
    #[serde(default)]
    #[schema(value_type = Option<CodeValue>)]
    pub code: Option<Value>,
    #[serde(default)]
    pub symbol: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
}

/// A code as a string or an integer (schema of [`SignalInput::code`]).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CodeValue {
    Text(String),
    Number(i64),
}

struct ClassifiedLine {
    classification: Classification,
    corrected_from: Option<String>,
}

fn classify_line(catalog: &Catalog, text: &str) -> Result<ClassifiedLine, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!("expected a JSON object, got {}", json_kind(&value)));
    }
    let input: SignalInput = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let (code, corrected_from) = match &input.code {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(s)) if s.trim().is_empty() => (None, None),
        Some(Value::String(s)) => {
            let parsed = parse_code_detailed(s).map_err(|e| format!("field `code`: {e}"))?;
            let corrected = parsed.correction.map(|_| s.trim().to_string());
            (Some(Code(parsed.value)), corrected)
        }
        Some(Value::Number(n)) => (Some(Code(integer_code(n)?)), None),
        Some(other) => {
            return Err(format!(
                "field `code`: expected a string or an integer, got {}",
                json_kind(other)
            ));
        }
    };
    let signal = Signal {
        code,
        symbol: input.symbol.as_deref(),
        message: input.message.as_deref(),
        platform: input.platform.as_deref(),
        source: input.source.as_deref(),
        stage: input.stage.as_deref(),
    };
    Ok(ClassifiedLine {
        classification: catalog.classify(&signal),
        corrected_from,
    })
}

/// A JSON integer as a 32-bit code: unsigned up to 2^32-1 or signed down to -2^31.
fn integer_code(n: &serde_json::Number) -> Result<u32, String> {
    if let Some(u) = n.as_u64() {
        return u32::try_from(u).map_err(|_| format!("field `code`: {u} does not fit in 32 bits"));
    }
    if let Some(i) = n.as_i64() {
        return i32::try_from(i)
            .map(|v| v as u32)
            .map_err(|_| format!("field `code`: {i} does not fit in 32 bits"));
    }
    Err(format!("field `code`: {n} is not an integer"))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
