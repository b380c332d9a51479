//! The online commands through the real binary: `sync --once`, `export`, `migrate` and `serve`,
//! against moto on loopback and a SQLite file.

#[path = "support/moto.rs"]
mod moto;

use moto::{Moto, default_policy, seed_key};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn keyward() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_LISTEN")
        .env_remove("KEYWARD_TOKEN")
        .env("RUST_LOG", "warn");
    c
}

fn write_config(dir: &Path, moto: &Moto, accounts: &[(&str, &str)], extra: &str) -> PathBuf {
    let mut text = format!(
        "database_url = \"sqlite://{}\"\nlisten = \"127.0.0.1:0\"\n{extra}\n[aws]\nendpoint_url = \"{}\"\n",
        dir.join("keyward.db").display(),
        moto.endpoint()
    );
    for (id, role_account) in accounts {
        text.push_str(&format!(
            "[[accounts]]\nid = \"{id}\"\nname = \"team-{id}\"\nrole_arn = \"{}\"\nregions = [\"us-east-1\"]\n",
            Moto::role_arn(role_account)
        ));
    }
    let path = dir.join("keyward.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run keyward")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_then_export_matches_aws() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "default").await;
    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&key.key_id)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &[(&account, &account)], "");

    let out = run(keyward().args(["migrate", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&config));
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{account} us-east-1: ok: 1 keys, 1 changed, 1 new policy versions"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 account·regions synced, 0 failed"),
        "{stdout}"
    );

    let out = run(keyward()
        .args(["export", "--format", "json", "--config"])
        .arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["arn"], key.arn.as_str());
    assert_eq!(keys[0]["aliases"], serde_json::json!(["alias/app"]));
    assert_eq!(keys[0]["key_manager"], "CUSTOMER");
    assert_eq!(keys[0]["compliant"], false);
    let rules: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        vec!["KMS-DELEGATION", "KMS-NO-ADMIN", "KMS-ROTATION-DISABLED"]
    );
    for field in [
        "key_arn",
        "account_id",
        "region",
        "severity",
        "status",
        "first_seen",
        "last_seen",
        "policy_sha256",
        "message",
    ] {
        assert!(doc["findings"][0].get(field).is_some(), "{field}");
    }
    assert!(doc["generated_at"].is_string());

    // --out writes the same document to a file
    let file = dir.path().join("export.json");
    let out = run(keyward()
        .args(["export", "--format", "json", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&file));
    assert!(out.status.success());
    let from_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(from_file["keys"], doc["keys"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_account_makes_sync_exit_1() {
    let moto = Moto::start();
    let good = moto.fresh_account();
    let other = moto.fresh_account();
    let dir = tempfile::tempdir().unwrap();
    // the second account's role is in the first account: its credentials reach the wrong account
    let config = write_config(dir.path(), moto, &[(&good, &good), (&other, &good)], "");
    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&config));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{other} us-east-1: FAILED")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{good} us-east-1: ok")),
        "{stdout}"
    );
    // --account limits the pass to one account
    let out = run(keyward()
        .args(["sync", "--once", "--account", &good, "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn invalid_configuration_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.toml");
    std::fs::write(&path, "[sync]\ninterval = \"often\"\n").unwrap();
    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("interval"),
        "{}",
        text(&out.stderr)
    );
    let out = run(keyward().args(["migrate", "--config", "/nonexistent/keyward.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not exist"));
    let out = run(keyward().args(["sync", "--account", "111122223333"]));
    assert_eq!(out.status.code(), Some(2), "--account needs --once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_ready_and_metrics_then_stops_on_sigterm() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    seed_key(&kms, &default_policy(&account), "default").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &[(&account, &account)], "");
    let out = run(keyward()
        .args([
            "token", "create", "--name", "jira", "--role", "operator", "--config",
        ])
        .arg(&config));
    let token = text(&out.stdout).trim().to_string();
    let mut child = keyward()
        .env("RUST_LOG", "keyward=debug,info")
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let base = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        if let Some(url) = line.trim().strip_prefix("keyward: listening on ") {
            break url.to_string();
        }
    };
    // keep draining stderr so the server never blocks on a full pipe
    std::thread::spawn(move || for _ in stderr.lines() {});
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // the first pass runs at start; readyz shows it once it finished
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let r: serde_json::Value = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["last_sync"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|run| run["status"] == "succeeded"))
        {
            break r;
        }
        assert!(Instant::now() < deadline, "no successful sync in time: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready["database"], "ok");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keyward_keys{compliant=\"false\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyward_open_findings{rule=\"KMS-DELEGATION\",severity=\"high\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyward_aws_calls_total{operation=\"GetKeyPolicy\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyward_sync_duration_seconds_count"),
        "{metrics}"
    );
    // the API: a ticketing system triggers a sync; it runs, and the audit log names the token
    let r = http
        .post(format!("{base}/api/v1/sync"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: serde_json::Value = http
            .get(format!("{base}/api/v1/sync/runs"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .count();
        if done >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the requested pass did not finish: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit: serde_json::Value = http
        .get(format!("{base}/api/v1/audit"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("jira", "sync.triggered")), "{actions:?}");
    let summary: serde_json::Value = http
        .get(format!("{base}/api/v1/summary"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["keys"], 1);
    assert_eq!(summary["delegation_findings"], 1);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "serve exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_accounts_the_default_credentials_account_is_synced() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &[], "");
    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&config));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{} us-east-1: ok", moto::DEFAULT_ACCOUNT)),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_once_listed_revoked_and_audited() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &[], "");
    let out = run(keyward()
        .args([
            "token", "create", "--name", "jira", "--role", "operator", "--config",
        ])
        .arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_string();
    assert!(secret.starts_with("kw_") && secret.len() == 67, "{secret}");
    assert!(text(&out.stderr).contains("shown only this once"));
    // names are unique
    let out = run(keyward()
        .args([
            "token", "create", "--name", "jira", "--role", "viewer", "--config",
        ])
        .arg(&config));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("exists already"));
    // roles are checked
    let out = run(keyward()
        .args([
            "token", "create", "--name", "x", "--role", "root", "--config",
        ])
        .arg(&config));
    assert_eq!(out.status.code(), Some(2));
    let out = run(keyward().args(["token", "list", "--config"]).arg(&config));
    let listing = text(&out.stdout);
    assert!(
        listing.contains("jira") && listing.contains("operator") && listing.contains("active"),
        "{listing}"
    );
    assert!(
        !listing.contains(&secret),
        "the secret is never shown again"
    );
    let out = run(keyward()
        .args(["token", "revoke", "jira", "--config"])
        .arg(&config));
    assert!(out.status.success());
    assert!(
        text(&run(keyward().args(["token", "list", "--config"]).arg(&config)).stdout)
            .contains("revoked")
    );
    let out = run(keyward()
        .args(["token", "revoke", "nobody", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(2));

    // both changes are in the audit log, and the chain verifies
    let out = run(keyward().args(["audit", "verify", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("intact: 2 entries"),
        "{}",
        text(&out.stdout)
    );
    // tampering is detected
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET target = 'someone-else' WHERE action = 'token.created'")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = run(keyward().args(["audit", "verify", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("BROKEN"),
        "{}",
        text(&out.stdout)
    );
}

/// Creates an API token through the CLI; returns its secret.
fn create_token(config: &Path, name: &str, role: &str) -> String {
    let out = run(keyward()
        .args([
            "token", "create", "--name", name, "--role", role, "--config",
        ])
        .arg(config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediation_cli_proposes_refuses_self_approval_lists_shows_and_serve_reconciles() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "remediate me").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &[(&account, &account)], "");
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str(&format!(
        "key_admins = [\"arn:aws:iam::{account}:role/KMSAdmin\"]\n"
    ));
    std::fs::write(&config, text_config).unwrap();
    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let carol = create_token(&config, "carol", "approver");
    let dave = create_token(&config, "dave", "approver");
    let val = create_token(&config, "val", "viewer");
    // $USER no longer matters: the token does.
    let as_token = |user: &str, token: &str, args: &[&str]| {
        run(keyward()
            .env("USER", user)
            .env("KEYWARD_TOKEN", token)
            .arg("remediation")
            .args(args)
            .arg("--config")
            .arg(&config))
    };
    let without_token = |args: &[&str]| {
        run(keyward()
            .arg("remediation")
            .args(args)
            .arg("--config")
            .arg(&config))
    };

    // Changing anything needs a token: none, or one the store does not know, is refused.
    let out = without_token(&["propose", "--key", &key.key_id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--token") && stderr.contains("KEYWARD_TOKEN"),
        "{stderr}"
    );
    let out = as_token(
        "carol",
        "kw_not-a-token",
        &["propose", "--key", &key.key_id],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("not valid"),
        "{}",
        text(&out.stderr)
    );
    // A viewer may not propose (operator role, as over the API).
    let out = as_token("val", &val, &["propose", "--key", &key.key_id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("\"val\" has role viewer") && stderr.contains("operator role"),
        "{stderr}"
    );

    let out = as_token(
        "carol",
        &carol,
        &["propose", "--key", &key.key_id, "--ticket", "SEC-9"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("pending_approval"), "{stdout}");
    assert!(stdout.contains("requester:  carol"), "{stdout}");
    assert!(stdout.contains("KMS-DELEGATION"), "{stdout}");
    let id: String = stdout
        .strip_prefix("remediation ")
        .and_then(|s| s.split(':').next())
        .expect("remediation id")
        .to_string();

    // The requester cannot approve their own proposal, whatever $USER says.
    let out = as_token("dave", &carol, &["approve", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("carol requested remediation") && stderr.contains("can never approve"),
        "{stderr}"
    );
    // Approving needs the approver role; a viewer token is refused before anything else.
    let out = as_token("dave", &val, &["approve", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("approver role"),
        "{}",
        text(&out.stderr)
    );

    // Reading needs no token.
    let out = without_token(&["list"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "{id}\tpending_approval\t{}\tcarol\tSEC-9",
            key.arn
        )),
        "{stdout}"
    );
    assert!(stdout.contains("1 remediations"), "{stdout}");

    // --token works as well as the environment variable.
    let out = without_token(&["approve", &id, "--comment", "ok", "--token", &dave]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = without_token(&["show", &id]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("remediation {id}: approved")),
        "{stdout}"
    );
    assert!(stdout.contains("approvals:  dave"), "{stdout}");
    let as_user = |user: &str, args: &[&str]| as_token(user, &dave, args);

    // The default mode is propose-only: apply is refused with the setting to change.
    let out = as_user("dave", &["apply", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("mode = \"apply\""),
        "{}",
        text(&out.stderr)
    );

    // A crash between the claim and the end of an apply leaves it `applying`; `keyward serve`
    // settles it at start-up, once the claim lease has passed, by reading the policy (still the
    // base here: back to approved).
    {
        let store = keyward::store::connect(&format!(
            "sqlite://{}",
            dir.path().join("keyward.db").display()
        ))
        .await
        .unwrap();
        let now = chrono::Utc::now() - chrono::TimeDelta::hours(1);
        let claimed = store
            .claim_remediation(
                id.parse().unwrap(),
                "crashed-process/1",
                now,
                &keyward::store::NewAuditEvent {
                    at: now,
                    actor: "dave".into(),
                    action: "remediation.applying".into(),
                    target: key.arn.clone(),
                    detail: "{}".into(),
                },
            )
            .await
            .unwrap()
            .expect("claimed");
        assert_eq!(claimed.state, "applying");
    }
    let mut child = keyward()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited early"
        );
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = as_user("dave", &["show", &id]);
        let stdout = text(&out.stdout);
        if stdout.contains(&format!("remediation {id}: approved")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reconciled in time: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = as_user("dave", &["show", "999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediation_cli_rejects_with_a_comment_and_applies_in_apply_mode() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let declined = seed_key(&kms, &default_policy(&account), "declined").await;
    let fixed = seed_key(&kms, &default_policy(&account), "fixed").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        moto,
        &[(&account, &account)],
        "[remediation]\nmode = \"apply\"",
    );
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str(&format!(
        "key_admins = [\"arn:aws:iam::{account}:role/KMSAdmin\"]\n"
    ));
    std::fs::write(&config, text_config).unwrap();
    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ops = create_token(&config, "ops", "operator");
    let erin = create_token(&config, "erin", "approver");
    let cli = |token: &str, args: &[&str]| {
        run(keyward()
            .env("KEYWARD_TOKEN", token)
            .arg("remediation")
            .args(args)
            .arg("--config")
            .arg(&config))
    };
    let propose = |key: &str| {
        let out = cli(&ops, &["propose", "--key", key]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        stdout
            .strip_prefix("remediation ")
            .and_then(|s| s.split(':').next())
            .expect("remediation id")
            .to_string()
    };

    // Reject, with the required comment, recorded with the approver's token name.
    let rejected = propose(&declined.key_id);
    // An operator may propose but not decide.
    let out = cli(&ops, &["reject", &rejected, "--comment", "no"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("approver role"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &erin,
        &[
            "reject",
            &rejected,
            "--comment",
            "the app team migrates first",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("remediation {rejected}: rejected")),
        "{stdout}"
    );
    let store = keyward::store::connect(&format!(
        "sqlite://{}",
        dir.path().join("keyward.db").display()
    ))
    .await
    .unwrap();
    let (audit, _) = store.list_audit(None, 100).await.unwrap();
    let rejection = audit
        .iter()
        .find(|a| a.action == "remediation.rejected")
        .expect("rejection audited");
    assert_eq!(rejection.actor, "erin");
    assert!(
        rejection.detail.contains("the app team migrates first"),
        "{}",
        rejection.detail
    );
    // Nothing was written to the declined key.
    let policy = |key_id: String| {
        let kms = kms.clone();
        async move {
            kms.get_key_policy()
                .key_id(key_id)
                .policy_name("default")
                .send()
                .await
                .unwrap()
                .policy()
                .unwrap()
                .to_string()
        }
    };
    assert!(keyward::remediation::same_policy(
        &policy(declined.key_id.clone()).await,
        &default_policy(&account)
    ));

    // Approve and apply through the CLI: the policy in AWS becomes the proposal.
    let applied = propose(&fixed.key_id);
    let out = cli(&erin, &["approve", &applied]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli(&erin, &["apply", &applied]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("remediation {applied}: applied")),
        "{stdout}"
    );
    let row = store
        .get_remediation(applied.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, "applied");
    let now = policy(fixed.key_id.clone()).await;
    assert!(
        keyward::remediation::same_policy(&now, &row.proposed_policy),
        "{now}"
    );
    assert!(!keyward::remediation::same_policy(
        &now,
        &default_policy(&account)
    ));
    // Applied once: a second apply is refused.
    let out = cli(&erin, &["apply", &applied]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
}

/// `AWS_ENDPOINT_URL` alone (no `[aws] endpoint_url`) sends every call to the emulator, as the
/// AWS SDKs do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_honours_aws_endpoint_url_without_a_configured_endpoint() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "default").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyward.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}\"\n[[accounts]]\nid = \"{account}\"\nrole_arn = \"{}\"\nregions = [\"us-east-1\"]\n",
            dir.path().join("keyward.db").display(),
            Moto::role_arn(&account)
        ),
    )
    .unwrap();
    assert!(
        !std::fs::read_to_string(&config)
            .unwrap()
            .contains("endpoint")
    );
    let out = run(keyward()
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env_remove("KEYWARD_AWS__ENDPOINT_URL")
        .args(["sync", "--once", "--config"])
        .arg(&config));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{account} us-east-1: ok: 1 keys, 1 changed")),
        "{stdout}"
    );
    let out = run(keyward()
        .args(["export", "--format", "json", "--config"])
        .arg(&config));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["keys"][0]["arn"], key.arn.as_str());
}

/// What the README's demo shows: scripts/demo_seed.py (as scripts/demo runs it, with the moto
/// venv's python) seeds the emulator, and `sync --once` with the demo configuration (endpoint
/// and database overridden through KEYWARD_* as scripts/demo and compose do) finds every key
/// with the findings each one was made to exercise. The seed writes only its own accounts
/// (111111111111, 222222222222) and never resets the emulator, so it can share the test moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_seed_syncs_with_the_demo_config() {
    let moto = Moto::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seed = Command::new(root.join(".venv/moto/bin/python"))
        .arg(root.join("scripts/demo_seed.py"))
        .args(["--endpoint", moto.endpoint()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("run demo_seed.py with the moto venv's python");
    assert!(
        seed.status.success(),
        "{}{}",
        text(&seed.stdout),
        text(&seed.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let demo = |cmd: &mut Command| -> Output {
        run(cmd
            .current_dir(root)
            .env("KEYWARD_AWS__ENDPOINT_URL", moto.endpoint())
            .env("KEYWARD_DATABASE_URL", &database)
            .arg("--config")
            .arg("examples/keyward.demo.toml"))
    };
    let out = demo(keyward().args(["sync", "--once"]));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("4 account·regions synced, 0 failed"),
        "{stdout}"
    );
    assert!(!stdout.contains("skipped"), "{stdout}");

    let out = demo(keyward().args(["export", "--format", "json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 11, "the seed's 11 keys");
    let mut rules: std::collections::BTreeMap<String, Vec<String>> = keys
        .iter()
        .map(|k| {
            let aliases = k["aliases"].as_array().unwrap();
            assert_eq!(aliases.len(), 1, "{k}");
            (aliases[0].as_str().unwrap().to_string(), Vec::new())
        })
        .collect();
    for f in doc["findings"].as_array().unwrap() {
        let key = keys
            .iter()
            .find(|k| k["arn"] == f["key_arn"])
            .expect("a finding of a listed key");
        rules
            .get_mut(key["aliases"][0].as_str().unwrap())
            .unwrap()
            .push(f["rule_id"].as_str().unwrap().to_string());
    }
    for found in rules.values_mut() {
        found.sort();
    }
    // The demo's account-wide decrypt role (IAM-KMS-DECRYPT-ALL-KEYS) reaches the keys whose
    // policy delegates to IAM; staging trusts the partner, prod does not.
    let expected: &[(&str, &[&str])] = &[
        ("alias/analytics-share", &["KMS-CROSS-ACCOUNT"]),
        ("alias/backups-eu", &[]),
        (
            "alias/legacy-reports",
            &[
                "IAM-KMS-DECRYPT-ALL-KEYS",
                "KMS-DELEGATION",
                "KMS-NO-ADMIN",
                "KMS-PENDING-DELETION",
            ],
        ),
        ("alias/orders", &[]),
        (
            "alias/payments",
            &[
                "IAM-KMS-DECRYPT-ALL-KEYS",
                "KMS-DELEGATION",
                "KMS-ROTATION-DISABLED",
            ],
        ),
        ("alias/public-downloads", &["KMS-PUBLIC"]),
        ("alias/release-signing", &[]),
        (
            "alias/staging-app",
            &[
                "IAM-KMS-DECRYPT-ALL-KEYS",
                "KMS-DELEGATION",
                "KMS-NO-ADMIN",
                "KMS-ROTATION-DISABLED",
            ],
        ),
        ("alias/staging-ci", &[]),
        (
            "alias/staging-old",
            &[
                "IAM-KMS-DECRYPT-ALL-KEYS",
                "KMS-DELEGATION",
                "KMS-PENDING-DELETION",
            ],
        ),
        ("alias/staging-partner-share", &[]),
    ];
    let expected: std::collections::BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(alias, rules)| {
            (
                alias.to_string(),
                rules.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(rules, expected);
}

/// Ctrl-C during `sync --once`: the pass is abandoned, its lease released and the process
/// exits non-zero; the next `sync --once` (a new replica id) syncs at once instead of reporting
/// the region skipped until the lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_sync_once_releases_its_lease() {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    seed_key(&kms, &default_policy(&account), "default").await;
    // An endpoint that accepts connections and never answers: the pass hangs after its claim.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_url = format!("http://{}", hanging.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hanging.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &[(&account, &account)], "");
    let out = run(keyward().args(["migrate", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut child = keyward()
        .env("KEYWARD_AWS__ENDPOINT_URL", &hanging_url)
        .args(["sync", "--once", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let db = format!("sqlite://{}", dir.path().join("keyward.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let holder = || lease_holder(&pool, &account);
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder().await.is_none() {
        assert!(Instant::now() < deadline, "sync --once never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sync --once ignored Ctrl-C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("abandoned"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(holder().await, None, "the lease was released");

    let out = run(keyward().args(["sync", "--once", "--config"]).arg(&config));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{account} us-east-1: ok: 1 keys")),
        "{stdout}"
    );
}

async fn lease_holder(pool: &sqlx::SqlitePool, account: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>("SELECT owner FROM sync_leases WHERE account_id = $1")
        .bind(account)
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}
