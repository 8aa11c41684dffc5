//! The `forward_auth` plugin through a real gateway, a real upstream and a small auth service
//! written here (keep-alive HTTP/1.1 on 127.0.0.1:0) whose answer each test chooses and whose
//! requests and connections are counted: allow with copied headers, 401/403 passed through,
//! failures and timeouts failing closed, `on_error = "allow"`, the breaker, connection reuse,
//! what the service is told, and the documentation's example (plugins/forward_auth.md).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The auth service
// ---------------------------------------------------------------------------------------------

/// What the auth service does with the next requests.
#[derive(Clone)]
enum Mode {
    /// Answer with this status, headers and body.
    Answer(u16, Vec<(&'static str, &'static str)>, &'static str),
    /// Read the request and never answer.
    Hang,
}

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn h(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

struct AuthState {
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

struct AuthService {
    addr: SocketAddr,
    state: Arc<AuthState>,
    task: Option<tokio::task::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl AuthService {
    async fn start(mode: Mode) -> AuthService {
        Self::start_at("127.0.0.1:0".parse().unwrap(), mode).await
    }

    async fn start_at(addr: SocketAddr, mode: Mode) -> AuthService {
        let listener = TcpListener::bind(addr).await.expect("bind auth");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AuthState {
            mode: Mutex::new(mode),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (st, cs) = (state.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                let h = tokio::spawn(serve(stream, st.clone()));
                cs.lock().unwrap().push(h.abort_handle());
            }
        });
        AuthService {
            addr,
            state,
            task: Some(task),
            conns,
        }
    }

    /// Closes the listener and every open connection, and waits until the port is free.
    async fn stop(mut self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }
    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    fn last(&self) -> Seen {
        self.state
            .seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a call")
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

async fn serve(mut stream: TcpStream, st: Arc<AuthState>) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (the gateway sends no body).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        if req.parse(&head).is_err() {
            return;
        }
        let seen = Seen {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        };
        st.seen.lock().unwrap().push(seen);
        st.hits.fetch_add(1, Ordering::SeqCst);
        let mode = st.mode.lock().unwrap().clone();
        match mode {
            Mode::Hang => {
                std::future::pending::<()>().await;
            }
            Mode::Answer(status, headers, body) => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (n, v) in headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(body);
                if stream.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn ok_with_user() -> Mode {
    Mode::Answer(
        200,
        vec![
            ("x-user-id", "u-42"),
            ("x-kyc-level", "full"),
            ("x-other", "not copied"),
        ],
        "",
    )
}

// ---------------------------------------------------------------------------------------------
// Gateway configs and requests
// ---------------------------------------------------------------------------------------------

/// One route `all` on `/` with the forward_auth plugin `fa` whose keys are `keys`.
fn config(up: &TestUpstream, keys: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1

[plugins.fa]
type = "forward_auth"
{keys}

[upstreams.backend]
targets = ["{addr}"]

[[routes]]
name = "all"
upstream = "backend"
path = "/"
plugins = ["fa"]
"#,
        addr = up.addr()
    )
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = gw.client().get(gw.url(path));
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().await.expect("request through the gateway");
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

fn assert_problem(r: &Resp, status: u16) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.h("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("problem JSON");
    assert_eq!(v["status"], status);
    assert!(v["request_id"].is_string(), "{v}");
    v
}

async fn failures(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        r#"tollgate_auth_failures_total{{route="all",plugin="fa",reason="{reason}"}}"#
    ))
    .await
    .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn documentation_example() {
    let md = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plugins/forward_auth.md"
    ))
    .expect("plugins/forward_auth.md");
    let start = md.find("```toml").expect("a ```toml block") + "```toml".len();
    let end = start + md[start..].find("```").expect("closed block");
    let example = &md[start..end];
    assert!(
        example.contains("http://127.0.0.1:9100"),
        "the example's auth URL changed"
    );

    let up = TestUpstream::start("payments").await;
    let auth = AuthService::start(ok_with_user()).await;
    let cfg = example
        .replace("{UP}", &up.addr().to_string())
        .replace("http://127.0.0.1:9100", &format!("http://{}", auth.addr));
    let (ok, out) = check_config(&cfg, &[]);
    assert!(
        ok && out.trim() == "ok",
        "the example fails `tollgate check`:\n{out}"
    );
    let gw = Gateway::start(&cfg).await;

    // Allowed: the copied headers reach the upstream, a forged client copy does not.
    let r = get(
        &gw,
        "/v1/payments?limit=5",
        &[
            ("authorization", "Bearer abc"),
            ("x-user-id", "forged"),
            ("x-request-id", "doc-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.last_request().expect("forwarded");
    assert_eq!(seen.header_all("x-user-id"), ["u-42"]);
    assert_eq!(seen.header("x-kyc-level"), Some("full"));
    assert_eq!(seen.header("x-other"), None);
    assert_eq!(seen.header("authorization"), Some("Bearer abc"));

    let call = auth.last();
    assert_eq!(call.method, "GET");
    assert_eq!(call.target, "/check");
    assert_eq!(call.h("x-forwarded-method"), Some("GET"));
    assert_eq!(call.h("x-forwarded-uri"), Some("/v1/payments?limit=5"));
    assert_eq!(call.h("authorization"), Some("Bearer abc"));
    assert_eq!(call.h("x-request-id"), Some("doc-1"));
    assert_eq!(call.h("host"), Some(auth.addr.to_string().as_str()));

    // 401 from the service, with its challenge.
    auth.set(Mode::Answer(
        401,
        vec![("www-authenticate", "Bearer realm=\"payments\"")],
        "",
    ));
    let r = get(&gw, "/v1/payments", &[("authorization", "Bearer expired")]).await;
    let v = assert_problem(&r, 401);
    assert_eq!(v["request_id"], r.h("x-request-id").unwrap());
    assert_eq!(r.h("www-authenticate"), Some("Bearer realm=\"payments\""));
    assert_eq!(up.hits(), 1);

    // Down: 503, fail closed.
    auth.set(Mode::Answer(502, vec![], "bad gateway"));
    let r = get(&gw, "/v1/payments", &[]).await;
    assert_problem(&r, 503);
    assert!(r.h("retry-after").is_some());
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn allow_copies_headers_and_tells_the_service_about_the_request() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start(ok_with_user()).await;
    let gw = Gateway::start(&config(
        &up,
        &format!(
            r#"url = "{}"
timeout = "2s"
forward_headers = ["authorization", "x-tenant"]
copy_response_headers = ["x-user-id", "x-kyc-level", "x-absent"]"#,
            auth.url("/verify?app=gw")
        ),
    ))
    .await;

    let r = get(
        &gw,
        "/v1//payments/./7?a=1&b=2",
        &[
            ("host", "api.example.test"),
            ("authorization", "Bearer t0k"),
            ("x-tenant", "acme"),
            ("cookie", "session=secret"),
            ("x-user-id", "forged"),
            ("x-absent", "forged too"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let call = auth.last();
    assert_eq!(call.method, "GET");
    assert_eq!(call.target, "/verify?app=gw");
    assert_eq!(call.h("x-forwarded-method"), Some("GET"));
    assert_eq!(call.h("x-forwarded-uri"), Some("/v1/payments/7?a=1&b=2"));
    assert_eq!(call.h("x-forwarded-host"), Some("api.example.test"));
    assert_eq!(call.h("x-forwarded-proto"), Some("http"));
    assert_eq!(
        call.h("x-forwarded-for"),
        Some("127.0.0.1"),
        "the peer, not the spoofed XFF"
    );
    let rid = call.h("x-request-id").expect("a request id").to_string();
    assert!(!rid.is_empty());
    assert_eq!(call.h("authorization"), Some("Bearer t0k"));
    assert_eq!(call.h("x-tenant"), Some("acme"));
    assert_eq!(
        call.h("cookie"),
        None,
        "only forward_headers reach the service"
    );
    assert_eq!(call.h("x-user-id"), None);

    let seen = up.last_request().expect("forwarded");
    assert_eq!(seen.header_all("x-user-id"), ["u-42"]);
    assert_eq!(seen.header_all("x-kyc-level"), ["full"]);
    assert_eq!(seen.header("x-other"), None, "not in copy_response_headers");
    assert_eq!(
        seen.header("x-absent"),
        None,
        "client copies are dropped even when the service sends none"
    );
    assert_eq!(
        seen.header("cookie"),
        Some("session=secret"),
        "the request itself is unchanged"
    );

    // A POST is described with its own method.
    let r = gw
        .client()
        .post(gw.url("/submit"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let call = auth.last();
    assert_eq!(call.method, "GET");
    assert_eq!(call.h("x-forwarded-method"), Some("POST"));
    assert_eq!(call.h("content-length"), None);
    assert_eq!(up.last_request().unwrap().body_str(), "{}");
}

#[tokio::test]
async fn denials_are_passed_to_the_client() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start(Mode::Answer(
        401,
        vec![
            ("www-authenticate", "Bearer error=\"invalid_token\""),
            ("www-authenticate", "Basic realm=\"x\""),
            ("content-type", "application/json"),
            ("x-internal", "leak"),
        ],
        r#"{"error":"token expired"}"#,
    ))
    .await;
    let gw = Gateway::start(&config(
        &up,
        &format!(
            "url = \"{}\"\ntimeout = \"2s\"\ncopy_response_headers = [\"x-user-id\"]",
            auth.url("/")
        ),
    ))
    .await;

    // A JSON body is the service's own.
    let r = get(&gw, "/x", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.h("content-type"), Some("application/json"));
    assert_eq!(r.body, r#"{"error":"token expired"}"#);
    let challenges: Vec<&str> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        challenges,
        ["Bearer error=\"invalid_token\"", "Basic realm=\"x\""]
    );
    assert_eq!(r.h("x-internal"), None);

    // 403 with an HTML body: the gateway writes a problem with that status.
    auth.set(Mode::Answer(
        403,
        vec![("content-type", "text/html")],
        "<h1>KYC required</h1>",
    ));
    let r = get(&gw, "/x", &[]).await;
    assert_problem(&r, 403);
    assert!(!r.body.contains("KYC"), "{}", r.body);

    // 403 with problem+json passes as it is.
    auth.set(Mode::Answer(
        403,
        vec![("content-type", "application/problem+json")],
        r#"{"type":"urn:kyc","status":403,"title":"KYC required"}"#,
    ));
    let r = get(&gw, "/x", &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("urn:kyc"), "{}", r.body);

    assert_eq!(up.hits(), 0, "a denied request reached the upstream");
    assert_eq!(auth.hits(), 3);
    assert_eq!(failures(&gw, "denied").await, 3.0);
    // Denials are answers, not failures: the breaker stays closed.
    assert_eq!(failures(&gw, "breaker_open").await, 0.0);
}

#[tokio::test]
async fn failures_and_timeouts_fail_closed() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start(Mode::Answer(500, vec![], "oops")).await;
    let gw = Gateway::start(&config(
        &up,
        &format!("url = \"{}\"\ntimeout = \"300ms\"", auth.url("/")),
    ))
    .await;

    let r = get(&gw, "/x", &[]).await;
    let v = assert_problem(&r, 503);
    assert!(!v["detail"].as_str().unwrap().contains("oops"));
    assert_eq!(r.h("retry-after"), Some("1"));
    assert_eq!(failures(&gw, "auth_service_error").await, 1.0);

    // A redirect is not an answer either.
    auth.set(Mode::Answer(302, vec![("location", "/login")], ""));
    let r = get(&gw, "/x", &[]).await;
    assert_problem(&r, 503);
    assert_eq!(r.h("location"), None);

    // A service that never answers: 503 once `timeout` has passed.
    auth.set(Mode::Hang);
    let r = get(&gw, "/x", &[]).await;
    let v = assert_problem(&r, 503);
    assert!(v["detail"].as_str().unwrap().contains("in time"), "{v}");
    assert_eq!(failures(&gw, "auth_service_timeout").await, 1.0);

    // And it recovers as soon as the service answers again.
    auth.set(ok_with_user());
    let r = get(&gw, "/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 1);
    assert_eq!(auth.hits(), 4);
}

#[tokio::test]
async fn an_unreachable_service_fails_closed() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(
        &up,
        &format!("url = \"http://{}/check\"", unused_addr()),
    ))
    .await;
    let r = get(&gw, "/x", &[]).await;
    assert_problem(&r, 503);
    assert_eq!(up.hits(), 0);
    assert_eq!(failures(&gw, "auth_service_error").await, 1.0);
}

#[tokio::test]
async fn on_error_allow_lets_requests_through_without_the_copied_headers() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start(Mode::Answer(500, vec![("x-user-id", "u-bad")], "")).await;
    let gw = Gateway::start(&config(
        &up,
        &format!(
            "url = \"{}\"\non_error = \"allow\"\ncopy_response_headers = [\"x-user-id\"]",
            auth.url("/")
        ),
    ))
    .await;
    let r = get(&gw, "/x", &[("x-user-id", "forged")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-user-id"), None);
    // Still counted, and logged.
    assert_eq!(failures(&gw, "auth_service_error").await, 1.0);
    gw.wait_for_log("on_error", WAIT).await;

    // A denial is still a denial.
    auth.set(Mode::Answer(403, vec![], ""));
    let r = get(&gw, "/x", &[]).await;
    assert_problem(&r, 403);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn the_breaker_stops_calling_a_failing_service() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start(Mode::Answer(503, vec![], "")).await;
    let gw = Gateway::start(&config(&up, &format!("url = \"{}\"", auth.url("/")))).await;
    for _ in 0..5 {
        assert_problem(&get(&gw, "/x", &[]).await, 503);
    }
    assert_eq!(auth.hits(), 5);
    // Open: the service is left alone, even once it would answer again.
    auth.set(ok_with_user());
    for _ in 0..3 {
        let r = get(&gw, "/x", &[]).await;
        assert_problem(&r, 503);
        let secs: u64 = r.h("retry-after").unwrap().parse().unwrap();
        assert!((1..=10).contains(&secs), "{secs}");
    }
    assert_eq!(auth.hits(), 5, "the open breaker called the service");
    assert_eq!(failures(&gw, "breaker_open").await, 3.0);
    assert_eq!(failures(&gw, "auth_service_error").await, 5.0);
    assert_eq!(up.hits(), 0);
    // Closing after the cool-down is covered by the unit tests (an injected clock).
}

#[tokio::test]
async fn calls_reuse_pooled_connections() {
    let up = TestUpstream::start("up").await;
    let auth = AuthService::start(ok_with_user()).await;
    let gw = Gateway::start(&config(
        &up,
        &format!("url = \"{}\"\ntimeout = \"2s\"", auth.url("/")),
    ))
    .await;
    for _ in 0..6 {
        assert_eq!(get(&gw, "/x", &[]).await.status, 200);
    }
    // Denials with a body are read fully and reuse the connection too.
    auth.set(Mode::Answer(
        401,
        vec![("content-type", "application/json")],
        r#"{"e":1}"#,
    ));
    for _ in 0..2 {
        assert_eq!(get(&gw, "/x", &[]).await.status, 401);
    }
    assert_eq!(auth.hits(), 8);
    assert_eq!(auth.connections(), 1, "each call opened a new connection");

    // A pooled connection the service has closed is replaced transparently.
    let addr = auth.addr;
    auth.stop().await;
    let auth = AuthService::start_at(addr, ok_with_user()).await;
    assert_eq!(get(&gw, "/x", &[]).await.status, 200);
    assert_eq!(auth.hits(), 1);
}

#[test]
fn invalid_configurations_are_refused_with_their_place() {
    let cases = [
        (
            r#"url = "http://127.0.0.1:9/a"
on_error = "maybe""#,
            "plugins.fa.on_error",
        ),
        (r#"url = "ftp://127.0.0.1/a""#, "plugins.fa.url"),
        (r#"url = "127.0.0.1:9""#, "plugins.fa.url"),
        (
            r#"url = "http://127.0.0.1:9/a"
forward_headers = ["authorization", "x-forwarded-for"]"#,
            "plugins.fa.forward_headers[1]",
        ),
        (
            r#"url = "http://127.0.0.1:9/a"
copy_response_headers = ["transfer-encoding"]"#,
            "plugins.fa.copy_response_headers[0]",
        ),
        (
            r#"url = "http://127.0.0.1:9/a"
timeout = "0s""#,
            "plugins.fa.timeout",
        ),
    ];
    assert_plugin_errors("forward_auth", "fa", &cases);
}
