//! Reload when the config file, or a file it names, changes on disk.
//!
//! The *directories* are watched, not the files: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes ConfigMaps swap a
//! `..data` symlink; a watch on the file itself misses both. Events are
//! debounced (a burst of writes makes one reload), and a reload happens only
//! when the files' contents differ from what is running.

use crate::reload::Live;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher as _};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(250);

pub struct ConfigWatcher {
    pub live: Arc<Live>,
}

fn dirs(live: &Live) -> BTreeSet<PathBuf> {
    let rt = live.runtime.load();
    let mut files = rt.config.named_files();
    files.push(live.config_path.clone());
    files
        .into_iter()
        .filter_map(|f| {
            let f = if f.is_absolute() {
                f
            } else {
                std::env::current_dir().ok()?.join(f)
            };
            f.parent().map(PathBuf::from)
        })
        .collect()
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the config files; reload with SIGHUP or POST /reload");
                return;
            }
        };
        let mut watched = BTreeSet::new();
        loop {
            let want = dirs(&self.live);
            for d in want.difference(&watched) {
                if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
                }
            }
            for d in watched.difference(&want) {
                let _ = watcher.unwatch(d);
            }
            watched = want;

            tokio::select! {
                ev = rx.recv() => if ev.is_none() { return },
                _ = shutdown.changed() => return,
            }
            // Debounce: wait until events stop for a moment.
            loop {
                tokio::select! {
                    ev = rx.recv() => if ev.is_none() { return },
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    _ = shutdown.changed() => return,
                }
            }
            let live = self.live.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || live.sync()).await {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    }
}
