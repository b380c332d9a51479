//! The dashboard's handlers through the router itself (`tower::ServiceExt::oneshot`, no
//! sockets) on a real SQLite file: every page, sign-in and sessions, roles, CSRF, escaping,
//! assets. Like a browser without a cookie jar, each request carries the headers a browser would
//! send (`Host`, `Origin`, `Cookie`) explicitly, and cookies are read from `Set-Cookie`.
//! The remediation service runs against an in-memory KMS so proposals and approvals are real.
//!
//! No test here needs a socket; the real server is exercised end to end by `tests/browser.rs`.

#[path = "support/db.rs"]
mod db;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::request::Builder;
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::{NaiveDate, TimeDelta, Utc};
use keyward::aws::{AccountAccess, AwsError, KeyMetadata, KmsConnector, KmsSource, KmsWriter};
use keyward::clock::Clock;
use keyward::config::{AccountConfig, AuthConfig, RemediationConfig};
use keyward::metrics::Metrics;
use keyward::remediation::{KmsWriters, Proposal, RemediationService};
use keyward::store::{KeyRecord, KeyUpdate, NewFinding, NewToken, PolicyState, RegionSync, Store};
use keyward::web::auth::token_hash;
use keyward::web::dashboard::DashboardSettings;
use keyward::web::{AppState, build_app_with};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const A: &str = "111122223333";
const REGION: &str = "us-east-1";
const HOSTILE: &str = "<script>alert('pwned')</script>";
const DELEGATING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Sid":"Allow use","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":["kms:Decrypt"],"Resource":"*"}]}"#;
const ADMIN: &str = "arn:aws:iam::111122223333:role/KMSAdmin";
/// The authority every request addresses (its `Host`), and the `Origin` of this site's pages.
const HOST: &str = "keyward.test:8080";
const ORIGIN: &str = "http://keyward.test:8080";

fn arn(id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{A}:key/{id}")
}

fn record(id: &str, alias: &str, tags: &[(&str, &str)]) -> KeyRecord {
    KeyRecord {
        arn: arn(id),
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
        aliases: if alias.is_empty() {
            vec![]
        } else {
            vec![alias.into()]
        },
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        grants: vec![],
        metadata: Default::default(),
    }
}

fn finding(rule: &str, severity: &str, statement: i64) -> NewFinding {
    NewFinding {
        rule_id: rule.into(),
        locator: format!("statement:{statement}"),
        severity: severity.into(),
        statement_index: Some(statement),
        sid: None,
        message: format!("{rule} fired"),
    }
}

fn update(key: KeyRecord, text: &str, findings: Vec<NewFinding>) -> KeyUpdate {
    KeyUpdate {
        fingerprint: format!("fp-{}-{}", key.key_id, keyward::sync::sha256_hex(text)),
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

/// Keys: `k-deleg` (delegating, hostile tag), `k-clean`, `k-hostile` (a policy with markup in
/// it), and 60 filler keys so the list pages.
async fn seed(store: &dyn Store) {
    let hostile_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{HOSTILE}","Effect":"Allow","Principal":{{"AWS":"*"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
    )
    .replace("'", "");
    let mut updates = vec![
        update(
            record("k-deleg", "alias/payments", &[("owner", HOSTILE)]),
            DELEGATING,
            vec![finding("KMS-DELEGATION", "high", 0)],
        ),
        update(
            record("k-clean", "", &[]),
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}"#,
            vec![],
        ),
        update(
            record("k-hostile", "alias/evil", &[]),
            &hostile_policy,
            vec![finding("KMS-PUBLIC", "critical", 0)],
        ),
    ];
    for i in 0..60 {
        updates.push(update(
            record(&format!("k-fill-{i:03}"), "", &[]),
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"*","Resource":"*"}]}"#,
            vec![],
        ));
    }
    store
        .apply_region_sync(&RegionSync {
            account_id: A.into(),
            region: REGION.into(),
            now: Utc::now() - TimeDelta::minutes(5),
            listed: updates.iter().map(|u| u.key.arn.clone()).collect(),
            listing_complete: false,
            updates,
            unread: Vec::new(),
        })
        .await
        .expect("seed keys");
    for (name, role) in [
        ("viewer-bot", "viewer"),
        ("jira", "operator"),
        ("alice", "approver"),
        ("bob", "approver"),
        ("root-admin", "admin"),
    ] {
        store
            .create_token(&NewToken {
                name: name.into(),
                role: role.into(),
                sha256: token_hash(&format!("secret-{name}")),
                created_at: Utc::now(),
            })
            .await
            .unwrap();
    }
}

