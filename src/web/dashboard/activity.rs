//! `/sync`: sync runs and "Sync now"; `/audit`: the hash-chained audit log and its verification.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::Dash;
use super::layout::{Layout, PageError, PageResult, opt, render, see_other, when};
use super::overview::SyncRow;
use super::session::Viewer;
use crate::web::auth::Role;
use crate::web::record_audit;

/// Rows per page.
pub const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// The id of the last row of the previous page.
    pub before: Option<String>,
}

fn before(q: &PageQuery) -> Result<Option<i64>, PageError> {
    match opt(&q.before) {
        None => Ok(None),
        Some(b) => b
            .parse::<i64>()
            .map(Some)
            .map_err(|_| PageError::BadRequest(format!("before {b:?} is not an id."))),
    }
}

pub struct RunItem {
    pub id: i64,
    pub run: SyncRow,
    pub keys_changed: u64,
    pub findings_opened: u64,
    pub findings_resolved: u64,
}

#[derive(Template)]
#[template(path = "sync.html")]
struct SyncPage {
    layout: Layout,
    latest: Vec<SyncRow>,
    runs: Vec<RunItem>,
    total: u64,
    next: Option<String>,
    can_sync: bool,
    running: bool,
    configured: bool,
}

/// `GET /sync`.
pub async fn sync_page(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let before = before(&q)?;
    let store = &dash.app.store;
    let (latest, (runs, total)) = futures::try_join!(
        store.latest_sync_runs(),
        store.sync_runs_page(before, PAGE_SIZE)
    )?;
    let next = (runs.len() == PAGE_SIZE as usize)
        .then(|| runs.last().map(|r| format!("/sync?before={}", r.id)))
        .flatten();
    render(&SyncPage {
        layout: Layout::new(&viewer, "sync"),
        latest: latest.into_iter().map(SyncRow::from).collect(),
        runs: runs
            .into_iter()
            .map(|r| RunItem {
                id: r.id,
                keys_changed: r.keys_changed,
                findings_opened: r.findings_opened,
                findings_resolved: r.findings_resolved,
                run: SyncRow::from(r),
            })
            .collect(),
        total,
        next,
        can_sync: viewer.can(Role::Operator) && dash.app.sync.is_some(),
        running: dash.app.sync.as_ref().is_some_and(|s| s.is_running()),
        configured: dash.app.sync.is_some(),
    })
}

/// `POST /sync`: starts a pass over every account·region, as the API's `POST /sync` does.
pub async fn sync_now(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    viewer.require(Role::Operator)?;
    let trigger = dash
        .app
        .sync
        .clone()
        .ok_or_else(|| PageError::Unavailable("This server has no sync configured.".into()))?;
    if trigger.is_running() {
        return Err(PageError::Conflict(
            "A sync pass started here is still running.".into(),
        ));
    }
    record_audit(
        &dash.app,
        &viewer.actor,
        "sync.triggered",
        "all accounts",
        serde_json::json!({}),
    )
    .await?;
    if !trigger.start() {
        return Err(PageError::Conflict(
            "A sync pass started here is still running.".into(),
        ));
    }
    Ok(see_other("/sync"))
}

pub struct AuditItem {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub hash: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    events: Vec<AuditItem>,
    total: u64,
    next: Option<String>,
    verified: bool,
    checked: u64,
    broken_at: Option<i64>,
    reason: String,
}

/// `GET /audit`.
pub async fn audit_page(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let before = before(&q)?;
    let store = &dash.app.store;
    let ((events, total), verification) =
        futures::try_join!(store.list_audit(before, PAGE_SIZE), store.verify_audit())?;
    let next = (events.len() == PAGE_SIZE as usize)
        .then(|| events.last().map(|e| format!("/audit?before={}", e.id)))
        .flatten();
    render(&AuditPage {
        layout: Layout::new(&viewer, "audit"),
        events: events
            .into_iter()
            .map(|e| AuditItem {
                id: e.id,
                at: when(&e.at),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
                hash: e.hash.chars().take(12).collect(),
            })
            .collect(),
        total,
        next,
        verified: verification.first_broken_id.is_none(),
        checked: verification.events,
        broken_at: verification.first_broken_id,
        reason: verification.reason.unwrap_or_default(),
    })
}
