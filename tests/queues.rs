//! Routes with `queue = "NAME"` (SPEC §12, issue 16) through a real gateway and
//! real brokers: a `redis-server` and a `nats-server -js` started by the tests
//! on free ports, read back with the `redis` and `async-nats` clients.
//!
//! What users rely on: the message carries every field, byte for byte; `202`
//! only after the broker acknowledged it; no acknowledged message lost, under
//! load, while the broker is killed, paused, the gateway reloaded, shut down or
//! upgraded; `503` with `Retry-After` otherwise; plugins first.
//! Needs `redis-server` and `nats-server` (`.ci/run` installs both).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::brokers::{field, field_str, NatsServer, RedisServer};
use common::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Brokers
// ---------------------------------------------------------------------------------------------

/// The value of NATS header `name` (case-insensitive), the first of several.
fn nats_header(h: &async_nats::HeaderMap, name: &str) -> Option<String> {
    h.iter()
        .find(|(k, _)| AsRef::<str>::as_ref(*k).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str().to_string())
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The 202's `{"id", "queue"}`, checked: application/json, exactly those two keys.
    #[track_caller]
    fn accepted(&self, queue: &str) -> String {
        assert_eq!(self.status, 202, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        let obj = v.as_object().expect("202 body is an object");
        assert_eq!(obj.len(), 2, "202 body has exactly id and queue: {v}");
        assert_eq!(v["queue"], queue, "{v}");
        let id = v["id"].as_str().expect("id is a string");
        assert!(!id.is_empty(), "{v}");
        id.to_string()
    }

    /// A 503 problem with `Retry-After`.
    #[track_caller]
    fn unavailable(&self, what: &str) {
        assert_eq!(self.status, 503, "{what}: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        assert_eq!(self.json()["status"], 503, "{what}");
        assert!(
            self.header("retry-after").is_some_and(|v| !v.is_empty()),
            "{what}: no Retry-After: {:?}",
            self.headers
        );
    }
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = c.post(url).body(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.expect("body").to_vec(),
    }
}

/// A body with a NUL, invalid UTF-8 and a CRLF, unique per `tag`.
fn binary_body(tag: &str) -> Vec<u8> {
    let mut b = format!("{tag}:").into_bytes();
    b.extend_from_slice(b"\x00\xff\xfe\xc3\x28\r\n\x80 end");
    b
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const SW_KEY: &[u8] = b"queue-standard-webhooks-key-32by";

fn sw_secret() -> String {
    format!("whsec_{}", B64.encode(SW_KEY))
}

fn sw_signature(id: &str, t: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SW_KEY).unwrap();
    m.update(id.as_bytes());
    m.update(b".");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1,{}", B64.encode(m.finalize().into_bytes()))
}

fn rfc3339_within(s: &str, before: i64, after: i64) {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("received_at {s:?} is not RFC 3339: {e}"));
    let secs = t.unix_timestamp();
    assert!(
        (before - 1..=after + 1).contains(&secs),
        "received_at {s} not within the request ({before}..{after})"
    );
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// What one request of the load got.
#[derive(Debug)]
enum Outcome {
    /// 202: the id of the body.
    Accepted(String),
    /// 503 with Retry-After.
    Unavailable,
    /// Anything else (status and body).
    Other(u16, String),
    /// No answer (connection refused/reset).
    NoAnswer(String),
}

#[derive(Debug)]
struct Sent {
    body: Vec<u8>,
    outcome: Outcome,
    took: Duration,
}

/// Concurrent clients sending sequential POSTs with unique bodies until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    unavailable: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
}

impl Load {
    fn start(url: String, queue: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(45);
        let tasks = (0..clients)
            .map(|t| {
                let (url, queue) = (url.clone(), queue.to_string());
                let (stop, accepted, unavailable, failed) = (
                    stop.clone(),
                    accepted.clone(),
                    unavailable.clone(),
                    failed.clone(),
                );
                tokio::spawn(async move {
                    let c = http_client();
                    let mut sent = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        n += 1;
                        let body = binary_body(&format!("client{t}-req{n}"));
                        let start = Instant::now();
                        let outcome = match c.post(&url).body(body.clone()).send().await {
                            Err(e) => Outcome::NoAnswer(format!("{e:?}")),
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let retry = r.headers().contains_key("retry-after");
                                match r.bytes().await {
                                    Err(e) => Outcome::NoAnswer(format!("body: {e:?}")),
                                    Ok(b) => match status {
                                        202 => {
                                            let v: serde_json::Value = serde_json::from_slice(&b)
                                                .unwrap_or(serde_json::Value::Null);
                                            match (v["id"].as_str(), v["queue"].as_str()) {
                                                (Some(id), Some(q)) if q == queue => {
                                                    Outcome::Accepted(id.to_string())
                                                }
                                                _ => Outcome::Other(
                                                    202,
                                                    String::from_utf8_lossy(&b).into_owned(),
                                                ),
                                            }
                                        }
                                        503 if retry => Outcome::Unavailable,
                                        s => Outcome::Other(
                                            s,
                                            String::from_utf8_lossy(&b).into_owned(),
                                        ),
                                    },
                                }
                            }
                        };
                        let counter = match outcome {
                            Outcome::Accepted(_) => &accepted,
                            Outcome::Unavailable => &unavailable,
                            _ => &failed,
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        let no_answer = matches!(outcome, Outcome::NoAnswer(_));
                        sent.push(Sent {
                            body,
                            outcome,
                            took: start.elapsed(),
                        });
                        if no_answer {
                            // The gateway is gone (shutdown): do not spin.
                            tokio::time::sleep(POLL_INTERVAL).await;
                        }
                    }
                    sent
                })
            })
            .collect();
        Load {
            stop,
            accepted,
            unavailable,
            failed,
            tasks,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::SeqCst)
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests were accepted than now.
    async fn wait_accepted(&self, n: usize, what: &str) {
        let target = self.accepted() + n;
        wait_until_msg(WAIT, what, || async { self.accepted() >= target }).await;
    }

    /// Waits until `n` more requests were answered 503 than now.
    async fn wait_unavailable(&self, n: usize, what: &str) {
        let target = self.unavailable() + n;
        wait_until_msg(WAIT, what, || async { self.unavailable() >= target }).await;
    }

    async fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("load task"));
        }
        all
    }
}

