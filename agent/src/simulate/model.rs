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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentMethod, EnrollmentStage, JoinState, LicenseState,
    Outcome, Platform, ReportedError, Source, SourceKind, TelemetryItem, TpmInfo, telemetry_item,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

use super::profile::{self, ModelConfig};
use super::rhythm;
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
    /// Position on the run's timeline.
    pub at: Duration,
    /// 1 for a session's first attempt, then 2, 3, ... for its retries.
    pub number: u32,
    /// Events then (sometimes) a state snapshot; `agent_id` is left empty for the runner.
    pub items: Vec<TelemetryItem>,
}

/// Outcomes of enrollment sessions so far: what the model produces, not what it is told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyStats {
    /// Sessions started (a device setting out to enroll).
    pub sessions: u64,
    /// Sessions whose first attempt succeeded.
    pub first_time_right: u64,
    /// Sessions that ended enrolled (first attempt or a retry).
    pub enrolled: u64,
    /// Sessions that gave up (cause never fixed).
    pub gave_up: u64,
    /// Time from the first attempt to success, in seconds, of sessions that needed retries.
    pub time_to_enroll_secs: Vec<u32>,
}

impl JourneyStats {
    /// Median time to enroll of the sessions that needed retries.
    pub fn median_time_to_enroll(&self) -> Option<Duration> {
        let mut sorted = self.time_to_enroll_secs.clone();
        sorted.sort_unstable();
        sorted
            .get(sorted.len() / 2)
            .map(|s| Duration::from_secs(u64::from(*s)))
    }
}

/// A session that failed and will try again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Journey {
    device: usize,
    cause: Category,
    started: Duration,
    attempts: u32,
    /// When the cause is fixed; `None`: never (the device gives up after its quick retries).
    fixed_at: Option<Duration>,
    /// Retries left before waiting for the fix.
    quick_left: u32,
}

/// A pending retry, ordered by time then by creation (deterministic).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    at: Duration,
    seq: u64,
    journey: Journey,
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Per-tenant lookup tables: devices in the order they joined the fleet, and which of them
/// each failure category can plausibly hit.
#[derive(Debug, Clone)]
struct TenantTables {
    devices: Vec<usize>,
    /// Positions (into `devices`) of devices with no blocking property.
    clean: Vec<usize>,
    /// Positions of devices whose properties produce each category.
    eligible: HashMap<Category, Vec<usize>>,
    rates: Vec<(Category, f64)>,
    utc_offset: i8,
    share: f64,
}

/// The seeded traffic generator: enrollment sessions arrive as a Poisson process whose
/// intensity follows the tenants' working week, waves and the fleet's growth; a session fails
/// with its tenant's per-category probabilities (times any active spike) on a device whose
/// properties explain the failure; failed sessions retry until the cause is fixed or give up.
pub struct Generator {
    pub fleet: Fleet,
    rng: StdRng,
    spikes: Vec<Spike>,
    config: ModelConfig,
    seed: u64,
    start: OffsetDateTime,
    /// The run's "now" (end of the backfill): the fleet has its full size there.
    now: OffsetDateTime,
    /// New sessions per second, averaged over a week.
    rate: f64,
    tenants: Vec<TenantTables>,
    session_clock: Duration,
    next_session: Option<Duration>,
    retries: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    pub stats: JourneyStats,
}

/// Most attempts of one session.
const MAX_ATTEMPTS: u32 = 8;

