//! Alert state, history, silences and the notification outbox in the control database (sqlx
//! `AnyPool`: SQLite by default, PostgreSQL by URL; portable SQL, every value bound).
//!
//! Exactly-once across analyzers: an episode's id is a UUIDv5 of its key and episode number,
//! inserted with `ON CONFLICT DO NOTHING` under two unique indexes (key + episode, and one
//! open episode per key), and every later change is a compare-and-set on the row's
//! `version`. Only the writer whose insert or update took effect records the
//! notification and its outbox rows, in the same transaction, so two analyzers evaluating the
//! same data at once produce one notification.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use thiserror::Error;
use uuid::Uuid;

use super::lifecycle::{Kind, Status};
use super::model::{Alert, Detail, Matcher, Silence};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("control database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored alert {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
}

/// Namespace of alert, notification and outbox ids (UUIDv5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1e_27f0_9c3d_4b8e_a5f1_0f1e_e7a1_e27d);

/// The id of episode `episode` of `key`: the same on every analyzer.
pub fn alert_id(key: &str, episode: i64) -> String {
    Uuid::new_v5(&NAMESPACE, format!("alert|{key}|{episode}").as_bytes()).to_string()
}

/// The id of the notification written by the transition to `version` of `alert_id`.
pub fn notification_id(alert_id: &str, kind: Kind, version: i64) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("notification|{alert_id}|{}|{version}", kind.as_str()).as_bytes(),
    )
    .to_string()
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alerts (
        alert_id VARCHAR(36) PRIMARY KEY,
        alert_key TEXT NOT NULL,
        episode BIGINT NOT NULL,
        rule VARCHAR(80) NOT NULL,
        tenant VARCHAR(128) NOT NULL,
        category VARCHAR(64) NOT NULL,
        dimension VARCHAR(32) NOT NULL,
        dimension_value TEXT NOT NULL,
        status VARCHAR(16) NOT NULL,
        version BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        firing_at BIGINT,
        resolved_at BIGINT,
        recovering_since BIGINT,
        last_notified_at BIGINT,
        acknowledged_by TEXT,
        acknowledged_at BIGINT,
        updated_at BIGINT NOT NULL,
        detail TEXT NOT NULL
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_key_episode ON alerts (alert_key, episode)",
    // At most one open episode per key: an analyzer that read a stale episode number cannot
    // open a second one next to another analyzer's.
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open ON alerts (alert_key) WHERE status <> 'resolved'",
    "CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status)",
    "CREATE INDEX IF NOT EXISTS alerts_tenant_started ON alerts (tenant, started_at)",
    "CREATE TABLE IF NOT EXISTS alert_notifications (
        id VARCHAR(36) PRIMARY KEY,
        alert_id VARCHAR(36) NOT NULL,
        kind VARCHAR(16) NOT NULL,
        created_at BIGINT NOT NULL,
        silenced_by VARCHAR(36),
        payload TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS alert_notifications_alert ON alert_notifications (alert_id)",
    "CREATE TABLE IF NOT EXISTS alert_silences (
        id VARCHAR(36) PRIMARY KEY,
        tenant VARCHAR(128),
        matchers TEXT NOT NULL,
        starts_at BIGINT NOT NULL,
        ends_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS alert_rules (
        name VARCHAR(64) PRIMARY KEY,
        tenant VARCHAR(128),
        expr TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS delivery_outbox (
        destination VARCHAR(64) NOT NULL,
        id VARCHAR(36) NOT NULL,
        created_at BIGINT NOT NULL,
        payload TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        delivered_at BIGINT,
        last_error TEXT,
        lease_owner VARCHAR(64),
        lease_until BIGINT,
        PRIMARY KEY (destination, id)
    )",
    "CREATE INDEX IF NOT EXISTS delivery_outbox_due ON delivery_outbox (destination, delivered_at, next_attempt_at)",
    "CREATE TABLE IF NOT EXISTS delivery_cursors (
        destination VARCHAR(64) PRIMARY KEY,
        cursor_value TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        lease_owner VARCHAR(64),
        lease_until BIGINT
    )",
];

