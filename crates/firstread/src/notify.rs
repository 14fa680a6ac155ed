//! Notifications, the node's side: after an analysis, one `notify` job per (rule, channel) the
//! result matches ([`Notifications::enqueue`]); the job handler that delivers them
//! ([`Deliveries`]). The message itself and the channels are `firstread-notify`'s.
//!
//! Exactly one delivery per (study version, model, rule, channel): the queue's unique key. A
//! study version that replaces one already notified on a (rule, channel) sends a correction
//! there, whether or not the new result still matches the rule, so a receiver never keeps a
//! superseded result. So does a read of the same study version by another model version (a
//! re-analysis, `firstread reanalyse`): its message corrects the earlier version's.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use firstread_notify::event::{Model, Outcome, Study};
use firstread_notify::{rules, DeliveryError, Event, NotifyConfig};
use firstread_queue::{Job, JobError, JobHandler, JobKind, NewJob, PgQueue};
use serde::Deserialize as _;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tracing::info;

/// The enqueue side: rules over a finished analysis.
#[derive(Debug, Clone)]
pub struct Notifications {
    config: Arc<NotifyConfig>,
}

impl Notifications {
    /// Notifications by `config` (already [`NotifyConfig::resolve`]d).
    pub fn new(config: Arc<NotifyConfig>) -> Self {
        Notifications { config }
    }

    /// Queues the deliveries for the analysis `job` of `model` that ended with `outcome`.
    ///
    /// # Errors
    /// Database errors (the analysis job is retried; the deliveries already queued stay unique).
    pub async fn enqueue(&self, pool: &PgPool, job: &Job, model: Model, outcome: Outcome<'_>) -> Result<(), String> {
        // a shadow model version's read is never notified
        if self.config.rules.is_empty() || job.shadow {
            return Ok(());
        }
        let (study, last_image_at) = study_of(pool, &job.site, &job.study_instance_uid, job.study_version).await?;
        let model_version = model.version.clone();
        let base = Event::new("", study, model, outcome, last_image_at, Utc::now());
        let queue = PgQueue::new(pool.clone());
        // the latest earlier read notified, per destination (one query for all rules): an
        // earlier study version's, or another model version's read of this study version (a
        // re-analysis with a new model version corrects it)
        let earlier_by_destination: std::collections::HashMap<String, i32> = sqlx::query_as(
            "SELECT destination, max(study_version) FROM jobs WHERE kind = 'notify' AND study_instance_uid = $1 \
             AND model = $2 AND site = $4 AND (study_version < $3 OR (study_version = $3 AND model_version <> $5)) \
             GROUP BY destination",
        )
        .bind(&job.study_instance_uid)
        .bind(&job.model)
        .bind(job.study_version)
        .bind(&job.site)
        .bind(&model_version)
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
        for rule in &self.config.rules {
            let matches = rule.matches(&base);
            for channel in &rule.channels {
                let destination = rules::destination(&rule.name, channel);
                let earlier = earlier_by_destination.get(&destination).copied();
                if !matches && earlier.is_none() {
                    continue;
                }
                let mut event = base.clone();
                event.rule.clone_from(&rule.name);
                if let Some(v) = earlier {
                    event = event.correcting(v);
                }
                let payload = serde_json::to_value(&event).map_err(|e| e.to_string())?;
                let created = queue
                    .enqueue(&NewJob {
                        kind: JobKind::Notify,
                        site: &job.site,
                        study_instance_uid: &job.study_instance_uid,
                        study_version: job.study_version,
                        model: &job.model,
                        model_version: &model_version,
                        destination: &destination,
                        part: "",
                        payload: &payload,
                        max_attempts: self.config.max_attempts,
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                if created.is_some() {
                    info!(%destination, correction = earlier.is_some(), "notification queued");
                }
            }
        }
        Ok(())
    }
}

/// The study's identity from the index, and when its last analysable image arrived.
async fn study_of(pool: &PgPool, site: &str, study: &str, version: i32) -> Result<(Study, DateTime<Utc>), String> {
    let row = sqlx::query(
        "SELECT accession_number, patient_id, patient_name, patient_birth_date, patient_sex, study_date, study_time, \
                study_description, calling_ae_title, coalesce(last_image_at, last_received_at) \
         FROM studies WHERE site = $1 AND study_instance_uid = $2",
    )
    .bind(site)
    .bind(study)
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())?;
    // the index stores text trimmed, empty as NULL
    let text = |i: usize| row.try_get::<Option<String>, _>(i).map_err(|e| e.to_string());
    let s = Study {
        study_instance_uid: study.to_owned(),
        study_version: version,
        accession_number: text(0)?,
        patient_id: text(1)?,
        patient_name: text(2)?,
        patient_birth_date: text(3)?,
        patient_sex: text(4)?,
        study_date: text(5)?,
        study_time: text(6)?,
        study_description: text(7)?,
        sender: text(8)?.unwrap_or_default(),
        site: site.to_owned(),
    };
    let last: DateTime<Utc> = row.try_get(9).map_err(|e| e.to_string())?;
    Ok((s, last))
}

/// The delivery job handler.
#[derive(Debug, Clone)]
pub struct Deliveries {
    config: Arc<NotifyConfig>,
    http: reqwest::Client,
}

impl Deliveries {
    /// Delivers on the channels of `config`.
    ///
    /// # Errors
    /// The HTTP client's TLS back-end could not start.
    pub fn new(config: Arc<NotifyConfig>) -> anyhow::Result<Self> {
        Ok(Deliveries { config, http: firstread_notify::http_client()? })
    }
}

/// The delivery id of a job: a UUID v5 of its unique key, the same on every attempt. A
/// correction of the same study version (another model version's read) adds the model version,
/// so it differs from the message it corrects.
pub fn delivery_id(job: &Job) -> String {
    let mut key = format!("{}/{}/{}/{}", crate::results::study_key(job), job.study_version, job.model, job.destination);
    if job.payload.get("supersedes_study_version").and_then(Value::as_i64) == Some(i64::from(job.study_version)) {
        key = format!("{key}/{}", job.model_version);
    }
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes()).to_string()
}

