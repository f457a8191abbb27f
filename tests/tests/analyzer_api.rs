//! The analyzer API end to end: API keys and tenant isolation, exact 400 bodies for invalid
//! filters, device events and state, the funnel and the insights on data of known composition,
//! classify/catalog/OpenAPI/health endpoints.

mod analyzer_support;

use std::collections::BTreeMap;
use std::time::Duration;

use analyzer_support::*;
use fleetpulse_tests::harness::rows::EnrollmentEventRow;
use fleetpulse_tests::harness::{ClickHouseServer, poll_until, shared};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tenant_isolation_and_invalid_filters() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_auth").await;
    let rows = events(7, 1500, now().saturating_sub(30));
    insert_events(ch, &db, &rows).await;
    let a = Analyzer::start(ch, &db, &[]).await;
    let contoso = a.create_key(&["--tenant", "contoso", "--description", "contoso dashboards"]);
    let all = a.create_key(&["--all-tenants"]);
    let range = format!("from={}&to={}", iso(T0), iso(T0 + 3 * DAY));

    // 401: missing, malformed, unknown, revoked.
    let path = format!("/api/v1/summary?{range}");
    assert_eq!(
        a.get(&path, None).await,
        (
            401,
            json!({"error": {"reason": "missing API key: send Authorization: Bearer fpk_..."}})
        )
    );
    assert_eq!(
        a.get(&path, Some("nope")).await,
        (
            401,
            json!({"error": {"reason": "malformed API key: expected fpk_<id>_<secret>"}})
        )
    );
    let forged = format!("{}{}", &contoso[..contoso.len() - 64], "0".repeat(64));
    assert_eq!(
        a.get(&path, Some(&forged)).await,
        (401, json!({"error": {"reason": "invalid API key"}}))
    );

    // A tenant-scoped key sees exactly its tenant, whatever it asks.
    let c = classifier();
    let keep = in_range(T0, T0 + 3 * DAY);
    let want_contoso =
        brute(&rows, |r| keep(r) && r.tenant == "contoso", |_| Some(None))[&None].clone();
    let body = a.ok(&path, &contoso).await;
    assert_eq!(Counts::from_json(&body["summary"]), want_contoso);
    let body = a.ok(&format!("{path}&tenant=contoso"), &contoso).await;
    assert_eq!(Counts::from_json(&body["summary"]), want_contoso);
    assert_eq!(
        a.get(&format!("{path}&tenant=fabrikam"), Some(&contoso))
            .await,
        (
            403,
            json!({"error": {"reason": "this API key is scoped to tenant \"contoso\" and cannot read tenant \"fabrikam\""}})
        )
    );
    let body = a
        .ok(&format!("/api/v1/breakdown/tenant?{range}"), &contoso)
        .await;
    let tenants: Vec<&str> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, vec!["contoso"]);
    let body = a
        .ok(&format!("/api/v1/breakdown/tenant?{range}"), &all)
        .await;
    assert_eq!(body["rows"].as_array().unwrap().len(), 2);
    let one_device = rows
        .iter()
        .find(|r| r.tenant == "fabrikam")
        .unwrap()
        .device_id
        .clone();
    let (status, _) = a
        .get(
            &format!("/api/v1/devices/{one_device}/events?tenant=fabrikam"),
            Some(&contoso),
        )
        .await;
    assert_eq!(status, 403);
    let body = a
        .ok(&format!("/api/v1/devices/{one_device}/events"), &contoso)
        .await;
    assert!(
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "contoso"),
        "{body}"
    );
    let body = a
        .ok(
            &format!("/api/v1/summary?{range}&category=device_cap"),
            &contoso,
        )
        .await;
    let want = brute(
        &rows,
        |r| {
            keep(r)
                && r.tenant == "contoso"
                && r.outcome == "failed"
                && category(&c, r) == "device_cap"
        },
        |_| Some(None),
    );
    assert_eq!(
        Counts::from_json(&body["summary"]),
        want.get(&None).cloned().unwrap_or_default()
    );

    // Revocation takes effect on the next request.
    let id = contoso.split('_').nth(1).unwrap().to_owned();
    let out = a.key(&["revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        a.get(&path, Some(&contoso)).await,
        (
            401,
            json!({"error": {"reason": "this API key has been revoked"}})
        )
    );
    let out = a.key(&["list", "--json"]);
    let listed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    let revoked = listed.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(revoked["tenant"], "contoso");
    assert_eq!(revoked["description"], "contoso dashboards");
    assert!(revoked["revoked_at"].is_string());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&contoso[contoso.len() - 64..]),
        "secret leaked"
    );

    // Invalid filters: exact 400 bodies.
    let bad =
        |field: &str, reason: &str| (400u16, json!({"error": {"field": field, "reason": reason}}));
    let cats = fleetpulse_analyzer::catalog::CATEGORY_IDS.join(", ");
    for (query, expected) in [
        (
            "/api/v1/summary?from=yesterday",
            bad(
                "from",
                "must be an RFC 3339 timestamp such as 2024-05-01T00:00:00Z",
            ),
        ),
        (
            "/api/v1/summary?from=2024-03-02T00:00:00Z&to=2024-03-01T00:00:00Z",
            bad("to", "must be later than from"),
        ),
        (
            "/api/v1/summary?from=2020-01-01T00:00:00Z&to=2024-03-01T00:00:00Z",
            bad("from", "the range from..to must not exceed 400 days"),
        ),
        (
            "/api/v1/summary?platform=beos",
            bad(
                "platform",
                "must be one of: unspecified, windows, ios, ipados, macos, android, linux",
            ),
        ),
        (
            "/api/v1/summary?category=gremlins",
            bad("category", &format!("must be one of: {cats}")),
        ),
        (
            "/api/v1/summary?tenant=contoso&tenant=fabrikam",
            bad("tenant", "given more than once"),
        ),
        (
            "/api/v1/summary?colour=red",
            bad(
                "colour",
                "unknown parameter; allowed: from, to, tenant, platform, method, os_version, stage, outcome, category, code, side, source",
            ),
        ),
        (
            "/api/v1/timeseries?bucket=7m",
            bad("bucket", "must be one of: 5m, 15m, 1h, 1d"),
        ),
        (
            "/api/v1/timeseries?bucket=5m&from=2024-01-01T00:00:00Z&to=2024-03-01T00:00:00Z",
            bad(
                "bucket",
                "the range holds 17280 buckets, more than 5000; choose a coarser bucket or a shorter range",
            ),
        ),
        (
            "/api/v1/breakdown/colour",
            bad(
                "dimension",
                "must be one of: category, code, platform, os_version, enrollment_method, tenant, stage, outcome, side",
            ),
        ),
        (
            "/api/v1/breakdown/code?limit=0",
            bad("limit", "must be an integer from 1 to 1000"),
        ),
        (
            "/api/v1/devices/x/events?cursor=zzz",
            bad("cursor", "not a cursor returned by this endpoint"),
        ),
        ("/api/v1/source?source=x", (404, Value::Null)),
        (
            "/api/v1/summary?source=fast",
            bad("source", "must be one of: auto, raw"),
        ),
    ] {
        assert_eq!(a.get(query, Some(&all)).await, expected, "{query}");
    }

    // Classify mirrors the CLI, including the per-line error object.
    let (status, body) = request(
        a.addr,
        "POST",
        "/api/v1/classify",
        Some(&all),
        Some(r#"[{"code":"0x80180014","message":"SDM One Time Limit Check"},{"code":[1]},{"symbol":"DeviceCapReached"}]"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["category"], "autopilot");
    assert_eq!(body[0]["code"], "0x80180014");
    assert_eq!(body[1]["line"], 2);
    assert!(body[1]["error"].is_string(), "{body}");
    assert_eq!(body[2]["category"], "device_cap");
    let (status, body) = request(a.addr, "POST", "/api/v1/classify", Some(&all), Some("{")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "body");

    // Catalog, OpenAPI (no key needed), health, readiness and metrics.
    let body = a.ok("/api/v1/catalog", &all).await;
    assert_eq!(
        body["categories"].as_array().unwrap().len(),
        fleetpulse_analyzer::catalog::CATEGORY_IDS.len()
    );
    let (status, doc) = a.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], "1.0.0");
    assert!(doc["paths"]["/api/v1/alerts"]["get"].is_object(), "{doc}");
    assert_eq!(
        a.get("/healthz", None).await,
        (200, json!({"status": "ok"}))
    );
    assert_eq!(
        a.get("/readyz", None).await,
        (200, json!({"status": "ready"}))
    );
    let metrics = fleetpulse_tests::harness::http::get(a.addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains(
            "fleetpulse_analyzer_http_requests_total{route=\"/api/v1/summary\",status=\"401\"} 4"
        ),
        "{}",
        metrics.body
    );
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}

