//! The responses the gateway writes itself (a refusal, a plugin's reply, a
//! failed proxying), and what every response gets on its way out: the chain's
//! response hooks and the API version headers (`decorate`), and the chain's
//! `finish` hooks, once (`finish_chain`).

use super::{problem, Gateway, ProxyCtx};
use crate::pipeline::{Errors, Reply};
use http::header;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::borrow::Cow;

/// A request refused by the gateway before any plugin ran: the problem+json
/// answer it gets (see [`Gateway::refuse`]).
pub struct Refusal {
    pub status: u16,
    pub detail: Cow<'static, str>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Refusal {
    pub fn new(status: u16, detail: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl Gateway {
    /// Headers every response gets: the chain's response hooks and the API
    /// version lifecycle headers.
    pub(super) fn decorate(&self, resp: &mut ResponseHeader, ctx: &mut ProxyCtx) {
        let ProxyCtx { req, states, .. } = &mut *ctx;
        match req.route() {
            Some(route) => {
                for (n, i) in route.chain.iter().enumerate() {
                    i.plugin.response(resp, req, states.slot(n));
                }
            }
            None => {
                for i in &req.rt.before_routing {
                    i.plugin.response(resp, req, &mut None);
                }
            }
        }
        if let (Some(v), Some(versions)) = (&ctx.req.matched.version, &ctx.req.rt.versions) {
            if let Some(info) = versions.known.get(v) {
                for (name, val) in [
                    ("deprecation", &info.deprecation),
                    ("sunset", &info.sunset),
                    ("link", &info.link),
                ] {
                    if let Some(val) = val {
                        let _ = resp.insert_header(name, val.clone());
                    }
                }
            }
        }
    }

    /// Write a problem+json response. Never fails the request further: a client
    /// that went away is simply gone.
    pub async fn respond_problem(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
        status: u16,
        detail: &str,
        extra: Vec<(http::HeaderName, http::HeaderValue)>,
    ) {
        self.respond_problem_with(session, ctx, status, detail, extra, &Errors::NONE)
            .await
    }

    /// [`Self::respond_problem`] with an `errors` list (SPEC §13).
    pub async fn respond_problem_with(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
        status: u16,
        detail: &str,
        extra: Vec<(http::HeaderName, http::HeaderValue)>,
        errors: &Errors,
    ) {
        let body = problem::body_with_errors(status, detail, ctx.req.request_id(), errors);
        let mut resp = match ResponseHeader::build(status, Some(4 + extra.len())) {
            Ok(r) => r,
            Err(_) => return,
        };
        let _ = resp.insert_header(header::CONTENT_TYPE, problem::CONTENT_TYPE);
        let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        for (n, v) in extra {
            let _ = resp.append_header(n, v);
        }
        self.decorate(&mut resp, ctx);
        ctx.req.status = status;
        if ctx.req.client.expect_continue
            && session.response_written().is_none()
            && !session.is_body_done()
        {
            // Refused before `100 Continue`: the client may never send the body it
            // announced, so the connection cannot carry another request.
            session.set_keepalive(None);
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        if session
            .write_response_header(Box::new(resp), head_only)
            .await
            .is_ok()
            && !head_only
        {
            let _ = session.write_response_body(Some(body), true).await;
        }
    }

    /// Answer a request refused before any plugin ran. The chain's `finish`
    /// hooks run later, in the logging phase, as for any request.
    pub(super) async fn refuse(&self, session: &mut Session, ctx: &mut ProxyCtx, r: Refusal) {
        self.respond_problem(session, ctx, r.status, &r.detail, r.headers)
            .await
    }

    /// Every plugin's `finish` hook, once per request: before the gateway writes
    /// an answer of its own (so that released resources, an idempotency key or a
    /// probe slot, are free before the client can send its next request), or
    /// else in the logging phase.
    pub(super) fn finish_chain(&self, ctx: &mut ProxyCtx) {
        if std::mem::replace(&mut ctx.finished, true) {
            return;
        }
        let rt = ctx.req.rt.clone();
        if let Some(route) = ctx.req.matched.index.map(|i| &rt.routes[i]) {
            for (n, i) in route.chain.iter().enumerate() {
                i.plugin.finish(&mut ctx.req, ctx.states.slot(n));
            }
        }
    }

    /// Answer with a plugin's reply, after the chain's `finish` hooks.
    pub(super) async fn respond(&self, session: &mut Session, ctx: &mut ProxyCtx, reply: Reply) {
        self.finish_chain(ctx);
        match reply {
            Reply::Problem {
                status,
                detail,
                headers,
            } => {
                self.respond_problem(session, ctx, status, &detail, headers)
                    .await
            }
            Reply::Invalid {
                status,
                detail,
                errors,
            } => {
                self.respond_problem_with(session, ctx, status, &detail, vec![], &errors)
                    .await
            }
            Reply::Raw { mut header, body } => {
                self.decorate(&mut header, ctx);
                ctx.req.status = header.status.as_u16();
                let empty = body.is_empty();
                if session.write_response_header(header, empty).await.is_ok() && !empty {
                    let _ = session.write_response_body(Some(body), true).await;
                }
            }
        }
    }
}

/// A header value from text the gateway made; an empty value if it cannot be one.
pub(super) fn hv(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}
