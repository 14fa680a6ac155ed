//! Radiologist feedback on a first read: agree, disagree (with the SFR extent class the
//! radiologist would give) or not assessable, and a comment; appended with who and when, never
//! updated (the latest statement counts). Exported as CSV or JSON, the reference against which
//! later model versions are judged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row as _};

/// The verdicts.
pub const VERDICTS: [&str; 3] = ["agree", "disagree", "not_assessable"];

/// A statement as posted (`POST /triage/api/feedback`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFeedback {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version.
    pub study_version: i32,
    /// One of [`VERDICTS`].
    pub verdict: String,
    /// With `disagree`: the class the radiologist would give (`none_or_minimal` ... `critical`).
    #[serde(default)]
    pub extent_class: Option<String>,
    /// Free text (at most 2000 characters).
    #[serde(default)]
    pub comment: String,
    /// Who (at most 128 characters).
    pub author: String,
    /// The study's site, for a caller who sees the same study in several sites; absent: the
    /// caller's one.
    #[serde(default)]
    pub site: Option<String>,
}

/// A stored statement.
#[derive(Debug, Clone, Serialize)]
pub struct Feedback {
    /// Row id.
    pub id: i64,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Study version.
    pub study_version: i32,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// The model's extent class (what the radiologist judged).
    pub model_extent_class: Option<String>,
    /// The model's CT severity score.
    pub model_severity_score: Option<i32>,
    /// The verdict.
    pub verdict: String,
    /// The radiologist's class (with `disagree`).
    pub extent_class: Option<String>,
    /// Comment.
    pub comment: String,
    /// Who.
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The study's site.
    pub site: String,
}

/// Why a statement was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The statement itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// No read of that study version exists (404).
    #[error("no first read of that study version")]
    NotFound,
    /// The database failed (500).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Text without control characters (line breaks and tabs allowed where `multiline`) and without
/// the bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) that let a name show
/// as something else.
pub fn plain_text(text: &str, multiline: bool) -> bool {
    text.chars().all(|c| {
        let allowed_control = multiline && matches!(c, '\n' | '\r' | '\t');
        (!c.is_control() || allowed_control) && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    })
}

/// Records `f`; returns the stored row.
///
/// # Errors
/// [`FeedbackError`].
pub async fn record(pool: &PgPool, f: &NewFeedback, scope: &firstread_sites::Scope) -> Result<Feedback, FeedbackError> {
    let invalid = |m: &str| Err(FeedbackError::Invalid(m.to_owned()));
    if !VERDICTS.contains(&f.verdict.as_str()) {
        return invalid("verdict must be agree, disagree or not_assessable");
    }
    let class = f.extent_class.as_deref().map(str::trim).filter(|c| !c.is_empty());
    match (f.verdict.as_str(), class) {
        ("disagree", None) => return invalid("disagree needs the extent class you would give"),
        ("disagree", Some(c)) if firstread_findings::ExtentClass::from_name(c).is_none() => {
            return invalid("extent_class must be none_or_minimal, moderate, extensive, severe or critical")
        }
        (v, Some(_)) if v != "disagree" => return invalid("an extent class goes with disagree only"),
        _ => {}
    }
    let author = f.author.trim();
    if author.is_empty() || author.chars().count() > 128 {
        return invalid("author: 1 to 128 characters");
    }
    let comment = f.comment.trim();
    if comment.chars().count() > 2000 {
        return invalid("comment: at most 2000 characters");
    }
    if !plain_text(author, false) || !plain_text(comment, true) || !plain_text(&f.study_instance_uid, false) {
        return invalid("control characters and bidirectional overrides are not accepted");
    }
    if f.site.is_none() {
        // a caller who sees the study in several sites says which record the statement is about
        let sites: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT site) FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1 \
             AND study_version = $2 AND state = 'done' AND ($3::text[] IS NULL OR site = ANY($3))",
        )
        .bind(&f.study_instance_uid)
        .bind(f.study_version)
        .bind(scope.filter())
        .fetch_one(pool)
        .await?;
        if sites > 1 {
            return invalid("that study is in several of your sites: name one with site");
        }
    }
    // the statement refers to the done read of that study version (its model and version)
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO feedback (site, study_instance_uid, study_version, model, model_version, verdict, extent_class, \
             comment, author) \
         SELECT site, study_instance_uid, study_version, model, coalesce(result->'model'->>'version', ''), $3, $4, $5, $6 \
         FROM jobs WHERE kind = 'analysis' AND study_instance_uid = $1 AND study_version = $2 AND state = 'done' \
           AND NOT shadow AND ($7::text[] IS NULL OR site = ANY($7)) AND ($8::text IS NULL OR site = $8) \
         ORDER BY extent_class IS NULL, id LIMIT 1 RETURNING id",
    )
    .bind(&f.study_instance_uid)
    .bind(f.study_version)
    .bind(&f.verdict)
    .bind(class)
    .bind(comment)
    .bind(author)
    .bind(scope.filter())
    .bind(&f.site)
    .fetch_optional(pool)
    .await?
    .ok_or(FeedbackError::NotFound)?;
    let mut all = list(pool, Some(id), &firstread_sites::Scope::Every).await?;
    all.pop().ok_or(FeedbackError::NotFound)
}

