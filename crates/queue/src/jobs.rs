//! Leased jobs in PostgreSQL (the pattern of River, graphile-worker, pg-boss): claim with
//! `FOR UPDATE SKIP LOCKED`, hold a lease renewed while working, retry with exponential backoff up
//! to a maximum number of attempts, then `dead` with the last error kept. Completion and failure
//! only count while the lease is still ours, so a job whose lease expired and was taken over by
//! another worker is finished once, by that worker.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::Row;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Analyse a study version with a model.
    Analysis,
    /// Send a result object set to a destination.
    Export,
    /// Deliver a notification of a result on one channel (destination `<rule>/<channel>`).
    Notify,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 3] = [JobKind::Analysis, JobKind::Export, JobKind::Notify];

    /// The kind stored as `name` in `jobs.kind` ([`JobKind::as_str`]); `None` for any other text.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The name stored in `jobs.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Analysis => "analysis",
            JobKind::Export => "export",
            JobKind::Notify => "notify",
        }
    }
}

/// The export part that sends a first read's SR, queued as soon as the SR is written.
pub const PART_SR: &str = "sr";
/// The export part that sends the rest of a result set (volumetric SR, SEG, key images).
pub const PART_OBJECTS: &str = "objects";

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// Its kind.
    pub kind: JobKind,
    /// The site (hospital) of the study (`firstread_sites`).
    pub site: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version (1 for the first analysis; +1 per accepted late arrival).
    pub study_version: i32,
    /// Model name (analysis jobs; the model whose results an export or notify job sends).
    pub model: String,
    /// Model version (its version folder; "" for jobs queued before versions were recorded:
    /// the model's active version).
    pub model_version: String,
    /// Whether an analysis job runs its model version as a shadow (results indexed, never
    /// exported or notified).
    pub shadow: bool,
    /// Destination AE title (export jobs).
    pub destination: String,
    /// Kind-specific parameters.
    pub payload: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: i32,
    /// When this attempt started.
    pub started_at: DateTime<Utc>,
    /// When the job was created (the same on every attempt: result objects are dated by it).
    pub created_at: DateTime<Utc>,
}

/// Retry policy: delay before attempt n+1 is `base * 2^(n-1)`, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Backoff {
    /// Delay after `attempt` failed attempts (attempt >= 1).
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// Queue errors.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database failed.
    #[error("queue database: {0}")]
    Database(#[from] sqlx::Error),
    /// The lease was lost (expired and taken over, or the job finished elsewhere).
    #[error("lease on job {0} lost")]
    LeaseLost(i64),
}

/// How long after its stability deadline a study pending assembly still holds back jobs below
/// priority 0 (re-analysis): a study still receiving, or about to be promoted, is live work on
/// its way. One held past it (an association open but silent) no longer does, so a stuck study
/// never starves the backlog.
pub const ARRIVING_WINDOW: Duration = Duration::from_secs(60);

