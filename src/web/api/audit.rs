//! `GET /audit`: the hash-chained audit log, newest first.

use axum::extract::State;

use super::{ApiResult, AuditView, Page, Paging};
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiJson, ApiQuery, Problem};

/// Audit log entries, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(Paging),
    responses((status = 200, body = Page<AuditView>), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn list_audit(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Page<AuditView>> {
    let limit = paging.limit()?;
    let before = paging.id_cursor()?;
    let (rows, total) = state.store.list_audit(before, limit).await?;
    Ok(ApiJson(Page::of(
        rows,
        total,
        limit,
        |e| e.id.to_string(),
        AuditView::from,
    )))
}
