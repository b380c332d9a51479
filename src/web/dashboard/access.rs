//! `/keys/{key}/access`: who can use or manage a key and why; `/principals/{arn}`: the keys a
//! principal can use; and the impact block approvers read before approving a fix.

use askama::Template;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::Dash;
use super::keys::resolve_key;
use super::layout::{
    Layout, PageError, PageResult, enc, key_href, opt, query, render, see_other, when_opt,
};
use super::session::Viewer;
use crate::access::{
    AccessFilter, AccessImpact, AccessLevel, ActionAccess, ActionGroup, PrincipalType, Reason,
    StatementRef,
};
use crate::effective_access::{self, EffectiveAccessError, InventoryStatus};
use crate::web::api::SCOPE;

/// The longest principal ARN the pages look up (as the API).
const MAX_ARN: usize = 2048;

/// The dashboard path of a principal: its ARN, percent-encoded.
pub fn principal_href(arn: &str) -> String {
    format!("/principals/{}", enc(arn))
}

/// The dashboard path of a key's access tab.
pub fn access_href(key_arn: &str) -> String {
    format!("/keys/{}/access", enc(key_arn))
}

fn statement_label(index: usize, sid: &Option<String>) -> String {
    match sid {
        Some(sid) => format!("statement {index} “{sid}”"),
        None => format!("statement {index}"),
    }
}

/// `inline:<owner>/<name>` as words; a managed policy ARN as it is.
fn policy_label(policy: &str) -> String {
    match policy
        .strip_prefix("inline:")
        .and_then(|p| p.split_once('/'))
    {
        Some((owner, name)) => format!("inline policy “{name}” of {owner}"),
        None => format!("managed policy {policy}"),
    }
}

fn via_label(via: &str) -> String {
    match via.strip_prefix("group:") {
        Some(group) => format!("via group {group}"),
        None => format!("via the {via}"),
    }
}

/// One policy statement or grant behind an entry, in words, with its open condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReasonView {
    pub text: String,
    /// The condition, pretty-printed JSON (escaped by the template).
    pub condition: Option<String>,
}

fn pretty(value: &Option<Value>) -> Option<String> {
    value
        .as_ref()
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
}

impl From<&Reason> for ReasonView {
    fn from(reason: &Reason) -> Self {
        let (text, condition) = match reason {
            Reason::KeyPolicy {
                statement_index,
                sid,
                condition,
            } => (
                format!("Key policy {}", statement_label(*statement_index, sid)),
                condition,
            ),
            Reason::Delegation {
                statement_index,
                sid,
                condition,
            } => (
                format!(
                    "Delegation to IAM: key policy {}",
                    statement_label(*statement_index, sid)
                ),
                condition,
            ),
            Reason::IdentityPolicy {
                policy,
                via,
                statement_index,
                sid,
                condition,
            } => (
                format!(
                    "Identity policy: {} {}, {}",
                    policy_label(policy),
                    via_label(via),
                    statement_label(*statement_index, sid)
                ),
                condition,
            ),
            Reason::Boundary {
                policy,
                statement_index: Some(i),
                sid,
                condition,
            } => (
                format!(
                    "Within the permissions boundary {}, {}",
                    policy_label(policy),
                    statement_label(*i, sid)
                ),
                condition,
            ),
            Reason::Boundary {
                policy,
                statement_index: None,
                condition,
                ..
            } => (
                format!(
                    "The permissions boundary {} is missing or unreadable",
                    policy_label(policy)
                ),
                condition,
            ),
            Reason::Grant { grant_id } => (format!("Grant {grant_id}"), &None),
        };
        ReasonView {
            text,
            condition: pretty(condition),
        }
    }
}

/// One action, marked when it depends on a condition.
pub struct ActionView {
    pub action: String,
    pub conditional: bool,
}

/// The actions of one group.
pub struct GroupView {
    pub group: &'static str,
    pub actions: Vec<ActionView>,
}

/// A reason and the groups of the actions it gives.
pub struct WhyView {
    pub reason: ReasonView,
    pub groups: Vec<&'static str>,
}

/// The actions of one principal (on one key), grouped, with the distinct reasons behind them.
pub struct ActionsView {
    pub groups: Vec<GroupView>,
    pub why: Vec<WhyView>,
    /// Deny statements with open conditions that might remove some of the actions.
    pub denies: Vec<ReasonView>,
    pub conditional: usize,
}

