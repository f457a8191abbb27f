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
//! The same task also records when agents were last seen ([`LedgerGroup::touch`], one
//! `UPDATE agents .. FROM (VALUES ..)` per group): a separate writer would contend for
//! SQLite's single write lock, and a contended transaction waits in SQLite's busy handler,
//! which sleeps milliseconds at a time (a thousand agents' first pushes each spawned one such
//! writer).
//!
//! The exactly-once argument of `ledger` is unchanged: each statement has the same effect and
//! condition as before; grouping only shares a commit. A failed transaction fails every
//! operation of the group (UNAVAILABLE to their pushes, which keep their batches): a claim
//! rolled back was never made, a finish rolled back leaves the batch `pending` and a resend
//! recovers it, exactly as a failed single finish did.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::Row;

use tokio::sync::{mpsc, oneshot};

use super::{Backend, ControlDb, ControlError, ledger::BatchKey};
use crate::metrics::{Metrics, Stage};

/// Operations per transaction at most (keeps one transaction bounded). A thousand agents
/// move in waves (a flush answers hundreds of pushes at once, which come back together): a
/// group must hold a whole wave, or the wave's second half waits a whole extra commit (512
/// was measured too small at 1,000 agents, issue 16). Claims bind 9 values per row: 2,048
/// claims are 18,432 parameters, under SQLite's 32,766 and PostgreSQL's 65,535.
pub const MAX_GROUP: usize = 2048;

/// How long a claim that finds its batch `pending` under a live lease waits for it to be
/// marked `stored` before answering "busy, retry". The `stored` mark is committed just after
/// a push's answer (see [`LedgerGroup::finish_after_answer`]), so a resend sent the moment an
/// answer arrived (to this collector or, with PostgreSQL, to another) would otherwise find
/// the batch still pending and be told to wait out the whole lease.
pub const BUSY_WAIT: Duration = Duration::from_secs(1);
/// Pause between two looks at a busy batch.
const BUSY_POLL: Duration = Duration::from_millis(25);

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
        reply: FinishReply,
    },
    /// `agents.last_seen_at`; informational, nobody waits for it.
    Touch { agent_id: Arc<str>, at_ms: i64 },
    /// Answered once every operation queued before it is committed (or failed).
    Barrier { reply: oneshot::Sender<()> },
}

/// A batch's `stored` mark: which batch, by which owner, with what answer, when.
#[derive(Debug, Clone, Copy)]
pub struct StoredMark<'a> {
    pub agent_id: &'a Arc<str>,
    pub batch_seq: i64,
    pub owner: &'a str,
    pub accepted: u32,
    pub rejects: &'a super::ledger::StoredRejects,
    pub now_ms: i64,
}

/// Who learns how a finish went.
enum FinishReply {
    /// A caller waiting for it.
    Waiting(oneshot::Sender<Result<bool, Arc<sqlx::Error>>>),
    /// Nobody: the push was answered already; the task records the time from `queued` to the
    /// commit (stage `finish`) and logs a lost lease or a failure.
    AfterAnswer { queued: Instant },
}

