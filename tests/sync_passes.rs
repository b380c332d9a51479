//! Sync passes in one process and across replicas: one pass at a time, leases renewed while a
//! region is read, released when a pass is abandoned, and the scheduler's timing (through an
//! injected sleeper). The real aws-sdk-kms client against moto, into real SQLite and Postgres.

#[path = "support/db.rs"]
mod db;
#[path = "support/moto.rs"]
mod moto;

use async_trait::async_trait;
use keyward::aws::{
    AccountAccess, Alias, AwsError, Grant, IamSource, KeyMetadata, KeyRef, KmsConnector, KmsSource,
    SdkConnector,
};
use keyward::clock::SystemClock;
use keyward::metrics::Metrics;
use keyward::store::{RegionClaim, Store, SyncRunRow};
use keyward::sync::{
    Due, JITTER, RegionReport, SHUTDOWN_GRACE, Sleeper, SyncError, SyncService, Target,
    run_scheduler_with, summary_line,
};
use moto::{Moto, default_policy, seed_key};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

const REGION: &str = "us-east-1";

/// Holds ListKeys of every source it hands out while `stalled` is true, as a slow or hanging
/// AWS endpoint would; everything else goes to the real client (moto).
struct StallingConnector {
    inner: Arc<dyn KmsConnector>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    stalled: watch::Sender<bool>,
    /// ListKeys calls in flight now, the most ever at once, and all so far.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
}

impl Gate {
    fn stall(&self, on: bool) {
        self.stalled.send_replace(on);
    }

    /// Waits until `n` ListKeys calls have been made.
    async fn wait_for_calls(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.calls.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "ListKeys call {n} never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait]
impl KmsConnector for StallingConnector {
    async fn source(
        &self,
        access: &AccountAccess,
        region: &str,
    ) -> Result<Arc<dyn KmsSource>, AwsError> {
        Ok(Arc::new(StallingSource {
            inner: self.inner.source(access, region).await?,
            gate: self.gate.clone(),
        }))
    }
    async fn iam(&self, access: &AccountAccess) -> Result<Arc<dyn IamSource>, AwsError> {
        self.inner.iam(access).await
    }
    async fn caller_arn(&self, access: &AccountAccess, region: &str) -> Result<String, AwsError> {
        self.inner.caller_arn(access, region).await
    }
    async fn default_account(&self) -> Result<(String, String), AwsError> {
        self.inner.default_account().await
    }
}

struct StallingSource {
    inner: Arc<dyn KmsSource>,
    gate: Arc<Gate>,
}

/// Counts a ListKeys call in flight until dropped (a pass abandoned mid-call drops it).
struct InFlight<'a>(&'a Gate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl KmsSource for StallingSource {
    async fn list_keys(&self) -> Result<Vec<KeyRef>, AwsError> {
        let now = self.gate.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.gate);
        self.gate.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.gate.calls.fetch_add(1, Ordering::SeqCst);
        let mut stalled = self.gate.stalled.subscribe();
        let _ = stalled.wait_for(|s| !*s).await;
        self.inner.list_keys().await
    }
    async fn list_aliases(&self) -> Result<Vec<Alias>, AwsError> {
        self.inner.list_aliases().await
    }
    async fn describe_key(&self, key_id: &str) -> Result<KeyMetadata, AwsError> {
        self.inner.describe_key(key_id).await
    }
    async fn get_key_policy(&self, key_id: &str) -> Result<String, AwsError> {
        self.inner.get_key_policy(key_id).await
    }
    async fn list_resource_tags(&self, key_id: &str) -> Result<Vec<(String, String)>, AwsError> {
        self.inner.list_resource_tags(key_id).await
    }
    async fn get_key_rotation_status(&self, key_id: &str) -> Result<bool, AwsError> {
        self.inner.get_key_rotation_status(key_id).await
    }
    async fn list_grants(&self, key_id: &str) -> Result<Vec<Grant>, AwsError> {
        self.inner.list_grants(key_id).await
    }
}

/// A replica: its own service (owner id, lease, in-process state) over the shared database.
fn replica(store: Arc<dyn Store>, owner: &str, lease: Duration) -> (Arc<SyncService>, Arc<Gate>) {
    let moto = Moto::start();
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(Gate::default());
    let connector = Arc::new(StallingConnector {
        inner: Arc::new(SdkConnector::new(
            Some(moto.endpoint().to_string()),
            metrics.clone(),
        )),
        gate: gate.clone(),
    });
    let service = Arc::new(SyncService {
        store,
        connector,
        metrics,
        clock: Arc::new(SystemClock),
        concurrency: 4,
        parallel_regions: 2,
        owner: owner.to_string(),
        lease,
        passes: Default::default(),
    });
    (service, gate)
}

/// A fresh account with two keys in us-east-1.
async fn seeded_target() -> (Target, Vec<String>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, REGION).await;
    let mut arns = Vec::new();
    for name in ["one", "two"] {
        arns.push(seed_key(&kms, &default_policy(&account), name).await.arn);
    }
    let target = Target {
        account_id: account.clone(),
        name: format!("acct-{account}"),
        access: AccountAccess {
            account_id: account.clone(),
            role_arn: Some(Moto::role_arn(&account)),
            external_id: None,
        },
        regions: vec![REGION.to_string()],
        trusted_accounts: Vec::new(),
    };
    (target, arns)
}

