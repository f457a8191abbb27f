//! The devices behind a set of failures: one row per affected device (most failures first),
//! searchable by device id or user and keyset-paginated. This is the drill-down's device
//! table: "which devices does this category / code hit, and who uses them?".
//!
//! Read from the per-device failure rollups (migration 0008) for whole hours, days and weeks
//! and from raw failed rows at the unaligned edges, restricted to the category's signals when
//! one is asked for, so the cost is bounded by the (device, signal, bucket) cells of the
//! failures in scope, not by the fleet or the events. Exact: counts, first and last times are
//! sums, mins and maxes; the latest failure's fields come from the row holding the latest
//! time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::QueryError;
use super::classes::format_code;
use super::cursor;
use super::engine::{
    Bind, CategoryMap, Col, Engine, Sql, filter_columns, push_filters, push_ranges, tables_of,
};
use super::filters::{FieldError, Filters, rfc3339};
use super::plan::{Family, Grain, Resolution, Source};

/// The device a failure row belongs to, as one 64-bit key: grouping ~184k devices by it took
/// 52 ms at 10M events against 121 ms by the two strings (BENCHMARKS.md, issue 7, sixteenth
/// session). Two devices share a key with probability ~n^2 / 2^65 (3e-8 at a million
/// devices); they would then be counted and listed as one.
const DEVICE_HASH: &str = "cityHash64(tenant, device_id)";

/// Position after the last row of a page: (failures, latest failure, device key), the page's
/// order ([`affected_devices`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCursor {
    pub f: u64,
    pub l: u32,
    pub h: u64,
}

impl DeviceCursor {
    pub fn encode(&self) -> String {
        cursor::encode(self)
    }
    pub fn decode(s: &str) -> Result<Self, FieldError> {
        cursor::decode(s)
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Row {
    h: u64,
    tenant: String,
    device_id: String,
    upn: String,
    last_code: u32,
    last_has_code: u8,
    last_symbol: String,
    last_category: String,
    last_stage: String,
    platform: String,
    os_version: String,
    enrollment_method: String,
}

/// One affected device.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AffectedDevice {
    pub tenant: String,
    pub device_id: String,
    /// The user of the device's latest failure ('' when the events named none).
    pub user_principal_name: String,
    pub failures: u64,
    pub first_failure: String,
    pub last_failure: String,
    /// Code, symbol, category and stage of the latest failure in scope.
    pub last_code: Option<String>,
    pub last_symbol: String,
    pub last_category: String,
    pub last_stage: String,
    pub platform: String,
    pub os_version: String,
    pub enrollment_method: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AffectedDevicesPage)]
pub struct AffectedPage {
    /// Devices matching the filters and the search, over all pages. Without a search, from the
    /// rollups' device states like every other unique count: exact up to 1,024 devices, above
    /// that a HyperLogLog estimate within ~2.1% (then `total_estimated` is true). With a search
    /// or `source=raw`, counted from the rows: exact unless two devices share a 64-bit key
    /// (`cityHash64(tenant, device_id)`; probability ~n^2 / 2^65, 3e-8 at a million devices),
    /// which would count them as one.
    pub total: u64,
    /// True when `total` is an estimate.
    pub total_estimated: bool,
    pub devices: Vec<AffectedDevice>,
    pub next_cursor: Option<String>,
}

/// What [`failure_rows`] returns per row besides `sig`, `n`, `first` and `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The device (tenant, device id) only: what the count and the page read. 18.16 reads
    /// every column a `UNION ALL` branch names, used above it or not.
    Devices,
    /// Every column the page's details read (migration 0008's key but the bucket and `sig`,
    /// which every row also carries), and the row's `category`.
    Details,
}

impl Shape {
    /// The grouping key of the rows. Filters and the search test the tables' columns in
    /// `WHERE`.
    fn key(self) -> &'static str {
        match self {
            Shape::Devices => "tenant, device_id",
            Shape::Details => {
                "tenant, device_id, user_principal_name, os_version, enrollment_method, \
                 platform, stage, source_kind, error_code, error_has_code, error_symbol"
            }
        }
    }
}

