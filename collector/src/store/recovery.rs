//! Recovery after a ledger takeover: which rows of a batch are already in ClickHouse.
//!
//! An earlier attempt at the batch may have failed after ClickHouse stored some of its rows
//! (an insert spanning several daily partitions is not atomic, and a lost connection hides
//! whether the insert went through). These queries find what is there, by the batch's own
//! identity (tenant, agent_id, batch_seq) and within its time range so the primary key and the
//! partitions prune; `remove_existing` then drops those rows from the retry. Keys are counted
//! as multisets, so two identical items of one batch are still both stored exactly once.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::{Store, StoreError, rows::Rows};

#[derive(Row, Deserialize)]
struct EventKey {
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
}

#[derive(Row, Deserialize)]
struct DeviceTimeKey {
    device_id: String,
    at: u32,
}

/// Rows of one batch already stored, by key, with multiplicity.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Existing {
    pub events: HashMap<Uuid, usize>,
    pub states: HashMap<(String, u32), usize>,
    pub heartbeats: HashMap<(String, u32), usize>,
}

impl Existing {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.states.is_empty() && self.heartbeats.is_empty()
    }
}

fn range<T>(items: &[T], f: impl Fn(&T) -> u32) -> Option<(u32, u32)> {
    let mut it = items.iter().map(f);
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// Queries what of `rows` (one batch of one agent) is already stored. `first_seen_secs` is when
/// the ledger first saw the batch: heartbeats are found by their receipt time after it.
pub async fn find_existing(
    store: &Store,
    tenant: &str,
    agent_id: &str,
    batch_seq: u64,
    rows: &Rows,
    first_seen_secs: u32,
) -> Result<Existing, StoreError> {
    let db = store.db();
    let client = store.client();
    let mut existing = Existing::default();
    if let Some((lo, hi)) = range(&rows.events, |r| r.occurred_at) {
        let found: Vec<EventKey> = store
            .timed(
                client
                    .query(&format!(
                        "SELECT event_id FROM {db}.enrollment_events \
                         WHERE tenant = ? AND occurred_at >= toDateTime(?) \
                           AND occurred_at <= toDateTime(?) AND agent_id = ? AND batch_seq = ?"
                    ))
                    .bind(tenant)
                    .bind(lo)
                    .bind(hi)
                    .bind(agent_id)
                    .bind(batch_seq)
                    .fetch_all::<EventKey>(),
            )
            .await?;
        for k in found {
            *existing.events.entry(k.event_id).or_default() += 1;
        }
    }
    if let Some((lo, hi)) = range(&rows.states, |r| r.captured_at) {
        let found: Vec<DeviceTimeKey> = store
            .timed(
                client
                    .query(&format!(
                        "SELECT device_id, toUInt32(captured_at) AS at FROM {db}.device_states \
                         WHERE tenant = ? AND captured_at >= toDateTime(?) \
                           AND captured_at <= toDateTime(?) AND agent_id = ? AND batch_seq = ?"
                    ))
                    .bind(tenant)
                    .bind(lo)
                    .bind(hi)
                    .bind(agent_id)
                    .bind(batch_seq)
                    .fetch_all::<DeviceTimeKey>(),
            )
            .await?;
        for k in found {
            *existing.states.entry((k.device_id, k.at)).or_default() += 1;
        }
    }
    if !rows.heartbeats.is_empty() {
        // A minute of slack for clock differences between collectors sharing the ledger.
        let since = first_seen_secs.saturating_sub(60);
        let found: Vec<DeviceTimeKey> = store
            .timed(
                client
                    .query(&format!(
                        "SELECT device_id, toUInt32(sent_at) AS at FROM {db}.agent_heartbeats \
                         WHERE tenant = ? AND agent_id = ? AND received_at >= toDateTime(?) \
                           AND batch_seq = ?"
                    ))
                    .bind(tenant)
                    .bind(agent_id)
                    .bind(since)
                    .bind(batch_seq)
                    .fetch_all::<DeviceTimeKey>(),
            )
            .await?;
        for k in found {
            *existing.heartbeats.entry((k.device_id, k.at)).or_default() += 1;
        }
    }
    Ok(existing)
}

/// Removes from `rows` every row already stored; returns how many were removed.
pub fn remove_existing(rows: &mut Rows, mut existing: Existing) -> usize {
    let before = rows.len();
    rows.events
        .retain(|r| match existing.events.get_mut(&r.event_id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
    let mut key = (String::new(), 0u32);
    rows.states.retain(|r| {
        key.0.clone_from(&r.device_id);
        key.1 = r.captured_at;
        match existing.states.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        }
    });
    rows.heartbeats.retain(|r| {
        key.0.clone_from(&r.device_id);
        key.1 = r.sent_at;
        match existing.heartbeats.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        }
    });
    before - rows.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::{RowContext, heartbeat_row, state_row};
    use fleetpulse_proto::v1::{DeviceState, Heartbeat};

    fn ctx() -> RowContext {
        RowContext {
            tenant: "t".into(),
            agent_id: "a".into(),
            batch_seq: 1,
            received_at: 100,
            registered_device_id: "d".into(),
        }
    }

    #[test]
    fn removes_stored_rows_counting_duplicates() {
        let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
        let state = |dev: &str| DeviceState {
            device_id: dev.into(),
            ..Default::default()
        };
        let mut rows = Rows {
            events: crate::store::rows::test_events(&[("t", u1, 10), ("t", u2, 10), ("t", u2, 10)]),
            states: vec![
                state_row(&ctx(), state("x"), 5, 0),
                state_row(&ctx(), state("x"), 5, 0),
                state_row(&ctx(), state("y"), 5, 0),
            ],
            heartbeats: vec![heartbeat_row(&ctx(), Heartbeat::default(), 7)],
        };
        let existing = Existing {
            events: HashMap::from([(u2, 1)]),
            states: HashMap::from([(("x".to_owned(), 5), 1)]),
            heartbeats: HashMap::from([(("d".to_owned(), 7), 1)]),
        };
        assert_eq!(remove_existing(&mut rows, existing), 3);
        let ids: Vec<Uuid> = rows.events.iter().map(|r| r.event_id).collect();
        assert_eq!(ids, vec![u1, u2], "one of the two identical events remains");
        let devs: Vec<&str> = rows.states.iter().map(|r| r.device_id.as_str()).collect();
        assert_eq!(devs, vec!["x", "y"]);
        assert!(rows.heartbeats.is_empty());
    }

    #[test]
    fn ranges() {
        assert_eq!(range(&[5u32, 2, 9], |v| *v), Some((2, 9)));
        assert_eq!(range(&[] as &[u32], |v| *v), None);
    }
}
