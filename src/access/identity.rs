//! Identity policies (users, groups, roles, boundaries) reduced to what KMS access needs: each
//! statement's effect, the key actions it covers, its resources and its conditions.
//!
//! `Policy::parse` is the key-policy grammar and rejects identity policies (they have no
//! `Principal`), so identity documents get this small reader of their own.

use serde_json::Value;

use super::catalogue::ActionMask;
use crate::policy::condition::{ConditionEntry, parse_block};
use crate::policy::matching::glob_match;

/// `Resource` / `NotResource` patterns of an identity statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePatterns {
    pub negated: bool,
    pub patterns: Vec<String>,
}

impl ResourcePatterns {
    /// True when the statement covers the resource `arn`. ARN globs are case-sensitive.
    pub fn covers(&self, arn: &str) -> bool {
        let any = self
            .patterns
            .iter()
            .any(|p| p == "*" || glob_match(p, arn, false));
        any != self.negated
    }
}

/// One identity-policy statement that covers at least one key action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IdentityStatement {
    /// Position in the document, from 0.
    pub index: usize,
    pub sid: Option<String>,
    pub allow: bool,
    pub actions: ActionMask,
    /// `None` when the statement names no resource: it matches nothing.
    pub resources: Option<ResourcePatterns>,
    pub conditions: Vec<ConditionEntry>,
    /// The `Condition` block as written, shown on conditional entries.
    pub condition_json: Option<Value>,
}

impl IdentityStatement {
    /// True when the statement applies to the key `arn` at all.
    pub fn covers_key(&self, arn: &str) -> bool {
        self.resources.as_ref().is_some_and(|r| r.covers(arn))
    }
}

/// An identity policy reduced to its KMS-relevant statements.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CompiledPolicy {
    /// Only statements whose actions can match some key action: `s3:*`-only statements are
    /// dropped here, once, so per-key evaluation never sees them.
    pub statements: Vec<IdentityStatement>,
    /// Why the document could not be read; its permissions are then unknown.
    pub error: Option<String>,
}

/// Reads an identity policy document. A malformed document is kept as an error, not dropped:
/// what it grants is unknown, and the table says so.
pub(crate) fn compile(text: &str) -> CompiledPolicy {
    match read(text) {
        Ok(statements) => CompiledPolicy {
            statements,
            error: None,
        },
        Err(error) => CompiledPolicy {
            statements: Vec::new(),
            error: Some(error),
        },
    }
}

fn read(text: &str) -> Result<Vec<IdentityStatement>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(doc) = value else {
        return Err("the top level is not a JSON object".into());
    };
    let items: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(obj @ Value::Object(_)) => vec![obj],
        _ => return Err("\"Statement\" is missing or not an object or array".into()),
    };
    let mut out = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(st) = item else {
            return Err(format!("statement {index} is not a JSON object"));
        };
        let allow = match st.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => {
                return Err(format!(
                    "statement {index}: \"Effect\" must be Allow or Deny"
                ));
            }
        };
        let actions = match (st.get("Action"), st.get("NotAction")) {
            (Some(a), None) => ActionMask::granted_by(&strings(index, a)?, false),
            (None, Some(a)) => ActionMask::granted_by(&strings(index, a)?, true),
            _ => {
                return Err(format!(
                    "statement {index}: needs exactly one of \"Action\" and \"NotAction\""
                ));
            }
        };
        if actions.is_empty() {
            continue;
        }
        let resources = match (st.get("Resource"), st.get("NotResource")) {
            (Some(r), None) => Some(ResourcePatterns {
                negated: false,
                patterns: strings(index, r)?,
            }),
            (None, Some(r)) => Some(ResourcePatterns {
                negated: true,
                patterns: strings(index, r)?,
            }),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(format!(
                    "statement {index}: has both \"Resource\" and \"NotResource\""
                ));
            }
        };
        let (conditions, condition_json) = match st.get("Condition") {
            None => (Vec::new(), None),
            Some(c) => (
                parse_block(c).ok_or_else(|| {
                    format!("statement {index}: \"Condition\" is not an object of objects")
                })?,
                Some(c.clone()),
            ),
        };
        out.push(IdentityStatement {
            index,
            sid: st.get("Sid").and_then(Value::as_str).map(str::to_string),
            allow,
            actions,
            resources,
            conditions,
            condition_json,
        });
    }
    Ok(out)
}

fn strings(index: usize, value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("statement {index}: a list holds a non-string"))
            })
            .collect(),
        _ => Err(format!(
            "statement {index}: expected a string or an array of strings"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_statements_without_key_actions() {
        let p = compile(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":"s3:*","Resource":"*"},
                {"Sid":"k","Effect":"Deny","Action":["kms:Decrypt","s3:GetObject"],"Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}}
            ]}"#,
        );
        assert_eq!(p.error, None);
        assert_eq!(p.statements.len(), 1);
        let st = &p.statements[0];
        assert_eq!(
            (st.index, st.sid.as_deref(), st.allow),
            (1, Some("k"), false)
        );
        assert_eq!(st.actions, ActionMask::of_action("kms:Decrypt"));
        assert!(st.condition_json.is_some());
    }

    #[test]
    fn malformed_documents_are_errors() {
        for text in [
            "nope",
            "[]",
            r#"{"Statement":3}"#,
            r#"{"Statement":[{"Effect":"allow","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Condition":[]}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":[1],"Resource":"*"}]}"#,
        ] {
            assert!(compile(text).error.is_some(), "{text}");
        }
    }

    #[test]
    fn resources() {
        let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let r = |neg, p: &[&str]| ResourcePatterns {
            negated: neg,
            patterns: p.iter().map(|s| s.to_string()).collect(),
        };
        assert!(r(false, &["*"]).covers(key));
        assert!(r(false, &["arn:aws:kms:*:111122223333:key/*"]).covers(key));
        assert!(r(false, &["arn:aws:kms:us-east-?:111122223333:key/*"]).covers(key));
        assert!(r(false, &[key]).covers(key));
        assert!(!r(false, &["arn:aws:kms:us-east-1:111122223333:alias/app"]).covers(key));
        assert!(!r(false, &["arn:aws:kms:eu-west-1:111122223333:key/*"]).covers(key));
        assert!(
            !r(false, &["ARN:AWS:KMS:*"]).covers(key),
            "ARNs are case-sensitive"
        );
        assert!(!r(true, &["*"]).covers(key));
        assert!(r(true, &["arn:aws:s3:::*"]).covers(key));
    }
}
