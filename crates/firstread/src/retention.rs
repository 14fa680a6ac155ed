//! Retention: the housekeeping that keeps the storage from growing without end (`[retention]`,
//! `firstread purge [--dry-run]`).
//!
//! A study loses its **received images** (their files and index rows) when its last instance
//! arrived longer ago than `max_age`, or, beyond `max_storage_bytes` of received images, oldest
//! first. Never a study still being assembled or whose analysis, exports or notifications are not
//! finished (queued or running jobs). What stays: the result objects (SR, SEG, key images under
//! `results/`), the study and series rows with `studies.purged_at` and `purged_instances` (an
//! index stub saying what was purged and when), the jobs and their results, the feedback and the
//! audit trail, which records each purge (`delete`). Rows go first, files after: a crash between
//! leaves files nobody references, never a row without its file. A study is purged only when no
//! open association is delivering to it, under its row's lock, and only if nothing arrived since
//! it was chosen; a file indexed again meanwhile (the same instance re-sent) is kept. What is not
//! covered: an instance re-sent while its study is purged whose file was placed just before the
//! purge's rows went and indexed just after it checked (a window of milliseconds, on a study no
//! association was delivering to when the purge began).
//!
//! Job runs and closed associations older than `keep_runs` are pruned as well.

use std::time::Duration;

use firstread_store::Storage;
use sqlx::PgPool;
use tracing::{info, warn};

use crate::config::RetentionConfig;

/// Index paths of result objects this node wrote (kept by a purge).
const RESULTS: &str = "(i.path LIKE 'results/%' OR i.path LIKE 'sites/%/results/%')";

/// Why a study is purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Older than `max_age`.
    Age,
    /// Beyond `max_storage_bytes`, oldest first.
    Quota,
}

/// One study a purge removes (or would remove) the received images of.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    /// Its site.
    pub site: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Received instances.
    pub instances: i64,
    /// Their bytes.
    pub bytes: i64,
    /// When its last instance arrived.
    pub last_received_at: chrono::DateTime<chrono::Utc>,
    /// Why.
    pub reason: Reason,
}

/// What one run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The studies purged (or, dry, to purge).
    pub studies: Vec<Candidate>,
    /// Received bytes freed (or to free).
    pub bytes: i64,
    /// Job runs pruned (0 when dry).
    pub job_runs_pruned: u64,
    /// Closed associations pruned (0 when dry).
    pub associations_pruned: u64,
}

/// The studies to purge now, oldest first.
///
/// # Errors
/// Database errors.
pub async fn candidates(pool: &PgPool, config: &RetentionConfig) -> Result<Vec<Candidate>, sqlx::Error> {
    if !config.enabled() {
        return Ok(Vec::new());
    }
    // every study that may lose its images: assembled, no job unfinished, images left
    let eligible: Vec<(String, String, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(&format!(
        "SELECT s.site, s.study_instance_uid, count(*), coalesce(sum(i.size_bytes), 0)::bigint, s.last_received_at \
         FROM studies s JOIN instances i ON i.site = s.site AND i.study_instance_uid = s.study_instance_uid \
         WHERE NOT {RESULTS} \
           AND (NOT s.analysable OR s.queued_version >= s.version) AND s.stable_at <= now() \
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.site = s.site AND j.study_instance_uid = s.study_instance_uid \
                           AND j.state IN ('queued', 'running')) \
           AND NOT EXISTS (SELECT 1 FROM study_deliveries d JOIN associations a ON a.id = d.association_id \
                           WHERE d.site = s.site AND d.study_instance_uid = s.study_instance_uid \
                             AND a.closed_at IS NULL) \
         GROUP BY s.site, s.study_instance_uid, s.last_received_at \
         ORDER BY s.last_received_at, s.site, s.study_instance_uid"
    ))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    let cutoff = config.max_age.and_then(|a| chrono::Duration::from_std(a).ok()).map(|a| chrono::Utc::now() - a);
    let mut remaining: i64 = match config.max_storage_bytes {
        Some(_) => {
            sqlx::query_scalar(&format!(
                "SELECT coalesce(sum(i.size_bytes), 0)::bigint FROM instances i WHERE NOT {RESULTS}"
            ))
            .fetch_one(pool)
            .await?
        }
        None => 0,
    };
    let quota = config.max_storage_bytes.map(|q| i64::try_from(q).unwrap_or(i64::MAX));
    for (site, study_instance_uid, instances, bytes, last_received_at) in eligible {
        let reason = if cutoff.is_some_and(|c| last_received_at < c) {
            Reason::Age
        } else if quota.is_some_and(|q| remaining > q) {
            Reason::Quota
        } else {
            continue;
        };
        remaining -= bytes;
        out.push(Candidate { site, study_instance_uid, instances, bytes, last_received_at, reason });
    }
    Ok(out)
}

/// Runs the retention once: purges the [`candidates`] and prunes old job runs and associations;
/// with `dry_run`, only says what it would purge.
///
/// # Errors
/// Database errors (what was purged before stays purged).
pub async fn run(
    pool: &PgPool,
    storage: &Storage,
    config: &RetentionConfig,
    node_ae_title: &str,
    dry_run: bool,
) -> Result<Report, sqlx::Error> {
    if dry_run {
        let studies = candidates(pool, config).await?;
        return Ok(Report { bytes: studies.iter().map(|c| c.bytes).sum(), studies, ..Report::default() });
    }
    // one purge at a time across the nodes sharing the database (the others skip this round); the
    // studies are chosen under the lock, so a node that skips does not query them for nothing
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('firstread-retention'))")
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        info!("another node is purging: skipped");
        return Ok(Report::default());
    }
    let purged = match candidates(pool, config).await {
        Ok(studies) => {
            let report = Report { bytes: studies.iter().map(|c| c.bytes).sum(), ..Report::default() };
            purge(pool, storage, config, node_ae_title, studies, report).await
        }
        Err(e) => Err(e),
    };
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('firstread-retention'))").execute(&mut *lock).await;
    purged
}

