//! Attacks and accidents around `idempotency`, `forward_auth` and `cache` (issue 12, items 1,
//! 2, 10, 22, 33, 38): two credentials never share a cache entry or an idempotency record; a
//! key is never released while its upstream may still be executing; clients cannot open the
//! auth service's breaker; with Redis, a retry right after a received response is a replay on
//! every instance. Needs `redis-server` for the Redis tests (`.ci/run` installs it).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use common::brokers::RedisServer;
use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// An auth service that knows users by their `sid` cookie
// ---------------------------------------------------------------------------------------------

/// Keep-alive HTTP/1.1 on 127.0.0.1:0. `Cookie: sid=<name>` → 200 with `x-user-id: <name>`;
/// a `Cookie` over 8 KiB → 431 (as real servers answer a huge cookie); none → 401.
struct AuthService {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AuthService {
    async fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_auth(s, h.clone()));
            }
        });
        AuthService { addr, hits, task }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_auth(mut s: TcpStream, hits: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16384];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        hits.fetch_add(1, Ordering::SeqCst);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(&head);
        let cookies: Vec<String> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect();
        let cookie = cookies.first().cloned();
        if req.path.is_some_and(|p| p.starts_with("/screen")) {
            // A screening service: lets everyone through, names nobody, and says which
            // `Cookie` lines it was shown (`<count>|<values joined by |>`).
            let seen = format!("{}|{}", cookies.len(), cookies.join("|"));
            let out =
                format!("HTTP/1.1 200 OK\r\nx-seen-cookie: {seen}\r\ncontent-length: 0\r\n\r\n");
            if s.write_all(out.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let out = match cookie {
            Some(c) if c.len() > 8192 => {
                "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n"
                    .to_string()
            }
            Some(c) => {
                let user = c.strip_prefix("sid=").unwrap_or("nobody");
                format!("HTTP/1.1 200 OK\r\nx-user-id: {user}\r\ncontent-length: 0\r\n\r\n")
            }
            None => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_string(),
        };
        if s.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `fa` names consumers from `x-user-id`; `fa_digest` has no `consumer_header`, so its
/// consumers are digests of the forwarded cookie. The catch-all route has no authentication.
fn config(up: SocketAddr, auth: SocketAddr, extra_idem: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
trusted_proxies = ["127.0.0.1/32"]

[plugins.fa]
type = "forward_auth"
url = "http://{auth}/check"
timeout = "2s"
forward_headers = ["cookie"]
consumer_header = "x-user-id"

[plugins.fa_digest]
type = "forward_auth"
url = "http://{auth}/check"
timeout = "2s"
forward_headers = ["cookie"]

[plugins.fa_pair]
type = "forward_auth"
url = "http://{auth}/check"
timeout = "2s"
forward_headers = ["cookie", "x-session"]

[plugins.cache]
type = "cache"
ttl = "60s"

[plugins.idem]
type = "idempotency"
{extra_idem}

[upstreams.up]
targets = ["{up}"]
read_timeout = "1s"

[[routes]]
name = "profile"
upstream = "up"
path = "/profile"
plugins = ["fa", "cache"]

[[routes]]
name = "profile-digest"
upstream = "up"
path = "/profile-digest"
plugins = ["fa_digest", "cache"]

[[routes]]
name = "pay"
upstream = "up"
path = "/pay"
plugins = ["fa", "idem"]

[[routes]]
name = "pay-digest"
upstream = "up"
path = "/pay-digest"
plugins = ["fa_digest", "idem"]

[[routes]]
name = "pair"
upstream = "up"
path = "/pair"
plugins = ["fa_pair"]

[[routes]]
name = "open"
upstream = "up"
path = "/"
plugins = ["idem"]
"#
    )
}

async fn get_as(gw: &Gateway, path: &str, sid: &str) -> (u16, Option<String>, String) {
    let r = gw
        .client()
        .get(gw.url(path))
        .header("cookie", format!("sid={sid}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string());
    (status, cache, r.text().await.unwrap())
}

async fn post(
    gw: &Gateway,
    path: &str,
    key: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = gw
        .client()
        .post(gw.url(path))
        .header("idempotency-key", key)
        .body(body.to_string());
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    r.send().await.unwrap()
}

fn replayed(r: &reqwest::Response) -> bool {
    r.headers().get("idempotent-replayed").is_some()
}

// ---------------------------------------------------------------------------------------------
// Item 1: forward_auth consumers keep credentials apart
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forward_auth_users_never_get_each_others_cache_hits() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    for path in ["/profile", "/profile-digest"] {
        let (s, _, alice) = get_as(&gw, path, "alice").await;
        assert_eq!(s, 200, "{alice}");
        assert!(alice.contains("sid=alice"), "{alice}");
        let (_, cache, again) = get_as(&gw, path, "alice").await;
        assert_eq!(
            cache.as_deref(),
            Some("HIT"),
            "{path}: Alice's own copy is cached"
        );
        assert_eq!(again, alice);
        let (s, cache, bob) = get_as(&gw, path, "bob").await;
        assert_eq!(s, 200);
        assert_ne!(
            cache.as_deref(),
            Some("HIT"),
            "{path}: Bob got Alice's entry"
        );
        assert!(
            bob.contains("sid=bob") && !bob.contains("alice"),
            "{path}: {bob}"
        );
    }
}

#[tokio::test]
async fn forward_auth_users_never_share_idempotency_records() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    for (i, path) in ["/pay", "/pay-digest"].into_iter().enumerate() {
        let key = format!("pay-key-{i}");
        let alice = post(
            &gw,
            path,
            &key,
            r#"{"amount":100}"#,
            &[("cookie", "sid=alice")],
        )
        .await;
        assert_eq!(alice.status(), 200);
        let replay = post(
            &gw,
            path,
            &key,
            r#"{"amount":100}"#,
            &[("cookie", "sid=alice")],
        )
        .await;
        assert!(replayed(&replay), "{path}: Alice's own retry is a replay");

        let bob = post(
            &gw,
            path,
            &key,
            r#"{"amount":100}"#,
            &[("cookie", "sid=bob")],
        )
        .await;
        assert_eq!(bob.status(), 200);
        assert!(!replayed(&bob), "{path}: Bob got Alice's stored response");
        let body = bob.text().await.unwrap();
        assert!(
            body.contains("sid=bob") && !body.contains("alice"),
            "{body}"
        );

        let carol = post(
            &gw,
            path,
            &key,
            r#"{"amount":5}"#,
            &[("cookie", "sid=carol")],
        )
        .await;
        assert_eq!(
            carol.status(),
            200,
            "{path}: Carol's own key is not Alice's (no 422)"
        );
        assert!(!replayed(&carol));
    }
    assert_eq!(
        up.hits(),
        6,
        "Alice once per route, Bob and Carol each once"
    );
}

#[tokio::test]
async fn a_consumer_named_like_a_credential_digest_is_not_believed() {
    // The service names Mallory's consumer after the digest form; the gateway uses her own
    // credential's digest instead, so she cannot reach a record of a digest-identified user.
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    let r = post(&gw, "/pay", "k", "{}", &[("cookie", "sid=cred:sha256:00")]).await;
    assert_eq!(r.status(), 200);
    let seen = up.last_request().unwrap();
    let consumer = seen.header("x-consumer").unwrap().to_string();
    assert!(
        consumer.starts_with("cred:sha256:") && consumer.len() == "cred:sha256:".len() + 64,
        "{consumer}"
    );
    // Named consumers reach the upstream as themselves.
    post(&gw, "/pay", "k2", "{}", &[("cookie", "sid=alice")]).await;
    assert_eq!(
        up.last_request().unwrap().header("x-consumer"),
        Some("alice")
    );
}

#[tokio::test]
async fn credential_digests_of_different_header_sets_never_collide() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    let sets: [&[(&str, &str)]; 4] = [
        &[("cookie", "sid=ab")],
        &[("cookie", "sid=a"), ("x-session", "b")],
        &[("cookie", "sid=a"), ("cookie", "b")],
        &[("cookie", "sid=a, b")],
    ];
    let mut seen = Vec::new();
    for headers in sets {
        let mut r = gw.client().get(gw.url("/pair"));
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        assert_eq!(r.send().await.unwrap().status(), 200);
        let consumer = up
            .last_request()
            .unwrap()
            .header("x-consumer")
            .unwrap()
            .to_string();
        assert!(consumer.starts_with("cred:sha256:"), "{consumer}");
        assert!(!seen.contains(&consumer), "{headers:?} collided");
        seen.push(consumer);
    }
}