/// The classified signals in scope: read from the rollups' signal ids for whole days or weeks
/// (the raw rows only at the edges), as the category breakdown does.
async fn signals_in_scope(engine: &Engine, f: &Filters) -> Result<CategoryMap, QueryError> {
    let mut needed: Vec<&'static str> = filter_columns(f).collect();
    needed.push("sig");
    let family = Family::for_columns_at(needed, Resolution::Whole);
    let segs = engine
        .resolve_spans(engine.segments(f, Resolution::Whole, family))
        .await?;
    engine.category_map(f, &segs).await
}

/// Per-device failure rows in scope, as a subquery: one row per key of `shape` and `sig` (per
/// table read) with `n` failures between `first` and `last`, and for [`Shape::Details`] the
/// row's `category`. Whole hours, days and weeks come from the per-device failure rollups
/// (migration 0008), the unaligned edges (or everything, with `source=raw`) from raw failed
/// rows grouped the same way. `search` matches a substring of the device id or the user,
/// case-insensitively; `devices` keeps the rows of those device keys ([`DEVICE_HASH`]) only;
/// `at` (times, read at [`Resolution::Hour`]) keeps the hourly rows of the hours holding
/// those times and the raw rows at exactly those times.
fn failure_rows(
    engine: &Engine,
    f: &Filters,
    map: &CategoryMap,
    search: Option<&str>,
    devices: Option<&[u64]>,
    at: Option<&[u32]>,
    shape: Shape,
) -> Sql {
    let key = shape.key();
    let resolution = if at.is_some() {
        Resolution::Hour
    } else {
        Resolution::Whole
    };
    let segs = engine.segments(f, resolution, Family::DeviceFailures);
    let tables = tables_of(&segs);
    // Every row here is a failure: the outcome filter keeps all or nothing.
    let outcome_ok = f.outcome.as_deref().is_none_or(|o| o == "failed");
    let columns = Filters {
        outcome: None,
        ..f.clone()
    };
    let category = f.category.as_deref();
    let mut union = Sql::default();
    for (i, (source, ranges)) in tables.iter().enumerate() {
        if i > 0 {
            union.push(" UNION ALL ");
        }
        let raw = *source == Source::Raw;
        if raw {
            union
                .push(&format!("SELECT {key}, "))
                .push(&Col::Sig.select(Source::Raw))
                .push(", count() AS n, min(occurred_at) AS first, max(occurred_at) AS last");
        } else {
            // Rows of one key from parts not merged yet are partial rows of the same key: the
            // page adds their counts and takes min/max, so they need no merge here.
            union.push(&format!(
                "SELECT {key}, sig, finalizeAggregation(failures) AS n, \
                 finalizeAggregation(first_failure) AS first, \
                 finalizeAggregation(last_failure) AS last"
            ));
        }
        union.push(&format!(" FROM {}.{} WHERE (", engine.db(), source.table()));
        push_ranges(&mut union, engine.db(), *source, ranges);
        union.push(")");
        if !outcome_ok {
            union.push(" AND 0");
        }
        if raw {
            union.push(" AND outcome = 'failed'");
        }
        push_filters(&mut union, &columns);
        // A category's rows carry one of its signals' codes: raw rows with other codes are
        // dropped before their signal ids (two regexes per row) are computed; rollup rows are
        // read by signal id (the key's second column).
        let narrowing = category.and_then(|c| {
            if raw {
                map.codes_of(c)
                    .map(|v| ("(toUInt64(error_has_code) * 4294967296 + error_code)", v))
            } else {
                map.sigs_of(c).map(|v| ("sig", v))
            }
        });
        match narrowing {
            Some((_, values)) if values.is_empty() => {
                union.push(" AND 0");
            }
            Some((expr, values)) => {
                union
                    .push(&format!(" AND {expr} IN (SELECT toUInt64(arrayJoin("))
                    .bind(Bind::U64s(values))
                    // 18.16 wants the same type on both sides of IN (subquery).
                    .push(")))");
            }
            None => {}
        }
        if let Some(keys) = devices {
            union
                .push(&format!(" AND {DEVICE_HASH} IN (SELECT arrayJoin("))
                .bind(Bind::U64s(keys.to_vec()))
                .push("))");
        }
        if let Some(times) = at {
            push_at(&mut union, *source, times);
        }
        if let Some(q) = search {
            union
                .push(" AND (positionCaseInsensitiveUTF8(device_id, ")
                .bind(Bind::Str(q.to_owned()))
                .push(") > 0 OR positionCaseInsensitiveUTF8(user_principal_name, ")
                .bind(Bind::Str(q.to_owned()))
                .push(") > 0)");
        }
        if raw {
            union.push(&format!(" GROUP BY {key}, sig"));
        }
    }
    // A category's rollup rows are read by its signal ids, so they are exactly its rows; raw
    // rows are narrowed by code only. Without raw rows, a shape that does not return the
    // category needs no category computed (+7 ms over the 19 ms read of ~480k rows at 10M
    // events, BENCHMARKS.md, issue 7, seventeenth session).
    let exact_by_sig = match category {
        None => true,
        Some(c) => map.sigs_of(c).is_some() && tables.iter().all(|(s, _)| *s != Source::Raw),
    };
    if shape == Shape::Devices && exact_by_sig {
        return union;
    }
    // The category is computed over the rows, where `sig` is in scope; every row is a failure
    // (the category expression reads `outcome`, named outside the branches so that it never
    // shadows the raw column their WHERE tests).
    let mut outer = Sql::default();
    outer.push("SELECT *, ");
    Engine::category_expr(&mut outer, map);
    outer.push(" AS category FROM (SELECT *, 'failed' AS outcome FROM (");
    outer.append(union);
    outer.push("))");
    if let Some(c) = &f.category {
        outer.push(" WHERE category = ").bind(Bind::Str(c.clone()));
    }
    outer
}

