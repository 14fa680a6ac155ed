//! The study/series/instance index in PostgreSQL (migrations in `schemas/`).
//!
//! One statement per received instance inserts the instance (first received wins), upserts its
//! study and series, pushes the study's stability time and records which association delivered
//! it, so indexing costs one round trip and study assembly is updated atomically with the index.
//! Patient and study attributes are kept from the first instance.

use std::net::SocketAddr;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;
use uuid::Uuid;

use crate::attributes::InstanceAttributes;

/// The index database.
#[derive(Debug, Clone)]
pub struct Index {
    pool: PgPool,
}

/// Who delivered an instance.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The site (hospital) the instance belongs to (`firstread_sites`): that of the sending
    /// peer or user. Every key of the index starts with it.
    pub site: String,
    /// Calling AE title of the sender.
    pub calling_ae_title: String,
    /// Called AE title (ours, as the sender addressed us).
    pub called_ae_title: String,
    /// Sender's TCP address.
    pub peer: SocketAddr,
    /// Association identifier.
    pub association_id: Option<Uuid>,
}

/// How an arrival moves study assembly, decided by the application (PS3.4 does not say when a
/// study is complete; see `docs/ARCHITECTURE.md`, "Study assembly").
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The study is not stable before this long after this instance.
    pub stable_after: std::time::Duration,
    /// Whether an analysable instance arriving after its study version was queued opens a new
    /// study version (re-analysis) or is only stored.
    pub reanalyse_late: bool,
    /// Whether this instance is one a model analyses (e.g. CT Image Storage).
    pub analysable: bool,
    /// A result object this node derived from the study (SR, SEG, key images): indexed so
    /// DICOMweb serves it, but it neither moves the study's stability time nor opens a version.
    pub derived: bool,
}

/// What indexing an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// New instance indexed.
    Inserted,
    /// Already indexed in the same study and series: nothing changed.
    Duplicate,
    /// Already indexed under another study or series: the first one is kept.
    Conflict {
        /// Study Instance UID of the kept instance.
        study_instance_uid: String,
        /// Series Instance UID of the kept instance.
        series_instance_uid: String,
        /// Index path of the kept instance.
        path: String,
    },
}

/// Counts for one series, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesCount {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Instances indexed.
    pub instances: i64,
}

/// The migrations under `schemas/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../schemas");

