//! Platform shims: run the OS tool, hand its stdout to the pure parser. Compiled only on the
//! platform that has the tool; kept thin so that everything worth testing is in the parsers.

use std::process::Command;

use super::{ParseError, Parsed, SourceContext, decode_text};

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
#[cfg(windows)]
pub fn collect_dsregcmd(ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let text = run("dsregcmd", "dsregcmd", &["/status"])?;
    parsed("dsregcmd", super::dsregcmd::parse(&text, ctx))
}

/// New records of one event log channel: only records after the cursor are queried (XPath
/// on EventRecordID), oldest first.
#[cfg(windows)]
pub fn collect_events(
    channel: &str,
    ctx: &SourceContext,
    cursor: &super::event_xml::Cursor,
) -> Result<(Parsed, super::event_xml::Cursor), ShimError> {
    let query = format!("/q:*[System[EventRecordID>{}]]", cursor.last(channel));
    let text = run("wevtutil", "wevtutil", &["qe", channel, "/f:xml", &query])?;
    super::event_xml::parse_events(&text, ctx, cursor).map_err(|source| ShimError::Parse {
        tool: "wevtutil",
        source,
    })
}

/// `reg query HKLM\SOFTWARE\Microsoft\Enrollments /s`.
#[cfg(windows)]
pub fn collect_registry(ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let text = run(
        "reg",
        "reg",
        &["query", r"HKLM\SOFTWARE\Microsoft\Enrollments", "/s"],
    )?;
    parsed("reg", super::registry::parse(&text, ctx))
}

/// `tpmtool getdeviceinformation`.
#[cfg(windows)]
pub fn collect_tpm(ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let text = run("tpmtool", "tpmtool", &["getdeviceinformation"])?;
    parsed("tpmtool", super::tpm::parse(&text, ctx))
}

/// `profiles status -type enrollment`, plus `profiles show -type enrollment` when it works
/// (it needs root and is rate limited by macOS; its failure only loses the DEP details).
#[cfg(target_os = "macos")]
pub fn collect_macos_profiles(ctx: &SourceContext) -> Result<Parsed, ShimError> {
    let mut text = run(
        "profiles",
        "/usr/bin/profiles",
        &["status", "-type", "enrollment"],
    )?;
    if let Ok(show) = run(
        "profiles",
        "/usr/bin/profiles",
        &["show", "-type", "enrollment"],
    ) {
        text.push('\n');
        text.push_str(&show);
    }
    parsed("profiles", super::macos_profiles::parse(&text, ctx))
}
