//! Outbound HTTP: the calls the gateway makes itself (`jwt`'s `jwks_url`,
//! `forward_auth`'s `url`), as opposed to the proxied requests.
//!
//! - [`parse_url`] / [`Target`]: a service URL, parsed once when the config is
//!   compiled.
//! - [`Client`]: a pooled HTTP/1.1 client over Pingora's connector (TLS
//!   verified against the platform roots or `SSL_CERT_FILE` / `SSL_CERT_DIR`,
//!   SNI from the URL's host), one per plugin instance, with connect, I/O and
//!   total timeouts, a response size cap, and an [`Error`] that says what kind
//!   of failure it was in plain words.
//! - [`joined_cookie`]: the one `Cookie` line for HTTP/1.1 (also used by the
//!   proxy for upstream requests).

mod client;

pub use client::{Client, Error, ErrorKind, Limits, Response};

/// Where an outbound HTTP call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// Host without brackets, for DNS and SNI.
    pub host: String,
    pub port: u16,
    /// `Host` header value.
    pub authority: String,
    /// Path and query sent in the request line.
    pub path: String,
    /// The URL without its query, for log lines.
    pub display: String,
}

/// An `http://` or `https://` URL with a host, no credentials.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "{url:?}: the URL must start with http:// or https://"
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?}: the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("{url:?}: credentials in the URL are not supported"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("{url:?}: the URL has no host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(Target {
        tls,
        display: format!(
            "{}://{}{}",
            if tls { "https" } else { "http" },
            authority.as_str(),
            uri.path()
        ),
        authority: authority.as_str().to_string(),
        host,
        port,
        path,
    })
}

/// The `Cookie` value to send over HTTP/1.1 when a client split its cookie into
/// several fields (HTTP/2 "crumbs", RFC 9113 §8.2.3, or repeated `Cookie`
/// lines): the fields joined with `"; "`, in order. `None` when there are fewer
/// than two fields (one field is forwarded as it is). Used for the
/// `forward_auth` call and its credential digest, so a cookie sent in crumbs
/// is the same credential as the one `Cookie: a=1; b=2` line, and for
/// upstream requests.
pub fn joined_cookie(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let mut fields = headers.get_all(http::header::COOKIE).iter();
    let first = fields.next()?;
    let second = fields.next()?;
    let mut v = first.as_bytes().to_vec();
    for f in std::iter::once(second).chain(fields) {
        v.extend_from_slice(b"; ");
        v.extend_from_slice(f.as_bytes());
    }
    http::HeaderValue::from_bytes(&v).ok()
}

#[cfg(test)]
mod tests;
