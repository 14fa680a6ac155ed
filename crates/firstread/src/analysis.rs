//! The analysis job handler: study version -> CT volume -> model -> findings.
//!
//! For each claimed job: the study's instance files from the index, the volume builder
//! (`firstread-volume`: series choice, slice order by position, HU, refusals), the model
//! package's input contract, the TorchScript model (`firstread-inference`), and the
//! measurements (`firstread-findings`). The result (JSON in `jobs.result`) carries the model name
//! and version, the series decisions, the findings with units, and per-stage timings.
//!
//! A study that cannot be analysed (no suitable series, missing slices, gantry tilt, outside the
//! model's contract) ends as a completed job with `status = "refused"` and the reason: retrying
//! would not change it. Transient failures (files unreadable, libtorch errors) are failed
//! attempts, retried with backoff and then dead.
//!
//! A job names its model version and role (`jobs.model_version`, `jobs.shadow`). A shadow's
//! result objects are written and indexed (series descriptions marked "SHADOW"), never exported
//! or notified.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use firstread_findings::measures::Measures;
use firstread_findings::vocabulary::roles::{LEFT_PLEURAL_EFFUSION, RIGHT_PLEURAL_EFFUSION};
use firstread_findings::{Grid, Masks};
use firstread_inference::{Manifest, Model};
use firstread_queue::assembly::is_analysable_class;
use firstread_queue::{Job, JobError, JobHandler, PART_OBJECTS, PART_SR};
use firstread_store::{Arrival, Index, Provenance, Storage};
use firstread_volume::{Refusal, StudyVolume, VolumeContract};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::ExportConfig;
use crate::notify::Notifications;
use crate::results;

/// A loaded model package, shared by the workers of a process.
type LoadedModel = Arc<Mutex<Model>>;

/// The analysis handler, holding the loaded model versions.
#[derive(Clone)]
pub struct Analysis {
    index: Index,
    storage: Storage,
    /// The loaded packages by (name, version).
    models: Arc<HashMap<(String, String), LoadedModel>>,
    /// The active version of each active model (for jobs queued before versions were recorded).
    active: Arc<HashMap<String, String>>,
    export: Arc<ExportConfig>,
    /// Our AE title, recorded as the source of indexed result objects.
    ae_title: String,
    /// Notification rules (none: nothing is notified).
    notifications: Option<Notifications>,
    /// Memory one analysis may take (MiB; 0: none beyond the model's `max_voxels`).
    memory_budget_mib: u64,
    /// Slices decoded while the study arrived (`[worker] prefetch_mib`).
    slices: Option<Arc<firstread_volume::SliceCache>>,
}

impl std::fmt::Debug for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analysis").field("models", &self.models.keys().collect::<Vec<_>>()).finish()
    }
}

/// What one analysis produced, before it is serialised.
pub struct Outcome {
    /// The job result (JSON).
    pub result: Value,
    /// The volume and masks, for the reporter (`None` when refused).
    pub analysed: Option<Analysed>,
}

/// An analysed volume with its masks.
pub struct Analysed {
    /// The study volume (chosen series).
    pub study: StudyVolume,
    /// Model output by channel.
    pub segmentation: firstread_inference::Segmentation,
    /// The findings of the model's extension (`None`: the model has none).
    pub findings: Option<firstread_findings::Findings>,
    /// The measurements and classes of the manifest's vocabulary.
    pub measures: Measures,
}

impl Analysis {
    /// Loads the package of every model version in `runs` (`crate::models::plan`) on `device`
    /// (`[worker] device`); result objects are indexed as coming from `ae_title` (ours).
    ///
    /// # Errors
    /// A device that is not there (CUDA asked for without CUDA), a package that does not load
    /// (missing files, invalid manifest, bad TorchScript), or whose manifest names another model
    /// or version than its folders.
    pub fn load(
        index: Index,
        storage: Storage,
        runs: &[crate::models::ModelRun],
        device: firstread_inference::DeviceChoice,
        export: ExportConfig,
        ae_title: &str,
    ) -> anyhow::Result<Self> {
        let mut models = HashMap::new();
        let mut active = HashMap::new();
        for run in runs {
            let (name, version) = (&run.model.name, &run.model.version);
            let model = Model::load_on(&run.dir, device).map_err(|e| match e {
                firstread_inference::InferenceError::Device(why) => anyhow::anyhow!("worker.{why}"),
                e => anyhow::anyhow!("model package {}: {e}", run.dir.display()),
            })?;
            let m = &model.manifest;
            if m.name != *name || m.version != *version {
                anyhow::bail!(
                    "model package {}: its manifest names {} {}, not the {name} {version} of its folders",
                    run.dir.display(),
                    m.name,
                    m.version
                );
            }
            info!(model = %name, version = %version, shadow = run.model.shadow, device = ?model.device(), "model loaded");
            if !run.model.shadow {
                active.insert(name.clone(), version.clone());
            }
            models.insert((name.clone(), version.clone()), Arc::new(Mutex::new(model)));
        }
        Ok(Analysis {
            index,
            storage,
            models: Arc::new(models),
            active: Arc::new(active),
            export: Arc::new(export),
            ae_title: ae_title.to_owned(),
            notifications: None,
            memory_budget_mib: 0,
            slices: None,
        })
    }

