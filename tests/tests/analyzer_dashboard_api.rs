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
                        order.push(f);
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
                assert!(order.windows(2).all(|w| w[0] >= w[1]), "{order:?}");
                for (k, w) in &want {
                    assert_eq!(got.get(k), Some(w), "{range}{extra} {source}: {k:?}");
                }
                assert_eq!(got.len(), want.len(), "{range}{extra} {source}");
            }
        }
    }
}
