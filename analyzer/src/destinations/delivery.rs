//! One delivery worker per destination, run by `serve`: it drains the destination's outbox
//! (alert notifications) in order and, for SIEM destinations taking events, pages through
//! every failed event after its cursor. Transient failures back off exponentially (1 s
//! doubling, full jitter, up to `max_backoff`) and retry forever; per-destination lag,
//! retries and failures are exported on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;
use sqlx::AnyPool;

use super::config::Destination;
use super::outbox;
use super::record::{AlertRecord, Record};
use super::transport::{SendError, Sender};
use crate::alerts::evaluator::severity_rank;
use crate::query::engine::Engine;
use crate::query::export::{self, FeedCursor};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestLabel {
    pub destination: String,
    pub kind: String,
}

/// Per-destination delivery metrics.
#[derive(Default)]
pub struct DeliveryMetrics {
    pub delivered: Family<DestLabel, Counter>,
    pub retries: Family<DestLabel, Counter>,
    pub failures: Family<DestLabel, Counter>,
    pub pending: Family<DestLabel, Gauge>,
    pub lag_seconds: Family<DestLabel, Gauge>,
}

impl DeliveryMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "fleetpulse_destination_delivered",
            "Records accepted by the destination",
            m.delivered.clone(),
        );
        registry.register(
            "fleetpulse_destination_retries",
            "Sends that failed transiently and will be retried",
            m.retries.clone(),
        );
        registry.register(
            "fleetpulse_destination_failures",
            "Sends refused for good by the destination (kept and retried at the longest backoff)",
            m.failures.clone(),
        );
        registry.register(
            "fleetpulse_destination_pending",
            "Alert notifications not yet delivered",
            m.pending.clone(),
        );
        registry.register(
            "fleetpulse_destination_lag_seconds",
            "Age of the oldest record not yet delivered (outbox or event feed)",
            m.lag_seconds.clone(),
        );
        m
    }
}

/// Backoff before attempt `attempts + 1`: 2^attempts seconds with full jitter, capped.
pub fn backoff(attempts: i64, max: Duration) -> i64 {
    let cap = max.as_secs().max(1) as f64;
    let exp = 2f64.powi(attempts.clamp(0, 30) as i32).min(cap);
    let jittered = rand::thread_rng().gen_range(exp / 2.0..=exp);
    jittered.ceil() as i64
}

