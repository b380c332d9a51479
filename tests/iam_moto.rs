//! The IAM inventory (`KmsConnector::iam`, GetAccountAuthorizationDetails): identities and
//! policies created with the real aws-sdk-iam client on moto and read back through
//! `SdkConnector`; aws-smithy-mocks for what moto cannot produce (pages, throttling, AccessDenied).

#[path = "support/faults.rs"]
mod faults;
#[path = "support/moto.rs"]
mod moto;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_iam::Client;
use aws_sdk_iam::config::{
    AsyncSleep, BehaviorVersion, Credentials, IdentityCache, Region, Sleep,
    StalledStreamProtectionConfig,
};
use aws_sdk_iam::operation::get_account_authorization_details::GetAccountAuthorizationDetailsOutput;
use aws_sdk_iam::types::{
    AttachedPolicy, EntityType, ManagedPolicyDetail, PolicyDetail, PolicyVersion, RoleDetail,
    UserDetail,
};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use keyward::access::{IamGroup, IamInventory, IamRole, IamUser, InlinePolicy, ManagedPolicy};
use keyward::aws::{AccountAccess, AwsError, IamSource, KmsConnector, SdkConnector};
use keyward::metrics::Metrics;
use moto::Moto;

const ADMINISTRATOR_ACCESS: &str = "arn:aws:iam::aws:policy/AdministratorAccess";

fn connector(moto: &Moto) -> (SdkConnector, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        SdkConnector::new(Some(moto.endpoint().to_string()), metrics.clone()),
        metrics,
    )
}

fn via_role(account: &str) -> AccountAccess {
    AccountAccess {
        account_id: account.to_string(),
        role_arn: Some(Moto::role_arn(account)),
        external_id: None,
    }
}

fn arn(account: &str, kind: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:{kind}/{name}")
}

