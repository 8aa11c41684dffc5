//! The type-erased side of the plugin API: what the registry, the config and
//! the proxy hold ([`Kind`], [`AnyConfig`], [`Instance`]), and the per-request
//! [`States`] of a chain. A blanket implementation turns every [`Plugin`] into
//! the object-safe [`DynPlugin`], so plugin authors never write this part.

use super::{
    BuildCtx, BuildResult, Flow, KeyParts, Order, Plugin, PluginConfig, Reply, RequestCtx, Series,
};
use crate::config::Config;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::{CacheKey, CachePhase, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

type Slot = Option<Box<dyn Any + Send + Sync>>;

/// The per-request states of a route's chain, one slot per position. A slot is
/// filled the first time its plugin's hook runs; a plugin whose state is `()`
/// costs nothing (a box of a zero-sized value does not allocate).
#[derive(Default)]
pub struct States(Vec<Slot>);

impl States {
    /// Make room for a chain of `n` plugins (once the route is known).
    pub fn prepare(&mut self, n: usize) {
        if self.0.len() < n {
            self.0.resize_with(n, || None);
        }
    }

    /// The slot of chain position `i`.
    pub fn slot(&mut self, i: usize) -> &mut Slot {
        self.prepare(i + 1);
        &mut self.0[i]
    }
}

fn state_of<S: Default + Send + Sync + 'static>(slot: &mut Slot) -> &mut S {
    let b = slot.get_or_insert_with(|| Box::new(S::default()));
    if !b.is::<S>() {
        *b = Box::new(S::default());
    }
    match b.downcast_mut::<S>() {
        Some(s) => s,
        // Just made sure the box holds an `S`.
        None => unreachable!("plugin state of the wrong type"),
    }
}

/// The object-safe face of a [`Plugin`] that the proxy drives; see [`Plugin`]
/// for when each hook runs. `slot` is the plugin's per-request state.
#[async_trait]
pub trait DynPlugin: Send + Sync + 'static {
    fn before_routing(&self, req: &RequestHeader, ctx: &mut RequestCtx);
    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        slot: &mut Slot,
    ) -> pingora::Result<Flow>;
    fn request_body(
        &self,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        slot: &mut Slot,
    ) -> Result<(), Reply>;
    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        ctx: &RequestCtx,
        slot: &mut Slot,
    ) -> pingora::Result<()>;
    fn upstream_response(&self, resp: &ResponseHeader, ctx: &mut RequestCtx, slot: &mut Slot);
    fn upstream_response_body(
        &self,
        body: &Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        slot: &mut Slot,
    );
    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, slot: &mut Slot);
    fn finish(&self, ctx: &mut RequestCtx, slot: &mut Slot);
    fn circuit_state(&self, upstream: &str) -> Option<i64>;
    fn series(&self) -> Vec<Series>;
    async fn tick(&self);
    /// Whether this plugin drives the cache phases.
    fn is_cache(&self) -> bool;
    fn cache_enable(&self, session: &mut Session, ctx: &RequestCtx, slot: &mut Slot);
    fn cache_key(&self, parts: &KeyParts<'_>, headers: &http::HeaderMap) -> Option<CacheKey>;
    fn cache_cacheable(&self, resp: &ResponseHeader) -> Option<RespCacheable>;
    fn cache_serve_stale(&self, error: Option<&pingora::Error>) -> bool;
    fn cache_observe(&self, phase: CachePhase, slot: &mut Slot);
    fn cache_purge(&self, route: &str, prefix: &str) -> Option<usize>;
    /// The concrete plugin, for tests and benches.
    fn as_any(&self) -> &dyn Any;
}

#[async_trait]
impl<P: Plugin> DynPlugin for P {
    fn before_routing(&self, req: &RequestHeader, ctx: &mut RequestCtx) {
        Plugin::before_routing(self, req, ctx)
    }
    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        slot: &mut Slot,
    ) -> pingora::Result<Flow> {
        Plugin::request(self, session, ctx, state_of(slot)).await
    }
    fn request_body(
        &self,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        slot: &mut Slot,
    ) -> Result<(), Reply> {
        Plugin::request_body(self, body, end, ctx, state_of(slot))
    }
    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        ctx: &RequestCtx,
        slot: &mut Slot,
    ) -> pingora::Result<()> {
        Plugin::upstream_request(self, req, ctx, state_of(slot))
    }
    fn upstream_response(&self, resp: &ResponseHeader, ctx: &mut RequestCtx, slot: &mut Slot) {
        Plugin::upstream_response(self, resp, ctx, state_of(slot))
    }
    fn upstream_response_body(
        &self,
        body: &Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        slot: &mut Slot,
    ) {
        Plugin::upstream_response_body(self, body, end, ctx, state_of(slot))
    }
    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, slot: &mut Slot) {
        Plugin::response(self, resp, ctx, state_of(slot))
    }
    fn finish(&self, ctx: &mut RequestCtx, slot: &mut Slot) {
        Plugin::finish(self, ctx, state_of(slot))
    }
    fn circuit_state(&self, upstream: &str) -> Option<i64> {
        Plugin::circuit_state(self, upstream)
    }
    fn series(&self) -> Vec<Series> {
        Plugin::series(self)
    }
    async fn tick(&self) {
        Plugin::tick(self).await
    }
    fn is_cache(&self) -> bool {
        Plugin::cache(self).is_some()
    }
    fn cache_enable(&self, session: &mut Session, ctx: &RequestCtx, slot: &mut Slot) {
        if let Some(c) = Plugin::cache(self) {
            c.enable(session, ctx, state_of(slot));
        }
    }
    fn cache_key(&self, parts: &KeyParts<'_>, headers: &http::HeaderMap) -> Option<CacheKey> {
        Plugin::cache(self).map(|c| c.key(parts, headers))
    }
    fn cache_cacheable(&self, resp: &ResponseHeader) -> Option<RespCacheable> {
        Plugin::cache(self).map(|c| c.cacheable(resp))
    }
    fn cache_serve_stale(&self, error: Option<&pingora::Error>) -> bool {
        Plugin::cache(self).is_some_and(|c| c.serve_stale(error))
    }
    fn cache_observe(&self, phase: CachePhase, slot: &mut Slot) {
        if let Some(c) = Plugin::cache(self) {
            c.observe(phase, state_of(slot));
        }
    }
    fn cache_purge(&self, route: &str, prefix: &str) -> Option<usize> {
        Plugin::cache(self).map(|c| c.purge(route, prefix))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A compiled plugin with the name it was declared under.
#[derive(Clone)]
pub struct Instance {
    pub name: Arc<str>,
    pub order: Order,
    /// Runs before routing when listed in `[server] plugins`.
    pub before_routing: bool,
    pub plugin: Arc<dyn DynPlugin>,
    /// What it was built from: a reload keeps the instance (and its state) when
    /// this, the contents of its files and (if it uses it) `[redis]` are equal.
    identity: Arc<Identity>,
}

struct Identity {
    config: Arc<dyn AnyConfig>,
    files: Vec<Option<Vec<u8>>>,
    redis: Option<crate::config::RedisConfig>,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Identity) -> bool {
        self.config.same(&*other.config) && self.files == other.files && self.redis == other.redis
    }
}

