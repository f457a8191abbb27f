//! Backtest: replays the alert evaluator over past windows of stored data, to learn what it
//! would have raised (false alerts in a quiet week, detection delay of known spikes) before
//! trusting a configuration with people's pagers.
//!
//! It is the live code path, not a model of it: the same [`Evaluator::evaluate`] runs at
//! every tick of the configured cadence from `from` to `to`, against the same query engine
//! and ClickHouse data, with its state in a private in-memory SQLite alert store. Nothing is
//! sent: the evaluator gets no destinations (so no outbox row is ever written) and its store
//! is dropped at the end, so the live control database is neither read nor written.
//! Threshold rules come from the TOML file only (rules created through the API live in the
//! control database).
//!
//! Ticks fall on multiples of the cadence since the Unix epoch (a live analyzer's ticks fall
//! anywhere; over many spikes the phase averages out, and fixed ticks make a run reproducible).
//!
//! A long replay is latency-bound (each tick is a handful of small ClickHouse queries in a
//! row), so `parallel` chunks run at once: the ticks are cut into that many consecutive
//! chunks, each replayed by its own evaluator and private store, starting [`WARM_UP`] before
//! its first tick (so that an episode running into the chunk is known, and not opened a
//! second time) and running on after its last tick while an episode it opened is still open
//! (up to [`TAIL`], never past `to`). Episodes are kept by the chunk they started in, and
//! renumbered per key in time order (ids as the sequential run gives them). It equals the
//! sequential run unless an episode is open across a chunk's whole warm-up hour.

use std::sync::Arc;

use serde::Serialize;

use super::config::AlertSettings;
use super::detect::Concentration;
use super::evaluator::{EvalError, Evaluator};
use super::metrics::AlertMetrics;
use super::model::{Alert, TopCode};
use super::store::{self, AlertStore, StoreError, alert_id};
use crate::query::engine::Engine;
use crate::query::filters::rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("opening the backtest's in-memory alert store: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("evaluation at {at} failed: {source}")]
    Eval {
        at: String,
        #[source]
        source: EvalError,
    },
}

/// One episode the evaluator would have raised: what a notification would have said first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    pub alert_id: String,
    /// `spike` or the threshold rule's name.
    pub rule: String,
    pub tenant: String,
    pub category: String,
    pub dimension: String,
    pub dimension_value: String,
    /// The tick that opened the episode (pending).
    pub started_at: i64,
    /// The tick that would have sent the `firing` notification; None when it never fired.
    pub firing_at: Option<i64>,
    /// The tick that would have sent the `resolved` notification; None when the episode is
    /// still open at `to`.
    pub resolved_at: Option<i64>,
    /// Status at `to`: pending, firing, no_data or resolved.
    pub status: String,
    pub observed_rate: f64,
    pub expected_rate: f64,
    pub observed_count: u64,
    pub expected_count: f64,
    pub affected_devices: u64,
    /// The overdispersion the spike test used at the last evaluation (1 = Poisson).
    pub dispersion: f64,
    pub concentration: Vec<Concentration>,
    pub top_codes: Vec<TopCode>,
}

impl Episode {
    fn from_alert(a: &Alert) -> Self {
        let d = &a.detail;
        Self {
            alert_id: a.alert_id.clone(),
            rule: a.rule.clone(),
            tenant: a.tenant.clone(),
            category: a.category.clone(),
            dimension: a.dimension.clone(),
            dimension_value: a.dimension_value.clone(),
            started_at: a.started_at,
            firing_at: a.firing_at,
            resolved_at: a.resolved_at,
            status: a.status.as_str().to_owned(),
            observed_rate: d.observed_rate,
            expected_rate: d.expected_rate,
            observed_count: d.observed_count,
            expected_count: d.expected_count,
            affected_devices: d.affected_devices,
            dispersion: d.dispersion,
            concentration: d.concentration.clone(),
            top_codes: d.top_codes.clone(),
        }
    }

    /// One tab-separated line: start, firing, end, tenant, rule, key, top concentration.
    pub fn line(&self) -> String {
        let t = |v: Option<i64>| {
            v.map_or("-".to_owned(), |v| {
                rfc3339(u32::try_from(v.max(0)).unwrap_or(u32::MAX))
            })
        };
        let conc = self
            .concentration
            .iter()
            .map(|c| format!("{}={} {:.0}%", c.dimension, c.value, c.share * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}={}\t{}\t{}",
            t(Some(self.started_at)),
            t(self.firing_at),
            t(self.resolved_at),
            self.tenant,
            self.rule,
            self.dimension,
            self.dimension_value,
            self.status,
            if conc.is_empty() { "-".into() } else { conc },
        )
    }
}

/// What a backtest found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: i64,
    pub to: i64,
    /// Seconds between ticks (the configured evaluation interval).
    pub step: i64,
    /// Window length of the spike test, seconds.
    pub window: i64,
    pub evaluations: u64,
    /// Every episode opened during the run, oldest first.
    pub episodes: Vec<Episode>,
}

impl Report {
    /// Episodes that reached `firing` (a notification would have been sent).
    pub fn fired(&self) -> impl Iterator<Item = &Episode> {
        self.episodes.iter().filter(|e| e.firing_at.is_some())
    }
}

