//! KMS-PUBLIC: an Allow to everyone that no condition pins to known accounts or organisations.

use std::borrow::Cow;

use super::{EvalContext, Finding, RuleId, describe_actions};
use crate::policy::condition::{BaseOperator, ConditionKey};
use crate::policy::matching::{Arn, has_wildcard, is_account_id, is_public_aws_principal};
use crate::policy::view::{PolicyView, StatementView};

/// What kind of identity a restricting condition key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionClass {
    Account,
    Arn,
    OrgId,
    OrgPaths,
    UserId,
}

/// A condition entry that pins the caller to fixed identities.
#[derive(Debug, Clone, Copy)]
pub struct Restriction<'v, 'a> {
    pub class: RestrictionClass,
    pub values: &'v [Cow<'a, str>],
}

fn key_class(key: ConditionKey) -> Option<RestrictionClass> {
    use RestrictionClass::*;
    Some(match key {
        ConditionKey::PrincipalAccount
        | ConditionKey::CallerAccount
        | ConditionKey::SourceAccount
        | ConditionKey::SourceOwner => Account,
        ConditionKey::PrincipalArn | ConditionKey::SourceArn => Arn,
        ConditionKey::PrincipalOrgId | ConditionKey::SourceOrgId => OrgId,
        ConditionKey::PrincipalOrgPaths | ConditionKey::SourceOrgPaths => OrgPaths,
        ConditionKey::UserId => UserId,
        _ => return None,
    })
}

