//! Unit tests of the spool's durability properties. Crashes are simulated by dropping the
//! `Spool` without any shutdown step (exactly what `kill -9` leaves behind on disk) and by
//! cutting or damaging files the way a crash or a bad disk would.

use super::*;
use fleetpulse_proto::v1::{Heartbeat, telemetry_item::Kind};
use std::sync::Mutex;

fn item(n: usize) -> TelemetryItem {
    item_sized(n, 0)
}

fn item_sized(n: usize, padding: usize) -> TelemetryItem {
    TelemetryItem {
        kind: Some(Kind::Heartbeat(Heartbeat {
            agent_id: format!("item-{n}"),
            last_error: "x".repeat(padding),
            ..Heartbeat::default()
        })),
    }
}

fn name(item: &TelemetryItem) -> String {
    match &item.kind {
        Some(Kind::Heartbeat(h)) => h.agent_id.clone(),
        other => panic!("unexpected item {other:?}"),
    }
}

fn small() -> SpoolConfig {
    SpoolConfig {
        max_bytes: 16 * 1024,
        segment_bytes: 4096,
    }
}

/// Cuts batches until empty, acking each; returns the item names in order.
fn drain(spool: &mut Spool) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(batch) = spool.next_batch(1000, 1 << 20).unwrap() {
        let request = spool.load_batch(batch.seq).unwrap();
        names.extend(request.items.iter().map(name));
        spool.ack(batch.seq).unwrap();
    }
    names
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("item-{n}")).collect()
}

#[test]
fn items_leave_in_order_and_acked_batches_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.append(&[item(0), item(1)]).unwrap();
    spool.append(&[item(2)]).unwrap();
    assert_eq!(spool.stats().depth, 3);

    let batch = spool.next_batch(2, 1 << 20).unwrap().unwrap();
    assert_eq!((batch.seq, batch.items), (1, 2));
    // Until acked, the same batch is offered again.
    assert_eq!(spool.next_batch(2, 1 << 20).unwrap().unwrap(), batch);
    let request = spool.load_batch(1).unwrap();
    assert_eq!(request.batch_seq, 1);
    assert_eq!(
        request.items.iter().map(name).collect::<Vec<_>>(),
        names(0..2)
    );
    spool.ack(1).unwrap();
    assert!(!dir.path().join(format!("batch-{:020}.pending", 1)).exists());

    let next = spool.next_batch(2, 1 << 20).unwrap().unwrap();
    assert_eq!((next.seq, next.items), (2, 1));
    spool.ack(2).unwrap();
    assert_eq!(spool.next_batch(2, 1 << 20).unwrap(), None);
    let stats = spool.stats();
    assert_eq!(
        (stats.depth, stats.last_acked_seq, stats.next_batch_seq),
        (0, 2, 3)
    );
}

#[test]
fn batches_respect_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let items: Vec<_> = (0..10).map(|n| item_sized(n, 100)).collect();
    spool.append(&items).unwrap();
    let one = PushRequest {
        batch_seq: 1,
        items: vec![items[0].clone()],
        all_or_nothing: false,
    }
    .encoded_len();
    // Room for three items but not four.
    let batch = spool.next_batch(1000, one * 3 + 10).unwrap().unwrap();
    assert_eq!(batch.items, 3);
    assert!(batch.bytes as usize <= one * 3 + 10);
    // A single item larger than the limit still forms a batch of one.
    spool.ack(batch.seq).unwrap();
    let batch = spool.next_batch(1000, 10).unwrap().unwrap();
    assert_eq!(batch.items, 1);
}

