//! Study assembly: deciding in PostgreSQL when a study is complete enough to analyse.
//!
//! A study becomes **ready** when all of these hold (see `docs/ARCHITECTURE.md`):
//! 1. it holds an analysable instance and a study version not yet queued;
//! 2. its `stable_at` has passed: every indexed instance pushes it to now + `stable_after`
//!    (global, or per calling AE), in the statement that indexes the instance;
//! 3. no open association is still delivering to it. Associations are rows with a heartbeat; an
//!    association of a node that died (no heartbeat for `association_stale_after`) no longer
//!    holds its studies back, so a study survives a crash of the receiving node.
//!
//! **Early readiness** (`early_ready`, on by default): a study is made stable at once, instead
//! of waiting for `stable_after`, when all of these hold:
//! - every association that delivered to it was released (A-RELEASE, not aborted), the last one
//!   at least `early_ready_grace` ago, and no association of the same sender (calling AE title
//!   and peer host) is open now: a scanner that sends a study over back-to-back associations,
//!   one per series, opens the next one within the grace, so its study is not split into two
//!   study versions. A sender whose last `early_ready_trust_after` studies each came over one
//!   association (and none of its recent studies over several) is not waited for;
//! - among its series, those that can be a **candidate for analysis** are judged, by the rules
//!   the volume builder chooses a series by (`firstread_store::candidate`): original CT images
//!   (CT Image Storage, Modality CT, Image Type ORIGINAL\PRIMARY, not LOCALIZER or SCOUT),
//!   axial (rows within 0.1 rad of ±x, columns of ±y), at `early_min_slices` or more distinct
//!   positions along the slice normal. Scouts, dose reports (SR, Secondary Capture),
//!   single-image, derived and non-axial series neither block nor trigger it;
//! - at least one candidate series exists and every candidate series is complete: one
//!   orientation and no gap between neighbouring distinct positions larger than 1.5 x their
//!   median spacing (a missing slice).
//!
//! Otherwise the study waits for `stable_after` as before. A series arriving after the study
//! version was queued opens a new study version (amended results).
//!
//! Promotion creates one analysis job per (study, version, model, model version) for each model
//! version that takes the study (its manifest's `[takes]`: site, calling AE title, a CT series of
//! a Body Part Examined it takes; `schemas/0013_model_takes.sql`) and marks the version queued, under `FOR UPDATE SKIP LOCKED`, so any number of nodes can run it concurrently.

use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::PgPool;
use sqlx::Row;
use uuid::Uuid;

use firstread_store::candidate::{self, InstanceKind, Takes, DUPLICATE_MM, GAP_FACTOR};

use crate::jobs::QueueError;

/// A model version study versions are analysed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    /// Model name (its package folder under the models folder).
    pub name: String,
    /// Model version (its version folder).
    pub version: String,
    /// A shadow: analysed and indexed like the active version, never exported or notified.
    pub shadow: bool,
    /// Which studies it takes (the manifest's `[takes]`).
    pub takes: Takes,
}

/// An analysis job promotion created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// The study's site.
    pub site: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version.
    pub study_version: i32,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Whether the job runs the model version as a shadow.
    pub shadow: bool,
}

/// Assembly settings.
#[derive(Debug, Clone)]
pub struct AssemblyConfig {
    /// Model versions each ready study version is analysed with (one job each).
    pub models: Vec<ModelVersion>,
    /// Attempts per analysis job.
    pub max_attempts: i32,
    /// An open association whose node has not heartbeat for this long is considered gone.
    pub association_stale_after: Duration,
    /// Make a released study whose candidate series are complete ready before `stable_after`.
    pub early_ready: bool,
    /// How long after the release of the last association that delivered to a study early
    /// readiness waits for the sender's next association (back-to-back associations of one study).
    pub early_ready_grace: Duration,
    /// A sender whose last this many studies (of up to 20 within 30 days) each came over one
    /// association, and none over several, is not waited for: its study is ready once its
    /// association is released (`firstread_sends_whole_studies`, `schemas/0014`). 0: always
    /// wait the grace.
    pub early_ready_trust_after: u32,
    /// Fewest distinct slice positions a series needs to be a candidate for analysis (the
    /// smallest `min_slices` of the models run; at least 2).
    pub early_min_slices: usize,
}

