//! `json_limits` (SPEC §13): the shape of a JSON request body — nesting depth,
//! members per object, elements per array, length of a string — checked by a
//! streaming scanner ([`scan`]) that never builds a document, and invalid JSON
//! refused with it. Requests whose content type is not JSON pass untouched.
//!
//! When the body can be held back from the upstream (a declared
//! `Content-Length` within what Pingora replays, 64 KiB, and within
//! `max_request_body`), it is read and checked whole in the request phase, so
//! that an invalid body never leaves the gateway; later plugins (`openapi`,
//! `idempotency`) reuse the bytes. A larger or chunked body is checked piece by
//! piece as it streams upstream: at the first violation the upstream request is
//! abandoned before its body is complete (the connection is closed mid-body, so
//! the upstream never receives a whole invalid request) and the client gets the
//! 400. Either way the bytes the upstream receives are the client's, unaltered.

pub mod scan;

use crate::config::units::checked;
use crate::config::Size;
use crate::metrics::METRICS;
use crate::pipeline::{
    read_body, BuildCtx, BuildResult, FieldError, Flow, Order, Plugin, PluginConfig, Reply,
    RequestCtx, Series, MAX_BUFFERED_BODY,
};
use crate::util::BodyKind;
use bytes::Bytes;
use pingora::proxy::Session;
use scan::{Limits, Scanner, Violation};
use serde::Deserialize;

/// `type = "json_limits"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonLimitsConfig {
    /// Nesting of objects and arrays (the top-level value is depth 1).
    #[serde(default = "d_depth", deserialize_with = "checked::at_least_one")]
    pub max_depth: usize,
    /// Members of one object.
    #[serde(default = "d_keys", deserialize_with = "checked::at_least_one")]
    pub max_keys: usize,
    /// Elements of one array.
    #[serde(default = "d_array", deserialize_with = "checked::at_least_one")]
    pub max_array: usize,
    /// Bytes of one string or key (and of one number).
    #[serde(default = "d_string", deserialize_with = "checked::nonzero_size")]
    pub max_string: Size,
}

fn d_depth() -> usize {
    32
}
fn d_keys() -> usize {
    1000
}
fn d_array() -> usize {
    10_000
}
fn d_string() -> Size {
    Size(64 * 1024)
}

impl Default for JsonLimitsConfig {
    fn default() -> Self {
        JsonLimitsConfig {
            max_depth: d_depth(),
            max_keys: d_keys(),
            max_array: d_array(),
            max_string: d_string(),
        }
    }
}

impl PluginConfig for JsonLimitsConfig {
    const TYPE: &'static str = "json_limits";
    const ORDER: Order = Order::JsonLimits;
    type Plugin = JsonLimits;

    fn check(&self) -> Vec<crate::pipeline::BuildError> {
        if self.max_depth > MAX_DEPTH_LIMIT {
            return vec![crate::pipeline::BuildError::at(
                "max_depth",
                format!("must be at most {MAX_DEPTH_LIMIT}"),
            )];
        }
        Vec::new()
    }

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<JsonLimits> {
        Ok(JsonLimits {
            name: bx.name.to_string(),
            limits: Limits {
                max_depth: self.max_depth,
                max_keys: self.max_keys,
                max_array: self.max_array,
                max_string: usize::try_from(self.max_string.0).unwrap_or(usize::MAX),
            },
        })
    }
}

pub struct JsonLimits {
    name: String,
    limits: Limits,
}

/// `reason` of `tollgate_validation_failures_total`: the body is not JSON.
pub const INVALID_JSON: &str = "invalid_json";
/// The `reason` of a limit is its key: `max_depth`, `max_keys`, `max_array`,
/// `max_string`.
pub const LIMITS: [&str; 4] = ["max_depth", "max_keys", "max_array", "max_string"];

/// Per request: the scanner of a body checked as it streams, or whether the
/// whole body was already checked.
#[derive(Default)]
pub enum State {
    /// Not a JSON body, or checked whole in the request phase: nothing to do.
    #[default]
    Idle,
    /// Checked as it streams, for the upstream attempt it belongs to. The
    /// last piece received is held back until the next one (or the end) is
    /// checked, so that the upstream never has the whole body before the
    /// scanner has accepted it.
    Streaming {
        scanner: Box<Scanner>,
        attempt: u32,
        held: Option<Bytes>,
        done: bool,
    },
}

/// The most a config may set `max_depth` to: the scanner keeps a frame of
/// about 300 bytes per level.
pub const MAX_DEPTH_LIMIT: usize = 1024;

impl JsonLimits {
    fn count(&self, ctx: &RequestCtx, reason: &'static str) {
        METRICS
            .validation_failures
            .with_label_values(&[ctx.route_name(), &self.name, reason])
            .inc();
    }

    /// The 400 for a violation, counted.
    fn refusal(&self, ctx: &RequestCtx, v: Violation) -> Reply {
        let (reason, detail, error) = match v {
            Violation::Invalid { pointer, message } => (
                INVALID_JSON,
                "the request body is not valid JSON".to_string(),
                FieldError { pointer, message },
            ),
            Violation::Limit { limit, pointer } => (
                limit,
                format!("the request body exceeds {limit}"),
                FieldError {
                    message: format!("{limit} ({}) exceeded", self.limit_value(limit)),
                    pointer,
                },
            ),
        };
        self.count(ctx, reason);
        Reply::Invalid {
            status: 400,
            detail,
            errors: crate::pipeline::Errors::Fields(vec![error]),
        }
    }

