//! The triage worklist: one row per study version (and model), ranked by criticality: SFR extent
//! class (critical first; the highest class the method's error allows, so "none or minimal,
//! possibly moderate" ranks with the moderate ones), then whether another active package states
//! an abnormal class (a package described by its vocabulary, e.g. emphysema: its class or one
//! within the method's error, "possibly emphysema", marked `abnormal` in its manifest), then CT
//! severity score, then waiting time (the longest wait first); versions without a result yet come
//! after the read ones, longest wait first. A latest version whose read failed or was refused
//! (no first read at all: the study is as sick as any for all the node knows) ranks after the
//! moderate ones and before "none or minimal", so that it is read by a person before the studies
//! a first read found normal. Other versions without an extent class (no COVID-19 read) rank after
//! those with one, abnormal classes first among them.
//!
//! The read a row shows is an active model version's, never a shadow's (`jobs.shadow`); with
//! several active models, the one whose result has an extent class, else the first queued. Every
//! active package's read of the study version is in [`Row::reads`] (status and classes), what
//! the page shows as "Other findings".
//!
//! Status of a study version, from the index and the queue:
//! `receiving` (images still arriving: stability time not reached), `waiting` (stable, not yet
//! queued: an association still open), `queued`, `analysing`, `done`, `refused` (the model's
//! reason), `failed` (dead after its attempts, with the last error), `not_taken` (assembled, but
//! no active model takes the study: its manifest's `[takes]`, e.g. another body part or site),
//! `superseded` (a later version of the study exists).

use chrono::{DateTime, Utc};
use firstread_findings::ExtentClass;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row as _};

/// Filters and paging (query string of `GET /triage/api/studies`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Site (hospital), exact.
    pub site: Option<String>,
    /// One status (see the module documentation).
    pub status: Option<String>,
    /// SFR extent class JSON name (`none_or_minimal` ... `critical`), exact.
    pub class: Option<String>,
    /// Last image on or after this date (YYYY-MM-DD, UTC).
    pub from: Option<chrono::NaiveDate>,
    /// Last image on or before this date (YYYY-MM-DD, UTC).
    pub to: Option<chrono::NaiveDate>,
    /// Rows per page (1-500, default 100).
    pub limit: Option<i64>,
    /// Rows skipped.
    pub offset: Option<i64>,
}

/// The latest feedback on a study version.
#[derive(Debug, Clone, Serialize)]
pub struct LatestFeedback {
    /// `agree`, `disagree`, `not_assessable`.
    pub verdict: String,
    /// The class the radiologist would give (with `disagree`).
    pub extent_class: Option<String>,
    /// Free text.
    pub comment: String,
    /// Who.
    pub author: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version.
    pub study_version: i32,
    /// Model that read it (empty before a job exists).
    pub model: String,
    /// Model version, once read.
    pub model_version: Option<String>,
    /// See the module documentation.
    pub status: String,
    /// Why refused or failed.
    pub reason: Option<String>,
    /// The site (hospital) the study belongs to.
    pub site: String,
    /// The calling AE title that sent it.
    pub sender: String,
    /// Patient's Name (DICOM PN).
    pub patient_name: Option<String>,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Accession Number.
    pub accession_number: Option<String>,
    /// Study Description.
    pub study_description: Option<String>,
    /// When the last analysable image arrived.
    pub last_image_at: Option<DateTime<Utc>>,
    /// When the result was ready.
    pub result_at: Option<DateTime<Utc>>,
    /// Last image -> result, seconds (the latest version only).
    pub time_to_result_s: Option<f64>,
    /// SFR extent class JSON name.
    pub extent_class: Option<String>,
    /// Its display label (from the findings' vocabulary).
    pub extent_label: Option<String>,
    /// CT severity score 0-30.
    pub severity_score: Option<i32>,
    /// Lung involvement, both lungs (%).
    pub involvement_pct: Option<f64>,
    /// The CT series the model read (for the viewer link).
    pub series_instance_uid: Option<String>,
    /// Whether a key image exists (`/triage/studies/{study}/{version}/key-image.png`).
    pub key_image: bool,
    /// The latest feedback.
    pub feedback: Option<LatestFeedback>,
    /// Notification deliveries of this version: `[{destination, state, attempts, error}]`.
    pub notifications: serde_json::Value,
    /// What the method's error allows (`firstread_findings::Uncertainty` as recorded:
    /// `{involvement_pct, extent_class, severity_score}`, each `[lowest, highest]`); the rank
    /// takes the highest class.
    pub uncertainty: Option<serde_json::Value>,
    /// Whether an active package states an abnormal class for this version (its class or one
    /// within the method's error); ranks it after the extent class.
    pub abnormal: bool,
    /// Every active (non-shadow) package's read of this version, in the order they were queued.
    pub reads: Vec<PackageRead>,
    /// What the reader must know about the row's result (`findings.cautions`: a prone scan, one
    /// lung much smaller than the other, ...), in the words of the result.
    pub cautions: Vec<String>,
}

