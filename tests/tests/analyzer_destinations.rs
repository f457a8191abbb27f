//! Destinations end to end with real local receivers: a spike reaches a webhook (HMAC
//! verified), Slack, Teams, PagerDuty, Splunk HEC, Elasticsearch `_bulk`, Sentinel's Logs
//! Ingestion API (after its token endpoint) and syslog over TCP, UDP and TLS, each in the
//! shape its spec requires; the event feeds deliver every failed event once; a destination
//! that is down gets the notification once it is back, across an analyzer restart, once;
//! the export API pages through every failed event exactly once while ingest continues.

mod analyzer_support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use analyzer_support::*;
use fleetpulse_tests::harness::receivers::{HttpReceiver, SyslogReceiver};
use fleetpulse_tests::harness::rows::EnrollmentEventRow;
use fleetpulse_tests::harness::tls::TestPki;
use fleetpulse_tests::harness::{poll_until, shared};
use hmac::{Hmac, Mac};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use sha2::Sha256;

fn config(dir: &tempfile::TempDir, body: &str) -> String {
    let p = dir.path().join("analyzer.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

const ALERTS: &str =
    "feed_settle_secs = 1\n[alerts]\nevaluation_interval = \"5s\"\nwindow = \"1m\"\n";

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    hex::encode(m.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_destination_gets_the_spike_in_its_format() {
    let ch = shared();
    let db = fresh_db(ch, "dest_all").await;
    let t0 = now();
    let history = steady("contoso", 400, 10, t0 - 26 * 3600, t0 + 240, 1);
    insert_events(ch, &db, &history).await;
    let http = HttpReceiver::start().await;
    http.respond(|r| match r.path.as_str() {
        "/token" => (
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"tok-1"}"#.to_owned(),
        ),
        "/es/_bulk" => (200, r#"{"errors":false,"items":[]}"#.to_owned()),
        p if p.starts_with("/sentinel/") => (204, String::new()),
        _ => (200, "{}".to_owned()),
    });
    let tcp = SyslogReceiver::tcp().await;
    let udp = SyslogReceiver::udp().await;
    let pki = TestPki::generate().unwrap();
    let st = pki.server_tls(false);
    let tls = SyslogReceiver::tls(&st.cert, &st.key).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &dir,
        &format!(
            "{ALERTS}
[[destinations]]
name = \"ops\"
kind = \"webhook\"
url = \"{hook}\"
secret = \"s3cret\"
[[destinations]]
name = \"chat\"
kind = \"slack\"
url = \"{slack}\"
[[destinations]]
name = \"teams\"
kind = \"teams\"
url = \"{teams}\"
[[destinations]]
name = \"pager\"
kind = \"pagerduty\"
url = \"{pd}\"
routing_key = \"R0UTING\"
[[destinations]]
name = \"splunk\"
kind = \"splunk_hec\"
url = \"{splunk}\"
token = \"hec-token\"
events_from = \"beginning\"
[[destinations]]
name = \"elastic\"
kind = \"elasticsearch\"
url = \"{es}\"
records = [\"events\"]
events_from = \"beginning\"
api_key = \"es-key\"
[[destinations]]
name = \"sentinel\"
kind = \"sentinel\"
url = \"{sentinel}\"
token_url = \"{token}\"
client_id = \"app-1\"
client_secret = \"secret-1\"
dcr_immutable_id = \"dcr-123\"
stream = \"Custom-Fleetpulse\"
records = [\"alerts\"]
[[destinations]]
name = \"siem-tcp\"
kind = \"syslog\"
address = \"tcp://{tcp}\"
format = \"cef\"
records = [\"alerts\"]
hostname = \"analyzer-1\"
[[destinations]]
name = \"siem-udp\"
kind = \"syslog\"
address = \"udp://{udp}\"
format = \"json\"
records = [\"alerts\"]
[[destinations]]
name = \"siem-tls\"
kind = \"syslog\"
address = \"tls://{tls}\"
ca_file = \"{ca}\"
server_name = \"localhost\"
records = [\"alerts\"]
",
            hook = http.url("/hook"),
            slack = http.url("/slack"),
            teams = http.url("/teams"),
            pd = http.url("/pd"),
            splunk = http.url("/splunk"),
            es = http.url("/es"),
            sentinel = http.url("/sentinel"),
            token = http.url("/token"),
            tcp = tcp.addr,
            udp = udp.addr,
            tls = tls.addr,
            ca = pki.ca_path().display(),
        ),
    );
    let a = Analyzer::start(ch, &db, &["--config", &cfg]).await;
    let key = a.create_key(&["--all-tenants"]);
    let t1 = now();
    let spike_rows = spike("contoso", "ios", 40, 60, t1 - 30, t1, 2);
    insert_events(ch, &db, &spike_rows).await;
    let by_path = |p: &'static str| {
        let http = &http;
        move || {
            let r: Vec<_> = http
                .received()
                .into_iter()
                .filter(|r| r.path == p)
                .collect();
            async move {
                if r.is_empty() {
                    Err("nothing yet")
                } else {
                    Ok(r)
                }
            }
        }
    };
    let hooks = poll_until(Duration::from_secs(90), "the webhook", by_path("/hook")).await;
    let alert = &a.ok("/api/v1/alerts?status=all", &key).await["alerts"][0];
    let alert_id = alert["alert_id"].as_str().unwrap().to_owned();

    // Webhook: POST, JSON, signature over "<timestamp>.<body>", delivery id = notification id.
    let h = &hooks[0];
    assert_eq!(h.method, "POST");
    assert_eq!(h.header("content-type"), Some("application/json"));
    let ts = h.header("x-fleetpulse-timestamp").unwrap();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&h.body);
    assert_eq!(
        h.header("x-fleetpulse-signature").unwrap(),
        format!("sha256={}", hmac_hex(b"s3cret", &signed))
    );
    let body: Value = serde_json::from_slice(&h.body).unwrap();
    assert_eq!(body["alert_id"], alert_id.as_str());
    assert_eq!(body["status"], "firing");
    assert_eq!(body["tenant"], "contoso");
    assert_eq!(body["category"], "license");
    assert!(body["observed"]["count"].as_u64().unwrap() >= 40, "{body}");
    assert!(body["expected"]["rate"].as_f64().unwrap() < 0.001, "{body}");
    assert!(!body["remediation"].as_str().unwrap().is_empty());
    assert_eq!(body["concentration"][0]["value"], "ios", "{body}");
    assert_eq!(
        h.header("x-fleetpulse-delivery"),
        body["notification_id"].as_str()
    );

    let slack = poll_until(Duration::from_secs(30), "slack", by_path("/slack")).await;
    let s: Value = serde_json::from_slice(&slack[0].body).unwrap();
    assert!(
        s["text"]
            .as_str()
            .unwrap()
            .contains("FIRING: license failures in tenant contoso"),
        "{s}"
    );
    assert_eq!(s["blocks"][3]["elements"][0]["url"], body["dashboard_url"]);
    let teams = poll_until(Duration::from_secs(30), "teams", by_path("/teams")).await;
    let t: Value = serde_json::from_slice(&teams[0].body).unwrap();
    assert_eq!(
        t["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let pd = poll_until(Duration::from_secs(30), "pagerduty", by_path("/pd")).await;
    let p: Value = serde_json::from_slice(&pd[0].body).unwrap();
    assert_eq!(
        (
            p["routing_key"].as_str(),
            p["event_action"].as_str(),
            p["dedup_key"].as_str()
        ),
        (Some("R0UTING"), Some("trigger"), Some(alert_id.as_str()))
    );

    // Sentinel: client-credentials token first, then the DCR stream with the bearer token.
    let tok = poll_until(Duration::from_secs(30), "token request", by_path("/token")).await;
    let form = tok[0].text();
    for part in [
        "grant_type=client_credentials",
        "client_id=app-1",
        "client_secret=secret-1",
        "scope=https%3A%2F%2Fmonitor.azure.com%2F%2F.default",
    ] {
        assert!(
            form.split('&').any(|x| x == part),
            "{part} missing in {form}"
        );
    }
    let sent = poll_until(Duration::from_secs(30), "sentinel", || async {
        let r: Vec<_> = http
            .received()
            .into_iter()
            .filter(|r| r.path.starts_with("/sentinel/"))
            .collect();
        if r.is_empty() {
            Err("nothing yet")
        } else {
            Ok(r)
        }
    })
    .await;
    assert_eq!(
        sent[0].path,
        "/sentinel/dataCollectionRules/dcr-123/streams/Custom-Fleetpulse?api-version=2023-01-01"
    );
    assert_eq!(sent[0].header("authorization"), Some("Bearer tok-1"));
    let rows: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(rows[0]["RecordType"], "alert");
    assert_eq!(rows[0]["RecordId"], body["notification_id"]);

    // Syslog: RFC 5424 with CEF over TCP and TLS, JSON over UDP.
    for (what, rx) in [("tcp", &tcp), ("tls", &tls)] {
        let m = poll_until(Duration::from_secs(30), what, || async {
            rx.received().into_iter().next().ok_or("nothing yet")
        })
        .await;
        assert!(rx.garbage().is_empty(), "{what}: {:?}", rx.garbage());
        assert_eq!(
            (m.version.as_str(), m.app_name.as_str(), m.msgid.as_str()),
            ("1", "fleetpulse", "alert")
        );
        assert!(m.pri == 130 || m.pri == 132, "{m:?}");
        assert!(m.msg.starts_with("CEF:0|Fleetpulse|Fleetpulse|"), "{m:?}");
        assert!(m.msg.contains(" cs1Label=tenant cs1=contoso "), "{m:?}");
        assert!(
            m.msg
                .contains(&format!(" cs2Label=alertId cs2={alert_id} ")),
            "{m:?}"
        );
        assert!(
            m.structured_data.contains(&format!(
                "id=\"{}\"",
                body["notification_id"].as_str().unwrap()
            )),
            "{m:?}"
        );
        if what == "tcp" {
            assert_eq!(m.hostname, "analyzer-1");
        }
    }
    let m = poll_until(Duration::from_secs(30), "udp", || async {
        udp.received().into_iter().next().ok_or("nothing yet")
    })
    .await;
    let j: Value = serde_json::from_str(&m.msg).unwrap();
    assert_eq!(
        (j["type"].as_str(), j["alert_id"].as_str()),
        (Some("alert"), Some(alert_id.as_str()))
    );

    // Event feeds: every failed event once, with stable ids (Splunk HEC and _bulk). Steady
    // traffic keeps arriving (received_at up to t0 + 240 s): check everything received up to
    // a cut, and that nothing is doubled or invented.
    let all_failed: BTreeSet<String> = history
        .iter()
        .chain(spike_rows.iter())
        .filter(|r| r.outcome == "failed")
        .map(|r| format!("{}/{}", r.tenant, r.event_id))
        .collect();
    let cut = now() - 2;
    let due: BTreeSet<String> = history
        .iter()
        .chain(spike_rows.iter())
        .filter(|r| r.outcome == "failed" && r.received_at < cut)
        .map(|r| format!("{}/{}", r.tenant, r.event_id))
        .collect();
    let splunk_ids = || {
        let mut ids = Vec::new();
        for r in http
            .received()
            .into_iter()
            .filter(|r| r.path == "/splunk/services/collector/event")
        {
            assert_eq!(r.header("authorization"), Some("Splunk hec-token"));
            for line in r.text().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                if v["sourcetype"] == "fleetpulse:enrollment_failure" {
                    ids.push(v["fields"]["record_id"].as_str().unwrap().to_owned());
                }
            }
        }
        ids
    };
    let es_ids = || {
        let mut ids = Vec::new();
        for r in http
            .received()
            .into_iter()
            .filter(|r| r.path == "/es/_bulk")
        {
            assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
            assert_eq!(r.header("authorization"), Some("ApiKey es-key"));
            let text = r.text();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len() % 2, 0);
            for pair in lines.chunks(2) {
                let action: Value = serde_json::from_str(pair[0]).unwrap();
                let doc: Value = serde_json::from_str(pair[1]).unwrap();
                assert_eq!(action["create"]["_id"], doc["event"]["id"]);
                ids.push(doc["event"]["id"].as_str().unwrap().to_owned());
            }
        }
        ids
    };
    for (what, get) in [
        ("splunk", &splunk_ids as &dyn Fn() -> Vec<String>),
        ("elasticsearch", &es_ids),
    ] {
        poll_until(Duration::from_secs(60), what, || async {
            let ids: BTreeSet<String> = get().into_iter().collect();
            let missing = due.difference(&ids).count();
            if missing == 0 { Ok(()) } else { Err(missing) }
        })
        .await;
        let ids = get();
        let set: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(ids.len(), set.len(), "{what}: no duplicates");
        assert!(set.is_subset(&all_failed), "{what}: only failed events");
    }

    // Exactly one notification per alerting destination.
    for p in ["/hook", "/slack", "/teams", "/pd"] {
        assert_eq!(
            http.received().iter().filter(|r| r.path == p).count(),
            1,
            "{p}"
        );
    }
    let metrics = fleetpulse_tests::harness::http::get(a.addr, "/metrics")
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains(
            "fleetpulse_destination_delivered_total{destination=\"ops\",kind=\"webhook\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetpulse_destination_pending{destination=\"ops\",kind=\"webhook\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_gets_everything_once_after_an_analyzer_restart() {
    let ch = shared();
    let db = fresh_db(ch, "dest_down").await;
    let t0 = now();
    insert_events(
        ch,
        &db,
        &steady("contoso", 400, 10, t0 - 26 * 3600, t0 + 300, 3),
    )
    .await;
    let mut http = HttpReceiver::start().await;
    http.down().await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let cfg = config(
        &dir,
        &format!(
            "{ALERTS}[[destinations]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\nmax_backoff = \"2s\"\n",
            http.url("/hook")
        ),
    );
    let a = Analyzer::start_with_db(ch, &db, Some(&db_url), &["--config", &cfg]).await;
    let key = a.create_key(&["--all-tenants"]);
    let t1 = now();
    insert_events(ch, &db, &spike("contoso", "ios", 40, 60, t1 - 30, t1, 4)).await;
    let alert = poll_until(Duration::from_secs(90), "the alert", || async {
        let v = a.ok("/api/v1/alerts", &key).await;
        v["alerts"]
            .as_array()
            .and_then(|x| x.first().cloned())
            .ok_or(v)
    })
    .await;
    // The receiver is down: the analyzer retries.
    poll_until(Duration::from_secs(60), "a retry", || async {
        let m = fleetpulse_tests::harness::http::get(a.addr, "/metrics")
            .await
            .unwrap()
            .body;
        if m.contains("fleetpulse_destination_retries_total{destination=\"ops\",kind=\"webhook\"}")
        {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await;
    drop(a);
    http.up().await;
    let b = Analyzer::start_with_db(ch, &db, Some(&db_url), &["--config", &cfg]).await;
    let got = poll_until(
        Duration::from_secs(60),
        "the delivery after the restart",
        || async {
            let r = http.received();
            if r.is_empty() {
                Err("nothing yet")
            } else {
                Ok(r)
            }
        },
    )
    .await;
    // Let the new analyzer run a few more seconds: nothing more arrives.
    let since = b.evaluations().await;
    b.await_evaluations(since, 2, Duration::from_secs(30)).await;
    let all = http.received();
    assert_eq!(
        all.len(),
        1,
        "exactly one delivery: {:?}",
        all.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["alert_id"], alert["alert_id"]);
    assert_eq!(body["kind"], "firing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cursor_pages_through_everything_once_while_ingest_continues() {
    let ch = shared();
    let db = fresh_db(ch, "dest_export").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, "feed_settle_secs = 2\n[alerts]\nenabled = false\n");
    let a = Analyzer::start(ch, &db, &["--config", &cfg]).await;
    let key = a.create_key(&["--all-tenants"]);
    let scoped = a.create_key(&["--tenant", "fabrikam"]);
    // Ingest keeps going: 12 batches of 40 rows (a third failed), received "now", one every
    // 300 ms, while the reader pages with limit 25.
    let mut writer = Some({
        let db = db.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(5);
            let mut ids = Vec::new();
            for b in 0..12 {
                let t = now();
                let rows: Vec<EnrollmentEventRow> = (0..40)
                    .map(|i| {
                        let tenant = if i % 2 == 0 { "contoso" } else { "fabrikam" };
                        let failed = (i % 3 == 0).then_some(LICENSE);
                        alert_row(tenant, b * 40 + i, t - 5, t, "windows", failed, &mut rng)
                    })
                    .collect();
                ids.extend(
                    rows.iter()
                        .filter(|r| r.outcome == "failed")
                        .map(|r| (r.tenant.clone(), r.event_id.to_string())),
                );
                insert_events(shared(), &db, &rows).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            ids
        })
    });
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut expected: Option<HashSet<(String, String)>> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/export/events?limit=25&cursor={c}"),
            None => "/api/v1/export/events?limit=25".to_owned(),
        };
        let page = a.ok(&path, &key).await;
        let events = page["events"].as_array().unwrap();
        for e in events {
            seen.push((
                e["organization"]["id"].as_str().unwrap().to_owned(),
                e["fleetpulse"]["event_id"].as_str().unwrap().to_owned(),
            ));
            assert_eq!(e["event"]["outcome"], "failure");
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if writer.as_ref().is_some_and(|w| w.is_finished())
            && let Some(w) = writer.take()
        {
            expected = Some(w.await.unwrap().into_iter().collect());
            // Everything written must settle before the last pages.
            tokio::time::sleep(Duration::from_secs(3)).await;
            continue;
        }
        if let Some(exp) = &expected
            && events.is_empty()
        {
            assert_eq!(seen.len(), exp.len(), "no duplicates");
            assert_eq!(
                seen.iter().cloned().collect::<HashSet<_>>(),
                *exp,
                "no gaps"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "export did not finish"
        );
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Tenant keys see their tenant only; a forged cursor is a 400.
    let page = a.ok("/api/v1/export/events?limit=1000", &scoped).await;
    let n = page["events"].as_array().unwrap().len();
    assert_eq!(n, seen.iter().filter(|(t, _)| t == "fabrikam").count());
    assert_eq!(
        a.get("/api/v1/export/events?cursor=zz", Some(&key)).await,
        (
            400,
            json!({"error": {"field": "cursor", "reason": "not a cursor returned by this endpoint"}})
        )
    );
}
