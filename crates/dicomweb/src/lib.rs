//! DICOMweb for firstread (PS3.18): STOW-RS, QIDO-RS and WADO-RS over the same storage and
//! index as the DIMSE Store SCP, plus `/healthz`, `/readyz`, `/metrics` and the OHIF viewer.
//!
//! - [`stow`]: `POST /studies[/{study}]` (PS3.18 10.5); each instance goes through the
//!   application's [`StowSink`], i.e. the same durable store and study assembly as C-STORE.
//! - [`qido`]: `GET /studies`, `/series`, `/instances` searches (PS3.18 10.6) in the index.
//! - [`wado`]: instance, series and study retrieval, metadata, frames and bulk data
//!   (PS3.18 10.4), from the stored Part 10 files and the DICOM JSON kept in the index.
//! - [`viewer`]: the prebuilt OHIF viewer under `/viewer`, configured for this server.
//! - [`auth`]: bearer token (or the viewer's cookie) on every DICOMweb and metrics request.
//!
//! The HTTP surface never panics on client input: malformed requests get 400 with a reason,
//! unknown objects 404, unsupported media types 406/415.

pub mod auth;
pub mod error;
pub mod forwarded;
pub mod json;
pub mod multipart;
pub mod qido;
pub mod stow;
pub mod viewer;
pub mod wado;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use firstread_store::Index;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::Auth;
pub use error::WebError;
pub use stow::{StowOutcome, StowRequest};

/// The path prefix of the DICOMweb root (QIDO-RS, WADO-RS and STOW-RS share it).
pub const DICOMWEB_ROOT: &str = "/dicom-web";

/// HTTP settings (the `[http]` configuration section).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Whether the node serves HTTP at all.
    pub enabled: bool,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// `bearer` (default): every DICOMweb and `/metrics` request carries
    /// `Authorization: Bearer <token>`; `none`: no authentication (only when explicitly set).
    pub auth: AuthMode,
    /// The bearer token. When absent with `auth = "bearer"`, a random token is generated at
    /// start and written to `<storage root>/http-token` (mode 0600).
    pub token: Option<String>,
    /// Origins allowed to call the API from a browser (CORS), e.g. a viewer on another host;
    /// `["*"]` allows any origin. Empty: same origin only.
    pub cors_allowed_origins: Vec<String>,
    /// The OHIF `dist/` folder to serve at `/viewer` (set up by `scripts/bootstrap.sh` under
    /// `.viewer/`). Absent or missing on disk: `/viewer` answers 404.
    pub viewer_dir: Option<PathBuf>,
    /// Largest STOW-RS request body accepted, in bytes.
    pub max_request_bytes: u64,
    /// `Some`: the listener speaks HTTPS only (TLS 1.2/1.3, BCP 195), with these files; the
    /// certificate is read again on SIGHUP. `client_ca` makes every client present a certificate
    /// that CA issued.
    pub tls: Option<firstread_tls::ServerTlsFiles>,
    /// Reverse proxies (IP addresses) whose `X-Forwarded-*` headers are believed: the scheme and
    /// host of absolute URLs, HTTPS for the session cookie's Secure flag, the client address
    /// (audit trail, sign-in throttling). From anyone else these headers are removed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            auth: AuthMode::Bearer,
            token: None,
            cors_allowed_origins: Vec::new(),
            viewer_dir: Some(PathBuf::from(".viewer/node_modules/@ohif/app/dist")),
            max_request_bytes: 4 << 30,
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// How HTTP requests are authenticated.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Bearer <token>` (or the viewer's session cookie).
    #[default]
    Bearer,
    /// No authentication.
    None,
}

