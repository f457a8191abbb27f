//! The control plane on a real PostgreSQL: authentication, revocation and batch idempotency,
//! also across two collectors sharing one database (the multi-collector deployment).

use std::time::{Duration, SystemTime};

use fleetpulse_proto::v1::{Platform, RegisterRequest};
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{self, Collector, Fixture, Postgres};
use tonic::Code;

/// The revocation delay both collectors run with (the default is 2000 ms).
const REVOCATION_BOUND: Duration = Duration::from_millis(500);

fn bound_arg() -> String {
    format!(
        "--credential-cache-max-delay-ms={}",
        REVOCATION_BOUND.as_millis()
    )
}

#[tokio::test]
async fn postgres_control_plane_authenticates_and_deduplicates() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let url = pg.create_database("collector")?;
    let fx = Fixture::start_with("pg", |b| b.database_url(url.clone()).arg(bound_arg())).await?;
    assert_eq!(fx.collector.database_url(), url);

    // Auth: unknown token refused, real one accepted, tenant from the token.
    let mut client = fx.collector.client().await?;
    let status = client
        .register(RegisterRequest {
            enrollment_token: "fpe_doesnotexist_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            device_id: "dev-pg".into(),
            hostname: String::new(),
            platform: Platform::Windows as i32,
            agent_version: "0.1.0".into(),
        })
        .await
        .expect_err("unknown token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let token = fx.collector.token_create("contoso").await?;
    let agent = fx.collector.register(&token, "dev-pg").await?;
    assert_eq!(agent.tenant, "contoso");

    // Idempotency: a resend is a duplicate, stored once; new contents under an old seq refused.
    let mut synth = Synth::new(9);
    let at = SystemTime::now() - Duration::from_secs(60);
    let batch1 = synth.event_items(&agent.agent_id, &[], 20, at, Duration::from_millis(5));
    let first = agent.push(&mut client, 1, batch1.clone()).await?;
    assert_eq!((first.accepted, first.duplicate), (20, false));
    let resend = agent.push(&mut client, 1, batch1.clone()).await?;
    assert_eq!((resend.accepted, resend.duplicate), (20, true));
    let other = synth.event_items(&agent.agent_id, &[], 20, at, Duration::from_millis(5));
    let status = agent
        .push(&mut client, 1, other)
        .await
        .expect_err("conflict");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // A second collector on the same PostgreSQL (and ClickHouse database) knows the batch.
    let second = Collector::builder(fx.ch.url(), &fx.db)
        .database_url(url.clone())
        .arg(bound_arg())
        .start()
        .await?;
    let mut client2 = second.client().await?;
    let via_second = agent.push(&mut client2, 1, batch1).await?;
    assert_eq!((via_second.accepted, via_second.duplicate), (20, true));
    let batch2 = synth.event_items(&agent.agent_id, &[], 20, at, Duration::from_millis(5));
    assert!(!agent.push(&mut client2, 2, batch2).await?.duplicate);
    assert_eq!(fx.count("enrollment_events").await?, 40);

    // Revocation through the CLI against PostgreSQL takes effect on both collectors within
    // the credential cache's bound (both have the agent cached: it pushed through both).
    agent.get_limits(&mut client).await?;
    agent.get_limits(&mut client2).await?;
    fx.collector
        .cli(["agent", "revoke", &agent.agent_id])
        .await?;
    let revoked_at = std::time::Instant::now();
    for c in [&mut client, &mut client2] {
        let status = agent
            .await_refusal(c, revoked_at, REVOCATION_BOUND, Duration::from_secs(10))
            .await;
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    for c in [&mut client, &mut client2] {
        let batch3 = synth.event_items(&agent.agent_id, &[], 1, at, Duration::from_millis(5));
        let status = agent.push(c, 3, batch3).await.expect_err("revoked");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    second
        .cli(["token", "revoke", Collector::token_id(&token)])
        .await?;
    let status = fx
        .collector
        .register(&token, "dev-pg-2")
        .await
        .expect_err("revoked token");
    assert!(
        matches!(status, harness::HarnessError::Grpc(_, ref s) if s.code() == Code::Unauthenticated),
        "{status}"
    );
    assert_eq!(fx.count("enrollment_events").await?, 40);
    Ok(())
}
