//! Approval-gated remediations: propose (operator), approve/reject/apply (approver), roll back
//! (operator). The service in `crate::remediation` does the work; these handlers check roles
//! and bodies and map its refusals to problem responses.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

use super::waivers::ticket_reference;
use super::{ApiResult, Page, Paging};
use crate::remediation::{Proposal, RemediationError, RemediationService};
use crate::store::{NewAuditEvent, RemediationRow};
use crate::web::AppState;
use crate::web::auth::{Caller, Role};
use crate::web::error::{ApiError, ApiJson, ApiOptionalJson, ApiPath, ApiQuery, Problem};

/// The longest comment accepted, in characters (ticket references: [`super::waivers`]).
pub const MAX_TEXT_CHARS: usize = 1000;
/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Body of `POST /remediations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// Key id or key ARN.
    pub key: String,
    /// A ticketing reference such as `SEC-123`, carried in webhook events.
    #[serde(default)]
    pub ticket: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Body of `PATCH /remediations/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemediationPatch {
    /// A ticket reference such as `SEC-123` (1–200 characters), or `null` to clear it.
    // deserialize_with makes the field required: `{}` is not a request to clear the ticket.
    #[serde(deserialize_with = "Option::deserialize")]
    pub ticket: Option<String>,
}

/// Body of approve, reject and rollback.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Required to reject.
    #[serde(default)]
    pub comment: Option<String>,
    /// Rollback only: a ticketing reference (defaults to the original's).
    #[serde(default)]
    pub ticket: Option<String>,
    /// Approve only: required when the fix removes cryptographic access from principals (the
    /// remediation's `impact.loses_cryptographic`); otherwise the approval is refused with 422.
    #[serde(default)]
    pub acknowledge_access_loss: bool,
}

impl From<RemediationError> for ApiError {
    fn from(e: RemediationError) -> Self {
        match e {
            RemediationError::NotFound(m) => ApiError::NotFound(m),
            RemediationError::Refused(m) => ApiError::Declined(m),
            RemediationError::Forbidden(m) => ApiError::Refused(m),
            RemediationError::Conflict(m) => ApiError::Conflict(m),
            RemediationError::Aws(e) => ApiError::Unavailable(format!("AWS: {e}")),
            RemediationError::Store(e) => ApiError::from(e),
        }
    }
}

fn service(state: &AppState) -> Result<&Arc<RemediationService>, ApiError> {
    state
        .remediation
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("remediation is not available in this process".into()))
}

fn remediation_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no remediation {raw:?}")))
}

/// An optional ticket of a proposal: blank means none, anything else is checked as on PATCH.
fn optional_ticket(value: Option<String>) -> Result<Option<String>, ApiError> {
    value
        .filter(|t| !t.trim().is_empty())
        .map(ticket_reference)
        .transpose()
}

fn text(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let value = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if let Some(v) = &value {
        let chars = v.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ApiError::Unprocessable(format!(
                "{field} is {chars} characters; at most {MAX_TEXT_CHARS} are accepted"
            )));
        }
    }
    Ok(value)
}

/// Proposes the fix for a key, computed from its policy read fresh from AWS. Operator role.
/// An `Idempotency-Key` header makes a retry return the first proposal (200 instead of 201).
#[utoipa::path(post, path = "/api/v1/remediations", tag = "remediations",
    request_body = ProposeRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first proposal")),
    responses((status = 201, body = RemediationRow), (status = 200, body = RemediationRow, description = "an earlier proposal with this Idempotency-Key"),
        (status = 400, body = Problem, description = "malformed JSON or Idempotency-Key"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem),
        (status = 422, body = Problem, description = "refused: AWS-managed key, pending deletion, nothing to fix, or the fix was refused"),
        (status = 503, body = Problem)))]
pub async fn propose(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<ApiJson<ProposeRequest>, ApiError>,
) -> Result<(StatusCode, ApiJson<RemediationRow>), ApiError> {
    caller.require(Role::Operator)?;
    let ApiJson(request) = body?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= MAX_IDEMPOTENCY_KEY)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Idempotency-Key must be 1–{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
                    ))
                })?;
            Some(format!("{}:{v}", caller.name))
        }
    };
    if request.key.trim().is_empty() {
        return Err(ApiError::Unprocessable("key must not be empty".into()));
    }
    let proposal = Proposal {
        key: request.key.trim().to_string(),
        ticket: optional_ticket(request.ticket)?,
        comment: text("comment", request.comment)?,
        idempotency_key,
    };
    let (row, created) = service(&state)?.propose(&proposal, &caller.name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ApiJson(row)))
}