fn ev(
    tenant: &str,
    device: &str,
    at: u32,
    method: &str,
    stage: &str,
    outcome: &str,
) -> EnrollmentEventRow {
    EnrollmentEventRow {
        tenant: tenant.into(),
        event_id: Uuid::new_v4(),
        agent_id: format!("agent-{device}"),
        batch_seq: 1,
        device_id: device.into(),
        occurred_at: at,
        occurred_ms: 0,
        received_at: at,
        platform: "windows".into(),
        os_edition: String::new(),
        os_version: "10.0.22631.4602".into(),
        enrollment_method: method.into(),
        stage: stage.into(),
        outcome: outcome.into(),
        error_code: 0,
        error_has_code: 0,
        error_symbol: String::new(),
        error_message: String::new(),
        source_kind: "event_log".into(),
        source_channel: String::new(),
        source_event_id: 0,
        source_record_id: 0,
        user_principal_name: String::new(),
        attributes_key: vec![],
        attributes_value: vec![],
    }
}

/// The insight list's entries by id.
fn insights_by_id(body: &Value) -> BTreeMap<String, Value> {
    body["insights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i.clone()))
        .collect()
}

/// An insight's sample as `(tenant, subject, detail)`.
fn sample_of(insight: &Value) -> Vec<(String, String, String)> {
    insight["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["tenant"].as_str().unwrap().into(),
                a["subject"].as_str().unwrap().into(),
                a["detail"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_funnel_and_insights_are_exact() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_insights").await;
    let n = now();
    let recent = n - DAY;
    let mut states = Vec::new();
    let mut evs = Vec::new();
    // Device cap (contoso limit 5 by default, fabrikam 3 by config).
    for (tenant, user, enrolled, not_enrolled) in [
        ("contoso", "a@c", 5, 0),
        ("contoso", "b@c", 4, 0),
        ("contoso", "c@c", 3, 0),
        ("contoso", "d@c", 3, 2),
        ("fabrikam", "e@f", 2, 0),
    ] {
        for i in 0..enrolled + not_enrolled {
            let dev = format!("{user}-{i}");
            let mut s = state_row(tenant, &dev, recent - 100);
            s.primary_user_upn = user.into();
            states.push(s.clone());
            // A later snapshot un-enrolls the extra devices: only the latest counts.
            if i >= enrolled {
                s.captured_at = recent;
                s.mdm_enrolled = 0;
                states.push(s);
            }
        }
    }
    // TPM vs Autopilot.
    let win = |d: &str, tpm: u8, ver: &str, method: &str| {
        let mut s = state_row("contoso", d, recent);
        s.platform = "windows".into();
        s.tpm_present = tpm;
        s.tpm_spec_version = ver.into();
        s.enrollment_method = method.into();
        s.join_state = "entra_joined".into();
        s
    };
    states.push(win("t1", 0, "", "autopilot_self_deploying"));
    states.push(win("t2", 1, "1.2", "entra_join"));
    evs.push(ev(
        "contoso",
        "t2",
        recent,
        "autopilot_pre_provisioned",
        "authentication",
        "failed",
    ));
    states.push(win("t3", 1, "2.0", "autopilot_self_deploying"));
    states.push(win("t4", 1, "1.2", "autopilot_user_driven"));
    // Licence.
    for (dev, user, lic, attempted) in [
        ("l1", "x@c", "unlicensed", true),
        ("l2", "y@c", "unlicensed", false),
        ("l3", "z@c", "licensed", true),
    ] {
        let mut s = state_row("contoso", dev, recent);
        s.primary_user_upn = user.into();
        s.license_state = lic.into();
        s.last_attempt_at = if attempted { recent - 10 } else { 0 };
        s.mdm_enrolled = 0;
        states.push(s);
    }
    // Auto-enrollment never triggered.
    let joined = |d: &str, join: &str, enrolled: u8| {
        let mut s = win(d, 1, "2.0", "gpo_auto_enroll");
        s.join_state = join.into();
        s.mdm_enrolled = enrolled;
        s
    };
    states.push(joined("n1", "entra_joined", 0));
    states.push(joined("n2", "hybrid_joined", 0));
    let mut e76 = ev(
        "contoso",
        "n2",
        recent,
        "gpo_auto_enroll",
        "complete",
        "failed",
    );
    e76.source_channel =
        "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin".into();
    e76.source_event_id = 76;
    evs.push(e76);
    states.push(joined("n3", "entra_joined", 1));
    states.push(joined("n4", "not_joined", 0));
    // Stale: s1's only snapshot is 40 days old; s2 is old but enrolled successfully lately;
    // s3 has only an old success.
    states.push(state_row("fabrikam", "s1", n - 40 * DAY));
    states.push(state_row("fabrikam", "s2", n - 40 * DAY));
    evs.push(ev(
        "fabrikam",
        "s2",
        n - 2 * DAY,
        "apple_ade",
        "complete",
        "succeeded",
    ));
    evs.push(ev(
        "fabrikam",
        "s3",
        n - 45 * DAY,
        "apple_ade",
        "complete",
        "succeeded",
    ));

    // Funnel on an isolated tenant and range: three devices of known paths.
    let f0 = T0;
    let path = |d: &str, steps: &[(&str, &str, u32)]| -> Vec<EnrollmentEventRow> {
        steps
            .iter()
            .map(|(stage, outcome, dt)| ev("funnel", d, f0 + dt, "entra_join", stage, outcome))
            .collect()
    };
    evs.extend(path(
        "f1",
        &[
            ("discovery", "succeeded", 0),
            ("authentication", "succeeded", 10),
            ("complete", "succeeded", 100),
        ],
    ));
    evs.extend(path(
        "f2",
        &[
            ("discovery", "succeeded", 0),
            ("authentication", "succeeded", 20),
            ("complete", "succeeded", 300),
        ],
    ));
    evs.extend(path(
        "f3",
        &[
            ("discovery", "succeeded", 0),
            ("authentication", "failed", 5),
        ],
    ));
    // Device event pagination: 7 events of one device.
    for i in 0..7u32 {
        let mut e = ev(
            "contoso",
            "pager",
            T0 + i / 2,
            "entra_join",
            "authorization",
            "failed",
        );
        e.occurred_ms = (i % 2) as u16;
        e.error_code = 0x8018_0014;
        e.error_has_code = 1;
        evs.push(e);
    }
    insert_events(ch, &db, &evs).await;
    insert_states(ch, &db, &states).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("analyzer.toml");
    std::fs::write(&cfg, "stale_days = 30\n[device_caps]\nfabrikam = 3\n").unwrap();
    let a = Analyzer::start(ch, &db, &["--config", cfg.to_str().unwrap()]).await;
    let key = a.create_key(&["--all-tenants"]);

    let by_id = insights_by_id(&a.ok("/api/v1/insights", &key).await);
    let subjects = |id: &str| sample_of(&by_id[id]);
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        subjects("device_cap_near"),
        vec![
            t("contoso", "a@c", "5/5"),
            t("contoso", "b@c", "4/5"),
            t("fabrikam", "e@f", "2/3")
        ]
    );
    assert_eq!(
        subjects("autopilot_tpm_unsupported"),
        vec![
            t("contoso", "t1", "tpm missing"),
            t("contoso", "t2", "tpm 1.2")
        ]
    );
    assert_eq!(
        subjects("unlicensed_users_enrolling"),
        vec![t("contoso", "x@c", "1 device(s)")]
    );
    assert_eq!(
        subjects("auto_enrollment_not_triggered"),
        vec![t("contoso", "n1", "entra_joined")]
    );
    let stale: Vec<String> = subjects("stale_enrollments")
        .into_iter()
        .map(|(_, s, _)| s)
        .collect();
    // The funnel devices only ever succeeded in 2024: stale too.
    assert_eq!(stale, vec!["s1", "s3", "f1", "f2", "f3"]);
    for (id, count) in [
        ("device_cap_near", 3),
        ("autopilot_tpm_unsupported", 2),
        ("unlicensed_users_enrolling", 1),
        ("auto_enrollment_not_triggered", 1),
        ("stale_enrollments", 5),
    ] {
        assert_eq!(by_id[id]["count"], count, "{id}");
        assert!(!by_id[id]["remediation"].as_str().unwrap().is_empty());
    }
    // Paginated affected list.
    let p1 = a
        .ok("/api/v1/insights/device_cap_near/devices?limit=2", &key)
        .await;
    assert_eq!(p1["count"], 3);
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = a
        .ok(
            &format!("/api/v1/insights/device_cap_near/devices?limit=2&cursor={cursor}"),
            &key,
        )
        .await;
    assert_eq!(
        p2["items"],
        json!([{"tenant": "fabrikam", "subject": "e@f", "detail": "2/3"}])
    );
    assert!(p2["next_cursor"].is_null());
    let scoped = a
        .ok(
            "/api/v1/insights/device_cap_near/devices?tenant=fabrikam",
            &key,
        )
        .await;
    assert_eq!(scoped["count"], 1);
    assert_eq!(
        a.get("/api/v1/insights/nope/devices", Some(&key)).await.0,
        404
    );

    // Rows received after the analyzer started reach the per-device rollups through their
    // views (the rows above came by the backfill): a@c un-enrolls one device, s1 enrolls
    // again (no longer stale), n1 logs event 75 (auto-enrollment ran), t4 (TPM 1.2) tries a
    // self-deploying Autopilot enrollment. A view writes during the insert: no waiting.
    let arrived = now();
    let mut unenrolled = state_row("contoso", "a@c-0", recent + 10);
    unenrolled.primary_user_upn = "a@c".into();
    unenrolled.mdm_enrolled = 0;
    unenrolled.received_at = arrived;
    let mut s1_ok = ev(
        "fabrikam",
        "s1",
        n - DAY,
        "apple_ade",
        "complete",
        "succeeded",
    );
    let mut e75 = ev(
        "contoso",
        "n1",
        recent,
        "gpo_auto_enroll",
        "complete",
        "succeeded",
    );
    e75.source_channel =
        "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin".into();
    e75.source_event_id = 75;
    let mut t4_sd = ev(
        "contoso",
        "t4",
        recent,
        "autopilot_self_deploying",
        "authentication",
        "failed",
    );
    for e in [&mut s1_ok, &mut e75, &mut t4_sd] {
        e.received_at = arrived;
    }
    insert_events(ch, &db, &[s1_ok, e75, t4_sd]).await;
    insert_states(ch, &db, &[unenrolled]).await;
    let by_id = insights_by_id(&a.ok("/api/v1/insights", &key).await);
    let sample = |id: &str| -> Vec<(String, String)> {
        sample_of(&by_id[id])
            .into_iter()
            .map(|(_, subject, detail)| (subject, detail))
            .collect()
    };
    let p = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        sample("device_cap_near"),
        vec![p("a@c", "4/5"), p("b@c", "4/5"), p("e@f", "2/3")]
    );
    assert_eq!(
        sample("autopilot_tpm_unsupported"),
        vec![
            p("t1", "tpm missing"),
            p("t2", "tpm 1.2"),
            p("t4", "tpm 1.2")
        ]
    );
    assert_eq!(sample("auto_enrollment_not_triggered"), vec![]);
    let stale: Vec<String> = sample("stale_enrollments")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(stale, vec!["s3", "f1", "f2", "f3"]);
    for (id, count) in [
        ("device_cap_near", 3),
        ("autopilot_tpm_unsupported", 3),
        ("unlicensed_users_enrolling", 1),
        ("auto_enrollment_not_triggered", 0),
        ("stale_enrollments", 4),
    ] {
        assert_eq!(by_id[id]["count"], count, "{id} after rows arrived");
    }

    // Funnel.
    let body = a
        .ok(
            &format!(
                "/api/v1/funnel?tenant=funnel&from={}&to={}",
                iso(T0),
                iso(T0 + DAY)
            ),
            &key,
        )
        .await;
    let g = &body["groups"][0];
    assert_eq!(body["groups"].as_array().unwrap().len(), 1);
    assert_eq!(
        (g["enrollment_method"].as_str(), g["platform"].as_str()),
        (Some("entra_join"), Some("windows"))
    );
    assert_eq!(
        (g["devices"].as_u64(), g["enrolled"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        g["stages"],
        json!([
            {"stage": "discovery", "reached": 3, "succeeded": 3, "failed": 0, "dropped": 0},
            {"stage": "authentication", "reached": 3, "succeeded": 2, "failed": 1, "dropped": 1},
            {"stage": "complete", "reached": 2, "succeeded": 2, "failed": 0, "dropped": 0}
        ])
    );
    // A whole day: answered from the device-set rollups, without time-to-enroll percentiles;
    // the raw plan has them (and the same counts).
    assert_eq!(body["plan"], "rollups");
    assert_eq!(g["time_to_enroll_seconds"]["p50"], Value::Null);
    let raw = a
        .ok(
            &format!(
                "/api/v1/funnel?tenant=funnel&from={}&to={}&source=raw",
                iso(T0),
                iso(T0 + DAY)
            ),
            &key,
        )
        .await;
    let rg = &raw["groups"][0];
    assert_eq!((&raw["plan"], &rg["stages"]), (&json!("raw"), &g["stages"]));
    let p50 = rg["time_to_enroll_seconds"]["p50"].as_f64().unwrap();
    assert!((100.0..=300.0).contains(&p50), "{rg}");

    // Device events: newest first, 3 per page, cursor until the end, classified.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let pager_category = {
        let mut e = ev(
            "contoso",
            "pager",
            T0,
            "entra_join",
            "authorization",
            "failed",
        );
        e.error_code = 0x8018_0014;
        e.error_has_code = 1;
        category(&classifier(), &e)
    };
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/devices/pager/events?limit=3&cursor={c}"),
            None => "/api/v1/devices/pager/events?limit=3".to_owned(),
        };
        let page = a.ok(&path, &key).await;
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["classification"]["category"], pager_category.as_str());
            seen.push(e["occurred_at"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen.len(), 7);
    assert_eq!(seen, sorted);
    assert_eq!(seen[0], "2024-03-01T00:00:03.000Z");

    // Device state: latest snapshot.
    let s = a.ok("/api/v1/devices/d@c-3/state", &key).await;
    assert_eq!(
        (s["mdm_enrolled"].as_bool(), s["primary_user_upn"].as_str()),
        (Some(false), Some("d@c"))
    );
    assert_eq!(
        a.get("/api/v1/devices/ghost/state", Some(&key)).await.0,
        404
    );
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}

/// Analyzers starting together on one fresh PostgreSQL database all create their schema: the
/// losers of a concurrent `CREATE TABLE IF NOT EXISTS` (a unique violation on the catalog, or
/// "type .. already exists") run it again instead of failing to start. Seen in the cluster
/// suite as `type "analyzer_api_keys" already exists`. The creators are connected first and
/// released together, so the statements really overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_creators_starting_together_on_postgres_all_succeed() {
    use fleetpulse_analyzer::keys;
    use std::sync::Arc;

    sqlx::any::install_default_drivers();
    let pg = fleetpulse_tests::harness::Postgres::start().expect("start PostgreSQL");
    for round in 0..10 {
        let url = pg
            .create_database(&format!("schema_race_{round}"))
            .expect("create database");
        let mut pools = Vec::new();
        for _ in 0..8 {
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .expect("connect");
            pools.push(pool);
        }
        let start = Arc::new(tokio::sync::Barrier::new(pools.len()));
        let creators = pools.into_iter().map(|pool| {
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                // Open the pool's connection before the barrier, so only the statement remains.
                sqlx::query("SELECT 1").execute(&pool).await?;
                start.wait().await;
                keys::create_schema(
                    &pool,
                    "CREATE TABLE IF NOT EXISTS race_probe (id TEXT PRIMARY KEY, v TEXT)",
                )
                .await
            })
        });
        for (i, r) in futures::future::join_all(creators)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = r.expect("creator task") {
                panic!("round {round}: creator {i} failed: {e}");
            }
        }
    }
}

