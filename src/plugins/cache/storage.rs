//! Storage: the [`Store`] of one cache instance (TinyUFO within a byte budget,
//! plus the purge index), the `'static` [`Slot`] Pingora holds, and the hit and
//! miss handlers Pingora drives.

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Accounting overhead per stored entry, on top of its body and header bytes.
pub(super) const ENTRY_OVERHEAD: usize = 256;

/// Carried in the cache key's extensions so the store can index entries for purge.
#[derive(Debug, Clone)]
pub(super) struct PurgeTag {
    pub(super) route: Arc<str>,
    pub(super) path: Box<str>,
}

pub struct Slot {
    pub(super) store: ArcSwapOption<Store>,
}

impl Slot {
    pub(super) fn store(&self) -> Option<Arc<Store>> {
        self.store.load_full()
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: HashBinary,
    pub(super) generation: u64,
    pub(super) fresh_until: SystemTime,
    pub(super) created: SystemTime,
    pub(super) updated: SystemTime,
    pub(super) stale_if_error: u32,
    pub(super) header: ResponseHeader,
    pub(super) body: Bytes,
    pub(super) weight: usize,
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

    pub(super) fn get(&self, key: &HashBinary) -> Option<Arc<Entry>> {
        self.ufo.get(key).filter(|e| &e.key == key)
    }

    pub(super) fn insert(&self, mut entry: Entry, tag: Option<PurgeTag>) {
        entry.generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let key = entry.key;
        let weight_units = entry.weight.div_ceil(self.unit).clamp(1, u16::MAX as usize) as u16;
        let entry = Arc::new(entry);
        {
            let mut idx = self.index.lock();
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
        let mut idx = self.index.lock();
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

    pub(super) fn remove(&self, key: &HashBinary) -> bool {
        let removed = self.ufo.remove(key);
        if let Some(e) = &removed {
            self.bytes.fetch_sub(e.weight as u64, Ordering::Relaxed);
        }
        let mut idx = self.index.lock();
        idx.remove(key).is_some() || removed.is_some()
    }

    pub(super) fn purge(&self, matches: impl Fn(&str, &str) -> bool) -> usize {
        let keys: Vec<HashBinary> = {
            let idx = self.index.lock();
            idx.iter()
                .filter(|(_, i)| matches(&i.route, &i.path))
                .map(|(k, _)| *k)
                .collect()
        };
        keys.iter().filter(|k| self.remove(k)).count()
    }

    pub(super) fn usage(&self) -> (usize, usize) {
        let n = self.index.lock().len();
        (n, self.bytes.load(Ordering::Relaxed) as usize)
    }
}

pub(super) fn header_size(h: &ResponseHeader) -> usize {
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