impl Generator {
    /// A generator of `rate` new sessions per second (weekly average) from `start`; `now` is
    /// the position where the fleet has its full size (the end of the backfill).
    pub fn new(
        fleet: Fleet,
        seed: u64,
        spikes: Vec<Spike>,
        start: OffsetDateTime,
        now: Duration,
        rate: f64,
        config: ModelConfig,
    ) -> Self {
        let rng = StdRng::seed_from_u64(seed ^ 0x5eed_f1ee_7000_0001);
        let total_devices = fleet.devices.len().max(1) as f64;
        let tenants = (0..fleet.tenants.len())
            .map(|t| {
                let devices: Vec<usize> = (0..fleet.devices.len())
                    .filter(|d| fleet.devices[*d].tenant == t)
                    .collect();
                let clean = (0..devices.len())
                    .filter(|p| fleet.natural_cause(devices[*p]).is_none())
                    .collect();
                let eligible = Category::ALL
                    .iter()
                    .map(|c| {
                        let natural: Vec<usize> = (0..devices.len())
                            .filter(|p| {
                                *c == Category::Network
                                    || fleet.natural_cause(devices[*p]) == Some(*c)
                            })
                            .collect();
                        let positions = if natural.is_empty() {
                            (0..devices.len())
                                .filter(|p| fleet.can_fail_with(devices[*p], *c))
                                .collect()
                        } else {
                            natural
                        };
                        (*c, positions)
                    })
                    .collect();
                TenantTables {
                    share: devices.len() as f64 / total_devices,
                    devices,
                    clean,
                    eligible,
                    rates: config.category_rates(t),
                    utc_offset: config.utc_offset(t),
                }
            })
            .collect();
        Self {
            fleet,
            rng,
            spikes,
            seed,
            start,
            now: start + now,
            rate,
            tenants,
            config,
            session_clock: Duration::ZERO,
            next_session: None,
            retries: BinaryHeap::new(),
            seq: 0,
            stats: JourneyStats::default(),
        }
    }

    /// Normal probability that a first attempt in tenant `tenant` fails with `category`.
    pub fn baseline(&self, tenant: usize, category: Category) -> f64 {
        self.tenants
            .get(tenant)
            .and_then(|t| t.rates.iter().find(|(c, _)| *c == category))
            .map_or(0.0, |(_, r)| *r)
    }

    /// Categories a spike asks for but no device of the fleet can produce.
    pub fn impossible_spikes(&self) -> Vec<Category> {
        self.spikes
            .iter()
            .map(|s| s.category)
            .filter(|c| {
                self.tenants
                    .iter()
                    .all(|t| t.eligible.get(c).is_none_or(Vec::is_empty))
            })
            .collect()
    }

    /// Session intensity of tenant `t` at `at`, in sessions per second.
    fn intensity(&self, t: usize, at: OffsetDateTime) -> f64 {
        let tables = &self.tenants[t];
        let mut lambda = self.rate * tables.share;
        if self.config.seasonality {
            lambda *= rhythm::season(at, tables.utc_offset);
        }
        if self.config.waves {
            lambda *= rhythm::wave(self.seed, t, at, tables.utc_offset);
        }
        lambda * rhythm::growth(at, self.now, self.config.monthly_growth).min(1.0)
    }

    /// Position of the next new session (drawn hour by hour: the intensity is constant
    /// within a UTC hour, so each gap is an exact exponential draw).
    fn next_session_at(&mut self) -> Duration {
        if let Some(at) = self.next_session {
            return at;
        }
        let mut t = self.session_clock;
        loop {
            let abs = self.start + t;
            let into_hour = u64::try_from(abs.unix_timestamp().rem_euclid(3600)).unwrap_or(0);
            let hour_end = t + Duration::from_secs(3600 - into_hour)
                - Duration::from_nanos(u64::from(abs.nanosecond()));
            let lambda: f64 = (0..self.tenants.len())
                .map(|k| self.intensity(k, abs))
                .sum();
            if lambda > 0.0 {
                let u: f64 = self.rng.r#gen();
                let gap = Duration::from_secs_f64(-(1.0 - u).ln() / lambda);
                if t + gap < hour_end {
                    t += gap;
                    break;
                }
            }
            t = hour_end;
        }
        self.session_clock = t;
        self.next_session = Some(t);
        t
    }

    /// Position of the next attempt (new session or retry).
    pub fn peek(&mut self) -> Duration {
        let session = self.next_session_at();
        match self.retries.peek() {
            Some(Reverse(p)) if p.at <= session => p.at,
            _ => session,
        }
    }

    /// The next attempt, in time order.
    pub fn next_attempt(&mut self) -> Attempt {
        let session = self.next_session_at();
        let retry_first = matches!(self.retries.peek(), Some(Reverse(p)) if p.at <= session);
        if retry_first && let Some(Reverse(pending)) = self.retries.pop() {
            return self.retry(pending.journey, pending.at);
        }
        self.next_session = None;
        self.session(session)
    }

