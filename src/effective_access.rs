//! Effective access for the API, the dashboard and remediation: loads a key's policy, grants and
//! its account's IAM inventory from the store, and runs the pure evaluation of `access`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::access::{
    AccessError, AccessImpact, AccessIndex, AccessInput, AccessTable, GrantInput, IamInventory,
    KeyInput, KeyPolicyInput, PrincipalKeys, evaluate_access, impact, keys_for_principal,
};
use crate::store::{KeyRow, Store, StoreError};

/// Why access could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EffectiveAccessError {
    /// The key's policy has never been read (KMS-UNREADABLE): nobody's access is known.
    #[error("the policy of {0} has not been read, so its access is unknown")]
    PolicyUnknown(String),
    #[error(transparent)]
    Invalid(#[from] AccessError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How current the IAM side of an evaluation is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InventoryStatus {
    /// When the account's IAM inventory was last read; `None`: never (IAM identities unknown).
    pub fetched_at: Option<DateTime<Utc>>,
    /// The last read failure, when the newest read failed (the previous inventory is used).
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// An account's compiled inventory and how current it is.
struct AccountIndex {
    index: Option<Arc<AccessIndex>>,
    status: InventoryStatus,
}

/// Compiled inventories by content hash: compiling parses every policy of the account, and the
/// same content always compiles to the same index, so entries never go stale.
static COMPILED: Mutex<Vec<(String, Arc<AccessIndex>)>> = Mutex::new(Vec::new());
/// How many compiled inventories are kept (most recently used first).
const COMPILED_KEPT: usize = 16;

fn compiled(sha256: &str, inventory: &str) -> Option<Arc<AccessIndex>> {
    {
        let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = cache.iter().position(|(sha, _)| sha == sha256) {
            let entry = cache.remove(i);
            let index = entry.1.clone();
            cache.insert(0, entry);
            return Some(index);
        }
    }
    let parsed: IamInventory = match serde_json::from_str(inventory) {
        Ok(parsed) => parsed,
        Err(e) => {
            tracing::warn!(error = %e, "the stored IAM inventory does not parse");
            return None;
        }
    };
    let index = Arc::new(AccessIndex::new(&parsed));
    let mut cache = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    cache.insert(0, (sha256.to_string(), index.clone()));
    cache.truncate(COMPILED_KEPT);
    Some(index)
}

async fn account_index(store: &dyn Store, account_id: &str) -> Result<AccountIndex, StoreError> {
    let Some(row) = store.iam_inventory(account_id).await? else {
        return Ok(AccountIndex {
            index: None,
            status: InventoryStatus::default(),
        });
    };
    let index = match (&row.sha256, &row.inventory) {
        (Some(sha), Some(text)) => compiled(sha, text),
        _ => None,
    };
    Ok(AccountIndex {
        index,
        status: InventoryStatus {
            fetched_at: row.fetched_at,
            last_error: row.last_error,
            last_error_at: row.last_error_at,
        },
    })
}

fn grants_of(key: &KeyRow) -> Vec<GrantInput> {
    key.key
        .grants
        .iter()
        .map(|g| GrantInput {
            grant_id: g.grant_id.clone(),
            grantee_principal: g.grantee_principal.clone(),
            operations: g.operations.clone(),
        })
        .collect()
}

async fn current_policy(store: &dyn Store, key: &KeyRow) -> Result<String, EffectiveAccessError> {
    let unknown = || EffectiveAccessError::PolicyUnknown(key.key.arn.clone());
    let sha = key.policy_sha256.as_deref().ok_or_else(unknown)?;
    store
        .policy_versions(&key.key.arn)
        .await?
        .into_iter()
        .rev()
        .find(|v| v.sha256 == sha)
        .map(|v| v.text)
        .ok_or_else(unknown)
}

/// Who can use or manage a key today.
#[derive(Debug, Clone, Serialize)]
pub struct KeyAccessReport {
    pub table: AccessTable,
    pub inventory: InventoryStatus,
}

/// The access table of a key's current policy.
pub async fn key_access(
    store: &dyn Store,
    key: &KeyRow,
) -> Result<KeyAccessReport, EffectiveAccessError> {
    let policy = current_policy(store, key).await?;
    let account = account_index(store, &key.key.account_id).await?;
    let grants = grants_of(key);
    let table = evaluate_access(&AccessInput {
        key_arn: &key.key.arn,
        account_id: &key.key.account_id,
        key_policy: KeyPolicyInput::Text(&policy),
        index: account.index.as_deref(),
        grants: &grants,
    })?;
    Ok(KeyAccessReport {
        table,
        inventory: account.status,
    })
}

/// Who loses, keeps and gains access if `proposed` replaces `base` on `key`; `None` when the
/// account's IAM inventory has never been read (what IAM grants is then unknown).
pub async fn fix_impact(
    store: &dyn Store,
    key: &KeyRow,
    base: &str,
    proposed: &str,
) -> Result<Option<AccessImpact>, EffectiveAccessError> {
    let account = account_index(store, &key.key.account_id).await?;
    let Some(index) = account.index else {
        return Ok(None);
    };
    let grants = grants_of(key);
    let table = |policy: &str| {
        evaluate_access(&AccessInput {
            key_arn: &key.key.arn,
            account_id: &key.key.account_id,
            key_policy: KeyPolicyInput::Text(policy),
            index: Some(&index),
            grants: &grants,
        })
    };
    Ok(Some(impact(&table(base)?, &table(proposed)?)))
}

/// The keys a principal can use, over every live key with a readable policy.
#[derive(Debug, Clone, Serialize)]
pub struct PrincipalKeysReport {
    pub keys: PrincipalKeys,
    /// The IAM inventory status of every account with keys, by account id.
    pub inventories: BTreeMap<String, InventoryStatus>,
}

/// The reverse view: which keys `principal` can use, and how. Identity policies are read from
/// the inventory of each key's own account (a principal of another account reaches a key only
/// through its key policy or grants).
pub async fn principal_keys(
    store: &dyn Store,
    principal: &str,
    account: Option<&str>,
) -> Result<PrincipalKeysReport, EffectiveAccessError> {
    let mut by_account: BTreeMap<String, Vec<KeyInput>> = BTreeMap::new();
    for (key, policy) in store.key_policies(account).await? {
        let grants = grants_of(&key);
        by_account
            .entry(key.key.account_id.clone())
            .or_default()
            .push(KeyInput {
                key_arn: key.key.arn,
                account_id: key.key.account_id,
                policy,
                grants,
            });
    }
    let mut report = PrincipalKeysReport {
        keys: PrincipalKeys {
            principal: principal.to_string(),
            evaluated_as: principal.to_string(),
            keys: Vec::new(),
            unreadable_keys: Vec::new(),
        },
        inventories: BTreeMap::new(),
    };
    for (account_id, keys) in by_account {
        let index = account_index(store, &account_id).await?;
        let found = keys_for_principal(index.index.as_deref(), &keys, principal);
        report.keys.evaluated_as = found.evaluated_as;
        report.keys.keys.extend(found.keys);
        report.keys.unreadable_keys.extend(found.unreadable_keys);
        report.inventories.insert(account_id, index.status);
    }
    Ok(report)
}
