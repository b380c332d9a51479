//! `/keys`: the filterable, sortable key list; `/keys/{key}`: one key with its policy, findings,
//! history and waivers; `/keys/{key}/propose`: the fix preview and the proposal.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

use super::Dash;
use super::form::FormData;
use super::layout::{
    Layout, PageError, PageResult, SEVERITIES, check_rule, check_severity, enc, is_htmx, key_href,
    opt, query, render, rule_ids, see_other, when, when_opt,
};
use super::policy_html::{DiffLine, PolicyBlocks, line_diff, policy_blocks};
use super::session::Viewer;
use crate::policy::fix::{FixContext, FixOutcome, fix};
use crate::policy::rules::{EvalContext, KeyManager, evaluate_policy};
use crate::policy::{Policy, RuleId};
use crate::remediation::Proposal;
use crate::store::{FindingFilter, KeyFilter, KeyRow, KeySort};
use crate::web::api::GrantView;
use crate::web::auth::Role;

/// Keys per page.
pub const PAGE_SIZE: u32 = 50;

/// The key list's query string: every filter is shareable in the URL.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeysQuery {
    pub account: Option<String>,
    pub region: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    /// `true`, `false` or empty.
    pub compliant: Option<String>,
    pub q: Option<String>,
    pub sort: Option<String>,
    /// `asc` (default) or `desc`.
    pub dir: Option<String>,
    pub offset: Option<String>,
}

fn sort_of(name: &str) -> Option<KeySort> {
    Some(match name {
        "arn" => KeySort::Arn,
        "account" => KeySort::Account,
        "region" => KeySort::Region,
        "alias" => KeySort::Alias,
        "state" => KeySort::State,
        "compliance" => KeySort::Compliance,
        _ => return None,
    })
}

pub struct KeyItem {
    pub href: String,
    pub arn: String,
    pub key_id: String,
    pub account_id: String,
    pub region: String,
    pub alias: String,
    pub state: String,
    pub manager: String,
    pub compliant: bool,
    pub open_findings: u64,
    pub rules: Vec<String>,
}

pub struct SortLink {
    pub label: &'static str,
    pub href: String,
    /// `ascending`, `descending` or `none`, for aria-sort.
    pub aria: &'static str,
}

/// The checked filters and paging of a key list request.
struct Listing {
    filter: KeyFilter,
    sort: String,
    descending: bool,
    offset: u64,
    compliant: String,
}

fn listing(q: &KeysQuery) -> Result<Listing, PageError> {
    let compliant = match opt(&q.compliant).as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(PageError::BadRequest(format!(
                "compliant must be true or false, not {other:?}."
            )));
        }
    };
    let sort = opt(&q.sort).unwrap_or_else(|| "arn".into());
    if sort_of(&sort).is_none() {
        return Err(PageError::BadRequest(format!(
            "Keys cannot be sorted by {sort:?}; use arn, account, region, alias, state or compliance."
        )));
    }
    let descending = match opt(&q.dir).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(d) => {
            return Err(PageError::BadRequest(format!(
                "dir must be asc or desc, not {d:?}."
            )));
        }
    };
    let offset = match opt(&q.offset) {
        None => 0,
        Some(o) => o
            .parse::<u64>()
            .ok()
            .filter(|o| *o <= 10_000_000)
            .ok_or_else(|| PageError::BadRequest(format!("offset {o:?} is not a page offset.")))?,
    };
    Ok(Listing {
        filter: KeyFilter {
            account: opt(&q.account),
            region: opt(&q.region),
            rule: check_rule(&q.rule)?,
            severity: check_severity(&q.severity)?,
            compliant,
            q: opt(&q.q),
            include_deleted: false,
            deleted_only: false,
        },
        compliant: compliant.map(|c| c.to_string()).unwrap_or_default(),
        sort,
        descending,
        offset,
    })
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    layout: Layout,
    t: KeysTable,
    rules: Vec<&'static str>,
    severities: [&'static str; 5],
}

/// The table and its paging: the whole page's core, and the htmx fragment of a filter change.
#[derive(Template)]
#[template(path = "partials/keys_table.html")]
struct KeysTable {
    account: String,
    region: String,
    rule: String,
    severity: String,
    compliant: String,
    q: String,
    keys: Vec<KeyItem>,
    total: u64,
    first: u64,
    last: u64,
    columns: Vec<SortLink>,
    prev: Option<String>,
    next: Option<String>,
}

