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

/// Runs `fleetpulse-analyzer migrate` against `url` (with `ca` as `--clickhouse-ca-file`);
/// returns whether it succeeded and its stderr.
fn analyzer_migrate(url: &str, db: &str, ca: Option<&std::path::Path>) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = fleetpulse_tests::harness::collector::workspace_binary("fleetpulse-analyzer")
        .expect("analyzer binary");
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "migrate",
        "--clickhouse-url",
        url,
        "--clickhouse-database",
        db,
    ])
    .arg("--database-url")
    .arg(format!("sqlite://{}", dir.path().join("keys.db").display()))
    .env_remove("FLEETPULSE_ANALYZER_CLICKHOUSE_CA_FILE");
    if let Some(ca) = ca {
        cmd.arg("--clickhouse-ca-file").arg(ca);
    }
    let out = cmd.output().expect("run the analyzer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ClickHouse over HTTPS with a certificate from a private CA: with that CA as
/// `clickhouse_ca_file` the collector stores through it and the analyzer migrates through it;
/// without it (built-in roots) or with another CA the TLS handshake is refused, and a CA file
/// for a plain `http://` URL is a configuration error naming the setting.
#[tokio::test]
async fn clickhouse_over_https_is_verified_against_the_configured_ca() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let server = pki.server_tls(false);
    let (ch, https_url) =
        fleetpulse_tests::harness::ClickHouseServer::start_with_https(&server.cert, &server.key)?;
    let db = fleetpulse_tests::harness::unique_database("ch_https");

    let collector = fleetpulse_tests::harness::Collector::builder(&https_url, &db)
        .arg("--clickhouse-ca-file")
        .arg(pki.ca_path())
        .start()
        .await?;
    let token = collector.token_create("contoso").await?;
    let agent = collector.register(&token, "dev-https").await?;
    let mut client = collector.client().await?;
    let items = Synth::new(7).event_items(
        &agent.agent_id,
        &[],
        5,
        SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(agent.push(&mut client, 1, items).await?.accepted, 5);
    // Counted over plain HTTP, independently of the client under test.
    let stored = ch
        .count(&format!("SELECT count() FROM {db}.enrollment_events"), &[])
        .await?;
    assert_eq!(stored, 5);

    // The analyzer: with the CA it migrates (its rollups appear); without, it is refused.
    let (ok, stderr) = analyzer_migrate(&https_url, &db, Some(&pki.ca_path()));
    assert!(ok, "migrate over https with the CA failed: {stderr}");
    let rollups = ch
        .count(
            "SELECT count() FROM system.tables WHERE database = ? AND name LIKE 'rollup_%'",
            &[&db],
        )
        .await?;
    assert!(rollups > 0, "no rollup table after the migration");
    let (ok, stderr) = analyzer_migrate(&https_url, &db, None);
    assert!(!ok, "migrate without the CA succeeded");
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("certificate"),
        "the refusal should name the certificate problem: {stderr}"
    );
    let other = TestPki::generate()?;
    let (ok, stderr) = analyzer_migrate(&https_url, &db, Some(&other.ca_path()));
    assert!(!ok, "migrate trusting another CA succeeded");
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("certificate"),
        "{stderr}"
    );
    let (ok, stderr) = analyzer_migrate(ch.url(), &db, Some(&pki.ca_path()));
    assert!(!ok, "a CA file for an http:// URL was accepted");
    assert!(
        stderr.contains("invalid clickhouse_ca_file: set, but clickhouse_url http://"),
        "{stderr}"
    );

    // The collector refuses the same misconfiguration at startup, naming the setting.
    let bin = fleetpulse_tests::harness::collector::workspace_binary("fleetpulse-collector")?;
    let out = tokio::process::Command::new(bin)
        .args([
            "serve",
            "--clickhouse-url",
            ch.url(),
            "--clickhouse-ca-file",
        ])
        .arg(pki.ca_path())
        .env_remove("FLEETPULSE_COLLECTOR_CLICKHOUSE_CA_FILE")
        .output()
        .await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clickhouse_ca_file: set, but clickhouse_url http://"),
        "{stderr}"
    );
    Ok(())
}
