//! KMS-ADMIN-CAN-USE: one principal both administers and uses the key (separation of duties).

use std::borrow::Cow;

use super::{EvalContext, Finding, RuleId};
use crate::policy::actions::ActionSet;
use crate::policy::document::PrincipalKind;
use crate::policy::matching::{is_account_id, is_account_principal, root_arn};
use crate::policy::view::PolicyView;

/// How many actions a message names before it only counts them.
const NAMED: usize = 3;

/// The ADMIN (or CRYPTO) actions one principal holds over all statements, and the first
/// [`NAMED`] of them in the order they were first granted, which is the order messages use.
#[derive(Default)]
struct Held {
    set: ActionSet,
    first: [&'static str; NAMED],
    /// How many of `first` are filled: `min(set.len(), NAMED)`.
    named: usize,
}

impl Held {
    fn add(&mut self, granted: ActionSet) {
        // The new actions of one statement come in table order, as they always have.
        for name in granted.without(self.set).names() {
            if self.named == NAMED {
                break;
            }
            self.first[self.named] = name;
            self.named += 1;
        }
        self.set = self.set | granted;
    }

    /// `a, b, c` or `a, b, c, … N actions`.
    fn summary(&self) -> String {
        let len = self.set.len();
        let named = self.first[..self.named].join(", ");
        if len <= NAMED {
            named
        } else {
            format!("{named}, … {len} actions")
        }
    }
}

#[derive(Default)]
struct Powers {
    admin: Held,
    crypto: Held,
    /// The first statement granting anything; `several` once another one does.
    statement: Option<usize>,
    several: bool,
}

pub(super) fn check(policy: &PolicyView<'_>, ctx: &EvalContext<'_>, out: &mut Vec<Finding>) {
    // Keyed by the literal principal string, in first-seen order for stable output.
    let mut by_principal: Vec<(Cow<'_, str>, Powers)> = Vec::new();
    for st in policy.effective_allows() {
        if st.principals.negated {
            continue;
        }
        let admin = st.actions.granted & ActionSet::ADMIN;
        let crypto = st.actions.granted & ActionSet::CRYPTO;
        if admin.is_empty() && crypto.is_empty() {
            continue;
        }
        for (kind, value) in &st.principals.entries {
            if !matches!(kind, PrincipalKind::Aws | PrincipalKind::Service) {
                continue;
            }
            let value = value.as_ref();
            if value == "*" || is_account_principal(value, ctx.account_id) {
                continue;
            }
            let name = if *kind == PrincipalKind::Aws && is_account_id(value) {
                Cow::Owned(root_arn(value))
            } else {
                Cow::Borrowed(value)
            };
            let slot = match by_principal.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    by_principal.push((name, Powers::default()));
                    by_principal.len() - 1
                }
            };
            let powers = &mut by_principal[slot].1;
            powers.admin.add(admin);
            powers.crypto.add(crypto);
            match powers.statement {
                None => powers.statement = Some(st.index),
                Some(i) if i != st.index => powers.several = true,
                Some(_) => {}
            }
        }
    }
    for (principal, powers) in by_principal {
        if powers.admin.set.is_empty() || powers.crypto.set.is_empty() {
            continue;
        }
        let single = powers.statement.filter(|_| !powers.several);
        let sid = single.and_then(|i| policy.statements[i].sid.as_deref().map(str::to_string));
        out.push(Finding {
            rule_id: RuleId::AdminCanUse,
            severity: RuleId::AdminCanUse.severity(),
            statement_index: single,
            sid,
            message: format!(
                "{principal} can both administer the key ({}) and use it ({}).",
                powers.admin.summary(),
                powers.crypto.summary()
            ),
            locator: format!("principal:{principal}"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const ADMIN: &str = r#"{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"}"#;
    /// The Knowledge Center's key-administrator statement.
    const KC_ADMIN_ACTIONS: &str = r#"["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion","kms:CancelKeyDeletion","kms:RotateKeyOnDemand"]"#;
    const USER_ACTIONS: &str = r#"["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"]"#;

    #[test]
    fn fires_when_one_principal_holds_both() {
        table(
            RuleId::AdminCanUse,
            &[
                (
                    &format!(
                        "{},{}",
                        allow(ADMIN, KC_ADMIN_ACTIONS, ""),
                        allow(ADMIN, USER_ACTIONS, "")
                    ),
                    true,
                ),
                (&allow(ADMIN, r#""kms:*""#, ""), true),
                (&allow(ADMIN, r#""*""#, ""), true),
                (
                    &allow(ADMIN, r#"["kms:PutKeyPolicy","kms:Decrypt"]"#, ""),
                    true,
                ),
                (
                    &allow(
                        ADMIN,
                        r#"["kms:ScheduleKeyDeletion","kms:GenerateDataKey"]"#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(ADMIN, r#"["kms:DisableKey","kms:Sign","kms:Verify"]"#, ""),
                    true,
                ),
                (
                    &allow(ADMIN, r#"["kms:EnableKey","kms:ReEncrypt*"]"#, ""),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::444455556666:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                (&allow(r#"{"AWS":"444455556666"}"#, r#""kms:*""#, ""), true),
                (
                    &allow(r#"{"Service":"logs.amazonaws.com"}"#, r#""kms:*""#, ""),
                    true,
                ),
                // conditions are ignored
                (
                    &allow(
                        ADMIN,
                        r#""kms:*""#,
                        r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#,
                    ),
                    true,
                ),
                // bare and ARN forms of one external account are one principal
                (
                    &format!(
                        "{},{}",
                        allow(r#"{"AWS":"444455556666"}"#, r#""kms:PutKeyPolicy""#, ""),
                        allow(
                            r#"{"AWS":"arn:aws:iam::444455556666:root"}"#,
                            r#""kms:Decrypt""#,
                            ""
                        )
                    ),
                    true,
                ),
            ],
        );
    }

    #[test]
    fn does_not_fire() {
        table(
            RuleId::AdminCanUse,
            &[
                // Get*/Describe* reach GetPublicKey, which is not a cryptographic operation
                (&allow(ADMIN, KC_ADMIN_ACTIONS, ""), false),
                (
                    &allow(
                        ADMIN,
                        r#"["kms:Encrypt","kms:Decrypt","kms:ListGrants","kms:RevokeGrant","kms:CreateGrant"]"#,
                        "",
                    ),
                    false,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    false,
                ),
                (&allow(r#"{"AWS":"111122223333"}"#, r#""kms:*""#, ""), false),
                (
                    &allow(
                        r#""*""#,
                        r#""kms:*""#,
                        r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#,
                    ),
                    false,
                ),
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/X"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                // different principals split the duties
                (
                    &format!(
                        "{},{}",
                        allow(ADMIN, KC_ADMIN_ACTIONS, ""),
                        allow(
                            r#"{"AWS":"arn:aws:iam::111122223333:role/App"}"#,
                            USER_ACTIONS,
                            ""
                        )
                    ),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn one_finding_per_principal_across_statements() {
        let text = policy(&format!(
            "{},{}",
            allow(ADMIN, KC_ADMIN_ACTIONS, ""),
            allow(ADMIN, USER_ACTIONS, "")
        ));
        let got = of_rule(&text, RuleId::AdminCanUse);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].statement_index, None);
        assert_eq!(
            got[0].locator,
            "principal:arn:aws:iam::111122223333:role/KMSAdmin"
        );
    }
}
