//! Which tables answer a time range: the coarsest rollup family that holds every column the
//! question needs, at the coarsest grain that fits the range (Monday-aligned weeks, then days,
//! then hours), and raw rows for what is not hour-aligned. States from every segment are
//! merged in one `UNION ALL` (one branch per table, segments on the same table OR-ed: see
//! `Engine::union`), so unique counts stay merges of uniq states, never sums. A plan that is
//! a single raw segment is aggregated straight from the rows instead.
//!
//! Why several families and grains: a query costs about one state read and merged per
//! (bucket, key) cell in range (states are capped in size, see migration 0003), so the fewest
//! cells that answer it, the narrowest key (no tenant for all-tenant views) and the longest
//! bucket, are what make a dashboard query cheap.

/// A set of rollup tables sharing one key (see migrations 0003 and 0004), at hour, day and week
/// grain (some also at five minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Every stored dimension, per tenant (`rollup_signals_*`): answers every aggregate
    /// question; the drill-down family.
    Fine,
    /// tenant x outcome x platform x enrollment method x source kind (`rollup_outcomes_*`).
    Totals,
    /// [`Family::Fine`] without tenant, method and OS version (`rollup_fleet_signals_*`):
    /// all-tenant category, code, stage and platform questions.
    Fleet,
    /// outcome x platform x enrollment method x source kind, all tenants
    /// (`rollup_fleet_outcomes_*`): fleet totals and time series.
    FleetTotals,
    /// outcome, all tenants (`rollup_fleet_narrow_*`, migration 0004): fleet totals, the
    /// outcome breakdown, fleet time series.
    FleetNarrow,
    /// tenant x outcome (`rollup_narrow_*`): one tenant's totals, the tenant breakdown.
    Narrow,
    /// facet x value x outcome, all tenants (`rollup_fleet_facets_*`): each row counts one
    /// dimension's value (platform, method, stage, OS version or source kind), so it answers a
    /// question involving at most ONE of those columns (see [`Family::holds`]); the engine
    /// reads `value` as that column and selects its `facet`.
    FleetFacets,
    /// outcome x source kind x signal core x code, all tenants (`rollup_fleet_cores_*`): the
    /// signal `core` is `sig` without platform and stage; category questions use it when every
    /// core classifies the same in all its contexts (`Engine::core_map`).
    FleetCores,
    /// tenant, no outcome split (`rollup_tenant_totals_*`, migration 0007): per (tenant,
    /// bucket) the event counts and the four unique counts (devices, users, each all and
    /// failed-only) as their own states, so a tenant breakdown merges each state once. Its
    /// states differ from every other family's (no `outcome` column to filter on): never
    /// chosen by [`Family::for_columns`], only by `Engine::tenant_totals`.
    TenantTotals,
    /// Failed events per bucket x signal x tenant x device x user x OS version x method
    /// (`rollup_device_failures_*`, migration 0008): count, first and last time, no states;
    /// the affected-devices list (`query/affected.rs`). Never chosen by
    /// [`Family::for_columns`]: it holds failures only and no uniq states.
    DeviceFailures,
    /// Device sets per bucket x tenant x method x platform x stage x outcome
    /// (`rollup_funnel_*`, migration 0009): the funnel (`query/funnel.rs`), whose counts are
    /// unions (and one difference of unions) of these sets. Days and weeks only (see
    /// [`Family::has_hours`]). Never chosen by [`Family::for_columns`]; the funnel reads it
    /// for one tenant's questions.
    Funnel,
    /// [`Family::Funnel`] over all tenants (`rollup_fleet_funnel_*`, migration 0010), with an
    /// hourly grain: the funnel without a tenant filter.
    FleetFunnel,
}

