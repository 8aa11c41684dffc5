//! plugins/queues.md is run, not copied: its ```toml examples are the gateway's
//! config (the broker URL and the listeners swapped for free ports), its
//! `body='…'` is the Stripe event sent, signed as Stripe signs; its
//! `redis-cli` commands are run as written against a real `redis-server`, and
//! its `nats-server` line and `nats stream add` / `nats consumer add` /
//! `nats consumer next` flags are carried out with the `async-nats` client
//! against a real `nats-server -js` (the `nats` CLI is not packaged here).
//! Needs `redis-server` (with `redis-cli`) and `nats-server` (`.ci/run`
//! installs them).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;
use common::brokers::{NatsServer, RedisServer};
use common::*;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::process::Command;

const SECRET: &str = "whsec_queue_doc_example_secret";
/// The listeners and broker URLs as the examples write them.
const DOC_LISTEN: &str = "listen = \"0.0.0.0:8080\"";
const DOC_ADMIN: &str = "admin_listen = \"127.0.0.1:9090\"";
const DOC_REDIS: &str = "redis://127.0.0.1:6379";
const DOC_NATS: &str = "nats://127.0.0.1:4222";

// ---------------------------------------------------------------------------
// The document

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/queues.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced blocks of one language, in order.
fn blocks(md: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let end = body
            .find("```")
            .unwrap_or_else(|| panic!("queues.md: unterminated ```{lang} block"));
        out.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    out
}

/// The one ```toml example with `kind = "<kind>"`, made runnable: listeners on
/// the harness's ports, the broker's URL replaced by `url`.
fn example(kind: &str, doc_url: &str, url: &str) -> String {
    let wanted = format!("kind = \"{kind}\"");
    let found: Vec<String> = blocks(&doc(), "toml")
        .into_iter()
        .filter(|b| b.contains(&wanted))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "queues.md: one ```toml example with {wanted}"
    );
    let toml = &found[0];
    for needle in [DOC_LISTEN, DOC_ADMIN, doc_url] {
        assert!(
            toml.contains(needle),
            "queues.md {kind} example: no {needle:?}"
        );
    }
    toml.replace(DOC_LISTEN, "listen = \"{LISTEN}\"")
        .replace(DOC_ADMIN, "admin_listen = \"{ADMIN}\"")
        .replace(doc_url, url)
}

/// Every command line of the ```sh blocks (comments and blank lines left out,
/// `\` continuations joined), split into words as a POSIX shell would for the
/// simple quoting the page uses.
fn commands() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for block in blocks(&doc(), "sh") {
        let joined = block.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(words(line));
        }
    }
    out
}

fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                any = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                any = true;
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                any = true;
                cur.push(c);
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The commands whose first words are `prefix`.
fn commands_starting(prefix: &[&str]) -> Vec<Vec<String>> {
    commands()
        .into_iter()
        .filter(|w| w.len() >= prefix.len() && w.iter().zip(prefix).all(|(a, b)| a == b))
        .collect()
}

/// The single command starting with `prefix`.
fn command(prefix: &[&str]) -> Vec<String> {
    let mut found = commands_starting(prefix);
    assert_eq!(
        found.len(),
        1,
        "queues.md: one `{}` command",
        prefix.join(" ")
    );
    found.remove(0)
}

/// The value of `--flag` in a command line.
fn flag<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| w == name)
        .and_then(|i| words.get(i + 1))
        .map(String::as_str)
}

/// The event the page sends: its `body='…'` line.
fn doc_body() -> String {
    let found = commands_starting(&[]);
    let bodies: Vec<&Vec<String>> = found
        .iter()
        .filter(|w| w.len() == 1 && w[0].starts_with("body="))
        .collect();
    assert_eq!(bodies.len(), 1, "queues.md: one body='…' line");
    let body = bodies[0][0]["body=".len()..].to_string();
    serde_json::from_str::<serde_json::Value>(&body).expect("the documented event is JSON");
    body
}

