//! `graphql` (SPEC §14): what one GraphQL request may ask for — depth,
//! aliases, root fields, tokens, complexity, introspection — measured on the
//! parsed query before it reaches the upstream ([`analyze`]), and persisted
//! queries: an allowlist of query texts by SHA-256, looked up for Automatic
//! Persisted Queries, and required with `only_persisted`.
//!
//! The three request forms of GraphQL over HTTP are read: `POST` with
//! `application/json` (one request object, or an array of them: a batch,
//! each checked), `POST` with `application/graphql` (the body is the query),
//! and `GET` with `?query=` (and `operationName`, `variables`, `extensions`).
//! The request goes upstream unaltered. The complexity measured (summed over
//! a batch) is left in `RequestCtx::graphql_complexity` for later plugins.

pub mod analyze;

use crate::config::units::checked;
use crate::metrics::METRICS;
use crate::pipeline::{
    read_body, BuildCtx, BuildError, BuildResult, Flow, Order, Plugin, PluginConfig, Reply,
    RequestCtx, Series,
};
use crate::util::BodyKind;
use analyze::{Code, Limits};
use pingora::proxy::Session;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// `type = "graphql"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphQlConfig {
    #[serde(default = "d_depth", deserialize_with = "checked::at_least_one")]
    pub max_depth: usize,
    #[serde(default = "d_aliases")]
    pub max_aliases: usize,
    #[serde(default = "d_root", deserialize_with = "checked::at_least_one")]
    pub max_root_fields: usize,
    #[serde(default = "d_tokens", deserialize_with = "checked::at_least_one")]
    pub max_tokens: usize,
    #[serde(default = "d_complexity")]
    pub max_complexity: u64,
    #[serde(default = "d_list")]
    pub default_list_size: u64,
    #[serde(default)]
    pub introspection: bool,
    /// A JSON object mapping the SHA-256 hex of a query's text to the text.
    #[serde(default)]
    pub persisted_queries_file: Option<String>,
    #[serde(default)]
    pub only_persisted: bool,
    #[serde(default = "d_batch", deserialize_with = "checked::at_least_one")]
    pub max_batch: usize,
}

fn d_depth() -> usize {
    10
}
fn d_aliases() -> usize {
    15
}
fn d_root() -> usize {
    10
}
fn d_tokens() -> usize {
    5000
}
fn d_complexity() -> u64 {
    1000
}
fn d_list() -> u64 {
    10
}
fn d_batch() -> usize {
    10
}

/// The largest `max_depth` a config may set: the parser's recursion limit
/// follows it.
pub const MAX_DEPTH_LIMIT: usize = 100;
/// The largest `max_tokens` a config may set.
pub const MAX_TOKENS_LIMIT: usize = 1_000_000;

impl PluginConfig for GraphQlConfig {
    const TYPE: &'static str = "graphql";
    const ORDER: Order = Order::GraphQl;
    type Plugin = GraphQl;

    fn check(&self) -> Vec<BuildError> {
        let mut errs = Vec::new();
        if self.max_depth > MAX_DEPTH_LIMIT {
            errs.push(BuildError::at(
                "max_depth",
                format!("must be at most {MAX_DEPTH_LIMIT}"),
            ));
        }
        if self.max_tokens > MAX_TOKENS_LIMIT {
            errs.push(BuildError::at(
                "max_tokens",
                format!("must be at most {MAX_TOKENS_LIMIT}"),
            ));
        }
        if self.only_persisted && self.persisted_queries_file.is_none() {
            errs.push(BuildError::at(
                "only_persisted",
                "needs persisted_queries_file (the allowlist)",
            ));
        }
        errs
    }

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<GraphQl> {
        let persisted = match &self.persisted_queries_file {
            Some(f) => load_allowlist(&bx.path(f))
                .map_err(|e| vec![BuildError::at("persisted_queries_file", e)])?,
            None => HashMap::new(),
        };
        let limits = Limits {
            max_depth: self.max_depth,
            max_aliases: self.max_aliases,
            max_root_fields: self.max_root_fields,
            max_tokens: self.max_tokens,
            max_complexity: self.max_complexity,
            default_list_size: self.default_list_size,
            introspection: self.introspection,
        };
        // An allowlisted query that could never pass is a mistake of the list.
        for (hash, text) in &persisted {
            if let Err(r) = analyze::analyze(text, None, None, &limits) {
                return Err(vec![BuildError::at(
                    "persisted_queries_file",
                    format!("{}: {} ({})", hex::encode(hash), r.message, r.code.as_str()),
                )]);
            }
        }
        Ok(GraphQl {
            name: bx.name.to_string(),
            limits,
            persisted,
            only_persisted: self.only_persisted,
            max_batch: self.max_batch,
        })
    }