fn is_org_id(s: &str) -> bool {
    s.strip_prefix("o-").is_some_and(|rest| {
        (10..=32).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

fn is_fixed(class: RestrictionClass, value: &str) -> bool {
    match class {
        RestrictionClass::Account => is_account_id(value),
        RestrictionClass::Arn => Arn::parse(value).is_some_and(|arn| is_account_id(arn.account)),
        RestrictionClass::OrgId => is_org_id(value),
        RestrictionClass::OrgPaths => value.split_once('/').is_some_and(|(org, _)| is_org_id(org)),
        // A unique id with at most a trailing wildcard for the session name (`AROA…:*`) names one
        // principal's sessions; `*`, or a wildcard inside the id itself (`AROA*`: every role of
        // every account), names everyone.
        RestrictionClass::UserId => match value.strip_suffix(['*', '?']) {
            None => !has_wildcard(value),
            Some(prefix) => prefix
                .strip_suffix(':')
                .is_some_and(|id| !id.is_empty() && !has_wildcard(id)),
        },
    }
}

/// The condition entries of `st` that restrict who may call (RULES.md KMS-PUBLIC 1–3).
pub fn public_restrictions<'v, 'a>(
    st: &'v StatementView<'a>,
) -> impl Iterator<Item = Restriction<'v, 'a>> {
    st.conditions.iter().filter_map(|entry| {
        let base = entry.constraining_base()?;
        if !is_positive_restricting(base) {
            return None;
        }
        let class = key_class(entry.key)?;
        let fixed = !entry.values.is_empty() && entry.values.iter().all(|v| is_fixed(class, v));
        fixed.then_some(Restriction {
            class,
            values: &entry.values,
        })
    })
}

/// StringEquals, StringEqualsIgnoreCase, StringLike, ArnEquals, ArnLike (RULES.md KMS-PUBLIC 1).
fn is_positive_restricting(base: BaseOperator) -> bool {
    base.is_positive_match()
}

/// True for a statement whose principal admits everyone: `*`, `{"AWS":"*"}`, a wildcard-account
/// ARN, or any `NotPrincipal`. Service principals are never public.
pub fn has_public_principal(st: &StatementView<'_>) -> bool {
    st.principals.negated
        || st.principals.wildcard
        || st.principals.aws().any(is_public_aws_principal)
}

/// Reports public statements and returns their indexes (KMS-CROSS-ACCOUNT skips them).
pub(super) fn check(
    policy: &PolicyView<'_>,
    _ctx: &EvalContext<'_>,
    out: &mut Vec<Finding>,
) -> Vec<usize> {
    let mut public = Vec::new();
    for st in policy.effective_allows() {
        if has_public_principal(st) && public_restrictions(st).next().is_none() {
            public.push(st.index);
            let who = if st.principals.negated {
                "every principal not listed in NotPrincipal".to_string()
            } else {
                "any AWS principal".to_string()
            };
            let network = st.conditions.iter().any(|c| {
                matches!(
                    c.key,
                    ConditionKey::SourceIp
                        | ConditionKey::SourceVpc
                        | ConditionKey::SourceVpce
                        | ConditionKey::ViaService
                )
            });
            let hint = if network {
                " (network and service conditions do not pin the caller's account)"
            } else {
                ""
            };
            out.push(Finding::for_statement(
                RuleId::Public,
                policy,
                st,
                format!(
                    "{} allows {who} {} with no condition that pins the caller to known accounts or organisations{hint}.",
                    st.label(),
                    describe_actions(st)
                ),
            ));
        }
    }
    public
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn star(condition: &str) -> String {
        allow(r#""*""#, r#"["kms:Decrypt","kms:Encrypt"]"#, condition)
    }

    #[test]
    fn public_principal_forms() {
        table(
            RuleId::Public,
            &[
                (&star(""), true),
                (&allow(r#"{"AWS":"*"}"#, r#""kms:*""#, ""), true),
                (
                    &allow(
                        r#"{"AWS":["arn:aws:iam::111122223333:role/A","*"]}"#,
                        r#""kms:Decrypt""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(r#"{"AWS":"arn:aws:iam::*:root"}"#, r#""kms:Decrypt""#, ""),
                    true,
                ),
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/A"},"Action":"kms:Decrypt","Resource":"*"}"#,
                    true,
                ),
                // service principals are never public
                (
                    &allow(
                        r#"{"Service":"logs.amazonaws.com"}"#,
                        r#""kms:Encrypt""#,
                        "",
                    ),
                    false,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:role/A"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    false,
                ),
                // Deny with * is a guardrail
                (
                    r#"{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}"#,
                    false,
                ),
                // without Resource, no effect
                (
                    r#"{"Effect":"Allow","Principal":"*","Action":"kms:*"}"#,
                    false,
                ),
            ],
        );
    }

    #[test]
    fn restricting_conditions() {
        table(
            RuleId::Public,
            &[
                // the AWS-managed key pattern: CallerAccount + ViaService
                (
                    &star(
                        r#"{"StringEquals":{"kms:CallerAccount":"111122223333","kms:ViaService":"ec2.us-east-1.amazonaws.com"}}"#,
                    ),
                    false,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}"#),
                    false,
                ),
                (
                    &star(
                        r#"{"StringEquals":{"aws:PrincipalAccount":["111122223333","444455556666"]}}"#,
                    ),
                    false,
                ),
                (
                    &star(r#"{"StringEqualsIgnoreCase":{"aws:principalaccount":"111122223333"}}"#),
                    false,
                ),
                (
                    &star(
                        r#"{"StringLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/*"}}"#,
                    ),
                    false,
                ),
                (
                    &star(r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/*"}}"#),
                    false,
                ),
                (
                    &star(r#"{"ArnEquals":{"aws:SourceArn":"arn:aws:s3:::bucket"}}"#),
                    true,
                ),
                (
                    &star(
                        r#"{"ArnLike":{"aws:SourceArn":"arn:aws:cloudtrail:*:111122223333:trail/*"}}"#,
                    ),
                    false,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:SourceAccount":"111122223333"}}"#),
                    false,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:SourceOwner":"111122223333"}}"#),
                    false,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalOrgID":"o-a1b2c3d4e5"}}"#),
                    false,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:SourceOrgID":"o-a1b2c3d4e5"}}"#),
                    false,
                ),
                (
                    &star(
                        r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":"o-a1b2c3d4e5/r-ab12/*"}}"#,
                    ),
                    false,
                ),
                (
                    &star(r#"{"ForAnyValue:StringLike":{"aws:SourceOrgPaths":"o-*/r-ab12/*"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringLike":{"aws:userid":"AROAEXAMPLEID:*"}}"#),
                    false,
                ),
                (&star(r#"{"StringLike":{"aws:userid":"AROA*:*"}}"#), true),
                // a wildcard inside the unique id admits every role of every account
                (&star(r#"{"StringLike":{"aws:userid":"AROA*"}}"#), true),
                (&star(r#"{"StringLike":{"aws:userid":":*"}}"#), true),
                (&star(r#"{"StringLike":{"aws:userid":"*"}}"#), true),
                (
                    &star(r#"{"StringEquals":{"aws:userid":"AIDAEXAMPLE"}}"#),
                    false,
                ),
                // IfExists / ForAllValues only on always-present keys
                (
                    &star(r#"{"StringEqualsIfExists":{"kms:CallerAccount":"111122223333"}}"#),
                    false,
                ),
                (
                    &star(
                        r#"{"ForAllValues:StringEquals":{"aws:PrincipalAccount":"111122223333"}}"#,
                    ),
                    false,
                ),
                (
                    &star(r#"{"StringEqualsIfExists":{"aws:PrincipalOrgID":"o-a1b2c3d4e5"}}"#),
                    true,
                ),
                (
                    &star(r#"{"ForAllValues:StringEquals":{"aws:SourceAccount":"111122223333"}}"#),
                    true,
                ),
                (
                    &star(r#"{"ForAnyValue:StringEquals":{"aws:SourceAccount":"111122223333"}}"#),
                    false,
                ),
                // operator and key names are case-insensitive
                (
                    &star(r#"{"stringequals":{"KMS:CALLERACCOUNT":"111122223333"}}"#),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn conditions_that_do_not_restrict() {
        table(
            RuleId::Public,
            &[
                (
                    &star(r#"{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}"#),
                    true,
                ),
                (
                    &star(r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:SourceVpc":"vpc-1234"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:SourceVpce":"vpce-1234"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringNotEquals":{"aws:PrincipalAccount":"444455556666"}}"#),
                    true,
                ),
                (&star(r#"{"Null":{"aws:PrincipalOrgID":"false"}}"#), true),
                (&star(r#"{"Bool":{"aws:SecureTransport":"true"}}"#), true),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalAccount":"*"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalAccount":["111122223333","*"]}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringLike":{"aws:PrincipalAccount":"1111222233??"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringLike":{"aws:PrincipalOrgID":"o-*"}}"#),
                    true,
                ),
                (
                    &star(r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/Admin"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalOrgID":"o-short"}}"#),
                    true,
                ),
                (
                    &star(r#"{"StringEquals":{"aws:PrincipalAccount":[]}}"#),
                    true,
                ),
                (
                    &star(r#"{"NumericLessThan":{"aws:MultiFactorAuthAge":"300"}}"#),
                    true,
                ),
            ],
        );
    }

    #[test]
    fn condition_operators_are_anded() {
        table(
            RuleId::Public,
            &[(
                &star(
                    r#"{"StringEquals":{"aws:PrincipalAccount":"111122223333"},"StringLike":{"aws:PrincipalOrgID":"*"}}"#,
                ),
                false,
            )],
        );
    }

    #[test]
    fn message_names_network_conditions() {
        let text = policy(&star(r#"{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}"#));
        let got = of_rule(&text, RuleId::Public);
        assert!(got[0].message.contains("network"), "{}", got[0].message);
    }
}
