//! Who is looking: a server-side session (cookie `keyward_session`, only its SHA-256 stored)
//! made by signing in with an API token, or a user named by a trusted reverse proxy's header.
//! Every page route passes through [`require_viewer`], which also runs the CSRF check of POSTs.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;

use super::csrf::{check_origin, check_token};
use super::form::FormData;
use super::layout::{PageError, enc};
use super::{Dash, DashboardSettings};
use crate::config::SecureCookies;
use crate::store::NewSession;
use crate::web::BODY_LIMIT;
use crate::web::auth::{Role, token_hash};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "keyward_session";

/// The person signed in, as handlers see them.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token name or proxy user: the actor in audit events.
    pub actor: String,
    pub role: Role,
    /// The session's synchronizer token.
    pub csrf: String,
}

impl Viewer {
    /// Refuses with a 403 page unless the role is at least `needed`.
    pub fn require(&self, needed: Role) -> Result<(), PageError> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(PageError::role(needed, self.role))
        }
    }

    pub fn can(&self, needed: Role) -> bool {
        self.role >= needed
    }
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether cookies set in answer to this request carry `Secure`.
pub fn secure(settings: &DashboardSettings, headers: &HeaderMap) -> bool {
    match settings.auth.secure_cookies {
        SecureCookies::Always => true,
        SecureCookies::Never => false,
        SecureCookies::Auto => {
            (settings.auth.trusted_proxy || settings.auth.proxy_header.is_some())
                && headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
        }
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, `Max-Age` seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("keyward_invalid=; Max-Age=0"))
}

/// Starts a session; returns the cookie secret and the session's CSRF token.
pub async fn start(
    dash: &Dash,
    actor: &str,
    role: Role,
    token_name: Option<String>,
) -> Result<(String, String), PageError> {
    let id = random_token();
    let csrf = random_token();
    let now = dash.app.clock.now();
    let ttl = TimeDelta::from_std(dash.settings.auth.session_ttl).unwrap_or(TimeDelta::hours(12));
    dash.app
        .store
        .create_session(&NewSession {
            id_sha256: token_hash(&id),
            actor: actor.to_string(),
            role: role.as_str().to_string(),
            token_name,
            csrf_token: csrf.clone(),
            created_at: now,
            expires_at: now + ttl,
        })
        .await?;
    Ok((id, csrf))
}

/// The session cookie for a new session.
pub fn session_cookie(dash: &Dash, headers: &HeaderMap, id: &str) -> HeaderValue {
    set_cookie(
        SESSION_COOKIE,
        id,
        "/",
        dash.settings.auth.session_ttl.as_secs() as i64,
        secure(&dash.settings, headers),
    )
}

/// The session the cookie names, if it is live.
pub async fn from_cookie(dash: &Dash, headers: &HeaderMap) -> Result<Option<Viewer>, PageError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(row) = dash
        .app
        .store
        .get_session(&token_hash(&id), dash.app.clock.now())
        .await?
    else {
        return Ok(None);
    };
    let role = row
        .role
        .parse::<Role>()
        .map_err(|e| PageError::Internal(format!("session of {}: {e}", row.actor)))?;
    Ok(Some(Viewer {
        actor: row.actor,
        role,
        csrf: row.csrf_token,
    }))
}

/// The user a trusted proxy names, when `[auth] proxy_header` is configured and present.
pub fn proxy_user(settings: &DashboardSettings, headers: &HeaderMap) -> Option<String> {
    let name = settings.auth.proxy_header.as_deref()?;
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The role `[auth.proxy_roles]` (else `default_role`) gives a proxy user.
fn proxy_role(settings: &DashboardSettings, user: &str) -> Option<Role> {
    settings
        .auth
        .proxy_roles
        .get(user)
        .or(settings.auth.default_role.as_ref())
        .and_then(|r| r.parse().ok())
}

/// Resolves the viewer of a page request; with a proxy user and no session of theirs yet, also
/// the cookie of the session made for them (it holds their CSRF token).
async fn resolve(
    dash: &Dash,
    headers: &HeaderMap,
) -> Result<Option<(Viewer, Option<HeaderValue>)>, PageError> {
    if let Some(user) = proxy_user(&dash.settings, headers) {
        let role = proxy_role(&dash.settings, &user).ok_or_else(|| {
            PageError::Forbidden(format!(
                "{user} is signed in through the proxy but has no Keyward role; ask an administrator to add them to [auth.proxy_roles]."
            ))
        })?;
        // The role comes from the configuration on every request; the session only keeps
        // the CSRF token, and only a session made for this very user counts.
        if let Some(v) = from_cookie(dash, headers).await?
            && v.actor == user
        {
            return Ok(Some((Viewer { role, ..v }, None)));
        }
        let (id, csrf) = start(dash, &user, role, None).await?;
        let cookie = session_cookie(dash, headers, &id);
        return Ok(Some((
            Viewer {
                actor: user,
                role,
                csrf,
            },
            Some(cookie),
        )));
    }
    Ok(from_cookie(dash, headers).await?.map(|v| (v, None)))
}

/// Only same-site relative paths may be a `next`: `/keys?q=1`, never `//evil` or `https://…`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2000
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// Signs the viewer in for page routes (else to `/login?next=…`) and checks every POST for
/// CSRF: same-site Origin/Referer and the session's token.
pub async fn require_viewer(State(dash): State<Dash>, request: Request, next: Next) -> Response {
    let (viewer, new_cookie) = match resolve(&dash, request.headers()).await {
        Ok(Some(found)) => found,
        Ok(None) => return to_login(&request),
        Err(e) => return e.into_response(),
    };
    let mut request = request;
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if let Err(f) = check_origin(request.headers(), dash.settings.auth.trusted_proxy) {
            return PageError::Forbidden(f.message()).into_response();
        }
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => {
                return PageError::BadRequest(format!(
                    "The form is larger than {BODY_LIMIT} bytes."
                ))
                .into_response();
            }
        };
        let form = FormData::parse(&bytes);
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if let Err(f) = check_token(&viewer.csrf, header_token.or(form.get("csrf"))) {
            return PageError::Forbidden(f.message()).into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
        request.extensions_mut().insert(form);
    }
    request.extensions_mut().insert(viewer);
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Unauthenticated: to the sign-in page, coming back here afterwards (htmx reloads there).
fn to_login(request: &Request) -> Response {
    let back = if request.method() == Method::GET {
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    } else {
        "/".to_string()
    };
    let location = format!("/login?next={}", enc(&safe_next(Some(&back))));
    let mut response = axum::response::Redirect::to(&location).into_response();
    if super::layout::is_htmx(request.headers())
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert("hx-redirect", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/keys?q=a")), "/keys?q=a");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "keys",
            "",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; keyward_session=s3; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("s3"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", "/", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }
}
