//! The aws-sdk-kms implementation of `KmsSource`/`KmsWriter`/`KmsConnector`: against moto for
//! real AWS wire behaviour (accounts, regions, every read, the write), and against
//! aws-smithy-mocks for what moto cannot produce (paging, throttling, 5xx, AccessDenied).

#[path = "support/moto.rs"]
mod moto;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::{
    AsyncSleep, BehaviorVersion, Credentials, IdentityCache, Region, Sleep,
    StalledStreamProtectionConfig,
};
use aws_sdk_kms::operation::list_aliases::ListAliasesOutput;
use aws_sdk_kms::operation::list_keys::ListKeysOutput;
use aws_sdk_kms::types::{AliasListEntry, GrantOperation, KeyListEntry, Tag};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};
use chrono::Utc;
use keyward::aws::{AccountAccess, AwsError, KmsConnector, KmsSource, SdkConnector};
use keyward::metrics::Metrics;
use moto::{Moto, default_policy, seed_key};

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
        external_id: Some("keyward-test".to_string()),
    }
}

fn key_ids(keys: &[keyward::aws::KeyRef]) -> Vec<String> {
    let mut ids: Vec<String> = keys.iter().map(|k| k.key_id.clone()).collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// Against moto
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_account_is_the_default_credentials_account_and_region() {
    let moto = Moto::start();
    let (connector, _) = connector(moto);
    let (account, region) = connector.default_account().await.expect("default account");
    assert_eq!(account, moto::DEFAULT_ACCOUNT);
    assert_eq!(region, "us-east-1");
}

#[tokio::test]
async fn accounts_are_isolated_through_assume_role() {
    let moto = Moto::start();
    let (a, b) = (moto.fresh_account(), moto.fresh_account());
    let key_a = seed_key(
        &moto.kms_client_for(&a, "us-east-1").await,
        &default_policy(&a),
        "a",
    )
    .await;
    let key_b = seed_key(
        &moto.kms_client_for(&b, "us-east-1").await,
        &default_policy(&b),
        "b",
    )
    .await;

    let (connector, _) = connector(moto);
    let in_a = connector
        .source(&via_role(&a), "us-east-1")
        .await
        .expect("source a");
    let in_b = connector
        .source(&via_role(&b), "us-east-1")
        .await
        .expect("source b");

    let keys_a = in_a.list_keys().await.expect("list a");
    assert_eq!(key_ids(&keys_a), vec![key_a.key_id.clone()]);
    assert_eq!(keys_a[0].arn, key_a.arn);
    assert!(key_a.arn.contains(&format!(":{a}:key/")), "{}", key_a.arn);
    assert_eq!(
        key_ids(&in_b.list_keys().await.expect("list b")),
        vec![key_b.key_id.clone()]
    );
    assert_eq!(
        in_a.describe_key(&key_a.key_id)
            .await
            .expect("describe")
            .account_id,
        a
    );
    // A key of another account is not visible by id either.
    assert!(matches!(
        in_b.describe_key(&key_a.key_id).await,
        Err(AwsError::NotFound { .. })
    ));
}

#[tokio::test]
async fn regions_are_listed_separately() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let policy = default_policy(&account);
    let east = seed_key(
        &moto.kms_client_for(&account, "us-east-1").await,
        &policy,
        "east",
    )
    .await;
    let west = seed_key(
        &moto.kms_client_for(&account, "eu-west-1").await,
        &policy,
        "west",
    )
    .await;

    let (connector, metrics) = connector(moto);
    let access = via_role(&account);
    let us = connector
        .source(&access, "us-east-1")
        .await
        .expect("us source");
    let eu = connector
        .source(&access, "eu-west-1")
        .await
        .expect("eu source");
    assert_eq!(
        key_ids(&us.list_keys().await.expect("us")),
        vec![east.key_id]
    );
    assert_eq!(
        key_ids(&eu.list_keys().await.expect("eu")),
        vec![west.key_id.clone()]
    );
    assert!(
        west.arn.starts_with("arn:aws:kms:eu-west-1:"),
        "{}",
        west.arn
    );

    // The account was verified once; both regions and a repeat reuse that.
    connector
        .source(&access, "eu-west-1")
        .await
        .expect("cached source");
    let text = metrics.render();
    assert!(
        text.contains(r#"keyward_aws_calls_total{operation="GetCallerIdentity"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn reads_everything_keyward_needs_about_a_key() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    // Odd spacing and key order: the text must come back exactly as stored.
    let policy = format!(
        "{{\n  \"Version\" : \"2012-10-17\",\n  \"Statement\" : [ {{\n    \"Sid\" : \"Root\",\n    \"Principal\" : {{ \"AWS\" : \"arn:aws:iam::{account}:root\" }},\n    \"Effect\" : \"Allow\",\n    \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  }} ]\n}}"
    );
    let key = seed_key(&kms, &policy, "payments").await;
    let plain = seed_key(&kms, &default_policy(&account), "plain").await;
    kms.create_alias()
        .alias_name("alias/payments")
        .target_key_id(&key.key_id)
        .send()
        .await
        .expect("CreateAlias");
    kms.tag_resource()
        .key_id(&key.key_id)
        .tags(
            Tag::builder()
                .tag_key("team")
                .tag_value("payments")
                .build()
                .expect("tag"),
        )
        .tags(
            Tag::builder()
                .tag_key("env")
                .tag_value("prod")
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("TagResource");
    kms.enable_key_rotation()
        .key_id(&key.key_id)
        .send()
        .await
        .expect("EnableKeyRotation");
    let grantee = format!("arn:aws:iam::{account}:role/app");
    let grant = kms
        .create_grant()
        .key_id(&key.key_id)
        .grantee_principal(&grantee)
        .operations(GrantOperation::Decrypt)
        .operations(GrantOperation::Encrypt)
        .name("app-grant")
        .send()
        .await
        .expect("CreateGrant");

    let (connector, metrics) = connector(moto);
    let source = connector
        .source(&via_role(&account), "us-east-1")
        .await
        .expect("source");

    let before = Utc::now() - chrono::Duration::minutes(5);
    let meta = source.describe_key(&key.key_id).await.expect("describe");
    assert_eq!(meta.key_id, key.key_id);
    assert_eq!(meta.arn, key.arn);
    assert_eq!(meta.account_id, account);
    assert_eq!(meta.description, "payments");
    assert_eq!(meta.key_manager, "CUSTOMER");
    assert_eq!(meta.key_state, "Enabled");
    assert_eq!(meta.key_spec, "SYMMETRIC_DEFAULT");
    assert_eq!(meta.key_usage, "ENCRYPT_DECRYPT");
    assert_eq!(meta.origin, "AWS_KMS");
    assert!(!meta.multi_region);
    assert!(meta.creation_date.is_some_and(|d| d > before), "{meta:?}");
    assert_eq!(meta.deletion_date, None);

    assert_eq!(
        source.get_key_policy(&key.key_id).await.expect("policy"),
        policy
    );

    let mut tags = source.list_resource_tags(&key.key_id).await.expect("tags");
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), "payments".to_string())
        ]
    );
    assert!(
        source
            .list_resource_tags(&plain.key_id)
            .await
            .expect("no tags")
            .is_empty()
    );

    assert!(
        source
            .get_key_rotation_status(&key.key_id)
            .await
            .expect("rotation")
    );
    assert!(
        !source
            .get_key_rotation_status(&plain.key_id)
            .await
            .expect("rotation")
    );

    let grants = source.list_grants(&key.key_id).await.expect("grants");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(Some(grants[0].grant_id.as_str()), grant.grant_id());
    assert_eq!(grants[0].name.as_deref(), Some("app-grant"));
    assert_eq!(
        grants[0].grantee_principal.as_deref(),
        Some(grantee.as_str())
    );
    let mut ops = grants[0].operations.clone();
    ops.sort();
    assert_eq!(ops, vec!["Decrypt".to_string(), "Encrypt".to_string()]);
    assert!(
        source
            .list_grants(&plain.key_id)
            .await
            .expect("no grants")
            .is_empty()
    );

    let aliases = source.list_aliases().await.expect("aliases");
    let payments = aliases
        .iter()
        .find(|a| a.name == "alias/payments")
        .unwrap_or_else(|| panic!("alias/payments missing from {aliases:?}"));
    assert_eq!(payments.target_key_id.as_deref(), Some(key.key_id.as_str()));

    let text = metrics.render();
    for op in [
        "DescribeKey",
        "ListResourceTags",
        "GetKeyRotationStatus",
        "ListGrants",
        "ListAliases",
    ] {
        assert!(
            text.contains(&format!("operation=\"{op}\"")),
            "{op}: {text}"
        );
    }
    assert!(
        text.contains(r#"keyward_aws_calls_total{operation="GetKeyPolicy"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn pending_deletion_shows_state_and_date() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "doomed").await;
    kms.schedule_key_deletion()
        .key_id(&key.key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");

    let (connector, _) = connector(moto);
    let source = connector
        .source(&via_role(&account), "us-east-1")
        .await
        .expect("source");
    let meta = source.describe_key(&key.key_id).await.expect("describe");
    assert_eq!(meta.key_state, "PendingDeletion");
    let deletion = meta.deletion_date.expect("deletion date");
    let days = (deletion - Utc::now()).num_hours() as f64 / 24.0;
    assert!(
        (6.0..=7.1).contains(&days),
        "deletion in {days} days: {deletion}"
    );
    // Still listed: a key pending deletion is not gone.
    assert_eq!(
        key_ids(&source.list_keys().await.expect("list")),
        vec![key.key_id]
    );
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let (connector, metrics) = connector(moto);
    let source = connector
        .source(&via_role(&account), "us-east-1")
        .await
        .expect("source");
    let bogus = "00000000-1111-2222-3333-444444444444";
    match source.describe_key(bogus).await {
        Err(AwsError::NotFound { operation, .. }) => assert_eq!(operation, "DescribeKey"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match source.get_key_policy(bogus).await {
        Err(AwsError::NotFound { operation, .. }) => assert_eq!(operation, "GetKeyPolicy"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let text = metrics.render();
    assert!(
        text.contains(r#"keyward_aws_errors_total{operation="DescribeKey",kind="not_found"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn put_key_policy_writes_the_default_policy() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "to fix").await;
    let fixed = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}}]}}"#
    );

    let (connector, metrics) = connector(moto);
    let access = via_role(&account);
    let writer = connector
        .writer(&access, "us-east-1")
        .await
        .expect("writer");
    writer
        .put_key_policy(&key.key_id, &fixed)
        .await
        .expect("put");

    let source = connector
        .source(&access, "us-east-1")
        .await
        .expect("source");
    assert_eq!(
        source.get_key_policy(&key.key_id).await.expect("read back"),
        fixed
    );
    // Read back independently of Keyward too.
    let direct = kms
        .get_key_policy()
        .key_id(&key.key_id)
        .policy_name("default")
        .send()
        .await
        .expect("GetKeyPolicy");
    assert_eq!(direct.policy(), Some(fixed.as_str()));
    assert!(
        metrics
            .render()
            .contains(r#"keyward_aws_calls_total{operation="PutKeyPolicy"} 1"#)
    );
}

#[tokio::test]
async fn credentials_reaching_another_account_are_refused() {
    let moto = Moto::start();
    let (configured, actual) = (moto.fresh_account(), moto.fresh_account());
    let (connector, _) = connector(moto);
    let access = AccountAccess {
        account_id: configured.clone(),
        role_arn: Some(Moto::role_arn(&actual)),
        external_id: None,
    };
    match connector.source(&access, "us-east-1").await {
        Err(AwsError::AccessDenied { operation, message }) => {
            assert_eq!(operation, "GetCallerIdentity");
            assert!(
                message.contains(&configured) && message.contains(&actual),
                "{message}"
            );
        }
        Err(other) => panic!("expected AccessDenied, got {other:?}"),
        Ok(_) => panic!("expected AccessDenied, got a source"),
    }
    // Default credentials act in moto's default account, not in a configured one either.
    let default_creds = AccountAccess {
        account_id: configured.clone(),
        ..AccountAccess::default()
    };
    assert!(matches!(
        connector.source(&default_creds, "us-east-1").await.err(),
        Some(AwsError::AccessDenied { .. })
    ));
}

#[tokio::test]
async fn caller_arn_is_the_keyward_role_session() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let (connector, _) = connector(moto);
    let arn = connector
        .caller_arn(&via_role(&account), "eu-west-1")
        .await
        .expect("caller arn");
    assert_eq!(
        arn,
        format!("arn:aws:sts::{account}:assumed-role/KeywardAudit/keyward")
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    moto::prepare_environment();
    // A port nothing listens on: bound and released at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let metrics = Arc::new(Metrics::new());
    let connector = SdkConnector::new(Some(format!("http://127.0.0.1:{port}")), metrics.clone());
    match connector.default_account().await {
        Err(AwsError::Transport { operation, .. }) => assert_eq!(operation, "GetCallerIdentity"),
        other => panic!("expected Transport, got {other:?}"),
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
        // Keyward's shortest timeout is 30 s and its backoff is capped at 20 s: with no identity
        // cache and no stalled-stream protection, every shorter sleep is a retry backoff.
        if duration >= Duration::from_secs(25) {
            return Sleep::new(tokio::time::sleep(duration));
        }
        self.0.lock().unwrap().push(duration);
        Sleep::new(std::future::ready(()))
    }
}

struct Mocked {
    source: Arc<dyn KmsSource>,
    metrics: Arc<Metrics>,
    sleep: RecordingSleep,
}

fn mocked(rules: &[&Rule]) -> Mocked {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let sleep = RecordingSleep::default();
    let client = Client::from_conf(
        aws_sdk_kms::Config::builder()
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
        source: SdkConnector::source_from_client(client, metrics.clone()),
        metrics,
        sleep,
    }
}

fn error_body(code: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"{code}","message":"{code} from the mock"}}"#
    ))
}

