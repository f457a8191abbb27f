//! The analyzer's aggregate answers (rollups, raw edges, raw-only) against brute-force counts
//! over the generated rows, with history backfilled at migration and later rows arriving
//! through the materialized views.

mod analyzer_support;

use std::collections::BTreeMap;

use analyzer_support::*;
use fleetpulse_tests::harness::rows::EnrollmentEventRow;
use fleetpulse_tests::harness::{shared, unique_database};
use serde_json::Value;

fn rows_to_map(body: &Value) -> BTreeMap<Option<String>, Counts> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {body}"))
        .iter()
        .map(|r| (r["key"].as_str().map(str::to_owned), Counts::from_json(r)))
        .collect()
}

/// Windows reports a refused enrollment twice: event 52 with the server's fault, then event 76
/// with the HRESULT's name. Every other licence failure (0x80180018) gets its event-76 twin
/// (`MENROLL_E_USERLICENSE`), so one code is reported under two symbols with different counts
/// (the top codes merge them into one row).
fn with_event_76_twins(mut rows: Vec<EnrollmentEventRow>) -> Vec<EnrollmentEventRow> {
    let twins: Vec<EnrollmentEventRow> = rows
        .iter()
        .filter(|r| r.error_has_code == 1 && r.error_code == 0x8018_0018)
        .step_by(2)
        .map(|r| EnrollmentEventRow {
            event_id: uuid::Uuid::from_u128(r.event_id.as_u128() ^ 0x76),
            stage: "complete".into(),
            error_symbol: "MENROLL_E_USERLICENSE".into(),
            error_message: "Auto MDM Enroll: Failed (Unknown Win32 Error code: 0x80180018)".into(),
            source_event_id: 76,
            ..r.clone()
        })
        .collect();
    assert!(
        !twins.is_empty(),
        "the generated rows hold no licence failure"
    );
    rows.extend(twins);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakdowns_summary_and_timeseries_equal_brute_force() {
    let ch = shared();
    let db = unique_database("analyzer_agg");
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    // History written before the analyzer (and its views) exist: reaches the rollups by backfill.
    let before = with_event_76_twins(events_over(1, 2500, now().saturating_sub(60), 12));
    insert_events(ch, &db, &before).await;
    let analyzer = Analyzer::start(ch, &db, &[]).await;
    // Rows arriving after the views exist: reach the rollups through the views only.
    let after = with_event_76_twins(events_over(2, 2500, now(), 12));
    insert_events(ch, &db, &after).await;
    let all: Vec<_> = before.iter().chain(after.iter()).cloned().collect();
    let token = analyzer.create_key(&["--all-tenants"]);
    let c = classifier();

    let aligned = (T0, T0 + 3 * DAY);
    let unaligned = (
        T0 + 5 * 3600 + 17 * 60,
        T0 + 2 * DAY + 19 * 3600 + 45 * 60 + 30,
    );
    let hour_aligned = (T0 + 3 * 3600, T0 + DAY + 20 * 3600);
    // T0 is a Friday: this range holds the whole week from Monday T0 + 3 days (weekly
    // rollups), days on both sides (daily), hours (hourly) and unaligned raw edges.
    let with_week = (T0 + 5 * 3600 + 17 * 60, T0 + 11 * DAY + 3 * 3600 + 59);
    for (from, to) in [aligned, unaligned, hour_aligned, with_week] {
        for source in ["auto", "raw"] {
            for dim in [
                "category",
                "code",
                "platform",
                "os_version",
                "enrollment_method",
                "tenant",
                "stage",
                "outcome",
                "side",
            ] {
                let path = format!(
                    "/api/v1/breakdown/{dim}?from={}&to={}&source={source}&limit=1000",
                    iso(from),
                    iso(to)
                );
                let body = analyzer.ok(&path, &token).await;
                let got = rows_to_map(&body);
                // A couple of hundred devices: every unique count is exact.
                for r in body["rows"].as_array().unwrap() {
                    assert_eq!(r["estimated"], false, "{path}: {r}");
                }
                let keep = in_range(from, to);
                let want = if dim == "category" {
                    brute(
                        &all,
                        |r| keep(r) && r.outcome == "failed",
                        |r| Some(key_of(&c, dim, r)),
                    )
                } else {
                    brute(&all, &keep, |r| Some(key_of(&c, dim, r)))
                };
                assert_eq!(got, want, "{path}");
            }
            // Summary, overall and for one tenant, platform and category.
            for extra in [
                "",
                "&tenant=contoso",
                "&platform=windows",
                "&category=device_cap",
                "&tenant=fabrikam&category=unknown",
                "&side=server",
                "&side=client&category=device_cap",
                "&tenant=contoso&side=server",
            ] {
                let path = format!(
                    "/api/v1/summary?from={}&to={}&source={source}{extra}",
                    iso(from),
                    iso(to)
                );
                let body = analyzer.ok(&path, &token).await;
                let keep = in_range(from, to);
                let tenant = extra
                    .split("tenant=")
                    .nth(1)
                    .map(|s| s.split('&').next().unwrap_or(s).to_owned());
                let platform = extra
                    .split("platform=")
                    .nth(1)
                    .map(|s| s.split('&').next().unwrap_or(s).to_owned());
                let cat = extra
                    .split("category=")
                    .nth(1)
                    .map(|s| s.split('&').next().unwrap_or(s).to_owned());
                let side = extra
                    .split("side=")
                    .nth(1)
                    .map(|s| s.split('&').next().unwrap_or(s).to_owned());
                let side_ok = |r: &fleetpulse_tests::harness::rows::EnrollmentEventRow| {
                    side.as_ref()
                        .is_none_or(|s| key_of(&c, "side", r).as_ref() == Some(s))
                };
                let want = brute(
                    &all,
                    |r| {
                        keep(r)
                            && tenant.as_ref().is_none_or(|t| &r.tenant == t)
                            && platform.as_ref().is_none_or(|p| &r.platform == p)
                            && side_ok(r)
                            && cat
                                .as_ref()
                                .is_none_or(|k| r.outcome == "failed" && &category(&c, r) == k)
                    },
                    |_| Some(None),
                );
                let want = want.get(&None).cloned().unwrap_or_default();
                assert_eq!(Counts::from_json(&body["summary"]), want, "{path}");
                assert_eq!(body["summary"]["estimated"], false, "{path}");
                // Top categories: the five with most failures, exact counts.
                let by_cat = brute(
                    &all,
                    |r| {
                        keep(r)
                            && r.outcome == "failed"
                            && tenant.as_ref().is_none_or(|t| &r.tenant == t)
                            && platform.as_ref().is_none_or(|p| &r.platform == p)
                            && side_ok(r)
                            && cat.as_ref().is_none_or(|k| &category(&c, r) == k)
                    },
                    |r| Some(Some(category(&c, r))),
                );
                let top = body["summary"]["top_categories"].as_array().unwrap();
                assert_eq!(top.len(), by_cat.len().min(5), "{path}");
                for t in top {
                    let k = Some(t["category"].as_str().unwrap().to_owned());
                    let w = &by_cat[&k];
                    assert_eq!(t["failures"].as_u64(), Some(w.failures), "{path} {k:?}");
                    assert_eq!(
                        t["affected_devices"].as_u64(),
                        Some(w.affected_devices),
                        "{path} {k:?}"
                    );
                    assert_eq!(
                        t["affected_users"].as_u64(),
                        Some(w.affected_users),
                        "{path} {k:?}"
                    );
                }
            }
        }
    }

    // Time series at every bucket width, empty buckets included, from rollups and from raw
    // rows alone (plain aggregates instead of merged states).
    let widths = [("5m", 300u32), ("15m", 900), ("1h", 3600), ("1d", DAY)];
    for ((bucket, step), source) in widths
        .into_iter()
        .flat_map(|w| ["auto", "raw"].map(|s| (w, s)))
    {
        let (from, to) = if step == DAY {
            aligned
        } else {
            (unaligned.0, unaligned.0 + 20 * 3600)
        };
        let path = format!(
            "/api/v1/timeseries?from={}&to={}&bucket={bucket}&platform=ios&side=client&source={source}",
            iso(from),
            iso(to)
        );
        let body = analyzer.ok(&path, &token).await;
        let points = body["points"].as_array().unwrap();
        let first = from / step * step;
        assert_eq!(points.len() as u32, (to - first).div_ceil(step), "{path}");
        let keep = in_range(from, to);
        let want = brute(
            &all,
            |r| keep(r) && r.platform == "ios" && r.source_kind != "graph",
            |r| Some(Some(iso(r.occurred_at / step * step))),
        );
        for p in points {
            let t = p["t"].as_str().unwrap().to_owned();
            let w = want.get(&Some(t.clone())).cloned().unwrap_or_default();
            assert_eq!(Counts::from_json(p), w, "{path} at {t}");
        }
    }

    // Top codes: failures per (code, category) for coded failures (their symbols merged),
    // per (symbol, category) for the others, with the catalog's remediation.
    let code_key = |r: &EnrollmentEventRow| {
        let code = key_of(&c, "code", r);
        let symbol = if code.is_some() {
            ""
        } else {
            r.error_symbol.as_str()
        };
        format!("{code:?}|{symbol}|{}", category(&c, r))
    };
    let mut merged_symbols = 0;
    let ranges = [unaligned, with_week];
    for ((from, to), source) in ranges
        .into_iter()
        .flat_map(|r| ["auto", "raw"].map(|s| (r, s)))
    {
        let path = format!(
            "/api/v1/top-codes?from={}&to={}&limit=1000&source={source}",
            iso(from),
            iso(to)
        );
        let body = analyzer.ok(&path, &token).await;
        let keep = in_range(from, to);
        let want = brute(
            &all,
            |r| keep(r) && r.outcome == "failed",
            |r| Some(Some(code_key(r))),
        );
        let per_symbol = brute(
            &all,
            |r| keep(r) && r.outcome == "failed",
            |r| Some(Some(format!("{}\u{1f}{}", code_key(r), r.error_symbol))),
        );
        let codes = body["codes"].as_array().unwrap();
        assert_eq!(codes.len(), want.len(), "{body}");
        for code in codes {
            let symbol = code["symbol"].as_str().unwrap();
            let k = format!(
                "{:?}|{}|{}",
                code["code"].as_str().map(str::to_owned),
                if code["code"].is_null() { symbol } else { "" },
                code["category"].as_str().unwrap()
            );
            let w = &want[&Some(k.clone())];
            assert_eq!(code["failures"].as_u64(), Some(w.failures), "{k}");
            // Its symbols: named ones first, each by most failures (ties: the greater
            // symbol), then "" (no symbol reported); `symbol` is the first.
            let mut symbols: Vec<(bool, u64, String)> = per_symbol
                .iter()
                .filter_map(|(key, n)| {
                    let (row, sym) = key.as_deref()?.split_once('\u{1f}')?;
                    (row == k).then(|| (!sym.is_empty(), n.failures, sym.to_owned()))
                })
                .collect();
            symbols.sort_by(|a, b| b.cmp(a));
            let symbols: Vec<String> = symbols.into_iter().map(|(_, _, s)| s).collect();
            assert_eq!(code["symbols"], serde_json::json!(symbols), "{k}");
            assert_eq!(symbol, symbols[0], "{k}");
            if symbols.len() > 1 {
                merged_symbols += 1;
            }
            assert_eq!(
                code["affected_devices"].as_u64(),
                Some(w.affected_devices),
                "{k}"
            );
            if code["category"] != "unknown" {
                assert!(
                    !code["remediation"].as_str().unwrap().is_empty(),
                    "{k} has no remediation"
                );
            }
        }
        let failures: Vec<u64> = codes
            .iter()
            .map(|c| c["failures"].as_u64().unwrap())
            .collect();
        assert!(
            failures.windows(2).all(|w| w[0] >= w[1]),
            "not sorted by failures: {failures:?}"
        );
    }

    // The event-76 twins were merged into their code's row (both ranges, both sources).
    assert_eq!(
        merged_symbols, 4,
        "licence failures under two symbols in one row"
    );
    // Every rollup holds every row exactly once (backfill + views, no double count), and
    // the weekly and totals families agree with the raw counts too.
    assert_rollups_hold_every_row_once(ch, &db, all.len() as u64).await;
    // A fresh database never builds the rollups that 0003 replaced.
    assert_eq!(old_rollup_tables(ch, &db).await, 0);
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}

const NEW_ROLLUPS: &[&str] = &[
    "rollup_fleet_narrow_hourly",
    "rollup_fleet_narrow_daily",
    "rollup_fleet_narrow_weekly",
    "rollup_narrow_hourly",
    "rollup_narrow_daily",
    "rollup_narrow_weekly",
    "rollup_fleet_cores_hourly",
    "rollup_fleet_cores_daily",
    "rollup_fleet_cores_weekly",
    "rollup_signals_hourly",
    "rollup_signals_daily",
    "rollup_signals_weekly",
    "rollup_outcomes_hourly",
    "rollup_outcomes_daily",
    "rollup_outcomes_weekly",
    "rollup_fleet_signals_hourly",
    "rollup_fleet_signals_daily",
    "rollup_fleet_signals_weekly",
    "rollup_fleet_outcomes_hourly",
    "rollup_fleet_outcomes_daily",
    "rollup_fleet_outcomes_weekly",
    "rollup_tenant_totals_hourly",
    "rollup_tenant_totals_daily",
    "rollup_tenant_totals_weekly",
];

async fn assert_rollups_hold_every_row_once(
    ch: &fleetpulse_tests::harness::ClickHouseServer,
    db: &str,
    rows: u64,
) {
    for table in NEW_ROLLUPS {
        let rolled = ch
            .count(&format!("SELECT countMerge(events) FROM {db}.{table}"), &[])
            .await
            .unwrap();
        assert_eq!(rolled, rows, "{table}");
    }
    // A facet table holds every row once per facet.
    for grain in ["hourly", "daily", "weekly"] {
        for facet in [
            "platform",
            "enrollment_method",
            "stage",
            "os_version",
            "source_kind",
        ] {
            let rolled = ch
                .count(
                    &format!(
                        "SELECT countMerge(events) FROM {db}.rollup_fleet_facets_{grain} WHERE facet = ?"
                    ),
                    &[facet],
                )
                .await
                .unwrap();
            assert_eq!(rolled, rows, "rollup_fleet_facets_{grain} {facet}");
        }
    }
}

async fn old_rollup_tables(ch: &fleetpulse_tests::harness::ClickHouseServer, db: &str) -> u64 {
    ch.count(
        "SELECT count() FROM system.tables WHERE database = ? AND (name LIKE 'rollup_events_%' OR name LIKE 'rollup_totals_%')",
        &[db],
    )
    .await
    .unwrap()
}

/// A database the previous analyzer built (rollups of 0001 and 0002, fed by their views)
/// upgraded by this one: 0003 builds its rollups from raw rows exactly once and drops the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_the_old_rollups_rebuilds_from_raw_once() {
    let ch = shared();
    let db = unique_database("analyzer_upgrade");
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    // The old schema as the old runner left it: objects created, versions 1 and 2 applied.
    ch.execute(&format!(
        "CREATE TABLE {db}.analyzer_schema_migrations (version UInt32, name String, state String, \
         cutover UInt32, seq UInt64, recorded_at DateTime('UTC')) ENGINE = MergeTree ORDER BY (version, seq)"
    ))
    .await
    .unwrap();
    for (version, sql) in [
        (
            1,
            include_str!("../../analyzer/migrations/clickhouse/0001_event_rollups.sql"),
        ),
        (
            2,
            include_str!("../../analyzer/migrations/clickhouse/0002_coarse_rollups.sql"),
        ),
    ] {
        let text: String = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for stmt in text.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            let stmt = stmt
                .trim_end_matches(';')
                .replace("{db}", &db)
                .replace(
                    "{message_key}",
                    fleetpulse_analyzer::query::sql::MESSAGE_KEY_SQL,
                )
                .replace("{cutover}", "0");
            ch.execute(&stmt).await.unwrap();
        }
        ch.execute(&format!(
            "INSERT INTO {db}.analyzer_schema_migrations VALUES ({version}, 'old', 'applied', 0, 1, now())"
        ))
        .await
        .unwrap();
    }
    let rows = events_over(3, 1500, now().saturating_sub(60), 10);
    insert_events(ch, &db, &rows).await;
    // Six tables and their six views.
    assert_eq!(old_rollup_tables(ch, &db).await, 12);
    assert_eq!(
        ch.count(
            &format!("SELECT countMerge(events) FROM {db}.rollup_totals_daily"),
            &[]
        )
        .await
        .unwrap(),
        1500
    );

    let analyzer = Analyzer::start(ch, &db, &[]).await;
    assert_eq!(old_rollup_tables(ch, &db).await, 0);
    let later = events_over(4, 500, now(), 10);
    insert_events(ch, &db, &later).await;
    assert_rollups_hold_every_row_once(ch, &db, 2000).await;
    let all: Vec<_> = rows.iter().chain(later.iter()).cloned().collect();
    let token = analyzer.create_key(&["--all-tenants"]);
    let c = classifier();
    let (from, to) = (T0, T0 + 10 * DAY);
    let path = format!(
        "/api/v1/breakdown/category?from={}&to={}&limit=1000",
        iso(from),
        iso(to)
    );
    let body = analyzer.ok(&path, &token).await;
    let want = brute(
        &all,
        |r| in_range(from, to)(r) && r.outcome == "failed",
        |r| Some(key_of(&c, "category", r)),
    );
    assert_eq!(rows_to_map(&body), want, "{path}");
    // Version 3 is recorded once; a restart applies nothing.
    drop(analyzer);
    let _again = Analyzer::start(ch, &db, &[]).await;
    assert_rollups_hold_every_row_once(ch, &db, 2000).await;
    assert_eq!(
        ch.count(
            &format!(
                "SELECT count() FROM {db}.analyzer_schema_migrations WHERE version = 3 AND state = 'applied'"
            ),
            &[]
        )
        .await
        .unwrap(),
        1
    );
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}