/// A screening `forward_auth` (no `forward_headers`, no `consumer_header`) behind an `api_key`
/// (alice, bob), and alone.
fn screening_config(up: SocketAddr, auth: SocketAddr) -> String {
    use sha2::{Digest, Sha256};
    let h = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[plugins.ak]
type = "api_key"
keys = [
  {{ consumer = "alice", key_sha256 = "{alice}" }},
  {{ consumer = "bob", key_sha256 = "{bob}" }},
]

[plugins.fa_nohdr]
type = "forward_auth"
url = "http://{auth}/screen"
timeout = "2s"

[plugins.fa_cookie]
type = "forward_auth"
url = "http://{auth}/screen"
timeout = "2s"
forward_headers = ["cookie"]
copy_response_headers = ["x-seen-cookie"]

[plugins.c]
type = "cache"
ttl = "60s"

[plugins.idem]
type = "idempotency"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "keyed-cache"
upstream = "up"
path = "/k/cache"
plugins = ["ak", "fa_nohdr", "c"]

[[routes]]
name = "keyed-pay"
upstream = "up"
path = "/k/pay"
plugins = ["ak", "fa_nohdr", "idem"]

[[routes]]
name = "screened-cache"
upstream = "up"
path = "/s/cache"
plugins = ["fa_nohdr", "c"]

[[routes]]
name = "screened-pay"
upstream = "up"
path = "/s/pay"
plugins = ["fa_nohdr", "idem"]

[[routes]]
name = "cookie"
upstream = "up"
path = "/cookie"
plugins = ["fa_cookie"]
"#,
        alice = h("alice-key"),
        bob = h("bob-key"),
    )
}

