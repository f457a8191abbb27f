//! `fleetpulse-agent inspect`: shows what the agent would send for a saved tool output, as
//! protocol messages in the proto3 JSON mapping, one `TelemetryItem` object per line.
//!
//! For administrators checking a device and for tests. Nothing is sent or spooled. Bad or
//! truncated input ends with an error `FILE:line:col: reason` (or `FILE:line: reason`) and
//! no partial output is trusted: the messages are printed only after the whole input parsed.

use std::io::{Read, Write};
use std::path::PathBuf;

use fleetpulse_proto::v1::Platform;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::sources::{
    self, ParseError, Parsed, SourceContext, dsregcmd, event_xml, macos_profiles, mdm_diag, ndjson,
    registry, tpm,
};

/// Which tool's output the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputKind {
    /// `dsregcmd /status` (UTF-8 or UTF-16 with BOM, as PowerShell redirects it).
    Dsregcmd,
    /// `wevtutil qe <channel> /f:xml` or `Get-WinEvent | ForEach-Object ToXml` output, or
    /// Event Viewer's "Copy details as text" rendering (`Log Name:` ... `Description:`).
    EventXml,
    /// `reg query HKLM\SOFTWARE\Microsoft\Enrollments /s`, or a `reg export` / regedit
    /// `.reg` file of the same keys.
    Registry,
    /// `tpmtool getdeviceinformation` or `Get-Tpm`.
    Tpm,
    /// `MDMDiagReport.xml` of `MdmDiagnosticsTool.exe -out <folder>` (or a section of it).
    MdmDiagnostics,
    /// `profiles status -type enrollment` and/or `profiles show -type enrollment` (macOS).
    MacosProfiles,
    /// NDJSON of TelemetryItems or bare EnrollmentEvents in the proto3 JSON mapping.
    Ndjson,
}

impl InputKind {
    fn default_platform(self) -> Platform {
        match self {
            Self::MacosProfiles => Platform::Macos,
            Self::Ndjson => Platform::Unspecified,
            _ => Platform::Windows,
        }
    }
}

/// Print the protocol messages the agent would produce from a saved tool output.
///
/// Example: `dsregcmd /status > status.txt`, then
/// `fleetpulse-agent inspect --kind dsregcmd status.txt`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Format of the input.
    #[arg(long, value_enum)]
    pub kind: InputKind,
    /// File to read, or `-` for standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Device id to put on the messages (the agent uses its configured device id).
    #[arg(long, default_value = "inspect-device")]
    pub device_id: String,
    /// Agent id to put on the messages (empty: as before registration).
    #[arg(long, default_value = "")]
    pub agent_id: String,
    /// Collection time (RFC 3339) for snapshots and timestamp-less events; default now.
    /// Pin it for reproducible output.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
}

/// Why `inspect` failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}", line = .error.line, column = .error.column.unwrap_or(1), message = .error.message)]
    Parse { file: String, error: ParseError },
    #[error("--now: \"{value}\" is not an RFC 3339 time ({reason})")]
    Now { value: String, reason: String },
    #[error("--device-id must be 1..=128 bytes, got {0} bytes")]
    DeviceId(usize),
    #[error("encoding output: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("writing output: {0}")]
    Write(#[source] std::io::Error),
}

/// Reads the input, parses it, and writes one JSON object per message to `out`.
pub fn run(args: &InspectArgs, out: &mut impl Write) -> Result<(), InspectError> {
    let ctx = context(args)?;
    let (name, bytes) = read_input(&args.file)?;
    let parsed = parse_bytes(args.kind, &ctx, &bytes)
        .map_err(|error| InspectError::Parse { file: name, error })?;
    for item in &parsed.items {
        let mut value = serde_json::to_value(item)?;
        sort_attribute_maps(&mut value);
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b"\n").map_err(InspectError::Write)?;
    }
    out.flush().map_err(InspectError::Write)
}

/// Decodes input bytes and parses them with the parser for `kind`.
pub fn parse_bytes(
    kind: InputKind,
    ctx: &SourceContext,
    bytes: &[u8],
) -> Result<Parsed, ParseError> {
    let text = sources::decode_text(bytes)?;
    match kind {
        InputKind::Dsregcmd => dsregcmd::parse(&text, ctx),
        InputKind::EventXml => event_xml::parse(&text, ctx),
        InputKind::Registry => registry::parse(&text, ctx),
        InputKind::Tpm => tpm::parse(&text, ctx),
        InputKind::MdmDiagnostics => mdm_diag::parse(&text, ctx),
        InputKind::MacosProfiles => macos_profiles::parse(&text, ctx),
        InputKind::Ndjson => ndjson::parse(&text, ctx),
    }
}

fn context(args: &InspectArgs) -> Result<SourceContext, InspectError> {
    if args.device_id.is_empty() || args.device_id.len() > 128 {
        return Err(InspectError::DeviceId(args.device_id.len()));
    }
    let now = match &args.now {
        Some(value) => OffsetDateTime::parse(value, &Rfc3339).map_err(|err| InspectError::Now {
            value: value.clone(),
            reason: err.to_string(),
        })?,
        None => OffsetDateTime::now_utc(),
    };
    Ok(SourceContext {
        agent_id: args.agent_id.clone(),
        device_id: args.device_id.clone(),
        platform: args.kind.default_platform(),
        now,
    })
}

fn read_input(file: &PathBuf) -> Result<(String, Vec<u8>), InspectError> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        let name = "<stdin>".to_owned();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|source| InspectError::Read {
                file: name.clone(),
                source,
            })?;
        return Ok((name, bytes));
    }
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|source| InspectError::Read {
        file: name.clone(),
        source,
    })?;
    Ok((name, bytes))
}

/// Sorts the keys of every `attributes` map: protobuf maps are hash maps, and output that
/// changes order from run to run is useless for diffing.
fn sort_attribute_maps(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "attributes"
                    && let serde_json::Value::Object(map) = child
                {
                    let mut entries: Vec<(String, serde_json::Value)> =
                        std::mem::take(map).into_iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    map.extend(entries);
                } else {
                    sort_attribute_maps(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_attribute_maps),
        _ => {}
    }
}
