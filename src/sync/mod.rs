//! The sync: read every key of every configured account·region from KMS, store what changed,
//! evaluate it, and reconcile findings. A failure changes nothing for the keys it concerns.

mod fetch;
mod iam;
mod scheduler;

use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::aws::{AccountAccess, AwsError, KmsConnector};
use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::metrics::Metrics;
use crate::store::{
    AccountRow, RegionClaim, RegionSync, RegionSyncOutcome, Store, StoreError, SyncRunFinish,
};

pub use fetch::{Evaluation, KeyFetch, evaluation_key, fetch_key, sha256_hex};
pub use iam::{AccountIam, decrypt_all_findings};
pub use scheduler::{
    JITTER, SHUTDOWN_GRACE, Sleeper, TokioSleeper, run_scheduler, run_scheduler_with,
};

/// One account Keyward watches, resolved from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub account_id: String,
    pub name: String,
    pub access: AccountAccess,
    pub regions: Vec<String>,
    pub trusted_accounts: Vec<String>,
}

impl Target {
    /// The target for a configured account.
    pub fn from_config(a: &AccountConfig) -> Self {
        Target {
            account_id: a.id.clone(),
            name: a.display_name().to_string(),
            access: AccountAccess {
                account_id: a.id.clone(),
                role_arn: a.role_arn.clone(),
                external_id: a.external_id.clone(),
            },
            regions: a.regions.clone(),
            trusted_accounts: a.trusted_accounts.clone(),
        }
    }
}

/// The accounts to sync: the configured ones, or the account of the default credentials.
pub async fn resolve_targets(
    config: &Config,
    connector: &dyn KmsConnector,
) -> Result<Vec<Target>, AwsError> {
    if !config.accounts.is_empty() {
        return Ok(config.accounts.iter().map(Target::from_config).collect());
    }
    let (account_id, region) = connector.default_account().await?;
    Ok(vec![Target {
        name: account_id.clone(),
        access: AccountAccess {
            account_id: account_id.clone(),
            role_arn: None,
            external_id: None,
        },
        account_id,
        regions: vec![region],
        trusted_accounts: Vec::new(),
    }])
}

/// How one account·region pass ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionReport {
    pub account_id: String,
    pub region: String,
    pub run_id: Option<i64>,
    pub keys_seen: u64,
    pub outcome: RegionSyncOutcome,
    /// Keys whose data could not be read this time (left as they were).
    pub keys_failed: u64,
    pub error: Option<String>,
    /// True when the region was not claimed: see `skip_reason`.
    pub skipped: bool,
    /// Why it was skipped: held by another replica, or not due yet.
    pub skip_reason: Option<RegionClaim>,
}

impl RegionReport {
    /// True when the pass ran and failed, wholly or for some keys.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Why a sync pass could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no configured account has the id {0}")]
    UnknownAccount(String),
    /// Shutdown stopped the pass before it finished; its leases were released.
    #[error("the sync pass was abandoned at shutdown")]
    Abandoned,
    /// Shutdown had begun: the pass did not start.
    #[error("shutting down: no sync pass starts")]
    ShuttingDown,
}

/// Runs sync passes; shared by `keyward sync` and the scheduler of `keyward serve`.
pub struct SyncService {
    pub store: Arc<dyn Store>,
    pub connector: Arc<dyn KmsConnector>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Requests in flight per account·region.
    pub concurrency: usize,
    /// Account·regions at once.
    pub parallel_regions: usize,
    /// Identifies this process in leases.
    pub owner: String,
    /// How long a claim on an account·region lasts before another replica may take it over;
    /// renewed every third of it while the region is being synced.
    pub lease: Duration,
    /// One pass at a time in this process, and what shutdown must release.
    pub passes: PassControl,
}

/// Where shutdown stands, for the passes of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Open,
    /// No new pass starts; the one in flight may finish.
    Closing,
    /// The pass in flight stops at its next await and releases its leases.
    Stopping,
}

/// In-process coordination of sync passes: they run one after another (the scheduler, the
/// API's trigger and re-evaluation after a remediation all share it), and the account·regions
/// whose leases this process holds are known, so shutdown can release them instead of leaving
/// them to expire.
pub struct PassControl {
    turn: tokio::sync::Mutex<()>,
    held: std::sync::Mutex<BTreeSet<(String, String)>>,
    phase: watch::Sender<Phase>,
}

