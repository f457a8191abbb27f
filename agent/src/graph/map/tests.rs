use super::*;
use serde_json::json;

fn ctx<'a>(upns: &'a HashMap<String, String>) -> MapContext<'a> {
    MapContext {
        agent_id: "agent-1",
        directory_id: "contoso.onmicrosoft.com",
        upns: Some(upns),
    }
}

fn event_of(mapped: &Mapped) -> &EnrollmentEvent {
    match &mapped.item.kind {
        Some(telemetry_item::Kind::Event(e)) => e,
        _ => panic!("not an event"),
    }
}

/// The example response of Microsoft's "List enrollmentTroubleshootingEvents" page (v1.0,
/// microsoft-graph-docs-contrib api-reference/v1.0/api/intune-troubleshooting-enrollmenttroubleshootingevent-list.md).
const DOC_EXAMPLE: &str = r##"{
  "value": [
    {
      "@odata.type": "#microsoft.graph.enrollmentTroubleshootingEvent",
      "id": "c4a623f5-23f5-c4a6-f523-a6c4f523a6c4",
      "eventDateTime": "2016-12-31T23:59:23.3984029-08:00",
      "correlationId": "Correlation Id value",
      "managedDeviceIdentifier": "Managed Device Identifier value",
      "operatingSystem": "Operating System value",
      "osVersion": "Os Version value",
      "userId": "User Id value",
      "deviceId": "Device Id value",
      "enrollmentType": "userEnrollment",
      "failureCategory": "authentication",
      "failureReason": "Failure Reason value"
    }
  ]
}"##;

#[test]
fn documentation_example_maps_field_by_field() {
    let page: Value = serde_json::from_str(DOC_EXAMPLE).unwrap();
    let upns = HashMap::from([("User Id value".to_owned(), "joe@contoso.com".to_owned())]);
    let mapped = troubleshooting_event(&ctx(&upns), &page["value"][0]).unwrap();
    let e = event_of(&mapped);
    assert_eq!(mapped.event_id, "c4a623f5-23f5-c4a6-f523-a6c4f523a6c4");
    assert_eq!(e.event_id, mapped.event_id);
    // 23:59:23.398 at -08:00 is 07:59:23.398 UTC the next day; sub-millisecond digits dropped.
    let at = e.occurred_at.unwrap();
    assert_eq!((at.seconds, at.nanos), (1_483_257_563, 398_000_000));
    assert_eq!(mapped.at_ms, 1_483_257_563_398);
    assert_eq!(e.agent_id, "agent-1");
    assert_eq!(e.device_id, "Managed Device Identifier value");
    assert_eq!(e.platform, Platform::Unspecified as i32);
    assert_eq!(e.os_edition, "Operating System value");
    assert_eq!(e.os_version, "Os Version value");
    assert_eq!(e.enrollment_method, EnrollmentMethod::UserDrivenByod as i32);
    assert_eq!(e.stage, EnrollmentStage::Authentication as i32);
    assert_eq!(e.outcome, Outcome::Failed as i32);
    let error = e.error.clone().unwrap();
    assert_eq!(
        (
            error.has_code,
            error.symbol.as_str(),
            error.message.as_str()
        ),
        (false, "authentication", "Failure Reason value")
    );
    assert_eq!(e.user_principal_name, "joe@contoso.com");
    let source = e.source.clone().unwrap();
    assert_eq!(source.kind, SourceKind::Graph as i32);
    assert_eq!(source.channel, "deviceManagement/troubleshootingEvents");
    let attr = |k: &str| e.attributes.get(k).map(String::as_str);
    assert_eq!(
        attr("intune_device_id"),
        Some("Managed Device Identifier value")
    );
    assert_eq!(attr("entra_device_id"), Some("Device Id value"));
    assert_eq!(attr("entra_user_id"), Some("User Id value"));
    assert_eq!(attr("correlation_id"), Some("Correlation Id value"));
    assert_eq!(attr("graph_enrollment_type"), Some("userEnrollment"));
    assert_eq!(attr("graph_failure_category"), Some("authentication"));
    assert_eq!(attr("entra_tenant_id"), Some("contoso.onmicrosoft.com"));
}

#[test]
fn phone_refused_before_it_exists_is_keyed_by_user_and_platform() {
    let upns = HashMap::new();
    let record = json!({
        "id": "0f6c1a4e-7a43-4b8e-9d55-3f0b8f1f7c01",
        "eventDateTime": "2025-03-04T10:00:00Z",
        "managedDeviceIdentifier": "00000000-0000-0000-0000-000000000000",
        "operatingSystem": "iOS",
        "osVersion": "17.5.1",
        "userId": "8a6c3e2b-1111-4d7e-9f00-aa00bb11cc22",
        "deviceId": "",
        "enrollmentType": "userEnrollment",
        "failureCategory": "enrollmentRestrictionsEnforced",
        "failureReason": "Device cap reached"
    });
    let mapped = troubleshooting_event(&ctx(&upns), &record).unwrap();
    let e = event_of(&mapped);
    assert_eq!(
        e.device_id,
        "graph-user:8a6c3e2b-1111-4d7e-9f00-aa00bb11cc22:ios"
    );
    assert_eq!(e.platform, Platform::Ios as i32);
    assert_eq!(e.stage, EnrollmentStage::Authorization as i32);
    assert_eq!(e.user_principal_name, "");
    assert!(!e.attributes.contains_key("intune_device_id"));
}

