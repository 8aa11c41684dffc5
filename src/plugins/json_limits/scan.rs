//! A streaming JSON validator with limits, for the `json_limits` plugin (SPEC §13).
//!
//! [`Scanner`] is fed a request body piece by piece as it arrives, split
//! anywhere (inside a string, an escape, a UTF-8 sequence, a number or a
//! literal), and refuses it at the first byte that makes it invalid JSON
//! (RFC 8259, and no unpaired UTF-16 surrogate in a `\u` escape) or exceeds a
//! [`Limits`]. It never builds a document.
//!
//! Why hand-written: serde_json reads one value from a whole slice or from a
//! blocking reader, and builds (or skips) values with no limit per object,
//! array or string; the gateway receives the body as chunks it must judge one
//! at a time, before the next arrives, with memory bounded by the limits and
//! not by the body. The state is a stack of at most `max_depth` frames, each
//! holding its member count and, for an object, its current key capped at 256
//! bytes (only for the pointer of a report), so memory is
//! O(`max_depth` × 256) whatever the input. Nothing is allocated per byte or
//! per value: frames and their key buffers are reused, and a pointer String
//! is built only for a [`Violation`].
//!
//! Counting, exactly:
//! - depth: containers, the top-level one is depth 1; the container that
//!   would be one deeper than `max_depth` fails at its own pointer.
//! - `max_keys`: members of one object, duplicates included; the opening quote
//!   of key number `max_keys + 1` fails at the object's pointer.
//! - `max_array`: elements of one array; the start of element `max_array + 1`
//!   (the `,` before it) fails at the array's pointer.
//! - `max_string`: the bytes of a string's or key's JSON text between the
//!   quotes, escapes counted as written (`\n` is 2, `\u00e9` is 6). The byte
//!   after the first `max_string` (unless it is the closing quote) fails at the
//!   string's pointer, or for a key at the pointer the key would name. Numbers
//!   are bounded by it too (every byte of the number, `-`, `.`, `e` included)
//!   and reported as `max_string` at the number's pointer, so a 10,000-digit
//!   number costs no more than a long string.
//!
//! Whatever the chunking, the result is the same: the first byte that is
//! invalid or over a limit decides.

use std::fmt::Write as _;
use std::str;

/// The longest key kept for a pointer; longer keys are reported truncated.
const KEY_CAP: usize = 256;
/// A frame's key buffer: 16 bytes of slack to copy short runs in one move.
const KEY_BUF: usize = KEY_CAP + 16;

/// The limits of SPEC §13 (`max_string` in bytes); see the module doc for
/// exactly what each counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting of objects and arrays; the top-level container is depth 1.
    pub max_depth: usize,
    /// Members of one object.
    pub max_keys: usize,
    /// Elements of one array.
    pub max_array: usize,
    /// Bytes of one string or key as written between its quotes, and of one number.
    pub max_string: usize,
}

/// Why a body is refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Not JSON (RFC 8259): `pointer` is where the scanner was: the string,
    /// number or literal being read, or the value expected next (`/1` in
    /// `[0,x`); the object for a bad key, and the container whose punctuation
    /// is wrong (`""` for `{"a":1 x`); `""` for data after the top-level value.
    /// `message` says what was wrong, e.g. "invalid escape in a string",
    /// "unexpected byte 0x7d", "invalid UTF-8", "unexpected end of the body",
    /// "trailing data after the JSON value".
    Invalid { pointer: String, message: String },
    /// A limit exceeded: `limit` is "max_depth" | "max_keys" | "max_array" |
    /// "max_string"; `pointer` is the RFC 6901 pointer of the value that
    /// exceeded it (see the module doc).
    Limit {
        limit: &'static str,
        pointer: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// A value must start (the top level, after `:`, after `,` in an array).
    Value,
    ArrayFirst,
    ObjectFirst,
    /// After `,` in an object.
    Key,
    Colon,
    /// After a value: `,`, a close, or at the top level only whitespace.
    After,
    Str,
    Esc,
    Hex {
        low: bool,
        n: u8,
        acc: u32,
    },
    /// After a high surrogate escape: `\` of the low one.
    SurrBackslash,
    SurrU,
    /// Inside a UTF-8 sequence, its first bytes in `utf8`.
    Utf8,
    Num(Num),
    Lit {
        which: u8,
        pos: u8,
    },
}

struct Frame {
    obj: bool,
    /// An object's key is current (from its opening quote to the next `,`).
    named: bool,
    /// Members (keys started) or elements (started, or promised by a `,`).
    count: usize,
    key: [u8; KEY_BUF],
    key_len: usize,
}

/// Validates one JSON body fed in pieces; see the module doc.
pub struct Scanner {
    limits: Limits,
    st: St,
    frames: Vec<Frame>,
    depth: usize,
    in_key: bool,
    /// Bytes of the current string or number so far.
    len: usize,
    high: u32,
    utf8: [u8; 4],
    utf8_len: usize,
    err: Option<Violation>,
}

