//! The storage contract: one suite over `&dyn Store`, run on SQLite always and on Postgres when
//! `KEYWARD_TEST_POSTGRES_URL` is set (each test on a database of its own).

#[path = "support/db.rs"]
mod db;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use keyward::store::{
    AccountRow, ApplyResult, ApprovalRow, AuditEvent, ComplianceFigures, DeliveryAttempt,
    FindingFilter, FindingRow, GrantRecord, IamInventoryRow, KeyFilter, KeyRecord, KeyRow, KeySort,
    KeyUpdate, NewAuditEvent, NewFinding, NewRemediation, NewSession, NewToken, NewWaiver,
    OutboxEvent, PolicyState, RegionClaim, RegionCompliance, RegionSync, RegionSyncOutcome,
    SessionRow, Store, StoreError, StoreStats, SyncRunFinish, WaiverScope, WebhookSubscription,
    audit_hash,
};
use keyward::store::{KeyMetadataExtra, MultiRegionConfig, MultiRegionKeyRef};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-west-1";

/// A fixed instant plus `secs`; whole seconds unless a test needs sub-second precision.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

fn arn_in(region: &str, id: &str) -> String {
    format!("arn:aws:kms:{region}:{ACCOUNT}:key/{id}")
}

fn key_in(region: &str, id: &str) -> KeyRecord {
    KeyRecord {
        arn: arn_in(region, id),
        account_id: ACCOUNT.into(),
        region: region.into(),
        key_id: id.into(),
        description: format!("key {id}"),
        key_manager: "CUSTOMER".into(),
        key_state: "Enabled".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        origin: "AWS_KMS".into(),
        multi_region: false,
        creation_date: Some(
            Utc.timestamp_opt(1_600_000_000, 123_456_000)
                .single()
                .expect("valid time"),
        ),
        deletion_date: None,
        rotation_enabled: Some(true),
        aliases: vec![format!("alias/{id}"), format!("alias/{id}-2")],
        tags: BTreeMap::from([
            ("team".to_string(), "payments".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]),
        grants: vec![GrantRecord {
            grant_id: "g1".into(),
            name: Some("ebs".into()),
            grantee_principal: Some("arn:aws:iam::111122223333:role/app".into()),
            retiring_principal: None,
            issuing_account: Some(format!("arn:aws:iam::{ACCOUNT}:root")),
            operations: vec!["Decrypt".into(), "Encrypt".into()],
        }],
        // Non-default, so the round-trip tests cover the metadata column on both backends.
        metadata: KeyMetadataExtra {
            enabled: Some(true),
            encryption_algorithms: vec!["SYMMETRIC_DEFAULT".into()],
            valid_to: Utc.timestamp_opt(1_900_000_000, 654_321_000).single(),
            pending_deletion_window_in_days: Some(7),
            multi_region_configuration: Some(MultiRegionConfig {
                key_type: Some("PRIMARY".into()),
                primary_key: Some(MultiRegionKeyRef {
                    arn: Some(arn_in(region, id)),
                    region: Some(region.into()),
                }),
                replica_keys: Vec::new(),
            }),
            ..KeyMetadataExtra::default()
        },
    }
}

fn key(id: &str) -> KeyRecord {
    key_in(REGION, id)
}

fn readable(text: &str) -> PolicyState {
    PolicyState::Readable {
        text: text.into(),
        sha256: sha(text),
    }
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn finding(rule: &str, locator: &str) -> NewFinding {
    NewFinding {
        rule_id: rule.into(),
        locator: locator.into(),
        severity: "high".into(),
        statement_index: Some(0),
        sid: Some("Enable IAM User Permissions".into()),
        message: format!("{rule} fires at {locator}"),
    }
}

fn update(key: KeyRecord, policy: PolicyState, findings: Vec<NewFinding>) -> KeyUpdate {
    KeyUpdate {
        fingerprint: format!("fp-{}", key.key_id),
        key,
        policy,
        evaluation: "rules-1".into(),
        findings,
        remediable: true,
    }
}

fn region_sync(
    now: DateTime<Utc>,
    listed: &[String],
    complete: bool,
    updates: Vec<KeyUpdate>,
) -> RegionSync {
    RegionSync {
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        now,
        listed: listed.to_vec(),
        listing_complete: complete,
        updates,
        unread: Vec::new(),
    }
}

async fn findings_of(store: &dyn Store, key_arn: &str) -> Vec<FindingRow> {
    store
        .list_findings(true)
        .await
        .expect("list findings")
        .into_iter()
        .filter(|f| f.key_arn == key_arn)
        .collect()
}

fn by_rule<'a>(findings: &'a [FindingRow], rule: &str) -> &'a FindingRow {
    findings
        .iter()
        .find(|f| f.rule_id == rule)
        .unwrap_or_else(|| panic!("no {rule} finding in {findings:#?}"))
}

// ---------------------------------------------------------------------------------------------

async fn migrations_are_idempotent(store: &dyn Store) {
    store.migrate().await.expect("second migration run");
    store.migrate().await.expect("third migration run");
    store.ping().await.expect("ping");
    assert!(store.list_keys(true).await.expect("keys").is_empty());
}

async fn accounts_upsert_by_id(store: &dyn Store) {
    store.upsert_accounts(&[]).await.expect("no accounts");
    let prod = AccountRow {
        id: "222233334444".into(),
        name: "prod".into(),
        regions: vec!["us-east-1".into(), "eu-west-1".into()],
    };
    let dev = AccountRow {
        id: "111122223333".into(),
        name: "dev".into(),
        regions: vec![],
    };
    store
        .upsert_accounts(&[prod.clone(), dev.clone()])
        .await
        .expect("insert accounts");
    assert_eq!(
        store.list_accounts().await.expect("list"),
        vec![dev.clone(), prod.clone()]
    );

    let renamed = AccountRow {
        name: "production".into(),
        regions: vec!["ap-south-1".into()],
        ..prod
    };
    store
        .upsert_accounts(std::slice::from_ref(&renamed))
        .await
        .expect("update account");
    assert_eq!(
        store.list_accounts().await.expect("list"),
        vec![dev, renamed]
    );
}

async fn first_sync_inserts_keys_versions_and_findings(store: &dyn Store) {
    let a = key("a");
    let mut b = key("b");
    b.key_manager = "AWS".into();
    b.rotation_enabled = None;
    b.creation_date = None;
    b.deletion_date = Some(t(86_400));
    b.multi_region = true;
    b.tags.clear();
    b.aliases.clear();
    b.grants.clear();
    let mut b_update = update(b.clone(), readable("{\"policy\":\"b\"}"), vec![]);
    b_update.remediable = false;
    let listed = [a.arn.clone(), b.arn.clone()];
    let outcome = store
        .apply_region_sync(&region_sync(
            t(0),
            &listed,
            true,
            vec![
                update(
                    a.clone(),
                    readable("{\"policy\":\"a\"}"),
                    vec![finding("KMS-DELEGATION", "0"), finding("KMS-PUBLIC", "1")],
                ),
                b_update,
            ],
        ))
        .await
        .expect("first sync");
    assert_eq!(
        outcome,
        RegionSyncOutcome {
            keys_changed: 2,
            policy_versions_added: 2,
            findings_opened: 2,
            findings_resolved: 0,
            keys_deleted: 0,
        }
    );

    let keys = store.list_keys(false).await.expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key, a, "every KeyRecord field round-trips");
    assert_eq!(keys[1].key, b);
    assert_eq!(
        keys[0].policy_sha256.as_deref(),
        Some(sha("{\"policy\":\"a\"}").as_str())
    );
    assert_eq!(keys[0].policy_error, None);
    assert!(keys[0].remediable);
    assert!(!keys[1].remediable);
    assert_eq!(keys[0].open_findings, 2);
    assert_eq!(keys[1].open_findings, 0);
    assert_eq!(
        (keys[0].first_seen, keys[0].last_seen, keys[0].deleted_at),
        (t(0), t(0), None)
    );

    let versions = store.policy_versions(&a.arn).await.expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].text, "{\"policy\":\"a\"}");
    assert_eq!(versions[0].sha256, sha("{\"policy\":\"a\"}"));
    assert_eq!(versions[0].key_arn, a.arn);
    assert_eq!(
        (versions[0].first_seen, versions[0].last_seen),
        (t(0), t(0))
    );
    assert!(
        store
            .policy_versions("arn:nope")
            .await
            .expect("none")
            .is_empty()
    );

    let findings = store.list_findings(false).await.expect("findings");
    assert_eq!(findings.len(), 2);
    let delegation = by_rule(&findings, "KMS-DELEGATION");
    assert_eq!(delegation.key_arn, a.arn);
    assert_eq!(delegation.account_id, ACCOUNT);
    assert_eq!(delegation.region, REGION);
    assert_eq!(delegation.locator, "0");
    assert_eq!(delegation.severity, "high");
    assert_eq!(delegation.status, "open");
    assert_eq!(delegation.statement_index, Some(0));
    assert_eq!(
        delegation.sid.as_deref(),
        Some("Enable IAM User Permissions")
    );
    assert_eq!(delegation.message, "KMS-DELEGATION fires at 0");
    assert_eq!(
        delegation.policy_sha256.as_deref(),
        Some(sha("{\"policy\":\"a\"}").as_str())
    );
    assert_eq!(
        (
            delegation.first_seen,
            delegation.last_seen,
            delegation.resolved_at
        ),
        (t(0), t(0), None)
    );
    assert_eq!(
        findings[0].rule_id, "KMS-DELEGATION",
        "ordered by key, rule, locator"
    );

    let fingerprints = store
        .key_fingerprints(ACCOUNT, REGION)
        .await
        .expect("fingerprints");
    assert_eq!(fingerprints.len(), 2);
    assert_eq!(fingerprints[0].arn, a.arn);
    assert_eq!(fingerprints[0].fingerprint, "fp-a");
    assert_eq!(fingerprints[0].evaluation, "rules-1");
    assert_eq!(fingerprints[0].policy_sha256, keys[0].policy_sha256);
    assert!(
        store
            .key_fingerprints(ACCOUNT, "us-east-1")
            .await
            .expect("other region")
            .is_empty()
    );
}

async fn unchanged_resync_only_stamps_last_seen(store: &dyn Store) {
    let a = key("a");
    let b = key("b");
    let listed = [a.arn.clone(), b.arn.clone()];
    store
        .apply_region_sync(&region_sync(
            t(0),
            &listed,
            true,
            vec![
                update(
                    a.clone(),
                    readable("A"),
                    vec![finding("KMS-DELEGATION", "0")],
                ),
                update(b.clone(), readable("B"), vec![]),
            ],
        ))
        .await
        .expect("first sync");
    let keys_before = store.list_keys(true).await.expect("keys");
    let findings_before = store.list_findings(true).await.expect("findings");
    let versions_before = store.policy_versions(&a.arn).await.expect("versions");
    let versions_before_b = store.policy_versions(&b.arn).await.expect("versions");
    let fingerprints_before = store.key_fingerprints(ACCOUNT, REGION).await.expect("fps");

    for (i, complete) in [(1, true), (2, false)] {
        let outcome = store
            .apply_region_sync(&region_sync(t(60 * i), &listed, complete, vec![]))
            .await
            .expect("unchanged re-sync");
        assert_eq!(outcome, RegionSyncOutcome::default(), "nothing changed");
    }
    // b could not be read in a third pass: seen in the listing, but its policy not fetched.
    let mut unread_b = region_sync(t(180), &listed, true, vec![]);
    unread_b.unread = vec![b.arn.clone()];
    store
        .apply_region_sync(&unread_b)
        .await
        .expect("re-sync with an unread key");

    let keys_after = store.list_keys(true).await.expect("keys");
    assert_eq!(keys_after.len(), keys_before.len());
    for (before, after) in keys_before.iter().zip(&keys_after) {
        assert_eq!(after.last_seen, t(180), "the only write: last_seen");
        assert_eq!(after.first_seen, before.first_seen);
        let mut expected = before.clone();
        expected.last_seen = t(180);
        assert_eq!(after, &expected);
    }
    // The current policy version was fetched again in every pass that read the key.
    let mut expected = versions_before.clone();
    expected[0].last_seen = t(180);
    assert_eq!(
        store.policy_versions(&a.arn).await.expect("versions"),
        expected
    );
    let mut expected = versions_before_b.clone();
    expected[0].last_seen = t(120);
    assert_eq!(
        store.policy_versions(&b.arn).await.expect("versions"),
        expected,
        "an unread key's policy version keeps the last time it was fetched"
    );
    assert_eq!(
        store.key_fingerprints(ACCOUNT, REGION).await.expect("fps"),
        fingerprints_before
    );
    let findings_after = store.list_findings(true).await.expect("findings");
    assert_eq!(findings_after.len(), findings_before.len());
    for (before, after) in findings_before.iter().zip(&findings_after) {
        // An open finding of a present key is as fresh as its key.
        let mut expected = before.clone();
        expected.last_seen = t(180);
        assert_eq!(after, &expected);
    }
}

async fn policy_change_adds_version_and_reconciles_findings(store: &dyn Store) {
    let a = key("a");
    let listed = [a.arn.clone()];
    store
        .apply_region_sync(&region_sync(
            t(0),
            &listed,
            true,
            vec![update(
                a.clone(),
                readable("P1"),
                vec![
                    finding("KMS-DELEGATION", "0"),
                    finding("KMS-NO-ADMIN", "key"),
                ],
            )],
        ))
        .await
        .expect("first sync");
    let mut changed = finding("KMS-NO-ADMIN", "key");
    changed.severity = "medium".into();
    changed.message = "reworded".into();
    changed.statement_index = None;
    changed.sid = None;
    let outcome = store
        .apply_region_sync(&region_sync(
            t(60),
            &listed,
            true,
            vec![update(
                a.clone(),
                readable("P2"),
                vec![changed, finding("KMS-PUBLIC", "2")],
            )],
        ))
        .await
        .expect("policy change");
    assert_eq!(
        outcome,
        RegionSyncOutcome {
            keys_changed: 1,
            policy_versions_added: 1,
            findings_opened: 1,
            findings_resolved: 1,
            keys_deleted: 0,
        }
    );
    let versions = store.policy_versions(&a.arn).await.expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.text.as_str()).collect::<Vec<_>>(),
        ["P1", "P2"]
    );
    assert_eq!(
        versions[0].last_seen,
        t(0),
        "the old version is not seen any more"
    );
    assert_eq!(
        (versions[1].first_seen, versions[1].last_seen),
        (t(60), t(60))
    );
    assert!(versions[0].id < versions[1].id);

    let findings = findings_of(store, &a.arn).await;
    let delegation = by_rule(&findings, "KMS-DELEGATION");
    assert_eq!(delegation.status, "resolved");
    assert_eq!(delegation.resolved_at, Some(t(60)));
    assert_eq!(delegation.last_seen, t(0));
    assert_eq!(
        delegation.policy_sha256.as_deref(),
        Some(sha("P1").as_str()),
        "evidence kept"
    );
    let no_admin = by_rule(&findings, "KMS-NO-ADMIN");
    assert_eq!(no_admin.status, "open");
    assert_eq!((no_admin.first_seen, no_admin.last_seen), (t(0), t(60)));
    assert_eq!(no_admin.severity, "medium");
    assert_eq!(no_admin.message, "reworded");
    assert_eq!(
        (no_admin.statement_index, no_admin.sid.clone()),
        (None, None)
    );
    assert_eq!(no_admin.policy_sha256.as_deref(), Some(sha("P2").as_str()));
    let public = by_rule(&findings, "KMS-PUBLIC");
    assert_eq!((public.status.as_str(), public.first_seen), ("open", t(60)));

    let open = store.list_findings(false).await.expect("open findings");
    assert_eq!(
        open.len(),
        2,
        "resolved findings only with include_resolved"
    );
    assert_eq!(
        store.list_keys(false).await.expect("keys")[0].open_findings,
        2
    );
}

async fn policy_history_a_b_a_keeps_three_versions(store: &dyn Store) {
    let a = key("a");
    let listed = [a.arn.clone()];
    for (i, text) in ["A", "B", "A"].into_iter().enumerate() {
        let now = t(60 * i64::try_from(i).expect("small"));
        let outcome = store
            .apply_region_sync(&region_sync(
                now,
                &listed,
                true,
                vec![update(a.clone(), readable(text), vec![])],
            ))
            .await
            .expect("sync");
        assert_eq!(outcome.policy_versions_added, 1);
    }
    // Metadata changed, same policy: the current version is seen again, no new row.
    let mut retagged = a.clone();
    retagged.tags.insert("owner".into(), "sec".into());
    let outcome = store
        .apply_region_sync(&region_sync(
            t(300),
            &listed,
            true,
            vec![update(retagged.clone(), readable("A"), vec![])],
        ))
        .await
        .expect("metadata change");
    assert_eq!(outcome.policy_versions_added, 0);
    let versions = store.policy_versions(&a.arn).await.expect("versions");
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.sha256.clone(), v.first_seen, v.last_seen))
            .collect::<Vec<_>>(),
        vec![
            (sha("A"), t(0), t(0)),
            (sha("B"), t(60), t(60)),
            (sha("A"), t(120), t(300)),
        ]
    );
    assert_eq!(store.list_keys(false).await.expect("keys")[0].key, retagged);
}

async fn resolved_finding_reopens_in_place(store: &dyn Store) {
    let a = key("a");
    let listed = [a.arn.clone()];
    let sync = |now, findings| {
        region_sync(
            now,
            &listed,
            true,
            vec![update(a.clone(), readable("P"), findings)],
        )
    };
    store
        .apply_region_sync(&sync(t(0), vec![finding("KMS-DELEGATION", "0")]))
        .await
        .expect("opens");
    let first = findings_of(store, &a.arn).await;
    let outcome = store
        .apply_region_sync(&sync(t(60), vec![]))
        .await
        .expect("resolves");
    assert_eq!((outcome.findings_opened, outcome.findings_resolved), (0, 1));
    let resolved = findings_of(store, &a.arn).await;
    assert_eq!(
        (resolved[0].status.as_str(), resolved[0].resolved_at),
        ("resolved", Some(t(60)))
    );
    assert_eq!(
        resolved[0].last_seen,
        t(0),
        "a resolved finding is not stamped by its key"
    );

    // Stays resolved through a re-sync that does not produce it.
    store
        .apply_region_sync(&region_sync(t(90), &listed, true, vec![]))
        .await
        .expect("unchanged");
    assert_eq!(findings_of(store, &a.arn).await[0].last_seen, t(0));

    let outcome = store
        .apply_region_sync(&sync(t(120), vec![finding("KMS-DELEGATION", "0")]))
        .await
        .expect("reopens");
    assert_eq!((outcome.findings_opened, outcome.findings_resolved), (1, 0));
    let reopened = findings_of(store, &a.arn).await;
    assert_eq!(reopened.len(), 1, "same row");
    assert_eq!(reopened[0].id, first[0].id);
    assert_eq!(reopened[0].status, "open");
    assert_eq!(reopened[0].resolved_at, None);
    assert_eq!(
        (reopened[0].first_seen, reopened[0].last_seen),
        (t(0), t(120))
    );

    // Still open and still firing: not counted as opened again.
    let outcome = store
        .apply_region_sync(&sync(t(180), vec![finding("KMS-DELEGATION", "0")]))
        .await
        .expect("still open");
    assert_eq!((outcome.findings_opened, outcome.findings_resolved), (0, 0));
}

