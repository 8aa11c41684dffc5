//! What the user writes: `gateway.toml` as typed serde structs (SPEC §3), with no
//! behaviour of its own. [`load`] reads, parses and validates a file and returns
//! either a [`Config`] or every error found, each naming its place.
//!
//! The runtime never reads these types on the request path: `runtime::compile`
//! turns a validated `Config` into the immutable snapshot requests use.

mod load;
mod locate;
pub mod units;
mod validate;
/// Parsing helpers shared with the runtime compiler.
pub mod validate_helpers {
    pub use super::validate::{datetime_to_unix, parse_cidr, parse_listen};
}
pub use validate::normalize_version;

pub use load::{load_file, load_str};
pub use locate::{ConfigError, ConfigErrors, KeyPath, Locator};
pub use units::{Dur, HashKey, HeaderPredicates, Method, Rate, RetryOn, Size, VersionSource};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A whole, validated `gateway.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub api_versions: Option<ApiVersionsConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub plugins: BTreeMap<String, PluginConfig>,
    pub redis: Option<RedisConfig>,
    /// Directory of the config file: relative paths resolve against it.
    pub base_dir: PathBuf,
    /// The config file itself (for messages and watching).
    pub file: PathBuf,
    /// Hex SHA-256 of the file's bytes.
    pub hash: String,
    /// The file's text, to locate errors found when compiling.
    pub source: String,
}

impl Config {
    /// Every file this config names (certificates, keys, key files, JWKS), resolved;
    /// a change to any of them is a reason to reload.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<&String> = Vec::new();
        for t in &self.server.tls {
            out.extend([&t.cert, &t.key]);
            out.extend(t.client_ca.iter());
        }
        for u in self.upstreams.values() {
            out.extend(
                u.ca_file
                    .iter()
                    .chain(u.client_cert.iter())
                    .chain(u.client_key.iter()),
            );
        }
        for p in self.plugins.values() {
            match p {
                PluginConfig::ApiKey(c) => out.extend(c.keys_file.iter()),
                PluginConfig::Jwt(c) => {
                    out.extend(c.public_key_file.iter().chain(c.jwks_file.iter()))
                }
                _ => {}
            }
        }
        let mut v: Vec<PathBuf> = out.into_iter().map(|f| self.resolve(f)).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Resolve a path written in the config against the config's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

fn default_listen() -> OneOrMany {
    OneOrMany::One("0.0.0.0:8080".into())
}
fn default_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_threads() -> usize {
    2
}
fn default_body() -> Size {
    Size(10 << 20)
}
fn default_request_timeout() -> Dur {
    Dur::secs(30)
}
fn default_header_timeout() -> Dur {
    Dur::secs(10)
}
fn default_header_size() -> Size {
    Size(64 << 10)
}
fn default_max_headers() -> usize {
    100
}
fn default_idle() -> Dur {
    Dur::secs(60)
}
fn default_body_timeout() -> Dur {
    Dur::secs(10)
}
fn default_min_body_rate() -> Size {
    Size(512)
}
fn default_grace() -> Dur {
    Dur::secs(10)
}

fn default_redis_timeout() -> Dur {
    Dur::millis(250)
}

/// `[redis]`: shared state for `backend = "redis"` plugins (SPEC §9).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, or a list of cluster node URLs.
    pub url: OneOrMany,
    /// Redis Cluster (implied by a list of several URLs).
    #[serde(default)]
    pub cluster: Option<bool>,
    /// Deadline of one Redis call, connection included.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Dur,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: OneOrMany,
    #[serde(default = "default_admin")]
    pub admin_listen: String,
    /// Name of the environment variable holding the admin bearer token.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default = "default_body")]
    pub max_request_body: Size,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    #[serde(default = "default_header_size")]
    pub max_header_size: Size,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    #[serde(default = "default_idle")]
    pub idle_timeout: Dur,
    /// Longest wait for the next bytes of a request body (408, then close).
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Dur,
    /// Slowest request body accepted, in bytes per second, once the first
    /// `body_timeout` has passed (408, then close); `"0B"`: no minimum.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: Size,
    /// How long a graceful shutdown waits for requests in flight.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// Cleartext HTTP/2 with prior knowledge (h2c) on the plain `listen`
    /// addresses. Off: such a connection is refused with a GOAWAY
    /// `HTTP_1_1_REQUIRED` saying so. TLS listeners offer h2 through ALPN either way.
    #[serde(default)]
    pub h2c: bool,
    /// TLS listeners refuse the handshake of a client whose SNI names none of
    /// their certificates, or that sends no SNI. By default such a client gets
    /// the listener's first certificate (the first `[[server.tls]]` block on
    /// that address).
    #[serde(default)]
    pub strict_sni: bool,
    #[serde(default)]
    pub tls: Vec<TlsListenerConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin_listen: default_admin(),
            admin_token_env: None,
            threads: default_threads(),
            trusted_proxies: vec![],
            max_request_body: default_body(),
            request_timeout: default_request_timeout(),
            plugins: vec![],
            header_timeout: default_header_timeout(),
            max_header_size: default_header_size(),
            max_headers: default_max_headers(),
            idle_timeout: default_idle(),
            body_timeout: default_body_timeout(),
            min_body_rate: default_min_body_rate(),
            grace_period: default_grace(),
            h2c: false,
            strict_sni: false,
            tls: vec![],
        }
    }
}

/// `[[server.tls]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub listen: String,
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub client_ca: Option<String>,
}

