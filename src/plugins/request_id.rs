//! `request_id`: keeps a valid incoming id or makes one, sends it upstream and
//! back to the client; the proxy puts it in every log line and error body.

use super::{Flow, Phase, Plugin};
use crate::config::RequestIdConfig;
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

pub struct RequestId {
    header: HeaderName,
}

/// An incoming id is kept when it is 1–128 visible ASCII characters from a safe
/// set (no spaces, quotes or separators that could break logs or headers).
pub fn valid_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
        // An id holding a card number would carry it into every log line and
        // error body of the request (SPEC §8): such an id is replaced.
        && std::str::from_utf8(v).is_ok_and(|s| {
            matches!(crate::logging::mask_pans(s), std::borrow::Cow::Borrowed(_))
        })
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl RequestId {
    pub fn new(c: &RequestIdConfig) -> Result<Self, String> {
        let header = HeaderName::try_from(c.header.as_str()).map_err(|e| e.to_string())?;
        Ok(RequestId { header })
    }

    /// Decide the request's id from its headers (used before routing too, so
    /// that 400/404 bodies carry it).
    pub fn assign(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        if ctx.request_id.is_some() {
            return;
        }
        let id = match req.headers.get(&self.header) {
            Some(v) if valid_id(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            _ => new_id(),
        };
        ctx.request_id = Some(id);
    }
}

#[async_trait]
impl Plugin for RequestId {
    fn phase(&self) -> Phase {
        Phase::RequestId
    }

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Flow> {
        self.assign(session.req_header(), ctx);
        Ok(Flow::Continue)
    }

    fn upstream_request(&self, req: &mut RequestHeader, ctx: &RequestCtx) -> pingora::Result<()> {
        if let Some(id) = &ctx.request_id {
            req.insert_header(self.header.clone(), id.as_str())?;
        }
        Ok(())
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) {
        if let Some(id) = &ctx.request_id {
            let _ = resp.insert_header(self.header.clone(), id.as_str());
        }
    }

    fn as_request_id(&self) -> Option<&RequestId> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id(b"abc-123"));
        assert!(valid_id(b"0af7651916cd43dd8448eb211c80319c"));
        assert!(!valid_id(b""));
        assert!(!valid_id(b"has space"));
        assert!(!valid_id(b"quote\""));
        assert!(!valid_id(&[b'a'; 129]));
        assert_eq!(new_id().len(), 36);
    }
}