/// The API-key store on a real private PostgreSQL (the SQLite path is covered above through
/// the binary): schema creation twice, scopes, hashed lookup, tampering, revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_on_postgres() {
    use fleetpulse_analyzer::keys::{self, KeyError, KeyScope, Rejection};

    let pg = fleetpulse_tests::harness::Postgres::start().expect("start PostgreSQL");
    let url = pg
        .create_database("analyzer_keys")
        .expect("create database");
    let pool = keys::open(&url).await.expect("open key store");
    // Opening again must find the schema in place, not fail on it.
    let pool2 = keys::open(&url).await.expect("reopen key store");

    let (tenant_key, tenant_token) = keys::create(&pool, Some("contoso"), "dashboards")
        .await
        .expect("create tenant key");
    let (all_key, all_token) = keys::create(&pool2, None, "ops").await.expect("create key");
    assert_eq!(tenant_key.tenant.as_deref(), Some("contoso"));
    assert_eq!(all_key.tenant, None);
    assert_ne!(tenant_key.id, all_key.id);

    assert_eq!(
        keys::verify(&pool, &tenant_token).await.expect("verify"),
        Ok(KeyScope {
            key_id: tenant_key.id.clone(),
            tenant: Some("contoso".to_owned())
        })
    );
    assert_eq!(
        keys::verify(&pool2, &all_token).await.expect("verify"),
        Ok(KeyScope {
            key_id: all_key.id.clone(),
            tenant: None
        })
    );
    // Only the hash is stored: the token's secret appears nowhere in the table.
    let secret = tenant_token.rsplit('_').next().expect("token secret");
    // psql quotes the variable itself (`:'s'`), so nothing is formatted into the SQL.
    let mut psql = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([url.as_str(), "-tA", "-v", &format!("s={secret}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run psql");
    std::io::Write::write_all(
        psql.stdin.as_mut().expect("psql stdin"),
        b"SELECT COUNT(*) FROM analyzer_api_keys WHERE secret_sha256 = :'s' OR description = :'s' OR id = :'s';\n",
    )
    .expect("write to psql");
    let out = psql.wait_with_output().expect("psql output");
    assert!(out.status.success(), "psql failed");
    let stored = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(stored, "0");

    // A wrong secret for a known id is refused like an unknown key.
    let mut tampered = tenant_token.clone();
    let last = tampered.pop().expect("non-empty token");
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(
        keys::verify(&pool, &tampered).await.expect("verify"),
        Err(Rejection::Unknown)
    );
    assert_eq!(
        keys::verify(&pool, "not-a-key").await.expect("verify"),
        Err(Rejection::Malformed)
    );

    let listed = keys::list(&pool).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(listed.len(), 2, "{ids:?}");
    assert!(ids.contains(&tenant_key.id.as_str()) && ids.contains(&all_key.id.as_str()));

    keys::revoke(&pool, &tenant_key.id).await.expect("revoke");
    assert_eq!(
        keys::verify(&pool2, &tenant_token).await.expect("verify"),
        Err(Rejection::Revoked)
    );
    // Revoking twice is idempotent; an id that never existed is named in the error.
    keys::revoke(&pool, &tenant_key.id)
        .await
        .expect("revoke again");
    assert!(matches!(
        keys::revoke(&pool, "0000000000000000").await,
        Err(KeyError::NotFound(id)) if id == "0000000000000000"
    ));
    let listed = keys::list(&pool).await.expect("list");
    let revoked = listed
        .iter()
        .find(|k| k.id == tenant_key.id)
        .expect("revoked key still listed");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        keys::verify(&pool, &all_token).await.expect("verify"),
        Ok(KeyScope {
            key_id: all_key.id,
            tenant: None
        })
    );
}

