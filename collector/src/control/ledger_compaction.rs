//! Keeping the batch ledger small at fleet scale: rows older than the ledger window are
//! deleted, and each agent keeps a *floor* under which a missing row means "verify against
//! ClickHouse", not "fresh".
//!
//! Why: the ledger holds one row per Push. Kept for the whole retention (90 days), a fleet of
//! 10M devices pushing every 15 minutes would hold ~87 billion rows, which no control database
//! serves. But a row is only *needed* by a resend, and resends come minutes after the first
//! attempt (a lost answer, a crash), rarely days later (a device switched off mid-push). So
//! rows are kept for `ledger_keep_hours` (default 24) and a late resend pays one ClickHouse
//! lookup instead: the recovery a takeover already does (`store::recovery`), which finds the
//! batch's stored rows by (tenant, agent, batch_seq) and writes only what is missing.
//!
//! The floor is what makes deleting safe. Table `ledger_floors(agent_id, guard_seq,
//! raised_at, deletable_seq)`:
//! - a claim inserts its row only when `batch_seq > guard_seq` (in the same statement, so no
//!   round trip is added to a push); at or below the guard a claim that finds no row is
//!   [`Claim::Pruned`](super::ledger::Claim::Pruned): owned, and recovered before writing;
//! - compaction deletes a row only when it is older than the window **and** at or below
//!   `deletable_seq`, which is a guard raised at least [`PROMOTE_AFTER_MS`] earlier.
//!
//! So every claim statement that can miss a deleted row started after the guard covering that
//! row was committed, and sees it: on PostgreSQL under READ COMMITTED a statement sees what
//! was committed before it began, and no claim statement runs for ten minutes. The delay
//! also covers several collectors compacting one shared database at different times, and
//! their clocks disagreeing by seconds. Agents number their batches upwards, so a live agent
//! pushes above its guard and is never slowed; only a resend of a compacted batch (or an
//! unusually old number) is verified. What changes shape after the window: a resend is
//! answered from the recovery (its `accepted` count recomputed by today's validation,
//! `duplicate` set when every row was found) rather than repeated from the ledger, and a
//! number reused for *different* contents is no longer refused (FAILED_PRECONDITION) but
//! stored as the new contents' missing rows.
//!
//! One run (hourly, with the raw tables' retention, `store::retention`) is three statements,
//! each its own transaction so that SQLite's single writer is never held for long:
//! 1. **promote**: `deletable_seq = guard_seq` where the guard was raised at least
//!    `PROMOTE_AFTER_MS` ago;
//! 2. **delete** rows older than the window at or below `deletable_seq`, in chunks of
//!    [`DELETE_CHUNK`] rows, except a row under a live lease: an old batch being recovered
//!    right now (a takeover keeps the row's `created_at`) keeps its row, or a second attempt
//!    would find none and write beside it;
//! 3. **raise** each agent's guard to the highest number among its rows older than the window,
//!    to be promoted (and those rows deleted) by a run at least `PROMOTE_AFTER_MS` later.
//!
//! A row therefore lives between the window and the window plus two runs (about 2 hours).

use super::{ControlDb, ControlError};

/// How long a raised guard waits before rows under it may be deleted: longer than any claim
/// statement runs, than the clocks of collectors sharing a database disagree, and shorter than
/// the hour between two runs.
pub const PROMOTE_AFTER_MS: i64 = 10 * 60 * 1000;

/// Rows deleted per statement.
pub const DELETE_CHUNK: i64 = 5000;

/// What one compaction run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Agents whose deletable floor moved up.
    pub promoted: u64,
    /// Ledger rows deleted.
    pub deleted: u64,
    /// Agents whose guard moved up (their rows are deleted by a later run).
    pub raised: u64,
}

