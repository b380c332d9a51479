//! Keys, their policies and history, and findings.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{
    ApiResult, FindingView, GrantView, KeyDetail, KeyView, Page, Paging, PolicyVersionView,
    PolicyView,
};
use crate::policy::Policy;
use crate::policy::diff::diff;
use crate::store::{FindingFilter, KeyFilter, KeyRow};
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};

/// Filters of `GET /keys`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// Account id.
    pub account: Option<String>,
    pub region: Option<String>,
    /// Keys with an open finding of this rule id, e.g. KMS-DELEGATION.
    pub rule: Option<String>,
    /// Keys with an open finding of this severity.
    pub severity: Option<String>,
    /// `live` (default; `open` is the same): keys still in AWS; `deleted`: keys gone from AWS;
    /// `all`: both.
    pub status: Option<String>,
    pub compliant: Option<bool>,
    /// Substring of the ARN, key id, description, an alias or a tag.
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn check_rule(rule: &Option<String>) -> Result<(), ApiError> {
    if let Some(r) = rule
        && r.parse::<crate::policy::RuleId>().is_err()
    {
        return Err(ApiError::BadRequest(format!("unknown rule id {r:?}")));
    }
    Ok(())
}

fn check_severity(severity: &Option<String>) -> Result<(), ApiError> {
    match severity.as_deref() {
        None | Some("critical" | "high" | "medium" | "low" | "info") => Ok(()),
        Some(s) => Err(ApiError::BadRequest(format!(
            "severity must be critical, high, medium, low or info, not {s:?}"
        ))),
    }
}

/// Keys, filtered, in ARN order.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(KeyQuery),
    responses((status = 200, body = Page<KeyView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_keys(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult<Page<KeyView>> {
    check_rule(&q.rule)?;
    check_severity(&q.severity)?;
    let (include_deleted, deleted_only) = match q.status.as_deref() {
        None | Some("open") | Some("live") => (false, false),
        Some("all") => (true, false),
        Some("deleted") => (true, true),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "status must be live (or open: keys still in AWS), deleted (keys gone from AWS) or all, not {s:?}"
            )));
        }
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = paging.limit()?;
    let after = paging.text_cursor()?;
    let filter = KeyFilter {
        account: q.account,
        region: q.region,
        rule: q.rule.map(|r| r.to_ascii_uppercase()),
        severity: q.severity,
        compliant: q.compliant,
        q: q.q.filter(|s| !s.is_empty()),
        include_deleted,
        deleted_only,
    };
    let (rows, total) = state
        .store
        .query_keys(&filter, after.as_deref(), limit)
        .await?;
    Ok(ApiJson(Page::of(
        rows,
        total,
        limit,
        |k| k.key.arn.clone(),
        KeyView::from,
    )))
}

/// The one key `{key}` names: a key id or an ARN (percent-encoded in the path).
pub(super) async fn resolve_key(state: &AppState, key: &str) -> Result<KeyRow, ApiError> {
    let mut found = state.store.find_keys(key).await?;
    match found.len() {
        0 => Err(ApiError::NotFound(format!("no key {key:?}"))),
        1 => Ok(found.remove(0)),
        _ => Err(ApiError::Conflict(format!(
            "{key:?} names a multi-Region key in {} Regions; use its ARN",
            found.len()
        ))),
    }
}

