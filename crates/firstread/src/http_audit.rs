//! The HTTP side of the audit trail: a middleware over DICOMweb, the viewer's login and the
//! triage pages that appends one event per request that touches patient data or authentication
//! (see `firstread_audit`). Static files, health checks and metrics are not recorded unless they
//! were refused for want of credentials: every 401 is a failed authentication (action `login`),
//! with the path it asked for (never the credentials or the query string).
//!
//! The same event (actor, address, action, study, outcome) repeated within [`REPEAT_WINDOW`] is
//! recorded once: a viewer that loads a study's metadata and hundreds of frames is one retrieval.
//! Sign-ins and refused requests are each recorded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use firstread_audit::{Action, Actor, Event};
use firstread_dicomweb::auth::{Caller, RefusedSignIn};
use serde_json::json;
use sqlx::PgPool;
use tracing::warn;

/// Window within which a repeated event is recorded once.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The middleware's state.
#[derive(Clone)]
pub struct HttpAudit {
    pool: PgPool,
    recent: Arc<Mutex<HashMap<Key, Instant>>>,
    writes: Arc<tokio::sync::Semaphore>,
}

/// Audit writes in flight at most (each holds a database connection while it runs).
pub const MAX_WRITES_IN_FLIGHT: usize = 4;

/// A path as recorded: at most 256 bytes (a client chooses its length).
fn bounded(path: &str) -> String {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    actor: Actor,
    ip: Option<std::net::IpAddr>,
    action: Action,
    study: Option<String>,
    success: bool,
}

impl HttpAudit {
    /// Records into `pool`.
    pub fn new(pool: PgPool) -> Self {
        HttpAudit {
            pool,
            recent: Arc::new(Mutex::new(HashMap::new())),
            writes: Arc::new(tokio::sync::Semaphore::new(MAX_WRITES_IN_FLIGHT)),
        }
    }

    /// Whether `key` was recorded within the window (and remembers it now if not).
    fn seen_recently(&self, key: Key) -> bool {
        let now = Instant::now();
        let mut recent = match self.recent.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if recent.len() > 10_000 {
            recent.retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        }
        match recent.get(&key) {
            Some(at) if now.duration_since(*at) < REPEAT_WINDOW => true,
            _ => {
                recent.insert(key, now);
                false
            }
        }
    }
}

/// What a request is, for the audit trail: its action and study, or `None` when it is not
/// recorded (static files, health, metrics, the event stream).
fn classify(method: &Method, path: &str, query: &str) -> Option<(Action, Option<String>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let study_in_path =
        segments.iter().position(|s| *s == "studies").and_then(|i| segments.get(i + 1)).map(|s| (*s).to_owned());
    let study_in_query = query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "StudyInstanceUID" || k == "0020000D").then(|| v.to_owned())
    });
    match segments.as_slice() {
        ["login", ..] => Some((Action::Login, None)),
        // the form itself (GET) is no sign-in
        ["sign-in", ..] if *method == Method::POST => Some((Action::Login, None)),
        ["sign-out", ..] if *method == Method::POST => Some((Action::Logout, None)),
        ["dicom-web", rest @ ..] => {
            if *method == Method::POST {
                return Some((Action::Stow, study_in_path));
            }
            let query_resource = matches!(rest.last(), Some(&"studies" | &"series" | &"instances"));
            let action = if query_resource { Action::Query } else { Action::Retrieve };
            Some((action, study_in_path.or(study_in_query)))
        }
        ["triage", "api", "studies", ..] | ["api", "models", ..] => Some((Action::Query, None)),
        ["triage", "api", "feedback", ..] => Some((Action::Feedback, None)),
        ["triage", "studies", ..] => Some((Action::Retrieve, study_in_path)),
        _ => None,
    }
}

/// How the request authenticated (not whether the credentials were right: a refused request is
/// [`Actor::Anonymous`]).
fn actor(headers: &HeaderMap, status: StatusCode) -> Actor {
    if status == StatusCode::UNAUTHORIZED {
        return Actor::Anonymous;
    }
    if headers.get(header::AUTHORIZATION).is_some() {
        Actor::Token
    } else if headers.get(header::COOKIE).is_some() {
        Actor::Session
    } else {
        Actor::Anonymous
    }
}