impl Index {
    /// Connects a pool to `url`.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Index { pool })
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool) -> Self {
        Index { pool }
    }

    /// The connection pool (shared with the queue).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// Migration errors.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// Indexes a stored instance at `path` (relative to the storage root).
    ///
    /// # Errors
    /// Database errors; nothing is recorded then.
    pub async fn record(
        &self,
        a: &InstanceAttributes,
        provenance: &Provenance,
        path: &str,
        size_bytes: u64,
        arrival: &Arrival,
    ) -> Result<Recorded, sqlx::Error> {
        let peer = provenance.peer.to_string();
        let inserted: i64 = sqlx::query_scalar(RECORD_SQL)
            .bind(&a.study_instance_uid) // $1
            .bind(&a.patient_id)
            .bind(&a.patient_name)
            .bind(&a.patient_birth_date)
            .bind(&a.patient_sex) // $5
            .bind(&a.study_date)
            .bind(&a.study_time)
            .bind(&a.accession_number)
            .bind(&a.study_description)
            .bind(&a.study_id) // $10
            .bind(&a.referring_physician_name)
            .bind(&a.specific_character_set)
            .bind(&provenance.calling_ae_title)
            .bind(&provenance.called_ae_title)
            .bind(&peer) // $15
            .bind(&a.series_instance_uid)
            .bind(&a.modality)
            .bind(a.series_number)
            .bind(&a.series_description)
            .bind(&a.body_part_examined) // $20
            .bind(&a.frame_of_reference_uid)
            .bind(&a.sop_instance_uid)
            .bind(&a.sop_class_uid)
            .bind(&a.transfer_syntax_uid)
            .bind(a.instance_number) // $25
            .bind(&a.image_type)
            .bind(&a.image_position_patient)
            .bind(&a.image_orientation_patient)
            .bind(&a.pixel_spacing)
            .bind(a.slice_thickness) // $30
            .bind(a.rows)
            .bind(a.columns)
            .bind(a.number_of_frames)
            .bind(&a.convolution_kernel)
            .bind(path) // $35
            .bind(i64::try_from(size_bytes).unwrap_or(i64::MAX))
            .bind(provenance.association_id)
            .bind(arrival.stable_after.as_secs_f64()) // $38
            .bind(arrival.reanalyse_late)
            .bind(arrival.analysable) // $40
            .bind(&a.metadata)
            .bind(arrival.derived) // $42
            .bind(&provenance.site)
            .fetch_one(&self.pool)
            .await?;
        if inserted > 0 {
            return Ok(Recorded::Inserted);
        }
        let row = sqlx::query(
            "SELECT study_instance_uid, series_instance_uid, path FROM instances WHERE site = $1 AND sop_instance_uid = $2",
        )
        .bind(&provenance.site)
        .bind(&a.sop_instance_uid)
        .fetch_one(&self.pool)
        .await?;
        let study: String = row.try_get(0)?;
        let series: String = row.try_get(1)?;
        if study == a.study_instance_uid && series == a.series_instance_uid {
            Ok(Recorded::Duplicate)
        } else {
            Ok(Recorded::Conflict { study_instance_uid: study, series_instance_uid: series, path: row.try_get(2)? })
        }
    }

    /// Instances per series of a site's study, ordered by Series Instance UID.
    ///
    /// # Errors
    /// Database errors.
    pub async fn series_counts(&self, site: &str, study_instance_uid: &str) -> Result<Vec<SeriesCount>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT s.series_instance_uid, s.modality, count(i.sop_instance_uid) \
             FROM series s LEFT JOIN instances i USING (site, series_instance_uid) \
             WHERE s.site = $1 AND s.study_instance_uid = $2 GROUP BY 1, 2 ORDER BY 1",
        )
        .bind(site)
        .bind(study_instance_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SeriesCount {
                    series_instance_uid: r.try_get(0)?,
                    modality: r.try_get(1)?,
                    instances: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// The index path of a site's instance, if indexed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn instance_path(&self, site: &str, sop_instance_uid: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT path FROM instances WHERE site = $1 AND sop_instance_uid = $2")
            .bind(site)
            .bind(sop_instance_uid)
            .fetch_optional(&self.pool)
            .await
    }
}

const RECORD_SQL: &str = r#"
WITH ins AS (
    INSERT INTO instances (site, sop_instance_uid, series_instance_uid, study_instance_uid, sop_class_uid,
        transfer_syntax_uid, instance_number, image_type, image_position_patient, image_orientation_patient,
        pixel_spacing, slice_thickness, rows, columns, number_of_frames, convolution_kernel, path, size_bytes,
        calling_ae_title, called_ae_title, peer_address, association_id, metadata)
    VALUES ($43, $22, $16, $1, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $13, $14, $15, $37,
        $41::json)
    ON CONFLICT (site, sop_instance_uid) DO NOTHING
    RETURNING 1
), study AS (
    INSERT INTO studies (site, study_instance_uid, patient_id, patient_name, patient_birth_date, patient_sex,
        study_date, study_time, accession_number, study_description, study_id, referring_physician_name,
        specific_character_set, calling_ae_title, called_ae_title, peer_address, stable_at, analysable, last_image_at)
    VALUES ($43, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
        now() + make_interval(secs => $38), $40, CASE WHEN $40 THEN now() END)
    ON CONFLICT (site, study_instance_uid) DO UPDATE SET
        last_received_at = now(),
        last_image_at = CASE WHEN $40 THEN now() ELSE studies.last_image_at END,
        stable_at = CASE WHEN $42 THEN studies.stable_at
                         ELSE GREATEST(studies.stable_at, now() + make_interval(secs => $38)) END,
        analysable = studies.analysable OR $40,
        -- a late analysable arrival opens a new study version when re-analysis is on
        version = CASE WHEN $40 AND $39 AND studies.queued_version >= studies.version AND EXISTS (SELECT 1 FROM ins)
                       THEN studies.version + 1 ELSE studies.version END
), series_row AS (
    INSERT INTO series (site, series_instance_uid, study_instance_uid, modality, series_number, series_description,
        body_part_examined, frame_of_reference_uid)
    VALUES ($43, $16, $1, $17, $18, $19, $20, $21)
    ON CONFLICT (site, series_instance_uid) DO UPDATE SET last_received_at = now()
), delivery AS (
    INSERT INTO study_deliveries (site, study_instance_uid, association_id)
    SELECT $43, $1, $37 WHERE $37 IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM ins
"#;
