//! Integration-test harness for tollgate.
//!
//! * [`TestUpstream`]: a hand-rolled HTTP/1.1 upstream (plain or TLS) that records what it
//!   receives and can misbehave on purpose (hang, reset, send garbage, stream SSE, upgrade to
//!   a WebSocket echo, ...). See the table on [`TestUpstream`] for its paths.
//! * [`TestCerts`]: a throw-away CA plus a leaf certificate signed by it (rcgen).
//! * [`Gateway`]: the real `tollgate` binary, started on free ports from a config template,
//!   with captured logs and helpers for the admin API and metrics.
//! * Raw TCP helpers ([`raw_request`], [`RawConn`]) and [`wait_until`] for polling conditions
//!   instead of sleeping.
//!
//! Every integration test file that wants these helpers declares `mod common;`.
#![allow(dead_code)]
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub mod brokers;
pub mod otlp;
use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Interval at which [`wait_until`] and the gateway readiness probe poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Signal numbers for [`Gateway::signal`] (Linux).
pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGQUIT: i32 = 3;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGTERM: i32 = 15;

// ---------------------------------------------------------------------------------------------
// Small shared helpers
// ---------------------------------------------------------------------------------------------

/// Polls `cond` every 20 ms until it returns `true`; panics (naming the caller's location)
/// if it has not within `timeout`. Use instead of sleeps:
/// `wait_until(Duration::from_secs(5), || async { up.hits() == 3 }).await;`
#[track_caller]
pub fn wait_until<F, Fut>(timeout: Duration, cond: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let location = std::panic::Location::caller();
    wait_until_inner(timeout, cond, format!("wait_until at {location}"))
}

/// Like [`wait_until`], with a description of the awaited condition in the panic message.
pub async fn wait_until_msg<F, Fut>(timeout: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until_inner(timeout, cond, format!("waiting for {what}")).await
}

async fn wait_until_inner<F, Fut>(timeout: Duration, mut cond: F, what: String)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: condition still false after {timeout:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `f` every 20 ms until it returns `Some`, and returns that value; panics (naming the
/// caller's location) after `timeout`.
#[track_caller]
pub fn wait_for<T, F, Fut>(timeout: Duration, mut f: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let location = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("wait_for at {location}: still None after {timeout:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// A port that is free now, for a process that binds it later (the gateway).
///
/// Picked below Linux's ephemeral range (32768–60999), so that no socket bound
/// to port 0 meanwhile (an upstream, a client) can take it before the gateway
/// does; two picks that collide make the gateway fail to bind, which
/// [`Gateway::start`] retries on fresh ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(13)) % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback address on which nothing listens (connecting to it is refused).
pub fn unused_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A reqwest client suited to tests: no proxy, no automatic redirects, HTTP/1.1 only.
pub fn http_client() -> reqwest::Client {
    client_builder().build().expect("build reqwest client")
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .timeout(Duration::from_secs(30))
}

/// Value of the first header called `name` (ASCII case-insensitive) in a header list.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Values of every header called `name` (ASCII case-insensitive), in order.
pub fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn query_param(target: &str, key: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn query_params(target: &str, key: &str) -> Vec<String> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1])
                .zip(hex(bytes[i + 2]))
                .map(|(h, l)| (h << 4) | l),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        if chunk.len() > 1 {
            out.push(ALPHABET[(n >> 6) as usize & 63] as char);
        } else {
            out.push('=');
        }
        if chunk.len() > 2 {
            out.push(ALPHABET[n as usize & 63] as char);
        } else {
            out.push('=');
        }
    }
    out
}

/// SHA-1 (only used for the WebSocket handshake; not for anything security-related).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (o, v) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64_encode(&sha1(&input))
}

// ---------------------------------------------------------------------------------------------
// TestUpstream
// ---------------------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// Request target as received: path plus `?query` if any.
    pub path: String,
    /// In order as received; names lowercased.
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked transfer coding removed).
    pub body: Vec<u8>,
}

impl Recorded {
    /// Last value of header `name` (case-insensitive), like the echo JSON ("last wins").
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order received.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The raw query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The body as (lossy) UTF-8.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `release()` bookkeeping for `/sse`: releases every stream currently waiting or, when none
/// is waiting, stores a permit for the next one.
#[derive(Default)]
struct ReleaseGate {
    state: Mutex<GateState>,
    notify: Notify,
}

#[derive(Default)]
struct GateState {
    generation: u64,
    waiting: usize,
    stored: usize,
}

impl ReleaseGate {
    fn release(&self) {
        {
            let mut st = self.state.lock().unwrap();
            if st.waiting > 0 {
                st.generation += 1;
                st.waiting = 0;
            } else {
                st.stored += 1;
            }
        }
        self.notify.notify_waiters();
    }

    fn waiting(&self) -> usize {
        self.state.lock().unwrap().waiting
    }

    async fn wait(&self) {
        let generation = {
            let mut st = self.state.lock().unwrap();
            if st.stored > 0 {
                st.stored -= 1;
                return;
            }
            st.waiting += 1;
            st.generation
        };
        // Un-count this waiter if its connection goes away before a release.
        struct Leave<'a>(&'a ReleaseGate, u64);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                let mut st = self.0.state.lock().unwrap();
                if st.generation == self.1 {
                    st.waiting -= 1;
                }
            }
        }
        let _leave = Leave(self, generation);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().unwrap().generation != generation {
                return;
            }
            notified.await;
        }
    }
}

