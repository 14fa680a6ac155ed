//! Re-analysis (`firstread reanalyse`): analysis jobs for stored studies, for one model
//! version, queued at [`REANALYSIS_PRIORITY`] so that live studies are claimed before them.
//!
//! Only studies the model version takes (its manifest's `[takes]`, as study assembly applies it:
//! `firstread_takes` in `schemas/0013_model_takes.sql`) are considered. Each matching study is
//! taken at its latest assembled study version (`studies.queued_version`); studies whose images
//! retention purged (`studies.purged_at`) cannot be read again and are left out; a study version that version of the model already has an analysis job for (done, queued
//! or running, in any role) is skipped. Inserts use `ON CONFLICT DO NOTHING` against the jobs'
//! unique key, so two operators running it at once queue each study version once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row;

use firstread_store::candidate::Takes;

use crate::jobs::QueueError;

/// The priority of re-analysis jobs: below the live jobs' 0 (`schemas/0011_job_priority.sql`).
pub const REANALYSIS_PRIORITY: i16 = -10;

/// What to re-analyse.
#[derive(Debug, Clone)]
pub struct Reanalysis<'a> {
    /// Model name.
    pub model: &'a str,
    /// Model version to run.
    pub model_version: &'a str,
    /// Whether that version runs as a shadow (results stored only).
    pub shadow: bool,
    /// Which studies it takes (the manifest's `[takes]`): others are left out.
    pub takes: &'a Takes,
    /// Studies whose last image arrived on or after this instant.
    pub since: DateTime<Utc>,
    /// Only studies of this site.
    pub site: Option<&'a str>,
    /// Attempts per job.
    pub max_attempts: i32,
    /// Count only; queue nothing.
    pub dry_run: bool,
}

/// Per-site counts of a re-analysis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// Study versions queued (or, in a dry run, that would be).
    pub queued: u64,
    /// Study versions already analysed (or queued) by the model version.
    pub skipped: u64,
}

/// What [`queue_reanalysis`] did, by site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReanalysisSummary {
    /// Counts by site.
    pub sites: BTreeMap<String, SiteCounts>,
}

impl ReanalysisSummary {
    /// Study versions queued, all sites.
    pub fn queued(&self) -> u64 {
        self.sites.values().map(|c| c.queued).sum()
    }

    /// Study versions skipped, all sites.
    pub fn skipped(&self) -> u64 {
        self.sites.values().map(|c| c.skipped).sum()
    }
}

/// Queues (or, with `dry_run`, counts) the re-analysis jobs of `r`.
///
/// # Errors
/// Database errors.
pub async fn queue_reanalysis(pool: &PgPool, r: &Reanalysis<'_>) -> Result<ReanalysisSummary, QueueError> {
    let rows = sqlx::query(
        "SELECT s.site, s.study_instance_uid, s.queued_version, EXISTS (SELECT 1 FROM jobs j \
             WHERE j.kind = 'analysis' AND j.site = s.site AND j.study_instance_uid = s.study_instance_uid \
               AND j.study_version = s.queued_version AND j.model = $1 AND j.model_version = $2) \
         FROM studies s \
         WHERE s.analysable AND s.queued_version >= 1 AND s.purged_at IS NULL AND coalesce(s.last_image_at, s.last_received_at) >= $3 \
           AND ($4::text IS NULL OR s.site = $4) AND firstread_takes(s.site, s.study_instance_uid, $5::jsonb) \
         ORDER BY coalesce(s.last_image_at, s.last_received_at), s.site, s.study_instance_uid",
    )
    .bind(r.model)
    .bind(r.model_version)
    .bind(r.since)
    .bind(r.site)
    .bind(sqlx::types::Json(r.takes))
    .fetch_all(pool)
    .await?;
    let mut summary = ReanalysisSummary::default();
    for row in rows {
        let site: String = row.try_get(0)?;
        let study: String = row.try_get(1)?;
        let version: i32 = row.try_get(2)?;
        let analysed: bool = row.try_get(3)?;
        let counts = summary.sites.entry(site.clone()).or_default();
        if analysed {
            counts.skipped += 1;
            continue;
        }
        if r.dry_run {
            counts.queued += 1;
            continue;
        }
        let created = sqlx::query(
            "INSERT INTO jobs (kind, site, study_instance_uid, study_version, model, model_version, shadow, \
                 max_attempts, priority, payload) \
             VALUES ('analysis', $1, $2, $3, $4, $5, $6, $7, $8, '{\"reanalysis\": true}') \
             ON CONFLICT DO NOTHING",
        )
        .bind(&site)
        .bind(&study)
        .bind(version)
        .bind(r.model)
        .bind(r.model_version)
        .bind(r.shadow)
        .bind(r.max_attempts)
        .bind(REANALYSIS_PRIORITY)
        .execute(pool)
        .await?
        .rows_affected();
        if created == 1 {
            counts.queued += 1;
        } else {
            counts.skipped += 1;
        }
    }
    Ok(summary)
}
