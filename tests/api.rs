//! The REST API over real HTTP (server on port 0, reqwest) and a real database — SQLite always,
//! Postgres when KEYWARD_TEST_POSTGRES_URL is set.

#[path = "support/db.rs"]
mod db;
#[path = "support/moto.rs"]
mod moto;

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

    /// Any method, with an optional raw body; returns the status, the headers and the body.
    async fn send(
        &self,
        method: reqwest::Method,
        role: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(format!("secret-{role}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let r = request.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, headers, body)
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

/// A problem response, headers included: every 4xx is `application/problem+json`.
fn assert_problem_response(
    (status, headers, body): &(StatusCode, reqwest::header::HeaderMap, Value),
    want: StatusCode,
) {
    assert_problem(*status, body, want);
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{want}: {body}"
    );
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
on_both_databases!(role_matrix);

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
        body["items"].as_array().unwrap().is_empty(),
        "accounts are recorded by the sync, not by key writes: {body}"
    );
    assert_eq!(body["total"], 0);

    // configured accounts page like every other collection, by id
    s._db
        .store()
        .upsert_accounts(
            &[B, "999988887777", A].map(|id| keyward::store::AccountRow {
                id: id.into(),
                name: format!("acct {id}"),
                regions: vec!["us-east-1".into()],
            }),
        )
        .await
        .unwrap();
    let (status, first) = s.get("viewer", "/api/v1/accounts?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["total"], 3);
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), [A, B]);
    assert_eq!(first["items"][0]["name"], format!("acct {A}"));
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = s
        .get(
            "viewer",
            &format!("/api/v1/accounts?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(ids(&rest), ["999988887777"]);
    assert_eq!(rest["total"], 3);
    assert!(rest["next_cursor"].is_null());
    for bad in ["limit=0", "limit=501", "cursor=zz", "colour=blue"] {
        let (status, body) = s.get("viewer", &format!("/api/v1/accounts?{bad}")).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST);
    }
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

    // a complete listing without k-public: the key is deleted
    s._db
        .store()
        .apply_region_sync(&RegionSync {
            account_id: B.into(),
            region: "eu-west-1".into(),
            now: Utc.timestamp_opt(1_780_000_000 + 120, 0).unwrap(),
            listed: Vec::new(),
            listing_complete: true,
            updates: Vec::new(),
            unread: Vec::new(),
        })
        .await
        .unwrap();
    for (query, want) in [
        ("", &["k-clean", "k-deleg"][..]),
        ("status=live", &["k-clean", "k-deleg"]),
        ("status=open", &["k-clean", "k-deleg"]),
        ("status=all", &["k-clean", "k-deleg", "k-public"]),
        ("status=deleted", &["k-public"]),
        ("status=all&q=prod-blue", &["k-public"]),
    ] {
        let (status, body) = s.get("viewer", &format!("/api/v1/keys?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let mut got = arns(&body);
        got.sort();
        assert_eq!(got, want.to_vec(), "{query}");
        assert_eq!(body["total"], want.len(), "{query}");
    }
    let (status, body) = s.get("viewer", "/api/v1/keys?status=gone").await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST);
    let detail = body["detail"].as_str().unwrap();
    for accepted in ["live", "open", "all", "deleted"] {
        assert!(detail.contains(accepted), "{accepted} missing: {detail}");
    }
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
    // `q` searches what it searches on keys (ARN, id, description, alias, tag), and the message
    for (query, want) in [
        ("q=PAYMENTS", &["KMS-NO-ADMIN"][..]),
        ("q=prod-blue", &["KMS-PUBLIC"]),
        ("q=TEAM", &["KMS-NO-ADMIN"]),
        ("q=y%20k-pub", &["KMS-PUBLIC"]),
        ("q=444455556666", &["KMS-PUBLIC"]),
        ("q=k-deleg", &["KMS-NO-ADMIN"]),
        ("q=nowhere", &[]),
    ] {
        let (status, body) = s.get("viewer", &format!("/api/v1/findings?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(rules(&body), want.to_vec(), "{query}");
        assert_eq!(body["total"], want.len(), "{query}");
        // and the same `q` on keys names the same keys
        let (_, keys) = s.get("viewer", &format!("/api/v1/keys?{query}")).await;
        assert_eq!(keys["total"], want.len(), "keys {query}: {keys}");
    }
    let (_, by_message) = s.get("viewer", "/api/v1/findings?q=public%20fired").await;
    assert_eq!(rules(&by_message), vec!["KMS-PUBLIC"]);
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

    use reqwest::Method;
    // a path the API has, with a method it does not take: a problem, and Allow says what is
    for (method, path, allow) in [
        (Method::PUT, "/api/v1/keys", "GET,HEAD"),
        (Method::POST, "/api/openapi.json", "GET,HEAD"),
        (Method::DELETE, "/api/v1/sync", "POST"),
        (Method::GET, "/api/v1/remediations/1/approve", "POST"),
    ] {
        let response = s.send(method.clone(), "viewer", path, None).await;
        assert_problem_response(&response, StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            response.2["detail"].as_str().unwrap().contains(path),
            "{}",
            response.2
        );
        assert_eq!(response.1["allow"], allow, "{method} {path}");
    }
    // path parameters that are not UTF-8 once percent-decoded
    for path in [
        "/api/v1/keys/%FF",
        "/api/v1/keys/%FF/policy",
        "/api/v1/findings/%C3%28",
        "/api/v1/principals/%FF/keys",
    ] {
        let response = s.send(Method::GET, "viewer", path, None).await;
        assert_problem_response(&response, StatusCode::BAD_REQUEST);
    }
    let response = s
        .send(
            Method::POST,
            "approver",
            "/api/v1/remediations/%FF/approve",
            None,
        )
        .await;
    assert_problem_response(&response, StatusCode::BAD_REQUEST);

    // optional decision bodies: the same rules as every JSON body (this server has no
    // remediation, so a body that passes gets 503)
    let big = format!(r#"{{"comment": "{}"}}"#, "x".repeat(70 * 1024)).into_bytes();
    for action in ["approve", "reject", "rollback"] {
        let path = format!("/api/v1/remediations/1/{action}");
        let role = if action == "rollback" {
            "operator"
        } else {
            "approver"
        };
        for (body, want) in [
            (big.clone(), StatusCode::PAYLOAD_TOO_LARGE),
            (b"{\"comment\": ".to_vec(), StatusCode::BAD_REQUEST),
            (b"not json".to_vec(), StatusCode::BAD_REQUEST),
            (
                br#"{"comment": 5}"#.to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                br#"{"colour": "blue"}"#.to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                br#"{"comment": "ok"}"#.to_vec(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (Vec::new(), StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let response = s.send(Method::POST, role, &path, Some(body)).await;
            assert_problem_response(&response, want);
        }
        // the role is checked before the body is read
        let response = s
            .send(Method::POST, "viewer", &path, Some(big.clone()))
            .await;
        assert_problem_response(&response, StatusCode::FORBIDDEN);
    }
    // the other JSON bodies answer an oversized body the same way
    for (method, path) in [
        (Method::POST, "/api/v1/findings/1/waive"),
        (Method::PATCH, "/api/v1/findings/1"),
        (Method::POST, "/api/v1/remediations"),
    ] {
        let response = s.send(method, "operator", path, Some(big.clone())).await;
        assert_problem_response(&response, StatusCode::PAYLOAD_TOO_LARGE);
    }
}

async fn audit_total(s: &Server) -> Value {
    s.get("viewer", "/api/v1/audit").await.1["total"].clone()
}

/// For each mutating endpoint: the lowest role allowed gets past the role check, the role just
/// below gets 403, and a refused call leaves no audit entry.
async fn role_matrix(db: db::TestDb) {
    seed(db.store()).await;
    let s = Server::start(db, true).await;
    use reqwest::Method;
    let (_, open) = s.get("viewer", "/api/v1/findings?rule=KMS-PUBLIC").await;
    let finding = open["items"][0]["id"].as_i64().unwrap();
    let waive = format!(
        r#"{{"reason": "accepted", "expires_at": "{}"}}"#,
        (Utc::now() + chrono::Duration::days(30)).to_rfc3339()
    );
    let cases: Vec<(Method, String, Option<String>, &str, &str)> = vec![
        (
            Method::POST,
            "/api/v1/sync".into(),
            None,
            "viewer",
            "operator",
        ),
        (
            Method::DELETE,
            format!("/api/v1/findings/{finding}/waive"),
            None,
            "viewer",
            "operator",
        ),
        (
            Method::POST,
            format!("/api/v1/findings/{finding}/waive"),
            Some(waive),
            "viewer",
            "operator",
        ),
        (
            Method::PATCH,
            format!("/api/v1/findings/{finding}"),
            Some(r#"{"ticket": "SEC-1"}"#.into()),
            "viewer",
            "operator",
        ),
        (
            Method::POST,
            "/api/v1/remediations".into(),
            Some(r#"{"key": "k-deleg"}"#.into()),
            "viewer",
            "operator",
        ),
        (
            Method::POST,
            "/api/v1/remediations/1/rollback".into(),
            None,
            "viewer",
            "operator",
        ),
        (
            Method::POST,
            "/api/v1/remediations/1/approve".into(),
            None,
            "operator",
            "approver",
        ),
        (
            Method::POST,
            "/api/v1/remediations/1/reject".into(),
            Some(r#"{"comment": "no"}"#.into()),
            "operator",
            "approver",
        ),
        (
            Method::POST,
            "/api/v1/remediations/1/apply".into(),
            None,
            "operator",
            "approver",
        ),
    ];
    for (method, path, body, below, lowest) in &cases {
        let before = audit_total(&s).await;
        let response = s
            .send(
                method.clone(),
                below,
                path,
                body.clone().map(String::into_bytes),
            )
            .await;
        assert_problem_response(&response, StatusCode::FORBIDDEN);
        assert!(
            response.2["detail"].as_str().unwrap().contains(lowest),
            "{method} {path}: {}",
            response.2
        );
        assert_eq!(
            audit_total(&s).await,
            before,
            "{method} {path}: a refused call was audited"
        );
        for role in [*lowest, "admin"] {
            let (status, _, answer) = s
                .send(
                    method.clone(),
                    role,
                    path,
                    body.clone().map(String::into_bytes),
                )
                .await;
            assert!(
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
                "{role} {method} {path}: {status} {answer}"
            );
        }
    }
    // the successful finding mutations were audited under the tokens' names
    let (_, audit) = s.get("viewer", "/api/v1/audit").await;
    let actors: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert!(
        actors.contains(&("jira", "finding.ticket_set")),
        "{actors:?}"
    );
    assert!(
        actors.contains(&("root-admin", "finding.ticket_set")),
        "{actors:?}"
    );
    // every role reads, webhook deliveries included (they carry no secrets)
    for role in ["viewer", "operator", "approver", "admin"] {
        for path in [
            "/api/v1/webhooks/deliveries",
            "/api/v1/remediations",
            "/api/v1/audit",
            "/api/v1/sync/runs",
        ] {
            let (status, body) = s.get(role, path).await;
            assert_eq!(status, StatusCode::OK, "{role} {path}: {body}");
        }
    }
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

/// A plausible value for each path parameter of the document.
fn concrete(path: &str) -> String {
    let out = path
        .replace("{key}", "k-none")
        .replace("{id}", "1")
        .replace("{arn}", "arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fapp");
    assert!(
        !out.contains('{'),
        "no plausible value for a parameter of {path}"
    );
    out
}

#[tokio::test]
async fn openapi_document_and_router_agree() {
    use reqwest::Method;
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
        let methods: Vec<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let url = format!("{}{}", s.base, concrete(path));
        for method in &methods {
            documented.push(format!("{method} {path}"));
            // the server has it: neither the router's 404 nor its 405
            let r = s
                .http
                .request(method.parse().unwrap(), &url)
                .bearer_auth("secret-admin")
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            assert!(
                !body["detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no route"),
                "{method} {path} is documented but not routed"
            );
            // every documented error is a problem document
            for (code, response) in ops[method.to_lowercase()]["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    let content = &response["content"];
                    let reference = response["$ref"].as_str();
                    assert!(
                        reference.is_some()
                            || content.get("application/problem+json").is_some()
                            || path == "/readyz",
                        "{method} {path} {code}: {response}"
                    );
                }
            }
        }
        // and the reverse, from the router: the methods it takes on this path are exactly the
        // documented ones (its 405 lists them in Allow)
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if methods.contains(&method.to_string()) {
                continue;
            }
            let r = s
                .http
                .request(method.clone(), &url)
                .bearer_auth("secret-admin")
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented"
            );
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let mut allowed: Vec<String> = r.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| m != "HEAD")
                .collect();
            allowed.sort();
            let mut want = methods.clone();
            want.sort();
            assert_eq!(allowed, want, "{path}");
        }
    }
    documented.sort();
    // every path the server serves outside the dashboard is documented: the router cannot list
    // its paths, so they are named here (add new routes below)
    let mut served = vec![
        "DELETE /api/v1/findings/{id}/waive",
        "GET /api/docs",
        "GET /api/openapi.json",
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
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "PATCH /api/v1/findings/{id}",
        "PATCH /api/v1/remediations/{id}",
        "POST /api/v1/findings/{id}/waive",
        "POST /api/v1/remediations",
        "POST /api/v1/remediations/{id}/apply",
        "POST /api/v1/remediations/{id}/approve",
        "POST /api/v1/remediations/{id}/reject",
        "POST /api/v1/remediations/{id}/rollback",
        "POST /api/v1/sync",
    ];
    served.sort();
    assert_eq!(documented, served);
    // each of them is routed (not the 404 fallback), whatever the document says
    for route in &served {
        let (method, path) = route.split_once(' ').unwrap();
        let r = s
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{}", s.base, concrete(path)),
            )
            .bearer_auth("secret-admin")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED
                && !body["detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no route"),
            "{route} is not routed: {status} {body}"
        );
    }
    // the operational endpoints need no token; the rest of the API does
    for open in ["/healthz", "/readyz", "/api/openapi.json", "/api/docs"] {
        assert_eq!(
            doc["paths"][open]["get"]["security"],
            serde_json::json!([{}]),
            "{open}"
        );
    }
    assert!(doc["paths"]["/api/v1/keys"]["get"]["security"].is_null());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["responses"]["MethodNotAllowed"].is_object());
    // handlers that answer 413 and 503 say so
    for (method, path) in [
        ("post", "/api/v1/remediations/{id}/approve"),
        ("post", "/api/v1/remediations/{id}/reject"),
        ("post", "/api/v1/remediations/{id}/rollback"),
        ("post", "/api/v1/remediations"),
        ("post", "/api/v1/findings/{id}/waive"),
        ("patch", "/api/v1/findings/{id}"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for code in ["400", "413"] {
            assert!(responses[code].is_object(), "{method} {path} {code}");
        }
    }
    for (method, path) in [
        ("post", "/api/v1/remediations/{id}/approve"),
        ("post", "/api/v1/remediations/{id}/reject"),
        ("post", "/api/v1/remediations/{id}/apply"),
        ("post", "/api/v1/remediations/{id}/rollback"),
        ("post", "/api/v1/remediations"),
        ("post", "/api/v1/sync"),
        ("get", "/readyz"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["503"].is_object(),
            "{method} {path} 503"
        );
    }
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

/// A refused `POST /sync` (a pass started through the API still runs) changes nothing, so it
/// leaves no audit entry; the accepted one leaves exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sync_trigger_is_not_audited() {
    use keyward::aws::{AccountAccess, KmsConnector, SdkConnector};
    use keyward::sync::{SyncService, Target};
    use keyward::web::SyncTrigger;
    moto::prepare_environment();
    // An "AWS endpoint" that accepts connections and never answers: the pass keeps running
    // (for the SDK's 30 s attempt timeout at least) while the test asks again.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let db = db::sqlite().await;
    let store = db.shared();
    store
        .create_token(&NewToken {
            name: "jira".into(),
            role: "operator".into(),
            sha256: token_hash("secret-operator"),
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let connector: Arc<dyn KmsConnector> =
        Arc::new(SdkConnector::new(Some(endpoint), metrics.clone()));
    let service = Arc::new(SyncService {
        store: store.clone(),
        connector,
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
        concurrency: 1,
        parallel_regions: 1,
        owner: "test".into(),
        lease: std::time::Duration::from_secs(600),
        passes: Default::default(),
    });
    let target = Target {
        account_id: A.into(),
        name: "a".into(),
        access: AccountAccess {
            account_id: A.into(),
            role_arn: None,
            external_id: None,
        },
        regions: vec!["us-east-1".into()],
        trusted_accounts: Vec::new(),
    };
    let trigger = Arc::new(SyncTrigger::new(service, vec![target]));
    let app = build_app(AppState {
        store: store.clone(),
        metrics,
        clock: Arc::new(SystemClock),
        sync: Some(trigger.clone()),
        remediation: None,
        metrics_public: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, app, std::future::pending()));
    let http = reqwest::Client::new();
    let post = || {
        http.post(format!("{base}/api/v1/sync"))
            .bearer_auth("secret-operator")
            .send()
    };
    let triggered = || async {
        let (rows, _) = store.list_audit(None, 100).await.unwrap();
        rows.iter().filter(|e| e.action == "sync.triggered").count()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(triggered().await, 1);
    assert!(
        trigger.is_running(),
        "the pass ended before the test could ask again"
    );
    let second = post().await.unwrap();
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    assert!(trigger.is_running());
    assert_eq!(triggered().await, 1, "the refused trigger was audited");
}
