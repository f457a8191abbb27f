//! The durable spool: everything the agent collects is written here (and fsynced) before the
//! collector sees it, and leaves only after the collector acknowledged it.
//!
//! # Layout of a spool directory
//! - `00000000000000000001.seg`, `...02.seg`: append-only segment files of frames
//!   (`[len u32][crc32 u32][payload]`, see [`frame`]). The payload is a prost-encoded
//!   [`SpoolEntry`]: one telemetry item, or a source cursor committed with the items it covers.
//!   Only the newest segment is appended to; a segment is closed once it reaches
//!   [`SpoolConfig::segment_bytes`].
//! - `batch-<seq>.pending`: a batch cut from the segments, as the exact encoded `PushRequest`
//!   (one frame). A resend after a crash sends these very bytes with the same `batch_seq`,
//!   which is what the collector's `(agent, batch_seq)` idempotency needs.
//! - `spool.meta.json` ([`meta`]): read cursor, pending batches, sequence counter, counters.
//! - `deadletter.ndjson` ([`deadletter`]): items the collector refused for good.
//! - `spool.lock`: an advisory lock so two processes never share a spool.
//!
//! # Guarantees
//! - [`Spool::append`] returns only after the frames are fsynced: what it accepted survives
//!   `kill -9`. Callers pass everything collected in one poll at once, so one fsync covers many
//!   records (group commit); 100 events/s do not cost 100 fsyncs.
//! - A torn write at the end of the newest segment (a crash mid-append) is truncated on open;
//!   it was never acknowledged to the caller, so nothing acknowledged is lost.
//! - A damaged record anywhere else is skipped and counted in `corrupt_total` exactly once
//!   (when the cursor passes it), never a panic or a hang.
//! - Bounded: segment bytes never exceed [`SpoolConfig::max_bytes`] (default 64 MiB). When an
//!   append would exceed it, the *oldest* segment is deleted (drop-oldest: recent data is worth
//!   more during a long outage) and its unsent items are counted in `dropped_total`. Pending
//!   batches (at most a few, each limited by the collector's batch size) live outside the cap.
//! - A failed append (e.g. `ENOSPC`) truncates the segment back to its previous length and
//!   returns the error; the spool stays valid and usable.
//! - Order: items leave in the order they were appended.

pub mod deadletter;
pub mod frame;
pub mod meta;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetpulse_proto::v1::{PushRequest, TelemetryItem};
use prost::Message;

use crate::durable::{self, DirLock};
use frame::{MAX_PAYLOAD_BYTES, Scanned, SegmentScanner};
pub use meta::{PendingBatch, Position, SpoolMeta};

/// Default cap on segment bytes: 64 MiB (several days of a healthy device's output, hours of
/// a busy simulator's; small enough for any disk).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default segment size: 4 MiB, so drop-oldest discards at most 1/16 of the default cap.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

const SEGMENT_SUFFIX: &str = ".seg";
const BATCH_PREFIX: &str = "batch-";
const BATCH_SUFFIX: &str = ".pending";

/// One record of a segment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpoolEntry {
    #[prost(oneof = "spool_entry::Kind", tags = "1, 2")]
    pub kind: Option<spool_entry::Kind>,
}

/// Kinds of [`SpoolEntry`].
pub mod spool_entry {
    /// What a spool record holds. (Item is large, but a record is decoded one at a time and
    /// moved into its batch at once; boxing would cost an allocation per record.)
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// A telemetry item to ship.
        #[prost(message, tag = "1")]
        Item(fleetpulse_proto::v1::TelemetryItem),
        /// A source's read position, committed atomically with the items read up to it.
        #[prost(message, tag = "2")]
        Cursor(super::SourceCursor),
    }
}

/// A source's read position (e.g. `ndjson:events.ndjson` -> byte offset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceCursor {
    #[prost(string, tag = "1")]
    pub source: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Size limits of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Cap on the bytes of all segment files (drop-oldest beyond it).
    pub max_bytes: u64,
    /// Size at which the newest segment is closed and a new one started.
    pub segment_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

