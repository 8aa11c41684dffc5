//! The plugin API: what a plugin implements ([`Plugin`]), what it reads and
//! writes per request ([`RequestCtx`]), what it answers ([`Flow`]), and how it is
//! declared ([`PluginConfig`], [`BuildCtx`]). It sits below the proxy: plugins
//! import this module, never `crate::proxy`, and the proxy drives every plugin
//! through [`Instance`] without naming a plugin type.
//!
//! A request meets its route's chain in the fixed [`Order`] of SPEC §3, whatever
//! order the config lists the plugins in. Hooks map onto Pingora's `ProxyHttp`
//! phases as documented on each method of [`Plugin`].
//!
//! An expected refusal (401, 429, 503 from an open breaker) is a
//! [`Flow::Respond`] value; an `Err` means something broke and becomes a 5xx.

mod body;
mod build;
mod ctx;
mod dynamic;

pub use body::{drain_body, read_body, send_continue, whole_body, BodyError, MAX_BUFFERED_BODY};
pub use build::{build_error, BuildCtx, BuildError, BuildResult, KeyPath, PluginConfig};
pub use ctx::{
    new_request_id, upstream_path, Client, Identity, LimitState, Matched, RequestCtx,
    UpstreamOutcome, UpstreamSide,
};
pub use dynamic::{AnyConfig, DynPlugin, Instance, Kind, Registered, States};

pub use crate::metrics::Series;

use bytes::Bytes;
use pingora::cache::{CacheKey, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::future::Future;

/// Where a plugin runs in a route's chain (SPEC §3's fixed sequence). Within one
/// position, plugins keep the order the config lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    RequestId,
    IpFilter,
    Cors,
    Auth,
    RateLimit,
    /// `json_limits`: a body's shape, before any plugin parses it.
    JsonLimits,
    /// `graphql`: what a GraphQL request asks for.
    GraphQl,
    /// `openapi`: the request against its API description.
    OpenApi,
    Idempotency,
    /// The cache lookup: plugins after it run only on a cache miss.
    Cache,
    CircuitBreaker,
    /// `headers` rewrites last, just before the upstream.
    Headers,
}

/// A response a plugin makes instead of forwarding the request.
pub enum Reply {
    /// A problem+json error (RFC 9457) with extra headers.
    Problem {
        status: u16,
        detail: String,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// A problem+json error whose `errors` member lists what was invalid
    /// (SPEC §13, §14): at most [`MAX_FIELD_ERRORS`] are written.
    Invalid {
        status: u16,
        detail: String,
        errors: Errors,
    },
    /// A complete response of the plugin's own (preflight, cache hit, replay).
    Raw {
        header: Box<ResponseHeader>,
        body: Bytes,
    },
}

/// One entry of a problem's `errors` list: where (a JSON pointer into the
/// body, or a parameter's name) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

/// One entry of a GraphQL refusal's `errors` (SPEC §14), as GraphQL clients
/// read errors: `{"message", "extensions": {"code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GraphQlError {
    pub message: String,
    pub extensions: GraphQlCode,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GraphQlCode {
    pub code: &'static str,
}

impl GraphQlError {
    pub fn new(message: impl Into<String>, code: &'static str) -> GraphQlError {
        GraphQlError {
            message: message.into(),
            extensions: GraphQlCode { code },
        }
    }
}

/// A problem's `errors` member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Errors {
    /// Where and what (`openapi`, `json_limits`).
    Fields(Vec<FieldError>),
    /// GraphQL's shape (`graphql`).
    GraphQl(Vec<GraphQlError>),
}

impl Errors {
    pub const NONE: Errors = Errors::Fields(Vec::new());

    pub fn is_empty(&self) -> bool {
        match self {
            Errors::Fields(v) => v.is_empty(),
            Errors::GraphQl(v) => v.is_empty(),
        }
    }

    /// At most [`MAX_FIELD_ERRORS`] of them.
    pub fn capped(&self) -> Errors {
        match self {
            Errors::Fields(v) => Errors::Fields(v.iter().take(MAX_FIELD_ERRORS).cloned().collect()),
            Errors::GraphQl(v) => {
                Errors::GraphQl(v.iter().take(MAX_FIELD_ERRORS).cloned().collect())
            }
        }
    }
}

/// The most entries a problem's `errors` list carries (SPEC §13).
pub const MAX_FIELD_ERRORS: usize = 10;

/// What a request hook decided.
pub enum Flow {
    /// Go on to the next plugin, then the upstream.
    Continue,
    /// Answer the client now; no later plugin and no upstream sees the request.
    Respond(Reply),
}

impl Flow {
    pub fn problem(status: u16, detail: impl Into<String>) -> Flow {
        Flow::Respond(Reply::Problem {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        })
    }
}