/// Every statement of `scope`'s sites (or the one with `id`), oldest first, with the model's
/// class and score.
///
/// # Errors
/// Database errors.
pub async fn list(
    pool: &PgPool,
    id: Option<i64>,
    scope: &firstread_sites::Scope,
) -> Result<Vec<Feedback>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f.id, f.study_instance_uid, f.study_version, f.model, f.model_version, \
                j.extent_class, j.severity_score, \
                f.verdict, f.extent_class, f.comment, f.author, f.created_at, f.site \
         FROM feedback f LEFT JOIN jobs j ON j.kind = 'analysis' AND j.site = f.site \
              AND j.study_instance_uid = f.study_instance_uid \
              AND j.study_version = f.study_version AND j.model = f.model AND NOT j.shadow \
         WHERE ($1::bigint IS NULL OR f.id = $1) AND ($2::text[] IS NULL OR f.site = ANY($2)) ORDER BY f.id",
    )
    .bind(id)
    .bind(scope.filter())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Feedback {
                id: r.try_get(0)?,
                study_instance_uid: r.try_get(1)?,
                study_version: r.try_get(2)?,
                model: r.try_get(3)?,
                model_version: r.try_get(4)?,
                model_extent_class: r.try_get(5)?,
                model_severity_score: r.try_get(6)?,
                verdict: r.try_get(7)?,
                extent_class: r.try_get(8)?,
                comment: r.try_get(9)?,
                author: r.try_get(10)?,
                created_at: r.try_get(11)?,
                site: r.try_get(12)?,
            })
        })
        .collect()
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A JSON array.
    Json,
}

/// The CSV columns (the fields of [`Feedback`]).
pub const CSV_HEADER: [&str; 13] = [
    "id",
    "study_instance_uid",
    "study_version",
    "model",
    "model_version",
    "model_extent_class",
    "model_severity_score",
    "verdict",
    "extent_class",
    "comment",
    "author",
    "created_at",
    "site",
];

/// A cell a spreadsheet would not run as a formula: text starting with `=`, `+`, `-`, `@`, tab
/// or carriage return gets a leading apostrophe (OWASP "CSV injection").
fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// `rows` as CSV (RFC 4180, header row, CRLF; the `csv` crate quotes what needs quoting; free
/// text made inert for spreadsheets).
pub fn to_csv(rows: &[Feedback]) -> String {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    let _ = w.write_record(CSV_HEADER);
    for r in rows {
        let record = [
            r.id.to_string(),
            inert(&r.study_instance_uid),
            r.study_version.to_string(),
            inert(&r.model),
            inert(&r.model_version),
            r.model_extent_class.clone().unwrap_or_default(),
            r.model_severity_score.map(|s| s.to_string()).unwrap_or_default(),
            r.verdict.clone(),
            r.extent_class.clone().unwrap_or_default(),
            inert(&r.comment),
            inert(&r.author),
            r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            r.site.clone(),
        ];
        // a Vec<u8> sink cannot fail
        let _ = w.write_record(&record);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// Every statement in `format`.
///
/// # Errors
/// Database errors.
pub async fn export(pool: &PgPool, format: Format, scope: &firstread_sites::Scope) -> Result<String, sqlx::Error> {
    let rows = list(pool, None, scope).await?;
    Ok(match format {
        Format::Csv => to_csv(&rows),
        Format::Json => serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let row = Feedback {
            id: 1,
            study_instance_uid: "1.2.3".into(),
            study_version: 1,
            model: "m".into(),
            model_version: "0.2.0".into(),
            model_extent_class: Some("moderate".into()),
            model_severity_score: Some(9),
            verdict: "disagree".into(),
            extent_class: Some("severe".into()),
            comment: "dense, \"posterior\"\nlayer".into(),
            author: "Dr A".into(),
            created_at: DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default(),
            site: "default".into(),
        };
        let formula = Feedback { comment: "=cmd|' /C calc'!A0".into(), author: "+SUM(1+1)".into(), ..row.clone() };
        let csv = to_csv(&[row, formula]);
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some(CSV_HEADER.join(",").as_str()));
        assert_eq!(to_csv(&[]), format!("{}\r\n", CSV_HEADER.join(",")), "the header even without rows");
        assert_eq!(
            lines.next(),
            Some("1,1.2.3,1,m,0.2.0,moderate,9,disagree,severe,\"dense, \"\"posterior\"\"\nlayer\",Dr A,1970-01-01T00:00:00.000000Z,default")
        );
        let next = lines.next().unwrap_or_default();
        assert!(next.ends_with(",'=cmd|' /C calc'!A0,'+SUM(1+1),1970-01-01T00:00:00.000000Z,default"), "{next}");
    }

    #[test]
    fn plain_text_refuses_controls_and_overrides() {
        assert!(plain_text("Dr Émile Zoë 山田", false));
        assert!(plain_text("line 1\nline 2", true));
        assert!(!plain_text("line 1\nline 2", false));
        assert!(!plain_text("a\0b", true));
        assert!(!plain_text("\u{202E}evil", false));
        assert!(!plain_text("x\u{1b}[31m", true));
    }
}
