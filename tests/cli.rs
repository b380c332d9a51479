//! The `keyward` binary end to end: real process, temp files, exit codes, stdout and stderr.

use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

const ACCOUNT: &str = "111122223333";
const OTHER: &str = "444455556666";

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
fn keyward(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .output()
        .expect("run keyward");
    (
        status.code().expect("exit code"),
        String::from_utf8(stdout).expect("utf-8 stdout"),
        String::from_utf8(stderr).expect("utf-8 stderr"),
    )
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).expect("write temp file");
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn root(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// The root statement of the AWS default key policy: delegates the key to IAM.
fn delegating_root() -> Value {
    json!({
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": root(ACCOUNT)},
        "Action": "kms:*",
        "Resource": "*"
    })
}

fn pinned_root() -> Value {
    json!({
        "Sid": "EnableRootAccessAndPreventPermissionDelegation",
        "Effect": "Allow",
        "Principal": {"AWS": root(ACCOUNT)},
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:PrincipalType": "Account"}}
    })
}

fn admin_statement() -> Value {
    json!({
        "Sid": "Allow access for Key Administrators",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/KMSAdmin")},
        "Action": [
            "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
            "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
            "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
            "kms:CancelKeyDeletion"
        ],
        "Resource": "*"
    })
}

fn use_statement() -> Value {
    json!({
        "Sid": "Allow use of the key",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/App")},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
        "Resource": "*"
    })
}

fn grant_statement() -> Value {
    json!({
        "Sid": "Allow attachment of persistent resources",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/App")},
        "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
        "Resource": "*",
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    })
}

fn partner_statement() -> Value {
    json!({
        "Sid": "Allow the partner account to decrypt",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{OTHER}:role/Reader")},
        "Action": "kms:Decrypt",
        "Resource": "*"
    })
}

fn policy(statements: &[Value]) -> String {
    serde_json::to_string_pretty(&json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": statements
    }))
    .expect("serialize")
}

/// What `aws kms create-key` gives a key when no policy is passed: only the root statement.
fn aws_default_policy() -> String {
    policy(&[delegating_root()])
}

fn clean_policy() -> String {
    policy(&[
        pinned_root(),
        admin_statement(),
        use_statement(),
        grant_statement(),
    ])
}

#[test]
fn clean_policy_exits_0() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(&dir, "clean.json", &clean_policy());
    let (code, out, err) = keyward(&["check", "--policy", s(&file), "--format", "json"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(json(&out), json!({"findings": []}));

    let (code, out, _) = keyward(&["check", "--policy", s(&file)]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("no findings in {}\n", s(&file)));
}

#[test]
fn findings_exit_1_with_the_exact_json_shape() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(&dir, "default.json", &aws_default_policy());
    let (code, out, err) = keyward(&["check", "--policy", s(&file), "--format", "json"]);
    assert_eq!(code, 1, "stderr: {err}");
    let doc = json(&out);
    let findings = doc["findings"].as_array().expect("findings array");
    assert_eq!(doc.as_object().map(|o| o.len()), Some(1));
    assert_eq!(findings.len(), 2, "{out}");
    for f in findings {
        let keys: Vec<&str> = f
            .as_object()
            .expect("finding object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["rule_id", "severity", "statement_index", "sid", "message"]
        );
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(findings[0]["rule_id"], "KMS-DELEGATION");
    assert_eq!(findings[0]["severity"], "high");
    assert_eq!(findings[0]["statement_index"], 0);
    assert_eq!(findings[0]["sid"], "Enable IAM User Permissions");
    assert_eq!(findings[1]["rule_id"], "KMS-NO-ADMIN");
    assert_eq!(findings[1]["severity"], "medium");
    assert_eq!(findings[1]["statement_index"], Value::Null);
    assert_eq!(findings[1]["sid"], Value::Null);
}

#[test]
fn text_format_prints_one_line_per_finding_and_a_summary() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(&dir, "default.json", &aws_default_policy());
    let (code, out, _) = keyward(&["check", "--policy", s(&file)]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(
            "HIGH      KMS-DELEGATION         statement 0 (\"Enable IAM User Permissions\"): "
        ),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("aws:PrincipalType"), "{}", lines[0]);
    assert!(
        lines[1].starts_with("MEDIUM    KMS-NO-ADMIN           policy: "),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        format!("2 findings (1 high, 1 medium) in {}", s(&file))
    );
}