async fn runs_of(store: &dyn Store, account: &str) -> Vec<SyncRunRow> {
    let mut runs: Vec<SyncRunRow> = store
        .recent_sync_runs(100)
        .await
        .expect("runs")
        .into_iter()
        .filter(|r| r.account_id == account)
        .collect();
    runs.sort_by_key(|r| r.id);
    runs
}

fn only(reports: &[RegionReport]) -> &RegionReport {
    assert_eq!(reports.len(), 1, "{reports:?}");
    &reports[0]
}

const LONG_LEASE: Duration = Duration::from_secs(1800);

macro_rules! on_both_databases {
    ($name:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let sqlite = db::sqlite().await;
            $scenario(sqlite.shared()).await;
            if let Some(pg) = db::postgres().await {
                $scenario(pg.shared()).await;
            }
        }
    };
}

on_both_databases!(
    an_abandoned_pass_releases_its_leases_at_once,
    abandoned_pass_releases_leases
);
on_both_databases!(
    passes_of_one_process_run_one_after_another,
    passes_are_serialised
);
on_both_databases!(
    a_long_region_renews_its_lease_and_a_lost_lease_writes_nothing,
    renewal_and_fencing
);

/// Shutdown during a hanging ListKeys: the pass is abandoned, its run closed as failed and its
/// lease released, so a new process (another replica id) claims the region at once instead of
/// in 30 minutes. The same when the pass's caller dropped it (Ctrl-C during `sync --once`).
async fn abandoned_pass_releases_leases(store: Arc<dyn Store>) {
    let (target, arns) = seeded_target().await;
    let account = target.account_id.clone();
    let targets = vec![target];
    let (first, gate) = replica(store.clone(), "first", LONG_LEASE);
    gate.stall(true);
    let pass = tokio::spawn({
        let (first, targets) = (first.clone(), targets.clone());
        async move { first.run_pass(&targets, None, Due::Always).await }
    });
    gate.wait_for_calls(1).await;
    assert_eq!(
        first.passes.held_regions(),
        [(account.clone(), REGION.into())]
    );

    assert!(
        first.shutdown(std::future::ready(())).await,
        "the pass in flight was abandoned"
    );
    let result = pass.await.expect("pass task");
    assert!(matches!(result, Err(SyncError::Abandoned)), "{result:?}");
    assert!(first.passes.held_regions().is_empty());
    assert_eq!(
        gate.in_flight.load(Ordering::SeqCst),
        0,
        "the hanging call was dropped"
    );
    let runs = runs_of(store.as_ref(), &account).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, "failed");
    assert!(
        runs[0].error.as_deref().unwrap_or("").contains("abandoned"),
        "{runs:?}"
    );
    assert!(
        store
            .list_keys(true)
            .await
            .unwrap()
            .iter()
            .all(|k| k.key.account_id != account),
        "nothing of the abandoned pass was written"
    );
    // Shut down: no pass starts any more.
    let late = first.run_pass(&targets, None, Due::Always).await;
    assert!(matches!(late, Err(SyncError::ShuttingDown)), "{late:?}");

    // The restarted process claims at once and syncs.
    let (second, _) = replica(store.clone(), "second", LONG_LEASE);
    let reports = second
        .run_pass(&targets, None, Due::Always)
        .await
        .expect("pass");
    let r = only(&reports);
    assert!(!r.skipped && !r.failed(), "{r:?}");
    assert_eq!(r.keys_seen, arns.len() as u64);

    // A pass its caller dropped mid-way (Ctrl-C in `sync --once`): shutdown releases its lease.
    let (third, gate) = replica(store.clone(), "third", LONG_LEASE);
    gate.stall(true);
    let dropped = tokio::spawn({
        let (third, targets) = (third.clone(), targets.clone());
        async move { third.run_pass(&targets, None, Due::Always).await }
    });
    gate.wait_for_calls(1).await;
    dropped.abort();
    let _ = dropped.await;
    assert_eq!(
        third.passes.held_regions().len(),
        1,
        "the dropped pass left its lease"
    );
    assert!(
        !third.shutdown(std::future::ready(())).await,
        "no pass was in flight any more"
    );
    assert!(third.passes.held_regions().is_empty());
    let (fourth, _) = replica(store.clone(), "fourth", LONG_LEASE);
    let reports = fourth
        .run_pass(&targets, None, Due::Always)
        .await
        .expect("pass");
    assert!(!only(&reports).skipped, "{reports:?}");
    let runs = runs_of(store.as_ref(), &account).await;
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["failed", "succeeded", "failed", "succeeded"],
        "{runs:?}"
    );
}