#[test]
fn unknown_and_malformed_enums_are_kept_never_fatal() {
    let upns = HashMap::new();
    let record = json!({
        "id": "not-a-uuid-17",
        "eventDateTime": "2025-03-04T10:00:00.1234567+02:00",
        "operatingSystem": "Android",
        "enrollmentType": 42,
        "failureCategory": "someFutureCategory",
        "failureReason": null,
        "osVersion": 14
    });
    let mapped = troubleshooting_event(&ctx(&upns), &record).unwrap();
    let e = event_of(&mapped);
    assert_eq!(
        mapped.event_id,
        stable_event_id(
            "graph:troubleshootingEvents",
            &["contoso.onmicrosoft.com", "not-a-uuid-17"]
        )
    );
    assert_eq!(e.enrollment_method, EnrollmentMethod::Unspecified as i32);
    assert_eq!(e.stage, EnrollmentStage::Complete as i32);
    assert_eq!(e.error.clone().unwrap().symbol, "someFutureCategory");
    assert_eq!(e.os_version, "14");
    assert_eq!(
        e.attributes
            .get("graph_enrollment_type")
            .map(String::as_str),
        Some("invalid:42")
    );
    assert_eq!(e.device_id, "graph-event:not-a-uuid-17");
}

#[test]
fn records_without_id_or_time_are_refused_with_the_field() {
    let upns = HashMap::new();
    let c = ctx(&upns);
    assert_eq!(
        troubleshooting_event(&c, &json!({"eventDateTime": "2025-03-04T10:00:00Z"}))
            .unwrap_err()
            .to_string(),
        "id: missing"
    );
    assert_eq!(
        troubleshooting_event(&c, &json!({"id": "a", "eventDateTime": "yesterday"}))
            .unwrap_err()
            .to_string(),
        "eventDateTime: \"yesterday\" is not an RFC 3339 date-time"
    );
    assert_eq!(
        troubleshooting_event(
            &c,
            &json!({"id": 7, "eventDateTime": "2025-03-04T10:00:00Z"})
        )
        .unwrap_err()
        .to_string(),
        "id: expected a string, found a number"
    );
    assert_eq!(
        troubleshooting_event(&c, &json!("text"))
            .unwrap_err()
            .to_string(),
        "value[]: expected an object, found a string"
    );
}

#[test]
fn autopilot_failure_in_device_esp() {
    let upns = HashMap::new();
    let record = json!({
        "@odata.type": "#microsoft.graph.deviceManagementAutopilotEvent",
        "id": "5a1e2f0c-0000-4000-8000-000000000001",
        "deviceId": "7d1f3a8e-2222-4b6c-8a55-0c0ffee00001",
        "userId": "",
        "eventDateTime": "2025-03-04T11:30:00Z",
        "enrollmentType": "azureADJoinedUsingDeviceAuthWithAutopilotProfile",
        "deviceSerialNumber": "PF3ABC12",
        "managedDeviceName": "KIOSK-001",
        "userPrincipalName": "",
        "windowsAutopilotDeploymentProfileDisplayName": "Kiosk self-deploying",
        "enrollmentState": "enrolled",
        "windows10EnrollmentCompletionPageConfigurationDisplayName": "Default ESP",
        "deploymentState": "failure",
        "deviceSetupStatus": "failure",
        "accountSetupStatus": "notAttempted",
        "osVersion": "10.0.22631.4602",
        "deploymentDuration": "PT41M12S",
        "deploymentTotalDuration": "PT45M",
        "deviceSetupDuration": "PT38M",
        "accountSetupDuration": "PT0S",
        "enrollmentFailureDetails": "App install timeout: Company Portal"
    });
    let mapped = autopilot_event(&ctx(&upns), &record).unwrap();
    let e = event_of(&mapped);
    assert_eq!(e.device_id, "7d1f3a8e-2222-4b6c-8a55-0c0ffee00001");
    assert_eq!(
        e.enrollment_method,
        EnrollmentMethod::AutopilotSelfDeploying as i32
    );
    assert_eq!(e.stage, EnrollmentStage::EnrollmentStatusPage as i32);
    assert_eq!(e.outcome, Outcome::Failed as i32);
    let error = e.error.clone().unwrap();
    assert_eq!(error.symbol, "autopilotEspFailure");
    assert_eq!(error.message, "App install timeout: Company Portal");
    assert_eq!(
        e.attributes.get("serial_number").map(String::as_str),
        Some("PF3ABC12")
    );
    assert_eq!(
        e.attributes
            .get("device_setup_duration")
            .map(String::as_str),
        Some("PT38M")
    );
    // The same record later in another state is another event; the same state is the same.
    let mut later = record.clone();
    later["deploymentState"] = json!("success");
    let again = autopilot_event(&ctx(&upns), &later).unwrap();
    assert_ne!(again.event_id, mapped.event_id);
    assert_eq!(autopilot_event(&ctx(&upns), &record).unwrap(), mapped);
}

