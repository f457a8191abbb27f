//! Deterministic, realistic synthetic telemetry for tests and benchmarks.
//!
//! The same seed always yields the same items, so a failing test reproduces and the benchmark
//! sends identical data through the pipeline and straight into ClickHouse. Scenarios follow
//! real enrollment failures (codes, symbols, event log channel and event ids 75/76/52,
//! dsregcmd) from the domain notes, weighted roughly like a real fleet: mostly successes, a
//! long tail of failures.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::telemetry_item::Kind;
use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentMethod, EnrollmentStage, Heartbeat, JoinState,
    LicenseState, Outcome, Platform, ReportedError, Source, SourceKind, TelemetryItem, TpmInfo,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// The Windows MDM admin channel that carries enrollment events 75, 76 and 52.
pub const MDM_ADMIN_CHANNEL: &str =
    "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin";

/// One kind of enrollment observation, with its weight in a fleet.
struct Scenario {
    weight: u32,
    platform: Platform,
    os_edition: &'static str,
    os_versions: &'static [&'static str],
    method: EnrollmentMethod,
    stage: EnrollmentStage,
    outcome: Outcome,
    code: Option<u32>,
    symbol: &'static str,
    message: &'static str,
    source: SourceKind,
    event_id: u32,
}

const WIN11: &[&str] = &[
    "10.0.22631.4602",
    "10.0.22631.4751",
    "10.0.26100.2605",
    "10.0.22621.4317",
];
const WIN10: &[&str] = &["10.0.19045.5247", "10.0.19045.5371", "10.0.19044.5131"];
const IOS: &[&str] = &["17.5.1", "17.6.1", "18.1.1", "18.2"];
const ANDROID: &[&str] = &["13", "14", "15"];
const MACOS: &[&str] = &["14.7.1", "15.1.1", "15.2"];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        weight: 40,
        platform: Platform::Windows,
        os_edition: "Windows 11 Enterprise",
        os_versions: WIN11,
        method: EnrollmentMethod::EntraJoin,
        stage: EnrollmentStage::Complete,
        outcome: Outcome::Succeeded,
        code: None,
        symbol: "",
        message: "Auto MDM Enroll: Succeeded",
        source: SourceKind::EventLog,
        event_id: 75,
    },
    Scenario {
        weight: 12,
        platform: Platform::Windows,
        os_edition: "Windows 11 Pro",
        os_versions: WIN11,
        method: EnrollmentMethod::AutopilotUserDriven,
        stage: EnrollmentStage::EnrollmentStatusPage,
        outcome: Outcome::InProgress,
        code: None,
        symbol: "",
        message: "ESP: device preparation in progress",
        source: SourceKind::MdmDiagnostics,
        event_id: 0,
    },
    Scenario {
        weight: 8,
        platform: Platform::Windows,
        os_edition: "Windows 10 Pro",
        os_versions: WIN10,
        method: EnrollmentMethod::UserDrivenByod,
        stage: EnrollmentStage::Authorization,
        outcome: Outcome::Failed,
        code: Some(0x8018_0013),
        symbol: "DeviceCapReached",
        message: "MDM Enroll: Server Returned Fault/Code/Subcode/Value=(DeviceCapReached) Fault/Reason/Text=(Device Cap Reached)",
        source: SourceKind::EventLog,
        event_id: 52,
    },
    Scenario {
        weight: 7,
        platform: Platform::Windows,
        os_edition: "Windows 10 Enterprise",
        os_versions: WIN10,
        method: EnrollmentMethod::GpoAutoEnroll,
        stage: EnrollmentStage::Complete,
        outcome: Outcome::Failed,
        code: Some(0x8018_0018),
        symbol: "MENROLL_E_USERLICENSE",
        message: "Auto MDM Enroll: Device Credential (0x0), Failed (Unknown Win32 Error code: 0x80180018)",
        source: SourceKind::EventLog,
        event_id: 76,
    },
    Scenario {
        weight: 6,
        platform: Platform::Windows,
        os_edition: "Windows 10 Home",
        os_versions: WIN10,
        method: EnrollmentMethod::UserDrivenByod,
        stage: EnrollmentStage::Authorization,
        outcome: Outcome::Failed,
        code: Some(0x8018_0014),
        symbol: "DeviceNotSupported",
        message: "MDM Enroll: Server Returned Fault/Code/Subcode/Value=(DeviceNotSupported) Fault/Reason/Text=(Device Not Supported)",
        source: SourceKind::EventLog,
        event_id: 52,
    },
    Scenario {
        weight: 5,
        platform: Platform::Windows,
        os_edition: "Windows 11 Enterprise",
        os_versions: WIN11,
        method: EnrollmentMethod::HybridJoin,
        stage: EnrollmentStage::DeviceRegistration,
        outcome: Outcome::Failed,
        code: Some(0x801c_03f2),
        symbol: "DSREG_E_DIRECTORY_FAILURE",
        message: "The device object by the given id (5d3c1f57-ad1e-4e38-9bba-1c9f6a7b9d2e) is not found.",
        source: SourceKind::Dsregcmd,
        event_id: 0,
    },
    Scenario {
        weight: 4,
        platform: Platform::Windows,
        os_edition: "Windows 11 Enterprise",
        os_versions: WIN11,
        method: EnrollmentMethod::AutopilotSelfDeploying,
        stage: EnrollmentStage::CertificateRequest,
        outcome: Outcome::Failed,
        code: Some(0x8007_05b4),
        symbol: "ERROR_TIMEOUT",
        message: "Securing your hardware (Failed: 0x800705b4)",
        source: SourceKind::MdmDiagnostics,
        event_id: 0,
    },
    Scenario {
        weight: 4,
        platform: Platform::Windows,
        os_edition: "Windows 10 Pro",
        os_versions: WIN10,
        method: EnrollmentMethod::GpoAutoEnroll,
        stage: EnrollmentStage::Complete,
        outcome: Outcome::Failed,
        code: Some(0x8018_002b),
        symbol: "",
        message: "Auto MDM Enroll: Device Credential (0x1), Failed (Unknown Win32 Error code: 0x8018002b)",
        source: SourceKind::EventLog,
        event_id: 76,
    },
    Scenario {
        weight: 6,
        platform: Platform::Ios,
        os_edition: "iOS",
        os_versions: IOS,
        method: EnrollmentMethod::AppleAde,
        stage: EnrollmentStage::ProfileInstall,
        outcome: Outcome::Succeeded,
        code: None,
        symbol: "",
        message: "",
        source: SourceKind::Api,
        event_id: 0,
    },
    Scenario {
        weight: 3,
        platform: Platform::Ios,
        os_edition: "iOS",
        os_versions: IOS,
        method: EnrollmentMethod::AppleUserEnrollment,
        stage: EnrollmentStage::Authorization,
        outcome: Outcome::Failed,
        code: None,
        symbol: "DeviceCapReached",
        message: "Device Limit Reached",
        source: SourceKind::Api,
        event_id: 0,
    },
    Scenario {
        weight: 3,
        platform: Platform::Android,
        os_edition: "Android Enterprise",
        os_versions: ANDROID,
        method: EnrollmentMethod::AndroidWorkProfile,
        stage: EnrollmentStage::ProfileInstall,
        outcome: Outcome::Failed,
        code: None,
        symbol: "UserLicenseTypeInvalid",
        message: "The user does not have a valid Intune license.",
        source: SourceKind::Api,
        event_id: 0,
    },
    Scenario {
        weight: 2,
        platform: Platform::Macos,
        os_edition: "macOS",
        os_versions: MACOS,
        method: EnrollmentMethod::AppleAde,
        stage: EnrollmentStage::ProfileInstall,
        outcome: Outcome::Failed,
        code: None,
        symbol: "MDMProfileInstallFailed",
        message: "Profile installation failed. The MDM payload could not be installed.",
        source: SourceKind::MacosProfiles,
        event_id: 0,
    },
];

