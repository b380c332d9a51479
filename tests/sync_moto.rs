//! The sync end to end: the real aws-sdk-kms client against moto, into real SQLite and Postgres
//! databases. Every scenario runs on both backends (Postgres when KEYWARD_TEST_POSTGRES_URL is set).

#[path = "support/db.rs"]
mod db;
#[path = "support/faults.rs"]
mod faults;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/rows.rs"]
mod rows;

use keyward::aws::{AccountAccess, KmsConnector, SdkConnector};
use keyward::clock::SystemClock;
use keyward::metrics::Metrics;
use keyward::store::Store;
use keyward::sync::{Due, RegionReport, SyncService, Target};
use moto::{Moto, default_policy, seed_key};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn fixed_policy(account: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:root"}},"Action":"kms:*","Resource":"*","Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}}}}}},{{"Sid":"Allow access for Key Administrators","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:role/KMSAdmin"}},"Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*","kms:Disable*","kms:Get*","kms:Delete*","kms:TagResource","kms:UntagResource","kms:ScheduleKeyDeletion","kms:CancelKeyDeletion"],"Resource":"*"}}]}}"#
    )
}

fn public_policy(account: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{account}:role/KMSAdmin"}},"Action":"kms:PutKeyPolicy","Resource":"*"}},{{"Sid":"Everyone","Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}}]}}"#
    )
}

fn target(account: &str, regions: &[&str]) -> Target {
    Target {
        account_id: account.to_string(),
        name: format!("acct-{account}"),
        access: AccountAccess {
            account_id: account.to_string(),
            role_arn: Some(Moto::role_arn(account)),
            external_id: None,
        },
        regions: regions.iter().map(|r| r.to_string()).collect(),
        trusted_accounts: Vec::new(),
    }
}

struct Harness {
    service: SyncService,
    faults: Arc<Mutex<faults::Faults>>,
}

fn harness(store: Arc<dyn Store>) -> Harness {
    let moto = Moto::start();
    let metrics = Arc::new(Metrics::new());
    let real: Arc<dyn KmsConnector> = Arc::new(SdkConnector::new(
        Some(moto.endpoint().to_string()),
        metrics.clone(),
    ));
    let (connector, faults) = faults::FaultyConnector::new(real);
    Harness {
        service: SyncService {
            store,
            connector,
            metrics,
            clock: Arc::new(SystemClock),
            concurrency: 8,
            parallel_regions: 4,
            owner: "test".to_string(),
            lease: Duration::from_secs(600),
            passes: Default::default(),
        },
        faults,
    }
}

async fn pass(h: &Harness, targets: &[Target]) -> Vec<RegionReport> {
    h.service
        .run_pass(targets, None, Due::Always)
        .await
        .expect("sync pass runs")
}

async fn open_rules(store: &dyn Store, arn: &str) -> Vec<String> {
    let mut rules: Vec<String> = store
        .list_findings(false)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.key_arn == arn)
        .map(|f| f.rule_id)
        .collect();
    rules.sort();
    rules
}

/// Runs a scenario on SQLite and, when configured, on Postgres.
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

on_both_databases!(multi_account_multi_region_sync, multi_account_multi_region);
on_both_databases!(change_detection_and_resolution, change_detection);
on_both_databases!(
    deleted_keys_only_after_a_complete_listing,
    deletion_detection
);
on_both_databases!(a_failing_region_changes_nothing, failure_isolation);
on_both_databases!(
    unreadable_policies_are_findings_not_failures,
    unreadable_policy
);

async fn multi_account_multi_region(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let (a, b) = (moto.fresh_account(), moto.fresh_account());
    let mut expected = Vec::new();
    for region in REGIONS {
        let kms_a = moto.kms_client_for(&a, region).await;
        expected.push((
            seed_key(&kms_a, &default_policy(&a), "default").await.arn,
            vec!["KMS-DELEGATION", "KMS-NO-ADMIN", "KMS-ROTATION-DISABLED"],
        ));
        let kms_b = moto.kms_client_for(&b, region).await;
        let fixed = seed_key(&kms_b, &fixed_policy(&b), "fixed").await;
        kms_b
            .enable_key_rotation()
            .key_id(&fixed.key_id)
            .send()
            .await
            .unwrap();
        kms_b
            .create_alias()
            .alias_name(format!("alias/fixed-{region}"))
            .target_key_id(&fixed.key_id)
            .send()
            .await
            .unwrap();
        expected.push((fixed.arn, vec![]));
        let public = seed_key(&kms_b, &public_policy(&b), "public").await;
        kms_b
            .enable_key_rotation()
            .key_id(&public.key_id)
            .send()
            .await
            .unwrap();
        expected.push((public.arn, vec!["KMS-PUBLIC"]));
    }
    let h = harness(store.clone());
    let reports = pass(&h, &[target(&a, &REGIONS), target(&b, &REGIONS)]).await;
    assert_eq!(reports.len(), 4);
    for r in &reports {
        assert!(!r.failed() && !r.skipped, "{r:?}");
    }
    let keys = store.list_keys(false).await.unwrap();
    assert_eq!(keys.len(), 6);
    for (arn, rules) in &expected {
        assert_eq!(open_rules(store.as_ref(), arn).await, *rules, "{arn}");
        let key = keys.iter().find(|k| &k.key.arn == arn).expect("key stored");
        assert!(key.policy_sha256.is_some());
        assert!(key.key.arn.contains(&key.key.region));
    }
    let aliased = keys.iter().filter(|k| !k.key.aliases.is_empty()).count();
    assert_eq!(aliased, 2);
    let accounts = store.list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 2);
    // the export holds what AWS holds
    let export = keyward::report::json_export(store.as_ref(), false, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(export.keys.len(), 6);
    assert_eq!(export.keys.iter().filter(|k| k.compliant).count(), 2);
}

