//! Verified agent credentials kept in memory, with a bounded revocation delay.
//!
//! Without it every Push reads the `agents` row of its credential: one control-database round
//! trip per push, the largest fixed cost of a small batch (issue 16). With it, a credential
//! checked against the database once is accepted from memory while the cache is *fresh*.
//!
//! How revocation stays effective, also across collectors sharing PostgreSQL:
//! - Every revocation increments a counter in the database in the same transaction
//!   (`control_generations`, row `credentials`; see [`ControlDb::revoke_agent`]).
//! - A poller reads that counter every `max_delay / 4`. A different value drops every entry.
//! - Entries carry the counter value read *before* their database check, and are used only
//!   while that value is still the current one, so a check that raced a revocation cannot
//!   bring a revoked credential back.
//! - The cache is used only while the last successful poll *started* less than `max_delay`
//!   ago. A poll started after a revocation committed sees the new counter; so a revoked
//!   credential is accepted at most `max_delay` after its revocation committed, whatever the
//!   poller's luck (a database that stops answering makes the cache stale, and every request
//!   then goes to the database, which refuses or answers UNAVAILABLE).
//!
//! Only successes are cached (a wrong or unknown credential always costs a database read, as
//! before). The stored value is SHA-256 of the secret, compared in constant time, as in the
//! database. The cache holds at most `max_entries` credentials; beyond, an arbitrary entry
//! makes room (the next request of that agent reads the database again).
//!
//! Time here is the local monotonic clock: collectors' clocks need not agree for the bound.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{
    ControlDb, ControlError,
    agents::AgentIdentity,
    secrets,
    tokens::{AuthError, AuthFailure},
};

/// Name of the revocation counter row in `control_generations`.
pub const CREDENTIALS_GENERATION: &str = "credentials";

struct Entry {
    secret_sha256: [u8; 32],
    identity: AgentIdentity,
    generation: i64,
}

#[derive(Clone, Copy)]
struct Freshness {
    /// The counter as of the last successful poll; `None` before the first.
    generation: Option<i64>,
    /// When that poll started.
    polled_at: Option<Instant>,
}

/// See the module documentation.
pub struct CredentialCache {
    max_delay: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<Uuid, Entry>>,
    freshness: Mutex<Freshness>,
}

/// Counts of what the cache did, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Answered from memory.
    Hit,
    /// Checked against the database.
    Miss,
}

impl CredentialCache {
    /// A cache whose revocation delay is at most `max_delay`; `Duration::ZERO` disables it
    /// (every request reads the database).
    pub fn new(max_delay: Duration, max_entries: usize) -> Self {
        Self {
            max_delay,
            max_entries,
            entries: Mutex::new(HashMap::new()),
            freshness: Mutex::new(Freshness {
                generation: None,
                polled_at: None,
            }),
        }
    }

    /// Whether caching is on at all.
    pub fn enabled(&self) -> bool {
        !self.max_delay.is_zero() && self.max_entries > 0
    }

    /// How often [`CredentialCache::poll_forever`] reads the counter.
    pub fn poll_every(&self) -> Duration {
        (self.max_delay / 4).max(Duration::from_millis(10))
    }

    /// The counter value entries may be used under right now, or None when the cache is stale.
    fn current_generation(&self, now: Instant) -> Option<i64> {
        let f = *self
            .freshness
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (f.generation, f.polled_at) {
            (Some(g), Some(at)) if now.saturating_duration_since(at) < self.max_delay => Some(g),
            _ => None,
        }
    }

    /// Records a poll that started at `started` and read `generation`.
    pub fn observe(&self, generation: i64, started: Instant) {
        let changed = {
            let mut f = self
                .freshness
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if f.polled_at.is_some_and(|at| at > started) {
                return;
            }
            let changed = f.generation != Some(generation);
            f.generation = Some(generation);
            f.polled_at = Some(started);
            changed
        };
        if changed {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            entries.retain(|_, e| e.generation == generation);
        }
    }

    /// Checks an agent credential: from memory when a fresh entry matches, else against the
    /// database (and remembered on success).
    pub async fn authenticate(
        &self,
        db: &ControlDb,
        credential: &str,
    ) -> Result<(AgentIdentity, Lookup), AuthError> {
        if !self.enabled() {
            return Ok((db.authenticate_agent(credential).await?, Lookup::Miss));
        }
        let (id, secret) = secrets::parse_agent_credential(credential)
            .map_err(|e| AuthFailure::Malformed(e.to_string()))?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let generation = self.current_generation(Instant::now());
        if let Some(g) = generation {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = entries.get(&id)
                && e.generation == g
                && bool::from(e.secret_sha256.ct_eq(&presented))
            {
                return Ok((e.identity.clone(), Lookup::Hit));
            }
        }
        let identity = db.authenticate_agent(credential).await?;
        if let Some(g) = generation {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if entries.len() >= self.max_entries
                && !entries.contains_key(&id)
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
            entries.insert(
                id,
                Entry {
                    secret_sha256: presented,
                    identity: identity.clone(),
                    generation: g,
                },
            );
        }
        Ok((identity, Lookup::Miss))
    }

