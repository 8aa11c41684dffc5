//! [`Client`]: one pooled HTTP/1.1 client for the calls a plugin makes to one
//! service.

use super::Target;
use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Informational answers (100, 103) skipped before the real one, at most.
const MAX_INFORMATIONAL: usize = 4;

/// The bounds of a [`Client`]'s calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect plus TLS handshake (Pingora's connection and
    /// total-connection timeouts).
    pub connect: Duration,
    /// Each read and each write; `None`: only [`total`](Self::total) (or the
    /// caller) bounds them.
    pub io: Option<Duration>,
    /// The whole call (lookup, connect, request and answer); `None` when the
    /// caller bounds it.
    pub total: Option<Duration>,
    /// Largest response body read; a larger one ends the call with
    /// [`Response::complete`] `false` and an empty body.
    pub max_body: usize,
    /// More tries when a connection taken from the pool fails at once (the
    /// server closed it meanwhile) other than by a timeout.
    pub stale_retries: u32,
}

/// What the service answered.
#[derive(Debug)]
pub struct Response {
    pub header: Box<ResponseHeader>,
    /// Empty when the body was larger than [`Limits::max_body`].
    pub body: Bytes,
    /// The whole response was read (the connection went back to the pool).
    pub complete: bool,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.header.status.as_u16()
    }
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The host name does not resolve.
    Resolve,
    /// No connection: refused, unreachable, the TLS handshake or the
    /// certificate failed.
    Connect,
    /// A connect, read or write timeout, or [`Limits::total`].
    Timeout,
    /// The exchange failed on an open connection: an answer that is not HTTP,
    /// a connection closed without an answer, a read or write error.
    Protocol,
}

/// A failed call, in plain words (for a log line: no Pingora error chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    code: &'static str,
    message: String,
}