/// Two passes asked of one service at once (the scheduler and POST /api/v1/sync, or a
/// re-evaluation after a remediation): the second waits for the first, then syncs again. No
/// run is failed by the other, no policy version is stored twice.
async fn passes_are_serialised(store: Arc<dyn Store>) {
    let (target, arns) = seeded_target().await;
    let account = target.account_id.clone();
    let targets = vec![target];
    let (service, gate) = replica(store.clone(), "only", LONG_LEASE);
    gate.stall(true);
    let spawn_pass = || {
        let (service, targets) = (service.clone(), targets.clone());
        tokio::spawn(async move { service.run_pass(&targets, None, Due::Always).await })
    };
    let first = spawn_pass();
    gate.wait_for_calls(1).await;
    let second = spawn_pass();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gate.calls.load(Ordering::SeqCst),
        1,
        "the second pass waits"
    );
    assert!(!second.is_finished());
    gate.stall(false);
    let first = first.await.expect("task").expect("first pass");
    let second = second.await.expect("task").expect("second pass");
    assert_eq!(gate.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
    for r in [only(&first), only(&second)] {
        assert!(!r.skipped && !r.failed(), "{r:?}");
        assert_eq!(r.keys_seen, 2);
    }
    assert_eq!(only(&first).outcome.policy_versions_added, 2);
    assert_eq!(only(&second).outcome.policy_versions_added, 0);
    let runs = runs_of(store.as_ref(), &account).await;
    let statuses: Vec<&str> = runs.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["succeeded", "succeeded"], "{runs:?}");
    for arn in &arns {
        assert_eq!(store.policy_versions(arn).await.unwrap().len(), 1, "{arn}");
    }
    assert!(service.passes.held_regions().is_empty());
}

