//! What the authentication plugins share: refusing with a problem (and the
//! right challenge header), counting the refusal with a reason code, and
//! recording who the consumer is. Reasons are short fixed codes; no credential
//! ever reaches a log line or a metric label.

use super::{Flow, Reply};
use crate::metrics::METRICS;
use crate::proxy::RequestCtx;
use http::{HeaderName, HeaderValue};

/// Count a refusal as `tollgate_auth_failures_total{route,plugin,reason}` and
/// log it (at info: refusals are expected traffic).
pub fn count_failure(ctx: &RequestCtx, plugin: &str, reason: &'static str) {
    let route = ctx.route().map(|r| &*r.name).unwrap_or("");
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
/// client-sent `x-consumer`.
pub fn set_consumer(ctx: &mut RequestCtx, consumer: &str) {
    ctx.consumer = Some(consumer.to_string());
    if let Ok(v) = HeaderValue::from_str(consumer) {
        ctx.upstream_headers
            .push((HeaderName::from_static("x-consumer"), v));
    }
}

/// Whether a value may be written into a header: visible ASCII and spaces, no
/// CR, LF or other control characters.
pub fn header_safe(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
}