impl Error {
    fn new(kind: ErrorKind, code: &'static str, message: String) -> Error {
        Error {
            kind,
            code,
            message,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// A short fixed name for a log field: Pingora's error type
    /// (`ConnectRefused`, `ReadTimedout`…), `ResolveError` or `TotalTimedout`.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<&pingora::Error> for Error {
    fn from(e: &pingora::Error) -> Error {
        use ErrorType::*;
        let kind = match e.etype() {
            ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout => {
                ErrorKind::Timeout
            }
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | AcceptError
            | SocketError | ConnectProxyFailure | InvalidCert | TLSHandshakeFailure
            | TLSWantX509Lookup | HandshakeError => ErrorKind::Connect,
            _ => ErrorKind::Protocol,
        };
        Error::new(kind, e.etype().as_str(), plain(e))
    }
}

/// A Pingora error in plain words, for a log line: what went wrong, without
/// Pingora's internal chain of sources, types and contexts.
pub(super) fn plain(e: &pingora::Error) -> String {
    use ErrorType::*;
    let what = match e.etype() {
        ConnectTimedout => "the connection timed out",
        ConnectRefused => "the connection was refused",
        ConnectNoRoute => "there is no route to the host",
        TLSHandshakeTimedout => "the TLS handshake timed out",
        InvalidCert => "the server's certificate cannot be verified",
        TLSHandshakeFailure | TLSWantX509Lookup | HandshakeError => {
            // rustls says why (an unknown issuer, another name) at the root.
            let mut root = e;
            while let Some(c) = root
                .cause
                .as_ref()
                .and_then(|c| c.downcast_ref::<pingora::Error>())
            {
                root = c;
            }
            // Its context embeds a Display of an inner error chain:
            // "TLS connect() failed:  TLSHandshakeFailure context: … cause: <why>, SNI: …".
            let why = root
                .context
                .as_ref()
                .map(|c| c.as_str())
                .and_then(|c| c.strip_prefix("TLS connect() failed:"))
                .map(|c| c.split(", SNI:").next().unwrap_or(c))
                .map(|c| c.rsplit("cause: ").next().unwrap_or(c).trim())
                .filter(|c| !c.is_empty() && !c.contains("context:"));
            return match why {
                Some(why) => format!("the TLS handshake failed ({why})"),
                None => "the TLS handshake failed".into(),
            };
        }
        ConnectError | BindError | AcceptError | SocketError | ConnectProxyFailure => {
            "the connection could not be made"
        }
        InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 => {
            "the server's answer is not valid HTTP"
        }
        ReadTimedout => "the server did not answer in time",
        WriteTimedout => "sending the request timed out",
        ReadError => "reading the answer failed",
        WriteError => "sending the request failed",
        ConnectionClosed => "the server closed the connection without an answer",
        _ => "the request failed",
    };
    what.to_string()
}

/// A pooled HTTP/1.1 client for one service URL, built once per plugin
/// instance (its pool lives as long as the instance, across reloads that
/// keep it). TLS is verified against the platform roots (or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), with the URL's host as SNI and expected name.
pub struct Client {
    /// The plugin instance, for log lines.
    name: String,
    target: Target,
    connector: Connector,
    limits: Limits,
    /// The service's address when its owner fixed it ([`Client::set_address`]);
    /// otherwise the host is looked up on every call.
    peer: ArcSwapOption<HttpPeer>,
}

impl Client {
    /// A client for `target`; an error when no TLS client can be set up (no
    /// CA certificates available).
    pub fn new(name: &str, target: Target, limits: Limits) -> Result<Client, String> {
        // Pingora's connector panics when it cannot load the CA certificates.
        let connector = std::panic::catch_unwind(|| Connector::new(None)).map_err(|_| {
            "cannot set up the HTTPS client (no CA certificates available?)".to_string()
        })?;
        Ok(Client {
            name: name.to_string(),
            target,
            connector,
            limits,
            peer: ArcSwapOption::empty(),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The fixed address, if [`set_address`](Self::set_address) gave one.
    pub fn address(&self) -> Option<SocketAddr> {
        self.peer
            .load()
            .as_ref()
            .and_then(|p| p._address.as_inet().copied())
    }

    /// Calls go to `addr` from now on (pooled connections to another address
    /// are no longer used) instead of a lookup of the host on every call.
    pub fn set_address(&self, addr: SocketAddr) {
        if self.address() != Some(addr) {
            self.peer.store(Some(Arc::new(self.make_peer(addr))));
        }
    }

    fn make_peer(&self, addr: SocketAddr) -> HttpPeer {
        let t = &self.target;
        let mut peer = HttpPeer::new(addr, t.tls, t.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.limits.connect);
        o.total_connection_timeout = Some(self.limits.connect);
        o.read_timeout = self.limits.io;
        o.write_timeout = self.limits.io;
        o.idle_timeout = Some(POOL_IDLE);
        o.verify_cert = true;
        o.verify_hostname = true;
        peer
    }

    /// `GET <path>` with the URL's `Host` and the `headers` given.
    pub fn get_request(&self, headers: &[(&'static str, &str)]) -> Result<RequestHeader, Error> {
        self.request("GET", None, headers.iter().copied())
    }

    /// `POST <path>` with the URL's `Host`, a `Content-Length` for a body of
    /// `len` bytes and the `headers` given.
    pub fn post_request<N, V>(
        &self,
        headers: impl IntoIterator<Item = (N, V)>,
        len: usize,
    ) -> Result<RequestHeader, Error>
    where
        N: pingora::http::IntoCaseHeaderName,
        V: TryInto<http::HeaderValue>,
    {
        self.request("POST", Some(len), headers)
    }

    /// The one request head of every call: method, the URL's path and
    /// `Host`, `Content-Length` when there is a body, then `headers`.
    fn request<N, V>(
        &self,
        method: &str,
        body_len: Option<usize>,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Result<RequestHeader, Error>
    where
        N: pingora::http::IntoCaseHeaderName,
        V: TryInto<http::HeaderValue>,
    {
        let t = &self.target;
        let mut req =
            RequestHeader::build(method, t.path.as_bytes(), None).map_err(|e| Error::from(&*e))?;
        req.insert_header("host", t.authority.as_str())
            .map_err(|e| Error::from(&*e))?;
        if let Some(len) = body_len {
            req.insert_header("content-length", len)
                .map_err(|e| Error::from(&*e))?;
        }
        for (n, v) in headers {
            req.insert_header(n, v).map_err(|e| Error::from(&*e))?;
        }
        Ok(req)
    }

    /// One call: a pooled connection, the request (no body), the answer's
    /// head and a bounded body. A pooled connection the service had already
    /// closed gets up to [`Limits::stale_retries`] more tries.
    pub async fn send(&self, req: &RequestHeader) -> Result<Response, Error> {
        self.send_body(req, None).await
    }

    /// [`send`](Self::send) with a request body (its length already in
    /// `req`'s `Content-Length`).
    pub async fn send_body(
        &self,
        req: &RequestHeader,
        body: Option<Bytes>,
    ) -> Result<Response, Error> {
        let Some(total) = self.limits.total else {
            return self.call(req, body).await;
        };
        match tokio::time::timeout(total, self.call(req, body)).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "TotalTimedout",
                format!("no answer within {total:?}"),
            )),
        }
    }

    async fn call(&self, req: &RequestHeader, body: Option<Bytes>) -> Result<Response, Error> {
        let peer = match self.peer.load_full() {
            Some(p) => p,
            None => Arc::new(self.make_peer(self.lookup().await?)),
        };
        let mut retries = 0;
        loop {
            let (mut s, reused) = self
                .connector
                .get_http_session(&*peer)
                .await
                .map_err(|e| Error::from(&*e))?;
            // Pingora's connector leaves these to the caller (its proxy sets
            // them from the peer the same way).
            s.set_read_timeout(self.limits.io);
            s.set_write_timeout(self.limits.io);
            match exchange(&mut s, req.clone(), body.clone(), self.limits.max_body).await {
                Ok(answer) => {
                    if answer.complete {
                        self.connector
                            .release_http_session(s, &*peer, Some(POOL_IDLE))
                            .await;
                    }
                    return Ok(answer);
                }
                Err(e) => {
                    let e = Error::from(&*e);
                    if !reused || retries >= self.limits.stale_retries || e.is_timeout() {
                        return Err(e);
                    }
                    retries += 1;
                    tracing::debug!(plugin = %self.name, url = %self.target.display, error = %e, "pooled connection failed; retrying");
                }
            }
        }
    }

    async fn lookup(&self) -> Result<SocketAddr, Error> {
        let t = &self.target;
        let resolve = |message| Error::new(ErrorKind::Resolve, "ResolveError", message);
        tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| resolve(format!("cannot resolve {}: {e}", t.host)))?
            .next()
            .ok_or_else(|| resolve(format!("{} resolves to no address", t.host)))
    }
}

async fn exchange(
    s: &mut HttpSession,
    req: RequestHeader,
    body: Option<Bytes>,
    max_body: usize,
) -> pingora::Result<Response> {
    s.write_request_header(Box::new(req)).await?;
    if let Some(b) = body {
        s.write_request_body(b, true).await?;
    }
    s.finish_request_body().await?;
    s.read_response_header().await?;
    // Informational answers (100, 103) come before the real one.
    let mut informational = 0;
    while s
        .response_header()
        .is_some_and(|h| h.status.is_informational())
    {
        informational += 1;
        if informational > MAX_INFORMATIONAL {
            return pingora::Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "too many informational responses",
            );
        }
        s.read_response_header().await?;
    }
    let header = match s.response_header() {
        Some(h) => Box::new(h.clone()),
        None => {
            return pingora::Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header")
        }
    };
    let mut body = BytesMut::new();
    while let Some(chunk) = s.read_response_body().await? {
        if body.len() + chunk.len() > max_body {
            return Ok(Response {
                header,
                body: Bytes::new(),
                complete: false,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        header,
        body: body.freeze(),
        complete: true,
    })
}
