//! Prometheus metrics (SPEC §7 and §11: the names are part of the contract).
//! One process-wide registry, so counters survive reloads.
//!
//! Every label value comes from a bounded set, never from what a client
//! sends: route, plugin and upstream names and targets come from the config;
//! `method` is [`method_label`]; `status` is a three-digit status code; `kind`,
//! `reason` and `result` are fixed codes (`&'static str` constants, each
//! defined next to the code that counts it).
//!
//! Besides the gateway's own metrics, `/metrics` carries the process metrics
//! of Prometheus's process collector (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...) and
//! `tollgate_build_info{version}` at 1.
//!
//! **Series at 0 from the start (SPEC §11).** Every labelled series whose
//! label values are known from the config exists from startup and after each
//! reload, at 0 until something is counted, so that `rate()` and alerts see 0
//! rather than "no data". [`prime`] creates them when a snapshot goes live:
//!
//! * per route: `tollgate_request_duration_seconds{route}`;
//! * per upstream: `tollgate_upstream_duration_seconds{upstream}`,
//!   `tollgate_upstream_failures_total{upstream, kind}` for each
//!   [`failure_kind`], `tollgate_upstream_healthy{upstream, target}` (its
//!   current health);
//! * per plugin on a route: what the plugin declares with
//!   [`Plugin::series`](crate::pipeline::Plugin::series), a list of
//!   [`Series`] (auth failures per reason, rate limiting, cache, webhook and
//!   idempotency results, backend errors, the circuit state of the route's
//!   upstream), made of the same constants the plugin counts with;
//! * `tollgate_config_reloads_total{result}` for both results.
//!
//! `tollgate_requests_total{route, method, status}` is not primed: its method
//! and status come from traffic.
//!
//! A reload also removes the series of what it removed: any series whose
//! `route`, `upstream` or `plugin` label names a route, upstream or plugin the
//! new config no longer has (`tollgate_requests_total` included; routes of a
//! refused reload, compiled but never live, too), and every
//! series the old snapshot declared that the new one does not (a plugin taken
//! off a route, a target taken out of an upstream). A request still running
//! on the old snapshot when the reload lands can count once more into a
//! removed series and bring it back (with that one count).
//!
//! [`prime`] runs at startup and on reload, never on the request path.

use crate::runtime::Runtime;
use once_cell::sync::Lazy;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_failures: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub auth_failures: IntCounterVec,
    /// `tollgate_validation_failures_total{route, plugin, reason}` (SPEC §13).
    pub validation_failures: IntCounterVec,
    /// `tollgate_graphql_rejections_total{route, plugin, reason}` (SPEC §14).
    pub graphql_rejections: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub idempotency: IntCounterVec,
    pub backend_errors: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub webhook_verifications: IntCounterVec,
    pub cache_requests: IntCounterVec,
    /// `tollgate_queue_publish_total{queue, result}` (SPEC §12).
    pub queue_publish: IntCounterVec,
    /// `tollgate_queue_publish_duration_seconds{queue}` (SPEC §12).
    pub queue_publish_duration: HistogramVec,
    /// `tollgate_build_info{version}`, always 1.
    pub build_info: IntGaugeVec,
    /// `tollgate_telemetry_spans_dropped_total`: trace spans that could not
    /// be exported.
    pub spans_dropped: IntCounter,
}

/// The `kind` label of `tollgate_upstream_failures_total` (SPEC §7).
pub mod failure_kind {
    /// The upstream could not be connected to.
    pub const CONNECT: &str = "connect";
    /// Connecting, writing or reading timed out.
    pub const TIMEOUT: &str = "timeout";
    /// The upstream answered 5xx.
    pub const STATUS: &str = "status";
    pub const ALL: [&str; 3] = [CONNECT, TIMEOUT, STATUS];

    /// The kind of a failed attempt to reach the upstream.
    pub fn connect_or_timeout(timeout: bool) -> &'static str {
        if timeout {
            TIMEOUT
        } else {
            CONNECT
        }
    }
}

