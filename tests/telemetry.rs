//! Tracing (SPEC §10, issue 15) through a real gateway, real upstreams and a real OTLP/HTTP
//! receiver that decodes what the gateway exports (`common::otlp`): W3C Trace Context
//! continued or started, the `traceparent` each upstream attempt and each `forward_auth` call
//! receives, span names, kinds, parentage, attributes and status, retries as separate spans,
//! sampling (an unsampled parent, `sample_ratio = 0`), a dead, hanging or failing collector
//! never touching requests while drops are counted, pass-through without `[telemetry]`,
//! `trace_id` in the access log, and hot reload of `[telemetry]`.
//!
//! Export is batched (at the latest ~1 s after a span ends), so every check on exported spans
//! polls; a check that something was *not* exported waits for a later marker request's spans
//! first (the batch queue is in order).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::otlp::{
    describe_all, random_span_id, random_trace_id, CollectorMode, ExportedSpan, OtlpCollector,
    TraceParent,
};
use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use sha2::{Digest, Sha256};

/// Time allowed for spans to reach the collector (batching is ~1 s).
const WAIT: Duration = Duration::from_secs(15);
/// Generous bound for one request through the gateway while the collector misbehaves.
const PROMPT: Duration = Duration::from_secs(5);
/// Time allowed for the drop counter to move (an export must fail or time out first).
const DROP_WAIT: Duration = Duration::from_secs(60);

const API_KEY: &str = "telemetry-test-key-0123456789";
const OTLP_TOKEN: &str = "otlp-secret-token-5f1e2d";
const DROPPED: &str = "tollgate_telemetry_spans_dropped_total";

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

/// A `[telemetry]` table exporting to `endpoint`, plus `extra` keys.
fn telemetry(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[telemetry]
otlp_endpoint = "{endpoint}"
{extra}
"#
    )
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The standard gateway of this file, then `telemetry` (a `[telemetry]` table or "") and
/// `extra` (more tables):
///
/// | route | path | upstream | plugins |
/// | --- | --- | --- | --- |
/// | `items` | `/api/items/{id}` | `backend` | |
/// | `raw` | `/status` | `backend` | |
/// | `private` | `/private` | `backend` | `keys` (api_key, consumer `acme`) |
/// | `hang` | `/hang` | `slowpoke` (= the same server, `read_timeout = "300ms"`) | |
fn config(up: &TestUpstream, telemetry: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1

[plugins.keys]
type = "api_key"
header = "x-api-key"
keys = [{{ consumer = "acme", key_sha256 = "{key}" }}]

[upstreams.backend]
targets = ["{up}"]

[upstreams.slowpoke]
targets = ["{up}"]
read_timeout = "300ms"

[[routes]]
name = "items"
upstream = "backend"
path = "/api/items/{{id}}"

[[routes]]
name = "raw"
upstream = "backend"
path = "/status"

[[routes]]
name = "private"
upstream = "backend"
path = "/private"
plugins = ["keys"]

[[routes]]
name = "hang"
upstream = "slowpoke"
path = "/hang"
{extra}
{telemetry}
"#,
        up = up.addr(),
        key = sha256_hex(API_KEY),
    )
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

struct Resp {
    status: u16,
    body: String,
}

