//! `idempotency`: a retried request with the same `Idempotency-Key` gets the
//! first request's final response again instead of reaching the upstream twice.
//!
//! * Keys are scoped by consumer; a record's fingerprint is the SHA-256 of the
//!   method, normalised path, query and body.
//! * First request → forwarded; its final response (status, headers, body up
//!   to `max_response`) is stored for `ttl`. 5xx, timeouts, truncated or
//!   oversized responses are not stored, so the client may retry.
//! * Same key, same fingerprint, stored → replayed with `Idempotent-Replayed:
//!   true`; still in flight → 409; different fingerprint → 422.
//! * The local store is bounded by `max_size` bytes (oldest records go first)
//!   and forgets expired records on every maintenance tick.

use super::{read_body, BodyError, BuildCtx, BuildError, BuildResult, Flow, Phase, Plugin, Reply};
use crate::config::{IdempotencyConfig, StateBackend};
use crate::metrics::METRICS;
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A stored final response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Stored {
    fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>()
            + 64
    }
}

#[derive(Debug)]
enum Record {
    InFlight {
        fp: [u8; 32],
        token: u64,
        expires: Instant,
    },
    Done {
        fp: [u8; 32],
        resp: Arc<Stored>,
        expires: Instant,
        seq: u64,
    },
}

/// What a request with a key may do.
#[derive(Debug)]
pub enum Begin {
    /// First of its key: forward it; `token` identifies its in-flight marker.
    Proceed(u64),
    InFlight,
    Mismatch,
    Replay(Arc<Stored>),
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// Stored records in insertion order, for eviction by size.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next: u64,
}

