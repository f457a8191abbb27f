//! Admission control: who may register and push how much, and what the collector sheds when it
//! cannot take more. Everything here is in memory (no database round trip), so it is cheap on
//! the Push path and answers before the work it protects.
//!
//! - **Register** is rate-limited per enrollment token (by token id, before the secret is
//!   checked) and per source address (IPv6 by /64), so one leaked token or one host cannot mint
//!   credentials by the thousand; the defaults slow a 10k-device fleet enrolling at once to a
//!   few minutes, and agents retry after the hint.
//! - **Push** is rate-limited per agent and per tenant, in pushes/s (checked from the headers,
//!   before the body is read) and events/s (checked from the wire scan's item count, before
//!   decoding). A refusal is RESOURCE_EXHAUSTED with `retry-after-ms`.
//! - **Shedding**: while ClickHouse is down or the writer's queue is full a Push is refused
//!   UNAVAILABLE with `retry-after-ms` before its body is read; the bodies being read and
//!   processed at once are bounded in bytes (`max_inflight_bytes`); and once the writer's queue
//!   is half full, a tenant holding more than an equal share of it is refused, so a flooding
//!   tenant is shed before the well-behaved ones feel it.
//!
//! Nothing acknowledged is ever dropped: every refusal happens before the batch is claimed, and
//! what is refused stays in the sender's spool.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status, metadata::MetadataValue};

use super::{
    limiter::{KeyedLimiter, Rate},
    refusals::RefusalLog,
};
use crate::{
    control::agents::AgentIdentity,
    metrics::Metrics,
    store::writer::{Refusal, WriterHandle},
};

/// The admission settings (from the configuration; see `config.rs` for the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    pub register_per_token: Rate,
    pub register_per_source: Rate,
    pub agent_pushes: Rate,
    pub agent_events: Rate,
    pub tenant_pushes: Rate,
    pub tenant_events: Rate,
    /// Keys each limiter tracks at most.
    pub max_keys: usize,
    /// Push bodies (wire bytes) being read and processed at once, at most.
    pub max_inflight_bytes: usize,
    /// The writer's queue size (`max_pending_rows`), for the fair share.
    pub max_pending_rows: usize,
}

/// The key newcomers share once a limiter is full (no tenant, agent or token is empty).
fn overflow_key() -> Arc<str> {
    Arc::from("")
}

/// The shedding hints: ClickHouse down waits for the 1 s probe and a little more; a full queue
/// drains within a few flushes.
const DOWN_HINT: Duration = Duration::from_millis(2000);
const BUSY_HINT: Duration = Duration::from_millis(500);

/// A status carrying a retry hint in the message and in metadata `retry-after-ms`.
pub fn with_retry_hint(code: Code, message: &str, retry_after: Duration) -> Status {
    let ms = u64::try_from(retry_after.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut status = Status::new(code, format!("{message}; retry in {ms} ms"));
    status
        .metadata_mut()
        .insert("retry-after-ms", MetadataValue::from(ms));
    status
}

/// `base` plus up to `base` again at random, so senders refused together return apart.
fn jittered(base: Duration) -> Duration {
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
}

/// UNAVAILABLE with a retry hint for a writer refusal.
pub fn shed_status(refusal: &Refusal) -> Status {
    let hint = match refusal {
        Refusal::ClickHouseDown(_) => DOWN_HINT,
        Refusal::Overloaded { .. } | Refusal::ShuttingDown => BUSY_HINT,
    };
    with_retry_hint(Code::Unavailable, &refusal.to_string(), jittered(hint))
}

/// UNAVAILABLE with a retry hint, for other transient failures (a failed insert, a busy batch).
pub fn unavailable(message: &str, retry_after: Duration) -> Status {
    with_retry_hint(Code::Unavailable, message, jittered(retry_after))
}

/// The key of a source address: the address for IPv4, its /64 network for IPv6 (one host
/// usually owns a whole /64, so per-address keys would be free to multiply).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The admission state of one collector.
pub struct Admission {
    config: AdmissionConfig,
    register_token: Option<KeyedLimiter<Arc<str>>>,
    register_source: Option<KeyedLimiter<IpAddr>>,
    agent_pushes: Option<KeyedLimiter<Arc<str>>>,
    agent_events: Option<KeyedLimiter<Arc<str>>>,
    tenant_pushes: Option<KeyedLimiter<Arc<str>>>,
    tenant_events: Option<KeyedLimiter<Arc<str>>>,
    bodies: Arc<Semaphore>,
    /// Rows of in-flight pushes per tenant (from reservation to answer).
    tenant_rows: Mutex<HashMap<Arc<str>, usize>>,
    metrics: Arc<Metrics>,
    log: RefusalLog,
}

/// Rows a tenant holds in the writer's queue; released when the push is answered.
pub struct TenantShare<'a> {
    admission: &'a Admission,
    tenant: Arc<str>,
    rows: usize,
}

