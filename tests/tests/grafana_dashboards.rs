//! The Grafana dashboards under `deploy/grafana/dashboards/` run on our ClickHouse: every
//! panel's SQL and every template variable's query, with Grafana's macros expanded as the
//! ClickHouse plugin expands them, returns rows from tables filled with known telemetry.

mod analyzer_support;

use std::path::PathBuf;

use analyzer_support::*;
use fleetpulse_tests::harness::rows::DeviceStateRow;
use fleetpulse_tests::harness::shared;
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            out.push((path.display().to_string(), v));
        }
    }
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Expands the macros the dashboards use, as Grafana and the ClickHouse plugin do:
/// `$__timeFilter(col)`, `$__interval_s`, and the tenant variable in `singlequote` format.
fn expand(sql: &str, from: u32, to: u32, tenants: &[&str]) -> String {
    let mut out = sql.to_owned();
    while let Some(start) = out.find("$__timeFilter(") {
        let open = start + "$__timeFilter(".len();
        let close = open + out[open..].find(')').expect("closing parenthesis");
        let col = out[open..close].trim().to_owned();
        out.replace_range(
            start..=close,
            &format!("{col} >= toDateTime({from}) AND {col} <= toDateTime({to})"),
        );
    }
    let quoted: Vec<String> = tenants.iter().map(|t| format!("'{t}'")).collect();
    out = out
        .replace("${tenant:singlequote}", &quoted.join(","))
        .replace("$__interval_s", "3600");
    assert!(!out.contains('$'), "unexpanded macro left in {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grafana_panel_query_returns_rows() {
    let ch = shared();
    let db = fresh_db(ch, "grafana").await;
    let rows = events(5, 2000, T0);
    insert_events(ch, &db, &rows).await;
    let states: Vec<DeviceStateRow> = rows
        .iter()
        .take(50)
        .enumerate()
        .map(|(i, r)| {
            let mut s = state_row(&r.tenant, &r.device_id, T0 + i as u32);
            s.tpm_present = u8::from(i % 3 != 0);
            s
        })
        .collect();
    insert_states(ch, &db, &states).await;
    let client = ch.client(&db);
    let (from, to) = (T0, T0 + 3 * DAY);

    let mut checked = 0;
    for (file, dash) in dashboards() {
        assert_eq!(
            dash["templating"]["list"][0]["name"], "tenant",
            "{file}: the tenant variable"
        );
        for var in dash["templating"]["list"].as_array().unwrap() {
            let sql = expand(var["query"].as_str().unwrap(), from, to, &["contoso"]);
            let tenants: Vec<String> =
                client.query(&sql).fetch_all().await.unwrap_or_else(|e| {
                    panic!("{file}: variable {} failed: {e}\n{sql}", var["name"])
                });
            assert_eq!(tenants, vec!["contoso", "fabrikam"], "{file}: {sql}");
        }
        for panel in dash["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap_or("?");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: panel {title} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "fleetpulse-clickhouse",
                    "{file}: {title}"
                );
                // Both tenants (the "All" value) and one tenant.
                for tenants in [&["contoso", "fabrikam"][..], &["fabrikam"][..]] {
                    let sql = expand(t["rawSql"].as_str().unwrap(), from, to, tenants);
                    let n: u64 = client
                        .query(&format!("SELECT count() FROM ({sql})"))
                        .fetch_one()
                        .await
                        .unwrap_or_else(|e| panic!("{file}: panel {title:?} failed: {e}\n{sql}"));
                    assert!(n > 0, "{file}: panel {title:?} returned no rows\n{sql}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 26, "only {checked} queries checked");

    // The headline numbers equal the analyzer's for the same window.
    let a = Analyzer::start(ch, &db, &[]).await;
    let key = a.create_key(&["--all-tenants"]);
    let api = a
        .ok(
            &format!("/api/v1/summary?from={}&to={}", iso(from), iso(to + 1)),
            &key,
        )
        .await;
    let (_, dash) = dashboards()
        .into_iter()
        .find(|(f, _)| f.ends_with("fleetpulse-overview.json"))
        .unwrap();
    for (title, field) in [
        ("Enrollment attempts", "attempts"),
        ("Failures", "failures"),
        ("Affected devices", "affected_devices"),
        ("Affected users", "affected_users"),
    ] {
        let panel = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"));
        let sql = expand(
            panel["targets"][0]["rawSql"].as_str().unwrap(),
            from,
            to,
            &["contoso", "fabrikam"],
        );
        let v: u64 = client.query(&sql).fetch_one().await.unwrap();
        assert_eq!(v, api["summary"][field].as_u64().unwrap(), "{title}");
    }
}
