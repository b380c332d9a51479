//! Helpers for the rule table tests.

use super::{EvalContext, Finding, KeyManager, RuleId, evaluate};

/// The key's account in every table test.
pub const ACCOUNT: &str = "111122223333";

/// A policy holding the given statements (JSON objects separated by commas).
pub fn policy(statements: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
}

/// Findings of a customer-managed key in [`ACCOUNT`] trusting `trusted`.
pub fn findings_trusting(text: &str, trusted: &[&str]) -> Vec<Finding> {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    evaluate(
        text,
        &EvalContext {
            account_id: ACCOUNT,
            key_manager: KeyManager::Customer,
            trusted_accounts: &trusted,
        },
    )
}

/// Findings of a customer-managed key in [`ACCOUNT`].
pub fn findings(text: &str) -> Vec<Finding> {
    findings_trusting(text, &[])
}

/// The findings of one rule.
pub fn of_rule(text: &str, rule: RuleId) -> Vec<Finding> {
    findings(text)
        .into_iter()
        .filter(|f| f.rule_id == rule)
        .collect()
}

/// Asserts, for each `(statement JSON, expected)`, whether `rule` fires on a policy holding it.
#[track_caller]
pub fn table(rule: RuleId, cases: &[(&str, bool)]) {
    for (statement, want) in cases {
        let text = policy(statement);
        let got = of_rule(&text, rule);
        assert_eq!(
            !got.is_empty(),
            *want,
            "{rule} on {statement}: got {got:#?}"
        );
    }
}

/// An Allow statement for `principal` (JSON) with `actions` (JSON) and `condition` (JSON or "").
pub fn allow(principal: &str, actions: &str, condition: &str) -> String {
    let condition = if condition.is_empty() {
        String::new()
    } else {
        format!(r#","Condition":{condition}"#)
    };
    format!(
        r#"{{"Effect":"Allow","Principal":{principal},"Action":{actions},"Resource":"*"{condition}}}"#
    )
}