fn key_entry(id: &str) -> KeyListEntry {
    KeyListEntry::builder()
        .key_id(id)
        .key_arn(format!("arn:aws:kms:us-east-1:111122223333:key/{id}"))
        .build()
}

#[tokio::test]
async fn list_keys_follows_markers_to_the_last_page() {
    let first = mock!(Client::list_keys)
        .match_requests(|req| req.marker().is_none())
        .then_output(|| {
            ListKeysOutput::builder()
                .keys(key_entry("k1"))
                .keys(key_entry("k2"))
                .truncated(true)
                .next_marker("page-2")
                .build()
        });
    let second = mock!(Client::list_keys)
        .match_requests(|req| req.marker() == Some("page-2"))
        .then_output(|| {
            ListKeysOutput::builder()
                .keys(key_entry("k3"))
                .truncated(false)
                .build()
        });
    let m = mocked(&[&first, &second]);
    let keys = m.source.list_keys().await.expect("all pages");
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["k1", "k2", "k3"]);
    assert_eq!(keys[2].arn, "arn:aws:kms:us-east-1:111122223333:key/k3");
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    assert!(
        m.metrics
            .render()
            .contains(r#"keyward_aws_calls_total{operation="ListKeys"} 2"#)
    );
}

#[tokio::test]
async fn list_aliases_follows_markers_to_the_last_page() {
    let alias = |name: &str, target: Option<&str>| {
        AliasListEntry::builder()
            .alias_name(name)
            .set_target_key_id(target.map(str::to_string))
            .build()
    };
    let first = mock!(Client::list_aliases)
        .match_requests(|req| req.marker().is_none() && req.key_id().is_none())
        .then_output(move || {
            ListAliasesOutput::builder()
                .aliases(alias("alias/a", Some("k1")))
                .truncated(true)
                .next_marker("m2")
                .build()
        });
    let second = mock!(Client::list_aliases)
        .match_requests(|req| req.marker() == Some("m2"))
        .then_output(move || {
            ListAliasesOutput::builder()
                .aliases(alias("alias/aws/s3", None))
                .truncated(false)
                .build()
        });
    let m = mocked(&[&first, &second]);
    let aliases = m.source.list_aliases().await.expect("all pages");
    let got: Vec<(&str, Option<&str>)> = aliases
        .iter()
        .map(|a| (a.name.as_str(), a.target_key_id.as_deref()))
        .collect();
    assert_eq!(got, [("alias/a", Some("k1")), ("alias/aws/s3", None)]);
}

