//! The shipper: sends spooled telemetry to the collector and deletes it only on acknowledgement.
//!
//! One loop per agent ([`Shipper::run`]):
//! 1. A batch waiting for acknowledgement (from before a crash, or a retry) is resent first,
//!    byte for byte with its sequence number: the collector answers `duplicate = true` if it
//!    had stored it, so a lost ack never duplicates data.
//! 2. Otherwise a batch is cut once enough items wait (the item limit) or the oldest waited
//!    [`ShipperSettings::batch_max_age`]. Batch size respects both the configuration and the
//!    collector's advertised [`Limits`] (asked with `GetLimits`).
//! 3. Answers: OK → rejected items to the dead-letter file, batch acked. `UNAVAILABLE`,
//!    `DEADLINE_EXCEEDED`, transport errors → retry with exponential backoff and full jitter, or
//!    after the collector's `retry-after-ms` hint when it sends one ([`retry_after`]).
//!    `RESOURCE_EXHAUSTED` with a hint is a rate limit: retried after the hint, not split.
//!    `RESOURCE_EXHAUSTED` without one → the batch is split in two (new sequence numbers;
//!    nothing of it was stored) and the item cap halved. `INVALID_ARGUMENT`, `FAILED_PRECONDITION`,
//!    `PERMISSION_DENIED` → the batch goes to the dead-letter file, shipping continues.
//!    `UNAUTHENTICATED` → the credential was revoked: shipping stops with an error log, while
//!    collection continues into the (bounded) spool.
//!
//! Heartbeats ([`heartbeat_item`]) travel through the same spool and batches.

pub mod client;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetpulse_proto::v1::{
    GetLimitsRequest, Heartbeat, Limits, PushRequest, PushResponse, TelemetryItem, telemetry_item,
};
use rand::Rng;
use tokio::sync::{Notify, watch};
use tonic::Code;
use tonic::codec::CompressionEncoding;

use crate::config::{Compression, ShipperSettings};
use crate::spool::deadletter::{DeadLetter, Refused};
use crate::spool::{AppendOutcome, PendingBatch, Spool, SpoolError, SpoolStats};
use crate::state::AgentState;
use client::IngestClient;

/// Counters of one shipper, readable while it runs (progress output, tests).
#[derive(Debug, Default)]
pub struct ShipperStats {
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub items_acked: AtomicU64,
    pub duplicates: AtomicU64,
    pub items_dead_lettered: AtomicU64,
    pub retries: AtomicU64,
    /// Set when the collector refused the credential; shipping stopped.
    pub unauthenticated: AtomicBool,
    last_error: Mutex<String>,
}

impl ShipperStats {
    /// The last error hit (empty when the last operation succeeded).
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// Errors that stop the shipper.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("spool task failed: {0}")]
    Join(String),
}

/// A spool shared between collectors of data and the shipper, with a wake-up signal.
#[derive(Clone)]
pub struct SharedSpool {
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
}

