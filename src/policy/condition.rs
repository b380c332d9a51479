//! Condition blocks: operators and keys as IAM reads them (names case-insensitive, values
//! case-sensitive unless `…IgnoreCase`), and the few judgements the rules need from them.

use serde_json::Value;
use std::borrow::Cow;

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
    /// The comparison named by `name` (already stripped of set qualifier and `IfExists`), in
    /// any case: comparing ASCII case-insensitively is the same as lowercasing first.
    fn from_name(name: &[u8]) -> Self {
        const NAMES: [(&str, BaseOperator); 12] = [
            ("stringequals", BaseOperator::StringEquals),
            ("stringnotequals", BaseOperator::StringNotEquals),
            (
                "stringequalsignorecase",
                BaseOperator::StringEqualsIgnoreCase,
            ),
            (
                "stringnotequalsignorecase",
                BaseOperator::StringNotEqualsIgnoreCase,
            ),
            ("stringlike", BaseOperator::StringLike),
            ("stringnotlike", BaseOperator::StringNotLike),
            ("arnequals", BaseOperator::ArnEquals),
            ("arnnotequals", BaseOperator::ArnNotEquals),
            ("arnlike", BaseOperator::ArnLike),
            ("arnnotlike", BaseOperator::ArnNotLike),
            ("bool", BaseOperator::Bool),
            ("null", BaseOperator::Null),
        ];
        NAMES
            .iter()
            .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()))
            .map_or(Self::Other, |(_, base)| *base)
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
        self.compares_equal_any(values, candidate)
    }

    /// [`Self::compares_equal`] over borrowed or owned values.
    pub fn compares_equal_any<S: AsRef<str>>(self, values: &[S], candidate: &str) -> bool {
        values.iter().map(AsRef::as_ref).any(|v| match self {
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
        let (base, set, if_exists) = classify_operator(name);
        Operator {
            name: name.to_string(),
            base,
            set,
            if_exists,
        }
    }

    /// The base comparison when this operator, on `key`, really constrains a KMS request.
    /// `ForAllValues:` and `…IfExists` are vacuously true when the key is absent, so they
    /// constrain only keys that every KMS request carries (RULES.md §1).
    pub fn constraining_base(&self, key_lowercase: &str) -> Option<BaseOperator> {
        constraining(
            self.base,
            self.set,
            self.if_exists,
            is_always_present(key_lowercase),
        )
    }
}

/// Splits an operator name into its comparison, set qualifier and `IfExists`, ignoring case
/// and without allocating: evaluation does this for every condition entry.
pub fn classify_operator(name: &str) -> (BaseOperator, SetQualifier, bool) {
    fn strip_prefix_ignore_case<'n>(name: &'n [u8], prefix: &str) -> Option<&'n [u8]> {
        let (head, rest) = name.split_at_checked(prefix.len())?;
        head.eq_ignore_ascii_case(prefix.as_bytes()).then_some(rest)
    }
    let name = name.as_bytes();
    let (set, rest) = if let Some(rest) = strip_prefix_ignore_case(name, "foranyvalue:") {
        (SetQualifier::ForAnyValue, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(name, "forallvalues:") {
        (SetQualifier::ForAllValues, rest)
    } else {
        (SetQualifier::None, name)
    };
    const IF_EXISTS: &[u8] = b"ifexists";
    let (if_exists, base) = match rest.len().checked_sub(IF_EXISTS.len()) {
        Some(at) if rest[at..].eq_ignore_ascii_case(IF_EXISTS) => (true, &rest[..at]),
        _ => (false, rest),
    };
    (BaseOperator::from_name(base), set, if_exists)
}

/// [`Operator::constraining_base`], for an operator already classified.
fn constraining(
    base: BaseOperator,
    set: SetQualifier,
    if_exists: bool,
    always_present: bool,
) -> Option<BaseOperator> {
    let vacuous_when_absent = set == SetQualifier::ForAllValues || if_exists;
    if vacuous_when_absent && !always_present {
        None
    } else {
        Some(base)
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

/// The condition keys some rule draws a conclusion from; every other key is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKey {
    PrincipalType,
    PrincipalAccount,
    PrincipalArn,
    UserId,
    CallerAccount,
    SourceAccount,
    SourceOwner,
    SourceArn,
    PrincipalOrgId,
    SourceOrgId,
    PrincipalOrgPaths,
    SourceOrgPaths,
    GrantIsForAwsResource,
    ViaService,
    SourceIp,
    SourceVpc,
    SourceVpce,
    Other,
}

impl ConditionKey {
    /// Classifies a key as written; key names are case-insensitive.
    pub fn of(key: &str) -> Self {
        use ConditionKey::*;
        const KEYS: [(&str, ConditionKey); 17] = [
            ("aws:principaltype", PrincipalType),
            ("aws:principalaccount", PrincipalAccount),
            ("aws:principalarn", PrincipalArn),
            ("aws:userid", UserId),
            ("kms:calleraccount", CallerAccount),
            ("aws:sourceaccount", SourceAccount),
            ("aws:sourceowner", SourceOwner),
            ("aws:sourcearn", SourceArn),
            ("aws:principalorgid", PrincipalOrgId),
            ("aws:sourceorgid", SourceOrgId),
            ("aws:principalorgpaths", PrincipalOrgPaths),
            ("aws:sourceorgpaths", SourceOrgPaths),
            ("kms:grantisforawsresource", GrantIsForAwsResource),
            ("kms:viaservice", ViaService),
            ("aws:sourceip", SourceIp),
            ("aws:sourcevpc", SourceVpc),
            ("aws:sourcevpce", SourceVpce),
        ];
        KEYS.iter()
            .find(|(name, _)| key.eq_ignore_ascii_case(name))
            .map_or(Other, |(_, class)| *class)
    }

    /// A key in [`ALWAYS_PRESENT_KEYS`].
    pub fn is_always_present(self) -> bool {
        matches!(
            self,
            Self::PrincipalType
                | Self::PrincipalAccount
                | Self::PrincipalArn
                | Self::UserId
                | Self::CallerAccount
        )
    }
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

/// One condition entry as the rules read it: the operator and key already classified, the values
/// borrowed from the policy text or from a [`ConditionEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionView<'a> {
    pub base: BaseOperator,
    pub set: SetQualifier,
    pub if_exists: bool,
    pub key: ConditionKey,
    /// Values as strings: JSON `true`/`false` become `"true"`/`"false"`.
    pub values: Vec<Cow<'a, str>>,
}

impl<'a> ConditionView<'a> {
    /// The view of a parsed entry.
    pub fn of(entry: &'a ConditionEntry) -> Self {
        ConditionView {
            base: entry.operator.base,
            set: entry.operator.set,
            if_exists: entry.operator.if_exists,
            key: ConditionKey::of(&entry.key),
            values: entry
                .values
                .iter()
                .map(|v| Cow::Borrowed(v.as_str()))
                .collect(),
        }
    }

    /// [`Operator::constraining_base`] for this entry's key.
    pub fn constraining_base(&self) -> Option<BaseOperator> {
        constraining(
            self.base,
            self.set,
            self.if_exists,
            self.key.is_always_present(),
        )
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
    let views: Vec<ConditionView<'_>> = conditions.iter().map(ConditionView::of).collect();
    let admitted = admitted_types(&views, account_id);
    PrincipalType::ALL
        .into_iter()
        .filter(|t| admitted.contains(*t))
        .collect()
}

/// A set of [`PrincipalType`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrincipalTypes(u8);

impl PrincipalTypes {
    const ALL: Self = Self(0b1111);

    fn bit(t: PrincipalType) -> u8 {
        1 << t as u8
    }

    pub fn contains(self, t: PrincipalType) -> bool {
        self.0 & Self::bit(t) != 0
    }

    /// True when an IAM identity type (User, AssumedRole, FederatedUser) is in the set.
    pub fn admits_iam_identity(self) -> bool {
        self.0 & !Self::bit(PrincipalType::Account) != 0
    }

    fn retain(&mut self, keep: impl Fn(PrincipalType) -> bool) {
        for t in PrincipalType::ALL {
            if !keep(t) {
                self.0 &= !Self::bit(t);
            }
        }
    }
}

/// [`admitted_principal_types`] over condition views.
pub fn admitted_types(conditions: &[ConditionView<'_>], account_id: &str) -> PrincipalTypes {
    let mut admitted = PrincipalTypes::ALL;
    for entry in conditions {
        let base = entry.base;
        // An empty value list pins nothing; reading it as "matches nothing" would hide a grant.
        if entry.values.is_empty() {
            continue;
        }
        match entry.key {
            // The key is always present, so set qualifiers and IfExists change nothing here.
            // ARN operators do not compare plain strings such as "Account": they narrow nothing.
            ConditionKey::PrincipalType if base.is_string_match() => {
                let negative = base.is_negative_match();
                admitted.retain(|t| base.compares_equal_any(&entry.values, t.as_str()) != negative);
            }
            ConditionKey::PrincipalArn if base.is_positive_match() || base.is_negative_match() => {
                let roots = root_arns(account_id);
                let root_listed = roots
                    .iter()
                    .any(|root| base.compares_equal_any(&entry.values, root));
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

    /// The allocation-free classification reads names exactly as lowercasing them first did.
    #[test]
    fn operator_classification_matches_lowercasing() {
        fn reference(name: &str) -> (BaseOperator, SetQualifier, bool) {
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
            let named = [
                "stringequals",
                "stringnotequals",
                "stringequalsignorecase",
                "stringnotequalsignorecase",
                "stringlike",
                "stringnotlike",
                "arnequals",
                "arnnotequals",
                "arnlike",
                "arnnotlike",
                "bool",
                "null",
            ]
            .iter()
            .position(|n| *n == base);
            let bases = [
                BaseOperator::StringEquals,
                BaseOperator::StringNotEquals,
                BaseOperator::StringEqualsIgnoreCase,
                BaseOperator::StringNotEqualsIgnoreCase,
                BaseOperator::StringLike,
                BaseOperator::StringNotLike,
                BaseOperator::ArnEquals,
                BaseOperator::ArnNotEquals,
                BaseOperator::ArnLike,
                BaseOperator::ArnNotLike,
                BaseOperator::Bool,
                BaseOperator::Null,
            ];
            (
                named.map_or(BaseOperator::Other, |i| bases[i]),
                set,
                if_exists,
            )
        }
        let bases = [
            "StringEquals",
            "StringNotEquals",
            "StringEqualsIgnoreCase",
            "StringNotEqualsIgnoreCase",
            "StringLike",
            "StringNotLike",
            "ArnEquals",
            "ArnNotEquals",
            "ArnLike",
            "ArnNotLike",
            "Bool",
            "Null",
            "NumericLessThan",
            "",
            "IfExists",
            "ßtringEquals",
        ];
        for base in bases {
            for set in [
                "",
                "ForAnyValue:",
                "ForAllValues:",
                "forallvalues:",
                "ForAnyValue",
            ] {
                for suffix in ["", "IfExists", "ifexists", "IFEXISTS", "IfExist"] {
                    for name in [
                        format!("{set}{base}{suffix}"),
                        format!("{set}{base}{suffix}").to_ascii_uppercase(),
                        format!("{set}{base}{suffix}").to_ascii_lowercase(),
                    ] {
                        assert_eq!(classify_operator(&name), reference(&name), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn condition_keys_are_classified_case_insensitively() {
        let keys = [
            "aws:PrincipalType",
            "aws:PrincipalAccount",
            "aws:PrincipalArn",
            "aws:userid",
            "kms:CallerAccount",
            "aws:SourceAccount",
            "aws:SourceOwner",
            "aws:SourceArn",
            "aws:PrincipalOrgID",
            "aws:SourceOrgID",
            "aws:PrincipalOrgPaths",
            "aws:SourceOrgPaths",
            "kms:GrantIsForAWSResource",
            "kms:ViaService",
            "aws:SourceIp",
            "aws:SourceVpc",
            "aws:SourceVpce",
        ];
        for key in keys {
            let class = ConditionKey::of(key);
            assert_ne!(class, ConditionKey::Other, "{key}");
            assert_eq!(ConditionKey::of(&key.to_ascii_uppercase()), class);
            assert_eq!(ConditionKey::of(&key.to_ascii_lowercase()), class);
            assert_eq!(
                class.is_always_present(),
                is_always_present(&key.to_ascii_lowercase()),
                "{key}"
            );
        }
        for key in [
            "aws:PrincipalTyp",
            "kms:EncryptionContext:aws:s3:arn",
            "",
            "aws:SourceIpX",
        ] {
            assert_eq!(ConditionKey::of(key), ConditionKey::Other, "{key}");
        }
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