/// The `result` label of `tollgate_config_reloads_total`.
pub mod reload_result {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const ALL: [&str; 2] = [SUCCESS, FAILURE];
}

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(r, c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(r, g)
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric definition");
    register(r, h)
}

pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let r = Registry::new();
    // The process collector reads /proc; elsewhere it reports nothing.
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .expect("metric registered once");
    let m = Metrics {
        requests_total: counter(
            &r,
            "tollgate_requests_total",
            "Requests answered",
            &["route", "method", "status"],
        ),
        request_duration: histogram(
            &r,
            "tollgate_request_duration_seconds",
            "Time from request start to the end of the response",
            &["route"],
        ),
        upstream_duration: histogram(
            &r,
            "tollgate_upstream_duration_seconds",
            "Time from sending to the upstream to its response header",
            &["upstream"],
        ),
        upstream_failures: counter(
            &r,
            "tollgate_upstream_failures_total",
            "Failed upstream attempts",
            &["upstream", "kind"],
        ),
        upstream_healthy: gauge(
            &r,
            "tollgate_upstream_healthy",
            "1 when the target passes its health checks",
            &["upstream", "target"],
        ),
        config_reloads: counter(
            &r,
            "tollgate_config_reloads_total",
            "Config reloads",
            &["result"],
        ),
        circuit_state: gauge(
            &r,
            "tollgate_circuit_state",
            "0 closed, 1 half-open, 2 open",
            &["upstream"],
        ),
        backend_errors: counter(
            &r,
            "tollgate_backend_errors_total",
            "Failed calls to a shared-state backend",
            &["plugin", "backend"],
        ),
        idempotency: counter(
            &r,
            "tollgate_idempotency_total",
            "Idempotency-key outcomes",
            &["route", "result"],
        ),
        rate_limited: counter(
            &r,
            "tollgate_rate_limited_total",
            "Requests refused by a rate limit",
            &["route", "plugin"],
        ),
        auth_failures: counter(
            &r,
            "tollgate_auth_failures_total",
            "Requests refused by an authentication plugin",
            &["route", "plugin", "reason"],
        ),
        graphql_rejections: counter(
            &r,
            "tollgate_graphql_rejections_total",
            "GraphQL requests refused by a graphql plugin",
            &["route", "plugin", "reason"],
        ),
        validation_failures: counter(
            &r,
            "tollgate_validation_failures_total",
            "Requests refused (or upstream responses found invalid) by an input validation plugin",
            &["route", "plugin", "reason"],
        ),
        webhook_verifications: counter(
            &r,
            "tollgate_webhook_verifications_total",
            "Webhook signature verifications",
            &["route", "result"],
        ),
        cache_requests: counter(
            &r,
            "tollgate_cache_requests_total",
            "Requests on cached routes, by what the cache did",
            &["route", "result"],
        ),
        queue_publish: counter(
            &r,
            "tollgate_queue_publish_total",
            "Queue publishes, by outcome",
            &["queue", "result"],
        ),
        queue_publish_duration: histogram(
            &r,
            "tollgate_queue_publish_duration_seconds",
            "Time from the start of a queue publish to the broker's acknowledgement or failure",
            &["queue"],
        ),
        build_info: gauge(
            &r,
            "tollgate_build_info",
            "Always 1; the version of the running gateway is its label",
            &["version"],
        ),
        spans_dropped: register(
            &r,
            IntCounter::new(
                "tollgate_telemetry_spans_dropped_total",
                "Trace spans that could not be exported",
            )
            .expect("valid metric definition"),
        ),
        registry: r,
    };
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    // Both outcomes exist from startup, at 0, so that `rate()` and alerts on
    // failures work before the first reload.
    for result in reload_result::ALL {
        m.config_reloads.with_label_values(&[result]);
    }
    m
});

/// The `method` label of `tollgate_requests_total`: a standard method as
/// written, anything else (extension methods, wrong case, 30 KB of garbage)
/// `_OTHER` (SPEC §7). Every label value comes from a bounded set: the
/// client's method string never becomes a series of its own.
pub fn method_label(m: &http::Method) -> &'static str {
    use http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// Label sets of one route, resolved once per snapshot.
