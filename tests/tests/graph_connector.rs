//! The Microsoft Graph connector (`fleetpulse-agent graph`) end to end: the real binary against
//! a local server playing Graph and the Entra token endpoint (responses shaped like Microsoft's
//! documentation examples), the real collector and ClickHouse, and the analyzer's API.
//!
//! Covered: paging across many pages, 429 with Retry-After, a token revoked mid-run, malformed
//! and unknown enum values, two tenants with separate credentials (client secret and
//! certificate), an overlap re-read without duplicates, kill -9 mid-run and resume from the
//! stored nextLink, and one breakdown counting server- and client-side failures together.

#[path = "analyzer_support/mod.rs"]
mod analyzer_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use analyzer_support::Analyzer;
use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentStage, Outcome, Platform, ReportedError, Source,
    SourceKind, TelemetryItem, telemetry_item,
};
use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::graph::{FakeCredential, FakeGraph, FakeTenant};
use fleetpulse_tests::harness::process::{signal, spawn_guarded, wait_timeout};
use fleetpulse_tests::harness::{Fixture, poll_until};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const WAIT: Duration = Duration::from_secs(90);
const CONTOSO: &str = "contoso.onmicrosoft.com";
const FABRIKAM: &str = "f1b2c3d4-0000-4000-8000-00000000fab1";
const ENTRA_LAPTOP: &str = "3f9d2c1a-5b6e-4f70-8a9b-0c1d2e3f4a5b";
const INTUNE_LAPTOP: &str = "9e8d7c6b-1a2b-4c3d-8e9f-a0b1c2d3e4f5";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/graph")
}

fn iso(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// An `enrollmentTroubleshootingEvent` as Graph returns it (v1.0 property set and order).
fn troubleshooting(
    n: u32,
    at: OffsetDateTime,
    os: &str,
    enrollment_type: Value,
    category: &str,
    reason: &str,
    user: &str,
) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.enrollmentTroubleshootingEvent",
        "id": format!("c4a623f5-23f5-4ca6-8523-{n:012}"),
        "eventDateTime": iso(at),
        "correlationId": format!("7f1d0b1e-{n:04}-4c1c-9a1e-2b3c4d5e6f70"),
        "managedDeviceIdentifier": "00000000-0000-0000-0000-000000000000",
        "operatingSystem": os,
        "osVersion": if os == "iOS" { "17.5.1" } else { "10.0.22631.4602" },
        "userId": user,
        "deviceId": "",
        "enrollmentType": enrollment_type,
        "failureCategory": category,
        "failureReason": reason,
    })
}

fn user_id(n: u32) -> String {
    format!("8a6c3e2b-0000-4d7e-9f00-{n:012}")
}