/// The rows of one insight computed by brute force from the raw tables (the queries the
/// analyzer ran before the per-device rollups of migration 0005), `(tenant, subject, detail)`.
fn brute_force_insight(db: &str, id: &str, now: u32) -> String {
    let latest = format!(
        "SELECT tenant, device_id, argMax(platform, captured_at) AS platform, \
         argMax(join_state, captured_at) AS join_state, argMax(mdm_enrolled, captured_at) AS mdm_enrolled, \
         argMax(tpm_present, captured_at) AS tpm_present, argMax(tpm_spec_version, captured_at) AS tpm_spec_version, \
         argMax(primary_user_upn, captured_at) AS upn, argMax(license_state, captured_at) AS license_state, \
         argMax(last_attempt_at, captured_at) AS last_attempt_at, \
         argMax(enrollment_method, captured_at) AS state_method FROM {db}.device_states GROUP BY tenant, device_id"
    );
    match id {
        "device_cap_near" => format!(
            "SELECT tenant, upn AS subject, concat(toString(n), '/5') AS detail FROM (SELECT tenant, upn, count() AS n \
             FROM ({latest}) WHERE mdm_enrolled = 1 AND upn != '' GROUP BY tenant, upn) WHERE n + 1 >= 5"
        ),
        "autopilot_tpm_unsupported" => format!(
            "SELECT tenant, device_id AS subject, if(tpm_present = 0, 'tpm missing', concat('tpm ', tpm_spec_version)) AS detail \
             FROM ({latest}) WHERE platform = 'windows' AND (tpm_present = 0 OR startsWith(tpm_spec_version, '1.')) \
             AND (state_method IN ('autopilot_self_deploying', 'autopilot_pre_provisioned') \
             OR (tenant, device_id) IN (SELECT tenant, device_id FROM {db}.enrollment_events \
             WHERE enrollment_method IN ('autopilot_self_deploying', 'autopilot_pre_provisioned')))"
        ),
        "unlicensed_users_enrolling" => format!(
            "SELECT tenant, upn AS subject, concat(toString(count()), ' device(s)') AS detail FROM ({latest}) \
             WHERE license_state = 'unlicensed' AND upn != '' AND toUInt32(last_attempt_at) != 0 GROUP BY tenant, upn"
        ),
        "auto_enrollment_not_triggered" => format!(
            "SELECT tenant, device_id AS subject, join_state AS detail FROM ({latest}) \
             WHERE platform = 'windows' AND mdm_enrolled = 0 AND join_state IN ('entra_joined', 'hybrid_joined', 'domain_joined') \
             AND (tenant, device_id) NOT IN (SELECT tenant, device_id FROM {db}.enrollment_events \
             WHERE source_event_id IN (75, 76) AND position(source_channel, 'DeviceManagement-Enterprise-Diagnostics-Provider') > 0)"
        ),
        "stale_enrollments" => format!(
            "SELECT tenant, device_id AS subject, concat('last seen ', toString(max(t))) AS detail FROM (\
             SELECT tenant, device_id, captured_at AS t FROM {db}.device_states UNION ALL \
             SELECT tenant, device_id, occurred_at AS t FROM {db}.enrollment_events WHERE outcome = 'succeeded') \
             GROUP BY tenant, device_id HAVING max(t) < toDateTime({}, 'UTC')",
            now - 30 * DAY
        ),
        other => panic!("no brute force for {other}"),
    }
}

