//! WADO-RS (PS3.18 10.4): study, series and instance retrieval as `multipart/related;
//! type="application/dicom"`, metadata in the DICOM JSON model, frames and bulk data as
//! `multipart/related; type="application/octet-stream"`.
//!
//! Instances are sent byte for byte as stored (their transfer syntax named in each part).
//! Frames are sent as stored with `transfer-syntax=*`, or decoded to native Explicit VR Little
//! Endian samples otherwise (PS3.18 8.7.3.5). Metadata comes from the DICOM JSON kept in the
//! index (computed when the instance was stored), its `BulkDataURI`s made absolute for the root
//! the client reached; instances without it are read from their files.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use dicom_core::value::Value as DicomValue;
use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use dicom_pixeldata::PixelDecoder;
use firstread_store::attributes::{int, read_attributes};
use futures_util::stream;
use futures_util::StreamExt;
use sqlx::Row;

use crate::auth::Caller;
use crate::error::WebError;
use crate::json::{absolute_bulk_data_uris, root_url};
use crate::multipart::{self, negotiate, Part, Wanted};
use crate::{with_type, AppState};

/// Explicit VR Little Endian, the default transfer syntax of PS3.18 8.7.3.5.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";

/// Which instances a request targets.
#[derive(Debug, Clone, Default)]
struct Target {
    /// The caller's sites (`None`: every site): another site's study is not found.
    sites: Option<Vec<String>>,
    study: String,
    series: Option<String>,
    instance: Option<String>,
}

/// One stored instance.
#[derive(Debug, Clone)]
struct Stored {
    path: PathBuf,
    transfer_syntax_uid: String,
    metadata: Option<String>,
}

async fn lookup(state: &AppState, target: &Target) -> Result<Vec<Stored>, WebError> {
    let rows = sqlx::query(
        "SELECT i.path, i.transfer_syntax_uid, i.metadata::text AS metadata FROM instances i \
         JOIN series se ON se.site = i.site AND se.series_instance_uid = i.series_instance_uid \
         WHERE i.study_instance_uid = $1 AND ($2::text IS NULL OR i.series_instance_uid = $2) \
         AND ($3::text IS NULL OR i.sop_instance_uid = $3) AND ($4::text[] IS NULL OR i.site = ANY($4)) \
         ORDER BY se.series_number NULLS LAST, i.series_instance_uid, i.instance_number NULLS LAST, i.sop_instance_uid",
    )
    .bind(&target.study)
    .bind(&target.series)
    .bind(&target.instance)
    .bind(&target.sites)
    .fetch_all(state.index.pool())
    .await?;
    if rows.is_empty() {
        let what = match (&target.series, &target.instance) {
            (_, Some(i)) => format!("instance {i}"),
            (Some(s), None) => format!("series {s}"),
            (None, None) => format!("study {}", target.study),
        };
        return Err(WebError::NotFound(format!("no {what} here")));
    }
    rows.iter()
        .map(|r| {
            Ok(Stored {
                path: state.storage_root.join(r.try_get::<String, _>("path")?),
                transfer_syntax_uid: r.try_get("transfer_syntax_uid")?,
                metadata: r.try_get("metadata")?,
            })
        })
        .collect()
}

/// `GET /studies/{study}`
pub async fn retrieve_study(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    retrieve(&state, &headers, Target { sites: caller.scope().filter(), study, ..Target::default() }).await
}

/// `GET /studies/{study}/series/{series}`
pub async fn retrieve_series(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    retrieve(&state, &headers, Target { sites: caller.scope().filter(), study, series: Some(series), instance: None })
        .await
}

/// `GET /studies/{study}/series/{series}/instances/{instance}`
pub async fn retrieve_instance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    retrieve(
        &state,
        &headers,
        Target { sites: caller.scope().filter(), study, series: Some(series), instance: Some(instance) },
    )
    .await
}

/// The instances as stored. A client naming a transfer syntax other than the stored one gets
/// 406: this server does not transcode instances (frames it does decode).
async fn retrieve(state: &AppState, headers: &HeaderMap, target: Target) -> Result<Response, WebError> {
    let wanted = negotiate(headers, "application/dicom")?;
    let stored = lookup(state, &target).await?;
    if let Wanted::Syntax(ts) = &wanted {
        if let Some(other) = stored.iter().find(|s| &s.transfer_syntax_uid != ts) {
            return Err(WebError::NotAcceptable(format!(
                "instances are available as stored ({}; or transfer-syntax=*), not transcoded to {ts}",
                other.transfer_syntax_uid
            )));
        }
    }
    let parts = stream::iter(stored).then(|s| async move {
        let body =
            tokio::fs::read(&s.path).await.map_err(|e| WebError::Storage(format!("{}: {e}", s.path.display())))?;
        Ok(Part {
            content_type: format!("application/dicom; transfer-syntax={}", s.transfer_syntax_uid),
            location: None,
            body: Bytes::from(body),
        })
    });
    Ok(multipart::response("application/dicom", parts))
}

/// `GET /studies/{study}/metadata`
pub async fn study_metadata(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    metadata(&state, &headers, Target { sites: caller.scope().filter(), study, ..Target::default() }).await
}

