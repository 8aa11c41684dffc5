//! Reading an OpenAPI description: the main file and every file its `$ref`s
//! name (YAML or JSON), each parsed once into a `serde_json::Value` keyed by
//! its `file://` URI, and the `$ref`s of OpenAPI objects (parameters, request
//! bodies, responses) followed. Schemas are left to `jsonschema`, which
//! resolves their `$ref`s against the same documents (a registry of them).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The OpenAPI version a description declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.0.x: schemas are an extended subset of JSON Schema draft 4
    /// (`nullable`, boolean `exclusiveMinimum`).
    V30,
    /// 3.1.x: schemas are JSON Schema 2020-12.
    V31,
}

/// The loaded files, by `file://` URI.
pub struct Documents {
    pub root: String,
    pub version: Version,
    pub files: BTreeMap<String, Arc<Value>>,
}

/// The most `$ref`s followed for one OpenAPI object (a chain or a loop).
const MAX_HOPS: usize = 32;
/// The most files one description may span.
const MAX_FILES: usize = 256;

/// What a path or a fragment escapes in a URI here.
const URI_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'[')
    .add(b']');

/// `file:///abs/path`, escaped.
pub fn file_uri(path: &Path) -> String {
    format!(
        "file://{}",
        percent_encoding::utf8_percent_encode(&path.to_string_lossy(), URI_SET)
    )
}

/// The path of a [`file_uri`].
fn uri_path(uri: &str) -> PathBuf {
    let p = uri.trim_start_matches("file://");
    PathBuf::from(&*percent_encoding::percent_decode_str(p).decode_utf8_lossy())
}

/// The largest file of a description.
const MAX_FILE: u64 = 16 * 1024 * 1024;

fn parse_file(path: &Path) -> Result<Value, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Every `$ref` string in `v`, except inside example values (which are
/// data, not references).
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    ("example" | "examples", _) => {}
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The file part of a `$ref` written in `from`, resolved beside it, or `None`
/// for a reference within the same file. Only files in `root` (the
/// description's directory) or below it may be named.
fn ref_file(root: &Path, from: &Path, r: &str) -> Result<Option<PathBuf>, String> {
    let file = r.split('#').next().unwrap_or("");
    if file.is_empty() {
        return Ok(None);
    }
    let refused = || {
        format!(
            "{}: $ref {r:?}: only references to files beside the description are supported",
            from.display()
        )
    };
    if file.contains("://") || file.starts_with('/') {
        return Err(refused());
    }
    let decoded = percent_encoding::percent_decode_str(file).decode_utf8_lossy();
    let dir = from.parent().unwrap_or(Path::new("."));
    let p = normalise(&dir.join(&*decoded));
    if !p.starts_with(root) {
        return Err(refused());
    }
    Ok(Some(p))
}

/// The description at `path` and every file reachable through `$ref`s, as
/// paths (for the watcher): a file that does not parse is listed too (not
/// the files it would reference), so that fixing it triggers a reload.
pub fn files(path: &Path) -> Vec<PathBuf> {
    match std::path::absolute(path) {
        Ok(p) => walk(&normalise(&p)).1,
        Err(_) => vec![path.to_path_buf()],
    }
}

/// Every file reachable from `path` by `$ref`s: each parsed (or why not),
/// by URI, and their paths in the order found.
#[allow(clippy::type_complexity)]
fn walk(path: &Path) -> (BTreeMap<String, Result<Value, String>>, Vec<PathBuf>) {
    let root = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut files = BTreeMap::new();
    let mut paths = Vec::new();
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let uri = file_uri(&p);
        if files.contains_key(&uri) {
            continue;
        }
        if files.len() >= MAX_FILES {
            files.insert(uri, Err(format!("more than {MAX_FILES} files referenced")));
            break;
        }
        let parsed = parse_file(&p).and_then(|v| {
            let mut rs = Vec::new();
            refs(&v, &mut rs);
            for r in rs {
                if let Some(f) = ref_file(&root, &p, r)? {
                    todo.push(f);
                }
            }
            Ok(v)
        });
        files.insert(uri, parsed);
        paths.push(p);
    }
    (files, paths)
}

