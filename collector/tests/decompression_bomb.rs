//! A decompression bomb is stopped at `max_batch_bytes` without allocating what it would
//! inflate to (issue 13, known gaps). A counting global allocator measures the peak of live
//! heap bytes while the gate's pure body path ([`decode_message`]) handles a 16 KiB gzip body
//! that inflates to 64 MiB; the collector's RSS under the same kind of request, end to end, is
//! asserted in `tests/tests/collector_limits.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use fleetpulse_collector::grpc::gate::decode_message;
use fleetpulse_collector::validate::Rules;
use tonic::Code;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::SeqCst)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

/// The allocator's counters are global: the tests of this binary run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `batch_seq = 1`, then one unknown length-delimited field (9) of `zeros` zero bytes.
fn bomb_message(zeros: usize) -> Vec<u8> {
    let mut m = b"\x08\x01".to_vec();
    prost::encoding::encode_key(9, prost::encoding::WireType::LengthDelimited, &mut m);
    prost::encoding::encode_varint(zeros as u64, &mut m);
    m.resize(m.len() + zeros, 0);
    m
}

/// A default collector's limits with max_batch_bytes = 4 MiB.
fn rules() -> Rules {
    Rules {
        max_batch_items: 5000,
        max_batch_bytes: 4 * MIB as u32,
        max_future_skew_secs: 86_400,
        retention_days: 90,
    }
}

#[test]
fn a_gzip_bomb_is_stopped_at_the_limit_without_allocating_its_inflated_size() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rules = rules();
    let inflated = 64 * MIB;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&bomb_message(inflated)).expect("compress");
    let body = Bytes::from(enc.finish().expect("compress"));
    assert!(
        body.len() < 128 * 1024,
        "the bomb is {} bytes on the wire",
        body.len()
    );

    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let err = decode_message(true, true, body, &rules, |_| Ok(())).expect_err("a bomb is refused");
    let peak = PEAK.load(Ordering::SeqCst) - before;

    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "the gzip message inflates to more than max_batch_bytes = 4194304 bytes; split the batch"
    );
    // The inflate buffer may hold max_batch_bytes + 1 (and the allocator's doubling may round
    // it up to 8 MiB); 64 MiB would mean the bomb went off.
    assert!(
        peak <= 2 * rules.max_batch_bytes as usize + MIB,
        "peak heap while refusing the bomb: {} KiB",
        peak / 1024
    );
    eprintln!(
        "64 MiB gzip bomb refused at the 4 MiB limit; peak heap {} KiB",
        peak / 1024
    );
}

#[test]
fn a_gzip_body_within_the_limit_is_inflated_and_decoded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rules = rules();
    let message = bomb_message(MIB);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&message).expect("compress");
    let body = Bytes::from(enc.finish().expect("compress"));
    let (req, len) =
        decode_message(true, true, body, &rules, |_| Ok(())).expect("within the limit");
    assert_eq!(len, message.len());
    assert_eq!(req.batch_seq, 1);
    assert!(req.is_empty());
}