struct Shared {
    name: String,
    healthy: AtomicBool,
    hits: AtomicUsize,
    health_checks: AtomicUsize,
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    release: ReleaseGate,
}

/// A real HTTP/1.1 upstream on `127.0.0.1:<random port>`, keep-alive, served until dropped.
///
/// | path (first segment of what the upstream receives) | answer |
/// | --- | --- |
/// | `/healthz` | 200 `ok`, or 503 after `set_healthy(false)`; not recorded, counted in `health_checks()` |
/// | `/status/{code}` | that status, body `{"upstream":name}` |
/// | `/slow?ms=N` | waits N ms (default 1000), then 200 with the echo JSON |
/// | `/hang` | reads the request, never answers |
/// | `/reset` | TCP RST without answering |
/// | `/reset-mid-body` | head with `Content-Length: 1000`, 10 body bytes, then RST |
/// | `/garbage` | `HTTP/1.1 abc\r\nnonsense\r\n\r\n`, then close |
/// | `/sse` | chunked `text/event-stream`: `data: first\n\n`, then after `release()` `data: second\n\n`, end |
/// | `/ws` | with `Upgrade: websocket`: 101 and a raw byte echo until EOF; else 400 |
/// | `/hop` | 200 (echo JSON) with hop-by-hop response headers and `X-Kept: yes` |
/// | `/big?bytes=N` | 200 with N (default 1024) bytes of `a` |
/// | `/respond?status=N&header=Name:Value&body=text` | a made-to-order response (`header` repeatable, values percent-decoded; default 200, empty body) |
/// | anything else | 200 `application/json` echo: `{"upstream","method","path","headers","body"}` |
///
/// Every answer carries `x-upstream: <name>` (except `/reset`, `/garbage`, `/hang`).
/// `HEAD` gets the head only. `Expect: 100-continue` is honoured. Chunked and Content-Length
/// request bodies are both decoded.
pub struct TestUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TestUpstream {
    /// Plain HTTP/1.1 on `127.0.0.1:0`.
    pub async fn start(name: &str) -> TestUpstream {
        Self::launch(name, "127.0.0.1:0".parse().unwrap(), None).await
    }

    /// Plain HTTP/1.1 on a given address (e.g. to bring an upstream back on the address of one
    /// that was stopped).
    pub async fn start_at(name: &str, addr: SocketAddr) -> TestUpstream {
        Self::launch(name, addr, None).await
    }

    /// HTTP/1.1 over TLS (rustls, ALPN `http/1.1`) with the given PEM certificate chain and key.
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> TestUpstream {
        let cfg = server_tls_config(cert_pem, key_pem, None);
        Self::launch(name, "127.0.0.1:0".parse().unwrap(), Some(cfg)).await
    }

