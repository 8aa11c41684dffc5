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
//! ([`normalize_path`]), so `/caf%c3%a9` and `/caf%C3%A9` are one pattern and
//! a raw non-ASCII character in a pattern is percent-encoded (clients must
//! send it encoded). Paths are case-sensitive; hosts are not.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

use super::path::{normalize_path, PathError};

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
    /// Already normalised ([`normalize_path`]), without the query string.
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

/// A parsed path pattern.
#[derive(Debug)]
struct Pattern {
    exact: bool,
    segments: Vec<Segment>,
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
}

impl Pattern {
    fn is_param(&self) -> impl Iterator<Item = bool> + '_ {
        self.segments.iter().map(|s| matches!(s, Segment::Param(_)))
    }
}

fn valid_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Percent-encodes the non-ASCII bytes of an (otherwise normalised) segment.
fn encode_non_ascii(seg: &str) -> String {
    if seg.is_ascii() {
        return seg.to_owned();
    }
    let mut out = String::with_capacity(seg.len() * 3);
    for b in seg.bytes() {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_pattern(path: &str) -> Result<Pattern, String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    let (exact, body) = match path.strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    if !body.starts_with('/') {
        return Err(if exact {
            format!("exact path {path:?} must look like \"=/exact\"")
        } else {
            format!("path {path:?} must start with '/' (or \"=/\" for an exact match)")
        });
    }
    if body.contains(['?', '#']) {
        return Err(format!(
            "path {path:?} contains '?' or '#': query strings and fragments are not matched"
        ));
    }
    let mut segments = Vec::new();
    for seg in body.split('/').filter(|s| !s.is_empty()) {
        if let Some(inner) = seg.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(format!(
                    "segment {seg:?}: a parameter is written {{name}} and fills the whole segment"
                ));
            };
            if name.is_empty() {
                return Err(format!("segment {seg:?}: empty parameter name"));
            }
            if !valid_param_name(name) {
                return Err(format!(
                    "segment {seg:?}: a parameter name may only contain letters, digits, '_' and '-'"
                ));
            }
            let duplicate = segments
                .iter()
                .any(|s| matches!(s, Segment::Param(n) if n.as_ref() == name));
            if duplicate {
                return Err(format!("duplicate parameter name {name:?}"));
            }
            segments.push(Segment::Param(name.into()));
            continue;
        }
        if seg.contains(['{', '}']) {
            return Err(format!(
                "segment {seg:?}: '{{' and '}}' may only wrap a whole segment, as in /items/{{id}}"
            ));
        }
        if seg == "*" {
            return Err(
                "'*' is not a wildcard: paths are prefixes already (\"/v1\" matches everything under /v1)"
                    .into(),
            );
        }
        let probe = format!("/{seg}");
        let literal = match normalize_path(&probe) {
            Ok(n) => n.into_owned(),
            Err(PathError::AboveRoot) => "/".to_owned(),
            Err(e) => return Err(format!("segment {seg:?}: {e}")),
        };
        let literal = literal.get(1..).unwrap_or_default();
        if literal.is_empty() || literal.contains('/') {
            return Err(format!("segment {seg:?}: dot segments are not allowed"));
        }
        segments.push(Segment::Literal(encode_non_ascii(literal)));
    }
    Ok(Pattern { exact, segments })
}

/// Checks a route path pattern; `Err` holds a message for the user. The same
/// check [`Router::new`] makes.
pub fn validate_pattern(path: &str) -> Result<(), String> {
    parse_pattern(path).map(|_| ())
}

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
mod tests;
