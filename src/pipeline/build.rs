//! How a plugin is declared and built: its typed config ([`PluginConfig`]),
//! what its constructor may read ([`BuildCtx`]), and its errors ([`BuildError`]).

use super::{Order, Plugin};
use crate::config::Config;
pub use crate::config::KeyPath;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

/// The typed `[plugins.NAME]` table of one plugin type: parsed once (serde,
/// with located errors), compared by value on reload, then built.
///
/// A plugin module defines one of these and the registry in `plugins/mod.rs`
/// lists it; nothing else names the type.
pub trait PluginConfig: DeserializeOwned + Debug + PartialEq + Send + Sync + 'static {
    /// The `type = "..."` that selects this config.
    const TYPE: &'static str;
    /// Where the plugin runs in a chain.
    const ORDER: Order;
    /// Listed in `[server] plugins`, it also runs before routing
    /// ([`Plugin::before_routing`]).
    const BEFORE_ROUTING: bool = false;
    type Plugin: Plugin;

    /// Build the runtime plugin; checks that need files, the environment or
    /// other sections happen here (`tollgate check` runs this too).
    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Self::Plugin>;

    /// Checks of this table alone that serde cannot make (header names as map
    /// keys...): run when the file is read, with every other config error, so
    /// that `tollgate check` reports them in the same pass. Default: none.
    fn check(&self) -> Vec<BuildError> {
        Vec::new()
    }

    /// The files this plugin reads, resolved against the config's directory
    /// ([`Config::resolve`]): the watcher reloads when one changes, and an
    /// edited file makes a fresh instance. Default: none.
    fn files(&self, _config: &Config) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// Whether the plugin keeps its state in `[redis]` (its instance is rebuilt
    /// when `[redis]` changes, and `[server] work_stealing`, unset, turns on).
    fn uses_redis(&self) -> bool {
        false
    }
}

/// An error found while building a plugin, at a key path relative to its table
/// (empty for the table itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub path: KeyPath,
    pub message: String,
}

impl BuildError {
    /// An error at `key` of the plugin's table (`""`: the table itself).
    pub fn at(key: &str, message: impl Into<String>) -> BuildError {
        let path = if key.is_empty() {
            KeyPath::default()
        } else {
            KeyPath::default().key(key)
        };
        BuildError {
            path,
            message: message.into(),
        }
    }

    /// An error at element `i` of the list `key`.
    pub fn at_index(key: &str, i: usize, message: impl Into<String>) -> BuildError {
        BuildError {
            path: KeyPath::default().key(key).index(i),
            message: message.into(),
        }
    }

    /// One error, as a failed [`BuildResult`].
    pub fn fail<T>(key: &str, message: impl Into<String>) -> BuildResult<T> {
        Err(vec![BuildError::at(key, message)])
    }
}

pub type BuildResult<T> = Result<T, Vec<BuildError>>;

/// What a plugin constructor may read besides its own table.
pub struct BuildCtx<'a> {
    pub name: &'a str,
    pub config: &'a Config,
}

impl BuildCtx<'_> {
    /// The shared Redis connection of `[redis]`, for `backend = "redis"`.
    pub fn redis(&self, key: &str) -> BuildResult<Arc<crate::store::Redis>> {
        let Some(cfg) = &self.config.redis else {
            return BuildError::fail(
                key,
                "backend = \"redis\" needs a [redis] table with its url",
            );
        };
        crate::store::shared(cfg).map_err(|e| vec![BuildError::at(key, format!("[redis] {e}"))])
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn path(&self, p: &str) -> std::path::PathBuf {
        self.config.resolve(p)
    }
}

/// One error at `key` (a single key of the plugin's table, `""` for the table).
pub fn build_error(key: &str, message: impl Into<String>) -> Vec<BuildError> {
    vec![BuildError::at(key, message)]
}