fn actions_view(actions: &[ActionAccess]) -> ActionsView {
    let mut groups: Vec<GroupView> = Vec::new();
    let mut why: BTreeMap<ReasonView, Vec<ActionGroup>> = BTreeMap::new();
    let mut denies: Vec<ReasonView> = Vec::new();
    let mut conditional = 0;
    for group in ActionGroup::ALL {
        let of_group: Vec<&ActionAccess> = actions.iter().filter(|a| a.group == group).collect();
        if of_group.is_empty() {
            continue;
        }
        for a in &of_group {
            for r in a.reasons.iter() {
                let groups = why.entry(ReasonView::from(r)).or_default();
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
            for d in a.denies.iter() {
                let d = ReasonView::from(d);
                if !denies.contains(&d) {
                    denies.push(d);
                }
            }
        }
        groups.push(GroupView {
            group: group.as_str(),
            actions: of_group
                .iter()
                .map(|a| {
                    let is_conditional = a.access == AccessLevel::Conditional;
                    conditional += usize::from(is_conditional);
                    ActionView {
                        action: a.action.to_string(),
                        conditional: is_conditional,
                    }
                })
                .collect(),
        });
    }
    ActionsView {
        groups,
        why: why
            .into_iter()
            .map(|(reason, groups)| WhyView {
                reason,
                groups: groups.into_iter().map(ActionGroup::as_str).collect(),
            })
            .collect(),
        denies,
        conditional,
    }
}

/// How current an account's IAM inventory is, in words.
pub struct InventoryView {
    pub account_id: String,
    pub known: bool,
    pub read: String,
    pub error: Option<String>,
    pub error_at: String,
}

fn inventory_view(account_id: &str, status: &InventoryStatus) -> InventoryView {
    InventoryView {
        account_id: account_id.to_string(),
        known: status.fetched_at.is_some(),
        read: when_opt(&status.fetched_at),
        error: status.last_error.clone(),
        error_at: when_opt(&status.last_error_at),
    }
}

/// The access tab's query string: every filter is in the URL.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AccessPageQuery {
    pub group: Option<String>,
    pub principal_type: Option<String>,
}

pub struct PrincipalRow {
    pub principal: String,
    pub href: String,
    pub principal_type: &'static str,
    pub access: ActionsView,
    pub notes: Vec<String>,
}

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    layout: Layout,
    arn: String,
    key_id: String,
    key_href: String,
    action: String,
    group: String,
    principal_type: String,
    groups: Vec<&'static str>,
    types: Vec<&'static str>,
    /// Why access could not be evaluated (the policy is unread or invalid).
    unavailable: Option<String>,
    delegates: bool,
    delegation: Vec<String>,
    identities_known: bool,
    inventory: InventoryView,
    notes: Vec<String>,
    rows: Vec<PrincipalRow>,
    filtered: bool,
    clear_href: String,
    scope: &'static str,
}

impl AccessPage {
    fn is_group(&self, group: &str) -> bool {
        self.group == group
    }

    fn is_type(&self, principal_type: &str) -> bool {
        self.principal_type == principal_type
    }
}

fn parse_filter<T: std::str::FromStr>(
    name: &str,
    value: &Option<String>,
    allowed: &str,
) -> Result<Option<T>, PageError> {
    opt(value)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                PageError::BadRequest(format!("{name} must be one of {allowed}, not {v:?}."))
            })
        })
        .transpose()
}

fn statement_refs(refs: &[StatementRef]) -> Vec<String> {
    refs.iter()
        .map(|s| statement_label(s.statement_index, &s.sid))
        .collect()
}