/// The connector's installation: config, per-tenant state, log.
struct Connector {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Connector {
    fn new(fixture: &Fixture, graph: &FakeGraph, tenants: &str) -> Connector {
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-graph-e2e-")
            .tempdir()
            .unwrap();
        let text = format!(
            "collector = \"{}\"\nstate_dir = \"{}\"\n\n[shipper]\nbatch_max_age_ms = 20\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n\n{}",
            fixture.collector.grpc_url(),
            dir.path().join("state").display(),
            tenants.replace("{graph}", &graph.base_url())
        );
        std::fs::write(dir.path().join("graph.toml"), text).unwrap();
        Connector { dir, child: None }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace_binary("fleetpulse-agent").unwrap());
        command
            .arg("graph")
            .args(args)
            .arg("--config")
            .arg(self.path("graph.toml"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("RUST_LOG", "info");
        command
    }

    async fn register(&self, fixture: &Fixture, tenant: &str, fleetpulse_tenant: &str) {
        let token = fixture
            .collector
            .token_create(fleetpulse_tenant)
            .await
            .unwrap();
        let out = self
            .command(&["register", "--tenant", tenant, "--enrollment-token", &token])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "graph register failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `graph run --once`: returns success and the log.
    fn run_once(&self) -> (bool, String) {
        let log = std::fs::File::create(self.path("once.log")).unwrap();
        let mut child = self
            .command(&["run", "--once", "--drain-timeout-secs", "60"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(120))
            .unwrap()
            .expect("graph run --once did not finish in 120 s");
        (
            status.success(),
            std::fs::read_to_string(self.path("once.log")).unwrap_or_default(),
        )
    }

    /// `graph run` (polling hourly) in the background.
    fn start(&mut self, envs: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("run.log"))
            .unwrap();
        let mut command = self.command(&["run", "--poll-interval-secs", "3600"]);
        command
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(spawn_guarded(command, "fleetpulse-agent graph").unwrap());
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("not running");
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

async fn rows(fixture: &Fixture, tenant: &str) -> Vec<Value> {
    fixture
        .ch
        .query_json(
            &format!(
                "SELECT toString(event_id) AS id, device_id, platform, os_edition, os_version, enrollment_method, stage, outcome, \
                 error_has_code, error_symbol, error_message, source_kind, source_channel, user_principal_name, \
                 attributes.key AS keys, attributes.value AS vals \
                 FROM {}.enrollment_events WHERE tenant = ? ORDER BY occurred_at, id",
                fixture.db
            ),
            &[tenant],
        )
        .await
        .unwrap()
}

fn attr<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    let keys = row["keys"].as_array()?;
    let i = keys.iter().position(|k| k == key)?;
    row["vals"][i].as_str()
}

/// Event ids stored more than once (per tenant).
async fn duplicate_ids(fixture: &Fixture) -> u64 {
    fixture
        .ch
        .count(
            &format!(
                "SELECT count() FROM (SELECT event_id FROM {}.enrollment_events GROUP BY tenant, event_id HAVING count() > 1)",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap()
}

async fn wait_rows(fixture: &Fixture, tenant: &str, n: u64) {
    let what = format!("{n} rows of tenant {tenant}");
    poll_until(WAIT, &what, || async {
        let got = fixture
            .count_where("enrollment_events", "tenant = ?", &[tenant])
            .await
            .map_err(|e| e.to_string())?;
        if got == n {
            Ok(())
        } else {
            Err(format!("{got} rows"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_paged_throttled_token_refreshed_and_one_breakdown_with_agents() {
    let fixture = Fixture::start("graph_e2e").await.unwrap();
    let now = OffsetDateTime::now_utc();
    let start = now - time::Duration::hours(3);

    // Contoso: 20 records on 7 pages of 3, client secret. Devices refused for the cap (iPhones),
    // unlicensed users, an unknown failureCategory, a numeric enrollmentType, a record whose
    // time is unreadable.
    let mut contoso = Vec::new();
    for n in 0..20u32 {
        let at = start + time::Duration::minutes(i64::from(n) * 5);
        let record = match n {
            0..=7 => troubleshooting(
                n,
                at,
                "iOS",
                json!("userEnrollment"),
                "enrollmentRestrictionsEnforced",
                "Device cap reached",
                &user_id(n % 3),
            ),
            8..=13 => troubleshooting(
                n,
                at,
                "Windows",
                json!("windowsAzureADJoin"),
                "userValidation",
                "User is not licensed for Intune",
                &user_id(10 + n),
            ),
            14 => troubleshooting(
                n,
                at,
                "Android",
                json!("androidEnterpriseFullyManaged"),
                "someFutureCategory",
                "A reason nobody documented yet",
                &user_id(30),
            ),
            15 => troubleshooting(
                n,
                at,
                "Android",
                json!(42),
                "authentication",
                "",
                &user_id(31),
            ),
            16 => {
                let mut r = troubleshooting(
                    n,
                    at,
                    "iOS",
                    json!("userEnrollment"),
                    "badRequest",
                    "",
                    &user_id(32),
                );
                r["eventDateTime"] = json!("not a date");
                r
            }
            _ => troubleshooting(
                n,
                at,
                "macOS",
                json!("appleBulkWithUser"),
                "featureNotSupported",
                "",
                &user_id(33),
            ),
        };
        contoso.push(record);
    }
    let mut users: HashMap<String, String> = HashMap::new();
    for n in 0..3 {
        users.insert(user_id(n), format!("phone.user{n}@contoso.com"));
    }
    for n in 18..24 {
        users.insert(user_id(n), format!("unlicensed{n}@contoso.com"));
    }
    // Fabrikam: certificate credential; 4 troubleshooting events and 3 Autopilot deployments.
    let fabrikam_events: Vec<Value> = (0..4u32)
        .map(|n| {
            troubleshooting(
                100 + n,
                start + time::Duration::minutes(i64::from(n)),
                "Windows",
                json!("windowsAutoEnrollment"),
                "authorization",
                "",
                &user_id(100),
            )
        })
        .collect();
    let autopilot = |n: u32, state: &str, device_setup: &str| {
        json!({
            "@odata.type": "#microsoft.graph.deviceManagementAutopilotEvent",
            "id": format!("5a1e2f0c-0000-4000-8000-{n:012}"),
            "deviceId": format!("7d1f3a8e-2222-4b6c-8a55-{n:012}"),
            "userId": "",
            "eventDateTime": iso(start + time::Duration::minutes(30 + i64::from(n))),
            "deviceRegisteredDateTime": iso(start),
            "enrollmentStartDateTime": iso(start),
            "enrollmentType": "azureADJoinedUsingDeviceAuthWithAutopilotProfile",
            "deviceSerialNumber": format!("PF3ABC{n:02}"),
            "managedDeviceName": format!("KIOSK-{n:03}"),
            "userPrincipalName": "",
            "windowsAutopilotDeploymentProfileDisplayName": "Kiosk self-deploying",
            "enrollmentState": "enrolled",
            "windows10EnrollmentCompletionPageConfigurationDisplayName": "Default ESP",
            "windows10EnrollmentCompletionPageConfigurationId": "esp-1",
            "deploymentState": state,
            "deviceSetupStatus": device_setup,
            "accountSetupStatus": "notAttempted",
            "osVersion": "10.0.22631.4602",
            "deploymentDuration": "PT41M12S",
            "deploymentTotalDuration": "PT45M",
            "deviceSetupDuration": "PT38M",
            "accountSetupDuration": "PT0S",
            "deploymentStartDateTime": iso(start),
            "deploymentEndDateTime": iso(start + time::Duration::minutes(45)),
            "enrollmentFailureDetails": if state == "failure" { "App install timeout: Company Portal" } else { "" }
        })
    };
    let public_key = std::fs::read(fixtures().join("test-app.pub.pem")).unwrap();
    let graph = FakeGraph::start(
        vec![
            FakeTenant {
                directory_id: CONTOSO.into(),
                client_id: "11111111-1111-4111-8111-111111111111".into(),
                credential: FakeCredential::Secret("contoso~secret.v1".into()),
                token_lifetime_secs: 3599,
                troubleshooting: contoso,
                autopilot: vec![],
                users,
            },
            FakeTenant {
                directory_id: FABRIKAM.into(),
                client_id: "22222222-2222-4222-8222-222222222222".into(),
                credential: FakeCredential::Certificate(public_key),
                token_lifetime_secs: 3599,
                troubleshooting: fabrikam_events,
                autopilot: vec![
                    autopilot(1, "failure", "failure"),
                    autopilot(2, "success", "success"),
                    autopilot(3, "inProgress", "inProgress"),
                ],
                users: HashMap::new(),
            },
        ],
        3,
    )
    .await;
    graph.throttle_once(CONTOSO, "troubleshootingEvents", 2);
    // The token dies after the 3rd request: Graph answers 401 and the connector gets another.
    graph.revoke_tokens_after(CONTOSO, 3);

    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("contoso.secret");
    std::fs::write(&secret_file, "contoso~secret.v1\n").unwrap();
    let tenants = format!(
        r#"
[[tenant]]
name = "contoso"
directory_id = "{CONTOSO}"
client_id = "11111111-1111-4111-8111-111111111111"
client_secret_file = "{}"
authority = "{{graph}}"
graph_endpoint = "{{graph}}"
autopilot_events = false
requests_per_second = 50.0
overlap_secs = 7200

[[tenant]]
name = "fabrikam"
directory_id = "{FABRIKAM}"
client_id = "22222222-2222-4222-8222-222222222222"
certificate_file = "{}"
private_key_file = "{}"
authority = "{{graph}}"
graph_endpoint = "{{graph}}"
requests_per_second = 50.0
"#,
        secret_file.display(),
        fixtures().join("test-app.crt.pem").display(),
        fixtures().join("test-app.key.pem").display(),
    );
    let connector = Connector::new(&fixture, &graph, &tenants);
    connector.register(&fixture, "contoso", "fp-contoso").await;
    connector
        .register(&fixture, "fabrikam", "fp-fabrikam")
        .await;

    let (ok, log) = connector.run_once();
    assert!(ok, "graph run --once failed:\n{log}");
    // Everything was acknowledged before --once returned: exact rows right away.
    let contoso_rows = rows(&fixture, "fp-contoso").await;
    assert_eq!(
        contoso_rows.len(),
        19,
        "20 records minus the unreadable one"
    );
    let fabrikam_rows = rows(&fixture, "fp-fabrikam").await;
    assert_eq!(fabrikam_rows.len(), 7);
    for row in contoso_rows.iter().chain(&fabrikam_rows) {
        assert_eq!(row["source_kind"], "graph", "{row}");
    }

    // An iPhone refused for the device cap, field by field.
    let first = &contoso_rows[0];
    assert_eq!(first["id"], "c4a623f5-23f5-4ca6-8523-000000000000");
    assert_eq!(first["device_id"], format!("graph-user:{}:ios", user_id(0)));
    assert_eq!(
        (
            first["platform"].as_str(),
            first["os_edition"].as_str(),
            first["os_version"].as_str()
        ),
        (Some("ios"), Some("iOS"), Some("17.5.1"))
    );
    assert_eq!(first["enrollment_method"], "user_driven_byod");
    assert_eq!(first["stage"], "authorization");
    assert_eq!(first["outcome"], "failed");
    assert_eq!(first["error_symbol"], "enrollmentRestrictionsEnforced");
    assert_eq!(first["error_message"], "Device cap reached");
    assert_eq!(
        first["source_channel"],
        "deviceManagement/troubleshootingEvents"
    );
    assert_eq!(first["user_principal_name"], "phone.user0@contoso.com");
    assert_eq!(attr(first, "entra_user_id"), Some(user_id(0).as_str()));
    assert_eq!(attr(first, "entra_tenant_id"), Some(CONTOSO));
    assert_eq!(attr(first, "intune_device_id"), None);
    // Unknown and malformed enum values are kept.
    let unknown = contoso_rows
        .iter()
        .find(|r| r["id"] == "c4a623f5-23f5-4ca6-8523-000000000014")
        .unwrap();
    assert_eq!(unknown["error_symbol"], "someFutureCategory");
    assert_eq!(unknown["enrollment_method"], "android_fully_managed");
    assert_eq!(unknown["stage"], "complete");
    let numeric = contoso_rows
        .iter()
        .find(|r| r["id"] == "c4a623f5-23f5-4ca6-8523-000000000015")
        .unwrap();
    assert_eq!(numeric["enrollment_method"], "unspecified");
    assert_eq!(attr(numeric, "graph_enrollment_type"), Some("invalid:42"));
    // The unreadable record is kept aside with its reason, and named in the log.
    let refused =
        std::fs::read_to_string(connector.path("state/contoso/spool/graph-refused.ndjson"))
            .unwrap();
    let lines: Vec<Value> = refused
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{refused}");
    assert_eq!(
        lines[0]["reason"],
        "eventDateTime: \"not a date\" is not an RFC 3339 date-time"
    );
    assert_eq!(
        lines[0]["record"]["id"],
        "c4a623f5-23f5-4ca6-8523-000000000016"
    );
    // Paging, throttling and the token: 7 pages, page 2 twice (429 then 200), two tokens.
    for page in 0..7 {
        let want = if page == 2 { 2 } else { 1 };
        assert_eq!(
            graph.hits(CONTOSO, "troubleshootingEvents", page),
            want,
            "page {page}: {:?}",
            graph.log()
        );
    }
    assert_eq!(graph.hits(CONTOSO, "troubleshootingEvents", 7), 0);
    assert_eq!(graph.token_requests(CONTOSO), 2, "{log}");
    assert!(
        graph.log().iter().any(|l| l.status == 401),
        "the revoked token was refused once"
    );
    // Fabrikam authenticated with its certificate (the fake verifies the assertion).
    assert_eq!(graph.token_requests(FABRIKAM), 1);
    let failed_deployment = fabrikam_rows
        .iter()
        .find(|r| {
            r["source_channel"] == "deviceManagement/autopilotEvents" && r["outcome"] == "failed"
        })
        .unwrap();
    assert_eq!(
        failed_deployment["enrollment_method"],
        "autopilot_self_deploying"
    );
    assert_eq!(failed_deployment["stage"], "enrollment_status_page");
    assert_eq!(failed_deployment["error_symbol"], "autopilotEspFailure");
    assert_eq!(
        failed_deployment["error_message"],
        "App install timeout: Company Portal"
    );
    assert_eq!(attr(failed_deployment, "serial_number"), Some("PF3ABC01"));
    let outcomes: Vec<&str> = fabrikam_rows
        .iter()
        .filter(|r| r["source_channel"] == "deviceManagement/autopilotEvents")
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["failed", "succeeded", "in_progress"]);
    // The secret never reaches the log.
    assert!(!log.contains("contoso~secret"), "{log}");

    // A second run re-reads the overlap (2 h: most of contoso's records) plus two new ones:
    // only the new ones are stored.
    graph.add_troubleshooting(
        CONTOSO,
        vec![
            troubleshooting(
                40,
                now - time::Duration::minutes(2),
                "iOS",
                json!("userEnrollment"),
                "enrollmentRestrictionsEnforced",
                "Device cap reached",
                &user_id(1),
            ),
            troubleshooting(
                41,
                now - time::Duration::minutes(1),
                "Windows",
                json!("windowsAzureADJoin"),
                "userValidation",
                "User is not licensed for Intune",
                &user_id(20),
            ),
            // A laptop that also runs our agent: Intune knows it by both ids.
            {
                let mut r = troubleshooting(
                    42,
                    now - time::Duration::minutes(1),
                    "Windows",
                    json!("windowsAzureADJoin"),
                    "authorization",
                    "",
                    &user_id(50),
                );
                r["deviceId"] = json!(ENTRA_LAPTOP);
                r["managedDeviceIdentifier"] = json!(INTUNE_LAPTOP);
                r
            },
        ],
    );
    let (ok, log) = connector.run_once();
    assert!(ok, "second run failed:\n{log}");
    wait_rows(&fixture, "fp-contoso", 22).await;
    assert_eq!(duplicate_ids(&fixture).await, 0);

    // One view of both sides: an agent on an iPhone-less Windows fleet reports the client-side
    // device cap (0x80180013) for the same Fleetpulse tenant.
    let agent = fixture.enroll("fp-contoso", "win-laptop-7").await.unwrap();
    let mut client = fixture.collector.client().await.unwrap();
    let items: Vec<TelemetryItem> = (0..3u32)
        .map(|n| TelemetryItem {
            kind: Some(telemetry_item::Kind::Event(EnrollmentEvent {
                event_id: format!("00000000-0000-4000-8000-00000000a{n:03}"),
                agent_id: agent.agent_id.clone(),
                device_id: format!("win-laptop-{n}"),
                occurred_at: Some(fleetpulse_proto::pbjson_types::Timestamp {
                    seconds: (now - time::Duration::minutes(30)).unix_timestamp(),
                    nanos: 0,
                }),
                platform: Platform::Windows as i32,
                stage: EnrollmentStage::Authorization as i32,
                outcome: Outcome::Failed as i32,
                error: Some(ReportedError {
                    code: 0x8018_0013,
                    has_code: true,
                    symbol: "MENROLL_E_DEVICECAPREACHED".into(),
                    message: String::new(),
                }),
                source: Some(Source {
                    kind: SourceKind::EventLog as i32,
                    ..Source::default()
                }),
                user_principal_name: format!("laptop.user{n}@contoso.com"),
                ..EnrollmentEvent::default()
            })),
        })
        .collect();
    // The first laptop's dsregcmd snapshot names its Entra device id.
    let mut items = items;
    items.push(TelemetryItem {
        kind: Some(telemetry_item::Kind::State(DeviceState {
            agent_id: agent.agent_id.clone(),
            device_id: "win-laptop-0".into(),
            captured_at: Some(fleetpulse_proto::pbjson_types::Timestamp {
                seconds: (now - time::Duration::minutes(20)).unix_timestamp(),
                nanos: 0,
            }),
            platform: Platform::Windows as i32,
            attributes: HashMap::from([("entra_device_id".to_owned(), ENTRA_LAPTOP.to_owned())]),
            ..DeviceState::default()
        })),
    });
    let response = agent.push(&mut client, 1, items).await.unwrap();
    assert!(response.rejected.is_empty(), "{response:?}");
    wait_rows(&fixture, "fp-contoso", 25).await;

    let analyzer = Analyzer::start(fixture.ch, &fixture.db, &[]).await;
    let key = analyzer.create_key(&["--tenant", "fp-contoso"]);
    let body = analyzer
        .ok("/api/v1/breakdown/category?tenant=fp-contoso", &key)
        .await;
    let failures = |category: &str| {
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == category)
            .map(|r| r["failures"].as_u64().unwrap())
            .unwrap_or(0)
    };
    // 9 iPhones refused server side (8 + 1 new) and 3 Windows devices client side.
    assert_eq!(failures("device_cap"), 12, "{body}");
    // 6 + 1 unlicensed users seen only by the service.
    assert_eq!(failures("license"), 7, "{body}");
    assert_eq!(failures("unknown"), 1, "someFutureCategory: {body}");
    // Contract 2: the side dimension and filter split the same failures by who saw them.
    let sides = analyzer
        .ok("/api/v1/breakdown/side?tenant=fp-contoso", &key)
        .await;
    let side = |name: &str| {
        sides["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == name)
            .map(|r| r["failures"].as_u64().unwrap())
            .unwrap_or(0)
    };
    // Every troubleshooting event is a failure: 19 of the first run and 3 new; 3 agent ones.
    assert_eq!((side("server"), side("client")), (22, 3), "{sides}");
    let server_only = analyzer
        .ok(
            "/api/v1/breakdown/category?tenant=fp-contoso&side=server",
            &key,
        )
        .await;
    let device_cap_server = server_only["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "device_cap")
        .map(|r| r["failures"].as_u64().unwrap());
    assert_eq!(device_cap_server, Some(9), "{server_only}");

    // The laptop's timeline joins its agent event and Intune's server-side record.
    let timeline = analyzer
        .ok(
            "/api/v1/devices/win-laptop-0/events?tenant=fp-contoso",
            &key,
        )
        .await;
    assert_eq!(
        timeline["joined_ids"],
        json!(["win-laptop-0", ENTRA_LAPTOP]),
        "{timeline}"
    );
    let ids: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "c4a623f5-23f5-4ca6-8523-000000000042",
            "00000000-0000-4000-8000-00000000a000"
        ],
        "{timeline}"
    );
    assert_eq!(timeline["events"][0]["source_kind"], "graph");
    assert_eq!(
        timeline["events"][0]["classification"]["category"],
        "not_authorized"
    );

    // What only the service saw: phones refused for the cap, unlicensed users.
    let insights = analyzer
        .ok("/api/v1/insights?tenant=fp-contoso", &key)
        .await;
    let insight = |id: &str| {
        insights["insights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no insight {id}: {insights}"))
    };
    let phones = insight("device_cap_refused_phones");
    assert_eq!(phones["count"], 3, "{phones}");
    let sample: Vec<(String, String)> = phones["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["subject"].as_str().unwrap().to_owned(),
                a["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sample,
        vec![
            (
                "phone.user0@contoso.com".to_owned(),
                "3 attempt(s)".to_owned()
            ),
            (
                "phone.user1@contoso.com".to_owned(),
                "4 attempt(s)".to_owned()
            ),
            (
                "phone.user2@contoso.com".to_owned(),
                "2 attempt(s)".to_owned()
            ),
        ]
    );
    assert_eq!(insight("unlicensed_users_refused")["count"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_run_resumes_at_the_stored_next_link() {
    let fixture = Fixture::start("graph_kill").await.unwrap();
    let now = OffsetDateTime::now_utc();
    let records: Vec<Value> = (0..30u32)
        .map(|n| {
            troubleshooting(
                n,
                now - time::Duration::minutes(90 - i64::from(n)),
                "iOS",
                json!("userEnrollment"),
                "enrollmentRestrictionsEnforced",
                "Device cap reached",
                &user_id(n),
            )
        })
        .collect();
    let graph = FakeGraph::start(
        vec![FakeTenant {
            directory_id: CONTOSO.into(),
            client_id: "11111111-1111-4111-8111-111111111111".into(),
            credential: FakeCredential::Secret("s3cret".into()),
            token_lifetime_secs: 3599,
            troubleshooting: records,
            autopilot: vec![],
            users: HashMap::new(),
        }],
        3,
    )
    .await;
    graph.hold(CONTOSO, "troubleshootingEvents", 4);
    let tenants = format!(
        r#"
[[tenant]]
name = "contoso"
directory_id = "{CONTOSO}"
client_id = "11111111-1111-4111-8111-111111111111"
client_secret_env = "FLEETPULSE_TEST_GRAPH_SECRET"
authority = "{{graph}}"
graph_endpoint = "{{graph}}"
autopilot_events = false
resolve_user_principal_names = false
requests_per_second = 50.0
"#
    );
    let mut connector = Connector::new(&fixture, &graph, &tenants);
    connector.register(&fixture, "contoso", "fp-contoso").await;
    // The secret reaches the child processes only, through their environment.
    let secret_env = [("FLEETPULSE_TEST_GRAPH_SECRET", "s3cret")];
    connector.start(&secret_env);
    // Pages 0..=3 are spooled (and shipped) before page 4 is asked for; it never answers.
    poll_until(WAIT, "the request for page 4", || async {
        if graph.hits(CONTOSO, "troubleshootingEvents", 4) == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", graph.log()))
        }
    })
    .await;
    wait_rows(&fixture, "fp-contoso", 12).await;
    connector.kill9();
    graph.release();

    let log = std::fs::File::create(connector.path("once.log")).unwrap();
    let mut child = connector
        .command(&["run", "--once", "--drain-timeout-secs", "60"])
        .envs(secret_env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(120))
        .unwrap()
        .expect("--once finished");
    let log = std::fs::read_to_string(connector.path("once.log")).unwrap_or_default();
    assert!(status.success(), "{log}");
    wait_rows(&fixture, "fp-contoso", 30).await;
    // Resumed at the stored nextLink: pages 0..=3 were read once, page 4 twice (the held
    // request and the resumed one), the rest once.
    for page in 0..10 {
        let want = if page == 4 { 2 } else { 1 };
        assert_eq!(
            graph.hits(CONTOSO, "troubleshootingEvents", page),
            want,
            "page {page}: {:?}",
            graph.log()
        );
    }
    assert_eq!(duplicate_ids(&fixture).await, 0);
}
