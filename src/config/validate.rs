//! Semantic checks over a parsed config: names that must exist, duplicates,
//! listeners, conflicts between keys and sections. Collects every error.
//!
//! A value that is wrong on its own belongs in its type (`config::units`), so it
//! is refused, located, when the file is read. Single-value checks still made here
//! are those whose section must keep parsing so that its other errors are
//! reported too (a route's `path`, for one, or `targets`, read through an
//! untagged enum that would hide the message).

use super::locate::{KeyPath, Locator};
pub use super::units::datetime_to_unix;
use super::*;
use std::collections::{HashMap, HashSet};

/// Names of `[upstreams.X]` / `[plugins.X]` sections that failed to parse.
#[derive(Default)]
pub(super) struct Broken {
    pub upstreams: HashSet<String>,
    pub plugins: HashSet<String>,
    /// `upstreams` / `plugins` is not a table at all: no name can be checked.
    pub all_upstreams: bool,
    pub all_plugins: bool,
    /// `[queues.X]` that failed to parse, or `queues` not a table at all.
    pub queues: HashSet<String>,
    pub all_queues: bool,
    /// The index in the file of each route that parsed (a route that failed to
    /// parse is left out of `Config::routes`, and later routes must still be
    /// named by their place in the file).
    pub route_index: Vec<usize>,
}

struct V<'a, 'b> {
    broken: &'b Broken,
    loc: &'b Locator<'a>,
    errs: &'b mut Vec<ConfigError>,
    base_dir: &'b Path,
}

use std::path::Path;

impl V<'_, '_> {
    fn err(&mut self, path: &KeyPath, msg: impl Into<String>) {
        self.errs.push(self.loc.error(path, msg));
    }
    fn file(&mut self, path: &KeyPath, f: &str) {
        let p = Path::new(f);
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        };
        if let Err(e) = std::fs::metadata(&full) {
            self.err(path, format!("cannot read {}: {e}", full.display()));
        }
    }
}

fn p(root: &str) -> KeyPath {
    KeyPath::default().key(root)
}

pub(super) fn validate(
    cfg: &Config,
    broken: &Broken,
    loc: &Locator<'_>,
    errs: &mut Vec<ConfigError>,
) {
    let mut v = V {
        broken,
        loc,
        errs,
        base_dir: &cfg.base_dir,
    };
    server(&mut v, cfg);
    if let Some(av) = &cfg.api_versions {
        api_versions(&mut v, av);
    }
    for (name, u) in &cfg.upstreams {
        upstream(&mut v, &p("upstreams").key(name.as_str()), u);
    }
    routes(&mut v, cfg);
    for (name, pc) in &cfg.plugins {
        for e in pc.check() {
            let mut path = p("plugins").key(name.as_str());
            path.0.extend(e.path.0);
            v.err(&path, e.message);
        }
    }
    // Report in file order: errors with a position first, by position.
    errs.sort_by_key(|e| e.line_col.unwrap_or((usize::MAX, usize::MAX)));
}

pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid listen address {s:?}: expected IP:PORT, e.g. \"0.0.0.0:8080\"")
    })
}

pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("invalid CIDR {s:?}: expected e.g. \"10.0.0.0/8\" or \"192.0.2.1\""))
}

fn server(v: &mut V<'_, '_>, cfg: &Config) {
    let s = &cfg.server;
    let sp = p("server");
    let listens = s.listen.to_vec();
    if listens.is_empty() {
        v.err(
            &sp.clone().key("listen"),
            "at least one listen address is needed",
        );
    }
    let mut seen = HashSet::new();
    for (i, l) in listens.iter().enumerate() {
        let path = match s.listen {
            OneOrMany::One(_) => sp.clone().key("listen"),
            OneOrMany::Many(_) => sp.clone().key("listen").index(i),
        };
        match parse_listen(l) {
            Ok(a) => {
                if !seen.insert(a) {
                    v.err(&path, format!("{l:?} is listed twice"));
                }
            }
            Err(e) => v.err(&path, e),
        }
    }
    match parse_listen(&s.admin_listen) {
        Ok(a) => {
            if !seen.insert(a) {
                v.err(
                    &sp.clone().key("admin_listen"),
                    "the admin listener cannot share a port with a proxy listener",
                );
            }
        }
        Err(e) => v.err(&sp.clone().key("admin_listen"), e),
    }
    if let Some(var) = &s.admin_token_env {
        match std::env::var(var) {
            Ok(t) if !t.is_empty() => {}
            _ => v.err(
                &sp.clone().key("admin_token_env"),
                format!("environment variable {var:?} is not set or empty (the admin API would be unprotected)"),
            ),
        }
    }
    plugin_refs(v, cfg, &sp.clone().key("plugins"), &s.plugins, &[]);
    let plain = seen.clone();
    for (i, t) in s.tls.iter().enumerate() {
        let tp = sp.clone().key("tls").index(i);
        match parse_listen(&t.listen) {
            Ok(a) => {
                if plain.contains(&a) {
                    v.err(
                        &tp.clone().key("listen"),
                        format!("{:?} is already used by another listener", t.listen),
                    );
                }
            }
            Err(e) => v.err(&tp.clone().key("listen"), e),
        }
        v.file(&tp.clone().key("cert"), &t.cert);
        v.file(&tp.clone().key("key"), &t.key);
        if let Some(ca) = &t.client_ca {
            v.file(&tp.clone().key("client_ca"), ca);
        }
    }
}

