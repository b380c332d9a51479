//! Condition blocks: operators and keys as IAM reads them (names case-insensitive, values
//! case-sensitive unless `…IgnoreCase`), and the few judgements the rules need from them.

use serde_json::Value;

use super::matching::glob_match;

/// The comparison an operator makes, without its `ForAnyValue:`/`ForAllValues:`/`IfExists` parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseOperator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    Bool,
    Null,
    /// Numeric, date, IP, binary and unknown operators: no rule draws conclusions from them.
    Other,
}

impl BaseOperator {
    fn from_lowercase(name: &str) -> Self {
        match name {
            "stringequals" => Self::StringEquals,
            "stringnotequals" => Self::StringNotEquals,
            "stringequalsignorecase" => Self::StringEqualsIgnoreCase,
            "stringnotequalsignorecase" => Self::StringNotEqualsIgnoreCase,
            "stringlike" => Self::StringLike,
            "stringnotlike" => Self::StringNotLike,
            "arnequals" => Self::ArnEquals,
            "arnnotequals" => Self::ArnNotEquals,
            "arnlike" => Self::ArnLike,
            "arnnotlike" => Self::ArnNotLike,
            "bool" => Self::Bool,
            "null" => Self::Null,
            _ => Self::Other,
        }
    }

    /// StringEquals, StringEqualsIgnoreCase, StringLike, ArnEquals, ArnLike: the operators that
    /// admit only the listed values.
    pub fn is_positive_match(self) -> bool {
        matches!(
            self,
            Self::StringEquals
                | Self::StringEqualsIgnoreCase
                | Self::StringLike
                | Self::ArnEquals
                | Self::ArnLike
        )
    }

    /// The string operators, positive or negated: the only ones that compare a value such as
    /// `aws:PrincipalType` (RULES.md KMS-DELEGATION: other operators leave the set unchanged).
    pub fn is_string_match(self) -> bool {
        matches!(
            self,
            Self::StringEquals
                | Self::StringNotEquals
                | Self::StringEqualsIgnoreCase
                | Self::StringNotEqualsIgnoreCase
                | Self::StringLike
                | Self::StringNotLike
        )
    }

    /// The negated string and ARN operators.
    pub fn is_negative_match(self) -> bool {
        matches!(
            self,
            Self::StringNotEquals
                | Self::StringNotEqualsIgnoreCase
                | Self::StringNotLike
                | Self::ArnNotEquals
                | Self::ArnNotLike
        )
    }

    /// True when `candidate` equals (or matches) one of `values` under this operator's
    /// comparison, ignoring negation: `StringNotEquals` compares like `StringEquals`.
    pub fn compares_equal(self, values: &[String], candidate: &str) -> bool {
        values.iter().any(|v| match self {
            Self::StringEquals | Self::StringNotEquals | Self::ArnEquals | Self::ArnNotEquals => {
                v == candidate
            }
            Self::StringEqualsIgnoreCase | Self::StringNotEqualsIgnoreCase => {
                v.eq_ignore_ascii_case(candidate) || v.to_lowercase() == candidate.to_lowercase()
            }
            // ARN matching is case-sensitive glob per field, which for the whole string is the same.
            Self::StringLike | Self::StringNotLike | Self::ArnLike | Self::ArnNotLike => {
                glob_match(v, candidate, false)
            }
            Self::Bool => v.eq_ignore_ascii_case(candidate),
            Self::Null | Self::Other => false,
        })
    }
}

/// The set-operator prefix of a condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetQualifier {
    None,
    ForAnyValue,
    ForAllValues,
}

/// A condition operator as written, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The name exactly as written in the policy.
    pub name: String,
    pub base: BaseOperator,
    pub set: SetQualifier,
    pub if_exists: bool,
}

impl Operator {
    /// Parses an operator name case-insensitively.
    pub fn parse(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        let (set, rest) = if let Some(rest) = lower.strip_prefix("foranyvalue:") {
            (SetQualifier::ForAnyValue, rest)
        } else if let Some(rest) = lower.strip_prefix("forallvalues:") {
            (SetQualifier::ForAllValues, rest)
        } else {
            (SetQualifier::None, lower.as_str())
        };
        let (if_exists, base) = match rest.strip_suffix("ifexists") {
            Some(base) => (true, base),
            None => (false, rest),
        };
        Operator {
            name: name.to_string(),
            base: BaseOperator::from_lowercase(base),
            set,
            if_exists,
        }
    }

