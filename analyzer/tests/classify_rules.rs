//! Hand-written exact tests for the important signals, every input normalisation form, every
//! disambiguation rule and the priority order.

use fleetpulse_analyzer::catalog::Catalog;
use fleetpulse_analyzer::classify::{Code, MatchedBy, Signal, parse_code};

fn code(value: u32) -> Option<Code> {
    Some(Code(value))
}

/// (category, matched_by, entry_id, rule_id)
type Answer = (String, MatchedBy, Option<String>, Option<String>);

fn classify(signal: Signal<'_>) -> Answer {
    let got = Catalog::embedded().classify(&signal);
    (got.category, got.matched_by, got.entry_id, got.rule_id)
}

fn category(signal: Signal<'_>) -> String {
    Catalog::embedded().classify(&signal).category
}

#[test]
fn every_normalisation_form_gives_the_same_answer() {
    let forms = [
        "0x80180014",
        "80180014",
        "0X80180014",
        "-2145910764",
        "2149056532",
        " \t0x80180014\n",
        "0x80180014 ",
    ];
    for form in forms {
        let value = parse_code(form).unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(value, 0x8018_0014, "{form}");
        let got = Catalog::embedded().classify(&Signal {
            code: Some(Code(value)),
            ..Signal::default()
        });
        assert_eq!(got.code.as_deref(), Some("0x80180014"), "{form}");
        assert_eq!(got.category, "platform_blocked", "{form}");
        assert_eq!(got.failure_reason, "enrollmentRestrictionsEnforced");
    }
    assert_eq!(parse_code("0x80180002b"), Ok(0x8018_002B));
    assert_eq!(parse_code("0x801c003"), Ok(0x801C_0003));
    assert_eq!(parse_code("hr 0x8007064c"), Ok(0x8007_064C));
    assert_eq!(parse_code("8018000a"), Ok(0x8018_000A));
    assert_eq!(parse_code("(0x8018000a - 2149056522)"), Ok(0x8018_000A));
    assert_eq!(
        category(Signal {
            code: code(0x8018_002B),
            ..Signal::default()
        }),
        "tenant_config"
    );
}

#[test]
fn sdm_one_time_limit_is_autopilot_not_platform_block() {
    let got = Catalog::embedded().classify(&Signal {
        code: code(0x8018_0014),
        message: Some("MDM Enroll: Server Returned Fault/Code/Subcode/Value=(DeviceNotSupported) Fault/Reason/Text=(Enrollment blocked for AP device by SDM One Time Limit Check)"),
        ..Signal::default()
    });
    assert_eq!(got.category, "autopilot");
    assert_eq!(got.matched_by, MatchedBy::Rule);
    assert_eq!(
        got.rule_id.as_deref(),
        Some("sdm_one_time_limit_is_autopilot_redeploy")
    );
    assert_eq!(
        got.entry_id.as_deref(),
        Some("autopilot_sdm_one_time_limit")
    );
    assert_eq!(got.code.as_deref(), Some("0x80180014"));
    assert!(
        got.remediation
            .contains("Delete the device's record in Intune")
    );
    // The event-52 text alone (no code, no symbol) still anchors on the subcode inside it.
    let (cat, by, _, rule) = classify(Signal {
        message: Some(
            "MDM Enroll: Server Returned Fault/Code/Subcode/Value=(DeviceNotSupported) Fault/Reason/Text=(Enrollment blocked for AP device by SDM One Time Limit Check)",
        ),
        ..Signal::default()
    });
    assert_eq!((cat.as_str(), by), ("autopilot", MatchedBy::Rule));
    assert_eq!(
        rule.as_deref(),
        Some("sdm_one_time_limit_is_autopilot_redeploy")
    );
    // Without the reason text 0x80180014 is a platform restriction.
    assert_eq!(
        classify(Signal {
            code: code(0x8018_0014),
            ..Signal::default()
        }),
        (
            "platform_blocked".into(),
            MatchedBy::Code,
            Some("menroll_device_not_supported".into()),
            None
        )
    );
    assert_eq!(
        category(Signal {
            code: code(0x8018_0014),
            message: Some(
                "Fault/Code/Subcode/Value=(DeviceNotSupported) Fault/Reason/Text=(Autopilot device not allowed to enroll for management using WPJ)."
            ),
            ..Signal::default()
        }),
        "autopilot"
    );
}