/// The cache phases a plugin may drive (Pingora's `request_cache_filter`,
/// `cache_key_callback`, `response_cache_filter`, `should_serve_stale`). The
/// route's first plugin whose [`Plugin::cache`] returns one is its cache.
pub trait CachePolicy: Send + Sync {
    /// Per-request state shared with the plugin's own hooks.
    type State;
    /// `request_cache_filter`: enable Pingora's cache for this request (after
    /// every plugin ordered before the cache accepted it), or record a bypass.
    fn enable(&self, session: &mut Session, ctx: &RequestCtx, state: &mut Self::State);
    /// `cache_key_callback`: the key of this request.
    fn key(&self, parts: &KeyParts<'_>, headers: &http::HeaderMap) -> CacheKey;
    /// `response_cache_filter`: whether (and how long) this response is stored.
    fn cacheable(&self, resp: &ResponseHeader) -> RespCacheable;
    /// `should_serve_stale`: whether a stale copy may answer this error.
    fn serve_stale(&self, error: Option<&pingora::Error>) -> bool;
    /// `response_filter`, before the response hooks: what the cache did.
    fn observe(&self, phase: pingora::cache::CachePhase, state: &mut Self::State);
    /// Admin purge: entries of `route` whose path starts with `prefix`.
    fn purge(&self, route: &str, prefix: &str) -> usize;
}

/// What the proxy knows of a request that a cache key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub consumer: Option<&'a str>,
}

/// A plugin: one value built per `[plugins.NAME]` when a config is compiled and
/// shared by every route that lists it. Each hook has a default that does
/// nothing, so a plugin implements only the phases it acts in.
///
/// `State` is the plugin's own per-request state: created with `Default` the
/// first time a hook of this request asks for it, handed to every later hook of
/// the same request and dropped with the request. Two instances of one type on
/// one route each get their own.
pub trait Plugin: Send + Sync + 'static {
    type State: Default + Send + Sync + 'static;

    /// Runs before routing, for plugins listed in `[server] plugins` that set
    /// [`PluginConfig::BEFORE_ROUTING`] (`request_id`, so that a 400 or 404
    /// carries the id). Pingora phase: `request_filter`, before the route is
    /// known; `ctx.route()` is `None`.
    fn before_routing(&self, _req: &RequestHeader, _ctx: &mut RequestCtx) {}

    /// Pingora phase: `request_filter` for plugins ordered up to
    /// [`Order::Cache`], `proxy_upstream_filter` (after the cache lookup, so a
    /// cache hit never reaches it) for the rest. Runs in chain order, after
    /// routing. `Respond` ends the chain: the gateway writes the reply and the
    /// upstream is not contacted. `Err` becomes a 5xx. Default: `Continue`.
    fn request(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> impl Future<Output = pingora::Result<Flow>> + Send {
        async { Ok(Flow::Continue) }
    }

    /// Pingora phase: `request_body_filter`, on each piece of the request body
    /// as it streams to the upstream (`end` on the last; `None` or empty when
    /// a piece carries nothing), including a body a plugin read before the
    /// upstream was contacted, as it is replayed. A plugin may change what is
    /// sent (hold bytes back until the next piece). `Err` refuses the request:
    /// the gateway answers with the reply and the upstream request is
    /// abandoned before its body is complete. Default: accept.
    fn request_body(
        &self,
        _body: &mut Option<Bytes>,
        _end: bool,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> Result<(), Reply> {
        Ok(())
    }

    /// Pingora phase: `upstream_request_filter`, on the request head about to go
    /// upstream, after the proxy has set the forwarding headers and before it
    /// applies `ctx.upstream.headers`. `Err` fails the request with a 5xx.
    /// Default: nothing.
    fn upstream_request(
        &self,
        _req: &mut RequestHeader,
        _ctx: &RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<()> {
        Ok(())
    }

    /// Pingora phase: `upstream_response_filter`, on the upstream's response
    /// head (hop-by-hop headers removed), before the response hooks; never for
    /// responses the gateway writes itself. Default: nothing.
    fn upstream_response(
        &self,
        _resp: &ResponseHeader,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) {
    }

    /// Pingora phase: `upstream_response_body_filter`, on each piece of the
    /// upstream's response body as it streams (`end` on the last); the proxy
    /// does not buffer the body. Default: nothing.
    fn upstream_response_body(
        &self,
        _body: &Option<Bytes>,
        _end: bool,
        _ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) {
    }

    /// Pingora phase: `response_filter`, on every response to the client:
    /// proxied, served from the cache, or written by the gateway itself (errors
    /// included). Default: nothing.
    fn response(&self, _resp: &mut ResponseHeader, _ctx: &RequestCtx, _state: &mut Self::State) {}

    /// Runs exactly once per request that was routed to this plugin's route:
    /// just before the gateway writes an answer of its own (so that what it
    /// releases, an idempotency key or a probe slot, is free before the client
    /// can retry), or else in Pingora's `logging` phase. Release per-request
    /// resources and record outcomes here. Default: nothing.
    fn finish(&self, _ctx: &mut RequestCtx, _state: &mut Self::State) {}

    /// For `/upstreams` and `tollgate_circuit_state`: 0 closed, 1 half-open,
    /// 2 open, if this plugin keeps a breaker for `upstream`. Default: `None`.
    fn circuit_state(&self, _upstream: &str) -> Option<i64> {
        None
    }

    /// The metric series this plugin can produce on a route whose chain it is
    /// in, so that they are exported at 0 from startup and after each reload
    /// (SPEC §11, [`crate::metrics::prime`]). Declare them with the same
    /// constants the plugin counts with. Default: none.
    fn series(&self) -> Vec<Series> {
        Vec::new()
    }

    /// Called about once a second by the maintenance service for every plugin
    /// of the live snapshot (background refreshes such as JWKS). Default:
    /// nothing.
    fn tick(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The cache phases this plugin drives, if it is a cache. Default: `None`.
    fn cache(&self) -> Option<&dyn CachePolicy<State = Self::State>> {
        None
    }
}