/// A region read for longer than the lease keeps it by renewing it, so another replica skips
/// it; a lease taken over anyway (the holder stalled past its expiry) makes the holder's write
/// fail with "lease lost" and leave the data as it was.
async fn renewal_and_fencing(store: Arc<dyn Store>) {
    let (target, _) = seeded_target().await;
    let account = target.account_id.clone();
    let targets = vec![target];
    let lease = Duration::from_secs(3);
    let (holder, gate) = replica(store.clone(), "holder", lease);
    gate.stall(true);
    let pass = tokio::spawn({
        let (holder, targets) = (holder.clone(), targets.clone());
        async move { holder.run_pass(&targets, None, Due::Always).await }
    });
    gate.wait_for_calls(1).await;
    // Twice the lease: without renewal it would have expired.
    tokio::time::sleep(lease * 2).await;
    let (other, _) = replica(store.clone(), "other", lease);
    let reports = other
        .run_pass(&targets, None, Due::Always)
        .await
        .expect("pass");
    let skipped = only(&reports);
    assert_eq!(
        skipped.skip_reason,
        Some(RegionClaim::Held {
            owner: Some("holder".into())
        }),
        "{skipped:?}"
    );
    assert_eq!(
        summary_line(skipped),
        format!("{account} {REGION}: skipped (held by another replica: holder)")
    );
    gate.stall(false);
    let done = pass.await.expect("task").expect("pass");
    assert!(!only(&done).failed(), "{done:?}");
    assert_eq!(only(&done).outcome.keys_changed, 2);

    // Now the holder loses its lease while stalled: it expired and "other" took it over.
    let (holder, gate) = replica(store.clone(), "holder-2", LONG_LEASE);
    gate.stall(true);
    let pass = tokio::spawn({
        let (holder, targets) = (holder.clone(), targets.clone());
        async move { holder.run_pass(&targets, None, Due::Always).await }
    });
    gate.wait_for_calls(1).await;
    store
        .release_region(&account, REGION, "holder-2", None)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let taken = store
        .claim_region(
            &account,
            REGION,
            "other",
            now,
            now + chrono::Duration::hours(1),
            now,
        )
        .await
        .unwrap();
    assert_eq!(taken, RegionClaim::Claimed);
    let before = store.list_keys(true).await.unwrap();
    gate.stall(false);
    let lost = pass.await.expect("task").expect("pass");
    let r = only(&lost);
    let error = r.error.as_deref().unwrap_or("");
    assert!(error.contains("lease lost"), "{r:?}");
    assert!(summary_line(r).contains("FAILED"), "{}", summary_line(r));
    assert_eq!(
        store.list_keys(true).await.unwrap(),
        before,
        "nothing written"
    );
    let runs = runs_of(store.as_ref(), &account).await;
    let last = runs.last().expect("run");
    assert_eq!(last.status, "failed");
    assert!(
        last.error.as_deref().unwrap_or("").contains("lease lost"),
        "{last:?}"
    );
    // The holder never released what it no longer held.
    assert!(
        !store
            .claim_region(&account, REGION, "third", now, now, now)
            .await
            .unwrap()
            .is_claimed()
    );
}

/// Records each wait the scheduler asks for; the wait ends when the test says so.
struct ControlledSleeper {
    waits: mpsc::UnboundedSender<(Duration, oneshot::Sender<()>)>,
}

#[async_trait]
impl Sleeper for ControlledSleeper {
    async fn sleep(&self, duration: Duration) {
        let (go, wait) = oneshot::channel();
        if self.waits.send((duration, go)).is_ok() {
            // A dropped sender ends the wait too.
            let _ = wait.await;
        }
    }
}

