//! Tenant enrollment tokens: created and revoked by an administrator, exchanged by agents for
//! a credential in `Register`.
//!
//! Revoking a token stops new registrations with it at once. Agents already registered with
//! it keep working: each holds its own credential, revoked separately with `agent revoke`
//! (so rotating a leaked token does not cut off a fleet).

use serde::Serialize;
use sqlx::Row;

use super::{ControlDb, ControlError, now_ms, secrets};

/// Why a presented token or credential was refused (answered UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Revoked(String),
}

impl AuthFailure {
    /// Label for the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing(_) => "missing",
            AuthFailure::Malformed(_) => "malformed",
            AuthFailure::Unknown(_) => "unknown",
            AuthFailure::Revoked(_) => "revoked",
        }
    }
}

/// A token or credential check either refused the caller or could not reach the database.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Failure(#[from] AuthFailure),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// An enrollment token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub tenant: String,
    pub description: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// Tenant names: 1..=64 bytes of ASCII letters, digits, `-`, `_`, `.`, starting alphanumeric.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant.as_bytes()[0].is_ascii_alphanumeric()
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {tenant:?} is invalid: use 1..=64 ASCII letters, digits, '-', '_' or '.', \
             starting with a letter or digit"
        ))
    }
}

impl ControlDb {
    /// Creates a token for `tenant`; returns its record and the full secret token (shown once).
    pub async fn create_token(
        &self,
        tenant: &str,
        description: &str,
    ) -> Result<(TokenRecord, String), ControlError> {
        validate_tenant(tenant).map_err(ControlError::Invalid)?;
        if description.len() > 1024 {
            return Err(ControlError::Invalid(format!(
                "description is {} bytes; at most 1024 allowed",
                description.len()
            )));
        }
        let id = secrets::new_token_id();
        let secret = secrets::new_secret();
        let created_at_ms = now_ms();
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant, secret_hash, description, created_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(secrets::hash_secret(&secret))
        .bind(description)
        .bind(created_at_ms)
        .execute(self.pool())
        .await?;
        let token = secrets::format_enrollment_token(&id, &secret);
        Ok((
            TokenRecord {
                id,
                tenant: tenant.to_owned(),
                description: description.to_owned(),
                created_at_ms,
                revoked_at_ms: None,
            },
            token,
        ))
    }

    /// Lists tokens, oldest first, optionally of one tenant.
    pub async fn list_tokens(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<TokenRecord>, ControlError> {
        let rows =
            match tenant {
                Some(t) => sqlx::query(
                    "SELECT id, tenant, description, created_at, revoked_at FROM enrollment_tokens
                     WHERE tenant = $1 ORDER BY created_at, id",
                )
                .bind(t)
                .fetch_all(self.pool())
                .await?,
                None => sqlx::query(
                    "SELECT id, tenant, description, created_at, revoked_at FROM enrollment_tokens
                     ORDER BY created_at, id",
                )
                .fetch_all(self.pool())
                .await?,
            };
        rows.iter()
            .map(|r| {
                Ok(TokenRecord {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    description: r.try_get("description")?,
                    created_at_ms: r.try_get("created_at")?,
                    revoked_at_ms: r.try_get("revoked_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ControlError::from)
    }

    /// Revokes a token by id. Revoking twice keeps the first revocation time.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ControlError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM enrollment_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        if exists.is_none() {
            return Err(ControlError::NotFound(format!(
                "no enrollment token with id {id:?}"
            )));
        }
        sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Checks a presented enrollment token; returns its record when valid and not revoked.
    pub async fn verify_enrollment_token(&self, token: &str) -> Result<TokenRecord, AuthError> {
        let (id, secret) = secrets::parse_enrollment_token(token)
            .map_err(|e| AuthFailure::Malformed(e.to_string()))?;
        let row = sqlx::query(
            "SELECT id, tenant, secret_hash, description, created_at, revoked_at
             FROM enrollment_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let unknown = || AuthFailure::Unknown("unknown or invalid enrollment token".into());
        let Some(row) = row else {
            return Err(unknown().into());
        };
        let hash: String = row.try_get("secret_hash")?;
        if !secrets::secret_matches(secret, &hash) {
            return Err(unknown().into());
        }
        let record = TokenRecord {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            description: row.try_get("description")?,
            created_at_ms: row.try_get("created_at")?,
            revoked_at_ms: row.try_get("revoked_at")?,
        };
        if record.revoked_at_ms.is_some() {
            return Err(AuthFailure::Revoked(format!(
                "enrollment token {} was revoked",
                record.id
            ))
            .into());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::test_support;

    #[test]
    fn tenant_names() {
        validate_tenant("contoso").unwrap();
        validate_tenant("Fabrikam-EU_1.test").unwrap();
        for bad in ["", "-x", "a b", "ümlaut", &"a".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }

    async fn token_lifecycle(db: &ControlDb) {
        let (rec, token) = db.create_token("contoso", "laptops").await.unwrap();
        assert!(token.starts_with(&format!("fpe_{}_", rec.id)));
        let verified = db.verify_enrollment_token(&token).await.unwrap();
        assert_eq!(verified, rec);

        // A wrong secret for an existing id is "unknown", never a hint.
        let forged = format!("fpe_{}_{}", rec.id, "0".repeat(64));
        match db.verify_enrollment_token(&forged).await {
            Err(AuthError::Failure(f)) => {
                assert_eq!(
                    f,
                    AuthFailure::Unknown("unknown or invalid enrollment token".into())
                )
            }
            other => panic!("{other:?}"),
        }
        match db.verify_enrollment_token("fpe_nope").await {
            Err(AuthError::Failure(AuthFailure::Malformed(m))) => assert_eq!(
                m,
                "malformed enrollment token: expected `fpe_<16 hex digits>_<64 hex digits>`"
            ),
            other => panic!("{other:?}"),
        }

        let (other, _) = db.create_token("fabrikam", "").await.unwrap();
        assert_eq!(
            db.list_tokens(Some("contoso")).await.unwrap(),
            vec![rec.clone()]
        );
        assert_eq!(db.list_tokens(None).await.unwrap().len(), 2);

        db.revoke_token(&rec.id).await.unwrap();
        match db.verify_enrollment_token(&token).await {
            Err(AuthError::Failure(AuthFailure::Revoked(m))) => {
                assert_eq!(m, format!("enrollment token {} was revoked", rec.id))
            }
            other => panic!("{other:?}"),
        }
        let listed = db.list_tokens(Some("contoso")).await.unwrap();
        assert!(listed[0].revoked_at_ms.is_some());
        assert!(
            db.list_tokens(Some("fabrikam")).await.unwrap()[0]
                .revoked_at_ms
                .is_none()
        );
        assert_eq!(
            db.revoke_token("0000000000000000")
                .await
                .unwrap_err()
                .to_string(),
            "no enrollment token with id \"0000000000000000\""
        );
        let _ = other;
    }

    #[tokio::test]
    async fn token_lifecycle_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        token_lifecycle(&db).await;
    }

    #[tokio::test]
    async fn token_lifecycle_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        token_lifecycle(&db).await;
    }
}
