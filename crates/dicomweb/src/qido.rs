//! QIDO-RS: study, series and instance searches in the index (PS3.18 10.6), answered in the
//! DICOM JSON model.
//!
//! Matching (PS3.4 C.2.2.2): single value, UID list (`,` or `\`), wildcard `*`/`?`, date and
//! time ranges (`a-b`, `-b`, `a-`), and universal matching for empty values. Person names match
//! case-insensitively; with `fuzzymatching=true` a name also matches at the start of any of its
//! components. `includefield` (tags or keywords, repeated or comma-separated, or `all`),
//! `limit` and `offset` are supported. Attributes the index does not hold are answered from the
//! stored DICOM JSON of a representative instance. A matching key the server cannot match on
//! is ignored with a `Warning: 299` header (PS3.18 8.3.4.4).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::Value;
use sqlx::postgres::{PgRow, Postgres};
use sqlx::{QueryBuilder, Row};

use crate::auth::Caller;
use crate::error::WebError;
use crate::json::{put, root_url, Dataset};
use crate::multipart::accepts_json;
use crate::AppState;

/// The most results one search returns; more are announced with a `Warning: 299` header.
pub const MAX_RESULTS: i64 = 1000;

/// The query level of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Study,
    Series,
    Instance,
}

/// How a matching key is matched against its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    PersonName,
    Uid,
    Range,
    Integer,
    /// ModalitiesInStudy: any series of the study has one of the values.
    Modalities,
}

/// A matching key the index can match on.
#[derive(Debug, Clone, Copy)]
struct Key {
    tag: &'static str,
    column: &'static str,
    kind: Kind,
    level: Level,
}

const fn key(tag: &'static str, column: &'static str, kind: Kind, level: Level) -> Key {
    Key { tag, column, kind, level }
}

/// The matching keys of PS3.18 Tables 10.6.1-5 to 10.6.1-7 the index holds.
const KEYS: &[Key] = &[
    key("00080020", "s.study_date", Kind::Range, Level::Study),
    key("00080030", "s.study_time", Kind::Range, Level::Study),
    key("00080050", "s.accession_number", Kind::Text, Level::Study),
    key("00080061", "", Kind::Modalities, Level::Study),
    key("00080090", "s.referring_physician_name", Kind::PersonName, Level::Study),
    key("00081030", "s.study_description", Kind::Text, Level::Study),
    key("00100010", "s.patient_name", Kind::PersonName, Level::Study),
    key("00100020", "s.patient_id", Kind::Text, Level::Study),
    key("00100030", "s.patient_birth_date", Kind::Range, Level::Study),
    key("00100040", "s.patient_sex", Kind::Text, Level::Study),
    key("0020000D", "s.study_instance_uid", Kind::Uid, Level::Study),
    key("00200010", "s.study_id", Kind::Text, Level::Study),
    key("00080060", "se.modality", Kind::Text, Level::Series),
    key("0008103E", "se.series_description", Kind::Text, Level::Series),
    key("00180015", "se.body_part_examined", Kind::Text, Level::Series),
    key("0020000E", "se.series_instance_uid", Kind::Uid, Level::Series),
    key("00200011", "se.series_number", Kind::Integer, Level::Series),
    key("00080016", "i.sop_class_uid", Kind::Uid, Level::Instance),
    key("00080018", "i.sop_instance_uid", Kind::Uid, Level::Instance),
    key("00200013", "i.instance_number", Kind::Integer, Level::Instance),
    key("00280010", "i.rows", Kind::Integer, Level::Instance),
    key("00280011", "i.columns", Kind::Integer, Level::Instance),
    key("00280008", "i.number_of_frames", Kind::Integer, Level::Instance),
];

/// Instance-level attributes answered from index columns (PS3.18 Table 10.6.3-5); others come
/// from the instance's stored DICOM JSON, read only when `includefield` asks for them.
const INSTANCE_FIELDS: &[&str] = &[
    "00080016", "00080018", "00080056", "00081190", "0020000D", "0020000E", "00200013", "00280008", "00280010",
    "00280011", "00280100",
];

