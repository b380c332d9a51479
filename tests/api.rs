//! The REST API over real HTTP (server on port 0, reqwest) and a real database — SQLite always,
//! Postgres when KEYWARD_TEST_POSTGRES_URL is set.

#[path = "support/db.rs"]
mod db;

use chrono::{TimeZone, Utc};
use keyward::clock::SystemClock;
use keyward::metrics::Metrics;
use keyward::store::{KeyRecord, KeyUpdate, NewFinding, NewToken, PolicyState, RegionSync, Store};
use keyward::web::auth::token_hash;
use keyward::web::{AppState, build_app, serve};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

const A: &str = "111122223333";
const B: &str = "444455556666";

fn arn(account: &str, region: &str, id: &str) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{id}")
}

fn record(
    account: &str,
    region: &str,
    id: &str,
    aliases: &[&str],
    tags: &[(&str, &str)],
) -> KeyRecord {
    KeyRecord {
        arn: arn(account, region, id),
        account_id: account.into(),
        region: region.into(),
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
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        grants: Vec::new(),
        metadata: Default::default(),
    }
}

fn finding(rule: &str, severity: &str, locator: &str) -> NewFinding {
    NewFinding {
        rule_id: rule.into(),
        locator: locator.into(),
        severity: severity.into(),
        statement_index: Some(0),
        sid: None,
        message: format!("{rule} fired"),
    }
}

const DELEGATING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
const FIXED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}}]}"#;

fn update(key: KeyRecord, text: &str, findings: Vec<NewFinding>) -> KeyUpdate {
    KeyUpdate {
        fingerprint: format!("fp-{}", key.key_id),
        policy: PolicyState::Readable {
            sha256: keyward::sync::sha256_hex(text),
            text: text.into(),
        },
        evaluation: "rules-v1;trusted=".into(),
        findings,
        remediable: true,
        key,
    }
}

async fn apply(store: &dyn Store, account: &str, region: &str, at: i64, updates: Vec<KeyUpdate>) {
    let listed = updates.iter().map(|u| u.key.arn.clone()).collect();
    store
        .apply_region_sync(&RegionSync {
            account_id: account.into(),
            region: region.into(),
            now: Utc.timestamp_opt(1_780_000_000 + at, 0).unwrap(),
            listed,
            listing_complete: false,
            updates,
            unread: Vec::new(),
        })
        .await
        .expect("seed");
}

/// Three keys in two accounts: one delegating, one clean, one public with an alias and tags.
async fn seed(store: &dyn Store) {
    apply(
        store,
        A,
        "us-east-1",
        0,
        vec![
            update(
                record(
                    A,
                    "us-east-1",
                    "k-deleg",
                    &["alias/payments"],
                    &[("team", "pay")],
                ),
                DELEGATING,
                vec![
                    finding("KMS-DELEGATION", "high", "sid:Enable IAM User Permissions"),
                    finding("KMS-NO-ADMIN", "medium", "key"),
                ],
            ),
            update(record(A, "us-east-1", "k-clean", &[], &[]), FIXED, vec![]),
        ],
    )
    .await;
    apply(
        store,
        B,
        "eu-west-1",
        0,
        vec![update(
            record(
                B,
                "eu-west-1",
                "k-public",
                &["alias/shared"],
                &[("env", "Prod-Blue")],
            ),
            DELEGATING,
            vec![finding("KMS-PUBLIC", "critical", "statement:1")],
        )],
    )
    .await;
    // the delegating key is fixed later: a second policy version
    apply(
        store,
        A,
        "us-east-1",
        60,
        vec![update(
            record(
                A,
                "us-east-1",
                "k-deleg",
                &["alias/payments"],
                &[("team", "pay")],
            ),
            FIXED,
            vec![finding("KMS-NO-ADMIN", "medium", "key")],
        )],
    )
    .await;
}

struct Server {
    base: String,
    http: reqwest::Client,
    _db: db::TestDb,
}

