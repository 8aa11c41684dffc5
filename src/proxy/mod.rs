//! The `ProxyHttp` implementation: one snapshot per request, routing, the
//! plugin chain, upstream selection with retries, and the responses the
//! gateway writes itself.

pub mod app;
pub mod forwarded;
pub mod head;
pub mod problem;

use crate::metrics::METRICS;
pub mod ctx;

use crate::pipeline::{DynPlugin, Flow, KeyParts, Order, Reply, RequestCtx};
use crate::runtime::path::normalize_path;
use crate::runtime::router::{RequestInfo, RouteMatch};
use crate::runtime::upstream::HashKey;
use crate::runtime::versions::Resolved;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
pub use ctx::ProxyCtx;
use http::header;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    pub state: Arc<ArcSwap<Runtime>>,
}

impl Gateway {
    pub fn new(state: Arc<ArcSwap<Runtime>>) -> Self {
        Gateway { state }
    }

    /// Headers every response gets: the chain's response hooks and the API
    /// version lifecycle headers.
    fn decorate(&self, resp: &mut ResponseHeader, ctx: &mut ProxyCtx) {
        let rt = ctx.req.rt.clone();
        match ctx.req.matched.index.map(|i| &rt.routes[i]) {
            Some(route) => {
                for (n, i) in route.chain.iter().enumerate() {
                    i.plugin.response(resp, &ctx.req, ctx.states.slot(n));
                }
            }
            None => {
                for i in &rt.before_routing {
                    i.plugin.response(resp, &ctx.req, &mut None);
                }
            }
        }
        if let (Some(v), Some(versions)) = (&ctx.req.matched.version, &ctx.req.rt.versions) {
            if let Some(info) = versions.known.get(v) {
                for (name, val) in [
                    ("deprecation", &info.deprecation),
                    ("sunset", &info.sunset),
                    ("link", &info.link),
                ] {
                    if let Some(val) = val {
                        let _ = resp.insert_header(name, val.clone());
                    }
                }
            }
        }
    }