async fn unreadable_policy_keeps_last_readable_version(store: &dyn Store) {
    let a = key("a");
    let fresh = key("fresh");
    let listed = [a.arn.clone(), fresh.arn.clone()];
    store
        .apply_region_sync(&region_sync(
            t(0),
            &listed[..1],
            false,
            vec![update(
                a.clone(),
                readable("P1"),
                vec![finding("KMS-DELEGATION", "0")],
            )],
        ))
        .await
        .expect("readable");
    let unreadable = |k: &KeyRecord| {
        update(
            k.clone(),
            PolicyState::Unreadable {
                reason: "AccessDeniedException".into(),
            },
            vec![finding("KMS-UNREADABLE", "key")],
        )
    };
    let outcome = store
        .apply_region_sync(&region_sync(
            t(60),
            &listed,
            true,
            vec![unreadable(&a), unreadable(&fresh)],
        ))
        .await
        .expect("unreadable");
    assert_eq!(
        outcome,
        RegionSyncOutcome {
            keys_changed: 2,
            policy_versions_added: 0,
            findings_opened: 2,
            findings_resolved: 1,
            keys_deleted: 0,
        }
    );
    let keys = store.list_keys(false).await.expect("keys");
    assert_eq!(keys[0].key.arn, a.arn);
    assert_eq!(
        keys[0].policy_sha256.as_deref(),
        Some(sha("P1").as_str()),
        "last readable kept"
    );
    assert_eq!(
        keys[0].policy_error.as_deref(),
        Some("AccessDeniedException")
    );
    assert_eq!(
        (
            keys[1].policy_sha256.clone(),
            keys[1].policy_error.is_some()
        ),
        (None, true)
    );
    let versions = store.policy_versions(&a.arn).await.expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].last_seen, t(0), "nothing was read at t(60)");
    assert!(
        store
            .policy_versions(&fresh.arn)
            .await
            .expect("none")
            .is_empty()
    );
    let fps = store.key_fingerprints(ACCOUNT, REGION).await.expect("fps");
    assert_eq!(
        fps[0].policy_error.as_deref(),
        Some("AccessDeniedException")
    );

    let findings = findings_of(store, &a.arn).await;
    assert_eq!(by_rule(&findings, "KMS-DELEGATION").status, "resolved");
    let blind = by_rule(&findings, "KMS-UNREADABLE");
    assert_eq!(blind.status, "open");
    assert_eq!(blind.policy_sha256, None, "judged on no policy text");

    // Readable again with the same text: no new version, the error clears.
    let outcome = store
        .apply_region_sync(&region_sync(
            t(120),
            &listed,
            true,
            vec![update(
                a.clone(),
                readable("P1"),
                vec![finding("KMS-DELEGATION", "0")],
            )],
        ))
        .await
        .expect("readable again");
    assert_eq!(
        (
            outcome.policy_versions_added,
            outcome.findings_opened,
            outcome.findings_resolved
        ),
        (0, 1, 1)
    );
    let versions = store.policy_versions(&a.arn).await.expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].last_seen, t(120));
    let keys = store.list_keys(false).await.expect("keys");
    assert_eq!(
        (
            keys[0].policy_sha256.as_deref(),
            keys[0].policy_error.as_deref()
        ),
        (Some(sha("P1").as_str()), None)
    );
}

async fn deletion_needs_a_complete_listing(store: &dyn Store) {
    let a = key("a");
    let b = key("b");
    let both = [a.arn.clone(), b.arn.clone()];
    store
        .apply_region_sync(&region_sync(
            t(0),
            &both,
            true,
            vec![
                update(a.clone(), readable("A"), vec![finding("KMS-PUBLIC", "0")]),
                update(
                    b.clone(),
                    readable("B"),
                    vec![finding("KMS-DELEGATION", "0"), finding("KMS-PUBLIC", "0")],
                ),
            ],
        ))
        .await
        .expect("first sync");

    // An incomplete listing without b: b is left alone.
    let outcome = store
        .apply_region_sync(&region_sync(t(60), &both[..1], false, vec![]))
        .await
        .expect("partial listing");
    assert_eq!(outcome, RegionSyncOutcome::default());
    assert_eq!(store.list_keys(false).await.expect("keys").len(), 2);
    assert_eq!(store.list_findings(false).await.expect("findings").len(), 3);

    // A complete listing without b: b is deleted and its findings resolved.
    let outcome = store
        .apply_region_sync(&region_sync(t(120), &both[..1], true, vec![]))
        .await
        .expect("complete listing");
    assert_eq!(
        outcome,
        RegionSyncOutcome {
            keys_deleted: 1,
            findings_resolved: 2,
            ..RegionSyncOutcome::default()
        }
    );
    let live = store.list_keys(false).await.expect("keys");
    assert_eq!(
        live.iter().map(|k| k.key.arn.as_str()).collect::<Vec<_>>(),
        [a.arn.as_str()]
    );
    let all = store.list_keys(true).await.expect("keys");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].key.arn, b.arn);
    assert_eq!(all[1].deleted_at, Some(t(120)));
    assert_eq!(all[0].last_seen, t(120));
    assert_eq!(all[1].last_seen, t(0), "last listed at t(0)");
    assert_eq!(all[1].open_findings, 0);
    let fps = store.key_fingerprints(ACCOUNT, REGION).await.expect("fps");
    assert_eq!(
        fps.iter().map(|f| f.arn.as_str()).collect::<Vec<_>>(),
        [a.arn.as_str()]
    );
    let b_findings = findings_of(store, &b.arn).await;
    assert!(
        b_findings
            .iter()
            .all(|f| f.status == "resolved" && f.resolved_at == Some(t(120)))
    );
    assert!(
        store
            .list_findings(false)
            .await
            .expect("open")
            .iter()
            .all(|f| f.key_arn == a.arn)
    );

    // Deleted stays deleted through later syncs, and deletion is counted once.
    let outcome = store
        .apply_region_sync(&region_sync(t(180), &both[..1], true, vec![]))
        .await
        .expect("again");
    assert_eq!(outcome, RegionSyncOutcome::default());
    assert_eq!(
        store.list_keys(true).await.expect("keys")[1].last_seen,
        t(0),
        "a deleted key is not stamped"
    );

    // A key that comes back is revived in place.
    let outcome = store
        .apply_region_sync(&region_sync(
            t(240),
            &both,
            true,
            vec![update(
                b.clone(),
                readable("B"),
                vec![finding("KMS-PUBLIC", "0")],
            )],
        ))
        .await
        .expect("revival");
    assert_eq!(
        (
            outcome.findings_opened,
            outcome.policy_versions_added,
            outcome.keys_deleted
        ),
        (1, 0, 0)
    );
    let revived = store.list_keys(false).await.expect("keys");
    assert_eq!(revived.len(), 2);
    assert_eq!(
        (
            revived[1].first_seen,
            revived[1].last_seen,
            revived[1].deleted_at
        ),
        (t(0), t(240), None)
    );
}

async fn partial_data_never_resolves_other_keys(store: &dyn Store) {
    let keys = [key("a"), key("b"), key("c"), key_in("us-east-1", "z")];
    for k in &keys {
        let mut sync = region_sync(
            t(0),
            std::slice::from_ref(&k.arn),
            false,
            vec![update(
                k.clone(),
                readable("P"),
                vec![finding("KMS-PUBLIC", "0")],
            )],
        );
        sync.region = k.region.clone();
        store.apply_region_sync(&sync).await.expect("seed");
    }
    let before = store.list_findings(true).await.expect("findings");
    assert_eq!(before.len(), 4);

    // A failed fetch of b and c: the sync carries only a, fixed.
    let outcome = store
        .apply_region_sync(&region_sync(
            t(60),
            &[keys[0].arn.clone()],
            false,
            vec![update(keys[0].clone(), readable("P2"), vec![])],
        ))
        .await
        .expect("partial");
    assert_eq!((outcome.findings_resolved, outcome.keys_deleted), (1, 0));
    let after = store.list_findings(true).await.expect("findings");
    for (old, new) in before.iter().zip(&after) {
        if new.key_arn == keys[0].arn {
            assert_eq!(new.status, "resolved");
        } else {
            assert_eq!(old, new, "untouched: {}", new.key_arn);
        }
    }

    // A complete listing of eu-west-1 never deletes keys of another region.
    store
        .apply_region_sync(&region_sync(t(120), &[], true, vec![]))
        .await
        .expect("empty complete listing");
    let live = store.list_keys(false).await.expect("keys");
    assert_eq!(
        live.iter().map(|k| k.key.arn.clone()).collect::<Vec<_>>(),
        [keys[3].arn.clone()]
    );
    assert_eq!(live[0].open_findings, 1);
}

async fn abandoned_runs_are_closed_as_failed(store: &dyn Store) {
    let dead = store
        .start_sync_run(ACCOUNT, REGION, t(0))
        .await
        .expect("start");
    let elsewhere = store
        .start_sync_run(ACCOUNT, "us-east-1", t(0))
        .await
        .expect("start");
    let closed = store
        .abandon_sync_runs(ACCOUNT, REGION, t(30), "abandoned")
        .await
        .expect("abandon");
    assert_eq!(closed, 1);
    let runs = store.recent_sync_runs(10).await.expect("runs");
    let run = |id| runs.iter().find(|r| r.id == id).expect("run");
    assert_eq!(run(dead).status, "failed");
    assert_eq!(run(dead).error.as_deref(), Some("abandoned"));
    assert_eq!(run(dead).finished_at, Some(t(30)));
    assert_eq!(run(elsewhere).status, "running");
    // paging: newest first, strictly before the cursor, with the total
    let (page, total) = store.sync_runs_page(None, 1).await.expect("page");
    assert_eq!((page.len(), total), (1, 2));
    assert_eq!(page[0].id, elsewhere);
    let (rest, _) = store
        .sync_runs_page(Some(page[0].id), 10)
        .await
        .expect("page");
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), vec![dead]);
    // finished runs are never touched
    assert_eq!(
        store
            .abandon_sync_runs(ACCOUNT, REGION, t(40), "again")
            .await
            .expect("abandon"),
        0
    );
}

async fn sync_runs_start_finish_recent_latest(store: &dyn Store) {
    assert!(store.recent_sync_runs(10).await.expect("none").is_empty());
    assert!(store.latest_sync_runs().await.expect("none").is_empty());
    let first = store
        .start_sync_run(ACCOUNT, REGION, t(0))
        .await
        .expect("start");
    let other = store
        .start_sync_run(ACCOUNT, "us-east-1", t(1))
        .await
        .expect("start");
    let second = store
        .start_sync_run(ACCOUNT, REGION, t(60))
        .await
        .expect("start");
    assert!(first < other && other < second);

    let outcome = RegionSyncOutcome {
        keys_changed: 3,
        policy_versions_added: 2,
        findings_opened: 5,
        findings_resolved: 1,
        keys_deleted: 1,
    };
    store
        .finish_sync_run(
            first,
            &SyncRunFinish {
                finished_at: t(10),
                keys_seen: 7,
                outcome: outcome.clone(),
                error: None,
                iam_error: None,
            },
        )
        .await
        .expect("finish ok");
    store
        .finish_sync_run(
            other,
            &SyncRunFinish {
                finished_at: t(11),
                keys_seen: 0,
                outcome: RegionSyncOutcome::default(),
                error: Some("AccessDenied: ListKeys".into()),
                iam_error: None,
            },
        )
        .await
        .expect("finish failed");
    let missing = store
        .finish_sync_run(
            second + 1000,
            &SyncRunFinish {
                finished_at: t(11),
                keys_seen: 0,
                outcome: RegionSyncOutcome::default(),
                error: None,
                iam_error: None,
            },
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    let recent = store.recent_sync_runs(10).await.expect("recent");
    assert_eq!(
        recent.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second, other, first]
    );
    assert_eq!(store.recent_sync_runs(1).await.expect("recent").len(), 1);
    let done = &recent[2];
    assert_eq!(
        (done.account_id.as_str(), done.region.as_str()),
        (ACCOUNT, REGION)
    );
    assert_eq!((done.started_at, done.finished_at), (t(0), Some(t(10))));
    assert_eq!(done.status, "succeeded");
    assert_eq!(
        (
            done.keys_seen,
            done.keys_changed,
            done.policy_versions_added,
            done.findings_opened,
            done.findings_resolved,
            done.keys_deleted
        ),
        (7, 3, 2, 5, 1, 1)
    );
    assert_eq!(done.error, None);
    assert_eq!(recent[1].status, "failed");
    assert_eq!(recent[1].error.as_deref(), Some("AccessDenied: ListKeys"));
    assert_eq!(
        (recent[0].status.as_str(), recent[0].finished_at),
        ("running", None)
    );

    let latest = store.latest_sync_runs().await.expect("latest");
    assert_eq!(
        latest
            .iter()
            .map(|r| (r.region.as_str(), r.id))
            .collect::<Vec<_>>(),
        [(REGION, second), ("us-east-1", other)]
    );
}

async fn claim_and_release(store: &dyn Store) {
    let claim = |owner: &'static str, now: DateTime<Utc>, due_before: DateTime<Utc>| async move {
        store
            .claim_region(
                ACCOUNT,
                REGION,
                owner,
                now,
                now + Duration::seconds(300),
                due_before,
            )
            .await
            .expect("claim")
    };
    let held_by = |owner: &str| RegionClaim::Held {
        owner: Some(owner.to_string()),
    };
    assert_eq!(
        claim("r1", t(0), t(0)).await,
        RegionClaim::Claimed,
        "a fresh region is claimable"
    );
    assert_eq!(claim("r2", t(10), t(10)).await, held_by("r1"));
    assert_eq!(
        claim("r1", t(20), t(20)).await,
        held_by("r1"),
        "a holder cannot claim again: a second pass of the same process must not run"
    );
    assert!(
        store
            .renew_region(ACCOUNT, REGION, "r1", t(320))
            .await
            .expect("renew"),
        "the owner renews"
    );
    assert!(
        !store
            .renew_region(ACCOUNT, REGION, "r2", t(900))
            .await
            .expect("renew"),
        "only the owner renews"
    );
    // r1's lease now runs to t(320).
    store
        .release_region(ACCOUNT, REGION, "r2", Some(t(30)))
        .await
        .expect("foreign release");
    assert_eq!(
        claim("r2", t(310), t(310)).await,
        held_by("r1"),
        "a non-owner cannot release, and the renewal holds past the first lease"
    );

    store
        .release_region(ACCOUNT, REGION, "r1", Some(t(50)))
        .await
        .expect("release");
    assert_eq!(
        claim("r2", t(60), t(50)).await,
        RegionClaim::NotDue {
            last_finished_at: t(50)
        },
        "finished at t(50), not due before t(50)"
    );
    assert_eq!(claim("r2", t(60), t(51)).await, RegionClaim::Claimed, "due");
    // r2 crashes; its lease runs to t(360). Held and not due: held is the reason given.
    assert_eq!(
        claim("r3", t(359), t(40)).await,
        held_by("r2"),
        "lease unexpired"
    );
    assert_eq!(
        claim("r3", t(360), t(360)).await,
        RegionClaim::Claimed,
        "lease expired"
    );
    // A release without a finish time (an abandoned pass) keeps the last finish.
    store
        .release_region(ACCOUNT, REGION, "r3", None)
        .await
        .expect("release");
    assert_eq!(
        claim("r1", t(400), t(50)).await,
        RegionClaim::NotDue {
            last_finished_at: t(50)
        },
        "still finished at t(50)"
    );
    assert_eq!(claim("r1", t(400), t(400)).await, RegionClaim::Claimed);
    // Other regions are independent.
    assert!(
        store
            .claim_region(ACCOUNT, "us-east-1", "r2", t(400), t(700), t(400))
            .await
            .expect("claim")
            .is_claimed()
    );

    // Sub-second precision: the lease holds until its exact instant.
    let base = t(1000);
    let until = base + Duration::microseconds(500_000);
    assert!(
        store
            .claim_region(ACCOUNT, "ap-south-1", "a", base, until, base)
            .await
            .expect("claim")
            .is_claimed()
    );
    let almost = until - Duration::microseconds(1);
    assert!(
        !store
            .claim_region(ACCOUNT, "ap-south-1", "b", almost, until, almost)
            .await
            .expect("claim")
            .is_claimed()
    );
    assert!(
        store
            .claim_region(
                ACCOUNT,
                "ap-south-1",
                "b",
                until,
                until + Duration::seconds(1),
                until
            )
            .await
            .expect("claim")
            .is_claimed()
    );
}

/// A pass whose lease expired and was taken over by another replica writes nothing: the
/// fenced write checks the holder inside its transaction.
async fn fenced_sync_refuses_a_lost_lease(store: &dyn Store) {
    let a = key("a");
    let listed = [a.arn.clone()];
    let sync = region_sync(
        t(100),
        &listed,
        true,
        vec![update(
            a.clone(),
            readable("{\"policy\":\"a\"}"),
            vec![finding("KMS-DELEGATION", "0")],
        )],
    );
    let err = store
        .apply_region_sync_fenced(&sync, "r1")
        .await
        .expect_err("no lease row: nobody holds the region");
    assert!(err.to_string().contains("lease lost"), "{err}");

    assert!(
        store
            .claim_region(ACCOUNT, REGION, "r1", t(0), t(60), t(0))
            .await
            .expect("claim")
            .is_claimed()
    );
    // r1's pass outlives its lease without renewing it; r2 takes the region over.
    assert!(
        store
            .claim_region(ACCOUNT, REGION, "r2", t(61), t(361), t(61))
            .await
            .expect("claim")
            .is_claimed()
    );
    let err = store
        .apply_region_sync_fenced(&sync, "r1")
        .await
        .expect_err("r1 lost the lease");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("lease lost"), "{err}");
    assert!(err.to_string().contains("r2"), "{err}");
    assert!(
        store.list_keys(true).await.expect("keys").is_empty(),
        "nothing of r1's pass was written"
    );
    assert!(
        store
            .list_findings(true)
            .await
            .expect("findings")
            .is_empty()
    );
    assert!(
        !store
            .renew_region(ACCOUNT, REGION, "r1", t(400))
            .await
            .expect("renew"),
        "a lost lease cannot be renewed"
    );

    // The holder writes; an expired lease nobody took over still counts as held.
    let outcome = store
        .apply_region_sync_fenced(&sync, "r2")
        .await
        .expect("r2 holds the lease");
    assert_eq!(
        (outcome.keys_changed, outcome.policy_versions_added),
        (1, 1)
    );
    let later = region_sync(t(900), &listed, true, vec![]);
    store
        .apply_region_sync_fenced(&later, "r2")
        .await
        .expect("expired at t(361) but not taken over");
    assert_eq!(store.list_keys(false).await.expect("keys").len(), 1);
}

/// Eight tasks on two replicas race for a region, first while its lease row does not exist yet,
/// then for an existing free row, round after round: exactly one wins each time.
async fn concurrent_claims_have_one_winner(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let region = "race";
    for round in 0..8 {
        let now = t(1000 * round);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = if i % 2 == 0 {
                Arc::clone(&first)
            } else {
                Arc::clone(&second)
            };
            tasks.spawn(async move {
                let owner = format!("owner-{i}");
                let won = store
                    .claim_region(
                        ACCOUNT,
                        region,
                        &owner,
                        now,
                        now + Duration::seconds(300),
                        now,
                    )
                    .await
                    .expect("claim");
                won.is_claimed().then_some(owner)
            });
        }
        let winners: Vec<String> = tasks.join_all().await.into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        first
            .release_region(
                ACCOUNT,
                region,
                &winners[0],
                Some(now + Duration::seconds(1)),
            )
            .await
            .expect("release");
    }
}

/// Writers of different regions at once: SQLite queues them (BEGIN IMMEDIATE + busy timeout).
async fn concurrent_region_syncs_all_apply(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            Arc::clone(&first)
        } else {
            Arc::clone(&second)
        };
        tasks.spawn(async move {
            let region = format!("region-{i}");
            let keys: Vec<KeyRecord> = (0..20).map(|k| key_in(&region, &format!("k{k}"))).collect();
            let listed: Vec<String> = keys.iter().map(|k| k.arn.clone()).collect();
            let updates = keys
                .into_iter()
                .map(|k| update(k, readable("P"), vec![finding("KMS-PUBLIC", "0")]))
                .collect();
            let mut sync = region_sync(t(0), &listed, true, updates);
            sync.region = region;
            store
                .apply_region_sync(&sync)
                .await
                .expect("concurrent sync")
        });
    }
    for outcome in tasks.join_all().await {
        assert_eq!((outcome.keys_changed, outcome.findings_opened), (20, 20));
    }
    assert_eq!(first.list_keys(false).await.expect("keys").len(), 160);
}

