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
    /// an apply does, and left `applying` as a killed process would leave it.
    async fn left_applying(&self) -> (moto::SeededKey, RemediationRow) {
        let key = self.key(&default_policy(&self.account)).await;
        let id = self.propose("ops", &key.key_id).await;
        assert_eq!(self.approve("alice", id).await.0, StatusCode::OK);
        let now = chrono::Utc::now();
        let claimed = self
            .service
            .store
            .claim_remediation(
                id,
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
    let row = s.reconcile(r.id, "remediation.approved").await;
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
];

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