impl SharedSpool {
    pub fn new(spool: Spool) -> Self {
        Self {
            spool: Arc::new(Mutex::new(spool)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Runs `f` on the spool on the blocking thread pool (spool calls fsync).
    pub async fn with<R, F>(&self, f: F) -> Result<R, ShipperError>
    where
        F: FnOnce(&mut Spool) -> R + Send + 'static,
        R: Send + 'static,
    {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = spool
                .lock()
                .map_err(|_| ShipperError::Join("spool mutex poisoned".into()))?;
            Ok(f(&mut guard))
        })
        .await
        .map_err(|e| ShipperError::Join(e.to_string()))?
    }

    /// Appends items durably (and a source cursor with them), then wakes the shipper.
    pub async fn append(
        &self,
        items: Vec<TelemetryItem>,
        cursor: Option<(String, String)>,
    ) -> Result<AppendOutcome, ShipperError> {
        let outcome = self
            .with(move |spool| {
                spool.append_with_cursor(
                    &items,
                    cursor.as_ref().map(|(s, v)| (s.as_str(), v.as_str())),
                )
            })
            .await??;
        self.wake.notify_one();
        Ok(outcome)
    }

    /// Current spool figures.
    pub async fn stats(&self) -> Result<SpoolStats, ShipperError> {
        self.with(|spool| spool.stats()).await
    }

    /// Latest committed value of a source cursor.
    pub async fn source_cursor(&self, source: &str) -> Result<Option<String>, ShipperError> {
        let source = source.to_owned();
        self.with(move |spool| spool.source_cursor(&source).map(str::to_owned))
            .await
    }
}

/// Builds a heartbeat from the spool figures.
pub fn heartbeat_item(state: &AgentState, stats: &SpoolStats, last_error: &str) -> TelemetryItem {
    TelemetryItem {
        kind: Some(telemetry_item::Kind::Heartbeat(Heartbeat {
            agent_id: state.agent_id.clone(),
            sent_at: Some(crate::sources::timestamp_ms(time::OffsetDateTime::now_utc())),
            agent_version: crate::AGENT_VERSION.to_owned(),
            spool_depth: stats.depth,
            spool_bytes: stats.bytes,
            spool_dropped_total: stats.dropped_total,
            spool_corrupt_total: stats.corrupt_total,
            last_error: crate::sources::truncate_bytes(last_error, 1024),
            device_id: state.device_id.clone(),
        })),
    }
}

/// Appends a heartbeat every `interval` until shutdown (the first one right away).
pub async fn run_heartbeats(
    spool: SharedSpool,
    state: AgentState,
    stats: Arc<ShipperStats>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let result = async {
            let spool_stats = spool.stats().await?;
            let item = heartbeat_item(&state, &spool_stats, &stats.last_error());
            spool.append(vec![item], None).await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not spool a heartbeat");
        }
    }
}

/// Full-jitter exponential backoff (AWS architecture blog's "full jitter"): the n-th retry
/// waits a uniformly random time in `[0, min(max, initial * 2^n)]`, which spreads a fleet's
/// retries after a collector outage instead of synchronising them.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, with jitter, and advances.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.gen_range(0..=millis))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The collector's retry hint: metadata `retry-after-ms` (integer milliseconds), sent with
/// UNAVAILABLE (overloaded, ClickHouse down) and RESOURCE_EXHAUSTED (a rate limit). Capped at
/// ten minutes so a bogus hint cannot park an agent for good.
pub fn retry_after(status: &tonic::Status) -> Option<Duration> {
    let ms: u64 = status
        .metadata()
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms).min(Duration::from_secs(600)))
}

/// How long to wait before retrying after `status`: the collector's hint plus up to a fifth of
/// it as jitter (so agents refused together do not return together), else the next backoff
/// delay.
pub fn retry_delay(status: &tonic::Status, backoff: &mut Backoff, rng: &mut impl Rng) -> Duration {
    match retry_after(status) {
        Some(hint) => {
            let jitter_ms = u64::try_from(hint.as_millis() / 5).unwrap_or(u64::MAX);
            hint + Duration::from_millis(rng.gen_range(0..=jitter_ms))
        }
        None => backoff.next_delay(rng),
    }
}

/// How an answer of the collector is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Retry the same batch after a backoff delay.
    Retry,
    /// Split the batch and retry the halves (RESOURCE_EXHAUSTED).
    Split,
    /// Never acceptable unchanged: dead-letter the batch and go on.
    DeadLetter,
    /// The credential is refused: stop shipping.
    Stop,
}

/// Classifies a gRPC error of `Push`. RESOURCE_EXHAUSTED *with* a `retry-after-ms` hint is a
/// rate limit (the batch is fine, the sender too fast): retried after the hint, never split.
pub fn push_disposition(status: &tonic::Status) -> Disposition {
    if status.code() == Code::ResourceExhausted && retry_after(status).is_some() {
        return Disposition::Retry;
    }
    disposition(status.code())
}

/// Classifies a gRPC error code of `Push` (without its metadata).
pub fn disposition(code: Code) -> Disposition {
    match code {
        Code::ResourceExhausted => Disposition::Split,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::OutOfRange => Disposition::DeadLetter,
        Code::Unauthenticated => Disposition::Stop,
        // UNAVAILABLE, DEADLINE_EXCEEDED, transport failures (UNKNOWN, CANCELLED, INTERNAL),
        // ABORTED, UNIMPLEMENTED (a collector being upgraded): all may pass.
        _ => Disposition::Retry,
    }
}

