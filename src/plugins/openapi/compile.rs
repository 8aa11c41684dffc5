//! An OpenAPI description compiled for the request path: path templates as
//! segments, each operation's parameters with their kinds and validators, its
//! request body's media types, and its responses' JSON schemas.

use super::spec::{self, Documents, Place, Version};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

pub struct PathItem {
    segments: Vec<Segment>,
    pub ops: Vec<(http::Method, Operation)>,
    /// `Allow` for a 405: the methods the path has.
    pub allow: http::HeaderValue,
}

enum Segment {
    Literal(String),
    /// `{name}`, or with literal text around it in the same segment
    /// (`{id}.pdf`, `v{major}`).
    Param {
        name: String,
        prefix: String,
        suffix: String,
    },
}

impl Segment {
    fn matches(&self, s: &str) -> bool {
        match self {
            Segment::Literal(l) => l == s,
            Segment::Param { prefix, suffix, .. } => {
                s.len() > prefix.len() + suffix.len()
                    && s.starts_with(prefix.as_str())
                    && s.ends_with(suffix.as_str())
            }
        }
    }

    /// Literal segments first, then parameters with more literal text.
    fn rank(&self) -> (u8, usize) {
        match self {
            Segment::Literal(_) => (2, 0),
            Segment::Param { prefix, suffix, .. } => (1, prefix.len() + suffix.len()),
        }
    }
}

pub struct Operation {
    pub params: Vec<Param>,
    pub body: Option<BodySpec>,
    /// JSON response schemas by status (`"201"`, `"2XX"`, `"default"`).
    responses: Vec<(String, Arc<jsonschema::Validator>)>,
}

pub struct Param {
    pub name: String,
    pub location: Location,
    pub required: bool,
    pub kind: ParamKind,
    pub explode: bool,
    pub validator: Option<jsonschema::Validator>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        }
    }
}

/// How a parameter's text becomes the JSON value its schema checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Number,
    Boolean,
    Array(Scalar),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
}

impl Scalar {
    fn of(t: Option<&str>) -> Scalar {
        match t {
            Some("integer") => Scalar::Integer,
            Some("number") => Scalar::Number,
            Some("boolean") => Scalar::Boolean,
            _ => Scalar::String,
        }
    }

    fn coerce(self, s: &str) -> Result<Value, String> {
        match self {
            Scalar::String => Ok(Value::String(s.to_owned())),
            Scalar::Integer => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| "must be an integer".to_string()),
            Scalar::Number => match s.parse::<f64>() {
                Ok(f) if f.is_finite() && !s.is_empty() && !s.starts_with('+') => {
                    serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .ok_or_else(|| "must be a number".to_string())
                }
                _ => Err("must be a number".to_string()),
            },
            Scalar::Boolean => match s {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("must be true or false".to_string()),
            },
        }
    }
}

