//! The request router.
//!
//! Routes are compiled into segment tries, one per host bucket (each exact
//! host, each `*.suffix`, and "any host"). A request walks the tries for its
//! host once; every trie node it reaches holds the routes whose path ends
//! there, so only routes whose host and path already match are looked at,
//! and their remaining predicates (method, headers, version) are checked
//! then. Nothing scans the route list per request.
//!
//! Choice among routes whose predicates all hold (SPEC §3): exact (`=/..`)
//! beats prefix, then more segments beat fewer, then, comparing segment by
//! segment from the left, a literal beats a `{param}`, then the route with
//! more predicates, then file order. That order does not depend on the
//! request, so it is computed once at build time as a rank (lower is better);
//! each node keeps its routes sorted by rank and the walk keeps the best rank
//! seen, which also lets it stop early.
//!
//! Path patterns: `/v1/payments` is a prefix on segment boundaries (it matches
//! `/v1/payments`, `/v1/payments/` and `/v1/payments/x`, not `/v1/paymentsx`);
//! `{name}` matches exactly one non-empty segment and captures it;
//! `=/exact` matches only a path with exactly those segments. Matching is by
//! segments, so a trailing `/` is ignored on the pattern and on the request
//! alike (`=/health` matches `/health` and `/health/`), and so are repeated
//! slashes. Literal segments are normalised like request paths
//! ([`normalize_path`](super::path::normalize_path)), so `/caf%c3%a9` and `/caf%C3%A9` are one pattern and
//! a raw non-ASCII character in a pattern is percent-encoded (clients must
//! send it encoded). Paths are case-sensitive; hosts are not.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

/// One route as written in the config, reduced to what routing needs.
#[derive(Debug, Clone, Default)]
pub struct RouteDef {
    /// Empty = any host; `api.example.com` exact (case-insensitive);
    /// `*.example.com` any subdomain at any depth (not `example.com` itself);
    /// `*` any host.
    pub hosts: Vec<String>,
    /// `/v1/payments` prefix on a segment boundary; `/v1/accounts/{id}`
    /// captures one segment; `=/exact` exact match; `/` matches everything.
    pub path: String,
    /// Empty = any method.
    pub methods: Vec<Method>,
    /// Exact value matches; all must hold (any one value of a repeated header
    /// may match).
    pub headers: Vec<(HeaderName, String)>,
    /// Must equal the request's resolved API version.
    pub version: Option<String>,
}

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Already lowercase, port stripped.
    pub host: &'a str,
    /// Already normalised ([`normalize_path`](super::path::normalize_path)), without the query string.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The request's resolved API version, if any.
    pub version: Option<&'a str>,
}

/// The `headers` predicates a lookup treats as holding whatever the request
/// carries ([`Router::find_with`]). A CORS preflight carries none of the
/// headers of the request it announces (a browser only names them in
/// `Access-Control-Request-Headers`), so it is routed with some waived.
#[derive(Debug, Clone, Copy)]
pub enum Waive<'a> {
    /// Every predicate must hold (an ordinary request).
    Nothing,
    /// Predicates on these header names (compared case-insensitively) hold.
    Named(&'a [&'a str]),
    /// Every `headers` predicate holds.
    All,
}

impl Waive<'_> {
    #[inline]
    fn waives(&self, name: &HeaderName) -> bool {
        match self {
            Waive::Nothing => false,
            Waive::Named(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name.as_str())),
            Waive::All => true,
        }
    }
}

/// Captured path parameters of the chosen route, in pattern order:
/// (parameter name, segment as it appears in the normalised path).
pub type Params = Vec<(Arc<str>, String)>;

/// The result of [`Router::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// `route` is the index of the chosen route in the `defs` given to
    /// [`Router::new`].
    Found {
        route: usize,
        params: Params,
    },
    /// Some route matches everything but the method: answer 405 with this
    /// `Allow` value (uppercase, sorted, deduplicated, `", "`-separated).
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

/// The compiled routing table. Immutable once built (`Send + Sync`): share
/// it behind an `Arc` and rebuild it on reload.
#[derive(Debug)]
pub struct Router {
    nodes: Vec<Node>,
    /// Indexed by rank: `routes[0]` is the most specific route.
    routes: Vec<Route>,
    /// Trie roots per host bucket.
    any_host: Option<usize>,
    exact_hosts: FastMap<usize>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: FastMap<usize>,
}

#[derive(Debug, Default)]
struct Node {
    literals: Children,
    param: Option<usize>,
    /// Ranks (ascending) of prefix routes whose pattern ends at this node.
    prefix: Vec<usize>,
    /// Ranks (ascending) of exact routes whose pattern ends at this node.
    exact: Vec<usize>,
}

/// Literal children of a node: a short list is scanned, a long one hashed.
#[derive(Debug)]
enum Children {
    List(Vec<(ListKey, usize)>),
    Map(FastMap<usize>),
}

/// Above this many children a node's literals go in a hash map.
const SMALL_CHILDREN: usize = 8;

