//! The all-or-nothing reload (SPEC §5): the config files compiled into a new
//! snapshot and stored in the [`Live`] handle every request loads once, or
//! refused with the running config left as it is.

use crate::metrics::{self, reload_result, METRICS};
use crate::runtime::{self, Live, Reuse, Runtime};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct LastReload {
    pub ok: bool,
    pub at: SystemTime,
    pub errors: Vec<String>,
    /// `sources_digest` of the files this reload read.
    pub digest: Option<String>,
}

/// Reloads the live snapshot from the config files (`SIGHUP`, the file
/// watcher, `POST /reload`) and remembers how the last reload went.
pub struct Reloader {
    /// The live snapshot handle this reloader stores new snapshots in.
    pub live: Live,
    pub config_path: PathBuf,
    /// Serialises reloads and remembers the last outcome (admin only, never
    /// touched on the request path).
    pub last: Mutex<Option<LastReload>>,
    /// `sources_digest` of the files the running snapshot was built from.
    pub loaded_digest: Mutex<String>,
    /// Whether the workers run with work stealing: fixed at start
    /// (`Config::work_stealing` of the first config).
    pub work_stealing: bool,
}

impl Reloader {
    /// The reloader of the first snapshot, `rt`, whose metric series it
    /// makes exist ([`metrics::prime`]).
    pub fn new(rt: Runtime, config_path: PathBuf) -> Arc<Reloader> {
        metrics::prime(&rt, None);
        let digest = Self::sources_digest(&rt);
        let work_stealing = rt.config.work_stealing();
        Arc::new(Reloader {
            work_stealing,
            live: Arc::new(ArcSwap::from_pointee(rt)),
            config_path,
            last: Mutex::new(None),
            loaded_digest: Mutex::new(digest),
        })
    }

    /// Digest of the config file and every file it names, as they are on disk now.
    pub fn sources_digest(rt: &Runtime) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(std::fs::read(&rt.config.file).unwrap_or_default());
        for f in rt.config.named_files() {
            h.update(f.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(std::fs::read(&f).unwrap_or_default());
        }
        hex::encode(h.finalize())
    }

    /// A reload someone asked for (`POST /reload`, `SIGHUP`): make the running
    /// config match the files, and record and count the outcome even when
    /// nothing changed. A reload that finds the running config already up to
    /// date is a successful reload (issue 12, item 26); files unchanged since a
    /// refused attempt are refused again with that attempt's errors, without
    /// compiling them again.
    pub fn sync(&self) -> Result<String, Vec<String>> {
        self.sync_files(true)
    }

    /// The file watcher's reload: like [`Reloader::sync`], but an event that
    /// changed nothing (the edit was already applied by `SIGHUP` or
    /// `POST /reload`, or the file was only touched) is no reload and is not
    /// counted, so one edit seen by the watcher and a request is applied once.
    /// Except after a refusal: files restored to the running config end it,
    /// and that is recorded (and counted) as a successful reload, so
    /// `/config/status` no longer shows the refused edit (issue 12, item 26).
    pub fn sync_on_change(&self) -> Result<String, Vec<String>> {
        self.sync_files(false)
    }

    fn sync_files(&self, requested: bool) -> Result<String, Vec<String>> {
        let mut last = self.last.lock();
        let current = self.live.load_full();
        let digest = Self::sources_digest(&current);
        if digest == *self.loaded_digest.lock() {
            let hash = current.hash().to_string();
            // The watcher records an unchanged config only when it ends a
            // refusal (a bad edit reverted to the running config): the files
            // and the running config agree again, and `/config/status` says so.
            let reverted = last.as_ref().is_some_and(|l| !l.ok);
            if requested || reverted {
                METRICS
                    .config_reloads
                    .with_label_values(&[reload_result::SUCCESS])
                    .inc();
                if reverted && !requested {
                    tracing::info!(hash = %hash, "config reloaded: the files are the running config again");
                } else {
                    tracing::info!(hash = %hash, "config reloaded: unchanged");
                }
                *last = Some(LastReload {
                    ok: true,
                    at: SystemTime::now(),
                    errors: vec![],
                    digest: None,
                });
            }
            return Ok(hash);
        }
        if let Some(l) = last
            .as_mut()
            .filter(|l| !l.ok && l.digest.as_deref() == Some(digest.as_str()))
        {
            if requested {
                METRICS
                    .config_reloads
                    .with_label_values(&[reload_result::FAILURE])
                    .inc();
                for e in &l.errors {
                    tracing::error!(error = %e, "config reload refused; the running config stays");
                }
                l.at = SystemTime::now();
            }
            return Err(l.errors.clone());
        }
        self.reload_locked(&mut last)
    }

