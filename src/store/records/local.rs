//! Records in this process. When full, the oldest stored responses go first;
//! in-flight and locked keys are never evicted (a new key then gets
//! [`Begin::Full`]). Expired records are forgotten on every maintenance tick.

use super::{Begin, Stored, MAX_KEYS};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes a record costs beyond its key and stored response (map slot, order
/// queue entry, allocation overhead): a conservative estimate.
pub(super) const RECORD_OVERHEAD: usize = 256;

#[derive(Debug)]
enum Record {
    InFlight {
        fp: [u8; 32],
        token: u64,
        expires: Instant,
    },
    /// The first request's outcome is unknown: the key may not run again yet.
    Locked { fp: [u8; 32], expires: Instant },
    Done {
        fp: [u8; 32],
        resp: Arc<Stored>,
        expires: Instant,
        seq: u64,
    },
}

impl Record {
    fn expires(&self) -> Instant {
        match self {
            Record::InFlight { expires, .. }
            | Record::Locked { expires, .. }
            | Record::Done { expires, .. } => *expires,
        }
    }

    fn cost(&self, key: &str) -> usize {
        // The key is held twice (map and eviction queue).
        let base = 2 * key.len() + RECORD_OVERHEAD;
        match self {
            Record::Done { resp, .. } => base + resp.size(),
            _ => base,
        }
    }
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// Stored records in insertion order, for eviction (entries whose `seq`
    /// no longer matches are stale and skipped).
    order: VecDeque<(String, u64)>,
    /// Sum of the records' `cost`.
    bytes: usize,
    next: u64,
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Record> {
        let r = self.records.remove(key)?;
        self.bytes = self.bytes.saturating_sub(r.cost(key));
        Some(r)
    }

    fn insert(&mut self, key: &str, r: Record) {
        self.remove(key);
        self.bytes += r.cost(key);
        self.records.insert(key.to_string(), r);
    }

    /// Evict the oldest stored responses until `need` more bytes and one more
    /// record fit; false when only in-flight and locked records are left.
    fn make_room(&mut self, need: usize, max_bytes: usize, keep: &str) -> bool {
        while self.bytes + need > max_bytes || self.records.len() >= MAX_KEYS {
            let Some((k, s)) = self.order.pop_front() else {
                return false;
            };
            let current = k != keep
                && matches!(self.records.get(&k), Some(Record::Done { seq, .. }) if *seq == s);
            if current {
                self.remove(&k);
            }
        }
        true
    }
}

/// The in-memory records of one plugin instance, bounded by `max_bytes`
/// (`max_size`) and [`MAX_KEYS`] records.
pub struct LocalRecords {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl LocalRecords {
    pub fn new(max_bytes: usize) -> Self {
        LocalRecords {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    pub fn begin(&self, key: &str, fp: [u8; 32], ttl: Duration) -> Begin {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        match inner.records.get(key) {
            Some(r) if r.expires() > now => {
                return match r {
                    Record::InFlight { fp: f, .. } if *f == fp => Begin::InFlight,
                    Record::Locked { fp: f, expires } if *f == fp => {
                        Begin::Locked(expires.saturating_duration_since(now))
                    }
                    Record::Done { fp: f, resp, .. } if *f == fp => Begin::Replay(resp.clone()),
                    _ => Begin::Mismatch,
                };
            }
            Some(_) => {
                inner.remove(key);
            }
            None => {}
        }
        inner.next += 1;
        let token = inner.next;
        let record = Record::InFlight {
            fp,
            token,
            expires: now + ttl,
        };
        if !inner.make_room(record.cost(key), self.max_bytes, key) {
            return Begin::Full;
        }
        inner.insert(key, record);
        Begin::Proceed(token)
    }

    /// Store the response of the request holding `token`. False (and the key
    /// released) when it cannot be kept.
    pub fn complete(&self, key: &str, token: u64, resp: Stored, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        let fp = match inner.records.get(key) {
            Some(Record::InFlight { fp, token: t, .. }) if *t == token => *fp,
            _ => return false,
        };
        inner.remove(key);
        inner.next += 1;
        let seq = inner.next;
        let record = Record::Done {
            fp,
            resp: Arc::new(resp),
            expires: now + ttl,
            seq,
        };
        if !inner.make_room(record.cost(key), self.max_bytes, key) {
            return false;
        }
        inner.insert(key, record);
        inner.order.push_back((key.to_string(), seq));
        true
    }

    /// The request holding `token` ended without a known outcome: keep its
    /// key locked for `lock`.
    pub fn lock_unknown(&self, key: &str, token: u64, lock: Duration) {
        let mut g = self.lock();
        let inner = &mut *g;
        let fp = match inner.records.get(key) {
            Some(Record::InFlight { fp, token: t, .. }) if *t == token => *fp,
            _ => return,
        };
        inner.insert(
            key,
            Record::Locked {
                fp,
                expires: Instant::now() + lock,
            },
        );
    }

    /// Drop the in-flight marker of `token` (the response is not stored).
    pub fn abort(&self, key: &str, token: u64) {
        let mut g = self.lock();
        if matches!(g.records.get(key), Some(Record::InFlight { token: t, .. }) if *t == token) {
            g.remove(key);
        }
    }

    /// Forget expired records.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.records.retain(|_, r| r.expires() > now);
        inner.bytes = inner.records.iter().map(|(k, r)| r.cost(k)).sum();
        let records = &inner.records;
        inner
            .order
            .retain(|(k, s)| matches!(records.get(k), Some(Record::Done { seq, .. }) if seq == s));
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The estimated memory the records take (what `max_size` bounds).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}
