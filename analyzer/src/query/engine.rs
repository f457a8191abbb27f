//! Builds and runs the aggregate queries (summary, breakdowns, time series, top codes).
//! Every value is bound with `?`; only validated identifiers and fixed fragments are formatted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use clickhouse::Client;
use serde::{Deserialize, Serialize};

use super::QueryError;
use super::classes::{ClassCache, RawSignal, SignalInfo, format_code};
use super::filters::{Filters, SERVER_SOURCE_KIND, SourceChoice};
use super::plan::{Family, Grain, Resolution, Segment, Source, plan, settle_day_spans};
use super::series;
use super::sql::MESSAGE_KEY_SQL;

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone)]
pub enum Bind {
    U32(u32),
    U64(u64),
    Str(String),
    U64s(Vec<u64>),
    Strs(Vec<String>),
}

/// SQL text with its bound values, in placeholder order.
#[derive(Debug, Default, Clone)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    pub fn bind(&mut self, b: Bind) -> &mut Self {
        self.text.push('?');
        self.binds.push(b);
        self
    }
    pub fn append(&mut self, other: Sql) {
        self.text.push_str(&other.text);
        self.binds.extend(other.binds);
    }
    /// Creates the clickhouse query with all binds applied.
    pub fn query(&self, client: &Client) -> clickhouse::query::Query {
        let mut q = client
            .query(&self.text)
            .with_setting("max_query_size", "16777216");
        for b in &self.binds {
            q = match b {
                Bind::U32(v) => q.bind(*v),
                Bind::U64(v) => q.bind(*v),
                Bind::Str(v) => q.bind(v.as_str()),
                Bind::U64s(v) => q.bind(v.as_slice()),
                Bind::Strs(v) => q.bind(v.as_slice()),
            };
        }
        sql_log::record(&q);
        q
    }
}

/// An optional log of every query the API sends to ClickHouse, binds applied, for checking
/// our SQL against other ClickHouse versions (`scripts/chdb-compat.py` replays it on chDB).
/// Enabled by setting `FLEETPULSE_ANALYZER_SQL_LOG` to a file path before the first query;
/// each query is appended followed by a line holding only `;;`. Off by default: nothing is
/// recorded and the cost is one check of an initialised `OnceLock`.
pub mod sql_log {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    /// The environment variable naming the log file.
    pub const ENV: &str = "FLEETPULSE_ANALYZER_SQL_LOG";

    static SINK: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();

    fn sink() -> &'static Option<Mutex<std::fs::File>> {
        SINK.get_or_init(|| {
            let path = std::env::var_os(ENV)?;
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    tracing::error!(error = %e, path = ?path, "cannot open the SQL log; not recording");
                    None
                }
            }
        })
    }

    pub(super) fn record(q: &clickhouse::query::Query) {
        if let Some(m) = sink()
            && let Ok(mut f) = m.lock()
            && let Err(e) = write!(f, "{}\n;;\n", q.sql_display())
        {
            tracing::warn!(error = %e, "writing the SQL log failed");
        }
    }
}

/// Time bucket widths for time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    FiveMinutes,
    FifteenMinutes,
    Hour,
    Day,
}

impl Bucket {
    /// The values [`Bucket::parse`] accepts.
    pub const NAMES: &'static [&'static str] = &["5m", "15m", "1h", "1d"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "5m" => Some(Self::FiveMinutes),
            "15m" => Some(Self::FifteenMinutes),
            "1h" => Some(Self::Hour),
            "1d" => Some(Self::Day),
            _ => None,
        }
    }
    pub fn seconds(self) -> u32 {
        match self {
            Self::FiveMinutes => 300,
            Self::FifteenMinutes => 900,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }
    fn function(self) -> &'static str {
        match self {
            Self::FiveMinutes => "toStartOfFiveMinute",
            Self::FifteenMinutes => "toStartOfFifteenMinutes",
            Self::Hour => "toStartOfHour",
            Self::Day => "toStartOfDay",
        }
    }
    fn resolution(self) -> Resolution {
        match self {
            Self::FiveMinutes | Self::FifteenMinutes => Resolution::SubHour,
            Self::Hour => Resolution::Hour,
            Self::Day => Resolution::Day,
        }
    }
}

/// Dimensions a breakdown can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Category,
    Code,
    Platform,
    OsVersion,
    Method,
    Tenant,
    Stage,
    Outcome,
    /// `client` or `server` (events from Microsoft Graph), from `source_kind`.
    Side,
}

impl Dimension {
    pub const NAMES: &'static [&'static str] = &[
        "category",
        "code",
        "platform",
        "os_version",
        "enrollment_method",
        "tenant",
        "stage",
        "outcome",
        "side",
    ];

    /// The stored column a breakdown by this dimension groups on (`category` is derived from
    /// the signal id `sig`, `side` from `source_kind`).
    pub fn column(self) -> &'static str {
        match self {
            Self::Category => "sig",
            Self::Code => "error_code",
            Self::Platform => "platform",
            Self::OsVersion => "os_version",
            Self::Method => "enrollment_method",
            Self::Tenant => "tenant",
            Self::Stage => "stage",
            Self::Outcome => "outcome",
            Self::Side => "source_kind",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "category" => Self::Category,
            "code" => Self::Code,
            "platform" => Self::Platform,
            "os_version" => Self::OsVersion,
            "enrollment_method" | "method" => Self::Method,
            "tenant" => Self::Tenant,
            "stage" => Self::Stage,
            "outcome" => Self::Outcome,
            "side" => Self::Side,
            _ => return None,
        })
    }
}

/// A column the per-segment subqueries must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Col {
    Named(&'static str),
    MessageKey,
    Sig,
    /// The signal core: `sig` without platform and stage (migration 0004).
    Core,
    Ts(Bucket),
}

impl Col {
    pub(super) fn select(self, source: Source) -> String {
        let raw = source == Source::Raw;
        match self {
            // A facet row counts one dimension's value, stored as `value`.
            Col::Named(n)
                if source_family(source) == Some(Family::FleetFacets)
                    && Family::FACETS.contains(&n) =>
            {
                format!("value AS {n}")
            }
            Col::Named(n) => n.to_owned(),
            Col::MessageKey if raw => format!("{MESSAGE_KEY_SQL} AS message_key"),
            Col::MessageKey => "message_key".to_owned(),
            // Byte-identical to the `sig` of migration 0003's views.
            Col::Sig if raw => format!(
                "cityHash64(error_code, error_has_code, error_symbol, {MESSAGE_KEY_SQL}, platform, stage, source_kind) AS sig"
            ),
            Col::Sig => "sig".to_owned(),
            // Byte-identical to the `core` of migration 0004's views.
            Col::Core if raw => format!(
                "cityHash64(error_code, error_has_code, error_symbol, {MESSAGE_KEY_SQL}, source_kind) AS core"
            ),
            Col::Core => "core".to_owned(),
            Col::Ts(b) if raw => format!("{}(occurred_at) AS ts", b.function()),
            Col::Ts(b) => format!("{}(bucket) AS ts", b.function()),
        }
    }
    fn alias(self) -> &'static str {
        match self {
            Col::Named(n) => n,
            Col::MessageKey => "message_key",
            Col::Sig => "sig",
            Col::Core => "core",
            Col::Ts(_) => "ts",
        }
    }
}

/// Output aliases differ from the state columns' names (`events`, `devices`, `users`): an alias
/// equal to a column name would shadow it inside the other aggregates. Also the column order
/// of `rollup_closed_series` (`series::finalize` stores these per closed bucket).
pub(super) const METRICS: &str = "countMerge(events) AS n_events, \
countMergeIf(events, outcome IN ('succeeded', 'failed')) AS attempts, \
countMergeIf(events, outcome = 'failed') AS failures, \
uniqCombinedMergeIf(14)(devices, outcome = 'failed') AS affected_devices, \
uniqCombinedIfMergeIf(14)(users, outcome = 'failed') AS affected_users, \
uniqCombinedMerge(14)(devices) AS n_devices, \
uniqCombinedIfMerge(14)(users) AS n_users";