#[tokio::test]
async fn a_screening_service_never_merges_the_consumers_of_an_earlier_auth_plugin() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&screening_config(up.addr(), auth.addr)).await;
    let get = |key: &'static str| {
        let r = gw.client().get(gw.url("/k/cache")).header("x-api-key", key);
        async move {
            let r = r.send().await.unwrap();
            let cache = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), cache)
        }
    };
    assert_eq!(get("alice-key").await, (200, Some("MISS".into())));
    assert_eq!(
        up.last_request().unwrap().header("x-consumer"),
        Some("alice")
    );
    assert_eq!(get("alice-key").await, (200, Some("HIT".into())));
    let (s, cache) = get("bob-key").await;
    assert_eq!(s, 200);
    assert_ne!(cache.as_deref(), Some("HIT"), "Bob got Alice's cache entry");
    assert_eq!(up.last_request().unwrap().header("x-consumer"), Some("bob"));

    let pay = |key: &'static str, body: &'static str| {
        let r = gw
            .client()
            .post(gw.url("/k/pay"))
            .header("x-api-key", key)
            .header("idempotency-key", "same")
            .body(body);
        async move { r.send().await.unwrap() }
    };
    let a = pay("alice-key", "100").await;
    assert_eq!(a.status(), 200);
    assert!(!replayed(&a));
    assert!(
        replayed(&pay("alice-key", "100").await),
        "Alice's retry replays"
    );
    let b = pay("bob-key", "5").await;
    assert_eq!(b.status(), 200, "Bob's key is not Alice's (no 422)");
    assert!(!replayed(&b));
    assert_eq!(up.last_request().unwrap().header("x-consumer"), Some("bob"));
}

#[tokio::test]
async fn a_screening_service_shown_no_credential_still_keeps_credentials_apart() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&screening_config(up.addr(), auth.addr)).await;
    for (n, alice, bob) in [
        ("authorization", "Bearer alice", "Bearer bob"),
        ("cookie", "sid=alice", "sid=bob"),
    ] {
        let get = |v: &'static str| {
            let r = gw.client().get(gw.url("/s/cache")).header(n, v);
            async move {
                let r = r.send().await.unwrap();
                let cache = r
                    .headers()
                    .get("x-cache")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), cache)
            }
        };
        up.clear();
        assert_eq!(get(alice).await.0, 200);
        assert_eq!(get(alice).await, (200, Some("HIT".into())), "{n}");
        let (s, cache) = get(bob).await;
        assert_eq!(s, 200);
        assert_ne!(
            cache.as_deref(),
            Some("HIT"),
            "{n}: Bob got Alice's cache entry"
        );
        assert_eq!(up.hits(), 2, "{n}");

        let pay = |v: &'static str, body: &'static str| {
            let r = gw
                .client()
                .post(gw.url("/s/pay"))
                .header(n, v)
                .header("idempotency-key", format!("k-{n}"))
                .body(body);
            async move { r.send().await.unwrap() }
        };
        assert!(!replayed(&pay(alice, "100").await));
        assert!(
            replayed(&pay(alice, "100").await),
            "{n}: Alice's retry replays"
        );
        let b = pay(bob, "5").await;
        assert_eq!(b.status(), 200, "{n}: Bob's key is not Alice's (no 422)");
        assert!(!replayed(&b), "{n}: Bob got Alice's record");
    }
}

