//! Request path normalisation.
//!
//! Every request path is normalised once, before routing and before any
//! plugin runs, so that the path routing and auth saw is the path the upstream
//! receives (SPEC §3). The rules:
//!
//! - the path must start with `/`;
//! - `%XX` escapes must be valid hex; an escape of an unreserved character
//!   (`ALPHA / DIGIT / - . _ ~`) is decoded, any other escape is kept with its
//!   hex digits uppercased (`%3a` -> `%3A`); escapes are never decoded twice;
//! - `%2F` (encoded `/`), `\` or `%5C`, and control characters or spaces, raw
//!   or encoded (`%00`..`%1F`, `%7F`), are rejected;
//! - `;`, raw or encoded (`%3B`), is rejected: Tomcat and Spring read
//!   `/admin/..;/x` or `/a;jsessionid=1/b` as other paths than the one routed;
//! - escapes of bytes above `%7F` must spell UTF-8: an overlong form
//!   (`%C0%AF` for `/`, `%E0%80%AF`), a surrogate, a lone continuation byte or
//!   a truncated sequence is rejected;
//! - after decoding, `.` segments are removed and `..` removes the segment
//!   before it; climbing above `/` is rejected;
//! - runs of `/` collapse to one; a trailing `/` is kept, and a path ending in
//!   a dot segment keeps its directory form (`/a/.` -> `/a/`, `/a/..` -> `/`).
//!
//! The whole path is checked for bad bytes and escapes before dot segments are
//! resolved, so `/../%2F` reports [`PathError::EncodedSlash`], not
//! [`PathError::AboveRoot`]. Both are a 400 either way.
//!
//! A path that is already normal (the common case) is returned borrowed,
//! without allocating.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused (each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F`: an encoded `/`.
    EncodedSlash,
    /// A `\`, raw or encoded as `%5C`.
    Backslash,
    /// `..` segments climb above `/`.
    AboveRoot,
    /// A control character or space, raw or encoded (`%00`..`%1F`, `%7F`).
    ControlChar,
    /// A `;`, raw or encoded as `%3B` (path parameters).
    Semicolon,
    /// Escaped bytes that are not UTF-8 (overlong, surrogate, truncated).
    BadUtf8,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "path does not start with '/'",
            PathError::BadPercentEncoding => "bad percent-encoding in path",
            PathError::EncodedSlash => "encoded '/' in path",
            PathError::Backslash => "'\\' in path",
            PathError::AboveRoot => "path climbs above '/'",
            PathError::ControlChar => "control character or space in path",
            PathError::Semicolon => "';' in path",
            PathError::BadUtf8 => "escaped bytes in path are not UTF-8 (or are overlong)",
        })
    }
}

impl std::error::Error for PathError {}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Checks the escape whose `%` is at `bytes[i]`. Returns the escaped byte and
/// whether normalisation rewrites the escape (decodes it or uppercases it).
fn check_escape(bytes: &[u8], i: usize) -> Result<(u8, bool), PathError> {
    let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
        return Err(PathError::BadPercentEncoding);
    };
    let (Some(hv), Some(lv)) = (hex_val(h), hex_val(l)) else {
        return Err(PathError::BadPercentEncoding);
    };
    let v = (hv << 4) | lv;
    match v {
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::Semicolon),
        0x00..=0x1f | 0x7f => Err(PathError::ControlChar),
        _ => Ok((
            v,
            is_unreserved(v) || h.is_ascii_lowercase() || l.is_ascii_lowercase(),
        )),
    }
}

/// Checks the UTF-8 sequence whose first escape (of a byte above `0x7F`) is
/// at `bytes[i]`: every byte of the character must be escaped, and together
/// they must be one well-formed UTF-8 character (no overlong form, surrogate
/// or code point above U+10FFFF). Returns the length of the escapes and
/// whether normalisation rewrites any of them.
fn check_utf8_escape(bytes: &[u8], i: usize) -> Result<(usize, bool), PathError> {
    let (lead, mut rewrite) = check_escape(bytes, i)?;
    let width = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Err(PathError::BadUtf8),
    };
    let mut buf = [lead, 0, 0, 0];
    for (k, slot) in buf.iter_mut().enumerate().take(width).skip(1) {
        let at = i + 3 * k;
        if bytes.get(at) != Some(&b'%') {
            return Err(PathError::BadUtf8);
        }
        let (b, r) = check_escape(bytes, at)?;
        *slot = b;
        rewrite |= r;
    }
    match std::str::from_utf8(buf.get(..width).unwrap_or_default()) {
        Ok(_) => Ok((3 * width, rewrite)),
        Err(_) => Err(PathError::BadUtf8),
    }
}

/// Does the segment starting right after a `/` need rewriting? True for an
/// empty segment (`//`) and for `.` / `..` segments.
fn dirty_segment_start(rest: &[u8]) -> bool {
    matches!(
        rest,
        [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
    )
}

/// Normalises a request path (without its query string); see the module docs
/// for the rules. Returns `Cow::Borrowed` when `raw` is already normal.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass validates everything and notes whether anything must change.
    let mut dirty = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let (v, rewrite) = check_escape(bytes, i)?;
                if v >= 0x80 {
                    let (len, rewrite) = check_utf8_escape(bytes, i)?;
                    dirty |= rewrite;
                    i += len;
                } else {
                    dirty |= rewrite;
                    i += 3;
                }
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0x00..=0x20 | 0x7f => return Err(PathError::ControlChar),
            b'/' if !dirty => dirty = dirty_segment_start(bytes.get(i + 1..).unwrap_or_default()),
            _ => {}
        }
        i += 1;
    }
    if !dirty {
        return Ok(Cow::Borrowed(raw));
    }
    let out = rewrite(raw)?;
    if out == raw {
        Ok(Cow::Borrowed(raw))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// The slow path: decode, resolve dot segments, collapse slashes. `raw` has
/// already been validated (starts with `/`, every escape is good).
fn rewrite(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    out.push('/');
    // `out` is always "/" followed by zero or more "segment/".
    let mut ends_as_dir = true;
    for seg in raw.get(1..).unwrap_or_default().split('/') {
        let start = out.len();
        decode_segment(seg, &mut out);
        match out.get(start..).unwrap_or_default() {
            "" => ends_as_dir = true,
            "." => {
                out.truncate(start);
                ends_as_dir = true;
            }
            ".." => {
                out.truncate(start);
                pop_segment(&mut out)?;
                ends_as_dir = true;
            }
            _ => {
                out.push('/');
                ends_as_dir = false;
            }
        }
    }
    if !ends_as_dir {
        out.pop();
    }
    Ok(out)
}

/// Removes the last "segment/" of `out`; fails when only "/" is left.
fn pop_segment(out: &mut String) -> Result<(), PathError> {
    if out.len() <= 1 {
        return Err(PathError::AboveRoot);
    }
    out.pop();
    match out.rfind('/') {
        Some(i) => out.truncate(i + 1),
        None => {
            out.clear();
            out.push('/');
        }
    }
    Ok(())
}

/// Appends `seg` to `out`, decoding escaped unreserved characters and
/// uppercasing the hex of the other escapes.
fn decode_segment(seg: &str, out: &mut String) {
    let bytes = seg.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let Ok((v, _)) = check_escape(bytes, i) {
                out.push_str(seg.get(copied..i).unwrap_or_default());
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                    out.push(char::from(HEX_UPPER[usize::from(v & 0xf)]));
                }
                i += 3;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(seg.get(copied..).unwrap_or_default());
}

#[cfg(test)]
mod tests;
