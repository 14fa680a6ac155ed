//! HTTP authentication: a bearer token from the configuration (RFC 6750) on every DICOMweb and
//! `/metrics` request, or, for the browser viewer (which cannot add headers to its own page
//! loads), the same token in an HttpOnly, SameSite=Strict session cookie set by
//! `GET /login?token=...&next=/viewer/...`. Off only with `auth = "none"`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::AppState;

/// The cookie the viewer's requests carry after `/login`.
pub const SESSION_COOKIE: &str = "firstread_token";

/// Request authentication.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The token requests must present; `None`: no authentication.
    token: Option<String>,
}

impl Auth {
    /// Requests must present `token`.
    pub fn bearer(token: impl Into<String>) -> Self {
        Auth { token: Some(token.into()) }
    }

    /// No authentication (configured explicitly).
    pub fn none() -> Self {
        Auth { token: None }
    }

    /// Whether the request's `Authorization: Bearer` header or session cookie carries the token.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .any(|t| same(t.trim(), token));
        bearer || cookie(headers, SESSION_COOKIE).is_some_and(|t| same(t, token))
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Middleware: 401 with `WWW-Authenticate: Bearer` unless the request is authenticated.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    if auth.allows(request.headers()) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"firstread\"")],
            "authentication required: Authorization: Bearer <token>\n",
        )
            .into_response()
    }
}

/// `GET /login?token=<token>&next=<path>`: sets the session cookie and redirects to `next`
/// (a local path; default `/viewer/`). A wrong token answers 401 and sets nothing.
pub async fn login(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    let next = query
        .get("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control))
        .map_or("/viewer/", String::as_str);
    let given = query.get("token").map(String::as_str).unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("Bearer {given}").parse() {
        headers.insert(header::AUTHORIZATION, v);
    }
    if !state.auth.allows(&headers) {
        return (StatusCode::UNAUTHORIZED, "wrong token\n").into_response();
    }
    let cookie = format!("{SESSION_COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_header_or_session_cookie_with_the_right_token_only() {
        let auth = Auth::bearer("s3cret");
        assert!(auth.allows(&headers(&[(header::AUTHORIZATION, "Bearer s3cret")])));
        assert!(auth.allows(&headers(&[(header::COOKIE, "a=b; firstread_token=s3cret")])));
        assert!(!auth.allows(&headers(&[(header::AUTHORIZATION, "Bearer s3cre")])));
        assert!(!auth.allows(&headers(&[(header::AUTHORIZATION, "Basic s3cret")])));
        assert!(!auth.allows(&headers(&[(header::COOKIE, "firstread_token=wrong")])));
        assert!(!auth.allows(&HeaderMap::new()));
        assert!(Auth::none().allows(&HeaderMap::new()));
    }
}