    /// Read, validate and compile the config file, then swap it in whole; on
    /// any error the running config stays. Returns the new hash or the errors.
    pub fn reload(&self) -> Result<String, Vec<String>> {
        let mut last = self.last.lock();
        self.reload_locked(&mut last)
    }

    fn reload_locked(&self, last: &mut Option<LastReload>) -> Result<String, Vec<String>> {
        let current = self.live.load_full();
        // Read the files once, before compiling, so that the digest describes
        // what was compiled (a write racing the reload triggers another one).
        let digest = Self::sources_digest(&current);
        let result = runtime::load(&self.config_path, Reuse { previous: Some(&current) })
            .map_err(|e| e.messages())
            .and_then(|rt| {
                let mut errs = Vec::new();
                let (a, b) = (&current.config.server, &rt.config.server);
                if a.listen != b.listen {
                    errs.push("server.listen changed: listeners cannot change without a restart (use `tollgate run --upgrade`)".to_string());
                }
                if a.tls != b.tls {
                    errs.push("server.tls changed: TLS listeners cannot change without a restart (use `tollgate run --upgrade`)".to_string());
                }
                if a.admin_listen != b.admin_listen {
                    errs.push("server.admin_listen changed: needs a restart".to_string());
                }
                if a.threads != b.threads {
                    errs.push("server.threads changed: needs a restart".to_string());
                }
                // Compared with how the workers were started, not with the
                // last config: a set value that differs needs a restart; an
                // unset one follows the plugins (`Config::work_stealing`), and
                // the workers keep running as started.
                let wanted = rt.config.work_stealing();
                if wanted != self.work_stealing {
                    if b.work_stealing.is_some() {
                        errs.push("server.work_stealing changed: needs a restart".to_string());
                    } else {
                        tracing::warn!(
                            running = self.work_stealing,
                            "[server] work_stealing is unset and this config's plugins would run the workers with it {}; they keep running as started until a restart{}",
                            if wanted { "on" } else { "off" },
                            if wanted {
                                " (meanwhile an idempotency record on Redis lands a round trip after the response, and a retry in that moment gets 409)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                if !errs.is_empty() {
                    return Err(errs);
                }
                // Certificates are part of the all-or-nothing: read them all first.
                let certs = crate::tls::prepare(&rt.config).map_err(|e| vec![format!("server.tls: {e}")])?;
                Ok((rt, certs))
            });
        match result {
            Ok((rt, certs)) => {
                let hash = rt.hash().to_string();
                let digest = Self::sources_digest(&rt);
                let new = Arc::new(rt);
                self.live.store(new.clone());
                // The series of the new config at 0, those of what it removed gone.
                metrics::prime(&new, Some(&current));
                crate::tls::install(certs);
                *self.loaded_digest.lock() = digest;
                METRICS
                    .config_reloads
                    .with_label_values(&[reload_result::SUCCESS])
                    .inc();
                tracing::info!(hash = %hash, "config reloaded");
                *last = Some(LastReload {
                    ok: true,
                    at: SystemTime::now(),
                    errors: vec![],
                    digest: None,
                });
                Ok(hash)
            }
            Err(errors) => {
                METRICS
                    .config_reloads
                    .with_label_values(&[reload_result::FAILURE])
                    .inc();
                for e in &errors {
                    tracing::error!(error = %e, "config reload refused; the running config stays");
                }
                *last = Some(LastReload {
                    ok: false,
                    at: SystemTime::now(),
                    errors: errors.clone(),
                    digest: Some(digest),
                });
                Err(errors)
            }
        }
    }
}
