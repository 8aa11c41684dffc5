//! A token taken apart before any key is involved: the bearer token of the
//! request, its three parts, its header and algorithm; and the strict JSON
//! reading of its header and claims.

use super::keys::b64;
use super::{Jwt, Reason};
use jsonwebtoken::Algorithm;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};
use std::str::FromStr;

/// A token taken apart, before any key is involved.
pub(super) struct Parsed<'t> {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
    pub(super) payload: Vec<u8>,
    pub(super) signature: &'t str,
    /// `header.payload`, the signed bytes.
    pub(super) message: &'t [u8],
}

impl Jwt {
    /// Everything that can be checked without a key: the three parts, the
    /// header, the algorithm.
    pub(super) fn parse<'t>(&self, token: &'t str) -> Result<Parsed<'t>, Reason> {
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Reason::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed);
        };
        if h.is_empty() || p.is_empty() {
            return Err(Reason::Malformed);
        }
        let header = b64(h)
            .ok()
            .and_then(|b| strict_object(&b))
            .ok_or(Reason::Malformed)?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => Algorithm::from_str(a)
                .ok()
                .filter(|a| self.algorithms.contains(a)),
            _ => return Err(Reason::Malformed),
        }
        .ok_or(Reason::AlgNotAllowed)?;
        // No extension is understood, so none can be critical (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(Reason::Malformed);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Reason::Malformed),
        };
        let payload = b64(p).map_err(|_| Reason::Malformed)?;
        if s.is_empty() || b64(s).is_err() {
            return Err(Reason::Malformed);
        }
        let message = token
            .as_bytes()
            .get(..h.len() + 1 + p.len())
            .ok_or(Reason::Malformed)?;
        Ok(Parsed {
            alg,
            kid,
            payload,
            signature: s,
            message,
        })
    }
}

/// A JWS header or claims set: a JSON object in which no member name appears
/// twice, at any depth. serde_json alone keeps the last of duplicates, so
/// `{"exp":1,"exp":9999999999}` would mean what a differently built verifier
/// reads differently (RFC 7515 §4, RFC 7519 §4 allow rejecting it; we do).
/// Builds the same map serde_json would, so it allocates no more than that
/// (and the token is bounded by `max_header_size`).
pub(super) fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match crate::json::parse_strict(bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The token of `Authorization: Bearer <token>`; a request with another scheme
/// (or none) has no token.
pub(super) fn bearer(req: &RequestHeader) -> Result<&str, Reason> {
    let mut all = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Err(Reason::MissingToken);
    };
    if all.next().is_some() {
        return Err(Reason::Malformed);
    }
    let v = v.to_str().map_err(|_| Reason::Malformed)?.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::MissingToken);
    }
    match rest.trim() {
        "" => Err(Reason::Malformed),
        t => Ok(t),
    }
}
