//! `request_id`: keeps a valid incoming id or makes one, sends it upstream and
//! back to the client; the proxy puts it in every log line and error body.

use crate::pipeline::{
    new_request_id, BuildCtx, BuildError, BuildResult, Flow, Order, Plugin, PluginConfig,
    RequestCtx,
};
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "request_id"`
// ---------------------------------------------------------------------------

fn default_request_id_header() -> String {
    "x-request-id".into()
}

/// `type = "request_id"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    #[serde(default = "default_request_id_header")]
    pub header: String,
}

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

impl PluginConfig for RequestIdConfig {
    const TYPE: &'static str = "request_id";
    const ORDER: Order = Order::RequestId;
    /// So that a 400 or 404 written before routing carries the id.
    const BEFORE_ROUTING: bool = true;
    type Plugin = RequestId;

    fn build(&self, _bx: &BuildCtx<'_>) -> BuildResult<RequestId> {
        self.header_name().map(|header| RequestId { header })
    }

    fn check(&self) -> Vec<BuildError> {
        self.header_name().err().unwrap_or_default()
    }
}

impl RequestIdConfig {
    fn header_name(&self) -> BuildResult<HeaderName> {
        HeaderName::try_from(self.header.as_str()).or_else(|_| {
            BuildError::fail("header", format!("invalid header name {:?}", self.header))
        })
    }
}

impl RequestId {
    /// Decide the request's id from its headers (used before routing too, so
    /// that 400/404 bodies carry it).
    pub fn assign(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        if ctx.request_id.is_some() {
            return;
        }
        let id = match req.headers.get(&self.header) {
            Some(v) if valid_id(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            _ => new_request_id(),
        };
        ctx.request_id = Some(id);
    }
}

impl Plugin for RequestId {
    type State = ();

    fn before_routing(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        self.assign(req, ctx);
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _: &mut (),
    ) -> pingora::Result<Flow> {
        self.assign(session.req_header(), ctx);
        Ok(Flow::Continue)
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        ctx: &RequestCtx,
        _: &mut (),
    ) -> pingora::Result<()> {
        if let Some(id) = &ctx.request_id {
            req.insert_header(self.header.clone(), id.as_str())?;
        }
        Ok(())
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, _: &mut ()) {
        if let Some(id) = &ctx.request_id {
            let _ = resp.insert_header(self.header.clone(), id.as_str());
        }
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
        assert_eq!(new_request_id().len(), 36);
    }
}
