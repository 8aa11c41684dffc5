//! `openapi` (SPEC §13): requests checked against an OpenAPI 3.0 or 3.1
//! description before they reach the upstream. The path the upstream receives
//! picks the path item (404 when none), the method its operation (405 with
//! `Allow`); then path, query and header parameters (400), the body's content
//! type (415) and a JSON body against its schema (400 with an `errors` list).
//! With `responses = "log"`, upstream JSON responses are checked against the
//! operation's responses and mismatches logged, never blocked.
//!
//! Everything is compiled when the config is: the description and the files
//! its `$ref`s name are read once ([`spec`]), every schema becomes a
//! `jsonschema` validator, and the request path only matches and validates.
//! Validation messages never quote the client's values (`jsonschema`'s masked
//! messages): a card number in a wrong field is not echoed to logs or answers.

mod compile;
pub mod spec;

use crate::metrics::METRICS;
use crate::pipeline::{
    read_body, BuildCtx, BuildResult, FieldError, Flow, Order, Plugin, PluginConfig, Reply,
    RequestCtx, Series,
};
use crate::util::{BodyKind, LogGate};
use bytes::{Bytes, BytesMut};
use compile::{Location, Operation, PathItem};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// `type = "openapi"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenApiConfig {
    /// The description (YAML, or JSON when the name ends in `.json`),
    /// resolved against the config's directory.
    pub spec: String,
    #[serde(default)]
    pub responses: Responses,
}

/// What is done with upstream responses.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Responses {
    #[default]
    Off,
    /// Check JSON responses and log mismatches (never block them).
    Log,
}

impl PluginConfig for OpenApiConfig {
    const TYPE: &'static str = "openapi";
    const ORDER: Order = Order::OpenApi;
    type Plugin = OpenApi;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<OpenApi> {
        OpenApi::from_file(bx.name, &bx.path(&self.spec), self.responses)
            .map_err(|e| crate::pipeline::build_error("spec", e))
    }

    fn files(&self, config: &crate::config::Config) -> Vec<std::path::PathBuf> {
        spec::files(&config.resolve(&self.spec))
    }
}

pub struct OpenApi {
    name: String,
    log_responses: bool,
    paths: Vec<PathItem>,
    response_log: LogGate,
}

/// `reason`s of `tollgate_validation_failures_total`.
pub mod reason {
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const PARAMETERS: &str = "parameters";
    pub const CONTENT_TYPE: &str = "content_type";
    pub const BODY_MISSING: &str = "body_missing";
    pub const INVALID_JSON: &str = "invalid_json";
    pub const BODY_SCHEMA: &str = "body_schema";
    /// An upstream response that does not match (`responses = "log"`).
    pub const RESPONSE_SCHEMA: &str = "response_schema";
    pub const ALL: [&str; 8] = [
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        PARAMETERS,
        CONTENT_TYPE,
        BODY_MISSING,
        INVALID_JSON,
        BODY_SCHEMA,
        RESPONSE_SCHEMA,
    ];
}

/// The largest upstream response body checked with `responses = "log"`;
/// a larger one is not checked (and not held).
const MAX_CHECKED_RESPONSE: usize = 1024 * 1024;

/// Per request: the operation that matched, and the response being checked.
#[derive(Default)]
pub struct State {
    op: Option<(usize, usize)>,
    /// A HEAD request: its response has no body to check.
    head: bool,
    response: Option<Checked>,
}

struct Checked {
    validator: Arc<jsonschema::Validator>,
    status: u16,
    body: BytesMut,
    over: bool,
}

/// A refusal with its `errors`.
fn invalid(status: u16, detail: impl Into<String>, errors: Vec<FieldError>) -> Flow {
    Flow::Respond(Reply::Invalid {
        status,
        detail: detail.into(),
        errors: crate::pipeline::Errors::Fields(errors),
    })
}