/// A sync cancelled at any point (its future dropped) leaves nothing behind, and the store
/// keeps working: the transaction is rolled back on drop.
async fn cancelled_sync_is_all_or_nothing(store: &dyn Store) {
    for (round, delay_us) in [0u64, 100, 500, 1_000, 2_000, 5_000, 20_000]
        .into_iter()
        .enumerate()
    {
        let region = format!("cancel-{round}");
        let keys: Vec<KeyRecord> = (0..100)
            .map(|k| key_in(&region, &format!("k{k:03}")))
            .collect();
        let listed: Vec<String> = keys.iter().map(|k| k.arn.clone()).collect();
        let updates = keys
            .into_iter()
            .map(|k| update(k, readable("P"), vec![finding("KMS-PUBLIC", "0")]))
            .collect();
        let mut sync = region_sync(t(0), &listed, true, updates);
        sync.region = region.clone();
        let finished = tokio::time::timeout(
            std::time::Duration::from_micros(delay_us),
            store.apply_region_sync(&sync),
        )
        .await
        .is_ok();
        // A cancelled future may leave its COMMIT (or rollback) still landing on the database,
        // and the two counts below are separate reads; so wait for them to settle, bounded. A
        // partial write would stay partial and fail here.
        let mut attempts = 0;
        let (stored, findings) = loop {
            let stored = store
                .key_fingerprints(ACCOUNT, &region)
                .await
                .expect("fingerprints")
                .len();
            let findings = store
                .list_findings(true)
                .await
                .expect("findings")
                .iter()
                .filter(|f| f.region == region)
                .count();
            attempts += 1;
            if (stored, findings) == (0, 0) || (stored, findings) == (100, 100) || attempts == 40 {
                break (stored, findings);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(
            (stored, findings) == (0, 0) || (stored, findings) == (100, 100),
            "round {round} (finished: {finished}): {stored} keys, {findings} findings"
        );
        if finished {
            assert_eq!(stored, 100);
        }
        // The next writer is not blocked by an abandoned transaction.
        store
            .apply_region_sync(&sync)
            .await
            .expect("sync after a cancelled one");
        assert_eq!(
            store
                .key_fingerprints(ACCOUNT, &region)
                .await
                .expect("fingerprints")
                .len(),
            100
        );
    }
}

async fn stats_count_live_keys_and_open_findings(store: &dyn Store) {
    assert_eq!(store.stats().await.expect("stats"), StoreStats::default());
    let (a, b, c, gone) = (key("a"), key("b"), key("c"), key("gone"));
    let mut critical = finding("KMS-PUBLIC", "1");
    critical.severity = "critical".into();
    store
        .apply_region_sync(&region_sync(
            t(0),
            &[
                a.arn.clone(),
                b.arn.clone(),
                c.arn.clone(),
                gone.arn.clone(),
            ],
            true,
            vec![
                update(a.clone(), readable("A"), vec![]),
                update(
                    b.clone(),
                    readable("B"),
                    vec![finding("KMS-DELEGATION", "0"), critical.clone()],
                ),
                update(
                    c.clone(),
                    readable("C"),
                    vec![finding("KMS-DELEGATION", "0")],
                ),
                update(
                    gone.clone(),
                    readable("G"),
                    vec![finding("KMS-NOT-ACTION", "0")],
                ),
            ],
        ))
        .await
        .expect("seed");
    store
        .apply_region_sync(&region_sync(
            t(60),
            &[a.arn.clone(), b.arn.clone(), c.arn.clone()],
            true,
            vec![update(c.clone(), readable("C2"), vec![])],
        ))
        .await
        .expect("gone deleted, c fixed");
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            keys_compliant: 2,
            keys_noncompliant: 1,
            open_findings: vec![
                ("KMS-DELEGATION".into(), "high".into(), 1),
                ("KMS-PUBLIC".into(), "critical".into(), 1),
            ],
        }
    );
}

// --- API queries ------------------------------------------------------------------------------

const OTHER_ACCOUNT: &str = "444455556666";

fn with_severity(mut finding: NewFinding, severity: &str) -> NewFinding {
    finding.severity = severity.into();
    finding
}

/// An inventory for the API filters, in ARN order a b c (d) e y x:
/// - a: open KMS-PUBLIC critical and KMS-DELEGATION high
/// - b: open KMS-DELEGATION high, resolved KMS-NOT-ACTION; description "Legacy tier 150"
/// - c: compliant; alias `alias/Payments-DB`, tag `Owner` = `Team_50%`
/// - d: deleted, its KMS-PUBLIC critical finding resolved
/// - e: open KMS-PUBLIC high and KMS-DELEGATION critical
/// - y: another account, open KMS-DELEGATION high
/// - x: another region, compliant
async fn seed_inventory(store: &dyn Store) -> BTreeMap<&'static str, KeyRecord> {
    let a = key("a");
    let mut b = key("b");
    b.description = "Legacy tier 150".into();
    let mut c = key("c");
    c.aliases = vec!["alias/Payments-DB".into()];
    c.tags.insert("Owner".into(), "Team_50%".into());
    let d = key("d");
    let e = key("e");
    let public_critical = with_severity(finding("KMS-PUBLIC", "0"), "critical");
    let all = [&a, &b, &c, &d, &e].map(|k| k.arn.clone());
    store
        .apply_region_sync(&region_sync(
            t(0),
            &all,
            true,
            vec![
                update(
                    a.clone(),
                    readable("A"),
                    vec![public_critical.clone(), finding("KMS-DELEGATION", "1")],
                ),
                update(
                    b.clone(),
                    readable("B"),
                    vec![
                        finding("KMS-DELEGATION", "0"),
                        finding("KMS-NOT-ACTION", "0"),
                    ],
                ),
                update(c.clone(), readable("C"), vec![]),
                update(d.clone(), readable("D"), vec![public_critical]),
                update(
                    e.clone(),
                    readable("E"),
                    vec![
                        finding("KMS-PUBLIC", "0"),
                        with_severity(finding("KMS-DELEGATION", "1"), "critical"),
                    ],
                ),
            ],
        ))
        .await
        .expect("seed the region");
    let present = [&a, &b, &c, &e].map(|k| k.arn.clone());
    store
        .apply_region_sync(&region_sync(
            t(60),
            &present,
            true,
            vec![update(
                b.clone(),
                readable("B2"),
                vec![finding("KMS-DELEGATION", "0")],
            )],
        ))
        .await
        .expect("d deleted, b's KMS-NOT-ACTION resolved");

    let x = key_in("us-east-1", "x");
    let mut sync = region_sync(
        t(0),
        std::slice::from_ref(&x.arn),
        true,
        vec![update(x.clone(), readable("X"), vec![])],
    );
    sync.region = "us-east-1".into();
    store.apply_region_sync(&sync).await.expect("seed x");

    let mut y = key("y");
    y.account_id = OTHER_ACCOUNT.into();
    y.arn = format!("arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:key/y");
    let mut sync = region_sync(
        t(0),
        std::slice::from_ref(&y.arn),
        true,
        vec![update(
            y.clone(),
            readable("Y"),
            vec![finding("KMS-DELEGATION", "0")],
        )],
    );
    sync.account_id = OTHER_ACCOUNT.into();
    store.apply_region_sync(&sync).await.expect("seed y");

    BTreeMap::from([
        ("a", a),
        ("b", b),
        ("c", c),
        ("d", d),
        ("e", e),
        ("x", x),
        ("y", y),
    ])
}

/// The key ids one unpaged query returns, checking that the total agrees.
async fn key_ids(store: &dyn Store, filter: KeyFilter) -> Vec<String> {
    let (rows, total) = store
        .query_keys(&filter, None, 500)
        .await
        .unwrap_or_else(|e| panic!("query keys {filter:?}: {e}"));
    assert_eq!(total, rows.len() as u64, "total of {filter:?}");
    rows.into_iter().map(|r| r.key.key_id).collect()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

async fn query_keys_filters(store: &dyn Store) {
    let keys = seed_inventory(store).await;
    let q = |text: &str| KeyFilter {
        q: some(text),
        ..KeyFilter::default()
    };
    let cases: Vec<(KeyFilter, Vec<&str>)> = vec![
        (KeyFilter::default(), vec!["a", "b", "c", "e", "y", "x"]),
        (
            KeyFilter {
                include_deleted: true,
                ..KeyFilter::default()
            },
            vec!["a", "b", "c", "d", "e", "y", "x"],
        ),
        (
            KeyFilter {
                account: some(OTHER_ACCOUNT),
                ..KeyFilter::default()
            },
            vec!["y"],
        ),
        (
            KeyFilter {
                account: some(ACCOUNT),
                ..KeyFilter::default()
            },
            vec!["a", "b", "c", "e", "x"],
        ),
        (
            KeyFilter {
                region: some("us-east-1"),
                ..KeyFilter::default()
            },
            vec!["x"],
        ),
        (
            KeyFilter {
                account: some(ACCOUNT),
                region: some(REGION),
                ..KeyFilter::default()
            },
            vec!["a", "b", "c", "e"],
        ),
        (
            KeyFilter {
                rule: some("KMS-DELEGATION"),
                ..KeyFilter::default()
            },
            vec!["a", "b", "e", "y"],
        ),
        (
            KeyFilter {
                rule: some("KMS-PUBLIC"),
                ..KeyFilter::default()
            },
            vec!["a", "e"],
        ),
        // Resolved findings do not count, nor do those of deleted keys (resolved on deletion).
        (
            KeyFilter {
                rule: some("KMS-NOT-ACTION"),
                ..KeyFilter::default()
            },
            vec![],
        ),
        (
            KeyFilter {
                rule: some("KMS-PUBLIC"),
                include_deleted: true,
                ..KeyFilter::default()
            },
            vec!["a", "e"],
        ),
        (
            KeyFilter {
                severity: some("critical"),
                ..KeyFilter::default()
            },
            vec!["a", "e"],
        ),
        (
            KeyFilter {
                severity: some("high"),
                ..KeyFilter::default()
            },
            vec!["a", "b", "e", "y"],
        ),
        // Rule and severity must match one and the same finding: e's KMS-PUBLIC is high.
        (
            KeyFilter {
                rule: some("KMS-PUBLIC"),
                severity: some("critical"),
                ..KeyFilter::default()
            },
            vec!["a"],
        ),
        (
            KeyFilter {
                rule: some("KMS-DELEGATION"),
                severity: some("critical"),
                ..KeyFilter::default()
            },
            vec!["e"],
        ),
        (
            KeyFilter {
                rule: some("KMS-PUBLIC"),
                severity: some("low"),
                ..KeyFilter::default()
            },
            vec![],
        ),
        (
            KeyFilter {
                compliant: Some(true),
                ..KeyFilter::default()
            },
            vec!["c", "x"],
        ),
        (
            KeyFilter {
                compliant: Some(false),
                ..KeyFilter::default()
            },
            vec!["a", "b", "e", "y"],
        ),
        (
            KeyFilter {
                compliant: Some(true),
                include_deleted: true,
                ..KeyFilter::default()
            },
            vec!["c", "d", "x"],
        ),
        // q: case-insensitive substring of the ARN, key id, description, an alias, a tag.
        (q("KEY/E"), vec!["e"]),
        (q("legacy TIER"), vec!["b"]),
        (q("payments-db"), vec!["c"]),
        (q("alias/a-2"), vec!["a"]),
        (q("owner"), vec!["c"]),
        (q("team_50%"), vec!["c"]),
        // LIKE wildcards in q are literal: "_50%" does not match b's "150".
        (q("_50%"), vec!["c"]),
        (q("\\"), vec![]),
        // Aliases and tags are matched one by one, not as JSON text.
        (q("\",\""), vec![]),
        (q("\":\""), vec![]),
        (q("payments"), vec!["a", "b", "c", "e", "y", "x"]),
        (q("/D"), vec![]),
        (
            KeyFilter {
                q: some("/D"),
                include_deleted: true,
                ..KeyFilter::default()
            },
            vec!["d"],
        ),
        // Everything at once.
        (
            KeyFilter {
                account: some(ACCOUNT),
                region: some(REGION),
                severity: some("high"),
                compliant: Some(false),
                q: some("key/"),
                ..KeyFilter::default()
            },
            vec!["a", "b", "e"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(key_ids(store, filter.clone()).await, expected, "{filter:?}");
    }

    // Rows are the same as list_keys gives, open-finding counts included.
    let (rows, _) = store
        .query_keys(&KeyFilter::default(), None, 500)
        .await
        .expect("query keys");
    assert_eq!(rows, store.list_keys(false).await.expect("list keys"));
    let count = |id: &str| {
        rows.iter()
            .find(|r| r.key.arn == keys[id].arn)
            .map(|r| r.open_findings)
    };
    assert_eq!(
        (count("a"), count("b"), count("c")),
        (Some(2), Some(1), Some(0))
    );
}

async fn query_keys_pages_walk_every_key_once(store: &dyn Store) {
    // Ids whose byte order differs from a locale's order: pages must come out alike on both.
    let prefixes = ["Key-", "key_", "KEY.", "k", "key", "kEy~"];
    let keys: Vec<KeyRecord> = (0..42)
        .map(|i| key(&format!("{}{i:02}", prefixes[i % prefixes.len()])))
        .collect();
    let all: Vec<String> = keys.iter().map(|k| k.arn.clone()).collect();
    let updates = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let findings = if i % 3 == 0 {
                vec![finding("KMS-PUBLIC", "0")]
            } else {
                vec![]
            };
            update(k.clone(), readable("P"), findings)
        })
        .collect();
    store
        .apply_region_sync(&region_sync(t(0), &all, true, updates))
        .await
        .expect("seed");
    // Every fifth key goes away.
    let present: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, arn)| arn.clone())
        .collect();
    store
        .apply_region_sync(&region_sync(t(60), &present, true, vec![]))
        .await
        .expect("delete some");

    let mut sorted_all = all.clone();
    sorted_all.sort();
    let mut sorted_present = present.clone();
    sorted_present.sort();
    let noncompliant: Vec<String> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0 && i % 5 != 0)
        .map(|(_, k)| k.arn.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let live = KeyFilter::default();
    let with_deleted = KeyFilter {
        include_deleted: true,
        ..KeyFilter::default()
    };
    let failing = KeyFilter {
        compliant: Some(false),
        ..KeyFilter::default()
    };
    for (filter, expected) in [
        (&live, &sorted_present),
        (&with_deleted, &sorted_all),
        (&failing, &noncompliant),
    ] {
        for limit in [1, 4, 7, 500] {
            let mut walked: Vec<String> = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let (rows, total) = store
                    .query_keys(filter, after.as_deref(), limit)
                    .await
                    .expect("page");
                assert_eq!(total, expected.len() as u64, "{filter:?} limit {limit}");
                assert!(rows.len() <= limit as usize);
                let Some(last) = rows.last() else { break };
                after = Some(last.key.arn.clone());
                walked.extend(rows.into_iter().map(|r| r.key.arn));
            }
            assert_eq!(&walked, expected, "{filter:?} limit {limit}");
        }
    }

    // The cursor need not be a stored ARN: the page starts strictly after it.
    let cursor = format!("{}!", sorted_present[9]);
    let (rows, total) = store
        .query_keys(&live, Some(&cursor), 3)
        .await
        .expect("page after a cursor");
    assert_eq!(total, sorted_present.len() as u64);
    assert_eq!(
        rows.iter().map(|r| r.key.arn.clone()).collect::<Vec<_>>(),
        sorted_present[10..13].to_vec()
    );
    let (rows, total) = store
        .query_keys(&live, Some(&sorted_present[9]), 0)
        .await
        .expect("empty page");
    assert!(rows.is_empty());
    assert_eq!(total, sorted_present.len() as u64);
}

async fn find_keys_by_id_or_arn(store: &dyn Store) {
    let eu = key("mrk-1234");
    let us = key_in("us-east-1", "mrk-1234");
    let gone = key("gone");
    let plain = key("plain");
    store
        .apply_region_sync(&region_sync(
            t(0),
            &[eu.arn.clone(), gone.arn.clone(), plain.arn.clone()],
            true,
            vec![
                update(eu.clone(), readable("P"), vec![finding("KMS-PUBLIC", "0")]),
                update(gone.clone(), readable("P"), vec![]),
                update(plain.clone(), readable("P"), vec![]),
            ],
        ))
        .await
        .expect("seed eu");
    let mut sync = region_sync(
        t(0),
        std::slice::from_ref(&us.arn),
        true,
        vec![update(us.clone(), readable("P"), vec![])],
    );
    sync.region = "us-east-1".into();
    store.apply_region_sync(&sync).await.expect("seed us");
    store
        .apply_region_sync(&region_sync(
            t(60),
            &[eu.arn.clone(), plain.arn.clone()],
            true,
            vec![],
        ))
        .await
        .expect("gone deleted");

    let arns = |rows: Vec<KeyRow>| rows.into_iter().map(|r| r.key.arn).collect::<Vec<_>>();
    // A multi-Region key id names one key per Region.
    assert_eq!(
        arns(store.find_keys("mrk-1234").await.expect("by id")),
        vec![eu.arn.clone(), us.arn.clone()]
    );
    let by_arn = store.find_keys(&eu.arn).await.expect("by arn");
    assert_eq!(by_arn.len(), 1);
    assert_eq!(by_arn[0].key, eu);
    assert_eq!(by_arn[0].open_findings, 1);
    assert_eq!(
        arns(store.find_keys("plain").await.expect("plain")),
        vec![plain.arn.clone()]
    );
    // Deleted keys are found too, marked as such.
    let deleted = store.find_keys("gone").await.expect("deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].deleted_at, Some(t(60)));
    assert!(store.find_keys("nope").await.expect("unknown").is_empty());
    assert!(store.find_keys("").await.expect("empty").is_empty());
    // Exact matches only.
    assert!(store.find_keys("mrk-").await.expect("prefix").is_empty());
    assert!(store.find_keys("MRK-1234").await.expect("case").is_empty());
}

/// (key id, rule) of findings, for readable assertions.
fn finding_keys(rows: &[FindingRow], keys: &BTreeMap<&'static str, KeyRecord>) -> Vec<String> {
    rows.iter()
        .map(|f| {
            let id = keys
                .iter()
                .find(|(_, k)| k.arn == f.key_arn)
                .map_or("?", |(id, _)| *id);
            format!("{id}:{}", f.rule_id)
        })
        .collect()
}

async fn query_findings_filters_and_pages(store: &dyn Store) {
    let keys = seed_inventory(store).await;
    // An unchanged re-sync stamps only the keys: open findings are as fresh as their key.
    let present = ["a", "b", "c", "e"].map(|id| keys[id].arn.clone());
    store
        .apply_region_sync(&region_sync(t(120), &present, true, vec![]))
        .await
        .expect("unchanged resync");

    let (all, total) = store
        .query_findings(&FindingFilter::default(), None, 500)
        .await
        .expect("all findings");
    assert_eq!(total, 8);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ordered by id");
    // The same rows as list_findings, last_seen computed alike.
    let mut listed = store.list_findings(true).await.expect("list findings");
    listed.sort_by_key(|f| f.id);
    assert_eq!(all, listed);
    let a_public = all
        .iter()
        .find(|f| f.key_arn == keys["a"].arn && f.rule_id == "KMS-PUBLIC")
        .expect("a's KMS-PUBLIC");
    assert_eq!((a_public.first_seen, a_public.last_seen), (t(0), t(120)));
    let d_public = all
        .iter()
        .find(|f| f.key_arn == keys["d"].arn)
        .expect("d's finding");
    assert_eq!(
        (d_public.status.as_str(), d_public.last_seen),
        ("resolved", t(0))
    );

    let matching = |filter: FindingFilter| {
        let keys = &keys;
        async move {
            let (rows, total) = store
                .query_findings(&filter, None, 500)
                .await
                .unwrap_or_else(|e| panic!("query findings {filter:?}: {e}"));
            assert_eq!(total, rows.len() as u64, "total of {filter:?}");
            let mut found = finding_keys(&rows, keys);
            found.sort();
            found
        }
    };
    let status = |s: &str| FindingFilter {
        status: some(s),
        ..FindingFilter::default()
    };
    let q = |s: &str| FindingFilter {
        q: some(s),
        ..FindingFilter::default()
    };
    let cases: Vec<(FindingFilter, Vec<&str>)> = vec![
        (
            status("open"),
            vec![
                "a:KMS-DELEGATION",
                "a:KMS-PUBLIC",
                "b:KMS-DELEGATION",
                "e:KMS-DELEGATION",
                "e:KMS-PUBLIC",
                "y:KMS-DELEGATION",
            ],
        ),
        (status("resolved"), vec!["b:KMS-NOT-ACTION", "d:KMS-PUBLIC"]),
        (status("waived"), vec![]),
        (
            FindingFilter {
                account: some(OTHER_ACCOUNT),
                ..FindingFilter::default()
            },
            vec!["y:KMS-DELEGATION"],
        ),
        (
            FindingFilter {
                region: some("us-east-1"),
                ..FindingFilter::default()
            },
            vec![],
        ),
        (
            FindingFilter {
                rule: some("KMS-PUBLIC"),
                ..FindingFilter::default()
            },
            vec!["a:KMS-PUBLIC", "d:KMS-PUBLIC", "e:KMS-PUBLIC"],
        ),
        (
            FindingFilter {
                rule: some("KMS-PUBLIC"),
                status: some("open"),
                ..FindingFilter::default()
            },
            vec!["a:KMS-PUBLIC", "e:KMS-PUBLIC"],
        ),
        (
            FindingFilter {
                severity: some("critical"),
                ..FindingFilter::default()
            },
            vec!["a:KMS-PUBLIC", "d:KMS-PUBLIC", "e:KMS-DELEGATION"],
        ),
        (
            FindingFilter {
                severity: some("critical"),
                status: some("open"),
                account: some(ACCOUNT),
                region: some(REGION),
                ..FindingFilter::default()
            },
            vec!["a:KMS-PUBLIC", "e:KMS-DELEGATION"],
        ),
        (
            FindingFilter {
                key_arn: Some(keys["b"].arn.clone()),
                ..FindingFilter::default()
            },
            vec!["b:KMS-DELEGATION", "b:KMS-NOT-ACTION"],
        ),
        (q("kms-not-action FIRES"), vec!["b:KMS-NOT-ACTION"]),
        (q("alias/e-2"), vec!["e:KMS-DELEGATION", "e:KMS-PUBLIC"]),
        (q("KEY/Y"), vec!["y:KMS-DELEGATION"]),
        (
            q("fires at 1"),
            vec!["a:KMS-DELEGATION", "e:KMS-DELEGATION"],
        ),
        (q("%"), vec![]),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(filter.clone()).await, expected, "{filter:?}");
    }

    // Pages by id, with a stable total.
    for limit in [1, 3, 500] {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let (rows, total) = store
                .query_findings(&FindingFilter::default(), after, limit)
                .await
                .expect("page");
            assert_eq!(total, 8);
            assert!(rows.len() <= limit as usize);
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            walked.extend(rows);
        }
        assert_eq!(walked, all, "limit {limit}");
    }
    let open = status("open");
    let (first, total) = store
        .query_findings(&open, None, 4)
        .await
        .expect("open page 1");
    let (second, _) = store
        .query_findings(&open, first.last().map(|f| f.id), 4)
        .await
        .expect("open page 2");
    assert_eq!((first.len(), second.len(), total), (4, 2, 6));

    assert_eq!(
        store.get_finding(a_public.id).await.expect("get"),
        Some(a_public.clone())
    );
    let past_end = all.last().map_or(0, |f| f.id) + 1000;
    assert_eq!(
        store.get_finding(past_end).await.expect("get unknown"),
        None
    );
}