/// Item 1/22: a cookie split into several fields (HTTP/2 crumbs; here two `Cookie` lines)
/// reaches the HTTP/1.1 auth service as one `Cookie` line joined with "; " (RFC 9113
/// §8.2.3), and is the same credential as that one line.
#[tokio::test]
async fn cookie_crumbs_reach_the_auth_service_as_one_line_and_one_credential() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&screening_config(up.addr(), auth.addr)).await;
    let (gw, up) = (&gw, &up);
    let raw = move |cookies: &'static str| async move {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        let req = format!("GET /cookie HTTP/1.1\r\nHost: a\r\n{cookies}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out).into_owned();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let seen = up.last_request().unwrap();
        (
            seen.header("x-seen-cookie").unwrap().to_string(),
            seen.header("x-consumer").unwrap().to_string(),
        )
    };
    let (split_seen, split_consumer) = raw("Cookie: a=1\r\nCookie: b=2\r\n").await;
    assert_eq!(split_seen, "1|a=1; b=2");
    let (one_seen, one_consumer) = raw("Cookie: a=1; b=2\r\n").await;
    assert_eq!(one_seen, "1|a=1; b=2");
    assert_eq!(split_consumer, one_consumer);
    assert!(
        split_consumer.starts_with("cred:sha256:"),
        "{split_consumer}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 10: refusals of the auth service are the client's, not a failure of the service
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn huge_cookies_get_the_services_431_and_never_open_its_breaker() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    let huge = format!("sid={}", "x".repeat(20_000));
    // Twice the breaker's threshold of consecutive failures.
    for _ in 0..10 {
        let r = gw
            .client()
            .get(gw.url("/profile"))
            .header("cookie", &huge)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 431);
    }
    assert_eq!(auth.hits(), 10, "every refusal was the service's own");
    let (s, _, body) = get_as(&gw, "/profile", "alice").await;
    assert_eq!(s, 200, "the breaker stayed closed: {body}");
    assert_eq!(auth.hits(), 11);
    assert_eq!(up.hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// Item 22: without authentication, keys are scoped by client IP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn without_authentication_keys_are_scoped_by_client_ip() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let a = post(&gw, "/order", "k", r#"{"n":1}"#, &from("203.0.113.1")).await;
    assert_eq!(a.status(), 200);
    let a2 = post(&gw, "/order", "k", r#"{"n":1}"#, &from("203.0.113.1")).await;
    assert!(replayed(&a2), "the same client's retry is a replay");
    let b = post(&gw, "/order", "k", r#"{"n":1}"#, &from("198.51.100.7")).await;
    assert_eq!(b.status(), 200);
    assert!(!replayed(&b), "another client's record was replayed");
    let c = post(&gw, "/order", "k", r#"{"n":2}"#, &from("198.51.100.8")).await;
    assert_eq!(c.status(), 200, "another client's key is not a mismatch");
    assert_eq!(up.hits(), 3);
}

// ---------------------------------------------------------------------------------------------
// Item 2: a key is not released while the upstream may still be executing
// ---------------------------------------------------------------------------------------------

fn keyed_post(path: &str, key: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\nidempotency-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_client_that_gives_up_and_retries_never_runs_the_request_twice() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    let body = r#"{"amount":"10.00"}"#;
    // The client sends a keyed POST to a slow upstream and closes its socket (its own timeout)
    // once the upstream has the request.
    let mut first = RawConn::connect(gw.addr()).await;
    first
        .send(keyed_post("/slow?ms=600", "pay-1", body))
        .await
        .unwrap();
    wait_until(WAIT, || async { up.hits() == 1 }).await;
    drop(first);
    // Its retry, while the upstream is still executing: refused (or, on a slow machine,
    // already the replay), never forwarded.
    let retry = post(&gw, "/slow?ms=600", "pay-1", body, &[]).await;
    assert!(
        retry.status() == 409 || replayed(&retry),
        "{}",
        retry.status()
    );
    // The gateway kept reading the upstream's answer for the client that left: a later
    // retry is that answer, replayed.
    let replay = wait_for(WAIT, || async {
        let r = post(&gw, "/slow?ms=600", "pay-1", body, &[]).await;
        match r.status().as_u16() {
            409 => None,
            _ => Some(r),
        }
    })
    .await;
    assert_eq!(replay.status(), 200);
    assert!(replayed(&replay));
    assert!(replay.text().await.unwrap().contains("10.00"));
    assert_eq!(up.hits(), 1, "the upstream received the payment once");
}

#[tokio::test]
async fn a_client_that_resets_its_connection_never_gets_the_request_run_twice() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(up.addr(), auth.addr, "")).await;
    let body = r#"{"amount":"20.00"}"#;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(keyed_post("/slow?ms=600", "pay-rst", body).as_bytes())
        .await
        .unwrap();
    wait_until(WAIT, || async { up.hits() == 1 }).await;
    // An abortive close (RST), not a FIN.
    s.set_zero_linger().unwrap();
    drop(s);
    // Retries get 409 until the outcome is settled: the answer read to its end and
    // replayed, or the key locked (409 with Retry-After). Never a second upstream call.
    let settled = wait_for(WAIT, || async {
        let r = post(&gw, "/slow?ms=600", "pay-rst", body, &[]).await;
        let locked = r.status() == 409 && r.headers().contains_key("retry-after");
        (r.status() != 409 || locked).then_some(r)
    })
    .await;
    assert!(
        replayed(&settled) || settled.status() == 409,
        "{}",
        settled.status()
    );
    assert_eq!(up.hits(), 1, "the upstream received the payment once");
}

#[tokio::test]
async fn timeouts_and_resets_lock_the_key_until_unknown_outcome_lock_ends() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start().await;
    let gw = Gateway::start(&config(
        up.addr(),
        auth.addr,
        r#"unknown_outcome_lock = "2s""#,
    ))
    .await;
    // None: the response broke off after its head.
    for (path, outcomes) in [
        ("/hang", &[Some(504)][..]),
        ("/reset", &[Some(502)][..]),
        ("/reset-mid-body", &[None, Some(502)][..]),
    ] {
        let before = up.hits();
        let key = format!("k{path}");
        let got = post_raw(&gw, path, &key).await;
        assert!(outcomes.contains(&got), "{path}: {got:?}");
        let retry = post(&gw, path, &key, "{}", &[]).await;
        assert_eq!(retry.status(), 409, "{path}");
        let after: u64 = retry.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&after), "{path}: Retry-After {after}");
        assert_eq!(
            up.hits(),
            before + 1,
            "{path}: the retry reached the upstream"
        );
        // Once the lock has run out, the key may run again.
        wait_until(WAIT, || async {
            post(&gw, path, &key, "{}", &[]).await.status() != 409
        })
        .await;
        assert_eq!(up.hits(), before + 2, "{path}");
    }
    // A 5xx is the upstream's final answer: not stored, the key is free at once.
    for _ in 0..2 {
        assert_eq!(
            post(&gw, "/status/500", "k500", "{}", &[]).await.status(),
            500
        );
    }
    assert_eq!(up.hits(), 8);
}