/// A parsed search request.
#[derive(Debug, Default)]
struct Search {
    matches: Vec<(Key, String)>,
    include_all: bool,
    include: Vec<String>,
    limit: i64,
    offset: i64,
    fuzzy: bool,
    ignored: Vec<String>,
}

/// `"GGGGEEEE"` for a tag given as hex or as a keyword (`PatientName`).
fn tag_of(name: &str) -> Option<String> {
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(name.to_ascii_uppercase());
    }
    StandardDataDictionary.by_name(name).map(|e| {
        let tag = e.tag_range().inner();
        format!("{:04X}{:04X}", tag.group(), tag.element())
    })
}

impl Search {
    fn parse(params: &[(String, String)], level: Level) -> Result<Search, WebError> {
        let mut s = Search { limit: MAX_RESULTS, ..Search::default() };
        for (name, value) in params {
            match name.as_str() {
                "limit" => {
                    s.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|l| *l >= 0)
                        .ok_or_else(|| WebError::BadRequest(format!("limit={value} is not a number")))?
                        .min(MAX_RESULTS);
                }
                "offset" => {
                    s.offset = value
                        .parse::<i64>()
                        .ok()
                        .filter(|o| *o >= 0)
                        .ok_or_else(|| WebError::BadRequest(format!("offset={value} is not a number")))?;
                }
                "fuzzymatching" => s.fuzzy = value.eq_ignore_ascii_case("true"),
                "includefield" => {
                    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if field == "all" {
                            s.include_all = true;
                        } else {
                            let tag = tag_of(field).ok_or_else(|| {
                                WebError::BadRequest(format!("includefield {field}: unknown attribute"))
                            })?;
                            s.include.push(tag);
                        }
                    }
                }
                // parameters of other services that clients add to searches
                "orderby" | "accept" | "charset" => {}
                other => {
                    let known = tag_of(other)
                        .and_then(|tag| KEYS.iter().find(|k| k.tag == tag && key_allowed(k.level, level)).copied());
                    match known {
                        Some(k) => s.matches.push((k, value.clone())),
                        None => s.ignored.push(other.to_owned()),
                    }
                }
            }
        }
        Ok(s)
    }

    /// Appends ` AND <condition>` for every matching key with a non-empty value.
    fn push_conditions(&self, q: &mut QueryBuilder<'_, Postgres>) -> Result<(), WebError> {
        for (k, value) in &self.matches {
            let value = value.trim();
            if value.is_empty() || value == "*" {
                continue; // universal matching
            }
            q.push(" AND ");
            match k.kind {
                Kind::Uid => {
                    let list: Vec<String> =
                        value.split([',', '\\']).map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
                    q.push(k.column).push(" = ANY(").push_bind(list).push(")");
                }
                Kind::Integer => {
                    let n: i32 = value
                        .parse()
                        .map_err(|_| WebError::BadRequest(format!("{}={value} is not an integer", k.tag)))?;
                    q.push(k.column).push(" = ").push_bind(n);
                }
                Kind::Range => match value.split_once('-') {
                    Some((from, to)) => {
                        q.push("(TRUE");
                        if !from.is_empty() {
                            q.push(" AND ").push(k.column).push(" COLLATE \"C\" >= ").push_bind(from.to_owned());
                        }
                        if !to.is_empty() {
                            // "~" sorts after digits and ".": an end time without seconds or
                            // fractions includes the whole minute or second
                            q.push(" AND ").push(k.column).push(" COLLATE \"C\" <= ").push_bind(format!("{to}~"));
                        }
                        q.push(")");
                    }
                    None => {
                        q.push(k.column).push(" LIKE ").push_bind(format!("{}%", like_escape(value)));
                    }
                },
                Kind::Text => push_text(q, k.column, value, false),
                Kind::PersonName if self.fuzzy && !value.contains(['*', '?']) => {
                    let v = like_escape(value);
                    q.push("(").push(k.column).push(" ILIKE ").push_bind(format!("{v}%"));
                    q.push(" OR ").push(k.column).push(" ILIKE ").push_bind(format!("%^{v}%"));
                    q.push(" OR ").push(k.column).push(" ILIKE ").push_bind(format!("% {v}%")).push(")");
                }
                Kind::PersonName => push_text(q, k.column, value, true),
                Kind::Modalities => {
                    let list: Vec<String> =
                        value.split([',', '\\']).map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
                    q.push("EXISTS (SELECT 1 FROM series m WHERE m.site = s.site AND m.study_instance_uid = s.study_instance_uid AND m.modality = ANY(")
                        .push_bind(list)
                        .push("))");
                }
            }
        }
        Ok(())
    }

    fn push_page(&self, q: &mut QueryBuilder<'_, Postgres>) {
        q.push(" LIMIT ").push_bind(self.limit + 1).push(" OFFSET ").push_bind(self.offset);
    }
}