// --- Tokens -----------------------------------------------------------------------------------

fn new_token(name: &str, role: &str, secret: &str) -> NewToken {
    NewToken {
        name: name.into(),
        role: role.into(),
        sha256: sha(secret),
        created_at: t(0) + Duration::microseconds(250),
    }
}

async fn tokens_create_list_authenticate_revoke(store: &dyn Store) {
    assert!(store.list_tokens().await.expect("no tokens").is_empty());
    let admin = store
        .create_token(&new_token("ci-admin", "admin", "secret-1"))
        .await
        .expect("create admin");
    assert_eq!(
        (
            admin.name.as_str(),
            admin.role.as_str(),
            admin.created_at,
            admin.last_used_at,
            admin.revoked_at
        ),
        (
            "ci-admin",
            "admin",
            t(0) + Duration::microseconds(250),
            None,
            None
        )
    );
    // Names and secrets are unique.
    assert!(matches!(
        store
            .create_token(&new_token("ci-admin", "viewer", "secret-2"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_token(&new_token("other", "viewer", "secret-1"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let viewer = store
        .create_token(&new_token("dashboard", "viewer", "secret-2"))
        .await
        .expect("create viewer");
    assert!(viewer.id > admin.id);
    assert_eq!(
        store.list_tokens().await.expect("list"),
        vec![admin.clone(), viewer.clone()]
    );

    let auth = |secret: &str, at: DateTime<Utc>| {
        let hash = sha(secret);
        async move { store.authenticate(&hash, at).await.expect("authenticate") }
    };
    assert_eq!(auth("unknown", t(10)).await, None);
    let used = auth("secret-1", t(10)).await.expect("admin authenticates");
    assert_eq!((used.id, used.last_used_at), (admin.id, Some(t(10))));
    // Stamped at most once a minute.
    let again = auth("secret-1", t(40)).await.expect("again");
    assert_eq!(again.last_used_at, Some(t(10)));
    let again = auth("secret-1", t(70))
        .await
        .expect("exactly a minute later");
    assert_eq!(again.last_used_at, Some(t(10)));
    let again = auth("secret-1", t(71)).await.expect("over a minute later");
    assert_eq!(again.last_used_at, Some(t(71)));
    // A clock behind the stamp does not move it back.
    let again = auth("secret-1", t(5)).await.expect("earlier clock");
    assert_eq!(again.last_used_at, Some(t(71)));
    assert_eq!(
        store.list_tokens().await.expect("list")[0].last_used_at,
        Some(t(71))
    );

    // Revocation is stamped once and is idempotent.
    let revoked = store
        .revoke_token("ci-admin", t(100))
        .await
        .expect("revoke");
    assert_eq!(
        (revoked.id, revoked.revoked_at, revoked.last_used_at),
        (admin.id, Some(t(100)), Some(t(71)))
    );
    let revoked = store
        .revoke_token("ci-admin", t(200))
        .await
        .expect("revoke again");
    assert_eq!(revoked.revoked_at, Some(t(100)));
    assert_eq!(auth("secret-1", t(300)).await, None);
    assert_eq!(
        auth("secret-2", t(300)).await.map(|t| t.name),
        Some("dashboard".to_string())
    );
    assert!(matches!(
        store.revoke_token("nobody", t(300)).await,
        Err(StoreError::NotFound(_))
    ));
    // A revoked token keeps its name: the audit log's actors stay unambiguous.
    assert!(matches!(
        store
            .create_token(&new_token("ci-admin", "admin", "secret-3"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let tokens = store.list_tokens().await.expect("list");
    assert_eq!(
        tokens
            .iter()
            .map(|t| (t.name.as_str(), t.revoked_at))
            .collect::<Vec<_>>(),
        vec![("ci-admin", Some(t(100))), ("dashboard", None)]
    );
}

// --- Audit log --------------------------------------------------------------------------------

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn audit_event(i: i64) -> NewAuditEvent {
    NewAuditEvent {
        // Nanoseconds: the store keeps (and hashes) microseconds.
        at: t(i) + Duration::nanoseconds(123_456_789),
        actor: "ci-admin".into(),
        action: "finding.waived".into(),
        target: format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/k{i}"),
        detail: format!(r#"{{"n":{i},"reason":"naïve \"quoted\" ✓"}}"#),
    }
}

fn assert_linked(events: &[AuditEvent]) {
    let mut prev = ZERO_HASH.to_string();
    let mut prev_id = 0;
    for e in events {
        assert!(e.id > prev_id, "ids grow along the chain");
        assert_eq!(e.prev_hash, prev, "entry {} links to its predecessor", e.id);
        assert_eq!(
            e.hash,
            audit_hash(
                &e.prev_hash,
                e.at,
                &e.actor,
                &e.action,
                &e.target,
                &e.detail
            )
        );
        prev = e.hash.clone();
        prev_id = e.id;
    }
}

async fn audit_appends_form_a_chain(store: &dyn Store) {
    let empty = store.verify_audit().await.expect("verify empty");
    assert_eq!(
        (empty.events, empty.first_broken_id, empty.reason),
        (0, None, None)
    );
    assert_eq!(
        store.list_audit(None, 10).await.expect("empty log"),
        (vec![], 0)
    );

    let mut appended = Vec::new();
    for i in 0..5 {
        let event = audit_event(i);
        let entry = store.append_audit(&event).await.expect("append");
        assert_eq!(entry.at, t(i) + Duration::microseconds(123_456));
        assert_eq!(
            (&entry.actor, &entry.action, &entry.target, &entry.detail),
            (&event.actor, &event.action, &event.target, &event.detail)
        );
        appended.push(entry);
    }
    assert_eq!(appended[0].prev_hash, ZERO_HASH);
    assert_linked(&appended);

    // Read back exactly as appended (the timestamp round-trips to the hashed value).
    let (mut stored, total) = store.list_audit(None, 500).await.expect("list");
    assert_eq!(total, 5);
    stored.reverse();
    assert_eq!(stored, appended);

    let verified = store.verify_audit().await.expect("verify");
    assert_eq!(
        (verified.events, verified.first_broken_id, verified.reason),
        (5, None, None)
    );

    // One target's trail, newest first, limited.
    let mut again = audit_event(1);
    again.action = "finding.unwaived".into();
    let latest = store.append_audit(&again).await.expect("append");
    let trail = store
        .audit_for_target(&appended[1].target, 10)
        .await
        .expect("trail");
    assert_eq!(trail, vec![latest.clone(), appended[1].clone()]);
    assert_eq!(
        store
            .audit_for_target(&appended[1].target, 1)
            .await
            .expect("limited"),
        vec![latest]
    );
    assert!(
        store
            .audit_for_target("arn:aws:kms:nowhere", 10)
            .await
            .expect("none")
            .is_empty()
    );
}

async fn audit_list_pages_newest_first(store: &dyn Store) {
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            store
                .append_audit(&audit_event(i))
                .await
                .expect("append")
                .id,
        );
    }
    ids.reverse();
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let (page, total) = store.list_audit(before, 5).await.expect("page");
        assert_eq!(total, 12);
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        walked.extend(page.iter().map(|e| e.id));
    }
    assert_eq!(walked, ids);
    let (page, _) = store.list_audit(Some(ids[2]), 2).await.expect("mid page");
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[3..5].to_vec()
    );
}

/// Eight tasks on two replicas append at once: one chain, no fork, nothing lost.
async fn concurrent_audit_appends_form_one_chain(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let store = if task % 2 == 0 {
            Arc::clone(&first)
        } else {
            Arc::clone(&second)
        };
        tasks.spawn(async move {
            let mut appended = Vec::new();
            for i in 0..10 {
                let mut event = audit_event(i);
                event.actor = format!("task-{task}");
                appended.push(store.append_audit(&event).await.expect("append"));
            }
            appended
        });
    }
    let mut appended: Vec<AuditEvent> = tasks.join_all().await.into_iter().flatten().collect();
    appended.sort_by_key(|e| e.id);

    let verified = second.verify_audit().await.expect("verify");
    assert_eq!(
        (verified.events, verified.first_broken_id, verified.reason),
        (80, None, None)
    );
    let (mut stored, total) = first.list_audit(None, 500).await.expect("list");
    assert_eq!(total, 80);
    stored.reverse();
    assert_eq!(stored, appended, "each append returned what was stored");
    assert_eq!(stored[0].prev_hash, ZERO_HASH);
    assert_linked(&stored);
}

async fn audit_tampering_is_detected(db: &db::TestDb) {
    let store = db.store();
    let mut entries = Vec::new();
    for i in 0..5 {
        entries.push(store.append_audit(&audit_event(i)).await.expect("append"));
    }
    let verify = || async { store.verify_audit().await.expect("verify") };
    let third = &entries[2];

    // An edited entry no longer matches its hash.
    let forged = r#"{"forged":true}"#;
    assert_eq!(
        db.execute(&format!(
            "UPDATE audit_events SET detail = '{forged}' WHERE id = {}",
            third.id
        ))
        .await,
        1
    );
    let report = verify().await;
    assert_eq!((report.events, report.first_broken_id), (5, Some(third.id)));
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("altered")),
        "{report:?}"
    );

    // Rehashing the edited entry breaks the link of the next one instead.
    let rehashed = audit_hash(
        &third.prev_hash,
        third.at,
        &third.actor,
        &third.action,
        &third.target,
        forged,
    );
    db.execute(&format!(
        "UPDATE audit_events SET hash = '{rehashed}' WHERE id = {}",
        third.id
    ))
    .await;
    let report = verify().await;
    assert_eq!(report.first_broken_id, Some(entries[3].id), "{report:?}");
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("previous entry")),
        "{report:?}"
    );

    // Restored, the chain verifies again.
    let original = third.detail.replace('\'', "''");
    db.execute(&format!(
        "UPDATE audit_events SET detail = '{original}', hash = '{}' WHERE id = {}",
        third.hash, third.id
    ))
    .await;
    let report = verify().await;
    assert_eq!(
        (report.events, report.first_broken_id, report.reason),
        (5, None, None)
    );

    // A removed entry breaks the link of the one after it.
    db.execute(&format!(
        "DELETE FROM audit_events WHERE id = {}",
        entries[1].id
    ))
    .await;
    let report = verify().await;
    assert_eq!((report.events, report.first_broken_id), (4, Some(third.id)));

    // Appends go on after a break; the report still names the first one.
    store
        .append_audit(&audit_event(9))
        .await
        .expect("append after the break");
    assert_eq!(verify().await.first_broken_id, Some(third.id));

    // Removing the head is caught too: the new first entry does not start the chain.
    db.execute(&format!(
        "DELETE FROM audit_events WHERE id = {}",
        entries[0].id
    ))
    .await;
    let report = verify().await;
    assert_eq!(report.first_broken_id, Some(third.id));
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("zero hash")),
        "{report:?}"
    );
}

/// `connect` creates what the URL names when it does not exist yet.
#[tokio::test]
async fn postgres_connect_creates_a_missing_database() {
    let Some(db) = db::postgres_created_by_connect().await else {
        return;
    };
    migrations_are_idempotent(db.store()).await;
}

#[tokio::test]
async fn sqlite_connect_creates_a_missing_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("new.db");
    let store = keyward::store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("create and migrate");
    assert!(path.exists());
    migrations_are_idempotent(&*store).await;
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let refused = keyward::store::connect("mysql://localhost/keyward").await;
    assert!(matches!(refused, Err(StoreError::UnsupportedUrl(_))));
}

// --- waivers, tickets, outbox, webhook deliveries -------------------------------------------

fn waiver(scope: WaiverScope, at: DateTime<Utc>, expires_at: DateTime<Utc>) -> NewWaiver {
    NewWaiver {
        scope,
        reason: "accepted: legacy app, replaced in Q3".into(),
        author: "jira".into(),
        created_at: at,
        expires_at,
    }
}

fn audit_at(at: DateTime<Utc>, action: &str, target: &str) -> NewAuditEvent {
    NewAuditEvent {
        at,
        actor: "jira".into(),
        action: action.into(),
        target: target.into(),
        detail: "{}".into(),
    }
}

async fn all_outbox(store: &dyn Store) -> Vec<OutboxEvent> {
    store.outbox_events(None, 10_000).await.expect("outbox")
}

fn payload(event: &OutboxEvent) -> serde_json::Value {
    serde_json::from_str(&event.payload).expect("payload is JSON")
}

async fn status_of(store: &dyn Store, id: i64) -> FindingRow {
    store
        .get_finding(id)
        .await
        .expect("get finding")
        .expect("finding exists")
}

/// Two keys with KMS-DELEGATION, one of them also KMS-PUBLIC; the time is t(1000).
async fn seed_waivable(db: &db::TestDb) -> (i64, i64, i64) {
    db.clock().set(t(1000));
    let store = db.store();
    let (a, b) = (key("a"), key("b"));
    store
        .apply_region_sync(&region_sync(
            t(0),
            &[a.arn.clone(), b.arn.clone()],
            true,
            vec![
                update(
                    a.clone(),
                    readable("A"),
                    vec![finding("KMS-DELEGATION", "0"), finding("KMS-PUBLIC", "1")],
                ),
                update(
                    b.clone(),
                    readable("B"),
                    vec![finding("KMS-DELEGATION", "0")],
                ),
            ],
        ))
        .await
        .expect("sync");
    let fa = findings_of(store, &a.arn).await;
    let fb = findings_of(store, &b.arn).await;
    (
        by_rule(&fa, "KMS-DELEGATION").id,
        by_rule(&fa, "KMS-PUBLIC").id,
        by_rule(&fb, "KMS-DELEGATION").id,
    )
}

