//! HTTP authentication (off only with `auth = "none"`). A request is from:
//!
//! - a named user (`firstread-users`): an API token in `Authorization: Bearer fr_...` (RFC 6750)
//!   for machines, or the `firstread_session` cookie (HttpOnly, SameSite=Strict, Secure over
//!   HTTPS, 12 hours) that `POST /sign-in` with name and password sets for people;
//! - or, deprecated (existing installs, until they have users), the configured shared token: as a
//!   bearer token, or in the `firstread_token` cookie that `GET /login?token=...&next=/viewer/...`
//!   sets for the browser viewer.
//!
//! [`require`] answers 401 otherwise, and puts the [`Caller`] in the request's and the response's
//! extensions (the handlers and the audit trail read it). A disabled user's token and session stop
//! working with their next request: every request looks them up.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use firstread_users::Identity;
use sqlx::PgPool;
use tracing::warn;

use crate::AppState;

/// The cookie the viewer's requests carry after `/login` (the deprecated shared token).
pub const SESSION_COOKIE: &str = "firstread_token";

/// The cookie a user's browser carries after `POST /sign-in`.
pub const USER_SESSION_COOKIE: &str = "firstread_session";

/// Who a request is from (an extension of authenticated requests and their responses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A named user, with an API token.
    Token(Identity),
    /// A named user, with a browser session.
    Session(Identity),
    /// The deprecated shared token (bearer or cookie).
    SharedToken,
    /// Authentication is off.
    Open,
}

impl Caller {
    /// The user's name, for a named user.
    pub fn user(&self) -> Option<&Identity> {
        match self {
            Caller::Token(i) | Caller::Session(i) => Some(i),
            Caller::SharedToken | Caller::Open => None,
        }
    }

    /// Whether the caller may do `what` (its role's [`firstread_users::Role::may`]); the
    /// deprecated shared token and a node without authentication may do everything.
    pub fn may(&self, what: firstread_users::Permission) -> bool {
        self.user().is_none_or(|i| i.role.may(what))
    }

    /// The sites whose studies the caller sees: a user's own; every site for the deprecated
    /// shared token and without authentication.
    pub fn scope(&self) -> firstread_sites::Scope {
        match self {
            Caller::Token(i) | Caller::Session(i) => i.scope(),
            Caller::SharedToken | Caller::Open => firstread_sites::Scope::Every,
        }
    }
}

/// A sign-in that was refused (a response extension, for the audit trail): the name tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedSignIn(pub String);

/// Request authentication.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Whether requests must authenticate at all.
    required: bool,
    /// The deprecated shared token, when configured.
    token: Option<String>,
    /// The users' database; `None`: the shared token only.
    users: Option<PgPool>,
    /// Failed sign-ins per client address.
    throttle: Arc<SignInThrottle>,
}

/// Failed sign-ins allowed from one address within [`SIGN_IN_WINDOW`]; beyond, that address
/// gets 429 until the window ends (password guessing; argon2 already makes each try cost).
pub const MAX_FAILED_SIGN_INS: u32 = 10;
/// The window of [`MAX_FAILED_SIGN_INS`].
pub const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Most addresses tracked; beyond, the oldest windows are forgotten.
const THROTTLE_ADDRESSES: usize = 65_536;

