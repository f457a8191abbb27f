//! The evaluation loop run by `serve`: every `evaluation_interval` it asks the query engine
//! (the same planner the API uses; no SQL of its own) for the current window and the
//! baselines, assesses every key, steps the lifecycle and writes transitions through the
//! store, whose compare-and-set makes each notification happen once across analyzers.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use tracing::Instrument;

use super::config::{AlertSettings, Rule, SpikeConfig};
use super::detect::{self, Assessment, Counts, Expectation, Verdict};
use super::lifecycle::{self, Kind, Phase};
use super::metrics::AlertMetrics;
use super::model::{Alert, Detail, Onset, Silence, TopCode, notification_json};
use super::rules::{Metric, parse_rule};
use super::store::{AlertStore, Outgoing, StoreError, alert_id, notification_id};
use crate::catalog::Catalog;
use crate::query::QueryError;
use crate::query::engine::{BreakdownRow, Bucket, Dimension, Engine};
use crate::query::filters::{Filters, SourceChoice};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A destination's interest in alert notifications (its filter), for the outbox.
#[derive(Debug, Clone, Default)]
pub struct AlertRoute {
    pub name: String,
    /// Empty: every tenant.
    pub tenants: Vec<String>,
    /// Empty: every category.
    pub categories: Vec<String>,
    /// Lowest severity taken: `info` (everything), `warning`, `critical`.
    pub min_severity: String,
}

/// `info` < `warning` < `critical`.
pub fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

/// The severity of a notification: resolutions are `info`; a firing alert is `critical` when
/// its rate is at least 4x the expected one or 100 devices fail, else `warning`.
pub fn severity(a: &Alert, kind: Kind) -> &'static str {
    if kind == Kind::Resolved {
        return "info";
    }
    let d = &a.detail;
    if d.affected_devices >= 100
        || (d.expected_rate > 0.0 && d.observed_rate >= 4.0 * d.expected_rate)
    {
        "critical"
    } else {
        "warning"
    }
}

impl AlertRoute {
    pub fn takes(&self, a: &Alert, severity: &str) -> bool {
        (self.tenants.is_empty() || self.tenants.contains(&a.tenant))
            && (self.categories.is_empty() || self.categories.contains(&a.category))
            && severity_rank(severity) >= severity_rank(&self.min_severity)
    }
}

/// Baseline counts of one tenant and dimension: per value, plus the tenant's attempts.
#[derive(Debug, Clone, Default)]
struct Baseline {
    kind: &'static str,
    tenant_attempts: u64,
    values: HashMap<String, Counts>,
}

/// Answers that hold for one clock hour (baselines, history series and populations all end at
/// the start of the current hour), keyed by (what, hour): storing an entry of a new hour drops
/// the older hours' entries.
struct HourCache<K, V>(Mutex<HashMap<(K, i64), V>>);

impl<K: Eq + Hash, V: Clone> HourCache<K, V> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &(K, i64)) -> Option<V> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: (K, i64), value: V) {
        if let Ok(mut map) = self.0.lock() {
            let hour = key.1;
            map.retain(|(_, h), _| *h == hour);
            map.insert(key, value);
        }
    }
}

