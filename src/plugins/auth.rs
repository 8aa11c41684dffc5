//! What the authentication plugins share: refusing with a problem (and the
//! right challenge header), counting the refusal with a reason code, and
//! recording who the consumer is. Reasons are short fixed codes; no credential
//! ever reaches a log line or a metric label.

use crate::metrics::METRICS;
use crate::pipeline::{Flow, Reply, RequestCtx};
use http::{HeaderName, HeaderValue};

/// Count a refusal as `tollgate_auth_failures_total{route,plugin,reason}` and
/// log it (at info: refusals are expected traffic).
pub fn count_failure(ctx: &RequestCtx, plugin: &str, reason: &'static str) {
    let route = ctx.route_name();
    METRICS
        .auth_failures
        .with_label_values(&[route, plugin, reason])
        .inc();
    tracing::info!(
        target: "tollgate::auth",
        request_id = ctx.request_id.as_deref().unwrap_or(""),
        route,
        plugin,
        reason,
        "request refused"
    );
}

/// A refusal: problem+json with extra headers (`WWW-Authenticate`, …).
pub fn refuse(
    status: u16,
    detail: impl Into<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Flow {
    Flow::Respond(Reply::Problem {
        status,
        detail: detail.into(),
        headers,
    })
}

/// Record the authenticated consumer and tell the upstream, replacing any
/// client-sent `x-consumer`. The header carries the consumer encoded as
/// [`header_text`] encodes `jwt`'s `forward_claims`: `José` is sent as
/// `Jos%C3%A9` and `" a"` as `%20a`, so no upstream reads another consumer
/// after trimming or decoding the value its own way; the request's consumer
/// (cache keys, idempotency scopes, rate limits, logs) stays the exact value.
pub fn set_consumer(ctx: &mut RequestCtx, consumer: &str) {
    ctx.identity.consumer = Some(consumer.to_string());
    ctx.upstream
        .headers
        .push((HeaderName::from_static("x-consumer"), header_text(consumer)));
}

/// A value as a header value, the one encoding of every identity header the
/// gateway writes (`x-consumer`, `jwt`'s `forward_claims`, SPEC §3): its UTF-8
/// bytes, with every byte that is not visible ASCII (controls, DEL, non-ASCII),
/// every `%`, and a space at either end written as `%XX`, so the upstream can
/// always percent-decode it back to the exact value. Visible ASCII and inner
/// spaces (`"read write"`) are kept as they are.
pub fn header_text(s: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = s.as_bytes();
    let last = b.len().saturating_sub(1);
    let keep = |i: usize, c: u8| {
        (0x21..0x7f).contains(&c) && c != b'%' || (c == b' ' && i != 0 && i != last)
    };
    if b.iter().enumerate().all(|(i, &c)| keep(i, c)) {
        if let Ok(v) = HeaderValue::from_str(s) {
            return v;
        }
    }
    let mut out = Vec::with_capacity(b.len() * 3);
    for (i, &c) in b.iter().enumerate() {
        if keep(i, c) {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        }
    }
    // Only visible ASCII and inner spaces are left: always a valid value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether a value may be written into a header: visible ASCII and spaces, no
/// CR, LF or other control characters.
pub fn header_safe(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        header_text(s).to_str().unwrap().to_string()
    }

    #[test]
    fn header_text_encodes_all_but_visible_ascii_and_inner_spaces() {
        assert_eq!(text("acme"), "acme");
        assert_eq!(text("read write"), "read write");
        assert_eq!(text(""), "");
        assert_eq!(text("José"), "Jos%C3%A9");
        assert_eq!(text("😀"), "%F0%9F%98%80");
        // Line and paragraph separators, bidi overrides: invisible, never raw.
        assert_eq!(text("a\u{2028}b"), "a%E2%80%A8b");
        assert_eq!(text("a\u{202e}b"), "a%E2%80%AEb");
        // A space at either end would be trimmed by an upstream: another consumer.
        assert_eq!(text(" a"), "%20a");
        assert_eq!(text("a "), "a%20");
        assert_eq!(text(" "), "%20");
        assert_eq!(text("100%"), "100%25");
        assert_eq!(text("tab\there"), "tab%09here");
        assert_eq!(text("a\r\nx: 1"), "a%0D%0Ax: 1");
        for s in ["José 100%", " pad ", "\u{7f}\u{85}", "a\u{202e}b"] {
            let sent = text(s);
            let back = percent_encoding::percent_decode_str(&sent).decode_utf8();
            assert_eq!(back.unwrap(), s);
        }
    }
}