impl Family {
    /// Columns a `Fine` rollup holds besides `bucket` and the states.
    pub const FINE_COLUMNS: &'static [&'static str] = &[
        "tenant",
        "outcome",
        "platform",
        "enrollment_method",
        "stage",
        "os_version",
        "source_kind",
        "sig",
        "error_code",
        "error_has_code",
        "error_symbol",
    ];
    /// Columns a `Totals` rollup holds besides `bucket` and the states.
    pub const TOTALS_COLUMNS: &'static [&'static str] = &[
        "tenant",
        "outcome",
        "platform",
        "enrollment_method",
        "source_kind",
    ];
    /// Columns a `Fleet` rollup holds besides `bucket` and the states.
    pub const FLEET_COLUMNS: &'static [&'static str] = &[
        "outcome",
        "platform",
        "stage",
        "source_kind",
        "sig",
        "error_code",
        "error_has_code",
        "error_symbol",
    ];
    /// Columns a `FleetTotals` rollup holds besides `bucket` and the states.
    pub const FLEET_TOTALS_COLUMNS: &'static [&'static str] =
        &["outcome", "platform", "enrollment_method", "source_kind"];

    /// Columns a `FleetNarrow` rollup holds besides `bucket` and the states.
    pub const FLEET_NARROW_COLUMNS: &'static [&'static str] = &["outcome"];
    /// Columns a `Narrow` rollup holds besides `bucket` and the states.
    pub const NARROW_COLUMNS: &'static [&'static str] = &["tenant", "outcome"];
    /// The dimensions a `FleetFacets` rollup holds, one per row (its `facet` column), plus
    /// `outcome`.
    pub const FACETS: &'static [&'static str] = &[
        "platform",
        "enrollment_method",
        "stage",
        "os_version",
        "source_kind",
    ];
    pub const FLEET_FACETS_COLUMNS: &'static [&'static str] = &[
        "outcome",
        "platform",
        "enrollment_method",
        "stage",
        "os_version",
        "source_kind",
    ];
    /// Columns a `FleetCores` rollup holds besides `bucket` and the states.
    pub const FLEET_CORES_COLUMNS: &'static [&'static str] = &[
        "outcome",
        "source_kind",
        "core",
        "error_code",
        "error_has_code",
        "error_symbol",
    ];

    /// Columns a `TenantTotals` rollup holds besides `bucket` and its states.
    pub const TENANT_TOTALS_COLUMNS: &'static [&'static str] = &["tenant"];
    /// Columns a `DeviceFailures` rollup holds besides `bucket` and its aggregates.
    pub const DEVICE_FAILURES_COLUMNS: &'static [&'static str] = &[
        "tenant",
        "device_id",
        "user_principal_name",
        "os_version",
        "enrollment_method",
        "platform",
        "stage",
        "source_kind",
        "sig",
        "error_code",
        "error_has_code",
        "error_symbol",
    ];

    /// Columns a `Funnel` rollup holds besides `bucket` and its states.
    pub const FUNNEL_COLUMNS: &'static [&'static str] = &[
        "tenant",
        "enrollment_method",
        "platform",
        "stage",
        "outcome",
    ];

    /// Columns a `FleetFunnel` rollup holds besides `bucket` and its states.
    pub const FLEET_FUNNEL_COLUMNS: &'static [&'static str] =
        &["enrollment_method", "platform", "stage", "outcome"];

    /// Smallest first: the order in which [`Family::for_columns`] tries them.
    const BY_SIZE: [Family; 8] = [
        Family::FleetNarrow,
        Family::Narrow,
        Family::FleetFacets,
        Family::FleetTotals,
        Family::Totals,
        Family::FleetCores,
        Family::Fleet,
        Family::Fine,
    ];

    /// Whether the family has a five-minute table (the outcome families: a signal family at
    /// five minutes would hold about as many cells as there are failed events).
    pub fn has_five_minutes(self) -> bool {
        matches!(self, Family::Totals | Family::FleetTotals)
    }

    /// Whether the family has week spans (migration 0011: heads and tails of weeks, built by
    /// `rollups::spans`): the all-tenant families and the per-tenant totals, which the
    /// dashboard reads over whole 7- to 90-day ranges.
    pub fn has_spans(self) -> bool {
        matches!(
            self,
            Family::FleetNarrow
                | Family::FleetFacets
                | Family::FleetTotals
                | Family::FleetCores
                | Family::Fleet
                | Family::TenantTotals
                | Family::FleetFunnel
        )
    }

    /// Whether the family has day spans (migration 0012: heads and tails of days, built by
    /// `rollups::spans` from the hourly rollup for the last [`DAY_SPAN_DAYS`] days): the
    /// families the dashboard's 7-day view reads (BENCHMARKS.md, issue 7, nineteenth and
    /// twentieth sessions): fleet totals, facets, tenant totals and signal cores. Not the
    /// fleet outcomes and signals, read by questions with several filters, nor the fleet
    /// funnel: its 7-day answer took as long with day spans (its cost is merging its device
    /// sets, not reading them).
    pub fn has_day_spans(self) -> bool {
        matches!(
            self,
            Family::FleetNarrow | Family::FleetFacets | Family::TenantTotals | Family::FleetCores
        )
    }

    /// Whether the family has an hourly table. Without one, the partial days at a range's
    /// edges are read from raw rows (the funnel: its views stay two per event, and a range's
    /// edges cost at most two days of raw rows).
    pub fn has_hours(self) -> bool {
        self != Family::Funnel
    }

    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Family::Fine => Self::FINE_COLUMNS,
            Family::Totals => Self::TOTALS_COLUMNS,
            Family::Fleet => Self::FLEET_COLUMNS,
            Family::FleetTotals => Self::FLEET_TOTALS_COLUMNS,
            Family::FleetNarrow => Self::FLEET_NARROW_COLUMNS,
            Family::Narrow => Self::NARROW_COLUMNS,
            Family::FleetFacets => Self::FLEET_FACETS_COLUMNS,
            Family::FleetCores => Self::FLEET_CORES_COLUMNS,
            Family::TenantTotals => Self::TENANT_TOTALS_COLUMNS,
            Family::DeviceFailures => Self::DEVICE_FAILURES_COLUMNS,
            Family::Funnel => Self::FUNNEL_COLUMNS,
            Family::FleetFunnel => Self::FLEET_FUNNEL_COLUMNS,
        }
    }

    /// Whether the family can answer a question needing `needed`: every column stored, and for
    /// [`Family::FleetFacets`] at most one facet column (a row counts one dimension's value).
    pub fn holds(self, needed: &[&str]) -> bool {
        if !needed.iter().all(|c| self.columns().contains(c)) {
            return false;
        }
        if self == Family::FleetFacets {
            let mut facets: Vec<&str> = needed
                .iter()
                .copied()
                .filter(|c| Self::FACETS.contains(c))
                .collect();
            facets.dedup();
            return facets.len() <= 1;
        }
        true
    }

    /// The facet column a `FleetFacets` question reads, if any (see [`Family::holds`]).
    pub fn facet_of<'a>(needed: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
        let needed: Vec<&str> = needed.into_iter().collect();
        Self::FACETS.iter().copied().find(|f| needed.contains(f))
    }

    /// The family with the fewest cells holding every column in `needed` (`tenant` when the
    /// question filters or groups by tenant).
    pub fn for_columns<'a>(needed: impl IntoIterator<Item = &'a str>) -> Family {
        Self::for_columns_at(needed, Resolution::Whole)
    }

    /// [`Family::for_columns`] among the families that have the tables `resolution` reads
    /// (sub-hour questions need a five-minute table).
    pub fn for_columns_at<'a>(
        needed: impl IntoIterator<Item = &'a str>,
        resolution: Resolution,
    ) -> Family {
        let needed: Vec<&str> = needed.into_iter().collect();
        Self::BY_SIZE
            .into_iter()
            .filter(|f| resolution != Resolution::SubHour || f.has_five_minutes())
            .find(|f| f.holds(&needed))
            .unwrap_or(Family::Fine)
    }
}

/// A rollup's time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Five minutes (`toStartOfFiveMinute`); only the outcome families
    /// ([`Family::has_five_minutes`]), for sub-hour time series.
    FiveMinutes,
    Hour,
    Day,
    /// Monday 00:00 UTC (`toMonday`).
    Week,
    /// A week's head, Monday to day `d` (2 to 6 days), from the `_heads` table (its bucket is
    /// `d`), read only while its event count equals the days' count in the daily rollup
    /// (`engine::push_ranges` renders that guard); [`Grain::HeadDays`] reads the same days
    /// from the daily rollup when it does not.
    WeekHead,
    /// A week's tail, day `d` to Sunday (2 to 6 days), from the `_tails` table (its bucket is
    /// `d`), guarded like [`Grain::WeekHead`], with [`Grain::TailDays`] as its fallback.
    WeekTail,
    /// The days of a [`Grain::WeekHead`] from the daily rollup, read only when the head is not
    /// (missing, being rebuilt, or behind events added since it was built).
    HeadDays,
    /// The days of a [`Grain::WeekTail`] from the daily rollup, read only when the tail is not.
    TailDays,
    /// A [`Grain::WeekHead`] whose count the engine checked before the query
    /// (`Engine::resolve_spans`): read without a guard and without its fallback.
    CheckedHead,
    /// A [`Grain::WeekTail`] checked before the query, like [`Grain::CheckedHead`].
    CheckedTail,
    /// A day's head, 00:00 to the end of hour `h` (2 to 23 hours), from the `_day_heads` table
    /// (its bucket is hour `h`), guarded like [`Grain::WeekHead`], with [`Grain::HeadHours`]
    /// (the same hours from the hourly rollup) as its fallback.
    DayHead,
    /// A day's tail, hour `h` to 24:00 (2 to 23 hours), from the `_day_tails` table (its bucket
    /// is hour `h`), with [`Grain::TailHours`] as its fallback.
    DayTail,
    /// The hours of a [`Grain::DayHead`] from the hourly rollup, read only when the head is not.
    HeadHours,
    /// The hours of a [`Grain::DayTail`] from the hourly rollup, read only when the tail is not.
    TailHours,
    /// A [`Grain::DayHead`] checked before the query, like [`Grain::CheckedHead`].
    CheckedDayHead,
    /// A [`Grain::DayTail`] checked before the query, like [`Grain::CheckedHead`].
    CheckedDayTail,
}

impl Grain {
    /// The span grain a guarded daily fallback stands in for, and the other way round.
    pub fn span_pair(self) -> Option<(Grain, Grain)> {
        match self {
            Grain::WeekHead | Grain::HeadDays => Some((Grain::WeekHead, Grain::HeadDays)),
            Grain::WeekTail | Grain::TailDays => Some((Grain::WeekTail, Grain::TailDays)),
            Grain::DayHead | Grain::HeadHours => Some((Grain::DayHead, Grain::HeadHours)),
            Grain::DayTail | Grain::TailHours => Some((Grain::DayTail, Grain::TailHours)),
            _ => None,
        }
    }