/// Documents with what percent-encoding must round-trip: spaces, newlines, `+`, `%`, `/`, `:`,
/// `*` and non-ASCII text.
fn kms_document(sid: &str, action: &str) -> String {
    format!(
        "{{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{{\"Sid\": \"{sid}\", \"Effect\": \"Allow\", \"Action\": \"{action}\", \"Resource\": \"arn:aws:kms:*:*:key/*\", \"Condition\": {{\"StringLike\": {{\"aws:userid\": \"AIDA+x:100%/é*\"}}}}}}]\n}}"
    )
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

async fn create_policy(iam: &Client, name: &str, document: &str) -> String {
    let out = iam
        .create_policy()
        .policy_name(name)
        .policy_document(document)
        .send()
        .await
        .expect("CreatePolicy on moto");
    out.policy()
        .and_then(|p| p.arn())
        .expect("policy arn")
        .to_string()
}

async fn create_role(iam: &Client, name: &str) {
    iam.create_role()
        .role_name(name)
        .assume_role_policy_document(TRUST)
        .send()
        .await
        .expect("CreateRole on moto");
}

/// The inventory through the connector, the way the sync reads it.
async fn read_inventory(moto: &Moto, account: &str) -> IamInventory {
    let (connector, _) = connector(moto);
    let iam = connector.iam(&via_role(account)).await.expect("iam source");
    iam.authorization_details().await.expect("inventory")
}

// ---------------------------------------------------------------------------------------------
// Against moto
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn inventory_holds_identities_memberships_and_only_used_policies() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let iam = moto.iam_client_for(&account).await;

    // A customer managed policy with two versions; the second is the default.
    let v1 = kms_document("First", "kms:Describe*");
    let v2 = kms_document("Second", "kms:Decrypt");
    let key_users = create_policy(&iam, "KeyUsers", &v1).await;
    iam.create_policy_version()
        .policy_arn(&key_users)
        .policy_document(&v2)
        .set_as_default(true)
        .send()
        .await
        .expect("CreatePolicyVersion");
    let boundary_doc = kms_document("Boundary", "kms:*");
    let boundary = create_policy(&iam, "KmsBoundary", &boundary_doc).await;
    create_policy(&iam, "Unattached", &kms_document("Nobody", "kms:*")).await;

    let dev_inline = kms_document("DevInline", "kms:Encrypt");
    iam.create_group()
        .group_name("developers")
        .send()
        .await
        .unwrap();
    iam.create_group()
        .group_name("auditors")
        .send()
        .await
        .unwrap();
    iam.put_group_policy()
        .group_name("developers")
        .policy_name("dev-inline")
        .policy_document(&dev_inline)
        .send()
        .await
        .unwrap();
    iam.attach_group_policy()
        .group_name("developers")
        .policy_arn(&key_users)
        .send()
        .await
        .unwrap();

    let alice_inline = kms_document("AliceInline", "kms:GenerateDataKey*");
    for user in ["bob", "alice"] {
        iam.create_user().user_name(user).send().await.unwrap();
    }
    for group in ["developers", "auditors"] {
        iam.add_user_to_group()
            .user_name("alice")
            .group_name(group)
            .send()
            .await
            .unwrap();
    }
    iam.put_user_policy()
        .user_name("alice")
        .policy_name("alice-inline")
        .policy_document(&alice_inline)
        .send()
        .await
        .unwrap();
    iam.attach_user_policy()
        .user_name("alice")
        .policy_arn(ADMINISTRATOR_ACCESS)
        .send()
        .await
        .expect("AdministratorAccess exists: start moto with MOTO_IAM_LOAD_MANAGED_POLICIES=true");

    let app_inline = kms_document("AppInline", "kms:ReEncrypt*");
    create_role(&iam, "app").await;
    create_role(&iam, "admin").await;
    iam.put_role_policy()
        .role_name("app")
        .policy_name("app-inline")
        .policy_document(&app_inline)
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name("app")
        .policy_arn(&key_users)
        .send()
        .await
        .unwrap();
    iam.put_role_permissions_boundary()
        .role_name("app")
        .permissions_boundary(&boundary)
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name("admin")
        .policy_arn(ADMINISTRATOR_ACCESS)
        .send()
        .await
        .unwrap();

    // What moto sends: documents percent-encoded, passed on as they are by aws-sdk-iam.
    let raw = iam
        .get_account_authorization_details()
        .filter(EntityType::User)
        .send()
        .await
        .unwrap();
    let raw_doc = raw
        .user_detail_list()
        .iter()
        .find(|u| u.user_name() == Some("alice"))
        .and_then(|u| u.user_policy_list().first())
        .and_then(|p| p.policy_document())
        .expect("alice's inline policy");
    assert!(
        raw_doc.starts_with("%7B"),
        "moto encodes documents: {raw_doc}"
    );

    let inventory = read_inventory(moto, &account).await;

    let admin = inventory
        .policies
        .iter()
        .find(|p| p.arn == ADMINISTRATOR_ACCESS)
        .expect("AdministratorAccess is attached, so listed")
        .clone();
    let admin_doc: serde_json::Value = serde_json::from_str(&admin.document).expect("JSON");
    assert_eq!(
        admin_doc["Statement"],
        serde_json::json!([{"Effect": "Allow", "Action": "*", "Resource": "*"}]),
        "{}",
        admin.document
    );
    assert_eq!(admin.name, "AdministratorAccess");

    let inline = |name: &str, document: &str| InlinePolicy {
        name: name.to_string(),
        document: document.to_string(),
    };
    let expected = IamInventory {
        account_id: account.clone(),
        users: vec![
            IamUser {
                arn: arn(&account, "user", "alice"),
                name: "alice".into(),
                groups: vec!["auditors".into(), "developers".into()],
                inline_policies: vec![inline("alice-inline", &alice_inline)],
                attached_policies: vec![ADMINISTRATOR_ACCESS.into()],
                permissions_boundary: None,
            },
            IamUser {
                arn: arn(&account, "user", "bob"),
                name: "bob".into(),
                ..Default::default()
            },
        ],
        groups: vec![
            IamGroup {
                arn: arn(&account, "group", "auditors"),
                name: "auditors".into(),
                ..Default::default()
            },
            IamGroup {
                arn: arn(&account, "group", "developers"),
                name: "developers".into(),
                inline_policies: vec![inline("dev-inline", &dev_inline)],
                attached_policies: vec![key_users.clone()],
            },
        ],
        roles: vec![
            IamRole {
                arn: arn(&account, "role", "admin"),
                name: "admin".into(),
                attached_policies: vec![ADMINISTRATOR_ACCESS.into()],
                ..Default::default()
            },
            IamRole {
                arn: arn(&account, "role", "app"),
                name: "app".into(),
                inline_policies: vec![inline("app-inline", &app_inline)],
                attached_policies: vec![key_users.clone()],
                permissions_boundary: Some(boundary.clone()),
            },
        ],
        // Sorted by ARN (bytes): account ids are digits, so they sort before `aws`.
        policies: vec![
            ManagedPolicy {
                arn: key_users.clone(),
                name: "KeyUsers".into(),
                default_version_id: "v2".into(),
                document: v2,
            },
            ManagedPolicy {
                arn: boundary.clone(),
                name: "KmsBoundary".into(),
                default_version_id: "v1".into(),
                document: boundary_doc,
            },
            admin,
        ],
    };
    assert_eq!(inventory, expected);

    // Deterministic: a second read serializes to the same bytes (the store hashes them).
    let again = read_inventory(moto, &account).await;
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&inventory).unwrap()
    );
}

