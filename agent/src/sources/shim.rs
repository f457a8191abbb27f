//! Platform shims: run the OS tool, hand its stdout to the pure parser. They only spawn
//! programs and parse output, so they compile everywhere; which ones run is chosen at run time
//! (`crate::collect`), and tests run them against stand-in tools. Kept thin so that everything
//! worth testing is in the parsers.

use std::process::Command;

use super::{ParseError, Parsed, SourceContext, decode_text};
use crate::collect::Tools;

/// Why collecting from a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("could not run {tool}: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} exited with {status}: {stderr}")]
    Failed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{tool} output: {source}")]
    Parse {
        tool: &'static str,
        #[source]
        source: ParseError,
    },
}

/// Runs `program args...` and returns its decoded stdout.
fn run(tool: &'static str, program: &str, args: &[&str]) -> Result<String, ShimError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ShimError::Spawn { tool, source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(ShimError::Failed {
            tool,
            status: output.status,
            stderr,
        });
    }
    decode_text(&output.stdout).map_err(|source| ShimError::Parse { tool, source })
}

fn parsed(tool: &'static str, result: Result<Parsed, ParseError>) -> Result<Parsed, ShimError> {
    result.map_err(|source| ShimError::Parse { tool, source })
}

/// `dsregcmd /status`.
pub fn collect_dsregcmd(tools: &Tools, ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let text = run("dsregcmd", &tools.dsregcmd, &["/status"])?;
    parsed("dsregcmd", super::dsregcmd::parse(&text, ctx))
}

/// New records of one event log channel: only records after the cursor are queried (XPath
/// on EventRecordID), oldest first. When the channel's newest record is older than the cursor
/// (the log was cleared, so record ids restarted), the channel is read from the start again.
pub fn collect_events(
    tools: &Tools,
    channel: &str,
    ctx: &SourceContext,
    cursor: &super::event_xml::Cursor,
) -> Result<(Parsed, super::event_xml::Cursor), ShimError> {
    let mut cursor = cursor.clone();
    let last = cursor.last(channel);
    if last > 0 {
        let newest = newest_record(tools, channel, ctx)?;
        if newest < last {
            tracing::warn!(
                channel,
                cursor = last,
                newest,
                "the event log was cleared (its newest record is older than our cursor): reading it from the start"
            );
            cursor.channels.insert(channel.to_owned(), 0);
        }
    }
    let query = format!("/q:*[System[EventRecordID>{}]]", cursor.last(channel));
    let text = run(
        "wevtutil",
        &tools.wevtutil,
        &["qe", channel, "/f:xml", &query],
    )?;
    super::event_xml::parse_events(&text, ctx, &cursor).map_err(|source| ShimError::Parse {
        tool: "wevtutil",
        source,
    })
}

/// Record id of the channel's newest record (0 when the log is empty).
fn newest_record(tools: &Tools, channel: &str, ctx: &SourceContext) -> Result<u64, ShimError> {
    let text = run(
        "wevtutil",
        &tools.wevtutil,
        &["qe", channel, "/c:1", "/rd:true", "/f:xml"],
    )?;
    let (_, seen) =
        super::event_xml::parse_events(&text, ctx, &Default::default()).map_err(|source| {
            ShimError::Parse {
                tool: "wevtutil",
                source,
            }
        })?;
    Ok(seen.channels.values().copied().max().unwrap_or(0))
}

/// `reg query HKLM\SOFTWARE\Microsoft\Enrollments /s`, then the Autopilot diagnostics key
/// (`reg query HKLM\SOFTWARE\Microsoft\Provisioning\Diagnostics\Autopilot`) appended when
/// it exists (reg.exe fails on a device that never ran Autopilot: that only loses the
/// `autopilot.*` attributes).
pub fn collect_registry(tools: &Tools, ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let mut text = run(
        "reg",
        &tools.reg,
        &["query", r"HKLM\SOFTWARE\Microsoft\Enrollments", "/s"],
    )?;
    if let Ok(autopilot) = run(
        "reg",
        &tools.reg,
        &[
            "query",
            r"HKLM\SOFTWARE\Microsoft\Provisioning\Diagnostics\Autopilot",
        ],
    ) {
        text.push('\n');
        text.push_str(&autopilot);
    }
    parsed("reg", super::registry::parse(&text, ctx))
}

/// `tpmtool getdeviceinformation`.
pub fn collect_tpm(tools: &Tools, ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let text = run("tpmtool", &tools.tpmtool, &["getdeviceinformation"])?;
    parsed("tpmtool", super::tpm::parse(&text, ctx))
}

/// `MdmDiagnosticsTool.exe -out <folder>`, then its `MDMDiagReport.xml`. The folder is
/// `fleetpulse-mdmdiag` under the system temporary directory, emptied of the previous report
/// first so a tool that fails silently never hands us an old one.
pub fn collect_mdm_diagnostics(tools: &Tools, ctx: &SourceContext) -> Result<Parsed, ShimError> {
    const TOOL: &str = "MdmDiagnosticsTool";
    let folder = std::env::temp_dir().join("fleetpulse-mdmdiag");
    let report = folder.join("MDMDiagReport.xml");
    let io = |source: std::io::Error| ShimError::Spawn { tool: TOOL, source };
    std::fs::create_dir_all(&folder).map_err(io)?;
    match std::fs::remove_file(&report) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(io(err)),
        _ => {}
    }
    let folder_arg = folder.to_string_lossy().into_owned();
    run(TOOL, &tools.mdmdiagnosticstool, &["-out", &folder_arg])?;
    let bytes = std::fs::read(&report).map_err(io)?;
    let text = decode_text(&bytes).map_err(|source| ShimError::Parse { tool: TOOL, source })?;
    parsed(TOOL, super::mdm_diag::parse(&text, ctx))
}

/// `profiles status -type enrollment`, plus `profiles show -type enrollment` when it works
/// (it needs root and is rate limited by macOS; its failure only loses the DEP details).
pub fn collect_macos_profiles(tools: &Tools, ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let mut text = run(
        "profiles",
        &tools.profiles,
        &["status", "-type", "enrollment"],
    )?;
    if let Ok(show) = run(
        "profiles",
        &tools.profiles,
        &["show", "-type", "enrollment"],
    ) {
        text.push('\n');
        text.push_str(&show);
    }
    parsed("profiles", super::macos_profiles::parse(&text, ctx))
}