/// `GET /keys/{key}/access`: the key's access table, filtered by the query.
pub async fn key_page(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Path(key): Path<String>,
    q: Result<Query<AccessPageQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let filter = AccessFilter {
        group: parse_filter::<ActionGroup>("group", &q.group, "admin, cryptographic, grant, read")?,
        principal_type: parse_filter::<PrincipalType>(
            "principal_type",
            &q.principal_type,
            "account, user, role, assumed_role, service, federated, anyone, other",
        )?,
    };
    let row = resolve_key(&dash, &key).await?;
    let mut page = AccessPage {
        layout: Layout::new(&viewer, "keys"),
        key_href: key_href(&row.key.arn),
        action: access_href(&row.key.arn),
        clear_href: access_href(&row.key.arn),
        arn: row.key.arn.clone(),
        key_id: row.key.key_id.clone(),
        group: filter
            .group
            .map(|g| g.as_str().to_string())
            .unwrap_or_default(),
        principal_type: filter
            .principal_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        filtered: filter.group.is_some() || filter.principal_type.is_some(),
        groups: ActionGroup::ALL.iter().map(|g| g.as_str()).collect(),
        types: PrincipalType::ALL.iter().map(|t| t.as_str()).collect(),
        unavailable: None,
        delegates: false,
        delegation: Vec::new(),
        identities_known: false,
        inventory: inventory_view(&row.key.account_id, &InventoryStatus::default()),
        notes: Vec::new(),
        rows: Vec::new(),
        scope: SCOPE,
    };
    match effective_access::key_access(dash.app.store.as_ref(), &row).await {
        Ok(report) => {
            let table = report.table.filtered(&filter);
            page.delegates = table.delegates_to_iam;
            page.delegation = statement_refs(&table.delegation_statements);
            page.identities_known = table.identities_known;
            page.inventory = inventory_view(&table.account_id, &report.inventory);
            page.notes = table.notes;
            page.rows = table
                .principals
                .into_iter()
                .map(|p| PrincipalRow {
                    href: principal_href(&p.principal),
                    principal_type: p.principal_type.as_str(),
                    access: actions_view(&p.actions),
                    notes: p.notes,
                    principal: p.principal,
                })
                .collect();
        }
        Err(EffectiveAccessError::PolicyUnknown(_)) => {
            page.unavailable = Some(match &row.policy_error {
                Some(e) => format!(
                    "The key policy could not be read ({e}), so who can use this key is unknown."
                ),
                None => "No readable key policy is stored for this key (run a sync), so who \
                         can use it is unknown."
                    .to_string(),
            });
        }
        Err(EffectiveAccessError::Invalid(e)) => {
            page.unavailable = Some(format!(
                "The stored key policy cannot be evaluated: {e}. Who can use this key is unknown."
            ));
        }
        Err(EffectiveAccessError::Store(e)) => return Err(e.into()),
    }
    render(&page)
}

/// The principal lookup's query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LookupQuery {
    pub arn: Option<String>,
    pub account: Option<String>,
}

/// The principal page's query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PrincipalPageQuery {
    pub account: Option<String>,
}

pub struct KeyAccessRow {
    pub arn: String,
    pub href: String,
    pub access_href: String,
    pub access: ActionsView,
}

pub struct UnreadableKey {
    pub arn: String,
    pub href: String,
}

/// What the principal page shows for one principal.
pub struct PrincipalReport {
    pub principal: String,
    /// The role a session ARN was evaluated as, when it differs.
    pub evaluated_as: Option<String>,
    pub evaluated_href: String,
    pub keys: Vec<KeyAccessRow>,
    pub unreadable: Vec<UnreadableKey>,
    pub inventories: Vec<InventoryView>,
}

#[derive(Template)]
#[template(path = "principal.html")]
struct PrincipalPage {
    layout: Layout,
    /// The ARN in the lookup form.
    arn: String,
    account: String,
    report: Option<PrincipalReport>,
    scope: &'static str,
}

fn check_arn(arn: &str) -> Result<(), PageError> {
    if arn.is_empty() || arn.len() > MAX_ARN {
        return Err(PageError::BadRequest(format!(
            "The principal must be an ARN of at most {MAX_ARN} characters."
        )));
    }
    Ok(())
}

/// `GET /principals?arn=…`: the lookup form, or on to the principal's page.
pub async fn lookup(
    Extension(viewer): Extension<Viewer>,
    q: Result<Query<LookupQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    let account = opt(&q.account).unwrap_or_default();
    match opt(&q.arn) {
        Some(arn) => {
            check_arn(&arn)?;
            Ok(see_other(&format!(
                "{}{}",
                principal_href(&arn),
                query(&[("account", account)])
            )))
        }
        None => render(&PrincipalPage {
            layout: Layout::new(&viewer, "keys"),
            arn: String::new(),
            account,
            report: None,
            scope: SCOPE,
        }),
    }
}

/// `GET /principals/{arn}`: the keys the principal can use, and how.
pub async fn principal_page(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Path(arn): Path<String>,
    q: Result<Query<PrincipalPageQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = q.map_err(|e| PageError::BadRequest(e.body_text()))?;
    check_arn(&arn)?;
    let account = opt(&q.account);
    let report =
        effective_access::principal_keys(dash.app.store.as_ref(), &arn, account.as_deref())
            .await
            .map_err(|e| match e {
                EffectiveAccessError::Store(e) => PageError::from(e),
                other => PageError::BadRequest(other.to_string()),
            })?;
    let evaluated_as = (report.keys.evaluated_as != report.keys.principal)
        .then(|| report.keys.evaluated_as.clone());
    let view = PrincipalReport {
        evaluated_href: principal_href(&report.keys.evaluated_as),
        evaluated_as,
        keys: report
            .keys
            .keys
            .iter()
            .map(|k| KeyAccessRow {
                href: key_href(&k.key_arn),
                access_href: access_href(&k.key_arn),
                access: actions_view(&k.actions),
                arn: k.key_arn.clone(),
            })
            .collect(),
        unreadable: report
            .keys
            .unreadable_keys
            .iter()
            .map(|k| UnreadableKey {
                arn: k.clone(),
                href: key_href(k),
            })
            .collect(),
        inventories: report
            .inventories
            .iter()
            .map(|(account, status)| inventory_view(account, status))
            .collect(),
        principal: report.keys.principal,
    };
    render(&PrincipalPage {
        layout: Layout::new(&viewer, "keys"),
        arn: arn.clone(),
        account: account.unwrap_or_default(),
        report: Some(view),
        scope: SCOPE,
    })
}