    fn spike_factor(&self, category: Category, at: Duration) -> f64 {
        self.spikes
            .iter()
            .filter(|s| s.category == category && s.active_at(at))
            .map(|s| s.factor)
            .fold(1.0, f64::max)
    }

    fn session(&mut self, at: Duration) -> Attempt {
        let abs = self.start + at;
        let weights: Vec<f64> = (0..self.tenants.len())
            .map(|k| self.intensity(k, abs))
            .collect();
        let tenant = pick_weighted(&mut self.rng, &weights);
        let rates: Vec<(Category, f64)> = self.tenants[tenant]
            .rates
            .iter()
            .map(|(c, r)| (*c, r * self.spike_factor(*c, at)))
            .collect();
        let total: f64 = rates.iter().map(|(_, r)| r).sum();
        let scale = if total > 0.95 { 0.95 / total } else { 1.0 };
        let mut roll: f64 = self.rng.r#gen();
        let mut cause = None;
        for (category, rate) in &rates {
            let rate = rate * scale;
            if roll < rate {
                cause = Some(*category);
                break;
            }
            roll -= rate;
        }
        self.stats.sessions += 1;
        let existing = self.existing(tenant, abs);
        let device = match cause {
            Some(category) => self.pick_position(tenant, Some(category), existing),
            None => None,
        };
        let (device, cause) = match (device, cause) {
            (Some(device), cause) => (device, cause),
            (None, _) => match self.pick_position(tenant, None, existing) {
                Some(device) => (device, None),
                None => (self.pick_any(tenant, existing), None),
            },
        };
        match cause {
            None => {
                self.stats.first_time_right += 1;
                self.stats.enrolled += 1;
            }
            Some(category) => {
                let journey = self.open_journey(device, category, at);
                self.schedule(journey, at);
            }
        }
        self.attempt(device, cause, at, 1)
    }

    /// How many of tenant's devices (in join order) exist at `at`.
    fn existing(&self, tenant: usize, at: OffsetDateTime) -> usize {
        let total = self.tenants[tenant].devices.len();
        let fraction = rhythm::growth(at, self.now, self.config.monthly_growth).min(1.0);
        ((total as f64 * fraction).ceil() as usize).clamp(1.min(total), total)
    }

    /// A device of `tenant` among the first `existing`: one whose properties produce
    /// `category`, or a clean one for a success.
    fn pick_position(
        &mut self,
        tenant: usize,
        category: Option<Category>,
        existing: usize,
    ) -> Option<usize> {
        let tables = &self.tenants[tenant];
        let positions = match category {
            Some(c) => tables.eligible.get(&c)?,
            None => &tables.clean,
        };
        let available = positions.partition_point(|p| *p < existing);
        let chosen = if available > 0 {
            positions[self.rng.gen_range(0..available)]
        } else if !positions.is_empty() {
            // The fleet was too small then for such a device: take a later one.
            positions[self.rng.gen_range(0..positions.len())]
        } else {
            return None;
        };
        Some(tables.devices[chosen])
    }

    fn pick_any(&mut self, tenant: usize, existing: usize) -> usize {
        let tables = &self.tenants[tenant];
        tables.devices[self
            .rng
            .gen_range(0..existing.clamp(1, tables.devices.len()))]
    }

