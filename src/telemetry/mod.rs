//! Tracing (SPEC §10): W3C Trace Context in and out, one SERVER span per
//! request, one CLIENT span per upstream attempt and per `forward_auth` call,
//! exported over OTLP/HTTP protobuf in the background.
//!
//! - [`TelemetryConfig`]: the `[telemetry]` table.
//! - [`Tracer`]: what a snapshot compiles it into (sampler, the collector's
//!   client and headers, the resource); reused by a reload that keeps the
//!   table as it is.
//! - [`Trace`]: a request's trace context, in the plugins' `RequestCtx`:
//!   nothing at all (one null pointer) without `[telemetry]`.
//! - `export`: the bounded queue finished spans wait in, and the background
//!   service that batches, encodes and posts them.
//!
//! Why spans are built here rather than through `opentelemetry_sdk`: the
//! exporter must count every span it cannot send
//! (`tollgate_telemetry_spans_dropped_total`), which the SDK's batch
//! processor does not expose; posting must go through the gateway's one
//! outbound HTTP client (`outbound::Client`: pooled, timeouts, TLS roots)
//! rather than a second HTTP stack; and the sampler, endpoint and resource
//! change with each reload without a global provider. The wire format is the
//! official one: the messages of `opentelemetry-proto`, encoded by `prost`.
//! `traceparent` is parsed and written by hand (W3C Trace Context level 1,
//! §3.2): it is on every request's path, and the SDK's propagator would
//! allocate a `Context` per request for 55 bytes of hex.

mod export;

pub use export::{flush, TraceExporter};

use crate::outbound;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// `[telemetry]` (SPEC §10).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP over HTTP: spans are POSTed to `<otlp_endpoint>/v1/traces`.
    pub otlp_endpoint: String,
    /// The resource attribute `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of requests without a parent that are sampled (parent-based
    /// sampling: a parent's decision is always kept).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Sent with every export (an API token of a hosted collector); never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The header values (an API token) are never printed.
impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn default_service_name() -> String {
    "tollgate".to_string()
}

fn default_sample_ratio() -> f64 {
    1.0
}

/// Each export's bounds: a collector that is slow never holds more than this.
const EXPORT_LIMITS: outbound::Limits = outbound::Limits {
    connect: Duration::from_secs(2),
    io: Some(Duration::from_secs(5)),
    total: Some(Duration::from_secs(10)),
    max_body: 64 * 1024,
    stale_retries: 1,
};