const USERS: &[&str] = &[
    "joe",
    "ana.silva",
    "li.wei",
    "m.mueller",
    "priya.n",
    "o.okafor",
    "s.tanaka",
    "kim.lee",
];
const DOMAINS: &[&str] = &[
    "contoso.com",
    "fabrikam.onmicrosoft.com",
    "northwind.example",
];
const MDM_URL: &str = "https://enrollment.manage.microsoft.com/enrollmentserver/discovery.svc";

/// A protobuf timestamp for `t` (full nanosecond precision is kept on the wire).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Wraps an event as a batch item.
pub fn event_item(event: EnrollmentEvent) -> TelemetryItem {
    TelemetryItem {
        kind: Some(Kind::Event(event)),
    }
}

/// Wraps a state snapshot as a batch item.
pub fn state_item(state: DeviceState) -> TelemetryItem {
    TelemetryItem {
        kind: Some(Kind::State(state)),
    }
}

/// Wraps a heartbeat as a batch item.
pub fn heartbeat_item(heartbeat: Heartbeat) -> TelemetryItem {
    TelemetryItem {
        kind: Some(Kind::Heartbeat(heartbeat)),
    }
}

/// A seeded generator of realistic telemetry.
pub struct Synth {
    rng: StdRng,
    total_weight: u32,
}

