//! The API routes the dashboard added: `code=` as a filter (rollups and raw rows agree with a
//! brute-force count), `/api/v1/affected-devices` (exact per-device failures, search, every
//! page of the keyset pagination, tenant scoping) and `/api/v1/whoami`; plus `/` serving the
//! dashboard with its security headers.

mod analyzer_support;

use std::collections::{BTreeMap, BTreeSet};

use analyzer_support::*;
use fleetpulse_tests::harness::shared;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_filter_affected_devices_and_whoami() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_dash").await;
    let rows = events(11, 3000, 1_700_000_000);
    insert_events(ch, &db, &rows).await;
    let a = Analyzer::start(ch, &db, &[]).await;
    let all = a.create_key(&["--all-tenants"]);
    let contoso = a.create_key(&["--tenant", "contoso"]);
    let (from, to) = (T0 + 3_600, T0 + 2 * DAY + 7_200);
    let range = format!("from={}&to={}", iso(from), iso(to));
    let keep = in_range(from, to);
    let c = classifier();

    // whoami tells the key's scope.
    let me = a.ok("/api/v1/whoami", &contoso).await;
    assert_eq!(me["tenant"], "contoso");
    assert_eq!(a.ok("/api/v1/whoami", &all).await["tenant"], Value::Null);

    // code= in every spelling, from the rollups and from raw rows, equals brute force.
    let code = 0x8018_0014u32;
    let want = brute(
        &rows,
        |r| keep(r) && r.error_has_code == 1 && r.error_code == code,
        |_| Some(None),
    )[&None]
        .clone();
    for spelling in ["0x80180014", "2149056532", "-2145910764"] {
        for source in ["auto", "raw"] {
            let body = a
                .ok(
                    &format!("/api/v1/summary?{range}&code={spelling}&source={source}"),
                    &all,
                )
                .await;
            assert_eq!(
                Counts::from_json(&body["summary"]),
                want,
                "{spelling} {source}"
            );
        }
    }
    let ts = a
        .ok(
            &format!("/api/v1/timeseries?{range}&code=0x80180014&bucket=1h"),
            &all,
        )
        .await;
    let ts_failures: u64 = ts["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["failures"].as_u64().unwrap())
        .sum();
    assert_eq!(ts_failures, want.failures);
    assert_eq!(
        a.get(&format!("/api/v1/summary?{range}&code=0xZZ"), Some(&all))
            .await,
        (
            400,
            json!({"error": {"field": "code", "reason": "must be a 32-bit error code in hex (0x80180014) or decimal"}})
        )
    );
    assert_eq!(
        a.get(
            &format!("/api/v1/funnel?{range}&code=0x80180014"),
            Some(&all)
        )
        .await
        .0,
        400
    );

    // affected-devices for a category: every page, exactly the brute-force devices.
    let cat = "device_cap";
    let failed_in_cat = |r: &fleetpulse_tests::harness::rows::EnrollmentEventRow| {
        keep(r) && r.outcome == "failed" && category(&c, r) == cat
    };
    let mut want_devices: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in rows.iter().filter(|r| failed_in_cat(r)) {
        *want_devices
            .entry((r.tenant.clone(), r.device_id.clone()))
            .or_default() += 1;
    }
    assert!(want_devices.len() > 20, "{}", want_devices.len());
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut order = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/v1/affected-devices?{range}&category={cat}&limit=7");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let body = a.ok(&path, &all).await;
        assert_eq!(body["total"].as_u64().unwrap(), want_devices.len() as u64);
        assert_eq!(body["total_estimated"], false, "{path}");
        for d in body["devices"].as_array().unwrap() {
            let k = (
                d["tenant"].as_str().unwrap().to_owned(),
                d["device_id"].as_str().unwrap().to_owned(),
            );
            assert_eq!(d["last_category"], cat, "{d}");
            order.push(d["failures"].as_u64().unwrap());
            assert!(
                got.insert(k, d["failures"].as_u64().unwrap()).is_none(),
                "a device on two pages: {d}"
            );
        }
        pages += 1;
        cursor = body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(got, want_devices);
    assert_eq!(pages, want_devices.len().div_ceil(7));
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "{order:?}");

    // Search: a substring of the device id, case-insensitively.
    let body = a
        .ok(
            &format!("/api/v1/affected-devices?{range}&category={cat}&q=DEV-01"),
            &all,
        )
        .await;
    let want_search: BTreeSet<(String, String)> = want_devices
        .keys()
        .filter(|(_, d)| d.contains("dev-01"))
        .cloned()
        .collect();
    let got_search: BTreeSet<(String, String)> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["tenant"].as_str().unwrap().to_owned(),
                d["device_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got_search, want_search);

    // A tenant key sees its tenant's devices only; a bad cursor is a 400 naming it.
    let body = a
        .ok(
            &format!("/api/v1/affected-devices?{range}&code=0x80180014&limit=1000"),
            &contoso,
        )
        .await;
    let want_contoso: BTreeSet<String> = rows
        .iter()
        .filter(|r| {
            keep(r)
                && r.outcome == "failed"
                && r.tenant == "contoso"
                && r.error_has_code == 1
                && r.error_code == code
        })
        .map(|r| r.device_id.clone())
        .collect();
    let got_contoso: BTreeSet<String> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["tenant"], "contoso");
            assert_eq!(d["last_code"], "0x80180014");
            d["device_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(got_contoso, want_contoso);
    assert_eq!(
        a.get(
            &format!("/api/v1/affected-devices?{range}&cursor=nope"),
            Some(&all)
        )
        .await,
        (
            400,
            json!({"error": {"field": "cursor", "reason": "not a cursor returned by this endpoint"}})
        )
    );
    assert_eq!(
        a.get("/api/v1/affected-devices", None).await.0,
        401,
        "the device list needs a key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_serves_the_dashboard_or_how_to_build_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ch = shared();
    let db = fresh_db(ch, "analyzer_root").await;
    let a = Analyzer::start(ch, &db, &[]).await;
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(text.starts_with("http/1.0 200"), "{text}");
    assert!(text.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(text.contains("x-frame-options: deny"));
    assert!(text.contains("cache-control: no-cache"));
    // Built with the dashboard: the page loads its hashed bundle; without: it says how to build.
    assert!(
        text.contains("/assets/index-") || text.contains("npm ci &amp;&amp; npm run build"),
        "{text}"
    );
    let (status, _) = request(a.addr, "GET", "/assets/nope.js", None, None).await;
    assert_eq!(status, 404);
}

/// One device of the brute-force affected-devices answer: every field the API returns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WantDevice {
    failures: u64,
    first: u32,
    last: u32,
    upn: String,
    code: Option<String>,
    symbol: String,
    category: String,
    stage: String,
    platform: String,
    os_version: String,
    method: String,
}

/// `/affected-devices` equals the brute force exactly, field by field, on every page: rows
/// reaching the per-device failure rollups (migration 0008) by backfill and by the views,
/// over a range read from hourly and daily rollups and one holding a Monday-aligned week and
/// unaligned raw edges, from the rollups and from raw rows, with category, code, platform,
/// outcome and search filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affected_devices_equal_brute_force_over_every_grain() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_affected").await;
    let before = events_over(21, 2500, now().saturating_sub(60), 12);
    insert_events(ch, &db, &before).await;
    let a = Analyzer::start(ch, &db, &[]).await;
    let after = events_over(22, 2500, now(), 12);
    insert_events(ch, &db, &after).await;
    let rows: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    let all = a.create_key(&["--all-tenants"]);
    let c = classifier();
    let code = 0x8018_0014u32;
    // Hours and a day; then T0 (a Friday) + 5h17m to T0 + 11 days + 3h: raw edges, hours,
    // days and the week from Monday T0 + 3 days.
    let ranges = [
        (T0 + 3_600, T0 + 2 * DAY + 7_200),
        (T0 + 5 * 3600 + 17 * 60, T0 + 11 * DAY + 3 * 3600 + 59),
    ];
    type Keep = Box<dyn Fn(&fleetpulse_tests::harness::rows::EnrollmentEventRow) -> bool>;
    for (from, to) in ranges {
        let range = format!("from={}&to={}", iso(from), iso(to));
        let cases: Vec<(&str, Keep)> = vec![
            ("", Box::new(|_| true)),
            ("&category=device_cap", {
                let c = classifier();
                Box::new(move |r| category(&c, r) == "device_cap")
            }),
            ("&category=unknown", {
                let c = classifier();
                Box::new(move |r| category(&c, r) == "unknown")
            }),
            (
                "&code=0x80180014",
                Box::new(move |r| r.error_has_code == 1 && r.error_code == code),
            ),
            ("&platform=windows", Box::new(|r| r.platform == "windows")),
            ("&outcome=succeeded", Box::new(|_| false)),
            (
                "&q=USER1",
                Box::new(|r| {
                    r.device_id.contains("user1") || r.user_principal_name.contains("user1")
                }),
            ),
        ];
        for (extra, keep) in &cases {
            let mut want: BTreeMap<(String, String), WantDevice> = BTreeMap::new();
            let mut in_scope: Vec<_> = rows
                .iter()
                .filter(|r| in_range(from, to)(r) && r.outcome == "failed" && keep(r))
                .collect();
            in_scope.sort_by_key(|r| r.occurred_at);
            for r in in_scope {
                let w = want
                    .entry((r.tenant.clone(), r.device_id.clone()))
                    .or_insert_with(|| WantDevice {
                        failures: 0,
                        first: r.occurred_at,
                        last: 0,
                        upn: String::new(),
                        code: None,
                        symbol: String::new(),
                        category: String::new(),
                        stage: String::new(),
                        platform: String::new(),
                        os_version: String::new(),
                        method: String::new(),
                    });
                w.failures += 1;
                w.last = r.occurred_at;
                w.upn = r.user_principal_name.clone();
                w.code = (r.error_has_code == 1).then(|| format!("0x{:08X}", r.error_code));
                w.symbol = r.error_symbol.clone();
                w.category = category(&c, r);
                w.stage = r.stage.clone();
                w.platform = r.platform.clone();
                w.os_version = r.os_version.clone();
                w.method = r.enrollment_method.clone();
            }
            if extra.is_empty() {
                assert!(want.len() > 100, "{}", want.len());
            }
            for source in ["auto", "raw"] {
                let mut got: BTreeMap<(String, String), WantDevice> = BTreeMap::new();
                let mut order = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let mut path =
                        format!("/api/v1/affected-devices?{range}{extra}&source={source}&limit=37");
                    if let Some(c) = &cursor {
                        path.push_str(&format!("&cursor={c}"));
                    }
                    let body = a.ok(&path, &all).await;
                    assert_eq!(body["total"].as_u64(), Some(want.len() as u64), "{path}");
                    assert_eq!(body["total_estimated"], false, "{path}");
                    for d in body["devices"].as_array().unwrap() {
                        let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                        let t = |k: &str| {
                            time::OffsetDateTime::parse(
                                d[k].as_str().unwrap(),
                                &time::format_description::well_known::Rfc3339,
                            )
                            .unwrap()
                            .unix_timestamp() as u32
                        };
                        let f = d["failures"].as_u64().unwrap();
                        order.push((f, t("last_failure")));
                        let dev = WantDevice {
                            failures: f,
                            first: t("first_failure"),
                            last: t("last_failure"),
                            upn: s("user_principal_name"),
                            code: d["last_code"].as_str().map(str::to_owned),
                            symbol: s("last_symbol"),
                            category: s("last_category"),
                            stage: s("last_stage"),
                            platform: s("platform"),
                            os_version: s("os_version"),
                            method: s("enrollment_method"),
                        };
                        assert!(
                            got.insert((s("tenant"), s("device_id")), dev).is_none(),
                            "a device on two pages: {d}"
                        );
                    }
                    cursor = body["next_cursor"].as_str().map(str::to_owned);
                    if cursor.is_none() {
                        break;
                    }
                }
                // Most failures first, then the most recent latest failure.
                assert!(order.windows(2).all(|w| w[0] >= w[1]), "{order:?}");
                for (k, w) in &want {
                    assert_eq!(got.get(k), Some(w), "{range}{extra} {source}: {k:?}");
                }
                assert_eq!(got.len(), want.len(), "{range}{extra} {source}");
            }
        }
    }
}

