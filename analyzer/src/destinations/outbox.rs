//! The per-destination outbox (alert notifications) and feed cursors (failure events) in the
//! control database, with leases so that several analyzers deliver each record once.
//!
//! A record is delivered in creation order; a worker claims it by compare-and-set on its
//! lease, sends it, then marks it delivered. A failed send keeps it (attempts + 1, next
//! attempt after a backoff): nothing is dropped, and a restart resumes from the database.
//! The one window for a duplicate is a crash between the receiver's acceptance and the
//! `delivered` mark; every record carries its stable id for that case.

use sqlx::{AnyPool, Row};

use crate::alerts::store::StoreError;

/// An outbox row claimed by this worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub payload: String,
    pub attempts: i64,
}

/// Claims up to `limit` due records of `destination`, oldest first, stopping at the first
/// one another worker holds (order is per destination).
pub async fn claim(
    pool: &AnyPool,
    destination: &str,
    owner: &str,
    now: i64,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, payload, attempts, next_attempt_at FROM delivery_outbox \
         WHERE destination = $1 AND delivered_at IS NULL \
         ORDER BY created_at, id LIMIT $2",
    )
    .bind(destination)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let id: String = r.try_get("id")?;
        let next: i64 = r.try_get("next_attempt_at")?;
        if next > now {
            break;
        }
        let done = sqlx::query(
            "UPDATE delivery_outbox SET lease_owner = $1, lease_until = $2 \
             WHERE destination = $3 AND id = $4 AND delivered_at IS NULL \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $5)",
        )
        .bind(owner)
        .bind(now + lease_secs)
        .bind(destination)
        .bind(&id)
        .bind(now)
        .execute(pool)
        .await?;
        if done.rows_affected() == 0 {
            break;
        }
        out.push(Claimed {
            id,
            payload: r.try_get("payload")?,
            attempts: r.try_get("attempts")?,
        });
    }
    Ok(out)
}

pub async fn delivered(
    pool: &AnyPool,
    destination: &str,
    id: &str,
    owner: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE delivery_outbox SET delivered_at = $1, lease_owner = NULL, lease_until = NULL, last_error = NULL \
         WHERE destination = $2 AND id = $3 AND lease_owner = $4",
    )
    .bind(now)
    .bind(destination)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub async fn failed(
    pool: &AnyPool,
    destination: &str,
    id: &str,
    owner: &str,
    attempts: i64,
    next_attempt_at: i64,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE delivery_outbox SET attempts = $1, next_attempt_at = $2, last_error = $3, \
         lease_owner = NULL, lease_until = NULL WHERE destination = $4 AND id = $5 AND lease_owner = $6",
    )
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(error)
    .bind(destination)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives a claimed record back untouched (an earlier one failed; order is kept).
pub async fn release(
    pool: &AnyPool,
    destination: &str,
    id: &str,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE delivery_outbox SET lease_owner = NULL, lease_until = NULL \
         WHERE destination = $1 AND id = $2 AND lease_owner = $3 AND delivered_at IS NULL",
    )
    .bind(destination)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Creation time of the oldest undelivered record and the number undelivered.
pub async fn backlog(pool: &AnyPool, destination: &str) -> Result<(Option<i64>, i64), StoreError> {
    let row = sqlx::query(
        "SELECT MIN(created_at) AS oldest, COUNT(*) AS n FROM delivery_outbox \
         WHERE destination = $1 AND delivered_at IS NULL",
    )
    .bind(destination)
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("oldest")?, row.try_get("n")?))
}

/// Takes (or keeps) the feed lease of `destination`, creating its cursor at `initial` the
/// first time; returns the cursor when this worker holds the lease.
pub async fn lease_cursor(
    pool: &AnyPool,
    destination: &str,
    owner: &str,
    initial: &str,
    now: i64,
    lease_secs: i64,
) -> Result<Option<String>, StoreError> {
    sqlx::query(
        "INSERT INTO delivery_cursors (destination, cursor_value, updated_at, lease_owner, lease_until) \
         VALUES ($1, $2, $3, NULL, 0) ON CONFLICT (destination) DO NOTHING",
    )
    .bind(destination)
    .bind(initial)
    .bind(now)
    .execute(pool)
    .await?;
    let done = sqlx::query(
        "UPDATE delivery_cursors SET lease_owner = $1, lease_until = $2 WHERE destination = $3 \
         AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
    )
    .bind(owner)
    .bind(now + lease_secs)
    .bind(destination)
    .bind(now)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT cursor_value FROM delivery_cursors WHERE destination = $1")
        .bind(destination)
        .fetch_one(pool)
        .await?;
    Ok(Some(row.try_get("cursor_value")?))
}

/// Moves the cursor from `old` to `new` if this worker still holds the lease.
pub async fn advance_cursor(
    pool: &AnyPool,
    destination: &str,
    owner: &str,
    old: &str,
    new: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE delivery_cursors SET cursor_value = $1, updated_at = $2 \
         WHERE destination = $3 AND lease_owner = $4 AND cursor_value = $5",
    )
    .bind(new)
    .bind(now)
    .bind(destination)
    .bind(owner)
    .bind(old)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
