//! The rule catalogue applied to one key policy: each rule in its own file, all pure.

mod admin_can_use;
pub mod catalogue;
mod cross_account;
mod delegation;
mod grant_escalation;
mod invalid;
mod key_state;
mod no_admin;
mod not_action;
mod not_principal;
mod public;
mod wildcard_action;

#[cfg(test)]
mod test_support;

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

use super::document::Policy;
use super::view::{PolicyView, StatementView};

pub use super::actions::{ADMIN_ACTIONS, CRYPTO_ACTIONS, PUT_KEY_POLICY};

pub use delegation::{delegates as delegation_of, names_account_principal};
pub use key_state::{KeyFacts, evaluate_key, unreadable};
pub use no_admin::administrators;

/// Bumped whenever a rule changes meaning, so that stored policies are evaluated again.
pub const RULESET_VERSION: u32 = 1;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Lower-case name, as in JSON and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rule identifiers; their strings are a public contract (API, exports, CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    Delegation,
    Public,
    CrossAccount,
    NoAdmin,
    AdminCanUse,
    WildcardAction,
    NotPrincipal,
    NotAction,
    GrantEscalation,
    Invalid,
    Unreadable,
    RotationDisabled,
    PendingDeletion,
    /// Account-level: an identity policy lets its holders decrypt with every key (found by the
    /// access evaluation from the IAM inventory, never by the key-policy rules).
    IamDecryptAllKeys,
}

impl RuleId {
    /// Every rule, in catalogue order.
    pub const ALL: [RuleId; 14] = [
        RuleId::Delegation,
        RuleId::Public,
        RuleId::CrossAccount,
        RuleId::NoAdmin,
        RuleId::AdminCanUse,
        RuleId::WildcardAction,
        RuleId::NotPrincipal,
        RuleId::NotAction,
        RuleId::GrantEscalation,
        RuleId::Invalid,
        RuleId::Unreadable,
        RuleId::RotationDisabled,
        RuleId::PendingDeletion,
        RuleId::IamDecryptAllKeys,
    ];

    /// The public id, e.g. `KMS-DELEGATION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delegation => "KMS-DELEGATION",
            Self::Public => "KMS-PUBLIC",
            Self::CrossAccount => "KMS-CROSS-ACCOUNT",
            Self::NoAdmin => "KMS-NO-ADMIN",
            Self::AdminCanUse => "KMS-ADMIN-CAN-USE",
            Self::WildcardAction => "KMS-WILDCARD-ACTION",
            Self::NotPrincipal => "KMS-NOT-PRINCIPAL",
            Self::NotAction => "KMS-NOT-ACTION",
            Self::GrantEscalation => "KMS-GRANT-ESCALATION",
            Self::Invalid => "KMS-INVALID",
            Self::Unreadable => "KMS-UNREADABLE",
            Self::RotationDisabled => "KMS-ROTATION-DISABLED",
            Self::PendingDeletion => "KMS-PENDING-DELETION",
            Self::IamDecryptAllKeys => "IAM-KMS-DECRYPT-ALL-KEYS",
        }
    }

    /// The rule's catalogue entry.
    pub fn info(self) -> &'static catalogue::RuleInfo {
        catalogue::info(self)
    }

    /// The rule's severity.
    pub fn severity(self) -> Severity {
        self.info().severity
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuleId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleId::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown rule id {s:?}"))
    }
}

impl Serialize for RuleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One problem found in one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule_id: RuleId,
    pub severity: Severity,
    /// The statement the finding is about, when it is about one.
    pub statement_index: Option<usize>,
    pub sid: Option<String>,
    /// One sentence for a human.
    pub message: String,
    /// Stable identity of the finding within its key (`sid:…`, `statement:N`, `principal:…`,
    /// `key`), so a finding keeps its history while the policy is edited around it.
    pub locator: String,
}

impl Finding {
    /// A finding about one statement.
    pub(crate) fn for_statement(
        rule_id: RuleId,
        policy: &PolicyView<'_>,
        st: &StatementView<'_>,
        message: String,
    ) -> Self {
        Finding {
            rule_id,
            severity: rule_id.severity(),
            statement_index: Some(st.index),
            sid: st.sid.as_deref().map(str::to_string),
            message,
            locator: statement_locator(policy, st),
        }
    }

