use super::*;

fn spec(devices: usize, seed: u64) -> FleetSpec {
    FleetSpec {
        tenants: vec!["contoso".into(), "fabrikam".into()],
        devices,
        agents_per_tenant: 2,
        seed,
    }
}

fn start() -> OffsetDateTime {
    time::macros::datetime!(2025-01-06 09:00:00 UTC)
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
        let mut generator =
            Generator::new(Fleet::generate(&spec(300, seed)), seed, vec![], start());
        (0..200)
            .flat_map(|k| generator.attempt(Duration::from_millis(k * 10)).items)
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
    let fleet = Fleet::generate(&spec(3000, 11));
    let mut generator = Generator::new(fleet, 11, vec![], start());
    let mut seen: HashMap<Category, usize> = HashMap::new();
    for k in 0..20_000u64 {
        let attempt = generator.attempt(Duration::from_millis(k));
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
    // A 3000-device fleet shows every common failure cause.
    for category in [
        Category::DeviceLimit,
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
    let failures: usize = seen.values().sum();
    let share = failures as f64 / 20_000.0;
    assert!((0.08..0.40).contains(&share), "failure share {share}");
}

#[test]
fn windows_server_faults_are_event_52_then_76() {
    let fleet = Fleet::generate(&spec(3000, 5));
    let mut generator = Generator::new(fleet, 5, vec![], start());
    let windows: Vec<bool> = generator
        .fleet
        .devices
        .iter()
        .map(|d| d.platform == Platform::Windows)
        .collect();
    let attempt = (0..50_000u64)
        .map(|k| generator.attempt(Duration::from_millis(k)))
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
fn a_spike_multiplies_its_category_share() {
    let spike: Spike = "license:x20@10s+10s".parse().unwrap();
    let fleet = Fleet::generate(&spec(2000, 9));
    let mut generator = Generator::new(fleet, 9, vec![spike], start());
    let base = generator.baseline(Category::License);
    assert!(base > 0.0);
    let share = |generator: &mut Generator, from_ms: u64| {
        let n = 10_000u64;
        let hits = (0..n)
            .filter(|k| {
                generator.attempt(Duration::from_millis(from_ms + k)).cause
                    == Some(Category::License)
            })
            .count();
        hits as f64 / n as f64
    };
    let before = share(&mut generator, 0);
    let during = share(&mut generator, 10_000);
    let after = share(&mut generator, 20_000);
    let expected = (base * 20.0).min(0.95);
    assert!(
        (during - expected).abs() < expected * 0.2,
        "during {during}, expected {expected} (base {base})"
    );
    assert!(
        before < base * 2.0 && after < base * 2.0,
        "before {before} after {after} base {base}"
    );
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