async fn purge(
    pool: &PgPool,
    storage: &Storage,
    config: &RetentionConfig,
    node_ae_title: &str,
    studies: Vec<Candidate>,
    mut report: Report,
) -> Result<Report, sqlx::Error> {
    for c in studies {
        let mut tx = pool.begin().await?;
        // the study's row locked (an instance being indexed waits for it), and still as chosen:
        // nothing arrived since, no job started
        let unchanged: Option<bool> = sqlx::query_scalar(
            "SELECT s.last_received_at = $3 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.site = s.site \
                 AND j.study_instance_uid = s.study_instance_uid AND j.state IN ('queued', 'running')) \
             FROM studies s WHERE s.site = $1 AND s.study_instance_uid = $2 FOR UPDATE",
        )
        .bind(&c.site)
        .bind(&c.study_instance_uid)
        .bind(c.last_received_at)
        .fetch_optional(&mut *tx)
        .await?;
        if unchanged != Some(true) {
            info!(site = %c.site, study = %c.study_instance_uid, "changed since it was chosen: not purged");
            continue;
        }
        let paths: Vec<String> = sqlx::query_scalar(&format!(
            "DELETE FROM instances i WHERE i.site = $1 AND i.study_instance_uid = $2 AND NOT {RESULTS} \
             AND i.received_at <= $3 RETURNING i.path"
        ))
        .bind(&c.site)
        .bind(&c.study_instance_uid)
        .bind(c.last_received_at)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE studies SET purged_at = now(), purged_instances = coalesce(purged_instances, 0) + $3 \
             WHERE site = $1 AND study_instance_uid = $2",
        )
        .bind(&c.site)
        .bind(&c.study_instance_uid)
        .bind(i32::try_from(paths.len()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // a path indexed again meanwhile (the same instance re-sent) keeps its file
        let again: Vec<String> =
            sqlx::query_scalar("SELECT path FROM instances WHERE path = ANY($1)").bind(&paths).fetch_all(pool).await?;
        for path in paths.iter().filter(|p| !again.contains(p)) {
            if let Err(e) = storage.remove(path).await {
                warn!(path, error = %e, "purged instance file not removed");
            }
        }
        let event = firstread_audit::Event {
            actor: firstread_audit::Actor::Node(node_ae_title.to_owned()),
            address: None,
            action: firstread_audit::Action::Delete,
            study: Some(c.study_instance_uid.clone()),
            site: Some(c.site.clone()),
            success: true,
            detail: serde_json::json!({ "instances": paths.len(), "bytes": c.bytes, "reason": c.reason }),
        };
        if let Err(e) = firstread_audit::record(pool, &event).await {
            warn!(error = %e, "could not record the purge in the audit trail");
        }
        info!(site = %c.site, study = %c.study_instance_uid, instances = paths.len(), bytes = c.bytes, reason = ?c.reason,
            "received images purged (results kept)");
        report.studies.push(c);
    }
    let keep = config.keep_runs.as_secs_f64();
    report.job_runs_pruned = sqlx::query("DELETE FROM job_runs WHERE finished_at < now() - make_interval(secs => $1)")
        .bind(keep)
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query(
        "DELETE FROM study_deliveries d USING associations a \
         WHERE a.id = d.association_id AND a.closed_at < now() - make_interval(secs => $1)",
    )
    .bind(keep)
    .execute(pool)
    .await?;
    report.associations_pruned =
        sqlx::query("DELETE FROM associations WHERE closed_at < now() - make_interval(secs => $1)")
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected();
    Ok(report)
}

/// The housekeeping task of a node with the work role: [`run`] every `config.interval` until
/// `shutdown` (nothing when no limit is configured).
pub async fn housekeeping(
    pool: PgPool,
    storage: Storage,
    config: RetentionConfig,
    node_ae_title: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if !config.enabled() {
        return;
    }
    let interval = config.interval.max(Duration::from_secs(1));
    loop {
        if let Err(e) = run(&pool, &storage, &config, &node_ae_title, false).await {
            warn!(error = %e, "retention failed; retrying at the next interval");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