fn identity(cfg: &Arc<dyn AnyConfig>, config: &Config) -> Identity {
    Identity {
        config: cfg.clone(),
        files: cfg
            .files(config)
            .iter()
            .map(|f| std::fs::read(f).ok())
            .collect(),
        redis: if cfg.uses_redis() {
            config.redis.clone()
        } else {
            None
        },
    }
}

impl Instance {
    /// Whether this instance was built from `cfg` as `config` declares it now
    /// (same definition by value, same file contents, same `[redis]`).
    pub fn built_from(&self, cfg: &Arc<dyn AnyConfig>, config: &Config) -> bool {
        *self.identity == identity(cfg, config)
    }

    /// The concrete plugin, when it is a `T` (tests, benches).
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.plugin.as_any().downcast_ref()
    }
}

/// A parsed `[plugins.NAME]` table of any type, as `Config` holds it.
pub trait AnyConfig: std::fmt::Debug + Send + Sync + 'static {
    fn type_name(&self) -> &'static str;
    fn order(&self) -> Order;
    /// The files it reads, resolved ([`PluginConfig::files`]).
    fn files(&self, config: &Config) -> Vec<std::path::PathBuf>;
    fn uses_redis(&self) -> bool;
    /// [`PluginConfig::check`].
    fn check(&self) -> Vec<super::BuildError>;
    /// Equal by value (and of the same type).
    fn same(&self, other: &dyn AnyConfig) -> bool;
    fn as_any(&self) -> &dyn Any;
    /// The registry entry of its type.
    fn kind(&self) -> &'static dyn Kind;
}

impl<C: PluginConfig> AnyConfig for C {
    fn type_name(&self) -> &'static str {
        C::TYPE
    }
    fn order(&self) -> Order {
        C::ORDER
    }
    fn files(&self, config: &Config) -> Vec<std::path::PathBuf> {
        PluginConfig::files(self, config)
    }
    fn uses_redis(&self) -> bool {
        PluginConfig::uses_redis(self)
    }
    fn check(&self) -> Vec<super::BuildError> {
        PluginConfig::check(self)
    }
    fn same(&self, other: &dyn AnyConfig) -> bool {
        other.as_any().downcast_ref::<C>() == Some(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn kind(&self) -> &'static dyn Kind {
        &Registered::<C>::NEW
    }
}

/// One entry of the plugin registry: a plugin type, by its config.
pub trait Kind: Sync {
    fn type_name(&self) -> &'static str;
    /// Parse a `[plugins.NAME]` table (without its `type`).
    fn parse(
        &self,
        table: toml::Value,
    ) -> Result<Arc<dyn AnyConfig>, serde_path_to_error::Error<toml::de::Error>>;
    /// Build an instance of a config this kind parsed.
    fn build(&self, name: &str, cfg: &Arc<dyn AnyConfig>, config: &Config)
        -> BuildResult<Instance>;
}

/// The registry entry of the plugin type configured by `C`.
pub struct Registered<C>(PhantomData<fn() -> C>);

impl<C> Registered<C> {
    pub const NEW: Self = Registered(PhantomData);
}

impl<C: PluginConfig> Kind for Registered<C> {
    fn type_name(&self) -> &'static str {
        C::TYPE
    }
    fn parse(
        &self,
        table: toml::Value,
    ) -> Result<Arc<dyn AnyConfig>, serde_path_to_error::Error<toml::de::Error>> {
        serde_path_to_error::deserialize::<_, C>(table).map(|c| Arc::new(c) as Arc<dyn AnyConfig>)
    }
    fn build(
        &self,
        name: &str,
        cfg: &Arc<dyn AnyConfig>,
        config: &Config,
    ) -> BuildResult<Instance> {
        let Some(c) = cfg.as_any().downcast_ref::<C>() else {
            return super::BuildError::fail("type", "internal: config of another plugin type");
        };
        let plugin = c.build(&BuildCtx { name, config })?;
        Ok(Instance {
            name: Arc::from(name),
            order: C::ORDER,
            before_routing: C::BEFORE_ROUTING,
            plugin: Arc::new(plugin),
            identity: Arc::new(identity(cfg, config)),
        })
    }
}
