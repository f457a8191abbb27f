//! Group commit for the batch ledger: the claims and finishes of concurrent pushes go to the
//! control database together, in one transaction, as the writer does for ClickHouse rows.
//!
//! Why: a Push makes two ledger writes (claim, finish; see `ledger`). Done one by one, a fleet
//! of small pushes is bounded by the control database's commits, and on SQLite by its single
//! writer: concurrent writers on the pool's connections collide and wait in SQLite's busy
//! handler. Here one task owns ledger writes: it takes every operation queued (up to
//! [`MAX_GROUP`]), applies them in one transaction, commits once and answers each. While a
//! transaction runs, the next group gathers, so a group grows with the load and a lone push is
//! not delayed.
//!
//! What is grouped is only the common case, with the same statements as `ledger`:
//! - a claim's `INSERT .. ON CONFLICT DO NOTHING`: one inserted row is a fresh claim; when the
//!   row exists already (a resend, a busy or expired lease) the push goes through
//!   [`ControlDb::claim_batch`] after the group committed, which decides as before;
//! - a finish's `UPDATE .. WHERE owner = <mine> AND state = 'pending'`.
//!
//! The exactly-once argument of `ledger` is unchanged: each statement has the same effect and
//! condition as before; grouping only shares a commit. A failed transaction fails every
//! operation of the group (UNAVAILABLE to their pushes, which keep their batches): a claim
//! rolled back was never made, a finish rolled back leaves the batch `pending` and a resend
//! recovers it, exactly as a failed single finish did.

use std::{collections::HashSet, sync::Arc};

use sqlx::Row;

use tokio::sync::{mpsc, oneshot};

use super::{ControlDb, ControlError, ledger::BatchKey};

/// Operations per transaction at most (keeps one transaction short).
pub const MAX_GROUP: usize = 512;

enum Op {
    Claim {
        agent_id: Arc<str>,
        batch_seq: i64,
        tenant: Arc<str>,
        digest: String,
        item_count: i64,
        owner: String,
        now_ms: i64,
        lease_until: i64,
        reply: oneshot::Sender<Result<bool, Arc<sqlx::Error>>>,
    },
    Finish {
        agent_id: Arc<str>,
        batch_seq: i64,
        owner: String,
        accepted: i64,
        rejects: String,
        now_ms: i64,
        reply: oneshot::Sender<Result<bool, Arc<sqlx::Error>>>,
    },
}

impl Op {
    fn reply(self, result: Result<bool, Arc<sqlx::Error>>) {
        let reply = match self {
            Op::Claim { reply, .. } | Op::Finish { reply, .. } => reply,
        };
        let _ = reply.send(result);
    }
}

/// Handle to the group-commit task; clones share it. The task ends when every handle is gone.
#[derive(Clone)]
pub struct LedgerGroup {
    db: Arc<ControlDb>,
    tx: mpsc::UnboundedSender<Op>,
}

fn grouped_error(e: Arc<sqlx::Error>) -> ControlError {
    ControlError::Grouped(e)
}

fn stopped() -> ControlError {
    ControlError::Invalid("the ledger task stopped (the collector is shutting down)".into())
}

