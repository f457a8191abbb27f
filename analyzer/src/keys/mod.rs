//! API keys: `fpk_<id>_<secret>`, created by the CLI and shown once. Only the SHA-256 of the
//! 32-byte random secret is stored (sqlx, SQLite by default or PostgreSQL), and verification
//! compares hashes in constant time. A key is scoped to one tenant or to all tenants.

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::Row;
use subtle::ConstantTimeEq;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("control database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("invalid tenant {0:?}: must be 1 to 128 bytes")]
    InvalidTenant(String),
    #[error("no API key with id {0}")]
    NotFound(String),
}

/// Who a verified key lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub key_id: String,
    /// None for an all-tenants key.
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: Option<String>,
    pub description: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Why a presented credential was refused (all map to 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Unknown,
    Revoked,
}

/// Opens the control database (creating a SQLite file when missing) and its schema.
pub async fn open(url: &str) -> Result<AnyPool, KeyError> {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite:") && !url.contains('?') && !url.contains(":memory:") {
        format!("{url}?mode=rwc")
    } else {
        url.to_owned()
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(5)
        .connect(&url)
        .await?;
    create_schema(
        &pool,
        "CREATE TABLE IF NOT EXISTS analyzer_api_keys (\
         id TEXT PRIMARY KEY, tenant TEXT, secret_sha256 TEXT NOT NULL, description TEXT NOT NULL, \
         created_at TEXT NOT NULL, revoked_at TEXT)",
    )
    .await?;
    Ok(pool)
}

/// Runs an idempotent `CREATE .. IF NOT EXISTS`. PostgreSQL's `IF NOT EXISTS` is not safe
/// against a concurrent creator (two analyzers starting at once: one of them fails with a
/// unique violation on the catalog, `duplicate_table`, or `duplicate_object` for the table's
/// row type: "type .. already exists"); the statement is then simply run again, and finds the
/// object the other process created.
pub async fn create_schema(pool: &AnyPool, sql: &str) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match sqlx::query(sql).execute(pool).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e))
                if attempt < 5
                    && matches!(e.code().as_deref(), Some("23505" | "42P07" | "42710")) =>
            {
                attempt += 1;
                // The concurrent creator's transaction is about to commit.
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates a key and returns the full token (the only time the secret exists in clear).
pub async fn create(
    pool: &AnyPool,
    tenant: Option<&str>,
    description: &str,
) -> Result<(KeyInfo, String), KeyError> {
    if let Some(t) = tenant
        && (t.is_empty() || t.len() > 128)
    {
        return Err(KeyError::InvalidTenant(t.to_owned()));
    }
    let mut id_bytes = [0u8; 8];
    let mut secret_bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id_bytes);
    rand::rngs::OsRng.fill_bytes(&mut secret_bytes);
    let id = hex::encode(id_bytes);
    let secret = hex::encode(secret_bytes);
    let created_at = now();
    sqlx::query(
        "INSERT INTO analyzer_api_keys (id, tenant, secret_sha256, description, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(&id)
    .bind(tenant.map(str::to_owned))
    .bind(sha256_hex(&secret))
    .bind(description)
    .bind(&created_at)
    .execute(pool)
    .await?;
    let token = format!("fpk_{id}_{secret}");
    Ok((
        KeyInfo {
            id,
            tenant: tenant.map(str::to_owned),
            description: description.to_owned(),
            created_at,
            revoked_at: None,
        },
        token,
    ))
}

pub async fn list(pool: &AnyPool) -> Result<Vec<KeyInfo>, KeyError> {
    let rows = sqlx::query(
        "SELECT id, tenant, description, created_at, revoked_at FROM analyzer_api_keys ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(KeyInfo {
                id: r.try_get("id")?,
                tenant: r.try_get("tenant")?,
                description: r.try_get("description")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
}

pub async fn revoke(pool: &AnyPool, id: &str) -> Result<(), KeyError> {
    let done = sqlx::query(
        "UPDATE analyzer_api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(id)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        let exists = sqlx::query("SELECT id FROM analyzer_api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        if exists.is_none() {
            return Err(KeyError::NotFound(id.to_owned()));
        }
    }
    Ok(())
}

/// Splits `fpk_<id>_<secret>`.
fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("fpk_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    (hexish(id, 16) && hexish(secret, 64)).then_some((id, secret))
}

/// Verifies a bearer token.
pub async fn verify(pool: &AnyPool, token: &str) -> Result<Result<KeyScope, Rejection>, KeyError> {
    let Some((id, secret)) = parse(token) else {
        return Ok(Err(Rejection::Malformed));
    };
    let row = sqlx::query(
        "SELECT tenant, secret_sha256, revoked_at FROM analyzer_api_keys WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Err(Rejection::Unknown));
    };
    let stored: String = row.try_get("secret_sha256")?;
    let presented = sha256_hex(secret);
    if !bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
        return Ok(Err(Rejection::Unknown));
    }
    let revoked: Option<String> = row.try_get("revoked_at")?;
    if revoked.is_some() {
        return Ok(Err(Rejection::Revoked));
    }
    Ok(Ok(KeyScope {
        key_id: id.to_owned(),
        tenant: row.try_get("tenant")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_verify_revoke_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let pool = open(&url).await.unwrap();
        let (info, token) = create(&pool, Some("contoso"), "ci").await.unwrap();
        assert!(token.starts_with(&format!("fpk_{}_", info.id)));
        assert_eq!(
            verify(&pool, &token).await.unwrap(),
            Ok(KeyScope {
                key_id: info.id.clone(),
                tenant: Some("contoso".into())
            })
        );
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            verify(&pool, &wrong).await.unwrap(),
            Err(Rejection::Unknown)
        );
        assert_eq!(
            verify(&pool, "fpk_x").await.unwrap(),
            Err(Rejection::Malformed)
        );
        let (all, all_token) = create(&pool, None, "").await.unwrap();
        assert_eq!(
            verify(&pool, &all_token).await.unwrap(),
            Ok(KeyScope {
                key_id: all.id,
                tenant: None
            })
        );
        revoke(&pool, &info.id).await.unwrap();
        assert_eq!(
            verify(&pool, &token).await.unwrap(),
            Err(Rejection::Revoked)
        );
        assert!(matches!(
            revoke(&pool, "0000000000000000").await,
            Err(KeyError::NotFound(_))
        ));
        let listed = list(&pool).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|k| k.revoked_at.is_some()));
    }
}