/// Remediations, newest first.
#[utoipa::path(get, path = "/api/v1/remediations", tag = "remediations",
    params(Paging),
    responses((status = 200, body = Page<RemediationRow>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_remediations(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Page<RemediationRow>> {
    let limit = paging.limit()?;
    let (rows, total) = state
        .store
        .list_remediations(paging.id_cursor()?, limit)
        .await?;
    Ok(ApiJson(Page::of(
        rows,
        total,
        limit,
        |r| r.id.to_string(),
        |r| r,
    )))
}

/// One remediation with its approvals, base and proposed policies and diff.
#[utoipa::path(get, path = "/api/v1/remediations/{id}", tag = "remediations",
    params(("id" = i64, Path, description = "Remediation id")),
    responses((status = 200, body = RemediationRow), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_remediation(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<RemediationRow> {
    let id = remediation_id(&id)?;
    let row = state
        .store
        .get_remediation(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no remediation {id}")))?;
    Ok(ApiJson(row))
}

/// Sets (or, with `null`, clears) the remediation's ticket reference, in any state; the
/// remediation's later webhook events carry it. Operator role.
#[utoipa::path(patch, path = "/api/v1/remediations/{id}", tag = "remediations",
    params(("id" = i64, Path, description = "Remediation id")),
    request_body = RemediationPatch,
    responses((status = 200, body = RemediationRow), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn patch_remediation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<ApiJson<RemediationPatch>, ApiError>,
) -> ApiResult<RemediationRow> {
    caller.require(Role::Operator)?;
    let ApiJson(patch) = body?;
    let id = remediation_id(&id)?;
    let ticket = patch.ticket.map(ticket_reference).transpose()?;
    let current = state
        .store
        .get_remediation(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no remediation {id}")))?;
    let audit = NewAuditEvent {
        at: state.clock.now(),
        actor: caller.name.clone(),
        action: "remediation.ticket_set".into(),
        target: current.key_arn.clone(),
        detail: serde_json::json!({
            "remediation": id,
            "ticket": ticket,
            "previous": current.ticket,
        })
        .to_string(),
    };
    Ok(ApiJson(
        state
            .store
            .set_remediation_ticket(id, ticket.as_deref(), &audit)
            .await?,
    ))
}

/// Approves a pending remediation. Approver role; the requester can never approve (403). When
/// the fix removes cryptographic access from principals, `acknowledge_access_loss` must be true,
/// else 422 lists who would lose access.
#[utoipa::path(post, path = "/api/v1/remediations/{id}/approve", tag = "remediations",
    params(("id" = i64, Path, description = "Remediation id")),
    request_body(content = DecisionRequest, description = "optional"),
    responses((status = 200, body = RemediationRow), (status = 400, body = Problem, description = "malformed JSON or path"),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem, description = "remediation is not available, or AWS failed")))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<ApiOptionalJson<DecisionRequest>, ApiError>,
) -> ApiResult<RemediationRow> {
    caller.require(Role::Approver)?;
    // An empty body is no comment; the role is checked before the body is looked at.
    let ApiOptionalJson(request) = body?;
    let id = remediation_id(&id)?;
    let comment = text("comment", request.comment)?;
    Ok(ApiJson(
        service(&state)?
            .approve(id, &caller.name, comment, request.acknowledge_access_loss)
            .await?,
    ))
}

/// Rejects a pending or approved remediation; a comment is required. Approver role.
#[utoipa::path(post, path = "/api/v1/remediations/{id}/reject", tag = "remediations",
    params(("id" = i64, Path, description = "Remediation id")),
    request_body = DecisionRequest,
    responses((status = 200, body = RemediationRow), (status = 400, body = Problem, description = "malformed JSON or path"),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem, description = "remediation is not available in this process")))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<ApiOptionalJson<DecisionRequest>, ApiError>,
) -> ApiResult<RemediationRow> {
    caller.require(Role::Approver)?;
    // An empty body is no comment; the role is checked before the body is looked at.
    let ApiOptionalJson(request) = body?;
    let id = remediation_id(&id)?;
    let comment = text("comment", request.comment)?;
    Ok(ApiJson(
        service(&state)?.reject(id, &caller.name, comment).await?,
    ))
}

/// Applies an approved remediation with PutKeyPolicy, once, when `[remediation] mode = "apply"`.
/// The result is `applied`, `stale` (the policy changed since the proposal; nothing written) or
/// `failed`. Approver role.
#[utoipa::path(post, path = "/api/v1/remediations/{id}/apply", tag = "remediations",
    params(("id" = i64, Path, description = "Remediation id")),
    responses((status = 200, body = RemediationRow), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "not approved, or already applied"),
        (status = 422, body = Problem, description = "remediation is propose-only"),
        (status = 503, body = Problem, description = "remediation is not available, or AWS failed")))]
pub async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<RemediationRow> {
    caller.require(Role::Approver)?;
    let id = remediation_id(&id)?;
    Ok(ApiJson(service(&state)?.apply(id, &caller.name).await?))
}

/// Proposes the base policy of an applied remediation again, through the same approval gate.
/// Operator role.
#[utoipa::path(post, path = "/api/v1/remediations/{id}/rollback", tag = "remediations",
    params(("id" = i64, Path, description = "Remediation id")),
    request_body(content = DecisionRequest, description = "optional"),
    responses((status = 201, body = RemediationRow), (status = 400, body = Problem, description = "malformed JSON or path"),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
        (status = 503, body = Problem, description = "remediation is not available, or AWS failed")))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<ApiOptionalJson<DecisionRequest>, ApiError>,
) -> Result<(StatusCode, ApiJson<RemediationRow>), ApiError> {
    caller.require(Role::Operator)?;
    // An empty body is no comment; the role is checked before the body is looked at.
    let ApiOptionalJson(request) = body?;
    let id = remediation_id(&id)?;
    let ticket = optional_ticket(request.ticket)?;
    let comment = text("comment", request.comment)?;
    let (row, _) = service(&state)?
        .rollback(id, &caller.name, ticket, comment)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(row)))
}