    /// The base comparison when this operator, on `key`, really constrains a KMS request.
    /// `ForAllValues:` and `…IfExists` are vacuously true when the key is absent, so they
    /// constrain only keys that every KMS request carries (RULES.md §1).
    pub fn constraining_base(&self, key_lowercase: &str) -> Option<BaseOperator> {
        let vacuous_when_absent = self.set == SetQualifier::ForAllValues || self.if_exists;
        if vacuous_when_absent && !is_always_present(key_lowercase) {
            None
        } else {
            Some(self.base)
        }
    }
}

/// Condition keys present in every KMS request.
pub const ALWAYS_PRESENT_KEYS: [&str; 5] = [
    "aws:principaltype",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:userid",
    "kms:calleraccount",
];

/// True for a key (lower case) in [`ALWAYS_PRESENT_KEYS`].
pub fn is_always_present(key_lowercase: &str) -> bool {
    ALWAYS_PRESENT_KEYS.contains(&key_lowercase)
}

/// One operator × key × values entry of a `Condition` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEntry {
    pub operator: Operator,
    /// The key exactly as written.
    pub key: String,
    /// The key in lower case, for comparisons (condition key names are case-insensitive).
    pub key_lowercase: String,
    /// Values as strings: JSON `true`/`false` become `"true"`/`"false"`.
    pub values: Vec<String>,
}

/// Parses a `Condition` value; `None` when it is not an object of objects.
pub fn parse_block(value: &Value) -> Option<Vec<ConditionEntry>> {
    let Value::Object(ops) = value else {
        return None;
    };
    let mut entries = Vec::new();
    for (op_name, keys) in ops {
        let Value::Object(keys) = keys else {
            return None;
        };
        let operator = Operator::parse(op_name);
        for (key, values) in keys {
            entries.push(ConditionEntry {
                operator: operator.clone(),
                key: key.clone(),
                key_lowercase: key.to_ascii_lowercase(),
                values: condition_values(values),
            });
        }
    }
    Some(entries)
}

fn condition_values(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(scalar_text).collect(),
        other => vec![scalar_text(other)],
    }
}

/// Condition values compare as strings; anything that is not a scalar keeps its JSON text,
/// which no rule treats as a fixed value.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The `aws:PrincipalType` values a request can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalType {
    Account,
    User,
    AssumedRole,
    FederatedUser,
}

impl PrincipalType {
    /// All four, in the order AWS documents them.
    pub const ALL: [PrincipalType; 4] = [
        PrincipalType::Account,
        PrincipalType::User,
        PrincipalType::AssumedRole,
        PrincipalType::FederatedUser,
    ];

    /// The value as AWS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "Account",
            Self::User => "User",
            Self::AssumedRole => "AssumedRole",
            Self::FederatedUser => "FederatedUser",
        }
    }

    /// The IAM identities that an account-root grant delegates to.
    pub fn is_iam_identity(self) -> bool {
        self != Self::Account
    }
}

/// Which principal types of the account a statement naming the account principal still admits
/// after its conditions: the judgement behind KMS-DELEGATION and the fix's root-access check.
///
/// Only `aws:PrincipalType` and `aws:PrincipalArn` can narrow the set; every other condition
/// narrows *within* a type and so leaves access governed by IAM.
pub fn admitted_principal_types(
    conditions: &[ConditionEntry],
    account_id: &str,
) -> Vec<PrincipalType> {
    let mut admitted = PrincipalType::ALL.to_vec();
    for entry in conditions {
        let base = entry.operator.base;
        // An empty value list pins nothing; reading it as "matches nothing" would hide a grant.
        if entry.values.is_empty() {
            continue;
        }
        match entry.key_lowercase.as_str() {
            // The key is always present, so set qualifiers and IfExists change nothing here.
            // ARN operators do not compare plain strings such as "Account": they narrow nothing.
            "aws:principaltype" if base.is_string_match() => {
                let negative = base.is_negative_match();
                admitted.retain(|t| base.compares_equal(&entry.values, t.as_str()) != negative);
            }
            "aws:principalarn" if base.is_positive_match() || base.is_negative_match() => {
                let roots = root_arns(account_id);
                let root_listed = roots
                    .iter()
                    .any(|root| base.compares_equal(&entry.values, root));
                if base.is_positive_match() {
                    let only_root = !entry.values.is_empty()
                        && entry
                            .values
                            .iter()
                            .all(|v| super::matching::is_root_arn_of(v, account_id));
                    if only_root {
                        admitted.retain(|t| !t.is_iam_identity());
                    }
                    if !root_listed {
                        admitted.retain(|t| t.is_iam_identity());
                    }
                } else if root_listed {
                    admitted.retain(|t| t.is_iam_identity());
                }
            }
            _ => {}
        }
    }
    admitted
}