/// A history series: (tenant, filter dimension and value); the hour it ends at is the cache's.
type SeriesKey = (String, Option<(&'static str, String)>);

/// Per bucket of a history series: (failures, attempts).
type Series = Vec<(u64, u64)>;

/// The newest part of the window per (tenant, dimension), queried during one evaluation:
/// the tenant's counts and each value's.
type RecentWindows = HashMap<(String, &'static str), (Counts, HashMap<String, Counts>)>;

/// The alert evaluator.
pub struct Evaluator {
    engine: Arc<Engine>,
    store: AlertStore,
    settings: Arc<AlertSettings>,
    catalog: &'static Catalog,
    public_url: String,
    routes: Vec<AlertRoute>,
    metrics: Arc<AlertMetrics>,
    baselines: HourCache<(String, &'static str), Option<Baseline>>,
    /// History series for the dispersion estimate, cached for the hour.
    series: HourCache<SeriesKey, Series>,
    /// Per (tenant, dimension, hour): the baseline population of the concentration search
    /// (the rolling span's breakdown), cached for the hour so that a firing alert waits for
    /// the window's breakdowns only.
    populations: HourCache<(String, &'static str), Vec<BreakdownRow>>,
    /// The spike test's settings per scale ([`AlertSettings::spike_test`]).
    spike_test: SpikeConfig,
    /// Delivery workers to wake when a notification is recorded.
    wake: Vec<Arc<tokio::sync::Notify>>,
}

/// The dimensions whose breakdown rows carry their own attempts (a rate within the value);
/// `category` and `code` exist only on failed events, so their rate is over the tenant's
/// attempts.
fn own_population(dim: Dimension) -> bool {
    matches!(
        dim,
        Dimension::Platform | Dimension::OsVersion | Dimension::Method
    )
}

fn dim_name(dim: Dimension) -> &'static str {
    match dim {
        Dimension::Category => "category",
        Dimension::Code => "code",
        Dimension::Platform => "platform",
        Dimension::OsVersion => "os_version",
        Dimension::Method => "enrollment_method",
        Dimension::Tenant => "tenant",
        Dimension::Stage => "stage",
        Dimension::Outcome => "outcome",
        Dimension::Side => "side",
    }
}

/// Dimensions searched for concentration, in the order ties are reported (the broader
/// explanation first: a platform before the OS versions only it runs).
const CONCENTRATION_DIMS: &[Dimension] = &[
    Dimension::Platform,
    Dimension::Method,
    Dimension::OsVersion,
    Dimension::Stage,
    Dimension::Code,
    Dimension::Category,
];

/// The tenant of fleet-wide keys (`[alerts] all_tenants`): every tenant together. Never a
/// real tenant's name (the collector takes letters, digits, '-', '_' and '.' only).
pub const ALL_TENANTS: &str = "*";

/// The query scope of [`ALL_TENANTS`] is no tenant filter.
fn filters(from: i64, to: i64, tenant: Option<&str>) -> Filters {
    let t = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Filters {
        from: t(from),
        to: t(to),
        tenant: tenant.filter(|t| *t != ALL_TENANTS).map(str::to_owned),
        platform: None,
        method: None,
        os_version: None,
        stage: None,
        outcome: None,
        category: None,
        code: None,
        side: None,
        source: SourceChoice::Auto,
    }
}

fn key_of(r: &BreakdownRow) -> Option<String> {
    r.key.clone().filter(|k| !k.is_empty())
}

/// Window queries of one evaluation in flight at once.
const OBSERVE_CONCURRENCY: usize = 4;

/// One (tenant, dimension) window query, boxed so that the evaluation future stays `Send`
/// for every lifetime (a stream over a borrowing closure is not, as far as rustc can tell).
type ObserveFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Observation>, EvalError>> + Send + 'a>,
>;

/// The measurement of one key in the current window.
struct Observation {
    tenant: String,
    dim: Dimension,
    value: String,
    counts: Counts,
    devices: u64,
    users: u64,
}

impl Evaluator {
    pub fn new(
        engine: Arc<Engine>,
        store: AlertStore,
        settings: Arc<AlertSettings>,
        public_url: String,
        routes: Vec<AlertRoute>,
        metrics: Arc<AlertMetrics>,
    ) -> Self {
        let spike_test = settings.spike_test();
        Self {
            engine,
            store,
            spike_test,
            settings,
            catalog: Catalog::embedded(),
            public_url,
            routes,
            metrics,
            baselines: HourCache::new(),
            series: HourCache::new(),
            populations: HourCache::new(),
            wake: Vec::new(),
        }
    }

    /// Wakes these delivery workers whenever a notification is recorded (each keeps one
    /// permit, so a wake-up during a worker's drain is not lost).
    pub fn waking(mut self, workers: Vec<Arc<tokio::sync::Notify>>) -> Self {
        self.wake = workers;
        self
    }

    /// Runs until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.evaluation_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let started = std::time::Instant::now();
            match self
                .evaluate(now)
                .instrument(tracing::info_span!("alert_evaluation", now))
                .await
            {
                Ok(n) => {
                    self.metrics.evaluations.inc();
                    tracing::debug!(
                        keys = n,
                        seconds = started.elapsed().as_secs_f64(),
                        "alert evaluation done"
                    );
                }
                Err(e) => {
                    // Nothing is decided on a failed evaluation: state stays as it was.
                    self.metrics.evaluation_failures.inc();
                    tracing::warn!(error = %e, "alert evaluation failed; state left unchanged");
                }
            }
            self.metrics
                .evaluation_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// One evaluation at `now`; returns how many keys were assessed.
    pub async fn evaluate(&self, now: i64) -> Result<usize, EvalError> {
        let open: Vec<Alert> = self.store.open_alerts().await?;
        let mut open_by_key: HashMap<String, Alert> =
            open.into_iter().map(|a| (a.alert_key.clone(), a)).collect();
        let silences: Vec<Silence> = self
            .store
            .silences(None, false, now)
            .await?
            .into_iter()
            .filter(|s| s.active(now))
            .collect();
        let win = self.settings.window.as_secs() as i64;
        let (from, to) = (now - win, now);
        let tenants = self
            .engine
            .breakdown(&filters(from, to, None), Dimension::Tenant, 100_000)
            .await?;
        let mut tenant_attempts: BTreeMap<String, Counts> = tenants
            .iter()
            .filter_map(|r| key_of(r).map(|k| (k, row_counts(r))))
            .collect();
        if self.settings.all_tenants && !tenant_attempts.is_empty() {
            let mut all = Counts::default();
            for c in tenant_attempts.values() {
                all.add(*c);
            }
            tenant_attempts.insert(ALL_TENANTS.to_owned(), all);
        }
        let mut assessed = 0;
        let onset = self.settings.onset().map(|d| d.as_secs() as i64);
        let mut recent_windows = RecentWindows::new();
        if self.settings.spike.enabled {
            let mut dims = vec![Dimension::Category];
            dims.extend(self.settings.dimensions.iter().copied());
            // Tenants with data now, plus tenants of open spike alerts (which may have none).
            let mut all_tenants: Vec<String> = tenant_attempts.keys().cloned().collect();
            for a in open_by_key.values() {
                if a.rule == "spike" && !all_tenants.contains(&a.tenant) {
                    all_tenants.push(a.tenant.clone());
                }
            }
            let mut open_values: HashMap<(String, String), Vec<String>> = HashMap::new();
            for a in open_by_key.values().filter(|a| a.rule == "spike") {
                open_values
                    .entry((a.tenant.clone(), a.dimension.clone()))
                    .or_default()
                    .push(a.dimension_value.clone());
            }
            // Each (tenant, dimension)'s window, OBSERVE_CONCURRENCY queries at a time (in
            // order), so that an evaluation of many tenants is not one round trip per key.
            let pairs: Vec<(&String, Dimension)> = all_tenants
                .iter()
                .flat_map(|t| dims.iter().map(move |&d| (t, d)))
                .collect();
            let mut queries: Vec<ObserveFuture<'_>> = Vec::with_capacity(pairs.len());
            for &(tenant, dim) in &pairs {
                let t_att = tenant_attempts.get(tenant).copied().unwrap_or_default();
                let known = open_values
                    .get(&(tenant.clone(), dim_name(dim).to_owned()))
                    .cloned()
                    .unwrap_or_default();
                // No value of a tenant with fewer failures (or attempts) than the volume
                // guards can breach, and a key without an open alert has nothing else to
                // step: skip the query (the answer would change nothing).
                let spike = &self.settings.spike;
                if known.is_empty()
                    && (t_att.failures < spike.min_failures.max(1)
                        || t_att.attempts < spike.min_attempts)
                {
                    queries.push(Box::pin(async { Ok(Vec::new()) }));
                    continue;
                }
                queries.push(Box::pin(async move {
                    self.observe(tenant, dim, t_att, &known, from, to).await
                }));
            }
            let observed: Vec<Vec<Observation>> = futures::stream::iter(queries)
                .buffered(OBSERVE_CONCURRENCY)
                .try_collect()
                .await?;
            for (&(tenant, dim), obs) in pairs.iter().zip(observed) {
                for o in obs {
                    let key = format!("spike|{}|{}|{}", o.tenant, dim_name(o.dim), o.value);
                    let Some(base) = self.baseline(tenant, dim, now).await? else {
                        // No trustworthy history yet: not evaluated by the spike test,
                        // unless an alert is open (then its data is still tracked).
                        if let Some(a) = open_by_key.remove(&key) {
                            let verdict = if o.counts.attempts == 0 {
                                Verdict::NoData
                            } else {
                                Verdict::Hold
                            };
                            self.apply(
                                Some(a),
                                &key,
                                &o,
                                None,
                                verdict,
                                now,
                                (from, to),
                                &silences,
                            )
                            .await?;
                        }
                        continue;
                    };
                    let spike = &self.spike_test;
                    let resolve_ratio = self.settings.lifecycle.resolve_ratio;
                    let mix = tenant.as_str() == ALL_TENANTS
                        && !own_population(dim)
                        && spike.mix_adjusted;
                    let parts = if mix {
                        self.mix_parts(&tenant_attempts, dim, &o.value, &base, now)
                            .await?
                    } else {
                        Vec::new()
                    };
                    let expected = if mix {
                        Expectation::mix(&parts.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>())
                    } else {
                        Expectation::from_baseline(
                            value_counts(&base, dim, &o.value),
                            spike.baseline_z,
                        )
                    };
                    let mut a =
                        detect::assess(o.counts, o.devices, expected, 1.0, spike, resolve_ratio);
                    // The dispersion only makes a breach harder: estimated for would-be
                    // breaches only (here, or on the newest part below), once.
                    let mut dispersion = None;
                    if a.verdict == Verdict::Breach && spike.overdispersion {
                        let d = self
                            .key_dispersion(mix, &parts, tenant, dim, &o.value, now)
                            .await?;
                        dispersion = Some(d);
                        a = detect::assess(o.counts, o.devices, expected, d, spike, resolve_ratio);
                    }
                    // The newest part of the window, for a window above the volume guards that
                    // does not breach as a whole (a spike that began a moment ago is diluted by
                    // the quiet rest of the window).
                    let mut fired_on = None;
                    let mut newest = None;
                    if let Some(len) = onset
                        && detect::onset_eligible(&a, spike)
                    {
                        let start = now - len;
                        let r = self
                            .recent(&mut recent_windows, tenant, dim, &o.value, start, now)
                            .await?;
                        newest = Some(r);
                        if detect::onset_breach(r, expected, 1.0, spike) {
                            let d = match dispersion {
                                Some(d) => d,
                                None if spike.overdispersion => {
                                    self.key_dispersion(mix, &parts, tenant, dim, &o.value, now)
                                        .await?
                                }
                                None => 1.0,
                            };
                            if detect::onset_breach(r, expected, d, spike) {
                                a.verdict = Verdict::Breach;
                                a.dispersion = d.max(1.0);
                                fired_on = Some(Onset {
                                    start,
                                    observed_count: r.failures,
                                    attempts: r.attempts,
                                });
                            }
                        }
                    }
                    assessed += 1;
                    // Why a key did or did not fire, for an operator asking after the fact
                    // (`RUST_LOG=fleetpulse_analyzer::alerts=debug`).
                    tracing::debug!(
                        key, verdict = ?a.verdict, failures = o.counts.failures,
                        attempts = o.counts.attempts, devices = o.devices,
                        expected_rate = a.expected_rate, dispersion = a.dispersion,
                        newest_failures = newest.map(|r| r.failures),
                        newest_attempts = newest.map(|r| r.attempts),
                        "spike key assessed"
                    );
                    let cur = open_by_key.remove(&key);
                    self.apply(
                        cur,
                        &key,
                        &o,
                        Some((a, base.kind, fired_on)),
                        a.verdict,
                        now,
                        (from, to),
                        &silences,
                    )
                    .await?;
                }
            }
        }
        let mut rules = self.settings.rules.clone();
        let cats = self.engine.cache().classifier().categories();
        for r in self.store.api_rules().await? {
            if rules.iter().any(|x| x.name == r.name) {
                continue;
            }
            match parse_rule(&r.expr, &cats) {
                Ok(expr) => rules.push(Rule {
                    name: r.name,
                    tenant: r.tenant,
                    expr,
                    text: r.expr,
                }),
                Err(e) => {
                    tracing::warn!(rule = %r.name, error = %e, "stored rule no longer parses; skipped")
                }
            }
        }
        for rule in &rules {
            assessed += self
                .evaluate_rule(rule, now, &mut open_by_key, &silences)
                .await?;
        }
        Ok(assessed)
    }

    /// The counts of `tenant` x `dim`=`value` in `[start, to)`, the newest part of the
    /// window: queried once per (tenant, dimension) per evaluation, for the first key that
    /// needs it.
    async fn recent(
        &self,
        memo: &mut RecentWindows,
        tenant: &str,
        dim: Dimension,
        value: &str,
        start: i64,
        to: i64,
    ) -> Result<Counts, EvalError> {
        let mk = (tenant.to_owned(), dim_name(dim));
        let (t_att, values) = match memo.entry(mk) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let f = filters(start, to, Some(tenant));
                let rows = self
                    .engine
                    .breakdown(&f, Dimension::Tenant, 100_000)
                    .await?;
                let mut t_att = Counts::default();
                for r in &rows {
                    t_att.add(row_counts(r));
                }
                let obs = self.observe(tenant, dim, t_att, &[], start, to).await?;
                e.insert((
                    t_att,
                    obs.into_iter().map(|o| (o.value, o.counts)).collect(),
                ))
            }
        };
        Ok(values
            .get(value)
            .copied()
            .unwrap_or(absent(dim, t_att.attempts)))
    }

    /// Observations of `dim` for `tenant` in the window: every value with failures, plus the
    /// values of its open alerts (with zero failures when absent now).
    async fn observe(
        &self,
        tenant: &str,
        dim: Dimension,
        tenant_att: Counts,
        open_values: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<Observation>, EvalError> {
        let mut out = Vec::new();
        let rows = if tenant_att.attempts == 0 && tenant_att.failures == 0 {
            Vec::new()
        } else {
            self.engine
                .breakdown(&filters(from, to, Some(tenant)), dim, 1000)
                .await?
        };
        for r in &rows {
            let Some(value) = key_of(r) else { continue };
            if r.metrics.failures == 0 && !open_values.contains(&value) {
                continue;
            }
            let attempts = if own_population(dim) {
                r.metrics.attempts
            } else {
                tenant_att.attempts
            };
            out.push(Observation {
                tenant: tenant.to_owned(),
                dim,
                value,
                counts: Counts {
                    failures: r.metrics.failures,
                    attempts,
                },
                devices: r.metrics.affected_devices,
                users: r.metrics.affected_users,
            });
        }
        for v in open_values {
            if !out.iter().any(|o| o.value == *v) {
                out.push(Observation {
                    tenant: tenant.to_owned(),
                    dim,
                    value: v.clone(),
                    counts: absent(dim, tenant_att.attempts),
                    devices: 0,
                    users: 0,
                });
            }
        }
        Ok(out)
    }

    /// The baseline of `tenant` x `dim` for the hour holding `now`: the same hour of the week
    /// over the last `seasonal_weeks` weeks when at least `seasonal_min_weeks` of them have
    /// data and their attempts reach `min_baseline_attempts`, else the rolling span ending
    /// at the start of this hour, else None. Hour-aligned so that the planner answers from
    /// hourly rollups, and cached for the hour.
    async fn baseline(
        &self,
        tenant: &str,
        dim: Dimension,
        now: i64,
    ) -> Result<Option<Baseline>, EvalError> {
        let hour = now - now.rem_euclid(3600);
        let ck = ((tenant.to_owned(), dim_name(dim)), hour);
        if let Some(b) = self.baselines.get(&ck) {
            return Ok(b);
        }
        let s = &self.settings.spike;
        let mut seasonal = Baseline {
            kind: "seasonal",
            ..Baseline::default()
        };
        let mut weeks = 0;
        // The same hour of the past weeks, queried at once.
        let past = futures::future::try_join_all((1..=i64::from(s.seasonal_weeks)).map(|k| {
            let from = hour - k * 7 * 86_400;
            self.counts_over(tenant, dim, from, from + 3600)
        }))
        .await?;
        for b in past {
            if b.tenant_attempts > 0 {
                weeks += 1;
                merge(&mut seasonal, b);
            }
        }
        let chosen = if weeks >= s.seasonal_min_weeks
            && s.seasonal_min_weeks > 0
            && seasonal.tenant_attempts >= s.min_baseline_attempts
        {
            Some(seasonal)
        } else {
            let span = s.rolling.as_secs() as i64;
            let mut rolling = self.counts_over(tenant, dim, hour - span, hour).await?;
            rolling.kind = "rolling";
            (rolling.tenant_attempts >= s.min_baseline_attempts).then_some(rolling)
        };
        self.baselines.put(ck, chosen.clone());
        Ok(chosen)
    }

    /// The parts of a fleet-wide key's mix-adjusted expectation: per tenant with attempts in
    /// the window, (tenant, its attempts now, its expectation for `value` from its own
    /// baseline). A tenant without a trustworthy baseline of its own is expected at the
    /// pooled rate (`pooled`, the fleet-wide baseline).
    async fn mix_parts(
        &self,
        window: &BTreeMap<String, Counts>,
        dim: Dimension,
        value: &str,
        pooled: &Baseline,
        now: i64,
    ) -> Result<Vec<(String, u64, Expectation)>, EvalError> {
        let z = self.settings.spike.baseline_z;
        let mut parts = Vec::new();
        for (tenant, counts) in window {
            if tenant == ALL_TENANTS || counts.attempts == 0 {
                continue;
            }
            let own = self.baseline(tenant, dim, now).await?;
            let base = own.as_ref().unwrap_or(pooled);
            parts.push((
                tenant.clone(),
                counts.attempts,
                Expectation::from_baseline(value_counts(base, dim, value), z),
            ));
        }
        Ok(parts)
    }

    /// The dispersion of a key: mix-adjusted for fleet-wide keys with `parts`, else the
    /// key's own.
    async fn key_dispersion(
        &self,
        mix: bool,
        parts: &[(String, u64, Expectation)],
        tenant: &str,
        dim: Dimension,
        value: &str,
        now: i64,
    ) -> Result<f64, EvalError> {
        if mix {
            self.mix_dispersion(parts, dim, value, now).await
        } else {
            self.dispersion(tenant, dim, value, now).await
        }
    }

    /// The dispersion of a fleet-wide key under the mix-adjusted model: the tenants' counts
    /// are independent, so the variance of their sum is the sum of each tenant's dispersion
    /// times its expected count, and the dispersion is that over the total expectation.
    async fn mix_dispersion(
        &self,
        parts: &[(String, u64, Expectation)],
        dim: Dimension,
        value: &str,
        now: i64,
    ) -> Result<f64, EvalError> {
        let (mut var, mut mean) = (0.0, 0.0);
        for (tenant, attempts, e) in parts {
            let m = *attempts as f64 * e.rate;
            if m > 0.0 {
                var += m * self.dispersion(tenant, dim, value, now).await?;
                mean += m;
            }
        }
        Ok(if mean > 0.0 { var / mean } else { 1.0 })
    }

    /// The overdispersion of `tenant` x `dim`=`value` over the rolling span ending at the
    /// start of this hour ([`detect::dispersion`] of window-length bins against the key's rate
    /// over the span). Keys the engine cannot filter on (codes) use the tenant's failures of
    /// every kind, the nearest series it can give.
    async fn dispersion(
        &self,
        tenant: &str,
        dim: Dimension,
        value: &str,
        now: i64,
    ) -> Result<f64, EvalError> {
        let hour = now - now.rem_euclid(3600);
        let span = self.settings.spike.rolling.as_secs() as i64;
        let window = self.settings.window.as_secs() as i64;
        let (bucket, per_bin) = dispersion_bins(window);
        let own = (own_population(dim) || dim == Dimension::Category) && filterable(dim);
        let key_filter = own.then(|| (dim_name(dim), value.to_owned()));
        let failures = self
            .history(tenant, key_filter.clone(), dim, hour - span, hour, bucket)
            .await?;
        // The population: the value's own attempts, or the tenant's for failure-only keys.
        let population = if own_population(dim) {
            failures.clone()
        } else {
            self.history(tenant, None, dim, hour - span, hour, bucket)
                .await?
        };
        let bins: Vec<(u64, u64)> = failures
            .chunks(per_bin)
            .zip(population.chunks(per_bin))
            .filter(|(f, _)| f.len() == per_bin)
            .map(|(f, p)| {
                (
                    f.iter().map(|b| b.0).sum::<u64>(),
                    p.iter().map(|b| b.1).sum::<u64>(),
                )
            })
            .collect();
        let (x, n) = bins
            .iter()
            .fold((0u64, 0u64), |(x, n), b| (x + b.0, n + b.1));
        let rate = if n == 0 { 0.0 } else { x as f64 / n as f64 };
        let expected: Vec<(u64, f64)> = bins.iter().map(|(x, n)| (*x, *n as f64 * rate)).collect();
        Ok(detect::dispersion(
            &expected,
            self.settings.spike.min_failures,
        ))
    }

    /// (failures, attempts) per bucket of `[from, to)` for `tenant` (every tenant for
    /// [`ALL_TENANTS`]), filtered on `filter` when given; cached for the hour.
    async fn history(
        &self,
        tenant: &str,
        filter: Option<(&'static str, String)>,
        dim: Dimension,
        from: i64,
        to: i64,
        bucket: Bucket,
    ) -> Result<Series, EvalError> {
        let ck = ((tenant.to_owned(), filter.clone()), to);
        if let Some(s) = self.series.get(&ck) {
            return Ok(s);
        }
        let mut f = filters(from, to, Some(tenant));
        if let Some((_, v)) = &filter {
            set_dim(&mut f, dim, v);
        }
        let points = self.engine.timeseries(&f, bucket).await?;
        let series: Series = points
            .iter()
            .map(|p| (p.metrics.failures, p.metrics.attempts))
            .collect();
        self.series.put(ck, series.clone());
        Ok(series)
    }

    async fn counts_over(
        &self,
        tenant: &str,
        dim: Dimension,
        from: i64,
        to: i64,
    ) -> Result<Baseline, EvalError> {
        let f = filters(from, to, Some(tenant));
        // One row for a tenant; every tenant's for [`ALL_TENANTS`].
        let (t, rows) = tokio::try_join!(
            self.engine.breakdown(&f, Dimension::Tenant, 100_000),
            self.engine.breakdown(&f, dim, 10_000)
        )?;
        let tenant_attempts = t.iter().map(|r| r.metrics.attempts).sum();
        let values = rows
            .iter()
            .filter_map(|r| {
                key_of(r).map(|k| {
                    (
                        k,
                        Counts {
                            failures: r.metrics.failures,
                            attempts: if own_population(dim) {
                                r.metrics.attempts
                            } else {
                                tenant_attempts
                            },
                        },
                    )
                })
            })
            .collect();
        Ok(Baseline {
            kind: "rolling",
            tenant_attempts,
            values,
        })
    }

    /// Concentration, top codes and remediation for a spike alert on `o`.
    async fn enrich(
        &self,
        o: &Observation,
        expected_count: f64,
        from: i64,
        to: i64,
        now: i64,
    ) -> Result<(Vec<detect::Concentration>, Vec<TopCode>, String), EvalError> {
        let mut scope = filters(from, to, Some(&o.tenant));
        set_dim(&mut scope, o.dim, &o.value);
        let hour = now - now.rem_euclid(3600);
        let span = self.settings.spike.rolling.as_secs() as i64;
        let population_scope = filters(hour - span, hour, Some(&o.tenant));
        let mut conc = Vec::new();
        // A fleet-wide key is explained first by the tenants it happens in.
        let dims: Vec<Dimension> = if o.tenant == ALL_TENANTS {
            std::iter::once(Dimension::Tenant)
                .chain(CONCENTRATION_DIMS.iter().copied())
                .collect()
        } else {
            CONCENTRATION_DIMS.to_vec()
        };
        // Every dimension's two breakdowns at once: the alert waits for one round trip, not
        // one per dimension (detection delay is evaluation time plus the cadence).
        let searched: Vec<Dimension> = dims
            .iter()
            .copied()
            .filter(|&d| {
                // A category alert's codes are its top codes, and a code fixes its category.
                let redundant = matches!(
                    (o.dim, d),
                    (Dimension::Category, Dimension::Code) | (Dimension::Code, Dimension::Category)
                );
                d != o.dim && !redundant && filterable(o.dim)
            })
            .collect();
        let (scope_ref, population_ref, tenant) = (&scope, &population_scope, &o.tenant);
        let breakdowns = futures::future::try_join_all(searched.iter().map(|&d| async move {
            tokio::try_join!(
                self.engine.breakdown(scope_ref, d, 1000),
                self.population(tenant, d, hour, population_ref)
            )
        }));
        let codes = async {
            if filterable(o.dim) {
                self.engine.top_codes(&scope, 5).await
            } else {
                Ok(Vec::new())
            }
        };
        let (breakdowns, codes) = tokio::try_join!(breakdowns, codes)?;
        for (&d, (cur, pop)) in searched.iter().zip(breakdowns) {
            let failures: Vec<(String, u64)> = cur
                .iter()
                .filter_map(|r| key_of(r).map(|k| (k, r.metrics.failures)))
                .filter(|(_, n)| *n > 0)
                .collect();
            // Failure-only dimensions are spread like the baseline's failures, the others
            // like its attempts.
            let population: Vec<(String, u64)> = pop
                .iter()
                .filter_map(|r| {
                    key_of(r).map(|k| {
                        let n = if own_population(d)
                            || matches!(d, Dimension::Stage | Dimension::Tenant)
                        {
                            r.metrics.attempts
                        } else {
                            r.metrics.failures
                        };
                        (k, n)
                    })
                })
                .collect();
            conc.extend(detect::concentration(
                dim_name(d),
                &failures,
                &population,
                expected_count,
                self.settings.spike.min_concentration_share,
            ));
        }
        let rank = |c: &detect::Concentration| {
            dims.iter()
                .position(|d| dim_name(*d) == c.dimension)
                .unwrap_or(usize::MAX)
        };
        // Most over-represented first; equal lifts (to 1e-6) in the dimension order above.
        conc.sort_by_key(|c| (-((detect::lift(c) * 1e6).round() as i64), rank(c)));
        conc.truncate(10);
        let top: Vec<TopCode> = codes
            .iter()
            .filter(|c| o.dim != Dimension::Code || c.code.as_deref() == Some(&o.value))
            .map(|c| TopCode {
                code: c.code.clone(),
                symbol: c.symbol.clone(),
                count: c.failures,
                cause: c.cause.clone(),
                remediation: c.remediation.clone(),
            })
            .collect();
        let remediation = top
            .iter()
            .map(|c| c.remediation.clone())
            .find(|r| !r.is_empty())
            .or_else(|| {
                (o.dim == Dimension::Category)
                    .then(|| {
                        self.catalog
                            .category(&o.value)
                            .map(|c| c.remediation.clone())
                    })
                    .flatten()
            })
            .unwrap_or_default();
        Ok((conc, top, remediation))
    }

    /// The baseline population of `dim` for the concentration search: the breakdown of
    /// `scope` (the rolling span ending at `hour`), cached for the hour.
    async fn population(
        &self,
        tenant: &str,
        dim: Dimension,
        hour: i64,
        scope: &Filters,
    ) -> Result<Vec<BreakdownRow>, QueryError> {
        let ck = ((tenant.to_owned(), dim_name(dim)), hour);
        if let Some(rows) = self.populations.get(&ck) {
            return Ok(rows);
        }
        let rows = self.engine.breakdown(scope, dim, 1000).await?;
        self.populations.put(ck, rows.clone());
        Ok(rows)
    }

    /// Steps the lifecycle of one key and writes the transition.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        cur: Option<Alert>,
        key: &str,
        o: &Observation,
        assessment: Option<(Assessment, &'static str, Option<Onset>)>,
        verdict: Verdict,
        now: i64,
        (from, to): (i64, i64),
        silences: &[Silence],
    ) -> Result<(), EvalError> {
        let phase = cur.as_ref().map(phase_of);
        let Some(step) = lifecycle::step(phase, verdict, now, &self.settings.lifecycle) else {
            return Ok(());
        };
        let mut detail = cur.as_ref().map(|a| a.detail.clone()).unwrap_or_default();
        detail.window_start = from;
        detail.window_end = to;
        detail.observed_count = o.counts.failures;
        detail.attempts = o.counts.attempts;
        detail.observed_rate = o.counts.rate();
        detail.affected_devices = o.devices;
        detail.affected_users = o.users;
        if let Some((a, kind, onset)) = assessment {
            detail.expected_rate = a.expected_rate;
            detail.expected_count = a.expected_count;
            detail.baseline = kind.to_owned();
            detail.dispersion = a.dispersion;
            // Until the alert fires, what this evaluation fired on; from then on, what made
            // it fire.
            if cur.as_ref().is_none_or(|a| a.firing_at.is_none()) {
                detail.onset = onset;
            }
        }
        let wants_enrichment = matches!(step.notify, Some(Kind::Firing | Kind::Renotify))
            || (cur.is_none() && step.phase.status.is_open());
        if wants_enrichment {
            let started = std::time::Instant::now();
            let (c, t, r) = self.enrich(o, detail.expected_count, from, to, now).await?;
            tracing::debug!(
                key,
                seconds = started.elapsed().as_secs_f64(),
                "alert enriched"
            );
            detail.concentration = c;
            detail.top_codes = t;
            detail.remediation = r;
        }
        let category = if o.dim == Dimension::Category {
            o.value.clone()
        } else {
            "all".to_owned()
        };
        self.write(
            cur,
            key,
            "spike",
            &o.tenant,
            &category,
            dim_name(o.dim),
            &o.value,
            step,
            detail,
            now,
            silences,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        cur: Option<Alert>,
        key: &str,
        rule: &str,
        tenant: &str,
        category: &str,
        dimension: &str,
        value: &str,
        step: lifecycle::Step,
        detail: Detail,
        now: i64,
        silences: &[Silence],
    ) -> Result<(), EvalError> {
        let p = step.phase;
        let new = cur.is_none();
        let mut a = match cur {
            Some(a) => a,
            None => {
                let episode = self.store.last_episode(key).await? + 1;
                Alert {
                    alert_id: alert_id(key, episode),
                    alert_key: key.to_owned(),
                    episode,
                    rule: rule.to_owned(),
                    tenant: tenant.to_owned(),
                    category: category.to_owned(),
                    dimension: dimension.to_owned(),
                    dimension_value: value.to_owned(),
                    status: p.status,
                    version: 0,
                    started_at: p.started_at,
                    firing_at: None,
                    resolved_at: None,
                    recovering_since: None,
                    last_notified_at: None,
                    acknowledged_by: None,
                    acknowledged_at: None,
                    updated_at: now,
                    detail: Detail::default(),
                }
            }
        };
        a.status = p.status;
        a.version += 1;
        a.firing_at = p.firing_at;
        a.recovering_since = p.recovering_since;
        a.last_notified_at = p.last_notified_at;
        a.resolved_at = step.resolved_at;
        a.updated_at = now;
        a.detail = detail;
        let outgoing = step.notify.map(|kind| {
            let id = notification_id(&a.alert_id, kind, a.version);
            let sev = severity(&a, kind);
            let mut payload = notification_json(&a, kind, &id, now, &self.public_url);
            if let serde_json::Value::Object(m) = &mut payload {
                m.insert("severity".into(), serde_json::json!(sev));
            }
            Outgoing {
                kind,
                id,
                payload: payload.to_string(),
                silenced_by: silences
                    .iter()
                    .find(|s| s.matches(&a))
                    .map(|s| s.id.clone()),
                destinations: self
                    .routes
                    .iter()
                    .filter(|r| r.takes(&a, sev))
                    .map(|r| r.name.clone())
                    .collect(),
            }
        });
        let won = if new {
            self.store.insert(&a, outgoing.as_ref(), now).await?
        } else {
            self.store.update(&a, outgoing.as_ref(), now).await?
        };
        if won {
            if let Some(n) = &outgoing {
                if n.silenced_by.is_some() {
                    self.metrics.silenced.inc();
                } else {
                    self.metrics.notifications.inc();
                    for w in &self.wake {
                        w.notify_one();
                    }
                }
                let d = &a.detail;
                tracing::info!(alert_id = %a.alert_id, tenant = %a.tenant, key, kind = n.kind.as_str(),
                    silenced = n.silenced_by.is_some(), at = now, observed = d.observed_count,
                    attempts = d.attempts, expected = d.expected_count, dispersion = d.dispersion,
                    devices = d.affected_devices, baseline = %d.baseline,
                    onset_start = d.onset.map(|o| o.start), onset_observed = d.onset.map(|o| o.observed_count),
                    onset_attempts = d.onset.map(|o| o.attempts),
                    "alert notification recorded");
            }
        } else {
            tracing::debug!(alert_id = %a.alert_id, "another analyzer wrote this alert first");
        }
        Ok(())
    }

    /// Evaluates one threshold rule for every tenant it covers.
    async fn evaluate_rule(
        &self,
        rule: &Rule,
        now: i64,
        open_by_key: &mut HashMap<String, Alert>,
        silences: &[Silence],
    ) -> Result<usize, EvalError> {
        let e = &rule.expr;
        let win = e.window.as_secs() as i64;
        let (from, to) = (now - win, now);
        let mut population = filters(from, to, rule.tenant.as_deref());
        population.platform = e.platform.clone();
        population.method = e.method.clone();
        population.os_version = e.os_version.clone();
        population.stage = e.stage.clone();
        let mut scope = population.clone();
        scope.category = e.category.clone();
        let (pop, hits) = tokio::try_join!(
            self.engine
                .breakdown(&population, Dimension::Tenant, 100_000),
            self.engine.breakdown(&scope, Dimension::Tenant, 100_000)
        )?;
        let mut tenants: Vec<String> = pop.iter().filter_map(key_of).collect();
        let prefix = format!("rule:{}|", rule.name);
        for k in open_by_key.keys() {
            if let Some(t) = k.strip_prefix(&prefix)
                && !tenants.iter().any(|x| x == t)
            {
                tenants.push(t.to_owned());
            }
        }
        let (dimension, value, category) = match &e.category {
            Some(c) => ("category", c.clone(), c.clone()),
            None => ("rule", rule.name.clone(), "all".to_owned()),
        };
        let mut n = 0;
        for tenant in tenants {
            let attempts = pop
                .iter()
                .find(|r| r.key.as_deref() == Some(&tenant))
                .map_or(0, |r| r.metrics.attempts);
            let hit = hits.iter().find(|r| r.key.as_deref() == Some(&tenant));
            let failures = hit.map_or(0, |r| r.metrics.failures);
            let measured = match e.metric {
                Metric::Count => failures as f64,
                Metric::FailureRate if attempts == 0 => 0.0,
                Metric::FailureRate => failures as f64 / attempts as f64,
            };
            let verdict = if e.breached(measured) {
                Verdict::Breach
            } else if attempts == 0 && failures == 0 {
                Verdict::NoData
            } else {
                Verdict::Recovered
            };
            let key = format!("{prefix}{tenant}");
            let cur = open_by_key.remove(&key);
            let phase = cur.as_ref().map(phase_of);
            let Some(step) = lifecycle::step(phase, verdict, now, &self.settings.lifecycle) else {
                continue;
            };
            n += 1;
            let o = Observation {
                tenant: tenant.clone(),
                dim: Dimension::Category,
                value: value.clone(),
                counts: Counts { failures, attempts },
                devices: hit.map_or(0, |r| r.metrics.affected_devices),
                users: hit.map_or(0, |r| r.metrics.affected_users),
            };
            let mut detail = cur.as_ref().map(|a| a.detail.clone()).unwrap_or_default();
            detail.window_start = from;
            detail.window_end = to;
            detail.observed_count = failures;
            detail.attempts = attempts;
            detail.observed_rate = o.counts.rate();
            detail.affected_devices = o.devices;
            detail.affected_users = o.users;
            detail.baseline = "threshold".into();
            detail.expr = Some(rule.text.clone());
            detail.expected_rate = if e.metric == Metric::FailureRate {
                e.threshold
            } else if attempts > 0 {
                e.threshold / attempts as f64
            } else {
                0.0
            };
            detail.expected_count = if e.metric == Metric::Count {
                e.threshold
            } else {
                e.threshold * attempts as f64
            };
            if matches!(step.notify, Some(Kind::Firing | Kind::Renotify)) && e.category.is_some() {
                let (c, t, r) = self
                    .enrich(&o, detail.expected_count, from, to, now)
                    .await?;
                detail.concentration = c;
                detail.top_codes = t;
                detail.remediation = r;
            }
            self.write(
                cur, &key, &rule.name, &tenant, &category, dimension, &value, step, detail, now,
                silences,
            )
            .await?;
        }
        Ok(n)
    }
}

/// Whether an observation's own key can be applied as a query filter (the engine filters on
/// category, platform, method, OS version and stage; not on a code).
fn filterable(dim: Dimension) -> bool {
    matches!(
        dim,
        Dimension::Category | Dimension::Platform | Dimension::OsVersion | Dimension::Method
    )
}

fn set_dim(f: &mut Filters, dim: Dimension, value: &str) {
    match dim {
        Dimension::Category => f.category = Some(value.to_owned()),
        Dimension::Platform => f.platform = Some(value.to_owned()),
        Dimension::OsVersion => f.os_version = Some(value.to_owned()),
        Dimension::Method => f.method = Some(value.to_owned()),
        _ => {}
    }
}

/// The baseline counts of one value: its own, or none of the population's attempts failing
/// on it.
fn value_counts(base: &Baseline, dim: Dimension, value: &str) -> Counts {
    base.values
        .get(value)
        .copied()
        .unwrap_or(absent(dim, base.tenant_attempts))
}

/// The counts of a value absent from a breakdown: no failures, over its own (empty)
/// population or the tenant's attempts.
fn absent(dim: Dimension, tenant_attempts: u64) -> Counts {
    Counts {
        failures: 0,
        attempts: if own_population(dim) {
            0
        } else {
            tenant_attempts
        },
    }
}

/// A breakdown row's failures and attempts.
fn row_counts(r: &BreakdownRow) -> Counts {
    Counts {
        failures: r.metrics.failures,
        attempts: r.metrics.attempts,
    }
}

/// The time series bucket and the buckets per bin used to estimate a key's dispersion at the
/// window's length: whole hours or quarter hours when the window is made of them, else
/// 5-minute buckets (windows shorter than 5 minutes use 5-minute bins, whose dispersion is
/// at least that of shorter bins for clustered counts: the estimate errs towards caution).
fn dispersion_bins(window: i64) -> (Bucket, usize) {
    let bucket = if window >= 3600 && window % 3600 == 0 {
        Bucket::Hour
    } else if window >= 900 && window % 900 == 0 {
        Bucket::FifteenMinutes
    } else {
        Bucket::FiveMinutes
    };
    let per_bin = (window / i64::from(bucket.seconds())).max(1);
    (bucket, usize::try_from(per_bin).unwrap_or(1))
}

fn merge(into: &mut Baseline, b: Baseline) {
    into.tenant_attempts += b.tenant_attempts;
    for (k, c) in b.values {
        into.values.entry(k).or_default().add(c);
    }
}

fn phase_of(a: &Alert) -> Phase {
    Phase {
        status: a.status,
        started_at: a.started_at,
        firing_at: a.firing_at,
        recovering_since: a.recovering_since,
        last_notified_at: a.last_notified_at,
        acknowledged: a.acknowledged_by.is_some(),
    }
}