async fn change_detection(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "to be fixed").await;
    let h = harness(store.clone());
    let targets = [target(&account, &["us-east-1"])];
    let first = pass(&h, &targets).await;
    assert_eq!(first[0].outcome.keys_changed, 1);
    assert_eq!(first[0].outcome.policy_versions_added, 1);
    assert!(
        open_rules(store.as_ref(), &key.arn)
            .await
            .contains(&"KMS-DELEGATION".to_string())
    );

    // nothing changed in AWS: nothing is written but last-seen stamps
    let again = pass(&h, &targets).await;
    assert_eq!(again[0].keys_seen, 1);
    assert_eq!(again[0].outcome.keys_changed, 0);
    assert_eq!(again[0].outcome.policy_versions_added, 0);
    assert_eq!(
        again[0].outcome.findings_opened + again[0].outcome.findings_resolved,
        0
    );

    // the policy is fixed in AWS: a new version, delegation resolved
    kms.put_key_policy()
        .key_id(&key.key_id)
        .policy_name("default")
        .policy(fixed_policy(&account))
        .send()
        .await
        .unwrap();
    let fixed = pass(&h, &targets).await;
    assert_eq!(fixed[0].outcome.keys_changed, 1);
    assert_eq!(fixed[0].outcome.policy_versions_added, 1);
    assert!(fixed[0].outcome.findings_resolved >= 2, "{:?}", fixed[0]);
    assert_eq!(
        open_rules(store.as_ref(), &key.arn).await,
        vec!["KMS-ROTATION-DISABLED"]
    );
    let versions = store.policy_versions(&key.arn).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].text, fixed_policy(&account));
    let resolved: Vec<_> = store
        .list_findings(true)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.key_arn == key.arn && f.status == "resolved")
        .map(|f| f.rule_id)
        .collect();
    assert!(resolved.contains(&"KMS-DELEGATION".to_string()));

    // metadata changes re-evaluate too: rotation on resolves KMS-ROTATION-DISABLED
    kms.enable_key_rotation()
        .key_id(&key.key_id)
        .send()
        .await
        .unwrap();
    let rotated = pass(&h, &targets).await;
    assert_eq!(rotated[0].outcome.keys_changed, 1);
    assert_eq!(rotated[0].outcome.policy_versions_added, 0);
    assert!(open_rules(store.as_ref(), &key.arn).await.is_empty());
}

async fn deletion_detection(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let stays = seed_key(&kms, &default_policy(&account), "stays").await;
    let goes = seed_key(&kms, &default_policy(&account), "goes").await;
    let h = harness(store.clone());
    let targets = [target(&account, &["us-east-1"])];
    pass(&h, &targets).await;
    assert_eq!(store.list_keys(false).await.unwrap().len(), 2);

    // a failed listing marks nothing deleted
    h.faults
        .lock()
        .unwrap()
        .hidden_keys
        .insert(goes.key_id.clone());
    h.faults
        .lock()
        .unwrap()
        .failing_regions
        .insert("us-east-1".into());
    let failed = pass(&h, &targets).await;
    assert!(failed[0].failed());
    assert_eq!(store.list_keys(false).await.unwrap().len(), 2);

    // a complete listing without the key marks it deleted and resolves its findings
    h.faults.lock().unwrap().failing_regions.clear();
    let report = pass(&h, &targets).await;
    assert!(!report[0].failed(), "{:?}", report[0]);
    assert_eq!(report[0].outcome.keys_deleted, 1);
    let live: Vec<_> = store
        .list_keys(false)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key.arn)
        .collect();
    assert_eq!(live, vec![stays.arn.clone()]);
    let all = store.list_keys(true).await.unwrap();
    assert!(
        all.iter()
            .any(|k| k.key.arn == goes.arn && k.deleted_at.is_some())
    );
    assert!(open_rules(store.as_ref(), &goes.arn).await.is_empty());
    assert!(!open_rules(store.as_ref(), &stays.arn).await.is_empty());
}

