//! Approval-gated remediation end to end: HTTP (server on port 0) → service → the real
//! aws-sdk-kms client against moto, into SQLite and (when KEYWARD_TEST_POSTGRES_URL is set)
//! Postgres. PutKeyPolicy calls are counted by a wrapping `KmsWriter`.

#[path = "support/db.rs"]
mod db;
#[path = "support/faults.rs"]
mod faults;
#[path = "support/moto.rs"]
mod moto;

use async_trait::async_trait;
use keyward::aws::{AccountAccess, AwsError, KmsConnector, KmsWriter, SdkConnector};
use keyward::clock::SystemClock;
use keyward::config::{AccountConfig, RemediationConfig, RemediationMode};
use keyward::metrics::Metrics;
use keyward::remediation::{KmsWriters, RemediationService, SyncAfterApply, same_policy};
use keyward::store::{NewAuditEvent, NewToken, RemediationRow};
use keyward::sync::{Due, SyncService, Target};
use keyward::web::auth::token_hash;
use keyward::web::{AppState, build_app, serve};
use moto::{Moto, default_policy, seed_key};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const REGION: &str = "us-east-1";

fn pinned_policy(account: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}},{{"Sid":"Allow access for Key Administrators","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:role/KMSAdmin"}},"Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion","kms:CancelKeyDeletion"],"Resource":"*"}},{{"Sid":"KeywardRemediatorPolicyAccess","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:role/KeywardAudit"}},"Action":["kms:PutKeyPolicy","kms:GetKeyPolicy","kms:DescribeKey"],"Resource":"*"}}]}}"#
    )
}

/// Counts PutKeyPolicy calls across every writer it opens; fails them (without reaching AWS)
/// while `fail` is set.
struct Counting {
    inner: SdkConnector,
    puts: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

struct CountingWriter {
    inner: Arc<dyn KmsWriter>,
    puts: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

#[async_trait]
impl KmsWriters for Counting {
    async fn writer(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsWriter>, AwsError> {
        let inner = self.inner.writer(access, region).await?;
        Ok(Arc::new(CountingWriter {
            inner,
            puts: self.puts.clone(),
            fail: self.fail.clone(),
        }))
    }
}

#[async_trait]
impl KmsWriter for CountingWriter {
    async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), AwsError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(AwsError::Service {
                operation: "PutKeyPolicy",
                code: "KMSInternalException".into(),
                message: "injected failure".into(),
            });
        }
        self.inner.put_key_policy(key_id, policy).await
    }
}

struct Server {
    base: String,
    http: reqwest::Client,
    account: String,
    kms: aws_sdk_kms::Client,
    puts: Arc<AtomicUsize>,
    fail_puts: Arc<AtomicBool>,
    faults: Arc<std::sync::Mutex<faults::Faults>>,
    service: Arc<RemediationService>,
    sync: Arc<SyncService>,
    targets: Vec<Target>,
    _db: db::TestDb,
}

impl Server {
    async fn start(db: db::TestDb, mode: RemediationMode) -> Server {
        Self::start_with(
            db,
            RemediationConfig {
                mode,
                ..RemediationConfig::default()
            },
        )
        .await
    }

