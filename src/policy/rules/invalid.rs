//! KMS-INVALID: the document is not a key policy; no other rule is judged then.

use super::{Finding, RuleId};
use crate::policy::document::InvalidPolicy;

/// The finding for a document that failed to parse.
pub(super) fn finding(err: &InvalidPolicy) -> Finding {
    Finding {
        rule_id: RuleId::Invalid,
        severity: RuleId::Invalid.severity(),
        statement_index: err.statement_index,
        sid: err.sid.clone(),
        message: format!("The key policy is not valid: {err}."),
        locator: "key".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{EvalContext, KeyManager, evaluate};
    use super::*;

    #[test]
    fn invalid_reports_only_invalid() {
        let cases = [
            "{not json",
            "[]",
            r#"{"Statement":[{"Effect":"Allow","Principal":"arn:aws:iam::111122223333:root","Action":"kms:*","Resource":"*"}]}"#,
            // a second statement is broken: the valid, delegating first one is not reported
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","NotResource":"*"}]}"#,
        ];
        for text in cases {
            let got = findings(text);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert_eq!(got[0].rule_id, RuleId::Invalid);
        }
        assert_eq!(findings(cases[3])[0].statement_index, Some(1));
        assert_eq!(findings(cases[3])[0].sid, None);
        let named = r#"{"Statement":[{"Sid":"Broken","Effect":"Permit","Principal":"*","Action":"kms:*","Resource":"*"}]}"#;
        let got = findings(named);
        assert_eq!(got[0].sid.as_deref(), Some("Broken"));
        assert!(
            got[0].message.contains("statement 0 (\"Broken\")"),
            "{}",
            got[0].message
        );
    }

    #[test]
    fn aws_managed_keys_report_only_invalid() {
        let ctx = EvalContext {
            account_id: ACCOUNT,
            key_manager: KeyManager::Aws,
            trusted_accounts: &[],
        };
        let public = policy(&allow(r#""*""#, r#""kms:*""#, ""));
        assert!(evaluate(&public, &ctx).is_empty());
        let got = evaluate("{}", &ctx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].rule_id, RuleId::Invalid);
    }
}
