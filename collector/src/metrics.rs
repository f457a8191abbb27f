//! Prometheus metrics of the collector, served on `/metrics` in the OpenMetrics text format.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

/// Where a push's time goes (`stage_seconds{stage}`), so an operator can tell a slow control
/// database from a slow ClickHouse without a profiler. Per push: `gate` (headers in until the
/// decoded request reaches the handler), `push` (decoded request to answer, claim, queue and
/// write included), `claim` (ledger claim), `queue` (rows handed to the writer until their
/// flush starts), `write` (handed over until ClickHouse confirmed), `finish` (ledger finish:
/// queued before the answer, committed after it; queued until committed). Per flush:
/// `lookup` (duplicate lookups), `insert` (the inserts). Per ledger group commit: `commit`
/// (its transaction).
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    Push,
    Claim,
    Queue,
    Write,
    Finish,
    Lookup,
    Insert,
    Commit,
    Gate,
}

impl Stage {
    const ALL: [Stage; 9] = [
        Stage::Push,
        Stage::Claim,
        Stage::Queue,
        Stage::Write,
        Stage::Finish,
        Stage::Lookup,
        Stage::Insert,
        Stage::Commit,
        Stage::Gate,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Push => "push",
            Stage::Claim => "claim",
            Stage::Queue => "queue",
            Stage::Write => "write",
            Stage::Finish => "finish",
            Stage::Lookup => "lookup",
            Stage::Insert => "insert",
            Stage::Commit => "commit",
            Stage::Gate => "gate",
        }
    }
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    pub batches_received: Counter,
    pub batches_accepted: Counter,
    pub batches_duplicate: Counter,
    /// Pushes whose ledger row may have been compacted away, verified against ClickHouse.
    pub batches_recovered_compacted: Counter,
    /// Pushes refused as a whole, by gRPC status (invalid_argument, unavailable, ...).
    pub batches_rejected: Family<ReasonLabel, Counter>,
    pub items_received: Family<KindLabel, Counter>,
    pub items_accepted: Family<KindLabel, Counter>,
    /// Items rejected individually, by kind and reason (the offending field's name).
    pub items_rejected: Family<ItemLabels, Counter>,
    pub flush_rows: Histogram,
    pub flush_seconds: Histogram,
    pub clickhouse_errors: Counter,
    pub pending_rows: Gauge,
    pub auth_failures: Family<ReasonLabel, Counter>,
    pub registrations: Counter,
    /// Copies of already stored (or concurrently stored) events dropped before insert.
    pub events_deduplicated: Counter,
    /// Accepted agent credentials, by where they were checked (`cache` or `database`).
    pub credential_checks: Family<SourceLabel, Counter>,
    /// Open gRPC connections (set from the listener's cap when scraped).
    pub grpc_connections_open: Gauge,
    /// Requests refused by a rate limit or the fair share, by limit.
    pub rate_limited: Family<LimitLabel, Counter>,
    /// Pushes shed (UNAVAILABLE before their rows were queued), by reason.
    pub shed: Family<ReasonLabel, Counter>,
    /// Seconds per stage of a push or a flush (see [`Stage`]); one histogram per stage,
    /// created up front so observing takes no lock.
    stages: [Histogram; 9],
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetpulse_collector");
        let family: Family<StageLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        // The fields share state with the family's entries (a histogram is a shared handle).
        let stages = Stage::ALL.map(|stage| {
            family
                .get_or_create(&StageLabel {
                    stage: stage.name(),
                })
                .clone()
        });
        let m = Self {
            batches_received: Counter::default(),
            batches_accepted: Counter::default(),
            batches_duplicate: Counter::default(),
            batches_recovered_compacted: Counter::default(),
            batches_rejected: Family::default(),
            items_received: Family::default(),
            items_accepted: Family::default(),
            items_rejected: Family::default(),
            flush_rows: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            clickhouse_errors: Counter::default(),
            pending_rows: Gauge::default(),
            auth_failures: Family::default(),
            registrations: Counter::default(),
            events_deduplicated: Counter::default(),
            credential_checks: Family::default(),
            grpc_connections_open: Gauge::default(),
            rate_limited: Family::default(),
            shed: Family::default(),
            stages,
            registry: Registry::default(),
        };
        registry.register(
            "stage_seconds",
            "Seconds spent per stage: per push push (decoded request to answer, the stages \
             below included), claim (ledger claim), queue (rows handed to the \
             writer until their flush starts), write (handed over until ClickHouse confirmed), \
             finish (ledger finish, queued before the answer and committed after it: queued \
             until committed); gate (headers in until the decoded request reaches the \
             handler: credential, body read, inflate, scan, decode); per flush lookup \
             (duplicate lookups) and insert; per ledger group commit (claims, finishes and \
             last-seen times of concurrent pushes)",
            family,
        );
        registry.register(
            "grpc_connections_open",
            "Open gRPC (agent) connections",
            m.grpc_connections_open.clone(),
        );
        registry.register(
            "credential_checks",
            "Accepted agent credentials, by where they were checked (cache or database)",
            m.credential_checks.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by admission control (RESOURCE_EXHAUSTED, or UNAVAILABLE for the \
             tenant share), by limit: register_token, register_source, agent_pushes, \
             agent_events, tenant_pushes, tenant_events, tenant_share",
            m.rate_limited.clone(),
        );
        registry.register(
            "shed",
            "Pushes refused UNAVAILABLE before their rows were queued, by reason: \
             clickhouse_down, queue_full, inflight_bytes, tenant_share",
            m.shed.clone(),
        );
        registry.register(
            "events_deduplicated",
            "Copies of events already stored (same tenant and event id) dropped before insert",
            m.events_deduplicated.clone(),
        );
        registry.register(
            "batches_received",
            "Push requests received",
            m.batches_received.clone(),
        );
        registry.register(
            "batches_accepted",
            "Push requests answered OK with their rows newly stored",
            m.batches_accepted.clone(),
        );
        registry.register(
            "batches_duplicate",
            "Push requests answered OK as duplicates of a stored batch",
            m.batches_duplicate.clone(),
        );
        registry.register(
            "batches_recovered_compacted",
            "Push requests of a batch number under its agent's ledger compaction floor, \
             verified against ClickHouse before writing (late resends)",
            m.batches_recovered_compacted.clone(),
        );
        registry.register(
            "batches_rejected",
            "Push requests refused as a whole, by gRPC status",
            m.batches_rejected.clone(),
        );
        registry.register(
            "items_received",
            "Items received, by kind",
            m.items_received.clone(),
        );
        registry.register(
            "items_accepted",
            "Items durably stored, by kind",
            m.items_accepted.clone(),
        );
        registry.register(
            "items_rejected",
            "Items rejected by validation, by kind and offending field",
            m.items_rejected.clone(),
        );
        registry.register(
            "flush_rows",
            "Rows per ClickHouse flush",
            m.flush_rows.clone(),
        );
        registry.register(
            "flush_seconds",
            "Duration of successful ClickHouse flushes",
            m.flush_seconds.clone(),
        );
        registry.register(
            "clickhouse_errors",
            "Failed ClickHouse flushes",
            m.clickhouse_errors.clone(),
        );
        registry.register(
            "pending_rows",
            "Rows handed to the writer and not yet confirmed",
            m.pending_rows.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused credentials and enrollment tokens, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "registrations",
            "Agents registered",
            m.registrations.clone(),
        );
        Self { registry, ..m }
    }

    /// Records `seconds` spent in `stage`.
    pub fn stage(&self, stage: Stage, seconds: f64) {
        self.stages[stage as usize].observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn batch_rejected(&self, reason: &str) {
        self.batches_rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn limited(&self, limit: &str) {
        self.rate_limited
            .get_or_create(&LimitLabel {
                limit: limit.to_owned(),
            })
            .inc();
    }

    pub fn shed(&self, reason: &str) {
        self.shed
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn items(&self, family: &Family<KindLabel, Counter>, kind: &str, n: u64) {
        if n > 0 {
            family
                .get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                })
                .inc_by(n);
        }
    }

    pub fn item_rejected(&self, kind: &str, reason: &str) {
        self.items_rejected
            .get_or_create(&ItemLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_and_labels() {
        let m = Metrics::new();
        m.batches_received.inc();
        m.batch_rejected("invalid_argument");
        m.item_rejected("event", "occurred_at");
        m.pending_rows.inc_by(5);
        let text = m.render();
        assert!(
            text.contains("fleetpulse_collector_batches_received_total 1"),
            "{text}"
        );
        assert!(text.contains(
            "fleetpulse_collector_batches_rejected_total{reason=\"invalid_argument\"} 1"
        ));
        assert!(text.contains(
            "fleetpulse_collector_items_rejected_total{kind=\"event\",reason=\"occurred_at\"} 1"
        ));
        assert!(text.contains("fleetpulse_collector_pending_rows 5"));
        assert!(text.contains("fleetpulse_collector_flush_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }
}
