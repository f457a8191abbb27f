//! The simulated fleet and its enrollment traffic: a pure, seeded generator (same seed, same
//! fleet, same sequence of events), tested without any server.
//!
//! Realism, from ../shared/domain/enrollment-errors.md:
//! - Platform mix: Windows ~62 %, iOS ~17 %, Android ~12 %, macOS ~6 %, iPadOS ~3 %.
//! - Users own 1..10 devices (most 1-2); Intune's default device limit is 5 (some tenants 15).
//!   Device-cap failures come only from devices beyond the limit of users who really own that
//!   many.
//! - Failures follow from device/user/tenant properties, in the order the service checks them:
//!   Windows Home edition -> unsupported (0x80180022 on Autopilot, 0x801c0003 on Entra join);
//!   TPM 1.2/absent on self-deploying Autopilot -> attestation failure (0x800705b4 "Securing your
//!   hardware", 0x801c03ea); redeployed self-deploying device -> 0x80180014 with the SOAP reason
//!   "Enrollment blocked for AP device by SDM One Time Limit Check"; user without licence ->
//!   0x80180018 / UserLicense; user outside the MDM user scope -> 0x8018002b (event 76) or
//!   0x80180031; too many devices -> 0x80180013 / DeviceCapReached; stale enrollment ->
//!   0x8018000a; wrong clock -> 0x8018000d; plus transient network/proxy failures
//!   (0x80180010, dsregcmd `FAIL [0x801c0021/0x80072ee2]`, XPC_TYPE_ERROR on Apple).
//! - Windows server faults appear as event 52 (SOAP subcode + reason) followed by event 76
//!   (HRESULT); Entra join failures as dsregcmd diagnostics (error phase, client error code);
//!   mobile failures as Intune troubleshooting events (API source) with the documented strings.
//! - Every event carries `simulated=true` and `sim_cause=<category>` attributes (ground truth
//!   for testing the analyzer's classification); state snapshots agree with the events.

use std::collections::HashMap;
use std::time::Duration;

use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentMethod, EnrollmentStage, JoinState, LicenseState,
    Outcome, Platform, ReportedError, Source, SourceKind, TelemetryItem, TpmInfo, telemetry_item,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

use super::spike::Spike;
use crate::sources::timestamp_ms;

const DM_CHANNEL: &str = "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin";

/// Failure categories (the analyzer's taxonomy, lower snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    DeviceLimit,
    License,
    TpmAttestation,
    UnsupportedDevice,
    TenantConfig,
    AlreadyEnrolled,
    Network,
    Certificate,
    Autopilot,
    PlatformRestricted,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::DeviceLimit,
        Category::License,
        Category::TpmAttestation,
        Category::UnsupportedDevice,
        Category::TenantConfig,
        Category::AlreadyEnrolled,
        Category::Network,
        Category::Certificate,
        Category::Autopilot,
        Category::PlatformRestricted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::DeviceLimit => "device_limit",
            Category::License => "license",
            Category::TpmAttestation => "tpm_attestation",
            Category::UnsupportedDevice => "unsupported_device",
            Category::TenantConfig => "tenant_config",
            Category::AlreadyEnrolled => "already_enrolled",
            Category::Network => "network",
            Category::Certificate => "certificate",
            Category::Autopilot => "autopilot",
            Category::PlatformRestricted => "platform_restricted",
        }
    }
}

impl std::str::FromStr for Category {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let key = text.trim().to_ascii_lowercase().replace('-', "_");
        let category = match key.as_str() {
            "device_limit" | "device_cap" | "devicecap" => Category::DeviceLimit,
            "license" | "licence" => Category::License,
            "tpm" | "tpm_attestation" => Category::TpmAttestation,
            "unsupported_device" | "windows_home" | "home" => Category::UnsupportedDevice,
            "tenant_config" | "mdm_not_configured" | "mdm" => Category::TenantConfig,
            "already_enrolled" => Category::AlreadyEnrolled,
            "network" | "proxy" => Category::Network,
            "certificate" | "clock" | "clock_skew" => Category::Certificate,
            "autopilot" | "autopilot_redeploy" => Category::Autopilot,
            "platform_restricted" => Category::PlatformRestricted,
            _ => {
                let names: Vec<_> = Category::ALL.iter().map(|c| c.name()).collect();
                return Err(format!(
                    "unknown category {text:?} (one of {})",
                    names.join(", ")
                ));
            }
        };
        Ok(category)
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub domain: String,
    pub entra_tenant_id: String,
    pub device_limit: usize,
    /// Personal Windows devices blocked by a platform restriction.
    pub blocks_personal_windows: bool,
}