/// The in-memory record store of one plugin instance.
pub struct LocalStore {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl LocalStore {
    pub fn new(max_bytes: usize) -> Self {
        LocalStore {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(&self, key: &str, fp: [u8; 32], ttl: Duration) -> Begin {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        let expired = match inner.records.get(key) {
            Some(Record::InFlight { expires, .. }) | Some(Record::Done { expires, .. }) => {
                *expires <= now
            }
            None => true,
        };
        if !expired {
            return match inner.records.get(key) {
                Some(Record::InFlight { fp: f, .. }) if *f == fp => Begin::InFlight,
                Some(Record::Done { fp: f, resp, .. }) if *f == fp => Begin::Replay(resp.clone()),
                _ => Begin::Mismatch,
            };
        }
        if let Some(Record::Done { resp, .. }) = inner.records.remove(key) {
            inner.bytes = inner.bytes.saturating_sub(resp.size());
        }
        inner.next += 1;
        let token = inner.next;
        inner.records.insert(
            key.to_string(),
            Record::InFlight {
                fp,
                token,
                expires: now + ttl,
            },
        );
        Begin::Proceed(token)
    }

    /// Store the response of the request holding `token`.
    pub fn complete(&self, key: &str, token: u64, resp: Stored, ttl: Duration) -> bool {
        let now = Instant::now();
        let size = resp.size();
        let mut g = self.lock();
        let inner = &mut *g;
        let fp = match inner.records.get(key) {
            Some(Record::InFlight { fp, token: t, .. }) if *t == token => *fp,
            _ => return false,
        };
        if size > self.max_bytes {
            inner.records.remove(key);
            return false;
        }
        inner.next += 1;
        let seq = inner.next;
        inner.records.insert(
            key.to_string(),
            Record::Done {
                fp,
                resp: Arc::new(resp),
                expires: now + ttl,
                seq,
            },
        );
        inner.order.push_back((key.to_string(), seq));
        inner.bytes += size;
        while inner.bytes > self.max_bytes {
            let Some((k, s)) = inner.order.pop_front() else {
                break;
            };
            if matches!(inner.records.get(&k), Some(Record::Done { seq, .. }) if *seq == s) {
                if let Some(Record::Done { resp, .. }) = inner.records.remove(&k) {
                    inner.bytes = inner.bytes.saturating_sub(resp.size());
                }
            }
        }
        true
    }

    /// Drop the in-flight marker of `token` (the response is not stored).
    pub fn abort(&self, key: &str, token: u64) {
        let mut g = self.lock();
        if matches!(g.records.get(key), Some(Record::InFlight { token: t, .. }) if *t == token) {
            g.records.remove(key);
        }
    }

    /// Forget expired records.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        let mut freed = 0;
        inner.records.retain(|_, r| match r {
            Record::InFlight { expires, .. } => *expires > now,
            Record::Done { expires, resp, .. } => {
                let keep = *expires > now;
                if !keep {
                    freed += resp.size();
                }
                keep
            }
        });
        inner.bytes = inner.bytes.saturating_sub(freed);
        let records = &inner.records;
        inner
            .order
            .retain(|(k, s)| matches!(records.get(k), Some(Record::Done { seq, .. }) if seq == s));
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Records in Redis, shared by every gateway with the same config. A value is
/// `F<fingerprint><token>` while in flight, `D<fingerprint><response>` once
/// stored; the in-flight marker is taken with `SET NX` with an expiry inside a
/// script, so two gateways can never both proceed with one key.
pub struct RedisStore {
    redis: Arc<crate::cluster::Redis>,
    prefix: String,
    begin: redis::Script,
    complete: redis::Script,
    abort: redis::Script,
    /// How long an in-flight marker may outlive a gateway that died holding it.
    inflight_ttl: Duration,
}

const BEGIN: &str = r#"
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {'proceed', ''}
end
local v = redis.call('GET', KEYS[1])
if not v then return {'inflight', ''} end
if string.sub(v, 2, 65) ~= ARGV[1] then return {'mismatch', ''} end
if string.sub(v, 1, 1) == 'F' then return {'inflight', ''} end
return {'replay', v}
"#;

const COMPLETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

const ABORT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

fn marker(fp_hex: &str, token: u64) -> String {
    format!("F{fp_hex}{token}")
}

/// `D<fp hex><status:3>` + `name:value\r\n`… + `\r\n` + body.
fn encode(fp_hex: &str, s: &Stored) -> Vec<u8> {
    let mut out = format!("D{fp_hex}{:03}", s.status).into_bytes();
    for (n, v) in &s.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&s.body);
    out
}

fn decode(v: &[u8]) -> Option<Stored> {
    let status: u16 = std::str::from_utf8(v.get(65..68)?).ok()?.parse().ok()?;
    let mut rest = v.get(68..)?;
    let mut headers = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        headers.push((
            HeaderName::from_bytes(&line[..colon]).ok()?,
            HeaderValue::from_bytes(&line[colon + 1..]).ok()?,
        ));
    }
    Some(Stored {
        status,
        headers,
        body: Bytes::copy_from_slice(rest),
    })
}

impl RedisStore {
    async fn begin(&self, key: &str, fp: [u8; 32]) -> Result<Begin, crate::cluster::BackendError> {
        let fp_hex = hex::encode(fp);
        let token: u64 = rand::random();
        let k = format!("{}{key}", self.prefix);
        let ttl = self.inflight_ttl.as_millis().max(1).to_string();
        let (what, value): (String, Vec<u8>) = self
            .redis
            .eval(
                &self.begin,
                &[&k],
                &[
                    fp_hex.as_bytes(),
                    marker(&fp_hex, token).as_bytes(),
                    ttl.as_bytes(),
                ],
            )
            .await?;
        Ok(match what.as_str() {
            "proceed" => Begin::Proceed(token),
            "inflight" => Begin::InFlight,
            "replay" => match decode(&value) {
                Some(s) => Begin::Replay(Arc::new(s)),
                None => Begin::Mismatch,
            },
            _ => Begin::Mismatch,
        })
    }

