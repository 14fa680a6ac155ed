//! Notifications of first reads: which results are worth telling someone about ([`rules`]), what
//! is told ([`event`]: one [`Event`] per study version, built from the findings and their
//! vocabulary), and how it is delivered ([`webhook`], [`hl7`] over MLLP, [`fhir`]).
//!
//! Delivery is not this crate's loop: each (study version, rule, channel) is a job in the node's
//! queue, so retries with backoff, dead jobs with their reason and exactly-once per study version
//! come from the queue. This crate builds the message and makes one attempt ([`deliver`]),
//! telling a failure worth retrying ([`DeliveryError::Retry`]) from one that never will succeed
//! ([`DeliveryError::Permanent`]).

pub mod config;
pub mod event;
pub mod fhir;
pub mod hl7;
pub mod rules;
pub mod webhook;

use std::time::Duration;

pub use config::{Channel, ChannelKind, NotifyConfig, Rule};
pub use event::{Event, EventKind, Measurement, ResultStatus};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again later (peer down, timeout, 5xx, HL7 AE/AR).
    #[error("{0}")]
    Retry(String),
    /// Will fail the same way every time (4xx such as a rejected signature, bad configuration).
    #[error("{0}")]
    Permanent(String),
}

/// What a successful delivery got back (kept in the job's result).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Delivered {
    /// The channel kind.
    pub kind: ChannelKind,
    /// What the receiver answered: HTTP status, or the HL7 acknowledgement code (MSA-1).
    pub answer: String,
    /// The delivery id the receiver saw (webhook header, HL7 MSH-10, FHIR Bundle.identifier).
    pub delivery_id: String,
}

/// Sends `event` on `channel` once. `delivery_id` is the same on every attempt of one delivery
/// (the receiver can drop a repeat after a lost answer).
///
/// # Errors
/// [`DeliveryError`]: retry or give up.
pub async fn deliver(
    http: &reqwest::Client,
    channel: &Channel,
    event: &Event,
    delivery_id: &str,
) -> Result<Delivered, DeliveryError> {
    let answer = match &channel.kind {
        ChannelKind::Webhook => {
            let body = serde_json::to_vec(&webhook::Body { delivery_id, event })
                .map_err(|e| DeliveryError::Permanent(format!("event not serialisable: {e}")))?;
            webhook::post(http, channel, delivery_id, webhook::event_name(event), body).await?
        }
        ChannelKind::Hl7 => {
            let message = hl7::oru_r01(event, channel, delivery_id, chrono::Utc::now());
            hl7::send_mllp(channel, &message, &hl7::control_id(delivery_id)).await?
        }
        ChannelKind::Fhir => {
            let bundle = fhir::bundle(event, delivery_id);
            fhir::post(http, channel, &bundle).await?
        }
    };
    Ok(Delivered { kind: channel.kind, answer, delivery_id: delivery_id.to_owned() })
}

/// The HTTP client the webhook and FHIR channels share (rustls; connect timeout of 5 s, the
/// channel's own timeout per request). Redirects are not followed: a receiver could otherwise
/// turn the signed POST into a GET of any URL the node reaches, and a 2xx there would count as
/// delivered; a 3xx is a failed delivery naming the new location.
///
/// # Errors
/// The TLS back-end could not be set up.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("firstread/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends `request` (to `url`) once and maps the answer with [`http_outcome`].
pub(crate) async fn send(request: reqwest::RequestBuilder, url: &str) -> Result<String, DeliveryError> {
    let response = request.send().await.map_err(|e| http_error(url, &e))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    http_outcome(status, &text)
}

/// Maps an HTTP answer to a delivery outcome: 2xx delivered; 408, 425, 429 and 5xx retried;
/// any other status is permanent (a 401 from a receiver that rejects the signature will not
/// change by sending again; a 3xx means the configured URL is not the receiver's).
pub(crate) fn http_outcome(status: reqwest::StatusCode, body: &str) -> Result<String, DeliveryError> {
    if status.is_success() {
        return Ok(status.as_u16().to_string());
    }
    if status.is_redirection() {
        return Err(DeliveryError::Permanent(format!(
            "receiver answered {status}: redirects are not followed; configure the URL that accepts the POST"
        )));
    }
    let text: String = body.chars().take(200).collect();
    let message = format!("receiver answered {status}: {}", text.trim());
    if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
        Err(DeliveryError::Retry(message))
    } else {
        Err(DeliveryError::Permanent(message))
    }
}

/// A request error: everything short of an HTTP answer (refused connection, timeout, TLS) is
/// worth retrying.
pub(crate) fn http_error(url: &str, e: &reqwest::Error) -> DeliveryError {
    let mut message = format!("{url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_builder() {
        DeliveryError::Permanent(message)
    } else {
        DeliveryError::Retry(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_retry_or_permanent() {
        use reqwest::StatusCode as S;
        assert_eq!(http_outcome(S::NO_CONTENT, ""), Ok("204".into()));
        assert!(matches!(http_outcome(S::SERVICE_UNAVAILABLE, ""), Err(DeliveryError::Retry(_))));
        assert!(matches!(http_outcome(S::TOO_MANY_REQUESTS, ""), Err(DeliveryError::Retry(_))));
        let Err(DeliveryError::Permanent(m)) = http_outcome(S::UNAUTHORIZED, "bad signature\n") else {
            panic!("401 must be permanent")
        };
        assert_eq!(m, "receiver answered 401 Unauthorized: bad signature");
        assert!(matches!(http_outcome(S::NOT_FOUND, ""), Err(DeliveryError::Permanent(_))));
        let Err(DeliveryError::Permanent(m)) = http_outcome(S::FOUND, "secret page") else {
            panic!("302 is permanent")
        };
        assert!(!m.contains("secret page"), "a redirect's body is not kept: {m}");
    }
}
