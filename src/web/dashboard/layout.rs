//! What every page shares: the frame (navigation, who is signed in), the HTML error page, and
//! small formatting helpers for templates.

use askama::Template;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};

use super::session::Viewer;
use crate::remediation::RemediationError;
use crate::store::StoreError;
use crate::web::auth::Role;
use crate::web::error::ApiError;

/// The frame of a page: the active tab and the signed-in person.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The navigation tab to mark current.
    pub active: &'static str,
    /// `None` on the error and sign-in pages of a stranger.
    pub actor: Option<String>,
    pub role: String,
    /// The session's CSRF token, for forms and htmx's `X-CSRF-Token`.
    pub csrf: String,
}

impl Layout {
    pub fn new(viewer: &Viewer, active: &'static str) -> Self {
        Layout {
            active,
            actor: Some(viewer.actor.clone()),
            role: viewer.role.to_string(),
            csrf: viewer.csrf.clone(),
        }
    }

    /// The JSON of htmx's `hx-headers` on `<body>`: every htmx request carries the token.
    pub fn hx_headers(&self) -> String {
        serde_json::json!({ "X-CSRF-Token": self.csrf }).to_string()
    }

    /// `aria-current` for the tab `name`.
    pub fn current(&self, name: &str) -> &'static str {
        if self.active == name { "page" } else { "false" }
    }
}

/// What a dashboard request answers instead of its page: an HTML error page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The cause is logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl PageError {
    /// 403 for a role below `needed`.
    pub fn role(needed: Role, has: Role) -> Self {
        PageError::Forbidden(format!(
            "This needs the {needed} role; you are signed in as {has}."
        ))
    }

    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    title: &'a str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(cause = %cause, "dashboard request failed");
        }
        let (status, title) = self.status();
        let page = ErrorPage {
            layout: Layout::default(),
            status: status.as_u16(),
            title,
            message: self.to_string(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "the error page could not be rendered");
                (status, title).into_response()
            }
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(format!("{what} does not exist.")),
            StoreError::Conflict(what) => Self::Conflict(what),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) | ApiError::Unprocessable(m) | ApiError::Declined(m) => {
                Self::BadRequest(m)
            }
            ApiError::Forbidden { .. } | ApiError::Refused(_) | ApiError::Unauthorized => {
                Self::Forbidden(e.to_string())
            }
            ApiError::NotFound(m) => Self::NotFound(m),
            ApiError::Conflict(m) => Self::Conflict(m),
            ApiError::Unavailable(m) => Self::Unavailable(m),
            ApiError::Internal(m) => Self::Internal(m),
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl From<RemediationError> for PageError {
    fn from(e: RemediationError) -> Self {
        match e {
            RemediationError::NotFound(m) => Self::NotFound(m),
            RemediationError::Refused(m) => Self::BadRequest(m),
            RemediationError::Forbidden(m) => Self::Forbidden(m),
            RemediationError::Conflict(m) => Self::Conflict(m),
            RemediationError::Aws(e) => Self::Unavailable(format!("AWS: {e}")),
            RemediationError::Store(e) => Self::from(e),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(format!("template: {e}"))
    }
}

/// A handler's result.
pub type PageResult = Result<Response, PageError>;

/// Renders a page.
pub fn render<T: Template>(page: &T) -> PageResult {
    Ok(Html(page.render()?).into_response())
}

/// True for a request htmx sent (it then gets a fragment, not a page).
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// The answer to a plain form POST: back to `to` (303, so the browser GETs it).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Error pages asked for by htmx are swapped into the page's notice area instead of replacing
/// the element the action targeted.
pub async fn htmx_errors(request: Request, next: Next) -> Response {
    let htmx = is_htmx(request.headers());
    let mut response = next.run(request).await;
    if htmx && (response.status().is_client_error() || response.status().is_server_error()) {
        let h = response.headers_mut();
        h.insert("hx-retarget", HeaderValue::from_static("#notice"));
        h.insert("hx-reswap", HeaderValue::from_static("innerHTML"));
        h.insert("hx-reselect", HeaderValue::from_static("#error-box"));
    }
    if htmx {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("HX-Request"));
    }
    response
}

/// `2025-01-31 14:05 UTC`.
pub fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// [`when`] of an optional time, `—` for none.
pub fn when_opt(at: &Option<DateTime<Utc>>) -> String {
    at.as_ref().map(when).unwrap_or_else(|| "—".to_string())
}

/// A percentage with one decimal; 100 for nothing to judge.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "100".to_string();
    }
    let p = (part as f64 * 1000.0 / whole as f64).round() / 10.0;
    format!("{p}")
}

/// Percent-encodes a value for a URL query or path segment.
pub fn enc(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A query string (`?a=1&b=2`) of the non-empty pairs; empty when there are none.
pub fn query(pairs: &[(&str, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The dashboard path of a key: its ARN, percent-encoded.
pub fn key_href(arn: &str) -> String {
    format!("/keys/{}", enc(arn))
}

/// A filter value from a query string: trimmed, empty means none.
pub fn opt(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Checks a rule id filter.
pub fn check_rule(rule: &Option<String>) -> Result<Option<String>, PageError> {
    match opt(rule) {
        None => Ok(None),
        Some(r) => {
            let upper = r.to_ascii_uppercase();
            upper
                .parse::<crate::policy::RuleId>()
                .map(|_| Some(upper))
                .map_err(|_| PageError::BadRequest(format!("There is no rule {r:?}.")))
        }
    }
}

/// Checks a severity filter.
pub fn check_severity(severity: &Option<String>) -> Result<Option<String>, PageError> {
    match opt(severity).as_deref() {
        None => Ok(None),
        Some(s @ ("critical" | "high" | "medium" | "low" | "info")) => Ok(Some(s.to_string())),
        Some(s) => Err(PageError::BadRequest(format!(
            "Severity must be critical, high, medium, low or info, not {s:?}."
        ))),
    }
}

/// Every rule id, for filter menus.
pub fn rule_ids() -> Vec<&'static str> {
    crate::policy::RuleId::ALL
        .iter()
        .map(|r| r.as_str())
        .collect()
}

/// Every severity, most severe first.
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];