    /// Write a problem+json response. Never fails the request further: a client
    /// that went away is simply gone.
    pub async fn respond_problem(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
        status: u16,
        detail: &str,
        extra: Vec<(http::HeaderName, http::HeaderValue)>,
    ) {
        let body = problem::body(status, detail, ctx.req.request_id());
        let mut resp = match ResponseHeader::build(status, Some(4 + extra.len())) {
            Ok(r) => r,
            Err(_) => return,
        };
        let _ = resp.insert_header(header::CONTENT_TYPE, problem::CONTENT_TYPE);
        let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        for (n, v) in extra {
            let _ = resp.append_header(n, v);
        }
        self.decorate(&mut resp, ctx);
        ctx.req.status = status;
        if ctx.req.client.expect_continue
            && session.response_written().is_none()
            && !session.is_body_done()
        {
            // Refused before `100 Continue`: the client may never send the body it
            // announced, so the connection cannot carry another request.
            session.set_keepalive(None);
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        if session
            .write_response_header(Box::new(resp), head_only)
            .await
            .is_ok()
            && !head_only
        {
            let _ = session.write_response_body(Some(body), true).await;
        }
    }

    /// Every plugin's `finish` hook, once per request: before the gateway writes
    /// an answer of its own (so that released resources, an idempotency key or a
    /// probe slot, are free before the client can send its next request), or
    /// else in the logging phase.
    fn finish_chain(&self, ctx: &mut ProxyCtx) {
        if std::mem::replace(&mut ctx.finished, true) {
            return;
        }
        let rt = ctx.req.rt.clone();
        if let Some(route) = ctx.req.matched.index.map(|i| &rt.routes[i]) {
            for (n, i) in route.chain.iter().enumerate() {
                i.plugin.finish(&mut ctx.req, ctx.states.slot(n));
            }
        }
    }

    async fn respond(&self, session: &mut Session, ctx: &mut ProxyCtx, reply: Reply) {
        self.finish_chain(ctx);
        match reply {
            Reply::Problem {
                status,
                detail,
                headers,
            } => {
                self.respond_problem(session, ctx, status, &detail, headers)
                    .await
            }
            Reply::Raw { mut header, body } => {
                self.decorate(&mut header, ctx);
                ctx.req.status = header.status.as_u16();
                let empty = body.is_empty();
                if session.write_response_header(header, empty).await.is_ok() && !empty {
                    let _ = session.write_response_body(Some(body), true).await;
                }
            }
        }
    }

    fn hash_key<'a>(&self, session: &'a Session, ctx: &'a ProxyCtx, key: &'a HashKey) -> &'a [u8] {
        match key {
            HashKey::Header(h) => session
                .req_header()
                .headers
                .get(h)
                .map(|v| v.as_bytes())
                .unwrap_or(b""),
            HashKey::Ip => b"",
            HashKey::Path => ctx.req.matched.path.as_deref().unwrap_or("").as_bytes(),
            HashKey::Param(p) => ctx
                .req
                .matched
                .params
                .iter()
                .find(|(n, _)| &**n == p.as_str())
                .map(|(_, v)| v.as_bytes())
                .unwrap_or(b""),
        }
    }

    /// Whether this request may be sent again to another target.
    fn retryable(&self, session: &Session, ctx: &ProxyCtx) -> bool {
        let Some(route) = ctx.req.route() else {
            return false;
        };
        ctx.tried.len() <= route.upstream.retry.attempts && self.resendable(session, ctx)
    }

    /// Whether this request may be sent again at all: idempotent (by method or an
    /// `Idempotency-Key`), its body still whole in the retry buffer, nothing answered
    /// yet and time left before `request_timeout`.
    fn resendable(&self, session: &Session, ctx: &ProxyCtx) -> bool {
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

    fn count_failure(&self, ctx: &mut ProxyCtx, kind: &str) {
        if let Some(route) = ctx.req.route() {
            METRICS
                .upstream_failures
                .with_label_values(&[&route.upstream.name, kind])
                .inc();
        }
        ctx.failure_counted = true;
    }
}

/// Whether a final (non-1xx) response head was sent to the client.
fn final_response_written(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| !r.status.is_informational())
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

