//! Waivers and ticket references over real HTTP (server on port 0, reqwest) and a real
//! database — SQLite always, Postgres when KEYWARD_TEST_POSTGRES_URL is set. The server and the
//! store share a test clock, so expiry is tested by moving time, not by waiting.

#[path = "support/db.rs"]
mod db;

use chrono::{DateTime, Duration, TimeZone, Utc};
use keyward::clock::Clock;
use keyward::metrics::Metrics;
use keyward::store::{KeyRecord, KeyUpdate, NewFinding, NewToken, PolicyState, RegionSync, Store};
use keyward::web::auth::token_hash;
use keyward::web::{AppState, build_app, serve};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

const A: &str = "111122223333";
const REGION: &str = "us-east-1";

fn record(id: &str) -> KeyRecord {
    KeyRecord {
        arn: format!("arn:aws:kms:{REGION}:{A}:key/{id}"),
        account_id: A.into(),
        region: REGION.into(),
        key_id: id.into(),
        description: format!("key {id}"),
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
        tags: Default::default(),
        grants: vec![],
        metadata: Default::default(),
    }
}

fn finding(rule: &str, severity: &str) -> NewFinding {
    NewFinding {
        rule_id: rule.into(),
        locator: "0".into(),
        severity: severity.into(),
        statement_index: Some(0),
        sid: None,
        message: format!("{rule} fired"),
    }
}

fn update(id: &str, findings: Vec<NewFinding>) -> KeyUpdate {
    KeyUpdate {
        key: record(id),
        fingerprint: format!("fp-{id}"),
        policy: PolicyState::Readable {
            sha256: keyward::sync::sha256_hex(id),
            text: id.into(),
        },
        evaluation: "rules-v1".into(),
        findings,
        remediable: true,
    }
}

/// The fixed "now" of these tests.
fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000, 0).unwrap()
}

/// k-public: KMS-PUBLIC only; k-both: KMS-PUBLIC and KMS-NO-ADMIN.
async fn seed(store: &dyn Store) {
    let updates = vec![
        update("k-public", vec![finding("KMS-PUBLIC", "critical")]),
        update(
            "k-both",
            vec![
                finding("KMS-PUBLIC", "critical"),
                finding("KMS-NO-ADMIN", "medium"),
            ],
        ),
    ];
    store
        .apply_region_sync(&RegionSync {
            account_id: A.into(),
            region: REGION.into(),
            now: now() - Duration::hours(1),
            listed: updates.iter().map(|u| u.key.arn.clone()).collect(),
            listing_complete: true,
            updates,
            unread: Vec::new(),
        })
        .await
        .expect("seed");
}

struct Server {
    base: String,
    http: reqwest::Client,
    db: db::TestDb,
}

impl Server {
    async fn start(db: db::TestDb) -> Server {
        db.clock().set(now());
        seed(db.store()).await;
        let store = db.shared();
        for (name, role) in [("viewer-bot", "viewer"), ("jira", "operator")] {
            store
                .create_token(&NewToken {
                    name: name.into(),
                    role: role.into(),
                    sha256: token_hash(&format!("secret-{role}")),
                    created_at: now(),
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
        Server {
            base,
            http: reqwest::Client::new(),
            db,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = r.send().await.unwrap();
        let status = r.status();
        let json = r
            .headers()
            .get("content-type")
            .is_some_and(|c| c.to_str().unwrap_or("").contains("json"));
        assert!(
            json || status == StatusCode::NO_CONTENT,
            "{status} without JSON"
        );
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, role: &str, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(format!("secret-{role}")),
        )
        .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        role: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(format!("secret-{role}"));
        if let Some(body) = body {
            r = r.json(&body);
        }
        self.send(r).await
    }

    async fn raw_post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth("secret-operator")
            .body(body);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        self.send(r).await
    }

    /// The id of the finding of `rule` on key `key`.
    async fn finding_id(&self, key: &str, rule: &str) -> i64 {
        let (_, body) = self.get("viewer", "/api/v1/findings?status=all").await;
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key_arn"].as_str().unwrap().ends_with(key) && f["rule_id"] == rule)
            .unwrap_or_else(|| panic!("no {rule} on {key}: {body}"))["id"]
            .as_i64()
            .unwrap()
    }

    async fn audit_actions(&self) -> Vec<(String, String)> {
        let (audit, _) = self.db.store().list_audit(None, 100).await.unwrap();
        audit
            .into_iter()
            .rev()
            .map(|e| (e.actor, e.action))
            .collect()
    }
}

fn assert_problem(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem without {field}: {body}");
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::db::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = crate::db::postgres().await {
                    super::$name(db).await;
                }
            }
        }
    };
}

on_both_databases!(waive_expire_and_unwaive);
on_both_databases!(bad_waive_requests_change_nothing);
on_both_databases!(account_wide_waiver);
on_both_databases!(ticket_references);