/// Arbitrary constant naming the schema advisory lock on PostgreSQL.
const PG_LOCK_KEY: i64 = 0x000f_1ee7_a1e7;

/// Whether `url` names PostgreSQL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
}

/// Creates the alert tables (idempotent; serialised by an advisory lock on PostgreSQL so that
/// analyzers starting together do not race on `CREATE TABLE IF NOT EXISTS`).
pub async fn migrate(pool: &AnyPool, postgres: bool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if postgres {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
            .bind(PG_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    for s in SCHEMA {
        sqlx::query(s).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

const ALERT_COLUMNS: &str = "alert_id, alert_key, episode, rule, tenant, category, dimension, \
dimension_value, status, version, started_at, firing_at, resolved_at, recovering_since, \
last_notified_at, acknowledged_by, acknowledged_at, updated_at, detail";

fn alert_from(r: &AnyRow) -> Result<Alert, StoreError> {
    let id: String = r.try_get("alert_id")?;
    let status: String = r.try_get("status")?;
    let detail: String = r.try_get("detail")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.clone(),
        reason,
    };
    Ok(Alert {
        status: Status::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?,
        detail: serde_json::from_str::<Detail>(&detail).map_err(|e| corrupt(e.to_string()))?,
        alert_key: r.try_get("alert_key")?,
        episode: r.try_get("episode")?,
        rule: r.try_get("rule")?,
        tenant: r.try_get("tenant")?,
        category: r.try_get("category")?,
        dimension: r.try_get("dimension")?,
        dimension_value: r.try_get("dimension_value")?,
        version: r.try_get("version")?,
        started_at: r.try_get("started_at")?,
        firing_at: r.try_get("firing_at")?,
        resolved_at: r.try_get("resolved_at")?,
        recovering_since: r.try_get("recovering_since")?,
        last_notified_at: r.try_get("last_notified_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        updated_at: r.try_get("updated_at")?,
        alert_id: id,
    })
}

/// A notification to record with a transition: its kind, its JSON body, the silence that
/// suppresses it (if any), and the destinations whose filters take it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub kind: Kind,
    pub id: String,
    pub payload: String,
    pub silenced_by: Option<String>,
    pub destinations: Vec<String>,
}

async fn record(
    tx: &mut Transaction<'_, Any>,
    alert_id: &str,
    n: &Outgoing,
    now: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO alert_notifications (id, alert_id, kind, created_at, silenced_by, payload) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&n.id)
    .bind(alert_id)
    .bind(n.kind.as_str())
    .bind(now)
    .bind(n.silenced_by.clone())
    .bind(&n.payload)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 || n.silenced_by.is_some() {
        return Ok(());
    }
    for d in &n.destinations {
        enqueue(tx, d, &n.id, &n.payload, now).await?;
    }
    Ok(())
}

/// Ends the transaction of an alert write: when the insert or compare-and-set touched no row
/// (another analyzer won), rolls back and returns false; else records the notification and its
/// outbox rows in the same transaction and commits. The one place that decides whether a
/// transition notifies, for both [`AlertStore::insert`] and [`AlertStore::update`].
async fn settle(
    mut tx: Transaction<'_, Any>,
    rows_affected: u64,
    alert_id: &str,
    outgoing: Option<&Outgoing>,
    now: i64,
) -> Result<bool, StoreError> {
    if rows_affected == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    if let Some(n) = outgoing {
        record(&mut tx, alert_id, n, now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Adds a record to a destination's outbox (idempotent on `(destination, id)`).
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    destination: &str,
    id: &str,
    payload: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO delivery_outbox (destination, id, created_at, payload, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (destination, id) DO NOTHING",
    )
    .bind(destination)
    .bind(id)
    .bind(now)
    .bind(payload)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Alert state and history.
#[derive(Clone)]
pub struct AlertStore {
    pool: AnyPool,
}

impl AlertStore {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Every alert not resolved.
    pub async fn open_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE status <> 'resolved'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_from).collect()
    }

    /// The highest episode number of `key` (0 when it never alerted).
    pub async fn last_episode(&self, key: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT MAX(episode) AS e FROM alerts WHERE alert_key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("e")?.unwrap_or(0))
    }

    /// Inserts a new episode; returns false (and writes nothing) when another analyzer
    /// inserted it first.
    pub async fn insert(
        &self,
        a: &Alert,
        outgoing: Option<&Outgoing>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let detail = serde_json::to_string(&a.detail).unwrap_or_else(|_| "{}".into());
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&a.alert_id)
        .bind(&a.alert_key)
        .bind(a.episode)
        .bind(&a.rule)
        .bind(&a.tenant)
        .bind(&a.category)
        .bind(&a.dimension)
        .bind(&a.dimension_value)
        .bind(a.status.as_str())
        .bind(a.version)
        .bind(a.started_at)
        .bind(a.firing_at)
        .bind(a.resolved_at)
        .bind(a.recovering_since)
        .bind(a.last_notified_at)
        .bind(a.acknowledged_by.clone())
        .bind(a.acknowledged_at)
        .bind(a.updated_at)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        settle(tx, done.rows_affected(), &a.alert_id, outgoing, now).await
    }

    /// Writes `a` if its stored version is still `a.version - 1`; returns false when another
    /// analyzer changed it first (nothing written then).
    pub async fn update(
        &self,
        a: &Alert,
        outgoing: Option<&Outgoing>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let detail = serde_json::to_string(&a.detail).unwrap_or_else(|_| "{}".into());
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE alerts SET status = $1, version = $2, firing_at = $3, resolved_at = $4, \
             recovering_since = $5, last_notified_at = $6, updated_at = $7, detail = $8 \
             WHERE alert_id = $9 AND version = $10",
        )
        .bind(a.status.as_str())
        .bind(a.version)
        .bind(a.firing_at)
        .bind(a.resolved_at)
        .bind(a.recovering_since)
        .bind(a.last_notified_at)
        .bind(a.updated_at)
        .bind(detail)
        .bind(&a.alert_id)
        .bind(a.version - 1)
        .execute(&mut *tx)
        .await?;
        settle(tx, done.rows_affected(), &a.alert_id, outgoing, now).await
    }

    /// Alerts of `tenant` (every tenant when None), newest first. `open`: Some(true) for
    /// pending/firing/no_data, Some(false) for resolved, None for all.
    pub async fn list(
        &self,
        tenant: Option<&str>,
        open: Option<bool>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1");
        match open {
            Some(true) => sql.push_str(" AND status <> 'resolved'"),
            Some(false) => sql.push_str(" AND status = 'resolved'"),
            None => {}
        }
        if tenant.is_some() {
            sql.push_str(" AND tenant = $2");
        }
        sql.push_str(" ORDER BY started_at DESC, alert_id LIMIT $1");
        let mut q = sqlx::query(&sql).bind(limit);
        if let Some(t) = tenant {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(alert_from).collect()
    }

    pub async fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(alert_from).transpose()
    }

    /// Acknowledges an open alert (stops re-notification). Returns the alert as stored after
    /// the call, or None when there is no such alert.
    pub async fn ack(&self, id: &str, by: &str, now: i64) -> Result<Option<Alert>, StoreError> {
        sqlx::query(
            "UPDATE alerts SET acknowledged_by = $1, acknowledged_at = $2, version = version + 1 \
             WHERE alert_id = $3 AND status <> 'resolved' AND acknowledged_by IS NULL",
        )
        .bind(by)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.get(id).await
    }

    /// Notifications of an alert, oldest first: (id, kind, created_at, silenced_by).
    pub async fn notifications(
        &self,
        alert_id: &str,
    ) -> Result<Vec<(String, String, i64, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, created_at, silenced_by FROM alert_notifications \
             WHERE alert_id = $1 ORDER BY created_at, id",
        )
        .bind(alert_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("kind")?,
                    r.try_get("created_at")?,
                    r.try_get("silenced_by")?,
                ))
            })
            .collect()
    }

    pub async fn create_silence(&self, s: &Silence) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alert_silences (id, tenant, matchers, starts_at, ends_at, created_by, comment, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(s.tenant().map(str::to_owned))
        .bind(serde_json::to_string(&s.matchers).unwrap_or_else(|_| "[]".into()))
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(&s.created_by)
        .bind(&s.comment)
        .bind(s.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Silences visible to `tenant` (all when None), newest first; only those still active
    /// or upcoming unless `include_expired`.
    pub async fn silences(
        &self,
        tenant: Option<&str>,
        include_expired: bool,
        now: i64,
    ) -> Result<Vec<Silence>, StoreError> {
        let mut sql = "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at \
                       FROM alert_silences WHERE (ends_at > $1 OR $2 = 1)"
            .to_owned();
        if tenant.is_some() {
            sql.push_str(" AND tenant = $3");
        }
        sql.push_str(" ORDER BY created_at DESC, id");
        let mut q = sqlx::query(&sql).bind(now).bind(i64::from(include_expired));
        if let Some(t) = tenant {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let m: String = r.try_get("matchers")?;
                let matchers: Vec<Matcher> =
                    serde_json::from_str(&m).map_err(|e| StoreError::Corrupt {
                        id: id.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Silence {
                    id,
                    matchers,
                    starts_at: r.try_get("starts_at")?,
                    ends_at: r.try_get("ends_at")?,
                    created_by: r.try_get("created_by")?,
                    comment: r.try_get("comment")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Ends a silence now (kept for history). Returns false when no such silence is visible
    /// to `tenant`.
    pub async fn expire_silence(
        &self,
        id: &str,
        tenant: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = match tenant {
            Some(t) => {
                sqlx::query(
                    "UPDATE alert_silences SET ends_at = $1 WHERE id = $2 AND tenant = $3 AND ends_at > $1",
                )
                .bind(now)
                .bind(id)
                .bind(t)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("UPDATE alert_silences SET ends_at = $1 WHERE id = $2 AND ends_at > $1")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }

    /// Records of `destination` not delivered yet.
    pub async fn outbox_pending(&self, destination: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM delivery_outbox WHERE destination = $1 AND delivered_at IS NULL",
        )
        .bind(destination)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Threshold rules created through the API: (name, tenant, expr, created_by, created_at).
    pub async fn api_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, tenant, expr, created_by, created_at FROM alert_rules ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredRule {
                    name: r.try_get("name")?,
                    tenant: r.try_get("tenant")?,
                    expr: r.try_get("expr")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Stores a rule; false when the name is taken.
    pub async fn create_rule(&self, r: &StoredRule) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO alert_rules (name, tenant, expr, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&r.name)
        .bind(r.tenant.clone())
        .bind(&r.expr)
        .bind(&r.created_by)
        .bind(r.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a rule visible to `tenant` (all when None); false when there is none.
    pub async fn delete_rule(&self, name: &str, tenant: Option<&str>) -> Result<bool, StoreError> {
        let done = match tenant {
            Some(t) => {
                sqlx::query("DELETE FROM alert_rules WHERE name = $1 AND tenant = $2")
                    .bind(name)
                    .bind(t)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM alert_rules WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }
}

/// A threshold rule created through the API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredRule {
    pub name: String,
    pub tenant: Option<String>,
    pub expr: String,
    pub created_by: String,
    pub created_at: i64,
}
