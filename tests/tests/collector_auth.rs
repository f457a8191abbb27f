//! Collector authentication and tenant isolation, end to end: bad, revoked and foreign
//! credentials, and the rule that the tenant of every row comes from the credential.

use std::collections::HashMap;
use std::time::Duration;

use fleetpulse_proto::v1::{GetLimitsRequest, PushRequest};
use fleetpulse_tests::harness::synthetic::{Synth, event_item, state_item};
use fleetpulse_tests::harness::{Collector, Fixture, batch, bearer, recent, register_request};
use tonic::Code;

/// The same secret with its last hex digit changed: well-formed, but wrong.
fn flip_last_hex(secret: &str) -> String {
    let (head, last) = secret.split_at(secret.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}

#[tokio::test]
async fn unknown_or_malformed_tokens_and_credentials_are_unauthenticated() -> anyhow::Result<()> {
    let fx = Fixture::start("auth_bad").await?;
    let mut client = fx.collector.client().await?;
    let token = fx.collector.token_create("contoso").await?;

    // A well-formed token with a wrong secret, an unknown id, and something else entirely.
    let unknown = "unknown or invalid enrollment token";
    let malformed = "malformed enrollment token: expected `fpe_<16 hex digits>_<64 hex digits>`";
    let cases = [
        (flip_last_hex(&token), unknown),
        (
            format!("fpe_{}_{}", "0".repeat(16), "0".repeat(64)),
            unknown,
        ),
        ("hello".to_owned(), malformed),
        (String::new(), malformed),
    ];
    for (bad, message) in &cases {
        let status = client
            .register(register_request(bad, "dev-1"))
            .await
            .expect_err("bad enrollment token");
        assert_eq!(status.code(), Code::Unauthenticated, "{bad}: {status:?}");
        assert_eq!(status.message(), *message, "{bad}");
    }

    let agent = fx.collector.register(&token, "dev-1").await?;
    let items =
        Synth::new(1).event_items(&agent.agent_id, &[], 3, recent(), Duration::from_secs(1));

    // No credential at all.
    let status = client
        .push(tonic::Request::new(batch(1, items.clone())))
        .await
        .expect_err("no credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "missing `authorization` metadata: send `authorization: Bearer <agent credential>` \
         with the credential returned by Register"
    );

    // Not a bearer header.
    let mut basic = tonic::Request::new(batch(1, items.clone()));
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse()?);
    let status = client.push(basic).await.expect_err("basic auth");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "malformed `authorization` metadata: expected `Bearer <agent credential>`"
    );

    // A forged credential for the real agent.
    let forged_cred = flip_last_hex(&agent.credential);
    let status = client
        .push(bearer(&forged_cred, batch(1, items.clone())))
        .await
        .expect_err("forged credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "unknown or invalid agent credential");

    // The enrollment token is not an agent credential.
    let status = client
        .push(bearer(&token, batch(1, items.clone())))
        .await
        .expect_err("token used as credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "malformed agent credential: expected `fpa_<agent uuid>_<64 hex digits>`"
    );

    let status = client
        .get_limits(bearer(&forged_cred, GetLimitsRequest {}))
        .await
        .expect_err("GetLimits needs a credential too");
    assert_eq!(status.code(), Code::Unauthenticated);

    assert_eq!(fx.count("enrollment_events").await?, 0);
    // The real credential works, so the refusals above were about the credential.
    assert_eq!(agent.push(&mut client, 1, items).await?.accepted, 3);
    Ok(())
}

#[tokio::test]
async fn revoked_enrollment_token_stops_registration_at_once() -> anyhow::Result<()> {
    let fx = Fixture::start("auth_revoked_token").await?;
    let token = fx.collector.token_create("contoso").await?;
    let agent = fx.collector.register(&token, "dev-before").await?;

    fx.collector
        .cli(["token", "revoke", Collector::token_id(&token)])
        .await?;
    let mut client = fx.collector.client().await?;
    let status = client
        .register(register_request(&token, "dev-after"))
        .await
        .expect_err("revoked token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        format!(
            "enrollment token {} was revoked",
            Collector::token_id(&token)
        )
    );

    // Documented choice: agents registered before keep their own credential.
    let items =
        Synth::new(2).event_items(&agent.agent_id, &[], 2, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 1, items).await?.accepted, 2);
    Ok(())
}

