//! `POST /sync` (start a pass now) and `GET /sync/runs`.

use axum::extract::State;
use axum::http::StatusCode;

use super::{Ack, ApiResult, Page, Paging, SyncRunView};
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
    if !trigger.start() {
        return Err(ApiError::Conflict(
            "a sync pass started through the API is still running".into(),
        ));
    }
    // Audited once the pass has started: a refused trigger changed nothing, so it leaves no
    // entry. Should the entry fail to write, the caller sees the error; the pass only reads AWS.
    record_audit(
        &state,
        &caller.name,
        "sync.triggered",
        "all accounts",
        serde_json::json!({}),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Ack {
            status: "started".into(),
        }),
    ))
}

/// Sync runs, newest first.
#[utoipa::path(get, path = "/api/v1/sync/runs", tag = "sync", params(Paging),
    responses((status = 200, body = Page<SyncRunView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn sync_runs(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Page<SyncRunView>> {
    let limit = paging.limit()?;
    let before = paging.id_cursor()?;
    let (runs, total) = state.store.sync_runs_page(before, limit).await?;
    Ok(ApiJson(Page::of(
        runs,
        total,
        limit,
        |r| r.id.to_string(),
        SyncRunView::from,
    )))
}