/// The shipping loop of one agent.
pub struct Shipper {
    spool: SharedSpool,
    client: IngestClient,
    settings: ShipperSettings,
    state: AgentState,
    state_path: Option<std::path::PathBuf>,
    stats: Arc<ShipperStats>,
    dead_letter: DeadLetter,
    limits: Option<Limits>,
    item_cap: u32,
    compress: bool,
    backoff: Backoff,
    rng: rand::rngs::StdRng,
}

impl Shipper {
    /// A shipper for `state`'s agent. `state_path` is where sequence reservations are
    /// persisted (`None` for simulated agents whose state lives elsewhere).
    pub fn new(
        spool: SharedSpool,
        dead_letter: DeadLetter,
        client: IngestClient,
        settings: ShipperSettings,
        state: AgentState,
        state_path: Option<std::path::PathBuf>,
        stats: Arc<ShipperStats>,
    ) -> Self {
        use rand::SeedableRng;
        let backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
        Self {
            spool,
            client,
            item_cap: settings.batch_max_items,
            compress: settings.compression == Compression::Gzip,
            settings,
            state,
            state_path,
            stats,
            dead_letter,
            limits: None,
            backoff,
            rng: rand::rngs::StdRng::from_entropy(),
        }
    }

    /// The shipper's counters.
    pub fn stats(&self) -> Arc<ShipperStats> {
        self.stats.clone()
    }

