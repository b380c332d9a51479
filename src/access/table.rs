//! The access table's data model (stored as JSON, returned by the API) and its filters.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::catalogue::ActionGroup;

/// What kind of principal an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalType {
    /// An account principal (`arn:aws:iam::ID:root` or a bare account id): the root user, and
    /// through delegation the account's IAM identities.
    Account,
    User,
    Role,
    /// An STS session ARN (`arn:aws:sts::ID:assumed-role/Role/Session`).
    AssumedRole,
    /// An AWS service principal (`logs.amazonaws.com`).
    Service,
    /// A `Federated` principal or an STS federated-user session.
    Federated,
    /// `*`, or an ARN with a wildcard account: everyone.
    Anyone,
    /// Anything else (canonical user ids, unique ids, malformed strings).
    Other,
}

impl PrincipalType {
    /// Every type, in display order.
    pub const ALL: [PrincipalType; 8] = [
        PrincipalType::Account,
        PrincipalType::User,
        PrincipalType::Role,
        PrincipalType::AssumedRole,
        PrincipalType::Service,
        PrincipalType::Federated,
        PrincipalType::Anyone,
        PrincipalType::Other,
    ];

    /// The name used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::User => "user",
            Self::Role => "role",
            Self::AssumedRole => "assumed_role",
            Self::Service => "service",
            Self::Federated => "federated",
            Self::Anyone => "anyone",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for PrincipalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrincipalType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown principal type {s:?}"))
    }
}

/// Whether an action is certainly allowed or depends on the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// Some path grants it with no open condition, and no Deny might apply.
    Allowed,
    /// Every path depends on a condition the evaluator cannot decide statically, or a
    /// conditional Deny might remove it: the conditions are shown on the reasons.
    Conditional,
}

/// One policy statement or grant that contributes to an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Reason {
    /// A key-policy statement that names the principal (or `*`).
    KeyPolicy {
        statement_index: usize,
        sid: Option<String>,
        /// The statement's `Condition` block, when it cannot be decided for this principal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Value>,
    },
    /// The key-policy statement that lets IAM policies of the account grant the key
    /// (KMS-DELEGATION); IAM access needs it and an identity policy.
    Delegation {
        statement_index: usize,
        sid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Value>,
    },
    /// An identity-policy statement of the principal.
    IdentityPolicy {
        /// The managed policy ARN, or `inline:<identity>/<name>`.
        policy: String,
        /// `user`, `role` or `group:<name>`.
        via: String,
        statement_index: usize,
        sid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Value>,
    },
    /// The permissions boundary that also allows the action; `statement_index` is `None` when
    /// the boundary policy is missing or unreadable (the entry is then conditional).
    Boundary {
        policy: String,
        statement_index: Option<usize>,
        sid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Value>,
    },
    /// A grant on the key whose grantee is the principal.
    Grant { grant_id: String },
}

/// Reasons shared by every action they apply to: a principal with `kms:*` through one statement
/// holds that statement once, not once per action (building tables for a thousand keys is
/// otherwise mostly copying reasons).
pub type Reasons = Arc<[Reason]>;

/// One KMS action a principal has on the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionAccess {
    /// `kms:Decrypt`, as the catalogue spells it (borrowed from it when evaluated).
    pub action: Cow<'static, str>,
    pub group: ActionGroup,
    pub access: AccessLevel,
    /// Everything that allows it.
    pub reasons: Reasons,
    /// Deny statements with open conditions that might remove it (unconditional Denies remove
    /// the action from the table instead).
    #[serde(default, skip_serializing_if = "no_reasons")]
    pub denies: Reasons,
}

fn no_reasons(reasons: &Reasons) -> bool {
    reasons.is_empty()
}

/// One principal and what it can do with the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrincipalAccess {
    /// The ARN (account ids are written as their root ARN), service name, or `*`.
    pub principal: String,
    pub principal_type: PrincipalType,
    /// In catalogue order (admin, cryptographic, grant, read); empty when it has no access.
    pub actions: Vec<ActionAccess>,
    /// Policies whose permissions are unknown, and other caveats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl PrincipalAccess {
    /// True when some action is in `group`.
    pub fn has_group(&self, group: ActionGroup) -> bool {
        self.actions.iter().any(|a| a.group == group)
    }
}

/// A key-policy statement, by position and Sid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRef {
    pub statement_index: usize,
    pub sid: Option<String>,
}

/// Who can use or manage one key, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTable {
    pub key_arn: String,
    pub account_id: String,
    /// True when the key policy lets IAM policies grant the key (KMS-DELEGATION).
    pub delegates_to_iam: bool,
    /// The statements that delegate.
    pub delegation_statements: Vec<StatementRef>,
    /// False when the account's IAM inventory has not been synced: IAM users and roles are then
    /// missing from the table and what IAM policies grant is unknown.
    pub identities_known: bool,
    /// Sorted by principal.
    pub principals: Vec<PrincipalAccess>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The filters of `GET /api/v1/keys/{key}/access`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessFilter {
    /// Keep only actions of this group, and only principals that have one.
    pub group: Option<ActionGroup>,
    /// Keep only principals of this type.
    pub principal_type: Option<PrincipalType>,
}

impl AccessTable {
    /// The principal's entry.
    pub fn principal(&self, principal: &str) -> Option<&PrincipalAccess> {
        self.principals
            .binary_search_by(|p| p.principal.as_str().cmp(principal))
            .ok()
            .map(|i| &self.principals[i])
    }

    /// The table restricted to a group and/or principal type (same key, notes and flags).
    pub fn filtered(&self, filter: &AccessFilter) -> AccessTable {
        let principals = self
            .principals
            .iter()
            .filter(|p| filter.principal_type.is_none_or(|t| p.principal_type == t))
            .filter_map(|p| match filter.group {
                None => Some(p.clone()),
                Some(group) => {
                    let actions: Vec<_> = p
                        .actions
                        .iter()
                        .filter(|a| a.group == group)
                        .cloned()
                        .collect();
                    (!actions.is_empty()).then(|| PrincipalAccess {
                        actions,
                        ..p.clone()
                    })
                }
            })
            .collect();
        AccessTable {
            principals,
            ..self.clone()
        }
    }
}
