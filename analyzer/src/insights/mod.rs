//! Proactive insights: problems visible in state snapshots and events before (or without) a
//! failure being reported. Each insight is one SQL producing `(tenant, subject, detail)` rows,
//! counted and listed with keyset pagination. The per-device questions read the per-device
//! rollups of migration 0005 (`device_latest`, `device_facts`: one row per device); the
//! server-side ones read the last 30 days of raw Graph events (partition-pruned by day).
//! `serve` computes them all in the background and stores the answers ([`snapshot`],
//! migration 0006); requests read the newest snapshot and fall back to the live SQL.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::query::QueryError;
use crate::query::engine::{Bind, Engine, Sql};
use crate::query::filters::{FieldError, rfc3339};

pub mod snapshot;

/// Per-tenant settings the insights need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightSettings {
    /// Device enrollment limit used when a tenant has none configured (Intune default 5).
    pub default_device_cap: u32,
    pub device_caps: BTreeMap<String, u32>,
    /// Days without a successful enrollment or state snapshot after which a device is stale.
    pub stale_days: u32,
    /// Seconds between two background refreshes of the insight snapshots; 0: no snapshots,
    /// every request is computed live ([`snapshot`]).
    pub refresh_secs: u64,
}

impl Default for InsightSettings {
    fn default() -> Self {
        Self {
            default_device_cap: 5,
            device_caps: BTreeMap::new(),
            stale_days: 30,
            refresh_secs: snapshot::DEFAULT_REFRESH_SECS,
        }
    }
}

/// The largest device cap Intune allows.
pub const MAX_DEVICE_CAP: u32 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsightId {
    DeviceCap,
    TpmAutopilot,
    Unlicensed,
    NoAutoEnrollEvent,
    Stale,
    /// Server side only (Microsoft Graph): phones Intune refused for the user's device cap.
    ServerDeviceCapPhones,
    /// Server side only (Microsoft Graph): users Intune refused for a missing licence.
    ServerUnlicensed,
}

/// How far back the server-side insights look (Graph keeps troubleshooting events about 30
/// days as well).
pub const SERVER_SIDE_DAYS: u32 = 30;

impl InsightId {
    pub const ALL: [InsightId; 7] = [
        Self::DeviceCap,
        Self::TpmAutopilot,
        Self::Unlicensed,
        Self::NoAutoEnrollEvent,
        Self::Stale,
        Self::ServerDeviceCapPhones,
        Self::ServerUnlicensed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeviceCap => "device_cap_near",
            Self::TpmAutopilot => "autopilot_tpm_unsupported",
            Self::Unlicensed => "unlicensed_users_enrolling",
            Self::NoAutoEnrollEvent => "auto_enrollment_not_triggered",
            Self::Stale => "stale_enrollments",
            Self::ServerDeviceCapPhones => "device_cap_refused_phones",
            Self::ServerUnlicensed => "unlicensed_users_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Whether the affected subjects are users (UPNs) or devices.
    pub fn subject_kind(self) -> &'static str {
        match self {
            Self::DeviceCap
            | Self::Unlicensed
            | Self::ServerDeviceCapPhones
            | Self::ServerUnlicensed => "user",
            _ => "device",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::DeviceCap => "Users at or one below their device enrollment limit",
            Self::TpmAutopilot => {
                "Self-deploying / pre-provisioned Autopilot devices without TPM 2.0"
            }
            Self::Unlicensed => "Users attempting enrollment without an Intune licence",
            Self::NoAutoEnrollEvent => "Joined Windows devices where MDM auto-enrollment never ran",
            Self::Stale => "Stale enrollments",
            Self::ServerDeviceCapPhones => {
                "Users whose phones Intune refused for the device cap (server side, last 30 days)"
            }
            Self::ServerUnlicensed => {
                "Users Intune refused for a missing licence (server side, last 30 days)"
            }
        }
    }