/// Unique counts from merged rollup states (`uniqCombined(14)`, migration 0003) are exact up to
/// this many distinct values: below it a state is a set of 64-bit hashes. Above it the count is
/// a HyperLogLog estimate with 2^14 cells; measured on ClickHouse 18.16 over 20-200 random
/// sets per size from 1,500 to 1,000,000 distinct (tenant, device) pairs: mean relative error
/// 0.4-0.7%, 99th percentile 1.3-2.1%, largest seen 2.1% (BENCHMARKS.md). The API marks such
/// counts with `"estimated": true`. Raw-only plans (`source=raw`) count exactly.
pub const EXACT_UNIQUE_LIMIT: u64 = 1024;

/// The raw-edge states of a mixed plan: the same functions as the rollups' views.
const RAW_STATES: &str = ", countState() AS events, uniqCombinedState(14)(tenant, device_id) AS devices, \
uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users";

/// [`METRICS`] over the per-tenant totals of migration 0007 (`Family::TenantTotals`): no
/// outcome column, each unique count is its own state, merged once.
const TENANT_METRICS: &str = "countMerge(events) AS n_events, \
countIfMerge(attempt_events) AS attempts, \
countIfMerge(failed_events) AS failures, \
uniqCombinedIfMerge(14)(failed_devices) AS affected_devices, \
uniqCombinedIfMerge(14)(failed_users) AS affected_users, \
uniqCombinedMerge(14)(devices) AS n_devices, \
uniqCombinedIfMerge(14)(users) AS n_users";

/// The raw-edge states of a [`TENANT_METRICS`] plan: the same functions as 0007's views.
const TENANT_RAW_STATES: &str = ", countState() AS events, \
countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events, \
countIfState(toUInt8(outcome = 'failed')) AS failed_events, \
uniqCombinedState(14)(tenant, device_id) AS devices, \
uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices, \
uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users, \
uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users";

/// [`METRICS`] for rows that are all failed events (category breakdowns): every device and
/// user is then an affected one, so each uniq state column is merged once, not twice.
const FAILED_METRICS: &str = "countMerge(events) AS n_events, \
countMergeIf(events, outcome IN ('succeeded', 'failed')) AS attempts, \
countMerge(events) AS failures, \
uniqCombinedMerge(14)(devices) AS affected_devices, \
uniqCombinedIfMerge(14)(users) AS affected_users, \
affected_devices AS n_devices, \
affected_users AS n_users";

/// [`METRICS`] computed straight from raw rows (a plan that is one raw segment): plain
/// aggregates over the rows of [`Engine::raw_rows`], with no `-State` per group followed by a
/// `-Merge`. Building and re-merging uniq states costs about three times hashing the rows
/// once (measured at 10M events: 3.1 s against 1.0 s for a category breakdown). Exact: this
/// is the path `source=raw` cross-checks the rollups with.
const RAW_METRICS: &str = "count() AS n_events, \
countIf(outcome IN ('succeeded', 'failed')) AS attempts, \
countIf(outcome = 'failed') AS failures, \
uniqExactIf(u_tenant, u_device, outcome = 'failed') AS affected_devices, \
uniqExactIf(u_tenant, u_upn, outcome = 'failed' AND u_upn != '') AS affected_users, \
uniqExact(u_tenant, u_device) AS n_devices, \
uniqExactIf(u_tenant, u_upn, u_upn != '') AS n_users";

/// [`FAILED_METRICS`] over raw rows (see [`RAW_METRICS`]).
const RAW_FAILED_METRICS: &str = "count() AS n_events, \
countIf(outcome IN ('succeeded', 'failed')) AS attempts, \
count() AS failures, \
uniqExact(u_tenant, u_device) AS affected_devices, \
uniqExactIf(u_tenant, u_upn, u_upn != '') AS affected_users, \
affected_devices AS n_devices, \
affected_users AS n_users";

/// Counts for one group. Events are stage observations; `attempts` are those with a terminal
/// outcome (succeeded or failed); affected devices/users are unique among failed events.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Metrics {
    pub events: u64,
    pub attempts: u64,
    pub failures: u64,
    pub failure_rate: f64,
    pub affected_devices: u64,
    pub affected_users: u64,
    pub devices: u64,
    pub users: u64,
    /// True when a unique count above is a HyperLogLog estimate (more than
    /// [`EXACT_UNIQUE_LIMIT`] distinct values merged from rollup states); false when all are
    /// exact.
    pub estimated: bool,
}

