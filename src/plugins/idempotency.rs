//! `idempotency`: a retried request with the same `Idempotency-Key` gets the
//! first request's final response again instead of reaching the upstream twice.
//!
//! * Keys are scoped: by consumer (and the route's auth plugins) when an auth
//!   plugin named one; by the `Authorization` credential when the route
//!   authenticates without naming a consumer; by client IP on a route with no
//!   authenticating plugin. A record's fingerprint is the SHA-256 of
//!   the method, normalised path, query and body.
//! * First request → forwarded; its final response (status, headers, body up
//!   to `max_response`) is stored for `ttl` before the client receives its
//!   last byte (SPEC §9). A 5xx is the upstream's answer and releases the key;
//!   oversized responses are passed through and release it too.
//! * A first request that may have reached the upstream but ended without a
//!   whole answer (client gone, upstream timeout or reset) leaves its key
//!   locked for `unknown_outcome_lock`: retries get 409 with `Retry-After`.
//!   While the client goes away, the gateway keeps reading the upstream's
//!   answer (HTTP/1 clients), so a retry usually finds it stored.
//! * Same key, same fingerprint, stored → replayed with `Idempotent-Replayed:
//!   true`; still in flight or locked → 409; different fingerprint → 422.
//! * The local store is bounded by `max_size` bytes and [`MAX_KEYS`] records.
//!   When full, the oldest stored responses go first; in-flight and locked keys
//!   are never evicted: a new key then gets 503. Expired records are forgotten
//!   on every maintenance tick.

use crate::config::{Dur, Size};
use crate::pipeline::{BodyError, BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, Reply, RequestCtx, read_body};
use crate::store::{OnBackendError, StateBackend};
use crate::metrics::METRICS;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "idempotency"`
// ---------------------------------------------------------------------------

fn default_cache_size() -> Size {
    Size(64 << 20)
}
fn default_cache_entry() -> Size {
    Size(1 << 20)
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

fn default_idempotency_methods() -> Vec<String> {
    vec!["POST".into(), "PATCH".into()]
}

fn default_idempotency_ttl() -> Dur {
    Dur::secs(86400)
}

fn default_unknown_outcome_lock() -> Dur {
    Dur::secs(60)
}

/// `type = "idempotency"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    #[serde(default = "default_idempotency_header")]
    pub header: String,
    #[serde(default = "default_idempotency_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_idempotency_ttl")]
    pub ttl: Dur,
    #[serde(default)]
    pub required: bool,
    /// Largest response body stored for replay.
    #[serde(default = "default_cache_entry")]
    pub max_response: Size,
    /// Memory bound of the local store.
    #[serde(default = "default_cache_size")]
    pub max_size: Size,
    #[serde(default)]
    pub backend: StateBackend,
    /// Default `deny` (fail closed with 503).
    #[serde(default)]
    pub on_backend_error: Option<OnBackendError>,
    /// How long a key whose first request ended without a known outcome (the
    /// client went away, the upstream timed out or reset) answers 409.
    #[serde(default = "default_unknown_outcome_lock")]
    pub unknown_outcome_lock: Dur,
}

impl PluginConfig for IdempotencyConfig {
    const TYPE: &'static str = "idempotency";
    const ORDER: Order = Order::Idempotency;
    type Plugin = Idempotency;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Idempotency> {
        Idempotency::new(self, bx)
    }

    fn uses_redis(&self) -> bool {
        self.backend == crate::store::StateBackend::Redis
    }
}


/// Most records (stored, in flight or locked) one local store keeps.
pub const MAX_KEYS: usize = 100_000;
/// Bytes a record costs beyond its key and stored response (map slot, order
/// queue entry, allocation overhead): a conservative estimate.
const RECORD_OVERHEAD: usize = 256;

/// A stored final response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Stored {
    /// Its memory, estimated from above: a header pair is ~72 bytes inline
    /// plus its text; the `Arc`, the struct and the vector head ~128.
    fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 80)
                .sum::<usize>()
            + 128
    }
}