#[tokio::test]
async fn accounts_do_not_see_each_other() {
    let moto = Moto::start();
    let (a, b) = (moto.fresh_account(), moto.fresh_account());
    moto.iam_client_for(&a)
        .await
        .create_user()
        .user_name("only-in-a")
        .send()
        .await
        .unwrap();
    let inv_a = read_inventory(moto, &a).await;
    let inv_b = read_inventory(moto, &b).await;
    assert_eq!(inv_a.account_id, a);
    assert_eq!(
        inv_a
            .users
            .iter()
            .map(|u| u.arn.as_str())
            .collect::<Vec<_>>(),
        [arn(&a, "user", "only-in-a")]
    );
    assert_eq!(inv_b.account_id, b);
    assert!(inv_b.users.is_empty(), "{:?}", inv_b.users);
    // Unattached AWS managed policies (moto loads ~1,300) are never kept.
    assert!(inv_a.policies.is_empty() && inv_b.policies.is_empty());
}

#[tokio::test]
async fn a_large_account_is_read_completely() {
    // moto answers in one page whatever MaxItems says (IsTruncated is always false); real IAM
    // pages are covered against mocks below. This checks the request moto gets is accepted and
    // nothing is cut at IAM's default page size of 100.
    let moto = Moto::start();
    let account = moto.fresh_account();
    let iam = moto.iam_client_for(&account).await;
    let names: Vec<String> = (0..130).map(|i| format!("role-{i:03}")).collect();
    for name in &names {
        create_role(&iam, name).await;
    }
    let inventory = read_inventory(moto, &account).await;
    assert_eq!(
        inventory
            .roles
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>(),
        names
    );
}