impl Op {
    fn reply(self, result: Result<bool, Arc<sqlx::Error>>, metrics: &Metrics) {
        match self {
            Op::Claim { reply, .. }
            | Op::Finish {
                reply: FinishReply::Waiting(reply),
                ..
            } => {
                let _ = reply.send(result);
            }
            Op::Finish {
                reply: FinishReply::AfterAnswer { queued },
                agent_id,
                batch_seq,
                ..
            } => {
                metrics.stage(Stage::Finish, queued.elapsed().as_secs_f64());
                match result {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        %agent_id,
                        batch_seq,
                        "lease lost before the stored mark; the rows are stored and a new owner recovers"
                    ),
                    Err(e) => tracing::warn!(
                        %agent_id,
                        batch_seq,
                        error = %e,
                        "the stored mark failed after the answer; the batch stays pending (a resend \
                         recovers after the lease and stores nothing twice)"
                    ),
                }
            }
            Op::Barrier { reply } => {
                let _ = reply.send(());
            }
            Op::Touch { .. } => {}
        }
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
    /// Starts the task on `db`; each group's transaction time goes to `metrics` (stage
    /// `commit`).
    pub fn spawn(db: Arc<ControlDb>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task_db = db.clone();
        // Its own thread and runtime: on the shared runtime the task's every await (pool,
        // statements, commit) queued behind the wave of pushes a flush had just answered,
        // and a group's transaction took 20-50 ms of which SQLite needed 1-2 (issue 16).
        let own = std::thread::Builder::new()
            .name("ledger-group".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(task_db, metrics, rx)),
                    Err(e) => tracing::error!(error = %e, "the ledger's runtime did not start"),
                }
            });
        if let Err(e) = own {
            tracing::error!(error = %e, "the ledger's thread did not start");
        }
        Self { db, tx }
    }

    /// Records that `agent_id` was seen at `at_ms`, with the next group (callers throttle
    /// this; it is informational, so a failure is only logged with the group's).
    pub fn touch(&self, agent_id: &Arc<str>, at_ms: i64) {
        let _ = self.tx.send(Op::Touch {
            agent_id: agent_id.clone(),
            at_ms,
        });
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
        // The row exists: decide as the single-statement path does. A batch being marked
        // `stored` right now (its answer already sent) looks busy for a moment: look again
        // for up to `BUSY_WAIT` before telling the sender to retry.
        let started = Instant::now();
        loop {
            let waited = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            let decided = self
                .db
                .claim_batch(key, now_ms.saturating_add(waited), lease_ms)
                .await?;
            if !matches!(decided, super::ledger::Claim::Busy { .. })
                || started.elapsed() + BUSY_POLL > BUSY_WAIT
            {
                return Ok(decided);
            }
            tokio::time::sleep(BUSY_POLL).await;
        }
    }

    /// Queues the `stored` mark of an owned batch whose rows ClickHouse confirmed, without
    /// waiting for its commit, so the push is answered one group commit earlier (issue 16:
    /// the finish was a sixth of a push's round trip at 1,000 agents).
    ///
    /// Why every guarantee holds: the answer means "durably stored", and it is: ClickHouse
    /// confirmed the rows before this is called. The mark only tells a *resend* what
    /// happened. Until it commits, the batch is `pending` under this push's live lease, so a
    /// resend is not written again: it waits (`BUSY_WAIT`) and then sees `stored` and gets the
    /// duplicate answer, or is told to retry. If the mark is lost (a crash before the next
    /// group commits, a failed transaction), the batch stays `pending` exactly as after a
    /// crash between the insert and the old awaited finish: the agent has its OK and does not
    /// resend; if it resends anyway (the answer was lost too), the lease expires, the resend
    /// takes the batch over and the recovery finds every row in ClickHouse and stores none.
    /// Ordering: the mark is queued before the answer leaves, so any claim of the same
    /// batch through this collector is queued after it and decided after it committed.
    pub fn finish_after_answer(&self, mark: StoredMark<'_>) -> Result<(), ControlError> {
        let queued = Instant::now();
        self.queue_finish(mark, FinishReply::AfterAnswer { queued })
    }

    /// Queues a finish (see [`LedgerGroup::finish`]) answered through `reply`.
    fn queue_finish(&self, mark: StoredMark<'_>, reply: FinishReply) -> Result<(), ControlError> {
        let rejects = serde_json::to_string(mark.rejects)
            .map_err(|e| ControlError::Invalid(format!("encoding rejects: {e}")))?;
        self.tx
            .send(Op::Finish {
                agent_id: mark.agent_id.clone(),
                batch_seq: mark.batch_seq,
                owner: mark.owner.to_owned(),
                accepted: i64::from(mark.accepted),
                rejects,
                now_ms: mark.now_ms,
                reply,
            })
            .map_err(|_| stopped())
    }

    /// Waits until every operation queued before this call was committed (or failed): on
    /// shutdown, so the `stored` marks of answered pushes reach the database before it
    /// closes.
    pub async fn settled(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Op::Barrier { reply }).is_ok() {
            let _ = done.await;
        }
    }

    /// Marks an owned batch stored like [`ControlDb::finish_batch`], in a group, and waits.
    pub async fn finish(&self, mark: StoredMark<'_>) -> Result<bool, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.queue_finish(mark, FinishReply::Waiting(reply))?;
        answer.await.map_err(|_| stopped())?.map_err(grouped_error)
    }
}

