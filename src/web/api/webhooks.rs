//! `GET /webhooks/deliveries`: what was sent to the configured webhooks, and how it went.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, Page, Paging};
use crate::store::DeliveryRow;
use crate::web::AppState;
use crate::web::auth::{Caller, Role};
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

impl DeliveryView {
    /// The delivery as `role` may see it: see [`public_url`].
    fn of(d: DeliveryRow, role: Role) -> Self {
        DeliveryView {
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            id: d.id,
            webhook: public_url(&d.webhook, role >= Role::Operator),
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

/// A receiver URL as callers may see it: user, password, query and fragment are always dropped
/// (tokens are sent there). The path is shown only with `with_path` (operators and above):
/// chat webhooks (Slack, Teams, Discord) carry their secret in the path, and viewers need only
/// the receiver's origin.
fn public_url(raw: &str, with_path: bool) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) => {
            // Both fail only for URLs that cannot have credentials (e.g. `mailto:`).
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            if !with_path && url.path() != "/" {
                url.set_path("/...");
            }
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
    caller: Caller,
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
        |d| DeliveryView::of(d, caller.role),
    )))
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn receiver_urls_lose_their_secrets() {
        for with_path in [true, false] {
            let shown = public_url(
                "https://bot:s3cret@tickets.example.com/hooks/keyward?token=abc#x",
                with_path,
            );
            assert!(
                !shown.contains("s3cret") && !shown.contains("token"),
                "{shown}"
            );
            assert_eq!(public_url("not a url", with_path), "(not a URL)");
        }
        assert_eq!(
            public_url(
                "https://bot:s3cret@tickets.example.com/hooks/keyward?token=abc#x",
                true
            ),
            "https://tickets.example.com/hooks/keyward"
        );
        assert_eq!(
            public_url("http://127.0.0.1:9000/hook", true),
            "http://127.0.0.1:9000/hook"
        );
        // A chat webhook's secret is its path: viewers see the origin only.
        let slack = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        assert_eq!(public_url(slack, false), "https://hooks.slack.com/...");
        assert_eq!(
            public_url("http://127.0.0.1:9000/", false),
            "http://127.0.0.1:9000/"
        );
    }
}