impl SpoolConfig {
    /// A config for `max_bytes`, with segments of a sixteenth of it (within 64 KiB..=4 MiB).
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        let segment_bytes = (max_bytes / 16).clamp(64 * 1024, DEFAULT_SEGMENT_BYTES);
        Self {
            max_bytes,
            segment_bytes,
        }
    }

    fn validate(&self) -> Result<(), SpoolError> {
        if self.segment_bytes < 4096 {
            return Err(SpoolError::Config(
                "segment_bytes must be at least 4096".into(),
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(SpoolError::Config(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({})",
                self.max_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// Errors of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("spool metadata {}: {reason}", path.display())]
    Meta { path: PathBuf, reason: String },
    #[error("invalid spool configuration: {0}")]
    Config(String),
    #[error("record of {size} bytes exceeds the {max}-byte record limit")]
    RecordTooLarge { size: usize, max: u32 },
    #[error("append of {size} bytes cannot fit in a spool capped at {max} bytes")]
    AppendLargerThanCap { size: u64, max: u64 },
    #[error("batch {seq} is not pending")]
    UnknownBatch { seq: u64 },
    #[error("batch {seq} has {items} item(s) and cannot be split")]
    CannotSplit { seq: u64, items: u64 },
    #[error("batch file {} is damaged: {reason}", path.display())]
    DamagedBatch { path: PathBuf, reason: String },
}

impl SpoolError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// An open handle on the newest segment, for appending. A trait so unit tests can simulate a
/// full disk (`ENOSPC`) without a tiny file system.
pub trait SegmentFile: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Opens segment files for appending.
pub trait SegmentIo: Send + Sync {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
}

/// The real file system.
#[derive(Debug, Default)]
pub struct StdSegmentIo;

struct StdSegmentFile(File);

impl SegmentFile for StdSegmentFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}

impl SegmentIo for StdSegmentIo {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(StdSegmentFile(file)))
    }
}

/// Figures about a spool, for heartbeats and `fleetpulse-agent status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SpoolStats {
    /// Items waiting: in segments after the cursor plus in pending batches.
    pub depth: u64,
    /// Bytes on disk: segments plus pending batch files.
    pub bytes: u64,
    pub segments: u64,
    pub pending_batches: u64,
    pub dropped_total: u64,
    pub corrupt_total: u64,
    pub last_acked_seq: u64,
    pub next_batch_seq: u64,
}

/// What an append did besides storing the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Older unsent items dropped to make room (drop-oldest).
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    len: u64,
}

/// The result of scanning one segment from some offset.
#[derive(Debug, Default)]
struct SegmentScan {
    items: u64,
    corrupt: u64,
    cursors: Vec<(String, String)>,
    /// Start of invalid bytes that run to the end of the segment, if any.
    invalid_tail: Option<u64>,
}

