//! Starting the node's HTTP side: DICOMweb over the node's storage, index and ingest, its
//! authentication (a configured or generated bearer token), the OHIF viewer when installed,
//! `/metrics` with gauges read from the database at each scrape, and `GET /api/models/compare`
//! (two model versions compared, [`crate::models::compare`]) behind the same authentication.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use firstread_dicomweb::viewer::Viewer;
use firstread_dicomweb::{AppState, Auth, AuthMode, MetricsRefresh};
use firstread_store::{Index, Storage};
use sqlx::{PgPool, Row};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::ingest::Ingest;

/// Binds `config.http.listen` and serves DICOMweb until `shutdown`; returns the bound address.
///
/// # Errors
/// Port in use, token file not writable.
pub async fn start(
    config: &Config,
    index: &Index,
    storage: &Storage,
    ingest: Arc<Ingest>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let auth = match config.http.auth {
        AuthMode::None => {
            warn!("HTTP authentication is off (http.auth = \"none\")");
            Auth::none()
        }
        AuthMode::Bearer => match shared_token(config, storage.root()) {
            Some(token) => {
                warn!(
                    "http: the shared token (http.token or <storage root>/http-token) is deprecated: add users \
                     (firstread user add) and give machines their own tokens (firstread user token)"
                );
                Auth::bearer(token).with_users(index.pool().clone())
            }
            None => Auth::users(index.pool().clone()),
        },
    };
    let viewer = match &config.http.viewer_dir {
        Some(dir) => Viewer::load(dir).with_context(|| format!("reading the viewer in {}", dir.display()))?,
        None => None,
    };
    if viewer.is_none() {
        info!("no OHIF viewer installed: /viewer answers 404 (scripts/bootstrap.sh installs it)");
    }
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding HTTP {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        index: index.clone(),
        storage_root: storage.root().to_path_buf(),
        listen_port: addr.port(),
        https: config.http.tls.is_some(),
        max_request_bytes: config.http.max_request_bytes,
        sink: ingest,
        auth: Arc::new(auth),
        metrics: crate::telemetry::metrics(),
        refresh: Some(Arc::new(DatabaseGauges { pool: index.pool().clone() })),
        viewer: viewer.map(Arc::new),
    };
    let auth = state.auth.clone();
    let app = firstread_dicomweb::router(state, &config.http);
    let (changes, _) = tokio::sync::broadcast::channel(256);
    tasks.spawn(firstread_pages::listen(index.pool().clone(), changes.clone(), shutdown.clone()));
    let pages = firstread_pages::PagesState {
        pool: index.pool().clone(),
        storage_root: storage.root().to_path_buf(),
        auth,
        changes,
    };
    let trusted = Arc::new(firstread_dicomweb::forwarded::TrustedProxies::new(&config.http.trusted_proxies));
    let models = models_api(index.pool().clone(), pages.auth.clone());
    let app = app
        .merge(firstread_pages::router(pages))
        .merge(models)
        .layer(axum::middleware::from_fn_with_state(
            crate::http_audit::HttpAudit::new(index.pool().clone()),
            crate::http_audit::record,
        ))
        // outermost: the audit trail and every handler see only believable forwarding headers
        .layer(axum::middleware::from_fn_with_state(trusted, firstread_dicomweb::forwarded::only_from_trusted));
    let token = shutdown.clone();
    match &config.http.tls {
        None => {
            tasks.spawn(async move {
                if let Err(e) = firstread_dicomweb::serve(listener, app, token).await {
                    warn!(error = %e, "HTTP server stopped");
                }
            });
        }
        Some(files) => {
            let tls = Arc::new(
                firstread_tls::ServerTls::load(files.clone())
                    .with_context(|| format!("HTTPS ({})", files.certificate.display()))?,
            );
            tasks.spawn(crate::node::reload_on_hangup("HTTPS", tls.clone(), shutdown.clone()));
            tasks.spawn(async move {
                if let Err(e) = firstread_dicomweb::serve_tls(listener, app, tls, token).await {
                    warn!(error = %e, "HTTPS server stopped");
                }
            });
        }
    }
    let scheme = if config.http.tls.is_some() { "HTTPS" } else { "HTTP" };
    info!(%addr, scheme, "listening (DICOMweb /dicom-web, viewer /viewer, triage /triage)");
    // on a node of several sites, users who see every site should be few and known
    let sites = config.sites();
    if sites.len() > 1 {
        let every: Vec<String> =
            sqlx::query_scalar("SELECT name FROM users WHERE '*' = ANY(sites) AND NOT disabled ORDER BY name")
                .fetch_all(index.pool())
                .await
                .unwrap_or_default();
        if !every.is_empty() {
            warn!(
                users = %every.join(", "),
                "these users see every site's studies (site *; users of before sites existed got it): \
                 set their sites with `firstread user sites NAME --site S`"
            );
        }
    }
    Ok(addr)
}