#[tokio::test]
async fn injected_iam_failures_are_typed_errors() {
    let moto = Moto::start();
    let (denied, throttled, fine) = (
        moto.fresh_account(),
        moto.fresh_account(),
        moto.fresh_account(),
    );
    let (real, _) = connector(moto);
    let (connector, faults) = faults::FaultyConnector::new(Arc::new(real));
    {
        let mut f = faults.lock().unwrap();
        f.denied_iam.insert(denied.clone());
        f.failing_iam.insert(throttled.clone());
    }
    let read = |account: String| {
        let connector = connector.clone();
        async move {
            let iam = connector.iam(&via_role(&account)).await?;
            iam.authorization_details().await
        }
    };
    match read(denied).await {
        Err(AwsError::AccessDenied { operation, .. }) => {
            assert_eq!(operation, "GetAccountAuthorizationDetails")
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    match read(throttled).await {
        Err(AwsError::Service { code, .. }) => assert_eq!(code, "ThrottlingException"),
        other => panic!("expected a throttling error, got {other:?}"),
    }
    let inventory = read(fine.clone()).await.expect("other accounts still read");
    assert_eq!(inventory.account_id, fine);
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    // Through the same `Once` as every other test here (it sets environment variables), though
    // this test never talks to moto.
    Moto::start();
    // A port nothing listens on: bound and released at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let connector = SdkConnector::new(
        Some(format!("http://127.0.0.1:{port}")),
        Arc::new(Metrics::new()),
    );
    // The account's credentials are verified before IAM is read, so that is where it fails.
    match connector.iam(&via_role("111122223333")).await {
        Err(AwsError::Transport { operation, .. }) => assert_eq!(operation, "GetCallerIdentity"),
        Err(other) => panic!("expected Transport, got {other:?}"),
        Ok(_) => panic!("expected Transport, got an IAM source"),
    }
}

// ---------------------------------------------------------------------------------------------
// Against aws-smithy-mocks: what moto cannot do
// ---------------------------------------------------------------------------------------------

/// Records the SDK's retry backoffs and skips them; long sleeps (the timeouts) stay real.
#[derive(Debug, Clone, Default)]
struct RecordingSleep(Arc<Mutex<Vec<Duration>>>);

impl RecordingSleep {
    fn backoffs(&self) -> Vec<Duration> {
        self.0.lock().unwrap().clone()
    }
}

impl AsyncSleep for RecordingSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        // Keyward's shortest timeout is 30 s and its backoff is capped at 20 s.
        if duration >= Duration::from_secs(25) {
            return Sleep::new(tokio::time::sleep(duration));
        }
        self.0.lock().unwrap().push(duration);
        Sleep::new(std::future::ready(()))
    }
}

struct Mocked {
    source: Arc<dyn IamSource>,
    metrics: Arc<Metrics>,
    sleep: RecordingSleep,
}

const MOCK_ACCOUNT: &str = "111122223333";

fn mocked(rules: &[&Rule]) -> Mocked {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let sleep = RecordingSleep::default();
    let client = Client::from_conf(
        aws_sdk_iam::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .identity_cache(IdentityCache::no_cache())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .sleep_impl(sleep.clone())
            .build(),
    );
    let metrics = Arc::new(Metrics::new());
    Mocked {
        source: SdkConnector::iam_from_client(client, MOCK_ACCOUNT, metrics.clone()),
        metrics,
        sleep,
    }
}

/// IAM speaks the AWS query protocol: errors are XML.
fn error_body(code: &str) -> Option<String> {
    Some(format!(
        r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{code} from the mock</Message></Error><RequestId>r1</RequestId></ErrorResponse>"#
    ))
}

fn policy_detail(arn: &str, name: &str, document: &str) -> ManagedPolicyDetail {
    ManagedPolicyDetail::builder()
        .arn(arn)
        .policy_name(name)
        .default_version_id("v3")
        .policy_version_list(
            PolicyVersion::builder()
                .version_id("v3")
                .is_default_version(true)
                .document(document)
                .build(),
        )
        .build()
}

