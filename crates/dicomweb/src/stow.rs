//! STOW-RS (PS3.18 10.5): `POST /studies` and `POST /studies/{study}` with a
//! `multipart/related; type="application/dicom"` body of Part 10 instances.
//!
//! Each part's File Meta Information is read here; its data set goes to the application's
//! [`StowSink`](crate::StowSink), which stores it through the same durable store and study
//! assembly as a C-STORE. The response is the PS3.18 store response in DICOM JSON: Referenced
//! SOP Sequence (0008,1199) for what was stored, Failed SOP Sequence (0008,1198) with Failure
//! Reason (0008,1197) for what was not; 200 when all were stored, 202 when some failed or
//! carry a warning, 409 when none was stored (PS3.18 10.5.3).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;
use tracing::{debug, info_span, warn, Instrument};

use crate::auth::Caller;
use crate::error::WebError;
use crate::json::{put, put_sequence, root_url, Dataset};
use crate::multipart::parse_media_type;
use crate::AppState;

/// Failure Reason: the data set cannot be parsed (PS3.4 Table B.2-1, C000).
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Failure Reason: the instance's Study Instance UID differs from the request's study.
pub const STUDY_MISMATCH: u16 = 0xA901;
/// Failure Reason: SOP Class not supported (PS3.7 C.5.5, 0122).
pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// Failure Reason: transfer syntax not supported (PS3.18 Table 10.5.3-2, C122).
pub const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;

/// One instance of a STOW-RS request, its File Meta Information read.
#[derive(Debug, Clone, Copy)]
pub struct StowRequest<'a> {
    /// Media Storage SOP Class UID (0002,0002).
    pub sop_class_uid: &'a str,
    /// Media Storage SOP Instance UID (0002,0003).
    pub sop_instance_uid: &'a str,
    /// Transfer Syntax UID (0002,0010) of the data set.
    pub transfer_syntax_uid: &'a str,
    /// The HTTP client.
    pub client: SocketAddr,
    /// The Study Instance UID of the request target (`POST /studies/{study}`), which the
    /// instance must carry.
    pub study: Option<&'a str>,
    /// The site the instance goes to: the caller's (`?site=` for a caller with several).
    pub site: &'a str,
}

/// What storing one instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StowOutcome {
    /// Durable and indexed.
    Stored,
    /// Stored, with a warning (e.g. B000: the SOP Instance UID exists in another series).
    Warning {
        /// Warning Reason (0008,1196).
        reason: u16,
        /// Why.
        comment: String,
    },
    /// Not stored.
    Failed {
        /// Failure Reason (0008,1197), a PS3.4 status code.
        reason: u16,
        /// Why.
        comment: String,
    },
}

/// `POST /studies[?site=S]`: into the caller's site (`site` names one of several).
pub async fn store(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SiteQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let stored = async {
        let site = caller.scope().upload_site(query.site.as_deref()).map_err(WebError::BadRequest)?;
        handle(&state, client, &headers, body, None, &site).await
    };
    unread_body_closes(stored.await)
}

/// `POST /studies/{study}[?site=S]`
pub async fn store_in_study(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SiteQuery>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let stored = async {
        let site = caller.scope().upload_site(query.site.as_deref()).map_err(WebError::BadRequest)?;
        handle(&state, client, &headers, body, Some(study), &site).await
    };
    unread_body_closes(stored.await)
}

/// An error answered before the request body was read to its end: `Connection: close`, so that
/// the client does not send its next request on a connection the server is about to drop (with
/// the rest of this body still in it).
fn unread_body_closes(result: Result<Response, WebError>) -> Result<Response, WebError> {
    result.or_else(|e| Ok(closing(e.into_response())))
}

/// The response with `Connection: close`.
fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// STOW-RS's query: the site to store into, for a caller with several.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SiteQuery {
    site: Option<String>,
}

