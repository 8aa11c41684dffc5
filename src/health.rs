//! The maintenance background service: active health checks that are due for
//! the upstreams of the *current* snapshot, and once a second every plugin's
//! `tick` (JWKS refresh…), so a reload needs no restart of the service.

use crate::metrics::METRICS;
use crate::runtime::{Live, Upstream};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::{Duration, Instant};

pub struct HealthChecker {
    pub live: Live,
}

/// Publish each target's health as `tollgate_upstream_healthy`.
pub fn publish(up: &Upstream) {
    for (b, label) in &up.targets {
        METRICS
            .upstream_healthy
            .with_label_values(&[&up.name, label])
            .set(up.is_healthy(b) as i64);
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut last_plugin_tick = Instant::now();
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let rt = self.live.load_full();
            if last_plugin_tick.elapsed() >= Duration::from_secs(1) {
                last_plugin_tick = Instant::now();
                for i in rt.instances.iter().cloned() {
                    tokio::spawn(async move { i.plugin.tick().await });
                }
            }
            for up in rt.upstreams.values() {
                let Some(every) = up.health_interval else {
                    publish(up);
                    continue;
                };
                let due = {
                    let mut last = up.last_check.lock().unwrap_or_else(|p| p.into_inner());
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
