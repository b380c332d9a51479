//! `/findings`: the filterable finding list, with waive (reason + expiry) and revoke for
//! operators. Waiving goes through the store exactly as the API's handler does, with the same
//! audit event.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::Deserialize;

use super::Dash;
use super::form::FormData;
use super::layout::{
    Layout, PageError, PageResult, SEVERITIES, check_rule, check_severity, is_htmx, key_href, opt,
    query, render, rule_ids, see_other, when_opt,
};
use super::session::{Viewer, safe_next};
use crate::store::{FindingFilter, FindingRow, NewAuditEvent, NewWaiver, WaiverScope};
use crate::web::auth::Role;

// The API's limits: the same rules for both doors.
use crate::web::api::{MAX_REASON_CHARS, MAX_WAIVER_MONTHS};

/// Findings per page.
pub const PAGE_SIZE: u32 = 50;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FindingsQuery {
    pub account: Option<String>,
    pub region: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    /// `open` (default), `waived`, `resolved` or `all`.
    pub status: Option<String>,
    pub q: Option<String>,
    /// The id of the last finding of the previous page.
    pub after: Option<String>,
}

pub struct FindingItem {
    pub id: i64,
    pub key_href: String,
    pub key_arn: String,
    pub account_id: String,
    pub region: String,
    pub rule_id: String,
    pub title: String,
    pub severity: String,
    pub status: String,
    pub message: String,
    pub waiver: Option<String>,
}

impl From<FindingRow> for FindingItem {
    fn from(f: FindingRow) -> Self {
        FindingItem {
            title: f
                .rule_id
                .parse::<crate::policy::RuleId>()
                .map(|r| r.info().title.to_string())
                .unwrap_or_default(),
            waiver: f
                .waiver_reason
                .as_ref()
                .map(|r| format!("{r} — until {}", when_opt(&f.waiver_expires_at))),
            key_href: key_href(&f.key_arn),
            id: f.id,
            key_arn: f.key_arn,
            account_id: f.account_id,
            region: f.region,
            rule_id: f.rule_id,
            severity: f.severity,
            status: f.status,
            message: f.message,
        }
    }
}

#[derive(Template)]
#[template(path = "findings.html")]
struct FindingsPage {
    layout: Layout,
    account: String,
    region: String,
    rule: String,
    severity: String,
    status: String,
    q: String,
    findings: Vec<FindingItem>,
    total: u64,
    next: Option<String>,
    can_waive: bool,
    back: String,
    min_date: String,
    max_date: String,
    rules: Vec<&'static str>,
    severities: [&'static str; 5],
}

/// One finding's row: the htmx answer to waive and revoke.
#[derive(Template)]
#[template(path = "partials/finding_row.html")]
struct FindingRowPartial {
    layout: Layout,
    f: FindingItem,
    can_waive: bool,
    back: String,
    min_date: String,
    max_date: String,
}

impl FindingsPage {
    fn is_rule(&self, rule: &str) -> bool {
        self.rule == rule
    }

    fn is_severity(&self, severity: &str) -> bool {
        self.severity == severity
    }

    fn statuses(&self) -> [&'static str; 4] {
        ["open", "waived", "resolved", "all"]
    }

    fn is_status(&self, status: &str) -> bool {
        self.status == status
    }
}

fn date_bounds(now: DateTime<Utc>) -> (String, String) {
    let min = (now + chrono::TimeDelta::days(1)).date_naive();
    let max = now
        .checked_add_months(Months::new(MAX_WAIVER_MONTHS))
        .unwrap_or(now)
        .date_naive();
    (min.to_string(), max.to_string())
}

/// `GET /findings`.
pub async fn list(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<FindingsQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let status = opt(&q.status).unwrap_or_else(|| "open".into());
    let status_filter = match status.as_str() {
        "open" | "waived" | "resolved" => Some(status.clone()),
        "all" => None,
        s => {
            return Err(PageError::BadRequest(format!(
                "status must be open, waived, resolved or all, not {s:?}."
            )));
        }
    };
    let after = match opt(&q.after) {
        None => None,
        Some(a) => Some(
            a.parse::<i64>()
                .map_err(|_| PageError::BadRequest(format!("after {a:?} is not a finding id.")))?,
        ),
    };
    let filter = FindingFilter {
        account: opt(&q.account),
        region: opt(&q.region),
        rule: check_rule(&q.rule)?,
        severity: check_severity(&q.severity)?,
        status: status_filter,
        key_arn: None,
        q: opt(&q.q),
    };
    let (rows, total) = dash
        .app
        .store
        .query_findings(&filter, after, PAGE_SIZE)
        .await?;
    let (account, region, rule, severity, text) = (
        filter.account.clone().unwrap_or_default(),
        filter.region.clone().unwrap_or_default(),
        filter.rule.clone().unwrap_or_default(),
        filter.severity.clone().unwrap_or_default(),
        filter.q.clone().unwrap_or_default(),
    );
    let here = |after: String| {
        format!(
            "/findings{}",
            query(&[
                ("account", account.clone()),
                ("region", region.clone()),
                ("rule", rule.clone()),
                ("severity", severity.clone()),
                (
                    "status",
                    if status == "open" {
                        String::new()
                    } else {
                        status.clone()
                    }
                ),
                ("q", text.clone()),
                ("after", after),
            ])
        )
    };
    let next = (rows.len() == PAGE_SIZE as usize)
        .then(|| rows.last().map(|f| here(f.id.to_string())))
        .flatten();
    let back = here(after.map(|a| a.to_string()).unwrap_or_default());
    let (min_date, max_date) = date_bounds(dash.app.clock.now());
    render(&FindingsPage {
        layout: Layout::new(&viewer, "findings"),
        findings: rows.into_iter().map(FindingItem::from).collect(),
        total,
        next,
        can_waive: viewer.can(Role::Operator),
        back,
        min_date,
        max_date,
        account,
        region,
        rule,
        severity,
        status,
        q: text,
        rules: rule_ids(),
        severities: SEVERITIES,
    })
}

fn finding_id(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| PageError::NotFound(format!("There is no finding {raw:?}.")))
}

