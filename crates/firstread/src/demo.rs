//! `firstread demo`: the whole path on the bundled real chest CT, in one process.
//!
//! A node ([`Node`], every role) starts with a temporary storage folder and a uniquely named
//! temporary PostgreSQL database ([`TempDatabase`]). A receiving AE ([`Receiver`], AE title
//! [`DEMO_AE_TITLE`]: an in-process Store SCP that keeps what it receives and the time it
//! acknowledged each object) stands in for the modality. The sample is pushed to the node with
//! the C-STORE SCU (PS3.7 9.1.1) as that AE; the node sends the first read back to it (TID 1500
//! SR, volumetric SR, SEG, Secondary Capture key images); the demo prints the findings and the
//! time from the last C-STORE-RSP the SCU received to the C-STORE-RSP the receiving AE gave the
//! SR, split into stages from what the database records ([`Stages`]). The database is dropped and
//! the storage folder removed at the end, also on failure and on Ctrl-C.
//!
//! [`Session`] (node + receiving AE) is also what `firstread bench time-to-result` drives.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use firstread_dimse::command::status;
use firstread_dimse::scu::{self, Destination, Instance, Part10Header, ScuConfig, StoreScu};
use firstread_dimse::{InstanceStore, Outcome, PendingInstance, ScpConfig, StoreRequest, StoreScp};
use firstread_findings::{vocabulary, Effusion, ExtentClass, FocalLesion, IndeterminateDense, Pattern};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::config::Config;
use crate::node::{Node, Roles};

/// AE title of the demo's receiving AE (the "modality" the results go back to).
pub const DEMO_AE_TITLE: &str = "DEMO_CT";

/// Default PostgreSQL server on which the temporary database is created (the `postgres`
/// maintenance database is only used to CREATE and DROP it).
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The bundled sample series, relative to the repository root.
pub const DEFAULT_SAMPLE: &str = "data/ct/lung-dx-a0002-b40f";

/// Marker file that makes an output folder ours to clear on the next run.
const OUT_MARKER: &str = ".firstread-demo";

/// CT Image Storage (PS3.4 B.5).
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Enhanced CT Image Storage (PS3.4 B.5).
const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";

/// Largest object the receiving AE keeps in memory (bytes); result objects are a few MB.
const MAX_OBJECT_BYTES: usize = 1 << 30;

/// Maximum of the CT severity score (Francone 2020: 6 zones x 0-5).
pub const SEVERITY_SCORE_MAX: u8 = 30;

/// What `firstread demo` does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Folder of the series to send; its files named `1-*.dcm` are sent (the bundled sample's
    /// instance files; the JPEG-LS folder also holds `dcmtk_*` copies that are left out).
    pub sample: PathBuf,
    /// Where the received objects and `first-read.json` are written.
    pub out: PathBuf,
    /// PostgreSQL URL of a database on the server where the temporary one is created.
    pub postgres: String,
    /// The node's `assembly.stable_after` (wait after a study's last instance).
    pub stable_after: Duration,
    /// Give up when the results have not come back this long after the last C-STORE-RSP.
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------------------------
// The temporary database

/// A uniquely named PostgreSQL database (`firstread_demo_<12 hex digits>`) for one run; drop it
/// with [`TempDatabase::drop_database`].
#[derive(Debug)]
pub struct TempDatabase {
    /// Its name.
    pub name: String,
    /// Connection URL of the database.
    pub url: String,
    admin_url: String,
}

impl TempDatabase {
    /// Creates the database on the server of `admin_url`.
    ///
    /// # Errors
    /// Server unreachable, authentication refused, no CREATEDB right.
    pub async fn create(admin_url: &str) -> anyhow::Result<TempDatabase> {
        let name = format!("firstread_demo_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = admin_pool(admin_url).await?;
        let created = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await;
        admin.close().await;
        created.with_context(|| format!("CREATE DATABASE {name}"))?;
        info!(database = %name, "temporary database created");
        Ok(TempDatabase { url: with_database(admin_url, &name), name, admin_url: admin_url.to_owned() })
    }

    /// Drops the database, closing any connection still open to it (`WITH (FORCE)`).
    ///
    /// # Errors
    /// Server unreachable.
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let admin = admin_pool(&self.admin_url).await?;
        let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&admin).await;
        admin.close().await;
        dropped.with_context(|| format!("DROP DATABASE {}", self.name))?;
        info!(database = %self.name, "temporary database dropped");
        Ok(())
    }
}

async fn admin_pool(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redacted(url)))
}