/// More distinct devices than a state holds exactly: the rollup answer is an estimate within
/// the documented bound and says so; the raw answer is exact and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unique_counts_are_marked_estimates_within_the_bound() {
    let ch = shared();
    let db = unique_database("analyzer_hll");
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    // 40,000 events of 6,000 devices (half of them failing) over 14 days, two tenants.
    let generate = |first: u64, received: &str| {
        format!(
            "INSERT INTO {db}.enrollment_events (tenant, event_id, device_id, occurred_at, received_at, \
             platform, stage, outcome, error_code, error_has_code, source_kind, user_principal_name) \
             SELECT ['contoso', 'fabrikam'][d % 2 + 1], generateUUIDv4(), concat('dev', toString(d)), \
             toDateTime({T0} + (number * 7919) % (14 * 86400), 'UTC'), {received}, 'windows', 'complete', \
             if(d % 2 = 0, 'failed', 'succeeded'), if(d % 2 = 0, 2149056532, 0), toUInt8(d % 2 = 0), \
             'simulator', concat('user', toString(d % 2500), '@x.com') \
             FROM (SELECT number, (number + {first}) % 6000 AS d FROM numbers(20000))"
        )
    };
    ch.execute(&generate(0, "now() - 60")).await.unwrap();
    let analyzer = Analyzer::start(ch, &db, &[]).await;
    ch.execute(&generate(3000, "now()")).await.unwrap();
    let token = analyzer.create_key(&["--all-tenants"]);
    let range = format!("from={}&to={}", iso(T0), iso(T0 + 14 * DAY));
    let raw = analyzer
        .ok(&format!("/api/v1/summary?{range}&source=raw"), &token)
        .await;
    let raw = &raw["summary"];
    assert_eq!(raw["devices"], 6000);
    assert_eq!(raw["affected_devices"], 3000);
    assert_eq!(raw["estimated"], false);
    for extra in ["", "&tenant=contoso", "&platform=windows"] {
        let body = analyzer
            .ok(&format!("/api/v1/summary?{range}{extra}"), &token)
            .await;
        let want = analyzer
            .ok(
                &format!("/api/v1/summary?{range}{extra}&source=raw"),
                &token,
            )
            .await;
        let (got, want) = (&body["summary"], &want["summary"]);
        assert_eq!(got["events"], want["events"], "{extra}");
        assert_eq!(got["estimated"], true, "{extra}: {got}");
        for k in ["devices", "affected_devices", "users", "affected_users"] {
            let (g, w) = (got[k].as_f64().unwrap(), want[k].as_f64().unwrap());
            assert!(
                (g - w).abs() <= 0.02 * w,
                "{extra} {k}: rollups {g}, exact {w}"
            );
        }
    }
    // The affected-devices list: its total is the same estimate without a search (flagged),
    // exact with `source=raw` and with a search; its pages are exact either way.
    let list = analyzer
        .ok(
            &format!("/api/v1/affected-devices?{range}&limit=1000"),
            &token,
        )
        .await;
    assert_eq!(list["total_estimated"], true, "{}", list["total"]);
    let total = list["total"].as_f64().unwrap();
    assert!(
        (total - 3000.0).abs() <= 0.02 * 3000.0,
        "estimated total {total}"
    );
    assert_eq!(list["devices"].as_array().unwrap().len(), 1000);
    let raw_list = analyzer
        .ok(
            &format!("/api/v1/affected-devices?{range}&limit=1000&source=raw"),
            &token,
        )
        .await;
    assert_eq!(raw_list["total"], 3000);
    assert_eq!(raw_list["total_estimated"], false);
    assert_eq!(list["devices"], raw_list["devices"]);
    // Every failing device id is even: "dev1" matches dev1, dev10..dev19, dev100.. (1,111 of
    // the 6,000 ids), of which the even ones fail: 555.
    let searched = analyzer
        .ok(
            &format!("/api/v1/affected-devices?{range}&limit=1&q=DEV1"),
            &token,
        )
        .await;
    assert_eq!(searched["total"], 555);
    assert_eq!(searched["total_estimated"], false);
    // The tenant breakdown (per-tenant totals, migration 0007): 3,000 devices per tenant.
    let got = analyzer
        .ok(&format!("/api/v1/breakdown/tenant?{range}"), &token)
        .await;
    let want = analyzer
        .ok(
            &format!("/api/v1/breakdown/tenant?{range}&source=raw"),
            &token,
        )
        .await;
    let (got, want) = (
        got["rows"].as_array().unwrap(),
        want["rows"].as_array().unwrap(),
    );
    assert_eq!(got.len(), 2);
    assert_eq!(want.len(), 2);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["key"], w["key"]);
        assert_eq!(g["events"], w["events"]);
        assert_eq!(g["failures"], w["failures"]);
        assert_eq!(g["estimated"], true, "{g}");
        assert_eq!(w["estimated"], false, "{w}");
        for k in ["devices", "affected_devices", "users", "affected_users"] {
            let (gv, wv) = (g[k].as_f64().unwrap(), w[k].as_f64().unwrap());
            assert!(
                (gv - wv).abs() <= 0.02 * wv,
                "tenant {} {k}: rollups {gv}, exact {wv}",
                g["key"]
            );
        }
    }
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}

