//! gRPC over TLS and mutual TLS, end to end, with a CA generated in the test.

use std::time::{Duration, SystemTime};

use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_tests::harness::Fixture;
use fleetpulse_tests::harness::register_request;
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::tls::TestPki;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Registers through `endpoint`; `Err` carries whatever failed (connect or call).
async fn try_register(endpoint: Endpoint, token: &str) -> Result<String, String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    IngestServiceClient::new(channel)
        .register(register_request(token, "dev-tls"))
        .await
        .map(|r| r.into_inner().agent_id)
        .map_err(|s| format!("call: {s:?}"))
}

#[tokio::test]
async fn tls_serves_trusting_clients_only() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let fx = Fixture::start_with("tls", |b| {
        b.tls(pki.server_tls(false))
            .client_tls(pki.client_tls(false))
    })
    .await?;
    assert!(fx.collector.grpc_url().starts_with("https://localhost:"));
    let token = fx.collector.token_create("contoso").await?;

    // A client trusting the test CA registers and pushes.
    let agent = fx.collector.register(&token, "dev-tls").await?;
    let mut client = fx.collector.client().await?;
    let items = Synth::new(1).event_items(
        &agent.agent_id,
        &[],
        3,
        SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(agent.push(&mut client, 1, items).await?.accepted, 3);

    let port = fx.collector.grpc_addr().port();
    // Plaintext HTTP/2 against the TLS port fails.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    assert!(try_register(plain, &token).await.is_err());
    // TLS without trusting the CA (system roots only... none configured) fails the handshake.
    let other_ca = TestPki::generate()?;
    let untrusted = Endpoint::from_shared(format!("https://localhost:{port}"))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&other_ca.ca_pem))
                .domain_name("localhost"),
        )?
        .connect_timeout(Duration::from_secs(5));
    assert!(try_register(untrusted, &token).await.is_err());
    assert_eq!(fx.count("enrollment_events").await?, 3);
    Ok(())
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_ca() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let fx = Fixture::start_with("mtls", |b| {
        b.tls(pki.server_tls(true)).client_tls(pki.client_tls(true))
    })
    .await?;
    let token = fx.collector.token_create("contoso").await?;
    let port = fx.collector.grpc_addr().port();

    let with_cert = Endpoint::from_shared(format!("https://localhost:{port}"))?
        .tls_config(pki.client_tls(true))?;
    let agent_id = try_register(with_cert, &token)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(agent_id.len(), 36, "{agent_id}");

    let without_cert = Endpoint::from_shared(format!("https://localhost:{port}"))?
        .tls_config(pki.client_tls(false))?;
    let refused = try_register(without_cert, &token).await;
    assert!(refused.is_err(), "{refused:?}");

    // A certificate from another CA is refused as well.
    let stranger = TestPki::generate()?;
    let foreign_cert = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
        .identity(tonic::transport::Identity::from_pem(
            &stranger.client_cert_pem,
            &stranger.client_key_pem,
        ));
    let foreign =
        Endpoint::from_shared(format!("https://localhost:{port}"))?.tls_config(foreign_cert)?;
    assert!(try_register(foreign, &token).await.is_err());

    let agents = fx.collector.cli(["agent", "list", "--json"]).await?;
    assert_eq!(
        agents.matches("\"id\"").count(),
        1,
        "only the mTLS client registered: {agents}"
    );
    Ok(())
}
