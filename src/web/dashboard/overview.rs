//! `/`: compliance at a glance, IAM delegation first.

use askama::Template;
use axum::Extension;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;

use super::Dash;
use super::layout::{Layout, PageResult, percent, query, render, when, when_opt};
use super::session::Viewer;
use super::trend::trend_svg;
use crate::store::{
    ChangeMarker, ComplianceFigures, RegionCompliance, Store, StoreResult, SyncRunRow,
};

/// Days in the trend chart.
pub const TREND_DAYS: u32 = 30;

pub struct RegionRow {
    pub account_id: String,
    pub region: String,
    pub keys: u64,
    pub compliant_keys: u64,
    pub percent: String,
    pub open_findings: u64,
    pub delegating_keys: u64,
    pub href: String,
    pub deleg_href: String,
}

pub struct SyncRow {
    pub account_id: String,
    pub region: String,
    pub status: String,
    pub finished: String,
    pub started: String,
    pub keys_seen: u64,
    pub error: Option<String>,
}

impl From<SyncRunRow> for SyncRow {
    fn from(r: SyncRunRow) -> Self {
        SyncRow {
            started: when(&r.started_at),
            finished: when_opt(&r.finished_at),
            account_id: r.account_id,
            region: r.region,
            status: r.status,
            keys_seen: r.keys_seen,
            error: r.error,
        }
    }
}

pub struct Count {
    pub name: String,
    pub count: u64,
    pub href: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    keys: u64,
    compliant: u64,
    percent: String,
    delegating_keys: u64,
    delegation_findings: u64,
    regions: Vec<RegionRow>,
    by_severity: Vec<Count>,
    by_rule: Vec<Count>,
    syncs: Vec<SyncRow>,
    failed_syncs: usize,
    /// Built here from numbers and dates only.
    trend: String,
}

fn region_row(r: RegionCompliance) -> RegionRow {
    let filter = |extra: (&'static str, String)| {
        format!(
            "/keys{}",
            query(&[
                ("account", r.account_id.clone()),
                ("region", r.region.clone()),
                extra
            ])
        )
    };
    RegionRow {
        percent: percent(r.compliant_keys, r.keys),
        href: filter(("compliant", "false".into())),
        deleg_href: filter(("rule", "KMS-DELEGATION".into())),
        account_id: r.account_id,
        region: r.region,
        keys: r.keys,
        compliant_keys: r.compliant_keys,
        open_findings: r.open_findings,
        delegating_keys: r.delegating_keys,
    }
}

/// The overview's figures over every key (stats and compliance per account·region), which read
/// every live key's index entry, kept until the store's [`ChangeMarker`] moves: a sync run starts
/// or ends, a waiver is created or revoked, or the next waiver expires. The marker comes from the
/// database, so several replicas stay correct.
#[derive(Default)]
pub struct Cache {
    figures: std::sync::Mutex<Option<(ChangeMarker, ComplianceFigures)>>,
}

impl Cache {
    async fn figures(
        &self,
        store: &dyn Store,
        now: DateTime<Utc>,
    ) -> StoreResult<ComplianceFigures> {
        // The marker names the next waiver expiry after `now`, so it moves once one passes.
        let marker = store.change_marker(now).await?;
        if let Some((cached, figures)) = &*self.lock()
            && *cached == marker
        {
            return Ok(figures.clone());
        }
        let figures = store.compliance_figures().await?;
        *self.lock() = Some((marker, figures.clone()));
        Ok(figures)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(ChangeMarker, ComplianceFigures)>> {
        // A panic elsewhere while holding it leaves at worst a stale copy: recomputed next time.
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `GET /`.
pub async fn page(State(dash): State<Dash>, Extension(viewer): Extension<Viewer>) -> PageResult {
    let store = &dash.app.store;
    let today = dash.app.clock.now().date_naive();
    let since = today - TimeDelta::days(i64::from(TREND_DAYS) - 1);
    let (ComplianceFigures { stats, regions }, syncs, snapshots) = futures::try_join!(
        dash.overview.figures(store.as_ref(), dash.app.clock.now()),
        store.latest_sync_runs(),
        store.daily_snapshots(since),
    )?;
    let mut by_severity: BTreeMap<usize, (String, u64)> = BTreeMap::new();
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    for (rule, severity, n) in &stats.open_findings {
        let rank = super::layout::SEVERITIES
            .iter()
            .position(|s| s == severity)
            .unwrap_or(99);
        by_severity.entry(rank).or_insert((severity.clone(), 0)).1 += n;
        *by_rule.entry(rule.clone()).or_insert(0) += n;
    }
    let keys = stats.keys_compliant + stats.keys_noncompliant;
    let delegating_keys = regions.iter().map(|r| r.delegating_keys).sum();
    let mut by_rule: Vec<Count> = by_rule
        .into_iter()
        .map(|(rule, count)| Count {
            href: format!("/findings{}", query(&[("rule", rule.clone())])),
            title: rule
                .parse::<crate::policy::RuleId>()
                .map(|r| r.info().title.to_string())
                .unwrap_or_default(),
            name: rule,
            count,
        })
        .collect();
    by_rule.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    let syncs: Vec<SyncRow> = syncs.into_iter().map(SyncRow::from).collect();
    let page = OverviewPage {
        layout: Layout::new(&viewer, "overview"),
        keys,
        compliant: stats.keys_compliant,
        percent: percent(stats.keys_compliant, keys),
        delegating_keys,
        delegation_findings: by_rule
            .iter()
            .find(|c| c.name == "KMS-DELEGATION")
            .map_or(0, |c| c.count),
        regions: regions.into_iter().map(region_row).collect(),
        by_severity: by_severity
            .into_values()
            .map(|(name, count)| Count {
                href: format!("/findings{}", query(&[("severity", name.clone())])),
                title: String::new(),
                name,
                count,
            })
            .collect(),
        by_rule,
        failed_syncs: syncs.iter().filter(|s| s.status == "failed").count(),
        syncs,
        trend: trend_svg(&snapshots, today, TREND_DAYS),
    };
    render(&page)
}