/// The File Meta Information of a Part 10 instance (PS3.10 7.1).
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax_uid: String,
    /// Where the data set starts.
    data_set_offset: usize,
}

/// Reads the File Meta Information: 128-byte preamble, `DICM`, then group 0002 in Explicit VR
/// Little Endian.
fn read_meta(bytes: &[u8]) -> Result<Meta, String> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err("not a DICOM Part 10 file (no DICM prefix after the 128-byte preamble)".into());
    }
    let mut at = 132;
    let (mut class, mut instance, mut syntax) = (None, None, None);
    while at + 8 <= bytes.len() {
        let group = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
        let vr = &bytes[at + 4..at + 6];
        let (length, header) = if matches!(
            vr,
            b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR" | b"OD" | b"OL" | b"OV" | b"SV" | b"UV"
        ) {
            let l = bytes.get(at + 8..at + 12).ok_or("File Meta Information truncated")?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (u16::from_le_bytes([bytes[at + 6], bytes[at + 7]]) as usize, 8)
        };
        let start = at + header;
        let end = start.checked_add(length).filter(|e| *e <= bytes.len()).ok_or("File Meta Information truncated")?;
        let text = || String::from_utf8_lossy(&bytes[start..end]).trim_end_matches(['\0', ' ']).to_owned();
        match element {
            0x0002 => class = Some(text()),
            0x0003 => instance = Some(text()),
            0x0010 => syntax = Some(text()),
            _ => {}
        }
        at = end;
    }
    Ok(Meta {
        sop_class_uid: class.filter(|c| !c.is_empty()).ok_or("no Media Storage SOP Class UID (0002,0002)")?,
        sop_instance_uid: instance.filter(|i| !i.is_empty()).ok_or("no Media Storage SOP Instance UID (0002,0003)")?,
        transfer_syntax_uid: syntax.filter(|s| !s.is_empty()).ok_or("no Transfer Syntax UID (0002,0010)")?,
        data_set_offset: at,
    })
}

