//! Strict validation of a raw HTTP/1 request head (request line and header
//! lines, as bytes), before Pingora's parser sees it. Pingora and httparse are
//! lenient where a lenient reading is dangerous in front of other servers
//! (request smuggling, cache poisoning): both `Content-Length` and
//! `Transfer-Encoding` are accepted (pingora#945), `chunked, chunked` counts as
//! chunked, bare LF ends a line. A head this module refuses gets a 400 (431 for
//! too many fields) from `app.rs` and the connection is closed; nothing of it
//! reaches an upstream.
//!
//! The rules (RFC 9112 unless noted), each refused with 400:
//! - every line ends with CRLF: a bare LF ends nothing, a bare CR is a control
//!   character; empty lines (CRLF) before the request line are ignored (§2.2);
//! - request line: `method SP target SP version`, exactly one space each;
//!   method a token; version exactly `HTTP/1.1` or `HTTP/1.0`;
//! - target: visible ASCII only, no `#` (no space, control or non-ASCII byte);
//!   origin-form (`/…`), `*` with OPTIONS, or absolute-form `http(s)://host…`
//!   without userinfo. CONNECT (authority-form) is refused: tollgate is not a
//!   forward proxy;
//! - header lines: no obs-fold (a line starting with SP or HTAB, including
//!   whitespace before the first field, §2.2 / §5.2); the name a non-empty token
//!   directly followed by `:` (no whitespace before the colon, §5.1); the value
//!   HTAB, SP, visible ASCII or obs-text (0x80–0xFF) only — NUL, CR, LF and
//!   every other control character are refused (RFC 9110 §5.5);
//! - `Content-Length`: one field, one decimal number that fits in a u64 (no
//!   sign, no list, not empty). A repeated field is refused even with an
//!   identical value (RFC 9110 §8.6 allows either; refusing leaves nothing for
//!   two parsers to reconcile differently);
//! - `Transfer-Encoding`: one field, exactly `chunked` (case-insensitive). Any
//!   other coding, a list (`gzip, chunked`, `chunked, chunked`) or a repeated
//!   field is refused: tollgate decodes no other transfer coding;
//! - `Content-Length` and `Transfer-Encoding` together; `Transfer-Encoding` in
//!   an HTTP/1.0 request (§6.1);
//! - `Host`: required in HTTP/1.1, at most one, and only URI host/port
//!   characters (§3.2: missing, repeated or invalid → 400).
//!
//! Cost: one pass. [`HeadScanner::feed`] finds control bytes eight at a time
//! (SWAR); a line whose only control bytes are HTABs and its CRLF needs no
//! per-byte value check, so only the request line, field names and the three
//! framing fields (`Host`, `Content-Length`, `Transfer-Encoding`) are looked
//! at byte by byte. No allocation. Bytes added to an incomplete head are the
//! only ones scanned (a head dripped byte by byte stays linear). Measured
//! (`benches/head.rs`, release, no target-cpu flags): 83 ns for a 97-byte curl
//! GET, 220 ns for a 734-byte API POST with a bearer token, 295 ns for a
//! 547-byte browser GET, 1.8 µs for 100 fields (2.2 KB) — 1.2 to 1.4 times
//! what httparse, which Pingora runs on the same bytes next, takes.
//!
//! [`ChunkedBody`] checks a chunked body's framing as it is read (see
//! `app.rs`): chunk data is skipped, not scanned (a 64 KiB body in 4 KiB
//! chunks: about 170 ns).

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// A line ends with a bare LF.
    LineEnding,
    /// Not `method SP target SP version`.
    RequestLine,
    Method,
    Connect,
    Target,
    Version,
    ObsFold,
    FieldName,
    FieldValue,
    /// More header fields than `max_headers` (431).
    TooManyFields,
    ContentLength,
    ContentLengthRepeated,
    TransferEncoding,
    TransferEncodingHttp10,
    ContentLengthAndTransferEncoding,
    HostMissing,
    HostRepeated,
    HostInvalid,
}

impl Invalid {
    /// The status the gateway answers with.
    pub fn status(self) -> u16 {
        match self {
            Invalid::TooManyFields => 431,
            _ => 400,
        }
    }

