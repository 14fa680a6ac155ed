//! The node's pages beside DICOMweb (same HTTP server and authentication, none of its code):
//! the triage worklist at `/triage` and radiologist feedback.
//!
//! - `GET /triage`: the page (HTML, CSS and JavaScript shipped in the binary; nothing fetched at
//!   run time), or a redirect to the sign-in form (`/sign-in`, name and password) when the
//!   request is not authenticated;
//! - `GET /triage/api/studies?site=&status=&class=&from=&to=&limit=&offset=`: a page of the
//!   worklist as JSON ([`worklist`]);
//! - `GET /triage/events`: server-sent events, one `changed` event (data: the Study Instance UID)
//!   per PostgreSQL `NOTIFY firstread_triage` of one of the caller's sites (a study appears or
//!   gets a version, a job changes state, feedback is given) and a `tick` every 5 s so that
//!   time-based states move on;
//!
//! Every answer holds the caller's sites only (`firstread_sites`): another site's study or key
//! image is not found.
//! - `POST /triage/api/feedback` (JSON [`feedback::NewFeedback`]; a signed-in user is its author); `GET /triage/api/feedback?format=csv|json`;
//! - `GET /triage/studies/{study}/{version}/key-image.png[?site=]`: the key image thumbnail.

pub mod feedback;
pub mod thumbnail;
pub mod worklist;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use firstread_dicomweb::auth::Caller;
use firstread_dicomweb::Auth;
use futures_util::stream::{self, Stream, StreamExt};
use sqlx::postgres::PgPool;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The PostgreSQL channel the triggers of `schemas/0004_triage_notify.sql` notify.
pub const CHANNEL: &str = "firstread_triage";

/// What the pages need.
#[derive(Clone)]
pub struct PagesState {
    /// The index and queue database.
    pub pool: PgPool,
    /// The storage root (result files for thumbnails).
    pub storage_root: PathBuf,
    /// The same authentication as DICOMweb.
    pub auth: Arc<Auth>,
    /// Study changes, fed by [`listen`].
    pub changes: broadcast::Sender<String>,
}

impl std::fmt::Debug for PagesState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagesState").field("storage_root", &self.storage_root).finish_non_exhaustive()
    }
}