/// Time series read finalized numbers for closed buckets whose stored event count still equals
/// the rollup's; a late event sends its bucket back to the states until the next finalize
/// pass. Also checks which rollups the default dashboard questions read (facets, cores,
/// narrow families, finalized buckets), from the analyzer's SQL log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_read_finalized_buckets_until_late_events_arrive() {
    let ch = shared();
    let db = unique_database("analyzer_series");
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    let before = events_over(5, 2000, now().saturating_sub(60), 3);
    insert_events(ch, &db, &before).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sql.log");
    let analyzer = Analyzer::start_with_sql_log(ch, &db, &log).await;
    let token = analyzer.create_key(&["--all-tenants"]);
    let c = classifier();
    // Every closed bucket was finalized at start: 3 days of hours, fleet and per tenant.
    assert_eq!(
        ch.count(
            &format!(
                "SELECT count() FROM {db}.rollup_closed_series WHERE width = 3600 AND all_tenants = 1"
            ),
            &[]
        )
        .await
        .unwrap(),
        72
    );
    let check = |all: Vec<fleetpulse_tests::harness::rows::EnrollmentEventRow>| {
        let analyzer = &analyzer;
        let token = token.clone();
        async move {
            let cases = [
                ("1h", 3600u32, T0, T0 + 3 * DAY, ""),
                ("1h", 3600, T0 + 1234, T0 + 2 * DAY + 777, "&tenant=contoso"),
                ("1d", DAY, T0, T0 + 3 * DAY, ""),
                ("15m", 900, T0 + 3 * 3600 + 5, T0 + 20 * 3600, ""),
                ("5m", 300, T0, T0 + 10 * 3600, "&tenant=fabrikam"),
            ];
            for (bucket, step, from, to, extra) in cases {
                let path = format!(
                    "/api/v1/timeseries?from={}&to={}&bucket={bucket}{extra}",
                    iso(from),
                    iso(to)
                );
                let body = analyzer.ok(&path, &token).await;
                let points = body["points"].as_array().unwrap();
                let first = from / step * step;
                assert_eq!(points.len() as u32, (to - first).div_ceil(step), "{path}");
                let tenant = extra.strip_prefix("&tenant=");
                let keep = in_range(from, to);
                let want = brute(
                    &all,
                    |r| keep(r) && tenant.is_none_or(|t| r.tenant == t),
                    |r| Some(Some(iso(r.occurred_at / step * step))),
                );
                for p in points {
                    let t = p["t"].as_str().unwrap().to_owned();
                    let w = want.get(&Some(t.clone())).cloned().unwrap_or_default();
                    assert_eq!(Counts::from_json(p), w, "{path} at {t}");
                    assert_eq!(p["estimated"], false, "{path} at {t}");
                }
            }
        }
    };
    check(before.clone()).await;
    let sql = std::fs::read_to_string(&log).unwrap();
    assert!(
        sql.contains(".rollup_closed_series"),
        "series never read finalized buckets"
    );

    // Late events in buckets already finalized: their counts no longer match, the series
    // answers them from states (still exact), and a finalize pass stores them anew.
    let late = events_over(6, 300, now(), 3);
    insert_events(ch, &db, &late).await;
    let all: Vec<_> = before.iter().chain(late.iter()).cloned().collect();
    check(all.clone()).await;
    let client = clickhouse::Client::default()
        .with_url(ch.url())
        .with_validation(false);
    fleetpulse_analyzer::query::series::finalize(&client, &db, 0)
        .await
        .unwrap();
    check(all.clone()).await;
    // The newest version of a refinalized bucket holds every event.
    assert_eq!(
        ch.count(
            &format!(
                "SELECT sum(e) FROM (SELECT argMax(events, version) AS e FROM {db}.rollup_closed_series \
                 WHERE width = 86400 AND all_tenants = 1 GROUP BY bucket)"
            ),
            &[]
        )
        .await
        .unwrap(),
        all.len() as u64
    );

    // The default dashboard questions read the narrow families.
    std::fs::write(&log, "").unwrap();
    let range = format!("from={}&to={}", iso(T0 + 1234), iso(T0 + 3 * DAY - 99));
    for dim in ["platform", "stage", "category", "code", "tenant", "outcome"] {
        let path = format!("/api/v1/breakdown/{dim}?{range}&limit=1000");
        let body = analyzer.ok(&path, &token).await;
        let want = brute(
            &all,
            |r| {
                in_range(T0 + 1234, T0 + 3 * DAY - 99)(r)
                    && (dim != "category" || r.outcome == "failed")
            },
            |r| Some(key_of(&c, dim, r)),
        );
        assert_eq!(rows_to_map(&body), want, "{path}");
    }
    analyzer
        .ok(&format!("/api/v1/summary?{range}"), &token)
        .await;
    let sql = std::fs::read_to_string(&log).unwrap();
    for table in [
        "rollup_fleet_facets_daily",
        "rollup_fleet_cores_daily",
        "rollup_tenant_totals_daily",
        "rollup_fleet_narrow_daily",
    ] {
        assert!(
            sql.contains(&format!(".{table} ")),
            "{table} never read:\n{sql}"
        );
    }
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}