async fn waiver_lifecycle_and_expiry_by_time(db: &db::TestDb) {
    let store = db.store();
    let (a_deleg, a_public, b_deleg) = seed_waivable(db).await;
    let events_before = all_outbox(store).await.len();

    let created = store
        .waive_finding(
            a_deleg,
            &waiver(WaiverScope::Key, t(1000), t(2000)),
            &audit_at(t(1000), "finding.waived", "finding"),
        )
        .await
        .expect("waive");
    assert_eq!(created.key_arn.as_deref(), Some(key("a").arn.as_str()));
    assert_eq!(
        (created.account_id.as_str(), created.rule_id.as_str()),
        (ACCOUNT, "KMS-DELEGATION")
    );
    assert_eq!((created.created_at, created.expires_at), (t(1000), t(2000)));
    assert_eq!(created.revoked_at, None);

    let waived = status_of(store, a_deleg).await;
    assert_eq!(waived.status, "waived");
    assert_eq!(
        waived.waiver_reason.as_deref(),
        Some("accepted: legacy app, replaced in Q3")
    );
    assert_eq!(waived.waiver_expires_at, Some(t(2000)));
    assert_eq!(waived.waiver_id, Some(created.id));
    assert_eq!(status_of(store, a_public).await.status, "open");
    assert_eq!(
        status_of(store, b_deleg).await.status,
        "open",
        "key scope only"
    );

    // every read agrees
    let listed = findings_of(store, &key("a").arn).await;
    assert_eq!(by_rule(&listed, "KMS-DELEGATION").status, "waived");
    let ids = |rows: Vec<FindingRow>| rows.iter().map(|f| f.id).collect::<Vec<_>>();
    let open = FindingFilter {
        status: Some("open".into()),
        ..FindingFilter::default()
    };
    let waived_filter = FindingFilter {
        status: Some("waived".into()),
        ..FindingFilter::default()
    };
    let (rows, total) = store.query_findings(&open, None, 100).await.expect("open");
    assert_eq!((ids(rows), total), (vec![a_public, b_deleg], 2));
    let (rows, total) = store
        .query_findings(&waived_filter, None, 100)
        .await
        .expect("waived");
    assert_eq!((ids(rows), total), (vec![a_deleg], 1));
    let keys = store.list_keys(false).await.expect("keys");
    assert_eq!((keys[0].open_findings, keys[1].open_findings), (1, 1));
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        stats.open_findings,
        vec![
            ("KMS-DELEGATION".to_string(), "high".to_string(), 1),
            ("KMS-PUBLIC".to_string(), "high".to_string(), 1),
        ]
    );

    // one finding.waived event and one audit entry, with the waiver
    let events = all_outbox(store).await;
    assert_eq!(events.len(), events_before + 1);
    let event = events.last().expect("event");
    assert_eq!(event.event, "finding.waived");
    assert_eq!(event.created_at, t(1000));
    let data = payload(event);
    assert_eq!(data["id"], a_deleg);
    assert_eq!(data["status"], "waived");
    assert_eq!(data["action"], "waived");
    assert_eq!(data["waivers"][0]["id"], created.id);
    assert_eq!(data["waivers"][0]["scope"], "key");
    let (audit, _) = store.list_audit(None, 10).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "finding.waived");

    // at the expiry instant the finding reads open again, with nothing written
    db.clock().set(t(2000));
    let lapsed = status_of(store, a_deleg).await;
    assert_eq!(lapsed.status, "open");
    assert_eq!(
        (lapsed.waiver_reason, lapsed.waiver_expires_at),
        (None, None)
    );
    assert_eq!(
        store.list_keys(false).await.expect("keys")[0].open_findings,
        2
    );
    // and waived before it
    db.clock().set(t(1999));
    assert_eq!(status_of(store, a_deleg).await.status, "waived");

    // re-waiving the same scope renews: the old waiver is revoked by the new one
    let renewed = store
        .waive_finding(
            a_deleg,
            &waiver(WaiverScope::Key, t(1500), t(3000)),
            &audit_at(t(1500), "finding.waived", "finding"),
        )
        .await
        .expect("renew");
    let history = store.finding_waivers(a_deleg).await.expect("history");
    assert_eq!(
        history.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![renewed.id, created.id]
    );
    assert_eq!(history[1].revoked_at, Some(t(1500)));
    assert_eq!(history[1].revoked_by.as_deref(), Some("jira"));
    db.clock().set(t(2500));
    assert_eq!(
        status_of(store, a_deleg).await.waiver_expires_at,
        Some(t(3000))
    );

    // revoking
    let revoked = store
        .revoke_waivers(
            a_deleg,
            t(2500),
            "alice",
            &audit_at(t(2500), "finding.unwaived", "finding"),
        )
        .await
        .expect("revoke");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].id, renewed.id);
    assert_eq!(revoked[0].revoked_at, Some(t(2500)));
    assert_eq!(revoked[0].revoked_by.as_deref(), Some("alice"));
    assert_eq!(status_of(store, a_deleg).await.status, "open");
    let last = all_outbox(store).await.pop().expect("event");
    assert_eq!(
        (last.event.as_str(), payload(&last)["action"].clone()),
        ("finding.waived", serde_json::json!("unwaived"))
    );
    let audit_count = store.list_audit(None, 10).await.expect("audit").1;
    assert_eq!(audit_count, 3);
    let again = store
        .revoke_waivers(
            a_deleg,
            t(2600),
            "alice",
            &audit_at(t(2600), "finding.unwaived", "finding"),
        )
        .await;
    assert!(matches!(again, Err(StoreError::NotFound(_))), "{again:?}");
    assert_eq!(
        store.list_audit(None, 10).await.expect("audit").1,
        audit_count,
        "a refused revocation writes no audit entry"
    );

    // tickets
    let ticketed = store
        .set_finding_ticket(
            a_deleg,
            Some("JIRA-123"),
            &audit_at(t(2600), "finding.ticket_set", "finding"),
        )
        .await
        .expect("ticket");
    assert_eq!(ticketed.ticket.as_deref(), Some("JIRA-123"));
    assert_eq!(
        status_of(store, a_deleg).await.ticket.as_deref(),
        Some("JIRA-123")
    );
    let cleared = store
        .set_finding_ticket(a_deleg, None, &audit_at(t(2601), "finding.ticket_set", "f"))
        .await
        .expect("clear");
    assert_eq!(cleared.ticket, None);
    assert!(matches!(
        store
            .set_finding_ticket(999_999, Some("X-1"), &audit_at(t(2602), "x", "y"))
            .await,
        Err(StoreError::NotFound(_))
    ));

    // no such finding; a resolved finding cannot be waived
    assert!(matches!(
        store
            .waive_finding(
                999_999,
                &waiver(WaiverScope::Key, t(2600), t(4000)),
                &audit_at(t(2600), "x", "y")
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .apply_region_sync(&region_sync(
            t(2700),
            &[key("a").arn.clone()],
            false,
            vec![update(
                key("a"),
                readable("A2"),
                vec![finding("KMS-PUBLIC", "1")],
            )],
        ))
        .await
        .expect("resolve");
    assert_eq!(status_of(store, a_deleg).await.status, "resolved");
    let refused = store
        .waive_finding(
            a_deleg,
            &waiver(WaiverScope::Key, t(2800), t(4000)),
            &audit_at(t(2800), "x", "y"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
}

async fn account_waiver_covers_every_key_of_the_account(db: &db::TestDb) {
    let store = db.store();
    let (a_deleg, a_public, b_deleg) = seed_waivable(db).await;
    // a key of another account with the same rule
    let mut c = key("c");
    c.account_id = OTHER_ACCOUNT.into();
    c.arn = format!("arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:key/c");
    let mut other = region_sync(
        t(0),
        std::slice::from_ref(&c.arn),
        true,
        vec![update(
            c.clone(),
            readable("C"),
            vec![finding("KMS-DELEGATION", "0")],
        )],
    );
    other.account_id = OTHER_ACCOUNT.into();
    store
        .apply_region_sync(&other)
        .await
        .expect("other account");
    let c_deleg = findings_of(store, &c.arn).await[0].id;

    let w = store
        .waive_finding(
            b_deleg,
            &waiver(WaiverScope::Account, t(1000), t(5000)),
            &audit_at(t(1000), "finding.waived", "finding"),
        )
        .await
        .expect("waive account-wide");
    assert_eq!(w.key_arn, None);
    assert_eq!(w.scope(), WaiverScope::Account);
    assert_eq!(status_of(store, a_deleg).await.status, "waived");
    assert_eq!(status_of(store, b_deleg).await.status, "waived");
    assert_eq!(
        status_of(store, a_public).await.status,
        "open",
        "other rule"
    );
    assert_eq!(
        status_of(store, c_deleg).await.status,
        "open",
        "other account"
    );

    // b's only finding is waived: b is compliant; a still has KMS-PUBLIC
    let compliant = key_ids(
        store,
        KeyFilter {
            compliant: Some(true),
            ..KeyFilter::default()
        },
    )
    .await;
    assert_eq!(compliant, vec!["b"]);
    let by_rule_filter = key_ids(
        store,
        KeyFilter {
            rule: some("KMS-DELEGATION"),
            ..KeyFilter::default()
        },
    )
    .await;
    assert_eq!(
        by_rule_filter,
        vec!["c"],
        "waived findings do not match rule filters"
    );
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.keys_compliant, stats.keys_noncompliant), (1, 2));

    // a key that appears later is covered too
    let d = key("d");
    store
        .apply_region_sync(&region_sync(
            t(1100),
            std::slice::from_ref(&d.arn),
            false,
            vec![update(
                d.clone(),
                readable("D"),
                vec![finding("KMS-DELEGATION", "0")],
            )],
        ))
        .await
        .expect("new key");
    let d_deleg = findings_of(store, &d.arn).await[0].id;
    assert_eq!(status_of(store, d_deleg).await.status, "waived");

    // revoking through any covered finding lifts it everywhere
    let revoked = store
        .revoke_waivers(a_deleg, t(1200), "alice", &audit_at(t(1200), "x", "y"))
        .await
        .expect("revoke");
    assert_eq!(revoked.iter().map(|w| w.id).collect::<Vec<_>>(), vec![w.id]);
    for id in [a_deleg, b_deleg, d_deleg] {
        assert_eq!(status_of(store, id).await.status, "open");
    }
}

async fn sync_writes_finding_events_in_its_transaction(store: &dyn Store) {
    let (a, b) = (key("a"), key("b"));
    let listed = [a.arn.clone(), b.arn.clone()];
    store
        .apply_region_sync(&region_sync(
            t(0),
            &listed,
            true,
            vec![
                update(
                    a.clone(),
                    readable("A"),
                    vec![finding("KMS-DELEGATION", "0"), finding("KMS-PUBLIC", "1")],
                ),
                update(
                    b.clone(),
                    readable("B"),
                    vec![finding("KMS-NO-ADMIN", "key")],
                ),
            ],
        ))
        .await
        .expect("first sync");
    let events = all_outbox(store).await;
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        vec!["finding.opened"; 3]
    );
    let fa = findings_of(store, &a.arn).await;
    let deleg = by_rule(&fa, "KMS-DELEGATION");
    let data = payload(&events[0]);
    assert_eq!(data["id"], deleg.id);
    assert_eq!(data["key_arn"], a.arn);
    assert_eq!(data["account_id"], ACCOUNT);
    assert_eq!(data["region"], REGION);
    assert_eq!(data["rule_id"], "KMS-DELEGATION");
    assert_eq!(data["severity"], "high");
    assert_eq!(data["status"], "open");
    assert_eq!(data["message"], deleg.message);
    assert_eq!(data["ticket"], serde_json::Value::Null);
    assert_eq!(data["first_seen"], serde_json::json!(t(0)));
    assert!(
        events
            .iter()
            .all(|e| e.created_at == t(0) && e.dispatched_at.is_none())
    );

    // unchanged: nothing; a still-open finding rewritten: nothing
    store
        .apply_region_sync(&region_sync(t(10), &listed, true, vec![]))
        .await
        .expect("unchanged");
    store
        .apply_region_sync(&region_sync(
            t(20),
            &listed,
            true,
            vec![update(
                a.clone(),
                readable("A2"),
                vec![
                    finding("KMS-DELEGATION", "0"),
                    finding("KMS-WILDCARD-ACTION", "0"),
                ],
            )],
        ))
        .await
        .expect("change");
    let events = all_outbox(store).await;
    let tail: Vec<(&str, String)> = events[3..]
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                payload(e)["rule_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            ("finding.resolved", "KMS-PUBLIC".to_string()),
            ("finding.opened", "KMS-WILDCARD-ACTION".to_string()),
        ]
    );
    assert_eq!(payload(&events[3])["status"], "resolved");
    assert_eq!(payload(&events[3])["resolved_at"], serde_json::json!(t(20)));

    // a key gone from a complete listing resolves its findings, with events
    store
        .apply_region_sync(&region_sync(
            t(30),
            std::slice::from_ref(&a.arn),
            true,
            vec![],
        ))
        .await
        .expect("b deleted");
    let last = all_outbox(store).await.pop().expect("event");
    assert_eq!(last.event, "finding.resolved");
    assert_eq!(payload(&last)["key_arn"], b.arn);
    assert_eq!(payload(&last)["rule_id"], "KMS-NO-ADMIN");

    // a resolved finding that fires again is opened again
    store
        .apply_region_sync(&region_sync(
            t(40),
            std::slice::from_ref(&a.arn),
            true,
            vec![update(
                a.clone(),
                readable("A3"),
                vec![
                    finding("KMS-DELEGATION", "0"),
                    finding("KMS-WILDCARD-ACTION", "0"),
                    finding("KMS-PUBLIC", "1"),
                ],
            )],
        ))
        .await
        .expect("reopen");
    let last = all_outbox(store).await.pop().expect("event");
    assert_eq!(
        (last.event.as_str(), payload(&last)["id"].clone()),
        (
            "finding.opened",
            serde_json::json!(by_rule(&fa, "KMS-PUBLIC").id)
        )
    );

    // sync.failed for failed and abandoned runs; nothing for a successful one
    let before = all_outbox(store).await.len();
    let ok = store
        .start_sync_run(ACCOUNT, REGION, t(50))
        .await
        .expect("start");
    let finish = |error: Option<&str>| SyncRunFinish {
        finished_at: t(60),
        keys_seen: 1,
        outcome: RegionSyncOutcome::default(),
        error: error.map(str::to_string),
        iam_error: None,
    };
    store
        .finish_sync_run(ok, &finish(None))
        .await
        .expect("finish");
    assert_eq!(all_outbox(store).await.len(), before);
    let bad = store
        .start_sync_run(ACCOUNT, REGION, t(50))
        .await
        .expect("start");
    store
        .finish_sync_run(bad, &finish(Some("AccessDenied: ListKeys")))
        .await
        .expect("finish failed");
    let last = all_outbox(store).await.pop().expect("event");
    assert_eq!(last.event, "sync.failed");
    let data = payload(&last);
    assert_eq!(data["run_id"], bad);
    assert_eq!(data["account_id"], ACCOUNT);
    assert_eq!(data["region"], REGION);
    assert_eq!(data["error"], "AccessDenied: ListKeys");
    assert_eq!(data["started_at"], serde_json::json!(t(50)));
    store
        .start_sync_run(ACCOUNT, REGION, t(70))
        .await
        .expect("start");
    store
        .abandon_sync_runs(ACCOUNT, REGION, t(80), "the pass died")
        .await
        .expect("abandon");
    let last = all_outbox(store).await.pop().expect("event");
    assert_eq!(last.event, "sync.failed");
    assert_eq!(payload(&last)["error"], "the pass died");
}

async fn failed_sync_writes_no_events(db: &db::TestDb) {
    let store = db.store();
    let (a, b) = (key("a"), key("b"));
    // a's findings are written (and their events queued) before b's policy version fails
    db.execute("ALTER TABLE policy_versions RENAME TO policy_versions_away")
        .await;
    let failed = store
        .apply_region_sync(&region_sync(
            t(0),
            &[a.arn.clone(), b.arn.clone()],
            true,
            vec![
                update(
                    a.clone(),
                    PolicyState::Unreadable {
                        reason: "AccessDenied".into(),
                    },
                    vec![finding("KMS-UNREADABLE", "policy")],
                ),
                update(b.clone(), readable("B"), vec![finding("KMS-PUBLIC", "0")]),
            ],
        ))
        .await;
    db.execute("ALTER TABLE policy_versions_away RENAME TO policy_versions")
        .await;
    assert!(failed.is_err(), "the sync must fail");
    assert!(store.list_keys(true).await.expect("keys").is_empty());
    assert!(
        store
            .list_findings(true)
            .await
            .expect("findings")
            .is_empty()
    );
    assert!(
        all_outbox(store).await.is_empty(),
        "no event of a rolled-back sync"
    );
}

async fn cancelled_sync_writes_events_all_or_nothing(store: &dyn Store) {
    for (round, delay_us) in [0u64, 200, 1_000, 3_000, 10_000].into_iter().enumerate() {
        let region = format!("cancel-{round}");
        let keys: Vec<KeyRecord> = (0..50)
            .map(|k| key_in(&region, &format!("k{k:03}")))
            .collect();
        let listed: Vec<String> = keys.iter().map(|k| k.arn.clone()).collect();
        let updates = keys
            .into_iter()
            .map(|k| update(k, readable("P"), vec![finding("KMS-PUBLIC", "0")]))
            .collect();
        let mut sync = region_sync(t(0), &listed, true, updates);
        sync.region = region.clone();
        let _ = tokio::time::timeout(
            std::time::Duration::from_micros(delay_us),
            store.apply_region_sync(&sync),
        )
        .await;
        // A COMMIT already sent when the caller gave up may still land: wait until it has.
        let mut settled = (usize::MAX, 0);
        for _ in 0..100 {
            let findings = store
                .list_findings(true)
                .await
                .expect("findings")
                .iter()
                .filter(|f| f.region == region)
                .count();
            let events = all_outbox(store)
                .await
                .iter()
                .filter(|e| payload(e)["region"] == region.as_str())
                .count();
            settled = (findings, events);
            if findings == events {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (findings, events) = settled;
        assert_eq!(
            findings, events,
            "round {round}: one event per opened finding"
        );
        assert!(findings == 0 || findings == 50, "round {round}: {findings}");
    }
}

fn hook(url: &str, events: &[&str]) -> WebhookSubscription {
    WebhookSubscription {
        url: url.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

/// `n` keys, each with one KMS-PUBLIC finding: `n` finding.opened events.
async fn seed_events(store: &dyn Store, n: usize) {
    let keys: Vec<KeyRecord> = (0..n).map(|i| key(&format!("e{i:03}"))).collect();
    let listed: Vec<String> = keys.iter().map(|k| k.arn.clone()).collect();
    let updates = keys
        .into_iter()
        .map(|k| update(k, readable("P"), vec![finding("KMS-PUBLIC", "0")]))
        .collect();
    store
        .apply_region_sync(&region_sync(t(0), &listed, false, updates))
        .await
        .expect("seed events");
}

async fn deliveries_fan_out_retry_and_finish(store: &dyn Store) {
    seed_events(store, 3).await;
    let run = store
        .start_sync_run(ACCOUNT, REGION, t(1))
        .await
        .expect("run");
    store
        .finish_sync_run(
            run,
            &SyncRunFinish {
                finished_at: t(2),
                keys_seen: 0,
                outcome: RegionSyncOutcome::default(),
                error: Some("boom".into()),
                iam_error: None,
            },
        )
        .await
        .expect("failed run");
    let hooks = [
        hook(
            "https://tickets.example/a",
            &["finding.opened", "sync.failed"],
        ),
        hook("https://ops.example/b", &["sync.failed"]),
    ];
    assert_eq!(
        store
            .dispatch_outbox(&hooks, t(10), 2)
            .await
            .expect("fan out"),
        2
    );
    assert_eq!(
        store
            .dispatch_outbox(&hooks, t(10), 100)
            .await
            .expect("fan out"),
        2
    );
    assert_eq!(
        store
            .dispatch_outbox(&hooks, t(10), 100)
            .await
            .expect("done"),
        0
    );
    assert!(
        all_outbox(store)
            .await
            .iter()
            .all(|e| e.dispatched_at == Some(t(10)))
    );
    let (all, total) = store.query_deliveries(None, None, 100).await.expect("list");
    assert_eq!(total, 5, "3 opened + 1 failed to a, 1 failed to b");
    assert!(all.iter().all(|d| d.status == "pending" && d.attempts == 0));
    assert_eq!(
        all.iter()
            .filter(|d| d.webhook == "https://ops.example/b")
            .count(),
        1
    );
    let mut ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "delivery ids are unique");

    // only configured webhooks' deliveries are claimed, each once
    let only_b = store
        .claim_deliveries(&["https://ops.example/b".into()], "w1", t(10), t(70), 10)
        .await
        .expect("claim b");
    assert_eq!(only_b.len(), 1);
    let claimed = &only_b[0];
    assert_eq!(claimed.delivery.attempts, 1);
    assert_eq!(claimed.delivery.event, "sync.failed");
    assert_eq!(claimed.event_created_at, t(2));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&claimed.payload).expect("json")["error"],
        "boom"
    );
    let urls = vec![
        "https://tickets.example/a".to_string(),
        "https://ops.example/b".into(),
    ];
    let rest = store
        .claim_deliveries(&urls, "w1", t(10), t(70), 10)
        .await
        .expect("claim rest");
    assert_eq!(rest.len(), 4, "the leased one is not claimed again");
    assert!(
        store
            .claim_deliveries(&urls, "w2", t(20), t(80), 10)
            .await
            .expect("nothing")
            .is_empty()
    );

    // a retry waits for its time; the wrong owner cannot record
    let id = claimed.delivery.id.clone();
    let retry = DeliveryAttempt::Retry {
        next_attempt_at: t(100),
        status: Some(500),
        error: "the receiver answered HTTP 500".into(),
    };
    assert!(
        !store
            .complete_delivery(&id, "w2", &retry)
            .await
            .expect("not owner")
    );
    assert!(
        store
            .complete_delivery(&id, "w1", &retry)
            .await
            .expect("owner")
    );
    assert!(
        !store
            .complete_delivery(&id, "w1", &retry)
            .await
            .expect("lease gone")
    );
    let b_only = ["https://ops.example/b".to_string()];
    assert!(
        store
            .claim_deliveries(&b_only, "w1", t(99), t(150), 10)
            .await
            .expect("not yet")
            .is_empty()
    );
    let again = store
        .claim_deliveries(&b_only, "w2", t(100), t(160), 10)
        .await
        .expect("due");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].delivery.id.as_str(), again[0].delivery.attempts),
        (id.as_str(), 2)
    );
    assert!(
        store
            .complete_delivery(
                &id,
                "w2",
                &DeliveryAttempt::Delivered {
                    at: t(101),
                    status: 204
                }
            )
            .await
            .expect("delivered")
    );

    // an expired lease (a crashed sender) is claimable again; the old owner cannot record
    let stolen = store
        .claim_deliveries(&urls, "w3", t(71), t(200), 10)
        .await
        .expect("expired leases");
    assert_eq!(stolen.len(), 4);
    assert!(stolen.iter().all(|c| c.delivery.attempts == 2));
    let first = &stolen[0].delivery.id;
    assert!(
        !store
            .complete_delivery(
                first,
                "w1",
                &DeliveryAttempt::Delivered {
                    at: t(72),
                    status: 200
                }
            )
            .await
            .expect("old owner")
    );
    assert!(
        store
            .complete_delivery(
                first,
                "w3",
                &DeliveryAttempt::Failed {
                    status: None,
                    error: "no answer within 10s".into(),
                },
            )
            .await
            .expect("give up")
    );

    let (delivered, n) = store
        .query_deliveries(Some("delivered"), None, 10)
        .await
        .expect("delivered");
    assert_eq!(n, 1);
    assert_eq!(delivered[0].id, id);
    assert_eq!(delivered[0].last_status, Some(204));
    assert_eq!(delivered[0].delivered_at, Some(t(101)));
    assert_eq!(delivered[0].last_error, None);
    let (failed, n) = store
        .query_deliveries(Some("failed"), None, 10)
        .await
        .expect("failed");
    assert_eq!(n, 1);
    assert_eq!(
        failed[0].last_error.as_deref(),
        Some("no answer within 10s")
    );
    assert_eq!(failed[0].last_status, None);
    // pages
    let (page1, total) = store.query_deliveries(None, None, 2).await.expect("page 1");
    let (page2, _) = store
        .query_deliveries(None, Some(page1[1].seq), 2)
        .await
        .expect("page 2");
    let (page3, _) = store
        .query_deliveries(None, Some(page2[1].seq), 2)
        .await
        .expect("page 3");
    assert_eq!(total, 5);
    assert_eq!(page1.len() + page2.len() + page3.len(), 5);
    assert!(page1[1].seq < page2[0].seq && page2[1].seq < page3[0].seq);
}