/// One active package's read of a study version.
#[derive(Debug, Clone, Serialize)]
pub struct PackageRead {
    /// The package (manifest `name`).
    pub model: String,
    /// The version the job runs (`jobs.model_version`; absent for jobs queued before versions
    /// were recorded).
    pub model_version: Option<String>,
    /// `queued`, `analysing`, `done`, `refused`, `failed`.
    pub status: String,
    /// Why refused or failed.
    pub reason: Option<String>,
    /// Whether the read has an extent class (the COVID-19 read the row's result shows).
    pub extent_class: bool,
    /// Its classes (manifest `[[classifications]]`), in manifest order.
    pub classes: Vec<ReadClass>,
}

/// One classification of a read, as the page says it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadClass {
    /// The classification's key (`emphysema`).
    pub key: String,
    /// Its label from the manifest ("Emphysema by quantitative CT").
    pub label: String,
    /// The class (band `value`); `None`: not measured.
    pub class: Option<String>,
    /// Its label from the manifest ("no emphysema by LAA-950 (< 5 %)").
    pub class_label: Option<String>,
    /// Whether the class is a band marked abnormal.
    pub class_abnormal: bool,
    /// The classes within the method's validated error, said "possibly ...".
    pub possible: Vec<PossibleClass>,
    /// The classified value with its unit ("1.2 %"), when measured.
    pub value: Option<String>,
}

/// A class within the method's validated error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PossibleClass {
    /// Band `value`.
    pub class: String,
    /// Its label from the manifest.
    pub label: String,
    /// Marked abnormal.
    pub abnormal: bool,
}

/// A page of rows.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Rows matching the filter (all pages).
    pub total: i64,
    /// This page.
    pub rows: Vec<Row>,
    /// The server's clock, for relative times.
    pub now: DateTime<Utc>,
}

/// The statuses, in the order of a study's life.
pub const STATUSES: [&str; 9] =
    ["receiving", "waiting", "queued", "analysing", "done", "refused", "failed", "not_taken", "superseded"];

