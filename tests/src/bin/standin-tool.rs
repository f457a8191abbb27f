//! Stand-in for the OS tools the agent runs (`dsregcmd`, `wevtutil`, `reg`, `tpmtool`,
//! `MdmDiagnosticsTool.exe`, `profiles`), so end-to-end tests run the agent's Windows and macOS collection on Linux.
//! Installed under those names (symlinks) in a directory put first on PATH; which tool it is
//! comes from the name it was run as. It prints real outputs kept in `$FLEETPULSE_STANDIN_DIR`
//! and honours what the agent asks, refusing anything else like the real tool would:
//!
//! - `dsregcmd /status` prints `dsregcmd.txt`; `reg query HKLM\SOFTWARE\Microsoft\Enrollments /s`
//!   prints `reg.txt` (`reg query HKLM\...\Provisioning\Diagnostics\Autopilot` prints
//!   `reg-autopilot.txt`, or fails like reg.exe on a missing key when there is none); `tpmtool getdeviceinformation` prints `tpmtool.txt`;
//!   `profiles status|show -type enrollment` prints `profiles-status.txt` / `profiles-show.txt`.
//! - `MdmDiagnosticsTool.exe -out <folder>` writes `mdmdiag.xml` as `<folder>/MDMDiagReport.xml`.
//! - `wevtutil qe <channel> /f:xml /q:*[System[EventRecordID>N]]` prints the records of
//!   `events/<channel with / and space as _>.xml` whose EventRecordID is above N, oldest first;
//!   `wevtutil qe <channel> /c:1 /rd:true /f:xml` prints the newest record. A channel without a
//!   file does not exist (exit 15007, wevtutil's message).
//!
//! Every invocation is appended to `calls.log` (one line, arguments separated by tabs), so tests
//! can check what the agent asked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let name = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let args: Vec<String> = args.collect();
    let Some(dir) = std::env::var_os("FLEETPULSE_STANDIN_DIR").map(PathBuf::from) else {
        eprintln!("{name}: FLEETPULSE_STANDIN_DIR is not set");
        return ExitCode::from(2);
    };
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("calls.log"))
    {
        let _ = writeln!(log, "{name}\t{}", args.join("\t"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match (name.as_str(), args.as_slice()) {
        ("dsregcmd", ["/status"]) => print_file(&dir.join("dsregcmd.txt")),
        ("reg", ["query", key, "/s"])
            if key.eq_ignore_ascii_case(r"HKLM\SOFTWARE\Microsoft\Enrollments") =>
        {
            print_file(&dir.join("reg.txt"))
        }
        ("reg", ["query", key])
            if key.eq_ignore_ascii_case(
                r"HKLM\SOFTWARE\Microsoft\Provisioning\Diagnostics\Autopilot",
            ) =>
        {
            print_file(&dir.join("reg-autopilot.txt")).map_err(|_| {
                (
                    1,
                    "ERROR: The system was unable to find the specified registry key or value."
                        .to_owned(),
                )
            })
        }
        ("tpmtool", ["getdeviceinformation"]) => print_file(&dir.join("tpmtool.txt")),
        ("MdmDiagnosticsTool.exe", ["-out", folder]) => std::fs::create_dir_all(folder)
            .and_then(|()| {
                std::fs::copy(
                    dir.join("mdmdiag.xml"),
                    Path::new(folder).join("MDMDiagReport.xml"),
                )
            })
            .map(|_| String::new())
            .map_err(|e| (1, format!("{folder}: {e}"))),
        ("profiles", ["status", "-type", "enrollment"]) => {
            print_file(&dir.join("profiles-status.txt"))
        }
        ("profiles", ["show", "-type", "enrollment"]) => print_file(&dir.join("profiles-show.txt")),
        ("wevtutil", ["qe", channel, "/f:xml", query]) => {
            match query
                .strip_prefix("/q:*[System[EventRecordID>")
                .and_then(|q| q.strip_suffix("]]"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(after) => events(&dir, channel, |records| {
                    records.into_iter().filter(|(id, _)| *id > after).collect()
                }),
                None => Err((87, "The parameter is incorrect.".to_owned())),
            }
        }
        ("wevtutil", ["qe", channel, "/c:1", "/rd:true", "/f:xml"]) => {
            events(&dir, channel, |records| {
                records
                    .into_iter()
                    .max_by_key(|(id, _)| *id)
                    .into_iter()
                    .collect()
            })
        }
        _ => Err((87, format!("{name}: unexpected arguments {args:?}"))),
    };
    match result {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(u8::try_from(code % 256).unwrap_or(1).max(1))
        }
    }
}

fn print_file(path: &Path) -> Result<String, (i32, String)> {
    std::fs::read_to_string(path).map_err(|e| (1, format!("{}: {e}", path.display())))
}

/// The file holding a channel's records.
pub fn channel_file(dir: &Path, channel: &str) -> PathBuf {
    dir.join("events")
        .join(format!("{}.xml", channel.replace(['/', ' '], "_")))
}

/// Prints the records `select` keeps, in record-id order.
fn events(
    dir: &Path,
    channel: &str,
    select: impl FnOnce(Vec<(u64, String)>) -> Vec<(u64, String)>,
) -> Result<String, (i32, String)> {
    let path = channel_file(dir, channel);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Err((
            15007,
            format!("Failed to query log {channel}. The specified channel could not be found."),
        ));
    };
    let mut records = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<Event ") {
        let Some(end) = rest[start..].find("</Event>") else {
            break;
        };
        let record = &rest[start..start + end + "</Event>".len()];
        let id = record
            .split("<EventRecordID>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        records.push((id, record.to_owned()));
        rest = &rest[start + end + "</Event>".len()..];
    }
    records.sort_by_key(|(id, _)| *id);
    Ok(select(records)
        .into_iter()
        .map(|(_, r)| r + "\r\n")
        .collect())
}