    /// Like [`start_tls`](Self::start_tls), but requires a client certificate signed by
    /// `client_ca_pem` (mTLS); handshakes without one fail.
    pub async fn start_mtls(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> TestUpstream {
        let cfg = server_tls_config(cert_pem, key_pem, Some(client_ca_pem));
        Self::launch(name, "127.0.0.1:0".parse().unwrap(), Some(cfg)).await
    }

    async fn launch(
        name: &str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestUpstream {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("TestUpstream {name}: bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            release: ReleaseGate::default(),
        });
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), acceptor));
        TestUpstream {
            shared,
            addr,
            task: Some(task),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port/path` (for direct requests in tests).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, slash(path))
    }

    /// Requests received, excluding `/healthz`.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Every request received so far, excluding `/healthz`, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The most recent request (excluding `/healthz`).
    pub fn last_request(&self) -> Option<Recorded> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    /// Forgets recorded requests and resets `hits()` (not `connections()`/`health_checks()`).
    pub fn clear(&self) {
        let mut reqs = self.shared.requests.lock().unwrap();
        reqs.clear();
        self.shared.hits.store(0, Ordering::SeqCst);
    }

    /// What `/healthz` answers: 200 when true (the default), 503 when false.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Number of `/healthz` requests received.
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// Lets `/sse` streams send their second event: every stream waiting now is released; if
    /// none is waiting, the next stream to reach its wait passes straight through.
    pub fn release(&self) {
        self.shared.release.release();
    }

    /// Number of `/sse` streams currently blocked waiting for `release()`.
    pub fn sse_waiting(&self) -> usize {
        self.shared.release.waiting()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops the upstream and waits until its listener is closed, so new connections are
    /// refused as soon as this returns. Open connections are closed too.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn server_tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("TestUpstream: bad certificate PEM");
    assert!(!certs.is_empty(), "TestUpstream: no certificate in PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("TestUpstream: bad key PEM");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions");
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots
                    .add(cert.expect("TestUpstream: bad client CA PEM"))
                    .expect("TestUpstream: client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .expect("TestUpstream: certificate/key mismatch");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Owned by this task: aborting the task drops the set, which aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // E.g. EMFILE: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        None => serve_conn(stream, shared).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_conn(stream, shared).await;
                            }
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A connection the upstream can serve: plain TCP or TLS over TCP.
trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl UpstreamIo for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl UpstreamIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

const MAX_HEAD: usize = 1 << 20;

struct RequestHead {
    method: String,
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn tokens(&self, name: &str) -> Vec<String> {
        header_all(&self.headers, name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn keep_alive(&self) -> bool {
        let conn = self.tokens("connection");
        if self.version >= 1 {
            !conn.iter().any(|t| t == "close")
        } else {
            conn.iter().any(|t| t == "keep-alive")
        }
    }
}

/// Reads more bytes into `buf`; returns how many (0 on EOF).
async fn fill<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = io.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn unexpected_eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed mid-message",
    )
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one request head. `Ok(None)`: clean EOF before any byte of a new request.
async fn read_request_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<RequestHead>> {
    loop {
        if !buf.is_empty() {
            let mut n_headers = 128;
            loop {
                let mut headers = vec![httparse::EMPTY_HEADER; n_headers];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let head = RequestHead {
                            method: req.method.unwrap_or("").to_string(),
                            target: req.path.unwrap_or("").to_string(),
                            version: req.version.unwrap_or(1),
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
                        buf.drain(..len);
                        return Ok(Some(head));
                    }
                    Ok(httparse::Status::Partial) => break,
                    Err(httparse::Error::TooManyHeaders) if n_headers < 8192 => n_headers *= 4,
                    Err(e) => return Err(invalid(&format!("bad request head: {e}"))),
                }
            }
            if buf.len() > MAX_HEAD {
                return Err(invalid("request head too large"));
            }
        }
        if fill(io, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(unexpected_eof())
            };
        }
    }
}

async fn read_line<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(pos) = find_subslice(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..pos]).into_owned();
            buf.drain(..pos + 2);
            return Ok(line);
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("line too long"));
        }
        if fill(io, buf).await? == 0 {
            return Err(unexpected_eof());
        }
    }
}

async fn read_exact_buf<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    n: usize,
) -> io::Result<Vec<u8>> {
    while buf.len() < n {
        if fill(io, buf).await? == 0 {
            return Err(unexpected_eof());
        }
    }
    Ok(buf.drain(..n).collect())
}

async fn read_chunked<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(io, buf).await?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailer section, up to the empty line.
            while !read_line(io, buf).await?.is_empty() {}
            return Ok(body);
        }
        let data = read_exact_buf(io, buf, size + 2).await?;
        if &data[size..] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&data[..size]);
    }
}

async fn read_request_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> io::Result<Vec<u8>> {
    let chunked = head.tokens("transfer-encoding").last().map(String::as_str) == Some("chunked");
    let length = match head.header("content-length") {
        Some(v) if !chunked => v
            .trim()
            .parse::<usize>()
            .map_err(|_| invalid("bad content-length"))?,
        _ => 0,
    };
    let expects_body = chunked || length > 0;
    if expects_body
        && buf.is_empty()
        && head
            .header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    {
        io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        io.flush().await?;
    }
    if chunked {
        read_chunked(io, buf).await
    } else {
        read_exact_buf(io, buf, length).await
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn json(self, value: &serde_json::Value) -> Reply {
        let mut r = self.header("content-type", "application/json");
        r.body = serde_json::to_vec(value).unwrap();
        r
    }

    fn text(self, body: &str) -> Reply {
        let mut r = self.header("content-type", "text/plain");
        r.body = body.as_bytes().to_vec();
        r
    }
}

/// Serialises a response head (+ body unless `head_only`). Adds `x-upstream`, framing, and the
/// `connection` header unless `reply` carries its own.
fn encode_reply(reply: &Reply, name: &str, keep_alive: bool, head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).into_bytes();
    for (k, v) in &reply.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("x-upstream: {name}\r\n").as_bytes());
    let bodyless = reply.status < 200 || reply.status == 204 || reply.status == 304;
    if !bodyless {
        out.extend_from_slice(format!("content-length: {}\r\n", reply.body.len()).as_bytes());
    }
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        out.extend_from_slice(if keep_alive {
            b"connection: keep-alive\r\n".as_slice()
        } else {
            b"connection: close\r\n".as_slice()
        });
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodyless {
        out.extend_from_slice(&reply.body);
    }
    out
}

fn echo_json(shared: &Shared, head: &RequestHead, body: &[u8]) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (k, v) in &head.headers {
        headers.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    serde_json::json!({
        "upstream": shared.name,
        "method": head.method,
        "path": head.target,
        "headers": headers,
        "body": String::from_utf8_lossy(body),
    })
}

/// What to do with the connection after a request.
enum Next {
    KeepAlive,
    Close,
    /// Drop without a graceful shutdown (already reset, or nothing more to say).
    Abandon,
}

async fn serve_conn<S: UpstreamIo>(mut io: S, shared: Arc<Shared>) {
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let head = match read_request_head(&mut io, &mut buf).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let reply = Reply::new(400).text(&e.to_string());
                let _ = io
                    .write_all(&encode_reply(&reply, &shared.name, false, false))
                    .await;
                let _ = io.shutdown().await;
                return;
            }
            Err(_) => return,
        };
        let body = match read_request_body(&mut io, &mut buf, &head).await {
            Ok(body) => body,
            Err(_) => return,
        };
        match handle(&mut io, &mut buf, &shared, &head, body).await {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => {
                let _ = io.flush().await;
                let _ = io.shutdown().await;
                return;
            }
            Ok(Next::Abandon) | Err(_) => return,
        }
    }
}

async fn handle<S: UpstreamIo>(
    io: &mut S,
    buf: &mut Vec<u8>,
    shared: &Shared,
    head: &RequestHead,
    body: Vec<u8>,
) -> io::Result<Next> {
    let path = head.target.split('?').next().unwrap_or("");
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or("");
    let keep_alive = head.keep_alive();
    let head_only = head.method.eq_ignore_ascii_case("HEAD");
    let name = shared.name.as_str();
    let next = if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    };

    if first == "healthz" {
        shared.health_checks.fetch_add(1, Ordering::SeqCst);
        let reply = if shared.healthy.load(Ordering::SeqCst) {
            Reply::new(200).text("ok")
        } else {
            Reply::new(503).text("unhealthy")
        };
        io.write_all(&encode_reply(&reply, name, keep_alive, head_only))
            .await?;
        io.flush().await?;
        return Ok(next);
    }

    {
        let mut reqs = shared.requests.lock().unwrap();
        reqs.push(Recorded {
            method: head.method.clone(),
            path: head.target.clone(),
            headers: head.headers.clone(),
            body: body.clone(),
        });
        shared.hits.fetch_add(1, Ordering::SeqCst);
    }

    let reply = match first {
        "status" => {
            match segments
                .next()
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|c| (200..=599).contains(c))
            {
                Some(code) => Reply::new(code).json(&serde_json::json!({ "upstream": name })),
                None => Reply::new(400).text("bad status code"),
            }
        }
        "slow" => {
            let ms = query_param(&head.target, "ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Reply::new(200).json(&echo_json(shared, head, &body))
        }
        "hang" => {
            // Never answer; keep the socket open until the peer goes away or we are dropped.
            let mut sink = [0u8; 4096];
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            return Ok(Next::Abandon);
        }
        "reset" => {
            io.tcp().set_zero_linger()?;
            return Ok(Next::Abandon);
        }
        "reset-mid-body" => {
            let head_bytes = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\nx-upstream: {name}\r\n\r\n0123456789"
            );
            io.write_all(head_bytes.as_bytes()).await?;
            io.flush().await?;
            // Give the kernel a moment to put the bytes on the wire before the RST discards
            // anything still queued.
            tokio::time::sleep(Duration::from_millis(50)).await;
            io.tcp().set_zero_linger()?;
            return Ok(Next::Abandon);
        }
        "garbage" => {
            io.write_all(b"HTTP/1.1 abc\r\nnonsense\r\n\r\n").await?;
            return Ok(Next::Close);
        }
        "sse" => {
            let head_bytes = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nx-upstream: {name}\r\n{}\r\n",
                if keep_alive { "" } else { "connection: close\r\n" }
            );
            io.write_all(head_bytes.as_bytes()).await?;
            if head_only {
                io.flush().await?;
                return Ok(next);
            }
            write_chunk(io, b"data: first\n\n").await?;
            io.flush().await?;
            shared.release.wait().await;
            write_chunk(io, b"data: second\n\n").await?;
            io.write_all(b"0\r\n\r\n").await?;
            io.flush().await?;
            return Ok(next);
        }
        "ws" => {
            let upgrade = head.tokens("upgrade").iter().any(|t| t == "websocket");
            if !upgrade {
                Reply::new(400).text("expected Upgrade: websocket")
            } else {
                let accept = websocket_accept(head.header("sec-websocket-key").unwrap_or(""));
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\nx-upstream: {name}\r\n\r\n"
                );
                io.write_all(resp.as_bytes()).await?;
                if !buf.is_empty() {
                    io.write_all(buf).await?;
                    buf.clear();
                }
                io.flush().await?;
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let n = io.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(Next::Close);
                    }
                    io.write_all(&chunk[..n]).await?;
                    io.flush().await?;
                }
            }
        }
        "hop" => Reply::new(200)
            .header(
                "connection",
                if keep_alive {
                    "close-me, keep-alive"
                } else {
                    "close-me, close"
                },
            )
            .header("close-me", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("trailer", "x")
            .header("x-kept", "yes")
            .json(&echo_json(shared, head, &body)),
        "big" => {
            let n = query_param(&head.target, "bytes")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1024);
            let head_bytes = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {n}\r\nx-upstream: {name}\r\n{}\r\n",
                if keep_alive { "" } else { "connection: close\r\n" }
            );
            io.write_all(head_bytes.as_bytes()).await?;
            if !head_only {
                let block = vec![b'a'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(block.len());
                    io.write_all(&block[..k]).await?;
                    left -= k;
                }
            }
            io.flush().await?;
            return Ok(next);
        }
        "respond" => {
            let status = query_param(&head.target, "status")
                .and_then(|v| v.parse::<u16>().ok())
                .unwrap_or(200);
            let mut reply = Reply::new(status);
            for h in query_params(&head.target, "header") {
                if let Some((k, v)) = h.split_once(':') {
                    reply = reply.header(k.trim(), v.trim());
                }
            }
            reply.body = query_param(&head.target, "body")
                .unwrap_or_default()
                .into_bytes();
            reply
        }
        _ => Reply::new(200).json(&echo_json(shared, head, &body)),
    };
    io.write_all(&encode_reply(&reply, name, keep_alive, head_only))
        .await?;
    io.flush().await?;
    Ok(next)
}

async fn write_chunk<S: AsyncWrite + Unpin>(io: &mut S, data: &[u8]) -> io::Result<()> {
    io.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    io.write_all(data).await?;
    io.write_all(b"\r\n").await
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

struct CaSigner {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A throw-away CA and a leaf certificate for some DNS names / IP addresses, signed by it.
/// All PEM; keys are PKCS#8 ECDSA P-256.
#[derive(Clone)]
pub struct TestCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    ca: Arc<CaSigner>,
}

static CA_SERIAL: AtomicUsize = AtomicUsize::new(0);

impl TestCerts {
    /// A fresh CA plus a server leaf valid for `names` (DNS names; entries that parse as IP
    /// addresses become IP SANs).
    pub fn generate(names: &[&str]) -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let n = CA_SERIAL.fetch_add(1, Ordering::SeqCst);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("tollgate test CA {} {n}", std::process::id()),
        );
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let mut certs = TestCerts {
            ca_pem: ca_cert.pem(),
            cert_pem: String::new(),
            key_pem: String::new(),
            ca: Arc::new(CaSigner {
                cert: ca_cert,
                key: ca_key,
            }),
        };
        let (cert_pem, key_pem) = certs.leaf(names);
        certs.cert_pem = cert_pem;
        certs.key_pem = key_pem;
        certs
    }

    /// Another server certificate from the same CA, for other names: `(cert_pem, key_pem)`.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf names");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca.cert, &self.ca.key)
            .expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate (for mTLS) with common name `common_name`, signed by this CA:
    /// `(cert_pem, key_pem)`.
    pub fn client_cert(&self, common_name: &str) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.ca.cert, &self.ca.key)
            .expect("sign client cert");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `ca.pem`, `cert.pem`, `key.pem` into `dir`; returns their paths in that order.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        self.write_with_prefix(dir, "")
    }

    /// Like [`write_to`](Self::write_to) with file names `<prefix>ca.pem` etc.
    pub fn write_with_prefix(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf, PathBuf) {
        fs::create_dir_all(dir).expect("create cert dir");
        let paths = (
            dir.join(format!("{prefix}ca.pem")),
            dir.join(format!("{prefix}cert.pem")),
            dir.join(format!("{prefix}key.pem")),
        );
        fs::write(&paths.0, &self.ca_pem).expect("write ca.pem");
        fs::write(&paths.1, &self.cert_pem).expect("write cert.pem");
        fs::write(&paths.2, &self.key_pem).expect("write key.pem");
        paths
    }

    /// The CA as a reqwest root certificate.
    pub fn ca_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM")
    }

    /// A client that trusts only this CA (no proxy, no redirects, HTTP/1.1 only).
    pub fn client(&self) -> reqwest::Client {
        client_builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.ca_certificate())
            .build()
            .expect("TLS client")
    }
}

/// A client certificate for mTLS signed by `ca`: `(cert_pem, key_pem)`.
pub fn client_cert(ca: &TestCerts, common_name: &str) -> (String, String) {
    ca.client_cert(common_name)
}

/// A reqwest identity from PEM certificate + key (for mTLS clients).
pub fn identity(cert_pem: &str, key_pem: &str) -> reqwest::Identity {
    let mut pem = cert_pem.as_bytes().to_vec();
    pem.extend_from_slice(b"\n");
    pem.extend_from_slice(key_pem.as_bytes());
    reqwest::Identity::from_pem(&pem).expect("identity PEM")
}

// ---------------------------------------------------------------------------------------------
// Prometheus text helpers
// ---------------------------------------------------------------------------------------------

type MetricKey = (String, Vec<(String, String)>);

/// Parses `name{l="v",...}` at the start of `s`; returns the key and the rest of `s`.
fn parse_metric_key(s: &str) -> Option<(MetricKey, &str)> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(s.len());
    let name = s[..name_end].to_string();
    if name.is_empty() {
        return None;
    }
    let mut rest = &s[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // Skip separators.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let &(start, c) = chars.peek()?;
            if c == '}' {
                rest = &after[start + 1..];
                break;
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key.trim().to_string(), value));
        }
    }
    labels.sort();
    Some(((name, labels), rest))
}

fn metric_samples(text: &str) -> impl Iterator<Item = (MetricKey, f64)> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (key, rest) = parse_metric_key(line)?;
        let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
        Some((key, value))
    })
}

/// The value of the sample `query` (`name` or `name{a="x",b="y"}`) in Prometheus text: the
/// name must match and the label sets must be equal (order-insensitive).
pub fn find_metric(text: &str, query: &str) -> Option<f64> {
    let (want, rest) = parse_metric_key(query).expect("bad metric query");
    assert!(rest.trim().is_empty(), "bad metric query {query:?}");
    metric_samples(text).find_map(|(key, v)| (key == want).then_some(v))
}

/// The sum of every sample named like `query` whose labels include all of `query`'s labels
/// (0.0 when none). `sum_metrics(t, r#"tollgate_requests_total{route="a"}"#)` adds up all
/// methods and statuses of route `a`.
pub fn sum_metrics(text: &str, query: &str) -> f64 {
    let ((name, want), rest) = parse_metric_key(query).expect("bad metric query");
    assert!(rest.trim().is_empty(), "bad metric query {query:?}");
    metric_samples(text)
        .filter(|((n, labels), _)| *n == name && want.iter().all(|l| labels.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Gateway process
// ---------------------------------------------------------------------------------------------

fn tollgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// Ports a gateway's placeholders are replaced with.
#[derive(Clone, Copy, Debug)]
struct Ports {
    listen: SocketAddr,
    admin: SocketAddr,
    tls: SocketAddr,
}

impl Ports {
    fn allocate() -> Ports {
        // Hold all three at once so they are distinct.
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let (a, b, c) = (bind(), bind(), bind());
        Ports {
            listen: a.local_addr().unwrap(),
            admin: b.local_addr().unwrap(),
            tls: c.local_addr().unwrap(),
        }
    }

    fn render(&self, template: &str) -> String {
        template
            .replace("{TLS_LISTEN}", &self.tls.to_string())
            .replace("{LISTEN}", &self.listen.to_string())
            .replace("{ADMIN}", &self.admin.to_string())
    }
}

/// Writes `contents` to `path` atomically (temp file + rename), creating parent directories.
fn write_atomic(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dir");
    }
    let tmp = path.with_extension(format!(
        "{}tmp~",
        path.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

fn looks_like_addr_in_use(logs: &str) -> bool {
    let l = logs.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("addrinuse") || l.contains("os error 98")
}

/// Builder for [`Gateway`]: extra environment, extra files, extra CLI args.
pub struct GatewayBuilder {
    template: String,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>)>,
    args: Vec<String>,
    admin_token: Option<String>,
    ready_timeout: Duration,
}

impl GatewayBuilder {
    /// Sets an environment variable for the gateway process (overrides
    /// `TOLLGATE_LOG_FORMAT=json` if it names that).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes `contents` at `rel_path` (relative to the config's directory) before start.
    pub fn file(mut self, rel_path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files
            .push((rel_path.to_string(), contents.as_ref().to_vec()));
        self
    }

    /// Extra argument after `run -c <file>`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Bearer token the harness sends on its own admin requests (readiness probe, metrics,
    /// `admin_get`/`admin_post`), for configs with `admin_token_env`. Also set the env var.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    /// How long to wait for `/readyz` (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the gateway and waits for `/readyz`; panics with the captured logs on failure.
    pub async fn start(self) -> Gateway {
        match self.try_start().await {
            Ok(gw) => gw,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts the gateway and waits for `/readyz`. `Err` holds a description with the exit
    /// status (if it exited) and the captured logs. Retries on fresh ports when the gateway
    /// reports "address already in use".
    pub async fn try_start(self) -> Result<Gateway, String> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-test-")
            .tempdir()
            .expect("create tempdir");
        for (rel, contents) in &self.files {
            let path = dir.path().join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create dir for extra file");
            }
            fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let config_path = dir.path().join("gateway.toml");
        let admin_client = http_client();
        const ATTEMPTS: usize = 5;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = Ports::allocate();
            let config = ports.render(&self.template);
            fs::write(&config_path, &config).expect("write gateway.toml");
            let stdout = fs::File::create(dir.path().join("stdout.log")).expect("stdout.log");
            let stderr = fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
            let mut cmd = Command::new(tollgate_bin());
            cmd.arg("run")
                .arg("-c")
                .arg(&config_path)
                .args(&self.args)
                .current_dir(dir.path())
                .env("TOLLGATE_LOG_FORMAT", "json")
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let mut child = ChildGuard(Some(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("spawn {}: {e}", tollgate_bin())),
            ));
            let readyz = format!("http://{}/readyz", ports.admin);
            let deadline = Instant::now() + self.ready_timeout;
            loop {
                if let Some(status) = child.get().try_wait().expect("try_wait") {
                    let logs = read_logs(dir.path());
                    if attempt < ATTEMPTS && looks_like_addr_in_use(&logs) {
                        break; // retry on fresh ports
                    }
                    return Err(format!(
                        "tollgate exited before /readyz ({status}); config:\n{config}\n--- logs ---\n{logs}"
                    ));
                }
                let mut probe = admin_client.get(&readyz).timeout(Duration::from_secs(2));
                if let Some(token) = &self.admin_token {
                    probe = probe.bearer_auth(token);
                }
                let ready = probe
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                if ready {
                    return Ok(Gateway {
                        child: child.take(),
                        dir,
                        config_path,
                        ports,
                        has_tls: self.template.contains("{TLS_LISTEN}"),
                        admin_token: self.admin_token,
                        admin_client,
                    });
                }
                if Instant::now() >= deadline {
                    drop(child); // kill before reading the logs
                    return Err(format!(
                        "tollgate not ready within {:?}; config:\n{config}\n--- logs ---\n{}",
                        self.ready_timeout,
                        read_logs(dir.path())
                    ));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    }
}

/// Kills the child on drop unless taken.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("child taken")
    }

    fn take(&mut self) -> Child {
        self.0.take().expect("child taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_logs(dir: &Path) -> String {
    let read = |f: &str| fs::read(dir.join(f)).unwrap_or_default();
    let mut out = read("stdout.log");
    let err = read("stderr.log");
    if !out.is_empty() && !err.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(&err);
    String::from_utf8_lossy(&out).into_owned()
}

/// A running `tollgate run -c <tmp>/gateway.toml`, killed (SIGKILL) on drop.
///
/// The template's `{LISTEN}`, `{ADMIN}` and `{TLS_LISTEN}` are replaced with
/// `127.0.0.1:<free port>`; anything else (like upstream addresses) is the test's to fill in.
/// stdout/stderr go to `stdout.log`/`stderr.log` in [`dir`](Self::dir); the process runs
/// with that directory as its working directory and `TOLLGATE_LOG_FORMAT=json`.
pub struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    ports: Ports,
    has_tls: bool,
    admin_token: Option<String>,
    admin_client: reqwest::Client,
}

impl Gateway {
    /// Starts with default options; panics with the logs if it does not become ready.
    pub async fn start(config_template: &str) -> Gateway {
        Self::builder(config_template).start().await
    }

    pub fn builder(config_template: &str) -> GatewayBuilder {
        GatewayBuilder {
            template: config_template.to_string(),
            env: Vec::new(),
            files: Vec::new(),
            args: Vec::new(),
            admin_token: None,
            ready_timeout: Duration::from_secs(30),
        }
    }

    /// The plain HTTP listener (`{LISTEN}`).
    pub fn addr(&self) -> SocketAddr {
        self.ports.listen
    }

    /// The admin listener (`{ADMIN}`).
    pub fn admin(&self) -> SocketAddr {
        self.ports.admin
    }

    /// The TLS listener (`{TLS_LISTEN}`); panics if the template had none.
    pub fn tls_addr(&self) -> SocketAddr {
        assert!(self.has_tls, "the config template has no {{TLS_LISTEN}}");
        self.ports.tls
    }

    /// `http://<listen>/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.ports.listen, slash(path))
    }

    /// `http://<admin>/path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ports.admin, slash(path))
    }

    /// `https://<host>:<tls port>/path`; use with [`https_client`](Self::https_client), which
    /// resolves `host` to the TLS listener.
    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{}", self.tls_addr().port(), slash(path))
    }

    /// A client for the TLS listener: trusts `ca_pem` only, resolves each of `hosts` to the
    /// TLS listener, HTTP/1.1 and h2 via ALPN, no proxy, no redirects.
    pub fn https_client(&self, ca_pem: &str, hosts: &[&str]) -> reqwest::Client {
        self.https_client_builder(ca_pem, hosts)
            .build()
            .expect("https client")
    }

    /// The builder behind [`https_client`](Self::https_client), to add e.g. `.identity(..)`
    /// (see [`identity`]) or `.http2_prior_knowledge()`.
    pub fn https_client_builder(&self, ca_pem: &str, hosts: &[&str]) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"),
            );
        for host in hosts {
            b = b.resolve(host, self.tls_addr());
        }
        b
    }

    /// The temp directory holding `gateway.toml`, extra files and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new client (own connection pool): no proxy, no automatic redirects, HTTP/1.1 only.
    pub fn client(&self) -> reqwest::Client {
        http_client()
    }

    /// Sends signal number `sig` (e.g. [`SIGHUP`]) to the gateway process.
    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.child.id());
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Replaces this gateway's placeholders (`{LISTEN}`, `{ADMIN}`, `{TLS_LISTEN}`) in
    /// `template` with its ports.
    pub fn render(&self, template: &str) -> String {
        self.ports.render(template)
    }

    /// Renders `template` and atomically replaces `gateway.toml` with it (for reload tests;
    /// the gateway reloads on its own, or use [`signal`](Self::signal)(SIGHUP) or
    /// `admin_post("/reload")`).
    pub fn write_config(&self, template: &str) {
        write_atomic(&self.config_path, self.render(template).as_bytes());
    }

    /// Atomically writes a file relative to the config directory (e.g. a JWKS or keys file).
    pub fn write_file(&self, rel_path: &str, contents: impl AsRef<[u8]>) {
        write_atomic(&self.dir.path().join(rel_path), contents.as_ref());
    }

    fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.admin_client.request(method, self.admin_url(path));
        match &self.admin_token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// `GET` on the admin listener (with the admin token if one was given).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.admin_request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {}: {e}", self.admin_url(path)))
    }

    /// `POST` with a body on the admin listener (with the admin token if one was given).
    pub async fn admin_post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.admin_request(reqwest::Method::POST, path)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {}: {e}", self.admin_url(path)))
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = self.admin_get("/metrics").await;
        assert!(
            resp.status().is_success(),
            "GET /metrics: {}",
            resp.status()
        );
        resp.text().await.expect("metrics body")
    }

    /// The value of one sample, e.g.
    /// `metric(r#"tollgate_requests_total{route="a",method="GET",status="200"}"#)`; labels
    /// must match as a set (order-insensitive). `None` if no such sample.
    pub async fn metric(&self, name_with_labels: &str) -> Option<f64> {
        find_metric(&self.metrics().await, name_with_labels)
    }

    /// Sum over samples whose labels include the given ones (see [`sum_metrics`]).
    pub async fn metric_sum(&self, name_with_labels: &str) -> f64 {
        sum_metrics(&self.metrics().await, name_with_labels)
    }

    /// Captured stdout followed by captured stderr.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Every log line that parses as a JSON object.
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// Waits until the logs contain `needle`; panics with the logs on timeout.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            if Instant::now() >= deadline {
                panic!(
                    "log line containing {needle:?} not seen within {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tollgate check -c <tmp>/gateway.toml` on `contents` (placeholders `{LISTEN}`,
/// `{ADMIN}`, `{TLS_LISTEN}` filled with free ports), with `files` written next to it first.
/// Returns (exit status 0, stdout + stderr).
pub fn check_config(contents: &str, files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::Builder::new()
        .prefix("tollgate-check-")
        .tempdir()
        .expect("create tempdir");
    for (rel, body) in files {
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dir");
        }
        fs::write(&path, body).expect("write extra file");
    }
    let config = dir.path().join("gateway.toml");
    fs::write(&config, Ports::allocate().render(contents)).expect("write gateway.toml");
    let out = Command::new(tollgate_bin())
        .arg("check")
        .arg("-c")
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", tollgate_bin()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------------------------

/// How long raw reads wait for the next byte.
pub const RAW_IDLE: Duration = Duration::from_secs(5);

/// Connects to `addr`, writes `bytes`, and returns everything read until EOF, a reset, or
/// 5 s without data.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = RawConn::connect(addr).await;
    conn.send(bytes)
        .await
        .unwrap_or_else(|e| panic!("raw write to {addr}: {e}"));
    conn.read_to_end().await
}