async fn failure_isolation(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let east = moto.kms_client_for(&account, "us-east-1").await;
    let west = moto.kms_client_for(&account, "eu-west-1").await;
    let k_east = seed_key(&east, &default_policy(&account), "east").await;
    let k_west = seed_key(&west, &default_policy(&account), "west").await;
    let k_west2 = seed_key(&west, &default_policy(&account), "west 2").await;
    let h = harness(store.clone());
    let targets = [target(&account, &REGIONS)];
    pass(&h, &targets).await;

    // both keys get fixed in AWS, but us-east-1 cannot be listed this time
    for (kms, key) in [(&east, &k_east), (&west, &k_west), (&west, &k_west2)] {
        kms.put_key_policy()
            .key_id(&key.key_id)
            .policy_name("default")
            .policy(fixed_policy(&account))
            .send()
            .await
            .unwrap();
    }
    h.faults
        .lock()
        .unwrap()
        .failing_regions
        .insert("us-east-1".into());
    // and one key of eu-west-1 fails to read
    h.faults
        .lock()
        .unwrap()
        .failing_keys
        .insert(k_west2.key_id.clone());
    let reports = pass(&h, &targets).await;
    let east_report = reports.iter().find(|r| r.region == "us-east-1").unwrap();
    let west_report = reports.iter().find(|r| r.region == "eu-west-1").unwrap();
    assert!(east_report.failed());
    assert!(
        east_report
            .error
            .as_deref()
            .unwrap()
            .contains("ThrottlingException")
    );
    assert_eq!(east_report.outcome, Default::default());
    // the failed region's key keeps its delegation finding: nothing was resolved on a failure
    assert!(
        open_rules(store.as_ref(), &k_east.arn)
            .await
            .contains(&"KMS-DELEGATION".to_string())
    );
    // the healthy key of the other region was updated; the unreadable one left as it was
    assert!(
        west_report.failed(),
        "a key that could not be read fails the run: {west_report:?}"
    );
    assert_eq!(west_report.keys_failed, 1);
    assert!(
        !open_rules(store.as_ref(), &k_west.arn)
            .await
            .contains(&"KMS-DELEGATION".to_string())
    );
    assert!(
        open_rules(store.as_ref(), &k_west2.arn)
            .await
            .contains(&"KMS-DELEGATION".to_string())
    );
    assert_eq!(store.list_keys(false).await.unwrap().len(), 3);
    // the runs are recorded with their errors
    let runs = store.latest_sync_runs().await.unwrap();
    let east_run = runs.iter().find(|r| r.region == "us-east-1").unwrap();
    assert_eq!(east_run.status, "failed");
    assert!(east_run.error.is_some());

    // recovery: everything converges on the next good pass
    h.faults.lock().unwrap().failing_regions.clear();
    h.faults.lock().unwrap().failing_keys.clear();
    let reports = pass(&h, &targets).await;
    assert!(reports.iter().all(|r| !r.failed()), "{reports:?}");
    for key in [&k_east, &k_west, &k_west2] {
        assert!(
            !open_rules(store.as_ref(), &key.arn)
                .await
                .contains(&"KMS-DELEGATION".to_string())
        );
    }
}