/// A span test's fixture: a fresh database holding `rows`, an analyzer without a span builder
/// (the test builds spans itself, so every count is exact and spans are surely behind once late
/// events arrive) logging its SQL, and a ClickHouse client for the builder.
struct SpanFixture {
    db: String,
    analyzer: Analyzer,
    token: String,
    log: std::path::PathBuf,
    client: clickhouse::Client,
    _dir: tempfile::TempDir,
}

async fn span_fixture(prefix: &str, rows: &[EnrollmentEventRow]) -> SpanFixture {
    let ch = shared();
    let db = unique_database(prefix);
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    insert_events(ch, &db, rows).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sql.log");
    let analyzer = Analyzer::start_with_env(
        ch,
        &db,
        &["--week-spans-interval-secs", "0"],
        &[(fleetpulse_analyzer::query::engine::sql_log::ENV, &log)],
    )
    .await;
    let token = analyzer.create_key(&["--all-tenants"]);
    let client = clickhouse::Client::default()
        .with_url(ch.url())
        .with_validation(false);
    SpanFixture {
        db,
        analyzer,
        token,
        log,
        client,
        _dir: dir,
    }
}

/// Week and day spans (migrations 0011 and 0012): the analyzer builds heads and tails of the
/// stored weeks, and of the last days' hours, at start; a breakdown over a range whose edge
/// days are a tail and a head reads them and equals brute force, as does one whose edge hours
/// are a day's head; late events in those days put the spans behind, and the answers (read
/// from the days and hours again) still equal brute force; a rebuild brings the spans back,
/// holding every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakdowns_read_week_spans_until_late_events_arrive() {
    let ch = shared();
    // T0 is Friday 2024-03-01: 24 days are a tail (Friday to Sunday), two whole weeks and
    // Monday to Sunday 03-24 of the third.
    let before = events_over(11, 3000, now().saturating_sub(60), 24);
    let SpanFixture {
        db,
        analyzer,
        token,
        log,
        client,
        _dir,
    } = span_fixture("analyzer_spans", &before).await;
    let c = classifier();
    let in_days =
        |rows: &[fleetpulse_tests::harness::rows::EnrollmentEventRow], from: u32, to: u32| {
            rows.iter()
                .filter(|r| r.occurred_at >= from && r.occurred_at < to)
                .count() as u64
        };
    // The tail Friday-Sunday (bucket T0) and the head Monday 03-18 to Friday 03-22 (bucket
    // 03-22) of the category family hold every event of their days once built.
    let (head_from, head_to) = (T0 + 17 * DAY, T0 + 22 * DAY);
    let span_events = |table: &'static str, bucket: u32| {
        let db = db.clone();
        async move {
            ch.count(
                &format!(
                    "SELECT countMerge(events) FROM {db}.{table} WHERE bucket = toDateTime({bucket}, 'UTC')"
                ),
                &[],
            )
            .await
            .unwrap()
        }
    };
    let built = fleetpulse_analyzer::rollups::spans::build(&client, &db, None, 0, now())
        .await
        .unwrap();
    // 7 families x the 4 weeks the 24 days touch (03-01's week holds its tail only), and
    // 4 families x the 9 days kept back from the newest hour (03-24 23:00): 03-16 to 03-24.
    assert_eq!(
        built,
        fleetpulse_analyzer::rollups::spans::Built {
            rebuilt: 28 + 36,
            dropped: 0,
            day_spans_since: T0 + 15 * DAY,
        },
        "weeks and days built"
    );
    // The head of 03-23 to 06:59 (bucket 06:00) and the tail of 03-16 from 05:00.
    assert_eq!(
        span_events("rollup_tenant_totals_day_heads", head_to + 6 * 3600).await,
        in_days(&before, head_to, head_to + 7 * 3600)
    );
    // (A facets row counts an event once per facet: platform, method, stage, OS version and
    // source kind.)
    assert_eq!(
        span_events("rollup_fleet_facets_day_tails", T0 + 15 * DAY + 5 * 3600).await,
        5 * in_days(&before, T0 + 15 * DAY + 5 * 3600, T0 + 16 * DAY)
    );

    assert_eq!(
        span_events("rollup_fleet_cores_tails", T0).await,
        in_days(&before, T0, T0 + 3 * DAY)
    );
    assert_eq!(
        span_events("rollup_tenant_totals_heads", head_to - DAY).await,
        in_days(&before, head_from, head_to)
    );

    let check = |all: Vec<fleetpulse_tests::harness::rows::EnrollmentEventRow>| {
        let analyzer = &analyzer;
        let token = token.clone();
        let c = &c;
        async move {
            // Aligned (tail + 2 weeks + head) and unaligned (hours and raw rows beside them).
            for (from, to) in [(T0, head_to), (T0 - 5 * 3600 - 7, head_to + 7 * 3600 + 11)] {
                for dim in ["category", "code", "platform", "tenant", "stage", "outcome"] {
                    let path = format!(
                        "/api/v1/breakdown/{dim}?from={}&to={}&limit=1000",
                        iso(from),
                        iso(to)
                    );
                    let body = analyzer.ok(&path, &token).await;
                    let keep = in_range(from, to);
                    let want = if dim == "category" {
                        brute(
                            &all,
                            |r| keep(r) && r.outcome == "failed",
                            |r| Some(key_of(c, dim, r)),
                        )
                    } else {
                        brute(&all, &keep, |r| Some(key_of(c, dim, r)))
                    };
                    assert_eq!(rows_to_map(&body), want, "{path}");
                }
            }
        }
    };
    let log_len = || std::fs::read_to_string(&log).unwrap().len();
    let reads_spans = |from: usize| {
        let sql = std::fs::read_to_string(&log).unwrap();
        // A span read by a question (not by the check before it): its bucket alone.
        sql[from..].contains("_tails WHERE ((bucket = toDateTime(")
            && sql[from..].contains("_heads WHERE ((bucket = toDateTime(")
            && sql[from..].contains("_day_heads WHERE ((bucket = toDateTime(")
    };
    let start = log_len();
    check(before.clone()).await;
    assert!(reads_spans(start), "built spans were not read");

    // Late events on the tail's Saturday and the head's Wednesday: both spans are behind.
    let late: Vec<_> = events_over(12, 400, now(), 24)
        .into_iter()
        .filter(|r| {
            (r.occurred_at >= T0 + DAY && r.occurred_at < T0 + 2 * DAY)
                || (r.occurred_at >= T0 + 19 * DAY && r.occurred_at < T0 + 20 * DAY)
        })
        .collect();
    assert!(!late.is_empty());
    insert_events(ch, &db, &late).await;
    let all: Vec<_> = before.iter().chain(late.iter()).cloned().collect();
    let start = log_len();
    check(all.clone()).await;
    // The spans are behind (nothing rebuilt them). Each question ran on the spans while they
    // were checked (`Engine::with_checked_spans`); the check found them behind, so the answers
    // above (equal to brute force) came from the questions asked again over the days.
    assert_eq!(
        span_events("rollup_fleet_cores_tails", T0).await,
        in_days(&before, T0, T0 + 3 * DAY)
    );
    let sql = std::fs::read_to_string(&log).unwrap();
    assert!(
        sql[start..].contains("_daily WHERE ((bucket >= toDateTime("),
        "spans behind their days: no question re-read the days"
    );

    // The analyzer without a builder has run no pass.
    let metrics = span_metrics(&analyzer).await;
    assert_eq!(
        metrics,
        (0, 0, 0),
        "passes, rebuilt, failures without a builder"
    );

    // The builder of `serve` (a second analyzer, default interval) rebuilds at its first pass
    // the two weeks it finds behind (7 families x 2 weeks: every family holds every event)
    // and the day it finds behind among the days kept (03-20, 4 families), and says so on
    // /metrics.
    let builder = Analyzer::start(ch, &db, &[]).await;
    let metrics = fleetpulse_tests::harness::poll_until(
        std::time::Duration::from_secs(120),
        "the builder's first span pass",
        || async {
            let m = span_metrics(&builder).await;
            if m.0 >= 1 { Ok(m) } else { Err(m) }
        },
    )
    .await;
    assert_eq!(
        (metrics.1, metrics.2),
        (14 + 4, 0),
        "(family, week or day) rebuilt and failed passes"
    );
    drop(builder);
    assert_eq!(
        span_events("rollup_fleet_cores_tails", T0).await,
        in_days(&all, T0, T0 + 3 * DAY)
    );
    assert_eq!(
        fleetpulse_analyzer::rollups::spans::build(&client, &db, None, 0, now())
            .await
            .unwrap()
            .rebuilt,
        0,
        "a pass after the builder's finds nothing behind"
    );
    let start = log_len();
    check(all.clone()).await;
    assert!(reads_spans(start), "rebuilt spans were not read");

    // An event 40 days after T0 moves the newest hour on: the next pass builds its day and
    // its week, and drops every day span older than the 9 days kept back from it (03-16 to
    // 03-24 in 4 families), so the day span tables stay bounded.
    let mut newer = events_over(13, 1, now(), 1);
    newer[0].occurred_at = T0 + 40 * DAY + 12 * 3600;
    insert_events(ch, &db, &newer).await;
    let moved = fleetpulse_analyzer::rollups::spans::build(&client, &db, None, 0, now())
        .await
        .unwrap();
    assert_eq!(
        moved,
        fleetpulse_analyzer::rollups::spans::Built {
            rebuilt: 7 + 4,
            dropped: 36,
            day_spans_since: T0 + 32 * DAY,
        }
    );
    for table in [
        "rollup_fleet_narrow_day_heads",
        "rollup_fleet_facets_day_tails",
        "rollup_tenant_totals_day_heads",
        "rollup_fleet_cores_day_tails",
    ] {
        assert_eq!(
            ch.count(
                &format!(
                    "SELECT count() FROM {db}.{table} WHERE bucket < toDateTime({}, 'UTC')",
                    T0 + 32 * DAY
                ),
                &[]
            )
            .await
            .unwrap(),
            0,
            "{table} keeps dropped days"
        );
    }

    // An analyzer without a builder learns which days hold day spans from the span tables
    // (from 03-31 on: the days between hold no events, so no spans), and reads the hour edges
    // of older days as hours at once: no span read, no check failing, no second question.
    assert_eq!(
        fleetpulse_analyzer::rollups::spans::day_spans_held_since(&client, &db)
            .await
            .unwrap(),
        Some(T0 + 40 * DAY)
    );
    let reader = Analyzer::start_with_env(
        ch,
        &db,
        &["--week-spans-interval-secs", "0"],
        &[(fleetpulse_analyzer::query::engine::sql_log::ENV, &log)],
    )
    .await;
    let reader_token = reader.create_key(&["--all-tenants"]);
    let (from, to) = (T0 + 19 * DAY + 5 * 3600, T0 + 22 * DAY + 7 * 3600);
    let path = format!(
        "/api/v1/breakdown/platform?from={}&to={}&limit=1000",
        iso(from),
        iso(to)
    );
    let body = fleetpulse_tests::harness::poll_until(
        std::time::Duration::from_secs(30),
        "a reader without a builder reading dropped days' hour edges as hours",
        || async {
            let start = log_len();
            let body = reader.ok(&path, &reader_token).await;
            let sql = std::fs::read_to_string(&log).unwrap();
            if sql[start..].contains("_day_heads WHERE")
                || sql[start..].contains("_day_tails WHERE")
            {
                Err(format!("day spans read:\n{}", &sql[start..]))
            } else {
                Ok(body)
            }
        },
    )
    .await;
    let all: Vec<_> = all.iter().chain(newer.iter()).cloned().collect();
    assert_eq!(
        rows_to_map(&body),
        brute(&all, in_range(from, to), |r| Some(key_of(
            &c, "platform", r
        ))),
        "{path}"
    );
    drop(reader);
    drop(analyzer);
}

