//! KMS-NOT-ACTION: Allow with `NotAction` grants every action but the listed ones.

use super::{Finding, RuleId};
use crate::policy::view::PolicyView;

pub(super) fn check(policy: &PolicyView<'_>, out: &mut Vec<Finding>) {
    for st in policy.effective_allows().filter(|st| st.actions.negated) {
        out.push(Finding::for_statement(
            RuleId::NotAction,
            policy,
            st,
            format!(
                "{} uses Allow with NotAction, granting every action except {}, including actions KMS adds later.",
                st.label(),
                st.actions.patterns.join(", ")
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
            RuleId::NotAction,
            &[
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/X"},"NotAction":"kms:ScheduleKeyDeletion","Resource":"*"}"#,
                    true,
                ),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"NotAction":["kms:Decrypt"],"Resource":"*"}"#,
                    true,
                ),
                // Deny + NotAction is a common guardrail
                (
                    r#"{"Effect":"Deny","Principal":"*","NotAction":"kms:Decrypt","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/X"},"NotAction":"kms:Decrypt"}"#,
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