/// `GET /api/models/compare?name=&a=&b=[&limit=]`: [`crate::models::compare`] over the caller's
/// sites, as JSON (`limit`: study versions listed, 1-1000, default 100; the figures cover all).
/// 400 without the three parameters or with a = b; 401 unauthenticated.
fn models_api(pool: PgPool, auth: Arc<Auth>) -> axum::Router {
    axum::Router::new()
        .route("/api/models/compare", axum::routing::get(compare_versions))
        .route_layer(axum::middleware::from_fn_with_state(auth, firstread_dicomweb::auth::require))
        .with_state(pool)
}

/// The query string of `GET /api/models/compare`.
#[derive(Debug, serde::Deserialize)]
struct CompareQuery {
    name: String,
    a: String,
    b: String,
    limit: Option<usize>,
}

async fn compare_versions(
    axum::extract::State(pool): axum::extract::State<PgPool>,
    axum::Extension(caller): axum::Extension<firstread_dicomweb::auth::Caller>,
    axum::extract::Query(q): axum::extract::Query<CompareQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if q.a == q.b || [&q.name, &q.a, &q.b].iter().any(|s| s.trim().is_empty()) {
        return (axum::http::StatusCode::BAD_REQUEST, "name, a and b: a model and two different versions of it\n")
            .into_response();
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match crate::models::compare(&pool, &q.name, &q.a, &q.b, &caller.scope(), limit).await {
        Ok(c) => axum::Json(c).into_response(),
        Err(e) => {
            warn!(error = %e, "model comparison failed");
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// The deprecated shared token: the configured one, or the one an earlier version generated
/// into `<root>/http-token` (the migration path: it keeps working until it is removed). New
/// installs have none: users sign in and machines have their own tokens.
fn shared_token(config: &Config, root: &Path) -> Option<String> {
    if let Some(t) = config.http.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    let existing = std::fs::read_to_string(root.join("http-token")).ok()?;
    Some(existing.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Studies and jobs by state, counted in the database when `/metrics` is scraped.
struct DatabaseGauges {
    pool: PgPool,
}

const STUDIES_BY_STATE: &str = "\
SELECT CASE
    WHEN NOT s.analysable THEN 'not_analysable'
    WHEN s.queued_version < s.version THEN 'assembling'
    ELSE coalesce((
        SELECT CASE WHEN bool_or(j.state IN ('queued', 'running')) THEN 'analysing'
                    WHEN bool_or(j.state = 'dead') THEN 'failed'
                    ELSE 'analysed' END
        FROM jobs j
        WHERE j.kind = 'analysis' AND j.site = s.site AND j.study_instance_uid = s.study_instance_uid
          AND j.study_version = s.queued_version AND NOT j.shadow
    ), 'analysing')
END AS state, s.site, count(*) AS n
FROM studies s GROUP BY 1, 2";

impl DatabaseGauges {
    async fn set(&self) -> Result<(), sqlx::Error> {
        // per site (each site's users see their own: `/metrics` leaves out the others)
        let rows = sqlx::query(STUDIES_BY_STATE).fetch_all(&self.pool).await?;
        let mut sites = std::collections::BTreeSet::new();
        for row in &rows {
            sites.insert(row.try_get::<String, _>("site")?);
        }
        for site in sites {
            for state in ["not_analysable", "assembling", "analysing", "analysed", "failed"] {
                metrics::gauge!("firstread_studies", "state" => state, "site" => site.clone()).set(0.0);
            }
        }
        for row in rows {
            let state: String = row.try_get("state")?;
            let site: String = row.try_get("site")?;
            metrics::gauge!("firstread_studies", "state" => state, "site" => site)
                .set(row.try_get::<i64, _>("n")? as f64);
        }
        for kind in firstread_queue::JobKind::ALL.map(firstread_queue::JobKind::as_str) {
            for state in ["queued", "running", "done", "dead"] {
                metrics::gauge!("firstread_jobs", "kind" => kind, "state" => state).set(0.0);
            }
        }
        for row in
            sqlx::query("SELECT kind, state, count(*) AS n FROM jobs GROUP BY 1, 2").fetch_all(&self.pool).await?
        {
            let kind: String = row.try_get("kind")?;
            let state: String = row.try_get("state")?;
            metrics::gauge!("firstread_jobs", "kind" => kind, "state" => state).set(row.try_get::<i64, _>("n")? as f64);
        }
        Ok(())
    }
}

impl MetricsRefresh for DatabaseGauges {
    fn refresh(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Err(e) = self.set().await {
                warn!(error = %e, "metrics: database gauges not refreshed");
            }
        })
    }
}
