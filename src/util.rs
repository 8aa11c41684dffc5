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

#[cfg(test)]
mod tests {
    use super::*;

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
