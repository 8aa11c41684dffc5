//! The admin listener (SPEC §6): health, readiness, metrics, config status,
//! reload and upstream state. Loopback by default; with `admin_token_env` every
//! request needs `Authorization: Bearer <token>`.

use crate::reload::Reloader;
use crate::runtime::Live;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct Admin {
    /// The live snapshot (the reloader's).
    pub live: Live,
    /// `POST /reload`, and the last reload's outcome for `/config/status`.
    pub reloader: Arc<Reloader>,
    /// Proxy listen addresses; `/readyz` is 200 once each accepts connections.
    pub listeners: Vec<std::net::SocketAddr>,
    ready: AtomicBool,
}

impl Admin {
    pub fn new(reloader: Arc<Reloader>, listeners: Vec<std::net::SocketAddr>) -> Self {
        Admin {
            live: reloader.live.clone(),
            reloader,
            listeners,
            ready: AtomicBool::new(false),
        }
    }

    async fn ready(&self) -> bool {
        if self.ready.load(Ordering::Relaxed) {
            return true;
        }
        for a in &self.listeners {
            let mut probe = *a;
            if probe.ip().is_unspecified() {
                probe.set_ip(match probe {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let ok = matches!(
                tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    tokio::net::TcpStream::connect(probe)
                )
                .await,
                Ok(Ok(_))
            );
            if !ok {
                return false;
            }
        }
        self.ready.store(true, Ordering::Relaxed);
        true
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn json_resp(status: StatusCode, v: serde_json::Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

fn problem(status: u16, detail: &str) -> Response<Vec<u8>> {
    let body =
        crate::proxy::problem::body(status, detail, &crate::pipeline::new_request_id()).to_vec();
    let mut b = Response::builder()
        .status(status)
        .header("content-type", crate::proxy::problem::CONTENT_TYPE)
        .header("content-length", body.len());
    if status == 401 {
        b = b.header("www-authenticate", "Bearer realm=\"tollgate-admin\"");
    }
    b.body(body).unwrap_or_default()
}

impl Admin {
    fn authorized(&self, session: &ServerSession) -> bool {
        let rt = self.live.load();
        let Some(var) = &rt.config.server.admin_token_env else {
            return true;
        };
        let Ok(expected) = std::env::var(var) else {
            return false;
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare digests so neither the length nor the content leaks through timing.
        let a = Sha256::digest(presented.as_bytes());
        let b = Sha256::digest(expected.as_bytes());
        !expected.is_empty() && bool::from(a.ct_eq(&b))
    }

    fn config_status(&self) -> serde_json::Value {
        let rt = self.live.load();
        let last = self.reloader.last.lock().clone();
        json!({
            "hash": rt.hash(),
            "loaded_at": rfc3339(rt.loaded_at),
            "last_reload": last.map(|l| json!({
                "result": if l.ok { "success" } else { "failure" },
                "at": rfc3339(l.at),
                "errors": l.errors,
            })),
        })
    }

    fn upstreams(&self) -> serde_json::Value {
        let rt = self.live.load();
        let mut names: Vec<&String> = rt.upstreams.keys().collect();
        names.sort();
        let list: Vec<serde_json::Value> = names
            .into_iter()
            .map(|n| {
                let up = &rt.upstreams[n];
                let circuit = rt
                    .instances
                    .iter()
                    .filter_map(|i| i.plugin.circuit_state(n))
                    .max()
                    .map_or("closed", |s| match s {
                        2 => "open",
                        1 => "half_open",
                        _ => "closed",
                    });
                json!({
                    "name": n,
                    "circuit": circuit,
                    "targets": up.targets.iter().map(|(b, label)| json!({
                        "target": &**label,
                        "weight": b.weight,
                        "healthy": up.is_healthy(b),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "upstreams": list })
    }
}

/// `POST /cache/purge` body: both keys optional; `{}` purges every entry.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    route: Option<String>,
    path_prefix: Option<String>,
}

impl Admin {
    /// Remove the stored responses of `route` (every route when absent) whose
    /// normalised path starts with `path_prefix` (default `/`); answers
    /// `{"purged": N}`.
    async fn purge_cache(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        const LIMIT: usize = 64 * 1024;
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(b)) => {
                    if body.len() + b.len() > LIMIT {
                        return problem(413, "the purge request body is larger than 64 KiB");
                    }
                    body.extend_from_slice(&b);
                }
                Ok(None) => break,
                Err(_) => return problem(400, "the purge request body could not be read"),
            }
        }
        let req: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return problem(
                    400,
                    &format!(
                    "expected a JSON object {{\"route\": \"...\", \"path_prefix\": \"/...\"}}: {e}"
                ),
                )
            }
        };
        let prefix = req.path_prefix.as_deref().unwrap_or("/");
        if !prefix.starts_with('/') {
            return problem(400, "path_prefix must start with /");
        }
        let rt = self.live.load();
        if let Some(name) = &req.route {
            if !rt.routes.iter().any(|r| &*r.name == name.as_str()) {
                return problem(404, &format!("no route named {name:?}"));
            }
        }
        let mut purged = 0;
        let mut seen = std::collections::HashSet::new();
        for route in rt
            .routes
            .iter()
            .filter(|r| req.route.as_deref().is_none_or(|n| n == &*r.name))
        {
            for cache in route.chain.iter().filter(|i| i.plugin.is_cache()) {
                // An instance shared by several routes keys its entries by route.
                if seen.insert((cache.name.clone(), route.name.clone())) {
                    purged += cache.plugin.cache_purge(&route.name, prefix).unwrap_or(0);
                }
            }
        }
        json_resp(StatusCode::OK, json!({ "purged": purged }))
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if !self.authorized(session) {
            return problem(401, "a valid admin bearer token is required");
        }
        // The proxy listeners' rule (SPEC §4): `get`, `Post`... are refused.
        if crate::proxy::forwarded::is_miscased_method(&method) {
            return problem(400, "a standard method must be written in upper case");
        }
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => json_resp(StatusCode::OK, json!({"status": "ok"})),
            (Method::GET, "/readyz") => {
                if self.ready().await {
                    json_resp(
                        StatusCode::OK,
                        json!({"status": "ready", "hash": self.live.load().hash()}),
                    )
                } else {
                    json_resp(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "starting"}),
                    )
                }
            }
            (Method::GET, "/metrics") => {
                let body = crate::metrics::render_live(&self.live.load());
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain; version=0.0.4")
                    .header("content-length", body.len())
                    .body(body)
                    .unwrap_or_default()
            }
            (Method::GET, "/config/status") => json_resp(StatusCode::OK, self.config_status()),
            (Method::POST, "/reload") => {
                let reloader = self.reloader.clone();
                let res = tokio::task::spawn_blocking(move || reloader.sync())
                    .await
                    .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]));
                match res {
                    Ok(hash) => {
                        json_resp(StatusCode::OK, json!({"result": "success", "hash": hash}))
                    }
                    Err(errors) => json_resp(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"result": "failure", "errors": errors}),
                    ),
                }
            }
            (Method::POST, "/cache/purge") => self.purge_cache(session).await,
            (Method::GET, "/upstreams") => json_resp(StatusCode::OK, self.upstreams()),
            (
                _,
                "/healthz" | "/readyz" | "/metrics" | "/config/status" | "/upstreams" | "/reload"
                | "/cache/purge",
            ) => problem(405, "method not allowed on this admin route"),
            _ => problem(404, "no such admin route"),
        }
    }
}