// ---------------------------------------------------------------------------
// Stripe signing (as tests/webhook.rs)

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn post(gw: &Gateway, body: &str, signature: Option<&str>) -> Answer {
    let mut req = gw
        .client()
        .post(gw.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    let r = req.send().await.expect("POST /webhooks/stripe");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    Answer {
        status,
        retry_after,
        body: r.text().await.unwrap(),
    }
}

/// `{"id", "queue"}` of a 202.
fn accepted(a: &Answer) -> String {
    assert_eq!(a.status, 202, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("a JSON 202 body");
    assert_eq!(v["queue"], "payment_events", "{v}");
    v["id"].as_str().expect("an id").to_string()
}

// ---------------------------------------------------------------------------
// Brokers

/// The page's `redis-cli …` command, run against the test's Redis; stdout
/// (redis-cli's raw format: one value per line).
fn redis_cli(port: u16, words: &[String]) -> String {
    assert_eq!(words[0], "redis-cli");
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(&words[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): it comes with redis-server"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{words:?}: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_a_stripe_to_a_redis_stream_read_by_a_consumer_group() {
    let redis = RedisServer::start().await;
    let port = redis.port();
    let toml = example("redis_stream", DOC_REDIS, &redis.url());
    let stream = toml
        .lines()
        .find_map(|l| l.strip_prefix("stream = "))
        .map(|s| s.trim_matches('"').to_string())
        .expect("the example names its stream");

    // The consumer group first, as the page says.
    let group = command(&["redis-cli", "XGROUP", "CREATE"]);
    assert_eq!(
        group[3], stream,
        "the group is created on the example's stream"
    );
    assert_eq!(redis_cli(port, &group).trim(), "OK");

    let gw = Gateway::builder(&toml)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .start()
        .await;
    let body = doc_body();
    let t = now();

    // Refusals never reach the stream.
    let a = post(&gw, &body, None).await;
    assert_eq!(a.status, 401, "unsigned: {}", a.body);
    let a = post(
        &gw,
        &body,
        Some(&stripe_header("whsec_wrong", t, body.as_bytes())),
    )
    .await;
    assert_eq!(a.status, 401, "wrong secret: {}", a.body);

    let signature = stripe_header(SECRET, t, body.as_bytes());
    let a = post(&gw, &body, Some(&signature)).await;
    let entry = accepted(&a);
    assert!(
        entry
            .split_once('-')
            .is_some_and(|(ms, seq)| { ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok() }),
        "a stream entry id: {entry}"
    );
    // The same event again is a replay.
    let a = post(&gw, &body, Some(&signature)).await;
    assert_eq!(a.status, 409, "replay: {}", a.body);

    // The consumer reads it with the documented XREADGROUP.
    let read = command(&["redis-cli", "XREADGROUP"]);
    assert!(read.contains(&stream), "{read:?}");
    let out = redis_cli(port, &read);
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == entry)
        .unwrap_or_else(|| panic!("entry {entry} not in XREADGROUP's output:\n{out}"));
    assert_eq!(
        lines[..at],
        [stream.as_str()],
        "one stream, this entry first:\n{out}"
    );
    let fields: Vec<(&str, &str)> = lines[at + 1..]
        .chunks(2)
        .map(|p| (p[0], p.get(1).copied().unwrap_or("")))
        .collect();
    let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "id",
            "received_at",
            "route",
            "consumer",
            "method",
            "path",
            "query",
            "headers",
            "body"
        ],
        "the fields of SPEC §12, in order:\n{out}"
    );
    let field = |k: &str| fields.iter().find(|(n, _)| *n == k).unwrap().1;
    assert_eq!(field("body"), body, "the body byte for byte");
    assert_eq!(field("route"), "stripe-webhooks");
    assert_eq!(field("consumer"), "");
    assert_eq!(field("method"), "POST");
    assert_eq!(field("path"), "/webhooks/stripe");
    assert_eq!(field("query"), "");
    assert!(uuid_like(field("id")), "the request id: {}", field("id"));
    let received = field("received_at");
    assert!(
        received.len() == 27 && received.ends_with('Z') && received.as_bytes()[10] == b'T',
        "RFC 3339 to the microsecond: {received}"
    );
    let headers: serde_json::Value = serde_json::from_str(field("headers")).expect("headers JSON");
    assert_eq!(
        headers,
        serde_json::json!({ "content-type": "application/json", "stripe-signature": signature }),
        "the copied headers"
    );

    // Acknowledged with the documented XACK (its example id replaced by this
    // entry's), after which nothing is pending.
    let mut ack = command(&["redis-cli", "XACK"]);
    assert_eq!(ack.len(), 5, "XACK <stream> <group> <id>: {ack:?}");
    assert_eq!(ack[2], stream);
    assert_eq!(ack[3], group[4], "XACK names the group created");
    ack[4] = entry.clone();
    assert_eq!(redis_cli(port, &ack).trim(), "1", "one entry acknowledged");
    let pending = command(&["redis-cli", "XPENDING"]);
    assert_eq!(
        redis_cli(port, &pending).lines().next(),
        Some("0"),
        "nothing pending after XACK"
    );
    // Nothing else reached the stream, and the publish was counted.
    let xlen = redis_cli(port, &words(&format!("redis-cli XLEN {stream}")));
    assert_eq!(xlen.trim(), "1");
    assert_eq!(
        gw.metric(r#"tollgate_queue_publish_total{queue="payment_events",result="ok"}"#)
            .await,
        Some(1.0)
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_b_stripe_to_nats_jetstream_read_by_a_durable_consumer() {
    use async_nats::jetstream::{consumer, stream};

    // nats-server as the page starts it, its store in a temporary directory,
    // on a free loopback port.
    let server = command(&["nats-server"]);
    assert!(server.contains(&"-js".to_string()), "{server:?}");
    let sd = server
        .iter()
        .position(|w| w == "-sd")
        .expect("the page gives nats-server a store directory");
    let nats = NatsServer::start_with_args(|store| {
        let mut args = server[1..].to_vec();
        args[sd] = store.display().to_string();
        args
    })
    .await;
    let url = nats.url();
    let js = nats.js().await;

    let toml = example("nats", DOC_NATS, &url);
    let subject = toml
        .lines()
        .find_map(|l| l.strip_prefix("stream = "))
        .map(|s| s.trim_matches('"').to_string())
        .expect("the example names its subject");
    let gw = Gateway::builder(&toml)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .start()
        .await;
    let body = doc_body();
    let signature = stripe_header(SECRET, now(), body.as_bytes());

    // No stream captures the subject yet: 503, retry later, and the webhook is
    // not remembered as delivered.
    let a = post(&gw, &body, Some(&signature)).await;
    assert_eq!(a.status, 503, "no stream yet: {}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("1"));

    // `nats stream add …`, as the page writes it.
    let add = command(&["nats", "stream", "add"]);
    let name = add[3].clone();
    assert_eq!(flag(&add, "--subjects"), Some(subject.as_str()), "{add:?}");
    assert_eq!(flag(&add, "--storage"), Some("file"));
    assert_eq!(flag(&add, "--retention"), Some("limits"));
    assert_eq!(flag(&add, "--discard"), Some("old"));
    let dur = |f: &str| {
        let v = flag(&add, f).unwrap_or_else(|| panic!("{f} in {add:?}"));
        humantime::parse_duration(v).unwrap_or_else(|e| panic!("{f} {v}: {e}"))
    };
    let replicas: usize = flag(&add, "--replicas").unwrap().parse().unwrap();
    let stream = wait_for(Duration::from_secs(10), || {
        let js = js.clone();
        let cfg = stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: dur("--max-age"),
            duplicate_window: dur("--dupe-window"),
            num_replicas: replicas,
            ..Default::default()
        };
        async move { js.get_or_create_stream(cfg).await.ok() }
    })
    .await;

    // `nats consumer add …`: a durable pull consumer.
    let cadd = command(&["nats", "consumer", "add"]);
    assert_eq!(cadd[3], name, "the consumer is on the stream created");
    let durable = cadd[4].clone();
    assert!(cadd.contains(&"--pull".to_string()), "{cadd:?}");
    assert_eq!(flag(&cadd, "--deliver"), Some("all"));
    assert_eq!(flag(&cadd, "--ack"), Some("explicit"));
    let max_deliver: i64 = flag(&cadd, "--max-deliver").unwrap().parse().unwrap();
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                max_deliver,
                ..Default::default()
            },
        )
        .await
        .expect("create the consumer");

    // The sender's retry of the same webhook is now accepted.
    let a = post(&gw, &body, Some(&signature)).await;
    let id = accepted(&a);
    assert_eq!(id, format!("{name}:1"), "<stream>:<sequence>");

    // `nats consumer next <stream> <consumer> --count N`: fetch and ack.
    let next = command(&["nats", "consumer", "next"]);
    assert_eq!(
        (next[3].as_str(), next[4].as_str()),
        (name.as_str(), durable.as_str())
    );
    let count: usize = flag(&next, "--count").unwrap().parse().unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(count)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut got = Vec::new();
    while let Some(m) = batch.next().await {
        got.push(m.expect("a message"));
    }
    assert_eq!(got.len(), 1, "one message");
    let msg = &got[0];
    assert_eq!(msg.subject.as_str(), subject);
    assert_eq!(msg.payload, body.as_bytes(), "the body byte for byte");
    let headers = msg.headers.as_ref().expect("headers");
    let h = |k: &str| {
        headers
            .get(k)
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| panic!("no {k} header: {headers:?}"))
    };
    assert_eq!(h("Tollgate-Route"), "stripe-webhooks");
    assert_eq!(h("Tollgate-Method"), "POST");
    assert_eq!(h("Tollgate-Path"), "/webhooks/stripe");
    assert_eq!(h("Tollgate-Consumer"), "");
    assert_eq!(h("Tollgate-Query"), "");
    assert!(h("Tollgate-Received-At").ends_with('Z'));
    assert!(uuid_like(&h("Tollgate-Id")));
    // Stripe has no webhook id: the request id de-duplicates.
    assert_eq!(h("Nats-Msg-Id"), h("Tollgate-Id"));
    // The copied headers, under their configured (lowercase) names.
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(h("stripe-signature"), signature);
    msg.double_ack().await.expect("ack");

    let info = consumer.get_info().await.expect("consumer info");
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "acknowledged"
    );
    assert_eq!(
        gw.metric(r#"tollgate_queue_publish_total{queue="payment_events",result="ok"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"tollgate_queue_publish_total{queue="payment_events",result="error"}"#)
            .await,
        Some(1.0)
    );
}

