//! The audit trail: who accessed which study, when, how, and with what outcome.
//!
//! One row per event in `audit_events` (`schemas/0005_audit.sql`), which triggers make
//! append-only. The actions follow the event types of DICOM PS3.15 A.5.3 (IHE ATNA audit
//! messages): instances received and sent, queries, retrievals, views, user authentication. An
//! event names its actor (an AE title, or how an HTTP client authenticated), the address it came
//! from, the study where there is one, and the outcome; `detail` holds the rest (instance counts,
//! HTTP status, the association).
//!
//! What records what: the C-STORE ingest one event per study an association stored into
//! ([`record_association`]), the export jobs one per result set sent, the HTTP server one per
//! request to DICOMweb, the viewer's login and the triage pages (the same event repeated within a
//! minute is recorded once, so a viewer loading a study's frames is one retrieval).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// What was done (PS3.15 A.5.3 event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// DICOM Instances Transferred, received: C-STORE into the node.
    StoreIn,
    /// DICOM Instances Transferred, sent: results sent with C-STORE.
    StoreOut,
    /// STOW-RS: instances stored over HTTP.
    Stow,
    /// Query: QIDO-RS, the triage worklist.
    Query,
    /// DICOM Instances Accessed, read: WADO-RS (metadata, instances, frames, bulk data), key images.
    Retrieve,
    /// Radiologist feedback given or exported.
    Feedback,
    /// User Authentication: a login, a request refused for want of credentials, or an
    /// association refused by the AE-title policy (A-ASSOCIATE-RJ).
    Login,
    /// User Authentication: a logout.
    Logout,
    /// Security Alert, configuration: users, their roles, sites, passwords or tokens changed on
    /// the host (`firstread user ...`), or a node started with its configuration.
    Configure,
    /// DICOM Instances Deleted: received images purged by the retention (the results kept).
    Delete,
}

impl Action {
    /// The name stored in `audit_events.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::StoreIn => "store-in",
            Action::StoreOut => "store-out",
            Action::Stow => "stow",
            Action::Query => "query",
            Action::Retrieve => "retrieve",
            Action::Feedback => "feedback",
            Action::Login => "login",
            Action::Logout => "logout",
            Action::Configure => "configure",
            Action::Delete => "delete",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A DICOM application entity (its AE title).
    Ae(String),
    /// A named user (HTTP: API token or browser session; or the name a refused sign-in tried).
    User(String),
    /// An HTTP client with the bearer token.
    Token,
    /// A browser with the session cookie.
    Session,
    /// An HTTP client without valid credentials.
    Anonymous,
    /// The node itself (e.g. sending results), or an operator on its host (the OS user running
    /// `firstread user ...`).
    Node(String),
}

impl Actor {
    fn parts(&self) -> (&str, &'static str) {
        match self {
            Actor::Ae(ae) => (ae, "ae"),
            Actor::User(name) => (name, "user"),
            Actor::Token => ("bearer token", "token"),
            Actor::Session => ("session cookie", "session"),
            Actor::Anonymous => ("anonymous", "anonymous"),
            Actor::Node(ae) => (ae, "node"),
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who.
    pub actor: Actor,
    /// From where: IP address and port, or `AE@host:port` of a destination.
    pub address: Option<String>,
    /// What.
    pub action: Action,
    /// Which study, where there is one.
    pub study: Option<String>,
    /// The study's site, where it is known (stores and exports; an HTTP request names a study
    /// UID, which the caller's sites resolve).
    pub site: Option<String>,
    /// Whether it succeeded.
    pub success: bool,
    /// Anything else (JSON object).
    pub detail: serde_json::Value,
}

/// Appends `event`.
///
/// # Errors
/// The database's.
pub async fn record(pool: &PgPool, event: &Event) -> Result<(), sqlx::Error> {
    let (actor, kind) = event.actor.parts();
    sqlx::query(
        "INSERT INTO audit_events (actor, actor_kind, address, action, study_instance_uid, outcome, detail, site) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(actor)
    .bind(kind)
    .bind(&event.address)
    .bind(event.action.as_str())
    .bind(&event.study)
    .bind(if event.success { "success" } else { "failure" })
    .bind(&event.detail)
    .bind(&event.site)
    .execute(pool)
    .await?;
    Ok(())
}

/// Appends one [`Action::StoreIn`] event per study that association `id` (calling AE
/// `calling_ae_title` at `address`) stored instances into, with their count; nothing when it
/// stored none. One statement, from the index: what is recorded is what was kept.
///
/// # Errors
/// The database's.
pub async fn record_association(
    pool: &PgPool,
    id: uuid::Uuid,
    calling_ae_title: &str,
    address: &str,
    tls: bool,
    ending: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO audit_events (actor, actor_kind, address, action, study_instance_uid, outcome, detail, site) \
         SELECT $2, 'ae', $3, 'store-in', study_instance_uid, 'success', \
                jsonb_build_object('instances', count(*), 'association', $1::text, 'tls', $4::boolean, 'ending', $5::text), \
                site \
         FROM instances WHERE association_id = $1 GROUP BY site, study_instance_uid",
    )
    .bind(id)
    .bind(calling_ae_title)
    .bind(address)
    .bind(tls)
    .bind(ending)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this study's.
    pub study: Option<String>,
    /// Only this actor's (AE title, or "bearer token", "session cookie", "anonymous").
    pub actor: Option<String>,
    /// Only this action's ([`Action::as_str`]).
    pub action: Option<String>,
    /// Only from this time on.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest first (0: 1000).
    pub limit: i64,
}

/// One recorded event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Recorded {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What kind of actor: ae, user, token, session, anonymous, node.
    pub actor_kind: String,
    /// From where.
    pub address: Option<String>,
    /// What.
    pub action: String,
    /// Which study.
    pub study_instance_uid: Option<String>,
    /// Its site, where known.
    pub site: Option<String>,
    /// success or failure.
    pub outcome: String,
    /// The rest.
    pub detail: serde_json::Value,
}

/// The events that `filter` selects, newest first.
///
/// # Errors
/// The database's.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<Recorded>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, actor_kind, address, action, study_instance_uid, site, outcome, detail \
         FROM audit_events \
         WHERE ($1::text IS NULL OR study_instance_uid = $1) AND ($2::text IS NULL OR actor = $2) \
           AND ($3::text IS NULL OR action = $3) AND ($4::timestamptz IS NULL OR at >= $4) \
         ORDER BY id DESC LIMIT $5",
    )
    .bind(&filter.study)
    .bind(&filter.actor)
    .bind(&filter.action)
    .bind(filter.since)
    .bind(if filter.limit > 0 { filter.limit } else { 1000 })
    .fetch_all(pool)
    .await
}
