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
        let result = queue.publish(&msg).await;
        if let Some(span) = span {
            ctx.req.trace.end_client(
                span,
                ClientEnd {
                    method: "publish",
                    peer: Arc::from(queue.name()),
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
            Err(e) => {
                let detail = match &e {
                    PublishError::Overloaded => {
                        "the queue has too many messages waiting for the broker"
                    }
                    PublishError::Timeout => "the broker did not acknowledge the message in time",
                    PublishError::Error(_) => "the broker is unavailable",
                };
                self.finish_chain(ctx);
                self.respond_problem(
                    session,
                    ctx,
                    503,
                    detail,
                    vec![(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("1"),
                    )],
                )
                .await;
            }
        }
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
        let ProxyCtx { req, states, .. } = &mut *ctx;
        if let Some(chain) = req.route().map(|r| r.chain.clone()) {
            let chunk = Some(body.clone());
            for (n, i) in chain.iter().enumerate() {
                i.plugin.upstream_response(&header, req, states.slot(n));
            }
            for (n, i) in chain.iter().enumerate() {
                i.plugin
                    .upstream_response_body(&chunk, true, req, states.slot(n));
            }
        }
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