/// A version as requests carry it: a bare number `2` means `v2`.
pub fn normalize_version(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        format!("v{s}")
    } else {
        s.to_string()
    }
}

fn api_versions(v: &mut V<'_, '_>, av: &ApiVersionsConfig) {
    let ap = p("api_versions");
    if av.sources.is_empty() {
        v.err(&ap.clone().key("sources"), "at least one source is needed");
    }
    for (name, vc) in &av.versions {
        let vp = ap.clone().key(name.as_str());
        if normalize_version(name) != *name {
            v.err(
                &vp,
                format!("write the version as {:?}", normalize_version(name)),
            );
        }
        if let (Some(d), Some(s)) = (&vc.deprecated, &vc.sunset) {
            if s.unix < d.unix {
                v.err(
                    &vp.clone().key("sunset"),
                    "the sunset date is before the deprecation date",
                );
            }
        }
        if let Some(l) = &vc.link {
            if !(l.starts_with("https://") || l.starts_with("http://"))
                || l.chars().any(|c| c.is_control() || c == '>' || c == ' ')
            {
                v.err(
                    &vp.clone().key("link"),
                    "must be an http(s) URL without spaces or '>'",
                );
            }
        }
    }
}

fn host_port_ok(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        None => false,
    }
}

fn upstream(v: &mut V<'_, '_>, up: &KeyPath, u: &UpstreamConfig) {
    if u.targets.is_empty() {
        v.err(
            &up.clone().key("targets"),
            "an upstream needs at least one target",
        );
    }
    let mut seen = HashSet::new();
    for (i, t) in u.targets.iter().enumerate() {
        let tp = up.clone().key("targets").index(i);
        if !host_port_ok(t.addr()) {
            v.err(
                &tp,
                format!("invalid target {:?}: expected HOST:PORT", t.addr()),
            );
        } else if !seen.insert(t.addr().to_string()) {
            v.err(&tp, format!("target {:?} is listed twice", t.addr()));
        }
        if t.weight() == 0 || t.weight() > 1000 {
            v.err(
                &tp.clone().key("weight"),
                "weight must be between 1 and 1000",
            );
        }
    }
    match (u.balance, &u.hash_key) {
        (Balance::ConsistentHash, None) => v.err(
            &up.clone().key("balance"),
            "consistent_hash needs hash_key (\"header:NAME\", \"ip\", \"path\" or \"param:NAME\")",
        ),
        (Balance::ConsistentHash, Some(_)) => {}
        (_, Some(_)) => v.err(
            &up.clone().key("hash_key"),
            "hash_key is only used with balance = \"consistent_hash\"",
        ),
        (_, None) => {}
    }
    if !u.tls {
        for (key, set) in [
            ("sni", u.sni.is_some()),
            ("ca_file", u.ca_file.is_some()),
            ("client_cert", u.client_cert.is_some()),
            ("client_key", u.client_key.is_some()),
            ("verify", !u.verify),
        ] {
            if set {
                v.err(&up.clone().key(key), "only applies with tls = true");
            }
        }
    }
    match (&u.client_cert, &u.client_key) {
        (Some(_), None) => v.err(
            &up.clone().key("client_cert"),
            "client_cert needs client_key",
        ),
        (None, Some(_)) => v.err(
            &up.clone().key("client_key"),
            "client_key needs client_cert",
        ),
        _ => {}
    }
    for (key, f) in [
        ("ca_file", &u.ca_file),
        ("client_cert", &u.client_cert),
        ("client_key", &u.client_key),
    ] {
        if let Some(f) = f {
            v.file(&up.clone().key(key), f);
        }
    }
    if let Some(hc) = &u.health_check {
        let hp = up.clone().key("health_check");
        if !hc.path.starts_with('/') || hc.path.chars().any(|c| c.is_control() || c == ' ') {
            v.err(&hp.clone().key("path"), "must be a path starting with '/'");
        }
    }
}