    async fn start_with(db: db::TestDb, remediation: RemediationConfig) -> Server {
        let moto = Moto::start();
        let account = moto.fresh_account();
        let kms = moto.kms_client_for(&account, REGION).await;
        let store = db.shared();
        for (name, role) in [
            ("viewer", "viewer"),
            ("ops", "operator"),
            ("alice", "approver"),
            ("bob", "approver"),
        ] {
            store
                .create_token(&NewToken {
                    name: name.into(),
                    role: role.into(),
                    sha256: token_hash(&format!("secret-{name}")),
                    created_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
        }
        let metrics = Arc::new(Metrics::new());
        let connector: Arc<dyn KmsConnector> = Arc::new(SdkConnector::new(
            Some(moto.endpoint().to_string()),
            metrics.clone(),
        ));
        let account_config = AccountConfig {
            id: account.clone(),
            role_arn: Some(Moto::role_arn(&account)),
            regions: vec![REGION.to_string()],
            key_admins: vec![format!("arn:aws:iam::{account}:role/KMSAdmin")],
            ..AccountConfig::default()
        };
        let targets = vec![Target::from_config(&account_config)];
        let sync = Arc::new(SyncService {
            store: store.clone(),
            connector: connector.clone(),
            metrics: metrics.clone(),
            clock: Arc::new(SystemClock),
            concurrency: 4,
            parallel_regions: 2,
            owner: "test".into(),
            lease: Duration::from_secs(600),
            passes: Default::default(),
        });
        let puts = Arc::new(AtomicUsize::new(0));
        let fail_puts = Arc::new(AtomicBool::new(false));
        let (faulty, faults) = faults::FaultyConnector::new(connector);
        let service = Arc::new(RemediationService {
            store: store.clone(),
            connector: faulty,
            writers: Arc::new(Counting {
                inner: SdkConnector::new(Some(moto.endpoint().to_string()), metrics.clone()),
                puts: puts.clone(),
                fail: fail_puts.clone(),
            }),
            clock: Arc::new(SystemClock),
            config: remediation,
            accounts: vec![account_config],
            after_apply: Some(Arc::new(SyncAfterApply {
                service: sync.clone(),
                targets: targets.clone(),
            })),
        });
        let app = build_app(AppState {
            store,
            metrics,
            clock: Arc::new(SystemClock),
            sync: None,
            remediation: Some(service.clone()),
            metrics_public: true,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, app, std::future::pending()));
        Server {
            base,
            http: reqwest::Client::new(),
            account,
            kms,
            puts,
            fail_puts,
            faults,
            service,
            sync,
            targets,
            _db: db,
        }
    }

    /// Seeds a key with `policy` on moto and syncs it into the store.
    async fn key(&self, policy: &str) -> moto::SeededKey {
        let key = seed_key(&self.kms, policy, "remediation test").await;
        self.sync
            .run_pass(&self.targets, None, Due::Always)
            .await
            .expect("sync pass");
        key
    }

    async fn moto_policy(&self, key_id: &str) -> String {
        self.kms
            .get_key_policy()
            .key_id(key_id)
            .policy_name("default")
            .send()
            .await
            .expect("GetKeyPolicy")
            .policy()
            .expect("policy")
            .to_string()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        who: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(format!("secret-{who}"));
        if let Some(body) = body {
            r = r.json(&body);
        }
        if let Some(k) = idempotency_key {
            r = r.header("Idempotency-Key", k);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, who: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, who, path, body, None)
            .await
    }

    async fn propose(&self, who: &str, key: &str) -> i64 {
        let (status, body) = self
            .post(
                who,
                "/api/v1/remediations",
                Some(json!({"key": key, "ticket": "SEC-7"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["state"], "pending_approval");
        body["id"].as_i64().unwrap()
    }

    async fn approve(&self, who: &str, id: i64) -> (StatusCode, Value) {
        self.post(who, &format!("/api/v1/remediations/{id}/approve"), None)
            .await
    }

    async fn apply(&self, who: &str, id: i64) -> (StatusCode, Value) {
        self.post(who, &format!("/api/v1/remediations/{id}/apply"), None)
            .await
    }

    /// Open findings of `rule` on `arn`.
    async fn open(&self, arn: &str, rule: &str) -> usize {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                "viewer",
                "/api/v1/findings?limit=500",
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["key_arn"] == arn && f["rule_id"] == rule && f["status"] == "open")
            .count()
    }

    fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    async fn set_policy(&self, key_id: &str, policy: &str) {
        self.kms
            .put_key_policy()
            .key_id(key_id)
            .policy_name("default")
            .policy(policy)
            .send()
            .await
            .expect("PutKeyPolicy");
    }

    /// A key with the default policy, proposed and approved, then claimed through the store as
    /// an apply does, and left `applying` as a killed process would leave it, longer ago than
    /// the claim lease.
    async fn left_applying(&self) -> (moto::SeededKey, RemediationRow) {
        self.claimed_at(chrono::Utc::now() - chrono::TimeDelta::hours(1))
            .await
    }

    /// As [`Self::left_applying`], with the claim made at `now`.
    async fn claimed_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> (moto::SeededKey, RemediationRow) {
        let key = self.key(&default_policy(&self.account)).await;
        let id = self.propose("ops", &key.key_id).await;
        assert_eq!(self.approve("alice", id).await.0, StatusCode::OK);
        let claimed = self
            .service
            .store
            .claim_remediation(
                id,
                "killed-process/1",
                now,
                &NewAuditEvent {
                    at: now,
                    actor: "bob".into(),
                    action: "remediation.applying".into(),
                    target: key.arn.clone(),
                    detail: json!({"remediation": id}).to_string(),
                },
            )
            .await
            .unwrap()
            .expect("claimed");
        assert_eq!(claimed.state, "applying");
        (key, claimed)
    }

    /// Reconciles and returns the row `id` as stored afterwards, checking that the transition
    /// was audited (actor `keyward`) and put in the outbox as `event`.
    async fn reconcile(&self, id: i64, event: &str) -> RemediationRow {
        let outbox_before = self
            .service
            .store
            .outbox_events(None, 10_000)
            .await
            .unwrap()
            .len();
        let settled = self.service.reconcile_applying().await.expect("reconcile");
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].id, id);
        let row = self.service.get(id).await.unwrap();
        // Exactly one audited transition by `keyward`, and one remediation event in the outbox
        // (re-evaluation after an apply adds finding events of its own).
        let (audit, _) = self.service.store.list_audit(None, 100).await.unwrap();
        let reconciled: Vec<_> = audit
            .iter()
            .filter(|a| a.detail.contains("\"reconciled\":true"))
            .collect();
        assert_eq!(reconciled.len(), 1, "{audit:?}");
        assert_eq!(reconciled[0].actor, "keyward");
        let outbox = self
            .service
            .store
            .outbox_events(None, 10_000)
            .await
            .unwrap();
        let events: Vec<&str> = outbox[outbox_before..]
            .iter()
            .map(|e| e.event.as_str())
            .filter(|e| e.starts_with("remediation."))
            .collect();
        assert_eq!(events, vec![event]);
        // Nothing is left applying: a second run settles nothing.
        assert!(self.service.reconcile_applying().await.unwrap().is_empty());
        row
    }
}

async fn happy_path_apply_verify_and_rollback(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let original = default_policy(&s.account);
    let key = s.key(&original).await;
    assert_eq!(s.open(&key.arn, "KMS-DELEGATION").await, 1);

    // Propose as an operator, with an idempotency key: a retry returns the same proposal.
    let propose = |k: &'static str| {
        s.call(
            reqwest::Method::POST,
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": key.key_id, "ticket": "SEC-1", "comment": "stop delegation"})),
            Some(k),
        )
    };
    let (status, first) = propose("try-1").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_i64().unwrap();
    assert_eq!(first["state"], "pending_approval");
    assert_eq!(first["requester"], "ops");
    assert_eq!(first["ticket"], "SEC-1");
    assert!(
        first["resolves"]
            .as_array()
            .unwrap()
            .contains(&json!("KMS-DELEGATION"))
    );
    let (status, again) = propose("try-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id);

    // An operator cannot approve; an approver can.
    assert_eq!(s.approve("ops", id).await.0, StatusCode::FORBIDDEN);
    let (status, approved) = s.approve("alice", id).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["state"], "approved");

    let (status, applied) = s.apply("bob", id).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["state"], "applied", "{applied}");
    assert_eq!(s.puts(), 1);
    let now = s.moto_policy(&key.key_id).await;
    assert!(
        same_policy(&now, first["proposed_policy"].as_str().unwrap()),
        "{now}"
    );
    // Re-evaluated at once: the delegation finding is resolved.
    assert_eq!(s.open(&key.arn, "KMS-DELEGATION").await, 0);
    // Applying again is refused and writes nothing.
    assert_eq!(s.apply("bob", id).await.0, StatusCode::CONFLICT);
    assert_eq!(s.puts(), 1);

