//! The single ClickHouse writer: coalesces the rows of many concurrent pushes into large
//! inserts and tells each push whether its rows were confirmed.
//!
//! One background task owns all inserts. A push reserves room for its rows first
//! (`try_reserve`, a semaphore of `max_pending_rows` permits): when the room is gone, or while
//! ClickHouse is known to be down (the last flush failed and no probe has succeeded since), the
//! push is refused at once with UNAVAILABLE and the agent keeps its batch. Memory is therefore
//! bounded by `max_pending_rows` rows plus one batch.
//!
//! The task works like a group commit with a learned batch size: after taking every request
//! queued, it waits for more until as many pushes are pending as its previous insert carried
//! (the agents acknowledged by that insert tend to come back with their next batch), or
//! `flush_rows` rows are pending, or `flush_interval` has passed since the first pending row;
//! it also waits while another push holds a reservation and is still preparing its rows
//! (claiming its batch in the ledger, encoding). So a lone sender is not delayed, while many
//! concurrent senders share large inserts (ClickHouse works best with few large inserts).
//! Counting only pushes past their ledger claim was measured (issue 16, BENCHMARKS.md *Fleet
//! mode*): with a thousand agents it made flushes two to three times smaller and the pipeline
//! no faster, because each flush costs a lookup and an insert whatever its size.
//! Up to `concurrent_flushes` flushes (default 2) run at once, so ClickHouse works on one
//! while the next is gathered; while every slot is busy the next flush keeps gathering.
//! Each table's rows go in one RowBinary insert.
//!
//! Each push is completed only after every insert of its flush returned OK; any failure fails
//! every push of the flush (the ledger recovers partially written ones). A push whose ledger
//! lease would not outlive a full insert attempt is failed before the insert starts (see
//! `control::ledger`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::{
    Store,
    dedup::{self, InFlight},
    rows::{EventBatch, HeartbeatRow, Rows, StateRow},
};
use crate::metrics::{Metrics, Stage};

/// Tuning of the writer (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub flush_rows: usize,
    pub flush_interval: Duration,
    /// Flushes in flight at once (at least 1).
    pub concurrent_flushes: u32,
    pub max_pending_rows: usize,
    /// Bound of one whole flush (all tables).
    pub timeout: Duration,
}

/// Why rows were not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub message: String,
    /// True when the server may still be applying the insert (timeout, broken connection):
    /// recovery must wait for it to settle before looking.
    pub uncertain: bool,
}

/// Why a push cannot even be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("ClickHouse is unavailable ({0}); keep the batch and retry later")]
    ClickHouseDown(String),
    #[error(
        "the collector is overloaded: {pending} rows are waiting for ClickHouse (limit {limit}); \
         keep the batch and retry later"
    )]
    Overloaded { pending: usize, limit: usize },
    #[error("the collector is shutting down; retry against another collector or later")]
    ShuttingDown,
}

/// Whether ClickHouse is believed reachable, shared by the writer, the probe and the services.
#[derive(Debug)]
pub struct StoreHealth {
    down: AtomicBool,
    last_error: Mutex<String>,
    /// Broadcasts `true` while serving (for gRPC health).
    serving: watch::Sender<bool>,
}

impl StoreHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            down: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            serving: watch::Sender::new(true),
        })
    }

    /// The last error when ClickHouse is known down.
    pub fn down_reason(&self) -> Option<String> {
        if self.down.load(Ordering::Acquire) {
            Some(
                self.last_error
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_else(|_| "unknown error".into()),
            )
        } else {
            None
        }
    }

    pub fn mark_down(&self, error: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            error.clone_into(&mut e);
        }
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error,
                "ClickHouse marked down; pushes are refused until it answers"
            );
            self.serving.send_replace(false);
        }
    }

    pub fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("ClickHouse answers again; accepting pushes");
            self.serving.send_replace(true);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }
}

