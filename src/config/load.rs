//! Reading a config: TOML syntax, then each section deserialised on its own so
//! that one bad route does not hide the errors of the next, then validation.

use super::locate::{KeyPath, Locator, Seg};
use super::validate;
use super::*;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Read, parse and validate the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(Some(path), format!("cannot read the config file: {e}"))
    })?;
    let base = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    load_str(&src, Some(path), base)
}

/// Parse and validate config text; `file` names it in errors, `base_dir` resolves
/// relative paths.
pub fn load_str(src: &str, file: Option<&Path>, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let loc = Locator::new(src, file);
    let table: toml::Table = match toml::from_str(src) {
        Ok(t) => t,
        Err(e) => {
            let msg = e.message().trim().replace('\n', "; ");
            return Err(ConfigErrors(vec![
                loc.error_at(e.span(), format!("invalid TOML: {msg}"))
            ]));
        }
    };
    let mut errs = Vec::new();
    // Sections that are declared but failed to parse: already reported, so
    // references to them must not add "no upstream named …" errors.
    let mut broken = validate::Broken::default();
    let mut cfg = Config {
        server: ServerConfig::default(),
        api_versions: None,
        upstreams: BTreeMap::new(),
        routes: Vec::new(),
        plugins: BTreeMap::new(),
        redis: None,
        telemetry: None,
        queues: BTreeMap::new(),
        base_dir: base_dir.to_path_buf(),
        file: file.map(Path::to_path_buf).unwrap_or_default(),
        hash: hex::encode(Sha256::digest(src.as_bytes())),
        source: src.to_string(),
    };

    for (key, value) in table {
        let path = KeyPath::default().key(key.as_str());
        match key.as_str() {
            "server" => {
                if let Some(s) = section::<ServerConfig>(&loc, &path, value, &mut errs) {
                    cfg.server = s;
                }
            }
            "api_versions" => cfg.api_versions = api_versions(&loc, &path, value, &mut errs),
            "upstreams" => {
                broken.all_upstreams = !value.is_table();
                for (name, v) in entries(&loc, &path, value, &mut errs) {
                    let p = path.clone().key(name.as_str());
                    match section::<UpstreamConfig>(&loc, &p, v, &mut errs) {
                        Some(u) => {
                            cfg.upstreams.insert(name, u);
                        }
                        None => {
                            broken.upstreams.insert(name);
                        }
                    }
                }
            }
            "routes" => match value {
                toml::Value::Array(items) => {
                    for (i, v) in items.into_iter().enumerate() {
                        let p = path.clone().index(i);
                        if let Some(r) = section::<RouteConfig>(&loc, &p, v, &mut errs) {
                            cfg.routes.push(r);
                            broken.route_index.push(i);
                        }
                    }
                }
                _ => errs.push(loc.error(&path, "expected an array of tables ([[routes]])")),
            },
            "plugins" => {
                broken.all_plugins = !value.is_table();
                for (name, v) in entries(&loc, &path, value, &mut errs) {
                    let p = path.clone().key(name.as_str());
                    match plugin(&loc, &p, v, &mut errs) {
                        Some(pc) => {
                            cfg.plugins.insert(name, pc);
                        }
                        None => {
                            broken.plugins.insert(name);
                        }
                    }
                }
            }
            "redis" => cfg.redis = section::<RedisConfig>(&loc, &path, value, &mut errs),
            "queues" => {
                broken.all_queues = !value.is_table();
                for (name, v) in entries(&loc, &path, value, &mut errs) {
                    let p = path.clone().key(name.as_str());
                    match section::<crate::queue::QueueConfig>(&loc, &p, v, &mut errs) {
                        Some(q) => {
                            cfg.queues.insert(name, q);
                        }
                        None => {
                            broken.queues.insert(name);
                        }
                    }
                }
            }
            "telemetry" => {
                cfg.telemetry =
                    section::<crate::telemetry::TelemetryConfig>(&loc, &path, value, &mut errs)
            }
            other => errs.push(loc.error(
                &path,
                format!(
                    "unknown key {other:?}; expected one of server, api_versions, upstreams, routes, plugins, redis, telemetry, queues"
                ),
            )),
        }
    }

    // Validate only what parsed: a route that failed to parse is already reported,
    // and would only add confusing follow-on errors.
    validate::validate(&cfg, &broken, &loc, &mut errs);
    if errs.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Deserialise one section, turning serde errors into located `ConfigError`s.
/// serde stops at the first error, so after each one the offending key (or array
/// element) is taken out and the section is read again: every bad key of a table
/// and every bad element of an array is reported, at its index as written.
fn section<T: DeserializeOwned>(
    loc: &Locator<'_>,
    base: &KeyPath,
    value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Option<T> {
    section_with(
        loc,
        base,
        value,
        errs,
        serde_path_to_error::deserialize::<_, T>,
    )
}

/// [`section`] with the deserialiser given (a plugin type's, from the registry).
fn section_with<T>(
    loc: &Locator<'_>,
    base: &KeyPath,
    mut value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
    parse: impl Fn(toml::Value) -> Result<T, serde_path_to_error::Error<toml::de::Error>>,
) -> Option<T> {
    const MAX_ERRORS_PER_SECTION: usize = 32;
    let mut failed = false;
    // Keys already reported and taken out: their "missing field" is no news.
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    // Array elements taken out: (the array's path, the element's index), as written.
    let mut gone: Vec<(Vec<Seg>, usize)> = Vec::new();
    for _ in 0..MAX_ERRORS_PER_SECTION {
        let e = match parse(value.clone()) {
            Ok(t) => return (!failed).then_some(t),
            Err(e) => e,
        };
        failed = true;
        let mut rel = Vec::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => rel.push(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => rel.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    rel.push(Seg::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let msg = e.into_inner().to_string();
        // Internally tagged enums ([plugins.X]) leave the unknown key out of the path.
        if let Some(field) = unknown_field(&msg) {
            if rel.last() != Some(&Seg::Key(field.clone())) {
                rel.push(Seg::Key(field));
            }
        }
        // `now` is where the error is in `value`, `rel` where it is in the file
        // (they differ once an earlier element of an array was taken out).
        let now = rel;
        let rel = as_written(&now, &gone);
        if let Some(field) = missing_field(&msg) {
            let mut key = rel.clone();
            key.push(Seg::Key(field));
            if !removed.contains(&key) {
                let mut path = base.clone();
                path.0.extend(rel.iter().cloned());
                errs.push(loc.error(&path, tidy(&msg)));
            }
            // A missing required key cannot be taken out: nothing more to learn.
            break;
        }
        let mut path = base.clone();
        path.0.extend(rel.iter().cloned());
        errs.push(loc.error(&path, tidy(&msg)));
        if !remove_key(&mut value, &now) {
            break;
        }
        if let Some((Seg::Index(i), array)) = rel.split_last() {
            gone.push((array.to_vec(), *i));
        }
        removed.push(rel);
    }
    None
}

/// `path` (indices of the value with the elements in `gone` taken out) with the
/// indices the file has.
fn as_written(path: &[Seg], gone: &[(Vec<Seg>, usize)]) -> Vec<Seg> {
    let mut out: Vec<Seg> = Vec::with_capacity(path.len());
    for seg in path {
        let seg = match seg {
            Seg::Index(now) => {
                let mut taken: Vec<usize> = gone
                    .iter()
                    .filter(|(array, _)| *array == out)
                    .map(|(_, i)| *i)
                    .collect();
                taken.sort_unstable();
                let mut i = *now;
                for t in taken {
                    if t <= i {
                        i += 1;
                    }
                }
                Seg::Index(i)
            }
            key => key.clone(),
        };
        out.push(seg);
    }
    out
}

/// Remove the key or array element at `path`.
fn remove_key(value: &mut toml::Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        cur = match (seg, cur) {
            (Seg::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        (Seg::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

fn tidy(msg: &str) -> String {
    // toml appends "in `key`" on a second line; the key path already says it.
    let first = msg.trim().lines().next().unwrap_or("");
    // serde's words for types are Rust's; say them in TOML's.
    if let Some(name) = first.strip_prefix("data did not match any variant of untagged enum ") {
        return match name.trim() {
            "OneOrMany" => "expected a string or an array of strings".into(),
            "TargetConfig" => {
                "expected an address string (\"host:port\") or a table { addr = \"host:port\", weight = N }"
                    .into()
            }
            _ => "the value has a type that is not accepted here".into(),
        };
    }
    // serde quotes every value in backticks: `integer `1``; a number or a
    // boolean reads better bare, a string keeps its quotes.
    let mut bare = String::with_capacity(first.len());
    let mut rest = first;
    while let Some(i) = rest.find('`') {
        let (before, after) = rest.split_at(i);
        bare.push_str(before);
        let literal_kind = ["integer ", "floating point ", "boolean "]
            .iter()
            .any(|k| before.ends_with(k));
        match after[1..].find('`') {
            Some(j) if literal_kind => {
                bare.push_str(&after[1..1 + j]);
                rest = &after[j + 2..];
            }
            _ => {
                bare.push('`');
                rest = &after[1..];
            }
        }
    }
    bare.push_str(rest);
    let mut out = bare.replace('`', "\"");
    for (rust, toml) in [
        ("a sequence", "an array"),
        ("invalid type: sequence", "invalid type: array"),
        ("a map", "a table"),
        ("invalid type: map", "invalid type: table"),
        ("expected usize", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected u8", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("floating point", "float"),
    ] {
        out = out.replace(rust, toml);
    }
    // "expected struct RouteConfig": a Rust type name, not something the user wrote.
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    out
}

/// The entries of a table of named sections (`[upstreams.X]`, `[plugins.X]`).
fn entries(
    loc: &Locator<'_>,
    path: &KeyPath,
    value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Vec<(String, toml::Value)> {
    match value {
        toml::Value::Table(t) => t.into_iter().collect(),
        _ => {
            errs.push(loc.error(path, "expected a table of named entries"));
            Vec::new()
        }
    }
}

/// `[plugins.NAME]`: read as the struct of its `type`, so that every error in it
/// is reported at its key (serde reads an internally tagged enum through a
/// buffer that loses the key paths and stops at the first error).
fn plugin(
    loc: &Locator<'_>,
    path: &KeyPath,
    value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Option<Arc<dyn crate::pipeline::AnyConfig>> {
    let toml::Value::Table(mut table) = value else {
        errs.push(loc.error(path, "expected a table ([plugins.NAME] with a \"type\")"));
        return None;
    };
    let kind = match table.remove("type") {
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            errs.push(loc.error(
                &path.clone().key("type"),
                format!(
                    "invalid type: {}, expected a string (the plugin's type, e.g. \"jwt\")",
                    other.type_str()
                ),
            ));
            return None;
        }
        None => {
            errs.push(loc.error(
                path,
                "missing key \"type\" (the plugin's type, e.g. \"request_id\")",
            ));
            return None;
        }
    };
    let body = toml::Value::Table(table);
    match crate::plugins::kind(&kind) {
        Some(k) => section_with(loc, path, body, errs, |v| k.parse(v)),
        None => {
            errs.push(loc.error(
                &path.clone().key("type"),
                format!(
                    "unknown plugin type {kind:?}; expected one of {}",
                    crate::plugins::type_names().join(", ")
                ),
            ));
            None
        }
    }
}

fn api_versions(
    loc: &Locator<'_>,
    path: &KeyPath,
    value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Option<ApiVersionsConfig> {
    let toml::Value::Table(t) = value else {
        errs.push(loc.error(path, "expected a table"));
        return None;
    };
    let mut head = toml::Table::new();
    let mut versions = BTreeMap::new();
    for (k, v) in t {
        match (k.as_str(), v) {
            ("sources" | "default", v) => {
                head.insert(k, v);
            }
            (_, v @ toml::Value::Table(_)) => {
                let p = path.clone().key(k.as_str());
                // A version table with errors is reported, but still counts as
                // declared so that routes naming it get no follow-on errors.
                let vc = section::<VersionConfig>(loc, &p, v, errs).unwrap_or_default();
                versions.insert(k, vc);
            }
            (_, _) => {
                errs.push(loc.error(
                    &path.clone().key(k.as_str()),
                    format!("unknown key {k:?}; expected sources, default, or a version table like [api_versions.v1]"),
                ));
            }
        }
    }
    // A head with errors is reported; validation then sees the defaults, so
    // that a wrong-typed `sources` is one error, not also "no source".
    let head = section::<ApiVersionsHead>(loc, path, toml::Value::Table(head), errs).unwrap_or(
        ApiVersionsHead {
            sources: vec![VersionSource::Path],
            default: None,
        },
    );
    Some(ApiVersionsConfig {
        sources: head.sources,
        default: head.default,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        load_str(src, Some(Path::new("gw.toml")), Path::new("."))
            .err()
            .map(|e| e.messages())
            .unwrap_or_default()
    }

    const BASE: &str = r#"
[upstreams.payments]
targets = ["127.0.0.1:9001"]

[[routes]]
name = "a"
upstream = "payments"
path = "/v1/payments"
"#;

    #[test]
    fn out_of_range_values_are_refused_at_their_keys_when_read() {
        let src = format!(
            "[server]\nthreads = 0\nrequest_timeout = \"0s\"\nmax_header_size = \"512B\"\n{BASE}\n[upstreams.payments.retry]\nattempts = 11\n"
        );
        let e = errors(&src);
        for (key, msg) in [
            ("server.threads", "must be at least 1"),
            ("server.request_timeout", "must be greater than zero"),
            ("server.max_header_size", "must be at least 1KiB"),
            (
                "upstreams.payments.retry.attempts",
                "must be between 1 and 10",
            ),
        ] {
            assert!(
                e.iter().any(|l| l.contains(&format!("{key}: {msg}"))),
                "{key}: {e:?}"
            );
        }
    }

    /// `[server] work_stealing`: as set; unset, on only for a config that
    /// keeps plugin state on Redis.
    #[test]
    fn work_stealing_follows_the_config_and_the_plugins_when_unset() {
        let load = |server: &str, plugins: &str| {
            let src = format!("[server]\n{server}\n{BASE}\n{plugins}");
            load_str(&src, Some(Path::new("gw.toml")), Path::new("."))
                .unwrap()
                .work_stealing()
        };
        let redis = "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[plugins.idem]\ntype = \"idempotency\"\nbackend = \"redis\"\n";
        let local = "[plugins.idem]\ntype = \"idempotency\"\n";
        let limit = "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[plugins.l]\ntype = \"rate_limit\"\nrate = \"10/s\"\nbackend = \"redis\"\n";
        assert!(!load("", ""));
        assert!(!load("", local));
        assert!(load("", limit));
        assert!(load("", redis));
        assert!(!load("work_stealing = false", redis));
        assert!(load("work_stealing = true", ""));
    }

    #[test]
    fn minimal_config_is_valid() {
        let cfg = load_str(BASE, None, Path::new(".")).unwrap();
        assert_eq!(cfg.routes.len(), 1);
        assert_eq!(cfg.server.max_headers, 100);
        assert_eq!(cfg.hash.len(), 64);
    }

    #[test]
    fn dangling_upstream_is_located() {
        let src = BASE.replace("upstream = \"payments\"", "upstream = \"paymnts\"");
        let e = errors(&src);
        assert_eq!(
            e,
            vec![r#"gw.toml:7:12: routes[0].upstream: no upstream named "paymnts""#]
        );
    }

    #[test]
    fn unknown_key_names_the_key() {
        let src = format!("{BASE}paht = \"/x\"\n");
        let e = errors(&src);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("gw.toml:9:8: routes[0].paht: unknown field \"paht\""),
            "{e:?}"
        );
    }

    #[test]
    fn all_errors_are_reported() {
        let src = r#"
[server]
trusted_proxies = ["10.0.0.0/33"]
request_timeout = "30"

[upstreams.p]
targets = []

[[routes]]
name = "a"
upstream = "nope"

[[routes]]
name = "a"
upstream = "p"
plugins = ["ghost"]
"#;
        let e = errors(src);
        let joined = e.join("\n");
        assert!(joined.contains("server.request_timeout"), "{joined}");
        assert!(
            joined.contains("upstreams.p.targets: an upstream needs at least one target"),
            "{joined}"
        );
        assert!(
            joined.contains("routes[0].upstream: no upstream named \"nope\""),
            "{joined}"
        );
        assert!(
            joined.contains("routes[1].name: duplicate route name"),
            "{joined}"
        );
        assert!(
            joined.contains("routes[1].plugins[0]: no plugin named \"ghost\""),
            "{joined}"
        );
    }

    #[test]
    fn every_bad_key_of_one_table_is_reported() {
        let src = format!(
            "[server]\nlisten = 8080\nrequest_timeuot = \"1s\"\nidle_timeout = \"forever\"\n{BASE}"
        );
        let e = errors(&src);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("gw.toml:2:10: server.listen"), "{e:?}");
        assert!(
            e[1].starts_with("gw.toml:3:19: server.request_timeuot: unknown field"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("gw.toml:4:16: server.idle_timeout: invalid duration"),
            "{e:?}"
        );
    }

    #[test]
    fn an_unknown_plugin_type_lists_the_registry() {
        let e = errors(&format!("{BASE}\n[plugins.p]\ntype = \"nope\"\n"));
        let listed = crate::plugins::type_names().join(", ");
        assert!(
            e.iter()
                .any(|m| m.ends_with(&format!("expected one of {listed}"))),
            "{e:?}"
        );
        assert_eq!(crate::plugins::type_names().len(), 15);
    }

    #[test]
    fn a_wrong_typed_required_key_is_one_error() {
        let src = BASE.replace("name = \"a\"", "name = 1");
        assert_eq!(
            errors(&src),
            vec![r#"gw.toml:6:8: routes[0].name: invalid type: integer 1, expected a string"#]
        );
        let src = format!(
            "{BASE}\n[plugins.p]\ntype = \"cors\"\norigins = \"x\"\ncredentials = \"yes\"\n"
        );
        assert_eq!(
            errors(&src),
            vec![
                r#"gw.toml:12:11: plugins.p.origins: invalid type: string "x", expected an array"#,
                r#"gw.toml:13:15: plugins.p.credentials: invalid type: string "yes", expected a boolean"#
            ]
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = errors("[server\nlisten = 1");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("gw.toml:1:"), "{e:?}");
        assert!(e[0].contains("invalid TOML"), "{e:?}");
    }

    #[test]
    fn spec_dates_are_strings() {
        let src = format!(
            "{BASE}\n[api_versions]\ndefault = \"2\"\n[api_versions.v1]\ndeprecated = \"2026-01-01\"\nsunset = 2027-06-30\n"
        );
        let cfg = load_str(&src, None, Path::new(".")).unwrap();
        let av = cfg.api_versions.unwrap();
        assert!(av.versions["v1"].deprecated.is_some() && av.versions["v1"].sunset.is_some());
        let bad = src.replace("\"2026-01-01\"", "\"January\"");
        assert!(
            errors(&bad)[0].contains("api_versions.v1.deprecated: invalid date"),
            "{:?}",
            errors(&bad)
        );
    }
}
