//! RULES.md as executable checks: every bullet, decision and example of §1 (parsing and
//! normalisation), §2 (the rules) and the Keyward column of §3, plus the realistic policies of §4,
//! through the public API only. Each test quotes or paraphrases the bullet it covers.

use std::collections::BTreeSet;

use keyward::policy::{
    EvalContext, Finding, KeyManager, Policy, RuleId, evaluate, evaluate_policy,
};
use serde_json::{Value, json};

/// The key's account.
const ACCOUNT: &str = "111122223333";
/// Its account principal.
const ROOT: &str = "arn:aws:iam::111122223333:root";
/// An external account.
const OTHER: &str = "444455556666";
const OTHER_ROOT: &str = "arn:aws:iam::444455556666:root";
/// A second external account.
const THIRD: &str = "777788889999";
const ORG: &str = "o-a1b2c3d4e5";

const ADMIN_ACTIONS: [&str; 14] = [
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:DisableKey",
    "kms:EnableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKeyRotation",
    "kms:UpdateKeyDescription",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ImportKeyMaterial",
    "kms:DeleteImportedKeyMaterial",
    "kms:UpdatePrimaryRegion",
    "kms:RotateKeyOnDemand",
];

const CRYPTO_ACTIONS: [&str; 13] = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:Sign",
    "kms:Verify",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
];

/// The key administrator actions of the Knowledge Center / KMS Developer Guide.
const KC_ADMIN_ACTIONS: [&str; 15] = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
];

/// The key user actions of the default key policy.
const USER_ACTIONS: [&str; 5] = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
];

// ---------------------------------------------------------------------------------------------
// Helpers

/// Findings of `text` for a key in [`ACCOUNT`].
///
/// Every case also goes through the lossless parser and [`evaluate_policy`] (what `fix`, `diff`
/// and the stored history use) and must find exactly the same, so the two readers of a policy
/// cannot drift apart on any bullet of RULES.md.
fn eval_as(text: &str, key_manager: KeyManager, trusted: &[&str]) -> Vec<Finding> {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    let ctx = EvalContext {
        account_id: ACCOUNT,
        key_manager,
        trusted_accounts: &trusted,
    };
    let fast = evaluate(text, &ctx);
    if let Ok(policy) = Policy::parse(text) {
        assert_eq!(
            evaluate_policy(&policy, &ctx),
            fast,
            "the two readers disagree on {text}"
        );
    }
    fast
}

/// Findings of a customer managed key in [`ACCOUNT`] with no trusted accounts.
fn eval(text: &str) -> Vec<Finding> {
    eval_as(text, KeyManager::Customer, &[])
}

/// A policy document holding `statements`.
fn doc(statements: &[Value]) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// An Allow statement with `Resource: "*"`.
fn allow(principal: Value, action: Value) -> Value {
    json!({"Effect": "Allow", "Principal": principal, "Action": action, "Resource": "*"})
}

/// [`allow`] with a `Condition` block.
fn allow_if(principal: Value, action: Value, condition: Value) -> Value {
    with(allow(principal, action), "Condition", condition)
}

/// A Deny statement with `Resource: "*"`.
fn deny(principal: Value, action: Value) -> Value {
    json!({"Effect": "Deny", "Principal": principal, "Action": action, "Resource": "*"})
}

/// `st` with `field` set to `value`.
fn with(mut st: Value, field: &str, value: Value) -> Value {
    st[field] = value;
    st
}

/// `st` without `field`.
fn without(mut st: Value, field: &str) -> Value {
    st.as_object_mut().unwrap().remove(field);
    st
}

/// `st` with `from` renamed to `to` (Principal → NotPrincipal, Resource → NotResource, …).
fn renamed(mut st: Value, from: &str, to: &str) -> Value {
    let obj = st.as_object_mut().unwrap();
    let v = obj.remove(from).unwrap();
    obj.insert(to.to_string(), v);
    st
}

fn aws(v: impl Into<Value>) -> Value {
    json!({ "AWS": v.into() })
}

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

fn star() -> Value {
    json!("*")
}

/// The statement indexes at which `rule` fired.
fn hits(findings: &[Finding], rule: RuleId) -> Vec<Option<usize>> {
    findings
        .iter()
        .filter(|f| f.rule_id == rule)
        .map(|f| f.statement_index)
        .collect()
}

/// Every finding as (rule, statement index), sorted.
fn found(text: &str) -> Vec<(RuleId, Option<usize>)> {
    let mut v: Vec<_> = eval(text)
        .iter()
        .map(|f| (f.rule_id, f.statement_index))
        .collect();
    v.sort();
    v
}

/// The set of rules that fired.
fn rule_set(findings: &[Finding]) -> BTreeSet<RuleId> {
    findings.iter().map(|f| f.rule_id).collect()
}

fn set(rules: &[RuleId]) -> BTreeSet<RuleId> {
    rules.iter().copied().collect()
}

/// True when `rule` fires on a policy holding only `st`.
fn fires(rule: RuleId, st: &Value) -> bool {
    !hits(&eval(&doc(std::slice::from_ref(st))), rule).is_empty()
}

/// Asserts, for each labelled single-statement case, whether `rule` fires.
#[track_caller]
fn table(rule: RuleId, cases: &[(&str, Value, bool)]) {
    for (label, st, want) in cases {
        let text = doc(std::slice::from_ref(st));
        let got = eval(&text);
        assert_eq!(
            !hits(&got, rule).is_empty(),
            *want,
            "{rule} on case {label:?}: {text}\nfindings: {got:#?}"
        );
    }
}

/// Asserts that `text` yields exactly one finding, KMS-INVALID, and returns its statement index.
#[track_caller]
fn only_invalid(text: &str) -> Option<usize> {
    for manager in [KeyManager::Customer, KeyManager::Aws] {
        let got = eval_as(text, manager, &[]);
        assert_eq!(got.len(), 1, "{manager:?} {text}: {got:#?}");
        assert_eq!(got[0].rule_id, RuleId::Invalid, "{text}");
    }
    eval(text)[0].statement_index
}

#[track_caller]
fn assert_valid(text: &str) {
    let got = eval(text);
    assert!(
        got.iter().all(|f| f.rule_id != RuleId::Invalid),
        "{text}: {got:#?}"
    );
}

/// A statement that would trip many rules at once: used to show that KMS-INVALID suppresses them.
fn noisy() -> Value {
    json!({"Effect":"Allow","NotPrincipal":{"AWS":role("X")},"NotAction":"kms:Decrypt","Resource":"*"})
}

// ---------------------------------------------------------------------------------------------
// §1 Parsing and normalisation: KMS-INVALID

mod s1_invalid {
    use super::*;

    /// "the text is not JSON, or the top level is not an object"
    #[test]
    fn invalid_when_not_json_or_top_level_not_an_object() {
        for text in [
            "",
            "not json",
            "{",
            r#"{"Statement":[]"#,
            "[]",
            r#"[{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}]"#,
            r#""policy""#,
            "42",
            "null",
            "true",
        ] {
            assert_eq!(only_invalid(text), None, "{text}");
        }
    }

    /// "`Statement` is missing, or is not an object or a non-empty array of objects"
    #[test]
    fn invalid_when_statement_missing_or_not_object_or_nonempty_array_of_objects() {
        for text in [
            "{}",
            r#"{"Version":"2012-10-17"}"#,
            r#"{"Version":"2012-10-17","Statements":[]}"#,
            r#"{"Statement":null}"#,
            r#"{"Statement":1}"#,
            r#"{"Statement":"x"}"#,
            r#"{"Statement":true}"#,
            r#"{"Statement":[]}"#,
        ] {
            assert_eq!(only_invalid(text), None, "{text}");
        }
        // an array item that is not an object is reported at its index
        for text in [
            r#"{"Statement":[1]}"#,
            r#"{"Statement":[null]}"#,
            r#"{"Statement":[[]]}"#,
            r#"{"Statement":["Allow"]}"#,
        ] {
            assert_eq!(only_invalid(text), Some(0), "{text}");
        }
        // one non-object item in an otherwise valid array: reported at its index
        let text = json!({"Statement": [allow(aws(ROOT), json!("kms:*")), 1]}).to_string();
        assert_eq!(only_invalid(&text), Some(1));
    }

    /// "`Effect` is missing or is not exactly `Allow` or `Deny`"
    #[test]
    fn invalid_when_effect_missing_or_not_exactly_allow_or_deny() {
        let base = allow(aws(role("A")), json!("kms:Decrypt"));
        assert_eq!(
            only_invalid(&doc(&[without(base.clone(), "Effect")])),
            Some(0)
        );
        for effect in [
            json!("allow"),
            json!("ALLOW"),
            json!("deny"),
            json!("Allow "),
            json!(" Deny"),
            json!("Permit"),
            json!(""),
            json!(true),
            json!(null),
            json!(["Allow"]),
        ] {
            let st = with(base.clone(), "Effect", effect.clone());
            assert_eq!(only_invalid(&doc(&[st])), Some(0), "{effect}");
            // in a later statement, the index points at it
            let st = with(base.clone(), "Effect", effect.clone());
            assert_eq!(only_invalid(&doc(&[base.clone(), st])), Some(1), "{effect}");
        }
        assert_valid(&doc(&[with(base.clone(), "Effect", json!("Deny"))]));
        assert_valid(&doc(&[base]));
    }

    /// "the statement does not have exactly one of `Principal` / `NotPrincipal`"
    #[test]
    fn invalid_without_exactly_one_of_principal_or_notprincipal() {
        let base = allow(star(), json!("kms:Decrypt"));
        assert_eq!(
            only_invalid(&doc(&[without(base.clone(), "Principal")])),
            Some(0)
        );
        for np in [star(), aws(role("A"))] {
            let both = with(base.clone(), "NotPrincipal", np);
            assert_eq!(only_invalid(&doc(&[both])), Some(0));
        }
        assert_valid(&doc(&[renamed(base, "Principal", "NotPrincipal")]));
    }

    /// "the principal is neither "*" nor a non-empty object whose keys are in {AWS, Service,
    /// Federated, CanonicalUser} and whose values are strings or string arrays. A bare ARN string
    /// such as "Principal": "arn:aws:iam::1:root" is invalid"
    #[test]
    fn invalid_principal_that_is_not_star_or_a_map_of_known_families() {
        for principal in [
            json!("arn:aws:iam::1:root"),
            json!(ROOT),
            json!(ACCOUNT),
            json!("**"),
            json!(""),
            json!({}),
            json!([]),
            json!(["*"]),
            json!(null),
            json!(1),
            json!(true),
            json!({"Aws": "*"}),
            json!({"aws": "*"}),
            json!({"User": role("A")}),
            json!({"AWS": "*", "Other": "x"}),
            json!({"AWS": 1}),
            json!({"AWS": null}),
            json!({"AWS": true}),
            json!({"AWS": ["a", 2]}),
            json!({"AWS": [["*"]]}),
            json!({"AWS": {"x": "y"}}),
            json!({"Service": true}),
        ] {
            for field in ["Principal", "NotPrincipal"] {
                let st = renamed(
                    allow(principal.clone(), json!("kms:Decrypt")),
                    "Principal",
                    field,
                );
                assert_eq!(only_invalid(&doc(&[st])), Some(0), "{field}: {principal}");
            }
        }
        for principal in [
            star(),
            aws("*"),
            aws(json!([role("A"), ROOT])),
            json!({"Service": "logs.amazonaws.com"}),
            json!({"Service": ["logs.amazonaws.com", "ec2.amazonaws.com"]}),
            json!({"Federated": "cognito-identity.amazonaws.com"}),
            json!({"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"}),
            json!({"AWS": role("A"), "Service": "logs.amazonaws.com"}),
        ] {
            assert_valid(&doc(&[allow(principal, json!("kms:Decrypt"))]));
        }
    }

    /// "the statement does not have exactly one of `Action` / `NotAction`, or the value is not a
    /// string or a non-empty string array"
    #[test]
    fn invalid_action_or_notaction() {
        let base = allow(aws(role("A")), json!("kms:Decrypt"));
        assert_eq!(
            only_invalid(&doc(&[without(base.clone(), "Action")])),
            Some(0)
        );
        let both = with(base.clone(), "NotAction", json!("kms:Encrypt"));
        assert_eq!(only_invalid(&doc(&[both])), Some(0));
        for action in [
            json!([]),
            json!(5),
            json!(true),
            json!(null),
            json!({}),
            json!({"kms": "Decrypt"}),
            json!(["kms:Decrypt", 1]),
            json!([null]),
            json!([["kms:Decrypt"]]),
        ] {
            for field in ["Action", "NotAction"] {
                let st = renamed(
                    with(base.clone(), "Action", action.clone()),
                    "Action",
                    field,
                );
                assert_eq!(only_invalid(&doc(&[st])), Some(0), "{field}: {action}");
            }
        }
        for action in [json!("kms:Decrypt"), json!(["kms:Decrypt", "kms:Encrypt"])] {
            for field in ["Action", "NotAction"] {
                let st = renamed(
                    with(base.clone(), "Action", action.clone()),
                    "Action",
                    field,
                );
                assert_valid(&doc(&[st]));
            }
        }
    }

    /// "both `Resource` and `NotResource` are present"
    #[test]
    fn invalid_with_both_resource_and_notresource() {
        let st = with(
            allow(aws(role("A")), json!("kms:Decrypt")),
            "NotResource",
            json!("*"),
        );
        assert_eq!(only_invalid(&doc(&[st])), Some(0));
        let not_resource = renamed(
            allow(aws(role("A")), json!("kms:Decrypt")),
            "Resource",
            "NotResource",
        );
        assert_valid(&doc(&[not_resource]));
    }

