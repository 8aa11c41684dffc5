//! The request's host: `Host`, `:authority` or an absolute-form target's
//! authority, validated and normalised once ([`Authority`]), and the
//! per-request [`Forwarding`] built from it with the scheme and host a
//! trusted peer forwards.

use http::header::{self, HeaderMap, HeaderValue};
use std::net::Ipv6Addr;

use super::client::{forwarded_elements, unquote};
use super::{single, trim_ows, BadRequest};

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
