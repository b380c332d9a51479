//! The dashboard's access views through the router (`oneshot`) on a real SQLite file: a key's
//! Access tab, the principal page, and the impact block approvers read on a remediation.

#[path = "support/db.rs"]
mod db;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeDelta, Utc};
use keyward::access::{IamInventory, IamRole, InlinePolicy};
use keyward::aws::{AccountAccess, AwsError, KeyMetadata, KmsConnector, KmsSource, KmsWriter};
use keyward::clock::Clock;
use keyward::config::{AccountConfig, AuthConfig, RemediationConfig};
use keyward::metrics::Metrics;
use keyward::remediation::{KmsWriters, RemediationService};
use keyward::store::{
    KeyRecord, KeyUpdate, NewAuditEvent, NewRemediation, PolicyState, RegionSync, Store,
};
use keyward::web::dashboard::DashboardSettings;
use keyward::web::{AppState, build_app_with};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

const A: &str = "111122223333";
const B: &str = "444455556666";
const REGION: &str = "us-east-1";
const HOSTILE: &str = "<script>alert(1)</script>";
const APP_ROLE: &str = "arn:aws:iam::111122223333:role/App";

fn delegating(account: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
    )
}

fn key_arn(account: &str, id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{account}:key/{id}")
}

fn record(account: &str, id: &str) -> KeyRecord {
    KeyRecord {
        arn: key_arn(account, id),
        account_id: account.into(),
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

fn update(key: KeyRecord, policy: PolicyState) -> KeyUpdate {
    KeyUpdate {
        fingerprint: format!("fp-{}-{policy:?}", key.key_id),
        policy,
        evaluation: "rules-v1;trusted=".into(),
        findings: vec![],
        remediable: true,
        key,
    }
}

fn readable(text: &str) -> PolicyState {
    PolicyState::Readable {
        sha256: keyward::sync::sha256_hex(text),
        text: text.into(),
    }
}

async fn sync(store: &dyn Store, account: &str, updates: Vec<KeyUpdate>) {
    store
        .apply_region_sync(&RegionSync {
            account_id: account.into(),
            region: REGION.into(),
            now: Utc::now() - TimeDelta::minutes(5),
            listed: updates.iter().map(|u| u.key.arn.clone()).collect(),
            listing_complete: false,
            updates,
            unread: Vec::new(),
        })
        .await
        .expect("seed keys");
}

fn role(name: &str, policy: &str, document: &str) -> IamRole {
    IamRole {
        arn: format!("arn:aws:iam::{A}:role/{name}"),
        name: name.into(),
        inline_policies: vec![InlinePolicy {
            name: policy.into(),
            document: document.into(),
        }],
        attached_policies: vec![],
        permissions_boundary: None,
    }
}

/// Account A: `k-deleg` delegates to IAM, whose inventory has role `App` (inline policy
/// `decrypt-all`: kms:Decrypt on `*`) and a role and policy with markup in their names;
/// `k-unread` has no readable policy. Account B: `k-noinv` delegates, with no IAM inventory.
async fn seed(store: &dyn Store) {
    sync(
        store,
        A,
        vec![
            update(record(A, "k-deleg"), readable(&delegating(A))),
            update(
                record(A, "k-unread"),
                PolicyState::Unreadable {
                    reason: "AccessDeniedException".into(),
                },
            ),
        ],
    )
    .await;
    sync(
        store,
        B,
        vec![update(record(B, "k-noinv"), readable(&delegating(B)))],
    )
    .await;
    let decrypt_all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#;
    let inventory = IamInventory {
        account_id: A.into(),
        users: vec![],
        groups: vec![],
        roles: vec![
            role("App", "decrypt-all", decrypt_all),
            role(HOSTILE, HOSTILE, decrypt_all),
        ],
        policies: vec![],
    };
    let json = serde_json::to_string(&inventory).unwrap();
    store
        .save_iam_inventory(A, &keyward::sync::sha256_hex(&json), &json, Utc::now())
        .await
        .expect("save the inventory");
}

/// KMS that is never called: the remediation service only has to exist for the approve form.
#[derive(Clone)]
struct NoKms;

#[async_trait]
impl KmsSource for NoKms {
    async fn list_keys(&self) -> Result<Vec<keyward::aws::KeyRef>, AwsError> {
        Ok(vec![])
    }
    async fn list_aliases(&self) -> Result<Vec<keyward::aws::Alias>, AwsError> {
        Ok(vec![])
    }
    async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, AwsError> {
        Err(AwsError::NotFound {
            operation: "DescribeKey",
            message: key_id.into(),
        })
    }
    async fn get_key_policy(&self, key_id: &str) -> Result<String, AwsError> {
        Err(AwsError::NotFound {
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
impl KmsWriter for NoKms {
    async fn put_key_policy(&self, _: &str, _: &str) -> Result<(), AwsError> {
        Ok(())
    }
}

#[async_trait]
impl KmsWriters for NoKms {
    async fn writer(&self, _: &AccountAccess, _: &str) -> Result<Arc<dyn KmsWriter>, AwsError> {
        Ok(Arc::new(self.clone()))
    }
}

#[async_trait]
impl KmsConnector for NoKms {
    async fn source(&self, _: &AccountAccess, _: &str) -> Result<Arc<dyn KmsSource>, AwsError> {
        Ok(Arc::new(self.clone()))
    }
    async fn iam(&self, _: &AccountAccess) -> Result<Arc<dyn keyward::aws::IamSource>, AwsError> {
        Err(AwsError::AccessDenied {
            operation: "GetAccountAuthorizationDetails",
            message: "no IAM here".into(),
        })
    }
    async fn caller_arn(&self, _: &AccountAccess, _: &str) -> Result<String, AwsError> {
        Ok(format!("arn:aws:sts::{A}:assumed-role/Keyward/session"))
    }
    async fn default_account(&self) -> Result<(String, String), AwsError> {
        Ok((A.into(), REGION.into()))
    }
}

struct App {
    router: Router,
    db: db::TestDb,
}

async fn app() -> App {
    let db = db::sqlite().await;
    seed(db.store()).await;
    let clock: Arc<dyn Clock> = db.clock();
    let account = AccountConfig {
        id: A.into(),
        regions: vec![REGION.into()],
        ..AccountConfig::default()
    };
    let remediation = Arc::new(RemediationService {
        store: db.shared(),
        connector: Arc::new(NoKms),
        writers: Arc::new(NoKms),
        clock: clock.clone(),
        config: RemediationConfig::default(),
        accounts: vec![account.clone()],
        after_apply: None,
    });
    // Signed in through a trusted proxy's header: no sign-in round trip per test.
    let auth = AuthConfig {
        proxy_header: Some("X-Forwarded-User".into()),
        proxy_roles: [("alice".to_string(), "approver".to_string())].into(),
        default_role: Some("viewer".into()),
        ..AuthConfig::default()
    };
    let router = build_app_with(
        AppState {
            store: db.shared(),
            metrics: Arc::new(Metrics::new()),
            clock,
            sync: None,
            remediation: Some(remediation),
            metrics_public: true,
        },
        DashboardSettings {
            auth,
            accounts: vec![account],
            remediation: RemediationConfig::default(),
        },
    );
    App { router, db }
}

fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl App {
    async fn get_as(&self, user: &str, path: &str) -> (StatusCode, String, Option<String>) {
        let response = self
            .router
            .clone()
            .oneshot(
                Request::get(path)
                    .header("accept", "text/html")
                    .header("x-forwarded-user", user)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), location)
    }

    async fn page(&self, path: &str) -> String {
        let (status, body, _) = self.get_as("viewer-vic", path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn remediation(&self, impact: Option<serde_json::Value>) -> i64 {
        let now = Utc::now();
        let base = delegating(A);
        let (row, _) = self
            .db
            .store()
            .create_remediation(
                &NewRemediation {
                    key_arn: key_arn(A, "k-deleg"),
                    account_id: A.into(),
                    region: REGION.into(),
                    requester: "jira".into(),
                    ticket: None,
                    comment: None,
                    base_sha256: keyward::sync::sha256_hex(&base),
                    base_policy: base,
                    proposed_policy: "{}".into(),
                    proposed_sha256: keyward::sync::sha256_hex("{}"),
                    diff: r#"{"changes":["removes the delegation"]}"#.into(),
                    resolves: vec!["KMS-DELEGATION".into()],
                    remaining: vec![],
                    created_at: now,
                    expires_at: now + TimeDelta::days(7),
                    rollback_of: None,
                    impact: impact.map(|i| i.to_string()),
                    idempotency_key: None,
                },
                &NewAuditEvent {
                    at: now,
                    actor: "jira".into(),
                    action: "remediation.requested".into(),
                    target: key_arn(A, "k-deleg"),
                    detail: "{}".into(),
                },
            )
            .await
            .expect("create the remediation");
        row.id
    }
}

fn access_path(account: &str, id: &str) -> String {
    format!("/keys/{}/access", enc(&key_arn(account, id)))
}

/// The `<tr>` of the table row that mentions `needle`.
fn row_with<'a>(html: &'a str, needle: &str) -> &'a str {
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in {html}"));
    let start = html[..at].rfind("<tr>").expect("a row");
    let end = at + html[at..].find("</tr>").expect("a row end");
    &html[start..end]
}

#[tokio::test]
async fn the_access_tab_lists_iam_roles_with_their_policies_as_the_reason() {
    let app = app().await;
    let html = app.page(&access_path(A, "k-deleg")).await;
    let app_row = row_with(&html, &format!("{}\"", enc(APP_ROLE)));
    assert!(app_row.contains("<code>kms:Decrypt</code>"), "{app_row}");
    assert!(app_row.contains("cryptographic"), "{app_row}");
    assert!(
        app_row.contains("inline policy “decrypt-all” of App via the role, statement 0"),
        "{app_row}"
    );
    assert!(
        app_row.contains("Delegation to IAM: key policy statement 0 “Enable IAM User Permissions”"),
        "{app_row}"
    );
    assert!(!app_row.contains("kms:Encrypt"), "{app_row}");
    assert!(app_row.contains(&format!("href=\"/principals/{}\"", enc(APP_ROLE))));
    // The account's root, through the key policy, with every group.
    let root = row_with(&html, "<code>arn:aws:iam::111122223333:root</code>");
    assert!(root.contains("<strong>admin</strong>") && root.contains("kms:ScheduleKeyDeletion"));
    // Delegation, inventory freshness and the scope are on the page.
    assert!(html.contains("delegates</span>"));
    assert!(html.contains("statement 0 “Enable IAM User Permissions”."));
    assert!(html.contains("Inventory read</dt><dd>20"), "{html}");
    assert!(!html.contains("identities-unknown"));
    assert!(html.contains("Service control policies"));
    assert!(html.contains("SCPs) are out of scope"));
    // The key page links to the tab.
    let key = app
        .page(&format!("/keys/{}", enc(&key_arn(A, "k-deleg"))))
        .await;
    assert!(key.contains("/access\">Access"), "{key}");
}

#[tokio::test]
async fn filters_narrow_the_table_and_bad_ones_are_refused() {
    let app = app().await;
    let base = access_path(A, "k-deleg");
    let admin = app.page(&format!("{base}?group=admin")).await;
    assert!(admin.contains("<code>arn:aws:iam::111122223333:root</code>"));
    assert!(
        !admin.contains(&format!("<code>{APP_ROLE}</code>")),
        "{admin}"
    );
    assert!(!admin.contains("kms:Decrypt"));
    assert!(admin.contains(r#"<option value="admin" selected>"#));

    let roles = app.page(&format!("{base}?principal_type=role")).await;
    assert!(roles.contains(&format!("<code>{APP_ROLE}</code>")));
    assert!(!roles.contains("<code>arn:aws:iam::111122223333:root</code>"));
    assert!(roles.contains(r#"<option value="role" selected>"#));
    assert!(roles.contains("Clear filters"));

    let both = app
        .page(&format!("{base}?group=grant&principal_type=role"))
        .await;
    assert!(
        both.contains("No principal matches these filters."),
        "{both}"
    );

    let (status, body, _) = app
        .get_as("viewer-vic", &format!("{base}?group=everything"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("group must be one of admin, cryptographic, grant, read"));
}

#[tokio::test]
async fn hostile_role_and_policy_names_render_escaped() {
    let app = app().await;
    for path in [
        access_path(A, "k-deleg"),
        format!(
            "/principals/{}",
            enc(&format!("arn:aws:iam::{A}:role/{HOSTILE}"))
        ),
    ] {
        let html = app.page(&path).await;
        assert!(!html.contains(HOSTILE), "{path}: {html}");
        // askama writes `<` as `&#60;` (or `&lt;`): the text is there, inert.
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {html}"
        );
    }
}

#[tokio::test]
async fn unknown_keys_are_a_404_page_and_unread_policies_a_message() {
    let app = app().await;
    let (status, body, _) = app.get_as("viewer-vic", "/keys/k-nope/access").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("There is no key"), "{body}");
    assert!(body.starts_with("<!doctype html>"));

    let html = app.page(&access_path(A, "k-unread")).await;
    assert!(html.contains("id=\"access-unavailable\""), "{html}");
    assert!(html.contains("could not be read") && html.contains("AccessDeniedException"));
    assert!(html.contains("SCPs) are out of scope"));
}

#[tokio::test]
async fn the_principal_page_lists_the_keys_a_role_and_its_sessions_can_use() {
    let app = app().await;
    let html = app.page(&format!("/principals/{}", enc(APP_ROLE))).await;
    let row = row_with(&html, &key_arn(A, "k-deleg"));
    assert!(row.contains("<code>kms:Decrypt</code>"), "{row}");
    assert!(row.contains("inline policy “decrypt-all” of App"));
    assert!(row.contains(&format!(
        "href=\"/keys/{}/access\"",
        enc(&key_arn(A, "k-deleg"))
    )));
    assert!(
        !html.contains(&key_arn(B, "k-noinv")),
        "B's key delegates to B only"
    );
    assert!(html.contains("SCPs) are out of scope"));
    assert!(
        html.contains(&format!("<td>{B}</td>")),
        "inventory per account"
    );
    assert!(html.contains("never: IAM identities are unknown"));

    let session = format!("arn:aws:sts::{A}:assumed-role/App/build-42");
    let html = app.page(&format!("/principals/{}", enc(&session))).await;
    assert!(html.contains("id=\"evaluated-as\""), "{html}");
    assert!(html.contains(&key_arn(A, "k-deleg")));

    // Only keys of one account.
    let html = app
        .page(&format!("/principals/{}?account={B}", enc(APP_ROLE)))
        .await;
    assert!(!html.contains(&key_arn(A, "k-deleg")));
    assert!(html.contains("can use no key"));

    // The lookup form goes to the principal's page.
    let (status, _, location) = app
        .get_as("viewer-vic", &format!("/principals?arn={}", enc(APP_ROLE)))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.unwrap(), format!("/principals/{}", enc(APP_ROLE)));
    let form = app.page("/principals").await;
    assert!(form.contains("Look up a principal"));
    let access = app.page(&access_path(A, "k-deleg")).await;
    assert!(access.contains(r#"action="/principals""#));
}

#[tokio::test]
async fn without_an_inventory_identities_are_unknown() {
    let app = app().await;
    let html = app.page(&access_path(B, "k-noinv")).await;
    assert!(html.contains("id=\"identities-unknown\""), "{html}");
    assert!(html.contains("IAM identities are unknown"));
    assert!(html.contains("Inventory read</dt><dd>never"));

    // A failed read is shown with the previous inventory kept.
    app.db
        .store()
        .record_iam_error(
            A,
            "AccessDenied: iam:GetAccountAuthorizationDetails",
            Utc::now(),
        )
        .await
        .unwrap();
    let html = app.page(&access_path(A, "k-deleg")).await;
    assert!(html.contains("Last read failed"));
    assert!(html.contains("AccessDenied: iam:GetAccountAuthorizationDetails"));
    assert!(html.contains(&format!("<code>{APP_ROLE}</code>")));
}

#[tokio::test]
async fn approvers_see_who_loses_keeps_and_gains_and_acknowledge_lost_decryption() {
    let app = app().await;
    let losing = app
        .remediation(Some(serde_json::json!({
            "lose": [
                {"principal": APP_ROLE, "principal_type": "role",
                 "actions": {"cryptographic": ["kms:Decrypt"]}},
                {"principal": format!("arn:aws:iam::{A}:user/{HOSTILE}"), "principal_type": "user",
                 "actions": {"cryptographic": ["kms:Encrypt"], "read": ["kms:DescribeKey"]}}
            ],
            "keep": [{"principal": format!("arn:aws:iam::{A}:root"), "principal_type": "account"}],
            "gain": [{"principal": format!("arn:aws:iam::{A}:role/KMSAdmin"), "principal_type": "role",
                      "actions": {"admin": ["kms:PutKeyPolicy"]}}],
            "loses_cryptographic": [APP_ROLE, format!("arn:aws:iam::{A}:user/{HOSTILE}")]
        })))
        .await;
    let (status, html, _) = app
        .get_as("alice", &format!("/remediations/{losing}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(!html.contains(HOSTILE));
    let lose = &html[html.find("Who loses access (2)").expect(&html)..];
    assert!(lose.contains(&format!("<code>{APP_ROLE}</code>")));
    assert!(lose.contains("<strong>cryptographic</strong>: kms:Decrypt"));
    assert!(html.contains("Who keeps it (1)"));
    assert!(html.contains("<code>arn:aws:iam::111122223333:root</code>"));
    assert!(html.contains("Who gains it (1)"));
    assert!(html.contains("<strong>admin</strong>: kms:PutKeyPolicy"));
    let checkbox = &html[html.find("name=\"acknowledge_access_loss\"").expect(&html)..];
    assert!(checkbox.starts_with("name=\"acknowledge_access_loss\" value=\"true\" required"));
    assert!(checkbox.contains("2 principals lose cryptographic access"));
    assert!(html.contains("action=\"/remediations/"));

    // Losing only non-cryptographic access needs no acknowledgement.
    let mild = app
        .remediation(Some(serde_json::json!({
            "lose": [{"principal": APP_ROLE, "principal_type": "role",
                      "actions": {"read": ["kms:DescribeKey"]}}],
            "keep": [], "gain": [], "loses_cryptographic": []
        })))
        .await;
    let (_, html, _) = app.get_as("alice", &format!("/remediations/{mild}")).await;
    assert!(html.contains("Who loses access (1)"), "{html}");
    assert!(html.contains("Nobody gains access."));
    assert!(html.contains("/approve\""), "the approve form is there");
    assert!(!html.contains("acknowledge_access_loss"));

    // Without an inventory the impact is unknown.
    let unknown = app.remediation(None).await;
    let (_, html, _) = app
        .get_as("alice", &format!("/remediations/{unknown}"))
        .await;
    assert!(
        html.contains("Impact unknown: the account&#39;s IAM inventory has not been read")
            || html.contains("Impact unknown: the account&#x27;s IAM inventory has not been read"),
        "{html}"
    );
    assert!(!html.contains("acknowledge_access_loss"));
}