impl ParamKind {
    /// The value of a parameter given as `raw` (every occurrence, in order).
    pub fn coerce(self, raw: &[String], loc: Location, explode: bool) -> Result<Value, String> {
        match self {
            ParamKind::Array(item) => {
                let parts: Vec<&str> = if loc == Location::Query && explode {
                    raw.iter().map(String::as_str).collect()
                } else {
                    raw.iter()
                        .flat_map(|r| r.split(','))
                        .map(str::trim)
                        .collect()
                };
                parts
                    .into_iter()
                    .map(|p| item.coerce(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            scalar => {
                if raw.len() > 1 && loc == Location::Query {
                    return Err("must be given once".to_string());
                }
                let s = raw.first().map(String::as_str).unwrap_or("");
                let s = if loc == Location::Header { s.trim() } else { s };
                match scalar {
                    ParamKind::Integer => Scalar::Integer.coerce(s),
                    ParamKind::Number => Scalar::Number.coerce(s),
                    ParamKind::Boolean => Scalar::Boolean.coerce(s),
                    _ => Scalar::String.coerce(s),
                }
            }
        }
    }
}

pub struct BodySpec {
    pub required: bool,
    media: Vec<Media>,
    /// The media types, for a 415's detail.
    pub accepted: String,
}

pub struct Media {
    /// `type/subtype`, lower case; either part may be `*`.
    range: (String, String),
    pub validator: Option<Arc<jsonschema::Validator>>,
}

/// `type/subtype` of a content type, lower case, without parameters.
fn essence(ct: &str) -> Option<(String, String)> {
    let (t, s) = crate::util::media_type(ct.as_bytes())?;
    let lower = |b: &[u8]| String::from_utf8_lossy(b).to_ascii_lowercase();
    Some((lower(t), lower(s)))
}

impl BodySpec {
    /// The media type of the description that `content_type` falls under: an
    /// exact one first, then `type/*`, then `*/*`.
    pub fn media(&self, content_type: &[u8]) -> Option<&Media> {
        // The description's ranges are lower case; the request's may not be.
        let (t, s) = crate::util::media_type(content_type)?;
        let is = |range: &str, b: &[u8]| range.as_bytes().eq_ignore_ascii_case(b);
        let exact = self
            .media
            .iter()
            .find(|m| is(&m.range.0, t) && is(&m.range.1, s));
        let sub = || {
            self.media
                .iter()
                .find(|m| is(&m.range.0, t) && m.range.1 == "*")
        };
        let any = || self.media.iter().find(|m| m.range.0 == "*");
        exact.or_else(sub).or_else(any)
    }
}

impl Operation {
    /// The response schema for `status`: its own, else its class (`2XX`),
    /// else `default`.
    pub fn response(&self, status: u16) -> Option<&Arc<jsonschema::Validator>> {
        let exact = status.to_string();
        let class = format!("{}XX", status / 100);
        let find = |k: &str| {
            self.responses
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        };
        find(&exact)
            .or_else(|| find(&class))
            .or_else(|| find("default"))
    }
}

impl PathItem {
    pub fn matches(&self, segs: &[&str]) -> bool {
        segs.len() == self.segments.len()
            && self.segments.iter().zip(segs).all(|(t, s)| t.matches(s))
    }

    /// At the first segment where the two differ in kind, the more literal
    /// one wins.
    pub fn more_specific_than(&self, other: &PathItem) -> bool {
        for (a, b) in self.segments.iter().zip(&other.segments) {
            match a.rank().cmp(&b.rank()) {
                std::cmp::Ordering::Greater => return true,
                std::cmp::Ordering::Less => return false,
                std::cmp::Ordering::Equal => {}
            }
        }
        false
    }

    /// The path parameters' values (percent-decoded) in `segs`.
    pub fn params<'a>(&'a self, segs: &[&str]) -> Vec<(&'a str, String)> {
        self.segments
            .iter()
            .zip(segs)
            .filter_map(|(t, s)| match t {
                Segment::Param {
                    name,
                    prefix,
                    suffix,
                } => {
                    let v = s.get(prefix.len()..s.len().saturating_sub(suffix.len()))?;
                    Some((
                        name.as_str(),
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    ))
                }
                Segment::Literal(_) => None,
            })
            .collect()
    }
}

/// The `name=value` pairs of a query string, split once per request.
pub fn query_pairs(query: &str) -> Vec<(&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// Form-decoding (`+` is a space, then percent-decoding), borrowed when
/// there is nothing to decode.
fn form_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return s.into();
    }
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
        .into()
}

/// The values of query parameter `name` among `pairs`, decoded, in order.
pub fn query_values(pairs: &[(&str, &str)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| form_decode(k) == name)
        .map(|(_, v)| form_decode(v).into_owned())
        .collect()
}

const METHODS: [(&str, http::Method); 8] = [
    ("get", http::Method::GET),
    ("put", http::Method::PUT),
    ("post", http::Method::POST),
    ("delete", http::Method::DELETE),
    ("options", http::Method::OPTIONS),
    ("head", http::Method::HEAD),
    ("patch", http::Method::PATCH),
    ("trace", http::Method::TRACE),
];

/// RFC 3339 `full-date`: `YYYY-MM-DD`, a real day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let Ok(month) = time::Month::try_from(m as u8) else {
        return false;
    };
    d >= 1 && d <= u32::from(time::util::days_in_month(month, y as i32))
}

/// RFC 9562's text form: 8-4-4-4-12 hexadecimal digits.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

struct Compiler<'a> {
    docs: &'a Documents,
    draft: jsonschema::Draft,
    /// Every file of the description, for the schemas' `$ref`s.
    registry: jsonschema::Registry<'a>,
}

