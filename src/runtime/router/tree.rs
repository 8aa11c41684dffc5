//! The compiled routing table's parts: the trie nodes and their literal
//! children, each route's remaining predicates (methods, headers, version)
//! and the hasher of the trie and host maps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::{HeaderName, Method};

use super::{Params, RequestInfo, Waive};

#[derive(Debug, Default)]
pub(super) struct Node {
    pub(super) literals: Children,
    pub(super) param: Option<usize>,
    /// Ranks (ascending) of prefix routes whose pattern ends at this node.
    pub(super) prefix: Vec<usize>,
    /// Ranks (ascending) of exact routes whose pattern ends at this node.
    pub(super) exact: Vec<usize>,
}

/// Literal children of a node: a short list is scanned, a long one hashed.
#[derive(Debug)]
pub(super) enum Children {
    List(Vec<(ListKey, usize)>),
    Map(FastMap<usize>),
}

/// Above this many children a node's literals go in a hash map.
const SMALL_CHILDREN: usize = 8;

/// A literal in a short child list, with its length and first 8 bytes kept
/// inline so most comparisons never touch the string itself.
#[derive(Debug)]
pub(super) struct ListKey {
    len: usize,
    head: u64,
    text: Box<str>,
}

/// The first (up to) 8 bytes of `s` as a little-endian word, zero-padded.
#[inline]
fn head_word(s: &str) -> u64 {
    let mut w = 0u64;
    for (i, &b) in s.as_bytes().iter().take(8).enumerate() {
        w |= u64::from(b) << (8 * i);
    }
    w
}

impl ListKey {
    fn new(s: &str) -> ListKey {
        ListKey {
            len: s.len(),
            head: head_word(s),
            text: s.into(),
        }
    }

    #[inline]
    fn matches(&self, seg: &str, head: u64) -> bool {
        self.len == seg.len()
            && self.head == head
            && (self.len <= 8 || self.text.as_bytes().get(8..) == seg.as_bytes().get(8..))
    }
}

impl Default for Children {
    fn default() -> Self {
        Children::List(Vec::new())
    }
}

impl Children {
    #[inline]
    pub(super) fn get(&self, seg: &str) -> Option<usize> {
        match self {
            Children::List(list) => {
                let head = head_word(seg);
                list.iter()
                    .find(|(k, _)| k.matches(seg, head))
                    .map(|&(_, c)| c)
            }
            Children::Map(map) => map.get(seg).copied(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Children::List(list) => list.is_empty(),
            Children::Map(map) => map.is_empty(),
        }
    }

    pub(super) fn insert(&mut self, seg: &str, child: usize) {
        match self {
            Children::List(list) => {
                list.push((ListKey::new(seg), child));
                if list.len() > SMALL_CHILDREN {
                    let map = list.drain(..).map(|(k, c)| (k.text, c)).collect();
                    *self = Children::Map(map);
                }
            }
            Children::Map(map) => {
                map.insert(seg.into(), child);
            }
        }
    }
}

/// Splits a path remainder into its next non-empty segment and the rest
/// (which starts at the following `/`, or is empty). `None` at the end.
#[inline]
pub(super) fn next_segment(rest: &str) -> Option<(&str, &str)> {
    let bytes = rest.as_bytes();
    let start = bytes.iter().position(|&b| b != b'/')?;
    let end = bytes
        .iter()
        .skip(start)
        .position(|&b| b == b'/')
        .map_or(bytes.len(), |n| start + n);
    Some((rest.get(start..end)?, rest.get(end..)?))
}

#[derive(Debug)]
pub(super) struct Route {
    /// Index in the `defs` the router was built from.
    pub(super) index: usize,
    pub(super) methods: MethodSet,
    pub(super) headers: Box<[(HeaderName, Box<[u8]>)]>,
    pub(super) version: Option<Box<str>>,
    /// (segment position, name), ascending by position.
    pub(super) params: Box<[(usize, Arc<str>)]>,
}

impl Route {
    /// Everything but host, path and method (those are checked elsewhere).
    #[inline]
    pub(super) fn other_predicates_hold(&self, req: &RequestInfo<'_>, waive: Waive<'_>) -> bool {
        if let Some(v) = &self.version {
            if req.version != Some(v.as_ref()) {
                return false;
            }
        }
        self.headers.iter().all(|(name, want)| {
            waive.waives(name)
                || req
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|have| have.as_bytes() == want.as_ref())
        })
    }

    pub(super) fn params(&self, path: &str) -> Params {
        if self.params.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.params.len());
        let mut want = self.params.iter().peekable();
        for (pos, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
            match want.peek() {
                Some((p, name)) if *p == pos => {
                    out.push((Arc::clone(name), seg.to_owned()));
                    want.next();
                }
                Some(_) => {}
                None => break,
            }
        }
        out
    }
}

/// The standard methods get one bit each; others are kept in a list.
pub(super) const METHOD_BITS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

#[inline]
pub(super) fn method_bit(m: &Method) -> u16 {
    METHOD_BITS
        .iter()
        .position(|b| b == m)
        .map_or(0, |i| 1 << i)
}

#[derive(Debug, Default)]
pub(super) struct MethodSet {
    any: bool,
    pub(super) bits: u16,
    pub(super) other: Box<[Method]>,
}

impl MethodSet {
    pub(super) fn new(methods: &[Method]) -> MethodSet {
        let mut set = MethodSet {
            any: methods.is_empty(),
            ..MethodSet::default()
        };
        let mut other = Vec::new();
        for m in methods {
            match method_bit(m) {
                0 => other.push(m.clone()),
                bit => set.bits |= bit,
            }
        }
        set.other = other.into_boxed_slice();
        set
    }

    /// `bit` is `method_bit(m)`, computed once per request.
    #[inline]
    pub(super) fn allows(&self, m: &Method, bit: u16) -> bool {
        self.any || self.bits & bit != 0 || (bit == 0 && self.other.contains(m))
    }
}

/// A small, fast, non-cryptographic string hasher for the trie and host maps.
/// Only configured keys are ever inserted, so requests cannot flood a map;
/// they can only look keys up.
#[derive(Default)]
pub(super) struct FastHasher(u64);

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

/// 64x64 -> 128-bit multiply, both halves folded together: one instruction
/// that mixes every input bit into every output bit.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = 0u64;
            for (i, &b) in chunk.iter().enumerate() {
                word |= u64::from(b) << (8 * i);
            }
            h = folded_multiply(h ^ word, K0);
        }
        // At most 7 bytes remain, so the top byte is free for the length.
        let mut word = (bytes.len() as u64) << 56;
        for (i, &b) in chunks.remainder().iter().enumerate() {
            word |= u64::from(b) << (8 * i);
        }
        self.0 = folded_multiply(h ^ word, K1);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        // `str`'s terminator; `finish` mixes it in.
        self.0 = self.0.rotate_left(8) ^ u64::from(i);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.0 ^ K2, K0)
    }
}

pub(super) type FastMap<V> = HashMap<Box<str>, V, BuildHasherDefault<FastHasher>>;