/// `url` with its database path replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` with any password replaced by `***`, for messages.
pub fn redacted(url: &str) -> String {
    let authority = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[authority..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@').and_then(|at| rest[..at].find(':').map(|colon| (colon, at))) {
        Some((colon, at)) => format!("{}{}:***{}", &url[..authority], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The receiving AE

/// One object the receiving AE acknowledged.
#[derive(Debug, Clone)]
pub struct ReceivedObject {
    /// Affected SOP Class UID of the C-STORE-RQ.
    pub sop_class_uid: String,
    /// Affected SOP Instance UID.
    pub sop_instance_uid: String,
    /// Calling AE title of the association it came on.
    pub calling_ae_title: String,
    /// When its C-STORE-RSP Success was handed to the SCP (wall clock, this process), i.e. the
    /// instant the receiving AE acknowledged it.
    pub acknowledged_at: DateTime<Utc>,
    /// Where it was written (Part 10), when the receiver keeps files.
    pub path: Option<PathBuf>,
    /// Data set size (bytes).
    pub bytes: usize,
    /// How many times it was received (a second C-STORE of the same instance counts here and
    /// keeps the first file and time).
    pub copies: usize,
}

#[derive(Debug)]
struct ReceiverState {
    dir: Option<PathBuf>,
    objects: Mutex<HashMap<String, ReceivedObject>>,
}

/// The receiving AE: a Store SCP (crate `firstread-dimse`) on 127.0.0.1 that keeps every object
/// it is sent (in memory, then as a Part 10 file when it has a folder) and records when it
/// acknowledged each one.
#[derive(Debug)]
pub struct Receiver {
    /// Its TCP address.
    pub addr: SocketAddr,
    /// Its AE title.
    pub ae_title: String,
    state: Arc<ReceiverState>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiving AE on 127.0.0.1 (any free port); objects are written under `dir` when
    /// given (the folder must exist).
    ///
    /// # Errors
    /// No free port.
    pub async fn start(ae_title: &str, dir: Option<PathBuf>) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding the receiving AE")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ReceiverState { dir, objects: Mutex::new(HashMap::new()) });
        let config = ScpConfig { ae_title: ae_title.to_owned(), ..ScpConfig::default() };
        let scp = StoreScp::new(config, Arc::new(ReceiverStore(state.clone())));
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let span = info_span!("receiver", ae_title = %ae_title);
        let task = tokio::spawn(
            async move {
                if let Err(e) = scp.serve(listener, token).await {
                    warn!(error = %e, "receiving AE stopped");
                }
            }
            .instrument(span),
        );
        Ok(Receiver { addr, ae_title: ae_title.to_owned(), state, shutdown, task })
    }

    /// This AE as an export destination.
    pub fn destination(&self) -> Destination {
        Destination { ae_title: self.ae_title.clone(), host: self.addr.ip().to_string(), port: self.addr.port() }
    }

    /// The object with this SOP Instance UID, if it was acknowledged.
    pub fn get(&self, sop_instance_uid: &str) -> Option<ReceivedObject> {
        self.objects().get(sop_instance_uid).cloned()
    }

    /// How many distinct objects were acknowledged.
    pub fn count(&self) -> usize {
        self.objects().len()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReceivedObject>> {
        self.state.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops listening and waits (at most 5 s) for associations in progress.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.task).await.is_err() {
            warn!("receiving AE did not stop within 5 s");
        }
    }
}

struct ReceiverStore(Arc<ReceiverState>);

struct ReceiverPending {
    state: Arc<ReceiverState>,
    request: StoreRequest,
    bytes: Vec<u8>,
}

impl InstanceStore for ReceiverStore {
    type Pending = ReceiverPending;

    async fn begin(&self, request: &StoreRequest) -> Result<ReceiverPending, Outcome> {
        Ok(ReceiverPending { state: self.0.clone(), request: request.clone(), bytes: Vec::new() })
    }
}

impl PendingInstance for ReceiverPending {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.bytes.len() + bytes.len() > MAX_OBJECT_BYTES {
            return Err(std::io::Error::other("object larger than 1 GiB"));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    async fn commit(self) -> Outcome {
        let r = &self.request;
        let known = self.state.objects.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&r.sop_instance_uid);
        let path = match (&self.state.dir, known) {
            (Some(dir), false) => match write_part10(dir, r, &self.bytes).await {
                Ok(path) => Some(path),
                Err(e) => return Outcome::with_comment(status::OUT_OF_RESOURCES, format!("not written: {e}")),
            },
            _ => None,
        };
        let mut objects = self.state.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.entry(r.sop_instance_uid.clone()).and_modify(|o| o.copies += 1).or_insert_with(|| ReceivedObject {
            sop_class_uid: r.sop_class_uid.clone(),
            sop_instance_uid: r.sop_instance_uid.clone(),
            calling_ae_title: r.association.calling_ae_title.clone(),
            acknowledged_at: Utc::now(),
            path,
            bytes: self.bytes.len(),
            copies: 1,
        });
        Outcome::success()
    }
}

/// Short name of a result object's kind by SOP Class (file names, listings).
pub fn object_kind(sop_class_uid: &str) -> &'static str {
    match sop_class_uid {
        firstread_report::sr::COMPREHENSIVE_3D_SR_STORAGE => "SR",
        firstread_report::seg::SEG_SOP_CLASS_UID => "SEG",
        firstread_report::sc::SC_SOP_CLASS_UID => "SC",
        u if u.starts_with("1.2.840.10008.5.1.4.1.1.88.") => "SR",
        _ => "OBJ",
    }
}

/// Writes a received data set as a Part 10 file `<kind>-<SOP Instance UID>.dcm` (PS3.10 7.1:
/// preamble, "DICM", File Meta Information with the presentation context's transfer syntax).
async fn write_part10(dir: &Path, r: &StoreRequest, dataset: &[u8]) -> anyhow::Result<PathBuf> {
    let safe: String =
        r.sop_instance_uid.chars().map(|c| if c.is_ascii_digit() || c == '.' { c } else { '_' }).collect();
    let path = dir.join(format!("{}-{safe}.dcm", object_kind(&r.sop_class_uid)));
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(r.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(r.sop_instance_uid.as_str())
        .transfer_syntax(r.transfer_syntax_uid.as_str())
        .implementation_class_uid(firstread_store::storage::IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(firstread_store::storage::IMPLEMENTATION_VERSION_NAME);
    if !r.association.calling_ae_title.trim().is_empty() {
        builder = builder.source_application_entity_title(r.association.calling_ae_title.trim());
    }
    let meta = builder.build()?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)?;
    out.extend_from_slice(dataset);
    tokio::fs::write(&path, out).await.with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Node + receiving AE

/// What was pushed to the node.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Study Instance UID (of the first file).
    pub study_instance_uid: String,
    /// Instances acknowledged by the node.
    pub instances: usize,
    /// Data set bytes sent.
    pub bytes: u64,
    /// From the association request to the last C-STORE-RSP.
    pub duration: Duration,
    /// When the SCU received the last C-STORE-RSP (wall clock, this process).
    pub last_response_at: DateTime<Utc>,
}

/// Timestamps of one study's path, from the SCU, the database and the receiving AE; all on this
/// machine's wall clock (PostgreSQL runs on the same machine in the demo and the benchmark).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marks {
    /// The SCU received the last C-STORE-RSP.
    pub last_response_at: DateTime<Utc>,
    /// The study's stability deadline: its last CT instance indexed (`instances.received_at`, the
    /// same transaction time that set `studies.stable_at`) + `stable_after`.
    pub stable_at: DateTime<Utc>,
    /// `jobs.started_at` of the analysis job (claimed by a worker).
    pub analysis_started_at: DateTime<Utc>,
    /// Volume assembly (ms), from the analysis job's `result.timings_ms.volume`.
    pub volume_ms: f64,
    /// Model (ms), `timings_ms.model`: denoising and TorchScript.
    pub model_ms: f64,
    /// The model's pleural-cavity step (ms), `timings_ms.pleural_cavity` (0 for a package without it).
    pub pleural_cavity_ms: f64,
    /// Measurements (ms), `timings_ms.measurements`.
    pub measurements_ms: f64,
    /// `jobs.created_at` of the export job (queued by the analysis once its files were written).
    pub export_queued_at: DateTime<Utc>,
    /// The receiving AE acknowledged the SR.
    pub sr_acknowledged_at: DateTime<Utc>,
}

/// The time from the last C-STORE-RSP to the SR acknowledged by the receiving AE, split into
/// consecutive stages (seconds; they add up to `total_s`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Stages {
    /// Last C-STORE-RSP -> the study's stability deadline (about `stable_after`), s.
    pub stability_wait_s: f64,
    /// Stability deadline -> analysis job claimed: promotion (assembly tick), NOTIFY, claim, s.
    pub queue_pickup_s: f64,
    /// Instance files read and decoded, CT volume built, s.
    pub volume_s: f64,
    /// Denoising and the TorchScript model (lungs, opacity), s.
    pub model_s: f64,
    /// The pleural-cavity step (dense dependent regions, effusion), s.
    pub pleural_cavity_s: f64,
    /// Findings from the masks (volumes, zones, scores, key slices), s.
    pub measurements_s: f64,
    /// The rest of the analysis job until the export job is queued: instance lookup, SR, SEG and
    /// key images built and written (fsync), s.
    pub reporting_s: f64,
    /// Export job queued -> SR acknowledged: claim, association, C-STORE of the SR, s.
    pub export_s: f64,
    /// Last C-STORE-RSP -> SR acknowledged by the receiving AE, s.
    pub total_s: f64,
}