/// `GET /studies/{study}/series/{series}/metadata`
pub async fn series_metadata(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    metadata(&state, &headers, Target { sites: caller.scope().filter(), study, series: Some(series), instance: None })
        .await
}

/// `GET /studies/{study}/series/{series}/instances/{instance}/metadata`
pub async fn instance_metadata(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    metadata(
        &state,
        &headers,
        Target { sites: caller.scope().filter(), study, series: Some(series), instance: Some(instance) },
    )
    .await
}

/// A JSON array of the instances' DICOM JSON, built from the stored text without re-parsing.
async fn metadata(state: &AppState, headers: &HeaderMap, target: Target) -> Result<Response, WebError> {
    if !multipart::accepts_json(headers) {
        return Err(WebError::NotAcceptable("metadata is available as application/dicom+json".into()));
    }
    let stored = lookup(state, &target).await?;
    let root = root_url(headers, state.listen_port, state.https);
    let mut body = String::with_capacity(stored.iter().map(|s| s.metadata.as_ref().map_or(4096, String::len)).sum());
    body.push('[');
    for (n, s) in stored.into_iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        let text = match s.metadata {
            Some(text) => text,
            None => {
                let path = s.path.clone();
                tokio::task::spawn_blocking(move || read_attributes(&path))
                    .await
                    .map_err(|e| WebError::Storage(e.to_string()))?
                    .map_err(|e| WebError::Storage(format!("{}: {e}", s.path.display())))?
                    .metadata
                    .ok_or_else(|| WebError::Storage(format!("{}: no DICOM JSON encoding", s.path.display())))?
            }
        };
        body.push_str(&absolute_bulk_data_uris(&text, &root));
    }
    body.push(']');
    Ok(with_type("application/dicom+json", body))
}