    pub fn cause(self) -> &'static str {
        match self {
            Self::DeviceCap => {
                "The user's enrolled devices are at, or one below, the tenant's device enrollment limit; the next enrollment (a replacement phone, a reset laptop) will fail with DeviceCapReached (0x80180014 / MENROLL_E_DEVICECAPREACHED)."
            }
            Self::TpmAutopilot => {
                "Self-deploying and pre-provisioning Autopilot modes need TPM 2.0 device attestation; a device without a TPM or with TPM 1.2 fails at attestation (0x800705B4 / 0x801C03EA family) or cannot be provisioned at all."
            }
            Self::Unlicensed => {
                "The device reports the user as unlicensed while enrollment is being attempted; Intune rejects the enrollment (MENROLL_E_USERLICENSE 0x80180018, 'This account is not allowed on this phone')."
            }
            Self::NoAutoEnrollEvent => {
                "The device is joined to Microsoft Entra (or hybrid/domain joined) but not MDM-enrolled, and never logged DeviceManagement-Enterprise-Diagnostics-Provider event 75 (success) or 76 (failure): automatic MDM enrollment was never triggered (GPO not applied, MDM user scope excluding the user, or the scheduled task missing)."
            }
            Self::Stale => {
                "No successful enrollment event and no state snapshot from this device for the configured number of days: the device may be retired, wiped, offline, or its agent stopped reporting."
            }
            Self::ServerDeviceCapPhones => {
                "Intune's enrollment troubleshooting events (Microsoft Graph) show iOS/iPadOS/Android enrollments refused because the user reached the device limit. These phones never ran an agent, so only the service saw the failure."
            }
            Self::ServerUnlicensed => {
                "Intune's enrollment troubleshooting events (Microsoft Graph) show enrollments refused at user validation (missing or wrong Intune licence), on any platform, before any agent could run."
            }
        }
    }

    pub fn remediation(self) -> &'static str {
        match self {
            Self::DeviceCap => {
                "Remove stale devices of the user in Intune and Entra ID (Devices > All devices), or raise the device limit restriction (at most 15), or enroll shared devices with a device enrollment manager account."
            }
            Self::TpmAutopilot => {
                "Replace or upgrade the hardware to a TPM 2.0 device (enable the firmware TPM/PTT in UEFI if present), or assign these devices a user-driven Autopilot profile instead."
            }
            Self::Unlicensed => {
                "Assign an Intune (or EMS/Microsoft 365 E3/E5) licence to the user, directly or through a group, then retry enrollment."
            }
            Self::NoAutoEnrollEvent => {
                "Check the 'Enable automatic MDM enrollment using default Microsoft Entra credentials' policy (gpresult), the MDM user scope in Entra ID > Mobility, and the EnterpriseMgmt scheduled task; then run the task or 'deviceenroller.exe /c /AutoEnrollMDM'."
            }
            Self::Stale => {
                "Confirm whether the device is still in use; if retired, delete it from Intune and Entra ID; otherwise check the agent and network connectivity and re-enroll."
            }
            Self::ServerDeviceCapPhones => {
                "Let the user remove old devices in Company Portal, delete stale devices of the user in Intune and Entra ID, or raise the device limit restriction (at most 15)."
            }
            Self::ServerUnlicensed => {
                "Assign an Intune (or EMS/Microsoft 365 E3/E5) licence to the user, directly or through a group, then let them retry."
            }
        }
    }
}

/// One affected user or device.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row, utoipa::ToSchema,
)]
pub struct Affected {
    pub tenant: String,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InsightSummary {
    pub id: &'static str,
    pub title: &'static str,
    pub subject: &'static str,
    pub count: u64,
    pub cause: &'static str,
    pub remediation: &'static str,
    pub sample: Vec<Affected>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = InsightAffectedPage)]
pub struct AffectedPage {
    pub id: &'static str,
    pub subject: &'static str,
    pub count: u64,
    pub items: Vec<Affected>,
    pub next_cursor: Option<String>,
    /// The time (RFC 3339) the answer holds for: when the background snapshot it was read from
    /// was computed (at most three refresh intervals, and at least five minutes, ago), or the
    /// request's own time when it was computed live.
    pub as_of: String,
    /// Whether the answer was read from the background snapshot (`true`) or computed live for
    /// this request (`false`: snapshots off, not refreshed yet, or other insight settings).
    pub from_snapshot: bool,
}