/// `[api_versions]` (its `[api_versions.X]` sub-tables are in `versions`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiVersionsConfig {
    pub sources: Vec<VersionSource>,
    pub default: Option<String>,
    pub versions: BTreeMap<String, VersionConfig>,
}

/// The keys of `[api_versions]` other than the version tables.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiVersionsHead {
    #[serde(default = "default_sources")]
    pub sources: Vec<VersionSource>,
    #[serde(default)]
    pub default: Option<String>,
}

fn default_sources() -> Vec<VersionSource> {
    vec![VersionSource::Path]
}

/// `[api_versions.v1]`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// RFC 3339 date (`2026-01-01`) or date-time.
    #[serde(default)]
    pub deprecated: Option<Date>,
    #[serde(default)]
    pub sunset: Option<Date>,
    #[serde(default)]
    pub link: Option<String>,
}

/// A date written as a string (`"2026-01-01"`, as the SPEC shows) or as a bare
/// TOML date / date-time.
#[derive(Debug, Clone, PartialEq)]
pub struct Date {
    /// As written.
    pub at: toml::value::Datetime,
    /// The same instant as a Unix timestamp (a bare date is midnight UTC).
    pub unix: i64,
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            D(toml::value::Datetime),
        }
        let at = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a date such as \"2026-01-01\" or \"2026-01-01T00:00:00Z\"",
            )
        })? {
            Raw::D(dt) => dt,
            Raw::S(s) => s.trim().parse::<toml::value::Datetime>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid date {s:?}: expected e.g. \"2026-01-01\" or \"2026-01-01T00:00:00Z\""
                ))
            })?,
        };
        let unix = units::datetime_to_unix(&at).map_err(serde::de::Error::custom)?;
        Ok(Date { at, unix })
    }
}

/// An entry of `targets`: `"host:port"` or `{ addr = "host:port", weight = 3 }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TargetConfig {
    Addr(String),
    Weighted(WeightedTarget),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedTarget {
    pub addr: String,
    #[serde(default = "one")]
    pub weight: usize,
}

fn one() -> usize {
    1
}

