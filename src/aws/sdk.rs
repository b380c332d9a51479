//! The aws-sdk-kms implementation of the KMS traits: one shared AWS configuration, assume-role per
//! account, one verified client per account·region (and one IAM client per account), retries and
//! timeouts from the SDK.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::config::SharedCredentialsProvider;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use super::iam::SdkIam;
use super::{
    AccountAccess, Alias, AwsError, Grant, IamSource, KeyMetadata, KeyRef, KmsConnector, KmsSource,
    KmsWriter,
};
use crate::metrics::Metrics;
use crate::store::{KeyMetadataExtra, MultiRegionConfig, MultiRegionKeyRef};

/// Attempts per call, the first included. The SDK's standard mode backs off exponentially with
/// full jitter (1 s base, 20 s cap) on throttling, 5xx and transient network errors; five attempts
/// ride out a burst of KMS throttling (its request quotas are per account·region and shared with
/// every other caller in the account) without holding a sync pass for minutes.
const MAX_ATTEMPTS: u32 = 5;
/// An endpoint that does not accept a connection within this is treated as down (and retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of one call; KMS answers in milliseconds, so this only catches a hung connection.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// One call including every retry and backoff: the upper bound a caller ever waits.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);
/// How long fetching credentials (an STS AssumeRole, itself retried) may take. The SDK's default
/// of 5 s is too tight for an AssumeRole that needs a retry.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(60);
/// The role session name: it shows in CloudTrail as `assumed-role/ROLE/keyward`.
const SESSION_NAME: &str = "keyward";
/// Used when neither the environment nor a profile names a region.
const FALLBACK_REGION: &str = "us-east-1";
/// The only key policy name KMS supports.
const POLICY_NAME: &str = "default";

/// Identifies one way of reaching one account (the same account through two roles is two entries).
type AccessKey = (String, Option<String>, Option<String>);

fn access_key(access: &AccountAccess) -> AccessKey {
    (
        access.account_id.clone(),
        access.role_arn.clone(),
        access.external_id.clone(),
    )
}

/// Opens KMS clients through aws-config: default credentials or an assumed role per account.
pub struct SdkConnector {
    endpoint_url: Option<String>,
    metrics: Arc<Metrics>,
    base: OnceCell<SdkConfig>,
    /// Per account: its configuration with credentials, once they proved to reach the account.
    accounts: Mutex<HashMap<AccessKey, Arc<OnceCell<SdkConfig>>>>,
    clients: Mutex<HashMap<(AccessKey, String), aws_sdk_kms::Client>>,
    /// IAM is global: one client per account, not per region.
    iam_clients: Mutex<HashMap<AccessKey, aws_sdk_iam::Client>>,
}

impl SdkConnector {
    /// A connector; `endpoint_url` overrides every AWS endpoint (emulators), as AWS_ENDPOINT_URL does.
    pub fn new(endpoint_url: Option<String>, metrics: Arc<Metrics>) -> Self {
        SdkConnector {
            endpoint_url: endpoint_url.filter(|url| !url.trim().is_empty()),
            metrics,
            base: OnceCell::new(),
            accounts: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            iam_clients: Mutex::new(HashMap::new()),
        }
    }