    async fn complete(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
        resp: Stored,
        ttl: Duration,
    ) -> Result<bool, crate::cluster::BackendError> {
        let fp_hex = hex::encode(fp);
        let k = format!("{}{key}", self.prefix);
        let ttl = ttl.as_millis().max(1).to_string();
        let n: i64 = self
            .redis
            .eval(
                &self.complete,
                &[&k],
                &[
                    marker(&fp_hex, token).as_bytes(),
                    &encode(&fp_hex, &resp),
                    ttl.as_bytes(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn abort(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
    ) -> Result<(), crate::cluster::BackendError> {
        let k = format!("{}{key}", self.prefix);
        let _: i64 = self
            .redis
            .eval(
                &self.abort,
                &[&k],
                &[marker(&hex::encode(fp), token).as_bytes()],
            )
            .await?;
        Ok(())
    }
}

/// The request's progress, kept in its context.
struct Pending {
    key: String,
    fp: [u8; 32],
    token: u64,
    status: Option<u16>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BytesMut,
    oversized: bool,
}

pub struct Idempotency {
    name: String,
    header: HeaderName,
    methods: Vec<Method>,
    ttl: Duration,
    required: bool,
    max_response: usize,
    store: LocalStore,
    redis: Option<Arc<RedisStore>>,
    fail_closed: bool,
    errors: Arc<crate::cluster::ErrorReporter>,
}

fn valid_key(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 255 && v.iter().all(|b| (0x21..0x7f).contains(b))
}

impl Idempotency {
    pub fn new(c: &IdempotencyConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let header = HeaderName::try_from(c.header.as_str()).ok();
        if header.is_none() {
            errs.push(BuildError {
                key: "header".into(),
                message: format!("invalid header name {:?}", c.header),
            });
        }
        let mut methods = Vec::new();
        for (i, m) in c.methods.iter().enumerate() {
            match Method::from_bytes(m.as_bytes()) {
                Ok(m) if m.as_str().bytes().all(|b| !b.is_ascii_lowercase()) => methods.push(m),
                _ => errs.push(BuildError {
                    key: format!("methods[{i}]"),
                    message: format!("invalid method {m:?} (write it in upper case)"),
                }),
            }
        }
        if c.ttl.0.is_zero() {
            errs.push(BuildError {
                key: "ttl".into(),
                message: "must be greater than zero".into(),
            });
        }
        let redis = match c.backend {
            StateBackend::Local => None,
            StateBackend::Redis => match bx.redis("backend") {
                Ok(r) => {
                    let digest = hex::encode(&Sha256::digest(format!("{c:?}").as_bytes())[..6]);
                    Some(Arc::new(RedisStore {
                        redis: r,
                        prefix: format!("tollgate:idem:{}:{digest}:", bx.name),
                        begin: redis::Script::new(BEGIN),
                        complete: redis::Script::new(COMPLETE),
                        abort: redis::Script::new(ABORT),
                        inflight_ttl: bx.config.server.request_timeout.0 + Duration::from_secs(30),
                    }))
                }
                Err(e) => {
                    errs.extend(e);
                    None
                }
            },
        };
        match header {
            Some(header) if errs.is_empty() => Ok(Idempotency {
                name: bx.name.to_string(),
                header,
                methods,
                ttl: c.ttl.0,
                required: c.required,
                max_response: c.max_response.0 as usize,
                store: LocalStore::new(c.max_size.0 as usize),
                redis,
                fail_closed: c.on_backend_error != Some(crate::config::OnBackendError::Allow),
                errors: Arc::new(crate::cluster::ErrorReporter::new(bx.name)),
            }),
            _ => Err(errs),
        }
    }

    fn owner(&self) -> usize {
        self as *const Self as usize
    }

    fn count(ctx: &RequestCtx, result: &str) {
        let route = ctx.route().map(|r| &*r.name).unwrap_or("");
        METRICS
            .idempotency
            .with_label_values(&[route, result])
            .inc();
    }

    fn finish_pending(&self, ctx: &mut RequestCtx) {
        let Some(p) = ctx.take_state::<Pending>(self.owner()) else {
            return;
        };
        let store = match p.status {
            Some(status) if status < 500 && !p.oversized => Some(Stored {
                status,
                headers: p.headers,
                body: p.body.freeze(),
            }),
            _ => None,
        };
        let Some(redis) = self.redis.clone() else {
            match store {
                Some(resp) => {
                    if self.store.complete(&p.key, p.token, resp, self.ttl) {
                        Self::count(ctx, "stored");
                    }
                }
                None => self.store.abort(&p.key, p.token),
            }
            return;
        };
        // The response is already on its way to the client: record it without
        // holding the request up. Until it lands, the key answers 409.
        let route = ctx.route().map(|r| r.name.to_string()).unwrap_or_default();
        let (ttl, errors) = (self.ttl, self.errors.clone());
        tokio::spawn(async move {
            let r = match store {
                Some(resp) => {
                    redis
                        .complete(&p.key, p.fp, p.token, resp, ttl)
                        .await
                        .map(|stored| {
                            if stored {
                                METRICS
                                    .idempotency
                                    .with_label_values(&[&route, "stored"])
                                    .inc();
                            }
                        })
                }
                None => redis.abort(&p.key, p.fp, p.token).await,
            };
            if let Err(e) = r {
                errors.report(&e);
            }
        });
    }

    /// The replayed response: the stored one, marked.
    fn replay(s: &Stored) -> Option<Reply> {
        let mut h = ResponseHeader::build(s.status, Some(s.headers.len() + 2)).ok()?;
        for (n, v) in &s.headers {
            let _ = h.append_header(n.clone(), v.clone());
        }
        h.remove_header(&http::header::TRANSFER_ENCODING);
        let _ = h.insert_header(http::header::CONTENT_LENGTH, s.body.len().to_string());
        let _ = h.insert_header("idempotent-replayed", "true");
        Some(Reply::Raw {
            header: Box::new(h),
            body: s.body.clone(),
        })
    }
}

#[async_trait]
impl Plugin for Idempotency {
    fn phase(&self) -> Phase {
        Phase::Idempotency
    }

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Flow> {
        let req = session.req_header();
        if !self.methods.contains(&req.method) {
            return Ok(Flow::Continue);
        }
        let key = match req.headers.get(&self.header) {
            None if self.required => {
                return Ok(Flow::problem(
                    400,
                    format!("this request needs an {} header", self.header),
                ));
            }
            None => return Ok(Flow::Continue),
            Some(v) if !valid_key(v.as_bytes()) => {
                return Ok(Flow::problem(
                    400,
                    format!(
                        "invalid {} header: 1-255 visible ASCII characters",
                        self.header
                    ),
                ));
            }
            Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        };
        let method = req.method.clone();
        let query = req.uri.query().map(str::to_string);
        let body = match read_body(session, ctx).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Ok(Flow::problem(
                    413,
                    format!(
                        "requests with an idempotency key are limited to {} bytes",
                        super::MAX_BUFFERED_BODY.min(ctx.rt.limits.max_request_body)
                    ),
                ))
            }
            Err(BodyError::Timeout) => {
                return Ok(Flow::problem(
                    408,
                    "the request body was not received in time",
                ))
            }
            Err(BodyError::Broken) => {
                return Ok(Flow::problem(400, "the request body could not be read"))
            }
        };
        let mut h = Sha256::new();
        for part in [
            method.as_str(),
            ctx.path.as_deref().unwrap_or(""),
            query.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(&body);
        let fp: [u8; 32] = h.finalize().into();
        let scoped = format!("{}\u{0}{key}", ctx.consumer.as_deref().unwrap_or(""));
        let begun = match &self.redis {
            None => self.store.begin(&scoped, fp, self.ttl),
            Some(r) => match r.begin(&scoped, fp).await {
                Ok(b) => b,
                Err(e) => {
                    self.errors.report(&e);
                    if self.fail_closed {
                        return Ok(Flow::Respond(Reply::Problem {
                            status: 503,
                            detail: "idempotency records are unavailable; retry later".into(),
                            headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(1u64))],
                        }));
                    }
                    return Ok(Flow::Continue);
                }
            },
        };
        match begun {
            Begin::Proceed(token) => {
                ctx.set_state(
                    self.owner(),
                    Pending {
                        key: scoped,
                        fp,
                        token,
                        status: None,
                        headers: Vec::new(),
                        body: BytesMut::new(),
                        oversized: false,
                    },
                );
                Ok(Flow::Continue)
            }
            Begin::InFlight => {
                Self::count(ctx, "conflict");
                Ok(Flow::problem(
                    409,
                    "a request with this idempotency key is still being processed",
                ))
            }
            Begin::Mismatch => {
                Self::count(ctx, "mismatch");
                Ok(Flow::problem(
                    422,
                    "this idempotency key was used for a different request",
                ))
            }
            Begin::Replay(stored) => {
                Self::count(ctx, "replayed");
                tracing::debug!(plugin = %self.name, "idempotent replay");
                Ok(match Self::replay(&stored) {
                    Some(r) => Flow::Respond(r),
                    None => Flow::problem(500, "the stored response could not be replayed"),
                })
            }
        }
    }

    fn upstream_response(&self, resp: &ResponseHeader, ctx: &mut RequestCtx) {
        let max = self.max_response;
        if let Some(p) = ctx.state_mut::<Pending>(self.owner()) {
            p.status = Some(resp.status.as_u16());
            p.headers = resp
                .headers
                .iter()
                .filter(|(n, _)| *n != http::header::DATE && *n != http::header::CONTENT_LENGTH)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            p.body = BytesMut::new();
            p.oversized = false;
            let declared = resp
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|n| n > max) {
                p.oversized = true;
            }
        }
    }

