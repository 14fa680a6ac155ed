//! Errors of the HTTP surface and their status codes (PS3.18 8.5: 400 for a malformed request,
//! 404 for an unknown target, 413 for a body over the configured size, 406 when no acceptable representation exists, 415 for an
//! unsupported request media type, 503 when the database is unavailable or, with Retry-After, when
//! the storage takes no instances).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::warn;

/// An HTTP error with the reason sent to the client as text.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// 400: the request is malformed (bad query parameter, bad frame list...).
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such study, series, instance or frame.
    #[error("{0}")]
    NotFound(String),
    /// 406: none of the accepted media types can be produced.
    #[error("{0}")]
    NotAcceptable(String),
    /// 413: the request body exceeds `http.max_request_bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the request body's media type is not supported.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the index database is unavailable.
    #[error("index database unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// 500: a stored file could not be read.
    #[error("stored instance unreadable: {0}")]
    Storage(String),
    /// 503 with `Retry-After`: no instances are taken now (the storage is above its high
    /// watermark).
    #[error("not taking instances now: {0}")]
    Busy(String),
}

/// `Retry-After` of [`WebError::Busy`] (s).
pub const BUSY_RETRY_AFTER_S: u64 = 60;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            WebError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            warn!(error = %self, "DICOMweb request failed");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        if matches!(self, WebError::Busy(_)) {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, BUSY_RETRY_AFTER_S.into());
        }
        response
    }
}