impl KeysTable {
    fn is_rule(&self, rule: &str) -> bool {
        self.rule == rule
    }

    fn is_severity(&self, severity: &str) -> bool {
        self.severity == severity
    }

    fn href(&self, sort: &str, dir: &str, offset: u64) -> String {
        format!(
            "/keys{}",
            query(&[
                ("account", self.account.clone()),
                ("region", self.region.clone()),
                ("rule", self.rule.clone()),
                ("severity", self.severity.clone()),
                ("compliant", self.compliant.clone()),
                ("q", self.q.clone()),
                (
                    "sort",
                    if sort == "arn" {
                        String::new()
                    } else {
                        sort.to_string()
                    }
                ),
                (
                    "dir",
                    if dir == "asc" {
                        String::new()
                    } else {
                        dir.to_string()
                    }
                ),
                (
                    "offset",
                    if offset == 0 {
                        String::new()
                    } else {
                        offset.to_string()
                    }
                ),
            ])
        )
    }
}

/// Open finding rule ids of each key, one indexed query per key of the page.
async fn open_rules(dash: &Dash, rows: &[KeyRow]) -> Result<Vec<Vec<String>>, PageError> {
    let lookups = rows.iter().map(|k| {
        let store = dash.app.store.clone();
        let filter = FindingFilter {
            key_arn: Some(k.key.arn.clone()),
            status: Some("open".into()),
            ..FindingFilter::default()
        };
        let open = k.open_findings;
        async move {
            if open == 0 {
                return Ok(Vec::new());
            }
            let (found, _) = store.query_findings(&filter, None, 50).await?;
            let rules: BTreeSet<String> = found.into_iter().map(|f| f.rule_id).collect();
            Ok::<_, crate::store::StoreError>(rules.into_iter().collect())
        }
    });
    Ok(futures::future::try_join_all(lookups).await?)
}

/// `GET /keys`: the page, or only the table for htmx.
pub async fn list(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    q: Result<Query<KeysQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let l = listing(&q)?;
    let sort = sort_of(&l.sort).unwrap_or_default();
    let (rows, total) = dash
        .app
        .store
        .query_keys_sorted(&l.filter, sort, l.descending, l.offset, PAGE_SIZE)
        .await?;
    let rules = open_rules(&dash, &rows).await?;
    let shown = rows.len() as u64;
    let keys = rows
        .into_iter()
        .zip(rules)
        .map(|(k, rules)| KeyItem {
            href: key_href(&k.key.arn),
            compliant: k.open_findings == 0,
            open_findings: k.open_findings,
            alias: k.key.aliases.first().cloned().unwrap_or_default(),
            arn: k.key.arn,
            key_id: k.key.key_id,
            account_id: k.key.account_id,
            region: k.key.region,
            state: k.key.key_state,
            manager: k.key.key_manager,
            rules,
        })
        .collect();
    let mut t = KeysTable {
        account: l.filter.account.clone().unwrap_or_default(),
        region: l.filter.region.clone().unwrap_or_default(),
        rule: l.filter.rule.clone().unwrap_or_default(),
        severity: l.filter.severity.clone().unwrap_or_default(),
        compliant: l.compliant.clone(),
        q: l.filter.q.clone().unwrap_or_default(),
        keys,
        total,
        first: if shown == 0 { 0 } else { l.offset + 1 },
        last: l.offset + shown,
        columns: Vec::new(),
        prev: None,
        next: None,
    };
    let dir = if l.descending { "desc" } else { "asc" };
    t.prev =
        (l.offset > 0).then(|| t.href(&l.sort, dir, l.offset.saturating_sub(u64::from(PAGE_SIZE))));
    t.next = (l.offset + shown < total).then(|| t.href(&l.sort, dir, l.offset + shown));
    t.columns = [
        ("Key", "arn"),
        ("Account", "account"),
        ("Region", "region"),
        ("Alias", "alias"),
        ("State", "state"),
        ("Compliant", "compliance"),
    ]
    .into_iter()
    .map(|(label, name)| {
        let active = l.sort == name;
        let next_dir = if active && !l.descending {
            "desc"
        } else {
            "asc"
        };
        SortLink {
            label,
            href: t.href(name, next_dir, 0),
            aria: match (active, l.descending) {
                (false, _) => "none",
                (true, false) => "ascending",
                (true, true) => "descending",
            },
        }
    })
    .collect();
    if is_htmx(&headers) {
        return render(&t);
    }
    render(&KeysPage {
        layout: Layout::new(&viewer, "keys"),
        t,
        rules: rule_ids(),
        severities: SEVERITIES,
    })
}

