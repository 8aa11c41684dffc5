//! The export side: finished spans wait in a bounded queue; one background
//! service batches them, encodes an OTLP `ExportTraceServiceRequest` and
//! POSTs it to the collector of the running snapshot.
//!
//! A request never waits for any of it: it offers its spans to the queue
//! (`try_send`) and goes on. Nor does it wake the exporter, except when the
//! queue holds [`WAKE_AT`] requests' spans: the exporter otherwise wakes
//! every [`BATCH_DELAY`] and takes what is there. (Woken per request, the
//! exporter's thread cost each request a cross-thread wake-up, an `eventfd`
//! write and a context switch: a third of tracing's cost in `benches/load`.) Spans that find the queue full, that no
//! `[telemetry]` is left to send to, or whose export fails (collector down,
//! slow past the export timeout, answering an error) are dropped and counted
//! in `tollgate_telemetry_spans_dropped_total`.

use super::{ClientRecord, Finished};
use crate::metrics::METRICS;
use crate::runtime::Live;
use async_trait::async_trait;
use once_cell::sync::Lazy;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prost::Message;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests whose spans may wait for export at once (each request's spans
/// are one entry: its SERVER span and its CLIENT spans).
const QUEUE_REQUESTS: usize = 4096;
/// Spans per export request, at most.
const BATCH_SPANS: usize = 512;
/// How long spans wait for others, at most, when few requests come.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Requests' spans waiting that wake the exporter before [`BATCH_DELAY`].
const WAKE_AT: usize = 256;

struct Queue {
    tx: mpsc::Sender<Finished>,
    /// Wakes the exporter when [`WAKE_AT`] requests' spans wait.
    wake: tokio::sync::Notify,
    rx: Mutex<Option<mpsc::Receiver<Finished>>>,
    /// Flush requests (the exit after a graceful shutdown).
    flush_tx: mpsc::Sender<oneshot::Sender<()>>,
    flush_rx: Mutex<Option<mpsc::Receiver<oneshot::Sender<()>>>>,
}

static QUEUE: Lazy<Queue> = Lazy::new(|| {
    let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
    let (flush_tx, flush_rx) = mpsc::channel(4);
    Queue {
        tx,
        wake: tokio::sync::Notify::new(),
        rx: Mutex::new(Some(rx)),
        flush_tx,
        flush_rx: Mutex::new(Some(flush_rx)),
    }
});

fn dropped(n: usize) {
    METRICS.spans_dropped.inc_by(n as u64);
}

/// Offer a request's spans to the exporter; counted as dropped when the
/// queue is full.
pub(super) fn enqueue(spans: Finished) {
    match QUEUE.tx.try_send(spans) {
        Ok(()) => {
            // The exporter takes spans with `try_recv`, which never registers
            // a waker: this send woke nobody. Past WAKE_AT, `notify_one`
            // wakes it (or leaves a permit while it is busy exporting).
            if QUEUE_REQUESTS - QUEUE.tx.capacity() >= WAKE_AT {
                QUEUE.wake.notify_one();
            }
        }
        Err(mpsc::error::TrySendError::Full(spans) | mpsc::error::TrySendError::Closed(spans)) => {
            dropped(spans.spans())
        }
    }
}

/// Export every span waiting now, within `limit`: the process is about to
/// exit (after a graceful shutdown's drain).
pub async fn flush(limit: Duration) {
    let (tx, rx) = oneshot::channel();
    if QUEUE.flush_tx.try_send(tx).is_err() {
        return;
    }
    let _ = tokio::time::timeout(limit, rx).await;
}

/// The background service that exports spans for the live snapshot's
/// `[telemetry]`.
pub struct TraceExporter {
    pub live: Live,
}

#[async_trait]
impl BackgroundService for TraceExporter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        // One exporter per process: the receivers are taken once.
        let (Some(mut rx), Some(mut flushes)) =
            (QUEUE.rx.lock().take(), QUEUE.flush_rx.lock().take())
        else {
            return;
        };
        let mut batch: Vec<Finished> = Vec::with_capacity(BATCH_SPANS);
        let mut spans = 0;
        loop {
            let flushed = tokio::select! {
                biased;
                Some(done) = flushes.recv() => Some(done),
                _ = tokio::time::timeout(BATCH_DELAY, QUEUE.wake.notified()) => None,
            };
            // Everything waiting now, in batches of BATCH_SPANS.
            while let Ok(f) = rx.try_recv() {
                spans += f.spans();
                batch.push(f);
                if spans >= BATCH_SPANS {
                    self.export(std::mem::take(&mut batch), spans).await;
                    spans = 0;
                }
            }
            if !batch.is_empty() {
                self.export(std::mem::take(&mut batch), spans).await;
                spans = 0;
            }
            if let Some(done) = flushed {
                let _ = done.send(());
            }
        }
    }
}

/// Export failures are logged once a minute at most.
static EXPORT_LOG: crate::util::LogGate = crate::util::LogGate::new();

fn warn_export_failed(endpoint: &str, what: &str, spans: usize) {
    if !EXPORT_LOG.allow(Duration::from_secs(60)) {
        return;
    }
    // The endpoint without its query, never the configured headers.
    tracing::warn!(
        endpoint = endpoint,
        error = what,
        spans = spans,
        "trace export failed; spans dropped (counted in tollgate_telemetry_spans_dropped_total; this warning repeats at most once a minute)"
    );
}

