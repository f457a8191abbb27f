//! Admission control end to end (issue 14 remainder, issue 13 section 2): Register rate limits
//! per token and per source, enrollment-token use caps and expiry through the CLI, agents that
//! retry a rate-limited Register, Push rate limits per agent and per tenant with retry hints,
//! and collector start-up while ClickHouse is unreachable.

use std::process::{Command, Stdio};
use std::time::Duration;

use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::process::{free_port, log_tail, signal, spawn_guarded};
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{
    Collector, Fixture, batch, bearer, poll_until, private, recent, register_request,
    unique_database,
};
use tonic::Code;

/// The `retry-after-ms` hint of a refusal, which must also be named in the message.
fn hint_ms(status: &tonic::Status) -> u64 {
    let ms: u64 = status
        .metadata()
        .get("retry-after-ms")
        .unwrap_or_else(|| panic!("no retry-after-ms in {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        status.message().ends_with(&format!("; retry in {ms} ms")),
        "{}",
        status.message()
    );
    ms
}

/// The value of a counter line of `/metrics` (0 when absent).
async fn metric(collector: &Collector, line_prefix: &str) -> u64 {
    let body = collector.http_get("/metrics").await.unwrap().body;
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn register_is_rate_limited_per_token_with_a_hint_and_a_log_without_the_secret()
-> anyhow::Result<()> {
    let fx = Fixture::start_with("adm_reg_token", |b| {
        b.args([
            "--register-token-rate",
            "1:3",
            "--register-source-rate",
            "0",
        ])
    })
    .await?;
    let token = fx.collector.token_create("contoso").await?;
    let other = fx.collector.token_create("fabrikam").await?;
    let mut client = fx.collector.client().await?;
    for n in 0..3 {
        client
            .register(register_request(&token, &format!("dev-{n}")))
            .await?;
    }
    let refused = client
        .register(register_request(&token, "dev-3"))
        .await
        .expect_err("fourth registration within the burst");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let id = Collector::token_id(&token);
    assert!(
        refused.message().starts_with(&format!(
            "too many registrations with enrollment token {id} (limit 1/s burst 3, \
             register_token_rate)"
        )),
        "{}",
        refused.message()
    );
    let hint = hint_ms(&refused);
    assert!((1..=60_000).contains(&hint), "{hint}");
    // Another token has its own budget.
    client.register(register_request(&other, "dev-x")).await?;
    // After the hint the token enrolls again.
    tokio::time::sleep(Duration::from_millis(hint)).await;
    poll_until(
        Duration::from_secs(5),
        "registration after the hint",
        || {
            let mut client = client.clone();
            let token = token.clone();
            async move { client.register(register_request(&token, "dev-3")).await }
        },
    )
    .await;
    assert!(
        metric(
            &fx.collector,
            "fleetpulse_collector_rate_limited_total{limit=\"register_token\"} "
        )
        .await
            >= 1
    );
    let log = std::fs::read_to_string(fx.collector.log_path())?;
    assert!(
        log.contains("request refused by admission control"),
        "{log}"
    );
    let secret = token.rsplit('_').next().unwrap();
    assert!(!log.contains(secret), "the token's secret reached the log");
    Ok(())
}

#[tokio::test]
async fn register_is_rate_limited_per_source_address() -> anyhow::Result<()> {
    let fx = Fixture::start_with("adm_reg_source", |b| {
        b.args([
            "--register-token-rate",
            "0",
            "--register-source-rate",
            "1:2",
        ])
    })
    .await?;
    let mut client = fx.collector.client().await?;
    // Three tokens, one source: the third registration is refused whatever the token. Even an
    // unknown token costs a unit (the limit is checked before the secret).
    let tokens = [
        fx.collector.token_create("t1").await?,
        fx.collector.token_create("t2").await?,
        fx.collector.token_create("t3").await?,
    ];
    client.register(register_request(&tokens[0], "a")).await?;
    client.register(register_request(&tokens[1], "b")).await?;
    let refused = client
        .register(register_request(&tokens[2], "c"))
        .await
        .expect_err("third registration from one address");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .starts_with("too many registrations from 127.0.0.1 (limit 1/s burst 2"),
        "{}",
        refused.message()
    );
    hint_ms(&refused);
    assert_eq!(
        metric(
            &fx.collector,
            "fleetpulse_collector_rate_limited_total{limit=\"register_source\"} "
        )
        .await,
        1
    );
    Ok(())
}

/// A fleet enrolling at once through a tight limit: every `fleetpulse-agent register` retries
/// after the collector's hint and succeeds; none fails.
#[tokio::test]
async fn agents_enrolling_at_once_are_slowed_not_refused() -> anyhow::Result<()> {
    let fx = Fixture::start_with("adm_reg_fleet", |b| {
        b.args([
            "--register-token-rate",
            "2:1",
            "--register-source-rate",
            "0",
        ])
    })
    .await?;
    let token = fx.collector.token_create("contoso").await?;
    let dir = tempfile::tempdir()?;
    let bin = workspace_binary("fleetpulse-agent")?;
    let mut children = Vec::new();
    for n in 0..6 {
        let agent_dir = dir.path().join(format!("agent-{n}"));
        std::fs::create_dir_all(&agent_dir)?;
        let child = tokio::process::Command::new(&bin)
            .args(["register", "--enrollment-token", &token, "--device-id"])
            .arg(format!("fleet-{n}"))
            .arg("--collector")
            .arg(fx.collector.grpc_url())
            .arg("--state-file")
            .arg(agent_dir.join("state.json"))
            .arg("--spool-dir")
            .arg(agent_dir.join("spool"))
            .args(["--retry-secs", "60"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        children.push(child);
    }
    let outputs = futures::future::join_all(children).await;
    let mut retried = 0;
    for out in outputs {
        let out = out?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "register failed: {stderr}");
        if stderr.contains("registration not accepted yet; will retry") {
            retried += 1;
        }
    }
    assert!(retried >= 1, "6 at once through a burst of 1: some retried");
    let agents = fx.collector.cli(["agent", "list", "--json"]).await?;
    let agents: serde_json::Value = serde_json::from_str(&agents)?;
    assert_eq!(agents.as_array().unwrap().len(), 6);
    Ok(())
}

#[tokio::test]
async fn token_use_caps_and_expiry_from_the_cli() -> anyhow::Result<()> {
    let fx = Fixture::start("adm_token_caps").await?;
    let c = &fx.collector;
    let out = c
        .cli([
            "token",
            "create",
            "--tenant",
            "contoso",
            "--max-uses",
            "2",
            "--expires-in",
            "7days",
        ])
        .await?;
    let capped = out.lines().next().unwrap().trim().to_owned();
    let out = c
        .cli([
            "token",
            "create",
            "--tenant",
            "contoso",
            "--expires-in",
            "1s",
        ])
        .await?;
    let short = out.lines().next().unwrap().trim().to_owned();

    let listed: serde_json::Value =
        serde_json::from_str(&c.cli(["token", "list", "--json"]).await?)?;
    let row = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    let capped_row = row(Collector::token_id(&capped));
    assert_eq!(capped_row["uses"], 0);
    assert_eq!(capped_row["max_uses"], 2);
    assert!(capped_row["expires_at"].is_string(), "{capped_row}");
    assert_eq!(
        row(Collector::token_id(&short))["max_uses"],
        serde_json::Value::Null
    );

    let mut client = c.client().await?;
    client.register(register_request(&capped, "d1")).await?;
    client.register(register_request(&capped, "d2")).await?;
    let refused = client
        .register(register_request(&capped, "d3"))
        .await
        .expect_err("third use of a two-use token");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        format!(
            "enrollment token {} is used up (2 of 2 registrations); create a new one with \
             `fleetpulse-collector token create`",
            Collector::token_id(&capped)
        )
    );
    let table = c.cli(["token", "list"]).await?;
    let line = table
        .lines()
        .find(|l| l.starts_with(Collector::token_id(&capped)))
        .unwrap();
    assert!(line.contains(" 2/2 "), "{table}");

    // The one-second token expires; registering is then refused naming the expiry.
    let expired = poll_until(Duration::from_secs(10), "the token to expire", || {
        let mut client = client.clone();
        let short = short.clone();
        async move {
            match client.register(register_request(&short, "late")).await {
                Err(s) if s.code() == Code::PermissionDenied => Ok(s),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(
        expired.message().starts_with(&format!(
            "enrollment token {} expired at ",
            Collector::token_id(&short)
        )),
        "{}",
        expired.message()
    );
    assert_eq!(
        metric(
            c,
            "fleetpulse_collector_auth_failures_total{reason=\"used_up\"} "
        )
        .await,
        1
    );
    let err = c
        .cli(["token", "create", "--tenant", "x", "--max-uses", "0"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-uses"), "{err}");
    Ok(())
}

#[tokio::test]
async fn pushes_beyond_the_agent_rate_are_refused_with_a_hint_and_stored_once_later()
-> anyhow::Result<()> {
    let fx =
        Fixture::start_with("adm_push_agent", |b| b.args(["--agent-pushes-rate", "1:2"])).await?;
    let agent = fx.enroll("contoso", "dev-1").await?;
    let other = fx.enroll("contoso", "dev-2").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(7);
    let items = |synth: &mut Synth, id: &str| {
        synth.event_items(id, &[], 3, recent(), Duration::from_secs(1))
    };
    let (b1, b2, b3) = (
        items(&mut synth, &agent.agent_id),
        items(&mut synth, &agent.agent_id),
        items(&mut synth, &agent.agent_id),
    );
    client.push(bearer(&agent.credential, batch(1, b1))).await?;
    client.push(bearer(&agent.credential, batch(2, b2))).await?;
    let refused = client
        .push(bearer(&agent.credential, batch(3, b3.clone())))
        .await
        .expect_err("third push within the burst of 2");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().starts_with(&format!(
            "agent {} pushes too often (limit 1/s burst 2, agent_pushes_rate)",
            agent.agent_id
        )),
        "{}",
        refused.message()
    );
    let hint = hint_ms(&refused);
    assert!(hint <= 1000, "{hint}");
    // Another agent of the tenant is not affected.
    let o = items(&mut synth, &other.agent_id);
    client.push(bearer(&other.credential, batch(1, o))).await?;
    // The refused batch was not claimed: resent after the hint it is stored, once.
    tokio::time::sleep(Duration::from_millis(hint)).await;
    let resp = poll_until(Duration::from_secs(5), "the resend after the hint", || {
        let mut client = client.clone();
        let req = bearer(&agent.credential, batch(3, b3.clone()));
        async move { client.push(req).await }
    })
    .await
    .into_inner();
    assert_eq!((resp.accepted, resp.duplicate), (3, false));
    assert_eq!(fx.count("enrollment_events").await?, 12);
    assert_eq!(
        metric(
            &fx.collector,
            "fleetpulse_collector_rate_limited_total{limit=\"agent_pushes\"} "
        )
        .await,
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_tenant_over_its_event_rate_is_refused_while_others_are_not() -> anyhow::Result<()> {
    let fx = Fixture::start_with("adm_push_tenant", |b| {
        b.args(["--max-batch-items", "50", "--tenant-events-rate", "10:100"])
    })
    .await?;
    let flood = fx.enroll("flood", "dev-f").await?;
    let calm = fx.enroll("calm", "dev-c").await?;
    let mut client = fx.collector.client().await?;
    let mut synth = Synth::new(9);
    let mut seq = 0;
    let mut refused = None;
    for _ in 0..3 {
        seq += 1;
        let items = synth.event_items(&flood.agent_id, &[], 50, recent(), Duration::from_secs(1));
        match client
            .push(bearer(&flood.credential, batch(seq, items)))
            .await
        {
            Ok(_) => {}
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let refused = refused.expect("the third batch of 50 exceeds a burst of 100");
    assert_eq!(seq, 3);
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().starts_with(
            "tenant flood sends too many items (50 in this batch) (limit 10/s burst 100, \
             tenant_events_rate)"
        ),
        "{}",
        refused.message()
    );
    let hint = hint_ms(&refused);
    assert!(hint >= 1000, "50 items at 10/s need seconds: {hint}");
    let items = synth.event_items(&calm.agent_id, &[], 50, recent(), Duration::from_secs(1));
    let ok = client
        .push(bearer(&calm.credential, batch(1, items)))
        .await?
        .into_inner();
    assert_eq!(ok.accepted, 50);
    assert_eq!(
        fx.count_where("enrollment_events", "tenant = ?", &["flood"])
            .await?,
        100
    );
    Ok(())
}

/// Start-up while ClickHouse is down: the collector stays up, `/healthz` answers, `/readyz` is
/// 503 naming the wait; once ClickHouse is back it migrates, becomes ready and stores pushes.
#[tokio::test]
async fn startup_waits_for_an_unreachable_clickhouse_and_reports_not_ready() -> anyhow::Result<()> {
    let ch = private()?;
    ch.stop()?;
    let dir = tempfile::tempdir()?;
    let http_port = free_port()?;
    let ready = dir.path().join("ready.json");
    let log = dir.path().join("collector.log");
    let db = unique_database("adm_startup");
    let mut command = Command::new(workspace_binary("fleetpulse-collector")?);
    command
        .args([
            "serve",
            "--clickhouse-url",
            ch.url(),
            "--clickhouse-database",
            &db,
        ])
        .arg("--database-url")
        .arg(format!("sqlite://{}/control.db", dir.path().display()))
        .args(["--grpc-listen", "127.0.0.1:0", "--http-listen"])
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null());
    let log_file = std::fs::File::create(&log)?;
    command.stderr(log_file.try_clone()?).stdout(log_file);
    let mut child = spawn_guarded(command, "fleetpulse-collector")?;
    let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
    let not_ready = poll_until(Duration::from_secs(30), "/readyz while waiting", || async {
        match fleetpulse_tests::harness::http::get(http, "/readyz").await {
            Ok(r) if r.status == 503 && r.body.contains("waiting for ClickHouse") => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let body: serde_json::Value = serde_json::from_str(&not_ready.body)?;
    assert_eq!(body["status"], "not ready");
    assert!(
        body["startup"]
            .as_str()
            .unwrap()
            .starts_with("waiting for ClickHouse to apply migrations (attempt "),
        "{body}"
    );
    let health = fleetpulse_tests::harness::http::get(http, "/healthz").await?;
    assert_eq!(health.status, 200);
    assert!(
        child.try_wait()?.is_none(),
        "the collector exited: {}",
        log_tail(&log, 4000)
    );
    assert!(
        !ready.exists(),
        "ready file written before ClickHouse was reached"
    );

    ch.start()?;
    poll_until(Duration::from_secs(60), "the ready file", || async {
        std::fs::read_to_string(&ready)
    })
    .await;
    poll_until(Duration::from_secs(10), "/readyz 200", || async {
        match fleetpulse_tests::harness::http::get(http, "/readyz").await {
            Ok(r) if r.status == 200 => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let text = std::fs::read_to_string(&log)?;
    assert!(
        text.contains("ClickHouse unreachable at start-up; waiting for it (not ready)"),
        "{text}"
    );
    signal(&child, libc::SIGTERM);
    let status = child.wait()?;
    assert!(status.success(), "{status}");
    Ok(())
}
