//! Reload when the config file, or a file it names, changes on disk.
//!
//! The *directories* are watched, not the files: editors save by writing a new
//! file and renaming it over the old one, and Kubernetes ConfigMaps swap a
//! `..data` symlink; a watch on the file itself misses both. Events are
//! debounced (a burst of writes makes one reload), and a reload happens only
//! when the files' contents differ from what is running.

use crate::reload::Reloader;
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
/// Longest a stream of events may hold a reload back.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Watches the config files' directories and reloads on a relevant change
/// ([`Reloader::sync_on_change`]), until the server shuts down.
pub struct ConfigWatcher {
    pub reloader: Arc<Reloader>,
}

/// The config file and every file it names, as absolute paths.
fn files(reloader: &Reloader) -> BTreeSet<PathBuf> {
    let rt = reloader.live.load();
    let mut files = rt.config.named_files();
    files.push(reloader.config_path.clone());
    files
        .into_iter()
        .filter_map(|f| {
            if f.is_absolute() {
                Some(f)
            } else {
                Some(std::env::current_dir().ok()?.join(f))
            }
        })
        .collect()
}

/// An event about one of `files`, or about a `..name` entry (the `..data`
/// symlink a Kubernetes ConfigMap swaps). Other files in the same directories
/// (a log written next to the config) are none of the watcher's business.
fn relevant(paths: &[PathBuf], files: &BTreeSet<PathBuf>) -> bool {
    paths.iter().any(|p| {
        files.contains(p)
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".."))
    })
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(ev.paths);
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
            let files = files(&self.reloader);
            let want: BTreeSet<PathBuf> = files
                .iter()
                .filter_map(|f| f.parent().map(PathBuf::from))
                .collect();
            for d in want.difference(&watched) {
                if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
                }
            }
            for d in watched.difference(&want) {
                let _ = watcher.unwatch(d);
            }
            watched = want;

            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        None => return,
                        Some(paths) if relevant(&paths, &files) => break,
                        Some(_) => {}
                    },
                    _ = shutdown.changed() => return,
                }
            }
            // Debounce: wait until relevant events stop for a moment, but no
            // longer than MAX_DELAY.
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            let quiet = tokio::time::sleep(DEBOUNCE);
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        None => return,
                        Some(paths) if relevant(&paths, &files) => {
                            quiet.as_mut().reset(tokio::time::Instant::now() + DEBOUNCE)
                        }
                        Some(_) => {}
                    },
                    _ = &mut quiet => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.changed() => return,
                }
            }
            let reloader = self.reloader.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || reloader.sync_on_change()).await {
                tracing::error!(error = %e, "reload task failed");
            }
        }
    }
}
