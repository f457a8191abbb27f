//! Fuzz target bodies for the Push request path, as plain functions so they run on stable:
//! the seed-corpus replay test (`tests/tests/fuzz_corpus.rs`) and the coverage-guided targets
//! under `fuzz/` (cargo-fuzz or AFL++) call the same code.
//!
//! Each body drives hostile bytes through what the gate does after authentication
//! ([`crate::grpc::gate::decode_message`]: inflate under the limit, wire scan, decode) and the
//! handler's validation ([`crate::validate::check_batch`], [`crate::validate::validate_items`]),
//! and panics when an invariant breaks: a crash, a status other than the documented ones, an
//! answer beyond the limits, or an unbounded message.

use std::io::Write;

use bytes::Bytes;
use tonic::Code;

use fleetpulse_proto::v1::PushRequest;
use prost::Message;

use crate::grpc::gate::decode_message;
use crate::push::Item;
use crate::validate::{self, Rules, limits};

/// The limits of a default collector, with a smaller batch cap so that inputs the fuzzer can
/// reach exercise the limits too.
pub fn rules() -> Rules {
    Rules {
        max_batch_items: 64,
        max_batch_bytes: 64 * 1024,
        max_future_skew_secs: 86_400,
        retention_days: 90,
    }
}

/// A fixed "now" (2024-06-01T00:00:00Z): fuzz runs must be reproducible.
const NOW_SECS: i64 = 1_717_200_000;

/// Longest status message the gate or the handler may answer with (the rejects summary is
/// capped; see `validate::summarize`).
const MAX_MESSAGE: usize = 8 * 1024;

/// An uncompressed Push message (the bytes after the gRPC frame header).
pub fn push_raw(data: &[u8]) {
    run(false, Bytes::copy_from_slice(data));
}

/// A gzip-compressed Push. The first byte chooses: even, the rest is sent as the gzip body
/// itself (hostile compressed streams, bombs, truncation); odd, the rest is a message that is
/// gzip-compressed first (so the fuzzer explores messages behind compression too).
pub fn push_gzip(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode % 2 == 0 {
        Bytes::copy_from_slice(rest)
    } else {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(rest);
        match enc.finish() {
            Ok(v) => Bytes::from(v),
            Err(_) => return,
        }
    };
    run(true, body);
}

fn run(compressed: bool, message: Bytes) {
    let rules = rules();
    // What prost makes of an uncompressed message: the borrowed decoding must agree with it.
    let prost = (!compressed).then(|| PushRequest::decode(message.as_ref()));
    match decode_message(compressed, compressed, message, &rules, |_| Ok(())) {
        Ok((req, encoded_len)) => {
            assert!(
                encoded_len <= rules.max_batch_bytes as usize,
                "accepted {encoded_len} bytes over max_batch_bytes"
            );
            assert!(
                req.len() <= rules.max_batch_items as usize,
                "decoded {} items over max_batch_items",
                req.len()
            );
            let items = match req.items() {
                Ok(items) => items,
                Err(reason) => {
                    if let Some(prost) = &prost {
                        assert!(prost.is_err(), "views refused what prost accepts: {reason}");
                    }
                    check_message(&reason);
                    return;
                }
            };
            if let Some(prost) = prost {
                match prost {
                    Ok(expected) => assert_eq!(
                        crate::push::to_request(&req).ok(),
                        Some(expected),
                        "views and prost read the message differently"
                    ),
                    Err(e) => panic!("views accepted what prost refuses ({e})"),
                }
            }
            let attributes: usize = items
                .iter()
                .map(|i| match i {
                    Item::Event(e) => e.attributes.len(),
                    Item::State(s) => s.attributes.len(),
                    _ => 0,
                })
                .sum();
            assert!(
                attributes <= rules.max_batch_items as usize * limits::ATTRIBUTES,
                "decoded {attributes} attribute entries over the batch bound"
            );
            if let Err(e) = validate::check_batch(&req, encoded_len, &rules) {
                check_message(&e.to_string());
                return;
            }
            match validate::validate_items(&items, "fuzz-agent", &rules, NOW_SECS) {
                Ok(v) => {
                    assert_eq!(v.checked.len(), items.len(), "one verdict per item");
                    for r in &v.rejections {
                        assert!(
                            (r.index as usize) < items.len(),
                            "rejection of item {} of {}",
                            r.index,
                            items.len()
                        );
                        assert!(
                            r.field.starts_with(&format!("items[{}]", r.index)),
                            "rejection field {:?} does not name item {}",
                            r.field,
                            r.index
                        );
                        assert!(
                            r.reason.len() <= 1024,
                            "unbounded reason: {}",
                            r.reason.len()
                        );
                    }
                    let summary = validate::summarize(&v.rejections, 20);
                    check_message(&summary);
                }
                Err(e) => check_message(&e.to_string()),
            }
        }
        Err(status) => {
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::ResourceExhausted
                ),
                "undocumented status {:?}: {}",
                status.code(),
                status.message()
            );
            check_message(status.message());
        }
    }
}

fn check_message(m: &str) {
    assert!(
        m.len() <= MAX_MESSAGE,
        "status message of {} bytes",
        m.len()
    );
}
