//! Dashboard rendering with a large inventory: N keys (default 100 000, or
//! `KEYWARD_BENCH_DASHBOARD_KEYS`) in a SQLite file, seeded through the store's own
//! `apply_region_sync`, 30 days of snapshots; then the overview and key-list pages are rendered
//! through the router of `build_app_with` with `tower::ServiceExt::oneshot` (no sockets: the
//! figure is the handler's, queries and templates included), signed in with a session.
//!
//!   cargo bench --bench dashboard
//!
//! The target is < 50 ms per page (issue 6 §4). Last, the overview's figures are recomputed
//! with waivers: 100 finding-level ones, then also an account-wide one of a whole rule.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeDelta, Utc};
use criterion::Criterion;
use keyward::clock::SystemClock;
use keyward::metrics::Metrics;
use keyward::store::{
    self, FindingFilter, KeyRecord, KeyUpdate, NewAuditEvent, NewFinding, NewSession, NewWaiver,
    PolicyState, RegionSync, WaiverScope,
};
use keyward::web::auth::token_hash;
use keyward::web::dashboard::DashboardSettings;
use keyward::web::{AppState, build_app_with};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const ACCOUNT: &str = "111122223333";
const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];
const BATCH: usize = 5000;
const DELEGATING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
const FIXED: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"EnableRootAccessAndPreventPermissionDelegation","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalType":"Account"}}}]}"#;