/// The revocation delay the tests run the collector with (the default is 2000 ms).
const REVOCATION_BOUND: Duration = Duration::from_millis(500);

#[tokio::test]
async fn revoked_agent_credential_stops_pushes_within_the_bound() -> anyhow::Result<()> {
    let fx = Fixture::start_with("auth_revoked_agent", |b| {
        b.arg(format!(
            "--credential-cache-max-delay-ms={}",
            REVOCATION_BOUND.as_millis()
        ))
    })
    .await?;
    let agent = fx.enroll("contoso", "dev-revoked").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(3);
    let first = synth.event_items(&agent.agent_id, &[], 4, recent(), Duration::from_secs(1));
    assert_eq!(agent.push(&mut client, 1, first).await?.accepted, 4);
    // Served from the credential cache from now on.
    agent.get_limits(&mut client).await?;
    let metrics = fx.collector.http_get("/metrics").await?.body;
    assert!(
        metrics.contains("fleetpulse_collector_credential_checks_total{source=\"cache\"}"),
        "{metrics}"
    );

    fx.collector
        .cli(["agent", "revoke", &agent.agent_id])
        .await?;
    let revoked_at = std::time::Instant::now();
    let status = agent
        .await_refusal(
            &mut client,
            revoked_at,
            REVOCATION_BOUND,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    let second = synth.event_items(&agent.agent_id, &[], 4, recent(), Duration::from_secs(1));
    let status = agent
        .push(&mut client, 2, second)
        .await
        .expect_err("revoked credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        format!("agent {} was revoked", agent.agent_id)
    );
    assert_eq!(fx.count("enrollment_events").await?, 4);
    Ok(())
}

#[tokio::test]
async fn an_agent_cannot_write_for_another_agent_or_tenant() -> anyhow::Result<()> {
    let fx = Fixture::start("auth_cross_tenant").await?;
    let contoso = fx.enroll("contoso", "dev-contoso").await?;
    let fabrikam = fx.enroll("fabrikam", "dev-fabrikam").await?;
    assert_eq!(
        (contoso.tenant.as_str(), fabrikam.tenant.as_str()),
        ("contoso", "fabrikam")
    );
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(4);

    // Contoso's agent sends items claiming to be fabrikam's agent.
    let foreign = synth.event_items(&fabrikam.agent_id, &[], 3, recent(), Duration::from_secs(1));
    let status = contoso
        .push(&mut client, 1, foreign)
        .await
        .expect_err("items of another agent");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "items[0].event.agent_id: belongs to another agent than the credential"
    );

    // One foreign item among its own fails the whole batch: nothing of it is stored.
    let mut mixed = synth.event_items(&contoso.agent_id, &[], 2, recent(), Duration::from_secs(1));
    mixed.push(state_item(synth.device_state(
        &fabrikam.agent_id,
        "dev-fabrikam",
        recent(),
    )));
    let status = contoso
        .push(&mut client, 2, mixed)
        .await
        .expect_err("one foreign item");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "items[2].state.agent_id: belongs to another agent than the credential"
    );

    // Payload fields that look like a tenant do not choose the tenant.
    let mut event = synth.event(&fabrikam.agent_id, "dev-fabrikam", recent());
    event.attributes = HashMap::from([("tenant".to_owned(), "contoso".to_owned())]);
    let mut state = synth.device_state(&fabrikam.agent_id, "dev-fabrikam", recent());
    state.entra_tenant_id = "contoso".into();
    let response = fabrikam
        .push_request(
            &mut client,
            PushRequest {
                batch_seq: 1,
                items: vec![event_item(event), state_item(state)],
                all_or_nothing: true,
            },
        )
        .await?;
    assert_eq!(response.accepted, 2);

    assert_eq!(
        fx.count_where("enrollment_events", "tenant = ?", &["contoso"])
            .await?,
        0
    );
    assert_eq!(
        fx.count_where("device_states", "tenant = ?", &["contoso"])
            .await?,
        0
    );
    assert_eq!(
        fx.count_where("enrollment_events", "tenant = ?", &["fabrikam"])
            .await?,
        1
    );
    assert_eq!(
        fx.count_where("device_states", "tenant = ?", &["fabrikam"])
            .await?,
        1
    );
    assert_eq!(fx.count("enrollment_events").await?, 1);
    Ok(())
}
