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

use crate::config::{Dur, Size};
use crate::pipeline::{CachePolicy, KeyPath, BuildCtx, BuildError, BuildResult, KeyParts, Order, Plugin, PluginConfig, RequestCtx};
use crate::metrics::METRICS;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, Method};
use once_cell::sync::Lazy;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheKey, CacheMeta, CachePhase, HitHandler, MissHandler, NoCacheReason, PurgeOutcome,
    PurgeTarget, PurgeType, RespCacheable, Storage,
};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

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

fn default_cache_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
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
    #[serde(default = "default_cache_methods")]
    pub methods: Vec<String>,
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

/// Accounting overhead per stored entry, on top of its body and header bytes.
const ENTRY_OVERHEAD: usize = 256;

/// What the cache did for one request (`X-Cache`, `tollgate_cache_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl Outcome {
    pub fn header(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Bypass => "BYPASS",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
        }
    }
}


/// Carried in the cache key's extensions so the store can index entries for purge.
#[derive(Debug, Clone)]
struct PurgeTag {
    route: Arc<str>,
    path: Box<str>,
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
            match m.to_ascii_uppercase().as_str() {
                "GET" => get = true,
                "HEAD" => head = true,
                _ => err(KeyPath::default().key("methods").index(i),
                    format!("only GET and HEAD responses can be cached, not {m:?}"),
                ),
            }
        }
        if c.methods.is_empty() {
            err(KeyPath::default().key("methods"), "list at least one of GET, HEAD".into());
        }
        let mut vary = Vec::new();
        for (i, h) in c.vary.iter().enumerate() {
            match HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(n) => vary.push(n),
                Err(_) => err(KeyPath::default().key("vary").index(i), format!("{h:?} is not a header name")),
            }
        }
        if c.ttl.0.is_zero() {
            err(KeyPath::default().key("ttl"), "must be longer than 0s".into());
        }
        if let Some(m) = c.max_ttl {
            if m.0.is_zero() {
                err(KeyPath::default().key("max_ttl"), "must be longer than 0s".into());
            }
        }
        let max_size = usize::try_from(c.max_size.0).unwrap_or(usize::MAX);
        let max_entry = usize::try_from(c.max_entry.0).unwrap_or(usize::MAX);
        if max_size < 64 * 1024 {
            err(KeyPath::default().key("max_size"), "must be at least 64KiB".into());
        }
        if max_entry == 0 {
            err(KeyPath::default().key("max_entry"), "must be larger than 0B".into());
        } else if max_entry > max_size / 2 {
            err(KeyPath::default().key("max_entry"),
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
        let method_ok =
            (req.method == Method::GET && self.get) || (req.method == Method::HEAD && self.head);
        let anonymous_auth =
            req.headers.contains_key(http::header::AUTHORIZATION) && ctx.identity.consumer.is_none();
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

    /// `cache_key_callback`.
    pub fn cache_key(&self, parts: &KeyParts<'_>, headers: &http::HeaderMap) -> CacheKey {
        let mut primary = Vec::with_capacity(128);
        primary.extend_from_slice(&self.salt.to_le_bytes());
        let mut field = |b: &[u8]| {
            primary.extend_from_slice(&(b.len() as u32).to_le_bytes());
            primary.extend_from_slice(b);
        };
        // A HEAD is answered from the GET response: Pingora fetches GET upstream
        // on a HEAD miss, so what is stored is always a GET response.
        let method = if parts.method == "HEAD" {
            "GET"
        } else {
            parts.method
        };
        field(parts.route.as_bytes());
        field(method.as_bytes());
        field(parts.scheme.as_bytes());
        field(parts.host.as_bytes());
        field(parts.path.as_bytes());
        match parts.query {
            Some(q) => field(format!("?{q}").as_bytes()),
            None => field(b""),
        }
        match parts.consumer {
            Some(c) => field(format!("c:{c}").as_bytes()),
            None => field(b""),
        }
        for name in &self.vary {
            let mut all = headers.get_all(name).iter().peekable();
            if all.peek().is_none() {
                field(b"");
                continue;
            }
            let mut v = Vec::new();
            v.push(b'=');
            for (i, val) in all.enumerate() {
                if i > 0 {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(val.as_bytes());
            }
            field(&v);
        }
        let mut key = CacheKey::new(primary, "");
        key.extensions.insert(PurgeTag {
            route: Arc::from(parts.route),
            path: Box::from(parts.path),
        });
        key
    }

    /// `response_cache_filter`: whether the upstream's response may be stored,
    /// and until when it is fresh.
    pub fn response_cacheable(&self, resp: &ResponseHeader) -> RespCacheable {
        self.cacheable_at(resp, SystemTime::now())
    }

    fn cacheable_at(&self, resp: &ResponseHeader, now: SystemTime) -> RespCacheable {
        let no = RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        let status = resp.status.as_u16();
        if !((200..300).contains(&status) && status != 206 || status == 301 || status == 404) {
            return no;
        }
        let h = &resp.headers;
        if h.contains_key(http::header::SET_COOKIE) {
            return no;
        }
        // The key only varies on the configured headers: a response that
        // varies on anything else cannot be shared.
        for v in h.get_all(http::header::VARY) {
            let Ok(v) = v.to_str() else { return no };
            for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*"
                    || !self
                        .vary
                        .iter()
                        .any(|c| c.as_str().eq_ignore_ascii_case(name))
                {
                    return no;
                }
            }
        }
        let cc = CacheControl::from_resp_headers(resp);
        if let Some(cc) = &cc {
            if cc.no_store()
                || cc.has_key("private")
                || cc.has_key("no-cache")
                || cc.max_age().is_err()
                || cc.s_maxage().is_err()
            {
                return no;
            }
        }
        let lifetime = cc
            .as_ref()
            .and_then(|cc| {
                cc.s_maxage()
                    .ok()
                    .flatten()
                    .or_else(|| cc.max_age().ok().flatten())
            })
            .map(|s| Duration::from_secs(s.into()))
            .or_else(|| {
                pingora::cache::filters::calculate_expires_header_time(resp)
                    .map(|t| t.duration_since(now).unwrap_or_default())
            })
            .unwrap_or(self.ttl);
        let lifetime = match self.max_ttl {
            Some(m) => lifetime.min(m),
            None => lifetime,
        };
        // Time the response already spent in caches upstream (RFC 9111 §4.2.3).
        let age = h
            .get(http::header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or_default();
        let fresh = lifetime.saturating_sub(age);
        if fresh.is_zero() {
            return no;
        }
        // must-revalidate, proxy-revalidate and s-maxage forbid serving stale.
        let stale_if_error = match &cc {
            Some(cc) if cc.must_revalidate() || cc.proxy_revalidate() || cc.has_key("s-maxage") => {
                0
            }
            _ => self.stale_if_error,
        };
        let mut header = resp.clone();
        header.remove_header(&http::header::AGE);
        RespCacheable::Cacheable(CacheMeta::new(now + fresh, now, 0, stale_if_error, header))
    }

    /// `should_serve_stale`: a stored copy past its freshness (but within
    /// `stale_if_error`, which Pingora checks) may answer when the upstream
    /// failed: a connect error, a timeout, a broken response, or a 5xx.
    pub fn should_serve_stale(&self, error: Option<&Error>) -> bool {
        let Some(e) = error else {
            return false; // stale-while-revalidate is not offered
        };
        match e.etype() {
            ErrorType::HTTPStatus(s) => *s >= 500,
            _ => e.esource() == &ErrorSource::Upstream,
        }
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

    fn response(&self, resp: &mut ResponseHeader, _ctx: &RequestCtx, state: &mut Option<Outcome>) {
        if let Some(o) = state {
            let _ = resp.insert_header("x-cache", o.header());
        }
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Option<Outcome>) {
        if let Some(o) = state {
            let route = ctx.route().map(|r| &*r.name).unwrap_or("");
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

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

/// The `'static` handle Pingora holds; points at the instance's store until
/// the instance is dropped.
pub struct Slot {
    store: ArcSwapOption<Store>,
}

impl Slot {
    fn store(&self) -> Option<Arc<Store>> {
        self.store.load_full()
    }
}

#[derive(Debug)]
struct Entry {
    key: HashBinary,
    generation: u64,
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_if_error: u32,
    header: ResponseHeader,
    body: Bytes,
    weight: usize,
}

impl Entry {
    fn meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            0,
            self.stale_if_error,
            self.header.clone(),
        );
        if self.updated != self.created {
            m.set_epoch_override(self.updated);
        }
        m
    }

    /// No use keeping it: past its freshness and its stale window, and without
    /// a validator for a conditional refresh.
    fn dead(&self, now: SystemTime) -> bool {
        let until = self.fresh_until + Duration::from_secs(self.stale_if_error.into());
        until < now
            && !self.header.headers.contains_key(http::header::ETAG)
            && !self
                .header
                .headers
                .contains_key(http::header::LAST_MODIFIED)
    }
}

struct Indexed {
    generation: u64,
    route: Arc<str>,
    path: Box<str>,
}

/// One instance's entries: TinyUFO holds them and decides evictions within
/// the byte budget; the index lists them by route and path for purges.
pub struct Store {
    ufo: tinyufo::TinyUfo<HashBinary, Arc<Entry>>,
    index: Mutex<HashMap<HashBinary, Indexed>>,
    /// Bytes per TinyUFO weight unit (its weights are u16).
    unit: usize,
    max_entry: usize,
    bytes: AtomicU64,
    generation: AtomicU64,
}

impl Store {
    pub fn new(max_size: usize, max_entry: usize) -> Self {
        let largest = max_entry.saturating_add(64 * 1024 + ENTRY_OVERHEAD);
        let unit = largest.div_ceil(u16::MAX as usize).max(64);
        let estimated_items = (max_size / 4096).clamp(256, 1 << 18);
        Store {
            ufo: tinyufo::TinyUfo::new((max_size / unit).max(1), estimated_items),
            index: Mutex::new(HashMap::new()),
            unit,
            max_entry,
            bytes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    fn get(&self, key: &HashBinary) -> Option<Arc<Entry>> {
        self.ufo.get(key).filter(|e| &e.key == key)
    }

    fn insert(&self, mut entry: Entry, tag: Option<PurgeTag>) {
        entry.generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let key = entry.key;
        let weight_units = entry.weight.div_ceil(self.unit).clamp(1, u16::MAX as usize) as u16;
        let entry = Arc::new(entry);
        {
            let mut idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let (route, path) = match tag {
                Some(t) => (t.route, t.path),
                None => (Arc::from(""), Box::from("")),
            };
            idx.insert(
                key,
                Indexed {
                    generation: entry.generation,
                    route,
                    path,
                },
            );
        }
        // Replacing a key: account for the old copy leaving.
        if let Some(old) = self.ufo.remove(&key) {
            self.bytes.fetch_sub(old.weight as u64, Ordering::Relaxed);
        }
        self.bytes.fetch_add(entry.weight as u64, Ordering::Relaxed);
        let evicted = self.ufo.put(key, entry, weight_units);
        if evicted.is_empty() {
            return;
        }
        let mut idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
        for kv in evicted {
            self.bytes
                .fetch_sub(kv.data.weight as u64, Ordering::Relaxed);
            if idx
                .get(&kv.data.key)
                .is_some_and(|i| i.generation == kv.data.generation)
            {
                idx.remove(&kv.data.key);
            }
        }
    }

    fn remove(&self, key: &HashBinary) -> bool {
        let removed = self.ufo.remove(key);
        if let Some(e) = &removed {
            self.bytes.fetch_sub(e.weight as u64, Ordering::Relaxed);
        }
        let mut idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
        idx.remove(key).is_some() || removed.is_some()
    }

    fn purge(&self, matches: impl Fn(&str, &str) -> bool) -> usize {
        let keys: Vec<HashBinary> = {
            let idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
            idx.iter()
                .filter(|(_, i)| matches(&i.route, &i.path))
                .map(|(k, _)| *k)
                .collect()
        };
        keys.iter().filter(|k| self.remove(k)).count()
    }

    fn usage(&self) -> (usize, usize) {
        let n = self.index.lock().map(|i| i.len()).unwrap_or(0);
        (n, self.bytes.load(Ordering::Relaxed) as usize)
    }
}

fn header_size(h: &ResponseHeader) -> usize {
    h.headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 32
}

#[async_trait]
impl Storage for Slot {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> pingora::Result<Option<(CacheMeta, HitHandler)>> {
        let Some(store) = self.store() else {
            return Ok(None);
        };
        let k = key.combined_bin();
        let Some(entry) = store.get(&k) else {
            return Ok(None);
        };
        if entry.dead(SystemTime::now()) {
            store.remove(&k);
            return Ok(None);
        }
        let meta = entry.meta();
        let len = entry.body.len();
        Ok(Some((
            meta,
            Box::new(Hit {
                entry,
                range: 0..len,
                done: false,
            }),
        )))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> pingora::Result<MissHandler> {
        let Some(store) = self.store() else {
            return Error::e_explain(ErrorType::InternalError, "cache instance was replaced");
        };
        Ok(Box::new(Miss {
            store,
            key: key.combined_bin(),
            tag: key.extensions.get::<PurgeTag>().cloned(),
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            stale_if_error: meta.stale_if_error_sec(),
            header: meta.response_header_copy(),
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> pingora::Result<PurgeOutcome> {
        let k = target.key().combined_bin();
        let found = self.store().is_some_and(|s| s.remove(&k));
        Ok(if found {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> pingora::Result<bool> {
        let Some(store) = self.store() else {
            return Ok(false);
        };
        let k = key.combined_bin();
        let Some(old) = store.get(&k) else {
            return Ok(false);
        };
        let header = meta.response_header_copy();
        let entry = Entry {
            key: k,
            generation: 0,
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            stale_if_error: meta.stale_if_error_sec(),
            weight: old.body.len() + header_size(&header) + ENTRY_OVERHEAD,
            header,
            body: old.body.clone(),
        };
        store.insert(entry, key.extensions.get::<PurgeTag>().cloned());
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

struct Hit {
    entry: Arc<Entry>,
    range: std::ops::Range<usize>,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> pingora::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.entry.body.slice(self.range.clone())))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> pingora::Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> pingora::Result<()> {
        let len = self.entry.body.len();
        let end = end.unwrap_or(len).min(len);
        if start > end {
            return Error::e_explain(ErrorType::InternalError, "seek past the end of the body");
        }
        self.range = start..end;
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.entry.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    store: Arc<Store>,
    key: HashBinary,
    tag: Option<PurgeTag>,
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_if_error: u32,
    header: ResponseHeader,
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> pingora::Result<()> {
        if self.body.len() + data.len() > self.store.max_entry {
            return Error::e_explain(ErrorType::InternalError, "response larger than max_entry");
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    /// Only a complete body gets here: a response cut short never calls
    /// `finish`, so nothing truncated is stored.
    async fn finish(self: Box<Self>) -> pingora::Result<MissFinishType> {
        let m = *self;
        let body = m.body.freeze();
        let weight = body.len() + header_size(&m.header) + ENTRY_OVERHEAD;
        let size = body.len();
        m.store.insert(
            Entry {
                key: m.key,
                generation: 0,
                fresh_until: m.fresh_until,
                created: m.created,
                updated: m.updated,
                stale_if_error: m.stale_if_error,
                header: m.header,
                body,
                weight,
            },
            m.tag,
        );
        Ok(MissFinishType::Created(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str};
    use http::HeaderValue;

    fn build(extra: &str) -> Cache {
        let src = format!(
            "[plugins.c]\ntype = \"cache\"\n{extra}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"c\"]\n"
        );
        let cfg = load_str(&src, None, std::path::Path::new(".")).expect("valid config");
        let Some(c) = cfg.plugin_config::<CacheConfig>("c").cloned() else {
            panic!("cache plugin");
        };
        Cache::new(
            &c,
            &BuildCtx {
                name: "c",
                config: &cfg,
            },
        )
        .unwrap_or_else(|e| panic!("builds: {e:?}"))
    }

    fn build_err(extra: &str) -> Vec<BuildError> {
        let src = format!(
            "[plugins.c]\ntype = \"cache\"\n{extra}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"c\"]\n"
        );
        let cfg = load_str(&src, None, std::path::Path::new(".")).expect("valid config");
        let Some(c) = cfg.plugin_config::<CacheConfig>("c").cloned() else {
            panic!("cache plugin");
        };
        match Cache::new(
            &c,
            &BuildCtx {
                name: "c",
                config: &cfg,
            },
        ) {
            Ok(_) => panic!("should not build"),
            Err(e) => e,
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh_for(c: &Cache, r: &ResponseHeader) -> Option<Duration> {
        let now = SystemTime::now();
        match c.cacheable_at(r, now) {
            RespCacheable::Cacheable(m) => Some(m.fresh_until().duration_since(now).unwrap()),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    fn parts<'a>(host: &'a str, path: &'a str, consumer: Option<&'a str>) -> KeyParts<'a> {
        KeyParts {
            route: "r",
            method: "GET",
            scheme: "http",
            host,
            path,
            query: None,
            consumer,
        }
    }

    #[test]
    fn freshness_comes_from_s_maxage_then_max_age_then_ttl_capped_by_max_ttl() {
        let c = build("ttl = \"30s\"\nmax_ttl = \"1h\"");
        let s = |v: u64| Some(Duration::from_secs(v));
        assert_eq!(fresh_for(&c, &resp(200, &[])), s(30));
        assert_eq!(
            fresh_for(&c, &resp(200, &[("cache-control", "max-age=60")])),
            s(60)
        );
        assert_eq!(
            fresh_for(
                &c,
                &resp(200, &[("cache-control", "max-age=60, s-maxage=90")])
            ),
            s(90)
        );
        assert_eq!(
            fresh_for(&c, &resp(200, &[("cache-control", "max-age=99999")])),
            s(3600)
        );
        assert_eq!(
            fresh_for(
                &c,
                &resp(200, &[("cache-control", "max-age=60"), ("age", "20")])
            ),
            s(40)
        );
        assert_eq!(
            fresh_for(&c, &resp(200, &[("cache-control", "max-age=0")])),
            None
        );
    }

    #[test]
    fn never_stored() {
        let c = build("");
        for r in [
            resp(200, &[("cache-control", "no-store")]),
            resp(200, &[("cache-control", "private, max-age=60")]),
            resp(200, &[("cache-control", "private=\"x-user\", max-age=60")]),
            resp(200, &[("cache-control", "no-cache")]),
            resp(200, &[("set-cookie", "a=b")]),
            resp(200, &[("vary", "*")]),
            resp(200, &[("vary", "accept-language")]),
            resp(206, &[]),
            resp(302, &[]),
            resp(304, &[]),
            resp(403, &[]),
            resp(500, &[("cache-control", "max-age=60")]),
            resp(503, &[]),
        ] {
            assert_eq!(fresh_for(&c, &r), None, "{r:?}");
        }
        for s in [200, 203, 204, 301, 404] {
            assert!(fresh_for(&c, &resp(s, &[])).is_some(), "{s}");
        }
    }

    #[test]
    fn vary_on_configured_headers_is_accepted() {
        let c = build("vary = [\"accept\"]");
        assert!(fresh_for(&c, &resp(200, &[("vary", "Accept")])).is_some());
        assert!(fresh_for(&c, &resp(200, &[("vary", "Accept, Cookie")])).is_none());
    }

    #[test]
    fn stale_window_follows_config_unless_the_origin_forbids_it() {
        let c = build("stale_if_error = \"1m\"");
        let sie = |r: &ResponseHeader| match c.cacheable_at(r, SystemTime::now()) {
            RespCacheable::Cacheable(m) => m.stale_if_error_sec(),
            _ => panic!("cacheable"),
        };
        assert_eq!(sie(&resp(200, &[("cache-control", "max-age=5")])), 60);
        assert_eq!(
            sie(&resp(
                200,
                &[("cache-control", "max-age=5, must-revalidate")]
            )),
            0
        );
        assert_eq!(sie(&resp(200, &[("cache-control", "s-maxage=5")])), 0);
    }

    #[test]
    fn keys_separate_hosts_consumers_queries_vary_and_instances() {
        let c = build("vary = [\"accept\"]");
        let h = http::HeaderMap::new();
        let k = |p: &KeyParts<'_>, h: &http::HeaderMap| c.cache_key(p, h).combined_bin();
        let base = k(&parts("a.example", "/x", None), &h);
        assert_eq!(base, k(&parts("a.example", "/x", None), &h));
        assert_ne!(base, k(&parts("b.example", "/x", None), &h));
        assert_ne!(base, k(&parts("a.example", "/x", Some("acme")), &h));
        assert_ne!(
            k(&parts("a.example", "/x", Some("acme")), &h),
            k(&parts("a.example", "/x", Some("globex")), &h)
        );
        let mut q = parts("a.example", "/x", None);
        q.query = Some("a=1");
        assert_ne!(base, k(&q, &h));
        let mut head = parts("a.example", "/x", None);
        head.method = "HEAD";
        assert_eq!(base, k(&head, &h), "HEAD is answered from the GET entry");
        let mut accept = http::HeaderMap::new();
        accept.insert("accept", HeaderValue::from_static("text/html"));
        assert_ne!(base, k(&parts("a.example", "/x", None), &accept));
        // Field boundaries are unambiguous.
        assert_ne!(
            k(&parts("ab", "/c", None), &h),
            k(&parts("a", "b/c", None), &h)
        );
        let other = build("vary = [\"accept\"]");
        assert_ne!(
            base,
            other
                .cache_key(&parts("a.example", "/x", None), &h)
                .combined_bin()
        );
    }

    #[test]
    fn config_errors_are_located() {
        let e = build_err("methods = [\"GET\", \"POST\"]");
        assert_eq!(e[0].path.to_string(), "methods[1]");
        let e = build_err("vary = [\"bad header\"]");
        assert_eq!(e[0].path.to_string(), "vary[0]");
        let e = build_err("max_size = \"1MiB\"\nmax_entry = \"1MiB\"");
        assert_eq!(e[0].path.to_string(), "max_entry");
        let e = build_err("max_size = \"1KiB\"");
        assert_eq!(e[0].path.to_string(), "max_size");
    }

    fn entry(key: HashBinary, body: usize) -> Entry {
        let header = resp(200, &[]);
        Entry {
            key,
            generation: 0,
            fresh_until: SystemTime::now() + Duration::from_secs(60),
            created: SystemTime::now(),
            updated: SystemTime::now(),
            stale_if_error: 0,
            weight: body + header_size(&header) + ENTRY_OVERHEAD,
            header,
            body: Bytes::from(vec![b'a'; body]),
        }
    }

    fn key_n(i: u64) -> HashBinary {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn store_stays_within_max_size_and_keeps_its_index_in_step() {
        let max = 1 << 20;
        let s = Store::new(max, 64 * 1024);
        for i in 0..20_000u64 {
            s.insert(
                entry(key_n(i), (i as usize * 37) % 8000),
                Some(PurgeTag {
                    route: Arc::from("r"),
                    path: Box::from(format!("/p/{i}")),
                }),
            );
        }
        let (n, bytes) = s.usage();
        assert!(bytes <= max + 64 * 1024, "{bytes} bytes over budget");
        assert!(n > 50, "kept only {n} entries");
        // Every indexed key is still stored, and purge finds exactly those.
        let stored = (0..20_000u64)
            .filter(|i| s.get(&key_n(*i)).is_some())
            .count();
        assert_eq!(stored, n);
        assert_eq!(s.purge(|r, p| r == "r" && p.starts_with("/p/")), n);
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn purge_matches_route_and_prefix() {
        let s = Store::new(1 << 20, 64 * 1024);
        let tag = |r: &str, p: &str| {
            Some(PurgeTag {
                route: Arc::from(r),
                path: Box::from(p),
            })
        };
        s.insert(entry(key_n(1), 10), tag("a", "/v1/items/1"));
        s.insert(entry(key_n(2), 10), tag("a", "/v1/items/2"));
        s.insert(entry(key_n(3), 10), tag("a", "/v1/other"));
        s.insert(entry(key_n(4), 10), tag("b", "/v1/items/1"));
        assert_eq!(s.purge(|r, p| r == "a" && p.starts_with("/v1/items")), 2);
        assert!(s.get(&key_n(1)).is_none());
        assert!(s.get(&key_n(3)).is_some());
        assert!(s.get(&key_n(4)).is_some());
    }

    #[test]
    fn dropping_the_instance_frees_its_entries() {
        let c = build("");
        let slot = c.storage();
        slot.store().unwrap().insert(entry(key_n(1), 100), None);
        assert_eq!(c.usage().0, 1);
        drop(c);
        assert!(slot.store().is_none());
    }

    #[tokio::test]
    async fn miss_then_lookup_round_trip_through_pingoras_traits() {
        let c = build("");
        let slot = c.storage();
        let key = c.cache_key(&parts("h", "/x", None), &http::HeaderMap::new());
        let meta = match c.response_cacheable(&resp(200, &[("cache-control", "max-age=60")])) {
            RespCacheable::Cacheable(m) => m,
            _ => panic!("cacheable"),
        };
        let span = pingora::cache::trace::Span::inactive().handle();
        let mut miss = slot.get_miss_handler(&key, &meta, &span).await.unwrap();
        miss.write_body(Bytes::from_static(b"hello "), false)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"world"), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        let (meta, mut hit) = slot.lookup(&key, &span).await.unwrap().expect("stored");
        assert!(meta.is_fresh(SystemTime::now()));
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "hello world");
        assert!(hit.read_body().await.unwrap().is_none());
        hit.seek(6, None).unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "world");
        assert_eq!(c.purge("r", "/"), 1);
        assert!(slot.lookup(&key, &span).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_abandoned_miss_stores_nothing() {
        let c = build("");
        let slot = c.storage();
        let key = c.cache_key(&parts("h", "/x", None), &http::HeaderMap::new());
        let meta = match c.response_cacheable(&resp(200, &[])) {
            RespCacheable::Cacheable(m) => m,
            _ => panic!("cacheable"),
        };
        let span = pingora::cache::trace::Span::inactive().handle();
        let mut miss = slot.get_miss_handler(&key, &meta, &span).await.unwrap();
        miss.write_body(Bytes::from_static(b"partial"), false)
            .await
            .unwrap();
        drop(miss);
        assert!(slot.lookup(&key, &span).await.unwrap().is_none());
    }
}