#[test]
fn registering_for_mobile_management_0x801c03ea_is_tpm() {
    let (cat, by, entry, rule) = classify(Signal {
        code: code(0x801C_03EA),
        message: Some("Registering your device for mobile management (Failed: 3, 0x801C03EA)"),
        ..Signal::default()
    });
    assert_eq!((cat.as_str(), by), ("tpm", MatchedBy::Rule));
    assert_eq!(entry.as_deref(), Some("autopilot_tpm_not_upgraded"));
    assert_eq!(
        rule.as_deref(),
        Some("registering_for_mobile_management_is_tpm")
    );
    // Code from the message text alone.
    assert_eq!(
        category(Signal {
            message: Some("Registering your device for mobile management (Failed:3, 0x801C03EA)."),
            ..Signal::default()
        }),
        "tpm"
    );
    assert_eq!(
        category(Signal {
            code: code(0x801C_03EA),
            ..Signal::default()
        }),
        "not_authorized"
    );
}

#[test]
fn csp_misc_0x80180022_in_autopilot_or_home_context_is_unsupported_device() {
    let autopilot = Catalog::embedded().classify(&Signal {
        code: code(0x8018_0022),
        source: Some("Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot"),
        ..Signal::default()
    });
    assert_eq!(autopilot.category, "unsupported_device");
    assert_eq!(autopilot.failure_reason, "deviceNotSupported");
    assert_eq!(
        autopilot.rule_id.as_deref(),
        Some("csp_misc_in_autopilot_is_home_edition")
    );
    assert_eq!(
        category(Signal {
            message: Some("Autopilot device enrollment failed with error HRESULT = 0x80180022"),
            ..Signal::default()
        }),
        "unsupported_device"
    );
    let home = Catalog::embedded().classify(&Signal {
        code: code(0x8018_0022),
        message: Some("Provisioning failed on Windows 10 Home"),
        ..Signal::default()
    });
    assert_eq!(
        (home.category.as_str(), home.entry_id.as_deref()),
        ("unsupported_device", Some("windows_home_edition"))
    );
    assert_eq!(
        category(Signal {
            code: code(0x8018_0022),
            ..Signal::default()
        }),
        "client_software"
    );
}

#[test]
fn authorization_0x80180003_is_disambiguated_by_message() {
    let cases = [
        (
            "The user has already enrolled the maximum number of devices allowed in Intune.",
            "device_cap",
        ),
        (
            "Looks like there are too many devices or users for this account.",
            "device_cap",
        ),
        (
            "The device is blocked by the device type restrictions.",
            "platform_blocked",
        ),
        (
            "The computer is running Windows 10 Home.",
            "unsupported_device",
        ),
        (
            "This user is not allowed to enroll. You can try again or contact your system administrator with the error code 801c0003.",
            "not_authorized",
        ),
        (
            "Something went wrong. This user is not authorized to enroll.",
            "not_authorized",
        ),
    ];
    for (message, want) in cases {
        for value in [0x8018_0003, 0x801C_0003] {
            let got = Catalog::embedded().classify(&Signal {
                code: code(value),
                message: Some(message),
                ..Signal::default()
            });
            assert_eq!(got.category, want, "{message} with {}", Code(value));
        }
    }
    let users_may_join = Catalog::embedded().classify(&Signal {
        code: code(0x801C_0003),
        message: Some("This user is not allowed to enroll."),
        ..Signal::default()
    });
    assert_eq!(
        users_may_join.entry_id.as_deref(),
        Some("entra_users_may_join_none")
    );
    assert_eq!(users_may_join.failure_reason, "authorization");
    assert_eq!(
        classify(Signal {
            code: code(0x8018_0003),
            ..Signal::default()
        }),
        (
            "not_authorized".into(),
            MatchedBy::Code,
            Some("menroll_authorization".into()),
            None
        )
    );
    // 0x80180018 with a device-count message (Autopilot doc: licences or too many devices).
    assert_eq!(
        category(Signal {
            code: code(0x8018_0018),
            message: Some("too many devices"),
            ..Signal::default()
        }),
        "device_cap"
    );
    assert_eq!(
        category(Signal {
            code: code(0x8018_0018),
            ..Signal::default()
        }),
        "license"
    );
}

