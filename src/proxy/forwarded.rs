//! Client address resolution and the forwarding headers (SPEC §4): who the
//! client is behind trusted proxies, `X-Forwarded-*`, `Forwarded`, and the
//! hop-by-hop headers stripped in both directions.

use http::header::{self, HeaderMap, HeaderName};

use ipnet::IpNet;
use std::net::IpAddr;

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the customary extras).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// The client IP: the peer, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, nets: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    if nets.is_empty() || !trusted(peer, nets) {
        return Some(peer);
    }
    let mut last_trusted = peer;
    for v in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(s) = v.to_str() else {
            return Some(last_trusted);
        };
        for part in s.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if trusted(ip, nets) => last_trusted = ip,
                Ok(ip) => return Some(ip),
                // Garbage in the chain: stop believing it.
                Err(_) => return Some(last_trusted),
            }
        }
    }
    Some(last_trusted)
}

/// The hop-by-hop headers present in `headers`, to be removed before
/// forwarding: those of [`HOP_BY_HOP`] and those the `Connection` header
/// lists. With `upgrade`, `Connection` and `Upgrade` stay (a protocol switch
/// is forwarded). One pass over the names present, no lookup per name: most
/// requests carry none of them, and then nothing is allocated.
pub fn hop_by_hop(headers: &HeaderMap, upgrade: bool) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    let mut has_connection = false;
    for name in headers.keys() {
        has_connection |= name == header::CONNECTION;
        let hop = if name == header::CONNECTION || name == header::UPGRADE {
            !upgrade
        } else {
            name == header::TE
                || name == header::TRAILER
                || name == header::PROXY_AUTHENTICATE
                || name == header::PROXY_AUTHORIZATION
                || name.as_str() == "keep-alive"
                || name.as_str() == "proxy-connection"
        };
        if hop {
            out.push(name.clone());
        }
    }
    if has_connection {
        for n in connection_listed(headers) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Names listed in `Connection` (to be stripped with it), lowercased.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            for t in s.split(',') {
                let t = t.trim();
                if !t.is_empty()
                    && !t.eq_ignore_ascii_case("upgrade")
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
                {
                    if let Ok(n) = HeaderName::from_bytes(t.to_ascii_lowercase().as_bytes()) {
                        out.push(n);
                    }
                }
            }
        }
    }
    out
}

/// Whether the headers ask for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// The `for=` node of RFC 7239: IPv6 is quoted and bracketed.
pub fn push_node(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "\"[{v6}]\""),
    };
}

/// Appends a quoted-string for RFC 7239 values that are not tokens.
pub fn push_quoted(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_finds_every_listed_name_and_the_connection_list() {
        let mut m = HeaderMap::new();
        m.insert("host", "a".parse().unwrap());
        m.insert("x-custom", "1".parse().unwrap());
        assert!(hop_by_hop(&m, false).is_empty());
        for n in HOP_BY_HOP {
            m.insert(n, "x".parse().unwrap());
        }
        m.insert(header::CONNECTION, "X-Custom, te, close".parse().unwrap());
        let found = hop_by_hop(&m, false);
        for n in HOP_BY_HOP {
            assert_eq!(found.iter().filter(|f| f.as_str() == n).count(), 1, "{n}");
        }
        assert!(found.iter().any(|f| f == "x-custom"), "{found:?}");
        assert_eq!(found.len(), HOP_BY_HOP.len() + 1, "{found:?}");
        // A protocol switch keeps Connection and Upgrade.
        let kept = hop_by_hop(&m, true);
        assert!(!kept
            .iter()
            .any(|f| f == header::CONNECTION || f == header::UPGRADE));
        assert_eq!(kept.len(), HOP_BY_HOP.len() - 1, "{kept:?}");
    }

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m
    }

    #[test]
    fn client_ip_rules() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ext: IpAddr = "203.0.113.9".parse().unwrap();
        let lb: IpAddr = "10.1.1.1".parse().unwrap();
        // Untrusted peer: XFF ignored.
        assert_eq!(client_ip(Some(ext), &h("1.2.3.4"), &nets), Some(ext));
        // Trusted peer: rightmost untrusted entry.
        assert_eq!(
            client_ip(Some(lb), &h("1.2.3.4, 198.51.100.7, 10.2.2.2"), &nets),
            Some("198.51.100.7".parse().unwrap())
        );
        // All trusted: the leftmost trusted one.
        assert_eq!(
            client_ip(Some(lb), &h("10.3.3.3"), &nets),
            Some("10.3.3.3".parse().unwrap())
        );
        // Garbage stops the walk.
        assert_eq!(client_ip(Some(lb), &h("1.2.3.4, junk"), &nets), Some(lb));
    }

    #[test]
    fn forwarded_values() {
        let mut out = String::new();
        push_node(&mut out, "::1".parse().unwrap());
        out.push(' ');
        push_node(&mut out, "192.0.2.1".parse().unwrap());
        out.push(' ');
        push_quoted(&mut out, r#"api "x" \ y"#);
        assert_eq!(out, r#""[::1]" 192.0.2.1 "api \"x\" \\ y""#);
    }

    #[test]
    fn connection_tokens() {
        let mut m = HeaderMap::new();
        m.insert(
            "connection",
            "close-me, keep-alive, Upgrade".parse().unwrap(),
        );
        m.insert("upgrade", "websocket".parse().unwrap());
        assert_eq!(
            connection_listed(&m),
            vec![HeaderName::from_static("close-me")]
        );
        assert!(is_upgrade(&m));
    }
}