impl LedgerGroup {
    /// Starts the task on `db`.
    pub fn spawn(db: Arc<ControlDb>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db.clone(), rx));
        Self { db, tx }
    }

    /// Claims `key` like [`ControlDb::claim_batch`], inserting fresh claims in a group.
    pub async fn claim(
        &self,
        key: &BatchKey<'_>,
        agent_id: &Arc<str>,
        tenant: &Arc<str>,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<super::ledger::Claim, ControlError> {
        let owner = super::ledger::new_owner();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Op::Claim {
                agent_id: agent_id.clone(),
                batch_seq: key.batch_seq,
                tenant: tenant.clone(),
                digest: key.digest.to_owned(),
                item_count: key.item_count,
                owner: owner.clone(),
                now_ms,
                lease_until: now_ms.saturating_add(lease_ms),
                reply,
            })
            .map_err(|_| stopped())?;
        let inserted = answer
            .await
            .map_err(|_| stopped())?
            .map_err(grouped_error)?;
        if inserted {
            return Ok(super::ledger::Claim::Fresh { owner });
        }
        // The row exists: decide as the single-statement path does.
        self.db.claim_batch(key, now_ms, lease_ms).await
    }

    /// Marks an owned batch stored like [`ControlDb::finish_batch`], in a group.
    pub async fn finish(
        &self,
        agent_id: &Arc<str>,
        batch_seq: i64,
        owner: &str,
        accepted: u32,
        rejects: &super::ledger::StoredRejects,
        now_ms: i64,
    ) -> Result<bool, ControlError> {
        let rejects = serde_json::to_string(rejects)
            .map_err(|e| ControlError::Invalid(format!("encoding rejects: {e}")))?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Op::Finish {
                agent_id: agent_id.clone(),
                batch_seq,
                owner: owner.to_owned(),
                accepted: i64::from(accepted),
                rejects,
                now_ms,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(grouped_error)
    }
}