#[test]
fn error_type_authorization_error_with_message_device_cap_reached_is_device_cap() {
    let got = Catalog::embedded().classify(&Signal {
        symbol: Some("AuthorizationError"),
        message: Some("DeviceCapReached"),
        ..Signal::default()
    });
    assert_eq!(
        (got.category.as_str(), got.matched_by),
        ("device_cap", MatchedBy::Symbol)
    );
    assert_eq!(got.entry_id.as_deref(), Some("menroll_device_cap_reached"));
    assert_eq!(got.failure_reason, "enrollmentRestrictionsEnforced");
    // The class alone is an authorization failure.
    assert_eq!(
        category(Signal {
            symbol: Some("AuthorizationError"),
            ..Signal::default()
        }),
        "not_authorized"
    );
    // The docs' SOAP sample: subcode s:authorization, reason "device cap reached".
    assert_eq!(
        category(Signal {
            symbol: Some("s:authorization"),
            message: Some("device cap reached"),
            ..Signal::default()
        }),
        "device_cap"
    );
    // Full fault XML in the message.
    assert_eq!(
        category(Signal {
            message: Some(
                "<s:fault><deviceenrollmentserviceerror><errortype>devicecapreached</errortype><message>device cap reached</message></deviceenrollmentserviceerror></s:fault>"
            ),
            ..Signal::default()
        }),
        "device_cap"
    );
}

#[test]
fn symbols_match_case_insensitively_in_every_spelling() {
    for symbol in [
        "DeviceCapReached",
        "devicecapreached",
        "DEVICECAPREACHED",
        "s:DeviceCapReached",
        "MENROLL_E_DEVICECAPREACHED",
        "menroll_e_devicecapreached",
        "  DeviceCapReached  ",
    ] {
        let got = Catalog::embedded().classify(&Signal {
            symbol: Some(symbol),
            ..Signal::default()
        });
        assert_eq!(
            (got.category.as_str(), got.matched_by),
            ("device_cap", MatchedBy::Symbol),
            "{symbol}"
        );
    }
}

#[test]
fn priority_specific_symbol_then_code_then_message_then_class_symbol() {
    // A specific symbol beats the code.
    assert_eq!(
        classify(Signal {
            code: code(0x8018_0003),
            symbol: Some("DeviceCapReached"),
            ..Signal::default()
        })
        .0,
        "device_cap"
    );
    // The code beats a class symbol (the docs' sample sends subcode Authorization with 0x80180013).
    let (cat, by, ..) = classify(Signal {
        code: code(0x8018_0013),
        symbol: Some("Authorization"),
        ..Signal::default()
    });
    assert_eq!((cat.as_str(), by), ("device_cap", MatchedBy::Code));
    // The code beats a generic UI message.
    let (cat, by, ..) = classify(Signal {
        code: code(0x8018_0010),
        message: Some("There was an error communicating with the server."),
        ..Signal::default()
    });
    assert_eq!((cat.as_str(), by), ("network", MatchedBy::Code));
    // A message beats a class symbol.
    let (cat, by, ..) = classify(Signal {
        symbol: Some("idErrorServerConnectivity"),
        message: Some("Something went wrong. OOBEIDPS."),
        ..Signal::default()
    });
    assert_eq!((cat.as_str(), by), ("network", MatchedBy::Message));
    // The longest message pattern wins.
    assert_eq!(
        category(Signal {
            message: Some(
                "The software cannot be installed because a restart of the client computer is pending."
            ),
            ..Signal::default()
        }),
        "client_software"
    );
}

