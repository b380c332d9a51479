//! KMS-NOT-PRINCIPAL: Allow with `NotPrincipal` grants everyone but the listed principals.

use super::{Finding, RuleId, describe_actions};
use crate::policy::view::PolicyView;

pub(super) fn check(policy: &PolicyView<'_>, out: &mut Vec<Finding>) {
    for st in policy.effective_allows().filter(|st| st.principals.negated) {
        out.push(Finding::for_statement(
            RuleId::NotPrincipal,
            policy,
            st,
            format!(
                "{} uses Allow with NotPrincipal, granting {} to every principal it does not list.",
                st.label(),
                describe_actions(st)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn cases() {
        table(
            RuleId::NotPrincipal,
            &[
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/X"},"Action":"kms:Decrypt","Resource":"*"}"#,
                    true,
                ),
                (
                    r#"{"Effect":"Allow","NotPrincipal":"*","Action":"kms:Decrypt","NotResource":"x"}"#,
                    true,
                ),
                // Deny + NotPrincipal is a common guardrail
                (
                    r#"{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/X"},"Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/X"},"Action":"kms:Decrypt"}"#,
                    false,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:role/X"}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    false,
                ),
            ],
        );
    }
}