async fn next_wait(
    waits: &mut mpsc::UnboundedReceiver<(Duration, oneshot::Sender<()>)>,
) -> (Duration, oneshot::Sender<()>) {
    tokio::time::timeout(Duration::from_secs(30), waits.recv())
        .await
        .expect("the scheduler asked for a wait in time")
        .expect("scheduler alive")
}

fn assert_jittered(pause: Duration, interval: Duration) {
    let (low, high) = (
        interval.mul_f64(1.0 - JITTER),
        interval.mul_f64(1.0 + JITTER),
    );
    assert!(
        pause >= low && pause <= high,
        "{pause:?} outside [{low:?}, {high:?}]"
    );
}

/// The first pass runs at start, without waiting; the next one only after the jittered
/// interval; a pass asked for meanwhile (the API's) waits its turn; shutdown between passes
/// ends the scheduler at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_passes_at_start_then_every_interval_one_at_a_time() {
    let db = db::sqlite().await;
    let store = db.shared();
    let (target, _) = seeded_target().await;
    let account = target.account_id.clone();
    let targets = vec![target];
    let (service, gate) = replica(store.clone(), "scheduler", LONG_LEASE);
    let interval = Duration::from_millis(400);
    let (waits_tx, mut waits) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    gate.stall(true);
    let scheduler = tokio::spawn({
        let (service, targets) = (service.clone(), targets.clone());
        async move {
            let sleeper = ControlledSleeper { waits: waits_tx };
            run_scheduler_with(service, targets, interval, stop_rx, &sleeper).await;
        }
    });
    gate.wait_for_calls(1).await;
    assert!(
        waits.try_recv().is_err(),
        "the first pass runs before any wait"
    );
    // The API asks for a pass while the scheduler's runs: it waits for it.
    let requested = tokio::spawn({
        let (service, targets) = (service.clone(), targets.clone());
        async move { service.run_pass(&targets, None, Due::Always).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    gate.stall(false);
    let (pause, go) = next_wait(&mut waits).await;
    assert_jittered(pause, interval);
    let requested = requested.await.expect("task").expect("requested pass");
    assert!(!only(&requested).skipped, "{requested:?}");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        gate.max_in_flight.load(Ordering::SeqCst),
        1,
        "never two at once"
    );

    // Nothing happens until the wait ends; then the region is due again (an interval passed).
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert_eq!(
        gate.calls.load(Ordering::SeqCst),
        2,
        "no pass before the wait ended"
    );
    go.send(()).unwrap();
    let (pause, go) = next_wait(&mut waits).await;
    assert_jittered(pause, interval);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 3, "one pass per wait");

    // A pass started right after another finds the region not due, and says so.
    go.send(()).unwrap();
    let (_, go) = next_wait(&mut waits).await;
    assert_eq!(
        gate.calls.load(Ordering::SeqCst),
        3,
        "the region was not due"
    );
    let not_due = service
        .run_pass(&targets, None, Due::After(Duration::from_secs(3600)))
        .await
        .expect("pass");
    let r = only(&not_due);
    assert!(
        matches!(r.skip_reason, Some(RegionClaim::NotDue { .. })),
        "{r:?}"
    );
    let line = summary_line(r);
    assert!(
        line.starts_with(&format!(
            "{account} {REGION}: skipped (not due yet: its last pass finished at "
        )),
        "{line}"
    );
    let runs = runs_of(store.as_ref(), &account).await;
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == "succeeded"), "{runs:?}");

    // Shutdown while waiting: the scheduler ends at once, without another pass (the grace is
    // only for a pass in flight, and none is).
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("scheduler ended")
        .expect("no panic");
    drop(go);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 3);
}