#[test]
fn other_context_rules() {
    assert_eq!(
        category(Signal {
            code: code(0x8007_05B4),
            message: Some("Securing your hardware (Failed: 0x800705b4)"),
            ..Signal::default()
        }),
        "tpm"
    );
    assert_eq!(
        category(Signal {
            code: code(0x8007_05B4),
            ..Signal::default()
        }),
        "network"
    );
    assert_eq!(
        category(Signal {
            code: code(0x8007_0032),
            message: Some(
                "MDM ConfigurationManager: Command failure status. Configuration Source ID: (9B5DC01F), Enrollment Name: (MDMFull), Provider Name: (RemoteWipe), Command Type: (CmdType_Execute), CSP URI: (./Vendor/MSFT/RemoteWipe/doWipe), Result: (The request is not supported.)."
            ),
            ..Signal::default()
        }),
        "client_software"
    );
    assert_eq!(
        category(Signal {
            code: code(0x8007_0032),
            ..Signal::default()
        }),
        "unsupported_device"
    );
    assert_eq!(
        category(Signal {
            code: code(0x801C_03ED),
            message: Some("user exceeded the join quota"),
            ..Signal::default()
        }),
        "device_cap"
    );
    assert_eq!(
        category(Signal {
            code: code(0x801C_03ED),
            ..Signal::default()
        }),
        "not_authorized"
    );
}

#[test]
fn codes_are_read_from_messages_including_documented_typos() {
    let got = Catalog::embedded().classify(&Signal {
        message: Some("Auto MDM Enroll: Failed (Unknown Win32 Error code: 0x80180002b)"),
        ..Signal::default()
    });
    assert_eq!(
        (got.category.as_str(), got.code.as_deref()),
        ("tenant_config", Some("0x8018002B"))
    );
    assert_eq!(got.entry_id.as_deref(), Some("auto_enroll_upn_or_scope"));
    assert_eq!(
        category(Signal {
            message: Some("Error 0x801c003: This user is not authorized to enroll."),
            ..Signal::default()
        }),
        "not_authorized"
    );
    let got = Catalog::embedded().classify(&Signal {
        message: Some("error code 2149056522 is displayed"),
        ..Signal::default()
    });
    assert_eq!(
        (got.category.as_str(), got.code.as_deref()),
        ("already_enrolled", Some("0x8018000A"))
    );
    let got = Catalog::embedded().classify(&Signal {
        message: Some("Client ErrorCode : 0x801c03f2"),
        ..Signal::default()
    });
    assert_eq!(got.category, "entra_join");
}

#[test]
fn facility_fallbacks() {
    let cases: [(u32, &str, &str); 16] = [
        (
            0x8018_FFFF,
            "client_software",
            "mdm_enrollment_client_facility",
        ),
        (0x801C_9999, "entra_join", "dsreg_facility"),
        (0x8019_0197, "network", "http_407_proxy_auth"),
        (0x8019_01F7, "network", "http_504_gateway_timeout"),
        (0x8019_01A0, "server_error", "http_4xx"),
        (0x8019_01F5, "server_error", "http_5xx"),
        (0x80CF_9999, "client_software", "legacy_agent_cf"),
        (0x8004_300A, "client_software", "legacy_agent_43"),
        (0x8007_04C7, "user_cancelled", "win32_cancelled"),
        (0x8007_0005, "unknown", "win32_generic"),
        (0x8007_2EFF, "network", "wininet"),
        (0xCAA8_2123, "network", "adal_network"),
        (0xCAA9_9999, "authentication", "adal"),
        (0x8009_0099, "tpm", "crypto_keys"),
        (0x8029_5555, "tpm", "tpm_facilities"),
        (0x800B_0109, "certificate", "cert_trust"),
    ];
    for (value, want, facility) in cases {
        let got = Catalog::embedded().classify(&Signal {
            code: code(value),
            ..Signal::default()
        });
        assert_eq!(
            (
                got.category.as_str(),
                got.matched_by,
                got.facility_id.as_deref()
            ),
            (want, MatchedBy::Facility, Some(facility)),
            "{}",
            Code(value)
        );
    }
    let http_400 = Catalog::embedded().classify(&Signal {
        code: code(0x8019_01A0),
        ..Signal::default()
    });
    assert_eq!(http_400.failure_reason, "badRequest");
    // Exact HTTP entries win over the facility.
    assert_eq!(
        classify(Signal {
            code: code(0x8019_0191),
            ..Signal::default()
        })
        .0,
        "authentication"
    );
    assert_eq!(
        classify(Signal {
            code: code(0x8019_0190),
            ..Signal::default()
        })
        .1,
        MatchedBy::Code
    );
}

