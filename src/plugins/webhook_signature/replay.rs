//! Replay detection: the bounded memory of verified webhooks.

use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};

/// A verified webhook: the keys that identify it for replay detection, and
/// until when (Unix seconds, inclusive) it must be remembered.
pub(super) struct Verified {
    pub(super) keys: Vec<[u8; 32]>,
    pub(super) expires: i64,
}

/// Verified webhooks remembered until their window closes, at most `cap`.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) by_key: HashMap<[u8; 32], (i64, u64)>,
    pub(super) by_expiry: BTreeSet<(i64, u64, [u8; 32])>,
    seq: u64,
}

impl Seen {
    pub(super) fn purge(&mut self, now: i64) {
        while let Some(&(exp, seq, key)) = self.by_expiry.first() {
            if exp >= now {
                break;
            }
            self.by_expiry.remove(&(exp, seq, key));
            self.by_key.remove(&key);
        }
    }

    /// Remembers `keys` unless one of them is already remembered (a replay).
    /// Check and insert happen under one lock, so of two simultaneous copies
    /// exactly one is admitted.
    pub(super) fn admit(&mut self, keys: &[[u8; 32]], expires: i64, now: i64, cap: usize) -> bool {
        self.purge(now);
        if keys.iter().any(|k| self.by_key.contains_key(k)) {
            return false;
        }
        for k in keys {
            while self.by_key.len() >= cap.max(1) {
                let Some(&(exp, seq, old)) = self.by_expiry.first() else {
                    break;
                };
                self.by_expiry.remove(&(exp, seq, old));
                self.by_key.remove(&old);
            }
            self.seq += 1;
            self.by_key.insert(*k, (expires, self.seq));
            self.by_expiry.insert((expires, self.seq, *k));
        }
        true
    }

    /// Forget `keys`, so that the sender may deliver the webhook again.
    pub(super) fn forget(&mut self, keys: &[[u8; 32]]) {
        for k in keys {
            if let Some((exp, seq)) = self.by_key.remove(k) {
                self.by_expiry.remove(&(exp, seq, *k));
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

pub(super) fn replay_key(kind: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind);
    h.update([0u8]);
    h.update(value);
    h.finalize().into()
}