const QUERY: &str = r#"
WITH versions AS (
    SELECT s.site, s.study_instance_uid, v.version, s.version AS latest, s.last_image_at, j.id AS job_id,
        CASE
            WHEN v.version < s.version THEN 'superseded'
            WHEN j.state IS NULL AND s.queued_version >= v.version THEN 'not_taken'
            WHEN j.state IS NULL AND s.stable_at > now() THEN 'receiving'
            WHEN j.state IS NULL THEN 'waiting'
            WHEN j.state = 'queued' THEN 'queued'
            WHEN j.state = 'running' THEN 'analysing'
            WHEN j.state = 'dead' THEN 'failed'
            WHEN j.result_status = 'refused' THEN 'refused'
            ELSE 'done'
        END AS status,
        j.extent_class, coalesce(j.abnormal, false) AS abnormal,
        CASE
            WHEN j.extent_class_highest = 'critical' THEN 6 WHEN j.extent_class_highest = 'severe' THEN 5
            WHEN j.extent_class_highest = 'extensive' THEN 4 WHEN j.extent_class_highest = 'moderate' THEN 3
            -- no first read of the latest version (it failed, or the model refused the series):
            -- as sick as any for all the node knows, after the reads that found disease
            WHEN j.extent_class_highest IS NULL AND v.version = s.version AND j.unread THEN 2
            WHEN j.extent_class_highest = 'none_or_minimal' THEN 1 END AS class_rank,
        j.severity_score
    FROM studies s
    CROSS JOIN LATERAL generate_series(1, greatest(s.version, 1)) AS v(version)
    LEFT JOIN LATERAL (
        -- the row's read, whether any active read states an abnormal class, and whether any
        -- failed or was refused (the windows run over every active job of the version before LIMIT)
        SELECT j.id, j.state, j.result_status, j.extent_class, j.extent_class_highest, j.severity_score,
               bool_or(j.abnormal_class) OVER () AS abnormal,
               bool_or(j.state = 'dead' OR j.result_status = 'refused') OVER () AS unread
        FROM jobs j
        WHERE j.kind = 'analysis' AND j.site = s.site AND j.study_instance_uid = s.study_instance_uid
          AND j.study_version = v.version AND NOT j.shadow
        ORDER BY j.extent_class IS NULL, j.id LIMIT 1
    ) j ON true
    WHERE s.analysable
      AND ($1::text IS NULL OR s.site = $1)
      AND ($8::text[] IS NULL OR s.site = ANY($8))
      AND ($4::date IS NULL OR s.last_image_at >= $4::date)
      AND ($5::date IS NULL OR s.last_image_at < $5::date + 1)
), page AS (
    SELECT *, count(*) OVER () AS total FROM versions
    WHERE ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR extent_class = $3)
    ORDER BY class_rank DESC NULLS LAST, abnormal DESC, severity_score DESC NULLS LAST, last_image_at ASC NULLS LAST,
             study_instance_uid, site, version DESC
    LIMIT $6 OFFSET $7
)
SELECT p.study_instance_uid, p.version, coalesce(j.model, ''), j.result->'model'->>'version', p.status,
       CASE p.status WHEN 'refused' THEN j.result->>'reason' WHEN 'failed' THEN j.last_error END,
       s.site, s.patient_name, s.patient_id, s.accession_number, s.study_description,
       s.last_image_at, j.finished_at,
       CASE WHEN p.version = p.latest AND p.status IN ('done', 'refused')
            THEN extract(epoch FROM j.finished_at - s.last_image_at)::float8 END,
       p.extent_class, p.severity_score,
       (j.result->'findings'->'total'->>'involvement_pct')::float8,
       j.result->'volume'->>'series_instance_uid',
       coalesce(jsonb_path_exists(j.result->'result_files', '$[*] ? (@ like_regex "-sc\\.dcm$")'), false),
       f.verdict, f.extent_class, f.comment, f.author, f.created_at,
       p.total,
       (SELECT coalesce(json_agg(json_build_object('destination', n.destination, 'state', n.state,
                'attempts', n.attempts, 'error', n.last_error) ORDER BY n.id), '[]'::json)
        FROM jobs n WHERE n.kind = 'notify' AND n.site = p.site AND n.study_instance_uid = p.study_instance_uid
          AND n.study_version = p.version),
       j.result->'findings'->'uncertainty',
       s.calling_ae_title,
       p.abnormal,
       -- every active read, from columns: never the result document (a COVID-19 read's is large)
       (SELECT coalesce(json_agg(json_build_object('model', r.model, 'model_version', nullif(r.model_version, ''),
                'state', r.state, 'result_status', r.result_status,
                'reason', CASE WHEN r.state = 'dead' THEN r.last_error
                               WHEN r.result_status = 'refused' THEN r.result->>'reason' END,
                'extent_class', r.extent_class IS NOT NULL,
                'classifications', r.vocabulary->'classifications', 'measurements', r.vocabulary->'measurements')
                ORDER BY r.id), '[]'::json)
        FROM jobs r WHERE r.kind = 'analysis' AND r.site = p.site AND r.study_instance_uid = p.study_instance_uid
          AND r.study_version = p.version AND NOT r.shadow),
       j.result->'findings'->'cautions'
FROM page p
JOIN studies s ON s.site = p.site AND s.study_instance_uid = p.study_instance_uid
LEFT JOIN jobs j ON j.id = p.job_id
LEFT JOIN LATERAL (
    SELECT verdict, extent_class, comment, author, created_at FROM feedback f
    WHERE f.site = p.site AND f.study_instance_uid = p.study_instance_uid AND f.study_version = p.version
    ORDER BY f.id DESC LIMIT 1
) f ON true
ORDER BY p.class_rank DESC NULLS LAST, p.abnormal DESC, p.severity_score DESC NULLS LAST, p.last_image_at ASC NULLS LAST,
         p.study_instance_uid, p.site, p.version DESC
"#;

/// A filter's text, trimmed; `None` when absent or empty.
fn given(o: &Option<String>) -> Option<String> {
    o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

impl Filter {
    /// Why this filter cannot be answered (a 400), if it cannot.
    pub fn problem(&self) -> Option<String> {
        if let Some(s) = given(&self.status).filter(|s| !STATUSES.contains(&s.as_str())) {
            return Some(format!("unknown status {s:?}; one of {}", STATUSES.join(", ")));
        }
        if let Some(c) = given(&self.class).filter(|c| ExtentClass::from_name(c).is_none()) {
            return Some(format!("unknown class {c:?}; one of {}", ExtentClass::ALL.map(ExtentClass::name).join(", ")));
        }
        if given(&self.site).is_some_and(|s| s.chars().any(char::is_control)) {
            return Some("site: control characters are not accepted".into());
        }
        for (name, date) in [("from", self.from), ("to", self.to)] {
            if date.is_some_and(|d| !(1..=9999).contains(&chrono::Datelike::year(&d))) {
                return Some(format!("{name}: a date between the years 1 and 9999"));
            }
        }
        None
    }
}

/// One page of the worklist, of the studies of `scope`'s sites.
///
/// # Errors
/// Database errors.
pub async fn page(pool: &PgPool, filter: &Filter, scope: &firstread_sites::Scope) -> Result<Page, sqlx::Error> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 500);
    let offset = filter.offset.unwrap_or(0).max(0);
    // generate_series over the study versions is estimated at 1000 rows a study, which makes
    // PostgreSQL JIT-compile the statement: about 0.9 s of 1.0 s at 10,000 studies (64 ms without)
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let fetch = |limit: i64, offset: i64| {
        sqlx::query(QUERY)
            .bind(given(&filter.site))
            .bind(given(&filter.status))
            .bind(given(&filter.class))
            .bind(filter.from)
            .bind(filter.to)
            .bind(limit)
            .bind(offset)
            .bind(scope.filter())
    };
    let rows = fetch(limit, offset).fetch_all(&mut *tx).await?;
    if rows.is_empty() && offset > 0 {
        // past the end: the window count comes with the first row
        let first = fetch(1, 0).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        let total = first.map(|r| r.try_get(24)).transpose()?.unwrap_or(0);
        return Ok(Page { total, rows: Vec::new(), now: Utc::now() });
    }
    tx.commit().await?;
    let mut total = 0;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        total = r.try_get(24)?;
        let extent_class: Option<String> = r.try_get(14)?;
        let extent_label = extent_class.as_deref().and_then(extent_label);
        let verdict: Option<String> = r.try_get(19)?;
        let feedback = match verdict {
            Some(verdict) => Some(LatestFeedback {
                verdict,
                extent_class: r.try_get(20)?,
                comment: r.try_get(21)?,
                author: r.try_get(22)?,
                at: r.try_get(23)?,
            }),
            None => None,
        };
        out.push(Row {
            study_instance_uid: r.try_get(0)?,
            study_version: r.try_get(1)?,
            model: r.try_get(2)?,
            model_version: r.try_get(3)?,
            status: r.try_get(4)?,
            reason: r.try_get(5)?,
            site: r.try_get(6)?,
            patient_name: r.try_get(7)?,
            patient_id: r.try_get(8)?,
            accession_number: r.try_get(9)?,
            study_description: r.try_get(10)?,
            last_image_at: r.try_get(11)?,
            result_at: r.try_get(12)?,
            time_to_result_s: r.try_get(13)?,
            extent_class,
            extent_label,
            severity_score: r.try_get(15)?,
            involvement_pct: r.try_get(16)?,
            series_instance_uid: r.try_get(17)?,
            key_image: r.try_get(18)?,
            feedback,
            notifications: r.try_get(25)?,
            uncertainty: r.try_get(26)?,
            sender: r.try_get(27)?,
            abnormal: r.try_get(28)?,
            reads: reads(r.try_get(29)?),
            cautions: r
                .try_get::<Option<serde_json::Value>, _>(30)?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
        });
    }
    Ok(Page { total, rows: out, now: Utc::now() })
}

