//! Reverse proxies: `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Forwarded-For` and `Forwarded`
//! are honoured only on connections from a configured proxy (`http.trusted_proxies`); from
//! anyone else they are removed before any handler sees them, so a client cannot choose the
//! scheme and host of the absolute URLs the node writes, nor the address its requests are
//! recorded and throttled under. From a trusted proxy, the client address is the last
//! `X-Forwarded-For` entry that is not itself a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

/// The reverse proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpAddr>);

impl TrustedProxies {
    /// These addresses (IPv4-mapped IPv6 addresses match their IPv4 address).
    pub fn new(addresses: &[IpAddr]) -> Self {
        TrustedProxies(addresses.iter().map(IpAddr::to_canonical).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// The client behind a trusted proxy: walking `X-Forwarded-For` from the right, the first
    /// address that is not a trusted proxy (`ip`, `ip:port` or `[v6]:port`); `None` when there is
    /// none, or when an entry cannot be read before it (what is left of it was written by the
    /// client itself).
    fn client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for entry in entries.iter().rev() {
            let ip = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
            if !self.trusts(ip) {
                return Some(ip);
            }
        }
        None
    }
}

const FORWARDING: [&str; 5] =
    ["x-forwarded-proto", "x-forwarded-host", "x-forwarded-for", "x-forwarded-port", "forwarded"];

/// The middleware: strips the forwarding headers of untrusted peers; for a trusted proxy, the
/// request's `ConnectInfo` becomes the client it names.
pub async fn only_from_trusted(
    State(trusted): State<Arc<TrustedProxies>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    match peer {
        Some(peer) if trusted.trusts(peer.ip()) => {
            if let Some(client) = trusted.client(request.headers()) {
                request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, 0)));
            }
        }
        _ => {
            for name in FORWARDING {
                request.headers_mut().remove(name);
            }
        }
    }
    next.run(request).await
}

/// Whether the client reached the node over HTTPS: the listener's own scheme, or a trusted
/// proxy's `X-Forwarded-Proto: https` (the only ones left by [`only_from_trusted`]).
pub fn client_used_https(headers: &HeaderMap, listener_https: bool) -> bool {
    listener_https
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().unwrap_or("").trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_address_that_is_no_trusted_proxy() {
        let t = TrustedProxies::new(&["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.2".parse().unwrap());
        // the left entries are whatever the client wrote: only the last untrusted one counts
        assert_eq!(t.client(&h), Some("198.51.100.7".parse().unwrap()));
        assert!(t.trusts("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(t.client(&HeaderMap::new()), None);
        // a port is read; an unreadable entry stops the walk (a forged left part is never used)
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7:4711".parse().unwrap());
        assert_eq!(t.client(&h), Some("198.51.100.7".parse().unwrap()));
        h.insert("x-forwarded-for", "203.0.113.9, unknown".parse().unwrap());
        assert_eq!(t.client(&h), None);
        let mut https = HeaderMap::new();
        https.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(client_used_https(&https, false) && !client_used_https(&HeaderMap::new(), false));
    }
}
