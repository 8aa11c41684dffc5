//! What a record is filed under and what it is of: the scope of a request's
//! keys, the key's syntax, and the request's fingerprint.

use crate::pipeline::{Order, RequestCtx};
use http::Method;
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

/// An idempotency key: 1-255 visible ASCII characters.
pub fn valid_key(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 255 && v.iter().all(|b| (0x21..0x7f).contains(b))
}

/// The space a request's keys live in, as 32 hex digits: a digest of
/// length-delimited parts, so that no two scopes share a digest input.
/// * consumer named by an auth plugin: `consumer`, the route's auth plugin
///   names, the consumer;
/// * route authenticates but no consumer was named (a JWT without its
///   consumer claim, `webhook_signature`): `credential`, the route's auth
///   plugin names, the `Authorization` values (none for a webhook, whose
///   verified secret has one holder);
/// * no authenticating plugin on the route: `ip`, the client IP.
pub fn scope_of(req: &RequestHeader, ctx: &RequestCtx) -> String {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    let auth: Vec<&str> = ctx
        .route()
        .map(|r| {
            r.chain
                .iter()
                .filter(|i| i.order == Order::Auth)
                .map(|i| &*i.name)
                .collect()
        })
        .unwrap_or_default();
    match (&ctx.identity.consumer, auth.is_empty()) {
        (Some(c), _) => {
            part(b"consumer");
            for a in &auth {
                part(a.as_bytes());
            }
            part(b"");
            part(c.as_bytes());
        }
        (None, false) => {
            part(b"credential");
            for a in &auth {
                part(a.as_bytes());
            }
            part(b"");
            for v in req.headers.get_all(http::header::AUTHORIZATION) {
                part(v.as_bytes());
            }
        }
        (None, true) => {
            let ip = ctx.client.ip.map(|ip| ip.to_string()).unwrap_or_default();
            part(b"ip");
            part(ip.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// A record's fingerprint: the SHA-256 of the method, normalised path, query
/// and body (each of the first three followed by a NUL).
pub fn fingerprint(method: &Method, path: &str, query: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [method.as_str(), path, query] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(body);
    h.finalize().into()
}
