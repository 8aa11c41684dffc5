//! `cache`: an HTTP cache for GET/HEAD (an RFC 9111 subset) on Pingora's cache
//! machinery.
//!
//! * Pingora's `HttpCache` runs the protocol: lookup after `request_filter`,
//!   the cache lock that coalesces concurrent misses for one key into one
//!   upstream request, streaming the miss to the client while it is stored,
//!   `Age` on stored responses, serving stale on upstream errors, conditional
//!   (304) and range answers from stored entries.
//! * This module decides policy (what is cacheable, for how long, under which
//!   key) and holds the storage: a [`Store`] per plugin instance, bounded by
//!   `max_size` with TinyUFO (S3-FIFO + TinyLFU admission) as the eviction
//!   policy, plus an index of (route, path) per entry for `POST /cache/purge`.
//! * Pingora wants `&'static` storage. Each instance leaks one small [`Slot`]
//!   that points at its store; dropping the instance (a reload that changed its
//!   definition) detaches and frees the store, so only the empty slot remains.
//! * `X-Cache` says whether the upstream was asked: `HIT` (no), `STALE` (it
//!   failed; a stored copy past its freshness was served), `MISS` (yes, whether
//!   or not the answer was stored), `BYPASS` (the cache was not consulted).

mod policy;
mod storage;
#[cfg(test)]
mod tests;

pub use storage::{Slot, Store};

use crate::config::{Dur, Method, Size};
use crate::metrics::METRICS;
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, CachePolicy, KeyParts, KeyPath, Order, Plugin, PluginConfig,
    RequestCtx, Series,
};
use arc_swap::ArcSwapOption;
use http::HeaderName;
use once_cell::sync::Lazy;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{CacheKey, CachePhase, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Error;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Config: `type = "cache"`
// ---------------------------------------------------------------------------

fn default_cache_size() -> Size {
    Size(64 << 20)
}
fn default_cache_entry() -> Size {
    Size(1 << 20)
}

fn default_cache_ttl() -> Dur {
    Dur::secs(30)
}

fn default_cache_methods() -> Vec<Method> {
    vec![Method(http::Method::GET), Method(http::Method::HEAD)]
}

/// `type = "cache"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness when the upstream gives none.
    #[serde(default = "default_cache_ttl")]
    pub ttl: Dur,
    #[serde(default)]
    pub max_ttl: Option<Dur>,
    /// `GET` and/or `HEAD` (a HEAD is answered from the stored GET).
    #[serde(default = "default_cache_methods")]
    pub methods: Vec<Method>,
    #[serde(default)]
    pub vary: Vec<String>,
    #[serde(default = "default_cache_size")]
    pub max_size: Size,
    #[serde(default = "default_cache_entry")]
    pub max_entry: Size,
    #[serde(default)]
    pub stale_if_error: Option<Dur>,
}

impl PluginConfig for CacheConfig {
    const TYPE: &'static str = "cache";
    const ORDER: Order = Order::Cache;
    type Plugin = Cache;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Cache> {
        Cache::new(self, bx)
    }
}

/// One lock table for every cache instance: keys carry the instance's salt, so
/// two instances never wait on each other. Pingora needs it `'static`.
static LOCK: Lazy<Box<CacheLock>> = Lazy::new(|| CacheLock::new_boxed(Duration::from_secs(10)));

/// What the cache did for one request (`X-Cache`, `tollgate_cache_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Hit, Outcome::Miss, Outcome::Stale, Outcome::Bypass];

    pub fn header(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Bypass => "BYPASS",
        }
    }
    /// The `result` label of `tollgate_cache_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
        }
    }
}

pub struct Cache {
    ttl: Duration,
    max_ttl: Option<Duration>,
    get: bool,
    head: bool,
    vary: Vec<HeaderName>,
    max_entry: usize,
    stale_if_error: u32,
    /// Distinguishes this instance's keys in the shared lock table.
    salt: u64,
    slot: &'static Slot,
}

