//! Versioned control-plane migrations, applied at start and by `fleetpulse-collector migrate`.
//!
//! A tiny runner rather than `sqlx::migrate!`: the same portable DDL runs on SQLite and
//! PostgreSQL, each version is recorded in `control_schema_migrations` and applied once. All
//! pending migrations and their records run in one transaction (both databases have
//! transactional DDL), so an interrupted run leaves nothing half applied; that is what makes
//! `ALTER TABLE ... ADD COLUMN` (which SQLite cannot write as `IF NOT EXISTS`) safe. On
//! PostgreSQL an advisory lock serialises collectors starting together.

use sqlx::{Any, Transaction};

use super::{Backend, ControlDb, ControlError, now_ms};

/// One migration: a version, a name, and statements that are each idempotent.
struct Migration {
    version: i64,
    name: &'static str,
    statements: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tokens_agents_ledger",
        statements: &[
            "CREATE TABLE IF NOT EXISTS enrollment_tokens (
            id VARCHAR(32) PRIMARY KEY,
            tenant VARCHAR(64) NOT NULL,
            secret_hash VARCHAR(64) NOT NULL,
            description TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT
        )",
            "CREATE TABLE IF NOT EXISTS agents (
            id VARCHAR(36) PRIMARY KEY,
            tenant VARCHAR(64) NOT NULL,
            device_id VARCHAR(128) NOT NULL,
            hostname TEXT NOT NULL,
            platform VARCHAR(32) NOT NULL,
            agent_version VARCHAR(64) NOT NULL,
            secret_hash VARCHAR(64) NOT NULL,
            token_id VARCHAR(32) NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT,
            last_seen_at BIGINT
        )",
            "CREATE INDEX IF NOT EXISTS agents_tenant ON agents (tenant)",
            "CREATE TABLE IF NOT EXISTS ingest_batches (
            agent_id VARCHAR(36) NOT NULL,
            batch_seq BIGINT NOT NULL,
            tenant VARCHAR(64) NOT NULL,
            digest VARCHAR(64) NOT NULL,
            state VARCHAR(16) NOT NULL,
            item_count BIGINT NOT NULL,
            accepted BIGINT NOT NULL,
            rejects TEXT NOT NULL,
            owner VARCHAR(64) NOT NULL,
            lease_until BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (agent_id, batch_seq)
        )",
            "CREATE INDEX IF NOT EXISTS ingest_batches_created ON ingest_batches (created_at)",
        ],
    },
    Migration {
        version: 2,
        name: "credential_generation",
        // Counters that collectors poll to learn that something they cache changed; row
        // `credentials` moves with every agent revocation (see `credential_cache`).
        statements: &["CREATE TABLE IF NOT EXISTS control_generations (
            name VARCHAR(64) PRIMARY KEY,
            value BIGINT NOT NULL
        )"],
    },
    Migration {
        version: 3,
        name: "enrollment_token_caps",
        statements: &[
            // Registrations allowed at most (NULL: unlimited), made so far, and the expiry in
            // Unix milliseconds (NULL: never). Existing tokens stay unlimited.
            "ALTER TABLE enrollment_tokens ADD COLUMN max_uses BIGINT",
            "ALTER TABLE enrollment_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE enrollment_tokens ADD COLUMN expires_at BIGINT",
        ],
    },
    Migration {
        version: 4,
        name: "ledger_floors",
        // Per agent, the batch numbers whose ledger rows may have been compacted away
        // (`ledger_compaction`): a claim at or below `guard_seq` that finds no row is verified
        // against ClickHouse; rows at or below `deletable_seq` (a guard at least
        // `PROMOTE_AFTER` old) may be deleted once older than the ledger window.
        statements: &["CREATE TABLE IF NOT EXISTS ledger_floors (
            agent_id VARCHAR(36) PRIMARY KEY,
            guard_seq BIGINT NOT NULL,
            raised_at BIGINT NOT NULL,
            deletable_seq BIGINT NOT NULL
        )"],
    },
];

const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS control_schema_migrations (
    version BIGINT PRIMARY KEY,
    name VARCHAR(128) NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Arbitrary constant naming the migration advisory lock on PostgreSQL.
const PG_LOCK_KEY: i64 = 0x000f_1ee7_c011;

/// Applies every migration not yet recorded; returns the versions applied by this call.
pub async fn run(db: &ControlDb) -> Result<Vec<i64>, ControlError> {
    let mut tx: Transaction<'_, Any> = db.pool().begin().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
            .bind(PG_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(CREATE_VERSIONS).execute(&mut *tx).await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM control_schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        let err = |source| ControlError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        for statement in m.statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        sqlx::query(
            "INSERT INTO control_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::test_support;

    #[tokio::test]
    async fn sqlite_migrations_apply_once() {
        let (_dir, db) = test_support::sqlite().await; // `open` already ran them
        assert_eq!(
            run(&db).await.unwrap(),
            Vec::<i64>::new(),
            "second run applies nothing"
        );
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM control_schema_migrations ORDER BY version")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(versions, vec![1, 2, 3, 4]);
    }

    /// A control database of the first release (tokens without caps) upgrades in place: its
    /// tokens stay unlimited and keep enrolling.
    async fn upgrade_from_version_1(db: &ControlDb) {
        sqlx::query(CREATE_VERSIONS)
            .execute(db.pool())
            .await
            .unwrap();
        for statement in MIGRATIONS[0].statements {
            sqlx::query(statement).execute(db.pool()).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO control_schema_migrations (version, name, applied_at) VALUES (1, 'x', 0)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant, secret_hash, description, created_at,
                                            revoked_at)
             VALUES ('00000000000000aa', 'contoso', 'h', 'old', 1, NULL)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        assert_eq!(run(db).await.unwrap(), vec![2, 3, 4]);
        let old = db.token_by_id("00000000000000aa").await.unwrap().unwrap();
        assert_eq!((old.uses, old.max_uses, old.expires_at_ms), (0, None, None));
        assert!(old.unusable_at(now_ms()).is_none());
        assert_eq!(run(db).await.unwrap(), Vec::<i64>::new());
    }

    #[tokio::test]
    async fn sqlite_upgrade_from_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("v1.db").display());
        let db = ControlDb::connect(&url).await.unwrap();
        upgrade_from_version_1(&db).await;
    }

    #[tokio::test]
    async fn postgres_upgrade_from_version_1() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        upgrade_from_version_1(&db).await;
    }

    #[tokio::test]
    async fn postgres_migrations_apply_once_even_concurrently() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        let (a, b) = tokio::join!(run(&db), run(&db));
        let mut applied = [a.unwrap(), b.unwrap()];
        applied.sort();
        assert_eq!(
            applied,
            [vec![], vec![1, 2, 3, 4]],
            "exactly one run applies the migrations"
        );
        assert_eq!(run(&db).await.unwrap(), Vec::<i64>::new());
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM control_schema_migrations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(count, 4);
    }
}