/// Every request answered 202 is in `stream` (message id -> body) with the
/// body that was sent; every other answer was a 503 with Retry-After (or no
/// answer at all, when `no_answer_ok`); every message in the stream is a body
/// some client sent. Returns (accepted, unavailable, no answer).
#[track_caller]
fn assert_no_loss(
    what: &str,
    sent: &[Sent],
    stream: &HashMap<String, Vec<u8>>,
    no_answer_ok: bool,
) -> (usize, usize, usize) {
    let (mut ok, mut unavailable, mut none) = (0, 0, 0);
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    for s in sent {
        match &s.outcome {
            Outcome::Accepted(id) => {
                ok += 1;
                if !ids.insert(id.clone()) {
                    problems.push(format!("id {id} answered twice"));
                }
                match stream.get(id) {
                    None => problems.push(format!(
                        "LOST: 202 {id} for {:?} is not in the stream",
                        String::from_utf8_lossy(&s.body)
                    )),
                    Some(b) if *b != s.body => problems.push(format!(
                        "202 {id} for {:?} holds another body: {:?}",
                        String::from_utf8_lossy(&s.body),
                        String::from_utf8_lossy(b)
                    )),
                    Some(_) => {}
                }
            }
            Outcome::Unavailable => unavailable += 1,
            Outcome::NoAnswer(e) => {
                none += 1;
                if !no_answer_ok {
                    problems.push(format!("no answer after {:?}: {e}", s.took));
                }
            }
            Outcome::Other(status, body) => {
                problems.push(format!("status {status} (not 202/503+Retry-After): {body}"))
            }
        }
    }
    let bodies: HashSet<&[u8]> = sent.iter().map(|s| s.body.as_slice()).collect();
    for (id, b) in stream {
        if !bodies.contains(b.as_slice()) {
            problems.push(format!(
                "message {id} holds a body nobody sent: {:?}",
                String::from_utf8_lossy(b)
            ));
        }
    }
    problems.truncate(20);
    assert!(
        problems.is_empty(),
        "{what}: {ok} accepted, {unavailable} 503, {none} no answer, {} in the stream:\n{}",
        stream.len(),
        problems.join("\n")
    );
    assert!(ok > 0, "{what}: nothing was accepted");
    eprintln!(
        "{what}: {} requests: {ok} accepted, {unavailable} 503, {none} no answer; {} messages in the stream",
        sent.len(),
        stream.len()
    );
    (ok, unavailable, none)
}

async fn redis_stream_bodies(redis: &RedisServer, key: &str) -> HashMap<String, Vec<u8>> {
    redis
        .xrange(key)
        .await
        .into_iter()
        .map(|(id, f)| {
            let body = field(&f, "body").to_vec();
            (id, body)
        })
        .collect()
}

