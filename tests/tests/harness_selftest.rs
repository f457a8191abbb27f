//! The harness itself against real servers: a broken harness would make every other suite
//! fail for the wrong reason, so its contracts are checked first and separately.

use std::time::Duration;

use fleetpulse_tests::harness::{self, Postgres, poll_eq, rows, tls::TestPki};

#[tokio::test]
async fn shared_clickhouse_answers_and_hosts_the_raw_tables() -> anyhow::Result<()> {
    let ch = harness::shared();
    let db = harness::unique_database("selftest");
    ch.execute(&format!("CREATE DATABASE {db}")).await?;
    for stmt in rows::raw_table_statements(&db) {
        ch.execute(&stmt).await?;
    }
    let tables = ch
        .query_json(
            "SELECT name FROM system.tables WHERE database = ? ORDER BY name",
            &[&db],
        )
        .await?;
    assert_eq!(
        tables,
        vec![
            serde_json::json!({"name": "agent_heartbeats"}),
            serde_json::json!({"name": "device_states"}),
            serde_json::json!({"name": "enrollment_events"}),
        ]
    );
    assert_eq!(
        ch.count("SELECT count() FROM system.one WHERE ? = 'x'", &["x"])
            .await?,
        1
    );
    ch.execute(&format!("DROP DATABASE {db}")).await?;
    Ok(())
}

#[tokio::test]
async fn private_clickhouse_keeps_data_across_stop_and_start() -> anyhow::Result<()> {
    let ch = harness::private()?;
    assert!(ch.is_managed());
    ch.execute("CREATE DATABASE keep").await?;
    ch.execute("CREATE TABLE keep.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        .await?;
    ch.execute("INSERT INTO keep.t VALUES (1), (2), (3)")
        .await?;
    let url = ch.url().to_owned();
    ch.stop()?;
    assert!(!ch.is_up());
    assert!(ch.count("SELECT count() FROM keep.t", &[]).await.is_err());
    ch.start()?;
    assert_eq!(ch.url(), url);
    poll_eq(Duration::from_secs(10), "rows after restart", 3, || {
        ch.count("SELECT count() FROM keep.t", &[])
    })
    .await;
    Ok(())
}

#[test]
fn postgres_starts_and_creates_databases() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let a = pg.create_database("selftest")?;
    let b = pg.create_database("selftest")?;
    assert_ne!(a, b);
    assert!(a.starts_with(pg.base_url()), "{a} vs {}", pg.base_url());
    Ok(())
}

#[test]
fn test_pki_writes_pem_files() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let server = pki.server_tls(true);
    assert!(std::fs::read_to_string(&server.cert)?.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(std::fs::read_to_string(&server.key)?.contains("PRIVATE KEY-----"));
    assert_eq!(server.client_ca, Some(pki.ca_path()));
    assert!(pki.server_tls(false).client_ca.is_none());
    Ok(())
}
