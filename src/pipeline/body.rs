//! Reading a request body inside a plugin's request hook, and the
//! `100 Continue` that must come before it.

use super::RequestCtx;
use bytes::Bytes;
use pingora::proxy::Session;
// Pingora's timers: a Tokio timer registered per request wakes the runtime's
// driver through its eventfd (see `proxy::app::read_head`).
use pingora::prelude::fast_timeout::fast_timeout;

/// The largest request body a plugin can read before the upstream is contacted:
/// Pingora replays what was read from its retry buffer, which holds 64 KiB.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Why a whole request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than what can be replayed to the upstream (or `max_request_body`).
    TooLarge,
    /// Not received within the request's deadline.
    Timeout,
    /// The client went away or sent a broken body.
    Broken,
}

impl BodyError {
    /// The usual answer to a body that could not be read whole: 413, 408 or
    /// 400.
    pub fn refusal(self) -> super::Flow {
        match self {
            BodyError::TooLarge => {
                super::Flow::problem(413, "the request body is larger than the limit")
            }
            BodyError::Timeout => {
                super::Flow::problem(408, "the request body was not received in time")
            }
            BodyError::Broken => super::Flow::problem(400, "the request body could not be read"),
        }
    }
}

enum BodyRead {
    Complete(bytes::BytesMut),
    /// Over the limit; `drained` when the rest was read (and dropped) to its
    /// end, so that the connection can carry the refusal cleanly.
    TooLarge {
        drained: bool,
    },
}

/// One read of the request body. Pingora applies the session's read timeout
/// (`body_timeout`) to HTTP/1 only; an HTTP/2 stream's read is bounded here.
async fn next_chunk(
    session: &mut Session,
    body_timeout: std::time::Duration,
) -> pingora::Result<Option<bytes::Bytes>> {
    if !session.is_http2() {
        return session.read_request_body().await;
    }
    match fast_timeout(body_timeout, session.read_request_body()).await {
        Ok(r) => r,
        Err(_) => pingora::Error::e_explain(
            pingora::ErrorType::ReadTimedout,
            "request body slower than body_timeout",
        ),
    }
}

