//! `headers`: set and remove request headers on the way upstream and response
//! headers on the way back.

use super::{Phase, Plugin};
use crate::config::HeadersConfig;
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

pub struct Headers {
    request_set: Vec<(HeaderName, HeaderValue)>,
    request_remove: Vec<HeaderName>,
    response_set: Vec<(HeaderName, HeaderValue)>,
    response_remove: Vec<HeaderName>,
}

fn pairs(
    m: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    m.iter()
        .map(|(k, v)| {
            Ok((
                HeaderName::try_from(k.as_str()).map_err(|e| format!("{k}: {e}"))?,
                HeaderValue::try_from(v.as_str()).map_err(|e| format!("{k}: {e}"))?,
            ))
        })
        .collect()
}

fn names(l: &[String]) -> Result<Vec<HeaderName>, String> {
    l.iter()
        .map(|k| HeaderName::try_from(k.as_str()).map_err(|e| format!("{k}: {e}")))
        .collect()
}

impl Headers {
    pub fn new(c: &HeadersConfig) -> Result<Self, String> {
        Ok(Headers {
            request_set: pairs(&c.request_set)?,
            request_remove: names(&c.request_remove)?,
            response_set: pairs(&c.response_set)?,
            response_remove: names(&c.response_remove)?,
        })
    }
}

#[async_trait]
impl Plugin for Headers {
    fn phase(&self) -> Phase {
        Phase::Headers
    }

    fn upstream_request(&self, req: &mut RequestHeader, _ctx: &RequestCtx) -> pingora::Result<()> {
        for n in &self.request_remove {
            req.remove_header(n);
        }
        for (n, v) in &self.request_set {
            req.insert_header(n.clone(), v.clone())?;
        }
        Ok(())
    }

    fn response(&self, resp: &mut ResponseHeader, _ctx: &RequestCtx) {
        for n in &self.response_remove {
            resp.remove_header(n);
        }
        for (n, v) in &self.response_set {
            let _ = resp.insert_header(n.clone(), v.clone());
        }
    }
}