impl JobHandler for Deliveries {
    async fn handle(&self, job: &Job) -> Result<Value, JobError> {
        let Some((_, channel_name)) = rules::parse_destination(&job.destination) else {
            return Err(JobError::Permanent(format!("destination {:?} is not <rule>/<channel>", job.destination)));
        };
        let Some(channel) = self.config.channel(channel_name) else {
            return Err(JobError::Permanent(format!("channel {channel_name} is not configured")));
        };
        let event =
            Event::deserialize(&job.payload).map_err(|e| JobError::Permanent(format!("notification payload: {e}")))?;
        let id = delivery_id(job);
        let kind = channel.kind.as_str();
        match firstread_notify::deliver(&self.http, channel, &event, &id).await {
            Ok(delivered) => {
                metrics::counter!("firstread_notifications_total", "channel" => kind, "outcome" => "sent").increment(1);
                let latency = (Utc::now() - event.last_image_at).to_std().unwrap_or_default();
                metrics::histogram!("firstread_last_image_to_notification_seconds", "channel" => kind)
                    .record(latency.as_secs_f64());
                info!(channel = channel_name, answer = %delivered.answer, "notification delivered");
                Ok(json!({ "delivered": delivered, "status": event.status, "latency_ms": latency.as_millis() as u64 }))
            }
            Err(e) => {
                metrics::counter!("firstread_notifications_total", "channel" => kind, "outcome" => "failed")
                    .increment(1);
                Err(match e {
                    DeliveryError::Retry(m) => JobError::Retry(m),
                    DeliveryError::Permanent(m) => JobError::Permanent(m),
                })
            }
        }
    }
}
