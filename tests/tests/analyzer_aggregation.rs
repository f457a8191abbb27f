//! The analyzer's aggregate answers (rollups, raw edges, raw-only) against brute-force counts
//! over the generated rows, with history backfilled at migration and later rows arriving
//! through the materialized views.

mod analyzer_support;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use analyzer_support::*;
use fleetpulse_tests::harness::{shared, unique_database};
use serde_json::Value;

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn rows_to_map(body: &Value) -> BTreeMap<Option<String>, Counts> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {body}"))
        .iter()
        .map(|r| (r["key"].as_str().map(str::to_owned), Counts::from_json(r)))
        .collect()
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
    let before = events_over(1, 2500, now().saturating_sub(60), 12);
    insert_events(ch, &db, &before).await;
    let analyzer = Analyzer::start(ch, &db, &[]).await;
    // Rows arriving after the views exist: reach the rollups through the views only.
    let after = events_over(2, 2500, now(), 12);
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
            ] {
                let path = format!(
                    "/api/v1/breakdown/{dim}?from={}&to={}&source={source}&limit=1000",
                    iso(from),
                    iso(to)
                );
                let body = analyzer.ok(&path, &token).await;
                let got = rows_to_map(&body);
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
                let want = brute(
                    &all,
                    |r| {
                        keep(r)
                            && tenant.as_ref().is_none_or(|t| &r.tenant == t)
                            && platform.as_ref().is_none_or(|p| &r.platform == p)
                            && cat
                                .as_ref()
                                .is_none_or(|k| r.outcome == "failed" && &category(&c, r) == k)
                    },
                    |_| Some(None),
                );
                let want = want.get(&None).cloned().unwrap_or_default();
                assert_eq!(Counts::from_json(&body["summary"]), want, "{path}");
                // Top categories: the five with most failures, exact counts.
                let by_cat = brute(
                    &all,
                    |r| {
                        keep(r)
                            && r.outcome == "failed"
                            && tenant.as_ref().is_none_or(|t| &r.tenant == t)
                            && platform.as_ref().is_none_or(|p| &r.platform == p)
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
            "/api/v1/timeseries?from={}&to={}&bucket={bucket}&platform=ios&source={source}",
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
            |r| keep(r) && r.platform == "ios",
            |r| Some(Some(iso(r.occurred_at / step * step))),
        );
        for p in points {
            let t = p["t"].as_str().unwrap().to_owned();
            let w = want.get(&Some(t.clone())).cloned().unwrap_or_default();
            assert_eq!(Counts::from_json(p), w, "{path} at {t}");
        }
    }

    // Top codes: failures per (code, symbol, category), with the catalog's remediation.
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
            |r| {
                Some(Some(format!(
                    "{:?}|{}|{}",
                    key_of(&c, "code", r),
                    r.error_symbol,
                    category(&c, r)
                )))
            },
        );
        let codes = body["codes"].as_array().unwrap();
        assert_eq!(codes.len(), want.len(), "{body}");
        for code in codes {
            let k = format!(
                "{:?}|{}|{}",
                code["code"].as_str().map(str::to_owned),
                code["symbol"].as_str().unwrap(),
                code["category"].as_str().unwrap()
            );
            let w = &want[&Some(k.clone())];
            assert_eq!(code["failures"].as_u64(), Some(w.failures), "{k}");
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

    // Every rollup holds every row exactly once (backfill + views, no double count), and
    // the weekly and totals families agree with the raw counts too.
    for table in [
        "rollup_events_hourly",
        "rollup_events_daily",
        "rollup_events_weekly",
        "rollup_totals_hourly",
        "rollup_totals_daily",
        "rollup_totals_weekly",
    ] {
        let rolled = ch
            .count(&format!("SELECT countMerge(events) FROM {db}.{table}"), &[])
            .await
            .unwrap();
        assert_eq!(rolled, all.len() as u64, "{table}");
    }
    ch.execute(&format!("DROP DATABASE {db}")).await.unwrap();
}