async fn handle(
    state: &AppState,
    client: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    study: Option<String>,
    site: &str,
) -> Result<Response, WebError> {
    state.sink.accepts().map_err(WebError::Busy)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = parse_media_type(content_type);
    if media.essence != "multipart/related" {
        return Err(WebError::UnsupportedMediaType(format!(
            "STOW-RS takes multipart/related; type=\"application/dicom\", not {content_type:?}"
        )));
    }
    if let Some(t) = media.param("type").filter(|t| !t.eq_ignore_ascii_case("application/dicom")) {
        return Err(WebError::UnsupportedMediaType(format!(
            "STOW-RS here takes Part 10 instances (type=\"application/dicom\"), not {t}"
        )));
    }
    let boundary = media
        .param("boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| WebError::BadRequest("multipart/related without a boundary".into()))?
        .to_owned();
    let root = root_url(headers, state.listen_port, state.https);
    let span = info_span!("stow", client = %client, site);
    async move {
        let limits =
            multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(state.max_request_bytes));
        let mut parts = multer::Multipart::with_constraints(body.into_data_stream(), boundary, limits);
        let mut referenced = Vec::new();
        let mut failed = Vec::new();
        let mut warned = false;
        let mut broken = false;
        loop {
            if referenced.len() + failed.len() >= MAX_PARTS {
                failed.push(failure(
                    "",
                    "",
                    CANNOT_UNDERSTAND,
                    &format!("more than {MAX_PARTS} parts: the rest is not read"),
                ));
                broken = true;
                break;
            }
            let field = match parts.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    // What was stored before stays stored; report the request as malformed (or
                    // too large) only when nothing was.
                    if referenced.is_empty() {
                        return Err(body_error(e));
                    }
                    // the rest of the body is not stored: said (202), and the connection closed
                    warn!(error = %e, "STOW-RS body ends early");
                    failed.push(failure(
                        "",
                        "",
                        CANNOT_UNDERSTAND,
                        &format!("the rest of the body is unreadable: {e}"),
                    ));
                    broken = true;
                    break;
                }
            };
            if let Some(ct) = field.content_type() {
                if ct.essence_str() != "application/dicom" {
                    failed.push(failure(
                        "",
                        "",
                        CANNOT_UNDERSTAND,
                        &format!("part of type {ct} is not application/dicom"),
                    ));
                    continue;
                }
            }
            // the File Meta Information from the part's first bytes (at most META_WINDOW), then
            // the data set streamed to the sink as it arrives
            let mut field = field;
            let mut head = Vec::new();
            let mut ended = false;
            while head.len() < META_WINDOW && !ended {
                match field.chunk().await {
                    Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                    Ok(None) => ended = true,
                    Err(e) if referenced.is_empty() => return Err(body_error(e)),
                    Err(e) => {
                        failed.push(failure("", "", CANNOT_UNDERSTAND, &format!("part unreadable: {e}")));
                        broken = true;
                        break;
                    }
                }
            }
            if head.len() < META_WINDOW && !ended {
                break; // unreadable: recorded above
            }
            let meta = match read_meta(&head) {
                Ok(m) => m,
                Err(e) => {
                    failed.push(failure("", "", CANNOT_UNDERSTAND, &e));
                    continue;
                }
            };
            let request = StowRequest {
                sop_class_uid: &meta.sop_class_uid,
                sop_instance_uid: &meta.sop_instance_uid,
                transfer_syntax_uid: &meta.transfer_syntax_uid,
                client,
                study: study.as_deref(),
                site,
            };
            let outcome = match state.sink.begin(request).await {
                Err(outcome) => outcome,
                Ok(mut part) => match stream_part(&mut *part, &head[meta.data_set_offset..], &mut field).await {
                    Ok(()) => part.finish().await,
                    // dropped unfinished: nothing is kept
                    Err(PartError::Storage(comment)) => StowOutcome::Failed { reason: OUT_OF_RESOURCES, comment },
                    // the body broke off (or grew past the limit): as when it breaks between parts
                    Err(PartError::Body(e)) if referenced.is_empty() => return Err(body_error(e)),
                    Err(PartError::Body(e)) => {
                        failed.push(failure(
                            &meta.sop_class_uid,
                            &meta.sop_instance_uid,
                            CANNOT_UNDERSTAND,
                            &format!("part unreadable: {e}"),
                        ));
                        broken = true;
                        break;
                    }
                },
            };
            match outcome {
                StowOutcome::Stored => referenced.push(reference(&meta, &root, None)),
                StowOutcome::Warning { reason, comment } => {
                    debug!(reason, comment, "stored with a warning");
                    warned = true;
                    referenced.push(reference(&meta, &root, Some(reason)));
                }
                StowOutcome::Failed { reason, comment } => {
                    failed.push(failure(&meta.sop_class_uid, &meta.sop_instance_uid, reason, &comment));
                }
            }
        }
        let status = match (referenced.is_empty(), failed.is_empty()) {
            (_, true) if !warned => StatusCode::OK,
            (false, _) => StatusCode::ACCEPTED,
            (true, _) => StatusCode::CONFLICT,
        };
        let mut response = Dataset::new();
        if let Some(study) = &study {
            put(&mut response, "00081190", "UR", Some(&format!("{root}/studies/{study}")));
        }
        if !failed.is_empty() {
            put_sequence(&mut response, "00081198", failed);
        }
        if !referenced.is_empty() {
            put_sequence(&mut response, "00081199", referenced);
        }
        let response =
            (status, [(header::CONTENT_TYPE, "application/dicom+json")], Value::Object(response).to_string())
                .into_response();
        // the rest of the body was not read
        Ok(if broken { closing(response) } else { response })
    }
    .instrument(span)
    .await
}

/// Most parts one request stores (its response lists one entry per part).
const MAX_PARTS: usize = 100_000;

