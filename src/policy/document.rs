//! The IAM policy grammar of key policies: a typed view for the rules over the exact JSON, which
//! is kept (order, unknown fields, values) so that a rewrite touches only what it means to.

use serde_json::{Map, Value};
use std::fmt;

use super::condition::ConditionEntry;

/// Why a document is not a valid key policy (reported as KMS-INVALID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    /// The statement at fault, when the problem is inside one.
    pub statement_index: Option<usize>,
    /// That statement's Sid, when it has a string one.
    pub sid: Option<String>,
    /// What is wrong, for a human.
    pub reason: String,
}

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.statement_index {
            Some(i) => write!(
                f,
                "{}: {}",
                statement_label(i, self.sid.as_deref()),
                self.reason
            ),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for InvalidPolicy {}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// The principal families the grammar allows as keys of a `Principal` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Aws,
    Service,
    Federated,
    CanonicalUser,
}

impl PrincipalKind {
    /// The family a `Principal` map key names; the keys are case-sensitive.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "AWS" => Some(Self::Aws),
            "Service" => Some(Self::Service),
            "Federated" => Some(Self::Federated),
            "CanonicalUser" => Some(Self::CanonicalUser),
            _ => None,
        }
    }

    /// The key as written in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "AWS",
            Self::Service => "Service",
            Self::Federated => "Federated",
            Self::CanonicalUser => "CanonicalUser",
        }
    }
}

/// One principal string with its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalEntry {
    pub kind: PrincipalKind,
    pub value: String,
}

/// `Principal` or `NotPrincipal`: `"*"` or a map of families to values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principals {
    /// True for `NotPrincipal`.
    pub negated: bool,
    /// True for the bare string `"*"`.
    pub wildcard: bool,
    pub entries: Vec<PrincipalEntry>,
}

impl Principals {
    /// The `AWS` entries.
    pub fn aws(&self) -> impl Iterator<Item = &str> {
        self.of_kind(PrincipalKind::Aws)
    }

    /// The entries of one family.
    pub fn of_kind(&self, kind: PrincipalKind) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(move |e| e.kind == kind)
            .map(|e| e.value.as_str())
    }
}

/// `Action` or `NotAction` patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions {
    /// True for `NotAction`.
    pub negated: bool,
    pub patterns: Vec<String>,
}

impl Actions {
    /// True when the statement covers `action` (`NotAction` covers what none of its patterns match).
    pub fn grants(&self, action: &str) -> bool {
        let any = self
            .patterns
            .iter()
            .any(|p| super::matching::action_matches(p, action));
        any != self.negated
    }
}

/// `Resource` or `NotResource` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// True for `NotResource`.
    pub negated: bool,
    pub patterns: Vec<String>,
}

/// One statement: the typed view the rules read, plus its JSON exactly as parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Position in the document, from 0.
    pub index: usize,
    pub sid: Option<String>,
    pub effect: Effect,
    pub principals: Principals,
    pub actions: Actions,
    /// `None` when the statement has neither `Resource` nor `NotResource`: it has no effect.
    pub resources: Option<Resources>,
    pub conditions: Vec<ConditionEntry>,
    raw: Map<String, Value>,
}

impl Statement {
    /// An Allow statement that has a resource: the only kind the rules look at.
    pub fn is_effective_allow(&self) -> bool {
        self.effect == Effect::Allow && self.resources.is_some()
    }

    /// The statement's JSON object as it was written.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// `Sid "X"` or `statement N` for messages.
    pub fn label(&self) -> String {
        statement_label(self.index, self.sid.as_deref())
    }
}

/// `statement N ("Sid")`, or `statement N` without a Sid.
pub(crate) fn statement_label(index: usize, sid: Option<&str>) -> String {
    match sid {
        Some(sid) if !sid.is_empty() => format!("statement {index} (\"{sid}\")"),
        _ => format!("statement {index}"),
    }
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    raw: Map<String, Value>,
    statements: Vec<Statement>,
}

impl Policy {
    /// Parses policy text; every grammar violation of RULES.md §1 is an [`InvalidPolicy`].
    pub fn parse(text: &str) -> Result<Self, InvalidPolicy> {
        let value: Value = serde_json::from_str(text).map_err(|e| InvalidPolicy {
            statement_index: None,
            sid: None,
            reason: format!("not JSON: {e}"),
        })?;
        Self::from_value(value)
    }