fn key_update(region: &str, i: usize) -> KeyUpdate {
    let id = format!("{i:08x}-0000-4000-8000-{i:012x}");
    let delegating = i % 5 == 0;
    let text = if delegating { DELEGATING } else { FIXED };
    let mut findings = Vec::new();
    if delegating {
        findings.push(NewFinding {
            rule_id: "KMS-DELEGATION".into(),
            locator: "sid:Enable IAM User Permissions".into(),
            severity: "high".into(),
            statement_index: Some(0),
            sid: Some("Enable IAM User Permissions".into()),
            message: "the account root is allowed without a PrincipalType condition".into(),
        });
    }
    if i % 7 == 0 {
        findings.push(NewFinding {
            rule_id: "KMS-ROTATION-DISABLED".into(),
            locator: "key".into(),
            severity: "low".into(),
            statement_index: None,
            sid: None,
            message: "rotation is disabled".into(),
        });
    }
    KeyUpdate {
        key: KeyRecord {
            arn: format!("arn:aws:kms:{region}:{ACCOUNT}:key/{id}"),
            account_id: ACCOUNT.into(),
            region: region.into(),
            key_id: id,
            description: format!("bench key {i}"),
            key_manager: "CUSTOMER".into(),
            key_state: "Enabled".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            origin: "AWS_KMS".into(),
            multi_region: false,
            creation_date: None,
            deletion_date: None,
            rotation_enabled: Some(i % 7 != 0),
            aliases: vec![format!("alias/app-{i}")],
            tags: [("team".to_string(), format!("t{}", i % 50))]
                .into_iter()
                .collect(),
            grants: vec![],
            metadata: Default::default(),
        },
        fingerprint: format!("fp-{i}"),
        policy: PolicyState::Readable {
            text: text.into(),
            sha256: keyward::sync::sha256_hex(text),
        },
        evaluation: "bench".into(),
        findings,
        remediable: true,
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without --bench: seeding takes a while.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/dashboard.rs runs under `cargo bench --bench dashboard` only");
        return;
    }
    let keys: usize = std::env::var("KEYWARD_BENCH_DASHBOARD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let state = rt.block_on(async {
        let store = store::connect(&url).await.expect("the SQLite store");
        let started = Instant::now();
        let per_region = keys.div_ceil(REGIONS.len());
        let now = Utc::now();
        for (r, region) in REGIONS.iter().enumerate() {
            let first = r * per_region;
            let last = ((r + 1) * per_region).min(keys);
            let mut i = first;
            while i < last {
                let end = (i + BATCH).min(last);
                let updates: Vec<KeyUpdate> = (i..end).map(|k| key_update(region, k)).collect();
                store
                    .apply_region_sync(&RegionSync {
                        account_id: ACCOUNT.into(),
                        region: region.to_string(),
                        now,
                        listed: updates.iter().map(|u| u.key.arn.clone()).collect(),
                        listing_complete: false,
                        updates,
                        unread: Vec::new(),
                    })
                    .await
                    .expect("seed");
                i = end;
            }
            let run = store.start_sync_run(ACCOUNT, region, now).await.unwrap();
            store
                .finish_sync_run(
                    run,
                    &store::SyncRunFinish {
                        finished_at: now,
                        keys_seen: (last - first) as u64,
                        outcome: Default::default(),
                        error: None,
                        iam_error: None,
                    },
                )
                .await
                .unwrap();
        }
        let synced = started.elapsed();
        for d in 0..30 {
            store
                .record_daily_snapshot(now.date_naive() - TimeDelta::days(d), now)
                .await
                .expect("snapshot");
        }
        eprintln!(
            "seeded {keys} keys in {:.1?} (syncs {synced:.1?}, then 30 daily snapshots)",
            started.elapsed()
        );
        store
            .create_session(&NewSession {
                id_sha256: token_hash("bench-session"),
                actor: "bench".into(),
                role: "viewer".into(),
                token_name: None,
                csrf_token: "bench-csrf".into(),
                created_at: now,
                expires_at: now + TimeDelta::days(1),
            })
            .await
            .expect("a session");
        AppState {
            store,
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
            sync: None,
            remediation: None,
            metrics_public: true,
        }
    });
    let app = build_app_with(state.clone(), DashboardSettings::default());
    let fetch_from = |app: &axum::Router, path: &str| {
        rt.block_on(async {
            let request = Request::get(path)
                .header("host", "keyward.bench")
                .header("accept", "text/html")
                .header("cookie", "keyward_session=bench-session")
                .body(Body::empty())
                .expect("a request");
            let r = app.clone().oneshot(request).await.expect("a response");
            assert_eq!(r.status(), StatusCode::OK, "GET {path}");
            axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .expect("a body")
                .len()
        })
    };
    let fetch = |path: &str| fetch_from(&app, path);
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for (name, path) in [
        ("overview", "/"),
        ("keys first page", "/keys"),
        (
            "keys delegating, by alias",
            "/keys?rule=KMS-DELEGATION&sort=alias",
        ),
        ("keys page 100", "/keys?offset=5000"),
    ] {
        eprintln!("{name}: {path} is {} bytes", fetch(path));
        c.bench_function(name, |b| b.iter(|| fetch(path)));
    }
    // A fresh app has no cached overview figures: what the first view after a sync costs.
    let recomputed = |c: &mut Criterion, name: &str| {
        c.bench_function(name, |b| {
            b.iter(|| {
                fetch_from(
                    &build_app_with(state.clone(), DashboardSettings::default()),
                    "/",
                )
            })
        });
    };
    recomputed(&mut c, "overview, figures recomputed");
    // Waivers cost in proportion to the findings they cover: 100 finding-level waivers, then
    // also an account-wide one covering every KMS-ROTATION-DISABLED finding.
    let waive = |rule: &str, scope: WaiverScope, n: u32| {
        rt.block_on(async {
            let filter = FindingFilter {
                rule: Some(rule.into()),
                ..FindingFilter::default()
            };
            let (findings, _) = state
                .store
                .query_findings(&filter, None, n)
                .await
                .expect("findings to waive");
            let now = Utc::now();
            for f in findings {
                state
                    .store
                    .waive_finding(
                        f.id,
                        &NewWaiver {
                            scope,
                            reason: "bench".into(),
                            author: "bench".into(),
                            created_at: now,
                            expires_at: now + TimeDelta::days(30),
                        },
                        &NewAuditEvent {
                            at: now,
                            actor: "bench".into(),
                            action: "finding.waived".into(),
                            target: f.key_arn.clone(),
                            detail: "{}".into(),
                        },
                    )
                    .await
                    .expect("a waiver");
            }
        })
    };
    waive("KMS-DELEGATION", WaiverScope::Key, 100);
    recomputed(&mut c, "overview, figures recomputed, 100 findings waived");
    waive("KMS-ROTATION-DISABLED", WaiverScope::Account, 1);
    let unwaived = rt
        .block_on(state.store.stats())
        .expect("stats")
        .open_findings
        .iter()
        .map(|(_, _, n)| n)
        .sum::<u64>();
    eprintln!("open findings left unwaived: {unwaived}");
    recomputed(
        &mut c,
        "overview, figures recomputed, an account-wide waiver of a rule",
    );
    c.final_summary();
}