/// (passes, (family, week or day) rebuilt, failed passes) of the span builder, from /metrics.
async fn span_metrics(a: &Analyzer) -> (u64, u64, u64) {
    let m = fleetpulse_tests::harness::http::get(a.addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(m.status, 200);
    let value = |name: &str| -> u64 {
        fleetpulse_tests::harness::http::metric_value(&m.body, name)
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{}", m.body)) as u64
    };
    (
        value("fleetpulse_analyzer_week_span_passes_total"),
        value("fleetpulse_analyzer_week_spans_rebuilt_total"),
        value("fleetpulse_analyzer_week_span_pass_failures_total"),
    )
}

/// Day spans at the real clock (migration 0012, `plan::settle_day_spans`): the dashboard's
/// 7-day view ends at the next whole hour, so its answers read the tail of the day 7 days back
/// and today's head, cut at the last hour settled ten minutes ago (the hours after it are
/// hourly rows: the current hour's head is not built yet). Answers equal brute force over
/// events of the last two days, and the question reads the day spans the builder made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seven_day_view_reads_day_spans_up_to_the_settled_hour() {
    let ch = shared();
    // 2,000 events over the two days before now (at least two minutes old).
    let start = now() - 2 * DAY - 120;
    let mut rows = events_over(21, 2000, now().saturating_sub(60), 2);
    for r in &mut rows {
        r.occurred_at = start + (r.occurred_at - T0);
    }
    let SpanFixture {
        db,
        analyzer,
        token,
        log,
        client,
        _dir,
    } = span_fixture("analyzer_day_spans", &rows).await;
    let built = fleetpulse_analyzer::rollups::spans::build(&client, &db, None, 0, now())
        .await
        .unwrap();
    assert!(built.rebuilt >= 4 * 2, "two days in 4 families: {built:?}");

    let asked_at = now();
    let to = asked_at.div_ceil(3600) * 3600;
    let from = to - 7 * DAY;
    let c = classifier();
    for dim in ["platform", "tenant", "outcome", "category", "stage"] {
        let path = format!(
            "/api/v1/breakdown/{dim}?from={}&to={}&limit=1000",
            iso(from),
            iso(to)
        );
        let body = analyzer.ok(&path, &token).await;
        let keep = in_range(from, to);
        let want = if dim == "category" {
            brute(
                &rows,
                |r| keep(r) && r.outcome == "failed",
                |r| Some(key_of(&c, dim, r)),
            )
        } else {
            brute(&rows, &keep, |r| Some(key_of(&c, dim, r)))
        };
        assert_eq!(rows_to_map(&body), want, "{path}");
    }
    let sql = std::fs::read_to_string(&log).unwrap();
    // The tail of the day 7 days back, from the range's first hour, read by its bucket, when
    // it is 2 hours or more (the range ending at 01:00 to 22:00 UTC; ending at midnight it is
    // whole days, at 23:00 one hourly row).
    if (3600..=22 * 3600).contains(&(to % DAY)) {
        let tail = format!("_day_tails WHERE ((bucket = toDateTime({from}, 'UTC'))");
        assert!(
            sql.contains(&tail),
            "the 7-day view read no day tail:\n{sql}"
        );
    }
    // Today's head: cut at the hour settled ten minutes before the question, read when it is
    // two hours or more (from 02:10 UTC); between 00:00 and 02:10 today's hours are hourly rows.
    // Asked after 23:00 the range ends at midnight and today is a whole day (daily rows).
    let settled = (asked_at - 600) / 3600 * 3600;
    let midnight = asked_at / DAY * DAY;
    if !to.is_multiple_of(DAY) && settled >= midnight + 2 * 3600 && now() / 3600 == asked_at / 3600
    {
        // A head's bucket is its last hour; the hours from the cut on are hourly rows, read in
        // the same statement as the first hour when the range starts at 23:00.
        let head = format!(
            "_day_heads WHERE ((bucket = toDateTime({}, 'UTC'))",
            settled - 3600
        );
        let after = format!("(bucket >= toDateTime({settled}, 'UTC') AND bucket < ");
        let hours_after = sql
            .split(";;")
            .any(|statement| statement.contains("_hourly WHERE ") && statement.contains(&after));
        assert!(
            sql.contains(&head) && hours_after,
            "today's head (to {}) and the hours after it were not read:\n{sql}",
            iso(settled)
        );
    }
    drop(analyzer);
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}