/// Load the description at `path` and the files it references.
pub fn load(path: &Path) -> Result<(Documents, Vec<PathBuf>), String> {
    let path =
        normalise(&std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?);
    let (parsed, paths) = walk(&path);
    let mut files = BTreeMap::new();
    for (uri, v) in parsed {
        files.insert(uri, v?);
    }
    let root = file_uri(&path);
    let doc = &files[&root];
    let version = match doc.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0.") || v == "3.0" => Version::V30,
        Some(v) if v.starts_with("3.1.") || v == "3.1" => Version::V31,
        Some(v) => {
            return Err(format!(
                "{}: openapi {v:?}: only OpenAPI 3.0 and 3.1 are supported",
                path.display()
            ))
        }
        None => {
            return Err(format!(
                "{}: not an OpenAPI description (no `openapi` version field)",
                path.display()
            ))
        }
    };
    if !doc.get("paths").is_none_or(Value::is_object) {
        return Err(format!("{}: paths: must be a map", path.display()));
    }
    let files = files
        .into_iter()
        .map(|(k, mut v)| {
            if version == Version::V30 {
                convert_30(&mut v);
            }
            (k, Arc::new(v))
        })
        .collect();
    Ok((
        Documents {
            root,
            version,
            files,
        },
        paths,
    ))
}

/// OpenAPI 3.0's schema extensions in JSON Schema draft 4 terms: `nullable:
/// true` admits `null` (as `type: [T, "null"]`, and alongside an `enum`).
/// Applied to every object with `nullable: true`, which outside a schema means
/// nothing to the validator.
fn convert_30(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let nullable = m.get("nullable") == Some(&Value::Bool(true));
            if nullable && !m.contains_key("type") && !m.contains_key("enum") {
                // `nullable` beside a `$ref` or `allOf` (no `type` of its own):
                // either that schema, or null.
                m.remove("nullable");
                m.values_mut().for_each(convert_30);
                let inner = Value::Object(std::mem::take(m));
                m.insert(
                    "anyOf".into(),
                    serde_json::json!([inner, { "type": "null" }]),
                );
                return;
            }
            if nullable {
                match m.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        m.insert("type".into(), serde_json::json!([t, "null"]));
                    }
                    Some(Value::Array(ts)) if !ts.contains(&Value::from("null")) => {
                        ts.push(Value::from("null"))
                    }
                    _ => {}
                }
                if let Some(Value::Array(e)) = m.get_mut("enum") {
                    if !e.contains(&Value::Null) {
                        e.push(Value::Null);
                    }
                }
            }
            m.values_mut().for_each(convert_30);
        }
        Value::Array(a) => a.iter_mut().for_each(convert_30),
        _ => {}
    }
}

/// A place in the loaded documents: a file's URI and a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub uri: String,
    pub pointer: String,
}

impl Place {
    /// A child of this place (`key` escaped per RFC 6901).
    pub fn child(&self, key: &str) -> Place {
        Place {
            uri: self.uri.clone(),
            pointer: format!(
                "{}/{}",
                self.pointer,
                key.replace('~', "~0").replace('/', "~1")
            ),
        }
    }

    /// `uri#pointer`, for `jsonschema` (the pointer percent-encoded as a URI
    /// fragment).
    pub fn reference(&self) -> String {
        format!(
            "{}#{}",
            self.uri,
            percent_encoding::utf8_percent_encode(&self.pointer, URI_SET)
        )
    }

    /// Where this place is, for messages: the file and the pointer.
    pub fn describe(&self) -> String {
        let path = uri_path(&self.uri);
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        format!("{file}#{}", self.pointer)
    }
}

impl Documents {
    pub fn root_place(&self) -> Place {
        Place {
            uri: self.root.clone(),
            pointer: String::new(),
        }
    }

