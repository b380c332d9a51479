//! Which conditions the evaluator can decide for a known principal, and which stay open.

use crate::policy::condition::{BaseOperator, ConditionEntry, ConditionKey};

/// The outcome of a statement's conditions for one principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Every condition entry holds (or there are none).
    Holds,
    /// Some entry certainly fails: the statement does not apply to this principal.
    Fails,
    /// Some entry depends on the request (source IP, MFA, via service, …).
    Open,
}

/// What the evaluator knows about a caller before any request is made: the values of the
/// condition keys that every KMS request carries and that depend only on who calls.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallerFacts<'a> {
    /// `aws:PrincipalType`.
    pub principal_type: Option<&'static str>,
    /// `aws:PrincipalAccount` and `kms:CallerAccount`.
    pub account: Option<&'a str>,
    /// `aws:PrincipalArn` (the role ARN for a role session).
    pub principal_arn: Option<&'a str>,
}

/// Decides a condition block for a caller. Only keys fixed by the caller's identity are decided;
/// everything else (including every unknown operator) leaves the statement open, so the table
/// says "conditional" rather than guessing either way.
pub(crate) fn decide(entries: &[ConditionEntry], caller: &CallerFacts<'_>) -> Decision {
    let mut result = Decision::Holds;
    for entry in entries {
        match decide_entry(entry, caller) {
            Decision::Fails => return Decision::Fails,
            Decision::Open => result = Decision::Open,
            Decision::Holds => {}
        }
    }
    result
}

fn decide_entry(entry: &ConditionEntry, caller: &CallerFacts<'_>) -> Decision {
    let value = match ConditionKey::of(&entry.key) {
        ConditionKey::PrincipalType => caller.principal_type,
        ConditionKey::PrincipalAccount | ConditionKey::CallerAccount => caller.account,
        ConditionKey::PrincipalArn => caller.principal_arn,
        _ => None,
    };
    let Some(value) = value else {
        return Decision::Open;
    };
    // These keys are single-valued and always present, so ForAnyValue/ForAllValues and IfExists
    // reduce to the plain operator (RULES.md §1).
    let base = entry.operator.base;
    let holds = match base {
        BaseOperator::Null => {
            // The key is present: `Null true` fails, `Null false` holds.
            if entry.values.iter().all(|v| v.eq_ignore_ascii_case("false")) {
                true
            } else if entry.values.iter().all(|v| v.eq_ignore_ascii_case("true")) {
                false
            } else {
                return Decision::Open;
            }
        }
        b if b.is_positive_match() => b.compares_equal(&entry.values, value),
        b if b.is_negative_match() => !b.compares_equal(&entry.values, value),
        _ => return Decision::Open,
    };
    if holds {
        Decision::Holds
    } else {
        Decision::Fails
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::condition::parse_block;

    fn d(block: &str, caller: &CallerFacts<'_>) -> Decision {
        decide(
            &parse_block(&serde_json::from_str(block).unwrap()).unwrap(),
            caller,
        )
    }

    #[test]
    fn decides_identity_keys_only() {
        let role = CallerFacts {
            principal_type: Some("AssumedRole"),
            account: Some("111122223333"),
            principal_arn: Some("arn:aws:iam::111122223333:role/App"),
        };
        let cases = [
            (r#"{}"#, Decision::Holds),
            (
                r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#,
                Decision::Fails,
            ),
            (
                r#"{"stringequals":{"AWS:PRINCIPALTYPE":["Account","AssumedRole"]}}"#,
                Decision::Holds,
            ),
            (
                r#"{"StringNotEquals":{"aws:PrincipalType":"Account"}}"#,
                Decision::Holds,
            ),
            (
                r#"{"StringEquals":{"kms:CallerAccount":"111122223333"}}"#,
                Decision::Holds,
            ),
            (
                r#"{"StringEquals":{"aws:PrincipalAccount":"444455556666"}}"#,
                Decision::Fails,
            ),
            (
                r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/A*"}}"#,
                Decision::Holds,
            ),
            (r#"{"Null":{"aws:PrincipalArn":"true"}}"#, Decision::Fails),
            (
                r#"{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}"#,
                Decision::Open,
            ),
            (
                r#"{"StringEquals":{"kms:CallerAccount":"111122223333","kms:ViaService":"s3.us-east-1.amazonaws.com"}}"#,
                Decision::Open,
            ),
            (
                r#"{"StringEquals":{"kms:CallerAccount":"444455556666","kms:ViaService":"s3.us-east-1.amazonaws.com"}}"#,
                Decision::Fails,
            ),
            (
                r#"{"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#,
                Decision::Open,
            ),
        ];
        for (block, want) in cases {
            assert_eq!(d(block, &role), want, "{block}");
        }
        let anyone = CallerFacts::default();
        assert_eq!(
            d(
                r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#,
                &anyone
            ),
            Decision::Open
        );
    }
}