async fn waive_expire_and_unwaive(db: db::TestDb) {
    let s = Server::start(db).await;
    let id = s.finding_id("k-public", "KMS-PUBLIC").await;
    let path = format!("/api/v1/findings/{id}/waive");
    let request = json!({
        "reason": "public by design: the key encrypts the public download bucket",
        "expires_at": rfc3339(now() + Duration::hours(1)),
    });
    let (_, before) = s.get("viewer", "/api/v1/summary").await;

    // a viewer may not waive
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "viewer",
            &path,
            Some(request.clone()),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    // an operator may
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "operator",
            &path,
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["waiver"]["scope"], "key");
    assert_eq!(body["waiver"]["author"], "jira");
    assert_eq!(body["waiver"]["active"], true);
    assert!(
        body["waiver"]["key_arn"]
            .as_str()
            .unwrap()
            .ends_with("k-public")
    );
    assert_eq!(body["finding"]["status"], "waived");
    assert_eq!(body["finding"]["waiver_reason"], request["reason"]);
    assert_eq!(
        body["finding"]["waiver_expires_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(now() + Duration::hours(1))
    );

    // the finding reads waived everywhere; its key is compliant
    let (_, open) = s.get("viewer", "/api/v1/findings").await;
    assert!(
        open["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["id"] != id)
    );
    let (_, waived) = s.get("viewer", "/api/v1/findings?status=waived").await;
    assert_eq!(waived["total"], 1);
    assert_eq!(waived["items"][0]["id"], id);
    let (_, key) = s.get("viewer", "/api/v1/keys/k-public").await;
    assert_eq!(key["compliant"], true, "{key}");
    assert_eq!(key["open_findings"], 0);
    assert_eq!(key["findings"][0]["status"], "waived");
    let (_, after) = s.get("viewer", "/api/v1/summary").await;
    assert_eq!(
        after["keys_compliant"].as_u64().unwrap(),
        before["keys_compliant"].as_u64().unwrap() + 1
    );
    let (_, detail) = s.get("viewer", &format!("/api/v1/findings/{id}")).await;
    assert_eq!(detail["status"], "waived");
    assert_eq!(detail["waivers"].as_array().unwrap().len(), 1);

    // audited, and announced in the outbox
    assert_eq!(
        s.audit_actions().await,
        vec![("jira".to_string(), "finding.waived".to_string())]
    );
    let events = s.db.store().outbox_events(None, 100).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event, "finding.waived");
    assert!(last.payload.contains(&format!("\"id\":{id}")));

    // after expiry it reads open again by itself
    s.db.clock()
        .advance(Duration::hours(1) + Duration::seconds(1));
    let (_, detail) = s.get("viewer", &format!("/api/v1/findings/{id}")).await;
    assert_eq!(detail["status"], "open");
    assert_eq!(detail["waiver_reason"], Value::Null);
    assert_eq!(detail["waivers"][0]["active"], false);
    let (_, key) = s.get("viewer", "/api/v1/keys/k-public").await;
    assert_eq!(key["compliant"], false);
    // a DELETE with nothing active is a 404
    let (status, body) = s
        .call(reqwest::Method::DELETE, "operator", &path, None)
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);

    // waive again, then revoke
    let request = json!({
        "reason": "still public by design",
        "expires_at": rfc3339(s.db.clock().now() + Duration::days(30)),
        "scope": "key",
    });
    let (status, body) = s
        .call(reqwest::Method::POST, "operator", &path, Some(request))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s.call(reqwest::Method::DELETE, "viewer", &path, None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (status, body) = s
        .call(reqwest::Method::DELETE, "operator", &path, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"].as_array().unwrap().len(), 1);
    assert_eq!(body["revoked"][0]["revoked_by"], "jira");
    assert_eq!(body["finding"]["status"], "open");
    let (status, _) = s
        .call(reqwest::Method::DELETE, "operator", &path, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.audit_actions().await,
        vec![
            ("jira".to_string(), "finding.waived".to_string()),
            ("jira".to_string(), "finding.waived".to_string()),
            ("jira".to_string(), "finding.unwaived".to_string()),
        ]
    );
    let events = s.db.store().outbox_events(None, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == "finding.waived")
            .count(),
        3
    );
}