async fn run(db: Arc<ControlDb>, metrics: Arc<Metrics>, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut group: Vec<Op> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let applied = apply(&db, &group).await;
        metrics.stage(Stage::Commit, started.elapsed().as_secs_f64());
        match applied {
            Ok(results) => {
                for (op, result) in group.drain(..).zip(results) {
                    op.reply(Ok(result), &metrics);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, operations = group.len(), "ledger group commit failed");
                let e = Arc::new(e);
                for op in group.drain(..) {
                    op.reply(Err(e.clone()), &metrics);
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
    if group.iter().all(|op| matches!(op, Op::Barrier { .. })) {
        return Ok(vec![true; group.len()]);
    }
    let mut tx = db.pool().begin().await?;
    let mut params = Params::new(db.backend());
    let mut written: HashSet<String> = HashSet::with_capacity(group.len());
    let claims: Vec<&Op> = group
        .iter()
        .filter(|op| matches!(op, Op::Claim { .. }))
        .collect();
    let finishes: Vec<&Op> = group
        .iter()
        .filter(|op| matches!(op, Op::Finish { .. }))
        .collect();
    let touches: Vec<&Op> = group
        .iter()
        .filter(|op| matches!(op, Op::Touch { .. }))
        .collect();
    if !claims.is_empty() {
        // Only claims above their agent's compaction floor insert (`ledger_compaction`); the
        // others fall back to the single path, which tells a compacted batch from a resend.
        let mut sql = String::from(
            "INSERT INTO ingest_batches (agent_id, batch_seq, tenant, digest, state, item_count,
                 accepted, rejects, owner, lease_until, created_at, updated_at)
             SELECT v.column1, v.column2, v.column3, v.column4, 'pending', v.column5, 0, '[]',
                 v.column6, v.column7, v.column8, v.column9
             FROM (VALUES ",
        );
        push_rows(&mut sql, &mut params, claims.len(), |p| {
            format!("({})", p.list(9))
        });
        sql.push_str(
            ") AS v
             WHERE NOT EXISTS (SELECT 1 FROM ledger_floors f
                               WHERE f.agent_id = v.column1 AND f.guard_seq >= v.column2)
             ON CONFLICT (agent_id, batch_seq) DO NOTHING RETURNING owner",
        );
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
        push_rows(&mut sql, &mut params, finishes.len(), |p| {
            format!("({})", p.list(6))
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
    if !touches.is_empty() {
        let mut sql = String::from("UPDATE agents SET last_seen_at = v.column2 FROM (VALUES ");
        push_rows(&mut sql, &mut params, touches.len(), |p| {
            format!("({})", p.list(2))
        });
        sql.push_str(") AS v WHERE agents.id = v.column1");
        let mut query = sqlx::query(&sql).persistent(false);
        for op in &touches {
            if let Op::Touch { agent_id, at_ms } = op {
                query = query.bind(&**agent_id).bind(*at_ms);
            }
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(group
        .iter()
        .map(|op| match op {
            Op::Claim { owner, .. } | Op::Finish { owner, .. } => written.contains(owner),
            Op::Touch { .. } | Op::Barrier { .. } => true,
        })
        .collect())
}

/// Placeholders of one statement, in bind order.
///
/// SQLite gets anonymous `?`s: SQLite finds a numbered `$N` by a linear search of the
/// statement's parameter names, both when parsing and when sqlx binds it, so a group of a few
/// hundred pushes (thousands of parameters) spent most of its commit in that search (issue 16:
/// 38 % of the collector's CPU at batch 10, and the ledger task busy most of the run).
/// PostgreSQL needs `$N`.
struct Params {
    backend: Backend,
    next: usize,
}

impl Params {
    fn new(backend: Backend) -> Self {
        Self { backend, next: 0 }
    }

    /// The placeholder of the next bound value.
    fn next(&mut self) -> String {
        self.next += 1;
        match self.backend {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${}", self.next),
        }
    }

    /// The next `n` placeholders, comma-separated.
    fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.next()).collect::<Vec<_>>().join(", ")
    }

    /// Starts numbering again (for the next statement).
    fn restart(&mut self) {
        self.next = 0;
    }
}

/// Appends `rows` comma-separated row tuples, each built by `row` from the next placeholders.
fn push_rows(
    sql: &mut String,
    params: &mut Params,
    rows: usize,
    mut row: impl FnMut(&mut Params) -> String,
) {
    params.restart();
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&row(params));
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

    /// A mark of one accepted item.
    fn mark<'a>(
        agent_id: &'a Arc<str>,
        batch_seq: i64,
        owner: &'a str,
        rejects: &'a StoredRejects,
        now_ms: i64,
    ) -> StoredMark<'a> {
        StoredMark {
            agent_id,
            batch_seq,
            owner,
            accepted: 1,
            rejects,
            now_ms,
        }
    }

    async fn grouped(db: Arc<ControlDb>) {
        let group = LedgerGroup::spawn(db.clone(), Arc::new(Metrics::new()));
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
        // (They look again for `BUSY_WAIT` first: the lease is then that much shorter.)
        let again = futures::future::join_all(agents.iter().map(claim)).await;
        assert!(
            again.iter().all(|c| matches!(
                c,
                Ok(Claim::Busy { lease_remaining_ms })
                    if *lease_remaining_ms <= LEASE
                        && *lease_remaining_ms >= LEASE - 2 * BUSY_WAIT.as_millis() as i64 - 1000
            )),
            "{again:?}"
        );
        // Finishes in groups; a wrong owner's finish does nothing.
        let finishes = futures::future::join_all(agents.iter().zip(&owners).map(|(a, o)| {
            let group = group.clone();
            async move {
                group
                    .finish(mark(a, 1, o, &StoredRejects::default(), now + 5))
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
                .finish(mark(
                    &agents[0],
                    1,
                    "not-the-owner",
                    &StoredRejects::default(),
                    now
                ))
                .await
                .unwrap()
        );
        // A stored mark queued after the answer: a resend through this collector is queued
        // after it and sees `stored`; through another collector (a second group on the same
        // database) it waits until the mark is committed instead of answering busy.
        fn key2(agent: &Arc<str>) -> BatchKey<'_> {
            BatchKey {
                tenant: "contoso",
                agent_id: agent,
                batch_seq: 2,
                digest: "d2",
                item_count: 3,
            }
        }
        let other = LedgerGroup::spawn(db.clone(), Arc::new(Metrics::new()));
        for (agent, via) in [(&agents[5], &group), (&agents[6], &other)] {
            let Claim::Fresh { owner } = group
                .claim(&key2(agent), agent, &tenant, now, LEASE)
                .await
                .unwrap()
            else {
                panic!("fresh claim expected");
            };
            let rejects = StoredRejects {
                total: 1,
                items: "2".into(),
                listed: vec![],
            };
            group
                .finish_after_answer(StoredMark {
                    accepted: 2,
                    ..mark(agent, 2, &owner, &rejects, now + 1)
                })
                .unwrap();
            let resend = via
                .claim(&key2(agent), agent, &tenant, now + 2, LEASE)
                .await
                .unwrap();
            assert_eq!(
                resend,
                Claim::Duplicate {
                    accepted: 2,
                    rejects
                }
            );
        }
        // A mark whose owner lost the lease changes nothing; `settled` waits for it.
        group
            .finish_after_answer(mark(
                &agents[7],
                2,
                "nobody",
                &StoredRejects::default(),
                now,
            ))
            .unwrap();
        group.settled().await;
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ingest_batches WHERE batch_seq = 2 AND state = 'pending'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(pending, 0);

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
        assert_eq!(stored, 42);

        // Last-seen times go with the next group, one UPDATE for all of them.
        let (token, _) = db.create_token("contoso", "").await.unwrap();
        let mut ids = Vec::new();
        for device in ["dev-1", "dev-2"] {
            let new = crate::control::agents::NewAgent {
                device_id: device,
                hostname: "host",
                platform: "windows",
                agent_version: "0.1.0",
            };
            let (rec, _) = db.register_agent(&token, &new).await.unwrap();
            ids.push(Arc::<str>::from(rec.id));
        }
        group.touch(&ids[0], 4_242);
        group.touch(&ids[1], 4_343);
        // A finish queued after the touches commits in the same group or a later one.
        assert!(
            !group
                .finish(mark(
                    &agents[0],
                    9,
                    "nobody",
                    &StoredRejects::default(),
                    now
                ))
                .await
                .unwrap()
        );
        let listed = db.list_agents(Some("contoso")).await.unwrap();
        let mut seen: Vec<(String, Option<i64>)> = listed
            .into_iter()
            .map(|a| (a.id, a.last_seen_at_ms))
            .collect();
        seen.sort();
        let mut expected = vec![
            (ids[0].to_string(), Some(4_242)),
            (ids[1].to_string(), Some(4_343)),
        ];
        expected.sort();
        assert_eq!(seen, expected);
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
