//! The HTTP server: router, shared state, middleware and the operational endpoints.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{NewAuditEvent, Store, SyncRunRow};
use crate::sync::{Due, SyncError, SyncService, Target};
use auth::Caller;
use error::{ApiError, Problem};

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Starts sync passes on request; `None` on a server that does not sync.
    pub sync: Option<Arc<SyncTrigger>>,
    /// Approval-gated remediation; `None` answers its write endpoints with 503.
    pub remediation: Option<Arc<crate::remediation::RemediationService>>,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
}

/// Starts at most one API-requested sync pass at a time, in the background.
pub struct SyncTrigger {
    service: Arc<SyncService>,
    targets: Vec<Target>,
    running: Arc<AtomicBool>,
}

impl SyncTrigger {
    /// A trigger for passes over `targets`.
    pub fn new(service: Arc<SyncService>, targets: Vec<Target>) -> Self {
        SyncTrigger {
            service,
            targets,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while a pass started here is running.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Starts a pass unless one started here is running; false when one was. Passes of one
    /// process run one at a time, so a pass the scheduler is running finishes first.
    pub fn start(&self) -> bool {
        if self.running.swap(true, Ordering::SeqCst) {
            return false;
        }
        let service = self.service.clone();
        let targets = self.targets.clone();
        let running = self.running.clone();
        tokio::spawn(async move {
            match service.run_pass(&targets, None, Due::Always).await {
                Ok(_) => {}
                Err(e @ (SyncError::Abandoned | SyncError::ShuttingDown)) => {
                    tracing::info!(reason = %e, "requested sync pass stopped by shutdown")
                }
                Err(e) => tracing::error!(error = %e, "requested sync pass could not run"),
            }
            running.store(false, Ordering::SeqCst);
        });
        true
    }
}

/// Appends to the audit log; a mutation whose audit entry cannot be written must not happen.
pub async fn record_audit(
    state: &AppState,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    state
        .store
        .append_audit(&NewAuditEvent {
            at: state.clock.now(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
        })
        .await?;
    Ok(())
}

/// The application's routes with default dashboard settings (no configured accounts, default
/// `[auth]`): what tests and tools that build an [`AppState`] by hand get.
pub fn build_app(state: AppState) -> Router {
    build_app_with(state, dashboard::DashboardSettings::default())
}

/// The application's routes: the API, the dashboard (configured by `dashboard`) and the
/// operational endpoints.
pub fn build_app_with(state: AppState, dashboard: dashboard::DashboardSettings) -> Router {
    // The API router also carries the operational endpoints, so the OpenAPI document lists them.
    let (api, _) = api::router();
    let pages = dashboard::router(state.clone(), Arc::new(dashboard));
    Router::new()
        .merge(api)
        // Only the API's routes: the dashboard answers its own wrong methods.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(pages)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(security_headers))
}

/// The offline API reference: a page (with its script and style under `/static/`) that renders
/// `/api/openapi.json`.
#[utoipa::path(get, path = "/api/docs", tag = "operations", security(()),
    responses((status = 200, description = "The API reference page", content_type = "text/html")))]
async fn api_docs() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../static/api-docs.html"),
    )
        .into_response()
}

/// Unknown paths: a problem document for the API and scripts, an HTML page for browsers.
async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html && !path.starts_with("/api/") {
        return dashboard::PageError::NotFound(format!("There is no page at {path}."))
            .into_response();
    }
    ApiError::NotFound(format!("no route for {} {}", request.method(), path)).into_response()
}

/// A path the API has, with a method it does not take; the router adds `Allow`.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}; the Allow header lists the methods that are",
        uri.path()
    ))
}

/// Scripts and styles only from this server (no inline code, no CDN), nothing framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers every response carries: no sniffing, no framing, no referrer leaks.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // same-origin: the dashboard's CSRF check falls back to Referer when a browser omits Origin.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Serves `app` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Body of `/readyz`.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ok` or `unreachable`.
    database: &'static str,
    /// The last sync run of each account·region.
    #[schema(value_type = Vec<Object>)]
    last_sync: Vec<SyncRunRow>,
}

/// Ready when the database answers; the last run per account·region shows how fresh data is.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness, description = "the database does not answer")))]
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Readiness {
                database: "unreachable",
                last_sync: Vec::new(),
            }),
        )
            .into_response();
    }
    let last_sync = state.store.latest_sync_runs().await.unwrap_or_default();
    axum::Json(Readiness {
        database: "ok",
        last_sync,
    })
    .into_response()
}

/// Prometheus metrics (OpenMetrics text); needs a token unless `auth.metrics_public`.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = [])),
    responses((status = 200, description = "OpenMetrics text", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, body = Problem, description = "a token is required (`auth.metrics_public = false`)")))]
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if !state.metrics_public {
        let (mut parts, _) = request.into_parts();
        use axum::extract::FromRequestParts;
        if let Err(e) = Caller::from_request_parts(&mut parts, &state).await {
            return e.into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