fn routes(v: &mut V<'_, '_>, cfg: &Config) {
    if cfg.routes.is_empty() && v.broken.upstreams.is_empty() && v.errs.is_empty() {
        // An empty or truncated file must not replace a working config.
        v.err(
            &KeyPath::default(),
            "the config has no routes: add at least one [[routes]] table",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (k, r) in cfg.routes.iter().enumerate() {
        let i = v.broken.route_index.get(k).copied().unwrap_or(k);
        let rp = p("routes").index(i);
        if r.name.is_empty() {
            v.err(&rp.clone().key("name"), "must not be empty");
        } else if let Some(first) = names.insert(&r.name, i) {
            v.err(
                &rp.clone().key("name"),
                format!("duplicate route name {:?} (also routes[{first}])", r.name),
            );
        }
        match (&r.upstream, &r.queue) {
            (Some(up), None) => {
                if !cfg.upstreams.contains_key(up)
                    && !v.broken.all_upstreams
                    && !v.broken.upstreams.contains(up)
                {
                    v.err(
                        &rp.clone().key("upstream"),
                        format!("no upstream named {up:?}"),
                    );
                }
            }
            (None, Some(q)) => {
                if !cfg.queues.contains_key(q)
                    && !v.broken.all_queues
                    && !v.broken.queues.contains(q)
                {
                    v.err(&rp.clone().key("queue"), format!("no queue named {q:?}"));
                }
            }
            (Some(_), Some(_)) => v.err(
                &rp.clone().key("queue"),
                "a route has either `upstream` or `queue`, not both",
            ),
            (None, None) => v.err(
                &rp.clone(),
                "a route needs `upstream = \"NAME\"` (proxied) or `queue = \"NAME\"` (published)",
            ),
        }
        for (j, h) in r.hosts.iter().enumerate() {
            let body = h.strip_prefix("*.").unwrap_or(h);
            let ok = !body.is_empty()
                && !body.contains('*')
                && body.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                v.err(
                    &rp.clone().key("hosts").index(j),
                    format!(
                        "invalid host {h:?}: expected a DNS name, optionally starting with \"*.\""
                    ),
                );
            }
        }
        if let Err(e) = crate::route_pattern::validate(&r.path) {
            v.err(&rp.clone().key("path"), e);
        }
        if let Some(ver) = &r.version {
            match &cfg.api_versions {
                None => v.err(
                    &rp.clone().key("version"),
                    "a route with version needs an [api_versions] table",
                ),
                Some(_) if normalize_version(ver) != *ver => v.err(
                    &rp.clone().key("version"),
                    format!("write the version as {:?}", normalize_version(ver)),
                ),
                Some(_) => {}
            }
        }
        if let Some(sp) = &r.strip_prefix {
            let literal = r.path.trim_start_matches('=');
            let sp_trim = sp.trim_end_matches('/');
            let ok = sp.starts_with('/')
                && !sp.contains('{')
                && (literal == sp_trim
                    || literal.starts_with(&format!("{sp_trim}/"))
                    || sp_trim.is_empty());
            if !ok {
                v.err(
                    &rp.clone().key("strip_prefix"),
                    format!(
                        "{sp:?} is not a prefix of the route's path {:?} on a segment boundary",
                        r.path
                    ),
                );
            }
        }
        plugin_refs(
            v,
            cfg,
            &rp.clone().key("plugins"),
            &r.plugins,
            &cfg.server.plugins,
        );
    }
}

fn plugin_refs(
    v: &mut V<'_, '_>,
    cfg: &Config,
    path: &KeyPath,
    names: &[String],
    global: &[String],
) {
    let mut seen = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        let pp = path.clone().index(i);
        if !cfg.plugins.contains_key(n) {
            if !v.broken.all_plugins && !v.broken.plugins.contains(n) {
                v.err(
                    &pp,
                    format!("no plugin named {n:?} (declare it as [plugins.{n}])"),
                );
            }
        } else if !seen.insert(n) {
            v.err(&pp, format!("plugin {n:?} is listed twice"));
        } else if global.contains(n) {
            v.err(
                &pp,
                format!("plugin {n:?} already runs on every route through [server] plugins"),
            );
        }
    }
}
