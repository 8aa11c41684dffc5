//! Logs through `tracing`: human-readable by default, one JSON object per line
//! with `TOLLGATE_LOG_FORMAT=json`. The access log is one event per request on
//! target `tollgate::access`; it never carries credentials or query strings.

use std::net::IpAddr;
use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn,pingora_load_balancing=warn")
    });
    let json = std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

pub struct Access<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: &'a str,
    pub bytes: u64,
    pub consumer: &'a str,
    pub client_ip: Option<IpAddr>,
    pub error: Option<&'a str>,
}

pub fn access(a: &Access<'_>) {
    if !tracing::enabled!(target: "tollgate::access", tracing::Level::INFO) {
        return;
    }
    tracing::info!(
        target: "tollgate::access",
        request_id = a.request_id,
        route = a.route,
        method = a.method,
        path = a.path,
        status = a.status,
        duration_ms = a.duration_ms,
        upstream = a.upstream,
        bytes = a.bytes,
        consumer = a.consumer,
        client_ip = a.client_ip.map(|i| i.to_string()).unwrap_or_default(),
        error = a.error.unwrap_or(""),
        "access"
    );
}