/// Every insight with its count and sample, and where the answer comes from.
#[derive(Debug, Clone, Serialize)]
pub struct InsightList {
    pub insights: Vec<InsightSummary>,
    /// As [`AffectedPage::as_of`].
    pub as_of: String,
    /// As [`AffectedPage::from_snapshot`].
    pub from_snapshot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedCursor {
    pub tenant: String,
    pub subject: String,
}

impl AffectedCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
    pub fn decode(s: &str) -> Result<Self, FieldError> {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| FieldError::new("cursor", "not a cursor returned by this endpoint"))
    }
}

/// Latest snapshot per device (argMax over captured_at), from the per-device rollup
/// `device_latest` (migration 0005): one row per device instead of every snapshot.
fn latest_states(db: &str, sql: &mut Sql, tenant: Option<&str>) {
    sql.push(&format!(
        "SELECT tenant, device_id, argMaxMerge(platform) AS platform, \
         argMaxMerge(join_state) AS join_state, argMaxMerge(mdm_enrolled) AS mdm_enrolled, \
         argMaxMerge(tpm_present) AS tpm_present, argMaxMerge(tpm_spec_version) AS tpm_spec_version, \
         argMaxMerge(upn) AS upn, argMaxMerge(license_state) AS license_state, \
         argMaxMerge(last_attempt_at) AS last_attempt_at, \
         argMaxMerge(state_method) AS state_method, maxMerge(captured) AS captured \
         FROM {db}.device_latest"
    ));
    tenant_clause(sql, tenant, true);
    sql.push(" GROUP BY tenant, device_id");
}

/// `(tenant, device_id)` of the devices whose per-device fact `flag` (a `max` state of
/// `device_facts`, migration 0005) is set.
fn devices_with(db: &str, sql: &mut Sql, flag: &str, tenant: Option<&str>) {
    sql.push(&format!("SELECT tenant, device_id FROM {db}.device_facts"));
    tenant_clause(sql, tenant, true);
    sql.push(&format!(
        " GROUP BY tenant, device_id HAVING maxMerge({flag}) = 1"
    ));
}

fn tenant_clause(sql: &mut Sql, tenant: Option<&str>, first: bool) {
    if let Some(t) = tenant {
        sql.push(if first {
            " WHERE tenant = "
        } else {
            " AND tenant = "
        })
        .bind(Bind::Str(t.to_owned()));
    }
}