async fn unreadable_policy(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "locked").await;
    let h = harness(store.clone());
    h.faults
        .lock()
        .unwrap()
        .denied_policies
        .insert(key.key_id.clone());
    let targets = [target(&account, &["us-east-1"])];
    let reports = pass(&h, &targets).await;
    assert!(!reports[0].failed(), "{:?}", reports[0]);
    assert_eq!(
        open_rules(store.as_ref(), &key.arn).await,
        vec!["KMS-ROTATION-DISABLED", "KMS-UNREADABLE"]
    );
    // readable again: the blind spot closes and the policy is judged
    h.faults.lock().unwrap().denied_policies.clear();
    pass(&h, &targets).await;
    assert_eq!(
        open_rules(store.as_ref(), &key.arn).await,
        vec!["KMS-DELEGATION", "KMS-NO-ADMIN", "KMS-ROTATION-DISABLED"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_account_filter_is_an_error() {
    let sqlite = db::sqlite().await;
    let h = harness(sqlite.shared());
    let err = h
        .service
        .run_pass(
            &[target("111122223333", &["us-east-1"])],
            Some("999999999999"),
            Due::Always,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("999999999999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_whose_credentials_reach_another_account_fails_alone() {
    let moto = Moto::start();
    let good = moto.fresh_account();
    let kms = moto.kms_client_for(&good, "us-east-1").await;
    seed_key(&kms, &default_policy(&good), "k").await;
    let mut wrong = target(&moto.fresh_account(), &["us-east-1"]);
    // the role lives in the good account, so the credentials reach the wrong account
    wrong.access.role_arn = Some(Moto::role_arn(&good));
    let sqlite = db::sqlite().await;
    let h = harness(sqlite.shared());
    let reports = pass(&h, &[target(&good, &["us-east-1"]), wrong.clone()]).await;
    let bad = reports
        .iter()
        .find(|r| r.account_id == wrong.account_id)
        .unwrap();
    let ok = reports.iter().find(|r| r.account_id == good).unwrap();
    assert!(bad.failed() && !ok.failed(), "{reports:?}");
    assert_eq!(ok.keys_seen, 1);
}

on_both_databases!(replicas_never_sync_a_region_twice, replicas_share_work);

async fn replicas_share_work(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    for region in REGIONS {
        let kms = moto.kms_client_for(&account, region).await;
        seed_key(&kms, &default_policy(&account), "k").await;
    }
    let targets = [target(&account, &REGIONS)];
    let mut a = harness(store.clone());
    let mut b = harness(store.clone());
    a.service.owner = "replica-a".into();
    b.service.owner = "replica-b".into();
    let interval = Due::After(Duration::from_secs(600));
    let (ra, rb) = tokio::join!(
        a.service.run_pass(&targets, None, interval),
        b.service.run_pass(&targets, None, interval)
    );
    let ran: Vec<_> = ra
        .unwrap()
        .into_iter()
        .chain(rb.unwrap())
        .filter(|r| !r.skipped)
        .collect();
    assert_eq!(
        ran.len(),
        REGIONS.len(),
        "each region exactly once: {ran:?}"
    );
    assert!(ran.iter().all(|r| !r.failed()));
    // within the interval nobody syncs the regions again
    let again = a.service.run_pass(&targets, None, interval).await.unwrap();
    assert!(again.iter().all(|r| r.skipped), "{again:?}");
    assert_eq!(
        store.recent_sync_runs(50).await.unwrap().len(),
        REGIONS.len()
    );
}

on_both_databases!(
    aws_managed_keys_are_reported_but_not_remediable,
    aws_managed_keys
);

async fn aws_managed_keys(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let managed = seed_key(&kms, &public_policy(&account), "aws/ebs lookalike").await;
    let broken = seed_key(&kms, r#"{"Statement":[{"Effect":"Allow","Principal":"arn:aws:iam::1:root","Action":"kms:*","Resource":"*"}]}"#, "aws-managed, invalid").await;
    let pending = seed_key(&kms, &fixed_policy(&account), "customer, leaving").await;
    kms.schedule_key_deletion()
        .key_id(&pending.key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let h = harness(store.clone());
    h.faults
        .lock()
        .unwrap()
        .aws_managed
        .extend([managed.key_id.clone(), broken.key_id.clone()]);
    pass(&h, &[target(&account, &["us-east-1"])]).await;
    // AWS writes these policies: only KMS-INVALID may be reported, never anything to remediate
    assert!(open_rules(store.as_ref(), &managed.arn).await.is_empty());
    assert_eq!(
        open_rules(store.as_ref(), &broken.arn).await,
        vec!["KMS-INVALID"]
    );
    assert_eq!(
        open_rules(store.as_ref(), &pending.arn).await,
        vec!["KMS-PENDING-DELETION"]
    );
    let keys = store.list_keys(false).await.unwrap();
    let row = |arn: &str| keys.iter().find(|k| k.key.arn == arn).unwrap();
    assert!(!row(&managed.arn).remediable);
    assert_eq!(row(&managed.arn).key.key_manager, "AWS");
    assert!(row(&pending.arn).remediable);
    assert_eq!(row(&pending.arn).key.key_state, "PendingDeletion");
    assert!(row(&pending.arn).key.deletion_date.is_some());
}

on_both_databases!(
    iam_inventory_feeds_decrypt_all_keys_findings,
    iam_inventory_and_findings
);

const DECRYPT_EVERYTHING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ReadAll","Effect":"Allow","Action":["kms:Decrypt","kms:DescribeKey"],"Resource":"*"}]}"#;

/// The open findings about IAM reaching the key.
async fn delegation_rules(store: &dyn Store, arn: &str) -> Vec<String> {
    let mut rules = open_rules(store, arn).await;
    rules.retain(|r| r == "KMS-DELEGATION" || r.starts_with("IAM-"));
    rules
}

async fn iam_inventory_and_findings(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let iam = moto.iam_client_for(&account).await;
    iam.create_role()
        .role_name("app")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("app")
        .policy_name("read-all")
        .policy_document(DECRYPT_EVERYTHING)
        .send()
        .await
        .unwrap();
    let delegating = seed_key(&kms, &default_policy(&account), "delegating").await;
    let pinned = seed_key(&kms, &fixed_policy(&account), "pinned").await;
    let h = harness(store.clone());
    let targets = [target(&account, &["us-east-1"])];
    let reports = pass(&h, &targets).await;
    assert!(reports.iter().all(|r| !r.failed()), "{reports:?}");

    let stored = store
        .iam_inventory(&account)
        .await
        .unwrap()
        .expect("stored");
    let inventory: keyward::access::IamInventory =
        serde_json::from_str(stored.inventory.as_deref().expect("inventory")).unwrap();
    assert_eq!(
        inventory
            .roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec!["app"]
    );
    assert_eq!(stored.last_error, None);
    // Only the key that delegates to IAM is reachable through the identity policy.
    assert_eq!(
        delegation_rules(store.as_ref(), &delegating.arn).await,
        vec!["IAM-KMS-DECRYPT-ALL-KEYS", "KMS-DELEGATION"]
    );
    assert!(
        delegation_rules(store.as_ref(), &pinned.arn)
            .await
            .is_empty()
    );
    let finding = store
        .list_findings(false)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.rule_id == "IAM-KMS-DECRYPT-ALL-KEYS")
        .expect("finding");
    assert_eq!(finding.locator, "iam:inline:app/read-all#0");
    assert_eq!(finding.severity, "medium");
    assert!(
        finding.message.contains("kms:Decrypt"),
        "{}",
        finding.message
    );
    let today = chrono::Utc::now().date_naive();
    let snapshots = store.daily_snapshots(today).await.unwrap();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!((snapshots[0].keys, snapshots[0].delegating_keys), (2, 1));

    // An IAM read failure is recorded on the run and keeps the previous inventory and findings.
    h.faults.lock().unwrap().denied_iam.insert(account.clone());
    let reports = pass(&h, &targets).await;
    assert!(
        reports.iter().all(|r| !r.failed()),
        "KMS still synced: {reports:?}"
    );
    let run = store
        .latest_sync_runs()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.account_id == account)
        .expect("run");
    assert_eq!(run.status, "succeeded");
    let iam_error = run.iam_error.expect("IAM error recorded on the run");
    assert!(iam_error.contains("access denied"), "{iam_error}");
    let kept = store.iam_inventory(&account).await.unwrap().expect("kept");
    assert_eq!(kept.sha256, stored.sha256);
    assert!(kept.last_error.is_some());
    assert_eq!(
        delegation_rules(store.as_ref(), &delegating.arn).await,
        vec!["IAM-KMS-DECRYPT-ALL-KEYS", "KMS-DELEGATION"]
    );

    // The policy narrowed to one key: the finding resolves without any key policy change.
    h.faults.lock().unwrap().denied_iam.clear();
    iam.put_role_policy()
        .role_name("app")
        .policy_name("read-all")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"kms:Decrypt","Resource":"{}"}}]}}"#,
            delegating.arn
        ))
        .send()
        .await
        .unwrap();
    pass(&h, &targets).await;
    assert_eq!(
        delegation_rules(store.as_ref(), &delegating.arn).await,
        vec!["KMS-DELEGATION"]
    );
    let fresh = store.iam_inventory(&account).await.unwrap().expect("fresh");
    assert_ne!(fresh.sha256, stored.sha256);
    assert_eq!(fresh.last_error, None);
}