pub struct RouteMetrics {
    pub duration: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        RouteMetrics {
            duration: METRICS.request_duration.with_label_values(&[route]),
        }
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(8192);
    let enc = TextEncoder::new();
    let _ = enc.encode(&METRICS.registry.gather(), &mut out);
    out
}

// ---------------------------------------------------------------------------
// Series known from the config (SPEC §11)
// ---------------------------------------------------------------------------

/// A series a plugin can produce on a route whose chain it is in, declared
/// with [`Plugin::series`](crate::pipeline::Plugin::series) so that [`prime`]
/// exports it at 0 from the start. The fixed label values are the constants
/// the plugin counts with; the others come from where the plugin is used:
/// `route` is the route, `plugin` the name the plugin is declared under,
/// `upstream` the route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Series {
    /// `tollgate_auth_failures_total{route, plugin, reason}`.
    AuthFailures { reason: &'static str },
    /// `tollgate_rate_limited_total{route, plugin}`.
    RateLimited,
    /// `tollgate_validation_failures_total{route, plugin, reason}`.
    ValidationFailures { reason: &'static str },
    /// `tollgate_graphql_rejections_total{route, plugin, reason}`.
    GraphQlRejections { reason: &'static str },
    /// `tollgate_cache_requests_total{route, result}`.
    CacheRequests { result: &'static str },
    /// `tollgate_webhook_verifications_total{route, result}`.
    WebhookVerifications { result: &'static str },
    /// `tollgate_idempotency_total{route, result}`.
    Idempotency { result: &'static str },
    /// `tollgate_backend_errors_total{plugin, backend}`.
    BackendErrors { backend: &'static str },
    /// `tollgate_circuit_state{upstream}` of the route's upstream, set to what
    /// the plugin's [`circuit_state`](crate::pipeline::Plugin::circuit_state)
    /// says (0, closed, when it has no breaker for it yet).
    CircuitState,
}

/// A labelled metric of [`Metrics`], as [`prime`] handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    RequestsTotal,
    RequestDuration,
    UpstreamDuration,
    UpstreamFailures,
    UpstreamHealthy,
    AuthFailures,
    ValidationFailures,
    GraphQlRejections,
    RateLimited,
    CacheRequests,
    WebhookVerifications,
    Idempotency,
    BackendErrors,
    CircuitState,
    QueuePublish,
    QueuePublishDuration,
}

impl Family {
    /// Every family a removed route, upstream or plugin can have series in.
    const ALL: [Family; 16] = [
        Family::RequestsTotal,
        Family::RequestDuration,
        Family::UpstreamDuration,
        Family::UpstreamFailures,
        Family::UpstreamHealthy,
        Family::AuthFailures,
        Family::ValidationFailures,
        Family::GraphQlRejections,
        Family::RateLimited,
        Family::CacheRequests,
        Family::WebhookVerifications,
        Family::Idempotency,
        Family::BackendErrors,
        Family::CircuitState,
        Family::QueuePublish,
        Family::QueuePublishDuration,
    ];

    fn vec(self) -> &'static dyn Labelled {
        let m = &*METRICS;
        match self {
            Family::RequestsTotal => &m.requests_total,
            Family::RequestDuration => &m.request_duration,
            Family::UpstreamDuration => &m.upstream_duration,
            Family::UpstreamFailures => &m.upstream_failures,
            Family::UpstreamHealthy => &m.upstream_healthy,
            Family::AuthFailures => &m.auth_failures,
            Family::ValidationFailures => &m.validation_failures,
            Family::GraphQlRejections => &m.graphql_rejections,
            Family::RateLimited => &m.rate_limited,
            Family::CacheRequests => &m.cache_requests,
            Family::WebhookVerifications => &m.webhook_verifications,
            Family::Idempotency => &m.idempotency,
            Family::BackendErrors => &m.backend_errors,
            Family::CircuitState => &m.circuit_state,
            Family::QueuePublish => &m.queue_publish,
            Family::QueuePublishDuration => &m.queue_publish_duration,
        }
    }

    /// Gauges whose value [`prime`] sets from the state it describes rather
    /// than leaving at 0 (0 would say "unhealthy").
    fn is_state(self) -> bool {
        matches!(self, Family::UpstreamHealthy | Family::CircuitState)
    }
}

/// What [`prime`] does to a labelled metric of any type.
trait Labelled: Sync {
    /// Create the series (at 0) if it does not exist; keep its value if it does.
    fn touch(&self, values: &[&str]);
    fn remove(&self, values: &[&str]);
    /// Remove every series with a label `(name, value)` for which `gone` holds.
    fn remove_where(&self, gone: &dyn Fn(&str, &str) -> bool);
}

impl<T: MetricVecBuilder> Labelled for MetricVec<T> {
    fn touch(&self, values: &[&str]) {
        self.with_label_values(values);
    }

    fn remove(&self, values: &[&str]) {
        // Absent already (never created, or removed twice): nothing to do.
        let _ = self.remove_label_values(values);
    }

    fn remove_where(&self, gone: &dyn Fn(&str, &str) -> bool) {
        for family in Collector::collect(self) {
            for m in family.get_metric() {
                let labels: HashMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.get_name(), l.get_value()))
                    .collect();
                if labels.iter().any(|(n, v)| gone(n, v)) {
                    let _ = MetricVec::remove(self, &labels);
                }
            }
        }
    }
}

type Key = (Family, Vec<String>);

fn key(family: Family, values: &[&str]) -> Key {
    (family, values.iter().map(|v| v.to_string()).collect())
}

impl Series {
    fn key(self, route: &str, plugin: &str, upstream: &str) -> Key {
        match self {
            Series::AuthFailures { reason } => key(Family::AuthFailures, &[route, plugin, reason]),
            Series::RateLimited => key(Family::RateLimited, &[route, plugin]),
            Series::ValidationFailures { reason } => {
                key(Family::ValidationFailures, &[route, plugin, reason])
            }
            Series::GraphQlRejections { reason } => {
                key(Family::GraphQlRejections, &[route, plugin, reason])
            }
            Series::CacheRequests { result } => key(Family::CacheRequests, &[route, result]),
            Series::WebhookVerifications { result } => {
                key(Family::WebhookVerifications, &[route, result])
            }
            Series::Idempotency { result } => key(Family::Idempotency, &[route, result]),
            Series::BackendErrors { backend } => key(Family::BackendErrors, &[plugin, backend]),
            Series::CircuitState => key(Family::CircuitState, &[upstream]),
        }
    }
}

/// Every series a snapshot's config makes known, in label order.
fn declared(rt: &Runtime) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for up in rt.upstreams.values() {
        out.insert(key(Family::UpstreamDuration, &[&up.name]));
        for kind in failure_kind::ALL {
            out.insert(key(Family::UpstreamFailures, &[&up.name, kind]));
        }
        for (_, target) in &up.targets {
            out.insert(key(Family::UpstreamHealthy, &[&up.name, target]));
        }
    }
    for q in rt.queues.keys() {
        out.insert(key(Family::QueuePublishDuration, &[q]));
        for result in crate::queue::RESULTS {
            out.insert(key(Family::QueuePublish, &[q, result]));
        }
    }
    for r in &rt.routes {
        out.insert(key(Family::RequestDuration, &[&r.name]));
        // A route that publishes to a queue has no upstream: no series of one.
        let upstream = r.upstream.as_ref().map(|u| &*u.name);
        for i in r.chain.iter() {
            for s in i.plugin.series() {
                if upstream.is_some() || s != Series::CircuitState {
                    out.insert(s.key(&r.name, &i.name, upstream.unwrap_or("")));
                }
            }
        }
    }
    out
}

/// The `tollgate_circuit_state` of each upstream a breaker plugin watches:
/// the worst state its breakers report (0 for one not made yet).
fn circuit_states(rt: &Runtime) -> BTreeMap<&str, i64> {
    let mut out: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &rt.routes {
        let Some(up) = &r.upstream else {
            continue;
        };
        for i in r.chain.iter() {
            if i.plugin.series().contains(&Series::CircuitState) {
                let code = i.plugin.circuit_state(&up.name).unwrap_or(0);
                let e = out.entry(&*up.name).or_insert(0);
                *e = (*e).max(code);
            }
        }
    }
    out
}

/// The route, upstream and plugin names of `old` that `new` no longer has, by
/// the label that carries each. Routes also include those of a snapshot that
/// was compiled but never went live (a refused reload): compiling makes each
/// route's duration histogram.
fn removed_names(new: &Runtime, old: &Runtime) -> HashMap<&'static str, HashSet<String>> {
    fn gone<'a>(
        old: impl Iterator<Item = &'a str>,
        new: impl Iterator<Item = &'a str>,
    ) -> HashSet<String> {
        let new: HashSet<&str> = new.collect();
        old.filter(|n| !new.contains(n))
            .map(str::to_string)
            .collect()
    }
    HashMap::from([
        ("route", {
            let compiled = Collector::collect(&METRICS.request_duration);
            let compiled: Vec<&str> = compiled
                .iter()
                .flat_map(|f| f.get_metric())
                .flat_map(|m| m.get_label())
                .filter(|l| l.get_name() == "route")
                .map(|l| l.get_value())
                .collect();
            gone(
                old.routes.iter().map(|r| &*r.name).chain(compiled),
                new.routes.iter().map(|r| &*r.name),
            )
        }),
        (
            "upstream",
            gone(
                old.upstreams.keys().map(String::as_str),
                new.upstreams.keys().map(String::as_str),
            ),
        ),
        (
            "plugin",
            gone(
                old.instances.iter().map(|i| &*i.name),
                new.instances.iter().map(|i| &*i.name),
            ),
        ),
        (
            "queue",
            gone(
                old.queues.keys().map(String::as_str),
                new.queues.keys().map(String::as_str),
            ),
        ),
    ])
}