#[tokio::test]
async fn truncated_listing_without_a_marker_is_an_error_not_a_short_list() {
    let page = mock!(Client::list_keys).then_output(|| {
        ListKeysOutput::builder()
            .keys(key_entry("k1"))
            .truncated(true)
            .build()
    });
    let m = mocked(&[&page]);
    match m.source.list_keys().await {
        Err(AwsError::Service { operation, .. }) => assert_eq!(operation, "ListKeys"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn throttling_is_retried_with_backoff() {
    let rule = mock!(Client::list_keys)
        .sequence()
        .http_status(400, error_body("ThrottlingException"))
        .times(2)
        .output(|| ListKeysOutput::builder().keys(key_entry("k1")).build())
        .build();
    let m = mocked(&[&rule]);
    let keys = m.source.list_keys().await.expect("succeeds after retries");
    assert_eq!(keys.len(), 1);
    assert_eq!(rule.num_calls(), 3, "two throttled attempts, then success");
    assert_eq!(m.sleep.backoffs().len(), 2, "slept before each retry");
    let text = m.metrics.render();
    assert!(
        text.contains(r#"keyward_aws_calls_total{operation="ListKeys"} 1"#),
        "{text}"
    );
    assert!(!text.contains("keyward_aws_errors_total{"), "{text}");
}

#[tokio::test]
async fn transient_5xx_is_retried_up_to_five_attempts() {
    let rule = mock!(Client::get_key_policy)
        .sequence()
        .http_status(503, None)
        .times(2)
        .http_status(500, error_body("KMSInternalException"))
        .times(2)
        .output(|| {
            aws_sdk_kms::operation::get_key_policy::GetKeyPolicyOutput::builder()
                .policy("{}")
                .policy_name("default")
                .build()
        })
        .build();
    let m = mocked(&[&rule]);
    assert_eq!(
        m.source.get_key_policy("k1").await.expect("fifth attempt"),
        "{}"
    );
    assert_eq!(rule.num_calls(), 5);
    let backoffs = m.sleep.backoffs();
    assert_eq!(backoffs.len(), 4, "{backoffs:?}");
    assert!(
        backoffs.iter().all(|b| *b <= Duration::from_secs(20)),
        "{backoffs:?}"
    );
}

#[tokio::test]
async fn persistent_throttling_gives_up_as_a_service_error() {
    let rule = mock!(Client::describe_key)
        .sequence()
        .http_status(400, error_body("ThrottlingException"))
        .repeatedly()
        .build();
    let m = mocked(&[&rule]);
    match m.source.describe_key("k1").await {
        Err(AwsError::Service {
            operation, code, ..
        }) => {
            assert_eq!(operation, "DescribeKey");
            assert_eq!(code, "ThrottlingException");
        }
        other => panic!("expected a throttling error, got {other:?}"),
    }
    assert_eq!(rule.num_calls(), 5, "gave up after MAX_ATTEMPTS");
    assert!(
        m.metrics
            .render()
            .contains(r#"keyward_aws_errors_total{operation="DescribeKey",kind="throttled"} 1"#)
    );
}

#[tokio::test]
async fn access_denied_is_classified_and_not_retried() {
    let rule = mock!(Client::get_key_policy)
        .sequence()
        .http_status(400, error_body("AccessDeniedException"))
        .repeatedly()
        .build();
    let m = mocked(&[&rule]);
    match m.source.get_key_policy("k1").await {
        Err(AwsError::AccessDenied { operation, message }) => {
            assert_eq!(operation, "GetKeyPolicy");
            assert!(message.contains("from the mock"), "{message}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    assert_eq!(rule.num_calls(), 1);
    assert!(m.sleep.backoffs().is_empty());
    assert!(
        m.metrics.render().contains(
            r#"keyward_aws_errors_total{operation="GetKeyPolicy",kind="access_denied"} 1"#
        )
    );
}

#[tokio::test]
async fn other_service_errors_keep_their_code() {
    let rule = mock!(Client::get_key_rotation_status)
        .sequence()
        .http_status(400, error_body("UnsupportedOperationException"))
        .repeatedly()
        .build();
    let m = mocked(&[&rule]);
    match m.source.get_key_rotation_status("k1").await {
        Err(AwsError::Service { code, .. }) => assert_eq!(code, "UnsupportedOperationException"),
        other => panic!("expected a service error, got {other:?}"),
    }
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn policy_calls_name_the_default_policy_and_never_bypass_the_lockout_check() {
    let get = mock!(Client::get_key_policy)
        .match_requests(|req| req.key_id() == Some("k1") && req.policy_name() == Some("default"))
        .then_output(|| {
            aws_sdk_kms::operation::get_key_policy::GetKeyPolicyOutput::builder()
                .policy("{\"Version\":\"2012-10-17\"}")
                .build()
        });
    let put = mock!(Client::put_key_policy)
        .match_requests(|req| {
            req.key_id() == Some("k1")
                && req.policy_name() == Some("default")
                && req.policy() == Some("{}")
                && req.bypass_policy_lockout_safety_check() == Some(false)
        })
        .then_output(|| {
            aws_sdk_kms::operation::put_key_policy::PutKeyPolicyOutput::builder().build()
        });
    let m = mocked(&[&get, &put]);
    assert_eq!(
        m.source.get_key_policy("k1").await.expect("get"),
        "{\"Version\":\"2012-10-17\"}"
    );
    let client = Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .http_client(create_mock_http_client())
            .interceptor(MockResponseInterceptor::new().with_rule(&put))
            .build(),
    );
    let writer = SdkConnector::writer_from_client(client, Arc::new(Metrics::new()));
    writer.put_key_policy("k1", "{}").await.expect("put");
    assert_eq!((get.num_calls(), put.num_calls()), (1, 1));
}
