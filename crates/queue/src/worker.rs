//! The worker loop: claim a job, keep its lease alive while the handler runs, record the outcome.
//! Workers wake on PostgreSQL LISTEN/NOTIFY (`firstread_jobs`) and poll as the fallback, so a
//! missed notification (e.g. while the database restarts) only delays a job by the poll interval.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::jobs::{Backoff, Job, JobKind, JobQueue, QueueError};

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt after the backoff (the job is dead after its last attempt).
    #[error("{0}")]
    Retry(String),
    /// Will fail the same way every time: the job is dead now, with this reason.
    #[error("{0}")]
    Permanent(String),
}

impl From<String> for JobError {
    fn from(message: String) -> Self {
        JobError::Retry(message)
    }
}

/// What runs a job. `Ok` is the job's result (stored as JSON; an analysis that refuses a study
/// with a reason is an `Ok` result too); `Err` is a failed attempt: retried with backoff, or
/// dead at once when [`JobError::Permanent`].
pub trait JobHandler: Send + Sync + 'static {
    /// Runs `job`.
    fn handle(&self, job: &Job) -> impl Future<Output = Result<serde_json::Value, JobError>> + Send;

    /// Called once `job` is dead, with its error (nothing by default): after the failed attempt
    /// this worker recorded, or when this worker found its lease expired on its last attempt
    /// ([`JobQueue::reap`]: another worker was lost running it).
    fn dead(&self, job: &Job, error: &str) -> impl Future<Output = ()> + Send {
        let _ = (job, error);
        async {}
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Which jobs this worker takes.
    pub kind: JobKind,
    /// Unique worker id (node id + index).
    pub worker_id: String,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// Poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// Retry backoff.
    pub backoff: Backoff,
    /// Testing aid: hold every job at least this long before running it (lease renewed meanwhile).
    pub hold_for: Duration,
}

/// Runs one worker until `shutdown`; `wake` is notified on new jobs (see [`listen`]).
pub async fn run_worker<Q: JobQueue, H: JobHandler>(
    queue: Arc<Q>,
    handler: Arc<H>,
    config: WorkerConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut errors = 0u32;
    while !shutdown.is_cancelled() {
        // jobs whose worker was lost on their last attempt: dead now, and their handler told
        match queue.reap(config.kind).await {
            Ok(dead) => {
                for job in dead {
                    let error = "lease expired on the last attempt (worker lost)";
                    async {
                        warn!(error, "job dead");
                        handler.dead(&job, error).await;
                    }
                    .instrument(job_span(&job))
                    .await;
                }
            }
            Err(e) => warn!(error = %e, "ending jobs whose worker was lost failed"),
        }
        match queue.claim(config.kind, &config.worker_id, config.lease).await {
            Ok(Some(job)) => {
                errors = 0;
                let span = job_span(&job);
                run_one(&*queue, &*handler, &config, job).instrument(span).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
            }
            Err(e) => {
                errors += 1;
                let pause = Duration::from_millis(200 * u64::from(errors.min(25)));
                warn!(error = %e, ?pause, "claiming failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// The tracing span of everything done for `job`.
fn job_span(job: &Job) -> tracing::Span {
    info_span!("job", id = job.id, kind = job.kind.as_str(), site = %job.site, study = %job.study_instance_uid,
        version = job.study_version, attempt = job.attempt)
}

async fn run_one<Q: JobQueue, H: JobHandler>(queue: &Q, handler: &H, config: &WorkerConfig, job: Job) {
    info!("job started");
    let work = async {
        if !config.hold_for.is_zero() {
            tokio::time::sleep(config.hold_for).await;
        }
        handler.handle(&job).await
    };
    let keep_lease = async {
        loop {
            tokio::time::sleep(config.lease / 3).await;
            match queue.renew(&job, &config.worker_id, config.lease).await {
                Ok(()) => {}
                Err(QueueError::LeaseLost(_)) => return,
                // A database hiccup: keep trying until the lease would have expired.
                Err(e) => warn!(error = %e, "lease renewal failed"),
            }
        }
    };
    let outcome = tokio::select! {
        r = work => r,
        () = keep_lease => {
            warn!("lease lost; abandoning the job to whoever holds it now");
            return;
        }
    };
    let recorded = match &outcome {
        Ok(result) => queue.complete(&job, &config.worker_id, result).await,
        Err(JobError::Retry(error)) => queue.fail(&job, &config.worker_id, error, config.backoff, false).await,
        Err(JobError::Permanent(error)) => queue.fail(&job, &config.worker_id, error, config.backoff, true).await,
    };
    match (recorded, outcome) {
        (Ok(()), Ok(_)) => info!(elapsed_ms = (chrono::Utc::now() - job.started_at).num_milliseconds(), "job done"),
        (Ok(()), Err(JobError::Permanent(e))) => {
            warn!(error = %e, "job failed for good: dead");
            handler.dead(&job, &e).await;
        }
        (Ok(()), Err(JobError::Retry(e))) if job.attempt >= job.max_attempts => {
            warn!(error = %e, "job failed on its last attempt: dead");
            handler.dead(&job, &e).await;
        }
        (Ok(()), Err(e)) => warn!(error = %e, retry_in = ?config.backoff.delay(job.attempt), "job failed; will retry"),
        (Err(QueueError::LeaseLost(_)), _) => warn!("finished after the lease was lost; result discarded"),
        (Err(e), _) => warn!(error = %e, "could not record the outcome; the lease will expire and the job rerun"),
    }
}

/// Listens for `firstread_jobs` notifications and wakes workers; after a reconnect everyone is
/// woken in case one was missed ([`listen_channel`]).
pub async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    listen_channel(pool, "firstread_jobs", |_| wake.notify_waiters(), shutdown).await;
}

/// Listens on the PostgreSQL notification `channel` until `shutdown`, calling `on` with each
/// notification's payload, and with `None` whenever one may have been missed (connected or
/// reconnected after a database restart, connection lost): the caller then assumes anything
/// changed. Retries the connection every second meanwhile.
pub async fn listen_channel(
    pool: PgPool,
    channel: &str,
    mut on: impl FnMut(Option<&str>) + Send,
    shutdown: CancellationToken,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, channel, "LISTEN connection failed; polling meanwhile");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        if let Err(e) = listener.listen(channel).await {
            debug!(error = %e, channel, "LISTEN failed");
            tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
        }
        on(None);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => on(Some(n.payload())),
                    // connection lost: sqlx reconnects on the next call; one may have been missed
                    Ok(None) => on(None),
                    Err(e) => { debug!(error = %e, channel, "LISTEN connection broke"); break; }
                }
            }
        }
    }
}