async fn nats_stream_bodies(nats: &NatsServer, stream: &str) -> HashMap<String, Vec<u8>> {
    nats.messages(stream)
        .await
        .into_iter()
        .map(|m| (format!("{stream}:{}", m.sequence), m.payload.to_vec()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

const API_KEY: &str = "queue-test-key-7f3a";

fn redis_config(redis: &str, timeout: &str, max_in_flight: usize, extra: &str) -> String {
    let digest = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    let secret = sw_secret();
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
grace_period = "5s"
plugins = ["rid"]

[plugins.rid]
type = "request_id"

[plugins.keys]
type = "api_key"
keys = [{{ consumer = "acme", key_sha256 = "{digest}" }}]

[plugins.idem]
type = "idempotency"

[plugins.sw]
type = "webhook_signature"
scheme = "standard_webhooks"
secrets = ["{secret}"]

[queues.events]
kind = "redis_stream"
url = "{redis}"
stream = "tollgate:events"
max_len = 1000000
timeout = "{timeout}"
max_in_flight = {max_in_flight}
headers = ["content-type", "x-event"]

[[routes]]
name = "events"
path = "/events"
methods = ["POST"]
queue = "events"

[[routes]]
name = "private"
path = "/private"
methods = ["POST"]
queue = "events"
plugins = ["keys", "idem"]

[[routes]]
name = "hooks"
path = "=/hooks"
methods = ["POST"]
queue = "events"
plugins = ["sw"]
{extra}
"#
    )
}

fn nats_config(nats: &str, timeout: &str, extra: &str) -> String {
    let secret = sw_secret();
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
grace_period = "5s"

[plugins.sw_a]
type = "webhook_signature"
scheme = "standard_webhooks"
secrets = ["{secret}"]
tolerance = "5m"

[plugins.sw_b]
type = "webhook_signature"
scheme = "standard_webhooks"
secrets = ["{secret}"]
tolerance = "4m"

[queues.jet]
kind = "nats"
url = "{nats}"
stream = "events.in"
timeout = "{timeout}"
headers = ["content-type", "webhook-id", "x-event"]

[queues.orphan]
kind = "nats"
url = "{nats}"
stream = "nobody.listens"
timeout = "{timeout}"

[[routes]]
name = "plain"
path = "/plain"
methods = ["POST"]
queue = "jet"

[[routes]]
name = "hooks-a"
path = "=/hooks/a"
methods = ["POST"]
queue = "jet"
plugins = ["sw_a"]

[[routes]]
name = "hooks-b"
path = "=/hooks/b"
methods = ["POST"]
queue = "jet"
plugins = ["sw_b"]

[[routes]]
name = "orphan"
path = "/orphan"
methods = ["POST"]
queue = "orphan"
{extra}
"#
    )
}

const STREAM_KEY: &str = "tollgate:events";
const JS_STREAM: &str = "EVENTS";

async fn publish_total(gw: &Gateway, queue: &str, result: &str) -> f64 {
    gw.metric(&format!(
        r#"tollgate_queue_publish_total{{queue="{queue}",result="{result}"}}"#
    ))
    .await
    .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// 1, 4: redis_stream message, plugins first, idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_message_has_every_field_and_plugins_run_first() {
    let redis = RedisServer::start_aof().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "2s", 100, "")).await;
    let c = gw.client();
    let body = binary_body("first");

    let before = now_secs();
    let a = post(
        &c,
        &gw.url("/events/a/./b//c/../d?x=1&y=two%20words"),
        &[
            ("x-request-id", "req-one"),
            ("content-type", "application/octet-stream"),
            ("x-event", "ping"),
            ("x-other", "not copied"),
        ],
        body.clone(),
    )
    .await;
    let after = now_secs();
    let id = a.accepted("events");
    assert_eq!(a.header("x-request-id"), Some("req-one"));

    let entries = redis.xrange(STREAM_KEY).await;
    assert_eq!(entries.len(), 1, "exactly one entry: {entries:?}");
    let (entry_id, f) = &entries[0];
    assert_eq!(*entry_id, id, "the 202 names the stream entry");
    assert_eq!(field_str(f, "id"), "req-one", "the request id");
    rfc3339_within(&field_str(f, "received_at"), before, after);
    assert_eq!(field_str(f, "route"), "events");
    assert_eq!(field_str(f, "consumer"), "", "no consumer without auth");
    assert_eq!(field_str(f, "method"), "POST");
    assert_eq!(field_str(f, "path"), "/events/a/b/d", "the normalised path");
    assert_eq!(field_str(f, "query"), "x=1&y=two%20words");
    let headers: serde_json::Value =
        serde_json::from_slice(field(f, "headers")).expect("headers is JSON");
    assert_eq!(
        headers,
        serde_json::json!({"content-type": "application/octet-stream", "x-event": "ping"}),
        "only the configured headers"
    );
    assert_eq!(field(f, "body"), body.as_slice(), "the body byte for byte");
    let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    for want in [
        "id",
        "received_at",
        "route",
        "consumer",
        "method",
        "path",
        "query",
        "headers",
        "body",
    ] {
        assert_eq!(
            names.iter().filter(|n| **n == want).count(),
            1,
            "{want} once in {names:?}"
        );
    }

    // Without X-Request-Id: the id the gateway made (and returned).
    let a = post(&c, &gw.url("/events"), &[], "second").await;
    let id2 = a.accepted("events");
    let made = a.header("x-request-id").expect("request id").to_string();
    let entries = redis.xrange(STREAM_KEY).await;
    let (_, f) = entries
        .iter()
        .find(|(i, _)| *i == id2)
        .expect("second entry");
    assert_eq!(field_str(f, "id"), made);
    assert_eq!(field_str(f, "query"), "");
    assert_eq!(field_str(f, "headers"), "{}");
    assert_eq!(field(f, "body"), b"second");

    // Plugins first: no key, 401 and nothing published.
    let a = post(&c, &gw.url("/private"), &[("idempotency-key", "k1")], "x").await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(
        redis.xlen(STREAM_KEY).await,
        2,
        "a refused request is not published"
    );

    // With the key: the consumer; a retried Idempotency-Key gets the stored 202.
    let h = [("x-api-key", API_KEY), ("idempotency-key", "k1")];
    let first = post(&c, &gw.url("/private"), &h, "charge 1").await;
    let pid = first.accepted("events");
    assert_eq!(first.header("idempotent-replayed"), None);
    let entries = redis.xrange(STREAM_KEY).await;
    let (_, f) = entries
        .iter()
        .find(|(i, _)| *i == pid)
        .expect("private entry");
    assert_eq!(field_str(f, "consumer"), "acme");
    assert_eq!(field_str(f, "route"), "private");
    let again = post(&c, &gw.url("/private"), &h, "charge 1").await;
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.body, first.body, "the stored 202, same body");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(
        redis.xlen(STREAM_KEY).await,
        3,
        "a replayed key publishes nothing"
    );

    assert_eq!(publish_total(&gw, "events", "ok").await, 3.0);
    assert_eq!(
        gw.metric_sum(r#"tollgate_queue_publish_duration_seconds_count{queue="events"}"#)
            .await,
        3.0
    );
}