/// Failed sign-ins per client IP address, in memory (per node process).
#[derive(Debug, Default)]
pub struct SignInThrottle {
    failures: std::sync::Mutex<HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl SignInThrottle {
    /// `Some(wait)` when `ip` has used up its failures in the current window.
    pub fn blocked(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        let failures = self.failures.lock().ok()?;
        let (n, since) = failures.get(&ip)?;
        let elapsed = since.elapsed();
        (*n >= MAX_FAILED_SIGN_INS && elapsed < SIGN_IN_WINDOW).then(|| SIGN_IN_WINDOW - elapsed)
    }

    /// Counts a failed sign-in from `ip`.
    pub fn failed(&self, ip: std::net::IpAddr) {
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= THROTTLE_ADDRESSES {
            failures.retain(|_, (_, since)| since.elapsed() < SIGN_IN_WINDOW);
            // still full (a flood from many addresses): the oldest windows go, memory stays bounded
            if failures.len() >= THROTTLE_ADDRESSES {
                let mut starts: Vec<std::time::Instant> = failures.values().map(|(_, since)| *since).collect();
                starts.sort();
                let keep_from = starts[starts.len() / 4];
                failures.retain(|_, (_, since)| *since >= keep_from);
            }
        }
        let entry = failures.entry(ip).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= SIGN_IN_WINDOW {
            *entry = (0, std::time::Instant::now());
        }
        entry.0 += 1;
    }

    /// A sign-in from `ip` that succeeded: the attempt counted before the password check is
    /// taken back (the rest of the count stays, so that one valid account does not clear the way
    /// for guessing others).
    pub fn succeeded(&self, ip: std::net::IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            if let Some(entry) = failures.get_mut(&ip) {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
    }
}

impl Auth {
    /// Requests must present `token` (the deprecated shared token); add users with
    /// [`Auth::with_users`].
    pub fn bearer(token: impl Into<String>) -> Self {
        Auth { required: true, token: Some(token.into()), users: None, throttle: Arc::default() }
    }

    /// Requests must come from a user of `pool` (no shared token).
    pub fn users(pool: PgPool) -> Self {
        Auth { required: true, token: None, users: Some(pool), throttle: Arc::default() }
    }

    /// Users of `pool` are accepted besides the shared token.
    pub fn with_users(mut self, pool: PgPool) -> Self {
        self.users = Some(pool);
        self
    }

    /// No authentication (configured explicitly).
    pub fn none() -> Self {
        Auth { required: false, token: None, users: None, throttle: Arc::default() }
    }

    /// Whether the request carries the shared token (bearer or cookie).
    pub fn allows_shared_token(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return false };
        bearer_tokens(headers).any(|t| same(t, token))
            || cookie(headers, SESSION_COOKIE).is_some_and(|t| same(t, token))
    }

    /// Who the request is from, or `None` when it is not authenticated (a database error counts
    /// as not authenticated, and is logged).
    pub async fn identify(&self, headers: &HeaderMap) -> Option<Caller> {
        if !self.required {
            return Some(Caller::Open);
        }
        if self.allows_shared_token(headers) {
            return Some(Caller::SharedToken);
        }
        let pool = self.users.as_ref()?;
        let lookup = async {
            // one lookup per request, however many Authorization headers it carries
            if let Some(token) = bearer_tokens(headers).next() {
                if let Some(i) = firstread_users::identify_token(pool, token).await? {
                    return Ok(Some(Caller::Token(i)));
                }
            }
            if let Some(session) = cookie(headers, USER_SESSION_COOKIE) {
                if let Some(i) = firstread_users::identify_session(pool, session).await? {
                    return Ok(Some(Caller::Session(i)));
                }
            }
            Ok::<_, firstread_users::UserError>(None)
        };
        lookup.await.unwrap_or_else(|e| {
            warn!(error = %e, "could not check credentials");
            None
        })
    }
}

fn bearer_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
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

/// Middleware: 401 with `WWW-Authenticate: Bearer` unless the request is authenticated; the
/// [`Caller`] goes into the request's and the response's extensions.
pub async fn require(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    if let Some(caller) = auth.identify(request.headers()).await {
        request.extensions_mut().insert(caller.clone());
        let mut response = next.run(request).await;
        response.extensions_mut().insert(caller);
        response
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
pub async fn login(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let next = query
        .get("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control))
        .map_or("/viewer/", String::as_str);
    let given = query.get("token").map(String::as_str).unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("Bearer {given}").parse() {
        headers.insert(header::AUTHORIZATION, v);
    }
    if !state.auth.allows_shared_token(&headers) {
        return (StatusCode::UNAUTHORIZED, "wrong token\n").into_response();
    }
    let secure = if crate::forwarded::client_used_https(&request_headers, state.https) { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={given}; Path=/; HttpOnly; SameSite=Strict{secure}");
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

/// What `POST /sign-in` takes (`application/x-www-form-urlencoded`).
#[derive(Debug, serde::Deserialize)]
pub struct SignIn {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

fn local_path(next: Option<&str>, default: &'static str) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.chars().any(char::is_control))
        .unwrap_or(default)
        .to_owned()
}

const SIGN_IN_PAGE: &str = include_str!("sign-in.html");

/// `GET /sign-in`: the form.
pub async fn sign_in_page() -> Html<&'static str> {
    Html(SIGN_IN_PAGE)
}

/// `POST /sign-in`: name and password; on success the session cookie and a redirect (303) to
/// `next` (a local path; default `/triage`); otherwise 401, with the name tried in the
/// response's [`RefusedSignIn`] extension for the audit trail. After [`MAX_FAILED_SIGN_INS`]
/// failures from one address within [`SIGN_IN_WINDOW`], 429 with `Retry-After` (also recorded).
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin sign-in refused\n").into_response();
    }
    let throttle = &state.auth.throttle;
    let record = |mut r: Response, name: &str| {
        // people type passwords into the name field: only a well-formed user name is recorded
        let recorded = if firstread_users::is_valid_name(name) { name } else { "(not a user name)" };
        r.extensions_mut().insert(RefusedSignIn(recorded.to_owned()));
        r
    };
    if let Some(wait) = throttle.blocked(client.ip()) {
        let r = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            "too many failed sign-ins from this address: try again later\n",
        )
            .into_response();
        return record(r, &form.name);
    }
    // counted before the password is checked, so that parallel attempts cannot all pass the
    // check above before any of them is counted
    throttle.failed(client.ip());
    let refused = |name: &str| record((StatusCode::UNAUTHORIZED, "wrong name or password\n").into_response(), name);
    let Some(pool) = state.auth.users.as_ref() else { return refused(&form.name) };
    if form.name.len() > 64 || form.password.len() > 1024 {
        return refused(&form.name);
    }
    match firstread_users::login(pool, &form.name, &form.password).await {
        Ok(Some((session, _expires))) => {
            throttle.succeeded(client.ip());
            let secure = if crate::forwarded::client_used_https(&headers, state.https) { "; Secure" } else { "" };
            let cookie = format!(
                "{USER_SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                firstread_users::SESSION_HOURS * 3600
            );
            let name = form.name.clone();
            let mut r = ([(header::SET_COOKIE, cookie)], Redirect::to(&local_path(form.next.as_deref(), "/triage")))
                .into_response();
            // who signed in, for the audit trail (role and sites are not needed there)
            let who = Identity { name, role: firstread_users::Role::Radiologist, sites: Vec::new() };
            r.extensions_mut().insert(Caller::Session(who));
            r
        }
        Ok(None) => refused(&form.name),
        Err(e) => {
            warn!(error = %e, "sign-in failed");
            (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response()
        }
    }
}

/// Whether a form post comes from this site: browsers send `Origin` on POST; when it is there its
/// host must be the request's `Host` (a page elsewhere cannot sign a browser in or out: login
/// CSRF). Clients that send no `Origin` (scripts) are not browsers posting across sites.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest).trim_end_matches('/');
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// `POST /sign-out`: ends the session and clears the cookie.
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin sign-out refused\n").into_response();
    }
    if let (Some(pool), Some(session)) = (state.auth.users.as_ref(), cookie(&headers, USER_SESSION_COOKIE)) {
        if let Err(e) = firstread_users::logout(pool, session).await {
            warn!(error = %e, "sign-out failed");
        }
    }
    let clear = format!("{USER_SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/sign-in")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_stays_bounded_under_a_flood_of_addresses() {
        let t = SignInThrottle::default();
        for n in 0..=THROTTLE_ADDRESSES as u32 {
            t.failed(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        let tracked = t.failures.lock().map(|f| f.len()).unwrap_or(usize::MAX);
        assert!(tracked <= THROTTLE_ADDRESSES, "{tracked}");
        // ten failures from one address: blocked; another address is not
        let one: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILED_SIGN_INS {
            t.failed(one);
        }
        assert!(t.blocked(one).is_some());
        assert!(t.blocked("192.0.2.2".parse().unwrap()).is_none());
        // a success takes back one attempt, not the others
        t.succeeded(one);
        assert!(t.blocked(one).is_none());
        t.failed(one);
        assert!(t.blocked(one).is_some());
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn sign_in_posts_must_come_from_this_site() {
        assert!(same_origin(&headers(&[(header::HOST, "node:8443")])), "no Origin: not a cross-site form");
        assert!(same_origin(&headers(&[(header::HOST, "node:8443"), (header::ORIGIN, "https://node:8443")])));
        assert!(!same_origin(&headers(&[(header::HOST, "node:8443"), (header::ORIGIN, "https://evil.example")])));
        assert!(!same_origin(&headers(&[(header::HOST, "node:8443"), (header::ORIGIN, "null")])));
        assert!(!same_origin(&headers(&[(header::ORIGIN, "https://node:8443")])), "no Host");
    }

    #[test]
    fn bearer_header_or_session_cookie_with_the_right_token_only() {
        let auth = Auth::bearer("s3cret");
        assert!(auth.allows_shared_token(&headers(&[(header::AUTHORIZATION, "Bearer s3cret")])));
        assert!(auth.allows_shared_token(&headers(&[(header::COOKIE, "a=b; firstread_token=s3cret")])));
        assert!(!auth.allows_shared_token(&headers(&[(header::AUTHORIZATION, "Bearer s3cre")])));
        assert!(!auth.allows_shared_token(&headers(&[(header::AUTHORIZATION, "Basic s3cret")])));
        assert!(!auth.allows_shared_token(&headers(&[(header::COOKIE, "firstread_token=wrong")])));
        assert!(!auth.allows_shared_token(&HeaderMap::new()));
        assert!(!Auth::none().allows_shared_token(&HeaderMap::new()));
    }
}
