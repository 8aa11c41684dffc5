//! `ip_filter`: allow and deny CIDR lists on the client IP, as resolved through
//! `trusted_proxies` (so a spoofed `X-Forwarded-For` from an untrusted peer
//! changes nothing). Deny wins over allow; with an allow list, anything not on
//! it is refused; a request whose client IP is unknown is refused.

use super::auth;
use crate::config::Cidr;
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, RequestCtx,
    Series,
};
use ipnet::IpNet;
use pingora::proxy::Session;

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "ip_filter"`
// ---------------------------------------------------------------------------

/// `type = "ip_filter"`: CIDR lists on the client IP (after `trusted_proxies`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct IpFilterConfig {
    #[serde(default)]
    pub allow: Vec<Cidr>,
    #[serde(default)]
    pub deny: Vec<Cidr>,
}

impl PluginConfig for IpFilterConfig {
    const TYPE: &'static str = "ip_filter";
    const ORDER: Order = Order::IpFilter;
    type Plugin = IpFilter;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<IpFilter> {
        IpFilter::new(self, bx)
    }
}

pub struct IpFilter {
    name: String,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

fn nets(list: &[Cidr]) -> Vec<IpNet> {
    list.iter().map(|c| c.0.trunc()).collect()
}

impl IpFilter {
    pub fn new(c: &IpFilterConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let allow = nets(&c.allow);
        let deny = nets(&c.deny);
        if c.allow.is_empty() && c.deny.is_empty() {
            errs.push(BuildError {
                path: KeyPath::default(),
                message: "an ip_filter needs allow or deny (or both)".into(),
            });
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(IpFilter {
            name: bx.name.to_string(),
            allow,
            deny,
        })
    }

    pub fn admits(&self, ip: Option<std::net::IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) is matched as the IPv4 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// `reason` of `tollgate_auth_failures_total`: the client's address is refused.
pub const IP_DENIED: &str = "ip_denied";

impl Plugin for IpFilter {
    type State = ();

    fn series(&self) -> Vec<Series> {
        vec![Series::AuthFailures { reason: IP_DENIED }]
    }

    async fn request(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        if self.admits(ctx.client.ip) {
            return Ok(Flow::Continue);
        }
        auth::count_failure(ctx, &self.name, IP_DENIED);
        Ok(auth::refuse(
            403,
            "the client address is not allowed",
            vec![],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(allow: &[&str], deny: &[&str]) -> IpFilter {
        IpFilter {
            name: "t".into(),
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn rules() {
        let ip = |s: &str| Some(s.parse().unwrap());
        let a = f(&["10.0.0.0/8"], &["10.9.0.0/16"]);
        assert!(a.admits(ip("10.1.2.3")));
        assert!(!a.admits(ip("10.9.1.1")));
        assert!(!a.admits(ip("192.0.2.1")));
        assert!(!a.admits(None));
        assert!(a.admits(ip("::ffff:10.1.2.3")));
        let d = f(&[], &["192.0.2.0/24", "2001:db8::/32"]);
        assert!(d.admits(ip("198.51.100.1")));
        assert!(!d.admits(ip("192.0.2.77")));
        assert!(!d.admits(ip("2001:db8::1")));
    }
}
