//! The `ProxyHttp` implementation: Pingora's phases, in the order a request
//! meets them, each saying what it does for the gateway. The work lives beside
//! it: `route` (the steps of `request_filter`), `upstream` (the target, the
//! request the upstream gets, the checks of its answer), `failure` (outcomes,
//! failure metrics, retries, the status of a failed request) and `respond`
//! (the responses the gateway writes itself).

pub mod app;
pub mod ctx;
mod failure;
pub mod forwarded;
pub mod head;
pub mod problem;
mod queue;
mod respond;
mod route;
mod upstream;

use crate::metrics::METRICS;
use crate::pipeline::{DynPlugin, KeyParts, Reply, RequestCtx};
use crate::runtime::Live;
use async_trait::async_trait;
use bytes::Bytes;
pub use ctx::ProxyCtx;
use http::header;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use std::sync::Arc;
use std::time::Instant;

/// The gateway's proxy: every request runs on the snapshot `live` holds when
/// it starts.
pub struct Gateway {
    pub live: Live,
}

impl Gateway {
    pub fn new(live: Live) -> Self {
        Gateway { live }
    }
}

/// The route's cache plugin (the first in its chain) and its position.
fn route_cache(ctx: &ProxyCtx) -> Option<(usize, Arc<dyn DynPlugin>)> {
    let route = ctx.req.route()?;
    let n = route.cache?;
    Some((n, route.chain[n].plugin.clone()))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = ProxyCtx;

    /// A request's context, on the snapshot current when it starts: a reload
    /// never changes the config under a request.
    fn new_ctx(&self) -> ProxyCtx {
        ProxyCtx::new(RequestCtx::new(self.live.load_full()))
    }

    /// `Expect` is answered by the gateway, never forwarded: the upstream would
    /// answer it a second time, or not at all (SPEC §4). Whether the client
    /// waits for `100 Continue` is remembered (`pipeline::send_continue`).
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        // The trace starts with the request (SPEC §10): the client's
        // `traceparent` continued, or a new trace.
        if let Some(t) = &ctx.req.rt.telemetry {
            ctx.req.trace = t.start(&session.req_header().headers, ctx.req.start);
        }
        let req = session.req_header_mut();
        if let Some(v) = req.remove_header(&header::EXPECT) {
            ctx.req.client.expect_continue = v.as_bytes().eq_ignore_ascii_case(b"100-continue")
                && req.version != http::Version::HTTP_10
                && req.version != http::Version::HTTP_09;
        }
        Ok(())
    }

    /// Admission (client address, head size, forwarding headers, path, API
    /// version, route, declared body length, the upstream's target; see
    /// `route::admit`), answered with a problem+json refusal at the first
    /// step that fails, then the route's plugins up to the cache. `true`: the
    /// request was answered.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<bool> {
        if let Err(refusal) = route::admit(session, ctx) {
            self.refuse(session, ctx, refusal).await;
            return Ok(true);
        }
        self.run_plugins_before_cache(session, ctx).await
    }

    /// After a cache miss (or on a route without cache): the route's plugins
    /// after the cache phase (circuit_breaker, headers), then `100 Continue`
    /// when the client waits for it, since every plugin accepted the request;
    /// a route with a queue publishes the request (`queue`). `false`: it was
    /// answered here.
    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<bool> {
        if ctx.req.route().is_none() {
            return Ok(true);
        }
        if self.run_plugins_after_cache(session, ctx).await? {
            return Ok(false);
        }
        // Every plugin accepted the request: the body may come now.
        crate::pipeline::send_continue(session, &ctx.req).await;
        // A route that publishes to a queue is answered here (SPEC §12).
        if let Some(q) = ctx.req.route().and_then(|r| r.queue.clone()) {
            self.publish(session, ctx, q).await;
            return Ok(false);
        }
        Ok(true)
    }

    /// The route's cache plugin decides whether Pingora's cache is on for
    /// this request.
    fn request_cache_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        if let Some((n, c)) = route_cache(ctx) {
            c.cache_enable(session, &ctx.req, ctx.states.slot(n));
        }
        Ok(())
    }

    /// The cache key: route, method, scheme, the forwarded host, normalised
    /// path, query and consumer, with the plugin's `vary` headers.
    fn cache_key_callback(
        &self,
        session: &Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<CacheKey> {
        let Some((_, c)) = route_cache(ctx) else {
            return Error::e_explain(ErrorType::InternalError, "no cache plugin on this route");
        };
        let req = session.req_header();
        // What the upstream is told (Host, X-Forwarded-Host, -Proto) is what
        // is keyed.
        let f = &ctx.forwarding;
        let authority = f.authority.as_ref().map_or("", |a| a.as_str());
        let host: std::borrow::Cow<'_, str> = match &f.kept_host {
            Some(kept) if f.authority.as_ref() != Some(kept) => {
                format!("{authority} {}", kept.as_str()).into()
            }
            _ => authority.into(),
        };
        let route = ctx
            .req
            .route()
            .map(|r| r.name.clone())
            .unwrap_or_else(|| Arc::from(""));
        let parts = KeyParts {
            route: &route,
            method: req.method.as_str(),
            scheme: f.proto(),
            host: &host,
            path: ctx.req.matched.path.as_deref().unwrap_or("/"),
            query: req.uri.query(),
            consumer: ctx.req.identity.consumer.as_deref(),
        };
        match c.cache_key(&parts, &req.headers) {
            Some(k) => Ok(k),
            None => Error::e_explain(ErrorType::InternalError, "no cache plugin on this route"),
        }
    }

    /// Whether the upstream's response may be stored (the cache plugin's rules).
    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<RespCacheable> {
        Ok(route_cache(ctx)
            .and_then(|(_, c)| c.cache_cacheable(resp))
            .unwrap_or(RespCacheable::Uncacheable(NoCacheReason::Custom(
                "no cache plugin",
            ))))
    }

    /// No cache variants: the configured `vary` headers are part of the
    /// primary key, and a response varying on anything else is not stored.
    fn cache_vary_filter(
        &self,
        _meta: &CacheMeta,
        _ctx: &mut ProxyCtx,
        _req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        None
    }

    /// Whether a stale copy answers an upstream error (the cache plugin's
    /// `stale_if_error`), with the failure still recorded for breakers and
    /// metrics.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut ProxyCtx,
        error: Option<&Error>,
    ) -> bool {
        let serve = route_cache(ctx).is_some_and(|(_, c)| c.cache_serve_stale(error));
        if let (true, Some(e)) = (serve, error) {
            failure::record_stale_served(ctx, e);
        }
        serve
    }

    /// The request body as it streams: `max_request_body` (413) and the
    /// minimum body rate (408), and when it ended (upstream latency is counted
    /// from there).
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if ctx.body_bytes > ctx.req.rt.limits.max_request_body {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_request_body",
                );
            }
        }
        ctx.body_hooks(body, end)?;
        if end && ctx.body_done.is_none() {
            ctx.body_done = Some(Instant::now());
        }
        // Minimum body rate: the body may take body_timeout, plus a second per
        // min_body_rate bytes received so far; the next read waits no longer
        // than what is left. Not for an upgraded connection's tunnel.
        let limits = &ctx.req.rt.limits;
        if !end && limits.min_body_rate > 0 && !session.was_upgraded() {
            let allowed = limits.body_timeout
                + std::time::Duration::from_secs_f64(
                    ctx.body_bytes as f64 / limits.min_body_rate as f64,
                );
            match allowed.checked_sub(ctx.req.start.elapsed()) {
                Some(left) if !left.is_zero() => {
                    session.set_read_timeout(Some(left.min(limits.body_timeout)))
                }
                _ => {
                    return Error::e_explain(
                        ErrorType::HTTPStatus(408),
                        "request body slower than min_body_rate",
                    )
                }
            }
        }
        Ok(())
    }

    /// The target for this attempt (load balancing, retries, the time left
    /// before `request_timeout`; see `upstream::select_peer`).
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        upstream::select_peer(session, ctx)
    }

    /// The request head the upstream gets: its target, forwarding and
    /// hop-by-hop headers (`upstream::prepare_request`), then the plugins'
    /// `upstream_request` hooks and the headers they asked for.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up_req: &mut RequestHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        upstream::prepare_request(session, up_req, ctx)?;
        // The hooks read the context: borrowed, no snapshot handle cloned.
        let ProxyCtx { req, states, .. } = &mut *ctx;
        if let Some(route) = req.route() {
            for (n, i) in route.chain.iter().enumerate() {
                i.plugin.upstream_request(up_req, req, states.slot(n))?;
            }
        }
        for (n, v) in &ctx.req.upstream.headers {
            up_req.insert_header(n.clone(), v.clone())?;
        }
        Ok(())
    }

    /// The upstream's response head: refused when no client should get it
    /// (502), its outcome and latency recorded, a 5xx retried when the policy
    /// says so, hop-by-hop headers removed, then the plugins'
    /// `upstream_response` hooks. Interim (1xx) heads pass as they are.
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        if resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        upstream::check_response(session, resp, ctx)?;
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel now: reads from the client wait up to idle_timeout, not body_timeout.
            session.set_read_timeout(Some(ctx.req.rt.limits.idle_timeout));
        }
        failure::record_response(session, ctx, resp.status.as_u16())?;
        if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            for n in forwarded::hop_by_hop(&resp.headers, false) {
                resp.remove_header(&n);
            }
        }
        ctx.upstream_response_hooks(resp);
        Ok(())
    }

    /// The upstream's response body, chunk by chunk, through the plugins'
    /// `upstream_response_body` hooks (a response kept for idempotent replay, …).
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        ctx.upstream_body_hooks(body, end_of_stream);
        Ok(None)
    }

    /// Every response on its way to the client, proxied or served from the
    /// cache: the cache plugin sees the cache phase, and the response gets the
    /// chain's response headers and the API version headers.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        if let Some((n, c)) = route_cache(ctx) {
            c.cache_observe(session.cache.phase(), ctx.states.slot(n));
        }
        self.decorate(resp, ctx);
        Ok(())
    }

    /// Connecting to the target failed: counted, and retried when the route's
    /// policy allows it (`failure::connect_failed`).
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut ProxyCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        failure::connect_failed(session, ctx, e)
    }

    /// An error while proxying: a stalled client body is the client's 408, an
    /// upstream error is counted and maybe retried (`failure::proxy_failed`).
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut ProxyCtx,
        client_reused: bool,
    ) -> Box<Error> {
        failure::proxy_failed(session, ctx, e, client_reused)
    }

    /// The request could not be proxied: the chain's `finish` hooks run, and a
    /// client still waiting for an answer gets a problem+json with the status
    /// of `failure::failure_status`; the connection is not reused.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut ProxyCtx,
    ) -> FailToProxy {
        if let Some(reply) = ctx.refused.take() {
            let code = match &reply {
                Reply::Problem { status, .. } | Reply::Invalid { status, .. } => *status,
                Reply::Raw { header, .. } => header.status.as_u16(),
            };
            session.set_keepalive(None);
            if !failure::final_response_written(session) {
                crate::pipeline::drain_body(session, &ctx.req).await;
                self.respond(session, ctx, reply).await;
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let code = failure::failure_status(session, ctx, e);
        self.finish_chain(ctx);
        if code > 0 && !failure::final_response_written(session) {
            // The connection is not reused after an error (see below): say so.
            session.set_keepalive(None);
            let (detail, extra) = failure::failure_problem(session, ctx, e, code);
            self.respond_problem(session, ctx, code, detail, extra)
                .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The end of every request: the chain's `finish` hooks (when not run
    /// yet), `tollgate_requests_total`, the route's duration histogram, the
    /// request's spans and the access log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut ProxyCtx) {
        self.finish_chain(ctx);
        ctx.end_attempt();
        // Taken out of the context to end it.
        let mut trace = std::mem::take(&mut ctx.req.trace);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.req.status);
        let route = ctx.req.route().map(|r| &*r.name).unwrap_or("");
        let method = session.req_header().method.as_str();
        let elapsed = ctx.req.start.elapsed();
        let method_label = crate::metrics::method_label(&session.req_header().method);
        // StatusCode's text comes from a static table: no allocation per request.
        let code = http::StatusCode::from_u16(status).ok();
        let code_label = code.as_ref().map_or("0", |c| c.as_str());
        METRICS
            .requests_total
            .with_label_values(&[route, method_label, code_label])
            .inc();
        if let Some(r) = ctx.req.route() {
            r.metrics.duration.observe(elapsed.as_secs_f64());
        }
        let path = ctx
            .req
            .matched
            .path
            .as_deref()
            .unwrap_or_else(|| session.req_header().uri.path());
        let trace_id = trace.trace_id_hex();
        if trace.is_sampled() {
            let end = crate::telemetry::ServerEnd {
                method: method_label,
                path: &crate::logging::mask_pans(path),
                http_route: ctx.req.route().map(|r| r.http_route.clone()),
                status,
                client: ctx.req.client.ip,
                route: ctx.req.route().map(|r| r.name.clone()),
                consumer: ctx.req.identity.consumer.as_deref(),
            };
            trace.finish(end);
        }
        crate::logging::access(&crate::logging::Access {
            trace_id: trace_id
                .as_ref()
                .and_then(|t| std::str::from_utf8(t).ok())
                .unwrap_or(""),
            request_id: ctx.req.request_id.as_deref().unwrap_or(""),
            route,
            method,
            path,
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream: ctx.target.as_deref().unwrap_or(""),
            bytes: session.body_bytes_sent() as u64,
            consumer: ctx.req.identity.consumer.as_deref().unwrap_or(""),
            client_ip: ctx.req.client.ip,
            error: e.map(|e| e.etype().as_str()),
        });
    }

    /// How Pingora's own error log names the request.
    fn request_summary(&self, session: &Session, ctx: &ProxyCtx) -> String {
        // Pingora's error log line: method and normalised path only — never the
        // query string, which may carry secrets.
        format!(
            "{} {} request_id={}",
            crate::logging::mask_pans(session.req_header().method.as_str()),
            crate::logging::mask_pans(ctx.req.matched.path.as_deref().unwrap_or("-")),
            ctx.req.request_id.as_deref().unwrap_or("-")
        )
    }
}