/// The pages' routes (to merge into the node's HTTP application).
pub fn router(state: PagesState) -> Router {
    let api = Router::new()
        .route("/triage/api/studies", get(studies))
        .route("/triage/api/feedback", post(give_feedback).get(export_feedback))
        .route("/triage/events", get(events))
        .route("/triage/studies/{study}/{version}/key-image.png", get(key_image))
        .route_layer(axum::middleware::from_fn_with_state(state.auth.clone(), firstread_dicomweb::auth::require));
    let headers = |name: header::HeaderName, value: &'static str| {
        tower_http::set_header::SetResponseHeaderLayer::if_not_present(name, header::HeaderValue::from_static(value))
    };
    Router::new()
        .route("/triage", get(page))
        .route("/triage/sign-in", get(|| async { Redirect::to("/sign-in") }))
        .route("/triage/assets/triage.js", get(|| asset("text/javascript; charset=utf-8", TRIAGE_JS)))
        .route("/triage/assets/triage.css", get(|| asset("text/css; charset=utf-8", TRIAGE_CSS)))
        .merge(api)
        .with_state(state)
        .layer(headers(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(headers(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(headers(header::X_FRAME_OPTIONS, "DENY"))
        .layer(headers(header::REFERRER_POLICY, "same-origin"))
}

/// The pages load only their own script, style and images (the key-image PNGs; `data:` for the
/// empty favicon) and talk only to their own origin; nobody frames them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const TRIAGE_HTML: &str = include_str!("assets/triage.html");
const TRIAGE_JS: &str = include_str!("assets/triage.js");
const TRIAGE_CSS: &str = include_str!("assets/triage.css");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /triage`: the page, or a redirect to the sign-in form without a valid token or session.
async fn page(State(state): State<PagesState>, headers: HeaderMap) -> Response {
    if state.auth.identify(&headers).await.is_some() {
        Html(TRIAGE_HTML).into_response()
    } else {
        Redirect::to("/sign-in").into_response()
    }
}

fn server_error(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "triage page request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

async fn studies(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Query(filter): Query<worklist::Filter>,
) -> Response {
    if let Some(problem) = filter.problem() {
        return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response();
    }
    match worklist::page(&state.pool, &filter, &caller.scope()).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => server_error(e),
    }
}

/// A signed-in user's feedback is theirs: the author is their name, whatever the form said (the
/// name typed on the page is only used with the deprecated shared token).
async fn give_feedback(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Json(mut f): Json<feedback::NewFeedback>,
) -> Response {
    if !caller.may(firstread_users::Permission::Feedback) {
        return (StatusCode::FORBIDDEN, "feedback is a reader's: a radiologist or admin account\n").into_response();
    }
    if let Some(user) = caller.user() {
        f.author = user.name.clone();
    }
    match feedback::record(&state.pool, &f, &caller.scope()).await {
        Ok(row) => (StatusCode::CREATED, Json(row)).into_response(),
        Err(feedback::FeedbackError::Invalid(m)) => (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response(),
        Err(feedback::FeedbackError::NotFound) => {
            (StatusCode::NOT_FOUND, "no first read of that study version\n").into_response()
        }
        Err(e) => server_error(e),
    }
}

#[derive(serde::Deserialize)]
struct ExportQuery {
    format: Option<feedback::Format>,
}

async fn export_feedback(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ExportQuery>,
) -> Response {
    let format = q.format.unwrap_or(feedback::Format::Json);
    match feedback::export(&state.pool, format, &caller.scope()).await {
        Ok(body) => {
            let (ctype, name) = match format {
                feedback::Format::Csv => ("text/csv; charset=utf-8", "feedback.csv"),
                feedback::Format::Json => ("application/json", "feedback.json"),
            };
            let disposition = format!("attachment; filename=\"{name}\"");
            ([(header::CONTENT_TYPE, ctype.to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
                .into_response()
        }
        Err(e) => server_error(e),
    }
}

/// `?site=`: which site's record of the study, for a caller who sees several.
#[derive(serde::Deserialize)]
struct SiteQuery {
    site: Option<String>,
}

async fn key_image(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
    Path((study, version)): Path<(String, i32)>,
    Query(q): Query<SiteQuery>,
) -> Response {
    if study.chars().any(char::is_control) {
        return (StatusCode::NOT_FOUND, "no key image\n").into_response();
    }
    let scope = match q.site {
        Some(site) if caller.scope().sees(&site) => firstread_sites::Scope::Only(vec![site]),
        Some(_) => return (StatusCode::NOT_FOUND, "no key image\n").into_response(),
        None => caller.scope(),
    };
    match thumbnail::key_image_png(&state.pool, &state.storage_root, &study, version, &scope).await {
        Ok(png) => ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=3600")], png)
            .into_response(),
        Err(thumbnail::ThumbnailError::NotFound) => (StatusCode::NOT_FOUND, "no key image\n").into_response(),
        Err(e) => server_error(e),
    }
}

/// `GET /triage/events`: changes of the caller's sites only (the data: the Study Instance UID).
async fn events(
    State(state): State<PagesState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let scope = caller.scope();
    let changes = BroadcastStream::new(state.changes.subscribe()).filter_map(move |m| {
        let event = match m {
            // "<site>/<study>" from the triggers; "*" when one may have been missed
            Ok(change) => match change.split_once('/') {
                Some((site, study)) => scope.sees(site).then(|| Event::default().event("changed").data(study)),
                None => Some(Event::default().event("changed").data("*")),
            },
            // lagged behind: everything may have changed
            Err(_) => Some(Event::default().event("changed").data("*")),
        };
        std::future::ready(event.map(Ok))
    });
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(5)))
        .map(|_| Ok(Event::default().event("tick").data("tick")));
    let hello = stream::once(async { Ok(Event::default().event("hello").data("hello")) });
    Sse::new(hello.chain(stream::select(changes, ticks))).keep_alive(KeepAlive::default())
}

/// Listens on [`CHANNEL`] and forwards each notification's payload (a Study Instance UID) to
/// `changes` until `shutdown`; `*` when one may have been missed (everything may have changed).
pub async fn listen(pool: PgPool, changes: broadcast::Sender<String>, shutdown: CancellationToken) {
    let forward = |payload: Option<&str>| {
        let _ = changes.send(payload.unwrap_or("*").to_owned());
    };
    firstread_queue::worker::listen_channel(pool, CHANNEL, forward, shutdown).await;
}
