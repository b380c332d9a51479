//! IAM-KMS-DECRYPT-ALL-KEYS: identity policies that allow decryption with every key (Security
//! Hub KMS.1 for managed policies, KMS.2 for inline ones).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::catalogue::ActionMask;
use super::identity::{IdentityStatement, compile};
use super::inventory::IamInventory;
use super::table::AccessTable;
use crate::policy::matching::Arn;

/// The rule id stored with each finding.
pub const DECRYPT_ALL_KEYS_RULE: &str = "IAM-KMS-DECRYPT-ALL-KEYS";

/// Managed or inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Managed,
    Inline,
}

/// One statement of one identity policy that allows decryption with every key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecryptAllKeysPolicy {
    /// The managed policy ARN, or `inline:<identity>/<name>`: the finding's locator.
    pub policy: String,
    pub kind: PolicyKind,
    /// True for AWS managed policies (`arn:aws:iam::aws:policy/…`), which customers cannot edit.
    pub aws_managed: bool,
    /// `KMS.1` (managed) or `KMS.2` (inline).
    pub security_hub_control: String,
    pub statement_index: usize,
    pub sid: Option<String>,
    /// Which of kms:Decrypt and kms:ReEncryptFrom it allows.
    pub actions: Vec<String>,
    /// The statement's `Condition` block, when it has one: it may narrow the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
    /// ARNs of the users, groups and roles it is attached to (the owner, for inline), sorted.
    pub attached_to: Vec<String>,
}

impl DecryptAllKeysPolicy {
    /// True when the policy reaches the table's key: the key delegates to IAM and some identity
    /// of the key's account holds the policy. Group attachments count when a member is a user
    /// of the table.
    pub fn reaches(&self, table: &AccessTable, inventory: &IamInventory) -> bool {
        if !table.delegates_to_iam || inventory.account_id != table.account_id {
            return false;
        }
        self.attached_to.iter().any(|arn| {
            if let Some(group) = inventory.groups.iter().find(|g| &g.arn == arn) {
                inventory
                    .users
                    .iter()
                    .any(|u| u.groups.contains(&group.name))
            } else {
                Arn::parse(arn).is_some_and(|a| a.account == table.account_id)
            }
        })
    }
}

/// Every identity-policy statement that allows kms:Decrypt or kms:ReEncryptFrom on all keys,
/// sorted by policy then statement.
pub fn decrypt_all_keys(inventory: &IamInventory) -> Vec<DecryptAllKeysPolicy> {
    let decrypt =
        ActionMask::of_action("kms:Decrypt").union(ActionMask::of_action("kms:ReEncryptFrom"));
    let mut out = Vec::new();
    let mut report = |policy: String, kind: PolicyKind, text: &str, attached_to: Vec<String>| {
        for st in compile(text).statements {
            if st.allow && st.actions.intersects(decrypt) && covers_every_key(&st) {
                let mut attached_to = attached_to.clone();
                attached_to.sort();
                attached_to.dedup();
                out.push(DecryptAllKeysPolicy {
                    aws_managed: policy.starts_with("arn:aws:iam::aws:policy/"),
                    security_hub_control: match kind {
                        PolicyKind::Managed => "KMS.1",
                        PolicyKind::Inline => "KMS.2",
                    }
                    .to_string(),
                    policy: policy.clone(),
                    kind,
                    statement_index: st.index,
                    sid: st.sid.clone(),
                    actions: st
                        .actions
                        .intersect(decrypt)
                        .names()
                        .map(str::to_string)
                        .collect(),
                    condition: st.condition_json.clone(),
                    attached_to,
                });
            }
        }
    };
    for p in &inventory.policies {
        let holders = inventory
            .users
            .iter()
            .filter(|u| u.attached_policies.contains(&p.arn))
            .map(|u| u.arn.clone())
            .chain(
                inventory
                    .groups
                    .iter()
                    .filter(|g| g.attached_policies.contains(&p.arn))
                    .map(|g| g.arn.clone()),
            )
            .chain(
                inventory
                    .roles
                    .iter()
                    .filter(|r| r.attached_policies.contains(&p.arn))
                    .map(|r| r.arn.clone()),
            )
            .collect();
        report(p.arn.clone(), PolicyKind::Managed, &p.document, holders);
    }
    let owners = inventory
        .users
        .iter()
        .map(|u| (&u.name, &u.arn, &u.inline_policies))
        .chain(
            inventory
                .groups
                .iter()
                .map(|g| (&g.name, &g.arn, &g.inline_policies)),
        )
        .chain(
            inventory
                .roles
                .iter()
                .map(|r| (&r.name, &r.arn, &r.inline_policies)),
        );
    for (name, arn, inline) in owners {
        for p in inline {
            report(
                format!("inline:{name}/{}", p.name),
                PolicyKind::Inline,
                &p.document,
                vec![arn.clone()],
            );
        }
    }
    out.sort_by(|a, b| {
        (&a.policy, a.statement_index, &a.attached_to).cmp(&(
            &b.policy,
            b.statement_index,
            &b.attached_to,
        ))
    });
    out
}

/// True when the statement's resources cover every key of every account and region. Checked on
/// sample key ARNs that differ in every field a pattern could pin (region, account, key id,
/// multi-Region keys): a pattern that matches them all pins nothing that matters.
fn covers_every_key(st: &IdentityStatement) -> bool {
    const SAMPLES: [&str; 4] = [
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws:kms:eu-west-3:444455556666:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws:kms:ap-southeast-2:000000000000:key/0",
        "arn:aws:kms:me-central-1:987654321098:key/ffffffff-ffff-ffff-ffff-ffffffffffff",
    ];
    SAMPLES.iter().all(|k| st.covers_key(k))
}
