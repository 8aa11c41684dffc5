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

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

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

/// A request refused with 400; the text is the problem's `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

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
struct FwdElement<'a> {
    for_: Option<&'a [u8]>,
    proto: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    /// A syntax error (an unterminated quoted string, a pair without `=`, a
    /// value that is no token), or a parameter given twice.
    bad: bool,
}

/// Calls `f` with each non-empty element of every `Forwarded` line, left to
/// right (RFC 7239 §4: `,`-separated elements of `;`-separated pairs,
/// parameter names in any case, values tokens or quoted strings). Lenient
/// where no ambiguity arises: whitespace around pairs, and `:`, `[`, `]` in
/// unquoted values (`for=[::1]:80`). A quoted string never ends at a `,`
/// or `;` inside it; one that is never closed makes the rest of its line one
/// bad element. Allocates nothing.
fn forwarded_elements<'a>(headers: &'a HeaderMap, mut f: impl FnMut(FwdElement<'a>)) {
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
fn unquote<'b>(v: &'b [u8], buf: &'b mut [u8; 320]) -> Option<&'b [u8]> {
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

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
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

/// The request's authority, normalised: the host lowercased, without a
/// trailing dot (an IPv6 literal in its canonical form, in brackets), and the
/// port when it is not the scheme's default. One value, used for routing, the
/// cache key and every forwarded header naming the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    value: HeaderValue,
    host_len: usize,
}

impl Authority {
    /// The host without the port: what routes match.
    pub fn host(&self) -> &str {
        self.as_str().get(..self.host_len).unwrap_or_default()
    }

    /// `host[:port]`.
    pub fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or_default()
    }

    /// `host[:port]`, ready to be sent as `Host` or `X-Forwarded-Host`.
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }
}

/// Longest host name (RFC 1035: 253 characters without the trailing dot).
const MAX_HOST: usize = 253;
const MAX_LABEL: usize = 63;

/// What [`check_authority`] found in valid authority bytes.
struct Checked {
    /// End of the host in the raw bytes (before a trailing dot or `:`).
    host_end: usize,
    /// An IPv6 literal (the host is `[...]`), with its address.
    v6: Option<Ipv6Addr>,
    /// The port, when one is kept (not empty, not the default).
    port: Option<u16>,
    /// The raw bytes are already the normal form.
    normal: bool,
}

/// Validates `host[:port]` (RFC 3986 `authority` without userinfo, host a DNS
/// name of letters, digits, `-` and `_`, or a bracketed IPv6 address) without
/// allocating. Refused: any other byte (`%`-escapes, `@`, non-ASCII), an empty
/// label (`a..b`, `.a`, a bare `.`), a label over 63 or a name over 253
/// characters, a port that is not 1 to 65535 in at most five digits (`:abc`,
/// `:80:80`), an empty host with a port. One trailing dot is removed; an empty
/// port (`a:`) and the scheme's default port are dropped.
fn check_authority(raw: &[u8], default_port: u16) -> Result<Checked, BadRequest> {
    const BAD_HOST: BadRequest = BadRequest("the request's host is malformed");
    const BAD_PORT: BadRequest = BadRequest("the request's host has an invalid port");
    let (host_end, v6, after_host, mut normal) = if raw.first() == Some(&b'[') {
        let close = raw.iter().position(|&b| b == b']').ok_or(BAD_HOST)?;
        let inner = raw.get(1..close).unwrap_or_default();
        if inner.len() > 45 {
            return Err(BAD_HOST);
        }
        let text = std::str::from_utf8(inner).map_err(|_| BAD_HOST)?;
        let addr: Ipv6Addr = text.parse().map_err(|_| BAD_HOST)?;
        if addr.to_ipv4_mapped().is_some() {
            // `[::ffff:127.0.0.9]`: an IPv4 address in another spelling.
            return Err(BAD_HOST);
        }
        let mut canon = StackStr::new();
        let _ = std::fmt::Write::write_fmt(&mut canon, format_args!("{addr}"));
        let normal = canon.as_bytes() == inner;
        (close + 1, Some(addr), close + 1, normal)
    } else {
        let mut normal = true;
        let mut label = 0usize;
        let mut end = raw.len();
        for (i, &b) in raw.iter().enumerate() {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
                b'A'..=b'Z' => {
                    normal = false;
                    label += 1;
                }
                b'.' => {
                    if label == 0 {
                        return Err(BAD_HOST);
                    }
                    label = 0;
                }
                b':' => {
                    end = i;
                    break;
                }
                _ => return Err(BAD_HOST),
            }
            if label > MAX_LABEL {
                return Err(BAD_HOST);
            }
        }
        let mut host_end = end;
        if end > 0 && label == 0 {
            // A trailing dot: removed, once (`a..` keeps an empty label).
            host_end = end - 1;
            normal = false;
            if host_end == 0 || raw.get(host_end - 1) == Some(&b'.') {
                return Err(BAD_HOST);
            }
        }
        if host_end > MAX_HOST {
            return Err(BAD_HOST);
        }
        if host_end == 0 {
            // `:80` — a port without a host.
            return Err(BAD_HOST);
        }
        let name = raw.get(..host_end).unwrap_or_default();
        if looks_numeric(name) && !is_dotted_quad(name) {
            // `0x7f.0.0.9`, `0177.0.0.9`, `127.9`, `2130706441`: an IPv4
            // address to inet_aton, another host to routing.
            return Err(BAD_HOST);
        }
        (host_end, None, end, normal)
    };
    let port = match raw.get(after_host..).unwrap_or_default() {
        [] => None,
        [b':', digits @ ..] => {
            if digits.is_empty() {
                normal = false;
                None
            } else {
                if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(BAD_PORT);
                }
                let n = digits
                    .iter()
                    .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
                let port = u16::try_from(n).ok().filter(|&p| p != 0).ok_or(BAD_PORT)?;
                if digits.first() == Some(&b'0') || port == default_port {
                    normal = false;
                }
                (port != default_port).then_some(port)
            }
        }
        _ => return Err(BAD_HOST),
    };
    Ok(Checked {
        host_end,
        v6,
        port,
        normal,
    })
}

/// Whether a host name is meant as an IPv4 address: its last label is all
/// digits or starts with `0x` (a DNS top-level domain is never numeric).
fn looks_numeric(name: &[u8]) -> bool {
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or_default();
    (!last.is_empty() && last.iter().all(u8::is_ascii_digit))
        || (last.len() >= 2 && last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case(b"0x")))
}

/// Whether `name` is an IPv4 address in canonical dotted-quad form: four
/// decimal parts of at most three digits, no leading zero, each at most 255.
fn is_dotted_quad(name: &[u8]) -> bool {
    let mut parts = 0;
    for part in name.split(|&b| b == b'.') {
        parts += 1;
        let ok = (1..=3).contains(&part.len())
            && part.iter().all(u8::is_ascii_digit)
            && !(part.len() > 1 && part.first() == Some(&b'0'))
            && part.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 255;
        if !ok || parts > 4 {
            return false;
        }
    }
    parts == 4
}