/// Study assembly on a PostgreSQL pool, for one node process.
#[derive(Debug, Clone)]
pub struct Assembly {
    pool: PgPool,
    node_id: String,
    config: AssemblyConfig,
}

/// An association as recorded for assembly.
#[derive(Debug, Clone)]
pub struct OpenAssociation<'a> {
    /// Association id.
    pub id: Uuid,
    /// Calling AE title.
    pub calling_ae_title: &'a str,
    /// Called AE title.
    pub called_ae_title: &'a str,
    /// Peer address.
    pub peer_address: &'a str,
}

/// One series' geometry, as early readiness and operators need it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesGeometry {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Image Type (0008,0008) of the first instance.
    pub image_type: Option<String>,
    /// SOP Class UID of the first instance.
    pub sop_class_uid: String,
    /// Instances in the series.
    pub instances: usize,
    /// Original CT images ([`candidate::instance_kind`]): what the volume builder reads.
    pub original_images: usize,
    /// Distinct slice positions of the original CT images with an Image Position and Orientation
    /// (Patient) (positions within 0.01 mm along the normal are one slice).
    pub slices: usize,
    /// Whether the first original image's orientation is axial ([`candidate::is_axial`]).
    pub axial: bool,
    /// Lowest and highest position along the slice normal (mm).
    pub position_range_mm: Option<(f64, f64)>,
    /// Median distance between neighbouring slice positions (mm).
    pub median_spacing_mm: Option<f64>,
    /// Largest distance between neighbouring slice positions (mm).
    pub max_gap_mm: Option<f64>,
    /// Whether all slices share one Image Orientation (Patient) (within 1e-4).
    pub single_orientation: bool,
    /// The contiguity rule: >= 2 slices, one orientation, no gap > 1.5 x the median spacing.
    pub contiguous: bool,
    /// A candidate for analysis: axial original CT images at the minimum number of slices or more.
    pub candidate: bool,
}

impl SeriesGeometry {
    /// A series' identity before any instance is counted or slice measured (no slices, not
    /// contiguous, not a candidate).
    fn unmeasured(
        series_instance_uid: String,
        modality: Option<String>,
        image_type: Option<String>,
        sop_class_uid: String,
    ) -> SeriesGeometry {
        SeriesGeometry {
            series_instance_uid,
            modality,
            image_type,
            sop_class_uid,
            instances: 0,
            original_images: 0,
            slices: 0,
            axial: false,
            position_range_mm: None,
            median_spacing_mm: None,
            max_gap_mm: None,
            single_orientation: true,
            contiguous: false,
            candidate: false,
        }
    }
}