#[derive(Debug, Clone)]
pub struct User {
    pub upn: String,
    pub tenant: usize,
    pub licensed: bool,
    pub in_mdm_scope: bool,
    pub devices: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: String,
    pub name: String,
    pub tenant: usize,
    /// Index of the virtual agent (within the tenant) that reports for this device.
    pub agent: usize,
    pub user: Option<usize>,
    /// Position of the device among its user's devices (0-based).
    pub user_position: usize,
    pub platform: Platform,
    pub os_edition: String,
    pub os_version: String,
    pub method: EnrollmentMethod,
    /// TPM spec version: "2.0", "1.2" or "" (absent). Windows only.
    pub tpm: &'static str,
    pub redeployed: bool,
    pub stale_enrollment: bool,
    pub clock_skew_secs: i64,
}

/// A generated fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub tenants: Vec<Tenant>,
    pub users: Vec<User>,
    pub devices: Vec<Device>,
}

/// Fleet shape parameters.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub tenants: Vec<String>,
    pub devices: usize,
    pub agents_per_tenant: usize,
    pub seed: u64,
}

fn pick<'a, T>(rng: &mut StdRng, weighted: &'a [(T, u32)]) -> &'a T {
    let total: u32 = weighted.iter().map(|(_, w)| *w).sum();
    let mut roll = rng.gen_range(0..total.max(1));
    for (value, weight) in weighted {
        if roll < *weight {
            return value;
        }
        roll -= weight;
    }
    &weighted[weighted.len() - 1].0
}

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.r#gen())
        .into_uuid()
        .hyphenated()
        .to_string()
}

const FIRST: [&str; 16] = [
    "ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jo", "kofi", "lena",
    "mo", "nia", "omar", "pia",
];
const LAST: [&str; 12] = [
    "smith", "garcia", "muller", "kim", "rossi", "ng", "novak", "silva", "okafor", "berg",
    "tanaka", "dubois",
];