/// One job's read as the query gives it (`classifications` and the whole-region `measurements`
/// as the analysis recorded them, from `jobs.vocabulary`).
#[derive(Debug, Deserialize)]
struct RecordedRead {
    model: String,
    model_version: Option<String>,
    state: String,
    result_status: Option<String>,
    reason: Option<String>,
    extent_class: bool,
    #[serde(default)]
    classifications: Option<Vec<RecordedClass>>,
    #[serde(default)]
    measurements: Option<Vec<RecordedMeasurement>>,
}

#[derive(Debug, Deserialize)]
struct RecordedClass {
    key: String,
    label: String,
    measurement: String,
    region: String,
    value: Option<f64>,
    class: Option<RecordedBand>,
    #[serde(default)]
    possible: Vec<RecordedBand>,
}

#[derive(Debug, Deserialize)]
struct RecordedBand {
    value: String,
    label: String,
    #[serde(default)]
    abnormal: bool,
}

#[derive(Debug, Deserialize)]
struct RecordedMeasurement {
    key: String,
    region: String,
    kind: Option<firstread_findings::measures::Kind>,
    unit_symbol: Option<String>,
}

/// The page's reads from the query's JSON; a job whose record does not read (written by
/// another version, hand-edited) is shown with its status and no classes, never an error.
fn reads(json: serde_json::Value) -> Vec<PackageRead> {
    let serde_json::Value::Array(items) = json else { return Vec::new() };
    items
        .into_iter()
        .filter_map(|item| {
            let model = item.get("model").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
            match serde_json::from_value::<RecordedRead>(item) {
                Ok(r) => Some(package_read(r)),
                Err(e) => {
                    tracing::debug!(%model, error = %e, "a read's record does not parse");
                    None
                }
            }
        })
        .collect()
}