#[tokio::test]
async fn pages_are_followed_until_the_listing_is_complete() {
    const USED: &str = "arn:aws:iam::111122223333:policy/Used";
    let first = mock!(Client::get_account_authorization_details)
        .match_requests(|req| {
            req.marker().is_none()
                && req.max_items() == Some(1000)
                && req.filter().len() == 5
                && req.filter().contains(&EntityType::AwsManagedPolicy)
                && req.filter().contains(&EntityType::LocalManagedPolicy)
        })
        .then_output(|| {
            GetAccountAuthorizationDetailsOutput::builder()
                .user_detail_list(
                    UserDetail::builder()
                        .arn("arn:aws:iam::111122223333:user/u")
                        .user_name("u")
                        .attached_managed_policies(
                            AttachedPolicy::builder().policy_arn(USED).build(),
                        )
                        .build(),
                )
                .role_detail_list(
                    RoleDetail::builder()
                        .arn("arn:aws:iam::111122223333:role/z")
                        .role_name("z")
                        .build(),
                )
                .is_truncated(true)
                .marker("page-2")
                .build()
        });
    let second = mock!(Client::get_account_authorization_details)
        .match_requests(|req| req.marker() == Some("page-2"))
        .then_output(|| {
            GetAccountAuthorizationDetailsOutput::builder()
                .role_detail_list(
                    RoleDetail::builder()
                        .arn("arn:aws:iam::111122223333:role/a")
                        .role_name("a")
                        .role_policy_list(
                            PolicyDetail::builder()
                                .policy_name("inline")
                                .policy_document("%7B%22Version%22%3A%222012-10-17%22%7D")
                                .build(),
                        )
                        .build(),
                )
                // The policy attached on page 1 is described on page 2.
                .policies(policy_detail(USED, "Used", "%7B%7D"))
                .policies(policy_detail(
                    "arn:aws:iam::aws:policy/Unused",
                    "Unused",
                    "%7B%7D",
                ))
                .is_truncated(false)
                .build()
        });
    let m = mocked(&[&first, &second]);
    let inventory = m.source.authorization_details().await.expect("inventory");
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    assert_eq!(inventory.account_id, MOCK_ACCOUNT);
    assert_eq!(
        inventory
            .roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "z"]
    );
    assert_eq!(
        inventory.roles[0].inline_policies,
        [InlinePolicy {
            name: "inline".into(),
            document: r#"{"Version":"2012-10-17"}"#.into()
        }]
    );
    assert_eq!(
        inventory.policies,
        [ManagedPolicy {
            arn: USED.into(),
            name: "Used".into(),
            default_version_id: "v3".into(),
            document: "{}".into()
        }]
    );
    assert!(
        m.metrics
            .render()
            .contains(r#"keyward_aws_calls_total{operation="GetAccountAuthorizationDetails"} 2"#)
    );
}

#[tokio::test]
async fn a_truncated_page_without_a_marker_is_an_error_not_a_short_inventory() {
    let page = mock!(Client::get_account_authorization_details).then_output(|| {
        GetAccountAuthorizationDetailsOutput::builder()
            .is_truncated(true)
            .build()
    });
    let m = mocked(&[&page]);
    match m.source.authorization_details().await {
        Err(AwsError::Service {
            operation, code, ..
        }) => {
            assert_eq!(operation, "GetAccountAuthorizationDetails");
            assert_eq!(code, "IncompleteResponse");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn throttling_is_retried_with_backoff() {
    let rule = mock!(Client::get_account_authorization_details)
        .sequence()
        .http_status(400, error_body("Throttling"))
        .times(2)
        .output(|| {
            GetAccountAuthorizationDetailsOutput::builder()
                .is_truncated(false)
                .build()
        })
        .build();
    let m = mocked(&[&rule]);
    let inventory = m.source.authorization_details().await.expect("succeeds");
    assert_eq!(inventory.account_id, MOCK_ACCOUNT);
    assert_eq!(rule.num_calls(), 3, "two throttled attempts, then success");
    assert_eq!(m.sleep.backoffs().len(), 2);
}

#[tokio::test]
async fn access_denied_is_classified_and_not_retried() {
    let rule = mock!(Client::get_account_authorization_details)
        .sequence()
        .http_status(403, error_body("AccessDenied"))
        .repeatedly()
        .build();
    let m = mocked(&[&rule]);
    match m.source.authorization_details().await {
        Err(AwsError::AccessDenied { operation, message }) => {
            assert_eq!(operation, "GetAccountAuthorizationDetails");
            assert!(message.contains("from the mock"), "{message}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    assert_eq!(rule.num_calls(), 1);
    assert!(m.sleep.backoffs().is_empty());
    assert!(m.metrics.render().contains(
        r#"keyward_aws_errors_total{operation="GetAccountAuthorizationDetails",kind="access_denied"} 1"#
    ));
}
