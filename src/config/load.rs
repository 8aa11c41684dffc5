//! Reading a config: TOML syntax, then each section deserialised on its own so
//! that one bad route does not hide the errors of the next, then validation.

use super::locate::{KeyPath, Locator, Seg};
use super::validate::validate;
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
            let msg = e.message().trim().to_string();
            return Err(ConfigErrors(vec![
                loc.error_at(e.span(), format!("invalid TOML: {msg}"))
            ]));
        }
    };
    let mut errs = Vec::new();
    let mut cfg = Config {
        server: ServerConfig::default(),
        api_versions: None,
        upstreams: BTreeMap::new(),
        routes: Vec::new(),
        plugins: BTreeMap::new(),
        base_dir: base_dir.to_path_buf(),
        file: file.map(Path::to_path_buf).unwrap_or_default(),
        hash: hex::encode(Sha256::digest(src.as_bytes())),
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
                for (name, v) in entries(&loc, &path, value, &mut errs) {
                    let p = path.clone().key(name.as_str());
                    if let Some(u) = section::<UpstreamConfig>(&loc, &p, v, &mut errs) {
                        cfg.upstreams.insert(name, u);
                    }
                }
            }
            "routes" => match value {
                toml::Value::Array(items) => {
                    for (i, v) in items.into_iter().enumerate() {
                        let p = path.clone().index(i);
                        if let Some(r) = section::<RouteConfig>(&loc, &p, v, &mut errs) {
                            cfg.routes.push(r);
                        }
                    }
                }
                _ => errs.push(loc.error(&path, "expected an array of tables ([[routes]])")),
            },
            "plugins" => {
                for (name, v) in entries(&loc, &path, value, &mut errs) {
                    let p = path.clone().key(name.as_str());
                    if let Some(pc) = plugin(&loc, &p, v, &mut errs) {
                        cfg.plugins.insert(name, pc);
                    }
                }
            }
            other => errs.push(loc.error(
                &path,
                format!(
                    "unknown key {other:?}; expected one of server, api_versions, upstreams, routes, plugins"
                ),
            )),
        }
    }

    // Validate only what parsed: a route that failed to parse is already reported,
    // and would only add confusing follow-on errors.
    validate(&cfg, &loc, &mut errs);
    if errs.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Deserialise one section, turning a serde error into a located `ConfigError`.
fn section<T: DeserializeOwned>(
    loc: &Locator<'_>,
    base: &KeyPath,
    value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut path = base.clone();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path.0.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => path.0.push(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => {
                        path.0.push(Seg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => {}
                }
            }
            let msg = e.into_inner().to_string();
            // An unknown field is reported at the table; name the key itself.
            if let Some(field) = unknown_field(&msg) {
                path.0.push(Seg::Key(field));
            }
            errs.push(loc.error(&path, tidy(&msg)));
            None
        }
    }
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

fn tidy(msg: &str) -> String {
    // toml appends "in `key`" on a second line; the key path already says it.
    let first = msg.trim().lines().next().unwrap_or("");
    first.replace('`', "\"")
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

fn plugin(
    loc: &Locator<'_>,
    path: &KeyPath,
    value: toml::Value,
    errs: &mut Vec<super::ConfigError>,
) -> Option<PluginConfig> {
    let ty = match value.get("type") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => {
            errs.push(loc.error(&path.clone().key("type"), "expected a string"));
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
    if NOT_YET_SUPPORTED.contains(&ty.as_str()) {
        errs.push(loc.error(
            &path.clone().key("type"),
            format!("plugin type {ty:?} is not supported yet by this build of tollgate"),
        ));
        return None;
    }
    section::<PluginConfig>(loc, path, value, errs)
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
    let head = section::<ApiVersionsHead>(loc, path, toml::Value::Table(head), errs).unwrap_or(
        ApiVersionsHead {
            sources: vec![],
            default: None,
        },
    );
    Some(ApiVersionsConfig {
        sources: head.sources,
        default: head.default,
        versions,
    })
}