    fn client(&self) -> IngestClient {
        let client = self.client.clone();
        if self.compress {
            client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip)
        } else {
            client
        }
    }

    /// Ships until `shutdown` turns true; then makes one last attempt to send what is spooled
    /// (the caller bounds that with a timeout) and returns. Spooled data is durable either way.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ShipperError> {
        let mut first_waiting: Option<Instant> = None;
        loop {
            let stopping = *shutdown.borrow();
            if self.stats.unauthenticated.load(Ordering::Relaxed) {
                // Credential revoked: nothing more will be accepted. Keep the spool as is.
                let _ = shutdown.wait_for(|stop| *stop).await;
                return Ok(());
            }
            if self.limits.is_none() && !self.fetch_limits(&mut shutdown, stopping).await {
                if stopping {
                    return Ok(());
                }
                continue;
            }
            let (pending, unbatched) = self
                .spool
                .with(|spool| (spool.stats().pending_batches, spool.unbatched_items()))
                .await?;
            if pending == 0 {
                if unbatched == 0 {
                    first_waiting = None;
                    if stopping {
                        return Ok(());
                    }
                    tokio::select! {
                        _ = self.spool.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                let started = *first_waiting.get_or_insert_with(Instant::now);
                let due = started + self.settings.batch_max_age;
                if !stopping
                    && unbatched < u64::from(self.effective_items())
                    && Instant::now() < due
                {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        _ = self.spool.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
            first_waiting = None;
            let Some(batch) = self.next_batch().await? else {
                continue;
            };
            let delivered = self.deliver(batch, &mut shutdown, stopping).await?;
            if !delivered && stopping {
                return Ok(());
            }
        }
    }

    fn effective_items(&self) -> u32 {
        let limit = self.limits.as_ref().map_or(u32::MAX, |l| {
            if l.max_batch_items == 0 {
                u32::MAX
            } else {
                l.max_batch_items
            }
        });
        self.item_cap.min(limit).max(1)
    }

    fn effective_bytes(&self) -> u32 {
        let limit = self.limits.as_ref().map_or(u32::MAX, |l| {
            if l.max_batch_bytes == 0 {
                u32::MAX
            } else {
                l.max_batch_bytes
            }
        });
        self.settings.batch_max_bytes.min(limit)
    }

    async fn next_batch(&mut self) -> Result<Option<PendingBatch>, ShipperError> {
        let max_items = self.effective_items() as usize;
        let max_bytes = self.effective_bytes() as usize;
        let mut state = self.state.clone();
        let path = self.state_path.clone();
        let (batch, state) = self
            .spool
            .with(move |spool| -> Result<_, ShipperError> {
                if let Some(path) = &path {
                    // Reserve numbers before using them, so a wiped spool never reuses one.
                    state.reserve_seq(path, spool.next_batch_seq(), 2)?;
                }
                Ok((spool.next_batch(max_items, max_bytes)?, state))
            })
            .await??;
        self.state = state;
        Ok(batch)
    }

    /// Asks the collector for its limits; false if it could not (after a backoff wait).
    async fn fetch_limits(&mut self, shutdown: &mut watch::Receiver<bool>, stopping: bool) -> bool {
        let mut request = tonic::Request::new(GetLimitsRequest {});
        request.set_timeout(self.settings.request_timeout);
        match self.client().get_limits(request).await {
            Ok(limits) => {
                let limits = limits.into_inner();
                tracing::info!(
                    max_batch_items = limits.max_batch_items,
                    max_batch_bytes = limits.max_batch_bytes,
                    "collector limits"
                );
                self.limits = Some(limits);
                true
            }
            Err(status) => {
                self.handle_failure(&status, "GetLimits", shutdown, stopping)
                    .await;
                false
            }
        }
    }

    /// Handles a failed call that is not batch-specific. Returns after the backoff delay.
    async fn handle_failure(
        &mut self,
        status: &tonic::Status,
        call: &str,
        shutdown: &mut watch::Receiver<bool>,
        stopping: bool,
    ) {
        if self.compression_refused(status) {
            return;
        }
        if status.code() == Code::Unauthenticated {
            self.stop_unauthenticated(status);
            return;
        }
        self.stats.set_last_error(format!(
            "{call}: {}: {}",
            code_name(status.code()),
            status.message()
        ));
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        if stopping {
            return;
        }
        let delay = retry_delay(status, &mut self.backoff, &mut self.rng);
        tracing::warn!(
            call,
            code = code_name(status.code()),
            message = status.message(),
            retry_in_ms = delay.as_millis() as u64,
            "collector call failed; will retry"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }

    fn compression_refused(&mut self, status: &tonic::Status) -> bool {
        if self.compress
            && status.code() == Code::Unimplemented
            && status.message().to_ascii_lowercase().contains("compress")
        {
            tracing::warn!(
                message = status.message(),
                "collector does not accept gzip; sending uncompressed"
            );
            self.compress = false;
            return true;
        }
        false
    }

    fn stop_unauthenticated(&mut self, status: &tonic::Status) {
        let message = format!(
            "collector refused the agent credential (UNAUTHENTICATED: {}): the agent was probably revoked; \
             shipping stopped, collection continues into the spool; re-register the agent to resume",
            status.message()
        );
        tracing::error!(agent_id = %self.state.agent_id, "{message}");
        self.stats.set_last_error(message);
        self.stats.unauthenticated.store(true, Ordering::Relaxed);
    }

    /// Sends one pending batch and handles the answer. Returns whether it left the spool
    /// (acked, split or dead-lettered) — false means "retry later".
    async fn deliver(
        &mut self,
        batch: PendingBatch,
        shutdown: &mut watch::Receiver<bool>,
        stopping: bool,
    ) -> Result<bool, ShipperError> {
        let seq = batch.seq;
        let loaded = self.spool.with(move |spool| spool.load_batch(seq)).await?;
        let request = match loaded {
            Ok(request) => request,
            Err(err @ SpoolError::DamagedBatch { .. }) => {
                tracing::error!(seq, error = %err, "pending batch is damaged; its items are counted as corrupt");
                self.spool
                    .with(move |spool| spool.discard_damaged(seq))
                    .await??;
                return Ok(true);
            }
            Err(err) => return Err(err.into()),
        };
        let span = tracing::info_span!("push", agent_id = %self.state.agent_id, tenant = %self.state.tenant, batch_seq = seq, items = batch.items);
        let _entered = span.enter();
        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        let mut grpc_request = tonic::Request::new(request.clone());
        grpc_request.set_timeout(self.settings.request_timeout);
        let result = self.client().push(grpc_request).await;
        drop(_entered);
        match result {
            Ok(response) => {
                self.on_ack(&request, response.into_inner()).await?;
                Ok(true)
            }
            Err(status) => match push_disposition(&status) {
                _ if self.compression_refused(&status) => Ok(false),
                Disposition::Retry => {
                    self.handle_failure(&status, "Push", shutdown, stopping)
                        .await;
                    Ok(false)
                }
                Disposition::Split if batch.items > 1 => {
                    self.item_cap = (u32::try_from(batch.items / 2).unwrap_or(u32::MAX)).max(1);
                    tracing::warn!(
                        seq,
                        items = batch.items,
                        new_item_cap = self.item_cap,
                        message = status.message(),
                        "collector says the batch is too large; splitting it"
                    );
                    self.spool
                        .with(move |spool| spool.split_batch(seq))
                        .await??;
                    self.limits = None; // the limits may have changed: ask again
                    Ok(true)
                }
                Disposition::Split | Disposition::DeadLetter => {
                    self.dead_letter_batch(&request, &status).await?;
                    Ok(true)
                }
                Disposition::Stop => {
                    self.stop_unauthenticated(&status);
                    Ok(false)
                }
            },
        }
    }

    async fn on_ack(
        &mut self,
        request: &PushRequest,
        response: PushResponse,
    ) -> Result<(), ShipperError> {
        let seq = request.batch_seq;
        let rejected = rejected_items(&response);
        if !rejected.is_empty() {
            let refused: Vec<Refused<'_>> = rejected
                .iter()
                .filter_map(|&index| {
                    let item = request.items.get(index as usize)?;
                    Some(Refused {
                        index: index as usize,
                        item,
                        reason: rejection_reason(&response, index),
                    })
                })
                .collect();
            tracing::warn!(seq, rejected = refused.len(), first = %refused.first().map(|r| r.reason.as_str()).unwrap_or(""), "collector rejected items; kept in the dead-letter file");
            self.write_dead_letter(seq, &refused)?;
            self.stats
                .items_dead_lettered
                .fetch_add(refused.len() as u64, Ordering::Relaxed);
        }
        self.spool.with(move |spool| spool.ack(seq)).await??;
        let stored = (request.items.len() as u64).saturating_sub(rejected.len() as u64);
        self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
        self.stats.items_acked.fetch_add(stored, Ordering::Relaxed);
        if response.duplicate {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                seq,
                "collector had already stored this batch (resend after a lost ack)"
            );
        }
        self.stats.set_last_error(String::new());
        self.backoff.reset();
        if self.item_cap < self.settings.batch_max_items {
            // Grow back slowly after a RESOURCE_EXHAUSTED halving.
            self.item_cap =
                (self.item_cap + self.item_cap / 4 + 1).min(self.settings.batch_max_items);
        }
        Ok(())
    }

    async fn dead_letter_batch(
        &mut self,
        request: &PushRequest,
        status: &tonic::Status,
    ) -> Result<(), ShipperError> {
        let seq = request.batch_seq;
        let reason = format!("{}: {}", code_name(status.code()), status.message());
        tracing::error!(seq, items = request.items.len(), %reason, "collector refused the batch for good; kept in the dead-letter file");
        let refused: Vec<Refused<'_>> = request
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| Refused {
                index,
                item,
                reason: reason.clone(),
            })
            .collect();
        self.write_dead_letter(seq, &refused)?;
        self.stats
            .items_dead_lettered
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        self.stats.set_last_error(reason);
        self.spool.with(move |spool| spool.discard(seq)).await??;
        Ok(())
    }

    fn write_dead_letter(&self, seq: u64, refused: &[Refused<'_>]) -> Result<(), ShipperError> {
        self.dead_letter.write(seq, refused).map_err(|source| {
            ShipperError::Spool(SpoolError::Io {
                path: self.dead_letter.path().to_owned(),
                source,
            })
        })
    }
}

/// The canonical upper-case name of a gRPC code, as in the protocol documentation.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The indexes of the items a collector did not store, each once: `rejected_items` when the
/// collector sends it (its `rejected` list is capped), else the indexes of `rejected`.
fn rejected_items(response: &PushResponse) -> Vec<u32> {
    let mut items = if response.rejected_items.is_empty() {
        response.rejected.iter().map(|r| r.index).collect()
    } else {
        response.rejected_items.clone()
    };
    items.sort_unstable();
    items.dedup();
    items
}

/// The listed reasons for one item, or a note that the collector listed only the first ones.
fn rejection_reason(response: &PushResponse, index: u32) -> String {
    let reasons: Vec<String> = response
        .rejected
        .iter()
        .filter(|r| r.index == index)
        .map(|r| format!("{}: {}", r.field, r.reason))
        .collect();
    if reasons.is_empty() {
        format!(
            "rejected; the collector listed only the first {} of {} reasons",
            response.rejected.len(),
            response.rejected_total
        )
    } else {
        reasons.join("; ")
    }
}

#[cfg(test)]
mod tests;
