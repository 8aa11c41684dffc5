//! The queue publishers of SPEC §12 against real brokers: a `redis-server`
//! and a `nats-server -js` started on free ports, read back with real clients.
//! Needs `redis-server` and `nats-server` (`.ci/run` installs them).
// A test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::brokers::{NatsServer, RedisServer};
use common::free_port;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tollgate::queue::{Message, PublishError, Queue, QueueConfig};

fn queue_cfg(kind: &str, url: &str, stream: &str, extra: &str) -> QueueConfig {
    toml::from_str(&format!(
        "kind = \"{kind}\"\nurl = \"{url}\"\nstream = \"{stream}\"\n{extra}"
    ))
    .expect("valid queue table")
}

fn build(name: &str, cfg: &QueueConfig) -> Arc<Queue> {
    match Queue::build(name, cfg) {
        Ok(q) => Arc::new(q),
        Err(e) => panic!("{e:?}"),
    }
}

const BINARY_BODY: &[u8] = b"\x00\x01{\"type\":\"charge\"}\xff\xfe\xc3\x28 tail\r\n\x00";

fn request_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("stripe-signature", "t=1,v1=abc".parse().unwrap());
    h.append("x-multi", "one".parse().unwrap());
    h.append("x-multi", "two".parse().unwrap());
    h.insert("authorization", "Bearer not-copied".parse().unwrap());
    h
}

/// A message with a fixed set of fields; `id` and `dedup_id` vary.
struct Owned {
    id: String,
    dedup: String,
    at: SystemTime,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Owned {
    fn new(id: &str, dedup: &str) -> Owned {
        Owned {
            id: id.to_string(),
            dedup: dedup.to_string(),
            at: SystemTime::UNIX_EPOCH + Duration::new(1_795_615_009, 123_456_000),
            headers: request_headers(),
            body: Bytes::from_static(BINARY_BODY),
        }
    }

    fn msg(&self) -> Message<'_> {
        Message {
            id: &self.id,
            received_at: self.at,
            route: "stripe-webhooks",
            consumer: "",
            method: "POST",
            path: "/webhooks/stripe",
            query: "a=1&b=%C3%A9",
            headers: &self.headers,
            body: &self.body,
            dedup_id: &self.dedup,
        }
    }
}

async fn publish(q: &Queue, id: &str) -> Result<String, PublishError> {
    let m = Owned::new(id, id);
    q.publish(&m.msg()).await
}

/// Nothing runs at the queue's URL yet: building worked, publishing fails
/// within the timeout (1 s).
async fn publish_fails_fast(q: &Queue) {
    let start = Instant::now();
    let r = publish(q, "r0").await;
    assert!(
        matches!(r, Err(PublishError::Error(_) | PublishError::Timeout)),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(2000));
}

