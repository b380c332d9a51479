//! KMS-GRANT-ESCALATION: `kms:CreateGrant` that can hand the key to anyone, outside the policy.

use super::{Finding, RuleId};
use crate::policy::actions::ActionSet;
use crate::policy::condition::{BaseOperator, ConditionKey};
use crate::policy::view::{PolicyView, StatementView};

pub(super) fn check(policy: &PolicyView<'_>, out: &mut Vec<Finding>) {
    for st in policy.effective_allows() {
        let granted = st.actions.granted;
        // A principal that may rewrite the policy is reported as an administrator already.
        if !granted.contains(ActionSet::CREATE_GRANT)
            || granted.contains(ActionSet::PUT_KEY_POLICY)
            || mitigated(st)
        {
            continue;
        }
        out.push(Finding::for_statement(
            RuleId::GrantEscalation,
            policy,
            st,
            format!(
                "{} allows kms:CreateGrant without requiring kms:GrantIsForAWSResource, so its principals can grant this key to anyone.",
                st.label()
            ),
        ));
    }
}

/// True when grants are limited to AWS services: `kms:GrantIsForAWSResource` is true, or
/// `kms:ViaService` is pinned to concrete services.
fn mitigated(st: &StatementView<'_>) -> bool {
    st.conditions.iter().any(|entry| {
        let Some(base) = entry.constraining_base() else {
            return false;
        };
        if entry.values.is_empty() {
            return false;
        }
        match entry.key {
            ConditionKey::GrantIsForAwsResource => match base {
                BaseOperator::StringEquals => entry.values.iter().all(|v| v == "true"),
                BaseOperator::Bool | BaseOperator::StringEqualsIgnoreCase => {
                    entry.values.iter().all(|v| v.eq_ignore_ascii_case("true"))
                }
                _ => false,
            },
            ConditionKey::ViaService => {
                base.is_positive_match()
                    && entry
                        .values
                        .iter()
                        .all(|v| v.chars().any(|c| c != '*' && c != '?'))
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const ROLE: &str = r#"{"AWS":"arn:aws:iam::111122223333:role/App"}"#;

    fn grant(condition: &str) -> String {
        allow(
            ROLE,
            r#"["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"]"#,
            condition,
        )
    }

    #[test]
    fn action_forms() {
        table(
            RuleId::GrantEscalation,
            &[
                (&grant(""), true),
                (&allow(ROLE, r#""kms:Create*""#, ""), true),
                (&allow(ROLE, r#""kms:creategrant""#, ""), true),
                (
                    &allow(
                        r#""*""#,
                        r#""kms:CreateGrant""#,
                        r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#,
                    ),
                    true,
                ),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"NotAction":"kms:Put*","Resource":"*"}"#,
                    true,
                ),
                // NotAction that leaves kms:PutKeyPolicy in is an administrator: exempt
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"NotAction":"kms:Decrypt","Resource":"*"}"#,
                    false,
                ),
                (&allow(ROLE, r#""kms:ListGrants""#, ""), false),
                // the same statement can rewrite the policy: reported as admin, not twice
                (&allow(ROLE, r#""kms:*""#, ""), false),
                (&allow(ROLE, r#""*""#, ""), false),
                (&allow(ROLE, r#"["kms:Create*","kms:Put*"]"#, ""), false),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    false,
                ),
                (
                    r#"{"Effect":"Deny","Principal":"*","Action":"kms:CreateGrant","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":"kms:CreateGrant"}"#,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn mitigations() {
        table(
            RuleId::GrantEscalation,
            &[
                (
                    &grant(r#"{"Bool":{"kms:GrantIsForAWSResource":"true"}}"#),
                    false,
                ),
                (
                    &grant(r#"{"Bool":{"kms:GrantIsForAWSResource":true}}"#),
                    false,
                ),
                (
                    &grant(r#"{"Bool":{"KMS:GRANTISFORAWSRESOURCE":"true"}}"#),
                    false,
                ),
                (
                    &grant(r#"{"StringEquals":{"kms:GrantIsForAWSResource":"true"}}"#),
                    false,
                ),
                (
                    &grant(r#"{"StringEqualsIgnoreCase":{"kms:GrantIsForAWSResource":"TRUE"}}"#),
                    false,
                ),
                (
                    &grant(r#"{"StringEquals":{"kms:ViaService":"rds.us-east-1.amazonaws.com"}}"#),
                    false,
                ),
                (
                    &grant(r#"{"StringLike":{"kms:ViaService":"ec2.*.amazonaws.com"}}"#),
                    false,
                ),
                (
                    &grant(
                        r#"{"ForAnyValue:StringEquals":{"kms:ViaService":["rds.us-east-1.amazonaws.com"]}}"#,
                    ),
                    false,
                ),
                // not mitigations
                (
                    &grant(r#"{"Bool":{"kms:GrantIsForAWSResource":"false"}}"#),
                    true,
                ),
                (
                    &grant(r#"{"StringEquals":{"kms:GrantIsForAWSResource":"TRUE"}}"#),
                    true,
                ),
                (&grant(r#"{"StringLike":{"kms:ViaService":"*"}}"#), true),
                (
                    &grant(
                        r#"{"StringEqualsIfExists":{"kms:ViaService":"rds.us-east-1.amazonaws.com"}}"#,
                    ),
                    true,
                ),
                (
                    &grant(
                        r#"{"StringNotEquals":{"kms:ViaService":"rds.us-east-1.amazonaws.com"}}"#,
                    ),
                    true,
                ),
                (
                    &grant(
                        r#"{"StringEquals":{"kms:GranteePrincipal":"arn:aws:iam::111122223333:role/B"}}"#,
                    ),
                    true,
                ),
                (
                    &grant(r#"{"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt"]}}"#),
                    true,
                ),
            ],
        );
    }
}