/// ` AND <time> IN (..)`: the rows of `source` that can hold one of `times` (a failure's exact
/// second in raw rows, its hour in the hourly rollup). Other grains are read whole (correct,
/// only slower; [`Resolution::Hour`] plans none).
fn push_at(sql: &mut Sql, source: Source, times: &[u32]) {
    let (column, mut starts): (&str, Vec<u64>) = match source {
        Source::Raw => ("occurred_at", times.iter().map(|&t| u64::from(t)).collect()),
        Source::Rollup(_, Grain::Hour) => (
            "bucket",
            times.iter().map(|&t| u64::from(t / 3600 * 3600)).collect(),
        ),
        Source::Rollup(..) => return,
    };
    starts.sort_unstable();
    starts.dedup();
    sql.push(&format!(" AND {column} IN (SELECT toDateTime(arrayJoin("))
        .bind(Bind::U64s(starts))
        .push("), 'UTC'))");
}

/// A device of a page, by its key ([`DEVICE_HASH`]): its failures in scope, the first and the
/// latest.
#[derive(Debug, Deserialize, clickhouse::Row)]
struct PageKey {
    h: u64,
    failures: u64,
    first_failure: u32,
    last_failure: u32,
}

/// One page of the devices hit by the failures `f` selects: most failures first, then the
/// most recent latest failure, then the device key ([`DEVICE_HASH`], an arbitrary but stable
/// order of devices tied on both).
///
/// Three queries: the number of devices and the page's devices run concurrently, then the
/// details of the page's devices alone.
/// - The number is the failed-device states of the rollups merged
///   ([`Engine::affected_device_count`]), a question about as cheap as the summary's, unless
///   a search asks for substrings no state can count. Counting the device keys of every row
///   in scope instead took 60-120 ms of the other core at 10M events.
/// - The page is grouped per device key with integer aggregates and integer sort keys only:
///   no device id or tenant is carried through the grouping of every affected device, nor
///   compared to break ties (BENCHMARKS.md, issue 7, seventeenth session).
/// - The details, the latest failure's fields and the device's tenant and id, are `argMax`
///   over the rows of the page's devices in the hours holding their latest failures only.
///   Computing the fields for every device in scope cost three quarters of the time at 10M
///   events, and reading them from every row in scope for the page's devices over a third
///   (the page's devices are spread over every bucket, so only hours narrow the read;
///   fifteenth session).
pub async fn affected_devices(
    engine: &Engine,
    f: &Filters,
    search: Option<&str>,
    limit: u64,
    cursor: Option<&DeviceCursor>,
) -> Result<AffectedPage, QueryError> {
    let map = signals_in_scope(engine, f).await?;
    let rows_sql = failure_rows(engine, f, &map, search, None, None, Shape::Devices);

    // A search matches substrings of device ids and users, which no rollup state can count.
    let count = search.is_some().then(|| {
        let mut count = Sql::default();
        count.push(&format!("SELECT uniqExact({DEVICE_HASH}) FROM ("));
        count.append(rows_sql.clone());
        count.push(")");
        count
    });

    let mut page = Sql::default();
    page.push(&format!(
        "SELECT {DEVICE_HASH} AS h, sum(n) AS failures, toUInt32(min(first)) AS first_failure, \
         toUInt32(max(last)) AS last_failure FROM ("
    ));
    page.append(rows_sql);
    page.push(") GROUP BY h");
    if let Some(c) = cursor {
        page.push(" HAVING failures < ")
            .bind(Bind::U64(c.f))
            .push(" OR (failures = ")
            .bind(Bind::U64(c.f))
            .push(" AND (last_failure < ")
            .bind(Bind::U32(c.l))
            .push(" OR (last_failure = ")
            .bind(Bind::U32(c.l))
            .push(" AND h > ")
            .bind(Bind::U64(c.h))
            .push(")))");
    }
    page.push(" ORDER BY failures DESC, last_failure DESC, h ASC LIMIT ")
        .bind(Bind::U64(limit + 1));

    let ((total, total_estimated), mut keys) = tokio::try_join!(
        async {
            match &count {
                Some(count) => Ok((
                    count.query(engine.client()).fetch_one::<u64>().await?,
                    false,
                )),
                None => engine.affected_device_count(f).await,
            }
        },
        async {
            page.query(engine.client())
                .fetch_all::<PageKey>()
                .await
                .map_err(QueryError::from)
        }
    )?;
    let more = keys.len() as u64 > limit;
    keys.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        keys.last().map(|k| {
            DeviceCursor {
                f: k.failures,
                l: k.last_failure,
                h: k.h,
            }
            .encode()
        })
    } else {
        None
    };
    let mut details = page_details(engine, f, &map, search, &keys).await?;
    // Every device of the page has rows in the same scope (rows are only ever added), so
    // each key finds its details.
    let devices = keys
        .into_iter()
        .filter_map(|k| details.remove(&k.h).map(|r| (k, r)))
        .map(|(k, r)| AffectedDevice {
            first_failure: rfc3339(k.first_failure),
            last_failure: rfc3339(k.last_failure),
            last_code: format_code(r.last_code, r.last_has_code == 1),
            tenant: r.tenant,
            device_id: r.device_id,
            user_principal_name: r.upn,
            failures: k.failures,
            last_symbol: r.last_symbol,
            last_category: r.last_category,
            last_stage: r.last_stage,
            platform: r.platform,
            os_version: r.os_version,
            enrollment_method: r.enrollment_method,
        })
        .collect();
    Ok(AffectedPage {
        total,
        total_estimated,
        devices,
        next_cursor,
    })
}