/// Shutdown during a pass: the scheduler waits the grace; a pass that finishes within it is
/// kept, one that does not is abandoned and its leases released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_shutdown_waits_the_grace_then_abandons_and_releases() {
    let db = db::sqlite().await;
    let store = db.shared();
    let (target, _) = seeded_target().await;
    let account = target.account_id.clone();
    let targets = vec![target];
    let interval = Duration::from_secs(60);

    // Finishes within the grace.
    let (service, gate) = replica(store.clone(), "finishes", LONG_LEASE);
    let (waits_tx, mut waits) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    gate.stall(true);
    let scheduler = tokio::spawn({
        let (service, targets) = (service.clone(), targets.clone());
        async move {
            let sleeper = ControlledSleeper { waits: waits_tx };
            run_scheduler_with(service, targets, interval, stop_rx, &sleeper).await;
        }
    });
    gate.wait_for_calls(1).await;
    stop.send(true).unwrap();
    let (grace, _grace_go) = next_wait(&mut waits).await;
    assert_eq!(grace, SHUTDOWN_GRACE);
    assert!(!scheduler.is_finished(), "waiting for the pass");
    gate.stall(false);
    tokio::time::timeout(Duration::from_secs(30), scheduler)
        .await
        .expect("scheduler ended")
        .expect("no panic");
    let runs = runs_of(store.as_ref(), &account).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "succeeded", "{runs:?}");

    // Does not finish: abandoned when the grace ends. (Another account: the first was just
    // synced, so the scheduler's first pass would find it not due.)
    let (target, _) = seeded_target().await;
    let account = target.account_id.clone();
    let targets = vec![target];
    let (service, gate) = replica(store.clone(), "hangs", LONG_LEASE);
    let (waits_tx, mut waits) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    gate.stall(true);
    let scheduler = tokio::spawn({
        let (service, targets) = (service.clone(), targets.clone());
        async move {
            let sleeper = ControlledSleeper { waits: waits_tx };
            run_scheduler_with(service, targets, interval, stop_rx, &sleeper).await;
        }
    });
    gate.wait_for_calls(1).await;
    stop.send(true).unwrap();
    let (grace, grace_go) = next_wait(&mut waits).await;
    assert_eq!(grace, SHUTDOWN_GRACE);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!scheduler.is_finished(), "within the grace");
    assert_eq!(service.passes.held_regions().len(), 1);
    grace_go.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), scheduler)
        .await
        .expect("scheduler ended")
        .expect("no panic");
    assert!(service.passes.held_regions().is_empty());
    let runs = runs_of(store.as_ref(), &account).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "failed");
    assert!(
        runs[0].error.as_deref().unwrap_or("").contains("abandoned"),
        "{runs:?}"
    );
    // A restarted process (another replica id) claims at once.
    let (restarted, _) = replica(store.clone(), "restarted", LONG_LEASE);
    let reports = restarted
        .run_pass(&targets, None, Due::Always)
        .await
        .expect("pass");
    assert!(!only(&reports).skipped, "{reports:?}");
    assert!(!only(&reports).failed(), "{reports:?}");
}

/// The skip reasons as `keyward sync --once` prints them.
#[test]
fn summary_line_names_the_skip_reason() {
    let report = |reason: Option<RegionClaim>| RegionReport {
        account_id: "111122223333".into(),
        region: REGION.into(),
        run_id: None,
        keys_seen: 0,
        outcome: Default::default(),
        keys_failed: 0,
        error: None,
        skipped: true,
        skip_reason: reason,
    };
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-29T01:02:03.456Z")
        .unwrap()
        .to_utc();
    assert_eq!(
        summary_line(&report(Some(RegionClaim::Held {
            owner: Some("web-1-42-0000beef".into())
        }))),
        "111122223333 us-east-1: skipped (held by another replica: web-1-42-0000beef)"
    );
    assert_eq!(
        summary_line(&report(Some(RegionClaim::Held { owner: None }))),
        "111122223333 us-east-1: skipped (another replica is claiming it right now)"
    );
    assert_eq!(
        summary_line(&report(Some(RegionClaim::NotDue {
            last_finished_at: at
        }))),
        "111122223333 us-east-1: skipped (not due yet: its last pass finished at 2026-11-29T01:02:03Z)"
    );
}
