//! How an upstream attempt ended and what follows from it: the outcome the
//! breakers see, `tollgate_upstream_duration_seconds` and
//! `tollgate_upstream_failures_total`, whether the request is sent again (the
//! route's retry policy, or once more after a stale pooled connection), and
//! the status and problem a failed request is answered with.

use super::{head, ProxyCtx};
use crate::metrics::failure_kind::{self, STATUS};
use crate::metrics::METRICS;
use http::header;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// Whether this request may be sent again to another target: attempts left in
/// the route's retry policy, and [`resendable`].
pub(super) fn retryable(session: &Session, ctx: &ProxyCtx) -> bool {
    let Some(up) = ctx.upstream() else {
        return false;
    };
    ctx.tried.len() <= up.retry.attempts && resendable(session, ctx)
}

/// Whether this request may be sent again at all: idempotent (by method or an
/// `Idempotency-Key`), its body still whole in the retry buffer, nothing answered
/// yet and time left before `request_timeout`.
pub(super) fn resendable(session: &Session, ctx: &ProxyCtx) -> bool {
    let req = session.req_header();
    let idempotent = matches!(
        req.method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    ) || req.headers.contains_key("idempotency-key");
    idempotent
        && !session.as_ref().retry_buffer_truncated()
        && !final_response_written(session)
        && ctx.req.rt.limits.request_timeout > ctx.req.start.elapsed()
}

/// Count one failure of the route's upstream in
/// `tollgate_upstream_failures_total{kind}`.
pub(super) fn count_failure(ctx: &mut ProxyCtx, kind: &'static str) {
    if let Some(a) = ctx.attempt.as_mut().filter(|_| kind != STATUS) {
        a.error = Some(kind);
    }
    if let Some(up) = ctx.upstream() {
        METRICS
            .upstream_failures
            .with_label_values(&[&up.name, kind])
            .inc();
    }
    ctx.failure_counted = true;
}

/// Whether a final (non-1xx) response head was sent to the client.
pub(super) fn final_response_written(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational())
}

use crate::util::is_timeout;

/// A response head arrived: its outcome and latency are recorded, and a 5xx is
/// a failure, tried again (`Err`, to be retried) when the route's retry policy
/// names its status and the request may be sent again.
pub(super) fn record_response(
    session: &Session,
    ctx: &mut ProxyCtx,
    status: u16,
) -> pingora::Result<()> {
    ctx.record_outcome(Some(status), false);
    if let (Some(up), Some(_)) = (ctx.upstream(), ctx.upstream_start) {
        METRICS
            .upstream_duration
            .with_label_values(&[&up.name])
            .observe(ctx.upstream_elapsed().as_secs_f64());
    }
    if status >= 500 {
        count_failure(ctx, STATUS);
        let retry_on = ctx
            .upstream()
            .is_some_and(|u| u.retry.on_status.contains(&status));
        if retry_on && retryable(session, ctx) {
            let mut e =
                Error::explain(ErrorType::HTTPStatus(status), "retrying on upstream status");
            e.set_retry(true);
            return Err(e);
        }
    }
    Ok(())
}

/// A 5xx answered with a stale cached copy never reaches
/// `upstream_response_filter`: it is recorded here, so that breakers and
/// metrics still see the failure.
pub(super) fn record_stale_served(ctx: &mut ProxyCtx, error: &Error) {
    if let (ErrorType::HTTPStatus(s), ErrorSource::Upstream) = (error.etype(), error.esource()) {
        if ctx.upstream_start.is_some() {
            ctx.record_outcome(Some(*s), false);
            if !ctx.failure_counted {
                count_failure(ctx, STATUS);
            }
        }
    }
}

/// Connecting to the target failed or timed out: a failure, retried when the
/// route's policy allows it for that kind and the request may be sent again.
pub(super) fn connect_failed(
    session: &Session,
    ctx: &mut ProxyCtx,
    mut e: Box<Error>,
) -> Box<Error> {
    let timeout = is_timeout(&e);
    count_failure(ctx, failure_kind::connect_or_timeout(timeout));
    ctx.record_outcome(None, true);
    let allowed = ctx.upstream().is_some_and(|u| {
        let p = &u.retry;
        (timeout && p.on_timeout) || (!timeout && p.on_connect_error)
    });
    e.set_retry(allowed && retryable(session, ctx));
    e
}