    /// A writer (PutKeyPolicy) for one account·region, sharing the reader's cached client.
    pub async fn writer(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsWriter>, AwsError> {
        let client = self.kms_client(access, region).await?;
        Ok(Arc::new(SdkKms {
            client,
            metrics: self.metrics.clone(),
        }))
    }

    /// A reader over a client built elsewhere (tests), with Keyward's retry and timeout policy.
    pub fn source_from_client(
        client: aws_sdk_kms::Client,
        metrics: Arc<Metrics>,
    ) -> Arc<dyn KmsSource> {
        Arc::new(SdkKms::from_client(client, metrics))
    }

    /// A writer over a client built elsewhere (tests), with Keyward's retry and timeout policy.
    pub fn writer_from_client(
        client: aws_sdk_kms::Client,
        metrics: Arc<Metrics>,
    ) -> Arc<dyn KmsWriter> {
        Arc::new(SdkKms::from_client(client, metrics))
    }

    /// An IAM reader over a client built elsewhere (tests), with Keyward's retry and timeout
    /// policy; `account_id` names the account in the inventory.
    pub fn iam_from_client(
        client: aws_sdk_iam::Client,
        account_id: &str,
        metrics: Arc<Metrics>,
    ) -> Arc<dyn IamSource> {
        let config = client
            .config()
            .to_builder()
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .build();
        Arc::new(SdkIam::new(
            aws_sdk_iam::Client::from_conf(config),
            account_id.to_string(),
            metrics,
        ))
    }

    /// The shared configuration: environment, profile, endpoint override, retries and timeouts.
    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .retry_config(retry_config())
                    .timeout_config(timeout_config())
                    .identity_cache(
                        IdentityCache::lazy()
                            .load_timeout(CREDENTIALS_TIMEOUT)
                            .build(),
                    );
                if let Some(url) = &self.endpoint_url {
                    loader = loader.endpoint_url(url.clone());
                }
                let config = loader.load().await;
                if config.region().is_some() {
                    config
                } else {
                    config
                        .into_builder()
                        .region(Region::from_static(FALLBACK_REGION))
                        .build()
                }
            })
            .await
    }

    /// The configuration for one account, its credentials checked against its id (once).
    async fn account(&self, access: &AccountAccess) -> Result<SdkConfig, AwsError> {
        let cell = {
            let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
            accounts.entry(access_key(access)).or_default().clone()
        };
        // A failed check leaves the cell empty, so the next pass tries again.
        cell.get_or_try_init(|| self.open_account(access))
            .await
            .cloned()
    }

    async fn open_account(&self, access: &AccountAccess) -> Result<SdkConfig, AwsError> {
        let base = self.base().await;
        let config = match &access.role_arn {
            None => base.clone(),
            Some(role_arn) => {
                let mut builder = AssumeRoleProvider::builder(role_arn.clone())
                    .session_name(SESSION_NAME)
                    .configure(base);
                if let Some(external_id) = &access.external_id {
                    builder = builder.external_id(external_id.clone());
                }
                // The provider itself does not cache: the clients' identity cache (shared through
                // the SdkConfig) holds the session and assumes the role again shortly before it
                // expires.
                let provider = builder.build().await;
                base.to_builder()
                    .credentials_provider(SharedCredentialsProvider::new(provider))
                    .build()
            }
        };
        let (account, arn) = self.caller_identity(&config, None).await?;
        if account != access.account_id {
            self.metrics
                .aws_error(GET_CALLER_IDENTITY, "account_mismatch");
            return Err(AwsError::AccessDenied {
                operation: GET_CALLER_IDENTITY,
                message: format!(
                    "the credentials for account {} act as {arn} in account {account}; \
                     check role_arn and the default credentials",
                    access.account_id
                ),
            });
        }
        tracing::debug!(account = %account, caller = %arn, "AWS credentials verified");
        Ok(config)
    }

    /// STS GetCallerIdentity: (account, ARN) the configuration's credentials act as.
    async fn caller_identity(
        &self,
        config: &SdkConfig,
        region: Option<&str>,
    ) -> Result<(String, String), AwsError> {
        let mut builder = aws_sdk_sts::config::Builder::from(config);
        if let Some(region) = region {
            builder = builder.region(Region::new(region.to_string()));
        }
        let sts = aws_sdk_sts::Client::from_conf(builder.build());
        let out = call(
            &self.metrics,
            GET_CALLER_IDENTITY,
            sts.get_caller_identity().send(),
        )
        .await?;
        match (out.account(), out.arn()) {
            (Some(account), Some(arn)) => Ok((account.to_string(), arn.to_string())),
            _ => Err(incomplete(
                &self.metrics,
                GET_CALLER_IDENTITY,
                "the answer lacks Account or Arn",
            )),
        }
    }

    /// The cached KMS client for one account·region.
    async fn kms_client(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<aws_sdk_kms::Client, AwsError> {
        let key = (access_key(access), region.to_string());
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(client.clone());
        }
        let config = self.account(access).await?;
        let client = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(&config)
                .region(Region::new(region.to_string()))
                .build(),
        );
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(clients.entry(key).or_insert(client).clone())
    }

    /// The cached IAM client for one account: the account's verified configuration (same
    /// credentials and identity cache, retries, timeouts and endpoint override as KMS).
    ///
    /// The region stays the configuration's own: IAM has one endpoint per partition, and the
    /// SDK's endpoint rules resolve any region of a partition to it (`iam.amazonaws.com`,
    /// `iam.cn-north-1.amazonaws.com.cn`, `iam.us-gov.amazonaws.com`) with the right signing
    /// region. An `endpoint_url` (an emulator) replaces it, as it does for KMS.
    async fn iam_client(&self, access: &AccountAccess) -> Result<aws_sdk_iam::Client, AwsError> {
        let key = access_key(access);
        if let Some(client) = self
            .iam_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(client.clone());
        }
        let config = self.account(access).await?;
        let client = aws_sdk_iam::Client::new(&config);
        let mut clients = self
            .iam_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(clients.entry(key).or_insert(client).clone())
    }
}