impl Drop for TenantShare<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.admission.tenant_rows.lock()
            && let Some(held) = map.get_mut(&self.tenant)
        {
            *held = held.saturating_sub(self.rows);
            if *held == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

impl Admission {
    pub fn new(config: AdmissionConfig, metrics: Arc<Metrics>) -> Self {
        let keyed = |rate: Rate, spread: bool| {
            KeyedLimiter::new(rate, config.max_keys, overflow_key(), spread)
        };
        Self {
            register_token: keyed(config.register_per_token, true),
            register_source: KeyedLimiter::new(
                config.register_per_source,
                config.max_keys,
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                true,
            ),
            agent_pushes: keyed(config.agent_pushes, false),
            agent_events: keyed(config.agent_events, false),
            tenant_pushes: keyed(config.tenant_pushes, true),
            tenant_events: keyed(config.tenant_events, true),
            bodies: Arc::new(Semaphore::new(
                config.max_inflight_bytes.min(Semaphore::MAX_PERMITS),
            )),
            tenant_rows: Mutex::new(HashMap::new()),
            config,
            metrics,
            log: RefusalLog::default(),
        }
    }

    /// Admission switched off: no rate limit, no body budget, no tenant share.
    pub fn off(metrics: Arc<Metrics>) -> Self {
        let off = Rate::new(0, 0);
        Self::new(
            AdmissionConfig {
                register_per_token: off,
                register_per_source: off,
                agent_pushes: off,
                agent_events: off,
                tenant_pushes: off,
                tenant_events: off,
                max_keys: 1,
                max_inflight_bytes: Semaphore::MAX_PERMITS,
                max_pending_rows: usize::MAX,
            },
            metrics,
        )
    }

    /// Counts, logs (rate-limited, never a secret) and answers one refusal.
    fn refuse(
        &self,
        limit: &'static str,
        code: Code,
        message: &str,
        retry_after: Duration,
    ) -> Status {
        self.metrics.limited(limit);
        if let Some(not_logged) = self.log.try_line() {
            tracing::info!(
                limit,
                message,
                retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                not_logged_since_last = not_logged,
                "request refused by admission control"
            );
        }
        with_retry_hint(code, message, retry_after)
    }

    /// Register: per token id (when the token is well-formed enough to name one) and per
    /// source address. Before the token's secret is checked, so a flood costs no database work.
    pub fn admit_register(
        &self,
        token_id: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), Status> {
        if let (Some(limiter), Some(ip)) = (&self.register_source, peer) {
            let key = source_key(ip);
            limiter.check(&key, 1).map_err(|wait| {
                self.refuse(
                    "register_source",
                    Code::ResourceExhausted,
                    &format!(
                        "too many registrations from {key} (limit {}, register_source_rate)",
                        limiter.rate().describe()
                    ),
                    wait,
                )
            })?;
        }
        if let (Some(limiter), Some(id)) = (&self.register_token, token_id) {
            limiter.check(&Arc::from(id), 1).map_err(|wait| {
                self.refuse(
                    "register_token",
                    Code::ResourceExhausted,
                    &format!(
                        "too many registrations with enrollment token {id} (limit {}, \
                         register_token_rate)",
                        limiter.rate().describe()
                    ),
                    wait,
                )
            })?;
        }
        Ok(())
    }

    /// Push, from the headers alone: pushes/s of the agent and its tenant, and shedding while
    /// ClickHouse is down or the writer's queue is full (the body is not read then).
    pub fn admit_push(&self, who: &AgentIdentity, writer: &WriterHandle) -> Result<(), Status> {
        if let Some(reason) = writer.health().down_reason() {
            self.metrics.shed("clickhouse_down");
            return Err(shed_status(&Refusal::ClickHouseDown(reason)));
        }
        let pending = writer.pending_rows();
        if pending >= self.config.max_pending_rows {
            self.metrics.shed("queue_full");
            return Err(shed_status(&Refusal::Overloaded {
                pending,
                limit: self.config.max_pending_rows,
            }));
        }
        self.check_rate(&self.agent_pushes, &who.agent_id, 1, "agent_pushes", || {
            format!("agent {} pushes too often", who.agent_id)
        })?;
        self.check_rate(&self.tenant_pushes, &who.tenant, 1, "tenant_pushes", || {
            format!("tenant {} pushes too often", who.tenant)
        })
    }

    /// Push, from the wire scan's item count: events/s of the agent and its tenant.
    pub fn admit_items(&self, who: &AgentIdentity, items: usize) -> Result<(), Status> {
        let n = u32::try_from(items).unwrap_or(u32::MAX);
        self.check_rate(&self.agent_events, &who.agent_id, n, "agent_events", || {
            format!(
                "agent {} sends too many items ({items} in this batch)",
                who.agent_id
            )
        })?;
        self.check_rate(&self.tenant_events, &who.tenant, n, "tenant_events", || {
            format!(
                "tenant {} sends too many items ({items} in this batch)",
                who.tenant
            )
        })
    }

    fn check_rate(
        &self,
        limiter: &Option<KeyedLimiter<Arc<str>>>,
        key: &Arc<str>,
        cells: u32,
        limit: &'static str,
        what: impl FnOnce() -> String,
    ) -> Result<(), Status> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check(key, cells).map_err(|wait| {
            let message = format!(
                "{} (limit {}, {limit}_rate); keep the batch and retry later",
                what(),
                limiter.rate().describe()
            );
            self.refuse(limit, Code::ResourceExhausted, &message, wait)
        })
    }

    /// Room for a body of `len` wire bytes among the bodies in flight, or UNAVAILABLE at once.
    pub fn reserve_body(&self, len: usize) -> Result<OwnedSemaphorePermit, Status> {
        let n = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
        self.bodies.clone().try_acquire_many_owned(n).map_err(|_| {
            self.metrics.shed("inflight_bytes");
            unavailable(
                &format!(
                    "the collector is reading more request bodies than max_inflight_bytes = {} \
                     allows; keep the batch",
                    self.config.max_inflight_bytes
                ),
                BUSY_HINT,
            )
        })
    }

    /// Takes `rows` of the writer's queue for the tenant. Once the queue is half full, a tenant
    /// may hold at most an equal share of it among the tenants holding rows; beyond, UNAVAILABLE.
    pub fn take_share(
        &self,
        tenant: &Arc<str>,
        rows: usize,
        writer: &WriterHandle,
    ) -> Result<TenantShare<'_>, Status> {
        let max = self.config.max_pending_rows;
        let Ok(mut map) = self.tenant_rows.lock() else {
            return Err(unavailable("admission state unavailable", BUSY_HINT));
        };
        let held = map.get(tenant).copied().unwrap_or(0);
        if writer.pending_rows().saturating_mul(2) >= max {
            let tenants = map.len() + usize::from(held == 0);
            let share = max / tenants.max(1);
            if held + rows > share && held > 0 {
                drop(map);
                self.metrics.shed("tenant_share");
                return Err(self.refuse(
                    "tenant_share",
                    Code::Unavailable,
                    &format!(
                        "the collector is busy and tenant {tenant} holds {held} of the rows \
                         waiting for ClickHouse (its share is {share} of {max} among {tenants} \
                         tenants); keep the batch"
                    ),
                    jittered(BUSY_HINT),
                ));
            }
        }
        *map.entry(tenant.clone()).or_insert(0) += rows;
        Ok(TenantShare {
            admission: self,
            tenant: tenant.clone(),
            rows,
        })
    }

    /// Live keys per limiter, for `/metrics`.
    pub fn limiter_keys(&self) -> Vec<(&'static str, usize)> {
        let mut out = Vec::new();
        let mut add = |name, keys: Option<usize>| {
            if let Some(k) = keys {
                out.push((name, k));
            }
        };
        add(
            "register_token",
            self.register_token.as_ref().map(KeyedLimiter::keys),
        );
        add(
            "register_source",
            self.register_source.as_ref().map(KeyedLimiter::keys),
        );
        add(
            "agent_pushes",
            self.agent_pushes.as_ref().map(KeyedLimiter::keys),
        );
        add(
            "agent_events",
            self.agent_events.as_ref().map(KeyedLimiter::keys),
        );
        add(
            "tenant_pushes",
            self.tenant_pushes.as_ref().map(KeyedLimiter::keys),
        );
        add(
            "tenant_events",
            self.tenant_events.as_ref().map(KeyedLimiter::keys),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_travel_in_metadata_and_message() {
        let s = with_retry_hint(
            Code::ResourceExhausted,
            "slow down",
            Duration::from_millis(1500),
        );
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(s.message(), "slow down; retry in 1500 ms");
        assert_eq!(
            s.metadata()
                .get("retry-after-ms")
                .unwrap()
                .to_str()
                .unwrap(),
            "1500"
        );
        let shed = shed_status(&Refusal::ClickHouseDown("connection refused".into()));
        assert_eq!(shed.code(), Code::Unavailable);
        let ms: u64 = shed
            .metadata()
            .get("retry-after-ms")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((2000..=4000).contains(&ms), "{ms}");
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), v4);
    }
}
