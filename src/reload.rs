//! The live config: one `ArcSwap<Runtime>` that every request loads once, and
//! the all-or-nothing reload that replaces it (SPEC §5).

use crate::metrics::METRICS;
use crate::runtime::{self, Reuse, Runtime};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct LastReload {
    pub ok: bool,
    pub at: SystemTime,
    pub errors: Vec<String>,
}

pub struct Live {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub config_path: PathBuf,
    /// Serialises reloads and remembers the last outcome (admin only, never
    /// touched on the request path).
    pub last: Mutex<Option<LastReload>>,
}

impl Live {
    pub fn new(rt: Runtime, config_path: PathBuf) -> Arc<Live> {
        Arc::new(Live {
            runtime: Arc::new(ArcSwap::from_pointee(rt)),
            config_path,
            last: Mutex::new(None),
        })
    }

    /// Read, validate and compile the config file, then swap it in whole; on
    /// any error the running config stays. Returns the new hash or the errors.
    pub fn reload(&self) -> Result<String, Vec<String>> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.runtime.load_full();
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
                if errs.is_empty() {
                    Ok(rt)
                } else {
                    Err(errs)
                }
            });
        match result {
            Ok(rt) => {
                let hash = rt.hash().to_string();
                self.runtime.store(Arc::new(rt));
                METRICS.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(hash = %hash, "config reloaded");
                *last = Some(LastReload {
                    ok: true,
                    at: SystemTime::now(),
                    errors: vec![],
                });
                Ok(hash)
            }
            Err(errors) => {
                METRICS.config_reloads.with_label_values(&["failure"]).inc();
                for e in &errors {
                    tracing::error!(error = %e, "config reload refused; the running config stays");
                }
                *last = Some(LastReload {
                    ok: false,
                    at: SystemTime::now(),
                    errors: errors.clone(),
                });
                Err(errors)
            }
        }
    }
}
