//! Registered agents and their credentials.

use std::sync::Arc;

use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{
    ControlDb, ControlError, now_ms, secrets,
    tokens::{AuthError, AuthFailure, TokenRecord},
};

/// Who is pushing, as established from the credential alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub tenant: Arc<str>,
    pub agent_id: Arc<str>,
    /// The device id the agent registered with.
    pub device_id: String,
}

/// What a device tells about itself when registering.
#[derive(Debug, Clone)]
pub struct NewAgent<'a> {
    pub device_id: &'a str,
    pub hostname: &'a str,
    pub platform: &'a str,
    pub agent_version: &'a str,
}

/// An agent as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRecord {
    pub id: String,
    pub tenant: String,
    pub device_id: String,
    pub hostname: String,
    pub platform: String,
    pub agent_version: String,
    pub token_id: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub last_seen_at_ms: Option<i64>,
}

const AGENT_COLUMNS: &str = "id, tenant, device_id, hostname, platform, agent_version, token_id, \
                             created_at, revoked_at, last_seen_at";

fn agent_from_row(r: &sqlx::any::AnyRow) -> Result<AgentRecord, sqlx::Error> {
    Ok(AgentRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        device_id: r.try_get("device_id")?,
        hostname: r.try_get("hostname")?,
        platform: r.try_get("platform")?,
        agent_version: r.try_get("agent_version")?,
        token_id: r.try_get("token_id")?,
        created_at_ms: r.try_get("created_at")?,
        revoked_at_ms: r.try_get("revoked_at")?,
        last_seen_at_ms: r.try_get("last_seen_at")?,
    })
}

impl ControlDb {
    /// Registers a new agent under the token's tenant; returns its record and the credential
    /// (shown once; only its hash is kept).
    ///
    /// Takes one use of the token in the same transaction: a conditional `UPDATE` that only
    /// matches while the token is unrevoked, unexpired and below its cap. Of two concurrent
    /// registrations with one use left exactly one matches (PostgreSQL re-evaluates the
    /// condition on the row the first one locked; SQLite runs one writer at a time); the other
    /// is refused as used up.
    pub async fn register_agent(
        &self,
        token: &TokenRecord,
        agent: &NewAgent<'_>,
    ) -> Result<(AgentRecord, String), AuthError> {
        let id = Uuid::new_v4();
        let secret = secrets::new_secret();
        let created_at_ms = now_ms();
        let record = AgentRecord {
            id: id.hyphenated().to_string(),
            tenant: token.tenant.clone(),
            device_id: agent.device_id.to_owned(),
            hostname: agent.hostname.to_owned(),
            platform: agent.platform.to_owned(),
            agent_version: agent.agent_version.to_owned(),
            token_id: token.id.clone(),
            created_at_ms,
            revoked_at_ms: None,
            last_seen_at_ms: None,
        };
        let mut tx = self.pool().begin().await?;
        let taken = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE id = $1 AND revoked_at IS NULL
               AND (max_uses IS NULL OR uses < max_uses)
               AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(&token.id)
        .bind(created_at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            tx.rollback().await?;
            let current = self.token_by_id(&token.id).await?;
            let refused = current
                .and_then(|t| t.unusable_at(created_at_ms))
                .unwrap_or_else(|| {
                    AuthFailure::Unknown("unknown or invalid enrollment token".into())
                });
            return Err(refused.into());
        }
        sqlx::query(
            "INSERT INTO agents (id, tenant, device_id, hostname, platform, agent_version,
                                 secret_hash, token_id, created_at, revoked_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)",
        )
        .bind(&record.id)
        .bind(&record.tenant)
        .bind(&record.device_id)
        .bind(&record.hostname)
        .bind(&record.platform)
        .bind(&record.agent_version)
        .bind(secrets::hash_secret(&secret))
        .bind(&record.token_id)
        .bind(created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((record, secrets::format_agent_credential(&id, &secret)))
    }