    /// Builds the typed view of an already-parsed JSON document.
    pub fn from_value(value: Value) -> Result<Self, InvalidPolicy> {
        let Value::Object(raw) = value else {
            return Err(top_level("the top level is not a JSON object"));
        };
        let statements = match raw.get("Statement") {
            None => return Err(top_level("\"Statement\" is missing")),
            Some(Value::Object(obj)) => vec![parse_statement(0, obj)?],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(obj) => parse_statement(i, obj),
                    _ => Err(at(i, "is not a JSON object")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Array(_)) => return Err(top_level("\"Statement\" is an empty array")),
            Some(_) => {
                return Err(top_level(
                    "\"Statement\" is neither an object nor an array of objects",
                ));
            }
        };
        Ok(Policy { raw, statements })
    }

    /// The statements in document order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The whole document as it was parsed.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The document as a JSON value, unknown fields and order included.
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// Pretty JSON with two-space indentation, the form Keyward shows and submits.
    pub fn to_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.raw).unwrap_or_default()
    }
}

fn top_level(reason: &str) -> InvalidPolicy {
    InvalidPolicy {
        statement_index: None,
        sid: None,
        reason: reason.to_string(),
    }
}

fn at(index: usize, reason: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy {
        statement_index: Some(index),
        sid: None,
        reason: reason.into(),
    }
}

/// One statement; a violation names the statement's Sid when it has one, so people find it.
fn parse_statement(index: usize, obj: &Map<String, Value>) -> Result<Statement, InvalidPolicy> {
    parse_statement_fields(index, obj).map_err(|mut e| {
        e.sid = obj.get("Sid").and_then(Value::as_str).map(str::to_string);
        e
    })
}

fn parse_statement_fields(
    index: usize,
    obj: &Map<String, Value>,
) -> Result<Statement, InvalidPolicy> {
    let effect = match obj.get("Effect") {
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(_) => {
            return Err(at(
                index,
                "\"Effect\" must be exactly \"Allow\" or \"Deny\"",
            ));
        }
        None => return Err(at(index, "\"Effect\" is missing")),
    };
    let principals = match (obj.get("Principal"), obj.get("NotPrincipal")) {
        (Some(p), None) => parse_principals(index, p, false)?,
        (None, Some(p)) => parse_principals(index, p, true)?,
        (Some(_), Some(_)) => {
            return Err(at(index, "has both \"Principal\" and \"NotPrincipal\""));
        }
        (None, None) => return Err(at(index, "has neither \"Principal\" nor \"NotPrincipal\"")),
    };
    let actions = match (obj.get("Action"), obj.get("NotAction")) {
        (Some(a), None) => Actions {
            negated: false,
            patterns: action_list(index, "Action", a)?,
        },
        (None, Some(a)) => Actions {
            negated: true,
            patterns: action_list(index, "NotAction", a)?,
        },
        (Some(_), Some(_)) => return Err(at(index, "has both \"Action\" and \"NotAction\"")),
        (None, None) => return Err(at(index, "has neither \"Action\" nor \"NotAction\"")),
    };
    let resources = match (obj.get("Resource"), obj.get("NotResource")) {
        (Some(r), None) => Some(Resources {
            negated: false,
            patterns: loose_strings(r),
        }),
        (None, Some(r)) => Some(Resources {
            negated: true,
            patterns: loose_strings(r),
        }),
        (Some(_), Some(_)) => {
            return Err(at(index, "has both \"Resource\" and \"NotResource\""));
        }
        (None, None) => None,
    };
    let conditions = match obj.get("Condition") {
        None => Vec::new(),
        Some(value) => super::condition::parse_block(value)
            .ok_or_else(|| at(index, "\"Condition\" is not an object of objects"))?,
    };
    let sid = match obj.get("Sid") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(Statement {
        index,
        sid,
        effect,
        principals,
        actions,
        resources,
        conditions,
        raw: obj.clone(),
    })
}