    pub fn get(&self, place: &Place) -> Option<&Value> {
        self.files.get(&place.uri)?.pointer(&place.pointer)
    }

    /// The OpenAPI object at `place`, its `$ref`s followed.
    pub fn resolve(&self, place: &Place) -> Result<(Place, &Value), String> {
        let mut place = place.clone();
        for _ in 0..MAX_HOPS {
            let v = self
                .get(&place)
                .ok_or_else(|| format!("{}: no such place", place.describe()))?;
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return Ok((place, v));
            };
            place = self.target(&place, r)?;
        }
        Err(format!(
            "{}: more than {MAX_HOPS} $refs in a row (a loop?)",
            place.describe()
        ))
    }

    /// Where the `$ref` `r` written at `from` points.
    pub fn target(&self, from: &Place, r: &str) -> Result<Place, String> {
        let (file, fragment) = r.split_once('#').unwrap_or((r, ""));
        let uri = if file.is_empty() {
            from.uri.clone()
        } else {
            let from_path = uri_path(&from.uri);
            let dir = from_path.parent().unwrap_or(Path::new("/"));
            let p = dir.join(&*percent_encoding::percent_decode_str(file).decode_utf8_lossy());
            file_uri(&normalise(&p))
        };
        if !self.files.contains_key(&uri) {
            return Err(format!("{}: $ref {r:?}: file not loaded", from.describe()));
        }
        let pointer = percent_encoding::percent_decode_str(fragment)
            .decode_utf8_lossy()
            .into_owned();
        Ok(Place { uri, pointer })
    }
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_beside_a_ref_admits_null() {
        let mut v = serde_json::json!({
            "properties": {"payer": {"allOf": [{"$ref": "#/x"}], "nullable": true}}
        });
        convert_30(&mut v);
        assert_eq!(
            v["properties"]["payer"],
            serde_json::json!({"anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]})
        );
    }

    #[test]
    fn nullable_becomes_a_null_type() {
        let mut v = serde_json::json!({
            "properties": {
                "nullable": {"type": "string"},
                "note": {"type": "string", "nullable": true, "enum": ["a"]},
                "list": {"type": ["integer"], "nullable": true}
            }
        });
        convert_30(&mut v);
        assert_eq!(v["properties"]["nullable"]["type"], "string");
        assert_eq!(
            v["properties"]["note"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(
            v["properties"]["note"]["enum"],
            serde_json::json!(["a", null])
        );
        assert_eq!(
            v["properties"]["list"]["type"],
            serde_json::json!(["integer", "null"])
        );
    }

    #[test]
    fn places_and_refs() {
        let p = Place {
            uri: "file:///a/b/main.yaml".into(),
            pointer: String::new(),
        };
        let c = p.child("paths").child("/payments/{id}");
        assert_eq!(c.pointer, "/paths/~1payments~1{id}");
        assert_eq!(
            c.reference(),
            "file:///a/b/main.yaml#/paths/~1payments~1%7Bid%7D"
        );
        assert_eq!(normalise(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        let (root, main) = (Path::new("/a"), Path::new("/a/main.yaml"));
        assert!(ref_file(root, main, "https://x/y.yaml#/z").is_err());
        assert!(ref_file(root, main, "/etc/passwd#/z").is_err());
        assert!(ref_file(root, main, "../secret.yaml#/z").is_err());
        assert!(ref_file(root, main, "sub/../../a2/x.yaml").is_err());
        assert_eq!(
            ref_file(root, main, "common.yaml#/z").unwrap(),
            Some(PathBuf::from("/a/common.yaml"))
        );
        assert_eq!(
            ref_file(root, Path::new("/a/sub/x.yaml"), "../common.yaml#/z").unwrap(),
            Some(PathBuf::from("/a/common.yaml"))
        );
        assert_eq!(ref_file(root, main, "#/z").unwrap(), None);
    }
}
