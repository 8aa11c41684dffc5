//! The upstream side of a request: the target it goes to (load balancing, hash
//! keys, the connection pool group, the time left), the request head the
//! upstream gets (its URI, forwarding and hop-by-hop headers), and the checks
//! of the response head that comes back.

use super::failure::count_failure;
use super::{forwarded, ProxyCtx};
use crate::runtime::upstream::HashKey;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use std::time::Instant;

/// The target for this attempt: a healthy one not tried yet (any healthy one
/// when all were tried), 503 when none is healthy, 504 when `request_timeout`
/// has run out. Its timeouts are cut to the time left.
pub(super) fn select_peer(session: &Session, ctx: &mut ProxyCtx) -> pingora::Result<Box<HttpPeer>> {
    let rt = ctx.req.rt.clone();
    let Some(up) = ctx
        .req
        .matched
        .index
        .and_then(|i| rt.routes[i].upstream.as_ref())
    else {
        return Error::e_explain(ErrorType::HTTPStatus(404), "no route to an upstream");
    };
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
        Some(k) => hash_key(session, ctx, k),
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
    ctx.begin_attempt(
        crate::metrics::method_label(&session.req_header().method),
        backend.addr.as_inet().copied(),
    );
    ctx.target = Some(up.label(&backend));
    ctx.tried.push(backend);
    ctx.upstream_start = Some(now);
    Ok(Box::new(peer))
}

/// The bytes a `hash` upstream's `hash_key` picks a target by (`ip` is
/// handled by the caller: it needs the address as text).
fn hash_key<'a>(session: &'a Session, ctx: &'a ProxyCtx, key: &'a HashKey) -> &'a [u8] {
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

/// The request head as the upstream gets it, before the plugins'
/// `upstream_request` hooks: the URI of [`super::route::upstream_target`], no
/// hop-by-hop headers, `Host` and the forwarding headers (SPEC §4), one
/// `Cookie` line, no client-sent identity header.
pub(super) fn prepare_request(
    session: &Session,
    up_req: &mut RequestHeader,
    ctx: &ProxyCtx,
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
        && ctx.upstream().is_some_and(|u| !u.share_connections)
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
        // Each value built once, in place; the address written once.
        let text = crate::util::IpText::new(p);
        let mut xff = forwarded::chain_start(&up_req.headers, "x-forwarded-for", f.trusted_peer);
        xff.extend_from_slice(text.as_str().as_bytes());
        up_req.insert_header("x-forwarded-for", xff)?;
        let mut fwd = forwarded::chain_start(&up_req.headers, "forwarded", f.trusted_peer);
        fwd.extend_from_slice(b"for=");
        forwarded::push_node(&mut fwd, &text);
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
    // This attempt's span is the upstream's parent (SPEC §10); without
    // `[telemetry]`, `traceparent` passes as the client sent it.
    if let Some(tp) = ctx
        .attempt
        .as_ref()
        .and_then(|a| ctx.req.trace.traceparent(&a.span))
    {
        up_req.insert_header("traceparent", tp)?;
    }
    Ok(())
}

/// A response head no client should get is the upstream's failure (502):
/// one over `max_header_size` (Pingora reads up to 1 MiB), or a `101` that
/// nothing asked for.
pub(super) fn check_response(
    session: &Session,
    resp: &ResponseHeader,
    ctx: &mut ProxyCtx,
) -> pingora::Result<()> {
    // Hold upstreams to the limit clients are held to.
    if response_header_bytes(resp) > ctx.req.rt.limits.max_header_size {
        ctx.record_outcome(None, true);
        count_failure(ctx, crate::metrics::failure_kind::STATUS);
        return Error::e_explain(
            ErrorType::HTTPStatus(502),
            "upstream response header section over max_header_size",
        );
    }
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && !is_upgrade_answer(session, resp) {
        // Nothing asked to switch protocols (only WebSocket upgrades are
        // forwarded as such): a broken upstream (SPEC §4).
        ctx.record_outcome(None, true);
        count_failure(ctx, crate::metrics::failure_kind::STATUS);
        return Error::e_explain(
            ErrorType::HTTPStatus(502),
            "upstream answered 101 to a request that asked for no upgrade",
        );
    }
    Ok(())
}

/// A `101` that answers a WebSocket upgrade the client asked for (only those
/// are forwarded as upgrades), switching to the protocol asked for (RFC 9110
/// §7.8).
fn is_upgrade_answer(session: &Session, resp: &ResponseHeader) -> bool {
    session.is_upgrade_req()
        && forwarded::is_upgrade(&session.req_header().headers, session.req_header().version)
        && resp
            .headers
            .get(header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn response_header_bytes(resp: &ResponseHeader) -> usize {
    resp.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}