impl Synth {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            total_weight: SCENARIOS.iter().map(|s| s.weight).sum(),
        }
    }

    /// A random UUID drawn from the seeded generator (deterministic).
    pub fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.r#gen()).into_uuid()
    }

    /// A device id as Intune reports it (a UUID).
    pub fn device_id(&mut self) -> String {
        self.uuid().to_string()
    }

    fn scenario(&mut self) -> &'static Scenario {
        let mut pick = self.rng.gen_range(0..self.total_weight);
        for s in SCENARIOS {
            if pick < s.weight {
                return s;
            }
            pick -= s.weight;
        }
        &SCENARIOS[0]
    }

    fn upn(&mut self) -> String {
        let user = USERS[self.rng.gen_range(0..USERS.len())];
        let domain = DOMAINS[self.rng.gen_range(0..DOMAINS.len())];
        format!("{user}@{domain}")
    }

    /// One enrollment event of `device_id` observed by `agent_id` at `at` (sub-millisecond
    /// digits included, as Windows event timestamps have them).
    pub fn event(&mut self, agent_id: &str, device_id: &str, at: SystemTime) -> EnrollmentEvent {
        let s = self.scenario();
        let event_id = self.uuid().to_string();
        let correlation = self.uuid().to_string();
        let os_version = s.os_versions[self.rng.gen_range(0..s.os_versions.len())];
        let upn = if s.method == EnrollmentMethod::AutopilotSelfDeploying {
            String::new()
        } else {
            self.upn()
        };
        let mut attributes = HashMap::from([("correlation_id".to_owned(), correlation)]);
        if s.stage == EnrollmentStage::EnrollmentStatusPage {
            let phase =
                ["DevicePreparation", "DeviceSetup", "AccountSetup"][self.rng.gen_range(0..3)];
            attributes.insert("esp_phase".to_owned(), phase.to_owned());
        }
        let error = (s.outcome == Outcome::Failed).then(|| ReportedError {
            code: s.code.unwrap_or(0),
            has_code: s.code.is_some(),
            symbol: s.symbol.to_owned(),
            message: s.message.to_owned(),
        });
        let (channel, record_id) = if s.source == SourceKind::EventLog {
            (
                MDM_ADMIN_CHANNEL.to_owned(),
                self.rng.gen_range(1_000..5_000_000u64),
            )
        } else {
            (String::new(), 0)
        };
        let at = at + Duration::from_nanos(self.rng.gen_range(0..1_000_000));
        EnrollmentEvent {
            event_id,
            agent_id: agent_id.to_owned(),
            device_id: device_id.to_owned(),
            occurred_at: Some(timestamp(at)),
            platform: s.platform as i32,
            os_edition: s.os_edition.to_owned(),
            os_version: os_version.to_owned(),
            enrollment_method: s.method as i32,
            stage: s.stage as i32,
            outcome: s.outcome as i32,
            error,
            source: Some(Source {
                kind: s.source as i32,
                channel,
                event_id: s.event_id,
                record_id,
            }),
            user_principal_name: upn,
            attributes,
        }
    }

    /// A device-state snapshot consistent with a typical Windows device.
    pub fn device_state(&mut self, agent_id: &str, device_id: &str, at: SystemTime) -> DeviceState {
        let enrolled = self.rng.gen_bool(0.8);
        let join_state = [
            JoinState::EntraJoined,
            JoinState::HybridJoined,
            JoinState::DomainJoined,
            JoinState::WorkplaceRegistered,
        ][self.rng.gen_range(0..4)];
        let failed = !enrolled && self.rng.gen_bool(0.7);
        let method = if join_state == JoinState::HybridJoined {
            EnrollmentMethod::HybridJoin
        } else {
            EnrollmentMethod::EntraJoin
        };
        DeviceState {
            agent_id: agent_id.to_owned(),
            device_id: device_id.to_owned(),
            captured_at: Some(timestamp(at)),
            platform: Platform::Windows as i32,
            os_edition: "Windows 11 Enterprise".to_owned(),
            os_version: WIN11[self.rng.gen_range(0..WIN11.len())].to_owned(),
            join_state: join_state as i32,
            mdm_enrolled: enrolled,
            mdm_url: if enrolled {
                MDM_URL.to_owned()
            } else {
                String::new()
            },
            entra_tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            tpm: Some(TpmInfo {
                present: true,
                spec_version: "2.0".to_owned(),
                ready: self.rng.gen_bool(0.95),
                manufacturer: ["INTC", "IFX", "AMD", "NTC"][self.rng.gen_range(0..4)].to_owned(),
            }),
            primary_user_upn: self.upn(),
            last_enrollment_attempt_at: Some(timestamp(at - Duration::from_secs(3_600))),
            last_enrollment_outcome: if failed {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            } as i32,
            last_enrollment_error: failed.then(|| ReportedError {
                code: 0x8018_0018,
                has_code: true,
                symbol: "MENROLL_E_USERLICENSE".to_owned(),
                message: "There was an error with your license.".to_owned(),
            }),
            license_state: if failed {
                LicenseState::Unlicensed
            } else {
                LicenseState::Licensed
            } as i32,
            enrollment_method: method as i32,
            device_name: format!("DESKTOP-{:06X}", self.rng.gen_range(0..0xFF_FFFFu32)),
            attributes: HashMap::from([("source".to_owned(), "dsregcmd".to_owned())]),
        }
    }

    /// An agent heartbeat.
    pub fn heartbeat(&mut self, agent_id: &str, device_id: &str, at: SystemTime) -> Heartbeat {
        let depth = self.rng.gen_range(0..500u64);
        Heartbeat {
            agent_id: agent_id.to_owned(),
            sent_at: Some(timestamp(at)),
            agent_version: "0.1.0".to_owned(),
            spool_depth: depth,
            spool_bytes: depth * 612,
            spool_dropped_total: 0,
            spool_corrupt_total: u64::from(self.rng.gen_bool(0.01)),
            last_error: String::new(),
            device_id: device_id.to_owned(),
        }
    }

    /// `n` event items of `agent_id`, spread over `devices`, starting at `start` and `step`
    /// apart (a realistic, ordered stream of one agent).
    pub fn event_items(
        &mut self,
        agent_id: &str,
        devices: &[String],
        n: usize,
        start: SystemTime,
        step: Duration,
    ) -> Vec<TelemetryItem> {
        (0..n)
            .map(|i| {
                let device = if devices.is_empty() {
                    agent_id
                } else {
                    devices[i % devices.len()].as_str()
                };
                let at = start + step * u32::try_from(i).unwrap_or(u32::MAX);
                event_item(self.event(agent_id, device, at))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_output() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a =
            Synth::new(7).event_items("agent", &["d1".into()], 50, at, Duration::from_millis(10));
        let b =
            Synth::new(7).event_items("agent", &["d1".into()], 50, at, Duration::from_millis(10));
        assert_eq!(a, b);
        let c =
            Synth::new(8).event_items("agent", &["d1".into()], 50, at, Duration::from_millis(10));
        assert_ne!(a, c);
    }

    #[test]
    fn failed_events_carry_an_error_and_others_do_not() {
        let mut s = Synth::new(1);
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut failed = 0;
        for _ in 0..1000 {
            let e = s.event("a", "d", at);
            assert_eq!(e.error.is_some(), e.outcome == Outcome::Failed as i32);
            assert!(Uuid::parse_str(&e.event_id).is_ok());
            if e.error.is_some() {
                failed += 1;
            }
        }
        assert!((200..600).contains(&failed), "{failed} failures in 1000");
    }
}