#[derive(Debug)]
enum Record {
    InFlight {
        fp: [u8; 32],
        token: u64,
        expires: Instant,
    },
    /// The first request's outcome is unknown: the key may not run again yet.
    Locked { fp: [u8; 32], expires: Instant },
    Done {
        fp: [u8; 32],
        resp: Arc<Stored>,
        expires: Instant,
        seq: u64,
    },
}

impl Record {
    fn expires(&self) -> Instant {
        match self {
            Record::InFlight { expires, .. }
            | Record::Locked { expires, .. }
            | Record::Done { expires, .. } => *expires,
        }
    }

    fn cost(&self, key: &str) -> usize {
        // The key is held twice (map and eviction queue).
        let base = 2 * key.len() + RECORD_OVERHEAD;
        match self {
            Record::Done { resp, .. } => base + resp.size(),
            _ => base,
        }
    }
}

/// What a request with a key may do.
#[derive(Debug)]
pub enum Begin {
    /// First of its key: forward it; `token` identifies its in-flight marker.
    Proceed(u64),
    InFlight,
    /// The first request's outcome is unknown for this much longer.
    Locked(Duration),
    Mismatch,
    Replay(Arc<Stored>),
    /// The store is full of in-flight and locked keys: nothing may be evicted.
    Full,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// Stored records in insertion order, for eviction (entries whose `seq`
    /// no longer matches are stale and skipped).
    order: VecDeque<(String, u64)>,
    /// Sum of the records' `cost`.
    bytes: usize,
    next: u64,
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Record> {
        let r = self.records.remove(key)?;
        self.bytes = self.bytes.saturating_sub(r.cost(key));
        Some(r)
    }

    fn insert(&mut self, key: &str, r: Record) {
        self.remove(key);
        self.bytes += r.cost(key);
        self.records.insert(key.to_string(), r);
    }

    /// Evict the oldest stored responses until `need` more bytes and one more
    /// record fit; false when only in-flight and locked records are left.
    fn make_room(&mut self, need: usize, max_bytes: usize, keep: &str) -> bool {
        while self.bytes + need > max_bytes || self.records.len() >= MAX_KEYS {
            let Some((k, s)) = self.order.pop_front() else {
                return false;
            };
            let current = k != keep
                && matches!(self.records.get(&k), Some(Record::Done { seq, .. }) if *seq == s);
            if current {
                self.remove(&k);
            }
        }
        true
    }
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
        match inner.records.get(key) {
            Some(r) if r.expires() > now => {
                return match r {
                    Record::InFlight { fp: f, .. } if *f == fp => Begin::InFlight,
                    Record::Locked { fp: f, expires } if *f == fp => {
                        Begin::Locked(expires.saturating_duration_since(now))
                    }
                    Record::Done { fp: f, resp, .. } if *f == fp => Begin::Replay(resp.clone()),
                    _ => Begin::Mismatch,
                };
            }
            Some(_) => {
                inner.remove(key);
            }
            None => {}
        }
        inner.next += 1;
        let token = inner.next;
        let record = Record::InFlight {
            fp,
            token,
            expires: now + ttl,
        };
        if !inner.make_room(record.cost(key), self.max_bytes, key) {
            return Begin::Full;
        }
        inner.insert(key, record);
        Begin::Proceed(token)
    }

    /// Store the response of the request holding `token`. False (and the key
    /// released) when it cannot be kept.
    pub fn complete(&self, key: &str, token: u64, resp: Stored, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        let fp = match inner.records.get(key) {
            Some(Record::InFlight { fp, token: t, .. }) if *t == token => *fp,
            _ => return false,
        };
        inner.remove(key);
        inner.next += 1;
        let seq = inner.next;
        let record = Record::Done {
            fp,
            resp: Arc::new(resp),
            expires: now + ttl,
            seq,
        };
        if !inner.make_room(record.cost(key), self.max_bytes, key) {
            return false;
        }
        inner.insert(key, record);
        inner.order.push_back((key.to_string(), seq));
        true
    }

    /// The request holding `token` ended without a known outcome: keep its
    /// key locked for `lock`.
    pub fn lock_unknown(&self, key: &str, token: u64, lock: Duration) {
        let mut g = self.lock();
        let inner = &mut *g;
        let fp = match inner.records.get(key) {
            Some(Record::InFlight { fp, token: t, .. }) if *t == token => *fp,
            _ => return,
        };
        inner.insert(
            key,
            Record::Locked {
                fp,
                expires: Instant::now() + lock,
            },
        );
    }

    /// Drop the in-flight marker of `token` (the response is not stored).
    pub fn abort(&self, key: &str, token: u64) {
        let mut g = self.lock();
        if matches!(g.records.get(key), Some(Record::InFlight { token: t, .. }) if *t == token) {
            g.remove(key);
        }
    }

    /// Forget expired records.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        inner.records.retain(|_, r| r.expires() > now);
        inner.bytes = inner.records.iter().map(|(k, r)| r.cost(k)).sum();
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

    /// The estimated memory the records take (what `max_size` bounds).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Records in Redis, shared by every gateway with the same config.