impl Stages {
    /// Splits the path between `marks` into stages.
    pub fn split(m: &Marks) -> Stages {
        // integer microseconds, so that the stages add up exactly
        let us = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).num_microseconds().unwrap_or(0);
        let ms_us = |ms: f64| (ms * 1000.0).round() as i64;
        let s = |us: i64| us as f64 / 1e6;
        let (volume, model, measurements) = (ms_us(m.volume_ms), ms_us(m.model_ms), ms_us(m.measurements_ms));
        let cavity = ms_us(m.pleural_cavity_ms);
        Stages {
            stability_wait_s: s(us(m.last_response_at, m.stable_at)),
            queue_pickup_s: s(us(m.stable_at, m.analysis_started_at)),
            volume_s: s(volume),
            model_s: s(model),
            pleural_cavity_s: s(cavity),
            measurements_s: s(measurements),
            reporting_s: s(us(m.analysis_started_at, m.export_queued_at) - volume - model - cavity - measurements),
            export_s: s(us(m.export_queued_at, m.sr_acknowledged_at)),
            total_s: s(us(m.last_response_at, m.sr_acknowledged_at)),
        }
    }

    /// The stages with their display names, in order (total excluded).
    pub fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("stability wait", self.stability_wait_s),
            ("queue pick-up", self.queue_pickup_s),
            ("volume", self.volume_s),
            ("model", self.model_s),
            ("pleural cavity", self.pleural_cavity_s),
            ("measurements", self.measurements_s),
            ("reporting", self.reporting_s),
            ("export", self.export_s),
        ]
    }
}

/// One result object as delivered to the receiving AE.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveredObject {
    /// "SR", "SEG" or "SC".
    pub kind: &'static str,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Class name (PS3.6).
    pub sop_class: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// The file the receiving AE wrote (`None` when it keeps no files).
    pub path: Option<PathBuf>,
    /// Seconds from the last C-STORE-RSP of the CT to this object's acknowledgement.
    pub acknowledged_after_s: f64,
}

/// A first read delivered to the receiving AE.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The study version analysed.
    pub study_version: i32,
    /// The analysis job's result (JSON: status, model, series, volume, findings, timings_ms,
    /// result_files).
    pub result: Value,
    /// The result objects in the order the node sent them (SR first).
    pub objects: Vec<DeliveredObject>,
    /// Stage split of last C-STORE-RSP -> SR acknowledged.
    pub stages: Stages,
}

#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    state: String,
    attempts: i32,
    last_error: Option<String>,
    result: Option<Value>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
}

/// A node (every role, temporary storage folder) and a receiving AE to which it sends results.
#[derive(Debug)]
pub struct Session {
    /// The running node.
    pub node: Node,
    /// The receiving AE (listed as the node's export destination).
    pub receiver: Receiver,
    /// The node's `assembly.stable_after`.
    pub stable_after: Duration,
    ae_title: String,
    _storage: tempfile::TempDir,
}

impl Session {
    /// Starts a receiving AE ([`DEMO_AE_TITLE`], files under `out` when given) and a node on
    /// `database_url` with a temporary storage folder. From `base` only the worker settings
    /// (models, threads) and the notifications are taken; everything else is the default with the DIMSE listener on
    /// 127.0.0.1 (any free port), the given `stable_after`, and the receiving AE as the only
    /// export destination.
    ///
    /// # Errors
    /// Model package missing, database unreachable, no free port.
    pub async fn start(
        base: &Config,
        database_url: &str,
        stable_after: Duration,
        out: Option<PathBuf>,
    ) -> anyhow::Result<Session> {
        let storage = tempfile::Builder::new().prefix("firstread-demo-").tempdir().context("temporary folder")?;
        let receiver = Receiver::start(DEMO_AE_TITLE, out).await?;
        let config = session_config(base, database_url, storage.path(), stable_after, receiver.destination());
        let node = match Node::start(&config, Roles::ALL).await {
            Ok(node) => node,
            Err(e) => {
                receiver.stop().await;
                return Err(e.context(format!(
                    "starting the node (models from {}; run from the repository root or set worker.models_dir)",
                    config.worker.models_dir.display()
                )));
            }
        };
        Ok(Session { node, receiver, stable_after, ae_title: config.node.ae_title.clone(), _storage: storage })
    }