/// The client connection a request came on, as a group of Pingora's upstream
/// connection pool: its address and the time it was accepted (nanoseconds),
/// which no other connection shares even when the address is reused. An idle
/// upstream connection is then reused only by the client connection that
/// opened it (SPEC §4: bytes that arrive on a pooled connection after it was
/// taken for the next request cannot be told from that request's response in
/// HTTP/1.1; this keeps them from ever reaching another client).
fn connection_group(session: &Session) -> u64 {
    use std::hash::{Hash, Hasher};
    let accepted = session
        .digest()
        .and_then(|d| d.timing_digest.first())
        .and_then(|t| t.as_ref())
        .and_then(|t| t.established_ts.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    session.client_addr().hash(&mut h);
    accepted.hash(&mut h);
    // 0 is Pingora's shared group: never use it for a client connection.
    h.finish().max(1)
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

/// The route's cache plugin (the first in its chain) and its position.
fn route_cache(ctx: &ProxyCtx) -> Option<(usize, Arc<dyn DynPlugin>)> {
    let route = ctx.req.route()?;
    let n = route.cache?;
    Some((n, route.chain[n].plugin.clone()))
}

fn header_bytes(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.raw_path().len()
}

fn response_header_bytes(resp: &ResponseHeader) -> usize {
    resp.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

fn hv(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = ProxyCtx;

    fn new_ctx(&self) -> ProxyCtx {
        ProxyCtx::new(RequestCtx::new(self.state.load_full()))
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        // `Expect` is answered by the gateway, never forwarded: the upstream would
        // answer it a second time, or not at all (SPEC §4).
        let req = session.req_header_mut();
        if let Some(v) = req.remove_header(&header::EXPECT) {
            ctx.req.client.expect_continue = v.as_bytes().eq_ignore_ascii_case(b"100-continue")
                && req.version != http::Version::HTTP_10
                && req.version != http::Version::HTTP_09;
        }
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<bool> {
        let rt = ctx.req.rt.clone();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let client_ip =
            forwarded::client_ip(peer, &session.req_header().headers, &rt.trusted_proxies);
        ctx.req.client.ip = *client_ip.as_ref().unwrap_or(&peer);
        let trusted_peer = peer.is_some_and(|p| forwarded::is_trusted(p, &rt.trusted_proxies));
        // Client-sent headers an upstream could take for the client's address,
        // host, URL or method are gone before any plugin, the cache or the
        // upstream sees the request (SPEC §4).
        for n in forwarded::spoofable_headers(&session.req_header().headers, trusted_peer) {
            session.req_header_mut().remove_header(&n);
        }
        for i in &rt.before_routing {
            i.plugin.before_routing(session.req_header(), &mut ctx.req);
        }

        let req = session.req_header();
        if req.headers.len() > rt.limits.max_headers
            || header_bytes(req) > rt.limits.max_header_size
        {
            self.respond_problem(
                session,
                ctx,
                431,
                "the request's header section is too large",
                vec![],
            )
            .await;
            return Ok(true);
        }

        // Who and what the request names, decided once (SPEC §3
        // `trusted_proxies`, §4): refused before routing and any plugin.
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let checked = client_ip.and_then(|_| {
            if forwarded::is_miscased_method(&req.method) {
                return Err(forwarded::BadRequest(
                    "a standard method must be written in upper case",
                ));
            }
            let target = forwarded::target_authority(&req.uri, req.raw_path())?;
            forwarded::Forwarding::from_request(trusted_peer, tls, &req.headers, target)
        });
        match checked {
            Ok(f) => ctx.forwarding = f,
            Err(e) => {
                self.respond_problem(session, ctx, 400, e.0, vec![]).await;
                return Ok(true);
            }
        }

        let req = session.req_header();
        // An HTTP/1 head never carries one (`head.rs`); an HTTP/2 `:path` may, and an
        // upstream's HTTP/1.1 request line must not.
        if !req.uri.path().is_ascii() || !req.uri.query().is_none_or(str::is_ascii) {
            self.respond_problem(
                session,
                ctx,
                400,
                "invalid request path: a non-ASCII byte must be percent-encoded",
                vec![],
            )
            .await;
            return Ok(true);
        }
        let path = match normalize_path(req.uri.path()) {
            Ok(p) => p.into_owned(),
            Err(e) => {
                let detail = format!("invalid request path: {e}");
                self.respond_problem(session, ctx, 400, &detail, vec![])
                    .await;
                return Ok(true);
            }
        };
        let query = req.uri.query().map(str::to_string);

        if let Some(versions) = &rt.versions {
            match versions.resolve(&path, query.as_deref(), &req.headers) {
                Resolved::None => {}
                Resolved::Known(v, info) => {
                    let sunset = info.and_then(|i| i.sunset_at);
                    ctx.req.matched.version = Some(v);
                    if let Some(at) = sunset {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0);
                        if now >= at {
                            let detail = format!(
                                "API version {} was retired; see the Link header for its successor",
                                ctx.req.matched.version.as_deref().unwrap_or("")
                            );
                            self.respond_problem(session, ctx, 410, &detail, vec![])
                                .await;
                            return Ok(true);
                        }
                    }
                }
                Resolved::Unknown(v) => {
                    let detail = format!(
                        "unknown API version {:?}; known versions: {}",
                        v,
                        versions.known_list.join(", ")
                    );
                    self.respond_problem(session, ctx, 404, &detail, vec![])
                        .await;
                    return Ok(true);
                }
            }
        }

        let req = session.req_header();
        let host = ctx.forwarding.host();
        ctx.req.client.origin = req.headers.get(header::ORIGIN).cloned();
        // A CORS preflight is routed as the request it announces, so that the
        // route's `cors` plugin can answer it (SPEC: cors answers preflight itself);
        // a path that belongs to a `cors` route is answered by that plugin, even for
        // a method the route does not allow (see `cors::route_preflight`).
        let preflight_method = (req.method == http::Method::OPTIONS
            && ctx.req.client.origin.is_some())
        .then(|| req.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
        let info = RequestInfo {
            host,
            path: &path,
            method: &req.method,
            headers: &req.headers,
            version: ctx.req.matched.version.as_deref(),
        };
        let found = match &preflight_method {
            Some(announced) => crate::runtime::preflight::route_preflight(&rt, &info, announced),
            None => rt.router.find(&info),
        };
        let method = req.method.clone();
        match found {
            RouteMatch::Found { route, params } => {
                ctx.req.matched.index = Some(route);
                ctx.req.matched.params = params;
            }
            RouteMatch::MethodNotAllowed { allow } => {
                let detail = format!("{method} is not allowed here; allowed: {allow}");
                self.respond_problem(
                    session,
                    ctx,
                    405,
                    &detail,
                    vec![(header::ALLOW, hv(&allow))],
                )
                .await;
                return Ok(true);
            }
            RouteMatch::NotFound => {
                self.respond_problem(session, ctx, 404, "no route matches this request", vec![])
                    .await;
                return Ok(true);
            }
        }
        let route = &rt.routes[ctx.req.matched.index.unwrap_or_default()];

        let declared = session
            .req_header()
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > rt.limits.max_request_body) {
            let detail = format!(
                "the request body is larger than {} bytes",
                rt.limits.max_request_body
            );
            self.respond_problem(session, ctx, 413, &detail, vec![])
                .await;
            return Ok(true);
        }

        let fwd_path = match &route.strip_prefix {
            Some(sp) if !sp.is_empty() => {
                let rest = &path[sp.len().min(path.len())..];
                if rest.is_empty() {
                    "/".to_string()
                } else {
                    rest.to_string()
                }
            }
            _ => path.clone(),
        };
        // The upstream gets an origin-form target: the normalised path (prefix
        // stripped) and the query as sent. When that is what the client sent,
        // the request's URI is forwarded as it is, without building and
        // parsing another.
        // (Pingora writes the target the client sent, byte for byte, unless
        // the URI is replaced.)
        let raw = session.req_header().raw_path();
        let unchanged = fwd_path == path
            && raw.starts_with(path.as_bytes())
            && match &query {
                None => raw.len() == path.len(),
                Some(q) => {
                    raw.len() == path.len() + 1 + q.len()
                        && raw[path.len()] == b'?'
                        && raw.ends_with(q.as_bytes())
                }
            };
        ctx.upstream_uri = (!unchanged).then(|| match &query {
            Some(q) => format!("{fwd_path}?{q}"),
            None => fwd_path,
        });
        ctx.req.matched.path = Some(path);

        // Plugins up to the cache phase run here; the rest run in
        // `proxy_upstream_filter`, after Pingora's cache lookup, so that a cache
        // hit never reaches them (SPEC §3: cache → circuit_breaker → upstream).
        let chain = route.chain.clone();
        ctx.states.prepare(chain.len());
        for (n, inst) in chain.iter().enumerate() {
            if inst.order > Order::Cache {
                break;
            }
            match inst
                .plugin
                .request(session, &mut ctx.req, ctx.states.slot(n))
                .await?
            {
                Flow::Continue => {}
                Flow::Respond(reply) => {
                    self.respond(session, ctx, reply).await;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<bool> {
        let Some(chain) = ctx.req.route().map(|r| r.chain.clone()) else {
            return Ok(true);
        };
        for (n, inst) in chain.iter().enumerate() {
            if inst.order <= Order::Cache {
                continue;
            }
            match inst
                .plugin
                .request(session, &mut ctx.req, ctx.states.slot(n))
                .await?
            {
                Flow::Continue => {}
                Flow::Respond(reply) => {
                    self.respond(session, ctx, reply).await;
                    return Ok(false);
                }
            }
        }
        // Every plugin accepted the request: the body may come now.
        crate::pipeline::send_continue(session, &ctx.req).await;
        Ok(true)
    }

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

    fn cache_vary_filter(
        &self,
        _meta: &CacheMeta,
        _ctx: &mut ProxyCtx,
        _req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        // The configured `vary` headers are part of the primary key, and a
        // response varying on anything else is not stored: no variants.
        None
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut ProxyCtx,
        error: Option<&Error>,
    ) -> bool {
        let serve = route_cache(ctx).is_some_and(|(_, c)| c.cache_serve_stale(error));
        // A 5xx answered with a stale copy never reaches upstream_response_filter:
        // record it here so that breakers and metrics still see the failure.
        if let (true, Some(e)) = (serve, error) {
            if let (ErrorType::HTTPStatus(s), ErrorSource::Upstream) = (e.etype(), e.esource()) {
                if ctx.upstream_start.is_some() {
                    ctx.record_outcome(Some(*s), false);
                    if !ctx.failure_counted {
                        self.count_failure(ctx, "status");
                    }
                }
            }
        }
        serve
    }

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

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let rt = ctx.req.rt.clone();
        let Some(route) = ctx.req.matched.index.map(|i| &rt.routes[i]) else {
            return Error::e_explain(ErrorType::HTTPStatus(404), "no route");
        };
        let up = &route.upstream;
        let ip_key;
        let key: &[u8] = match &up.hash_key {
            Some(HashKey::Ip) => {
                ip_key = ctx
                    .req
                    .client
                    .ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                ip_key.as_bytes()
            }
            Some(k) => self.hash_key(session, ctx, k),
            None => b"",
        };
        let tried = &ctx.tried;
        let backend = up
            .pool
            .select_with(key, |b, healthy| healthy && !tried.contains(b))
            .or_else(|| {
                if tried.is_empty() {
                    None
                } else {
                    up.pool.select_with(key, |_, healthy| healthy)
                }
            });
        let Some(backend) = backend else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy target");
        };
        let now = Instant::now();
        let remaining = rt
            .limits
            .request_timeout
            .saturating_sub(now.saturating_duration_since(ctx.req.start));
        if remaining.is_zero() {
            return Error::e_explain(ErrorType::HTTPStatus(504), "request_timeout reached");
        }
        let mut peer = up.peer(&backend);
        if !up.share_connections {
            peer.group_key = connection_group(session);
        }
        peer.options.read_timeout = peer.options.read_timeout.map(|t| t.min(remaining));
        peer.options.total_connection_timeout = Some(remaining.min(up.connect_timeout));
        ctx.target = Some(up.label(&backend));
        ctx.tried.push(backend);
        ctx.upstream_start = Some(now);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up_req: &mut RequestHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        if let Some(uri) = &ctx.upstream_uri {
            if let Ok(u) = uri.parse::<http::Uri>() {
                up_req.set_uri(u);
            }
        }
        let downstream = session.req_header();
        let upgrade = forwarded::is_upgrade(&downstream.headers, downstream.version);
        for n in forwarded::hop_by_hop(&up_req.headers, upgrade) {
            up_req.remove_header(&n);
        }
        // `Connection: upgrade` only ever goes with the `Upgrade` it names.
        if upgrade && up_req.headers.contains_key(header::UPGRADE) {
            up_req.insert_header(header::CONNECTION, "upgrade")?;
        } else if !session.is_http2()
            && session.get_keepalive().is_none()
            && ctx
                .req
                .route()
                .is_some_and(|r| !r.upstream.share_connections)
        {
            // This client connection closes after the response, and its upstream
            // connection serves no other client (`connection_group`): the upstream
            // may close it too, rather than leave it idle in the pool.
            up_req.insert_header(header::CONNECTION, "close")?;
        }

        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let f = &ctx.forwarding;
        // The host that was routed and keyed is the host forwarded. A request
        // that named none (HTTP/1.0 without Host) is sent to the target's
        // address, as nginx's `$proxy_host`: HTTP/1.1 requires a Host.
        match &f.authority {
            Some(a) => {
                if up_req.headers.get(header::HOST) != Some(a.header_value()) {
                    up_req.insert_header(header::HOST, a.header_value().clone())?;
                }
            }
            None => {
                if let Some(t) = ctx.target.as_deref() {
                    up_req.insert_header(header::HOST, t)?;
                }
            }
        }
        if let Some(p) = peer {
            use std::io::Write as _;
            // Each value built once, in place.
            let mut xff =
                forwarded::chain_start(&up_req.headers, "x-forwarded-for", f.trusted_peer);
            let _ = write!(xff, "{p}");
            up_req.insert_header("x-forwarded-for", xff)?;
            let mut fwd = forwarded::chain_start(&up_req.headers, "forwarded", f.trusted_peer);
            fwd.extend_from_slice(b"for=");
            forwarded::push_node(&mut fwd, p);
            fwd.extend_from_slice(if tls { b";proto=https" } else { b";proto=http" });
            if let Some(a) = &f.authority {
                fwd.extend_from_slice(b";host=");
                forwarded::push_quoted(&mut fwd, a.as_str().as_bytes());
            }
            up_req.insert_header("forwarded", fwd)?;
        }
        // From a trusted peer, its X-Forwarded-Proto/-Host (validated) are kept.
        up_req.insert_header("x-forwarded-proto", f.proto())?;
        match f.forwarded_host() {
            Some(h) => up_req.insert_header("x-forwarded-host", h.clone())?,
            None => {
                up_req.remove_header("x-forwarded-host");
            }
        }
        // An HTTP/2 client may split `Cookie` into crumbs; an HTTP/1.1 upstream gets
        // them as one line (RFC 9113 §8.2.3).
        if let Some(c) = crate::outbound::joined_cookie(&up_req.headers) {
            up_req.insert_header(header::COOKIE, c)?;
        }
        // Identity headers come only from the gateway, never from the client.
        up_req.remove_header("x-consumer");
        let rt = ctx.req.rt.clone();
        if let Some(route) = ctx.req.matched.index.map(|i| &rt.routes[i]) {
            for (n, i) in route.chain.iter().enumerate() {
                i.plugin
                    .upstream_request(up_req, &ctx.req, ctx.states.slot(n))?;
            }
        }
        for (n, v) in &ctx.req.upstream.headers {
            up_req.insert_header(n.clone(), v.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<()> {
        if resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        // Pingora reads response heads of up to 1 MiB: hold upstreams to the
        // limit clients are held to.
        if response_header_bytes(resp) > ctx.req.rt.limits.max_header_size {
            ctx.record_outcome(None, true);
            self.count_failure(ctx, "status");
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "upstream response header section over max_header_size",
            );
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !(session.is_upgrade_req()
                && forwarded::is_upgrade(
                    &session.req_header().headers,
                    session.req_header().version,
                )
                // ...and it switches to the protocol asked for (RFC 9110 §7.8).
                && resp
                    .headers
                    .get(header::UPGRADE)
                    .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket")))
        {
            // Nothing asked to switch protocols (only WebSocket upgrades are
            // forwarded as such): a broken upstream (SPEC §4).
            ctx.record_outcome(None, true);
            self.count_failure(ctx, "status");
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "upstream answered 101 to a request that asked for no upgrade",
            );
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel now: reads from the client wait up to idle_timeout, not body_timeout.
            session.set_read_timeout(Some(ctx.req.rt.limits.idle_timeout));
        }
        let status = resp.status.as_u16();
        ctx.record_outcome(Some(status), false);
        if let (Some(route), Some(_)) = (ctx.req.route(), ctx.upstream_start) {
            METRICS
                .upstream_duration
                .with_label_values(&[&route.upstream.name])
                .observe(ctx.upstream_elapsed().as_secs_f64());
        }
        if status >= 500 {
            self.count_failure(ctx, "status");
            let retry_on = ctx
                .req
                .route()
                .is_some_and(|r| r.upstream.retry.on_status.contains(&status));
            if retry_on && self.retryable(session, ctx) {
                let mut e =
                    Error::explain(ErrorType::HTTPStatus(status), "retrying on upstream status");
                e.set_retry(true);
                return Err(e);
            }
        }
        if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            for n in forwarded::hop_by_hop(&resp.headers, false) {
                resp.remove_header(&n);
            }
        }
        if let Some(chain) = ctx.req.route().map(|r| r.chain.clone()) {
            for (n, i) in chain.iter().enumerate() {
                i.plugin
                    .upstream_response(resp, &mut ctx.req, ctx.states.slot(n));
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        if let Some(chain) = ctx.req.route().map(|r| r.chain.clone()) {
            for (n, i) in chain.iter().enumerate() {
                i.plugin.upstream_response_body(
                    body,
                    end_of_stream,
                    &mut ctx.req,
                    ctx.states.slot(n),
                );
            }
        }
        Ok(None)
    }

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

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut ProxyCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let timeout = is_timeout(&e);
        self.count_failure(ctx, if timeout { "timeout" } else { "connect" });
        ctx.record_outcome(None, true);
        let allowed = ctx.req.route().is_some_and(|r| {
            let p = &r.upstream.retry;
            (timeout && p.on_timeout) || (!timeout && p.on_connect_error)
        });
        e.set_retry(allowed && self.retryable(session, ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut ProxyCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let _ = peer;
        let mut e = e;
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
                self.count_failure(ctx, if timeout { "timeout" } else { "connect" });
            }
            let policy_ok = ctx
                .req
                .route()
                .is_some_and(|r| timeout && r.upstream.retry.on_timeout);
            // A pooled connection the upstream closed or reset: one more try, on a
            // fresh connection, whatever the retry policy (within request_timeout).
            let stale = client_reused && e.retry() && !ctx.stale_retried;
            if stale && self.resendable(session, ctx) {
                ctx.stale_retried = true;
                e.set_retry(true);
            } else {
                e.set_retry(policy_ok && self.retryable(session, ctx));
            }
        } else if !matches!(e.etype(), ErrorType::HTTPStatus(_)) {
            e.set_retry(false);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut ProxyCtx,
    ) -> FailToProxy {
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
        let code =
            if ctx.tried.len() > 1 && (500..600).contains(&code) && code != 504 && code != 503 {
                502
            } else {
                code
            };
        self.finish_chain(ctx);
        if code > 0 && !final_response_written(session) {
            // The connection is not reused after an error (see below): say so.
            session.set_keepalive(None);
            let (detail, extra) = match code {
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
            };
            self.respond_problem(session, ctx, code, detail, extra)
                .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut ProxyCtx) {
        self.finish_chain(ctx);
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
        crate::logging::access(&crate::logging::Access {
            request_id: ctx.req.request_id.as_deref().unwrap_or(""),
            route,
            method,
            path: ctx
                .req
                .matched
                .path
                .as_deref()
                .unwrap_or_else(|| session.req_header().uri.path()),
            status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream: ctx.target.as_deref().unwrap_or(""),
            bytes: session.body_bytes_sent() as u64,
            consumer: ctx.req.identity.consumer.as_deref().unwrap_or(""),
            client_ip: ctx.req.client.ip,
            error: e.map(|e| e.etype().as_str()),
        });
    }

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
