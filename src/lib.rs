//! tollgate: an API gateway on Cloudflare's Pingora.
//!
//! The pipeline, top to bottom: `config` (what the user writes) → `runtime`
//! (the compiled snapshot) → `proxy` (Pingora's `ProxyHttp` phases running the
//! route's `plugins`), beside the `admin` listener and `reload`. Plugins are
//! written against `pipeline`, the plugin API below the proxy, and keep shared
//! state through `store`.

pub mod admin;
pub mod breaker;
pub mod config;
pub mod demo;
pub mod health;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod plugins;
pub mod proxy;
pub mod queue;
pub mod reload;
pub mod route_pattern;
pub mod runtime;
pub mod server;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod util;
pub mod watch;
