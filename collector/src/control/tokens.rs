//! Tenant enrollment tokens: created and revoked by an administrator, exchanged by agents for
//! a credential in `Register`.
//!
//! Revoking a token stops new registrations with it at once. Agents already registered with
//! it keep working: each holds its own credential, revoked separately with `agent revoke`
//! (so rotating a leaked token does not cut off a fleet).
//!
//! A token may carry a use cap (`max_uses`) and an expiry (`expires_at`). Each registration
//! counts one use with a single conditional `UPDATE ... SET uses = uses + 1 WHERE uses <
//! max_uses AND expires_at > now` in the transaction that inserts the agent, so concurrent
//! registrations can never exceed the cap (PostgreSQL re-checks the condition on the locked
//! row; SQLite serialises writers), and a failed insert gives the use back.

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
    /// An enrollment token past its `expires_at` (answered PERMISSION_DENIED).
    #[error("{0}")]
    Expired(String),
    /// An enrollment token whose `max_uses` registrations are all spent (PERMISSION_DENIED).
    #[error("{0}")]
    UsedUp(String),
}

impl AuthFailure {
    /// Label for the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing(_) => "missing",
            AuthFailure::Malformed(_) => "malformed",
            AuthFailure::Unknown(_) => "unknown",
            AuthFailure::Revoked(_) => "revoked",
            AuthFailure::Expired(_) => "expired",
            AuthFailure::UsedUp(_) => "used_up",
        }
    }

    /// Whether the secret was right but the token may no longer be used (expired, used up):
    /// PERMISSION_DENIED rather than UNAUTHENTICATED.
    pub fn is_exhausted(&self) -> bool {
        matches!(self, AuthFailure::Expired(_) | AuthFailure::UsedUp(_))
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
    /// Registrations allowed at most; unlimited when `None`.
    pub max_uses: Option<i64>,
    /// Registrations made with the token so far.
    pub uses: i64,
    /// When the token stops enrolling; never when `None`.
    pub expires_at_ms: Option<i64>,
}

/// Optional bounds of a new token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenLimits {
    /// Registrations allowed at most (at least 1); unlimited when `None`.
    pub max_uses: Option<u32>,
    /// When the token stops enrolling, in Unix milliseconds; never when `None`.
    pub expires_at_ms: Option<i64>,
}

const TOKEN_COLUMNS: &str =
    "id, tenant, description, created_at, revoked_at, max_uses, uses, expires_at";

fn token_from_row(r: &sqlx::any::AnyRow) -> Result<TokenRecord, sqlx::Error> {
    Ok(TokenRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        description: r.try_get("description")?,
        created_at_ms: r.try_get("created_at")?,
        revoked_at_ms: r.try_get("revoked_at")?,
        max_uses: r.try_get("max_uses")?,
        uses: r.try_get("uses")?,
        expires_at_ms: r.try_get("expires_at")?,
    })
}

impl TokenRecord {
    /// Why the token cannot enroll at `now_ms` (revoked, expired, used up), if it cannot.
    pub fn unusable_at(&self, now_ms: i64) -> Option<AuthFailure> {
        if self.revoked_at_ms.is_some() {
            return Some(AuthFailure::Revoked(format!(
                "enrollment token {} was revoked",
                self.id
            )));
        }
        if let Some(at) = self.expires_at_ms
            && at <= now_ms
        {
            return Some(AuthFailure::Expired(format!(
                "enrollment token {} expired at {}; create a new one with `fleetpulse-collector \
                 token create`",
                self.id,
                crate::validate::fmt_ts(at.div_euclid(1000))
            )));
        }
        if let Some(max) = self.max_uses
            && self.uses >= max
        {
            return Some(AuthFailure::UsedUp(format!(
                "enrollment token {} is used up ({} of {max} registrations); create a new one \
                 with `fleetpulse-collector token create`",
                self.id, self.uses
            )));
        }
        None
    }
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
    /// Creates an unbounded token for `tenant`; returns its record and the full secret token
    /// (shown once).
    pub async fn create_token(
        &self,
        tenant: &str,
        description: &str,
    ) -> Result<(TokenRecord, String), ControlError> {
        self.create_token_with(tenant, description, TokenLimits::default())
            .await
    }