#[test]
fn an_invalid_policy_is_a_finding_and_needs_no_account() {
    let dir = TempDir::new().expect("tempdir");
    let broken = write(&dir, "broken.json", "{\"Statement\": [");
    let (code, out, err) = keyward(&["check", "--policy", s(&broken), "--format", "json"]);
    assert_eq!(code, 1, "stderr: {err}");
    let doc = json(&out);
    assert_eq!(doc["findings"].as_array().map(Vec::len), Some(1));
    assert_eq!(doc["findings"][0]["rule_id"], "KMS-INVALID");

    let not_policy = write(&dir, "array.json", "[]");
    let (code, out, _) = keyward(&["check", "--policy", s(&not_policy)]);
    assert_eq!(code, 1);
    assert!(out.starts_with("HIGH      KMS-INVALID"), "{out}");
}

#[test]
fn account_is_inferred_from_a_single_root_account() {
    let dir = TempDir::new().expect("tempdir");
    // Any partition, and the account named twice is still one account.
    let text = policy(&[
        json!({"Effect": "Allow", "Principal": {"AWS": [format!("arn:aws-us-gov:iam::{ACCOUNT}:root")]},
               "Action": "kms:Describe*", "Resource": "*"}),
        delegating_root(),
    ]);
    let file = write(&dir, "one.json", &text);
    let (code, out, err) = keyward(&["check", "--policy", s(&file), "--format", "json"]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(
        out.contains(&format!("account principal of {ACCOUNT}")),
        "{out}"
    );
}

#[test]
fn two_root_accounts_need_an_explicit_account() {
    let dir = TempDir::new().expect("tempdir");
    let text = policy(&[
        delegating_root(),
        json!({"Effect": "Deny", "NotPrincipal": {"AWS": root(OTHER)}, "Action": "kms:*", "Resource": "*"}),
    ]);
    let file = write(&dir, "two.json", &text);
    let (code, out, err) = keyward(&["check", "--policy", s(&file)]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(s(&file)), "{err}");
    assert!(err.contains(ACCOUNT) && err.contains(OTHER), "{err}");
    assert!(err.contains("--account"), "{err}");

    let (code, _, err) = keyward(&["check", "--policy", s(&file), "--account", ACCOUNT]);
    assert_eq!(code, 1, "stderr: {err}");
}

#[test]
fn no_root_account_needs_an_explicit_account() {
    let dir = TempDir::new().expect("tempdir");
    let text = policy(&[admin_statement()]);
    let file = write(&dir, "none.json", &text);
    let (code, out, err) = keyward(&["check", "--policy", s(&file)]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(s(&file)) && err.contains("--account"), "{err}");

    let (code, _, err) = keyward(&["check", "--policy", s(&file), "--account", ACCOUNT]);
    assert_eq!(code, 0, "stderr: {err}");
}

#[test]
fn account_ids_must_be_12_digits() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(&dir, "clean.json", &clean_policy());
    for bad in [
        ["--account", "1234"],
        ["--account", "11112222333x"],
        ["--trusted-account", "partner"],
    ] {
        let (code, out, err) = keyward(&["check", "--policy", s(&file), bad[0], bad[1]]);
        assert_eq!(code, 2, "{bad:?}");
        assert!(out.is_empty());
        assert!(err.contains("12 digits"), "{err}");
    }
}