    /// The problem's `detail`: never echoes the request's bytes.
    pub fn detail(self) -> &'static str {
        match self {
            Invalid::LineEnding => "a line of the request head does not end with CRLF",
            Invalid::RequestLine => "the request line is not `method target HTTP-version`",
            Invalid::Method => "the request method is not a valid token",
            Invalid::Connect => "CONNECT is not supported",
            Invalid::Target => {
                "the request target is invalid (space, '#', control or non-ASCII byte, or an unsupported form)"
            }
            Invalid::Version => "only HTTP/1.1 and HTTP/1.0 are accepted",
            Invalid::ObsFold => "a header line starts with whitespace (obsolete line folding)",
            Invalid::FieldName => "a header field name is invalid",
            Invalid::FieldValue => {
                "a header field value contains a control character (NUL, CR, LF or other)"
            }
            Invalid::TooManyFields => "the request has too many header fields",
            Invalid::ContentLength => "Content-Length is not a single decimal number",
            Invalid::ContentLengthRepeated => "Content-Length appears more than once",
            Invalid::TransferEncoding => {
                "Transfer-Encoding must appear once and be exactly \"chunked\""
            }
            Invalid::TransferEncodingHttp10 => "an HTTP/1.0 request cannot use Transfer-Encoding",
            Invalid::ContentLengthAndTransferEncoding => {
                "Content-Length and Transfer-Encoding together make the body length ambiguous"
            }
            Invalid::HostMissing => "an HTTP/1.1 request needs a Host header",
            Invalid::HostRepeated => "the Host header appears more than once",
            Invalid::HostInvalid => "the Host header is invalid",
        }
    }
}

/// What a complete, valid head declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Offset just past the blank line that ends the head.
    pub end: usize,
    /// Header field lines.
    pub fields: usize,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub http10: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// No blank line yet and nothing invalid so far: read more.
    Partial,
    Complete(Summary),
    Invalid(Invalid),
}

/// Incremental validator of one request head. Call [`feed`](Self::feed) with
/// the whole buffer read so far each time it grew (bytes already fed must not
/// change); stop at the first `Complete` or `Invalid`.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    max_fields: usize,
    /// Start of the line not yet complete.
    line_start: usize,
    /// Bytes before this offset have been scanned for control bytes.
    searched: usize,
    /// The first control byte other than HTAB in the current line (its final
    /// CR, if nothing before it): past that CR, the line's value needs the
    /// byte-by-byte check.
    first_ctl: Option<usize>,
    in_fields: bool,
    host: bool,
    transfer_encoding: bool,
    summary: Summary,
}

impl HeadScanner {
    pub fn new(max_fields: usize) -> Self {
        HeadScanner {
            max_fields,
            line_start: 0,
            searched: 0,
            first_ctl: None,
            in_fields: false,
            host: false,
            transfer_encoding: false,
            summary: Summary::default(),
        }
    }