/// A literal in a short child list, with its length and first 8 bytes kept
/// inline so most comparisons never touch the string itself.
#[derive(Debug)]
struct ListKey {
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
    fn get(&self, seg: &str) -> Option<usize> {
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

    fn is_empty(&self) -> bool {
        match self {
            Children::List(list) => list.is_empty(),
            Children::Map(map) => map.is_empty(),
        }
    }

    fn insert(&mut self, seg: &str, child: usize) {
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
fn next_segment(rest: &str) -> Option<(&str, &str)> {
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
struct Route {
    /// Index in the `defs` the router was built from.
    index: usize,
    methods: MethodSet,
    headers: Box<[(HeaderName, Box<[u8]>)]>,
    version: Option<Box<str>>,
    /// (segment position, name), ascending by position.
    params: Box<[(usize, Arc<str>)]>,
}

impl Route {
    /// Everything but host, path and method (those are checked elsewhere).
    #[inline]
    fn other_predicates_hold(&self, req: &RequestInfo<'_>, waive: Waive<'_>) -> bool {
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

    fn params(&self, path: &str) -> Params {
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
const METHOD_BITS: [Method; 9] = [
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
fn method_bit(m: &Method) -> u16 {
    METHOD_BITS
        .iter()
        .position(|b| b == m)
        .map_or(0, |i| 1 << i)
}

#[derive(Debug, Default)]
struct MethodSet {
    any: bool,
    bits: u16,
    other: Box<[Method]>,
}

impl MethodSet {
    fn new(methods: &[Method]) -> MethodSet {
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
    fn allows(&self, m: &Method, bit: u16) -> bool {
        self.any || self.bits & bit != 0 || (bit == 0 && self.other.contains(m))
    }
}

/// A small, fast, non-cryptographic string hasher for the trie and host maps.
/// Only configured keys are ever inserted, so requests cannot flood a map;
/// they can only look keys up.
#[derive(Default)]
struct FastHasher(u64);

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

type FastMap<V> = HashMap<Box<str>, V, BuildHasherDefault<FastHasher>>;

pub use crate::route_pattern::validate as validate_pattern;
use crate::route_pattern::{parse_pattern, Pattern, Segment};

#[derive(Debug)]
enum HostPattern {
    Any,
    Exact(String),
    /// The suffix after `*.`.
    Wildcard(String),
}

fn parse_host(host: &str) -> Result<HostPattern, String> {
    let h = host.to_ascii_lowercase();
    if h.is_empty() {
        return Err("host is empty".into());
    }
    if h == "*" {
        return Ok(HostPattern::Any);
    }
    let (wild, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h.as_str()),
    };
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(format!("host {host:?} has an empty label"));
    }
    if name.contains('*') {
        return Err(format!(
            "host {host:?}: '*' is only allowed as a whole first label, as in \"*.example.com\""
        ));
    }
    if name
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'/' || b == b'\\')
    {
        return Err(format!("host {host:?} contains a character a host cannot"));
    }
    let bracketed = name.starts_with('[') && name.ends_with(']');
    if name.contains(':') && !bracketed {
        return Err(format!(
            "host {host:?} has a port; hosts are matched without the port"
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(name.to_owned())
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

struct Compiled {
    index: usize,
    pattern: Pattern,
    hosts: Vec<HostPattern>,
    predicates: usize,
}

/// Rank order: `Less` means `a` is more specific (wins).
fn specificity(a: &Compiled, b: &Compiled) -> std::cmp::Ordering {
    b.pattern
        .exact
        .cmp(&a.pattern.exact)
        .then_with(|| b.pattern.segments.len().cmp(&a.pattern.segments.len()))
        // Literal (false) before param (true), leftmost position first.
        .then_with(|| a.pattern.is_param().cmp(b.pattern.is_param()))
        .then_with(|| b.predicates.cmp(&a.predicates))
        .then_with(|| a.index.cmp(&b.index))
}

/// Walk state of [`Router::find`].
struct Best {
    rank: usize,
    method_mismatch: bool,
}

impl Router {
    /// Compiles the routes. On failure, returns `(route index, message)` for
    /// every problem in every route. A bad path pattern gives the bare
    /// [`validate_pattern`] message; a bad host gives a message starting
    /// `hosts[N]: ` (N indexes `RouteDef::hosts`).
    pub fn new(defs: &[RouteDef]) -> Result<Router, Vec<(usize, String)>> {
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(defs.len());
        for (index, def) in defs.iter().enumerate() {
            let pattern = match parse_pattern(&def.path) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push((index, e));
                    None
                }
            };
            let mut hosts = Vec::with_capacity(def.hosts.len());
            for (i, h) in def.hosts.iter().enumerate() {
                match parse_host(h) {
                    Ok(h) => hosts.push(h),
                    Err(e) => errors.push((index, format!("hosts[{i}]: {e}"))),
                }
            }
            if hosts.is_empty() {
                hosts.push(HostPattern::Any);
            }
            let predicates = usize::from(!def.hosts.is_empty())
                + usize::from(!def.methods.is_empty())
                + def.headers.len()
                + usize::from(def.version.is_some());
            if let Some(pattern) = pattern {
                compiled.push(Compiled {
                    index,
                    pattern,
                    hosts,
                    predicates,
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        compiled.sort_by(specificity);

        let mut router = Router {
            nodes: Vec::new(),
            routes: Vec::with_capacity(compiled.len()),
            any_host: None,
            exact_hosts: FastMap::default(),
            wildcard_hosts: FastMap::default(),
        };
        for (rank, c) in compiled.iter().enumerate() {
            for host in &c.hosts {
                let root = router.root_for(host);
                router.insert(root, &c.pattern, rank);
            }
            let def = &defs[c.index];
            router.routes.push(Route {
                index: c.index,
                methods: MethodSet::new(&def.methods),
                headers: def
                    .headers
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_bytes().into()))
                    .collect(),
                version: def.version.as_deref().map(Into::into),
                params: c
                    .pattern
                    .segments
                    .iter()
                    .enumerate()
                    .filter_map(|(pos, s)| match s {
                        Segment::Param(name) => Some((pos, Arc::clone(name))),
                        Segment::Literal(_) => None,
                    })
                    .collect(),
            });
        }
        Ok(router)
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn root_for(&mut self, host: &HostPattern) -> usize {
        let existing = match host {
            HostPattern::Any => self.any_host,
            HostPattern::Exact(h) => self.exact_hosts.get(h.as_str()).copied(),
            HostPattern::Wildcard(s) => self.wildcard_hosts.get(s.as_str()).copied(),
        };
        if let Some(root) = existing {
            return root;
        }
        let root = self.new_node();
        match host {
            HostPattern::Any => self.any_host = Some(root),
            HostPattern::Exact(h) => {
                self.exact_hosts.insert(h.as_str().into(), root);
            }
            HostPattern::Wildcard(s) => {
                self.wildcard_hosts.insert(s.as_str().into(), root);
            }
        }
        root
    }

    fn insert(&mut self, root: usize, pattern: &Pattern, rank: usize) {
        let mut node = root;
        for seg in &pattern.segments {
            node = match seg {
                Segment::Literal(lit) => match self.nodes[node].literals.get(lit) {
                    Some(child) => child,
                    None => {
                        let child = self.new_node();
                        self.nodes[node].literals.insert(lit, child);
                        child
                    }
                },
                Segment::Param(_) => match self.nodes[node].param {
                    Some(child) => child,
                    None => {
                        let child = self.new_node();
                        self.nodes[node].param = Some(child);
                        child
                    }
                },
            };
        }
        let n = &mut self.nodes[node];
        let list = if pattern.exact {
            &mut n.exact
        } else {
            &mut n.prefix
        };
        // Ranks are inserted in ascending order; a route listing one host
        // twice would otherwise appear twice.
        if list.last() != Some(&rank) {
            list.push(rank);
        }
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Chooses the route for a request.
    pub fn find(&self, req: &RequestInfo<'_>) -> RouteMatch {
        self.find_with(req, Waive::Nothing)
    }

    /// [`find`](Self::find), with the `headers` predicates `waive` names
    /// taken as holding (routing a CORS preflight).
    pub fn find_with(&self, req: &RequestInfo<'_>, waive: Waive<'_>) -> RouteMatch {
        let bit = method_bit(req.method);
        let mut best = Best {
            rank: usize::MAX,
            method_mismatch: false,
        };
        self.visit(req.host, req.path, &mut |ranks: &[usize]| {
            for &rank in ranks {
                if rank >= best.rank {
                    break;
                }
                let Some(route) = self.routes.get(rank) else {
                    break;
                };
                if !route.other_predicates_hold(req, waive) {
                    continue;
                }
                if route.methods.allows(req.method, bit) {
                    best.rank = rank;
                    break;
                }
                best.method_mismatch = true;
            }
        });
        if let Some(route) = self.routes.get(best.rank) {
            return RouteMatch::Found {
                route: route.index,
                params: route.params(req.path),
            };
        }
        if best.method_mismatch {
            return RouteMatch::MethodNotAllowed {
                allow: self.allow(req, waive),
            };
        }
        RouteMatch::NotFound
    }

    /// The `Allow` value for a request no route fully matches: the methods
    /// of every route that matches all but the method.
    fn allow(&self, req: &RequestInfo<'_>, waive: Waive<'_>) -> String {
        let mut bits = 0u16;
        let mut names: Vec<String> = Vec::new();
        self.visit(req.host, req.path, &mut |ranks: &[usize]| {
            for &rank in ranks {
                if let Some(route) = self.routes.get(rank) {
                    if route.other_predicates_hold(req, waive) {
                        bits |= route.methods.bits;
                        names.extend(
                            route
                                .methods
                                .other
                                .iter()
                                .map(|m| m.as_str().to_ascii_uppercase()),
                        );
                    }
                }
            }
        });
        for (i, m) in METHOD_BITS.iter().enumerate() {
            if bits & (1 << i) != 0 {
                names.push(m.as_str().to_owned());
            }
        }
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }

    /// Calls `f` with the rank list of every trie node whose routes match the
    /// request's host and path.
    fn visit<F: FnMut(&[usize])>(&self, host: &str, path: &str, f: &mut F) {
        if let Some(root) = self.any_host {
            self.walk(root, path, f);
        }
        if !self.exact_hosts.is_empty() {
            if let Some(&root) = self.exact_hosts.get(host) {
                self.walk(root, path, f);
            }
        }
        if !self.wildcard_hosts.is_empty() {
            for (dot, _) in host.bytes().enumerate().filter(|&(_, b)| b == b'.') {
                let suffix = host.get(dot + 1..).unwrap_or_default();
                if let Some(&root) = self.wildcard_hosts.get(suffix) {
                    self.walk(root, path, f);
                }
            }
        }
    }

    /// Depth-first walk; deeper (more specific) nodes report first, so the
    /// best rank is usually known before the shallow nodes are looked at.
    fn walk<F: FnMut(&[usize])>(&self, id: usize, rest: &str, f: &mut F) {
        let Some(node) = self.nodes.get(id) else {
            return;
        };
        let leaf = node.param.is_none() && node.literals.is_empty();
        if !leaf || !node.exact.is_empty() {
            match next_segment(rest) {
                None => {
                    if !node.exact.is_empty() {
                        f(&node.exact);
                    }
                }
                Some((seg, tail)) => {
                    if let Some(child) = node.literals.get(seg) {
                        self.walk(child, tail, f);
                    }
                    if let Some(child) = node.param {
                        self.walk(child, tail, f);
                    }
                }
            }
        }
        if !node.prefix.is_empty() {
            f(&node.prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn route(path: &str) -> RouteDef {
        RouteDef {
            path: path.into(),
            ..RouteDef::default()
        }
    }

    fn with_methods(path: &str, methods: &[Method]) -> RouteDef {
        RouteDef {
            methods: methods.to_vec(),
            ..route(path)
        }
    }

    fn with_hosts(path: &str, hosts: &[&str]) -> RouteDef {
        RouteDef {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..route(path)
        }
    }

    fn build(defs: &[RouteDef]) -> Router {
        match Router::new(defs) {
            Ok(r) => r,
            Err(e) => panic!("router build failed: {e:?}"),
        }
    }

    struct Req {
        host: String,
        path: String,
        method: Method,
        headers: HeaderMap,
        version: Option<String>,
    }

    fn req(path: &str) -> Req {
        Req {
            host: "api.example.com".into(),
            path: path.into(),
            method: Method::GET,
            headers: HeaderMap::new(),
            version: None,
        }
    }

    impl Req {
        fn host(mut self, h: &str) -> Req {
            self.host = h.into();
            self
        }
        fn method(mut self, m: Method) -> Req {
            self.method = m;
            self
        }
        fn header(mut self, n: &'static str, v: &'static str) -> Req {
            self.headers
                .append(HeaderName::from_static(n), HeaderValue::from_static(v));
            self
        }
        fn version(mut self, v: &str) -> Req {
            self.version = Some(v.into());
            self
        }
        fn info(&self) -> RequestInfo<'_> {
            RequestInfo {
                host: &self.host,
                path: &self.path,
                method: &self.method,
                headers: &self.headers,
                version: self.version.as_deref(),
            }
        }
    }

    /// The index of the chosen route, or None on 404/405.
    fn find(r: &Router, q: &Req) -> Option<usize> {
        match r.find(&q.info()) {
            RouteMatch::Found { route, .. } => Some(route),
            _ => None,
        }
    }

    fn find_path(r: &Router, path: &str) -> Option<usize> {
        find(r, &req(path))
    }

    fn params(r: &Router, q: &Req) -> Vec<(String, String)> {
        match r.find(&q.info()) {
            RouteMatch::Found { params, .. } => params
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            other => panic!("expected a match, got {other:?}"),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn prefix_on_segment_boundary() {
        let r = build(&[route("/v1/payments")]);
        assert_eq!(find_path(&r, "/v1/payments"), Some(0));
        assert_eq!(find_path(&r, "/v1/payments/"), Some(0));
        assert_eq!(find_path(&r, "/v1/payments/x/y"), Some(0));
        assert_eq!(find_path(&r, "/v1/paymentsx"), None);
        assert_eq!(find_path(&r, "/v1/pay"), None);
        assert_eq!(find_path(&r, "/v1"), None);
        assert_eq!(find_path(&r, "/"), None);
        assert_eq!(
            find_path(&r, "/V1/payments"),
            None,
            "paths are case-sensitive"
        );

        let r = build(&[route("/v1/pay")]);
        assert_eq!(find_path(&r, "/v1/payments"), None);
        assert_eq!(find_path(&r, "/v1/pay/ments"), Some(0));
    }

    #[test]
    fn pattern_trailing_slash_is_ignored() {
        let r = build(&[route("/a/")]);
        assert_eq!(find_path(&r, "/a"), Some(0));
        assert_eq!(find_path(&r, "/a/"), Some(0));
        assert_eq!(find_path(&r, "/a/b"), Some(0));
        assert_eq!(find_path(&r, "/ab"), None);
        // `/a/` and `/a` are the same pattern: file order decides.
        let r = build(&[route("/a/"), route("/a")]);
        assert_eq!(find_path(&r, "/a/b"), Some(0));
        let r = build(&[route("/a"), route("/a/")]);
        assert_eq!(find_path(&r, "/a/b"), Some(0));
    }

    #[test]
    fn root_route_matches_everything() {
        let r = build(&[route("/")]);
        for p in ["/", "/a", "/a/b/c/", "/v1/payments/123"] {
            assert_eq!(find_path(&r, p), Some(0), "{p}");
        }
        // ... but loses to anything more specific.
        let r = build(&[route("/"), route("/a")]);
        assert_eq!(find_path(&r, "/a/b"), Some(1));
        assert_eq!(find_path(&r, "/b"), Some(0));
    }

    #[test]
    fn exact_routes() {
        let r = build(&[route("=/health"), route("=/"), route("/h")]);
        assert_eq!(find_path(&r, "/health"), Some(0));
        assert_eq!(find_path(&r, "/health/"), Some(0));
        assert_eq!(find_path(&r, "/health/x"), None);
        assert_eq!(find_path(&r, "/healthz"), None);
        assert_eq!(find_path(&r, "/"), Some(1));
        assert_eq!(find_path(&r, "/x"), None);
        assert_eq!(find_path(&r, "/h/x"), Some(2));

        // Exact beats a prefix of the same length, and beats params.
        let r = build(&[route("/a/b"), route("=/a/b"), route("=/a/{x}")]);
        assert_eq!(find_path(&r, "/a/b"), Some(1));
        assert_eq!(find_path(&r, "/a/c"), Some(2));
        assert_eq!(find_path(&r, "/a/b/c"), Some(0));

        let r = build(&[route("/{x}"), route("=/{x}")]);
        assert_eq!(find_path(&r, "/a"), Some(1));
        assert_eq!(find_path(&r, "/a/b"), Some(0));
    }

    #[test]
    fn more_segments_win() {
        let r = build(&[
            route("/"),
            route("/v1"),
            route("/v1/payments"),
            route("/v1/payments/refunds"),
        ]);
        assert_eq!(find_path(&r, "/v1/payments/refunds/9"), Some(3));
        assert_eq!(find_path(&r, "/v1/payments/9"), Some(2));
        assert_eq!(find_path(&r, "/v1/x"), Some(1));
        assert_eq!(find_path(&r, "/v2"), Some(0));
        // More segments beat an earlier literal.
        let r = build(&[route("/a/b"), route("/{x}/b/c")]);
        assert_eq!(find_path(&r, "/a/b/c"), Some(1));
        assert_eq!(find_path(&r, "/a/b/d"), Some(0));
    }

    #[test]
    fn literal_beats_param_at_same_position() {
        let r = build(&[route("/users/{id}"), route("/users/me")]);
        assert_eq!(find_path(&r, "/users/me"), Some(1));
        assert_eq!(find_path(&r, "/users/42"), Some(0));

        // The leftmost differing position decides.
        let r = build(&[route("/{a}/x"), route("/b/{c}")]);
        assert_eq!(find_path(&r, "/b/x"), Some(1));
        let r = build(&[route("/b/{c}"), route("/{a}/x")]);
        assert_eq!(find_path(&r, "/b/x"), Some(0));
        assert_eq!(find_path(&r, "/z/x"), Some(1));
        assert_eq!(find_path(&r, "/z/y"), None);

        // Backtracking: the literal branch dead-ends, the param branch matches.
        let r = build(&[route("/a/b/c"), route("/{x}/b/d")]);
        assert_eq!(find_path(&r, "/a/b/d"), Some(1));
    }

    #[test]
    fn params_match_one_non_empty_segment() {
        let r = build(&[route("=/items/{id}")]);
        assert_eq!(find_path(&r, "/items/1"), Some(0));
        assert_eq!(find_path(&r, "/items/1/"), Some(0));
        assert_eq!(find_path(&r, "/items/"), None);
        assert_eq!(find_path(&r, "/items"), None);
        assert_eq!(find_path(&r, "/items/1/2"), None);
        let r = build(&[route("/items/{id}")]);
        assert_eq!(find_path(&r, "/items/1/2"), Some(0));
        assert_eq!(find_path(&r, "/items/"), None);
    }

    #[test]
    fn captures_in_pattern_order() {
        let r = build(&[
            route("/v1/accounts/{account}/cards/{card_id}"),
            route("/v1/accounts/{id}"),
        ]);
        let q = req("/v1/accounts/acc_1/cards/c-9/extra");
        assert_eq!(
            params(&r, &q),
            pairs(&[("account", "acc_1"), ("card_id", "c-9")])
        );
        assert_eq!(
            params(&r, &req("/v1/accounts/acc_2")),
            pairs(&[("id", "acc_2")])
        );
        assert_eq!(
            params(&r, &req("/v1/accounts/acc_2/cards")),
            pairs(&[("id", "acc_2")])
        );
        // Routes sharing a param node report their own names.
        let r = build(&[route("=/x/{a}"), route("/x/{b}/y")]);
        assert_eq!(params(&r, &req("/x/1")), pairs(&[("a", "1")]));
        assert_eq!(params(&r, &req("/x/1/y")), pairs(&[("b", "1")]));
        // No params: empty (and no allocation).
        let r = build(&[route("/a")]);
        assert_eq!(params(&r, &req("/a/b")), vec![]);
        // Captured as normalised (escapes kept).
        let r = build(&[route("/f/{name}")]);
        assert_eq!(params(&r, &req("/f/a%20b")), pairs(&[("name", "a%20b")]));
    }

    #[test]
    fn many_segments() {
        let pattern = "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/{p}/q/r/s/t";
        let r = build(&[route("/a/b/c"), route(pattern), route("/a/b/c/d/e/f")]);
        assert_eq!(
            find_path(&r, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/P/q/r/s/t/u/v"),
            Some(1)
        );
        assert_eq!(
            find_path(&r, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/P/q/r/s"),
            Some(2)
        );
        // A very long request path does not recurse past the trie's depth.
        let long = "/a/b/c".to_owned() + &"/x".repeat(100_000);
        assert_eq!(find_path(&r, &long), Some(0));
    }

    #[test]
    fn methods_and_405() {
        let r = build(&[
            with_methods("/items", &[Method::GET, Method::POST]),
            with_methods("/items", &[Method::DELETE, Method::GET]),
            with_methods("/items/{id}", &[Method::PUT]),
            with_methods("/other", &[Method::PATCH]),
        ]);
        assert_eq!(find(&r, &req("/items")), Some(0));
        assert_eq!(find(&r, &req("/items").method(Method::POST)), Some(0));
        assert_eq!(find(&r, &req("/items").method(Method::DELETE)), Some(1));
        assert_eq!(find(&r, &req("/items/1").method(Method::PUT)), Some(2));
        // /items/1 with GET falls back to the /items prefix routes.
        assert_eq!(find(&r, &req("/items/1")), Some(0));
        assert_eq!(
            r.find(&req("/items/1").method(Method::PATCH).info()),
            RouteMatch::MethodNotAllowed {
                allow: "DELETE, GET, POST, PUT".into()
            }
        );
        assert_eq!(
            r.find(&req("/items").method(Method::PUT).info()),
            RouteMatch::MethodNotAllowed {
                allow: "DELETE, GET, POST".into()
            }
        );
        assert_eq!(r.find(&req("/nope").info()), RouteMatch::NotFound);
        // A method-less route matches every method.
        let r = build(&[with_methods("/a", &[Method::GET]), route("/a")]);
        assert_eq!(find(&r, &req("/a")), Some(0), "more predicates wins");
        assert_eq!(find(&r, &req("/a").method(Method::DELETE)), Some(1));
    }

    #[test]
    fn extension_methods() {
        let purge = Method::from_bytes(b"PURGE").expect("valid method");
        let lower = Method::from_bytes(b"report").expect("valid method");
        let r = build(&[
            with_methods("/c", &[purge.clone(), Method::GET]),
            with_methods("/c", std::slice::from_ref(&lower)),
        ]);
        assert_eq!(find(&r, &req("/c").method(purge.clone())), Some(0));
        assert_eq!(find(&r, &req("/c").method(lower)), Some(1));
        assert_eq!(
            r.find(&req("/c").method(Method::POST).info()),
            RouteMatch::MethodNotAllowed {
                allow: "GET, PURGE, REPORT".into()
            }
        );
    }

    #[test]
    fn no_405_when_other_predicates_fail() {
        let r = build(&[RouteDef {
            headers: vec![(HeaderName::from_static("x-tenant"), "acme".into())],
            ..with_methods("/a", &[Method::GET])
        }]);
        assert_eq!(
            r.find(&req("/a").method(Method::POST).info()),
            RouteMatch::NotFound
        );
        assert_eq!(
            r.find(
                &req("/a")
                    .method(Method::POST)
                    .header("x-tenant", "acme")
                    .info()
            ),
            RouteMatch::MethodNotAllowed {
                allow: "GET".into()
            }
        );
        // Host mismatch is not a 405 either.
        let r = build(&[RouteDef {
            hosts: vec!["a.example.com".into()],
            ..with_methods("/a", &[Method::GET])
        }]);
        assert_eq!(
            r.find(&req("/a").host("b.example.com").method(Method::POST).info()),
            RouteMatch::NotFound
        );
    }

    #[test]
    fn full_match_beats_405_even_if_less_specific() {
        let r = build(&[with_methods("/a/b", &[Method::POST]), route("/a")]);
        assert_eq!(find(&r, &req("/a/b")), Some(1));
    }

    #[test]
    fn hosts_exact_and_case() {
        let r = build(&[
            with_hosts("/", &["API.Example.com"]),
            with_hosts("/", &["other.example.com", "third.example.com"]),
        ]);
        assert_eq!(find(&r, &req("/x").host("api.example.com")), Some(0));
        assert_eq!(find(&r, &req("/x").host("other.example.com")), Some(1));
        assert_eq!(find(&r, &req("/x").host("third.example.com")), Some(1));
        assert_eq!(find(&r, &req("/x").host("example.com")), None);
        assert_eq!(find(&r, &req("/x").host("x.api.example.com")), None);
        assert_eq!(find(&r, &req("/x").host("")), None);
    }

    #[test]
    fn hosts_wildcard() {
        let r = build(&[with_hosts("/w", &["*.example.com"])]);
        assert_eq!(find(&r, &req("/w").host("a.example.com")), Some(0));
        assert_eq!(find(&r, &req("/w").host("a.b.c.example.com")), Some(0));
        assert_eq!(find(&r, &req("/w").host("example.com")), None);
        assert_eq!(find(&r, &req("/w").host("badexample.com")), None);
        assert_eq!(find(&r, &req("/w").host("a.example.com.evil.io")), None);
        assert_eq!(find(&r, &req("/w").host("a.example.co")), None);
        // "*" is any host.
        let r = build(&[with_hosts("/w", &["*"])]);
        assert_eq!(find(&r, &req("/w").host("whatever.io")), Some(0));
    }

    #[test]
    fn host_buckets_combine_with_specificity() {
        let r = build(&[
            route("/"),
            with_hosts("/", &["*.example.com"]),
            with_hosts("/", &["api.example.com"]),
            with_hosts("/v1/x", &["*.example.com"]),
            route("/v1/x/y"),
        ]);
        // Same path: more predicates (a host) wins; wildcard and exact both
        // count as one, so file order decides between them.
        assert_eq!(find(&r, &req("/a").host("api.example.com")), Some(1));
        assert_eq!(find(&r, &req("/a").host("b.example.com")), Some(1));
        assert_eq!(find(&r, &req("/a").host("elsewhere.io")), Some(0));
        // Path specificity comes before predicates.
        assert_eq!(find(&r, &req("/v1/x/z").host("api.example.com")), Some(3));
        assert_eq!(find(&r, &req("/v1/x/y").host("api.example.com")), Some(4));
        assert_eq!(find(&r, &req("/v1/x/z").host("elsewhere.io")), Some(0));
    }

    #[test]
    fn headers_predicate() {
        let tenant = HeaderName::from_static("x-tenant");
        let r = build(&[
            RouteDef {
                headers: vec![
                    (tenant.clone(), "acme".into()),
                    (HeaderName::from_static("x-env"), "prod".into()),
                ],
                ..route("/p")
            },
            RouteDef {
                headers: vec![(tenant.clone(), "acme".into())],
                ..route("/p")
            },
            route("/p"),
        ]);
        assert_eq!(
            find(
                &r,
                &req("/p").header("x-tenant", "acme").header("x-env", "prod")
            ),
            Some(0)
        );
        assert_eq!(find(&r, &req("/p").header("x-tenant", "acme")), Some(1));
        assert_eq!(
            find(&r, &req("/p").header("x-tenant", "ACME")),
            Some(2),
            "values are exact"
        );
        assert_eq!(find(&r, &req("/p").header("x-tenant", "acme ")), Some(2));
        assert_eq!(find(&r, &req("/p")), Some(2));
        // Any one value of a repeated header may match.
        assert_eq!(
            find(
                &r,
                &req("/p")
                    .header("x-tenant", "other")
                    .header("x-tenant", "acme")
            ),
            Some(1)
        );
    }

    #[test]
    fn waived_headers_predicates_hold() {
        let tenant = HeaderName::from_static("x-tenant");
        let r = build(&[
            RouteDef {
                headers: vec![(tenant.clone(), "acme".into())],
                methods: vec![Method::GET, Method::POST],
                ..route("/h")
            },
            RouteDef {
                headers: vec![(HeaderName::from_static("x-env"), "prod".into())],
                ..route("/h")
            },
            route("/"),
        ]);
        let with = |q: &Req, w: Waive<'_>| match r.find_with(&q.info(), w) {
            RouteMatch::Found { route, .. } => Some(route),
            _ => None,
        };
        let q = req("/h/x").method(Method::POST);
        assert_eq!(with(&q, Waive::Nothing), Some(2));
        assert_eq!(with(&q, Waive::Named(&["X-Tenant"])), Some(0));
        assert_eq!(with(&q, Waive::Named(&["x-env"])), Some(1));
        assert_eq!(with(&q, Waive::Named(&["content-type"])), Some(2));
        assert_eq!(with(&q, Waive::All), Some(0));
        // A predicate that holds still holds; a waived one need not.
        let q = req("/h/x").method(Method::POST).header("x-env", "prod");
        assert_eq!(with(&q, Waive::Named(&["x-tenant"])), Some(0));
        assert_eq!(with(&q, Waive::Nothing), Some(1));
        // The method still counts.
        let q = req("/h/x").method(Method::DELETE);
        assert_eq!(with(&q, Waive::Named(&["x-tenant"])), Some(2));
    }

    #[test]
    fn version_predicate() {
        let r = build(&[
            RouteDef {
                version: Some("v1".into()),
                ..route("/pay")
            },
            RouteDef {
                version: Some("v2".into()),
                ..route("/pay")
            },
        ]);
        assert_eq!(find(&r, &req("/pay").version("v1")), Some(0));
        assert_eq!(find(&r, &req("/pay").version("v2")), Some(1));
        assert_eq!(find(&r, &req("/pay").version("v3")), None);
        assert_eq!(find(&r, &req("/pay")), None);
        let r = build(&[
            route("/pay"),
            RouteDef {
                version: Some("2024-06-01".into()),
                ..route("/pay")
            },
        ]);
        assert_eq!(find(&r, &req("/pay").version("2024-06-01")), Some(1));
        assert_eq!(find(&r, &req("/pay").version("v1")), Some(0));
    }

    #[test]
    fn predicate_count_then_file_order() {
        let tenant = || vec![(HeaderName::from_static("x-tenant"), "acme".to_string())];
        let r = build(&[
            route("/a"),
            with_methods("/a", &[Method::GET]),
            RouteDef {
                methods: vec![Method::GET],
                headers: tenant(),
                ..route("/a")
            },
            RouteDef {
                hosts: vec!["api.example.com".into()],
                methods: vec![Method::GET],
                ..route("/a")
            },
        ]);
        // Routes 2 and 3 both have two predicates: file order.
        assert_eq!(find(&r, &req("/a").header("x-tenant", "acme")), Some(2));
        assert_eq!(find(&r, &req("/a")), Some(3));
        assert_eq!(find(&r, &req("/a").host("x.io")), Some(1));
        assert_eq!(
            find(&r, &req("/a").host("x.io").method(Method::POST)),
            Some(0)
        );
        // Identical routes: the first one.
        let r = build(&[route("/a"), route("/a"), route("/a")]);
        assert_eq!(find_path(&r, "/a"), Some(0));
    }

    #[test]
    fn literals_are_normalised() {
        let r = build(&[route("/caf%c3%a9"), route("/%7Euser"), route("/ünï")]);
        assert_eq!(find_path(&r, "/caf%C3%A9/x"), Some(0));
        assert_eq!(find_path(&r, "/~user"), Some(1));
        assert_eq!(find_path(&r, "/%C3%BCn%C3%AF"), Some(2));
    }

    #[test]
    fn many_siblings_use_the_map() {
        let defs: Vec<RouteDef> = (0..100)
            .map(|i| route(&format!("/svc{i}/items/{{id}}")))
            .collect();
        let r = build(&defs);
        for i in [0, 7, 8, 9, 50, 99] {
            let q = req(&format!("/svc{i}/items/x{i}"));
            assert_eq!(find(&r, &q), Some(i));
            assert_eq!(params(&r, &q), pairs(&[("id", &format!("x{i}"))]));
        }
        assert_eq!(find_path(&r, "/svc100/items/1"), None);
        assert_eq!(find_path(&r, "/svc1/items"), None);
        assert_eq!(r.len(), 100);
        assert!(!r.is_empty());
    }

    #[test]
    fn empty_router() {
        let r = build(&[]);
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
        assert_eq!(r.find(&req("/").info()), RouteMatch::NotFound);
    }

    #[test]
    fn odd_request_paths_do_not_panic() {
        let r = build(&[route("/a/{b}"), route("=/"), route("/é")]);
        for p in ["", "*", "a", "//", "/a//b", "/%", "/é/x", "/a/\u{0}"] {
            let _ = r.find(&req(p).info());
        }
        assert_eq!(find_path(&r, "/a//b"), Some(0));
    }

    #[test]
    fn pattern_validation() {
        for ok in [
            "/",
            "=/",
            "/a",
            "/a/",
            "//a//b",
            "=/a/{id}",
            "/a/{id}/b/{other_id}",
            "/a/{id-2}",
            "/a.b/~c/d%20e",
            "/...",
        ] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "=",
            "a",
            "=a",
            "v1/payments",
            "/a/{}",
            "/a/{",
            "/a/{id",
            "/a/id}",
            "/a/}",
            "/a{b}",
            "/{a}b",
            "/a/{b}{c}",
            "/{a}/{a}",
            "/{a b}",
            "/{a.b}",
            "/{*rest}",
            "/a/*",
            "/a/./b",
            "/a/..",
            "/a/%2e%2e",
            "/a/%2e",
            "/a%2Fb",
            "/a\\b",
            "/a b",
            "/%zz",
            "/a?x=1",
            "/a#f",
        ] {
            assert!(validate_pattern(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn build_collects_all_errors() {
        let defs = [
            route("/ok"),
            route(""),
            route("/a{b}"),
            with_hosts("/ok", &["api.example.com:8443", "a.*.com", ""]),
            route("/{x}/{x}"),
            with_hosts("/fine", &["*.example.com", "*", "API.example.com", "[::1]"]),
        ];
        let errs = match Router::new(&defs) {
            Ok(_) => panic!("should fail"),
            Err(e) => e,
        };
        let idx: Vec<usize> = errs.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![1, 2, 3, 3, 3, 4], "{errs:?}");
        assert_eq!(errs[0].1, "path is empty");
        assert_eq!(Err(errs[1].1.clone()), validate_pattern("/a{b}"));
        assert!(errs[2].1.starts_with("hosts[0]: "), "{errs:?}");
        assert!(errs[3].1.starts_with("hosts[1]: "), "{errs:?}");
        assert!(errs[4].1.starts_with("hosts[2]: "), "{errs:?}");
        assert!(errs[5].1.contains("duplicate"), "{errs:?}");
    }

    #[test]
    fn hasher_spreads_similar_keys() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<FastHasher>::default();
        let buckets: HashSet<u64> = (0..1000)
            .map(|i| build.hash_one(format!("service{i}").as_str()) & 1023)
            .collect();
        assert!(buckets.len() > 550, "only {} buckets", buckets.len());
    }

    #[test]
    fn router_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Router>();
    }

    /// A deliberately naive reference: check every route, keep the best by
    /// an explicitly written sort key.
    fn reference(defs: &[RouteDef], q: &Req) -> RouteMatch {
        type Key = (
            bool,
            std::cmp::Reverse<usize>,
            Vec<bool>,
            std::cmp::Reverse<usize>,
            usize,
        );
        let segs: Vec<&str> = q.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(Key, usize, Params)> = None;
        let mut allow: Vec<String> = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            let exact = d.path.starts_with('=');
            let pat: Vec<&str> = d
                .path
                .trim_start_matches('=')
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            let path_ok = if exact {
                pat.len() == segs.len()
            } else {
                pat.len() <= segs.len()
            } && pat
                .iter()
                .zip(&segs)
                .all(|(p, s)| p.starts_with('{') || p == s);
            let host_ok = d.hosts.is_empty()
                || d.hosts.iter().any(|h| {
                    let h = h.to_ascii_lowercase();
                    h == "*"
                        || h == q.host
                        || h.strip_prefix('*')
                            .is_some_and(|suffix| q.host.ends_with(suffix))
                });
            let headers_ok = d.headers.iter().all(|(n, v)| {
                q.headers
                    .get_all(n)
                    .iter()
                    .any(|have| have.as_bytes() == v.as_bytes())
            });
            let version_ok = d.version.is_none() || d.version.as_deref() == q.version.as_deref();
            if !(path_ok && host_ok && headers_ok && version_ok) {
                continue;
            }
            if !d.methods.is_empty() && !d.methods.contains(&q.method) {
                allow.extend(d.methods.iter().map(|m| m.as_str().to_ascii_uppercase()));
                continue;
            }
            let preds = usize::from(!d.hosts.is_empty())
                + usize::from(!d.methods.is_empty())
                + d.headers.len()
                + usize::from(d.version.is_some());
            let key: Key = (
                !exact,
                std::cmp::Reverse(pat.len()),
                pat.iter().map(|p| p.starts_with('{')).collect(),
                std::cmp::Reverse(preds),
                i,
            );
            if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
                let params = pat
                    .iter()
                    .zip(&segs)
                    .filter(|(p, _)| p.starts_with('{'))
                    .map(|(p, s)| (Arc::from(p.trim_matches(['{', '}'])), s.to_string()))
                    .collect();
                best = Some((key, i, params));
            }
        }
        match best {
            Some((_, route, params)) => RouteMatch::Found { route, params },
            None if !allow.is_empty() => {
                allow.sort();
                allow.dedup();
                RouteMatch::MethodNotAllowed {
                    allow: allow.join(", "),
                }
            }
            None => RouteMatch::NotFound,
        }
    }

    #[test]
    fn agrees_with_a_naive_reference() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let tenant = HeaderName::from_static("x-t");
        let mut disagreements = 0;
        // Found with params, found without, 405, 404.
        let mut outcomes = [0usize; 4];
        for _round in 0..300 {
            let n = 1 + next(25);
            let defs: Vec<RouteDef> = (0..n)
                .map(|_| {
                    let mut path = String::from(if next(4) == 0 { "=" } else { "" });
                    let len = next(4);
                    if len == 0 {
                        path.push('/');
                    }
                    for pos in 0..len {
                        path.push('/');
                        match next(5) {
                            0 => path.push_str(&format!("{{p{pos}}}")),
                            1 => path.push_str(&format!("{{q{pos}}}")),
                            k => path.push_str(["a", "b", "c"][k - 2]),
                        }
                    }
                    let hosts: Vec<String> = match next(5) {
                        0 => vec!["x.com".into()],
                        1 => vec!["*.x.com".into()],
                        2 => vec!["Y.x.com".into(), "*".into()],
                        _ => vec![],
                    };
                    let methods = match next(5) {
                        0 => vec![Method::GET],
                        1 => vec![Method::POST, Method::GET],
                        2 => vec![Method::PUT],
                        _ => vec![],
                    };
                    let headers = match next(4) {
                        0 => vec![(tenant.clone(), "1".to_string())],
                        _ => vec![],
                    };
                    let version = match next(4) {
                        0 => Some("v1".to_string()),
                        _ => None,
                    };
                    RouteDef {
                        hosts,
                        path,
                        methods,
                        headers,
                        version,
                    }
                })
                .collect();
            let router = build(&defs);
            for _ in 0..60 {
                let mut path = String::new();
                for _ in 0..next(5) {
                    path.push('/');
                    path.push_str(["a", "b", "c", "d"][next(4)]);
                }
                if path.is_empty() || next(4) == 0 {
                    path.push('/');
                }
                let mut q = req(&path)
                    .host(["x.com", "y.x.com", "z.y.x.com", "other.io"][next(4)])
                    .method(
                        [Method::GET, Method::POST, Method::PUT, Method::DELETE][next(4)].clone(),
                    );
                if next(2) == 0 {
                    q = q.header("x-t", "1");
                }
                match next(3) {
                    0 => q = q.version("v1"),
                    1 => q = q.version("v2"),
                    _ => {}
                }
                let got = router.find(&q.info());
                let want = reference(&defs, &q);
                outcomes[match &want {
                    RouteMatch::Found { params, .. } if !params.is_empty() => 0,
                    RouteMatch::Found { .. } => 1,
                    RouteMatch::MethodNotAllowed { .. } => 2,
                    RouteMatch::NotFound => 3,
                }] += 1;
                if got != want {
                    disagreements += 1;
                    eprintln!(
                        "routes {:?}\nrequest {} {} {} {:?}: got {got:?}, want {want:?}",
                        defs.iter()
                            .map(|d| (&d.path, &d.hosts, &d.methods))
                            .collect::<Vec<_>>(),
                        q.method,
                        q.host,
                        q.path,
                        q.version
                    );
                }
            }
        }
        assert_eq!(disagreements, 0);
        assert!(outcomes.iter().all(|&n| n > 500), "{outcomes:?}");
    }
}