/// Replay protection on a queue route: a verified webhook that was published
/// (202) is remembered, and the same webhook again is refused with 409, so a
/// redis stream (which has no broker-side de-duplication) holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_webhook_replay_is_refused() {
    let redis = RedisServer::start_aof().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "2s", 100, "")).await;
    let c = gw.client();
    let body = br#"{"type":"invoice.paid"}"#.to_vec();
    let t = now_secs();
    let sig = sw_signature("msg_replayed", t, &body);
    let ts = t.to_string();
    let wh = [
        ("webhook-id", "msg_replayed"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    // A bad signature: 401, nothing published.
    let bad = [wh[0], wh[1], ("webhook-signature", "v1,AAAA")];
    let a = post(&c, &gw.url("/hooks"), &bad, body.clone()).await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(redis.xlen(STREAM_KEY).await, 0);

    post(&c, &gw.url("/hooks"), &wh, body.clone())
        .await
        .accepted("events");
    let again = post(&c, &gw.url("/hooks"), &wh, body.clone()).await;
    let len = redis.xlen(STREAM_KEY).await;
    assert_eq!(
        (again.status, len),
        (409, 1),
        "the same webhook again must be refused as a replay and not published twice: {}",
        again.text()
    );
}

/// A 503 passes no response hook: the idempotency key is released, and the
/// client's retry with the same key is published (once) when the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answered_503_is_published_on_retry() {
    let mut redis = RedisServer::start_aof().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "500ms", 100, "")).await;
    let c = gw.client();
    let h = [("x-api-key", API_KEY), ("idempotency-key", "retry-me")];
    post(&c, &gw.url("/private"), &[("x-api-key", API_KEY)], "warm")
        .await
        .accepted("events");
    redis.kill().await;
    let a = post(&c, &gw.url("/private"), &h, "pay 5").await;
    a.unavailable("broker down");
    redis.restart().await;
    // The connection comes back by itself: poll with a request that has no key.
    wait_until_msg(WAIT, "publishing again after the restart", || async {
        post(&c, &gw.url("/private"), &[("x-api-key", API_KEY)], "probe")
            .await
            .status
            == 202
    })
    .await;
    let before = redis.xlen(STREAM_KEY).await;
    let first = post(&c, &gw.url("/private"), &h, "pay 5").await;
    let id = first.accepted("events");
    assert_eq!(
        first.header("idempotent-replayed"),
        None,
        "not a replay of the 503"
    );
    let again = post(&c, &gw.url("/private"), &h, "pay 5").await;
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(redis.xlen(STREAM_KEY).await, before + 1, "published once");
    let entries = redis.xrange(STREAM_KEY).await;
    let (_, f) = entries.iter().find(|(i, _)| *i == id).expect("entry");
    assert_eq!(field(f, "body"), b"pay 5");
}

/// A queue route replays nothing upstream: a plugin that reads the body
/// (`idempotency`) takes one over 64 KiB (Pingora's retry buffer bounds only
/// proxied routes), and the message carries it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_published_through_a_body_reading_plugin() {
    let redis = RedisServer::start().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "2s", 100, "")).await;
    let c = gw.client();
    let body: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let h = [("x-api-key", API_KEY), ("idempotency-key", "big-one")];
    let a = post(&c, &gw.url("/private"), &h, body.clone()).await;
    let id = a.accepted("events");
    let entries = redis.xrange(STREAM_KEY).await;
    let (_, f) = entries.iter().find(|(i, _)| *i == id).expect("entry");
    assert_eq!(field(f, "body"), &body[..], "the whole body, byte for byte");
    let again = post(&c, &gw.url("/private"), &h, body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(redis.xlen(STREAM_KEY).await, 1, "published once");
}

/// A message over the NATS server's `max_payload` can never be taken: `413`,
/// not a `503` the sender would retry for ever; counted as `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_nats_max_payload_is_413() {
    let nats = NatsServer::start_with_args(|store| {
        let conf = store.join("small.conf");
        std::fs::write(&conf, "max_payload: 4096\n").expect("nats config");
        vec![
            "-c".into(),
            conf.display().to_string(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
        ]
    })
    .await;
    nats.create_stream(JS_STREAM, "events.>").await;
    let gw = Gateway::start(&nats_config(&nats.url(), "2s", "")).await;
    let c = gw.client();
    post(&c, &gw.url("/plain"), &[], "small")
        .await
        .accepted("jet");
    let big = vec![b'x'; 16 * 1024];
    let a = post(&c, &gw.url("/plain"), &[], big).await;
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(
        a.header("retry-after"),
        None,
        "sending it again cannot help"
    );
    assert_eq!(publish_total(&gw, "jet", "error").await, 1.0);
    assert_eq!(publish_total(&gw, "jet", "ok").await, 1.0);
}

/// A changed `[queues.X]` table takes effect on reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_queue_table_takes_effect_on_reload() {
    let redis = RedisServer::start_aof().await;
    let cfg = redis_config(&redis.url(), "2s", 100, "");
    let gw = Gateway::start(&cfg).await;
    let c = gw.client();
    post(&c, &gw.url("/events"), &[], "before")
        .await
        .accepted("events");
    gw.write_config(&cfg.replace(
        "stream = \"tollgate:events\"",
        "stream = \"tollgate:events:v2\"",
    ));
    let r = gw.admin_post("/reload", "").await;
    assert!(r.status().is_success(), "POST /reload: {}", r.status());
    wait_until_msg(WAIT, "the new stream key to be used", || async {
        post(&c, &gw.url("/events"), &[], "after").await.status == 202
            && redis.xlen("tollgate:events:v2").await > 0
    })
    .await;
    let v2 = redis.xrange("tollgate:events:v2").await;
    assert!(v2.iter().all(|(_, f)| field(f, "body") == b"after"));
    let v1 = redis.xrange(STREAM_KEY).await;
    assert!(v1.iter().any(|(_, f)| field(f, "body") == b"before"));
}

