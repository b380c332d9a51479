//! KMS-NO-ADMIN: nobody but the account root could manage the key once IAM delegation is gone.

use super::{EvalContext, Finding, PUT_KEY_POLICY, RuleId};
use crate::policy::actions::ActionSet;
use crate::policy::document::Policy;
use crate::policy::matching::is_iam_identity_of;
use crate::policy::view::PolicyView;

/// The IAM users, roles and role sessions of `account_id` that the key policy itself allows
/// `kms:PutKeyPolicy`, conditions ignored.
pub fn administrators<'p>(policy: &'p Policy, account_id: &str) -> Vec<&'p str> {
    let mut admins: Vec<&str> = Vec::new();
    let eligible = policy.statements().iter().filter(|st| {
        st.is_effective_allow() && !st.principals.negated && st.actions.grants(PUT_KEY_POLICY)
    });
    for st in eligible {
        for p in st.principals.aws() {
            if is_iam_identity_of(p, account_id) && !admins.contains(&p) {
                admins.push(p);
            }
        }
    }
    admins
}

/// True when [`administrators`] would name someone.
fn has_administrator(policy: &PolicyView<'_>, account_id: &str) -> bool {
    policy.effective_allows().any(|st| {
        !st.principals.negated
            && st.actions.granted.contains(ActionSet::PUT_KEY_POLICY)
            && st
                .principals
                .aws()
                .any(|p| is_iam_identity_of(p, account_id))
    })
}

pub(super) fn check(policy: &PolicyView<'_>, ctx: &EvalContext<'_>, out: &mut Vec<Finding>) {
    if !has_administrator(policy, ctx.account_id) {
        out.push(Finding::for_key(
            RuleId::NoAdmin,
            format!(
                "No IAM user or role of account {} is allowed kms:PutKeyPolicy by the key policy itself, so removing IAM delegation would leave only the root user able to manage the key.",
                ctx.account_id
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const ADMIN: &str = r#"{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"}"#;

    /// `fix` asks [`administrators`] on a `Policy`; the rule asks the view. They must agree.
    #[test]
    fn administrators_and_the_rule_agree() {
        let statements = [
            allow(ADMIN, r#""kms:Put*""#, ""),
            allow(ADMIN, r#""kms:Describe*""#, ""),
            allow(r#"{"AWS":"arn:aws:iam::111122223333:root"}"#, r#""kms:*""#, ""),
            allow(r#"{"AWS":"arn:aws:iam::444455556666:role/A"}"#, r#""kms:*""#, ""),
            r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":"kms:*","Resource":"*"}"#.to_string(),
            r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":"kms:*"}"#.to_string(),
            r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":"kms:*","Resource":"*"}"#.to_string(),
            r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/u"},"NotAction":"kms:Decrypt","Resource":"*"}"#.to_string(),
        ];
        for st in &statements {
            let policy = Policy::parse(&policy(st)).unwrap();
            assert_eq!(
                administrators(&policy, ACCOUNT).is_empty(),
                !has_administrator(&PolicyView::of(&policy), ACCOUNT),
                "{st}"
            );
        }
    }

    #[test]
    fn who_counts_as_administrator() {
        table(
            RuleId::NoAdmin,
            &[
                (&allow(ADMIN, r#""kms:PutKeyPolicy""#, ""), false),
                (&allow(ADMIN, r#""kms:Put*""#, ""), false),
                (&allow(ADMIN, r#""kms:*""#, ""), false),
                (&allow(ADMIN, r#""*""#, ""), false),
                (&allow(ADMIN, r#""KMS:PUTKEYPOLICY""#, ""), false),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"NotAction":"kms:Decrypt","Resource":"*"}"#,
                    false,
                ),
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"NotAction":"kms:Put*","Resource":"*"}"#,
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:user/alice"}"#,
                        r#""kms:PutKeyPolicy""#,
                        "",
                    ),
                    false,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:sts::111122223333:assumed-role/Admin/s"}"#,
                        r#""kms:PutKeyPolicy""#,
                        "",
                    ),
                    false,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws-cn:iam::111122223333:role/Admin"}"#,
                        r#""kms:PutKeyPolicy""#,
                        "",
                    ),
                    false,
                ),
                // conditions on the admin statement are ignored
                (
                    &allow(
                        ADMIN,
                        r#""kms:*""#,
                        r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#,
                    ),
                    false,
                ),
                // these do not count
                (&allow(ADMIN, r#""kms:Describe*""#, ""), true),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:root"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:root"}"#,
                        r#""kms:*""#,
                        r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#,
                    ),
                    true,
                ),
                (&allow(r#"{"AWS":"111122223333"}"#, r#""kms:*""#, ""), true),
                (&allow(r#""*""#, r#""kms:*""#, ""), true),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::444455556666:role/KMSAdmin"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                (
                    &allow(r#"{"Service":"ec2.amazonaws.com"}"#, r#""kms:*""#, ""),
                    true,
                ),
                (
                    &allow(
                        r#"{"AWS":"arn:aws:iam::111122223333:group/Admins"}"#,
                        r#""kms:*""#,
                        "",
                    ),
                    true,
                ),
                (
                    r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/X"},"Action":"kms:*","Resource":"*"}"#,
                    true,
                ),
                (
                    r#"{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":"kms:*","Resource":"*"}"#,
                    true,
                ),
                // no Resource, no effect
                (
                    r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":"kms:*"}"#,
                    true,
                ),
            ],
        );
    }

    #[test]
    fn the_default_policy_fires_delegation_and_no_admin() {
        let text = policy(&allow(
            r#"{"AWS":"arn:aws:iam::111122223333:root"}"#,
            r#""kms:*""#,
            "",
        ));
        let ids: Vec<_> = findings(&text).iter().map(|f| f.rule_id).collect();
        assert_eq!(ids, vec![RuleId::Delegation, RuleId::NoAdmin]);
        let f = &of_rule(&text, RuleId::NoAdmin)[0];
        assert_eq!((f.statement_index, f.locator.as_str()), (None, "key"));
    }
}
