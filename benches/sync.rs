//! Sync throughput against moto: a full sync and an unchanged re-sync of N keys in one
//! account·region, beside the raw request ceiling of the same server measured in the same run
//! (a plain aws-sdk-kms client issuing the same requests at the same concurrency).
//!
//!   cargo bench --bench sync [-- --keys N] [--concurrency C] [--rounds R] [--seed-concurrency C]
//!
//! N defaults to `KEYWARD_BENCH_KEYS` or 2000; C to the configuration's `sync.concurrency`;
//! R (rounds of ceiling → full sync into a fresh database → unchanged re-sync) to 3.
//! bench/README.md has the figures and how to read them.
//!
//! A bench target is a client of Keyward like the tests are: it talks to moto through
//! aws-sdk-kms directly (seeding, the ceiling) and reads the SQLite file with sqlx to count the
//! rows a pass wrote, which the `Store` trait does not expose.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::types::{GrantOperation, KeyUsageType, Tag};
use futures::StreamExt;
use keyward::aws::SdkConnector;
use keyward::clock::SystemClock;
use keyward::config::{AccountConfig, SyncConfig};
use keyward::metrics::Metrics;
use keyward::store;
use keyward::sync::{Due, RegionReport, SyncService, Target};
use serde_json::json;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

const REGION: &str = "us-east-1";
const DEFAULT_KEYS: usize = 2000;
/// The per-key reads of the sync, in its order; ListKeys and ListAliases come once per region.
const PER_KEY: [&str; 5] = [
    "DescribeKey",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "ListResourceTags",
    "ListGrants",
];
const PER_REGION: [&str; 2] = ["ListKeys", "ListAliases"];

struct Options {
    keys: usize,
    concurrency: usize,
    seed_concurrency: usize,
    rounds: usize,
}

const USAGE: &str = "usage: cargo bench --bench sync [-- --keys N] [--concurrency C] [--rounds R] [--seed-concurrency C]";

fn options() -> Result<Option<Options>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets without it, and
    // this needs minutes and an emulator, so it only runs when asked for.
    if !args.iter().any(|a| a == "--bench") {
        return Ok(None);
    }
    let mut o = Options {
        keys: match std::env::var("KEYWARD_BENCH_KEYS") {
            Ok(v) => v
                .parse()
                .map_err(|_| format!("KEYWARD_BENCH_KEYS={v:?} is not a number"))?,
            Err(_) => DEFAULT_KEYS,
        },
        concurrency: SyncConfig::default().concurrency,
        seed_concurrency: 16,
        rounds: 3,
    };
    let mut it = args.iter().filter(|a| *a != "--bench");
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || -> Result<usize, String> {
            let v = inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} {v:?} is not a positive number\n{USAGE}"))
        };
        match name {
            "--keys" => o.keys = value()?,
            "--concurrency" => o.concurrency = value()?,
            "--seed-concurrency" => o.seed_concurrency = value()?,
            "--rounds" => o.rounds = value()?,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(Some(o))
}

fn main() {
    let options = match options() {
        Ok(Some(o)) => o,
        Ok(None) => {
            eprintln!("benches/sync.rs runs under `cargo bench --bench sync` only");
            return;
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    prepare_environment();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let moto = MotoServer::start(root);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let endpoint = moto.endpoint();
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&options, &endpoint) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        }
    });
    drop(moto);
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

/// Dummy credentials for moto; a developer's own profile or IMDS must not interfere. Runs
/// before the runtime starts any thread.
fn prepare_environment() {
    let set = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/keyward-bench-aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/keyward-bench-aws-credentials",
        ),
    ];
    for (k, v) in set {
        // SAFETY: single-threaded: called at the start of main, before the runtime exists.
        unsafe { std::env::set_var(k, v) };
    }
    for k in [
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
    ] {
        // SAFETY: as above.
        unsafe { std::env::remove_var(k) };
    }
}

/// moto_server started by scripts/moto on a free loopback port, stopped on drop.
struct MotoServer {
    script: PathBuf,
    port: u16,
}