fn parse_principals(
    index: usize,
    value: &Value,
    negated: bool,
) -> Result<Principals, InvalidPolicy> {
    let name = if negated { "NotPrincipal" } else { "Principal" };
    match value {
        Value::String(s) if s == "*" => Ok(Principals {
            negated,
            wildcard: true,
            entries: Vec::new(),
        }),
        Value::Object(map) if !map.is_empty() => {
            let mut entries = Vec::new();
            for (key, v) in map {
                let kind = PrincipalKind::from_key(key).ok_or_else(|| {
                    at(
                        index,
                        format!(
                            "\"{name}\" has the key \"{key}\"; only AWS, Service, Federated and CanonicalUser are allowed"
                        ),
                    )
                })?;
                let values = string_list(v).ok_or_else(|| {
                    at(
                        index,
                        format!("\"{name}\".\"{key}\" is not a string or an array of strings"),
                    )
                })?;
                entries.extend(
                    values
                        .into_iter()
                        .map(|value| PrincipalEntry { kind, value }),
                );
            }
            Ok(Principals {
                negated,
                wildcard: false,
                entries,
            })
        }
        _ => Err(at(
            index,
            format!(
                "\"{name}\" must be \"*\" or a non-empty object such as {{\"AWS\": \"arn:…\"}}"
            ),
        )),
    }
}

fn action_list(index: usize, name: &str, value: &Value) -> Result<Vec<String>, InvalidPolicy> {
    match string_list(value) {
        Some(list) if !list.is_empty() => Ok(list),
        _ => Err(at(
            index,
            format!("\"{name}\" must be a string or a non-empty array of strings"),
        )),
    }
}

/// A string or an array of strings; `None` for anything else.
fn string_list(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// Resource values: the grammar wants strings, but no rule depends on them being well formed.
fn loose_strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> InvalidPolicy {
        Policy::parse(text).expect_err(text)
    }

    #[test]
    fn invalid_documents() {
        let cases = [
            "not json",
            "[]",
            "\"x\"",
            "{}",
            r#"{"Statement": 1}"#,
            r#"{"Statement": []}"#,
            r#"{"Statement": [1]}"#,
            r#"{"Statement": [{"Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":true,"Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","NotPrincipal":"*","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"arn:aws:iam::111122223333:root","Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":{},"Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":{"Aws":"*"},"Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":{"AWS":1},"Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":{"AWS":["a",2]},"Action":"kms:*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:Decrypt","Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":5,"Resource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","NotResource":"*"}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":[]}]}"#,
            r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringEquals":"x"}}]}"#,
        ];
        for text in cases {
            let err = invalid(text);
            assert!(!err.reason.is_empty(), "{text}");
        }
        assert_eq!(
            invalid(r#"{"Statement": [{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}, {"Effect":"Allow"}]}"#)
                .statement_index,
            Some(1)
        );
    }

    #[test]
    fn valid_shapes() {
        let single = Policy::parse(
            r#"{"Statement": {"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::1:root","*"],"Service":"s3.amazonaws.com"},"NotAction":"kms:Decrypt"}}"#,
        )
        .unwrap();
        let st = &single.statements()[0];
        assert_eq!(st.principals.entries.len(), 3);
        assert!(st.actions.negated);
        assert!(st.resources.is_none());
        assert!(!st.is_effective_allow());
        let p = Policy::parse(r#"{"Id":"x","Statement":[{"Effect":"Deny","NotPrincipal":"*","Action":"kms:*","NotResource":"*"}]}"#).unwrap();
        assert!(p.statements()[0].principals.negated);
        assert!(p.statements()[0].resources.as_ref().unwrap().negated);
    }

    #[test]
    fn round_trip_keeps_order_and_unknown_fields() {
        let text = r#"{"Version":"2012-10-17","Zeta":{"b":1,"a":[true,null,1.5]},"Statement":[{"Sid":"b","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*","X-Custom":7},{"Effect":"Deny","Principal":"*","Action":["kms:Decrypt"],"Resource":"*"}],"Id":"key-default-1"}"#;
        let p = Policy::parse(text).unwrap();
        assert_eq!(serde_json::to_string(&p.to_value()).unwrap(), text);
        let again = Policy::parse(&p.to_pretty()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn not_action_grants_everything_else() {
        let a = Actions {
            negated: true,
            patterns: vec!["kms:Put*".into()],
        };
        assert!(a.grants("kms:Decrypt"));
        assert!(!a.grants("kms:PutKeyPolicy"));
    }
}
