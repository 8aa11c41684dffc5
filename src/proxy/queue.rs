//! A route with `queue = "NAME"` (SPEC §12): once every plugin of the route
//! accepted the request, its body is read whole and published to the broker;
//! the client gets `202` with the message id only after the broker's
//! acknowledgement, `503` with `Retry-After` otherwise.
//!
//! The `202` passes the chain's `upstream_response` and
//! `upstream_response_body` hooks as an upstream's answer would: the queue is
//! the route's upstream, and `idempotency` stores the `202` for a retried key
//! the same way. A `503` passes none of them, so a key is released and the
//! sender's retry is published again.

use super::{Gateway, ProxyCtx};
use crate::pipeline::{BodyError, Reply, UpstreamOutcome};
use crate::queue::{Message, PublishError, Queue, QueueKind};
use crate::telemetry::ClientEnd;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::SystemTime;

impl Gateway {
    /// Publish the request to `queue` and answer it.
    pub(super) async fn publish(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
        queue: Arc<Queue>,
    ) {
        // The access log names the queue where a proxied request names its target.
        ctx.target = Some(queue.target());
        // A slot before the body: a stalled broker refuses at once, before
        // the client uploads anything more.
        let slot = match queue.reserve() {
            Ok(s) => s,
            Err(e) => return self.unavailable(session, ctx, &e).await,
        };
        let body = match crate::pipeline::whole_body(session, &ctx.req).await {
            Ok(b) => b,
            Err(e) => {
                let (status, detail) = match e {
                    BodyError::TooLarge => (413, "request body over max_request_body"),
                    BodyError::Timeout => (408, "request body not received in time"),
                    BodyError::Broken => (400, "the request body could not be read"),
                };
                self.finish_chain(ctx);
                session.set_keepalive(None);
                self.respond_problem(session, ctx, status, detail, Vec::new())
                    .await;
                return;
            }
        };
        ctx.body_bytes = body.len() as u64;
        let id = ctx.req.request_id().to_string();
        let received_at = SystemTime::now()
            .checked_sub(ctx.req.start.elapsed())
            .unwrap_or_else(SystemTime::now);
        let req = session.req_header();
        let msg = Message {
            id: &id,
            received_at,
            route: ctx.req.route_name(),
            consumer: ctx.req.identity.consumer.as_deref().unwrap_or(""),
            method: req.method.as_str(),
            path: ctx.req.matched.path.as_deref().unwrap_or("/"),
            query: req.uri.query().unwrap_or(""),
            headers: &req.headers,
            body: &body,
            dedup_id: ctx.req.webhook_id.as_deref().unwrap_or(&id),
        };
        let span = ctx.req.trace.begin_client();
        let result = queue.publish_reserved(slot, &msg).await;
        if let Some(span) = span {
            ctx.req.trace.end_client(
                span,
                ClientEnd {
                    method: "publish",
                    peer: queue.name_shared(),
                    peer_key: "tollgate.queue",
                    address: None,
                    host: None,
                    port: None,
                    status: None,
                    error: result.as_ref().err().map(PublishError::result_label),
                    messaging: Some(match queue.config().kind {
                        QueueKind::RedisStream => "redis",
                        QueueKind::Nats => "nats",
                    }),
                },
            );
        }
        match result {
            Ok(message_id) => self.accepted(session, ctx, &queue, &message_id).await,
            Err(e) => self.unavailable(session, ctx, &e).await,
        }
    }

    /// The broker did not take the message: `503` with `Retry-After` (send
    /// it again), or `413` for a message the broker never takes.
    async fn unavailable(&self, session: &mut Session, ctx: &mut ProxyCtx, e: &PublishError) {
        let (status, detail) = match e {
            PublishError::Overloaded => (
                503,
                "the queue has too many messages waiting for the broker",
            ),
            PublishError::Timeout => (503, "the broker did not acknowledge the message in time"),
            PublishError::Error(_) => (503, "the broker is unavailable"),
            PublishError::TooLarge => (413, "the message is larger than the broker accepts"),
        };
        let retry = if status == 503 {
            vec![(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            )]
        } else {
            Vec::new()
        };
        self.finish_chain(ctx);
        self.respond_problem(session, ctx, status, detail, retry)
            .await;
    }

    /// `202` with `{"id", "queue"}`, through the chain's response hooks.
    async fn accepted(&self, session: &mut Session, ctx: &mut ProxyCtx, queue: &Queue, id: &str) {
        let body = Bytes::from(serde_json::json!({ "id": id, "queue": queue.name() }).to_string());
        let Ok(mut header) = ResponseHeader::build(202, Some(3)) else {
            return;
        };
        let _ = header.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len());
        let _ = header.insert_header(http::header::CACHE_CONTROL, "no-store");
        // As an upstream's answer: `idempotency` stores it for a retried key,
        // `webhook_signature` remembers the webhook as delivered.
        ctx.req.upstream.outcome = Some(UpstreamOutcome {
            status: Some(202),
            error: false,
            elapsed: ctx.req.start.elapsed(),
        });
        ctx.upstream_response_hooks(&header);
        ctx.upstream_body_hooks(&Some(body.clone()), true);
        self.respond(
            session,
            ctx,
            Reply::Raw {
                header: Box::new(header),
                body,
            },
        )
        .await;
    }
}
