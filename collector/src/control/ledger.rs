//! The batch ledger: how a resent batch is stored exactly once.
//!
//! ClickHouse 18.16 has no insert deduplication tokens, and an insert that spans several
//! partitions is not atomic (some partitions' parts may be written before a failure). So the
//! collector keeps, in the control database, one ledger row per batch, keyed by
//! `(agent_id, batch_seq)`:
//! `ingest_batches(agent_id, batch_seq, tenant, digest, state, item_count, accepted, rejects,
//! owner, lease_until, created_at, updated_at)`.
//!
//! A Push goes through these steps:
//! 1. **Digest**: SHA-256 over a canonical encoding of the items (attributes sorted by key, so
//!    map order on the wire does not matter).
//! 2. **Claim**: `INSERT .. state='pending', owner=<random>, lease_until=now+lease ON CONFLICT
//!    DO NOTHING`. One inserted row means this Push owns a fresh batch: nothing of it can be in
//!    ClickHouse. Otherwise the existing row decides:
//!    - other digest: FAILED_PRECONDITION (same number, different contents);
//!    - `stored`: OK with `duplicate = true`, the stored `accepted` count and the stored rejects
//!      (kept as JSON, so the answer repeats the original one);
//!    - `pending` with a live lease: UNAVAILABLE ("being stored by another request; retry");
//!    - `pending` with an expired lease (an attempt crashed or failed): take it over with a
//!      compare-and-set `UPDATE .. SET owner=<new> WHERE owner=<old> AND lease_until <= now`
//!      (only one of several racing collectors wins), then **recover**: ask ClickHouse which of
//!      the batch's rows are already stored (by tenant, agent, batch_seq, within the batch's own
//!      time range so the primary key prunes) and write only the missing ones: events by
//!      `event_id`, states by `(device_id, captured_at)`, heartbeats by `(device_id, sent_at)`,
//!      counted as multisets so identical items inside one batch stay distinct.
//! 3. **Write**: valid rows go to the single writer; the Push waits until ClickHouse confirmed
//!    the insert that carried them.
//! 4. **Finish**: `UPDATE state='stored', accepted, rejects WHERE owner=<mine>`, queued before
//!    the answer OK and committed with the ledger's next group after it (the answer means the
//!    rows are in ClickHouse; the mark only serves resends: see
//!    `ledger_group::LedgerGroup::finish_after_answer`).
//!
//! On a failed write the lease is shortened to now (the retry recovers at once), or, when the
//! failure leaves it unknown whether the server is still applying the insert (timeout, broken
//! connection), to now + the ClickHouse timeout, so that the recovery query runs after any
//! such insert has settled. Invalid `all_or_nothing` batches delete their claim.
//!
//! Why this is safe: a write is only started while its lease has at least one ClickHouse timeout
//! left, and every insert is bounded by that timeout, so no write of an owner is still running
//! when its lease expires and another owner's recovery looks at ClickHouse. The lease (30 s by
//! default, at least 2 x timeout + 5 s) compares wall clocks of collectors sharing a PostgreSQL
//! ledger, which must therefore agree within a few seconds. Everything lives in the shared
//! database, so the guarantee holds across restarts and across several collectors.
//! Ledger rows are kept for `ledger_keep_hours` (default 24), not for the retention: compaction
//! (`ledger_compaction`) deletes older rows under a per-agent floor, and a claim at or below
//! the floor that finds no row is [`Claim::Pruned`]: recovered from ClickHouse like a takeover.
//!
//! Cost: one INSERT (claim) and one UPDATE (finish) per Push on the hot path, each sharing a
//! transaction with the other pushes' of the moment (group commit, `ledger_group`).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{ControlDb, ControlError};

/// A rejection as kept in the ledger, repeated in the answer to a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReject {
    pub index: u32,
    pub field: String,
    pub reason: String,
}

/// The rejections of a stored batch, bounded so that a reject-heavy batch keeps a small row
/// (issue 14: 58,000 bad attribute keys made an 8.8 MB row): the total count, every rejected
/// item index as compact ranges (`0-3,7`: at most `max_batch_items` indexes), and only the
/// first few rejections with their reasons (`validate::LISTED_REJECTS`, texts truncated).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredRejects {
    /// Rejections in total (one per offending field).
    pub total: u32,
    /// Indexes of the items not stored, as ascending ranges.
    pub items: String,
    /// The first rejections, with field and reason.
    pub listed: Vec<StoredReject>,
}