#[async_trait]
impl KmsConnector for SdkConnector {
    async fn source(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsSource>, AwsError> {
        let client = self.kms_client(access, region).await?;
        Ok(Arc::new(SdkKms {
            client,
            metrics: self.metrics.clone(),
        }))
    }

    async fn iam(&self, access: &AccountAccess) -> Result<Arc<dyn IamSource>, AwsError> {
        let client = self.iam_client(access).await?;
        Ok(Arc::new(SdkIam::new(
            client,
            access.account_id.clone(),
            self.metrics.clone(),
        )))
    }

    async fn caller_arn(&self, access: &AccountAccess, region: &str) -> Result<String, AwsError> {
        let config = self.account(access).await?;
        let (_, arn) = self.caller_identity(&config, Some(region)).await?;
        Ok(arn)
    }

    async fn default_account(&self) -> Result<(String, String), AwsError> {
        let base = self.base().await;
        let (account, _) = self.caller_identity(base, None).await?;
        let region = base
            .region()
            .map_or_else(|| FALLBACK_REGION.to_string(), |r| r.to_string());
        Ok((account, region))
    }
}

/// The SDK's standard retry mode, see [`MAX_ATTEMPTS`].
fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

const GET_CALLER_IDENTITY: &str = "GetCallerIdentity";
const LIST_KEYS: &str = "ListKeys";
const LIST_ALIASES: &str = "ListAliases";
const DESCRIBE_KEY: &str = "DescribeKey";
const GET_KEY_POLICY: &str = "GetKeyPolicy";
const LIST_RESOURCE_TAGS: &str = "ListResourceTags";
const GET_KEY_ROTATION_STATUS: &str = "GetKeyRotationStatus";
const LIST_GRANTS: &str = "ListGrants";
const PUT_KEY_POLICY: &str = "PutKeyPolicy";

/// KMS in one account·region: the reader and the writer.
struct SdkKms {
    client: aws_sdk_kms::Client,
    metrics: Arc<Metrics>,
}

impl SdkKms {
    fn from_client(client: aws_sdk_kms::Client, metrics: Arc<Metrics>) -> Self {
        let config = client
            .config()
            .to_builder()
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .build();
        SdkKms {
            client: aws_sdk_kms::Client::from_conf(config),
            metrics,
        }
    }

    async fn call<T, E>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        call(&self.metrics, operation, request).await
    }
}

