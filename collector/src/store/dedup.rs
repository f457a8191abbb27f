//! Event-level exactly-once: the collector stores an event id at most once per tenant.
//!
//! The batch ledger makes a *batch* idempotent; this makes an *event* idempotent across
//! batches, agents and restarts (issue 14: the same event twice in a batch, or resent under a
//! new `batch_seq`, or reported by a re-registered device, was stored and counted again).
//!
//! Identity: `(tenant, event_id)`. Event ids are derived from the event's content, including
//! `occurred_at`, so every copy of an event carries the same `occurred_at`; the lookup uses it
//! to stay on the primary key `(tenant, occurred_at, device_id)`.
//!
//! Per flush of the writer, before the insert:
//! 1. copies inside the flush are dropped (the first one is kept);
//! 2. ids being inserted right now by another in-flight flush of this process are dropped
//!    (the in-flight set); the flush's own ids are added to it until its insert has ended;
//! 3. ClickHouse is asked which `(tenant, event_id)` of the flush exist (one query per
//!    100,000 events, up to four at once). The flush's keys travel as an external table
//!    (`_keys`: tenant, occurred_at, event_id in RowBinary, see [`super::external`]) and the
//!    query reads `tenant IN (SELECT tenant FROM _keys) AND occurred_at IN (SELECT .. FROM
//!    _keys) AND event_id IN (SELECT event_id FROM _keys)`: the primary key limits the read to
//!    the granules holding those seconds (ClickHouse uses a subquery's set for the index, 18.16
//!    included). Sending the ids as data rather than as SQL literals keeps ClickHouse from
//!    parsing megabytes of SQL per flush (issue 16 replaced a tuple of literals by an array
//!    literal for the same reason; issue 13 the array by the external table). Those found are
//!    dropped.
//!
//! Residual window (documented in ARCHITECTURE.md): two *collectors* that receive copies of
//! one event and flush them at the same moment (both look before either insert is visible)
//! both store it. Copies sent to one collector, or to several collectors more than one flush
//! apart (flush interval plus insert time), are stored once. A copy dropped in step 2 relies on
//! the other flush: if that insert fails, its pushes fail and their senders resend the event.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use bytes::{BufMut, BytesMut};
use futures::{StreamExt, stream::FuturesUnordered};
use uuid::Uuid;

use super::{
    Store,
    external::{ExternalError, ExternalTable, rowbinary},
    rows::{EncodedEvent, EventBatch},
};

/// One event's identity.
pub type EventKey = (Arc<str>, Uuid);

/// Events per lookup query: a whole flush of the default size (`flush_rows`) in one. Every
/// lookup reads the granules of its seconds, and the chunks of one flush cover much the same
/// seconds, so each further chunk read them again (issue 13: twenty chunks of 5,000 per
/// 100,000-row flush read the same granules twenty times). The keys travel as an external
/// table (see above), so a large lookup costs no SQL parsing.
const LOOKUP_CHUNK: usize = 100_000;
/// Lookups of one flush in flight at once (flushes larger than one chunk).
const CONCURRENT_LOOKUPS: usize = 4;
/// The sets' hasher: every event of every flush is inserted into the in-flight set and removed
/// again, which with the standard SipHash cost about 12 % of the collector's CPU at batch 5000
/// (a `perf` profile, BENCHMARKS.md). foldhash's quality variant is several times faster and
/// still randomly seeded per process, so ids chosen by an agent cannot be aimed at one bucket
/// from outside.
type FastHash = foldhash::quality::RandomState;

/// Ids being inserted by flushes of this process that have not ended yet.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<EventKey, FastHash>>,
}

/// The ids a flush added to the in-flight set; removed again when dropped.
pub struct Claim {
    inflight: Arc<InFlight>,
    keys: Vec<EventKey>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut set) = self.inflight.keys.lock() {
            for k in &self.keys {
                set.remove(k);
            }
        }
    }
}

/// Steps 1 and 2: drops copies within `parts` and ids in flight elsewhere, claims the rest.
/// Returns the claim and how many events were dropped.
pub fn claim_unique(inflight: &Arc<InFlight>, parts: &mut [&mut EventBatch]) -> (Claim, usize) {
    let mut claim = Claim {
        inflight: inflight.clone(),
        keys: Vec::new(),
    };
    let mut dropped = 0;
    let Ok(mut set) = inflight.keys.lock() else {
        return (claim, 0);
    };
    for part in parts.iter_mut() {
        part.retain(|e| {
            let key = (e.tenant.clone(), e.event_id);
            if set.insert(key.clone()) {
                claim.keys.push(key);
                true
            } else {
                dropped += 1;
                false
            }
        });
    }
    (claim, dropped)
}

