//! The OHIF viewer (npm `@ohif/app`, its prebuilt `dist/`, installed by
//! `scripts/bootstrap.sh` under `.viewer/`, never committed) served at `/viewer` on the same
//! origin as the DICOMweb root, so no CORS is needed.
//!
//! - `/viewer`, `/viewer/...`: the viewer's routes (`routerBasename` `/viewer`); any path that is
//!   not a file of `dist/` answers `index.html` (a single-page application).
//! - `/app-config.js` and `/viewer/app-config.js`: `viewer/app-config.js` of this crate with its
//!   placeholders filled in (see `viewer/README.md`).
//! - the bundle's own assets, which the prebuilt `index.html` and its chunks load from the site
//!   root (`/app.bundle.*.js`, `/*.wasm`, ...), are served from `dist/` as the fallback route.
//!
//! Every viewer response carries `Cross-Origin-Opener-Policy: same-origin` and
//! `Cross-Origin-Embedder-Policy: require-corp`: OHIF's WebAssembly decoders need cross-origin
//! isolation (SharedArrayBuffer).

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::{AppState, DICOMWEB_ROOT};

/// The path the viewer is mounted at.
pub const VIEWER_ROOT: &str = "/viewer";

const APP_CONFIG_TEMPLATE: &str = include_str!("../viewer/app-config.js");

/// A viewer installation.
#[derive(Debug)]
pub struct Viewer {
    dist: PathBuf,
    index_html: String,
    app_config: String,
}

impl Viewer {
    /// The viewer in `dist` (OHIF's prebuilt `dist/` folder); `None` when it is not installed.
    ///
    /// # Errors
    /// I/O errors reading an installed `index.html`.
    pub fn load(dist: &Path) -> std::io::Result<Option<Viewer>> {
        let index = dist.join("index.html");
        if !index.is_file() {
            return Ok(None);
        }
        let index_html = std::fs::read_to_string(&index)?;
        // the viewer authenticates with the session cookie of `/login` (same origin), so no
        // Authorization header is written into a file any visitor can load
        let app_config = APP_CONFIG_TEMPLATE
            .replace("__DICOMWEB_ROOT__", DICOMWEB_ROOT)
            .replace("__ROUTER_BASENAME__", VIEWER_ROOT)
            .replace("__AUTHORIZATION__", "");
        Ok(Some(Viewer { dist: dist.to_path_buf(), index_html, app_config }))
    }

    /// The file of `dist/` a request path names, if it exists (no `..`, no hidden files).
    fn file(&self, request_path: &str) -> Option<PathBuf> {
        let relative = request_path.trim_start_matches('/');
        let path = Path::new(relative);
        let clean = !relative.is_empty()
            && path.components().all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
        let full = self.dist.join(path);
        (clean && full.is_file()).then_some(full)
    }
}

/// The viewer's routes (answer 404 when no viewer is installed).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(VIEWER_ROOT, get(|| async { Redirect::permanent("/viewer/") }))
        .route("/viewer/", get(viewer_route))
        .route("/viewer/{*path}", get(viewer_route))
        .route("/app-config.js", get(app_config))
        .route("/viewer/app-config.js", get(app_config))
        .fallback(asset)
}

fn isolated(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-embedder-policy", HeaderValue::from_static("require-corp"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    response
}

async fn app_config(State(state): State<AppState>) -> Response {
    let Some(viewer) = &state.viewer else { return not_installed() };
    isolated(([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], viewer.app_config.clone()).into_response())
}

fn not_installed() -> Response {
    (StatusCode::NOT_FOUND, "the OHIF viewer is not installed here (scripts/bootstrap.sh installs it)\n")
        .into_response()
}

/// `/viewer/...`: a file of `dist/`, or `index.html` for the viewer's own routes.
async fn viewer_route(State(state): State<AppState>, request: Request) -> Response {
    let Some(viewer) = &state.viewer else { return not_installed() };
    let path = request.uri().path().strip_prefix(VIEWER_ROOT).unwrap_or("/");
    match viewer.file(path) {
        Some(file) if !path.ends_with("index.html") => send_file(&file).await,
        _ => isolated(
            (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
                viewer.index_html.clone(),
            )
                .into_response(),
        ),
    }
}

/// Any other GET: an asset of `dist/` loaded from the site root, or 404.
async fn asset(State(state): State<AppState>, request: Request) -> Response {
    let Some(viewer) = &state.viewer else { return StatusCode::NOT_FOUND.into_response() };
    match viewer.file(request.uri().path()) {
        Some(file) if request.method() == axum::http::Method::GET => send_file(&file).await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn send_file(path: &Path) -> Response {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            isolated(([(header::CONTENT_TYPE, mime.to_string())], Body::from(bytes)).into_response())
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
