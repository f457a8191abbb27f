-- Migration 0012: day spans, the partial days at a range's edges as one state per key. Must
-- run on ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, BENCHMARKS.md, issue 7 nineteenth and twentieth sessions): the
-- dashboard's 7-day view ends at the next whole hour, so its answers read a partial day at
-- each end, up to 23 hourly states per key each: the facet and tenant breakdowns cost 3-5x
-- their whole-day price. A day's *head* ending with hour h (00:00..h) and *tail* starting at
-- hour h (h..24:00), h 01:00..22:00 (one hour is an hourly row, 24 the daily one), cut those
-- to at most 2 spans, as the week spans of migration 0011 do for a range's edge days.
--
-- Built by the analyzer from the hourly rollup of the same family, like the week spans
-- (`rollups/spans.rs`: one day at a time, DROP PARTITION, then INSERT .. SELECT merging the
-- day's hourly states), and only for the last days (`plan::DAY_SPAN_DAYS`, 9 back from the
-- newest hour holding events): a day holds ~22 heads and ~22 tails per key, about 5x its
-- hourly rows, so the builder drops older days' partitions itself (18.16 has no TTL). A query
-- reads a span only while its event count equals the hourly rollup's count for the same
-- hours, and the hours otherwise: answers never depend on whether the builder ran.
--
-- Families: those the 7-day view reads: the fleet totals (summary, outcome breakdown), the
-- facets (platform, method, stage, OS version and source breakdowns), the tenant totals
-- (tenant breakdown) and the signal cores (category and code breakdowns, top codes). Not the
-- fleet outcomes and signals (questions with two or more filters), nor the fleet funnel
-- (measured: its 7-day answer took as long with day spans, its cost is merging its device
-- sets per stage, not reading them). Partitioned by day so that a
-- day is rebuilt or dropped with one DROP PARTITION. No `{extra_settings}`: a rebuilt day
-- re-inserts rows that may equal earlier ones, which a deduplication window would drop.

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_day_heads
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_day_tails
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toDate(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_day_heads
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
PARTITION BY toDate(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_day_tails
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
PARTITION BY toDate(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_day_heads
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
PARTITION BY toDate(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32;

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_day_tails
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
PARTITION BY toDate(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_day_heads
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
PARTITION BY toDate(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256;

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_day_tails
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
PARTITION BY toDate(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256;