fn key_allowed(key_level: Level, query_level: Level) -> bool {
    match query_level {
        Level::Study => key_level == Level::Study,
        Level::Series => key_level != Level::Instance,
        Level::Instance => true,
    }
}

fn like_escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Exact match, or LIKE with `*` -> `%` and `?` -> `_` (PS3.4 C.2.2.2.4).
fn push_text(q: &mut QueryBuilder<'_, Postgres>, column: &str, value: &str, case_insensitive: bool) {
    let op = if case_insensitive { " ILIKE " } else { " LIKE " };
    if value.contains(['*', '?']) {
        let pattern = like_escape(value).replace('*', "%").replace('?', "_");
        q.push(column).push(op).push_bind(pattern);
    } else if case_insensitive {
        q.push(column).push(op).push_bind(like_escape(value));
    } else {
        q.push(column).push(" = ").push_bind(value.to_owned());
    }
}

/// `GET /studies`
pub async fn studies(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    search(&state, &caller.scope(), &headers, &params, Level::Study, None, None).await
}

/// `GET /series`
pub async fn all_series(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    search(&state, &caller.scope(), &headers, &params, Level::Series, None, None).await
}

/// `GET /studies/{study}/series`
pub async fn study_series(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(study): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    search(&state, &caller.scope(), &headers, &params, Level::Series, Some(study), None).await
}

/// `GET /instances`
pub async fn all_instances(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    search(&state, &caller.scope(), &headers, &params, Level::Instance, None, None).await
}

/// `GET /studies/{study}/instances`
pub async fn study_instances(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(study): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    search(&state, &caller.scope(), &headers, &params, Level::Instance, Some(study), None).await
}

/// `GET /studies/{study}/series/{series}/instances`
pub async fn series_instances(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    search(&state, &caller.scope(), &headers, &params, Level::Instance, Some(study), Some(series)).await
}

const STUDY_COLUMNS: &str = "s.study_instance_uid, s.study_date, s.study_time, s.accession_number, \
    s.referring_physician_name, s.patient_name, s.patient_id, s.patient_birth_date, s.patient_sex, s.study_id, \
    s.study_description";