#[test]
fn reopen_after_crash_resends_the_same_batch_with_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.append(&(0..5).map(item).collect::<Vec<_>>()).unwrap();
    let batch = spool.next_batch(3, 1 << 20).unwrap().unwrap();
    let sent = spool.load_batch(batch.seq).unwrap();
    drop(spool); // crash before the ack arrived

    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.stats().depth, 5);
    let again = spool.next_batch(3, 1 << 20).unwrap().unwrap();
    assert_eq!(again, batch);
    assert_eq!(spool.load_batch(again.seq).unwrap(), sent);
    spool.ack(again.seq).unwrap();
    drop(spool); // crash after the ack

    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.stats().depth, 2);
    assert_eq!(drain(&mut spool), names(3..5));
    assert_eq!(spool.stats().next_batch_seq, 3);
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_truncated() {
    // Reference layout: two committed appends, then the record that will be torn.
    let reference = tempfile::tempdir().unwrap();
    let (committed_len, full_len) = {
        let mut spool = Spool::open(reference.path(), SpoolConfig::default()).unwrap();
        spool.append(&[item(0)]).unwrap();
        spool.append(&[item(1)]).unwrap();
        let committed = fs::metadata(&spool.segment_paths()[0]).unwrap().len();
        spool.append(&[item_sized(2, 40)]).unwrap();
        (
            committed,
            fs::metadata(&spool.segment_paths()[0]).unwrap().len(),
        )
    };
    let segment_name = format!("{:020}.seg", 1);
    let full = fs::read(reference.path().join(&segment_name)).unwrap();
    assert_eq!(full.len() as u64, full_len);

    for cut in committed_len..full_len {
        for zero_fill in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = full[..cut as usize].to_vec();
            if zero_fill {
                // Some file systems extend the file before the data lands: zeros to full size.
                bytes.resize(full.len(), 0);
            }
            fs::write(dir.path().join(&segment_name), &bytes).unwrap();
            let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
            assert_eq!(
                spool.truncated_on_open(),
                bytes.len() as u64 - committed_len,
                "cut at {cut}"
            );
            assert_eq!(spool.stats().depth, 2, "cut at {cut}");
            spool.append(&[item(3)]).unwrap();
            assert_eq!(
                drain(&mut spool),
                vec!["item-0", "item-1", "item-3"],
                "cut at {cut}"
            );
            assert_eq!(spool.stats().corrupt_total, 0, "cut at {cut}");
        }
    }
}

#[test]
fn bit_flip_in_a_middle_record_is_skipped_and_counted_once() {
    for target in ["length", "crc", "payload"] {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        spool.append(&[item(0)]).unwrap();
        let start = fs::metadata(&spool.segment_paths()[0]).unwrap().len() as usize;
        spool.append(&[item_sized(1, 30)]).unwrap();
        spool.append(&[item(2)]).unwrap();
        let path = spool.segment_paths()[0].clone();
        drop(spool);

        let mut bytes = fs::read(&path).unwrap();
        let at = match target {
            "length" => start + 1,
            "crc" => start + 5,
            _ => start + 20,
        };
        bytes[at] ^= 0x10;
        fs::write(&path, &bytes).unwrap();

        let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        assert_eq!(spool.truncated_on_open(), 0, "{target}");
        assert_eq!(drain(&mut spool), vec!["item-0", "item-2"], "{target}");
        assert_eq!(spool.stats().corrupt_total, 1, "{target}");
        drop(spool);
        let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        assert_eq!(
            spool.stats().corrupt_total,
            1,
            "{target}: counted again after reopen"
        );
    }
}

#[test]
fn damage_in_the_last_record_of_a_closed_segment_counts_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
    };
    let mut spool = Spool::open(dir.path(), config).unwrap();
    for n in 0..20 {
        spool.append(&[item_sized(n, 400)]).unwrap();
    }
    let paths = spool.segment_paths();
    assert!(paths.len() >= 2);
    drop(spool);
    let first = &paths[0];
    let mut bytes = fs::read(first).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xFF;
    fs::write(first, &bytes).unwrap();

    let mut spool = Spool::open(dir.path(), config).unwrap();
    let drained = drain(&mut spool);
    assert_eq!(drained.len(), 19);
    assert_eq!(spool.stats().corrupt_total, 1);
}

