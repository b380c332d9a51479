//! The dashboard in real headless Chromium, end to end: the built `keyward serve` on port 0
//! against moto and a SQLite file; an operator signs in, finds a key that delegates to IAM,
//! proposes the fix; an approver approves and applies it; the key becomes compliant, in the
//! dashboard and in (emulated) AWS. Screenshots of each page go to `target/screenshots/`.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/moto.rs"]
mod moto;

use browser::Browser;
use moto::{Moto, default_policy, seed_key};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REGION: &str = "us-east-1";
const ALIAS: &str = "alias/payments-ledger";

/// `keyward` with the AWS environment of the tests (dummy credentials, no profiles, no IMDS).
fn keyward() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("KEYWARD_DATABASE_URL")
        .env_remove("KEYWARD_LISTEN")
        .env("RUST_LOG", "warn");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run keyward");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A `keyward.toml` as an operator would write it: one account of moto, remediation applying.
fn write_config(dir: &Path, moto: &Moto, account: &str) -> PathBuf {
    let config = format!(
        r#"database_url = "sqlite://{db}"
listen = "127.0.0.1:0"

[aws]
endpoint_url = "{endpoint}"

[sync]
interval = "1h"

[remediation]
mode = "apply"
required_approvals = 1

[[accounts]]
id = "{account}"
name = "payments-prod"
role_arn = "{role}"
regions = ["{REGION}"]
key_admins = ["arn:aws:iam::{account}:role/KMSAdmin"]
"#,
        db = dir.join("keyward.db").display(),
        endpoint = moto.endpoint(),
        role = Moto::role_arn(account),
    );
    let path = dir.join("keyward.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `keyward serve` as a child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(config: &Path) -> Server {
        let mut child = keyward()
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyward serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut seen = String::new();
        let base = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait().ok();
                panic!("keyward serve exited ({status:?}) before listening:\n{seen}");
            }
            seen.push_str(&line);
            if let Some(url) = line.trim().strip_prefix("keyward: listening on ") {
                break url.to_string();
            }
        };
        // Keep draining stderr (echoed for failures) so the server never blocks on the pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[keyward serve] {line}");
            }
        });
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in on the login page the browser shows now, and waits for the signed-in layout.
async fn sign_in(b: &Browser, who: &str, token: &str) {
    b.fill("API token", token).await;
    b.click("Sign in").await;
    b.wait_css(".who .actor").await;
    b.wait_css_text(".who .actor", who).await;
}

