//! `SIGHUP` reloads the config (SPEC §5). Pingora handles `SIGTERM`, `SIGQUIT`
//! and `SIGINT` itself (graceful shutdown and upgrade).

use crate::reload::Live;
use std::sync::Arc;

pub fn spawn_sighup(live: Arc<Live>) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-sighup".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the SIGHUP listener");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    tracing::error!("cannot listen for SIGHUP");
                    return;
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the config");
                    let live = live.clone();
                    let _ = tokio::task::spawn_blocking(move || live.sync()).await;
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the SIGHUP listener");
    }
}