/// Parses the authority bytes `raw` (a `Host` value, `:authority`, or an
/// absolute-form target's authority). `Ok(None)` for an empty value (RFC 9112
/// §3.2: a request without an authority sends an empty `Host`). When `raw`
/// is already normal and `shared` holds it, that value is reused without
/// copying.
pub fn parse_authority(
    raw: &[u8],
    shared: Option<&HeaderValue>,
    https: bool,
) -> Result<Option<Authority>, BadRequest> {
    if raw.is_empty() {
        return Ok(None);
    }
    let c = check_authority(raw, if https { 443 } else { 80 })?;
    if c.normal {
        let value = match shared {
            Some(v) => v.clone(),
            None => HeaderValue::from_bytes(raw)
                .map_err(|_| BadRequest("the request's host is malformed"))?,
        };
        return Ok(Some(Authority {
            value,
            host_len: c.host_end,
        }));
    }
    use std::fmt::Write as _;
    let mut s = String::with_capacity(raw.len() + 8);
    match c.v6 {
        Some(addr) => {
            let _ = write!(s, "[{addr}]");
        }
        None => {
            for &b in raw.get(..c.host_end).unwrap_or_default() {
                s.push(char::from(b.to_ascii_lowercase()));
            }
        }
    }
    let host_len = s.len();
    if let Some(p) = c.port {
        let _ = write!(s, ":{p}");
    }
    let value =
        HeaderValue::from_str(&s).map_err(|_| BadRequest("the request's host is malformed"))?;
    Ok(Some(Authority { value, host_len }))
}

/// A small formatting buffer on the stack (an IPv6 address is at most 45
/// characters).
struct StackStr {
    buf: [u8; 48],
    len: usize,
}

impl StackStr {
    fn new() -> Self {
        StackStr {
            buf: [0; 48],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Per-request facts about the request's origin, computed once in
/// `request_filter` and used by routing, the cache key and the forwarding
/// headers.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// The peer is one of `trusted_proxies`.
    pub trusted_peer: bool,
    /// The scheme as forwarded: the trusted peer's `X-Forwarded-Proto` (or,
    /// without one, its `Forwarded: proto=`), the leftmost of a list, else
    /// that of the connection.
    pub https: bool,
    /// The trusted peer's `X-Forwarded-Host` (or, without one, its
    /// `Forwarded: host=`), the leftmost of a list, normalised; forwarded and
    /// keyed as it is.
    pub kept_host: Option<Authority>,
    /// The request's authority; `None` when the request names none (an
    /// HTTP/1.0 request without `Host`, an empty `Host`).
    pub authority: Option<Authority>,
}

impl Forwarding {
    /// Reads the request's authority from `Host` and the request target
    /// (`target`: an HTTP/2 `:authority` or an HTTP/1 absolute-form target's
    /// authority, see [`target_authority`]): several `Host` values, a
    /// malformed one, or a target authority that names another host than
    /// `Host` (after normalisation) are refused. From a trusted peer, a valid
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are kept.
    pub fn from_request(
        trusted_peer: bool,
        tls: bool,
        headers: &HeaderMap,
        target: Option<&[u8]>,
    ) -> Result<Forwarding, BadRequest> {
        let mut https = tls;
        let mut kept_host = None;
        if trusted_peer {
            if let Some(p) = kept_proto(headers) {
                https = p;
            }
            kept_host = kept_host_of(headers, https);
        }
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(BadRequest("the Host header appears more than once"));
        }
        let from_host = match host {
            Some(v) => parse_authority(v.as_bytes(), Some(v), https)?,
            None => None,
        };
        let authority = match target {
            Some(a) => {
                let from_target = parse_authority(a, None, https)?;
                if host.is_some() && from_host != from_target {
                    return Err(BadRequest(
                        "the Host header names another host than the request target",
                    ));
                }
                from_target
            }
            None => from_host,
        };
        Ok(Forwarding {
            trusted_peer,
            https,
            kept_host,
            authority,
        })
    }

    /// `http` or `https`, as forwarded in `X-Forwarded-Proto`.
    pub fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The host routes match: empty when the request names none.
    pub fn host(&self) -> &str {
        self.authority.as_ref().map_or("", Authority::host)
    }

    /// The value forwarded as `X-Forwarded-Host`.
    pub fn forwarded_host(&self) -> Option<&HeaderValue> {
        self.kept_host
            .as_ref()
            .or(self.authority.as_ref())
            .map(Authority::header_value)
    }
}

/// The authority the request target names: the URI's (HTTP/2 `:authority`),
/// else that of an HTTP/1 absolute-form target (`raw_path`, as received).
/// A target whose authority a parser could read in two ways is refused.
pub fn target_authority<'a>(
    uri: &'a http::Uri,
    raw_path: &'a [u8],
) -> Result<Option<&'a [u8]>, BadRequest> {
    use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
    if let Some(a) = uri.authority() {
        return Ok(Some(a.as_str().as_bytes()));
    }
    match raw_target_authority(raw_path) {
        RawTargetAuthority::None => Ok(None),
        RawTargetAuthority::Absolute { authority, .. } => Ok(Some(authority)),
        RawTargetAuthority::AmbiguousAuthority => {
            Err(BadRequest("the request target's authority is ambiguous"))
        }
    }
}

/// The only value of header `name`, when it appears exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

fn proto_of(p: &[u8]) -> Option<bool> {
    if p.eq_ignore_ascii_case(b"https") {
        Some(true)
    } else if p.eq_ignore_ascii_case(b"http") {
        Some(false)
    } else {
        None
    }
}

/// The elements of every line of header `name`, left to right, trimmed;
/// empty elements skipped.
fn list_elements<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// A trusted peer's scheme (`true`: https): its `X-Forwarded-Proto` when it
/// sends one, else the `proto=` of its `Forwarded`. A list (`https, http`,
/// or several lines) is the chain of proxies: the leftmost element is the
/// scheme the client used. Every element must be `http` or `https`, or
/// nothing is kept.
fn kept_proto(headers: &HeaderMap) -> Option<bool> {
    if headers.contains_key("x-forwarded-proto") {
        let mut first = None;
        for e in list_elements(headers, "x-forwarded-proto") {
            let p = proto_of(e)?;
            first.get_or_insert(p);
        }
        return first;
    }
    let mut first = None;
    let mut ok = true;
    forwarded_elements(headers, |el| {
        ok &= !el.bad;
        if let Some(v) = el.proto {
            let mut buf = [0u8; 320];
            match unquote(v, &mut buf).and_then(proto_of) {
                Some(p) => {
                    first.get_or_insert(p);
                }
                None => ok = false,
            }
        }
    });
    first.filter(|_| ok)
}

