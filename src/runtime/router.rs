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
//!
//! [`normalize_path`]: crate::runtime::path::normalize_path

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};

mod build;
mod tree;

pub use build::validate_pattern;

use tree::{method_bit, next_segment, FastMap, Node, Route, METHOD_BITS};

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
    /// Already normalised ([`normalize_path`](crate::runtime::path::normalize_path)),
    /// without the query string.
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

/// Walk state of [`Router::find`].
struct Best {
    rank: usize,
    method_mismatch: bool,
}

impl Router {
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
