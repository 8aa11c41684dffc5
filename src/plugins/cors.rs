//! `cors`: the gateway is the CORS authority for a route. It answers preflights
//! itself (the upstream never sees them) and writes the CORS response headers
//! of every other response, replacing any the upstream sent, so a browser
//! never sees two conflicting `Access-Control-Allow-Origin` values.
//!
//! Decisions the Fetch standard leaves to the server, made the safe way:
//! `origins = ["*"]` with `credentials = true` is a build error (never `*`
//! with credentials, and never "echo whatever origin asks"); an origin that is
//! not listed gets no CORS header at all, and its preflight a 403 problem;
//! with no `headers` list, no request header beyond the CORS-safelisted ones is
//! allowed (nothing is echoed from the request).
//!
//! A preflight is answered by the `cors` plugin of the route its path belongs
//! to, even for a method that route does not allow ([`route_preflight`]): that
//! method is refused (403) rather than the preflight falling through to another
//! route (a catch-all without `cors`) and its upstream. A preflight carries none
//! of the headers of the request it announces, so a route's `headers`
//! predicates are waived when routing it: first those on the headers
//! `Access-Control-Request-Headers` names, then, if no `cors` route is found,
//! all of them.

use super::auth;
use crate::config::{self, Dur};
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, Reply,
    RequestCtx, Series,
};
use crate::runtime::preflight::route_methods;
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "cors"`
// ---------------------------------------------------------------------------

/// `type = "cors"`
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`), or `["*"]`.
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default)]
    pub max_age: Option<Dur>,
}

impl PluginConfig for CorsConfig {
    const TYPE: &'static str = "cors";
    const ORDER: Order = Order::Cors;
    type Plugin = Cors;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Cors> {
        Cors::new(self, bx)
    }
}

/// Methods allowed when `methods` is not given: the CORS-safelisted ones.
const DEFAULT_METHODS: &str = "GET, HEAD, POST";

