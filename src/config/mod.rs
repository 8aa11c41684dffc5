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
pub use units::{Cidr, Dur, HashKey, HeaderPredicates, Method, Rate, RetryOn, Size, VersionSource};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A whole, validated `gateway.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub api_versions: Option<ApiVersionsConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[plugins.NAME]`, each parsed by its type's entry in the plugin registry.
    pub plugins: BTreeMap<String, Arc<dyn crate::pipeline::AnyConfig>>,
    pub redis: Option<RedisConfig>,
    /// `[telemetry]`: tracing (SPEC §10).
    pub telemetry: Option<crate::telemetry::TelemetryConfig>,
    /// `[queues.NAME]`: brokers routes hand requests to (SPEC §12).
    pub queues: BTreeMap<String, crate::queue::QueueConfig>,
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
    /// `[server] work_stealing` as the process runs it: as set, or, unset, on
    /// when a plugin keeps its state in `[redis]`. The shared Redis
    /// connection is driven by a task that, on single-threaded workers, only
    /// the worker that opened it could run, whatever the load of that worker;
    /// and an idempotency record on Redis must land from a synchronous hook,
    /// which a single-threaded worker cannot wait in.
    pub fn work_stealing(&self) -> bool {
        self.server
            .work_stealing
            .unwrap_or_else(|| self.plugins.values().any(|p| p.uses_redis()))
    }

    /// Every file this config names (certificates, keys, key files, JWKS), resolved;
    /// a change to any of them is a reason to reload.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.server.tls {
            out.extend([t.cert.as_str(), t.key.as_str()]);
            out.extend(t.client_ca.iter().map(String::as_str));
        }
        for u in self.upstreams.values() {
            out.extend(
                u.ca_file
                    .iter()
                    .chain(u.client_cert.iter())
                    .chain(u.client_key.iter())
                    .map(String::as_str),
            );
        }
        let mut v: Vec<PathBuf> = out.into_iter().map(|f| self.resolve(f)).collect();
        for p in self.plugins.values() {
            v.extend(p.files(self));
        }
        v.sort();
        v.dedup();
        v
    }

    /// The typed config of plugin `name`, when it is a `T` (tests, benches).
    pub fn plugin_config<T: 'static>(&self, name: &str) -> Option<&T> {
        self.plugins.get(name)?.as_any().downcast_ref()
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
    #[serde(
        default = "default_redis_timeout",
        deserialize_with = "units::checked::positive"
    )]
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
    #[serde(
        default = "default_threads",
        deserialize_with = "units::checked::at_least_one"
    )]
    pub threads: usize,
    /// Whether a worker thread may take over the tasks of a busy one (one
    /// multi-threaded Tokio runtime). Off, each worker runs its own
    /// single-threaded runtime and keeps the HTTP/1 connections it accepted,
    /// as nginx's workers do: no cross-thread wake-ups or shared run queue on
    /// the request path (`benches/load/run`: see the README); Pingora starts
    /// each HTTP/2 stream on a worker of its choosing. Unset: on only when a
    /// plugin keeps its state in `[redis]` ([`Config::work_stealing`]).
    #[serde(default)]
    pub work_stealing: Option<bool>,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    #[serde(
        default = "default_body",
        deserialize_with = "units::checked::nonzero_size"
    )]
    pub max_request_body: Size,
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "units::checked::positive"
    )]
    pub request_timeout: Dur,
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "units::checked::positive"
    )]
    pub header_timeout: Dur,
    #[serde(
        default = "default_header_size",
        deserialize_with = "units::checked::header_size"
    )]
    pub max_header_size: Size,
    #[serde(
        default = "default_max_headers",
        deserialize_with = "units::checked::at_least_one"
    )]
    pub max_headers: usize,
    #[serde(
        default = "default_idle",
        deserialize_with = "units::checked::positive"
    )]
    pub idle_timeout: Dur,
    /// Longest wait for the next bytes of a request body (408, then close).
    #[serde(
        default = "default_body_timeout",
        deserialize_with = "units::checked::positive"
    )]
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
            work_stealing: None,
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
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "units::checked::positive"
    )]
    pub connect_timeout: Dur,
    #[serde(
        default = "default_read_timeout",
        deserialize_with = "units::checked::positive"
    )]
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
    #[serde(
        default = "default_hc_interval",
        deserialize_with = "units::checked::positive"
    )]
    pub interval: Dur,
    #[serde(default = "default_hc_timeout")]
    pub timeout: Dur,
    #[serde(default = "two", deserialize_with = "units::checked::at_least_one")]
    pub healthy: usize,
    #[serde(default = "three", deserialize_with = "units::checked::at_least_one")]
    pub unhealthy: usize,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectError, RetryOn::Timeout]
}

/// `[upstreams.NAME.retry]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "one", deserialize_with = "units::checked::attempts")]
    pub attempts: usize,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Where requests go: an `[upstreams.X]`, or a `[queues.X]` (exactly
    /// one of the two).
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
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
