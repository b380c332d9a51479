//! Property tests of the policy engine: lossless round trips, the safety of `fix`, and the
//! agreement of `evaluate`'s fast path with the lossless one.

use keyward::policy::fix::{FixContext, FixOutcome, fix};
use keyward::policy::{EvalContext, KeyManager, Policy, RuleId, evaluate, evaluate_policy};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const ACCOUNT: &str = "111122223333";
const ADMIN: &str = "arn:aws:iam::111122223333:role/KMSAdmin";

fn principal() -> impl Strategy<Value = Value> {
    let aws = prop::sample::select(vec![
        "arn:aws:iam::111122223333:root",
        "111122223333",
        "arn:aws-cn:iam::111122223333:root",
        "arn:aws:iam::111122223333:role/App",
        "arn:aws:iam::111122223333:role/KMSAdmin",
        "arn:aws:iam::111122223333:user/alice",
        "arn:aws:iam::444455556666:root",
        "arn:aws:sts::444455556666:assumed-role/R/s",
        "*",
        "arn:aws:iam::*:root",
    ]);
    prop_oneof![
        Just(json!("*")),
        aws.clone().prop_map(|a| json!({ "AWS": a })),
        prop::collection::vec(aws, 1..4).prop_map(|v| json!({ "AWS": v })),
        Just(json!({"Service": "logs.amazonaws.com"})),
        Just(json!({"Federated": "cognito-identity.amazonaws.com"})),
        Just(
            json!({"CanonicalUser": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"})
        ),
        (prop::sample::select(vec![
            "arn:aws:iam::111122223333:root",
            "arn:aws:iam::111122223333:role/App"
        ]))
        .prop_map(|a| json!({"AWS": a, "Service": ["ec2.amazonaws.com"]})),
    ]
}

fn actions() -> impl Strategy<Value = Value> {
    let one = prop::sample::select(vec![
        "kms:*",
        "*",
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:Put*",
        "kms:PutKeyPolicy",
        "kms:Create*",
        "kms:CreateGrant",
        "kms:Describe*",
        "KMS:ScheduleKeyDeletion",
        "kms:GenerateDataKey*",
    ]);
    prop_oneof![
        one.clone().prop_map(Value::from),
        prop::collection::vec(one, 1..5).prop_map(|v| json!(v)),
    ]
}

fn condition() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop::sample::select(vec![
        json!({"StringEquals": {"aws:PrincipalType": "Account"}}),
        json!({"StringLike": {"aws:PrincipalType": "A*"}}),
        json!({"StringNotEquals": {"aws:PrincipalType": "Account"}}),
        json!({"StringEquals": {"aws:PrincipalType": ["Account", "AssumedRole"]}}),
        json!({"StringLike": {"aws:PrincipalType": "*"}, "Bool": {"aws:SecureTransport": "true"}}),
        json!({"StringEquals": {"kms:CallerAccount": "111122223333"}}),
        json!({"StringEquals": {"kms:CallerAccount": "111122223333", "kms:ViaService": "ec2.us-east-1.amazonaws.com"}}),
        json!({"Bool": {"kms:GrantIsForAWSResource": true}}),
        json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/*"}}),
        json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
    ]))
}

prop_compose! {
    fn statement()(
        sid in prop::option::of(prop::sample::select(vec!["A", "B", "Enable IAM User Permissions", "EnableRootAccessAndPreventPermissionDelegation", ""])),
        deny in prop::bool::weighted(0.15),
        not_principal in prop::bool::weighted(0.05),
        principal in principal(),
        not_action in prop::bool::weighted(0.1),
        actions in actions(),
        resource in prop::option::weighted(0.9, prop::sample::select(vec![json!("*"), json!(["*"])])),
        not_resource in prop::bool::weighted(0.05),
        condition in condition(),
        extra in prop::option::weighted(0.1, any::<u32>()),
    ) -> Value {
        let mut m = Map::new();
        if let Some(sid) = sid { m.insert("Sid".into(), json!(sid)); }
        m.insert("Effect".into(), json!(if deny { "Deny" } else { "Allow" }));
        m.insert(if not_principal { "NotPrincipal" } else { "Principal" }.into(), principal);
        m.insert(if not_action { "NotAction" } else { "Action" }.into(), actions);
        if let Some(r) = resource { m.insert(if not_resource { "NotResource" } else { "Resource" }.into(), r); }
        if let Some(c) = condition { m.insert("Condition".into(), c); }
        if let Some(x) = extra { m.insert("X-Unknown".into(), json!({"n": x, "list": [true, null, 1.5]})); }
        Value::Object(m)
    }
}

prop_compose! {
    fn document()(
        statements in prop::collection::vec(statement(), 1..7),
        single in prop::bool::weighted(0.1),
        id in prop::option::of("[a-z-]{1,12}"),
        unknown in prop::option::weighted(0.1, "[a-z]{1,8}"),
    ) -> Value {
        let mut m = Map::new();
        m.insert("Version".into(), json!("2012-10-17"));
        if let Some(id) = id { m.insert("Id".into(), json!(id)); }
        if let Some(x) = unknown { m.insert("X-Owner".into(), json!({"team": x, "tags": [1, null]})); }
        let st = if single && statements.len() == 1 { statements[0].clone() } else { json!(statements) };
        m.insert("Statement".into(), st);
        Value::Object(m)
    }
}

fn rule_ids(p: &Policy) -> Vec<RuleId> {
    evaluate_policy(
        p,
        &EvalContext {
            account_id: ACCOUNT,
            key_manager: KeyManager::Customer,
            trusted_accounts: &[],
        },
    )
    .into_iter()
    .map(|f| f.rule_id)
    .collect()
}

fn ctx(admins: &[String]) -> FixContext<'_> {
    FixContext {
        account_id: ACCOUNT,
        key_admins: admins,
        auditor: None,
        caller: None,
    }
}

/// The document as text: compact, pretty, or with escapes in its strings. `/` and `k` appear
/// only inside JSON strings, so escaping them keeps the document equal while making the reader
/// unescape (and own) those strings instead of borrowing them.
fn render(doc: &Value, form: u8) -> String {
    match form {
        0 => serde_json::to_string(doc).unwrap(),
        1 => serde_json::to_string_pretty(doc).unwrap(),
        _ => serde_json::to_string(doc)
            .unwrap()
            .replace('/', "\\/")
            .replace('k', "\\u006b"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `evaluate` reads text through its own fast path; it must find exactly what the rules find
    /// on the lossless `Policy`, messages and locators included.
    #[test]
    fn evaluate_agrees_with_evaluate_policy(doc in document(), form in 0u8..3, trusting in any::<bool>()) {
        let text = render(&doc, form);
        let policy = Policy::parse(&text).expect("generated documents are valid");
        prop_assert_eq!(&policy.to_value(), &doc);
        let trusted = if trusting { vec!["444455556666".to_string()] } else { Vec::new() };
        for key_manager in [KeyManager::Customer, KeyManager::Aws] {
            let ctx = EvalContext { account_id: ACCOUNT, key_manager, trusted_accounts: &trusted };
            prop_assert_eq!(evaluate(&text, &ctx), evaluate_policy(&policy, &ctx));
        }
    }

    #[test]
    fn parse_serialize_parse_is_identity(doc in document()) {
        let text = serde_json::to_string(&doc).unwrap();
        let p = Policy::parse(&text).expect("generated documents are valid");
        prop_assert_eq!(&p.to_value(), &doc);
        let again = Policy::parse(&p.to_pretty()).unwrap();
        prop_assert_eq!(again, p);
    }

    #[test]
    fn fix_is_safe_and_idempotent(doc in document()) {
        let admins = vec![ADMIN.to_string()];
        let before = Policy::from_value(doc).unwrap();
        let outcome = fix(&before, &ctx(&admins));
        let after = match outcome {
            Ok(FixOutcome::Unchanged) => before.clone(),
            Ok(FixOutcome::Fixed(f)) => {
                prop_assert_eq!(&Policy::parse(&f.text).unwrap(), &f.policy);
                prop_assert!(!f.changes.is_empty());
                f.policy
            }
            Err(e) => return Err(TestCaseError::fail(format!("fix refused with an admin configured: {e}"))),
        };
        let ids = rule_ids(&after);
        prop_assert!(!ids.contains(&RuleId::Delegation), "{:?}", after.to_pretty());
        prop_assert!(!ids.contains(&RuleId::NoAdmin), "{:?}", after.to_pretty());

        // Every statement that did not delegate is kept, byte-for-byte as JSON, in order.
        let kept: Vec<Value> = before
            .statements()
            .iter()
            .filter(|s| !keyward::policy::rules::delegation_of(s, ACCOUNT))
            .map(|s| Value::Object(s.raw().clone()))
            .collect();
        let mut remaining = after.statements().iter().map(|s| Value::Object(s.raw().clone()));
        for st in &kept {
            prop_assert!(remaining.any(|a| &a == st), "statement {} lost or reordered", st);
        }

        // Nothing outside Statement changes.
        let strip = |p: &Policy| { let mut m = p.raw().clone(); m.shift_remove("Statement"); m };
        prop_assert_eq!(strip(&before), strip(&after));

        // fix(fix(p)) == fix(p)
        prop_assert_eq!(fix(&after, &ctx(&admins)), Ok(FixOutcome::Unchanged));
    }

    #[test]
    fn fix_never_refuses_silently(doc in document()) {
        let before = Policy::from_value(doc).unwrap();
        if let Err(e) = fix(&before, &ctx(&[])) {
            prop_assert!(!e.reason.is_empty());
            // without administrators configured, the only refusal is the missing administrator
            prop_assert!(e.reason.contains("key_admins"), "{}", e.reason);
        }
    }
}