async fn search(
    state: &AppState,
    scope: &firstread_sites::Scope,
    headers: &HeaderMap,
    params: &[(String, String)],
    level: Level,
    study: Option<String>,
    series: Option<String>,
) -> Result<Response, WebError> {
    if !accepts_json(headers) {
        return Err(WebError::NotAcceptable("QIDO-RS answers application/dicom+json".into()));
    }
    let search = Search::parse(params, level)?;
    let root = root_url(headers, state.listen_port, state.https);
    let mut q = QueryBuilder::<Postgres>::new("SELECT ");
    q.push(STUDY_COLUMNS);
    match level {
        Level::Study => {
            q.push(
                ", (SELECT string_agg(DISTINCT m.modality, '\\' ORDER BY m.modality) FROM series m \
                 WHERE m.site = s.site AND m.study_instance_uid = s.study_instance_uid) AS modalities, \
                 (SELECT count(*) FROM series m WHERE m.site = s.site AND m.study_instance_uid = s.study_instance_uid) \
                 AS n_series, \
                 (SELECT count(*) FROM instances m WHERE m.site = s.site AND m.study_instance_uid = s.study_instance_uid) \
                 AS n_instances, \
                 ",
            );
            if extra_fields(&search, STUDY_FIELDS) {
                q.push(
                    "(SELECT m.metadata::text FROM instances m \
                     WHERE m.site = s.site AND m.study_instance_uid = s.study_instance_uid LIMIT 1)",
                );
            } else {
                q.push("NULL::text");
            }
            q.push(" AS representative FROM studies s WHERE TRUE");
        }
        Level::Series => {
            q.push(
                ", se.series_instance_uid, se.modality, se.series_number, se.series_description, \
                 (SELECT count(*) FROM instances m WHERE m.site = se.site \
                  AND m.series_instance_uid = se.series_instance_uid) AS n_instances, \
                 (SELECT m.metadata::text FROM instances m WHERE m.site = se.site \
                  AND m.series_instance_uid = se.series_instance_uid \
                  ORDER BY m.instance_number, m.sop_instance_uid LIMIT 1) AS representative \
                 FROM series se JOIN studies s ON s.site = se.site AND s.study_instance_uid = se.study_instance_uid \
                 WHERE TRUE",
            );
        }
        Level::Instance => {
            q.push(
                ", se.series_instance_uid, se.modality, se.series_number, se.series_description, \
                 i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.rows, i.columns, i.number_of_frames, \
                 (i.metadata -> '00280100' -> 'Value' ->> 0) AS bits_allocated, ",
            );
            // the whole stored JSON is parsed per row only when asked for
            q.push(if extra_fields(&search, INSTANCE_FIELDS) { "i.metadata::text" } else { "NULL::text" });
            q.push(
                " AS representative FROM instances i \
                 JOIN series se ON se.site = i.site AND se.series_instance_uid = i.series_instance_uid \
                 JOIN studies s ON s.site = i.site AND s.study_instance_uid = i.study_instance_uid WHERE TRUE",
            );
        }
    }
    // the caller's sites only: another site's study is not found
    if let Some(sites) = scope.filter() {
        q.push(" AND s.site = ANY(").push_bind(sites).push(")");
    }
    if let Some(study) = &study {
        q.push(" AND s.study_instance_uid = ").push_bind(study.clone());
    }
    if let Some(series) = &series {
        q.push(" AND se.series_instance_uid = ").push_bind(series.clone());
    }
    search.push_conditions(&mut q)?;
    q.push(match level {
        Level::Study => " ORDER BY s.last_received_at DESC, s.study_instance_uid, s.site",
        Level::Series => " ORDER BY s.study_instance_uid, s.site, se.series_number NULLS LAST, se.series_instance_uid",
        Level::Instance => " ORDER BY se.series_instance_uid, i.site, i.instance_number NULLS LAST, i.sop_instance_uid",
    });
    search.push_page(&mut q);
    let rows = q.build().fetch_all(state.index.pool()).await?;

    let more = rows.len() as i64 > search.limit;
    let mut results = Vec::with_capacity(rows.len());
    for row in rows.iter().take(usize::try_from(search.limit).unwrap_or(usize::MAX)) {
        results.push(Value::Object(dataset(row, level, &search, &root)?));
    }
    let mut response =
        ([(header::CONTENT_TYPE, "application/dicom+json")], Value::Array(results).to_string()).into_response();
    let mut warnings = Vec::new();
    if !search.ignored.is_empty() {
        warnings.push(format!(
            "299 firstread \"The following attributes are not supported as matching keys: {}\"",
            search.ignored.join(", ")
        ));
    }
    if more {
        warnings.push(
            "299 firstread \"The number of results exceeded the maximum supported by the server. Additional results \
             can be requested.\""
                .to_owned(),
        );
    }
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&w) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(response)
}

