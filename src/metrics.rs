//! Prometheus metrics (SPEC §7: the names are part of the contract). One
//! process-wide registry, so counters survive reloads; label sets that depend
//! only on config are resolved when a snapshot is compiled.
//!
//! Every label value comes from a bounded set, never from what a client
//! sends: route, plugin and upstream names and targets come from the config;
//! `method` is [`method_label`]; `status` is a three-digit status code; `kind`,
//! `reason` and `result` are fixed codes (`&'static str`).

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_failures: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub idempotency: IntCounterVec,
    pub backend_errors: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub webhook_verifications: IntCounterVec,
    pub cache_requests: IntCounterVec,
}

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

pub static METRICS: Lazy<Metrics> = Lazy::new(|| {
    let r = Registry::new();
    let upstream_healthy = IntGaugeVec::new(
        Opts::new(
            "tollgate_upstream_healthy",
            "1 when the target passes its health checks",
        ),
        &["upstream", "target"],
    )
    .expect("valid metric definition");
    r.register(Box::new(upstream_healthy.clone()))
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
        upstream_healthy,
        config_reloads: counter(
            &r,
            "tollgate_config_reloads_total",
            "Config reloads",
            &["result"],
        ),
        circuit_state: {
            let g = IntGaugeVec::new(
                Opts::new("tollgate_circuit_state", "0 closed, 1 half-open, 2 open"),
                &["upstream"],
            )
            .expect("valid metric definition");
            r.register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        },
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
        registry: r,
    };
    // Both outcomes exist from startup, at 0, so that `rate()` and alerts on
    // failures work before the first reload.
    for result in ["success", "failure"] {
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

#[cfg(test)]
mod tests {
    use super::method_label;
    use http::Method;

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
}
