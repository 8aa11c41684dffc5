//! The verified-token cache: bounded, sharded, keyed by the SHA-256 of the
//! whole token, tied to the key set a token was verified with, never used past
//! `exp + leeway`.

use super::{Reason, Verified};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

const CACHE_SHARDS: usize = 16;

pub(super) struct Entry {
    pub(super) verified: Arc<Verified>,
    pub(super) exp: f64,
    pub(super) nbf: Option<f64>,
    pub(super) generation: u64,
}

#[derive(Default)]
struct Shard {
    current: HashMap<[u8; 32], Entry>,
    previous: HashMap<[u8; 32], Entry>,
}

/// Two generations per shard: when `current` is full it becomes `previous`
/// (dropping the old `previous`), and a hit in `previous` moves back to
/// `current`. Bounded by `CACHE_ENTRIES`, evicts roughly least-recently-used.
pub(super) struct Cache {
    shards: Vec<Mutex<Shard>>,
    per_generation: usize,
}

impl Cache {
    pub(super) fn new(entries: usize) -> Cache {
        Cache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            per_generation: (entries / CACHE_SHARDS / 2).max(1),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> Option<parking_lot::MutexGuard<'_, Shard>> {
        let s = self.shards.get(key[0] as usize % CACHE_SHARDS)?;
        Some(s.lock())
    }

    pub(super) fn get(
        &self,
        key: &[u8; 32],
        generation: u64,
        now: f64,
        leeway: f64,
    ) -> Option<Arc<Verified>> {
        let mut s = self.shard(key)?;
        let usable =
            |e: &Entry| e.generation == generation && times_ok(e.exp, e.nbf, now, leeway).is_ok();
        if let Some(e) = s.current.get(key) {
            if usable(e) {
                return Some(e.verified.clone());
            }
            s.current.remove(key);
            return None;
        }
        let e = s.previous.remove(key)?;
        if !usable(&e) {
            return None;
        }
        let v = e.verified.clone();
        self.put(&mut s, *key, e);
        Some(v)
    }

    pub(super) fn insert(&self, key: [u8; 32], e: Entry) {
        if let Some(mut s) = self.shard(&key) {
            self.put(&mut s, key, e);
        }
    }

    fn put(&self, s: &mut Shard, key: [u8; 32], e: Entry) {
        if s.current.len() >= self.per_generation && !s.current.contains_key(&key) {
            s.previous = std::mem::take(&mut s.current);
        }
        s.current.insert(key, e);
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

pub(super) fn times_ok(exp: f64, nbf: Option<f64>, now: f64, leeway: f64) -> Result<(), Reason> {
    if now >= exp + leeway {
        return Err(Reason::Expired);
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(Reason::NotYetValid);
    }
    Ok(())
}