    /// Pushes `files` (Part 10) to the node over one association, calling AE [`DEMO_AE_TITLE`],
    /// loading one data set at a time; `progress` advances per instance.
    ///
    /// # Errors
    /// Unreadable files, association refused, any instance not stored (status other than
    /// Success or Warning).
    pub async fn send(&self, files: &[PathBuf], progress: &ProgressBar) -> anyhow::Result<Sent> {
        let headers: Vec<(&PathBuf, Part10Header)> = files
            .iter()
            .map(|p| scu::read_part10_header(p).map(|h| (p, h)).with_context(|| format!("reading {}", p.display())))
            .collect::<anyhow::Result<_>>()?;
        let first = files.first().context("no file to send")?;
        let study_instance_uid = study_uid_of(first)?;
        let addr = self.node.dimse_addr.context("the node has no DIMSE listener")?;
        let dest = Destination { ae_title: self.ae_title.clone(), host: addr.ip().to_string(), port: addr.port() };
        let config = ScuConfig { calling_ae_title: DEMO_AE_TITLE.into(), ..ScuConfig::default() };
        let pairs = headers.iter().map(|(_, h)| (h.sop_class_uid.as_str(), h.transfer_syntax_uid.as_str()));
        let started = Instant::now();
        let mut scu =
            StoreScu::connect(&dest, &config, pairs).await.with_context(|| format!("associating with {dest}"))?;
        progress.set_length(files.len() as u64);
        let (mut bytes, mut last_response_at) = (0u64, Utc::now());
        for (path, _) in &headers {
            let instance = match Instance::from_part10_file(path) {
                Ok(instance) => instance,
                Err(e) => {
                    scu.abort().await;
                    bail!("reading {}: {e}", path.display());
                }
            };
            let result = match scu.store(&instance).await {
                Ok(result) => result,
                Err(e) => {
                    scu.abort().await;
                    bail!("sending {} to {dest}: {e}", path.display());
                }
            };
            last_response_at = Utc::now();
            if !result.is_success_or_warning() {
                scu.abort().await;
                bail!(
                    "{dest} did not store {}: status {:04X} {}",
                    path.display(),
                    result.status,
                    result.comment.unwrap_or_default()
                );
            }
            bytes += instance.dataset.len() as u64;
            progress.inc(1);
        }
        let duration = started.elapsed();
        if let Err(e) = scu.release().await {
            warn!(error = %e, "A-RELEASE failed after all responses");
        }
        Ok(Sent { study_instance_uid, instances: files.len(), bytes, duration, last_response_at })
    }