    /// A finding about the key or its policy as a whole.
    pub(crate) fn for_key(rule_id: RuleId, message: String) -> Self {
        Finding {
            rule_id,
            severity: rule_id.severity(),
            statement_index: None,
            sid: None,
            message,
            locator: "key".to_string(),
        }
    }
}

/// A Sid is the stable name of a statement when it is unique; otherwise only the position is.
fn statement_locator(policy: &PolicyView<'_>, st: &StatementView<'_>) -> String {
    match st.sid.as_deref() {
        Some(sid)
            if !sid.is_empty()
                && policy
                    .statements
                    .iter()
                    .filter(|o| o.sid.as_deref() == Some(sid))
                    .count()
                    == 1 =>
        {
            format!("sid:{sid}")
        }
        _ => format!("statement:{}", st.index),
    }
}

/// Who manages a key: customers may edit its policy, AWS-managed key policies are AWS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyManager {
    #[default]
    Customer,
    Aws,
}

impl KeyManager {
    /// As AWS spells it: `CUSTOMER` or `AWS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "CUSTOMER",
            Self::Aws => "AWS",
        }
    }
}

impl FromStr for KeyManager {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "CUSTOMER" => Ok(Self::Customer),
            "AWS" => Ok(Self::Aws),
            _ => Err(format!("key manager must be CUSTOMER or AWS, not {s:?}")),
        }
    }
}

/// What the rules need to know besides the policy text.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    /// The account that owns the key.
    pub account_id: &'a str,
    pub key_manager: KeyManager,
    /// External accounts the team trusts: they never raise KMS-CROSS-ACCOUNT.
    pub trusted_accounts: &'a [String],
}

impl EvalContext<'_> {
    fn is_trusted_or_own(&self, account: &str) -> bool {
        account == self.account_id || self.trusted_accounts.iter().any(|t| t == account)
    }
}

/// Evaluates policy text: an unparsable policy yields KMS-INVALID and nothing else.
pub fn evaluate(text: &str, ctx: &EvalContext<'_>) -> Vec<Finding> {
    // The fast path: read the text straight into the form the rules read. It declines whatever
    // it does not read exactly as `Policy::parse` would, which then decides (and, for an
    // invalid document, words KMS-INVALID) as it always has.
    if let Some(view) = PolicyView::parse(text) {
        return evaluate_view(&view, ctx);
    }
    match Policy::parse(text) {
        Ok(policy) => evaluate_policy(&policy, ctx),
        Err(err) => vec![invalid::finding(&err)],
    }
}

/// Evaluates a parsed policy against every policy rule, in catalogue order.
pub fn evaluate_policy(policy: &Policy, ctx: &EvalContext<'_>) -> Vec<Finding> {
    evaluate_view(&PolicyView::of(policy), ctx)
}

fn evaluate_view(policy: &PolicyView<'_>, ctx: &EvalContext<'_>) -> Vec<Finding> {
    // AWS writes and owns these policies: nothing in them can be remediated by the customer.
    if ctx.key_manager == KeyManager::Aws {
        return Vec::new();
    }
    let mut findings = Vec::new();
    delegation::check(policy, ctx, &mut findings);
    let public_statements = public::check(policy, ctx, &mut findings);
    cross_account::check(policy, ctx, &public_statements, &mut findings);
    no_admin::check(policy, ctx, &mut findings);
    admin_can_use::check(policy, ctx, &mut findings);
    wildcard_action::check(policy, ctx, &mut findings);
    not_principal::check(policy, &mut findings);
    not_action::check(policy, &mut findings);
    grant_escalation::check(policy, &mut findings);
    findings
}

/// A short human list of a statement's actions, for messages.
pub(crate) fn describe_actions(st: &StatementView<'_>) -> String {
    let list = st.actions.patterns.join(", ");
    if st.actions.negated {
        format!("every action except {list}")
    } else {
        list
    }
}