/// How much of a part is read before its File Meta Information is parsed (it is a few hundred
/// bytes; a smaller part is parsed when it ends).
const META_WINDOW: usize = 64 * 1024;

/// Failure Reason of a part whose data set could not be written (PS3.4 A700, out of resources,
/// as for C-STORE).
const OUT_OF_RESOURCES: u16 = 0xA700;

/// Why a part could not be streamed to the sink.
enum PartError {
    /// Writing failed.
    Storage(String),
    /// The request body broke off or passed its size limit.
    Body(multer::Error),
}

/// Writes `first` and then the rest of `field` into `part`, chunk by chunk.
async fn stream_part(
    part: &mut dyn crate::StowPart,
    first: &[u8],
    field: &mut multer::Field<'_>,
) -> Result<(), PartError> {
    let storage = |e: std::io::Error| PartError::Storage(format!("storage: {e}"));
    part.write(first).await.map_err(storage)?;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => part.write(&chunk).await.map_err(storage)?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(PartError::Body(e)),
        }
    }
}

/// The HTTP error for a multipart body that cannot be read: 413 beyond the size limit.
fn body_error(e: multer::Error) -> WebError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => {
            WebError::PayloadTooLarge(format!("the request body exceeds {limit} bytes (http.max_request_bytes)"))
        }
        other => WebError::BadRequest(format!("multipart body: {other}")),
    }
}

fn reference(meta: &Meta, root: &str, warning: Option<u16>) -> Dataset {
    let mut item = Dataset::new();
    put(&mut item, "00081150", "UI", Some(&meta.sop_class_uid));
    put(&mut item, "00081155", "UI", Some(&meta.sop_instance_uid));
    if let Some(reason) = warning {
        put(&mut item, "00081196", "US", Some(&reason.to_string()));
    }
    // the instance's retrieve URL needs its study and series, which the sink knows; the
    // SOP Instance is found by QIDO-RS `/instances?SOPInstanceUID=`
    put(&mut item, "00081190", "UR", Some(&format!("{root}/instances?SOPInstanceUID={}", meta.sop_instance_uid)));
    item
}

fn failure(class: &str, instance: &str, reason: u16, comment: &str) -> Dataset {
    warn!(reason = format!("{reason:04X}"), comment, "STOW-RS instance not stored");
    let mut item = Dataset::new();
    put(&mut item, "00081150", "UI", Some(class));
    put(&mut item, "00081155", "UI", Some(instance));
    put(&mut item, "00081197", "US", Some(&reason.to_string()));
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(tag_element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x02, 0x00];
        v.extend_from_slice(&tag_element.to_le_bytes());
        v.extend_from_slice(vr);
        if vr == b"OB" {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn file_meta_is_read_and_bad_prefixes_refused() {
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        bytes.extend(element(0x0001, b"OB", &[0, 1]));
        bytes.extend(element(0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"));
        bytes.extend(element(0x0003, b"UI", b"1.2.3.4"));
        bytes.extend(element(0x0010, b"UI", b"1.2.840.10008.1.2.1\0"));
        let offset = bytes.len();
        bytes.extend_from_slice(&[0x08, 0x00, 0x16, 0x00]);
        let meta = read_meta(&bytes).unwrap();
        assert_eq!(meta.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(meta.sop_instance_uid, "1.2.3.4");
        assert_eq!(meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        assert_eq!(meta.data_set_offset, offset);
        assert!(read_meta(b"DICM").is_err());
        assert!(read_meta(&bytes[..140]).is_err());
        let mut no_syntax = vec![0u8; 128];
        no_syntax.extend_from_slice(b"DICM");
        no_syntax.extend(element(0x0002, b"UI", b"1.2"));
        no_syntax.extend(element(0x0003, b"UI", b"1.2.3"));
        assert!(read_meta(&no_syntax).unwrap_err().contains("0002,0010"));
    }
}
