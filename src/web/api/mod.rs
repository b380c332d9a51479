//! The REST API under `/api/v1`: JSON for ticketing systems and scripts, described by an
//! OpenAPI 3.1 document generated from these handlers.

mod access;
mod audit;
mod keys;
mod remediations;
mod reports;
mod summary;
mod sync;
mod views;
mod waivers;
mod webhooks;

use axum::Router;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiJson, Problem};

pub use access::SCOPE;
pub use views::*;
pub use waivers::{MAX_REASON_CHARS, MAX_WAIVER_MONTHS};

/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;
/// The page size when the client does not say.
pub const DEFAULT_LIMIT: u32 = 100;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keyward API",
        description = "Keyward keeps IAM out of AWS KMS keys. Every error is an RFC 9457 application/problem+json document.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and their OpenAPI document.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(summary::summary))
        .routes(routes!(summary::accounts))
        .routes(routes!(keys::list_keys))
        .routes(routes!(keys::key_detail))
        .routes(routes!(keys::key_policy))
        .routes(routes!(keys::key_history))
        .routes(routes!(access::key_access))
        .routes(routes!(access::principal_keys))
        .routes(routes!(keys::list_findings))
        .routes(routes!(sync::trigger_sync))
        .routes(routes!(sync::sync_runs))
        .routes(routes!(audit::list_audit))
        .routes(routes!(reports::compliance_report))
        .routes(routes!(waivers::finding_detail, waivers::patch_finding))
        .routes(routes!(waivers::waive_finding, waivers::unwaive_finding))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(
            remediations::propose,
            remediations::list_remediations
        ))
        .routes(routes!(
            remediations::get_remediation,
            remediations::patch_remediation
        ))
        .routes(routes!(remediations::approve))
        .routes(routes!(remediations::reject))
        .routes(routes!(remediations::apply))
        .routes(routes!(remediations::rollback))
        .split_for_parts();
    let openapi_json = openapi.clone();
    let router = router.route(
        "/api/openapi.json",
        get(move || {
            let doc = openapi_json.clone();
            async move { axum::Json(doc) }
        }),
    );
    (router, openapi)
}

/// Paging parameters of every collection.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// Page size, 1–500 (default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Paging {
    /// The page size, checked.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {n}"
            ))),
        }
    }
}

impl Paging {
    /// The cursor as the text key it encodes (`None` on the first page).
    pub fn text_cursor(&self) -> Result<Option<String>, ApiError> {
        self.cursor.as_deref().map(decode_cursor).transpose()
    }

    /// The cursor as the numeric id it encodes (`None` on the first page).
    pub fn id_cursor(&self) -> Result<Option<i64>, ApiError> {
        self.text_cursor()?
            .map(|c| c.parse::<i64>().map_err(|_| bad_cursor()))
            .transpose()
    }
}

fn bad_cursor() -> ApiError {
    ApiError::BadRequest("cursor is not one this API returned".into())
}

impl<T: ToSchema> Page<T> {
    /// A page of `rows` fetched with `limit`: a full page gets a `next_cursor` made from the last
    /// row's sort key, a short one is the last.
    pub fn of<R>(
        rows: Vec<R>,
        total: u64,
        limit: u32,
        sort_key: impl Fn(&R) -> String,
        view: impl Fn(R) -> T,
    ) -> Self {
        let next_cursor = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| encode_cursor(&sort_key(r))))
            .flatten();
        Page {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
            total,
        }
    }
}

/// One page of a collection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Matches of the filter across all pages.
    pub total: u64,
}

/// Cursors are opaque to clients: the hex of the last item's sort key.
pub fn encode_cursor(key: &str) -> String {
    hex::encode(key.as_bytes())
}

/// Decodes a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad_cursor)
}

/// `{"status": …}` acknowledgements.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ack {
    pub status: String,
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<ApiJson<T>, ApiError>;
