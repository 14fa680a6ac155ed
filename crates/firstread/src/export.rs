//! The export job handler: sends a result set to one destination with the C-STORE SCU.
//! Success and warnings (B000, B006, B007) complete the job; any failure status, a rejected
//! association or an unreachable peer is a failed attempt, retried with backoff, then dead with
//! the reason.

use std::sync::Arc;

use firstread_dimse::{store_all, Instance, ScuConfig};
use firstread_queue::{Job, JobError, JobHandler};
use firstread_store::Storage;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::ExportConfig;

/// The export handler.
#[derive(Debug, Clone)]
pub struct Export {
    storage: Storage,
    pool: sqlx::PgPool,
    config: Arc<ExportConfig>,
    scu: ScuConfig,
}

impl Export {
    /// Sends from `storage` to the destinations of `config`, as `calling_ae_title`; each attempt
    /// is recorded in the audit trail of `pool`.
    pub fn new(storage: Storage, pool: sqlx::PgPool, config: ExportConfig, calling_ae_title: &str) -> Self {
        let scu = ScuConfig { calling_ae_title: calling_ae_title.to_owned(), ..ScuConfig::default() };
        Export { storage, pool, config: Arc::new(config), scu }
    }

    /// Appends the attempt to the audit trail (a failure to do so is logged, not the job's).
    async fn audit(&self, job: &Job, dest: &firstread_dimse::Destination, outcome: &Result<Value, JobError>) {
        let event = firstread_audit::Event {
            actor: firstread_audit::Actor::Node(self.scu.calling_ae_title.clone()),
            address: Some(dest.to_string()),
            action: firstread_audit::Action::StoreOut,
            study: Some(job.study_instance_uid.clone()),
            site: Some(job.site.clone()),
            success: outcome.is_ok(),
            detail: match outcome {
                Ok(v) => json!({ "job": job.id, "attempt": job.attempt, "tls": dest.tls.is_some(), "sent": v["sent"] }),
                Err(e) => {
                    json!({ "job": job.id, "attempt": job.attempt, "tls": dest.tls.is_some(), "error": e.to_string() })
                }
            },
        };
        if let Err(e) = firstread_audit::record(&self.pool, &event).await {
            warn!(error = %e, "could not record the export in the audit trail");
        }
    }
}

impl JobHandler for Export {
    async fn handle(&self, job: &Job) -> Result<Value, JobError> {
        let dest = self
            .config
            .destination(&job.destination)
            .ok_or_else(|| format!("destination {} is not configured", job.destination))?
            .clone();
        // a job queued before its destination moved to another site (or retried after) never
        // sends one hospital's results to another
        let site = self.config.site_of(&dest.ae_title);
        if site != job.site {
            return Err(JobError::Permanent(format!(
                "destination {} belongs to the site {site}, the study to {}: not sent",
                dest.ae_title, job.site
            )));
        }
        let outcome = self.send(job, &dest).await;
        self.audit(job, &dest, &outcome).await;
        outcome
    }
}

impl Export {
    async fn send(&self, job: &Job, dest: &firstread_dimse::Destination) -> Result<Value, JobError> {
        let files: Vec<String> = job.payload["files"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let mut instances = Vec::with_capacity(files.len());
        for f in &files {
            let path = self.storage.resolve(f);
            instances.push(Instance::from_part10_file(&path).map_err(|e| format!("{f}: {e}"))?);
        }
        let started = std::time::Instant::now();
        let results = store_all(dest, &self.scu, instances, |_| {}).await.map_err(|e| {
            metrics::counter!("firstread_export_failures_total", "destination" => dest.ae_title.clone(), "site" => job.site.clone())
                .increment(1);
            e.to_string()
        })?;
        metrics::histogram!("firstread_stage_seconds", "stage" => "export").record(started.elapsed().as_secs_f64());
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.is_success_or_warning())
            .map(|r| format!("{:04X} {}", r.status, r.comment.as_deref().unwrap_or("")))
            .collect();
        if !failed.is_empty() {
            metrics::counter!("firstread_export_failures_total", "destination" => dest.ae_title.clone(), "site" => job.site.clone())
                .increment(1);
            return Err(
                format!("{} of {} refused by {}: {}", failed.len(), results.len(), dest, failed.join("; ")).into()
            );
        }
        let warnings = results.iter().filter(|r| r.status != 0).count();
        info!(destination = %dest, sent = results.len(), warnings, "results sent");
        Ok(json!({ "destination": dest.to_string(), "sent": results.len(), "warnings": warnings }))
    }
}
