//! The sync: read every key of every configured account·region from KMS, store what changed,
//! evaluate it, and reconcile findings. A failure changes nothing for the keys it concerns.

mod fetch;
mod iam;
mod scheduler;

use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws::{AccountAccess, AwsError, KmsConnector};
use crate::clock::Clock;
use crate::config::{AccountConfig, Config};
use crate::metrics::Metrics;
use crate::store::{AccountRow, RegionSync, RegionSyncOutcome, Store, StoreError, SyncRunFinish};

pub use fetch::{Evaluation, KeyFetch, evaluation_key, fetch_key, sha256_hex};
pub use iam::{AccountIam, decrypt_all_findings};
pub use scheduler::run_scheduler;

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
    /// True when another replica held the region, or it was not due yet.
    pub skipped: bool,
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
    /// How long a claim on an account·region lasts before another replica may take it over.
    pub lease: Duration,
}

/// When a region counts as due: for the scheduler, a pass finished an interval ago; for a
/// manual pass, any finished pass.
#[derive(Debug, Clone, Copy)]
pub enum Due {
    Always,
    After(Duration),
}

impl SyncService {
    /// One pass over `targets` (or only `only_account`), bounded by `parallel_regions`.
    #[tracing::instrument(skip_all, fields(owner = %self.owner))]
    pub async fn run_pass(
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
        };
        match self
            .store
            .claim_region(
                &target.account_id,
                region,
                &self.owner,
                now,
                lease_until,
                due_before,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                report.skipped = true;
                tracing::debug!(account = %target.account_id, region, "not claimed: running elsewhere or not due");
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
        let iam = iam.get_or_init(|| self.refresh_iam(target)).await;
        let report = self.sync_region(target, region, report, iam).await;
        let finished = (!report.failed()).then(|| self.clock.now());
        if let Err(e) = self
            .store
            .release_region(&target.account_id, region, &self.owner, finished)
            .await
        {
            tracing::warn!(account = %target.account_id, region, error = %e, "could not release the region lease; it expires by itself");
        }
        report
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
                match self.store.apply_region_sync(&sync).await {
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
        return format!(
            "{} {}: skipped (another replica holds it)",
            r.account_id, r.region
        );
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
