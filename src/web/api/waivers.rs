//! Waivers (accepted risk, with an expiry) and ticket references on findings.
//!
//! Remediations accept a `ticket` reference the same way (`PATCH /remediations/{id}`, in
//! `remediations.rs`), checked by [`ticket_reference`].

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, FindingView};
use crate::store::{FindingRow, NewAuditEvent, NewWaiver, WaiverRow, WaiverScope};
use crate::web::AppState;
use crate::web::auth::{Caller, Role};
use crate::web::error::{ApiError, ApiJson, ApiPath, Problem};

/// The longest reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// The longest ticket reference accepted, in characters.
pub const MAX_TICKET_CHARS: usize = 200;
/// How far ahead a waiver may expire: accepted risk is reviewed at least yearly.
pub const MAX_WAIVER_MONTHS: u32 = 12;

/// What a waiver covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The finding's rule on the finding's key.
    #[default]
    Key,
    /// The finding's rule on every key of the finding's account, present and future.
    Account,
}

impl From<Scope> for WaiverScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Key => WaiverScope::Key,
            Scope::Account => WaiverScope::Account,
        }
    }
}

impl From<WaiverScope> for Scope {
    fn from(s: WaiverScope) -> Self {
        match s {
            WaiverScope::Key => Scope::Key,
            WaiverScope::Account => Scope::Account,
        }
    }
}

/// Body of `POST /findings/{id}/waive`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaiveRequest {
    /// Why the risk is accepted; 1–1000 characters.
    pub reason: String,
    /// When the waiver lapses (RFC 3339): in the future, at most a year ahead.
    pub expires_at: DateTime<Utc>,
    /// `key` (default) or `account`.
    #[serde(default)]
    pub scope: Scope,
}

/// Body of `PATCH /findings/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindingPatch {
    /// A ticket reference such as `JIRA-123` (1–200 characters), or `null` to clear it.
    // deserialize_with makes the field required: `{}` is not a request to clear the ticket.
    #[serde(deserialize_with = "Option::deserialize")]
    pub ticket: Option<String>,
}

/// A waiver.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaiverView {
    pub id: i64,
    pub scope: Scope,
    /// The key it covers; absent for an account-wide waiver.
    pub key_arn: Option<String>,
    pub account_id: String,
    pub rule_id: String,
    pub reason: String,
    /// The token name that waived.
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    /// Unrevoked and unexpired now.
    pub active: bool,
}

impl WaiverView {
    fn new(w: WaiverRow, now: DateTime<Utc>) -> Self {
        WaiverView {
            scope: w.scope().into(),
            active: w.revoked_at.is_none() && w.expires_at > now,
            id: w.id,
            key_arn: w.key_arn,
            account_id: w.account_id,
            rule_id: w.rule_id,
            reason: w.reason,
            author: w.author,
            created_at: w.created_at,
            expires_at: w.expires_at,
            revoked_at: w.revoked_at,
            revoked_by: w.revoked_by,
        }
    }
}

/// A finding with every waiver that ever covered it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FindingDetail {
    #[serde(flatten)]
    pub finding: FindingView,
    /// Newest first, revoked and expired ones included.
    pub waivers: Vec<WaiverView>,
}

/// What waiving did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Waived {
    pub waiver: WaiverView,
    /// The finding as it reads now.
    pub finding: FindingView,
}

/// What revoking did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Unwaived {
    pub revoked: Vec<WaiverView>,
    /// The finding as it reads now.
    pub finding: FindingView,
}

/// A ticket reference as findings and remediations accept it: trimmed, 1–200 characters, no
/// control characters (it ends up in webhook payloads and exports).
pub(super) fn ticket_reference(ticket: String) -> Result<String, ApiError> {
    let t = ticket.trim().to_string();
    if t.is_empty() {
        return Err(ApiError::Unprocessable(
            "ticket must not be empty; send null to clear it".into(),
        ));
    }
    let chars = t.chars().count();
    if chars > MAX_TICKET_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "ticket is {chars} characters; at most {MAX_TICKET_CHARS} are accepted"
        )));
    }
    if t.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "ticket must not contain control characters".into(),
        ));
    }
    Ok(t)
}

/// The finding id of a path; anything else names no finding.
fn finding_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no finding {raw:?}")))
}

