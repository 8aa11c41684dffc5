//! Logs through `tracing`: human-readable by default, one JSON object per line
//! with `TOLLGATE_LOG_FORMAT=json`. The access log is one event per request on
//! target `tollgate::access`; it never carries credentials or query strings.

use std::net::IpAddr;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn,pingora_load_balancing=warn")
    });
    let json = std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Card numbers (PANs: Luhn-valid runs of 13–19 digits) masked to their last
/// four digits, for anything that reaches a log line.
pub fn mask_pans(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let mut out: Option<String> = None;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let run = &s[start..i];
        if (13..=19).contains(&run.len()) && luhn(run) {
            let o = out.get_or_insert_with(|| s.to_string());
            // Same length, so byte offsets in `o` still match `s`.
            o.replace_range(start..i - 4, &"*".repeat(run.len() - 4));
        }
    }
    match out {
        Some(o) => std::borrow::Cow::Owned(o),
        None => std::borrow::Cow::Borrowed(s),
    }
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, d) in digits.bytes().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

pub struct Access<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: &'a str,
    pub bytes: u64,
    pub consumer: &'a str,
    pub client_ip: Option<IpAddr>,
    pub error: Option<&'a str>,
}

pub fn access(a: &Access<'_>) {
    if !tracing::enabled!(target: "tollgate::access", tracing::Level::INFO) {
        return;
    }
    tracing::info!(
        target: "tollgate::access",
        request_id = a.request_id,
        route = a.route,
        method = a.method,
        path = %mask_pans(a.path),
        status = a.status,
        duration_ms = a.duration_ms,
        upstream = a.upstream,
        bytes = a.bytes,
        consumer = a.consumer,
        client_ip = a.client_ip.map(|i| i.to_string()).unwrap_or_default(),
        error = a.error.unwrap_or(""),
        "access"
    );
}

#[cfg(test)]
mod tests {
    use super::mask_pans;

    #[test]
    fn pans_are_masked() {
        assert_eq!(
            mask_pans("/v1/cards/4111111111111111/charges"),
            "/v1/cards/************1111/charges"
        );
        assert_eq!(mask_pans("/a/5500005555555559"), "/a/************5559");
        // Not Luhn-valid, or too short/long: left alone.
        assert_eq!(
            mask_pans("/orders/4111111111111112"),
            "/orders/4111111111111112"
        );
        assert_eq!(mask_pans("/orders/123456789012"), "/orders/123456789012");
        assert_eq!(
            mask_pans("/t/12345678901234567890"),
            "/t/12345678901234567890"
        );
        assert!(matches!(
            mask_pans("/plain/path"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
