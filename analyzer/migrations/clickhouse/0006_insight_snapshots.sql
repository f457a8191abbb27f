-- Migration 0006: insight snapshots, materialized in the background by the analyzer. Must run
-- on ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, BENCHMARKS.md, fourth session): an insight is an analysis of the
-- whole fleet "as of now" (per-device state, per-user device counts, staleness), not a query
-- over a time range. Even from the per-device rollups of 0005 each one groups every device
-- (200k at 10M events: 0.5-1.2 s each, the list of seven 4-6 s). `serve` therefore computes
-- every insight for all tenants on a cadence (`insights_refresh_secs`, default 60 s; see
-- insights/snapshot.rs) and stores the answer here; requests read it by key and say `as_of`.
--
-- * `insight_snapshot_rows`: the affected subjects of one generation (one refresh), exactly the
--   `(tenant, subject, detail)` rows the live SQL returns for all tenants;
-- * `insight_snapshot_counts`: per (generation, insight, tenant) the number of those rows;
-- * `insight_snapshots`: one row per *complete* generation, written last: the time it is as of
--   and the settings it was computed with (device caps, stale days). Readers take the newest
--   complete generation with their own settings; rows of a generation still being written, or
--   of one whose writer crashed, are never read.
--
-- Every refresh writes a new generation id (start second << 20 | 20 random bits), so two
-- analyzers refreshing at once write two generations and never double a row; each table is
-- partitioned by generation, and the refresher drops (DROP PARTITION) every generation but the
-- two newest complete ones, and incomplete ones older than ten minutes. No views, no backfill:
-- the first refresh after the migration fills the tables.

CREATE TABLE IF NOT EXISTS {db}.insight_snapshot_rows
(
    generation UInt64,
    insight String,
    tenant String,
    subject String,
    detail String
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (generation, insight, tenant, subject)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS {db}.insight_snapshot_counts
(
    generation UInt64,
    insight String,
    tenant String,
    subjects UInt64
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY (generation, insight, tenant);

CREATE TABLE IF NOT EXISTS {db}.insight_snapshots
(
    generation UInt64,
    as_of DateTime('UTC'),
    settings String
)
ENGINE = MergeTree
PARTITION BY generation
ORDER BY generation;
