//! Pure mapping of Graph records onto protocol events: no I/O, no clock.
//!
//! **Troubleshooting events** (`enrollmentTroubleshootingEvent`, v1.0) are enrollment
//! *failures* recorded by the Intune service, often before anything runs on the device
//! (device cap, missing licence, platform restriction). Mapping:
//! - `id` → `event_id` (the Graph id when it is a UUID, as documented; otherwise a UUIDv5 of it),
//!   so a re-read is the same event.
//! - `failureCategory` (deviceEnrollmentFailureReason) → `error.symbol`, kept verbatim, also when
//!   the value is one we do not know; `failureReason` (free text) → `error.message`. The
//!   analyzer's catalog classifies both into the categories agents' codes fall in.
//! - `enrollmentType` (deviceEnrollmentType) → `enrollment_method`; `operatingSystem` →
//!   `platform` (+ `os_edition` verbatim); `failureCategory` → `stage` (authentication →
//!   authentication; the service's policy checks → authorization; the rest → complete).
//! - Device: `managedDeviceIdentifier` (Intune id) if set, else `deviceId` (Entra id), else the
//!   attempt is keyed `graph-user:<userId>:<platform>` (a device refused before it exists has
//!   no id of its own). Both ids are also kept as attributes `intune_device_id` and
//!   `entra_device_id`, which the analyzer joins on.
//! - `userId` → attribute `entra_user_id`; the UPN comes from a lookup the caller did.
//!
//! **Autopilot events** (`deviceManagementAutopilotEvent`, beta only) are per-deployment
//! records with per-phase status and durations: `deploymentState` → outcome, a failed ESP phase
//! → stage `enrollment_status_page`, durations and profile names → attributes. Their event id is
//! a UUIDv5 of (`id`, `deploymentState`), so an in-progress record that later fails is a second
//! event, and a re-read of either is the same event.
//!
//! A record without a usable `id` or `eventDateTime` is refused with the field and the reason
//! (the caller logs it and keeps it aside); any other odd value (an unknown or non-string enum,
//! a number where a string belongs) is kept as unknown, never fatal.

use std::collections::HashMap;

use fleetpulse_proto::v1::{
    EnrollmentEvent, EnrollmentMethod, EnrollmentStage, Outcome, Platform, Source, SourceKind,
    TelemetryItem, telemetry_item,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::sources::{
    Attributes, MAX_UPN_BYTES, reported_error, stable_event_id, timestamp_ms, truncate_bytes,
};

/// The Graph collections the connector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `GET /{v1.0|beta}/deviceManagement/troubleshootingEvents`.
    TroubleshootingEvents,
    /// `GET /beta/deviceManagement/autopilotEvents`.
    AutopilotEvents,
}

impl Resource {
    /// Path below the API version; also `source.channel` of the events.
    pub fn path(self) -> &'static str {
        match self {
            Self::TroubleshootingEvents => "deviceManagement/troubleshootingEvents",
            Self::AutopilotEvents => "deviceManagement/autopilotEvents",
        }
    }

    /// Name of the spool cursor holding this resource's read position.
    pub fn cursor_key(self) -> &'static str {
        match self {
            Self::TroubleshootingEvents => "graph:troubleshootingEvents",
            Self::AutopilotEvents => "graph:autopilotEvents",
        }
    }
}

/// What the mapping needs besides the record.
#[derive(Debug, Clone, Default)]
pub struct MapContext<'a> {
    /// The connector's agent id (from its registration with the collector).
    pub agent_id: &'a str,
    /// The Entra tenant (directory) the record came from.
    pub directory_id: &'a str,
    /// Entra user object id → user principal name, as far as resolved.
    pub upns: Option<&'a HashMap<String, String>>,
}

/// One mapped record.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The event id: the key the cursor deduplicates on.
    pub event_id: String,
    /// `eventDateTime` in Unix milliseconds: what the watermark follows.
    pub at_ms: i64,
    pub item: TelemetryItem,
}

/// Why a record cannot become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Refused {
    pub field: &'static str,
    pub reason: String,
}

fn refused(field: &'static str, reason: impl Into<String>) -> Refused {
    Refused {
        field,
        reason: reason.into(),
    }
}

/// A string property: `None` when absent, null or empty; non-strings become their JSON text
/// (so an odd value is kept, not lost).
fn text(record: &Value, name: &str) -> Option<String> {
    match record.get(name)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_owned()),
        other => Some(other.to_string()),
    }
}

/// An enum property as a string: `Some(name)` for a string, `Some("invalid:<json>")` for
/// anything else, `None` when absent.
fn enum_text(record: &Value, name: &str) -> Option<String> {
    match record.get(name)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(format!("invalid:{other}")),
    }
}