impl Fleet {
    /// Builds a fleet deterministically from the spec's seed.
    pub fn generate(spec: &FleetSpec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let tenants: Vec<Tenant> = spec
            .tenants
            .iter()
            .map(|name| Tenant {
                name: name.clone(),
                domain: format!(
                    "{}.example",
                    name.to_ascii_lowercase()
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "")
                ),
                entra_tenant_id: uuid(&mut rng),
                device_limit: if rng.gen_bool(0.8) { 5 } else { 15 },
                blocks_personal_windows: rng.gen_bool(0.3),
            })
            .collect();
        let mut fleet = Fleet {
            tenants,
            users: Vec::new(),
            devices: Vec::new(),
        };
        let tenant_count = fleet.tenants.len().max(1);
        for tenant in 0..fleet.tenants.len() {
            let quota =
                spec.devices / tenant_count + usize::from(tenant < spec.devices % tenant_count);
            let mut made = 0;
            while made < quota {
                // Devices per user: most own one or two, a few own many (the device-cap cases).
                let owned = *pick(
                    &mut rng,
                    &[
                        (1usize, 45),
                        (2, 28),
                        (3, 11),
                        (4, 6),
                        (5, 4),
                        (6, 3),
                        (7, 1),
                        (8, 1),
                        (10, 1),
                    ],
                );
                let owned = owned.min(quota - made);
                let user_index = fleet.users.len();
                let upn = format!(
                    "{}.{}{}@{}",
                    FIRST[rng.gen_range(0..FIRST.len())],
                    LAST[rng.gen_range(0..LAST.len())],
                    user_index,
                    fleet.tenants[tenant].domain
                );
                fleet.users.push(User {
                    upn,
                    tenant,
                    licensed: !rng.gen_bool(0.03),
                    in_mdm_scope: !rng.gen_bool(0.02),
                    devices: Vec::new(),
                });
                for position in 0..owned {
                    let index = fleet.devices.len();
                    let device = Self::device(
                        &mut rng,
                        tenant,
                        made % spec.agents_per_tenant.max(1),
                        Some(user_index),
                        position,
                        index,
                    );
                    fleet.users[user_index].devices.push(index);
                    fleet.devices.push(device);
                    made += 1;
                }
                // Some Windows devices are userless kiosks (self-deploying Autopilot).
                if made < quota && rng.gen_bool(0.05) {
                    let index = fleet.devices.len();
                    let mut device = Self::device(
                        &mut rng,
                        tenant,
                        made % spec.agents_per_tenant.max(1),
                        None,
                        0,
                        index,
                    );
                    Self::make_kiosk(&mut rng, &mut device);
                    fleet.devices.push(device);
                    made += 1;
                }
            }
        }
        fleet
    }

    fn device(
        rng: &mut StdRng,
        tenant: usize,
        agent: usize,
        user: Option<usize>,
        position: usize,
        index: usize,
    ) -> Device {
        let platform = *pick(
            rng,
            &[
                (Platform::Windows, 62),
                (Platform::Ios, 17),
                (Platform::Android, 12),
                (Platform::Macos, 6),
                (Platform::Ipados, 3),
            ],
        );
        let (os_edition, os_version, method, tpm): (
            String,
            String,
            EnrollmentMethod,
            &'static str,
        ) = match platform {
            Platform::Windows => {
                let edition = *pick(
                    rng,
                    &[
                        ("Windows 11 Pro", 45),
                        ("Windows 11 Enterprise", 25),
                        ("Windows 10 Pro", 15),
                        ("Windows 10 Enterprise", 9),
                        ("Windows 11 Home", 4),
                        ("Windows 10 Home", 2),
                    ],
                );
                let version = if edition.starts_with("Windows 11") {
                    *pick(
                        rng,
                        &[
                            ("10.0.22631.4602", 5),
                            ("10.0.26100.2605", 4),
                            ("10.0.22621.4602", 2),
                        ],
                    )
                } else {
                    *pick(rng, &[("10.0.19045.5247", 8), ("10.0.19044.5131", 2)])
                };
                let tpm = *pick(rng, &[("2.0", 91), ("1.2", 6), ("", 3)]);
                let method = *pick(
                    rng,
                    &[
                        (EnrollmentMethod::AutopilotUserDriven, 30),
                        (EnrollmentMethod::EntraJoin, 18),
                        (EnrollmentMethod::HybridJoin, 14),
                        (EnrollmentMethod::GpoAutoEnroll, 10),
                        (EnrollmentMethod::UserDrivenByod, 12),
                        (EnrollmentMethod::CoManagement, 6),
                        (EnrollmentMethod::AutopilotPreProvisioned, 4),
                        (EnrollmentMethod::BulkProvisioning, 2),
                        (EnrollmentMethod::DeviceEnrollmentManager, 4),
                    ],
                );
                (edition.to_owned(), version.to_owned(), method, tpm)
            }
            Platform::Ios | Platform::Ipados => {
                let version = *pick(
                    rng,
                    &[("17.5.1", 4), ("18.1", 5), ("18.2", 3), ("16.7.10", 1)],
                );
                let method = *pick(
                    rng,
                    &[
                        (EnrollmentMethod::AppleAde, 6),
                        (EnrollmentMethod::AppleUserEnrollment, 4),
                    ],
                );
                let edition = if platform == Platform::Ios {
                    "iOS"
                } else {
                    "iPadOS"
                };
                (edition.to_owned(), version.to_owned(), method, "")
            }
            Platform::Macos => {
                let version = *pick(rng, &[("14.7.1", 4), ("15.1.1", 5), ("13.7.1", 1)]);
                let method = *pick(
                    rng,
                    &[
                        (EnrollmentMethod::AppleAde, 7),
                        (EnrollmentMethod::AppleUserEnrollment, 3),
                    ],
                );
                ("macOS".to_owned(), version.to_owned(), method, "")
            }
            _ => {
                let version = *pick(rng, &[("14", 5), ("13", 3), ("15", 2), ("12", 1)]);
                let method = *pick(
                    rng,
                    &[
                        (EnrollmentMethod::AndroidWorkProfile, 6),
                        (EnrollmentMethod::AndroidFullyManaged, 3),
                        (EnrollmentMethod::AndroidDedicated, 1),
                    ],
                );
                ("Android".to_owned(), version.to_owned(), method, "")
            }
        };
        let name = match platform {
            Platform::Windows => format!("DESKTOP-{:06X}", rng.gen_range(0..0xFF_FFFFu32)),
            Platform::Macos => format!("MAC-{:05}", index),
            Platform::Android => format!("android-{:05}", index),
            _ => format!("iPhone-{:05}", index),
        };
        Device {
            device_id: uuid(rng),
            name,
            tenant,
            agent,
            user,
            user_position: position,
            platform,
            os_edition,
            os_version,
            method,
            tpm,
            redeployed: false,
            stale_enrollment: platform == Platform::Windows && rng.gen_bool(0.02),
            clock_skew_secs: if rng.gen_bool(0.01) {
                rng.gen_range(600..90_000)
            } else {
                0
            },
        }
    }

    fn make_kiosk(rng: &mut StdRng, device: &mut Device) {
        device.platform = Platform::Windows;
        device.os_edition = "Windows 11 Enterprise".into();
        device.os_version = "10.0.22631.4602".into();
        device.method = EnrollmentMethod::AutopilotSelfDeploying;
        // Kiosk hardware is older: TPM 1.2 or none is common there.
        device.tpm = *pick(rng, &[("2.0", 60), ("1.2", 28), ("", 12)]);
        device.redeployed = rng.gen_bool(0.15);
        device.stale_enrollment = false;
        device.name = format!("KIOSK-{:04}", rng.gen_range(0..10_000));
    }

    /// The failure the device meets on its next attempt, if its properties cause one.
    pub fn natural_cause(&self, index: usize) -> Option<Category> {
        let device = &self.devices[index];
        let tenant = &self.tenants[device.tenant];
        let user = device.user.map(|u| &self.users[u]);
        let windows = device.platform == Platform::Windows;
        let autopilot = matches!(
            device.method,
            EnrollmentMethod::AutopilotSelfDeploying
                | EnrollmentMethod::AutopilotPreProvisioned
                | EnrollmentMethod::AutopilotUserDriven
        );
        if windows && device.os_edition.ends_with("Home") {
            return Some(Category::UnsupportedDevice);
        }
        if windows
            && device.method == EnrollmentMethod::AutopilotSelfDeploying
            && device.tpm != "2.0"
        {
            return Some(Category::TpmAttestation);
        }
        if windows && device.redeployed && autopilot {
            return Some(Category::Autopilot);
        }
        if windows
            && device.method == EnrollmentMethod::UserDrivenByod
            && tenant.blocks_personal_windows
        {
            return Some(Category::PlatformRestricted);
        }
        if device.clock_skew_secs != 0 {
            return Some(Category::Certificate);
        }
        if let Some(user) = user {
            if !user.licensed {
                return Some(Category::License);
            }
            if windows && !user.in_mdm_scope {
                return Some(Category::TenantConfig);
            }
            if device.user_position >= tenant.device_limit {
                return Some(Category::DeviceLimit);
            }
        }
        if device.stale_enrollment {
            return Some(Category::AlreadyEnrolled);
        }
        None
    }

    /// Whether a spike of `category` can plausibly hit this device (its properties allow it).
    pub fn can_fail_with(&self, index: usize, category: Category) -> bool {
        let device = &self.devices[index];
        let windows = device.platform == Platform::Windows;
        match category {
            Category::DeviceLimit => {
                // Only the device that reaches the limit (or one beyond it) of a user who really
                // owns that many devices.
                let limit = self.tenants[device.tenant].device_limit;
                device
                    .user
                    .is_some_and(|u| self.users[u].devices.len() >= limit)
                    && device.user_position + 1 >= limit
            }
            Category::License => device.user.is_some(),
            Category::TpmAttestation => windows && device.tpm != "2.0",
            Category::UnsupportedDevice => windows && device.os_edition.ends_with("Home"),
            Category::TenantConfig | Category::AlreadyEnrolled => windows && device.user.is_some(),
            Category::Network | Category::Certificate => true,
            Category::Autopilot => {
                windows
                    && matches!(
                        device.method,
                        EnrollmentMethod::AutopilotSelfDeploying
                            | EnrollmentMethod::AutopilotPreProvisioned
                    )
            }
            Category::PlatformRestricted => {
                windows && device.method == EnrollmentMethod::UserDrivenByod
            }
        }
    }
}