/// Generated states and events, half of each received before the analyzer started (backfill)
/// and half after (views): every per-device insight, count and every page, equals the brute
/// force over the raw tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insights_equal_brute_force_on_generated_devices() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_insights_bf").await;
    let n = now();
    // 600 devices x 4 snapshots (users own 5 devices each: device caps are hit), 24,000
    // events over 800 devices (200 without any snapshot) in the last 60 days; only devices
    // below 400 log auto-enrollment events 75/76.
    let states = |part: u32| {
        format!(
            "INSERT INTO {db}.device_states (tenant, agent_id, device_id, captured_at, received_at, platform, \
             join_state, mdm_enrolled, tpm_present, tpm_spec_version, primary_user_upn, last_attempt_at, \
             license_state, enrollment_method) \
             SELECT ['contoso', 'fabrikam'][d % 2 + 1], concat('agent-', toString(d)), concat('dev-', toString(d)), \
             toDateTime({n} - (d % 60) * 86400 - (intHash32(k) % 4) * 3600 - h % 1000, 'UTC'), now(), \
             ['windows', 'windows', 'ios', 'android'][h % 4 + 1], \
             ['entra_joined', 'hybrid_joined', 'not_joined', 'domain_joined'][intHash32(k * 3) % 4 + 1], \
             toUInt8(intHash32(k * 5) % 3 != 0), toUInt8(intHash32(k * 7) % 5 != 0), \
             if(intHash32(k * 11) % 4 = 0, '1.2', '2.0'), if(d % 13 = 0, '', concat('user', toString(d % 120), '@x')), \
             toDateTime(if(intHash32(k * 17) % 3 = 0, 0, {n} - 86400), 'UTC'), \
             if(intHash32(k * 19) % 6 = 0, 'unlicensed', 'licensed'), \
             ['autopilot_self_deploying', 'entra_join', 'autopilot_pre_provisioned', 'autopilot_user_driven'][intHash32(k * 23) % 4 + 1] \
             FROM (SELECT number AS k, number % 600 AS d, intHash32(number) AS h FROM numbers(2400)) \
             WHERE k % 2 = {part}"
        )
    };
    let events = |part: u32| {
        format!(
            "INSERT INTO {db}.enrollment_events (tenant, event_id, agent_id, batch_seq, device_id, occurred_at, \
             received_at, platform, enrollment_method, stage, outcome, source_kind, source_channel, source_event_id) \
             SELECT ['contoso', 'fabrikam'][d % 2 + 1], generateUUIDv4(), concat('agent-', toString(d)), 1, \
             concat('dev-', toString(d)), toDateTime({n} - intHash32(k) % (60 * 86400), 'UTC'), now(), 'windows', \
             ['entra_join', 'autopilot_self_deploying', 'gpo_auto_enroll', 'autopilot_pre_provisioned', 'apple_ade'][intHash32(k * 3) % 5 + 1], \
             'complete', ['succeeded', 'failed', 'failed', 'in_progress'][intHash32(k * 5) % 4 + 1], 'agent', \
             if(intHash32(k * 7) % 2 = 0, 'Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin', 'Application'), \
             if(d < 400, [75, 76, 0, 201, 0, 0, 0, 0, 0, 0][intHash32(k * 11) % 10 + 1], 201) \
             FROM (SELECT number AS k, intHash32(number * 13) % 800 AS d FROM numbers(24000)) WHERE k % 2 = {part}"
        )
    };
    ch.execute(&states(0)).await.unwrap();
    ch.execute(&events(0)).await.unwrap();
    let a = Analyzer::start(ch, &db, &[]).await;
    let key = a.create_key(&["--all-tenants"]);
    ch.execute(&states(1)).await.unwrap();
    ch.execute(&events(1)).await.unwrap();

    // Live (the harness turns snapshots off): every page equals the brute force now.
    assert_insights_equal_brute_force(ch, &db, &a, &key, None, now(), false).await;
    drop(a);

    // Snapshots: two analyzers refreshing at once (each at its start) write two generations;
    // neither doubles a row. Each answer is the brute force as of the snapshot's `as_of`, for
    // all tenants and for one.
    let refresh = ["--insights-refresh-secs", "3600"];
    let (b, c) = tokio::join!(
        Analyzer::start(ch, &db, &refresh),
        Analyzer::start(ch, &db, &refresh)
    );
    for x in [&b, &c] {
        let key = x.create_key(&["--all-tenants"]);
        let as_of = poll_until(Duration::from_secs(60), "an insight snapshot", || {
            let (x, key) = (x, key.clone());
            async move {
                let list = x.ok("/api/v1/insights", &key).await;
                match list["from_snapshot"].as_bool() {
                    Some(true) => Ok(list["as_of"].as_str().unwrap_or_default().to_owned()),
                    _ => Err(list["as_of"].to_string()),
                }
            }
        })
        .await;
        let as_of =
            time::OffsetDateTime::parse(&as_of, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp() as u32;
        assert_insights_equal_brute_force(ch, &db, x, &key, None, as_of, true).await;
        assert_insights_equal_brute_force(ch, &db, x, &key, Some("fabrikam"), as_of, true).await;
    }
    // Both generations are complete and kept (the newest two are), the rows of each exactly
    // one copy of the answer.
    let generations = ch
        .count(&format!("SELECT count() FROM {db}.insight_snapshots"), &[])
        .await
        .unwrap();
    assert_eq!(generations, 2);
}