    fn upstream_response_body(&self, body: &Option<Bytes>, end: bool, ctx: &mut RequestCtx) {
        let max = self.max_response;
        if let Some(p) = ctx.state_mut::<Pending>(self.owner()) {
            if let Some(b) = body {
                if p.body.len() + b.len() > max {
                    p.oversized = true;
                    p.body = BytesMut::new();
                } else if !p.oversized {
                    p.body.extend_from_slice(b);
                }
            }
        }
        if end {
            self.finish_pending(ctx);
        }
    }

    fn finish(&self, ctx: &mut RequestCtx) {
        // Still pending here: the response never completed (error, timeout,
        // client gone). Release the key so the client may retry.
        if let Some(p) = ctx.take_state::<Pending>(self.owner()) {
            match self.redis.clone() {
                None => self.store.abort(&p.key, p.token),
                Some(r) => {
                    let errors = self.errors.clone();
                    tokio::spawn(async move {
                        if let Err(e) = r.abort(&p.key, p.fp, p.token).await {
                            errors.report(&e);
                        }
                    });
                }
            }
        }
    }

    async fn tick(&self) {
        self.store.expire();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: &str) -> Stored {
        Stored {
            status: 201,
            headers: vec![],
            body: Bytes::from(body.to_string()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn record_lifecycle() {
        let s = LocalStore::new(1 << 20);
        let ttl = Duration::from_secs(60);
        let fp = [1u8; 32];
        let Begin::Proceed(t) = s.begin("k", fp, ttl) else {
            panic!()
        };
        assert!(matches!(s.begin("k", fp, ttl), Begin::InFlight));
        assert!(matches!(s.begin("k", [2u8; 32], ttl), Begin::Mismatch));
        assert!(s.complete("k", t, resp("ok"), ttl));
        match s.begin("k", fp, ttl) {
            Begin::Replay(r) => assert_eq!(r.body, "ok"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.begin("k", [2u8; 32], ttl), Begin::Mismatch));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            matches!(s.begin("k", [2u8; 32], ttl), Begin::Proceed(_)),
            "expired records are forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abort_releases_and_stale_tokens_do_nothing() {
        let s = LocalStore::new(1 << 20);
        let ttl = Duration::from_secs(60);
        let Begin::Proceed(t1) = s.begin("k", [1; 32], ttl) else {
            panic!()
        };
        s.abort("k", t1);
        let Begin::Proceed(t2) = s.begin("k", [1; 32], ttl) else {
            panic!()
        };
        // The first request's late completion must not overwrite the second's marker.
        assert!(!s.complete("k", t1, resp("late"), ttl));
        s.abort("k", t1);
        assert!(matches!(s.begin("k", [1; 32], ttl), Begin::InFlight));
        assert!(s.complete("k", t2, resp("second"), ttl));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let s = LocalStore::new(10_000);
        let ttl = Duration::from_secs(60);
        for i in 0..1000 {
            let k = format!("k{i}");
            let Begin::Proceed(t) = s.begin(&k, [0; 32], ttl) else {
                panic!()
            };
            s.complete(&k, t, resp(&"x".repeat(100)), ttl);
        }
        assert!(s.bytes() <= 10_000, "{}", s.bytes());
        assert!(s.len() < 100);
        // The newest survive.
        assert!(matches!(s.begin("k999", [0; 32], ttl), Begin::Replay(_)));
        tokio::time::advance(Duration::from_secs(61)).await;
        s.expire();
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn redis_encoding_round_trips() {
        let s = Stored {
            status: 201,
            headers: vec![
                (
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static("x-id"),
                    HeaderValue::from_static("a:b"),
                ),
            ],
            body: Bytes::from_static(b"{\"id\":1}\r\n\r\nbinary\x00"),
        };
        let fp = hex::encode([9u8; 32]);
        let d = decode(&encode(&fp, &s)).unwrap();
        assert_eq!(
            (d.status, d.headers.clone(), d.body.clone()),
            (s.status, s.headers, s.body)
        );
        assert!(decode(b"Dshort").is_none());
    }

    #[test]
    fn keys() {
        assert!(valid_key(b"8e03978e-40d5-43e8-bc93-6894a57f9324"));
        assert!(!valid_key(b""));
        assert!(!valid_key(b"has space"));
        assert!(!valid_key(&[b'a'; 256]));
    }
}
