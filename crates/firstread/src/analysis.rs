//! The analysis job handler: what a worker does with a claimed study version.
//!
//! Until the libtorch worker lands, the analysis is the study census: the geometry of every
//! series (modality, image type, slices, position range along the slice normal, spacing,
//! contiguity) and a check that every indexed instance file is present and readable. A missing
//! file is a failed attempt (retried, then dead with the error kept); a study with no analysable
//! series is a completed job whose result says why it was not analysed.

use std::time::Instant;

use firstread_queue::assembly::{is_analysable_class, series_geometry};
use firstread_queue::{Job, JobHandler};
use firstread_store::{Index, Storage};
use serde_json::json;

/// The analysis handler.
#[derive(Debug, Clone)]
pub struct Analysis {
    index: Index,
    storage: Storage,
}

impl Analysis {
    /// A handler reading from `index` and `storage`.
    pub fn new(index: Index, storage: Storage) -> Self {
        Analysis { index, storage }
    }
}

impl JobHandler for Analysis {
    async fn handle(&self, job: &Job) -> Result<serde_json::Value, String> {
        let started = Instant::now();
        let geometry = series_geometry(self.index.pool(), &job.study_instance_uid).await.map_err(|e| e.to_string())?;
        let paths: Vec<String> = sqlx::query_scalar("SELECT path FROM instances WHERE study_instance_uid = $1")
            .bind(&job.study_instance_uid)
            .fetch_all(self.index.pool())
            .await
            .map_err(|e| e.to_string())?;
        for path in &paths {
            let full = self.storage.resolve(path);
            if let Err(e) = tokio::fs::metadata(&full).await {
                return Err(format!("instance file {path} unreadable: {e}"));
            }
        }
        let analysable: Vec<_> = geometry.iter().filter(|g| is_analysable_class(&g.sop_class_uid)).collect();
        let status = if analysable.is_empty() { "not analysable: no CT series" } else { "census" };
        Ok(json!({
            "model": job.model,
            "study_version": job.study_version,
            "status": status,
            "series": geometry,
            "instances": paths.len(),
            "timings_ms": { "census": started.elapsed().as_secs_f64() * 1e3 },
        }))
    }
}
