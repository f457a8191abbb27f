-- Migration 0011: week spans, the partial weeks at a range's edges as one state per key. Must
-- run on ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, BENCHMARKS.md, issue 7 ninth session): a dashboard question
-- costs about one HyperLogLog merge per (bucket, key) cell read, and a 30-day range is 3 or 4
-- Monday-aligned weeks plus up to 12 edge days, so most of the states merged are edge days.
-- A week's *head* ending on day d (Monday..d) and *tail* starting on day d (d..Sunday), for d
-- Tuesday..Saturday (a 1-day span is a daily row, 7 days the weekly one), cut those 12 days to
-- at most 2 spans: 30 aligned days read 5 buckets instead of 12.
--
-- Unlike the other rollups these tables are not fed by views (that would multiply every
-- insert's aggregation work by up to six per family): the analyzer builds them from the daily
-- rollup of the same family (`rollups/spans.rs`, every minute, one week at a time: DROP
-- PARTITION, then INSERT .. SELECT merging the week's daily states). A query reads a span only
-- when the span's event count equals the daily rollup's count for the same days, checked in
-- the same query (scalar subqueries; false guards read no granule), and the days otherwise
-- (`query/plan.rs`, `Grain::WeekHead`): daily rows are only ever added, so an equal count means
-- the same rows and the same states, and a span that is missing, being rebuilt or behind a
-- late event is never read. Answers therefore never depend on whether the builder ran.
--
-- Families: those the all-tenant dashboard and the tenant breakdown read over whole ranges
-- (fleet narrow, facets, outcomes, cores, signals, tenant totals, fleet funnel). Partitioned by
-- week so that a week is rebuilt with one DROP PARTITION. No `{extra_settings}`: a rebuilt
-- week re-inserts rows that may equal earlier ones, which a deduplication window would drop.

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_heads
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_tails
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_heads
(
    bucket DateTime('UTC'),
    facet String,
    value String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_tails
(
    bucket DateTime('UTC'),
    facet String,
    value String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_outcomes_heads
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_outcomes_tails
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_heads
(
    bucket DateTime('UTC'),
    outcome String,
    source_kind String,
    core UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_tails
(
    bucket DateTime('UTC'),
    outcome String,
    source_kind String,
    core UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_signals_heads
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    stage String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_signals_tails
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    stage String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_heads
(
    tenant String,
    bucket DateTime('UTC'),
    events AggregateFunction(count),
    attempt_events AggregateFunction(countIf, UInt8),
    failed_events AggregateFunction(countIf, UInt8),
    devices AggregateFunction(uniqCombined(14), String, String),
    failed_devices AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    failed_users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32;

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_tails
(
    tenant String,
    bucket DateTime('UTC'),
    events AggregateFunction(count),
    attempt_events AggregateFunction(countIf, UInt8),
    failed_events AggregateFunction(countIf, UInt8),
    devices AggregateFunction(uniqCombined(14), String, String),
    failed_devices AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    failed_users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_funnel_heads
(
    bucket DateTime('UTC'),
    enrollment_method String,
    platform String,
    stage String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_funnel_tails
(
    bucket DateTime('UTC'),
    enrollment_method String,
    platform String,
    stage String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toMonday(bucket)
ORDER BY (bucket, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32;
