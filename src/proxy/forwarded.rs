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
/// send them (SPEC §4).
pub const CLIENT_IP_HEADERS: [&str; 3] = ["x-real-ip", "true-client-ip", "x-client-ip"];

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
/// A trusted peer that sends no `X-Forwarded-For` is the client itself; one
/// whose chain holds only trusted proxies names the leftmost of them. A chain
/// that is present but holds no entry at all is refused.
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
        (false, None) => Ok(Some(peer)),
        (true, None) => Err(BadRequest("X-Forwarded-For holds no address")),
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
    /// The scheme as forwarded: the trusted peer's `X-Forwarded-Proto`
    /// (`http` or `https`), else that of the connection.
    pub https: bool,
    /// The trusted peer's `X-Forwarded-Host`, normalised, kept as forwarded.
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
            if let Some(v) = single(headers, "x-forwarded-proto") {
                match trim_ows(v.as_bytes()) {
                    p if p.eq_ignore_ascii_case(b"https") => https = true,
                    p if p.eq_ignore_ascii_case(b"http") => https = false,
                    _ => {}
                }
            }
            if let Some(v) = single(headers, "x-forwarded-host") {
                kept_host = parse_authority(v.as_bytes(), Some(v), https).ok().flatten();
            }
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
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    single(headers, header::UPGRADE.as_str())
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
        assert!(!is_upgrade(&m));
        let stripped = hop_by_hop(&m, is_upgrade(&m));
        for n in ["connection", "upgrade", "http2-settings"] {
            assert!(stripped.iter().any(|s| s == n), "{n}: {stripped:?}");
        }
        // HTTP2-Settings is hop-by-hop even when Connection does not list it.
        m.insert("connection", "upgrade".parse().unwrap());
        assert!(hop_by_hop(&m, false).iter().any(|s| s == "http2-settings"));
        m.insert("upgrade", "websocket, h2c".parse().unwrap());
        assert!(!is_upgrade(&m));
        m.insert("upgrade", "WebSocket".parse().unwrap());
        assert!(is_upgrade(&m));
        m.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade(&m));
        m.remove("connection");
        assert!(!is_upgrade(&m));
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
        assert!(is_upgrade(&m));
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

    /// Arbitrary `Forwarded` bytes play no part in choosing the client.
    #[test]
    fn forwarded_header_does_not_pick_the_client() {
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
}