async fn concurrent_delivery_claims_are_exclusive(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    seed_events(&*first, 40).await;
    let hooks = vec![
        hook("https://a.example/h", &["finding.opened"]),
        hook("https://b.example/h", &["finding.opened"]),
    ];
    // two replicas fan out at once: every (event, webhook) gets one delivery
    let (x, y) = tokio::join!(
        first.dispatch_outbox(&hooks, t(10), 15),
        second.dispatch_outbox(&hooks, t(10), 15)
    );
    x.expect("fan out");
    y.expect("fan out");
    while first
        .dispatch_outbox(&hooks, t(10), 15)
        .await
        .expect("rest")
        > 0
    {}
    assert_eq!(
        first.query_deliveries(None, None, 1).await.expect("n").1,
        80
    );

    let urls: Vec<String> = hooks.iter().map(|h| h.url.clone()).collect();
    let claim_all = |store: Arc<dyn Store>, owner: &'static str, urls: Vec<String>| async move {
        let mut mine = Vec::new();
        loop {
            let batch = store
                .claim_deliveries(&urls, owner, t(20), t(80), 7)
                .await
                .expect("claim");
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|c| c.delivery.id));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claim_all(first.clone(), "replica-1", urls.clone())),
        tokio::spawn(claim_all(second.clone(), "replica-2", urls.clone()))
    );
    let (a, b) = (a.expect("task"), b.expect("task"));
    let mut every: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
    every.sort();
    let claimed = every.len();
    every.dedup();
    assert_eq!(claimed, 80, "every delivery claimed");
    assert_eq!(every.len(), 80, "no delivery claimed twice");
    let (rows, _) = first.query_deliveries(None, None, 500).await.expect("rows");
    assert!(rows.iter().all(|d| d.attempts == 1));
}

// ---- remediations ----

fn new_remediation(key_arn: &str, requester: &str, idem: Option<&str>) -> NewRemediation {
    NewRemediation {
        impact: None,
        key_arn: key_arn.into(),
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        requester: requester.into(),
        ticket: Some("SEC-42".into()),
        comment: Some("fix delegation".into()),
        base_policy: "{\"Version\":\"2012-10-17\"}".into(),
        base_sha256: sha("{\"Version\":\"2012-10-17\"}"),
        proposed_policy: "{\"Version\":\"2012-10-17\",\"Statement\":[]}".into(),
        proposed_sha256: sha("{\"Version\":\"2012-10-17\",\"Statement\":[]}"),
        diff: "{\"changes\":[]}".into(),
        resolves: vec!["KMS-DELEGATION".into()],
        remaining: vec![],
        created_at: t(0),
        expires_at: t(7 * 86_400),
        rollback_of: None,
        idempotency_key: idem.map(str::to_string),
    }
}

fn approval(who: &str, at: DateTime<Utc>, comment: Option<&str>) -> ApprovalRow {
    ApprovalRow {
        approver: who.into(),
        comment: comment.map(str::to_string),
        created_at: at,
    }
}

async fn remediation_lifecycle_with_events_and_audit(store: &dyn Store) {
    let arn = arn_in(REGION, "k1");
    let (created, fresh) = store
        .create_remediation(
            &new_remediation(&arn, "alice", Some("idem-1")),
            &audit_at(t(0), "remediation.requested", &arn),
        )
        .await
        .expect("create");
    assert!(fresh);
    assert_eq!(created.state, "pending_approval");
    assert_eq!(created.resolves, vec!["KMS-DELEGATION".to_string()]);
    assert_eq!(created.diff, serde_json::json!({"changes": []}));
    assert_eq!(created.created_at, t(0));
    // The same idempotency key returns the first one, writing nothing.
    let (again, fresh) = store
        .create_remediation(
            &new_remediation(&arn, "alice", Some("idem-1")),
            &audit_at(t(1), "remediation.requested", &arn),
        )
        .await
        .expect("create again");
    assert!(!fresh);
    assert_eq!(again.id, created.id);
    assert_eq!(store.list_remediations(None, 10).await.expect("list").1, 1);
    let events = all_outbox(store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "remediation.requested");
    assert_eq!(payload(&events[0])["ticket"], "SEC-42");

    // The requester can never approve.
    let err = store
        .approve_remediation(
            created.id,
            &approval("alice", t(5), None),
            2,
            &audit_at(t(5), "remediation.approved", &arn),
        )
        .await
        .expect_err("self approval");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // Two distinct approvers are required.
    let one = store
        .approve_remediation(
            created.id,
            &approval("bob", t(6), Some("ok")),
            2,
            &audit_at(t(6), "remediation.approved", &arn),
        )
        .await
        .expect("bob approves");
    assert_eq!(one.state, "pending_approval");
    assert_eq!(one.approvals.len(), 1);
    let err = store
        .approve_remediation(
            created.id,
            &approval("bob", t(7), None),
            2,
            &audit_at(t(7), "remediation.approved", &arn),
        )
        .await
        .expect_err("bob twice");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let two = store
        .approve_remediation(
            created.id,
            &approval("carol", t(8), None),
            2,
            &audit_at(t(8), "remediation.approved", &arn),
        )
        .await
        .expect("carol approves");
    assert_eq!(two.state, "approved");
    assert_eq!(
        two.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>(),
        vec!["bob", "carol"]
    );

    // Claiming is one conditional update: the second claim gets nothing.
    let claimed = store
        .claim_remediation(
            created.id,
            "me",
            t(10),
            &audit_at(t(10), "remediation.applying", &arn),
        )
        .await
        .expect("claim");
    assert_eq!(claimed.expect("claimed").state, "applying");
    assert!(
        store
            .claim_remediation(
                created.id,
                "me",
                t(11),
                &audit_at(t(11), "remediation.applying", &arn)
            )
            .await
            .expect("claim again")
            .is_none()
    );
    let applied = store
        .finish_remediation(
            created.id,
            "me",
            &ApplyResult::Applied,
            t(12),
            &audit_at(t(12), "remediation.applied", &arn),
        )
        .await
        .expect("finish");
    assert_eq!(applied.state, "applied");
    assert_eq!(applied.applied_at, Some(t(12)));
    let err = store
        .finish_remediation(
            created.id,
            "me",
            &ApplyResult::Failed("x".into()),
            t(13),
            &audit_at(t(13), "remediation.failed", &arn),
        )
        .await
        .expect_err("finish twice");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let events = all_outbox(store).await;
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        vec![
            "remediation.requested",
            "remediation.approved",
            "remediation.applying",
            "remediation.applied"
        ]
    );
    assert!(events.iter().all(|e| payload(e)["ticket"] == "SEC-42"));
    let (audit, _) = store.list_audit(None, 100).await.expect("audit");
    // requested, bob's approval, carol's approval (approved), claim, applied.
    assert_eq!(audit.len(), 5);
    assert_eq!(
        store.verify_audit().await.expect("verify").first_broken_id,
        None
    );
}

/// Crash recovery found nothing written: `applying → approved` again, audited, with a
/// `remediation.unapplied` event (not a second `remediation.approved`), and the remediation can
/// be claimed once more.
async fn remediation_unapplied_goes_back_to_approved(store: &dyn Store) {
    let arn = arn_in(REGION, "k3");
    let (r, _) = store
        .create_remediation(
            &new_remediation(&arn, "alice", None),
            &audit_at(t(1), "remediation.requested", &arn),
        )
        .await
        .expect("create");
    store
        .approve_remediation(
            r.id,
            &approval("bob", t(2), None),
            1,
            &audit_at(t(2), "remediation.approved", &arn),
        )
        .await
        .expect("approve");
    store
        .claim_remediation(
            r.id,
            "me",
            t(3),
            &audit_at(t(3), "remediation.applying", &arn),
        )
        .await
        .expect("claim")
        .expect("won");
    let before = all_outbox(store).await.len();
    let (_, audits_before) = store.list_audit(None, 1).await.expect("audit");
    let back = store
        .finish_remediation(
            r.id,
            "me",
            &ApplyResult::Unapplied("nothing was written".into()),
            t(4),
            &audit_at(t(4), "remediation.unapplied", &arn),
        )
        .await
        .expect("unapplied");
    assert_eq!(back.state, "approved");
    assert_eq!(back.error, None);
    assert_eq!(back.applied_at, None);
    let events = all_outbox(store).await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(events.last().expect("event").event, "remediation.unapplied");
    let (audits, total) = store.list_audit(None, 1).await.expect("audit");
    assert_eq!(total, audits_before + 1);
    assert_eq!(audits[0].action, "remediation.unapplied");
    assert_eq!(
        store
            .claim_remediation(
                r.id,
                "me",
                t(5),
                &audit_at(t(5), "remediation.applying", &arn)
            )
            .await
            .expect("claim again")
            .expect("claimable again")
            .state,
        "applying"
    );
}

async fn remediation_reject_stale_expire_and_list(store: &dyn Store) {
    let arn = arn_in(REGION, "k2");
    let mut ids = Vec::new();
    for i in 0..4 {
        let (r, _) = store
            .create_remediation(
                &new_remediation(&arn, "alice", None),
                &audit_at(t(i), "remediation.requested", &arn),
            )
            .await
            .expect("create");
        ids.push(r.id);
    }
    // Rejecting needs a comment.
    let err = store
        .reject_remediation(
            ids[0],
            &approval("bob", t(5), Some("  ")),
            &audit_at(t(5), "remediation.rejected", &arn),
        )
        .await
        .expect_err("no comment");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let rejected = store
        .reject_remediation(
            ids[0],
            &approval("bob", t(5), Some("not now")),
            &audit_at(t(5), "remediation.rejected", &arn),
        )
        .await
        .expect("reject");
    assert_eq!(rejected.state, "rejected");
    assert_eq!(rejected.error.as_deref(), Some("not now"));
    let err = store
        .approve_remediation(
            ids[0],
            &approval("carol", t(6), None),
            1,
            &audit_at(t(6), "remediation.approved", &arn),
        )
        .await
        .expect_err("approve rejected");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // A pending remediation cannot be claimed.
    assert!(
        store
            .claim_remediation(ids[1], "me", t(6), &audit_at(t(6), "x", &arn))
            .await
            .expect("claim")
            .is_none()
    );
    // Stale: claimed, then the base changed.
    store
        .approve_remediation(
            ids[1],
            &approval("bob", t(6), None),
            1,
            &audit_at(t(6), "remediation.approved", &arn),
        )
        .await
        .expect("approve");
    store
        .claim_remediation(ids[1], "me", t(7), &audit_at(t(7), "x", &arn))
        .await
        .expect("claim")
        .expect("won");
    let stale = store
        .finish_remediation(
            ids[1],
            "me",
            &ApplyResult::Stale("policy changed".into()),
            t(8),
            &audit_at(t(8), "remediation.stale", &arn),
        )
        .await
        .expect("stale");
    assert_eq!(stale.state, "stale");
    assert_eq!(stale.error.as_deref(), Some("policy changed"));
    // Expiry: pending and approved ones past expires_at; nothing before it.
    store
        .approve_remediation(
            ids[2],
            &approval("bob", t(9), None),
            1,
            &audit_at(t(9), "remediation.approved", &arn),
        )
        .await
        .expect("approve");
    assert!(
        store
            .expire_remediations(t(10))
            .await
            .expect("expire early")
            .is_empty()
    );
    let expired = store
        .expire_remediations(t(8 * 86_400))
        .await
        .expect("expire");
    assert_eq!(expired, vec![ids[2], ids[3]]);
    assert_eq!(
        store
            .get_remediation(ids[3])
            .await
            .expect("get")
            .expect("row")
            .state,
        "expired"
    );
    assert!(store.get_remediation(9_999).await.expect("get").is_none());
    // Listing: newest first, paged by id.
    let (page, total) = store.list_remediations(None, 3).await.expect("list");
    assert_eq!(total, 4);
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2], ids[1]]
    );
    let (rest, _) = store
        .list_remediations(Some(ids[1]), 3)
        .await
        .expect("list rest");
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0]]);
    let events = all_outbox(store).await;
    let count = |name: &str| events.iter().filter(|e| e.event == name).count();
    assert_eq!(count("remediation.rejected"), 1);
    assert_eq!(count("remediation.stale"), 1);
    assert_eq!(count("remediation.expired"), 2);
    assert_eq!(count("remediation.failed"), 0);
    assert_eq!(
        store.verify_audit().await.expect("verify").first_broken_id,
        None
    );
}

async fn concurrent_remediation_claims_have_one_winner(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
) {
    let arn = arn_in(REGION, "k3");
    let mut ids = Vec::new();
    for i in 0..10 {
        let (r, _) = first
            .create_remediation(
                &new_remediation(&arn, "alice", None),
                &audit_at(t(i), "remediation.requested", &arn),
            )
            .await
            .expect("create");
        first
            .approve_remediation(
                r.id,
                &approval("bob", t(i), None),
                1,
                &audit_at(t(i), "remediation.approved", &arn),
            )
            .await
            .expect("approve");
        ids.push(r.id);
    }
    let mut tasks = Vec::new();
    for store in [first.clone(), second.clone(), first.clone(), second.clone()] {
        let ids = ids.clone();
        let arn = arn.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for id in ids {
                if store
                    .claim_remediation(
                        id,
                        "me",
                        t(100),
                        &audit_at(t(100), "remediation.applying", &arn),
                    )
                    .await
                    .expect("claim")
                    .is_some()
                {
                    won.push(id);
                }
            }
            won
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, ids, "every remediation claimed exactly once");
}

/// Audit entries and outbox events written since `before` (counts as `(audits, events)`).
async fn written_since(store: &dyn Store, before: (u64, usize)) -> (u64, Vec<String>) {
    let (_, audits) = store.list_audit(None, 1).await.expect("audit");
    let events = all_outbox(store).await;
    (
        audits - before.0,
        events[before.1..].iter().map(|e| e.event.clone()).collect(),
    )
}

async fn written_now(store: &dyn Store) -> (u64, usize) {
    (
        store.list_audit(None, 1).await.expect("audit").1,
        all_outbox(store).await.len(),
    )
}

/// Every transition of the state machine is one transaction with one audit entry and one
/// outbox event named after it (an applied rollback is two transitions: two of each).
async fn remediation_transitions_each_write_one_audit_and_one_event(store: &dyn Store) {
    let arn = arn_in(REGION, "k5");
    let create = |at: i64, rollback_of: Option<i64>| {
        let arn = arn.clone();
        async move {
            let mut new = new_remediation(&arn, "alice", None);
            new.created_at = t(at);
            new.rollback_of = rollback_of;
            store
                .create_remediation(&new, &audit_at(t(at), "remediation.requested", &arn))
                .await
                .expect("create")
                .0
        }
    };
    let approve = |id: i64, at: i64| {
        let arn = arn.clone();
        async move {
            store
                .approve_remediation(
                    id,
                    &approval("bob", t(at), None),
                    1,
                    &audit_at(t(at), "remediation.approved", &arn),
                )
                .await
                .expect("approve")
        }
    };
    let claim = |id: i64, at: i64| {
        let arn = arn.clone();
        async move {
            store
                .claim_remediation(
                    id,
                    "c",
                    t(at),
                    &audit_at(t(at), "remediation.applying", &arn),
                )
                .await
                .expect("claim")
                .expect("claimed")
        }
    };
    let finish = |id: i64, at: i64, result: ApplyResult| {
        let arn = arn.clone();
        async move {
            store
                .finish_remediation(id, "c", &result, t(at), &audit_at(t(at), "finish", &arn))
                .await
                .expect("finish")
        }
    };
    let one = |n: &str| (1u64, vec![n.to_string()]);

    let w = written_now(store).await;
    let r = create(1, None).await;
    assert_eq!(written_since(store, w).await, one("remediation.requested"));
    let w = written_now(store).await;
    assert_eq!(approve(r.id, 2).await.state, "approved");
    assert_eq!(written_since(store, w).await, one("remediation.approved"));
    let w = written_now(store).await;
    assert_eq!(claim(r.id, 3).await.state, "applying");
    assert_eq!(written_since(store, w).await, one("remediation.applying"));
    let w = written_now(store).await;
    let back = finish(r.id, 4, ApplyResult::Unapplied("nothing written".into())).await;
    assert_eq!(back.state, "approved");
    assert_eq!(written_since(store, w).await, one("remediation.unapplied"));
    claim(r.id, 5).await;
    let w = written_now(store).await;
    assert_eq!(finish(r.id, 6, ApplyResult::Applied).await.state, "applied");
    assert_eq!(written_since(store, w).await, one("remediation.applied"));

    // The applied rollback moves the original to rolled_back in the same transaction.
    let rb = create(7, Some(r.id)).await;
    approve(rb.id, 8).await;
    claim(rb.id, 9).await;
    let w = written_now(store).await;
    let done = finish(rb.id, 10, ApplyResult::Applied).await;
    assert_eq!(done.state, "applied");
    assert_eq!(
        written_since(store, w).await,
        (
            2,
            vec![
                "remediation.applied".to_string(),
                "remediation.rolled_back".to_string()
            ]
        )
    );
    let original = store
        .get_remediation(r.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(original.state, "rolled_back");
    let (latest, _) = store.list_audit(None, 1).await.expect("audit");
    assert_eq!(latest[0].action, "remediation.rolled_back");
    assert_eq!(latest[0].actor, "jira", "the finishing actor");
    let events = all_outbox(store).await;
    let last = payload(events.last().expect("event"));
    assert_eq!(last["id"], r.id);
    assert_eq!(last["state"], "rolled_back");
    // A rolled-back remediation cannot be rolled back by a second applied rollback.
    let again = create(11, Some(r.id)).await;
    approve(again.id, 12).await;
    claim(again.id, 13).await;
    let w = written_now(store).await;
    finish(again.id, 14, ApplyResult::Applied).await;
    assert_eq!(written_since(store, w).await, one("remediation.applied"));

    // Side exits.
    let rejected = create(20, None).await;
    let w = written_now(store).await;
    store
        .reject_remediation(
            rejected.id,
            &approval("bob", t(21), Some("no")),
            &audit_at(t(21), "remediation.rejected", &arn),
        )
        .await
        .expect("reject");
    assert_eq!(written_since(store, w).await, one("remediation.rejected"));
    for (result, event, state) in [
        (
            ApplyResult::Stale("changed".into()),
            "remediation.stale",
            "stale",
        ),
        (
            ApplyResult::Failed("aws".into()),
            "remediation.failed",
            "failed",
        ),
    ] {
        let r = create(30, None).await;
        approve(r.id, 31).await;
        claim(r.id, 32).await;
        let w = written_now(store).await;
        assert_eq!(finish(r.id, 33, result).await.state, state);
        assert_eq!(written_since(store, w).await, one(event));
    }
    let expiring = create(40, None).await;
    let w = written_now(store).await;
    assert_eq!(
        store
            .expire_remediations(t(8 * 86_400))
            .await
            .expect("expire"),
        vec![expiring.id]
    );
    assert_eq!(written_since(store, w).await, one("remediation.expired"));
    // Every event name is one a webhook may subscribe to.
    for e in all_outbox(store).await {
        assert!(
            keyward::store::events::ALL.contains(&e.event.as_str()),
            "{}",
            e.event
        );
    }
    assert_eq!(
        store.verify_audit().await.expect("verify").first_broken_id,
        None
    );
}

/// Only the claim that started an apply finishes it; crash recovery sees claims by age.
async fn remediation_finish_needs_its_own_claim(store: &dyn Store) {
    let arn = arn_in(REGION, "k6");
    let (r, _) = store
        .create_remediation(
            &new_remediation(&arn, "alice", None),
            &audit_at(t(1), "remediation.requested", &arn),
        )
        .await
        .expect("create");
    store
        .approve_remediation(
            r.id,
            &approval("bob", t(2), None),
            1,
            &audit_at(t(2), "remediation.approved", &arn),
        )
        .await
        .expect("approve");
    let claimed = store
        .claim_remediation(
            r.id,
            "replica-1/n1",
            t(100),
            &audit_at(t(100), "remediation.applying", &arn),
        )
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(claimed.claimed_by.as_deref(), Some("replica-1/n1"));
    assert_eq!(claimed.claimed_at, Some(t(100)));
    // Claims at or before the cut-off are abandoned; fresher ones are not.
    assert!(
        store
            .abandoned_remediations(t(99))
            .await
            .expect("abandoned")
            .is_empty()
    );
    let abandoned = store
        .abandoned_remediations(t(100))
        .await
        .expect("abandoned");
    assert_eq!(
        abandoned.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![r.id]
    );
    // Another claimant cannot finish it, and nothing is written when it tries.
    let w = written_now(store).await;
    let err = store
        .finish_remediation(
            r.id,
            "replica-2/n2",
            &ApplyResult::Failed("x".into()),
            t(101),
            &audit_at(t(101), "remediation.failed", &arn),
        )
        .await
        .expect_err("not its claim");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(written_since(store, w).await, (0, vec![]));
    let row = store
        .get_remediation(r.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.state, "applying");
    let done = store
        .finish_remediation(
            r.id,
            "replica-1/n1",
            &ApplyResult::Applied,
            t(102),
            &audit_at(t(102), "remediation.applied", &arn),
        )
        .await
        .expect("its own claim");
    assert_eq!(done.state, "applied");
    assert!(
        store
            .abandoned_remediations(t(1000))
            .await
            .expect("abandoned")
            .is_empty()
    );
}

/// `n` pending remediations of `arn`.
async fn pending_remediations(store: &dyn Store, arn: &str, n: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (r, _) = store
            .create_remediation(
                &new_remediation(arn, "alice", None),
                &audit_at(t(i), "remediation.requested", arn),
            )
            .await
            .expect("create");
        ids.push(r.id);
    }
    ids
}