impl Cache {
    pub fn new(c: &CacheConfig, _bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs: Vec<BuildError> = Vec::new();
        let mut err = |path: KeyPath, message: String| errs.push(BuildError { path, message });
        let (mut get, mut head) = (false, false);
        for (i, m) in c.methods.iter().enumerate() {
            match m.as_str() {
                "GET" => get = true,
                "HEAD" => head = true,
                _ => err(
                    KeyPath::default().key("methods").index(i),
                    format!(
                        "only GET and HEAD responses can be cached, not {:?}",
                        m.as_str()
                    ),
                ),
            }
        }
        if c.methods.is_empty() {
            err(
                KeyPath::default().key("methods"),
                "list at least one of GET, HEAD".into(),
            );
        }
        let mut vary = Vec::new();
        for (i, h) in c.vary.iter().enumerate() {
            match HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(n) => vary.push(n),
                Err(_) => err(
                    KeyPath::default().key("vary").index(i),
                    format!("{h:?} is not a header name"),
                ),
            }
        }
        if c.ttl.0.is_zero() {
            err(
                KeyPath::default().key("ttl"),
                "must be longer than 0s".into(),
            );
        }
        if let Some(m) = c.max_ttl {
            if m.0.is_zero() {
                err(
                    KeyPath::default().key("max_ttl"),
                    "must be longer than 0s".into(),
                );
            }
        }
        let max_size = usize::try_from(c.max_size.0).unwrap_or(usize::MAX);
        let max_entry = usize::try_from(c.max_entry.0).unwrap_or(usize::MAX);
        if max_size < 64 * 1024 {
            err(
                KeyPath::default().key("max_size"),
                "must be at least 64KiB".into(),
            );
        }
        if max_entry == 0 {
            err(
                KeyPath::default().key("max_entry"),
                "must be larger than 0B".into(),
            );
        } else if max_entry > max_size / 2 {
            err(
                KeyPath::default().key("max_entry"),
                "must be at most half of max_size, or one entry could empty the cache".into(),
            );
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let stale_if_error = c
            .stale_if_error
            .map(|d| u32::try_from(d.0.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let store = Arc::new(Store::new(max_size, max_entry));
        let slot: &'static Slot = Box::leak(Box::new(Slot {
            store: ArcSwapOption::new(Some(store)),
        }));
        Ok(Cache {
            ttl: c.ttl.0,
            max_ttl: c.max_ttl.map(|d| d.0),
            get,
            head,
            vary,
            max_entry,
            stale_if_error,
            salt: rand::random(),
            slot,
        })
    }

    /// The storage Pingora reads and writes (for benches and tests).
    pub fn storage(&self) -> &'static Slot {
        self.slot
    }

    /// `request_cache_filter`: enable Pingora's cache for this request, or
    /// record a bypass. Runs after every plugin before the cache phase (auth
    /// has set `ctx.identity.consumer` if the route authenticates).
    pub fn request_cache_filter(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        state: &mut Option<Outcome>,
    ) {
        let req = session.req_header();
        let method_ok = (req.method == http::Method::GET && self.get)
            || (req.method == http::Method::HEAD && self.head);
        let anonymous_auth = req.headers.contains_key(http::header::AUTHORIZATION)
            && ctx.identity.consumer.is_none();
        let upgrade = req.headers.contains_key(http::header::UPGRADE);
        if !method_ok || anonymous_auth || upgrade {
            *state = Some(Outcome::Bypass);
            return;
        }
        session
            .cache
            .enable(self.slot, None, None, Some(lock()), None);
        session.cache.set_max_file_size_bytes(self.max_entry);
        *state = Some(Outcome::Miss);
    }

    /// `response_filter`: settle what the cache did for this request.
    pub fn observe(&self, phase: CachePhase, state: &mut Option<Outcome>) {
        let Some(outcome) = state else {
            return;
        };
        if *outcome == Outcome::Bypass {
            return;
        }
        *outcome = match phase {
            CachePhase::Hit => Outcome::Hit,
            CachePhase::Stale | CachePhase::StaleUpdating => Outcome::Stale,
            _ => Outcome::Miss,
        };
    }

    /// Remove every entry stored for `route` whose normalised path starts with
    /// `path_prefix`; returns how many were removed.
    pub fn purge(&self, route: &str, path_prefix: &str) -> usize {
        self.slot.store().map_or(0, |s| {
            s.purge(|r, p| r == route && p.starts_with(path_prefix))
        })
    }

    /// (entries, accounted bytes) currently stored.
    pub fn usage(&self) -> (usize, usize) {
        self.slot.store().map_or((0, 0), |s| s.usage())
    }
}

fn lock() -> &'static CacheKeyLockImpl {
    let l: &'static CacheLock = &LOCK;
    l
}

impl Drop for Cache {
    fn drop(&mut self) {
        // Free the entries; the leaked slot stays behind, empty.
        self.slot.store.store(None);
    }
}

impl Plugin for Cache {
    /// What the cache did for this request, once the cache phase ran.
    type State = Option<Outcome>;

    fn series(&self) -> Vec<Series> {
        Outcome::ALL
            .map(|o| Series::CacheRequests { result: o.label() })
            .to_vec()
    }

    fn response(&self, resp: &mut ResponseHeader, _ctx: &RequestCtx, state: &mut Option<Outcome>) {
        if let Some(o) = state {
            let _ = resp.insert_header("x-cache", o.header());
        }
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Option<Outcome>) {
        if let Some(o) = state {
            let route = ctx.route_name();
            METRICS
                .cache_requests
                .with_label_values(&[route, o.label()])
                .inc();
        }
    }

    fn cache(&self) -> Option<&dyn CachePolicy<State = Option<Outcome>>> {
        Some(self)
    }
}

impl CachePolicy for Cache {
    type State = Option<Outcome>;

    fn enable(&self, session: &mut Session, ctx: &RequestCtx, state: &mut Option<Outcome>) {
        self.request_cache_filter(session, ctx, state)
    }
    fn key(&self, parts: &KeyParts<'_>, headers: &http::HeaderMap) -> CacheKey {
        self.cache_key(parts, headers)
    }
    fn cacheable(&self, resp: &ResponseHeader) -> RespCacheable {
        self.response_cacheable(resp)
    }
    fn serve_stale(&self, error: Option<&Error>) -> bool {
        self.should_serve_stale(error)
    }
    fn observe(&self, phase: CachePhase, state: &mut Option<Outcome>) {
        Cache::observe(self, phase, state)
    }
    fn purge(&self, route: &str, prefix: &str) -> usize {
        Cache::purge(self, route, prefix)
    }
}
