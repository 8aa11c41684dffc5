//! The listening app in front of Pingora's HTTP/1 handling. Pingora has no total
//! deadline for a request head (pingora#447) and a fixed 1 MiB head limit, so
//! this reads each request head itself, with `header_timeout` from its first
//! byte and `max_header_size` / `max_headers` enforced before anything is
//! buffered further, validates it strictly (`head`: framing headers, line
//! endings, request line, field syntax; pingora#945), then hands the bytes to
//! Pingora's parser as a prefix. A refused head gets a problem+json answer and
//! the connection is closed.
//! HTTP/2 connections go straight to Pingora.

use super::head::{ChunkedBody, HeadScanner, Progress};
use super::{problem, Gateway};
use crate::runtime::{Limits, Runtime};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
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
    pub state: Arc<ArcSwap<Runtime>>,
}

enum Head {
    /// The bytes read (the head, maybe more), and the state of a chunked body
    /// not complete in them.
    Ready(BytesMut, Option<ChunkedBody>),
    Closed,
    Refuse(u16, &'static str),
}

async fn read_head(
    stream: &mut Stream,
    limits: &Limits,
    reused: bool,
    shutdown: &ShutdownWatch,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
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
    let first = tokio::time::timeout(wait, stream.read_buf(&mut buf)).await;
    match first {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Head::Closed,
    }
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    // Validated line by line as bytes arrive (see `head`): a malformed head is
    // refused at its first bad line, before the rest is waited for.
    let mut scanner = HeadScanner::new(limits.max_headers);
    loop {
        match scanner.feed(&buf) {
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
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
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
        let mut settings = None;
        loop {
            let limits = self.state.load().limits.clone();
            let head = match read_head(&mut stream, &limits, settings.is_some(), shutdown).await {
                Head::Ready(h, chunked) => {
                    if let Some(body) = chunked {
                        stream = Box::new(ChunkGuard {
                            inner: stream,
                            body,
                        });
                    }
                    h
                }
                Head::Closed => return,
                Head::Refuse(status, detail) => {
                    let id = crate::plugins::request_id::new_id();
                    tracing::info!(target: "tollgate::access", request_id = %id, status, detail, "request refused before parsing");
                    crate::metrics::METRICS
                        .requests_total
                        .with_label_values(&["", "", &status.to_string()])
                        .inc();
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

/// The connection while Pingora reads a chunked request body: every byte read
/// passes [`ChunkedBody`] first, and a read that breaks the chunked framing
/// fails (the request is aborted, the upstream never gets a complete request,
/// the connection is closed). Past the end of the body it is a plain pass-through.
#[derive(Debug)]
struct ChunkGuard {
    inner: Stream,
    body: ChunkedBody,
}

impl AsyncRead for ChunkGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if !self.body.is_done() {
            let new = &buf.filled()[before..];
            if let Err(e) = self.body.feed(new) {
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
        self.inner.try_peek(buf).await
    }
}