/// `[telemetry]` compiled: what requests and the exporter read.
pub struct Tracer {
    pub config: TelemetryConfig,
    /// `sample_ratio` as a bound on the trace id's low 63 bits (the
    /// `TraceIdRatioBased` sampler of the OpenTelemetry specification).
    threshold: u64,
    always: bool,
    pub(crate) client: outbound::Client,
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Where a `[telemetry]` error is: the key and its message.
pub type TelemetryError = (&'static str, String);

impl Tracer {
    /// Validate and compile `[telemetry]`.
    pub fn build(c: &TelemetryConfig) -> Result<Tracer, Vec<TelemetryError>> {
        let mut errs = Vec::new();
        let mut target = None;
        match outbound::parse_url(&c.otlp_endpoint) {
            Ok(mut t) => {
                if t.path.contains('?') {
                    errs.push(("otlp_endpoint", "must not have a query string".to_string()));
                }
                // OTLP/HTTP: the signal's path is appended to the base URL.
                t.path = format!("{}/v1/traces", t.path.trim_end_matches('/'));
                target = Some(t);
            }
            Err(e) => errs.push(("otlp_endpoint", e)),
        }
        if c.service_name.trim().is_empty() {
            errs.push(("service_name", "must not be empty".to_string()));
        }
        if !(0.0..=1.0).contains(&c.sample_ratio) {
            errs.push((
                "sample_ratio",
                format!("must be between 0.0 and 1.0, got {}", c.sample_ratio),
            ));
        }
        let mut headers = Vec::new();
        for (n, v) in &c.headers {
            let name = http::HeaderName::from_bytes(n.as_bytes());
            let value = http::HeaderValue::from_str(v);
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    if crate::util::is_framing_or_forwarding(name.as_str())
                        || name == http::header::HOST
                        || name == http::header::CONTENT_TYPE
                    {
                        errs.push(("headers", format!("{n:?} is set by the exporter itself")));
                    }
                    headers.push((name, value));
                }
                // The value is a secret: never repeated in a message.
                _ => errs.push((
                    "headers",
                    format!("{n:?}: not a valid header name and value"),
                )),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let target = target.expect("checked above");
        let client = outbound::Client::new("telemetry", target, EXPORT_LIMITS)
            .map_err(|e| vec![("otlp_endpoint", e)])?;
        let ratio = c.sample_ratio;
        Ok(Tracer {
            config: c.clone(),
            threshold: (ratio * (1u64 << 63) as f64) as u64,
            always: ratio >= 1.0,
            client,
            headers,
        })
    }

    /// A request's trace: the client's `traceparent` continued when valid
    /// (its sampled flag kept), a new trace otherwise, sampled by the ratio.
    /// `start` is when the request began.
    pub fn start(&self, headers: &http::HeaderMap, start: Instant) -> Trace {
        let parent = parent(headers);
        let (trace_id, parent_span, sampled) = match parent {
            Some(p) => (p.trace_id, p.span_id, p.sampled),
            None => {
                let id = new_trace_id();
                (id, [0; 8], self.sample(&id))
            }
        };
        let now = Instant::now();
        let wall = SystemTime::now()
            .checked_sub(now.saturating_duration_since(start))
            .unwrap_or_else(SystemTime::now);
        Trace(Some(Box::new(Active {
            trace_id,
            span_id: new_span_id(),
            parent: parent_span,
            sampled,
            start,
            start_unix_nanos: unix_nanos(wall),
            children: Vec::new(),
        })))
    }

    fn sample(&self, trace_id: &[u8; 16]) -> bool {
        if self.always {
            return true;
        }
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8])) >> 1;
        low < self.threshold
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A valid incoming `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// The request's one `traceparent` when it is valid (W3C Trace Context §3.2:
/// `version-traceid-parentid-flags`, lower-case hex; version `ff`, all-zero
/// ids and a second `traceparent` field make it invalid; a later version may
/// append fields after a `-`).
fn parent(headers: &http::HeaderMap) -> Option<Parent> {
    let mut fields = headers.get_all("traceparent").iter();
    let v = fields.next()?.as_bytes();
    if fields.next().is_some() {
        return None;
    }
    parse_traceparent(v)
}

fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, b) in trace_id.iter_mut().enumerate() {
        *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
    }
    let mut span_id = [0u8; 8];
    for (i, b) in span_id.iter_mut().enumerate() {
        *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Two lower-case hex digits.
fn hex_byte(d: &[u8]) -> Option<u8> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(nibble(d[0])? << 4 | nibble(d[1])?)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut [u8], bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
}

/// A request's trace context: `None` without `[telemetry]`.
#[derive(Default)]
pub struct Trace(Option<Box<Active>>);

struct Active {
    trace_id: [u8; 16],
    /// The server span's id.
    span_id: [u8; 8],
    /// The incoming parent's span id; zero without one.
    parent: [u8; 8],
    sampled: bool,
    start: Instant,
    start_unix_nanos: u64,
    /// Finished client spans (only when sampled).
    children: Vec<ClientRecord>,
}

impl Active {
    fn unix_nanos(&self, at: Instant) -> u64 {
        self.start_unix_nanos + at.saturating_duration_since(self.start).as_nanos() as u64
    }
}

/// A CLIENT span that has begun: its id names it in the outgoing
/// `traceparent`; [`Trace::end_client`] records it.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpan {
    span_id: [u8; 8],
    start: Instant,
}

/// How a CLIENT span ended. Names are shared (`Arc`), never copied: the
/// request path only moves them; the exporter formats them.
pub struct ClientEnd {
    /// `"<METHOD> <peer>"` is the span's name: the upstream's or the
    /// plugin's name.
    pub method: &'static str,
    pub peer: Arc<str>,
    /// `tollgate.upstream` or `tollgate.plugin`.
    pub peer_key: &'static str,
    pub address: Option<SocketAddr>,
    /// The host as configured, possibly with its `:port` (`server.address`;
    /// else `address`'s IP).
    pub host: Option<Arc<str>>,
    /// `server.port` when `address` is not known.
    pub port: Option<u16>,
    pub status: Option<u16>,
    /// `error.type` of a failed call (no answer).
    pub error: Option<&'static str>,
    /// A publish to a broker (`messaging.system`: `redis`, `nats`) rather
    /// than an HTTP call: `method` is the operation, `peer` the queue.
    pub messaging: Option<&'static str>,
}

impl Trace {
    /// Whether its spans are recorded and exported.
    pub fn is_sampled(&self) -> bool {
        self.0.as_ref().is_some_and(|a| a.sampled)
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> Option<[u8; 32]> {
        let a = self.0.as_ref()?;
        let mut out = [0u8; 32];
        push_hex(&mut out, &a.trace_id);
        Some(out)
    }

    /// A CLIENT span begins now (an upstream attempt, a `forward_auth` call).
    pub fn begin_client(&self) -> Option<ClientSpan> {
        self.0.as_ref().map(|_| ClientSpan {
            span_id: new_span_id(),
            start: Instant::now(),
        })
    }

    /// The `traceparent` a call made under `span` carries.
    pub fn traceparent(&self, span: &ClientSpan) -> Option<http::HeaderValue> {
        let a = self.0.as_ref()?;
        let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
        push_hex(&mut v[3..35], &a.trace_id);
        push_hex(&mut v[36..52], &span.span_id);
        if a.sampled {
            v[54] = b'1';
        }
        http::HeaderValue::from_bytes(&v).ok()
    }

    /// `span` ended now; recorded when the trace is sampled.
    pub fn end_client(&mut self, span: ClientSpan, end: ClientEnd) {
        let Some(a) = self.0.as_mut().filter(|a| a.sampled) else {
            return;
        };
        let record = ClientRecord {
            span_id: span.span_id,
            start: a.unix_nanos(span.start),
            end: a.unix_nanos(Instant::now()),
            end_info: end,
        };
        a.children.push(record);
    }

    /// The request is over: its SERVER span and the client spans recorded
    /// go to the export queue (when sampled).
    pub fn finish(&mut self, end: ServerEnd<'_>) {
        if let Some(f) = self.finished(end) {
            export::enqueue(f);
        }
    }

    fn finished(&mut self, end: ServerEnd<'_>) -> Option<Finished> {
        let mut a = self.0.take().filter(|a| a.sampled)?;
        Some(Finished {
            trace_id: a.trace_id,
            span_id: a.span_id,
            parent: a.parent,
            start: a.start_unix_nanos,
            end: a.unix_nanos(Instant::now()),
            method: end.method,
            path: end.path.into(),
            http_route: end.http_route,
            status: end.status,
            client: end.client,
            route: end.route,
            consumer: end.consumer.map(Into::into),
            clients: std::mem::take(&mut a.children),
        })
    }
}

/// What the SERVER span says about the request, at its end.
pub struct ServerEnd<'a> {
    /// The standard method, or `_OTHER`.
    pub method: &'static str,
    pub path: &'a str,
    /// The route's `path` as configured.
    pub http_route: Option<Arc<str>>,
    /// 0: the client left before any answer.
    pub status: u16,
    pub client: Option<std::net::IpAddr>,
    /// The route's name; `None` when none matched.
    pub route: Option<Arc<str>>,
    pub consumer: Option<&'a str>,
}

/// A finished CLIENT span.
pub(crate) struct ClientRecord {
    span_id: [u8; 8],
    start: u64,
    end: u64,
    end_info: ClientEnd,
}

/// A sampled request's spans, as the request path leaves them: ids, times
/// and shared names, with the one copy a request needs (its path). The
/// exporter turns them into OTLP spans (names, attribute text).
pub(crate) struct Finished {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// Zero: a root span.
    parent: [u8; 8],
    start: u64,
    end: u64,
    method: &'static str,
    path: Box<str>,
    http_route: Option<Arc<str>>,
    status: u16,
    client: Option<std::net::IpAddr>,
    route: Option<Arc<str>>,
    consumer: Option<Box<str>>,
    clients: Vec<ClientRecord>,
}

impl Finished {
    /// Its spans: the SERVER span and each CLIENT span.
    pub(crate) fn spans(&self) -> usize {
        1 + self.clients.len()
    }
}

/// The tracer of a snapshot: the previous one when `[telemetry]` did not
/// change (its pooled connections to the collector stay), otherwise built.
pub fn compile(
    c: Option<&TelemetryConfig>,
    previous: Option<&Arc<Tracer>>,
) -> Result<Option<Arc<Tracer>>, Vec<TelemetryError>> {
    let Some(c) = c else {
        return Ok(None);
    };
    if let Some(p) = previous.filter(|p| p.config == *c) {
        return Ok(Some(p.clone()));
    }
    Tracer::build(c).map(|t| Some(Arc::new(t)))
}

#[cfg(test)]
mod tests;
