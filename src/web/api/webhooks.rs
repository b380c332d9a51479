//! `GET /webhooks/deliveries`: what was sent to the configured webhooks, and how it went.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, Page, Paging};
use crate::store::DeliveryRow;
use crate::web::AppState;
use crate::web::auth::Caller;
use crate::web::error::{ApiError, ApiJson, ApiQuery, Problem};

/// One event's delivery to one webhook.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `X-Keyward-Delivery` idempotency id, the same on every attempt.
    pub id: String,
    /// The webhook's URL without credentials, query or fragment (where secrets are put).
    pub webhook: String,
    /// e.g. `finding.opened`.
    pub event: String,
    /// `pending` (not yet delivered; retried), `delivered`, or `failed` (given up).
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(d: DeliveryRow) -> Self {
        DeliveryView {
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            id: d.id,
            webhook: public_url(&d.webhook),
            event: d.event,
            status: d.status,
            attempts: d.attempts,
            created_at: d.created_at,
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at,
        }
    }
}

/// A receiver URL as viewers may see it: user, password, query and fragment dropped (tokens
/// are sent there); the path stays, since it tells receivers apart.
fn public_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) => {
            // Both fail only for URLs that cannot have credentials (e.g. `mailto:`).
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// Filters of `GET /webhooks/deliveries`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`; every status when absent.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Webhook deliveries, oldest first. Any role: deliveries carry no secrets, and the receivers'
/// URLs are what a ticketing integration needs to see to debug itself.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "webhooks", params(DeliveryQuery),
    responses((status = 200, body = Page<DeliveryView>), (status = 400, body = Problem),
        (status = 401, body = Problem)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Page<DeliveryView>> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s @ ("pending" | "delivered" | "failed")) => Some(s),
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "status must be pending, delivered or failed, not {s:?}"
            )));
        }
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = paging.limit()?;
    let after = paging.id_cursor()?;
    let (rows, total) = state.store.query_deliveries(status, after, limit).await?;
    Ok(ApiJson(Page::of(
        rows,
        total,
        limit,
        |d| d.seq.to_string(),
        DeliveryView::from,
    )))
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn receiver_urls_lose_their_secrets() {
        assert_eq!(
            public_url("https://bot:s3cret@tickets.example.com/hooks/keyward?token=abc#x"),
            "https://tickets.example.com/hooks/keyward"
        );
        assert_eq!(
            public_url("http://127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/hook"
        );
        assert_eq!(public_url("not a url"), "(not a URL)");
    }
}
