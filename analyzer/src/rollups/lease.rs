//! A lease in the control database that serialises ClickHouse migrations across analyzers.
//!
//! Two analyzers starting at once against one database (several analyzers share the control
//! database: API keys, alerts) would otherwise each choose a cutover and each backfill, and the
//! rollups would count history twice. The holder renews the lease while it migrates; a holder
//! that died is taken over once its lease expired. Portable SQL for SQLite and PostgreSQL.

use std::time::Duration;

use sqlx::AnyPool;

/// How long a lease lives without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often a waiting analyzer asks again.
const POLL: Duration = Duration::from_millis(500);

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    pool: AnyPool,
    name: String,
    owner: String,
    renewer: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn create_table(pool: &AnyPool) -> Result<(), sqlx::Error> {
    crate::keys::create_schema(
        pool,
        "CREATE TABLE IF NOT EXISTS analyzer_migration_leases (\
         name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms BIGINT NOT NULL)",
    )
    .await
}

/// Takes the lease `name` (e.g. the ClickHouse database), waiting while another live process
/// holds it.
pub async fn acquire(pool: &AnyPool, name: &str) -> Result<Lease, sqlx::Error> {
    create_table(pool).await?;
    let owner = uuid::Uuid::new_v4().to_string();
    let ttl_ms = TTL.as_millis() as i64;
    let mut waited = false;
    loop {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO analyzer_migration_leases (name, owner, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&owner)
        .bind(now + ttl_ms)
        .execute(pool)
        .await?
        .rows_affected();
        let taken = inserted == 1
            || sqlx::query(
                "UPDATE analyzer_migration_leases SET owner = $1, expires_ms = $2 \
                 WHERE name = $3 AND expires_ms < $4",
            )
            .bind(&owner)
            .bind(now + ttl_ms)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
                == 1;
        if taken {
            let renewer = tokio::spawn(renew(pool.clone(), name.to_owned(), owner.clone()));
            return Ok(Lease {
                pool: pool.clone(),
                name: name.to_owned(),
                owner,
                renewer,
            });
        }
        if !waited {
            tracing::info!(
                lease = name,
                "another analyzer is migrating ClickHouse; waiting for it"
            );
            waited = true;
        }
        // Polling another process's lease: there is nothing to be notified by.
        tokio::time::sleep(POLL).await;
    }
}

async fn renew(pool: AnyPool, name: String, owner: String) {
    loop {
        tokio::time::sleep(TTL / 3).await;
        let result = sqlx::query(
            "UPDATE analyzer_migration_leases SET expires_ms = $1 WHERE name = $2 AND owner = $3",
        )
        .bind(now_ms() + TTL.as_millis() as i64)
        .bind(&name)
        .bind(&owner)
        .execute(&pool)
        .await;
        if let Err(e) = result {
            tracing::warn!(lease = %name, error = %e, "renewing the migration lease failed");
        }
    }
}

impl Lease {
    /// Gives the lease back (also when the migration failed: the next holder rebuilds).
    pub async fn release(self) -> Result<(), sqlx::Error> {
        self.renewer.abort();
        sqlx::query("DELETE FROM analyzer_migration_leases WHERE name = $1 AND owner = $2")
            .bind(&self.name)
            .bind(&self.owner)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_leases_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/c.db", dir.path().display());
        let pool = crate::keys::open(&url).await.unwrap();
        let first = acquire(&pool, "fp").await.unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { acquire(&pool, "fp").await.unwrap() }
        });
        tokio::time::sleep(POLL * 3).await;
        assert!(
            !waiting.is_finished(),
            "second holder while the first holds it"
        );
        // Another name is independent.
        acquire(&pool, "other")
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        first.release().await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        // A holder that died: its lease is expired by hand, the next one takes it over.
        second.renewer.abort();
        sqlx::query("UPDATE analyzer_migration_leases SET expires_ms = 0")
            .execute(&pool)
            .await
            .unwrap();
        let third = tokio::time::timeout(Duration::from_secs(10), acquire(&pool, "fp"))
            .await
            .unwrap()
            .unwrap();
        // The dead holder's release no longer removes the new holder's lease.
        second.release().await.unwrap();
        let owners: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM analyzer_migration_leases WHERE name = 'fp' AND owner = $1",
        )
        .bind(&third.owner)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(owners, 1);
        third.release().await.unwrap();
    }
}
