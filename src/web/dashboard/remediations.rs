//! `/remediations`: the queue, and one remediation with its diff, approvals, audit trail and
//! the actions the viewer may take in its state. Actions call the remediation service.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::Dash;
use super::access::{ImpactView, impact_view};
use super::form::FormData;
use super::layout::{
    Layout, PageError, PageResult, is_htmx, key_href, opt, render, see_other, when,
};
use super::policy_html::{DiffLine, line_diff};
use super::session::Viewer;
use crate::config::RemediationMode;
use crate::store::RemediationRow;
use crate::web::auth::Role;

/// Remediations per page.
pub const PAGE_SIZE: u32 = 50;
/// How many of the newest audit entries are searched for a remediation's trail.
const AUDIT_WINDOW: u32 = 2000;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The id of the last remediation of the previous page.
    pub before: Option<String>,
}

pub struct RemediationItem {
    pub id: i64,
    pub href: String,
    pub key_href: String,
    pub key_arn: String,
    pub state: String,
    pub requester: String,
    pub approvals: usize,
    pub created: String,
    pub expires: String,
    pub ticket: String,
}

impl From<&RemediationRow> for RemediationItem {
    fn from(r: &RemediationRow) -> Self {
        RemediationItem {
            id: r.id,
            href: format!("/remediations/{}", r.id),
            key_href: key_href(&r.key_arn),
            key_arn: r.key_arn.clone(),
            state: r.state.clone(),
            requester: r.requester.clone(),
            approvals: r.approvals.len(),
            created: when(&r.created_at),
            expires: when(&r.expires_at),
            ticket: r.ticket.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "remediations.html")]
struct ListPage {
    layout: Layout,
    items: Vec<RemediationItem>,
    total: u64,
    next: Option<String>,
}

/// `GET /remediations`.
pub async fn list(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let before = match opt(&q.before) {
        None => None,
        Some(b) => Some(b.parse::<i64>().map_err(|_| {
            PageError::BadRequest(format!("before {b:?} is not a remediation id."))
        })?),
    };
    let (rows, total) = dash.app.store.list_remediations(before, PAGE_SIZE).await?;
    let next = (rows.len() == PAGE_SIZE as usize)
        .then(|| {
            rows.last()
                .map(|r| format!("/remediations?before={}", r.id))
        })
        .flatten();
    render(&ListPage {
        layout: Layout::new(&viewer, "remediations"),
        items: rows.iter().map(RemediationItem::from).collect(),
        total,
        next,
    })
}

/// What the viewer may do with a remediation now, and why not when they may not.
pub struct Actions {
    pub approve: bool,
    pub reject: bool,
    pub apply: bool,
    pub rollback: bool,
    /// Shown instead of a button that does not apply to this viewer.
    pub notes: Vec<String>,
}

fn actions(dash: &Dash, viewer: &Viewer, r: &RemediationRow) -> Actions {
    let mut notes = Vec::new();
    let available = dash.app.remediation.is_some();
    let approver = viewer.can(Role::Approver);
    let pending = r.state == "pending_approval";
    let own = r.requester == viewer.actor;
    let approved_already = r.approvals.iter().any(|a| a.approver == viewer.actor);
    if !available
        && matches!(
            r.state.as_str(),
            "pending_approval" | "approved" | "applied"
        )
    {
        notes.push("Remediation is not available in this process: actions are disabled.".into());
    }
    if pending && own {
        notes.push("You requested this remediation; another approver must approve it.".into());
    }
    if pending && approver && approved_already {
        notes.push("You have approved this remediation; it waits for more approvers.".into());
    }
    let apply_mode = dash.settings.remediation.mode == RemediationMode::Apply
        || dash
            .app
            .remediation
            .as_ref()
            .is_some_and(|s| s.config.mode == RemediationMode::Apply);
    let approved = r.state == "approved";
    if approved && approver && !apply_mode {
        notes.push("Keyward is propose-only: set [remediation] mode = \"apply\" to let it write key policies.".into());
    }
    Actions {
        approve: available && approver && pending && !own && !approved_already,
        reject: available && approver && (pending || approved),
        apply: available && approver && approved && apply_mode,
        rollback: available && viewer.can(Role::Operator) && r.state == "applied",
        notes,
    }
}

pub struct ApprovalItem {
    pub approver: String,
    pub comment: String,
    pub at: String,
}

pub struct TrailItem {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// The state, approvals and actions of a remediation: part of its page, and the htmx answer
/// to an action.
#[derive(Template)]
#[template(path = "partials/remediation_status.html")]
struct StatusPartial {
    layout: Layout,
    id: i64,
    state: String,
    error: String,
    required: u32,
    approvals: Vec<ApprovalItem>,
    actions: Actions,
    impact: ImpactView,
}

#[derive(Template)]
#[template(path = "remediation.html")]
struct DetailPage {
    layout: Layout,
    r: RemediationItem,
    status: StatusPartial,
    comment: String,
    changes: Vec<String>,
    diff: Vec<DiffLine>,
    resolves: Vec<String>,
    remaining: Vec<String>,
    proposed: String,
    base_sha: String,
    proposed_sha: String,
    rollback_of: Option<i64>,
    trail: Vec<TrailItem>,
    impact: ImpactView,
}

fn remediation_id(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| PageError::NotFound(format!("There is no remediation {raw:?}.")))
}

async fn load(dash: &Dash, id: i64) -> Result<RemediationRow, PageError> {
    dash.app
        .store
        .get_remediation(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no remediation {id}.")))
}

fn status(dash: &Dash, viewer: &Viewer, r: &RemediationRow) -> StatusPartial {
    StatusPartial {
        layout: Layout::new(viewer, "remediations"),
        id: r.id,
        state: r.state.clone(),
        error: r.error.clone().unwrap_or_default(),
        required: dash
            .app
            .remediation
            .as_ref()
            .map_or(dash.settings.remediation.required_approvals, |s| {
                s.config.required_approvals
            }),
        approvals: r
            .approvals
            .iter()
            .map(|a| ApprovalItem {
                approver: a.approver.clone(),
                comment: a.comment.clone().unwrap_or_default(),
                at: when(&a.created_at),
            })
            .collect(),
        actions: actions(dash, viewer, r),
        impact: impact_view(r.impact.as_ref()),
    }
}

/// The audit entries about remediation `id` among the newest [`AUDIT_WINDOW`] about its key,
/// oldest first.
async fn trail(dash: &Dash, r: &RemediationRow) -> Result<Vec<TrailItem>, PageError> {
    let events = dash
        .app
        .store
        .audit_for_target(&r.key_arn, AUDIT_WINDOW)
        .await?;
    let mut out: Vec<TrailItem> = events
        .into_iter()
        .filter(|e| e.target == r.key_arn && e.action.starts_with("remediation."))
        .filter(|e| {
            serde_json::from_str::<serde_json::Value>(&e.detail).is_ok_and(|d| {
                d.get("remediation").and_then(serde_json::Value::as_i64) == Some(r.id)
                    || (e.action == "remediation.requested"
                        && d.get("proposed_sha256").and_then(|v| v.as_str())
                            == Some(r.proposed_sha256.as_str())
                        && e.at == r.created_at)
            })
        })
        .map(|e| TrailItem {
            at: when(&e.at),
            actor: e.actor,
            action: e.action,
            detail: e.detail,
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// `GET /remediations/{id}`.
pub async fn detail(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> PageResult {
    let id = remediation_id(&id)?;
    let r = load(&dash, id).await?;
    let trail = trail(&dash, &r).await?;
    render(&DetailPage {
        layout: Layout::new(&viewer, "remediations"),
        status: status(&dash, &viewer, &r),
        comment: r.comment.clone().unwrap_or_default(),
        changes: r
            .diff
            .get("changes")
            .and_then(|c| c.as_array())
            .map(|c| {
                c.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        diff: line_diff(&r.base_policy, &r.proposed_policy),
        resolves: r.resolves.clone(),
        remaining: r.remaining.clone(),
        proposed: super::policy_html::pretty(&r.proposed_policy),
        base_sha: r.base_sha256.chars().take(12).collect(),
        proposed_sha: r.proposed_sha256.chars().take(12).collect(),
        rollback_of: r.rollback_of,
        trail,
        impact: impact_view(r.impact.as_ref()),
        r: RemediationItem::from(&r),
    })
}

/// `POST /remediations/{id}/{approve|reject|apply|rollback}`.
pub async fn act(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<FormData>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> PageResult {
    let id = remediation_id(&id)?;
    let needed = match action.as_str() {
        "approve" | "reject" | "apply" => Role::Approver,
        "rollback" => Role::Operator,
        other => {
            return Err(PageError::NotFound(format!(
                "There is no remediation action {other:?}."
            )));
        }
    };
    viewer.require(needed)?;
    let service = dash.app.remediation.clone().ok_or_else(|| {
        PageError::Unavailable("Remediation is not available in this process.".into())
    })?;
    let comment = form.get("comment").map(str::to_string);
    if comment.as_ref().is_some_and(|c| c.chars().count() > 1000) {
        return Err(PageError::BadRequest(
            "The comment is longer than 1000 characters.".into(),
        ));
    }
    let shown = match action.as_str() {
        "approve" => {
            let acknowledged = form.get("acknowledge_access_loss").is_some();
            service
                .approve(id, &viewer.actor, comment, acknowledged)
                .await?
                .id
        }
        "reject" => service.reject(id, &viewer.actor, comment).await?.id,
        "apply" => service.apply(id, &viewer.actor).await?.id,
        _ => {
            let ticket = form.get("ticket").map(str::to_string);
            service
                .rollback(id, &viewer.actor, ticket, comment)
                .await?
                .0
                .id
        }
    };
    if is_htmx(&headers) && shown == id {
        let r = load(&dash, id).await?;
        return render(&status(&dash, &viewer, &r));
    }
    if is_htmx(&headers) {
        // A rollback is a new remediation: htmx loads its page.
        let mut response = see_other(&format!("/remediations/{shown}"));
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("/remediations/{shown}")) {
            response.headers_mut().insert("hx-redirect", v);
        }
        return Ok(response);
    }
    Ok(see_other(&format!("/remediations/{shown}")))
}
