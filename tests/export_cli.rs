//! `keyward export` through the real binary, on a SQLite file seeded through the library.

use chrono::{TimeZone, Utc};
use keyward::store::{self, AccountRow, KeyRecord, KeyUpdate, NewFinding, PolicyState, RegionSync};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ACCOUNT: &str = "111122223333";
const DELEGATING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
const FIXED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}}]}"#;

fn keyward() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_LISTEN")
        .env("RUST_LOG", "warn");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn key(id: &str, aliases: &[&str]) -> KeyRecord {
    KeyRecord {
        arn: format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{id}"),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        key_id: id.into(),
        description: String::new(),
        key_manager: "CUSTOMER".into(),
        key_state: "Enabled".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        origin: "AWS_KMS".into(),
        multi_region: false,
        creation_date: None,
        deletion_date: None,
        rotation_enabled: Some(true),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        tags: Default::default(),
        grants: Vec::new(),
        metadata: Default::default(),
    }
}

fn update(key: KeyRecord, text: &str, findings: Vec<NewFinding>) -> KeyUpdate {
    KeyUpdate {
        fingerprint: format!("fp-{}", key.key_id),
        policy: PolicyState::Readable {
            sha256: keyward::sync::sha256_hex(text),
            text: text.into(),
        },
        evaluation: "rules-v1;trusted=".into(),
        findings,
        remediable: true,
        key,
    }
}

fn finding(rule: &str, severity: &str, message: &str) -> NewFinding {
    NewFinding {
        rule_id: rule.into(),
        locator: "statement:0".into(),
        severity: severity.into(),
        statement_index: Some(0),
        sid: None,
        message: message.into(),
    }
}

/// A SQLite file with one account, a key with one open and one resolved finding, a clean key;
/// and a configuration naming it.
async fn seed(dir: &Path) -> PathBuf {
    let db = dir.join("keyward.db");
    let store = store::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store
        .upsert_accounts(&[AccountRow {
            id: ACCOUNT.into(),
            name: "payments".into(),
            regions: vec!["us-east-1".into()],
        }])
        .await
        .unwrap();
    for (at, policy, findings) in [
        (
            0,
            DELEGATING,
            vec![
                finding("KMS-DELEGATION", "high", "delegates to IAM"),
                finding(
                    "KMS-WILDCARD-ACTION",
                    "medium",
                    "-kms:* for everyone, almost",
                ),
            ],
        ),
        (
            60,
            FIXED,
            vec![finding(
                "KMS-WILDCARD-ACTION",
                "medium",
                "-kms:* for everyone, almost",
            )],
        ),
    ] {
        let updates = vec![
            update(key("k-1", &["alias/app"]), policy, findings),
            update(key("k-2", &[]), FIXED, vec![]),
        ];
        store
            .apply_region_sync(&RegionSync {
                account_id: ACCOUNT.into(),
                region: "us-east-1".into(),
                now: Utc.timestamp_opt(1_780_000_000 + at, 0).unwrap(),
                listed: updates.iter().map(|u| u.key.arn.clone()).collect(),
                listing_complete: true,
                updates,
                unread: Vec::new(),
            })
            .await
            .unwrap();
    }
    let config = dir.join("keyward.toml");
    std::fs::write(
        &config,
        format!("database_url = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    config
}

fn export(config: &Path, args: &[&str]) -> Output {
    keyward()
        .arg("export")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run keyward")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed(dir.path()).await;

    // CSV on stdout: header and one CRLF-terminated row per open finding, formulas neutralised
    let out = export(&config, &["--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 2, "{csv:?}");
    assert!(lines[0].starts_with("key_arn,account_id,account_name,region,aliases,rule_id,"));
    assert!(lines[1].contains(",payments,us-east-1,alias/app,KMS-WILDCARD-ACTION,medium,open,"));
    assert!(
        lines[1].ends_with(",\"'-kms:* for everyone, almost\""),
        "{}",
        lines[1]
    );

    let out = export(&config, &["--format", "csv", "--include-resolved"]);
    assert!(out.status.success());
    let csv = text(&out.stdout);
    assert_eq!(csv.matches("\r\n").count(), 3);
    assert!(csv.contains(",KMS-DELEGATION,high,resolved,"));

    // JSON stays the default, with the summary
    let out = export(&config, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
    assert_eq!(doc["findings"].as_array().unwrap().len(), 1);
    assert_eq!(doc["summary"]["keys_compliant"], 1);
    assert_eq!(doc["summary"]["compliance_percent"], 50.0);

    // OCSF and HTML to files, written whole or not at all
    let ocsf = dir.path().join("findings.ocsf.json");
    let out = export(
        &config,
        &[
            "--format",
            "ocsf",
            "--include-resolved",
            "--out",
            ocsf.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let events: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&ocsf).unwrap()).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["class_uid"] == 2003));

    let html = dir.path().join("report.html");
    let out = export(
        &config,
        &["--format", "html", "--out", html.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("@media print"));
    assert!(page.contains("alias/app"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_refuses_bad_usage_and_unwritable_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = seed(dir.path()).await;
    let out = export(&config, &["--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("csv"), "{}", text(&out.stderr));

    let missing = dir.path().join("no-such-dir").join("report.csv");
    let out = export(
        &config,
        &["--format", "csv", "--out", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot write"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists());
}