/// The marker of the next page; `None` when the listing is complete.
///
/// A listing that claims more pages but gives no new marker is an error rather than a short
/// list: the sync marks keys missing from a *complete* listing as deleted.
pub(super) fn next_page(
    metrics: &Metrics,
    operation: &'static str,
    truncated: bool,
    next: Option<&str>,
    current: Option<&str>,
) -> Result<Option<String>, AwsError> {
    if !truncated {
        return Ok(None);
    }
    match next {
        Some(next) if !next.is_empty() && Some(next) != current => Ok(Some(next.to_string())),
        _ => Err(incomplete(
            metrics,
            operation,
            "Truncated without a new marker; the listing would be incomplete",
        )),
    }
}

#[async_trait]
impl KmsSource for SdkKms {
    async fn list_keys(&self) -> Result<Vec<KeyRef>, AwsError> {
        let mut keys = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .call(
                    LIST_KEYS,
                    self.client.list_keys().set_marker(marker.clone()).send(),
                )
                .await?;
            keys.extend(page.keys().iter().filter_map(|k| {
                Some(KeyRef {
                    key_id: k.key_id()?.to_string(),
                    arn: k.key_arn().unwrap_or_default().to_string(),
                })
            }));
            match next_page(
                &self.metrics,
                LIST_KEYS,
                page.truncated(),
                page.next_marker(),
                marker.as_deref(),
            )? {
                Some(next) => marker = Some(next),
                None => return Ok(keys),
            }
        }
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, AwsError> {
        let mut aliases = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .call(
                    LIST_ALIASES,
                    self.client.list_aliases().set_marker(marker.clone()).send(),
                )
                .await?;
            aliases.extend(page.aliases().iter().filter_map(|a| {
                Some(Alias {
                    name: a.alias_name()?.to_string(),
                    target_key_id: a.target_key_id().map(str::to_string),
                })
            }));
            match next_page(
                &self.metrics,
                LIST_ALIASES,
                page.truncated(),
                page.next_marker(),
                marker.as_deref(),
            )? {
                Some(next) => marker = Some(next),
                None => return Ok(aliases),
            }
        }
    }

    async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, AwsError> {
        let out = self
            .call(
                DESCRIBE_KEY,
                self.client.describe_key().key_id(key_id).send(),
            )
            .await?;
        let Some(m) = out.key_metadata() else {
            return Err(incomplete(
                &self.metrics,
                DESCRIBE_KEY,
                "the answer lacks KeyMetadata",
            ));
        };
        Ok(KeyMetadata {
            key_id: m.key_id().to_string(),
            arn: m.arn().unwrap_or_default().to_string(),
            account_id: m.aws_account_id().unwrap_or_default().to_string(),
            description: m.description().unwrap_or_default().to_string(),
            key_manager: m
                .key_manager()
                .map(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            key_state: m
                .key_state()
                .map(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            key_spec: m
                .key_spec()
                .map(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            key_usage: m
                .key_usage()
                .map(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            origin: m
                .origin()
                .map(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            multi_region: m.multi_region().unwrap_or(false),
            creation_date: m.creation_date().and_then(to_chrono),
            deletion_date: m.deletion_date().and_then(to_chrono),
            extra: metadata_extra(m),
        })
    }

    async fn get_key_policy(&self, key_id: &str) -> Result<String, AwsError> {
        let out = self
            .call(
                GET_KEY_POLICY,
                self.client
                    .get_key_policy()
                    .key_id(key_id)
                    .policy_name(POLICY_NAME)
                    .send(),
            )
            .await?;
        match out.policy() {
            Some(policy) => Ok(policy.to_string()),
            None => Err(incomplete(
                &self.metrics,
                GET_KEY_POLICY,
                "the answer lacks Policy",
            )),
        }
    }

    async fn list_resource_tags(&self, key_id: &str) -> Result<Vec<(String, String)>, AwsError> {
        let mut tags = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .call(
                    LIST_RESOURCE_TAGS,
                    self.client
                        .list_resource_tags()
                        .key_id(key_id)
                        .set_marker(marker.clone())
                        .send(),
                )
                .await?;
            tags.extend(
                page.tags()
                    .iter()
                    .map(|t| (t.tag_key().to_string(), t.tag_value().to_string())),
            );
            match next_page(
                &self.metrics,
                LIST_RESOURCE_TAGS,
                page.truncated(),
                page.next_marker(),
                marker.as_deref(),
            )? {
                Some(next) => marker = Some(next),
                None => return Ok(tags),
            }
        }
    }

    async fn get_key_rotation_status(&self, key_id: &str) -> Result<bool, AwsError> {
        let out = self
            .call(
                GET_KEY_ROTATION_STATUS,
                self.client.get_key_rotation_status().key_id(key_id).send(),
            )
            .await?;
        Ok(out.key_rotation_enabled())
    }

    async fn list_grants(&self, key_id: &str) -> Result<Vec<Grant>, AwsError> {
        let mut grants = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .call(
                    LIST_GRANTS,
                    self.client
                        .list_grants()
                        .key_id(key_id)
                        .set_marker(marker.clone())
                        .send(),
                )
                .await?;
            grants.extend(page.grants().iter().map(|g| {
                Grant {
                    grant_id: g.grant_id().unwrap_or_default().to_string(),
                    name: g.name().filter(|n| !n.is_empty()).map(str::to_string),
                    grantee_principal: g.grantee_principal().map(str::to_string),
                    retiring_principal: g.retiring_principal().map(str::to_string),
                    issuing_account: g.issuing_account().map(str::to_string),
                    operations: g
                        .operations()
                        .iter()
                        .map(|o| o.as_str().to_string())
                        .collect(),
                }
            }));
            match next_page(
                &self.metrics,
                LIST_GRANTS,
                page.truncated(),
                page.next_marker(),
                marker.as_deref(),
            )? {
                Some(next) => marker = Some(next),
                None => return Ok(grants),
            }
        }
    }
}

#[async_trait]
impl KmsWriter for SdkKms {
    async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), AwsError> {
        self.call(
            PUT_KEY_POLICY,
            self.client
                .put_key_policy()
                .key_id(key_id)
                .policy_name(POLICY_NAME)
                .policy(policy)
                // Keyward never bypasses: AWS's own lockout check is the last safety net.
                .bypass_policy_lockout_safety_check(false)
                .send(),
        )
        .await?;
        Ok(())
    }
}

/// Sends one request (the SDK retries inside), counting it and classifying its failure.
pub(super) async fn call<T, E>(
    metrics: &Metrics,
    operation: &'static str,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    metrics.aws_call(operation);
    match request.await {
        Ok(out) => Ok(out),
        Err(err) => {
            let (error, kind) = classify(operation, &err);
            metrics.aws_error(operation, kind);
            tracing::debug!(operation, kind, error = %DisplayErrorContext(&err), "AWS call failed");
            Err(error)
        }
    }
}

/// Maps an SDK error to Keyward's classification and a metrics label.
fn classify<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> (AwsError, &'static str)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transport = |kind| {
        (
            AwsError::Transport {
                operation,
                message: DisplayErrorContext(err).to_string(),
            },
            kind,
        )
    };
    let service = match err {
        SdkError::ServiceError(service) => service,
        SdkError::TimeoutError(_) => return transport("timeout"),
        _ => return transport("transport"),
    };
    let message = service
        .err()
        .message()
        .map_or_else(|| DisplayErrorContext(err).to_string(), str::to_string);
    match service.err().code() {
        Some("AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation") => (
            AwsError::AccessDenied { operation, message },
            "access_denied",
        ),
        // NoSuchEntity is IAM's spelling.
        Some("NotFoundException" | "NoSuchEntity") => {
            (AwsError::NotFound { operation, message }, "not_found")
        }
        Some(code) => {
            let kind = if is_throttling(code) {
                "throttled"
            } else {
                "service"
            };
            let code = code.to_string();
            (
                AwsError::Service {
                    operation,
                    code,
                    message,
                },
                kind,
            )
        }
        None => (
            AwsError::Service {
                operation,
                code: format!("HTTP {}", service.raw().status().as_u16()),
                message,
            },
            "service",
        ),
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
    )
}