/// Study-level attributes answered from the index (PS3.18 Table 10.6.3-3).
const STUDY_FIELDS: &[&str] = &[
    "00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081030", "00081190", "00100010",
    "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208",
];

/// Whether `includefield` names attributes beyond `answered`.
fn extra_fields(search: &Search, answered: &[&str]) -> bool {
    search.include_all || search.include.iter().any(|t| !answered.contains(&t.as_str()))
}

fn dataset(row: &PgRow, level: Level, search: &Search, root: &str) -> Result<Dataset, WebError> {
    let text = |c: &str| row.try_get::<Option<String>, _>(c);
    let mut ds = Dataset::new();
    let study: String = row.try_get("study_instance_uid")?;
    put(&mut ds, "0020000D", "UI", Some(&study));
    put(&mut ds, "00080056", "CS", Some("ONLINE"));
    if level == Level::Study {
        put(&mut ds, "00080020", "DA", text("study_date")?.as_deref());
        put(&mut ds, "00080030", "TM", text("study_time")?.as_deref());
        put(&mut ds, "00080050", "SH", text("accession_number")?.as_deref());
        put(&mut ds, "00080061", "CS", text("modalities")?.as_deref());
        put(&mut ds, "00080090", "PN", text("referring_physician_name")?.as_deref());
        put(&mut ds, "00081030", "LO", text("study_description")?.as_deref());
        put(&mut ds, "00100010", "PN", text("patient_name")?.as_deref());
        put(&mut ds, "00100020", "LO", text("patient_id")?.as_deref());
        put(&mut ds, "00100030", "DA", text("patient_birth_date")?.as_deref());
        put(&mut ds, "00100040", "CS", text("patient_sex")?.as_deref());
        put(&mut ds, "00200010", "SH", text("study_id")?.as_deref());
        put(&mut ds, "00201206", "IS", Some(&row.try_get::<i64, _>("n_series")?.to_string()));
        put(&mut ds, "00201208", "IS", Some(&row.try_get::<i64, _>("n_instances")?.to_string()));
        put(&mut ds, "00081190", "UR", Some(&format!("{root}/studies/{study}")));
    }
    let representative: Option<Value> =
        text("representative")?.and_then(|t| serde_json::from_str::<Value>(&t).ok()).filter(Value::is_object);
    match level {
        Level::Study => {}
        Level::Series => {
            let series: String = row.try_get("series_instance_uid")?;
            put(&mut ds, "0020000E", "UI", Some(&series));
            put(&mut ds, "00080060", "CS", text("modality")?.as_deref());
            put(&mut ds, "0008103E", "LO", text("series_description")?.as_deref());
            let number = row.try_get::<Option<i32>, _>("series_number")?.map(|n| n.to_string());
            put(&mut ds, "00200011", "IS", number.as_deref());
            put(&mut ds, "00201209", "IS", Some(&row.try_get::<i64, _>("n_instances")?.to_string()));
            put(&mut ds, "00081190", "UR", Some(&format!("{root}/studies/{study}/series/{series}")));
            copy_from(&mut ds, representative.as_ref(), &["00080021", "00080031"]);
        }
        Level::Instance => {
            let series: String = row.try_get("series_instance_uid")?;
            let instance: String = row.try_get("sop_instance_uid")?;
            put(&mut ds, "0020000E", "UI", Some(&series));
            put(&mut ds, "00080018", "UI", Some(&instance));
            put(&mut ds, "00080016", "UI", text("sop_class_uid")?.as_deref());
            let number = row.try_get::<Option<i32>, _>("instance_number")?.map(|n| n.to_string());
            put(&mut ds, "00200013", "IS", number.as_deref());
            let int = |c: &str| row.try_get::<Option<i32>, _>(c).map(|v| v.map(|n| n.to_string()));
            put(&mut ds, "00280010", "US", int("rows")?.as_deref());
            put(&mut ds, "00280011", "US", int("columns")?.as_deref());
            if let Some(frames) = int("number_of_frames")? {
                put(&mut ds, "00280008", "IS", Some(&frames));
            }
            if let Some(bits) = text("bits_allocated")? {
                put(&mut ds, "00280100", "US", Some(&bits));
            }
            put(
                &mut ds,
                "00081190",
                "UR",
                Some(&format!("{root}/studies/{study}/series/{series}/instances/{instance}")),
            );
        }
    }
    if search.include_all {
        if let Some(Value::Object(all)) = &representative {
            for (tag, v) in all {
                if !ds.contains_key(tag) && v.get("BulkDataURI").is_none() {
                    ds.insert(tag.clone(), v.clone());
                }
            }
        }
    }
    let wanted: Vec<&str> = search.include.iter().map(String::as_str).filter(|t| !ds.contains_key(*t)).collect();
    copy_from(&mut ds, representative.as_ref(), &wanted);
    // attributes in tag order (PS3.18 F.2.1.1)
    let mut entries: Vec<(String, Value)> = ds.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries.into_iter().collect())
}

