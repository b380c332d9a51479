//! Reading one key from KMS and deciding whether it changed since the last pass.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::aws::{AwsError, KeyMetadata, KeyRef, KmsSource};
use crate::policy::{self, EvalContext, KeyFacts, KeyManager, RULESET_VERSION, RuleId};
use crate::store::{
    GrantRecord, KeyFingerprint, KeyRecord, KeyUpdate, NewFinding, PolicyState, Store,
};

/// What reading one key produced.
#[derive(Debug)]
pub enum KeyFetch {
    /// The key vanished between ListKeys and DescribeKey.
    Gone,
    /// Same metadata, policy and evaluation as stored: nothing to write.
    Unchanged,
    Changed(Box<KeyUpdate>),
    /// Reading failed (after retries): the key is left as stored.
    Failed(AwsError),
}

/// Identifies what findings were computed with: the rule-set version, the account's trusted
/// accounts and the account's IAM findings (their digest). A change to any re-evaluates every
/// key even if its policy did not change.
pub fn evaluation_key(trusted_accounts: &[String], iam_digest: &str) -> String {
    let mut trusted = trusted_accounts.to_vec();
    trusted.sort();
    trusted.dedup();
    format!(
        "rules-v{RULESET_VERSION};trusted={};iam={iam_digest}",
        trusted.join(",")
    )
}

/// SHA-256 of text, as lower-case hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What the keys of one account·region are evaluated with in a pass.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// [`evaluation_key`]: stored with the findings, compared for change detection.
    pub key: String,
    pub trusted_accounts: Vec<String>,
    /// Account-level IAM findings that every key delegating to IAM gets.
    pub iam_findings: Vec<NewFinding>,
}

/// Reads a key's metadata, policy, tags, rotation and grants, and evaluates it when it changed.
/// AccessDenied on the policy is a KMS-UNREADABLE finding, not a failure. AccessDenied on
/// DescribeKey, GetKeyRotationStatus, ListResourceTags or ListGrants keeps what `store` holds
/// for the key (a refusal says nothing about the key) and names the refused operations in the
/// key's metadata.
pub async fn fetch_key(
    source: &dyn KmsSource,
    store: &dyn Store,
    key: &KeyRef,
    region: &str,
    aliases: Vec<String>,
    known: Option<&KeyFingerprint>,
    evaluation: &Evaluation,
) -> KeyFetch {
    match read_key(source, key, region, aliases).await {
        Ok(None) => KeyFetch::Gone,
        Ok(Some((mut record, policy, refused))) => {
            if !refused.is_empty() && known.is_some() {
                match stored_record(store, &key.arn).await {
                    Ok(Some(stored)) => keep_stored(&mut record, stored, &refused),
                    Ok(None) => {}
                    Err(e) => return KeyFetch::Failed(e),
                }
            }
            record.metadata.unread_operations = refused.iter().map(|r| r.to_string()).collect();
            let fingerprint = fingerprint(&record);
            let (sha, error) = match &policy {
                PolicyState::Readable { sha256, .. } => (Some(sha256.as_str()), None),
                PolicyState::Unreadable { reason } => (None, Some(reason.as_str())),
            };
            if let Some(k) = known
                && k.fingerprint == fingerprint
                && k.evaluation == evaluation.key
                && policy_matches(k, sha, error)
            {
                return KeyFetch::Unchanged;
            }
            let mut findings = evaluate(&record, &policy, &evaluation.trusted_accounts);
            // Identity policies only reach keys whose policy delegates to IAM.
            if findings.iter().any(|f| f.rule_id == "KMS-DELEGATION") {
                findings.extend(evaluation.iam_findings.iter().cloned());
            }
            KeyFetch::Changed(Box::new(KeyUpdate {
                remediable: record.key_manager == "CUSTOMER",
                key: record,
                fingerprint,
                policy,
                evaluation: evaluation.key.clone(),
                findings,
            }))
        }
        Err(e) => KeyFetch::Failed(e),
    }
}

/// The key as the store holds it.
async fn stored_record(store: &dyn Store, arn: &str) -> Result<Option<KeyRecord>, AwsError> {
    let rows = store
        .find_keys(arn)
        .await
        .map_err(|e| AwsError::Transport {
            operation: "store",
            message: e.to_string(),
        })?;
    Ok(rows.into_iter().map(|r| r.key).find(|k| k.arn == arn))
}

