//! Route path patterns (SPEC §4): `/prefix`, `/items/{id}`, `=/exact`. Parsed
//! here for both their readers: the config's validation (which reports a bad
//! pattern at its key) and the router (which builds its trie from the parsed
//! segments), so that the two can never disagree and the config does not reach
//! into the router.

use crate::runtime::path::{normalize_path, PathError};
use std::sync::Arc;

/// A parsed path pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    pub(crate) exact: bool,
    pub(crate) segments: Vec<Segment>,
}

#[derive(Debug)]
pub(crate) enum Segment {
    Literal(String),
    Param(Arc<str>),
}

impl Pattern {
    pub(crate) fn is_param(&self) -> impl Iterator<Item = bool> + '_ {
        self.segments.iter().map(|s| matches!(s, Segment::Param(_)))
    }
}

fn valid_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Percent-encodes the non-ASCII bytes of an (otherwise normalised) segment.
fn encode_non_ascii(seg: &str) -> String {
    if seg.is_ascii() {
        return seg.to_owned();
    }
    let mut out = String::with_capacity(seg.len() * 3);
    for b in seg.bytes() {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn parse_pattern(path: &str) -> Result<Pattern, String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    let (exact, body) = match path.strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    if !body.starts_with('/') {
        return Err(if exact {
            format!("exact path {path:?} must look like \"=/exact\"")
        } else {
            format!("path {path:?} must start with '/' (or \"=/\" for an exact match)")
        });
    }
    if body.contains(['?', '#']) {
        return Err(format!(
            "path {path:?} contains '?' or '#': query strings and fragments are not matched"
        ));
    }
    let mut segments = Vec::new();
    for seg in body.split('/').filter(|s| !s.is_empty()) {
        if let Some(inner) = seg.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(format!(
                    "segment {seg:?}: a parameter is written {{name}} and fills the whole segment"
                ));
            };
            if name.is_empty() {
                return Err(format!("segment {seg:?}: empty parameter name"));
            }
            if !valid_param_name(name) {
                return Err(format!(
                    "segment {seg:?}: a parameter name may only contain letters, digits, '_' and '-'"
                ));
            }
            let duplicate = segments
                .iter()
                .any(|s| matches!(s, Segment::Param(n) if n.as_ref() == name));
            if duplicate {
                return Err(format!("duplicate parameter name {name:?}"));
            }
            segments.push(Segment::Param(name.into()));
            continue;
        }
        if seg.contains(['{', '}']) {
            return Err(format!(
                "segment {seg:?}: '{{' and '}}' may only wrap a whole segment, as in /items/{{id}}"
            ));
        }
        if seg == "*" {
            return Err(
                "'*' is not a wildcard: paths are prefixes already (\"/v1\" matches everything under /v1)"
                    .into(),
            );
        }
        let probe = format!("/{seg}");
        let literal = match normalize_path(&probe) {
            Ok(n) => n.into_owned(),
            Err(PathError::AboveRoot) => "/".to_owned(),
            Err(e) => return Err(format!("segment {seg:?}: {e}")),
        };
        let literal = literal.get(1..).unwrap_or_default();
        if literal.is_empty() || literal.contains('/') {
            return Err(format!("segment {seg:?}: dot segments are not allowed"));
        }
        segments.push(Segment::Literal(encode_non_ascii(literal)));
    }
    Ok(Pattern { exact, segments })
}

/// Checks a route path pattern; `Err` holds a message for the user. The same
/// check the router makes when it is built.
pub fn validate(path: &str) -> Result<(), String> {
    parse_pattern(path).map(|_| ())
}