    /// "`Condition` is not an object of objects"
    #[test]
    fn invalid_when_condition_is_not_an_object_of_objects() {
        let base = allow(aws(role("A")), json!("kms:Decrypt"));
        for condition in [
            json!([]),
            json!("x"),
            json!(1),
            json!(null),
            json!(true),
            json!([{"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}]),
            json!({"StringEquals": "x"}),
            json!({"StringEquals": ["aws:PrincipalAccount"]}),
            json!({"StringEquals": null}),
            json!({"StringEquals": 1}),
            json!({"StringEquals": {"aws:PrincipalAccount": ACCOUNT}, "Bool": []}),
        ] {
            let st = with(base.clone(), "Condition", condition.clone());
            assert_eq!(only_invalid(&doc(&[st])), Some(0), "{condition}");
        }
        for condition in [
            json!({}),
            json!({"StringEquals": {}}),
            json!({"StringEquals": {"aws:PrincipalAccount": [ACCOUNT, OTHER]}}),
            json!({"Bool": {"aws:SecureTransport": true}}),
        ] {
            assert_valid(&doc(&[with(base.clone(), "Condition", condition)]));
        }
    }

    /// "KMS-INVALID fires, and then no other rule is reported"
    #[test]
    fn invalid_suppresses_every_other_rule() {
        let broken = with(allow(star(), json!("kms:*")), "NotResource", json!("*"));
        let text = doc(&[
            noisy(),
            allow(aws(ROOT), json!("kms:*")),
            allow(aws(OTHER_ROOT), json!("kms:*")),
            allow(star(), json!("kms:CreateGrant")),
            broken,
        ]);
        assert_eq!(only_invalid(&text), Some(4));
        // the same policy without the broken statement trips many rules
        let text = doc(&[
            noisy(),
            allow(aws(ROOT), json!("kms:*")),
            allow(aws(OTHER_ROOT), json!("kms:*")),
            allow(star(), json!("kms:CreateGrant")),
        ]);
        assert!(rule_set(&eval(&text)).len() >= 8, "{:#?}", eval(&text));
    }
}

// ---------------------------------------------------------------------------------------------
// §1 Not invalid

mod s1_not_invalid {
    use super::*;

    /// "A statement without `Resource` ... has no effect, so all rules ignore such statements"
    #[test]
    fn statement_without_resource_is_valid_and_ignored_by_every_rule() {
        let statements = [
            noisy(),
            allow(aws(ROOT), json!("kms:*")),
            allow(star(), json!("kms:*")),
            allow(aws("*"), json!("kms:CreateGrant")),
            allow(aws(OTHER_ROOT), json!("kms:*")),
            allow(
                aws(json!([role("Admin"), OTHER])),
                json!(["kms:PutKeyPolicy", "kms:Decrypt", "kms:CreateGrant"]),
            ),
            allow(json!({"Service": "logs.amazonaws.com"}), json!("*")),
        ];
        let with_resource = doc(&statements);
        assert!(rule_set(&eval(&with_resource)).len() >= 8);
        let no_resource: Vec<Value> = statements
            .iter()
            .map(|st| without(st.clone(), "Resource"))
            .collect();
        // nothing fires but NO-ADMIN: the admin statement without Resource does not count either
        assert_eq!(found(&doc(&no_resource)), vec![(RuleId::NoAdmin, None)]);
        let mut plus_admin = no_resource;
        plus_admin.push(allow(aws(role("Admin")), json!("kms:PutKeyPolicy")));
        assert_eq!(found(&doc(&plus_admin)), vec![]);
    }

    /// "All rules look only at effective Allow statements, i.e. statements that have `Resource`
    /// or `NotResource`": NotResource counts as effective.
    #[test]
    fn notresource_statement_is_effective() {
        let st = renamed(noisy(), "Resource", "NotResource");
        let got = eval(&doc(&[st]));
        for rule in [RuleId::Public, RuleId::NotPrincipal, RuleId::NotAction] {
            assert_eq!(hits(&got, rule), vec![Some(0)], "{rule}");
        }
        let admin = renamed(
            allow(aws(role("Admin")), json!("kms:PutKeyPolicy")),
            "Resource",
            "NotResource",
        );
        assert!(hits(&eval(&doc(&[admin])), RuleId::NoAdmin).is_empty());
    }

    /// "`Statement` given as a single object" is not invalid.
    #[test]
    fn statement_as_single_object_is_valid() {
        let text = json!({"Version": "2012-10-17", "Statement": allow(aws(ROOT), json!("kms:*"))})
            .to_string();
        assert_eq!(
            found(&text),
            vec![(RuleId::Delegation, Some(0)), (RuleId::NoAdmin, None)]
        );
        let text = json!({"Statement": allow(star(), json!("kms:Decrypt"))}).to_string();
        assert_eq!(hits(&eval(&text), RuleId::Public), vec![Some(0)]);
    }

    /// "Version and Id are not checked."
    #[test]
    fn version_and_id_are_not_checked() {
        let st = allow(aws(ROOT), json!("kms:*"));
        let want = vec![(RuleId::Delegation, Some(0)), (RuleId::NoAdmin, None)];
        for (version, id) in [
            (None, None),
            (Some(json!("2012-10-17")), Some(json!("key-default-1"))),
            (Some(json!("2008-10-17")), None),
            (Some(json!("1999-01-01")), Some(json!(7))),
            (Some(json!(5)), Some(json!({}))),
            (Some(json!(null)), Some(json!(null))),
            (Some(json!(["2012-10-17"])), Some(json!(["x"]))),
        ] {
            let mut d = json!({"Statement": [st.clone()]});
            if let Some(v) = version {
                d["Version"] = v;
            }
            if let Some(i) = id {
                d["Id"] = i;
            }
            assert_eq!(found(&d.to_string()), want, "{d}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// §1 Normalisation

mod s1_normalisation {
    use super::*;

    /// "Action matching is case-insensitive glob (`*`, `?`): `KMS:Decrypt` = `kms:decrypt`,
    /// `kms:Create*` ⊇ `kms:CreateGrant`, `*` ⊇ everything."
    #[test]
    fn action_matching_is_case_insensitive_glob() {
        let admin = aws(role("Admin"));
        // through KMS-NO-ADMIN, which needs kms:PutKeyPolicy
        table(
            RuleId::NoAdmin,
            &[
                (
                    "exact",
                    allow(admin.clone(), json!("kms:PutKeyPolicy")),
                    false,
                ),
                (
                    "upper",
                    allow(admin.clone(), json!("KMS:PUTKEYPOLICY")),
                    false,
                ),
                (
                    "lower",
                    allow(admin.clone(), json!("kms:putkeypolicy")),
                    false,
                ),
                (
                    "prefix glob",
                    allow(admin.clone(), json!("kms:Put*")),
                    false,
                ),
                ("lower glob", allow(admin.clone(), json!("kms:put*")), false),
                (
                    "inner glob",
                    allow(admin.clone(), json!("kms:*Policy")),
                    false,
                ),
                (
                    "question mark",
                    allow(admin.clone(), json!("kms:P?tKeyPolic?")),
                    false,
                ),
                ("kms:*", allow(admin.clone(), json!("kms:*")), false),
                ("*", allow(admin.clone(), json!("*")), false),
                ("*:*", allow(admin.clone(), json!("*:*")), false),
                ("too short", allow(admin.clone(), json!("kms:Put")), true),
                (
                    "too long",
                    allow(admin.clone(), json!("kms:PutKeyPolicyX")),
                    true,
                ),
                (
                    "? is one char",
                    allow(admin.clone(), json!("kms:P?KeyPolicy")),
                    true,
                ),
                (
                    "other prefix",
                    allow(admin.clone(), json!("kms:Get*")),
                    true,
                ),
                ("other service", allow(admin.clone(), json!("s3:*")), true),
            ],
        );
        // through KMS-GRANT-ESCALATION, which needs kms:CreateGrant
        let user = aws(role("App"));
        table(
            RuleId::GrantEscalation,
            &[
                (
                    "KMS:CREATEGRANT",
                    allow(user.clone(), json!("KMS:CREATEGRANT")),
                    true,
                ),
                (
                    "kms:Create*",
                    allow(user.clone(), json!("kms:Create*")),
                    true,
                ),
                (
                    "kms:create*",
                    allow(user.clone(), json!("kms:create*")),
                    true,
                ),
                (
                    "kms:C?eateGrant",
                    allow(user.clone(), json!("kms:C?eateGrant")),
                    true,
                ),
                ("kms:*Grant", allow(user.clone(), json!("kms:*Grant")), true),
                (
                    "kms:CreateAlias",
                    allow(user.clone(), json!("kms:CreateAlias")),
                    false,
                ),
                (
                    "kms:Create",
                    allow(user.clone(), json!("kms:Create")),
                    false,
                ),
            ],
        );
        // through KMS-ADMIN-CAN-USE: KMS:Decrypt = kms:decrypt
        table(
            RuleId::AdminCanUse,
            &[(
                "mixed case",
                allow(user, json!(["KMS:DECRYPT", "Kms:putKeyPolicy"])),
                true,
            )],
        );
    }

    /// "`NotAction` grants every action that matches none of its patterns. It needs no catalog:
    /// just test the specific actions each rule cares about."
    #[test]
    fn notaction_grants_every_action_matching_none_of_its_patterns() {
        let st = |not: Value| json!({"Effect":"Allow","Principal":aws(role("App")),"NotAction":not,"Resource":"*"});
        table(
            RuleId::NoAdmin,
            &[
                ("excludes Decrypt only", st(json!("kms:Decrypt")), false),
                (
                    "excludes an unknown action",
                    st(json!("kms:NoSuchAction")),
                    false,
                ),
                ("excludes Put*", st(json!("kms:Put*")), true),
                (
                    "excludes putkeypolicy in lower case",
                    st(json!("kms:putkeypolicy")),
                    true,
                ),
                ("excludes kms:*", st(json!("kms:*")), true),
                ("excludes *", st(json!("*")), true),
            ],
        );
        table(
            RuleId::GrantEscalation,
            &[
                (
                    "leaves CreateGrant and Put",
                    st(json!("kms:Decrypt")),
                    false,
                ),
                ("leaves CreateGrant, not Put", st(json!("kms:Put*")), true),
                (
                    "excludes both",
                    st(json!(["kms:Put*", "kms:Create*"])),
                    false,
                ),
                (
                    "excludes CreateGrant",
                    st(json!(["kms:Put*", "kms:CreateGrant"])),
                    false,
                ),
            ],
        );
        table(
            RuleId::AdminCanUse,
            &[
                ("everything but Decrypt", st(json!("kms:Decrypt")), true),
                (
                    "no crypto left",
                    st(json!([
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncrypt*",
                        "kms:GenerateDataKey*",
                        "kms:Sign",
                        "kms:Verify",
                        "kms:GenerateMac",
                        "kms:VerifyMac",
                        "kms:DeriveSharedSecret"
                    ])),
                    false,
                ),
                (
                    "only PutKeyPolicy excluded",
                    st(json!("kms:PutKeyPolicy")),
                    true,
                ),
            ],
        );
    }

    /// "Condition operator names and condition key names are case-insensitive."
    #[test]
    fn condition_operator_and_key_names_are_case_insensitive() {
        let root = aws(ROOT);
        let pin = |op: &str, key: &str| {
            allow_if(
                root.clone(),
                json!("kms:*"),
                json!({ op: { key: "Account" } }),
            )
        };
        table(
            RuleId::Delegation,
            &[
                (
                    "StringEquals",
                    pin("StringEquals", "aws:PrincipalType"),
                    false,
                ),
                (
                    "stringequals",
                    pin("stringequals", "aws:PrincipalType"),
                    false,
                ),
                (
                    "STRINGEQUALS",
                    pin("STRINGEQUALS", "aws:PrincipalType"),
                    false,
                ),
                ("key lower", pin("StringEquals", "aws:principaltype"), false),
                ("key upper", pin("StringEquals", "AWS:PRINCIPALTYPE"), false),
                (
                    "forallvalues:stringequalsifexists",
                    pin("forallvalues:stringequalsifexists", "Aws:PrincipalTYPE"),
                    false,
                ),
            ],
        );
        let pinned = |op: &str, key: &str| {
            allow_if(
                star(),
                json!("kms:Decrypt"),
                json!({ op: { key: ACCOUNT } }),
            )
        };
        table(
            RuleId::Public,
            &[
                (
                    "stringEquals",
                    pinned("stringEquals", "kms:CallerAccount"),
                    false,
                ),
                (
                    "KMS:CALLERACCOUNT",
                    pinned("StringEquals", "KMS:CALLERACCOUNT"),
                    false,
                ),
                (
                    "foranyvalue:stringlike",
                    pinned("foranyvalue:stringlike", "aws:principalaccount"),
                    false,
                ),
                (
                    "STRINGEQUALSIFEXISTS",
                    pinned("STRINGEQUALSIFEXISTS", "Kms:CallerAccount"),
                    false,
                ),
                (
                    "stringequalsifexists on a not-always-present key",
                    pinned("stringequalsifexists", "AWS:SOURCEACCOUNT"),
                    true,
                ),
            ],
        );
        let grant = |op: &str, key: &str| {
            allow_if(
                aws(role("App")),
                json!("kms:CreateGrant"),
                json!({ op: { key: "true" } }),
            )
        };
        table(
            RuleId::GrantEscalation,
            &[
                ("bool", grant("bool", "kms:GrantIsForAWSResource"), false),
                (
                    "BOOL + upper key",
                    grant("BOOL", "KMS:GRANTISFORAWSRESOURCE"),
                    false,
                ),
                (
                    "stringequals + lower key",
                    grant("stringequals", "kms:grantisforawsresource"),
                    false,
                ),
            ],
        );
    }

    /// "Condition values are case-sensitive, except for `...IgnoreCase` operators."
    #[test]
    fn condition_values_are_case_sensitive_except_ignorecase() {
        let root = |c: Value| allow_if(aws(ROOT), json!("kms:*"), c);
        table(
            RuleId::Delegation,
            &[
                // StringEquals "account"/"ACCOUNT" never match: dead, not delegation
                (
                    "StringEquals account",
                    root(json!({"StringEquals":{"aws:PrincipalType":"account"}})),
                    false,
                ),
                (
                    "StringEquals ACCOUNT",
                    root(json!({"StringEquals":{"aws:PrincipalType":"ACCOUNT"}})),
                    false,
                ),
                // so a negation in the wrong case removes nothing
                (
                    "StringNotEquals lower case",
                    root(
                        json!({"StringNotEquals":{"aws:PrincipalType":["user","assumedrole","federateduser"]}}),
                    ),
                    true,
                ),
                (
                    "StringNotLike lower case",
                    root(json!({"StringNotLike":{"aws:PrincipalType":["*user","assumed*"]}})),
                    true,
                ),
                // IgnoreCase matches regardless of case
                (
                    "StringEqualsIgnoreCase ACCOUNT",
                    root(json!({"StringEqualsIgnoreCase":{"aws:PrincipalType":"ACCOUNT"}})),
                    false,
                ),
                (
                    "StringNotEqualsIgnoreCase lower case",
                    root(
                        json!({"StringNotEqualsIgnoreCase":{"aws:PrincipalType":["user","assumedrole","federateduser"]}}),
                    ),
                    false,
                ),
                (
                    "StringEqualsIgnoreCase user",
                    root(json!({"StringEqualsIgnoreCase":{"aws:PrincipalType":"user"}})),
                    true,
                ),
            ],
        );
        let grant = |c: Value| allow_if(aws(role("App")), json!("kms:CreateGrant"), c);
        table(
            RuleId::GrantEscalation,
            &[
                (
                    "StringEquals TRUE",
                    grant(json!({"StringEquals":{"kms:GrantIsForAWSResource":"TRUE"}})),
                    true,
                ),
                (
                    "StringEquals True",
                    grant(json!({"StringEquals":{"kms:GrantIsForAWSResource":"True"}})),
                    true,
                ),
                (
                    "StringEqualsIgnoreCase TRUE",
                    grant(json!({"StringEqualsIgnoreCase":{"kms:GrantIsForAWSResource":"TRUE"}})),
                    false,
                ),
            ],
        );
    }

    /// "The JSON booleans `true`/`false` equal the strings `"true"`/`"false"`."
    #[test]
    fn json_booleans_equal_their_strings() {
        let grant = |c: Value| allow_if(aws(role("App")), json!("kms:CreateGrant"), c);
        table(
            RuleId::GrantEscalation,
            &[
                (
                    "Bool true",
                    grant(json!({"Bool":{"kms:GrantIsForAWSResource":true}})),
                    false,
                ),
                (
                    "Bool [true]",
                    grant(json!({"Bool":{"kms:GrantIsForAWSResource":[true]}})),
                    false,
                ),
                (
                    "StringEquals true",
                    grant(json!({"StringEquals":{"kms:GrantIsForAWSResource":true}})),
                    false,
                ),
                (
                    "Bool \"true\"",
                    grant(json!({"Bool":{"kms:GrantIsForAWSResource":"true"}})),
                    false,
                ),
                (
                    "Bool false",
                    grant(json!({"Bool":{"kms:GrantIsForAWSResource":false}})),
                    true,
                ),
                (
                    "Bool \"false\"",
                    grant(json!({"Bool":{"kms:GrantIsForAWSResource":"false"}})),
                    true,
                ),
            ],
        );
    }

    /// "The account principal is `arn:<partition>:iam::<account_id>:root`, for any partition
    /// (`aws`, `aws-cn`, `aws-us-gov`), or the bare `"<account_id>"`.
    /// `arn:aws:iam::<account_id>:role/root` is not the account principal."
    #[test]
    fn account_principal_forms() {
        let account_principals = [
            ROOT.to_string(),
            format!("arn:aws-cn:iam::{ACCOUNT}:root"),
            format!("arn:aws-us-gov:iam::{ACCOUNT}:root"),
            ACCOUNT.to_string(),
        ];
        for p in &account_principals {
            let text = doc(&[allow(aws(p.as_str()), json!("kms:*"))]);
            // delegation, and kms:* on the account principal alone is not KMS-WILDCARD-ACTION
            assert_eq!(
                found(&text),
                vec![(RuleId::Delegation, Some(0)), (RuleId::NoAdmin, None)],
                "{p}"
            );
        }
        for p in [
            format!("arn:aws:iam::{ACCOUNT}:role/root"),
            format!("arn:aws:iam::{ACCOUNT}:user/root"),
            format!("arn:aws:iam:us-east-1:{ACCOUNT}:root"),
            format!("arn:aws:sts::{ACCOUNT}:root"),
        ] {
            let got = eval(&doc(&[allow(aws(p.as_str()), json!("kms:*"))]));
            assert!(hits(&got, RuleId::Delegation).is_empty(), "{p}: {got:#?}");
            // anything but the account principal makes kms:* a wildcard grant
            assert_eq!(hits(&got, RuleId::WildcardAction), vec![Some(0)], "{p}");
        }
    }

    /// "A public principal is `"*"`, `{"AWS":"*"}`, `"*"` inside the `AWS` array, or an `AWS` ARN
    /// whose account field contains `*` (for example `arn:aws:iam::*:root`)"
    #[test]
    fn public_principal_forms() {
        let public = [
            star(),
            aws("*"),
            aws(json!(["*"])),
            aws(json!([role("A"), "*"])),
            aws(json!([OTHER_ROOT, "*"])),
            aws("arn:aws:iam::*:root"),
            aws("arn:aws:iam::*:role/Admin"),
            aws("arn:aws:sts::*:assumed-role/Admin/session"),
            aws("arn:aws:iam::1111222233*:root"),
            json!({"AWS": "*", "Service": "logs.amazonaws.com"}),
        ];
        for p in public {
            let got = eval(&doc(&[allow(p.clone(), json!("kms:Decrypt"))]));
            assert_eq!(hits(&got, RuleId::Public), vec![Some(0)], "{p}");
            assert!(hits(&got, RuleId::CrossAccount).is_empty(), "{p}");
        }
        for p in [
            aws(role("A")),
            aws(ROOT),
            aws(format!("arn:aws:iam::{ACCOUNT}:role/*")),
            aws(OTHER_ROOT),
            json!({"Service": "logs.amazonaws.com"}),
            json!({"Federated": "cognito-identity.amazonaws.com"}),
        ] {
            let got = eval(&doc(&[allow(p.clone(), json!("kms:Decrypt"))]));
            assert!(hits(&got, RuleId::Public).is_empty(), "{p}");
        }
    }

    /// Ambiguity resolved: an account field wildcarded with `?` is as unpinned as one with `*`
    /// (KMS-CROSS-ACCOUNT skips wildcarded accounts, so it must be public, not silent).
    #[test]
    fn public_principal_with_question_mark_in_account() {
        let got = eval(&doc(&[allow(
            aws("arn:aws:iam::44445555666?:root"),
            json!("kms:Decrypt"),
        )]));
        assert_eq!(hits(&got, RuleId::Public), vec![Some(0)]);
        assert!(hits(&got, RuleId::CrossAccount).is_empty());
    }

    /// "`ForAnyValue:Op` on a single-valued key behaves like `Op`."
    #[test]
    fn for_any_value_behaves_like_the_operator() {
        table(
            RuleId::Public,
            &[
                (
                    "ForAnyValue:StringEquals SourceAccount",
                    allow_if(
                        star(),
                        json!("kms:Decrypt"),
                        json!({"ForAnyValue:StringEquals":{"aws:SourceAccount":ACCOUNT}}),
                    ),
                    false,
                ),
                (
                    "ForAnyValue:StringEquals PrincipalOrgID",
                    allow_if(
                        star(),
                        json!("kms:Decrypt"),
                        json!({"ForAnyValue:StringEquals":{"aws:PrincipalOrgID":ORG}}),
                    ),
                    false,
                ),
                (
                    "ForAnyValue:ArnLike SourceArn",
                    allow_if(
                        star(),
                        json!("kms:Decrypt"),
                        json!({"ForAnyValue:ArnLike":{"aws:SourceArn":format!("arn:aws:logs:*:{ACCOUNT}:*")}}),
                    ),
                    false,
                ),
                (
                    "ForAnyValue:StringNotEquals",
                    allow_if(
                        star(),
                        json!("kms:Decrypt"),
                        json!({"ForAnyValue:StringNotEquals":{"aws:SourceAccount":OTHER}}),
                    ),
                    true,
                ),
            ],
        );
        table(
            RuleId::Delegation,
            &[
                (
                    "ForAnyValue:StringEquals Account",
                    allow_if(
                        aws(ROOT),
                        json!("kms:*"),
                        json!({"ForAnyValue:StringEquals":{"aws:PrincipalType":"Account"}}),
                    ),
                    false,
                ),
                (
                    "ForAnyValue:StringLike A*",
                    allow_if(
                        aws(ROOT),
                        json!("kms:*"),
                        json!({"ForAnyValue:StringLike":{"aws:PrincipalType":"A*"}}),
                    ),
                    true,
                ),
            ],
        );
        table(
            RuleId::GrantEscalation,
            &[(
                "ForAnyValue:StringEquals ViaService",
                allow_if(
                    aws(role("App")),
                    json!("kms:CreateGrant"),
                    json!({"ForAnyValue:StringEquals":{"kms:ViaService":"rds.us-east-1.amazonaws.com"}}),
                ),
                false,
            )],
        );
    }

    /// "`ForAllValues:Op` and `OpIfExists` behave like `Op` only if the key is always present in a
    /// KMS request: `aws:PrincipalType`, `aws:PrincipalAccount`, `aws:PrincipalArn`, `aws:userid`
    /// and `kms:CallerAccount`."
    #[test]
    fn for_all_values_and_if_exists_behave_like_the_operator_on_always_present_keys() {
        let always: [(&str, String); 4] = [
            ("aws:PrincipalAccount", ACCOUNT.to_string()),
            ("kms:CallerAccount", ACCOUNT.to_string()),
            ("aws:PrincipalArn", role("App")),
            ("aws:userid", "AROAEXAMPLEROLEID:*".to_string()),
        ];
        for (key, value) in &always {
            for op in [
                "ForAllValues:StringEquals",
                "ForAllValues:StringLike",
                "StringEqualsIfExists",
                "StringLikeIfExists",
                "ForAllValues:StringLikeIfExists",
                "ForAnyValue:StringEqualsIfExists",
            ] {
                let st = allow_if(star(), json!("kms:Decrypt"), json!({ op: { *key: value } }));
                assert!(!fires(RuleId::Public, &st), "{op} {key}");
            }
        }
        for op in [
            "ArnEqualsIfExists",
            "ArnLikeIfExists",
            "ForAllValues:ArnLike",
        ] {
            let st = allow_if(
                star(),
                json!("kms:Decrypt"),
                json!({ op: { "aws:PrincipalArn": role("App") } }),
            );
            assert!(!fires(RuleId::Public, &st), "{op}");
        }
        for op in [
            "ForAllValues:StringEquals",
            "StringEqualsIfExists",
            "ForAllValues:StringEqualsIfExists",
        ] {
            let st = allow_if(
                aws(ROOT),
                json!("kms:*"),
                json!({ op: { "aws:PrincipalType": "Account" } }),
            );
            assert!(!fires(RuleId::Delegation, &st), "{op}");
        }
    }

    /// "For any other key the condition is vacuously true when the key is absent, so it does not
    /// restrict anything."
    #[test]
    fn for_all_values_and_if_exists_do_not_restrict_other_keys() {
        let others = [
            ("aws:SourceAccount", ACCOUNT.to_string()),
            ("aws:SourceOwner", ACCOUNT.to_string()),
            (
                "aws:SourceArn",
                format!("arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/t"),
            ),
            ("aws:PrincipalOrgID", ORG.to_string()),
            ("aws:SourceOrgID", ORG.to_string()),
            ("aws:PrincipalOrgPaths", format!("{ORG}/*")),
            ("aws:SourceOrgPaths", format!("{ORG}/*")),
        ];
        for (key, value) in &others {
            for op in [
                "ForAllValues:StringEquals",
                "ForAllValues:StringLike",
                "StringEqualsIfExists",
                "StringLikeIfExists",
                "ArnLikeIfExists",
            ] {
                let st = allow_if(star(), json!("kms:Decrypt"), json!({ op: { *key: value } }));
                assert!(fires(RuleId::Public, &st), "{op} {key}");
            }
            // control: the plain operator restricts
            let st = allow_if(
                star(),
                json!("kms:Decrypt"),
                json!({ "StringLike": { *key: value } }),
            );
            assert!(!fires(RuleId::Public, &st), "StringLike {key}");
        }
        let grant = |c: Value| allow_if(aws(role("App")), json!("kms:CreateGrant"), c);
        table(
            RuleId::GrantEscalation,
            &[
                (
                    "StringEqualsIfExists ViaService",
                    grant(
                        json!({"StringEqualsIfExists":{"kms:ViaService":"rds.us-east-1.amazonaws.com"}}),
                    ),
                    true,
                ),
                (
                    "ForAllValues:StringEquals ViaService",
                    grant(
                        json!({"ForAllValues:StringEquals":{"kms:ViaService":"rds.us-east-1.amazonaws.com"}}),
                    ),
                    true,
                ),
                (
                    "BoolIfExists GrantIsForAWSResource",
                    grant(json!({"BoolIfExists":{"kms:GrantIsForAWSResource":"true"}})),
                    true,
                ),
                (
                    "ForAllValues:StringEquals GrantIsForAWSResource",
                    grant(
                        json!({"ForAllValues:StringEquals":{"kms:GrantIsForAWSResource":"true"}}),
                    ),
                    true,
                ),
            ],
        );
    }

    /// "Deny statements never produce a finding and never suppress one."
    #[test]
    fn deny_never_produces_a_finding() {
        let denies = [
            deny(star(), json!("kms:*")),
            deny(aws("*"), json!("*")),
            deny(aws(ROOT), json!("kms:*")),
            deny(aws(OTHER_ROOT), json!("kms:*")),
            deny(
                aws(role("Admin")),
                json!(["kms:PutKeyPolicy", "kms:Decrypt", "kms:CreateGrant"]),
            ),
            deny(json!({"Service": "logs.amazonaws.com"}), json!("kms:*")),
            renamed(
                deny(aws(role("Admin")), json!("kms:*")),
                "Principal",
                "NotPrincipal",
            ),
            renamed(deny(star(), json!("kms:Decrypt")), "Action", "NotAction"),
            renamed(
                renamed(
                    deny(aws(role("Admin")), json!("kms:Decrypt")),
                    "Principal",
                    "NotPrincipal",
                ),
                "Action",
                "NotAction",
            ),
        ];
        let mut statements = vec![allow(aws(role("Admin")), json!("kms:PutKeyPolicy"))];
        statements.extend(denies.iter().cloned());
        assert_eq!(found(&doc(&statements)), vec![]);
        // a Deny on the only administrator does not produce KMS-NO-ADMIN, nor does it count as one
        let text = doc(&[
            allow(aws(role("Admin")), json!("kms:PutKeyPolicy")),
            deny(aws(role("Admin")), json!("kms:PutKeyPolicy")),
        ]);
        assert_eq!(found(&text), vec![]);
        assert_eq!(found(&doc(&denies)), vec![(RuleId::NoAdmin, None)]);
    }

    /// "Deny statements never produce a finding and never suppress one."
    #[test]
    fn deny_never_suppresses_a_finding() {
        let guard_all = deny(star(), json!("kms:*"));
        let guard_org = allow_if(
            star(),
            json!("kms:*"),
            json!({"StringNotEquals":{"aws:PrincipalOrgID":ORG}}),
        );
        let guard_org = with(guard_org, "Effect", json!("Deny"));
        let guard_type = with(
            allow_if(
                aws(ROOT),
                json!("kms:*"),
                json!({"StringNotEquals":{"aws:PrincipalType":"Account"}}),
            ),
            "Effect",
            json!("Deny"),
        );
        let guard_grant = with(
            allow_if(
                star(),
                json!("kms:CreateGrant"),
                json!({"Bool":{"kms:GrantIsForAWSResource":"false"}}),
            ),
            "Effect",
            json!("Deny"),
        );
        let allows = [
            allow(star(), json!("kms:Decrypt")),          // 0 public
            allow(aws(ROOT), json!("kms:*")),             // 1 delegation
            allow(aws(OTHER_ROOT), json!("kms:Decrypt")), // 2 cross-account
            allow(aws(role("App")), json!(["kms:CreateGrant", "kms:Decrypt"])), // 3 grant
            renamed(
                allow(aws(role("X")), json!("kms:Decrypt")),
                "Principal",
                "NotPrincipal",
            ), // 4
        ];
        let baseline = found(&doc(&allows));
        let mut statements = allows.to_vec();
        statements.extend([guard_all, guard_org, guard_type, guard_grant]);
        assert_eq!(found(&doc(&statements)), baseline);
        for (rule, index) in [
            (RuleId::Public, 0),
            (RuleId::Delegation, 1),
            (RuleId::CrossAccount, 2),
            (RuleId::GrantEscalation, 3),
            (RuleId::NotPrincipal, 4),
        ] {
            assert!(
                baseline.contains(&(rule, Some(index))),
                "{rule}: {baseline:?}"
            );
        }
    }

    /// "`key_manager = AWS`: AWS managed key policies are written by AWS and cannot be edited, so
    /// only KMS-INVALID may be reported."
    #[test]
    fn aws_managed_keys_report_only_invalid() {
        let bad = doc(&[
            noisy(),
            allow(aws(ROOT), json!("kms:*")),
            allow(star(), json!("kms:*")),
            allow(aws(OTHER_ROOT), json!("kms:*")),
            allow(
                aws(role("App")),
                json!(["kms:CreateGrant", "kms:ScheduleKeyDeletion", "kms:Decrypt"]),
            ),
        ]);
        assert!(rule_set(&eval(&bad)).len() >= 8);
        assert_eq!(eval_as(&bad, KeyManager::Aws, &[]), vec![]);
        assert_eq!(eval_as(&bad, KeyManager::Aws, &[OTHER]), vec![]);
        for invalid in [
            "{}",
            "nope",
            r#"{"Statement":[{"Effect":"Allow","Principal":"arn:aws:iam::111122223333:root","Action":"kms:*","Resource":"*"}]}"#,
        ] {
            let got = eval_as(invalid, KeyManager::Aws, &[]);
            assert_eq!(rule_set(&got), set(&[RuleId::Invalid]), "{invalid}");
            assert_eq!(got.len(), 1);
        }
    }

    /// "ADMIN = kms:PutKeyPolicy, ScheduleKeyDeletion, … RotateKeyOnDemand": each one, with a
    /// cryptographic operation, makes an administrator who can use the key.
    #[test]
    fn admin_set_has_exactly_the_listed_actions() {
        for action in ADMIN_ACTIONS {
            let st = allow(aws(role("R")), json!([action, "kms:Decrypt"]));
            assert!(fires(RuleId::AdminCanUse, &st), "{action}");
        }
    }

    /// "Grant, alias and read-only operations are not ADMIN: Create/List/Revoke/RetireGrant,
    /// *Alias, Describe*, Get*, List*."
    #[test]
    fn grant_alias_and_read_only_operations_are_not_admin() {
        let not_admin = json!([
            "kms:CreateGrant",
            "kms:ListGrants",
            "kms:RevokeGrant",
            "kms:RetireGrant",
            "kms:ListRetirableGrants",
            "kms:CreateAlias",
            "kms:DeleteAlias",
            "kms:UpdateAlias",
            "kms:ListAliases",
            "kms:*Alias",
            "kms:Describe*",
            "kms:DescribeKey",
            "kms:Get*",
            "kms:GetKeyPolicy",
            "kms:GetKeyRotationStatus",
            "kms:GetPublicKey",
            "kms:List*",
            "kms:ListKeyPolicies",
            "kms:ListResourceTags",
            "kms:*Grant*",
            "kms:Decrypt",
            "kms:Encrypt",
            "kms:GenerateDataKey*"
        ]);
        assert!(!fires(
            RuleId::AdminCanUse,
            &allow(aws(role("R")), not_admin)
        ));
    }

    /// "CRYPTO = kms:Encrypt, Decrypt, … DeriveSharedSecret. GetPublicKey and GenerateRandom are
    /// not in the set."
    #[test]
    fn crypto_set_has_exactly_the_listed_actions() {
        for action in CRYPTO_ACTIONS {
            let st = allow(aws(role("R")), json!(["kms:PutKeyPolicy", action]));
            assert!(fires(RuleId::AdminCanUse, &st), "{action}");
        }
        let st = allow(
            aws(role("R")),
            json!(
                ADMIN_ACTIONS
                    .iter()
                    .copied()
                    .chain([
                        "kms:GetPublicKey",
                        "kms:GenerateRandom",
                        "kms:DescribeKey",
                        "kms:Get*"
                    ])
                    .collect::<Vec<_>>()
            ),
        );
        assert!(!fires(RuleId::AdminCanUse, &st));
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-DELEGATION

mod s2_delegation {
    use super::*;

    fn root_if(condition: Value) -> Value {
        allow_if(aws(ROOT), json!("kms:*"), condition)
    }

    /// "An Allow statement whose `Principal` contains the account principal (in either form,
    /// including inside an array mixed with other principals) delegates through IAM, for any
    /// action."
    #[test]
    fn account_principal_in_either_form_delegates_for_any_action() {
        let not_action = json!({"Effect":"Allow","Principal":aws(ROOT),"NotAction":"kms:Decrypt","Resource":"*"});
        table(
            RuleId::Delegation,
            &[
                ("root kms:*", allow(aws(ROOT), json!("kms:*")), true),
                ("bare id", allow(aws(ACCOUNT), json!("kms:*")), true),
                (
                    "root DescribeKey",
                    allow(aws(ROOT), json!("kms:DescribeKey")),
                    true,
                ),
                (
                    "bare id Decrypt",
                    allow(aws(ACCOUNT), json!(["kms:Decrypt"])),
                    true,
                ),
                (
                    "root Get*",
                    allow(aws(ROOT), json!(["kms:Get*", "kms:List*"])),
                    true,
                ),
                ("root NotAction", not_action, true),
                (
                    "mixed array",
                    allow(aws(json!([role("A"), ROOT])), json!("kms:Encrypt")),
                    true,
                ),
                (
                    "mixed with external",
                    allow(aws(json!([OTHER_ROOT, ACCOUNT])), json!("kms:Encrypt")),
                    true,
                ),
                (
                    "with a service",
                    allow(
                        json!({"AWS": ROOT, "Service": "logs.amazonaws.com"}),
                        json!("kms:Encrypt"),
                    ),
                    true,
                ),
                (
                    "other partition",
                    allow(
                        aws(format!("arn:aws-us-gov:iam::{ACCOUNT}:root")),
                        json!("kms:*"),
                    ),
                    true,
                ),
                (
                    "role named root",
                    allow(
                        aws(format!("arn:aws:iam::{ACCOUNT}:role/root")),
                        json!("kms:*"),
                    ),
                    false,
                ),
                (
                    "NotPrincipal root",
                    renamed(
                        allow(aws(ROOT), json!("kms:*")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    false,
                ),
                ("Deny root", deny(aws(ROOT), json!("kms:*")), false),
                (
                    "no Resource",
                    without(allow(aws(ROOT), json!("kms:*")), "Resource"),
                    false,
                ),
            ],
        );
        // reported at the statement's index, with its Sid
        let text = doc(&[
            allow(aws(role("Admin")), json!("kms:*")),
            with(
                allow(aws(ROOT), json!("kms:*")),
                "Sid",
                json!("Enable IAM User Permissions"),
            ),
        ]);
        let got = eval(&text);
        let d: Vec<_> = got
            .iter()
            .filter(|f| f.rule_id == RuleId::Delegation)
            .collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].statement_index, Some(1));
        assert_eq!(d[0].sid.as_deref(), Some("Enable IAM User Permissions"));
    }

    /// "StringEquals: exact match. StringEqualsIgnoreCase. StringLike: glob, case-sensitive.
    /// StringNotEquals, StringNotEqualsIgnoreCase, StringNotLike: keep the types that do not match.
    /// Null, Bool and other operators leave the set unchanged. ForAnyValue:, ForAllValues: and
    /// IfExists do not change the result, because the key is always present."
    #[test]
    fn principal_type_operators_narrow_the_three_iam_identity_types() {
        let pt = |op: &str, v: Value| root_if(json!({ op: { "aws:PrincipalType": v } }));
        table(
            RuleId::Delegation,
            &[
                (
                    "StringEquals Account",
                    pt("StringEquals", json!("Account")),
                    false,
                ),
                ("StringEquals User", pt("StringEquals", json!("User")), true),
                (
                    "StringEquals FederatedUser",
                    pt("StringEquals", json!("FederatedUser")),
                    true,
                ),
                (
                    "StringEquals Account,User",
                    pt("StringEquals", json!(["Account", "User"])),
                    true,
                ),
                (
                    "StringEqualsIgnoreCase ACCOUNT",
                    pt("StringEqualsIgnoreCase", json!("ACCOUNT")),
                    false,
                ),
                (
                    "StringEqualsIgnoreCase assumedrole",
                    pt("StringEqualsIgnoreCase", json!("assumedrole")),
                    true,
                ),
                ("StringLike Acc*", pt("StringLike", json!("Acc*")), false),
                (
                    "StringLike Acc?unt",
                    pt("StringLike", json!("Acc?unt")),
                    false,
                ),
                ("StringLike A*", pt("StringLike", json!("A*")), true),
                ("StringLike *User", pt("StringLike", json!("*User")), true),
                (
                    "StringLike acc* (case-sensitive: nothing)",
                    pt("StringLike", json!("acc*")),
                    false,
                ),
                (
                    "StringNotEquals the three",
                    pt(
                        "StringNotEquals",
                        json!(["User", "AssumedRole", "FederatedUser"]),
                    ),
                    false,
                ),
                (
                    "StringNotEquals Account",
                    pt("StringNotEquals", json!("Account")),
                    true,
                ),
                (
                    "StringNotEquals two of three",
                    pt("StringNotEquals", json!(["User", "AssumedRole"])),
                    true,
                ),
                (
                    "StringNotEqualsIgnoreCase the three",
                    pt(
                        "StringNotEqualsIgnoreCase",
                        json!(["USER", "assumedrole", "FederatedUSER"]),
                    ),
                    false,
                ),
                (
                    "StringNotLike *User",
                    pt("StringNotLike", json!("*User")),
                    true,
                ),
                (
                    "StringNotLike *User,Assumed*",
                    pt("StringNotLike", json!(["*User", "Assumed*"])),
                    false,
                ),
                ("Null false", pt("Null", json!("false")), true),
                ("Null true", pt("Null", json!("true")), true),
                ("Bool", pt("Bool", json!("Account")), true),
                ("NumericEquals", pt("NumericEquals", json!("0")), true),
                (
                    "DateEquals",
                    pt("DateEquals", json!("2020-01-01T00:00:00Z")),
                    true,
                ),
                (
                    "ArnEquals (other operator)",
                    pt("ArnEquals", json!("Account")),
                    true,
                ),
                (
                    "ArnLike (other operator)",
                    pt("ArnLike", json!("Acc*")),
                    true,
                ),
                (
                    "ForAnyValue:StringEquals Account",
                    pt("ForAnyValue:StringEquals", json!("Account")),
                    false,
                ),
                (
                    "ForAllValues:StringEquals Account",
                    pt("ForAllValues:StringEquals", json!("Account")),
                    false,
                ),
                (
                    "StringEqualsIfExists Account",
                    pt("StringEqualsIfExists", json!("Account")),
                    false,
                ),
                (
                    "StringLikeIfExists Acc*",
                    pt("StringLikeIfExists", json!("Acc*")),
                    false,
                ),
                (
                    "ForAllValues:StringNotEqualsIfExists the three",
                    pt(
                        "ForAllValues:StringNotEqualsIfExists",
                        json!(["User", "AssumedRole", "FederatedUser"]),
                    ),
                    false,
                ),
                (
                    "StringNotEqualsIfExists Account",
                    pt("StringNotEqualsIfExists", json!("Account")),
                    true,
                ),
                (
                    "ForAnyValue:StringLike A*",
                    pt("ForAnyValue:StringLike", json!("A*")),
                    true,
                ),
                // every entry applies: A* minus AssumedRole leaves only Account
                (
                    "StringLike A* and StringNotEquals AssumedRole",
                    root_if(
                        json!({"StringLike":{"aws:PrincipalType":"A*"},"StringNotEquals":{"aws:PrincipalType":"AssumedRole"}}),
                    ),
                    false,
                ),
            ],
        );
    }

    /// "A positive string or ARN operator on `aws:PrincipalArn` whose values are all exactly the
    /// account-principal ARN also empties the set, since only the root user has that PrincipalArn."
    #[test]
    fn principal_arn_pinned_to_the_root_arn_empties_the_set() {
        let pa = |op: &str, v: Value| root_if(json!({ op: { "aws:PrincipalArn": v } }));
        table(
            RuleId::Delegation,
            &[
                ("StringEquals root", pa("StringEquals", json!(ROOT)), false),
                (
                    "StringEqualsIgnoreCase root",
                    pa("StringEqualsIgnoreCase", json!(ROOT)),
                    false,
                ),
                ("StringLike root", pa("StringLike", json!(ROOT)), false),
                ("ArnEquals root", pa("ArnEquals", json!(ROOT)), false),
                ("ArnLike root", pa("ArnLike", json!(ROOT)), false),
                ("ArnEquals [root]", pa("ArnEquals", json!([ROOT])), false),
                (
                    "ForAnyValue:ArnEquals root",
                    pa("ForAnyValue:ArnEquals", json!(ROOT)),
                    false,
                ),
                (
                    "ArnEqualsIfExists root",
                    pa("ArnEqualsIfExists", json!(ROOT)),
                    false,
                ),
                (
                    "key upper case",
                    root_if(json!({"ArnEquals":{"AWS:PRINCIPALARN": ROOT}})),
                    false,
                ),
                ("a role", pa("ArnEquals", json!(role("Admin"))), true),
                (
                    "root and a role",
                    pa("StringEquals", json!([ROOT, role("Admin")])),
                    true,
                ),
                (
                    "account wildcard",
                    pa("ArnLike", json!(format!("arn:aws:iam::{ACCOUNT}:*"))),
                    true,
                ),
                (
                    "bare account id is not the ARN",
                    pa("StringEquals", json!(ACCOUNT)),
                    true,
                ),
                ("negated", pa("ArnNotEquals", json!(ROOT)), true),
                ("StringNotEquals", pa("StringNotEquals", json!(ROOT)), true),
                ("Null", pa("Null", json!("false")), true),
            ],
        );
    }

    /// "These fix delegation: StringEquals aws:PrincipalType Account (the Knowledge Center fix), the
    /// value ["Account"], the key spelled AWS:PRINCIPALTYPE, StringEqualsIgnoreCase "account",
    /// StringLike "Acc*", ForAnyValue:, ForAllValues:, StringEqualsIfExists, and
    /// aws:PrincipalArn == own root ARN."
    #[test]
    fn decisions_that_fix_delegation() {
        for condition in [
            json!({"StringEquals":{"aws:PrincipalType":"Account"}}),
            json!({"StringEquals":{"aws:PrincipalType":["Account"]}}),
            json!({"StringEquals":{"AWS:PRINCIPALTYPE":"Account"}}),
            json!({"StringEqualsIgnoreCase":{"aws:PrincipalType":"account"}}),
            json!({"StringLike":{"aws:PrincipalType":"Acc*"}}),
            json!({"ForAnyValue:StringEquals":{"aws:PrincipalType":"Account"}}),
            json!({"ForAllValues:StringEquals":{"aws:PrincipalType":"Account"}}),
            json!({"StringEqualsIfExists":{"aws:PrincipalType":"Account"}}),
            json!({"StringEquals":{"aws:PrincipalArn":ROOT}}),
            json!({"ArnEquals":{"aws:PrincipalArn":ROOT}}),
        ] {
            let text = doc(&[root_if(condition.clone())]);
            // the fixed root statement alone leaves only the lockout risk
            assert_eq!(found(&text), vec![(RuleId::NoAdmin, None)], "{condition}");
        }
    }

    /// "These still delegate: no condition; StringLike "A*" (admits AssumedRole); "*";
    /// ["Account","AssumedRole"]; StringNotEquals "Account"; Null false; conditions on
    /// aws:PrincipalArn (a role), kms:CallerAccount, kms:ViaService or aws:MultiFactorAuthPresent."
    #[test]
    fn decisions_that_still_delegate() {
        let mut cases = vec![allow(aws(ROOT), json!("kms:*"))];
        for condition in [
            json!({"StringLike":{"aws:PrincipalType":"A*"}}),
            json!({"StringLike":{"aws:PrincipalType":"*"}}),
            json!({"StringEquals":{"aws:PrincipalType":["Account","AssumedRole"]}}),
            json!({"StringNotEquals":{"aws:PrincipalType":"Account"}}),
            json!({"Null":{"aws:PrincipalType":"false"}}),
            json!({"ArnEquals":{"aws:PrincipalArn":role("KMSAdmin")}}),
            json!({"ArnLike":{"aws:PrincipalArn":role("KMS*")}}),
            json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
            json!({"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}),
            json!({"Bool":{"aws:MultiFactorAuthPresent":"true"}}),
            json!({"StringEquals":{"kms:CallerAccount":ACCOUNT,"kms:ViaService":"ec2.us-east-1.amazonaws.com"},"Bool":{"aws:MultiFactorAuthPresent":true}}),
        ] {
            cases.push(root_if(condition));
        }
        for st in cases {
            let got = eval(&doc(std::slice::from_ref(&st)));
            assert_eq!(hits(&got, RuleId::Delegation), vec![Some(0)], "{st}");
        }
    }

    /// "`StringEquals "account"` in lower case never matches anything, because values are
    /// case-sensitive. The statement is dead: it is not delegation."
    #[test]
    fn lowercase_account_is_a_dead_statement_not_delegation() {
        let text = doc(&[root_if(
            json!({"StringEquals":{"aws:PrincipalType":"account"}}),
        )]);
        assert_eq!(found(&text), vec![(RuleId::NoAdmin, None)]);
    }

    /// Ambiguity resolved: an empty value list pins nothing, so it does not fix delegation (as an
    /// empty list does not restrict KMS-PUBLIC nor mitigate KMS-GRANT-ESCALATION).
    #[test]
    fn empty_value_list_does_not_fix_delegation() {
        for op in ["StringEquals", "StringLike", "StringNotEquals"] {
            let st = root_if(json!({ op: { "aws:PrincipalType": [] } }));
            assert!(fires(RuleId::Delegation, &st), "{op}");
        }
    }

    /// "A Sid named "…PreventPermissionDelegation" with no condition still delegates."
    #[test]
    fn prevent_permission_delegation_sid_without_condition_still_delegates() {
        let st = with(
            allow(aws(ROOT), json!("kms:*")),
            "Sid",
            json!("EnableRootAccessAndPreventPermissionDelegation"),
        );
        assert_eq!(hits(&eval(&doc(&[st])), RuleId::Delegation), vec![Some(0)]);
    }

    /// "A fixed root statement does not cancel a second, unconditioned root Allow."
    #[test]
    fn fixed_root_statement_does_not_cancel_a_second_unconditioned_one() {
        let text = doc(&[
            with(
                root_if(json!({"StringEquals":{"aws:PrincipalType":"Account"}})),
                "Sid",
                json!("EnableRootAccessAndPreventPermissionDelegation"),
            ),
            allow(aws(ACCOUNT), json!("kms:Decrypt")),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::Delegation), vec![Some(1)]);
    }

    /// "The condition on the wrong statement does not fix anything."
    #[test]
    fn condition_on_the_wrong_statement_does_not_fix() {
        let pin = json!({"StringEquals":{"aws:PrincipalType":"Account"}});
        let text = doc(&[
            allow(aws(ROOT), json!("kms:*")),
            allow_if(aws(role("Admin")), json!("kms:Put*"), pin.clone()),
            with(
                allow_if(aws(ROOT), json!("kms:*"), pin.clone()),
                "Effect",
                json!("Deny"),
            ),
            without(allow_if(aws(ROOT), json!("kms:*"), pin), "Resource"),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::Delegation), vec![Some(0)]);
    }

    /// "External account roots are KMS-CROSS-ACCOUNT, not delegation."
    #[test]
    fn external_account_roots_are_cross_account_not_delegation() {
        for p in [OTHER_ROOT, OTHER] {
            let text = doc(&[allow(aws(p), json!("kms:Decrypt"))]);
            assert_eq!(
                found(&text),
                vec![(RuleId::CrossAccount, Some(0)), (RuleId::NoAdmin, None)],
                "{p}"
            );
        }
    }

    /// "A `Principal "*"` pinned to the own account is not delegation: it is not the account
    /// principal."
    #[test]
    fn star_pinned_to_own_account_is_not_delegation() {
        for condition in [
            json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
            json!({"StringEquals":{"aws:PrincipalAccount":ACCOUNT}}),
            json!({"ArnEquals":{"aws:PrincipalArn":ROOT}}),
        ] {
            let text = doc(&[allow_if(star(), json!("kms:Decrypt"), condition.clone())]);
            assert_eq!(found(&text), vec![(RuleId::NoAdmin, None)], "{condition}");
        }
    }

    /// "The only exception is a statement whose conditions admit none of the IAM identity types":
    /// admitting only one of them is enough to delegate.
    #[test]
    fn one_admitted_iam_identity_type_is_enough() {
        for t in ["User", "AssumedRole", "FederatedUser"] {
            let st = root_if(json!({"StringEquals":{"aws:PrincipalType":["Account", t]}}));
            assert!(fires(RuleId::Delegation, &st), "{t}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-PUBLIC

mod s2_public {
    use super::*;

    fn star_if(condition: Value) -> Value {
        allow_if(star(), json!(["kms:Encrypt", "kms:Decrypt"]), condition)
    }

    /// "Fires for an Allow statement with a public principal, or any Allow + `NotPrincipal`, when
    /// the statement has no restricting condition entry."
    #[test]
    fn fires_for_public_principal_or_notprincipal_without_restricting_entry() {
        let np = |p: Value| renamed(allow(p, json!("kms:Decrypt")), "Principal", "NotPrincipal");
        table(
            RuleId::Public,
            &[
                ("*", allow(star(), json!("kms:Decrypt")), true),
                ("AWS *", allow(aws("*"), json!("kms:DescribeKey")), true),
                ("NotPrincipal role", np(aws(role("A"))), true),
                ("NotPrincipal own root", np(aws(ROOT)), true),
                (
                    "NotPrincipal service",
                    np(json!({"Service": "logs.amazonaws.com"})),
                    true,
                ),
                ("NotPrincipal *", np(star()), true),
                (
                    "NotPrincipal + unrelated condition",
                    with(
                        np(aws(role("A"))),
                        "Condition",
                        json!({"Bool":{"aws:SecureTransport":"true"}}),
                    ),
                    true,
                ),
                (
                    "NotPrincipal restricted",
                    with(
                        np(aws(role("A"))),
                        "Condition",
                        json!({"StringEquals":{"aws:PrincipalAccount":ACCOUNT}}),
                    ),
                    false,
                ),
                (
                    "own role",
                    allow(aws(role("A")), json!("kms:Decrypt")),
                    false,
                ),
                ("Deny *", deny(star(), json!("kms:*")), false),
                (
                    "Deny NotPrincipal",
                    renamed(
                        deny(aws(role("A")), json!("kms:*")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    false,
                ),
                (
                    "no Resource",
                    without(allow(star(), json!("kms:*")), "Resource"),
                    false,
                ),
            ],
        );
        // reported at the statement's index
        let text = doc(&[
            allow(aws(role("A")), json!("kms:Decrypt")),
            allow(star(), json!("kms:Decrypt")),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::Public), vec![Some(1)]);
    }

    /// "Service principals are never public (confused-deputy analysis is out of scope)."
    #[test]
    fn service_principals_are_never_public() {
        for p in [
            json!({"Service": "logs.amazonaws.com"}),
            json!({"Service": ["logs.us-east-1.amazonaws.com", "cloudtrail.amazonaws.com"]}),
            json!({"Service": "*"}),
        ] {
            let got = eval(&doc(&[allow(p.clone(), json!("kms:*"))]));
            assert!(hits(&got, RuleId::Public).is_empty(), "{p}");
            assert!(hits(&got, RuleId::CrossAccount).is_empty(), "{p}");
        }
    }

    /// "1. A positive operator: StringEquals, StringEqualsIgnoreCase, StringLike, ArnEquals or
    /// ArnLike, optionally with a `ForAnyValue:` prefix."
    #[test]
    fn restricting_entry_needs_a_positive_operator() {
        let acct = |op: &str| star_if(json!({ op: { "aws:PrincipalAccount": ACCOUNT } }));
        let arn = |op: &str| star_if(json!({ op: { "aws:PrincipalArn": role("App") } }));
        let mut cases = vec![];
        for op in ["StringEquals", "StringEqualsIgnoreCase", "StringLike"] {
            cases.push((op.to_string(), acct(op), false));
            cases.push((
                format!("ForAnyValue:{op}"),
                acct(&format!("ForAnyValue:{op}")),
                false,
            ));
        }
        for op in ["ArnEquals", "ArnLike", "StringEquals", "StringLike"] {
            cases.push((format!("{op} arn"), arn(op), false));
            cases.push((
                format!("ForAnyValue:{op} arn"),
                arn(&format!("ForAnyValue:{op}")),
                false,
            ));
        }
        for op in [
            "StringNotEquals",
            "StringNotEqualsIgnoreCase",
            "StringNotLike",
            "ForAnyValue:StringNotEquals",
            "Null",
            "Bool",
            "NumericEquals",
            "DateEquals",
            "BinaryEquals",
            "IpAddress",
            "NotIpAddress",
        ] {
            cases.push((op.to_string(), acct(op), true));
        }
        for op in ["ArnNotEquals", "ArnNotLike", "StringNotLike"] {
            cases.push((format!("{op} arn"), arn(op), true));
        }
        let cases: Vec<(&str, Value, bool)> = cases
            .iter()
            .map(|(l, v, b)| (l.as_str(), v.clone(), *b))
            .collect();
        table(RuleId::Public, &cases);
    }

    /// "2. One of these keys: aws:PrincipalAccount, kms:CallerAccount, aws:SourceAccount,
    /// aws:SourceOwner, aws:PrincipalArn, aws:SourceArn, aws:PrincipalOrgID, aws:SourceOrgID,
    /// aws:PrincipalOrgPaths, aws:SourceOrgPaths, aws:userid."
    #[test]
    fn restricting_entry_needs_one_of_the_listed_keys() {
        let restricting: [(&str, String); 11] = [
            ("aws:PrincipalAccount", ACCOUNT.into()),
            ("kms:CallerAccount", ACCOUNT.into()),
            ("aws:SourceAccount", ACCOUNT.into()),
            ("aws:SourceOwner", ACCOUNT.into()),
            ("aws:PrincipalArn", role("App")),
            (
                "aws:SourceArn",
                format!("arn:aws:sns:us-east-1:{ACCOUNT}:topic"),
            ),
            ("aws:PrincipalOrgID", ORG.into()),
            ("aws:SourceOrgID", ORG.into()),
            ("aws:PrincipalOrgPaths", format!("{ORG}/r-ab12/*")),
            ("aws:SourceOrgPaths", format!("{ORG}/r-ab12/*")),
            ("aws:userid", "AIDAEXAMPLEUSERID".into()),
        ];
        for (key, value) in &restricting {
            let op = if key.ends_with("OrgPaths") {
                "ForAnyValue:StringLike"
            } else {
                "StringLike"
            };
            let st = star_if(json!({ op: { *key: value } }));
            assert!(!fires(RuleId::Public, &st), "{key}");
        }
        for (key, value) in [
            ("kms:ViaService", "ec2.us-east-1.amazonaws.com".to_string()),
            ("aws:ResourceAccount", ACCOUNT.to_string()),
            ("aws:ResourceOrgID", ORG.to_string()),
            ("aws:SourceIdentity", "alice".to_string()),
            ("aws:username", "alice".to_string()),
            ("aws:PrincipalTag/team", "security".to_string()),
            (
                "aws:CalledViaFirst",
                "cloudformation.amazonaws.com".to_string(),
            ),
            ("kms:GranteePrincipal", role("App")),
            ("kms:EncryptionContext:aws:ebs:id", "vol-1".to_string()),
            ("aws:CallerAccount", ACCOUNT.to_string()),
        ] {
            let st = star_if(json!({ "StringEquals": { key: value } }));
            assert!(fires(RuleId::Public, &st), "{key}");
        }
    }

    /// "3. Every value is fixed: account keys: exactly 12 digits"
    #[test]
    fn account_key_values_must_be_twelve_digits() {
        let acct = |v: Value| star_if(json!({"StringLike": {"aws:PrincipalAccount": v}}));
        table(
            RuleId::Public,
            &[
                ("own", acct(json!(ACCOUNT)), false),
                ("several", acct(json!([ACCOUNT, OTHER])), false),
                ("number", acct(json!(111122223333u64)), false),
                ("11 digits", acct(json!("11112222333")), true),
                ("13 digits", acct(json!("1111222233334")), true),
                ("*", acct(json!("*")), true),
                ("prefix*", acct(json!("1111222233*")), true),
                ("??", acct(json!("1111222233??")), true),
                ("letters", acct(json!("11112222333a")), true),
                ("one * in the list", acct(json!([ACCOUNT, "*"])), true),
                ("empty list", acct(json!([])), true),
                ("empty string", acct(json!("")), true),
            ],
        );
    }

    /// "ARN keys: the account field is 12 digits (wildcards elsewhere are fine)"
    #[test]
    fn arn_key_values_need_a_twelve_digit_account_field() {
        let arn = |key: &str, v: Value| star_if(json!({"ArnLike": { key: v }}));
        table(
            RuleId::Public,
            &[
                (
                    "role/*",
                    arn(
                        "aws:PrincipalArn",
                        json!(format!("arn:aws:iam::{ACCOUNT}:role/*")),
                    ),
                    false,
                ),
                (
                    "*:*:region",
                    arn(
                        "aws:SourceArn",
                        json!(format!("arn:aws:logs:*:{ACCOUNT}:log-group:*")),
                    ),
                    false,
                ),
                (
                    "partition *",
                    arn(
                        "aws:SourceArn",
                        json!(format!("arn:*:sqs:us-east-1:{ACCOUNT}:q")),
                    ),
                    false,
                ),
                (
                    "account *",
                    arn("aws:PrincipalArn", json!("arn:aws:iam::*:role/Admin")),
                    true,
                ),
                (
                    "account partial",
                    arn(
                        "aws:PrincipalArn",
                        json!("arn:aws:iam::1111222233*:role/Admin"),
                    ),
                    true,
                ),
                (
                    "no account (S3)",
                    arn("aws:SourceArn", json!("arn:aws:s3:::bucket")),
                    true,
                ),
                ("*", arn("aws:SourceArn", json!("*")), true),
                ("arn:*", arn("aws:SourceArn", json!("arn:*")), true),
                ("not an ARN", arn("aws:PrincipalArn", json!(ACCOUNT)), true),
                (
                    "one bad in list",
                    arn(
                        "aws:PrincipalArn",
                        json!([role("A"), "arn:aws:iam::*:role/A"]),
                    ),
                    true,
                ),
            ],
        );
    }

    /// "OrgID: `o-[a-z0-9]{10,32}`"
    #[test]
    fn org_id_values_must_match_the_org_id_pattern() {
        let org = |v: &str| star_if(json!({"StringEquals": {"aws:PrincipalOrgID": v}}));
        table(
            RuleId::Public,
            &[
                ("10 chars", org("o-a1b2c3d4e5"), false),
                ("32 chars", org(&format!("o-{}", "a1".repeat(16))), false),
                ("9 chars", org("o-a1b2c3d4e"), true),
                ("33 chars", org(&format!("o-{}a", "a1".repeat(16))), true),
                ("upper case", org("o-A1B2C3D4E5"), true),
                ("o-*", org("o-*"), true),
                ("*", org("*"), true),
                ("no prefix", org("a1b2c3d4e5ff"), true),
                ("short", org("o-short"), true),
            ],
        );
    }

    /// "OrgPaths: starts with a concrete `o-…/`"
    #[test]
    fn org_paths_values_must_start_with_a_concrete_org() {
        let paths =
            |v: &str| star_if(json!({"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": v}}));
        table(
            RuleId::Public,
            &[
                ("org/*", paths(&format!("{ORG}/*")), false),
                (
                    "org/root/ou/",
                    paths(&format!("{ORG}/r-ab12/ou-ab12-11111111/")),
                    false,
                ),
                ("o-*/", paths("o-*/r-ab12/*"), true),
                ("*", paths("*"), true),
                ("no slash", paths(ORG), true),
                ("root only", paths("r-ab12/*"), true),
            ],
        );
    }

    /// "userid: at most one wildcard, and only at the end" (ambiguity resolved: the wildcard may
    /// stand only for the session name after a concrete unique ID, `ID:*`; `AROA*` would admit
    /// every role of every account).
    #[test]
    fn userid_values_allow_only_a_trailing_session_wildcard() {
        let uid = |v: &str| star_if(json!({"StringLike": {"aws:userid": v}}));
        table(
            RuleId::Public,
            &[
                ("user id", uid("AIDAEXAMPLEUSERID"), false),
                ("role sessions", uid("AROAEXAMPLEROLEID:*"), false),
                ("root user id", uid(ACCOUNT), false),
                ("federated users", uid(&format!("{ACCOUNT}:*")), false),
                ("*", uid("*"), true),
                ("two wildcards", uid("AROA*:*"), true),
                ("not at the end", uid("*:session"), true),
                ("inside", uid("AROA?XAMPLE:session"), true),
                ("prefix of every role", uid("AROA*"), true),
                ("empty id", uid(":*"), true),
            ],
        );
    }

    /// "Condition operators are ANDed, so one restricting entry is enough, even if another entry
    /// is wildcarded."
    #[test]
    fn one_restricting_entry_is_enough() {
        table(
            RuleId::Public,
            &[
                (
                    "org * + account",
                    star_if(
                        json!({"StringEquals":{"aws:PrincipalAccount":ACCOUNT},"StringLike":{"aws:PrincipalOrgID":"*"}}),
                    ),
                    false,
                ),
                (
                    "ViaService + caller",
                    star_if(
                        json!({"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com","kms:CallerAccount":ACCOUNT}}),
                    ),
                    false,
                ),
                (
                    "SourceIp + org",
                    star_if(
                        json!({"IpAddress":{"aws:SourceIp":"0.0.0.0/0"},"StringEquals":{"aws:PrincipalOrgID":ORG}}),
                    ),
                    false,
                ),
                (
                    "two wildcarded",
                    star_if(
                        json!({"StringEquals":{"aws:PrincipalAccount":"*"},"StringLike":{"aws:PrincipalOrgID":"*"}}),
                    ),
                    true,
                ),
            ],
        );
    }

    /// "`aws:SourceAccount`/`aws:SourceArn` restrict even with Principal `*`"
    #[test]
    fn source_account_and_source_arn_restrict_star() {
        for p in [star(), aws("*")] {
            for c in [
                json!({"StringEquals":{"aws:SourceAccount":ACCOUNT}}),
                json!({"ArnLike":{"aws:SourceArn":format!("arn:aws:cloudtrail:*:{ACCOUNT}:trail/*")}}),
            ] {
                let st = allow_if(p.clone(), json!("kms:GenerateDataKey*"), c.clone());
                assert!(!fires(RuleId::Public, &st), "{p} {c}");
            }
        }
    }

    /// "`kms:ViaService` alone is public: principals of any account can use the key through that
    /// service."
    #[test]
    fn via_service_alone_is_public() {
        for op in ["StringEquals", "StringLike", "ForAnyValue:StringEquals"] {
            let st = star_if(
                json!({ op: {"kms:ViaService": ["ec2.us-east-1.amazonaws.com", "rds.us-east-1.amazonaws.com"]} }),
            );
            assert!(fires(RuleId::Public, &st), "{op}");
        }
    }

    /// "Negated operators, `Null`, `Bool`, date, numeric and `aws:SecureTransport` do not
    /// restrict."
    #[test]
    fn negated_null_bool_date_numeric_and_secure_transport_do_not_restrict() {
        for c in [
            json!({"StringNotEquals":{"aws:PrincipalAccount":OTHER}}),
            json!({"StringNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/Evil"}}),
            json!({"ArnNotEquals":{"aws:SourceArn":format!("arn:aws:sns:us-east-1:{OTHER}:t")}}),
            json!({"StringNotEqualsIgnoreCase":{"aws:PrincipalOrgID":"o-zzzzzzzzzz"}}),
            json!({"Null":{"aws:PrincipalOrgID":"false"}}),
            json!({"Null":{"kms:CallerAccount":"false"}}),
            json!({"Bool":{"aws:SecureTransport":"true"}}),
            json!({"Bool":{"aws:MultiFactorAuthPresent":true}}),
            json!({"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}),
            json!({"DateGreaterThan":{"aws:EpochTime":"0"}}),
            json!({"NumericLessThan":{"aws:MultiFactorAuthAge":"300"}}),
            json!({"NumericEquals":{"aws:PrincipalAccount":ACCOUNT}}),
        ] {
            assert!(fires(RuleId::Public, &star_if(c.clone())), "{c}");
        }
    }

    /// "Network conditions do not restrict: `aws:SourceIp`, `aws:SourceVpc`, `aws:SourceVpce`.
    /// They do not pin the caller's account."
    #[test]
    fn network_conditions_do_not_restrict() {
        for c in [
            json!({"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}),
            json!({"IpAddress":{"aws:SourceIp":"203.0.113.7/32"}}),
            json!({"StringEquals":{"aws:SourceVpc":"vpc-1234567890abcdef0"}}),
            json!({"StringEquals":{"aws:SourceVpce":"vpce-1234567890abcdef0"}}),
            json!({"StringEquals":{"aws:SourceVpc":"vpc-1","aws:SourceVpce":"vpce-1"},"IpAddress":{"aws:VpcSourceIp":"10.0.0.1/32"}}),
        ] {
            let got = eval(&doc(&[star_if(c.clone())]));
            assert_eq!(hits(&got, RuleId::Public), vec![Some(0)], "{c}");
        }
    }

    /// "`StringEqualsIfExists aws:PrincipalOrgID` is public, because non-org principals lack the
    /// key."
    #[test]
    fn string_equals_if_exists_principal_org_id_is_public() {
        let st = star_if(json!({"StringEqualsIfExists":{"aws:PrincipalOrgID":ORG}}));
        let got = eval(&doc(&[st]));
        assert_eq!(hits(&got, RuleId::Public), vec![Some(0)]);
        assert!(hits(&got, RuleId::CrossAccount).is_empty());
    }

    /// "A `*` inside a value list, `o-*`, or `arn:aws:iam::*:role/...` is public."
    #[test]
    fn wildcards_in_values_are_public() {
        for c in [
            json!({"StringEquals":{"aws:PrincipalAccount":[ACCOUNT, "*"]}}),
            json!({"StringEquals":{"kms:CallerAccount":[ACCOUNT, OTHER, "*"]}}),
            json!({"StringLike":{"aws:PrincipalOrgID":"o-*"}}),
            json!({"StringLike":{"aws:PrincipalOrgID":[ORG, "o-*"]}}),
            json!({"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/Admin"}}),
            json!({"StringLike":{"aws:PrincipalArn":[role("A"), "arn:aws:iam::*:role/*"]}}),
        ] {
            let got = eval(&doc(&[star_if(c.clone())]));
            assert_eq!(hits(&got, RuleId::Public), vec![Some(0)], "{c}");
            assert!(hits(&got, RuleId::CrossAccount).is_empty(), "{c}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-CROSS-ACCOUNT

mod s2_cross_account {
    use super::*;

    fn star_if(condition: Value) -> Value {
        allow_if(star(), json!("kms:Decrypt"), condition)
    }

    /// "(a) An `AWS` principal entry (IAM or STS ARN, or bare ID) whose account differs from
    /// `account_id` and is not wildcarded: `arn:aws:iam::444455556666:root`, a role or user there,
    /// `arn:aws:sts::444455556666:assumed-role/...`, or bare "444455556666"."
    #[test]
    fn a_external_aws_principal_entries() {
        let p = |v: Value| allow(aws(v), json!("kms:Decrypt"));
        table(
            RuleId::CrossAccount,
            &[
                ("root", p(json!(OTHER_ROOT)), true),
                (
                    "role",
                    p(json!(format!("arn:aws:iam::{OTHER}:role/App"))),
                    true,
                ),
                (
                    "user",
                    p(json!(format!("arn:aws:iam::{OTHER}:user/bob"))),
                    true,
                ),
                (
                    "assumed role",
                    p(json!(format!(
                        "arn:aws:sts::{OTHER}:assumed-role/App/session"
                    ))),
                    true,
                ),
                ("bare id", p(json!(OTHER)), true),
                (
                    "other partition",
                    p(json!(format!("arn:aws-cn:iam::{OTHER}:root"))),
                    true,
                ),
                (
                    "mixed with own",
                    p(json!([role("A"), ROOT, OTHER_ROOT])),
                    true,
                ),
                ("own role", p(json!(role("A"))), false),
                ("own root", p(json!(ROOT)), false),
                ("own bare id", p(json!(ACCOUNT)), false),
                ("wildcarded account", p(json!("arn:aws:iam::*:root")), false),
                (
                    "service",
                    allow(
                        json!({"Service": "logs.us-east-1.amazonaws.com"}),
                        json!("kms:Encrypt"),
                    ),
                    false,
                ),
                ("Deny", deny(aws(OTHER_ROOT), json!("kms:*")), false),
                (
                    "no Resource",
                    without(p(json!(OTHER_ROOT)), "Resource"),
                    false,
                ),
                (
                    "NotPrincipal external (public instead)",
                    renamed(p(json!(OTHER_ROOT)), "Principal", "NotPrincipal"),
                    false,
                ),
            ],
        );
        let text = doc(&[
            allow(aws(role("A")), json!("kms:Decrypt")),
            allow(aws(OTHER_ROOT), json!("kms:Decrypt")),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::CrossAccount), vec![Some(1)]);
    }

    /// "a trusted account never raises KMS-CROSS-ACCOUNT"
    #[test]
    fn trusted_accounts_never_raise_cross_account() {
        let text = doc(&[
            allow(
                aws(json!([
                    OTHER_ROOT,
                    format!("arn:aws:iam::{OTHER}:role/App")
                ])),
                json!("kms:Decrypt"),
            ),
            allow(aws(OTHER), json!("kms:Decrypt")),
            star_if(json!({"StringEquals":{"aws:PrincipalAccount":[ACCOUNT, OTHER]}})),
            star_if(json!({"ArnLike":{"aws:PrincipalArn":format!("arn:aws:iam::{OTHER}:role/*")}})),
        ]);
        let count = |trusted: &[&str]| {
            hits(
                &eval_as(&text, KeyManager::Customer, trusted),
                RuleId::CrossAccount,
            )
        };
        assert_eq!(count(&[]), vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(count(&[OTHER]), vec![]);
        assert_eq!(count(&[THIRD, OTHER]), vec![]);
        // only the untrusted one is reported
        let text = doc(&[allow(
            aws(json!([OTHER_ROOT, format!("arn:aws:iam::{THIRD}:role/X")])),
            json!("kms:Decrypt"),
        )]);
        let got: Vec<_> = eval_as(&text, KeyManager::Customer, &[OTHER])
            .into_iter()
            .filter(|f| f.rule_id == RuleId::CrossAccount)
            .collect();
        assert_eq!(got.len(), 1);
        assert!(
            got[0].message.contains(THIRD) && !got[0].message.contains(OTHER),
            "{}",
            got[0].message
        );
    }

    /// "(b) A public principal or NotPrincipal that KMS-PUBLIC saw as restricted, where every
    /// restricting entry admits a foreign account. An account key admits a foreign account if some
    /// value is not `account_id`; an ARN key if some ARN account is not `account_id`. OrgID and
    /// OrgPaths always admit one. userid never does."
    #[test]
    fn b_restricted_public_statements_that_admit_a_foreign_account() {
        table(
            RuleId::CrossAccount,
            &[
                (
                    "PrincipalAccount own",
                    star_if(json!({"StringEquals":{"aws:PrincipalAccount":ACCOUNT}})),
                    false,
                ),
                (
                    "PrincipalAccount own+other",
                    star_if(json!({"StringEquals":{"aws:PrincipalAccount":[ACCOUNT, OTHER]}})),
                    true,
                ),
                (
                    "CallerAccount other",
                    star_if(json!({"StringEquals":{"kms:CallerAccount":OTHER}})),
                    true,
                ),
                (
                    "SourceAccount other",
                    star_if(json!({"StringEquals":{"aws:SourceAccount":OTHER}})),
                    true,
                ),
                (
                    "SourceOwner own",
                    star_if(json!({"StringEquals":{"aws:SourceOwner":ACCOUNT}})),
                    false,
                ),
                (
                    "PrincipalArn other",
                    star_if(
                        json!({"ArnLike":{"aws:PrincipalArn":format!("arn:aws:iam::{OTHER}:role/*")}}),
                    ),
                    true,
                ),
                (
                    "PrincipalArn own",
                    star_if(json!({"ArnLike":{"aws:PrincipalArn":role("*")}})),
                    false,
                ),
                (
                    "SourceArn own+other",
                    star_if(
                        json!({"ArnEquals":{"aws:SourceArn":[format!("arn:aws:sns:us-east-1:{ACCOUNT}:t"), format!("arn:aws:sns:us-east-1:{OTHER}:t")]}}),
                    ),
                    true,
                ),
                (
                    "PrincipalOrgID",
                    star_if(json!({"StringEquals":{"aws:PrincipalOrgID":ORG}})),
                    true,
                ),
                (
                    "SourceOrgID",
                    star_if(json!({"StringEquals":{"aws:SourceOrgID":ORG}})),
                    true,
                ),
                (
                    "PrincipalOrgPaths",
                    star_if(
                        json!({"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":format!("{ORG}/*")}}),
                    ),
                    true,
                ),
                (
                    "SourceOrgPaths",
                    star_if(
                        json!({"ForAnyValue:StringLike":{"aws:SourceOrgPaths":format!("{ORG}/*")}}),
                    ),
                    true,
                ),
                (
                    "userid",
                    star_if(json!({"StringLike":{"aws:userid":"AROAEXAMPLEROLEID:*"}})),
                    false,
                ),
                // every restricting entry must admit one: ANDed with an own-account pin, it does not
                (
                    "org AND own caller",
                    star_if(
                        json!({"StringEquals":{"aws:PrincipalOrgID":ORG,"kms:CallerAccount":ACCOUNT}}),
                    ),
                    false,
                ),
                (
                    "org AND userid",
                    star_if(
                        json!({"StringEquals":{"aws:PrincipalOrgID":ORG},"StringLike":{"aws:userid":"AIDAEXAMPLE"}}),
                    ),
                    false,
                ),
                (
                    "other caller AND own arn",
                    star_if(
                        json!({"StringEquals":{"kms:CallerAccount":OTHER},"ArnLike":{"aws:PrincipalArn":role("*")}}),
                    ),
                    false,
                ),
                (
                    "org AND other caller",
                    star_if(
                        json!({"StringEquals":{"aws:PrincipalOrgID":ORG,"kms:CallerAccount":OTHER}}),
                    ),
                    true,
                ),
                // a non-restricting (wildcarded) entry is not considered
                (
                    "other caller AND org *",
                    star_if(
                        json!({"StringEquals":{"kms:CallerAccount":OTHER},"StringLike":{"aws:PrincipalOrgID":"*"}}),
                    ),
                    true,
                ),
                (
                    "AWS * restricted",
                    allow_if(
                        aws("*"),
                        json!("kms:Decrypt"),
                        json!({"StringEquals":{"aws:PrincipalAccount":OTHER}}),
                    ),
                    true,
                ),
                (
                    "wildcard ARN restricted",
                    allow_if(
                        aws("arn:aws:iam::*:root"),
                        json!("kms:Decrypt"),
                        json!({"StringEquals":{"aws:PrincipalAccount":OTHER}}),
                    ),
                    true,
                ),
                (
                    "NotPrincipal restricted to other",
                    json!({"Effect":"Allow","NotPrincipal":aws(role("A")),"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":OTHER}}}),
                    true,
                ),
                (
                    "NotPrincipal restricted to own",
                    json!({"Effect":"Allow","NotPrincipal":aws(role("A")),"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":ACCOUNT}}}),
                    false,
                ),
            ],
        );
        // trusted accounts: an account value that is trusted is not foreign, an org still is
        let text = doc(&[
            star_if(json!({"StringEquals":{"aws:PrincipalAccount":[ACCOUNT, OTHER]}})),
            star_if(json!({"StringEquals":{"aws:PrincipalOrgID":ORG}})),
        ]);
        assert_eq!(
            hits(
                &eval_as(&text, KeyManager::Customer, &[OTHER]),
                RuleId::CrossAccount
            ),
            vec![Some(1)]
        );
    }

    /// "It never fires together with KMS-PUBLIC for the same statement"
    #[test]
    fn never_together_with_public_for_one_statement() {
        let statements = vec![
            allow(star(), json!("kms:Decrypt")),
            allow(aws(json!(["*", OTHER_ROOT])), json!("kms:Decrypt")),
            allow(
                aws(json!(["arn:aws:iam::*:root", OTHER])),
                json!("kms:Decrypt"),
            ),
            json!({"Effect":"Allow","NotPrincipal":aws(OTHER_ROOT),"Action":"kms:Decrypt","Resource":"*"}),
            star_if(json!({"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}})),
            star_if(json!({"StringEquals":{"aws:PrincipalAccount":[OTHER, "*"]}})),
            star_if(json!({"StringEqualsIfExists":{"aws:PrincipalOrgID":ORG}})),
            star_if(json!({"StringEquals":{"aws:PrincipalOrgID":ORG}})),
            star_if(json!({"StringEquals":{"aws:PrincipalAccount":OTHER}})),
            allow(aws(OTHER_ROOT), json!("kms:Decrypt")),
        ];
        let got = eval(&doc(&statements));
        let public = hits(&got, RuleId::Public);
        let cross = hits(&got, RuleId::CrossAccount);
        assert_eq!(
            public,
            vec![
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                Some(5),
                Some(6)
            ]
        );
        assert_eq!(cross, vec![Some(7), Some(8), Some(9)]);
    }

    /// "… and never for service principals."
    #[test]
    fn never_for_service_principals() {
        for c in [
            json!({}),
            json!({"StringEquals":{"aws:SourceAccount":OTHER}}),
            json!({"ArnLike":{"aws:SourceArn":format!("arn:aws:logs:us-east-1:{OTHER}:*")}}),
        ] {
            let st = allow_if(
                json!({"Service": "logs.us-east-1.amazonaws.com"}),
                json!("kms:Encrypt"),
                c.clone(),
            );
            assert_eq!(found(&doc(&[st])), vec![(RuleId::NoAdmin, None)], "{c}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-NO-ADMIN

mod s2_no_admin {
    use super::*;

    /// "Fires when no Allow statement grants `kms:PutKeyPolicy` to an eligible administrator.
    /// Grants through `kms:PutKeyPolicy`, `kms:Put*`, `kms:*`, `*` or a NotAction that does not
    /// exclude it all count."
    #[test]
    fn grant_forms_that_count() {
        let admin = aws(role("KMSAdmin"));
        let not_action = |n: Value| json!({"Effect":"Allow","Principal":admin.clone(),"NotAction":n,"Resource":"*"});
        table(
            RuleId::NoAdmin,
            &[
                (
                    "PutKeyPolicy",
                    allow(admin.clone(), json!("kms:PutKeyPolicy")),
                    false,
                ),
                ("Put*", allow(admin.clone(), json!("kms:Put*")), false),
                ("kms:*", allow(admin.clone(), json!("kms:*")), false),
                ("*", allow(admin.clone(), json!("*")), false),
                (
                    "KC admin statement",
                    allow(admin.clone(), json!(KC_ADMIN_ACTIONS)),
                    false,
                ),
                ("NotAction Decrypt", not_action(json!("kms:Decrypt")), false),
                ("NotAction Put*", not_action(json!("kms:Put*")), true),
                (
                    "NotAction PutKeyPolicy",
                    not_action(json!(["kms:Decrypt", "kms:PutKeyPolicy"])),
                    true,
                ),
                (
                    "every other ADMIN action",
                    allow(admin.clone(), json!(ADMIN_ACTIONS[1..])),
                    true,
                ),
                (
                    "Describe*",
                    allow(admin.clone(), json!("kms:Describe*")),
                    true,
                ),
                ("Deny", deny(admin.clone(), json!("kms:*")), true),
                (
                    "no Resource",
                    without(allow(admin.clone(), json!("kms:*")), "Resource"),
                    true,
                ),
            ],
        );
    }

    /// "An eligible administrator is an `AWS` principal entry matching
    /// `arn:<partition>:iam::<account_id>:user/…`, `…:role/…` or
    /// `arn:<partition>:sts::<account_id>:assumed-role/…`."
    #[test]
    fn eligible_administrators() {
        let put = |p: Value| allow(p, json!("kms:PutKeyPolicy"));
        table(
            RuleId::NoAdmin,
            &[
                ("role", put(aws(role("KMSAdmin"))), false),
                (
                    "role with path",
                    put(aws(format!("arn:aws:iam::{ACCOUNT}:role/admins/KMSAdmin"))),
                    false,
                ),
                (
                    "user",
                    put(aws(format!("arn:aws:iam::{ACCOUNT}:user/alice"))),
                    false,
                ),
                (
                    "assumed role",
                    put(aws(format!(
                        "arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice"
                    ))),
                    false,
                ),
                (
                    "aws-cn role",
                    put(aws(format!("arn:aws-cn:iam::{ACCOUNT}:role/Admin"))),
                    false,
                ),
                (
                    "aws-us-gov user",
                    put(aws(format!("arn:aws-us-gov:iam::{ACCOUNT}:user/bob"))),
                    false,
                ),
                ("in an array", put(aws(json!([ROOT, role("Admin")]))), false),
                (
                    "next to a service",
                    put(json!({"Service":"logs.amazonaws.com","AWS":role("Admin")})),
                    false,
                ),
                (
                    "group",
                    put(aws(format!("arn:aws:iam::{ACCOUNT}:group/Admins"))),
                    true,
                ),
                (
                    "federated user",
                    put(aws(format!("arn:aws:sts::{ACCOUNT}:federated-user/bob"))),
                    true,
                ),
            ],
        );
    }

    /// "These do not count: the account principal (fixed or not …), `*`, NotPrincipal, other
    /// accounts, and service principals."
    #[test]
    fn principals_that_do_not_count() {
        table(
            RuleId::NoAdmin,
            &[
                ("root", allow(aws(ROOT), json!("kms:*")), true),
                ("bare id", allow(aws(ACCOUNT), json!("kms:*")), true),
                (
                    "fixed root",
                    allow_if(
                        aws(ROOT),
                        json!("kms:*"),
                        json!({"StringEquals":{"aws:PrincipalType":"Account"}}),
                    ),
                    true,
                ),
                ("*", allow(star(), json!("kms:*")), true),
                ("AWS *", allow(aws("*"), json!("kms:PutKeyPolicy")), true),
                (
                    "* pinned to own account",
                    allow_if(
                        star(),
                        json!("kms:*"),
                        json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
                    ),
                    true,
                ),
                (
                    "NotPrincipal",
                    renamed(
                        allow(aws(role("X")), json!("kms:*")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    true,
                ),
                (
                    "other account role",
                    allow(
                        aws(format!("arn:aws:iam::{OTHER}:role/KMSAdmin")),
                        json!("kms:*"),
                    ),
                    true,
                ),
                (
                    "other account root",
                    allow(aws(OTHER_ROOT), json!("kms:*")),
                    true,
                ),
                (
                    "service",
                    allow(json!({"Service":"ec2.amazonaws.com"}), json!("kms:*")),
                    true,
                ),
            ],
        );
    }

    /// "Conditions on the admin statement are ignored. For example, an MFA condition still leaves
    /// an administrator."
    #[test]
    fn conditions_on_the_admin_statement_are_ignored() {
        for c in [
            json!({"Bool":{"aws:MultiFactorAuthPresent":"true"}}),
            json!({"StringEquals":{"aws:PrincipalType":"Account"}}),
            json!({"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}),
        ] {
            let st = allow_if(aws(role("KMSAdmin")), json!(KC_ADMIN_ACTIONS), c.clone());
            assert!(!fires(RuleId::NoAdmin, &st), "{c}");
        }
    }

    /// "So the default key policy fires both DELEGATION and NO-ADMIN." (and nothing else)
    #[test]
    fn default_key_policy_fires_exactly_delegation_and_no_admin() {
        let text = json!({
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [{
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": ROOT},
                "Action": "kms:*",
                "Resource": "*"
            }]
        })
        .to_string();
        assert_eq!(
            found(&text),
            vec![(RuleId::Delegation, Some(0)), (RuleId::NoAdmin, None)]
        );
        let no_admin: Vec<_> = eval(&text)
            .into_iter()
            .filter(|f| f.rule_id == RuleId::NoAdmin)
            .collect();
        assert_eq!(no_admin[0].statement_index, None);
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-ADMIN-CAN-USE

mod s2_admin_can_use {
    use super::*;

    /// "Fires: KMSAdminRole listed in both the admin and the key-user statements; `kms:*` or `*`
    /// to a role; PutKeyPolicy + Decrypt; ScheduleKeyDeletion + GenerateDataKey; admin +
    /// Sign/Verify or `kms:ReEncrypt*`; an external root or a service principal with `kms:*`."
    #[test]
    fn examples_that_fire() {
        let admin = aws(role("KMSAdminRole"));
        let both = doc(&[
            allow(admin.clone(), json!(KC_ADMIN_ACTIONS)),
            allow(
                aws(json!([role("App"), role("KMSAdminRole")])),
                json!(USER_ACTIONS),
            ),
        ]);
        let got = eval(&both);
        let f: Vec<_> = got
            .iter()
            .filter(|f| f.rule_id == RuleId::AdminCanUse)
            .collect();
        assert_eq!(f.len(), 1, "{got:#?}");
        assert!(
            f[0].message.contains(&role("KMSAdminRole")),
            "{}",
            f[0].message
        );
        table(
            RuleId::AdminCanUse,
            &[
                (
                    "kms:* to a role",
                    allow(admin.clone(), json!("kms:*")),
                    true,
                ),
                ("* to a role", allow(admin.clone(), json!("*")), true),
                (
                    "PutKeyPolicy + Decrypt",
                    allow(admin.clone(), json!(["kms:PutKeyPolicy", "kms:Decrypt"])),
                    true,
                ),
                (
                    "ScheduleKeyDeletion + GenerateDataKey",
                    allow(
                        admin.clone(),
                        json!(["kms:ScheduleKeyDeletion", "kms:GenerateDataKey"]),
                    ),
                    true,
                ),
                (
                    "admin + Sign/Verify",
                    allow(
                        admin.clone(),
                        json!(["kms:DisableKey", "kms:Sign", "kms:Verify"]),
                    ),
                    true,
                ),
                (
                    "admin + ReEncrypt*",
                    allow(admin.clone(), json!(["kms:EnableKey", "kms:ReEncrypt*"])),
                    true,
                ),
                (
                    "external root kms:*",
                    allow(aws(OTHER_ROOT), json!("kms:*")),
                    true,
                ),
                (
                    "service kms:*",
                    allow(json!({"Service":"logs.amazonaws.com"}), json!("kms:*")),
                    true,
                ),
                (
                    "user",
                    allow(
                        aws(format!("arn:aws:iam::{ACCOUNT}:user/alice")),
                        json!(["kms:TagResource", "kms:Encrypt"]),
                    ),
                    true,
                ),
            ],
        );
    }

    /// "Does not fire: the KC admin statement (its Get*/Describe* reach GetPublicKey, which is not
    /// CRYPTO); a key user with ListGrants/RevokeGrant."
    #[test]
    fn examples_that_do_not_fire() {
        table(
            RuleId::AdminCanUse,
            &[
                (
                    "KC admin statement",
                    allow(aws(role("KMSAdminRole")), json!(KC_ADMIN_ACTIONS)),
                    false,
                ),
                (
                    "key user with grants",
                    allow(
                        aws(role("App")),
                        json!([
                            "kms:Encrypt",
                            "kms:Decrypt",
                            "kms:ListGrants",
                            "kms:RevokeGrant",
                            "kms:CreateGrant"
                        ]),
                    ),
                    false,
                ),
            ],
        );
        let split = doc(&[
            allow(aws(role("KMSAdminRole")), json!(KC_ADMIN_ACTIONS)),
            allow(aws(role("App")), json!(USER_ACTIONS)),
        ]);
        assert!(hits(&eval(&split), RuleId::AdminCanUse).is_empty());
    }

    /// "Gather, per literal principal string, the union of the ADMIN and CRYPTO actions granted over
    /// all Allow statements. Principal strings come from `Principal.AWS` and `Principal.Service`.
    /// A bare account ID is normalised to its root ARN."
    #[test]
    fn union_per_principal_string_across_statements() {
        let cases = [
            (
                "role across statements",
                doc(&[
                    allow(aws(role("R")), json!("kms:PutKeyPolicy")),
                    allow(aws(role("R")), json!("kms:Decrypt")),
                ]),
                1,
            ),
            (
                "service across statements",
                doc(&[
                    allow(
                        json!({"Service":"logs.amazonaws.com"}),
                        json!("kms:EnableKey"),
                    ),
                    allow(
                        json!({"Service":["logs.amazonaws.com"]}),
                        json!("kms:Encrypt"),
                    ),
                ]),
                1,
            ),
            (
                "bare id and root ARN of one account",
                doc(&[
                    allow(aws(OTHER), json!("kms:PutKeyPolicy")),
                    allow(aws(OTHER_ROOT), json!("kms:Decrypt")),
                ]),
                1,
            ),
            (
                "two principals, one finding each",
                doc(&[allow(aws(json!([role("A"), role("B")])), json!("kms:*"))]),
                2,
            ),
            (
                "different strings do not merge",
                doc(&[
                    allow(aws(role("R")), json!("kms:PutKeyPolicy")),
                    allow(
                        aws(format!("arn:aws:iam::{ACCOUNT}:user/R")),
                        json!("kms:Decrypt"),
                    ),
                ]),
                0,
            ),
            (
                "Deny does not add",
                doc(&[
                    allow(aws(role("R")), json!("kms:PutKeyPolicy")),
                    deny(aws(role("R")), json!("kms:Decrypt")),
                ]),
                0,
            ),
            (
                "no Resource does not add",
                doc(&[
                    allow(aws(role("R")), json!("kms:PutKeyPolicy")),
                    without(allow(aws(role("R")), json!("kms:Decrypt")), "Resource"),
                ]),
                0,
            ),
        ];
        for (label, text, want) in cases {
            assert_eq!(
                hits(&eval(&text), RuleId::AdminCanUse).len(),
                want,
                "{label}"
            );
        }
    }

    /// "The account principal and `*` are excluded, and NotPrincipal statements are skipped.
    /// Conditions are ignored."
    #[test]
    fn exclusions_and_conditions() {
        table(
            RuleId::AdminCanUse,
            &[
                ("root", allow(aws(ROOT), json!("kms:*")), false),
                ("bare own id", allow(aws(ACCOUNT), json!("kms:*")), false),
                ("*", allow(star(), json!("kms:*")), false),
                ("AWS *", allow(aws("*"), json!("kms:*")), false),
                (
                    "* pinned",
                    allow_if(
                        star(),
                        json!("kms:*"),
                        json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
                    ),
                    false,
                ),
                (
                    "NotPrincipal",
                    renamed(
                        allow(aws(role("X")), json!("kms:*")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    false,
                ),
                (
                    "MFA condition ignored",
                    allow_if(
                        aws(role("R")),
                        json!("kms:*"),
                        json!({"Bool":{"aws:MultiFactorAuthPresent":"true"}}),
                    ),
                    true,
                ),
                (
                    "PrincipalType condition ignored",
                    allow_if(
                        aws(role("R")),
                        json!("kms:*"),
                        json!({"StringEquals":{"aws:PrincipalType":"Account"}}),
                    ),
                    true,
                ),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-WILDCARD-ACTION

mod s2_wildcard_action {
    use super::*;

    /// "Fires for an Allow statement whose literal `Action` list contains `*` or `kms:*`, matched
    /// case-insensitively (`KMS:*` included), when its `Principal` holds anything other than the
    /// account principal, or it uses NotPrincipal."
    #[test]
    fn fires_for_literal_wildcards_to_anything_but_the_account_principal() {
        let app = aws(role("App"));
        table(
            RuleId::WildcardAction,
            &[
                ("kms:*", allow(app.clone(), json!("kms:*")), true),
                ("*", allow(app.clone(), json!("*")), true),
                (
                    "KMS:*",
                    allow(app.clone(), json!(["kms:Decrypt", "KMS:*"])),
                    true,
                ),
                ("Kms:*", allow(app.clone(), json!(["Kms:*"])), true),
                ("* principal", allow(star(), json!("kms:*")), true),
                (
                    "* pinned to own account",
                    allow_if(
                        star(),
                        json!("kms:*"),
                        json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
                    ),
                    true,
                ),
                (
                    "root + role",
                    allow(aws(json!([ROOT, role("App")])), json!("kms:*")),
                    true,
                ),
                (
                    "root + service",
                    allow(
                        json!({"AWS": ROOT, "Service": "logs.amazonaws.com"}),
                        json!("*"),
                    ),
                    true,
                ),
                (
                    "service",
                    allow(json!({"Service":"logs.amazonaws.com"}), json!("kms:*")),
                    true,
                ),
                (
                    "external root",
                    allow(aws(OTHER_ROOT), json!("kms:*")),
                    true,
                ),
                (
                    "role named root",
                    allow(
                        aws(format!("arn:aws:iam::{ACCOUNT}:role/root")),
                        json!("kms:*"),
                    ),
                    true,
                ),
                (
                    "NotPrincipal",
                    renamed(
                        allow(app.clone(), json!("kms:*")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    true,
                ),
                (
                    "NotPrincipal root",
                    renamed(
                        allow(aws(ROOT), json!("kms:*")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    true,
                ),
                ("Deny", deny(app.clone(), json!("kms:*")), false),
                (
                    "no Resource",
                    without(allow(app, json!("kms:*")), "Resource"),
                    false,
                ),
            ],
        );
    }

    /// "Does not fire for: `kms:*` on the account principal alone, fixed or not; partial wildcards
    /// such as `kms:Describe*` or `kms:Create*`; NotAction statements."
    #[test]
    fn does_not_fire() {
        let app = aws(role("App"));
        let not_action = |n: Value| json!({"Effect":"Allow","Principal":app.clone(),"NotAction":n,"Resource":"*"});
        table(
            RuleId::WildcardAction,
            &[
                ("root", allow(aws(ROOT), json!("kms:*")), false),
                ("bare id", allow(aws(ACCOUNT), json!("*")), false),
                (
                    "root and bare id",
                    allow(aws(json!([ROOT, ACCOUNT])), json!("kms:*")),
                    false,
                ),
                (
                    "aws-cn root",
                    allow(
                        aws(format!("arn:aws-cn:iam::{ACCOUNT}:root")),
                        json!("kms:*"),
                    ),
                    false,
                ),
                (
                    "fixed root",
                    allow_if(
                        aws(ROOT),
                        json!("kms:*"),
                        json!({"StringEquals":{"aws:PrincipalType":"Account"}}),
                    ),
                    false,
                ),
                (
                    "kms:Describe*",
                    allow(app.clone(), json!("kms:Describe*")),
                    false,
                ),
                (
                    "kms:Create*",
                    allow(app.clone(), json!("kms:Create*")),
                    false,
                ),
                ("kms:*Key*", allow(app.clone(), json!("kms:*Key*")), false),
                (
                    "KC admin",
                    allow(app.clone(), json!(KC_ADMIN_ACTIONS)),
                    false,
                ),
                ("NotAction kms:*", not_action(json!("kms:*")), false),
                ("NotAction *", not_action(json!(["*"])), false),
                ("NotAction Decrypt", not_action(json!("kms:Decrypt")), false),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-NOT-PRINCIPAL / KMS-NOT-ACTION

mod s2_not_principal_not_action {
    use super::*;

    /// "Any Allow statement that uses `NotPrincipal` … Deny + NotPrincipal … never fire."
    #[test]
    fn not_principal() {
        let st = |effect: &str, np: Value| json!({"Effect":effect,"NotPrincipal":np,"Action":"kms:Decrypt","Resource":"*"});
        table(
            RuleId::NotPrincipal,
            &[
                ("Allow role", st("Allow", aws(role("X"))), true),
                ("Allow *", st("Allow", star()), true),
                (
                    "Allow restricted",
                    with(
                        st("Allow", aws(role("X"))),
                        "Condition",
                        json!({"StringEquals":{"aws:PrincipalAccount":ACCOUNT}}),
                    ),
                    true,
                ),
                (
                    "Allow NotResource",
                    renamed(st("Allow", aws(role("X"))), "Resource", "NotResource"),
                    true,
                ),
                ("Deny", st("Deny", aws(role("X"))), false),
                ("Deny *", st("Deny", star()), false),
                (
                    "no Resource",
                    without(st("Allow", aws(role("X"))), "Resource"),
                    false,
                ),
                (
                    "Principal",
                    allow(aws(role("X")), json!("kms:Decrypt")),
                    false,
                ),
            ],
        );
        let text = doc(&[
            allow(aws(role("A")), json!("kms:Decrypt")),
            st("Allow", aws(role("X"))),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::NotPrincipal), vec![Some(1)]);
    }

    /// "Any Allow statement that uses … `NotAction`. … Deny + NotAction … never fire."
    #[test]
    fn not_action() {
        let st = |effect: &str, p: Value| json!({"Effect":effect,"Principal":p,"NotAction":"kms:ScheduleKeyDeletion","Resource":"*"});
        table(
            RuleId::NotAction,
            &[
                ("Allow role", st("Allow", aws(role("X"))), true),
                ("Allow root", st("Allow", aws(ROOT)), true),
                (
                    "Allow conditioned",
                    with(
                        st("Allow", aws(role("X"))),
                        "Condition",
                        json!({"Bool":{"aws:MultiFactorAuthPresent":"true"}}),
                    ),
                    true,
                ),
                (
                    "Allow NotResource",
                    renamed(st("Allow", aws(role("X"))), "Resource", "NotResource"),
                    true,
                ),
                ("Deny", st("Deny", star()), false),
                (
                    "Deny NotPrincipal",
                    renamed(st("Deny", aws(role("X"))), "Principal", "NotPrincipal"),
                    false,
                ),
                (
                    "no Resource",
                    without(st("Allow", aws(role("X"))), "Resource"),
                    false,
                ),
                ("Action", allow(aws(role("X")), json!("kms:Decrypt")), false),
            ],
        );
        let text = doc(&[
            allow(aws(role("A")), json!("kms:Decrypt")),
            st("Allow", aws(role("X"))),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::NotAction), vec![Some(1)]);
    }
}

// ---------------------------------------------------------------------------------------------
// §2 KMS-GRANT-ESCALATION

mod s2_grant_escalation {
    use super::*;

    fn grant_if(condition: Value) -> Value {
        allow_if(
            aws(role("App")),
            json!(["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]),
            condition,
        )
    }

    /// "Fires for an Allow statement that grants `kms:CreateGrant` (exactly, `kms:Create*`,
    /// `kms:*`, `*` or NotAction, any principal)"
    #[test]
    fn create_grant_forms_and_any_principal() {
        let app = aws(role("App"));
        let not_action = |p: Value, n: Value| json!({"Effect":"Allow","Principal":p,"NotAction":n,"Resource":"*"});
        table(
            RuleId::GrantEscalation,
            &[
                ("exact", allow(app.clone(), json!("kms:CreateGrant")), true),
                ("Create*", allow(app.clone(), json!("kms:Create*")), true),
                (
                    "NotAction Put*",
                    not_action(app.clone(), json!("kms:Put*")),
                    true,
                ),
                ("root", allow(aws(ROOT), json!("kms:CreateGrant")), true),
                (
                    "fixed root",
                    allow_if(
                        aws(ROOT),
                        json!("kms:CreateGrant"),
                        json!({"StringEquals":{"aws:PrincipalType":"Account"}}),
                    ),
                    true,
                ),
                (
                    "* pinned to own account",
                    allow_if(
                        star(),
                        json!("kms:CreateGrant"),
                        json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
                    ),
                    true,
                ),
                (
                    "external",
                    allow(aws(OTHER_ROOT), json!("kms:CreateGrant")),
                    true,
                ),
                (
                    "service",
                    allow(
                        json!({"Service":"logs.amazonaws.com"}),
                        json!("kms:CreateGrant"),
                    ),
                    true,
                ),
                (
                    "NotPrincipal",
                    renamed(
                        allow(app.clone(), json!("kms:CreateGrant")),
                        "Principal",
                        "NotPrincipal",
                    ),
                    true,
                ),
                (
                    "ListGrants only",
                    allow(
                        app.clone(),
                        json!(["kms:ListGrants", "kms:RevokeGrant", "kms:RetireGrant"]),
                    ),
                    false,
                ),
                (
                    "NotAction CreateGrant",
                    not_action(app.clone(), json!(["kms:CreateGrant", "kms:Put*"])),
                    false,
                ),
                ("Deny", deny(star(), json!("kms:CreateGrant")), false),
                (
                    "no Resource",
                    without(allow(app, json!("kms:CreateGrant")), "Resource"),
                    false,
                ),
            ],
        );
        let text = doc(&[
            allow(aws(role("A")), json!("kms:Decrypt")),
            allow(aws(role("B")), json!("kms:CreateGrant")),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::GrantEscalation), vec![Some(1)]);
    }

    /// "(a) the same statement also grants `kms:PutKeyPolicy` … This exemption is why the KC admin
    /// statement, which has `kms:Create*` plus `kms:Put*`, is clean"
    #[test]
    fn exempt_when_the_same_statement_grants_put_key_policy() {
        let app = aws(role("App"));
        table(
            RuleId::GrantEscalation,
            &[
                ("kms:*", allow(app.clone(), json!("kms:*")), false),
                ("*", allow(app.clone(), json!("*")), false),
                (
                    "KC admin",
                    allow(app.clone(), json!(KC_ADMIN_ACTIONS)),
                    false,
                ),
                (
                    "CreateGrant + PutKeyPolicy",
                    allow(app.clone(), json!(["kms:CreateGrant", "kms:PutKeyPolicy"])),
                    false,
                ),
                (
                    "NotAction Decrypt",
                    json!({"Effect":"Allow","Principal":app.clone(),"NotAction":"kms:Decrypt","Resource":"*"}),
                    false,
                ),
                ("root kms:*", allow(aws(ROOT), json!("kms:*")), false),
                (
                    "* kms:* (public, still exempt)",
                    allow(star(), json!("kms:*")),
                    false,
                ),
            ],
        );
        // the exemption is per statement: PutKeyPolicy in another statement does not count
        let text = doc(&[
            allow(aws(role("App")), json!("kms:PutKeyPolicy")),
            allow(aws(role("App")), json!("kms:CreateGrant")),
        ]);
        assert_eq!(hits(&eval(&text), RuleId::GrantEscalation), vec![Some(1)]);
    }

    /// "(b) … `kms:GrantIsForAWSResource` is `true` under Bool, StringEquals or
    /// StringEqualsIgnoreCase. The key is case-insensitive and the value may be JSON `true` or
    /// "true"."
    #[test]
    fn mitigated_by_grant_is_for_aws_resource_true() {
        let g = |op: &str, key: &str, v: Value| grant_if(json!({ op: { key: v } }));
        let k = "kms:GrantIsForAWSResource";
        table(
            RuleId::GrantEscalation,
            &[
                ("Bool \"true\"", g("Bool", k, json!("true")), false),
                ("Bool true", g("Bool", k, json!(true)), false),
                (
                    "StringEquals \"true\"",
                    g("StringEquals", k, json!("true")),
                    false,
                ),
                (
                    "StringEquals true",
                    g("StringEquals", k, json!(true)),
                    false,
                ),
                (
                    "StringEqualsIgnoreCase \"true\"",
                    g("StringEqualsIgnoreCase", k, json!("true")),
                    false,
                ),
                (
                    "StringEqualsIgnoreCase TRUE",
                    g("StringEqualsIgnoreCase", k, json!("TRUE")),
                    false,
                ),
                (
                    "key lower case",
                    g("Bool", "kms:grantisforawsresource", json!("true")),
                    false,
                ),
                (
                    "key upper case",
                    g("Bool", "KMS:GRANTISFORAWSRESOURCE", json!(true)),
                    false,
                ),
                (
                    "ForAnyValue:Bool",
                    g("ForAnyValue:Bool", k, json!(true)),
                    false,
                ),
                // not mitigations
                ("Bool false", g("Bool", k, json!("false")), true),
                ("Bool JSON false", g("Bool", k, json!(false)), true),
                (
                    "Bool [true,false]",
                    g("Bool", k, json!(["true", "false"])),
                    true,
                ),
                (
                    "StringEquals TRUE",
                    g("StringEquals", k, json!("TRUE")),
                    true,
                ),
                (
                    "StringLike true (other operator)",
                    g("StringLike", k, json!("true")),
                    true,
                ),
                (
                    "StringNotEquals false",
                    g("StringNotEquals", k, json!("false")),
                    true,
                ),
                ("Null false", g("Null", k, json!("false")), true),
                ("empty list", g("Bool", k, json!([])), true),
            ],
        );
    }

    /// "Or `kms:ViaService` is pinned by a positive operator without IfExists, to values that are
    /// not just wildcards."
    #[test]
    fn mitigated_by_via_service_pinned_to_concrete_services() {
        let v = |op: &str, val: Value| grant_if(json!({ op: { "kms:ViaService": val } }));
        table(
            RuleId::GrantEscalation,
            &[
                (
                    "StringEquals",
                    v("StringEquals", json!("rds.us-east-1.amazonaws.com")),
                    false,
                ),
                (
                    "StringEqualsIgnoreCase",
                    v(
                        "StringEqualsIgnoreCase",
                        json!("RDS.us-east-1.amazonaws.com"),
                    ),
                    false,
                ),
                (
                    "StringLike region glob",
                    v("StringLike", json!("ec2.*.amazonaws.com")),
                    false,
                ),
                (
                    "StringEquals list",
                    v(
                        "StringEquals",
                        json!(["ec2.us-east-1.amazonaws.com", "rds.us-east-1.amazonaws.com"]),
                    ),
                    false,
                ),
                (
                    "ForAnyValue:StringEquals",
                    v(
                        "ForAnyValue:StringEquals",
                        json!(["rds.us-east-1.amazonaws.com"]),
                    ),
                    false,
                ),
                (
                    "key case",
                    grant_if(
                        json!({"StringEquals":{"KMS:VIASERVICE":"rds.us-east-1.amazonaws.com"}}),
                    ),
                    false,
                ),
                // not mitigations
                ("StringLike *", v("StringLike", json!("*")), true),
                ("StringLike **?", v("StringLike", json!("**?")), true),
                (
                    "one value just a wildcard",
                    v("StringLike", json!(["rds.us-east-1.amazonaws.com", "*"])),
                    true,
                ),
                (
                    "StringEqualsIfExists",
                    v("StringEqualsIfExists", json!("rds.us-east-1.amazonaws.com")),
                    true,
                ),
                (
                    "StringLikeIfExists",
                    v("StringLikeIfExists", json!("rds.*.amazonaws.com")),
                    true,
                ),
                (
                    "StringNotEquals",
                    v("StringNotEquals", json!("rds.us-east-1.amazonaws.com")),
                    true,
                ),
                ("StringNotLike", v("StringNotLike", json!("*")), true),
                ("Null", v("Null", json!("false")), true),
                ("empty list", v("StringEquals", json!([])), true),
            ],
        );
    }

    /// "Other grant constraints (`kms:GranteePrincipal`, `kms:GrantOperations`) and
    /// `GrantIsForAWSResource false` do not mitigate."
    #[test]
    fn other_grant_constraints_do_not_mitigate() {
        for c in [
            json!({"StringEquals":{"kms:GranteePrincipal":role("B")}}),
            json!({"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt"]}}),
            json!({"ForAnyValue:StringEquals":{"kms:GrantOperations":["Decrypt", "Encrypt"]}}),
            json!({"StringEquals":{"kms:RetiringPrincipal":role("B")}}),
            json!({"Bool":{"kms:GrantIsForAWSResource":"false"}}),
            json!({"Bool":{"kms:GrantIsForAWSResource":false}}),
            json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}}),
        ] {
            let got = eval(&doc(&[grant_if(c.clone())]));
            assert_eq!(hits(&got, RuleId::GrantEscalation), vec![Some(0)], "{c}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// §3 How other tools decide "public": the Keyward column

mod s3_keyward_column {
    use super::*;

    fn public_and_cross(st: Value) -> (bool, bool) {
        let got = eval(&doc(&[st]));
        (
            !hits(&got, RuleId::Public).is_empty(),
            !hits(&got, RuleId::CrossAccount).is_empty(),
        )
    }

    fn star_if(condition: Value) -> Value {
        allow_if(
            star(),
            json!([
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:DescribeKey"
            ]),
            condition,
        )
    }

    /// "`*` + no condition: public"
    #[test]
    fn star_without_condition_is_public() {
        assert_eq!(
            public_and_cross(allow(star(), json!("kms:*"))),
            (true, false)
        );
        assert_eq!(
            public_and_cross(allow(aws("*"), json!("kms:Decrypt"))),
            (true, false)
        );
    }

    /// "`*` + kms:CallerAccount = own (+ViaService), AWS-managed pattern: not public" (unlike
    /// prowler, a `*` value does not pass)
    #[test]
    fn star_with_caller_account_own_is_not_public() {
        let via = "ec2.us-east-1.amazonaws.com";
        assert_eq!(
            public_and_cross(star_if(
                json!({"StringEquals":{"kms:CallerAccount":ACCOUNT}})
            )),
            (false, false)
        );
        assert_eq!(
            public_and_cross(star_if(
                json!({"StringEquals":{"kms:CallerAccount":ACCOUNT,"kms:ViaService":via}})
            )),
            (false, false)
        );
        assert_eq!(
            public_and_cross(star_if(
                json!({"StringEquals":{"kms:CallerAccount":"*","kms:ViaService":via}})
            )),
            (true, false)
        );
        assert_eq!(
            public_and_cross(star_if(json!({"StringLike":{"kms:CallerAccount":"*"}}))),
            (true, false)
        );
    }

    /// "`*` + aws:PrincipalOrgID fixed: not public, cross-account"
    #[test]
    fn star_with_fixed_org_id_is_cross_account() {
        assert_eq!(
            public_and_cross(star_if(json!({"StringEquals":{"aws:PrincipalOrgID":ORG}}))),
            (false, true)
        );
    }

    /// "`*` + aws:SourceIp / SourceVpc / SourceVpce: public"
    #[test]
    fn star_with_network_conditions_is_public() {
        for c in [
            json!({"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}),
            json!({"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}),
            json!({"StringEquals":{"aws:SourceVpc":"vpc-12345678"}}),
            json!({"StringEquals":{"aws:SourceVpce":"vpce-12345678"}}),
        ] {
            assert_eq!(public_and_cross(star_if(c.clone())), (true, false), "{c}");
        }
    }

    /// "operators with IfExists / ForAnyValue / IgnoreCase: per §1" and "operators `…IfExists`,
    /// `ForAnyValue:` on account keys: per §1"
    #[test]
    fn operator_variants_follow_section_1() {
        for (c, want) in [
            (
                json!({"StringEqualsIgnoreCase":{"aws:PrincipalAccount":ACCOUNT}}),
                (false, false),
            ),
            (
                json!({"StringEqualsIfExists":{"kms:CallerAccount":ACCOUNT}}),
                (false, false),
            ),
            (
                json!({"StringEqualsIfExists":{"aws:PrincipalAccount":OTHER}}),
                (false, true),
            ),
            (
                json!({"ForAnyValue:StringEquals":{"aws:SourceAccount":ACCOUNT}}),
                (false, false),
            ),
            (
                json!({"ForAnyValue:StringEquals":{"aws:PrincipalOrgID":ORG}}),
                (false, true),
            ),
            (
                json!({"StringLikeIfExists":{"aws:PrincipalArn":role("*")}}),
                (false, false),
            ),
            (
                json!({"StringEqualsIfExists":{"aws:SourceAccount":ACCOUNT}}),
                (true, false),
            ),
            (
                json!({"ForAllValues:StringEquals":{"aws:SourceAccount":ACCOUNT}}),
                (true, false),
            ),
            (
                json!({"StringEqualsIfExists":{"aws:PrincipalOrgID":ORG}}),
                (true, false),
            ),
        ] {
            assert_eq!(public_and_cross(star_if(c.clone())), want, "{c}");
        }
    }

    /// "several condition keys, one wildcarded: AND: restricted"
    #[test]
    fn several_keys_one_wildcarded_is_restricted() {
        let c = json!({"StringEquals":{"kms:CallerAccount":ACCOUNT},"StringLike":{"aws:PrincipalArn":"*","aws:PrincipalOrgID":"o-*"}});
        assert_eq!(public_and_cross(star_if(c)), (false, false));
    }

    /// "NotPrincipal + Allow: public"
    #[test]
    fn not_principal_allow_is_public() {
        let st = json!({"Effect":"Allow","NotPrincipal":aws(role("Admin")),"Action":"kms:Decrypt","Resource":"*"});
        let got = eval(&doc(&[st]));
        assert_eq!(hits(&got, RuleId::Public), vec![Some(0)]);
        assert_eq!(hits(&got, RuleId::NotPrincipal), vec![Some(0)]);
        assert!(hits(&got, RuleId::CrossAccount).is_empty());
    }

    /// "`kms:ViaService` alone: public"
    #[test]
    fn via_service_alone_is_public() {
        let c = json!({"StringEquals":{"kms:ViaService":"secretsmanager.us-east-1.amazonaws.com"}});
        assert_eq!(public_and_cross(star_if(c)), (true, false));
    }

    /// "`arn:aws:iam::*:root`: public"
    #[test]
    fn wildcard_account_root_is_public() {
        assert_eq!(
            public_and_cross(allow(aws("arn:aws:iam::*:root"), json!("kms:Decrypt"))),
            (true, false)
        );
    }

    /// "Service principal without SourceArn: not public"
    #[test]
    fn service_principal_without_source_arn_is_not_public() {
        let st = allow(
            json!({"Service":"cloudtrail.amazonaws.com"}),
            json!(["kms:GenerateDataKey*", "kms:DescribeKey"]),
        );
        assert_eq!(public_and_cross(st), (false, false));
    }

    /// "Deny with `*`: ignored"
    #[test]
    fn deny_with_star_is_ignored() {
        let text = doc(&[
            allow(aws(role("Admin")), json!("kms:PutKeyPolicy")),
            deny(star(), json!("kms:*")),
            with(
                deny(star(), json!("kms:Decrypt")),
                "Condition",
                json!({"Bool":{"aws:SecureTransport":"false"}}),
            ),
        ]);
        assert_eq!(found(&text), vec![]);
    }
}

// ---------------------------------------------------------------------------------------------
// §4 Realistic policies from the sources

mod s4_sources {
    use super::*;

    fn root_statement() -> Value {
        json!({"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":ROOT},"Action":"kms:*","Resource":"*"})
    }

    fn admin_statement(admins: Value) -> Value {
        json!({"Sid":"Allow access for Key Administrators","Effect":"Allow","Principal":{"AWS":admins},"Action":KC_ADMIN_ACTIONS,"Resource":"*"})
    }

    /// AWS Knowledge Center kms-prevent-access: the seed default statement plus the key
    /// administrator statement delegates and nothing else.
    #[test]
    fn knowledge_center_default_plus_admin_statement() {
        let text = json!({
            "Version": "2012-10-17",
            "Id": "key-consolepolicy-3",
            "Statement": [root_statement(), admin_statement(json!(role("KMSAdminRole")))]
        })
        .to_string();
        assert_eq!(found(&text), vec![(RuleId::Delegation, Some(0))]);
    }

    /// Knowledge Center fix: `EnableRootAccessAndPreventPermissionDelegation` +
    /// `aws:PrincipalType=Account` with the admin statement is clean.
    #[test]
    fn knowledge_center_fixed_policy_is_clean() {
        let fixed = json!({
            "Sid": "EnableRootAccessAndPreventPermissionDelegation",
            "Effect": "Allow",
            "Principal": {"AWS": ROOT},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalType": "Account"}}
        });
        let text = doc(&[fixed.clone(), admin_statement(json!(role("KMSAdminRole")))]);
        assert_eq!(found(&text), vec![]);
        // without an administrator, fixing delegation leaves the lockout risk
        assert_eq!(found(&doc(&[fixed])), vec![(RuleId::NoAdmin, None)]);
    }

    /// KMS Developer Guide key-policy-default.md: root, admin, key users, asymmetric users and
    /// persistent-resources statements; only the root statement is reported.
    #[test]
    fn developer_guide_default_console_policy() {
        let users = json!([
            role("ExampleRole"),
            format!("arn:aws:iam::{ACCOUNT}:user/ExampleUser")
        ]);
        let text = doc(&[
            root_statement(),
            admin_statement(json!([
                format!("arn:aws:iam::{ACCOUNT}:user/KMSAdminUser"),
                role("KMSAdminRole")
            ])),
            json!({"Sid":"Allow use of the key","Effect":"Allow","Principal":{"AWS":users},"Action":USER_ACTIONS,"Resource":"*"}),
            json!({"Sid":"Allow use of the key for signing","Effect":"Allow","Principal":{"AWS":role("SignerRole")},
                   "Action":["kms:Sign","kms:Verify","kms:GetPublicKey","kms:DescribeKey"],"Resource":"*"}),
            json!({"Sid":"Allow attachment of persistent resources","Effect":"Allow","Principal":{"AWS":users},
                   "Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*",
                   "Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}),
        ]);
        assert_eq!(found(&text), vec![(RuleId::Delegation, Some(0))]);
        // the same persistent-resources statement without its condition escalates
        let unmitigated = doc(&[
            admin_statement(json!(role("KMSAdminRole"))),
            json!({"Effect":"Allow","Principal":{"AWS":role("ExampleRole")},"Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*"}),
        ]);
        assert_eq!(
            found(&unmitigated),
            vec![(RuleId::GrantEscalation, Some(1))]
        );
    }

    /// KMS Developer Guide key-policy-overview.md: the complete example policy that shares the key
    /// with 444455556666.
    #[test]
    fn developer_guide_example_with_external_account() {
        let users = json!([
            format!("arn:aws:iam::{ACCOUNT}:user/ExampleUser"),
            role("ExampleRole"),
            OTHER_ROOT,
        ]);
        let text = json!({
            "Version": "2012-10-17",
            "Id": "key-consolepolicy-2",
            "Statement": [
                root_statement(),
                admin_statement(json!([format!("arn:aws:iam::{ACCOUNT}:user/KMSKeyAdmin"), role("KMSKeyAdmin")])),
                {"Sid":"Allow use of the key","Effect":"Allow","Principal":{"AWS":users},"Action":USER_ACTIONS,"Resource":"*"},
                {"Sid":"Allow attachment of persistent resources","Effect":"Allow","Principal":{"AWS":users},
                 "Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*",
                 "Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}
            ]
        })
        .to_string();
        assert_eq!(
            found(&text),
            vec![
                (RuleId::Delegation, Some(0)),
                (RuleId::CrossAccount, Some(2)),
                (RuleId::CrossAccount, Some(3)),
            ]
        );
        // trusting 444455556666 leaves only the delegation
        let got = eval_as(&text, KeyManager::Customer, &[OTHER]);
        assert_eq!(rule_set(&got), set(&[RuleId::Delegation]));
    }

    /// key-policy-modifying-external-accounts.md: an external role as key user.
    #[test]
    fn developer_guide_external_account_role() {
        let text = doc(&[
            admin_statement(json!(role("KMSAdminRole"))),
            json!({"Sid":"Allow an external account to use this KMS key","Effect":"Allow",
                   "Principal":{"AWS":[format!("arn:aws:iam::{OTHER}:role/ExampleRole"), format!("arn:aws:iam::{OTHER}:user/ExampleUser")]},
                   "Action":USER_ACTIONS,"Resource":"*"}),
        ]);
        assert_eq!(found(&text), vec![(RuleId::CrossAccount, Some(1))]);
    }

    /// The AWS managed aws/ebs key policy `auto-ebs-2`: `*` with kms:CallerAccount + kms:ViaService,
    /// and the root's metadata access.
    fn aws_ebs_policy() -> String {
        json!({
            "Version": "2012-10-17",
            "Id": "auto-ebs-2",
            "Statement": [
                {
                    "Sid": "Allow access through EBS for all principals in the account that are authorized to use EBS",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com", "kms:CallerAccount": ACCOUNT}}
                },
                {
                    "Sid": "Allow direct access to key metadata to the account",
                    "Effect": "Allow",
                    "Principal": {"AWS": ROOT},
                    "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                    "Resource": "*"
                }
            ]
        })
        .to_string()
    }

    /// aws/ebs as an AWS managed key: nothing may be reported.
    #[test]
    fn aws_ebs_managed_key_reports_nothing() {
        assert_eq!(eval_as(&aws_ebs_policy(), KeyManager::Aws, &[]), vec![]);
    }

    /// The aws/ebs pattern in a customer managed key: the `*` statement is neither public nor
    /// cross-account, its CreateGrant is mitigated by the pinned kms:ViaService; the root metadata
    /// statement still delegates.
    #[test]
    fn aws_ebs_pattern_in_a_customer_key() {
        assert_eq!(
            found(&aws_ebs_policy()),
            vec![(RuleId::Delegation, Some(1)), (RuleId::NoAdmin, None)]
        );
    }

    /// prowler `test_kms_key_public_accessible`: Principal "*" with kms:* and the Sid "Enable IAM
    /// User Permissions" is public, not delegation.
    #[test]
    fn prowler_public_star_kms_all() {
        let text = json!({"Version":"2012-10-17","Id":"key-default-1","Statement":[
            {"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}
        ]})
        .to_string();
        assert_eq!(
            found(&text),
            vec![
                (RuleId::Public, Some(0)),
                (RuleId::NoAdmin, None),
                (RuleId::WildcardAction, Some(0))
            ]
        );
    }

    /// prowler `..._with_describe_key` and `..._with_decrypt`: any action to `*` is public.
    #[test]
    fn prowler_public_describe_key_and_decrypt() {
        for (principal, action) in [(aws("*"), "kms:DescribeKey"), (star(), "kms:Decrypt")] {
            let text = doc(&[allow(principal, json!(action))]);
            assert_eq!(
                found(&text),
                vec![(RuleId::Public, Some(0)), (RuleId::NoAdmin, None)],
                "{action}"
            );
        }
    }

    /// prowler `test_kms_key_empty_principal` passes there; here a statement without Principal is
    /// KMS-INVALID and nothing else.
    #[test]
    fn prowler_empty_principal_is_invalid() {
        let text = json!({"Version":"2012-10-17","Id":"key-default-1","Statement":[
            {"Sid":"Enable IAM User Permissions","Effect":"Allow","Action":"kms:*","Resource":"*"}
        ]})
        .to_string();
        assert_eq!(only_invalid(&text), Some(0));
    }

    /// ansel1/terraform-provider-ciphertrust: `{"AWS":"*"}` with kms:*.
    #[test]
    fn ciphertrust_aws_star_kms_all() {
        let text = doc(&[allow(aws("*"), json!("kms:*"))]);
        assert_eq!(
            found(&text),
            vec![
                (RuleId::Public, Some(0)),
                (RuleId::NoAdmin, None),
                (RuleId::WildcardAction, Some(0))
            ]
        );
    }

    /// cicdenv/cicdenv: a list of account roots with kms:*.
    #[test]
    fn cicdenv_list_of_account_roots() {
        let text = doc(&[allow(
            aws(json!([
                ROOT,
                OTHER_ROOT,
                format!("arn:aws:iam::{THIRD}:root")
            ])),
            json!("kms:*"),
        )]);
        assert_eq!(
            found(&text),
            vec![
                (RuleId::Delegation, Some(0)),
                (RuleId::CrossAccount, Some(0)),
                (RuleId::NoAdmin, None),
                (RuleId::AdminCanUse, Some(0)),
                (RuleId::AdminCanUse, Some(0)),
                (RuleId::WildcardAction, Some(0)),
            ]
        );
        let got = eval(&text);
        let cross: Vec<_> = got
            .iter()
            .filter(|f| f.rule_id == RuleId::CrossAccount)
            .collect();
        assert!(
            cross[0].message.contains(OTHER) && cross[0].message.contains(THIRD),
            "{}",
            cross[0].message
        );
    }
}
