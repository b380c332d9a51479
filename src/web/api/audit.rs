//! `GET /audit`: the hash-chained audit log, newest first.

use axum::extract::State;

use super::{ApiResult, AuditView, Page, Paging, decode_cursor, encode_cursor};
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiError, ApiJson, ApiQuery, Problem};

/// Audit log entries, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(Paging),
    responses((status = 200, body = Page<AuditView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Page<AuditView>> {
    let limit = paging.limit()?;
    let before = paging
        .cursor
        .as_deref()
        .map(decode_cursor)
        .transpose()?
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("cursor is not one this API returned".into()))
        })
        .transpose()?;
    let (rows, total) = state.store.list_audit(before, limit).await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|e| encode_cursor(&e.id.to_string())))
        .flatten();
    Ok(ApiJson(Page {
        items: rows.into_iter().map(AuditView::from).collect(),
        next_cursor,
        total,
    }))
}
