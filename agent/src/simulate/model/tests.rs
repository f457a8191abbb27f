use super::*;
use crate::simulate::profile::ModelConfig;

fn spec(devices: usize, seed: u64) -> FleetSpec {
    FleetSpec {
        tenants: vec!["contoso".into(), "fabrikam".into()],
        devices,
        agents_per_tenant: 2,
        seed,
    }
}

fn start() -> OffsetDateTime {
    // A Monday, midnight UTC.
    time::macros::datetime!(2025-01-06 00:00:00 UTC)
}

/// A generator of `rate` sessions/s over a fortnight of history starting on a Monday.
fn generator(devices: usize, seed: u64, spikes: Vec<Spike>, rate: f64) -> Generator {
    generator_with(devices, seed, spikes, rate, ModelConfig::default())
}

fn generator_with(
    devices: usize,
    seed: u64,
    spikes: Vec<Spike>,
    rate: f64,
    config: ModelConfig,
) -> Generator {
    Generator::new(
        Fleet::generate(&spec(devices, seed)),
        seed,
        spikes,
        start(),
        Duration::from_secs(14 * 86_400),
        rate,
        config,
    )
}

fn events(attempt: &Attempt) -> Vec<&EnrollmentEvent> {
    attempt
        .items
        .iter()
        .filter_map(|i| match &i.kind {
            Some(telemetry_item::Kind::Event(e)) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn same_seed_same_fleet_and_traffic() {
    let run = |seed| {
        let mut generator = generator(300, seed, vec![], 1.0);
        (0..200)
            .flat_map(|_| generator.next_attempt().items)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn fleet_has_the_requested_size_and_a_realistic_platform_mix() {
    let fleet = Fleet::generate(&spec(4001, 3));
    assert_eq!(fleet.devices.len(), 4001);
    assert_eq!(fleet.devices.iter().filter(|d| d.tenant == 0).count(), 2001);
    let count = |p: Platform| fleet.devices.iter().filter(|d| d.platform == p).count();
    let (windows, ios, android, macos) = (
        count(Platform::Windows),
        count(Platform::Ios),
        count(Platform::Android),
        count(Platform::Macos),
    );
    assert!(
        windows > ios && ios > android && android > macos,
        "{windows} {ios} {android} {macos}"
    );
    assert!((2200..2900).contains(&windows), "{windows}");
    // Every device of a user is listed under that user, at its position.
    for (u, user) in fleet.users.iter().enumerate() {
        for (position, d) in user.devices.iter().enumerate() {
            assert_eq!(fleet.devices[*d].user, Some(u));
            assert_eq!(fleet.devices[*d].user_position, position);
            assert_eq!(fleet.devices[*d].tenant, user.tenant);
        }
    }
}

#[test]
fn failures_agree_with_device_user_and_tenant_facts() {
    let mut generator = generator(3000, 11, vec![], 1.0);
    let mut seen: HashMap<Category, usize> = HashMap::new();
    let mut last = Duration::ZERO;
    for _ in 0..20_000u64 {
        let attempt = generator.next_attempt();
        assert!(attempt.at >= last, "attempts in time order");
        last = attempt.at;
        let device = generator.fleet.devices[attempt.device].clone();
        let user = device.user.map(|u| generator.fleet.users[u].clone());
        let tenant = generator.fleet.tenants[device.tenant].clone();
        if let Some(cause) = attempt.cause {
            *seen.entry(cause).or_default() += 1;
        }
        for event in events(&attempt) {
            assert_eq!(event.device_id, device.device_id);
            assert_eq!(
                event.attributes["sim_cause"],
                attempt.cause.map_or("none", Category::name)
            );
            let code = event.error.as_ref().filter(|e| e.has_code).map(|e| e.code);
            match code {
                Some(0x8018_0013) => {
                    let user = user.as_ref().expect("device-cap failure without a user");
                    assert!(
                        user.devices.len() > tenant.device_limit,
                        "user owns {} devices",
                        user.devices.len()
                    );
                    assert!(device.user_position >= tenant.device_limit);
                }
                Some(0x8018_0022) => {
                    assert!(device.os_edition.ends_with("Home"), "{}", device.os_edition);
                }
                Some(0x8007_05b4) | Some(0x801c_03ea) => {
                    assert_ne!(device.tpm, "2.0");
                    assert_eq!(device.method, EnrollmentMethod::AutopilotSelfDeploying);
                }
                Some(0x8018_0018) => assert!(!user.as_ref().unwrap().licensed),
                _ => {}
            }
            if event
                .error
                .as_ref()
                .is_some_and(|e| e.symbol == "DeviceCapReached")
            {
                assert!(user.as_ref().unwrap().devices.len() > tenant.device_limit);
            }
        }
        for item in &attempt.items {
            if let Some(telemetry_item::Kind::State(state)) = &item.kind {
                assert_eq!(state.device_id, device.device_id);
                assert_eq!(state.mdm_enrolled, attempt.cause.is_none());
                assert_eq!(
                    state.license_state == LicenseState::Unlicensed as i32,
                    attempt.cause == Some(Category::License)
                );
                assert_eq!(
                    state.last_enrollment_error.is_some(),
                    attempt.cause.is_some()
                );
                if device.platform == Platform::Windows {
                    let tpm = state.tpm.as_ref().unwrap();
                    assert_eq!(tpm.spec_version, device.tpm);
                    assert_eq!(
                        state.mdm_url.is_empty(),
                        attempt.cause == Some(Category::TenantConfig)
                    );
                }
            }
        }
    }
    // A 3000-device fleet shows the common failure causes (device-cap failures, rarer and
    // absent from tenants with a limit of 15, are checked by the next test).
    for category in [
        Category::License,
        Category::Network,
        Category::UnsupportedDevice,
        Category::TpmAttestation,
    ] {
        assert!(
            seen.get(&category).copied().unwrap_or(0) > 0,
            "no {category:?} in {seen:?}"
        );
    }
    // These first hours (Sunday night in tenant 0, Monday morning in tenant 1) are mostly the
    // misconfigured tenant: ~21 % of its first attempts fail, retries of unresolved causes
    // add failures. The week-long figure is checked below.
    let failures: usize = seen.values().sum();
    let share = failures as f64 / 20_000.0;
    assert!((0.1..0.35).contains(&share), "failure share {share}");
}

#[test]
fn windows_server_faults_are_event_52_then_76() {
    let mut generator = generator(3000, 11, vec![], 1.0);
    let windows: Vec<bool> = generator
        .fleet
        .devices
        .iter()
        .map(|d| d.platform == Platform::Windows)
        .collect();
    let attempt = (0..200_000u64)
        .map(|_| generator.next_attempt())
        .find(|a| a.cause == Some(Category::DeviceLimit) && windows[a.device])
        .expect("a Windows device-cap failure");
    let events = events(&attempt);
    assert_eq!(events.len(), 2);
    let source = events[0].source.as_ref().unwrap();
    assert_eq!(
        (source.kind, source.event_id),
        (SourceKind::EventLog as i32, 52)
    );
    assert_eq!(
        events[0].error.as_ref().unwrap().message,
        "MDM Enroll: Server Returned Fault/Code/Subcode/Value=(DeviceCapReached) Fault/Reason/Text=(device cap reached)"
    );
    assert_eq!(events[1].source.as_ref().unwrap().event_id, 76);
    assert_eq!(
        events[1].error.as_ref().unwrap().message,
        "Auto MDM Enroll: Failed (Unknown Win32 Error code: 0x80180013)"
    );
    assert_eq!(events[1].error.as_ref().unwrap().code, 0x8018_0013);
}

#[test]
fn a_spike_multiplies_its_category_share_and_its_failures_are_fixed_when_it_ends() {
    // Tuesday 15:00-19:00 UTC: 10:00-14:00 for tenant 0 (UTC-5).
    let spike: Spike = "license:x20@39h+4h".parse().unwrap();
    let mut generator = generator(2000, 9, vec![spike], 0.5);
    let base = generator.baseline(0, Category::License);
    assert!(base > 0.0);
    // First attempts only: retries repeat earlier causes.
    let (mut before, mut during, mut after) = ((0, 0), (0, 0), (0, 0));
    let window = |h: u64| Duration::from_secs(h * 3600);
    let mut spiked_retries_after_fix = 0;
    loop {
        let attempt = generator.next_attempt();
        if attempt.at >= window(60) {
            break;
        }
        if generator.fleet.devices[attempt.device].tenant != 0 {
            continue;
        }
        if attempt.number > 1 && attempt.cause == Some(Category::License) && attempt.at > window(50)
        {
            spiked_retries_after_fix += 1;
        }
        if attempt.number != 1 {
            continue;
        }
        let bucket = if attempt.at < window(39) {
            &mut before
        } else if attempt.at < window(43) {
            &mut during
        } else {
            &mut after
        };
        bucket.0 += 1;
        bucket.1 += usize::from(attempt.cause == Some(Category::License));
    }
    let share = |(n, hits): (usize, usize)| hits as f64 / n.max(1) as f64;
    let expected = base * 20.0;
    assert!(
        (share(during) - expected).abs() < expected * 0.35,
        "during {:?}, expected {expected} (base {base})",
        during
    );
    assert!(
        share(before) < base * 3.0 && share(after) < base * 3.0,
        "before {before:?} after {after:?} base {base}"
    );
    // The outage's failures retry successfully once it is over: few licence retries still
    // fail the next day.
    assert!(
        spiked_retries_after_fix < during.1 / 4,
        "{spiked_retries_after_fix} of {}",
        during.1
    );
}

#[test]
fn traffic_follows_the_working_week() {
    let mut generator = generator(2000, 3, vec![], 0.2);
    let mut by_hour = [0u32; 24];
    let mut weekend = 0u32;
    let mut total = 0u32;
    loop {
        let attempt = generator.next_attempt();
        if attempt.at >= Duration::from_secs(7 * 86_400) {
            break;
        }
        if attempt.number != 1 {
            continue;
        }
        // Tenant 0 works at UTC-5.
        if generator.fleet.devices[attempt.device].tenant != 0 {
            continue;
        }
        let local = (start() + attempt.at).to_offset(time::UtcOffset::from_hms(-5, 0, 0).unwrap());
        total += 1;
        by_hour[usize::from(local.hour())] += 1;
        weekend += u32::from(matches!(
            local.weekday(),
            time::Weekday::Saturday | time::Weekday::Sunday
        ));
    }
    // About half the fleet's 120,960 sessions in a week (one tenant, 0.2 sessions/s
    // fleet-wide; waves add some).
    assert!((50_000..75_000).contains(&total), "{total}");
    let office: u32 = by_hour[8..18].iter().sum();
    assert!(f64::from(office) / f64::from(total) > 0.7, "{by_hour:?}");
    assert!(by_hour[10] > 20 * by_hour[3], "{by_hour:?}");
    assert!(
        f64::from(weekend) / f64::from(total) < 0.06,
        "{weekend} of {total}"
    );
}

#[test]
fn retries_make_first_time_right_and_time_to_enroll_emerge() {
    let mut generator = generator(3000, 21, vec![], 0.1);
    let (mut attempts, mut failed) = (0u32, 0u32);
    loop {
        let attempt = generator.next_attempt();
        if attempt.at >= Duration::from_secs(7 * 86_400) {
            break;
        }
        attempts += 1;
        failed += u32::from(attempt.cause.is_some());
    }
    // Most attempts succeed; the failure share of attempts comes out of the model.
    let failed_share = f64::from(failed) / f64::from(attempts);
    eprintln!("week: {attempts} attempts, {failed_share:.3} failed");
    assert!((0.1..0.2).contains(&failed_share), "{failed_share}");
    let stats = generator.stats.clone();
    eprintln!(
        "{:?} median {:?}",
        (
            stats.sessions,
            stats.first_time_right,
            stats.enrolled,
            stats.gave_up
        ),
        stats.median_time_to_enroll()
    );
    let ftr = stats.first_time_right as f64 / stats.sessions as f64;
    // Healthy (3.2 %) and misconfigured (~21 %) tenants of equal size.
    assert!((0.84..0.92).contains(&ftr), "first-time-right {ftr}");
    assert!(
        stats.gave_up > 0 && stats.gave_up < stats.sessions / 20,
        "{stats:?}"
    );
    let retried = stats.time_to_enroll_secs.len() as u64;
    assert!(
        retried > (stats.sessions - stats.first_time_right) / 2,
        "{retried}"
    );
    let median = stats.median_time_to_enroll().unwrap();
    assert!(
        median > Duration::from_secs(600) && median < Duration::from_secs(3 * 86_400),
        "{median:?}"
    );
}

#[test]
fn a_misconfigured_tenant_fails_far_more_than_a_healthy_one() {
    let config: ModelConfig =
        toml::from_str("tenants = [\"healthy\", \"misconfigured\"]\nwaves = false\n").unwrap();
    let mut generator = generator_with(2000, 4, vec![], 1.0, config);
    let mut first = [(0u32, 0u32); 2];
    for _ in 0..100_000 {
        let attempt = generator.next_attempt();
        if attempt.number == 1 {
            let t = generator.fleet.devices[attempt.device].tenant;
            first[t].0 += 1;
            first[t].1 += u32::from(attempt.cause.is_some());
        }
    }
    let rate = |(n, f): (u32, u32)| f64::from(f) / f64::from(n);
    assert!((0.02..0.05).contains(&rate(first[0])), "{first:?}");
    assert!((0.17..0.26).contains(&rate(first[1])), "{first:?}");
}

#[test]
fn categories_parse_with_aliases() {
    assert_eq!("licence".parse::<Category>().unwrap(), Category::License);
    assert_eq!(
        "device-cap".parse::<Category>().unwrap(),
        Category::DeviceLimit
    );
    assert_eq!(
        "windows_home".parse::<Category>().unwrap(),
        Category::UnsupportedDevice
    );
    for category in Category::ALL {
        assert_eq!(category.name().parse::<Category>().unwrap(), category);
    }
}