    /// A failed session: when (if ever) its cause gets fixed, and how many quick retries the
    /// user or the enrollment task makes meanwhile.
    fn open_journey(&mut self, device: usize, cause: Category, at: Duration) -> Journey {
        let tenant = self.fleet.devices[device].tenant;
        let utc_offset = self.tenants[tenant].utc_offset;
        // A spike is an outage: its failures are fixed when it ends (a bounded spike), in
        // proportion to its share of the category's failures.
        let spike_end = self
            .spikes
            .iter()
            .filter(|s| s.category == cause && s.active_at(at))
            .filter_map(|s| s.duration.map(|d| (s.start + d, s.factor)))
            .next();
        let from_spike =
            spike_end.filter(|(_, f)| self.rng.gen_bool((1.0 - 1.0 / f).clamp(0.0, 1.0)));
        let fixed_at = if let Some((end, _)) = from_spike {
            Some(end)
        } else {
            let model = profile::resolution(cause);
            if self.rng.gen_bool(model.fixed) {
                let hours = lognormal(&mut self.rng, model.median_hours, 1.0);
                let mut fix = self.start + at + time::Duration::seconds_f64(hours * 3600.0);
                if model.by_admin {
                    fix = rhythm::next_business_time(fix, utc_offset);
                }
                Some(Duration::try_from(fix - self.start).unwrap_or(at))
            } else {
                None
            }
        };
        // Auto-enrollment (GPO, hybrid, co-management) retries from a scheduled task every 5
        // minutes (for a day; modelled as 1-3 retries, see docs/simulator.md); people retry by
        // hand at most once before they open a ticket and wait for the fix.
        let scheduled = matches!(
            self.fleet.devices[device].method,
            EnrollmentMethod::GpoAutoEnroll
                | EnrollmentMethod::HybridJoin
                | EnrollmentMethod::CoManagement
        );
        let quick_left = if scheduled {
            self.rng.gen_range(1..=3)
        } else {
            self.rng.gen_range(0..=1)
        };
        Journey {
            device,
            cause,
            started: at,
            attempts: 1,
            fixed_at,
            quick_left,
        }
    }

    /// Schedules the journey's next attempt after a failure at `at`, or ends it.
    fn schedule(&mut self, mut journey: Journey, at: Duration) {
        if journey.attempts >= MAX_ATTEMPTS {
            self.stats.gave_up += 1;
            return;
        }
        let device = &self.fleet.devices[journey.device];
        let scheduled = matches!(
            device.method,
            EnrollmentMethod::GpoAutoEnroll
                | EnrollmentMethod::HybridJoin
                | EnrollmentMethod::CoManagement
        );
        let next = if journey.quick_left > 0 {
            journey.quick_left -= 1;
            let minutes = if scheduled {
                5.0 + self.rng.gen_range(0.0..0.5)
            } else {
                lognormal(&mut self.rng, 6.0, 0.7)
            };
            at + Duration::from_secs_f64(minutes * 60.0)
        } else if let Some(fixed) = journey.fixed_at {
            // Told the fix is in, the user tries again within the hour or so (during their
            // working hours).
            let reaction = lognormal(&mut self.rng, 40.0, 0.8);
            let tenant = self.tenants[device.tenant].utc_offset;
            let when = self.start + fixed.max(at) + time::Duration::seconds_f64(reaction * 60.0);
            let when = rhythm::next_business_time(when, tenant);
            Duration::try_from(when - self.start).unwrap_or(at)
        } else {
            self.stats.gave_up += 1;
            return;
        };
        self.seq += 1;
        self.retries.push(Reverse(Pending {
            at: next,
            seq: self.seq,
            journey,
        }));
    }

    fn retry(&mut self, mut journey: Journey, at: Duration) -> Attempt {
        journey.attempts += 1;
        let number = journey.attempts;
        let device = journey.device;
        if journey.fixed_at.is_some_and(|f| f <= at) {
            self.stats.enrolled += 1;
            let secs = (at.saturating_sub(journey.started)).as_secs();
            self.stats
                .time_to_enroll_secs
                .push(u32::try_from(secs).unwrap_or(u32::MAX));
            return self.attempt(device, None, at, number);
        }
        let cause = journey.cause;
        self.schedule(journey, at);
        self.attempt(device, Some(cause), at, number)
    }

    fn attempt(
        &mut self,
        device: usize,
        cause: Option<Category>,
        at: Duration,
        number: u32,
    ) -> Attempt {
        let mut attempt = self.render(device, cause, self.start + at);
        attempt.at = at;
        attempt.number = number;
        for item in &mut attempt.items {
            if let Some(telemetry_item::Kind::Event(event)) = &mut item.kind {
                event
                    .attributes
                    .insert("sim_attempt".to_owned(), number.to_string());
            }
        }
        attempt
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
            at: Duration::ZERO,
            number: 1,
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

/// Index drawn with probability proportional to `weights` (all zero: the first).
fn pick_weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut roll = rng.gen_range(0.0..total);
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    weights.len().saturating_sub(1)
}

/// A log-normal draw with the given median and shape `sigma` (Box-Muller).
fn lognormal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.r#gen();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
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