/// The funnel of `rows` by brute force (per device: the stages reached, succeeded and failed
/// at, the furthest stage, enrollment and time to enroll), as the API's `groups`; without the
/// time-to-enroll percentiles when `percentiles` is false (a rollup answer's are null).
fn funnel_brute_force(
    rows: &[&fleetpulse_tests::harness::rows::EnrollmentEventRow],
    percentiles: bool,
) -> Value {
    use fleetpulse_analyzer::query::filters::STAGES as FUNNEL;
    use fleetpulse_analyzer::query::funnel::ENROLLED_STAGES;
    #[derive(Default)]
    struct Dev {
        reached: BTreeSet<String>,
        ok: BTreeSet<String>,
        failed: BTreeSet<String>,
        furthest: usize,
        first: u32,
        enrolled_at: Option<u32>,
    }
    let mut devs: BTreeMap<(String, String, String, String), Dev> = BTreeMap::new();
    for r in rows {
        let d = devs
            .entry((
                r.enrollment_method.clone(),
                r.platform.clone(),
                r.tenant.clone(),
                r.device_id.clone(),
            ))
            .or_insert_with(|| Dev {
                first: u32::MAX,
                ..Dev::default()
            });
        d.reached.insert(r.stage.clone());
        match r.outcome.as_str() {
            "succeeded" => {
                d.ok.insert(r.stage.clone());
            }
            "failed" => {
                d.failed.insert(r.stage.clone());
            }
            _ => {}
        }
        let idx = FUNNEL
            .iter()
            .position(|s| *s == r.stage)
            .map_or(0, |i| i + 1);
        d.furthest = d.furthest.max(idx);
        d.first = d.first.min(r.occurred_at);
        if r.outcome == "succeeded" && ENROLLED_STAGES.contains(&r.stage.as_str()) {
            d.enrolled_at = Some(
                d.enrolled_at
                    .map_or(r.occurred_at, |t| t.min(r.occurred_at)),
            );
        }
    }
    let mut groups: BTreeMap<(String, String), Vec<&Dev>> = BTreeMap::new();
    for ((m, p, _, _), d) in &devs {
        groups.entry((m.clone(), p.clone())).or_default().push(d);
    }
    let mut out: Vec<(u64, String, String, Value)> = groups
        .into_iter()
        .map(|((m, p), ds)| {
            let count = |f: &dyn Fn(&Dev) -> bool| ds.iter().filter(|d| f(d)).count() as u64;
            let stages: Vec<Value> = FUNNEL
                .iter()
                .enumerate()
                .filter(|(_, st)| ds.iter().any(|d| d.reached.contains(**st)))
                .map(|(i, st)| {
                    json!({
                        "stage": st,
                        "reached": count(&|d| d.reached.contains(*st)),
                        "succeeded": count(&|d| d.ok.contains(*st)),
                        "failed": count(&|d| d.failed.contains(*st)),
                        "dropped": count(&|d| d.enrolled_at.is_none() && d.furthest == i + 1),
                    })
                })
                .collect();
            let mut ttl: Vec<u32> = ds
                .iter()
                .filter_map(|d| d.enrolled_at.map(|t| t - d.first))
                .collect();
            ttl.sort_unstable();
            // quantileExact: the element at floor(level x n) of the sorted values.
            let q = |level: f64| {
                (percentiles && !ttl.is_empty())
                    .then(|| f64::from(ttl[(level * ttl.len() as f64) as usize]))
            };
            let devices = ds.len() as u64;
            let group = json!({
                "enrollment_method": m, "platform": p, "devices": devices,
                "enrolled": count(&|d| d.enrolled_at.is_some()),
                "time_to_enroll_seconds": {"p50": q(0.5), "p90": q(0.9), "p95": q(0.95)},
                "stages": stages,
            });
            (devices, m, p, group)
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Value::Array(out.into_iter().map(|g| g.3).collect())
}

/// The funnel from the device-set rollups (migration 0009) equals a brute force over the raw
/// rows, for rows reaching the rollups by backfill and by the views, over an aligned range of
/// days, one with unaligned raw edges, days and a Monday-aligned week, and one inside a day
/// (raw plan), with every filter the rollups hold and one they do not (raw plan): every count
/// exactly (fewer than 1,024 devices per set: the states are exact), `estimated` false,
/// time-to-enroll percentiles null from rollups and exact from raw rows (`source=raw`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_equals_brute_force_over_every_grain() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_funnel").await;
    // The generator's stages, plus the enrolled stage `first_sync`, a middle stage and one
    // outside the funnel's list.
    let spread = |rows: &mut Vec<fleetpulse_tests::harness::rows::EnrollmentEventRow>| {
        for r in rows.iter_mut() {
            match r.event_id.as_u128() % 13 {
                0 | 1 => r.stage = "first_sync".to_owned(),
                2 => r.stage = "device_registration".to_owned(),
                3 => r.stage = "custom_stage".to_owned(),
                _ => {}
            }
        }
    };
    let mut before = events_over(31, 2500, now().saturating_sub(60), 12);
    spread(&mut before);
    insert_events(ch, &db, &before).await;
    let a = Analyzer::start(ch, &db, &[]).await;
    let mut after = events_over(32, 2500, now(), 12);
    spread(&mut after);
    insert_events(ch, &db, &after).await;
    let rows: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    let all = a.create_key(&["--all-tenants"]);
    let ranges = [
        (T0, T0 + 3 * DAY, "rollups"),
        (
            T0 + 5 * 3600 + 17 * 60,
            T0 + 11 * DAY + 3 * 3600 + 59,
            "rollups",
        ),
        (T0 + 3600 + 7, T0 + 9 * 3600, "raw"),
    ];
    type Keep = Box<dyn Fn(&fleetpulse_tests::harness::rows::EnrollmentEventRow) -> bool>;
    let cases: Vec<(&str, Keep, bool)> = vec![
        ("", Box::new(|_| true), true),
        (
            "&tenant=fabrikam",
            Box::new(|r| r.tenant == "fabrikam"),
            true,
        ),
        ("&platform=ios", Box::new(|r| r.platform == "ios"), true),
        (
            "&method=entra_join",
            Box::new(|r| r.enrollment_method == "entra_join"),
            true,
        ),
        ("&outcome=failed", Box::new(|r| r.outcome == "failed"), true),
        (
            "&stage=first_sync",
            Box::new(|r| r.stage == "first_sync"),
            true,
        ),
        // Not held by the rollups: raw rows.
        ("&os_version=14", Box::new(|r| r.os_version == "14"), false),
        (
            "&side=server",
            Box::new(|r| r.source_kind == "graph"),
            false,
        ),
    ];
    for (from, to, plan) in ranges {
        let range = format!("from={}&to={}", iso(from), iso(to));
        for (extra, keep, held) in &cases {
            let in_scope: Vec<_> = rows
                .iter()
                .filter(|r| in_range(from, to)(r) && keep(r))
                .collect();
            if extra.is_empty() {
                assert!(in_scope.len() > 100, "{}", in_scope.len());
            }
            for source in ["auto", "raw"] {
                let path = format!("/api/v1/funnel?{range}{extra}&source={source}");
                let got = a.ok(&path, &all).await;
                let want_plan = if source == "auto" && *held {
                    plan
                } else {
                    "raw"
                };
                assert_eq!(got["plan"], want_plan, "{path}");
                assert_eq!(got["estimated"], false, "{path}");
                let want = funnel_brute_force(&in_scope, want_plan == "raw");
                assert_eq!(got["groups"], want, "{path}");
            }
        }
    }
    // The rollups were read: a tenant's funnel over whole days equals the raw answer but for
    // the percentiles.
    let fab = a.create_key(&["--tenant", "fabrikam"]);
    let got = a
        .ok(
            &format!("/api/v1/funnel?from={}&to={}", iso(T0), iso(T0 + 12 * DAY)),
            &fab,
        )
        .await;
    assert_eq!(got["plan"], "rollups");
    let fabrikam: Vec<_> = rows.iter().filter(|r| r.tenant == "fabrikam").collect();
    assert_eq!(got["groups"], funnel_brute_force(&fabrikam, false));
}