/// One generated enrollment attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub device: usize,
    pub cause: Option<Category>,
    /// Events then (sometimes) a state snapshot; `agent_id` is left empty for the runner.
    pub items: Vec<TelemetryItem>,
}

/// The seeded traffic generator.
pub struct Generator {
    pub fleet: Fleet,
    rng: StdRng,
    spikes: Vec<Spike>,
    /// Per-category eligible devices for spikes.
    eligible: HashMap<Category, Vec<usize>>,
    /// Normal share of attempts failing with each category (for spike injection).
    baseline: HashMap<Category, f64>,
    weights: Vec<f64>,
    total_weight: f64,
    start: OffsetDateTime,
}

/// Chance that an attempt meets a transient network/proxy failure.
const NETWORK_FAILURE_RATE: f64 = 0.03;

impl Generator {
    pub fn new(fleet: Fleet, seed: u64, spikes: Vec<Spike>, start: OffsetDateTime) -> Self {
        let rng = StdRng::seed_from_u64(seed ^ 0x5eed_f1ee_7000_0001);
        // Devices that fail retry more often (the auto-enrollment task runs every 5 minutes).
        let weights: Vec<f64> = (0..fleet.devices.len())
            .map(|i| {
                if fleet.natural_cause(i).is_some() {
                    3.0
                } else {
                    1.0
                }
            })
            .collect();
        let total_weight: f64 = weights.iter().sum();
        let mut baseline: HashMap<Category, f64> = HashMap::new();
        for (i, w) in weights.iter().enumerate() {
            if let Some(cause) = fleet.natural_cause(i) {
                *baseline.entry(cause).or_default() += w / total_weight.max(1.0);
            }
        }
        *baseline.entry(Category::Network).or_default() += NETWORK_FAILURE_RATE;
        let eligible = Category::ALL
            .iter()
            .map(|c| {
                (
                    *c,
                    (0..fleet.devices.len())
                        .filter(|i| fleet.can_fail_with(*i, *c))
                        .collect(),
                )
            })
            .collect();
        Self {
            fleet,
            rng,
            spikes,
            eligible,
            baseline,
            weights,
            total_weight,
            start,
        }
    }