#[test]
fn the_page_documents_every_key_and_both_kinds() {
    let md = doc();
    for key in [
        "kind",
        "url",
        "stream",
        "max_len",
        "timeout",
        "max_in_flight",
        "headers",
    ] {
        assert!(
            md.contains(&format!("| `{key}` |")),
            "queues.md: no row for `{key}`"
        );
    }
    for needle in [
        "`\"2s\"`",
        "`1000`",
        "tollgate_queue_publish_total",
        "tollgate_queue_publish_duration_seconds",
        "`publish <queue>`",
        "messaging.operation.type",
        "Retry-After: 1",
        "## Adding a Kafka kind later",
    ] {
        assert!(md.contains(needle), "queues.md: no {needle}");
    }
    // Both examples pass `tollgate check` as written.
    for (kind, url) in [("redis_stream", DOC_REDIS), ("nats", DOC_NATS)] {
        let (ok, out) = check_config_env(
            &example(kind, url, url),
            &[("STRIPE_WEBHOOK_SECRET", SECRET)],
        );
        assert!(ok, "tollgate check refuses the {kind} example:\n{out}");
    }
}

/// `tollgate check` with extra environment (the harness's `check_config` has none).
fn check_config_env(contents: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let port = |_: ()| format!("127.0.0.1:{}", free_port());
    let contents = contents
        .replace("{LISTEN}", &port(()))
        .replace("{ADMIN}", &port(()));
    std::fs::write(&path, contents).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("check")
        .arg("-c")
        .arg(&path)
        .current_dir(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tollgate check");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