/// The `(tenant, subject, detail)` rows of one insight as of `now`.
pub(crate) fn insight_sql(
    engine: &Engine,
    id: InsightId,
    s: &InsightSettings,
    tenant: Option<&str>,
    now: u32,
) -> Sql {
    let db = engine.db();
    let mut sql = Sql::default();
    match id {
        InsightId::DeviceCap => {
            let (tenants, caps): (Vec<String>, Vec<u64>) = s
                .device_caps
                .iter()
                .map(|(t, c)| (t.clone(), u64::from(*c)))
                .unzip();
            sql.push("SELECT tenant, upn AS subject, concat(toString(n), '/', toString(cap)) AS detail FROM (SELECT tenant, upn, count() AS n, ");
            if tenants.is_empty() {
                sql.push("toUInt64(")
                    .bind(Bind::U64(u64::from(s.default_device_cap)))
                    .push(")");
            } else {
                sql.push("transform(tenant, ")
                    .bind(Bind::Strs(tenants))
                    .push(", ")
                    .bind(Bind::U64s(caps))
                    .push(", toUInt64(")
                    .bind(Bind::U64(u64::from(s.default_device_cap)))
                    .push("))");
            }
            sql.push(" AS cap FROM (");
            latest_states(db, &mut sql, tenant);
            sql.push(
                ") WHERE mdm_enrolled = 1 AND upn != '' GROUP BY tenant, upn) WHERE n + 1 >= cap",
            );
        }
        InsightId::TpmAutopilot => {
            sql.push(
                "SELECT tenant, device_id AS subject, \
                 if(tpm_present = 0, 'tpm missing', concat('tpm ', tpm_spec_version)) AS detail FROM (",
            );
            latest_states(db, &mut sql, tenant);
            sql.push(
                ") WHERE platform = 'windows' AND (tpm_present = 0 OR startsWith(tpm_spec_version, '1.')) \
                 AND (state_method IN ('autopilot_self_deploying', 'autopilot_pre_provisioned') \
                 OR (tenant, device_id) IN (",
            );
            devices_with(db, &mut sql, "autopilot_attestation", tenant);
            sql.push("))");
        }
        InsightId::Unlicensed => {
            sql.push(
                "SELECT tenant, upn AS subject, concat(toString(count()), ' device(s)') AS detail FROM (",
            );
            latest_states(db, &mut sql, tenant);
            sql.push(
                ") WHERE license_state = 'unlicensed' AND upn != '' AND toUInt32(last_attempt_at) != 0 \
                 GROUP BY tenant, upn",
            );
        }
        InsightId::NoAutoEnrollEvent => {
            sql.push("SELECT tenant, device_id AS subject, join_state AS detail FROM (");
            latest_states(db, &mut sql, tenant);
            sql.push(
                ") WHERE platform = 'windows' AND mdm_enrolled = 0 \
                 AND join_state IN ('entra_joined', 'hybrid_joined', 'domain_joined') \
                 AND (tenant, device_id) NOT IN (",
            );
            devices_with(db, &mut sql, "auto_enroll_event", tenant);
            sql.push(")");
        }
        InsightId::ServerDeviceCapPhones | InsightId::ServerUnlicensed => {
            let since = now.saturating_sub(SERVER_SIDE_DAYS * 86_400);
            // The subject is the UPN when the connector could resolve it, else the Entra user id
            // (Graph's `userId`), so a user without User.Read.All still counts once.
            sql.push(&format!(
                "SELECT tenant, if(user_principal_name != '', user_principal_name, \
                 arrayElement(attributes.value, indexOf(attributes.key, 'entra_user_id'))) AS subject, \
                 concat(toString(count()), ' attempt(s)') AS detail FROM {db}.enrollment_events \
                 WHERE source_kind = 'graph' AND outcome = 'failed' AND occurred_at >= toDateTime("
            ))
            .bind(Bind::U32(since))
            .push(", 'UTC')");
            tenant_clause(&mut sql, tenant, false);
            if id == InsightId::ServerDeviceCapPhones {
                sql.push(
                    " AND platform IN ('ios', 'ipados', 'android') \
                     AND (lower(error_symbol) IN ('devicecapreached', 'menroll_e_devicecapreached') \
                     OR position(lower(error_message), 'device cap') > 0 \
                     OR position(lower(error_message), 'device limit') > 0 \
                     OR position(lower(error_message), 'devicecapreached') > 0)",
                );
            } else {
                sql.push(
                    " AND (error_symbol = 'userValidation' OR position(lower(error_message), 'licens') > 0)",
                );
            }
            sql.push(" GROUP BY tenant, subject HAVING subject != ''");
        }
        InsightId::Stale => {
            let cutoff = now.saturating_sub(s.stale_days.saturating_mul(86_400));
            // Last snapshot and last successful event per device, from the per-device rollups.
            sql.push("SELECT tenant, device_id AS subject, concat('last seen ', toString(max(t))) AS detail FROM (");
            sql.push(&format!(
                "SELECT tenant, device_id, maxMerge(captured) AS t FROM {db}.device_latest"
            ));
            tenant_clause(&mut sql, tenant, true);
            sql.push(&format!(
                " GROUP BY tenant, device_id UNION ALL SELECT tenant, device_id, maxIfMerge(last_success) AS t \
                 FROM {db}.device_facts"
            ));
            tenant_clause(&mut sql, tenant, true);
            sql.push(" GROUP BY tenant, device_id HAVING countIfMerge(successes) > 0");
            sql.push(") GROUP BY tenant, device_id HAVING max(t) < toDateTime(")
                .bind(Bind::U32(cutoff))
                .push(", 'UTC')");
        }
    }
    sql
}

async fn count(engine: &Engine, inner: Sql) -> Result<u64, QueryError> {
    let mut sql = Sql::default();
    sql.push("SELECT count() FROM (");
    sql.append(inner);
    sql.push(")");
    Ok(sql.query(engine.client()).fetch_one().await?)
}