/// A key with its tags, grants and current findings.
#[utoipa::path(get, path = "/api/v1/keys/{key}", tag = "keys",
    params(("key" = String, Path, description = "Key id or percent-encoded key ARN")),
    responses((status = 200, body = KeyDetail), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn key_detail(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<KeyDetail> {
    let row = resolve_key(&state, &key).await?;
    let filter = FindingFilter {
        key_arn: Some(row.key.arn.clone()),
        status: Some("current".into()),
        ..FindingFilter::default()
    };
    let (findings, _) = state
        .store
        .query_findings(&filter, None, super::MAX_LIMIT)
        .await?;
    let record = row.key.clone();
    Ok(ApiJson(KeyDetail {
        key: KeyView::from(row),
        multi_region: record.multi_region,
        origin: record.origin,
        creation_date: record.creation_date,
        deletion_date: record.deletion_date,
        tags: record.tags,
        grants: record.grants.into_iter().map(GrantView::from).collect(),
        metadata: record.metadata,
        findings: findings.into_iter().map(FindingView::from).collect(),
    }))
}

/// The key's current policy; `ETag` is its SHA-256, and `If-None-Match` answers 304.
#[utoipa::path(get, path = "/api/v1/keys/{key}/policy", tag = "keys",
    params(("key" = String, Path, description = "Key id or percent-encoded key ARN")),
    responses((status = 200, body = PolicyView, headers(("ETag" = String))), (status = 304),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn key_policy(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let row = resolve_key(&state, &key).await?;
    let versions = state.store.policy_versions(&row.key.arn).await?;
    let current = row
        .policy_sha256
        .as_deref()
        .and_then(|sha| versions.iter().rev().find(|v| v.sha256 == sha))
        .ok_or_else(|| match &row.policy_error {
            Some(e) => ApiError::NotFound(format!(
                "the policy of {} could not be read: {e}",
                row.key.arn
            )),
            None => ApiError::NotFound(format!("no policy is stored for {}", row.key.arn)),
        })?;
    let etag = format!("\"{}\"", current.sha256);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let view = PolicyView {
        key_arn: row.key.arn.clone(),
        sha256: current.sha256.clone(),
        text: current.text.clone(),
        first_seen: current.first_seen,
        last_seen: current.last_seen,
    };
    Ok(([(header::ETAG, etag_value)], ApiJson(view)).into_response())
}

/// Every stored version of the key's policy, newest first, each with its diff from the one before.
#[utoipa::path(get, path = "/api/v1/keys/{key}/history", tag = "keys",
    params(("key" = String, Path, description = "Key id or percent-encoded key ARN")),
    responses((status = 200, body = Vec<PolicyVersionView>), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn key_history(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Vec<PolicyVersionView>> {
    let row = resolve_key(&state, &key).await?;
    let versions = state.store.policy_versions(&row.key.arn).await?;
    let mut out = Vec::with_capacity(versions.len());
    let mut previous: Option<Policy> = None;
    for v in versions {
        let parsed = Policy::parse(&v.text).ok();
        let change = match (&previous, &parsed) {
            (Some(before), Some(after)) => Some(diff(before, after)),
            _ => None,
        };
        out.push(PolicyVersionView {
            diff: change.as_ref().and_then(|d| serde_json::to_value(d).ok()),
            diff_text: change.as_ref().map(|d| d.render_text()),
            sha256: v.sha256,
            text: v.text,
            first_seen: v.first_seen,
            last_seen: v.last_seen,
        });
        previous = parsed;
    }
    out.reverse();
    Ok(ApiJson(out))
}

/// Filters of `GET /findings`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindingQuery {
    pub account: Option<String>,
    pub region: Option<String>,
    /// Rule id, e.g. KMS-DELEGATION.
    pub rule: Option<String>,
    pub severity: Option<String>,
    /// `open` (default), `resolved`, `waived` or `all`.
    pub status: Option<String>,
    /// Key ARN.
    pub key: Option<String>,
    /// Substring of the key ARN, key id, description, an alias, a tag, or the message.
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Findings, filtered, oldest first.
#[utoipa::path(get, path = "/api/v1/findings", tag = "findings", params(FindingQuery),
    responses((status = 200, body = Page<FindingView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_findings(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<FindingQuery>,
) -> ApiResult<Page<FindingView>> {
    check_rule(&q.rule)?;
    check_severity(&q.severity)?;
    let status = match q.status.as_deref() {
        None | Some("open") => Some("open".to_string()),
        Some("all") => None,
        Some(s @ ("resolved" | "waived")) => Some(s.to_string()),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "status must be open, resolved, waived or all, not {s:?}"
            )));
        }
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = paging.limit()?;
    let after = paging.id_cursor()?;
    let filter = FindingFilter {
        account: q.account,
        region: q.region,
        rule: q.rule.map(|r| r.to_ascii_uppercase()),
        severity: q.severity,
        status,
        key_arn: q.key,
        q: q.q.filter(|s| !s.is_empty()),
    };
    let (rows, total) = state.store.query_findings(&filter, after, limit).await?;
    Ok(ApiJson(Page::of(
        rows,
        total,
        limit,
        |f| f.id.to_string(),
        FindingView::from,
    )))
}
