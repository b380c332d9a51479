//! The IAM side of a sync pass: reads an account's inventory once per pass, keeps the last good
//! one when a read fails, and turns identity policies that decrypt with every key into findings
//! for the keys that delegate to IAM.

use std::collections::BTreeSet;

use super::{SyncService, Target, sha256_hex};
use crate::access::{DecryptAllKeysPolicy, IamInventory, decrypt_all_keys};
use crate::policy::RuleId;
use crate::store::NewFinding;

/// What the key evaluation of one account needs from IAM in this pass.
#[derive(Debug, Clone, Default)]
pub struct AccountIam {
    /// Findings that every key of the account whose policy delegates to IAM gets.
    pub findings: Vec<NewFinding>,
    /// Changes whenever `findings` do, so keys are re-evaluated (part of the evaluation key).
    pub digest: String,
    /// Why this pass could not read the inventory (the stored one was used); for the sync runs.
    pub error: Option<String>,
}

impl SyncService {
    /// Reads the account's IAM inventory and stores it (when it changed); on failure records the
    /// error and falls back to the stored inventory.
    #[tracing::instrument(skip_all, fields(account = %target.account_id))]
    pub(super) async fn refresh_iam(&self, target: &Target) -> AccountIam {
        let now = self.clock.now();
        let read = async {
            let source = self.connector.iam(&target.access).await?;
            source.authorization_details().await
        }
        .await;
        let (inventory, error) = match read {
            Ok(inventory) => {
                let stored = match serde_json::to_string(&inventory) {
                    Ok(json) => {
                        let sha = sha256_hex(&json);
                        self.store
                            .save_iam_inventory(&target.account_id, &sha, &json, now)
                            .await
                            .map_err(|e| format!("could not store the IAM inventory: {e}"))
                    }
                    Err(e) => Err(format!("could not serialise the IAM inventory: {e}")),
                };
                match stored {
                    Ok(changed) => {
                        tracing::info!(
                            users = inventory.users.len(),
                            roles = inventory.roles.len(),
                            groups = inventory.groups.len(),
                            policies = inventory.policies.len(),
                            changed,
                            "IAM inventory read"
                        );
                        (Some(inventory), None)
                    }
                    Err(e) => (Some(inventory), Some(e)),
                }
            }
            Err(e) => {
                let error = format!("IAM inventory not read, the previous one is kept: {e}");
                tracing::warn!(error = %error, "IAM read failed");
                if let Err(e) = self
                    .store
                    .record_iam_error(&target.account_id, &error, now)
                    .await
                {
                    tracing::warn!(error = %e, "could not record the IAM read failure");
                }
                (self.stored_inventory(&target.account_id).await, Some(error))
            }
        };
        self.metrics
            .observe_iam_read(&target.account_id, error.is_none());
        let findings = inventory
            .as_ref()
            .map(decrypt_all_findings)
            .unwrap_or_default();
        let digest =
            sha256_hex(&serde_json::to_string(&findings_key(&findings)).unwrap_or_default());
        AccountIam {
            findings,
            digest,
            error,
        }
    }

    async fn stored_inventory(&self, account_id: &str) -> Option<IamInventory> {
        let row = match self.store.iam_inventory(account_id).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(error = %e, "could not load the stored IAM inventory");
                return None;
            }
        };
        match serde_json::from_str(row.inventory.as_deref()?) {
            Ok(inventory) => Some(inventory),
            Err(e) => {
                tracing::warn!(error = %e, "the stored IAM inventory does not parse");
                None
            }
        }
    }
}

/// The parts of the findings that identify and describe them, for the digest.
fn findings_key(findings: &[NewFinding]) -> Vec<(&str, &str)> {
    findings
        .iter()
        .map(|f| (f.locator.as_str(), f.message.as_str()))
        .collect()
}

/// One finding per identity-policy statement that decrypts with every key and is held by some
/// identity of the account (a group counts only when it has members).
pub fn decrypt_all_findings(inventory: &IamInventory) -> Vec<NewFinding> {
    let members: BTreeSet<&str> = inventory
        .users
        .iter()
        .flat_map(|u| u.groups.iter().map(String::as_str))
        .collect();
    let held = |p: &DecryptAllKeysPolicy| {
        p.attached_to.iter().any(
            |arn| match inventory.groups.iter().find(|g| &g.arn == arn) {
                Some(group) => members.contains(group.name.as_str()),
                None => true,
            },
        )
    };
    let rule = RuleId::IamDecryptAllKeys;
    decrypt_all_keys(inventory)
        .into_iter()
        .filter(held)
        .map(|p| {
            let who = match p.attached_to.len() {
                1 => p.attached_to[0].clone(),
                n => format!("{n} identities"),
            };
            NewFinding {
                rule_id: rule.as_str().to_string(),
                locator: format!("iam:{}#{}", p.policy, p.statement_index),
                severity: rule.severity().as_str().to_string(),
                statement_index: None,
                sid: p.sid.clone(),
                message: format!(
                    "IAM policy {} (statement {}) allows {} on every key and is held by {who}; \
                     this key delegates to IAM, so they can decrypt with it (Security Hub {}).",
                    p.policy,
                    p.statement_index,
                    p.actions.join(" and "),
                    p.security_hub_control
                ),
            }
        })
        .collect()
}