/// A principal whose access a fix changes, with the actions by group.
#[derive(Debug, Clone)]
pub struct ChangeView {
    pub principal: String,
    pub href: String,
    pub principal_type: String,
    pub groups: Vec<(String, Vec<String>)>,
    /// It loses (or gains) a cryptographic action.
    pub cryptographic: bool,
}

/// A principal whose access a fix leaves as it is.
#[derive(Debug, Clone)]
pub struct KeptView {
    pub principal: String,
    pub href: String,
    pub principal_type: String,
}

/// Who loses, keeps and gains access if a remediation is applied: what
/// `partials/impact.html` renders and what the approve form's acknowledgement needs.
#[derive(Debug, Clone, Default)]
pub struct ImpactView {
    /// False when the account's IAM inventory had not been read (the impact is unknown), or
    /// the stored impact could not be read.
    pub known: bool,
    /// Why the impact is unknown.
    pub unknown_reason: String,
    pub lose: Vec<ChangeView>,
    pub keep: Vec<KeptView>,
    pub gain: Vec<ChangeView>,
    /// Principals that lose a cryptographic action: approving must acknowledge them.
    pub loses_cryptographic: Vec<String>,
}

impl ImpactView {
    /// True when the approve form needs the `acknowledge_access_loss` checkbox.
    pub fn requires_acknowledgement(&self) -> bool {
        !self.loses_cryptographic.is_empty()
    }

    /// The checkbox's label, naming how many principals lose cryptographic access.
    pub fn acknowledgement_label(&self) -> String {
        let n = self.loses_cryptographic.len();
        let who = if n == 1 {
            "1 principal loses".to_string()
        } else {
            format!("{n} principals lose")
        };
        format!(
            "I understand that {who} cryptographic access to this key ({}) and checked that \
             they no longer need it",
            self.loses_cryptographic.join(", ")
        )
    }
}

fn change_view(c: &crate::access::PrincipalChange) -> ChangeView {
    ChangeView {
        principal: c.principal.clone(),
        href: principal_href(&c.principal),
        principal_type: c.principal_type.as_str().to_string(),
        groups: c
            .actions
            .iter()
            .map(|(g, a)| (g.as_str().to_string(), a.clone()))
            .collect(),
        cryptographic: c.actions.contains_key(&ActionGroup::Cryptographic),
    }
}

/// The view of a remediation's stored `impact` (`access::AccessImpact` as JSON); `None` or
/// `null` when the account's IAM inventory was not known at proposal time.
pub fn impact_view(impact: Option<&Value>) -> ImpactView {
    let Some(value) = impact.filter(|v| !v.is_null()) else {
        return ImpactView {
            unknown_reason: "Impact unknown: the account's IAM inventory has not been read, so \
                             who has access through IAM policies today is not known."
                .into(),
            ..ImpactView::default()
        };
    };
    // Read as the remediation service reads it, whatever else fails: the acknowledgement it
    // demands must be offered.
    let loses_cryptographic: Vec<String> = value
        .get("loses_cryptographic")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match serde_json::from_value::<AccessImpact>(value.clone()) {
        Ok(i) => ImpactView {
            known: true,
            unknown_reason: String::new(),
            lose: i.lose.iter().map(change_view).collect(),
            gain: i.gain.iter().map(change_view).collect(),
            keep: i
                .keep
                .iter()
                .map(|k| KeptView {
                    href: principal_href(&k.principal),
                    principal: k.principal.clone(),
                    principal_type: k.principal_type.as_str().to_string(),
                })
                .collect(),
            loses_cryptographic,
        },
        Err(e) => {
            tracing::warn!(error = %e, "a stored remediation impact does not parse");
            ImpactView {
                unknown_reason: "Impact unknown: the stored impact of this remediation could not \
                                 be read."
                    .into(),
                loses_cryptographic,
                ..ImpactView::default()
            }
        }
    }
}
