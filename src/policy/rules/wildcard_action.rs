//! KMS-WILDCARD-ACTION: `kms:*` or `*` granted to a principal other than the account root.

use super::{EvalContext, Finding, RuleId};
use crate::policy::matching::is_account_principal;
use crate::policy::view::PolicyView;

pub(super) fn check(policy: &PolicyView<'_>, ctx: &EvalContext<'_>, out: &mut Vec<Finding>) {
    for st in policy.effective_allows() {
        // NotAction is KMS-NOT-ACTION's business; only a literal wildcard counts here.
        if st.actions.negated {
            continue;
        }
        let Some(wildcard) = st
            .actions
            .patterns
            .iter()
            .find(|a| *a == "*" || a.eq_ignore_ascii_case("kms:*"))
        else {
            continue;
        };
        let others: Vec<&str> = if st.principals.negated {
            vec!["every principal not listed in NotPrincipal"]
        } else if st.principals.wildcard {
            vec!["*"]
        } else {
            st.principals
                .entries
                .iter()
                .map(|(_, value)| value.as_ref())
                .filter(|v| !is_account_principal(v, ctx.account_id))
                .collect()
        };
        if others.is_empty() {
            continue;
        }
        out.push(Finding::for_statement(
            RuleId::WildcardAction,
            policy,
            st,
            format!("{} grants {wildcard} to {}.", st.label(), others.join(", ")),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const ROLE: &str = r#"{"AWS":"arn:aws:iam::111122223333:role/App"}"#;
    const ROOT_P: &str = r#"{"AWS":"arn:aws:iam::111122223333:root"}"#;

    #[test]
    fn cases() {
        table(
            RuleId::WildcardAction,
            &[
                (&allow(ROLE, r#""kms:*""#, ""), true),
                (&allow(ROLE, r#""*""#, ""), true),
                (&allow(ROLE, r#"["kms:Decrypt","KMS:*"]"#, ""), true),
                (
                    &allow(
                        r#""*""#,
                        r#""kms:*""#,
                        r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#,
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":["arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:role/App"]}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(r#"{"Service":"logs.amazonaws.com"}"#, r#""kms:*""#, ""),
                    true,
                ),
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/X"},"Action":"kms:*","Resource":"*"}"#,
                    true,
                ),
                // the account principal alone, fixed or not
                (&allow(ROOT_P, r#""kms:*""#, ""), false),
                (&allow(r#"{"AWS":"111122223333"}"#, r#""kms:*""#, ""), false),
                (
                    &allow(
                        ROOT_P,
                        r#""kms:*""#,
                        r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#,
                    ),
                    false,
                ),
                // partial wildcards and NotAction do not count
                (&allow(ROLE, r#""kms:Describe*""#, ""), false),
                (&allow(ROLE, r#""kms:Create*""#, ""), false),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"NotAction":"kms:*","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":"kms:*"}"#,
                    false,
                ),
            ],
        );
    }
}