/// An answer that lacks a field Keyward cannot do without.
pub(super) fn incomplete(metrics: &Metrics, operation: &'static str, message: &str) -> AwsError {
    metrics.aws_error(operation, "incomplete");
    AwsError::Service {
        operation,
        code: "IncompleteResponse".to_string(),
        message: message.to_string(),
    }
}

/// The DescribeKey fields that have no column of their own.
fn metadata_extra(m: &aws_sdk_kms::types::KeyMetadata) -> KeyMetadataExtra {
    fn names<T: AsRef<str>>(values: &[T]) -> Vec<String> {
        values.iter().map(|v| v.as_ref().to_string()).collect()
    }
    let region_key = |k: &aws_sdk_kms::types::MultiRegionKey| MultiRegionKeyRef {
        arn: k.arn().map(str::to_string),
        region: k.region().map(str::to_string),
    };
    KeyMetadataExtra {
        enabled: Some(m.enabled()),
        encryption_algorithms: names(m.encryption_algorithms()),
        signing_algorithms: names(m.signing_algorithms()),
        mac_algorithms: names(m.mac_algorithms()),
        key_agreement_algorithms: names(m.key_agreement_algorithms()),
        valid_to: m.valid_to().and_then(to_chrono),
        expiration_model: m.expiration_model().map(|v| v.as_str().to_string()),
        pending_deletion_window_in_days: m.pending_deletion_window_in_days(),
        custom_key_store_id: m.custom_key_store_id().map(str::to_string),
        cloud_hsm_cluster_id: m.cloud_hsm_cluster_id().map(str::to_string),
        multi_region_configuration: m.multi_region_configuration().map(|c| MultiRegionConfig {
            key_type: c.multi_region_key_type().map(|v| v.as_str().to_string()),
            primary_key: c.primary_key().map(region_key),
            replica_keys: c.replica_keys().iter().map(region_key).collect(),
        }),
        xks_key_id: m
            .xks_key_configuration()
            .and_then(|x| x.id())
            .map(str::to_string),
        current_key_material_id: m.current_key_material_id().map(str::to_string),
        unread_operations: Vec::new(),
    }
}

