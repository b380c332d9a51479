//! KMS-ADMIN-CAN-USE: one principal both administers and uses the key (separation of duties).

use super::{ADMIN_ACTIONS, CRYPTO_ACTIONS, EvalContext, Finding, RuleId, effective_allows};
use crate::policy::document::{Policy, PrincipalKind};
use crate::policy::matching::{is_account_id, is_account_principal, root_arn};

#[derive(Default)]
struct Powers {
    admin: Vec<&'static str>,
    crypto: Vec<&'static str>,
    statements: Vec<usize>,
}

pub(super) fn check(policy: &Policy, ctx: &EvalContext<'_>, out: &mut Vec<Finding>) {
    // Keyed by the literal principal string, in first-seen order for stable output.
    let mut by_principal: Vec<(String, Powers)> = Vec::new();
    for st in effective_allows(policy) {
        if st.principals.negated {
            continue;
        }
        let admin: Vec<&'static str> = ADMIN_ACTIONS
            .into_iter()
            .filter(|a| st.actions.grants(a))
            .collect();
        let crypto: Vec<&'static str> = CRYPTO_ACTIONS
            .into_iter()
            .filter(|a| st.actions.grants(a))
            .collect();
        if admin.is_empty() && crypto.is_empty() {
            continue;
        }
        for entry in &st.principals.entries {
            if !matches!(entry.kind, PrincipalKind::Aws | PrincipalKind::Service) {
                continue;
            }
            let value = entry.value.as_str();
            if value == "*" || is_account_principal(value, ctx.account_id) {
                continue;
            }
            let name = if entry.kind == PrincipalKind::Aws && is_account_id(value) {
                root_arn(value)
            } else {
                value.to_string()
            };
            let slot = match by_principal.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    by_principal.push((name, Powers::default()));
                    by_principal.len() - 1
                }
            };
            let powers = &mut by_principal[slot].1;
            for a in &admin {
                if !powers.admin.contains(a) {
                    powers.admin.push(a);
                }
            }
            for a in &crypto {
                if !powers.crypto.contains(a) {
                    powers.crypto.push(a);
                }
            }
            if !powers.statements.contains(&st.index) {
                powers.statements.push(st.index);
            }
        }
    }
    for (principal, powers) in by_principal {
        if powers.admin.is_empty() || powers.crypto.is_empty() {
            continue;
        }
        let single = (powers.statements.len() == 1).then(|| powers.statements[0]);
        let sid = single.and_then(|i| policy.statements()[i].sid.clone());
        out.push(Finding {
            rule_id: RuleId::AdminCanUse,
            severity: RuleId::AdminCanUse.severity(),
            statement_index: single,
            sid,
            message: format!(
                "{principal} can both administer the key ({}) and use it ({}).",
                summarise(&powers.admin),
                summarise(&powers.crypto)
            ),
            locator: format!("principal:{principal}"),
        });
    }
}

fn summarise(actions: &[&str]) -> String {
    if actions.len() <= 3 {
        actions.join(", ")
    } else {
        format!("{}, … {} actions", actions[..3].join(", "), actions.len())
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
