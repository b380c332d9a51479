//! The edge to AWS KMS and IAM: narrow traits the rest of Keyward uses, and their aws-sdk-*
//! implementation (assume-role per account, retries with backoff). Nothing else in the crate
//! imports aws-sdk-*.

mod iam;
mod sdk;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::access::IamInventory;

pub use sdk::SdkConnector;

/// An AWS call that failed, classified for the sync's decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// The caller lacks permission (AccessDeniedException and friends).
    #[error("{operation}: access denied: {message}")]
    AccessDenied {
        operation: &'static str,
        message: String,
    },
    /// The key or resource does not exist (any more).
    #[error("{operation}: not found: {message}")]
    NotFound {
        operation: &'static str,
        message: String,
    },
    /// Still throttled or failing after the retries.
    #[error("{operation}: {code}: {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// The request never got an answer (connection, timeout, credentials).
    #[error("{operation}: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
}

impl AwsError {
    /// The operation that failed, e.g. `GetKeyPolicy`.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::AccessDenied { operation, .. }
            | Self::NotFound { operation, .. }
            | Self::Service { operation, .. }
            | Self::Transport { operation, .. } => operation,
        }
    }
}

/// A key as ListKeys names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub key_id: String,
    pub arn: String,
}

/// An alias and the key it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub name: String,
    pub target_key_id: Option<String>,
}

/// DescribeKey's answer, as far as Keyward uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    pub key_id: String,
    pub arn: String,
    pub account_id: String,
    pub description: String,
    /// `CUSTOMER` or `AWS`.
    pub key_manager: String,
    pub key_state: String,
    pub key_spec: String,
    pub key_usage: String,
    pub origin: String,
    pub multi_region: bool,
    pub creation_date: Option<DateTime<Utc>>,
    pub deletion_date: Option<DateTime<Utc>>,
    /// Every other field of the answer.
    pub extra: crate::store::KeyMetadataExtra,
}

/// A grant, as ListGrants returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub grant_id: String,
    pub name: Option<String>,
    pub grantee_principal: Option<String>,
    pub retiring_principal: Option<String>,
    pub issuing_account: Option<String>,
    pub operations: Vec<String>,
}

/// Reading KMS in one account·region. Every call retries throttling and 5xx itself.
#[async_trait]
pub trait KmsSource: Send + Sync {
    /// Every key of the region (all pages).
    async fn list_keys(&self) -> Result<Vec<KeyRef>, AwsError>;
    /// Every alias of the region (all pages).
    async fn list_aliases(&self) -> Result<Vec<Alias>, AwsError>;
    async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, AwsError>;
    /// The key policy named `default` (the only name KMS supports).
    async fn get_key_policy(&self, key_id: &str) -> Result<String, AwsError>;
    async fn list_resource_tags(&self, key_id: &str) -> Result<Vec<(String, String)>, AwsError>;
    async fn get_key_rotation_status(&self, key_id: &str) -> Result<bool, AwsError>;
    async fn list_grants(&self, key_id: &str) -> Result<Vec<Grant>, AwsError>;
}

/// Writing key policies (remediation).
#[async_trait]
pub trait KmsWriter: Send + Sync {
    /// PutKeyPolicy for the policy `default`, never bypassing the lockout safety check.
    async fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), AwsError>;
}

/// Reading IAM in one account. IAM is global, so there is one source per account, not per
/// region. Every call retries throttling and 5xx itself.
#[async_trait]
pub trait IamSource: Send + Sync {
    /// The account's users, groups, roles and the managed policies attached to them
    /// (GetAccountAuthorizationDetails, all pages), documents decoded, sorted by ARN.
    async fn authorization_details(&self) -> Result<IamInventory, AwsError>;
}

/// How to reach one account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountAccess {
    /// The account id (checked against what the credentials reach).
    pub account_id: String,
    /// Role to assume; `None` uses the default credentials.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

/// Opens per-account·region clients.
#[async_trait]
pub trait KmsConnector: Send + Sync {
    /// A reader for one account·region.
    async fn source(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsSource>, AwsError>;
    /// An IAM reader for one account, with the same credentials as its KMS readers.
    async fn iam(&self, access: &AccountAccess) -> Result<Arc<dyn IamSource>, AwsError>;
    /// The ARN the credentials of `access` act as (STS GetCallerIdentity).
    async fn caller_arn(&self, access: &AccountAccess, region: &str) -> Result<String, AwsError>;
    /// The account and region of the default credentials, for a configuration without accounts.
    async fn default_account(&self) -> Result<(String, String), AwsError>;
}