/// Approve racing reject (on two replicas). Rejecting an approved remediation is allowed, so
/// either the approval came first (both succeed, approved then rejected) or the rejection did
/// (the approval is refused); a rejected remediation never ends up approved.
async fn concurrent_approve_and_reject_end_rejected(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let arn = arn_in(REGION, "k7");
    let ids = pending_remediations(first.as_ref(), &arn, 12).await;
    for &id in &ids {
        let (a, b) = (first.clone(), second.clone());
        let (arn_a, arn_b) = (arn.clone(), arn.clone());
        let approve = tokio::spawn(async move {
            a.approve_remediation(
                id,
                &approval("bob", t(50), None),
                1,
                &audit_at(t(50), "remediation.approved", &arn_a),
            )
            .await
        });
        let reject = tokio::spawn(async move {
            b.reject_remediation(
                id,
                &approval("carol", t(50), Some("no")),
                &audit_at(t(50), "remediation.rejected", &arn_b),
            )
            .await
        });
        let (approved, rejected) = (approve.await.expect("task"), reject.await.expect("task"));
        rejected.expect("a pending or approved remediation can be rejected");
        let row = first.get_remediation(id).await.expect("get").expect("row");
        assert_eq!(row.state, "rejected", "remediation {id}");
        let events: Vec<String> = all_outbox(first.as_ref())
            .await
            .iter()
            .filter(|e| payload(e)["id"] == id && e.event != "remediation.requested")
            .map(|e| e.event.clone())
            .collect();
        match approved {
            Ok(_) => assert_eq!(
                events,
                vec!["remediation.approved", "remediation.rejected"],
                "remediation {id}"
            ),
            Err(StoreError::Conflict(_)) => {
                assert_eq!(events, vec!["remediation.rejected"], "remediation {id}")
            }
            Err(e) => panic!("approve: {e:?}"),
        }
    }
}

/// Two approvals at once with two required: both count, the remediation is approved, once.
async fn concurrent_approvals_both_count(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let arn = arn_in(REGION, "k8");
    let ids = pending_remediations(first.as_ref(), &arn, 12).await;
    for &id in &ids {
        let mut tasks = Vec::new();
        for (store, who) in [(first.clone(), "bob"), (second.clone(), "carol")] {
            let arn = arn.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .approve_remediation(
                        id,
                        &approval(who, t(50), None),
                        2,
                        &audit_at(t(50), "remediation.approved", &arn),
                    )
                    .await
            }));
        }
        for task in tasks {
            task.await
                .expect("task")
                .expect("both approvals are accepted");
        }
        let row = first.get_remediation(id).await.expect("get").expect("row");
        assert_eq!(row.state, "approved", "remediation {id}");
        assert_eq!(row.approvals.len(), 2);
    }
    let approved = all_outbox(first.as_ref())
        .await
        .iter()
        .filter(|e| e.event == "remediation.approved")
        .count();
    assert_eq!(approved, ids.len(), "one approved event per remediation");
}

/// Claim, reject and expire racing on one approved remediation: exactly one of them happens.
async fn concurrent_claim_reject_and_expire_have_one_winner(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
) {
    let arn = arn_in(REGION, "k9");
    // One at a time: expiry takes every due remediation, and only this one is due.
    for _ in 0..12 {
        let id = pending_remediations(first.as_ref(), &arn, 1).await[0];
        first
            .approve_remediation(
                id,
                &approval("bob", t(20), None),
                1,
                &audit_at(t(20), "remediation.approved", &arn),
            )
            .await
            .expect("approve");
        let (a, b, c) = (first.clone(), second.clone(), first.clone());
        let (arn_a, arn_b) = (arn.clone(), arn.clone());
        let claim = tokio::spawn(async move {
            a.claim_remediation(
                id,
                "me",
                t(30),
                &audit_at(t(30), "remediation.applying", &arn_a),
            )
            .await
        });
        let reject = tokio::spawn(async move {
            b.reject_remediation(
                id,
                &approval("carol", t(30), Some("no")),
                &audit_at(t(30), "remediation.rejected", &arn_b),
            )
            .await
        });
        // Every remediation is due at this `now`; a claim at t(30) still beat it or not.
        let expire = tokio::spawn(async move { c.expire_remediations(t(8 * 86_400)).await });
        let claimed = claim.await.expect("task").expect("claim").is_some();
        let rejected = match reject.await.expect("task") {
            Ok(_) => true,
            Err(StoreError::Conflict(_)) => false,
            Err(e) => panic!("reject: {e:?}"),
        };
        let expired = expire.await.expect("task").expect("expire").contains(&id);
        let row = first.get_remediation(id).await.expect("get").expect("row");
        let winners = [claimed, rejected, expired];
        assert_eq!(
            winners.iter().filter(|w| **w).count(),
            1,
            "remediation {id}: claimed {claimed}, rejected {rejected}, expired {expired}"
        );
        let expected = if claimed {
            "applying"
        } else if rejected {
            "rejected"
        } else {
            "expired"
        };
        assert_eq!(row.state, expected, "remediation {id}");
    }
    assert_eq!(
        first.verify_audit().await.expect("verify").first_broken_id,
        None
    );
}

