//! The listening app in front of Pingora's HTTP/1 handling. Pingora has no total
//! deadline for a request head (pingora#447) and a fixed 1 MiB head limit, so
//! this reads each request head itself, with `header_timeout` from its first
//! byte and `max_header_size` / `max_headers` enforced before anything is
//! buffered further, then hands the bytes to Pingora's parser as a prefix.
//! HTTP/2 connections go straight to Pingora.

use super::{problem, Gateway};
use crate::runtime::{Limits, Runtime};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct GatewayApp {
    pub proxy: Arc<HttpProxy<Gateway>>,
    pub state: Arc<ArcSwap<Runtime>>,
}

enum Head {
    Ready(BytesMut),
    Closed,
    Refuse(u16, &'static str),
}

/// Offset just past the blank line ending a request head, if present.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4)
        .or_else(|| {
            // Bare-LF line endings, which Pingora's parser also accepts.
            let start = from.saturating_sub(1);
            buf[start..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| start + p + 2)
        })
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
    let mut shutdown = shutdown.clone();
    let first = tokio::select! {
        biased;
        r = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => r,
        _ = shutdown.changed() => return Head::Closed,
    };
    match first {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Head::Closed,
    }
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let mut scanned = 0;
    loop {
        if let Some(end) = head_end(&buf, scanned) {
            if end > limits.max_header_size {
                return Head::Refuse(431, "the request's header section is too large");
            }
            let lines = buf[..end].iter().filter(|&&b| b == b'\n').count();
            if lines.saturating_sub(2) > limits.max_headers {
                return Head::Refuse(431, "the request has too many header fields");
            }
            return Head::Ready(buf);
        }
        scanned = buf.len();
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

#[async_trait]
impl ServerApp for GatewayApp {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let mut settings = None;
        loop {
            let limits = self.state.load().limits.clone();
            let head = match read_head(&mut stream, &limits, settings.is_some(), shutdown).await {
                Head::Ready(h) => h,
                Head::Closed => return None,
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
                    return None;
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
            session.set_pipelined_prefix(head);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let (s, p) = reused.consume();
            stream = s;
            settings = p;
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn finds_head_end() {
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 0),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        // A terminator split across reads is still found.
        let b = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(b, b.len() - 2), Some(b.len()));
    }
}