/// A keyed POST whose response may break off: its status, or None when no whole response came.
async fn post_raw(gw: &Gateway, path: &str, key: &str) -> Option<u16> {
    let r = gw
        .client()
        .post(gw.url(path))
        .header("idempotency-key", key)
        .body("{}")
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    r.bytes().await.ok()?;
    Some(status)
}

// ---------------------------------------------------------------------------------------------
// Items 33 and 38: Redis
// ---------------------------------------------------------------------------------------------

fn redis_config(up: SocketAddr, redis: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[redis]
url = "{redis}"

[plugins.fleet_idem]
type = "idempotency"
backend = "redis"
unknown_outcome_lock = "30s"

[upstreams.up]
targets = ["{up}"]
read_timeout = "500ms"

[[routes]]
name = "pay"
upstream = "up"
path = "/"
plugins = ["fleet_idem"]
"#
    )
}

#[tokio::test]
async fn with_redis_a_retry_right_after_the_response_is_a_replay_on_another_instance() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start("up").await;
    let cfg = redis_config(up.addr(), &redis.url());
    let (one, two) = (Gateway::start(&cfg).await, Gateway::start(&cfg).await);
    const N: usize = 40;
    for i in 0..N {
        let key = format!("retry-{i}");
        let first = post(&one, "/pay", &key, r#"{"amount":1}"#, &[]).await;
        assert_eq!(first.status(), 200);
        let body = first.bytes().await.unwrap();
        // Issued as soon as the response's last byte has arrived.
        let retry = post(&two, "/pay", &key, r#"{"amount":1}"#, &[]).await;
        assert_eq!(retry.status(), 200, "retry {i}");
        assert!(replayed(&retry), "retry {i} was not a replay");
        assert_eq!(retry.bytes().await.unwrap(), body);
    }
    assert_eq!(up.hits(), N);

    // Item 33: the records' keys are printable and laid out as documented.
    let keys = redis.keys("tollgate:idem:*").await;
    assert_eq!(keys.len(), N);
    for k in keys {
        let k = String::from_utf8(k).unwrap();
        assert!(k.bytes().all(|b| (0x21..0x7f).contains(&b)), "{k:?}");
        let parts: Vec<&str> = k.splitn(6, ':').collect();
        assert_eq!(&parts[..3], ["tollgate", "idem", "fleet_idem"], "{k}");
        assert_eq!(parts[3].len(), 12, "config digest: {k}");
        assert_eq!(parts[4].len(), 32, "scope: {k}");
        assert!(parts[5].starts_with("retry-"), "{k}");
    }
}

#[tokio::test]
async fn with_redis_a_timed_out_key_is_locked_on_every_instance() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start("up").await;
    let cfg = redis_config(up.addr(), &redis.url());
    let (one, two) = (Gateway::start(&cfg).await, Gateway::start(&cfg).await);
    assert_eq!(post(&one, "/hang", "h", "{}", &[]).await.status(), 504);
    let retry = post(&two, "/hang", "h", "{}", &[]).await;
    assert_eq!(retry.status(), 409);
    let after: u64 = retry.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&after), "{after}");
    assert_eq!(up.hits(), 1);
}