/// Every page (97 at a time) and count of the five per-device insights, and the insight list's
/// counts and samples, equal the brute force as of `now` (for `tenant` when given); the answers
/// come from a snapshot as of `now` when `snapshot`, else are computed live.
async fn assert_insights_equal_brute_force(
    ch: &ClickHouseServer,
    db: &str,
    a: &Analyzer,
    key: &str,
    tenant: Option<&str>,
    now: u32,
    snapshot: bool,
) {
    let scope = tenant.map_or(String::new(), |t| format!("&tenant={t}"));
    let list = match tenant {
        Some(t) => a.ok(&format!("/api/v1/insights?tenant={t}"), key).await,
        None => a.ok("/api/v1/insights", key).await,
    };
    assert_eq!(list["from_snapshot"], snapshot, "{list}");
    if snapshot {
        assert_eq!(list["as_of"], iso(now));
    }
    for id in [
        "device_cap_near",
        "autopilot_tpm_unsupported",
        "unlicensed_users_enrolling",
        "auto_enrollment_not_triggered",
        "stale_enrollments",
    ] {
        let filter = tenant.map_or(String::new(), |t| format!(" WHERE tenant = '{t}'"));
        let want: Vec<(String, String, String)> = ch
            .query_rows(
                &format!(
                    "SELECT tenant, subject, detail FROM ({}){filter} ORDER BY tenant, subject",
                    brute_force_insight(db, id, now)
                ),
                &[],
            )
            .await
            .unwrap();
        assert!(
            want.len() >= 3,
            "{id}: generated data too thin ({})",
            want.len()
        );
        let summary = list["insights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing from {list}"));
        assert_eq!(summary["count"], want.len(), "{id} list count");
        let sample: Vec<&str> = summary["sample"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["subject"].as_str().unwrap())
            .collect();
        let first: Vec<&str> = want.iter().take(10).map(|w| w.1.as_str()).collect();
        assert_eq!(sample, first, "{id} sample");
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/insights/{id}/devices?limit=97&cursor={c}{scope}"),
                None => format!("/api/v1/insights/{id}/devices?limit=97{scope}"),
            };
            let page = a.ok(&path, key).await;
            assert_eq!(page["count"], want.len(), "{id} count");
            assert_eq!(page["from_snapshot"], snapshot, "{id}");
            if snapshot {
                assert_eq!(page["as_of"], iso(now), "{id} as_of");
            }
            for i in page["items"].as_array().unwrap() {
                got.push((
                    i["tenant"].as_str().unwrap().to_owned(),
                    i["subject"].as_str().unwrap().to_owned(),
                    i["detail"].as_str().unwrap().to_owned(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(got, want, "{id}");
    }
}

/// The funnel on generated events (several methods and platforms, every stage, a stage outside
/// the funnel's list, devices that enroll and devices that stop) equals a brute force over the
/// raw rows (per-device stage sets as string arrays, the analyzer's SQL before it moved to
/// one pass over bit masks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_equals_brute_force_on_generated_events() {
    let ch = shared();
    let db = fresh_db(ch, "analyzer_funnel_bf").await;
    let stages = fleetpulse_analyzer::query::filters::STAGES;
    let quoted: Vec<String> = stages
        .iter()
        .chain(["custom_stage"].iter())
        .map(|s| format!("'{s}'"))
        .collect();
    ch.execute(&format!(
        "INSERT INTO {db}.enrollment_events (tenant, event_id, agent_id, batch_seq, device_id, occurred_at, \
         received_at, platform, enrollment_method, stage, outcome, source_kind) \
         SELECT ['contoso', 'fabrikam'][d % 2 + 1], generateUUIDv4(), 'a', 1, concat('dev-', toString(d)), \
         toDateTime({T0} + intHash32(k) % 86400, 'UTC'), now(), ['windows', 'ios'][d % 2 + 1], \
         ['entra_join', 'apple_ade', 'autopilot_user_driven'][d % 3 + 1], \
         [{}][intHash32(k * 3) % {} + 1], ['succeeded', 'failed', 'in_progress'][intHash32(k * 5) % 3 + 1], 'agent' \
         FROM (SELECT number AS k, intHash32(number * 7) % 900 AS d FROM numbers(6000))",
        quoted.join(", "),
        quoted.len()
    ))
    .await
    .unwrap();
    let a = Analyzer::start(ch, &db, &[]).await;
    let key = a.create_key(&["--all-tenants"]);
    let got = a
        .ok(
            &format!(
                "/api/v1/funnel?from={}&to={}&source=raw",
                iso(T0),
                iso(T0 + DAY)
            ),
            &key,
        )
        .await;
    // The day from the device-set rollups: the same counts, no percentiles.
    let rolled = a
        .ok(
            &format!("/api/v1/funnel?from={}&to={}", iso(T0), iso(T0 + DAY)),
            &key,
        )
        .await;
    assert_eq!(rolled["plan"], "rollups");

    let list: Vec<String> = stages.iter().map(|s| format!("'{s}'")).collect();
    let list = list.join(", ");
    let idx: Vec<String> = (1..=stages.len()).map(|i| i.to_string()).collect();
    let idx = idx.join(", ");
    let per_device = format!(
        "SELECT enrollment_method, platform, tenant, device_id, groupUniqArray(stage) AS stages, \
         groupUniqArrayIf(stage, outcome = 'succeeded') AS ok_stages, \
         groupUniqArrayIf(stage, outcome = 'failed') AS failed_stages, \
         max(transform(stage, [{list}], [{idx}], 0)) AS furthest, \
         countIf(outcome = 'succeeded' AND stage IN ('complete', 'first_sync')) > 0 AS is_enrolled, \
         toUInt32(minIf(occurred_at, outcome = 'succeeded' AND stage IN ('complete', 'first_sync'))) - toUInt32(min(occurred_at)) AS ttl \
         FROM {db}.enrollment_events GROUP BY enrollment_method, platform, tenant, device_id"
    );
    let groups: Vec<(String, String, u64, u64, f64, f64, f64)> = ch
        .query_rows(
            &format!(
                "SELECT enrollment_method, platform, count(), countIf(is_enrolled), \
                 toFloat64(quantileExactIf(0.5)(toFloat64(ttl), is_enrolled)), \
                 toFloat64(quantileExactIf(0.9)(toFloat64(ttl), is_enrolled)), \
                 toFloat64(quantileExactIf(0.95)(toFloat64(ttl), is_enrolled)) \
                 FROM ({per_device}) GROUP BY enrollment_method, platform \
                 ORDER BY count() DESC, enrollment_method, platform"
            ),
            &[],
        )
        .await
        .unwrap();
    let stage_rows: Vec<(String, String, String, u64, u64, u64, u64)> = ch
        .query_rows(
            &format!(
                "SELECT enrollment_method, platform, st, count(), countIf(has(ok_stages, st)), \
                 countIf(has(failed_stages, st)), \
                 countIf(NOT is_enrolled AND furthest = transform(st, [{list}], [{idx}], 0)) \
                 FROM ({per_device}) ARRAY JOIN stages AS st GROUP BY enrollment_method, platform, st"
            ),
            &[],
        )
        .await
        .unwrap();
    let want: Vec<Value> = groups
        .iter()
        .map(|(m, p, devices, enrolled, p50, p90, p95)| {
            let stages: Vec<Value> = stages
                .iter()
                .filter_map(|st| {
                    stage_rows
                        .iter()
                        .find(|r| &r.0 == m && &r.1 == p && r.2 == *st)
                        .map(|r| {
                            json!({"stage": r.2, "reached": r.3, "succeeded": r.4, "failed": r.5, "dropped": r.6})
                        })
                })
                .collect();
            json!({
                "enrollment_method": m, "platform": p, "devices": devices, "enrolled": enrolled,
                "time_to_enroll_seconds": {"p50": p50, "p90": p90, "p95": p95},
                "stages": stages,
            })
        })
        .collect();
    assert!(want.len() >= 4, "{want:?}");
    let mut no_times = want.clone();
    for g in &mut no_times {
        g["time_to_enroll_seconds"] = json!({"p50": null, "p90": null, "p95": null});
    }
    assert_eq!(got["groups"], Value::Array(want));
    assert_eq!(rolled["groups"], Value::Array(no_times));
}