/// Runs a scenario that reads the database behind the store's back, on both databases.
macro_rules! on_both_raw_databases {
    ($name:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let sqlite = db::sqlite().await;
            $scenario(&sqlite).await;
            if let Some(pg) = db::postgres().await {
                $scenario(&pg).await;
            }
        }
    };
}

on_both_raw_databases!(
    an_unchanged_resync_writes_only_the_run_and_stamps,
    unchanged_resync_rows
);

/// Columns an unchanged re-sync may write: the last-seen stamps and the region's lease.
const STAMPS: [(&str, &str); 5] = [
    ("keys", "last_seen"),
    ("policy_versions", "last_seen"),
    ("sync_leases", "owner"),
    ("sync_leases", "lease_until"),
    ("sync_leases", "last_finished_at"),
];

async fn unchanged_resync_rows(db: &db::TestDb) {
    let store = db.shared();
    let moto = Moto::start();
    let account = moto.fresh_account();
    let iam = moto.iam_client_for(&account).await;
    iam.create_role()
        .role_name("app")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();
    let mut arns = Vec::new();
    for region in REGIONS {
        let kms = moto.kms_client_for(&account, region).await;
        arns.push(
            seed_key(&kms, &default_policy(&account), "default")
                .await
                .arn,
        );
        arns.push(seed_key(&kms, &fixed_policy(&account), "fixed").await.arn);
    }
    let h = harness(store.clone());
    let targets = [target(&account, &REGIONS)];
    let first = pass(&h, &targets).await;
    assert!(first.iter().all(|r| !r.failed()), "{first:?}");
    assert!(
        store.iam_inventory(&account).await.unwrap().is_some(),
        "the IAM inventory is part of the pass"
    );
    let before_all = rows::table_rows(db.url(), &[]).await;
    let before = rows::table_rows(db.url(), &STAMPS).await;
    let checked_before = store.iam_inventory(&account).await.unwrap().unwrap();

    let again = pass(&h, &targets).await;
    assert!(again.iter().all(|r| !r.failed()), "{again:?}");
    let after_all = rows::table_rows(db.url(), &[]).await;
    let after = rows::table_rows(db.url(), &STAMPS).await;

    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for table in after.keys() {
        let (added, removed) = rows::table_diff(&before, &after, table);
        if table == "sync_runs" {
            assert_eq!(
                added.len(),
                REGIONS.len(),
                "one new run per region: {added:?}"
            );
            assert!(
                removed.is_empty(),
                "old runs stay as they were: {removed:?}"
            );
        } else {
            assert!(
                added.is_empty() && removed.is_empty(),
                "the unchanged re-sync wrote {table}: added {added:?}, removed {removed:?}"
            );
        }
    }
    // The stamps did move: every key was seen, and every current policy version fetched, again.
    for table in ["keys", "policy_versions"] {
        let (added, _) = rows::table_diff(&before_all, &after_all, table);
        assert_eq!(added.len(), arns.len(), "{table}: {added:?}");
    }
    // The IAM inventory row was not rewritten, yet reads as checked by this pass.
    let checked = store.iam_inventory(&account).await.unwrap().unwrap();
    assert!(
        checked.fetched_at > checked_before.fetched_at,
        "{checked:?}"
    );
    assert_eq!(checked.changed_at, checked_before.changed_at);
}

on_both_databases!(
    policy_fetched_at_follows_the_last_fetch,
    policy_versions_last_seen
);

async fn policy_versions_last_seen(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let read = seed_key(&kms, &default_policy(&account), "read").await;
    let failing = seed_key(&kms, &default_policy(&account), "failing").await;
    let h = harness(store.clone());
    let targets = [target(&account, &["us-east-1"])];
    pass(&h, &targets).await;
    let version = |arn: String| {
        let store = store.clone();
        async move { store.policy_versions(&arn).await.unwrap().pop().unwrap() }
    };
    let (read_1, failing_1) = (
        version(read.arn.clone()).await,
        version(failing.arn.clone()).await,
    );
    h.faults
        .lock()
        .unwrap()
        .failing_keys
        .insert(failing.key_id.clone());
    pass(&h, &targets).await;
    let (read_2, failing_2) = (
        version(read.arn.clone()).await,
        version(failing.arn.clone()).await,
    );
    assert_eq!(read_2.id, read_1.id, "the same version");
    assert!(read_2.last_seen > read_1.last_seen, "fetched again");
    assert_eq!(failing_2, failing_1, "not fetched: the stamp stays");
    // the export says when each policy was last fetched
    let export = keyward::report::json_export(store.as_ref(), false, chrono::Utc::now())
        .await
        .unwrap();
    let export = serde_json::to_value(&export).unwrap();
    let fetched_at = |arn: &str| {
        export["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key_arn"] == arn)
            .map(|f| f["policy_fetched_at"].clone())
            .unwrap()
    };
    assert_eq!(
        fetched_at(&read.arn),
        serde_json::to_value(read_2.last_seen).unwrap()
    );
    assert_eq!(
        fetched_at(&failing.arn),
        serde_json::to_value(failing_1.last_seen).unwrap()
    );
}