impl MotoServer {
    fn start(root: &Path) -> Self {
        // moto cannot report a port it chose; take one the kernel hands out (once: a race on
        // loopback is rare enough).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let script = root.join("scripts/moto");
        let status = Command::new("bash")
            .arg(&script)
            .args(["start", &port.to_string()])
            .status()
            .expect("run scripts/moto start");
        assert!(
            status.success(),
            "scripts/moto start {port} failed: {status}"
        );
        MotoServer { script, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", &self.port.to_string()])
            .status();
    }
}

/// One measured phase.
struct Phase {
    requests: u64,
    seconds: f64,
}

/// Every round's measurement of one phase.
#[derive(Default)]
struct Series {
    requests: u64,
    seconds: Vec<f64>,
}

impl Series {
    fn push(&mut self, p: Phase) {
        self.requests = p.requests;
        self.seconds.push(p.seconds);
    }

    fn median(&self) -> f64 {
        median(&self.seconds)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A fresh SQLite database and a sync service over it; the connector (and so the assumed-role
/// session) is shared by the rounds.
async fn fresh_service(
    dir: &Path,
    round: usize,
    o: &Options,
    connector: &Arc<SdkConnector>,
    metrics: &Arc<Metrics>,
) -> Result<(SyncService, SqlitePool), String> {
    let db_path = dir.join(format!("round-{round}.db"));
    let store = store::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .map_err(|e| e.to_string())?;
    let service = SyncService {
        store,
        connector: connector.clone(),
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
        concurrency: o.concurrency,
        parallel_regions: 1,
        owner: "bench".to_string(),
        lease: Duration::from_secs(3600),
        passes: Default::default(),
    };
    let reader = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&db_path)
            .read_only(true),
    )
    .await
    .map_err(|e| format!("open {}: {e}", db_path.display()))?;
    Ok((service, reader))
}

async fn run(o: &Options, endpoint: &str) -> Result<(), String> {
    // A fresh account: moto creates it on first use, so nothing else's keys are in the listing.
    let account = format!("{}", 300_000_000_000u64 + u64::from(rand::random::<u32>()));
    let credentials = assume_role(endpoint, &account).await?;
    let seeding = kms_client(endpoint, credentials.clone());

    eprintln!(
        "==> seeding {} keys in {account} {REGION} ({} at a time)",
        o.keys, o.seed_concurrency
    );
    let started = Instant::now();
    let key_ids = seed(&seeding, &account, o.keys, o.seed_concurrency).await?;
    let seed_seconds = started.elapsed().as_secs_f64();
    eprintln!("    {} keys in {seed_seconds:.1}s", key_ids.len());

    let raw = kms_client(endpoint, credentials);
    let metrics = Arc::new(Metrics::new());
    let connector = Arc::new(SdkConnector::new(
        Some(endpoint.to_string()),
        metrics.clone(),
    ));
    let target = Target::from_config(&AccountConfig {
        id: account.clone(),
        name: Some("bench".to_string()),
        role_arn: Some(role_arn(&account)),
        regions: vec![REGION.to_string()],
        ..AccountConfig::default()
    });
    let dir = tempfile::Builder::new()
        .prefix("keyward-bench-sync-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .map_err(|e| format!("temp dir: {e}"))?;

    // Rounds of ceiling → full sync (fresh database) → unchanged re-sync, so that each sync is
    // measured next to a ceiling: moto's speed drifts, and the machine may be shared.
    let (mut ceiling_s, mut full_s, mut resync_s) =
        (Series::default(), Series::default(), Series::default());
    let (mut full_ratio, mut resync_ratio) = (Vec::new(), Vec::new());
    let mut first = None;
    for round in 1..=o.rounds {
        eprintln!("==> round {round} of {}", o.rounds);
        let c = ceiling(&raw, &key_ids, o.concurrency, "raw ceiling").await?;
        let (service, reader) = fresh_service(dir.path(), round, o, &connector, &metrics).await?;
        let (full, full_report, full_calls) =
            sync_pass(&service, &target, &metrics, "full sync").await?;
        check_report(&full_report, o.keys)?;
        let before = snapshot(&reader).await?;
        let (resync, resync_report, resync_calls) =
            sync_pass(&service, &target, &metrics, "unchanged re-sync").await?;
        check_report(&resync_report, o.keys)?;
        let after = snapshot(&reader).await?;
        reader.close().await;
        if resync_report.outcome.keys_changed != 0 {
            return Err(format!(
                "round {round}: the unchanged re-sync changed {} keys",
                resync_report.outcome.keys_changed
            ));
        }
        // Rates, not times: the sync's request count could differ from the ceiling's.
        let rate = |p: &Phase| p.requests as f64 / p.seconds;
        full_ratio.push(rate(&full) / rate(&c));
        resync_ratio.push(rate(&resync) / rate(&c));
        ceiling_s.push(c);
        full_s.push(full);
        resync_s.push(resync);
        if first.is_none() {
            first = Some((
                full_report,
                full_calls,
                resync_report,
                resync_calls,
                before,
                after,
            ));
        }
    }
    let wide = ceiling(
        &raw,
        &key_ids,
        4 * o.concurrency,
        &format!("raw, {} in flight (for information)", 4 * o.concurrency),
    )
    .await?;
    let (full_report, full_calls, resync_report, resync_calls, before, after) =
        first.ok_or("no round ran")?;

    println!();
    println!(
        "keys: {}, concurrency: {} (sync: keys in flight; ceiling: requests in flight), \
         rounds: {}, moto {endpoint}, seeding {seed_seconds:.1}s",
        o.keys, o.concurrency, o.rounds
    );
    println!();
    println!(
        "Medians over the rounds; % of ceiling is the median of each round's sync/ceiling rate."
    );
    println!();
    println!("| phase | requests | seconds (min–max) | req/s | keys/s | % of ceiling |");
    println!("|---|---:|---:|---:|---:|---:|");
    let spread = |s: &Series| {
        let min = s.seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.seconds.iter().copied().fold(0.0, f64::max);
        format!("{:.2} ({min:.2}–{max:.2})", s.median())
    };
    let rows: [(&str, &Series, f64); 3] = [
        ("raw ceiling", &ceiling_s, 1.0),
        ("full sync", &full_s, median(&full_ratio)),
        ("unchanged re-sync", &resync_s, median(&resync_ratio)),
    ];
    for (name, s, ratio) in rows {
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} % |",
            s.requests,
            spread(s),
            s.requests as f64 / s.median(),
            o.keys as f64 / s.median(),
            100.0 * ratio
        );
    }
    println!(
        "| raw, {} in flight (for information) | {} | {:.2} | {:.0} | {:.0} | {:.0} % |",
        4 * o.concurrency,
        wide.requests,
        wide.seconds,
        wide.requests as f64 / wide.seconds,
        o.keys as f64 / wide.seconds,
        100.0 * (wide.requests as f64 / wide.seconds)
            / (ceiling_s.requests as f64 / ceiling_s.median())
    );
    println!();
    println!(
        "AWS calls by operation in round 1 (Keyward's metrics; STS AssumeRole is not counted):"
    );
    println!("| operation | full sync | re-sync | ceiling |");
    println!("|---|---:|---:|---:|");
    let plan = request_plan(&key_ids);
    let mut planned: BTreeMap<&str, u64> = BTreeMap::new();
    for (op, _) in &plan {
        *planned.entry(op).or_default() += 1;
    }
    let mut ops: Vec<&str> = full_calls.keys().map(String::as_str).collect();
    ops.extend(
        planned
            .keys()
            .copied()
            .filter(|op| !full_calls.contains_key(*op)),
    );
    for op in ops {
        println!(
            "| {op} | {} | {} | {} |",
            full_calls.get(op).copied().unwrap_or(0),
            resync_calls.get(op).copied().unwrap_or(0),
            planned.get(op).copied().unwrap_or(0)
        );
    }
    println!();
    println!(
        "full sync: {} keys changed, {} policy versions added, {} findings opened",
        full_report.outcome.keys_changed,
        full_report.outcome.policy_versions_added,
        full_report.outcome.findings_opened
    );
    println!(
        "re-sync:   {} keys changed, {} policy versions added, {} findings opened, {} resolved",
        resync_report.outcome.keys_changed,
        resync_report.outcome.policy_versions_added,
        resync_report.outcome.findings_opened,
        resync_report.outcome.findings_resolved
    );
    println!();
    println!("Rows the unchanged re-sync of round 1 wrote (SQLite, by table):");
    println!("| table | rows before | rows after | inserted | updated |");
    println!("|---|---:|---:|---:|---:|");
    for (table, rows) in &after {
        let empty = HashMap::new();
        let old = before.get(table).unwrap_or(&empty);
        let (n_old, n_new) = (total(old), total(rows));
        let differing: usize = rows
            .iter()
            .map(|(r, n)| n.saturating_sub(old.get(r).copied().unwrap_or(0)))
            .sum();
        let inserted = n_new.saturating_sub(n_old);
        println!(
            "| {table} | {n_old} | {n_new} | {inserted} | {} |",
            differing.saturating_sub(inserted)
        );
    }
    let full_pct = 100.0 * median(&full_ratio);
    println!();
    println!(
        "full sync at {full_pct:.0} % of the ceiling (rounds: {}): target ≥ 90 % {}",
        full_ratio
            .iter()
            .map(|r| format!("{:.0} %", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", "),
        if full_pct >= 90.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

fn total(rows: &HashMap<String, usize>) -> usize {
    rows.values().sum()
}

fn check_report(r: &RegionReport, keys: usize) -> Result<(), String> {
    if let Some(e) = &r.error {
        return Err(format!("the sync failed: {e}"));
    }
    if r.keys_seen != keys as u64 {
        return Err(format!(
            "the sync saw {} keys, {keys} were seeded",
            r.keys_seen
        ));
    }
    Ok(())
}

/// One sync pass, timed, with the AWS calls it made.
async fn sync_pass(
    service: &SyncService,
    target: &Target,
    metrics: &Metrics,
    name: &'static str,
) -> Result<(Phase, RegionReport, BTreeMap<String, u64>), String> {
    eprintln!("==> {name}");
    let calls_before = aws_calls(metrics);
    let started = Instant::now();
    let mut reports = service
        .run_pass(std::slice::from_ref(target), None, Due::Always)
        .await
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let calls: BTreeMap<String, u64> = aws_calls(metrics)
        .into_iter()
        .map(|(op, n)| {
            let d = n - calls_before.get(&op).copied().unwrap_or(0);
            (op, d)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    // The ceiling issues KMS requests only; GetCallerIdentity (once per account) is STS.
    let requests = calls
        .iter()
        .filter(|(op, _)| *op != "GetCallerIdentity")
        .map(|(_, n)| n)
        .sum();
    let report = reports.pop().ok_or("the pass reported no region")?;
    eprintln!("    {seconds:.2}s, {requests} KMS requests");
    Ok((Phase { requests, seconds }, report, calls))
}

/// `keyward_aws_calls_total{operation="X"} N` lines of the metrics text.
fn aws_calls(metrics: &Metrics) -> BTreeMap<String, u64> {
    metrics
        .render()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("keyward_aws_calls_total{operation=\"")?;
            let (op, rest) = rest.split_once("\"}")?;
            Some((op.to_string(), rest.trim().parse().ok()?))
        })
        .collect()
}

/// The requests the sync makes for these keys, in its order: per region, then per key.
fn request_plan(key_ids: &[String]) -> Vec<(&'static str, Option<&str>)> {
    let mut plan: Vec<(&'static str, Option<&str>)> =
        PER_REGION.iter().map(|op| (*op, None)).collect();
    for id in key_ids {
        plan.extend(PER_KEY.iter().map(|op| (*op, Some(id.as_str()))));
    }
    plan
}

/// The raw ceiling: the sync's requests from a plain client, `concurrency` requests in flight.
async fn ceiling(
    kms: &aws_sdk_kms::Client,
    key_ids: &[String],
    concurrency: usize,
    name: &str,
) -> Result<Phase, String> {
    eprintln!("==> {name}");
    let plan = request_plan(key_ids);
    let started = Instant::now();
    let results: Vec<Result<(), String>> = futures::stream::iter(plan.iter().copied())
        .map(|(op, key)| request(kms, op, key))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("{name}: {e}"));
    }
    eprintln!("    {seconds:.2}s, {} requests", plan.len());
    Ok(Phase {
        requests: plan.len() as u64,
        seconds,
    })
}

async fn request(kms: &aws_sdk_kms::Client, op: &str, key: Option<&str>) -> Result<(), String> {
    let key = key.unwrap_or_default();
    match op {
        "ListKeys" => done(op, kms.list_keys().send().await),
        "ListAliases" => done(op, kms.list_aliases().send().await),
        "DescribeKey" => done(op, kms.describe_key().key_id(key).send().await),
        "GetKeyPolicy" => done(
            op,
            kms.get_key_policy()
                .key_id(key)
                .policy_name("default")
                .send()
                .await,
        ),
        "GetKeyRotationStatus" => done(op, kms.get_key_rotation_status().key_id(key).send().await),
        "ListResourceTags" => done(op, kms.list_resource_tags().key_id(key).send().await),
        "ListGrants" => done(op, kms.list_grants().key_id(key).send().await),
        other => Err(format!("no such request {other}")),
    }
}

fn done<T, E: std::error::Error>(op: &str, result: Result<T, E>) -> Result<(), String> {
    result
        .map(drop)
        .map_err(|e| format!("{op}: {}", aws_sdk_kms::error::DisplayErrorContext(e)))
}

fn role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/KeywardAudit")
}

/// Credentials acting in `account`: moto maps an assumed role to its account.
async fn assume_role(endpoint: &str, account: &str) -> Result<Credentials, String> {
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
            .build(),
    );
    let out = sts
        .assume_role()
        .role_arn(role_arn(account))
        .role_session_name("bench")
        .send()
        .await
        .map_err(|e| format!("AssumeRole: {}", aws_sdk_sts::error::DisplayErrorContext(e)))?;
    let c = out
        .credentials()
        .ok_or("AssumeRole returned no credentials")?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "bench-assume-role",
    ))
}