#[test]
fn cap_reached_drops_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), small()).unwrap();
    let mut dropped = 0;
    for n in 0..200 {
        dropped += spool.append(&[item_sized(n, 200)]).unwrap().dropped;
        let on_disk: u64 = spool
            .segment_paths()
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= small().max_bytes, "segments use {on_disk} bytes");
    }
    let stats = spool.stats();
    assert!(dropped > 0);
    assert_eq!(stats.dropped_total, dropped);
    assert_eq!(stats.depth + dropped, 200);
    let drained = drain(&mut spool);
    // What remains is the newest items, in order, ending with the last one appended.
    assert_eq!(drained, names(200 - drained.len()..200));
    drop(spool);
    let spool = Spool::open(dir.path(), small()).unwrap();
    assert_eq!(
        spool.stats().dropped_total,
        dropped,
        "drop count is persisted"
    );
}

#[test]
fn dropping_a_segment_under_a_pending_batch_keeps_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), small()).unwrap();
    spool
        .append(&[item_sized(0, 200), item_sized(1, 200)])
        .unwrap();
    let batch = spool.next_batch(2, 1 << 20).unwrap().unwrap();
    for n in 2..200 {
        spool.append(&[item_sized(n, 200)]).unwrap();
    }
    let request = spool.load_batch(batch.seq).unwrap();
    assert_eq!(
        request.items.iter().map(name).collect::<Vec<_>>(),
        names(0..2)
    );
    let stats = spool.stats();
    assert_eq!(stats.depth + stats.dropped_total, 200);
}

/// A segment writer that accepts `budget` bytes in total, then writes a partial chunk and fails
/// with ENOSPC, like a full disk.
struct FullDisk {
    budget: Arc<Mutex<usize>>,
}

struct FullDiskFile {
    file: File,
    budget: Arc<Mutex<usize>>,
}

impl SegmentIo for FullDisk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(FullDiskFile {
            file,
            budget: self.budget.clone(),
        }))
    }
}

impl SegmentFile for FullDiskFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut budget = self.budget.lock().unwrap();
        if bytes.len() <= *budget {
            *budget -= bytes.len();
            return self.file.write_all(bytes);
        }
        let partial = *budget;
        *budget = 0;
        self.file.write_all(&bytes[..partial])?;
        Err(io::Error::from_raw_os_error(28))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[test]
fn enospc_returns_an_error_and_leaves_the_spool_valid() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Arc::new(Mutex::new(200));
    let io = Arc::new(FullDisk {
        budget: budget.clone(),
    });
    let mut spool = Spool::open_with_io(dir.path(), SpoolConfig::default(), io).unwrap();
    spool.append(&[item(0)]).unwrap();
    let err = spool.append(&[item_sized(1, 500)]).unwrap_err();
    match &err {
        SpoolError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(28)),
        other => panic!("expected an I/O error, got {other}"),
    }
    assert_eq!(spool.stats().depth, 1);
    // Space comes back: the spool continues where it was.
    *budget.lock().unwrap() = 1 << 20;
    spool.append(&[item(2)]).unwrap();
    drop(spool);
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.truncated_on_open(), 0);
    assert_eq!(drain(&mut spool), vec!["item-0", "item-2"]);
    assert_eq!(spool.stats().corrupt_total, 0);
}

#[test]
fn split_batch_gives_two_new_sequence_numbers_with_all_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.append(&(0..5).map(item).collect::<Vec<_>>()).unwrap();
    let batch = spool.next_batch(5, 1 << 20).unwrap().unwrap();
    let (a, b) = spool.split_batch(batch.seq).unwrap();
    assert_eq!((a.seq, a.items, b.seq, b.items), (2, 2, 3, 3));
    assert!(matches!(
        spool.load_batch(1),
        Err(SpoolError::UnknownBatch { seq: 1 })
    ));
    drop(spool);
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(drain(&mut spool), names(0..5));
    let single = {
        spool.append(&[item(9)]).unwrap();
        spool.next_batch(5, 1 << 20).unwrap().unwrap()
    };
    assert!(matches!(
        spool.split_batch(single.seq),
        Err(SpoolError::CannotSplit { items: 1, .. })
    ));
}