const LITS: [&[u8]; 3] = [b"true", b"false", b"null"];
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that is zero (exact for the lowest one).
#[inline(always)]
fn zeros(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Bytes that end a run inside a string: `"`, `\`, control bytes.
#[inline(always)]
fn stops(w: u64) -> u64 {
    zeros(w ^ (ONES * 0x22)) | zeros(w ^ (ONES * 0x5c)) | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
}

#[inline(always)]
fn is_stop(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// Length of the prefix of `s` without a stop byte (and, if `ascii`, without
/// a byte ≥ 0x80), 8 bytes at a time.
#[inline(always)]
fn run(s: &[u8], ascii: bool) -> usize {
    let mut n = 0;
    for w in s.chunks_exact(8) {
        let Ok(a) = <[u8; 8]>::try_from(w) else { break };
        let w = u64::from_le_bytes(a);
        let m = stops(w) | if ascii { w & HIGH } else { 0 };
        if m != 0 {
            return n + (m.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    for &b in s.get(n..).unwrap_or_default() {
        if is_stop(b) || (ascii && b >= 0x80) {
            break;
        }
        n += 1;
    }
    n
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            limits,
            st: St::Value,
            frames: Vec::new(),
            depth: 0,
            in_key: false,
            len: 0,
            high: 0,
            utf8: [0; 4],
            utf8_len: 0,
            err: None,
        }
    }

    /// Feed the next piece of the body (pieces split anywhere). After the
    /// first Err, later calls return the same Err again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Violation> {
        if let Some(e) = &self.err {
            return Err(e.clone());
        }
        self.scan(chunk).inspect_err(|e| self.err = Some(e.clone()))
    }

    /// The body ended. A body that is empty or only whitespace is accepted;
    /// otherwise it must be exactly one complete JSON value (a number at the
    /// very end is complete here), optionally surrounded by whitespace.
    pub fn finish(&mut self) -> Result<(), Violation> {
        if let Some(e) = &self.err {
            return Err(e.clone());
        }
        match self.st {
            St::Value | St::After if self.depth == 0 => Ok(()),
            St::Num(Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) if self.depth == 0 => {
                self.st = St::After;
                Ok(())
            }
            _ => {
                let e = self.invalid("unexpected end of the body");
                self.err = Some(e.clone());
                Err(e)
            }
        }
    }

    fn scan(&mut self, chunk: &[u8]) -> Result<(), Violation> {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            match self.st {
                St::Value | St::ArrayFirst | St::ObjectFirst | St::Key | St::Colon | St::After => {
                    // Between tokens: stay here while strings and numbers end
                    // within the piece, without a round trip through the match.
                    while let Some(&b) = chunk.get(i) {
                        i += 1;
                        if is_ws(b) {
                            continue;
                        }
                        self.structural(b)?;
                        match self.st {
                            St::Str => i = self.string(chunk, i)?,
                            St::Num(n) => i = self.number(chunk, i, n)?,
                            St::Lit { .. } => break,
                            _ => continue,
                        }
                        if !matches!(self.st, St::Colon | St::After) {
                            break;
                        }
                    }
                }
                St::Str => i = self.string(chunk, i)?,
                St::Num(n) => i = self.number(chunk, i, n)?,
                St::Lit { which, pos } => {
                    let lit = LITS.get(usize::from(which)).copied().unwrap_or_default();
                    if lit.get(usize::from(pos)) != Some(&b) {
                        return Err(self.invalid("invalid literal (true, false or null)"));
                    }
                    let pos = pos.saturating_add(1);
                    self.st = if usize::from(pos) >= lit.len() {
                        St::After
                    } else {
                        St::Lit { which, pos }
                    };
                    i += 1;
                }
                st => {
                    self.escape_or_utf8(st, b)?;
                    i += 1;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn structural(&mut self, b: u8) -> Result<(), Violation> {
        let d = self.depth;
        match self.st {
            St::Value => self.begin_value(b),
            St::ArrayFirst if b == b']' => self.close(),
            St::ArrayFirst => {
                if matches!(
                    b,
                    b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
                ) {
                    self.next_element()?;
                }
                self.begin_value(b)
            }
            St::ObjectFirst if b == b'}' => self.close(),
            St::ObjectFirst | St::Key if b == b'"' => self.begin_key(),
            St::Colon if b == b':' => {
                self.st = St::Value;
                Ok(())
            }
            St::After if d == 0 => Err(Violation::Invalid {
                pointer: String::new(),
                message: "trailing data after the JSON value".into(),
            }),
            St::After => {
                let obj = self.frames.get(d - 1).is_some_and(|f| f.obj);
                match (b, obj) {
                    (b',', true) => {
                        if let Some(f) = self.frames.get_mut(d - 1) {
                            f.named = false;
                        }
                        self.st = St::Key;
                        Ok(())
                    }
                    (b',', false) => {
                        self.next_element()?;
                        self.st = St::Value;
                        Ok(())
                    }
                    (b'}', true) | (b']', false) => self.close(),
                    _ => Err(self.unexpected(b)),
                }
            }
            _ => Err(self.unexpected(b)),
        }
    }

    #[inline(always)]
    fn begin_value(&mut self, b: u8) -> Result<(), Violation> {
        self.st = match b {
            b'{' | b'[' => {
                if self.depth >= self.limits.max_depth {
                    return Err(self.limit("max_depth", self.depth));
                }
                let obj = b == b'{';
                match self.frames.get_mut(self.depth) {
                    Some(f) => {
                        (f.obj, f.named, f.count, f.key_len) = (obj, false, 0, 0);
                    }
                    None => self.frames.push(Frame {
                        obj,
                        named: false,
                        count: 0,
                        key: [0; KEY_BUF],
                        key_len: 0,
                    }),
                }
                self.depth += 1;
                if obj {
                    St::ObjectFirst
                } else {
                    St::ArrayFirst
                }
            }
            b'"' => {
                self.len = 0;
                St::Str
            }
            b'-' | b'0'..=b'9' => {
                if self.limits.max_string == 0 {
                    return Err(self.limit("max_string", self.depth));
                }
                self.len = 1;
                St::Num(match b {
                    b'-' => Num::Minus,
                    b'0' => Num::Zero,
                    _ => Num::Int,
                })
            }
            b't' => St::Lit { which: 0, pos: 1 },
            b'f' => St::Lit { which: 1, pos: 1 },
            b'n' => St::Lit { which: 2, pos: 1 },
            _ => return Err(self.unexpected(b)),
        };
        Ok(())
    }

    #[inline]
    fn begin_key(&mut self) -> Result<(), Violation> {
        let (d, max) = (self.depth, self.limits.max_keys);
        let Some(f) = self.frames.get_mut(d.wrapping_sub(1)) else {
            return Err(self.unexpected(b'"'));
        };
        f.count = f.count.saturating_add(1);
        if f.count > max {
            return Err(self.limit("max_keys", d - 1));
        }
        f.named = true;
        f.key_len = 0;
        self.in_key = true;
        self.len = 0;
        self.st = St::Str;
        Ok(())
    }

    #[inline]
    fn next_element(&mut self) -> Result<(), Violation> {
        let (d, max) = (self.depth, self.limits.max_array);
        if let Some(f) = self.frames.get_mut(d.wrapping_sub(1)) {
            f.count = f.count.saturating_add(1);
            if f.count > max {
                return Err(self.limit("max_array", d - 1));
            }
        }
        Ok(())
    }

    #[inline]
    fn close(&mut self) -> Result<(), Violation> {
        self.depth = self.depth.saturating_sub(1);
        self.st = St::After;
        Ok(())
    }

    /// Consumes string bytes from `chunk[i..]`; returns where it stopped.
    #[inline(always)]
    fn string(&mut self, chunk: &[u8], mut i: usize) -> Result<usize, Violation> {
        let max = self.limits.max_string;
        loop {
            let rest = chunk.get(i..).unwrap_or_default();
            let window = rest.get(..max.saturating_sub(self.len)).unwrap_or(rest);
            let n = run(window, true);
            self.len += n;
            if self.in_key {
                self.key_run(chunk, i, n);
            }
            i += n;
            let Some(&b) = chunk.get(i) else { return Ok(i) };
            if b == b'"' {
                self.st = if self.in_key { St::Colon } else { St::After };
                self.in_key = false;
                return Ok(i + 1);
            }
            if self.len >= max {
                return Err(self.limit("max_string", self.depth));
            }
            if b == b'\\' {
                self.len += 1;
                self.st = St::Esc;
                return Ok(i + 1);
            }
            if b < 0x20 {
                return Err(self.invalid("control character in a string"));
            }
            // Non-ASCII: validate up to the next stop byte (or the limit) at once.
            let rest = chunk.get(i..).unwrap_or_default();
            let window = rest.get(..max.saturating_sub(self.len)).unwrap_or(rest);
            let text = window.get(..run(window, false)).unwrap_or_default();
            match str::from_utf8(text) {
                Ok(_) => {
                    self.take(text);
                    i += text.len();
                }
                Err(e) => {
                    let (ok, tail) = text.split_at_checked(e.valid_up_to()).unwrap_or_default();
                    self.take(ok);
                    i += ok.len();
                    if e.error_len().is_some() || text.len() < window.len() || tail.len() > 3 {
                        return Err(self.invalid("invalid UTF-8"));
                    }
                    // A sequence cut by the end of the piece (or by the limit).
                    self.utf8_len = tail.len();
                    for (d, s) in self.utf8.iter_mut().zip(tail) {
                        *d = *s;
                    }
                    self.take(tail);
                    self.st = St::Utf8;
                    return Ok(i + tail.len());
                }
            }
        }
    }

    /// One byte in an escape or a UTF-8 sequence carried over.
    fn escape_or_utf8(&mut self, st: St, b: u8) -> Result<(), Violation> {
        // A closing quote ends the string; here it is either text or an error.
        if b == b'"' && matches!(st, St::Utf8 | St::SurrBackslash) {
            return Err(self.invalid(if st == St::Utf8 {
                "invalid UTF-8"
            } else {
                "unpaired surrogate in a \\u escape"
            }));
        }
        if self.len >= self.limits.max_string {
            return Err(self.limit("max_string", self.depth));
        }
        self.len += 1;
        self.st = match st {
            St::Esc => {
                let d = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 8,
                    b'f' => 12,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.st = St::Hex {
                            low: false,
                            n: 0,
                            acc: 0,
                        };
                        return Ok(());
                    }
                    _ => return Err(self.invalid("invalid escape in a string")),
                };
                self.key_bytes(&[d]);
                St::Str
            }
            St::Hex { low, n, acc } => {
                let Some(v) = char::from(b).to_digit(16) else {
                    return Err(self.invalid("invalid \\u escape in a string"));
                };
                let acc = acc << 4 | v;
                if n < 3 {
                    St::Hex { low, n: n + 1, acc }
                } else if !low && (0xd800..0xdc00).contains(&acc) {
                    self.high = acc;
                    St::SurrBackslash
                } else if low != (0xdc00..0xe000).contains(&acc) {
                    return Err(self.invalid("unpaired surrogate in a \\u escape"));
                } else {
                    let cp = if low {
                        0x10000 + ((self.high.saturating_sub(0xd800)) << 10) + (acc - 0xdc00)
                    } else {
                        acc
                    };
                    let mut buf = [0; 4];
                    if let Some(c) = char::from_u32(cp) {
                        self.key_bytes(c.encode_utf8(&mut buf).as_bytes());
                    }
                    St::Str
                }
            }
            St::SurrBackslash if b == b'\\' => St::SurrU,
            St::SurrU if b == b'u' => St::Hex {
                low: true,
                n: 0,
                acc: 0,
            },
            St::Utf8 => {
                let Some(slot) = self.utf8.get_mut(self.utf8_len) else {
                    return Err(self.invalid("invalid UTF-8"));
                };
                *slot = b;
                self.utf8_len += 1;
                self.key_bytes(&[b]);
                match str::from_utf8(self.utf8.get(..self.utf8_len).unwrap_or_default()) {
                    Ok(_) => St::Str,
                    Err(e) if e.error_len().is_none() => St::Utf8,
                    Err(_) => return Err(self.invalid("invalid UTF-8")),
                }
            }
            _ => return Err(self.invalid("unpaired surrogate in a \\u escape")),
        };
        Ok(())
    }

    /// Consumes number bytes from `chunk[i..]`; returns where it stopped.
    #[inline(always)]
    fn number(&mut self, chunk: &[u8], mut i: usize, mut n: Num) -> Result<usize, Violation> {
        let max = self.limits.max_string;
        while let Some(&b) = chunk.get(i) {
            let next = match (n, b) {
                (Num::Minus, b'0') => Num::Zero,
                (Num::Minus, b'1'..=b'9') | (Num::Int, b'0'..=b'9') => Num::Int,
                (Num::Zero | Num::Int, b'.') => Num::Dot,
                (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
                (Num::Exp, b'+' | b'-') => Num::ExpSign,
                (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
                (Num::Zero, b'0'..=b'9') => {
                    return Err(self.invalid("leading zero in a number"));
                }
                (Num::Zero | Num::Int | Num::Frac | Num::ExpDigits, _) => {
                    // The number ended; `b` belongs to what follows.
                    self.st = St::After;
                    return Ok(i);
                }
                _ => return Err(self.invalid("invalid number")),
            };
            if self.len >= max {
                return Err(self.limit("max_string", self.depth));
            }
            self.len += 1;
            i += 1;
            n = next;
            if matches!(n, Num::Int | Num::Frac | Num::ExpDigits) {
                let rest = chunk.get(i..).unwrap_or_default();
                let window = rest.get(..max - self.len).unwrap_or(rest);
                let digits = window.iter().take_while(|b| b.is_ascii_digit()).count();
                self.len += digits;
                i += digits;
            }
        }
        self.st = St::Num(n);
        Ok(i)
    }

    /// Counts string bytes consumed, and keeps them if they are a key's.
    #[inline(always)]
    fn take(&mut self, s: &[u8]) {
        self.len = self.len.saturating_add(s.len());
        self.key_bytes(s);
    }

    #[inline(always)]
    fn key_bytes(&mut self, s: &[u8]) {
        if self.in_key {
            if let Some(f) = self.frames.get_mut(self.depth.wrapping_sub(1)) {
                let n = s.len().min(KEY_CAP.saturating_sub(f.key_len));
                if let (Some(d), Some(s)) = (f.key.get_mut(f.key_len..f.key_len + n), s.get(..n)) {
                    d.copy_from_slice(s);
                    f.key_len += n;
                }
            }
        }
    }

    /// Keeps `chunk[i..i + n]`, a run of a key: a short run is copied as 16
    /// bytes at once (the slack after the key is never read).
    #[inline(always)]
    fn key_run(&mut self, chunk: &[u8], i: usize, n: usize) {
        if let Some(f) = self.frames.get_mut(self.depth.wrapping_sub(1)) {
            let at = f.key_len;
            let n = n.min(KEY_CAP.saturating_sub(at));
            let src = chunk
                .get(i..i.saturating_add(16))
                .and_then(|s| <&[u8; 16]>::try_from(s).ok());
            let dst = f
                .key
                .get_mut(at..at + 16)
                .and_then(|d| <&mut [u8; 16]>::try_from(d).ok());
            if let (true, Some(src), Some(dst)) = (n <= 16, src, dst) {
                *dst = *src;
                f.key_len = at + n;
            } else {
                self.key_bytes(chunk.get(i..i + n).unwrap_or_default());
            }
        }
    }

    /// The RFC 6901 pointer through the first `frames` frames.
    fn pointer(&self, frames: usize) -> String {
        let mut p = String::new();
        for f in self.frames.iter().take(frames.min(self.depth)) {
            if !f.obj {
                if let Some(i) = f.count.checked_sub(1) {
                    let _ = write!(p, "/{i}");
                }
            } else if f.named {
                let key = f.key.get(..f.key_len).unwrap_or_default();
                let key = str::from_utf8(key).unwrap_or_else(|e| {
                    str::from_utf8(key.get(..e.valid_up_to()).unwrap_or_default())
                        .unwrap_or_default()
                });
                p.push('/');
                for c in key.chars() {
                    match c {
                        '~' => p.push_str("~0"),
                        '/' => p.push_str("~1"),
                        c => p.push(c),
                    }
                }
            }
        }
        p
    }

    #[cold]
    #[inline(never)]
    fn limit(&self, limit: &'static str, frames: usize) -> Violation {
        let pointer = self.pointer(frames);
        Violation::Limit { limit, pointer }
    }

    #[cold]
    #[inline(never)]
    fn invalid(&self, message: &str) -> Violation {
        let outer = self.in_key || matches!(self.st, St::Colon | St::After);
        let frames = if outer {
            self.depth.saturating_sub(1)
        } else {
            self.depth
        };
        Violation::Invalid {
            pointer: self.pointer(frames),
            message: message.to_string(),
        }
    }

    #[cold]
    #[inline(never)]
    fn unexpected(&self, b: u8) -> Violation {
        self.invalid(&format!("unexpected byte 0x{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_depth: 32,
        max_keys: 1000,
        max_array: 10_000,
        max_string: 65536,
    };
    const HUGE: Limits = Limits {
        max_depth: 1000,
        max_keys: usize::MAX,
        max_array: usize::MAX,
        max_string: usize::MAX,
    };

    fn whole(input: &[u8], l: Limits) -> Result<(), Violation> {
        let mut s = Scanner::new(l);
        s.feed(input)?;
        s.finish()
    }

    /// The result fed whole, after checking that every split into two
    /// pieces, and byte by byte, gives the same (and that errors stick).
    fn check(input: &[u8], l: Limits) -> Result<(), Violation> {
        let r = whole(input, l);
        let show = String::from_utf8_lossy(input);
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            let mut s = Scanner::new(l);
            let got = s.feed(a).and_then(|()| s.feed(b)).and_then(|()| s.finish());
            assert_eq!(got, r, "split at {k} of {show:?}");
            assert_eq!(s.finish(), r, "again, split at {k} of {show:?}");
            if r.is_err() {
                assert_eq!(s.feed(b"[]"), r, "sticky, {show:?}");
            }
        }
        let mut s = Scanner::new(l);
        let got = input
            .iter()
            .try_for_each(|b| s.feed(&[*b]))
            .and_then(|()| s.finish());
        assert_eq!(got, r, "byte by byte: {show:?}");
        r
    }

    fn limits(d: usize, k: usize, a: usize, s: usize) -> Limits {
        Limits {
            max_depth: d,
            max_keys: k,
            max_array: a,
            max_string: s,
        }
    }

    fn lim(limit: &'static str, pointer: &str) -> Result<(), Violation> {
        Err(Violation::Limit {
            limit,
            pointer: pointer.into(),
        })
    }

    const VALID: &[&str] = &[
        "",
        " \n\t\r ",
        "0",
        "-0",
        " 7 ",
        "1.5e+10",
        "-0.0E-0",
        "12345678901234567890e-99",
        "true",
        "false",
        "null",
        "\"\"",
        "\"\u{7f}é😀€ ~/\"",
        "[]",
        "{}",
        " [ 1 , 2 ] ",
        r#""a\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00\udbff\udfffz""#,
        r#"{"a":{"b":[1,{"c":null}]},"d":[[],{}],"e":"x","":0,"a":2}"#,
        "[0,-1,2.5,1e3,1E-3,0.25e+2,true,false,null,\"s\",[],{}]",
        "{ \"k\" : [ { } , [ ] ] }\n",
    ];

    #[test]
    fn valid_documents_pass() {
        for v in VALID {
            assert_eq!(check(v.as_bytes(), L), Ok(()), "{v:?}");
        }
    }

    #[test]
    fn invalid_json_is_refused() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"{", "unexpected end of the body", ""),
            (b"[1,", "unexpected end of the body", "/1"),
            (b"[1,]", "unexpected byte 0x5d", "/1"),
            (b"[,1]", "unexpected byte 0x2c", ""),
            (b"{\"a\":1,}", "unexpected byte 0x7d", ""),
            (b"{\"a\" 1}", "unexpected byte 0x31", ""),
            (b"{\"a\":1 \"b\":2}", "unexpected byte 0x22", ""),
            (b"{1:2}", "unexpected byte 0x31", ""),
            (b"{'a':1}", "unexpected byte 0x27", ""),
            (b"[1 2]", "unexpected byte 0x32", ""),
            (b"[1}", "unexpected byte 0x7d", ""),
            (b"{\"a\":[1,x]}", "unexpected byte 0x78", "/a/1"),
            (b"{\"a\":1]", "unexpected byte 0x5d", ""),
            (b"01", "leading zero in a number", ""),
            (b"-", "unexpected end of the body", ""),
            (b"-a", "invalid number", ""),
            (b"+1", "unexpected byte 0x2b", ""),
            (b".5", "unexpected byte 0x2e", ""),
            (b"1.", "unexpected end of the body", ""),
            (b"1.e3", "invalid number", ""),
            (b"1e", "unexpected end of the body", ""),
            (b"[1e+]", "invalid number", "/0"),
            (b"1.5.2", "trailing data after the JSON value", ""),
            (b"[1-2]", "unexpected byte 0x2d", ""),
            (b"NaN", "unexpected byte 0x4e", ""),
            (b"tru", "unexpected end of the body", ""),
            (b"[trux]", "invalid literal (true, false or null)", "/0"),
            (b"nul", "unexpected end of the body", ""),
            (b"True", "unexpected byte 0x54", ""),
            (b"truefalse", "trailing data after the JSON value", ""),
            (b"\"abc", "unexpected end of the body", ""),
            (b"\"a\x01\"", "control character in a string", ""),
            (b"\"a\tb\"", "control character in a string", ""),
            (b"{\"a\":\"\\q\"}", "invalid escape in a string", "/a"),
            (b"{\"k\\q\":1}", "invalid escape in a string", ""),
            (b"\"\\u12g4\"", "invalid \\u escape in a string", ""),
            (b"\"\\uD800\"", "unpaired surrogate in a \\u escape", ""),
            (b"\"\\uDC00\"", "unpaired surrogate in a \\u escape", ""),
            (b"\"\\uD800\\n\"", "unpaired surrogate in a \\u escape", ""),
            (
                b"\"\\uD800\\uD800\"",
                "unpaired surrogate in a \\u escape",
                "",
            ),
            (b"\"\\uD800x\"", "unpaired surrogate in a \\u escape", ""),
            (b"[\"\xff\"]", "invalid UTF-8", "/0"),
            (b"\"\x80\"", "invalid UTF-8", ""),
            (b"\"\xc0\xaf\"", "invalid UTF-8", ""),
            (b"\"\xe0\x80\xaf\"", "invalid UTF-8", ""),
            (b"\"\xed\xa0\x80\"", "invalid UTF-8", ""),
            (b"\"\xf4\x90\x80\x80\"", "invalid UTF-8", ""),
            (b"\"\xe2\x82\"", "invalid UTF-8", ""),
            (b"\"\xe2\x82\\n\"", "invalid UTF-8", ""),
            (b"\"abc\xe2\x82x\"", "invalid UTF-8", ""),
            (b"\xef\xbb\xbf{}", "unexpected byte 0xef", ""),
            (b"\xff", "unexpected byte 0xff", ""),
            (b"1 2", "trailing data after the JSON value", ""),
            (b"{} {}", "trailing data after the JSON value", ""),
            (b"[]]", "trailing data after the JSON value", ""),
            (b"{\"a\":{\"b\":[", "unexpected end of the body", "/a/b"),
        ];
        for (input, message, pointer) in cases {
            let want = Err(Violation::Invalid {
                pointer: pointer.to_string(),
                message: message.to_string(),
            });
            assert_eq!(
                check(input, L),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_at_their_boundaries() {
        let d2 = limits(2, 9, 9, 99);
        assert_eq!(check(b"[[1]]", d2), Ok(()));
        assert_eq!(check(b"[[[1]]]", d2), lim("max_depth", "/0/0"));
        assert_eq!(check(br#"{"a":{"b":{}}}"#, d2), lim("max_depth", "/a/b"));
        assert_eq!(check(b"{}", limits(1, 9, 9, 9)), Ok(()));
        assert_eq!(check(b" {}", limits(0, 9, 9, 9)), lim("max_depth", ""));
        assert_eq!(check(b"1", limits(0, 9, 9, 9)), Ok(()));

        let k2 = limits(9, 2, 9, 99);
        assert_eq!(check(br#"{"a":1,"b":{"c":2,"d":3}}"#, k2), Ok(()));
        assert_eq!(check(br#"{"a":1,"b":2,"c":3}"#, k2), lim("max_keys", ""));
        assert_eq!(
            check(br#"{"x":[{"a":1,"a":2,"a":3}]}"#, k2),
            lim("max_keys", "/x/0")
        );

        let a3 = limits(9, 9, 3, 99);
        assert_eq!(check(b"[1,[2,3,4],3]", a3), Ok(()));
        assert_eq!(check(b"[1,2,3,4]", a3), lim("max_array", ""));
        assert_eq!(check(b"[1,2,3,]", a3), lim("max_array", ""));
        assert_eq!(check(br#"{"a":[[1,2,3,4]]}"#, a3), lim("max_array", "/a/0"));
        assert_eq!(check(b"[1]", limits(9, 9, 0, 9)), lim("max_array", ""));
        assert_eq!(check(b"[]", limits(9, 9, 0, 9)), Ok(()));
    }

    #[test]
    fn max_string_counts_bytes_as_written() {
        let s = |n| limits(9, 9, 9, n);
        assert_eq!(check(b"\"abc\"", s(3)), Ok(()));
        assert_eq!(check(b"\"abcd\"", s(3)), lim("max_string", ""));
        assert_eq!(check(b"[\"abc\",\"abcd\"]", s(3)), lim("max_string", "/1"));
        assert_eq!(check(br#"{"abc":"abc"}"#, s(3)), Ok(()));
        assert_eq!(
            check(br#"{"x":{"abcd":1}}"#, s(3)),
            lim("max_string", "/x/abc")
        );
        assert_eq!(check(b"\"\\n\"", s(2)), Ok(()));
        assert_eq!(check(b"\"\\na\"", s(2)), lim("max_string", ""));
        assert_eq!(check(b"\"\\u00e9\"", s(6)), Ok(()));
        assert_eq!(check(b"\"\\u00e9\"", s(5)), lim("max_string", ""));
        assert_eq!(check(b"\"\\uD83D\\uDE00\"", s(11)), lim("max_string", ""));
        assert_eq!(check("\"é😀\"".as_bytes(), s(6)), Ok(()));
        assert_eq!(check("\"é😀\"".as_bytes(), s(5)), lim("max_string", ""));
        // The first bad byte decides: invalid before the limit, the limit before.
        assert_eq!(
            check(b"\"a\xe0\x80\"", s(3)),
            Err(Violation::Invalid {
                pointer: "".into(),
                message: "invalid UTF-8".into()
            })
        );
        assert_eq!(check(b"\"ab\xe0\x80\"", s(3)), lim("max_string", ""));
        // Numbers, every byte counted.
        assert_eq!(check(b"[123,-12,1.5]", s(3)), Ok(()));
        assert_eq!(check(b"1234", s(3)), lim("max_string", ""));
        assert_eq!(check(b"[-123]", s(3)), lim("max_string", "/0"));
        assert_eq!(check(b"{\"n\":1e+10}", s(5)), Ok(()));
        assert_eq!(check(b"{\"n\":1e+100}", s(5)), lim("max_string", "/n"));
        let big = vec![b'7'; 10_000];
        assert_eq!(whole(&big, L), Ok(()));
        assert_eq!(whole(&big, s(9_999)), lim("max_string", ""));
        // A long string over many pieces stops at the limit.
        let mut sc = Scanner::new(L);
        sc.feed(b"{\"k\":\"").unwrap();
        let piece = "aé".repeat(4096);
        let r = (0..100).try_for_each(|_| sc.feed(piece.as_bytes()));
        assert_eq!(r, lim("max_string", "/k"));
    }

    #[test]
    fn pointers_escape_and_truncate_keys() {
        let l = limits(5, 9, 9, 999);
        let doc = br#"{"a~b":{"c/d":[0,{"~/":[[[]]]}]}}"#;
        assert_eq!(check(doc, l), lim("max_depth", "/a~0b/c~1d/1/~0~1/0"));
        let doc = br#"{"a\/b\u00e9\ud83d\ude00\"~":[[]]}"#;
        assert_eq!(
            check(doc, limits(2, 9, 9, 99)),
            lim("max_depth", "/a~1bé😀\"~0/0")
        );
        let key = "k".repeat(300);
        let doc = format!("{{\"{key}\":[[1]]}}");
        assert_eq!(
            whole(doc.as_bytes(), limits(2, 9, 9, 999)),
            lim("max_depth", &format!("/{}/0", &key[..256]))
        );
        let doc = format!("{{\"{}\":[[1]]}}", "é".repeat(200));
        assert_eq!(
            whole(doc.as_bytes(), limits(2, 9, 9, 999)),
            lim("max_depth", &format!("/{}/0", "é".repeat(128)))
        );
    }

    #[test]
    fn deep_nesting_fails_fast() {
        let deep = vec![b'['; 100_000];
        assert_eq!(whole(&deep, L), lim("max_depth", &"/0".repeat(32)));
        let mut s = Scanner::new(L);
        assert_eq!(
            deep.chunks(7).try_for_each(|c| s.feed(c)),
            lim("max_depth", &"/0".repeat(32))
        );
        assert!(s.frames.len() <= 32);
    }

    /// Random documents, some of them damaged, against serde_json (which
    /// agrees except: it refuses an empty body, numbers out of f64's range and
    /// more than 128 levels, and accepts what we do only when parsing into a
    /// `Value`; `IgnoredAny` lets lone surrogates and invalid UTF-8 through).
    #[test]
    fn differential_against_serde_json() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        fn gen(out: &mut Vec<u8>, depth: usize, rnd: &mut dyn FnMut(usize) -> usize) {
            const ATOMS: &[&str] = &[
                "0", "-1", "3.25", "1e9", "-0.5E-3", "true", "false", "null", "12345678",
            ];
            const BITS: &str = r#"a|Zz|é|😀|€|~|/| |\"|\\|\/|\n|\u00e9|\ud83d\ude00|\uffff"#;
            let bits: Vec<&str> = BITS.split('|').collect();
            let ws = |out: &mut Vec<u8>, r: usize| {
                out.extend_from_slice([&b""[..], b" ", b"\n  "][r % 3])
            };
            match rnd(if depth > 6 { 2 } else { 4 }) {
                0 => out.extend_from_slice(ATOMS[rnd(ATOMS.len())].as_bytes()),
                1 => {
                    out.push(b'"');
                    (0..rnd(6))
                        .for_each(|_| out.extend_from_slice(bits[rnd(bits.len())].as_bytes()));
                    out.push(b'"');
                }
                k => {
                    out.push(if k == 2 { b'[' } else { b'{' });
                    for i in 0..rnd(4) {
                        if i > 0 {
                            out.push(b',');
                        }
                        ws(out, rnd(3));
                        if k == 3 {
                            gen_key(out, rnd);
                            out.push(b':');
                            ws(out, rnd(3));
                        }
                        gen(out, depth + 1, rnd);
                    }
                    out.push(if k == 2 { b']' } else { b'}' });
                }
            }
            fn gen_key(out: &mut Vec<u8>, rnd: &mut dyn FnMut(usize) -> usize) {
                out.extend_from_slice([&b"\"a\""[..], b"\"~1/\"", b"\"\\u0041\"", b"\"\""][rnd(4)]);
            }
        }
        const NOISE: &[u8] = b"\"\\{}[],:0-.eE+u D8\x01\xff\xed\xa0\x80\xc3 tn";
        let (mut checked_splits, mut seen) = (0, [0; 2]);
        for round in 0..30_000 {
            let mut doc = Vec::new();
            gen(&mut doc, 0, &mut rnd);
            for _ in 0..rnd(4) {
                let at = rnd(doc.len() + 1);
                match rnd(4) {
                    0 if at < doc.len() => doc[at] = NOISE[rnd(NOISE.len())],
                    1 if at < doc.len() => drop(doc.remove(at)),
                    2 => doc.truncate(at),
                    _ => doc.insert(at, NOISE[rnd(NOISE.len())]),
                }
            }
            let ours = whole(&doc, HUGE);
            let theirs =
                serde_json::from_slice::<serde_json::Value>(&doc).map_err(|e| e.to_string());
            let skip = doc.iter().all(|b| is_ws(*b))
                || theirs
                    .as_ref()
                    .is_err_and(|e| e.contains("out of range") || e.contains("recursion"));
            if !skip {
                seen[usize::from(ours.is_ok())] += 1;
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "{:?}: {ours:?} {theirs:?}",
                    String::from_utf8_lossy(&doc)
                );
            }
            if round % 50 == 0 && doc.len() < 200 {
                let _ = check(&doc, HUGE);
                checked_splits += 1;
            }
        }
        assert!(
            checked_splits > 100 && seen[0] > 5000 && seen[1] > 5000,
            "{seen:?}"
        );
    }
}