/// Parses Graph's `DateTimeOffset` (RFC 3339, up to 7 fractional digits, any offset).
pub fn parse_time(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

fn required_time(record: &Value) -> Result<OffsetDateTime, Refused> {
    match record.get("eventDateTime") {
        Some(Value::String(s)) => parse_time(s).ok_or_else(|| {
            refused(
                "eventDateTime",
                format!("{:?} is not an RFC 3339 date-time", truncate_bytes(s, 64)),
            )
        }),
        Some(Value::Null) | None => Err(refused("eventDateTime", "missing")),
        Some(other) => Err(refused(
            "eventDateTime",
            format!("expected a string, found {}", json_kind(other)),
        )),
    }
}

fn required_id(record: &Value) -> Result<String, Refused> {
    match record.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::String(_)) | Some(Value::Null) | None => Err(refused("id", "missing")),
        Some(other) => Err(refused(
            "id",
            format!("expected a string, found {}", json_kind(other)),
        )),
    }
}

/// What every record must have: to be an object with an `id` and a readable `eventDateTime`.
fn identity(record: &Value) -> Result<(String, OffsetDateTime), Refused> {
    if !record.is_object() {
        return Err(refused(
            "value[]",
            format!("expected an object, found {}", json_kind(record)),
        ));
    }
    Ok((required_id(record)?, required_time(record)?))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Graph's free-text `operatingSystem` onto our platform.
pub fn platform_of(os: &str) -> Platform {
    let os = os.to_ascii_lowercase();
    if os.contains("windows") {
        Platform::Windows
    } else if os.contains("ipados") || os.contains("ipad") {
        Platform::Ipados
    } else if os.contains("ios") || os.contains("iphone") {
        Platform::Ios
    } else if os.contains("mac") {
        Platform::Macos
    } else if os.contains("android") {
        Platform::Android
    } else if os.contains("linux") {
        Platform::Linux
    } else {
        Platform::Unspecified
    }
}

/// `deviceEnrollmentType` (v1.0 members and the beta additions) onto our methods.
pub fn method_of_enrollment_type(value: &str) -> EnrollmentMethod {
    use EnrollmentMethod as M;
    match value {
        // "User driven enrollment through BYOD channel" and "Windows 10 automatic enrollment
        // (Add work account)".
        "userEnrollment" | "windowsAutoEnrollment" => M::UserDrivenByod,
        "deviceEnrollmentManager" => M::DeviceEnrollmentManager,
        "appleBulkWithUser" | "appleBulkWithoutUser" => M::AppleAde,
        "windowsAzureADJoin"
        | "windowsAzureADJoinUsingDeviceAuth"
        | "azureAdJoinUsingAzureVmExtension" => M::EntraJoin,
        "windowsBulkUserless" | "windowsBulkAzureDomainJoin" => M::BulkProvisioning,
        "windowsCoManagement" => M::CoManagement,
        "appleUserEnrollment" | "appleUserEnrollmentWithServiceAccount" => M::AppleUserEnrollment,
        "androidEnterpriseDedicatedDevice" => M::AndroidDedicated,
        "androidEnterpriseFullyManaged" => M::AndroidFullyManaged,
        "androidEnterpriseCorporateWorkProfile" => M::AndroidWorkProfile,
        _ => M::Unspecified,
    }
}

/// `windowsAutopilotEnrollmentType` onto our methods.
pub fn method_of_autopilot_type(value: &str) -> EnrollmentMethod {
    use EnrollmentMethod as M;
    match value {
        "azureADJoinedWithAutopilotProfile" | "azureADJoinedWithOfflineAutopilotProfile" => {
            M::AutopilotUserDriven
        }
        "azureADJoinedUsingDeviceAuthWithAutopilotProfile"
        | "azureADJoinedUsingDeviceAuthWithoutAutopilotProfile" => M::AutopilotSelfDeploying,
        "azureADJoinedWithWhiteGlove" | "offlineDomainJoinedWithWhiteGlove" => {
            M::AutopilotPreProvisioned
        }
        "offlineDomainJoined" | "offlineDomainJoinedWithOfflineAutopilotProfile" => M::HybridJoin,
        _ => M::Unspecified,
    }
}

/// The enrollment step a `failureCategory` refers to.
pub fn stage_of_failure_category(value: &str) -> EnrollmentStage {
    use EnrollmentStage as S;
    match value {
        "authentication" => S::Authentication,
        "authorization"
        | "accountValidation"
        | "userValidation"
        | "deviceNotSupported"
        | "inMaintenance"
        | "featureNotSupported"
        | "enrollmentRestrictionsEnforced" => S::Authorization,
        _ => S::Complete,
    }
}

/// An id that is absent, empty or the all-zero GUID Intune uses for "none".
fn real_id(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty() && !v.bytes().all(|b| b == b'0' || b == b'-') && v.len() <= 128)
}

