//! The compiled snapshot: everything a request reads, built once from a
//! validated [`Config`] and swapped in whole. Never exposed as config.

pub mod path;
pub mod preflight;
pub mod router;
pub mod upstream;
pub mod versions;

use crate::config::{self, Config, ConfigError, ConfigErrors};
use crate::metrics::RouteMetrics;
use crate::pipeline::Instance;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
pub use upstream::Upstream;

/// The one live snapshot handle: every request loads it once; a reload stores a
/// new snapshot in it. Everything that reads the live config holds this.
pub type Live = Arc<arc_swap::ArcSwap<Runtime>>;

pub struct Route {
    pub name: Arc<str>,
    /// Its `path` as configured (the span attribute `http.route`).
    pub http_route: Arc<str>,
    /// Where its requests go: an upstream (proxied), or else `queue`.
    pub upstream: Option<Arc<Upstream>>,
    /// The broker its requests are published to (SPEC §12).
    pub queue: Option<Arc<crate::queue::Queue>>,
    pub strip_prefix: Option<String>,
    /// Global plugins then the route's own, sorted by their order.
    pub chain: Arc<[Instance]>,
    /// Position in `chain` of the plugin that drives the cache phases, if any.
    pub cache: Option<usize>,
    pub metrics: RouteMetrics,
}

/// Limits and timeouts of `[server]` the request path needs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: u64,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body_timeout: Duration,
    /// Bytes per second a request body must keep up after `body_timeout`; 0: off.
    pub min_body_rate: u64,
}

pub struct Runtime {
    pub config: Arc<Config>,
    pub router: router::Router,
    pub routes: Vec<Route>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub queues: HashMap<String, Arc<crate::queue::Queue>>,
    pub versions: Option<versions::Versions>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    /// Plugins of `[server] plugins` that also run before routing
    /// (`request_id`), so that answers written before routing carry their work.
    pub before_routing: Vec<Instance>,
    /// Every plugin instance of this snapshot (for background ticks).
    pub instances: Vec<Instance>,
    pub loaded_at: std::time::SystemTime,
    /// `[telemetry]` compiled; `None`: no tracing, `traceparent` passes through.
    pub telemetry: Option<Arc<crate::telemetry::Tracer>>,
}

impl Runtime {
    pub fn hash(&self) -> &str {
        &self.config.hash
    }
}

/// What a reload may reuse from the running snapshot.
#[derive(Default)]
pub struct Reuse<'a> {
    pub previous: Option<&'a Runtime>,
}