/// Make the series of snapshot `new` exist (SPEC §11): every series its config
/// makes known is created at 0 if absent (values already counted are kept),
/// `tollgate_upstream_healthy` and `tollgate_circuit_state` are set to the
/// current state. With `old`, the snapshot `new` replaces, remove the series
/// of routes, upstreams and plugins `new` no longer has (and of routes of a
/// refused reload), and those `old` declared that `new` does not. Run at startup (`old` = `None`) and after
/// each successful reload, never on the request path.
pub fn prime(new: &Runtime, old: Option<&Runtime>) {
    let want = declared(new);
    if let Some(old) = old {
        for (family, values) in declared(old).difference(&want) {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            family.vec().remove(&values);
        }
        let removed = removed_names(new, old);
        if removed.values().any(|s| !s.is_empty()) {
            let gone =
                |name: &str, value: &str| removed.get(name).is_some_and(|s| s.contains(value));
            for family in Family::ALL {
                family.vec().remove_where(&gone);
            }
        }
    }
    for (family, values) in &want {
        if !family.is_state() {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            family.vec().touch(&values);
        }
    }
    let _serial = STATE_LOCK.lock();
    publish_state(new);
}

/// Serialises [`render_live`]: a scrape never sees the state gauges between
/// their reset and their values.
static STATE_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// `tollgate_upstream_healthy` and `tollgate_circuit_state` exactly as `rt`
/// has them now: each target's health, each watched upstream's circuit (an
/// open circuit whose cooldown is over reads half-open). Replaces what was
/// there, so a gauge of a removed target or upstream (published late by a
/// health check or a request still on the old snapshot) is gone, and a
/// circuit nobody calls through is never reported stale.
fn publish_state(rt: &Runtime) {
    METRICS.upstream_healthy.reset();
    METRICS.circuit_state.reset();
    for up in rt.upstreams.values() {
        crate::health::publish(up);
    }
    for (upstream, code) in circuit_states(rt) {
        METRICS
            .circuit_state
            .with_label_values(&[upstream])
            .set(code);
    }
}

