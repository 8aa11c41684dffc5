//! The client address (SPEC §3 `trusted_proxies`): the peer, or behind a
//! trusted proxy the address its `X-Forwarded-For` (or, without one, its
//! RFC 7239 `Forwarded`) names; and the `Forwarded` element parser that
//! the scheme and host kept from a trusted peer also read.

use http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

use super::{trim_ows, BadRequest};

/// Whether `ip` lies in one of the trusted networks.
pub fn is_trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// The client IP: the peer, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` entry (over every `X-Forwarded-For` line, the
/// last line's last entry first) that is not a trusted proxy. Empty list
/// elements are skipped; any other entry that is not an IP address (garbage,
/// a byte that is not UTF-8, a quoted string, `unknown`) refuses the request:
/// the walk never falls back to a trusted proxy's own address. An entry may
/// carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`) or brackets.
///
/// A trusted peer that sends no `X-Forwarded-For` names the client in its
/// `Forwarded` header's `for=` nodes, by the same rule (see
/// `client_from_forwarded`); without either, it is the client itself. A
/// chain that holds only trusted proxies names the leftmost of them; one that
/// is present but holds no entry at all is refused. Beside `X-Forwarded-For`,
/// `Forwarded` is not read: a load balancer that maintains only
/// `X-Forwarded-For` passes a client's `Forwarded` through untouched, so a
/// disagreement between the two says nothing about the client.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    nets: &[IpNet],
) -> Result<Option<IpAddr>, BadRequest> {
    let Some(peer) = peer.map(|p| p.to_canonical()) else {
        return Ok(None);
    };
    if nets.is_empty() || !is_trusted(peer, nets) {
        return Ok(Some(peer));
    }
    let mut last_trusted = None;
    let mut present = false;
    for v in headers.get_all("x-forwarded-for").iter().rev() {
        present = true;
        for part in v.as_bytes().rsplit(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() {
                continue;
            }
            match parse_node(part) {
                Some(ip) if is_trusted(ip, nets) => last_trusted = Some(ip),
                Some(ip) => return Ok(Some(ip)),
                None => {
                    return Err(BadRequest(
                        "the client's X-Forwarded-For entry is not an IP address",
                    ))
                }
            }
        }
    }
    match (present, last_trusted) {
        (_, Some(ip)) => Ok(Some(ip)),
        (false, None) => client_from_forwarded(peer, headers, nets),
        (true, None) => Err(BadRequest("X-Forwarded-For holds no address")),
    }
}

/// The client named by a trusted peer's `Forwarded` header (RFC 7239), read
/// only when it sends no `X-Forwarded-For`: the same rule as for
/// `X-Forwarded-For` over the elements' `for=` values (every `Forwarded` line,
/// left to right), the rightmost that is not a trusted proxy; one that is not
/// an IP address (`unknown`, an obfuscated `_name`, garbage, a byte that is
/// not UTF-8) or a malformed element in its place refuses the request.
/// Elements without `for=` are skipped; a header naming no node at all
/// leaves the peer as the client.
fn client_from_forwarded(
    peer: IpAddr,
    headers: &HeaderMap,
    nets: &[IpNet],
) -> Result<Option<IpAddr>, BadRequest> {
    // Left to right: the last entry that is not a trusted address decides
    // (`Some(None)`: not an address); when there is none, the leftmost
    // trusted one.
    let mut last_other: Option<Option<IpAddr>> = None;
    let mut leftmost_trusted = None;
    forwarded_elements(headers, |el| {
        if el.bad {
            last_other = Some(None);
            return;
        }
        let Some(node) = el.for_ else { return };
        match parse_forwarded_node(node) {
            Some(ip) if is_trusted(ip, nets) => {
                leftmost_trusted.get_or_insert(ip);
            }
            other => last_other = Some(other),
        }
    });
    match (last_other, leftmost_trusted) {
        (Some(Some(ip)), _) => Ok(Some(ip)),
        (Some(None), _) => Err(BadRequest(
            "the client's Forwarded for= node is not an IP address",
        )),
        (None, Some(ip)) => Ok(Some(ip)),
        (None, None) => Ok(Some(peer)),
    }
}

/// The parameters of one `Forwarded` element that the gateway reads, as sent
/// (a quoted string still quoted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct FwdElement<'a> {
    for_: Option<&'a [u8]>,
    pub(super) proto: Option<&'a [u8]>,
    pub(super) host: Option<&'a [u8]>,
    /// A syntax error (an unterminated quoted string, a pair without `=`, a
    /// value that is no token), or a parameter given twice.
    pub(super) bad: bool,
}