    /// Whether this is a span read under a guard (or checked by `Engine::resolve_spans`).
    pub fn is_span(self) -> bool {
        matches!(
            self,
            Grain::WeekHead | Grain::WeekTail | Grain::DayHead | Grain::DayTail
        )
    }

    /// Whether this is a span's guarded fallback (read only when the span is not).
    pub fn is_fallback(self) -> bool {
        matches!(
            self,
            Grain::HeadDays | Grain::TailDays | Grain::HeadHours | Grain::TailHours
        )
    }

    /// Whether this span (checked or not) is a head: its bucket is its last unit.
    pub fn is_head(self) -> bool {
        matches!(
            self,
            Grain::WeekHead | Grain::CheckedHead | Grain::DayHead | Grain::CheckedDayHead
        )
    }

    /// The grain of the rows a span is built from and checked against: days for week spans,
    /// hours for day spans.
    pub fn span_unit(self) -> Grain {
        match self.unchecked() {
            Grain::DayHead | Grain::DayTail | Grain::HeadHours | Grain::TailHours => Grain::Hour,
            _ => Grain::Day,
        }
    }

    /// The grain of a span once checked current (`CheckedHead` for `WeekHead`, ...).
    pub fn checked(self) -> Grain {
        match self {
            Grain::WeekHead => Grain::CheckedHead,
            Grain::WeekTail => Grain::CheckedTail,
            Grain::DayHead => Grain::CheckedDayHead,
            Grain::DayTail => Grain::CheckedDayTail,
            g => g,
        }
    }

    /// The span table grain a checked span reads (`WeekHead` for `CheckedHead`, ...).
    pub fn unchecked(self) -> Grain {
        match self {
            Grain::CheckedHead => Grain::WeekHead,
            Grain::CheckedTail => Grain::WeekTail,
            Grain::CheckedDayHead => Grain::DayHead,
            Grain::CheckedDayTail => Grain::DayTail,
            g => g,
        }
    }

    /// Whether this grain is a checked span (read alone, its bucket only).
    pub fn is_checked(self) -> bool {
        matches!(
            self,
            Grain::CheckedHead | Grain::CheckedTail | Grain::CheckedDayHead | Grain::CheckedDayTail
        )
    }
}

/// A table a segment reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Raw,
    Rollup(Family, Grain),
}

impl Source {
    pub fn table(self) -> &'static str {
        use Family::*;
        use Grain::*;
        match self {
            Source::Raw => "enrollment_events",
            // No such tables (see `Family::has_five_minutes`): `plan` never produces these,
            // and a bug that did would fail loudly instead of reading the wrong grain.
            // A span's guarded fallback reads the daily rollup.
            Source::Rollup(f, HeadDays | TailDays) => Source::Rollup(f, Day).table(),
            Source::Rollup(f, HeadHours | TailHours) => Source::Rollup(f, Hour).table(),
            Source::Rollup(
                f,
                g @ (CheckedHead | CheckedTail | CheckedDayHead | CheckedDayTail),
            ) => Source::Rollup(f, g.unchecked()).table(),
            Source::Rollup(FleetNarrow, DayHead) => "rollup_fleet_narrow_day_heads",
            Source::Rollup(FleetNarrow, DayTail) => "rollup_fleet_narrow_day_tails",
            Source::Rollup(FleetFacets, DayHead) => "rollup_fleet_facets_day_heads",
            Source::Rollup(FleetFacets, DayTail) => "rollup_fleet_facets_day_tails",
            Source::Rollup(TenantTotals, DayHead) => "rollup_tenant_totals_day_heads",
            Source::Rollup(TenantTotals, DayTail) => "rollup_tenant_totals_day_tails",
            Source::Rollup(FleetCores, DayHead) => "rollup_fleet_cores_day_heads",
            Source::Rollup(FleetCores, DayTail) => "rollup_fleet_cores_day_tails",
            // No such tables (see `Family::has_day_spans`): `plan` never produces these.
            Source::Rollup(_, DayHead) => "rollup_day_heads_not_built",
            Source::Rollup(_, DayTail) => "rollup_day_tails_not_built",
            Source::Rollup(FleetNarrow, WeekHead) => "rollup_fleet_narrow_heads",
            Source::Rollup(FleetNarrow, WeekTail) => "rollup_fleet_narrow_tails",
            Source::Rollup(FleetFacets, WeekHead) => "rollup_fleet_facets_heads",
            Source::Rollup(FleetFacets, WeekTail) => "rollup_fleet_facets_tails",
            Source::Rollup(FleetTotals, WeekHead) => "rollup_fleet_outcomes_heads",
            Source::Rollup(FleetTotals, WeekTail) => "rollup_fleet_outcomes_tails",
            Source::Rollup(FleetCores, WeekHead) => "rollup_fleet_cores_heads",
            Source::Rollup(FleetCores, WeekTail) => "rollup_fleet_cores_tails",
            Source::Rollup(Fleet, WeekHead) => "rollup_fleet_signals_heads",
            Source::Rollup(Fleet, WeekTail) => "rollup_fleet_signals_tails",
            Source::Rollup(TenantTotals, WeekHead) => "rollup_tenant_totals_heads",
            Source::Rollup(TenantTotals, WeekTail) => "rollup_tenant_totals_tails",
            Source::Rollup(FleetFunnel, WeekHead) => "rollup_fleet_funnel_heads",
            Source::Rollup(FleetFunnel, WeekTail) => "rollup_fleet_funnel_tails",
            // No such tables (see `Family::has_spans`): `plan` never produces these.
            Source::Rollup(Fine | Totals | Narrow | DeviceFailures | Funnel, WeekHead) => {
                "rollup_heads_not_built"
            }
            Source::Rollup(Fine | Totals | Narrow | DeviceFailures | Funnel, WeekTail) => {
                "rollup_tails_not_built"
            }
            Source::Rollup(Fine, FiveMinutes) => "rollup_signals_5m",
            Source::Rollup(Fleet, FiveMinutes) => "rollup_fleet_signals_5m",
            Source::Rollup(Totals, FiveMinutes) => "rollup_outcomes_5m",
            Source::Rollup(FleetTotals, FiveMinutes) => "rollup_fleet_outcomes_5m",
            Source::Rollup(Fine, Hour) => "rollup_signals_hourly",
            Source::Rollup(Fine, Day) => "rollup_signals_daily",
            Source::Rollup(Fine, Week) => "rollup_signals_weekly",
            Source::Rollup(Totals, Hour) => "rollup_outcomes_hourly",
            Source::Rollup(Totals, Day) => "rollup_outcomes_daily",
            Source::Rollup(Totals, Week) => "rollup_outcomes_weekly",
            Source::Rollup(Fleet, Hour) => "rollup_fleet_signals_hourly",
            Source::Rollup(Fleet, Day) => "rollup_fleet_signals_daily",
            Source::Rollup(Fleet, Week) => "rollup_fleet_signals_weekly",
            Source::Rollup(FleetTotals, Hour) => "rollup_fleet_outcomes_hourly",
            Source::Rollup(FleetTotals, Day) => "rollup_fleet_outcomes_daily",
            Source::Rollup(FleetTotals, Week) => "rollup_fleet_outcomes_weekly",
            Source::Rollup(FleetNarrow, FiveMinutes) => "rollup_fleet_narrow_5m",
            Source::Rollup(FleetNarrow, Hour) => "rollup_fleet_narrow_hourly",
            Source::Rollup(FleetNarrow, Day) => "rollup_fleet_narrow_daily",
            Source::Rollup(FleetNarrow, Week) => "rollup_fleet_narrow_weekly",
            Source::Rollup(Narrow, FiveMinutes) => "rollup_narrow_5m",
            Source::Rollup(Narrow, Hour) => "rollup_narrow_hourly",
            Source::Rollup(Narrow, Day) => "rollup_narrow_daily",
            Source::Rollup(Narrow, Week) => "rollup_narrow_weekly",
            Source::Rollup(FleetFacets, FiveMinutes) => "rollup_fleet_facets_5m",
            Source::Rollup(FleetFacets, Hour) => "rollup_fleet_facets_hourly",
            Source::Rollup(FleetFacets, Day) => "rollup_fleet_facets_daily",
            Source::Rollup(FleetFacets, Week) => "rollup_fleet_facets_weekly",
            Source::Rollup(FleetCores, FiveMinutes) => "rollup_fleet_cores_5m",
            Source::Rollup(FleetCores, Hour) => "rollup_fleet_cores_hourly",
            Source::Rollup(FleetCores, Day) => "rollup_fleet_cores_daily",
            Source::Rollup(FleetCores, Week) => "rollup_fleet_cores_weekly",
            Source::Rollup(TenantTotals, FiveMinutes) => "rollup_tenant_totals_5m",
            Source::Rollup(TenantTotals, Hour) => "rollup_tenant_totals_hourly",
            Source::Rollup(TenantTotals, Day) => "rollup_tenant_totals_daily",
            Source::Rollup(TenantTotals, Week) => "rollup_tenant_totals_weekly",
            Source::Rollup(DeviceFailures, FiveMinutes) => "rollup_device_failures_5m",
            Source::Rollup(DeviceFailures, Hour) => "rollup_device_failures_hourly",
            Source::Rollup(DeviceFailures, Day) => "rollup_device_failures_daily",
            Source::Rollup(DeviceFailures, Week) => "rollup_device_failures_weekly",
            // No such tables (see `Family::has_hours`).
            Source::Rollup(Funnel, FiveMinutes) => "rollup_funnel_5m",
            Source::Rollup(Funnel, Hour) => "rollup_funnel_hourly",
            Source::Rollup(Funnel, Day) => "rollup_funnel_daily",
            Source::Rollup(Funnel, Week) => "rollup_funnel_weekly",
            Source::Rollup(FleetFunnel, FiveMinutes) => "rollup_fleet_funnel_5m",
            Source::Rollup(FleetFunnel, Hour) => "rollup_fleet_funnel_hourly",
            Source::Rollup(FleetFunnel, Day) => "rollup_fleet_funnel_daily",
            Source::Rollup(FleetFunnel, Week) => "rollup_fleet_funnel_weekly",
        }
    }
}

