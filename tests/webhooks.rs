//! Webhook delivery end to end: events written by the store reach a real HTTP receiver in this
//! test (axum on 127.0.0.1:0) that checks every signature and fails (HTTP 500) or hangs past
//! the timeout on the first attempts. Proves retries with backoff, no loss, a stable
//! X-Keyward-Delivery across retries, giving up, and the deliveries API. SQLite always,
//! Postgres when KEYWARD_TEST_POSTGRES_URL is set.

#[path = "support/db.rs"]
mod db;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{TimeZone, Utc};
use hmac::{Hmac, Mac};
use keyward::metrics::Metrics;
use keyward::notify::{DeliverySettings, Notifier, Webhook};
use keyward::store::{
    KeyRecord, KeyUpdate, NewFinding, NewToken, PolicyState, RegionSync, RegionSyncOutcome, Store,
    SyncRunFinish,
};
use keyward::web::auth::token_hash;
use keyward::web::{AppState, build_app, serve};
use serde_json::Value;
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const A: &str = "111122223333";
const REGION: &str = "eu-west-1";

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    event: String,
    delivery: String,
    signature_ok: bool,
    body: Value,
}

/// How the receiver misbehaves: per delivery id, the first `fail` attempts answer 500 and the
/// next `hang` attempts never answer in time.
#[derive(Clone)]
struct Receiver {
    secret: String,
    fail: usize,
    hang: usize,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn new(secret: &str, fail: usize, hang: usize) -> Self {
        Receiver {
            secret: secret.into(),
            fail,
            hang,
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Serves on a fresh loopback port; returns the webhook URL.
    async fn start(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let received = Received {
        at: Instant::now(),
        event: header("x-keyward-event"),
        delivery: header("x-keyward-delivery"),
        signature_ok: verify(&r.secret, &body, &header("x-keyward-signature")),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let attempt = {
        let mut seen = r.seen.lock().unwrap();
        seen.push(received.clone());
        seen.iter()
            .filter(|s| s.delivery == received.delivery)
            .count()
    };
    if attempt <= r.fail {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if attempt <= r.fail + r.hang {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    StatusCode::NO_CONTENT
}

fn key(id: &str) -> KeyRecord {
    KeyRecord {
        arn: format!("arn:aws:kms:{REGION}:{A}:key/{id}"),
        account_id: A.into(),
        region: REGION.into(),
        key_id: id.into(),
        description: String::new(),
        key_manager: "CUSTOMER".into(),
        key_state: "Enabled".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        origin: "AWS_KMS".into(),
        multi_region: false,
        creation_date: None,
        deletion_date: None,
        rotation_enabled: Some(true),
        aliases: vec![],
        tags: BTreeMap::new(),
        grants: vec![],
        metadata: Default::default(),
    }
}

/// `n` keys with one KMS-PUBLIC finding each (n × finding.opened), and one failed sync run.
async fn seed(store: &dyn Store, n: usize) {
    let updates: Vec<KeyUpdate> = (0..n)
        .map(|i| KeyUpdate {
            key: key(&format!("k{i}")),
            fingerprint: format!("fp{i}"),
            policy: PolicyState::Readable {
                text: "P".into(),
                sha256: keyward::sync::sha256_hex("P"),
            },
            evaluation: "rules-v1".into(),
            findings: vec![NewFinding {
                rule_id: "KMS-PUBLIC".into(),
                locator: "0".into(),
                severity: "critical".into(),
                statement_index: Some(0),
                sid: None,
                message: "public".into(),
            }],
            remediable: true,
        })
        .collect();
    let now = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
    store
        .apply_region_sync(&RegionSync {
            account_id: A.into(),
            region: REGION.into(),
            now,
            listed: updates.iter().map(|u| u.key.arn.clone()).collect(),
            listing_complete: true,
            updates,
            unread: Vec::new(),
        })
        .await
        .unwrap();
    let run = store.start_sync_run(A, REGION, now).await.unwrap();
    store
        .finish_sync_run(
            run,
            &SyncRunFinish {
                finished_at: now,
                keys_seen: 0,
                outcome: RegionSyncOutcome::default(),
                error: Some("AccessDenied".into()),
                iam_error: None,
            },
        )
        .await
        .unwrap();
}

fn fast(max_attempts: u32) -> DeliverySettings {
    DeliverySettings {
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_millis(400),
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        max_attempts,
        batch: 4,
    }
}

/// Polls until every delivery has ended (none pending), or fails after `limit`.
async fn settle(store: &dyn Store, expected: u64, limit: Duration) {
    let start = Instant::now();
    loop {
        let (_, total) = store.query_deliveries(None, None, 1).await.unwrap();
        let (_, pending) = store
            .query_deliveries(Some("pending"), None, 1)
            .await
            .unwrap();
        if total == expected && pending == 0 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "deliveries did not settle: {total} of {expected}, {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn api(db: &db::TestDb) -> String {
    let store = db.shared();
    for (name, role) in [("viewer-bot", "viewer"), ("jira", "operator")] {
        store
            .create_token(&NewToken {
                name: name.into(),
                role: role.into(),
                sha256: token_hash(&format!("secret-{role}")),
                created_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    let app = build_app(AppState {
        store,
        metrics: Arc::new(Metrics::new()),
        clock: db.clock(),
        sync: None,
        remediation: None,
        metrics_public: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, app, std::future::pending()));
    base
}

macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(crate::db::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = crate::db::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    };
}

on_both_databases!(retries_with_backoff_lose_nothing);
on_both_databases!(gives_up_after_max_attempts);

async fn retries_with_backoff_lose_nothing(db: db::TestDb) {
    const N: usize = 6;
    let store = db.shared();
    seed(&*store, N).await;
    // tickets fails twice per delivery; ops hangs once (past the 400 ms timeout)
    let tickets = Receiver::new("tickets-secret", 2, 0);
    let ops = Receiver::new("ops-secret", 0, 1);
    let tickets_url = tickets.start().await;
    let ops_url = ops.start().await;
    let notifier = Notifier::new(
        store.clone(),
        db.clock(),
        vec![
            Webhook {
                url: tickets_url.clone(),
                secret: "tickets-secret".into(),
                events: vec!["finding.opened".into(), "finding.resolved".into()],
            },
            Webhook {
                url: ops_url.clone(),
                secret: "ops-secret".into(),
                events: vec!["sync.failed".into()],
            },
        ],
        fast(12),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(notifier.run(stopped));
    settle(&*store, N as u64 + 1, Duration::from_secs(30)).await;
    stop.send(true).unwrap();
    worker.await.unwrap();

    // tickets: every finding.opened arrived, signed, three times under one delivery id
    let seen = tickets.seen();
    assert!(seen.iter().all(|r| r.signature_ok), "bad signature");
    assert!(seen.iter().all(|r| r.event == "finding.opened"));
    let mut by_delivery: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for r in seen {
        by_delivery.entry(r.delivery.clone()).or_default().push(r);
    }
    assert_eq!(by_delivery.len(), N, "one delivery per event");
    let findings: BTreeSet<i64> = store
        .list_findings(false)
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    let mut announced = BTreeSet::new();
    for (id, attempts) in &by_delivery {
        assert_eq!(attempts.len(), 3, "500, 500, then 204 for {id}");
        for a in attempts {
            assert_eq!(a.body["id"], id.as_str(), "body id = X-Keyward-Delivery");
            assert_eq!(a.body["event"], "finding.opened");
            assert_eq!(a.body, attempts[0].body, "identical body on every attempt");
        }
        assert_eq!(attempts[0].body["data"]["rule_id"], "KMS-PUBLIC");
        assert_eq!(attempts[0].body["data"]["account_id"], A);
        announced.insert(attempts[0].body["data"]["id"].as_i64().unwrap());
        // backoff: ≥ half of 100 ms after the first failure, ≥ half of 200 ms after the second
        let gap1 = attempts[1].at - attempts[0].at;
        let gap2 = attempts[2].at - attempts[1].at;
        assert!(gap1 >= Duration::from_millis(50), "{gap1:?}");
        assert!(gap2 >= Duration::from_millis(100), "{gap2:?}");
    }
    assert_eq!(announced, findings, "no event lost");

    // ops: the hung attempt was retried under the same id
    let seen = ops.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| r.signature_ok && r.event == "sync.failed")
    );
    assert_eq!(seen[0].delivery, seen[1].delivery);
    assert_eq!(seen[0].body["data"]["error"], "AccessDenied");
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(400),
        "timeout first"
    );

    // and the API shows it all
    let base = api(&db).await;
    let http = reqwest::Client::new();
    let get = |role: &str, path: &str| {
        http.get(format!("{base}{path}"))
            .bearer_auth(format!("secret-{role}"))
            .send()
    };
    // viewers read deliveries too, the same ones, but see only each receiver's origin: chat
    // webhooks carry their secret in the path
    let r = get("viewer", "/api/v1/webhooks/deliveries?limit=4")
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let as_viewer: Value = r.json().await.unwrap();
    let page: Value = get("operator", "/api/v1/webhooks/deliveries?limit=4")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], N + 1);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    let mut with_origins_only = page.clone();
    for d in with_origins_only["items"].as_array_mut().unwrap() {
        let url = reqwest::Url::parse(d["webhook"].as_str().unwrap()).unwrap();
        d["webhook"] = format!("{}/...", url.origin().ascii_serialization()).into();
    }
    assert_eq!(as_viewer, with_origins_only);
    assert_ne!(as_viewer, page);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = get(
        "operator",
        &format!("/api/v1/webhooks/deliveries?limit=4&cursor={cursor}"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let items: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(items.len(), N + 1);
    for d in &items {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["last_status"], 204);
        assert_eq!(d["next_attempt_at"], Value::Null);
        let expected = if d["webhook"] == tickets_url.as_str() {
            3
        } else {
            2
        };
        assert_eq!(d["attempts"], expected, "{d}");
    }
    let ids: BTreeSet<&str> = items.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(by_delivery.keys().all(|id| ids.contains(id.as_str())));
    let failed: Value = get("operator", "/api/v1/webhooks/deliveries?status=failed")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failed["total"], 0);
    let r = get("operator", "/api/v1/webhooks/deliveries?status=lost")
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
}

async fn gives_up_after_max_attempts(db: db::TestDb) {
    let store = db.shared();
    seed(&*store, 1).await;
    let down = Receiver::new("s", usize::MAX, 0);
    let url = down.start().await;
    let notifier = Notifier::new(
        store.clone(),
        db.clock(),
        vec![Webhook {
            url: url.clone(),
            secret: "s".into(),
            events: vec!["finding.opened".into()],
        }],
        fast(3),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(notifier.run(stopped));
    settle(&*store, 1, Duration::from_secs(20)).await;
    stop.send(true).unwrap();
    worker.await.unwrap();
    let (rows, _) = store.query_deliveries(None, None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "failed");
    assert_eq!(rows[0].attempts, 3);
    assert_eq!(rows[0].last_status, Some(500));
    assert!(
        rows[0].last_error.as_deref().unwrap().contains("500"),
        "{:?}",
        rows[0].last_error
    );
    assert_eq!(down.seen().len(), 3, "no attempt after giving up");
}