fn event(
    ctx: &MapContext<'_>,
    resource: Resource,
    event_id: String,
    at: OffsetDateTime,
    device_id: String,
) -> EnrollmentEvent {
    EnrollmentEvent {
        event_id,
        agent_id: ctx.agent_id.to_owned(),
        device_id,
        occurred_at: Some(timestamp_ms(at)),
        source: Some(Source {
            kind: SourceKind::Graph as i32,
            channel: resource.path().to_owned(),
            event_id: 0,
            record_id: 0,
        }),
        ..EnrollmentEvent::default()
    }
}

fn upn_of(ctx: &MapContext<'_>, user_id: Option<&str>) -> String {
    user_id
        .and_then(|id| ctx.upns.and_then(|m| m.get(id)))
        .map(|upn| truncate_bytes(upn, MAX_UPN_BYTES))
        .unwrap_or_default()
}

/// Maps one `enrollmentTroubleshootingEvent`.
pub fn troubleshooting_event(ctx: &MapContext<'_>, record: &Value) -> Result<Mapped, Refused> {
    let (id, at) = identity(record)?;
    let event_id = match uuid::Uuid::parse_str(&id) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => stable_event_id("graph:troubleshootingEvents", &[ctx.directory_id, &id]),
    };
    let os = text(record, "operatingSystem").unwrap_or_default();
    let platform = platform_of(&os);
    let enrollment_type = enum_text(record, "enrollmentType");
    let failure_category = enum_text(record, "failureCategory");
    let failure_reason = text(record, "failureReason").unwrap_or_default();
    let intune_id = real_id(text(record, "managedDeviceIdentifier"));
    let entra_id = real_id(text(record, "deviceId"));
    let user_id = real_id(text(record, "userId"));
    let device_id = intune_id
        .clone()
        .or_else(|| entra_id.clone())
        .unwrap_or_else(|| {
            let platform_name = platform.as_str_name().trim_start_matches("PLATFORM_");
            match &user_id {
                Some(user) => format!("graph-user:{user}:{}", platform_name.to_ascii_lowercase()),
                None => format!("graph-event:{id}"),
            }
        });
    let mut e = event(
        ctx,
        Resource::TroubleshootingEvents,
        event_id.clone(),
        at,
        truncate_bytes(&device_id, 128),
    );
    e.platform = platform as i32;
    e.os_edition = truncate_bytes(&os, 128);
    e.os_version = truncate_bytes(&text(record, "osVersion").unwrap_or_default(), 64);
    e.enrollment_method =
        method_of_enrollment_type(enrollment_type.as_deref().unwrap_or("")) as i32;
    e.stage = stage_of_failure_category(failure_category.as_deref().unwrap_or("")) as i32;
    e.outcome = Outcome::Failed as i32;
    e.error = Some(reported_error(
        None,
        failure_category.as_deref().unwrap_or(""),
        &failure_reason,
    ));
    e.user_principal_name = upn_of(ctx, user_id.as_deref());
    let mut attrs = Attributes::new();
    attrs.add_opt("intune_device_id", intune_id.as_deref());
    attrs.add_opt("entra_device_id", entra_id.as_deref());
    attrs.add_opt("entra_user_id", user_id.as_deref());
    attrs.add("entra_tenant_id", ctx.directory_id);
    attrs.add("graph_id", &id);
    attrs.add_opt("correlation_id", text(record, "correlationId").as_deref());
    attrs.add_opt("graph_enrollment_type", enrollment_type.as_deref());
    attrs.add_opt("graph_failure_category", failure_category.as_deref());
    e.attributes = attrs.into_map();
    Ok(Mapped {
        event_id,
        at_ms: unix_ms(at),
        item: TelemetryItem {
            kind: Some(telemetry_item::Kind::Event(e)),
        },
    })
}

/// `windowsAutopilotDeploymentState` onto our outcome.
pub fn outcome_of_deployment_state(value: &str) -> Outcome {
    match value {
        "success" | "successWithTimeout" | "successOnRetry" => Outcome::Succeeded,
        "failure" => Outcome::Failed,
        "inProgress" => Outcome::InProgress,
        _ => Outcome::Unspecified,
    }
}