fn field(pointer: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// Up to [`crate::pipeline::MAX_FIELD_ERRORS`] schema errors, as `{pointer,
/// message}` with masked messages; `prefix` goes before each pointer (a
/// parameter's name).
fn schema_errors(v: &jsonschema::Validator, instance: &Value, prefix: &str) -> Vec<FieldError> {
    v.iter_errors(instance)
        .take(crate::pipeline::MAX_FIELD_ERRORS)
        .map(|e| {
            let pointer = truncated(format!("{prefix}{}", e.instance_path()), 256);
            field(pointer, truncated(e.masked().to_string(), 300))
        })
        .collect()
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with `…`.
fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl OpenApi {
    /// Compile the description at `path` (what the config's build does).
    pub fn from_file(
        name: &str,
        path: &std::path::Path,
        responses: Responses,
    ) -> Result<OpenApi, String> {
        Ok(OpenApi {
            name: name.to_string(),
            log_responses: responses == Responses::Log,
            paths: compile::compile(path)?,
            response_log: LogGate::new(),
        })
    }

    /// What a JSON body sent as `content_type` to `method path` gets:
    /// `Ok` when it is valid or not checked, else the 400's `errors` (the
    /// request hook's checks of a body, for tests and benches).
    pub fn body_errors(
        &self,
        method: &http::Method,
        path: &str,
        content_type: &[u8],
        body: &[u8],
    ) -> Result<(), Vec<FieldError>> {
        let Some((pi, _)) = self.find(path) else {
            return Ok(());
        };
        let Some((_, op)) = self.paths[pi].ops.iter().find(|(m, _)| m == method) else {
            return Ok(());
        };
        let Some(validator) = op
            .body
            .as_ref()
            .and_then(|b| b.media(content_type))
            .and_then(|m| m.validator.as_ref())
            .filter(|_| crate::util::is_json(content_type))
        else {
            return Ok(());
        };
        let doc = parse_strict(body).map_err(|e| vec![field("", e)])?;
        let errors = schema_errors(validator, &doc, "");
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// A request without a body: refused when the operation requires one.
    fn missing(&self, ctx: &RequestCtx, required: bool) -> Flow {
        if !required {
            return Flow::Continue;
        }
        self.count(ctx, reason::BODY_MISSING);
        invalid(
            400,
            "a request body is required",
            vec![field("", "a request body is required")],
        )
    }

    fn count(&self, ctx: &RequestCtx, reason: &'static str) {
        METRICS
            .validation_failures
            .with_label_values(&[ctx.route_name(), &self.name, reason])
            .inc();
    }

    /// The path item for `path` (the most specific template: at the first
    /// segment where two differ, a literal beats a `{param}`), with the
    /// values of its path parameters.
    fn find<'p>(&self, path: &'p str) -> Option<(usize, Vec<(&str, String)>)> {
        let segs: Vec<&'p str> = path.split('/').skip(1).collect();
        let mut best: Option<(usize, &PathItem)> = None;
        for (i, item) in self.paths.iter().enumerate() {
            if item.matches(&segs) && best.is_none_or(|(_, b)| item.more_specific_than(b)) {
                best = Some((i, item));
            }
        }
        let (i, item) = best?;
        Some((i, item.params(&segs)))
    }

    /// Path, query and header parameters.
    fn check_params(
        op: &Operation,
        path_values: &[(&str, String)],
        req: &pingora::http::RequestHeader,
    ) -> Vec<FieldError> {
        let pairs = compile::query_pairs(req.uri.query().unwrap_or(""));
        let mut errors = Vec::new();
        for p in &op.params {
            let raw: Vec<String> = match p.location {
                Location::Path => path_values
                    .iter()
                    .filter(|(n, _)| *n == p.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                Location::Query => compile::query_values(&pairs, &p.name),
                Location::Header => req
                    .headers
                    .get_all(p.name.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect(),
            };
            if raw.is_empty() {
                if p.required {
                    errors.push(field(
                        &p.name,
                        format!("required {} parameter is missing", p.location.as_str()),
                    ));
                }
                continue;
            }
            let value = match p.kind.coerce(&raw, p.location, p.explode) {
                Ok(v) => v,
                Err(msg) => {
                    errors.push(field(&p.name, msg));
                    continue;
                }
            };
            if let Some(v) = &p.validator {
                errors.extend(schema_errors(v, &value, &p.name));
            }
        }
        errors
    }
}

/// Parse a JSON body, refusing duplicate member names (parsers resolve them
/// differently: the gateway and the upstream must see the same document).
pub use crate::json::parse_strict;

impl Plugin for OpenApi {
    type State = State;

    fn series(&self) -> Vec<Series> {
        reason::ALL
            .iter()
            .filter(|r| self.log_responses || **r != reason::RESPONSE_SCHEMA)
            .map(|&reason| Series::ValidationFailures { reason })
            .collect()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &mut State,
    ) -> pingora::Result<Flow> {
        let empty = session.is_body_empty();
        let Some((pi, path_values)) = self.find(ctx.upstream_path()) else {
            self.count(ctx, reason::NOT_FOUND);
            return Ok(Flow::problem(
                404,
                "no operation of the API description has this path",
            ));
        };
        let item = &self.paths[pi];
        let req = session.req_header();
        // HEAD is GET without a body, unless the path describes HEAD itself.
        let method = &req.method;
        let found = item.ops.iter().position(|(m, _)| m == method).or_else(|| {
            (*method == http::Method::HEAD)
                .then(|| item.ops.iter().position(|(m, _)| *m == http::Method::GET))
                .flatten()
        });
        let Some(oi) = found else {
            self.count(ctx, reason::METHOD_NOT_ALLOWED);
            return Ok(Flow::Respond(Reply::Problem {
                status: 405,
                detail: format!("{} is not an operation of this path", req.method),
                headers: vec![(http::header::ALLOW, item.allow.clone())],
            }));
        };
        let op = &item.ops[oi].1;
        state.op = Some((pi, oi));
        state.head = *method == http::Method::HEAD;
        let errors = Self::check_params(op, &path_values, req);
        if !errors.is_empty() {
            self.count(ctx, reason::PARAMETERS);
            return Ok(invalid(400, "invalid request parameters", errors));
        }
        let Some(body) = &op.body else {
            return Ok(Flow::Continue);
        };
        if empty {
            return Ok(self.missing(ctx, body.required));
        }
        let ct = match crate::util::body_kind(&req.headers) {
            BodyKind::Plain(ct) => ct,
            BodyKind::AmbiguousType => {
                self.count(ctx, reason::CONTENT_TYPE);
                return Ok(Flow::problem(400, "more than one Content-Type"));
            }
            BodyKind::Encoded => {
                self.count(ctx, reason::CONTENT_TYPE);
                return Ok(Flow::problem(
                    415,
                    "a compressed body cannot be checked: send it without Content-Encoding",
                ));
            }
        };
        let Some(media) = body.media(ct) else {
            self.count(ctx, reason::CONTENT_TYPE);
            return Ok(Flow::problem(
                415,
                format!("the content type must be one of: {}", body.accepted),
            ));
        };
        // Only a JSON body is checked against a schema (a `*/*` or
        // `application/*` schema applies to the JSON bodies it admits).
        let Some(validator) = media.validator.clone().filter(|_| crate::util::is_json(ct)) else {
            return Ok(Flow::Continue);
        };
        let bytes = match read_body(session, ctx).await {
            Ok(b) => b,
            Err(e) => return Ok(e.refusal()),
        };
        if bytes.is_empty() {
            return Ok(self.missing(ctx, body.required));
        }
        let doc = match parse_strict(&bytes) {
            Ok(v) => v,
            Err(e) => {
                self.count(ctx, reason::INVALID_JSON);
                return Ok(invalid(
                    400,
                    "the request body is not valid JSON",
                    vec![field("", e)],
                ));
            }
        };
        let errors = schema_errors(&validator, &doc, "");
        if errors.is_empty() {
            Ok(Flow::Continue)
        } else {
            self.count(ctx, reason::BODY_SCHEMA);
            Ok(invalid(
                400,
                "the request body does not match the API description",
                errors,
            ))
        }
    }

    fn upstream_response(&self, resp: &ResponseHeader, _ctx: &mut RequestCtx, state: &mut State) {
        if !self.log_responses {
            return;
        }
        let Some((pi, oi)) = state.op else { return };
        let op = &self.paths[pi].ops[oi].1;
        let status = resp.status.as_u16();
        // Only an identity-encoded JSON body that is there: not a HEAD's,
        // a 204's or a 304's.
        let json = !state.head
            && status != 204
            && status != 304
            && matches!(crate::util::body_kind(&resp.headers), BodyKind::Plain(ct) if crate::util::is_json(ct));
        state.response = match op.response(status) {
            Some(validator) if json => Some(Checked {
                validator: validator.clone(),
                status,
                body: BytesMut::new(),
                over: false,
            }),
            _ => None,
        };
    }

    fn upstream_response_body(
        &self,
        body: &Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        state: &mut State,
    ) {
        let Some(c) = &mut state.response else { return };
        if let Some(b) = body {
            if c.body.len() + b.len() > MAX_CHECKED_RESPONSE {
                c.over = true;
                c.body = BytesMut::new();
            } else if !c.over {
                c.body.extend_from_slice(b);
            }
        }
        if !end {
            return;
        }
        let Some(c) = state.response.take() else {
            return;
        };
        if c.over || c.body.is_empty() {
            return;
        }
        let errors = match parse_strict(&c.body) {
            Ok(doc) => schema_errors(&c.validator, &doc, ""),
            Err(e) => vec![field("", e)],
        };
        if errors.is_empty() {
            return;
        }
        self.count(ctx, reason::RESPONSE_SCHEMA);
        // One line per 10 s per plugin at most: the counter has them all.
        if !self.response_log.allow(std::time::Duration::from_secs(10)) {
            return;
        }
        let list: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.pointer, e.message))
            .collect();
        tracing::warn!(
            request_id = ctx.request_id.as_deref().unwrap_or(""),
            route = ctx.route_name(),
            plugin = %self.name,
            status = c.status,
            errors = ?list,
            "upstream response does not match the API description (at most one line per 10 s; all counted in tollgate_validation_failures_total)"
        );
    }
}

#[cfg(test)]
mod tests;