/// Runs delivery for one destination until `stop` turns true.
pub struct Worker {
    pub sender: Sender,
    pub pool: AnyPool,
    pub engine: Arc<Engine>,
    pub metrics: Arc<DeliveryMetrics>,
    pub owner: String,
    /// How long a received event must settle before the feed reads it.
    pub settle_secs: u32,
    pub poll: Duration,
    /// Woken by the evaluator right after it records a notification, so that an alert leaves
    /// at once instead of at the next poll (up to `poll` later).
    pub wake: Arc<tokio::sync::Notify>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Worker {
    fn label(&self) -> DestLabel {
        DestLabel {
            destination: self.sender.dest.name.clone(),
            kind: self.sender.dest.kind_name().to_owned(),
        }
    }

    fn dest(&self) -> &Destination {
        &self.sender.dest
    }

    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut busy = false;
            if self.dest().alerts {
                match self.drain_outbox().await {
                    Ok(n) => busy |= n > 0,
                    Err(e) => {
                        tracing::warn!(destination = %self.dest().name, error = %e, "outbox delivery failed")
                    }
                }
            }
            if self.dest().events {
                match self.feed_events().await {
                    Ok(n) => busy |= n > 0,
                    Err(e) => {
                        tracing::warn!(destination = %self.dest().name, error = %e, "event feed failed")
                    }
                }
            }
            if let Ok((oldest, n)) = outbox::backlog(&self.pool, &self.dest().name).await {
                self.metrics.pending.get_or_create(&self.label()).set(n);
                if !self.dest().events {
                    self.metrics
                        .lag_seconds
                        .get_or_create(&self.label())
                        .set(oldest.map_or(0, |o| (now() - o).max(0)));
                }
            }
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    fn lease_secs(&self) -> i64 {
        self.dest().timeout.as_secs() as i64 * 3 + 10
    }

    fn takes(&self, a: &AlertRecord) -> bool {
        let d = self.dest();
        (d.tenants.is_empty() || d.tenants.contains(&a.tenant))
            && (d.categories.is_empty() || d.categories.contains(&a.category))
            && severity_rank(&a.severity) >= severity_rank(&d.min_severity)
    }

    /// Delivers due outbox records in order; returns how many were delivered.
    async fn drain_outbox(&self) -> Result<usize, crate::alerts::store::StoreError> {
        let name = self.dest().name.clone();
        let limit = if self.sender.batches() {
            self.dest().batch_size as i64
        } else {
            20
        };
        let claimed = outbox::claim(
            &self.pool,
            &name,
            &self.owner,
            now(),
            self.lease_secs(),
            limit,
        )
        .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut records = Vec::new();
        let mut skip = Vec::new();
        for c in &claimed {
            match serde_json::from_str::<serde_json::Value>(&c.payload)
                .ok()
                .and_then(|v| {
                    serde_json::from_value::<AlertRecord>(v.clone())
                        .ok()
                        .map(|a| (a, v))
                }) {
                Some((a, v)) if self.takes(&a) => records.push((c, Record::Alert(Box::new(a), v))),
                Some(_) => skip.push(c),
                None => {
                    tracing::error!(destination = %name, id = %c.id, "outbox record is not a notification; marked delivered to unblock the queue");
                    skip.push(c);
                }
            }
        }
        for c in skip {
            outbox::delivered(&self.pool, &name, &c.id, &self.owner, now()).await?;
        }
        let mut done = 0;
        let chunks: Vec<Vec<(&outbox::Claimed, Record)>> = if self.sender.batches() {
            vec![records]
        } else {
            records.into_iter().map(|r| vec![r]).collect()
        };
        for chunk in chunks {
            if chunk.is_empty() {
                continue;
            }
            let recs: Vec<Record> = chunk.iter().map(|(_, r)| r.clone()).collect();
            match self.sender.send(&recs).await {
                Ok(()) => {
                    for (c, _) in &chunk {
                        outbox::delivered(&self.pool, &name, &c.id, &self.owner, now()).await?;
                    }
                    self.metrics
                        .delivered
                        .get_or_create(&self.label())
                        .inc_by(chunk.len() as u64);
                    done += chunk.len();
                }
                Err(e) => {
                    self.count_failure(&e);
                    for (c, _) in &chunk {
                        let attempts = c.attempts + 1;
                        let wait = if e.is_permanent() {
                            self.dest().max_backoff.as_secs() as i64
                        } else {
                            backoff(c.attempts, self.dest().max_backoff)
                        };
                        outbox::failed(
                            &self.pool,
                            &name,
                            &c.id,
                            &self.owner,
                            attempts,
                            now() + wait,
                            &e.to_string(),
                        )
                        .await?;
                    }
                    // Keep the order: later records wait for this one. Release their claims.
                    for c in claimed
                        .iter()
                        .filter(|c| !chunk.iter().any(|(x, _)| x.id == c.id))
                    {
                        outbox::release(&self.pool, &name, &c.id, &self.owner).await?;
                    }
                    tracing::warn!(destination = %name, error = %e, "delivery failed; will retry");
                    return Ok(done);
                }
            }
        }
        Ok(done)
    }

    fn count_failure(&self, e: &SendError) {
        if e.is_permanent() {
            self.metrics.failures.get_or_create(&self.label()).inc();
        } else {
            self.metrics.retries.get_or_create(&self.label()).inc();
        }
    }

    /// Sends the next page of failed events after this destination's cursor.
    async fn feed_events(&self) -> Result<usize, FeedError> {
        let name = self.dest().name.clone();
        let t = now();
        let until = u32::try_from(t - i64::from(self.settle_secs)).unwrap_or(0);
        let initial = if self.dest().events_from_beginning {
            FeedCursor::default()
        } else {
            FeedCursor::at(until)
        };
        let Some(cur) = outbox::lease_cursor(
            &self.pool,
            &name,
            &self.owner,
            &initial.encode(),
            t,
            self.lease_secs(),
        )
        .await?
        else {
            return Ok(0);
        };
        let cursor = FeedCursor::decode(&cur).map_err(|e| FeedError::Cursor(e.reason))?;
        self.metrics
            .lag_seconds
            .get_or_create(&self.label())
            .set((i64::from(until) - i64::from(cursor.received_at)).max(0));
        let page = export::failed_events(
            &self.engine,
            &cursor,
            until,
            &self.dest().tenants,
            self.dest().batch_size as u64,
        )
        .await?;
        if page.events.is_empty() {
            return Ok(0);
        }
        let records: Vec<Record> = page
            .events
            .into_iter()
            .filter(|e| {
                self.dest().categories.is_empty() || self.dest().categories.contains(&e.category)
            })
            .map(|e| Record::Event(Box::new(e)))
            .collect();
        let n = records.len();
        let chunk = if self.sender.batches() {
            self.dest().batch_size
        } else {
            1
        };
        // The cursor moves only after the whole page was accepted: a failure resends the page
        // (stable ids make that deduplicable), a success never skips a row.
        let mut attempt = 0;
        for part in records.chunks(chunk.max(1)) {
            loop {
                match self.sender.send(part).await {
                    Ok(()) => break,
                    Err(e) => {
                        self.count_failure(&e);
                        attempt += 1;
                        if attempt > 3 {
                            tracing::warn!(destination = %name, error = %e, "event feed send failed; page will be resent");
                            return Ok(0);
                        }
                        tokio::time::sleep(Duration::from_secs(backoff(
                            attempt,
                            self.dest().max_backoff.min(Duration::from_secs(5)),
                        ) as u64))
                        .await;
                    }
                }
            }
        }
        outbox::advance_cursor(
            &self.pool,
            &name,
            &self.owner,
            &cur,
            &page.next.encode(),
            now(),
        )
        .await?;
        self.metrics
            .delivered
            .get_or_create(&self.label())
            .inc_by(n as u64);
        Ok(n.max(1))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Store(#[from] crate::alerts::store::StoreError),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error("stored feed cursor is corrupt: {0}")]
    Cursor(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let max = Duration::from_secs(300);
        for _ in 0..100 {
            let b = backoff(0, max);
            assert!((1..=1).contains(&b), "{b}");
            let b = backoff(4, max);
            assert!((8..=16).contains(&b), "{b}");
            let b = backoff(20, max);
            assert!((150..=300).contains(&b), "{b}");
        }
    }
}