/// Calls `f` with each non-empty element of every `Forwarded` line, left to
/// right (RFC 7239 §4: `,`-separated elements of `;`-separated pairs,
/// parameter names in any case, values tokens or quoted strings). Lenient
/// where no ambiguity arises: whitespace around pairs, and `:`, `[`, `]` in
/// unquoted values (`for=[::1]:80`). A quoted string never ends at a `,`
/// or `;` inside it; one that is never closed makes the rest of its line one
/// bad element. Allocates nothing.
pub(super) fn forwarded_elements<'a>(headers: &'a HeaderMap, mut f: impl FnMut(FwdElement<'a>)) {
    for v in headers.get_all("forwarded") {
        let b = v.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if let Some(el) = forwarded_element(b, &mut i) {
                f(el);
            }
        }
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The end of the quoted string opening at `i` (after its closing quote), or
/// `None` when it is never closed.
fn quoted_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Moves `i` past the next `,` outside quoted strings (or to the end).
fn skip_element(b: &[u8], i: &mut usize) {
    while let Some(&c) = b.get(*i) {
        match c {
            b'"' => *i = quoted_end(b, *i).unwrap_or(b.len()),
            b',' => {
                *i += 1;
                return;
            }
            _ => *i += 1,
        }
    }
}

/// Parses the element starting at `*i` and moves `*i` past its `,`. `None`
/// for an empty element.
fn forwarded_element<'a>(b: &'a [u8], i: &mut usize) -> Option<FwdElement<'a>> {
    let mut el = FwdElement::default();
    let mut any = false;
    loop {
        *i = skip_ws(b, *i);
        let start = *i;
        while b.get(*i).is_some_and(|&c| is_tchar(c)) {
            *i += 1;
        }
        let name = b.get(start..*i).unwrap_or_default();
        if name.is_empty() {
            match b.get(*i) {
                None => return any.then_some(el),
                Some(b',') => {
                    *i += 1;
                    return any.then_some(el);
                }
                Some(_) => {
                    el.bad = true;
                    skip_element(b, i);
                    return Some(el);
                }
            }
        }
        any = true;
        if b.get(*i) != Some(&b'=') {
            el.bad = true;
            skip_element(b, i);
            return Some(el);
        }
        *i += 1;
        let vstart = *i;
        if b.get(*i) == Some(&b'"') {
            match quoted_end(b, *i) {
                Some(end) => *i = end,
                None => {
                    el.bad = true;
                    *i = b.len();
                    return Some(el);
                }
            }
        } else {
            while b
                .get(*i)
                .is_some_and(|&c| is_tchar(c) || matches!(c, b':' | b'[' | b']'))
            {
                *i += 1;
            }
            if *i == vstart {
                el.bad = true;
                skip_element(b, i);
                return Some(el);
            }
        }
        let value = b.get(vstart..*i).unwrap_or_default();
        let slot = if name.eq_ignore_ascii_case(b"for") {
            Some(&mut el.for_)
        } else if name.eq_ignore_ascii_case(b"proto") {
            Some(&mut el.proto)
        } else if name.eq_ignore_ascii_case(b"host") {
            Some(&mut el.host)
        } else {
            None
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                el.bad = true;
            }
            *slot = Some(value);
        }
        *i = skip_ws(b, *i);
        match b.get(*i) {
            None => return Some(el),
            Some(b';') => *i += 1,
            Some(b',') => {
                *i += 1;
                return Some(el);
            }
            Some(_) => {
                el.bad = true;
                skip_element(b, i);
                return Some(el);
            }
        }
    }
}

/// A `Forwarded` value without its quotes and escapes, in `buf`; `None` when
/// it does not fit.
pub(super) fn unquote<'b>(v: &'b [u8], buf: &'b mut [u8; 320]) -> Option<&'b [u8]> {
    let Some(inner) = v.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) else {
        return Some(v);
    };
    if !inner.contains(&b'\\') {
        return Some(inner);
    }
    let mut n = 0;
    let mut escaped = false;
    for &c in inner {
        if c == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        *buf.get_mut(n)? = c;
        n += 1;
    }
    buf.get(..n)
}

/// A `for=` node as an IP address: `192.0.2.1`, `"[2001:db8::1]"`, with an
/// optional port, numeric or obfuscated (`"[2001:db8::1]:_p1"`). `unknown`
/// and obfuscated identifiers (`_hidden`) name no address.
fn parse_forwarded_node(v: &[u8]) -> Option<IpAddr> {
    let mut buf = [0u8; 320];
    let node = unquote(v, &mut buf)?;
    // An obfuscated port says nothing about the address.
    let node = match node.iter().rposition(|&b| b == b':') {
        Some(colon)
            if node.get(colon + 1) == Some(&b'_')
                && node.get(colon + 2..).is_some_and(|p| {
                    p.iter()
                        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
                }) =>
        {
            node.get(..colon)?
        }
        _ => node,
    };
    parse_node(node)
}

/// One `X-Forwarded-For` entry as an IP address (canonical: an IPv4-mapped
/// IPv6 address is its IPv4 address): `192.0.2.1`, `2001:db8::1`,
/// `[2001:db8::1]`, optionally with a `:port` (IPv6 only when bracketed).
pub fn parse_node(b: &[u8]) -> Option<IpAddr> {
    // The longest IPv6 text with brackets and a port is 53 bytes.
    if b.len() > 64 {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        IpAddr::V6(inner.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        let (addr, port) = s.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(addr.parse().ok()?)
    };
    Some(ip.to_canonical())
}

fn is_port(p: &str) -> bool {
    (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
}
