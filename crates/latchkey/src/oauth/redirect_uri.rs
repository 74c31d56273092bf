//! Redirect URI matching (RFC 9700 §4.1.3, RFC 8252 §7.3).
//!
//! A redirect URI must equal a registered one **exactly**, as strings. The
//! only latitude is the port of a loopback IP literal (`http://127.0.0.1`,
//! `http://[::1]`) for native apps, which pick a free port at run time — and
//! only for them: RFC 8252 §7.3 is about native (public) clients, so a
//! confidential client's loopback URI matches exactly, port included.

use url::Url;

fn loopback_without_port(uri: &str) -> Option<String> {
    let url = Url::parse(uri).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    match url.host()? {
        url::Host::Ipv4(ip) if ip.is_loopback() => {}
        url::Host::Ipv6(ip) if ip.is_loopback() => {}
        _ => return None,
    }
    let mut normalized = url.clone();
    normalized.set_port(None).ok()?;
    Some(normalized.to_string())
}

/// Whether a client gets RFC 8252 §7.3's loopback port latitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopbackPorts {
    /// A native (public) client: any port on a registered loopback IP URI.
    Any,
    /// Every other client: the port is part of the exact match.
    Exact,
}

impl LoopbackPorts {
    /// The rule for a client: latitude for public clients only.
    pub fn for_client(confidential: bool) -> LoopbackPorts {
        if confidential {
            LoopbackPorts::Exact
        } else {
            LoopbackPorts::Any
        }
    }
}

/// Does `presented` match one of `registered`?
pub fn matches(registered: &[String], presented: &str, loopback: LoopbackPorts) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    if loopback == LoopbackPorts::Exact {
        return false;
    }
    // RFC 8252 §7.3: any port on a registered loopback IP redirect URI.
    let Some(presented_norm) = loopback_without_port(presented) else {
        return false;
    };
    // The comparison is on the parsed form; also demand the raw strings agree
    // apart from the port, so normalization cannot smuggle in differences.
    registered
        .iter()
        .filter_map(|r| loopback_without_port(r))
        .any(|r| r == presented_norm && raw_equal_ignoring_port(&r, presented))
}

fn raw_equal_ignoring_port(registered_norm: &str, presented: &str) -> bool {
    // Rebuild the presented string without its port by hand and compare.
    let Some(rest) = presented.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let host = match authority.rfind(':') {
        Some(i)
            if !authority.ends_with(']')
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[..i]
        }
        _ => authority,
    };
    let rebuilt = format!("http://{host}{}", if path.is_empty() { "/" } else { path });
    rebuilt == registered_norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn matches(registered: &[String], presented: &str) -> bool {
        super::matches(registered, presented, LoopbackPorts::Any)
    }

    #[test]
    fn exact_match_only() {
        let r = reg(&["https://app.example.com/cb"]);
        assert!(matches(&r, "https://app.example.com/cb"));
        for bad in [
            "https://app.example.com/cb?x=1",
            "https://app.example.com/cb#frag",
            "https://app.example.com/cb/",
            "https://app.example.com/CB",
            "https://APP.example.com/cb",
            "https://app.example.com/cb/../cb",
            "https://app.example.com/cbx",
            "https://app.example.com/c",
            "https://app.example.com.evil.com/cb",
            "https://evil.com/https://app.example.com/cb",
            "http://app.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com/cb%2F",
            "https://user@app.example.com/cb",
        ] {
            assert!(!matches(&r, bad), "{bad} matched");
        }
    }

    #[test]
    fn loopback_port_latitude_only_for_ip_literals() {
        let r = reg(&[
            "http://127.0.0.1/callback",
            "http://[::1]/cb",
            "http://localhost/cb",
        ]);
        assert!(matches(&r, "http://127.0.0.1:51234/callback"));
        assert!(matches(&r, "http://127.0.0.1/callback"));
        assert!(matches(&r, "http://[::1]:8000/cb"));
        assert!(!matches(&r, "http://127.0.0.1:51234/callback/x"));
        assert!(!matches(&r, "http://127.0.0.1:51234/callback?x"));
        assert!(
            !matches(&r, "http://localhost:8000/cb"),
            "localhost is not an IP literal (RFC 8252 §8.3)"
        );
        assert!(!matches(&r, "https://127.0.0.1:5000/callback"));
        assert!(!matches(&r, "http://127.0.0.2:5000/callback"));
    }

    #[test]
    fn confidential_clients_get_no_port_latitude() {
        let r = reg(&["http://127.0.0.1/cb", "http://[::1]:8080/cb"]);
        let exact = |uri| super::matches(&r, uri, LoopbackPorts::for_client(true));
        assert!(exact("http://127.0.0.1/cb"));
        assert!(exact("http://[::1]:8080/cb"));
        for other_port in [
            "http://127.0.0.1:4444/cb",
            "http://127.0.0.1:80/cb",
            "http://[::1]/cb",
            "http://[::1]:8081/cb",
        ] {
            assert!(!exact(other_port), "{other_port}");
            assert!(
                super::matches(&r, other_port, LoopbackPorts::for_client(false)),
                "a native client keeps the latitude: {other_port}"
            );
        }
    }
}