/// Whether unique counts read from rollup states (`exact` false) are estimates.
fn is_estimate(exact: bool, counts: &[u64]) -> bool {
    !exact && counts.iter().any(|&n| n > EXACT_UNIQUE_LIMIT)
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct MetricRow {
    key: String,
    events: u64,
    attempts: u64,
    failures: u64,
    affected_devices: u64,
    affected_users: u64,
    devices: u64,
    users: u64,
}

impl MetricRow {
    /// `exact`: the counts come from raw rows (a raw-only plan).
    fn metrics(&self, exact: bool) -> Metrics {
        Metrics {
            estimated: is_estimate(
                exact,
                &[
                    self.affected_devices,
                    self.affected_users,
                    self.devices,
                    self.users,
                ],
            ),
            events: self.events,
            attempts: self.attempts,
            failures: self.failures,
            failure_rate: if self.attempts == 0 {
                0.0
            } else {
                self.failures as f64 / self.attempts as f64
            },
            affected_devices: self.affected_devices,
            affected_users: self.affected_users,
            devices: self.devices,
            users: self.users,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BreakdownRow {
    /// The group's value; for `code`, `0x%08X` or null when the events carried no code.
    pub key: Option<String>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CategoryCount {
    pub category: String,
    pub failures: u64,
    pub affected_devices: u64,
    pub affected_users: u64,
    /// See [`Metrics::estimated`].
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub top_categories: Vec<CategoryCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Start of the bucket.
    #[schema(format = DateTime)]
    pub t: String,
    #[serde(skip)]
    pub ts: u32,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TopCode {
    pub code: Option<String>,
    /// The first of `symbols`: the named symbol reported with most of this row's failures
    /// (ties: the greater symbol), or `""` when the failures came without one.
    pub symbol: String,
    /// Every symbol reported with this code and category: named ones first, by most failures
    /// (ties: the greater symbol); `""` (reported without a symbol) last. One failure often
    /// reaches us under two names: Windows logs a server fault as event 52 with the
    /// SOAP subcode (`DeviceCapReached`) and then as event 76 with the HRESULT's name
    /// (`MENROLL_E_DEVICECAPREACHED`), so a row per symbol listed one failure twice. A row
    /// without a code keeps one symbol: the symbol is then its only identity.
    pub symbols: Vec<String>,
    pub category: String,
    pub failures: u64,
    pub affected_devices: u64,
    pub affected_users: u64,
    /// See [`Metrics::estimated`].
    pub estimated: bool,
    pub failure_reason: String,
    pub cause: String,
    pub remediation: String,
    pub source_doc: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct SignalRow {
    sig: u64,
    error_code: u32,
    error_has_code: u8,
    error_symbol: String,
    message_key: String,
    platform: String,
    stage: String,
    source_kind: String,
}

/// A [`SignalRow`] with its core (`Engine::core_map`).
#[derive(Debug, Deserialize, clickhouse::Row)]
struct CoreSignalRow {
    sig: u64,
    core: u64,
    error_code: u32,
    error_has_code: u8,
    error_symbol: String,
    message_key: String,
    platform: String,
    stage: String,
    source_kind: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct TsRow {
    ts: u32,
    events: u64,
    attempts: u64,
    failures: u64,
    affected_devices: u64,
    affected_users: u64,
    devices: u64,
    users: u64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct TopCodeRow {
    error_code: u32,
    error_has_code: u8,
    /// `(symbol, failures)` pairs, several per symbol (summed by [`symbols_by_failures`]).
    symbols: Vec<(String, u64)>,
    category: String,
    sample: u64,
    failures: u64,
    affected_devices: u64,
    affected_users: u64,
}

/// How a plan assigns categories ([`Engine::plan_categories`]).
enum Categories {
    /// The question needs none.
    None,
    /// By signal core, every core classifying uniformly (this map).
    Cores(CategoryMap),
    /// By signal id, for the signals in the plan's segments (read once they are checked).
    Signals,
}

/// Category assignment for the signals in scope, bound into `transform`.
pub(super) struct CategoryMap {
    /// The column the ids are values of: `sig`, or `core` (see [`Engine::core_map`]).
    key: Col,
    sigs: Vec<u64>,
    cats: Vec<String>,
    /// For `core` maps: what each core (every signal of it) classifies as.
    infos: HashMap<u64, Arc<SignalInfo>>,
    /// For `sig` maps: each signal's code as `error_has_code << 32 | error_code` (parallel to
    /// `sigs`), so raw-row questions can narrow rows by code before computing signal ids.
    codes: Vec<u64>,
}

impl CategoryMap {
    /// No signal classified: every failed row is `unknown`.
    fn empty() -> Self {
        Self {
            key: Col::Sig,
            sigs: Vec::new(),
            cats: Vec::new(),
            infos: HashMap::new(),
            codes: Vec::new(),
        }
    }

    /// The signal ids classified as `category`. None when the map cannot tell (a core map, or
    /// `unknown`, which is every signal not in the map).
    pub(super) fn sigs_of(&self, category: &str) -> Option<Vec<u64>> {
        self.of_category(category, &self.sigs)
    }

    /// The codes (`error_has_code << 32 | error_code`) of the signals classified as
    /// `category`: a failed row of that category has one of them. None as for
    /// [`Self::sigs_of`].
    pub(super) fn codes_of(&self, category: &str) -> Option<Vec<u64>> {
        self.of_category(category, &self.codes)
    }

    /// The distinct `values` (parallel to the signals) of the signals classified as `category`,
    /// sorted.
    fn of_category(&self, category: &str, values: &[u64]) -> Option<Vec<u64>> {
        if self.key != Col::Sig || category == "unknown" {
            return None;
        }
        let mut out: Vec<u64> = self
            .cats
            .iter()
            .zip(values)
            .filter(|(c, _)| c.as_str() == category)
            .map(|(_, v)| *v)
            .collect();
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// The rollup family a source reads, if any.
fn source_family(source: Source) -> Option<Family> {
    match source {
        Source::Raw => None,
        Source::Rollup(family, _) => Some(family),
    }
}

/// One side of a span check (`Engine::resolve_spans`): the span's (0) or its days' (1) events.
#[derive(Debug, Deserialize, clickhouse::Row)]
struct SpanCount {
    i: u32,
    side: u8,
    n: u64,
}

/// The aggregate query engine.
pub struct Engine {
    client: Client,
    db: String,
    cache: Arc<ClassCache>,
    /// See [`Engine::set_day_spans_since`].
    day_spans_since: AtomicU32,
}

fn unix_now() -> u32 {
    u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

impl Engine {
    /// `db` must be a validated identifier.
    pub fn new(client: Client, db: String, cache: Arc<ClassCache>) -> Self {
        Self {
            client,
            db,
            cache,
            day_spans_since: AtomicU32::new(0),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
    pub fn db(&self) -> &str {
        &self.db
    }
    pub fn cache(&self) -> &Arc<ClassCache> {
        &self.cache
    }

    /// The segments answering `f` at `resolution` from `family` (raw rows when the caller
    /// asked for `source=raw`).
    pub(super) fn segments(
        &self,
        f: &Filters,
        resolution: Resolution,
        family: Family,
    ) -> Vec<Segment> {
        let segs = plan(
            f.from,
            f.to,
            resolution,
            (f.source == SourceChoice::Auto).then_some(family),
        );
        settle_day_spans(
            segs,
            unix_now(),
            self.day_spans_since.load(Ordering::Relaxed),
        )
    }

    /// Tells the planner the first day day spans are kept for: from the span builder's last
    /// pass, or, in an analyzer without one, the oldest day the span tables hold
    /// (`rollups::spans::watch_day_spans`). Hour edges of
    /// older days are read from the hourly rollup without trying spans first. 0 (the default,
    /// until the first pass or read) tries them everywhere.
    pub fn set_day_spans_since(&self, day: u32) {
        self.day_spans_since.store(day, Ordering::Relaxed);
    }

    /// `segs` as [`Self::resolve_spans`] turns them out when every week span is current: each
    /// span read alone, checked, and its fallback days dropped. The common case: a span goes
    /// stale only when events arrive late for the days under it, until the next build.
    fn spans_assumed_current(segs: &[Segment]) -> Vec<Segment> {
        segs.iter()
            .filter_map(|seg| match seg.source {
                Source::Rollup(family, g) if g.is_span() => Some(Segment {
                    source: Source::Rollup(family, g.checked()),
                    ..*seg
                }),
                Source::Rollup(_, g) if g.is_fallback() => None,
                _ => Some(*seg),
            })
            .collect()
    }

    /// Answers `question` over `segs`, checking the plan's week spans *while* the question
    /// runs on them rather than before it: the check ([`Self::resolve_spans`]) and the
    /// question go to ClickHouse together, and the answer is kept when every span proved
    /// current. When one did not (events arrived late for its days), that answer is dropped
    /// and the question runs again over what the check resolved, so a stale span is never
    /// served. Why: the check is its own round trip (~3 ms at 10M events), which before came
    /// first on every span-backed question, about a tenth of a dashboard question's time
    /// (BENCHMARKS.md, issue 7, thirteenth session).
    pub(super) async fn with_checked_spans<T, Q, F>(
        &self,
        segs: Vec<Segment>,
        question: Q,
    ) -> Result<T, QueryError>
    where
        Q: Fn(Vec<Segment>) -> F,
        F: Future<Output = Result<T, QueryError>>,
    {
        let assumed = Self::spans_assumed_current(&segs);
        if assumed == segs {
            return question(segs).await;
        }
        let (resolved, answer) = tokio::join!(self.resolve_spans(segs), question(assumed.clone()));
        let resolved = resolved?;
        if resolved == assumed {
            answer
        } else {
            question(resolved).await
        }
    }

    /// `segs` with each week span checked now: a span whose event count equals the days'
    /// count in the daily rollup becomes a checked span (read alone, no guard), any other one
    /// its days; their guarded fallbacks go. One small query for all the plan's spans (two at
    /// most), instead of guards evaluated inside the question: 18.16 runs a scalar subquery
    /// once per analysis of every nested SELECT, and each branch of a UNION costs ~2.5 ms to
    /// set up even when it reads nothing (BENCHMARKS.md, issue 7, ninth session).
    pub(super) async fn resolve_spans(
        &self,
        segs: Vec<Segment>,
    ) -> Result<Vec<Segment>, QueryError> {
        let spans: Vec<(usize, Family, Grain, u32, u32)> = segs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.source {
                Source::Rollup(family, g) if g.is_span() => Some((i, family, g, s.from, s.to)),
                _ => None,
            })
            .collect();
        if spans.is_empty() {
            return Ok(segs);
        }
        let mut sql = Sql::default();
        for (j, (i, family, grain, from, to)) in spans.iter().enumerate() {
            if j > 0 {
                sql.push(" UNION ALL ");
            }
            let table = Source::Rollup(*family, *grain).table();
            let daily = Source::Rollup(*family, grain.span_unit()).table();
            sql.push(&format!(
                "SELECT toUInt32({i}) AS i, toUInt8(0) AS side, countMerge(events) AS n \
                 FROM {db}.{table} WHERE bucket = toDateTime(",
                db = self.db
            ))
            .bind(Bind::U32(span_bucket(*grain, *from, *to)))
            .push(&format!(
                ", 'UTC') UNION ALL SELECT toUInt32({i}), toUInt8(1), countMerge(events) \
                 FROM {db}.{daily} WHERE bucket >= toDateTime(",
                db = self.db
            ))
            .bind(Bind::U32(*from))
            .push(", 'UTC') AND bucket < toDateTime(")
            .bind(Bind::U32(*to))
            .push(", 'UTC')");
        }
        let rows: Vec<SpanCount> = sql.query(&self.client).fetch_all().await?;
        let count = |i: usize, side: u8| {
            rows.iter()
                .find(|r| r.i as usize == i && r.side == side)
                .map_or(0, |r| r.n)
        };
        let mut out = Vec::with_capacity(segs.len());
        for (i, seg) in segs.into_iter().enumerate() {
            match seg.source {
                Source::Rollup(family, g) if g.is_span() => {
                    let (checked, grain) = if count(i, 0) == count(i, 1) {
                        (true, g.checked())
                    } else {
                        (false, g.span_unit())
                    };
                    if !checked {
                        tracing::debug!(
                            from = seg.from,
                            to = seg.to,
                            "span behind its days or hours; reading those"
                        );
                    }
                    out.push(Segment {
                        source: Source::Rollup(family, grain),
                        ..seg
                    });
                }
                Source::Rollup(_, g) if g.is_fallback() => {}
                _ => out.push(seg),
            }
        }
        Ok(out)
    }

    /// The `UNION ALL` of per-table subqueries producing `cols` (+ states when `states`).
    ///
    /// Segments reading the same table (the day or hour edges on both sides of a range) share
    /// one subquery whose time condition is the OR of their disjoint ranges. A rollup's state
    /// columns are deserialized for every row of each granule read, wanted or not (a small
    /// rollup is a single granule), so each extra subquery on a table re-reads its states:
    /// at 10M events reading the daily totals' `devices` column costs ~200 ms whether the
    /// range holds 3 days or 30.
    fn union(
        &self,
        segs: &[Segment],
        cols: &[Col],
        f: &Filters,
        failed_only: bool,
        states: bool,
    ) -> Sql {
        let tables = tables_of(segs);
        // A plan over the per-tenant totals reads their states (and builds the same at its raw
        // edges); every other plan reads the common `events, devices, users`.
        let tenant_states = segs
            .iter()
            .any(|s| source_family(s.source) == Some(Family::TenantTotals));
        let mut sql = Sql::default();
        for (i, (source, ranges)) in tables.iter().enumerate() {
            if i > 0 {
                sql.push(" UNION ALL ");
            }
            let selects: Vec<String> = cols.iter().map(|c| c.select(*source)).collect();
            let aliases: Vec<&str> = cols.iter().map(|c| c.alias()).collect();
            sql.push("SELECT ").push(&selects.join(", "));
            let raw = *source == Source::Raw;
            if states {
                sql.push(match (raw, tenant_states) {
                    (true, false) => RAW_STATES,
                    (true, true) => TENANT_RAW_STATES,
                    (false, false) => ", events, devices, users",
                    (false, true) => {
                        ", events, attempt_events, failed_events, devices, failed_devices, users, \
                         failed_users"
                    }
                });
            }
            sql.push(&format!(" FROM {}.{} WHERE (", self.db, source.table()));
            // A facet table holds every event once per dimension: read one facet's rows (the
            // question's facet column, else any: each holds every event once).
            let facet = (source_family(*source) == Some(Family::FleetFacets)).then(|| {
                Family::facet_of(aliases.iter().copied().chain(filter_columns(f)))
                    .unwrap_or(Family::FACETS[0])
            });
            push_ranges(&mut sql, &self.db, *source, ranges);
            sql.push(")");
            if let Some(facet) = facet {
                sql.push(&format!(" AND facet = '{facet}'"));
            }
            push_filters_as(&mut sql, f, facet);
            if failed_only {
                sql.push(" AND outcome = 'failed'");
            }
            if raw || !states {
                sql.push(" GROUP BY ").push(&aliases.join(", "));
            }
        }
        sql
    }

    /// The single raw segment of `segs`, when that is the whole plan (`source=raw`, sub-hour
    /// buckets, or ranges too short for any rollup): such plans are answered by
    /// [`Self::raw_rows`] and plain aggregates instead of states.
    fn only_raw(segs: &[Segment]) -> Option<&Segment> {
        match segs {
            [seg] if seg.source == Source::Raw => Some(seg),
            _ => None,
        }
    }

    /// One raw segment's rows with `cols` plus the unique-count inputs under private aliases
    /// (`u_tenant`, `u_device`, `u_upn`, so that a `tenant` column in `cols` does not clash),
    /// for [`RAW_METRICS`]-style plain aggregates.
    fn raw_rows(&self, seg: &Segment, cols: &[Col], f: &Filters, failed_only: bool) -> Sql {
        let selects: Vec<String> = cols.iter().map(|c| c.select(Source::Raw)).collect();
        let mut sql = Sql::default();
        sql.push("SELECT ").push(&selects.join(", ")).push(&format!(
            ", tenant AS u_tenant, device_id AS u_device, user_principal_name AS u_upn \
             FROM {}.{} WHERE occurred_at >= toDateTime(",
            self.db,
            Source::Raw.table()
        ));
        sql.bind(Bind::U32(seg.from))
            .push(", 'UTC') AND occurred_at < toDateTime(")
            .bind(Bind::U32(seg.to))
            .push(", 'UTC')");
        push_filters(&mut sql, f);
        if failed_only {
            sql.push(" AND outcome = 'failed'");
        }
        sql
    }

    /// The rows a grouped query aggregates: [`Self::raw_rows`] for a raw-only plan, else the
    /// union of per-segment states.
    fn rows(&self, segs: &[Segment], cols: &[Col], f: &Filters, failed_only: bool) -> Sql {
        match Self::only_raw(segs) {
            Some(seg) => self.raw_rows(seg, cols, f, failed_only),
            None => self.union(segs, cols, f, failed_only, true),
        }
    }

    /// Classifies the distinct failed signals in scope and returns the non-`unknown` ones.
    ///
    /// Rollup plans read the signal ids in scope (the `sig` column only, no states) and look
    /// their classification inputs up in `signal_dictionary`; raw-only plans compute both from
    /// the rows, so `source=raw` depends on nothing but the raw table.
    pub(super) async fn category_map(
        &self,
        f: &Filters,
        segs: &[Segment],
    ) -> Result<CategoryMap, QueryError> {
        let sql = match Self::only_raw(segs) {
            Some(seg) => self.raw_signals(f, seg),
            None => {
                let mut sql = Sql::default();
                sql.push(&format!(
                    "SELECT sig, any(error_code) AS error_code, any(error_has_code) AS error_has_code, \
                     any(error_symbol) AS error_symbol, any(message_key) AS message_key, \
                     any(platform) AS platform, any(stage) AS stage, any(source_kind) AS source_kind \
                     FROM {}.signal_dictionary WHERE sig IN (SELECT sig FROM (",
                    self.db
                ));
                sql.append(self.union(segs, &[Col::Sig], f, true, false));
                sql.push(")) GROUP BY sig");
                sql
            }
        };
        let rows: Vec<SignalRow> = sql.query(&self.client).fetch_all().await?;
        let mut map = CategoryMap::empty();
        for r in rows {
            let info = self.cache.classify(r.sig, &signal_of(&r));
            if info.category != "unknown" {
                map.sigs.push(r.sig);
                map.cats.push(info.category.clone());
                map.codes
                    .push((u64::from(r.error_has_code) << 32) | u64::from(r.error_code));
            }
        }
        Ok(map)
    }

    /// The distinct failed signals of one raw segment with their classification inputs.
    fn raw_signals(&self, f: &Filters, seg: &Segment) -> Sql {
        let cols = [
            Col::Sig,
            Col::Named("error_code"),
            Col::Named("error_has_code"),
            Col::Named("error_symbol"),
            Col::MessageKey,
            Col::Named("platform"),
            Col::Named("stage"),
            Col::Named("source_kind"),
        ];
        let mut sql = Sql::default();
        sql.push(
            "SELECT sig, any(error_code) AS error_code, any(error_has_code) AS error_has_code, \
             any(error_symbol) AS error_symbol, any(message_key) AS message_key, any(platform) AS platform, \
             any(stage) AS stage, any(source_kind) AS source_kind FROM (",
        );
        // One `GROUP BY sig` over the rows: grouping by all signal columns first only pays
        // off for rollup rows.
        sql.append(self.raw_rows(seg, &cols, f, true));
        sql.push(") GROUP BY sig");
        sql
    }

    /// Classifies every signal core (migration 0004) known to `signal_dictionary`, or None
    /// when some core's signals classify differently by platform or stage (then only the
    /// signal families can tell them apart). Reads the whole dictionary: it holds distinct
    /// failed signals (hundreds to a few thousand), not events, and classifications are
    /// cached, so this costs a small read per question.
    pub(super) async fn core_map(&self) -> Result<Option<CategoryMap>, QueryError> {
        let rows: Vec<CoreSignalRow> = self
            .client
            .query(&format!(
                "SELECT sig, cityHash64(error_code, error_has_code, error_symbol, message_key, source_kind) AS core, \
                 error_code, error_has_code, error_symbol, message_key, platform, stage, source_kind \
                 FROM {}.signal_dictionary",
                self.db
            ))
            .fetch_all()
            .await?;
        let mut infos: HashMap<u64, Arc<SignalInfo>> = HashMap::new();
        for r in rows {
            let signal = RawSignal {
                code: (r.error_has_code == 1).then_some(r.error_code),
                symbol: r.error_symbol,
                message: r.message_key,
                platform: r.platform,
                source: r.source_kind,
                stage: r.stage,
            };
            let info = self.cache.classify(r.sig, &signal);
            match infos.get(&r.core) {
                Some(seen) if **seen != *info => return Ok(None),
                Some(_) => {}
                None => {
                    infos.insert(r.core, info);
                }
            }
        }
        let mut cores: Vec<(&u64, &Arc<SignalInfo>)> = infos
            .iter()
            .filter(|(_, i)| i.category != "unknown")
            .collect();
        cores.sort_by_key(|(c, _)| **c);
        let (sigs, cats) = cores
            .into_iter()
            .map(|(c, i)| (*c, i.category.clone()))
            .unzip();
        Ok(Some(CategoryMap {
            key: Col::Core,
            sigs,
            cats,
            infos,
            codes: Vec::new(),
        }))
    }

    /// The segments answering `f` at `resolution` (week spans not checked yet), given the
    /// columns the question needs besides the category, and how categories are assigned.
    /// Category questions read the signal cores when a cores family holds the question and
    /// every core classifies uniformly; otherwise the signal ids (`sig`), classified for the
    /// signals in scope.
    async fn plan_categories(
        &self,
        f: &Filters,
        mut needed: Vec<&'static str>,
        needs_cat: bool,
        resolution: Resolution,
    ) -> Result<(Vec<Segment>, Categories), QueryError> {
        if needs_cat && f.source == SourceChoice::Auto {
            let mut with_core = needed.clone();
            with_core.push("core");
            let family = Family::for_columns_at(with_core, resolution);
            let segs = self.segments(f, resolution, family);
            // Checking spans never makes a plan raw-only: this holds before and after.
            if family.columns().contains(&"core")
                && Self::only_raw(&segs).is_none()
                && let Some(map) = self.core_map().await?
            {
                return Ok((segs, Categories::Cores(map)));
            }
        }
        if needs_cat {
            needed.push("sig");
        }
        let family = Family::for_columns_at(needed, resolution);
        let segs = self.segments(f, resolution, family);
        let categories = if needs_cat {
            Categories::Signals
        } else {
            Categories::None
        };
        Ok((segs, categories))
    }

    /// [`Self::plan_categories`] with its category map made, for a question answered through
    /// [`Self::with_checked_spans`]: a plan classifying by signal reads the signal ids in scope
    /// from its checked segments, so its spans are checked here (then the question runs on
    /// them alone); the other plans' spans are left unchecked for the question to check.
    async fn plan_for_question(
        &self,
        f: &Filters,
        needed: Vec<&'static str>,
        needs_cat: bool,
        resolution: Resolution,
    ) -> Result<(Vec<Segment>, Option<CategoryMap>), QueryError> {
        let (segs, categories) = self
            .plan_categories(f, needed, needs_cat, resolution)
            .await?;
        match categories {
            Categories::Signals => {
                let segs = self.resolve_spans(segs).await?;
                let map = self.category_map(f, &segs).await?;
                Ok((segs, Some(map)))
            }
            Categories::Cores(map) => Ok((segs, Some(map))),
            Categories::None => Ok((segs, None)),
        }
    }

    pub(super) fn category_expr(sql: &mut Sql, map: &CategoryMap) {
        if map.sigs.is_empty() {
            sql.push("if(outcome = 'failed', 'unknown', '')");
        } else {
            sql.push("if(outcome = 'failed', transform(")
                .push(map.key.alias())
                .push(", ")
                .bind(Bind::U64s(map.sigs.clone()))
                .push(", ")
                .bind(Bind::Strs(map.cats.clone()))
                .push(", 'unknown'), '')");
        }
    }

    /// ` FROM (SELECT * [, <category> AS category] FROM (rows)) [WHERE category = ?]`: the rows
    /// of a question, with their category when the question needs it.
    fn push_categorized(sql: &mut Sql, map: Option<&CategoryMap>, rows: Sql, f: &Filters) {
        sql.push(" FROM (SELECT *");
        if let Some(map) = map {
            sql.push(", ");
            Self::category_expr(sql, map);
            sql.push(" AS category");
        }
        sql.push(" FROM (");
        sql.append(rows);
        sql.push("))");
        if let Some(c) = &f.category {
            sql.push(" WHERE category = ").bind(Bind::Str(c.clone()));
        }
    }

    /// The plan over the per-tenant totals (migration 0007) for a tenant breakdown of all
    /// tenants with no filter, read from the rollups; None otherwise (and when the range is
    /// too short for any rollup: raw rows are then aggregated directly). One tenant's
    /// questions read `rollup_narrow_*`, ordered by tenant first; 0007 is ordered by bucket.
    /// Its week spans are not checked yet (see [`Self::with_checked_spans`]).
    fn tenant_totals_plan(&self, f: &Filters, dim: Option<Dimension>) -> Option<Vec<Segment>> {
        if dim != Some(Dimension::Tenant)
            || f.source != SourceChoice::Auto
            || f.category.is_some()
            || filter_columns(f).next().is_some()
        {
            return None;
        }
        let segs = self.segments(f, Resolution::Whole, Family::TenantTotals);
        if Self::only_raw(&segs).is_some() {
            return None;
        }
        Some(segs)
    }

    /// Groups by `dim` (or by nothing when None, giving one row keyed '').
    async fn grouped(
        &self,
        f: &Filters,
        dim: Option<Dimension>,
        limit: u64,
    ) -> Result<(Vec<MetricRow>, bool), QueryError> {
        if let Some(segs) = self.tenant_totals_plan(f, dim) {
            return self
                .with_checked_spans(segs, |segs| async move {
                    let mut sql = Sql::default();
                    sql.push("SELECT tenant AS key, ").push(TENANT_METRICS);
                    Self::push_categorized(
                        &mut sql,
                        None,
                        self.union(&segs, &[Col::Named("tenant")], f, false, true),
                        f,
                    );
                    sql.push(" GROUP BY key ORDER BY failures DESC, n_events DESC, key ASC LIMIT ")
                        .bind(Bind::U64(limit));
                    Ok((sql.query(&self.client).fetch_all().await?, false))
                })
                .await;
        }
        let needs_cat = f.category.is_some() || dim == Some(Dimension::Category);
        let mut needed: Vec<&'static str> = filter_columns(f).collect();
        needed.push("outcome");
        match dim {
            Some(Dimension::Code) => needed.extend(["error_code", "error_has_code"]),
            Some(Dimension::Category) | None => {}
            Some(d) => needed.push(d.column()),
        }
        let (segs, map) = self
            .plan_for_question(f, needed, needs_cat, Resolution::Whole)
            .await?;
        let map = map.as_ref();
        self.with_checked_spans(segs, |segs| async move {
            self.grouped_rows(f, dim, limit, &segs, map).await
        })
        .await
    }

    /// The grouped question of [`Self::grouped`] over planned segments and category map.
    async fn grouped_rows(
        &self,
        f: &Filters,
        dim: Option<Dimension>,
        limit: u64,
        segs: &[Segment],
        map: Option<&CategoryMap>,
    ) -> Result<(Vec<MetricRow>, bool), QueryError> {
        let mut cols = vec![Col::Named("outcome")];
        let side_expr = side_key();
        let key_expr: &str = match dim {
            None => "''",
            Some(Dimension::Category) => "category",
            Some(Dimension::Side) => {
                cols.push(Col::Named("source_kind"));
                &side_expr
            }
            Some(Dimension::Code) => {
                cols.extend([Col::Named("error_code"), Col::Named("error_has_code")]);
                "if(error_has_code = 1, toString(error_code), '')"
            }
            Some(Dimension::Platform) => {
                cols.push(Col::Named("platform"));
                "platform"
            }
            Some(Dimension::OsVersion) => {
                cols.push(Col::Named("os_version"));
                "os_version"
            }
            Some(Dimension::Method) => {
                cols.push(Col::Named("enrollment_method"));
                "enrollment_method"
            }
            Some(Dimension::Tenant) => {
                cols.push(Col::Named("tenant"));
                "tenant"
            }
            Some(Dimension::Stage) => {
                cols.push(Col::Named("stage"));
                "stage"
            }
            Some(Dimension::Outcome) => "outcome",
        };
        if let Some(map) = map {
            cols.push(map.key);
        }
        let failed_only = dim == Some(Dimension::Category);
        let metrics = match (Self::only_raw(segs).is_some(), failed_only) {
            (true, true) => RAW_FAILED_METRICS,
            (true, false) => RAW_METRICS,
            (false, true) => FAILED_METRICS,
            (false, false) => METRICS,
        };
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(key_expr)
            .push(" AS key, ")
            .push(metrics);
        Self::push_categorized(&mut sql, map, self.rows(segs, &cols, f, failed_only), f);
        if dim.is_some() {
            sql.push(" GROUP BY key ORDER BY failures DESC, n_events DESC, key ASC LIMIT ")
                .bind(Bind::U64(limit));
        }
        let exact = Self::only_raw(segs).is_some();
        Ok((sql.query(&self.client).fetch_all().await?, exact))
    }

    /// The number of devices with a failure `f` selects, merged from the rollups' device
    /// states like every other unique count, and whether it is an estimate (see
    /// [`EXACT_UNIQUE_LIMIT`]); exact from raw rows for a raw-only plan.
    pub(super) async fn affected_device_count(
        &self,
        f: &Filters,
    ) -> Result<(u64, bool), QueryError> {
        let (rows, exact) = self.grouped(f, None, 1).await?;
        let n = rows.first().map_or(0, |r| r.affected_devices);
        Ok((n, is_estimate(exact, &[n])))
    }

    /// Totals for the range plus the five categories with most failures. The two questions
    /// read different rollups (totals need no signal columns) and run concurrently.
    pub async fn summary(&self, f: &Filters) -> Result<Summary, QueryError> {
        let ((totals, exact), (top, top_exact)) = tokio::try_join!(
            self.grouped(f, None, 1),
            self.grouped(f, Some(Dimension::Category), 5)
        )?;
        let metrics = totals
            .first()
            .map(|r| r.metrics(exact))
            .unwrap_or_else(|| MetricRow::zero().metrics(true));
        Ok(Summary {
            metrics,
            top_categories: top
                .into_iter()
                .filter(|r| r.failures > 0)
                .map(|r| CategoryCount {
                    estimated: is_estimate(top_exact, &[r.affected_devices, r.affected_users]),
                    category: r.key,
                    failures: r.failures,
                    affected_devices: r.affected_devices,
                    affected_users: r.affected_users,
                })
                .collect(),
        })
    }

    /// One row per value of `dim`, most failures first.
    pub async fn breakdown(
        &self,
        f: &Filters,
        dim: Dimension,
        limit: u64,
    ) -> Result<Vec<BreakdownRow>, QueryError> {
        let (rows, exact) = self.grouped(f, Some(dim), limit).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let key = match dim {
                    Dimension::Code if r.key.is_empty() => None,
                    Dimension::Code => r.key.parse::<u32>().ok().and_then(|c| format_code(c, true)),
                    _ => Some(r.key.clone()),
                };
                BreakdownRow {
                    key,
                    metrics: r.metrics(exact),
                }
            })
            .collect())
    }

    /// Metrics per time bucket over `[from, to)`, empty buckets included as zeros.
    pub async fn timeseries(&self, f: &Filters, bucket: Bucket) -> Result<Vec<Point>, QueryError> {
        let step = bucket.seconds();
        // (row, exact) per bucket with events; finalized buckets first, when they apply.
        let mut rows: Vec<(TsRow, bool)> = Vec::new();
        let mut ranges = vec![(f.from, f.to)];
        if series::applies(f) {
            let closed = series::closed_points(&self.client, &self.db, f, bucket).await?;
            let covered: Vec<u32> = closed.iter().map(|r| r.ts).collect();
            ranges = series::gaps(f.from, f.to, step, &covered);
            rows.extend(closed.into_iter().map(|r| {
                let row = TsRow {
                    ts: r.ts,
                    events: r.events,
                    attempts: r.attempts,
                    failures: r.failures,
                    affected_devices: r.affected_devices,
                    affected_users: r.affected_users,
                    devices: r.devices,
                    users: r.users,
                };
                (row, false)
            }));
        }
        if !ranges.is_empty() {
            let (live, exact) = self.live_points(f, bucket, &ranges).await?;
            rows.extend(live.into_iter().map(|r| (r, exact)));
        }
        rows.sort_by_key(|(r, _)| r.ts);
        // Day buckets start at UTC midnight, sub-day buckets at multiples of their width.
        let first = f.from / step * step;
        let mut out = Vec::new();
        let mut it = rows.into_iter().peekable();
        let mut t = first;
        while t < f.to {
            let m = match it.peek() {
                Some((r, _)) if r.ts == t => {
                    let r = it.next().map(|(r, exact)| {
                        let row = MetricRow {
                            key: String::new(),
                            events: r.events,
                            attempts: r.attempts,
                            failures: r.failures,
                            affected_devices: r.affected_devices,
                            affected_users: r.affected_users,
                            devices: r.devices,
                            users: r.users,
                        };
                        row.metrics(exact)
                    });
                    r.unwrap_or_else(|| MetricRow::zero().metrics(true))
                }
                _ => MetricRow::zero().metrics(true),
            };
            out.push(Point {
                t: super::filters::rfc3339(t),
                ts: t,
                metrics: m,
            });
            t = t.saturating_add(step);
            if t == u32::MAX {
                break;
            }
        }
        Ok(out)
    }

    /// Time-series rows for the buckets in `ranges` (disjoint, inside `[f.from, f.to)`) from
    /// rollup states and raw edges, and whether they are exact (a single raw segment).
    async fn live_points(
        &self,
        f: &Filters,
        bucket: Bucket,
        ranges: &[(u32, u32)],
    ) -> Result<(Vec<TsRow>, bool), QueryError> {
        let mut needed: Vec<&'static str> = filter_columns(f).collect();
        needed.push("outcome");
        let mut segs = Vec::new();
        let mut map = None;
        for &(from, to) in ranges {
            let part = Filters {
                from,
                to,
                ..f.clone()
            };
            let (s, m) = self
                .plan_for_question(
                    &part,
                    needed.clone(),
                    f.category.is_some(),
                    bucket.resolution(),
                )
                .await?;
            segs.extend(self.resolve_spans(s).await?);
            map = m;
        }
        let exact = Self::only_raw(&segs).is_some();
        let mut cols = vec![Col::Named("outcome"), Col::Ts(bucket)];
        if let Some(map) = &map {
            cols.push(map.key);
        }
        let mut sql = Sql::default();
        sql.push("SELECT toUInt32(ts) AS ts, ")
            .push(if exact { RAW_METRICS } else { METRICS });
        Self::push_categorized(&mut sql, map.as_ref(), self.rows(&segs, &cols, f, false), f);
        sql.push(" GROUP BY ts ORDER BY ts");
        Ok((sql.query(&self.client).fetch_all().await?, exact))
    }

    /// The codes (with symbol and category) behind most failures, with cause and remediation.
    pub async fn top_codes(&self, f: &Filters, limit: u64) -> Result<Vec<TopCode>, QueryError> {
        let mut needed: Vec<&'static str> = filter_columns(f).collect();
        needed.extend(["outcome", "error_code", "error_has_code", "error_symbol"]);
        let (segs, map) = self
            .plan_for_question(f, needed, true, Resolution::Whole)
            .await?;
        // Always Some: categories were asked for.
        let map = map.unwrap_or_else(CategoryMap::empty);
        let (rows, exact) = self
            .with_checked_spans(segs, |segs| {
                let map = &map;
                async move { self.top_code_rows(f, limit, &segs, map).await }
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let info = match map.key {
                    Col::Core => map.infos.get(&r.sample).cloned(),
                    _ => self.cache.get(r.sample),
                }
                .unwrap_or_else(|| Arc::new(unknown_info()));
                let symbols = symbols_by_failures(r.symbols);
                TopCode {
                    code: format_code(r.error_code, r.error_has_code == 1),
                    symbol: symbols.first().cloned().unwrap_or_default(),
                    symbols,
                    category: r.category,
                    failures: r.failures,
                    affected_devices: r.affected_devices,
                    affected_users: r.affected_users,
                    estimated: is_estimate(exact, &[r.affected_devices, r.affected_users]),
                    failure_reason: info.failure_reason.clone(),
                    cause: info.cause.clone(),
                    remediation: info.remediation.clone(),
                    source_doc: info.source_doc.clone(),
                }
            })
            .collect())
    }

    /// The rows of [`Self::top_codes`] over planned segments, and whether they are exact.
    async fn top_code_rows(
        &self,
        f: &Filters,
        limit: u64,
        segs: &[Segment],
        map: &CategoryMap,
    ) -> Result<(Vec<TopCodeRow>, bool), QueryError> {
        let exact = Self::only_raw(segs).is_some();
        let cols = [
            Col::Named("outcome"),
            Col::Named("error_code"),
            Col::Named("error_has_code"),
            Col::Named("error_symbol"),
            map.key,
        ];
        // One row per (code, category) for coded failures, the symbols' device and user sets
        // merged into one count (see `TopCode::symbols`); uncoded failures keep a row per
        // symbol (`symbol_key`). `symbols` carries (symbol, failures) pairs that Rust sums per
        // symbol: per rollup cell (`finalizeAggregation` of its count state, so the states are
        // merged once, as before), or per symbol from an inner grouping for raw rows (one
        // pair per event would be too many). Sorted, so that every server answers alike.
        let mut sql = Sql::default();
        let sample = map.key.alias();
        if exact {
            sql.push(&format!(
                "SELECT error_code, error_has_code, arraySort(groupArray((sym, sym_failures))) AS symbols, \
                 category, min(sym_sample) AS sample, sum(sym_failures) AS failures, \
                 uniqExactMerge(d) AS affected_devices, uniqExactIfMerge(u) AS affected_users \
                 FROM (SELECT error_code, error_has_code, error_symbol AS sym, \
                 symbol_key, category, min({sample}) AS sym_sample, \
                 count() AS sym_failures, uniqExactState(u_tenant, u_device) AS d, \
                 uniqExactIfState(u_tenant, u_upn, u_upn != '') AS u FROM (SELECT *, "
            ));
        } else {
            sql.push(&format!(
                "SELECT error_code, error_has_code, \
                 arraySort(groupArray((error_symbol, finalizeAggregation(events)))) AS symbols, \
                 category, \
                 min({sample}) AS sample, countMerge(events) AS failures, \
                 uniqCombinedMerge(14)(devices) AS affected_devices, \
                 uniqCombinedIfMerge(14)(users) AS affected_users FROM (SELECT *, "
            ));
        }
        sql.push("if(error_has_code = 1, '', error_symbol) AS symbol_key, ");
        Self::category_expr(&mut sql, map);
        sql.push(" AS category FROM (");
        sql.append(self.rows(segs, &cols, f, true));
        sql.push("))");
        if let Some(c) = &f.category {
            sql.push(" WHERE category = ").bind(Bind::Str(c.clone()));
        }
        if exact {
            sql.push(" GROUP BY error_code, error_has_code, error_symbol, symbol_key, category)");
        }
        sql.push(
            " GROUP BY error_code, error_has_code, symbol_key, category \
             ORDER BY failures DESC, error_code, symbol_key, category LIMIT ",
        )
        .bind(Bind::U64(limit));
        Ok((sql.query(&self.client).fetch_all().await?, exact))
    }
}

impl MetricRow {
    fn zero() -> Self {
        Self {
            key: String::new(),
            events: 0,
            attempts: 0,
            failures: 0,
            affected_devices: 0,
            affected_users: 0,
            devices: 0,
            users: 0,
        }
    }
}

/// The symbols of a top-code row from its (symbol, failures) pairs: failures summed per
/// symbol; named symbols first (a SIEM reading `symbol` should get the name when one was
/// reported), each by most failures, ties the greater symbol first; the row's `symbol` is the
/// first.
fn symbols_by_failures(pairs: Vec<(String, u64)>) -> Vec<String> {
    let mut per_symbol: HashMap<String, u64> = HashMap::new();
    for (symbol, n) in pairs {
        *per_symbol.entry(symbol).or_default() += n;
    }
    let mut symbols: Vec<(String, u64)> = per_symbol.into_iter().collect();
    symbols.sort_by(|a, b| {
        a.0.is_empty()
            .cmp(&b.0.is_empty())
            .then_with(|| b.1.cmp(&a.1))
            .then_with(|| b.0.cmp(&a.0))
    });
    symbols.into_iter().map(|(s, _)| s).collect()
}

fn unknown_info() -> SignalInfo {
    SignalInfo {
        category: "unknown".to_owned(),
        code: None,
        failure_reason: "unknown".to_owned(),
        cause: String::new(),
        remediation: String::new(),
        source_doc: String::new(),
    }
}

fn signal_of(r: &SignalRow) -> RawSignal {
    RawSignal {
        code: (r.error_has_code == 1).then_some(r.error_code),
        symbol: r.error_symbol.clone(),
        message: r.message_key.clone(),
        platform: r.platform.clone(),
        source: r.source_kind.clone(),
        stage: r.stage.clone(),
    }
}

/// The segments of a plan grouped by the table they read, in plan order: segments on the same
/// table (the edges on both sides of a range) are read by one subquery whose time condition
/// is the OR of their ranges ([`push_ranges`]).
pub(super) fn tables_of(segs: &[Segment]) -> Vec<(Source, Vec<(u32, u32)>)> {
    let mut tables: Vec<(Source, Vec<(u32, u32)>)> = Vec::new();
    for seg in segs {
        match tables.iter_mut().find(|(s, _)| *s == seg.source) {
            Some((_, ranges)) => ranges.push((seg.from, seg.to)),
            None => tables.push((seg.source, vec![(seg.from, seg.to)])),
        }
    }
    tables
}

/// `(t >= from AND t < to) OR ..` over `ranges` (bound), `t` being the time column of
/// `source` (`occurred_at` for raw rows, `bucket` for a rollup). A week span (`Grain::WeekHead`,
/// `Grain::WeekTail`) is its one bucket, read only while [`push_span_valid`] holds; its daily
/// fallback (`Grain::HeadDays`, `Grain::TailDays`) only while it does not. A span checked
/// before the query (`Engine::resolve_spans`) is its bucket alone.
pub(super) fn push_ranges(sql: &mut Sql, db: &str, source: Source, ranges: &[(u32, u32)]) {
    let tcol = if source == Source::Raw {
        "occurred_at"
    } else {
        "bucket"
    };
    for (j, (from, to)) in ranges.iter().enumerate() {
        if j > 0 {
            sql.push(" OR ");
        }
        let span = match source {
            Source::Rollup(family, grain) => grain.span_pair().map(|p| (family, grain, p)),
            Source::Raw => None,
        };
        if let Source::Rollup(_, grain) = source
            && grain.is_checked()
        {
            sql.push("(bucket = toDateTime(")
                .bind(Bind::U32(span_bucket(grain.unchecked(), *from, *to)))
                .push(", 'UTC'))");
            continue;
        }
        match span {
            Some((family, grain, (span_grain, _))) if grain == span_grain => {
                sql.push("(bucket = toDateTime(")
                    .bind(Bind::U32(span_bucket(grain, *from, *to)))
                    .push(", 'UTC') AND ");
                push_span_valid(sql, db, family, span_grain, *from, *to);
                sql.push(")");
            }
            Some((family, _, (span_grain, _))) => {
                sql.push("(bucket >= toDateTime(")
                    .bind(Bind::U32(*from))
                    .push(", 'UTC') AND bucket < toDateTime(")
                    .bind(Bind::U32(*to))
                    .push(", 'UTC') AND NOT ");
                push_span_valid(sql, db, family, span_grain, *from, *to);
                sql.push(")");
            }
            None => {
                sql.push(&format!("({tcol} >= toDateTime("))
                    .bind(Bind::U32(*from))
                    .push(&format!(", 'UTC') AND {tcol} < toDateTime("))
                    .bind(Bind::U32(*to))
                    .push(", 'UTC'))");
            }
        }
    }
}

/// The bucket of the span covering the whole days (week spans, migration 0011) or hours (day
/// spans, migration 0012) `[from, to)`: a head's last day or hour, a tail's first.
pub(crate) fn span_bucket(grain: Grain, from: u32, to: u32) -> u32 {
    let unit = if grain.span_unit() == Grain::Hour {
        3_600
    } else {
        86_400
    };
    if grain.is_head() {
        to.saturating_sub(unit)
    } else {
        from
    }
}

/// `(<span's event count> = <the days' event count in the daily rollup>)`, as two scalar
/// subqueries (evaluated before the query reads any table: a false guard reads no granule).
/// Daily rows are only ever added, so equal counts mean the span was built from the rows the
/// days hold now, and its states are the merge of theirs. The engine checks spans before the
/// question instead ([`Engine::resolve_spans`]): 18.16 re-runs scalar subqueries for every
/// analysis of a nested SELECT (+30 ms for a category breakdown at 10M events); this form keeps
/// a plan that skipped the check correct (identical answers to the checked form over 80
/// requests at 10M events, BENCHMARKS.md issue 7 ninth session).
fn push_span_valid(sql: &mut Sql, db: &str, family: Family, span: Grain, from: u32, to: u32) {
    let spans = Source::Rollup(family, span).table();
    let daily = Source::Rollup(family, span.span_unit()).table();
    sql.push(&format!(
        "((SELECT countMerge(events) FROM {db}.{spans} WHERE bucket = toDateTime("
    ))
    .bind(Bind::U32(span_bucket(span, from, to)))
    .push(&format!(
        ", 'UTC')) = (SELECT countMerge(events) FROM {db}.{daily} WHERE bucket >= toDateTime("
    ))
    .bind(Bind::U32(from))
    .push(", 'UTC') AND bucket < toDateTime(")
    .bind(Bind::U32(to))
    .push(", 'UTC')))");
}

/// The column filters of `f` as (column, value) pairs.
fn filter_pairs(f: &Filters) -> [(&'static str, &Option<String>); 6] {
    [
        ("tenant", &f.tenant),
        ("platform", &f.platform),
        ("enrollment_method", &f.method),
        ("os_version", &f.os_version),
        ("stage", &f.stage),
        ("outcome", &f.outcome),
    ]
}

/// The columns `f` filters on (which a rollup must hold to answer it).
pub(super) fn filter_columns(f: &Filters) -> impl Iterator<Item = &'static str> + '_ {
    filter_pairs(f)
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(c, _)| c)
        .chain(f.code.map(|_| "error_code"))
        .chain(f.side.as_ref().map(|_| "source_kind"))
}

/// The `side` of a row (`server` for Microsoft Graph events, else `client`), as SQL.
fn side_key() -> String {
    format!("if(source_kind = '{SERVER_SOURCE_KIND}', 'server', 'client')")
}

/// Appends the column filters shared by raw and rollup tables (all bound).
pub fn push_filters(sql: &mut Sql, f: &Filters) {
    push_filters_as(sql, f, None);
}

/// [`push_filters`] on a facet table: a filter on the `facet` column reads `value`.
fn push_filters_as(sql: &mut Sql, f: &Filters, facet: Option<&str>) {
    let name = |col: &'static str| if facet == Some(col) { "value" } else { col };
    for (col, v) in filter_pairs(f) {
        if let Some(v) = v {
            sql.push(&format!(" AND {} = ", name(col)))
                .bind(Bind::Str(v.clone()));
        }
    }
    if let Some(code) = f.code {
        sql.push(" AND error_has_code = 1 AND error_code = ")
            .bind(Bind::U32(code));
    }
    if let Some(side) = &f.side {
        let op = if side == "server" { "=" } else { "!=" };
        sql.push(&format!(" AND {} {op} ", name("source_kind")))
            .bind(Bind::Str(SERVER_SOURCE_KIND.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::symbols_by_failures;
    use super::{Bind, Family, Grain, Source, Sql, push_ranges};

    #[test]
    fn an_unchecked_span_and_its_days_carry_opposite_guards() {
        let family = Family::FleetCores;
        // 2024-03-01 (Friday) to Monday 03-04: a tail, bucket 03-01.
        let (from, to) = (1_709_251_200, 1_709_510_400);
        let mut span = Sql::default();
        push_ranges(
            &mut span,
            "db",
            Source::Rollup(family, Grain::WeekTail),
            &[(from, to)],
        );
        let mut days = Sql::default();
        push_ranges(
            &mut days,
            "db",
            Source::Rollup(family, Grain::TailDays),
            &[(from, to)],
        );
        let guard = "((SELECT countMerge(events) FROM db.rollup_fleet_cores_tails WHERE bucket = \
                     toDateTime(?, 'UTC')) = (SELECT countMerge(events) FROM db.rollup_fleet_cores_daily \
                     WHERE bucket >= toDateTime(?, 'UTC') AND bucket < toDateTime(?, 'UTC')))";
        assert_eq!(
            span.text,
            format!("(bucket = toDateTime(?, 'UTC') AND {guard})")
        );
        assert_eq!(
            days.text,
            format!(
                "(bucket >= toDateTime(?, 'UTC') AND bucket < toDateTime(?, 'UTC') AND NOT {guard})"
            )
        );
        assert_eq!(span.binds.len(), 4);
        assert!(matches!(span.binds[0], Bind::U32(b) if b == from));
        // Checked: the bucket alone (a head's bucket is its last day).
        let mut head = Sql::default();
        push_ranges(
            &mut head,
            "db",
            Source::Rollup(family, Grain::CheckedHead),
            &[(to, to + 3 * 86_400)],
        );
        assert_eq!(head.text, "(bucket = toDateTime(?, 'UTC'))");
        assert!(matches!(head.binds[0], Bind::U32(b) if b == to + 2 * 86_400));
    }

    fn pairs(p: &[(&str, u64)]) -> Vec<(String, u64)> {
        p.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    }

    #[test]
    fn symbols_are_summed_per_symbol_and_ordered_by_failures() {
        // Per-cell pairs: UserLicense 3 + 4 = 7, MENROLL_E_USERLICENSE 5.
        let got = symbols_by_failures(pairs(&[
            ("UserLicense", 3),
            ("MENROLL_E_USERLICENSE", 5),
            ("UserLicense", 4),
        ]));
        assert_eq!(got, ["UserLicense", "MENROLL_E_USERLICENSE"]);
    }

    #[test]
    fn ties_go_to_the_greater_symbol_and_unnamed_failures_come_last() {
        let got = symbols_by_failures(pairs(&[("", 50), ("B", 2), ("A", 2), ("", 1)]));
        assert_eq!(got, ["B", "A", ""]);
        assert_eq!(symbols_by_failures(pairs(&[("", 4)])), [""]);
        assert!(symbols_by_failures(Vec::new()).is_empty());
    }
}
