//! The one place that shapes responses the gateway writes itself:
//! `application/problem+json` (RFC 9457) with the request's id, never an
//! upstream address, never a stack trace.

use crate::pipeline::Errors;
#[cfg(test)]
use crate::pipeline::{FieldError, MAX_FIELD_ERRORS};
use bytes::Bytes;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// The stable `type` URI and `title` of each status the gateway writes.
pub fn kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("urn:tollgate:problem:bad-request", "Bad Request"),
        401 => ("urn:tollgate:problem:unauthorized", "Unauthorized"),
        403 => ("urn:tollgate:problem:forbidden", "Forbidden"),
        404 => ("urn:tollgate:problem:not-found", "Not Found"),
        405 => (
            "urn:tollgate:problem:method-not-allowed",
            "Method Not Allowed",
        ),
        408 => ("urn:tollgate:problem:request-timeout", "Request Timeout"),
        409 => ("urn:tollgate:problem:conflict", "Conflict"),
        410 => ("urn:tollgate:problem:gone", "Gone"),
        413 => (
            "urn:tollgate:problem:content-too-large",
            "Content Too Large",
        ),
        422 => (
            "urn:tollgate:problem:unprocessable-content",
            "Unprocessable Content",
        ),
        429 => (
            "urn:tollgate:problem:too-many-requests",
            "Too Many Requests",
        ),
        431 => (
            "urn:tollgate:problem:request-header-fields-too-large",
            "Request Header Fields Too Large",
        ),
        502 => ("urn:tollgate:problem:bad-gateway", "Bad Gateway"),
        503 => (
            "urn:tollgate:problem:service-unavailable",
            "Service Unavailable",
        ),
        504 => ("urn:tollgate:problem:gateway-timeout", "Gateway Timeout"),
        500 => (
            "urn:tollgate:problem:internal-error",
            "Internal Server Error",
        ),
        _ => ("about:blank", "Error"),
    }
}

/// The problem+json body for `status`.
pub fn body(status: u16, detail: &str, request_id: &str) -> Bytes {
    body_with_errors(status, detail, request_id, &Errors::NONE)
}

/// The problem+json body for `status`, with an `errors` member listing at most
/// [`crate::pipeline::MAX_FIELD_ERRORS`] of `errors` when there are any
/// (SPEC §13, §14).
pub fn body_with_errors(status: u16, detail: &str, request_id: &str, errors: &Errors) -> Bytes {
    #[derive(serde::Serialize)]
    struct Problem<'a> {
        r#type: &'a str,
        title: &'a str,
        status: u16,
        detail: &'a str,
        request_id: &'a str,
        #[serde(skip_serializing_if = "Errors::is_empty")]
        errors: Errors,
    }
    let (ty, title) = kind(status);
    let p = Problem {
        r#type: ty,
        title,
        status,
        detail,
        request_id,
        errors: errors.capped(),
    };
    Bytes::from(serde_json::to_vec(&p).unwrap_or_default())
}

/// A whole HTTP/1.1 response for use before a Pingora session exists (431,
/// header timeout); the connection is closed after it.
pub fn raw_http1(status: u16, detail: &str, request_id: &str) -> Vec<u8> {
    let b = body(status, detail, request_id);
    let (_, title) = kind(status);
    let mut out = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: {CONTENT_TYPE}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        b.len()
    )
    .into_bytes();
    out.extend_from_slice(&b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let b = body(404, "no route for GET /x", "abc");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Not Found");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["detail"], "no route for GET /x");
        assert!(v["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tollgate:problem:"));
        assert!(v.get("errors").is_none());
        let errors: Vec<FieldError> = (0..12)
            .map(|i| FieldError {
                pointer: format!("/items/{i}"),
                message: "wrong".into(),
            })
            .collect();
        let b = body_with_errors(400, "invalid", "abc", &Errors::Fields(errors));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["errors"].as_array().unwrap().len(), MAX_FIELD_ERRORS);
        assert_eq!(v["errors"][9]["pointer"], "/items/9");
        let raw = raw_http1(431, "too big", "x");
        assert!(raw.starts_with(b"HTTP/1.1 431 "));
    }
}
