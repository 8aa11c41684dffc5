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
mod tests;
