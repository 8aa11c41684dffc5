//! Logs through `tracing`: human-readable by default, one JSON object per line
//! with `TOLLGATE_LOG_FORMAT=json`. The access log is one event per request on
//! target `tollgate::access`; it never carries credentials or query strings.
//!
//! Both go to stderr, coloured only when stderr is a terminal. Per-request
//! lines (the access log, and authentication refusals on `tollgate::auth`, at
//! info) are buffered (see [`LogWriter`]): written when 32 KiB have gathered,
//! every 100 ms, before any other log line, and when the process exits. Every
//! other line is written at once.

use parking_lot::Mutex;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

const ACCESS_TARGET: &str = "tollgate::access";
/// The installed subscriber writes [`JsonLines`]: the access log writes its
/// line itself ([`access`]).
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const AUTH_TARGET: &str = "tollgate::auth";

/// The log filter when `TOLLGATE_LOG` is unset.
pub const DEFAULT_FILTER: &str =
    "info,pingora_core=warn,pingora_proxy=warn,pingora_load_balancing=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(LogWriter);
    let installed = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.try_init()
    };
    if installed.is_ok() {
        JSON.store(json, std::sync::atomic::Ordering::Relaxed);
        start_flusher();
    }
}

/// Colour escape codes only on a terminal (SPEC §8): a file or a pipe gets
/// plain text. `NO_COLOR` (no-color.org) turns them off on a terminal too.
fn colour() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

// ---------------------------------------------------------------------------
// The writer

/// Access lines waiting to be written.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while writing to stderr, so that lines leave in the order they came.
static OUT: Mutex<()> = Mutex::new(());
const FLUSH_BYTES: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// stderr, with per-request lines buffered: the access log, and the info-level
/// refusals of `tollgate::auth` (expected traffic, one per refused request
/// under a credential-stuffing run). One `write(2)` per line was a tenth of
/// the access log's cost under load (`benches/load/run`); batched, a line
/// costs its formatting and a copy. What is buffered is lost only if the
/// process is killed (SIGKILL, abort): at most 100 ms or 32 KiB of lines.
/// Every other line (warnings, errors, reloads) is written at once, after the
/// buffered lines before it.
pub struct LogWriter;