/// A half-open range `[from, to)` read from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source: Source,
    pub from: u32,
    pub to: u32,
}

/// The finest time resolution the query needs from its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resolution {
    /// Sub-hour buckets: five-minute rollups (outcome families) plus raw edges, else raw rows.
    SubHour,
    /// Hour buckets: hourly rollup plus raw edges.
    Hour,
    /// Day buckets: daily and hourly rollups plus raw edges.
    Day,
    /// No time buckets (one answer for the range): weekly rollups too.
    Whole,
}

const FIVE_MINUTES: u32 = 300;
const HOUR: u32 = 3_600;
const DAY: u32 = 86_400;
const WEEK: u32 = 7 * DAY;
/// 1970-01-05T00:00:00Z, the first Monday of Unix time: weeks are aligned to it.
const FIRST_MONDAY: u32 = 4 * DAY;

fn ceil_to(t: u32, step: u32) -> u32 {
    t.div_ceil(step).saturating_mul(step)
}

fn floor_to(t: u32, step: u32) -> u32 {
    t / step * step
}

/// Splits `[from, to)` into segments, coarsest first. `family` None forces raw rows.
pub fn plan(from: u32, to: u32, resolution: Resolution, family: Option<Family>) -> Vec<Segment> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    let Some(family) = family.filter(|f| resolution != Resolution::SubHour || f.has_five_minutes())
    else {
        out.push(Segment {
            source: Source::Raw,
            from,
            to,
        });
        return out;
    };
    match resolution {
        Resolution::Whole => weeks(family, from, to, &mut out),
        Resolution::Day => days(family, from, to, hours, &mut out),
        Resolution::Hour => hours(family, from, to, &mut out),
        Resolution::SubHour => five_minutes(family, from, to, &mut out),
    }
    out
}

fn weeks(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    let ws = FIRST_MONDAY
        .max(FIRST_MONDAY.saturating_add(ceil_to(from.saturating_sub(FIRST_MONDAY), WEEK)));
    let we = if to < FIRST_MONDAY {
        0
    } else {
        FIRST_MONDAY + floor_to(to - FIRST_MONDAY, WEEK)
    };
    if from <= ws && ws < we && we <= to {
        out.push(Segment {
            source: Source::Rollup(family, Grain::Week),
            from: ws,
            to: we,
        });
        before_monday(family, from, ws, out);
        after_monday(family, we, to, out);
    } else if from <= ws && ws < to {
        // No whole week, but a Monday inside (or at the start): a tail, then a head.
        before_monday(family, from, ws, out);
        after_monday(family, ws, to, out);
    } else {
        days(family, from, to, edge_hours, out);
    }
}

/// Whole days a span may cover: 2 to 6 (one day is a daily row, seven a weekly one).
fn span_days(from: u32, to: u32) -> bool {
    (2 * DAY..=6 * DAY).contains(&to.saturating_sub(from))
}

/// `[from, monday)`: its whole days as a week's tail (guarded, with the days as fallback) when
/// the family has spans and they are 2 to 6 days, else as days; the partial day before them
/// as hours.
fn before_monday(family: Family, from: u32, monday: u32, out: &mut Vec<Segment>) {
    let ds = ceil_to(from, DAY);
    if family.has_spans() && ds < monday && span_days(ds, monday) {
        guarded_span(family, Grain::WeekTail, ds, monday, out);
        edge_hours(family, from, ds, out);
    } else {
        days(family, from, monday, edge_hours, out);
    }
}

/// `[monday, to)`: its whole days as a week's head when possible (see [`before_monday`]), the
/// partial day after them as hours.
fn after_monday(family: Family, monday: u32, to: u32, out: &mut Vec<Segment>) {
    let de = floor_to(to, DAY);
    if family.has_spans() && monday < de && span_days(monday, de) {
        guarded_span(family, Grain::WeekHead, monday, de, out);
        edge_hours(family, de, to, out);
    } else {
        days(family, monday, to, edge_hours, out);
    }
}

/// The span segment and its guarded daily fallback: exactly one of the two is read.
fn guarded_span(family: Family, span: Grain, from: u32, to: u32, out: &mut Vec<Segment>) {
    let Some((span, fallback)) = span.span_pair() else {
        return;
    };
    for grain in [span, fallback] {
        out.push(Segment {
            source: Source::Rollup(family, grain),
            from,
            to,
        });
    }
}

