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
//!    100,000 events, up to four at once), with `tenant IN (...) AND occurred_at IN (SELECT
//!    arrayJoin([...])) AND event_id IN (SELECT arrayJoin([...]))`: the primary key limits the
//!    read to the granules holding those seconds (ClickHouse uses a subquery's set for the
//!    index, 18.16 included). The seconds and ids are array literals because ClickHouse parses
//!    an array of literals as one value, while a tuple of thousands of literals becomes
//!    thousands of syntax-tree nodes: parsing was most of a lookup's time (issue 16). Those
//!    found are dropped.
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

use clickhouse::Row;
use futures::{StreamExt, stream::FuturesUnordered};
use serde::{
    Deserialize, Serialize, Serializer,
    ser::{SerializeSeq, SerializeTuple},
};
use uuid::Uuid;

use super::{Store, rows::EventRow};

/// One event's identity.
pub type EventKey = (Arc<str>, Uuid);

/// Events per lookup query: a whole flush of the default size (`flush_rows`) in one. Every
/// lookup reads the granules of its seconds, and the chunks of one flush cover much the same
/// seconds, so each further chunk read them again (issue 13: twenty chunks of 5,000 per
/// 100,000-row flush read the same granules twenty times). Array literals (see above) keep
/// a large query cheap to parse.
const LOOKUP_CHUNK: usize = 100_000;
/// Lookups of one flush in flight at once (flushes larger than one chunk).
const CONCURRENT_LOOKUPS: usize = 4;
/// `max_query_size` for the lookup: 100,000 ids (40 bytes each as text) and their seconds
/// need about 4.2 MB of SQL, above ClickHouse's default of 256 KiB.
const LOOKUP_MAX_QUERY_SIZE: &str = "16777216";

/// Ids being inserted by flushes of this process that have not ended yet.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashSet<EventKey>>,
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
pub fn claim_unique(inflight: &Arc<InFlight>, parts: &mut [&mut Vec<EventRow>]) -> (Claim, usize) {
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

#[derive(Row, Deserialize)]
struct Found {
    tenant: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

/// Step 3: drops the events of `parts` that ClickHouse already holds; returns how many.
pub async fn drop_stored(
    store: &Store,
    table: &str,
    parts: &mut [&mut Vec<EventRow>],
) -> Result<usize, clickhouse::error::Error> {
    let events: Vec<&EventRow> = parts.iter().flat_map(|p| p.iter()).collect();
    let mut stored: HashSet<(String, Uuid)> = HashSet::new();
    // The lookups of one flush run concurrently: each waits mostly on ClickHouse parsing its
    // SQL and reading granules, and one after the other they made flushes latency-bound.
    let mut chunks = events.chunks(LOOKUP_CHUNK);
    let mut running = FuturesUnordered::new();
    for chunk in chunks.by_ref().take(CONCURRENT_LOOKUPS) {
        running.push(lookup(store, table, chunk));
    }
    while let Some(found) = running.next().await {
        for f in found? {
            stored.insert((f.tenant, f.event_id));
        }
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
    events: &[&EventRow],
) -> Result<Vec<Found>, clickhouse::error::Error> {
    let mut tenants: Vec<&str> = events.iter().map(|e| &*e.tenant).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut seconds: Vec<u32> = events.iter().map(|e| e.occurred_at).collect();
    seconds.sort_unstable();
    seconds.dedup();
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Each list is one bound parameter (the crate writes a tuple as `(a, b, ..)` and a
    // sequence as `[a, b, ..]`, every value escaped): binding thousands of single `?`s costs
    // time quadratic in their number, since each `bind` searches the query's parts for the
    // first unbound one. Seconds and ids go as arrays (see the module doc).
    let sql = format!(
        "SELECT tenant, event_id FROM {table} \
         WHERE tenant IN ? \
           AND occurred_at IN (SELECT toDateTime(arrayJoin(?), 'UTC')) \
           AND event_id IN (SELECT toUUID(arrayJoin(?)))"
    );
    store
        .client()
        .query(&sql)
        .with_setting("max_query_size", LOOKUP_MAX_QUERY_SIZE)
        .bind(SqlTuple(&tenants))
        .bind(&seconds[..])
        .bind(UuidTexts(&ids))
        .fetch_all::<Found>()
        .await
}

/// A list bound as one SQL tuple `(v1, v2, ..)`; must not be empty.
struct SqlTuple<'a, T>(&'a [T]);

impl<T: Serialize> Serialize for SqlTuple<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for v in self.0 {
            tuple.serialize_element(v)?;
        }
        tuple.end()
    }
}

/// UUIDs bound as one SQL array of their texts `['..', '..']`.
struct UuidTexts<'a>(&'a [Uuid]);

impl Serialize for UuidTexts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for id in self.0 {
            seq.serialize_element(&UuidText(*id))?;
        }
        seq.end()
    }
}

/// A UUID as its hyphenated text (`toUUID` reads it back), written without allocating.
struct UuidText(Uuid);

impl Serialize for UuidText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        serializer.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, id: u128) -> EventRow {
        EventRow {
            tenant: tenant.into(),
            event_id: Uuid::from_u128(id),
            ..Default::default()
        }
    }

    #[test]
    fn copies_within_a_flush_and_in_flight_elsewhere_are_dropped() {
        let inflight = Arc::new(InFlight::default());
        let mut a = vec![row("t1", 1), row("t1", 1), row("t2", 1)];
        let mut b = vec![row("t1", 2), row("t1", 1)];
        let (claim, dropped) = claim_unique(&inflight, &mut [&mut a, &mut b]);
        assert_eq!(dropped, 2, "the second t1/1 in a and the one in b");
        assert_eq!((a.len(), b.len()), (2, 1));
        // Another flush while the first is in flight: all of its ids are taken.
        let mut c = vec![row("t1", 1), row("t1", 2), row("t2", 9)];
        let (claim2, dropped) = claim_unique(&inflight, &mut [&mut c]);
        assert_eq!((dropped, c.len()), (2, 1));
        drop(claim);
        drop(claim2);
        // Once both ended, the ids are free again (ClickHouse answers from now on).
        let mut d = vec![row("t1", 1)];
        assert_eq!(claim_unique(&inflight, &mut [&mut d]).1, 0);
    }
}
