//! `POST /sync` (start a pass now) and `GET /sync/runs`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::{Ack, ApiResult, SyncRunView};
use crate::web::auth::{Caller, Role};
use crate::web::error::{ApiError, ApiJson, ApiQuery, Problem};
use crate::web::{AppState, record_audit};

/// Starts a sync pass over every configured account·region in the background.
#[utoipa::path(post, path = "/api/v1/sync", tag = "sync",
    responses((status = 202, body = Ack), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "a pass started through the API is still running"),
        (status = 503, body = Problem, description = "this server does not sync")))]
pub async fn trigger_sync(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, ApiJson<Ack>), ApiError> {
    caller.require(Role::Operator)?;
    let trigger = state
        .sync
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this server has no sync configured".into()))?;
    if trigger.is_running() {
        return Err(ApiError::Conflict(
            "a sync pass started through the API is still running".into(),
        ));
    }
    record_audit(
        &state,
        &caller.name,
        "sync.triggered",
        "all accounts",
        serde_json::json!({}),
    )
    .await?;
    if !trigger.start() {
        return Err(ApiError::Conflict(
            "a sync pass started through the API is still running".into(),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Ack {
            status: "started".into(),
        }),
    ))
}

/// Parameters of `GET /sync/runs`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// How many of the newest runs, 1–500 (default 100).
    pub limit: Option<u32>,
}

/// The newest sync runs first.
#[utoipa::path(get, path = "/api/v1/sync/runs", tag = "sync", params(RunQuery),
    responses((status = 200, body = Vec<SyncRunView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn sync_runs(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> ApiResult<Vec<SyncRunView>> {
    let limit = super::Paging {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let runs = state.store.recent_sync_runs(limit).await?;
    Ok(ApiJson(runs.into_iter().map(SyncRunView::from).collect()))
}