pub struct LogLine {
    buffered: bool,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine { buffered: false }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogLine {
        let per_request = meta.target() == ACCESS_TARGET || meta.target() == AUTH_TARGET;
        LogLine {
            // Levels compare by verbosity: info, debug and trace, not warn or error.
            buffered: per_request && *meta.level() >= tracing::Level::INFO,
        }
    }
}

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = {
            let mut p = PENDING.lock();
            p.extend_from_slice(buf);
            p.len() >= FLUSH_BYTES
        };
        if !self.buffered || full {
            flush();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what is pending to stderr.
pub fn flush() {
    let _out = OUT.lock();
    let lines = std::mem::take(&mut *PENDING.lock());
    if !lines.is_empty() {
        // Nowhere to report a failed write to stderr.
        let _ = io::stderr().lock().write_all(&lines);
    }
}

fn start_flusher() {
    extern "C" fn at_exit() {
        flush();
    }
    // Pingora ends the process with `std::process::exit`, which runs this.
    // SAFETY: registers a plain `extern "C" fn` with no captured state.
    unsafe {
        libc::atexit(at_exit);
    }
    #[allow(clippy::disallowed_methods)] // its own flush thread, never a runtime thread
    let _ = std::thread::Builder::new()
        .name("tollgate-log".into())
        .spawn(|| loop {
            std::thread::sleep(FLUSH_EVERY);
            flush();
        });
}

// ---------------------------------------------------------------------------
// JSON lines

/// The JSON line format: `timestamp`, `level`, the event's fields (`message`
/// among them) and `target`, as tracing-subscriber's JSON format with
/// `flatten_event(true)` writes them, without its serde round trip (a third of
/// an access line's cost, measured in `benches/pipeline.rs`).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events bridged from the `log` crate (Pingora's) carry their real
        // target in `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, SystemTime::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut fields = JsonFields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        write_json_str(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            self.w.write_str(",\"")?;
            self.w.write_str(field.name())?;
            self.w.write_str("\":")?;
            value(self.w)
        })();
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_json_str(w, value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(JsonEscape(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscape(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what JSON strings cannot hold raw: quotes, backslashes, controls.
struct JsonEscape<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let short = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if short.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(short)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it:
/// `2026-11-25T13:16:49.123456Z`.
fn write_timestamp(w: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    if y > 9999 {
        return write!(
            w,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            d.subsec_micros()
        );
    }
    // Digits put in place: one per access line, `write!` cost more than the
    // rest of the line's numbers.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    for (range, n) in [
        (0..4, y as u64),
        (5..7, u64::from(m)),
        (8..10, u64::from(day)),
        (11..13, s / 3600),
        (14..16, s / 60 % 60),
        (17..19, s % 60),
        (20..26, u64::from(d.subsec_micros())),
    ] {
        let mut n = n;
        for c in b[range].iter_mut().rev() {
            *c = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    w.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Card numbers (PANs) masked to their last four digits, for anything that
/// reaches a log line (SPEC §8). A PAN is 13–19 Luhn-valid digits, written
/// together or in groups joined by single separators (`-`, `.`, space, also
/// percent-encoded: `%20`, `%2D`, `%2E`):
/// `4111111111111111`, `4111-1111-1111-1111`, `4111%201111%201111%201111`.
/// Within a chain of such groups every window of whole groups holding a
/// Luhn-valid 13–19 digits is masked, so a card written next to other numbers
/// (`/t/12 4111 1111 1111 1111`) is still caught; separators are kept. A
/// window of several groups that continues a word (a letter right before or
/// after it, as in a UUID) is not a card. A run of more than 19 digits is not
/// a card and ends a chain. Nothing is allocated when nothing matches.
pub fn mask_pans(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    // The groups of the current chain (byte ranges), newest last; only the
    // last `MAX_PAN` can share a window with the next group.
    let mut groups = [(0usize, 0usize); MAX_PAN];
    let mut len = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            // The hex digits of an escape (`%20`) are no group of their own.
            let escape = b[i] == b'%'
                && b.len() - i >= 3
                && b[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit);
            i += if escape { 3 } else { 1 };
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i - start > MAX_PAN {
            len = 0;
            continue;
        }
        // Does this group continue the chain (one separator after the last)?
        let continues = len > 0 && {
            let prev_end = groups[len - 1].1;
            is_separator(&b[prev_end..start])
        };
        if !continues {
            len = 0;
        }
        if len == MAX_PAN {
            groups.copy_within(1.., 0);
            len -= 1;
        }
        groups[len] = (start, i);
        len += 1;
        mask_windows_ending_here(b, &groups[..len], &mut out);
    }
    match out {
        // Only ASCII digits were replaced, with ASCII: still UTF-8.
        Some(o) => std::borrow::Cow::Owned(
            String::from_utf8(o).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
        ),
        None => std::borrow::Cow::Borrowed(s),
    }
}

/// What may stand between the digit groups of a card number: `-`, `.` or a
/// space, also percent-encoded (a path refused before normalisation is logged
/// as it came).
fn is_separator(between: &[u8]) -> bool {
    match between {
        [b'-' | b'.' | b' '] => true,
        [b'%', b'2', c] => matches!(c.to_ascii_uppercase(), b'0' | b'D' | b'E'),
        _ => false,
    }
}

/// A letter right before `at` (not one of an escape's hex digits, `%2D`).
fn letter_before(b: &[u8], at: usize) -> bool {
    let escape = at >= 3 && b[at - 3] == b'%' && b[at - 2].is_ascii_hexdigit();
    at > 0 && b[at - 1].is_ascii_alphabetic() && !escape
}

fn letter_after(b: &[u8], at: usize) -> bool {
    b.get(at).is_some_and(u8::is_ascii_alphabetic)
}

/// The most digits a card number has.
const MAX_PAN: usize = 19;

/// Checks every window of whole groups that ends with the last one (Luhn from
/// the right, as the check digit is last) and masks the valid ones.
fn mask_windows_ending_here(b: &[u8], groups: &[(usize, usize)], out: &mut Option<Vec<u8>>) {
    let mut digits = 0;
    let mut sum = 0;
    for (first, &(start, end)) in groups.iter().enumerate().rev() {
        for &d in b[start..end].iter().rev() {
            let mut v = u32::from(d - b'0');
            if digits % 2 == 1 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
            digits += 1;
        }
        if digits > MAX_PAN {
            return;
        }
        // Several groups must stand on their own: not part of a word such as a
        // UUID (`…-a716-446655440006`), whose digit runs are no card.
        let whole = first == groups.len() - 1
            || !(letter_before(b, start) || letter_after(b, groups[groups.len() - 1].1));
        if digits >= 13 && sum % 10 == 0 && whole {
            let o = out.get_or_insert_with(|| b.to_vec());
            // Every digit of the window but its last four.
            let mut keep = 4;
            for &(gs, ge) in groups[first..].iter().rev() {
                for c in o[gs..ge].iter_mut().rev() {
                    if keep > 0 {
                        keep -= 1;
                    } else {
                        *c = b'*';
                    }
                }
            }
        }
    }
}

pub struct Access<'a> {
    pub request_id: &'a str,
    /// The trace id (32 hex digits) with `[telemetry]`, else empty.
    pub trace_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: &'a str,
    pub bytes: u64,
    pub consumer: &'a str,
    pub client_ip: Option<IpAddr>,
    pub error: Option<&'a str>,
}

/// An address, or nothing: written without a `String` per request.
struct OptionalIp(Option<IpAddr>);

impl fmt::Display for OptionalIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

pub fn access(a: &Access<'_>) {
    if !tracing::enabled!(target: "tollgate::access", tracing::Level::INFO) {
        return;
    }
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        // The same line `JsonLines` writes for the event below, written
        // directly: tracing's field visitors and `fmt` machinery were two
        // thirds of the access log's cost (callgrind, `benches/load`).
        ACCESS_LINE.with_borrow_mut(|line| {
            line.clear();
            access_json(line, a, SystemTime::now());
            let _ = LogLine { buffered: true }.write(line.as_bytes());
        });
        return;
    }
    access_event(a);
}

/// The access line as a `tracing` event (the text format, and any subscriber
/// other than the JSON lines one).
fn access_event(a: &Access<'_>) {
    tracing::info!(
        target: "tollgate::access",
        request_id = a.request_id,
        trace_id = a.trace_id,
        route = a.route,
        method = %mask_pans(a.method),
        path = %mask_pans(a.path),
        status = a.status,
        duration_ms = a.duration_ms,
        upstream = a.upstream,
        bytes = a.bytes,
        consumer = a.consumer,
        client_ip = %OptionalIp(a.client_ip),
        error = a.error.unwrap_or(""),
        "access"
    );
}

thread_local! {
    /// Each worker's access line, reused (its capacity stays that of the
    /// longest line, at most a request head's size).
    static ACCESS_LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// An access line as [`JsonLines`] writes the `tollgate::access` event.
fn access_json(w: &mut String, a: &Access<'_>, now: SystemTime) {
    // Writing to a `String` cannot fail.
    w.push_str("{\"timestamp\":\"");
    let _ = write_timestamp(w, now);
    w.push_str("\",\"level\":\"INFO\",\"message\":\"access\",\"request_id\":");
    let _ = write_json_str(w, a.request_id);
    w.push_str(",\"trace_id\":");
    let _ = write_json_str(w, a.trace_id);
    w.push_str(",\"route\":");
    let _ = write_json_str(w, a.route);
    w.push_str(",\"method\":");
    let _ = write_json_str(w, &mask_pans(a.method));
    w.push_str(",\"path\":");
    let _ = write_json_str(w, &mask_pans(a.path));
    w.push_str(",\"status\":");
    push_u64(w, u64::from(a.status));
    w.push_str(",\"duration_ms\":");
    if a.duration_ms.is_finite() {
        let _ = write!(w, "{}", a.duration_ms);
    } else {
        w.push_str("null");
    }
    w.push_str(",\"upstream\":");
    let _ = write_json_str(w, a.upstream);
    w.push_str(",\"bytes\":");
    push_u64(w, a.bytes);
    w.push_str(",\"consumer\":");
    let _ = write_json_str(w, a.consumer);
    w.push_str(",\"client_ip\":\"");
    if let Some(ip) = a.client_ip {
        w.push_str(crate::util::IpText::new(ip).as_str());
    }
    w.push_str("\",\"error\":");
    let _ = write_json_str(w, a.error.unwrap_or(""));
    w.push_str(",\"target\":\"tollgate::access\"}\n");
}

fn push_u64(w: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    w.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

#[cfg(test)]
mod tests;