    /// Waits until the first read of `sent`'s study has been acknowledged by the receiving AE
    /// (every result object of the analysis), polling the database every 100 ms; `progress`
    /// shows the current stage.
    ///
    /// # Errors
    /// The study was refused (with the reason), the analysis or the export died (with the last
    /// error), or nothing came back within `timeout` of the last C-STORE-RSP.
    pub async fn wait_for_results(
        &self,
        sent: &Sent,
        timeout: Duration,
        progress: &ProgressBar,
    ) -> anyhow::Result<Delivered> {
        let pool = self.node.index.pool();
        let study = &sent.study_instance_uid;
        let deadline = Instant::now() + timeout;
        let stable = format!("waiting for the study to be stable ({} s)", self.stable_after.as_secs_f64());
        loop {
            let phase = match job(pool, "analysis", study, "").await? {
                None => stable.clone(),
                Some(a) => match a.state.as_str() {
                    "dead" => bail!(
                        "the analysis failed {} time(s); last error: {}",
                        a.attempts,
                        a.last_error.unwrap_or_default()
                    ),
                    "queued" if a.attempts > 0 => {
                        format!("analysis retrying after: {}", a.last_error.unwrap_or_default())
                    }
                    "queued" => "analysis queued".into(),
                    "running" => "analysing: volume, model, measurements, result objects".into(),
                    _ => {
                        let result = a.result.clone().unwrap_or(Value::Null);
                        if result["status"] != "analysed" {
                            bail!(
                                "the study was not analysed: {}",
                                result["reason"].as_str().unwrap_or("no reason recorded")
                            );
                        }
                        match job(pool, "export", study, &self.receiver.ae_title).await? {
                            None => bail!("the analysis queued no export to {}", self.receiver.ae_title),
                            Some(e) if e.state == "done" => return self.delivered(sent, &a, &e).await,
                            Some(e) if e.state == "dead" => bail!(
                                "sending the results to {} failed {} time(s); last error: {}",
                                self.receiver.ae_title,
                                e.attempts,
                                e.last_error.unwrap_or_default()
                            ),
                            Some(e) if e.attempts > 0 => format!(
                                "sending the results to {} (retrying after: {})",
                                self.receiver.ae_title,
                                e.last_error.unwrap_or_default()
                            ),
                            Some(_) => format!(
                                "sending the results to {}: {} acknowledged",
                                self.receiver.ae_title,
                                self.receiver.count()
                            ),
                        }
                    }
                },
            };
            progress.set_message(phase.clone());
            if Instant::now() > deadline {
                bail!("no first read within {} s (last state: {phase})", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delivered(&self, sent: &Sent, analysis: &JobRow, export: &JobRow) -> anyhow::Result<Delivered> {
        let pool = self.node.index.pool();
        let result = analysis.result.clone().unwrap_or(Value::Null);
        let files: Vec<&str> =
            result["result_files"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut objects = Vec::with_capacity(files.len());
        for f in files {
            let header = scu::read_part10_header(self.node.storage.resolve(f))
                .with_context(|| format!("reading the result object {f}"))?;
            let got = self.receiver.get(&header.sop_instance_uid).with_context(|| {
                format!("the export finished but {} has not acknowledged {f}", self.receiver.ae_title)
            })?;
            let after = (got.acknowledged_at - sent.last_response_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            let after = (after * 1e6).round() / 1e6;
            objects.push(DeliveredObject {
                kind: object_kind(&header.sop_class_uid),
                sop_class: scu::sop_class_name(&header.sop_class_uid),
                sop_class_uid: header.sop_class_uid,
                sop_instance_uid: header.sop_instance_uid,
                path: got.path,
                acknowledged_after_s: after,
            });
        }
        let sr = objects.first().filter(|o| o.kind == "SR").context("the first result object is not the SR")?;
        let sr_acknowledged_at = self.receiver.get(&sr.sop_instance_uid).context("SR acknowledged")?.acknowledged_at;
        // The stability deadline the CT set: its last instance's index time + stable_after
        // (`studies.stable_at` itself may move later when result objects are indexed).
        let last_indexed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(received_at) FROM instances WHERE study_instance_uid = $1 AND sop_class_uid = ANY($2)",
        )
        .bind(&sent.study_instance_uid)
        .bind([CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE])
        .fetch_one(pool)
        .await
        .context("reading when the CT was indexed")?;
        let stable_at = last_indexed.context("no CT instance indexed")?
            + chrono::Duration::from_std(self.stable_after).unwrap_or_default();
        let ms = |k: &str| result["timings_ms"][k].as_f64().unwrap_or(0.0);
        let marks = Marks {
            last_response_at: sent.last_response_at,
            stable_at,
            analysis_started_at: analysis.started_at.context("the analysis job has no start time")?,
            volume_ms: ms("volume"),
            model_ms: ms("model"),
            pleural_cavity_ms: ms("pleural_cavity"),
            measurements_ms: ms("measurements"),
            export_queued_at: export.created_at,
            sr_acknowledged_at,
        };
        let study_version = result["study_version"].as_i64().and_then(|v| i32::try_from(v).ok()).unwrap_or(1);
        Ok(Delivered { study_version, result, objects, stages: Stages::split(&marks) })
    }

    /// Stops the node, then the receiving AE; the storage folder is removed.
    pub async fn stop(self) {
        self.node.stop().await;
        self.receiver.stop().await;
    }
}

/// The node configuration of a [`Session`].
fn session_config(
    base: &Config,
    database_url: &str,
    root: &Path,
    stable_after: Duration,
    destination: Destination,
) -> Config {
    let mut config = Config { worker: base.worker.clone(), log: base.log.clone(), ..Config::default() };
    config.worker.hold_for = Duration::ZERO;
    config.dimse.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http.enabled = false;
    config.storage.root = root.to_path_buf();
    config.database.url = database_url.to_owned();
    config.database.max_connections = 8;
    config.assembly.stable_after = stable_after;
    config.export.always = Vec::new();
    config.export.destinations = vec![destination];
    config.export.max_attempts = 4;
    config.export.backoff_base = Duration::from_millis(500);
    config.export.backoff_max = Duration::from_secs(4);
    config.notify = base.notify.clone();
    config
}

async fn job(pool: &PgPool, kind: &str, study: &str, destination: &str) -> anyhow::Result<Option<JobRow>> {
    sqlx::query_as(
        "SELECT state, attempts, last_error, result, created_at, started_at FROM jobs \
         WHERE kind = $1 AND study_instance_uid = $2 AND ($3 = '' OR destination = $3) \
         ORDER BY study_version DESC, id DESC LIMIT 1",
    )
    .bind(kind)
    .bind(study)
    .bind(destination)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading the {kind} job"))
}

/// Study Instance UID (0020,000D) of a Part 10 file.
fn study_uid_of(path: &Path) -> anyhow::Result<String> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let uid = obj
        .element(tags::STUDY_INSTANCE_UID)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{} has no Study Instance UID", path.display()))?;
    Ok(uid)
}

/// The bundled sample's instance files in `folder`: the files named `1-*.dcm`, sorted.
///
/// # Errors
/// Folder unreadable or without such files.
pub fn sample_files(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("reading the sample folder {}", folder.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("1-") && n.ends_with(".dcm")))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no 1-*.dcm files in {}", folder.display());
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// The first read

/// Lung volume, opacity volume and involvement (the findings' JSON names carry the units).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Involvement {
    /// Lung volume (mL).
    pub lung_ml: f64,
    /// Opacity volume inside the lung (mL).
    pub opacity_ml: f64,
    /// Opacity / lung volume (%).
    pub involvement_pct: f64,
}

/// One lung.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LungRead {
    /// "left" or "right" (the patient's).
    pub side: String,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
}

/// One of the six zones (upper, middle, lower third of each lung).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZoneRead {
    /// "left" or "right".
    pub side: String,
    /// "upper", "middle" or "lower".
    pub level: String,
    /// Its volumes.
    #[serde(flatten)]
    pub involvement: Involvement,
    /// Zone score 0-5 (Francone 2020).
    pub score: u8,
}

/// The first read as the analysis job recorded it (`result.findings`), the parts printed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FirstRead {
    /// Left then right lung.
    pub lungs: Vec<LungRead>,
    /// Both lungs.
    pub total: Involvement,
    /// Six zones.
    pub zones: Vec<ZoneRead>,
    /// CT severity score, 0-30 (sum of the zone scores).
    pub severity_score: u8,
    /// SFR extent class (snake_case name, e.g. "none_or_minimal").
    pub extent_class: String,
    /// Suggested RSNA category (e.g. "indeterminate").
    pub pattern: String,
    /// Why that category.
    pub pattern_rationale: String,
    /// Pleural effusion per side (empty: the pleural cavity was not assessed).
    #[serde(default)]
    pub effusions: Vec<Effusion>,
    /// Indeterminate dense dependent region per side.
    #[serde(default)]
    pub indeterminate_dense: Vec<IndeterminateDense>,
    /// Dense focal lesions, largest first.
    #[serde(default)]
    pub focal_lesions: Vec<FocalLesion>,
    /// What the reader must know about this result.
    #[serde(default)]
    pub cautions: Vec<String>,
}

