//! `tollgate demo`: small in-process upstream services on the loopback targets
//! that `gateway.toml` names, so a newcomer can `curl` through the gateway at once.

use crate::config::Config;
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct DemoService {
    name: String,
    next_id: AtomicU64,
}

fn resp(status: u16, v: serde_json::Value, name: &str) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(&v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("x-demo-service", name)
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for DemoService {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = s.read_request_body().await {
            if body.len() + chunk.len() > 1 << 20 {
                return resp(413, json!({"error": "body too large"}), &self.name);
            }
            body.extend_from_slice(&chunk);
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segs.as_slice()) {
            (&Method::GET, ["healthz"]) => resp(200, json!({"status": "ok"}), &self.name),
            (&Method::GET, ["accounts", id]) | (&Method::GET, [_, "accounts", id]) => {
                let v2 = path.starts_with("/v2/");
                let mut acct = json!({"id": id, "owner": "Ada Lovelace", "currency": "EUR"});
                if v2 {
                    acct["balance"] = json!({"amount": "1250.00", "currency": "EUR"});
                } else {
                    acct["balance"] = json!("1250.00");
                }
                resp(200, acct, &self.name)
            }
            (&Method::POST, ["payments"]) | (&Method::POST, [_, "payments"]) => {
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                resp(
                    201,
                    json!({"id": format!("pay_{id:06}"), "status": "accepted", "request": req}),
                    &self.name,
                )
            }
            _ => resp(
                200,
                json!({"service": self.name, "method": method.as_str(), "path": path}),
                &self.name,
            ),
        }
    }
}

/// One demo service per loopback target of every upstream in the config.
pub fn services(cfg: &Config) -> Vec<Service<HttpServer<DemoService>>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, up) in &cfg.upstreams {
        for t in &up.targets {
            let addr = t.addr();
            let loopback = addr
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback())
                || addr.starts_with("localhost:");
            if !loopback || !seen.insert(addr.to_string()) || up.tls {
                continue;
            }
            let app = DemoService {
                name: name.clone(),
                next_id: AtomicU64::new(0),
            };
            let mut svc = Service::new(format!("demo {name} {addr}"), HttpServer::new_app(app));
            svc.add_tcp(addr);
            out.push(svc);
        }
    }
    out
}