/// A trusted peer's original host, normalised: its `X-Forwarded-Host` when it
/// sends one, else the `host=` of its `Forwarded`. As for the scheme, the
/// leftmost element of a list is the original, and every element must be a
/// valid host, or nothing is kept. A single value already in normal form is
/// kept without copying.
fn kept_host_of(headers: &HeaderMap, https: bool) -> Option<Authority> {
    let default_port = if https { 443 } else { 80 };
    if headers.contains_key("x-forwarded-host") {
        let mut first: Option<&[u8]> = None;
        for e in list_elements(headers, "x-forwarded-host") {
            check_authority(e, default_port).ok()?;
            first.get_or_insert(e);
        }
        let first = first?;
        let shared = single(headers, "x-forwarded-host").filter(|v| v.as_bytes() == first);
        return parse_authority(first, shared, https).ok().flatten();
    }
    let mut first = None;
    let mut ok = true;
    forwarded_elements(headers, |el| {
        ok &= !el.bad;
        if let Some(v) = el.host {
            let mut buf = [0u8; 320];
            match unquote(v, &mut buf).map(|h| parse_authority(h, None, https)) {
                Some(Ok(Some(a))) => {
                    first.get_or_insert(a);
                }
                _ => ok = false,
            }
        }
    });
    first.filter(|_| ok)
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
pub fn push_node(out: &mut Vec<u8>, ip: IpAddr) {
    use std::io::Write as _;
    let _ = match ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "\"[{v6}]\""),
    };
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

    fn xff(lines: &[&[u8]]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append("x-forwarded-for", HeaderValue::from_bytes(l).unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    const LB: &str = "10.1.1.1";

    fn from_lb(lines: &[&[u8]]) -> Result<Option<IpAddr>, BadRequest> {
        client_ip(Some(ip(LB)), &xff(lines), &nets())
    }

    #[test]
    fn client_ip_rules() {
        let ext = ip("203.0.113.9");
        // Untrusted peer: XFF ignored.
        assert_eq!(
            client_ip(Some(ext), &xff(&[b"1.2.3.4"]), &nets()),
            Ok(Some(ext))
        );
        // Trusted peer: rightmost untrusted entry.
        assert_eq!(
            from_lb(&[b"1.2.3.4, 198.51.100.7, 10.2.2.2"]),
            Ok(Some(ip("198.51.100.7")))
        );
        // All trusted: the leftmost trusted one.
        assert_eq!(from_lb(&[b"10.3.3.3, 10.4.4.4"]), Ok(Some(ip("10.3.3.3"))));
        // No XFF: the trusted peer is the client.
        assert_eq!(from_lb(&[]), Ok(Some(ip(LB))));
        assert_eq!(client_ip(None, &xff(&[b"1.2.3.4"]), &nets()), Ok(None));
    }

    #[test]
    fn xff_is_read_as_bytes_and_garbage_is_refused_not_skipped() {
        // Non-UTF-8 left of the client's entry: never looked at.
        assert_eq!(from_lb(&[b"\xff, 6.6.6.6"]), Ok(Some(ip("6.6.6.6"))));
        assert_eq!(
            from_lb(&[b"\xff\xfe junk, 6.6.6.6, 10.0.0.7"]),
            Ok(Some(ip("6.6.6.6")))
        );
        // The client's entry is not an IP: 400, never the proxy.
        for bad in [
            &b"6.6.6.6, \xff"[..],
            b"junk",
            b"6.6.6.6, 10.0.0.2, unknown",
            b"\"6.6.6.6\"",
            b"6.6.6.6 7.7.7.7",
            b"6.6.6.6:abc",
            b"6.6.6.6:80:80",
            b"[6.6.6.6]",
            b"[::1",
            b"fe80::1%eth0",
            b"010.0.0.1",
            b"1.2.3",
            b"0x0a.0.0.1",
            b"_hidden",
            b"for=6.6.6.6",
        ] {
            assert!(
                from_lb(&[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A chain that is there but holds nothing.
        assert!(from_lb(&[b""]).is_err());
        assert!(from_lb(&[b" , ,"]).is_err());
    }

    #[test]
    fn xff_entries_with_ports_brackets_and_empty_elements() {
        assert_eq!(from_lb(&[b"6.6.6.6:4711"]), Ok(Some(ip("6.6.6.6"))));
        assert_eq!(
            from_lb(&[b"[2001:db8::1]:443"]),
            Ok(Some(ip("2001:db8::1")))
        );
        assert_eq!(from_lb(&[b"[2001:db8::1]"]), Ok(Some(ip("2001:db8::1"))));
        assert_eq!(from_lb(&[b"2001:db8::1"]), Ok(Some(ip("2001:db8::1"))));
        assert_eq!(from_lb(&[b" 6.6.6.6 ,, \t,"]), Ok(Some(ip("6.6.6.6"))));
        // Trusted entries written with ports or mapped into IPv6 are still trusted.
        assert_eq!(
            from_lb(&[b"6.6.6.6, 10.0.0.9:80, ::ffff:10.0.0.8, [::ffff:10.0.0.7]:1"]),
            Ok(Some(ip("6.6.6.6")))
        );
        // A mapped untrusted address is its IPv4 address.
        assert_eq!(from_lb(&[b"::ffff:6.6.6.6"]), Ok(Some(ip("6.6.6.6"))));
        // A mapped trusted peer is trusted.
        assert_eq!(
            client_ip(Some(ip("::ffff:10.1.1.1")), &xff(&[b"6.6.6.6"]), &nets()),
            Ok(Some(ip("6.6.6.6")))
        );
    }

    #[test]
    fn several_xff_lines_are_one_list_in_order() {
        assert_eq!(
            from_lb(&[b"1.1.1.1", b"6.6.6.6, 10.0.0.3", b"10.0.0.4"]),
            Ok(Some(ip("6.6.6.6")))
        );
        assert_eq!(from_lb(&[b"6.6.6.6", b"\xff"]).ok(), None);
        assert_eq!(from_lb(&[b"\xff", b"6.6.6.6"]), Ok(Some(ip("6.6.6.6"))));
        assert_eq!(from_lb(&[b"5.5.5.5", b""]), Ok(Some(ip("5.5.5.5"))));
    }

    fn auth(raw: &str, https: bool) -> Result<Option<String>, BadRequest> {
        parse_authority(raw.as_bytes(), None, https)
            .map(|a| a.map(|a| format!("{}|{}", a.host(), a.as_str())))
    }

    #[test]
    fn hosts_are_normalised() {
        let ok = |raw: &str, host: &str, full: &str| {
            assert_eq!(
                auth(raw, false),
                Ok(Some(format!("{host}|{full}"))),
                "{raw:?}"
            );
        };
        ok("api.example.com", "api.example.com", "api.example.com");
        ok("API.Example.COM", "api.example.com", "api.example.com");
        ok(
            "admin.example.com.",
            "admin.example.com",
            "admin.example.com",
        );
        ok(
            "Admin.Example.com.:8080",
            "admin.example.com",
            "admin.example.com:8080",
        );
        ok("a:8080", "a", "a:8080");
        ok("a:08080", "a", "a:8080");
        ok("a:80", "a", "a");
        ok("a:", "a", "a");
        ok("a:443", "a", "a:443");
        ok("127.0.0.1:9000", "127.0.0.1", "127.0.0.1:9000");
        ok("[::1]", "[::1]", "[::1]");
        ok("[0:0::1]:8443", "[::1]", "[::1]:8443");
        ok("[2001:DB8::A]", "[2001:db8::a]", "[2001:db8::a]");
        ok(
            "under_score.example",
            "under_score.example",
            "under_score.example",
        );
        assert_eq!(
            auth("a:443", true),
            Ok(Some("a|a".into())),
            "default https port"
        );
        assert_eq!(auth("", false), Ok(None));
        // Already normal: the shared value is reused.
        let v = HeaderValue::from_static("api.example.com:8443");
        let a = parse_authority(v.as_bytes(), Some(&v), false)
            .unwrap()
            .unwrap();
        assert_eq!(a.host(), "api.example.com");
        assert_eq!(a.header_value(), &v);
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}a", "abcdefghi.".repeat(26));
        for raw in [
            "admin.example.com:abc",
            "admin.example.com:80:80",
            "admin.example.com:-1",
            "admin.example.com:+80",
            "admin.example.com: 80",
            "admin.example.com:65536",
            "admin.example.com:0",
            "admin.example.com:123456",
            "admin%2eexample.com",
            "admin.example.com%2e",
            "%61dmin.example.com",
            "admin..example.com",
            ".admin.example.com",
            "admin.example.com..",
            ".",
            "..",
            ":80",
            "admin.example.com ",
            " admin.example.com",
            "admin.example.com\t",
            "user@admin.example.com",
            "admin.example.com/x",
            "admin.example.com\\",
            "admin.exämple.com",
            "admin.example.com#",
            "admin.example.com?",
            "*.example.com",
            "[::1",
            "[::1]x",
            "[::1]:abc",
            "[fe80::1%25eth0]",
            "[v1.abc]",
            "[1.2.3.4]",
            "::1",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(
                auth(raw, false).is_err(),
                "{raw:?} -> {:?}",
                auth(raw, false)
            );
        }
        assert!(parse_authority(b"admin.example.com\xff", None, false).is_err());
        assert!(parse_authority(b"\xc3\xa9", None, false).is_err());
    }

    fn request(host: &[&str], uri: &str) -> (HeaderMap, http::Uri) {
        let mut m = HeaderMap::new();
        for h in host {
            m.append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        (m, uri.parse().unwrap())
    }

    fn target(u: &http::Uri) -> Option<&[u8]> {
        u.authority().map(|a| a.as_str().as_bytes())
    }

    #[test]
    fn the_target_authority_comes_from_the_uri_or_the_raw_absolute_form() {
        let origin: http::Uri = "/x".parse().unwrap();
        assert_eq!(target_authority(&origin, b"/x"), Ok(None));
        assert_eq!(
            target_authority(&origin, b"http://Admin.example.com./x"),
            Ok(Some(&b"Admin.example.com."[..]))
        );
        assert!(target_authority(&origin, b"http:admin.example.com/x").is_err());
        assert!(target_authority(&origin, b"http://admin.example.com\\@x/").is_err());
        let h2: http::Uri = "https://a.example/x".parse().unwrap();
        assert_eq!(target_authority(&h2, b"/x"), Ok(Some(&b"a.example"[..])));
    }

    #[test]
    fn the_target_authority_and_host_must_agree() {
        let f = |host: &[&str], uri: &str| {
            let (m, u) = request(host, uri);
            Forwarding::from_request(false, false, &m, target(&u)).map(|f| f.host().to_string())
        };
        assert_eq!(
            f(&["Admin.example.com."], "/x"),
            Ok("admin.example.com".into())
        );
        assert_eq!(f(&[], "/x"), Ok(String::new()));
        assert_eq!(f(&[""], "/x"), Ok(String::new()));
        // HTTP/2 :authority (or an absolute-form target) without Host.
        assert_eq!(
            f(&[], "http://API.example.com./x"),
            Ok("api.example.com".into())
        );
        // Both, naming the same host once normalised.
        assert_eq!(
            f(&["api.example.com:80"], "http://api.example.com/x"),
            Ok("api.example.com".into())
        );
        assert!(f(&["public.example.com"], "http://admin.example.com/x").is_err());
        assert!(f(&["admin.example.com:8080"], "http://admin.example.com/x").is_err());
        assert!(f(&[""], "http://admin.example.com/x").is_err());
        assert!(f(&["a", "b"], "/x").is_err());
        assert!(f(&["a", "a"], "/x").is_err());
        assert!(f(&["a"], "http://user@a/x").is_err());
    }

    #[test]
    fn a_trusted_peers_proto_and_host_are_kept() {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_static("internal:8080"));
        m.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        m.insert(
            "x-forwarded-host",
            HeaderValue::from_static("Shop.example.com"),
        );
        let u = None;
        let f = Forwarding::from_request(true, false, &m, u).unwrap();
        assert_eq!(f.proto(), "https");
        assert_eq!(f.forwarded_host().unwrap(), "shop.example.com");
        assert_eq!(f.host(), "internal");
        let f = Forwarding::from_request(false, false, &m, u).unwrap();
        assert_eq!(f.proto(), "http");
        assert_eq!(f.forwarded_host().unwrap(), "internal:8080");
        // Garbage from a trusted peer is replaced, not kept.
        m.insert("x-forwarded-proto", HeaderValue::from_static("javascript"));
        m.insert("x-forwarded-host", HeaderValue::from_static("a b"));
        let f = Forwarding::from_request(true, true, &m, u).unwrap();
        assert_eq!(f.proto(), "https");
        assert_eq!(f.forwarded_host().unwrap(), "internal:8080");
    }

    fn fwd(lines: &[&[u8]]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append("forwarded", HeaderValue::from_bytes(l).unwrap());
        }
        m
    }

    fn fwd_from_lb(lines: &[&[u8]]) -> Result<Option<IpAddr>, BadRequest> {
        client_ip(Some(ip(LB)), &fwd(lines), &nets())
    }

    #[test]
    fn a_trusted_peers_forwarded_names_the_client_when_it_sends_no_xff() {
        for (sent, client) in [
            (&[&b"for=6.6.6.6"[..]][..], "6.6.6.6"),
            (&[b"For=6.6.6.6;proto=https"], "6.6.6.6"),
            (&[b"FOR=\"6.6.6.6:4711\""], "6.6.6.6"),
            (&[b"for=\"[2001:db8::1]\""], "2001:db8::1"),
            (&[b"for=\"[2001:db8::1]:443\";by=10.0.0.1"], "2001:db8::1"),
            (&[b"for=\"[2001:db8::1]:_p1\""], "2001:db8::1"),
            (&[b"for=\"\\6.6.6.6\""], "6.6.6.6"),
            (
                &[b"for=1.1.1.1, for=6.6.6.6;host=\"a,b;c\", for=10.0.0.5"],
                "6.6.6.6",
            ),
            (
                &[b"for=1.1.1.1", b"for=6.6.6.6", b"for=10.0.0.5"],
                "6.6.6.6",
            ),
            (&[b"proto=https;for=6.6.6.6 , , for=10.2.2.2"], "6.6.6.6"),
            // Garbage left of the client's element is never looked at.
            (&[b"for=\"\xff\", for=6.6.6.6"], "6.6.6.6"),
            (&[b"\xff junk;;=, for=6.6.6.6"], "6.6.6.6"),
            // Only trusted nodes: the leftmost.
            (&[b"for=10.3.3.3, for=10.4.4.4"], "10.3.3.3"),
            // No node named: the peer is the client.
            (&[b"proto=https"], LB),
            (&[b""], LB),
            (&[b"for=6.6.6.6, proto=https"], "6.6.6.6"),
        ] {
            assert_eq!(
                fwd_from_lb(sent),
                Ok(Some(ip(client))),
                "{:?}",
                sent.iter()
                    .map(|l| String::from_utf8_lossy(l))
                    .collect::<Vec<_>>()
            );
        }
        // Never from an untrusted peer.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &fwd(&[b"for=6.6.6.6"]), &nets()),
            Ok(Some(ip("203.0.113.9")))
        );
    }

    #[test]
    fn a_forwarded_client_node_that_is_no_address_is_refused() {
        for bad in [
            &b"for=\"\xff\""[..],
            b"for=\xff",
            b"for=unknown",
            b"for=UNKNOWN",
            b"for=\"unknown\"",
            b"for=_hidden",
            b"for=\"_hidden:80\"",
            b"for=6.6.6.6, for=unknown",
            b"for=6.6.6.6, for=_x, for=10.0.0.2",
            b"for=junk",
            b"for=\"6.6.6.6 7.7.7.7\"",
            b"for=6.6.6.6 7.7.7.7",
            b"for=0x7f.0.0.1",
            b"for=127.1",
            b"for=\"[6.6.6.6]\"",
            b"for=",
            b"for=\"\"",
            b"for=6.6.6.6;for=7.7.7.7",
            b"for=\"6.6.6.6",
            b"for=6.6.6.6, \"",
            b"for=6.6.6.6, junk",
            b"for=6.6.6.6, =x",
            b"for=6.6.6.6, for=10.0.0.9;x",
        ] {
            assert!(
                fwd_from_lb(&[bad]).is_err(),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                fwd_from_lb(&[bad])
            );
        }
    }

    #[test]
    fn xff_wins_over_forwarded() {
        let mut m = xff(&[b"7.7.7.7"]);
        m.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        assert_eq!(
            client_ip(Some(ip(LB)), &m, &nets()),
            Ok(Some(ip("7.7.7.7")))
        );
        m.insert("forwarded", HeaderValue::from_static("for=unknown"));
        assert_eq!(
            client_ip(Some(ip(LB)), &m, &nets()),
            Ok(Some(ip("7.7.7.7")))
        );
    }

    #[test]
    fn numeric_hosts_must_be_canonical_dotted_quads() {
        for ok in [
            "127.0.0.9",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1:8080",
            "127.0.0.9.",
        ] {
            assert!(auth(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "0x7f.0.0.9",
            "0X7F.0.0.9",
            "0177.0.0.9",
            "127.0.0.011",
            "127.0.9",
            "127.9",
            "0x7f000009",
            "2130706441",
            "2130706441:80",
            "127.000.000.009",
            "127.0.0.256",
            "127.0.0.9.9",
            "1.2.3.4.5",
            "a.b.0x1",
            "example.123",
            "127.0.0.0x9",
            "[::ffff:127.0.0.9]",
            "[::ffff:7f00:9]",
        ] {
            assert!(auth(bad, false).is_err(), "{bad} -> {:?}", auth(bad, false));
        }
        // A digit-led label elsewhere is a DNS name like any other.
        assert!(auth("123.example.com", false).is_ok());
        assert!(auth("0x.example.com", false).is_ok());
    }

    #[test]
    fn a_trusted_peers_proto_and_host_lists_keep_the_original() {
        fn host(lines: &[(&'static str, &[u8])]) -> (&'static str, String) {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static("internal"));
            for (n, v) in lines {
                m.append(*n, HeaderValue::from_bytes(v).unwrap());
            }
            let f = Forwarding::from_request(true, false, &m, None).unwrap();
            (
                f.proto(),
                f.forwarded_host().unwrap().to_str().unwrap().to_string(),
            )
        }
        let p = |v: &[u8]| host(&[("x-forwarded-proto", v)]).0;
        assert_eq!(p(b"https, https"), "https");
        assert_eq!(p(b"https, http"), "https");
        assert_eq!(p(b"http, https"), "http");
        assert_eq!(p(b" HTTPS ,, http"), "https");
        assert_eq!(
            host(&[
                ("x-forwarded-proto", b"https"),
                ("x-forwarded-proto", b"http")
            ])
            .0,
            "https"
        );
        // Any invalid element: the connection's scheme.
        assert_eq!(p(b"https, javascript"), "http");
        assert_eq!(p(b"https \xff"), "http");
        assert_eq!(p(b","), "http");
        // From Forwarded when there is no X-Forwarded-Proto.
        let f = |v: &[u8]| host(&[("forwarded", v)]);
        assert_eq!(f(b"proto=https").0, "https");
        assert_eq!(
            f(b"for=6.6.6.6;Proto=\"HTTPS\", for=10.0.0.1;proto=http").0,
            "https"
        );
        assert_eq!(f(b"proto=https, proto=gopher").0, "http");
        assert_eq!(f(b"proto=https, \"").0, "http");
        assert_eq!(
            host(&[
                ("x-forwarded-proto", b"http"),
                ("forwarded", b"proto=https")
            ])
            .0,
            "http"
        );
        // Hosts.
        let h = |v: &[u8]| host(&[("x-forwarded-host", v)]).1;
        assert_eq!(h(b"api.example.com, lb.internal"), "api.example.com");
        assert_eq!(
            h(b"API.example.com.:80 , lb.internal:8080"),
            "api.example.com"
        );
        assert_eq!(h(b"api.example.com, lb/../x"), "internal");
        assert_eq!(h(b"api.example.com, 0x7f.1"), "internal");
        assert_eq!(
            host(&[
                ("x-forwarded-host", b"a.example"),
                ("x-forwarded-host", b"b.example")
            ])
            .1,
            "a.example"
        );
        assert_eq!(f(b"host=api.example.com").1, "api.example.com");
        assert_eq!(
            f(b"for=1.2.3.4;host=\"API.example.com:8443\", host=lb.internal").1,
            "api.example.com:8443"
        );
        assert_eq!(f(b"host=\"a b\"").1, "internal");
        assert_eq!(
            host(&[
                ("x-forwarded-host", b"x.example"),
                ("forwarded", b"host=y.example")
            ])
            .1,
            "x.example"
        );
        // The default port follows the kept scheme.
        assert_eq!(
            host(&[("forwarded", b"proto=https;host=\"api.example.com:443\"")]).1,
            "api.example.com"
        );
    }

    #[test]
    fn spoofable_headers_by_trust() {
        let mut m = HeaderMap::new();
        for n in [
            "host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-for",
            "x-forwarded",
            "x-original-url",
            "x-host",
            "cf-connecting-ip",
            "x-real_ip",
            "x_forwarded_for",
            "x-http-method-override",
            "x-method-override",
            "x-custom",
            "accept",
        ] {
            m.insert(HeaderName::from_static(n), HeaderValue::from_static("1"));
        }
        let names = |trusted| {
            let mut v: Vec<String> = spoofable_headers(&m, trusted)
                .iter()
                .map(|n| n.as_str().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(true),
            [
                "x-http-method-override",
                "x-method-override",
                "x-real_ip",
                "x_forwarded_for"
            ]
        );
        let untrusted = names(false);
        for n in ["host", "x-custom", "accept"] {
            assert!(!untrusted.iter().any(|u| u == n), "{n}");
        }
        assert_eq!(untrusted.len(), 11, "{untrusted:?}");
        m.clear();
        m.insert("accept", HeaderValue::from_static("1"));
        assert!(spoofable_headers(&m, false).is_empty());
    }

    #[test]
    fn miscased_standard_methods() {
        for m in [
            "post", "Post", "pOST", "get", "Get", "dElEtE", "patch", "options", "head", "Trace",
            "connect", "put",
        ] {
            let m = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert!(is_miscased_method(&m), "{m}");
        }
        for m in [
            "GET", "POST", "DELETE", "PATCH", "PROPFIND", "FOO", "M-SEARCH", "propfind", "posts",
            "GETS",
        ] {
            let m = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert!(!is_miscased_method(&m), "{m}");
        }
    }

    #[test]
    fn only_websocket_upgrades_are_tunnelled() {
        let mut m = HeaderMap::new();
        m.insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
        m.insert("upgrade", "h2c".parse().unwrap());
        m.insert(
            "http2-settings",
            "AAMAAABkAARAAAAAAAIAAAAA".parse().unwrap(),
        );
        assert!(!is_upgrade(&m, http::Version::HTTP_11));
        let stripped = hop_by_hop(&m, is_upgrade(&m, http::Version::HTTP_11));
        for n in ["connection", "upgrade", "http2-settings"] {
            assert!(stripped.iter().any(|s| s == n), "{n}: {stripped:?}");
        }
        // HTTP2-Settings is hop-by-hop even when Connection does not list it.
        m.insert("connection", "upgrade".parse().unwrap());
        assert!(hop_by_hop(&m, false).iter().any(|s| s == "http2-settings"));
        m.insert("upgrade", "websocket, h2c".parse().unwrap());
        assert!(!is_upgrade(&m, http::Version::HTTP_11));
        m.insert("upgrade", "WebSocket".parse().unwrap());
        assert!(is_upgrade(&m, http::Version::HTTP_11));
        m.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade(&m, http::Version::HTTP_11));
        m.remove("connection");
        assert!(!is_upgrade(&m, http::Version::HTTP_11));
        // HTTP/1.0 has no upgrade (RFC 9110 §7.8): both headers are stripped.
        m.insert("connection", "Upgrade".parse().unwrap());
        assert!(is_upgrade(&m, http::Version::HTTP_11));
        assert!(!is_upgrade(&m, http::Version::HTTP_10));
        assert!(!is_upgrade(&m, http::Version::HTTP_2));
        let stripped = hop_by_hop(&m, is_upgrade(&m, http::Version::HTTP_10));
        for n in ["connection", "upgrade"] {
            assert!(stripped.iter().any(|s| s == n), "{n}: {stripped:?}");
        }
    }

    #[test]
    fn forwarded_values() {
        let mut out = Vec::new();
        push_node(&mut out, "::1".parse().unwrap());
        out.push(b' ');
        push_node(&mut out, "192.0.2.1".parse().unwrap());
        out.push(b' ');
        push_quoted(&mut out, br#"api "x" \ y"#);
        assert_eq!(out, br#""[::1]" 192.0.2.1 "api \"x\" \\ y""#);
    }

    #[test]
    fn forwarding_chains_keep_bytes_from_trusted_peers_only() {
        let m = xff(&[b"\xff", b"1.2.3.4"]);
        assert_eq!(chain_start(&m, "x-forwarded-for", true), b"\xff, 1.2.3.4, ");
        assert!(chain_start(&m, "x-forwarded-for", false).is_empty());
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
        assert!(is_upgrade(&m, http::Version::HTTP_11));
    }
}

/// Property tests: whatever bytes a client (or a proxy in front) puts in
/// `X-Forwarded-For`, `Forwarded` and `Host`, the client is never a trusted
/// proxy's address by mistake, and no spelling of a host-scoped route's host
/// reaches another route.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::runtime::router::{RequestInfo, RouteDef, RouteMatch, Router};
    use proptest::prelude::*;

    fn nets() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]
    }

    /// Bytes a header value may hold (what Pingora's parser lets through:
    /// no CR, LF, NUL or other controls but HTAB).
    fn value_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            (0x20u8..=0x7e),
            (0x80u8..=0xff),
            Just(b'\t'),
            Just(b','),
            Just(b' '),
            Just(b'['),
            Just(b']'),
            Just(b':'),
            Just(b'.'),
        ]
    }

    /// One XFF element: an address (trusted or not, in any spelling the
    /// parser accepts), or arbitrary bytes, or nothing.
    fn xff_entry() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string().into_bytes()),
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| format!("10.{a}.{b}.1").into_bytes()),
            (any::<u8>(), any::<u16>()).prop_map(|(a, p)| format!("10.0.{a}.2:{p}").into_bytes()),
            any::<u16>().prop_map(|a| format!("::ffff:10.9.{}.{}", a >> 8, a & 0xff).into_bytes()),
            any::<u16>().prop_map(|a| format!("[fd00::{a:x}]:80").into_bytes()),
            any::<[u16; 8]>().prop_map(|s| format!("[{}]", Ipv6Addr::from(s)).into_bytes()),
            Just(b"10.1.1.1".to_vec()),
            Just(Vec::new()),
            proptest::collection::vec(value_byte(), 0..24),
        ]
    }

    /// A list of XFF header lines, each a list of entries with optional
    /// whitespace.
    fn xff_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(
            proptest::collection::vec((xff_entry(), 0u8..3), 0..6).prop_map(|entries| {
                let mut line = Vec::new();
                for (i, (e, ws)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    line.extend(std::iter::repeat_n(b' ', usize::from(ws)));
                    line.extend(e);
                }
                line
            }),
            0..4,
        )
    }

    fn headers(lines: &[Vec<u8>]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            if let Ok(v) = HeaderValue::from_bytes(l) {
                m.append("x-forwarded-for", v);
            }
        }
        m
    }

    /// The entries of the chain, rightmost first (a straightforward reading
    /// to check the walk against).
    fn entries_rev(m: &HeaderMap) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for v in m.get_all("x-forwarded-for") {
            for e in v.as_bytes().split(|&b| b == b',') {
                let t: Vec<u8> = trim_ows(e).to_vec();
                if !t.is_empty() {
                    all.push(t);
                }
            }
        }
        all.reverse();
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever the client sent, a trusted proxy that appends the
        /// address it saw makes that address the client.
        #[test]
        fn the_address_a_trusted_proxy_appends_is_the_client(
            sent in xff_lines(),
            client in any::<[u8; 4]>().prop_filter("untrusted", |o| o[0] != 10 && !(o[0] == 192 && o[1] == 168)),
            lb_line in any::<bool>(),
        ) {
            let client = IpAddr::V4(client.into());
            let mut m = headers(&sent);
            if lb_line || m.is_empty() {
                m.append("x-forwarded-for", HeaderValue::from_str(&client.to_string()).unwrap());
            } else {
                // The proxy appends to the last line it received.
                let mut last: Vec<Vec<u8>> = m.get_all("x-forwarded-for").iter().map(|v| v.as_bytes().to_vec()).collect();
                let tail = last.pop().unwrap_or_default();
                m.remove("x-forwarded-for");
                for l in last {
                    m.append("x-forwarded-for", HeaderValue::from_bytes(&l).unwrap());
                }
                let mut tail = tail;
                tail.extend_from_slice(format!(", {client}").as_bytes());
                m.append("x-forwarded-for", HeaderValue::from_bytes(&tail).unwrap());
            }
            // The load balancer in front may itself sit behind trusted hops.
            prop_assert_eq!(client_ip(Some("10.1.1.1".parse().unwrap()), &m, &nets()), Ok(Some(client)));
        }

        /// Arbitrary chains from a trusted peer: the answer is a 400, or the
        /// rightmost untrusted entry, or — only when every entry is a trusted
        /// address — the leftmost of them. Never the peer when a chain was sent.
        #[test]
        fn a_chain_never_yields_a_trusted_address_by_mistake(sent in xff_lines()) {
            let peer: IpAddr = "10.200.0.1".parse().unwrap();
            let m = headers(&sent);
            let got = client_ip(Some(peer), &m, &nets());
            let entries = entries_rev(&m);
            let parsed: Vec<Option<IpAddr>> = entries.iter().map(|e| parse_node(e)).collect();
            let first_untrusted = parsed.iter().position(|p| !p.is_some_and(|ip| is_trusted(ip, &nets())));
            match got {
                Ok(Some(ip)) if is_trusted(ip, &nets()) => {
                    prop_assert!(first_untrusted.is_none(), "trusted {ip} from {entries:?}");
                    if m.contains_key("x-forwarded-for") {
                        prop_assert_eq!(Some(Some(ip)), parsed.last().copied());
                    } else {
                        prop_assert_eq!(ip, peer);
                    }
                }
                Ok(Some(ip)) => {
                    let i = first_untrusted.expect("an untrusted client");
                    prop_assert_eq!(parsed[i], Some(ip));
                }
                Ok(None) => prop_assert!(false, "no client for a peer"),
                Err(_) => {
                    prop_assert!(match first_untrusted {
                        Some(i) => parsed[i].is_none(),
                        None => entries.is_empty() && m.contains_key("x-forwarded-for"),
                    }, "refused {entries:?}");
                }
            }
        }

        /// An untrusted peer is the client, whatever it sends.
        #[test]
        fn an_untrusted_peer_is_always_the_client(sent in xff_lines(), peer in any::<[u8; 4]>().prop_filter("untrusted", |o| o[0] != 10 && !(o[0] == 192 && o[1] == 168))) {
            let peer = IpAddr::V4(peer.into());
            prop_assert_eq!(client_ip(Some(peer), &headers(&sent), &nets()), Ok(Some(peer)));
        }
    }

    /// Pieces hosts are made of, chosen to hit the parser's edges.
    fn host_piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"admin".to_vec()),
            Just(b"ADMIN".to_vec()),
            Just(b"Admin".to_vec()),
            Just(b"example".to_vec()),
            Just(b"com".to_vec()),
            Just(b"public".to_vec()),
            Just(b".".to_vec()),
            Just(b".".to_vec()),
            Just(b":".to_vec()),
            Just(b"80".to_vec()),
            Just(b"443".to_vec()),
            Just(b"0".to_vec()),
            Just(b"abc".to_vec()),
            Just(b"%2e".to_vec()),
            Just(b"%2E".to_vec()),
            Just(b"%61".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b"::1".to_vec()),
            Just(b"@".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"\xff".to_vec()),
            Just("é".as_bytes().to_vec()),
            Just(b"_".to_vec()),
            Just(b"-".to_vec()),
            Just(b"*".to_vec()),
            proptest::collection::vec(value_byte(), 0..4),
        ]
    }

    /// Spellings of `admin.example.com` an upstream may read as that host.
    fn admin_variant() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(any::<bool>(), 17),
            0usize..3,
            prop_oneof![
                Just(String::new()),
                Just(":".to_string()),
                any::<u16>().prop_map(|p| format!(":{p}")),
                Just(":abc".to_string()),
                Just(":80:80".to_string()),
                Just(":080".to_string()),
                Just(": 80".to_string()),
            ],
            prop_oneof![Just(""), Just("%2e"), Just(" "), Just("\t")],
        )
            .prop_map(|(case, dots, port, tail)| {
                let mut h: Vec<u8> = b"admin.example.com"
                    .iter()
                    .zip(case)
                    .map(|(&b, up)| if up { b.to_ascii_uppercase() } else { b })
                    .collect();
                h.extend(std::iter::repeat_n(b'.', dots));
                h.extend_from_slice(tail.as_bytes());
                h.extend_from_slice(port.as_bytes());
                h
            })
    }

    fn host_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            admin_variant(),
            proptest::collection::vec(host_piece(), 0..8).prop_map(|p| p.concat()),
            proptest::collection::vec(any::<u8>(), 0..16),
        ]
    }

    /// How a lenient upstream (or a human) reads a Host value: lowercased,
    /// `%`-escapes decoded, whitespace trimmed, port and trailing dots dropped.
    fn lenient_host(raw: &[u8]) -> Vec<u8> {
        let decoded: Vec<u8> = percent_encoding::percent_decode(raw).collect();
        let mut s = trim_ows(&decoded).to_ascii_lowercase();
        if let Some(colon) = s.iter().position(|&b| b == b':') {
            s.truncate(colon);
        }
        let mut s = trim_ows(&s).to_vec();
        while s.last() == Some(&b'.') {
            s.pop();
        }
        s
    }

    fn router() -> Router {
        Router::new(&[
            RouteDef {
                hosts: vec!["admin.example.com".into()],
                path: "/".into(),
                ..RouteDef::default()
            },
            RouteDef {
                hosts: vec!["*.example.com".into()],
                path: "/".into(),
                ..RouteDef::default()
            },
            RouteDef {
                path: "/".into(),
                ..RouteDef::default()
            },
        ])
        .unwrap()
    }

    fn route_of(router: &Router, host: &str) -> usize {
        let m = HeaderMap::new();
        match router.find(&RequestInfo {
            host,
            path: "/",
            method: &http::Method::GET,
            headers: &m,
            version: None,
        }) {
            RouteMatch::Found { route, .. } => route,
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        /// Any bytes as `Host` (or `:authority`): refused, or normalised to a
        /// form that parses to itself; and a value a lenient reader takes for
        /// `admin.example.com` is refused or routed to its route, never to
        /// the catch-all.
        #[test]
        fn no_spelling_of_a_host_routes_around_its_route(raw in host_bytes(), https in any::<bool>()) {
            let router = router();
            let shared = HeaderValue::from_bytes(&raw).ok();
            match parse_authority(&raw, shared.as_ref(), https) {
                Err(_) => {}
                Ok(None) => prop_assert!(raw.is_empty()),
                Ok(Some(a)) => {
                    let host = a.host();
                    prop_assert!(!host.is_empty());
                    prop_assert!(!host.ends_with('.'), "{host}");
                    prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "{host}");
                    prop_assert!(host.starts_with('[') || !host.contains(':'), "{host}");
                    // Idempotent: the normal form is its own normal form.
                    let again = parse_authority(a.as_str().as_bytes(), None, https).unwrap().unwrap();
                    prop_assert_eq!(&again, &a);
                    let route = route_of(&router, host);
                    if lenient_host(&raw) == b"admin.example.com" {
                        prop_assert_eq!(route, 0, "{:?} -> {}", String::from_utf8_lossy(&raw), host);
                    }
                    if lenient_host(&raw).ends_with(b".example.com") {
                        prop_assert!(route <= 1, "{:?} -> {}", String::from_utf8_lossy(&raw), host);
                    }
                }
            }
        }

        /// Host and the request target must name one host: a request never
        /// routes by one and forwards the other.
        #[test]
        fn host_and_target_authority_never_disagree(host in host_bytes(), target in host_bytes()) {
            let Ok(target_s) = std::str::from_utf8(&target) else { return Ok(()) };
            let Ok(uri) = format!("http://{target_s}/x").parse::<http::Uri>() else { return Ok(()) };
            let Ok(hv) = HeaderValue::from_bytes(&host) else { return Ok(()) };
            let mut m = HeaderMap::new();
            m.insert(header::HOST, hv);
            if let Ok(f) = Forwarding::from_request(false, false, &m, uri.authority().map(|a| a.as_str().as_bytes())) {
                let from_host = parse_authority(&host, None, false).unwrap();
                prop_assert_eq!(f.authority.as_ref(), from_host.as_ref());
                let from_target = parse_authority(uri.authority().unwrap().as_str().as_bytes(), None, false).unwrap();
                prop_assert_eq!(f.authority, from_target);
            }
        }
    }

    /// Beside an `X-Forwarded-For`, arbitrary `Forwarded` bytes play no part
    /// in choosing the client (SPEC §3 names `X-Forwarded-For`).
    #[test]
    fn beside_xff_forwarded_bytes_do_not_pick_the_client() {
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&proptest::collection::vec(value_byte(), 0..64), |fwd| {
                let mut m = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&fwd) {
                    m.insert("forwarded", v);
                }
                let lb: IpAddr = "10.1.1.1".parse().unwrap();
                m.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
                prop_assert_eq!(
                    client_ip(Some(lb), &m, &nets()),
                    Ok(Some("6.6.6.6".parse().unwrap()))
                );
                Ok(())
            })
            .unwrap();
    }

    /// A `for=` value: addresses (trusted or not, in the spellings RFC 7239
    /// allows), and nodes that name no address.
    fn for_value() -> impl Strategy<Value = (Vec<u8>, Option<IpAddr>)> {
        let addr = |s: &str, ip: &str| (s.as_bytes().to_vec(), Some(ip.parse::<IpAddr>().unwrap()));
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| {
                let ip = std::net::Ipv4Addr::from(o);
                (ip.to_string().into_bytes(), Some(IpAddr::V4(ip)))
            }),
            any::<[u16; 8]>().prop_map(|s| {
                let ip = Ipv6Addr::from(s);
                (
                    format!("\"[{ip}]:443\"").into_bytes(),
                    Some(IpAddr::V6(ip).to_canonical()),
                )
            }),
            Just(addr("10.1.2.3", "10.1.2.3")),
            Just(addr("\"10.9.9.9:80\"", "10.9.9.9")),
            Just(addr("\"[fd00::1]\"", "fd00::1")),
            Just(addr("6.6.6.6", "6.6.6.6")),
            Just((b"unknown".to_vec(), None)),
            Just((b"_hidden".to_vec(), None)),
            Just((b"\"\xff\"".to_vec(), None)),
            Just((b"\"_x:_y\"".to_vec(), None)),
            Just((b"junk".to_vec(), None)),
            Just((b"0x7f.1".to_vec(), None)),
        ]
    }

    /// Well-formed `Forwarded` lines, with what each element's `for=` names
    /// (`None`: no `for=`; `Some(None)`: a node that is no address).
    #[allow(clippy::type_complexity)]
    fn forwarded_lines() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<Option<Option<IpAddr>>>)> {
        let element = (
            proptest::option::of((
                for_value(),
                prop_oneof![Just("for"), Just("For"), Just("FOR")],
            )),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(node, proto, host)| {
                let mut pairs: Vec<Vec<u8>> = Vec::new();
                if proto {
                    pairs.push(b"proto=https".to_vec());
                }
                let named = node.map(|((v, ip), name)| {
                    let mut p = format!("{name}=").into_bytes();
                    p.extend(v);
                    pairs.push(p);
                    ip
                });
                if host {
                    pairs.push(b"host=\"a.example,;x\"".to_vec());
                }
                (pairs.join(&b";"[..]), named)
            });
        proptest::collection::vec(proptest::collection::vec(element, 1..4), 0..4).prop_map(
            |lines| {
                let mut out = Vec::new();
                let mut named = Vec::new();
                for l in lines {
                    let mut line = Vec::new();
                    for (i, (e, n)) in l.into_iter().enumerate() {
                        if i > 0 {
                            line.extend_from_slice(b", ");
                        }
                        if !e.is_empty() {
                            named.push(n);
                        }
                        line.extend(e);
                    }
                    out.push(line);
                }
                (out, named)
            },
        )
    }

    fn forwarded_map(lines: &[Vec<u8>]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for l in lines {
            m.append("forwarded", HeaderValue::from_bytes(l).unwrap());
        }
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Well-formed `Forwarded` from a trusted peer (without
        /// X-Forwarded-For): the same rule as for X-Forwarded-For — the
        /// rightmost node that is not trusted, a 400 when that node is no
        /// address, the leftmost trusted one only when all are trusted.
        #[test]
        fn forwarded_for_follows_the_xff_rule((lines, named) in forwarded_lines()) {
            let peer: IpAddr = "10.200.0.1".parse().unwrap();
            let got = client_ip(Some(peer), &forwarded_map(&lines), &nets());
            let nodes: Vec<Option<IpAddr>> = named.into_iter().flatten().collect();
            let trusted = |n: &Option<IpAddr>| n.is_some_and(|ip| is_trusted(ip, &nets()));
            let want = match nodes.iter().rev().find(|n| !trusted(n)) {
                Some(Some(ip)) => Ok(Some(*ip)),
                Some(None) => Err(()),
                None => Ok(Some(nodes.first().copied().flatten().unwrap_or(peer))),
            };
            prop_assert_eq!(got.map_err(|_| ()), want, "{:?}", lines.iter().map(|l| String::from_utf8_lossy(l)).collect::<Vec<_>>());
        }

        /// Whatever bytes precede it, the node a trusted proxy appends on a
        /// line of its own is the client; appended to the last line, it is
        /// the client or a 400 (the bytes before it left a quoted string
        /// open), never another address.
        #[test]
        fn the_node_a_trusted_proxy_appends_to_forwarded_is_the_client(
            sent in proptest::collection::vec(proptest::collection::vec(value_byte(), 0..32), 0..3),
            client in any::<[u8; 4]>().prop_filter("untrusted", |o| o[0] != 10 && !(o[0] == 192 && o[1] == 168)),
            own_line in any::<bool>(),
        ) {
            let client = IpAddr::V4(client.into());
            let mut lines = sent;
            let appended = format!("for={client};proto=https").into_bytes();
            match lines.last_mut() {
                Some(l) if !own_line => {
                    l.extend_from_slice(b", ");
                    l.extend_from_slice(&appended);
                }
                _ => lines.push(appended),
            }
            let got = client_ip(Some("10.1.1.1".parse().unwrap()), &forwarded_map(&lines), &nets());
            if own_line {
                prop_assert_eq!(got, Ok(Some(client)));
            } else {
                prop_assert!(got.is_err() || got == Ok(Some(client)), "{got:?}");
            }
        }

        /// Arbitrary bytes as `Forwarded`: a trusted address is the client
        /// only when one was named (the peer only when no `for=` was sent),
        /// and any address found is one the bytes spell.
        #[test]
        fn forwarded_bytes_never_yield_a_trusted_address_by_mistake(
            sent in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![
                    4 => value_byte().prop_map(|b| vec![b]),
                    1 => Just(b"for=".to_vec()),
                    1 => Just(b"For=\"".to_vec()),
                    1 => Just(b"10.1.2.3".to_vec()),
                    1 => Just(b"6.6.6.6".to_vec()),
                    1 => Just(b"[fd00::1]".to_vec()),
                    1 => Just(b"\"".to_vec()),
                    1 => Just(b";".to_vec()),
                    1 => Just(b", ".to_vec()),
                ], 0..16).prop_map(|p| p.concat()),
                1..3,
            ),
        ) {
            let peer: IpAddr = "10.200.0.1".parse().unwrap();
            let got = client_ip(Some(peer), &forwarded_map(&sent), &nets());
            let all: Vec<u8> = sent.concat().to_ascii_lowercase();
            let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
            match got {
                Ok(Some(ip)) if ip == peer => {
                    // No pair named `for` (outside a quoted string).
                    let pair_start = |i: usize| i == 0 || matches!(all[i - 1], b';' | b',' | b' ' | b'\t');
                    let named = all.windows(4).enumerate().any(|(i, w)| w == b"for=" && pair_start(i));
                    prop_assert!(!named || all.contains(&b'"'), "{:?}", String::from_utf8_lossy(&all));
                }
                Ok(Some(ip)) => {
                    let spelled = match ip {
                        IpAddr::V4(v4) => v4.to_string(),
                        IpAddr::V6(v6) => v6.to_string(),
                    };
                    prop_assert!(has(spelled.as_bytes()), "{ip} from {:?}", String::from_utf8_lossy(&all));
                }
                Ok(None) => prop_assert!(false, "no client"),
                Err(_) => {}
            }
        }
    }
}