/// A parsed response read by [`RawConn::read_response`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw TCP connection for hand-written HTTP. Reads give up (panic) after [`RAW_IDLE`]
/// without data unless stated otherwise.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` (errors are returned: the peer may have closed on purpose).
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await?;
        self.stream.flush().await
    }

    /// Half-closes the connection (sends FIN).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads more into the buffer: Ok(0) on EOF, Err on reset or after [`RAW_IDLE`].
    async fn fill(&mut self) -> io::Result<usize> {
        match tokio::time::timeout(RAW_IDLE, fill(&mut self.stream, &mut self.buf)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no data for {RAW_IDLE:?}"),
            )),
        }
    }

    /// Reads a response head: (status, headers with lowercased names). Panics on EOF, error,
    /// timeout or a malformed head.
    pub async fn read_response_head(&mut self) -> (u16, Vec<(String, String)>) {
        self.try_read_response_head()
            .await
            .unwrap_or_else(|e| panic!("reading response head: {e}"))
    }

    /// Like [`read_response_head`](Self::read_response_head), returning errors instead.
    pub async fn try_read_response_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = vec![httparse::EMPTY_HEADER; 256];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = resp.code.unwrap_or(0);
                        let headers = resp
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect();
                        self.buf.drain(..len);
                        return Ok((status, headers));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(invalid(&format!(
                            "bad response head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        )))
                    }
                }
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before a complete response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    /// Reads a body framed per `headers` (chunked, content-length, else until EOF).
    pub async fn read_body(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let chunked = header_all(headers, "transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            let RawConn { stream, buf } = self;
            return tokio::time::timeout(RAW_IDLE * 6, read_chunked(stream, buf))
                .await
                .expect("chunked body timed out")
                .expect("reading chunked body");
        }
        match header(headers, "content-length") {
            Some(len) => {
                let len: usize = len.trim().parse().expect("content-length");
                self.read_exact(len).await
            }
            None => self.read_to_end().await,
        }
    }

    /// Reads a complete response (head + body). Not for answers to `HEAD`, nor 1xx/204/304.
    pub async fn read_response(&mut self) -> RawResponse {
        let (status, headers) = self.read_response_head().await;
        let body = if status < 200 || status == 204 || status == 304 {
            Vec::new()
        } else {
            self.read_body(&headers).await
        };
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// Reads exactly `n` bytes (panics on EOF or timeout).
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill().await {
                Ok(0) => panic!(
                    "EOF after {} of {n} bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!("reading {n} bytes (have {}): {e}", self.buf.len()),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Returns buffered bytes, or else waits for the next read (empty on EOF/reset).
    pub async fn read_some(&mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            match self.fill().await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    panic!("no data within {RAW_IDLE:?}")
                }
                Err(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Everything until EOF, a reset, or [`RAW_IDLE`] without data (never panics).
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while let Ok(n) = self.fill().await {
            if n == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// True if the peer closes (EOF or reset) within `timeout`; data arriving meanwhile is
    /// kept in the buffer. False if the connection is still open at the deadline.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let read = fill(&mut self.stream, &mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The underlying socket.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin documentation examples
// ---------------------------------------------------------------------------------------------

/// The one ```toml block of `plugins/<file>`, with `{UP}` replaced by `up`
/// (`{LISTEN}` and `{ADMIN}` are left for [`Gateway::start`]).
pub fn doc_example(file: &str, up: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(file);
    let md = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = md
        .find("```toml\n")
        .unwrap_or_else(|| panic!("{file} has no ```toml block"))
        + "```toml\n".len();
    let len = md[start..]
        .find("```")
        .unwrap_or_else(|| panic!("{file}: unterminated ```toml block"));
    assert!(
        !md[start + len + 3..].contains("```toml"),
        "{file} has more than one ```toml block"
    );
    md[start..start + len].replace("{UP}", &up.to_string())
}

/// `tollgate check` refuses a config whose `[plugins.<name>]` table of type
/// `ty` holds `keys`, naming `place` (a key path) in its output; for each case.
pub fn assert_plugin_errors(ty: &str, name: &str, cases: &[(&str, &str)]) {
    for (keys, place) in cases {
        let cfg = format!(
            "[server]\nlisten = \"{{LISTEN}}\"\nadmin_listen = \"{{ADMIN}}\"\n\n\
             [plugins.{name}]\ntype = \"{ty}\"\n{keys}\n\n\
             [upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\npath = \"/\"\nplugins = [\"{name}\"]\n"
        );
        let (ok, out) = check_config(&cfg, &[]);
        assert!(!ok, "accepted:\n{keys}\n{out}");
        assert!(out.contains(place), "{keys}: expected {place} in:\n{out}");
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`; Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// Asserts that a raw response is a problem+json (RFC 9457) answer with `status`,
/// in the header and in the body; `what` names the case in the failure message.
pub fn assert_problem(r: &RawResponse, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body_str());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: problem body is not JSON ({e}): {}", r.body_str()));
    assert_eq!(v["status"], status, "{what}: {v}");
}
