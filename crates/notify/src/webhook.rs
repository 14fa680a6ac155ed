//! Webhook: the [`Event`] as JSON, POSTed with
//! - `X-Firstread-Signature: sha256=<hex>`: HMAC-SHA256 (RFC 2104) of the exact body bytes with
//!   the channel's secret, the scheme GitHub and Stripe use, so receivers verify before parsing;
//! - `X-Firstread-Delivery: <uuid>`: the same on every attempt of one delivery (drop repeats);
//! - `X-Firstread-Event: first_read | refused`.
//!
//! 2xx is delivered; 408, 425, 429 and 5xx are retried; any other answer (a 401 for a signature
//! the receiver rejects, a redirect: never followed) is permanent.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::config::Channel;
use crate::event::{Event, EventKind};
use crate::DeliveryError;

/// The JSON body: the delivery id and the event.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    /// Same as `X-Firstread-Delivery`.
    pub delivery_id: &'a str,
    /// The notification.
    #[serde(flatten)]
    pub event: &'a Event,
}

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length (RFC 2104 2.); new_from_slice cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` (the serialised [`Body`]; `event_name` from [`event_name`]) to the channel's URL once.
///
/// # Errors
/// [`DeliveryError`] by the rules of this module.
pub async fn post(
    http: &reqwest::Client,
    channel: &Channel,
    delivery_id: &str,
    event_name: &str,
    body: Vec<u8>,
) -> Result<String, DeliveryError> {
    let url = channel.url.as_deref().ok_or_else(|| DeliveryError::Permanent("webhook without url".into()))?;
    let secret = channel.secret.as_deref().ok_or_else(|| DeliveryError::Permanent("webhook without secret".into()))?;
    let request = http
        .post(url)
        .timeout(channel.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Firstread-Signature", signature(secret.as_bytes(), &body))
        .header("X-Firstread-Delivery", delivery_id)
        .header("X-Firstread-Event", event_name)
        .body(body);
    crate::send(request, url).await
}

/// The `X-Firstread-Event` value of an event.
pub fn event_name(event: &Event) -> &'static str {
    match event.kind {
        EventKind::FirstRead => "first_read",
        EventKind::Refused => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 (key "Jefe").
    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

#[cfg(test)]
mod redirect_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::config::{Channel, ChannelKind};
    use crate::DeliveryError;

    /// A receiver that redirects every request: the POST is not turned into a GET elsewhere,
    /// and the delivery fails for good instead of counting a redirect target's 200.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let answer =
                    format!("HTTP/1.1 302 Found\r\nLocation: http://{addr}/elsewhere\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        let channel = Channel {
            name: "w".into(),
            kind: ChannelKind::Webhook,
            url: Some(format!("http://{addr}/hook")),
            address: None,
            secret: Some("k".into()),
            secret_file: None,
            bearer_token: None,
            receiving_application: String::new(),
            receiving_facility: String::new(),
            timeout: std::time::Duration::from_secs(5),
        };
        let http = crate::http_client().expect("client");
        let outcome = super::post(&http, &channel, "d", "first_read", b"{}".to_vec()).await;
        assert!(matches!(&outcome, Err(DeliveryError::Permanent(m)) if m.contains("302")), "{outcome:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "one request, no second one to the Location");
    }
}
