//! KMS-DELEGATION: an Allow to the account principal that IAM identities can pass through.

use super::{EvalContext, Finding, RuleId, describe_actions};
use crate::policy::document::Statement;
use crate::policy::view::{PolicyView, StatementView};

/// True when `st` grants the key's account principal access that IAM identities inherit.
pub fn delegates(st: &Statement, account_id: &str) -> bool {
    StatementView::of(st).delegates(account_id)
}

/// True when the statement's `Principal` (not `NotPrincipal`) lists the account principal.
pub fn names_account_principal(st: &Statement, account_id: &str) -> bool {
    StatementView::of(st).names_account_principal(account_id)
}

pub(super) fn check(policy: &PolicyView<'_>, ctx: &EvalContext<'_>, out: &mut Vec<Finding>) {
    for st in policy.effective_allows() {
        if st.delegates(ctx.account_id) {
            out.push(Finding::for_statement(
                RuleId::Delegation,
                policy,
                st,
                format!(
                    "{} allows the account principal of {} ({}) without pinning aws:PrincipalType to Account, so any IAM policy in the account can grant this key.",
                    capitalise(&st.label()),
                    ctx.account_id,
                    describe_actions(st)
                ),
            ));
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const R: &str = r#"{"AWS":"arn:aws:iam::111122223333:root"}"#;

    fn root_with(condition: &str) -> String {
        allow(R, r#""kms:*""#, condition)
    }

    #[test]
    fn the_default_statement_delegates() {
        let text = policy(&allow(R, r#""kms:*""#, ""));
        let got = of_rule(&text, RuleId::Delegation);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].statement_index, Some(0));
        assert!(
            got[0].message.contains("aws:PrincipalType"),
            "{}",
            got[0].message
        );
    }

    #[test]
    fn principal_forms_that_name_the_account() {
        table(
            RuleId::Delegation,
            &[
                (&allow(R, r#""kms:*""#, ""), true),
                (
                    &allow(r#"{"AWS":"111122223333"}"#, r#""kms:Decrypt""#, ""),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws-cn:iam::111122223333:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws-us-gov:iam::111122223333:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                // mixed into an array with other principals
                (
                    &allow(
                        r#"{"AWS":["arn:aws:iam::111122223333:role/A","arn:aws:iam::111122223333:root"]}"#,
                        r#""kms:Encrypt""#,
                        "",
                    ),
                    true,
                ),
                // any action delegates, not only kms:*
                (&allow(R, r#"["kms:DescribeKey"]"#, ""), true),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:role/root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    false,
                ),
                // external roots are KMS-CROSS-ACCOUNT, not delegation
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::444455556666:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    false,
                ),
                // Principal "*" pinned to the own account is not the account principal
                (
                    &allow(
                        r#""*""#,
                        r#""kms:*""#,
                        r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#,
                    ),
                    false,
                ),
                // no Resource: no effect
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*"}"#,
                    false,
                ),
                // Deny never fires
                (
                    r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                // NotPrincipal excluding root is not a grant to root
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn conditions_that_fix_delegation() {
        table(
            RuleId::Delegation,
            &[
                (
                    &root_with(r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"StringEquals":{"aws:PrincipalType":["Account"]}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"StringEquals":{"AWS:PRINCIPALTYPE":"Account"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"stringequals":{"aws:principaltype":"Account"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"StringEqualsIgnoreCase":{"aws:PrincipalType":"account"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"StringLike":{"aws:PrincipalType":"Acc*"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"ForAnyValue:StringEquals":{"aws:PrincipalType":"Account"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"ForAllValues:StringEquals":{"aws:PrincipalType":"Account"}}"#),
                    false,
                ),
                (
                    &root_with(r#"{"StringEqualsIfExists":{"aws:PrincipalType":"Account"}}"#),
                    false,
                ),
                (
                    &root_with(
                        r#"{"StringEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:root"}}"#,
                    ),
                    false,
                ),
                (
                    &root_with(
                        r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:root"}}"#,
                    ),
                    false,
                ),
                // together with unrelated conditions, still fixed
                (
                    &root_with(
                        r#"{"StringEquals":{"aws:PrincipalType":"Account","kms:CallerAccount":"111122223333"}}"#,
                    ),
                    false,
                ),
                // lower-case "account" never matches: the statement is dead, not delegating
                (
                    &root_with(r#"{"StringEquals":{"aws:PrincipalType":"account"}}"#),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn conditions_that_still_delegate() {
        table(
            RuleId::Delegation,
            &[
                (
                    &root_with(r#"{"StringLike":{"aws:PrincipalType":"A*"}}"#),
                    true,
                ),
                (
                    &root_with(r#"{"StringLike":{"aws:PrincipalType":"*"}}"#),
                    true,
                ),
                (
                    &root_with(
                        r#"{"StringEquals":{"aws:PrincipalType":["Account","AssumedRole"]}}"#,
                    ),
                    true,
                ),
                (
                    &root_with(r#"{"StringNotEquals":{"aws:PrincipalType":"Account"}}"#),
                    true,
                ),
                (
                    &root_with(r#"{"Null":{"aws:PrincipalType":"false"}}"#),
                    true,
                ),
                (
                    &root_with(
                        r#"{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/Admin"}}"#,
                    ),
                    true,
                ),
                (
                    &root_with(
                        r#"{"StringEquals":{"aws:PrincipalArn":["arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:role/Admin"]}}"#,
                    ),
                    true,
                ),
                (
                    &root_with(r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#),
                    true,
                ),
                (
                    &root_with(
                        r#"{"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#,
                    ),
                    true,
                ),
                (
                    &root_with(r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#),
                    true,
                ),
            ],
        );
    }

    #[test]
    fn sid_alone_does_not_fix() {
        let st = r#"{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#;
        table(RuleId::Delegation, &[(st, true)]);
    }

    #[test]
    fn a_fixed_statement_does_not_cancel_another_unconditioned_one() {
        let text = policy(&format!(
            "{},{}",
            root_with(r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#),
            allow(R, r#""kms:Decrypt""#, "")
        ));
        let got = of_rule(&text, RuleId::Delegation);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].statement_index, Some(1));
    }

    #[test]
    fn the_condition_on_the_wrong_statement_does_not_fix() {
        let text = policy(&format!(
            "{},{}",
            allow(R, r#""kms:*""#, ""),
            allow(
                r#"{"AWS":"arn:aws:iam::111122223333:role/Admin"}"#,
                r#""kms:Put*""#,
                r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#
            )
        ));
        let got = of_rule(&text, RuleId::Delegation);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].statement_index, Some(0));
    }
}