fn root_arns(account_id: &str) -> [String; 3] {
    ["aws", "aws-cn", "aws-us-gov"].map(|p| format!("arn:{p}:iam::{account_id}:root"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(json: &str) -> Vec<ConditionEntry> {
        parse_block(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn operator_names_are_case_insensitive() {
        let op = Operator::parse("forAnyValue:stringEQUALSIfExists");
        assert_eq!(op.base, BaseOperator::StringEquals);
        assert_eq!(op.set, SetQualifier::ForAnyValue);
        assert!(op.if_exists);
        assert_eq!(Operator::parse("NumericLessThan").base, BaseOperator::Other);
        assert_eq!(
            Operator::parse("ForAllValues:StringLike").set,
            SetQualifier::ForAllValues
        );
    }

    #[test]
    fn if_exists_constrains_only_always_present_keys() {
        let op = Operator::parse("StringEqualsIfExists");
        assert_eq!(
            op.constraining_base("kms:calleraccount"),
            Some(BaseOperator::StringEquals)
        );
        assert_eq!(op.constraining_base("aws:principalorgid"), None);
        let all = Operator::parse("ForAllValues:StringEquals");
        assert_eq!(all.constraining_base("aws:sourcearn"), None);
        assert!(
            Operator::parse("ForAnyValue:StringEquals")
                .constraining_base("aws:sourcearn")
                .is_some()
        );
    }

    #[test]
    fn values_become_strings() {
        let entries =
            block(r#"{"Bool":{"aws:SecureTransport":true},"StringEquals":{"K":["a",1]}}"#);
        assert_eq!(entries[0].values, vec!["true"]);
        assert_eq!(entries[1].values, vec!["a", "1"]);
        assert_eq!(entries[1].key_lowercase, "k");
    }

    #[test]
    fn principal_types() {
        let id = "111122223333";
        let types = |json: &str| {
            admitted_principal_types(&block(json), id)
                .into_iter()
                .map(PrincipalType::as_str)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            types("{}"),
            vec!["Account", "User", "AssumedRole", "FederatedUser"]
        );
        assert_eq!(
            types(r#"{"StringEquals":{"aws:PrincipalType":"Account"}}"#),
            vec!["Account"]
        );
        assert_eq!(
            types(r#"{"StringEquals":{"aws:PrincipalType":"account"}}"#),
            Vec::<&str>::new()
        );
        // ARN operators do not compare principal types; an empty list pins nothing
        assert_eq!(
            types(r#"{"ArnEquals":{"aws:PrincipalType":"Account"}}"#),
            vec!["Account", "User", "AssumedRole", "FederatedUser"]
        );
        assert_eq!(
            types(r#"{"StringEquals":{"aws:PrincipalType":[]}}"#),
            vec!["Account", "User", "AssumedRole", "FederatedUser"]
        );
        assert_eq!(
            types(r#"{"StringNotEquals":{"aws:PrincipalType":"Account"}}"#),
            vec!["User", "AssumedRole", "FederatedUser"]
        );
        assert_eq!(
            types(r#"{"StringEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:root"}}"#),
            vec!["Account"]
        );
        assert_eq!(
            types(r#"{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/X"}}"#),
            vec!["User", "AssumedRole", "FederatedUser"]
        );
    }
}