    pub fn feed(&mut self, buf: &[u8]) -> Progress {
        loop {
            // One pass: control bytes are found eight at a time. A line in which
            // the only ones are HTABs and its final CR needs no value check.
            let from = self.searched.max(self.line_start).min(buf.len());
            let Some(at) = find_ctl(buf, from) else {
                self.searched = buf.len();
                return Progress::Partial;
            };
            self.searched = at + 1;
            match buf[at] {
                b'\n' => {}
                b'\t' => continue,
                _ => {
                    self.first_ctl.get_or_insert(at);
                    continue;
                }
            }
            let lf = at;
            let line = &buf[self.line_start..lf];
            // Clean when the only control byte (HTABs aside) is the one before the LF.
            let clean = self.first_ctl.is_none_or(|c| c + 1 == lf);
            self.line_start = lf + 1;
            self.first_ctl = None;
            let Some((b'\r', line)) = line.split_last() else {
                return Progress::Invalid(Invalid::LineEnding);
            };
            let step = if !self.in_fields {
                if line.is_empty() {
                    // An empty line before the request line (RFC 9112 §2.2).
                    continue;
                }
                self.in_fields = true;
                self.request_line(line)
            } else if line.is_empty() {
                return match self.finish() {
                    Ok(()) => {
                        self.summary.end = lf + 1;
                        Progress::Complete(self.summary)
                    }
                    Err(e) => Progress::Invalid(e),
                };
            } else {
                self.summary.fields += 1;
                if self.summary.fields > self.max_fields {
                    return Progress::Invalid(Invalid::TooManyFields);
                }
                self.field(line, clean)
            };
            if let Err(e) = step {
                return Progress::Invalid(e);
            }
        }
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Invalid> {
        let sp1 = line
            .iter()
            .position(|&b| b == b' ')
            .ok_or(Invalid::RequestLine)?;
        let sp2 = line
            .iter()
            .rposition(|&b| b == b' ')
            .ok_or(Invalid::RequestLine)?;
        if sp1 == sp2 {
            return Err(Invalid::RequestLine);
        }
        let (method, target, version) = (&line[..sp1], &line[sp1 + 1..sp2], &line[sp2 + 1..]);
        if method.is_empty() || !method.iter().all(|&b| TCHAR[b as usize]) {
            return Err(Invalid::Method);
        }
        match version {
            b"HTTP/1.1" => {}
            b"HTTP/1.0" => self.summary.http10 = true,
            _ => return Err(Invalid::Version),
        }
        if method == b"CONNECT" {
            return Err(Invalid::Connect);
        }
        if target.is_empty() || !target.iter().all(|&b| TARGET[b as usize]) {
            return Err(Invalid::Target);
        }
        match target[0] {
            b'/' => Ok(()),
            b'*' if target.len() == 1 && method == b"OPTIONS" => Ok(()),
            _ => absolute_form(target),
        }
    }

    /// `clean`: the line holds no control byte but HTAB (its CRLF aside).
    fn field(&mut self, line: &[u8], clean: bool) -> Result<(), Invalid> {
        if matches!(line[0], b' ' | b'\t') {
            return Err(Invalid::ObsFold);
        }
        let colon = line
            .iter()
            .position(|&b| !TCHAR[b as usize])
            .ok_or(Invalid::FieldName)?;
        if colon == 0 || line[colon] != b':' {
            return Err(Invalid::FieldName);
        }
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !clean && !value.iter().all(|&b| VALUE[b as usize]) {
            return Err(Invalid::FieldValue);
        }
        let value = trim_ows(value);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if self.host {
                    return Err(Invalid::HostRepeated);
                }
                self.host = true;
                if !value.iter().all(|&b| HOST[b as usize]) {
                    return Err(Invalid::HostInvalid);
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if self.summary.content_length.is_some() {
                    return Err(Invalid::ContentLengthRepeated);
                }
                self.summary.content_length = Some(decimal(value).ok_or(Invalid::ContentLength)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if self.transfer_encoding || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(Invalid::TransferEncoding);
                }
                self.transfer_encoding = true;
                self.summary.chunked = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), Invalid> {
        let s = &self.summary;
        if s.chunked && s.content_length.is_some() {
            return Err(Invalid::ContentLengthAndTransferEncoding);
        }
        if s.chunked && s.http10 {
            return Err(Invalid::TransferEncodingHttp10);
        }
        if !s.http10 && !self.host {
            return Err(Invalid::HostMissing);
        }
        Ok(())
    }
}

/// Validates a head held entirely in `buf` (which may continue past it).
pub fn validate(buf: &[u8], max_fields: usize) -> Progress {
    HeadScanner::new(max_fields).feed(buf)
}

/// Offset of the first byte at or after `from` that is a control character
/// (below 0x20, or 0x7F), eight bytes per step.
fn find_ctl(buf: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut i = from;
    while let Some(word) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        // Bytes below 0x20, and bytes equal to 0x7F. Each formula is exact for
        // its lowest flagged byte, which is the only one used.
        let below = x.wrapping_sub(LO * 0x20) & !x & HI;
        let y = x ^ (LO * 0x7f);
        let del = y.wrapping_sub(LO) & !y & HI;
        let m = below | del;
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    buf[i.min(buf.len())..]
        .iter()
        .position(|&b| b < 0x20 || b == 0x7f)
        .map(|k| i + k)
}

/// `http://` or `https://`, then an authority without userinfo.
fn absolute_form(target: &[u8]) -> Result<(), Invalid> {
    let rest = strip_prefix_ci(target, b"http://")
        .or_else(|| strip_prefix_ci(target, b"https://"))
        .ok_or(Invalid::Target)?;
    let authority = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(rest, |i| &rest[..i]);
    if authority.is_empty() || !authority.iter().all(|&b| HOST[b as usize]) {
        return Err(Invalid::Target);
    }
    Ok(())
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `1*DIGIT` as a u64; `None` when empty, not all digits, or too large.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// tchar (RFC 9110 §5.6.2).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Request-target bytes: visible ASCII except `#`.
const TARGET: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0x21;
    while i < 0x7f {
        t[i] = i as u8 != b'#';
        i += 1;
    }
    t
};

/// field-value bytes: HTAB, SP, VCHAR, obs-text (RFC 9110 §5.5).
const VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i == 0x09 || (i >= 0x20 && i != 0x7f);
        i += 1;
    }
    t
};

/// uri-host [":" port] bytes: unreserved, sub-delims, pct-encoded, IP-literal
/// brackets and the port colon (RFC 3986 §3.2.2).
const HOST: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            );
        i += 1;
    }
    t
};

