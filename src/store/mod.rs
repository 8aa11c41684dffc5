//! Shared state of plugins that can keep it in this process or in `[redis]`
//! (SPEC §9). One abstraction per kind of state, each with a local and a Redis
//! implementation behind it:
//!
//! * [`Limiter`]: GCRA buckets per key (`rate_limit`);
//! * [`Records`]: idempotency records, begun, completed, aborted or locked
//!   (`idempotency`).
//!
//! What they share is written here once: the choice of backend from a plugin's
//! `backend` and `[redis]` ([`Backend::select`]), where a plugin's keys live in
//! Redis ([`Remote`]), and what a plugin does when Redis fails
//! ([`FailurePolicy`]: count, log at most once per 10 s, fail open or closed).
//! A plugin holds one store and never branches on the backend itself.

pub mod limiter;
pub mod records;
pub mod redis;

pub use self::limiter::Limiter;
pub use self::records::Records;
pub use self::redis::{redact, shared, BackendError, ErrorReporter, Redis};
use crate::pipeline::{BuildCtx, BuildResult};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Where a plugin keeps shared state.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum StateBackend {
    #[default]
    Local,
    Redis,
}

impl StateBackend {
    /// The `backend` label its failures are counted under in
    /// `tollgate_backend_errors_total` (none for local state: it cannot fail).
    pub fn error_label(self) -> Option<&'static str> {
        match self {
            StateBackend::Local => None,
            StateBackend::Redis => Some(self::redis::BACKEND_LABEL),
        }
    }
}

/// What a plugin does when its backend (Redis) fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendError {
    Allow,
    Deny,
}

/// The backend a store keeps its state in.
pub enum Backend {
    /// In this process: each gateway has its own.
    Local,
    /// In `[redis]`, shared by every gateway with the same definition.
    Redis(Remote),
}

impl Backend {
    /// The backend of a plugin's `backend` key: for `"redis"`, the shared
    /// connection of `[redis]` (errors at `backend`), with the plugin's keys
    /// under `tollgate:<namespace>:<plugin>:<definition digest>:`. The digest
    /// is of `definition`'s `Debug` text: gateways with the same definition
    /// share state; two definitions never collide.
    pub fn select(
        bx: &BuildCtx<'_>,
        choice: StateBackend,
        namespace: &str,
        definition: &dyn std::fmt::Debug,
    ) -> BuildResult<Backend> {
        match choice {
            StateBackend::Local => Ok(Backend::Local),
            StateBackend::Redis => Ok(Backend::Redis(Remote {
                redis: bx.redis("backend")?,
                prefix: key_prefix(namespace, bx.name, definition),
            })),
        }
    }
}

/// `tollgate:<namespace>:<plugin>:<digest>:`, the digest being the first 6
/// bytes of the SHA-256 of `definition`'s `Debug` text, in hex.
pub fn key_prefix(namespace: &str, plugin: &str, definition: &dyn std::fmt::Debug) -> String {
    let digest = hex::encode(&Sha256::digest(format!("{definition:?}").as_bytes())[..6]);
    format!("tollgate:{namespace}:{plugin}:{digest}:")
}

/// One plugin instance's keys in Redis: every key it touches is its prefix
/// followed by the store's own key.
pub struct Remote {
    redis: Arc<Redis>,
    prefix: String,
}

impl Remote {
    /// Run `script` on the one key `key` (under this plugin's prefix).
    pub async fn eval<T: ::redis::FromRedisValue>(
        &self,
        script: &::redis::Script,
        key: &str,
        args: &[&[u8]],
    ) -> Result<T, BackendError> {
        let k = format!("{}{key}", self.prefix);
        self.redis.eval(script, &[&k], args).await
    }

    /// The prefix of this plugin's keys.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The backend failed (the failure is already counted and logged): what the
/// plugin's `on_backend_error` says to do about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable(pub OnBackendError);

/// A plugin's `on_backend_error` with its default, and the reporter its
/// backend failures go to (`tollgate_backend_errors_total`, and a log line at
/// most once per 10 s).
#[derive(Clone)]
pub struct FailurePolicy {
    answer: OnBackendError,
    errors: Arc<ErrorReporter>,
}

impl FailurePolicy {
    /// `configured` when set, else `default` (`allow` for a rate limit,
    /// `deny` for idempotency).
    pub fn new(plugin: &str, configured: Option<OnBackendError>, default: OnBackendError) -> Self {
        FailurePolicy {
            answer: configured.unwrap_or(default),
            errors: Arc::new(ErrorReporter::new(plugin)),
        }
    }

    /// A request's backend call failed: report it, and say what to do.
    pub fn fail(&self, e: &BackendError) -> Unavailable {
        self.errors.report(e);
        Unavailable(self.answer)
    }

    /// A call that decides nothing more failed (a write after the answer):
    /// report it only.
    pub fn report(&self, e: &BackendError) {
        self.errors.report(e);
    }
}

#[cfg(test)]
mod tests;
