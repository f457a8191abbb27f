//! The dead-letter file: items the collector refused for good (`INVALID_ARGUMENT`,
//! `FAILED_PRECONDITION`, or listed in `PushResponse.rejected`). Retrying them unchanged can
//! never succeed, and dropping them silently would hide a bug, so they are kept aside in
//! `deadletter.ndjson` (one JSON object per item: time, batch, reason, the item in the proto3
//! JSON mapping) for an administrator to look at. Bounded: past [`MAX_DEADLETTER_BYTES`] the
//! file is rotated to `deadletter.ndjson.1` (replacing the previous rotation).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fleetpulse_proto::v1::TelemetryItem;
use serde::Serialize;

/// Size at which the dead-letter file is rotated.
pub const MAX_DEADLETTER_BYTES: u64 = 16 * 1024 * 1024;

/// File name inside the spool directory.
pub const DEADLETTER_FILE: &str = "deadletter.ndjson";

/// One refused item.
#[derive(Debug, Clone)]
pub struct Refused<'a> {
    /// Index of the item in its batch.
    pub index: usize,
    pub item: &'a TelemetryItem,
    /// Why the collector refused it (field path and reason when known).
    pub reason: String,
}

#[derive(Serialize)]
struct Line<'a> {
    at: String,
    batch_seq: u64,
    index: usize,
    reason: &'a str,
    item: &'a TelemetryItem,
}

/// Appends refused items to the dead-letter file of a spool directory.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    path: PathBuf,
}

impl DeadLetter {
    pub fn new(spool_dir: &Path) -> Self {
        Self {
            path: spool_dir.join(DEADLETTER_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the refused items of batch `batch_seq` and fsyncs them.
    pub fn write(&self, batch_seq: u64, refused: &[Refused<'_>]) -> io::Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut buf = Vec::new();
        for entry in refused {
            let line = Line {
                at: at.clone(),
                batch_seq,
                index: entry.index,
                reason: &entry.reason,
                item: entry.item,
            };
            serde_json::to_writer(&mut buf, &line).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        if fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) + buf.len() as u64
            > MAX_DEADLETTER_BYTES
        {
            let mut rotated = self.path.as_os_str().to_owned();
            rotated.push(".1");
            match fs::rename(&self.path, PathBuf::from(rotated)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&buf)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1::{Heartbeat, telemetry_item::Kind};

    #[test]
    fn writes_one_json_line_per_refused_item() {
        let dir = tempfile::tempdir().unwrap();
        let dead = DeadLetter::new(dir.path());
        let item = TelemetryItem {
            kind: Some(Kind::Heartbeat(Heartbeat {
                agent_id: "a".into(),
                ..Heartbeat::default()
            })),
        };
        dead.write(
            7,
            &[
                Refused {
                    index: 0,
                    item: &item,
                    reason: "items[0].heartbeat.sent_at: required".into(),
                },
                Refused {
                    index: 2,
                    item: &item,
                    reason: "other".into(),
                },
            ],
        )
        .unwrap();
        let text = fs::read_to_string(dead.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["batch_seq"], 7);
        assert_eq!(lines[0]["reason"], "items[0].heartbeat.sent_at: required");
        assert_eq!(lines[1]["index"], 2);
        assert_eq!(lines[1]["item"]["heartbeat"]["agentId"], "a");
    }
}
