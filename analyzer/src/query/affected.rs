//! The devices behind a set of failures: one row per affected device (most failures first),
//! searchable by device id or user and keyset-paginated. This is the drill-down's device
//! table: "which devices does this category / code hit, and who uses them?".
//!
//! Read from raw rows (device ids are not in the rollups) restricted to failed events in the
//! time range, so the cost is bounded by the failures in scope, not by the fleet.

use serde::{Deserialize, Serialize};

use super::QueryError;
use super::classes::format_code;
use super::cursor;
use super::engine::{Bind, Col, Engine, Sql, filter_columns, push_filters};
use super::filters::{FieldError, Filters, rfc3339};
use super::plan::{Family, Resolution, Source};

/// Position after the last row of a page: (failures, tenant, device_id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCursor {
    pub f: u64,
    pub t: String,
    pub d: String,
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
    tenant: String,
    device_id: String,
    upn: String,
    failures: u64,
    first_failure: u32,
    last_failure: u32,
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
    /// Devices matching the filters and the search, over all pages.
    pub total: u64,
    pub devices: Vec<AffectedDevice>,
    pub next_cursor: Option<String>,
}

/// Failed events in scope with their category, as a subquery (`search` matches a substring
/// of the device id or the user, case-insensitively).
async fn failed_rows(
    engine: &Engine,
    f: &Filters,
    search: Option<&str>,
) -> Result<Sql, QueryError> {
    // The signals in scope, classified: read from the rollups' signal ids for whole days or
    // weeks (the raw rows only at the edges), as the category breakdown does, instead of
    // computing every failed raw row's signal id (two regexes per row) once more.
    let mut needed: Vec<&'static str> = filter_columns(f).collect();
    needed.push("sig");
    let family = Family::for_columns_at(needed, Resolution::Whole);
    let map = engine
        .category_map(f, &engine.segments(f, Resolution::Whole, family))
        .await?;
    let mut sql = Sql::default();
    sql.push(
        "SELECT tenant, device_id, user_principal_name, occurred_at, error_code, \
              error_has_code, error_symbol, stage, platform, os_version, enrollment_method, ",
    )
    .push(&Col::Sig.select(Source::Raw))
    .push(&format!(
        ", outcome FROM {}.{} WHERE occurred_at >= toDateTime(",
        engine.db(),
        Source::Raw.table()
    ))
    .bind(Bind::U32(f.from))
    .push(", 'UTC') AND occurred_at < toDateTime(")
    .bind(Bind::U32(f.to))
    .push(", 'UTC') AND outcome = 'failed'");
    push_filters(&mut sql, f);
    // A category's rows carry one of its signals' codes: rows with other codes are dropped
    // before their signal ids (two regexes per row) are computed.
    if let Some(codes) = f.category.as_deref().and_then(|c| map.codes_of(c)) {
        if codes.is_empty() {
            sql.push(" AND 0");
        } else {
            sql.push(
                " AND (toUInt64(error_has_code) * 4294967296 + error_code) IN \
                 (SELECT toUInt64(arrayJoin(",
            )
            .bind(Bind::U64s(codes))
            // 18.16 wants the same type on both sides of IN (subquery).
            .push(")))");
        }
    }
    if let Some(q) = search {
        sql.push(" AND (positionCaseInsensitiveUTF8(device_id, ")
            .bind(Bind::Str(q.to_owned()))
            .push(") > 0 OR positionCaseInsensitiveUTF8(user_principal_name, ")
            .bind(Bind::Str(q.to_owned()))
            .push(") > 0)");
    }
    // The category is computed over the subquery, where `sig` is in scope.
    let mut outer = Sql::default();
    outer.push("SELECT *, ");
    Engine::category_expr(&mut outer, &map);
    outer.push(" AS category FROM (");
    outer.append(sql);
    outer.push(")");
    if let Some(c) = &f.category {
        outer.push(" WHERE category = ").bind(Bind::Str(c.clone()));
    }
    Ok(outer)
}

/// One page of the devices hit by the failures `f` selects, most failures first.
pub async fn affected_devices(
    engine: &Engine,
    f: &Filters,
    search: Option<&str>,
    limit: u64,
    cursor: Option<&DeviceCursor>,
) -> Result<AffectedPage, QueryError> {
    let rows_sql = failed_rows(engine, f, search).await?;

    let mut count = Sql::default();
    count.push("SELECT uniqExact(tenant, device_id) FROM (");
    count.append(rows_sql.clone());
    count.push(")");

    let mut page = Sql::default();
    page.push(
        "SELECT tenant, device_id, argMax(user_principal_name, occurred_at) AS upn, count() AS failures, \
         toUInt32(min(occurred_at)) AS first_failure, toUInt32(max(occurred_at)) AS last_failure, \
         argMax(error_code, occurred_at) AS last_code, argMax(error_has_code, occurred_at) AS last_has_code, \
         argMax(error_symbol, occurred_at) AS last_symbol, argMax(category, occurred_at) AS last_category, \
         argMax(stage, occurred_at) AS last_stage, argMax(platform, occurred_at) AS platform, \
         argMax(os_version, occurred_at) AS os_version, \
         argMax(enrollment_method, occurred_at) AS enrollment_method FROM (",
    );
    page.append(rows_sql);
    page.push(") GROUP BY tenant, device_id");
    if let Some(c) = cursor {
        page.push(" HAVING failures < ")
            .bind(Bind::U64(c.f))
            .push(" OR (failures = ")
            .bind(Bind::U64(c.f))
            .push(" AND (tenant > ")
            .bind(Bind::Str(c.t.clone()))
            .push(" OR (tenant = ")
            .bind(Bind::Str(c.t.clone()))
            .push(" AND device_id > ")
            .bind(Bind::Str(c.d.clone()))
            .push(")))");
    }
    page.push(" ORDER BY failures DESC, tenant ASC, device_id ASC LIMIT ")
        .bind(Bind::U64(limit + 1));

    let (total, mut rows) = tokio::try_join!(
        async {
            count
                .query(engine.client())
                .fetch_one::<u64>()
                .await
                .map_err(QueryError::from)
        },
        async {
            page.query(engine.client())
                .fetch_all::<Row>()
                .await
                .map_err(QueryError::from)
        }
    )?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|r| {
            DeviceCursor {
                f: r.failures,
                t: r.tenant.clone(),
                d: r.device_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    let devices = rows
        .into_iter()
        .map(|r| AffectedDevice {
            tenant: r.tenant,
            device_id: r.device_id,
            user_principal_name: r.upn,
            failures: r.failures,
            first_failure: rfc3339(r.first_failure),
            last_failure: rfc3339(r.last_failure),
            last_code: format_code(r.last_code, r.last_has_code == 1),
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
        devices,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = DeviceCursor {
            f: 12,
            t: "contoso".into(),
            d: "dev-1".into(),
        };
        assert_eq!(DeviceCursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(DeviceCursor::decode("%%").unwrap_err().field, "cursor");
    }
}
