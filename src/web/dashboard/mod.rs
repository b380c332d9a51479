//! The team dashboard: server-rendered pages (askama) over the same store and services as the
//! API, signed in with an API token or a trusted proxy header, every form CSRF-protected.

mod access;
mod activity;
mod assets;
mod csrf;
mod findings;
mod form;
mod keys;
mod layout;
mod login;
mod overview;
mod policy_html;
mod remediations;
mod session;
mod settings;
pub mod trend;

use axum::Router;
use axum::extract::FromRef;
use axum::middleware;
use axum::routing::{get, post};
use std::sync::Arc;

use super::AppState;
use crate::config::{AccountConfig, AuthConfig, Config, RemediationConfig};

pub use layout::PageError;
pub use session::{SESSION_COOKIE, Viewer};

/// What the dashboard needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct DashboardSettings {
    /// Sessions, cookies, the trusted proxy header.
    pub auth: AuthConfig,
    /// The accounts as configured, for the settings page and fix previews.
    pub accounts: Vec<AccountConfig>,
    pub remediation: RemediationConfig,
}

impl DashboardSettings {
    /// The dashboard's part of `config`.
    pub fn from_config(config: &Config) -> Self {
        DashboardSettings {
            auth: config.auth.clone(),
            accounts: config.accounts.clone(),
            remediation: config.remediation.clone(),
        }
    }
}

/// The dashboard handlers' state: the application's, plus the dashboard settings.
#[derive(Clone)]
pub struct Dash {
    pub app: AppState,
    pub settings: Arc<DashboardSettings>,
    /// The overview's aggregates over every key, kept while the store's change marker stays.
    pub overview: Arc<overview::Cache>,
}

impl FromRef<Dash> for AppState {
    fn from_ref(dash: &Dash) -> AppState {
        dash.app.clone()
    }
}

impl Dash {
    /// The configured account `id`, or, without configuration, the remediation service's.
    fn account(&self, id: &str) -> Option<AccountConfig> {
        self.settings
            .accounts
            .iter()
            .chain(self.app.remediation.iter().flat_map(|r| r.accounts.iter()))
            .find(|a| a.id == id)
            .cloned()
    }
}

/// The dashboard's routes, with their state applied.
pub fn router(app: AppState, settings: Arc<DashboardSettings>) -> Router {
    let dash = Dash {
        app,
        settings,
        overview: Arc::default(),
    };
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/keys", get(keys::list))
        .route("/keys/{key}", get(keys::detail))
        .route("/keys/{key}/access", get(access::key_page))
        .route("/principals", get(access::lookup))
        .route("/principals/{arn}", get(access::principal_page))
        .route(
            "/keys/{key}/propose",
            get(keys::preview).post(keys::propose),
        )
        .route("/findings", get(findings::list))
        .route("/findings/{id}/waive", post(findings::waive))
        .route("/findings/{id}/unwaive", post(findings::unwaive))
        .route("/remediations", get(remediations::list))
        .route("/remediations/{id}", get(remediations::detail))
        .route("/remediations/{id}/{action}", post(remediations::act))
        .route("/sync", get(activity::sync_page).post(activity::sync_now))
        .route("/audit", get(activity::audit_page))
        .route("/settings", get(settings::page))
        .route("/settings/tokens", post(settings::create_token))
        .route("/settings/tokens/revoke", post(settings::revoke_token))
        .route("/logout", post(login::logout))
        .route_layer(middleware::from_fn_with_state(
            dash.clone(),
            session::require_viewer,
        ));
    Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/static/{*path}", get(assets::serve))
        .merge(pages)
        .layer(middleware::from_fn(layout::htmx_errors))
        .with_state(dash)
}