///
/// Key: `tollgate:idem:<plugin>:<config digest>:<scope>:<idempotency key>`,
/// `<scope>` being 32 hex digits (see [`scope_of`]); printable throughout.
/// Value: `F<fingerprint hex><token>` while in flight, `L<fingerprint hex>`
/// while locked after an unknown outcome, `D<fingerprint hex><response>` once
/// stored. The in-flight marker is taken with `SET NX` with an expiry inside a
/// script, so two gateways can never both proceed with one key.
pub struct RedisStore {
    redis: Arc<crate::store::Redis>,
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
local kind = string.sub(v, 1, 1)
if kind == 'F' then return {'inflight', ''} end
if kind == 'L' then return {'locked', tostring(redis.call('PTTL', KEYS[1]))} end
return {'replay', v}
"#;

/// Replace the in-flight marker `ARGV[1]` with `ARGV[2]` for `ARGV[3]` ms
/// (a stored response, or a lock).
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

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl RedisStore {
    async fn begin(&self, key: &str, fp: [u8; 32]) -> Result<Begin, crate::store::BackendError> {
        let fp_hex = hex::encode(fp);
        let token: u64 = rand::random();
        let k = format!("{}{key}", self.prefix);
        let ttl = millis(self.inflight_ttl);
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
            "locked" => {
                let ms = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1000);
                Begin::Locked(Duration::from_millis(ms))
            }
            "replay" => match decode(&value) {
                Some(s) => Begin::Replay(Arc::new(s)),
                None => Begin::Mismatch,
            },
            _ => Begin::Mismatch,
        })
    }

    /// Replace the marker of `token` with `value` for `ttl`.
    async fn settle(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, crate::store::BackendError> {
        let k = format!("{}{key}", self.prefix);
        let n: i64 = self
            .redis
            .eval(
                &self.complete,
                &[&k],
                &[
                    marker(&hex::encode(fp), token).as_bytes(),
                    value,
                    millis(ttl).as_bytes(),
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
    ) -> Result<(), crate::store::BackendError> {
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

/// Run `fut` to its end before returning, on a multi-threaded runtime (the
/// proxy's body filters are synchronous, and a record must be in Redis before
/// the response's last byte leaves). Elsewhere it is spawned.
fn run_to_end<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        Ok(h) => {
            h.spawn(fut);
        }
        Err(_) => {}
    }
}

/// The request's progress, kept in its context.
pub struct Pending {
    key: String,
    fp: [u8; 32],
    token: u64,
    /// The request was handed to an upstream connection at least once, so it
    /// may be executing there.
    sent: bool,
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
    unknown_outcome_lock: Duration,
    required: bool,
    max_response: usize,
    store: LocalStore,
    redis: Option<Arc<RedisStore>>,
    fail_closed: bool,
    errors: Arc<crate::store::ErrorReporter>,
}

fn valid_key(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 255 && v.iter().all(|b| (0x21..0x7f).contains(b))
}

/// The space a request's keys live in, as 32 hex digits: a digest of
/// length-delimited parts, so that no two scopes share a digest input.
/// * consumer named by an auth plugin: `consumer`, the route's auth plugin
///   names, the consumer;
/// * route authenticates but no consumer was named (a JWT without its
///   consumer claim, `webhook_signature`): `credential`, the route's auth
///   plugin names, the `Authorization` values (none for a webhook, whose
///   verified secret has one holder);
/// * no authenticating plugin on the route: `ip`, the client IP.
pub fn scope_of(req: &RequestHeader, ctx: &RequestCtx) -> String {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    let auth: Vec<&str> = ctx
        .route()
        .map(|r| {
            r.chain
                .iter()
                .filter(|i| i.order == Order::Auth)
                .map(|i| &*i.name)
                .collect()
        })
        .unwrap_or_default();
    match (&ctx.identity.consumer, auth.is_empty()) {
        (Some(c), _) => {
            part(b"consumer");
            for a in &auth {
                part(a.as_bytes());
            }
            part(b"");
            part(c.as_bytes());
        }
        (None, false) => {
            part(b"credential");
            for a in &auth {
                part(a.as_bytes());
            }
            part(b"");
            for v in req.headers.get_all(http::header::AUTHORIZATION) {
                part(v.as_bytes());
            }
        }
        (None, true) => {
            let ip = ctx.client.ip.map(|ip| ip.to_string()).unwrap_or_default();
            part(b"ip");
            part(ip.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..16])
}

impl Idempotency {
    pub fn new(c: &IdempotencyConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let header = HeaderName::try_from(c.header.as_str()).ok();
        if header.is_none() {
            errs.push(BuildError {
                path: KeyPath::default().key("header"),
                message: format!("invalid header name {:?}", c.header),
            });
        }
        let mut methods = Vec::new();
        for (i, m) in c.methods.iter().enumerate() {
            match Method::from_bytes(m.as_bytes()) {
                Ok(m) if m.as_str().bytes().all(|b| !b.is_ascii_lowercase()) => methods.push(m),
                _ => errs.push(BuildError {
                    path: KeyPath::default().key("methods").index(i),
                    message: format!("invalid method {m:?} (write it in upper case)"),
                }),
            }
        }
        if c.ttl.0.is_zero() {
            errs.push(BuildError {
                path: KeyPath::default().key("ttl"),
                message: "must be greater than zero".into(),
            });
        }
        if c.unknown_outcome_lock.0.is_zero() {
            errs.push(BuildError {
                path: KeyPath::default().key("unknown_outcome_lock"),
                message: "must be greater than zero (a key whose outcome is unknown must not run again at once)".into(),
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
                unknown_outcome_lock: c.unknown_outcome_lock.0,
                required: c.required,
                max_response: c.max_response.0 as usize,
                store: LocalStore::new(c.max_size.0 as usize),
                redis,
                fail_closed: c.on_backend_error != Some(crate::store::OnBackendError::Allow),
                errors: Arc::new(crate::store::ErrorReporter::new(bx.name)),
            }),
            _ => Err(errs),
        }
    }


    fn count(ctx: &RequestCtx, result: &str) {
        let route = ctx.route().map(|r| &*r.name).unwrap_or("");
        METRICS
            .idempotency
            .with_label_values(&[route, result])
            .inc();
    }

    /// The whole upstream response is known: store it (before the client gets
    /// its last byte), or release the key for a 5xx or an oversized response.
    fn finish_pending(&self, ctx: &mut RequestCtx, state: &mut Option<Pending>) {
        let Some(p) = state.take() else {
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
        let route = ctx.route().map(|r| r.name.to_string()).unwrap_or_default();
        let (ttl, errors) = (self.ttl, self.errors.clone());
        run_to_end(async move {
            let r = match store {
                Some(resp) => {
                    let value = encode(&hex::encode(p.fp), &resp);
                    redis
                        .settle(&p.key, p.fp, p.token, &value, ttl)
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
        // A 204 has no Content-Length (RFC 9110 §8.6) and a 304's would describe
        // the representation, not this empty body: replay them as they came.
        if !matches!(s.status, 204 | 304) {
            let _ = h.insert_header(http::header::CONTENT_LENGTH, s.body.len().to_string());
        }
        let _ = h.insert_header("idempotent-replayed", "true");
        Some(Reply::Raw {
            header: Box::new(h),
            body: s.body.clone(),
        })
    }
}

impl Plugin for Idempotency {
    /// A request that holds its key, until its outcome is stored or released.
    type State = Option<Pending>;

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx, state: &mut Self::State) -> pingora::Result<Flow> {
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
        let scoped = format!("{}:{key}", scope_of(req, ctx));
        let method = req.method.clone();
        let query = req.uri.query().map(str::to_string);
        let body = match read_body(session, ctx).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Ok(Flow::problem(
                    413,
                    format!(
                        "requests with an idempotency key are limited to {} bytes",
                        crate::pipeline::MAX_BUFFERED_BODY.min(ctx.rt.limits.max_request_body)
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
            ctx.matched.path.as_deref().unwrap_or(""),
            query.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(&body);
        let fp: [u8; 32] = h.finalize().into();
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
                // A client that goes away does not end the exchange: the
                // upstream's answer is still read and stored for its retry.
                session.as_mut().set_abort_on_close(false);
                *state = Some(Pending {
                        key: scoped,
                        fp,
                        token,
                        sent: false,
                        status: None,
                        headers: Vec::new(),
                        body: BytesMut::new(),
                        oversized: false,
                    });
                Ok(Flow::Continue)
            }
            Begin::InFlight => {
                Self::count(ctx, "conflict");
                Ok(Flow::problem(
                    409,
                    "a request with this idempotency key is still being processed",
                ))
            }
            Begin::Locked(left) => {
                Self::count(ctx, "conflict");
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Ok(Flow::Respond(Reply::Problem {
                    status: 409,
                    detail: "the first request with this idempotency key ended without a known \
                             outcome and may still be executing; retry later"
                        .into(),
                    headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)))],
                }))
            }
            Begin::Full => Ok(Flow::Respond(Reply::Problem {
                status: 503,
                detail: "too many idempotency keys are in flight; retry later".into(),
                headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(1u64))],
            })),
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

    fn upstream_request(&self, _req: &mut RequestHeader, _ctx: &RequestCtx, state: &mut Self::State) -> pingora::Result<()> {
        if let Some(p) = state {
            p.sent = true;
        }
        Ok(())
    }

    fn upstream_response(&self, resp: &ResponseHeader, ctx: &mut RequestCtx, state: &mut Self::State) {
        let max = self.max_response;
        let status = resp.status.as_u16();
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let Some(p) = state else {
            return;
        };
        p.status = Some(status);
        p.headers = resp
            .headers
            .iter()
            .filter(|(n, _)| *n != http::header::DATE && *n != http::header::CONTENT_LENGTH)
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        p.body = BytesMut::new();
        p.oversized = declared.is_some_and(|n| n > max);
        // A response without a body gets no body callback: it is complete now.
        if declared == Some(0) || matches!(status, 204 | 304) {
            self.finish_pending(ctx, state);
        }
    }

    fn upstream_response_body(&self, body: &Option<Bytes>, end: bool, ctx: &mut RequestCtx, state: &mut Self::State) {
        let max = self.max_response;
        if let Some(p) = state {
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
            self.finish_pending(ctx, state);
        }
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Self::State) {
        // Still pending here: no whole answer was read. A request that never
        // reached an upstream, or whose upstream answered 5xx, releases its
        // key; any other may be executing (client gone, timeout, reset, a
        // broken body): its key stays locked for `unknown_outcome_lock`.
        let Some(p) = state.take() else {
            return;
        };
        // (A retried 5xx that ran out of attempts never reached `upstream_response`.)
        let status = p.status.or(ctx.upstream.outcome.and_then(|o| o.status));
        let release = !p.sent || status.is_some_and(|s| s >= 500);
        let lock = self.unknown_outcome_lock;
        match self.redis.clone() {
            None if release => self.store.abort(&p.key, p.token),
            None => self.store.lock_unknown(&p.key, p.token, lock),
            Some(r) => {
                let errors = self.errors.clone();
                // Settled before the gateway answers the client, so that its
                // retry, on any instance, sees the lock (or the free key).
                run_to_end(async move {
                    let res = if release {
                        r.abort(&p.key, p.fp, p.token).await
                    } else {
                        let value = format!("L{}", hex::encode(p.fp));
                        r.settle(&p.key, p.fp, p.token, value.as_bytes(), lock)
                            .await
                            .map(|_| ())
                    };
                    if let Err(e) = res {
                        errors.report(&e);
                    }
                });
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

    #[tokio::test(start_paused = true)]
    async fn an_unknown_outcome_locks_the_key_for_its_duration() {
        let s = LocalStore::new(1 << 20);
        let ttl = Duration::from_secs(3600);
        let Begin::Proceed(t) = s.begin("k", [1; 32], ttl) else {
            panic!()
        };
        s.lock_unknown("k", t, Duration::from_secs(60));
        match s.begin("k", [1; 32], ttl) {
            Begin::Locked(left) => assert_eq!(left, Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.begin("k", [2; 32], ttl), Begin::Mismatch));
        // The late completion of the locked request changes nothing.
        assert!(!s.complete("k", t, resp("late"), ttl));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(s.begin("k", [1; 32], ttl), Begin::Locked(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(s.begin("k", [1; 32], ttl), Begin::Proceed(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_evicts_stored_responses_but_never_in_flight_or_locked_keys() {
        let s = LocalStore::new(20 * (RECORD_OVERHEAD + 2 * 4));
        let ttl = Duration::from_secs(60);
        let mut tokens = Vec::new();
        let mut i = 0;
        loop {
            let k = format!("k{i:03}");
            match s.begin(&k, [0; 32], ttl) {
                Begin::Proceed(t) => tokens.push((k, t)),
                Begin::Full => break,
                other => panic!("{other:?}"),
            }
            i += 1;
        }
        assert!(s.bytes() <= 20 * (RECORD_OVERHEAD + 8), "{}", s.bytes());
        let held = tokens.len();
        assert!(held >= 10, "{held}");
        // Every marker is still there: refused, not forgotten.
        for (k, _) in &tokens {
            assert!(matches!(s.begin(k, [0; 32], ttl), Begin::InFlight), "{k}");
        }
        // Locks survive too; a released key makes room for a new one.
        let (k0, t0) = tokens[0].clone();
        s.lock_unknown(&k0, t0, Duration::from_secs(60));
        assert!(matches!(s.begin(&k0, [0; 32], ttl), Begin::Locked(_)));
        let (k1, t1) = tokens[1].clone();
        s.abort(&k1, t1);
        assert!(matches!(s.begin("new", [0; 32], ttl), Begin::Proceed(_)));
        assert!(matches!(s.begin(&k0, [0; 32], ttl), Begin::Locked(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_keys_never_grow_the_store_past_its_bound() {
        let max = 256 << 10;
        let s = LocalStore::new(max);
        let ttl = Duration::from_secs(60);
        for i in 0..50_000 {
            let k = format!("{i:0>200}");
            if let Begin::Proceed(t) = s.begin(&k, [0; 32], ttl) {
                s.complete(&k, t, resp("{}"), ttl);
            }
            assert!(s.bytes() <= max);
        }
        assert!(s.len() <= max / (RECORD_OVERHEAD + 400));
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