/// Why a chunked request body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not 1 to 16 hex digits (empty, sign, `0x`, other bytes), or a
    /// space not followed by an extension.
    Size,
    /// A control character in a chunk extension, or an over-long size line.
    Extension,
    /// A line that does not end with CRLF, or data not followed by CRLF.
    LineEnding,
    /// A trailer field that is not `token ":" value` (as in the head).
    Trailer,
    /// The trailer section is larger than [`MAX_TRAILERS`].
    TrailersTooLarge,
}

impl ChunkError {
    pub fn detail(self) -> &'static str {
        match self {
            ChunkError::Size => "a chunk size in the request body is not a hex number",
            ChunkError::Extension => "a chunk extension in the request body is invalid",
            ChunkError::LineEnding => "a chunk in the request body does not end with CRLF",
            ChunkError::Trailer => "a trailer field of the request body is invalid",
            ChunkError::TrailersTooLarge => "the request body's trailer section is too large",
        }
    }
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for ChunkError {}

/// Longest chunk-size line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size (`digits` so far).
    Size,
    /// Whitespace after the size: only an extension may follow.
    SizeSpace,
    /// In the extensions, up to CR.
    Ext,
    /// CR of the size line seen.
    SizeLf,
    /// `remaining` data bytes to go.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// Strict reader of chunked framing (RFC 9112 §7.1), fed the raw body bytes as
