//! Policies for people: statements pretty-printed one by one so the offending ones can be
//! marked, and line diffs between two versions. Plain data for the templates, which escape it.

use serde_json::Value;
use similar::{ChangeTag, TextDiff};
use std::collections::BTreeMap;

/// One statement of a policy as shown.
#[derive(Debug, Clone)]
pub struct StatementBlock {
    pub index: usize,
    pub label: String,
    /// Pretty JSON of the statement.
    pub json: String,
    /// Rule ids of the open findings that point at it.
    pub rules: Vec<String>,
}

impl StatementBlock {
    pub fn offending(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// A policy split for display.
#[derive(Debug, Clone, Default)]
pub struct PolicyBlocks {
    /// Pretty JSON of the document without `Statement`.
    pub header: String,
    pub statements: Vec<StatementBlock>,
    /// The text as stored, when it is not a JSON object with statements.
    pub raw: Option<String>,
}

/// Splits `text` into statements, marking those `offending` names (statement index → rules).
pub fn policy_blocks(text: &str, offending: &BTreeMap<usize, Vec<String>>) -> PolicyBlocks {
    let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(text) else {
        return PolicyBlocks {
            raw: Some(text.to_string()),
            ..PolicyBlocks::default()
        };
    };
    let statements = match doc.remove("Statement") {
        Some(Value::Array(items)) => items,
        Some(single @ Value::Object(_)) => vec![single],
        _ => {
            return PolicyBlocks {
                raw: Some(text.to_string()),
                ..PolicyBlocks::default()
            };
        }
    };
    PolicyBlocks {
        header: serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default(),
        statements: statements
            .iter()
            .enumerate()
            .map(|(index, st)| {
                let sid = st
                    .get("Sid")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                StatementBlock {
                    index,
                    label: match sid {
                        Some(sid) => format!("Statement {index} “{sid}”"),
                        None => format!("Statement {index}"),
                    },
                    json: serde_json::to_string_pretty(st).unwrap_or_default(),
                    rules: offending.get(&index).cloned().unwrap_or_default(),
                }
            })
            .collect(),
        raw: None,
    }
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `+`, `-`, ` `, or `…` between hunks.
    pub sign: &'static str,
    /// CSS class: `add`, `del`, `ctx`, `gap`.
    pub class: &'static str,
    pub text: String,
}

/// Pretty JSON of a policy text (the text itself when it is not JSON), so diffs compare
/// structure and not whitespace.
pub fn pretty(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_string()),
        Err(_) => text.to_string(),
    }
}

/// A line diff of two policy texts, three lines of context around each change.
pub fn line_diff(before: &str, after: &str) -> Vec<DiffLine> {
    let (a, b) = (pretty(before), pretty(after));
    let diff = TextDiff::from_lines(&a, &b);
    let mut out = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push(DiffLine {
                sign: "…",
                class: "gap",
                text: String::new(),
            });
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let (sign, class) = match change.tag() {
                    ChangeTag::Insert => ("+", "add"),
                    ChangeTag::Delete => ("-", "del"),
                    ChangeTag::Equal => (" ", "ctx"),
                };
                out.push(DiffLine {
                    sign,
                    class,
                    text: change.value().trim_end_matches('\n').to_string(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_marked() {
        let text = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow"},{"Effect":"Deny"}]}"#;
        let mut offending = BTreeMap::new();
        offending.insert(1, vec!["KMS-PUBLIC".to_string()]);
        let b = policy_blocks(text, &offending);
        assert!(b.raw.is_none());
        assert!(b.header.contains("2012-10-17") && !b.header.contains("Statement"));
        assert_eq!(b.statements.len(), 2);
        assert_eq!(b.statements[0].label, "Statement 0 “A”");
        assert!(!b.statements[0].offending() && b.statements[1].offending());
        assert!(policy_blocks("not json", &offending).raw.is_some());
        let single = policy_blocks(r#"{"Statement":{"Effect":"Allow"}}"#, &offending);
        assert_eq!(single.statements.len(), 1);
    }

    #[test]
    fn diffs_show_changed_lines_with_context() {
        let before = r#"{"Statement":[{"Effect":"Allow","Action":"kms:*"}]}"#;
        let after = r#"{"Statement":[{"Effect":"Allow","Action":"kms:Decrypt"}]}"#;
        let lines = line_diff(before, after);
        assert!(
            lines
                .iter()
                .any(|l| l.class == "del" && l.text.contains("kms:*"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.class == "add" && l.text.contains("kms:Decrypt"))
        );
        assert!(lines.iter().any(|l| l.class == "ctx"));
        assert!(line_diff(before, before).is_empty());
    }
}