/// The ticks of a run: multiples of `step` in `(from, to]`.
pub fn ticks(from: i64, to: i64, step: i64) -> impl Iterator<Item = i64> {
    let first = (from.div_euclid(step) + 1) * step;
    (0..)
        .map(move |k| first + k * step)
        .take_while(move |t| *t <= to)
}

/// A private alert store: one in-memory SQLite connection that lives as long as the pool.
async fn private_store() -> Result<AlertStore, BacktestError> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None::<std::time::Duration>)
        .max_lifetime(None::<std::time::Duration>)
        .connect("sqlite::memory:")
        .await?;
    store::migrate(&pool, false).await?;
    Ok(AlertStore::new(pool))
}

/// How long before its first tick a parallel chunk starts replaying.
pub const WARM_UP: i64 = 3600;
/// How long after its last tick a parallel chunk goes on while an episode it opened is open.
pub const TAIL: i64 = 6 * 3600;

/// Replays the evaluator from `from` to `to` (Unix seconds) at the configured cadence, in
/// `parallel` chunks at once (1: one sequential replay). `progress(done, total)` is called
/// after every tick of the range.
pub async fn run(
    engine: Arc<Engine>,
    settings: Arc<AlertSettings>,
    from: i64,
    to: i64,
    parallel: usize,
    progress: impl FnMut(u64, u64),
) -> Result<Report, BacktestError> {
    if to <= from {
        return Err(BacktestError::Invalid {
            field: "to",
            reason: format!(
                "{} is not after from ({})",
                rfc3339(u32::try_from(to.max(0)).unwrap_or(0)),
                rfc3339(u32::try_from(from.max(0)).unwrap_or(0))
            ),
        });
    }
    if parallel == 0 {
        return Err(BacktestError::Invalid {
            field: "parallel",
            reason: "must be at least 1".into(),
        });
    }
    let step = settings.evaluation_interval.as_secs().max(1) as i64;
    let all: Vec<i64> = ticks(from, to, step).collect();
    let total = all.len() as u64;
    let per = all.len().div_ceil(parallel).max(1);
    let progress = std::cell::RefCell::new((0u64, progress));
    let tick_done = || {
        if let Ok(mut p) = progress.try_borrow_mut() {
            p.0 += 1;
            let done = p.0;
            (p.1)(done, total);
        }
    };
    let chunks = all.chunks(per).map(|c| {
        let (first, last) = (c[0], c[c.len() - 1]);
        // The first chunk has nothing before it to carry over.
        let start = if first == all[0] {
            first
        } else {
            first - WARM_UP
        };
        replay_chunk(
            engine.clone(),
            settings.clone(),
            (start, first, last),
            to,
            step,
            &tick_done,
        )
    });
    let mut alerts: Vec<Alert> = futures::future::try_join_all(chunks)
        .await?
        .into_iter()
        .flatten()
        .collect();
    alerts.sort_by(|a, b| {
        (a.started_at, &a.alert_key, a.episode).cmp(&(b.started_at, &b.alert_key, b.episode))
    });
    // Episode numbers (and ids) as one sequential replay gives them.
    let mut seen: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for a in &mut alerts {
        let n = seen.entry(a.alert_key.clone()).or_insert(0);
        *n += 1;
        a.episode = *n;
        a.alert_id = alert_id(&a.alert_key, *n);
    }
    Ok(Report {
        from,
        to,
        step,
        window: settings.window.as_secs() as i64,
        evaluations: total,
        episodes: alerts.iter().map(Episode::from_alert).collect(),
    })
}

/// Replays one chunk: ticks from `start` (warm-up before `first`) through `last`, then on
/// while an episode started in `[first, last]` is open (up to [`TAIL`], never past `to`).
/// Returns the episodes that started in `[first, last]`.
async fn replay_chunk(
    engine: Arc<Engine>,
    settings: Arc<AlertSettings>,
    (start, first, last): (i64, i64, i64),
    to: i64,
    step: i64,
    tick_done: &impl Fn(),
) -> Result<Vec<Alert>, BacktestError> {
    let store = private_store().await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(AlertMetrics::new(&mut registry));
    let evaluator = Evaluator::new(
        engine,
        store.clone(),
        settings,
        String::new(),
        Vec::new(),
        metrics,
    );
    let mine = |a: &Alert| (first..=last).contains(&a.started_at);
    let mut t = start;
    while t <= to {
        if t > last {
            let open = store.open_alerts().await?;
            if t > last + TAIL || !open.iter().any(mine) {
                break;
            }
        }
        evaluator
            .evaluate(t)
            .await
            .map_err(|source| BacktestError::Eval {
                at: rfc3339(u32::try_from(t.max(0)).unwrap_or(0)),
                source,
            })?;
        if (first..=last).contains(&t) {
            tick_done();
        }
        t += step;
    }
    let alerts = store.list(None, None, i64::MAX).await?;
    Ok(alerts.into_iter().filter(|a| mine(a)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_multiples_of_the_step_after_from_up_to_to() {
        assert_eq!(ticks(0, 180, 60).collect::<Vec<_>>(), vec![60, 120, 180]);
        assert_eq!(ticks(61, 179, 60).collect::<Vec<_>>(), vec![120]);
        assert_eq!(ticks(100, 110, 60).count(), 0);
        assert_eq!(ticks(-5, 10, 5).collect::<Vec<_>>(), vec![0, 5, 10]);
    }
}