async fn sign_out(b: &Browser, server: &Server) {
    b.click("Sign out").await;
    b.wait_path("/login").await;
    // Signed out means signed out: the overview sends us back to the login page.
    b.goto(&server.url("/")).await;
    b.wait_path("/login").await;
    b.field("API token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_proposes_approver_applies_and_the_key_becomes_compliant() {
    let started = Instant::now();
    let Some(b) = Browser::start().await else {
        return;
    };

    // AWS: a fresh account with one key on AWS's default key policy (delegating to IAM),
    // rotation on so that delegation and the missing administrator are its only findings.
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, REGION).await;
    let key = seed_key(&kms, &default_policy(&account), "ledger encryption").await;
    kms.create_alias()
        .alias_name(ALIAS)
        .target_key_id(&key.key_id)
        .send()
        .await
        .expect("CreateAlias");
    kms.enable_key_rotation()
        .key_id(&key.key_id)
        .send()
        .await
        .expect("EnableKeyRotation");

    // Keyward, set up as the README tells a new user: tokens, a first sync, then serve.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), moto, &account);
    let token = |name: &str, role: &str| {
        let out = run_ok(
            keyward()
                .args([
                    "token", "create", "--name", name, "--role", role, "--config",
                ])
                .arg(&config),
        );
        text(&out.stdout).trim().to_string()
    };
    let alice = token("alice", "operator");
    let bob = token("bob", "approver");
    let out = run_ok(keyward().args(["sync", "--once", "--config"]).arg(&config));
    assert!(
        text(&out.stdout).contains(&format!("{account} {REGION}: ok: 1 keys")),
        "{}",
        text(&out.stdout)
    );
    let server = Server::start(&config);

    // alice (operator) signs in.
    b.goto(&server.url("/login")).await;
    b.wait_text("Sign in").await;
    b.screenshot("01-login").await;
    sign_in(&b, "alice", &alice).await;

    // The overview puts IAM delegation front and centre: one key of one delegates.
    b.goto(&server.url("/")).await;
    b.wait_text("keys delegate to IAM").await;
    b.wait_css_text("#delegating-keys", "1").await;
    b.wait_css_text("#compliance", "0%").await;
    b.screenshot("02-overview").await;

    // Keys: filter through the form; the filter lands in the URL so the view can be shared.
    b.click("Keys").await;
    b.wait_path("/keys").await;
    b.fill("Search", "payments-ledger").await;
    b.select("Compliant", "no").await;
    b.click("Filter").await;
    let url = b.wait_path("/keys?").await;
    assert!(url.contains("q=payments-ledger"), "{url}");
    assert!(url.contains("compliant=false"), "{url}");
    b.wait_text("Keys 1–1 of 1").await;
    b.wait_text(ALIAS).await;
    b.screenshot("03-keys").await;

    // The key: KMS-DELEGATION explained with the catalogue's rationale and fix, and the
    // offending statement of the current policy marked.
    b.click(&key.key_id).await;
    b.wait_path("/keys/").await;
    b.wait_text(&key.arn).await;
    b.wait_text("KMS-DELEGATION").await;
    b.wait_text("Key policy delegates the key to IAM").await;
    b.wait_text("lets every IAM policy in the account grant this key")
        .await;
    b.wait_text("EnableRootAccessAndPreventPermissionDelegation")
        .await;
    b.wait_css(".stmt.offending").await;
    b.wait_text("Enable IAM User Permissions").await;
    b.screenshot("04-key-detail").await;

    // Its Access tab: the key delegates to IAM; the account root holds every action.
    b.click("Access: who can use this key").await;
    b.wait_path("/keys/").await;
    b.wait_text("The key policy lets IAM policies of account")
        .await;
    b.wait_text("Service control policies (SCPs) are out of scope.")
        .await;
    b.wait_text(&format!("arn:aws:iam::{account}:root")).await;
    b.screenshot("04b-key-access").await;
    b.goto(&server.url(&format!("/keys/{}", key.key_id))).await;
    b.wait_text("Propose fix").await;

    // Propose fix: the proposed policy and its diff before anything is submitted.
    b.click("Propose fix").await;
    b.wait_text("Propose a fix").await;
    b.wait_css("pre.diff").await;
    b.wait_text("Resolves: KMS-DELEGATION").await;
    b.click("Proposed policy").await;
    b.wait_text("\"aws:PrincipalType\": \"Account\"").await;
    b.wait_text(&format!("arn:aws:iam::{account}:role/KMSAdmin"))
        .await;
    let changes = b
        .wait_xpath("//h2[normalize-space(.)='Changes']", "the changes")
        .await;
    b.screenshot_at("05-proposal", &changes).await;
    b.fill("Ticket", "SEC-42").await;
    b.click("Submit proposal for approval").await;
    let remediation_url = b.wait_path("/remediations/").await;
    b.wait_css_text("#state", "pending_approval").await;
    b.wait_text("SEC-42").await;
    let page = b.body_text().await;
    assert!(page.contains("alice"), "the requester is shown:\n{page}");
    // The requester can never approve: no Approve button for alice on her own proposal.
    assert!(
        !b.has_control("Approve").await,
        "alice sees Approve on her own remediation:\n{page}"
    );
    b.screenshot("06-remediation-pending").await;
    sign_out(&b, &server).await;

    // bob (approver) follows the link to the remediation, signs in on the way, approves and
    // applies (htmx updates the status in place; Apply asks for confirmation first).
    b.goto(&remediation_url).await;
    b.wait_path("/login").await;
    sign_in(&b, "bob", &bob).await;
    b.wait_path("/remediations/").await;
    b.wait_css_text("#state", "pending_approval").await;
    b.fill("Approval comment", "checked with the ledger team")
        .await;
    b.click("Approve").await;
    b.wait_css_text("#state", "approved").await;
    b.wait_text("checked with the ledger team").await;
    b.click("Apply to AWS").await;
    b.accept_confirm().await;
    b.wait_css_text("#state", "applied").await;
    b.goto(&remediation_url).await;
    b.wait_css_text("#state", "applied").await;
    b.wait_text("remediation.applied").await;
    b.screenshot("07-remediation-applied").await;

    // AWS now holds the fixed policy (read with the real aws-sdk-kms client).
    let policy = kms
        .get_key_policy()
        .key_id(&key.key_id)
        .policy_name("default")
        .send()
        .await
        .expect("GetKeyPolicy")
        .policy()
        .expect("a policy")
        .to_string();
    assert!(
        policy.contains("EnableRootAccessAndPreventPermissionDelegation"),
        "{policy}"
    );
    assert!(!policy.contains("Enable IAM User Permissions"), "{policy}");

    // The apply re-synced the account: the key reads compliant, nothing open.
    b.goto(&server.url(&format!("/keys/{}", key.key_id))).await;
    b.wait_css_text("h1 .state", "compliant").await;
    b.wait_text("No open findings.").await;
    assert!(
        b.client
            .find_all(fantoccini::Locator::Css(".stmt.offending"))
            .await
            .unwrap()
            .is_empty(),
        "a statement is still marked offending:\n{}",
        b.body_text().await
    );
    b.screenshot("08-key-compliant").await;
    b.goto(&server.url("/")).await;
    b.wait_css_text("#delegating-keys", "0").await;
    b.wait_css_text("#compliance", "100%").await;

    b.close().await;
    drop(server);
    let elapsed = started.elapsed();
    eprintln!("browser flow took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