impl Default for PassControl {
    fn default() -> Self {
        PassControl {
            turn: tokio::sync::Mutex::new(()),
            held: std::sync::Mutex::new(BTreeSet::new()),
            phase: watch::channel(Phase::Open).0,
        }
    }
}

impl PassControl {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, String)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The account·regions whose lease this process holds now.
    pub fn held_regions(&self) -> Vec<(String, String)> {
        self.held().iter().cloned().collect()
    }
}

/// The error of sync runs closed because their pass was abandoned in this process.
const ABANDONED_AT_SHUTDOWN: &str =
    "abandoned: the pass was stopped at shutdown before it finished";
/// The error of sync runs whose pass future was dropped without finishing (its caller went away).
const ABANDONED_BY_CALLER: &str = "abandoned: the pass was cancelled before it finished";

/// When a region counts as due: for the scheduler, a pass finished an interval ago; for a
/// manual pass, any finished pass.
#[derive(Debug, Clone, Copy)]
pub enum Due {
    Always,
    After(Duration),
}

impl SyncService {
    /// One pass over `targets` (or only `only_account`), bounded by `parallel_regions`. Passes
    /// of one service run one at a time: a second caller waits for the first to finish (and
    /// then finds regions not due, or syncs them again with [`Due::Always`]).
    #[tracing::instrument(skip_all, fields(owner = %self.owner))]
    pub async fn run_pass(
        &self,
        targets: &[Target],
        only_account: Option<&str>,
        due: Due,
    ) -> Result<Vec<RegionReport>, SyncError> {
        let mut phase = self.passes.phase.subscribe();
        let turn = tokio::select! {
            biased;
            turn = self.passes.turn.lock() => turn,
            _ = phase.wait_for(|p| *p >= Phase::Closing) => return Err(SyncError::ShuttingDown),
        };
        if *phase.borrow() >= Phase::Closing {
            return Err(SyncError::ShuttingDown);
        }
        // Leases still held here belong to a pass whose future was dropped mid-way.
        self.release_held(ABANDONED_BY_CALLER).await;
        // The pass's futures are dropped when select! returns, before the leases are released.
        let finished = tokio::select! {
            biased;
            reports = self.run_pass_now(targets, only_account, due) => Some(reports),
            _ = phase.wait_for(|p| *p >= Phase::Stopping) => None,
        };
        let result = match finished {
            Some(reports) => reports,
            None => {
                let released = self.release_held(ABANDONED_AT_SHUTDOWN).await;
                tracing::warn!(
                    released,
                    "sync pass abandoned at shutdown; its leases were released"
                );
                Err(SyncError::Abandoned)
            }
        };
        drop(turn);
        result
    }

    /// Ends this service's passes: no new pass starts, the one in flight may finish until
    /// `grace` completes, after which it is abandoned. Either way every lease this process
    /// still holds is released and its open sync runs closed as failed, so a restarted process
    /// (a new replica id) can claim the regions at once. True when a pass was abandoned.
    pub async fn shutdown(&self, grace: impl std::future::Future<Output = ()>) -> bool {
        self.passes
            .phase
            .send_modify(|p| *p = (*p).max(Phase::Closing));
        let (turn, abandoned) = tokio::select! {
            biased;
            turn = self.passes.turn.lock() => (turn, false),
            () = grace => {
                self.passes.phase.send_replace(Phase::Stopping);
                (self.passes.turn.lock().await, true)
            }
        };
        self.passes.phase.send_replace(Phase::Stopping);
        // A pass dropped by its caller (Ctrl-C) left its leases behind.
        self.release_held(ABANDONED_AT_SHUTDOWN).await;
        drop(turn);
        abandoned
    }

    /// Closes the open sync runs of every account·region this process holds and releases their
    /// leases (without a finish time, so they are due at once). Returns how many.
    async fn release_held(&self, reason: &str) -> usize {
        let held = self.passes.held_regions();
        for (account, region) in &held {
            let now = self.clock.now();
            if let Err(e) = self
                .store
                .abandon_sync_runs(account, region, now, reason)
                .await
            {
                tracing::warn!(account, region, error = %e, "could not close the sync run of an abandoned pass");
            }
            match self
                .store
                .release_region(account, region, &self.owner, None)
                .await
            {
                Ok(()) => {
                    self.passes
                        .held()
                        .remove(&(account.clone(), region.clone()));
                }
                Err(e) => {
                    tracing::warn!(account, region, error = %e, "could not release the lease of an abandoned pass; it expires by itself")
                }
            }
        }
        held.len()
    }