/// The tenant, device id and latest failure's fields of the page's devices, by device key:
/// the rows in scope of those keys in the hours holding the page's latest failures, grouped
/// per device. A device's latest failure is in the hour holding its `last_failure`, so
/// `argMax` over those rows is `argMax` over all of its rows in scope; the counts and times
/// come from the page.
async fn page_details(
    engine: &Engine,
    f: &Filters,
    map: &CategoryMap,
    search: Option<&str>,
    keys: &[PageKey],
) -> Result<HashMap<u64, Row>, QueryError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut hashes: Vec<u64> = keys.iter().map(|k| k.h).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT {DEVICE_HASH} AS h, tenant, device_id, \
         argMax(user_principal_name, last) AS upn, \
         argMax(error_code, last) AS last_code, argMax(error_has_code, last) AS last_has_code, \
         argMax(error_symbol, last) AS last_symbol, argMax(category, last) AS last_category, \
         argMax(stage, last) AS last_stage, argMax(platform, last) AS platform, \
         argMax(os_version, last) AS os_version, \
         argMax(enrollment_method, last) AS enrollment_method FROM ("
    ));
    let lasts: Vec<u32> = keys.iter().map(|k| k.last_failure).collect();
    sql.append(failure_rows(
        engine,
        f,
        map,
        search,
        Some(&hashes),
        Some(&lasts),
        Shape::Details,
    ));
    sql.push(") GROUP BY tenant, device_id");
    let rows: Vec<Row> = sql.query(engine.client()).fetch_all().await?;
    Ok(rows.into_iter().map(|r| (r.h, r)).collect())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = DeviceCursor {
            f: 12,
            l: 1_709_251_200,
            h: u64::MAX,
        };
        assert_eq!(DeviceCursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(DeviceCursor::decode("%%").unwrap_err().field, "cursor");
    }
}