/// How the partial days at a range's edges are read: [`hours`] when the answer has time
/// buckets, [`edge_hours`] (day spans) when it is one answer for the range.
type Edge = fn(Family, u32, u32, &mut Vec<Segment>);

fn days(family: Family, from: u32, to: u32, edge: Edge, out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let (ds, de) = (ceil_to(from, DAY), floor_to(to, DAY));
    if ds < de {
        out.push(Segment {
            source: Source::Rollup(family, Grain::Day),
            from: ds,
            to: de,
        });
        edge(family, from, ds, out);
        edge(family, de, to, out);
    } else {
        edge(family, from, to, out);
    }
}

/// The days back from the newest hour holding events for which the analyzer builds day spans
/// (`rollups::spans`): the dashboard's 7-day view reads the tail of the day 7 days back and
/// the head of today, so 9 days cover it with a day to spare. Older hour edges are read from
/// the hourly rollup, as before day spans (`settle_day_spans`).
pub const DAY_SPAN_DAYS: u32 = 9;

/// Hours a day span may cover: 2 to 23 (one hour is an hourly row, 24 a daily one).
fn span_hours(from: u32, to: u32) -> bool {
    (2 * HOUR..=23 * HOUR).contains(&to.saturating_sub(from))
}

/// The partial day `[from, to)` at an edge of a whole-range answer: its whole hours as a
/// day's head (from midnight) or tail (to midnight) when the family has day spans and they
/// are 2 to 23 hours, guarded with the hours as fallback; else hours. Raw rows for what is
/// not hour-aligned, as [`hours`].
fn edge_hours(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    let (hs, he) = (ceil_to(from, HOUR), floor_to(to, HOUR));
    let day = floor_to(hs, DAY);
    // Less than a whole day across a midnight (the 24-hour view): a tail, then a head.
    let midnight = day.saturating_add(DAY);
    if family.has_day_spans() && hs < midnight && midnight < he {
        edge_hours(family, from, midnight, out);
        edge_hours(family, midnight, to, out);
        return;
    }
    let grain = if hs == day {
        Grain::DayHead
    } else {
        Grain::DayTail
    };
    let within_day = if grain == Grain::DayHead {
        he < day + DAY
    } else {
        he == day + DAY
    };
    if !family.has_day_spans() || hs >= he || !within_day || !span_hours(hs, he) {
        hours(family, from, to, out);
        return;
    }
    guarded_span(family, grain, hs, he, out);
    for (a, b) in [(from, hs), (he, to)] {
        if a < b {
            out.push(Segment {
                source: Source::Raw,
                from: a,
                to: b,
            });
        }
    }
}

/// How long after an hour ends its day spans may still be missing or behind: the builder
/// builds a span [`DAY_SPAN_DELAY`] after its last hour (so that the hour's late events are
/// in), and runs every minute by default.
pub const DAY_SPAN_SETTLE: u32 = 600;
/// How long after its last hour the builder builds a day span (`rollups::spans`).
pub const DAY_SPAN_DELAY: u32 = 300;

/// `segs` with day spans that cannot be current read from the hourly rollup instead: a head
/// reaching past `now - DAY_SPAN_SETTLE` is cut there (the hours after the cut are hourly
/// rows) and a tail ending after it is read as hours, so that the dashboard's 7-day view,
/// which ends at the next whole hour, reads today's head up to the last settled hour. Spans
/// of days before `since` (older than the builder keeps, [`DAY_SPAN_DAYS`]) are hours too.
/// Without this the check would find those spans missing and every such question would run
/// twice (`Engine::with_checked_spans`).
pub fn settle_day_spans(segs: Vec<Segment>, now: u32, since: u32) -> Vec<Segment> {
    let settled = floor_to(now.saturating_sub(DAY_SPAN_SETTLE), HOUR);
    let mut out = Vec::with_capacity(segs.len() + 1);
    for seg in segs {
        let Source::Rollup(family, grain) = seg.source else {
            out.push(seg);
            continue;
        };
        let hourly = |from: u32, to: u32| Segment {
            source: Source::Rollup(family, Grain::Hour),
            from,
            to,
        };
        let day = floor_to(seg.from, DAY);
        match grain {
            Grain::DayHead | Grain::HeadHours => {
                let cut = seg.to.min(settled);
                if day < since || cut < seg.from || !span_hours(seg.from, cut) {
                    if grain == Grain::DayHead {
                        out.push(hourly(seg.from, seg.to));
                    }
                } else {
                    out.push(Segment { to: cut, ..seg });
                    if cut < seg.to && grain == Grain::DayHead {
                        out.push(hourly(cut, seg.to));
                    }
                }
            }
            Grain::DayTail | Grain::TailHours => {
                if day < since || seg.to > settled {
                    if grain == Grain::DayTail {
                        out.push(hourly(seg.from, seg.to));
                    }
                } else {
                    out.push(seg);
                }
            }
            _ => out.push(seg),
        }
    }
    out
}

fn hours(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    if family.has_hours() {
        finest(family, Grain::Hour, HOUR, from, to, out);
    } else if from < to {
        out.push(Segment {
            source: Source::Raw,
            from,
            to,
        });
    }
}

/// Five-minute rollup for the aligned part, raw rows for the edges. 15-minute buckets are
/// whole five-minute buckets, so the same table answers them.
fn five_minutes(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    finest(family, Grain::FiveMinutes, FIVE_MINUTES, from, to, out);
}