/// Where STOW-RS instances go: the application's durable store and study assembly. An instance
/// is streamed: [`StowSink::begin`] with its File Meta Information, its data set written in the
/// chunks it arrives in ([`StowPart::write`]), then [`StowPart::finish`] (memory per request stays
/// bounded whatever the part size). A part dropped before `finish` leaves nothing.
pub trait StowSink: Send + Sync + 'static {
    /// Starts one instance.
    ///
    /// # Errors
    /// The outcome to report for it (e.g. a transfer syntax or SOP Class not supported).
    fn begin<'a>(&'a self, request: StowRequest<'a>) -> StowBegun<'a>;

    /// Whether new instances are taken now: `Err(why)` when not (e.g. the storage filesystem is
    /// above its high watermark, or read-only). STOW-RS then answers 503 with `Retry-After`, and
    /// `/readyz` 503.
    fn accepts(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What [`StowSink::begin`] resolves to: the part to write into, or the instance's outcome.
pub type StowBegun<'a> = Pin<Box<dyn Future<Output = Result<Box<dyn StowPart>, StowOutcome>> + Send + 'a>>;

/// One STOW-RS instance being received ([`StowSink::begin`]).
pub trait StowPart: Send {
    /// Appends data set bytes.
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>;
    /// Finishes the instance; resolves when it is durable and indexed (then the STOW-RS response
    /// may reference it) or has failed.
    fn finish(self: Box<Self>) -> Pin<Box<dyn Future<Output = StowOutcome> + Send>>;
}

/// Counts and gauges the node refreshes when `/metrics` is scraped (e.g. studies and jobs by
/// state from the database).
pub trait MetricsRefresh: Send + Sync + 'static {
    /// Sets the gauges; errors are logged and the scrape goes on with the previous values.
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The study/series/instance index (with each instance's DICOM JSON).
    pub index: Index,
    /// The storage root (index paths are relative to it).
    pub storage_root: PathBuf,
    /// The port HTTP listens on (for absolute URLs when a client's `Host` omits it).
    pub listen_port: u16,
    /// Whether the listener speaks HTTPS (the scheme of absolute URLs without a reverse proxy).
    pub https: bool,
    /// Largest STOW-RS request body, in bytes ([`HttpConfig::max_request_bytes`]).
    pub max_request_bytes: u64,
    /// STOW-RS target.
    pub sink: Arc<dyn StowSink>,
    /// Request authentication.
    pub auth: Arc<Auth>,
    /// The Prometheus recorder's handle (`None`: `/metrics` answers 404).
    pub metrics: Option<PrometheusHandle>,
    /// Gauges refreshed per scrape.
    pub refresh: Option<Arc<dyn MetricsRefresh>>,
    /// The OHIF viewer, when installed.
    pub viewer: Option<Arc<viewer::Viewer>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("storage_root", &self.storage_root).finish_non_exhaustive()
    }
}