/// Counts pushes that hold a reservation but have not handed their rows over yet, so the
/// writer knows whether waiting a little would let it insert them together.
#[derive(Debug, Default)]
struct Preparing {
    count: AtomicUsize,
    changed: Notify,
}

/// Room for a push's rows in the writer; dropping it without writing gives the room back.
#[derive(Debug)]
pub struct Reservation {
    /// Moves into the request when the rows are handed over; `None` only after that.
    permit: Option<OwnedSemaphorePermit>,
    preparing: Arc<Preparing>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.preparing.count.fetch_sub(1, Ordering::AcqRel);
        self.preparing.changed.notify_one();
    }
}

struct Request {
    rows: Rows,
    /// When the rows were handed over (the `queue` stage ends when their flush starts).
    queued: Instant,
    /// Latest instant at which an insert of these rows may start.
    start_by: Instant,
    done: oneshot::Sender<Result<(), WriteError>>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Cheap-to-clone handle used by pushes.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Request>,
    permits: Arc<Semaphore>,
    max_pending: usize,
    health: Arc<StoreHealth>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    preparing: Arc<Preparing>,
}

impl WriterHandle {
    /// Reserves room for `rows` rows, or explains at once why not.
    pub fn try_reserve(&self, rows: usize) -> Result<Reservation, Refusal> {
        if let Some(reason) = self.health.down_reason() {
            return Err(Refusal::ClickHouseDown(reason));
        }
        if self.tx.is_closed() {
            return Err(Refusal::ShuttingDown);
        }
        let n = u32::try_from(rows.max(1)).unwrap_or(u32::MAX);
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::Overloaded {
                pending: self.max_pending - self.permits.available_permits(),
                limit: self.max_pending,
            })?;
        self.preparing.count.fetch_add(1, Ordering::AcqRel);
        Ok(Reservation {
            permit: Some(permit),
            preparing: self.preparing.clone(),
        })
    }

    /// Queues `rows` and waits for ClickHouse's verdict. `lease_until` is when the push's
    /// ledger lease ends: the rows are only written if a whole insert fits before it.
    pub async fn write(
        &self,
        rows: Rows,
        mut reservation: Reservation,
        lease_until: Instant,
    ) -> Result<(), WriteError> {
        let n = rows.len() as i64;
        let (done, wait) = oneshot::channel();
        let start_by = lease_until
            .checked_sub(self.timeout)
            .unwrap_or_else(Instant::now);
        self.metrics.pending_rows.inc_by(n);
        // Hand the rows over before no longer counting as preparing (see `run`).
        let sent = self.tx.send(Request {
            rows,
            queued: Instant::now(),
            start_by,
            done,
            _permit: reservation.permit.take(),
        });
        drop(reservation);
        let result = match sent {
            Ok(()) => wait.await.unwrap_or_else(|_| {
                Err(WriteError {
                    message: "the writer stopped before confirming the rows".into(),
                    uncertain: true,
                })
            }),
            Err(_) => Err(WriteError {
                message: "the collector is shutting down".into(),
                uncertain: false,
            }),
        };
        self.metrics.pending_rows.dec_by(n);
        result
    }

    pub fn health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Rows reserved or waiting for ClickHouse now (admission control sheds on it).
    pub fn pending_rows(&self) -> usize {
        self.max_pending
            .saturating_sub(self.permits.available_permits())
    }
}

/// Starts the writer task. It ends once every handle is dropped and the last rows are flushed.
pub fn spawn(
    store: Store,
    config: WriterConfig,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = WriterHandle {
        tx,
        permits: Arc::new(Semaphore::new(config.max_pending_rows)),
        max_pending: config.max_pending_rows,
        health: health.clone(),
        timeout: config.timeout,
        metrics: metrics.clone(),
        preparing: Arc::new(Preparing::default()),
    };
    let task = tokio::spawn(run(
        store,
        config,
        health,
        metrics,
        handle.preparing.clone(),
        rx,
    ));
    (handle, task)
}