macro_rules! contract {
    (
        stores: [$($name:ident),* $(,)?],
        databases: [$($raw:ident),* $(,)?],
        replicas: [$($race:ident),* $(,)?] $(,)?
    ) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::db::sqlite().await;
                    super::$name(db.store()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $raw() {
                    let db = crate::db::sqlite().await;
                    super::$raw(&db).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $race() {
                    let db = crate::db::sqlite().await;
                    super::$race(db.shared(), db.replica().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::db::postgres().await else { return };
                    super::$name(db.store()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $raw() {
                    let Some(db) = crate::db::postgres().await else { return };
                    super::$raw(&db).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $race() {
                    let Some(db) = crate::db::postgres().await else { return };
                    super::$race(db.shared(), db.replica().await).await;
                }
            )*
        }
    };
}

contract! {
    stores: [
        migrations_are_idempotent,
        accounts_upsert_by_id,
        first_sync_inserts_keys_versions_and_findings,
        unchanged_resync_only_stamps_last_seen,
        policy_change_adds_version_and_reconciles_findings,
        policy_history_a_b_a_keeps_three_versions,
        resolved_finding_reopens_in_place,
        unreadable_policy_keeps_last_readable_version,
        deletion_needs_a_complete_listing,
        partial_data_never_resolves_other_keys,
        sync_runs_start_finish_recent_latest,
        abandoned_runs_are_closed_as_failed,
        claim_and_release,
        fenced_sync_refuses_a_lost_lease,
        stats_count_live_keys_and_open_findings,
        cancelled_sync_is_all_or_nothing,
        query_keys_filters,
        query_keys_pages_walk_every_key_once,
        find_keys_by_id_or_arn,
        query_findings_filters_and_pages,
        tokens_create_list_authenticate_revoke,
        audit_appends_form_a_chain,
        audit_list_pages_newest_first,
        sync_writes_finding_events_in_its_transaction,
        cancelled_sync_writes_events_all_or_nothing,
        deliveries_fan_out_retry_and_finish,
        remediation_lifecycle_with_events_and_audit,
        remediation_reject_stale_expire_and_list,
        remediation_unapplied_goes_back_to_approved,
        remediation_transitions_each_write_one_audit_and_one_event,
        remediation_finish_needs_its_own_claim,
        sessions_expire_and_end_with_their_token,
        compliance_by_region_and_daily_snapshots,
        query_keys_sorted_orders_and_pages,
        iam_inventory_change_detection_and_errors,
        key_policies_join_current_versions,
        iam_errors_and_impact_round_trip,
    ],
    databases: [
        audit_tampering_is_detected,
        waiver_lifecycle_and_expiry_by_time,
        account_waiver_covers_every_key_of_the_account,
        failed_sync_writes_no_events,
        change_marker_moves_with_runs_and_waivers,
        open_findings_belong_to_live_keys,
        compliance_figures_subtract_active_waivers,
    ],
    replicas: [
        concurrent_claims_have_one_winner,
        concurrent_region_syncs_all_apply,
        concurrent_audit_appends_form_one_chain,
        concurrent_delivery_claims_are_exclusive,
        concurrent_remediation_claims_have_one_winner,
        concurrent_approve_and_reject_end_rejected,
        concurrent_approvals_both_count,
        concurrent_claim_reject_and_expire_have_one_winner,
    ],
}

// ---- dashboard sessions, compliance snapshots, sorted key lists, IAM inventories ----

fn new_session(id: &str, token: Option<&str>, expires: DateTime<Utc>) -> NewSession {
    NewSession {
        id_sha256: sha(id),
        actor: token.unwrap_or("alice@example.com").into(),
        role: "approver".into(),
        token_name: token.map(str::to_string),
        csrf_token: format!("csrf-{id}"),
        created_at: t(0),
        expires_at: expires,
    }
}

async fn sessions_expire_and_end_with_their_token(store: &dyn Store) {
    store
        .create_token(&new_token("jira", "approver", "secret-1"))
        .await
        .expect("token");
    store
        .create_session(&new_session("s1", Some("jira"), t(100)))
        .await
        .expect("token session");
    store
        .create_session(&new_session("s2", None, t(50)))
        .await
        .expect("proxy session");
    let live = store
        .get_session(&sha("s1"), t(10))
        .await
        .expect("get")
        .expect("live");
    assert_eq!(
        live,
        SessionRow {
            actor: "jira".into(),
            role: "approver".into(),
            token_name: Some("jira".into()),
            csrf_token: "csrf-s1".into(),
            created_at: t(0),
            expires_at: t(100),
        }
    );
    assert!(
        store
            .get_session(&sha("nope"), t(10))
            .await
            .expect("get")
            .is_none()
    );
    // Expiry is exclusive: at expires_at the session is over.
    assert!(
        store
            .get_session(&sha("s2"), t(49))
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        store
            .get_session(&sha("s2"), t(50))
            .await
            .expect("get")
            .is_none()
    );
    // Revoking the token ends its sessions at once.
    store.revoke_token("jira", t(20)).await.expect("revoke");
    assert!(
        store
            .get_session(&sha("s1"), t(21))
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        store.delete_expired_sessions(t(60)).await.expect("prune"),
        1
    );
    store.delete_session(&sha("s1")).await.expect("logout");
    store
        .delete_session(&sha("s1"))
        .await
        .expect("logout twice is fine");
    assert_eq!(
        store.delete_expired_sessions(t(1000)).await.expect("prune"),
        0
    );
}

async fn compliance_by_region_and_daily_snapshots(store: &dyn Store) {
    assert!(
        store
            .compliance_by_region()
            .await
            .expect("empty")
            .is_empty()
    );
    seed_inventory(store).await;
    let region =
        |account: &str, region: &str, keys, compliant_keys, open, delegating| RegionCompliance {
            account_id: account.into(),
            region: region.into(),
            keys,
            compliant_keys,
            open_findings: open,
            delegating_keys: delegating,
        };
    let expected = vec![
        region(ACCOUNT, REGION, 4, 1, 5, 3),
        region(ACCOUNT, "us-east-1", 1, 1, 0, 0),
        region(OTHER_ACCOUNT, REGION, 1, 0, 1, 1),
    ];
    assert_eq!(store.compliance_by_region().await.expect("live"), expected);

    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).expect("date");
    store
        .record_daily_snapshot(day(1), t(100))
        .await
        .expect("day 1");
    // Recording a day again replaces it with the state of now.
    store
        .apply_region_sync(&region_sync(
            t(200),
            &[
                arn_in(REGION, "a"),
                arn_in(REGION, "b"),
                arn_in(REGION, "c"),
                arn_in(REGION, "e"),
            ],
            true,
            vec![update(key("b"), readable("B3"), vec![])],
        ))
        .await
        .expect("b fixed");
    store
        .record_daily_snapshot(day(2), t(300))
        .await
        .expect("day 2");
    store
        .record_daily_snapshot(day(2), t(301))
        .await
        .expect("day 2 again");
    let snapshots = store.daily_snapshots(day(1)).await.expect("snapshots");
    let rows: Vec<(NaiveDate, &str, &str, u64, u64, u64, u64)> = snapshots
        .iter()
        .map(|s| {
            (
                s.day,
                s.account_id.as_str(),
                s.region.as_str(),
                s.keys,
                s.compliant_keys,
                s.open_findings,
                s.delegating_keys,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (day(1), ACCOUNT, REGION, 4, 1, 5, 3),
            (day(1), ACCOUNT, "us-east-1", 1, 1, 0, 0),
            (day(1), OTHER_ACCOUNT, REGION, 1, 0, 1, 1),
            (day(2), ACCOUNT, REGION, 4, 2, 4, 2),
            (day(2), ACCOUNT, "us-east-1", 1, 1, 0, 0),
            (day(2), OTHER_ACCOUNT, REGION, 1, 0, 1, 1),
        ]
    );
    assert_eq!(store.daily_snapshots(day(2)).await.expect("since").len(), 3);
    assert!(
        store
            .daily_snapshots(day(3))
            .await
            .expect("none")
            .is_empty()
    );
}

async fn sorted_ids(
    store: &dyn Store,
    filter: &KeyFilter,
    sort: KeySort,
    descending: bool,
    offset: u64,
    limit: u32,
) -> (Vec<String>, u64) {
    let (rows, total) = store
        .query_keys_sorted(filter, sort, descending, offset, limit)
        .await
        .unwrap_or_else(|e| panic!("sorted {sort:?}: {e}"));
    (rows.into_iter().map(|r| r.key.key_id).collect(), total)
}

async fn query_keys_sorted_orders_and_pages(store: &dyn Store) {
    seed_inventory(store).await;
    let all = KeyFilter::default();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (sort, descending, expected) in [
        (KeySort::Arn, false, ids(&["a", "b", "c", "e", "y", "x"])),
        (KeySort::Arn, true, ids(&["x", "y", "e", "c", "b", "a"])),
        (
            KeySort::Account,
            false,
            ids(&["a", "b", "c", "e", "x", "y"]),
        ),
        (KeySort::Region, false, ids(&["a", "b", "c", "e", "y", "x"])),
        // Byte order: "alias/Payments-DB" sorts before "alias/a".
        (KeySort::Alias, false, ids(&["c", "a", "b", "e", "x", "y"])),
        (
            KeySort::Compliance,
            false,
            ids(&["c", "x", "b", "y", "a", "e"]),
        ),
        (
            KeySort::Compliance,
            true,
            ids(&["e", "a", "y", "b", "x", "c"]),
        ),
    ] {
        assert_eq!(
            sorted_ids(store, &all, sort, descending, 0, 50).await,
            (expected, 6),
            "{sort:?} descending={descending}"
        );
    }
    assert_eq!(
        sorted_ids(store, &all, KeySort::Compliance, false, 2, 2).await,
        (ids(&["b", "y"]), 6)
    );
    assert_eq!(
        sorted_ids(store, &all, KeySort::Arn, false, 6, 2).await,
        (vec![], 6)
    );
    let mine = KeyFilter {
        account: Some(ACCOUNT.into()),
        ..KeyFilter::default()
    };
    assert_eq!(
        sorted_ids(store, &mine, KeySort::Alias, true, 0, 50).await,
        (ids(&["x", "e", "b", "a", "c"]), 5)
    );
    // A key without aliases sorts last both ways.
    let mut bare = key("f");
    bare.aliases.clear();
    store
        .apply_region_sync(&region_sync(
            t(120),
            &[
                arn_in(REGION, "a"),
                arn_in(REGION, "b"),
                arn_in(REGION, "c"),
                arn_in(REGION, "e"),
                bare.arn.clone(),
            ],
            true,
            vec![update(bare, readable("F"), vec![])],
        ))
        .await
        .expect("f");
    for descending in [false, true] {
        let (order, _) = sorted_ids(store, &mine, KeySort::Alias, descending, 0, 50).await;
        assert_eq!(order.last().map(String::as_str), Some("f"), "{order:?}");
    }
    let state = KeyFilter {
        compliant: Some(true),
        ..KeyFilter::default()
    };
    assert_eq!(
        sorted_ids(store, &state, KeySort::State, false, 0, 50).await,
        (ids(&["c", "f", "x"]), 3)
    );
}

async fn iam_inventory_change_detection_and_errors(store: &dyn Store) {
    assert!(store.iam_inventory(ACCOUNT).await.expect("none").is_none());
    // A failure before any success records the error and no inventory.
    store
        .record_iam_error(
            ACCOUNT,
            "GetAccountAuthorizationDetails: access denied",
            t(0),
        )
        .await
        .expect("error");
    let row = store
        .iam_inventory(ACCOUNT)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(row.inventory, None);
    assert_eq!(row.sha256, None);
    assert_eq!(row.last_error_at, Some(t(0)));
    assert!(
        store
            .save_iam_inventory(ACCOUNT, "h1", "{\"v\":1}", t(10))
            .await
            .expect("save")
    );
    let row = store
        .iam_inventory(ACCOUNT)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(
        row,
        IamInventoryRow {
            account_id: ACCOUNT.into(),
            sha256: Some("h1".into()),
            inventory: Some("{\"v\":1}".into()),
            fetched_at: Some(t(10)),
            changed_at: Some(t(10)),
            last_error: None,
            last_error_at: None,
        }
    );
    // The same content writes nothing; the fetch time comes from the account's last finished
    // sync run whose IAM read succeeded.
    assert!(
        !store
            .save_iam_inventory(ACCOUNT, "h1", "{\"v\":1}", t(20))
            .await
            .expect("same")
    );
    let unchanged = store
        .iam_inventory(ACCOUNT)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(unchanged.fetched_at, Some(t(10)));
    let run = store
        .start_sync_run(ACCOUNT, REGION, t(20))
        .await
        .expect("run");
    store
        .finish_sync_run(
            run,
            &SyncRunFinish {
                finished_at: t(21),
                keys_seen: 0,
                outcome: RegionSyncOutcome::default(),
                error: None,
                iam_error: None,
            },
        )
        .await
        .expect("finish");
    let checked = store
        .iam_inventory(ACCOUNT)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(
        (checked.fetched_at, checked.changed_at),
        (Some(t(20)), Some(t(10)))
    );
    // A failure never clears the inventory.
    store
        .record_iam_error(ACCOUNT, "throttled", t(30))
        .await
        .expect("error");
    let row = store
        .iam_inventory(ACCOUNT)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(
        (
            row.inventory.as_deref(),
            row.fetched_at,
            row.changed_at,
            row.last_error.as_deref()
        ),
        (
            Some("{\"v\":1}"),
            Some(t(20)),
            Some(t(10)),
            Some("throttled")
        )
    );
    assert!(
        store
            .save_iam_inventory(ACCOUNT, "h2", "{\"v\":2}", t(40))
            .await
            .expect("new")
    );
    let row = store
        .iam_inventory(ACCOUNT)
        .await
        .expect("row")
        .expect("some");
    assert_eq!(
        (row.inventory.as_deref(), row.changed_at, row.last_error),
        (Some("{\"v\":2}"), Some(t(40)), None)
    );
    assert!(
        store
            .iam_inventory(OTHER_ACCOUNT)
            .await
            .expect("other")
            .is_none()
    );
}

async fn key_policies_join_current_versions(store: &dyn Store) {
    seed_inventory(store).await;
    let texts = |rows: Vec<(KeyRow, String)>| {
        rows.into_iter()
            .map(|(k, text)| (k.key.key_id, text))
            .collect::<Vec<_>>()
    };
    let pair = |id: &str, text: &str| (id.to_string(), text.to_string());
    assert_eq!(
        texts(store.key_policies(Some(ACCOUNT)).await.expect("mine")),
        vec![
            pair("a", "A"),
            pair("b", "B2"),
            pair("c", "C"),
            pair("e", "E"),
            pair("x", "X")
        ]
    );
    assert_eq!(
        texts(store.key_policies(None).await.expect("all")).len(),
        6,
        "deleted d left out"
    );
}

async fn iam_errors_and_impact_round_trip(store: &dyn Store) {
    let run = store
        .start_sync_run(ACCOUNT, REGION, t(0))
        .await
        .expect("run");
    store
        .finish_sync_run(
            run,
            &SyncRunFinish {
                finished_at: t(1),
                keys_seen: 3,
                outcome: RegionSyncOutcome::default(),
                error: None,
                iam_error: Some("GetAccountAuthorizationDetails: access denied".into()),
            },
        )
        .await
        .expect("finish");
    let latest = store.latest_sync_runs().await.expect("latest");
    assert_eq!(
        latest[0].status, "succeeded",
        "an IAM failure does not fail KMS"
    );
    assert_eq!(
        latest[0].iam_error.as_deref(),
        Some("GetAccountAuthorizationDetails: access denied")
    );
    let arn = arn_in(REGION, "k1");
    let impact = serde_json::json!({"lose": [{"principal": "arn:aws:iam::111122223333:role/app"}]});
    let mut new = new_remediation(&arn, "alice", None);
    new.impact = Some(impact.to_string());
    let (created, _) = store
        .create_remediation(&new, &audit_at(t(2), "remediation.requested", &arn))
        .await
        .expect("create");
    assert_eq!(created.impact, Some(impact.clone()));
    let stored = store
        .get_remediation(created.id)
        .await
        .expect("get")
        .expect("some");
    assert_eq!(stored.impact, Some(impact.clone()));
    let events = all_outbox(store).await;
    let requested = events
        .iter()
        .find(|e| e.event == "remediation.requested")
        .expect("event");
    assert_eq!(
        payload(requested)["impact"],
        impact,
        "webhooks carry the impact"
    );
}

async fn change_marker_moves_with_runs_and_waivers(db: &db::TestDb) {
    let store = db.store();
    let (a_deleg, _, b_deleg) = seed_waivable(db).await;
    let first = store.change_marker(t(1000)).await.expect("marker");
    assert_eq!(first, store.change_marker(t(1000)).await.expect("again"));
    assert_eq!(
        (
            first.running_sync_runs,
            first.last_waiver,
            first.revoked_waivers,
            first.next_waiver_expiry
        ),
        (0, 0, 0, None)
    );
    // A run that starts, then ends.
    let run = store
        .start_sync_run(ACCOUNT, REGION, t(1001))
        .await
        .expect("run");
    let running = store.change_marker(t(1001)).await.expect("running");
    assert_eq!((running.last_sync_run, running.running_sync_runs), (run, 1));
    store
        .finish_sync_run(
            run,
            &SyncRunFinish {
                finished_at: t(1002),
                keys_seen: 0,
                outcome: RegionSyncOutcome::default(),
                error: None,
                iam_error: None,
            },
        )
        .await
        .expect("finish");
    let finished = store.change_marker(t(1002)).await.expect("finished");
    assert_eq!(
        (finished.last_sync_run, finished.running_sync_runs),
        (run, 0)
    );
    assert_ne!(finished, running);
    // Waivers: created, expiring, revoked.
    let w = store
        .waive_finding(
            a_deleg,
            &waiver(WaiverScope::Key, t(1000), t(2000)),
            &audit_at(t(1000), "finding.waived", "finding"),
        )
        .await
        .expect("waive");
    store
        .waive_finding(
            b_deleg,
            &waiver(WaiverScope::Key, t(1000), t(3000)),
            &audit_at(t(1000), "finding.waived", "finding"),
        )
        .await
        .expect("waive b");
    let waived = store.change_marker(t(1500)).await.expect("waived");
    assert!(waived.last_waiver > w.id - 1 && waived.last_waiver != finished.last_waiver);
    assert_eq!(waived.next_waiver_expiry, Some(t(2000)));
    // Once a waiver expires the marker moves by itself.
    let later = store.change_marker(t(2000)).await.expect("later");
    assert_eq!(later.next_waiver_expiry, Some(t(3000)));
    store
        .revoke_waivers(
            b_deleg,
            t(2100),
            "jira",
            &audit_at(t(2100), "finding.unwaived", "finding"),
        )
        .await
        .expect("revoke");
    let revoked = store.change_marker(t(2100)).await.expect("revoked");
    assert_eq!(
        (revoked.revoked_waivers, revoked.next_waiver_expiry),
        (1, None)
    );
}

// ---- compliance figures --------------------------------------------------------------------

/// The compliance figures as the per-row reads see them: every live key with its open-finding
/// count (waived ones left out), every open finding with its status (`waived` when covered).
async fn figures_from_rows(store: &dyn Store) -> ComplianceFigures {
    let keys = store.list_keys(false).await.expect("keys");
    let findings = store.list_findings(false).await.expect("findings");
    let mut regions: BTreeMap<(String, String), RegionCompliance> = BTreeMap::new();
    for k in &keys {
        let r = regions
            .entry((k.key.account_id.clone(), k.key.region.clone()))
            .or_insert_with(|| RegionCompliance {
                account_id: k.key.account_id.clone(),
                region: k.key.region.clone(),
                keys: 0,
                compliant_keys: 0,
                open_findings: 0,
                delegating_keys: 0,
            });
        r.keys += 1;
        r.compliant_keys += u64::from(k.open_findings == 0);
        r.open_findings += k.open_findings;
    }
    let unwaived = || findings.iter().filter(|f| f.status == "open");
    let delegating: BTreeSet<(&str, &str, &str)> = unwaived()
        .filter(|f| f.rule_id == "KMS-DELEGATION")
        .map(|f| (f.account_id.as_str(), f.region.as_str(), f.key_arn.as_str()))
        .collect();
    for (account, region, _) in delegating {
        regions
            .get_mut(&(account.to_string(), region.to_string()))
            .expect("an open finding belongs to a live key")
            .delegating_keys += 1;
    }
    let mut by_rule: BTreeMap<(String, String), u64> = BTreeMap::new();
    for f in unwaived() {
        *by_rule
            .entry((f.rule_id.clone(), f.severity.clone()))
            .or_default() += 1;
    }
    let regions: Vec<RegionCompliance> = regions.into_values().collect();
    ComplianceFigures {
        stats: StoreStats {
            keys_compliant: regions.iter().map(|r| r.compliant_keys).sum(),
            keys_noncompliant: regions.iter().map(|r| r.keys - r.compliant_keys).sum(),
            open_findings: by_rule
                .into_iter()
                .map(|((rule, severity), n)| (rule, severity, n))
                .collect(),
        },
        regions,
    }
}

/// How many rows of `table` match `condition`, counted behind the store's back: a no-op update
/// of `column`, since [`db::TestDb::execute`] reports the rows it changed.
async fn rows_where(db: &db::TestDb, table: &str, column: &str, condition: &str) -> u64 {
    db.execute(&format!(
        "UPDATE {table} SET {column} = {column} WHERE {condition}"
    ))
    .await
}

/// The figures equal what the per-row reads say, and what they rest on holds: no open finding
/// of a deleted key, findings carrying their key's account and region, keys carrying the counts
/// of their open findings.
async fn assert_figures_agree(db: &db::TestDb) -> ComplianceFigures {
    let store = db.store();
    let figures = store.compliance_figures().await.expect("figures");
    assert_eq!(figures, figures_from_rows(store).await);
    assert_eq!(store.stats().await.expect("stats"), figures.stats);
    assert_eq!(
        store.compliance_by_region().await.expect("regions"),
        figures.regions
    );
    let deleted_open = rows_where(
        db,
        "findings",
        "ticket",
        "status = 'open' AND key_arn IN (SELECT arn FROM keys WHERE deleted_at IS NOT NULL)",
    )
    .await;
    assert_eq!(deleted_open, 0, "open findings of deleted keys");
    let elsewhere = rows_where(
        db,
        "findings",
        "ticket",
        "account_id <> (SELECT k.account_id FROM keys k WHERE k.arn = findings.key_arn) \
         OR region <> (SELECT k.region FROM keys k WHERE k.arn = findings.key_arn)",
    )
    .await;
    assert_eq!(
        elsewhere, 0,
        "findings not in their key's account and region"
    );
    let miscounted = rows_where(
        db,
        "keys",
        "last_seen",
        "open_count <> (SELECT COUNT(*) FROM findings f \
             WHERE f.key_arn = keys.arn AND f.status = 'open') \
         OR delegation_count <> (SELECT COUNT(*) FROM findings f \
             WHERE f.key_arn = keys.arn AND f.status = 'open' AND f.rule_id = 'KMS-DELEGATION')",
    )
    .await;
    assert_eq!(miscounted, 0, "keys whose open-finding counts are off");
    figures
}

fn compliance(
    account: &str,
    region: &str,
    keys: u64,
    compliant_keys: u64,
    open_findings: u64,
    delegating_keys: u64,
) -> RegionCompliance {
    RegionCompliance {
        account_id: account.into(),
        region: region.into(),
        keys,
        compliant_keys,
        open_findings,
        delegating_keys,
    }
}

async fn open_findings_belong_to_live_keys(db: &db::TestDb) {
    let store = db.store();
    assert_eq!(assert_figures_agree(db).await, ComplianceFigures::default());
    let (a, b, c) = (key("a"), key("b"), key("c"));
    let all = [a.arn.clone(), b.arn.clone(), c.arn.clone()];
    store
        .apply_region_sync(&region_sync(
            t(0),
            &all,
            true,
            vec![
                update(
                    a.clone(),
                    readable("A"),
                    vec![finding("KMS-DELEGATION", "0"), finding("KMS-PUBLIC", "1")],
                ),
                update(
                    b.clone(),
                    readable("B"),
                    vec![
                        finding("KMS-DELEGATION", "0"),
                        finding("KMS-DELEGATION", "1"),
                    ],
                ),
                update(c.clone(), readable("C"), vec![]),
            ],
        ))
        .await
        .expect("first sync");
    let mut x = key_in("us-east-1", "x");
    x.account_id = OTHER_ACCOUNT.into();
    x.arn = format!("arn:aws:kms:us-east-1:{OTHER_ACCOUNT}:key/x");
    let mut other = region_sync(
        t(0),
        std::slice::from_ref(&x.arn),
        true,
        vec![update(
            x.clone(),
            readable("X"),
            vec![finding("KMS-ROTATION-DISABLED", "key")],
        )],
    );
    other.account_id = OTHER_ACCOUNT.into();
    other.region = "us-east-1".into();
    store
        .apply_region_sync(&other)
        .await
        .expect("other account");
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 3, 1, 4, 2),
            compliance(OTHER_ACCOUNT, "us-east-1", 1, 0, 1, 0),
        ]
    );

    // A complete listing without b deletes it, and resolves its open findings with it.
    store
        .apply_region_sync(&region_sync(
            t(60),
            &[a.arn.clone(), c.arn.clone()],
            true,
            vec![],
        ))
        .await
        .expect("b deleted");
    assert!(
        findings_of(store, &b.arn)
            .await
            .iter()
            .all(|f| f.status == "resolved")
    );
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 2, 1, 2, 1),
            compliance(OTHER_ACCOUNT, "us-east-1", 1, 0, 1, 0),
        ]
    );

    // b comes back: one finding reopens in place, one is new; a loses its delegation.
    store
        .apply_region_sync(&region_sync(
            t(120),
            &all,
            true,
            vec![
                update(
                    b.clone(),
                    readable("B2"),
                    vec![finding("KMS-DELEGATION", "1"), finding("KMS-PUBLIC", "0")],
                ),
                update(a.clone(), readable("A2"), vec![finding("KMS-PUBLIC", "1")]),
            ],
        ))
        .await
        .expect("b revived");
    assert_eq!(
        store
            .list_keys(false)
            .await
            .expect("keys")
            .iter()
            .map(|k| k.key.key_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c", "x"]
    );
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 3, 1, 3, 1),
            compliance(OTHER_ACCOUNT, "us-east-1", 1, 0, 1, 0),
        ]
    );

    // An incomplete listing deletes nothing; a complete one of an empty region deletes all.
    store
        .apply_region_sync(&region_sync(t(180), &[], false, vec![]))
        .await
        .expect("partial listing");
    assert_eq!(assert_figures_agree(db).await.stats.keys_noncompliant, 3);
    store
        .apply_region_sync(&region_sync(t(240), &[], true, vec![]))
        .await
        .expect("every key gone");
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![compliance(OTHER_ACCOUNT, "us-east-1", 1, 0, 1, 0)]
    );
}

async fn compliance_figures_subtract_active_waivers(db: &db::TestDb) {
    let store = db.store();
    // a: KMS-DELEGATION and KMS-PUBLIC; b: KMS-DELEGATION; at t(1000).
    let (a_deleg, a_public, b_deleg) = seed_waivable(db).await;
    // c, in another account, with the same rule: no waiver of this account covers it.
    let mut c = key("c");
    c.account_id = OTHER_ACCOUNT.into();
    c.arn = format!("arn:aws:kms:{REGION}:{OTHER_ACCOUNT}:key/c");
    let mut other = region_sync(
        t(0),
        std::slice::from_ref(&c.arn),
        true,
        vec![update(
            c.clone(),
            readable("C"),
            vec![finding("KMS-DELEGATION", "0")],
        )],
    );
    other.account_id = OTHER_ACCOUNT.into();
    store
        .apply_region_sync(&other)
        .await
        .expect("other account");
    let other_region = compliance(OTHER_ACCOUNT, REGION, 1, 0, 1, 1);
    let unwaived = assert_figures_agree(db).await;
    assert_eq!(
        unwaived.regions,
        vec![
            compliance(ACCOUNT, REGION, 2, 0, 3, 2),
            other_region.clone()
        ]
    );

    let waive = |id: i64, scope: WaiverScope, expires: i64| async move {
        store
            .waive_finding(
                id,
                &waiver(scope, t(1000), t(expires)),
                &audit_at(t(1000), "finding.waived", "finding"),
            )
            .await
            .expect("waive")
    };
    // A finding-level waiver of a's KMS-DELEGATION: a stays noncompliant, stops delegating.
    waive(a_deleg, WaiverScope::Key, 2000).await;
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 2, 0, 2, 1),
            other_region.clone()
        ]
    );
    // An account-level waiver of KMS-DELEGATION overlaps it on a: b is compliant, and a's
    // KMS-DELEGATION counts as waived once.
    waive(b_deleg, WaiverScope::Account, 3000).await;
    let figures = assert_figures_agree(db).await;
    assert_eq!(
        figures.regions,
        vec![
            compliance(ACCOUNT, REGION, 2, 1, 1, 0),
            other_region.clone()
        ]
    );
    assert_eq!(
        figures.stats.open_findings,
        vec![
            ("KMS-DELEGATION".into(), "high".into(), 1),
            ("KMS-PUBLIC".into(), "high".into(), 1),
        ],
        "c's KMS-DELEGATION, a's KMS-PUBLIC"
    );
    // A key that appears under the account-level waiver is covered at once.
    let d = key("d");
    store
        .apply_region_sync(&region_sync(
            t(1100),
            std::slice::from_ref(&d.arn),
            false,
            vec![update(
                d.clone(),
                readable("D"),
                vec![finding("KMS-DELEGATION", "0")],
            )],
        ))
        .await
        .expect("new key");
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 3, 2, 1, 0),
            other_region.clone()
        ]
    );
    // Waiving a's last open finding makes it compliant, until that waiver expires.
    waive(a_public, WaiverScope::Key, 1500).await;
    assert_eq!(
        assert_figures_agree(db).await,
        ComplianceFigures {
            stats: StoreStats {
                keys_compliant: 3,
                keys_noncompliant: 1,
                open_findings: vec![("KMS-DELEGATION".into(), "high".into(), 1)],
            },
            regions: vec![
                compliance(ACCOUNT, REGION, 3, 3, 0, 0),
                other_region.clone()
            ],
        }
    );
    db.clock().set(t(1500));
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 3, 2, 1, 0),
            other_region.clone()
        ],
        "an expired waiver covers nothing"
    );
    // Revoking the account-level waiver (through b's finding) leaves a's own.
    store
        .revoke_waivers(b_deleg, t(1600), "alice", &audit_at(t(1600), "x", "y"))
        .await
        .expect("revoke");
    db.clock().set(t(1600));
    assert_eq!(
        assert_figures_agree(db).await.regions,
        vec![
            compliance(ACCOUNT, REGION, 3, 0, 3, 2),
            other_region.clone()
        ],
        "a revoked waiver covers nothing"
    );
    db.clock().set(t(2000));
    let lapsed = assert_figures_agree(db).await;
    assert_eq!(
        lapsed.regions,
        vec![compliance(ACCOUNT, REGION, 3, 0, 4, 3), other_region]
    );
    assert_eq!(lapsed.stats.keys_noncompliant, 4);
}
