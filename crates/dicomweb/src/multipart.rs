//! `multipart/related` (RFC 2387) for WADO-RS responses and STOW-RS requests, and the `Accept`
//! negotiation of PS3.18 8.7: which part media type and transfer syntax the client accepts.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};

use crate::error::WebError;

/// One media range of an `Accept` header: `type/subtype` and its parameters (lower-case
/// names, unquoted values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    /// e.g. `multipart/related`, lower case.
    pub essence: String,
    /// Parameters, e.g. `("type", "application/dicom")`, `("transfer-syntax", "*")`.
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses one media type with parameters (quoted values allowed).
pub fn parse_media_type(text: &str) -> MediaRange {
    let mut pieces = split_unquoted(text, ';').into_iter();
    let essence = pieces.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_owned()))
        })
        .collect();
    MediaRange { essence, params }
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

/// The media ranges of all `Accept` headers, in order.
pub fn accept(headers: &HeaderMap) -> Vec<MediaRange> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| split_unquoted(v, ','))
        .map(|r| parse_media_type(&r))
        .filter(|r| !r.essence.is_empty())
        .collect()
}

/// What a client accepts for a multipart response whose parts are `part_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Parts as stored (`transfer-syntax=*`).
    AsStored,
    /// The default for the part type (no transfer syntax named: Explicit VR Little Endian for
    /// `application/dicom` and `application/octet-stream`, PS3.18 8.7.3.5).
    Default,
    /// A named transfer syntax.
    Syntax(String),
}

/// Negotiates a `multipart/related; type="<part_type>"` response (PS3.18 8.7.4). No `Accept`,
/// `*/*` and `multipart/related` without a type accept the part type with its default syntax.
///
/// # Errors
/// [`WebError::NotAcceptable`] when the client accepts none of that.
pub fn negotiate(headers: &HeaderMap, part_type: &str) -> Result<Wanted, WebError> {
    let ranges = accept(headers);
    if ranges.is_empty() {
        return Ok(Wanted::Default);
    }
    for r in &ranges {
        let matches = match r.essence.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => r.param("type").is_none_or(|t| media_matches(t, part_type)),
            _ => false,
        };
        if matches {
            return Ok(match r.param("transfer-syntax") {
                Some("*") => Wanted::AsStored,
                Some(ts) => Wanted::Syntax(ts.to_owned()),
                None => Wanted::Default,
            });
        }
    }
    Err(WebError::NotAcceptable(format!(
        "this resource is available as multipart/related; type=\"{part_type}\" (Accept: {})",
        ranges.iter().map(|r| r.essence.as_str()).collect::<Vec<_>>().join(", ")
    )))
}

/// Whether media range `range` (`type/subtype`, `type/*` or `*/*`) covers `media_type`.
fn media_matches(range: &str, media_type: &str) -> bool {
    let range = range.trim().to_ascii_lowercase();
    range == "*/*"
        || range.eq_ignore_ascii_case(media_type)
        || range.strip_suffix("/*").is_some_and(|major| media_type.split('/').next() == Some(major))
}

/// Whether the client accepts `application/dicom+json` (or JSON in general, or anything).
pub fn accepts_json(headers: &HeaderMap) -> bool {
    let ranges = accept(headers);
    ranges.is_empty()
        || ranges.iter().any(|r| {
            matches!(r.essence.as_str(), "application/dicom+json" | "application/json" | "*/*" | "application/*")
        })
}

/// One body part: its `Content-Type` and bytes.
#[derive(Debug, Clone)]
pub struct Part {
    /// The part's `Content-Type`, e.g. `application/dicom; transfer-syntax=1.2.840.10008.1.2.1`.
    pub content_type: String,
    /// Optional `Content-Location`.
    pub location: Option<String>,
    /// The part's body.
    pub body: Bytes,
}

/// A `multipart/related; type="<part_type>"` response streaming `parts` as they resolve.
pub fn response<S>(part_type: &str, parts: S) -> Response
where
    S: Stream<Item = Result<Part, WebError>> + Send + 'static,
{
    let boundary = format!("firstread-{}", uuid::Uuid::new_v4().simple());
    let closing = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let b = boundary.clone();
    let body = parts
        .map(move |part| {
            part.map(|p| {
                let mut head = format!("\r\n--{b}\r\nContent-Type: {}\r\n", p.content_type);
                if let Some(location) = &p.location {
                    head.push_str(&format!("Content-Location: {location}\r\n"));
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", p.body.len()));
                stream::iter([Ok::<Bytes, WebError>(Bytes::from(head)), Ok(p.body)])
            })
        })
        .flat_map(|r| match r {
            Ok(chunks) => chunks.left_stream(),
            Err(e) => stream::iter([Err(e)]).right_stream(),
        })
        .chain(stream::iter([Ok(closing)]))
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    let mut response = Body::from_stream(body).into_response();
    let content_type = format!("multipart/related; type=\"{part_type}\"; boundary={boundary}");
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiation_follows_ps3_18_8_7() {
        assert_eq!(negotiate(&HeaderMap::new(), "application/dicom").unwrap(), Wanted::Default);
        let ohif = with_accept("multipart/related; type=application/octet-stream; transfer-syntax=*");
        assert_eq!(negotiate(&ohif, "application/octet-stream").unwrap(), Wanted::AsStored);
        let quoted = with_accept(r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1"#);
        assert_eq!(negotiate(&quoted, "application/dicom").unwrap(), Wanted::Syntax("1.2.840.10008.1.2.1".into()));
        assert!(matches!(negotiate(&quoted, "application/octet-stream"), Err(WebError::NotAcceptable(_))));
        assert!(matches!(negotiate(&with_accept("image/png"), "application/dicom"), Err(WebError::NotAcceptable(_))));
        assert_eq!(negotiate(&with_accept("image/png, */*;q=0.1"), "application/dicom").unwrap(), Wanted::Default);
        let any_part = with_accept(r#"multipart/related; type="*/*""#);
        assert_eq!(negotiate(&any_part, "application/octet-stream").unwrap(), Wanted::Default);
        let application = with_accept(r#"multipart/related; type="application/*""#);
        assert_eq!(negotiate(&application, "application/dicom").unwrap(), Wanted::Default);
        let image = with_accept(r#"multipart/related; type="image/*""#);
        assert!(negotiate(&image, "application/dicom").is_err());
    }
}