/// Everything `firstread demo` reports (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Study Instance UID of the sample.
    pub study_instance_uid: String,
    /// Study version analysed.
    pub study_version: i32,
    /// The model package: name, version, kind.
    pub model: Value,
    /// Measurements; names carry their units (see `units`).
    pub first_read: FirstRead,
    /// Maximum of `first_read.severity_score`.
    pub severity_score_max: u8,
    /// Display name of the extent class.
    pub extent_class_label: String,
    /// Display name of the suggested RSNA category.
    pub pattern_label: String,
    /// Unit of each measurement name suffix.
    pub units: BTreeMap<&'static str, &'static str>,
    /// Instances sent by the SCU.
    pub instances_sent: usize,
    /// From the association request to the last C-STORE-RSP (s).
    pub send_s: f64,
    /// The node's `stable_after` (s).
    pub stable_after_s: f64,
    /// Last C-STORE-RSP -> SR acknowledged by the receiving AE (s).
    pub time_to_result_s: f64,
    /// That time split into stages (s).
    pub stages: Stages,
    /// Result objects acknowledged by the receiving AE, SR first.
    pub received: Vec<DeliveredObject>,
    /// The receiving AE's AE title.
    pub received_by: String,
    /// Output folder.
    pub output_folder: PathBuf,
    /// The analysis job's full result (JSON).
    pub result_json: PathBuf,
    /// The temporary database (dropped).
    pub database: String,
}

impl DemoReport {
    /// The human-readable first read.
    pub fn render(&self) -> String {
        let f = &self.first_read;
        let mut o = String::new();
        let name = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_owned();
        let _ = writeln!(
            o,
            "\nFIRST READ  (model {} {}, {}; a pre-read aid, not a diagnosis)",
            name(&self.model, "name"),
            name(&self.model, "version"),
            name(&self.model, "kind")
        );
        let _ = writeln!(o, "  study {} (version {})", self.study_instance_uid, self.study_version);
        let _ = writeln!(o, "  {:<12} {:>10} {:>12} {:>12}", "", "lung", "opacity", "involvement");
        let mut lungs: Vec<&LungRead> = f.lungs.iter().collect();
        lungs.sort_by_key(|l| l.side != "right");
        for l in lungs {
            let _ = writeln!(o, "  {:<12} {}", format!("{} lung", l.side), involvement_row(&l.involvement));
        }
        let _ = writeln!(o, "  {:<12} {}", "both lungs", involvement_row(&f.total));
        let _ = writeln!(o, "  zones: opacity % of the zone (score 0-5)");
        let _ = writeln!(o, "  {:<12} {:>12} {:>12}", "", "right", "left");
        for level in ["upper", "middle", "lower"] {
            let cell = |side: &str| {
                f.zones
                    .iter()
                    .find(|z| z.side == side && z.level == level)
                    .map(|z| format!("{:.1} % ({})", z.involvement.involvement_pct, z.score))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(o, "  {:<12} {:>12} {:>12}", level, cell("right"), cell("left"));
        }
        let label = |t: vocabulary::Term| format!("{:<19}", t.label);
        let _ = writeln!(
            o,
            "  {} {}/{} (Francone 2020)",
            label(vocabulary::SEVERITY_SCORE),
            f.severity_score,
            self.severity_score_max
        );
        let _ = writeln!(o, "  {} {} (SFR)", label(vocabulary::EXTENT_CLASS), self.extent_class_label);
        let _ = writeln!(
            o,
            "  {} {} (RSNA): {}",
            label(vocabulary::RSNA_SUGGESTION),
            self.pattern_label,
            f.pattern_rationale
        );
        for line in other_findings(f) {
            let _ = writeln!(o, "  {line}");
        }
        let _ = writeln!(
            o,
            "\nLast C-STORE-RSP to the SR acknowledged by {}: {:.2} s (stable_after {} s)",
            self.received_by, self.time_to_result_s, self.stable_after_s
        );
        let stages: Vec<String> = self.stages.named().iter().map(|(name, s)| format!("{name} {:.2} s", s)).collect();
        let _ = writeln!(o, "  {}", stages.join(", "));
        let _ = writeln!(
            o,
            "\n{} result objects acknowledged by {}, written to {}/:",
            self.received.len(),
            self.received_by,
            self.output_folder.display()
        );
        for r in &self.received {
            let file = r.path.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            let _ = writeln!(
                o,
                "  {:<4} {:<40} +{:.2} s  {}",
                r.kind,
                r.sop_class,
                r.acknowledged_after_s,
                file.unwrap_or_default()
            );
        }
        let _ = writeln!(o, "Full result: {}", self.result_json.display());
        o
    }
}

/// The pleural effusions, dense dependent regions and focal lesions, one display text per line
/// (the texts `firstread_findings::vocabulary` wrote into the findings), under "other findings".
fn other_findings(f: &FirstRead) -> Vec<String> {
    let mut texts: Vec<String> =
        f.cautions.iter().map(|c| format!("{}: {c}", vocabulary::CAUTION.label.to_uppercase())).collect();
    texts.extend(f.effusions.iter().map(|e| e.text.clone()));
    texts.extend(f.indeterminate_dense.iter().map(|d| vocabulary::sided(d.side, &d.text)));
    texts.extend(f.focal_lesions.iter().map(|l| {
        format!(
            "{} ({} {:.0} mm, {} {:.0} mm, {} {:.0} HU)",
            l.text,
            vocabulary::EQUIVALENT_DIAMETER.label,
            l.equivalent_diameter_mm,
            vocabulary::MAX_INPLANE_DIAMETER.label,
            l.max_inplane_diameter_mm,
            vocabulary::MEAN_ATTENUATION.label,
            l.mean_hu
        )
    }));
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| format!("{:<20}{t}", if i == 0 { "other findings" } else { "" }))
        .collect()
}

fn involvement_row(i: &Involvement) -> String {
    format!("{:>7.0} mL {:>9.1} mL {:>10.1} %", i.lung_ml, i.opacity_ml, i.involvement_pct)
}

/// Display name of an extent class by its JSON name (as `firstread-findings` writes it).
fn extent_label(json_name: &str) -> String {
    let classes = [
        ExtentClass::NoneOrMinimal,
        ExtentClass::Moderate,
        ExtentClass::Extensive,
        ExtentClass::Severe,
        ExtentClass::Critical,
    ];
    classes
        .into_iter()
        .find(|c| serde_json::to_value(c).ok().as_ref().and_then(Value::as_str) == Some(json_name))
        .map(|c| c.label().to_owned())
        .unwrap_or_else(|| json_name.replace('_', " "))
}

