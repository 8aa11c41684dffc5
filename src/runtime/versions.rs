//! API versions (SPEC `[api_versions]`): where a request's version is read, the
//! default, and the headers and refusals of deprecated and sunset versions.

use crate::config::ApiVersionsConfig;
use http::HeaderValue;
use std::collections::HashMap;

/// Where a request's version is read (parsed with the config).
pub use crate::config::VersionSource as Source;

/// One known version's lifecycle, with its response headers pre-rendered.
#[derive(Debug, Clone, Default)]
pub struct VersionInfo {
    /// `Deprecation: @<unix>` (RFC 9745).
    pub deprecation: Option<HeaderValue>,
    /// `Sunset: <HTTP-date>` (RFC 8594).
    pub sunset: Option<HeaderValue>,
    pub sunset_at: Option<i64>,
    /// `Link: <url>; rel="deprecation"` (and `rel="sunset"` when sunset).
    pub link: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct Versions {
    pub sources: Vec<Source>,
    pub default: Option<String>,
    pub known: HashMap<String, VersionInfo>,
    /// Sorted list of known versions for 404 bodies.
    pub known_list: Vec<String>,
}

/// What a request's version resolved to.
pub enum Resolved<'a> {
    /// No version named and no default.
    None,
    Known(String, Option<&'a VersionInfo>),
    /// Named, but neither a version table nor any route knows it.
    Unknown(String),
}

fn http_date(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    httpdate::fmt_http_date(t)
}

impl Versions {
    pub fn compile(cfg: &ApiVersionsConfig, route_versions: &[String]) -> Versions {
        let sources = cfg.sources.clone();
        let mut known: HashMap<String, VersionInfo> = HashMap::new();
        for (name, vc) in &cfg.versions {
            let mut info = VersionInfo::default();
            if let Some(d) = vc.deprecated.as_ref().map(|d| d.unix) {
                info.deprecation = HeaderValue::try_from(format!("@{d}")).ok();
            }
            if let Some(s) = vc.sunset.as_ref().map(|d| d.unix) {
                info.sunset = HeaderValue::try_from(http_date(s)).ok();
                info.sunset_at = Some(s);
            }
            if let Some(l) = &vc.link {
                let rel = if info.sunset.is_some() && info.deprecation.is_none() {
                    "sunset"
                } else {
                    "deprecation"
                };
                info.link = HeaderValue::try_from(format!("<{l}>; rel=\"{rel}\"")).ok();
            }
            known.insert(name.clone(), info);
        }
        for v in route_versions {
            known.entry(v.clone()).or_default();
        }
        if let Some(d) = &cfg.default {
            known
                .entry(crate::config::normalize_version(d))
                .or_default();
        }
        let mut known_list: Vec<String> = known.keys().cloned().collect();
        known_list.sort();
        Versions {
            sources,
            default: cfg.default.as_deref().map(crate::config::normalize_version),
            known,
            known_list,
        }
    }

    /// Read the request's version from the first source that has one.
    pub fn resolve<'a>(
        &'a self,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Resolved<'a> {
        let mut found: Option<String> = None;
        for s in &self.sources {
            found = match s {
                Source::Path => path_version(path).map(str::to_string),
                Source::Header(h) => headers
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(crate::config::normalize_version),
                Source::Query(q) => query
                    .and_then(|qs| query_param(qs, q))
                    .map(|v| crate::config::normalize_version(&v)),
            };
            if found.is_some() {
                break;
            }
        }
        let v = match found.or_else(|| self.default.clone()) {
            Some(v) => v,
            None => return Resolved::None,
        };
        match self.known.get(&v) {
            Some(info) => Resolved::Known(v, Some(info)),
            None => Resolved::Unknown(v),
        }
    }
}

/// `/v2/payments` → `v2`: a first segment of the form `v<digits>`.
pub fn path_version(path: &str) -> Option<&str> {
    let seg = path.strip_prefix('/')?.split('/').next()?;
    let digits = seg.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(seg)
}

/// The first value of `name` in a query string, percent-decoded.
pub fn query_param(qs: &str, name: &str) -> Option<String> {
    qs.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_versions() {
        assert_eq!(path_version("/v2/payments"), Some("v2"));
        assert_eq!(path_version("/v10"), Some("v10"));
        assert_eq!(path_version("/version/x"), None);
        assert_eq!(path_version("/v/x"), None);
        assert_eq!(path_version("/"), None);
    }

    #[test]
    fn query() {
        assert_eq!(
            query_param("a=1&api-version=2024-06-01", "api-version").as_deref(),
            Some("2024-06-01")
        );
        assert_eq!(query_param("a=1", "b"), None);
    }
}
