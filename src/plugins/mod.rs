//! The plugin pipeline. A plugin is a value built once per `[plugins.NAME]` when
//! a config is compiled; each route holds its chain sorted by [`Phase`], so the
//! order is fixed by type whatever order the config lists them in (SPEC §3).
//!
//! An expected refusal (401, 429, 503 from an open breaker) is a [`Flow::Respond`]
//! value; an `Err` means something broke and becomes a 5xx.

pub mod headers;
pub mod request_id;

use crate::config::PluginConfig;
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::sync::Arc;

/// When a plugin runs relative to the others (SPEC §3's fixed order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    RequestId,
    IpFilter,
    Cors,
    Auth,
    RateLimit,
    Idempotency,
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
    /// A complete response of the plugin's own (preflight, cache hit, replay).
    Raw {
        header: Box<ResponseHeader>,
        body: Bytes,
    },
}

pub enum Flow {
    Continue,
    Respond(Reply),
}

/// One phase hook per method; every default does nothing.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    fn phase(&self) -> Phase;

    /// Runs in `request_filter`, in phase order, after routing. `Respond` stops
    /// the chain and answers the client; the upstream is not contacted.
    async fn request(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Runs on the request header about to go upstream.
    fn upstream_request(&self, _req: &mut RequestHeader, _ctx: &RequestCtx) -> pingora::Result<()> {
        Ok(())
    }

    /// Runs on every response to the client: proxied, cached, or written by the
    /// gateway itself (errors included).
    fn response(&self, _resp: &mut ResponseHeader, _ctx: &RequestCtx) {}

    /// The `request_id` plugin, which the proxy also runs before routing.
    fn as_request_id(&self) -> Option<&request_id::RequestId> {
        None
    }
}

/// A compiled plugin with the name it was declared under.
#[derive(Clone)]
pub struct Instance {
    pub name: Arc<str>,
    pub plugin: Arc<dyn Plugin>,
    pub phase: Phase,
    /// Identity of the definition: a reload keeps the instance (and its state)
    /// when this is unchanged.
    pub fingerprint: String,
}

/// Build the runtime plugin for one validated `[plugins.NAME]` table.
pub fn build(name: &str, cfg: &PluginConfig) -> Result<Instance, String> {
    let plugin: Arc<dyn Plugin> = match cfg {
        PluginConfig::RequestId(c) => Arc::new(request_id::RequestId::new(c)?),
        PluginConfig::Headers(c) => Arc::new(headers::Headers::new(c)?),
    };
    Ok(Instance {
        name: Arc::from(name),
        phase: plugin.phase(),
        plugin,
        fingerprint: format!("{cfg:?}"),
    })
}

/// Sort a chain into phase order; within a phase, declaration order is kept.
pub fn order(chain: &mut [Instance]) {
    chain.sort_by_key(|i| i.phase);
}