    // Rollback: a new proposal of the base policy through the same gate.
    let (status, rollback) = s
        .post("ops", &format!("/api/v1/remediations/{id}/rollback"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rollback}");
    assert_eq!(rollback["rollback_of"], id);
    assert_eq!(rollback["state"], "pending_approval");
    assert_eq!(rollback["ticket"], "SEC-1");
    let rid = rollback["id"].as_i64().unwrap();
    assert_eq!(s.approve("alice", rid).await.0, StatusCode::OK);
    let (status, restored) = s.apply("alice", rid).await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["state"], "applied", "{restored}");
    assert!(same_policy(&s.moto_policy(&key.key_id).await, &original));
    assert_eq!(s.puts(), 2);
    assert_eq!(s.open(&key.arn, "KMS-DELEGATION").await, 1);
    // The original is rolled back, in the same transaction, audited and announced.
    assert_eq!(s.service.get(id).await.unwrap().state, "rolled_back");
    let (audit, _) = s.service.store.list_audit(None, 100).await.unwrap();
    let rolled: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "remediation.rolled_back")
        .collect();
    assert_eq!(rolled.len(), 1, "{audit:?}");
    assert_eq!(rolled[0].actor, "alice");
    let outbox = s.service.store.outbox_events(None, 10_000).await.unwrap();
    assert_eq!(
        outbox
            .iter()
            .filter(|e| e.event == "remediation.rolled_back")
            .count(),
        1
    );
    // It cannot be rolled back a second time.
    let (status, _) = s
        .post("ops", &format!("/api/v1/remediations/{id}/rollback"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Listing and detail.
    let (status, list) = s
        .call(
            reqwest::Method::GET,
            "viewer",
            "/api/v1/remediations",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    let (status, detail) = s
        .call(
            reqwest::Method::GET,
            "viewer",
            &format!("/api/v1/remediations/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["approvals"][0]["approver"], "alice");
}

async fn self_approval_is_forbidden_and_reject_needs_a_comment(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("alice", &key.arn).await;
    let (status, body) = s.approve("alice", id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("requester"),
        "{body}"
    );
    let (status, _) = s
        .post("bob", &format!("/api/v1/remediations/{id}/reject"), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = s
        .post(
            "bob",
            &format!("/api/v1/remediations/{id}/reject"),
            Some(json!({"comment": "not during the freeze"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "rejected");
    assert_eq!(s.apply("bob", id).await.0, StatusCode::CONFLICT);
    assert_eq!(s.puts(), 0);
}

async fn propose_only_refuses_apply_and_nothing_to_fix_is_refused(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::ProposeOnly).await;
    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("ops", &key.key_id).await;
    assert_eq!(s.approve("bob", id).await.0, StatusCode::OK);
    let (status, body) = s.apply("bob", id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("mode = \"apply\""),
        "{body}"
    );
    assert_eq!(s.puts(), 0);

    let clean = s.key(&pinned_policy(&s.account)).await;
    let (status, body) = s
        .post(
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": clean.key_id})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("nothing to fix"),
        "{body}"
    );
    let (status, _) = s
        .post(
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": "no-such-key"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn stale_base_is_refused_and_nothing_written(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("ops", &key.key_id).await;
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    // Someone changes the policy behind Keyward's back.
    let changed = pinned_policy(&s.account);
    s.kms
        .put_key_policy()
        .key_id(&key.key_id)
        .policy_name("default")
        .policy(&changed)
        .send()
        .await
        .expect("PutKeyPolicy");
    let (status, body) = s.apply("bob", id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "stale", "{body}");
    assert_eq!(s.puts(), 0);
    assert!(same_policy(&s.moto_policy(&key.key_id).await, &changed));
}

async fn concurrent_apply_writes_once(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("ops", &key.key_id).await;
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let service = s.service.clone();
            tokio::spawn(async move { service.apply(id, &format!("approver-{i}")).await })
        })
        .collect();
    let mut applied = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(row) => {
                assert_eq!(row.state, "applied");
                applied += 1;
            }
            Err(_) => refused += 1,
        }
    }
    assert_eq!((applied, refused), (1, 3));
    assert_eq!(s.puts(), 1, "exactly one PutKeyPolicy");
}

async fn reconcile_policy_equal_to_proposal_is_applied(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let (key, r) = s.left_applying().await;
    // The process died after PutKeyPolicy reached AWS.
    s.set_policy(&key.key_id, &r.proposed_policy).await;
    let row = s.reconcile(r.id, "remediation.applied").await;
    assert_eq!(row.state, "applied", "{row:?}");
    assert_eq!(s.puts(), 0, "reconciling never writes");
    assert!(same_policy(
        &s.moto_policy(&key.key_id).await,
        &r.proposed_policy
    ));
    // Re-evaluated: the delegation finding is resolved.
    assert_eq!(s.open(&key.arn, "KMS-DELEGATION").await, 0);
    assert_eq!(s.apply("bob", r.id).await.0, StatusCode::CONFLICT);
    assert_eq!(s.puts(), 0);
}

async fn reconcile_policy_equal_to_base_is_approved_again(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let (key, r) = s.left_applying().await;
    // The process died before PutKeyPolicy; moto's policy is the base (re-serialised).
    assert!(same_policy(
        &s.moto_policy(&key.key_id).await,
        &r.base_policy
    ));
    let row = s.reconcile(r.id, "remediation.unapplied").await;
    assert_eq!(row.state, "approved", "{row:?}");
    assert_eq!(row.error, None);
    assert_eq!(s.puts(), 0, "reconciling never writes");
    // It can be applied again, exactly once.
    let (status, body) = s.apply("bob", r.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "applied", "{body}");
    assert_eq!(s.puts(), 1);
}

async fn reconcile_other_policy_is_failed(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let (key, r) = s.left_applying().await;
    let other = pinned_policy(&s.account);
    s.set_policy(&key.key_id, &other).await;
    let row = s.reconcile(r.id, "remediation.failed").await;
    assert_eq!(row.state, "failed", "{row:?}");
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("neither the base nor the proposal"),
        "{row:?}"
    );
    assert_eq!(s.puts(), 0, "reconciling never writes");
    assert!(same_policy(&s.moto_policy(&key.key_id).await, &other));
}

async fn aws_error_during_put_is_failed_and_policy_unchanged(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let original = default_policy(&s.account);
    let key = s.key(&original).await;
    let id = s.propose("ops", &key.key_id).await;
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    s.fail_puts.store(true, Ordering::SeqCst);
    let (status, body) = s.apply("bob", id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failed", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("injected failure"),
        "{body}"
    );
    assert_eq!(s.puts(), 1);
    assert!(same_policy(&s.moto_policy(&key.key_id).await, &original));
    assert_eq!(s.open(&key.arn, "KMS-DELEGATION").await, 1);
    // Failed is final: it is not applied again.
    assert_eq!(s.apply("bob", id).await.0, StatusCode::CONFLICT);
    assert_eq!(s.puts(), 1);
}

async fn aws_managed_key_is_refused_and_nothing_stored(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let key = s.key(&default_policy(&s.account)).await;
    s.faults
        .lock()
        .unwrap()
        .aws_managed
        .insert(key.key_id.clone());
    let (status, body) = s
        .post(
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": key.key_id})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("AWS-managed"),
        "{body}"
    );
    let (list, total) = s.service.store.list_remediations(None, 10).await.unwrap();
    assert!(list.is_empty());
    assert_eq!(total, 0);
    assert!(
        s.service
            .store
            .outbox_events(None, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| !e.event.starts_with("remediation."))
    );
}

async fn expiry_expires_pending_and_approved_only(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let key = s.key(&default_policy(&s.account)).await;
    let pending = s.propose("ops", &key.key_id).await;
    let approved = s.propose("bob", &key.arn).await;
    assert_eq!(s.approve("alice", approved).await.0, StatusCode::OK);
    // Nothing is due yet.
    assert!(s.service.expire().await.unwrap().is_empty());
    // The store expires what is due at a later `now` (seven days by default).
    let later = chrono::Utc::now() + chrono::TimeDelta::days(8);
    let mut expired = s.service.store.expire_remediations(later).await.unwrap();
    expired.sort();
    assert_eq!(expired, vec![pending, approved]);
    for id in [pending, approved] {
        assert_eq!(s.service.get(id).await.unwrap().state, "expired");
    }
    assert_eq!(s.apply("bob", approved).await.0, StatusCode::CONFLICT);
    assert_eq!(s.puts(), 0);
}

async fn auto_apply_applies_on_the_last_approval(db: db::TestDb) {
    let s = Server::start_with(
        db,
        RemediationConfig {
            mode: RemediationMode::Apply,
            auto_apply: true,
            required_approvals: 2,
            ..RemediationConfig::default()
        },
    )
    .await;
    let key = s.key(&default_policy(&s.account)).await;
    let (status, proposed) = s
        .call(
            reqwest::Method::POST,
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": key.key_id})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{proposed}");
    let id = proposed["id"].as_i64().unwrap();
    // the first of two approvals applies nothing
    let (_, first) = s.approve("alice", id).await;
    assert_eq!(first["state"], "pending_approval", "{first}");
    assert_eq!(s.puts(), 0);
    // the last one applies at once, exactly once
    let (status, second) = s.approve("bob", id).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["state"], "applied", "{second}");
    assert_eq!(s.puts(), 1);
    let now = s.moto_policy(&key.key_id).await;
    assert!(same_policy(
        &now,
        proposed["proposed_policy"].as_str().unwrap()
    ));
    assert_eq!(s.open(&key.arn, "KMS-DELEGATION").await, 0);
}

async fn pending_deletion_and_engine_refusals_say_what_to_do(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    // a key on its way out is not worth a policy change
    let leaving = s.key(&default_policy(&s.account)).await;
    s.kms
        .schedule_key_deletion()
        .key_id(&leaving.key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    s.sync
        .run_pass(&s.targets, None, Due::Always)
        .await
        .unwrap();
    let (status, body) = s
        .post(
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": leaving.key_id})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("deletion"),
        "{body}"
    );
    // the engine refuses a fix that would not fit in a key policy: the reason is passed on
    let principals: Vec<String> = (0..500)
        .map(|i| {
            format!(
                "\"arn:aws:iam::{}:role/application-role-number-{i:04}\"",
                s.account
            )
        })
        .collect();
    let big = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{a}:root"}},"Action":"kms:*","Resource":"*"}},{{"Sid":"Apps","Effect":"Allow","Principal":{{"AWS":[{p}]}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#,
        a = s.account,
        p = principals.join(",")
    );
    assert!(
        big.len() < 32 * 1024 && big.len() > 30 * 1024,
        "{}",
        big.len()
    );
    let key = s.key(&big).await;
    let (status, body) = s
        .post(
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": key.key_id})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("32768"), "{body}");
    // the hint fits the reason: shorten the policy, not configure administrators
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("too large"), "{body}");
    assert!(!detail.contains("key_admins"), "{body}");
    let (_, list) = s
        .call(
            reqwest::Method::GET,
            "viewer",
            "/api/v1/remediations",
            None,
            None,
        )
        .await;
    assert_eq!(list["total"], 0, "nothing stored: {list}");
    assert_eq!(s.puts(), 0);
}

/// Holds every PutKeyPolicy until released, saying when one is waiting.
struct Gated {
    inner: Arc<dyn KmsWriters>,
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

struct GatedWriter {
    inner: Arc<dyn KmsWriter>,
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl KmsWriters for Gated {
    async fn writer(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsWriter>, AwsError> {
        Ok(Arc::new(GatedWriter {
            inner: self.inner.writer(access, region).await?,
            reached: self.reached.clone(),
            release: self.release.clone(),
        }))
    }
}

#[async_trait]
impl KmsWriter for GatedWriter {
    async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), AwsError> {
        self.reached.notify_one();
        self.release.acquire().await.expect("gate").forget();
        self.inner.put_key_policy(key_id, policy).await
    }
}

/// An apply in flight (held inside PutKeyPolicy) is left alone by crash recovery, and keeps
/// going when its caller goes away (as a dropped HTTP request drops the handler's future).
async fn in_flight_apply_survives_reconcile_and_a_dropped_caller(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("ops", &key.key_id).await;
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    let reached = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let mut gated = (*s.service).clone();
    gated.writers = Arc::new(Gated {
        inner: s.service.writers.clone(),
        reached: reached.clone(),
        release: release.clone(),
    });
    let caller = tokio::spawn(async move { gated.apply(id, "bob").await });
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .expect("the apply reaches PutKeyPolicy");
    let claimed = s.service.get(id).await.unwrap();
    assert_eq!(claimed.state, "applying");
    assert!(claimed.claimed_by.is_some() && claimed.claimed_at.is_some());

    // Recovery on this or another instance, periodic or at start-up: a fresh claim is not
    // abandoned, so nothing is settled and the row stays with its apply.
    assert!(s.service.reconcile_applying().await.unwrap().is_empty());
    assert_eq!(s.service.get(id).await.unwrap(), claimed);

    // The caller goes away; the apply does not.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    release.add_permits(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let row = loop {
        let row = s.service.get(id).await.unwrap();
        if row.state != "applying" {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never finished: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row.state, "applied", "{row:?}");
    assert_eq!(s.puts(), 1, "exactly one PutKeyPolicy");
    assert!(same_policy(
        &s.moto_policy(&key.key_id).await,
        &row.proposed_policy
    ));
    assert!(s.service.reconcile_applying().await.unwrap().is_empty());
}

/// An account no longer configured is never written or read with other (default) credentials:
/// apply is refused before the claim, and recovery marks a row left applying failed, saying
/// why, for an operator.
async fn unconfigured_account_is_never_written_or_reconciled(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let mut unconfigured = (*s.service).clone();
    unconfigured.accounts.clear();

    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("ops", &key.key_id).await;
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    let err = unconfigured.apply(id, "bob").await.expect_err("refused");
    assert!(
        err.to_string().contains("no longer in the configuration"),
        "{err}"
    );
    assert_eq!(s.service.get(id).await.unwrap().state, "approved");
    assert_eq!(s.puts(), 0);

    let (key, r) = s.left_applying().await;
    let settled = unconfigured.reconcile_applying().await.unwrap();
    assert_eq!(settled.iter().map(|r| r.id).collect::<Vec<_>>(), vec![r.id]);
    let row = s.service.get(r.id).await.unwrap();
    assert_eq!(row.state, "failed");
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("no longer in the configuration"),
        "{row:?}"
    );
    assert_eq!(s.puts(), 0);
    assert!(same_policy(
        &s.moto_policy(&key.key_id).await,
        &r.base_policy
    ));
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(crate::db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = crate::db::postgres().await else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}

on_both_databases![
    happy_path_apply_verify_and_rollback,
    pending_deletion_and_engine_refusals_say_what_to_do,
    auto_apply_applies_on_the_last_approval,
    self_approval_is_forbidden_and_reject_needs_a_comment,
    propose_only_refuses_apply_and_nothing_to_fix_is_refused,
    stale_base_is_refused_and_nothing_written,
    concurrent_apply_writes_once,
    reconcile_policy_equal_to_proposal_is_applied,
    reconcile_policy_equal_to_base_is_approved_again,
    reconcile_other_policy_is_failed,
    aws_error_during_put_is_failed_and_policy_unchanged,
    aws_managed_key_is_refused_and_nothing_stored,
    expiry_expires_pending_and_approved_only,
    effective_access_and_fix_impact_match_reality,
    in_flight_apply_survives_reconcile_and_a_dropped_caller,
    unconfigured_account_is_never_written_or_reconciled,
    ticket_is_set_and_cleared_by_patch_and_reaches_webhook_events,
    retry_after_apply_returns_the_original_proposal,
    concurrent_proposals_with_one_idempotency_key_store_one,
    no_key_admins_refusal_names_key_admins,
    aws_errors_during_propose_say_what_is_missing,
];

// ---- ticket references, idempotent retries, refusal hints and AWS errors during propose ----

async fn ticket_is_set_and_cleared_by_patch_and_reaches_webhook_events(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let s = &s;
    let key = s.key(&default_policy(&s.account)).await;
    let id = s.propose("ops", &key.key_id).await;
    let path = format!("/api/v1/remediations/{id}");
    let patch = |who: &'static str, path: String, body: Value| async move {
        s.call(reqwest::Method::PATCH, who, &path, Some(body), None)
            .await
    };

    let (status, body) = patch("viewer", path.clone(), json!({"ticket": "JIRA-9"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = patch("ops", path.clone(), json!({"ticket": "  JIRA-9 "})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ticket"], "JIRA-9");
    assert_eq!(body["state"], "pending_approval");
    let (_, detail) = s
        .call(reqwest::Method::GET, "viewer", &path, None, None)
        .await;
    assert_eq!(detail["ticket"], "JIRA-9");

    // Bad bodies change nothing: the same rules as the findings' PATCH.
    for (what, bad) in [
        (
            "unknown field",
            json!({"ticket": "X-1", "state": "approved"}),
        ),
        ("absent", json!({})),
        ("empty", json!({"ticket": " "})),
        ("too long", json!({"ticket": "T".repeat(201)})),
        ("control character", json!({"ticket": "A\u{7}1"})),
        ("wrong type", json!({"ticket": 7})),
    ] {
        let (status, body) = patch("ops", path.clone(), bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
        assert_eq!(body["status"], 422, "{what}: {body}");
    }
    for missing in ["/api/v1/remediations/424242", "/api/v1/remediations/x"] {
        let (status, body) = patch("ops", missing.to_string(), json!({"ticket": "X-1"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
    }
    assert_eq!(
        s.service.get(id).await.unwrap().ticket.as_deref(),
        Some("JIRA-9")
    );

    // The webhook event of the next transition carries the new ticket.
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    let outbox = s.service.store.outbox_events(None, 1000).await.unwrap();
    let approved = outbox
        .iter()
        .find(|e| e.event == "remediation.approved")
        .expect("remediation.approved event");
    let payload: Value = serde_json::from_str(&approved.payload).unwrap();
    assert_eq!(payload["ticket"], "JIRA-9", "{payload}");
    assert_eq!(payload["id"], id);

    // null clears it, in any state.
    let (status, body) = patch("ops", path.clone(), json!({"ticket": null})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ticket"], Value::Null);
    assert_eq!(body["state"], "approved");

    // Every change is audited with the token's name, the old and the new reference.
    let (audit, _) = s.service.store.list_audit(None, 100).await.unwrap();
    let set: Vec<Value> = audit
        .iter()
        .filter(|a| a.action == "remediation.ticket_set")
        .inspect(|a| {
            assert_eq!(a.actor, "ops");
            assert_eq!(a.target, key.arn);
        })
        .map(|a| serde_json::from_str(&a.detail).unwrap())
        .collect();
    assert_eq!(set.len(), 2, "{audit:?}");
    // newest first
    assert_eq!(set[0]["ticket"], Value::Null);
    assert_eq!(set[0]["previous"], "JIRA-9");
    assert_eq!(set[1]["ticket"], "JIRA-9");
    assert_eq!(set[1]["previous"], "SEC-7");
    assert_eq!(set[1]["remediation"], id);
}

async fn retry_after_apply_returns_the_original_proposal(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let s = &s;
    let key = s.key(&default_policy(&s.account)).await;
    let propose = |idempotency_key: Option<&'static str>, key: String| async move {
        s.call(
            reqwest::Method::POST,
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": key})),
            idempotency_key,
        )
        .await
    };
    let (status, first) = propose(Some("retry-after-apply"), key.key_id.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_i64().unwrap();
    assert_eq!(s.approve("alice", id).await.0, StatusCode::OK);
    let (status, applied) = s.apply("bob", id).await;
    assert_eq!(applied["state"], "applied", "{status} {applied}");

    // The client lost the first answer and retries: it gets the proposal it made, now applied,
    // not "nothing to fix" for the policy that proposal wrote (also when naming the key by ARN).
    for name in [key.key_id.clone(), key.arn.clone()] {
        let (status, again) = propose(Some("retry-after-apply"), name).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["id"], id);
        assert_eq!(again["state"], "applied");
    }
    // Without the idempotency key the same request is a new proposal, refused: nothing to fix.
    let (status, body) = propose(None, key.key_id.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("nothing to fix"),
        "{body}"
    );
    // The same idempotency key for another key is refused rather than answered with the first.
    let other = s.key(&default_policy(&s.account)).await;
    let (status, body) = propose(Some("retry-after-apply"), other.key_id.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{body}"
    );
    let (_, total) = s.service.store.list_remediations(None, 10).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(s.puts(), 1);
}

async fn concurrent_proposals_with_one_idempotency_key_store_one(db: db::TestDb) {
    let replica = db.replica().await;
    let s = Server::start(db, RemediationMode::ProposeOnly).await;
    let key = s.key(&default_policy(&s.account)).await;

    // Over HTTP: two requests with one Idempotency-Key at once get one proposal.
    let propose = || {
        s.call(
            reqwest::Method::POST,
            "ops",
            "/api/v1/remediations",
            Some(json!({"key": key.key_id})),
            Some("twice-at-once"),
        )
    };
    let ((a_status, a), (b_status, b)) = tokio::join!(propose(), propose());
    let mut statuses = [a_status, b_status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED], "{a} {b}");
    assert_eq!(a["id"], b["id"]);

    // At the store, from two replicas' pools, many times: the loser of the insert race gets the
    // winner's row, never a conflict.
    let template = s.service.get(a["id"].as_i64().unwrap()).await.unwrap();
    for round in 0..20 {
        let now = chrono::Utc::now();
        let new = keyward::store::NewRemediation {
            key_arn: template.key_arn.clone(),
            account_id: template.account_id.clone(),
            region: template.region.clone(),
            requester: "ops".into(),
            ticket: None,
            comment: None,
            base_policy: template.base_policy.clone(),
            base_sha256: template.base_sha256.clone(),
            proposed_policy: template.proposed_policy.clone(),
            proposed_sha256: template.proposed_sha256.clone(),
            diff: template.diff.to_string(),
            resolves: template.resolves.clone(),
            remaining: template.remaining.clone(),
            created_at: now,
            expires_at: now + chrono::TimeDelta::days(7),
            rollback_of: None,
            impact: None,
            idempotency_key: Some(format!("ops:race-{round}")),
        };
        let audit = NewAuditEvent {
            at: now,
            actor: "ops".into(),
            action: "remediation.requested".into(),
            target: template.key_arn.clone(),
            detail: "{}".into(),
        };
        let (one, two) = tokio::join!(
            s.service.store.create_remediation(&new, &audit),
            replica.create_remediation(&new, &audit)
        );
        let (one, two) = (
            one.unwrap_or_else(|e| panic!("round {round}: {e}")),
            two.unwrap_or_else(|e| panic!("round {round}: {e}")),
        );
        assert_eq!(one.0.id, two.0.id, "round {round}");
        assert!(one.1 != two.1, "round {round}: exactly one created it");
    }
    let (_, total) = s.service.store.list_remediations(None, 10).await.unwrap();
    assert_eq!(total, 21);
}

/// Serves the API of `s`'s store and AWS with a remediation service for `accounts`, on a port
/// of its own; returns its base URL.
async fn serve_with_accounts(s: &Server, accounts: Vec<AccountConfig>) -> String {
    let metrics = Arc::new(Metrics::new());
    let service = Arc::new(RemediationService {
        store: s.service.store.clone(),
        connector: s.service.connector.clone(),
        writers: s.service.writers.clone(),
        clock: Arc::new(SystemClock),
        config: RemediationConfig::default(),
        accounts,
        after_apply: None,
    });
    let app = build_app(AppState {
        store: s.service.store.clone(),
        metrics,
        clock: Arc::new(SystemClock),
        sync: None,
        remediation: Some(service),
        metrics_public: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, app, std::future::pending()));
    base
}

async fn no_key_admins_refusal_names_key_admins(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    // The AWS default policy delegates everything to IAM and names no administrator: the fix
    // needs one, and this account configures none.
    let key = s.key(&default_policy(&s.account)).await;
    let base = serve_with_accounts(
        &s,
        vec![AccountConfig {
            id: s.account.clone(),
            role_arn: Some(Moto::role_arn(&s.account)),
            regions: vec![REGION.to_string()],
            key_admins: vec![],
            ..AccountConfig::default()
        }],
    )
    .await;
    let r = s
        .http
        .post(format!("{base}/api/v1/remediations"))
        .bearer_auth("secret-ops")
        .json(&json!({"key": key.key_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    // A refusal, not a malformed body: its own problem type.
    assert_eq!(
        body["type"], "urn:keyward:problem:request-refused",
        "{body}"
    );
    assert_eq!(body["title"], "Request refused", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("key_admins"), "{body}");
    assert!(detail.contains(&s.account), "{body}");
    assert!(!detail.contains("too large"), "{body}");
    let (_, total) = s.service.store.list_remediations(None, 10).await.unwrap();
    assert_eq!(total, 0);
}

async fn aws_errors_during_propose_say_what_is_missing(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let s = &s;
    let propose = |key: String| async move {
        s.post("ops", "/api/v1/remediations", Some(json!({"key": key})))
            .await
    };

    // A denied GetKeyPolicy is a refusal naming the permission, not an outage.
    let denied = s.key(&default_policy(&s.account)).await;
    s.faults
        .lock()
        .unwrap()
        .denied_policies
        .insert(denied.key_id.clone());
    let (status, body) = propose(denied.key_id.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("kms:GetKeyPolicy"), "{body}");
    assert!(detail.contains(&Moto::role_arn(&s.account)), "{body}");

    // Throttled beyond the retries: still 503, worth retrying.
    let throttled = s.key(&default_policy(&s.account)).await;
    s.faults
        .lock()
        .unwrap()
        .failing_keys
        .insert(throttled.key_id.clone());
    let (status, body) = propose(throttled.key_id.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // A key AWS no longer knows (the store still lists it): 404.
    let gone = s.key(&default_policy(&s.account)).await;
    let changed = s
        ._db
        .execute(&format!(
            "UPDATE keys SET key_id = '00000000-0000-4000-8000-000000000000' WHERE arn = '{}'",
            gone.arn
        ))
        .await;
    assert_eq!(changed, 1);
    let (status, body) = propose(gone.arn.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not found in AWS"),
        "{body}"
    );

    let (_, total) = s.service.store.list_remediations(None, 10).await.unwrap();
    assert_eq!(total, 0);
    assert_eq!(s.puts(), 0);
}

// ---- effective access and the impact of the fix ----

/// principal → group → actions, from an access table as the API returns it.
type AccessSummary =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

fn summarise(access: &Value) -> AccessSummary {
    let mut out = AccessSummary::new();
    for p in access["principals"].as_array().expect("principals") {
        let groups = out
            .entry(p["principal"].as_str().unwrap().to_string())
            .or_default();
        for a in p["actions"].as_array().unwrap() {
            let label = match a["access"].as_str().unwrap() {
                "allowed" => a["action"].as_str().unwrap().to_string(),
                other => format!("{} ({other})", a["action"].as_str().unwrap()),
            };
            groups
                .entry(a["group"].as_str().unwrap().to_string())
                .or_default()
                .push(label);
        }
    }
    out.retain(|_, groups| !groups.is_empty());
    out
}

fn actions(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// Every KMS key action of `group`, as the access catalogue lists them.
fn all_of(group: &str) -> Vec<String> {
    keyward::access::KMS_KEY_ACTIONS
        .iter()
        .filter(|(_, g)| g.as_str() == group)
        .map(|(a, _)| a.to_string())
        .collect()
}

impl Server {
    async fn access(&self, key_arn: &str, query: &str) -> Value {
        let path = format!(
            "/api/v1/keys/{}/access{query}",
            key_arn.replace(':', "%3A").replace('/', "%2F")
        );
        let (status, body) = self
            .call(reqwest::Method::GET, "viewer", &path, None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

async fn effective_access_and_fix_impact_match_reality(db: db::TestDb) {
    let s = Server::start(db, RemediationMode::Apply).await;
    let account = s.account.clone();
    let iam = Moto::start().iam_client_for(&account).await;
    let arn = |kind: &str, name: &str| format!("arn:aws:iam::{account}:{kind}/{name}");
    let trust = r#"{"Version":"2012-10-17","Statement":[]}"#;
    for role in ["app", "ops", "KMSAdmin"] {
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(trust)
            .send()
            .await
            .unwrap();
    }
    // app: encrypts and decrypts through an inline policy.
    iam.put_role_policy()
        .role_name("app")
        .policy_name("crypto")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    // ops: AdministratorAccess, bounded to kms:Decrypt.
    let boundary = iam
        .create_policy()
        .policy_name("decrypt-only")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    let boundary_arn = boundary.policy().unwrap().arn().unwrap().to_string();
    iam.attach_role_policy()
        .role_name("ops")
        .policy_arn("arn:aws:iam::aws:policy/AdministratorAccess")
        .send()
        .await
        .unwrap();
    iam.put_role_permissions_boundary()
        .role_name("ops")
        .permissions_boundary(&boundary_arn)
        .send()
        .await
        .unwrap();
    // carol: reads key metadata through her group's managed policy.
    iam.create_user().user_name("carol").send().await.unwrap();
    iam.create_group()
        .group_name("auditors")
        .send()
        .await
        .unwrap();
    iam.add_user_to_group()
        .group_name("auditors")
        .user_name("carol")
        .send()
        .await
        .unwrap();
    let readers = iam
        .create_policy()
        .policy_name("kms-readers")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:DescribeKey","kms:GetKeyPolicy"],"Resource":"arn:aws:kms:*:*:key/*"}]}"#)
        .send()
        .await
        .unwrap();
    iam.attach_group_policy()
        .group_name("auditors")
        .policy_arn(readers.policy().unwrap().arn().unwrap())
        .send()
        .await
        .unwrap();
    // dave: kms:* except Decrypt, which an explicit Deny removes.
    iam.create_user().user_name("dave").send().await.unwrap();
    iam.put_user_policy()
        .user_name("dave")
        .policy_name("all-but-decrypt")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"},{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();

    let key = s.key(&default_policy(&account)).await;
    let before = s.access(&key.arn, "").await;
    assert_eq!(before["access"]["delegates_to_iam"], true);
    assert_eq!(before["access"]["identities_known"], true);
    assert!(before["inventory"]["fetched_at"].is_string(), "{before}");
    assert!(
        before["scope"]
            .as_str()
            .unwrap()
            .contains("Service control policies")
    );
    let everything: std::collections::BTreeMap<String, Vec<String>> =
        ["admin", "cryptographic", "grant", "read"]
            .iter()
            .map(|g| (g.to_string(), all_of(g)))
            .collect();
    let mut dave = everything.clone();
    dave.get_mut("cryptographic")
        .unwrap()
        .retain(|a| a != "kms:Decrypt");
    let expected: AccessSummary = [
        (format!("arn:aws:iam::{account}:root"), everything.clone()),
        (
            arn("role", "app"),
            [(
                "cryptographic".to_string(),
                actions(&["kms:Decrypt", "kms:Encrypt"]),
            )]
            .into(),
        ),
        (
            arn("role", "ops"),
            [("cryptographic".to_string(), actions(&["kms:Decrypt"]))].into(),
        ),
        (
            arn("user", "carol"),
            [(
                "read".to_string(),
                actions(&["kms:DescribeKey", "kms:GetKeyPolicy"]),
            )]
            .into(),
        ),
        (arn("user", "dave"), dave),
    ]
    .into_iter()
    .collect();
    let mut got = summarise(&before["access"]);
    for groups in got.values_mut() {
        for list in groups.values_mut() {
            list.sort();
        }
    }
    let mut want = expected.clone();
    for groups in want.values_mut() {
        for list in groups.values_mut() {
            list.sort();
        }
    }
    assert_eq!(got, want, "the access table through IAM delegation");
    // Why: app's Decrypt comes from its inline identity policy.
    let app = before["access"]["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["principal"] == json!(arn("role", "app")))
        .unwrap();
    let reasons = app["actions"][0]["reasons"].to_string();
    assert!(reasons.contains("inline:app/crypto"), "{reasons}");
    // Filters narrow the table.
    let crypto_users = s
        .access(&key.arn, "?group=cryptographic&principal_type=user")
        .await;
    let crypto_users: Vec<&str> = crypto_users["access"]["principals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["principal"].as_str().unwrap())
        .collect();
    assert_eq!(crypto_users, vec![arn("user", "dave")]);
    let (status, body) = s
        .call(
            reqwest::Method::GET,
            "viewer",
            &format!("/api/v1/keys/{}/access?group=everything", key.key_id),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The reverse view: what app can use.
    let (status, reverse) = s
        .call(
            reqwest::Method::GET,
            "viewer",
            &format!(
                "/api/v1/principals/{}/keys",
                arn("role", "app").replace(':', "%3A").replace('/', "%2F")
            ),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reverse}");
    assert_eq!(
        reverse["keys"]["keys"][0]["key_arn"],
        json!(key.arn),
        "{reverse}"
    );

    // The proposal carries its impact: IAM identities lose what delegation gave them.
    let id = s.propose("ops", &key.arn).await;
    let (_, proposal) = s
        .call(
            reqwest::Method::GET,
            "viewer",
            &format!("/api/v1/remediations/{id}"),
            None,
            None,
        )
        .await;
    let impact = &proposal["impact"];
    let names = |side: &str| -> Vec<String> {
        impact[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["principal"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("lose"),
        vec![
            arn("role", "app"),
            arn("role", "ops"),
            arn("user", "carol"),
            arn("user", "dave")
        ],
        "{impact}"
    );
    assert!(names("gain").contains(&arn("role", "KMSAdmin")), "{impact}");
    assert_eq!(
        impact["loses_cryptographic"],
        json!([arn("role", "app"), arn("role", "ops"), arn("user", "dave")])
    );
    // Approving without acknowledging the loss is refused, naming who loses access.
    let (status, problem) = s.approve("alice", id).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&arn("role", "app")) && detail.contains("acknowledge_access_loss"),
        "{detail}"
    );
    let (status, approved) = s
        .post(
            "alice",
            &format!("/api/v1/remediations/{id}/approve"),
            Some(json!({"acknowledge_access_loss": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let (status, applied) = s.apply("bob", id).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["state"], "applied", "{applied}");

    // Reality after the sync: exactly the predicted losses happened.
    s.sync
        .run_pass(&s.targets, None, Due::Always)
        .await
        .expect("sync");
    let after = s.access(&key.arn, "").await;
    assert_eq!(after["access"]["delegates_to_iam"], false);
    let now = summarise(&after["access"]);
    for lost in impact["lose"].as_array().unwrap() {
        let who = lost["principal"].as_str().unwrap();
        for list in lost["actions"].as_object().unwrap().values() {
            for action in list.as_array().unwrap() {
                let still = now
                    .get(who)
                    .is_some_and(|g| g.values().flatten().any(|a| a == action.as_str().unwrap()));
                assert!(
                    !still,
                    "{who} was predicted to lose {action} but still has it"
                );
            }
        }
    }
    for kept in impact["keep"].as_array().unwrap() {
        let who = kept["principal"].as_str().unwrap();
        assert_eq!(now.get(who), got.get(who), "{who} keeps its access");
    }
    assert!(now.contains_key(&arn("role", "KMSAdmin")), "{now:?}");
}