    /// The classifications of each active model's manifest (name, `[[classifications]]`), what
    /// notification rules may name ([`firstread_notify::NotifyConfig::check_vocabulary`]).
    pub fn active_classifications(&self) -> Vec<(String, Vec<firstread_findings::measures::ClassificationSpec>)> {
        let mut out: Vec<_> = self
            .active
            .iter()
            .filter_map(|(name, version)| {
                let model = self.models.get(&(name.clone(), version.clone()))?;
                let m = model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                Some((name.clone(), m.manifest.classifications.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Queues notifications of each result by these rules.
    pub fn with_notifications(mut self, notifications: Notifications) -> Self {
        self.notifications = Some(notifications);
        self
    }

    /// Refuses, from its headers, a study whose series would take more than `mib` MiB to
    /// analyse (`[worker] memory_budget_mib`; 0: no budget beyond each model's `max_voxels`).
    pub fn with_memory_budget(mut self, mib: u64) -> Self {
        self.memory_budget_mib = mib;
        self
    }

    /// Builds volumes from the slices `cache` decoded while the study arrived, where it holds
    /// them.
    pub fn with_slice_cache(mut self, cache: Arc<firstread_volume::SliceCache>) -> Self {
        self.slices = Some(cache);
        self
    }

    /// Runs the whole pipeline on a list of instance files (blocking: call from a blocking thread)
    /// within a memory budget (MiB; 0: none beyond the model's `max_voxels`): a series over it is
    /// no candidate, judged before it is loaded.
    ///
    /// # Errors
    /// Transient failures (I/O, libtorch); refusals are an `Ok` outcome.
    pub fn analyse_files(model: &Mutex<Model>, files: &[PathBuf], memory_budget_mib: u64) -> Result<Outcome, String> {
        Self::analyse_files_with(model, files, memory_budget_mib, None)
    }

    /// [`Analysis::analyse_files`], taking the slices `cache` decoded ahead.
    ///
    /// # Errors
    /// As [`Analysis::analyse_files`].
    pub fn analyse_files_with(
        model: &Mutex<Model>,
        files: &[PathBuf],
        memory_budget_mib: u64,
        cache: Option<&firstread_volume::SliceCache>,
    ) -> Result<Outcome, String> {
        let started = Instant::now();
        let (manifest, contract) = {
            let m = model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (m.manifest.clone(), volume_contract(&m.manifest, memory_budget_mib))
        };
        let model_json = json!({ "name": manifest.name, "version": manifest.version, "kind": manifest.kind });
        let study = match firstread_volume::build_study_volume_with(files, &contract, cache) {
            Ok(v) => v,
            Err(e @ Refusal::Io { .. }) => return Err(e.to_string()),
            Err(refusal @ Refusal::TooLarge { .. }) => {
                let reason = format!("{refusal}: {}", voxel_limits(&manifest, memory_budget_mib));
                return Ok(refused(&model_json, &reason, decisions_of(&refusal)));
            }
            Err(refusal) => return Ok(refused(&model_json, &refusal.to_string(), decisions_of(&refusal))),
        };
        let t_volume = started.elapsed();
        if let Some(reason) = outside_contract(&manifest, &study) {
            return Ok(refused(&model_json, &reason, serde_json::to_value(&study.decisions).unwrap_or_default()));
        }
        let v = &study.volume;
        let mut read = read_volume(model, &manifest, &v.hu, v.shape, v.spacing_mm)?;
        // the pleural-cavity step looks at the dependent side of a supine patient only; a field
        // of view that cuts the lungs makes every volume wrong
        let position = (manifest.pipeline.refine.as_deref() == Some(firstread_inference::PIPELINE_REFINE))
            .then(|| firstread_lungs::position::caution(v.patient_position.as_deref()))
            .flatten();
        let lungs: Vec<&[u8]> = ["left_lung", "right_lung"]
            .iter()
            .filter_map(|role| read.segmentation.channels.get(manifest.channel(role)?))
            .map(Vec::as_slice)
            .collect();
        let fov = firstread_lungs::fov::caution(&v.hu, &lungs, v.shape, v.spacing_mm[1]);
        for caution in position.into_iter().chain(fov) {
            if let Some(findings) = read.findings.as_mut() {
                findings.cautions.push(caution.clone());
            }
            read.warnings.push(caution);
        }
        let (t_model, t_refine) = (t_volume + read.model_time, t_volume + read.model_time + read.refine_time);
        let t_findings = started.elapsed();
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        for (stage, d) in [
            ("volume", t_volume),
            ("model", t_model - t_volume),
            ("pleural_cavity", t_refine - t_model),
            ("measurements", t_findings - t_refine),
        ] {
            metrics::histogram!("firstread_stage_seconds", "stage" => stage).record(d.as_secs_f64());
        }
        let result = json!({
            "status": "analysed",
            "model": model_json,
            "method": manifest.description,
            "series": study.decisions,
            "volume": {
                "series_instance_uid": v.series_instance_uid,
                "shape": v.shape,
                "spacing_mm": v.spacing_mm,
                "warnings": v.warnings,
            },
            "pipeline": {
                "denoise": read.denoise,
                "gas_trimmed_ml": read.gas_trimmed,
                "dense_regions": read.dense_regions,
                "warnings": read.warnings,
            },
            "findings": read.findings,
            "measurements": read.measures.measurements,
            "classifications": read.measures.classifications,
            "timings_ms": {
                "volume": ms(t_volume),
                "model": ms(t_model - t_volume),
                "pleural_cavity": ms(t_refine - t_model),
                "measurements": ms(t_findings - t_refine),
                "total": ms(t_findings),
            },
        });
        let Read { segmentation, findings, measures, .. } = read;
        Ok(Outcome { result, analysed: Some(Analysed { study, segmentation, findings, measures }) })
    }

    /// The SR this read supersedes. For an active read: another version's active read of the
    /// same study version (a re-analysis with a new model version replaces it), else that of
    /// the previous study version by the same model in the same role (the active read it
    /// replaces, which may be another model version's; for a shadow, the previous shadow
    /// read), when it was analysed.
    async fn predecessor(&self, job: &Job, manifest: &Manifest) -> Result<Option<(String, String, String)>, String> {
        if !job.shadow {
            if let Some(older) = self.same_version_read(job, &manifest.version).await? {
                return Ok(Some(Self::sr_of(job, manifest, &older, job.study_version)));
            }
        }
        if job.study_version <= 1 {
            return Ok(None);
        }
        let version: Option<String> = sqlx::query_scalar(
            "SELECT result->'model'->>'version' FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1 \
             AND study_version = $2 AND model = $3 AND state = 'done' AND site = $4 AND shadow = $5 \
             AND result_status = 'analysed' \
             ORDER BY model_version = $6 DESC, id DESC LIMIT 1",
        )
        .bind(&job.study_instance_uid)
        .bind(job.study_version - 1)
        .bind(&job.model)
        .bind(&job.site)
        .bind(job.shadow)
        .bind(&manifest.version)
        .fetch_optional(self.index.pool())
        .await
        .map_err(|e| e.to_string())?
        .flatten();
        Ok(version.map(|version| Self::sr_of(job, manifest, &version, job.study_version - 1)))
    }

    /// The version of the latest done, analysed active read of the job's study version by
    /// another version of the same model (what a re-analysis supersedes).
    async fn same_version_read(&self, job: &Job, version: &str) -> Result<Option<String>, String> {
        Ok(sqlx::query_scalar(
            "SELECT result->'model'->>'version' FROM jobs WHERE kind = 'analysis' AND site = $1 \
             AND study_instance_uid = $2 AND study_version = $3 AND model = $4 AND state = 'done' \
             AND NOT shadow AND result_status = 'analysed' AND result->'model'->>'version' <> $5 \
             ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 1",
        )
        .bind(&job.site)
        .bind(&job.study_instance_uid)
        .bind(job.study_version)
        .bind(&job.model)
        .bind(version)
        .fetch_optional(self.index.pool())
        .await
        .map_err(|e| e.to_string())?
        .flatten())
    }

    /// The SR (SOP Class, SOP Instance and Series UIDs) of `version`'s read of `study_version`.
    fn sr_of(job: &Job, manifest: &Manifest, version: &str, study_version: i32) -> (String, String, String) {
        let uids =
            firstread_report::ResultUids::derive(&results::study_key(job), &manifest.name, version, study_version);
        (firstread_report::sr::COMPREHENSIVE_3D_SR_STORAGE.to_owned(), uids.sr_instance, uids.sr_series)
    }

    /// One export job per destination of the study (its sender when known, and `always`), of
    /// the study's site only.
    async fn enqueue_exports(
        &self,
        job: &Job,
        model_version: &str,
        files: &[String],
        part: &str,
    ) -> Result<(), String> {
        let calling: Option<String> =
            sqlx::query_scalar("SELECT calling_ae_title FROM studies WHERE site = $1 AND study_instance_uid = $2")
                .bind(&job.site)
                .bind(&job.study_instance_uid)
                .fetch_optional(self.index.pool())
                .await
                .map_err(|e| e.to_string())?;
        let queue = firstread_queue::PgQueue::new(self.index.pool().clone());
        let payload = json!({ "files": files });
        for dest in self.export.destinations_for(&job.site, calling.as_deref().unwrap_or("")) {
            queue
                .enqueue(&firstread_queue::NewJob {
                    kind: firstread_queue::JobKind::Export,
                    site: &job.site,
                    study_instance_uid: &job.study_instance_uid,
                    study_version: job.study_version,
                    model: &job.model,
                    model_version,
                    destination: &dest.ae_title,
                    part,
                    payload: &payload,
                    max_attempts: self.export.max_attempts,
                })
                .await
                .map_err(|e| e.to_string())?;
            info!(destination = %dest.ae_title, part, "export queued");
        }
        Ok(())
    }

    /// Indexes the written result objects like received instances, so DICOMweb serves them as
    /// series of the study. They are not analysable, so they neither open a study version nor
    /// delay assembly.
    async fn index_results(&self, job: &Job, written: &[results::Written]) -> Result<(), String> {
        let provenance = Provenance {
            site: job.site.clone(),
            calling_ae_title: self.ae_title.clone(),
            called_ae_title: self.ae_title.clone(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            association_id: None,
        };
        let arrival = Arrival {
            stable_after: std::time::Duration::ZERO,
            reanalyse_late: false,
            analysable: false,
            derived: true,
        };
        for w in written {
            self.index
                .record(&w.attributes, &provenance, &w.path, w.size_bytes, &arrival)
                .await
                .map_err(|e| format!("indexing {}: {e}", w.path))?;
        }
        Ok(())
    }

    /// The files of the study's analysable instances (result objects and other non-image
    /// instances are not read).
    async fn files_of(&self, site: &str, study: &str) -> Result<Vec<PathBuf>, String> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT path, sop_class_uid FROM instances WHERE site = $1 AND study_instance_uid = $2")
                .bind(site)
                .bind(study)
                .fetch_all(self.index.pool())
                .await
                .map_err(|e| e.to_string())?;
        let files: Vec<PathBuf> =
            rows.iter().filter(|(_, class)| is_analysable_class(class)).map(|(p, _)| self.storage.resolve(p)).collect();
        for f in &files {
            if let Err(e) = tokio::fs::metadata(f).await {
                return Err(format!("instance file {} unreadable: {e}", f.display()));
            }
        }
        Ok(files)
    }
}

impl Analysis {
    /// The model version `job` runs: its own, or for a job queued before versions were
    /// recorded, the model's active version.
    fn version_of(&self, job: &Job) -> String {
        match job.model_version.as_str() {
            "" => self.active.get(&job.model).cloned().unwrap_or_default(),
            v => v.to_owned(),
        }
    }
}

impl JobHandler for Analysis {
    /// A study whose analysis is dead has no first read: the rules for refusals are told so
    /// (as a refusal whose reason says the read failed; the error itself stays in the job).
    async fn dead(&self, job: &Job, _error: &str) {
        let Some(notifications) = &self.notifications else { return };
        if job.shadow {
            return;
        }
        let model = firstread_notify::event::Model { name: job.model.clone(), version: self.version_of(job) };
        let reason = format!("the first read failed ({} attempts); read the study without it", job.attempt);
        let outcome = firstread_notify::event::Outcome::Refused(&reason);
        if let Err(e) = notifications.enqueue(self.index.pool(), job, model, outcome).await {
            warn!(error = %e, "could not queue the notification of a failed first read");
        }
    }

    async fn handle(&self, job: &Job) -> Result<Value, JobError> {
        let version = self.version_of(job);
        let model = self
            .models
            .get(&(job.model.clone(), version.clone()))
            .cloned()
            .ok_or_else(|| format!("model {} {version} not loaded here", job.model))?;
        let files = self.files_of(&job.site, &job.study_instance_uid).await?;
        let manifest = model.lock().unwrap_or_else(std::sync::PoisonError::into_inner).manifest.clone();
        let predecessor = self.predecessor(job, &manifest).await?;
        let root = self.storage.root().to_path_buf();
        let job_for_results = job.clone();
        let (manifest_name, manifest_version) = (manifest.name.clone(), manifest.version.clone());
        let memory_budget_mib = self.memory_budget_mib;
        let slices = self.slices.clone();
        let waited = (job.started_at - job.created_at).to_std().unwrap_or_default();
        metrics::histogram!("firstread_stage_seconds", "stage" => "queue_pickup").record(waited.as_secs_f64());
        // the SR, with what its notification says, comes over this as soon as it is written
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<(results::Written, Said)>();
        let task = tokio::task::spawn_blocking(move || -> Result<(Value, Vec<results::Written>), String> {
            let outcome = Analysis::analyse_files_with(&model, &files, memory_budget_mib, slices.as_deref())?;
            let Some(analysed) = outcome.analysed else { return Ok((outcome.result, Vec::new())) };
            let started = Instant::now();
            let said = Said { findings: analysed.findings.clone(), measures: analysed.measures.clone() };
            let written = results::write(&root, &job_for_results, &manifest, &analysed, predecessor, |sr| {
                let _ = first_tx.send((sr.clone(), said));
            })?;
            metrics::histogram!("firstread_stage_seconds", "stage" => "reporting")
                .record(started.elapsed().as_secs_f64());
            Ok((outcome.result, written))
        });
        let model_name = firstread_notify::event::Model { name: manifest_name, version: manifest_version };
        // the read first: its SR indexed, sent and notified while the other objects are built
        let first = match first_rx.await {
            Ok((sr, said)) => {
                self.publish(job, &version, std::slice::from_ref(&sr), PART_SR, Some((&model_name, &said))).await
            }
            Err(_) => Ok(()),
        };
        let (mut result, written) = task.await.map_err(|e| format!("analysis task: {e}"))??;
        first?;
        let paths: Vec<String> = written.iter().map(|w| w.path.clone()).collect();
        if let Some(obj) = result.as_object_mut() {
            obj.insert("study_version".into(), json!(job.study_version));
            obj.insert("shadow".into(), json!(job.shadow));
            obj.insert("result_files".into(), json!(paths));
        }
        if let Some(rest) = written.get(1..).filter(|rest| !rest.is_empty()) {
            self.publish(job, &version, rest, PART_OBJECTS, None).await?;
            if job.shadow {
                info!(objects = written.len(), model = %job.model, version = %version, "shadow read indexed (not exported)");
            } else {
                info!(objects = written.len(), "first read ready");
            }
        }
        if written.is_empty() && !job.shadow {
            // refused: the rules are told why
            if let Some(notifications) = &self.notifications {
                let reason = result["reason"].as_str().unwrap_or("not analysed").to_owned();
                let outcome = firstread_notify::event::Outcome::Refused(&reason);
                notifications.enqueue(self.index.pool(), job, model_name, outcome).await?;
            }
        }
        Ok(result)
    }
}

impl Analysis {
    /// Indexes result objects `written` like received instances (so DICOMweb serves them), then,
    /// unless the job is a shadow, queues their export as `part` to each destination and, with
    /// `read` (the SR's part), queues the notifications of the read.
    async fn publish(
        &self,
        job: &Job,
        version: &str,
        written: &[results::Written],
        part: &str,
        read: Option<(&firstread_notify::event::Model, &Said)>,
    ) -> Result<(), String> {
        // indexed before the exports are queued: once the sender has the results, DICOMweb
        // serves them too
        self.index_results(job, written).await?;
        if job.shadow {
            return Ok(());
        }
        let paths: Vec<String> = written.iter().map(|w| w.path.clone()).collect();
        self.enqueue_exports(job, version, &paths, part).await?;
        let (Some(notifications), Some((model, said)), Some(sr)) = (&self.notifications, read, written.first()) else {
            return Ok(());
        };
        let sr = firstread_notify::event::ResultObject {
            series_instance_uid: sr.attributes.series_instance_uid.clone(),
            sop_instance_uid: sr.attributes.sop_instance_uid.clone(),
        };
        let outcome = match &said.findings {
            Some(f) => firstread_notify::event::Outcome::Read(f, Some(&sr)),
            None => firstread_notify::event::Outcome::Measured(&said.measures, Some(&sr)),
        };
        notifications.enqueue(self.index.pool(), job, model.clone(), outcome).await
    }
}

/// What a read says, for its notifications: the findings of the model's extension, or its
/// measurements alone.
struct Said {
    findings: Option<firstread_findings::Findings>,
    measures: Measures,
}

/// What [`read_volume`] gives: the masks by manifest channel, the findings, and what the
/// steps around the TorchScript measured and found.
#[derive(Debug)]
pub struct Read {
    /// Masks by manifest channel (TorchScript channels, refined, then the steps' own).
    pub segmentation: firstread_inference::Segmentation,
    /// The findings of the model's extension ([`firstread_inference::EXTENSION_COVID19`]);
    /// `None` for a model that has none.
    pub findings: Option<firstread_findings::Findings>,
    /// The measurements and classes of the manifest's vocabulary.
    pub measures: Measures,
    /// The denoised HU the model and the measurements saw, when the denoising step smoothed;
    /// `None`: they saw the input.
    pub hu: Option<Vec<f32>>,
    /// What the denoising step measured and applied.
    pub denoise: Option<firstread_lungs::denoise::DenoiseReport>,
    /// What the gas step took out of the lung masks (mL, `[left, right]`), when it ran.
    pub gas_trimmed: Option<[f64; 2]>,
    /// Dense dependent regions the pleural-cavity step found.
    pub dense_regions: Vec<firstread_lungs::DenseRegion>,
    /// What the reader must know from these steps.
    pub warnings: Vec<String>,
    /// Denoising and TorchScript.
    pub model_time: std::time::Duration,
    /// The pleural-cavity step.
    pub refine_time: std::time::Duration,
}

/// The model package's pipeline on an HU volume `[slices, rows, cols]` in the canonical
/// orientation with `spacing_mm` `[slice, row, col]`: the denoising step (when the manifest
/// names it), the TorchScript, the pleural-cavity step (when named), then the measurements on
/// the HU the model saw. Blocking.
///
/// # Errors
/// libtorch failures, or a model output that lacks a channel the manifest promises.
pub fn read_volume(
    model: &Mutex<Model>,
    manifest: &Manifest,
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
) -> Result<Read, String> {
    let started = Instant::now();
    let denoised = match manifest.pipeline.denoise.as_deref() {
        Some(firstread_inference::PIPELINE_DENOISE) => Some(firstread_lungs::denoise(hu, shape, spacing_mm)),
        _ => None,
    };
    let (smoothed, denoise) = match denoised {
        Some(d) => (d.hu, Some(d.report)),
        None => (None, None),
    };
    let hu: &[f32] = smoothed.as_deref().unwrap_or(hu);
    let mut segmentation = {
        // libtorch reports some failures (out of memory in an op outside forward) as panics:
        // caught here, while the lock is held, so the lock is not poisoned and the next analysis
        // runs; this one is a failed attempt, retried
        let m = model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.segment(hu, shape, spacing_mm)))
            .map_err(|panic| format!("the model failed: {}", panic_text(panic.as_ref())))?
            .map_err(|e| e.to_string())?
    };
    let model_time = started.elapsed();
    let gas_trimmed = (manifest.pipeline.trim.as_deref() == Some(firstread_inference::PIPELINE_TRIM_GAS))
        .then(|| trim_gas(manifest, hu, shape, spacing_mm, &mut segmentation));
    let refined = match manifest.pipeline.refine.as_deref() {
        Some(firstread_inference::PIPELINE_REFINE) => Some(refine(manifest, hu, shape, spacing_mm, &mut segmentation)?),
        _ => None,
    };
    let refine_time = started.elapsed() - model_time;
    derive_hu_bands(manifest, hu, &mut segmentation);
    let channel = |role: &str| manifest.channel(role).and_then(|c| segmentation.channels.get(c));
    let mask = |role: &str| channel(role).map(Vec::as_slice);
    let measures = firstread_findings::measures::compute(
        hu,
        shape,
        spacing_mm,
        &mask,
        &manifest.measurements,
        &manifest.classifications,
    );
    let mut findings = match manifest.extension.as_deref() {
        Some(firstread_inference::EXTENSION_COVID19) => {
            let (Some(left), Some(right), Some(opacity)) =
                (channel("left_lung"), channel("right_lung"), channel("lung_opacity"))
            else {
                return Err("model output lacks a lung or opacity channel".into());
            };
            let grid = Grid { hu, shape, spacing_mm };
            let masks = Masks {
                effusion_left: channel(LEFT_PLEURAL_EFFUSION).map(Vec::as_slice),
                effusion_right: channel(RIGHT_PLEURAL_EFFUSION).map(Vec::as_slice),
                indeterminate: refined.as_ref().map(|r| r.indeterminate.as_slice()),
                ..Masks::lungs(left, right, opacity)
            };
            Some(firstread_findings::compute(&grid, &masks).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let (dense_regions, warnings) = refined.map(|r| (r.regions, r.warnings)).unwrap_or_default();
    if let Some(findings) = findings.as_mut() {
        // the reader sees them in the SR and the text, not only in the job record
        findings.cautions.clone_from(&warnings);
    }
    Ok(Read {
        segmentation,
        findings,
        measures,
        hu: smoothed,
        denoise,
        gas_trimmed,
        dense_regions,
        warnings,
        model_time,
        refine_time,
    })
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic without a message".into())
}

/// Runs the pleural-cavity step on the model's masks: the lung and opacity channels are
/// replaced by the refined ones, and the step's own outputs (the effusions) are appended in the
/// manifest's channel order.
fn refine(
    manifest: &Manifest,
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    segmentation: &mut firstread_inference::Segmentation,
) -> Result<firstread_lungs::Refined, String> {
    let get = |role: &str| {
        manifest
            .channel(role)
            .and_then(|c| segmentation.channels.get(c))
            .ok_or_else(|| format!("model output lacks the {role} channel"))
    };
    let options = firstread_lungs::Options {
        follow_bronchograms: manifest.pipeline.follow.as_deref()
            == Some(firstread_inference::PIPELINE_FOLLOW_BRONCHOGRAMS),
        air_tissue_ramp: manifest.pipeline.ramp.as_deref() == Some(firstread_inference::PIPELINE_RAMP_AIR_TISSUE),
    };
    let (left, right, opacity) = (get("left_lung")?, get("right_lung")?, get("lung_opacity")?);
    let mut refined = firstread_lungs::refine_with(hu, shape, spacing_mm, left, right, opacity, options)
        .map_err(|e| e.to_string())?;
    let mut by_role = [
        ("left_lung", std::mem::take(&mut refined.left_lung)),
        ("right_lung", std::mem::take(&mut refined.right_lung)),
        ("lung_opacity", std::mem::take(&mut refined.opacity)),
        (LEFT_PLEURAL_EFFUSION, std::mem::take(&mut refined.effusion_left)),
        (RIGHT_PLEURAL_EFFUSION, std::mem::take(&mut refined.effusion_right)),
    ];
    segmentation.channels.resize(manifest.outputs.len(), Vec::new());
    for (role, mask) in &mut by_role {
        if let Some(c) = manifest.channel(role) {
            segmentation.channels[c] = std::mem::take(mask);
        }
    }
    let step = manifest.pipeline.refine.as_deref();
    if let Some(empty) =
        manifest.outputs.iter().find(|o| o.stage.as_deref() == step && segmentation.channels[o.channel].is_empty())
    {
        return Err(format!("the pleural-cavity step does not produce output {}", empty.name));
    }
    // what the step produced for itself is back in `refined` for the caller (regions, warnings)
    Ok(refined)
}

/// Runs the gas step on the left and right lung channels; mL taken out of each.
fn trim_gas(
    manifest: &Manifest,
    hu: &[f32],
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    segmentation: &mut firstread_inference::Segmentation,
) -> [f64; 2] {
    let take = |s: &mut firstread_inference::Segmentation, role: &str| {
        manifest.channel(role).and_then(|c| s.channels.get_mut(c)).map(std::mem::take).unwrap_or_default()
    };
    let (mut left, mut right) = (take(segmentation, "left_lung"), take(segmentation, "right_lung"));
    let t = firstread_lungs::trim_gas(hu, shape, [&mut left, &mut right]);
    for (role, mask) in [("left_lung", left), ("right_lung", right)] {
        if let Some(channel) = manifest.channel(role).and_then(|c| segmentation.channels.get_mut(c)) {
            *channel = mask;
        }
    }
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;
    t.voxels.map(|v| v as f64 * voxel_ml)
}

/// The outputs of stage [`firstread_inference::STAGE_HU_BAND`]: the voxels of their `within`
/// outputs whose HU (`hu`, the HU the model saw) lies in `hu_band` (lo < HU <= hi), at their
/// channel.
fn derive_hu_bands(manifest: &Manifest, hu: &[f32], segmentation: &mut firstread_inference::Segmentation) {
    for o in manifest.outputs.iter().filter(|o| o.stage.as_deref() == Some(firstread_inference::STAGE_HU_BAND)) {
        let [lo, hi] = o.hu_band.unwrap_or([0.0, 0.0]);
        let within: Vec<&[u8]> = o
            .within
            .iter()
            .filter_map(|name| manifest.channel(name).and_then(|c| segmentation.channels.get(c)))
            .map(Vec::as_slice)
            .filter(|m| m.len() == hu.len())
            .collect();
        let mask: Vec<u8> = hu
            .iter()
            .enumerate()
            .map(|(i, &v)| u8::from(within.iter().any(|m| m[i] != 0) && f64::from(v) > lo && f64::from(v) <= hi))
            .collect();
        if segmentation.channels.len() <= o.channel {
            segmentation.channels.resize(o.channel + 1, Vec::new());
        }
        segmentation.channels[o.channel] = mask;
    }
}

/// The volume builder's contract from the model's input contract and a memory budget (MiB; 0:
/// none): at most the model's `max_voxels`, and at most the voxels whose analysis fits the
/// budget at the model's `peak_bytes_per_voxel`.
pub fn volume_contract(m: &Manifest, memory_budget_mib: u64) -> VolumeContract {
    VolumeContract {
        min_slices: m.input.min_slices,
        max_slice_spacing_mm: m.input.slice_spacing_mm[1],
        padding_hu: m.input.padding_hu,
        max_voxels: m.input.max_voxels.min(budget_voxels(m, memory_budget_mib)),
        takes: m.takes.clone(),
        ..VolumeContract::default()
    }
}

/// The voxels whose analysis fits `memory_budget_mib` (usize::MAX for no budget).
fn budget_voxels(m: &Manifest, memory_budget_mib: u64) -> usize {
    if memory_budget_mib == 0 || m.input.peak_bytes_per_voxel <= 0.0 {
        return usize::MAX;
    }
    (memory_budget_mib as f64 * 1024.0 * 1024.0 / m.input.peak_bytes_per_voxel) as usize
}

/// What bounds the voxels, for a refusal's reason.
fn voxel_limits(m: &Manifest, memory_budget_mib: u64) -> String {
    let model = format!("model {} {} takes at most {} voxels", m.name, m.version, m.input.max_voxels);
    if memory_budget_mib == 0 {
        return model;
    }
    format!(
        "{model}; the worker's memory budget of {memory_budget_mib} MiB ([worker] memory_budget_mib) allows {} at \
         {} bytes a voxel",
        budget_voxels(m, memory_budget_mib),
        m.input.peak_bytes_per_voxel
    )
}

/// Checks the parts of the model's input contract the volume builder does not.
fn outside_contract(m: &Manifest, study: &StudyVolume) -> Option<String> {
    let v = &study.volume;
    let [lo, hi] = m.input.slice_spacing_mm;
    let [plo, phi] = m.input.pixel_spacing_mm;
    let z_extent = v.spacing_mm[0] * (v.shape[0].saturating_sub(1)) as f64;
    if v.spacing_mm[0] < lo || v.spacing_mm[0] > hi {
        Some(format!("slice spacing {:.2} mm outside the model's {lo}-{hi} mm", v.spacing_mm[0]))
    } else if v.spacing_mm[1] < plo || v.spacing_mm[1] > phi || v.spacing_mm[2] < plo || v.spacing_mm[2] > phi {
        Some(format!(
            "pixel spacing {:.3} x {:.3} mm outside the model's {plo}-{phi} mm",
            v.spacing_mm[1], v.spacing_mm[2]
        ))
    } else if z_extent < m.input.min_z_extent_mm {
        Some(format!(
            "the series covers {z_extent:.0} mm; the model needs {} mm to cover the lungs",
            m.input.min_z_extent_mm
        ))
    } else {
        None
    }
}

fn decisions_of(refusal: &Refusal) -> Value {
    match refusal {
        Refusal::NoSuitableSeries { decisions } => serde_json::to_value(decisions).unwrap_or_default(),
        _ => Value::Array(Vec::new()),
    }
}

fn refused(model: &Value, reason: &str, series: Value) -> Outcome {
    info!(reason, "study not analysed");
    Outcome {
        result: json!({ "status": "refused", "reason": reason, "model": model, "series": series }),
        analysed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_messages() {
        let text = std::panic::catch_unwind(|| panic!("Torch error: CUDA out of memory ({} MiB)", 512))
            .map_err(|p| panic_text(p.as_ref()))
            .err();
        assert_eq!(text.as_deref(), Some("Torch error: CUDA out of memory (512 MiB)"));
        let text = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).map_err(|p| panic_text(p.as_ref())).err();
        assert_eq!(text.as_deref(), Some("panic without a message"));
    }
}