    fn files(&self, config: &crate::config::Config) -> Vec<std::path::PathBuf> {
        self.persisted_queries_file
            .iter()
            .map(|f| config.resolve(f))
            .collect()
    }
}

/// The allowlist: `{"<sha256 hex>": "<query text>"}`, each key checked
/// against its text (a wrong hash would let a different query through).
fn load_allowlist(path: &std::path::Path) -> Result<HashMap<[u8; 32], Arc<str>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| format!("{}: a JSON object of hash -> query: {e}", path.display()))?;
    let mut out = HashMap::with_capacity(map.len());
    for (hash, query) in map {
        let Some(query) = query.as_str() else {
            return Err(format!(
                "{}: {hash}: the query must be a string",
                path.display()
            ));
        };
        let want = sha256(query);
        if parse_hash(&hash) != Some(want) {
            return Err(format!(
                "{}: {hash:?} is not the SHA-256 (64 hex digits) of its query, {}",
                path.display(),
                hex::encode(want)
            ));
        }
        out.insert(want, Arc::from(query));
    }
    Ok(out)
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A SHA-256 in lower-case hex (as APQ clients send it, and as the upstream
/// looks it up: another spelling would be checked as one query and run as
/// another, or not found).
fn parse_hash(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    (h.len() == 64 && !h.bytes().any(|b| b.is_ascii_uppercase()))
        .then(|| hex::decode_to_slice(h, &mut out).ok())
        .flatten()
        .map(|_| out)
}

pub struct GraphQl {
    name: String,
    limits: Limits,
    persisted: HashMap<[u8; 32], Arc<str>>,
    only_persisted: bool,
    max_batch: usize,
}

/// Why a request was refused, as SPEC §14's codes say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason,
            message: message.into(),
        }
    }

    fn parse(message: impl Into<String>) -> Refusal {
        Refusal::new(
            Code::ParseError.as_str(),
            Code::ParseError.reason(),
            message,
        )
    }
}

/// `reason`s of `tollgate_graphql_rejections_total` besides the analyser's.
pub mod reason {
    pub const PERSISTED_NOT_FOUND: &str = "persisted_query_not_found";
    pub const PERSISTED_REQUIRED: &str = "persisted_query_required";
    pub const BATCH: &str = "batch";
    pub const CONTENT_TYPE: &str = "content_type";
    pub const METHOD: &str = "method";
}

/// One operation request of GraphQL over HTTP, as sent.
#[derive(Debug, Default)]
pub struct Operation {
    pub query: Option<String>,
    pub operation_name: Option<String>,
    pub variables: Option<Value>,
    pub hash: Option<String>,
}