#[test]
fn discarded_and_damaged_batches_leave_and_are_accounted() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.append(&(0..4).map(item).collect::<Vec<_>>()).unwrap();
    let first = spool.next_batch(2, 1 << 20).unwrap().unwrap();
    spool.discard(first.seq).unwrap();
    let second = spool.next_batch(2, 1 << 20).unwrap().unwrap();
    let path = dir.path().join(format!("batch-{:020}.pending", second.seq));
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert!(matches!(
        spool.load_batch(second.seq),
        Err(SpoolError::DamagedBatch { .. })
    ));
    spool.discard_damaged(second.seq).unwrap();
    let stats = spool.stats();
    assert_eq!(
        (stats.depth, stats.corrupt_total, stats.last_acked_seq),
        (0, 2, 0)
    );
}

#[test]
fn source_cursors_commit_with_their_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), small()).unwrap();
    spool
        .append_with_cursor(&[item(0)], Some(("ndjson:a", "120")))
        .unwrap();
    spool
        .append_with_cursor(&[item(1)], Some(("ndjson:a", "240")))
        .unwrap();
    drop(spool);
    let mut spool = Spool::open(dir.path(), small()).unwrap();
    assert_eq!(spool.source_cursor("ndjson:a"), Some("240"));
    assert_eq!(spool.stats().depth, 2);
    assert_eq!(drain(&mut spool), names(0..2));
    // The segments are consumed; the cursor now lives in the metadata.
    for n in 2..100 {
        spool.append(&[item_sized(n, 200)]).unwrap();
        drain(&mut spool);
    }
    drop(spool);
    let spool = Spool::open(dir.path(), small()).unwrap();
    assert_eq!(spool.source_cursor("ndjson:a"), Some("240"));
    assert_eq!(spool.source_cursor("other"), None);
}

#[test]
fn sequence_numbers_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.ensure_next_seq_at_least(1000).unwrap();
    spool.ensure_next_seq_at_least(5).unwrap();
    spool.append(&[item(0)]).unwrap();
    assert_eq!(spool.next_batch(10, 1 << 20).unwrap().unwrap().seq, 1000);
    drop(spool);
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.next_batch_seq(), 1001);
}

#[test]
fn a_spool_is_locked_but_can_be_peeked() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.append(&[item(0), item(1)]).unwrap();
    spool.next_batch(1, 1 << 20).unwrap();
    #[cfg(unix)]
    assert!(matches!(
        Spool::open(dir.path(), SpoolConfig::default()),
        Err(SpoolError::Io { .. })
    ));
    let peeked = Spool::peek_stats(dir.path()).unwrap();
    assert_eq!(peeked, spool.stats());
    assert_eq!((peeked.depth, peeked.pending_batches), (2, 1));
}

#[test]
fn invalid_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Spool::open(
        dir.path(),
        SpoolConfig {
            max_bytes: 5000,
            segment_bytes: 4096,
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid spool configuration: max_bytes (5000) must be at least twice segment_bytes (4096)"
    );
}

/// `fleetpulse-agent status` peeks at a spool that a running agent is changing: a segment
/// deleted between the listing and the read (shipped, or dropped by the cap) is skipped, not
/// an error that fails the whole status.
#[test]
fn peek_skips_a_segment_deleted_while_peeking() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("seg-00000000000000000007.log");
    assert!(peek_segment(&missing, 0).unwrap().is_none());

    let mut spool = Spool::open(dir.path(), small()).unwrap();
    for n in 0..40 {
        spool.append(&[item_sized(n, 200)]).unwrap();
    }
    drop(spool);
    let listing = list_dir(dir.path()).unwrap();
    assert!(
        listing.segments.len() >= 2,
        "{} segments",
        listing.segments.len()
    );
    let (_, first) = &listing.segments[0];
    let (items, len) = peek_segment(first, 0).unwrap().unwrap();
    assert!(items > 0 && len > 0);
    fs::remove_file(first).unwrap();
    assert!(peek_segment(first, 0).unwrap().is_none());
}
