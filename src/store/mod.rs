//! Shared state of plugins that can keep it in this process or in `[redis]`
//! (SPEC §9): the backend choice, what to do when the backend fails, and the one
//! Redis connection every such plugin shares.

pub mod redis;

pub use self::redis::{redact, shared, BackendError, ErrorReporter, Redis};
use serde::Deserialize;

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