impl Operation {
    /// From a JSON request object.
    fn from_json(v: &Value) -> Result<Operation, Refusal> {
        let Value::Object(m) = v else {
            return Err(Refusal::parse("a GraphQL request must be a JSON object"));
        };
        for k in DOCUMENT_IDS {
            if m.contains_key(k) {
                return Err(no_document_ids(k));
            }
        }
        let text = |k: &str| -> Result<Option<String>, Refusal> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Refusal::parse(format!("`{k}` must be a string"))),
            }
        };
        Ok(Operation {
            query: text("query")?,
            operation_name: text("operationName")?,
            variables: map_or_null(m.get("variables"), "variables")?.cloned(),
            hash: match map_or_null(m.get("extensions"), "extensions")? {
                Some(e) => persisted_hash(e)?,
                None => None,
            },
        })
    }

    /// From `GET ?query=&operationName=&variables=&extensions=`: names
    /// decoded, each at most once (servers disagree on which of two wins).
    fn from_query_string(q: &str) -> Result<Operation, Refusal> {
        let mut op = Operation::default();
        let mut seen = [false; 4];
        for (k, v) in graphql_params(q)? {
            let Some(n) = PARAMS.iter().position(|p| *p == k) else {
                continue;
            };
            if std::mem::replace(&mut seen[n], true) {
                return Err(Refusal::parse(format!("`{k}` is given more than once")));
            }
            let json = |s: &str, what: &str| {
                crate::json::parse_strict(s.as_bytes())
                    .map_err(|e| Refusal::parse(format!("`{what}` is not JSON: {e}")))
            };
            match n {
                0 => op.query = Some(v),
                1 => op.operation_name = Some(v),
                2 => {
                    op.variables = map_or_null(Some(&json(&v, "variables")?), "variables")?.cloned()
                }
                _ => {
                    if let Some(e) = map_or_null(Some(&json(&v, "extensions")?), "extensions")? {
                        op.hash = persisted_hash(e)?;
                    }
                }
            }
        }
        Ok(op)
    }
}

/// The parameters of GraphQL over HTTP's `GET` form.
const PARAMS: [&str; 4] = ["query", "operationName", "variables", "extensions"];

/// Members that name a stored document by id (GraphQL over HTTP persisted
/// documents, Relay, Yoga): a server that prefers them would run a document
/// the gateway never measured. Only `extensions.persistedQuery` is supported.
const DOCUMENT_IDS: [&str; 3] = ["documentId", "doc_id", "id"];

fn no_document_ids(k: &str) -> Refusal {
    Refusal::parse(format!(
        "`{k}`: documents by id are not accepted; use extensions.persistedQuery.sha256Hash"
    ))
}

/// The decoded `name=value` pairs of a query string that are GraphQL's (or
/// name a document by id, which is refused).
fn graphql_params(q: &str) -> Result<Vec<(String, String)>, Refusal> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| Refusal::parse("the query string is not UTF-8"))
    };
    let mut out = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k)?;
        if DOCUMENT_IDS.contains(&k.as_str()) {
            return Err(no_document_ids(&k));
        }
        if PARAMS.contains(&k.as_str()) {
            out.push((k, decode(v)?));
        }
    }
    Ok(out)
}

/// `variables` and `extensions` are maps (or absent).
fn map_or_null<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a Value>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(m @ Value::Object(_)) => Ok(Some(m)),
        Some(_) => Err(Refusal::parse(format!("`{what}` must be a JSON object"))),
    }
}

/// `extensions.persistedQuery.sha256Hash`, if any.
fn persisted_hash(ext: &Value) -> Result<Option<String>, Refusal> {
    match ext.get("persistedQuery") {
        None | Some(Value::Null) => Ok(None),
        Some(pq) => match pq.get("sha256Hash") {
            Some(Value::String(h)) => Ok(Some(h.clone())),
            _ => Err(Refusal::parse(
                "extensions.persistedQuery needs a sha256Hash string",
            )),
        },
    }
}

impl GraphQl {
    /// The query text an operation runs, as the allowlist and
    /// `only_persisted` allow.
    fn query_of<'a>(&'a self, op: &'a Operation) -> Result<&'a str, Refusal> {
        if let Some(h) = &op.hash {
            let found = parse_hash(h).and_then(|k| self.persisted.get(&k));
            return match (found, &op.query) {
                (Some(text), Some(q)) if **text != **q => Err(Refusal::parse(
                    "the query does not match its persisted query hash",
                )),
                (Some(text), _) => Ok(text),
                // Not in the allowlist: a client may send the text along with
                // its hash (APQ's second try), unless only allowlisted queries run.
                (None, Some(q)) if !self.only_persisted && parse_hash(h) == Some(sha256(q)) => {
                    Ok(q)
                }
                (None, Some(_)) if !self.only_persisted => Err(Refusal::parse(
                    "the query does not match its persisted query hash",
                )),
                (None, Some(_)) => Err(Refusal::new(
                    "PERSISTED_QUERY_REQUIRED",
                    reason::PERSISTED_REQUIRED,
                    "only persisted queries are accepted",
                )),
                (None, None) => Err(Refusal::new(
                    "PERSISTED_QUERY_NOT_FOUND",
                    reason::PERSISTED_NOT_FOUND,
                    "PersistedQueryNotFound",
                )),
            };
        }
        let Some(q) = op.query.as_deref() else {
            return Err(Refusal::parse("no query"));
        };
        if self.only_persisted && !self.persisted.contains_key(&sha256(q)) {
            return Err(Refusal::new(
                "PERSISTED_QUERY_REQUIRED",
                reason::PERSISTED_REQUIRED,
                "only persisted queries are accepted",
            ));
        }
        Ok(q)
    }