/// The one key a path names: a key id or a (percent-encoded) ARN.
pub async fn resolve_key(dash: &Dash, key: &str) -> Result<KeyRow, PageError> {
    let mut found = dash.app.store.find_keys(key).await?;
    match found.len() {
        0 => Err(PageError::NotFound(format!("There is no key {key:?}."))),
        1 => Ok(found.remove(0)),
        n => Err(PageError::Conflict(format!(
            "{key:?} names a multi-Region key in {n} Regions; open it by ARN: {}.",
            found
                .iter()
                .map(|k| k.key.arn.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub struct FindingExplained {
    pub id: i64,
    pub rule_id: String,
    pub severity: String,
    pub status: String,
    pub statement: String,
    pub message: String,
    pub title: String,
    pub rationale: String,
    pub fix: String,
    pub references: Vec<String>,
    pub waiver: Option<String>,
}

pub struct VersionItem {
    pub sha: String,
    pub first_seen: String,
    pub last_seen: String,
    pub current: bool,
    pub diff: Vec<DiffLine>,
    pub first: bool,
}

pub struct WaiverItem {
    pub rule_id: String,
    pub scope: &'static str,
    pub reason: String,
    pub author: String,
    pub created: String,
    pub expires: String,
    pub status: &'static str,
}

pub struct KeyInfo {
    pub arn: String,
    pub key_id: String,
    pub account_id: String,
    pub region: String,
    pub description: String,
    pub manager: String,
    pub state: String,
    pub spec: String,
    pub usage: String,
    pub origin: String,
    pub multi_region: bool,
    pub rotation: String,
    pub created: String,
    pub deletion: String,
    pub first_seen: String,
    pub last_seen: String,
    pub deleted: Option<String>,
    pub aliases: Vec<String>,
    pub compliant: bool,
    pub open_findings: u64,
    pub remediable: bool,
}

#[derive(Template)]
#[template(path = "key.html")]
struct KeyPage {
    layout: Layout,
    key: KeyInfo,
    tags: Vec<(String, String)>,
    grants: Vec<GrantView>,
    policy: Option<PolicyBlocks>,
    policy_sha: String,
    policy_error: Option<String>,
    findings: Vec<FindingExplained>,
    resolved: usize,
    history: Vec<VersionItem>,
    waivers: Vec<WaiverItem>,
    propose_href: String,
    can_propose: bool,
}

fn key_info(k: &KeyRow) -> KeyInfo {
    let r = &k.key;
    KeyInfo {
        arn: r.arn.clone(),
        key_id: r.key_id.clone(),
        account_id: r.account_id.clone(),
        region: r.region.clone(),
        description: r.description.clone(),
        manager: r.key_manager.clone(),
        state: r.key_state.clone(),
        spec: r.key_spec.clone(),
        usage: r.key_usage.clone(),
        origin: r.origin.clone(),
        multi_region: r.multi_region,
        rotation: match r.rotation_enabled {
            Some(true) => "enabled".into(),
            Some(false) => "disabled".into(),
            None => "n/a".into(),
        },
        created: when_opt(&r.creation_date),
        deletion: when_opt(&r.deletion_date),
        first_seen: when(&k.first_seen),
        last_seen: when(&k.last_seen),
        deleted: k.deleted_at.as_ref().map(when),
        aliases: r.aliases.clone(),
        compliant: k.open_findings == 0,
        open_findings: k.open_findings,
        remediable: k.remediable,
    }
}

/// `GET /keys/{key}`.
pub async fn detail(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Path(key): Path<String>,
) -> PageResult {
    let row = resolve_key(&dash, &key).await?;
    let store = &dash.app.store;
    let filter = FindingFilter {
        key_arn: Some(row.key.arn.clone()),
        ..FindingFilter::default()
    };
    let (versions, (findings, _)) = futures::try_join!(
        store.policy_versions(&row.key.arn),
        store.query_findings(&filter, None, 500),
    )?;
    let resolved = findings.iter().filter(|f| f.status == "resolved").count();
    let live: Vec<_> = findings
        .into_iter()
        .filter(|f| f.status != "resolved")
        .collect();
    let mut offending: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for f in live.iter().filter(|f| f.status == "open") {
        if let Some(i) = f.statement_index.and_then(|i| usize::try_from(i).ok()) {
            offending.entry(i).or_default().push(f.rule_id.clone());
        }
    }
    let current = row
        .policy_sha256
        .as_deref()
        .and_then(|sha| versions.iter().rev().find(|v| v.sha256 == sha));
    let mut waivers = Vec::new();
    let mut seen = BTreeSet::new();
    let now = dash.app.clock.now();
    for f in &live {
        for w in store.finding_waivers(f.id).await? {
            if !seen.insert(w.id) {
                continue;
            }
            waivers.push(WaiverItem {
                scope: w.scope().as_str(),
                status: if w.revoked_at.is_some() {
                    "revoked"
                } else if w.expires_at <= now {
                    "expired"
                } else {
                    "active"
                },
                rule_id: w.rule_id,
                reason: w.reason,
                author: w.author,
                created: when(&w.created_at),
                expires: when(&w.expires_at),
            });
        }
    }
    let history = versions
        .iter()
        .enumerate()
        .rev()
        .map(|(i, v)| VersionItem {
            sha: v.sha256.chars().take(12).collect(),
            first_seen: when(&v.first_seen),
            last_seen: when(&v.last_seen),
            current: Some(v.sha256.as_str()) == row.policy_sha256.as_deref(),
            diff: if i == 0 {
                Vec::new()
            } else {
                line_diff(&versions[i - 1].text, &v.text)
            },
            first: i == 0,
        })
        .collect();
    let page = KeyPage {
        layout: Layout::new(&viewer, "keys"),
        key: key_info(&row),
        tags: row.key.tags.clone().into_iter().collect(),
        grants: row
            .key
            .grants
            .clone()
            .into_iter()
            .map(GrantView::from)
            .collect(),
        policy: current.map(|v| policy_blocks(&v.text, &offending)),
        policy_sha: current.map(|v| v.sha256.clone()).unwrap_or_default(),
        policy_error: row.policy_error.clone(),
        findings: live
            .into_iter()
            .map(|f| {
                let info = f.rule_id.parse::<RuleId>().ok().map(|r| r.info());
                FindingExplained {
                    statement: match (f.statement_index, &f.sid) {
                        (Some(i), Some(sid)) => format!("statement {i} “{sid}”"),
                        (Some(i), None) => format!("statement {i}"),
                        _ => "the key".into(),
                    },
                    title: info.map(|i| i.title.to_string()).unwrap_or_default(),
                    rationale: info.map(|i| i.rationale.to_string()).unwrap_or_default(),
                    fix: info.map(|i| i.remediation.to_string()).unwrap_or_default(),
                    references: info
                        .map(|i| i.references.iter().map(|r| r.to_string()).collect())
                        .unwrap_or_default(),
                    waiver: f
                        .waiver_reason
                        .as_ref()
                        .map(|r| format!("{r} (until {})", when_opt(&f.waiver_expires_at))),
                    id: f.id,
                    rule_id: f.rule_id,
                    severity: f.severity,
                    status: f.status,
                    message: f.message,
                }
            })
            .collect(),
        resolved,
        history,
        waivers,
        propose_href: format!("/keys/{}/propose", enc(&row.key.arn)),
        can_propose: viewer.can(Role::Operator)
            && row.remediable
            && row.key.key_manager != "AWS"
            && row.deleted_at.is_none()
            && offending
                .values()
                .flatten()
                .any(|r| r == "KMS-DELEGATION" || r == "KMS-NO-ADMIN"),
    };
    render(&page)
}

/// What the fix would do to the stored policy, computed as the remediation service does.
pub struct Preview {
    pub proposed: String,
    pub changes: Vec<String>,
    pub diff: Vec<DiffLine>,
    pub resolves: Vec<String>,
    pub remaining: Vec<String>,
}

fn rule_set(policy: &Policy, account: &str, trusted: &[String]) -> BTreeSet<String> {
    evaluate_policy(
        policy,
        &EvalContext {
            account_id: account,
            key_manager: KeyManager::Customer,
            trusted_accounts: trusted,
        },
    )
    .into_iter()
    .map(|f| f.rule_id.as_str().to_string())
    .collect()
}

/// The fix of the stored policy `text` of `row`, or why there is none.
fn compute_preview(dash: &Dash, row: &KeyRow, text: &str) -> Result<Preview, String> {
    if row.key.key_manager == "AWS" || !row.remediable {
        return Err(
            "This is an AWS-managed key: AWS owns its policy, which cannot be changed.".into(),
        );
    }
    let account =
        dash.account(&row.key.account_id)
            .unwrap_or_else(|| crate::config::AccountConfig {
                id: row.key.account_id.clone(),
                ..Default::default()
            });
    let policy =
        Policy::parse(text).map_err(|e| format!("The stored policy is not valid: {}", e.reason))?;
    let outcome = fix(
        &policy,
        &FixContext {
            account_id: &row.key.account_id,
            key_admins: &account.key_admins,
            auditor: account.auditor.as_deref(),
            caller: account.remediator.as_deref(),
        },
    )
    .map_err(|r| {
        format!(
            "The fix was refused: {}. Configure [[accounts]] key_admins (and auditor, remediator) for account {} in keyward.toml.",
            r.reason, row.key.account_id
        )
    })?;
    let fixed = match outcome {
        FixOutcome::Unchanged => {
            return Err("Nothing to fix: this policy already prevents IAM delegation.".into());
        }
        FixOutcome::Fixed(f) => f,
    };
    let before = rule_set(&policy, &row.key.account_id, &account.trusted_accounts);
    let after = rule_set(
        &fixed.policy,
        &row.key.account_id,
        &account.trusted_accounts,
    );
    Ok(Preview {
        diff: line_diff(text, &fixed.text),
        proposed: fixed.text,
        changes: fixed.changes,
        resolves: before.difference(&after).cloned().collect(),
        remaining: after.into_iter().collect(),
    })
}

#[derive(Template)]
#[template(path = "propose.html")]
struct ProposePage {
    layout: Layout,
    arn: String,
    key_href: String,
    action: String,
    preview: Option<Preview>,
    refused: Option<String>,
    caller_known: bool,
    available: bool,
}

/// The proposed policy and its diff, before anything is stored.
async fn preview_page(dash: &Dash, viewer: &Viewer, key: &str) -> PageResult {
    viewer.require(Role::Operator)?;
    let row = resolve_key(dash, key).await?;
    let versions = dash.app.store.policy_versions(&row.key.arn).await?;
    let current = row
        .policy_sha256
        .as_deref()
        .and_then(|sha| versions.iter().rev().find(|v| v.sha256 == sha));
    let (preview, refused) = match current {
        None => (
            None,
            Some("No readable policy is stored for this key; run a sync first.".to_string()),
        ),
        Some(v) => match compute_preview(dash, &row, &v.text) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
    };
    render(&ProposePage {
        layout: Layout::new(viewer, "keys"),
        key_href: key_href(&row.key.arn),
        action: format!("/keys/{}/propose", enc(&row.key.arn)),
        caller_known: dash
            .account(&row.key.account_id)
            .is_some_and(|a| a.remediator.is_some()),
        available: dash.app.remediation.is_some(),
        arn: row.key.arn,
        preview,
        refused,
    })
}

/// `GET /keys/{key}/propose`.
pub async fn preview(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Path(key): Path<String>,
) -> PageResult {
    preview_page(&dash, &viewer, &key).await
}

/// `POST /keys/{key}/propose`: the remediation service proposes the fix (reading the policy
/// fresh from AWS), then on to the remediation.
pub async fn propose(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<FormData>,
    Path(key): Path<String>,
) -> PageResult {
    viewer.require(Role::Operator)?;
    let service = dash.app.remediation.clone().ok_or_else(|| {
        PageError::Unavailable("Remediation is not available in this process.".into())
    })?;
    let row = resolve_key(&dash, &key).await?;
    let text = |name: &str| -> Result<Option<String>, PageError> {
        match form.get(name) {
            Some(v) if v.chars().count() > 1000 => Err(PageError::BadRequest(format!(
                "The {name} is longer than 1000 characters."
            ))),
            v => Ok(v.map(str::to_string)),
        }
    };
    let proposal = Proposal {
        key: row.key.arn.clone(),
        ticket: text("ticket")?,
        comment: text("comment")?,
        idempotency_key: None,
    };
    let (created, _) = service.propose(&proposal, &viewer.actor).await?;
    Ok(see_other(&format!("/remediations/{}", created.id)))
}
