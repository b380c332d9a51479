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

use axum::routing::get;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
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
    paths(openapi_json),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The media type of every error body.
const PROBLEM_JSON: &str = "application/problem+json";

/// What every operation can answer without saying so itself: 405 on a path it does not take
/// that method on, 400 for a path parameter that is not valid (e.g. not UTF-8 once decoded);
/// and error bodies under the media type they are actually sent with.
struct CommonResponses;

impl CommonResponses {
    fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .filter_map(Option::as_mut)
    }
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.responses.insert(
            "MethodNotAllowed".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(
                        "The path does not take this method; `Allow` lists the ones it does",
                    )
                    .content(PROBLEM_JSON, problem())
                    .build(),
            ),
        );
        components.responses.insert(
            "InvalidPath".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(
                        "A path parameter is not valid (e.g. not UTF-8 once percent-decoded)",
                    )
                    .content(PROBLEM_JSON, problem())
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let parameterised = path.contains('{');
            for op in Self::operations(item) {
                let responses = &mut op.responses.responses;
                for response in responses.values_mut() {
                    // `body = Problem` is documented as application/json; it is sent as
                    // application/problem+json.
                    if let RefOr::T(r) = response
                        && r.content.get("application/json").is_some_and(|c| {
                            matches!(&c.schema, Some(RefOr::Ref(to)) if to.ref_location.ends_with("/Problem"))
                        })
                        && let Some(content) = r.content.shift_remove("application/json")
                    {
                        r.content.insert(PROBLEM_JSON.to_string(), content);
                    }
                }
                responses
                    .entry("405".into())
                    .or_insert_with(|| Ref::from_response_name("MethodNotAllowed").into());
                if parameterised {
                    responses
                        .entry("400".into())
                        .or_insert_with(|| Ref::from_response_name("InvalidPath").into());
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_json(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(doc.as_ref().clone())
}

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
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz))
        .routes(routes!(super::metrics))
        .routes(routes!(super::api_docs))
        .split_for_parts();
    // After the routes are in: a derive-time modifier would see none of their operations.
    let mut openapi = openapi;
    CommonResponses.modify(&mut openapi);
    let router = router.route(
        "/api/openapi.json",
        get(openapi_json).layer(Extension(Arc::new(openapi.clone()))),
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