fn package_read(r: RecordedRead) -> PackageRead {
    let status = match (r.state.as_str(), r.result_status.as_deref()) {
        ("queued", _) => "queued",
        ("running", _) => "analysing",
        ("dead", _) => "failed",
        (_, Some("refused")) => "refused",
        _ => "done",
    };
    let measurements = r.measurements.unwrap_or_default();
    let classes = r
        .classifications
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let unit = measurements.iter().find(|m| m.key == c.measurement && m.region == c.region);
            let value = c.value.map(|v| {
                let decimals = unit.and_then(|m| m.kind).map_or(1, firstread_findings::measures::Kind::decimals);
                let symbol = unit.and_then(|m| m.unit_symbol.as_deref()).unwrap_or("");
                format!("{v:.decimals$} {symbol}").trim_end().to_owned()
            });
            ReadClass {
                key: c.key,
                label: c.label,
                class_abnormal: c.class.as_ref().is_some_and(|b| b.abnormal),
                class: c.class.as_ref().map(|b| b.value.clone()),
                class_label: c.class.map(|b| b.label),
                possible: c
                    .possible
                    .into_iter()
                    .map(|b| PossibleClass { class: b.value, label: b.label, abnormal: b.abnormal })
                    .collect(),
                value,
            }
        })
        .collect();
    PackageRead {
        model: r.model,
        model_version: r.model_version,
        status: status.to_owned(),
        reason: if matches!(status, "refused" | "failed") { r.reason } else { None },
        extent_class: r.extent_class,
        classes,
    }
}

/// The display label of an extent class JSON name.
pub fn extent_label(name: &str) -> Option<String> {
    ExtentClass::from_name(name).map(|c| c.label().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vocabulary_read_gives_its_classes_with_their_values() {
        let json = serde_json::json!([
            { "model": "covid19-lung-ct", "model_version": "0.2.1", "state": "done", "result_status": "analysed",
              "reason": null, "extent_class": true, "classifications": [], "measurements": [] },
            { "model": "emphysema-ct", "model_version": "0.1.0", "state": "done", "result_status": "analysed",
              "reason": null, "extent_class": false,
              "classifications": [{ "key": "emphysema", "label": "Emphysema by quantitative CT",
                  "measurement": "laa_950", "region": "both_lungs", "value": 4.56, "source": null,
                  "class": { "below": 5.0, "value": "none", "label": "no emphysema", "abnormal": false,
                             "code": { "scheme": "99FIRSTREAD", "value": "X", "meaning": "x" } },
                  "possible": [{ "below": null, "value": "emphysema", "label": "emphysema", "abnormal": true,
                             "code": { "scheme": "SCT", "value": "87433001", "meaning": "Pulmonary emphysema" } }] }],
              "measurements": [{ "key": "laa_950", "region": "both_lungs", "kind": "percent_at_or_below",
                  "unit": "%", "unit_symbol": "%", "zone": null, "value": 4.56 }] },
            { "model": "other-ct", "model_version": null, "state": "dead", "result_status": null,
              "reason": "libtorch failed", "extent_class": false, "classifications": null, "measurements": [] },
            { "model": "broken", "state": 7 }
        ]);
        let r = reads(json);
        assert_eq!(r.len(), 3, "a record that does not parse is left out: {r:?}");
        assert_eq!((r[0].status.as_str(), r[0].extent_class, r[0].classes.len()), ("done", true, 0));
        let c = &r[1].classes[0];
        assert_eq!(
            (c.class.as_deref(), c.class_label.as_deref(), c.class_abnormal),
            (Some("none"), Some("no emphysema"), false)
        );
        assert_eq!(
            c.possible,
            [PossibleClass { class: "emphysema".into(), label: "emphysema".into(), abnormal: true }]
        );
        assert_eq!(c.value.as_deref(), Some("4.6 %"));
        assert_eq!((r[2].status.as_str(), r[2].reason.as_deref()), ("failed", Some("libtorch failed")));
    }

    #[test]
    fn labels_come_from_the_vocabulary() {
        assert_eq!(extent_label("severe").as_deref(), Some("severe (50-75 %)"));
        assert_eq!(extent_label("bogus"), None);
    }
}