    /// Normal share of attempts failing with `category`.
    pub fn baseline(&self, category: Category) -> f64 {
        self.baseline.get(&category).copied().unwrap_or(0.0)
    }

    /// Categories a spike asks for but no device of the fleet can produce.
    pub fn impossible_spikes(&self) -> Vec<Category> {
        self.spikes
            .iter()
            .map(|s| s.category)
            .filter(|c| self.eligible.get(c).is_none_or(Vec::is_empty))
            .collect()
    }

    /// Generates the attempt happening at `elapsed` into the run.
    pub fn attempt(&mut self, elapsed: Duration) -> Attempt {
        let at = self.start + elapsed;
        // Spike injection: extra attempts of the spiking category so that its share becomes
        // `factor` times its baseline share.
        for spike in self.spikes.clone() {
            if !spike.active_at(elapsed) {
                continue;
            }
            let base = self.baseline(spike.category).max(0.002);
            let target = (base * spike.factor).min(0.95);
            let inject = ((target - base) / (1.0 - base)).clamp(0.0, 1.0);
            if let Some(devices) = self.eligible.get(&spike.category).filter(|d| !d.is_empty())
                && self.rng.gen_bool(inject)
            {
                let device = devices[self.rng.gen_range(0..devices.len())];
                return self.render(device, Some(spike.category), at);
            }
        }
        let device = self.pick_device();
        let cause = self.fleet.natural_cause(device).or_else(|| {
            self.rng
                .gen_bool(NETWORK_FAILURE_RATE)
                .then_some(Category::Network)
        });
        self.render(device, cause, at)
    }

    fn pick_device(&mut self) -> usize {
        let mut roll = self
            .rng
            .gen_range(0.0..self.total_weight.max(f64::MIN_POSITIVE));
        for (i, w) in self.weights.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        self.weights.len().saturating_sub(1)
    }