/// `GET /studies/{study}/series/{series}/instances/{instance}/frames/{frames}`: `frames` is a
/// comma-separated list of 1-based frame numbers (PS3.18 10.4.1.1.6).
pub async fn frames(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let numbers: Vec<u32> = frames
        .split(',')
        .map(|f| f.trim().parse::<u32>().ok().filter(|n| *n >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| WebError::BadRequest(format!("frame list {frames}: 1-based numbers separated by commas")))?;
    let wanted = negotiate(&headers, "application/octet-stream")?;
    let stored = lookup(
        &state,
        &Target { sites: caller.scope().filter(), study, series: Some(series), instance: Some(instance) },
    )
    .await?;
    let s = stored.into_iter().next().ok_or_else(|| WebError::NotFound("no such instance".into()))?;
    let parts = tokio::task::spawn_blocking(move || frame_parts(&s.path, &numbers, &wanted))
        .await
        .map_err(|e| WebError::Storage(e.to_string()))??;
    Ok(multipart::response("application/octet-stream", stream::iter(parts.into_iter().map(Ok))))
}

/// `GET .../instances/{instance}/bulk/{tag}`: only Pixel Data (7FE00010) is sent as bulk data;
/// native Pixel Data as one part, encapsulated Pixel Data as one part per frame.
pub async fn bulk(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if !tag.eq_ignore_ascii_case("7FE00010") {
        return Err(WebError::NotFound(format!("no bulk data {tag}: metadata inlines every attribute but Pixel Data")));
    }
    let wanted = negotiate(&headers, "application/octet-stream")?;
    let stored = lookup(
        &state,
        &Target { sites: caller.scope().filter(), study, series: Some(series), instance: Some(instance) },
    )
    .await?;
    let s = stored.into_iter().next().ok_or_else(|| WebError::NotFound("no such instance".into()))?;
    let parts = tokio::task::spawn_blocking(move || -> Result<Vec<Part>, WebError> {
        let obj = open(&s.path)?;
        let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
        if is_native(&obj) {
            let pixel = obj.element(tags::PIXEL_DATA).map_err(|_| WebError::NotFound("no Pixel Data".into()))?;
            let bytes = pixel.to_bytes().map_err(|e| WebError::Storage(e.to_string()))?;
            return Ok(vec![native_part(Bytes::copy_from_slice(&bytes))]);
        }
        let all: Vec<u32> = (1..=u32::try_from(frames).unwrap_or(1)).collect();
        frames_of(&obj, &all, &wanted)
    })
    .await
    .map_err(|e| WebError::Storage(e.to_string()))??;
    Ok(multipart::response("application/octet-stream", stream::iter(parts.into_iter().map(Ok))))
}

fn open(path: &std::path::Path) -> Result<DefaultDicomObject, WebError> {
    open_file(path).map_err(|e| WebError::Storage(format!("{}: {e}", path.display())))
}

fn is_native(obj: &DefaultDicomObject) -> bool {
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    ts == EXPLICIT_VR_LITTLE_ENDIAN || ts == IMPLICIT_VR_LITTLE_ENDIAN || ts == "1.2.840.10008.1.2.2"
}

fn native_part(body: Bytes) -> Part {
    Part {
        content_type: format!("application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"),
        location: None,
        body,
    }
}

fn frame_parts(path: &std::path::Path, numbers: &[u32], wanted: &Wanted) -> Result<Vec<Part>, WebError> {
    frames_of(&open(path)?, numbers, wanted)
}

/// The requested frames (1-based) of an instance, as stored or decoded to native samples.
fn frames_of(obj: &DefaultDicomObject, numbers: &[u32], wanted: &Wanted) -> Result<Vec<Part>, WebError> {
    let stored_ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_owned();
    let count = u32::try_from(int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1)).unwrap_or(1);
    if let Some(n) = numbers.iter().find(|n| **n > count) {
        return Err(WebError::NotFound(format!("frame {n}: the instance has {count} frame(s)")));
    }
    let pixel =
        obj.element(tags::PIXEL_DATA).map_err(|_| WebError::NotFound("the instance has no Pixel Data".into()))?;
    let native_wanted = match wanted {
        Wanted::AsStored => false,
        Wanted::Default => true,
        Wanted::Syntax(ts) if ts == EXPLICIT_VR_LITTLE_ENDIAN || ts == IMPLICIT_VR_LITTLE_ENDIAN => true,
        Wanted::Syntax(ts) if *ts == stored_ts => false,
        Wanted::Syntax(ts) => {
            return Err(WebError::NotAcceptable(format!(
                "frames are available as stored ({stored_ts}) or as {EXPLICIT_VR_LITTLE_ENDIAN}, not {ts}"
            )))
        }
    };
    match pixel.value() {
        DicomValue::PixelSequence(seq) if !native_wanted => {
            let fragments = seq.fragments();
            numbers
                .iter()
                .map(|n| {
                    let body = if count == 1 {
                        Bytes::from(fragments.concat())
                    } else if fragments.len() == count as usize {
                        Bytes::copy_from_slice(&fragments[*n as usize - 1])
                    } else {
                        return Err(WebError::NotAcceptable(
                            "frames spanning several fragments are only sent decoded (omit transfer-syntax=*)".into(),
                        ));
                    };
                    Ok(Part {
                        content_type: format!("application/octet-stream; transfer-syntax={stored_ts}"),
                        location: None,
                        body,
                    })
                })
                .collect()
        }
        DicomValue::PixelSequence(_) => numbers
            .iter()
            .map(|n| {
                let decoded = obj
                    .decode_pixel_data_frame(n - 1)
                    .map_err(|e| WebError::Storage(format!("decoding frame {n}: {e}")))?;
                Ok(native_part(Bytes::copy_from_slice(decoded.data())))
            })
            .collect(),
        _ => {
            let bytes = pixel.to_bytes().map_err(|e| WebError::Storage(e.to_string()))?;
            let rows = int(obj, tags::ROWS).unwrap_or(0).max(0) as usize;
            let columns = int(obj, tags::COLUMNS).unwrap_or(0).max(0) as usize;
            let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(1) as usize;
            let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(16).max(1) as usize;
            let frame_bits = rows * columns * samples * bits;
            numbers
                .iter()
                .map(|n| {
                    let frame = native_frame(&bytes, frame_bits, *n as usize - 1)
                        .ok_or_else(|| WebError::Storage(format!("frame {n} lies beyond the Pixel Data")))?;
                    Ok(native_part(Bytes::from(frame)))
                })
                .collect()
        }
    }
}

/// Frame `index` (0-based) of native Pixel Data whose frames are `frame_bits` long. Frames of
/// 1-bit data (e.g. DICOM SEG, PS3.5 8.1.1) need not start on a byte: they are re-packed from
/// their first bit, least significant bit first.
fn native_frame(bytes: &[u8], frame_bits: usize, index: usize) -> Option<Vec<u8>> {
    let start = frame_bits.checked_mul(index)?;
    let end = start.checked_add(frame_bits)?;
    if frame_bits == 0 || end > bytes.len() * 8 {
        return None;
    }
    if start % 8 == 0 && end % 8 == 0 {
        return Some(bytes[start / 8..end / 8].to_vec());
    }
    let mut out = vec![0u8; frame_bits.div_ceil(8)];
    for bit in 0..frame_bits {
        let source = start + bit;
        if bytes[source / 8] >> (source % 8) & 1 == 1 {
            out[bit / 8] |= 1 << (bit % 8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::native_frame;

    #[test]
    fn byte_aligned_and_bit_packed_frames() {
        let bytes: Vec<u8> = (0..8).collect();
        assert_eq!(native_frame(&bytes, 32, 1), Some(vec![4, 5, 6, 7]));
        assert_eq!(native_frame(&bytes, 32, 2), None);
        // 1-bit frames of 3x3 = 9 bits: frame 1 starts at bit 9
        let packed = [0b1111_1111u8, 0b0000_0010, 0b0000_0000];
        // bits 0-7 are 1, bit 8 (last of frame 0) is 0, bit 9 (first of frame 1) is 1
        assert_eq!(native_frame(&packed, 9, 0), Some(vec![0xFF, 0x00]));
        assert_eq!(native_frame(&packed, 9, 1), Some(vec![0x01, 0x00]));
    }
}