#[test]
fn new_keys_are_validated_with_their_place() {
    assert_plugin_errors(
        "idempotency",
        "idem",
        &[(
            r#"unknown_outcome_lock = "0s""#,
            "plugins.idem.unknown_outcome_lock",
        )],
    );
    assert_plugin_errors(
        "forward_auth",
        "fa",
        &[
            (
                "url = \"http://127.0.0.1:9/\"\nconsumer_header = \"bad name\"",
                "plugins.fa.consumer_header",
            ),
            (
                "url = \"http://127.0.0.1:9/\"\nconsumer_header = \"content-length\"",
                "plugins.fa.consumer_header",
            ),
        ],
    );
}

#[tokio::test]
async fn tokens_without_a_consumer_claim_never_share_records() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let up = TestUpstream::start("up").await;
    let cfg = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[plugins.jwt]
type = "jwt"
algorithms = ["HS256"]
secret_env = "IDEM_JWT_SECRET"

[plugins.idem]
type = "idempotency"

[upstreams.up]
targets = ["{}"]

[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt", "idem"]
"#,
        up.addr()
    );
    let secret = "a-test-secret-of-32-bytes-length!";
    let gw = Gateway::builder(&cfg)
        .env("IDEM_JWT_SECRET", secret)
        .start()
        .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    // No `sub`: the jwt plugin names no consumer.
    let token = |who: &str| {
        let t = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "exp": exp, "name": who }),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        format!("Bearer {t}")
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let a = post(&gw, "/pay", "k", "{}", &[("authorization", &alice)]).await;
    assert_eq!(a.status(), 200);
    let a2 = post(&gw, "/pay", "k", "{}", &[("authorization", &alice)]).await;
    assert!(replayed(&a2));
    let b = post(&gw, "/pay", "k", "{}", &[("authorization", &bob)]).await;
    assert_eq!(b.status(), 200);
    assert!(!replayed(&b), "another token's record was replayed");
    assert_eq!(up.hits(), 2);
}