async fn load(dash: &Dash, id: i64) -> Result<FindingRow, PageError> {
    dash.app
        .store
        .get_finding(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no finding {id}.")))
}

fn audit(
    dash: &Dash,
    actor: &str,
    action: &str,
    id: i64,
    detail: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent {
        at: dash.app.clock.now(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: format!("finding:{id}"),
        detail: detail.to_string(),
    }
}

/// The answer to a waive or revoke: the row for htmx, else back to the list.
async fn after_change(
    dash: &Dash,
    viewer: &Viewer,
    headers: &HeaderMap,
    form: &FormData,
    id: i64,
) -> PageResult {
    if is_htmx(headers) {
        let (min_date, max_date) = date_bounds(dash.app.clock.now());
        return render(&FindingRowPartial {
            layout: Layout::new(viewer, "findings"),
            f: FindingItem::from(load(dash, id).await?),
            can_waive: true,
            back: safe_next(form.get("back")),
            min_date,
            max_date,
        });
    }
    Ok(see_other(&safe_next(
        form.get("back").or(Some("/findings")),
    )))
}

/// `POST /findings/{id}/waive`: reason, expiry date (`YYYY-MM-DD`, the waiver lapses at its
/// start, UTC) and scope (`key` or `account`). Operator role.
pub async fn waive(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<FormData>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    viewer.require(Role::Operator)?;
    let id = finding_id(&id)?;
    let now = dash.app.clock.now();
    let reason = form
        .get("reason")
        .ok_or_else(|| PageError::BadRequest("Give a reason for accepting the risk.".into()))?
        .to_string();
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(PageError::BadRequest(format!(
            "The reason is {chars} characters; at most {MAX_REASON_CHARS} are accepted."
        )));
    }
    let expires = form
        .get("expires")
        .ok_or_else(|| PageError::BadRequest("Choose when the waiver expires.".into()))?;
    let expires_at = NaiveDate::parse_from_str(expires, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| PageError::BadRequest(format!("{expires:?} is not a date (YYYY-MM-DD).")))?;
    if expires_at <= now {
        return Err(PageError::BadRequest(format!(
            "{expires} is not in the future."
        )));
    }
    let latest = now
        .checked_add_months(Months::new(MAX_WAIVER_MONTHS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if expires_at > latest {
        return Err(PageError::BadRequest(format!(
            "{expires} is more than a year ahead; accepted risk is reviewed at least yearly."
        )));
    }
    let scope = match form.get("scope") {
        None | Some("key") => WaiverScope::Key,
        Some("account") => WaiverScope::Account,
        Some(s) => {
            return Err(PageError::BadRequest(format!(
                "scope must be key or account, not {s:?}."
            )));
        }
    };
    let finding = load(&dash, id).await?;
    if finding.status == "resolved" {
        return Err(PageError::Conflict(format!(
            "Finding {id} is resolved; only open findings can be waived."
        )));
    }
    let event = audit(
        &dash,
        &viewer.actor,
        "finding.waived",
        id,
        serde_json::json!({
            "scope": scope.as_str(),
            "key_arn": (scope == WaiverScope::Key).then_some(&finding.key_arn),
            "account_id": finding.account_id,
            "rule_id": finding.rule_id,
            "reason": reason,
            "expires_at": expires_at,
        }),
    );
    dash.app
        .store
        .waive_finding(
            id,
            &NewWaiver {
                scope,
                reason,
                author: viewer.actor.clone(),
                created_at: now,
                expires_at,
            },
            &event,
        )
        .await?;
    after_change(&dash, &viewer, &headers, &form, id).await
}

/// `POST /findings/{id}/unwaive`: revokes every active waiver covering the finding.
pub async fn unwaive(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<FormData>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    viewer.require(Role::Operator)?;
    let id = finding_id(&id)?;
    let finding = load(&dash, id).await?;
    let event = audit(
        &dash,
        &viewer.actor,
        "finding.unwaived",
        id,
        serde_json::json!({
            "key_arn": finding.key_arn,
            "account_id": finding.account_id,
            "rule_id": finding.rule_id,
        }),
    );
    dash.app
        .store
        .revoke_waivers(id, dash.app.clock.now(), &viewer.actor, &event)
        .await?;
    after_change(&dash, &viewer, &headers, &form, id).await
}