/// `(tenant, subject) > cursor`, in a form 18.16's key analysis uses.
fn after(sql: &mut Sql, c: &AffectedCursor) {
    sql.push("(tenant > ")
        .bind(Bind::Str(c.tenant.clone()))
        .push(" OR (tenant = ")
        .bind(Bind::Str(c.tenant.clone()))
        .push(" AND subject > ")
        .bind(Bind::Str(c.subject.clone()))
        .push("))");
}

async fn page(
    engine: &Engine,
    inner: Sql,
    cursor: Option<&AffectedCursor>,
    limit: u64,
) -> Result<Vec<Affected>, QueryError> {
    let mut sql = Sql::default();
    sql.push("SELECT tenant, subject, detail FROM (");
    sql.append(inner);
    sql.push(")");
    if let Some(c) = cursor {
        sql.push(" WHERE ");
        after(&mut sql, c);
    }
    sql.push(" ORDER BY tenant, subject LIMIT ")
        .bind(Bind::U64(limit));
    Ok(sql.query(engine.client()).fetch_all().await?)
}

/// Where an insight's rows are read: the live SQL as of a time, or a stored snapshot.
#[derive(Clone, Copy)]
enum Source<'a> {
    Live {
        settings: &'a InsightSettings,
        now: u32,
    },
    Snapshot(u64),
}

impl Source<'_> {
    /// The count of insight `id`'s subjects and one page of them.
    async fn count_and_page(
        self,
        engine: &Engine,
        id: InsightId,
        tenant: Option<&str>,
        cursor: Option<&AffectedCursor>,
        limit: u64,
    ) -> Result<(u64, Vec<Affected>), QueryError> {
        match self {
            Source::Live { settings, now } => {
                futures::future::try_join(
                    count(engine, insight_sql(engine, id, settings, tenant, now)),
                    page(
                        engine,
                        insight_sql(engine, id, settings, tenant, now),
                        cursor,
                        limit,
                    ),
                )
                .await
            }
            Source::Snapshot(g) => {
                snapshot::count_and_page(engine, g, id, tenant, cursor, limit).await
            }
        }
    }
}

/// The newest usable snapshot, else the live SQL as of `now`; with the time the answer holds
/// for.
async fn source<'a>(
    engine: &Engine,
    s: &'a InsightSettings,
    now: u32,
) -> Result<(Source<'a>, u32), QueryError> {
    Ok(match snapshot::latest(engine, s, now).await? {
        Some(snap) => (Source::Snapshot(snap.generation), snap.as_of),
        None => (Source::Live { settings: s, now }, now),
    })
}

/// All insights with their counts and first ten affected subjects. The insights are
/// independent questions: they run concurrently (count and sample of each too).
pub async fn list(
    engine: &Engine,
    s: &InsightSettings,
    tenant: Option<&str>,
    now: u32,
) -> Result<InsightList, QueryError> {
    let (src, as_of) = source(engine, s, now).await?;
    let insights = futures::future::try_join_all(InsightId::ALL.map(|id| async move {
        let (n, sample) = src.count_and_page(engine, id, tenant, None, 10).await?;
        Ok::<_, QueryError>(InsightSummary {
            id: id.as_str(),
            title: id.title(),
            subject: id.subject_kind(),
            count: n,
            cause: id.cause(),
            remediation: id.remediation(),
            sample,
        })
    }))
    .await?;
    Ok(InsightList {
        insights,
        as_of: rfc3339(as_of),
        from_snapshot: matches!(src, Source::Snapshot(_)),
    })
}

/// One page of an insight's affected subjects, ordered by (tenant, subject).
pub async fn affected(
    engine: &Engine,
    id: InsightId,
    s: &InsightSettings,
    tenant: Option<&str>,
    now: u32,
    cursor: Option<&AffectedCursor>,
    limit: u64,
) -> Result<AffectedPage, QueryError> {
    let (src, as_of) = source(engine, s, now).await?;
    let (n, mut items) = src
        .count_and_page(engine, id, tenant, cursor, limit + 1)
        .await?;
    let more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|a| {
            AffectedCursor {
                tenant: a.tenant.clone(),
                subject: a.subject.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(AffectedPage {
        id: id.as_str(),
        subject: id.subject_kind(),
        count: n,
        items,
        next_cursor,
        as_of: rfc3339(as_of),
        from_snapshot: matches!(src, Source::Snapshot(_)),
    })
}