impl StoredRejects {
    /// Reads a ledger `rejects` column: this object, or the unbounded list older collectors
    /// wrote.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if text.trim_start().starts_with('[') {
            let listed: Vec<StoredReject> = serde_json::from_str(text)?;
            let mut items: Vec<u32> = listed.iter().map(|r| r.index).collect();
            items.dedup();
            return Ok(Self {
                total: u32::try_from(listed.len()).unwrap_or(u32::MAX),
                items: format_ranges(&items),
                listed,
            });
        }
        serde_json::from_str(text)
    }

    /// The rejected item indexes.
    pub fn item_indexes(&self) -> Vec<u32> {
        parse_ranges(&self.items)
    }
}

/// `[0,1,2,3,7]` -> `0-3,7` (the input ascending).
pub fn format_ranges(indexes: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < indexes.len() {
        let start = indexes[i];
        let mut end = start;
        while i + 1 < indexes.len() && indexes[i + 1] == end + 1 {
            i += 1;
            end = indexes[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// The inverse of [`format_ranges`]; malformed parts are skipped.
pub fn parse_ranges(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

/// The identity and contents fingerprint of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchKey<'a> {
    pub tenant: &'a str,
    pub agent_id: &'a str,
    pub batch_seq: i64,
    /// The digest of the canonical items (`crate::digest`).
    pub digest: &'a str,
    pub item_count: i64,
}

/// What claiming a batch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First sight of this batch: this Push owns it and nothing of it is stored.
    Fresh { owner: String },
    /// An earlier attempt's lease expired; this Push owns it now and must recover, since the
    /// earlier attempt may have stored some rows. `first_seen_ms` bounds when those were written.
    TakenOver { owner: String, first_seen_ms: i64 },
    /// First sight of this batch *in the ledger*, but its number is at or below its agent's
    /// compaction floor (`ledger_compaction`): an earlier attempt's row may have been
    /// compacted away after its rows were stored, so this Push owns it and must recover, like
    /// a takeover with no bound on when the earlier attempt ran.
    Pruned { owner: String },
    /// Already stored: answer OK with `duplicate = true`.
    Duplicate {
        accepted: u32,
        rejects: StoredRejects,
    },
    /// Another request holds a live lease on it.
    Busy { lease_remaining_ms: i64 },
    /// The number was used for other contents, or the stored digest is of another version
    /// (`stored_is_v1`: a collector before digest v2 claimed it; compare under v1 to know).
    DigestMismatch { stored_is_v1: bool },
}

/// Whether a claim's insert obeys the agent's compaction floor.
#[derive(Debug, Clone, Copy)]
enum Floor {
    /// Insert only above the floor (a fresh claim).
    Respect,
    /// Insert whatever the floor (a batch known to be at or below it, row gone).
    Ignore,
}

/// A claim's owner: 64 random bits as 16 hex digits, unique per claim so that a takeover's
/// compare-and-set can tell attempts apart. They need not be secret, so they come from the
/// thread's CSPRNG (seeded from the operating system) rather than one `getrandom` system call
/// per push, which `OsRng` made (about one per push at batch 10, measured with `strace`).
pub(crate) fn new_owner() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl ControlDb {
    /// Claims `key` for a lease ending at `now_ms + lease_ms`. See the module docs.
    pub async fn claim_batch(
        &self,
        key: &BatchKey<'_>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Claim, ControlError> {
        // A row can disappear between our INSERT and SELECT (an all_or_nothing claim deleted)
        // or change between SELECT and UPDATE (a racing takeover); a few rounds settle it.
        for _ in 0..5 {
            let owner = new_owner();
            // Fresh only above the agent's compaction floor: at or below it, a missing row may
            // be one that compaction deleted (see `ledger_compaction`).
            let inserted = self
                .insert_claim(key, &owner, now_ms, lease_ms, Floor::Respect)
                .await?;
            if inserted {
                return Ok(Claim::Fresh { owner });
            }

            let Some(row) = sqlx::query(
                "SELECT digest, state, accepted, rejects, owner, lease_until, created_at
                 FROM ingest_batches WHERE agent_id = $1 AND batch_seq = $2",
            )
            .bind(key.agent_id)
            .bind(key.batch_seq)
            .fetch_optional(self.pool())
            .await?
            else {
                if self.below_floor(key.agent_id, key.batch_seq).await?
                    && self
                        .insert_claim(key, &owner, now_ms, lease_ms, Floor::Ignore)
                        .await?
                {
                    return Ok(Claim::Pruned { owner });
                }
                // Otherwise the row went away between the two statements (an abandoned
                // claim): look again.
                continue;
            };
            let digest: String = row.try_get("digest")?;
            if digest != key.digest {
                return Ok(Claim::DigestMismatch {
                    stored_is_v1: crate::digest::is_v1(&digest),
                });
            }
            let state: String = row.try_get("state")?;
            if state == "stored" {
                let accepted: i64 = row.try_get("accepted")?;
                let rejects: String = row.try_get("rejects")?;
                let rejects = StoredRejects::parse(&rejects).map_err(|e| {
                    ControlError::Invalid(format!(
                        "ledger row ({}, {}) has unreadable rejects: {e}",
                        key.agent_id, key.batch_seq
                    ))
                })?;
                return Ok(Claim::Duplicate {
                    accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
                    rejects,
                });
            }
            let lease_until: i64 = row.try_get("lease_until")?;
            if lease_until > now_ms {
                return Ok(Claim::Busy {
                    lease_remaining_ms: lease_until - now_ms,
                });
            }
            let old_owner: String = row.try_get("owner")?;
            let first_seen_ms: i64 = row.try_get("created_at")?;
            let taken = sqlx::query(
                "UPDATE ingest_batches SET owner = $1, lease_until = $2, updated_at = $3
                 WHERE agent_id = $4 AND batch_seq = $5 AND state = 'pending'
                   AND owner = $6 AND lease_until <= $7",
            )
            .bind(&owner)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(key.agent_id)
            .bind(key.batch_seq)
            .bind(&old_owner)
            .bind(now_ms)
            .execute(self.pool())
            .await?
            .rows_affected();
            if taken == 1 {
                return Ok(Claim::TakenOver {
                    owner,
                    first_seen_ms,
                });
            }
        }
        // Five rounds of losing races: someone else is actively working on it.
        Ok(Claim::Busy {
            lease_remaining_ms: lease_ms,
        })
    }

    /// Whether `batch_seq` is at or below `agent_id`'s compaction floor.
    async fn below_floor(&self, agent_id: &str, batch_seq: i64) -> Result<bool, ControlError> {
        let guard: Option<i64> =
            sqlx::query_scalar("SELECT guard_seq FROM ledger_floors WHERE agent_id = $1")
                .bind(agent_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(guard.is_some_and(|g| g >= batch_seq))
    }

    /// Inserts a pending claim unless the row exists (or, with [`Floor::Respect`], unless the
    /// number is at or below the agent's compaction floor); whether this call inserted it.
    async fn insert_claim(
        &self,
        key: &BatchKey<'_>,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        floor: Floor,
    ) -> Result<bool, ControlError> {
        // `WHERE` in the SELECT also keeps SQLite's parser from reading `ON CONFLICT` as a
        // join's `ON`.
        let condition = match floor {
            Floor::Respect => {
                "NOT EXISTS (SELECT 1 FROM ledger_floors WHERE agent_id = $10 AND guard_seq >= $11)"
            }
            Floor::Ignore => "true",
        };
        let sql = format!(
            "INSERT INTO ingest_batches (agent_id, batch_seq, tenant, digest, state, item_count,
                 accepted, rejects, owner, lease_until, created_at, updated_at)
             SELECT $1, $2, $3, $4, 'pending', $5, 0, '[]', $6, $7, $8, $9
             WHERE {condition}
             ON CONFLICT (agent_id, batch_seq) DO NOTHING"
        );
        let mut query = sqlx::query(&sql)
            .bind(key.agent_id)
            .bind(key.batch_seq)
            .bind(key.tenant)
            .bind(key.digest)
            .bind(key.item_count)
            .bind(owner)
            .bind(now_ms + lease_ms)
            .bind(now_ms)
            .bind(now_ms);
        if let Floor::Respect = floor {
            query = query.bind(key.agent_id).bind(key.batch_seq);
        }
        let inserted = query.execute(self.pool()).await?.rows_affected();
        Ok(inserted == 1)
    }

    /// Marks an owned batch stored. Returns false when the lease was lost meanwhile (the rows
    /// are stored all the same; the new owner's recovery sees them).
    pub async fn finish_batch(
        &self,
        agent_id: &str,
        batch_seq: i64,
        owner: &str,
        accepted: u32,
        rejects: &StoredRejects,
        now_ms: i64,
    ) -> Result<bool, ControlError> {
        let rejects = serde_json::to_string(rejects)
            .map_err(|e| ControlError::Invalid(format!("encoding rejects: {e}")))?;
        let n = sqlx::query(
            "UPDATE ingest_batches SET state = 'stored', accepted = $1, rejects = $2,
                 lease_until = $3, updated_at = $4
             WHERE agent_id = $5 AND batch_seq = $6 AND owner = $7 AND state = 'pending'",
        )
        .bind(i64::from(accepted))
        .bind(rejects)
        .bind(now_ms)
        .bind(now_ms)
        .bind(agent_id)
        .bind(batch_seq)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// After a failed write: lets the next attempt take over from `lease_until_ms` on.
    pub async fn release_batch(
        &self,
        agent_id: &str,
        batch_seq: i64,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<(), ControlError> {
        sqlx::query(
            "UPDATE ingest_batches SET lease_until = $1, updated_at = $2
             WHERE agent_id = $3 AND batch_seq = $4 AND owner = $5 AND state = 'pending'",
        )
        .bind(lease_until_ms)
        .bind(lease_until_ms)
        .bind(agent_id)
        .bind(batch_seq)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a claim under which nothing was written (an invalid all_or_nothing batch), so
    /// corrected contents may reuse the number.
    pub async fn abandon_batch(
        &self,
        agent_id: &str,
        batch_seq: i64,
        owner: &str,
    ) -> Result<(), ControlError> {
        sqlx::query(
            "DELETE FROM ingest_batches
             WHERE agent_id = $1 AND batch_seq = $2 AND owner = $3 AND state = 'pending'",
        )
        .bind(agent_id)
        .bind(batch_seq)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owners_are_16_hex_digits_and_distinct() {
        let owners: std::collections::HashSet<String> =
            (0..1000).map(|_| super::new_owner()).collect();
        assert_eq!(owners.len(), 1000);
        assert!(owners.iter().all(|o| {
            o.len() == 16
                && o.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }));
    }

    #[test]
    fn reject_ranges_round_trip_and_legacy_rows_parse() {
        use super::{StoredRejects, format_ranges, parse_ranges};
        let idx = [0, 1, 2, 3, 7, 9, 10];
        assert_eq!(format_ranges(&idx), "0-3,7,9-10");
        assert_eq!(parse_ranges("0-3,7,9-10"), idx);
        assert_eq!(format_ranges(&[]), "");
        let legacy =
            r#"[{"index":2,"field":"f","reason":"r"},{"index":2,"field":"g","reason":"r"}]"#;
        let parsed = StoredRejects::parse(legacy).unwrap();
        assert_eq!((parsed.total, parsed.items.as_str()), (2, "2"));
        assert_eq!(parsed.item_indexes(), vec![2]);
    }

    use super::*;
    use crate::control::test_support;

    const LEASE: i64 = 30_000;

    fn key<'a>(seq: i64, digest: &'a str) -> BatchKey<'a> {
        BatchKey {
            tenant: "contoso",
            agent_id: "8a1f0b8e-2c4d-4e5f-9a6b-7c8d9e0f1a2b",
            batch_seq: seq,
            digest,
            item_count: 3,
        }
    }

    async fn state_machine(db: &ControlDb) {
        let now = 1_000_000;
        let Claim::Fresh { owner } = db.claim_batch(&key(1, "d1"), now, LEASE).await.unwrap()
        else {
            panic!("first claim must be fresh")
        };
        // Live lease: the same batch is busy, another digest is a mismatch.
        assert_eq!(
            db.claim_batch(&key(1, "d1"), now + 10, LEASE)
                .await
                .unwrap(),
            Claim::Busy {
                lease_remaining_ms: LEASE - 10
            }
        );
        assert_eq!(
            db.claim_batch(&key(1, "d2"), now + 10, LEASE)
                .await
                .unwrap(),
            Claim::DigestMismatch {
                stored_is_v1: false
            }
        );
        let rejects = StoredRejects {
            total: 1,
            items: "2".into(),
            listed: vec![StoredReject {
                index: 2,
                field: "items[2].event.device_id".into(),
                reason: "required".into(),
            }],
        };
        assert!(
            db.finish_batch(key(1, "").agent_id, 1, &owner, 2, &rejects, now + 20)
                .await
                .unwrap()
        );
        assert_eq!(
            db.claim_batch(&key(1, "d1"), now + 30, LEASE)
                .await
                .unwrap(),
            Claim::Duplicate {
                accepted: 2,
                rejects: rejects.clone()
            }
        );
        assert_eq!(
            db.claim_batch(&key(1, "other"), now + 30, LEASE)
                .await
                .unwrap(),
            Claim::DigestMismatch {
                stored_is_v1: false
            }
        );

        // A failed attempt releases its lease; the next attempt takes over and must recover.
        let Claim::Fresh { owner: o2 } = db.claim_batch(&key(2, "e"), now, LEASE).await.unwrap()
        else {
            panic!()
        };
        db.release_batch(key(2, "").agent_id, 2, &o2, now + 100)
            .await
            .unwrap();
        assert_eq!(
            db.claim_batch(&key(2, "e"), now + 50, LEASE).await.unwrap(),
            Claim::Busy {
                lease_remaining_ms: 50
            }
        );
        let Claim::TakenOver {
            owner: o3,
            first_seen_ms,
        } = db
            .claim_batch(&key(2, "e"), now + 100, LEASE)
            .await
            .unwrap()
        else {
            panic!("expired lease must be taken over")
        };
        assert_eq!(first_seen_ms, now);
        // The old owner lost the batch: its late finish does nothing.
        assert!(
            !db.finish_batch(
                key(2, "").agent_id,
                2,
                &o2,
                5,
                &StoredRejects::default(),
                now + 110
            )
            .await
            .unwrap()
        );
        assert!(
            db.finish_batch(
                key(2, "").agent_id,
                2,
                &o3,
                3,
                &StoredRejects::default(),
                now + 120
            )
            .await
            .unwrap()
        );

        // A crashed attempt (no release) is taken over once its lease ran out.
        let Claim::Fresh { .. } = db.claim_batch(&key(3, "f"), now, LEASE).await.unwrap() else {
            panic!()
        };
        assert!(matches!(
            db.claim_batch(&key(3, "f"), now + LEASE, LEASE)
                .await
                .unwrap(),
            Claim::TakenOver { .. }
        ));

        // Abandoned claims free the number for new contents.
        let Claim::Fresh { owner: o4 } = db.claim_batch(&key(4, "g"), now, LEASE).await.unwrap()
        else {
            panic!()
        };
        db.abandon_batch(key(4, "").agent_id, 4, &o4).await.unwrap();
        assert!(matches!(
            db.claim_batch(&key(4, "h"), now, LEASE).await.unwrap(),
            Claim::Fresh { .. }
        ));
    }

    async fn ledger_rows(db: &ControlDb) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM ingest_batches")
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    async fn concurrent_claims_have_one_winner(db: &ControlDb) {
        let now = 5_000_000;
        let k = key(10, "x");
        let claims =
            futures::future::join_all((0..8).map(|_| db.claim_batch(&k, now, LEASE))).await;
        let fresh = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Fresh { .. })))
            .count();
        let busy = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Busy { .. })))
            .count();
        assert_eq!((fresh, busy), (1, 7), "{claims:?}");

        // Racing takeovers of an expired lease: exactly one wins.
        let later = now + LEASE + 1;
        let claims =
            futures::future::join_all((0..8).map(|_| db.claim_batch(&k, later, LEASE))).await;
        let taken = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::TakenOver { .. })))
            .count();
        let busy = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Busy { .. })))
            .count();
        assert_eq!((taken, busy), (1, 7), "{claims:?}");
    }

    #[tokio::test]
    async fn ledger_state_machine_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        state_machine(&db).await;
        concurrent_claims_have_one_winner(&db).await;
        assert_eq!(ledger_rows(&db).await, 5);
    }

    #[tokio::test]
    async fn ledger_state_machine_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        state_machine(&db).await;
        concurrent_claims_have_one_winner(&db).await;
        // A second pool (another collector) sees the same ledger.
        let other = test_support::connect_retrying(&pg.url).await;
        assert_eq!(
            other
                .claim_batch(&key(1, "d1"), 1_000_100, LEASE)
                .await
                .unwrap(),
            Claim::Duplicate {
                accepted: 2,
                rejects: StoredRejects {
                    total: 1,
                    items: "2".into(),
                    listed: vec![StoredReject {
                        index: 2,
                        field: "items[2].event.device_id".into(),
                        reason: "required".into(),
                    }],
                }
            }
        );
        assert_eq!(ledger_rows(&other).await, 5);
    }
}
