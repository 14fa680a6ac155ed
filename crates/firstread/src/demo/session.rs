//! A node and a receiving AE: send a study, wait for its results, split the time into stages.

use super::*;
use firstread_queue::{PART_OBJECTS, PART_SR};

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
    /// The study became ready: its stability deadline (its last CT instance indexed,
    /// `instances.received_at`, the same transaction time that set `studies.stable_at`, +
    /// `stable_after`), or, made ready early (`early_ready`), the analysis job's creation
    /// (`jobs.created_at`) when that came first.
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
    /// `jobs.created_at` of the export job of the SR (queued by the analysis once the SR was
    /// written, before the other result objects are built).
    pub export_queued_at: DateTime<Utc>,
    /// The receiving AE acknowledged the SR.
    pub sr_acknowledged_at: DateTime<Utc>,
}

/// The time from the last C-STORE-RSP to the SR acknowledged by the receiving AE, split into
/// consecutive stages (seconds; they add up to `total_s`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Stages {
    /// Last C-STORE-RSP -> the study ready: its stability deadline (about `stable_after`), or the
    /// analysis job's creation when early readiness came first, s.
    pub stability_wait_s: f64,
    /// Study ready -> analysis job claimed: promotion (assembly tick), NOTIFY, claim, s.
    pub queue_pickup_s: f64,
    /// Instance files read and decoded, CT volume built, s.
    pub volume_s: f64,
    /// Denoising and the TorchScript model (lungs, opacity), s.
    pub model_s: f64,
    /// The pleural-cavity step (dense dependent regions, effusion), s.
    pub pleural_cavity_s: f64,
    /// Findings from the masks (volumes, zones, scores, key slices), s.
    pub measurements_s: f64,
    /// The rest of the analysis job until the export job of the SR is queued: instance lookup,
    /// the SR built, written (fsync) and indexed, s. (The volumetric SR, SEG and key images are
    /// built after it, while the SR is sent.)
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
    /// The temporary storage folder [`Session::start`] made (removed with the session); `None`
    /// for a caller's folder ([`Session::start_in`]).
    _storage: Option<tempfile::TempDir>,
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
        let mut session = Session::start_in(base, database_url, storage.path(), stable_after, out).await?;
        session._storage = Some(storage);
        Ok(session)
    }

    /// As [`Session::start`], with the storage root `storage`, which the session leaves in place
    /// (a later session on the same database and folder finds the studies stored).
    ///
    /// # Errors
    /// Model package missing, database unreachable, no free port.
    pub async fn start_in(
        base: &Config,
        database_url: &str,
        storage: &Path,
        stable_after: Duration,
        out: Option<PathBuf>,
    ) -> anyhow::Result<Session> {
        let receiver = Receiver::start(DEMO_AE_TITLE, out).await?;
        let config = session_config(base, database_url, storage, stable_after, receiver.destination());
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
        Ok(Session { node, receiver, stable_after, ae_title: config.node.ae_title.clone(), _storage: None })
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
        let dest =
            Destination { ae_title: self.ae_title.clone(), host: addr.ip().to_string(), port: addr.port(), tls: None };
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
            let phase = match job(pool, "analysis", study, "", "").await? {
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
                        // the SR's part, then the other objects' (each its own export job)
                        let parts = [PART_SR, PART_OBJECTS];
                        let mut exports = Vec::with_capacity(parts.len());
                        for part in parts {
                            exports.push(job(pool, "export", study, &self.receiver.ae_title, part).await?);
                        }
                        let sr_part = exports[0].as_ref();
                        let pending = exports.iter().flatten().find(|e| e.state != "done");
                        match (sr_part, pending) {
                            (None, _) => bail!("the analysis queued no export of its SR to {}", self.receiver.ae_title),
                            (Some(sr), None) => return self.delivered(sent, &a, sr).await,
                            (_, Some(e)) if e.state == "dead" => bail!(
                                "sending the results to {} failed {} time(s); last error: {}",
                                self.receiver.ae_title,
                                e.attempts,
                                e.last_error.clone().unwrap_or_default()
                            ),
                            (_, Some(e)) if e.attempts > 0 => format!(
                                "sending the results to {} (retrying after: {})",
                                self.receiver.ae_title,
                                e.last_error.clone().unwrap_or_default()
                            ),
                            (_, Some(_)) => format!(
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
        let deadline = last_indexed.context("no CT instance indexed")?
            + chrono::Duration::from_std(self.stable_after).unwrap_or_default();
        // made ready early, the job was created (promoted) before the deadline
        let stable_at = deadline.min(analysis.created_at);
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

    /// Waits until the node has no queued or running job of any kind (analysis of every model,
    /// export, notify), polling the database every 50 ms: the node as a study arriving at a
    /// normal pace finds it, with the previous study's other reads and deliveries finished.
    ///
    /// # Errors
    /// Database unreachable, or a job still queued or running after `timeout` (with the count).
    pub async fn wait_idle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let busy: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
                .fetch_one(self.node.index.pool())
                .await
                .context("counting the unfinished jobs")?;
            if busy == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{busy} job(s) still queued or running after {} s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the node, then the receiving AE; a temporary storage folder the session made is removed.
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
    // the demo's sender is its only peer, and takes the results back
    config.export.always = Vec::new();
    config.export.destinations = Vec::new();
    config.peers = vec![crate::config::PeerConfig {
        ae_title: destination.ae_title,
        host: Some(destination.host),
        port: Some(destination.port),
        results: true,
        always: false,
        tls: destination.tls,
        site: None,
    }];
    // the demo writes a few tens of MB into a temporary folder: the disk guard refuses only a
    // (nearly) full disk, not a developer's busy one
    config.storage.high_watermark_percent = 99.0;
    config.storage.low_watermark_percent = 98.0;
    config.export.max_attempts = 4;
    config.export.backoff_base = Duration::from_millis(500);
    config.export.backoff_max = Duration::from_secs(4);
    config.notify = base.notify.clone();
    config
}

/// The model whose first read the demo prints (the others installed run too; their result
/// objects reach the receiving AE with the rest).
pub(super) const DEMO_MODEL: &str = "covid19-lung-ct";

/// The latest job of `kind` for the demo model's read of `study` (to `destination` and of
/// export `part`, each when not empty).
async fn job(pool: &PgPool, kind: &str, study: &str, destination: &str, part: &str) -> anyhow::Result<Option<JobRow>> {
    sqlx::query_as(
        "SELECT state, attempts, last_error, result, created_at, started_at FROM jobs \
         WHERE kind = $1 AND study_instance_uid = $2 AND ($3 = '' OR destination = $3) AND ($5 = '' OR part = $5) \
           AND NOT shadow \
         ORDER BY study_version DESC, model <> $4, id DESC LIMIT 1",
    )
    .bind(kind)
    .bind(study)
    .bind(destination)
    .bind(DEMO_MODEL)
    .bind(part)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