/// An error once connected (`client_reused`: the upstream connection came from
/// the pool): a request body the client stalled is the client's 408; an
/// upstream read or write error is a failure, retried on a timeout when the
/// policy allows it, or once on a fresh connection when a pooled one was
/// stale; anything else is not retried.
pub(super) fn proxy_failed(
    session: &mut Session,
    ctx: &mut ProxyCtx,
    mut e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    // Pingora marks what may have failed only because a pooled connection was
    // stale as "retry if reused": decide that first (`retry()` panics on it).
    e.retry.decide_reuse(client_reused);
    if e.esource() == &ErrorSource::Upstream
        && is_timeout(&e)
        && !session.is_body_done()
        && !final_response_written(session)
    {
        // The upstream was still waiting for a request body the client stalled:
        // the client's fault, not the upstream's (SPEC §4: 408, no breaker, no
        // failure metric).
        ctx.req.upstream.outcome = None;
        session.set_keepalive(None);
        return Error::explain(
            ErrorType::HTTPStatus(408),
            "request body stalled while the upstream waited for it",
        );
    }
    if e.esource() == &ErrorSource::Upstream && !matches!(e.etype(), ErrorType::HTTPStatus(_)) {
        let timeout = is_timeout(&e);
        ctx.record_outcome(None, true);
        if !ctx.failure_counted || timeout {
            count_failure(ctx, failure_kind::connect_or_timeout(timeout));
        }
        let policy_ok = ctx
            .upstream()
            .is_some_and(|u| timeout && u.retry.on_timeout);
        // A pooled connection the upstream closed or reset: one more try, on a
        // fresh connection, whatever the retry policy (within request_timeout).
        let stale = client_reused && e.retry() && !ctx.stale_retried;
        if stale && resendable(session, ctx) {
            ctx.stale_retried = true;
            e.set_retry(true);
        } else {
            e.set_retry(policy_ok && retryable(session, ctx));
        }
    } else if !matches!(e.etype(), ErrorType::HTTPStatus(_)) {
        e.set_retry(false);
    }
    e
}

/// The status a request that could not be proxied is answered with (0: none,
/// the client is gone).
pub(super) fn failure_status(session: &Session, ctx: &ProxyCtx, e: &Error) -> u16 {
    let code = match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => {
                if is_timeout(e) {
                    504
                } else {
                    502
                }
            }
            ErrorSource::Downstream if broken_chunk(e).is_some() => 400,
            // The client ended its body early (a half-close): it may still read.
            ErrorSource::Downstream if body_cut_short(session, ctx, e) => 400,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    // A retried status that ran out of attempts is the upstream's failure.
    if ctx.tried.len() > 1 && (500..600).contains(&code) && code != 504 && code != 503 {
        502
    } else {
        code
    }
}

/// The problem's detail and extra headers for [`failure_status`]'s `code`.
pub(super) fn failure_problem(
    session: &Session,
    ctx: &ProxyCtx,
    e: &Error,
    code: u16,
) -> (&'static str, Vec<(http::HeaderName, http::HeaderValue)>) {
    match code {
        502 => (
            "the upstream service failed or sent an invalid response",
            vec![],
        ),
        503 => (
            "no healthy upstream target is available",
            vec![(header::RETRY_AFTER, http::HeaderValue::from_static("5"))],
        ),
        504 => ("the upstream service did not answer in time", vec![]),
        413 => ("the request body is larger than the limit", vec![]),
        408 => ("the request body was not received in time", vec![]),
        400 if body_cut_short(session, ctx, e) => {
            ("the request body ended before its declared length", vec![])
        }
        400 => (broken_chunk(e).unwrap_or("malformed request"), vec![]),
        _ => ("the gateway could not complete the request", vec![]),
    }
}

/// Why a chunked request body was refused mid-stream by the connection's guard
/// (`app::ChunkGuard`, whose read error carries the [`head::ChunkError`]).
fn broken_chunk(e: &Error) -> Option<&'static str> {
    let root = e.root_cause();
    root.downcast_ref::<head::ChunkError>()
        .or_else(|| {
            root.downcast_ref::<std::io::Error>()?
                .get_ref()?
                .downcast_ref::<head::ChunkError>()
        })
        .map(|c| c.detail())
}

/// The client closed its side before the request body was complete (a body
/// was announced and its end never arrived).
fn body_cut_short(session: &Session, ctx: &ProxyCtx, e: &Error) -> bool {
    if ctx.body_done.is_some() || !matches!(e.etype(), ErrorType::ConnectionClosed) {
        return false;
    }
    let h = &session.req_header().headers;
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}