/// The middleware: runs the request, then appends its event (off the response path).
pub async fn record(State(audit): State<HttpAudit>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let status = response.status();
    // a request refused for want of credentials is a failed authentication, whatever it asked for
    let classified = match (status, classify(&method, &path, &query)) {
        (StatusCode::UNAUTHORIZED, c) => Some((Action::Login, c.and_then(|(_, study)| study))),
        (_, c) => c,
    };
    let Some((action, study)) = classified else { return response };
    let success = status.is_success() || status.is_redirection();
    // who: the user the response names (authenticated, signed in, or a refused sign-in's name),
    // else how the request authenticated; a successful token login opens a shared session
    let actor = match (response.extensions().get::<Caller>(), response.extensions().get::<RefusedSignIn>()) {
        (_, Some(RefusedSignIn(name))) => Actor::User(name.clone()),
        (Some(Caller::Token(i) | Caller::Session(i)), _) => Actor::User(i.name.clone()),
        _ if action == Action::Login && success => Actor::Session,
        _ => actor(&headers, status),
    };
    let key = Key { actor: actor.clone(), ip: peer.map(|p| p.ip()), action, study: study.clone(), success };
    // every authentication is recorded (repeated failures are what an attack looks like), within
    // a bound on the writes in flight: a flood of refused requests must not take the database
    // pool from the node (what is dropped is counted and logged)
    if action == Action::Login || action == Action::Logout || !audit.seen_recently(key) {
        let event = Event {
            actor,
            address: peer.map(|p| p.to_string()),
            action,
            study,
            site: None,
            success,
            detail: json!({ "method": method.as_str(), "path": bounded(&path), "status": status.as_u16() }),
        };
        let Ok(permit) = audit.writes.clone().try_acquire_owned() else {
            metrics::counter!("firstread_audit_dropped_total").increment(1);
            warn!("audit trail: too many writes in flight, an HTTP event was dropped");
            return response;
        };
        let pool = audit.pool.clone();
        tokio::spawn(async move {
            if let Err(e) = firstread_audit::record(&pool, &event).await {
                warn!(error = %e, "could not record an HTTP access in the audit trail");
            }
            drop(permit);
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_their_resource() {
        let get = Method::GET;
        let c = |m: &Method, p: &str, q: &str| classify(m, p, q);
        assert_eq!(c(&get, "/dicom-web/studies", "PatientID=X"), Some((Action::Query, None)));
        assert_eq!(
            c(&get, "/dicom-web/studies", "StudyInstanceUID=1.2.3"),
            Some((Action::Query, Some("1.2.3".into())))
        );
        assert_eq!(c(&get, "/dicom-web/studies/1.2.3/series", ""), Some((Action::Query, Some("1.2.3".into()))));
        assert_eq!(c(&get, "/dicom-web/studies/1.2.3/metadata", ""), Some((Action::Retrieve, Some("1.2.3".into()))));
        assert_eq!(
            c(&get, "/dicom-web/studies/1.2.3/series/4/instances/5/frames/1", ""),
            Some((Action::Retrieve, Some("1.2.3".into())))
        );
        assert_eq!(c(&Method::POST, "/dicom-web/studies", ""), Some((Action::Stow, None)));
        assert_eq!(c(&get, "/login", "token=x"), Some((Action::Login, None)));
        assert_eq!(c(&Method::POST, "/sign-in", ""), Some((Action::Login, None)));
        assert_eq!(c(&get, "/sign-in", ""), None);
        assert_eq!(c(&Method::POST, "/sign-out", ""), Some((Action::Logout, None)));
        assert_eq!(bounded(&"é".repeat(200)).len(), 256);
        assert_eq!(c(&get, "/triage/api/studies", ""), Some((Action::Query, None)));
        assert_eq!(c(&Method::POST, "/triage/api/feedback", ""), Some((Action::Feedback, None)));
        assert_eq!(
            c(&get, "/triage/studies/1.2.3/1/key-image.png", ""),
            Some((Action::Retrieve, Some("1.2.3".into())))
        );
        assert_eq!(c(&get, "/viewer/app.bundle.js", ""), None);
        assert_eq!(c(&get, "/healthz", ""), None);
        assert_eq!(c(&get, "/metrics", ""), None);
    }
}