async fn run(db: Arc<ControlDb>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut group: Vec<Op> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        match apply(&db, &group).await {
            Ok(results) => {
                for (op, result) in group.drain(..).zip(results) {
                    op.reply(Ok(result));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, operations = group.len(), "ledger group commit failed");
                let e = Arc::new(e);
                for op in group.drain(..) {
                    op.reply(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies a group in one transaction; per operation, whether its row was written.
///
/// All claims of the group go in one multi-row `INSERT .. ON CONFLICT DO NOTHING RETURNING
/// owner`, all finishes in one `UPDATE .. FROM (VALUES ..) .. RETURNING owner`: the same
/// conditions as the single statements, but two statements per group instead of one per push
/// (with SQLite each statement is a hand-over to the connection's worker thread, and on a
/// loaded machine every hand-over waits for the scheduler; one per push made the ledger the
/// longest wait of a small push, issue 16). Owners are unique per request
/// (`ledger::new_owner`), so the returned owners say which operations wrote their row; of two
/// claims of one batch in the same group only the first can insert.
async fn apply(db: &ControlDb, group: &[Op]) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let mut written: HashSet<String> = HashSet::with_capacity(group.len());
    let claims: Vec<&Op> = group
        .iter()
        .filter(|op| matches!(op, Op::Claim { .. }))
        .collect();
    let finishes: Vec<&Op> = group
        .iter()
        .filter(|op| matches!(op, Op::Finish { .. }))
        .collect();
    if !claims.is_empty() {
        let mut sql = String::from(
            "INSERT INTO ingest_batches (agent_id, batch_seq, tenant, digest, state, item_count,
                 accepted, rejects, owner, lease_until, created_at, updated_at) VALUES ",
        );
        push_rows(&mut sql, claims.len(), 9, |n| {
            format!(
                "(${}, ${}, ${}, ${}, 'pending', ${}, 0, '[]', ${}, ${}, ${}, ${})",
                n,
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7,
                n + 8
            )
        });
        sql.push_str(" ON CONFLICT (agent_id, batch_seq) DO NOTHING RETURNING owner");
        let mut query = sqlx::query(&sql).persistent(false);
        for op in &claims {
            if let Op::Claim {
                agent_id,
                batch_seq,
                tenant,
                digest,
                item_count,
                owner,
                now_ms,
                lease_until,
                ..
            } = op
            {
                query = query
                    .bind(&**agent_id)
                    .bind(*batch_seq)
                    .bind(&**tenant)
                    .bind(digest.as_str())
                    .bind(*item_count)
                    .bind(owner.as_str())
                    .bind(*lease_until)
                    .bind(*now_ms)
                    .bind(*now_ms);
            }
        }
        for row in query.fetch_all(&mut *tx).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    if !finishes.is_empty() {
        let mut sql = String::from(
            "UPDATE ingest_batches SET state = 'stored', accepted = v.column4,
                 rejects = v.column5, lease_until = v.column6, updated_at = v.column6
             FROM (VALUES ",
        );
        push_rows(&mut sql, finishes.len(), 6, |n| {
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                n,
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5
            )
        });
        sql.push_str(
            ") AS v
             WHERE ingest_batches.agent_id = v.column1 AND ingest_batches.batch_seq = v.column2
               AND ingest_batches.owner = v.column3 AND ingest_batches.state = 'pending'
             RETURNING ingest_batches.owner",
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for op in &finishes {
            if let Op::Finish {
                agent_id,
                batch_seq,
                owner,
                accepted,
                rejects,
                now_ms,
                ..
            } = op
            {
                query = query
                    .bind(&**agent_id)
                    .bind(*batch_seq)
                    .bind(owner.as_str())
                    .bind(*accepted)
                    .bind(rejects.as_str())
                    .bind(*now_ms);
            }
        }
        for row in query.fetch_all(&mut *tx).await? {
            written.insert(row.try_get::<String, _>(0)?);
        }
    }
    tx.commit().await?;
    Ok(group
        .iter()
        .map(|op| match op {
            Op::Claim { owner, .. } | Op::Finish { owner, .. } => written.contains(owner),
        })
        .collect())
}

/// Appends `rows` comma-separated row tuples of `width` parameters each, numbered from `$1`.
fn push_rows(sql: &mut String, rows: usize, width: usize, row: impl Fn(usize) -> String) {
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row(i * width + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{
        ledger::{Claim, StoredRejects},
        test_support,
    };

    const LEASE: i64 = 30_000;

    async fn grouped(db: Arc<ControlDb>) {
        let group = LedgerGroup::spawn(db.clone());
        let tenant: Arc<str> = "contoso".into();
        let agents: Vec<Arc<str>> = (0..40)
            .map(|i| Arc::from(format!("00000000-0000-4000-8000-{i:012}")))
            .collect();
        let now = 2_000_000;
        // Forty concurrent claims, each one fresh; the same forty again are resends.
        let claim = |agent: &Arc<str>| {
            let group = group.clone();
            let (agent, tenant) = (agent.clone(), tenant.clone());
            async move {
                let key = BatchKey {
                    tenant: &tenant,
                    agent_id: &agent,
                    batch_seq: 1,
                    digest: "d",
                    item_count: 1,
                };
                group.claim(&key, &agent, &tenant, now, LEASE).await
            }
        };
        let claims = futures::future::join_all(agents.iter().map(claim)).await;
        let owners: Vec<String> = claims
            .into_iter()
            .map(|c| match c.unwrap() {
                Claim::Fresh { owner } => owner,
                other => panic!("{other:?}"),
            })
            .collect();
        // Racing twins of each claim: the group's INSERT conflicts, the single path says Busy.
        let again = futures::future::join_all(agents.iter().map(claim)).await;
        assert!(
            again.iter().all(|c| matches!(
                c,
                Ok(Claim::Busy {
                    lease_remaining_ms: LEASE
                })
            )),
            "{again:?}"
        );
        // Finishes in groups; a wrong owner's finish does nothing.
        let finishes = futures::future::join_all(agents.iter().zip(&owners).map(|(a, o)| {
            let group = group.clone();
            async move {
                group
                    .finish(a, 1, o, 1, &StoredRejects::default(), now + 5)
                    .await
            }
        }))
        .await;
        assert!(
            finishes.iter().all(|f| matches!(f, Ok(true))),
            "{finishes:?}"
        );
        assert!(
            !group
                .finish(
                    &agents[0],
                    1,
                    "not-the-owner",
                    1,
                    &StoredRejects::default(),
                    now
                )
                .await
                .unwrap()
        );
        let dup = claim(&agents[3]).await.unwrap();
        assert_eq!(
            dup,
            Claim::Duplicate {
                accepted: 1,
                rejects: StoredRejects::default()
            }
        );
        let stored: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM ingest_batches WHERE state = 'stored'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(stored, 40);
    }

    #[tokio::test]
    async fn grouped_claims_and_finishes_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        grouped(Arc::new(db)).await;
    }

    #[tokio::test]
    async fn grouped_claims_and_finishes_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        grouped(Arc::new(db)).await;
    }
}
