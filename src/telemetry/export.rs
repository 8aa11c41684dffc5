//! The export side: finished spans wait in a bounded queue; one background
//! service batches them, encodes an OTLP `ExportTraceServiceRequest` and
//! POSTs it to the collector of the running snapshot.
//!
//! A request never waits for any of it: it offers its spans to the queue
//! (`try_send`) and goes on. Spans that find the queue full, that no
//! `[telemetry]` is left to send to, or whose export fails (collector down,
//! slow past the export timeout, answering an error) are dropped and counted
//! in `tollgate_telemetry_spans_dropped_total`.

use super::{Kind, SpanRecord, Value};
use crate::metrics::METRICS;
use crate::runtime::Live;
use async_trait::async_trait;
use once_cell::sync::Lazy;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
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
/// How long the first span of a batch waits for others.
const BATCH_DELAY: Duration = Duration::from_secs(1);

struct Queue {
    tx: mpsc::Sender<Vec<SpanRecord>>,
    rx: Mutex<Option<mpsc::Receiver<Vec<SpanRecord>>>>,
    /// Flush requests (the exit after a graceful shutdown).
    flush_tx: mpsc::Sender<oneshot::Sender<()>>,
    flush_rx: Mutex<Option<mpsc::Receiver<oneshot::Sender<()>>>>,
}

static QUEUE: Lazy<Queue> = Lazy::new(|| {
    let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
    let (flush_tx, flush_rx) = mpsc::channel(4);
    Queue {
        tx,
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
pub(super) fn enqueue(spans: Vec<SpanRecord>) {
    if let Err(e) = QUEUE.tx.try_send(spans) {
        let spans = match e {
            mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => s,
        };
        dropped(spans.len());
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
        let mut batch: Vec<SpanRecord> = Vec::with_capacity(BATCH_SPANS);
        let mut incoming: Vec<Vec<SpanRecord>> = Vec::with_capacity(64);
        loop {
            // The first spans of a batch, or a flush.
            tokio::select! {
                n = rx.recv_many(&mut incoming, 64) => {
                    if n == 0 {
                        return;
                    }
                }
                Some(done) = flushes.recv() => {
                    while let Ok(spans) = rx.try_recv() {
                        incoming.push(spans);
                    }
                    batch.extend(incoming.drain(..).flatten());
                    while !batch.is_empty() {
                        let n = batch.len().min(BATCH_SPANS);
                        let chunk: Vec<SpanRecord> = batch.drain(..n).collect();
                        self.export(chunk).await;
                    }
                    let _ = done.send(());
                    continue;
                }
            }
            batch.extend(incoming.drain(..).flatten());
            // Then more, for up to BATCH_DELAY or until the batch is full.
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            while batch.len() < BATCH_SPANS {
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut incoming, 64)).await {
                    Ok(0) => break,
                    Ok(_) => batch.extend(incoming.drain(..).flatten()),
                    Err(_) => break,
                }
            }
            while !batch.is_empty() {
                let n = batch.len().min(BATCH_SPANS);
                let chunk: Vec<SpanRecord> = batch.drain(..n).collect();
                self.export(chunk).await;
            }
        }
    }
}

/// When the last export failure was logged (one warning a minute at most).
static LAST_WARNING: Mutex<Option<std::time::Instant>> = Mutex::new(None);

fn warn_export_failed(endpoint: &str, what: &str, spans: usize) {
    let now = std::time::Instant::now();
    {
        let mut last = LAST_WARNING.lock();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(60)) {
            return;
        }
        *last = Some(now);
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
    async fn export(&self, spans: Vec<SpanRecord>) {
        let n = spans.len();
        let rt = self.live.load_full();
        let Some(tracer) = rt.telemetry.as_ref() else {
            // `[telemetry]` was removed by a reload: nowhere to send them.
            dropped(n);
            return;
        };
        let body = encode(&tracer.config.service_name, spans);
        let endpoint = &tracer.client.target().display;
        let req = match tracer.client.post_request(&tracer.headers, body.len()) {
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
            Ok(r) if (200..300).contains(&r.status()) => {}
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

/// One `ExportTraceServiceRequest`: the resource (`service.name`, the SDK
/// attributes), the `tollgate` scope, the spans.
pub(crate) fn encode(service_name: &str, spans: Vec<SpanRecord>) -> Vec<u8> {
    let spans: Vec<Span> = spans.into_iter().map(to_proto).collect();
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

fn to_proto(s: SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        parent_span_id: if s.parent == [0; 8] {
            Vec::new()
        } else {
            s.parent.to_vec()
        },
        name: s.name,
        kind: match s.kind {
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
        } as i32,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.end.max(s.start),
        attributes: s
            .attrs
            .into_iter()
            .map(|(k, v)| match v {
                Value::Static(v) => string(k, v),
                Value::Str(v) => kv(k, any_value::Value::StringValue(v.into())),
                Value::Int(i) => kv(k, any_value::Value::IntValue(i)),
            })
            .collect(),
        status: s.error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}