    async fn run_pass_now(
        &self,
        targets: &[Target],
        only_account: Option<&str>,
        due: Due,
    ) -> Result<Vec<RegionReport>, SyncError> {
        let selected: Vec<&Target> = targets
            .iter()
            .filter(|t| only_account.is_none_or(|a| a == t.account_id))
            .collect();
        if let Some(a) = only_account
            && selected.is_empty()
        {
            return Err(SyncError::UnknownAccount(a.to_string()));
        }
        let accounts: Vec<AccountRow> = selected
            .iter()
            .map(|t| AccountRow {
                id: t.account_id.clone(),
                name: t.name.clone(),
                regions: t.regions.clone(),
            })
            .collect();
        // Only what changed: an unchanged pass should write nothing but run rows and stamps.
        let known = self.store.list_accounts().await?;
        let changed: Vec<AccountRow> = accounts
            .into_iter()
            .filter(|a| !known.contains(a))
            .collect();
        if !changed.is_empty() {
            self.store.upsert_accounts(&changed).await?;
        }
        let jobs: Vec<(&Target, &str)> = selected
            .iter()
            .flat_map(|t| t.regions.iter().map(move |r| (*t, r.as_str())))
            .collect();
        tracing::info!(regions = jobs.len(), "sync pass started");
        // Futures are built eagerly: a closure inside the stream type trips the compiler's
        // higher-ranked Send check when the pass is spawned.
        // IAM is read at most once per account and pass, by the first region that is claimed:
        // regions skipped as not due cause no IAM read.
        let iam: HashMap<&str, Arc<tokio::sync::OnceCell<AccountIam>>> = selected
            .iter()
            .map(|t| (t.account_id.as_str(), Arc::default()))
            .collect();
        let passes: Vec<_> = jobs
            .into_iter()
            .map(|(t, r)| self.sync_region_claimed(t, r, due, iam[t.account_id.as_str()].clone()))
            .collect();
        let mut reports: Vec<RegionReport> = futures::stream::iter(passes)
            .buffer_unordered(self.parallel_regions.max(1))
            .collect()
            .await;
        reports.sort_by(|a, b| (&a.account_id, &a.region).cmp(&(&b.account_id, &b.region)));
        match self.store.stats().await {
            Ok(stats) => self.metrics.set_stats(&stats),
            Err(e) => tracing::warn!(error = %e, "could not refresh compliance metrics"),
        }
        // The dashboard's trend chart: the last pass of each day stands for that day.
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .record_daily_snapshot(now.date_naive(), now)
            .await
        {
            tracing::warn!(error = %e, "could not record the daily compliance snapshot");
        }
        let failed = reports.iter().filter(|r| r.failed()).count();
        tracing::info!(regions = reports.len(), failed, "sync pass finished");
        Ok(reports)
    }

