//! The spool's small metadata file (`spool.meta.json`), replaced atomically on every change.
//!
//! It is the single point of truth for what has left the segments: the read cursor, the
//! batches formed but not yet acknowledged, the batch sequence counter and the loss counters.
//! Every transition (batch formed, batch acked, segment dropped) is one atomic replacement of
//! this file, so a crash leaves either the state before or the state after, never a mix.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SpoolError;
use crate::durable;

/// File name of the metadata inside the spool directory.
pub const META_FILE: &str = "spool.meta.json";

/// Current format version of [`SpoolMeta`]. A newer file is refused rather than misread.
pub const META_FORMAT: u32 = 1;

/// A position in the spool: a segment id and a byte offset of a frame boundary in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A batch that was cut from the segments and persisted in its own file, waiting for the
/// collector's acknowledgement. Its contents never change: a resend reuses seq and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingBatch {
    /// The batch sequence number (`PushRequest.batch_seq`).
    pub seq: u64,
    /// Number of telemetry items in it.
    pub items: u64,
    /// Encoded size of the `PushRequest` in bytes.
    pub bytes: u64,
}

/// Persistent spool bookkeeping. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolMeta {
    pub format: u32,
    /// Sequence number the next new batch takes. Never decreases.
    pub next_batch_seq: u64,
    /// Everything before this position has been cut into a batch (or dropped).
    pub cursor: Position,
    /// Items dropped because the spool was full, since the spool was created.
    pub dropped_total: u64,
    /// Damaged records (or damaged stretches) skipped, since the spool was created.
    pub corrupt_total: u64,
    /// Highest batch sequence number the collector acknowledged.
    pub last_acked_seq: u64,
    /// Batches formed and not yet acknowledged, oldest first.
    pub pending: Vec<PendingBatch>,
    /// Source cursors (e.g. how far an import file was read) carried by records that have left
    /// the segments. Newer values may still sit in the segments and override these on open.
    pub source_cursors: BTreeMap<String, String>,
}

impl Default for SpoolMeta {
    fn default() -> Self {
        Self {
            format: META_FORMAT,
            next_batch_seq: 1,
            cursor: Position::default(),
            dropped_total: 0,
            corrupt_total: 0,
            last_acked_seq: 0,
            pending: Vec::new(),
            source_cursors: BTreeMap::new(),
        }
    }
}

impl SpoolMeta {
    /// Reads the metadata of a spool directory; a missing file means a new spool.
    pub fn load(dir: &Path) -> Result<Self, SpoolError> {
        let path = dir.join(META_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(SpoolError::Io { path, source }),
        };
        let meta: Self = serde_json::from_slice(&bytes).map_err(|err| SpoolError::Meta {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        if meta.format != META_FORMAT {
            return Err(SpoolError::Meta {
                path,
                reason: format!(
                    "format {} is not supported (expected {META_FORMAT})",
                    meta.format
                ),
            });
        }
        if meta.next_batch_seq == 0 {
            return Err(SpoolError::Meta {
                path,
                reason: "next_batch_seq must be at least 1".into(),
            });
        }
        Ok(meta)
    }

    /// Replaces the metadata file atomically.
    pub fn store(&self, dir: &Path) -> Result<(), SpoolError> {
        let path = dir.join(META_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|err| SpoolError::Meta {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        durable::write_atomic(&path, &bytes, false)
            .map_err(|source| SpoolError::Io { path, source })
    }
}
