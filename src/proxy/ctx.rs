//! The proxy's per-request context: the plugins' [`RequestCtx`] and their
//! [`States`], plus what only the proxy keeps (forwarding facts, attempts,
//! timings and accounting).

use super::forwarded::Forwarding;
use crate::pipeline::{RequestCtx, States, UpstreamOutcome};
use pingora::lb::Backend;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            _in_flight: crate::signals::InFlight::request(),
        }
    }

    pub(super) fn record_outcome(&mut self, status: Option<u16>, error: bool) {
        let elapsed = self.upstream_elapsed();
        self.req.upstream.outcome = Some(UpstreamOutcome {
            status,
            error,
            elapsed,
        });
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