/// Copies `tags` present in a representative instance's DICOM JSON.
fn copy_from(ds: &mut Dataset, representative: Option<&Value>, tags: &[&str]) {
    let Some(Value::Object(source)) = representative else { return };
    for tag in tags {
        if let Some(v) = source.get(*tag) {
            if !ds.contains_key(*tag) {
                ds.insert((*tag).to_owned(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn keywords_and_tags_name_the_same_keys_and_unknown_keys_are_reported() {
        let s = Search::parse(
            &params(&[
                ("PatientID", "X1"),
                ("0020000D", "1.2"),
                ("includefield", "00081030,StudyDescription"),
                ("limit", "5"),
                ("SeriesDescription", "lung"),
                ("NoSuchKey", "1"),
            ]),
            Level::Study,
        )
        .unwrap();
        let tags: Vec<&str> = s.matches.iter().map(|(k, _)| k.tag).collect();
        assert_eq!(tags, ["00100020", "0020000D"]);
        assert_eq!(s.include, ["00081030", "00081030"]);
        assert_eq!(s.limit, 5);
        assert_eq!(s.ignored, ["SeriesDescription", "NoSuchKey"]);
        assert!(matches!(Search::parse(&params(&[("limit", "-1")]), Level::Study), Err(WebError::BadRequest(_))));
        assert_eq!(Search::parse(&params(&[("limit", "999999")]), Level::Study).unwrap().limit, MAX_RESULTS);
    }

    #[test]
    fn conditions_bind_values_and_translate_wildcards() {
        let s = Search::parse(
            &params(&[("PatientName", "do*"), ("StudyDate", "20200101-20201231"), ("AccessionNumber", "")]),
            Level::Study,
        )
        .unwrap();
        let mut q = QueryBuilder::<Postgres>::new("SELECT 1 FROM studies s WHERE TRUE");
        s.push_conditions(&mut q).unwrap();
        assert_eq!(
            q.sql(),
            "SELECT 1 FROM studies s WHERE TRUE AND s.patient_name ILIKE $1 AND (TRUE AND s.study_date COLLATE \"C\" \
             >= $2 AND s.study_date COLLATE \"C\" <= $3)"
        );
        let bad = Search::parse(&params(&[("SeriesNumber", "x")]), Level::Series).unwrap();
        let mut q = QueryBuilder::<Postgres>::new("");
        assert!(matches!(bad.push_conditions(&mut q), Err(WebError::BadRequest(_))));
    }
}