/// Display name of an RSNA category by its JSON name.
fn pattern_label(json_name: &str) -> String {
    let patterns = [Pattern::Typical, Pattern::Indeterminate, Pattern::Atypical, Pattern::Negative];
    patterns
        .into_iter()
        .find(|p| serde_json::to_value(p).ok().as_ref().and_then(Value::as_str) == Some(json_name))
        .map(|p| p.label().to_owned())
        .unwrap_or_else(|| json_name.replace('_', " "))
}

/// Unit of each measurement name suffix in [`DemoReport`].
fn units() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("*_ml", "millilitre (mL)"),
        ("*_pct", "percent of the lung or zone volume"),
        ("*_s", "second"),
        ("*_mm", "millimetre"),
        ("*_hu", "Hounsfield unit (HU)"),
        ("severity_score", "points, 0-30 (sum of six zone scores 0-5)"),
        ("score", "points, 0-5 per zone"),
    ])
}

/// Empties (or creates) the output folder; refuses a non-empty folder it did not create.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let entries: Vec<std::fs::DirEntry> =
            std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.flatten().collect();
        if !entries.is_empty() && !out.join(OUT_MARKER).exists() {
            bail!("{} is not empty and was not written by firstread demo; choose another --out", out.display());
        }
        for e in entries {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(OUT_MARKER), "written by `firstread demo`; emptied by its next run\n")?;
    Ok(())
}