impl Compiler<'_> {
    /// A validator for the schema at `place`.
    fn validator(&self, place: &Place) -> Result<jsonschema::Validator, String> {
        let root = serde_json::json!({ "$ref": place.reference() });
        jsonschema::options()
            .with_draft(self.draft)
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .with_format("date", is_date)
            .with_format("uuid", is_uuid)
            .build(&root)
            .map_err(|e| format!("{}: invalid schema: {e}", place.describe()))
    }

    /// The `type` of the schema at `place` (`$ref`s followed; the first
    /// type other than `null` of a list), and its `items`' place.
    fn schema_type(&self, place: &Place) -> Result<(Option<String>, Option<Place>), String> {
        let (place, s) = self.docs.resolve(place)?;
        let t = match s.get("type") {
            Some(Value::String(t)) => Some(t.clone()),
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .map(str::to_owned),
            _ => None,
        };
        let items = s.get("items").is_some().then(|| place.child("items"));
        Ok((t, items))
    }

    fn param(&self, place: &Place) -> Result<Param, String> {
        let (place, p) = self.docs.resolve(place)?;
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: a parameter needs a name", place.describe()))?
            .to_owned();
        let location = match p.get("in").and_then(Value::as_str) {
            Some("path") => Location::Path,
            Some("query") => Location::Query,
            Some("header") => Location::Header,
            Some("cookie") => {
                return Err(String::new());
            }
            other => {
                return Err(format!(
                "{}: parameter {name:?}: `in` must be path, query, header or cookie, not {other:?}",
                place.describe()
            ))
            }
        };
        // OpenAPI: these header parameters are ignored (the request's own
        // headers say them).
        if location == Location::Header
            && ["accept", "content-type", "authorization"].contains(&&*name.to_ascii_lowercase())
        {
            return Err(String::new());
        }
        let required =
            location == Location::Path || p.get("required").and_then(Value::as_bool) == Some(true);
        let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(
            p.get("style")
                .and_then(Value::as_str)
                .is_none_or(|s| s == "form"),
        );
        let (kind, validator) = if p.get("schema").is_some() {
            let sp = place.child("schema");
            let (t, items) = self.schema_type(&sp)?;
            let kind = match t.as_deref() {
                Some("integer") => ParamKind::Integer,
                Some("number") => ParamKind::Number,
                Some("boolean") => ParamKind::Boolean,
                Some("array") => {
                    let it = match items {
                        Some(ip) => self.schema_type(&ip)?.0,
                        None => None,
                    };
                    ParamKind::Array(Scalar::of(it.as_deref()))
                }
                _ => ParamKind::String,
            };
            (kind, Some(self.validator(&sp)?))
        } else {
            (ParamKind::String, None)
        };
        Ok(Param {
            name: if location == Location::Header {
                name.to_ascii_lowercase()
            } else {
                name
            },
            location,
            required,
            kind,
            explode,
            validator,
        })
    }

    /// The parameters of a path item and of its operation (the operation's
    /// win by name and location).
    fn params(&self, item: &Place, op: &Place) -> Result<Vec<Param>, String> {
        let mut out: Vec<Param> = Vec::new();
        for base in [item, op] {
            let list = match self.docs.get(&base.child("parameters")) {
                None => continue,
                Some(Value::Array(a)) => a.len(),
                Some(_) => {
                    return Err(format!(
                        "{}: parameters must be a list",
                        base.child("parameters").describe()
                    ))
                }
            };
            for i in 0..list {
                match self.param(&base.child("parameters").child(&i.to_string())) {
                    Ok(p) => {
                        out.retain(|q| !(q.name == p.name && q.location == p.location));
                        out.push(p);
                    }
                    Err(e) if e.is_empty() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    fn body(&self, op: &Place) -> Result<Option<BodySpec>, String> {
        let place = op.child("requestBody");
        if self.docs.get(&place).is_none() {
            return Ok(None);
        }
        let (place, b) = self.docs.resolve(&place)?;
        let required = b.get("required").and_then(Value::as_bool) == Some(true);
        let Some(Value::Object(content)) = b.get("content") else {
            return Err(format!(
                "{}: a request body needs a `content` map",
                place.describe()
            ));
        };
        let mut media = Vec::new();
        for (mt, m) in content {
            let range = essence(mt)
                .ok_or_else(|| format!("{}: {mt:?} is not a media type", place.describe()))?;
            // Wildcards too: their schema applies to the JSON bodies they admit.
            let json = range.0 == "*" || range.1 == "*" || crate::util::is_json(mt.as_bytes());
            let validator = if json && m.get("schema").is_some() {
                let sp = place.child("content").child(mt).child("schema");
                Some(Arc::new(self.validator(&sp)?))
            } else {
                None
            };
            media.push(Media { range, validator });
        }
        let accepted = content.keys().cloned().collect::<Vec<_>>().join(", ");
        Ok(Some(BodySpec {
            required,
            media,
            accepted,
        }))
    }

    fn responses(&self, op: &Place) -> Result<Vec<(String, Arc<jsonschema::Validator>)>, String> {
        let place = op.child("responses");
        let Some(Value::Object(rs)) = self.docs.get(&place) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for status in rs.keys() {
            let (rp, r) = self.docs.resolve(&place.child(status))?;
            let Some(Value::Object(content)) = r.get("content") else {
                continue;
            };
            let json = content
                .iter()
                .find(|(mt, m)| crate::util::is_json(mt.as_bytes()) && m.get("schema").is_some());
            if let Some((mt, _)) = json {
                let sp = rp.child("content").child(mt).child("schema");
                out.push((status.clone(), Arc::new(self.validator(&sp)?)));
            }
        }
        Ok(out)
    }
}

fn segments(template: &str) -> Result<Vec<Segment>, String> {
    if !template.starts_with('/') {
        return Err(format!("paths: {template:?} must start with /"));
    }
    let bad = || format!("paths: {template:?}: a segment may hold one `{{name}}`");
    template
        .split('/')
        .skip(1)
        .map(|s| {
            let Some(open) = s.find('{') else {
                return if s.contains('}') {
                    Err(bad())
                } else {
                    Ok(Segment::Literal(s.to_owned()))
                };
            };
            let close = s.find('}').filter(|&c| c > open + 1).ok_or_else(bad)?;
            let (prefix, name, suffix) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
            if name.contains('{') || suffix.contains(['{', '}']) || prefix.contains('}') {
                return Err(bad());
            }
            Ok(Segment::Param {
                name: name.to_owned(),
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            })
        })
        .collect()
}

/// Read and compile the description at `path`.
pub fn compile(path: &Path) -> Result<Vec<PathItem>, String> {
    let (docs, _) = spec::load(path)?;
    let draft = match docs.version {
        Version::V30 => jsonschema::Draft::Draft4,
        Version::V31 => jsonschema::Draft::Draft202012,
    };
    let registry = jsonschema::Registry::new()
        .draft(draft)
        .extend(
            docs.files
                .iter()
                .map(|(uri, v)| (uri.as_str(), draft.create_resource((**v).clone()))),
        )
        .and_then(|b| b.prepare())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let c = Compiler {
        docs: &docs,
        draft,
        registry,
    };
    let root = docs.root_place();
    let Some(Value::Object(paths)) = docs.get(&root.child("paths")) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    // `x-…` keys are extensions, not paths.
    for template in paths.keys().filter(|k| !k.starts_with("x-")) {
        let item_place = root.child("paths").child(template);
        let (item_place, item) = docs.resolve(&item_place)?;
        let segs = segments(template).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut ops = Vec::new();
        for (key, method) in &METHODS {
            if item.get(*key).is_none() {
                continue;
            }
            let op_place = item_place.child(key);
            let op = Operation {
                params: c.params(&item_place, &op_place)?,
                body: c.body(&op_place)?,
                responses: c.responses(&op_place)?,
            };
            for p in op.params.iter().filter(|p| p.location == Location::Path) {
                if !segs
                    .iter()
                    .any(|s| matches!(s, Segment::Param { name, .. } if *name == p.name))
                {
                    return Err(format!(
                        "{}: path parameter {:?} is not in the path {template:?}",
                        op_place.describe(),
                        p.name
                    ));
                }
            }
            ops.push((method.clone(), op));
        }
        let allow = ops
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        out.push(PathItem {
            segments: segs,
            ops,
            allow: http::HeaderValue::from_str(&allow)
                .unwrap_or_else(|_| http::HeaderValue::from_static("")),
        });
    }
    Ok(out)
}