// ---------------------------------------------------------------------------------------------
// 2, 3: nats message, webhook id, de-duplication, a subject without a stream
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_message_headers_webhook_id_and_dedup() {
    let nats = NatsServer::start().await;
    nats.create_stream(JS_STREAM, "events.in").await;
    let gw = Gateway::start(&nats_config(&nats.url(), "2s", "")).await;
    let c = gw.client();

    let body = binary_body("nats-first");
    let before = now_secs();
    let a = post(
        &c,
        &gw.url("/plain//x/./y?q=1&r"),
        &[
            ("content-type", "application/octet-stream"),
            ("x-event", "one"),
            ("x-other", "not copied"),
        ],
        body.clone(),
    )
    .await;
    let after = now_secs();
    assert_eq!(a.accepted("jet"), format!("{JS_STREAM}:1"));

    let msgs = nats.messages(JS_STREAM).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.subject.as_str(), "events.in");
    assert_eq!(
        m.payload.as_ref(),
        body.as_slice(),
        "the body byte for byte"
    );
    let h = &m.headers;
    let get = |n: &str| nats_header(h, n);
    let rid = get("Tollgate-Id").expect("Tollgate-Id");
    assert!(!rid.is_empty());
    rfc3339_within(
        &get("Tollgate-Received-At").expect("received at"),
        before,
        after,
    );
    assert_eq!(get("Tollgate-Route").as_deref(), Some("plain"));
    assert_eq!(
        get("Tollgate-Consumer").as_deref(),
        Some(""),
        "Tollgate-Consumer present and empty without auth: {h:?}"
    );
    assert_eq!(get("Tollgate-Method").as_deref(), Some("POST"));
    assert_eq!(get("Tollgate-Path").as_deref(), Some("/plain/x/y"));
    assert_eq!(get("Tollgate-Query").as_deref(), Some("q=1&r"));
    assert_eq!(
        get("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(get("x-event").as_deref(), Some("one"));
    assert_eq!(get("x-other"), None, "only configured headers: {h:?}");
    assert_eq!(get("webhook-id"), None);
    assert_eq!(
        get("Nats-Msg-Id"),
        Some(rid.clone()),
        "no webhook: the request id"
    );

    // A second plain request: another request id, another message.
    let a = post(&c, &gw.url("/plain"), &[], "two").await;
    assert_eq!(a.accepted("jet"), format!("{JS_STREAM}:2"));
    let msgs = nats.messages(JS_STREAM).await;
    let rid2 = nats_header(&msgs[1].headers, "Tollgate-Id").unwrap();
    assert_ne!(rid2, rid, "each request has its own id");

    // A verified Standard Webhook: Nats-Msg-Id is its webhook-id.
    let wbody = br#"{"type":"invoice.paid","n":1}"#.to_vec();
    let t = now_secs();
    let sig = sw_signature("msg_2Lq0Aa", t, &wbody);
    let ts = t.to_string();
    let wh = [
        ("webhook-id", "msg_2Lq0Aa"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
        ("content-type", "application/json"),
    ];
    let a = post(&c, &gw.url("/hooks/a"), &wh, wbody.clone()).await;
    assert_eq!(a.accepted("jet"), format!("{JS_STREAM}:3"));
    let msgs = nats.messages(JS_STREAM).await;
    let m = &msgs[2];
    assert_eq!(m.payload.as_ref(), wbody.as_slice());
    assert_eq!(
        nats_header(&m.headers, "Nats-Msg-Id").as_deref(),
        Some("msg_2Lq0Aa")
    );
    assert_eq!(
        nats_header(&m.headers, "webhook-id").as_deref(),
        Some("msg_2Lq0Aa")
    );
    assert_eq!(
        nats_header(&m.headers, "Tollgate-Route").as_deref(),
        Some("hooks-a")
    );
    assert_ne!(
        nats_header(&m.headers, "Tollgate-Id").as_deref(),
        Some("msg_2Lq0Aa"),
        "Tollgate-Id stays the request id"
    );

    // The same webhook through another verifier (its own replay memory): published
    // again, and JetStream drops the duplicate by Nats-Msg-Id; the 202 names the first
    // message.
    let a = post(&c, &gw.url("/hooks/b"), &wh, wbody.clone()).await;
    assert_eq!(
        a.accepted("jet"),
        format!("{JS_STREAM}:3"),
        "the duplicate is acknowledged as the message already stored"
    );
    assert_eq!(nats.messages(JS_STREAM).await.len(), 3, "de-duplicated");
    assert_eq!(publish_total(&gw, "jet", "ok").await, 4.0);

    // 3: a subject no stream captures: 503, counted as an error, the reason logged.
    let a = post(&c, &gw.url("/orphan"), &[], "lost?").await;
    a.unavailable("no stream for the subject");
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(publish_total(&gw, "orphan", "error").await, 1.0);
    assert_eq!(publish_total(&gw, "orphan", "ok").await, 0.0);
    gw.wait_for_log("nobody.listens", WAIT).await;

    // The same webhook again on the route that took it: replay protection (409),
    // nothing published.
    let a = post(&c, &gw.url("/hooks/a"), &wh, wbody.clone()).await;
    assert_eq!(
        a.status,
        409,
        "a replayed webhook on a queue route must be refused: {}",
        a.text()
    );
    assert_eq!(
        publish_total(&gw, "jet", "ok").await,
        4.0,
        "the replay was published"
    );
}

// ---------------------------------------------------------------------------------------------
// 5: no acknowledged message lost, no 202 without an acknowledgement
// ---------------------------------------------------------------------------------------------

const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let mut redis = RedisServer::start_aof().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "500ms", 1000, "")).await;
    let load = Load::start(gw.url("/events"), "events", CLIENTS);
    load.wait_accepted(50, "load before the kill").await;
    redis.kill().await;
    load.wait_unavailable(20, "503s while redis is down").await;
    let during = load.accepted();
    redis.restart().await;
    load.wait_accepted(100, "202s after the restart").await;
    let sent = load.finish().await;
    let stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    let (ok, unavailable, _) = assert_no_loss("redis kill/restart", &sent, &stream, false);
    assert!(ok > during);
    let failed =
        publish_total(&gw, "events", "error").await + publish_total(&gw, "events", "timeout").await;
    assert_eq!(failed, unavailable as f64, "every 503 counted");
    // Failures are logged with rate limiting (one line per 10 s per queue), without
    // the message.
    let logs = gw.logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("queue publish failed"))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} failure lines for {unavailable} failures:\n{logs}"
    );
    assert!(!logs.contains("-req"), "a message body was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_past_timeout_under_load() {
    let redis = RedisServer::start_aof().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "500ms", 1000, "")).await;
    let load = Load::start(gw.url("/events"), "events", CLIENTS);
    load.wait_accepted(50, "load before the pause").await;
    redis.pause();
    let paused_at = Instant::now();
    load.wait_unavailable(2 * CLIENTS, "503s while redis is paused")
        .await;
    assert!(
        paused_at.elapsed() < Duration::from_secs(5),
        "503s came only after {:?}",
        paused_at.elapsed()
    );
    redis.resume();
    load.wait_accepted(100, "202s after SIGCONT").await;
    let sent = load.finish().await;
    let stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    assert_no_loss("redis SIGSTOP/SIGCONT", &sent, &stream, false);
    let slowest = sent.iter().map(|s| s.took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(500) + Duration::from_secs(2),
        "a request waited {slowest:?}, past the 500ms publish timeout"
    );
    assert!(publish_total(&gw, "events", "timeout").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reload_under_load_keeps_the_connection() {
    let redis = RedisServer::start_aof().await;
    let cfg = redis_config(&redis.url(), "500ms", 1000, "");
    let gw = Gateway::start(&cfg).await;
    let load = Load::start(gw.url("/events"), "events", CLIENTS);
    load.wait_accepted(50, "load before the reload").await;
    let conns = redis.clients_whose_last_command_was("xadd").await;
    assert!(!conns.is_empty());

    let extra = "\n[[routes]]\nname = \"other\"\npath = \"/other\"\nqueue = \"events\"\n";
    gw.write_config(&redis_config(&redis.url(), "500ms", 1000, extra));
    let r = gw.admin_post("/reload", "").await;
    assert!(r.status().is_success(), "POST /reload: {}", r.status());
    wait_until_msg(WAIT, "the reload to be applied", || async {
        gw.metric(r#"tollgate_config_reloads_total{result="success"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    gw.signal(SIGHUP);
    load.wait_accepted(100, "202s after the reload").await;
    let a = post(&gw.client(), &gw.url("/other"), &[], "via other").await;
    let other_id = a.accepted("events");
    let sent = load.finish().await;
    assert_eq!(
        redis.clients_whose_last_command_was("xadd").await,
        conns,
        "an unchanged [queues.events] keeps its connection across reloads"
    );
    let mut stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    assert_eq!(
        stream.remove(&other_id).as_deref(),
        Some(&b"via other"[..]),
        "the new route publishes"
    );
    let (_, unavailable, _) = assert_no_loss("redis reload", &sent, &stream, false);
    assert_eq!(unavailable, 0, "a reload makes no request fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_graceful_shutdown_under_load() {
    let redis = RedisServer::start_aof().await;
    let mut gw = Gateway::start(&redis_config(&redis.url(), "500ms", 1000, "")).await;
    let load = Load::start(gw.url("/events"), "events", CLIENTS);
    load.wait_accepted(100, "load before SIGTERM").await;
    gw.signal(SIGTERM);
    let status = gw.wait_exit(WAIT).await.expect("exits after SIGTERM");
    assert!(status.success(), "exit {status}; logs:\n{}", gw.logs());
    load.wait_until_failed(1).await;
    let sent = load.finish().await;
    let stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    assert_no_loss("redis graceful shutdown", &sent, &stream, true);
}

impl Load {
    /// Waits until `n` requests got no answer (the gateway is gone).
    async fn wait_until_failed(&self, n: usize) {
        wait_until_msg(
            WAIT,
            "requests refused once the gateway is gone",
            || async { self.failed() >= n },
        )
        .await;
    }
}

/// A publish in flight when SIGTERM arrives is answered, not cut: the broker is
/// paused with the publish waiting (its `XADD` unread in the paused broker's
/// socket), the gateway told to stop, and once it has stopped accepting, the
/// broker resumes: the waiting request gets its 202, and the message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_in_flight_at_sigterm_is_answered() {
    let redis = RedisServer::start_aof().await;
    let mut gw = Gateway::start(&redis_config(&redis.url(), "4s", 100, "")).await;
    let c = gw.client();
    post(&c, &gw.url("/events"), &[], "warm")
        .await
        .accepted("events");
    redis.pause();
    assert_eq!(unread_by(redis.port()), 0);
    let url = gw.url("/events");
    let held =
        tokio::spawn(async move { post(&http_client(), &url, &[], "in flight at SIGTERM").await });
    let port = redis.port();
    wait_until_msg(
        WAIT,
        "the XADD to wait in the paused broker",
        || async move { unread_by(port) > 0 },
    )
    .await;
    gw.signal(SIGTERM);
    let addr = gw.addr();
    wait_until_msg(WAIT, "the gateway to stop accepting", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    redis.resume();
    let a = held.await.expect("held request");
    let id = a.accepted("events");
    let status = gw.wait_exit(WAIT).await.expect("exits after SIGTERM");
    assert!(status.success(), "exit {status}; logs:\n{}", gw.logs());
    let stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    assert_eq!(
        stream.get(&id).map(Vec::as_slice),
        Some(&b"in flight at SIGTERM"[..])
    );
}

/// Bytes received but not read by the listener on 127.0.0.1:`port` (the
/// `rx_queue` of its established sockets in /proc/net/tcp).
fn unread_by(port: u16) -> u64 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"01"))
                .then(|| f.get(4).and_then(|q| q.split_once(':')))
                .flatten()
                .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
        })
        .sum()
}