/// The finest rollup segment of a plan (`grain`, `step` seconds wide) for the aligned part of
/// `[from, to)`, raw rows for the unaligned edges (or for all of it when nothing aligns).
fn finest(family: Family, grain: Grain, step: u32, from: u32, to: u32, out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let (s, e) = (ceil_to(from, step), floor_to(to, step));
    if s >= e {
        out.push(Segment {
            source: Source::Raw,
            from,
            to,
        });
        return;
    }
    out.push(Segment {
        source: Source::Rollup(family, grain),
        from: s,
        to: e,
    });
    for (a, b) in [(from, s), (e, to)] {
        if a < b {
            out.push(Segment {
                source: Source::Raw,
                from: a,
                to: b,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINE_DAY: Source = Source::Rollup(Family::Fine, Grain::Day);
    const FINE_HOUR: Source = Source::Rollup(Family::Fine, Grain::Hour);
    /// 2024-03-01T00:00:00Z, a Friday; 2024-03-04 is a Monday.
    const FRI: u32 = 1_709_251_200;
    const MON: u32 = FRI + 3 * DAY;

    fn covered(segs: &[Segment]) -> Vec<(u32, u32)> {
        let mut v: Vec<_> = segs.iter().map(|s| (s.from, s.to)).collect();
        v.sort();
        v
    }

    fn raw(from: u32, to: u32) -> Vec<Segment> {
        vec![Segment {
            source: Source::Raw,
            from,
            to,
        }]
    }

    #[test]
    fn aligned_day_range_is_one_daily_segment() {
        let p = plan(FRI, FRI + 2 * DAY, Resolution::Day, Some(Family::Fine));
        assert_eq!(
            p,
            vec![Segment {
                source: FINE_DAY,
                from: FRI,
                to: FRI + 2 * DAY
            }]
        );
        // Less than a Monday-aligned week: no weekly segment even for a whole-range answer.
        assert_eq!(
            plan(FRI, FRI + 2 * DAY, Resolution::Whole, Some(Family::Fine)),
            p
        );
    }

    #[test]
    fn whole_range_uses_monday_weeks_then_days_hours_and_raw() {
        let from = FRI - HOUR - 10;
        let to = MON + 2 * WEEK + DAY + HOUR + 20;
        let p = plan(from, to, Resolution::Whole, Some(Family::Totals));
        assert_eq!(
            p[0],
            Segment {
                source: Source::Rollup(Family::Totals, Grain::Week),
                from: MON,
                to: MON + 2 * WEEK
            }
        );
        assert_eq!(
            covered(&p),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI),
                (FRI, MON),
                (MON, MON + 2 * WEEK),
                (MON + 2 * WEEK, MON + 2 * WEEK + DAY),
                (MON + 2 * WEEK + DAY, MON + 2 * WEEK + DAY + HOUR),
                (MON + 2 * WEEK + DAY + HOUR, to)
            ]
        );
        assert_eq!(FIRST_MONDAY + floor_to(MON - FIRST_MONDAY, WEEK), MON);
        // Ranges before the first Monday of Unix time never read weeks.
        assert!(
            plan(0, 3 * WEEK, Resolution::Whole, Some(Family::Fine))
                .iter()
                .all(|s| s.from >= FIRST_MONDAY
                    || s.source != Source::Rollup(Family::Fine, Grain::Week))
        );
    }

    fn seg(family: Family, grain: Grain, from: u32, to: u32) -> Segment {
        Segment {
            source: Source::Rollup(family, grain),
            from,
            to,
        }
    }

    #[test]
    fn edge_days_of_a_span_family_are_a_guarded_tail_and_head() {
        use Family::FleetCores as F;
        // 2024-03-01 (Friday) to 2024-03-31 (Sunday, excluded): Friday to Sunday is a tail,
        // three weeks, Monday 03-25 to Saturday 03-30 a head; each span beside its fallback.
        let p = plan(FRI, MON + 3 * WEEK + 6 * DAY, Resolution::Whole, Some(F));
        assert_eq!(
            p,
            vec![
                seg(F, Grain::Week, MON, MON + 3 * WEEK),
                seg(F, Grain::WeekTail, FRI, MON),
                seg(F, Grain::TailDays, FRI, MON),
                seg(F, Grain::WeekHead, MON + 3 * WEEK, MON + 3 * WEEK + 6 * DAY),
                seg(F, Grain::HeadDays, MON + 3 * WEEK, MON + 3 * WEEK + 6 * DAY),
            ]
        );
        // Unaligned: the partial days are hours and raw rows; the whole days beside them spans.
        let (from, to) = (FRI - 5 * HOUR - 10, MON + WEEK + 2 * DAY + HOUR);
        let p = plan(from, to, Resolution::Whole, Some(F));
        assert!(p.contains(&seg(F, Grain::WeekTail, FRI, MON)));
        assert!(p.contains(&seg(F, Grain::WeekHead, MON + WEEK, MON + WEEK + 2 * DAY)));
        let mut read: Vec<(u32, u32)> = p
            .iter()
            .filter(|s| !matches!(s.source, Source::Rollup(_, g) if g.is_fallback()))
            .map(|s| (s.from, s.to))
            .collect();
        read.sort();
        // Without the fallbacks the segments tile the range exactly once.
        assert_eq!(read.first().map(|r| r.0), Some(from));
        assert!(read.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(read.last().map(|r| r.1), Some(to));
    }

    #[test]
    fn spans_only_where_two_to_six_whole_days_and_only_for_span_families() {
        use Family::FleetCores as F;
        // One edge day (Sunday) stays a daily row; a Monday start with 6 days is a head.
        let p = plan(MON - DAY, MON + WEEK + DAY, Resolution::Whole, Some(F));
        assert!(p.contains(&seg(F, Grain::Day, MON - DAY, MON)));
        assert!(p.contains(&seg(F, Grain::Day, MON + WEEK, MON + WEEK + DAY)));
        let p = plan(MON, MON + 6 * DAY, Resolution::Whole, Some(F));
        assert_eq!(p[0], seg(F, Grain::WeekHead, MON, MON + 6 * DAY));
        // A tail and a head around a Monday with no whole week.
        let p = plan(FRI, MON + 3 * DAY, Resolution::Whole, Some(F));
        assert_eq!(p[0], seg(F, Grain::WeekTail, FRI, MON));
        assert_eq!(p[2], seg(F, Grain::WeekHead, MON, MON + 3 * DAY));
        // Families without spans and day-resolution plans read days.
        for (family, resolution) in [
            (Family::Totals, Resolution::Whole),
            (Family::Fine, Resolution::Whole),
            (Family::FleetCores, Resolution::Day),
        ] {
            assert!(
                plan(FRI, MON + 3 * WEEK + 6 * DAY, resolution, Some(family))
                    .iter()
                    .all(|s| matches!(
                        s.source,
                        Source::Rollup(_, Grain::Week | Grain::Day | Grain::Hour)
                    ))
            );
        }
        assert_eq!(
            Source::Rollup(F, Grain::HeadDays).table(),
            Source::Rollup(F, Grain::Day).table()
        );
    }

    #[test]
    fn hour_edges_of_a_day_span_family_are_a_guarded_day_tail_and_head() {
        use Family::FleetFacets as F;
        // 30 days from Friday 03-01 07:00 to Sunday 03-31 07:00 (the 7-day view's shape):
        // the first day's tail 07:00-24:00, the last day's head 00:00-07:00.
        let (from, to) = (FRI + 7 * HOUR, MON + 3 * WEEK + 6 * DAY + 7 * HOUR);
        let p = plan(from, to, Resolution::Whole, Some(F));
        assert!(p.contains(&seg(F, Grain::DayTail, from, FRI + DAY)));
        assert!(p.contains(&seg(F, Grain::TailHours, from, FRI + DAY)));
        let last = MON + 3 * WEEK + 6 * DAY;
        assert!(p.contains(&seg(F, Grain::DayHead, last, to)));
        assert!(p.contains(&seg(F, Grain::HeadHours, last, to)));
        assert!(!p.iter().any(|s| s.source == Source::Rollup(F, Grain::Hour)));
        // Without the fallbacks the segments tile the range exactly once.
        let mut read: Vec<(u32, u32)> = p
            .iter()
            .filter(|s| !matches!(s.source, Source::Rollup(_, g) if g.is_fallback()))
            .map(|s| (s.from, s.to))
            .collect();
        read.sort();
        assert_eq!(read.first().map(|r| r.0), Some(from));
        assert!(read.windows(2).all(|w| w[0].1 == w[1].0), "{read:?}");
        assert_eq!(read.last().map(|r| r.1), Some(to));
        // Unaligned ends: raw rows beside the spans.
        let p = plan(from - 10, to + 20, Resolution::Whole, Some(F));
        assert!(p.contains(&seg(F, Grain::DayTail, from, FRI + DAY)));
        assert!(p.contains(&Segment {
            source: Source::Raw,
            from: from - 10,
            to: from
        }));
        assert!(p.contains(&Segment {
            source: Source::Raw,
            from: to,
            to: to + 20
        }));
        // One hour is an hourly row; families without day spans and bucketed answers read hours.
        let p = plan(
            FRI + 23 * HOUR,
            MON + WEEK + HOUR,
            Resolution::Whole,
            Some(F),
        );
        assert!(p.contains(&seg(F, Grain::Hour, FRI + 23 * HOUR, FRI + DAY)));
        assert!(p.contains(&seg(F, Grain::Hour, MON + WEEK, MON + WEEK + HOUR)));
        for (family, resolution) in [
            (Family::Fleet, Resolution::Whole),
            (F, Resolution::Day),
            (F, Resolution::Hour),
        ] {
            assert!(
                plan(from, to, resolution, Some(family))
                    .iter()
                    .all(|s| !matches!(s.source, Source::Rollup(_, g) if g.span_unit() == Grain::Hour && g != Grain::Hour)),
                "{family:?} {resolution:?}"
            );
        }
    }

    #[test]
    fn a_day_across_midnight_is_a_tail_then_a_head() {
        use Family::TenantTotals as F;
        // The 24-hour view: 19:15 to 19:15 the next day.
        let (from, to) = (FRI + 19 * HOUR + 900, FRI + DAY + 19 * HOUR + 900);
        let p = plan(from, to, Resolution::Whole, Some(F));
        assert_eq!(
            p,
            vec![
                seg(F, Grain::DayTail, FRI + 20 * HOUR, FRI + DAY),
                seg(F, Grain::TailHours, FRI + 20 * HOUR, FRI + DAY),
                Segment {
                    source: Source::Raw,
                    from,
                    to: FRI + 20 * HOUR
                },
                seg(F, Grain::DayHead, FRI + DAY, FRI + DAY + 19 * HOUR),
                seg(F, Grain::HeadHours, FRI + DAY, FRI + DAY + 19 * HOUR),
                Segment {
                    source: Source::Raw,
                    from: FRI + DAY + 19 * HOUR,
                    to
                },
            ]
        );
    }

    #[test]
    fn unsettled_and_old_day_spans_are_read_as_hours() {
        use Family::FleetFacets as F;
        // The 7-day view at 10:04, ending at 11:00.
        let today = MON + WEEK;
        let (from, to) = (today - 7 * DAY + 11 * HOUR, today + 11 * HOUR);
        let now = today + 10 * HOUR + 240;
        let p = settle_day_spans(plan(from, to, Resolution::Whole, Some(F)), now, 0);
        // Settled up to 09:00 (ten minutes back, floored to the hour): the head to 09:00 and
        // the hours 09:00-11:00.
        assert!(p.contains(&seg(F, Grain::DayHead, today, today + 9 * HOUR)));
        assert!(p.contains(&seg(F, Grain::HeadHours, today, today + 9 * HOUR)));
        assert!(p.contains(&seg(F, Grain::Hour, today + 9 * HOUR, to)));
        assert!(p.contains(&seg(F, Grain::DayTail, from, today - 6 * DAY)));
        // A head shorter than two settled hours is hours; so is a tail not over yet.
        let p = settle_day_spans(
            plan(from, to, Resolution::Whole, Some(F)),
            today + HOUR + 700,
            0,
        );
        assert!(p.contains(&seg(F, Grain::Hour, today, to)));
        assert!(
            !p.iter()
                .any(|s| s.source == Source::Rollup(F, Grain::HeadHours))
        );
        let tail = plan(today + 3 * HOUR, today + DAY, Resolution::Whole, Some(F));
        assert_eq!(
            settle_day_spans(tail.clone(), today + DAY + 300, 0),
            vec![seg(F, Grain::Hour, today + 3 * HOUR, today + DAY)]
        );
        assert_eq!(settle_day_spans(tail.clone(), today + DAY + 600, 0), tail);
        // Days before `since` are hours, and nothing else changes.
        let p = settle_day_spans(
            plan(from, to, Resolution::Whole, Some(F)),
            now,
            today - 6 * DAY,
        );
        assert!(p.contains(&seg(F, Grain::Hour, from, today - 6 * DAY)));
        assert!(
            !p.iter()
                .any(|s| s.source == Source::Rollup(F, Grain::TailHours))
        );
        let week = plan(
            FRI,
            MON + 3 * WEEK,
            Resolution::Whole,
            Some(Family::FleetCores),
        );
        assert_eq!(settle_day_spans(week.clone(), now, now), week);
    }

    /// The dashboard's 7-day view asked at every ten minutes of a day (what the real-clock
    /// test `the_seven_day_view_reads_day_spans_up_to_the_settled_hour` meets at whatever
    /// time CI runs it): the range is covered once, the first day is a day tail when it is
    /// 2-22 hours, and today is a head cut at the settled hour, then hours, from 02:10 on;
    /// asked after 23:00 the range ends at midnight and today is a whole day.
    #[test]
    fn the_seven_day_view_at_every_time_of_day() {
        use Family::FleetFacets as F;
        let today = MON + 2 * WEEK;
        for asked in (today..today + DAY).step_by(600) {
            let to = asked.div_ceil(HOUR) * HOUR;
            let from = to - 7 * DAY;
            let p = settle_day_spans(plan(from, to, Resolution::Whole, Some(F)), asked, 0);
            let at = (asked - today) / 60;
            let read: Vec<_> = p
                .iter()
                .filter(|s| match s.source {
                    Source::Rollup(_, g) => !g.is_fallback(),
                    Source::Raw => true,
                })
                .map(|s| (s.from, s.to))
                .collect();
            let mut sorted = read.clone();
            sorted.sort();
            assert_eq!(sorted.first().map(|r| r.0), Some(from), "{at} min: {p:?}");
            assert_eq!(sorted.last().map(|r| r.1), Some(to), "{at} min: {p:?}");
            assert!(
                sorted.windows(2).all(|w| w[0].1 == w[1].0),
                "{at} min: {p:?}"
            );
            let tail_hours = (DAY - to % DAY) % DAY;
            let tail = seg(F, Grain::DayTail, from, from - from % DAY + DAY);
            assert_eq!(
                p.contains(&tail),
                (2 * HOUR..=23 * HOUR).contains(&tail_hours),
                "{at} min: {p:?}"
            );
            let settled = (asked - DAY_SPAN_SETTLE) / HOUR * HOUR;
            let head_expected = !to.is_multiple_of(DAY) && settled >= today + 2 * HOUR;
            assert_eq!(
                p.contains(&seg(F, Grain::DayHead, today, settled)),
                head_expected,
                "{at} min: {p:?}"
            );
            if head_expected {
                assert!(
                    p.contains(&seg(F, Grain::Hour, settled, to)),
                    "{at} min: {p:?}"
                );
            }
            assert_eq!(
                p.iter()
                    .filter(|s| s.source == Source::Rollup(F, Grain::DayHead))
                    .count(),
                usize::from(head_expected),
                "{at} min: {p:?}"
            );
        }
    }

    #[test]
    fn unaligned_range_uses_all_three_and_covers_exactly() {
        let from = FRI - HOUR - 10;
        let to = FRI + 2 * DAY + HOUR + 20;
        let p = plan(from, to, Resolution::Day, Some(Family::Fine));
        assert_eq!(
            covered(&p),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI),
                (FRI, FRI + 2 * DAY),
                (FRI + 2 * DAY, FRI + 2 * DAY + HOUR),
                (FRI + 2 * DAY + HOUR, to)
            ]
        );
        assert_eq!(p[0].source, FINE_DAY);
        let h = plan(from, to, Resolution::Hour, Some(Family::Fine));
        assert!(
            h.iter()
                .all(|s| s.source == FINE_HOUR || s.source == Source::Raw)
        );
        assert_eq!(
            covered(&h),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI + 2 * DAY + HOUR),
                (FRI + 2 * DAY + HOUR, to)
            ]
        );
        assert_eq!(
            plan(from, to, Resolution::SubHour, Some(Family::Fine)),
            raw(from, to)
        );
        let sub = plan(from, to, Resolution::SubHour, Some(Family::Totals));
        let five = Source::Rollup(Family::Totals, Grain::FiveMinutes);
        assert_eq!(sub[0].source, five);
        assert_eq!(
            covered(&sub),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI + 2 * DAY + HOUR),
                (FRI + 2 * DAY + HOUR, to)
            ]
        );
        // Aligned: the five-minute table alone; inside one five-minute bucket: raw alone.
        assert_eq!(
            plan(
                FRI,
                FRI + HOUR,
                Resolution::SubHour,
                Some(Family::FleetTotals)
            ),
            vec![Segment {
                source: Source::Rollup(Family::FleetTotals, Grain::FiveMinutes),
                from: FRI,
                to: FRI + HOUR
            }]
        );
        assert_eq!(
            plan(
                FRI + 10,
                FRI + 200,
                Resolution::SubHour,
                Some(Family::Totals)
            ),
            raw(FRI + 10, FRI + 200)
        );
        // No hourly funnel table: the partial days at the edges are raw rows.
        let funnel = plan(from, to, Resolution::Whole, Some(Family::Funnel));
        assert_eq!(
            funnel,
            vec![
                Segment {
                    source: Source::Rollup(Family::Funnel, Grain::Day),
                    from: FRI,
                    to: FRI + 2 * DAY
                },
                Segment {
                    source: Source::Raw,
                    from,
                    to: FRI
                },
                Segment {
                    source: Source::Raw,
                    from: FRI + 2 * DAY,
                    to
                },
            ]
        );
        assert_eq!(
            plan(FRI + 10, FRI + 20, Resolution::Whole, Some(Family::Funnel)),
            raw(FRI + 10, FRI + 20)
        );
        assert_eq!(plan(from, to, Resolution::Whole, None), raw(from, to));
        assert_eq!(
            plan(10, 20, Resolution::Whole, Some(Family::Totals)),
            raw(10, 20)
        );
    }

    #[test]
    fn family_is_the_coarsest_holding_the_columns() {
        assert_eq!(Family::for_columns([]), Family::FleetNarrow);
        assert_eq!(Family::for_columns(["outcome"]), Family::FleetNarrow);
        assert_eq!(Family::for_columns(["tenant", "outcome"]), Family::Narrow);
        // One facet column: the facet family; two: a family storing both.
        assert_eq!(
            Family::for_columns(["outcome", "platform"]),
            Family::FleetFacets
        );
        assert_eq!(Family::for_columns(["stage", "stage"]), Family::FleetFacets);
        assert_eq!(Family::for_columns(["os_version"]), Family::FleetFacets);
        assert_eq!(
            Family::facet_of(["outcome", "os_version"]),
            Some("os_version")
        );
        assert_eq!(
            Family::for_columns(["outcome", "platform", "enrollment_method", "source_kind"]),
            Family::FleetTotals
        );
        // Sub-hour questions only read families with a five-minute table.
        assert_eq!(
            Family::for_columns_at(["outcome"], Resolution::SubHour),
            Family::FleetTotals
        );
        assert_eq!(
            Family::for_columns_at(["tenant", "outcome"], Resolution::SubHour),
            Family::Totals
        );
        assert_eq!(
            Family::for_columns(["outcome", "error_code", "error_has_code"]),
            Family::FleetCores
        );
        assert_eq!(Family::for_columns(["outcome", "core"]), Family::FleetCores);
        assert_eq!(
            Family::for_columns(["tenant", "platform", "outcome", "enrollment_method"]),
            Family::Totals
        );
        assert_eq!(Family::for_columns(["outcome", "sig"]), Family::Fleet);
        assert_eq!(Family::for_columns(["stage", "error_code"]), Family::Fleet);
        assert_eq!(Family::for_columns(["tenant", "stage"]), Family::Fine);
        assert_eq!(
            Family::for_columns(["os_version", "platform"]),
            Family::Fine
        );
        assert_eq!(
            Family::for_columns(["sig", "enrollment_method"]),
            Family::Fine
        );
        // Every family's columns are stored by the fine one (but the core, which is `sig`
        // without platform and stage).
        for f in Family::BY_SIZE {
            assert!(
                f.columns()
                    .iter()
                    .all(|c| *c == "core" || Family::FINE_COLUMNS.contains(c))
            );
        }
    }

    #[test]
    fn tables_match_the_migration() {
        let sql = [
            include_str!("../../migrations/clickhouse/0003_signal_rollups.sql"),
            include_str!("../../migrations/clickhouse/0004_narrow_rollups.sql"),
            include_str!("../../migrations/clickhouse/0007_tenant_rollups.sql"),
            include_str!("../../migrations/clickhouse/0008_device_failure_rollups.sql"),
            include_str!("../../migrations/clickhouse/0009_funnel_rollups.sql"),
            include_str!("../../migrations/clickhouse/0010_fleet_funnel_rollups.sql"),
            include_str!("../../migrations/clickhouse/0011_week_spans.sql"),
            include_str!("../../migrations/clickhouse/0012_day_spans.sql"),
        ]
        .concat();
        for f in Family::BY_SIZE.into_iter().chain([
            Family::TenantTotals,
            Family::DeviceFailures,
            Family::Funnel,
            Family::FleetFunnel,
        ]) {
            let five = f.has_five_minutes().then_some(Grain::FiveMinutes);
            let hour = f.has_hours().then_some(Grain::Hour);
            let weeks = f.has_spans().then_some([Grain::WeekHead, Grain::WeekTail]);
            let days = f
                .has_day_spans()
                .then_some([Grain::DayHead, Grain::DayTail]);
            for g in five
                .into_iter()
                .chain(hour)
                .chain([Grain::Day, Grain::Week])
                .chain(weeks.into_iter().flatten())
                .chain(days.into_iter().flatten())
            {
                let t = Source::Rollup(f, g).table();
                let start = sql
                    .find(&format!("CREATE TABLE IF NOT EXISTS {{db}}.{t}\n"))
                    .unwrap_or_else(|| panic!("{t} not created"));
                let body = &sql[start..];
                let body = &body[..body.find("ENGINE").unwrap_or(body.len())];
                let stored: &[&str] = if f == Family::FleetFacets {
                    &["outcome", "facet", "value"]
                } else {
                    f.columns()
                };
                for c in stored {
                    assert!(body.contains(&format!("    {c} ")), "{t} lacks {c}");
                }
                assert_eq!(
                    body.contains("    tenant "),
                    f.columns().contains(&"tenant")
                );
            }
        }
    }
}