impl Assembly {
    /// Assembly for the node `node_id` (unique per process).
    pub fn new(pool: PgPool, node_id: impl Into<String>, config: AssemblyConfig) -> Self {
        Assembly { pool, node_id: node_id.into(), config }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Records an association as open (before its first instance is indexed).
    ///
    /// # Errors
    /// Database errors.
    pub async fn association_opened(&self, a: &OpenAssociation<'_>) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO associations (id, node_id, calling_ae_title, called_ae_title, peer_address) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(a.id)
        .bind(&self.node_id)
        .bind(a.calling_ae_title)
        .bind(a.called_ae_title)
        .bind(a.peer_address)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an association as closed, with how it ended ("released", "aborted", ...).
    ///
    /// # Errors
    /// Database errors.
    pub async fn association_closed(&self, id: Uuid, ending: &str) -> Result<(), QueueError> {
        sqlx::query("UPDATE associations SET closed_at = now(), ending = $2 WHERE id = $1")
            .bind(id)
            .bind(ending)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves the heartbeat of this node's open associations.
    ///
    /// # Errors
    /// Database errors.
    pub async fn heartbeat(&self) -> Result<u64, QueueError> {
        Ok(sqlx::query("UPDATE associations SET heartbeat_at = now() WHERE node_id = $1 AND closed_at IS NULL")
            .bind(&self.node_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// How long until the earliest pending study version reaches its stability time (`None`
    /// when none is waiting for it; versions already past it but held by an open association
    /// do not count), so the caller can promote it on time instead of on its next tick.
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_stable_in(&self) -> Result<Option<std::time::Duration>, QueueError> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM min(stable_at) - now())::float8 FROM studies \
             WHERE analysable AND queued_version < version AND stable_at > now()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(seconds.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
    }

    /// How long until the grace of the earliest pending study version whose delivering
    /// associations were all released runs out (`None` when early readiness is off or no such
    /// study waits for it), so the caller can judge it on time instead of on its next tick.
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_early_in(&self) -> Result<Option<std::time::Duration>, QueueError> {
        if !self.config.early_ready {
            return Ok(None);
        }
        let seconds: Option<f64> = sqlx::query_scalar(NEXT_EARLY_SQL)
            .bind(self.config.early_ready_grace.as_secs_f64())
            .fetch_one(&self.pool)
            .await?;
        Ok(seconds.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
    }

    /// Applies early readiness (when enabled), then promotes every ready study version to
    /// analysis jobs, one per configured model version. Returns the jobs created.
    ///
    /// # Errors
    /// Database errors.
    pub async fn promote(&self) -> Result<Vec<Promoted>, QueueError> {
        if self.config.early_ready {
            self.apply_early_readiness().await?;
        }
        let models: Vec<serde_json::Value> = self
            .config
            .models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "model": m.name, "model_version": m.version, "shadow": m.shadow, "takes": m.takes,
                })
            })
            .collect();
        let rows = sqlx::query(PROMOTE_SQL)
            .bind(self.config.association_stale_after.as_secs_f64())
            .bind(sqlx::types::Json(models))
            .bind(self.config.max_attempts)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Promoted {
                    site: r.try_get(0)?,
                    study_instance_uid: r.try_get(1)?,
                    study_version: r.try_get(2)?,
                    model: r.try_get(3)?,
                    model_version: r.try_get(4)?,
                    shadow: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn apply_early_readiness(&self) -> Result<(), QueueError> {
        // Pending and not yet stable; every delivering association released, the last one at
        // least the grace ago; no association of the same sender (calling AE title and host)
        // open now (one whose node stopped heartbeating does not count).
        let candidates: Vec<(String, String)> = sqlx::query_as(EARLY_CANDIDATES_SQL)
            .bind(self.config.early_ready_grace.as_secs_f64())
            .bind(self.config.association_stale_after.as_secs_f64())
            .bind(i32::try_from(self.config.early_ready_trust_after).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await?;
        for (site, study) in candidates {
            let geometry = series_geometry(&self.pool, &site, &study, self.config.early_min_slices).await?;
            if !complete_for_analysis(&geometry) {
                continue;
            }
            sqlx::query(
                "UPDATE studies SET stable_at = now() \
                 WHERE site = $1 AND study_instance_uid = $2 AND stable_at > now()",
            )
            .bind(&site)
            .bind(&study)
            .execute(&self.pool)
            .await?;
            let chosen: Vec<&str> =
                geometry.iter().filter(|g| g.candidate).map(|g| g.series_instance_uid.as_str()).collect();
            tracing::debug!(study = %study, candidates = ?chosen, "released and complete: ready early");
        }
        Ok(())
    }
}

/// Early readiness's geometry rule over a study's series: at least one candidate series, and
/// every candidate series contiguous. Other series (scouts, dose reports, single images,
/// non-axial or derived series) are not looked at.
pub fn complete_for_analysis(series: &[SeriesGeometry]) -> bool {
    let mut candidates = series.iter().filter(|g| g.candidate).peekable();
    candidates.peek().is_some() && candidates.all(|g| g.contiguous)
}

/// Studies early readiness looks at: $1 the grace (s), $2 `association_stale_after` (s), $3
/// `early_ready_trust_after`. The peer host is the peer address without its port. The grace is
/// not waited for a sender known to send whole studies (`firstread_sends_whole_studies`).
const EARLY_CANDIDATES_SQL: &str = r#"
SELECT s.site, s.study_instance_uid FROM studies s
WHERE s.analysable AND s.queued_version < s.version AND s.stable_at > now()
  AND EXISTS (SELECT 1 FROM study_deliveries d
      WHERE d.site = s.site AND d.study_instance_uid = s.study_instance_uid)
  AND NOT EXISTS (SELECT 1 FROM study_deliveries d JOIN associations a ON a.id = d.association_id
      WHERE d.site = s.site AND d.study_instance_uid = s.study_instance_uid
        AND (a.closed_at IS NULL OR a.ending <> 'released'
             OR (a.closed_at > now() - make_interval(secs => $1)
                 AND NOT firstread_sends_whole_studies(a.calling_ae_title,
                     regexp_replace(a.peer_address, ':[0-9]+$', ''), s.site, s.study_instance_uid, $3))))
  AND NOT EXISTS (SELECT 1 FROM study_deliveries d JOIN associations a ON a.id = d.association_id
      JOIN associations o ON o.closed_at IS NULL AND o.calling_ae_title = a.calling_ae_title
          AND regexp_replace(o.peer_address, ':[0-9]+$', '') = regexp_replace(a.peer_address, ':[0-9]+$', '')
      WHERE d.site = s.site AND d.study_instance_uid = s.study_instance_uid
        AND o.heartbeat_at > now() - make_interval(secs => $2))
ORDER BY s.stable_at
LIMIT 100
"#;

/// Seconds until the grace ($1, s) of the earliest pending study whose delivering associations
/// were all released runs out.
const NEXT_EARLY_SQL: &str = r#"
SELECT EXTRACT(EPOCH FROM min(t.last_closed) + make_interval(secs => $1) - now())::float8 FROM (
    SELECT max(a.closed_at) AS last_closed FROM studies s
    JOIN study_deliveries d ON d.site = s.site AND d.study_instance_uid = s.study_instance_uid
    JOIN associations a ON a.id = d.association_id
    WHERE s.analysable AND s.queued_version < s.version AND s.stable_at > now()
    GROUP BY s.site, s.study_instance_uid
    HAVING bool_and(a.closed_at IS NOT NULL AND a.ending = 'released')
) t WHERE t.last_closed + make_interval(secs => $1) > now()
"#;

/// CT Image Storage and Enhanced CT Image Storage: the SOP Classes the models analyse.
pub fn is_analysable_class(sop_class_uid: &str) -> bool {
    matches!(sop_class_uid, "1.2.840.10008.5.1.4.1.1.2" | "1.2.840.10008.5.1.4.1.1.2.1")
}

const PROMOTE_SQL: &str = r#"
WITH ready AS (
    SELECT s.site, s.study_instance_uid, s.version FROM studies s
    WHERE s.analysable AND s.queued_version < s.version AND s.stable_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM study_deliveries d JOIN associations a ON a.id = d.association_id
          WHERE d.site = s.site AND d.study_instance_uid = s.study_instance_uid AND a.closed_at IS NULL
            AND a.heartbeat_at > now() - make_interval(secs => $1))
    ORDER BY s.stable_at
    LIMIT 200
    FOR UPDATE OF s SKIP LOCKED
), marked AS (
    UPDATE studies s SET queued_version = r.version FROM ready r
    WHERE s.site = r.site AND s.study_instance_uid = r.study_instance_uid
    RETURNING s.site, s.study_instance_uid, s.version
)
INSERT INTO jobs (kind, site, study_instance_uid, study_version, model, model_version, shadow, max_attempts)
SELECT 'analysis', m.site, m.study_instance_uid, m.version, v.model, v.model_version, v.shadow, $3
FROM marked m CROSS JOIN jsonb_to_recordset($2::jsonb) AS v(model text, model_version text, shadow boolean, takes jsonb)
WHERE firstread_takes(m.site, m.study_instance_uid, v.takes)
ON CONFLICT DO NOTHING
RETURNING site, study_instance_uid, study_version, model, model_version, shadow
"#;

/// The geometry of each series of a site's study, from the index (PS3.3 C.7.6.2 Image Plane
/// module: the slice normal is the cross product of the row and column direction cosines; a
/// slice's position along it is the dot product with Image Position (Patient)). Slices are the
/// original CT images' ([`candidate::instance_kind`]); a series is a candidate for analysis when
/// they are axial and at `min_slices` (at least 2) distinct positions or more.
///
/// # Errors
/// Database errors.
pub async fn series_geometry(
    pool: &PgPool,
    site: &str,
    study_instance_uid: &str,
    min_slices: usize,
) -> Result<Vec<SeriesGeometry>, QueueError> {
    let rows = sqlx::query(
        "SELECT i.series_instance_uid, s.modality, i.image_type, i.sop_class_uid, i.image_position_patient, \
                i.image_orientation_patient \
         FROM instances i JOIN series s ON s.site = i.site AND s.series_instance_uid = i.series_instance_uid \
         WHERE i.site = $1 AND i.study_instance_uid = $2 \
         ORDER BY i.series_instance_uid, i.instance_number NULLS LAST, i.sop_instance_uid",
    )
    .bind(site)
    .bind(study_instance_uid)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<SeriesGeometry> = Vec::new();
    let mut slices: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for r in &rows {
        let series: String = r.try_get(0)?;
        let modality: Option<String> = r.try_get(1)?;
        let image_type: Option<String> = r.try_get(2)?;
        let sop_class_uid: String = r.try_get(3)?;
        if out.last().is_none_or(|g| g.series_instance_uid != series) {
            if let Some(last) = out.last_mut() {
                finish_geometry(last, &slices, min_slices);
            }
            slices.clear();
            out.push(SeriesGeometry::unmeasured(series, modality.clone(), image_type.clone(), sop_class_uid.clone()));
        }
        let Some(g) = out.last_mut() else { continue };
        g.instances += 1;
        let kind = candidate::instance_kind(&sop_class_uid, modality.as_deref(), image_type.as_deref());
        if kind != InstanceKind::OriginalImage {
            continue;
        }
        g.original_images += 1;
        let position: Option<Vec<f64>> = r.try_get(4)?;
        let orientation: Option<Vec<f64>> = r.try_get(5)?;
        if let (Some(p), Some(o)) = (position, orientation) {
            if p.len() == 3 && o.len() == 6 && p.iter().chain(&o).all(|v| v.is_finite()) {
                slices.push((p, o));
            }
        }
    }
    if let Some(last) = out.last_mut() {
        finish_geometry(last, &slices, min_slices);
    }
    Ok(out)
}

fn finish_geometry(g: &mut SeriesGeometry, slices: &[(Vec<f64>, Vec<f64>)], min_slices: usize) {
    let Some((_, first_orientation)) = slices.first() else { return };
    g.single_orientation =
        slices.iter().all(|(_, o)| o.iter().zip(first_orientation).all(|(a, b)| (a - b).abs() < 1e-4));
    let unit = <[f64; 6]>::try_from(first_orientation.as_slice()).ok().and_then(candidate::unit_cosines);
    g.axial = unit.is_some_and(|(row, col)| candidate::is_axial(row, col));
    let normal = slice_normal(first_orientation);
    let mut positions: Vec<f64> = slices.iter().map(|(p, _)| dot(p, &normal)).collect();
    positions.sort_by(f64::total_cmp);
    // one slice per position, as the volume builder keeps one of duplicates
    positions.dedup_by(|later, kept| *later - *kept < DUPLICATE_MM);
    g.slices = positions.len();
    let (Some(&lo), Some(&hi)) = (positions.first(), positions.last()) else { return };
    g.position_range_mm = Some((lo, hi));
    let gaps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
    let spacing = contiguity(&gaps);
    g.median_spacing_mm = spacing.median;
    g.max_gap_mm = spacing.max_gap;
    g.contiguous = g.single_orientation && spacing.contiguous;
    g.candidate = g.axial && g.slices >= min_slices.max(2);
}

/// Gap statistics of sorted slice positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spacing {
    /// Median gap (mm).
    pub median: Option<f64>,
    /// Largest gap (mm).
    pub max_gap: Option<f64>,
    /// >= 1 gap, median > 0 and no gap above 1.5 x median.
    pub contiguous: bool,
}

/// The contiguity rule on the gaps between neighbouring sorted slice positions (mm): the volume
/// builder's gap rule ([`candidate::GAP_FACTOR`] x the [`candidate::median`]).
pub fn contiguity(gaps: &[f64]) -> Spacing {
    let Some(median) = candidate::median(gaps) else {
        return Spacing { median: None, max_gap: None, contiguous: false };
    };
    let max_gap = gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Spacing {
        median: Some(median),
        max_gap: Some(max_gap),
        contiguous: median > 1e-6 && max_gap <= GAP_FACTOR * median,
    }
}

/// Normal of an Image Orientation (Patient): row cosines x column cosines.
pub fn slice_normal(o: &[f64]) -> [f64; 3] {
    if o.len() < 6 {
        return [0.0, 0.0, 1.0];
    }
    [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]]
}

fn dot(p: &[f64], n: &[f64; 3]) -> f64 {
    p.iter().zip(n).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity_rule() {
        assert!(contiguity(&[8.0, 8.0, 8.0, 8.0]).contiguous);
        assert!(contiguity(&[1.0, 1.0, 1.4, 1.0]).contiguous);
        assert!(!contiguity(&[8.0, 16.0, 8.0, 8.0]).contiguous, "a missing slice is a gap");
        assert!(!contiguity(&[]).contiguous, "one slice cannot be judged");
        assert!(!contiguity(&[0.0, 0.0]).contiguous, "duplicates only");
        assert_eq!(contiguity(&[8.0, 16.0, 8.0]).max_gap, Some(16.0));
    }

    fn geometry(orientation: [f64; 6], z: &[f64], min_slices: usize) -> SeriesGeometry {
        let mut g = SeriesGeometry {
            instances: z.len(),
            original_images: z.len(),
            ..SeriesGeometry::unmeasured("1.2.3".into(), Some("CT".into()), None, "1.2.840.10008.5.1.4.1.1.2".into())
        };
        let slices: Vec<(Vec<f64>, Vec<f64>)> = z.iter().map(|&z| (vec![0.0, 0.0, z], orientation.to_vec())).collect();
        finish_geometry(&mut g, &slices, min_slices);
        g
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    const CORONAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0];

    #[test]
    fn candidates_are_axial_series_with_enough_slices() {
        let full = geometry(AXIAL, &[0.0, 8.0, 16.0, 24.0], 3);
        assert!(full.axial && full.candidate && full.contiguous);
        let few = geometry(AXIAL, &[0.0, 8.0], 3);
        assert!(!few.candidate, "fewer slices than the models need");
        let single = geometry(AXIAL, &[0.0], 1);
        assert!(!single.candidate && !single.contiguous, "one image is never a candidate");
        let coronal = geometry(CORONAL, &[0.0, 1.0, 2.0, 3.0], 3);
        assert!(!coronal.axial && !coronal.candidate);
        // bolus tracking: many images at one position are one slice
        let repeated = geometry(AXIAL, &[40.0; 12], 3);
        assert_eq!(repeated.slices, 1);
        assert!(!repeated.candidate);
        let duplicates = geometry(AXIAL, &[0.0, 0.0, 8.0, 16.0, 16.0, 24.0], 3);
        assert_eq!(duplicates.slices, 4);
        assert!(duplicates.contiguous, "duplicates are dropped, as the volume builder does");
    }

    #[test]
    fn early_readiness_judges_only_candidates() {
        let axial = geometry(AXIAL, &[0.0, 8.0, 16.0, 24.0], 3);
        let gap = geometry(AXIAL, &[0.0, 8.0, 24.0, 32.0], 3);
        let scout = geometry(CORONAL, &[0.0], 3);
        let mut dose = geometry(AXIAL, &[], 3);
        dose.sop_class_uid = "1.2.840.10008.5.1.4.1.1.88.67".into();
        assert!(complete_for_analysis(&[scout.clone(), axial.clone(), dose.clone()]));
        assert!(!complete_for_analysis(&[scout.clone(), dose]), "no candidate: wait for stable_after");
        assert!(!complete_for_analysis(&[scout, axial, gap.clone()]), "every candidate must be complete");
        assert!(!complete_for_analysis(&[gap]));
    }

    #[test]
    fn axial_normal_is_z() {
        assert_eq!(slice_normal(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]);
        // coronal: rows along x, columns along -z -> normal along +y... (x cross -z = +y)
        assert_eq!(slice_normal(&[1.0, 0.0, 0.0, 0.0, 0.0, -1.0]), [0.0, 1.0, 0.0]);
    }
}