/// After a broker restart, publishes until the client has reconnected by
/// itself (within `within`); the id of the message.
async fn publish_after_reconnect(q: &Queue, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        match publish(q, "r3").await {
            Ok(id) => return id,
            Err(e) => assert!(Instant::now() < end, "no reconnection: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// For a queue with `timeout = "3s"` and `max_in_flight = 2`: with the broker
/// paused, two publishes wait and a third is refused at once (`Overloaded`);
/// resumed, the two are acknowledged; paused again, a publish times out after
/// about `timeout`; resumed, publishing works again.
async fn overloaded_then_timed_out_while_paused(
    q: &Arc<Queue>,
    pause: impl Fn(),
    resume: impl Fn(),
) {
    publish(q, "warm").await.expect("connected");

    pause();
    let a = tokio::spawn({
        let q = q.clone();
        async move { publish(&q, "a").await }
    });
    let b = tokio::spawn({
        let q = q.clone();
        async move { publish(&q, "b").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    assert_eq!(publish(q, "c").await, Err(PublishError::Overloaded));
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "refused at once"
    );
    resume();
    assert!(a.await.unwrap().is_ok());
    assert!(b.await.unwrap().is_ok());

    // Paused past the timeout: Timeout, after about `timeout`.
    pause();
    let start = Instant::now();
    assert_eq!(publish(q, "d").await, Err(PublishError::Timeout));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "{took:?}"
    );
    resume();
    let end = Instant::now() + Duration::from_secs(10);
    while publish(q, "e").await.is_err() {
        assert!(Instant::now() < end, "no recovery after SIGCONT");
    }
}

// ---------------------------------------------------------------- redis

#[tokio::test]
async fn redis_stream_carries_every_field_byte_for_byte() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let q = build(
        "payments",
        &queue_cfg(
            "redis_stream",
            &url,
            "tollgate:payments",
            "headers = [\"content-type\", \"stripe-signature\", \"x-multi\", \"x-absent\"]\n",
        ),
    );
    let m = Owned::new("req-1", "evt_1");
    let id = q.publish(&m.msg()).await.expect("published");
    let entries = redis.xrange("tollgate:payments").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, id, "the answer is the stream entry id");
    let fields: Vec<(&[u8], &[u8])> = entries[0]
        .1
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
        .collect();
    let want: Vec<(&[u8], &[u8])> = vec![
        (b"id", b"req-1"),
        (b"received_at", b"2026-11-25T13:56:49.123456Z"),
        (b"route", b"stripe-webhooks"),
        (b"consumer", b""),
        (b"method", b"POST"),
        (b"path", b"/webhooks/stripe"),
        (b"query", b"a=1&b=%C3%A9"),
        (
            b"headers",
            b"{\"content-type\":\"application/json\",\"stripe-signature\":\"t=1,v1=abc\",\"x-multi\":\"one, two\"}",
        ),
        (b"body", BINARY_BODY),
    ];
    assert_eq!(fields, want);

    // A second message gets a later id.
    let id2 = publish(&q, "req-2").await.expect("published");
    assert_ne!(id, id2);
    assert_eq!(redis.xlen("tollgate:payments").await, 2);
}

#[tokio::test]
async fn redis_stream_max_len_trims() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let q = build(
        "trim",
        &queue_cfg("redis_stream", &url, "trimmed", "max_len = 10\n"),
    );
    for i in 0..600 {
        publish(&q, &format!("r{i}")).await.expect("published");
    }
    let len = redis.xlen("trimmed").await;
    // `MAXLEN ~` trims whole nodes (100 entries each by default).
    assert!((10..=200).contains(&len), "XLEN {len}");
}

#[tokio::test]
async fn redis_down_then_up_then_restarted() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    // Nothing runs there yet: building works, publishing fails within the timeout.
    let q = build(
        "late",
        &queue_cfg("redis_stream", &url, "late", "timeout = \"1s\"\n"),
    );
    publish_fails_fast(&q).await;

    // The broker comes up: the next publish connects.
    let mut redis = RedisServer::start_on(port).await;
    publish(&q, "r1")
        .await
        .expect("published once the broker is up");

    // Restarted: the connection is remade by itself.
    redis.kill().await;
    let r = publish(&q, "r2").await;
    assert!(r.is_err(), "{r:?}");
    redis.restart().await;
    publish_after_reconnect(&q, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn redis_paused_past_the_timeout_and_overloaded() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let q = build(
        "paused",
        &queue_cfg(
            "redis_stream",
            &url,
            "paused",
            "timeout = \"3s\"\nmax_in_flight = 2\n",
        ),
    );
    overloaded_then_timed_out_while_paused(&q, || redis.pause(), || redis.resume()).await;
}

// ---------------------------------------------------------------- nats

#[tokio::test]
async fn nats_carries_every_field_and_deduplicates() {
    let nats = NatsServer::start().await;
    let stream = nats.create_stream("PAYMENTS", "payments.>").await;
    let url = nats.url();
    let q = build(
        "payments",
        &queue_cfg(
            "nats",
            &url,
            "payments.stripe",
            "headers = [\"content-type\", \"stripe-signature\", \"x-multi\", \"x-absent\"]\n",
        ),
    );
    let m = Owned::new("req-1", "evt_1");
    let id = q.publish(&m.msg()).await.expect("published");
    assert_eq!(id, "PAYMENTS:1");

    let raw = stream.get_raw_message(1).await.expect("stored");
    assert_eq!(raw.subject.as_str(), "payments.stripe");
    assert_eq!(&raw.payload[..], BINARY_BODY, "the body, byte for byte");
    let h = &raw.headers;
    let get = |k: &str| -> Vec<String> { h.get_all(k).map(|v| v.as_str().to_string()).collect() };
    assert_eq!(get("Tollgate-Id"), ["req-1"]);
    assert_eq!(get("Tollgate-Received-At"), ["2026-11-25T13:56:49.123456Z"]);
    assert_eq!(get("Tollgate-Route"), ["stripe-webhooks"]);
    assert_eq!(get("Tollgate-Consumer"), [""]);
    assert_eq!(get("Tollgate-Method"), ["POST"]);
    assert_eq!(get("Tollgate-Path"), ["/webhooks/stripe"]);
    assert_eq!(get("Tollgate-Query"), ["a=1&b=%C3%A9"]);
    assert_eq!(get("Nats-Msg-Id"), ["evt_1"]);
    assert_eq!(get("content-type"), ["application/json"]);
    assert_eq!(get("stripe-signature"), ["t=1,v1=abc"]);
    assert_eq!(get("x-multi"), ["one, two"]);
    assert!(get("x-absent").is_empty());
    assert!(get("authorization").is_empty());

    // The same dedup id again (a retried webhook, another request id): one message.
    let again = Owned::new("req-2", "evt_1");
    let id_again = q
        .publish(&again.msg())
        .await
        .expect("acknowledged as a duplicate");
    assert_eq!(id_again, "PAYMENTS:1");
    let other = Owned::new("req-3", "evt_2");
    assert_eq!(
        q.publish(&other.msg()).await.expect("published"),
        "PAYMENTS:2"
    );
    let info = stream.get_info().await.unwrap();
    assert_eq!(info.state.messages, 2);
}

#[tokio::test]
async fn nats_subject_without_a_stream_is_an_error() {
    let nats = NatsServer::start().await;
    nats.create_stream("OTHER", "other.>").await;
    let url = nats.url();
    let q = build(
        "orphan",
        &queue_cfg("nats", &url, "nobody.listens", "timeout = \"2s\"\n"),
    );
    let start = Instant::now();
    match publish(&q, "r1").await {
        Err(PublishError::Error(e)) => {
            assert!(e.contains("no JetStream stream captures subject"), "{e}");
            assert!(e.contains("nobody.listens"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "no responders is immediate"
    );
}

#[tokio::test]
async fn nats_down_then_up_then_restarted() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let q = build(
        "late",
        &queue_cfg("nats", &url, "late.events", "timeout = \"1s\"\n"),
    );
    publish_fails_fast(&q).await;

    let mut nats = NatsServer::start_on(port).await;
    let stream = nats.create_stream("LATE", "late.>").await;
    assert_eq!(
        publish(&q, "r1").await.expect("published once up"),
        "LATE:1"
    );

    // Restarted (the stream is kept in the store dir): the client reconnects by itself.
    nats.kill().await;
    drop(stream);
    let r = publish(&q, "r2").await;
    assert!(r.is_err(), "{r:?}");
    nats.restart().await;
    let id = publish_after_reconnect(&q, Duration::from_secs(15)).await;
    assert!(id.starts_with("LATE:"), "{id}");
}

#[tokio::test]
async fn nats_paused_past_the_timeout_and_overloaded() {
    let nats = NatsServer::start().await;
    nats.create_stream("PAUSED", "paused.>").await;
    let url = nats.url();
    let q = build(
        "paused",
        &queue_cfg(
            "nats",
            &url,
            "paused.events",
            "timeout = \"3s\"\nmax_in_flight = 2\n",
        ),
    );
    overloaded_then_timed_out_while_paused(&q, || nats.pause(), || nats.resume()).await;
}

#[tokio::test]
async fn publishes_are_counted() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let q = build(
        "counted",
        &queue_cfg("redis_stream", &url, "s", "timeout = \"500ms\"\n"),
    );
    let _ = publish(&q, "x").await;
    let m = &tollgate::metrics::METRICS;
    let failed = m
        .queue_publish
        .with_label_values(&["counted", "error"])
        .get()
        + m.queue_publish
            .with_label_values(&["counted", "timeout"])
            .get();
    assert_eq!(failed, 1);
    assert_eq!(
        m.queue_publish_duration
            .with_label_values(&["counted"])
            .get_sample_count(),
        1
    );
    let _redis = RedisServer::start_on(port).await;
    publish(&q, "y").await.expect("published");
    assert_eq!(
        m.queue_publish.with_label_values(&["counted", "ok"]).get(),
        1
    );
}