/// The queue operations workers need: a small interface so that an embedded single-node backend
/// (SQLite) can be added beside PostgreSQL.
pub trait JobQueue: Send + Sync + 'static {
    /// Claims the next claimable job of `kind` for `worker`: queued and due, or running with an
    /// expired lease; the highest priority first (`jobs.priority`: re-analysis below live work),
    /// then the oldest. A job below priority 0 is not started while a live study is arriving (a
    /// study pending assembly whose stability deadline is at most [`ARRIVING_WINDOW`] past), so
    /// that a worker is free when that study becomes ready. A job whose lease expired on its
    /// last attempt is not claimed: [`JobQueue::reap`] ends it.
    fn claim(
        &self,
        kind: JobKind,
        worker: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<Job>, QueueError>> + Send;
    /// Ends as `dead` the jobs of `kind` whose lease expired on their last attempt (their worker
    /// was lost), and returns them.
    fn reap(&self, kind: JobKind) -> impl Future<Output = Result<Vec<Job>, QueueError>> + Send;
    /// Extends the lease. [`QueueError::LeaseLost`] when it is no longer ours.
    fn renew(&self, job: &Job, worker: &str, lease: Duration) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Marks the job done with its result and records the run.
    fn complete(
        &self,
        job: &Job,
        worker: &str,
        result: &serde_json::Value,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Records a failed attempt: queued again after the backoff, or dead after the last attempt
    /// or at once when `permanent`.
    fn fail(
        &self,
        job: &Job,
        worker: &str,
        error: &str,
        backoff: Backoff,
        permanent: bool,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// The PostgreSQL queue (tables in `schemas/0002_assembly_queue.sql`).
#[derive(Debug, Clone)]
pub struct PgQueue {
    pool: PgPool,
}

impl PgQueue {
    /// A queue on `pool`.
    pub fn new(pool: PgPool) -> Self {
        PgQueue { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Enqueues a job unless the same (kind, site, study, version, model, model version,
    /// destination, part) exists; returns its id when created.
    ///
    /// # Errors
    /// Database errors.
    pub async fn enqueue(&self, job: &NewJob<'_>) -> Result<Option<i64>, QueueError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO jobs (kind, study_instance_uid, study_version, model, destination, payload, max_attempts, site, \
                 model_version, part) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(job.kind.as_str())
        .bind(job.study_instance_uid)
        .bind(job.study_version)
        .bind(job.model)
        .bind(job.destination)
        .bind(job.payload)
        .bind(job.max_attempts)
        .bind(job.site)
        .bind(job.model_version)
        .bind(job.part)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// Operator actions (`firstread jobs retry|cancel`).
impl PgQueue {
    /// Queues dead job `id` again now, with its attempts counted from zero; its last error is
    /// kept until the next attempt. `Ok(false)` when no dead job has that id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn retry(&self, id: i64) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_after = now(), finished_at = NULL \
             WHERE id = $1 AND state = 'dead'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Queues every dead job (of `kind` when given) again; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn retry_dead(&self, kind: Option<JobKind>) -> Result<u64, QueueError> {
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_after = now(), finished_at = NULL \
             WHERE state = 'dead' AND ($1::text IS NULL OR kind = $1)",
        )
        .bind(kind.map(JobKind::as_str))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Ends queued or running job `id` as dead with "cancelled by an operator" (a worker that
    /// holds it loses its lease: its outcome is not recorded). `Ok(false)` when no queued or
    /// running job has that id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn cancel(&self, id: i64) -> Result<bool, QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET state = 'dead', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = 'cancelled by an operator' || coalesce(' (last error: ' || last_error || ')', '') \
             WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Its kind.
    pub kind: JobKind,
    /// The site of the study.
    pub site: &'a str,
    /// Study Instance UID.
    pub study_instance_uid: &'a str,
    /// Study version.
    pub study_version: i32,
    /// Model name (analysis) or the model whose results are exported.
    pub model: &'a str,
    /// Model version, likewise.
    pub model_version: &'a str,
    /// Destination AE title (export jobs), "" otherwise.
    pub destination: &'a str,
    /// Which part of a result set an export job sends ([`PART_SR`], [`PART_OBJECTS`]), ""
    /// otherwise: one job per part.
    pub part: &'a str,
    /// Kind-specific parameters.
    pub payload: &'a serde_json::Value,
    /// Attempts before dead.
    pub max_attempts: i32,
}

/// The columns [`job_of`] reads, in its order.
const JOB_COLUMNS: &str =
    "id, study_instance_uid, study_version, model, destination, payload, attempts, max_attempts, \
                           started_at, created_at, site, model_version, shadow";

/// A job from a row of [`JOB_COLUMNS`].
fn job_of(r: &sqlx::postgres::PgRow, kind: JobKind) -> Result<Job, sqlx::Error> {
    Ok(Job {
        id: r.try_get(0)?,
        kind,
        site: r.try_get(10)?,
        study_instance_uid: r.try_get(1)?,
        study_version: r.try_get(2)?,
        model: r.try_get(3)?,
        model_version: r.try_get(11)?,
        shadow: r.try_get(12)?,
        destination: r.try_get(4)?,
        payload: r.try_get(5)?,
        attempt: r.try_get(6)?,
        max_attempts: r.try_get(7)?,
        started_at: r.try_get(8)?,
        created_at: r.try_get(9)?,
    })
}

impl JobQueue for PgQueue {
    async fn claim(&self, kind: JobKind, worker: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $2, \
                 lease_expires_at = now() + make_interval(secs => $3), started_at = now() \
             WHERE id = (SELECT id FROM jobs WHERE kind = $1 AND \
                   ((state = 'queued' AND run_after <= now()) \
                    OR (state = 'running' AND lease_expires_at < now() AND attempts < max_attempts)) \
                   AND (priority >= 0 OR NOT EXISTS (SELECT 1 FROM studies s \
                       WHERE s.queued_version < s.version AND s.analysable \
                         AND s.stable_at > now() - make_interval(secs => $4))) \
                 ORDER BY priority DESC, run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(worker)
            .bind(lease.as_secs_f64())
            .bind(ARRIVING_WINDOW.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(job_of(&r, kind)?))
    }

    async fn reap(&self, kind: JobKind) -> Result<Vec<Job>, QueueError> {
        let sql = format!(
            "UPDATE jobs SET state = 'dead', finished_at = now(), lease_owner = NULL, \
             last_error = coalesce(last_error || '; ', '') || 'lease expired on the last attempt (worker lost)' \
             WHERE kind = $1 AND state = 'running' AND lease_expires_at < now() AND attempts >= max_attempts \
             RETURNING {JOB_COLUMNS}"
        );
        let rows = sqlx::query(&sql).bind(kind.as_str()).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| job_of(r, kind)).collect::<Result<_, _>>()?)
    }

    async fn renew(&self, job: &Job, worker: &str, lease: Duration) -> Result<(), QueueError> {
        let n = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND attempts = $4",
        )
        .bind(job.id)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(job.attempt)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(job.id))
        }
    }

    async fn complete(&self, job: &Job, worker: &str, result: &serde_json::Value) -> Result<(), QueueError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'done', result = $3, finished_at = now(), lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND attempts = $4",
        )
        .bind(job.id)
        .bind(worker)
        .bind(result)
        .bind(job.attempt)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        close_attempt(tx, n, job, worker, "done", None).await
    }

    async fn fail(
        &self,
        job: &Job,
        worker: &str,
        error: &str,
        backoff: Backoff,
        permanent: bool,
    ) -> Result<(), QueueError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts OR $6 THEN 'dead' ELSE 'queued' END, \
                 run_after = now() + make_interval(secs => $4), last_error = $3, lease_owner = NULL, lease_expires_at = NULL, \
                 finished_at = CASE WHEN attempts >= max_attempts OR $6 THEN now() END \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND attempts = $5",
        )
        .bind(job.id)
        .bind(worker)
        .bind(error)
        .bind(backoff.delay(job.attempt).as_secs_f64())
        .bind(job.attempt)
        .bind(permanent)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        close_attempt(tx, n, job, worker, "failed", Some(error)).await
    }
}

/// Ends an attempt whose guarded UPDATE touched `updated` rows: exactly one means the lease was
/// still ours, so the run is recorded and the transaction committed; otherwise nothing counts.
async fn close_attempt(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    updated: u64,
    job: &Job,
    worker: &str,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), QueueError> {
    if updated != 1 {
        return Err(QueueError::LeaseLost(job.id));
    }
    record_run(&mut tx, job, worker, outcome, error).await?;
    tx.commit().await?;
    Ok(())
}

async fn record_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    job: &Job,
    worker: &str,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_runs (job_id, attempt, worker, outcome, error, started_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job.id)
    .bind(job.attempt)
    .bind(worker)
    .bind(outcome)
    .bind(error)
    .bind(job.started_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff { base: Duration::from_secs(2), max: Duration::from_secs(60) };
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert_eq!(b.delay(2), Duration::from_secs(4));
        assert_eq!(b.delay(4), Duration::from_secs(16));
        assert_eq!(b.delay(10), Duration::from_secs(60));
        assert_eq!(b.delay(1000), Duration::from_secs(60));
    }
}
