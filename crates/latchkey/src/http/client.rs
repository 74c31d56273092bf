//! Who is calling: client IP and user agent, for throttling and the audit log.
//!
//! Behind reverse proxies (`http.trust_forwarded_for`), the client address
//! comes from `X-Forwarded-For`. Each proxy *appends* the address it saw —
//! to the last line, or as a line of its own — so only the right-most
//! `http.trusted_proxy_hops` entries were written by proxies we trust;
//! everything to their left is whatever the client sent. [`client_address`]
//! reads every header line in order as one list and takes the entry that many
//! hops from the right; anything unreadable there falls back to the socket
//! peer, never to a client-chosen value.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::http::HeaderValue;

use crate::app::AppState;
use crate::session::Origin;

/// The caller's IP (the socket peer, or the `X-Forwarded-For` entry
/// `http.trusted_proxy_hops` from the right when `http.trust_forwarded_for`
/// is set) and user agent.
#[derive(Debug, Clone)]
pub struct Caller(pub Origin);

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical());
        let http = &state.config.http;
        let forwarded = http.trust_forwarded_for.then(|| {
            client_address(
                parts.headers.get_all("x-forwarded-for").iter(),
                http.trusted_proxy_hops,
            )
        });
        let ip = forwarded
            .flatten()
            .or(peer)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Caller(Origin { ip, user_agent }))
    }
}

/// The client address in `X-Forwarded-For` `lines` (in the order they
/// arrived) behind `hops` trusted proxies: the entry `hops` from the right
/// of all lines read as one comma-separated list, or the left-most entry
/// when there are fewer (each was then written by a trusted proxy). `None`
/// when there is no header or that entry is not an address (the caller then
/// uses the socket peer).
pub fn client_address<'a>(
    lines: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    hops: u32,
) -> Option<IpAddr> {
    let hops = usize::try_from(hops.max(1)).unwrap_or(usize::MAX);
    let mut seen = 0;
    let mut leftmost = None;
    // Walk from the right: the trusted entries are at the end, and nothing to
    // the left of the chosen one is ever read (however long the list is).
    for line in lines.rev() {
        let Ok(text) = line.to_str() else {
            // Not visible ASCII: no proxy of ours wrote it.
            return None;
        };
        for entry in text.rsplit(',') {
            seen += 1;
            if seen == hops {
                return parse_entry(entry);
            }
            leftmost = Some(entry);
        }
    }
    leftmost.and_then(parse_entry)
}

/// One `X-Forwarded-For` entry: an IP address, optionally with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`), as proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, port) = rest.split_once(']')?;
        if !(port.is_empty() || is_port(port.strip_prefix(':')?)) {
            return None;
        }
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (ip, port) = entry.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(lines: &[&str], hops: u32) -> Option<String> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).expect("header"))
            .collect();
        client_address(values.iter(), hops).map(|ip| ip.to_string())
    }

    #[test]
    fn lines_are_one_list_read_from_the_right() {
        assert_eq!(pick(&["1.1.1.1", "2.2.2.2"], 1).as_deref(), Some("2.2.2.2"));
        assert_eq!(pick(&["1.1.1.1, 2.2.2.2"], 1).as_deref(), Some("2.2.2.2"));
        assert_eq!(
            pick(&["9.9.9.9, 1.1.1.1", "2.2.2.2, 3.3.3.3"], 2).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            pick(&["9.9.9.9", "1.1.1.1", "2.2.2.2, 3.3.3.3"], 3).as_deref(),
            Some("1.1.1.1")
        );
        assert_eq!(
            pick(&["4.4.4.4"], 3).as_deref(),
            Some("4.4.4.4"),
            "fewer than hops"
        );
        assert_eq!(pick(&[], 1), None);
    }

    #[test]
    fn entries_with_ports_and_mapped_addresses() {
        assert_eq!(pick(&["5.5.5.5:80"], 1).as_deref(), Some("5.5.5.5"));
        assert_eq!(
            pick(&["[2001:db8::1]:443"], 1).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(pick(&["[2001:db8::1]"], 1).as_deref(), Some("2001:db8::1"));
        assert_eq!(pick(&[" 2001:db8::2 "], 1).as_deref(), Some("2001:db8::2"));
        assert_eq!(pick(&["::ffff:6.6.6.6"], 1).as_deref(), Some("6.6.6.6"));
    }

    #[test]
    fn garbage_where_the_client_should_be_is_no_address() {
        for bad in [
            "unknown",
            "",
            "999.1.1.1",
            "1.2.3.4:99999x",
            "[::1",
            "[::1]x",
            "_hidden",
            "1.2.3.4:",
        ] {
            assert_eq!(pick(&[bad], 1), None, "{bad:?}");
        }
        // Garbage to the left of the chosen entry is never read.
        assert_eq!(
            pick(&["<x>, nonsense", "7.7.7.7"], 1).as_deref(),
            Some("7.7.7.7")
        );
    }
}
