//! `headers`: set and remove request headers on the way upstream and response
//! headers on the way back.

use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, KeyPath, Order, Plugin, PluginConfig, RequestCtx,
};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `type = "headers"`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    #[serde(default)]
    pub request_set: BTreeMap<String, String>,
    #[serde(default)]
    pub request_remove: Vec<String>,
    #[serde(default)]
    pub response_set: BTreeMap<String, String>,
    #[serde(default)]
    pub response_remove: Vec<String>,
}

impl PluginConfig for HeadersConfig {
    const TYPE: &'static str = "headers";
    const ORDER: Order = Order::Headers;
    type Plugin = Headers;

    fn build(&self, _bx: &BuildCtx<'_>) -> BuildResult<Headers> {
        self.compile()
    }

    fn check(&self) -> Vec<BuildError> {
        self.compile().err().unwrap_or_default()
    }
}

impl HeadersConfig {
    /// The header names and values, each checked (errors at their keys).
    fn compile(&self) -> BuildResult<Headers> {
        let mut errs = Vec::new();
        let mut pairs = |key: &str, m: &BTreeMap<String, String>| {
            let mut out = Vec::new();
            for (h, v) in m {
                let path = KeyPath::default().key(key).key(h.as_str());
                match (
                    HeaderName::try_from(h.as_str()),
                    HeaderValue::try_from(v.as_str()),
                ) {
                    (Ok(n), Ok(v)) => out.push((n, v)),
                    (Err(_), _) => errs.push(BuildError {
                        path,
                        message: format!("invalid header name {h:?}"),
                    }),
                    (_, Err(_)) => errs.push(BuildError {
                        path,
                        message: "invalid header value (control characters are not allowed)".into(),
                    }),
                }
            }
            out
        };
        let request_set = pairs("request_set", &self.request_set);
        let response_set = pairs("response_set", &self.response_set);
        let mut names = |key: &str, l: &[String]| {
            let mut out = Vec::new();
            for (i, h) in l.iter().enumerate() {
                match HeaderName::try_from(h.as_str()) {
                    Ok(n) => out.push(n),
                    Err(_) => errs.push(BuildError::at_index(
                        key,
                        i,
                        format!("invalid header name {h:?}"),
                    )),
                }
            }
            out
        };
        let request_remove = names("request_remove", &self.request_remove);
        let response_remove = names("response_remove", &self.response_remove);
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Headers {
            request_set,
            request_remove,
            response_set,
            response_remove,
        })
    }
}

pub struct Headers {
    request_set: Vec<(HeaderName, HeaderValue)>,
    request_remove: Vec<HeaderName>,
    response_set: Vec<(HeaderName, HeaderValue)>,
    response_remove: Vec<HeaderName>,
}

impl Plugin for Headers {
    type State = ();

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        _ctx: &RequestCtx,
        _: &mut (),
    ) -> pingora::Result<()> {
        for n in &self.request_remove {
            req.remove_header(n);
        }
        for (n, v) in &self.request_set {
            req.insert_header(n.clone(), v.clone())?;
        }
        Ok(())
    }

    fn response(&self, resp: &mut ResponseHeader, _ctx: &RequestCtx, _: &mut ()) {
        for n in &self.response_remove {
            resp.remove_header(n);
        }
        for (n, v) in &self.response_set {
            let _ = resp.insert_header(n.clone(), v.clone());
        }
    }
}
