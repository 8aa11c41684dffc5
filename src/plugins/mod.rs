//! The plugins, and the registry that lists them. A plugin is one module here
//! (its typed config, its [`PluginConfig`](crate::pipeline::PluginConfig) impl
//! with its order and files, and its [`Plugin`](crate::pipeline::Plugin) impl)
//! plus one line in [`registry!`] below. Plugins are written against
//! [`crate::pipeline`], never against the proxy.

pub mod auth;

use crate::pipeline::{Kind, Registered};

/// Declares every plugin module and the registry entry of its config type.
macro_rules! registry {
    ($($module:ident :: $config:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every plugin type, in the order messages list them (a plugin's place in
        /// a chain is its [`PluginConfig::ORDER`](crate::pipeline::PluginConfig::ORDER)).
        pub static REGISTRY: &[&dyn Kind] = &[$(&Registered::<$module::$config>::NEW),*];
    };
}

registry! {
    request_id::RequestIdConfig,
    headers::HeadersConfig,
    ip_filter::IpFilterConfig,
    cors::CorsConfig,
    api_key::ApiKeyConfig,
    jwt::JwtConfig,
    webhook_signature::WebhookSignatureConfig,
    forward_auth::ForwardAuthConfig,
    rate_limit::RateLimitConfig,
    json_limits::JsonLimitsConfig,
    graphql::GraphQlConfig,
    openapi::OpenApiConfig,
    circuit_breaker::CircuitBreakerConfig,
    cache::CacheConfig,
    idempotency::IdempotencyConfig,
}

/// The registry entry of plugin type `name` (`"jwt"`).
pub fn kind(name: &str) -> Option<&'static dyn Kind> {
    REGISTRY.iter().copied().find(|k| k.type_name() == name)
}

/// Every registered type name, for messages.
pub fn type_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|k| k.type_name()).collect()
}