    fn limit_value(&self, limit: &str) -> usize {
        match limit {
            "max_depth" => self.limits.max_depth,
            "max_keys" => self.limits.max_keys,
            "max_array" => self.limits.max_array,
            _ => self.limits.max_string,
        }
    }

    /// Check a whole body at once.
    pub fn check(&self, body: &[u8]) -> Result<(), Violation> {
        let mut s = Scanner::new(self.limits);
        s.feed(body)?;
        s.finish()
    }
}

impl Plugin for JsonLimits {
    type State = State;

    fn series(&self) -> Vec<Series> {
        std::iter::once(INVALID_JSON)
            .chain(LIMITS)
            .map(|reason| Series::ValidationFailures { reason })
            .collect()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &mut State,
    ) -> pingora::Result<Flow> {
        let empty = session.is_body_empty();
        let req = session.req_header();
        match crate::util::body_kind(&req.headers) {
            BodyKind::Plain(ct) if crate::util::is_json(ct) => {}
            BodyKind::Plain(_) => return Ok(Flow::Continue),
            BodyKind::AmbiguousType => {
                self.count(ctx, INVALID_JSON);
                return Ok(Flow::problem(400, "more than one Content-Type"));
            }
            BodyKind::Encoded => {
                let json = req
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| crate::util::is_json(v.as_bytes()));
                if !json {
                    return Ok(Flow::Continue);
                }
                self.count(ctx, INVALID_JSON);
                return Ok(Flow::problem(
                    415,
                    "a compressed JSON body cannot be checked: send it without Content-Encoding",
                ));
            }
        }
        if empty {
            return Ok(Flow::Continue);
        }
        let window = MAX_BUFFERED_BODY.min(ctx.rt.limits.max_request_body);
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok()?.parse::<u64>().ok());
        let route = ctx.route();
        // Held whole before the upstream: a body read already, a queue's
        // (never streamed upstream), one declared within the window, and one
        // of unknown length on a route whose `openapi` or `graphql` reads it
        // anyway.
        let held = ctx.body.is_some()
            || route.is_some_and(|r| r.queue.is_some())
            || declared.is_some_and(|n| n <= window)
            || declared.is_none()
                && route.is_some_and(|r| {
                    r.chain
                        .iter()
                        .any(|i| matches!(i.order, Order::OpenApi | Order::GraphQl))
                });
        if !held {
            *state = State::Streaming {
                scanner: Box::new(Scanner::new(self.limits)),
                attempt: ctx.attempts,
                held: None,
                done: false,
            };
            return Ok(Flow::Continue);
        }
        let body = match read_body(session, ctx).await {
            Ok(b) => b,
            Err(e) => return Ok(e.refusal()),
        };
        match self.check(&body) {
            Ok(()) => Ok(Flow::Continue),
            Err(v) => Ok(Flow::Respond(self.refusal(ctx, v))),
        }
    }

    fn request_body(
        &self,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        state: &mut State,
    ) -> Result<(), Reply> {
        let State::Streaming {
            scanner,
            attempt,
            held,
            done,
        } = state
        else {
            return Ok(());
        };
        // A retry sends the body again from its start.
        if *attempt != ctx.attempts {
            *attempt = ctx.attempts;
            **scanner = Scanner::new(self.limits);
            *held = None;
            *done = false;
        }
        if *done {
            return Ok(());
        }
        let mut r = match body.as_deref() {
            Some(c) if !c.is_empty() => scanner.feed(c),
            _ => Ok(()),
        };
        if r.is_ok() && end {
            r = scanner.finish();
        }
        if let Err(v) = r {
            *done = true;
            *held = None;
            *body = Some(Bytes::new());
            return Err(self.refusal(ctx, v));
        }
        let piece = body.take().filter(|b| !b.is_empty());
        if end {
            *done = true;
            // The body is accepted: what was held back goes with the last piece.
            *body = match (held.take(), piece) {
                (Some(h), Some(p)) => {
                    let mut all = bytes::BytesMut::with_capacity(h.len() + p.len());
                    all.extend_from_slice(&h);
                    all.extend_from_slice(&p);
                    Some(all.freeze())
                }
                (h, p) => Some(h.or(p).unwrap_or_default()),
            };
        } else {
            // Send the previous piece; hold this one until the next is checked.
            let previous = match piece {
                Some(p) => held.replace(p),
                None => None,
            };
            *body = Some(previous.unwrap_or_default());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_s() {
        let c: JsonLimitsConfig = toml::from_str("").unwrap();
        assert_eq!(c, JsonLimitsConfig::default());
        assert_eq!(
            (c.max_depth, c.max_keys, c.max_array, c.max_string.0),
            (32, 1000, 10_000, 65536)
        );
        assert!(toml::from_str::<JsonLimitsConfig>("max_depth = 0").is_err());
        assert!(toml::from_str::<JsonLimitsConfig>("max_strings = 1").is_err());
    }
}
