//! Cross-site request forgery defences for every dashboard POST: the request must come from a
//! page of this site (Origin, else Referer, names the Host) and carry the session's
//! synchronizer token (form field `csrf` or header `X-CSRF-Token`).

use axum::http::{HeaderMap, header};

/// Why a POST was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrfFailure {
    /// Neither Origin nor Referer says where the request came from.
    NoOrigin,
    /// It came from another site.
    ForeignOrigin(String),
    /// The token is missing or not this session's.
    BadToken,
}

impl CsrfFailure {
    pub fn message(&self) -> String {
        match self {
            Self::NoOrigin => "The form could not be verified: the browser did not say which site sent it (no Origin or Referer header).".to_string(),
            Self::ForeignOrigin(o) => format!("The form could not be verified: it was sent from {o}, not from this site."),
            Self::BadToken => "The form could not be verified (its security token is missing or stale). Reload the page and try again.".to_string(),
        }
    }
}

/// The authority (`host[:port]`) the client addressed: `X-Forwarded-Host` behind a trusted
/// proxy, else `Host`.
pub fn request_host(headers: &HeaderMap, trusted_proxy: bool) -> Option<String> {
    let forwarded = trusted_proxy
        .then(|| headers.get("x-forwarded-host"))
        .flatten();
    forwarded
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or(v).trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

/// The authority of an absolute http(s) URL (`https://a.example:8443/x` → `a.example:8443`).
fn authority(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    (!auth.is_empty() && !auth.contains('@')).then(|| auth.to_ascii_lowercase())
}

/// Checks that the request came from a page of this site.
pub fn check_origin(headers: &HeaderMap, trusted_proxy: bool) -> Result<(), CsrfFailure> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v != "null");
    let source = match origin {
        Some(o) => o.to_string(),
        None => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .ok_or(CsrfFailure::NoOrigin)?
            .to_string(),
    };
    let host = request_host(headers, trusted_proxy).ok_or(CsrfFailure::NoOrigin)?;
    match authority(&source) {
        Some(a) if a == host => Ok(()),
        _ => Err(CsrfFailure::ForeignOrigin(source)),
    }
}

/// Compares the submitted token with the session's in constant time.
pub fn check_token(expected: &str, submitted: Option<&str>) -> Result<(), CsrfFailure> {
    let Some(submitted) = submitted else {
        return Err(CsrfFailure::BadToken);
    };
    let (a, b) = (expected.as_bytes(), submitted.as_bytes());
    if a.is_empty() || a.len() != b.len() {
        return Err(CsrfFailure::BadToken);
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff == 0 {
        Ok(())
    } else {
        Err(CsrfFailure::BadToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_must_name_the_host() {
        let ok = headers(&[
            ("host", "kw.example:8080"),
            ("origin", "http://kw.example:8080"),
        ]);
        assert_eq!(check_origin(&ok, false), Ok(()));
        let referer = headers(&[
            ("host", "kw.example"),
            ("referer", "https://kw.example/keys?q=1"),
        ]);
        assert_eq!(check_origin(&referer, false), Ok(()));
        let foreign = headers(&[("host", "kw.example"), ("origin", "https://evil.example")]);
        assert!(matches!(
            check_origin(&foreign, false),
            Err(CsrfFailure::ForeignOrigin(_))
        ));
        let lookalike = headers(&[
            ("host", "kw.example"),
            ("origin", "https://kw.example.evil.example"),
        ]);
        assert!(check_origin(&lookalike, false).is_err());
        let userinfo = headers(&[
            ("host", "kw.example"),
            ("referer", "https://kw.example@evil.example/"),
        ]);
        assert!(check_origin(&userinfo, false).is_err());
        assert_eq!(
            check_origin(&headers(&[("host", "kw.example")]), false),
            Err(CsrfFailure::NoOrigin)
        );
        let null = headers(&[("host", "kw.example"), ("origin", "null")]);
        assert_eq!(check_origin(&null, false), Err(CsrfFailure::NoOrigin));
        // X-Forwarded-Host only counts behind a trusted proxy
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "kw.example"),
            ("origin", "https://kw.example"),
        ]);
        assert_eq!(check_origin(&proxied, true), Ok(()));
        assert!(check_origin(&proxied, false).is_err());
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert_eq!(check_token("abc", Some("abc")), Ok(()));
        assert_eq!(check_token("abc", Some("abd")), Err(CsrfFailure::BadToken));
        assert_eq!(check_token("abc", Some("ab")), Err(CsrfFailure::BadToken));
        assert_eq!(check_token("abc", None), Err(CsrfFailure::BadToken));
        assert_eq!(check_token("", Some("")), Err(CsrfFailure::BadToken));
    }
}