    /// Checks an agent credential (`fpa_...`) against the database, every time.
    pub async fn authenticate_agent(&self, credential: &str) -> Result<AgentIdentity, AuthError> {
        let (id, secret) = secrets::parse_agent_credential(credential)
            .map_err(|e| AuthFailure::Malformed(e.to_string()))?;
        let id = id.hyphenated().to_string();
        let row = sqlx::query(
            "SELECT tenant, device_id, secret_hash, revoked_at FROM agents WHERE id = $1",
        )
        .bind(&id)
        .fetch_optional(self.pool())
        .await?;
        let unknown = || AuthFailure::Unknown("unknown or invalid agent credential".into());
        let Some(row) = row else {
            return Err(unknown().into());
        };
        let hash: String = row.try_get("secret_hash")?;
        if !secrets::secret_matches(secret, &hash) {
            return Err(unknown().into());
        }
        let revoked: Option<i64> = row.try_get("revoked_at")?;
        if revoked.is_some() {
            return Err(AuthFailure::Revoked(format!("agent {id} was revoked")).into());
        }
        let tenant: String = row.try_get("tenant")?;
        Ok(AgentIdentity {
            tenant: tenant.into(),
            agent_id: id.into(),
            device_id: row.try_get("device_id")?,
        })
    }

    /// Records when an agent was last seen (callers throttle this; it is informational).
    pub async fn touch_agent(&self, agent_id: &str, at_ms: i64) -> Result<(), ControlError> {
        sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(agent_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Lists agents, oldest first, optionally of one tenant.
    pub async fn list_agents(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<AgentRecord>, ControlError> {
        let rows =
            match tenant {
                Some(t) => sqlx::query(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant = $1 ORDER BY created_at, id"
                ))
                .bind(t)
                .fetch_all(self.pool())
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at, id"
                    ))
                    .fetch_all(self.pool())
                    .await?
                }
            };
        rows.iter()
            .map(agent_from_row)
            .collect::<Result<_, _>>()
            .map_err(ControlError::from)
    }

    /// Revokes an agent's credential. Collectors refuse it within their credential cache's
    /// revocation delay (`credential_cache_max_delay_ms`, 2 s by default): the revocation
    /// moves the `credentials` counter in the same transaction, and every collector polls it
    /// (see `credential_cache`).
    pub async fn revoke_agent(&self, agent_id: &str) -> Result<(), ControlError> {
        let mut tx = self.pool().begin().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(ControlError::NotFound(format!(
                "no agent with id {agent_id:?}"
            )));
        }
        let revoked =
            sqlx::query("UPDATE agents SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(agent_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if revoked > 0 {
            sqlx::query(
                "INSERT INTO control_generations (name, value) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET value = control_generations.value + 1",
            )
            .bind(super::credential_cache::CREDENTIALS_GENERATION)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::test_support;

    async fn agent_lifecycle(db: &ControlDb) {
        let (token, _) = db.create_token("contoso", "").await.unwrap();
        let new = NewAgent {
            device_id: "dev-1",
            hostname: "host-1",
            platform: "windows",
            agent_version: "0.1.0",
        };
        let (rec, cred) = db.register_agent(&token, &new).await.unwrap();
        let id = db.authenticate_agent(&cred).await.unwrap();
        assert_eq!(&*id.tenant, "contoso");
        assert_eq!(&*id.agent_id, rec.id);
        assert_eq!(id.device_id, "dev-1");

        // Revoking the enrollment token does not cut off registered agents.
        db.revoke_token(&token.id).await.unwrap();
        db.authenticate_agent(&cred).await.unwrap();

        let wrong = format!(
            "{}{}",
            &cred[..cred.len() - 1],
            if cred.ends_with('0') { '1' } else { '0' }
        );
        match db.authenticate_agent(&wrong).await {
            Err(AuthError::Failure(AuthFailure::Unknown(m))) => {
                assert_eq!(m, "unknown or invalid agent credential")
            }
            other => panic!("{other:?}"),
        }
        db.touch_agent(&rec.id, 42).await.unwrap();
        let listed = db.list_agents(Some("contoso")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_seen_at_ms, Some(42));
        assert!(db.list_agents(Some("fabrikam")).await.unwrap().is_empty());

        db.revoke_agent(&rec.id).await.unwrap();
        match db.authenticate_agent(&cred).await {
            Err(AuthError::Failure(AuthFailure::Revoked(m))) => {
                assert_eq!(m, format!("agent {} was revoked", rec.id))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            db.revoke_agent("nope").await.unwrap_err().to_string(),
            "no agent with id \"nope\""
        );
    }

    #[tokio::test]
    async fn agent_lifecycle_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        agent_lifecycle(&db).await;
    }

    #[tokio::test]
    async fn agent_lifecycle_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        agent_lifecycle(&db).await;
    }
}