    fn render(&mut self, index: usize, cause: Option<Category>, at: OffsetDateTime) -> Attempt {
        let device = self.fleet.devices[index].clone();
        let tenant = self.fleet.tenants[device.tenant].clone();
        let upn = device
            .user
            .map(|u| self.fleet.users[u].upn.clone())
            .unwrap_or_default();
        let mut events = Vec::new();
        let mut event = |rng: &mut StdRng,
                         stage: EnrollmentStage,
                         outcome: Outcome,
                         error: Option<ReportedError>,
                         source: Source,
                         offset_ms: i64,
                         extra: &[(&str, String)]| {
            let mut attributes: HashMap<String, String> = HashMap::new();
            attributes.insert("simulated".into(), "true".into());
            attributes.insert(
                "sim_cause".into(),
                cause.map_or("none", Category::name).into(),
            );
            attributes.insert("correlation_id".into(), uuid(rng));
            for (k, v) in extra {
                attributes.insert((*k).to_owned(), v.clone());
            }
            events.push(EnrollmentEvent {
                event_id: uuid(rng),
                agent_id: String::new(),
                device_id: device.device_id.clone(),
                occurred_at: Some(timestamp_ms(at + time::Duration::milliseconds(offset_ms))),
                platform: device.platform as i32,
                os_edition: device.os_edition.clone(),
                os_version: device.os_version.clone(),
                enrollment_method: device.method as i32,
                stage: stage as i32,
                outcome: outcome as i32,
                error,
                source: Some(source),
                user_principal_name: if device.method == EnrollmentMethod::AutopilotSelfDeploying {
                    String::new()
                } else {
                    upn.clone()
                },
                attributes,
            });
        };
        let rng = &mut self.rng;
        let event_log = |id: u32, record: u64| Source {
            kind: SourceKind::EventLog as i32,
            channel: DM_CHANNEL.into(),
            event_id: id,
            record_id: record,
        };
        let dsreg = || Source {
            kind: SourceKind::Dsregcmd as i32,
            channel: String::new(),
            event_id: 0,
            record_id: 0,
        };
        let api = || Source {
            kind: SourceKind::Api as i32,
            channel: String::new(),
            event_id: 0,
            record_id: 0,
        };
        let profiles = || Source {
            kind: SourceKind::MacosProfiles as i32,
            channel: String::new(),
            event_id: 0,
            record_id: 0,
        };
        let record = rng.gen_range(1_000..900_000u64);
        let err = |code: Option<u32>, symbol: &str, message: String| {
            Some(crate::sources::reported_error(code, symbol, &message))
        };
        let windows = device.platform == Platform::Windows;
        let apple = matches!(
            device.platform,
            Platform::Ios | Platform::Ipados | Platform::Macos
        );
        let mobile_source = if device.platform == Platform::Macos {
            profiles()
        } else {
            api()
        };
        let fault52 = |subcode: &str, reason: &str| {
            format!(
                "MDM Enroll: Server Returned Fault/Code/Subcode/Value=({subcode}) Fault/Reason/Text=({reason})"
            )
        };
        let failed76 =
            |code: u32| format!("Auto MDM Enroll: Failed (Unknown Win32 Error code: {code:#010x})");
        use Category as C;
        use EnrollmentStage as S;
        match (cause, windows) {
            (None, true) => event(rng, S::Complete, Outcome::Succeeded, None, event_log(75, record), 0, &[]),
            (None, false) => event(rng, S::Complete, Outcome::Succeeded, None, mobile_source.clone(), 0, &[]),
            (Some(C::DeviceLimit), true) => {
                event(rng, S::Authorization, Outcome::Failed, err(Some(0x8018_0013), "DeviceCapReached", fault52("DeviceCapReached", "device cap reached")), event_log(52, record), 0, &[]);
                event(rng, S::Complete, Outcome::Failed, err(Some(0x8018_0013), "MENROLL_E_DEVICECAPREACHED", failed76(0x8018_0013)), event_log(76, record + 1), 40, &[]);
            }
            (Some(C::DeviceLimit), false) => event(rng, S::Authorization, Outcome::Failed, err(None, "DeviceCapReached", "Too many mobile devices enrolled. Remove a device in Company Portal or raise the device limit.".into()), mobile_source.clone(), 0, &[("failure_category", "enrollmentRestrictionsEnforced".into())]),
            (Some(C::License), true) => {
                event(rng, S::Authorization, Outcome::Failed, err(Some(0x8018_0018), "UserLicense", fault52("UserLicense", "There was an error with your Mobile Device Management (MDM) user license.")), event_log(52, record), 0, &[]);
                event(rng, S::Complete, Outcome::Failed, err(Some(0x8018_0018), "MENROLL_E_USERLICENSE", failed76(0x8018_0018)), event_log(76, record + 1), 40, &[]);
            }
            (Some(C::License), false) => event(rng, S::Authorization, Outcome::Failed, err(None, "UserLicenseTypeInvalid", "User Name Not Recognized. This user account is not authorized to use Microsoft Intune.".into()), mobile_source.clone(), 0, &[("failure_category", "userValidation".into())]),
            (Some(C::TpmAttestation), _) => {
                if device.tpm.is_empty() || rng.gen_bool(0.5) {
                    event(rng, S::CertificateRequest, Outcome::Failed, err(Some(0x8007_05b4), "ERROR_TIMEOUT", "Securing your hardware (Failed: 0x800705b4)".into()), event_log(76, record), 0, &[("esp_phase", "DevicePreparation".into())]);
                } else {
                    event(rng, S::DeviceRegistration, Outcome::Failed, err(Some(0x801c_03ea), "", "Registering your device for mobile management (Failed: 3, 0x801C03EA)".into()), event_log(76, record), 0, &[("esp_phase", "DevicePreparation".into())]);
                }
            }
            (Some(C::UnsupportedDevice), _) => {
                if matches!(device.method, EnrollmentMethod::AutopilotUserDriven | EnrollmentMethod::AutopilotPreProvisioned | EnrollmentMethod::AutopilotSelfDeploying) {
                    event(rng, S::DmClientProvisioning, Outcome::Failed, err(Some(0x8018_0022), "MENROLL_E_PROV_CSP_MISC", "Autopilot device enrollment failed with error HRESULT = 0x80180022".into()), event_log(76, record), 0, &[]);
                } else {
                    event(rng, S::DeviceRegistration, Outcome::Failed, err(Some(0x801c_0003), "DSREG_E_DEVICE_AUTHORIZATION_ERROR", "This user isn't authorized to enroll. You can try to do this again or contact your system administrator with the error code 0x801c0003.".into()), dsreg(), 0, &[("error_phase", "join".into())]);
                }
            }
            (Some(C::TenantConfig), _) => {
                if matches!(device.method, EnrollmentMethod::GpoAutoEnroll | EnrollmentMethod::HybridJoin | EnrollmentMethod::CoManagement) {
                    event(rng, S::Complete, Outcome::Failed, err(Some(0x8018_002b), "", failed76(0x8018_002b)), event_log(76, record), 0, &[]);
                } else {
                    event(rng, S::Discovery, Outcome::Failed, err(Some(0x8018_0031), "MENROLL_E_MDM_NOT_CONFIGURED", "Mobile Device Management (MDM) is not configured.".into()), dsreg(), 0, &[("mdm_url", String::new())]);
                }
            }
            (Some(C::AlreadyEnrolled), _) => event(rng, S::Complete, Outcome::Failed, err(Some(0x8018_000a), "MENROLL_E_DEVICE_ALREADY_ENROLLED", "Something went wrong. The device is already enrolled.".into()), event_log(76, record), 0, &[]),
            (Some(C::Certificate), true) => event(rng, S::Discovery, Outcome::Failed, err(Some(0x8018_000d), "MENROLL_E_DISCOVERY_SEC_CERT_DATE_INVALID", failed76(0x8018_000d)), event_log(76, record), 0, &[("clock_skew_seconds", device.clock_skew_secs.max(600).to_string())]),
            (Some(C::Certificate), false) => event(rng, S::Authentication, Outcome::Failed, err(Some(0xcaa8_2f8f), "ERROR_ADAL_INTERNET_SECURE_FAILURE", "TLS certificate could not be validated (check device time)".into()), mobile_source.clone(), 0, &[("clock_skew_seconds", device.clock_skew_secs.max(600).to_string())]),
            (Some(C::Network), true) => {
                if matches!(device.method, EnrollmentMethod::HybridJoin | EnrollmentMethod::GpoAutoEnroll | EnrollmentMethod::CoManagement) {
                    event(rng, S::Discovery, Outcome::Failed, err(Some(0x801c_0021), "DSREG_AUTOJOIN_DISC_FAILED", "DRS Discovery Test : FAIL [0x801c0021/0x80072ee2]".into()), dsreg(), 0, &[("error_phase", "discover".into()), ("suberror", "0x80072ee2".into())]);
                } else {
                    event(rng, S::Discovery, Outcome::Failed, err(Some(0x8018_0010), "MENROLL_E_CONNECTIVITY", failed76(0x8018_0010)), event_log(76, record), 0, &[]);
                }
            }
            (Some(C::Network), false) => {
                if apple {
                    event(rng, S::ProfileInstall, Outcome::Failed, err(None, "XPC_TYPE_ERROR", "XPC_TYPE_ERROR Connection invalid".into()), mobile_source.clone(), 0, &[("failure_category", "clientDisconnected".into())]);
                } else {
                    event(rng, S::ProfileInstall, Outcome::Failed, err(None, "clientDisconnected", "Client timed out or enrollment was aborted by enduser.".into()), mobile_source.clone(), 0, &[("failure_category", "clientDisconnected".into())]);
                }
            }
            (Some(C::Autopilot), _) => {
                event(rng, S::Authorization, Outcome::Failed, err(Some(0x8018_0014), "DeviceNotSupported", fault52("DeviceNotSupported", "Enrollment blocked for AP device by SDM One Time Limit Check")), event_log(52, record), 0, &[]);
                event(rng, S::Complete, Outcome::Failed, err(Some(0x8018_0014), "MENROLL_E_DEVICENOTSUPPORTED", failed76(0x8018_0014)), event_log(76, record + 1), 40, &[]);
            }
            (Some(C::PlatformRestricted), _) => event(rng, S::Authorization, Outcome::Failed, err(Some(0x8018_0014), "MENROLL_E_DEVICENOTSUPPORTED", "There was a problem. Your organization does not support this version of Windows.".into()), event_log(76, record), 0, &[]),
        }

        let mut items: Vec<TelemetryItem> = events
            .into_iter()
            .map(|e| TelemetryItem {
                kind: Some(telemetry_item::Kind::Event(e)),
            })
            .collect();
        if self.rng.gen_bool(0.35) {
            items.push(self.state(index, cause, at, &tenant, &upn));
        }
        let mut attempt = Attempt {
            device: index,
            cause,
            items,
        };
        link_state_error(&mut attempt);
        attempt
    }