/// KMS in memory: policies by key id; every write lands in the map.
#[derive(Default, Clone)]
struct FakeKms {
    policies: Arc<Mutex<HashMap<String, String>>>,
}

#[async_trait]
impl KmsSource for FakeKms {
    async fn list_keys(&self) -> Result<Vec<keyward::aws::KeyRef>, AwsError> {
        Ok(vec![])
    }
    async fn list_aliases(&self) -> Result<Vec<keyward::aws::Alias>, AwsError> {
        Ok(vec![])
    }
    async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, AwsError> {
        Ok(KeyMetadata {
            key_id: key_id.into(),
            arn: arn(key_id),
            account_id: A.into(),
            description: String::new(),
            key_manager: "CUSTOMER".into(),
            key_state: "Enabled".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            origin: "AWS_KMS".into(),
            multi_region: false,
            creation_date: None,
            deletion_date: None,
            extra: Default::default(),
        })
    }
    async fn get_key_policy(&self, key_id: &str) -> Result<String, AwsError> {
        self.policies
            .lock()
            .unwrap()
            .get(key_id)
            .cloned()
            .ok_or(AwsError::NotFound {
                operation: "GetKeyPolicy",
                message: key_id.into(),
            })
    }
    async fn list_resource_tags(&self, _: &str) -> Result<Vec<(String, String)>, AwsError> {
        Ok(vec![])
    }
    async fn get_key_rotation_status(&self, _: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
    async fn list_grants(&self, _: &str) -> Result<Vec<keyward::aws::Grant>, AwsError> {
        Ok(vec![])
    }
}

#[async_trait]
impl KmsWriter for FakeKms {
    async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), AwsError> {
        self.policies
            .lock()
            .unwrap()
            .insert(key_id.into(), policy.into());
        Ok(())
    }
}

#[async_trait]
impl KmsConnector for FakeKms {
    async fn source(&self, _: &AccountAccess, _: &str) -> Result<Arc<dyn KmsSource>, AwsError> {
        Ok(Arc::new(self.clone()))
    }
    async fn iam(&self, _: &AccountAccess) -> Result<Arc<dyn keyward::aws::IamSource>, AwsError> {
        // The dashboard tests never read IAM.
        Err(AwsError::AccessDenied {
            operation: "GetAccountAuthorizationDetails",
            message: "no IAM in the dashboard tests".into(),
        })
    }
    async fn caller_arn(&self, _: &AccountAccess, _: &str) -> Result<String, AwsError> {
        Ok(format!("arn:aws:sts::{A}:assumed-role/Keyward/session"))
    }
    async fn default_account(&self) -> Result<(String, String), AwsError> {
        Ok((A.into(), REGION.into()))
    }
}

#[async_trait]
impl KmsWriters for FakeKms {
    async fn writer(&self, _: &AccountAccess, _: &str) -> Result<Arc<dyn KmsWriter>, AwsError> {
        Ok(Arc::new(self.clone()))
    }
}

fn account() -> AccountConfig {
    AccountConfig {
        id: A.into(),
        name: Some("prod".into()),
        regions: vec![REGION.into()],
        key_admins: vec![ADMIN.into()],
        ..AccountConfig::default()
    }
}

struct App {
    router: Router,
    db: db::TestDb,
    remediation: Arc<RemediationService>,
}

/// A signed-in browser: its session cookie and the session's CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn start_with(auth: AuthConfig) -> App {
    let db = db::sqlite().await;
    seed(db.store()).await;
    let kms = FakeKms::default();
    kms.policies
        .lock()
        .unwrap()
        .insert("k-deleg".into(), DELEGATING.into());
    let clock: Arc<dyn Clock> = db.clock();
    let remediation = Arc::new(RemediationService {
        store: db.shared(),
        connector: Arc::new(kms.clone()),
        writers: Arc::new(kms.clone()),
        clock: clock.clone(),
        config: RemediationConfig::default(),
        accounts: vec![account()],
        after_apply: None,
    });
    let app = build_app_with(
        AppState {
            store: db.shared(),
            metrics: Arc::new(Metrics::new()),
            clock,
            sync: None,
            remediation: Some(remediation.clone()),
            metrics_public: true,
        },
        DashboardSettings {
            auth,
            accounts: vec![account()],
            remediation: RemediationConfig::default(),
        },
    );
    App {
        router: app,
        db,
        remediation,
    }
}

async fn start() -> App {
    start_with(AuthConfig::default()).await
}

/// A response, read whole.
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