async fn load_finding(state: &AppState, id: i64) -> Result<FindingRow, ApiError> {
    state
        .store
        .get_finding(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no finding {id}")))
}

fn audit_event(
    state: &AppState,
    actor: &str,
    action: &str,
    id: i64,
    detail: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent {
        at: state.clock.now(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: format!("finding:{id}"),
        detail: detail.to_string(),
    }
}

/// A finding with its waivers.
#[utoipa::path(get, path = "/api/v1/findings/{id}", tag = "findings",
    params(("id" = i64, Path, description = "Finding id")),
    responses((status = 200, body = FindingDetail), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn finding_detail(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<FindingDetail> {
    let id = finding_id(&id)?;
    let finding = load_finding(&state, id).await?;
    let now = state.clock.now();
    let waivers = state.store.finding_waivers(id).await?;
    Ok(ApiJson(FindingDetail {
        finding: FindingView::from(finding),
        waivers: waivers
            .into_iter()
            .map(|w| WaiverView::new(w, now))
            .collect(),
    }))
}

/// Waives a finding: it reads `waived` until `expires_at`, then `open` again by itself. With
/// `scope = account` the waiver covers the rule on every key of the finding's account. A new
/// waiver of the same scope replaces the active one (renewal). Operator role.
#[utoipa::path(post, path = "/api/v1/findings/{id}/waive", tag = "findings",
    params(("id" = i64, Path, description = "Finding id")),
    request_body = WaiveRequest,
    responses((status = 201, body = Waived), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the finding is resolved"),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn waive_finding(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<ApiJson<WaiveRequest>, ApiError>,
) -> Result<(StatusCode, ApiJson<Waived>), ApiError> {
    // The role first: a viewer learns nothing about the body.
    caller.require(Role::Operator)?;
    let ApiJson(request) = body?;
    let id = finding_id(&id)?;
    let now = state.clock.now();
    let reason = request.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::Unprocessable("reason must not be empty".into()));
    }
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "reason is {chars} characters; at most {MAX_REASON_CHARS} are accepted"
        )));
    }
    if request.expires_at <= now {
        return Err(ApiError::Unprocessable(format!(
            "expires_at {} is not in the future",
            request.expires_at.to_rfc3339()
        )));
    }
    let latest = now
        .checked_add_months(Months::new(MAX_WAIVER_MONTHS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if request.expires_at > latest {
        return Err(ApiError::Unprocessable(format!(
            "expires_at {} is more than a year ahead (latest: {})",
            request.expires_at.to_rfc3339(),
            latest.to_rfc3339()
        )));
    }
    let finding = load_finding(&state, id).await?;
    if finding.status == "resolved" {
        return Err(ApiError::Conflict(format!(
            "finding {id} is resolved; only open findings can be waived"
        )));
    }
    let scope = WaiverScope::from(request.scope);
    let audit = audit_event(
        &state,
        &caller.name,
        "finding.waived",
        id,
        serde_json::json!({
            "scope": scope.as_str(),
            "key_arn": (scope == WaiverScope::Key).then_some(&finding.key_arn),
            "account_id": finding.account_id,
            "rule_id": finding.rule_id,
            "reason": reason,
            "expires_at": request.expires_at,
        }),
    );
    let waiver = state
        .store
        .waive_finding(
            id,
            &NewWaiver {
                scope,
                reason,
                author: caller.name.clone(),
                created_at: now,
                expires_at: request.expires_at,
            },
            &audit,
        )
        .await?;
    let finding = load_finding(&state, id).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(Waived {
            waiver: WaiverView::new(waiver, now),
            finding: FindingView::from(finding),
        }),
    ))
}

/// Revokes every active waiver covering the finding (its key's and its account's). Operator role.
#[utoipa::path(delete, path = "/api/v1/findings/{id}/waive", tag = "findings",
    params(("id" = i64, Path, description = "Finding id")),
    responses((status = 200, body = Unwaived), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "no such finding, or no active waiver covers it")))]
pub async fn unwaive_finding(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Unwaived> {
    caller.require(Role::Operator)?;
    let id = finding_id(&id)?;
    let now = state.clock.now();
    let finding = load_finding(&state, id).await?;
    let audit = audit_event(
        &state,
        &caller.name,
        "finding.unwaived",
        id,
        serde_json::json!({
            "key_arn": finding.key_arn,
            "account_id": finding.account_id,
            "rule_id": finding.rule_id,
        }),
    );
    let revoked = state
        .store
        .revoke_waivers(id, now, &caller.name, &audit)
        .await?;
    let finding = load_finding(&state, id).await?;
    Ok(ApiJson(Unwaived {
        revoked: revoked
            .into_iter()
            .map(|w| WaiverView::new(w, now))
            .collect(),
        finding: FindingView::from(finding),
    }))
}

/// Sets (or, with `null`, clears) the finding's ticket reference. Operator role.
#[utoipa::path(patch, path = "/api/v1/findings/{id}", tag = "findings",
    params(("id" = i64, Path, description = "Finding id")),
    request_body = FindingPatch,
    responses((status = 200, body = FindingView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn patch_finding(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<ApiJson<FindingPatch>, ApiError>,
) -> ApiResult<FindingView> {
    caller.require(Role::Operator)?;
    let ApiJson(patch) = body?;
    let id = finding_id(&id)?;
    let ticket = patch.ticket.map(ticket_reference).transpose()?;
    let previous = load_finding(&state, id).await?.ticket;
    let audit = audit_event(
        &state,
        &caller.name,
        "finding.ticket_set",
        id,
        serde_json::json!({ "ticket": ticket, "previous": previous }),
    );
    let finding = state
        .store
        .set_finding_ticket(id, ticket.as_deref(), &audit)
        .await?;
    Ok(ApiJson(FindingView::from(finding)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_ids_are_positive_integers() {
        assert_eq!(finding_id("42").unwrap(), 42);
        for bad in ["0", "-1", "x", "{id}", "1.5", ""] {
            assert!(
                matches!(finding_id(bad), Err(ApiError::NotFound(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn waive_requests_reject_unknown_fields_and_default_to_key_scope() {
        let ok: WaiveRequest =
            serde_json::from_str(r#"{"reason":"r","expires_at":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(ok.scope, Scope::Key);
        assert!(
            serde_json::from_str::<WaiveRequest>(
                r#"{"reason":"r","expires_at":"2030-01-01T00:00:00Z","until":"x"}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<FindingPatch>("{}").is_err());
        let clear: FindingPatch = serde_json::from_str(r#"{"ticket":null}"#).unwrap();
        assert_eq!(clear.ticket, None);
    }
}
