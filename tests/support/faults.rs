//! A fault-injecting wrapper around a real `KmsConnector`: every call goes to the real client
//! (moto) unless a test asked for a failure, so sync tests can prove failure isolation.
#![allow(dead_code)]

use async_trait::async_trait;
use keyward::access::IamInventory;
use keyward::aws::{
    AccountAccess, Alias, AwsError, Grant, IamSource, KeyMetadata, KeyRef, KmsConnector, KmsSource,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// What to break; shared by the connector and every source it hands out.
#[derive(Debug, Default)]
pub struct Faults {
    /// Regions whose ListKeys fails (throttled beyond retries).
    pub failing_regions: HashSet<String>,
    /// Key ids ListKeys no longer returns (as if deleted).
    pub hidden_keys: HashSet<String>,
    /// Key ids whose GetKeyPolicy is denied.
    pub denied_policies: HashSet<String>,
    /// Key ids whose DescribeKey fails transiently.
    pub failing_keys: HashSet<String>,
    /// Key ids DescribeKey reports as AWS managed (moto cannot create such keys).
    pub aws_managed: HashSet<String>,
    /// Key ids whose DescribeKey is denied.
    pub denied_describe: HashSet<String>,
    /// Key ids whose ListResourceTags is denied.
    pub denied_tags: HashSet<String>,
    /// Key ids whose ListGrants is denied.
    pub denied_grants: HashSet<String>,
    /// Account ids whose GetAccountAuthorizationDetails is denied.
    pub denied_iam: HashSet<String>,
    /// Account ids whose GetAccountAuthorizationDetails fails transiently (throttled beyond
    /// retries).
    pub failing_iam: HashSet<String>,
}

/// Wraps a connector; see [`Faults`].
pub struct FaultyConnector {
    pub inner: Arc<dyn KmsConnector>,
    pub faults: Arc<Mutex<Faults>>,
}

impl FaultyConnector {
    pub fn new(inner: Arc<dyn KmsConnector>) -> (Arc<Self>, Arc<Mutex<Faults>>) {
        let faults = Arc::new(Mutex::new(Faults::default()));
        (
            Arc::new(FaultyConnector {
                inner,
                faults: faults.clone(),
            }),
            faults,
        )
    }
}

#[async_trait]
impl KmsConnector for FaultyConnector {
    async fn source(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsSource>, AwsError> {
        let inner = self.inner.source(access, region).await?;
        Ok(Arc::new(FaultySource {
            inner,
            region: region.to_string(),
            faults: self.faults.clone(),
        }))
    }

    async fn iam(&self, access: &AccountAccess) -> Result<Arc<dyn IamSource>, AwsError> {
        let inner = self.inner.iam(access).await?;
        Ok(Arc::new(FaultyIam {
            inner,
            account_id: access.account_id.clone(),
            faults: self.faults.clone(),
        }))
    }

    async fn caller_arn(&self, access: &AccountAccess, region: &str) -> Result<String, AwsError> {
        self.inner.caller_arn(access, region).await
    }

    async fn default_account(&self) -> Result<(String, String), AwsError> {
        self.inner.default_account().await
    }
}

struct FaultySource {
    inner: Arc<dyn KmsSource>,
    region: String,
    faults: Arc<Mutex<Faults>>,
}

impl FaultySource {
    fn check<F: Fn(&Faults) -> bool>(&self, f: F) -> bool {
        f(&self.faults.lock().unwrap())
    }
}

fn throttled(operation: &'static str) -> AwsError {
    AwsError::Service {
        operation,
        code: "ThrottlingException".into(),
        message: "Rate exceeded (injected)".into(),
    }
}

fn denied(operation: &'static str) -> AwsError {
    AwsError::AccessDenied {
        operation,
        message: "not authorized (injected)".into(),
    }
}

#[async_trait]
impl KmsSource for FaultySource {
    async fn list_keys(&self) -> Result<Vec<KeyRef>, AwsError> {
        if self.check(|f| f.failing_regions.contains(&self.region)) {
            return Err(throttled("ListKeys"));
        }
        let keys = self.inner.list_keys().await?;
        let hidden = self.faults.lock().unwrap().hidden_keys.clone();
        Ok(keys
            .into_iter()
            .filter(|k| !hidden.contains(&k.key_id))
            .collect())
    }

    async fn list_aliases(&self) -> Result<Vec<Alias>, AwsError> {
        self.inner.list_aliases().await
    }

    async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, AwsError> {
        if self.check(|f| f.failing_keys.contains(key_id)) {
            return Err(throttled("DescribeKey"));
        }
        if self.check(|f| f.denied_describe.contains(key_id)) {
            return Err(denied("DescribeKey"));
        }
        let mut meta = self.inner.describe_key(key_id).await?;
        if self.check(|f| f.aws_managed.contains(key_id)) {
            meta.key_manager = "AWS".into();
        }
        Ok(meta)
    }

    async fn get_key_policy(&self, key_id: &str) -> Result<String, AwsError> {
        if self.check(|f| f.denied_policies.contains(key_id)) {
            return Err(AwsError::AccessDenied {
                operation: "GetKeyPolicy",
                message: "not authorized (injected)".into(),
            });
        }
        self.inner.get_key_policy(key_id).await
    }

    async fn list_resource_tags(&self, key_id: &str) -> Result<Vec<(String, String)>, AwsError> {
        if self.check(|f| f.denied_tags.contains(key_id)) {
            return Err(denied("ListResourceTags"));
        }
        self.inner.list_resource_tags(key_id).await
    }

    async fn get_key_rotation_status(&self, key_id: &str) -> Result<bool, AwsError> {
        self.inner.get_key_rotation_status(key_id).await
    }

    async fn list_grants(&self, key_id: &str) -> Result<Vec<Grant>, AwsError> {
        if self.check(|f| f.denied_grants.contains(key_id)) {
            return Err(denied("ListGrants"));
        }
        self.inner.list_grants(key_id).await
    }
}

/// The IAM reader of one account; its faults strike at the read, as AWS's would.
struct FaultyIam {
    inner: Arc<dyn IamSource>,
    account_id: String,
    faults: Arc<Mutex<Faults>>,
}

#[async_trait]
impl IamSource for FaultyIam {
    async fn authorization_details(&self) -> Result<IamInventory, AwsError> {
        let (denied, failing) = {
            let f = self.faults.lock().unwrap();
            (
                f.denied_iam.contains(&self.account_id),
                f.failing_iam.contains(&self.account_id),
            )
        };
        if denied {
            return Err(AwsError::AccessDenied {
                operation: "GetAccountAuthorizationDetails",
                message: "not authorized (injected)".into(),
            });
        }
        if failing {
            return Err(throttled("GetAccountAuthorizationDetails"));
        }
        self.inner.authorization_details().await
    }
}