impl ControlDb {
    /// One compaction run at `now_ms`, keeping rows created in the last `keep_ms`. See the
    /// module documentation for the order of its steps and why it is safe.
    pub async fn compact_ledger(
        &self,
        now_ms: i64,
        keep_ms: i64,
    ) -> Result<Compaction, ControlError> {
        let cutoff = now_ms.saturating_sub(keep_ms);
        let promoted = sqlx::query(
            "UPDATE ledger_floors SET deletable_seq = guard_seq
             WHERE raised_at <= $1 AND deletable_seq < guard_seq",
        )
        .bind(now_ms.saturating_sub(PROMOTE_AFTER_MS))
        .execute(self.pool())
        .await?
        .rows_affected();

        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                // The lease condition is repeated on the deleted row itself: on PostgreSQL a
                // row updated meanwhile (a takeover's compare-and-set) is re-checked against
                // the outer condition before it is deleted.
                "DELETE FROM ingest_batches WHERE lease_until <= $1 AND (agent_id, batch_seq) IN (
                     SELECT b.agent_id, b.batch_seq FROM ingest_batches b
                     JOIN ledger_floors f ON f.agent_id = b.agent_id
                     WHERE b.created_at < $2 AND b.batch_seq <= f.deletable_seq
                       AND b.lease_until <= $3
                     LIMIT $4)",
            )
            .bind(now_ms)
            .bind(cutoff)
            .bind(now_ms)
            .bind(DELETE_CHUNK)
            .execute(self.pool())
            .await?
            .rows_affected();
            deleted += n;
            if n < DELETE_CHUNK as u64 {
                break;
            }
        }

        // `WHERE` in the SELECT also keeps SQLite's parser from reading `ON CONFLICT` as a
        // join's `ON`.
        let raised = sqlx::query(
            "INSERT INTO ledger_floors (agent_id, guard_seq, raised_at, deletable_seq)
             SELECT agent_id, MAX(batch_seq), $1, 0 FROM ingest_batches
             WHERE created_at < $2 GROUP BY agent_id
             ON CONFLICT (agent_id) DO UPDATE
                 SET guard_seq = excluded.guard_seq, raised_at = excluded.raised_at
                 WHERE excluded.guard_seq > ledger_floors.guard_seq",
        )
        .bind(now_ms)
        .bind(cutoff)
        .execute(self.pool())
        .await?
        .rows_affected();

        Ok(Compaction {
            promoted,
            deleted,
            raised,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::control::{
        ledger::{BatchKey, Claim, StoredRejects},
        ledger_group::LedgerGroup,
        test_support,
    };
    use crate::metrics::Metrics;

    const HOUR: i64 = 3_600_000;
    const LEASE: i64 = 30_000;
    const AGENT: &str = "8a1f0b8e-2c4d-4e5f-9a6b-7c8d9e0f1a2b";
    const OTHER: &str = "0b7e4c55-1d1e-4f0a-8a33-5c2b9e3d4f10";

    fn key(agent_id: &str, seq: i64) -> BatchKey<'_> {
        BatchKey {
            tenant: "contoso",
            agent_id,
            batch_seq: seq,
            digest: "d",
            item_count: 3,
        }
    }

    async fn store(db: &ControlDb, agent: &str, seq: i64, at: i64) {
        let Claim::Fresh { owner } = db.claim_batch(&key(agent, seq), at, LEASE).await.unwrap()
        else {
            panic!("batch {seq} of {agent} must be fresh at {at}")
        };
        assert!(
            db.finish_batch(agent, seq, &owner, 3, &StoredRejects::default(), at)
                .await
                .unwrap()
        );
    }

    async fn rows(db: &ControlDb) -> Vec<(String, i64)> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT agent_id, batch_seq FROM ingest_batches ORDER BY agent_id, batch_seq",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        rows
    }

    async fn compaction(db: Arc<ControlDb>) {
        let t0 = 1_000 * HOUR;
        // Batches 1-3 of AGENT two days ago, 4 an hour ago; OTHER's 1 two days ago.
        for seq in 1..=3 {
            store(&db, AGENT, seq, t0 - 48 * HOUR).await;
        }
        store(&db, AGENT, 4, t0 - HOUR).await;
        store(&db, OTHER, 1, t0 - 48 * HOUR).await;

        // First run: nothing is deletable yet; the guards go up to the old rows.
        let run = db.compact_ledger(t0, 24 * HOUR).await.unwrap();
        assert_eq!(
            run,
            Compaction {
                promoted: 0,
                deleted: 0,
                raised: 2
            }
        );
        assert_eq!(rows(&db).await.len(), 5);
        // Resends are still answered from the ledger while the rows exist.
        assert!(matches!(
            db.claim_batch(&key(AGENT, 2), t0, LEASE).await.unwrap(),
            Claim::Duplicate { accepted: 3, .. }
        ));

        // A run before the guard is PROMOTE_AFTER old deletes nothing.
        let early = db
            .compact_ledger(t0 + PROMOTE_AFTER_MS - 1, 24 * HOUR)
            .await
            .unwrap();
        assert_eq!(early, Compaction::default());

        // An hour later the guards are promoted and the old rows go; batch 4 stays.
        let run = db.compact_ledger(t0 + HOUR, 24 * HOUR).await.unwrap();
        assert_eq!(
            run,
            Compaction {
                promoted: 2,
                deleted: 4,
                raised: 0
            }
        );
        assert_eq!(rows(&db).await, vec![(AGENT.to_owned(), 4)]);

        // A batch under the floor that a push owns right now (a takeover of a two-day-old
        // attempt) keeps its row while the lease lives, and goes once it has expired.
        let taken_at = t0 + HOUR;
        store(&db, OTHER, 7, t0 - 47 * HOUR).await;
        sqlx::query(
            "UPDATE ingest_batches SET state = 'pending', lease_until = $1
             WHERE agent_id = $2 AND batch_seq = 7",
        )
        .bind(taken_at + 2 * HOUR + LEASE)
        .bind(OTHER)
        .execute(db.pool())
        .await
        .unwrap();
        assert_eq!(
            db.compact_ledger(taken_at + HOUR, 24 * HOUR)
                .await
                .unwrap()
                .raised,
            1
        );
        let leased = db
            .compact_ledger(taken_at + 2 * HOUR, 24 * HOUR)
            .await
            .unwrap();
        assert_eq!((leased.promoted, leased.deleted), (1, 0));
        let expired = db
            .compact_ledger(taken_at + 3 * HOUR, 24 * HOUR)
            .await
            .unwrap();
        assert_eq!(expired.deleted, 1);
        assert_eq!(rows(&db).await, vec![(AGENT.to_owned(), 4)]);

        // A resend of a compacted batch is owned and must be verified; so is a number under
        // the guard that was never seen. A new number is fresh; batch 4 is still a duplicate.
        let now = t0 + HOUR;
        assert!(matches!(
            db.claim_batch(&key(AGENT, 2), now, LEASE).await.unwrap(),
            Claim::Pruned { .. }
        ));
        assert!(matches!(
            db.claim_batch(&key(AGENT, 2), now, LEASE).await.unwrap(),
            Claim::Busy { .. }
        ));
        assert!(matches!(
            db.claim_batch(&key(OTHER, 1), now, LEASE).await.unwrap(),
            Claim::Pruned { .. }
        ));
        assert!(matches!(
            db.claim_batch(&key(AGENT, 5), now, LEASE).await.unwrap(),
            Claim::Fresh { .. }
        ));
        assert!(matches!(
            db.claim_batch(&key(AGENT, 4), now, LEASE).await.unwrap(),
            Claim::Duplicate { .. }
        ));
        // Each agent has its own floor: OTHER's is 7 now, AGENT's 3.
        assert!(matches!(
            db.claim_batch(&key(OTHER, 8), now, LEASE).await.unwrap(),
            Claim::Fresh { .. }
        ));

        // The grouped claims of the hot path obey the same floor.
        let group = LedgerGroup::spawn(db.clone(), Arc::new(Metrics::new()));
        let (agent, tenant): (Arc<str>, Arc<str>) = (AGENT.into(), "contoso".into());
        let grouped = |seq| {
            let (group, agent, tenant) = (group.clone(), agent.clone(), tenant.clone());
            async move {
                group
                    .claim(&key(&agent, seq), &agent, &tenant, now, LEASE)
                    .await
                    .unwrap()
            }
        };
        let (below, above) = tokio::join!(grouped(3), grouped(6));
        assert!(matches!(below, Claim::Pruned { .. }), "{below:?}");
        assert!(matches!(above, Claim::Fresh { .. }), "{above:?}");
    }

    #[tokio::test]
    async fn compaction_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        compaction(Arc::new(db)).await;
    }

    #[tokio::test]
    async fn compaction_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        compaction(Arc::new(db)).await;
    }

    /// Thousands of rows go in several chunks.
    #[tokio::test]
    async fn compaction_deletes_in_chunks() {
        let (_dir, db) = test_support::sqlite().await;
        let old = 10 * HOUR;
        let total = DELETE_CHUNK * 2 + 17;
        let mut tx = db.pool().begin().await.unwrap();
        for seq in 1..=total {
            sqlx::query(
                "INSERT INTO ingest_batches (agent_id, batch_seq, tenant, digest, state,
                     item_count, accepted, rejects, owner, lease_until, created_at, updated_at)
                 VALUES ($1, $2, 'contoso', 'd', 'stored', 1, 1, '[]', 'o', $3, $4, $5)",
            )
            .bind(AGENT)
            .bind(seq)
            .bind(old)
            .bind(old)
            .bind(old)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let now = old + 48 * HOUR;
        assert_eq!(db.compact_ledger(now, 24 * HOUR).await.unwrap().raised, 1);
        let run = db.compact_ledger(now + HOUR, 24 * HOUR).await.unwrap();
        assert_eq!((run.promoted, run.deleted), (1, total as u64));
        assert!(rows(&db).await.is_empty());
    }
}
