//! KMS-CROSS-ACCOUNT: an Allow reaching principals of an account outside the trusted list.

use std::borrow::Cow;

use super::public::{Restriction, RestrictionClass, has_public_principal, public_restrictions};
use super::{EvalContext, Finding, RuleId, describe_actions};
use crate::policy::document::PrincipalKind;
use crate::policy::matching::{Arn, has_wildcard, principal_account};
use crate::policy::view::PolicyView;

pub(super) fn check(
    policy: &PolicyView<'_>,
    ctx: &EvalContext<'_>,
    public_statements: &[usize],
    out: &mut Vec<Finding>,
) {
    for st in policy.effective_allows() {
        // A public statement is already reported as KMS-PUBLIC, which says more.
        if public_statements.contains(&st.index) {
            continue;
        }
        let mut foreign: Vec<String> = Vec::new();
        if !st.principals.negated {
            for (kind, value) in &st.principals.entries {
                if *kind != PrincipalKind::Aws {
                    continue;
                }
                if let Some(account) = principal_account(value)
                    && !has_wildcard(account)
                    && !ctx.is_trusted_or_own(account)
                    && !foreign.iter().any(|f| f == account)
                {
                    foreign.push(account.to_string());
                }
            }
        }
        let mut through_conditions = false;
        if foreign.is_empty() && has_public_principal(st) {
            let restrictions: Vec<Restriction<'_, '_>> = public_restrictions(st).collect();
            // KMS-PUBLIC saw the statement as restricted; it reaches another account only if
            // every restricting entry (they are ANDed) admits one.
            if !restrictions.is_empty()
                && restrictions
                    .iter()
                    .all(|r| admits_foreign(r.class, r.values, ctx))
            {
                through_conditions = true;
                for r in &restrictions {
                    for account in foreign_accounts_named(r.class, r.values, ctx) {
                        if !foreign.contains(&account) {
                            foreign.push(account);
                        }
                    }
                }
            }
        }
        if foreign.is_empty() && !through_conditions {
            continue;
        }
        let whom = if foreign.is_empty() {
            "principals of other accounts in an AWS organisation".to_string()
        } else {
            format!("account(s) {}", foreign.join(", "))
        };
        out.push(Finding::for_statement(
            RuleId::CrossAccount,
            policy,
            st,
            format!(
                "{} allows {whom} {}, which are not in this account's trusted accounts.",
                st.label(),
                describe_actions(st)
            ),
        ));
    }
}

fn admits_foreign(class: RestrictionClass, values: &[Cow<'_, str>], ctx: &EvalContext<'_>) -> bool {
    match class {
        RestrictionClass::Account | RestrictionClass::Arn => {
            !foreign_accounts_named(class, values, ctx).is_empty()
        }
        // Organisation members are other accounts, and the engine cannot know the organisation.
        RestrictionClass::OrgId | RestrictionClass::OrgPaths => true,
        RestrictionClass::UserId => false,
    }
}

fn foreign_accounts_named(
    class: RestrictionClass,
    values: &[Cow<'_, str>],
    ctx: &EvalContext<'_>,
) -> Vec<String> {
    let accounts = values.iter().filter_map(|v| match class {
        RestrictionClass::Account => Some(v.as_ref()),
        RestrictionClass::Arn => Arn::parse(v).map(|a| a.account),
        _ => None,
    });
    let mut out: Vec<String> = Vec::new();
    for account in accounts {
        if !ctx.is_trusted_or_own(account) && !out.iter().any(|o| o == account) {
            out.push(account.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn external_principals() {
        table(
            RuleId::CrossAccount,
            &[
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::444455556666:root"}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::444455556666:role/App"}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::444455556666:user/bob"}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:sts::444455556666:assumed-role/App/s"}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(r#"{"AWS":"444455556666"}"#, r#""kms:Decrypt""#, ""),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":["arn:aws:iam::111122223333:role/A","arn:aws:iam::444455556666:root"]}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:role/A"}"#,
                        r#""kms:Decrypt""#,
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
                // service principals never
                (
                    &allow(
                        r#"{"Service":"logs.us-east-1.amazonaws.com"}"#,
                        r#""kms:Encrypt""#,
                        "",
                    ),
                    false,
                ),
                // Deny never
                (
                    r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                // no Resource, no effect
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"kms:*"}"#,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn trusted_accounts_never_fire() {
        let text = policy(&allow(
            r#"{"AWS":["arn:aws:iam::444455556666:root","arn:aws:iam::777788889999:role/X"]}"#,
            r#""kms:Decrypt""#,
            "",
        ));
        let got: Vec<_> = findings_trusting(&text, &["444455556666"])
            .into_iter()
            .filter(|f| f.rule_id == RuleId::CrossAccount)
            .collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].message.contains("777788889999"));
        assert!(!got[0].message.contains("444455556666"));
        let none = findings_trusting(&text, &["444455556666", "777788889999"]);
        assert!(none.iter().all(|f| f.rule_id != RuleId::CrossAccount));
    }

    #[test]
    fn restricted_public_statements() {
        let star = |c: &str| allow(r#""*""#, r#""kms:Decrypt""#, c);
        table(
            RuleId::CrossAccount,
            &[
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}"#),
                    false,
                ),
                (
                    &star(
                        r#"{"StringEquals":{"aws:PrincipalAccount":["111122223333","444455556666"]}}"#,
                    ),
                    true,
                ),
                (
                    &star(r#"{"StringEquals":{"kms:CallerAccount":"444455556666"}}"#),
                    true,
                ),
                (
                    &star(r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::444455556666:role/*"}}"#),
                    true,
                ),
                (
                    &star(r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/*"}}"#),
                    false,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalOrgID":"o-a1b2c3d4e5"}}"#),
                    true,
                ),
                (
                    &star(
                        r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":"o-a1b2c3d4e5/*"}}"#,
                    ),
                    true,
                ),
                (
                    &star(r#"{"StringLike":{"aws:userid":"AROAEXAMPLE:*"}}"#),
                    false,
                ),
                // ANDed: one entry pinned to the own account keeps it in-account
                (
                    &star(
                        r#"{"StringEquals":{"aws:PrincipalOrgID":"o-a1b2c3d4e5","kms:CallerAccount":"111122223333"}}"#,
                    ),
                    false,
                ),
                // unrestricted: that is KMS-PUBLIC, never both
                (&star(""), false),
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/A"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":"444455556666"}}}"#,
                    true,
                ),
            ],
        );
    }

    #[test]
    fn never_together_with_public_for_one_statement() {
        let text = policy(&allow(
            r#"{"AWS":["*","arn:aws:iam::444455556666:root"]}"#,
            r#""kms:Decrypt""#,
            "",
        ));
        let got = findings(&text);
        assert!(got.iter().any(|f| f.rule_id == RuleId::Public));
        assert!(got.iter().all(|f| f.rule_id != RuleId::CrossAccount));
    }

    #[test]
    fn trusted_org_condition_values() {
        let text = policy(&allow(
            r#""*""#,
            r#""kms:Decrypt""#,
            r#"{"StringEquals":{"aws:PrincipalAccount":["111122223333","444455556666"]}}"#,
        ));
        let got = findings_trusting(&text, &["444455556666"]);
        assert!(got.iter().all(|f| f.rule_id != RuleId::CrossAccount));
    }
}