fn bar_style(bar: &ProgressBar, template: &str) {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

/// Runs the demo: temporary database, node and receiving AE; sends the sample, waits for the
/// first read, writes the received objects and `first-read.json` under `opts.out`, cleans up.
/// Progress bars go to stderr (hidden when it is not a terminal).
///
/// # Errors
/// With a message saying what failed: sample missing, PostgreSQL unreachable, model missing,
/// sending refused, study refused, analysis or export dead, timeout, Ctrl-C.
pub async fn run(opts: &DemoOptions, base: &Config) -> anyhow::Result<DemoReport> {
    let files = sample_files(&opts.sample).context("run the demo from the repository root, or pass --sample")?;
    prepare_out(&opts.out)?;
    let db = TempDatabase::create(&opts.postgres).await.with_context(|| {
        format!(
            "creating a temporary database on {} (is PostgreSQL running? scripts/bootstrap.sh sets one up; \
             --postgres chooses another server)",
            redacted(&opts.postgres)
        )
    })?;
    let outcome = tokio::select! {
        r = run_session(opts, base, &db, &files) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted (Ctrl-C); the temporary database and folder are removed")),
    };
    let name = db.name.clone();
    if let Err(e) = db.drop_database().await {
        eprintln!("warning: could not drop the temporary database {name}: {e:#}");
    }
    outcome
}

async fn run_session(
    opts: &DemoOptions,
    base: &Config,
    db: &TempDatabase,
    files: &[PathBuf],
) -> anyhow::Result<DemoReport> {
    let starting = ProgressBar::new_spinner();
    bar_style(&starting, "{spinner} {msg}");
    starting.set_message("starting the node (loading the model) and the receiving AE");
    starting.enable_steady_tick(Duration::from_millis(100));
    let session = Session::start(base, &db.url, opts.stable_after, Some(opts.out.clone())).await;
    starting.finish_and_clear();
    let session = session?;
    let outcome = async {
        let bar = ProgressBar::new(files.len() as u64);
        bar_style(&bar, "sending the CT to FIRSTREAD  {wide_bar} {pos}/{len} slices {elapsed}");
        let sent = session.send(files, &bar).await;
        bar.finish_and_clear();
        let sent = sent?;
        let spinner = ProgressBar::new_spinner();
        bar_style(&spinner, "{spinner} {elapsed} {msg}");
        spinner.enable_steady_tick(Duration::from_millis(100));
        let delivered = session.wait_for_results(&sent, opts.timeout, &spinner).await;
        spinner.finish_and_clear();
        Ok::<_, anyhow::Error>((sent, delivered?))
    }
    .await;
    session.stop().await;
    let (sent, delivered) = outcome?;

    let result_json = opts.out.join("first-read.json");
    std::fs::write(&result_json, serde_json::to_string_pretty(&delivered.result)?)
        .with_context(|| format!("writing {}", result_json.display()))?;
    let first_read: FirstRead = serde_json::from_value(delivered.result["findings"].clone())
        .context("the analysis result has no readable findings")?;
    Ok(DemoReport {
        study_instance_uid: sent.study_instance_uid.clone(),
        study_version: delivered.study_version,
        model: delivered.result["model"].clone(),
        extent_class_label: extent_label(&first_read.extent_class),
        pattern_label: pattern_label(&first_read.pattern),
        first_read,
        severity_score_max: SEVERITY_SCORE_MAX,
        units: units(),
        instances_sent: sent.instances,
        send_s: sent.duration.as_secs_f64(),
        stable_after_s: opts.stable_after.as_secs_f64(),
        time_to_result_s: delivered.stages.total_s,
        stages: delivered.stages,
        received: delivered.objects,
        received_by: DEMO_AE_TITLE.into(),
        output_folder: opts.out.clone(),
        result_json,
        database: db.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(with_database(admin, "x"), "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(redacted("postgres://u:secret@h:1/db"), "postgres://u:***@h:1/db");
        assert_eq!(redacted(admin), admin);
        assert_eq!(redacted("postgres://h:5432/db"), "postgres://h:5432/db");
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).expect("valid time")
    }

    #[test]
    fn stages_are_consecutive_and_add_up() {
        let m = Marks {
            last_response_at: at(0),
            stable_at: at(990),
            analysis_started_at: at(1_150),
            volume_ms: 40.0,
            model_ms: 450.0,
            pleural_cavity_ms: 100.0,
            measurements_ms: 140.0,
            export_queued_at: at(2_080),
            sr_acknowledged_at: at(2_130),
        };
        let s = Stages::split(&m);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(s.stability_wait_s, 0.99), "{s:?}");
        assert!(near(s.queue_pickup_s, 0.16), "{s:?}");
        assert!(near(s.reporting_s, 2.08 - 1.15 - 0.73), "{s:?}");
        assert!(near(s.export_s, 0.05), "{s:?}");
        assert!(near(s.total_s, 2.13), "{s:?}");
        let sum: f64 = s.named().iter().map(|(_, v)| v).sum();
        assert!(near(sum, s.total_s), "{sum} vs {}", s.total_s);
    }

    #[test]
    fn labels_come_from_the_findings_crate() {
        assert_eq!(extent_label("none_or_minimal"), ExtentClass::NoneOrMinimal.label());
        assert_eq!(extent_label("critical"), ExtentClass::Critical.label());
        assert_eq!(pattern_label("indeterminate"), Pattern::Indeterminate.label());
        assert_eq!(pattern_label("negative"), Pattern::Negative.label());
        assert_eq!(pattern_label("new_kind"), "new kind");
    }

    #[test]
    fn the_report_renders_every_lung_zone_and_score() {
        let mut zones = Vec::new();
        for side in ["left", "right"] {
            for level in ["upper", "middle", "lower"] {
                let hit = side == "right" && level == "middle";
                zones.push(serde_json::json!({ "side": side, "level": level, "lung_ml": 700.0, "opacity_ml": 7.0,
                    "involvement_pct": if hit { 6.3 } else { 0.0 }, "score": if hit { 2 } else { 0 } }));
            }
        }
        let findings = serde_json::json!({
            "lungs": [
                { "side": "left", "lung_ml": 2100.4, "opacity_ml": 1.24, "involvement_pct": 0.06, "opacity_mean_hu": -400.0 },
                { "side": "right", "lung_ml": 2300.0, "opacity_ml": 35.0, "involvement_pct": 1.52 },
            ],
            "total": { "lung_ml": 4400.4, "opacity_ml": 36.25, "involvement_pct": 0.82 },
            "zones": zones,
            "severity_score": 2,
            "extent_class": "none_or_minimal",
            "pattern": "atypical",
            "pattern_rationale": "a solitary dense opacity",
            "key_slices": [],
            "effusions": [
                { "side": "left", "volume_ml": 0.0, "mean_hu": null, "craniocaudal_extent_mm": 0.0, "slice_extent": null,
                  "text": "left pleural effusion: none" },
                { "side": "right", "volume_ml": 120.5, "mean_hu": 12.0, "craniocaudal_extent_mm": 85.0,
                  "slice_extent": [2, 19], "text": "right pleural effusion, 120.5 mL, mean 12 HU, cranio-caudal extent 85 mm" },
            ],
            "indeterminate_dense": [{ "side": "right", "volume_ml": 12.0,
                "text": "dense dependent region: effusion or consolidation, 12.0 mL (counted as opacity)" }],
            "focal_lesions": [{ "side": "right", "level": "middle", "volume_ml": 35.0, "equivalent_diameter_mm": 40.6,
                "max_inplane_diameter_mm": 48.2, "mean_hu": 21.0, "centroid_slice": 12,
                "text": "focal opacity, 35.0 mL, right middle zone; not typical of pneumonia" }],
            "non_focal_involvement_pct": 0.02,
        });
        let first_read: FirstRead = serde_json::from_value(findings).expect("findings parse");
        assert_eq!(first_read.lungs[0].involvement.lung_ml, 2100.4);
        let report = DemoReport {
            study_instance_uid: "1.2.3".into(),
            study_version: 1,
            model: serde_json::json!({ "name": "m", "version": "0.1.0", "kind": "rule-based" }),
            extent_class_label: extent_label(&first_read.extent_class),
            pattern_label: pattern_label(&first_read.pattern),
            first_read,
            severity_score_max: SEVERITY_SCORE_MAX,
            units: units(),
            instances_sent: 30,
            send_s: 0.4,
            stable_after_s: 1.0,
            time_to_result_s: 2.13,
            stages: Stages { total_s: 2.13, stability_wait_s: 0.99, ..Stages::default() },
            received: vec![DeliveredObject {
                kind: "SR",
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.34".into(),
                sop_class: "Comprehensive 3D SR Storage".into(),
                sop_instance_uid: "2.25.1".into(),
                path: Some("out/SR-2.25.1.dcm".into()),
                acknowledged_after_s: 2.13,
            }],
            received_by: DEMO_AE_TITLE.into(),
            output_folder: "out".into(),
            result_json: "out/first-read.json".into(),
            database: "firstread_demo_x".into(),
        };
        let text = report.render();
        assert!(text.contains("right lung      2300 mL      35.0 mL        1.5 %"), "{text}");
        assert!(text.contains("left lung       2100 mL       1.2 mL        0.1 %"), "{text}");
        assert!(text.contains("  middle          6.3 % (2)    0.0 % (0)\n"), "{text}");
        assert!(text.contains("CT severity score   2/30"), "{text}");
        assert!(text.contains("none or minimal (<10 %) (SFR)"), "{text}");
        assert!(text.contains("atypical appearance (RSNA): a solitary dense opacity"), "{text}");
        assert!(
            text.contains(
                "  other findings      left pleural effusion: none\n                      right pleural effusion, 120.5 mL, \
                 mean 12 HU, cranio-caudal extent 85 mm\n                      right dense dependent region: effusion or \
                 consolidation, 12.0 mL (counted as opacity)\n                      focal opacity, 35.0 mL, right middle \
                 zone; not typical of pneumonia (equivalent diameter 41 mm, max in-plane diameter 48 mm, mean 21 HU)\n"
            ),
            "{text}"
        );
        assert!(text.contains("acknowledged by DEMO_CT: 2.13 s (stable_after 1 s)"), "{text}");
        assert!(text.contains("SR-2.25.1.dcm"), "{text}");
        let json: Value = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["first_read"]["lungs"][1]["opacity_ml"], 35.0);
        assert_eq!(json["first_read"]["focal_lesions"][0]["level"], "middle");
        // a result of a model without the new findings still parses
        let old: FirstRead = serde_json::from_value(serde_json::json!({
            "lungs": [], "total": { "lung_ml": 1.0, "opacity_ml": 0.0, "involvement_pct": 0.0 }, "zones": [],
            "severity_score": 0, "extent_class": "none_or_minimal", "pattern": "negative", "pattern_rationale": "",
        }))
        .expect("old findings parse");
        assert!(other_findings(&old).is_empty());
        assert_eq!(json["stages"]["stability_wait_s"], 0.99);
    }
}