    /// A snapshot agreeing with the attempt's outcome.
    fn state(
        &mut self,
        index: usize,
        cause: Option<Category>,
        at: OffsetDateTime,
        tenant: &Tenant,
        upn: &str,
    ) -> TelemetryItem {
        let device = &self.fleet.devices[index];
        let windows = device.platform == Platform::Windows;
        let join_state = if !windows {
            JoinState::Unspecified
        } else if cause == Some(Category::UnsupportedDevice)
            && !matches!(device.method, EnrollmentMethod::AutopilotUserDriven)
        {
            JoinState::NotJoined
        } else {
            match device.method {
                EnrollmentMethod::HybridJoin
                | EnrollmentMethod::GpoAutoEnroll
                | EnrollmentMethod::CoManagement => JoinState::HybridJoined,
                EnrollmentMethod::UserDrivenByod => JoinState::WorkplaceRegistered,
                _ => JoinState::EntraJoined,
            }
        };
        let mdm_url = if cause == Some(Category::TenantConfig) {
            String::new()
        } else {
            "https://enrollment.manage.microsoft.com/enrollmentserver/discovery.svc".to_owned()
        };
        let license_state = match (device.user, cause) {
            (None, _) => LicenseState::Unspecified,
            (Some(_), Some(Category::License)) => LicenseState::Unlicensed,
            (Some(_), _) => LicenseState::Licensed,
        };
        let mut attributes = HashMap::new();
        attributes.insert("simulated".to_owned(), "true".to_owned());
        if device.clock_skew_secs != 0 || cause == Some(Category::Certificate) {
            attributes.insert(
                "clock_skew_seconds".to_owned(),
                device.clock_skew_secs.max(600).to_string(),
            );
        }
        if let Some(user) = device.user {
            attributes.insert(
                "user_device_count".to_owned(),
                self.fleet.users[user].devices.len().to_string(),
            );
        }
        attributes.insert("device_limit".to_owned(), tenant.device_limit.to_string());
        let (outcome, error) = match cause {
            None => (Outcome::Succeeded, None),
            Some(_) => (Outcome::Failed, None),
        };
        TelemetryItem {
            kind: Some(telemetry_item::Kind::State(DeviceState {
                agent_id: String::new(),
                device_id: device.device_id.clone(),
                captured_at: Some(timestamp_ms(at + time::Duration::milliseconds(500))),
                platform: device.platform as i32,
                os_edition: device.os_edition.clone(),
                os_version: device.os_version.clone(),
                join_state: join_state as i32,
                mdm_enrolled: cause.is_none(),
                mdm_url: if windows { mdm_url } else { String::new() },
                entra_tenant_id: tenant.entra_tenant_id.clone(),
                tpm: windows.then(|| TpmInfo {
                    present: !device.tpm.is_empty(),
                    spec_version: device.tpm.to_owned(),
                    ready: !device.tpm.is_empty(),
                    manufacturer: if device.tpm.is_empty() {
                        String::new()
                    } else {
                        "INTC".to_owned()
                    },
                }),
                primary_user_upn: upn.to_owned(),
                last_enrollment_attempt_at: Some(timestamp_ms(at)),
                last_enrollment_outcome: outcome as i32,
                last_enrollment_error: error,
                license_state: license_state as i32,
                enrollment_method: device.method as i32,
                device_name: device.name.clone(),
                attributes,
            })),
        }
    }
}

/// Copies the attempt's failure into its state snapshot's `last_enrollment_error`.
fn link_state_error(attempt: &mut Attempt) {
    let last_error = attempt
        .items
        .iter()
        .rev()
        .find_map(|item| match &item.kind {
            Some(telemetry_item::Kind::Event(e)) if e.outcome == Outcome::Failed as i32 => {
                e.error.clone()
            }
            _ => None,
        });
    for item in &mut attempt.items {
        if let Some(telemetry_item::Kind::State(state)) = &mut item.kind {
            state.last_enrollment_error = last_error.clone();
        }
    }
}

#[cfg(test)]
mod tests;