    /// Polls the revocation counter until `cancel`; failures only leave the cache to go stale.
    pub async fn poll_forever(&self, db: &ControlDb, cancel: tokio_util::sync::CancellationToken) {
        if !self.enabled() {
            return;
        }
        let mut ticker = tokio::time::interval(self.poll_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            match db.credentials_generation().await {
                Ok(g) => {
                    if failing {
                        tracing::info!("credential revocation counter readable again");
                        failing = false;
                    }
                    self.observe(g, started);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            error = %e,
                            "reading the credential revocation counter failed; credentials \
                             are checked against the database until it answers"
                        );
                        failing = true;
                    }
                }
            }
        }
    }

    /// Credentials held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ControlDb {
    /// The credential revocation counter (0 before any revocation).
    pub async fn credentials_generation(&self) -> Result<i64, ControlError> {
        let value: Option<i64> =
            sqlx::query_scalar("SELECT value FROM control_generations WHERE name = $1")
                .bind(CREDENTIALS_GENERATION)
                .fetch_optional(self.pool())
                .await?;
        Ok(value.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{agents::NewAgent, test_support};

    async fn enroll(db: &ControlDb, device: &str) -> (String, String) {
        let (token, _) = db.create_token("contoso", "").await.unwrap();
        let (rec, cred) = db
            .register_agent(
                &token,
                &NewAgent {
                    device_id: device,
                    hostname: "",
                    platform: "windows",
                    agent_version: "0",
                },
            )
            .await
            .unwrap();
        (rec.id, cred)
    }

    async fn poll_once(cache: &CredentialCache, db: &ControlDb) {
        let started = Instant::now();
        cache.observe(db.credentials_generation().await.unwrap(), started);
    }

    async fn cache_behaviour(db: &ControlDb, other: &ControlDb) {
        let cache = CredentialCache::new(Duration::from_secs(60), 2);
        let (id, cred) = enroll(db, "dev-a").await;

        // Stale (never polled): every check reads the database and nothing is kept.
        let (who, how) = cache.authenticate(db, &cred).await.unwrap();
        assert_eq!((&*who.agent_id, how), (id.as_str(), Lookup::Miss));
        assert!(cache.is_empty());

        poll_once(&cache, db).await;
        assert_eq!(cache.authenticate(db, &cred).await.unwrap().1, Lookup::Miss);
        assert_eq!(cache.authenticate(db, &cred).await.unwrap().1, Lookup::Hit);

        // A wrong secret for a cached agent is refused (and checked against the database).
        let wrong = format!(
            "{}{}",
            &cred[..cred.len() - 1],
            if cred.ends_with('0') { '1' } else { '0' }
        );
        assert!(matches!(
            cache.authenticate(db, &wrong).await,
            Err(AuthError::Failure(AuthFailure::Unknown(_)))
        ));

        // Revoked through another pool (another collector): cached until the next poll, which
        // sees the counter move and drops the entry; the database then says revoked.
        other.revoke_agent(&id).await.unwrap();
        assert_eq!(cache.authenticate(db, &cred).await.unwrap().1, Lookup::Hit);
        poll_once(&cache, db).await;
        match cache.authenticate(db, &cred).await {
            Err(AuthError::Failure(AuthFailure::Revoked(m))) => {
                assert_eq!(m, format!("agent {id} was revoked"))
            }
            other => panic!("{:?}", other.map(|(_, how)| how)),
        }

        // Bounded size: a third agent evicts one of two.
        let (_, c1) = enroll(db, "dev-b").await;
        let (_, c2) = enroll(db, "dev-c").await;
        let (_, c3) = enroll(db, "dev-d").await;
        for c in [&c1, &c2, &c3] {
            cache.authenticate(db, c).await.unwrap();
        }
        assert_eq!(cache.len(), 2);

        // An entry read under an old counter is not used under a new one, even if it was
        // inserted after the poll that moved the counter.
        cache.observe(1_000, Instant::now());
        assert_eq!(cache.len(), 0);
        let (_, how) = cache.authenticate(db, &c1).await.unwrap();
        assert_eq!(how, Lookup::Miss);
        assert_eq!(cache.authenticate(db, &c1).await.unwrap().1, Lookup::Hit);
        // An older poll's answer arriving late is ignored.
        cache.observe(5, Instant::now() - Duration::from_secs(1));
        assert_eq!(cache.authenticate(db, &c1).await.unwrap().1, Lookup::Hit);
    }

    #[tokio::test]
    async fn cached_credentials_follow_revocations_sqlite() {
        let (_dir, db) = test_support::sqlite().await;
        cache_behaviour(&db, &db).await;
    }

    #[tokio::test]
    async fn cached_credentials_follow_revocations_postgres() {
        let Some(pg) = test_support::postgres() else {
            return;
        };
        let db = test_support::connect_retrying(&pg.url).await;
        crate::control::migrations::run(&db).await.unwrap();
        let other = test_support::connect_retrying(&pg.url).await;
        cache_behaviour(&db, &other).await;
    }

    #[test]
    fn a_stale_cache_answers_nothing() {
        let cache = CredentialCache::new(Duration::from_millis(100), 10);
        let now = Instant::now();
        cache.observe(3, now);
        assert_eq!(cache.current_generation(now), Some(3));
        assert_eq!(
            cache.current_generation(now + Duration::from_millis(99)),
            Some(3)
        );
        assert_eq!(
            cache.current_generation(now + Duration::from_millis(100)),
            None
        );
        assert!(!CredentialCache::new(Duration::ZERO, 10).enabled());
    }
}
