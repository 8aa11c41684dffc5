//! Small helpers shared by the proxy and the plugins, each written once.

use std::time::Duration;

/// Whether a Pingora error is a connect, read or write timeout.
pub fn is_timeout(e: &pingora::Error) -> bool {
    matches!(
        e.etype(),
        pingora::ErrorType::ConnectTimedout
            | pingora::ErrorType::ReadTimedout
            | pingora::ErrorType::WriteTimedout
    )
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whole seconds, rounded up: `Retry-After` and `RateLimit-Reset` never
/// promise a retry before the time has come.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A `Retry-After` value for `d`: whole seconds rounded up, at least 1.
pub fn retry_after(d: Duration) -> http::HeaderValue {
    http::HeaderValue::from(ceil_secs(d).max(1))
}

/// Framing and hop-by-hop request headers: the gateway writes them itself.
pub const FRAMING_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The forwarding headers the gateway sets upstream (SPEC §4).
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Framing, hop-by-hop and forwarding headers: what no configuration or third
/// party (a forwarded claim, a header copied from an auth service) may set on
/// the upstream request.
pub fn is_framing_or_forwarding(name: &str) -> bool {
    FRAMING_HEADERS.contains(&name) || FORWARDING_HEADERS.contains(&name)
}

/// [`is_framing_or_forwarding`], plus `Expect` (answered by the gateway) and
/// `X-Consumer` (the identity the gateway sets).
pub fn is_gateway_owned(name: &str) -> bool {
    is_framing_or_forwarding(name) || name == "expect" || name == "x-consumer"
}

/// Whether `content-type` names JSON: `application/json` or any `*/*+json`
/// (parameters such as `charset` ignored, case-insensitive).
pub fn is_json(content_type: &[u8]) -> bool {
    let Some((ty, sub)) = media_type(content_type) else {
        return false;
    };
    !ty.contains(&b'*')
        && !sub.contains(&b'*')
        && (sub.eq_ignore_ascii_case(b"json") && ty.eq_ignore_ascii_case(b"application")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// The `type` and `subtype` of a content type, parameters and surrounding
/// spaces left out, neither empty (as written: compare them ignoring case).
pub fn media_type(content_type: &[u8]) -> Option<(&[u8], &[u8])> {
    let essence = content_type.split(|&b| b == b';').next()?.trim_ascii();
    let slash = essence.iter().position(|&b| b == b'/')?;
    let (ty, sub) = (&essence[..slash], &essence[slash + 1..]);
    (!ty.is_empty() && !sub.is_empty()).then_some((ty, sub))
}

/// How a request's body is declared, for the plugins that read it as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind<'a> {
    /// One `Content-Type` (its bytes; empty when there is none), and no
    /// `Content-Encoding` other than `identity`.
    Plain(&'a [u8]),
    /// More than one `Content-Type` header: parsers would disagree on which
    /// one holds, so the request is refused (400).
    AmbiguousType,
    /// A compressed body (`Content-Encoding: gzip`...): it cannot be checked
    /// as it is, so a plugin that must check it refuses it (415).
    Encoded,
}

/// The request's content type, as [`BodyKind`] says.
pub fn body_kind(headers: &http::HeaderMap) -> BodyKind<'_> {
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let ct = types.next().map(|v| v.as_bytes()).unwrap_or(b"");
    if types.next().is_some() {
        return BodyKind::AmbiguousType;
    }
    let encoded = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|e| e.trim_ascii())
        .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case(b"identity"));
    if encoded {
        BodyKind::Encoded
    } else {
        BodyKind::Plain(ct)
    }
}

/// A log line that repeats at most once per interval (a backend outage, a
/// collector down): [`LogGate::allow`] says whether this one is written; the
/// others are only counted by their caller.
pub struct LogGate(parking_lot::Mutex<Option<std::time::Instant>>);

impl LogGate {
    pub const fn new() -> LogGate {
        LogGate(parking_lot::Mutex::new(None))
    }

    /// Whether a line may be written now: none was in the last `every`.
    pub fn allow(&self, every: Duration) -> bool {
        let mut last = self.0.lock();
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

impl Default for LogGate {
    fn default() -> Self {
        LogGate::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
            "application/vnd.api+json;v=2",
        ] {
            assert!(is_json(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/jsonp",
            "application/x-www-form-urlencoded",
            "*/*",
            "application/*+json",
            "+json",
            "application/+json",
            "application/a\u{20ac}json",
            "\u{20ac}/+json",
            "",
        ] {
            assert!(!is_json(ct.as_bytes()), "{ct}");
        }
    }

    use super::*;

    #[test]
    fn a_log_gate_opens_once_per_interval() {
        let g = LogGate::new();
        assert!(g.allow(Duration::from_secs(60)));
        assert!(!g.allow(Duration::from_secs(60)));
        assert!(g.allow(Duration::ZERO));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after(Duration::ZERO), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
    }
}

/// An address as text, on the stack: IPv4 written digit by digit, as `fmt`'s
/// machinery cost more than the rest of a forwarding header (callgrind,
/// `benches/load`). Every request writes its client's address two or three
/// times (`X-Forwarded-For`, `Forwarded`, the access log).
pub struct IpText {
    buf: [u8; 45],
    len: usize,
    v6: bool,
}

impl IpText {
    pub fn new(ip: std::net::IpAddr) -> IpText {
        let mut t = IpText {
            buf: [0; 45],
            len: 0,
            v6: ip.is_ipv6(),
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    if o >= 100 {
                        t.push(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.push(b'0' + o / 10 % 10);
                    }
                    t.push(b'0' + o % 10);
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut w = &mut t.buf[..];
                // The longest IPv6 text (45 bytes, with an embedded IPv4) fits.
                let _ = write!(w, "{v6}");
                let left = w.len();
                t.len = t.buf.len() - left;
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII was written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(test)]
mod ip_text_tests {
    use super::IpText;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn ip_text_is_display() {
        let mut v4: Vec<IpAddr> = [
            0u32,
            1,
            9,
            10,
            99,
            100,
            255,
            0x0a00_0001,
            u32::MAX,
            0xc000_0201,
        ]
        .into_iter()
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .collect();
        // A spread of octet values, every digit count in every position.
        for n in (0..=u32::MAX).step_by(16_777_259) {
            v4.push(IpAddr::V4(Ipv4Addr::from(n.rotate_left(13))));
        }
        let v6 = [
            "::",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "0:0:0:0:0:0:0:1",
        ]
        .map(|s| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()));
        for ip in v4.into_iter().chain(v6) {
            assert_eq!(IpText::new(ip).as_str(), ip.to_string(), "{ip:?}");
        }
    }
}
