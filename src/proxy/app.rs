//! The listening app in front of Pingora's HTTP/1 handling. Pingora has no total
//! deadline for a request head (pingora#447) and a fixed 1 MiB head limit, so
//! this reads each request head itself, with `header_timeout` from its first
//! byte and `max_header_size` / `max_headers` enforced before anything is
//! buffered further, validates it strictly (`head`: framing headers, line
//! endings, request line, field syntax; pingora#945), then hands the bytes to
//! Pingora's parser as a prefix. A refused head gets a problem+json answer and
//! the connection is closed.
//! HTTP/2 connections go straight to Pingora: through ALPN on TLS, and with prior
//! knowledge (h2c, its connection preface read here) on plain listeners when
//! `[server] h2c` is on; when it is off, such a connection gets a GOAWAY
//! `HTTP_1_1_REQUIRED` that says so (an HTTP/1 answer would be unreadable to it).

use super::head::{ChunkedBody, HeadScanner, Progress};
use super::{problem, Gateway};
use crate::runtime::{Limits, Live};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::prelude::fast_timeout::fast_timeout;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID, ALPN,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The edge in front of an HTTP app: the proxy, or (SPEC §6: the same rules
/// and `header_timeout`) the admin API's `HttpServer`.
pub struct GatewayApp<A = HttpProxy<Gateway>> {
    pub proxy: Arc<A>,
    /// The live snapshot: each request head is read under its current limits.
    pub live: Live,
    /// The admin listener: its refusals are logged, but not counted as proxy
    /// traffic in `tollgate_requests_total`.
    pub admin: bool,
}

enum Head {
    /// The bytes read (the head, maybe more), and the state of a chunked body
    /// not complete in them.
    Ready(BytesMut, Option<ChunkedBody>),
    /// An HTTP/2 connection preface (prior knowledge), and what followed it.
    H2(BytesMut),
    Closed,
    Refuse(u16, &'static str),
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The head buffer's first size (see `read_head`).
const HEAD_BUF: usize = 1024;

async fn read_head(
    stream: &mut Stream,
    limits: &Limits,
    reused: bool,
    shutdown: &ShutdownWatch,
) -> Head {
    // Small at first: an idle keep-alive connection holds this buffer while it
    // waits for its next request. Most request heads fit; for a larger one,
    // `read_buf` grows it (`BytesMut` doubles its capacity when full).
    let mut buf = BytesMut::with_capacity(HEAD_BUF);
    // Waiting for a request to start: the keep-alive idle limit, or the header
    // deadline for a fresh connection's first request.
    let wait = if reused {
        limits.idle_timeout
    } else {
        limits.header_timeout
    };
    // Not cut short by a shutdown: a client may be sending its next request on
    // this connection right now, and closing under it makes that request fail.
    // The request is served with `Connection: close` (see `process_new`); a
    // connection that stays idle is closed when the grace period ends.
    let _ = shutdown;
    // Pingora's timer (`fast_timeout`), not Tokio's: registering a Tokio timer
    // that ends before the ones pending wakes the runtime's driver through
    // its eventfd, a `write(2)` on every other request (perf, `benches/load`).
    // Pingora's timers share one entry per 10 ms of deadline and are not
    // cancelled: a worker holds at most `idle_timeout` / 10 ms of them
    // (6,000 for 60 s); above 900 s Pingora uses Tokio's.
    let first = fast_timeout(wait, stream.read_buf(&mut buf)).await;
    match first {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Head::Closed,
    }
    let deadline = std::time::Instant::now() + limits.header_timeout;
    // Validated line by line as bytes arrive (see `head`): a malformed head is
    // refused at its first bad line, before the rest is waited for.
    let mut scanner = HeadScanner::new(limits.max_headers);
    loop {
        // A connection's first bytes may be the HTTP/2 preface; its request line is
        // not valid HTTP/1, so it is looked for before the head is validated.
        let preface = !reused && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]);
        if preface && buf.len() >= H2_PREFACE.len() {
            return Head::H2(buf);
        }
        let progress = if preface {
            Progress::Partial
        } else {
            scanner.feed(&buf)
        };
        match progress {
            Progress::Complete(s) if s.end > limits.max_header_size => {
                return Head::Refuse(431, "the request's header section is too large");
            }
            Progress::Complete(s) if s.chunked => {
                // The body bytes read with the head are checked now: a broken
                // chunk line is refused before anything reaches an upstream.
                let mut body = ChunkedBody::new();
                return match body.feed(&buf[s.end..]) {
                    Ok(_) if body.is_done() => Head::Ready(buf, None),
                    Ok(_) => Head::Ready(buf, Some(body)),
                    Err(e) => Head::Refuse(400, e.detail()),
                };
            }
            Progress::Complete(_) => return Head::Ready(buf, None),
            Progress::Invalid(e) => return Head::Refuse(e.status(), e.detail()),
            Progress::Partial => {}
        }
        if buf.len() > limits.max_header_size {
            return Head::Refuse(431, "the request's header section is too large");
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match fast_timeout(left, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Head::Closed,
            Err(_) => return Head::Refuse(408, "the request header was not received in time"),
        }
    }
}

/// After a refusal: the response is written, the write side closed; what the
/// client still sends (the rest of a refused body, pipelined requests) is read
/// and dropped for a moment, so that closing with unread data does not reset
/// the connection before the client has read the response.
async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown().await;
    // On the heap: an array here would be part of every connection's future,
    // idle or not.
    let mut sink = vec![0u8; 4096];
    let mut left = LINGER_BYTES;
    let deadline = tokio::time::Instant::now() + LINGER;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for GatewayApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        // Pingora runs this in the task it spawned for the connection, whose
        // future is sized for a TLS handshake (8 KiB, measured with heaptrack).
        // An HTTP/1 connection can then sit in keep-alive for a long time:
        // it moves to a task of its own, about a fifth of that, and Pingora's
        // task ends here.
        let app = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { app.serve_http1(stream, &shutdown).await });
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> GatewayApp<A> {
    /// The requests of one HTTP/1 connection, until it closes.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let _open = crate::signals::OpenConnection::enter();
        let mut settings = None;
        loop {
            let limits = self.live.load().limits.clone();
            let head = match read_head(&mut stream, &limits, settings.is_some(), shutdown).await {
                Head::Ready(h, chunked) => {
                    if let Some(body) = chunked {
                        stream = Box::new(ChunkGuard {
                            inner: stream,
                            body: Some(body),
                            replay: BytesMut::new(),
                        });
                    }
                    h
                }
                Head::H2(read) => return self.serve_h2c(stream, read, shutdown).await,
                Head::Closed => return,
                Head::Refuse(status, detail) => {
                    let id = crate::pipeline::new_request_id();
                    let listener = if self.admin { "admin" } else { "proxy" };
                    tracing::info!(target: "tollgate::access", request_id = %id, status, detail, listener, "request refused before parsing");
                    if !self.admin {
                        // No method was read: `_OTHER` (SPEC §7), never client bytes.
                        crate::metrics::METRICS
                            .requests_total
                            .with_label_values(&["", "_OTHER", &status.to_string()])
                            .inc();
                    }
                    let _ = stream
                        .write_all(&problem::raw_http1(status, detail, &id))
                        .await;
                    let _ = stream.flush().await;
                    linger(&mut stream).await;
                    return;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                None => session.set_keepalive(Some(limits.idle_timeout.as_secs().max(1))),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            // Each read of the request body waits at most body_timeout (Pingora's
            // default is 60 s); `request_body_filter` shortens it to keep the body
            // above min_body_rate.
            session.set_read_timeout(Some(limits.body_timeout));
            session.set_pipelined_prefix(head);
            let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
                return;
            };
            let (s, p) = reused.consume();
            stream = if s.as_any().is::<ChunkGuard>() {
                match s.into_any().downcast::<ChunkGuard>() {
                    Ok(guard) => guard.inner,
                    Err(_) => return,
                }
            } else {
                s
            };
            settings = p;
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> GatewayApp<A> {
    /// A plain connection that opened with the HTTP/2 preface (`read`: the bytes
    /// read so far, preface included).
    async fn serve_h2c(&self, mut stream: Stream, read: BytesMut, shutdown: &ShutdownWatch) {
        let enabled = self.live.load().config.server.h2c;
        if enabled && stream.get_ssl_digest().is_none() {
            let mut options = self.proxy.server_options().cloned().unwrap_or_default();
            options.h2c = true;
            let app = Arc::new(H2c {
                proxy: Arc::clone(&self.proxy),
                options,
            });
            let stream: Stream = Box::new(ChunkGuard {
                inner: stream,
                body: None,
                replay: read,
            });
            ServerApp::process_new(&app, stream, shutdown).await;
            return;
        }
        tracing::info!(target: "tollgate::access", "HTTP/2 without TLS (h2c) refused: [server] h2c is off");
        let _ = stream.write_all(&h2c_refusal()).await;
        let _ = stream.flush().await;
        linger(&mut stream).await;
    }
}

const H2C_DISABLED: &[u8] =
    b"cleartext HTTP/2 (h2c) is not enabled on this listener: use HTTP/1.1, or HTTP/2 over TLS";

/// An HTTP/2 server preface (empty SETTINGS) and a GOAWAY `HTTP_1_1_REQUIRED`
/// whose debug data says why: what an HTTP/2 client can read and report.
fn h2c_refusal() -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + 9 + 8 + H2C_DISABLED.len());
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = (8 + H2C_DISABLED.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0xdu32.to_be_bytes());
    out.extend_from_slice(H2C_DISABLED);
    out
}

/// Pingora's HTTP/2 server with h2c on, for one connection whose preface the
/// gateway has read: the same proxy serves its requests.
struct H2c<A> {
    proxy: Arc<A>,
    options: HttpServerOptions,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for H2c<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.proxy.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.proxy.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

/// The connection wrapped for Pingora: first the bytes the gateway already read
/// from it (`replay`: an h2c preface), then, while Pingora reads a chunked
/// request body, every byte read passes [`ChunkedBody`] first, and a read that
/// breaks the chunked framing fails with the [`ChunkError`](super::head::ChunkError)
/// (the request is aborted with a 400 when nothing was answered yet, the upstream
/// never gets a complete request, the connection is closed). Past the end of the
/// body it is a plain pass-through.
#[derive(Debug)]
struct ChunkGuard {
    inner: Stream,
    body: Option<ChunkedBody>,
    replay: BytesMut,
}

impl AsyncRead for ChunkGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        if let Some(body) = this.body.as_mut().filter(|b| !b.is_done()) {
            let new = &buf.filled()[before..];
            if let Err(e) = body.feed(new) {
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChunkGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ChunkGuard {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for ChunkGuard {
    fn id(&self) -> pingora::protocols::UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ChunkGuard {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ChunkGuard {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ChunkGuard {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for ChunkGuard {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for ChunkGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.replay.is_empty() {
            // Not peeked: Pingora then trusts its options (h2c on, for a replayed preface).
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}