/// Compile a validated config into a runtime snapshot, reusing upstream pools
/// and plugin instances whose definitions did not change.
pub fn compile(cfg: Config, reuse: Reuse<'_>) -> Result<Runtime, ConfigErrors> {
    let cfg = Arc::new(cfg);
    let mut errs: Vec<ConfigError> = Vec::new();
    let src = cfg.source.clone();
    let loc = config::Locator::new(&src, Some(&cfg.file));
    // A build error's path is relative to its section (`upstreams.NAME`, `plugins.NAME`).
    let located = |section: &config::KeyPath, e: crate::pipeline::BuildError| {
        let mut p = section.clone();
        p.0.extend(e.path.0);
        loc.error(&p, e.message)
    };

    let mut upstreams = HashMap::new();
    for (name, u) in &cfg.upstreams {
        if let Some(prev) = reuse.previous.and_then(|p| p.upstreams.get(name)) {
            if prev.config == *u {
                upstreams.insert(name.clone(), prev.clone());
                continue;
            }
        }
        match upstream::build(name, u, &|p| cfg.resolve(p)) {
            Ok(up) => {
                upstreams.insert(name.clone(), Arc::new(up));
            }
            Err(es) => {
                let sec = config::KeyPath::default()
                    .key("upstreams")
                    .key(name.as_str());
                for e in es {
                    errs.push(located(&sec, e));
                }
            }
        }
    }

    // A queue whose table did not change keeps its connection (SPEC §12).
    let mut queues = HashMap::new();
    for (name, q) in &cfg.queues {
        if let Some(prev) = reuse.previous.and_then(|p| p.queues.get(name)) {
            if prev.config() == q {
                queues.insert(name.clone(), prev.clone());
                continue;
            }
        }
        match crate::queue::Queue::build(name, q) {
            Ok(built) => {
                queues.insert(name.clone(), Arc::new(built));
            }
            Err(es) => {
                let sec = config::KeyPath::default().key("queues").key(name.as_str());
                for (key, m) in es {
                    errs.push(loc.error(&sec.clone().key(key), m));
                }
            }
        }
    }

    let mut instances: HashMap<&str, Instance> = HashMap::new();
    let prev_instances: HashMap<&str, &Instance> = reuse
        .previous
        .map(|p| {
            p.routes
                .iter()
                .flat_map(|r| r.chain.iter())
                .chain(p.before_routing.iter())
                .map(|i| (&*i.name, i))
                .collect()
        })
        .unwrap_or_default();
    for (name, pc) in &cfg.plugins {
        if let Some(prev) = prev_instances.get(name.as_str()) {
            if prev.built_from(pc, &cfg) {
                instances.insert(name, (*prev).clone());
                continue;
            }
        }
        match pc.kind().build(name, pc, &cfg) {
            Ok(i) => {
                if reuse.previous.is_some() && prev_instances.contains_key(name.as_str()) {
                    tracing::info!(plugin = %name, "plugin definition changed: it starts with fresh state");
                }
                instances.insert(name, i);
            }
            Err(es) => {
                let sec = config::KeyPath::default().key("plugins").key(name.as_str());
                for e in es {
                    errs.push(located(&sec, e));
                }
            }
        }
    }

    let global: Vec<Instance> = cfg
        .server
        .plugins
        .iter()
        .filter_map(|n| instances.get(n.as_str()).cloned())
        .collect();
    let before_routing: Vec<Instance> = global
        .iter()
        .filter(|i| i.before_routing)
        .cloned()
        .collect();

    let mut defs = Vec::with_capacity(cfg.routes.len());
    let mut routes = Vec::with_capacity(cfg.routes.len());
    for (ri, r) in cfg.routes.iter().enumerate() {
        let up = r.upstream.as_ref().and_then(|u| upstreams.get(u)).cloned();
        let queue = r.queue.as_ref().and_then(|q| queues.get(q)).cloned();
        if up.is_none() && queue.is_none() {
            // Named nothing that was built: already an error.
            continue;
        }
        let mut chain: Vec<Instance> = global.clone();
        chain.extend(
            r.plugins
                .iter()
                .filter_map(|n| instances.get(n.as_str()).cloned()),
        );
        // Stable: within one order, the config's order is kept.
        chain.sort_by_key(|i| i.order);
        let cache = chain.iter().position(|i| i.plugin.is_cache());
        if let (Some(n), Some(_)) = (cache, &queue) {
            // Nothing comes back from a broker to store: refused, not ignored.
            errs.push(loc.error(
                &config::KeyPath::default()
                    .key("routes")
                    .index(ri)
                    .key("plugins"),
                format!(
                    "plugin {:?} caches answers: a route with `queue` gets none back, nothing to cache",
                    &*chain[n].name
                ),
            ));
        }
        let name: Arc<str> = Arc::from(r.name.as_str());
        routes.push(Route {
            metrics: RouteMetrics::new(&name),
            http_route: Arc::from(r.path.as_str()),
            name,
            upstream: up,
            queue,
            strip_prefix: r
                .strip_prefix
                .as_ref()
                .map(|s| s.trim_end_matches('/').to_string()),
            chain: chain.into(),
            cache,
        });
        defs.push(router::RouteDef {
            hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            path: r.path.clone(),
            methods: r.methods.iter().map(|m| m.0.clone()).collect(),
            headers: r.headers.0.clone(),
            version: r.version.clone(),
        });
    }
    let router = match router::Router::new(&defs) {
        Ok(r) => Some(r),
        Err(es) => {
            let sec = config::KeyPath::default().key("routes");
            for (i, m) in es {
                errs.push(loc.error(&sec.clone().index(i).key("path"), m));
            }
            None
        }
    };

    let versions = cfg.api_versions.as_ref().map(|av| {
        let rv: Vec<String> = cfg
            .routes
            .iter()
            .filter_map(|r| r.version.clone())
            .collect();
        versions::Versions::compile(av, &rv)
    });

    let telemetry = match crate::telemetry::compile(
        cfg.telemetry.as_ref(),
        reuse.previous.and_then(|p| p.telemetry.as_ref()),
    ) {
        Ok(t) => t,
        Err(es) => {
            let sec = config::KeyPath::default().key("telemetry");
            for (key, m) in es {
                errs.push(loc.error(&sec.clone().key(key), m));
            }
            None
        }
    };

    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    let Some(router) = router else {
        return Err(ConfigErrors::single(
            Some(&cfg.file),
            "router could not be built",
        ));
    };
    let s = &cfg.server;
    Ok(Runtime {
        router,
        routes,
        upstreams,
        queues,
        versions,
        trusted_proxies: s.trusted_proxies.iter().map(|c| c.0).collect(),
        limits: Limits {
            max_request_body: s.max_request_body.0,
            request_timeout: s.request_timeout.0,
            header_timeout: s.header_timeout.0,
            max_header_size: s.max_header_size.0 as usize,
            max_headers: s.max_headers,
            idle_timeout: s.idle_timeout.0,
            body_timeout: s.body_timeout.0,
            min_body_rate: s.min_body_rate.0,
        },
        before_routing,
        instances: {
            let mut v: Vec<Instance> = instances.into_values().collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        },
        loaded_at: std::time::SystemTime::now(),
        telemetry,
        config: cfg,
    })
}

/// Load, validate and compile a config file: what `tollgate check` runs.
pub fn load(path: &std::path::Path, reuse: Reuse<'_>) -> Result<Runtime, ConfigErrors> {
    compile(config::load_file(path)?, reuse)
}