impl Server {
    async fn start(db: db::TestDb, metrics_public: bool) -> Server {
        let store = db.shared();
        for (name, role) in [
            ("viewer-bot", "viewer"),
            ("jira", "operator"),
            ("alice", "approver"),
            ("root-admin", "admin"),
        ] {
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
            clock: Arc::new(SystemClock),
            sync: None,
            remediation: None,
            metrics_public,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, app, std::future::pending()));
        Server {
            base,
            http: reqwest::Client::new(),
            _db: db,
        }
    }

    async fn get(&self, role: &str, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(format!("secret-{role}"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

fn assert_problem(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem without {field}: {body}");
    }
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

on_both_databases!(authentication_and_roles);
on_both_databases!(summary_and_accounts);
on_both_databases!(key_filters_and_pagination);
on_both_databases!(key_detail_policy_and_history);
on_both_databases!(findings_filters);
on_both_databases!(bad_requests_are_problems);
on_both_databases!(audit_log_over_http);

async fn authentication_and_roles(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db, false).await;
    let r = s
        .http
        .get(format!("{}/api/v1/keys", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_problem(StatusCode::UNAUTHORIZED, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = s.get("nobody", "/api/v1/keys").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED);
    // a revoked token stops working at once
    s._db
        .store()
        .revoke_token("viewer-bot", Utc::now())
        .await
        .unwrap();
    let (status, _) = s.get("viewer", "/api/v1/summary").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s.get("operator", "/api/v1/summary").await;
    assert_eq!(status, StatusCode::OK);
    // POST /sync needs operator: a viewer-level caller is refused with 403 before anything happens
    s._db
        .store()
        .create_token(&NewToken {
            name: "reader".into(),
            role: "viewer".into(),
            sha256: token_hash("reader"),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    let r = s
        .http
        .post(format!("{}/api/v1/sync", s.base))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_problem(status, &body, StatusCode::FORBIDDEN);
    assert!(body["detail"].as_str().unwrap().contains("operator"));
    // an operator passes the role check; this server does not sync, so 503
    let r = s
        .http
        .post(format!("{}/api/v1/sync", s.base))
        .bearer_auth("secret-operator")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // health stays open; metrics needs a token when not public
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let m = s
        .http
        .get(format!("{}/metrics", s.base))
        .bearer_auth("secret-operator")
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), StatusCode::OK);
}

async fn summary_and_accounts(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db, true).await;
    let (status, body) = s.get("viewer", "/api/v1/summary").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], 3);
    assert_eq!(body["keys_compliant"], 1);
    assert_eq!(body["keys_noncompliant"], 2);
    assert_eq!(body["compliance_percent"], 33.3);
    assert_eq!(body["delegation_findings"], 0);
    assert_eq!(
        body["open_findings_by_severity"],
        serde_json::json!({"critical": 1, "medium": 1})
    );
    assert_eq!(
        body["open_findings_by_rule"],
        serde_json::json!({"KMS-NO-ADMIN": 1, "KMS-PUBLIC": 1})
    );
    let (status, body) = s.get("viewer", "/api/v1/accounts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_array().unwrap().is_empty(),
        "accounts are recorded by the sync, not by key writes: {body}"
    );
}

async fn key_filters_and_pagination(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db, true).await;
    let arns = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_id"].as_str().unwrap().to_string())
            .collect()
    };
    let cases: [(&str, &[&str]); 10] = [
        ("", &["k-clean", "k-deleg", "k-public"]),
        ("account=111122223333", &["k-clean", "k-deleg"]),
        ("region=eu-west-1", &["k-public"]),
        ("rule=KMS-PUBLIC", &["k-public"]),
        ("rule=kms-no-admin", &["k-deleg"]),
        ("rule=KMS-DELEGATION", &[]),
        ("severity=critical", &["k-public"]),
        ("compliant=true", &["k-clean"]),
        ("q=PAYMENTS", &["k-deleg"]),
        ("q=prod-blue", &["k-public"]),
    ];
    for (query, want) in cases {
        let (status, body) = s.get("viewer", &format!("/api/v1/keys?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let mut got = arns(&body);
        got.sort();
        assert_eq!(got, want.to_vec(), "{query}");
        assert_eq!(body["total"], want.len(), "{query}");
    }
    // walk every page of one item: each key once, stable total, no cursor on the last page
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = if cursor.is_empty() {
            "/api/v1/keys?limit=1".to_string()
        } else {
            format!("/api/v1/keys?limit=1&cursor={cursor}")
        };
        let (status, body) = s.get("viewer", &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total"], 3);
        seen.extend(arns(&body));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end: {seen:?}");
    }
    // ARN order: arn:aws:kms:eu-west-1:… sorts before arn:aws:kms:us-east-1:…
    assert_eq!(seen, vec!["k-public", "k-clean", "k-deleg"]);
}

async fn key_detail_policy_and_history(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db, true).await;
    let (status, by_id) = s.get("viewer", "/api/v1/keys/k-deleg").await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    assert_eq!(by_id["arn"], arn(A, "us-east-1", "k-deleg"));
    assert_eq!(by_id["tags"]["team"], "pay");
    assert_eq!(by_id["findings"].as_array().unwrap().len(), 1);
    assert_eq!(by_id["findings"][0]["rule_id"], "KMS-NO-ADMIN");
    assert!(
        by_id["findings"][0]["title"]
            .as_str()
            .unwrap()
            .contains("administrator")
    );
    let encoded = arn(A, "us-east-1", "k-deleg")
        .replace(':', "%3A")
        .replace('/', "%2F");
    let (status, by_arn) = s.get("viewer", &format!("/api/v1/keys/{encoded}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_arn, by_id);
    let (status, body) = s.get("viewer", "/api/v1/keys/nope").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);

    // current policy with an ETag; If-None-Match answers 304
    let r = s
        .http
        .get(format!("{}/api/v1/keys/k-deleg/policy", s.base))
        .bearer_auth("secret-viewer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["text"], FIXED);
    assert_eq!(etag, format!("\"{}\"", body["sha256"].as_str().unwrap()));
    let r = s
        .http
        .get(format!("{}/api/v1/keys/k-deleg/policy", s.base))
        .bearer_auth("secret-viewer")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // history: newest first, with the statement diff from the version before
    let (status, history) = s.get("viewer", "/api/v1/keys/k-deleg/history").await;
    assert_eq!(status, StatusCode::OK);
    let versions = history.as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["text"], FIXED);
    assert_eq!(versions[1]["text"], DELEGATING);
    assert!(versions[1]["diff"].is_null());
    let statements = versions[0]["diff"]["statements"].as_array().unwrap();
    assert_eq!(statements[0]["kind"], "modified");
    assert!(
        versions[0]["diff_text"]
            .as_str()
            .unwrap()
            .contains("aws:PrincipalType")
    );
}

async fn findings_filters(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db, true).await;
    let rules = |body: &Value| -> Vec<String> {
        let mut r: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule_id"].as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    };
    let (_, open) = s.get("viewer", "/api/v1/findings").await;
    assert_eq!(rules(&open), vec!["KMS-NO-ADMIN", "KMS-PUBLIC"]);
    assert_eq!(open["total"], 2);
    let (_, resolved) = s.get("viewer", "/api/v1/findings?status=resolved").await;
    assert_eq!(rules(&resolved), vec!["KMS-DELEGATION"]);
    assert!(resolved["items"][0]["resolved_at"].is_string());
    let (_, all) = s.get("viewer", "/api/v1/findings?status=all").await;
    assert_eq!(all["total"], 3);
    let (_, by_account) = s
        .get("viewer", &format!("/api/v1/findings?account={B}"))
        .await;
    assert_eq!(rules(&by_account), vec!["KMS-PUBLIC"]);
    let (_, by_key) = s
        .get(
            "viewer",
            &format!(
                "/api/v1/findings?status=all&key={}",
                arn(A, "us-east-1", "k-deleg")
            ),
        )
        .await;
    assert_eq!(by_key["total"], 2);
    let (_, page) = s.get("viewer", "/api/v1/findings?status=all&limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = s
        .get(
            "viewer",
            &format!("/api/v1/findings?status=all&limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
}

async fn bad_requests_are_problems(db: db::TestDb) {
    let s = Server::start(db, true).await;
    for path in [
        "/api/v1/keys?limit=0",
        "/api/v1/keys?limit=501",
        "/api/v1/keys?limit=ten",
        "/api/v1/keys?cursor=zz",
        "/api/v1/keys?colour=blue",
        "/api/v1/keys?rule=KMS-NOPE",
        "/api/v1/keys?severity=urgent",
        "/api/v1/keys?compliant=maybe",
        "/api/v1/findings?status=closed",
        "/api/v1/sync/runs?limit=100000",
    ] {
        let (status, body) = s.get("viewer", path).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
    }
    let (status, body) = s.get("viewer", "/api/v1/nothing-here").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND);
}

async fn audit_log_over_http(db: db::TestDb) {
    let store = db.shared();
    for i in 0..3 {
        store
            .append_audit(&keyward::store::NewAuditEvent {
                at: Utc::now(),
                actor: "jira".into(),
                action: "test.event".into(),
                target: format!("thing-{i}"),
                detail: format!(r#"{{"n":{i}}}"#),
            })
            .await
            .unwrap();
    }
    let s = Server::start(db, true).await;
    let (status, body) = s.get("viewer", "/api/v1/audit?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 3);
    assert_eq!(body["items"][0]["target"], "thing-2");
    assert_eq!(body["items"][0]["detail"]["n"], 2);
    assert_eq!(body["items"][0]["prev_hash"], body["items"][1]["hash"]);
    let cursor = body["next_cursor"].as_str().unwrap();
    let (_, rest) = s
        .get("viewer", &format!("/api/v1/audit?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"][0]["target"], "thing-0");
}

#[tokio::test]
async fn openapi_document_and_router_agree() {
    let db = db::sqlite().await;
    let s = Server::start(db, true).await;
    let doc: Value = s
        .http
        .get(format!("{}/api/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            // the server has it: never the router's fallback
            let concrete = path.replace("{key}", "k-none");
            let r = s
                .http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", s.base),
                )
                .bearer_auth("secret-admin")
                .send()
                .await
                .unwrap();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                !body["detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no route"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    documented.sort();
    // and the reverse: every route the API serves is documented
    let served = [
        "DELETE /api/v1/findings/{id}/waive",
        "GET /api/v1/accounts",
        "GET /api/v1/audit",
        "GET /api/v1/findings",
        "GET /api/v1/findings/{id}",
        "GET /api/v1/keys",
        "GET /api/v1/keys/{key}",
        "GET /api/v1/keys/{key}/access",
        "GET /api/v1/keys/{key}/history",
        "GET /api/v1/keys/{key}/policy",
        "GET /api/v1/principals/{arn}/keys",
        "GET /api/v1/remediations",
        "GET /api/v1/remediations/{id}",
        "GET /api/v1/reports/compliance",
        "GET /api/v1/summary",
        "GET /api/v1/sync/runs",
        "GET /api/v1/webhooks/deliveries",
        "PATCH /api/v1/findings/{id}",
        "POST /api/v1/findings/{id}/waive",
        "POST /api/v1/remediations",
        "POST /api/v1/remediations/{id}/apply",
        "POST /api/v1/remediations/{id}/approve",
        "POST /api/v1/remediations/{id}/reject",
        "POST /api/v1/remediations/{id}/rollback",
        "POST /api/v1/sync",
    ];
    assert_eq!(documented, served);
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_api_reference_page_is_served_offline() {
    let s = Server::start(db::sqlite().await, true).await;
    let r = s
        .http
        .get(format!("{}/api/docs", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("/api/openapi.json"));
    // no CDN: every URL the page loads is on this server
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external reference in the page"
    );
}

#[tokio::test]
async fn sync_runs_are_paginated() {
    let db = db::sqlite().await;
    for region in ["us-east-1", "eu-west-1", "ap-south-1"] {
        db.store()
            .start_sync_run(A, region, Utc::now())
            .await
            .unwrap();
    }
    let s = Server::start(db, true).await;
    let (status, first) = s.get("viewer", "/api/v1/sync/runs?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["total"], 3);
    assert_eq!(first["items"][0]["region"], "ap-south-1");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = s
        .get(
            "viewer",
            &format!("/api/v1/sync/runs?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["region"], "us-east-1");
    assert!(rest["next_cursor"].is_null());
    let (status, body) = s.get("viewer", "/api/v1/sync/runs?colour=blue").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
}