#[test]
fn aws_managed_keys_are_not_reported() {
    let dir = TempDir::new().expect("tempdir");
    let public = policy(&[
        json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"}),
        delegating_root(),
    ]);
    let file = write(&dir, "public.json", &public);
    let (code, out, _) = keyward(&["check", "--policy", s(&file), "--format", "json"]);
    assert_eq!(code, 1);
    assert!(out.contains("KMS-PUBLIC"), "{out}");

    for manager in ["AWS", "aws"] {
        let (code, out, err) = keyward(&[
            "check",
            "--policy",
            s(&file),
            "--key-manager",
            manager,
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "stderr: {err}");
        assert_eq!(json(&out), json!({"findings": []}));
    }

    // An AWS-managed policy is not judged, so it needs no account either.
    let no_root = write(
        &dir,
        "ebs.json",
        &policy(&[json!({
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT}}
        })]),
    );
    let (code, _, err) = keyward(&["check", "--policy", s(&no_root), "--key-manager", "AWS"]);
    assert_eq!(code, 0, "stderr: {err}");

    let (code, _, err) = keyward(&["check", "--policy", s(&file), "--key-manager", "OTHER"]);
    assert_eq!(code, 2);
    assert!(err.contains("CUSTOMER or AWS"), "{err}");
}