/// Maps one `deviceManagementAutopilotEvent` (beta).
pub fn autopilot_event(ctx: &MapContext<'_>, record: &Value) -> Result<Mapped, Refused> {
    let (id, at) = identity(record)?;
    let deployment_state = enum_text(record, "deploymentState");
    let enrollment_state = enum_text(record, "enrollmentState");
    let device_setup = enum_text(record, "deviceSetupStatus");
    let account_setup = enum_text(record, "accountSetupStatus");
    let event_id = stable_event_id(
        "graph:autopilotEvents",
        &[
            ctx.directory_id,
            &id,
            deployment_state.as_deref().unwrap_or(""),
        ],
    );
    let serial = text(record, "deviceSerialNumber");
    let intune_id = real_id(text(record, "deviceId"));
    let user_id = real_id(text(record, "userId"));
    let device_id = intune_id
        .clone()
        .or_else(|| serial.as_ref().map(|s| format!("serial:{s}")))
        .unwrap_or_else(|| format!("graph-event:{id}"));
    let mut e = event(
        ctx,
        Resource::AutopilotEvents,
        event_id.clone(),
        at,
        truncate_bytes(&device_id, 128),
    );
    e.platform = Platform::Windows as i32;
    e.os_edition = "Windows".to_owned();
    e.os_version = truncate_bytes(&text(record, "osVersion").unwrap_or_default(), 64);
    e.enrollment_method =
        method_of_autopilot_type(enum_text(record, "enrollmentType").as_deref().unwrap_or(""))
            as i32;
    let mut outcome = outcome_of_deployment_state(deployment_state.as_deref().unwrap_or(""));
    if matches!(enrollment_state.as_deref(), Some("failed" | "blocked")) {
        outcome = Outcome::Failed;
    }
    let esp_failed = [&device_setup, &account_setup]
        .iter()
        .any(|s| s.as_deref() == Some("failure"));
    e.stage = if esp_failed {
        EnrollmentStage::EnrollmentStatusPage
    } else {
        EnrollmentStage::Complete
    } as i32;
    e.outcome = outcome as i32;
    if outcome == Outcome::Failed {
        let details = text(record, "enrollmentFailureDetails").unwrap_or_default();
        let symbol = if esp_failed {
            "autopilotEspFailure"
        } else {
            "autopilotDeploymentFailure"
        };
        e.error = Some(reported_error(None, symbol, &details));
    }
    e.user_principal_name = text(record, "userPrincipalName")
        .map(|u| truncate_bytes(&u, MAX_UPN_BYTES))
        .unwrap_or_else(|| upn_of(ctx, user_id.as_deref()));
    let mut attrs = Attributes::new();
    attrs.add_opt("intune_device_id", intune_id.as_deref());
    attrs.add_opt("serial_number", serial.as_deref());
    attrs.add_opt("entra_user_id", user_id.as_deref());
    attrs.add("entra_tenant_id", ctx.directory_id);
    attrs.add("graph_id", &id);
    attrs.add_opt("device_name", text(record, "managedDeviceName").as_deref());
    attrs.add_opt("deployment_state", deployment_state.as_deref());
    attrs.add_opt("enrollment_state", enrollment_state.as_deref());
    attrs.add_opt("device_setup_status", device_setup.as_deref());
    attrs.add_opt("account_setup_status", account_setup.as_deref());
    for (key, name) in [
        ("deployment_duration", "deploymentDuration"),
        ("deployment_total_duration", "deploymentTotalDuration"),
        ("device_setup_duration", "deviceSetupDuration"),
        ("account_setup_duration", "accountSetupDuration"),
        (
            "autopilot_profile",
            "windowsAutopilotDeploymentProfileDisplayName",
        ),
        (
            "esp_profile",
            "windows10EnrollmentCompletionPageConfigurationDisplayName",
        ),
        ("graph_enrollment_type", "enrollmentType"),
    ] {
        attrs.add_opt(key, text(record, name).as_deref());
    }
    e.attributes = attrs.into_map();
    Ok(Mapped {
        event_id,
        at_ms: unix_ms(at),
        item: TelemetryItem {
            kind: Some(telemetry_item::Kind::Event(e)),
        },
    })
}

/// Maps a record of `resource`.
pub fn map_record(
    resource: Resource,
    ctx: &MapContext<'_>,
    record: &Value,
) -> Result<Mapped, Refused> {
    match resource {
        Resource::TroubleshootingEvents => troubleshooting_event(ctx, record),
        Resource::AutopilotEvents => autopilot_event(ctx, record),
    }
}

/// The Entra user ids of a page whose UPN the caller may want to resolve.
pub fn user_ids(records: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .filter(|r| r.get("userPrincipalName").and_then(Value::as_str).is_none())
        .filter_map(|r| real_id(text(r, "userId")))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Unix milliseconds of a time.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