fn set_cookie(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

const OWN_PENDING: &str = "You requested this remediation; another approver must approve it.";

/// The contents of every `<pre class="diff">` block of a page.
fn diff_blocks(html: &str) -> Vec<&str> {
    html.split(r#"<pre class="diff">"#)
        .skip(1)
        .map(|rest| rest.split("</pre>").next().unwrap())
        .collect()
}

/// Each diff line is a `display: block` span, so the block must hold nothing but spans: a
/// newline between them would render as an empty line after every line.
fn assert_single_spaced(html: &str, page: &str) {
    let blocks = diff_blocks(html);
    assert!(!blocks.is_empty(), "{page}: a diff");
    for block in blocks {
        assert!(
            block.starts_with("<span class=") && block.ends_with("</span>"),
            "{page}: {block}"
        );
        assert!(
            !block.contains('\n'),
            "{page}: a newline between diff lines: {block:?}"
        );
        assert!(block.matches("<span").count() > 1, "{page}: {block}");
    }
}

fn form_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl App {
    /// A request to this site: the method, the path and the `Host` a browser sends.
    fn request(&self, method: &str, path: &str) -> Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", HOST)
    }

    /// Runs one request through the router and reads the whole response.
    async fn send(&self, request: Builder, body: impl Into<Body>) -> Resp {
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).expect("a UTF-8 body"),
        }
    }

    /// A form POST with exactly the given headers (besides `Host` and the content type).
    async fn post_form(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Resp {
        let mut r = self
            .request("POST", path)
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r, body).await
    }

    async fn get(&self, b: Option<&Browser>, path: &str) -> Resp {
        let mut r = self.request("GET", path).header("accept", "text/html");
        if let Some(b) = b {
            r = r.header("cookie", format!("keyward_session={}", b.cookie));
        }
        self.send(r, Body::empty()).await
    }

    async fn page(&self, b: &Browser, path: &str) -> String {
        let r = self.get(Some(b), path).await;
        assert_eq!(r.status, StatusCode::OK, "GET {path}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        r.body
    }

    /// A POST as a browser on this site sends it: Origin, session cookie, form body.
    async fn post(&self, b: &Browser, path: &str, form: &[(&str, &str)]) -> Resp {
        self.post_raw(Some(b), path, form, Some(ORIGIN), &[]).await
    }

    async fn post_raw(
        &self,
        b: Option<&Browser>,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let cookie = b.map(|b| format!("keyward_session={}", b.cookie));
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        if let Some(c) = &cookie {
            headers.push(("cookie", c));
        }
        self.post_form(path, form_body(form), &headers).await
    }

    /// Signs in with the token of `name` through the form.
    async fn sign_in(&self, name: &str) -> Browser {
        let form = self.get(None, "/login?next=/keys").await;
        assert_eq!(form.status, StatusCode::OK);
        let login_cookie =
            cookie_value(&set_cookie(&form, "keyward_login").expect("pre-session cookie"));
        let csrf = csrf_of(&form.body);
        let secret = format!("secret-{name}");
        let r = self
            .post_form(
                "/login",
                format!("csrf={csrf}&next=%2Fkeys&token={secret}"),
                &[
                    ("origin", ORIGIN),
                    ("cookie", &format!("keyward_login={login_cookie}")),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "sign in as {name}");
        assert_eq!(r.headers["location"], "/keys");
        let cookie = set_cookie(&r, "keyward_session").expect("a session cookie");
        let mut b = Browser {
            cookie: cookie_value(&cookie),
            csrf: String::new(),
        };
        b.csrf = csrf_of(&self.page(&b, "/").await);
        b
    }
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn unauthenticated_pages_redirect_to_sign_in() {
    let app = start().await;
    let r = app.get(None, "/keys?rule=KMS-DELEGATION").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers["location"],
        "/login?next=%2Fkeys%3Frule%3DKMS%2DDELEGATION"
    );
    for path in ["/", "/findings", "/remediations/1", "/settings", "/audit"] {
        let r = app.get(None, path).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.headers["location"]
                .to_str()
                .unwrap()
                .starts_with("/login?next=")
        );
    }
    // a forged session id is no session
    let fake = Browser {
        cookie: "0".repeat(64),
        csrf: String::new(),
    };
    assert_eq!(
        app.get(Some(&fake), "/").await.status,
        StatusCode::SEE_OTHER
    );
    // htmx is told where to go
    let r = app
        .send(
            app.request("GET", "/keys").header("hx-request", "true"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["hx-redirect"], "/login?next=%2Fkeys");
    // the API and the operational endpoints are unchanged
    let r = app
        .send(app.request("GET", "/api/v1/keys"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get(None, "/healthz").await.status, StatusCode::OK);
    // next never leaves the site
    let form = app.get(None, "/login?next=//evil.example/x").await;
    let html = form.body;
    assert!(html.contains(r#"name="next" value="/""#), "{html}");
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it() {
    let app = start().await;
    // a wrong token: the form again, 401
    let form = app.get(None, "/login").await;
    let login_cookie = cookie_value(&set_cookie(&form, "keyward_login").unwrap());
    let csrf = csrf_of(&form.body);
    let login = format!("keyward_login={login_cookie}");
    let r = app
        .post_form(
            "/login",
            format!("csrf={csrf}&token=secret-nobody"),
            &[("origin", ORIGIN), ("cookie", &login)],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, "keyward_session").is_none());
    assert!(r.body.contains("not valid"));
    // the login form itself is CSRF-protected: no pre-session cookie, or another site
    let r = app
        .post_form(
            "/login",
            format!("csrf={csrf}&token=secret-alice"),
            &[("origin", ORIGIN)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post_form(
            "/login",
            format!("csrf={csrf}&token=secret-alice"),
            &[("origin", "http://evil.example"), ("cookie", &login)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let b = app.sign_in("alice").await;
    assert_eq!(b.cookie.len(), 64, "256 random bits");
    let form = app.get(None, "/login").await;
    let _ = form;
    // the cookie's attributes
    let form = app.get(None, "/login").await;
    let lc = cookie_value(&set_cookie(&form, "keyward_login").unwrap());
    let csrf = csrf_of(&form.body);
    let r = app
        .post_form(
            "/login",
            format!("csrf={csrf}&token=secret-alice&next=https%3A%2F%2Fevil.example"),
            &[
                ("origin", ORIGIN),
                ("cookie", &format!("keyward_login={lc}")),
            ],
        )
        .await;
    assert_eq!(r.headers["location"], "/", "an off-site next is ignored");
    let c = set_cookie(&r, "keyward_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(c.contains(attr), "{c}");
    }
    assert!(
        !c.contains("Secure"),
        "plain HTTP without a trusted proxy: {c}"
    );
    // only the hash is stored
    let stored = app
        .db
        .store()
        .get_session(&token_hash(&b.cookie), Utc::now())
        .await
        .unwrap()
        .expect("the session");
    assert_eq!(stored.actor, "alice");
    assert!(
        app.db
            .store()
            .get_session(&b.cookie, Utc::now())
            .await
            .unwrap()
            .is_none()
    );

    let html = app.page(&b, "/").await;
    assert!(html.contains("alice") && html.contains("approver"));
    // the sign-in is audited with the token name as actor
    let audit = app.page(&b, "/audit").await;
    assert!(audit.contains("dashboard.signed_in"));

    let r = app.post(&b, "/logout", &[("csrf", &b.csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&r, "keyward_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(app.get(Some(&b), "/").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_expire_and_end_with_their_token() {
    let app = start().await;
    let b = app.sign_in("jira").await;
    let other = app.sign_in("alice").await;
    assert_eq!(app.get(Some(&b), "/").await.status, StatusCode::OK);
    app.db
        .store()
        .revoke_token("jira", Utc::now())
        .await
        .unwrap();
    assert_eq!(app.get(Some(&b), "/").await.status, StatusCode::SEE_OTHER);
    assert_eq!(app.get(Some(&other), "/").await.status, StatusCode::OK);
    app.db.clock().advance(TimeDelta::hours(13));
    assert_eq!(
        app.get(Some(&other), "/").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn every_page_renders_for_a_viewer() {
    let app = start().await;
    let b = app.sign_in("viewer-bot").await;
    let html = app.page(&b, "/").await;
    assert!(
        html.contains(r#"id="delegating-keys">1<"#),
        "delegation count front and centre"
    );
    assert!(html.contains("<svg class=\"trend\""));
    assert!(html.contains("KMS-DELEGATION") && html.contains("KMS-PUBLIC"));
    assert!(html.contains("critical"));
    // the trend chart draws the snapshots the sync records
    let today = Utc::now().date_naive();
    app.db
        .store()
        .record_daily_snapshot(today, Utc::now())
        .await
        .unwrap();
    app.db
        .store()
        .record_daily_snapshot(today - TimeDelta::days(1), Utc::now())
        .await
        .unwrap();
    let html = app.page(&b, "/").await;
    assert!(html.contains("<polyline class=\"pct\""), "{html}");
    let _: NaiveDate = today;

    let keys = app.page(&b, "/keys").await;
    assert!(keys.contains("Keys 1–50 of 63"), "{keys}");
    assert!(keys.contains("offset=50"));
    let page2 = app.page(&b, "/keys?offset=50").await;
    assert!(page2.contains("Keys 51–63 of 63"));
    let filtered = app.page(&b, "/keys?rule=KMS-DELEGATION").await;
    assert!(filtered.contains("Keys 1–1 of 1") && filtered.contains("k-deleg"));
    assert!(filtered.contains(r#"<option value="KMS-DELEGATION" selected>"#));
    let sorted = app.page(&b, "/keys?sort=compliance&dir=desc").await;
    assert!(sorted.contains(r#"aria-sort="descending""#));
    let first_row = &sorted[sorted.find("<tbody>").unwrap()..];
    let first_key = first_row
        .split("<code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert!(
        first_key == "k-hostile" || first_key == "k-deleg",
        "non-compliant first, not {first_key}"
    );
    let q = app.page(&b, "/keys?q=payments").await;
    assert!(q.contains("Keys 1–1 of 1"));
    // htmx gets the table only
    let r = app
        .send(
            app.request("GET", "/keys?compliant=false")
                .header("cookie", format!("keyward_session={}", b.cookie))
                .header("hx-request", "true"),
            Body::empty(),
        )
        .await;
    let frag = r.body;
    assert!(
        frag.starts_with("<div id=\"keys-table\">") && !frag.contains("<html"),
        "{frag}"
    );
    assert!(frag.contains("of 2"));

    let key = app
        .page(&b, &format!("/keys/{}", urlencode(&arn("k-deleg"))))
        .await;
    assert!(key.contains("alias/payments"));
    assert!(
        key.contains(r#"class="stmt offending" id="stmt-0""#),
        "offending statement marked"
    );
    assert!(key.contains(r#"class="stmt" id="stmt-1""#));
    let rationale = keyward::policy::RuleId::Delegation.info().rationale;
    assert!(key.contains(&rationale.replace('"', "&#34;")) || key.contains(rationale));
    assert!(key.contains("How to fix it"));
    assert!(!key.contains("Propose fix"), "a viewer cannot propose");
    let by_id = app.page(&b, "/keys/k-deleg").await;
    assert!(by_id.contains(&arn("k-deleg")));

    let findings = app.page(&b, "/findings").await;
    assert!(findings.contains("KMS-DELEGATION") && findings.contains("2 finding(s)"));
    assert!(!findings.contains("Waive…"), "a viewer cannot waive");
    let findings = app.page(&b, "/findings?severity=critical").await;
    assert!(findings.contains("1 finding(s)"));

    assert!(
        app.page(&b, "/remediations")
            .await
            .contains("0 remediation(s)")
    );
    assert!(
        app.page(&b, "/sync")
            .await
            .contains("This server does not sync")
    );
    assert!(app.page(&b, "/audit").await.contains("Hash chain verified"));
    let settings = app.page(&b, "/settings").await;
    assert!(settings.contains("prod") && settings.contains(ADMIN));
    assert!(!settings.contains("API tokens"), "tokens are for admins");

    // errors are HTML pages with the right status
    for (path, status) in [
        ("/keys/k-none", StatusCode::NOT_FOUND),
        ("/remediations/999", StatusCode::NOT_FOUND),
        ("/remediations/abc", StatusCode::NOT_FOUND),
        ("/keys?rule=NOPE", StatusCode::BAD_REQUEST),
        ("/keys?offset=-1", StatusCode::BAD_REQUEST),
        ("/keys?sort=colour", StatusCode::BAD_REQUEST),
        ("/findings?status=maybe", StatusCode::BAD_REQUEST),
        ("/no-such-page", StatusCode::NOT_FOUND),
        ("/keys/k-deleg/propose", StatusCode::FORBIDDEN),
    ] {
        let r = app.get(Some(&b), path).await;
        assert_eq!(r.status, status, "{path}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(r.body.contains("error-box"), "{path}");
    }
}

#[tokio::test]
async fn hostile_tags_and_policy_text_render_escaped() {
    let app = start().await;
    let b = app.sign_in("viewer-bot").await;
    for path in [
        format!("/keys/{}", urlencode(&arn("k-deleg"))),
        format!("/keys/{}", urlencode(&arn("k-hostile"))),
        "/keys?q=%3Cscript%3Ealert".to_string(),
    ] {
        let html = app.page(&b, &path).await;
        assert!(!html.contains("<script>alert"), "{path}: {html}");
        assert!(
            html.contains("&#60;script&#62;alert"),
            "{path}: escaped markup shown"
        );
    }
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_or_from_another_site_are_refused() {
    let app = start().await;
    let b = app.sign_in("jira").await;
    let (found, _) = app
        .db
        .store()
        .query_findings(&Default::default(), None, 10)
        .await
        .unwrap();
    let id = found
        .iter()
        .find(|f| f.rule_id == "KMS-DELEGATION")
        .unwrap()
        .id;
    let path = format!("/findings/{id}/waive");
    let expires = (Utc::now() + TimeDelta::days(30)).date_naive().to_string();
    let origin = ORIGIN.to_string();
    for (form, origin, what) in [
        (
            vec![("reason", "r"), ("expires", expires.as_str())],
            Some(origin.as_str()),
            "missing token",
        ),
        (
            vec![
                ("csrf", "0000"),
                ("reason", "r"),
                ("expires", expires.as_str()),
            ],
            Some(origin.as_str()),
            "wrong token",
        ),
        (
            vec![
                ("csrf", b.csrf.as_str()),
                ("reason", "r"),
                ("expires", expires.as_str()),
            ],
            Some("http://evil.example"),
            "foreign origin",
        ),
        (
            vec![
                ("csrf", b.csrf.as_str()),
                ("reason", "r"),
                ("expires", expires.as_str()),
            ],
            None,
            "no origin",
        ),
    ] {
        let r = app.post_raw(Some(&b), &path, &form, origin, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}");
        assert!(r.body.contains("could not be verified"), "{what}");
    }
    let still = app.db.store().get_finding(id).await.unwrap().unwrap();
    assert_eq!(still.status, "open", "nothing was waived");
    // a Referer of this site is enough when Origin is missing; the header token works too
    let referer = format!("{ORIGIN}/findings");
    let r = app
        .post_raw(
            Some(&b),
            &path,
            &[("reason", "accepted"), ("expires", &expires)],
            None,
            &[("referer", &referer), ("x-csrf-token", &b.csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.db
            .store()
            .get_finding(id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "waived"
    );
}

#[tokio::test]
async fn operators_waive_and_revoke_in_place_or_with_a_full_page() {
    let app = start().await;
    let viewer = app.sign_in("viewer-bot").await;
    let op = app.sign_in("jira").await;
    let (found, _) = app
        .db
        .store()
        .query_findings(&Default::default(), None, 10)
        .await
        .unwrap();
    let id = found.iter().find(|f| f.rule_id == "KMS-PUBLIC").unwrap().id;
    let expires = (Utc::now() + TimeDelta::days(30)).date_naive().to_string();
    let form = [
        ("csrf", viewer.csrf.as_str()),
        ("reason", "risk"),
        ("expires", expires.as_str()),
    ];
    let r = app
        .post(&viewer, &format!("/findings/{id}/waive"), &form)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a viewer cannot waive");
    assert!(app.page(&op, "/findings").await.contains("Waive…"));
    // bad input is a 400 page
    let bad = [
        ("csrf", op.csrf.as_str()),
        ("reason", "x"),
        ("expires", "2001-01-01"),
    ];
    assert_eq!(
        app.post(&op, &format!("/findings/{id}/waive"), &bad)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let bad = [
        ("csrf", op.csrf.as_str()),
        ("reason", "x"),
        ("expires", "soon"),
    ];
    assert_eq!(
        app.post(&op, &format!("/findings/{id}/waive"), &bad)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let far = (Utc::now() + TimeDelta::days(800)).date_naive().to_string();
    let bad = [
        ("csrf", op.csrf.as_str()),
        ("reason", "x"),
        ("expires", far.as_str()),
    ];
    assert_eq!(
        app.post(&op, &format!("/findings/{id}/waive"), &bad)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // The overview's cached figures follow waivers at once.
    let overview = app.page(&op, "/").await;
    // htmx: the row comes back
    let form = [
        ("csrf", op.csrf.as_str()),
        ("reason", "accepted <b>risk</b>"),
        ("expires", expires.as_str()),
    ];
    let r = app
        .post_raw(
            Some(&op),
            &format!("/findings/{id}/waive"),
            &form,
            Some(ORIGIN),
            &[("hx-request", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let row = r.body;
    assert!(
        row.starts_with(&format!("<tr id=\"finding-{id}\">")),
        "{row}"
    );
    assert!(
        row.contains("waived") && row.contains("accepted &#60;b&#62;risk&#60;/b&#62;"),
        "{row}"
    );
    assert_ne!(
        app.page(&op, "/").await,
        overview,
        "the waived finding leaves the overview"
    );
    let audit = app.page(&op, "/audit").await;
    assert!(audit.contains("finding.waived"));
    // the plain form revokes and goes back
    let r = app
        .post(
            &op,
            &format!("/findings/{id}/unwaive"),
            &[("csrf", &op.csrf), ("back", "/findings?status=all")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/findings?status=all");
    assert_eq!(
        app.db
            .store()
            .get_finding(id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "open"
    );
    assert_eq!(
        app.page(&op, "/").await,
        overview,
        "and come back when revoked"
    );
}

#[tokio::test]
async fn propose_preview_then_approval_buttons_follow_roles() {
    let app = start().await;
    let op = app.sign_in("jira").await;
    let key = urlencode(&arn("k-deleg"));
    let detail = app.page(&op, &format!("/keys/{key}")).await;
    assert!(detail.contains("Propose fix"));
    let preview = app.page(&op, &format!("/keys/{key}/propose")).await;
    assert!(
        preview.contains("EnableRootAccessAndPreventPermissionDelegation"),
        "{preview}"
    );
    assert!(preview.contains("class=\"add\""), "a diff");
    assert!(preview.contains("KMS-DELEGATION"), "what it resolves");
    assert_eq!(
        app.db.store().list_remediations(None, 10).await.unwrap().1,
        0,
        "a preview stores nothing"
    );
    let r = app
        .post(
            &op,
            &format!("/keys/{key}/propose"),
            &[("csrf", &op.csrf), ("ticket", "SEC-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/remediations/"));
    // the requester (an operator) sees why there is nothing to press
    let own = app.page(&op, &location).await;
    assert!(own.contains(OWN_PENDING), "{own}");
    assert!(!own.contains(">Approve<") && !own.contains(">Reject<"));

    let viewer = app.sign_in("viewer-bot").await;
    let page = app.page(&viewer, &location).await;
    assert!(page.contains("pending_approval") && page.contains("SEC-1"));
    assert!(
        !page.contains(">Approve<") && !page.contains(">Reject<"),
        "a viewer sees no actions"
    );
    assert!(page.contains("remediation.requested"), "audit trail");
    let alice = app.sign_in("alice").await;
    let page = app.page(&alice, &location).await;
    assert!(page.contains(">Approve<") && page.contains(">Reject<"));
    assert!(!page.contains(OWN_PENDING), "alice did not request it");
    // the viewer's POST is refused anyway
    let r = app
        .post(
            &viewer,
            &format!("{location}/approve"),
            &[("csrf", &viewer.csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // htmx approval answers the status block
    let r = app
        .post_raw(
            Some(&alice),
            &format!("{location}/approve"),
            &[("csrf", &alice.csrf), ("comment", "lgtm")],
            Some(ORIGIN),
            &[("hx-request", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let block = r.body;
    assert!(
        block.contains("id=\"remediation-status\"") && block.contains(">approved<"),
        "{block}"
    );
    assert!(
        block.contains("propose-only"),
        "apply is explained, not offered: {block}"
    );
    assert!(!block.contains(">Apply to AWS<"));

    // an approver who requested cannot approve their own, and is told why
    let (own, _) = app
        .remediation
        .propose(
            &Proposal {
                key: arn("k-deleg"),
                ..Proposal::default()
            },
            "bob",
        )
        .await
        .unwrap();
    let bob = app.sign_in("bob").await;
    let page = app.page(&bob, &format!("/remediations/{}", own.id)).await;
    assert!(!page.contains(">Approve<"));
    assert!(page.contains(OWN_PENDING), "{page}");
    let r = app
        .post(
            &bob,
            &format!("/remediations/{}/approve", own.id),
            &[("csrf", &bob.csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // reject needs a comment; with one it works (plain form → 303)
    let r = app
        .post(
            &alice,
            &format!("/remediations/{}/reject", own.id),
            &[("csrf", &alice.csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post(
            &alice,
            &format!("/remediations/{}/reject", own.id),
            &[("csrf", &alice.csrf), ("comment", "not now")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(app.page(&alice, "/remediations").await.contains("rejected"));
}

#[tokio::test]
async fn diff_lines_are_single_spaced_on_every_page_that_shows_one() {
    let app = start().await;
    // a second policy version of k-deleg, so its history has a diff
    let changed = DELEGATING.replace("role/App", "role/Other");
    app.db
        .store()
        .apply_region_sync(&RegionSync {
            account_id: A.into(),
            region: REGION.into(),
            now: Utc::now(),
            listed: vec![arn("k-deleg")],
            listing_complete: false,
            updates: vec![update(
                record("k-deleg", "alias/payments", &[("owner", HOSTILE)]),
                &changed,
                vec![finding("KMS-DELEGATION", "high", 0)],
            )],
            unread: Vec::new(),
        })
        .await
        .unwrap();
    let op = app.sign_in("jira").await;
    let key = urlencode(&arn("k-deleg"));
    let detail = app.page(&op, &format!("/keys/{key}")).await;
    assert!(detail.contains("role/Other"));
    assert_single_spaced(&detail, "key history");
    let preview = app.page(&op, &format!("/keys/{key}/propose")).await;
    assert_single_spaced(&preview, "propose preview");
    let r = app
        .post(&op, &format!("/keys/{key}/propose"), &[("csrf", &op.csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.headers["location"].to_str().unwrap().to_string();
    let page = app.page(&op, &location).await;
    assert_single_spaced(&page, "remediation");
}

#[tokio::test]
async fn proxy_header_signs_in_only_when_configured() {
    // not configured: the header means nothing
    let app = start().await;
    let r = app
        .send(
            app.request("GET", "/").header("x-forwarded-user", "alice"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let mut auth = AuthConfig {
        proxy_header: Some("X-Forwarded-User".into()),
        ..AuthConfig::default()
    };
    auth.proxy_roles.insert("carol".into(), "approver".into());
    let app = start_with(auth.clone()).await;
    let r = app
        .send(
            app.request("GET", "/settings")
                .header("x-forwarded-user", "carol")
                .header("x-forwarded-proto", "https"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = set_cookie(&r, "keyward_session").expect("a session for the CSRF token");
    assert!(
        cookie.contains("Secure"),
        "https behind the proxy: {cookie}"
    );
    let html = r.body;
    assert!(html.contains("carol") && html.contains("approver"));
    let b = Browser {
        cookie: cookie_value(&cookie),
        csrf: csrf_of(&html),
    };
    // the proxy user's forms carry their session's token
    let r = app
        .post_raw(
            Some(&b),
            "/sync",
            &[("csrf", &b.csrf)],
            Some(ORIGIN),
            &[("x-forwarded-user", "carol")],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "past CSRF: this server has no sync"
    );
    // someone else's header does not ride on carol's session
    let r = app
        .send(
            app.request("GET", "/")
                .header("x-forwarded-user", "mallory"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no role for mallory");
    // default_role admits everyone else
    auth.default_role = Some("viewer".into());
    let app = start_with(auth).await;
    let r = app
        .send(
            app.request("GET", "/")
                .header("x-forwarded-user", "mallory"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("viewer"));
}

#[tokio::test]
async fn admins_create_tokens_shown_once_and_revoke_them() {
    let app = start().await;
    let admin = app.sign_in("root-admin").await;
    let op = app.sign_in("jira").await;
    let r = app
        .post(
            &op,
            "/settings/tokens",
            &[("csrf", &op.csrf), ("name", "x"), ("role", "viewer")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            &admin,
            "/settings/tokens",
            &[("csrf", &admin.csrf), ("name", "ci"), ("role", "operator")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.body;
    let marker = "id=\"new-secret\" readonly value=\"";
    let at = html.find(marker).unwrap() + marker.len();
    let secret = html[at..].split('"').next().unwrap().to_string();
    assert!(secret.starts_with("kw_"));
    let again = app.page(&admin, "/settings").await;
    assert!(!again.contains(&secret), "shown only once");
    assert!(again.contains("ci"));
    let token = app
        .db
        .store()
        .authenticate(&token_hash(&secret), Utc::now())
        .await
        .unwrap();
    assert_eq!(token.unwrap().role, "operator");
    let r = app
        .post(
            &admin,
            "/settings/tokens/revoke",
            &[("csrf", &admin.csrf), ("name", "ci")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        app.db
            .store()
            .authenticate(&token_hash(&secret), Utc::now())
            .await
            .unwrap()
            .is_none()
    );
    let r = app
        .post(
            &admin,
            "/settings/tokens",
            &[("csrf", &admin.csrf), ("name", "bad"), ("role", "god")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn assets_are_embedded_with_etags_and_pages_have_a_strict_csp() {
    let app = start().await;
    let r = app.get(None, "/static/keyward.css").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    assert!(
        r.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    assert!(r.body.contains("prefers-color-scheme: dark"));
    let r = app
        .send(
            app.request("GET", "/static/keyward.css")
                .header("if-none-match", &etag),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers["etag"].to_str().unwrap(), etag);
    let r = app.get(None, "/static/htmx.min.js").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(
        app.get(None, "/static/nope.js").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(None, "/static/api-docs.js").await.status,
        StatusCode::OK
    );

    let r = app.get(None, "/login").await;
    let csp = r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = r.body;
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "no CDN"
    );
    let b = app.sign_in("alice").await;
    for path in ["/", "/keys", "/findings", "/settings"] {
        let html = app.page(&b, path).await;
        assert!(
            !html.contains("<script>") && !html.contains(" style="),
            "{path}"
        );
        assert!(html.contains(r#"<script src="/static/htmx.min.js" defer></script>"#));
    }
}