    async fn sync_region_claimed(
        &self,
        target: &Target,
        region: &str,
        due: Due,
        iam: Arc<tokio::sync::OnceCell<AccountIam>>,
    ) -> RegionReport {
        let now = self.clock.now();
        let due_before = match due {
            Due::Always => now,
            Due::After(d) => {
                now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero())
            }
        };
        let lease_until =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(30));
        let mut report = RegionReport {
            account_id: target.account_id.clone(),
            region: region.to_string(),
            run_id: None,
            keys_seen: 0,
            outcome: RegionSyncOutcome::default(),
            keys_failed: 0,
            error: None,
            skipped: false,
            skip_reason: None,
        };
        let key = (target.account_id.clone(), region.to_string());
        // Never claim again what this process holds: passes are serialised, so this only
        // guards a region listed twice.
        let claim = if self.passes.held().contains(&key) {
            Ok(RegionClaim::Held {
                owner: Some(self.owner.clone()),
            })
        } else {
            self.store
                .claim_region(
                    &target.account_id,
                    region,
                    &self.owner,
                    now,
                    lease_until,
                    due_before,
                )
                .await
        };
        match claim {
            Ok(RegionClaim::Claimed) => {
                self.passes.held().insert(key.clone());
            }
            Ok(refused) => {
                tracing::debug!(account = %target.account_id, region, reason = ?refused, "not claimed");
                report.skipped = true;
                report.skip_reason = Some(refused);
                return report;
            }
            Err(e) => {
                report.error = Some(format!("could not claim the region: {e}"));
                return report;
            }
        }
        // Holding the claim, any run still marked running here belongs to a pass that died.
        match self
            .store
            .abandon_sync_runs(
                &target.account_id,
                region,
                now,
                "abandoned: the process running it stopped before it finished",
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(account = %target.account_id, region, runs = n, "closed sync runs left running by a stopped pass")
            }
            Err(e) => {
                tracing::warn!(account = %target.account_id, region, error = %e, "could not close abandoned sync runs")
            }
        }
        let work = async {
            let iam = iam.get_or_init(|| self.refresh_iam(target)).await;
            self.sync_region(target, region, report, iam).await
        };
        tokio::pin!(work);
        // Renewal stops only when the lease is lost; the fenced write then refuses the results.
        let report = tokio::select! {
            report = &mut work => report,
            () = self.keep_lease(&target.account_id, region) => work.await,
        };
        let finished = (!report.failed()).then(|| self.clock.now());
        match self
            .store
            .release_region(&target.account_id, region, &self.owner, finished)
            .await
        {
            Ok(()) => {
                self.passes.held().remove(&key);
            }
            Err(e) => {
                tracing::warn!(account = %target.account_id, region, error = %e, "could not release the region lease; the next pass or shutdown retries")
            }
        }
        report
    }

    /// Renews the region's lease every third of its length; returns only when it was lost
    /// (another replica took it over after it expired).
    async fn keep_lease(&self, account_id: &str, region: &str) {
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(30));
        loop {
            tokio::time::sleep((self.lease / 3).max(Duration::from_millis(100))).await;
            match self
                .store
                .renew_region(account_id, region, &self.owner, self.clock.now() + lease)
                .await
            {
                Ok(true) => tracing::debug!(account = account_id, region, "sync lease renewed"),
                Ok(false) => {
                    tracing::warn!(
                        account = account_id,
                        region,
                        "sync lease lost to another replica: this pass's results will not be written"
                    );
                    return;
                }
                // A database hiccup: the lease still runs; try again at the next renewal.
                Err(e) => {
                    tracing::warn!(account = account_id, region, error = %e, "could not renew the sync lease")
                }
            }
        }
    }

    /// Syncs one account·region and records the run.
    #[tracing::instrument(skip_all, fields(account = %target.account_id, region = %region))]
    async fn sync_region(
        &self,
        target: &Target,
        region: &str,
        mut report: RegionReport,
        iam: &AccountIam,
    ) -> RegionReport {
        let started = Instant::now();
        let run_id = match self
            .store
            .start_sync_run(&target.account_id, region, self.clock.now())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                report.error = Some(format!("could not record the sync run: {e}"));
                return report;
            }
        };
        report.run_id = Some(run_id);
        match self.collect_region(target, region, iam).await {
            Ok((sync, failures)) => {
                report.keys_seen = sync.listed.len() as u64;
                report.keys_failed = failures.len() as u64;
                match self
                    .store
                    .apply_region_sync_fenced(&sync, &self.owner)
                    .await
                {
                    Ok(outcome) => {
                        report.outcome = outcome;
                        if let Some(first) = failures.first() {
                            report.error = Some(format!(
                                "{} of {} keys could not be read and were left as they were; first: {first}",
                                failures.len(),
                                sync.listed.len()
                            ));
                        }
                    }
                    Err(e) => report.error = Some(format!("could not store the results: {e}")),
                }
            }
            Err(e) => report.error = Some(e.to_string()),
        }
        let finish = SyncRunFinish {
            finished_at: self.clock.now(),
            keys_seen: report.keys_seen,
            outcome: report.outcome.clone(),
            error: report.error.clone(),
            iam_error: iam.error.clone(),
        };
        if let Err(e) = self.store.finish_sync_run(run_id, &finish).await {
            tracing::error!(error = %e, run_id, "could not close the sync run");
        }
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .observe_sync(&target.account_id, region, !report.failed(), seconds);
        match &report.error {
            None => tracing::info!(
                keys = report.keys_seen,
                changed = report.outcome.keys_changed,
                opened = report.outcome.findings_opened,
                resolved = report.outcome.findings_resolved,
                seconds,
                "region synced"
            ),
            Some(e) => tracing::warn!(error = %e, seconds, "region sync failed"),
        }
        report
    }

    /// Lists and reads the region's keys; an error here means nothing may be written.
    async fn collect_region(
        &self,
        target: &Target,
        region: &str,
        iam: &AccountIam,
    ) -> Result<(RegionSync, Vec<AwsError>), AwsError> {
        let source = self.connector.source(&target.access, region).await?;
        let keys = source.list_keys().await?;
        let aliases = source.list_aliases().await?;
        let mut aliases_by_key: HashMap<String, Vec<String>> = HashMap::new();
        for alias in aliases {
            if let Some(id) = alias.target_key_id {
                aliases_by_key.entry(id).or_default().push(alias.name);
            }
        }
        for names in aliases_by_key.values_mut() {
            names.sort();
        }
        let known: HashMap<String, crate::store::KeyFingerprint> = self
            .store
            .key_fingerprints(&target.account_id, region)
            .await
            .map_err(|e| AwsError::Transport {
                operation: "store",
                message: e.to_string(),
            })?
            .into_iter()
            .map(|f| (f.arn.clone(), f))
            .collect();
        let evaluation = Arc::new(Evaluation {
            key: evaluation_key(&target.trusted_accounts, &iam.digest),
            trusted_accounts: target.trusted_accounts.clone(),
            iam_findings: iam.findings.clone(),
        });
        let reads: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let source = source.clone();
                let aliases = aliases_by_key.get(&key.key_id).cloned().unwrap_or_default();
                let known = known.get(&key.arn).cloned();
                let evaluation = evaluation.clone();
                let region = region.to_string();
                let store = self.store.clone();
                async move {
                    let arn = key.arn.clone();
                    let fetched = fetch_key(
                        source.as_ref(),
                        store.as_ref(),
                        &key,
                        &region,
                        aliases,
                        known.as_ref(),
                        &evaluation,
                    )
                    .await;
                    (arn, fetched)
                }
            })
            .collect();
        let fetches: Vec<(String, KeyFetch)> = futures::stream::iter(reads)
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        let mut listed = Vec::with_capacity(fetches.len());
        let mut updates = Vec::new();
        let mut failures = Vec::new();
        let mut unread = Vec::new();
        for (arn, fetched) in fetches {
            match fetched {
                KeyFetch::Gone => {}
                KeyFetch::Unchanged => listed.push(arn),
                KeyFetch::Changed(update) => {
                    listed.push(arn);
                    updates.push(*update);
                }
                // Listed, so not deleted; otherwise left exactly as stored.
                KeyFetch::Failed(e) => {
                    listed.push(arn.clone());
                    unread.push(arn);
                    failures.push(e);
                }
            }
        }
        listed.sort();
        updates.sort_by(|a, b| a.key.arn.cmp(&b.key.arn));
        Ok((
            RegionSync {
                account_id: target.account_id.clone(),
                region: region.to_string(),
                now: self.clock.now(),
                listed,
                listing_complete: true,
                updates,
                unread,
            },
            failures,
        ))
    }
}

/// A human summary line per account·region, for `keyward sync --once`.
pub fn summary_line(r: &RegionReport) -> String {
    if r.skipped {
        let why = match &r.skip_reason {
            Some(RegionClaim::Held { owner: Some(owner) }) => {
                format!("held by another replica: {owner}")
            }
            Some(RegionClaim::Held { owner: None }) | None => {
                "another replica is claiming it right now".to_string()
            }
            Some(RegionClaim::NotDue { last_finished_at }) => format!(
                "not due yet: its last pass finished at {}",
                last_finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Some(RegionClaim::Claimed) => "claimed".to_string(),
        };
        return format!("{} {}: skipped ({why})", r.account_id, r.region);
    }
    let counts = format!(
        "{} keys, {} changed, {} new policy versions, {} findings opened, {} resolved, {} keys deleted",
        r.keys_seen,
        r.outcome.keys_changed,
        r.outcome.policy_versions_added,
        r.outcome.findings_opened,
        r.outcome.findings_resolved,
        r.outcome.keys_deleted
    );
    match &r.error {
        None => format!("{} {}: ok: {counts}", r.account_id, r.region),
        Some(e) => format!("{} {}: FAILED: {e} ({counts})", r.account_id, r.region),
    }
}