async fn run(
    store: Store,
    config: WriterConfig,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
    preparing: Arc<Preparing>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let tables = Arc::new(Tables::new(store.db()));
    let inflight = Arc::new(InFlight::default());
    // Up to this many flushes run at once, so ClickHouse works on one while the next is
    // gathered, and pushes are not held behind one slow lookup.
    let concurrent = config.concurrent_flushes.max(1);
    let inserts = Arc::new(Semaphore::new(concurrent as usize));
    let mut batch: Vec<Request> = Vec::new();
    let mut closed = false;
    // Pushes carried by the previous insert: how many to wait for this time.
    let mut expected_pushes = 1usize;
    while !closed {
        let Some(first) = rx.recv().await else { break };
        let mut rows = first.rows.len();
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + config.flush_interval;
        loop {
            // Take everything already queued.
            loop {
                match rx.try_recv() {
                    Ok(r) => {
                        rows += r.rows.len();
                        batch.push(r);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let preparing_now = preparing.count.load(Ordering::Acquire);
            if closed
                || rows >= config.flush_rows
                || (batch.len() >= expected_pushes && preparing_now == 0)
            {
                break;
            }
            tokio::select! {
                next = rx.recv() => match next {
                    Some(r) => {
                        rows += r.rows.len();
                        batch.push(r);
                    }
                    None => closed = true,
                },
                () = preparing.changed.notified() => {}
                () = tokio::time::sleep_until(flush_at) => break,
            }
        }
        // Wait for a free flush slot, taking in what arrives meanwhile: while ClickHouse is
        // slow every slot is busy, so flushes grow with its latency instead of queueing up
        // small ones (each flush pays a lookup and an insert whatever its size).
        let slot = loop {
            let acquire = inserts.clone().acquire_owned();
            if closed || rows >= config.flush_rows {
                break acquire.await;
            }
            tokio::select! {
                biased;
                slot = acquire => break slot,
                next = rx.recv() => match next {
                    Some(r) => {
                        rows += r.rows.len();
                        batch.push(r);
                    }
                    None => closed = true,
                },
            }
        };
        let Ok(slot) = slot else {
            break;
        };
        expected_pushes = batch.len();
        let batch = std::mem::take(&mut batch);
        let (store, tables, health, metrics, inflight) = (
            store.clone(),
            tables.clone(),
            health.clone(),
            metrics.clone(),
            inflight.clone(),
        );
        tokio::spawn(async move {
            flush(
                &store, &tables, &config, &health, &metrics, &inflight, batch,
            )
            .await;
            drop(slot);
        });
    }
    // Wait for the inserts still running before reporting the writer stopped.
    let _ = inserts.acquire_many(concurrent).await;
    tracing::debug!("writer stopped");
}

/// Table names, formatted once.
struct Tables {
    events: String,
    states: String,
    heartbeats: String,
}

impl Tables {
    fn new(db: &str) -> Self {
        Self {
            events: format!("{db}.enrollment_events"),
            states: format!("{db}.device_states"),
            heartbeats: format!("{db}.agent_heartbeats"),
        }
    }
}

async fn flush(
    store: &Store,
    tables: &Tables,
    config: &WriterConfig,
    health: &StoreHealth,
    metrics: &Metrics,
    inflight: &Arc<InFlight>,
    batch: Vec<Request>,
) {
    let now = Instant::now();
    for r in &batch {
        metrics.stage(Stage::Queue, now.duration_since(r.queued).as_secs_f64());
    }
    let (live, late): (Vec<Request>, Vec<Request>) =
        batch.into_iter().partition(|r| r.start_by > now);
    for r in late {
        let _ = r.done.send(Err(WriteError {
            message: "the batch waited too long for the writer; retry".into(),
            uncertain: false,
        }));
    }
    if live.is_empty() {
        return;
    }
    let mut live = live;
    let started = Instant::now();
    // Event-level exactly-once (see `dedup`): the claim keeps this flush's ids in flight
    // until the insert below has ended.
    let _claim = if live.iter().any(|r| !r.rows.events.is_empty()) {
        let mut parts: Vec<&mut EventBatch> = live.iter_mut().map(|r| &mut r.rows.events).collect();
        let (claim, in_flush) = dedup::claim_unique(inflight, &mut parts);
        let lookup = dedup::drop_stored(store, &tables.events, &mut parts);
        let stored = match tokio::time::timeout(config.timeout, lookup).await {
            Ok(Ok(n)) => {
                metrics.stage(Stage::Lookup, started.elapsed().as_secs_f64());
                n
            }
            Ok(Err(e)) => {
                fail_lookup(
                    health,
                    metrics,
                    live,
                    format!("ClickHouse lookup failed: {e}"),
                );
                return;
            }
            Err(_) => {
                let message = format!("ClickHouse lookup timed out after {:?}", config.timeout);
                fail_lookup(health, metrics, live, message);
                return;
            }
        };
        if in_flush + stored > 0 {
            metrics
                .events_deduplicated
                .inc_by((in_flush + stored) as u64);
            tracing::debug!(
                in_flush,
                stored,
                "dropped copies of events stored once already"
            );
        }
        Some(claim)
    } else {
        None
    };
    let rows: usize = live.iter().map(|r| r.rows.len()).sum();
    let insert_started = Instant::now();
    let result = match tokio::time::timeout(config.timeout, insert_all(store, tables, &live)).await
    {
        Ok(Ok(())) => {
            metrics.stage(Stage::Insert, insert_started.elapsed().as_secs_f64());
            Ok(())
        }
        Ok(Err(e)) => Err(WriteError {
            uncertain: !is_certain_failure(&e),
            message: format!("ClickHouse insert failed: {e}"),
        }),
        Err(_) => Err(WriteError {
            message: format!("ClickHouse insert timed out after {:?}", config.timeout),
            uncertain: true,
        }),
    };
    let elapsed = started.elapsed();
    match &result {
        Ok(()) => {
            health.mark_up();
            metrics.flush_rows.observe(rows as f64);
            metrics.flush_seconds.observe(elapsed.as_secs_f64());
            tracing::debug!(rows, pushes = live.len(), ?elapsed, "flushed");
        }
        Err(e) => {
            metrics.clickhouse_errors.inc();
            health.mark_down(&e.message);
            tracing::warn!(rows, pushes = live.len(), error = %e.message, uncertain = e.uncertain, "flush failed");
        }
    }
    for r in live {
        let _ = r.done.send(result.clone());
    }
}

/// Fails every push of a flush whose duplicate lookup failed: nothing was inserted.
fn fail_lookup(health: &StoreHealth, metrics: &Metrics, live: Vec<Request>, message: String) {
    metrics.clickhouse_errors.inc();
    health.mark_down(&message);
    tracing::warn!(pushes = live.len(), error = %message, "flush failed before inserting");
    let result = Err(WriteError {
        message,
        uncertain: false,
    });
    for r in live {
        let _ = r.done.send(result.clone());
    }
}

async fn insert_all(
    store: &Store,
    tables: &Tables,
    batch: &[Request],
) -> Result<(), clickhouse::error::Error> {
    if batch.iter().any(|r| !r.rows.events.is_empty()) {
        insert_events(store, &tables.events, batch.iter().map(|r| &r.rows.events)).await?;
    }
    if batch.iter().any(|r| !r.rows.states.is_empty()) {
        insert_table::<StateRow>(store, &tables.states, batch.iter().map(|r| &r.rows.states))
            .await?;
    }
    if batch.iter().any(|r| !r.rows.heartbeats.is_empty()) {
        insert_table::<HeartbeatRow>(
            store,
            &tables.heartbeats,
            batch.iter().map(|r| &r.rows.heartbeats),
        )
        .await?;
    }
    Ok(())
}

/// Inserts event rows already in RowBinary: each push's bytes go out as they are (sliced
/// around rows dropped as duplicates), with no row struct serialised here.
async fn insert_events<'a>(
    store: &Store,
    table: &str,
    parts: impl Iterator<Item = &'a EventBatch>,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = store
        .client()
        .insert_formatted_with(format!("INSERT INTO {table} FORMAT RowBinary"))
        .with_timeouts(Some(store.timeout()), Some(store.timeout()));
    for part in parts {
        for chunk in part.chunks() {
            insert.send(chunk).await?;
        }
    }
    insert.end().await
}

async fn insert_table<'a, T>(
    store: &Store,
    table: &str,
    parts: impl Iterator<Item = &'a Vec<T>>,
) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = store
        .client()
        .insert_unescaped::<T>(table)
        .await?
        .with_timeouts(Some(store.timeout()), Some(store.timeout()));
    for part in parts {
        for row in part {
            insert.write(row).await?;
        }
    }
    insert.end().await
}