#[test]
fn unknown_signals_are_unknown_and_keep_their_code() {
    let got = Catalog::embedded().classify(&Signal {
        code: code(0x1234_5678),
        symbol: Some("NoSuchThing"),
        ..Signal::default()
    });
    assert_eq!(got.category, "unknown");
    assert_eq!(got.code.as_deref(), Some("0x12345678"));
    assert_eq!(got.matched_by, MatchedBy::None);
    assert_eq!(got.failure_reason, "unknown");
    assert_eq!(got.entry_id, None);
    assert_eq!(
        got.cause,
        "This signal is not in the Fleetpulse catalog yet."
    );
    let empty = Catalog::embedded().classify(&Signal::default());
    assert_eq!((empty.category.as_str(), empty.code), ("unknown", None));
    let text = Catalog::embedded().classify(&Signal {
        message: Some("something odd happened"),
        ..Signal::default()
    });
    assert_eq!((text.category.as_str(), text.code), ("unknown", None));
}

#[test]
fn platform_specific_messages_respect_the_platform() {
    let access_denied = |platform| {
        category(Signal {
            message: Some("Access denied"),
            platform,
            ..Signal::default()
        })
    };
    assert_eq!(access_denied(Some("ios")), "tenant_config");
    assert_eq!(access_denied(None), "tenant_config");
    assert_eq!(access_denied(Some("windows")), "unknown");
    // Exact messages do not match inside longer text: the message rule stays silent (the
    // prose stage may still read the words, and says so in `matched_by`).
    let longer = Catalog::embedded().classify(&Signal {
        message: Some("Access denied by policy"),
        platform: Some("ios"),
        ..Signal::default()
    });
    assert_ne!(longer.matched_by, MatchedBy::Message);
    assert!(longer.entry_id.is_none(), "{:?}", longer.entry_id);
}

#[test]
fn batch_classifies_in_order_and_reuses_identical_signals() {
    let catalog = Catalog::embedded();
    let signals = [
        Signal {
            code: code(0x8018_0013),
            ..Signal::default()
        },
        Signal {
            symbol: Some("UserLicense"),
            ..Signal::default()
        },
        Signal {
            code: code(0x8018_0013),
            ..Signal::default()
        },
        Signal {
            code: code(0xDEAD_BEEF),
            ..Signal::default()
        },
    ];
    let got = catalog.classify_batch(&signals);
    let categories: Vec<&str> = got.iter().map(|c| c.category.as_str()).collect();
    assert_eq!(
        categories,
        ["device_cap", "license", "device_cap", "unknown"]
    );
    for (signal, answer) in signals.iter().zip(&got) {
        assert_eq!(&catalog.classify(signal), answer);
    }
}

#[test]
fn classification_serialises_with_the_documented_field_names() {
    let got = Catalog::embedded().classify(&Signal {
        code: code(0x8018_0013),
        ..Signal::default()
    });
    let json = serde_json::to_value(&got).expect("serialise");
    assert_eq!(json["category"], "device_cap");
    assert_eq!(json["code"], "0x80180013");
    assert_eq!(json["failure_reason"], "enrollmentRestrictionsEnforced");
    assert_eq!(json["matched_by"], "code");
    assert_eq!(json["entry_id"], "menroll_device_cap_reached");
    assert_eq!(json["rule_id"], serde_json::Value::Null);
    assert!(
        json["source_doc"]
            .as_str()
            .is_some_and(|s| s.starts_with("MicrosoftDocs/windows-itpro-docs:"))
    );
}