#[test]
fn trusted_accounts_are_not_cross_account_findings() {
    let dir = TempDir::new().expect("tempdir");
    let text = policy(&[pinned_root(), admin_statement(), partner_statement()]);
    let file = write(&dir, "partner.json", &text);
    let (code, out, _) = keyward(&["check", "--policy", s(&file), "--format", "json"]);
    assert_eq!(code, 1);
    let doc = json(&out);
    assert_eq!(doc["findings"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(doc["findings"][0]["rule_id"], "KMS-CROSS-ACCOUNT");
    assert_eq!(doc["findings"][0]["statement_index"], 2);

    let (code, out, err) = keyward(&[
        "check",
        "--policy",
        s(&file),
        "--trusted-account",
        "999999999999",
        "--trusted-account",
        OTHER,
    ]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
}

#[test]
fn directory_mode_reports_every_json_file_and_keeps_going() {
    let dir = TempDir::new().expect("tempdir");
    write(&dir, "a-clean.json", &clean_policy());
    write(&dir, "b-broken.json", "not json at all");
    write(
        &dir,
        "c-ambiguous.json",
        &policy(&[
            delegating_root(),
            json!({"Effect": "Allow", "Principal": {"AWS": root(OTHER)}, "Action": "kms:Decrypt", "Resource": "*"}),
        ]),
    );
    // A directory with a .json name cannot be read as a file.
    fs::create_dir(dir.path().join("d-unreadable.json")).expect("mkdir");
    write(&dir, "e-default.json", &aws_default_policy());
    write(&dir, "notes.txt", "ignored");
    fs::create_dir(dir.path().join("nested")).expect("mkdir");
    write(&dir, "nested/deeper.json", "ignored: not recursive");

    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (code, out, err) = keyward(&["check", "--policy", s(dir.path()), "--format", "json"]);
    assert_eq!(code, 2, "stdout: {out}");
    let doc = json(&out);
    let files = doc["files"].as_array().expect("files array");
    let paths: Vec<&str> = files.iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(
        paths,
        [
            p("a-clean.json"),
            p("b-broken.json"),
            p("c-ambiguous.json"),
            p("d-unreadable.json"),
            p("e-default.json")
        ]
    );
    assert_eq!(files[0], json!({"path": p("a-clean.json"), "findings": []}));
    assert_eq!(files[1]["findings"][0]["rule_id"], "KMS-INVALID");
    assert_eq!(files[1]["findings"].as_array().map(Vec::len), Some(1));
    for (i, must_name) in [(2, OTHER), (3, "cannot read")] {
        let error = files[i]["error"].as_str().expect("error string");
        assert!(error.contains(must_name), "{error}");
        assert_eq!(files[i]["findings"], Value::Null, "{}", files[i]);
        assert!(files[i].get("findings").is_some(), "{}", files[i]);
    }
    assert_eq!(files[4]["findings"][0]["rule_id"], "KMS-DELEGATION");
    assert!(err.contains(&p("c-ambiguous.json")), "{err}");
    assert!(err.contains(&p("d-unreadable.json")), "{err}");

    let (code, out, _) = keyward(&["check", "--policy", s(dir.path())]);
    assert_eq!(code, 2);
    assert!(
        out.contains(&format!("no findings in {}\n", p("a-clean.json"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("1 finding (1 high) in {}\n", p("b-broken.json"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("could not check {}\n", p("c-ambiguous.json"))),
        "{out}"
    );
    let last = out.lines().last().expect("total line");
    assert_eq!(
        last,
        format!(
            "total: 3 findings (2 high, 1 medium) in 3 files in {}; 2 files could not be checked",
            s(dir.path())
        )
    );
}

#[test]
fn directory_mode_exits_1_on_findings_and_0_when_clean() {
    let dir = TempDir::new().expect("tempdir");
    write(&dir, "clean.json", &clean_policy());
    let (code, out, _) = keyward(&["check", "--policy", s(dir.path()), "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    write(&dir, "default.json", &aws_default_policy());
    let (code, out, err) = keyward(&["check", "--policy", s(dir.path())]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.is_empty(), "{err}");

    let empty = TempDir::new().expect("tempdir");
    let (code, _, err) = keyward(&["check", "--policy", s(empty.path())]);
    assert_eq!(code, 2);
    assert!(err.contains("no *.json files"), "{err}");
}

#[test]
fn missing_file_exits_2() {
    let dir = TempDir::new().expect("tempdir");
    let missing = dir.path().join("missing.json");
    let (code, out, err) = keyward(&["check", "--policy", s(&missing)]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("cannot read") && err.contains(s(&missing)),
        "{err}"
    );

    let (code, out, err) = keyward(&["fix", "--policy", s(&missing), "--account", ACCOUNT]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["check", "--bogus"][..],
        &["check"],
        &["check", "--policy", "x.json", "--format", "yaml"],
        &["fix", "--policy", "x.json"],
        &["serve"],
        &[],
    ] {
        let (code, out, err) = keyward(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(!err.is_empty(), "{args:?}");
    }
    let (code, out, _) = keyward(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("check") && out.contains("fix"), "{out}");
}

#[test]
fn fix_pins_the_root_statement_and_keeps_every_other_statement() {
    let dir = TempDir::new().expect("tempdir");
    let original = policy(&[delegating_root(), use_statement(), grant_statement()]);
    let file = write(&dir, "default.json", &original);
    let admin = format!("arn:aws:iam::{ACCOUNT}:role/KMSAdmin");
    let (code, out, err) = keyward(&[
        "fix",
        "--policy",
        s(&file),
        "--account",
        ACCOUNT,
        "--admin",
        &admin,
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    let fixed = json(&out);
    let statements = fixed["Statement"].as_array().expect("statements");

    let pinned: Vec<&Value> = statements
        .iter()
        .filter(|st| st["Sid"] == "EnableRootAccessAndPreventPermissionDelegation")
        .collect();
    assert_eq!(pinned.len(), 1, "{out}");
    assert_eq!(pinned[0]["Principal"], json!({"AWS": root(ACCOUNT)}));
    assert_eq!(pinned[0]["Action"], "kms:*");
    assert_eq!(
        pinned[0]["Condition"],
        json!({"StringEquals": {"aws:PrincipalType": "Account"}})
    );
    // Every statement that was not the root one is there, unchanged and in order.
    let kept: Vec<&Value> = statements
        .iter()
        .filter(|st| *st == &use_statement() || *st == &grant_statement())
        .collect();
    assert_eq!(kept, [&use_statement(), &grant_statement()]);
    // And the administrator is named.
    assert!(
        statements
            .iter()
            .any(|st| st["Principal"]["AWS"] == admin.as_str()
                && st["Action"].to_string().contains("kms:Put")),
        "{out}"
    );
    assert_eq!(fixed["Id"], "key-default-1");
    assert_eq!(fixed["Version"], "2012-10-17");

    // What changed goes to stderr, one "keyward: " line each.
    assert!(!err.is_empty());
    assert!(err.lines().all(|l| l.starts_with("keyward: ")), "{err}");
    assert!(
        err.contains("EnableRootAccessAndPreventPermissionDelegation"),
        "{err}"
    );

    // --diff adds a statement diff on stderr; stdout stays the same JSON.
    let (code, diff_out, diff_err) = keyward(&[
        "fix",
        "--policy",
        s(&file),
        "--account",
        ACCOUNT,
        "--admin",
        &admin,
        "--diff",
    ]);
    assert_eq!(code, 0);
    assert_eq!(diff_out, out);
    assert!(diff_err.starts_with(&err), "{diff_err}");
    assert!(
        diff_err.len() > err.len() && diff_err.contains("aws:PrincipalType"),
        "{diff_err}"
    );

    // The fixed policy passes the check.
    let fixed_file = write(&dir, "fixed.json", &out);
    let (code, out, err) = keyward(&["check", "--policy", s(&fixed_file)]);
    assert_eq!(code, 0, "{out} {err}");
}

#[test]
fn fix_prints_a_policy_that_needs_no_change_verbatim() {
    let dir = TempDir::new().expect("tempdir");
    // Compact, odd spacing, no trailing newline: printed byte for byte.
    let text = serde_json::to_string(&json!({
        "Version": "2012-10-17",
        "Statement": [pinned_root(), admin_statement()]
    }))
    .expect("serialize")
    .replace(",\"Effect\"", ",  \"Effect\"");
    let file = write(&dir, "fixed.json", &text);
    let (code, out, err) = keyward(&["fix", "--policy", s(&file), "--account", ACCOUNT]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, text);
}

#[test]
fn fix_refuses_when_nobody_would_administer_the_key() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(&dir, "default.json", &aws_default_policy());
    let (code, out, err) = keyward(&["fix", "--policy", s(&file), "--account", ACCOUNT]);
    assert_eq!(code, 3);
    assert!(out.is_empty(), "{out}");
    assert!(err.starts_with("keyward: refusing to fix"), "{err}");
    assert!(err.contains("--admin"), "{err}");

    // An administrator from another account is no help either.
    let foreign = format!("arn:aws:iam::{OTHER}:role/KMSAdmin");
    let (code, out, err) = keyward(&[
        "fix",
        "--policy",
        s(&file),
        "--account",
        ACCOUNT,
        "--admin",
        &foreign,
    ]);
    assert_eq!(code, 3);
    assert!(out.is_empty());
    assert!(err.contains(&foreign), "{err}");
}

#[test]
fn fix_refuses_an_invalid_policy() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(
        &dir,
        "invalid.json",
        r#"{"Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
    );
    let (code, out, err) = keyward(&["fix", "--policy", s(&file), "--account", ACCOUNT]);
    assert_eq!(code, 3);
    assert!(out.is_empty());
    assert!(
        err.contains("not valid") && err.contains("Principal"),
        "{err}"
    );

    let bad_account = keyward(&["fix", "--policy", s(&file), "--account", "abc"]);
    assert_eq!(bad_account.0, 2);
}

/// The issue's seed example through the binary: the AWS default policy with the key
/// administrators, fixed, is byte for byte the Knowledge Center result kept in
/// `examples/policies/fixed.json`, and that result passes the check.
#[test]
fn fix_seed_example_end_to_end() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let (code, out, err) = keyward(&[
        "fix",
        "--policy",
        s(&examples.join("default.json")),
        "--account",
        ACCOUNT,
    ]);
    assert_eq!(code, 0, "{err}");
    let expected = fs::read_to_string(examples.join("fixed.json")).expect("fixed.json");
    assert_eq!(out, expected);
    let fixed = json(&out);
    let root_statement = &fixed["Statement"][0];
    assert_eq!(
        root_statement["Sid"],
        "EnableRootAccessAndPreventPermissionDelegation"
    );
    assert_eq!(
        root_statement["Condition"]["StringEquals"]["aws:PrincipalType"],
        "Account"
    );
    let (code, out, err) = keyward(&["check", "--policy", s(&examples.join("fixed.json"))]);
    assert_eq!(code, 0, "{out} {err}");
}

/// `--caller` given as an assumed-role session keeps the *role* able to put the policy, and
/// `--auditor` keeps the five reads the sync needs.
#[test]
fn fix_keeps_the_auditor_and_the_caller_role() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(
        &dir,
        "default.json",
        &policy(&[delegating_root(), admin_statement()]),
    );
    let auditor = format!("arn:aws:iam::{ACCOUNT}:role/KeywardAudit");
    let caller_role = format!("arn:aws:iam::{ACCOUNT}:role/KeywardApply");
    let session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/KeywardApply/keyward-1");
    let (code, out, err) = keyward(&[
        "fix",
        "--policy",
        s(&file),
        "--account",
        ACCOUNT,
        "--auditor",
        &auditor,
        "--caller",
        &session,
    ]);
    assert_eq!(code, 0, "{err}");
    let fixed = json(&out);
    let statements = fixed["Statement"].as_array().expect("statements");
    let actions_of = |principal: &str| -> Vec<String> {
        statements
            .iter()
            .filter(|st| st["Principal"]["AWS"] == principal)
            .flat_map(|st| match &st["Action"] {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                Value::String(one) => vec![one.clone()],
                _ => Vec::new(),
            })
            .collect()
    };
    let audit = actions_of(&auditor);
    for action in [
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
        "kms:GetKeyRotationStatus",
        "kms:ListResourceTags",
        "kms:ListGrants",
    ] {
        assert!(audit.iter().any(|a| a == action), "{action} missing: {out}");
    }
    assert!(
        actions_of(&caller_role)
            .iter()
            .any(|a| a == "kms:PutKeyPolicy"),
        "{out}"
    );
    assert!(
        !out.contains("assumed-role"),
        "sessions are not principals: {out}"
    );
}

/// `--config` supplies what the account's configuration says: `trusted_accounts` for check,
/// `key_admins` and `auditor` for fix; flags still win.
#[test]
fn config_fills_in_the_accounts_settings() {
    let dir = TempDir::new().expect("tempdir");
    let admin = format!("arn:aws:iam::{ACCOUNT}:role/ConfiguredAdmin");
    let auditor = format!("arn:aws:iam::{ACCOUNT}:role/ConfiguredAudit");
    let config = write(
        &dir,
        "keyward.toml",
        &format!(
            r#"database_url = "sqlite://unused.db"
[[accounts]]
id = "{ACCOUNT}"
regions = ["us-east-1"]
key_admins = ["{admin}"]
auditor = "{auditor}"
trusted_accounts = ["{OTHER}"]
"#
        ),
    );
    let shared = write(
        &dir,
        "shared.json",
        &policy(&[pinned_root(), admin_statement(), partner_statement()]),
    );
    let (code, out, _) = keyward(&["check", "--policy", s(&shared), "--format", "json"]);
    assert_eq!(code, 1);
    assert!(out.contains("KMS-CROSS-ACCOUNT"), "{out}");
    let (code, out, err) = keyward(&[
        "check",
        "--policy",
        s(&shared),
        "--config",
        s(&config),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out} {err}");

    let default = write(&dir, "default.json", &policy(&[delegating_root()]));
    let (code, _, err) = keyward(&["fix", "--policy", s(&default), "--account", ACCOUNT]);
    assert_eq!(code, 3, "without administrators the fix is refused: {err}");
    let (code, out, err) = keyward(&[
        "fix",
        "--policy",
        s(&default),
        "--account",
        ACCOUNT,
        "--config",
        s(&config),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&admin) && out.contains(&auditor), "{out}");
    let flag_admin = format!("arn:aws:iam::{ACCOUNT}:role/FlagAdmin");
    let (code, out, _) = keyward(&[
        "fix",
        "--policy",
        s(&default),
        "--account",
        ACCOUNT,
        "--config",
        s(&config),
        "--admin",
        &flag_admin,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains(&flag_admin) && !out.contains(&admin), "{out}");

    let broken = write(&dir, "broken.toml", "[sync]\ninterval = \"soon\"\n");
    let (code, _, err) = keyward(&["check", "--policy", s(&shared), "--config", s(&broken)]);
    assert_eq!(code, 2);
    assert!(err.contains("interval"), "{err}");
}
