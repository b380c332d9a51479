//! `/settings`: the accounts as configured, and API tokens for admins (a new token's secret is
//! shown once, on the page that answers its creation).

use askama::Template;
use axum::Extension;
use axum::extract::State;

use super::Dash;
use super::form::FormData;
use super::layout::{Layout, PageError, PageResult, render, see_other, when, when_opt};
use super::session::Viewer;
use crate::config::RemediationMode;
use crate::store::NewToken;
use crate::web::auth::{Role, new_token_secret, token_hash};
use crate::web::record_audit;

pub struct AccountItem {
    pub id: String,
    pub name: String,
    pub regions: String,
    pub role_arn: String,
    pub key_admins: Vec<String>,
    pub auditor: String,
    pub remediator: String,
    pub trusted: String,
}

pub struct TokenItem {
    pub name: String,
    pub role: String,
    pub created: String,
    pub last_used: String,
    pub revoked: Option<String>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    accounts: Vec<AccountItem>,
    mode: &'static str,
    required_approvals: u32,
    tokens: Vec<TokenItem>,
    is_admin: bool,
    /// A token just created: `(name, secret)`, shown this once.
    created: Option<(String, String)>,
    session_ttl: String,
    proxy_header: String,
}

async fn page_with(dash: &Dash, viewer: &Viewer, created: Option<(String, String)>) -> PageResult {
    let mut accounts: Vec<AccountItem> = dash
        .settings
        .accounts
        .iter()
        .map(|a| AccountItem {
            id: a.id.clone(),
            name: a.display_name().to_string(),
            regions: a.regions.join(", "),
            role_arn: a
                .role_arn
                .clone()
                .unwrap_or_else(|| "default credentials".into()),
            key_admins: a.key_admins.clone(),
            auditor: a.auditor.clone().unwrap_or_default(),
            remediator: a.remediator.clone().unwrap_or_default(),
            trusted: a.trusted_accounts.join(", "),
        })
        .collect();
    if accounts.is_empty() {
        // No configuration handed to the dashboard: the accounts the store knows.
        accounts = dash
            .app
            .store
            .list_accounts()
            .await?
            .into_iter()
            .map(|a| AccountItem {
                regions: a.regions.join(", "),
                id: a.id,
                name: a.name,
                role_arn: String::new(),
                key_admins: Vec::new(),
                auditor: String::new(),
                remediator: String::new(),
                trusted: String::new(),
            })
            .collect();
    }
    let is_admin = viewer.can(Role::Admin);
    let tokens = if is_admin {
        dash.app
            .store
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| TokenItem {
                created: when(&t.created_at),
                last_used: when_opt(&t.last_used_at),
                revoked: t.revoked_at.as_ref().map(when),
                name: t.name,
                role: t.role,
            })
            .collect()
    } else {
        Vec::new()
    };
    let config = dash
        .app
        .remediation
        .as_ref()
        .map_or(&dash.settings.remediation, |s| &s.config);
    render(&SettingsPage {
        layout: Layout::new(viewer, "settings"),
        accounts,
        mode: match config.mode {
            RemediationMode::ProposeOnly => "propose-only",
            RemediationMode::Apply => "apply",
        },
        required_approvals: config.required_approvals,
        tokens,
        is_admin,
        created,
        session_ttl: humantime::format_duration(dash.settings.auth.session_ttl).to_string(),
        proxy_header: dash.settings.auth.proxy_header.clone().unwrap_or_default(),
    })
}

/// `GET /settings`.
pub async fn page(State(dash): State<Dash>, Extension(viewer): Extension<Viewer>) -> PageResult {
    page_with(&dash, &viewer, None).await
}

/// `POST /settings/tokens`: creates a token and shows its secret once. Admin role.
pub async fn create_token(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<FormData>,
) -> PageResult {
    viewer.require(Role::Admin)?;
    let name = form
        .get("name")
        .ok_or_else(|| PageError::BadRequest("Give the token a name.".into()))?
        .to_string();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(PageError::BadRequest(
            "A token name is at most 100 characters, without control characters.".into(),
        ));
    }
    let role: Role = form
        .get("role")
        .unwrap_or("viewer")
        .parse()
        .map_err(|e: String| PageError::BadRequest(e))?;
    let secret = new_token_secret();
    let row = dash
        .app
        .store
        .create_token(&NewToken {
            name: name.clone(),
            role: role.as_str().to_string(),
            sha256: token_hash(&secret),
            created_at: dash.app.clock.now(),
        })
        .await?;
    record_audit(
        &dash.app,
        &viewer.actor,
        "token.created",
        &row.name,
        serde_json::json!({ "role": row.role }),
    )
    .await?;
    page_with(&dash, &viewer, Some((row.name, secret))).await
}

/// `POST /settings/tokens/revoke`: revokes the token `name`; its sessions end. Admin role.
pub async fn revoke_token(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<FormData>,
) -> PageResult {
    viewer.require(Role::Admin)?;
    let name = form
        .get("name")
        .ok_or_else(|| PageError::BadRequest("Which token?".into()))?;
    let row = dash
        .app
        .store
        .revoke_token(name, dash.app.clock.now())
        .await?;
    record_audit(
        &dash.app,
        &viewer.actor,
        "token.revoked",
        &row.name,
        serde_json::json!({}),
    )
    .await?;
    Ok(see_other("/settings"))
}