impl TargetConfig {
    pub fn addr(&self) -> &str {
        match self {
            TargetConfig::Addr(a) => a,
            TargetConfig::Weighted(w) => &w.addr,
        }
    }
    pub fn weight(&self) -> usize {
        match self {
            TargetConfig::Addr(_) => 1,
            TargetConfig::Weighted(w) => w.weight,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    ConsistentHash,
}

fn default_connect_timeout() -> Dur {
    Dur::secs(1)
}
fn default_read_timeout() -> Dur {
    Dur::secs(10)
}
fn yes() -> bool {
    true
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub balance: Balance,
    /// `header:NAME`, `ip`, `path` or `param:NAME`; required by `consistent_hash`.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub client_cert: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Reuse an idle upstream connection for any client's request. Off (the
    /// default): an upstream connection is reused only by the client connection
    /// that opened it, so bytes an upstream sends after its response (a queue
    /// shift) can never reach another client.
    #[serde(default)]
    pub share_connections: bool,
}

fn default_hc_path() -> String {
    "/healthz".into()
}
fn default_hc_interval() -> Dur {
    Dur::secs(2)
}
fn default_hc_timeout() -> Dur {
    Dur::secs(1)
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}

/// `[upstreams.NAME.health_check]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_hc_path")]
    pub path: String,
    #[serde(default = "default_hc_interval")]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "two")]
    pub healthy: usize,
    #[serde(default = "three")]
    pub unhealthy: usize,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectError, RetryOn::Timeout]
}

/// `[upstreams.NAME.retry]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "one")]
    pub attempts: usize,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub upstream: String,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default = "root")]
    pub path: String,
    /// Empty: any method.
    #[serde(default)]
    pub methods: Vec<Method>,
    #[serde(default)]
    pub headers: HeaderPredicates,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub plugins: Vec<String>,
}

fn root() -> String {
    "/".into()
}

/// `[plugins.NAME]`: `type` picks the variant, the other keys are the type's own.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginConfig {
    RequestId(RequestIdConfig),
    Headers(HeadersConfig),
    IpFilter(IpFilterConfig),
    Cors(CorsConfig),
    ApiKey(ApiKeyConfig),
    Jwt(JwtConfig),
    WebhookSignature(WebhookSignatureConfig),
    ForwardAuth(ForwardAuthConfig),
    RateLimit(RateLimitConfig),
    CircuitBreaker(CircuitBreakerConfig),
    Cache(CacheConfig),
    Idempotency(IdempotencyConfig),
}

impl PluginConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            PluginConfig::RequestId(_) => "request_id",
            PluginConfig::Headers(_) => "headers",
            PluginConfig::IpFilter(_) => "ip_filter",
            PluginConfig::Cors(_) => "cors",
            PluginConfig::ApiKey(_) => "api_key",
            PluginConfig::Jwt(_) => "jwt",
            PluginConfig::WebhookSignature(_) => "webhook_signature",
            PluginConfig::ForwardAuth(_) => "forward_auth",
            PluginConfig::RateLimit(_) => "rate_limit",
            PluginConfig::CircuitBreaker(_) => "circuit_breaker",
            PluginConfig::Cache(_) => "cache",
            PluginConfig::Idempotency(_) => "idempotency",
        }
    }
}

/// Where a plugin keeps shared state.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    #[default]
    Local,
    Redis,
}

/// What a plugin does when its backend (Redis) fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    Allow,
    Deny,
}

fn default_rate_limit_key() -> String {
    "ip".into()
}

/// `type = "rate_limit"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub rate: Rate,
    /// Requests admitted at once; default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `ip`, `consumer`, `header:NAME`, `claim:NAME`, `route` or `global`.
    #[serde(default = "default_rate_limit_key")]
    pub key: String,
    #[serde(default)]
    pub backend: StateBackend,
    /// Default `allow` (fail open).
    #[serde(default)]
    pub on_backend_error: Option<OnBackendError>,
    /// Most keys a local limiter tracks (idle keys are evicted first).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    100_000
}

fn default_window() -> Dur {
    Dur::secs(10)
}
fn default_min_requests() -> u32 {
    20
}
fn default_failure_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}
fn default_open_for() -> Dur {
    Dur::secs(30)
}
fn default_half_open() -> u32 {
    3
}

/// `type = "circuit_breaker"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Trip when failures / requests over `window` reach this (0 < r ≤ 1).
    #[serde(default)]
    pub failure_rate: Option<f64>,
    #[serde(default = "default_window")]
    pub window: Dur,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Trip after this many failures in a row.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
    #[serde(default)]
    pub slow_call: Option<Dur>,
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    #[serde(default = "default_half_open")]
    pub half_open_requests: u32,
}

