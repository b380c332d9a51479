//! Effective access at account scale (issue 7's target: 1,000 keys against 2,000 roles and
//! 5,000 policies in under 2 s on one core), for two accounts of that size:
//! * `typical`: six policies in 100 touch KMS (kms:*, Decrypt on *, key-scoped use, a Deny,
//!   read-only, an allow-all NotAction), so 280 of the 2,000 roles reach every delegating key;
//! * `kms_heavy`: six in 20 do, so 1,400 roles reach every key, most with all 44 actions.
//!   Measured on 20 keys (keys are independent: 1,000 keys take 50 times as long).
//!
//! Each has `index` (`AccessIndex::new`, parsing the whole inventory once) and `evaluate`
//! (`evaluate_access` for every key against the prebuilt index).

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::access::{
    AccessIndex, AccessInput, GrantInput, IamGroup, IamInventory, IamRole, IamUser, InlinePolicy,
    KeyPolicyInput, ManagedPolicy, evaluate_access,
};
use std::hint::black_box;
use std::time::Duration;

const ACCOUNT: &str = "111122223333";
const ROLES: usize = 2_000;
const MANAGED: usize = 3_000;
const INLINE: usize = 2_000;
const KEYS: usize = 1_000;

fn doc(statements: &[String]) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    )
}

/// The statement mix of policy `i`: mostly other services, as in a real account.
/// A policy's statements; one policy in `kms_every` grants KMS access in one of six ways.
fn statements(i: usize, kms_every: usize) -> Vec<String> {
    let other = format!(
        r#"{{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","dynamodb:*","logs:CreateLogStream"],"Resource":["arn:aws:s3:::bucket-{i}/*","arn:aws:dynamodb:*:{ACCOUNT}:table/t{i}"]}}"#
    );
    let ec2 = r#"{"Effect":"Allow","Action":["ec2:Describe*","cloudwatch:PutMetricData"],"Resource":"*"}"#.to_string();
    match i % kms_every {
        // kms:* on everything
        0 => vec![
            other,
            r#"{"Effect":"Allow","Action":"kms:*","Resource":"*"}"#.into(),
        ],
        // kms:Decrypt on every key (IAM-KMS-DECRYPT-ALL-KEYS)
        1 => vec![
            other,
            r#"{"Effect":"Allow","Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*"}"#
                .into(),
        ],
        // scoped to some keys, with a condition
        2 => vec![other, format!(
            r#"{{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"arn:aws:kms:us-east-1:{ACCOUNT}:key/{:04}*","Condition":{{"StringEquals":{{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}}}}}"#,
            i % 100
        )],
        // guardrail Deny
        3 => vec![
            other,
            r#"{"Effect":"Deny","Action":["kms:ScheduleKeyDeletion","kms:PutKeyPolicy"],"Resource":"*"}"#.into(),
        ],
        // NotAction admin-style policy
        4 => vec![
            r#"{"Effect":"Allow","NotAction":["iam:*","organizations:*"],"Resource":"*"}"#.into(),
        ],
        // read-only KMS
        5 => vec![
            ec2,
            r#"{"Effect":"Allow","Action":["kms:Describe*","kms:List*","kms:Get*"],"Resource":"*"}"#.into(),
        ],
        _ => vec![other, ec2],
    }
}

