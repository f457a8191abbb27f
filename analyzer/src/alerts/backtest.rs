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

use std::sync::Arc;

use serde::Serialize;

use super::config::AlertSettings;
use super::detect::Concentration;
use super::evaluator::{EvalError, Evaluator};
use super::metrics::AlertMetrics;
use super::model::{Alert, TopCode};
use super::store::{self, AlertStore, StoreError};
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

/// Replays the evaluator from `from` to `to` (Unix seconds) at the configured cadence.
/// `progress(done, total)` is called after every tick.
pub async fn run(
    engine: Arc<Engine>,
    settings: Arc<AlertSettings>,
    from: i64,
    to: i64,
    mut progress: impl FnMut(u64, u64),
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
    let step = settings.evaluation_interval.as_secs().max(1) as i64;
    let store = private_store().await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(AlertMetrics::new(&mut registry));
    let evaluator = Evaluator::new(
        engine,
        store.clone(),
        settings.clone(),
        String::new(),
        Vec::new(),
        metrics,
    );
    let total = ticks(from, to, step).count() as u64;
    let mut evaluations = 0;
    for t in ticks(from, to, step) {
        evaluator
            .evaluate(t)
            .await
            .map_err(|source| BacktestError::Eval {
                at: rfc3339(u32::try_from(t.max(0)).unwrap_or(0)),
                source,
            })?;
        evaluations += 1;
        progress(evaluations, total);
    }
    let mut alerts = store.list(None, None, i64::MAX).await?;
    alerts.sort_by(|a, b| {
        (a.started_at, &a.alert_key, a.episode).cmp(&(b.started_at, &b.alert_key, b.episode))
    });
    Ok(Report {
        from,
        to,
        step,
        window: settings.window.as_secs() as i64,
        evaluations,
        episodes: alerts.iter().map(Episode::from_alert).collect(),
    })
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