/// The durable spool. See the module documentation.
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    meta: SpoolMeta,
    segments: BTreeMap<u64, Segment>,
    active: Option<Box<dyn SegmentFile>>,
    /// Item records in the segments at or after the cursor.
    segment_items: u64,
    /// Latest known value of every source cursor (meta overlaid with the segments).
    source_cursors: BTreeMap<String, String>,
    io: Arc<dyn SegmentIo>,
    /// Bytes of a torn tail truncated when the spool was opened (0 if none).
    truncated_on_open: u64,
    /// True when this open created the spool (no metadata existed).
    created: bool,
    _lock: DirLock,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering from a crash: torn tail truncated,
    /// consumed segments and stray files removed.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<Self, SpoolError> {
        Self::open_with_io(dir, config, Arc::new(StdSegmentIo))
    }

    /// [`Spool::open`] with a custom segment writer (tests simulate a full disk with it).
    pub fn open_with_io(
        dir: &Path,
        config: SpoolConfig,
        io: Arc<dyn SegmentIo>,
    ) -> Result<Self, SpoolError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(|e| SpoolError::io(dir, e))?;
        let lock_path = dir.join("spool.lock");
        let lock = DirLock::acquire(&lock_path).map_err(|e| SpoolError::io(&lock_path, e))?;
        let created = !dir.join(meta::META_FILE).exists();
        let mut meta = SpoolMeta::load(dir)?;
        if created {
            meta.store(dir)?;
        }
        let listing = list_dir(dir)?;

        // Remove leftovers of interrupted atomic writes and batches no metadata refers to
        // (a crash between writing a batch file and the metadata that adopts it).
        for tmp in &listing.temp_files {
            remove_file(tmp)?;
        }
        for (seq, path) in &listing.batches {
            if !meta.pending.iter().any(|p| p.seq == *seq) {
                remove_file(path)?;
            }
        }
        let mut lost_batches = Vec::new();
        for pending in &meta.pending {
            if !listing.batches.iter().any(|(seq, _)| *seq == pending.seq) {
                lost_batches.push(pending.clone());
            }
        }
        if !lost_batches.is_empty() {
            // Only possible if someone deleted files by hand: count the items as corrupt
            // rather than pretending they still exist.
            for lost in &lost_batches {
                tracing::error!(
                    seq = lost.seq,
                    items = lost.items,
                    "pending batch file is missing"
                );
                meta.corrupt_total += lost.items;
            }
            meta.pending.retain(|p| !lost_batches.contains(p));
            meta.store(dir)?;
        }

        let mut segments = BTreeMap::new();
        let mut segment_items = 0;
        let mut source_cursors = meta.source_cursors.clone();
        let mut truncated_on_open = 0;
        let last_id = listing.segments.last().map(|(id, _)| *id);
        for (id, path) in &listing.segments {
            if *id < meta.cursor.segment {
                // Fully consumed before a crash interrupted its deletion.
                remove_file(path)?;
                continue;
            }
            let len = fs::metadata(path)
                .map_err(|e| SpoolError::io(path, e))?
                .len();
            let from = if *id == meta.cursor.segment {
                meta.cursor.offset.min(len)
            } else {
                0
            };
            // Cursor values are read from the segment's start: ones before the cursor were
            // absorbed into the metadata when consumed, and re-applying them in order is a
            // no-op; ones after it are newer than anything in the metadata.
            let whole = scan_segment(path, len, 0)?;
            for (source, value) in whole.cursors {
                source_cursors.insert(source, value);
            }
            let scan = if from == 0 {
                None
            } else {
                Some(scan_segment(path, len, from)?)
            };
            let mut items = scan.as_ref().map_or(whole.items, |s| s.items);
            let mut len = len;
            if Some(*id) == last_id
                && let Some(tail) = whole.invalid_tail
            {
                // A crash mid-append: the torn frame was never acknowledged. Cut it off.
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| SpoolError::io(path, e))?;
                file.set_len(tail)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| SpoolError::io(path, e))?;
                truncated_on_open = len - tail;
                tracing::warn!(
                    segment = id,
                    bytes = len - tail,
                    "truncated a torn write at the end of the spool"
                );
                len = tail;
                if meta.cursor.segment == *id && meta.cursor.offset > tail {
                    meta.cursor.offset = tail;
                }
                let from = if meta.cursor.segment == *id {
                    meta.cursor.offset
                } else {
                    0
                };
                items = scan_segment(path, len, from)?.items;
            }
            segment_items += items;
            segments.insert(*id, Segment { len });
        }
        if !segments.contains_key(&meta.cursor.segment) && meta.cursor.offset != 0 {
            // The cursor's segment is gone: everything before the next segment was consumed.
            meta.cursor.offset = 0;
        }

        let mut spool = Self {
            dir: dir.to_owned(),
            config,
            meta,
            segments,
            active: None,
            segment_items,
            source_cursors,
            io,
            truncated_on_open,
            created,
            _lock: lock,
        };
        if let Some(id) = last_id.filter(|id| spool.segments.contains_key(id)) {
            let path = spool.segment_path(id);
            spool.active = Some(
                spool
                    .io
                    .open_append(&path)
                    .map_err(|e| SpoolError::io(&path, e))?,
            );
        }
        Ok(spool)
    }

    /// Reads a spool's figures without opening it for writing (works while an agent runs).
    pub fn peek_stats(dir: &Path) -> Result<SpoolStats, SpoolError> {
        let meta = SpoolMeta::load(dir)?;
        let listing = list_dir(dir)?;
        let mut stats = SpoolStats {
            dropped_total: meta.dropped_total,
            corrupt_total: meta.corrupt_total,
            last_acked_seq: meta.last_acked_seq,
            next_batch_seq: meta.next_batch_seq,
            pending_batches: meta.pending.len() as u64,
            ..SpoolStats::default()
        };
        for pending in &meta.pending {
            stats.depth += pending.items;
            stats.bytes += pending.bytes;
        }
        for (id, path) in &listing.segments {
            if *id < meta.cursor.segment {
                continue;
            }
            let from = if *id == meta.cursor.segment {
                meta.cursor.offset
            } else {
                0
            };
            if let Some((items, len)) = peek_segment(path, from)? {
                stats.depth += items;
                stats.bytes += len;
                stats.segments += 1;
            }
        }
        Ok(stats)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when this open created the spool (its sequence counter starts from scratch, so
    /// the caller should raise it past anything the agent used before).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Bytes of a torn tail cut off when this spool was opened.
    pub fn truncated_on_open(&self) -> u64 {
        self.truncated_on_open
    }

    /// Current figures.
    pub fn stats(&self) -> SpoolStats {
        let pending_items: u64 = self.meta.pending.iter().map(|p| p.items).sum();
        let pending_bytes: u64 = self.meta.pending.iter().map(|p| p.bytes).sum();
        SpoolStats {
            depth: self.segment_items + pending_items,
            bytes: self.segment_bytes() + pending_bytes,
            segments: self.segments.len() as u64,
            pending_batches: self.meta.pending.len() as u64,
            dropped_total: self.meta.dropped_total,
            corrupt_total: self.meta.corrupt_total,
            last_acked_seq: self.meta.last_acked_seq,
            next_batch_seq: self.meta.next_batch_seq,
        }
    }

    /// Items waiting in the segments (not yet cut into a batch).
    pub fn unbatched_items(&self) -> u64 {
        self.segment_items
    }

    /// The latest committed value of a source cursor.
    pub fn source_cursor(&self, source: &str) -> Option<&str> {
        self.source_cursors.get(source).map(String::as_str)
    }

    /// Raises the next batch sequence number to at least `seq` (used when a spool is created
    /// for an agent that already sent batches, so numbers never go backwards).
    pub fn ensure_next_seq_at_least(&mut self, seq: u64) -> Result<(), SpoolError> {
        if self.meta.next_batch_seq >= seq {
            return Ok(());
        }
        let mut meta = self.meta.clone();
        meta.next_batch_seq = seq;
        meta.store(&self.dir)?;
        self.meta = meta;
        Ok(())
    }

    /// The sequence number the next new batch will take.
    pub fn next_batch_seq(&self) -> u64 {
        self.meta.next_batch_seq
    }

    /// Appends items durably (one fsync for all of them).
    pub fn append(&mut self, items: &[TelemetryItem]) -> Result<AppendOutcome, SpoolError> {
        self.append_with_cursor(items, None)
    }

    /// Appends items and, in the same fsynced write, a source cursor: after a crash either both
    /// are there or neither, so a source resumes exactly after what the spool holds.
    pub fn append_with_cursor(
        &mut self,
        items: &[TelemetryItem],
        cursor: Option<(&str, &str)>,
    ) -> Result<AppendOutcome, SpoolError> {
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for item in items {
            payload.clear();
            let entry = SpoolEntry {
                kind: Some(spool_entry::Kind::Item(item.clone())),
            };
            entry
                .encode(&mut payload)
                .map_err(|e| SpoolError::Config(e.to_string()))?;
            push_frame(&payload, &mut buf)?;
        }
        if let Some((source, value)) = cursor {
            payload.clear();
            let entry = SpoolEntry {
                kind: Some(spool_entry::Kind::Cursor(SourceCursor {
                    source: source.to_owned(),
                    value: value.to_owned(),
                })),
            };
            entry
                .encode(&mut payload)
                .map_err(|e| SpoolError::Config(e.to_string()))?;
            push_frame(&payload, &mut buf)?;
        }
        if buf.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let size = buf.len() as u64;
        if size > self.config.max_bytes - self.config.segment_bytes {
            return Err(SpoolError::AppendLargerThanCap {
                size,
                max: self.config.max_bytes,
            });
        }

        let active_id = self.prepare_active(size)?;
        let mut outcome = AppendOutcome::default();
        while self.segment_bytes() + size > self.config.max_bytes {
            let Some(oldest) = self
                .segments
                .keys()
                .next()
                .copied()
                .filter(|id| *id != active_id)
            else {
                return Err(SpoolError::AppendLargerThanCap {
                    size,
                    max: self.config.max_bytes,
                });
            };
            outcome.dropped += self.drop_segment(oldest)?;
        }

        let path = self.segment_path(active_id);
        let before = self.segments.get(&active_id).map_or(0, |s| s.len);
        let Some(active) = self.active.as_mut() else {
            return Err(SpoolError::io(&path, io::Error::other("no active segment")));
        };
        let written = active.append(&buf).and_then(|()| active.sync());
        if let Err(err) = written {
            // Leave no partial frame behind. If even that fails, drop the handle: the next
            // open (or append) re-validates the segment and cuts the torn tail.
            if active.truncate(before).is_err() {
                self.active = None;
                self.recover_active(active_id)?;
            }
            return Err(SpoolError::io(&path, err));
        }
        if let Some(segment) = self.segments.get_mut(&active_id) {
            segment.len = before + size;
        }
        self.segment_items += items.len() as u64;
        if let Some((source, value)) = cursor {
            self.source_cursors
                .insert(source.to_owned(), value.to_owned());
        }
        Ok(outcome)
    }

    /// Re-validates the newest segment after a failed write whose rollback also failed.
    fn recover_active(&mut self, id: u64) -> Result<(), SpoolError> {
        let path = self.segment_path(id);
        let len = fs::metadata(&path)
            .map_err(|e| SpoolError::io(&path, e))?
            .len();
        let scan = scan_segment(&path, len, 0)?;
        let good = scan.invalid_tail.unwrap_or(len);
        if good < len {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| SpoolError::io(&path, e))?;
            file.set_len(good)
                .and_then(|()| file.sync_all())
                .map_err(|e| SpoolError::io(&path, e))?;
        }
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.len = good;
        }
        self.active = Some(
            self.io
                .open_append(&path)
                .map_err(|e| SpoolError::io(&path, e))?,
        );
        Ok(())
    }

    /// Makes sure there is a newest segment with room for `size` more bytes; returns its id.
    fn prepare_active(&mut self, size: u64) -> Result<u64, SpoolError> {
        let last = self.segments.iter().next_back().map(|(id, s)| (*id, s.len));
        let id = match last {
            Some((id, len))
                if self.active.is_some()
                    && (len == 0 || len + size <= self.config.segment_bytes) =>
            {
                return Ok(id);
            }
            Some((id, _)) if self.active.is_none() => {
                self.recover_active(id)?;
                let len = self.segments.get(&id).map_or(0, |s| s.len);
                if len == 0 || len + size <= self.config.segment_bytes {
                    return Ok(id);
                }
                id + 1
            }
            Some((id, _)) => id + 1,
            None => self.meta.cursor.segment.max(1),
        };
        let id = id.max(self.meta.cursor.segment);
        let path = self.segment_path(id);
        let file = self
            .io
            .open_append(&path)
            .map_err(|e| SpoolError::io(&path, e))?;
        durable::sync_dir(&self.dir).map_err(|e| SpoolError::io(&self.dir, e))?;
        self.active = Some(file);
        self.segments.insert(id, Segment { len: 0 });
        Ok(id)
    }

    /// Deletes a whole segment to make room; returns how many unsent items it held.
    fn drop_segment(&mut self, id: u64) -> Result<u64, SpoolError> {
        let path = self.segment_path(id);
        let len = self.segments.get(&id).map_or(0, |s| s.len);
        let mut meta = self.meta.clone();
        let scan = if meta.cursor.segment <= id {
            let from = if meta.cursor.segment == id {
                meta.cursor.offset
            } else {
                0
            };
            scan_segment(&path, len, from)?
        } else {
            SegmentScan::default()
        };
        for (source, value) in &scan.cursors {
            meta.source_cursors.insert(source.clone(), value.clone());
        }
        meta.dropped_total += scan.items;
        meta.corrupt_total += scan.corrupt + u64::from(scan.invalid_tail.is_some());
        if meta.cursor.segment <= id {
            meta.cursor = Position {
                segment: id + 1,
                offset: 0,
            };
        }
        meta.store(&self.dir)?;
        self.meta = meta;
        remove_file(&path)?;
        self.segments.remove(&id);
        self.segment_items = self.segment_items.saturating_sub(scan.items);
        if scan.items > 0 {
            tracing::warn!(
                segment = id,
                dropped = scan.items,
                dropped_total = self.meta.dropped_total,
                "spool full: dropped the oldest unsent items"
            );
        }
        Ok(scan.items)
    }

    /// The oldest batch waiting for acknowledgement, or a new one cut from the segments with
    /// at most `max_items` items and at most `max_bytes` encoded bytes (a single item larger
    /// than `max_bytes` still makes a batch of one, so it can be dead-lettered if refused).
    /// `None` when there is nothing to send.
    pub fn next_batch(
        &mut self,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Option<PendingBatch>, SpoolError> {
        if let Some(pending) = self.meta.pending.first() {
            return Ok(Some(pending.clone()));
        }
        self.cut_batch(max_items.max(1), max_bytes)
    }

    fn cut_batch(
        &mut self,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Option<PendingBatch>, SpoolError> {
        let seq = self.meta.next_batch_seq;
        let mut request = PushRequest {
            batch_seq: seq,
            items: Vec::new(),
            all_or_nothing: false,
        };
        let mut size = request.encoded_len();
        let mut cursor = self.meta.cursor;
        let mut corrupt = 0u64;
        let mut absorbed = Vec::new();
        let ids: Vec<u64> = self
            .segments
            .range(cursor.segment..)
            .map(|(id, _)| *id)
            .collect();
        'segments: for (index, id) in ids.iter().enumerate() {
            let len = self.segments.get(id).map_or(0, |s| s.len);
            if *id != cursor.segment {
                cursor = Position {
                    segment: *id,
                    offset: 0,
                };
            }
            let path = self.segment_path(*id);
            let file = File::open(&path).map_err(|e| SpoolError::io(&path, e))?;
            let mut scanner = SegmentScanner::new(file, len, cursor.offset)
                .map_err(|e| SpoolError::io(&path, e))?;
            while let Some(found) = scanner.next_frame().map_err(|e| SpoolError::io(&path, e))? {
                match found {
                    Scanned::Frame { next, .. } => {
                        match SpoolEntry::decode(scanner.payload()) {
                            Ok(SpoolEntry {
                                kind: Some(spool_entry::Kind::Item(item)),
                            }) => {
                                let item_len = item.encoded_len();
                                let added = 1
                                    + prost::encoding::encoded_len_varint(item_len as u64)
                                    + item_len;
                                if !request.items.is_empty()
                                    && (request.items.len() >= max_items
                                        || size + added > max_bytes)
                                {
                                    break 'segments;
                                }
                                size += added;
                                request.items.push(item);
                            }
                            Ok(SpoolEntry {
                                kind: Some(spool_entry::Kind::Cursor(c)),
                            }) => {
                                absorbed.push((c.source, c.value));
                            }
                            Ok(SpoolEntry { kind: None }) | Err(_) => corrupt += 1,
                        }
                        cursor.offset = next;
                    }
                    Scanned::Corrupt { next, .. } => {
                        corrupt += 1;
                        cursor.offset = next;
                    }
                    Scanned::InvalidTail { .. } => {
                        corrupt += 1;
                        cursor.offset = len;
                    }
                }
            }
            // Finished this segment; a closed one is consumed entirely.
            if index + 1 < ids.len() {
                cursor = Position {
                    segment: ids[index + 1],
                    offset: 0,
                };
            }
        }
        if request.items.is_empty() && cursor == self.meta.cursor {
            return Ok(None);
        }

        let mut meta = self.meta.clone();
        meta.cursor = cursor;
        meta.corrupt_total += corrupt;
        for (source, value) in absorbed {
            meta.source_cursors.insert(source, value);
        }
        let taken = request.items.len() as u64;
        let batch = if request.items.is_empty() {
            None
        } else {
            let encoded = request.encode_to_vec();
            let mut framed = Vec::with_capacity(encoded.len() + 8);
            push_frame(&encoded, &mut framed)?;
            let path = self.batch_path(seq);
            durable::write_atomic(&path, &framed, false).map_err(|e| SpoolError::io(&path, e))?;
            let pending = PendingBatch {
                seq,
                items: taken,
                bytes: encoded.len() as u64,
            };
            meta.pending.push(pending.clone());
            meta.next_batch_seq = seq + 1;
            Some(pending)
        };
        if let Err(err) = meta.store(&self.dir) {
            if batch.is_some() {
                let _ = fs::remove_file(self.batch_path(seq));
            }
            return Err(err);
        }
        if corrupt > 0 {
            tracing::warn!(
                skipped = corrupt,
                corrupt_total = meta.corrupt_total,
                "skipped damaged spool records"
            );
        }
        self.meta = meta;
        self.segment_items = self.segment_items.saturating_sub(taken);
        self.delete_consumed_segments()?;
        Ok(batch)
    }

    /// Deletes closed segments entirely before the cursor.
    fn delete_consumed_segments(&mut self) -> Result<(), SpoolError> {
        let consumed: Vec<u64> = self
            .segments
            .range(..self.meta.cursor.segment)
            .map(|(id, _)| *id)
            .collect();
        for id in consumed {
            remove_file(&self.segment_path(id))?;
            self.segments.remove(&id);
        }
        Ok(())
    }

    /// Loads a pending batch exactly as it was persisted.
    pub fn load_batch(&self, seq: u64) -> Result<PushRequest, SpoolError> {
        if !self.meta.pending.iter().any(|p| p.seq == seq) {
            return Err(SpoolError::UnknownBatch { seq });
        }
        let path = self.batch_path(seq);
        let file = File::open(&path).map_err(|e| SpoolError::io(&path, e))?;
        let len = file.metadata().map_err(|e| SpoolError::io(&path, e))?.len();
        let mut scanner =
            SegmentScanner::new(file, len, 0).map_err(|e| SpoolError::io(&path, e))?;
        match scanner.next_frame().map_err(|e| SpoolError::io(&path, e))? {
            Some(Scanned::Frame { next, .. }) if next == len => {}
            _ => {
                return Err(SpoolError::DamagedBatch {
                    path,
                    reason: "checksum or length mismatch".into(),
                });
            }
        }
        let request =
            PushRequest::decode(scanner.payload()).map_err(|e| SpoolError::DamagedBatch {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if request.batch_seq != seq {
            return Err(SpoolError::DamagedBatch {
                path,
                reason: format!("holds batch_seq {} instead of {seq}", request.batch_seq),
            });
        }
        Ok(request)
    }

    /// Records the collector's acknowledgement of a batch and deletes it.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.finish_batch(seq, true, 0)
    }

    /// Removes a batch that will never be accepted (after it was written to the dead-letter
    /// file by the caller).
    pub fn discard(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.finish_batch(seq, false, 0)
    }

    /// Removes a batch whose file is damaged, counting its items as corrupt.
    pub fn discard_damaged(&mut self, seq: u64) -> Result<(), SpoolError> {
        let items = self
            .meta
            .pending
            .iter()
            .find(|p| p.seq == seq)
            .map_or(0, |p| p.items);
        self.finish_batch(seq, false, items)
    }

    fn finish_batch(&mut self, seq: u64, acked: bool, corrupt: u64) -> Result<(), SpoolError> {
        let mut meta = self.meta.clone();
        let before = meta.pending.len();
        meta.pending.retain(|p| p.seq != seq);
        if meta.pending.len() == before {
            return Err(SpoolError::UnknownBatch { seq });
        }
        if acked {
            meta.last_acked_seq = meta.last_acked_seq.max(seq);
        }
        meta.corrupt_total += corrupt;
        meta.store(&self.dir)?;
        self.meta = meta;
        remove_file(&self.batch_path(seq))
    }

    /// Replaces a pending batch by two halves with new sequence numbers (after the collector
    /// answered RESOURCE_EXHAUSTED, which means it stored nothing of it).
    pub fn split_batch(&mut self, seq: u64) -> Result<(PendingBatch, PendingBatch), SpoolError> {
        let request = self.load_batch(seq)?;
        let items = request.items.len() as u64;
        if items < 2 {
            return Err(SpoolError::CannotSplit { seq, items });
        }
        let mut first = request.items;
        let second = first.split_off(first.len() / 2);
        let mut meta = self.meta.clone();
        let mut halves = Vec::new();
        for part in [first, second] {
            let part_seq = meta.next_batch_seq;
            meta.next_batch_seq += 1;
            let req = PushRequest {
                batch_seq: part_seq,
                items: part,
                all_or_nothing: false,
            };
            let encoded = req.encode_to_vec();
            let mut framed = Vec::with_capacity(encoded.len() + 8);
            push_frame(&encoded, &mut framed)?;
            let path = self.batch_path(part_seq);
            durable::write_atomic(&path, &framed, false).map_err(|e| SpoolError::io(&path, e))?;
            halves.push(PendingBatch {
                seq: part_seq,
                items: req.items.len() as u64,
                bytes: encoded.len() as u64,
            });
        }
        let position = meta
            .pending
            .iter()
            .position(|p| p.seq == seq)
            .ok_or(SpoolError::UnknownBatch { seq })?;
        meta.pending
            .splice(position..=position, halves.iter().cloned());
        meta.store(&self.dir)?;
        self.meta = meta;
        remove_file(&self.batch_path(seq))?;
        Ok((halves[0].clone(), halves[1].clone()))
    }

    fn segment_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
    }

    fn batch_path(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!("{BATCH_PREFIX}{seq:020}{BATCH_SUFFIX}"))
    }

    /// Paths of the segment files, oldest first (tests and the fault-injection suites use it).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .keys()
            .map(|id| self.segment_path(*id))
            .collect()
    }
}