/// SDK result and status names, and WinHTTP/WinINet constant names, are read wherever they
/// appear in a log line, not only when the whole message is the name.
#[test]
fn identifiers_inside_log_lines_are_symbols() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "android",
            "Received MAM enrollment result for package com.example.app, user someone@example.com: NOT_LICENSED.",
            "license",
        ),
        (
            "android",
            "MAMWEAccountRegistry updating account with status WRONG_USER; retry in 10000 ms",
            "already_enrolled",
        ),
        (
            "ios",
            "enrollment failed: statusCode=IntuneMAMEnrollmentStatusTimeout (216)",
            "network",
        ),
        (
            "windows",
            "SCEP: GetCACaps failed: ERROR_WINHTTP_SECURE_FAILURE while talking to the NDES URL",
            "certificate",
        ),
        (
            "windows",
            "Discovery request failed (WinHttp: ERROR_WINHTTP_NAME_NOT_RESOLVED)",
            "network",
        ),
    ];
    for (platform, message, expected) in cases {
        let got = Catalog::embedded().classify(&Signal {
            message: Some(message),
            platform: Some(platform),
            ..Signal::default()
        });
        assert_eq!(got.category, expected, "{message}");
        assert_eq!(got.matched_by.as_str(), "symbol", "{message}");
    }
    // Ordinary capitalised words are not identifiers: this message has no symbol, so its
    // code decides (0x80180003, not authorized).
    let got = Catalog::embedded().classify(&Signal {
        message: Some("Enrollment Failed Because The User Is Not Authorized 0x80180003"),
        ..Signal::default()
    });
    assert_eq!(got.matched_by.as_str(), "code");
}

/// WinINet/WinHTTP certificate errors are certificate problems in both the Win32 facility and
/// FACILITY_HTTP, while the rest of those ranges stays network.
#[test]
fn winhttp_certificate_errors_are_certificate_problems() {
    for value in [
        0x8007_2F05u32,
        0x8007_2F06,
        0x8007_2F0D,
        0x8007_2F19,
        0x8019_2F05,
        0x8019_2F0D,
        0x8019_2F8F,
    ] {
        assert_eq!(
            category(Signal {
                code: code(value),
                ..Signal::default()
            }),
            "certificate",
            "{value:#x}"
        );
    }
    for value in [0x8007_2EE2u32, 0x8007_2EFD, 0x8019_2EE2, 0x8007_2F78] {
        assert_eq!(
            category(Signal {
                code: code(value),
                ..Signal::default()
            }),
            "network",
            "{value:#x}"
        );
    }
}

/// Autopilot device-import errors are Autopilot problems wherever the import result is pasted;
/// an Authorization fault that names UserValidation is the Graph reason userValidation.
#[test]
fn autopilot_import_errors_and_user_validation_faults() {
    for message in [
        "Error code: 806 - ZtdDeviceAlreadyAssigned CSV line numbers affected: 1",
        "state : @{deviceImportStatus=error; deviceErrorCode=808; deviceErrorName=ZtdDeviceAssignedToOtherTenant}",
        "Error Code: 802 - InvalidZtdHardwareHash",
        "ZtdDeviceDuplicated",
    ] {
        assert_eq!(
            category(Signal {
                message: Some(message),
                platform: Some("windows"),
                ..Signal::default()
            }),
            "autopilot",
            "{message}"
        );
    }
    let (cat, by, _, rule) = classify(Signal {
        message: Some(
            "<s:Subcode><s:Value>s:Authorization</s:Value></s:Subcode><s:Reason><s:Text>Failed to issue token: UserValidation</s:Text></s:Reason>",
        ),
        ..Signal::default()
    });
    assert_eq!(cat, "license");
    assert_eq!(by, MatchedBy::Rule);
    assert_eq!(
        rule.as_deref(),
        Some("authorization_fault_user_validation_is_license")
    );
    // The Authorization subcode alone stays "not authorized".
    assert_eq!(
        category(Signal {
            message: Some("<s:Subcode><s:Value>s:Authorization</s:Value></s:Subcode>"),
            ..Signal::default()
        }),
        "not_authorized"
    );
}