fn default_cache_ttl() -> Dur {
    Dur::secs(30)
}
fn default_cache_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}
fn default_cache_size() -> Size {
    Size(64 << 20)
}
fn default_cache_entry() -> Size {
    Size(1 << 20)
}

/// `type = "cache"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness when the upstream gives none.
    #[serde(default = "default_cache_ttl")]
    pub ttl: Dur,
    #[serde(default)]
    pub max_ttl: Option<Dur>,
    #[serde(default = "default_cache_methods")]
    pub methods: Vec<String>,
    #[serde(default)]
    pub vary: Vec<String>,
    #[serde(default = "default_cache_size")]
    pub max_size: Size,
    #[serde(default = "default_cache_entry")]
    pub max_entry: Size,
    #[serde(default)]
    pub stale_if_error: Option<Dur>,
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

/// `type = "ip_filter"`: CIDR lists on the client IP (after `trusted_proxies`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct IpFilterConfig {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `type = "cors"`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`), or `["*"]`.
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default)]
    pub max_age: Option<Dur>,
}

/// One entry of `keys = [...]` (config or `keys_file`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub consumer: String,
    /// Lowercase hex SHA-256 of the key.
    pub key_sha256: String,
}

/// The contents of an `api_key` `keys_file`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    pub keys: Vec<ApiKeyEntry>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// `type = "api_key"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    #[serde(default = "default_api_key_header")]
    pub header: String,
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    #[serde(default)]
    pub keys_file: Option<String>,
}

fn default_jwks_cooldown() -> Dur {
    Dur::secs(30)
}
fn default_jwks_refresh() -> Dur {
    Dur::secs(300)
}
fn default_leeway() -> Dur {
    Dur::secs(30)
}

/// `type = "jwt"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub algorithms: Vec<String>,
    /// Environment variable holding the HMAC secret (UTF-8).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Minimum time between two fetches triggered by an unknown `kid`.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_cooldown: Dur,
    /// How often `jwks_url` is refreshed in the background.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Dur,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer_claim: Option<String>,
}

fn default_tolerance() -> Dur {
    Dur::secs(300)
}

/// `type = "webhook_signature"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSignatureConfig {
    /// `stripe`, `github`, `standard_webhooks` or `hmac`.
    pub scheme: String,
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Name(s) of environment variables, each holding one secret.
    #[serde(default)]
    pub secrets_env: Option<OneOrMany>,
    #[serde(default = "default_tolerance")]
    pub tolerance: Dur,
    /// `hmac` only: the header carrying the signature.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac` only: `sha256` (default) or `sha512`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// `hmac` only: `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `hmac` only: a header with the Unix timestamp that is signed too.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// `hmac` only: the signed string, from `{body}`, `{timestamp}` and `{header:NAME}`;
    /// default `{body}`, or `{timestamp}.{body}` with `timestamp_header`.
    #[serde(default)]
    pub signed_string: Option<String>,
    /// `hmac` only: a prefix before the signature value, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
}

fn default_forward_auth_timeout() -> Dur {
    Dur::millis(200)
}

/// `type = "forward_auth"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    pub url: String,
    #[serde(default = "default_forward_auth_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub forward_headers: Vec<String>,
    #[serde(default)]
    pub copy_response_headers: Vec<String>,
    /// `deny` (default: fail closed with 503) or `allow`.
    #[serde(default)]
    pub on_error: Option<String>,
    /// A header of the service's 2xx answer naming the request's consumer;
    /// without it the consumer is a digest of the forwarded credentials.
    #[serde(default)]
    pub consumer_header: Option<String>,
}

fn default_request_id_header() -> String {
    "x-request-id".into()
}

/// `type = "request_id"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    #[serde(default = "default_request_id_header")]
    pub header: String,
}

/// `type = "headers"`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(default)]
    pub request_set: BTreeMap<String, String>,
    #[serde(default)]
    pub request_remove: Vec<String>,
    #[serde(default)]
    pub response_set: BTreeMap<String, String>,
    #[serde(default)]
    pub response_remove: Vec<String>,
}