#[test]
fn platforms_and_methods() {
    assert_eq!(platform_of("Windows"), Platform::Windows);
    assert_eq!(platform_of("iPadOS"), Platform::Ipados);
    assert_eq!(platform_of("IOS"), Platform::Ios);
    assert_eq!(platform_of("macOS"), Platform::Macos);
    assert_eq!(platform_of("AndroidForWork"), Platform::Android);
    assert_eq!(platform_of("Operating System value"), Platform::Unspecified);
    assert_eq!(
        method_of_enrollment_type("windowsCoManagement"),
        EnrollmentMethod::CoManagement
    );
    assert_eq!(
        method_of_enrollment_type("appleBulkWithoutUser"),
        EnrollmentMethod::AppleAde
    );
    assert_eq!(
        method_of_autopilot_type("offlineDomainJoinedWithWhiteGlove"),
        EnrollmentMethod::AutopilotPreProvisioned
    );
    assert_eq!(
        user_ids(&[
            json!({"userId": "b"}),
            json!({"userId": "a"}),
            json!({"userId": "b"})
        ]),
        vec!["a", "b"]
    );
}

/// The example response of Microsoft's "List deviceManagementAutopilotEvents" page (beta,
/// microsoft-graph-docs-contrib api-reference/beta/api/intune-troubleshooting-devicemanagementautopilotevent-list.md),
/// including its negative durations, which are kept verbatim.
#[test]
fn autopilot_documentation_example() {
    let record: Value = serde_json::from_str(
        r##"{
      "@odata.type": "#microsoft.graph.deviceManagementAutopilotEvent",
      "id": "3e455cab-5cab-3e45-ab5c-453eab5c453e",
      "deviceId": "Device Id value",
      "userId": "User Id value",
      "eventDateTime": "2016-12-31T23:59:23.3984029-08:00",
      "deviceRegisteredDateTime": "2017-01-01T00:02:48.7185581-08:00",
      "enrollmentStartDateTime": "2017-01-01T00:00:19.6280481-08:00",
      "enrollmentType": "azureADJoinedWithAutopilotProfile",
      "deviceSerialNumber": "Device Serial Number value",
      "managedDeviceName": "Managed Device Name value",
      "userPrincipalName": "User Principal Name value",
      "windowsAutopilotDeploymentProfileDisplayName": "Windows Autopilot Deployment Profile Display Name value",
      "enrollmentState": "enrolled",
      "windows10EnrollmentCompletionPageConfigurationDisplayName": "Windows10Enrollment Completion Page Configuration Display Name value",
      "windows10EnrollmentCompletionPageConfigurationId": "Windows10Enrollment Completion Page Configuration Id value",
      "deploymentState": "success",
      "deviceSetupStatus": "success",
      "accountSetupStatus": "success",
      "osVersion": "Os Version value",
      "deploymentDuration": "PT3M21.5549443S",
      "deploymentTotalDuration": "PT1M43.5284261S",
      "deviceSetupDuration": "-PT2M57.2190107S",
      "accountSetupDuration": "-PT2M32.0507894S",
      "deploymentStartDateTime": "2016-12-31T23:59:37.257201-08:00",
      "deploymentEndDateTime": "2017-01-01T00:00:46.5128291-08:00",
      "enrollmentFailureDetails": "Enrollment Failure Details value"
    }"##,
    )
    .unwrap();
    let upns = HashMap::new();
    let mapped = autopilot_event(&ctx(&upns), &record).unwrap();
    let e = event_of(&mapped);
    assert_eq!(e.device_id, "Device Id value");
    assert_eq!(e.user_principal_name, "User Principal Name value");
    assert_eq!(
        e.enrollment_method,
        EnrollmentMethod::AutopilotUserDriven as i32
    );
    assert_eq!(e.outcome, Outcome::Succeeded as i32);
    assert_eq!(e.stage, EnrollmentStage::Complete as i32);
    assert_eq!(e.error, None, "a successful deployment carries no error");
    assert_eq!(
        e.source.clone().unwrap().channel,
        "deviceManagement/autopilotEvents"
    );
    let attr = |k: &str| e.attributes.get(k).map(String::as_str);
    assert_eq!(attr("device_setup_duration"), Some("-PT2M57.2190107S"));
    assert_eq!(attr("serial_number"), Some("Device Serial Number value"));
    assert_eq!(attr("deployment_state"), Some("success"));
    assert_eq!(mapped.at_ms, 1_483_257_563_398);
}