async fn bad_waive_requests_change_nothing(db: db::TestDb) {
    let s = Server::start(db).await;
    let id = s.finding_id("k-public", "KMS-PUBLIC").await;
    let path = format!("/api/v1/findings/{id}/waive");
    let later = rfc3339(now() + Duration::days(1));
    let cases: Vec<(&str, Value, StatusCode)> = vec![
        (
            "missing reason",
            json!({ "expires_at": later }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "blank reason",
            json!({ "reason": "  ", "expires_at": later }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "reason too long",
            json!({ "reason": "x".repeat(1001), "expires_at": later }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing expiry",
            json!({ "reason": "r" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "past expiry",
            json!({ "reason": "r", "expires_at": rfc3339(now() - Duration::seconds(1)) }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "expiry now",
            json!({ "reason": "r", "expires_at": rfc3339(now()) }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "expiry too far",
            json!({ "reason": "r", "expires_at": rfc3339(now() + Duration::days(367)) }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "not a time",
            json!({ "reason": "r", "expires_at": "next tuesday" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            json!({ "reason": "r", "expires_at": later, "approved_by": "me" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "wrong type",
            json!({ "reason": 42, "expires_at": later }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown scope",
            json!({ "reason": "r", "expires_at": later, "scope": "organization" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("array body", json!([]), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (what, body, want) in cases {
        let (status, problem) = s
            .call(reqwest::Method::POST, "operator", &path, Some(body))
            .await;
        assert_eq!(status, want, "{what}: {problem}");
        assert_problem(status, &problem, want);
    }
    let (status, body) = s
        .raw_post(
            &path,
            Some("application/json"),
            b"{\"reason\": \"r\",".to_vec(),
        )
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );
    let mut huge = format!("{{\"expires_at\": \"{later}\", \"reason\": \"");
    huge.push_str(&"x".repeat(70 * 1024));
    huge.push_str("\"}");
    let (status, body) = s
        .raw_post(&path, Some("application/json"), huge.into_bytes())
        .await;
    assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = s.raw_post(&path, None, b"{}".to_vec()).await;
    assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let ok = json!({ "reason": "r", "expires_at": later });
    for missing in [
        "/api/v1/findings/999999/waive",
        "/api/v1/findings/abc/waive",
    ] {
        let (status, body) = s
            .call(reqwest::Method::POST, "operator", missing, Some(ok.clone()))
            .await;
        assert_problem(status, &body, StatusCode::NOT_FOUND);
    }
    // nothing changed
    let (_, detail) = s.get("viewer", &format!("/api/v1/findings/{id}")).await;
    assert_eq!(detail["status"], "open");
    assert!(detail["waivers"].as_array().unwrap().is_empty());
    assert!(s.audit_actions().await.is_empty());
    assert!(
        s.db.store()
            .outbox_events(None, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event == "finding.opened")
    );
}

async fn account_wide_waiver(db: db::TestDb) {
    let s = Server::start(db).await;
    let id = s.finding_id("k-public", "KMS-PUBLIC").await;
    let other = s.finding_id("k-both", "KMS-PUBLIC").await;
    let no_admin = s.finding_id("k-both", "KMS-NO-ADMIN").await;
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "operator",
            &format!("/api/v1/findings/{id}/waive"),
            Some(json!({
                "reason": "the whole account is a public sandbox",
                "expires_at": rfc3339(now() + Duration::days(90)),
                "scope": "account",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["waiver"]["scope"], "account");
    assert_eq!(body["waiver"]["key_arn"], Value::Null);
    let (_, waived) = s.get("viewer", "/api/v1/findings?status=waived").await;
    let ids: Vec<i64> = waived["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id.min(other), id.max(other)]);
    let (_, f) = s
        .get("viewer", &format!("/api/v1/findings/{no_admin}"))
        .await;
    assert_eq!(f["status"], "open", "another rule is not covered");
    // revoking through the other key's finding lifts the account waiver
    let (status, body) = s
        .call(
            reqwest::Method::DELETE,
            "operator",
            &format!("/api/v1/findings/{other}/waive"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, waived) = s.get("viewer", "/api/v1/findings?status=waived").await;
    assert_eq!(waived["total"], 0);
}

async fn ticket_references(db: db::TestDb) {
    let s = Server::start(db).await;
    let id = s.finding_id("k-both", "KMS-NO-ADMIN").await;
    let path = format!("/api/v1/findings/{id}");
    let patch = |body: Value| (reqwest::Method::PATCH, body);
    let (m, b) = patch(json!({ "ticket": "JIRA-123" }));
    let (status, body) = s.call(m, "viewer", &path, Some(b)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    let (m, b) = patch(json!({ "ticket": "JIRA-123" }));
    let (status, body) = s.call(m, "operator", &path, Some(b)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ticket"], "JIRA-123");
    let (_, listed) = s.get("viewer", "/api/v1/findings?rule=KMS-NO-ADMIN").await;
    assert_eq!(listed["items"][0]["ticket"], "JIRA-123");
    for (what, bad, want) in [
        (
            "empty",
            json!({ "ticket": "" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "too long",
            json!({ "ticket": "T".repeat(201) }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("absent", json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "wrong type",
            json!({ "ticket": 123 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            json!({ "ticket": "A-1", "status": "resolved" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "control character",
            json!({ "ticket": "A-1\n" }),
            StatusCode::OK,
        ),
        (
            "embedded control",
            json!({ "ticket": "A\u{7}1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, body) = s
            .call(reqwest::Method::PATCH, "operator", &path, Some(bad))
            .await;
        assert_eq!(status, want, "{what}: {body}");
        if want != StatusCode::OK {
            assert_problem(status, &body, want);
        }
    }
    // a trailing newline is trimmed away
    let (_, f) = s.get("viewer", &path).await;
    assert_eq!(f["ticket"], "A-1");
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "operator",
            &path,
            Some(json!({ "ticket": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ticket"], Value::Null);
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "operator",
            "/api/v1/findings/424242",
            Some(json!({ "ticket": "X-1" })),
        )
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
    let actions = s.audit_actions().await;
    assert_eq!(
        actions.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>(),
        vec!["finding.ticket_set"; 3]
    );
}
