//! Device-level answers read from raw rows: one device's events (keyset-paginated, newest
//! first) and its latest state snapshot.

use serde::{Deserialize, Serialize};

use super::QueryError;
use super::classes::{RawSignal, SignalInfo, format_code};
use super::cursor;
use super::engine::{Bind, Engine, Sql};
use super::filters::{FieldError, rfc3339};
use super::sql::message_key;

/// Position after the last event of a page: (occurred_at, occurred_ms, event_id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCursor {
    pub t: u32,
    pub ms: u16,
    pub id: String,
}

impl EventCursor {
    pub fn encode(&self) -> String {
        cursor::encode(self)
    }
    pub fn decode(s: &str) -> Result<Self, FieldError> {
        cursor::decode(s)
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct EventRow {
    tenant: String,
    event_id: String,
    occurred_at: u32,
    occurred_ms: u16,
    platform: String,
    os_edition: String,
    os_version: String,
    enrollment_method: String,
    stage: String,
    outcome: String,
    error_code: u32,
    error_has_code: u8,
    error_symbol: String,
    error_message: String,
    source_kind: String,
    source_channel: String,
    source_event_id: u32,
    user_principal_name: String,
}

/// One stored event with its classification (for failures).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceEvent {
    pub tenant: String,
    pub event_id: String,
    pub occurred_at: String,
    pub platform: String,
    pub os_edition: String,
    pub os_version: String,
    pub enrollment_method: String,
    pub stage: String,
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_symbol: String,
    pub error_message: String,
    pub source_kind: String,
    pub source_channel: String,
    pub source_event_id: u32,
    pub user_principal_name: String,
    pub classification: Option<SignalInfo>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<DeviceEvent>,
    pub next_cursor: Option<String>,
    /// Every identifier the device is joined under (its own id first).
    pub joined_ids: Vec<String>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct StateRow {
    tenant: String,
    captured_at: u32,
    platform: String,
    os_edition: String,
    os_version: String,
    join_state: String,
    mdm_enrolled: u8,
    mdm_url: String,
    tpm_present: u8,
    tpm_spec_version: String,
    tpm_ready: u8,
    primary_user_upn: String,
    last_attempt_at: u32,
    last_outcome: String,
    last_error_code: u32,
    last_error_has_code: u8,
    last_error_symbol: String,
    last_error_message: String,
    license_state: String,
    enrollment_method: String,
    device_name: String,
}

/// A device's latest snapshot, with its last error classified.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DeviceState)]
pub struct DeviceStateView {
    pub tenant: String,
    pub device_id: String,
    pub captured_at: String,
    pub platform: String,
    pub os_edition: String,
    pub os_version: String,
    pub join_state: String,
    pub mdm_enrolled: bool,
    pub mdm_url: String,
    pub tpm_present: bool,
    pub tpm_spec_version: String,
    pub tpm_ready: bool,
    pub primary_user_upn: String,
    pub last_attempt_at: Option<String>,
    pub last_outcome: String,
    pub last_error_code: Option<String>,
    pub last_error_symbol: String,
    pub last_error_message: String,
    pub last_error_classification: Option<SignalInfo>,
    pub license_state: String,
    pub enrollment_method: String,
    pub device_name: String,
}

fn classify(engine: &Engine, signal: RawSignal) -> SignalInfo {
    engine.cache().classifier().classify(&signal)
}

/// Attribute keys naming a device by an identifier both sides know.
const JOIN_KEYS: &str = "'entra_device_id', 'intune_device_id', 'serial_number'";
/// Most identifiers one device is joined under (a guard against a pathological attribute).
const MAX_ALIASES: u64 = 32;

/// The identifiers `device_id` is known under on either side (its own id first).
///
/// Join rules (see ARCHITECTURE.md, "One view of both sides"): a device is one device when
/// - an agent's state or event carries `entra_device_id` / `intune_device_id` equal to the
///   other side's device id or to the same attribute of the other side's events (Graph events
///   carry Intune's `managedDeviceIdentifier` and Entra's `deviceId`; `dsregcmd` states carry
///   the Entra device id), or
/// - a Graph Autopilot event's `serial_number` equals the device id.
///
/// Two round trips: the identifiers the device's own rows carry, then the agent devices whose
/// states carry one of them.
pub async fn device_aliases(
    engine: &Engine,
    tenant: Option<&str>,
    device_id: &str,
) -> Result<Vec<String>, QueryError> {
    let db = engine.db();
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT DISTINCT id FROM (SELECT arrayJoin(arrayFilter((v, k) -> k IN ({JOIN_KEYS}) AND v != '', \
         attributes.value, attributes.key)) AS id FROM {db}.device_states WHERE device_id = "
    ))
    .bind(Bind::Str(device_id.to_owned()));
    if let Some(t) = tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.to_owned()));
    }
    sql.push(&format!(
        " UNION ALL SELECT arrayJoin(arrayFilter((v, k) -> k IN ({JOIN_KEYS}) AND v != '', \
         attributes.value, attributes.key)) AS id FROM {db}.enrollment_events WHERE device_id = "
    ))
    .bind(Bind::Str(device_id.to_owned()));
    if let Some(t) = tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.to_owned()));
    }
    sql.push(") ORDER BY id LIMIT ")
        .bind(Bind::U64(MAX_ALIASES));
    let mut ids: Vec<String> = sql.query(engine.client()).fetch_all().await?;
    ids.retain(|id| id != device_id);
    ids.insert(0, device_id.to_owned());
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT DISTINCT device_id FROM {db}.device_states WHERE arrayExists((v, k) -> k IN ({JOIN_KEYS}) \
         AND has("
    ))
    .bind(Bind::Strs(ids.clone()))
    .push(", v), attributes.value, attributes.key)");
    if let Some(t) = tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.to_owned()));
    }
    sql.push(" ORDER BY device_id LIMIT ")
        .bind(Bind::U64(MAX_ALIASES));
    let agents: Vec<String> = sql.query(engine.client()).fetch_all().await?;
    for id in agents {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The events of `device_id` and of every identifier it is joined with
/// ([`device_aliases`]), restricted to `tenant` when given, newest first.
pub async fn device_events(
    engine: &Engine,
    tenant: Option<&str>,
    device_id: &str,
    limit: u64,
    cursor: Option<&EventCursor>,
) -> Result<EventPage, QueryError> {
    let aliases = device_aliases(engine, tenant, device_id).await?;
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT tenant, toString(event_id) AS event_id, toUInt32(occurred_at) AS occurred_at, occurred_ms, \
         platform, os_edition, os_version, enrollment_method, stage, outcome, error_code, error_has_code, \
         error_symbol, error_message, source_kind, source_channel, source_event_id, user_principal_name \
         FROM {}.enrollment_events WHERE (has(",
        engine.db()
    ))
    .bind(Bind::Strs(aliases.clone()))
    .push(&format!(
        ", device_id) OR (source_kind = 'graph' AND arrayExists((v, k) -> k IN ({JOIN_KEYS}) AND has("
    ))
    .bind(Bind::Strs(aliases.clone()))
    .push(", v), attributes.value, attributes.key)))");
    if let Some(t) = tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.to_owned()));
    }
    if let Some(c) = cursor {
        sql.push(" AND (occurred_at < toDateTime(")
            .bind(Bind::U32(c.t))
            .push(", 'UTC') OR (occurred_at = toDateTime(")
            .bind(Bind::U32(c.t))
            .push(", 'UTC') AND (occurred_ms < ")
            .bind(Bind::U32(u32::from(c.ms)))
            .push(" OR (occurred_ms = ")
            .bind(Bind::U32(u32::from(c.ms)))
            .push(" AND toString(event_id) < ")
            .bind(Bind::Str(c.id.clone()))
            .push("))))");
    }
    sql.push(" ORDER BY occurred_at DESC, occurred_ms DESC, event_id DESC LIMIT ")
        .bind(Bind::U64(limit + 1));
    let mut rows: Vec<EventRow> = sql.query(engine.client()).fetch_all().await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| {
            EventCursor {
                t: r.occurred_at,
                ms: r.occurred_ms,
                id: r.event_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    let events = rows
        .into_iter()
        .map(|r| {
            let classification = (r.outcome == "failed").then(|| {
                classify(
                    engine,
                    RawSignal {
                        code: (r.error_has_code == 1).then_some(r.error_code),
                        symbol: r.error_symbol.clone(),
                        message: message_key(&r.error_message),
                        platform: r.platform.clone(),
                        source: r.source_kind.clone(),
                        stage: r.stage.clone(),
                    },
                )
            });
            DeviceEvent {
                tenant: r.tenant,
                event_id: r.event_id,
                occurred_at: format!(
                    "{}.{:03}Z",
                    rfc3339(r.occurred_at).trim_end_matches('Z'),
                    r.occurred_ms
                ),
                platform: r.platform,
                os_edition: r.os_edition,
                os_version: r.os_version,
                enrollment_method: r.enrollment_method,
                stage: r.stage,
                outcome: r.outcome,
                error_code: format_code(r.error_code, r.error_has_code == 1),
                error_symbol: r.error_symbol,
                error_message: r.error_message,
                source_kind: r.source_kind,
                source_channel: r.source_channel,
                source_event_id: r.source_event_id,
                user_principal_name: r.user_principal_name,
                classification,
            }
        })
        .collect();
    Ok(EventPage {
        events,
        next_cursor,
        joined_ids: aliases,
    })
}

/// The latest snapshot of `device_id`, None when the device never sent one.
pub async fn device_state(
    engine: &Engine,
    tenant: Option<&str>,
    device_id: &str,
) -> Result<Option<DeviceStateView>, QueryError> {
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT tenant, toUInt32(captured_at) AS captured_at, platform, os_edition, os_version, join_state, \
         mdm_enrolled, mdm_url, tpm_present, tpm_spec_version, tpm_ready, primary_user_upn, \
         toUInt32(last_attempt_at) AS last_attempt_at, last_outcome, last_error_code, last_error_has_code, \
         last_error_symbol, last_error_message, license_state, enrollment_method, device_name \
         FROM {}.device_states WHERE device_id = ",
        engine.db()
    ))
    .bind(Bind::Str(device_id.to_owned()));
    if let Some(t) = tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.to_owned()));
    }
    sql.push(" ORDER BY captured_at DESC, received_at DESC LIMIT 1");
    let row: Option<StateRow> = sql.query(engine.client()).fetch_optional().await?;
    Ok(row.map(|r| {
        let has_error = r.last_error_has_code == 1
            || !r.last_error_symbol.is_empty()
            || !r.last_error_message.is_empty();
        let last_error_classification = (r.last_outcome == "failed" || has_error).then(|| {
            classify(
                engine,
                RawSignal {
                    code: (r.last_error_has_code == 1).then_some(r.last_error_code),
                    symbol: r.last_error_symbol.clone(),
                    message: message_key(&r.last_error_message),
                    platform: r.platform.clone(),
                    source: String::new(),
                    stage: String::new(),
                },
            )
        });
        DeviceStateView {
            tenant: r.tenant,
            device_id: device_id.to_owned(),
            captured_at: rfc3339(r.captured_at),
            platform: r.platform,
            os_edition: r.os_edition,
            os_version: r.os_version,
            join_state: r.join_state,
            mdm_enrolled: r.mdm_enrolled == 1,
            mdm_url: r.mdm_url,
            tpm_present: r.tpm_present == 1,
            tpm_spec_version: r.tpm_spec_version,
            tpm_ready: r.tpm_ready == 1,
            primary_user_upn: r.primary_user_upn,
            last_attempt_at: (r.last_attempt_at != 0).then(|| rfc3339(r.last_attempt_at)),
            last_outcome: r.last_outcome,
            last_error_code: format_code(r.last_error_code, r.last_error_has_code == 1),
            last_error_symbol: r.last_error_symbol,
            last_error_message: r.last_error_message,
            last_error_classification,
            license_state: r.license_state,
            enrollment_method: r.enrollment_method,
            device_name: r.device_name,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = EventCursor {
            t: 5,
            ms: 7,
            id: "abc".into(),
        };
        assert_eq!(EventCursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(EventCursor::decode("!!").unwrap_err().field, "cursor");
    }
}
