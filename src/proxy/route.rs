//! The steps of `request_filter`: who the client is, whether its head and
//! forwarding headers are acceptable, the normalised path, the API version,
//! the route, the declared body length and the target the upstream is sent,
//! then the route's plugins up to the cache. Each step that can refuse returns
//! the problem response it refuses with ([`Refusal`]); their order in
//! [`admit`] decides which refusal a request gets (tests/adversarial_*.rs
//! assert it).

use super::respond::{hv, Refusal};
use super::{forwarded, Gateway, ProxyCtx};
use crate::pipeline::{Flow, Order};
use crate::runtime::path::normalize_path;
use crate::runtime::router::{RequestInfo, RouteMatch};
use crate::runtime::versions::Resolved;
use crate::runtime::Limits;
use http::header;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::net::IpAddr;

/// What the gateway checks and decides before any plugin of the route runs, in
/// order. `Err` is the refusal to answer with.
pub(super) fn admit(session: &mut Session, ctx: &mut ProxyCtx) -> Result<(), Refusal> {
    let client = client_facts(session, ctx);
    run_plugins_before_routing(session.req_header(), ctx);
    check_header_size(session.req_header(), &ctx.req.rt.limits)?;
    check_forwarding(session, ctx, client)?;
    let target = normalise_path(session.req_header())?;
    resolve_version(session.req_header(), ctx, &target)?;
    route(session.req_header(), ctx, &target.path)?;
    check_declared_length(session.req_header(), &ctx.req.rt.limits)?;
    upstream_target(session.req_header(), ctx, target);
    Ok(())
}

/// The client as the connection and the trusted proxies in front of it tell it.
pub(super) struct ClientFacts {
    /// The client's address from `X-Forwarded-For`/`Forwarded` (when the peer
    /// is a trusted proxy), or why those headers are unusable: refused with
    /// the forwarding checks, after the header size check.
    ip: Result<Option<IpAddr>, forwarded::BadRequest>,
    /// The connection's peer is one of `trusted_proxies`.
    trusted_peer: bool,
}

/// The client's address (SPEC §3 `trusted_proxies`), and the client-sent
/// headers an upstream could take for the client's address, host, URL or
/// method removed before any plugin, the cache or the upstream sees the
/// request (SPEC §4).
pub(super) fn client_facts(session: &mut Session, ctx: &mut ProxyCtx) -> ClientFacts {
    let trusted = &ctx.req.rt.trusted_proxies;
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let ip = forwarded::client_ip(peer, &session.req_header().headers, trusted);
    ctx.req.client.ip = *ip.as_ref().unwrap_or(&peer);
    let trusted_peer = peer.is_some_and(|p| forwarded::is_trusted(p, trusted));
    for n in forwarded::spoofable_headers(&session.req_header().headers, trusted_peer) {
        session.req_header_mut().remove_header(&n);
    }
    ClientFacts { ip, trusted_peer }
}

/// The `before_routing` hooks of the global plugins (a request id, …): they
/// see every request, refused or routed.
pub(super) fn run_plugins_before_routing(req: &RequestHeader, ctx: &mut ProxyCtx) {
    if ctx.req.rt.before_routing.is_empty() {
        return;
    }
    let rt = ctx.req.rt.clone();
    for i in &rt.before_routing {
        i.plugin.before_routing(req, &mut ctx.req);
    }
}

/// 431 for more than `max_headers` fields or `max_header_size` bytes (an
/// HTTP/2 request: an HTTP/1 head was held to them as it was read).
pub(super) fn check_header_size(req: &RequestHeader, limits: &Limits) -> Result<(), Refusal> {
    if req.headers.len() > limits.max_headers || header_bytes(req) > limits.max_header_size {
        return Err(Refusal::new(
            431,
            "the request's header section is too large",
        ));
    }
    Ok(())
}

fn header_bytes(req: &RequestHeader) -> usize {
    req.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + req.raw_path().len()
}

/// Who and what the request names, decided once (SPEC §3 `trusted_proxies`,
/// §4): the forwarding facts routing, the cache key and the upstream's
/// forwarding headers use, or a 400 (unusable forwarding headers, a standard
/// method in lower case, a bad authority).
pub(super) fn check_forwarding(
    session: &Session,
    ctx: &mut ProxyCtx,
    client: ClientFacts,
) -> Result<(), Refusal> {
    let req = session.req_header();
    let tls = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some();
    let checked = client.ip.and_then(|_| {
        if forwarded::is_miscased_method(&req.method) {
            return Err(forwarded::BadRequest(
                "a standard method must be written in upper case",
            ));
        }
        let target = forwarded::target_authority(&req.uri, req.raw_path())?;
        forwarded::Forwarding::from_request(client.trusted_peer, tls, &req.headers, target)
    });
    match checked {
        Ok(f) => {
            ctx.forwarding = f;
            Ok(())
        }
        Err(e) => Err(Refusal::new(400, e.0)),
    }
}

/// The request's path, normalised, and its query as sent.
pub(super) struct Target {
    path: String,
    query: Option<String>,
}

