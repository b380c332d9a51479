//! Test harness for the AWS emulator: one `moto_server` per test binary on a free loopback port,
//! and a fresh AWS account per test (moto keeps every account apart), reached by assuming a role.
//!
//! Include it with `#[path = "support/moto.rs"] mod moto;` (or from a `support/mod.rs`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use rand::Rng;

/// The moto version the project tests against (scripts/moto installs it).
pub const MOTO_VERSION: &str = "5.2.5";
/// moto's account for requests signed with credentials it never issued (here: `testing`).
pub const DEFAULT_ACCOUNT: &str = "123456789012";
/// Names the port of an already running moto_server to use instead of starting one.
pub const EXTERNAL_PORT_ENV: &str = "KEYWARD_TEST_MOTO_PORT";
/// How long moto may take to import its services and answer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `moto_server`, stopped when dropped or when the test process exits.
pub struct Moto {
    port: u16,
    endpoint: String,
    /// PID of moto_server itself (a grandchild: see `spawn`).
    pid: u32,
    /// The shell that started moto; it kills moto when its stdin closes.
    guard: Mutex<Option<(Child, ChildStdin)>>,
    log: PathBuf,
}

static SHARED: OnceLock<Moto> = OnceLock::new();

impl Moto {
    /// The moto server shared by every test of this binary, started on first use.
    ///
    /// Also sets the environment the AWS SDK reads (dummy credentials, region, no IMDS), so it
    /// must run before any test builds an AWS client; every moto test calls it first.
    pub fn start() -> &'static Moto {
        prepare_environment();
        SHARED.get_or_init(|| match std::env::var(EXTERNAL_PORT_ENV) {
            Ok(port) if !port.is_empty() => Moto::external(port.parse().expect("a port number")),
            _ => Moto::spawn(),
        })
    }

    /// A server someone else runs (scripts/test starts one for the whole suite, since nextest
    /// runs every test in its own process); tests stay apart through their fresh accounts.
    fn external(port: u16) -> Moto {
        let moto = Moto {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            pid: 0,
            guard: Mutex::new(None),
            log: PathBuf::from("/dev/null"),
        };
        moto.wait_until_ready();
        moto
    }

    /// A moto server of one's own (most tests want [`Moto::start`]); killed on drop.
    pub fn spawn() -> Moto {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let server = root.join(".venv/moto/bin/moto_server");
        // Idempotent and locked: a few milliseconds when moto is already there, and safe when
        // several test processes start at once.
        let status = Command::new("bash")
            .arg(root.join("scripts/moto"))
            .arg("install")
            .status()
            .expect("run scripts/moto install");
        assert!(status.success(), "scripts/moto install failed: {status}");
        // moto cannot listen on port 0 and report the port, so take one the kernel hands out
        // and pass it on. One attempt: another process could grab it in between, which is rare
        // enough on loopback not to loop for.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind a free loopback port")
            .port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the moto log");
        // The shell starts moto, prints its PID and waits on stdin. Whenever this process ends,
        // even by a panic or a kill, the kernel closes that pipe and the shell stops moto: a
        // server held in a static is never dropped, and must not outlive the tests.
        let mut shell = Command::new("bash")
            .arg("-c")
            .arg(r#""$0" -H 127.0.0.1 -p "$1" >&2 & echo $!; read -r _; kill "$!" 2>/dev/null; wait"#)
            .arg(&server)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            // AWS managed policies (AdministratorAccess, ...) exist, as in real accounts.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .spawn()
            .expect("start moto_server");
        let stdin = shell.stdin.take().expect("shell stdin");
        let mut line = String::new();
        BufReader::new(shell.stdout.take().expect("shell stdout"))
            .read_line(&mut line)
            .expect("read moto's pid");
        let pid: u32 = line.trim().parse().expect("moto's pid");
        let moto = Moto {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            pid,
            guard: Mutex::new(Some((shell, stdin))),
            log,
        };
        moto.wait_until_ready();
        moto
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A random 12-digit account id no other test uses: moto creates accounts on first use.
    pub fn fresh_account(&self) -> String {
        let n: u64 = rand::rng().random_range(100_000_000_000..1_000_000_000_000);
        let id = n.to_string();
        if id == DEFAULT_ACCOUNT {
            return self.fresh_account();
        }
        id
    }

    /// A role ARN in `account`. moto does not require the role to exist: assuming it yields
    /// credentials that act in that account.
    pub fn role_arn(account: &str) -> String {
        format!("arn:aws:iam::{account}:role/KeywardAudit")
    }

    /// Credentials acting in `account`, from an STS AssumeRole against moto.
    pub async fn credentials_for(&self, account: &str) -> Credentials {
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&self.endpoint)
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
                .build(),
        );
        let out = sts
            .assume_role()
            .role_arn(Self::role_arn(account))
            .role_session_name("seed")
            .send()
            .await
            .expect("AssumeRole on moto");
        let c = out.credentials().expect("AssumeRole credentials");
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "moto-assume-role",
        )
    }

    /// A plain aws-sdk-kms client acting in `account`·`region`, for seeding keys.
    pub async fn kms_client_for(&self, account: &str, region: &str) -> aws_sdk_kms::Client {
        let credentials = self.credentials_for(account).await;
        aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&self.endpoint)
                .region(Region::new(region.to_string()))
                .credentials_provider(credentials)
                .build(),
        )
    }

    /// A plain aws-sdk-iam client acting in `account`, for seeding identities and policies.
    pub async fn iam_client_for(&self, account: &str) -> aws_sdk_iam::Client {
        let credentials = self.credentials_for(account).await;
        aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::new()
                .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
                .endpoint_url(&self.endpoint)
                .region(aws_sdk_iam::config::Region::new("us-east-1"))
                .credentials_provider(credentials)
                .build(),
        )
    }

    /// The server's log so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if http_get_ok(self.port, "/moto-api/") {
                return;
            }
            if let Some((shell, _)) = self.guard.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = shell.try_wait() {
                    panic!("moto_server exited ({status}):\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "moto_server did not answer on {} within {START_TIMEOUT:?}:\n{}",
            self.endpoint,
            self.log()
        );
    }

    fn stop(&self) {
        if self.pid == 0 {
            return;
        }
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        if let Some((mut shell, stdin)) = self.guard.lock().unwrap().take() {
            drop(stdin);
            let _ = shell.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key a test created on moto.
pub struct SeededKey {
    pub key_id: String,
    pub arn: String,
}

/// CreateKey (symmetric, encrypt/decrypt) with `policy` and `description` through a seeding client.
pub async fn seed_key(kms: &aws_sdk_kms::Client, policy: &str, description: &str) -> SeededKey {
    let out = kms
        .create_key()
        .policy(policy)
        .description(description)
        // AWS defaults KeyUsage to ENCRYPT_DECRYPT; moto 5.2.5 leaves it empty unless given.
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .expect("CreateKey on moto");
    let m = out.key_metadata().expect("CreateKey metadata");
    SeededKey {
        key_id: m.key_id().to_string(),
        arn: m.arn().expect("key arn").to_string(),
    }
}

/// A typical default key policy for `account` (root may do everything).
pub fn default_policy(account: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Id":"key-default-1","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
    )
}

/// Sets, once per process, the environment the AWS SDK reads in tests: dummy credentials, a
/// region, and no instance metadata lookups (which would wait for a timeout off EC2). Call it
/// before building any AWS client; [`Moto::start`] does.
pub fn prepare_environment() {
    static ONCE: Once = Once::new();
    ONCE.call_once(set_test_environment);
}

fn set_test_environment() {
    let vars = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        // A developer's own profiles must not leak into the tests.
        ("AWS_CONFIG_FILE", "/nonexistent/keyward-test-aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keyward-test-aws-credentials",
        ),
    ];
    for (name, value) in vars {
        // SAFETY: runs once, inside the `Once` that every AWS test passes through before it
        // builds a client, so no other thread of these tests reads the environment meanwhile.
        unsafe { std::env::set_var(name, value) };
    }
    for name in [
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    ] {
        // SAFETY: as above.
        unsafe { std::env::remove_var(name) };
    }
}

/// A plain HTTP/1.0 GET on loopback: true on a 2xx answer.
fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    // "HTTP/1.1 200"
    head.starts_with(b"HTTP/") && head[9] == b'2'
}
