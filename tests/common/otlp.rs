//! A loopback OTLP/HTTP trace receiver for tests ([`OtlpCollector`]).
//!
//! A minimal HTTP/1.1 server on `127.0.0.1:0` (keep-alive, `Content-Length` or chunked
//! request bodies) that records every request it gets (method, target, headers) and decodes
//! each body as an `ExportTraceServiceRequest` (protobuf, `prost`). It answers `200` with an
//! empty body by default, or a chosen status, or never ([`CollectorMode::Hang`]).
//!
//! The decoded spans are flattened into [`ExportedSpan`]s (ids as lowercase hex, attributes
//! and the resource attributes of the `ResourceSpans` they came in) with helpers to find them
//! by name, trace or id.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How the collector answers export requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectorMode {
    /// `200` with an empty body (the default).
    Ok,
    /// This status with an empty body.
    Status(u16),
    /// Read (and record) the request, never answer; the connection stays open.
    Hang,
}

/// One HTTP request the collector received.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub method: String,
    /// Request target as received (`/v1/traces`).
    pub target: String,
    /// In order as received; names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body length in bytes (after removing chunked coding).
    pub body_len: usize,
    /// The decoded body, or why it could not be decoded.
    pub decoded: Result<ExportTraceServiceRequest, String>,
}

impl ExportRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One exported span with the resource it was exported under.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or "" for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    /// `STATUS_CODE_UNSET` when the span carries no status.
    pub status: StatusCode,
    pub status_message: String,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValue>,
    pub resource_attributes: Vec<KeyValue>,
    /// Name of the instrumentation scope.
    pub scope: String,
    /// Index of the export request (in arrival order) that carried this span.
    pub export_index: usize,
}

impl ExportedSpan {
    fn from_proto(
        span: &Span,
        resource: &[KeyValue],
        scope: &str,
        export_index: usize,
    ) -> ExportedSpan {
        let status = span
            .status
            .as_ref()
            .map(|s| StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset))
            .unwrap_or(StatusCode::Unset);
        ExportedSpan {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
            trace_state: span.trace_state.clone(),
            name: span.name.clone(),
            kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
            status,
            status_message: span
                .status
                .as_ref()
                .map(|s| s.message.clone())
                .unwrap_or_default(),
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            attributes: span.attributes.clone(),
            resource_attributes: resource.to_vec(),
            scope: scope.to_string(),
            export_index,
        }
    }

    /// The value of attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        find_attr(&self.attributes, key)
    }

    /// True if the span has attribute `key` (any type).
    pub fn has_attr(&self, key: &str) -> bool {
        self.attr(key).is_some()
    }

    /// Attribute `key` if it is a string attribute (`None` when absent or another type).
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Attribute `key` if it is an int attribute (`None` when absent or another type).
    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    /// Any attribute rendered as a string (for messages): `"x"` for strings, `5` for ints.
    pub fn attr_display(&self, key: &str) -> Option<String> {
        self.attr(key).map(display_value)
    }

    /// Resource attribute `key` if it is a string.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match find_attr(&self.resource_attributes, key)? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// True for a span without a parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// A one-line description: name, kind, ids, status, attributes.
    pub fn describe(&self) -> String {
        let attrs: Vec<String> = self
            .attributes
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key,
                    kv.value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map(display_value)
                        .unwrap_or_else(|| "<none>".into())
                )
            })
            .collect();
        format!(
            "{:?} {} trace={} span={} parent={} status={} [{}]",
            self.name,
            self.kind.as_str_name(),
            self.trace_id,
            self.span_id,
            if self.parent_span_id.is_empty() {
                "-"
            } else {
                &self.parent_span_id
            },
            self.status.as_str_name(),
            attrs.join(", ")
        )
    }
}

fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn display_value(v: &any_value::Value) -> String {
    match v {
        any_value::Value::StringValue(s) => format!("{s:?}"),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Lowercase hex of `bytes` ("" for none).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Describes every span, one per line (for assertion messages).
pub fn describe_all(spans: &[ExportedSpan]) -> String {
    if spans.is_empty() {
        return "  (no spans)".into();
    }
    spans
        .iter()
        .map(|s| format!("  {}", s.describe()))
        .collect::<Vec<_>>()
        .join("\n")
}

struct State {
    mode: Mutex<CollectorMode>,
    requests: Mutex<Vec<ExportRequest>>,
    connections: AtomicUsize,
}

/// A loopback OTLP/HTTP collector, served until dropped.
pub struct OtlpCollector {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OtlpCollector {
    /// Answers every export with 200.
    pub async fn start() -> OtlpCollector {
        Self::start_with(CollectorMode::Ok).await
    }

    pub async fn start_with(mode: CollectorMode) -> OtlpCollector {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("OtlpCollector: bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        st.connections.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.set_nodelay(true);
                        conns.spawn(serve(stream, st.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        OtlpCollector {
            addr,
            state,
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the value for `otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes how later requests are answered.
    pub fn set_mode(&self, mode: CollectorMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<ExportRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Descriptions of the requests whose body did not decode (empty when all did).
    pub fn decode_errors(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.decoded.as_ref().err().cloned())
            .collect()
    }

    /// Every span received so far (from the bodies that decoded), in arrival order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let reqs = self.state.requests.lock().unwrap();
        let mut out = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            let Ok(decoded) = &req.decoded else { continue };
            for rs in &decoded.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    let scope = ss.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                    for span in &ss.spans {
                        out.push(ExportedSpan::from_proto(span, &resource, scope, i));
                    }
                }
            }
        }
        out
    }

    /// Spans called `name`.
    pub fn spans_named(&self, name: &str) -> Vec<ExportedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }

    /// Spans of trace `trace_id` (32 hex digits), ordered by start time.
    pub fn trace(&self, trace_id: &str) -> Vec<ExportedSpan> {
        let mut spans: Vec<ExportedSpan> = self
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        spans.sort_by_key(|s| (s.start_time_unix_nano, s.end_time_unix_nano));
        spans
    }

    /// The span with id `span_id` (16 hex digits), if received.
    pub fn span(&self, span_id: &str) -> Option<ExportedSpan> {
        self.spans().into_iter().find(|s| s.span_id == span_id)
    }

    /// Polls until `pred` holds for the spans received so far; returns them. Panics after
    /// `timeout` with `what` and every span received.
    pub async fn wait_spans<F>(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: F,
    ) -> Vec<ExportedSpan>
    where
        F: FnMut(&[ExportedSpan]) -> bool,
    {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "OTLP collector: {what}: not seen within {timeout:?}; {} export request(s), \
                     decode errors {:?}; spans:\n{}",
                    self.request_count(),
                    self.decode_errors(),
                    describe_all(&spans)
                );
            }
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }

    /// Waits until trace `trace_id` has a SERVER span and at least `min_spans` spans in all;
    /// returns the trace's spans ordered by start time.
    pub async fn wait_trace(
        &self,
        timeout: Duration,
        trace_id: &str,
        min_spans: usize,
    ) -> Vec<ExportedSpan> {
        self.wait_spans(
            timeout,
            &format!("trace {trace_id} with a SERVER span and {min_spans} span(s)"),
            |spans| {
                let of_trace: Vec<&ExportedSpan> =
                    spans.iter().filter(|s| s.trace_id == trace_id).collect();
                of_trace.len() >= min_spans && of_trace.iter().any(|s| s.kind == SpanKind::Server)
            },
        )
        .await;
        self.trace(trace_id)
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A parsed W3C `traceparent` header value: `version-traceid-parentid-flags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub version: String,
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl TraceParent {
    /// Parses a `traceparent` value strictly (lowercase hex, the lengths of version 00);
    /// `None` when it is not of that form.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace_id, span_id, flags] = parts.as_slice() else {
            return None;
        };
        let lower_hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !(lower_hex(version, 2)
            && lower_hex(trace_id, 32)
            && lower_hex(span_id, 16)
            && lower_hex(flags, 2))
        {
            return None;
        }
        Some(TraceParent {
            version: version.to_string(),
            trace_id: trace_id.to_string(),
            span_id: span_id.to_string(),
            flags: flags.to_string(),
        })
    }

    /// The sampled bit of the flags.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).unwrap_or(0) & 1 == 1
    }
}

/// A fresh random trace id (32 hex digits, never all zero).
pub fn random_trace_id() -> String {
    loop {
        let id = format!("{:032x}", rand_u128());
        if id.bytes().any(|b| b != b'0') {
            return id;
        }
    }
}

/// A fresh random span id (16 hex digits, never all zero).
pub fn random_span_id() -> String {
    loop {
        let id = format!("{:016x}", rand_u128() as u64);
        if id.bytes().any(|b| b != b'0') {
            return id;
        }
    }
}

fn rand_u128() -> u128 {
    rand::random::<u128>()
}

// ---------------------------------------------------------------------------------------------
// The HTTP side
// ---------------------------------------------------------------------------------------------

const MAX_BODY: usize = 64 << 20;

// The HTTP/1.1 reading is the harness's own (`super`): one request head
// parser and body readers for the test upstream and this collector.
use super::{read_chunked, read_exact_buf as read_exact, read_request_head};

fn decode(headers: &[(String, String)], body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(enc) = get("content-encoding") {
        if !enc.trim().eq_ignore_ascii_case("identity") {
            return Err(format!(
                "content-encoding {enc:?} (the test collector decodes identity bodies only)"
            ));
        }
    }
    ExportTraceServiceRequest::decode(body).map_err(|e| {
        format!(
            "protobuf decode of a {}-byte body (content-type {:?}): {e}",
            body.len(),
            get("content-type")
        )
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve(mut stream: TcpStream, st: Arc<State>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let super::RequestHead {
            method,
            target,
            version,
            headers,
        } = match read_request_head(&mut stream, &mut buf).await {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => return,
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_ascii_lowercase())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.ends_with("chunked"));
        if get("expect").as_deref() == Some("100-continue")
            && stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = if chunked {
            match read_chunked(&mut stream, &mut buf).await {
                Ok(b) => b,
                Err(_) => return,
            }
        } else {
            let len = match get("content-length").map(|v| v.parse::<usize>()) {
                None => 0,
                Some(Ok(n)) if n <= MAX_BODY => n,
                Some(_) => return,
            };
            match read_exact(&mut stream, &mut buf, len).await {
                Ok(b) => b,
                Err(_) => return,
            }
        };
        let decoded = decode(&headers, &body);
        let keep_alive = match get("connection") {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => version >= 1,
        };
        st.requests.lock().unwrap().push(ExportRequest {
            method,
            target,
            headers,
            body_len: body.len(),
            decoded,
        });
        let mode = *st.mode.lock().unwrap();
        let status = match mode {
            CollectorMode::Ok => 200,
            CollectorMode::Status(s) => s,
            CollectorMode::Hang => {
                // Keep the connection open, reading whatever comes, never answering.
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n{}\r\n",
            reason(status),
            if keep_alive {
                ""
            } else {
                "connection: close\r\n"
            }
        );
        if stream.write_all(resp.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