/// they arrive; data bytes are skipped, not looked at. It only checks: Pingora
/// decodes the body. httparse (Pingora's chunk parser) reads an empty size line
/// as `0` — the last chunk — and then swallows everything up to the next empty
/// line as trailers, so a body can end earlier for Pingora than for a stricter
/// (or differently lenient) server in front of tollgate: a request smuggling
/// primitive. This refuses that, whitespace without an extension, control
/// characters in extensions and malformed trailer fields.
#[derive(Debug, Clone)]
pub struct ChunkedBody {
    state: Chunk,
    digits: u8,
    size: u64,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedBody {
    pub fn new() -> Self {
        ChunkedBody {
            state: Chunk::Size,
            digits: 0,
            size: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// The final CRLF has been read.
    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Checks the next bytes of the body. Returns how many belong to it: all
    /// of them, or fewer when the body ended (the rest is the next request).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == Chunk::Data {
                let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= take as u64;
                i += take;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = match self.state {
                Chunk::Size | Chunk::SizeSpace | Chunk::Ext => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(ChunkError::Extension);
                    }
                    self.size_line(b)?
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnding);
                    }
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    }
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size,
                Chunk::DataCr | Chunk::DataLf => return Err(ChunkError::LineEnding),
                Chunk::TrailerStart
                | Chunk::TrailerName
                | Chunk::TrailerValue
                | Chunk::TrailerLf
                | Chunk::FinalLf => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(ChunkError::TrailersTooLarge);
                    }
                    match (self.state, b) {
                        (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
                        (Chunk::TrailerStart, b) if TCHAR[b as usize] => Chunk::TrailerName,
                        (Chunk::TrailerName, b':') => Chunk::TrailerValue,
                        (Chunk::TrailerName, b) if TCHAR[b as usize] => Chunk::TrailerName,
                        (Chunk::TrailerValue, b'\r') => Chunk::TrailerLf,
                        (Chunk::TrailerValue, b) if VALUE[b as usize] => Chunk::TrailerValue,
                        (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
                        (Chunk::FinalLf, b'\n') => {
                            self.state = Chunk::Done;
                            return Ok(i);
                        }
                        (Chunk::TrailerLf | Chunk::FinalLf, _) => {
                            return Err(ChunkError::LineEnding)
                        }
                        _ => return Err(ChunkError::Trailer),
                    }
                }
                Chunk::Done => return Ok(i - 1),
                Chunk::Data => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn size_line(&mut self, b: u8) -> Result<Chunk, ChunkError> {
        Ok(match (self.state, b) {
            (Chunk::Size, b) if b.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return Err(ChunkError::Size);
                }
                self.digits += 1;
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                self.size = (self.size << 4) | d;
                Chunk::Size
            }
            (Chunk::Size, _) if self.digits == 0 => return Err(ChunkError::Size),
            (Chunk::Size | Chunk::SizeSpace, b' ' | b'\t') => Chunk::SizeSpace,
            (Chunk::Size | Chunk::SizeSpace, b';') => Chunk::Ext,
            (Chunk::Size, b'\r') => Chunk::SizeLf,
            (Chunk::Size | Chunk::SizeSpace, _) => return Err(ChunkError::Size),
            (Chunk::Ext, b'\r') => Chunk::SizeLf,
            (Chunk::Ext, b) if VALUE[b as usize] => Chunk::Ext,
            (Chunk::Ext, _) => return Err(ChunkError::Extension),
            _ => unreachable!("size_line in state {:?}", self.state),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MAX: usize = 100;

    fn check(head: &str) -> Progress {
        validate(head.as_bytes(), MAX)
    }

    fn ok(head: &str) -> Summary {
        match check(head) {
            Progress::Complete(s) => s,
            other => panic!("{head:?} should be valid, got {other:?}"),
        }
    }

    fn refused(head: &str, why: Invalid) {
        assert_eq!(check(head), Progress::Invalid(why), "{head:?}");
    }

    /// A head with `fields` (each `Name: value`) after a Host line.
    fn with(fields: &[&str]) -> String {
        let mut s = String::from("POST /pay HTTP/1.1\r\nHost: api.test\r\n");
        for f in fields {
            s.push_str(f);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    }

    #[test]
    fn valid_heads_pass() {
        let s = ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            s,
            Summary {
                end: 27,
                fields: 1,
                content_length: None,
                chunked: false,
                http10: false
            }
        );
        let s = ok(&with(&["Content-Length: 5"]));
        assert_eq!(s.content_length, Some(5));
        assert_eq!(s.fields, 2);
        assert!(ok(&with(&["Transfer-Encoding: chunked"])).chunked);
        assert!(ok(&with(&["transfer-encoding:  Chunked \t"])).chunked);
        assert_eq!(ok(&with(&["Content-Length: 007"])).content_length, Some(7));
        assert_eq!(
            ok(&with(&["Content-Length: 18446744073709551615"])).content_length,
            Some(u64::MAX)
        );
        // HTTP/1.0 needs no Host.
        assert!(ok("GET /x HTTP/1.0\r\n\r\n").http10);
        // Empty lines before the request line are ignored (RFC 9112 §2.2).
        assert_eq!(ok("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").end, 31);
        ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("GET http://api.test:8080/x?y=1 HTTP/1.1\r\nHost: api.test:8080\r\n\r\n");
        ok("GET HTTPS://api.test HTTP/1.1\r\nHost: api.test\r\n\r\n");
        ok("GET /a/b%2F..;x=1?q=a+b&r=%20~!$'()*,:@[]{}|^`\\\" HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("DELETE /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        ok("GET / HTTP/1.1\r\nHost:\r\n\r\n");
        ok("M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n");
        ok(&with(&[
            "X-Empty:",
            "X-Tabs:\tv\t",
            "X-Obs-Text: caf\u{e9}",
            "X-All: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
            "!#$%&'*+-.^_`|~09azAZ: token name",
            "Upgrade: websocket",
            "Connection: Upgrade",
        ]));
        // Bytes after the head (a body, a pipelined request) are not looked at.
        let head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
        let s = validate(format!("{head}abc\0\n\rGET").as_bytes(), MAX);
        assert_eq!(
            s,
            Progress::Complete(Summary {
                end: head.len(),
                fields: 2,
                content_length: Some(3),
                chunked: false,
                http10: false
            })
        );
    }

    #[test]
    fn incomplete_heads_are_partial() {
        for head in [
            "",
            "\r\n",
            "GET / HTTP/1.1",
            "GET / HTTP/1.1\r",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            assert_eq!(check(head), Progress::Partial, "{head:?}");
        }
    }

    #[test]
    fn line_endings_must_be_crlf() {
        refused("GET / HTTP/1.1\nHost: a\n\n", Invalid::LineEnding);
        refused("GET / HTTP/1.1\r\nHost: a\n\r\n", Invalid::LineEnding);
        refused("GET / HTTP/1.1\r\nHost: a\r\n\n", Invalid::LineEnding);
        refused("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::LineEnding);
        // LF inside a value ends the line without CR.
        refused(&with(&["X-A: one\ntwo"]), Invalid::LineEnding);
        // A bare CR is a control character.
        refused(&with(&["X-A: one\rtwo"]), Invalid::FieldValue);
        refused("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", Invalid::Version);
    }

    #[test]
    fn request_line_shape() {
        refused("GET /\r\nHost: a\r\n\r\n", Invalid::RequestLine);
        refused("GET\r\nHost: a\r\n\r\n", Invalid::RequestLine);
        refused(" / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
        refused("G\0T / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
        refused("GE\tT / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
        refused("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
        for v in [
            "HTTP/1.2",
            "HTTP/2.0",
            "http/1.1",
            "HTTP/1.1 ",
            "HTTP/1",
            "HTTP/1.10",
            "HTTP/0.9",
            "",
        ] {
            refused(&format!("GET / {v}\r\nHost: a\r\n\r\n"), Invalid::Version);
        }
        refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Invalid::Version);
        refused(
            "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test\r\n\r\n",
            Invalid::Connect,
        );
        refused("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Connect);
    }

    #[test]
    fn request_target() {
        for t in [
            "/a#frag",
            "#",
            "/a b",
            "/a\tb",
            "/a\0b",
            "/a\x7fb",
            "/a\x01",
            "/caf\u{e9}",
            "*",
            "a/b",
            "api.test:443",
            "ftp://a/b",
            "http://",
            "http:///x",
            "http://user@host/x",
            "http://a b/",
            "http://a/b#c",
        ] {
            refused(
                &format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n"),
                Invalid::Target,
            );
        }
        // Two spaces: an empty-looking target with a space in it.
        refused("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Target);
    }

    #[test]
    fn header_lines() {
        refused(&with(&["X-A: one", " folded"]), Invalid::ObsFold);
        refused(&with(&["X-A: one", "\tfolded"]), Invalid::ObsFold);
        refused("GET / HTTP/1.1\r\n Host: a\r\n\r\n", Invalid::ObsFold);
        for f in [
            "X-A : v",
            "X-A\t: v",
            ": v",
            "X A: v",
            "X\0A: v",
            "X-A",
            "X-A v",
            "X(A): v",
            "X\u{e9}: v",
            "X\x7f: v",
        ] {
            refused(&with(&[f]), Invalid::FieldName);
        }
        for f in [
            "X-A: a\0b",
            "X-A: \0",
            "X-A: a\x01",
            "X-A: a\x1b[0m",
            "X-A: \x7f",
        ] {
            refused(&with(&[f]), Invalid::FieldValue);
        }
    }

    #[test]
    fn content_length() {
        for v in [
            "+5",
            "-5",
            "5,6",
            "5, 5",
            "5 5",
            "",
            " ",
            "0x5",
            "5a",
            "1e3",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            refused(
                &with(&[&format!("Content-Length: {v}")]),
                Invalid::ContentLength,
            );
        }
        refused(
            &with(&["Content-Length: 5", "Content-Length: 6"]),
            Invalid::ContentLengthRepeated,
        );
        refused(
            &with(&["Content-Length: 5", "content-length: 5"]),
            Invalid::ContentLengthRepeated,
        );
    }

    #[test]
    fn transfer_encoding() {
        for v in [
            "chunked, chunked",
            "chunked,chunked",
            "xchunked",
            "chunkedx",
            "identity",
            "gzip",
            "gzip, chunked",
            "chunked, gzip",
            "",
            "chunked;q=1",
            "\"chunked\"",
        ] {
            refused(
                &with(&[&format!("Transfer-Encoding: {v}")]),
                Invalid::TransferEncoding,
            );
        }
        refused(
            &with(&["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
            Invalid::TransferEncoding,
        );
        refused(
            &with(&["Transfer-Encoding: chunked", "Content-Length: 5"]),
            Invalid::ContentLengthAndTransferEncoding,
        );
        refused(
            &with(&["Content-Length: 5", "Transfer-Encoding: chunked"]),
            Invalid::ContentLengthAndTransferEncoding,
        );
        refused(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            Invalid::TransferEncodingHttp10,
        );
    }

    #[test]
    fn host() {
        refused("GET / HTTP/1.1\r\nX-A: b\r\n\r\n", Invalid::HostMissing);
        refused(
            "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
            Invalid::HostRepeated,
        );
        for h in [
            "a b",
            "a/b",
            "a@b",
            "a?b",
            "a#b",
            "a\\b",
            "caf\u{e9}",
            "a\"b",
            "<a>",
        ] {
            refused(
                &format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n"),
                Invalid::HostInvalid,
            );
        }
    }

    #[test]
    fn too_many_fields_is_refused_as_soon_as_it_is_seen() {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        // 101 fields, and the head is not even complete.
        assert_eq!(check(&head), Progress::Invalid(Invalid::TooManyFields));
        assert_eq!(Invalid::TooManyFields.status(), 431);
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX - 1 {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        head.push_str("\r\n");
        assert_eq!(ok(&head).fields, MAX);
    }

    #[test]
    fn every_refusal_is_a_400_with_a_detail() {
        use Invalid::*;
        for e in [
            LineEnding,
            RequestLine,
            Method,
            Connect,
            Target,
            Version,
            ObsFold,
            FieldName,
            FieldValue,
            ContentLength,
            ContentLengthRepeated,
            TransferEncoding,
            TransferEncodingHttp10,
            ContentLengthAndTransferEncoding,
            HostMissing,
            HostRepeated,
            HostInvalid,
        ] {
            assert_eq!(e.status(), 400);
            assert!(!e.detail().is_empty());
        }
    }

    /// Fed in pieces, the scanner reaches the same verdict as on the whole head.
    fn in_pieces(head: &[u8], cuts: &[usize]) -> Progress {
        let mut s = HeadScanner::new(MAX);
        for &c in cuts {
            match s.feed(&head[..c]) {
                Progress::Partial => {}
                done => return done,
            }
        }
        s.feed(head)
    }

    #[test]
    fn incremental_feeding_agrees_with_one_shot() {
        let heads = [
            with(&["Content-Length: 5", "X-A: b"]),
            with(&["Transfer-Encoding: chunked", "Content-Length: 5"]),
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nbody".to_string(),
            "GET / HTTP/1.1\r\nHost: a\n\r\n".to_string(),
            with(&["X-A: a\0b"]),
        ];
        for head in heads {
            let b = head.as_bytes();
            let whole = validate(b, MAX);
            let bytewise: Vec<usize> = (0..b.len()).collect();
            assert_eq!(in_pieces(b, &bytewise), whole, "{head:?} byte by byte");
            assert_eq!(in_pieces(b, &[b.len() / 3, b.len() / 2]), whole, "{head:?}");
        }
    }

    const SEEDS: &[&str] = &[
        "GET /a?b=c HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\r\n",
        "POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nIdempotency-Key: k\r\n\r\nhello",
        "POST /pay HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET http://a:1/x HTTP/1.0\r\nX: y\r\n\r\n",
    ];

    /// Random mutations of valid heads: the scanner never panics, its verdict does not
    /// depend on how the bytes arrive, and whatever it accepts, httparse (Pingora's
    /// parser) frames identically: same end of head, same number of fields.
    #[test]
    fn random_mutations_never_panic_and_agree_with_httparse() {
        const INTERESTING: &[u8] = b"\r\n\t :,;#/?@\0\x7f\x80\xff0123456789aAzZ-+\"\\";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_6a7e);
        let mut accepted = 0;
        for round in 0..30_000 {
            let mut buf = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=buf.len());
                let byte = if rng.gen_bool(0.7) {
                    INTERESTING[rng.gen_range(0..INTERESTING.len())]
                } else {
                    rng.gen()
                };
                match rng.gen_range(0..4) {
                    0 if at < buf.len() => buf[at] = byte,
                    1 if at < buf.len() => {
                        buf.remove(at);
                    }
                    2 => buf.insert(at, byte),
                    _ => buf.truncate(at),
                }
            }
            let whole = validate(&buf, MAX);
            let cut = rng.gen_range(0..=buf.len());
            assert_eq!(
                in_pieces(&buf, &[cut]),
                whole,
                "{:?}",
                buf.escape_ascii().to_string()
            );
            let Progress::Complete(s) = whole else {
                continue;
            };
            accepted += 1;
            assert!(s.end <= buf.len());
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(end)) => {
                    assert_eq!(end, s.end, "{:?}", buf.escape_ascii().to_string());
                    assert_eq!(req.headers.len(), s.fields);
                }
                // httparse refuses some visible ASCII in targets that Pingora then
                // escapes and parses again (`escape_illegal_request_line`).
                Err(httparse::Error::Token) => {}
                other => panic!(
                    "accepted by the scanner, httparse says {other:?}: {:?}",
                    buf.escape_ascii().to_string()
                ),
            }
        }
        assert!(
            accepted > 1_000,
            "the mutations hardly ever produced a valid head: {accepted}"
        );
    }

    fn chunked(body: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut c = ChunkedBody::new();
        let n = c.feed(body)?;
        Ok((n, c.is_done()))
    }

    #[test]
    fn valid_chunked_bodies() {
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            b"5 ;a=\"q \\\" x\"; b\r\nhello\r\n0;last\r\n\r\n",
            b"5\t;x\r\nhello\r\n000\r\n\r\n",
            b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
            b"000000000000000F\r\n0123456789abcde\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Empty:\r\n\r\n",
            // Data is not looked at: CRLF, NUL, anything.
            b"6\r\n\r\n0\r\n\0\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                chunked(body),
                Ok((body.len(), true)),
                "{:?}",
                body.escape_ascii().to_string()
            );
        }
        // What follows the body is not consumed.
        let body = b"1\r\na\r\n0\r\n\r\n";
        let mut next = body.to_vec();
        next.extend_from_slice(b"GET / HTTP/1.1\r\n\0");
        assert_eq!(chunked(&next), Ok((body.len(), true)));
        // Incomplete but fine so far.
        for body in [
            &b""[..],
            b"5",
            b"5\r",
            b"5\r\nhel",
            b"5\r\nhello\r",
            b"5\r\nhello\r\n0\r\nX: y",
        ] {
            assert_eq!(
                chunked(body),
                Ok((body.len(), false)),
                "{:?}",
                body.escape_ascii().to_string()
            );
        }
        // A size up to u64::MAX is a size (the body limit refuses it later).
        assert_eq!(chunked(b"ffffffffffffffff\r\nab"), Ok((20, false)));
    }

    #[test]
    fn invalid_chunked_bodies() {
        use ChunkError::*;
        for (body, why) in [
            (&b"\r\nhello\r\n0\r\n\r\n"[..], Size),
            (b";x\r\n", Size),
            (b"-5\r\n", Size),
            (b"+5\r\n", Size),
            (b"0x5\r\n", Size),
            (b"5 5\r\n", Size),
            (b"5 \r\n", Size),
            (b" 5\r\n", Size),
            (b"g\r\n", Size),
            (b"5\0\r\n", Size),
            (b"5\nhello", Size),
            (b"10000000000000000\r\n", Size),
            (b"00000000000000005\r\n", Size),
            (b"5;a\0\r\n", Extension),
            (b"5;a\nb\r\n", Extension),
            (b"5;a\rb\r\n", LineEnding),
            (b"5\r\r\n", LineEnding),
            (b"3\r\nhello\r\n", LineEnding),
            (b"5\r\nhello\n0\r\n\r\n", LineEnding),
            (b"5\r\nhello\r\n0\r\n\n", Trailer),
            (b"0\r\nnot a field\r\n\r\n", Trailer),
            (b"0\r\n folded: x\r\n\r\n", Trailer),
            (b"0\r\nX : y\r\n\r\n", Trailer),
            (b"0\r\nX: a\0b\r\n\r\n", Trailer),
            (b"0\r\nX: a\nb\r\n\r\n", Trailer),
            (b"0\r\nX: y\n\r\n", Trailer),
        ] {
            assert_eq!(
                chunked(body),
                Err(why),
                "{:?}",
                body.escape_ascii().to_string()
            );
        }
        let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert_eq!(chunked(long.as_bytes()), Err(Extension));
        let big = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert_eq!(chunked(big.as_bytes()), Err(TrailersTooLarge));
    }

    /// Random mutations of chunked bodies: no panic, the verdict does not depend on how
    /// the bytes are split, and every size line accepted is one httparse reads the same.
    #[test]
    fn chunked_mutations_never_panic_and_do_not_depend_on_reads() {
        const SEEDS: &[&[u8]] = &[
            b"5\r\nhello\r\n0\r\n\r\n",
            b"3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n",
        ];
        const INTERESTING: &[u8] = b"\r\n\t ;:=\"0159afAFxX-+\0\x7f\x80";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4_0000_0b0d);
        for round in 0..30_000 {
            let mut buf = SEEDS[round % SEEDS.len()].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..=buf.len());
                let byte = if rng.gen_bool(0.7) {
                    INTERESTING[rng.gen_range(0..INTERESTING.len())]
                } else {
                    rng.gen()
                };
                match rng.gen_range(0..3) {
                    0 if at < buf.len() => buf[at] = byte,
                    1 if at < buf.len() => {
                        buf.remove(at);
                    }
                    _ => buf.insert(at, byte),
                }
            }
            let whole = chunked(&buf);
            let cut = rng.gen_range(0..=buf.len());
            let mut c = ChunkedBody::new();
            let split = c.feed(&buf[..cut]).and_then(|n| {
                if c.is_done() {
                    return Ok((n, true));
                }
                let m = c.feed(&buf[cut..])?;
                Ok((n + m, c.is_done()))
            });
            assert_eq!(
                split,
                whole,
                "{:?} cut at {cut}",
                buf.escape_ascii().to_string()
            );
            // A first size line we accept, httparse accepts with the same size.
            let mut c = ChunkedBody::new();
            if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
                if c.feed(&buf[..=lf]).is_ok() {
                    match httparse::parse_chunk_size(&buf) {
                        Ok(httparse::Status::Complete((end, size))) => {
                            assert_eq!(end, lf + 1);
                            assert_eq!(size, c.size);
                        }
                        other => panic!(
                            "accepted, httparse says {other:?}: {:?}",
                            buf.escape_ascii().to_string()
                        ),
                    }
                }
            }
        }
    }
}