    fn batch_limit(&self, n: usize) -> Refusal {
        Refusal::new(
            "BATCH_LIMIT",
            reason::BATCH,
            format!(
                "a batch of {n} operations exceeds max_batch {}",
                self.max_batch
            ),
        )
    }

    /// Check every operation of a request; the summed complexity.
    pub fn check(&self, ops: &[Operation]) -> Result<u64, Refusal> {
        if ops.len() > self.max_batch {
            return Err(self.batch_limit(ops.len()));
        }
        let mut total: u64 = 0;
        for (i, op) in ops.iter().enumerate() {
            let at = |mut r: Refusal| {
                if ops.len() > 1 {
                    r.message = format!("operation {i} of the batch: {}", r.message);
                }
                r
            };
            let query = self.query_of(op).map_err(at)?;
            let m = analyze::analyze(
                query,
                op.operation_name.as_deref(),
                op.variables.as_ref(),
                &self.limits,
            )
            .map_err(|r| at(Refusal::new(r.code.as_str(), r.code.reason(), r.message)))?;
            total = total.saturating_add(m.complexity);
        }
        Ok(total)
    }

    /// The operations of this request.
    async fn operations(&self, session: &mut Session, ctx: &mut RequestCtx) -> Read {
        let req = session.req_header();
        let query = req.uri.query().unwrap_or("");
        match req.method {
            // HEAD is GET without a body, wherever servers route it.
            http::Method::GET | http::Method::HEAD => {
                return match Operation::from_query_string(query) {
                    Ok(op) => Read::Ops(vec![op]),
                    Err(r) => Read::Refuse(r),
                }
            }
            http::Method::POST => {}
            http::Method::OPTIONS => return Read::Pass,
            _ => {
                return Read::Answer(
                    Flow::Respond(Reply::Problem {
                        status: 405,
                        detail: "a GraphQL request is a GET or a POST".into(),
                        headers: vec![(
                            http::header::ALLOW,
                            http::HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
                        )],
                    }),
                    Some(reason::METHOD),
                )
            }
        }
        // Some servers read the URL's parameters before the body's.
        match graphql_params(query) {
            Ok(p) if p.is_empty() => {}
            Ok(_) => {
                return Read::Refuse(Refusal::parse(
                    "a POST carries its GraphQL parameters in its body, not its URL",
                ))
            }
            Err(r) => return Read::Refuse(r),
        }
        let ct = match crate::util::body_kind(&req.headers) {
            BodyKind::Plain(ct) => ct,
            BodyKind::AmbiguousType => return Read::Refuse(Refusal::parse("more than one Content-Type")),
            BodyKind::Encoded => {
                return Read::Answer(
                    Flow::problem(
                        415,
                        "a compressed GraphQL request cannot be checked: send it without Content-Encoding",
                    ),
                    Some(reason::CONTENT_TYPE),
                )
            }
        };
        if !utf8_charset(ct) {
            return Read::Answer(
                Flow::problem(415, "a GraphQL request is UTF-8 (no other charset)"),
                Some(reason::CONTENT_TYPE),
            );
        }
        let graphql = crate::util::media_type(ct).is_some_and(|(t, s)| {
            t.eq_ignore_ascii_case(b"application") && s.eq_ignore_ascii_case(b"graphql")
        });
        if !graphql && !crate::util::is_json(ct) {
            return Read::Answer(
                Flow::problem(
                    415,
                    "a GraphQL request is application/json or application/graphql",
                ),
                Some(reason::CONTENT_TYPE),
            );
        }
        let body = match read_body(session, ctx).await {
            Ok(b) => b,
            Err(e) => return Read::Answer(e.refusal(), None),
        };
        if graphql {
            return match std::str::from_utf8(&body) {
                Ok(q) => Read::Ops(vec![Operation {
                    query: Some(q.to_owned()),
                    ..Operation::default()
                }]),
                Err(_) => Read::Refuse(Refusal::parse("the query is not UTF-8")),
            };
        }
        let v = match crate::json::parse_strict(&body) {
            Ok(v) => v,
            Err(e) => return Read::Refuse(Refusal::parse(format!("the request is not JSON: {e}"))),
        };
        let ops = match &v {
            Value::Array(items) if items.is_empty() => {
                return Read::Refuse(Refusal::parse("an empty batch"))
            }
            Value::Array(items) if items.len() > self.max_batch => {
                return Read::Refuse(self.batch_limit(items.len()))
            }
            Value::Array(items) => items.iter().map(Operation::from_json).collect(),
            one => Operation::from_json(one).map(|op| vec![op]),
        };
        match ops {
            Ok(ops) => Read::Ops(ops),
            Err(r) => Read::Refuse(r),
        }
    }