/// Replaces what the refused operations would have said with the stored values.
fn keep_stored(record: &mut KeyRecord, stored: KeyRecord, refused: &[&'static str]) {
    if refused.contains(&DESCRIBE_KEY) {
        let aliases = std::mem::take(&mut record.aliases);
        *record = KeyRecord { aliases, ..stored };
        return;
    }
    if refused.contains(&ROTATION) {
        record.rotation_enabled = stored.rotation_enabled;
    }
    if refused.contains(&TAGS) {
        record.tags = stored.tags;
    }
    if refused.contains(&GRANTS) {
        record.grants = stored.grants;
    }
}

const DESCRIBE_KEY: &str = "DescribeKey";
const ROTATION: &str = "GetKeyRotationStatus";
const TAGS: &str = "ListResourceTags";
const GRANTS: &str = "ListGrants";

fn policy_matches(known: &KeyFingerprint, sha: Option<&str>, error: Option<&str>) -> bool {
    match (sha, error) {
        (Some(sha), _) => {
            known.policy_error.is_none() && known.policy_sha256.as_deref() == Some(sha)
        }
        (None, Some(error)) => known.policy_error.as_deref() == Some(error),
        (None, None) => false,
    }
}

/// A key as read, its policy, and the operations that were refused (their values are blank).
type KeyRead = (KeyRecord, PolicyState, Vec<&'static str>);

async fn read_key(
    source: &dyn KmsSource,
    key: &KeyRef,
    region: &str,
    aliases: Vec<String>,
) -> Result<Option<KeyRead>, AwsError> {
    let mut refused = Vec::new();
    let meta = match source.describe_key(&key.key_id).await {
        Ok(m) => m,
        Err(AwsError::NotFound { .. }) => return Ok(None),
        Err(AwsError::AccessDenied { message, .. }) => {
            // Without DescribeKey nothing but the ARN is known; the key is a blind spot.
            let record = blind_record(key, region, aliases);
            let reason = format!("DescribeKey: access denied: {message}");
            let policy = PolicyState::Unreadable { reason };
            return Ok(Some((record, policy, vec![DESCRIBE_KEY])));
        }
        Err(e) => return Err(e),
    };
    let policy = match source.get_key_policy(&key.key_id).await {
        Ok(text) => PolicyState::Readable {
            sha256: sha256_hex(&text),
            text,
        },
        Err(AwsError::AccessDenied { message, .. }) => PolicyState::Unreadable {
            reason: format!("GetKeyPolicy: access denied: {message}"),
        },
        Err(AwsError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let customer = meta.key_manager == "CUSTOMER";
    let pending = matches!(
        meta.key_state.as_str(),
        "PendingDeletion" | "PendingReplicaDeletion"
    );
    let rotation_enabled =
        if customer && meta.key_spec == "SYMMETRIC_DEFAULT" && meta.origin == "AWS_KMS" && !pending
        {
            match source.get_key_rotation_status(&key.key_id).await {
                Ok(on) => Some(on),
                Err(AwsError::AccessDenied { .. }) => {
                    refused.push(ROTATION);
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
    // AWS-managed keys carry no customer tags.
    let tags = if customer {
        match source.list_resource_tags(&key.key_id).await {
            Ok(tags) => tags.into_iter().collect(),
            Err(AwsError::AccessDenied { .. }) => {
                refused.push(TAGS);
                BTreeMap::new()
            }
            Err(e) => return Err(e),
        }
    } else {
        BTreeMap::new()
    };
    let grants = match source.list_grants(&key.key_id).await {
        Ok(grants) => grants
            .into_iter()
            .map(|g| GrantRecord {
                grant_id: g.grant_id,
                name: g.name,
                grantee_principal: g.grantee_principal,
                retiring_principal: g.retiring_principal,
                issuing_account: g.issuing_account,
                operations: g.operations,
            })
            .collect(),
        Err(AwsError::AccessDenied { .. }) => {
            refused.push(GRANTS);
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    Ok(Some((
        record_from(meta, key, region, aliases, rotation_enabled, tags, grants),
        policy,
        refused,
    )))
}

fn record_from(
    meta: KeyMetadata,
    key: &KeyRef,
    region: &str,
    aliases: Vec<String>,
    rotation_enabled: Option<bool>,
    tags: BTreeMap<String, String>,
    mut grants: Vec<GrantRecord>,
) -> KeyRecord {
    grants.sort_by(|a, b| a.grant_id.cmp(&b.grant_id));
    KeyRecord {
        arn: if meta.arn.is_empty() {
            key.arn.clone()
        } else {
            meta.arn
        },
        account_id: meta.account_id,
        region: region.to_string(),
        key_id: meta.key_id,
        description: meta.description,
        key_manager: meta.key_manager,
        key_state: meta.key_state,
        key_spec: meta.key_spec,
        key_usage: meta.key_usage,
        origin: meta.origin,
        multi_region: meta.multi_region,
        creation_date: meta.creation_date,
        deletion_date: meta.deletion_date,
        rotation_enabled,
        aliases,
        tags,
        grants,
        metadata: meta.extra,
    }
}

fn blind_record(key: &KeyRef, region: &str, aliases: Vec<String>) -> KeyRecord {
    let account_id = policy::matching::Arn::parse(&key.arn)
        .map(|a| a.account.to_string())
        .unwrap_or_default();
    KeyRecord {
        arn: key.arn.clone(),
        account_id,
        region: region.to_string(),
        key_id: key.key_id.clone(),
        description: String::new(),
        key_manager: "UNKNOWN".to_string(),
        key_state: "Unknown".to_string(),
        key_spec: String::new(),
        key_usage: String::new(),
        origin: String::new(),
        multi_region: false,
        creation_date: None,
        deletion_date: None,
        rotation_enabled: None,
        aliases,
        tags: BTreeMap::new(),
        grants: Vec::new(),
        metadata: Default::default(),
    }
}

/// Everything about the key except its policy, hashed: any change re-evaluates the key.
fn fingerprint(record: &KeyRecord) -> String {
    sha256_hex(&serde_json::to_string(record).unwrap_or_default())
}

fn evaluate(record: &KeyRecord, policy: &PolicyState, trusted: &[String]) -> Vec<NewFinding> {
    let manager = if record.key_manager == "AWS" {
        KeyManager::Aws
    } else {
        KeyManager::Customer
    };
    let mut findings = match policy {
        PolicyState::Readable { text, .. } => policy::evaluate(
            text,
            &EvalContext {
                account_id: &record.account_id,
                key_manager: manager,
                trusted_accounts: trusted,
            },
        ),
        PolicyState::Unreadable { reason } => vec![policy::unreadable(reason)],
    };
    let deletion = record.deletion_date.map(|d| d.to_rfc3339());
    findings.extend(policy::evaluate_key(&KeyFacts {
        key_manager: manager,
        key_spec: &record.key_spec,
        key_state: &record.key_state,
        origin: &record.origin,
        rotation_enabled: record.rotation_enabled,
        deletion_date: deletion.as_deref(),
    }));
    // RULES.md: AWS writes the policies of AWS managed keys and nobody can change them, so
    // only KMS-INVALID is reported for them: not KMS-UNREADABLE, not the key-level rules.
    if manager == KeyManager::Aws {
        findings.retain(|f| f.rule_id == RuleId::Invalid);
    }
    findings
        .into_iter()
        .map(|f| NewFinding {
            rule_id: f.rule_id.as_str().to_string(),
            locator: f.locator,
            severity: f.severity.as_str().to_string(),
            statement_index: f.statement_index.and_then(|i| i64::try_from(i).ok()),
            sid: f.sid,
            message: f.message,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key_manager: &str, key_state: &str) -> KeyRecord {
        KeyRecord {
            arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            key_id: "k".into(),
            description: String::new(),
            key_manager: key_manager.into(),
            key_state: key_state.into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            origin: "AWS_KMS".into(),
            multi_region: false,
            creation_date: None,
            deletion_date: None,
            rotation_enabled: Some(false),
            aliases: Vec::new(),
            tags: BTreeMap::new(),
            grants: Vec::new(),
            metadata: Default::default(),
        }
    }

    fn rules(record: &KeyRecord, policy: &PolicyState) -> Vec<String> {
        let mut rules: Vec<String> = evaluate(record, policy, &[])
            .into_iter()
            .map(|f| f.rule_id)
            .collect();
        rules.sort();
        rules
    }

    #[test]
    fn aws_managed_keys_get_only_kms_invalid() {
        let unreadable = PolicyState::Unreadable {
            reason: "GetKeyPolicy: access denied".into(),
        };
        let invalid = PolicyState::Readable {
            text: "{not json".into(),
            sha256: sha256_hex("{not json"),
        };
        let public =
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#;
        let public = PolicyState::Readable {
            text: public.into(),
            sha256: sha256_hex(public),
        };
        let aws = record("AWS", "PendingDeletion");
        assert!(rules(&aws, &unreadable).is_empty(), "no KMS-UNREADABLE");
        assert!(
            rules(&aws, &public).is_empty(),
            "no policy or key-level rule"
        );
        assert_eq!(rules(&aws, &invalid), vec!["KMS-INVALID"]);
        // customer managed keys get the same inputs judged in full
        let customer = record("CUSTOMER", "Enabled");
        assert_eq!(
            rules(&customer, &unreadable),
            vec!["KMS-ROTATION-DISABLED", "KMS-UNREADABLE"]
        );
        assert!(rules(&customer, &public).contains(&"KMS-PUBLIC".to_string()));
    }
}
