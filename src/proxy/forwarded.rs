//! What the gateway believes about where a request comes from and what it
//! names (SPEC §3 `trusted_proxies`, §4): the client IP behind trusted
//! proxies, the request's host (`Host`, `:authority`, an absolute-form
//! target), the scheme, and the forwarding headers built from them —
//! `X-Forwarded-*`, `Forwarded`, and the hop-by-hop headers stripped in both
//! directions.
//!
//! Everything here reads header values as bytes: a byte that is not UTF-8 is
//! one more thing that is not an IP address or a host name, never a reason to
//! stop looking and fall back to the peer. The host is parsed, validated and
//! normalised once per request ([`Forwarding::from_request`]); routing, the
//! cache key and the forwarded `Host` / `X-Forwarded-Host` / `Forwarded: host=`
//! all use that one value.

mod authority;
mod client;
mod headers;

pub use authority::{parse_authority, target_authority, Authority, Forwarding};
pub use client::{client_ip, is_trusted, parse_node};
pub use headers::{
    chain_start, connection_listed, hop_by_hop, is_upgrade, push_node, push_quoted,
    spoofable_headers, CLIENT_IP_HEADERS, HOP_BY_HOP, METHOD_OVERRIDE_HEADERS,
    ORIGIN_OVERRIDE_HEADERS,
};

use http::header::{HeaderMap, HeaderValue};

/// A request refused with 400; the text is the problem's `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The only value of header `name`, when it appears exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// Whether `m` is a standard method written in another case (`post`, `Get`):
/// refused with 400 (SPEC §4), since some frameworks run it as the standard
/// method while routing, plugins and `methods` lists compare exactly.
pub fn is_miscased_method(m: &http::Method) -> bool {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    let s = m.as_str();
    s.len() <= 7
        && STANDARD
            .iter()
            .any(|std| *std != s && std.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests;

/// Property tests: whatever bytes a client (or a proxy in front) puts in
/// `X-Forwarded-For`, `Forwarded` and `Host`, the client is never a trusted
/// proxy's address by mistake, and no spelling of a host-scoped route's host
/// reaches another route.
#[cfg(test)]
mod properties;