fn push_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), SpoolError> {
    if payload.len() > MAX_PAYLOAD_BYTES as usize {
        return Err(SpoolError::RecordTooLarge {
            size: payload.len(),
            max: MAX_PAYLOAD_BYTES,
        });
    }
    frame::encode_into(payload, out);
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(SpoolError::io(path, err)),
    }
}

/// Scans a segment from `from` to `len`, counting item records and collecting cursors.
/// Items and bytes of one segment for [`Spool::peek_stats`], read from `from` on; `None` when
/// the segment is gone. `peek_stats` runs beside a live agent, which deletes segments once they
/// are shipped or dropped by the cap: a segment listed a moment ago may have vanished, and its
/// items are then no longer in the spool, so it is skipped rather than failing the whole peek.
fn peek_segment(path: &Path, from: u64) -> Result<Option<(u64, u64)>, SpoolError> {
    let gone = |e: &SpoolError| matches!(e, SpoolError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
    let len = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io(path, e)),
    };
    match scan_segment(path, len, from.min(len)) {
        Ok(scan) => Ok(Some((scan.items, len))),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn scan_segment(path: &Path, len: u64, from: u64) -> Result<SegmentScan, SpoolError> {
    let file = File::open(path).map_err(|e| SpoolError::io(path, e))?;
    let mut scanner = SegmentScanner::new(file, len, from).map_err(|e| SpoolError::io(path, e))?;
    let mut scan = SegmentScan::default();
    while let Some(found) = scanner.next_frame().map_err(|e| SpoolError::io(path, e))? {
        match found {
            Scanned::Frame { .. } => match SpoolEntry::decode(scanner.payload()) {
                Ok(SpoolEntry {
                    kind: Some(spool_entry::Kind::Item(_)),
                }) => scan.items += 1,
                Ok(SpoolEntry {
                    kind: Some(spool_entry::Kind::Cursor(c)),
                }) => scan.cursors.push((c.source, c.value)),
                Ok(SpoolEntry { kind: None }) | Err(_) => scan.corrupt += 1,
            },
            Scanned::Corrupt { .. } => scan.corrupt += 1,
            Scanned::InvalidTail { offset } => scan.invalid_tail = Some(offset),
        }
    }
    Ok(scan)
}

#[derive(Default)]
struct Listing {
    segments: Vec<(u64, PathBuf)>,
    batches: Vec<(u64, PathBuf)>,
    temp_files: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Listing, SpoolError> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| SpoolError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.contains(".tmp-") {
            listing.temp_files.push(path);
        } else if let Some(id) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            listing.segments.push((id, path));
        } else if let Some(seq) = name
            .strip_prefix(BATCH_PREFIX)
            .and_then(|s| s.strip_suffix(BATCH_SUFFIX))
            .and_then(|s| s.parse::<u64>().ok())
        {
            listing.batches.push((seq, path));
        }
    }
    listing.segments.sort();
    listing.batches.sort();
    Ok(listing)
}

#[cfg(test)]
mod tests;
