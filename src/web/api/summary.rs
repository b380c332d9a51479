//! `GET /summary` and `GET /accounts`.

use axum::extract::State;
use std::collections::BTreeMap;

use super::{AccountView, ApiResult, Page, Paging, Summary, SyncRunView};
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiJson, ApiQuery, Problem};

/// Compliance at a glance.
#[utoipa::path(get, path = "/api/v1/summary", tag = "overview",
    responses((status = 200, body = Summary), (status = 401, body = Problem)))]
pub async fn summary(State(state): State<AppState>, _caller: Caller) -> ApiResult<Summary> {
    let stats = state.store.stats().await?;
    let accounts = state.store.list_accounts().await?.len() as u64;
    let last_sync = state.store.latest_sync_runs().await?;
    let keys = stats.keys_compliant + stats.keys_noncompliant;
    let mut by_severity = BTreeMap::new();
    let mut by_rule = BTreeMap::new();
    for (rule, severity, n) in &stats.open_findings {
        *by_severity.entry(severity.clone()).or_insert(0) += n;
        *by_rule.entry(rule.clone()).or_insert(0) += n;
    }
    let percent = if keys == 0 {
        100.0
    } else {
        // One decimal: enough for people, stable for tests.
        (stats.keys_compliant as f64 * 1000.0 / keys as f64).round() / 10.0
    };
    Ok(ApiJson(Summary {
        accounts,
        keys,
        keys_compliant: stats.keys_compliant,
        keys_noncompliant: stats.keys_noncompliant,
        compliance_percent: percent,
        delegation_findings: by_rule.get("KMS-DELEGATION").copied().unwrap_or(0),
        open_findings_by_severity: by_severity,
        open_findings_by_rule: by_rule,
        last_sync: last_sync.into_iter().map(SyncRunView::from).collect(),
    }))
}

/// The configured accounts and the last sync of each region, by account id.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "overview", params(Paging),
    responses((status = 200, body = Page<AccountView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn accounts(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Page<AccountView>> {
    let limit = paging.limit()?;
    let after = paging.text_cursor()?;
    // Accounts come from the configuration, so there are few: paging them in memory keeps the
    // store's contract unchanged while clients page them like every other collection.
    let mut all = state.store.list_accounts().await?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let total = all.len() as u64;
    let page: Vec<_> = all
        .into_iter()
        .filter(|a| after.as_deref().is_none_or(|after| a.id.as_str() > after))
        .take(limit as usize)
        .collect();
    let runs = state.store.latest_sync_runs().await?;
    Ok(ApiJson(Page::of(
        page,
        total,
        limit,
        |a| a.id.clone(),
        |a| AccountView {
            last_sync: runs
                .iter()
                .filter(|r| r.account_id == a.id)
                .cloned()
                .map(SyncRunView::from)
                .collect(),
            id: a.id,
            name: a.name,
            regions: a.regions,
        },
    )))
}