pub struct Cors {
    name: String,
    /// Serialised origins (`https://app.example.com`), compared byte for byte
    /// with the request's `Origin`. Empty when `any` is set.
    origins: Vec<String>,
    /// `origins = ["*"]` (never together with credentials).
    any: bool,
    credentials: bool,
    methods: HeaderValue,
    /// `methods` as a list (`"*"` kept as written), to narrow it to a route's.
    method_list: Vec<String>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

/// A configured origin in the form browsers send it: `scheme://host[:port]`,
/// lowercase, without a default port, path, query or credentials.
fn normalise_origin(o: &str) -> Result<String, String> {
    let hint = "write an origin as scheme://host[:port], e.g. \"https://app.example.com\"";
    if o == "null" {
        return Err(
            "\"null\" is the origin of sandboxed frames and local files; it cannot be allowed safely"
                .into(),
        );
    }
    if o.contains('*') {
        return Err(format!(
            "{o:?}: only a lone \"*\" is supported as a wildcard; list the origins"
        ));
    }
    let (scheme, rest) = o
        .split_once("://")
        .ok_or_else(|| format!("{o:?} is not an origin: {hint}"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return Err(format!("{o:?} has an invalid scheme: {hint}"));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{o:?} is not an origin (no path, query, trailing slash or user info): {hint}"
        ));
    }
    let authority: http::uri::Authority = rest
        .parse()
        .map_err(|_| format!("{o:?} has an invalid host: {hint}"))?;
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("{o:?} has no host: {hint}"));
    }
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    Ok(match authority.port_u16() {
        Some(p) if Some(p) != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `list` joined for a header, each entry checked by `check`. `"*"` is passed
/// through literally, and only without credentials (with credentials the Fetch
/// standard reads it as a name, never as a wildcard).
fn list(
    key: &str,
    items: &[String],
    credentials: bool,
    check: impl Fn(&str) -> Result<String, String>,
    errs: &mut Vec<BuildError>,
) -> Option<HeaderValue> {
    let mut out: Vec<String> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let place = KeyPath::default().key(key).index(i);
        if it == "*" {
            if credentials {
                errs.push(BuildError {
                    path: place.clone(),
                    message: "\"*\" is not a wildcard when credentials = true (Fetch standard); list the names".into(),
                });
            } else {
                out.push("*".into());
            }
            continue;
        }
        match check(it) {
            Ok(v) => {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Err(m) => errs.push(BuildError {
                path: place.clone(),
                message: m,
            }),
        }
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_str(&out.join(", ")).ok()
}

fn header_name(s: &str) -> Result<String, String> {
    http::HeaderName::try_from(s)
        .map(|n| n.as_str().to_string())
        .map_err(|_| format!("invalid header name {s:?}"))
}

/// A method as browsers send it: the Fetch standard uppercases DELETE, GET,
/// HEAD, OPTIONS, POST and PUT (not PATCH, which stays as written).
fn method_name(s: &str) -> Result<String, String> {
    const NORMALISED: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
    match Method::from_bytes(s.as_bytes()) {
        Ok(m) if !s.is_empty() => Ok(NORMALISED
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s))
            .map_or_else(|| m.as_str().to_string(), |n| n.to_string())),
        _ => Err(format!("invalid method {s:?}")),
    }
}

impl Cors {
    pub fn new(c: &CorsConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let mut origins = Vec::new();
        let mut any = false;
        if c.origins.is_empty() {
            errs.push(BuildError {
                path: KeyPath::default().key("origins"),
                message: "list the allowed origins (e.g. [\"https://app.example.com\"]) or [\"*\"]"
                    .into(),
            });
        }
        for (i, o) in c.origins.iter().enumerate() {
            let key = KeyPath::default().key("origins").index(i);
            if o == "*" {
                if c.origins.len() > 1 {
                    errs.push(BuildError {
                        path: key.clone(),
                        message: "\"*\" allows every origin: it cannot be combined with others"
                            .into(),
                    });
                } else if c.credentials {
                    errs.push(BuildError {
                        path: key.clone(),
                        message: "origins = [\"*\"] cannot be used with credentials = true (Fetch standard): list the origins".into(),
                    });
                } else {
                    any = true;
                }
                continue;
            }
            match normalise_origin(o) {
                Ok(n) if origins.contains(&n) => errs.push(BuildError {
                    path: key.clone(),
                    message: format!("{o:?} is listed twice"),
                }),
                Ok(n) => origins.push(n),
                Err(message) => errs.push(BuildError {
                    path: key.clone(),
                    message,
                }),
            }
        }
        let methods = list("methods", &c.methods, c.credentials, method_name, &mut errs)
            .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_METHODS));
        let method_list = methods
            .to_str()
            .unwrap_or(DEFAULT_METHODS)
            .split(", ")
            .map(str::to_string)
            .collect();
        let headers = list("headers", &c.headers, c.credentials, header_name, &mut errs);
        let expose = list("expose", &c.expose, c.credentials, header_name, &mut errs);
        let max_age = c.max_age.map(|d| HeaderValue::from(d.0.as_secs()));
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Cors {
            name: bx.name.to_string(),
            origins,
            any,
            credentials: c.credentials,
            methods,
            method_list,
            headers,
            expose,
            max_age,
        })
    }

    /// Whether CORS headers are granted to a request with this `Origin`.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        self.any
            || origin.is_some_and(|o| self.origins.iter().any(|a| a.as_bytes() == o.as_bytes()))
    }

    /// The `Access-Control-Allow-Origin` value for a granted request.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        origin.filter(|_| self.allows(origin)).cloned()
    }

    /// Headers every response of the route gets: the origin grant (or nothing),
    /// and `Vary: Origin` when the answer depends on the origin.
    fn decorate(&self, resp: &mut ResponseHeader, origin: Option<&HeaderValue>, expose: bool) {
        // The gateway is the CORS authority for this route: what the upstream
        // said about CORS is replaced, never merged.
        resp.remove_header(&ACCESS_CONTROL_ALLOW_ORIGIN);
        resp.remove_header(&ACCESS_CONTROL_ALLOW_CREDENTIALS);
        resp.remove_header(&ACCESS_CONTROL_EXPOSE_HEADERS);
        if let Some(acao) = self.allow_origin(origin) {
            let _ = resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, acao);
            if self.credentials {
                let _ = resp.insert_header(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let (true, Some(e)) = (expose, &self.expose) {
                let _ = resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
            }
        }
        if !self.any {
            add_vary_origin(resp);
        }
    }

    /// `Access-Control-Allow-Methods` on a route that accepts `route_methods`
    /// (empty: any): `methods` narrowed to what the route accepts, so that a
    /// browser's preflight cache never holds a method the route refuses.
    /// `None` when nothing is left.
    fn allow_methods(&self, route_methods: &[config::Method]) -> Option<HeaderValue> {
        if route_methods.is_empty() {
            return Some(self.methods.clone());
        }
        let allowed: Vec<&str> = if self.method_list.iter().any(|m| m == "*") {
            route_methods.iter().map(config::Method::as_str).collect()
        } else {
            self.method_list
                .iter()
                .map(String::as_str)
                .filter(|m| route_methods.iter().any(|r| r.as_str() == *m))
                .collect()
        };
        if allowed.is_empty() {
            return None;
        }
        HeaderValue::from_str(&allowed.join(", ")).ok()
    }

    fn preflight(
        &self,
        origin: Option<&HeaderValue>,
        route_methods: &[config::Method],
    ) -> Option<Box<ResponseHeader>> {
        let mut resp = ResponseHeader::build(204, Some(8)).ok()?;
        if let Some(m) = self.allow_methods(route_methods) {
            let _ = resp.insert_header(ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        if let Some(h) = &self.headers {
            let _ = resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
        }
        if let Some(m) = &self.max_age {
            let _ = resp.insert_header(ACCESS_CONTROL_MAX_AGE, m.clone());
        }
        self.decorate(&mut resp, origin, false);
        Some(Box::new(resp))
    }
}

/// Append `Origin` to the response's `Vary` (kept as one field), unless it is
/// already there or `Vary: *` says everything varies.
fn add_vary_origin(resp: &mut ResponseHeader) {
    let existing: Vec<&str> = resp
        .headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if existing
        .iter()
        .any(|t| *t == "*" || t.eq_ignore_ascii_case("origin"))
    {
        return;
    }
    let mut joined = existing.join(", ");
    if !joined.is_empty() {
        joined.push_str(", ");
    }
    joined.push_str("Origin");
    if let Ok(v) = HeaderValue::from_str(&joined) {
        let _ = resp.insert_header(VARY, v);
    }
}

/// `reason` of `tollgate_auth_failures_total`: a preflight from an origin
/// that is not allowed.
pub const ORIGIN_DENIED: &str = "origin_denied";
/// `reason` of `tollgate_auth_failures_total`: a preflight for a method the
/// route does not allow.
pub const METHOD_DENIED: &str = "method_denied";

impl Plugin for Cors {
    type State = ();

    fn series(&self) -> Vec<Series> {
        [ORIGIN_DENIED, METHOD_DENIED]
            .map(|reason| Series::AuthFailures { reason })
            .to_vec()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let req = session.req_header();
        let preflight = req.method == Method::OPTIONS
            && req.headers.contains_key(ORIGIN)
            && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            // An actual request is forwarded whatever its origin: CORS protects
            // the browser's reading of the response, which `response` decides.
            return Ok(Flow::Continue);
        }
        let origin = req.headers.get(ORIGIN);
        if !self.allows(origin) {
            auth::count_failure(ctx, &self.name, ORIGIN_DENIED);
            return Ok(auth::refuse(
                403,
                "this origin is not allowed to make cross-origin requests here",
                vec![],
            ));
        }
        // Routed here for a method the route does not allow (see
        // `route_preflight`): refused, as for an origin that is not allowed.
        let rt = ctx.rt.clone();
        let route_methods = ctx.matched.index.map_or(&[][..], |i| route_methods(&rt, i));
        let announced = req.headers.get(ACCESS_CONTROL_REQUEST_METHOD);
        if !route_methods.is_empty()
            && !announced.is_some_and(|a| {
                route_methods
                    .iter()
                    .any(|m| m.as_str().as_bytes() == a.as_bytes())
            })
        {
            auth::count_failure(ctx, &self.name, METHOD_DENIED);
            let detail = format!(
                "this route does not allow the method the preflight asks for; it allows {}",
                route_methods
                    .iter()
                    .map(config::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(auth::refuse(403, &detail, vec![]));
        }
        match self.preflight(origin, route_methods) {
            Some(header) => Ok(Flow::Respond(Reply::Raw {
                header,
                body: Bytes::new(),
            })),
            None => Ok(Flow::problem(500, "could not build the preflight response")),
        }
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, _state: &mut Self::State) {
        // Our own preflight answer is already complete (it is the only response
        // of a CORS route that carries Access-Control-Allow-Methods).
        if resp.headers.contains_key(ACCESS_CONTROL_ALLOW_METHODS) && resp.status.as_u16() == 204 {
            return;
        }
        self.decorate(resp, ctx.client.origin.as_ref(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn build(c: CorsConfig) -> BuildResult<Cors> {
        let config = crate::config::load_str(
            "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            None,
            std::path::Path::new("."),
        )
        .expect("minimal config");
        Cors::new(
            &c,
            &BuildCtx {
                name: "cors",
                config: &config,
            },
        )
    }

    fn cfg(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn keys(r: BuildResult<Cors>) -> Vec<String> {
        match r {
            Ok(_) => panic!("expected build errors"),
            Err(e) => e.into_iter().map(|e| e.path.to_string()).collect(),
        }
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(
            normalise_origin("HTTPS://App.Example.com:443").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            normalise_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(
            normalise_origin("http://[::1]:8080").unwrap(),
            "http://[::1]:8080"
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://*.example.com",
            "null",
            "https://",
            "://x",
        ] {
            assert!(normalise_origin(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn build_errors_name_their_key() {
        assert_eq!(keys(build(cfg(&[]))), ["origins"]);
        let mut c = cfg(&["*"]);
        c.credentials = true;
        assert_eq!(keys(build(c)), ["origins[0]"]);
        assert_eq!(keys(build(cfg(&["https://a.test", "*"]))), ["origins[1]"]);
        assert_eq!(
            keys(build(cfg(&["https://a.test", "https://A.test:443"]))),
            ["origins[1]"]
        );
        let mut c = cfg(&["https://a.test"]);
        c.methods = vec!["GET".into(), "BAD METHOD".into()];
        c.headers = vec!["x-ok".into(), "bad header".into()];
        c.expose = vec!["*".into()];
        c.credentials = true;
        assert_eq!(keys(build(c)), ["methods[1]", "headers[1]", "expose[0]"]);
    }

    #[test]
    fn grants() {
        let c = build(cfg(&["https://app.example.com"])).unwrap();
        let ok = hv("https://app.example.com");
        assert!(c.allows(Some(&ok)));
        assert!(!c.allows(Some(&hv("https://app.example.com.evil.test"))));
        assert!(!c.allows(Some(&hv("https://APP.example.com"))));
        assert!(!c.allows(Some(&hv("null"))));
        assert!(!c.allows(None));
        assert_eq!(c.allow_origin(Some(&ok)), Some(ok.clone()));
        let w = build(cfg(&["*"])).unwrap();
        assert!(w.allows(Some(&hv("null"))));
        assert_eq!(w.allow_origin(None), Some(hv("*")));
    }

    #[test]
    fn preflight_headers() {
        let mut c = cfg(&["https://app.example.com"]);
        c.methods = vec!["GET".into(), "put".into(), "GET".into()];
        c.headers = vec!["Content-Type".into(), "Authorization".into()];
        c.credentials = true;
        c.max_age = Some(Dur::secs(600));
        let c = build(c).unwrap();
        let origin = hv("https://app.example.com");
        let r = c.preflight(Some(&origin), &[]).unwrap();
        assert_eq!(r.status.as_u16(), 204);
        let h = |n| r.headers.get(n).and_then(|v: &HeaderValue| v.to_str().ok());
        assert_eq!(
            h("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(h("access-control-allow-credentials"), Some("true"));
        assert_eq!(h("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            h("access-control-allow-headers"),
            Some("content-type, authorization")
        );
        assert_eq!(h("access-control-max-age"), Some("600"));
        assert_eq!(h("vary"), Some("Origin"));
        assert_eq!(h("access-control-expose-headers"), None);

        let d = build(cfg(&["https://app.example.com"])).unwrap();
        let r = d.preflight(Some(&origin), &[]).unwrap();
        let h = |n| r.headers.get(n).and_then(|v: &HeaderValue| v.to_str().ok());
        assert_eq!(h("access-control-allow-methods"), Some(DEFAULT_METHODS));
        assert_eq!(h("access-control-allow-headers"), None);
        assert_eq!(h("access-control-max-age"), None);
        assert_eq!(h("access-control-allow-credentials"), None);
    }

    #[test]
    fn vary_is_appended_once() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        add_vary_origin(&mut r);
        assert_eq!(r.headers.get("vary").unwrap(), "Origin");
        add_vary_origin(&mut r);
        assert_eq!(r.headers.get_all("vary").iter().count(), 1);

        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("vary", "Accept-Encoding").unwrap();
        r.append_header("vary", "accept-language, ").unwrap();
        add_vary_origin(&mut r);
        assert_eq!(
            r.headers.get("vary").unwrap(),
            "Accept-Encoding, accept-language, Origin"
        );

        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("vary", "*").unwrap();
        add_vary_origin(&mut r);
        assert_eq!(r.headers.get("vary").unwrap(), "*");
    }

    #[test]
    fn upstream_cors_headers_are_replaced() {
        let mut c = cfg(&["https://app.example.com"]);
        c.expose = vec!["x-total".into()];
        let c = build(c).unwrap();
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("access-control-allow-origin", "*").unwrap();
        r.append_header("access-control-expose-headers", "x-secret")
            .unwrap();
        c.decorate(&mut r, Some(&hv("https://evil.test")), true);
        assert!(r.headers.get("access-control-allow-origin").is_none());
        assert!(r.headers.get("access-control-expose-headers").is_none());
        assert_eq!(r.headers.get("vary").unwrap(), "Origin");
        c.decorate(&mut r, Some(&hv("https://app.example.com")), true);
        assert_eq!(
            r.headers.get("access-control-allow-origin").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            r.headers.get("access-control-expose-headers").unwrap(),
            "x-total"
        );
        assert_eq!(r.headers.get_all("vary").iter().count(), 1);
    }
}
