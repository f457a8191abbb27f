//! The alert store's exactly-once guarantee on real SQLite and PostgreSQL: many writers
//! racing to open the same episode, or to move it to the same next version, produce one row,
//! one notification and one outbox record per destination.

use fleetpulse_analyzer::alerts::lifecycle::{Kind, Status};
use fleetpulse_analyzer::alerts::model::{Alert, Detail};
use fleetpulse_analyzer::alerts::store::{self, AlertStore, Outgoing, alert_id, notification_id};
use fleetpulse_analyzer::keys;
use fleetpulse_tests::harness::Postgres;

fn alert(key: &str) -> Alert {
    Alert {
        alert_id: alert_id(key, 1),
        alert_key: key.to_owned(),
        episode: 1,
        rule: "spike".into(),
        tenant: "contoso".into(),
        category: "license".into(),
        dimension: "category".into(),
        dimension_value: "license".into(),
        status: Status::Firing,
        version: 1,
        started_at: 1_700_000_000,
        firing_at: Some(1_700_000_000),
        resolved_at: None,
        recovering_since: None,
        last_notified_at: Some(1_700_000_000),
        acknowledged_by: None,
        acknowledged_at: None,
        updated_at: 1_700_000_000,
        detail: Detail::default(),
    }
}

fn outgoing(a: &Alert, kind: Kind) -> Outgoing {
    Outgoing {
        kind,
        id: notification_id(&a.alert_id, kind, a.version),
        payload: format!("{{\"alert_id\":\"{}\"}}", a.alert_id),
        silenced_by: None,
        destinations: vec!["ops".into(), "siem".into()],
    }
}

/// `writers` stores on separate pools race; returns how many won each step.
async fn race(url: &str, writers: usize) -> (usize, usize, AlertStore) {
    let mut stores = Vec::new();
    for _ in 0..writers {
        let pool = keys::open(url).await.expect("open control db");
        store::migrate(&pool, store::is_postgres(url))
            .await
            .expect("migrate");
        stores.push(AlertStore::new(pool));
    }
    let a = alert("spike|contoso|category|license");
    let mut tasks = Vec::new();
    for s in &stores {
        let (s, a) = (s.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            s.insert(&a, Some(&outgoing(&a, Kind::Firing)), 1_700_000_000)
                .await
                .expect("insert")
        }));
    }
    let mut opened = 0;
    for t in tasks {
        opened += usize::from(t.await.expect("join"));
    }
    // A writer that read a stale episode number cannot open a second episode beside it.
    let mut second = alert("spike|contoso|category|license");
    second.episode = 2;
    second.alert_id = alert_id("spike|contoso|category|license", 2);
    assert!(
        !stores[0]
            .insert(
                &second,
                Some(&outgoing(&second, Kind::Firing)),
                1_700_000_001
            )
            .await
            .expect("insert"),
        "a second open episode of one key"
    );
    let mut resolved = a.clone();
    resolved.status = Status::Resolved;
    resolved.version = 2;
    resolved.resolved_at = Some(1_700_000_600);
    let mut tasks = Vec::new();
    for s in &stores {
        let (s, r) = (s.clone(), resolved.clone());
        tasks.push(tokio::spawn(async move {
            s.update(&r, Some(&outgoing(&r, Kind::Resolved)), 1_700_000_600)
                .await
                .expect("update")
        }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += usize::from(t.await.expect("join"));
    }
    (opened, moved, stores.swap_remove(0))
}

async fn check(url: &str) {
    let (opened, moved, s) = race(url, 6).await;
    assert_eq!((opened, moved), (1, 1), "exactly one writer wins each step");
    let id = alert_id("spike|contoso|category|license", 1);
    let notes = s.notifications(&id).await.unwrap();
    let kinds: Vec<&str> = notes.iter().map(|n| n.1.as_str()).collect();
    assert_eq!(kinds, vec!["firing", "resolved"]);
    assert_eq!(s.outbox_pending("ops").await.unwrap(), 2);
    assert_eq!(s.outbox_pending("siem").await.unwrap(), 2);
    let a = s.get(&id).await.unwrap().unwrap();
    assert_eq!((a.status, a.version), (Status::Resolved, 2));
    assert_eq!(s.open_alerts().await.unwrap().len(), 0);
    assert_eq!(
        s.last_episode("spike|contoso|category|license")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_per_transition_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("alerts.db").display());
    check(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_per_transition_on_postgres() {
    let pg = Postgres::start().expect("postgres");
    let url = pg.create_database("alerts_store").expect("database");
    check(&url).await;
}