async fn read_to_limit(
    session: &mut Session,
    limit: u64,
    max_total: u64,
    body_timeout: std::time::Duration,
) -> pingora::Result<BodyRead> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = next_chunk(session, body_timeout).await? {
        if (body.len() + chunk.len()) as u64 > limit {
            let mut total = (body.len() + chunk.len()) as u64;
            drop(body);
            while total <= max_total {
                match next_chunk(session, body_timeout).await {
                    Ok(Some(c)) => total += c.len() as u64,
                    Ok(None) => return Ok(BodyRead::TooLarge { drained: true }),
                    Err(_) => break,
                }
            }
            return Ok(BodyRead::TooLarge { drained: false });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(BodyRead::Complete(body))
}

/// Read and drop the rest of a request body refused part-way (a plugin's
/// `request_body` hook said no), up to `max_request_body` and within the
/// request's deadline, so that a client still sending reads the refusal
/// instead of a reset. `false` when the rest could not be read.
pub async fn drain_body(session: &mut Session, ctx: &RequestCtx) -> bool {
    if session.is_body_done() {
        return true;
    }
    let remaining = ctx
        .rt
        .limits
        .request_timeout
        .saturating_sub(ctx.start.elapsed());
    let read = read_to_limit(
        session,
        0,
        ctx.rt.limits.max_request_body,
        ctx.rt.limits.body_timeout,
    );
    match fast_timeout(remaining, read).await {
        Ok(Ok(BodyRead::Complete(_))) => true,
        Ok(Ok(BodyRead::TooLarge { drained })) => drained,
        _ => false,
    }
}

/// Send `100 Continue` now, when the client asked for it and nothing was answered
/// yet: called once the plugins accepted the request head, before the body is read
/// (by a plugin, or by Pingora while proxying). Any `1xx` the upstream sends after
/// it is not relayed: the client gets one `100`.
pub async fn send_continue(session: &mut Session, ctx: &RequestCtx) {
    if !ctx.client.expect_continue || session.response_written().is_some() {
        return;
    }
    if session.write_continue_response().await.is_ok() {
        session.set_ignore_info_resp(true);
    }
}

/// Read the whole request body before the upstream is contacted; Pingora then
/// sends exactly these bytes upstream (from its retry buffer, on HTTP/1 and
/// HTTP/2 alike). A body larger than `min(max_request_body, MAX_BUFFERED_BODY)`
/// is refused before anything is forwarded; its rest is read and dropped (up to
/// `max_request_body`, within the request's deadline) so that the refusal
/// reaches a client that is still sending, or the connection is closed after it.
/// A client that sent `Expect: 100-continue` gets its `100 Continue` first.
///
/// On a route that publishes to a queue nothing is replayed: the body may be
/// as large as `max_request_body`, and it is kept for the publish
/// ([`whole_body`]).
///
/// The body is kept in `ctx.body`: every later plugin that reads it gets the
/// same bytes (a shared buffer, not a copy).
pub async fn read_body(session: &mut Session, ctx: &mut RequestCtx) -> Result<Bytes, BodyError> {
    if let Some(b) = &ctx.body {
        return Ok(b.clone());
    }
    let b = if ctx.route().is_some_and(|r| r.queue.is_some()) {
        read_up_to(session, ctx, u64::MAX, false).await?
    } else {
        read_up_to(session, ctx, MAX_BUFFERED_BODY, true).await?
    };
    ctx.body = Some(b.clone());
    Ok(b)
}

/// The whole request body for a request that is not proxied (a route that
/// publishes to a queue): what a plugin already read, or else read now, up
/// to `max_request_body` rather than what the retry buffer can replay.
pub async fn whole_body(session: &mut Session, ctx: &RequestCtx) -> Result<Bytes, BodyError> {
    if let Some(b) = &ctx.body {
        return Ok(b.clone());
    }
    if session.is_body_done() {
        return Ok(session.as_ref().get_retry_buffer().unwrap_or_default());
    }
    read_up_to(session, ctx, u64::MAX, false).await
}

/// Read the body whole, refusing one over `min(max_request_body, limit)`;
/// `replay`: Pingora keeps it to send upstream.
async fn read_up_to(
    session: &mut Session,
    ctx: &RequestCtx,
    limit: u64,
    replay: bool,
) -> Result<Bytes, BodyError> {
    // A client waiting for `100 Continue` sends nothing before it: the plugins up to
    // this one accepted the head, so the body may come.
    send_continue(session, ctx).await;
    let max_total = ctx.rt.limits.max_request_body;
    let limit = limit.min(max_total);
    if replay {
        session.as_mut().enable_retry_buffering();
    }
    let remaining = ctx
        .rt
        .limits
        .request_timeout
        .saturating_sub(ctx.start.elapsed());
    match fast_timeout(
        remaining,
        read_to_limit(session, limit, max_total, ctx.rt.limits.body_timeout),
    )
    .await
    {
        Ok(Ok(BodyRead::Complete(b))) => {
            // The retry buffer must hold the body whole, or the upstream would
            // get a request without it.
            if replay && session.as_ref().retry_buffer_truncated() {
                session.set_keepalive(None);
                Err(BodyError::TooLarge)
            } else {
                Ok(b.freeze())
            }
        }
        Ok(Ok(BodyRead::TooLarge { drained })) => {
            if !drained {
                session.set_keepalive(None);
            }
            Err(BodyError::TooLarge)
        }
        // A read that waited past `body_timeout` (or the rate floor) is slow, not broken.
        Ok(Err(e)) if matches!(e.etype(), pingora::ErrorType::ReadTimedout) => {
            session.set_keepalive(None);
            Err(BodyError::Timeout)
        }
        Ok(Err(_)) => {
            session.set_keepalive(None);
            Err(BodyError::Broken)
        }
        Err(_) => {
            session.set_keepalive(None);
            Err(BodyError::Timeout)
        }
    }
}