/// Entra `AADSTS<number>` names are read as whole identifiers: a longer number that merely
/// starts with a catalogued one is not that error.
#[test]
fn aadsts_errors_match_whole_numbers_only() {
    let (cat, by, entry, _) = classify(Signal {
        message: Some(
            "MsalUiRequiredException: AADSTS65001: The user or administrator has not consented to use the application with ID 'x' named 'Intune MAM'.",
        ),
        ..Signal::default()
    });
    assert_eq!(cat, "tenant_config");
    assert_eq!(by, MatchedBy::Symbol);
    assert_eq!(entry.as_deref(), Some("aadsts_consent_or_app_missing"));
    let (_, _, entry, _) = classify(Signal {
        message: Some("AADSTS500208: The domain is not a valid login domain for the account type."),
        ..Signal::default()
    });
    assert_ne!(entry.as_deref(), Some("aadsts_user_not_in_tenant"));
    assert_eq!(
        category(Signal {
            message: Some(
                "Sign-in failed: AADSTS50076 Due to a configuration change made by your administrator"
            ),
            ..Signal::default()
        }),
        "authentication"
    );
}

/// Windows' "Access work or school" messages are read whatever apostrophes the paste carries.
#[test]
fn windows_access_work_or_school_messages() {
    for (message, expected) in [
        (
            "I was getting the error \u{201c}Your device is already being managed by an organization\u{201d} when trying to register",
            "already_enrolled",
        ),
        (
            "We couldn\u{2019}t find your identity in your organization\u{2019}s cloud.",
            "authentication",
        ),
        (
            "You don\u{2019}t have the right privileges to perform this operation. Please talk to your admin.",
            "not_authorized",
        ),
        (
            "We couldn't autodiscover a management endpoint matching the username entered. Check your username and try again.",
            "tenant_config",
        ),
    ] {
        assert_eq!(
            category(Signal {
                message: Some(message),
                platform: Some("windows"),
                ..Signal::default()
            }),
            expected,
            "{message}"
        );
    }
}

/// The prose stage reads a report in words that no code, name or documented message matches,
/// answers only when confident, and says why (the documented phrases it found).
#[test]
fn prose_reports_get_a_category_with_their_evidence() {
    let catalog = Catalog::embedded();
    let got = catalog.classify(&Signal {
        message: Some(
            "Users cannot enroll: the number of enrolled devices already equals their device limit restriction",
        ),
        platform: Some("android"),
        ..Signal::default()
    });
    assert_eq!(got.category, "device_cap");
    assert_eq!(got.matched_by, MatchedBy::Prose);
    assert_eq!(got.entry_id, None);
    assert_eq!(
        got.evidence[0].phrase,
        "number of enrolled devices already equals their device limit restriction"
    );
    assert_eq!(got.evidence[0].origin, "phrases general-device-cap");
    assert_eq!(got.failure_reason, "enrollmentRestrictionsEnforced");
}

#[test]
fn code_and_name_rules_keep_priority_over_prose() {
    let catalog = Catalog::embedded();
    // The wording is a device cap, the code is a client software failure (0x80180022 outside Autopilot): the code decides.
    let got = catalog.classify(&Signal {
        code: code(0x8018_0022),
        message: Some(
            "the number of enrolled devices already equals their device limit restriction",
        ),
        ..Signal::default()
    });
    assert_eq!(
        (got.category.as_str(), got.matched_by),
        ("client_software", MatchedBy::Code)
    );
    assert!(got.evidence.is_empty());
}

#[test]
fn vague_prose_stays_unknown() {
    let catalog = Catalog::embedded();
    for message in [
        "Something went wrong. Try again, or tap Cancel to set up your device later",
        "Enrollment failed on one device",
        "The device shows an error in Company Portal",
    ] {
        let got = catalog.classify(&Signal {
            message: Some(message),
            ..Signal::default()
        });
        assert_eq!(
            (got.category.as_str(), got.matched_by),
            ("unknown", MatchedBy::None),
            "{message}"
        );
        assert!(got.evidence.is_empty());
    }
}