fn kms_client(endpoint: &str, credentials: Credentials) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new(REGION))
            .credentials_provider(credentials)
            .build(),
    )
}

/// A realistic key policy of about 2 KB: root pinned or delegating (every fifth key, a
/// KMS-DELEGATION finding), administrators, Keyward's auditor, an application, its grants, and
/// now and then a partner account (KMS-CROSS-ACCOUNT).
fn policy(account: &str, i: usize) -> String {
    let root = format!("arn:aws:iam::{account}:root");
    let role = |name: &str| format!("arn:aws:iam::{account}:role/{name}");
    let app = format!("service-{:03}", i % 200);
    let root_statement = if i % 5 == 0 {
        json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": root},
               "Action": "kms:*", "Resource": "*"})
    } else {
        json!({"Sid": "EnableRootAccessAndPreventPermissionDelegation", "Effect": "Allow",
               "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*",
               "Condition": {"StringEquals": {"aws:PrincipalType": "Account"}}})
    };
    let mut statements = vec![
        root_statement,
        json!({"Sid": "Allow access for Key Administrators", "Effect": "Allow",
               "Principal": {"AWS": [role("KMSAdmin"), role("platform/SecurityEngineering")]},
               "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
                          "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
                          "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
                          "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand"],
               "Resource": "*"}),
        json!({"Sid": "Allow Keyward to audit the key", "Effect": "Allow",
               "Principal": {"AWS": role("KeywardAudit")},
               "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus",
                          "kms:ListGrants", "kms:ListKeyPolicies", "kms:ListResourceTags"],
               "Resource": "*"}),
        json!({"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": role(&app)},
               "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                          "kms:DescribeKey"],
               "Resource": "*"}),
        json!({"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
               "Principal": {"AWS": role(&app)},
               "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
               "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}),
    ];
    if i % 25 == 0 {
        statements.push(
            json!({"Sid": "Allow the partner account to decrypt", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::444455556666:role/PartnerReader"},
            "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}),
        );
    }
    let doc = json!({"Version": "2012-10-17", "Id": format!("key-policy-{app}"), "Statement": statements});
    serde_json::to_string_pretty(&doc).expect("a policy serialises")
}

/// Creates `n` keys concurrently: every key tagged, every other with rotation on, every tenth
/// with an alias, every fiftieth with a grant. Returns the key ids.
async fn seed(
    kms: &aws_sdk_kms::Client,
    account: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<String>, String> {
    // Ordered, so that key i's id is ids[i].
    let results: Vec<Result<String, String>> = futures::stream::iter(0..n)
        .map(|i| {
            let kms = kms.clone();
            let account = account.to_string();
            async move {
                let tag = |k: &str, v: String| {
                    Tag::builder()
                        .tag_key(k)
                        .tag_value(v)
                        .build()
                        .expect("a tag")
                };
                let out = kms
                    .create_key()
                    .policy(policy(&account, i))
                    .description(format!("bench key {i}"))
                    // AWS defaults KeyUsage to ENCRYPT_DECRYPT; moto leaves it empty unless given.
                    .key_usage(KeyUsageType::EncryptDecrypt)
                    .tags(tag("Team", format!("team-{}", i % 12)))
                    .tags(tag("Service", format!("service-{:03}", i % 200)))
                    .send()
                    .await
                    .map_err(|e| {
                        format!("CreateKey: {}", aws_sdk_kms::error::DisplayErrorContext(e))
                    })?;
                let id = out
                    .key_metadata()
                    .map(|m| m.key_id().to_string())
                    .ok_or("CreateKey returned no metadata")?;
                if i % 2 == 0 {
                    kms.enable_key_rotation()
                        .key_id(&id)
                        .send()
                        .await
                        .map_err(|e| {
                            format!(
                                "EnableKeyRotation: {}",
                                aws_sdk_kms::error::DisplayErrorContext(e)
                            )
                        })?;
                }
                if i % 50 == 0 {
                    kms.create_grant()
                        .key_id(&id)
                        .grantee_principal(format!(
                            "arn:aws:iam::{account}:role/service-{:03}",
                            i % 200
                        ))
                        .operations(GrantOperation::Decrypt)
                        .operations(GrantOperation::GenerateDataKey)
                        .send()
                        .await
                        .map_err(|e| {
                            format!(
                                "CreateGrant: {}",
                                aws_sdk_kms::error::DisplayErrorContext(e)
                            )
                        })?;
                }
                Ok(id)
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    let ids: Vec<String> = results.into_iter().collect::<Result<_, _>>()?;
    // One at a time: moto's CreateAlias walks every key unlocked and fails ("dictionary changed
    // size during iteration") when a CreateKey lands meanwhile.
    for i in (0..n).step_by(10) {
        kms.create_alias()
            .alias_name(format!("alias/bench-{i:05}"))
            .target_key_id(&ids[i])
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CreateAlias: {}",
                    aws_sdk_kms::error::DisplayErrorContext(e)
                )
            })?;
    }
    Ok(ids)
}

/// Every row of every table of the database, as a multiset of row texts per table.
async fn snapshot(db: &SqlitePool) -> Result<BTreeMap<String, HashMap<String, usize>>, String> {
    let err = |e: sqlx::Error| e.to_string();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(db)
    .await
    .map_err(err)?;
    let mut out = BTreeMap::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{table}\")"))
            .fetch_all(db)
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .collect();
        let row_text = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {row_text} FROM \"{table}\""))
            .fetch_all(db)
            .await
            .map_err(err)?;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in rows {
            *counts.entry(r).or_default() += 1;
        }
        out.insert(table, counts);
    }
    Ok(out)
}
