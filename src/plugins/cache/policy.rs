//! Policy: which requests use the cache and under which key, which responses
//! are stored and for how long, and when a stale copy may answer.

use super::storage::PurgeTag;
use super::Cache;
use crate::pipeline::KeyParts;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

impl Cache {
    /// `cache_key_callback`.
    pub fn cache_key(&self, parts: &KeyParts<'_>, headers: &http::HeaderMap) -> CacheKey {
        let mut primary = Vec::with_capacity(128);
        primary.extend_from_slice(&self.salt.to_le_bytes());
        let mut field = |b: &[u8]| {
            primary.extend_from_slice(&(b.len() as u32).to_le_bytes());
            primary.extend_from_slice(b);
        };
        // A HEAD is answered from the GET response: Pingora fetches GET upstream
        // on a HEAD miss, so what is stored is always a GET response.
        let method = if parts.method == "HEAD" {
            "GET"
        } else {
            parts.method
        };
        field(parts.route.as_bytes());
        field(method.as_bytes());
        field(parts.scheme.as_bytes());
        field(parts.host.as_bytes());
        field(parts.path.as_bytes());
        match parts.query {
            Some(q) => field(format!("?{q}").as_bytes()),
            None => field(b""),
        }
        match parts.consumer {
            Some(c) => field(format!("c:{c}").as_bytes()),
            None => field(b""),
        }
        for name in &self.vary {
            let mut all = headers.get_all(name).iter().peekable();
            if all.peek().is_none() {
                field(b"");
                continue;
            }
            let mut v = Vec::new();
            v.push(b'=');
            for (i, val) in all.enumerate() {
                if i > 0 {
                    v.extend_from_slice(b", ");
                }
                v.extend_from_slice(val.as_bytes());
            }
            field(&v);
        }
        let mut key = CacheKey::new(primary, "");
        key.extensions.insert(PurgeTag {
            route: Arc::from(parts.route),
            path: Box::from(parts.path),
        });
        key
    }

    /// `response_cache_filter`: whether the upstream's response may be stored,
    /// and until when it is fresh.
    pub fn response_cacheable(&self, resp: &ResponseHeader) -> RespCacheable {
        self.cacheable_at(resp, SystemTime::now())
    }

    pub(super) fn cacheable_at(&self, resp: &ResponseHeader, now: SystemTime) -> RespCacheable {
        let no = RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        let status = resp.status.as_u16();
        if !((200..300).contains(&status) && status != 206 || status == 301 || status == 404) {
            return no;
        }
        let h = &resp.headers;
        if h.contains_key(http::header::SET_COOKIE) {
            return no;
        }
        // The key only varies on the configured headers: a response that
        // varies on anything else cannot be shared.
        for v in h.get_all(http::header::VARY) {
            let Ok(v) = v.to_str() else { return no };
            for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*"
                    || !self
                        .vary
                        .iter()
                        .any(|c| c.as_str().eq_ignore_ascii_case(name))
                {
                    return no;
                }
            }
        }
        let cc = CacheControl::from_resp_headers(resp);
        if let Some(cc) = &cc {
            if cc.no_store()
                || cc.has_key("private")
                || cc.has_key("no-cache")
                || cc.max_age().is_err()
                || cc.s_maxage().is_err()
            {
                return no;
            }
        }
        let lifetime = cc
            .as_ref()
            .and_then(|cc| {
                cc.s_maxage()
                    .ok()
                    .flatten()
                    .or_else(|| cc.max_age().ok().flatten())
            })
            .map(|s| Duration::from_secs(s.into()))
            .or_else(|| {
                pingora::cache::filters::calculate_expires_header_time(resp)
                    .map(|t| t.duration_since(now).unwrap_or_default())
            })
            .unwrap_or(self.ttl);
        let lifetime = match self.max_ttl {
            Some(m) => lifetime.min(m),
            None => lifetime,
        };
        // Time the response already spent in caches upstream (RFC 9111 §4.2.3).
        let age = h
            .get(http::header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or_default();
        let fresh = lifetime.saturating_sub(age);
        if fresh.is_zero() {
            return no;
        }
        // must-revalidate, proxy-revalidate and s-maxage forbid serving stale.
        let stale_if_error = match &cc {
            Some(cc) if cc.must_revalidate() || cc.proxy_revalidate() || cc.has_key("s-maxage") => {
                0
            }
            _ => self.stale_if_error,
        };
        let mut header = resp.clone();
        header.remove_header(&http::header::AGE);
        RespCacheable::Cacheable(CacheMeta::new(now + fresh, now, 0, stale_if_error, header))
    }

    /// `should_serve_stale`: a stored copy past its freshness (but within
    /// `stale_if_error`, which Pingora checks) may answer when the upstream
    /// failed: a connect error, a timeout, a broken response, or a 5xx.
    pub fn should_serve_stale(&self, error: Option<&Error>) -> bool {
        let Some(e) = error else {
            return false; // stale-while-revalidate is not offered
        };
        match e.etype() {
            ErrorType::HTTPStatus(s) => *s >= 500,
            _ => e.esource() == &ErrorSource::Upstream,
        }
    }
}