/// Sends `method path` with `headers`; fails the test if the gateway takes longer than
/// [`PROMPT`] to answer.
async fn send(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = gw.client().request(method.clone(), gw.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let fut = async {
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        Resp { status, body }
    };
    tokio::time::timeout(PROMPT, fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {PROMPT:?}"))
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(gw, "GET", path, headers).await
}

/// A sampled `traceparent` for a fresh trace: (header value, trace id, span id).
fn sampled_parent() -> (String, String, String) {
    let (tid, sid) = (random_trace_id(), random_span_id());
    (format!("00-{tid}-{sid}-01"), tid, sid)
}

/// The one request `up` received whose target is `target`.
fn received(up: &TestUpstream, target: &str) -> Recorded {
    let all = up.requests();
    let found: Vec<&Recorded> = all.iter().filter(|r| r.path == target).collect();
    assert_eq!(
        found.len(),
        1,
        "{}: expected exactly one request for {target}, got {:?}",
        up.name(),
        all.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    found[0].clone()
}

/// The `traceparent` of a request an upstream received, parsed strictly.
fn traceparent_of(rec: &Recorded) -> TraceParent {
    let all = rec.header_all("traceparent");
    assert_eq!(
        all.len(),
        1,
        "{} {}: expected exactly one traceparent, got {all:?}",
        rec.method,
        rec.path
    );
    TraceParent::parse(all[0]).unwrap_or_else(|| {
        panic!(
            "{} {}: traceparent {:?} is not a valid version-00 value",
            rec.method, rec.path, all[0]
        )
    })
}

fn assert_hex_id(id: &str, len: usize, what: &str) {
    assert!(
        id.len() == len
            && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && id.bytes().any(|b| b != b'0'),
        "{what}: {id:?} is not {len} lowercase hex digits, not all zero"
    );
}

// ---------------------------------------------------------------------------------------------
// Span helpers
// ---------------------------------------------------------------------------------------------

fn of_kind(spans: &[ExportedSpan], kind: SpanKind) -> Vec<ExportedSpan> {
    spans.iter().filter(|s| s.kind == kind).cloned().collect()
}

/// The one SERVER span of `spans`.
fn server_span(spans: &[ExportedSpan]) -> ExportedSpan {
    let servers = of_kind(spans, SpanKind::Server);
    assert_eq!(
        servers.len(),
        1,
        "expected one SERVER span in:\n{}",
        describe_all(spans)
    );
    servers[0].clone()
}

/// The CLIENT spans named `name`, by start time.
fn clients_named(spans: &[ExportedSpan], name: &str) -> Vec<ExportedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client && s.name == name)
        .cloned()
        .collect()
}

#[track_caller]
fn assert_attr_str(span: &ExportedSpan, key: &str, want: &str) {
    assert_eq!(
        span.attr_str(key),
        Some(want),
        "attribute {key} (a string) of {}",
        span.describe()
    );
}

#[track_caller]
fn assert_attr_int(span: &ExportedSpan, key: &str, want: i64) {
    assert_eq!(
        span.attr_int(key),
        Some(want),
        "attribute {key} (an int) of {}",
        span.describe()
    );
}

#[track_caller]
fn assert_no_attr(span: &ExportedSpan, key: &str) {
    assert!(
        !span.has_attr(key),
        "{key} must be absent: {}",
        span.describe()
    );
}

/// Sum of every `tollgate_telemetry_spans_dropped_total` sample, or `None` if there is none.
async fn dropped(gw: &Gateway) -> Option<f64> {
    let text = gw.metrics().await;
    let present = text
        .lines()
        .any(|l| l.starts_with(DROPPED) && !l.starts_with('#'));
    present.then(|| sum_metrics(&text, DROPPED))
}

/// Polls until the drop counter is above 0.
async fn wait_dropped(gw: &Gateway, what: &str) {
    let deadline = Instant::now() + DROP_WAIT;
    loop {
        if dropped(gw).await.is_some_and(|v| v > 0.0) {
            return;
        }
        if Instant::now() >= deadline {
            let text = gw.metrics().await;
            let lines: Vec<&str> = text.lines().filter(|l| l.contains("telemetry")).collect();
            panic!(
                "{what}: {DROPPED} still not > 0 after {DROP_WAIT:?}; telemetry metrics:\n{}\n--- logs ---\n{}",
                lines.join("\n"),
                gw.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn access_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.log_json()
        .into_iter()
        .filter(|l| l["target"] == "tollgate::access")
        .collect()
}

async fn access_line(gw: &Gateway, path: &str) -> serde_json::Value {
    wait_until_msg(WAIT, &format!("access log line for {path}"), || async {
        access_lines(gw).iter().any(|l| l["path"] == path)
    })
    .await;
    access_lines(gw)
        .into_iter()
        .find(|l| l["path"] == path)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Traces started and continued; span names, attributes, parentage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace_with_a_server_and_a_client_span() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(
        &up,
        &telemetry(
            &col.endpoint(),
            &format!(r#"headers = {{ "x-api-token" = "{OTLP_TOKEN}" }}"#),
        ),
        "",
    ))
    .await;

    // `//` and a percent-encoded unreserved character: url.path is the normalised path.
    let r = get(&gw, "/api//items/%342?q=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = up.last_request().expect("the upstream got the request");
    assert_eq!(rec.path_only(), "/api/items/42", "normalised path upstream");
    assert_eq!(rec.header_all("tracestate"), Vec::<&str>::new());
    let tp = traceparent_of(&rec);
    assert_eq!(tp.version, "00");
    assert_eq!(tp.flags, "01", "sample_ratio defaults to 1.0: sampled");
    assert_hex_id(&tp.trace_id, 32, "trace id sent upstream");
    assert_hex_id(&tp.span_id, 16, "parent id sent upstream");

    let spans = col.wait_trace(WAIT, &tp.trace_id, 2).await;
    let server = server_span(&spans);
    let clients = of_kind(&spans, SpanKind::Client);
    assert_eq!(
        clients.len(),
        1,
        "one upstream attempt:\n{}",
        describe_all(&spans)
    );
    let client = &clients[0];

    // The server span.
    assert_eq!(server.name, "GET items", "{}", server.describe());
    assert!(server.is_root(), "a new trace: {}", server.describe());
    assert_hex_id(&server.span_id, 16, "server span id");
    assert_attr_str(&server, "http.request.method", "GET");
    assert_attr_str(&server, "url.path", "/api/items/42");
    assert_attr_str(&server, "http.route", "/api/items/{id}");
    assert_attr_int(&server, "http.response.status_code", 200);
    assert_attr_str(&server, "client.address", "127.0.0.1");
    assert_attr_str(&server, "tollgate.route", "items");
    assert_no_attr(&server, "tollgate.consumer");
    assert_eq!(server.status, StatusCode::Unset, "{}", server.describe());
    assert_eq!(
        server.resource_str("service.name"),
        Some("tollgate"),
        "default service_name"
    );

    // The client span: the upstream attempt, child of the server span, named by traceparent.
    assert_eq!(client.name, "GET backend", "{}", client.describe());
    assert_eq!(
        client.parent_span_id,
        server.span_id,
        "{}",
        client.describe()
    );
    assert_eq!(
        tp.span_id, client.span_id,
        "the upstream's traceparent names its attempt's CLIENT span"
    );
    assert_ne!(client.span_id, server.span_id);
    assert_attr_str(client, "server.address", "127.0.0.1");
    assert_attr_int(client, "server.port", i64::from(up.addr().port()));
    assert_attr_int(client, "http.response.status_code", 200);
    assert_attr_str(client, "tollgate.upstream", "backend");
    assert_no_attr(client, "error.type");
    assert_ne!(client.status, StatusCode::Error, "{}", client.describe());
    assert!(
        client.start_time_unix_nano >= server.start_time_unix_nano
            && client.end_time_unix_nano <= server.end_time_unix_nano
            && server.start_time_unix_nano > 0
            && server.end_time_unix_nano >= server.start_time_unix_nano,
        "the attempt lies within the request:\n{}\n{}",
        server.describe(),
        client.describe()
    );

    // A second request: another new trace.
    let r = get(&gw, "/api/items/43", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tp2 = traceparent_of(&received(&up, "/api/items/43"));
    assert_ne!(
        tp2.trace_id, tp.trace_id,
        "each request starts its own trace"
    );
    let spans2 = col.wait_trace(WAIT, &tp2.trace_id, 2).await;
    assert!(server_span(&spans2).is_root());

    // What the exports looked like.
    let exports = col.requests();
    assert!(!exports.is_empty());
    assert_eq!(
        col.decode_errors(),
        Vec::<String>::new(),
        "every body decodes"
    );
    for e in &exports {
        assert_eq!(e.method, "POST", "{e:?}");
        assert_eq!(e.target, "/v1/traces", "{e:?}");
        assert_eq!(
            e.header("content-type"),
            Some("application/x-protobuf"),
            "{:?}",
            e.headers
        );
        assert_eq!(
            e.header("x-api-token"),
            Some(OTLP_TOKEN),
            "configured headers go with every export: {:?}",
            e.headers
        );
    }
    assert!(
        !gw.logs().contains(OTLP_TOKEN),
        "the exporter's header value is never logged"
    );
}

#[tokio::test]
async fn a_valid_incoming_traceparent_is_continued_and_tracestate_passed_on() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    let (parent, tid, sid) = sampled_parent();
    let tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let r = get(
        &gw,
        "/api/items/continued",
        &[("traceparent", &parent), ("tracestate", tracestate)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = received(&up, "/api/items/continued");
    let tp = traceparent_of(&rec);
    assert_eq!(tp.trace_id, tid, "same trace upstream");
    assert_eq!(tp.flags, "01", "sampled stays sampled");
    assert_ne!(
        tp.span_id, sid,
        "the upstream's parent is the gateway's span, not the client's"
    );
    assert_eq!(
        rec.header_all("tracestate"),
        vec![tracestate],
        "tracestate passes unchanged"
    );

    let spans = col.wait_trace(WAIT, &tid, 2).await;
    let server = server_span(&spans);
    assert_eq!(
        server.parent_span_id,
        sid,
        "the server span is the client span's child: {}",
        server.describe()
    );
    assert_ne!(server.span_id, sid);
    let clients = clients_named(&spans, "GET backend");
    assert_eq!(clients.len(), 1, "{}", describe_all(&spans));
    assert_eq!(clients[0].parent_span_id, server.span_id);
    assert_eq!(clients[0].span_id, tp.span_id);
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    let sid = random_span_id();
    let cases: Vec<(&str, String, String)> = {
        let mut v = Vec::new();
        let mut case = |what: &'static str, f: &dyn Fn(&str) -> String| {
            let tid = random_trace_id();
            v.push((what, f(&tid), tid));
        };
        case("garbage", &|_| "garbage".to_string());
        case("all-zero trace id", &|_| {
            format!("00-{}-{sid}-01", "0".repeat(32))
        });
        case("all-zero parent id", &|t| {
            format!("00-{t}-0000000000000000-01")
        });
        case("uppercase hex", &|t| {
            format!("00-{}-{sid}-01", t.to_ascii_uppercase())
        });
        case("version ff", &|t| format!("ff-{t}-{sid}-01"));
        case("no flags", &|t| format!("00-{t}-{sid}"));
        case("short trace id", &|t| format!("00-{}-{sid}-01", &t[..30]));
        v
    };

    for (i, (what, value, tid)) in cases.iter().enumerate() {
        let path = format!("/api/items/invalid-{i}");
        let r = get(&gw, &path, &[("traceparent", value)]).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        let tp = traceparent_of(&received(&up, &path));
        assert_ne!(
            &tp.trace_id, tid,
            "{what} ({value:?}) must not be continued"
        );
        assert_ne!(tp.trace_id, "0".repeat(32), "{what}");
        assert_eq!(tp.flags, "01", "{what}: a new, sampled trace");
        let spans = col.wait_trace(WAIT, &tp.trace_id, 2).await;
        let server = server_span(&spans);
        assert!(
            server.is_root(),
            "{what} ({value:?}): the new trace's server span has no parent: {}",
            server.describe()
        );
    }
    // None of the invalid ids made it into an exported span.
    let spans = col.spans();
    for (what, _, tid) in &cases {
        assert!(
            spans.iter().all(|s| &s.trace_id != tid),
            "{what}: trace {tid} exported:\n{}",
            describe_all(&spans)
        );
    }
}

#[tokio::test]
async fn consumer_route_and_method_on_the_server_span() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    // An authenticated POST: tollgate.consumer is known.
    let (parent, tid, _) = sampled_parent();
    let r = send(
        &gw,
        "POST",
        "/private/orders",
        &[("traceparent", &parent), ("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 2).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "POST private", "{}", server.describe());
    assert_attr_str(&server, "http.request.method", "POST");
    assert_attr_str(&server, "http.route", "/private");
    assert_attr_str(&server, "url.path", "/private/orders");
    assert_attr_str(&server, "tollgate.route", "private");
    assert_attr_str(&server, "tollgate.consumer", "acme");
    assert_attr_int(&server, "http.response.status_code", 200);
    assert_eq!(
        clients_named(&spans, "POST backend").len(),
        1,
        "{}",
        describe_all(&spans)
    );

    // Refused by the api_key plugin: 401, no upstream attempt, no consumer, not an error.
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/private/orders", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 1).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "GET private");
    assert_attr_int(&server, "http.response.status_code", 401);
    assert_no_attr(&server, "tollgate.consumer");
    assert_eq!(
        server.status,
        StatusCode::Unset,
        "4xx is not a server error"
    );
    assert_eq!(
        of_kind(&spans, SpanKind::Client).len(),
        0,
        "no upstream attempt:\n{}",
        describe_all(&spans)
    );

    // No route: the span is named by the method alone, without route attributes.
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/nowhere/at/all", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 1).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "GET", "{}", server.describe());
    assert_attr_str(&server, "url.path", "/nowhere/at/all");
    assert_attr_int(&server, "http.response.status_code", 404);
    assert_no_attr(&server, "http.route");
    assert_no_attr(&server, "tollgate.route");
    assert_eq!(server.status, StatusCode::Unset);

    // A non-standard method is `_OTHER`.
    let (parent, tid, _) = sampled_parent();
    let r = send(&gw, "PURGE", "/api/items/9", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(received(&up, "/api/items/9").method, "PURGE");
    let spans = col.wait_trace(WAIT, &tid, 1).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "_OTHER items", "{}", server.describe());
    assert_attr_str(&server, "http.request.method", "_OTHER");
}

#[tokio::test]
async fn server_span_status_is_error_for_5xx_answers_only() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    // (path, status the client gets, server span status)
    let cases = [
        ("/status/500", 500, StatusCode::Error),
        ("/status/503", 503, StatusCode::Error),
        ("/status/404", 404, StatusCode::Unset),
        ("/status/201", 201, StatusCode::Unset),
    ];
    for (path, status, want) in cases {
        let (parent, tid, _) = sampled_parent();
        let r = get(&gw, path, &[("traceparent", &parent)]).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        let spans = col.wait_trace(WAIT, &tid, 2).await;
        let server = server_span(&spans);
        assert_eq!(server.name, "GET raw");
        assert_attr_int(&server, "http.response.status_code", i64::from(status));
        assert_eq!(server.status, want, "{path}: {}", server.describe());
        let clients = clients_named(&spans, "GET backend");
        assert_eq!(clients.len(), 1, "{path}:\n{}", describe_all(&spans));
        assert_attr_int(&clients[0], "http.response.status_code", i64::from(status));
    }

    // The upstream times out: the gateway's 504; the attempt failed (ERROR + error.type,
    // no status code of an answer that never came).
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/hang", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 504, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 2).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "GET hang");
    assert_attr_int(&server, "http.response.status_code", 504);
    assert_eq!(server.status, StatusCode::Error, "{}", server.describe());
    let clients = clients_named(&spans, "GET slowpoke");
    assert_eq!(clients.len(), 1, "{}", describe_all(&spans));
    let attempt = &clients[0];
    assert_eq!(attempt.status, StatusCode::Error, "{}", attempt.describe());
    assert!(attempt.has_attr("error.type"), "{}", attempt.describe());
    assert_no_attr(attempt, "http.response.status_code");
    assert_attr_str(attempt, "tollgate.upstream", "slowpoke");
    assert_eq!(attempt.parent_span_id, server.span_id);
}

#[tokio::test]
async fn client_address_is_the_client_behind_trusted_proxies() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let cfg = config(&up, &telemetry(&col.endpoint(), ""), "").replacen(
        "threads = 1",
        "threads = 1\ntrusted_proxies = [\"127.0.0.0/8\"]",
        1,
    );
    let gw = Gateway::start(&cfg).await;

    let (parent, tid, _) = sampled_parent();
    let r = get(
        &gw,
        "/api/items/xff",
        &[
            ("traceparent", &parent),
            ("x-forwarded-for", "203.0.113.7, 127.0.0.5"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 2).await;
    assert_attr_str(&server_span(&spans), "client.address", "203.0.113.7");
}

#[tokio::test]
async fn a_cache_hit_has_a_server_span_and_no_upstream_attempt() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let extra = r#"
[plugins.c]
type = "cache"
ttl = "60s"

[[routes]]
name = "cached"
upstream = "backend"
path = "/cached"
plugins = ["c"]
"#;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), extra)).await;

    let mut traces = Vec::new();
    for expect in ["MISS", "HIT"] {
        let (parent, tid, _) = sampled_parent();
        let resp = gw
            .client()
            .get(gw.url("/cached/doc"))
            .header("traceparent", &parent)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get("x-cache").and_then(|v| v.to_str().ok()),
            Some(expect)
        );
        traces.push(tid);
    }
    assert_eq!(up.hits(), 1);
    let miss = col.wait_trace(WAIT, &traces[0], 2).await;
    assert_eq!(
        clients_named(&miss, "GET backend").len(),
        1,
        "{}",
        describe_all(&miss)
    );
    let hit = col.wait_trace(WAIT, &traces[1], 1).await;
    let server = server_span(&hit);
    assert_eq!(server.name, "GET cached");
    assert_attr_int(&server, "http.response.status_code", 200);
    assert_eq!(
        of_kind(&hit, SpanKind::Client).len(),
        0,
        "a cache hit makes no upstream attempt:\n{}",
        describe_all(&hit)
    );
}

#[tokio::test]
async fn the_upstream_gets_one_traceparent_whatever_the_client_sent() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    // Two traceparent fields, and one under another spelling of the name: the gateway's own
    // replaces them all (never appended next to the client's).
    let (p1, _, _) = sampled_parent();
    let (p2, _, _) = sampled_parent();
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(format!(
        "GET /api/items/two HTTP/1.1\r\nHost: t.test\r\ntraceparent: {p1}\r\nTraceParent: {p2}\r\n\r\n"
    ))
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let tp = traceparent_of(&received(&up, "/api/items/two"));
    col.wait_trace(WAIT, &tp.trace_id, 2).await;

    let (p3, t3, _) = sampled_parent();
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(format!(
        "GET /api/items/case HTTP/1.1\r\nHost: t.test\r\nTRACEPARENT: {p3}\r\n\r\n"
    ))
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let tp = traceparent_of(&received(&up, "/api/items/case"));
    assert_eq!(tp.trace_id, t3, "header names are case-insensitive");
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_retry_is_a_separate_client_span() {
    let alive = TestUpstream::start("alive").await;
    let first = TestUpstream::start("first").await;
    let second = TestUpstream::start("second").await;
    let dead = unused_addr();
    let (gone_a, gone_b) = (unused_addr(), unused_addr());
    let col = OtlpCollector::start().await;
    let cfg = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1

[upstreams.flaky]
targets = ["{dead}", "{alive}"]
connect_timeout = "1s"
[upstreams.flaky.retry]
attempts = 1
on = ["connect_error"]

[upstreams.gone]
targets = ["{gone_a}", "{gone_b}"]
connect_timeout = "1s"
[upstreams.gone.retry]
attempts = 1
on = ["connect_error"]

[upstreams.twice]
targets = ["{first}", "{second}"]
[upstreams.twice.retry]
attempts = 1
on = ["503"]

[[routes]]
name = "flaky"
upstream = "flaky"
path = "/api"

[[routes]]
name = "gone"
upstream = "gone"
path = "/gone"

[[routes]]
name = "twice"
upstream = "twice"
path = "/status"
{}"#,
        telemetry(&col.endpoint(), ""),
        alive = alive.addr(),
        first = first.addr(),
        second = second.addr(),
    );
    let gw = Gateway::start(&cfg).await;

    // Connect refused, then the live target: round robin starts some of these on the dead one.
    let mut retried = 0;
    for i in 0..4 {
        let path = format!("/api/r{i}");
        let (parent, tid, _) = sampled_parent();
        let r = get(&gw, &path, &[("traceparent", &parent)]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let tp = traceparent_of(&received(&alive, &path));
        assert_eq!(tp.trace_id, tid);
        let spans = col.wait_trace(WAIT, &tid, 2).await;
        let server = server_span(&spans);
        let attempts = clients_named(&spans, "GET flaky");
        assert!(
            matches!(attempts.len(), 1 | 2),
            "{path}: one or two attempts:\n{}",
            describe_all(&spans)
        );
        for a in &attempts {
            assert_eq!(a.parent_span_id, server.span_id, "{}", a.describe());
            assert_attr_str(a, "tollgate.upstream", "flaky");
        }
        let last = attempts.last().unwrap();
        assert_eq!(
            last.span_id, tp.span_id,
            "{path}: the upstream's traceparent names the attempt that reached it"
        );
        assert_attr_int(last, "server.port", i64::from(alive.addr().port()));
        assert_attr_int(last, "http.response.status_code", 200);
        assert_ne!(last.status, StatusCode::Error, "{}", last.describe());
        if attempts.len() == 2 {
            retried += 1;
            let failed = &attempts[0];
            assert_ne!(failed.span_id, last.span_id);
            assert_attr_int(failed, "server.port", i64::from(dead.port()));
            assert_eq!(failed.status, StatusCode::Error, "{}", failed.describe());
            assert!(failed.has_attr("error.type"), "{}", failed.describe());
            assert_no_attr(failed, "http.response.status_code");
        }
        assert_eq!(server.status, StatusCode::Unset, "{}", server.describe());
    }
    assert!(
        retried >= 1,
        "4 round-robin requests never started on the dead target: no retry was exercised"
    );

    // Both targets refuse: two failed attempts, the gateway's 502, an ERROR server span.
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/gone/x", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 3).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "GET gone");
    assert_eq!(server.status, StatusCode::Error, "{}", server.describe());
    assert_attr_int(&server, "http.response.status_code", 502);
    let attempts = clients_named(&spans, "GET gone");
    assert_eq!(attempts.len(), 2, "{}", describe_all(&spans));
    let mut ports: Vec<i64> = attempts
        .iter()
        .map(|a| {
            assert_eq!(a.status, StatusCode::Error, "{}", a.describe());
            assert!(a.has_attr("error.type"), "{}", a.describe());
            assert_eq!(a.parent_span_id, server.span_id);
            a.attr_int("server.port").expect("server.port")
        })
        .collect();
    ports.sort();
    let mut want = vec![i64::from(gone_a.port()), i64::from(gone_b.port())];
    want.sort();
    assert_eq!(ports, want, "one attempt per target");

    // 503 from both targets (retried on 503): two answered attempts, each child of the server
    // span, each named by the traceparent its target received.
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/status/503", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let spans = col.wait_trace(WAIT, &tid, 3).await;
    let server = server_span(&spans);
    assert_eq!(server.status, StatusCode::Error);
    let attempts = clients_named(&spans, "GET twice");
    assert_eq!(attempts.len(), 2, "{}", describe_all(&spans));
    for target in [&first, &second] {
        let tp = traceparent_of(&received(target, "/status/503"));
        assert_eq!(tp.trace_id, tid);
        let a = attempts
            .iter()
            .find(|a| a.span_id == tp.span_id)
            .unwrap_or_else(|| {
                panic!(
                    "{}'s traceparent names no CLIENT span:\n{}",
                    target.name(),
                    describe_all(&spans)
                )
            });
        assert_attr_int(a, "server.port", i64::from(target.addr().port()));
        assert_attr_int(a, "http.response.status_code", 503);
        assert_eq!(a.parent_span_id, server.span_id);
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unsampled_parent_is_honoured_yet_propagated() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    let (tid, sid) = (random_trace_id(), random_span_id());
    let r = get(
        &gw,
        "/api/items/unsampled",
        &[("traceparent", &format!("00-{tid}-{sid}-00"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tp = traceparent_of(&received(&up, "/api/items/unsampled"));
    assert_eq!(tp.trace_id, tid, "same trace upstream");
    assert_eq!(tp.flags, "00", "not sampled upstream either");
    assert_hex_id(&tp.span_id, 16, "parent id sent upstream");
    assert_ne!(
        tp.span_id, sid,
        "the parent upstream is the gateway's attempt"
    );

    // A later sampled request: once its spans are in, the unsampled one's would be too.
    let (marker, marker_tid, _) = sampled_parent();
    let r = get(&gw, "/api/items/marker", &[("traceparent", &marker)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    col.wait_trace(WAIT, &marker_tid, 2).await;
    let spans = col.spans();
    assert!(
        spans.iter().all(|s| s.trace_id != tid),
        "an unsampled request exported spans:\n{}",
        describe_all(&spans)
    );
}

#[tokio::test]
async fn sample_ratio_zero_exports_nothing_but_still_propagates() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(
        &up,
        &telemetry(&col.endpoint(), "sample_ratio = 0.0"),
        "",
    ))
    .await;

    let mut unsampled = Vec::new();
    for i in 0..5 {
        let path = format!("/api/items/zero-{i}");
        let r = get(&gw, &path, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let tp = traceparent_of(&received(&up, &path));
        assert_eq!(tp.flags, "00", "{path}: not sampled");
        assert_hex_id(&tp.trace_id, 32, "trace id sent upstream");
        unsampled.push(tp.trace_id);
    }
    // An unsampled parent stays unsampled.
    let (tid, sid) = (random_trace_id(), random_span_id());
    let path = "/api/items/zero-parent";
    let r = get(&gw, path, &[("traceparent", &format!("00-{tid}-{sid}-00"))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tp = traceparent_of(&received(&up, path));
    assert_eq!(
        (tp.trace_id.as_str(), tp.flags.as_str()),
        (tid.as_str(), "00")
    );
    unsampled.push(tid);

    // A sampled parent is still honoured (parent-based sampling): the marker.
    let (marker, marker_tid, _) = sampled_parent();
    let r = get(&gw, "/api/items/zero-marker", &[("traceparent", &marker)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tp = traceparent_of(&received(&up, "/api/items/zero-marker"));
    assert_eq!(
        (tp.trace_id.as_str(), tp.flags.as_str()),
        (marker_tid.as_str(), "01")
    );
    col.wait_trace(WAIT, &marker_tid, 2).await;

    let spans = col.spans();
    assert!(
        spans.iter().all(|s| s.trace_id == marker_tid),
        "only the sampled parent's trace is exported; unsampled {unsampled:?}:\n{}",
        describe_all(&spans)
    );
}

// ---------------------------------------------------------------------------------------------
// A collector that is down, hangs, or fails
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_dead_collector_never_touches_requests_and_drops_are_counted() {
    let up = TestUpstream::start("backend").await;
    let dead: SocketAddr = unused_addr();
    let gw = Gateway::start(&config(&up, &telemetry(&format!("http://{dead}"), ""), "")).await;

    for i in 0..20 {
        let path = format!("/api/items/dead-{i}");
        let r = get(&gw, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        // Propagation does not depend on the collector.
        traceparent_of(&received(&up, &path));
    }
    assert_eq!(up.hits(), 20);
    wait_dropped(&gw, "collector on a closed port").await;
    // Still serving normally after the drops.
    let r = get(&gw, "/api/items/dead-after", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_hanging_collector_never_delays_requests_and_drops_are_counted() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start_with(CollectorMode::Hang).await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    for i in 0..5 {
        let r = get(&gw, &format!("/api/items/before-{i}"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // An export is now stuck in the collector...
    wait_until_msg(
        WAIT,
        "an export request reaching the hanging collector",
        || async { col.request_count() >= 1 },
    )
    .await;
    assert_eq!(col.decode_errors(), Vec::<String>::new());
    // ...and requests go on being answered promptly (`get` bounds each one).
    for i in 0..20 {
        let path = format!("/api/items/during-{i}");
        let r = get(&gw, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // Concurrent ones too.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..10 {
        let client = gw.client();
        let url = gw.url(&format!("/api/items/concurrent-{i}"));
        set.spawn(async move {
            tokio::time::timeout(PROMPT, client.get(&url).send())
                .await
                .map(|r| r.map(|r| r.status().as_u16()))
        });
    }
    while let Some(res) = set.join_next().await {
        let status = res
            .expect("task")
            .expect("answered within the bound")
            .expect("request");
        assert_eq!(status, 200);
    }
    assert_eq!(up.hits(), 35);
    wait_dropped(&gw, "collector that never answers").await;
}

#[tokio::test]
async fn a_collector_answering_500_gets_spans_dropped_and_counted() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start_with(CollectorMode::Status(500)).await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    let mut tids = Vec::new();
    for i in 0..10 {
        let path = format!("/api/items/fail-{i}");
        let r = get(&gw, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        tids.push(traceparent_of(&received(&up, &path)).trace_id);
    }
    // The collector did get (well-formed) spans, and refused them.
    col.wait_spans(WAIT, "spans sent to the failing collector", |spans| {
        spans.iter().any(|s| tids.contains(&s.trace_id))
    })
    .await;
    assert_eq!(col.decode_errors(), Vec::<String>::new());
    wait_dropped(&gw, "collector answering 500").await;

    // The collector recovers: later spans are delivered.
    col.set_mode(CollectorMode::Ok);
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/api/items/recovered", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    col.wait_trace(WAIT, &tid, 2).await;
}

// ---------------------------------------------------------------------------------------------
// Without [telemetry]
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_telemetry_trace_headers_pass_through_untouched() {
    let up = TestUpstream::start("backend").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let (valid, _, _) = sampled_parent();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/items/valid",
            vec![
                ("traceparent", valid.as_str()),
                ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            ],
        ),
        (
            "/api/items/invalid",
            vec![
                ("traceparent", "00-NOT-A-VALID-TRACEPARENT-zz"),
                ("tracestate", "odd value ,, x"),
            ],
        ),
        (
            "/api/items/unsampled",
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            )],
        ),
        ("/api/items/none", vec![]),
    ];
    for (path, headers) in &cases {
        let r = get(&gw, path, headers).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let rec = received(&up, path);
        for name in ["traceparent", "tracestate"] {
            let sent: Vec<&str> = headers
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(
                rec.header_all(name),
                sent,
                "{path}: {name} reaches the upstream as the client sent it"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_access_log_line_carries_the_trace_id() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), "")).await;

    // A continued trace.
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/api/items/logged", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let line = access_line(&gw, "/api/items/logged").await;
    assert_eq!(line["trace_id"], tid.as_str(), "{line}");

    // A new trace: the id the upstream was told and the spans were exported under.
    let r = get(&gw, "/api/items/logged-new", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tp = traceparent_of(&received(&up, "/api/items/logged-new"));
    let line = access_line(&gw, "/api/items/logged-new").await;
    assert_eq!(line["trace_id"], tp.trace_id.as_str(), "{line}");
    col.wait_trace(WAIT, &tp.trace_id, 2).await;

    // An unsampled request is logged with its trace id too.
    let (utid, usid) = (random_trace_id(), random_span_id());
    let r = get(
        &gw,
        "/api/items/logged-unsampled",
        &[("traceparent", &format!("00-{utid}-{usid}-00"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let line = access_line(&gw, "/api/items/logged-unsampled").await;
    assert_eq!(line["trace_id"], utid.as_str(), "{line}");

    // A request no route matched.
    let (parent, tid, _) = sampled_parent();
    let r = get(&gw, "/nowhere/logged", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let line = access_line(&gw, "/nowhere/logged").await;
    assert_eq!(line["trace_id"], tid.as_str(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// forward_auth
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_forward_auth_call_is_a_client_span_and_receives_a_traceparent() {
    let up = TestUpstream::start("backend").await;
    let auth = TestUpstream::start("auth").await;
    let col = OtlpCollector::start().await;
    let extra = format!(
        r#"
[plugins.fa]
type = "forward_auth"
url = "{}"
timeout = "2s"
forward_headers = ["authorization"]

[[routes]]
name = "guarded"
upstream = "backend"
path = "/guarded"
plugins = ["fa"]
"#,
        auth.url("/check")
    );
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), &extra)).await;

    let (parent, tid, _) = sampled_parent();
    let r = get(
        &gw,
        "/guarded/1",
        &[("traceparent", &parent), ("authorization", "Bearer t")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth_call = auth.last_request().expect("the auth service was asked");
    let auth_tp = traceparent_of(&auth_call);
    let up_tp = traceparent_of(&received(&up, "/guarded/1"));
    assert_eq!(auth_tp.trace_id, tid);
    assert_eq!(up_tp.trace_id, tid);
    assert_ne!(auth_tp.span_id, up_tp.span_id);

    let spans = col.wait_trace(WAIT, &tid, 3).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "GET guarded");
    let fa = clients_named(&spans, "GET fa");
    assert_eq!(
        fa.len(),
        1,
        "one forward_auth span:\n{}",
        describe_all(&spans)
    );
    let fa = &fa[0];
    assert_attr_str(fa, "tollgate.plugin", "fa");
    assert_eq!(fa.parent_span_id, server.span_id, "{}", fa.describe());
    assert_eq!(
        auth_tp.span_id, fa.span_id,
        "the auth service's traceparent names the forward_auth span"
    );
    let upstream = clients_named(&spans, "GET backend");
    assert_eq!(upstream.len(), 1, "{}", describe_all(&spans));
    assert_eq!(upstream[0].span_id, up_tp.span_id);
    assert_eq!(upstream[0].parent_span_id, server.span_id);
}

#[tokio::test]
async fn a_queue_publish_is_a_client_span() {
    let up = TestUpstream::start("backend").await;
    let col = OtlpCollector::start().await;
    // A broker that is not there: the publish fails at once, and its span says so.
    let extra = format!(
        r#"
[queues.events]
kind = "redis_stream"
url = "redis://{}"
stream = "tollgate:span-events"

[[routes]]
name = "inbox"
queue = "events"
path = "/inbox"
methods = ["POST"]
"#,
        unused_addr()
    );
    let gw = Gateway::start(&config(&up, &telemetry(&col.endpoint(), ""), &extra)).await;

    let (parent, tid, _) = sampled_parent();
    let r = send(&gw, "POST", "/inbox", &[("traceparent", &parent)]).await;
    assert_eq!(r.status, 503, "{}", r.body);

    let spans = col.wait_trace(WAIT, &tid, 2).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "POST inbox");
    let publish = clients_named(&spans, "publish events");
    assert_eq!(publish.len(), 1, "{}", describe_all(&spans));
    let p = &publish[0];
    assert_eq!(p.parent_span_id, server.span_id, "{}", p.describe());
    assert_attr_str(p, "messaging.system", "redis");
    assert_attr_str(p, "messaging.operation.type", "publish");
    assert_attr_str(p, "messaging.destination.name", "events");
    assert_attr_str(p, "tollgate.queue", "events");
    assert_attr_str(p, "error.type", "error");
    assert_no_attr(p, "http.request.method");
}

// ---------------------------------------------------------------------------------------------
// Hot reload
// ---------------------------------------------------------------------------------------------

async fn reload(gw: &Gateway, template: &str) {
    gw.write_config(template);
    let resp = gw.admin_post("/reload", "").await;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST /reload: {body}");
}

#[tokio::test]
async fn telemetry_is_hot_reloadable() {
    let up = TestUpstream::start("backend").await;
    let col_a = OtlpCollector::start().await;
    let col_b = OtlpCollector::start().await;
    let gw = Gateway::start(&config(
        &up,
        &telemetry(
            &col_a.endpoint(),
            r#"service_name = "gw-one"
headers = { "x-api-token" = "token-one" }"#,
        ),
        "",
    ))
    .await;

    let (p1, t1, _) = sampled_parent();
    assert_eq!(
        get(&gw, "/api/items/1", &[("traceparent", &p1)])
            .await
            .status,
        200
    );
    let spans = col_a.wait_trace(WAIT, &t1, 2).await;
    assert_eq!(
        server_span(&spans).resource_str("service.name"),
        Some("gw-one")
    );
    let exported_before = col_a.request_count();
    assert!(col_a
        .requests()
        .iter()
        .all(|e| e.header("x-api-token") == Some("token-one")));

    // A new service_name and export header, same endpoint.
    reload(
        &gw,
        &config(
            &up,
            &telemetry(
                &col_a.endpoint(),
                r#"service_name = "gw-two"
headers = { "x-api-token" = "token-two" }"#,
            ),
            "",
        ),
    )
    .await;
    let (p2, t2, _) = sampled_parent();
    assert_eq!(
        get(&gw, "/api/items/2", &[("traceparent", &p2)])
            .await
            .status,
        200
    );
    let spans = col_a.wait_trace(WAIT, &t2, 2).await;
    for s in &spans {
        assert_eq!(
            s.resource_str("service.name"),
            Some("gw-two"),
            "after the reload: {}",
            s.describe()
        );
    }
    let later = &col_a.requests()[exported_before..];
    assert!(!later.is_empty());
    for e in later {
        assert_eq!(
            e.header("x-api-token"),
            Some("token-two"),
            "exports after the reload carry the new header: {:?}",
            e.headers
        );
    }

    // A new endpoint.
    reload(
        &gw,
        &config(
            &up,
            &telemetry(&col_b.endpoint(), r#"service_name = "gw-two""#),
            "",
        ),
    )
    .await;
    let (p3, t3, _) = sampled_parent();
    assert_eq!(
        get(&gw, "/api/items/3", &[("traceparent", &p3)])
            .await
            .status,
        200
    );
    let spans = col_b.wait_trace(WAIT, &t3, 2).await;
    assert_eq!(
        server_span(&spans).resource_str("service.name"),
        Some("gw-two")
    );
    let a_spans = col_a.spans();
    assert!(
        a_spans.iter().all(|s| s.trace_id != t3),
        "the old collector got a span after the endpoint moved:\n{}",
        describe_all(&a_spans)
    );
    let b_spans = col_b.spans();
    assert!(
        b_spans.iter().all(|s| s.trace_id != t1 && s.trace_id != t2),
        "the new collector got spans from before the move:\n{}",
        describe_all(&b_spans)
    );

    // [telemetry] removed: trace headers pass through untouched again.
    reload(&gw, &config(&up, "", "")).await;
    let odd = "00-NOT-A-VALID-TRACEPARENT-zz";
    let r = get(
        &gw,
        "/api/items/4",
        &[("traceparent", odd), ("tracestate", "a=b")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = received(&up, "/api/items/4");
    assert_eq!(rec.header_all("traceparent"), vec![odd]);
    assert_eq!(rec.header_all("tracestate"), vec!["a=b"]);
    let r = get(&gw, "/api/items/5", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        received(&up, "/api/items/5").header_all("traceparent"),
        Vec::<&str>::new(),
        "no traceparent is made up without [telemetry]"
    );

    // And added back: propagation and export resume.
    reload(
        &gw,
        &config(
            &up,
            &telemetry(&col_b.endpoint(), r#"service_name = "gw-three""#),
            "",
        ),
    )
    .await;
    let r = get(&gw, "/api/items/6", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let tp = traceparent_of(&received(&up, "/api/items/6"));
    let spans = col_b.wait_trace(WAIT, &tp.trace_id, 2).await;
    assert_eq!(
        server_span(&spans).resource_str("service.name"),
        Some("gw-three")
    );
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn telemetry_config_errors_name_the_place() {
    let up = TestUpstream::start("backend").await;
    let ok = config(
        &up,
        &telemetry(
            "http://127.0.0.1:4318",
            r#"service_name = "svc"
sample_ratio = 0.25
headers = { "x-api-token" = "t" }"#,
        ),
        "",
    );
    let (passed, out) = check_config(&ok, &[]);
    assert!(passed && out.trim() == "ok", "a valid [telemetry]:\n{out}");

    // (the table, what the error must name)
    let cases = [
        (
            telemetry("http://127.0.0.1:4318", "sample_ratio = 1.5"),
            "telemetry.sample_ratio",
        ),
        (
            telemetry("http://127.0.0.1:4318", "sample_ratio = -0.1"),
            "telemetry.sample_ratio",
        ),
        (telemetry("not a url", ""), "telemetry.otlp_endpoint"),
        (
            telemetry("http://127.0.0.1:4318", "bogus = 1"),
            "telemetry.bogus",
        ),
        (
            "\n[telemetry]\nservice_name = \"x\"\n".to_string(),
            "otlp_endpoint",
        ),
    ];
    for (table, place) in cases {
        let (passed, out) = check_config(&config(&up, &table, ""), &[]);
        assert!(!passed, "accepted:\n{table}\n{out}");
        assert!(
            out.contains("telemetry") && out.contains(place),
            "{table}: the error names {place}:\n{out}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The test collector itself (no gateway): what the tests above rely on
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_test_collector_decodes_otlp_and_answers_as_told() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("svc".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0xab; 16],
                    span_id: vec![0x01; 8],
                    parent_span_id: vec![0x02; 8],
                    name: "GET x".into(),
                    kind: SpanKind::Client as i32,
                    attributes: vec![
                        kv("a", any_value::Value::StringValue("b".into())),
                        kv("n", any_value::Value::IntValue(7)),
                    ],
                    status: Some(Status {
                        code: StatusCode::Error as i32,
                        message: String::new(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();

    let col = OtlpCollector::start().await;
    let client = http_client();
    let url = format!("{}/v1/traces", col.endpoint());
    for _ in 0..2 {
        let r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("x-k", "v")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(col.connections(), 1, "keep-alive");
    assert_eq!(col.request_count(), 2);
    assert_eq!(col.decode_errors(), Vec::<String>::new());
    let reqs = col.requests();
    assert_eq!(reqs[0].target, "/v1/traces");
    assert_eq!(reqs[0].header("x-k"), Some("v"));
    let spans = col.spans_named("GET x");
    assert_eq!(spans.len(), 2);
    let s = &spans[0];
    assert_eq!(s.trace_id, "ab".repeat(16));
    assert_eq!(s.span_id, "0101010101010101");
    assert_eq!(s.parent_span_id, "0202020202020202");
    assert_eq!(s.kind, SpanKind::Client);
    assert_eq!(s.status, StatusCode::Error);
    assert_eq!(s.attr_str("a"), Some("b"));
    assert_eq!(s.attr_int("n"), Some(7));
    assert_eq!(s.attr_str("n"), None);
    assert_eq!(s.resource_str("service.name"), Some("svc"));
    assert_eq!(col.trace(&"ab".repeat(16)).len(), 2);

    // Garbage is recorded as a decode error.
    let r = client.post(&url).body(vec![0xff; 7]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(col.decode_errors().len(), 1);

    col.set_mode(CollectorMode::Status(500));
    let r = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 500);

    col.set_mode(CollectorMode::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        client.post(&url).body(body.clone()).send(),
    )
    .await;
    assert!(hung.is_err(), "hang mode answered: {hung:?}");
    assert_eq!(col.request_count(), 5, "the hung request is recorded");

    assert_eq!(
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some(TraceParent {
            version: "00".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            flags: "01".into(),
        })
    );
    assert_eq!(
        TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        None
    );
}
