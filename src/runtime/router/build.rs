//! Building a [`Router`]: path and host patterns parsed and checked
//! ([`validate_pattern`]), routes ranked by specificity (SPEC §3) and
//! inserted into the per-host tries.

use std::sync::Arc;

use super::tree::{FastMap, MethodSet, Node, Route};
use super::{RouteDef, Router};

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
}