/// Name and structure of the external table carrying a lookup's keys.
const KEYS_TABLE: &str = "_keys";
const KEYS_STRUCTURE: &str = "tenant String, occurred_at UInt32, event_id UUID";

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Query(#[from] ExternalError),
    #[error("ClickHouse's answer to the lookup: {0}")]
    Answer(String),
}

/// Step 3: drops the events of `parts` that ClickHouse already holds; returns how many.
pub async fn drop_stored(
    store: &Store,
    table: &str,
    parts: &mut [&mut EventBatch],
) -> Result<usize, LookupError> {
    let events: Vec<&EncodedEvent> = parts.iter().flat_map(|p| p.iter()).collect();
    let mut stored: HashSet<(String, Uuid), FastHash> = HashSet::default();
    // The lookups of one flush run concurrently: each waits mostly on ClickHouse reading
    // granules, and one after the other they made flushes latency-bound.
    let mut chunks = events.chunks(LOOKUP_CHUNK);
    let mut running = FuturesUnordered::new();
    for chunk in chunks.by_ref().take(CONCURRENT_LOOKUPS) {
        running.push(lookup(store, table, chunk));
    }
    while let Some(found) = running.next().await {
        stored.extend(found?);
        if let Some(chunk) = chunks.next() {
            running.push(lookup(store, table, chunk));
        }
    }
    drop(running);
    if stored.is_empty() {
        return Ok(0);
    }
    let mut dropped = 0;
    for part in parts.iter_mut() {
        part.retain(|e| {
            // `remove`: an id dropped once is gone from the flush (step 1 left one copy).
            if stored.remove(&(e.tenant.to_string(), e.event_id)) {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
    Ok(dropped)
}

/// The `(tenant, event_id)` of `events` present in `table`.
async fn lookup(
    store: &Store,
    table: &str,
    events: &[&EncodedEvent],
) -> Result<Vec<(String, Uuid)>, LookupError> {
    // Per event: tenant, second, id; the `IN (SELECT ..)` sets drop the repeats.
    let mut keys = BytesMut::with_capacity(events.len() * 40);
    for e in events {
        rowbinary::put_str(&mut keys, &e.tenant);
        keys.put_u32_le(e.occurred_at);
        rowbinary::put_uuid(&mut keys, &e.event_id);
    }
    let sql = format!(
        "SELECT tenant, event_id FROM {table} \
         WHERE tenant IN (SELECT tenant FROM {KEYS_TABLE}) \
           AND occurred_at IN (SELECT toDateTime(occurred_at, 'UTC') FROM {KEYS_TABLE}) \
           AND event_id IN (SELECT event_id FROM {KEYS_TABLE}) \
         FORMAT RowBinary"
    );
    let answer = store
        .lookups()
        .fetch(
            &sql,
            ExternalTable {
                name: KEYS_TABLE,
                structure: KEYS_STRUCTURE,
                rows: keys.freeze(),
            },
        )
        .await?;
    let mut input: &[u8] = &answer;
    let mut found = Vec::new();
    while !input.is_empty() {
        let tenant = rowbinary::get_str(&mut input).map_err(LookupError::Answer)?;
        let id = rowbinary::get_uuid(&mut input).map_err(LookupError::Answer)?;
        found.push((tenant, id));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[(&str, u128)]) -> EventBatch {
        let keys: Vec<(&str, Uuid, u32)> = keys
            .iter()
            .map(|(t, id)| (*t, Uuid::from_u128(*id), 1))
            .collect();
        crate::store::rows::test_events(&keys)
    }

    #[test]
    fn copies_within_a_flush_and_in_flight_elsewhere_are_dropped() {
        let inflight = Arc::new(InFlight::default());
        let mut a = rows(&[("t1", 1), ("t1", 1), ("t2", 1)]);
        let mut b = rows(&[("t1", 2), ("t1", 1)]);
        let (claim, dropped) = claim_unique(&inflight, &mut [&mut a, &mut b]);
        assert_eq!(dropped, 2, "the second t1/1 in a and the one in b");
        assert_eq!((a.len(), b.len()), (2, 1));
        // Another flush while the first is in flight: all of its ids are taken.
        let mut c = rows(&[("t1", 1), ("t1", 2), ("t2", 9)]);
        let (claim2, dropped) = claim_unique(&inflight, &mut [&mut c]);
        assert_eq!((dropped, c.len()), (2, 1));
        drop(claim);
        drop(claim2);
        // Once both ended, the ids are free again (ClickHouse answers from now on).
        let mut d = rows(&[("t1", 1)]);
        assert_eq!(claim_unique(&inflight, &mut [&mut d]).1, 0);
    }
}
