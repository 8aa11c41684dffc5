use super::*;
use std::time::UNIX_EPOCH;

fn cfg(toml_src: &str) -> QueueConfig {
    toml::from_str(toml_src).expect("valid queue table")
}

fn redis_cfg() -> QueueConfig {
    cfg(r#"
kind = "redis_stream"
url = "redis://127.0.0.1:6379"
stream = "tollgate:events"
"#)
}

fn nats_cfg() -> QueueConfig {
    cfg(r#"
kind = "nats"
url = "nats://127.0.0.1:4222"
stream = "events.payments"
"#)
}

fn errors(c: &QueueConfig) -> Vec<(&'static str, String)> {
    match Queue::build("q", c) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

fn has(errs: &[(&'static str, String)], key: &str, part: &str) -> bool {
    errs.iter().any(|(k, m)| *k == key && m.contains(part))
}

#[test]
fn defaults() {
    let c = redis_cfg();
    assert_eq!(c.timeout, Dur::secs(2));
    assert_eq!(c.max_in_flight, 1000);
    assert_eq!(c.max_len, None);
    assert!(c.headers.is_empty());
    let q = Queue::build("q", &c).expect("builds");
    assert_eq!(q.config(), &c);
    assert_eq!(q.name(), "q");
    assert!(Queue::build("q", &nats_cfg()).is_ok());
}

#[test]
fn the_table_is_checked_when_parsed() {
    for bad in [
        // unknown key
        "kind = \"nats\"\nurl = \"nats://h\"\nstream = \"s\"\nretries = 3\n",
        // unknown kind
        "kind = \"kafka\"\nurl = \"k://h\"\nstream = \"s\"\n",
        // zero timeout
        "kind = \"nats\"\nurl = \"nats://h\"\nstream = \"s\"\ntimeout = \"0s\"\n",
        // missing stream
        "kind = \"nats\"\nurl = \"nats://h\"\n",
    ] {
        assert!(toml::from_str::<QueueConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn build_errors_name_their_key() {
    let mut c = redis_cfg();
    c.url = "http://user:secret@127.0.0.1".into();
    c.stream = String::new();
    c.max_len = Some(0);
    c.max_in_flight = 0;
    c.timeout = Dur::secs(0);
    c.headers = vec![
        "content-type".into(),
        "Content-Type".into(),
        "bad name".into(),
    ];
    let e = errors(&c);
    assert!(has(&e, "url", "not a redis:// or rediss:// URL"), "{e:?}");
    assert!(!e.iter().any(|(_, m)| m.contains("secret")), "{e:?}");
    assert!(has(&e, "stream", "empty"), "{e:?}");
    assert!(has(&e, "max_len", "at least 1"), "{e:?}");
    assert!(has(&e, "max_in_flight", "at least 1"), "{e:?}");
    assert!(has(&e, "timeout", "greater than zero"), "{e:?}");
    assert!(has(&e, "headers", "listed twice"), "{e:?}");
    assert!(has(&e, "headers", "not a valid header name"), "{e:?}");

    let mut c = redis_cfg();
    c.max_in_flight = MAX_IN_FLIGHT_LIMIT + 1;
    assert!(has(&errors(&c), "max_in_flight", "at most"));
    c.url = "rediss://user:pw@redis.example:6380/2".into();
    c.max_in_flight = 1;
    assert!(errors(&c).is_empty());
}

#[test]
fn nats_checks() {
    let mut c = nats_cfg();
    c.max_len = Some(10);
    c.url = "redis://127.0.0.1".into();
    c.headers = vec![
        "Nats-Msg-Id".into(),
        "tollgate-id".into(),
        "webhook-id".into(),
    ];
    let e = errors(&c);
    assert!(has(&e, "max_len", "redis_stream"), "{e:?}");
    assert!(has(&e, "url", "not a nats:// or tls:// URL"), "{e:?}");
    assert!(has(&e, "headers", "Nats-*"), "{e:?}");
    assert!(has(&e, "headers", "Tollgate-*"), "{e:?}");
    assert_eq!(e.iter().filter(|(k, _)| *k == "headers").count(), 2);
    for (subject, ok) in [
        ("events", true),
        ("events.stripe.v1", true),
        ("", false),
        ("events.", false),
        (".events", false),
        ("a..b", false),
        ("events.*", false),
        ("events.>", false),
        ("with space", false),
    ] {
        let mut c = nats_cfg();
        c.stream = subject.into();
        assert_eq!(errors(&c).is_empty(), ok, "{subject:?}");
    }
    let mut c = nats_cfg();
    c.url = "tls://user:pw@nats.example:4222".into();
    assert!(errors(&c).is_empty());
}

#[test]
fn result_labels() {
    assert_eq!(PublishError::Overloaded.result_label(), "overloaded");
    assert_eq!(PublishError::Timeout.result_label(), "timeout");
    assert_eq!(PublishError::Error("x".into()).result_label(), "error");
    assert_eq!(RESULTS, ["ok", "error", "timeout", "overloaded"]);
}

#[test]
fn received_at_is_rfc3339_utc() {
    let t = UNIX_EPOCH + Duration::new(1_795_615_009, 123_456_789);
    let s = rfc3339(t);
    assert_eq!(s, "2026-11-25T13:56:49.123456Z");
    assert!(
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).is_ok()
    );
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    // Before the epoch or past year 9999: no panic.
    let _ = rfc3339(UNIX_EPOCH - Duration::from_secs(10));
    let _ = rfc3339(UNIX_EPOCH + Duration::from_secs(400_000_000_000));
}

fn request_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.append("x-multi", "a".parse().unwrap());
    h.append("x-multi", "b \"q\"".parse().unwrap());
    h.insert(
        "x-latin",
        http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    );
    h.insert("authorization", "Bearer secret".parse().unwrap());
    h
}

#[test]
fn copied_headers_as_json() {
    let names: Vec<http::HeaderName> = ["x-multi", "content-type", "x-absent", "x-latin"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let j = headers_json(&names, &request_headers());
    assert_eq!(
        j,
        "{\"x-multi\":\"a, b \\\"q\\\"\",\"content-type\":\"application/json\",\"x-latin\":\"caf\u{fffd}\"}"
    );
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["x-multi"], "a, b \"q\"");
    assert_eq!(headers_json(&[], &request_headers()), "{}");
    assert_eq!(headers_json(&names, &http::HeaderMap::new()), "{}");
}

fn message<'a>(h: &'a http::HeaderMap, body: &'a bytes::Bytes) -> Message<'a> {
    Message {
        id: "req-1",
        received_at: UNIX_EPOCH + Duration::new(1_795_615_009, 5_000),
        route: "stripe-webhooks",
        consumer: "",
        method: "POST",
        path: "/webhooks/stripe",
        query: "a=1&b=%20",
        headers: h,
        body,
        dedup_id: "evt_123",
    }
}

#[test]
fn redis_command_fields() {
    let mut c = redis_cfg();
    c.max_len = Some(1000);
    c.headers = vec!["content-type".into(), "X-Multi".into()];
    let q = Queue::build("q", &c).unwrap();
    let h = request_headers();
    let body = bytes::Bytes::from_static(b"\x00\xff{\"a\":1}\r\n");
    let cmd = q.redis_command(&message(&h, &body));
    let args: Vec<Vec<u8>> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => b.to_vec(),
            redis::Arg::Cursor => b"<cursor>".to_vec(),
        })
        .collect();
    let want: Vec<&[u8]> = vec![
        b"XADD",
        b"tollgate:events",
        b"MAXLEN",
        b"~",
        b"1000",
        b"*",
        b"id",
        b"req-1",
        b"received_at",
        b"2026-11-25T13:56:49.000005Z",
        b"route",
        b"stripe-webhooks",
        b"consumer",
        b"",
        b"method",
        b"POST",
        b"path",
        b"/webhooks/stripe",
        b"query",
        b"a=1&b=%20",
        b"headers",
        b"{\"content-type\":\"application/json\",\"x-multi\":\"a, b \\\"q\\\"\"}",
        b"body",
        b"\x00\xff{\"a\":1}\r\n",
    ];
    assert_eq!(args, want);

    // Without max_len, no MAXLEN.
    let q = Queue::build("q", &redis_cfg()).unwrap();
    let cmd = q.redis_command(&message(&h, &body));
    let first: Vec<_> = cmd.args_iter().take(3).collect();
    assert!(matches!(first[2], redis::Arg::Simple(b"*")));
}

#[test]
fn nats_header_fields() {
    let mut c = nats_cfg();
    c.headers = vec![
        "content-type".into(),
        "x-multi".into(),
        "x-latin".into(),
        "x-absent".into(),
    ];
    let q = Queue::build("q", &c).unwrap();
    let h = request_headers();
    let body = bytes::Bytes::from_static(b"\x00\xff");
    let n = q.nats_headers(&message(&h, &body));
    let get = |k: &str| -> Vec<String> { n.get_all(k).map(|v| v.as_str().to_string()).collect() };
    assert_eq!(get("Tollgate-Id"), ["req-1"]);
    assert_eq!(get("Tollgate-Received-At"), ["2026-11-25T13:56:49.000005Z"]);
    assert_eq!(get("Tollgate-Route"), ["stripe-webhooks"]);
    assert_eq!(get("Tollgate-Consumer"), [""]);
    assert_eq!(get("Tollgate-Method"), ["POST"]);
    assert_eq!(get("Tollgate-Path"), ["/webhooks/stripe"]);
    assert_eq!(get("Tollgate-Query"), ["a=1&b=%20"]);
    assert_eq!(get("Nats-Msg-Id"), ["evt_123"]);
    assert_eq!(get("content-type"), ["application/json"]);
    assert_eq!(get("x-multi"), ["a, b \"q\""]);
    assert_eq!(get("x-latin"), ["caf\u{fffd}"]);
    assert!(get("x-absent").is_empty());
    assert!(get("authorization").is_empty());
}

#[tokio::test]
async fn an_unreachable_broker_fails_within_the_timeout() {
    // A port nothing listens on: connection refused, quickly.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for kind in ["redis_stream", "nats"] {
        let scheme = if kind == "nats" { "nats" } else { "redis" };
        let c = cfg(&format!(
            "kind = \"{kind}\"\nurl = \"{scheme}://127.0.0.1:{port}\"\nstream = \"s\"\ntimeout = \"1s\"\n"
        ));
        let q = Queue::build("unreachable", &c).unwrap();
        let h = http::HeaderMap::new();
        let body = bytes::Bytes::new();
        let start = Instant::now();
        let r = q.publish(&message(&h, &body)).await;
        // Refused: an error at once, not a timeout.
        assert!(matches!(r, Err(PublishError::Error(_))), "{kind}: {r:?}");
        assert!(start.elapsed() < Duration::from_millis(500), "{kind}");
        // The next publish tries again (and fails again), no panic.
        assert!(q.publish(&message(&h, &body)).await.is_err());
    }
}

#[test]
fn debug_hides_the_password() {
    let mut c = redis_cfg();
    c.url = "redis://user:hunter2@127.0.0.1:6379".into();
    let q = Queue::build("q", &c).unwrap();
    let d = format!("{q:?}");
    assert!(!d.contains("hunter2"), "{d}");
    assert!(d.contains("redis://***@127.0.0.1:6379"), "{d}");
}