fn to_chrono(t: &aws_sdk_kms::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_stops_only_on_a_complete_listing() {
        let m = Metrics::new();
        assert_eq!(next_page(&m, LIST_KEYS, false, Some("x"), None), Ok(None));
        assert_eq!(
            next_page(&m, LIST_KEYS, true, Some("b"), Some("a")),
            Ok(Some("b".to_string()))
        );
        for (next, current) in [(None, None), (Some(""), None), (Some("a"), Some("a"))] {
            let err = next_page(&m, LIST_KEYS, true, next, current);
            assert!(
                matches!(&err, Err(AwsError::Service { code, .. }) if code == "IncompleteResponse"),
                "{next:?} {current:?}: {err:?}"
            );
        }
    }

    #[test]
    fn smithy_timestamps_become_utc() {
        let t = aws_sdk_kms::primitives::DateTime::from_secs_and_nanos(1_700_000_000, 5);
        let c = to_chrono(&t).map(|c| (c.timestamp(), c.timestamp_subsec_nanos()));
        assert_eq!(c, Some((1_700_000_000, 5)));
    }

    #[test]
    fn endpoint_override_ignores_blank() {
        let c = SdkConnector::new(Some("  ".into()), Arc::new(Metrics::new()));
        assert_eq!(c.endpoint_url, None);
    }
}