/// The upgrade socket of a config file (see tests/upgrade.rs).
fn upgrade_sock(config: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(config).expect("canonical config path");
    let h = hex::encode(&Sha256::digest(abs.to_string_lossy().as_bytes())[..6]);
    PathBuf::from(format!("/tmp/tollgate-{h}.sock"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_upgrade_under_load() {
    let redis = RedisServer::start_aof().await;
    let cfg = redis_config(&redis.url(), "500ms", 1000, "");
    let sent = upgrade_mid_load(&cfg, "/events", "events").await;
    let stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    let (_, _, none) = assert_no_loss("redis upgrade", &sent, &stream, true);
    assert_eq!(none, 0, "an upgrade refuses no request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_upgrade_under_load() {
    let nats = NatsServer::start().await;
    nats.create_stream(JS_STREAM, "events.in").await;
    let cfg = nats_config(&nats.url(), "500ms", "");
    let sent = upgrade_mid_load(&cfg, "/plain", "jet").await;
    let stream = nats_stream_bodies(&nats, JS_STREAM).await;
    let (_, _, none) = assert_no_loss("nats upgrade", &sent, &stream, true);
    assert_eq!(none, 0, "an upgrade refuses no request");
}

/// Gateway A serves `cfg` under load on `path`; B takes its sockets over
/// (`run --upgrade`) and A leaves (`SIGQUIT`); the load goes on against B.
async fn upgrade_mid_load(cfg: &str, path: &str, queue: &str) -> Vec<Sent> {
    let mut a = Gateway::start(cfg).await;
    let sock = upgrade_sock(a.config_path());
    let load = Load::start(a.url(path), queue, CLIENTS);
    load.wait_accepted(50, "load against A").await;

    let logs = tempfile::Builder::new()
        .prefix("tollgate-upgrade-")
        .tempdir()
        .expect("tempdir");
    let mut b = ChildKill(
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("run")
            .arg("-c")
            .arg(a.config_path())
            .arg("--upgrade")
            .current_dir(a.dir())
            .env("TOLLGATE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(logs.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn tollgate --upgrade"),
    );
    wait_until_msg(WAIT, "B to listen on the upgrade socket", || async {
        sock.exists()
    })
    .await;
    a.signal(SIGQUIT);
    let status = a.wait_exit(Duration::from_secs(20)).await.expect("A exits");
    assert!(status.success(), "A exited {status}:\n{}", a.logs());
    assert!(b.0.try_wait().unwrap().is_none(), "B died");
    load.wait_accepted(100, "B to accept").await;
    load.finish().await
}

struct ChildKill(Child);

impl Drop for ChildKill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_under_load() {
    let mut nats = NatsServer::start().await;
    nats.create_stream(JS_STREAM, "events.in").await;
    let gw = Gateway::start(&nats_config(&nats.url(), "500ms", "")).await;
    let load = Load::start(gw.url("/plain"), "jet", CLIENTS);
    load.wait_accepted(50, "load before the kill").await;
    nats.kill().await;
    load.wait_unavailable(20, "503s while nats is down").await;
    nats.restart().await;
    load.wait_accepted(100, "202s after the restart").await;
    let sent = load.finish().await;
    let stream = nats_stream_bodies(&nats, JS_STREAM).await;
    assert_no_loss("nats kill/restart", &sent, &stream, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_paused_past_timeout_under_load() {
    let nats = NatsServer::start().await;
    nats.create_stream(JS_STREAM, "events.in").await;
    let gw = Gateway::start(&nats_config(&nats.url(), "500ms", "")).await;
    let load = Load::start(gw.url("/plain"), "jet", CLIENTS);
    load.wait_accepted(50, "load before the pause").await;
    nats.pause();
    load.wait_unavailable(2 * CLIENTS, "503s while nats is paused")
        .await;
    nats.resume();
    load.wait_accepted(100, "202s after SIGCONT").await;
    let sent = load.finish().await;
    let stream = nats_stream_bodies(&nats, JS_STREAM).await;
    assert_no_loss("nats SIGSTOP/SIGCONT", &sent, &stream, false);
    let slowest = sent.iter().map(|s| s.took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(500) + Duration::from_secs(2),
        "a request waited {slowest:?}, past the 500ms publish timeout"
    );
    assert!(publish_total(&gw, "jet", "timeout").await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_reload_under_load_keeps_the_connection() {
    let nats = NatsServer::start().await;
    nats.create_stream(JS_STREAM, "events.in").await;
    let gw = Gateway::start(&nats_config(&nats.url(), "500ms", "")).await;
    let load = Load::start(gw.url("/plain"), "jet", CLIENTS);
    load.wait_accepted(50, "load before the reload").await;
    let conns = nats.connections_named("tollgate").await;
    assert_eq!(
        conns.len(),
        1,
        "one connection for the one queue used: {conns:?}"
    );
    let extra = "\n[[routes]]\nname = \"other\"\npath = \"/other\"\nqueue = \"jet\"\n";
    gw.write_config(&nats_config(&nats.url(), "500ms", extra));
    let r = gw.admin_post("/reload", "").await;
    assert!(r.status().is_success(), "POST /reload: {}", r.status());
    wait_until_msg(WAIT, "the reload to be applied", || async {
        gw.metric(r#"tollgate_config_reloads_total{result="success"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    load.wait_accepted(100, "202s after the reload").await;
    let sent = load.finish().await;
    assert_eq!(
        nats.connections_named("tollgate").await,
        conns,
        "an unchanged [queues.jet] keeps its connection across reloads"
    );
    let stream = nats_stream_bodies(&nats, JS_STREAM).await;
    let (_, unavailable, _) = assert_no_loss("nats reload", &sent, &stream, false);
    assert_eq!(unavailable, 0, "a reload makes no request fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_graceful_shutdown_under_load() {
    let nats = NatsServer::start().await;
    nats.create_stream(JS_STREAM, "events.in").await;
    let mut gw = Gateway::start(&nats_config(&nats.url(), "500ms", "")).await;
    let load = Load::start(gw.url("/plain"), "jet", CLIENTS);
    load.wait_accepted(100, "load before SIGTERM").await;
    gw.signal(SIGTERM);
    let status = gw.wait_exit(WAIT).await.expect("exits after SIGTERM");
    assert!(status.success(), "exit {status}; logs:\n{}", gw.logs());
    load.wait_until_failed(1).await;
    let sent = load.finish().await;
    let stream = nats_stream_bodies(&nats, JS_STREAM).await;
    assert_no_loss("nats graceful shutdown", &sent, &stream, true);
}

// ---------------------------------------------------------------------------------------------
// 6: max_in_flight
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_refuses_at_once_while_the_broker_is_paused() {
    let redis = RedisServer::start_aof().await;
    let gw = Gateway::start(&redis_config(&redis.url(), "3s", 2, "")).await;
    // Connected first, so that the pause stalls acknowledgements, not the connection.
    post(&gw.client(), &gw.url("/events"), &[], "warm")
        .await
        .accepted("events");
    redis.pause();
    let url = gw.url("/events");
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (url, answers) = (url.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let a = post(&http_client(), &url, &[], format!("held {i}")).await;
            answers.lock().unwrap().push((a, start.elapsed()));
        }));
    }
    wait_until_msg(WAIT, "four 503s at once", || async {
        answers.lock().unwrap().len() >= 4
    })
    .await;
    {
        let got = answers.lock().unwrap();
        for (a, took) in got.iter() {
            a.unavailable("max_in_flight reached");
            assert!(
                *took < Duration::from_millis(1500),
                "an overloaded request waited {took:?} (timeout 3s)"
            );
        }
    }
    assert_eq!(publish_total(&gw, "events", "overloaded").await, 4.0);
    redis.resume();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(publish_total(&gw, "events", "overloaded").await, 4.0);
    let got = std::mem::take(&mut *answers.lock().unwrap());
    assert_eq!(got.len(), 6);
    let accepted: Vec<String> = got
        .iter()
        .filter(|(a, _)| a.status == 202)
        .map(|(a, _)| a.accepted("events"))
        .collect();
    assert_eq!(
        accepted.len(),
        2,
        "the two waiting publishes are acknowledged after SIGCONT"
    );
    let stream = redis_stream_bodies(&redis, STREAM_KEY).await;
    for id in &accepted {
        assert!(
            stream.get(id).is_some_and(|b| b.starts_with(b"held ")),
            "{id} not in the stream"
        );
    }
    assert_eq!(
        stream.len(),
        3,
        "warm + the two acknowledged, none of the refused"
    );
}

// ---------------------------------------------------------------------------------------------
// 7: configuration errors
// ---------------------------------------------------------------------------------------------

#[test]
fn config_errors_are_located() {
    let head = r#"[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"

[upstreams.up]
targets = ["127.0.0.1:9"]

[queues.q]
kind = "redis_stream"
url = "redis://127.0.0.1:6379"
stream = "s"
"#;
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[routes]]\nname = \"both\"\npath = \"/\"\nupstream = \"up\"\nqueue = \"q\"\n",
            "routes[0].queue",
            "not both",
        ),
        (
            "[[routes]]\nname = \"neither\"\npath = \"/\"\n",
            "routes[0]",
            "queue",
        ),
        (
            "[[routes]]\nname = \"unknown\"\npath = \"/\"\nqueue = \"nope\"\n",
            "routes[0].queue",
            "no queue named \"nope\"",
        ),
        (
            "[queues.bad]\nkind = \"kafka\"\nurl = \"x\"\nstream = \"s\"\n",
            "queues.bad",
            "kafka",
        ),
        (
            "[queues.bad]\nkind = \"redis_stream\"\nurl = \"http://x\"\nstream = \"s\"\n",
            "queues.bad.url",
            "redis://",
        ),
        (
            "[queues.bad]\nkind = \"redis_stream\"\nurl = \"redis://127.0.0.1\"\nstream = \"s\"\nmax_in_flight = 0\n",
            "queues.bad.max_in_flight",
            "at least 1",
        ),
        (
            "[queues.bad]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"a.*\"\n",
            "queues.bad.stream",
            "wildcard",
        ),
        (
            "[queues.bad]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"a\"\nmax_len = 5\n",
            "queues.bad.max_len",
            "redis_stream",
        ),
        (
            "[queues.bad]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"a\"\nheaders = [\"nats-msg-id\"]\n",
            "queues.bad.headers",
            "Nats-",
        ),
        (
            "[queues.bad]\nkind = \"redis_stream\"\nurl = \"redis://127.0.0.1\"\nstream = \"s\"\nbogus = 1\n",
            "queues.bad",
            "bogus",
        ),
        (
            "[plugins.c]\ntype = \"cache\"\n\n[[routes]]\nname = \"cached\"\npath = \"/\"\nqueue = \"q\"\nplugins = [\"c\"]\n",
            "routes[0].plugins",
            "nothing to cache",
        ),
    ];
    let mut failures = Vec::new();
    for (tail, path, msg) in cases {
        let route = if tail.contains("[[routes]]") {
            ""
        } else {
            "[[routes]]\nname = \"fine\"\npath = \"/\"\nupstream = \"up\"\n"
        };
        let cfg = format!("{head}\n{route}\n{tail}");
        let (ok, out) = check_config(&cfg, &[]);
        // The line of the key the error names, or of its table.
        let located = out.lines().any(|l| {
            l.contains("gateway.toml:") && l.contains(&format!(" {path}")) && l.contains(msg)
        });
        if ok || !located {
            failures.push(format!(
                "--- case (expect {path}: ..{msg}..) accepted={ok}:\n{tail}--- output:\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A good one passes.
    let good = format!("{head}\n[[routes]]\nname = \"q\"\npath = \"/\"\nqueue = \"q\"\n");
    let (ok, out) = check_config(&good, &[]);
    assert!(ok, "{out}");
}

// ---------------------------------------------------------------------------------------------
// 8: series at 0 from startup
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_series_are_zero_from_startup() {
    // No broker is needed: nothing is published.
    let gw = Gateway::start(&redis_config(
        &format!("redis://{}", unused_addr()),
        "1s",
        10,
        "",
    ))
    .await;
    let text = gw.metrics().await;
    let mut missing = Vec::new();
    for result in ["ok", "error", "timeout", "overloaded"] {
        let q = format!(r#"tollgate_queue_publish_total{{queue="events",result="{result}"}}"#);
        if find_metric(&text, &q) != Some(0.0) {
            missing.push(q);
        }
    }
    assert!(
        missing.is_empty(),
        "not at 0 from startup: {missing:?}\n{}",
        text.lines()
            .filter(|l| l.contains("tollgate_queue"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