/// The whole HTTP application: DICOMweb under [`DICOMWEB_ROOT`], health, metrics, viewer.
pub fn router(state: AppState, config: &HttpConfig) -> Router {
    let dicomweb = Router::new()
        .route("/studies", get(qido::studies).post(stow::store))
        .route("/studies/{study}", get(wado::retrieve_study).post(stow::store_in_study))
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route("/studies/{study}/series/{series}", get(wado::retrieve_series))
        .route("/studies/{study}/series/{series}/metadata", get(wado::series_metadata))
        .route("/studies/{study}/series/{series}/instances", get(qido::series_instances))
        .route("/studies/{study}/series/{series}/instances/{instance}", get(wado::retrieve_instance))
        .route("/studies/{study}/series/{series}/instances/{instance}/metadata", get(wado::instance_metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", get(wado::frames))
        .route("/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}", get(wado::bulk))
        .route("/series", get(qido::all_series))
        .route("/instances", get(qido::all_instances))
        // STOW-RS streams its body through multer, which enforces `max_request_bytes`
        .layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn_with_state(state.auth.clone(), auth::require));
    let metrics = Router::new()
        .route("/metrics", get(metrics_endpoint))
        .route_layer(axum::middleware::from_fn_with_state(state.auth.clone(), auth::require));
    let mut app = Router::new()
        .nest(DICOMWEB_ROOT, dicomweb)
        .merge(metrics)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/login", get(auth::login))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", axum::routing::post(auth::sign_out))
        .merge(viewer::routes())
        .with_state(state);
    if let Some(cors) = cors_layer(&config.cors_allowed_origins) {
        app = app.layer(cors);
    }
    app.layer(tower_http::trace::TraceLayer::new_for_http())
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE])
            .expose_headers([header::CONTENT_TYPE, header::WARNING]),
    )
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// As [`serve`], over HTTPS: each connection's TLS handshake with `tls`'s configuration at the time
/// it is accepted (HTTP/1.1 or HTTP/2 by ALPN). A connection that fails the handshake (plain HTTP,
/// an untrusted client certificate) is closed and logged at debug level.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<firstread_tls::ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let mut config = (*tls.current()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(std::time::Duration::from_secs(30), acceptor.accept(socket));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "no TLS handshake within 30 s"),
            };
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                app.clone().oneshot(request)
            });
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    // connections in progress finish their requests (bounded, as with plain HTTP's graceful end)
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// `GET /healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers and the storage root is writable; 503 with the reason
/// otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = sqlx::query("SELECT 1").execute(state.index.pool()).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}\n")).into_response();
    }
    // the storage as the sink sees it (the disk guard: statvfs, no write per call)
    if let Err(why) = state.sink.accepts() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not taking instances: {why}\n")).into_response();
    }
    "ready\n".into_response()
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
async fn metrics_endpoint(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<auth::Caller>,
) -> Response {
    let Some(handle) = &state.metrics else { return StatusCode::NOT_FOUND.into_response() };
    if !caller.may(firstread_users::Permission::Metrics) {
        return (StatusCode::FORBIDDEN, "metrics are for monitoring: an admin or service account\n").into_response();
    }
    if let Some(refresh) = &state.refresh {
        refresh.refresh().await;
    }
    let body = only_sites(&handle.render(), &caller.scope());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The Prometheus text a caller of some sites sees: the samples labelled with one of its sites
/// (`site="..."`); node-wide samples (the job queue, stage timings, export failures by
/// destination) tell about every site's traffic and are left out, as are the other sites'
/// samples. Operators ([`firstread_sites::Scope::Every`]) see everything.
fn only_sites(text: &str, scope: &firstread_sites::Scope) -> String {
    if *scope == firstread_sites::Scope::Every {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let keep = line.starts_with('#')
            || line
                .split_once('{')
                .and_then(|(_, rest)| rest.rsplit_once('}'))
                .and_then(|(labels, _)| label(labels, "site"))
                .is_some_and(|site| scope.sees(&site));
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The value of label `name` in a Prometheus label set (`a="x",b="y"`), unescaped.
fn label(labels: &str, name: &str) -> Option<String> {
    let mut rest = labels;
    loop {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if key.trim_start_matches(',').trim() == name {
            return Some(value);
        }
        rest = &after[end + 1..];
    }
}

/// A response body of bytes with a content type.
pub(crate) fn with_type(content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut response = body.into().into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_other_sites_are_left_out() {
        let text = "# TYPE firstread_instances_received_total counter\n\
                    firstread_instances_received_total{site=\"a\",via=\"dimse\"} 3\n\
                    firstread_instances_received_total{via=\"stow\",site=\"b\"} 4\n\
                    firstread_x{website=\"a\",site=\"b\"} 1\n\
                    firstread_y{note=\"site=\\\"a\\\"\",site=\"b\"} 1\n\
                    firstread_associations_open 2\n";
        let a = only_sites(text, &firstread_sites::Scope::Only(vec!["a".into()]));
        assert_eq!(
            a,
            "# TYPE firstread_instances_received_total counter\n\
             firstread_instances_received_total{site=\"a\",via=\"dimse\"} 3\n"
        );
        assert_eq!(only_sites(text, &firstread_sites::Scope::Every), text);
        let none = only_sites(text, &firstread_sites::Scope::Only(vec![]));
        assert_eq!(none, "# TYPE firstread_instances_received_total counter\n");
        assert_eq!(label("a=\"x\",b=\"y\\\"z\"", "b").as_deref(), Some("y\"z"));
        assert_eq!(label("a=\"x\"", "b"), None);
    }
}
