//! Which headers cross the gateway: the hop-by-hop headers stripped in both
//! directions, the client-sent headers dropped as spoofable (SPEC §4), and
//! the `X-Forwarded-For` / `Forwarded` chains extended with this hop.

use http::header::{self, HeaderMap, HeaderName};

use super::{single, trim_ows};

/// Hop-by-hop headers (RFC 9110 §7.6.1, RFC 9113 §3.2.1's `HTTP2-Settings`,
/// and the customary extras).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

/// Client-address headers some upstreams believe; only a trusted proxy may
/// send them (SPEC §4). Their underscore spellings (`X_Real_IP`, which WSGI
/// and CGI upstreams read as `X-Real-IP`) are dropped from every request.
pub const CLIENT_IP_HEADERS: [&str; 14] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "forwarded-for",
    "x-forwarded",
    "x-proxyuser-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
];

/// Headers some frameworks take for the request's host, URL or scheme (IIS,
/// Symfony, Zend, nginx `X-Original-URI` setups, `Front-End-Https`): only a
/// trusted proxy may send them, like every `X-Forwarded-*` header.
pub const ORIGIN_OVERRIDE_HEADERS: [&str; 8] = [
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-original-uri",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
];

/// Method-override headers: dropped from every request. Routing, plugins,
/// rate limits and idempotency all judge the real method; an upstream that
/// honoured one of these would run a method nobody checked.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The client-sent headers to drop before any plugin sees the request and
/// before forwarding (SPEC §4):
/// - from every request: header names holding `_` (as nginx's default
///   `underscores_in_headers off`: CGI-style upstreams read `X_Real_IP` as
///   `X-Real-IP`), and the [`METHOD_OVERRIDE_HEADERS`];
/// - from an untrusted peer: every `X-Forwarded-*` header (the gateway writes
///   `X-Forwarded-For`, `-Proto` and `-Host` itself; the others, such as
///   `-Port`, `-Prefix`, `-Ssl`, are not in the cache key and would poison
///   it), the [`CLIENT_IP_HEADERS`] and the [`ORIGIN_OVERRIDE_HEADERS`].
///
/// One pass over the names, comparing only names that could match; nothing is
/// allocated unless something is dropped.
pub fn spoofable_headers(headers: &HeaderMap, trusted_peer: bool) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in headers.keys() {
        let s = name.as_str();
        let drop = s.as_bytes().contains(&b'_')
            || METHOD_OVERRIDE_HEADERS.contains(&s)
            || (!trusted_peer
                && (s.starts_with("x-forwarded")
                    || CLIENT_IP_HEADERS.contains(&s)
                    || ORIGIN_OVERRIDE_HEADERS.contains(&s)));
        if drop {
            out.push(name.clone());
        }
    }
    out
}

/// A forwarding chain (`X-Forwarded-For`, `Forwarded`) to be extended with
/// this hop: the values already sent (as bytes, whatever they hold), each
/// followed by ", ", when the peer is a trusted proxy; empty otherwise (a
/// chain from an untrusted peer is replaced).
pub fn chain_start(headers: &HeaderMap, name: &str, trusted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    if trusted {
        for v in headers.get_all(name) {
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b", ");
        }
    }
    out
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
                || name.as_str() == "http2-settings"
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

/// Whether the request asks for an upgrade the gateway tunnels: a WebSocket
/// upgrade (`Upgrade: websocket` with `Connection: upgrade`). Any other
/// upgrade (`h2c`, a list of protocols) is not one the gateway performs: its
/// `Upgrade`, `Connection` and `HTTP2-Settings` are stripped and the request
/// is forwarded as a plain HTTP/1.1 request (RFC 9110 §7.8: a server may
/// ignore an upgrade).
///
/// Only in HTTP/1.1: an HTTP/1.0 request's `Upgrade` is ignored (RFC 9110
/// §7.8), and it is forwarded as a plain request; HTTP/2 has no `Upgrade`.
pub fn is_upgrade(headers: &HeaderMap, version: http::Version) -> bool {
    version == http::Version::HTTP_11
        && single(headers, header::UPGRADE.as_str())
            .is_some_and(|v| trim_ows(v.as_bytes()).eq_ignore_ascii_case(b"websocket"))
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"upgrade"))
        })
}

/// The `for=` node of RFC 7239: IPv6 is quoted and bracketed.
pub fn push_node(out: &mut Vec<u8>, ip: &crate::util::IpText) {
    let text = ip.as_str().as_bytes();
    if !ip.is_ipv6() {
        out.extend_from_slice(text);
    } else {
        out.extend_from_slice(b"\"[");
        out.extend_from_slice(text);
        out.extend_from_slice(b"]\"");
    }
}

/// Appends a quoted-string for RFC 7239 values that are not tokens.
pub fn push_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    for &c in s {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}
