//! Signing in with an API token, and out. The sign-in form is protected by a pre-session
//! cookie (double submit) and the Origin check.

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Dash;
use super::csrf::{check_origin, check_token};
use super::form::FormData;
use super::layout::{Layout, PageError, PageResult};
use super::session::{self, SESSION_COOKIE, Viewer, cookie, safe_next, set_cookie};
use crate::web::auth::{Role, token_hash};
use crate::web::record_audit;

/// The pre-session cookie of the sign-in form.
const LOGIN_COOKIE: &str = "keyward_login";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    csrf: String,
    error: Option<String>,
    proxy: bool,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn login_page(
    dash: &Dash,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    error: Option<String>,
) -> PageResult {
    let csrf = session::random_token();
    let page = LoginPage {
        layout: Layout {
            active: "login",
            ..Layout::default()
        },
        next,
        csrf: csrf.clone(),
        error,
        proxy: dash.settings.auth.proxy_header.is_some(),
    };
    let cookie = set_cookie(
        LOGIN_COOKIE,
        &csrf,
        "/login",
        3600,
        session::secure(&dash.settings, headers),
    );
    Ok((status, [(header::SET_COOKIE, cookie)], Html(page.render()?)).into_response())
}

/// `GET /login`: the sign-in form (straight on for a user the trusted proxy names).
pub async fn form(
    State(dash): State<Dash>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> PageResult {
    let next = safe_next(q.next.as_deref());
    if session::proxy_user(&dash.settings, &headers).is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    login_page(&dash, &headers, StatusCode::OK, next, None)
}

/// `POST /login`: checks the token, starts a session, goes on to `next`.
pub async fn submit(State(dash): State<Dash>, headers: HeaderMap, body: Bytes) -> PageResult {
    if let Err(f) = check_origin(&headers, dash.settings.auth.trusted_proxy) {
        return Err(PageError::Forbidden(f.message()));
    }
    let form = FormData::parse(&body);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if let Err(f) = check_token(&expected, form.get("csrf")) {
        return Err(PageError::Forbidden(f.message()));
    }
    let next = safe_next(form.get("next"));
    let Some(secret) = form.get("token") else {
        return login_page(
            &dash,
            &headers,
            StatusCode::BAD_REQUEST,
            next,
            Some("Paste an API token to sign in.".into()),
        );
    };
    let now = dash.app.clock.now();
    let Some(token) = dash
        .app
        .store
        .authenticate(&token_hash(secret), now)
        .await?
    else {
        return login_page(
            &dash,
            &headers,
            StatusCode::UNAUTHORIZED,
            next,
            Some("That token is not valid, or it was revoked.".into()),
        );
    };
    let role: Role = token
        .role
        .parse()
        .map_err(|e: String| PageError::Internal(format!("token {}: {e}", token.name)))?;
    // A new sign-in replaces whatever session this browser had.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        dash.app.store.delete_session(&token_hash(&old)).await?;
    }
    if let Err(e) = dash.app.store.delete_expired_sessions(now).await {
        tracing::warn!(error = %e, "deleting expired sessions failed");
    }
    let (id, _) = session::start(&dash, &token.name, role, Some(token.name.clone())).await?;
    record_audit(
        &dash.app,
        &token.name,
        "dashboard.signed_in",
        &token.name,
        serde_json::json!({ "role": role.as_str() }),
    )
    .await?;
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::session_cookie(&dash, &headers, &id),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", 0, false),
    );
    Ok(response)
}

/// `POST /logout`: ends the session.
pub async fn logout(
    State(dash): State<Dash>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = dash.app.store.delete_session(&token_hash(&id)).await
    {
        return PageError::from(e).into_response();
    }
    tracing::debug!(actor = %viewer.actor, "signed out");
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            "/",
            0,
            session::secure(&dash.settings, &headers),
        ),
    );
    response
}
