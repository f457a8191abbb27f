//! The `classify` command: NDJSON in, one object per non-blank line out, errors per line.

use std::path::Path;

use fleetpulse_analyzer::classify::cli::{ClassifyArgs, ClassifyError, ClassifyStats, run};
use serde_json::{Value, json};

fn run_lines(input: &[u8]) -> (Vec<Value>, ClassifyStats) {
    let mut out = Vec::new();
    let stats = run(&ClassifyArgs::default(), input, &mut out).expect("run succeeds");
    let text = String::from_utf8(out).expect("utf-8 output");
    let values = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (values, stats)
}

#[test]
fn every_input_form_is_classified_in_order() {
    let input = concat!(
        "{\"code\":\"0x80180014\"}\n",
        "{\"code\":\"80180014\"}\n",
        "{\"code\":\"0X80180014\"}\n",
        "{\"code\":-2145910764}\n",
        "{\"code\":2149056532}\n",
        "{\"code\":\"-2145910764\"}\n",
        "{\"code\":\"  0x80180014 \"}\n",
        "{\"code\":\"0x80180002b\",\"message\":\"Auto MDM Enroll: Failed\"}\n",
        "{\"code\":\"0x80180014\",\"message\":\"Enrollment blocked for AP device by SDM One Time Limit Check\",\"platform\":\"windows\",\"source\":\"event_log\",\"stage\":\"authorization\"}\n",
        "{\"symbol\":\"AuthorizationError\",\"message\":\"DeviceCapReached\"}\n",
        "{\"code\":\"0x12345678\"}\n",
        "{\"code\":null,\"symbol\":null,\"message\":\"nothing known\"}\n",
    );
    let (out, stats) = run_lines(input.as_bytes());
    assert_eq!(
        stats,
        ClassifyStats {
            lines: 12,
            blank: 0,
            classified: 12,
            unknown: 2,
            errors: 0
        }
    );
    for (i, value) in out.iter().take(7).enumerate() {
        assert_eq!(value["line"], i as u64 + 1);
        assert_eq!(value["category"], "platform_blocked", "line {}", i + 1);
        assert_eq!(value["code"], "0x80180014");
        assert_eq!(value["failure_reason"], "enrollmentRestrictionsEnforced");
        assert!(value["cause"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(value["remediation"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(value["source_doc"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(value.get("code_corrected_from"), None);
    }
    assert_eq!(out[7]["code"], "0x8018002B");
    assert_eq!(out[7]["category"], "tenant_config");
    assert_eq!(out[7]["code_corrected_from"], "0x80180002b");
    assert_eq!(out[8]["category"], "autopilot");
    assert_eq!(out[8]["matched_by"], "rule");
    assert_eq!(
        out[8]["rule_id"],
        "sdm_one_time_limit_is_autopilot_redeploy"
    );
    assert_eq!(out[9]["category"], "device_cap");
    assert_eq!(out[9]["code"], Value::Null);
    assert_eq!(
        (
            &out[10]["category"],
            &out[10]["code"],
            &out[10]["matched_by"]
        ),
        (&json!("unknown"), &json!("0x12345678"), &json!("none"))
    );
    assert_eq!(
        (&out[11]["category"], &out[11]["code"]),
        (&json!("unknown"), &Value::Null)
    );
}

#[test]
fn malformed_lines_get_an_error_object_and_the_rest_still_run() {
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(b"{\"code\":\"0x80180013\"}\n");
    input.extend_from_slice(b"not json\n");
    input.extend_from_slice(b"\n   \n");
    input.extend_from_slice(b"[1,2]\n");
    input.extend_from_slice(b"{\"code\":\"zzz\"}\n");
    input.extend_from_slice(b"{\"code\":true}\n");
    input.extend_from_slice(b"{\"code\":4294967296}\n");
    input.extend_from_slice(b"{\"code\":1.5}\n");
    input.extend_from_slice(b"{\"cod\":\"0x80180013\"}\n");
    input.extend_from_slice(b"{\"message\":\"\xff\xfe\"}\n");
    input.extend_from_slice(b"{\"symbol\":\"DeviceCapReached\"}");
    let (out, stats) = run_lines(&input);
    assert_eq!(
        stats,
        ClassifyStats {
            lines: 12,
            blank: 2,
            classified: 2,
            unknown: 0,
            errors: 8
        }
    );
    let lines: Vec<u64> = out
        .iter()
        .map(|v| v["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, [1, 2, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(out[0]["category"], "device_cap");
    let error = |i: usize| out[i]["error"].as_str().expect("error string").to_string();
    assert!(
        error(1).starts_with("invalid JSON: expected ident at line 1 column 2"),
        "{}",
        error(1)
    );
    assert_eq!(error(2), "expected a JSON object, got an array");
    assert_eq!(
        error(3),
        "field `code`: \"zzz\" is not an error code: expected hex (0x80180014, 80180014) or decimal (-2145910764, 2149056532)"
    );
    assert_eq!(
        error(4),
        "field `code`: expected a string or an integer, got a boolean"
    );
    assert_eq!(error(5), "field `code`: 4294967296 does not fit in 32 bits");
    assert_eq!(error(6), "field `code`: 1.5 is not an integer");
    assert!(
        error(7).starts_with("unknown field `cod`, expected one of"),
        "{}",
        error(7)
    );
    assert!(
        error(8).starts_with("line is not valid UTF-8"),
        "{}",
        error(8)
    );
    assert_eq!(out[9]["category"], "device_cap");
    for value in &out[1..9] {
        assert_eq!(value.as_object().map(|o| o.len()), Some(2), "{value}");
    }
}

#[test]
fn catalog_option_loads_a_directory_and_reports_bad_paths() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let args = ClassifyArgs { catalog: Some(dir) };
    let mut out = Vec::new();
    let stats = run(&args, &b"{\"code\":\"0x80180018\"}\n"[..], &mut out).expect("run");
    assert_eq!(stats.classified, 1);
    let value: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(value["category"], "license");

    let missing = ClassifyArgs {
        catalog: Some("/nonexistent/fleetpulse-catalog".into()),
    };
    match run(&missing, &b""[..], Vec::new()) {
        Err(ClassifyError::Catalog(err)) => assert!(
            err.to_string()
                .starts_with("reading catalog /nonexistent/fleetpulse-catalog: "),
            "{err}"
        ),
        other => panic!("expected a catalog error, got {other:?}"),
    }
}

#[test]
fn empty_input_writes_nothing() {
    let (out, stats) = run_lines(b"");
    assert!(out.is_empty());
    assert_eq!(stats, ClassifyStats::default());
}

#[test]
fn prose_answers_carry_their_evidence() {
    let (out, _) = run_lines(
        b"{\"message\":\"Users cannot enroll: the number of enrolled devices already equals their device limit restriction\"}\n{\"message\":\"Enrollment failed on one device\"}\n",
    );
    assert_eq!(out[0]["category"], "device_cap");
    assert_eq!(out[0]["matched_by"], "prose");
    assert_eq!(
        out[0]["evidence"][0]["origin"],
        json!("phrases general-device-cap")
    );
    assert_eq!(
        out[0]["evidence"][0]["matched"],
        json!([
            "already",
            "devic",
            "enroll",
            "equal",
            "limit",
            "number",
            "restriction"
        ])
    );
    // Other answers have no evidence key at all.
    assert_eq!(out[1]["category"], "unknown");
    assert!(out[1].get("evidence").is_none());
}