fn account(kms_every: usize) -> IamInventory {
    let policies: Vec<ManagedPolicy> = (0..MANAGED)
        .map(|i| ManagedPolicy {
            arn: format!("arn:aws:iam::{ACCOUNT}:policy/p{i}"),
            name: format!("p{i}"),
            default_version_id: "v1".into(),
            document: doc(&statements(i, kms_every)),
        })
        .collect();
    let boundary = format!("arn:aws:iam::{ACCOUNT}:policy/p5"); // read-only KMS
    let roles = (0..ROLES)
        .map(|r| IamRole {
            arn: format!("arn:aws:iam::{ACCOUNT}:role/service/role-{r}"),
            name: format!("role-{r}"),
            // One inline policy per role (INLINE in all), three attached managed policies.
            inline_policies: (r < INLINE)
                .then(|| InlinePolicy {
                    name: "inline".into(),
                    document: doc(&statements(r * 7 + 3, kms_every)),
                })
                .into_iter()
                .collect(),
            attached_policies: (0..3)
                .map(|k| {
                    format!(
                        "arn:aws:iam::{ACCOUNT}:policy/p{}",
                        (r * 3 + k * 997) % MANAGED
                    )
                })
                .collect(),
            permissions_boundary: (r % 10 == 0).then(|| boundary.clone()),
        })
        .collect();
    let groups = (0..20)
        .map(|g| IamGroup {
            arn: format!("arn:aws:iam::{ACCOUNT}:group/g{g}"),
            name: format!("g{g}"),
            inline_policies: Vec::new(),
            attached_policies: vec![format!("arn:aws:iam::{ACCOUNT}:policy/p{}", g * 13)],
        })
        .collect();
    let users = (0..100)
        .map(|u| IamUser {
            arn: format!("arn:aws:iam::{ACCOUNT}:user/u{u}"),
            name: format!("u{u}"),
            groups: vec![format!("g{}", u % 20)],
            attached_policies: vec![format!(
                "arn:aws:iam::{ACCOUNT}:policy/p{}",
                u * 29 % MANAGED
            )],
            ..Default::default()
        })
        .collect();
    IamInventory {
        account_id: ACCOUNT.into(),
        users,
        groups,
        roles,
        policies,
    }
}

struct Key {
    arn: String,
    policy: String,
    grants: Vec<GrantInput>,
}

/// Delegating keys with the default administrator and user statements and a grant.
fn keys(n: usize) -> Vec<Key> {
    (0..n)
        .map(|k| Key {
            arn: format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{k:04}abcd-12ab-34cd-56ef-1234567890ab"),
            policy: format!(
                r#"{{"Version":"2012-10-17","Statement":[
                {{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
                {{"Sid":"Admins","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:role/service/role-{a}"}},"Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion","kms:CancelKeyDeletion"],"Resource":"*"}},
                {{"Sid":"Use","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:role/service/role-{u}"}},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"}},
                {{"Sid":"Grants","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:role/service/role-{u}"}},"Action":["kms:CreateGrant","kms:ListGrants","kms:RevokeGrant"],"Resource":"*","Condition":{{"Bool":{{"kms:GrantIsForAWSResource":"true"}}}}}}
                ]}}"#,
                a = k % ROLES,
                u = (k * 7 + 1) % ROLES
            ),
            grants: vec![GrantInput {
                grant_id: format!("grant-{k}"),
                grantee_principal: Some(format!("arn:aws:iam::{ACCOUNT}:role/service/role-{}", (k * 11) % ROLES)),
                operations: vec!["Decrypt".into(), "GenerateDataKey".into()],
            }],
        })
        .collect()
}

fn evaluate_all(index: &AccessIndex, keys: &[Key]) -> usize {
    keys.iter()
        .map(|k| {
            evaluate_access(&AccessInput {
                key_arn: &k.arn,
                account_id: ACCOUNT,
                key_policy: KeyPolicyInput::Text(&k.policy),
                index: Some(index),
                grants: &k.grants,
            })
            .expect("valid key policy")
            .principals
            .len()
        })
        .sum()
}

fn bench_account(c: &mut Criterion, name: &str, kms_every: usize, key_count: usize) {
    let inventory = account(kms_every);
    let keys = keys(key_count);
    let index = AccessIndex::new(&inventory);
    // Fail loudly rather than benchmark an empty table: every identity has a row.
    let rows = evaluate_all(&index, &keys);
    assert!(rows >= key_count * ROLES, "{rows} rows");

    let mut group = c.benchmark_group(format!("access_{name}_2000_roles_5000_policies"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("index", |b| {
        b.iter(|| AccessIndex::new(black_box(&inventory)))
    });
    group.bench_function(format!("evaluate_{key_count}_keys"), |b| {
        b.iter(|| evaluate_all(black_box(&index), black_box(&keys)))
    });
    group.finish();
}

fn bench_access(c: &mut Criterion) {
    bench_account(c, "typical", 100, KEYS);
    bench_account(c, "kms_heavy", 20, 20);
}

criterion_group!(benches, bench_access);
criterion_main!(benches);