/// The normalised path (SPEC §4), or a 400: a non-ASCII byte (an HTTP/1 head
/// never carries one, see `head.rs`; an HTTP/2 `:path` may, and an upstream's
/// HTTP/1.1 request line must not), or a path that cannot be normalised.
pub(super) fn normalise_path(req: &RequestHeader) -> Result<Target, Refusal> {
    if !req.uri.path().is_ascii() || !req.uri.query().is_none_or(str::is_ascii) {
        return Err(Refusal::new(
            400,
            "invalid request path: a non-ASCII byte must be percent-encoded",
        ));
    }
    let path = match normalize_path(req.uri.path()) {
        Ok(p) => p.into_owned(),
        Err(e) => return Err(Refusal::new(400, format!("invalid request path: {e}"))),
    };
    let query = req.uri.query().map(str::to_string);
    Ok(Target { path, query })
}

/// The API version the request names (`[versions]`): 404 for a version nobody
/// knows, 410 for one past its sunset.
pub(super) fn resolve_version(
    req: &RequestHeader,
    ctx: &mut ProxyCtx,
    target: &Target,
) -> Result<(), Refusal> {
    let Some(versions) = &ctx.req.rt.versions else {
        return Ok(());
    };
    match versions.resolve(&target.path, target.query.as_deref(), &req.headers) {
        Resolved::None => Ok(()),
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
                    return Err(Refusal::new(410, detail));
                }
            }
            Ok(())
        }
        Resolved::Unknown(v) => {
            let detail = format!(
                "unknown API version {:?}; known versions: {}",
                v,
                versions.known_list.join(", ")
            );
            Err(Refusal::new(404, detail))
        }
    }
}

/// The route for host, path, method, headers and version: 405 (with `Allow`)
/// when only the method is wrong, 404 when nothing matches.
pub(super) fn route(req: &RequestHeader, ctx: &mut ProxyCtx, path: &str) -> Result<(), Refusal> {
    let rt = ctx.req.rt.clone();
    ctx.req.client.origin = req.headers.get(header::ORIGIN).cloned();
    // A CORS preflight is routed as the request it announces, so that the
    // route's `cors` plugin can answer it (SPEC: cors answers preflight itself);
    // a path that belongs to a `cors` route is answered by that plugin, even for
    // a method the route does not allow (see `runtime::preflight`).
    let preflight_method = (req.method == http::Method::OPTIONS && ctx.req.client.origin.is_some())
        .then(|| req.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
    let info = RequestInfo {
        host: ctx.forwarding.host(),
        path,
        method: &req.method,
        headers: &req.headers,
        version: ctx.req.matched.version.as_deref(),
    };
    let found = match &preflight_method {
        Some(announced) => crate::runtime::preflight::route_preflight(&rt, &info, announced),
        None => rt.router.find(&info),
    };
    match found {
        RouteMatch::Found { route, params } => {
            ctx.req.matched.index = Some(route);
            ctx.req.matched.params = params;
            Ok(())
        }
        RouteMatch::MethodNotAllowed { allow } => {
            let detail = format!("{} is not allowed here; allowed: {allow}", req.method);
            Err(Refusal::new(405, detail).with_header(header::ALLOW, hv(&allow)))
        }
        RouteMatch::NotFound => Err(Refusal::new(404, "no route matches this request")),
    }
}

/// 413 for a `Content-Length` over `max_request_body`, before any plugin runs
/// or a byte of the body is read (a body without one is counted as it comes,
/// in `request_body_filter`).
pub(super) fn check_declared_length(req: &RequestHeader, limits: &Limits) -> Result<(), Refusal> {
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_request_body) {
        let detail = format!(
            "the request body is larger than {} bytes",
            limits.max_request_body
        );
        return Err(Refusal::new(413, detail));
    }
    Ok(())
}

/// What the upstream is asked for: an origin-form target, the normalised path
/// (the route's `strip_prefix` removed) and the query as sent. When that is
/// what the client sent, the request's URI is forwarded as it is, without
/// building and parsing another (Pingora writes the target the client sent,
/// byte for byte, unless the URI is replaced).
pub(super) fn upstream_target(req: &RequestHeader, ctx: &mut ProxyCtx, target: Target) {
    let Target { path, query } = target;
    let strip = ctx.req.route().and_then(|r| r.strip_prefix.as_deref());
    // Borrowed unless a prefix is stripped: most requests go upstream as sent.
    let fwd_path = crate::pipeline::upstream_path(&path, strip);
    let raw = req.raw_path();
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
        None => fwd_path.to_owned(),
    });
    ctx.req.matched.path = Some(path);
}

impl Gateway {
    /// The route's plugins up to the cache phase; the rest run in
    /// `proxy_upstream_filter`, after Pingora's cache lookup, so that a cache
    /// hit never reaches them (SPEC §3: cache → circuit_breaker → upstream).
    /// `true` when a plugin answered the request.
    pub(super) async fn run_plugins_before_cache(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<bool> {
        self.run_plugins(session, ctx, |o| o <= Order::Cache).await
    }

    /// The route's plugins after the cache phase (a cache miss or a request the
    /// cache does not serve). `true` when a plugin answered the request.
    pub(super) async fn run_plugins_after_cache(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> pingora::Result<bool> {
        self.run_plugins(session, ctx, |o| o > Order::Cache).await
    }

    /// The `request` hooks of the route's plugins whose order `runs`, in chain
    /// order, until one answers (`true`: the answer was written).
    async fn run_plugins(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
        runs: impl Fn(Order) -> bool,
    ) -> pingora::Result<bool> {
        let Some(chain) = ctx.req.route().map(|r| r.chain.clone()) else {
            return Ok(false);
        };
        ctx.states.prepare(chain.len());
        for (n, inst) in chain.iter().enumerate() {
            if !runs(inst.order) {
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
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