on_both_databases!(
    a_key_that_cannot_be_read_keeps_its_previous_state,
    failed_key_keeps_state
);

async fn failed_key_keeps_state(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let healthy = seed_key(&kms, &default_policy(&account), "healthy").await;
    let failing = seed_key(&kms, &default_policy(&account), "failing").await;
    let h = harness(store.clone());
    let targets = [target(&account, &["us-east-1"])];
    pass(&h, &targets).await;
    let row = |arn: String| {
        let store = store.clone();
        async move {
            let mut row = store.find_keys(&arn).await.unwrap().pop().unwrap();
            row.last_seen = chrono::DateTime::UNIX_EPOCH;
            row
        }
    };
    let findings = |arn: String| {
        let store = store.clone();
        async move {
            let mut f: Vec<_> = store
                .list_findings(true)
                .await
                .unwrap()
                .into_iter()
                .filter(|f| f.key_arn == arn)
                .map(|f| (f.rule_id, f.status, f.resolved_at, f.policy_sha256))
                .collect();
            f.sort();
            f
        }
    };
    let (row_before, findings_before) = (
        row(failing.arn.clone()).await,
        findings(failing.arn.clone()).await,
    );
    let versions_before = store.policy_versions(&failing.arn).await.unwrap();

    // both keys are fixed and tagged in AWS; one cannot be read (throttled beyond retries)
    for key in [&healthy, &failing] {
        kms.put_key_policy()
            .key_id(&key.key_id)
            .policy_name("default")
            .policy(fixed_policy(&account))
            .send()
            .await
            .unwrap();
        kms.tag_resource()
            .key_id(&key.key_id)
            .tags(
                aws_sdk_kms::types::Tag::builder()
                    .tag_key("team")
                    .tag_value("payments")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    h.faults
        .lock()
        .unwrap()
        .failing_keys
        .insert(failing.key_id.clone());
    let reports = pass(&h, &targets).await;
    // README "Sync": the run is failed (so the region is due again), the key untouched
    assert!(reports[0].failed(), "{reports:?}");
    assert_eq!(reports[0].keys_failed, 1);
    assert_eq!(
        reports[0].outcome.keys_changed, 1,
        "the healthy key changed"
    );
    assert_eq!(row(failing.arn.clone()).await, row_before);
    assert_eq!(findings(failing.arn.clone()).await, findings_before);
    assert!(
        findings_before
            .iter()
            .any(|(rule, status, ..)| rule == "KMS-DELEGATION" && status == "open")
    );
    assert_eq!(
        store.policy_versions(&failing.arn).await.unwrap(),
        versions_before
    );
    assert!(
        !open_rules(store.as_ref(), &healthy.arn)
            .await
            .contains(&"KMS-DELEGATION".to_string())
    );
    let run = store.latest_sync_runs().await.unwrap();
    let run = run.iter().find(|r| r.account_id == account).unwrap();
    assert_eq!(run.status, "failed");
    assert!(
        run.error.as_deref().unwrap().contains("left as they were"),
        "{run:?}"
    );
}

on_both_databases!(
    refused_reads_keep_the_stored_metadata,
    refused_reads_keep_metadata
);

async fn refused_reads_keep_metadata(store: Arc<dyn Store>) {
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let key = seed_key(&kms, &default_policy(&account), "tagged").await;
    kms.tag_resource()
        .key_id(&key.key_id)
        .tags(
            aws_sdk_kms::types::Tag::builder()
                .tag_key("team")
                .tag_value("payments")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    kms.create_grant()
        .key_id(&key.key_id)
        .grantee_principal(format!("arn:aws:iam::{account}:role/app"))
        .operations(aws_sdk_kms::types::GrantOperation::Decrypt)
        .send()
        .await
        .unwrap();
    let h = harness(store.clone());
    let targets = [target(&account, &["us-east-1"])];
    pass(&h, &targets).await;
    let stored = || {
        let store = store.clone();
        let arn = key.arn.clone();
        async move { store.find_keys(&arn).await.unwrap().pop().unwrap() }
    };
    let first = stored().await;
    assert_eq!(
        first.key.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(first.key.grants.len(), 1);
    assert!(first.key.metadata.unread_operations.is_empty());
    let rules_before = open_rules(store.as_ref(), &key.arn).await;

    // tags and grants refused: the stored ones stay, and the refusal is named
    {
        let mut f = h.faults.lock().unwrap();
        f.denied_tags.insert(key.key_id.clone());
        f.denied_grants.insert(key.key_id.clone());
    }
    let reports = pass(&h, &targets).await;
    assert!(
        !reports[0].failed(),
        "a refusal is not a failure: {reports:?}"
    );
    let second = stored().await;
    assert_eq!(second.key.tags, first.key.tags);
    assert_eq!(second.key.grants, first.key.grants);
    assert_eq!(
        second.key.metadata.unread_operations,
        vec!["ListResourceTags", "ListGrants"]
    );
    assert_eq!(open_rules(store.as_ref(), &key.arn).await, rules_before);
    // still refused: nothing changes any more
    let again = pass(&h, &targets).await;
    assert_eq!(again[0].outcome.keys_changed, 0, "{again:?}");

    // DescribeKey refused too: the metadata stays, the blind spot is KMS-UNREADABLE, and the
    // key-level findings judged on the stored metadata stay open
    h.faults
        .lock()
        .unwrap()
        .denied_describe
        .insert(key.key_id.clone());
    let reports = pass(&h, &targets).await;
    assert!(!reports[0].failed(), "{reports:?}");
    let third = stored().await;
    assert_eq!(third.key.key_manager, "CUSTOMER");
    assert_eq!(third.key.key_state, first.key.key_state);
    assert_eq!(third.key.key_spec, first.key.key_spec);
    assert_eq!(third.key.description, "tagged");
    assert_eq!(third.key.creation_date, first.key.creation_date);
    assert_eq!(third.key.rotation_enabled, first.key.rotation_enabled);
    assert_eq!(third.key.tags, first.key.tags);
    assert_eq!(third.key.grants, first.key.grants);
    assert_eq!(
        third.key.metadata.encryption_algorithms,
        first.key.metadata.encryption_algorithms
    );
    assert_eq!(third.key.metadata.unread_operations, vec!["DescribeKey"]);
    assert!(
        third
            .policy_error
            .as_deref()
            .unwrap()
            .contains("DescribeKey")
    );
    assert_eq!(
        open_rules(store.as_ref(), &key.arn).await,
        vec!["KMS-ROTATION-DISABLED", "KMS-UNREADABLE"]
    );
    let again = pass(&h, &targets).await;
    assert_eq!(again[0].outcome.keys_changed, 0, "{again:?}");

    // readable again: everything is read afresh
    *h.faults.lock().unwrap() = faults::Faults::default();
    pass(&h, &targets).await;
    let fourth = stored().await;
    assert!(fourth.key.metadata.unread_operations.is_empty());
    assert_eq!(open_rules(store.as_ref(), &key.arn).await, rules_before);
}

on_both_databases!(
    key_detail_shows_every_describe_key_field,
    key_detail_metadata
);

async fn key_detail_metadata(store: Arc<dyn Store>) {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    use tower::ServiceExt;
    let moto = Moto::start();
    let account = moto.fresh_account();
    let kms = moto.kms_client_for(&account, "us-east-1").await;
    let symmetric = seed_key(&kms, &default_policy(&account), "symmetric").await;
    let signing = kms
        .create_key()
        .policy(default_policy(&account))
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let signing = signing.key_metadata().unwrap().key_id().to_string();
    let h = harness(store.clone());
    pass(&h, &[target(&account, &["us-east-1"])]).await;

    store
        .create_token(&keyward::store::NewToken {
            name: "viewer".into(),
            role: "viewer".into(),
            sha256: keyward::web::auth::token_hash("secret-viewer"),
            created_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let app = keyward::web::build_app(keyward::web::AppState {
        store: store.clone(),
        metrics: Arc::new(Metrics::new()),
        clock: Arc::new(SystemClock),
        sync: None,
        remediation: None,
        metrics_public: false,
    });
    let detail = |key_id: String| {
        let app = app.clone();
        async move {
            let response = app
                .oneshot(
                    axum::http::Request::get(format!("/api/v1/keys/{key_id}"))
                        .header("authorization", "Bearer secret-viewer")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    let sym = detail(symmetric.key_id.clone()).await;
    assert_eq!(
        sym["metadata"]["encryption_algorithms"],
        serde_json::json!(["SYMMETRIC_DEFAULT"]),
        "{sym}"
    );
    assert_eq!(sym["metadata"]["enabled"], true);
    let sign = detail(signing).await;
    let algorithms = sign["metadata"]["signing_algorithms"].as_array().unwrap();
    assert!(
        algorithms.contains(&serde_json::json!("RSASSA_PSS_SHA_256")),
        "{sign}"
    );
    assert_eq!(sign["key_spec"], "RSA_2048");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_matches_what_moto_holds() {
    let sqlite = db::sqlite().await;
    export_matches_moto(sqlite.shared()).await;
    if let Some(pg) = db::postgres().await {
        export_matches_moto(pg.shared()).await;
    }
}

/// Two accounts × two regions of varied keys, synced and exported, against moto read through
/// a plain aws-sdk-kms client and judged by the engine.
async fn export_matches_moto(store: Arc<dyn Store>) {
    use keyward::policy::{self, EvalContext, KeyFacts, KeyManager};
    use sha2::{Digest, Sha256};
    use std::collections::BTreeMap;
    let moto = Moto::start();
    let accounts = [moto.fresh_account(), moto.fresh_account()];
    for (n, account) in accounts.iter().enumerate() {
        for region in REGIONS {
            let kms = moto.kms_client_for(account, region).await;
            let default = seed_key(&kms, &default_policy(account), "default").await;
            kms.create_alias()
                .alias_name(format!("alias/app-{n}-{region}"))
                .target_key_id(&default.key_id)
                .send()
                .await
                .unwrap();
            let fixed = seed_key(&kms, &fixed_policy(account), "fixed").await;
            kms.enable_key_rotation()
                .key_id(&fixed.key_id)
                .send()
                .await
                .unwrap();
            seed_key(&kms, &public_policy(account), "public").await;
            let leaving = seed_key(&kms, &fixed_policy(account), "leaving").await;
            kms.schedule_key_deletion()
                .key_id(&leaving.key_id)
                .pending_window_in_days(7)
                .send()
                .await
                .unwrap();
        }
    }
    let h = harness(store.clone());
    let targets: Vec<Target> = accounts.iter().map(|a| target(a, &REGIONS)).collect();
    let reports = pass(&h, &targets).await;
    assert!(reports.iter().all(|r| !r.failed()), "{reports:?}");
    let export = keyward::report::json_export(store.as_ref(), false, chrono::Utc::now())
        .await
        .unwrap();
    let export = serde_json::to_value(&export).unwrap();

    // What AWS (moto) holds, and what the engine says about it.
    let mut expected_keys = Vec::new();
    let mut expected_rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for account in &accounts {
        for region in REGIONS {
            let kms = moto.kms_client_for(account, region).await;
            let aliases = kms.list_aliases().send().await.unwrap();
            let listed = kms.list_keys().send().await.unwrap();
            for k in listed.keys() {
                let id = k.key_id().unwrap();
                let meta = kms.describe_key().key_id(id).send().await.unwrap();
                let meta = meta.key_metadata().unwrap();
                let text = kms
                    .get_key_policy()
                    .key_id(id)
                    .policy_name("default")
                    .send()
                    .await
                    .unwrap()
                    .policy()
                    .unwrap()
                    .to_string();
                let state = meta.key_state().unwrap().as_str().to_string();
                let rotation = if state == "PendingDeletion" {
                    None
                } else {
                    let r = kms
                        .get_key_rotation_status()
                        .key_id(id)
                        .send()
                        .await
                        .unwrap();
                    Some(r.key_rotation_enabled())
                };
                let mut names: Vec<String> = aliases
                    .aliases()
                    .iter()
                    .filter(|a| a.target_key_id() == Some(id))
                    .map(|a| a.alias_name().unwrap().to_string())
                    .collect();
                names.sort();
                let arn = meta.arn().unwrap().to_string();
                expected_keys.push(serde_json::json!({
                    "arn": arn,
                    "key_id": id,
                    "region": region,
                    "account_id": account,
                    "key_state": state,
                    "key_manager": meta.key_manager().unwrap().as_str(),
                    "aliases": names,
                    "policy_sha256": hex::encode(Sha256::digest(text.as_bytes())),
                }));
                let context = EvalContext {
                    account_id: account,
                    key_manager: KeyManager::Customer,
                    trusted_accounts: &[],
                };
                let deletion = meta.deletion_date().map(|d| {
                    chrono::DateTime::from_timestamp(d.secs(), d.subsec_nanos())
                        .unwrap()
                        .to_rfc3339()
                });
                let mut rules: Vec<String> = policy::evaluate(&text, &context)
                    .into_iter()
                    .chain(policy::evaluate_key(&KeyFacts {
                        key_manager: KeyManager::Customer,
                        key_spec: meta.key_spec().unwrap().as_str(),
                        key_state: &state,
                        origin: meta.origin().unwrap().as_str(),
                        rotation_enabled: rotation,
                        deletion_date: deletion.as_deref(),
                    }))
                    .map(|f| f.rule_id.as_str().to_string())
                    .collect();
                rules.sort();
                rules.dedup();
                expected_rules.insert(arn, rules);
            }
        }
    }
    expected_keys.sort_by_key(|k| k["arn"].as_str().unwrap().to_string());
    assert_eq!(expected_keys.len(), 16);

    let fields = [
        "arn",
        "key_id",
        "region",
        "account_id",
        "key_state",
        "key_manager",
        "aliases",
        "policy_sha256",
    ];
    let mut exported: Vec<serde_json::Value> = export["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| accounts.iter().any(|a| k["account_id"] == a.as_str()))
        .map(|k| {
            serde_json::Value::Object(
                fields
                    .iter()
                    .map(|f| (f.to_string(), k[*f].clone()))
                    .collect(),
            )
        })
        .collect();
    exported.sort_by_key(|k| k["arn"].as_str().unwrap().to_string());
    assert_eq!(exported, expected_keys);

    let mut exported_rules: BTreeMap<String, Vec<String>> = expected_rules
        .keys()
        .map(|k| (k.clone(), Vec::new()))
        .collect();
    for f in export["findings"].as_array().unwrap() {
        if let Some(rules) = exported_rules.get_mut(f["key_arn"].as_str().unwrap()) {
            assert_eq!(f["status"], "open", "{f}");
            rules.push(f["rule_id"].as_str().unwrap().to_string());
        }
    }
    for rules in exported_rules.values_mut() {
        rules.sort();
        rules.dedup();
    }
    assert_eq!(exported_rules, expected_rules);
    // the scenario is not vacuous: delegation, public, pending deletion and clean keys all occur
    let all: Vec<&String> = expected_rules.values().flatten().collect();
    for rule in ["KMS-DELEGATION", "KMS-PUBLIC", "KMS-PENDING-DELETION"] {
        assert!(
            all.iter().any(|r| *r == rule),
            "{rule} in {expected_rules:?}"
        );
    }
    assert!(expected_rules.values().any(Vec::is_empty));
}
