//! The proxy's per-request context: the plugins' [`RequestCtx`] and their
//! [`States`], plus what only the proxy keeps (forwarding facts, attempts,
//! timings and accounting).

use super::forwarded::Forwarding;
use crate::pipeline::{Reply, RequestCtx, States, UpstreamOutcome};
use crate::telemetry::{ClientEnd, ClientSpan};
use pingora::lb::Backend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An upstream attempt's CLIENT span, and how the attempt went so far.
pub struct Attempt {
    pub span: ClientSpan,
    pub method: &'static str,
    pub address: Option<SocketAddr>,
    pub status: Option<u16>,
    /// `error.type`: `connect`, `timeout`, or `error`.
    pub error: Option<&'static str>,
}

pub struct ProxyCtx {
    /// What plugins see.
    pub req: RequestCtx,
    /// The plugins' per-request states, by chain position.
    pub states: States,
    /// The request's normalised host, scheme and trusted-peer facts, computed
    /// once in `request_filter` (routing, cache key, forwarding headers).
    pub forwarding: Forwarding,
    /// Normalised path (after `strip_prefix`) plus query, when it differs from
    /// what the client sent.
    pub upstream_uri: Option<String>,
    pub tried: Vec<Backend>,
    pub target: Option<Arc<str>>,
    pub upstream_start: Option<Instant>,
    /// When the client's request body was received whole: the upstream cannot
    /// answer before it, so its latency (slow calls, the duration histogram) is
    /// counted from here, never the client's upload time.
    pub body_done: Option<Instant>,
    pub body_bytes: u64,
    pub failure_counted: bool,
    /// A retry after a pooled upstream connection failed was already made.
    pub stale_retried: bool,
    /// The chain's `finish` hooks ran.
    pub finished: bool,
    /// The current upstream attempt's CLIENT span (`[telemetry]`).
    pub attempt: Option<Attempt>,
    /// A plugin refused the request body as it streamed
    /// ([`crate::pipeline::Plugin::request_body`]): the answer `fail_to_proxy`
    /// writes.
    pub refused: Option<Reply>,
    /// Holds a graceful shutdown up while the request lives (Pingora drops
    /// the context when the request is done, logging included).
    _in_flight: crate::signals::InFlight,
}

impl ProxyCtx {
    pub fn new(req: RequestCtx) -> Self {
        ProxyCtx {
            req,
            states: States::default(),
            forwarding: Forwarding::default(),
            upstream_uri: None,
            tried: Vec::new(),
            target: None,
            upstream_start: None,
            body_done: None,
            body_bytes: 0,
            failure_counted: false,
            stale_retried: false,
            finished: false,
            attempt: None,
            refused: None,
            _in_flight: crate::signals::InFlight::request(),
        }
    }

    pub(super) fn record_outcome(&mut self, status: Option<u16>, error: bool) {
        if let Some(a) = &mut self.attempt {
            a.status = status;
            if error {
                a.error.get_or_insert("error");
            }
        }
        let elapsed = self.upstream_elapsed();
        self.req.upstream.outcome = Some(UpstreamOutcome {
            status,
            error,
            elapsed,
        });
    }

    /// The matched route's upstream (none before routing, or for a route
    /// that publishes to a queue).
    pub fn upstream(&self) -> Option<&Arc<crate::runtime::Upstream>> {
        self.req.route().and_then(|r| r.upstream.as_ref())
    }

    /// The chain's `upstream_response` hooks on the answer's head (an
    /// upstream's, or a queue's `202`).
    pub(super) fn upstream_response_hooks(&mut self, resp: &pingora::http::ResponseHeader) {
        if let Some(chain) = self.req.route().map(|r| r.chain.clone()) {
            for (n, i) in chain.iter().enumerate() {
                i.plugin
                    .upstream_response(resp, &mut self.req, self.states.slot(n));
            }
        }
    }

    /// The chain's `upstream_response_body` hooks on a chunk of that answer.
    pub(super) fn upstream_body_hooks(&mut self, body: &Option<bytes::Bytes>, end: bool) {
        if let Some(chain) = self.req.route().map(|r| r.chain.clone()) {
            for (n, i) in chain.iter().enumerate() {
                i.plugin
                    .upstream_response_body(body, end, &mut self.req, self.states.slot(n));
            }
        }
    }

    /// The request body, piece by piece as it goes upstream, through the
    /// plugins' `request_body` hooks. A refusal is kept for `fail_to_proxy`,
    /// and the returned error abandons the upstream request.
    pub(super) fn body_hooks(
        &mut self,
        body: &mut Option<bytes::Bytes>,
        end: bool,
    ) -> pingora::Result<()> {
        let Some(chain) = self.req.route().map(|r| r.chain.clone()) else {
            return Ok(());
        };
        for (n, i) in chain.iter().enumerate() {
            if let Err(reply) = i
                .plugin
                .request_body(body, end, &mut self.req, self.states.slot(n))
            {
                self.refused = Some(reply);
                return pingora::Error::e_explain(
                    pingora::ErrorType::InternalError,
                    "request body refused by a plugin",
                );
            }
        }
        Ok(())
    }

    /// A new upstream attempt: the previous one's span ends now.
    pub(super) fn begin_attempt(&mut self, method: &'static str, address: Option<SocketAddr>) {
        self.req.attempts += 1;
        self.end_attempt();
        if let Some(span) = self.req.trace.begin_client() {
            self.attempt = Some(Attempt {
                span,
                method,
                address,
                status: None,
                error: None,
            });
        }
    }

    /// The current attempt's CLIENT span ends (the next attempt begins, or the
    /// request is over).
    pub(super) fn end_attempt(&mut self) {
        let Some(a) = self.attempt.take().filter(|_| self.req.trace.is_sampled()) else {
            return;
        };
        let Some(peer) = self.upstream().map(|u| u.name.clone()) else {
            return;
        };
        self.req.trace.end_client(
            a.span,
            ClientEnd {
                method: a.method,
                peer,
                peer_key: "tollgate.upstream",
                address: a.address,
                // The target as written in `targets` (a name, or an address).
                host: self.target.clone(),
                port: None,
                status: a.status,
                error: a.error,
                messaging: None,
            },
        );
    }

    /// The upstream's own time for the current attempt: from sending the request,
    /// or from the end of the client's body when that came later.
    pub fn upstream_elapsed(&self) -> Duration {
        let Some(t0) = self.upstream_start else {
            return Duration::ZERO;
        };
        self.body_done.map_or(t0, |b| b.max(t0)).elapsed()
    }
}
