//! Table tests of effective access (issue 7): key policy × IAM inventory × grants → exact tables.

use keyward::access::*;
use serde_json::json;

const ACC: &str = "111122223333";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROOT: &str = "arn:aws:iam::111122223333:root";

const ROOT_STATEMENT: &str = r#"{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#;
const PINNED_ROOT_STATEMENT: &str = r#"{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}}"#;

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACC}:role/{name}")
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACC}:user/{name}")
}

fn doc(statements: &[&str]) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    )
}

/// An identity statement.
fn allow(action: &str, resource: &str) -> String {
    format!(r#"{{"Effect":"Allow","Action":{action},"Resource":{resource}}}"#)
}

fn role(name: &str, inline: &[&str]) -> IamRole {
    IamRole {
        arn: role_arn(name),
        name: name.into(),
        inline_policies: inline
            .iter()
            .enumerate()
            .map(|(i, d)| InlinePolicy {
                name: format!("p{i}"),
                document: d.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn inventory(roles: Vec<IamRole>) -> IamInventory {
    IamInventory {
        account_id: ACC.into(),
        roles,
        ..Default::default()
    }
}

fn eval_with(policy: &str, inv: Option<&IamInventory>, grants: &[GrantInput]) -> AccessTable {
    let index = inv.map(AccessIndex::new);
    evaluate_access(&AccessInput {
        key_arn: KEY,
        account_id: ACC,
        key_policy: KeyPolicyInput::Text(policy),
        index: index.as_ref(),
        grants,
    })
    .expect("valid key policy")
}

fn eval(policy: &str, inv: &IamInventory) -> AccessTable {
    eval_with(policy, Some(inv), &[])
}

/// One line per principal: `principal [type]: Action, Action?` (`?` = conditional, `kms:*` =
/// every key action allowed, `-` = no access).
fn rows(t: &AccessTable) -> Vec<String> {
    t.principals
        .iter()
        .map(|p| format!("{} [{}]: {}", p.principal, p.principal_type, actions(p)))
        .collect()
}

fn actions(p: &PrincipalAccess) -> String {
    if p.actions.is_empty() {
        return "-".into();
    }
    if p.actions.len() == KMS_KEY_ACTIONS.len()
        && p.actions.iter().all(|a| a.access == AccessLevel::Allowed)
    {
        return "kms:*".into();
    }
    p.actions
        .iter()
        .map(|a| {
            let name = a.action.trim_start_matches("kms:");
            match a.access {
                AccessLevel::Allowed => name.to_string(),
                AccessLevel::Conditional => format!("{name}?"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_of(t: &AccessTable, principal: &str) -> String {
    let p = t
        .principal(principal)
        .unwrap_or_else(|| panic!("{principal} not in {:#?}", rows(t)));
    actions(p)
}

fn every_key_action_except(names: &[&str]) -> String {
    KMS_KEY_ACTIONS
        .iter()
        .map(|(a, _)| a.trim_start_matches("kms:"))
        .filter(|a| !names.contains(a))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn action_wildcards_and_case() {
    let inv = inventory(vec![
        role("KmsAll", &[&doc(&[&allow(r#""kms:*""#, r#""*""#)])]),
        role("Star", &[&doc(&[&allow(r#""*""#, r#""*""#)])]),
        role("Getter", &[&doc(&[&allow(r#""kms:Get*""#, r#""*""#)])]),
        role(
            "Shouty",
            &[&doc(&[&allow(
                r#"["KMS:DECRYPT","kms:generatedatakey"]"#,
                r#""*""#,
            )])],
        ),
        role("Question", &[&doc(&[&allow(r#""kms:?ncrypt""#, r#""*""#)])]),
        role("S3", &[&doc(&[&allow(r#""s3:*""#, r#""*""#)])]),
    ]);
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    assert!(t.delegates_to_iam);
    assert_eq!(
        rows(&t),
        [
            format!(
                "{} [role]: GetParametersForImport, GetKeyPolicy, GetKeyRotationStatus, GetPublicKey",
                role_arn("Getter")
            ),
            format!("{} [role]: kms:*", role_arn("KmsAll")),
            format!("{} [role]: Encrypt", role_arn("Question")),
            format!("{} [role]: -", role_arn("S3")),
            format!("{} [role]: Decrypt, GenerateDataKey", role_arn("Shouty")),
            format!("{} [role]: kms:*", role_arn("Star")),
            format!("{ROOT} [account]: kms:*"),
        ]
    );
}

#[test]
fn not_action() {
    let inv = inventory(vec![
        role(
            "AllButAdmin",
            &[&doc(&[
                r#"{"Effect":"Allow","NotAction":["kms:Put*","kms:ScheduleKeyDeletion","iam:*"],"Resource":"*"}"#,
            ])],
        ),
        role(
            "NotKms",
            &[&doc(&[
                r#"{"Effect":"Allow","NotAction":"kms:*","Resource":"*"}"#,
            ])],
        ),
    ]);
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    assert_eq!(
        row_of(&t, &role_arn("AllButAdmin")),
        every_key_action_except(&["PutKeyPolicy", "ScheduleKeyDeletion"])
    );
    assert_eq!(row_of(&t, &role_arn("NotKms")), "-");
}

#[test]
fn resource_and_not_resource() {
    let cases = [
        (r#""*""#, true),
        (&format!("{KEY:?}") as &str, true),
        (r#""arn:aws:kms:*:111122223333:key/*""#, true),
        (
            r#""arn:aws:kms:us-east-?:111122223333:key/1234abcd-*""#,
            true,
        ),
        (r#""arn:aws:kms:*:*:*""#, true),
        (r#""arn:aws:kms:us-east-1:111122223333:key/other""#, false),
        (r#""arn:aws:kms:us-east-1:111122223333:alias/app""#, false),
        (r#""arn:aws:kms:eu-west-1:111122223333:key/*""#, false),
        (r#""arn:aws:kms:us-east-1:444455556666:key/*""#, false),
        (r#""arn:aws:s3:::bucket/*""#, false),
        (
            r#"["arn:aws:s3:::bucket/*","arn:aws:kms:*:111122223333:key/*"]"#,
            true,
        ),
    ];
    for (resource, want) in cases {
        let inv = inventory(vec![role(
            "R",
            &[&doc(&[&allow(r#""kms:Decrypt""#, resource)])],
        )]);
        let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
        let want = if want { "Decrypt" } else { "-" };
        assert_eq!(row_of(&t, &role_arn("R")), want, "Resource {resource}");
    }
    for (not_resource, want) in [
        (
            r#""arn:aws:kms:us-east-1:111122223333:key/other""#,
            "Decrypt",
        ),
        (r#""arn:aws:kms:*:111122223333:key/*""#, "-"),
        (r#""*""#, "-"),
    ] {
        let inv = inventory(vec![role(
            "R",
            &[&doc(&[&format!(
                r#"{{"Effect":"Allow","Action":"kms:Decrypt","NotResource":{not_resource}}}"#
            )])],
        )]);
        let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
        assert_eq!(
            row_of(&t, &role_arn("R")),
            want,
            "NotResource {not_resource}"
        );
    }
}

#[test]
fn identity_deny_beats_allow() {
    let inv = inventory(vec![
        role(
            "Denied",
            &[
                &doc(&[&allow(r#""kms:*""#, r#""*""#)]),
                &doc(&[
                    r#"{"Sid":"NoDecrypt","Effect":"Deny","Action":["kms:Decrypt","kms:ReEncrypt*","kms:*Key*"],"Resource":"*"}"#,
                ]),
            ],
        ),
        role(
            "MaybeDenied",
            &[&doc(&[
                &allow(r#"["kms:Decrypt","kms:Encrypt"]"#, r#""*""#),
                r#"{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}}"#,
            ])],
        ),
    ]);
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    assert_eq!(
        row_of(&t, &role_arn("Denied")),
        "CreateAlias, DeleteAlias, GetParametersForImport, TagResource, UntagResource, UpdateAlias, UpdatePrimaryRegion, DeriveSharedSecret, Encrypt, GenerateMac, Sign, Verify, VerifyMac, CreateGrant, ListGrants, RetireGrant, RevokeGrant, ListResourceTags"
    );
    assert_eq!(row_of(&t, &role_arn("MaybeDenied")), "Decrypt?, Encrypt");
    let maybe = t.principal(&role_arn("MaybeDenied")).unwrap();
    assert_eq!(
        serde_json::to_value(&maybe.actions[0].denies).unwrap(),
        json!([{
            "source": "identity_policy",
            "policy": "inline:MaybeDenied/p0",
            "via": "role",
            "statement_index": 1,
            "sid": null,
            "condition": {"Bool": {"aws:MultiFactorAuthPresent": "false"}}
        }])
    );
}

#[test]
fn key_policy_deny() {
    let inv = inventory(vec![role(
        "Admin",
        &[&doc(&[&allow(r#""kms:*""#, r#""*""#)])],
    )]);
    let policy = doc(&[
        ROOT_STATEMENT,
        r#"{"Sid":"NoDeletion","Effect":"Deny","Principal":"*","Action":["kms:ScheduleKeyDeletion","kms:Disable*"],"Resource":"*"}"#,
        r#"{"Sid":"DecryptViaS3","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::111122223333:role/Admin"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringNotEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}}"#,
        r#"{"Sid":"AccountDeny","Effect":"Deny","Principal":{"AWS":"111122223333"},"Action":"kms:Sign","Resource":"*"}"#,
    ]);
    let t = eval(&policy, &inv);
    let gone = [
        "ScheduleKeyDeletion",
        "DisableKey",
        "DisableKeyRotation",
        "Sign",
    ];
    assert_eq!(
        row_of(&t, ROOT),
        every_key_action_except(&gone),
        "the root user is denied too"
    );
    assert_eq!(
        row_of(&t, &role_arn("Admin")),
        every_key_action_except(&gone).replace("Decrypt,", "Decrypt?,")
    );
    assert_eq!(
        row_of(&t, "*"),
        "-",
        "Deny * lists the principal `*` without access"
    );
}

#[test]
fn permission_boundaries() {
    let boundary = |arn: &str, statements: &[&str]| ManagedPolicy {
        arn: arn.into(),
        name: arn.rsplit('/').next().unwrap().into(),
        default_version_id: "v1".into(),
        document: doc(statements),
    };
    let kms_all = doc(&[&allow(r#""kms:*""#, r#""*""#)]);
    let mut inv = inventory(vec![
        IamRole {
            permissions_boundary: Some("arn:aws:iam::111122223333:policy/CryptoOnly".into()),
            ..role("Bounded", &[&kms_all])
        },
        IamRole {
            permissions_boundary: Some("arn:aws:iam::111122223333:policy/S3Only".into()),
            ..role("NoKms", &[&kms_all])
        },
        IamRole {
            permissions_boundary: Some("arn:aws:iam::111122223333:policy/Gone".into()),
            ..role("Unknown", &[&doc(&[&allow(r#""kms:Decrypt""#, r#""*""#)])])
        },
        IamRole {
            permissions_boundary: Some("arn:aws:iam::111122223333:policy/S3Only".into()),
            ..role("Named", &[])
        },
    ]);
    inv.policies = vec![
        boundary(
            "arn:aws:iam::111122223333:policy/CryptoOnly",
            &[
                &allow(
                    r#"["kms:Encrypt","kms:Decrypt","kms:DescribeKey"]"#,
                    r#""*""#,
                ),
                r#"{"Effect":"Deny","Action":"kms:DescribeKey","Resource":"*"}"#,
            ],
        ),
        boundary(
            "arn:aws:iam::111122223333:policy/S3Only",
            &[&allow(r#""s3:*""#, r#""*""#)],
        ),
    ];
    let policy = doc(&[
        ROOT_STATEMENT,
        r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/Named"},"Action":"kms:Decrypt","Resource":"*"}"#,
        r#"{"Effect":"Allow","Principal":"*","Action":"kms:GetPublicKey","Resource":"*"}"#,
    ]);
    let t = eval(&policy, &inv);
    // The boundary intersects with identity policies, and its Deny denies.
    assert_eq!(
        row_of(&t, &role_arn("Bounded")),
        "Decrypt, Encrypt, GetPublicKey"
    );
    // A boundary without KMS leaves nothing through IAM, nor through a key policy naming the
    // role; `*` is not limited by it.
    assert_eq!(row_of(&t, &role_arn("NoKms")), "GetPublicKey");
    assert_eq!(row_of(&t, &role_arn("Named")), "GetPublicKey");
    // A missing boundary makes the IAM path conditional, and says which policy.
    assert_eq!(row_of(&t, &role_arn("Unknown")), "Decrypt?, GetPublicKey");
    let unknown = t.principal(&role_arn("Unknown")).unwrap();
    assert_eq!(
        serde_json::to_value(&unknown.actions[0].reasons).unwrap(),
        json!([
            {"source": "delegation", "statement_index": 0, "sid": "Enable IAM User Permissions"},
            {"source": "identity_policy", "policy": "inline:Unknown/p0", "via": "role", "statement_index": 0, "sid": null},
            {"source": "boundary", "policy": "arn:aws:iam::111122223333:policy/Gone", "statement_index": null, "sid": null}
        ])
    );
}

#[test]
fn group_inheritance_and_reasons() {
    let managed = "arn:aws:iam::111122223333:policy/KmsUse";
    let inv = IamInventory {
        account_id: ACC.into(),
        users: vec![IamUser {
            arn: user_arn("alice"),
            name: "alice".into(),
            groups: vec!["crypto".into()],
            inline_policies: vec![InlinePolicy {
                name: "own".into(),
                document: doc(&[&allow(r#""kms:DescribeKey""#, r#""*""#)]),
            }],
            ..Default::default()
        }],
        groups: vec![IamGroup {
            arn: format!("arn:aws:iam::{ACC}:group/crypto"),
            name: "crypto".into(),
            inline_policies: vec![InlinePolicy {
                name: "sign".into(),
                document: doc(&[
                    r#"{"Sid":"S","Effect":"Allow","Action":"kms:Sign","Resource":"*"}"#,
                ]),
            }],
            attached_policies: vec![managed.into()],
        }],
        policies: vec![ManagedPolicy {
            arn: managed.into(),
            name: "KmsUse".into(),
            default_version_id: "v3".into(),
            document: doc(&[
                &allow(r#""s3:GetObject""#, r#""*""#),
                &allow(r#"["kms:Decrypt","kms:DescribeKey"]"#, r#""*""#),
            ]),
        }],
        ..Default::default()
    };
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    assert_eq!(
        rows(&t)[1],
        format!("{} [user]: Decrypt, Sign, DescribeKey", user_arn("alice"))
    );
    let alice = t.principal(&user_arn("alice")).unwrap();
    assert_eq!(
        serde_json::to_value(alice).unwrap(),
        json!({
            "principal": "arn:aws:iam::111122223333:user/alice",
            "principal_type": "user",
            "actions": [
                {"action": "kms:Decrypt", "group": "cryptographic", "access": "allowed", "reasons": [
                    {"source": "delegation", "statement_index": 0, "sid": "Enable IAM User Permissions"},
                    {"source": "identity_policy", "policy": managed, "via": "group:crypto", "statement_index": 1, "sid": null}
                ]},
                {"action": "kms:Sign", "group": "cryptographic", "access": "allowed", "reasons": [
                    {"source": "delegation", "statement_index": 0, "sid": "Enable IAM User Permissions"},
                    {"source": "identity_policy", "policy": "inline:crypto/sign", "via": "group:crypto", "statement_index": 0, "sid": "S"}
                ]},
                {"action": "kms:DescribeKey", "group": "read", "access": "allowed", "reasons": [
                    {"source": "delegation", "statement_index": 0, "sid": "Enable IAM User Permissions"},
                    {"source": "identity_policy", "policy": "inline:alice/own", "via": "user", "statement_index": 0, "sid": null},
                    {"source": "identity_policy", "policy": managed, "via": "group:crypto", "statement_index": 1, "sid": null}
                ]}
            ]
        })
    );
}

#[test]
fn delegation_on_and_off() {
    let inv = inventory(vec![
        role("Wide", &[&doc(&[&allow(r#""kms:*""#, r#""*""#)])]),
        role(
            "App",
            &[&doc(&[
                r#"{"Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}"#,
            ])],
        ),
    ]);
    let app = r#"{"Sid":"Use","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:role/App","arn:aws:sts::111122223333:assumed-role/App/ci"]},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}"#;

    let on = eval(&doc(&[ROOT_STATEMENT, app]), &inv);
    assert!(on.delegates_to_iam);
    assert_eq!(
        on.delegation_statements,
        [StatementRef {
            statement_index: 0,
            sid: Some("Enable IAM User Permissions".into())
        }]
    );
    assert_eq!(
        rows(&on),
        [
            format!("{} [role]: Decrypt", role_arn("App")),
            format!("{} [role]: kms:*", role_arn("Wide")),
            format!("{ROOT} [account]: kms:*"),
            "arn:aws:sts::111122223333:assumed-role/App/ci [assumed_role]: Decrypt".to_string(),
        ]
    );

    let off = eval(&doc(&[PINNED_ROOT_STATEMENT, app]), &inv);
    assert!(!off.delegates_to_iam);
    assert!(off.delegation_statements.is_empty());
    assert_eq!(
        rows(&off),
        [
            format!("{} [role]: Decrypt", role_arn("App")),
            format!("{} [role]: -", role_arn("Wide")),
            format!("{ROOT} [account]: kms:*"),
            "arn:aws:sts::111122223333:assumed-role/App/ci [assumed_role]: Decrypt".to_string(),
        ]
    );
    // The pinned condition is decided for the root user (it is the Account type): no
    // condition is shown.
    assert_eq!(
        serde_json::to_value(&off.principal(ROOT).unwrap().actions[0].reasons).unwrap(),
        json!([{"source": "key_policy", "statement_index": 0, "sid": "EnableRootAccessAndPreventPermissionDelegation"}])
    );
}

#[test]
fn conditional_entries_show_the_condition() {
    let inv = inventory(vec![
        role(
            "ViaS3",
            &[&doc(&[
                r#"{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}}"#,
            ])],
        ),
        role(
            "Both",
            &[&doc(&[
                r#"{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}}"#,
                &allow(r#""kms:Decrypt""#, r#""*""#),
            ])],
        ),
        role(
            "OtherAccountOnly",
            &[&doc(&[
                r#"{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":"444455556666"}}}"#,
            ])],
        ),
    ]);
    let policy = doc(&[
        ROOT_STATEMENT,
        r#"{"Sid":"Grants","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":"kms:CreateGrant","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}"#,
    ]);
    let t = eval(&policy, &inv);
    assert_eq!(
        rows(&t),
        [
            format!("{} [role]: CreateGrant?", role_arn("App")),
            format!("{} [role]: Decrypt", role_arn("Both")),
            format!("{} [role]: -", role_arn("OtherAccountOnly")),
            format!("{} [role]: Decrypt?", role_arn("ViaS3")),
            format!("{ROOT} [account]: kms:*"),
        ]
    );
    let app = t.principal(&role_arn("App")).unwrap();
    assert_eq!(
        serde_json::to_value(&app.actions[0]).unwrap(),
        json!({"action": "kms:CreateGrant", "group": "grant", "access": "conditional", "reasons": [
            {"source": "key_policy", "statement_index": 1, "sid": "Grants",
             "condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}
        ]})
    );
    let via = t.principal(&role_arn("ViaS3")).unwrap();
    assert_eq!(
        serde_json::to_value(&via.actions[0].reasons[1]).unwrap(),
        json!({"source": "identity_policy", "policy": "inline:ViaS3/p0", "via": "role", "statement_index": 0, "sid": null,
               "condition": {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}})
    );
    // A conditional delegation statement makes IAM access conditional too.
    let cond_root = r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:ViaService":"ec2.us-east-1.amazonaws.com"}}}"#;
    let t = eval(&doc(&[cond_root]), &inv);
    assert!(t.delegates_to_iam);
    assert_eq!(row_of(&t, &role_arn("Both")), "Decrypt?");
}

#[test]
fn grants() {
    let inv = inventory(vec![role("Batch", &[])]);
    let grants = vec![
        GrantInput {
            grant_id: "g1".into(),
            grantee_principal: Some(role_arn("Batch")),
            operations: vec![
                "Decrypt".into(),
                "GenerateDataKey".into(),
                "kms:DescribeKey".into(),
            ],
        },
        GrantInput {
            grant_id: "g2".into(),
            grantee_principal: Some("logs.us-east-1.amazonaws.com".into()),
            operations: vec!["Encrypt".into(), "CreateKey".into()],
        },
        GrantInput {
            grant_id: "g3".into(),
            grantee_principal: None,
            operations: vec!["Decrypt".into()],
        },
    ];
    let t = eval_with(&doc(&[PINNED_ROOT_STATEMENT]), Some(&inv), &grants);
    assert_eq!(
        rows(&t),
        [
            format!(
                "{} [role]: Decrypt, GenerateDataKey, DescribeKey",
                role_arn("Batch")
            ),
            format!("{ROOT} [account]: kms:*"),
            "logs.us-east-1.amazonaws.com [service]: Encrypt".to_string(),
        ]
    );
    assert_eq!(
        t.principal(&role_arn("Batch")).unwrap().actions[0].reasons[..],
        [Reason::Grant {
            grant_id: "g1".into()
        }]
    );
    assert_eq!(
        t.notes,
        [
            "Grant g2 lists the operation \"CreateKey\", which is not a key action: ignored.",
            "Grant g3 has no grantee principal: nobody is listed for it."
        ]
    );
}

#[test]
fn unknown_and_invalid_policies_are_noted() {
    let mut inv = inventory(vec![IamRole {
        attached_policies: vec!["arn:aws:iam::111122223333:policy/Missing".into()],
        ..role(
            "R",
            &[&doc(&[&allow(r#""kms:Decrypt""#, r#""*""#)]), "{not json"],
        )
    }]);
    inv.users = vec![IamUser {
        arn: user_arn("bob"),
        name: "bob".into(),
        groups: vec!["ghosts".into()],
        ..Default::default()
    }];
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    let r = t.principal(&role_arn("R")).unwrap();
    assert_eq!(actions(r), "Decrypt");
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    assert!(r.notes[0].starts_with("policy inline:R/p1 (via role) could not be read (not JSON"));
    assert_eq!(
        r.notes[1],
        "managed policy arn:aws:iam::111122223333:policy/Missing (via role) is not in the IAM inventory: its permissions are unknown"
    );
    assert_eq!(
        t.principal(&user_arn("bob")).unwrap().notes,
        ["group ghosts is not in the IAM inventory: its policies are unknown"]
    );

    // An invalid key policy is an error value.
    let index = AccessIndex::new(&inv);
    for bad in [
        "nope",
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
    ] {
        let err = evaluate_access(&AccessInput {
            key_arn: KEY,
            account_id: ACC,
            key_policy: KeyPolicyInput::Text(bad),
            index: Some(&index),
            grants: &[],
        })
        .unwrap_err();
        assert!(matches!(err, AccessError::InvalidKeyPolicy(_)), "{bad}");
    }
}

#[test]
fn without_inventory_identities_are_unknown() {
    let policy = doc(&[
        ROOT_STATEMENT,
        r#"{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111122223333:role/App","444455556666"],"Service":"logs.amazonaws.com"},"Action":"kms:Decrypt","Resource":"*"}"#,
    ]);
    let t = eval_with(&policy, None, &[]);
    assert!(!t.identities_known);
    assert!(t.delegates_to_iam);
    assert_eq!(
        rows(&t),
        [
            format!("{} [role]: Decrypt", role_arn("App")),
            format!("{ROOT} [account]: kms:*"),
            "arn:aws:iam::444455556666:root [account]: Decrypt".to_string(),
            "logs.amazonaws.com [service]: Decrypt".to_string(),
        ]
    );
    assert_eq!(t.notes.len(), 1);
    assert!(t.notes[0].contains("not known"), "{:?}", t.notes);
}

#[test]
fn anyone_and_not_principal() {
    let inv = inventory(vec![role("App", &[])]);
    let policy = doc(&[
        PINNED_ROOT_STATEMENT,
        r#"{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"}}}"#,
        r#"{"Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":"kms:Verify","Resource":"*"}"#,
    ]);
    let t = eval(&policy, &inv);
    assert_eq!(
        rows(&t),
        [
            "* [anyone]: Encrypt?, Verify".to_string(),
            format!("{} [role]: Encrypt", role_arn("App")),
            format!("{ROOT} [account]: kms:*"),
        ]
    );
}

#[test]
fn filters() {
    let inv = inventory(vec![role(
        "Use",
        &[&doc(&[&allow(
            r#"["kms:Decrypt","kms:DescribeKey"]"#,
            r#""*""#,
        )])],
    )]);
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    let f = t.filtered(&AccessFilter {
        group: Some(ActionGroup::Cryptographic),
        principal_type: Some(PrincipalType::Role),
    });
    assert_eq!(rows(&f), [format!("{} [role]: Decrypt", role_arn("Use"))]);
    let f = t.filtered(&AccessFilter {
        group: Some(ActionGroup::Read),
        principal_type: None,
    });
    assert_eq!(
        rows(&f),
        [
            format!("{} [role]: DescribeKey", role_arn("Use")),
            format!(
                "{ROOT} [account]: DescribeKey, GetKeyPolicy, GetKeyRotationStatus, GetPublicKey, ListKeyPolicies, ListKeyRotations, ListResourceTags"
            ),
        ]
    );
    assert_eq!(
        "assumed_role".parse::<PrincipalType>(),
        Ok(PrincipalType::AssumedRole)
    );
    assert_eq!(
        "Cryptographic".parse::<ActionGroup>(),
        Ok(ActionGroup::Cryptographic)
    );
    assert!("nope".parse::<ActionGroup>().is_err());
}

#[test]
fn impact_of_the_fix() {
    let inv = inventory(vec![
        role(
            "App",
            &[&doc(&[&allow(
                r#"["kms:Decrypt","kms:Encrypt"]"#,
                r#""*""#,
            )])],
        ),
        role("KMSAdmin", &[]),
        role("Auditor", &[]),
        role("Ops", &[&doc(&[&allow(r#""kms:DescribeKey""#, r#""*""#)])]),
    ]);
    let admin = r#"{"Sid":"Admin","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/KMSAdmin"},"Action":["kms:PutKeyPolicy","kms:DescribeKey"],"Resource":"*"}"#;
    let before = eval(&doc(&[ROOT_STATEMENT, admin]), &inv);
    let after = eval(
        &doc(&[
            PINNED_ROOT_STATEMENT,
            admin,
            r#"{"Sid":"Auditor","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/Auditor"},"Action":["kms:GetKeyPolicy"],"Resource":"*"}"#,
        ]),
        &inv,
    );
    let got = impact(&before, &after);
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        json!({
            "lose": [
                {"principal": "arn:aws:iam::111122223333:role/App", "principal_type": "role",
                 "actions": {"cryptographic": ["kms:Decrypt", "kms:Encrypt"]}},
                {"principal": "arn:aws:iam::111122223333:role/Ops", "principal_type": "role",
                 "actions": {"read": ["kms:DescribeKey"]}}
            ],
            "keep": [
                {"principal": "arn:aws:iam::111122223333:role/KMSAdmin", "principal_type": "role"},
                {"principal": "arn:aws:iam::111122223333:root", "principal_type": "account"}
            ],
            "gain": [
                {"principal": "arn:aws:iam::111122223333:role/Auditor", "principal_type": "role",
                 "actions": {"read": ["kms:GetKeyPolicy"]}}
            ],
            "loses_cryptographic": ["arn:aws:iam::111122223333:role/App"]
        })
    );
    assert!(got.requires_acknowledgement());
    let same = impact(&after, &after);
    assert!(same.lose.is_empty() && same.gain.is_empty() && !same.requires_acknowledgement());
    assert_eq!(same.keep.len(), 3);
    let back: AccessImpact = serde_json::from_value(serde_json::to_value(&got).unwrap()).unwrap();
    assert_eq!(back, got);
}

#[test]
fn table_round_trips_through_json() {
    let inv = inventory(vec![role(
        "ViaS3",
        &[&doc(&[
            r#"{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}}"#,
        ])],
    )]);
    let t = eval_with(
        &doc(&[ROOT_STATEMENT]),
        Some(&inv),
        &[GrantInput {
            grant_id: "g".into(),
            grantee_principal: Some(role_arn("ViaS3")),
            operations: vec!["Encrypt".into()],
        }],
    );
    let text = serde_json::to_string(&t).unwrap();
    let back: AccessTable = serde_json::from_str(&text).unwrap();
    assert_eq!(back, t);
    // Evaluating twice gives the same bytes: snapshots are deterministic.
    let again = eval_with(
        &doc(&[ROOT_STATEMENT]),
        Some(&inv),
        &[GrantInput {
            grant_id: "g".into(),
            grantee_principal: Some(role_arn("ViaS3")),
            operations: vec!["Encrypt".into()],
        }],
    );
    assert_eq!(serde_json::to_string(&again).unwrap(), text);
}

#[test]
fn reverse_view() {
    let inv = inventory(vec![role(
        "App",
        &[&doc(&[&allow(
            r#""kms:Decrypt""#,
            r#""arn:aws:kms:*:111122223333:key/a*""#,
        )])],
    )]);
    let index = AccessIndex::new(&inv);
    let key = |id: &str, policy: String| KeyInput {
        key_arn: format!("arn:aws:kms:us-east-1:{ACC}:key/{id}"),
        account_id: ACC.into(),
        policy,
        grants: Vec::new(),
    };
    let keys = vec![
        key("a1", doc(&[ROOT_STATEMENT])),
        key("a2", doc(&[PINNED_ROOT_STATEMENT])),
        key("b1", doc(&[ROOT_STATEMENT])),
        key(
            "b2",
            doc(&[
                r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/App"},"Action":"kms:Sign","Resource":"*"}"#,
            ]),
        ),
        key("bad", "{".into()),
    ];
    for asked in [
        role_arn("App"),
        "arn:aws:sts::111122223333:assumed-role/App/session-1".to_string(),
    ] {
        let got = keys_for_principal(Some(&index), &keys, &asked);
        assert_eq!(got.principal, asked);
        assert_eq!(got.evaluated_as, role_arn("App"));
        let summary: Vec<(String, Vec<String>)> = got
            .keys
            .iter()
            .map(|k| {
                (
                    k.key_arn.rsplit('/').next().unwrap().to_string(),
                    k.actions.iter().map(|a| a.action.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a1".to_string(), vec!["kms:Decrypt".to_string()]),
                ("b2".to_string(), vec!["kms:Sign".to_string()]),
            ]
        );
        assert_eq!(
            got.unreadable_keys,
            [format!("arn:aws:kms:us-east-1:{ACC}:key/bad")]
        );
    }
}

#[test]
fn decrypt_all_keys_detection() {
    let managed = |name: &str, statement: &str| ManagedPolicy {
        arn: format!("arn:aws:iam::111122223333:policy/{name}"),
        name: name.into(),
        default_version_id: "v1".into(),
        document: doc(&[statement]),
    };
    let inv = IamInventory {
        account_id: ACC.into(),
        roles: vec![IamRole {
            attached_policies: vec![
                "arn:aws:iam::111122223333:policy/Star".into(),
                "arn:aws:iam::111122223333:policy/KmsStar".into(),
            ],
            ..role(
                "R",
                &[
                    &doc(&[&allow(r#""kms:Decrypt""#, r#""*""#)]),
                    &doc(&[&allow(r#""kms:Decrypt""#, &format!("{KEY:?}"))]),
                ],
            )
        }],
        groups: vec![IamGroup {
            arn: format!("arn:aws:iam::{ACC}:group/g"),
            name: "g".into(),
            attached_policies: vec!["arn:aws:iam::111122223333:policy/NotAction".into()],
            ..Default::default()
        }],
        policies: vec![
            managed("Star", &allow(r#""*""#, r#""*""#)),
            managed(
                "KmsStar",
                &allow(r#""kms:*""#, r#""arn:aws:kms:*:*:key/*""#),
            ),
            managed(
                "NotAction",
                r#"{"Sid":"NA","Effect":"Allow","NotAction":["kms:Decrypt","iam:*"],"Resource":"*"}"#,
            ),
            managed(
                "OwnAccountOnly",
                &allow(r#""kms:Decrypt""#, r#""arn:aws:kms:*:111122223333:key/*""#),
            ),
            managed("Encrypt", &allow(r#""kms:Encrypt""#, r#""*""#)),
            managed(
                "Deny",
                r#"{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}"#,
            ),
            managed("ReEncrypt", &allow(r#""kms:ReEncrypt*""#, r#""*""#)),
        ],
        ..Default::default()
    };
    let got = decrypt_all_keys(&inv);
    let summary: Vec<String> = got
        .iter()
        .map(|p| {
            format!(
                "{} {} #{} {:?} -> {:?}",
                p.security_hub_control, p.policy, p.statement_index, p.actions, p.attached_to
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#"KMS.1 arn:aws:iam::111122223333:policy/KmsStar #0 ["kms:Decrypt", "kms:ReEncryptFrom"] -> ["arn:aws:iam::111122223333:role/R"]"#,
            r#"KMS.1 arn:aws:iam::111122223333:policy/NotAction #0 ["kms:ReEncryptFrom"] -> ["arn:aws:iam::111122223333:group/g"]"#,
            r#"KMS.1 arn:aws:iam::111122223333:policy/ReEncrypt #0 ["kms:ReEncryptFrom"] -> []"#,
            r#"KMS.1 arn:aws:iam::111122223333:policy/Star #0 ["kms:Decrypt", "kms:ReEncryptFrom"] -> ["arn:aws:iam::111122223333:role/R"]"#,
            r#"KMS.2 inline:R/p0 #0 ["kms:Decrypt"] -> ["arn:aws:iam::111122223333:role/R"]"#,
        ]
    );
    let t = eval(&doc(&[ROOT_STATEMENT]), &inv);
    let off = eval(&doc(&[PINNED_ROOT_STATEMENT]), &inv);
    let reach: Vec<(bool, bool)> = got
        .iter()
        .map(|p| (p.reaches(&t, &inv), p.reaches(&off, &inv)))
        .collect();
    // The group has no members and ReEncrypt is attached to nobody; nothing reaches a key
    // that does not delegate.
    assert_eq!(
        reach,
        [
            (true, false),
            (false, false),
            (false, false),
            (true, false),
            (true, false)
        ]
    );
}

#[test]
fn actions_reached_the_same_way_share_their_reasons() {
    // kms:* through one identity statement: 44 actions, one list of reasons held once; the
    // key-policy administrator statement adds its reason to the actions it names only.
    let inv = inventory(vec![role(
        "Ops",
        &[&doc(&[&allow(r#""kms:*""#, r#""*""#)])],
    )]);
    let admin = format!(
        r#"{{"Sid":"Admins","Effect":"Allow","Principal":{{"AWS":"{}"}},"Action":["kms:PutKeyPolicy","kms:DescribeKey"],"Resource":"*"}}"#,
        role_arn("Ops")
    );
    let t = eval(&doc(&[ROOT_STATEMENT, &admin]), &inv);
    let ops = t.principal(&role_arn("Ops")).unwrap();
    assert_eq!(ops.actions.len(), 44);
    let iam_only: Vec<&ActionAccess> = ops
        .actions
        .iter()
        .filter(|a| a.action != "kms:PutKeyPolicy" && a.action != "kms:DescribeKey")
        .collect();
    assert_eq!(iam_only.len(), 42);
    assert!(
        iam_only
            .iter()
            .all(|a| std::sync::Arc::ptr_eq(&a.reasons, &iam_only[0].reasons))
    );
    assert_eq!(iam_only[0].reasons.len(), 2, "delegation + identity policy");
    let named: Vec<&ActionAccess> = ops
        .actions
        .iter()
        .filter(|a| a.action == "kms:PutKeyPolicy" || a.action == "kms:DescribeKey")
        .collect();
    assert_eq!(named.len(), 2);
    assert!(std::sync::Arc::ptr_eq(&named[0].reasons, &named[1].reasons));
    assert_eq!(
        serde_json::to_value(&named[0].reasons[0]).unwrap(),
        json!({"source": "key_policy", "statement_index": 1, "sid": "Admins"})
    );
    assert_eq!(named[0].reasons.len(), 3);
    // The JSON is the same as with one list per action.
    let json = serde_json::to_value(ops).unwrap();
    assert_eq!(json["actions"][0]["reasons"], json["actions"][5]["reasons"]);
}