    /// Creates a token for `tenant` with an optional use cap and expiry.
    pub async fn create_token_with(
        &self,
        tenant: &str,
        description: &str,
        limits: TokenLimits,
    ) -> Result<(TokenRecord, String), ControlError> {
        validate_tenant(tenant).map_err(ControlError::Invalid)?;
        if limits.max_uses == Some(0) {
            return Err(ControlError::Invalid(
                "max_uses: must be at least 1 (omit it for an unlimited token)".into(),
            ));
        }
        if description.len() > 1024 {
            return Err(ControlError::Invalid(format!(
                "description is {} bytes; at most 1024 allowed",
                description.len()
            )));
        }
        let id = secrets::new_token_id();
        let secret = secrets::new_secret();
        let created_at_ms = now_ms();
        let max_uses = limits.max_uses.map(i64::from);
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant, secret_hash, description, created_at,
                                            revoked_at, max_uses, uses, expires_at)
             VALUES ($1, $2, $3, $4, $5, NULL, $6, 0, $7)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(secrets::hash_secret(&secret))
        .bind(description)
        .bind(created_at_ms)
        .bind(max_uses)
        .bind(limits.expires_at_ms)
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
                max_uses,
                uses: 0,
                expires_at_ms: limits.expires_at_ms,
            },
            token,
        ))
    }

    /// Lists tokens, oldest first, optionally of one tenant.
    pub async fn list_tokens(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<TokenRecord>, ControlError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens
                     WHERE tenant = $1 ORDER BY created_at, id"
                ))
                .bind(t)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens ORDER BY created_at, id"
                ))
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter()
            .map(token_from_row)
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

    /// Reads one token by id (for the reason of a refused use).
    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, sqlx::Error> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    /// Checks a presented enrollment token; returns its record when valid, not revoked, not
    /// expired and not used up (registration then takes a use atomically).
    pub async fn verify_enrollment_token(&self, token: &str) -> Result<TokenRecord, AuthError> {
        let (id, secret) = secrets::parse_enrollment_token(token)
            .map_err(|e| AuthFailure::Malformed(e.to_string()))?;
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS}, secret_hash FROM enrollment_tokens WHERE id = $1"
        ))
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
        let record = token_from_row(&row)?;
        if let Some(refused) = record.unusable_at(now_ms()) {
            return Err(refused.into());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{now_ms, test_support};

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

    fn device(n: usize) -> (String, String) {
        (format!("dev-{n}"), format!("host-{n}"))
    }

    async fn register(db: &ControlDb, token: &str, n: usize) -> Result<String, AuthError> {
        let record = db.verify_enrollment_token(token).await?;
        let (device_id, hostname) = device(n);
        let agent = crate::control::agents::NewAgent {
            device_id: &device_id,
            hostname: &hostname,
            platform: "windows",
            agent_version: "test",
        };
        db.register_agent(&record, &agent).await.map(|(a, _)| a.id)
    }

    /// Use caps and expiry; two registrations racing for the last use: exactly one wins.
    async fn caps_and_expiry(db: &ControlDb) {
        let (rec, token) = db
            .create_token_with(
                "contoso",
                "rollout",
                TokenLimits {
                    max_uses: Some(3),
                    expires_at_ms: None,
                },
            )
            .await
            .unwrap();
        assert_eq!((rec.max_uses, rec.uses), (Some(3), 0));
        register(db, &token, 1).await.unwrap();
        register(db, &token, 2).await.unwrap();
        // One use left, two registrations at once (each verified the token first).
        let (a, b) = tokio::join!(register(db, &token, 3), register(db, &token, 4));
        let outcomes = [a, b];
        assert_eq!(
            outcomes.iter().filter(|r| r.is_ok()).count(),
            1,
            "{outcomes:?}"
        );
        let used_up = format!(
            "enrollment token {} is used up (3 of 3 registrations); create a new one with \
             `fleetpulse-collector token create`",
            rec.id
        );
        for r in outcomes.iter().filter(|r| r.is_err()) {
            match r {
                Err(AuthError::Failure(f @ AuthFailure::UsedUp(m))) => {
                    assert_eq!(m, &used_up);
                    assert!(f.is_exhausted());
                    assert_eq!(f.reason(), "used_up");
                }
                other => panic!("{other:?}"),
            }
        }
        match db.verify_enrollment_token(&token).await {
            Err(AuthError::Failure(AuthFailure::UsedUp(m))) => assert_eq!(m, used_up),
            other => panic!("{other:?}"),
        }
        let listed = &db.list_tokens(Some("contoso")).await.unwrap()[0];
        assert_eq!((listed.uses, listed.max_uses), (3, Some(3)));
        let agents = db.list_agents(Some("contoso")).await.unwrap();
        assert_eq!(agents.len(), 3, "the refused one left no agent behind");

        // Many at once against a cap of 5: exactly 5 agents.
        let (capped, token) = db
            .create_token_with(
                "fabrikam",
                "",
                TokenLimits {
                    max_uses: Some(5),
                    expires_at_ms: None,
                },
            )
            .await
            .unwrap();
        let results =
            futures::future::join_all((0..12).map(|n| register(db, &token, 100 + n))).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 5);
        assert_eq!(db.list_agents(Some("fabrikam")).await.unwrap().len(), 5);
        assert_eq!(db.token_by_id(&capped.id).await.unwrap().unwrap().uses, 5);

        // Expiry: a token that expired a second ago is refused naming the time.
        let (old, token) = db
            .create_token_with(
                "contoso",
                "",
                TokenLimits {
                    max_uses: None,
                    expires_at_ms: Some(now_ms() - 1000),
                },
            )
            .await
            .unwrap();
        match db.verify_enrollment_token(&token).await {
            Err(AuthError::Failure(f @ AuthFailure::Expired(_))) => {
                let m = f.to_string();
                assert!(
                    m.starts_with(&format!("enrollment token {} expired at ", old.id)),
                    "{m}"
                );
                assert_eq!(f.reason(), "expired");
            }
            other => panic!("{other:?}"),
        }
        // Expiring between verification and registration: the atomic use refuses it too.
        let (soon, token) = db
            .create_token_with(
                "contoso",
                "",
                TokenLimits {
                    max_uses: None,
                    expires_at_ms: Some(now_ms() + 300),
                },
            )
            .await
            .unwrap();
        let record = db.verify_enrollment_token(&token).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let (device_id, hostname) = device(999);
        let agent = crate::control::agents::NewAgent {
            device_id: &device_id,
            hostname: &hostname,
            platform: "windows",
            agent_version: "test",
        };
        match db.register_agent(&record, &agent).await {
            Err(AuthError::Failure(AuthFailure::Expired(m))) => {
                assert!(m.contains(&soon.id), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            db.create_token_with(
                "contoso",
                "",
                TokenLimits {
                    max_uses: Some(0),
                    expires_at_ms: None
                }
            )
            .await
            .unwrap_err()
            .to_string(),
            "max_uses: must be at least 1 (omit it for an unlimited token)"
        );
    }

    #[tokio::test]
    async fn caps_and_expiry_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        caps_and_expiry(&db).await;
    }

    #[tokio::test]
    async fn caps_and_expiry_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        caps_and_expiry(&db).await;
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
