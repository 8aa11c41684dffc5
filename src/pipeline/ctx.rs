//! The per-request context plugins read and write: who the client is, which
//! route matched, who the request acts for, and what goes to and came from the
//! upstream. The proxy keeps its own bookkeeping (forwarding facts, attempts,
//! plugin states) beside it, out of the plugins' reach.

use crate::runtime::router::Params;
use crate::runtime::{Route, Runtime};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the last upstream attempt of a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamOutcome {
    /// The response status, when a response header arrived.
    pub status: Option<u16>,
    /// A connect error, timeout or broken response.
    pub error: bool,
    /// From sending the request to the response header (or the error).
    pub elapsed: Duration,
}

/// The tightest rate limit a request met, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset: u64,
    /// Seconds until the next request can pass (`Retry-After` of a refusal;
    /// 0 while requests pass).
    pub retry_after: u64,
}

impl LimitState {
    /// Keep the more restrictive of two states.
    pub fn merge(a: Option<LimitState>, b: LimitState) -> LimitState {
        match a {
            Some(a)
                if a.remaining < b.remaining
                    || (a.remaining == b.remaining && a.reset >= b.reset) =>
            {
                a
            }
            _ => b,
        }
    }
}

/// The client and what it asked of the connection.
#[derive(Debug, Default)]
pub struct Client {
    /// After `trusted_proxies` (SPEC §3).
    pub ip: Option<IpAddr>,
    /// The request's `Origin` header, for `cors`.
    pub origin: Option<http::HeaderValue>,
    /// The client sent `Expect: 100-continue` (the header itself is removed:
    /// the gateway answers it, see [`super::send_continue`]).
    pub expect_continue: bool,
}

/// The route that matched, and what routing decided.
#[derive(Debug, Default)]
pub struct Matched {
    /// Index into `rt.routes`.
    pub index: Option<usize>,
    pub params: Params,
    /// Normalised path, for logs and keys.
    pub path: Option<String>,
    /// The API version the request named.
    pub version: Option<String>,
}

/// Who the request acts for, set by authentication plugins.
#[derive(Debug, Default)]
pub struct Identity {
    pub consumer: Option<String>,
    /// Verified token claims (`jwt`), for claim-keyed plugins.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// What goes to the upstream and what came back.
#[derive(Debug, Default)]
pub struct UpstreamSide {
    /// Headers plugins want set on the upstream request (consumer, forwarded
    /// claims, forward_auth's copied headers); applied after every plugin's
    /// `upstream_request` hook.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// How the last attempt ended (for breakers), set by the proxy.
    pub outcome: Option<UpstreamOutcome>,
}

/// Per-request state shared by the phases and the plugins.
pub struct RequestCtx {
    /// The snapshot this request runs on, from start to end.
    pub rt: Arc<Runtime>,
    pub start: Instant,
    pub request_id: Option<String>,
    pub client: Client,
    pub matched: Matched,
    pub identity: Identity,
    pub upstream: UpstreamSide,
    /// The tightest rate limit this request met (every `rate_limit` on the
    /// route reports here; the headers show the tightest).
    pub rate_limit: Option<LimitState>,
    /// The status of a response the gateway wrote itself.
    pub status: u16,
    /// The request's trace context (`[telemetry]`): calls a plugin makes
    /// carry its `traceparent` and record CLIENT spans in it.
    pub trace: crate::telemetry::Trace,
    /// The id of a verified webhook whose scheme has one (set by
    /// `webhook_signature`): a queue's de-duplication id.
    pub webhook_id: Option<String>,
    /// The whole body, once a plugin read it before the upstream was
    /// contacted ([`super::read_body`]): later plugins, and a queue's
    /// publish, use these bytes.
    pub body: Option<bytes::Bytes>,
    /// Upstream attempts begun so far. A retry sends the request body again
    /// from its start, through the `request_body` hooks too.
    pub attempts: u32,
    /// The complexity a `graphql` plugin measured (summed over a batch),
    /// for later plugins (a cost-based limit).
    pub graphql_complexity: Option<u64>,
}

impl RequestCtx {
    pub fn new(rt: Arc<Runtime>) -> Self {
        RequestCtx {
            rt,
            start: Instant::now(),
            request_id: None,
            client: Client::default(),
            matched: Matched::default(),
            identity: Identity::default(),
            upstream: UpstreamSide::default(),
            rate_limit: None,
            status: 0,
            trace: crate::telemetry::Trace::default(),
            webhook_id: None,
            body: None,
            attempts: 0,
            graphql_complexity: None,
        }
    }

    /// The route that matched, once routing is done.
    pub fn route(&self) -> Option<&Route> {
        self.matched.index.map(|i| &self.rt.routes[i])
    }

    /// The matched route's name (metric label), `""` before routing.
    /// The path the upstream receives: the normalised path without the
    /// route's `strip_prefix` (`""` before routing).
    pub fn upstream_path(&self) -> &str {
        let path = self.matched.path.as_deref().unwrap_or("");
        upstream_path(path, self.route().and_then(|r| r.strip_prefix.as_deref()))
    }

    pub fn route_name(&self) -> &str {
        self.route().map_or("", |r| &r.name)
    }

    /// The request's id, made now if no plugin assigned one.
    pub fn request_id(&mut self) -> &str {
        self.request_id.get_or_insert_with(new_request_id)
    }
}

/// A fresh request id (a random UUID).
/// `path` (normalised) without the route's `strip_prefix`: `/` when nothing
/// is left.
pub fn upstream_path<'a>(path: &'a str, strip: Option<&str>) -> &'a str {
    match strip {
        Some(sp) if !sp.is_empty() => match &path[sp.len().min(path.len())..] {
            "" => "/",
            rest => rest,
        },
        _ => path,
    }
}

pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