    fn count(&self, ctx: &RequestCtx, reason: &'static str) {
        METRICS
            .graphql_rejections
            .with_label_values(&[ctx.route_name(), &self.name, reason])
            .inc();
    }

    fn refuse(&self, ctx: &RequestCtx, r: Refusal) -> Flow {
        self.count(ctx, r.reason);
        Flow::Respond(Reply::Invalid {
            status: 400,
            detail: r.message.clone(),
            errors: crate::pipeline::Errors::GraphQl(vec![crate::pipeline::GraphQlError::new(
                r.message, r.code,
            )]),
        })
    }
}

/// What reading a request gave.
enum Read {
    /// Its operations, to check.
    Ops(Vec<Operation>),
    /// Not a GraphQL request form (`OPTIONS`, `HEAD`...): passed on.
    Pass,
    /// A GraphQL request that breaks a rule.
    Refuse(Refusal),
    /// An answer of another kind (415, 413), counted under a reason if any.
    Answer(Flow, Option<&'static str>),
}

/// Whether content type `ct` names no charset, or UTF-8: a server that
/// decodes another (body-parser takes `utf-7`) would read other JSON than
/// the gateway checked.
fn utf8_charset(ct: &[u8]) -> bool {
    ct.split(|&b| b == b';').skip(1).all(|param| {
        let p = param.trim_ascii();
        let Some(eq) = p.iter().position(|&b| b == b'=') else {
            return true;
        };
        let (name, value) = (p[..eq].trim_ascii(), p[eq + 1..].trim_ascii());
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        !name.eq_ignore_ascii_case(b"charset") || value.eq_ignore_ascii_case(b"utf-8")
    })
}

impl Plugin for GraphQl {
    type State = ();

    fn series(&self) -> Vec<Series> {
        [
            Code::DepthLimit,
            Code::AliasLimit,
            Code::RootFieldLimit,
            Code::TokenLimit,
            Code::ComplexityLimit,
            Code::IntrospectionDisabled,
            Code::ParseError,
        ]
        .iter()
        .map(|c| c.reason())
        .chain([
            reason::PERSISTED_NOT_FOUND,
            reason::PERSISTED_REQUIRED,
            reason::BATCH,
            reason::CONTENT_TYPE,
            reason::METHOD,
        ])
        .map(|reason| Series::GraphQlRejections { reason })
        .collect()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut (),
    ) -> pingora::Result<Flow> {
        let ops = match self.operations(session, ctx).await {
            Read::Ops(ops) => ops,
            Read::Pass => return Ok(Flow::Continue),
            Read::Answer(flow, reason) => {
                if let Some(reason) = reason {
                    self.count(ctx, reason);
                }
                return Ok(flow);
            }
            Read::Refuse(r) => return Ok(self.refuse(ctx, r)),
        };
        match self.check(&ops) {
            Ok(complexity) => {
                ctx.graphql_complexity = Some(complexity);
                Ok(Flow::Continue)
            }
            Err(r) => Ok(self.refuse(ctx, r)),
        }
    }
}

#[cfg(test)]
mod tests;
