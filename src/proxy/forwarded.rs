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
mod tests;

/// Property tests: whatever bytes a client (or a proxy in front) puts in
/// `X-Forwarded-For`, `Forwarded` and `Host`, the client is never a trusted
/// proxy's address by mistake, and no spelling of a host-scoped route's host
/// reaches another route.
#[cfg(test)]
mod properties;
