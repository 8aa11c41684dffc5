//! Routing a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`):
//! it is routed as the request it announces, so that the `cors` plugin of the
//! route that owns the path answers it, also for a method that route does not
//! allow. The router and route chains are read here; the plugin itself only
//! answers.

use super::router::{RequestInfo, RouteMatch, Waive};
use super::Runtime;
use crate::pipeline::Order;
use http::header::ACCESS_CONTROL_REQUEST_HEADERS;
use http::Method;

/// The methods route `i` accepts as configured (empty: any).
pub fn route_methods(rt: &Runtime, i: usize) -> &[crate::config::Method] {
    let Some(name) = rt.routes.get(i).map(|r| &*r.name) else {
        return &[];
    };
    // Compiled routes follow the config's order; the name check makes sure.
    match rt.config.routes.get(i).filter(|r| r.name == name) {
        Some(r) => &r.methods,
        None => rt
            .config
            .routes
            .iter()
            .find(|r| r.name == name)
            .map_or(&[][..], |r| r.methods.as_slice()),
    }
}

/// Methods tried, after the one a preflight announces, to find the route its
/// path belongs to.
const PROBES: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

/// Header names an `Access-Control-Request-Headers` list may waive; a
/// longer list waives only these many (the second pass waives all anyway).
const MAX_ANNOUNCED: usize = 64;

/// The route a CORS preflight (`info`: the `OPTIONS` request) is routed to.
///
/// A preflight carries none of the headers of the request it announces (a
/// browser only names them in `Access-Control-Request-Headers`), so a route's
/// `headers` predicates cannot hold on it: routed as it is, a preflight for a
/// route with `headers = { "x-tenant" = "acme" }` would reach a catch-all
/// route and its upstream. So the routes are looked up with predicates waived,
/// first those on the headers the preflight announces, then, if that finds no
/// `cors` route, all of them ([`Waive`]); in each pass:
///
/// 1. The route of the method it announces, when that route has `cors`: its
///    `cors` answers.
/// 2. Else a route with `cors` that the path belongs to for another method,
///    and that does not allow the announced one: its `cors` answers and refuses
///    the method (403). Without this, a preflight for `DELETE` on a `cors` route
///    with `methods = ["GET"]` would fall through to a catch-all route without
///    `cors` and reach that route's upstream. It is used only when it is more
///    specific than the route the announced method reaches: routes are ranked
///    whatever the method, so it is when it wins a method both accept.
///
/// 3. Else the `OPTIONS` request is routed as itself, no predicate waived (no
///    `cors` route owns the path: the upstream answers CORS on its own).
///
/// Bounded work: per pass, at most one lookup per standard method, plus one per
/// non-standard method a route lists (from the config, never from the request);
/// at most [`MAX_ANNOUNCED`] announced names are compared.
pub fn route_preflight(rt: &Runtime, info: &RequestInfo<'_>, announced: &Method) -> RouteMatch {
    let names: Vec<&str> = info
        .headers
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .take(MAX_ANNOUNCED)
        .collect();
    cors_route(rt, info, announced, Waive::Named(&names))
        .or_else(|| cors_route(rt, info, announced, Waive::All))
        .unwrap_or_else(|| rt.router.find(info))
}

/// Steps 1 and 2 of [`route_preflight`], with `waive`'d header predicates.
fn cors_route(
    rt: &Runtime,
    info: &RequestInfo<'_>,
    announced: &Method,
    waive: Waive<'_>,
) -> Option<RouteMatch> {
    let find = |m: &Method| {
        rt.router
            .find_with(&RequestInfo { method: m, ..*info }, waive)
    };
    let has_cors = |i: usize| {
        rt.routes
            .get(i)
            .is_some_and(|r| r.chain.iter().any(|p| p.order == Order::Cors))
    };
    let allows = |i: usize, m: &Method| {
        let list = route_methods(rt, i);
        list.is_empty() || list.iter().any(|r| r.0 == m)
    };
    let found = find(announced);
    let owner = match found {
        RouteMatch::Found { route, .. } if has_cors(route) => return Some(found),
        RouteMatch::Found { route, .. } => Some(route),
        _ => None,
    };
    let refusing = |m: &Method| match find(m) {
        f @ RouteMatch::Found { route, .. }
            if has_cors(route)
                && !allows(route, announced)
                && owner.is_none_or(|o| allows(o, m)) =>
        {
            Some(f)
        }
        _ => None,
    };
    let standard = PROBES
        .iter()
        .filter(|m| *m != announced)
        .find_map(&refusing);
    if standard.is_some() {
        return standard;
    }
    // Rare: a route whose methods are all non-standard (`PURGE`). One string
    // comparison per configured method, a lookup only for non-standard ones.
    rt.config
        .routes
        .iter()
        .flat_map(|r| &r.methods)
        .filter(|m| !PROBES.iter().any(|p| p.as_str() == m.as_str()) && m.0 != announced)
        .find_map(|m| refusing(&m.0))
}