impl TraceExporter {
    /// Post `batch` (`n` spans); count them dropped if that fails.
    async fn export(&self, batch: Vec<Finished>, n: usize) {
        let rt = self.live.load_full();
        let Some(tracer) = rt.telemetry.as_ref() else {
            // `[telemetry]` was removed by a reload: nowhere to send them.
            dropped(n);
            return;
        };
        let body = encode(&tracer.config.service_name, batch);
        let endpoint = &tracer.client.target().display;
        let req = match tracer
            .client
            .post_request(tracer.headers.iter().cloned(), body.len())
        {
            Ok(mut r) => {
                let _ = r.insert_header("content-type", "application/x-protobuf");
                r
            }
            Err(e) => {
                dropped(n);
                warn_export_failed(endpoint, &e.to_string(), n);
                return;
            }
        };
        match tracer.client.send_body(&req, Some(body.into())).await {
            Ok(r) if (200..300).contains(&r.status()) => {
                // OTLP partial success: the spans the collector refused.
                let rejected = ExportTraceServiceResponse::decode(r.body.as_ref())
                    .ok()
                    .and_then(|a| a.partial_success)
                    .map_or(0, |p| p.rejected_spans.max(0) as usize);
                if rejected > 0 {
                    dropped(rejected.min(n));
                    warn_export_failed(endpoint, "collector rejected some spans", rejected);
                }
            }
            Ok(r) => {
                dropped(n);
                warn_export_failed(endpoint, &format!("collector answered {}", r.status()), n);
            }
            Err(e) => {
                dropped(n);
                warn_export_failed(endpoint, &e.to_string(), n);
            }
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_string()))
}

fn int(key: &str, v: u16) -> KeyValue {
    kv(key, any_value::Value::IntValue(i64::from(v)))
}

fn ip(key: &str, ip: std::net::IpAddr) -> KeyValue {
    string(key, crate::util::IpText::new(ip).as_str())
}

/// One `ExportTraceServiceRequest`: the resource (`service.name`, the SDK
/// attributes), the `tollgate` scope, the spans.
pub(crate) fn encode(service_name: &str, batch: Vec<Finished>) -> Vec<u8> {
    let mut spans: Vec<Span> = Vec::with_capacity(batch.iter().map(Finished::spans).sum());
    for f in batch {
        push_spans(&mut spans, f);
    }
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", service_name),
                    string("service.version", env!("CARGO_PKG_VERSION")),
                    string("telemetry.sdk.name", "tollgate"),
                    string("telemetry.sdk.language", "rust"),
                    string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tollgate".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    req.encode_to_vec()
}

fn error_status(error: bool) -> Option<Status> {
    error.then(|| Status {
        code: status::StatusCode::Error as i32,
        message: String::new(),
    })
}

/// A request's SERVER span and its CLIENT spans, as OTLP spans (SPEC §10
/// names and attributes).
fn push_spans(out: &mut Vec<Span>, f: Finished) {
    for c in &f.clients {
        out.push(client_span(&f, c));
    }
    let mut attrs = Vec::with_capacity(8);
    attrs.push(string("http.request.method", f.method));
    attrs.push(string("url.path", &f.path));
    if let Some(r) = &f.http_route {
        attrs.push(string("http.route", r));
    }
    if f.status != 0 {
        attrs.push(int("http.response.status_code", f.status));
    }
    if let Some(c) = f.client {
        attrs.push(ip("client.address", c));
    }
    if let Some(r) = &f.route {
        attrs.push(string("tollgate.route", r));
    }
    if let Some(c) = &f.consumer {
        attrs.push(string("tollgate.consumer", c));
    }
    out.push(Span {
        trace_id: f.trace_id.to_vec(),
        span_id: f.span_id.to_vec(),
        parent_span_id: if f.parent == [0; 8] {
            Vec::new()
        } else {
            f.parent.to_vec()
        },
        name: match &f.route {
            Some(r) => format!("{} {r}", f.method),
            None => f.method.to_string(),
        },
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: f.start,
        end_time_unix_nano: f.end.max(f.start),
        attributes: attrs,
        status: error_status(f.status >= 500),
        ..Default::default()
    });
}

fn client_span(f: &Finished, c: &ClientRecord) -> Span {
    let e = &c.end_info;
    let mut attrs = Vec::with_capacity(6);
    match e.messaging {
        Some(system) => {
            attrs.push(string("messaging.system", system));
            attrs.push(string("messaging.operation.type", e.method));
            attrs.push(string("messaging.destination.name", &e.peer));
        }
        None => attrs.push(string("http.request.method", e.method)),
    }
    // The host as configured, without its port; else the address's IP.
    let host = e.host.as_deref().map(|h| match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    });
    match (host, e.address) {
        (Some(h), _) => attrs.push(string(
            "server.address",
            h.trim_start_matches('[').trim_end_matches(']'),
        )),
        (None, Some(a)) => attrs.push(ip("server.address", a.ip())),
        (None, None) => {}
    }
    if let Some(port) = e.address.map(|a| a.port()).or(e.port) {
        attrs.push(int("server.port", port));
    }
    if let Some(s) = e.status {
        attrs.push(int("http.response.status_code", s));
    }
    attrs.push(string(e.peer_key, &e.peer));
    if let Some(err) = e.error {
        attrs.push(string("error.type", err));
    }
    Span {
        trace_id: f.trace_id.to_vec(),
        span_id: c.span_id.to_vec(),
        parent_span_id: f.span_id.to_vec(),
        name: format!("{} {}", e.method, e.peer),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: c.start,
        end_time_unix_nano: c.end.max(c.start),
        attributes: attrs,
        status: error_status(e.error.is_some() || e.status.is_some_and(|s| s >= 500)),
        ..Default::default()
    }
}
