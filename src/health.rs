//! The maintenance background services, both on the *current* snapshot (a
//! reload needs no restart of them): [`HealthChecks`] runs the active health
//! checks that are due for its upstreams, [`PluginTicks`] every plugin's
//! `tick` once a second (JWKS refresh…). Both stop when the server shuts down;
//! a check or tick already running finishes on its own.

use crate::metrics::METRICS;
use crate::runtime::{Live, Upstream};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::{Duration, Instant};

/// How often the health checks look for upstreams whose check is due (each
/// upstream's own `interval` decides when it is).
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// How often every plugin's `tick` runs.
const TICK_EVERY: Duration = Duration::from_secs(1);

/// Publish each target's health as `tollgate_upstream_healthy`.
pub fn publish(up: &Upstream) {
    for (b, label) in &up.targets {
        METRICS
            .upstream_healthy
            .with_label_values(&[&up.name, label])
            .set(up.is_healthy(b) as i64);
    }
}

/// Active health checks: each upstream with a `health_check` is checked every
/// `interval`, each check in a task of its own (a slow target holds up no
/// other upstream), and its targets' health published when it ends. Upstreams
/// without checks have their (passive) health published as it is.
pub struct HealthChecks {
    pub live: Live,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let rt = self.live.load_full();
            for up in rt.upstreams.values() {
                let Some(every) = up.health_interval else {
                    publish(up);
                    continue;
                };
                let due = {
                    let mut last = up.last_check.lock();
                    let due = last.is_none_or(|t| t.elapsed() >= every);
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                };
                if due {
                    let up = up.clone();
                    tokio::spawn(async move {
                        up.run_health_check().await;
                        publish(&up);
                    });
                }
            }
        }
    }
}

/// Every plugin instance's `tick`, about once a second (the first a second
/// after start), each in a task of its own: a slow tick (a JWKS fetch) holds
/// up no other plugin.
pub struct PluginTicks {
    pub live: Live,
}

#[async_trait]
impl BackgroundService for PluginTicks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + TICK_EVERY, TICK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let rt = self.live.load_full();
            for i in rt.instances.iter().cloned() {
                tokio::spawn(async move { i.plugin.tick().await });
            }
        }
    }
}