/// The Prometheus text of every metric, with the state gauges taken from the
/// live snapshot `rt` at this moment (`GET /metrics`).
pub fn render_live(rt: &Runtime) -> Vec<u8> {
    let _serial = STATE_LOCK.lock();
    publish_state(rt);
    render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{compile, Reuse};
    use http::Method;

    /// A snapshot of `toml` (no listener is opened, no connection made).
    fn snapshot(toml: &str) -> Runtime {
        let cfg = crate::config::load_str(toml, None, std::path::Path::new(".")).expect("config");
        compile(cfg, Reuse::default()).unwrap_or_else(|e| panic!("{:?}", e.messages()))
    }

    /// The tests that prime take turns: a reload's prime removes the routes
    /// of snapshots that are not live, which another test's may be.
    static PRIMING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    fn text() -> String {
        String::from_utf8(render()).expect("UTF-8")
    }

    /// The value of the sample `series`, written as the encoder writes it
    /// (labels sorted by name).
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_string)
        })
    }

    fn assert_sample(text: &str, series: &str, value: &str) {
        assert_eq!(sample(text, series).as_deref(), Some(value), "{series}");
    }

    fn assert_absent(text: &str, series: &str) {
        assert_eq!(sample(text, series), None, "{series} should be absent");
    }

    /// Two routes on two upstreams, with plugins of most families; every
    /// name starts with `p` (tests share the one registry).
    fn config(p: &str, routes: &str) -> String {
        format!(
            r#"
[redis]
url = "redis://127.0.0.1:1"

[plugins.{p}keys]
type = "api_key"
header = "x-api-key"
keys = [{{ consumer = "acme", key_sha256 = "0c24ce40313b1ce2b6daefa9dea10a4d3290af661123f6d499a3567b80d5ed49" }}]

[plugins.{p}rl]
type = "rate_limit"
rate = "10/s"
backend = "redis"

[plugins.{p}cache]
type = "cache"
ttl = "30s"

[plugins.{p}idem]
type = "idempotency"

[plugins.{p}cb]
type = "circuit_breaker"

[plugins.{p}hook]
type = "webhook_signature"
scheme = "github"
secrets = ["s3cret"]

[upstreams.{p}up]
targets = ["127.0.0.1:1"]

[upstreams.{p}up2]
targets = ["127.0.0.2:1", "127.0.0.3:1"]
{routes}"#
        )
    }

    fn route(name: &str, upstream: &str, plugins: &[&str]) -> String {
        format!(
            "\n[[routes]]\nname = \"{name}\"\nupstream = \"{upstream}\"\npath = \"/{name}\"\nplugins = {plugins:?}\n"
        )
    }

    #[test]
    fn method_labels_are_a_fixed_set() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), m);
        }
        let long = "X".repeat(30_000);
        for m in ["post", "Get", "PROPFIND", "M-SEARCH", long.as_str()] {
            assert_eq!(
                method_label(&Method::from_bytes(m.as_bytes()).unwrap()),
                "_OTHER"
            );
        }
    }

    #[test]
    fn process_metrics_build_info_and_dropped_spans_are_exported() {
        let t = text();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            let v = sample(&t, name).unwrap_or_else(|| panic!("{name} missing:\n{t}"));
            assert!(v.parse::<f64>().is_ok(), "{name} {v}");
        }
        let rss: f64 = sample(&t, "process_resident_memory_bytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 0.0);
        assert_sample(
            &t,
            &format!(
                "tollgate_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            "1",
        );
        assert!(t.contains("# HELP tollgate_telemetry_spans_dropped_total Trace spans that could not be exported\n"));
        assert!(sample(&t, "tollgate_telemetry_spans_dropped_total").is_some());
        for result in reload_result::ALL {
            assert!(sample(
                &t,
                &format!("tollgate_config_reloads_total{{result=\"{result}\"}}")
            )
            .is_some());
        }
    }

    #[test]
    fn prime_exports_every_series_the_config_makes_known_at_zero() {
        let _turn = PRIMING.lock();
        let p = "mtz_";
        let rt = snapshot(&config(
            p,
            &(route(
                "mtz_a",
                "mtz_up",
                &["mtz_keys", "mtz_rl", "mtz_cache", "mtz_cb"],
            ) + &route("mtz_b", "mtz_up2", &["mtz_hook", "mtz_idem", "mtz_rl"])),
        ));
        prime(&rt, None);
        let t = text();
        let zero = |s: &str| assert_sample(&t, s, "0");
        zero(r#"tollgate_request_duration_seconds_count{route="mtz_a"}"#);
        zero(r#"tollgate_request_duration_seconds_count{route="mtz_b"}"#);
        for up in ["mtz_up", "mtz_up2"] {
            zero(&format!(
                r#"tollgate_upstream_duration_seconds_count{{upstream="{up}"}}"#
            ));
            for kind in ["connect", "timeout", "status"] {
                zero(&format!(
                    r#"tollgate_upstream_failures_total{{kind="{kind}",upstream="{up}"}}"#
                ));
            }
        }
        for target in ["127.0.0.2:1", "127.0.0.3:1"] {
            let s = format!(r#"tollgate_upstream_healthy{{target="{target}",upstream="mtz_up2"}}"#);
            assert!(sample(&t, &s).is_some(), "{s}");
        }
        for reason in ["missing_key", "invalid_key"] {
            zero(&format!(
                r#"tollgate_auth_failures_total{{plugin="mtz_keys",reason="{reason}",route="mtz_a"}}"#
            ));
        }
        zero(r#"tollgate_rate_limited_total{plugin="mtz_rl",route="mtz_a"}"#);
        zero(r#"tollgate_rate_limited_total{plugin="mtz_rl",route="mtz_b"}"#);
        zero(r#"tollgate_backend_errors_total{backend="redis",plugin="mtz_rl"}"#);
        for result in ["hit", "miss", "stale", "bypass"] {
            zero(&format!(
                r#"tollgate_cache_requests_total{{result="{result}",route="mtz_a"}}"#
            ));
            assert_absent(
                &t,
                &format!(r#"tollgate_cache_requests_total{{result="{result}",route="mtz_b"}}"#),
            );
        }
        zero(r#"tollgate_circuit_state{upstream="mtz_up"}"#);
        assert_absent(&t, r#"tollgate_circuit_state{upstream="mtz_up2"}"#);
        for result in ["valid", "invalid", "stale", "replay"] {
            zero(&format!(
                r#"tollgate_webhook_verifications_total{{result="{result}",route="mtz_b"}}"#
            ));
        }
        for reason in [
            "missing_signature",
            "bad_signature",
            "stale_timestamp",
            "replay",
            "body_timeout",
        ] {
            zero(&format!(
                r#"tollgate_auth_failures_total{{plugin="mtz_hook",reason="{reason}",route="mtz_b"}}"#
            ));
        }
        for result in ["stored", "replayed", "conflict", "mismatch"] {
            zero(&format!(
                r#"tollgate_idempotency_total{{result="{result}",route="mtz_b"}}"#
            ));
        }
        // Local state cannot fail; traffic-only labels are not made up.
        assert_absent(
            &t,
            r#"tollgate_backend_errors_total{backend="redis",plugin="mtz_idem"}"#,
        );
        assert!(!t.contains(r#"tollgate_requests_total{method="GET",route="mtz_a""#));
        // Defined but on no route: nothing to count.
        assert!(!t.contains(r#"route="mtz_a",result="stored""#));
    }

    #[test]
    fn a_reload_removes_the_series_of_what_it_removed_and_keeps_the_rest() {
        let _turn = PRIMING.lock();
        let p = "mtr_";
        let old = snapshot(&config(
            p,
            &(route(
                "mtr_a",
                "mtr_up",
                &["mtr_keys", "mtr_rl", "mtr_cache", "mtr_cb"],
            ) + &route("mtr_b", "mtr_up2", &["mtr_hook", "mtr_idem", "mtr_rl"])),
        ));
        prime(&old, None);
        let m = &*METRICS;
        m.rate_limited
            .with_label_values(&["mtr_a", "mtr_rl"])
            .inc_by(3);
        m.requests_total
            .with_label_values(&["mtr_a", "GET", "200"])
            .inc();
        m.requests_total
            .with_label_values(&["mtr_b", "GET", "200"])
            .inc();
        m.auth_failures
            .with_label_values(&["mtr_b", "mtr_hook", "some_reason"])
            .inc();

        // Route b, its upstream and the webhook plugin go; the cache and the
        // breaker stay defined but leave route a.
        let mut toml = config(p, &route("mtr_a", "mtr_up", &["mtr_keys", "mtr_rl"]));
        toml = toml.replace(
            "[upstreams.mtr_up2]\ntargets = [\"127.0.0.2:1\", \"127.0.0.3:1\"]\n",
            "",
        );
        toml = toml.replace("[plugins.mtr_hook]\ntype = \"webhook_signature\"\nscheme = \"github\"\nsecrets = [\"s3cret\"]\n", "");
        let new = compile(
            crate::config::load_str(&toml, None, std::path::Path::new(".")).expect("config"),
            Reuse {
                previous: Some(&old),
            },
        )
        .unwrap_or_else(|e| panic!("{:?}", e.messages()));
        assert!(!new.upstreams.contains_key("mtr_up2"));
        prime(&new, Some(&old));
        let t = text();

        for gone in [
            "route=\"mtr_b\"",
            "upstream=\"mtr_up2\"",
            "plugin=\"mtr_hook\"",
        ] {
            let left: Vec<&str> = t.lines().filter(|l| l.contains(gone)).collect();
            assert!(left.is_empty(), "{gone} left: {left:#?}");
        }
        for result in ["hit", "miss", "stale", "bypass"] {
            assert_absent(
                &t,
                &format!(r#"tollgate_cache_requests_total{{result="{result}",route="mtr_a"}}"#),
            );
        }
        assert_absent(&t, r#"tollgate_circuit_state{upstream="mtr_up"}"#);

        assert_sample(
            &t,
            r#"tollgate_rate_limited_total{plugin="mtr_rl",route="mtr_a"}"#,
            "3",
        );
        assert_sample(
            &t,
            r#"tollgate_requests_total{method="GET",route="mtr_a",status="200"}"#,
            "1",
        );
        assert_sample(
            &t,
            r#"tollgate_backend_errors_total{backend="redis",plugin="mtr_rl"}"#,
            "0",
        );
        assert_sample(
            &t,
            r#"tollgate_auth_failures_total{plugin="mtr_keys",reason="missing_key",route="mtr_a"}"#,
            "0",
        );
        assert_sample(
            &t,
            r#"tollgate_request_duration_seconds_count{route="mtr_a"}"#,
            "0",
        );
        assert_sample(
            &t,
            r#"tollgate_upstream_failures_total{kind="status",upstream="mtr_up"}"#,
            "0",
        );

        // Priming the same snapshot again changes nothing.
        prime(&new, Some(&new));
        assert_eq!(
            text().lines().filter(|l| l.contains("mtr_")).count(),
            t.lines().filter(|l| l.contains("mtr_")).count()
        );
        assert_sample(
            &text(),
            r#"tollgate_rate_limited_total{plugin="mtr_rl",route="mtr_a"}"#,
            "3",
        );
    }

    #[test]
    fn a_reload_removes_the_routes_of_a_refused_one() {
        let _turn = PRIMING.lock();
        let live = snapshot(&config("mto_", &route("mto_a", "mto_up", &[])));
        prime(&live, None);
        // Compiled, then refused (a listener change...): never live.
        let refused = snapshot(&config(
            "mto_",
            &(route("mto_a", "mto_up", &[]) + &route("mto_new", "mto_up", &["mto_rl"])),
        ));
        drop(refused);
        assert_sample(
            &text(),
            r#"tollgate_request_duration_seconds_count{route="mto_new"}"#,
            "0",
        );
        let next = snapshot(&config("mto_", &route("mto_a", "mto_up", &[])));
        prime(&next, Some(&live));
        let t = text();
        assert_absent(
            &t,
            r#"tollgate_request_duration_seconds_count{route="mto_new"}"#,
        );
        assert_sample(
            &t,
            r#"tollgate_request_duration_seconds_count{route="mto_a"}"#,
            "0",
        );
    }
}