/// Whether a failed insert certainly left nothing in flight on the server: the server answered
/// with an error (it finished processing), or the connection was refused (nothing was sent).
fn is_certain_failure(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match e {
        Error::BadResponse(_) => true,
        Error::Network(source) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                if let Some(io) = c.downcast_ref::<std::io::Error>()
                    && io.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    return true;
                }
                cause = c.source();
            }
            false
        }
        _ => false,
    }
}

/// While ClickHouse is marked down, probes it every `every` and marks it up when it answers.
pub async fn probe_while_down(
    store: Store,
    health: Arc<StoreHealth>,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if health.down_reason().is_some() {
            match store.ping().await {
                Ok(()) => health.mark_up(),
                Err(e) => health.mark_down(&e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flips_and_broadcasts() {
        let h = StoreHealth::new();
        let rx = h.subscribe();
        assert_eq!(h.down_reason(), None);
        h.mark_down("connection refused");
        assert_eq!(h.down_reason().as_deref(), Some("connection refused"));
        assert!(!*rx.borrow());
        h.mark_up();
        assert_eq!(h.down_reason(), None);
        assert!(*rx.borrow());
    }

    #[test]
    fn server_errors_are_certain_and_timeouts_are_not() {
        assert!(is_certain_failure(&clickhouse::error::Error::BadResponse(
            "Code: 60".into()
        )));
        assert!(!is_certain_failure(&clickhouse::error::Error::TimedOut));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(is_certain_failure(&clickhouse::error::Error::Network(
            Box::new(refused)
        )));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!is_certain_failure(&clickhouse::error::Error::Network(
            Box::new(reset)
        )));
    }

    #[tokio::test]
    async fn reservations_are_bounded_and_refused_while_down() {
        let config = crate::config::Config {
            clickhouse_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        };
        let store = Store::new(&config).unwrap();
        let health = StoreHealth::new();
        let metrics = Arc::new(Metrics::new());
        let (handle, task) = spawn(
            store,
            WriterConfig {
                flush_rows: 10,
                flush_interval: Duration::from_millis(10),
                concurrent_flushes: 2,
                max_pending_rows: 100,
                timeout: Duration::from_secs(2),
            },
            health.clone(),
            metrics,
        );
        let a = handle.try_reserve(60).unwrap();
        assert_eq!(
            handle.try_reserve(41).unwrap_err(),
            Refusal::Overloaded {
                pending: 60,
                limit: 100
            }
        );
        drop(a);
        let b = handle.try_reserve(100).unwrap();
        assert_eq!(handle.preparing.count.load(Ordering::Acquire), 1);
        drop(b);
        assert_eq!(handle.preparing.count.load(Ordering::Acquire), 0);
        health.mark_down("connection refused");
        assert_eq!(
            handle.try_reserve(1).unwrap_err().to_string(),
            "ClickHouse is unavailable (connection refused); keep the batch and retry later"
        );
        drop(handle);
        task.await.unwrap();
    }
}
