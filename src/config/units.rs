//! The units of SPEC §2 (durations, sizes and rates) and the other closed sets a
//! value is written in (methods, hash keys, retry conditions, version sources,
//! header predicates), each parsed once from the string a user writes: a bad value
//! fails deserialisation with a message, located at its key like any other error,
//! and the runtime uses the parsed value as it is.

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written as `"250ms"`, `"5s"`, `"2m"`, `"1h"` or `"1d"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    // A bare number is ambiguous (seconds? milliseconds?): refuse it.
    if t.is_empty() || t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {s:?}: write a number with a unit, e.g. \"250ms\", \"5s\", \"2m\", \"1h\", \"1d\""
        ));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "invalid duration {s:?} ({e}): write e.g. \"250ms\", \"5s\", \"2m\", \"1h\", \"1d\""
        )
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// A size in bytes written as `"512B"`, `"64KiB"`, `"10MiB"` or `"1GiB"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Size(pub u64);

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("invalid size {s:?}: write a unit, e.g. \"512B\", \"64KiB\", \"10MiB\", \"1GiB\"")
    })?;
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {s:?}: the unit must be B, KiB, MiB or GiB"
            ))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a whole number before the unit"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_size(&s).map(Size).map_err(de::Error::custom)
    }
}

/// A rate written as `"100/s"`, `"6000/min"`, `"50000/h"` or `"1000000/d"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl Rate {
    /// Time between two admitted events at this rate (GCRA's emission interval).
    pub fn interval(&self) -> Duration {
        self.per / (self.count.max(1) as u32).max(1)
    }
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || {
        format!(
            "invalid rate {s:?}: write e.g. \"100/s\", \"6000/min\", \"50000/h\", \"1000000/d\""
        )
    };
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 || count > u32::MAX as u64 {
        return Err(format!(
            "invalid rate {s:?}: the count must be between 1 and {}",
            u32::MAX
        ));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86400),
        _ => return Err(bad()),
    };
    Ok(Rate { count, per })
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rate(&s).map_err(de::Error::custom)
    }
}

/// A TOML date or date-time as a Unix timestamp (a bare date is midnight UTC).
pub fn datetime_to_unix(d: &toml::value::Datetime) -> Result<i64, String> {
    let date = d.date.ok_or("expected a date, e.g. 2026-01-01")?;
    let month = time::Month::try_from(date.month).map_err(|e| e.to_string())?;
    let day = time::Date::from_calendar_date(date.year as i32, month, date.day)
        .map_err(|e| e.to_string())?;
    let t = d
        .time
        .map(|t| time::Time::from_hms(t.hour, t.minute, t.second))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or(time::Time::MIDNIGHT);
    let offset_secs = match d.offset {
        Some(toml::value::Offset::Custom { minutes }) => minutes as i64 * 60,
        _ => 0,
    };
    Ok(time::PrimitiveDateTime::new(day, t)
        .assume_utc()
        .unix_timestamp()
        - offset_secs)
}

/// An HTTP method as the config writes it: a valid method token with no
/// lower-case letters (`"GET"`, `"PURGE"`; not `"get"`). Methods are
/// case-sensitive (RFC 9110 §9.1), so `"get"` would never match a request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Method(pub http::Method);

impl Method {
    pub fn parse(s: &str) -> Result<Method, String> {
        match http::Method::from_bytes(s.as_bytes()) {
            Ok(m) if !s.chars().any(|c| c.is_ascii_lowercase()) => Ok(Method(m)),
            _ => Err(format!("invalid method {s:?} (write it in upper case)")),
        }
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Method::parse(&s).map_err(de::Error::custom)
    }
}

/// An upstream's `hash_key` (`balance = "consistent_hash"`): what a request is
/// hashed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `header:NAME`
    Header(http::HeaderName),
    /// `ip`
    Ip,
    /// `path`
    Path,
    /// `param:NAME`, a `{NAME}` captured by the route's path.
    Param(String),
}

impl HashKey {
    pub fn parse(k: &str) -> Result<HashKey, String> {
        let key = match k {
            "ip" => Some(HashKey::Ip),
            "path" => Some(HashKey::Path),
            _ => {
                if let Some(h) = k.strip_prefix("header:") {
                    http::HeaderName::try_from(h).ok().map(HashKey::Header)
                } else {
                    k.strip_prefix("param:")
                        .filter(|p| !p.is_empty())
                        .map(|p| HashKey::Param(p.to_string()))
                }
            }
        };
        key.ok_or_else(|| {
            format!(
                "invalid hash_key {k:?}: expected \"header:NAME\", \"ip\", \"path\" or \"param:NAME\""
            )
        })
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HashKey::parse(&s).map_err(de::Error::custom)
    }
}

/// One entry of an upstream's `retry.on`: when a failed try is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// `connect_error`
    ConnectError,
    /// `timeout`
    Timeout,
    /// A 5xx status written as a string, e.g. `"502"`.
    Status(u16),
}

impl RetryOn {
    pub fn parse(on: &str) -> Result<RetryOn, String> {
        match on {
            "connect_error" => Ok(RetryOn::ConnectError),
            "timeout" => Ok(RetryOn::Timeout),
            _ => match on.parse::<u16>() {
                Ok(s) if (500..600).contains(&s) => Ok(RetryOn::Status(s)),
                _ => Err(format!(
                    "invalid retry condition {on:?}: expected \"connect_error\", \"timeout\" or a 5xx status like \"502\""
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RetryOn::parse(&s).map_err(de::Error::custom)
    }
}

/// One entry of `[api_versions] sources`: where a request's version is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// `path`: the first path segment (`/v2/...`).
    Path,
    /// `header:NAME`
    Header(http::HeaderName),
    /// `query:NAME`
    Query(String),
}

impl VersionSource {
    pub fn parse(s: &str) -> Result<VersionSource, String> {
        let src = if s == "path" {
            Some(VersionSource::Path)
        } else if let Some(h) = s.strip_prefix("header:") {
            http::HeaderName::try_from(h)
                .ok()
                .map(VersionSource::Header)
        } else {
            s.strip_prefix("query:")
                .filter(|q| !q.is_empty())
                .map(|q| VersionSource::Query(q.to_string()))
        };
        src.ok_or_else(|| {
            format!(
                "invalid version source {s:?}: expected \"path\", \"header:NAME\" or \"query:NAME\""
            )
        })
    }
}

impl<'de> Deserialize<'de> for VersionSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VersionSource::parse(&s).map_err(de::Error::custom)
    }
}

/// A route's `headers = { NAME = "value" }`: exact-value predicates, each a valid
/// header name with a valid header value, in the order of their names as written
/// (a TOML table's order is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderPredicates(pub Vec<(http::HeaderName, String)>);

impl<'de> Deserialize<'de> for HeaderPredicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads one value knowing its name, so that a bad name is reported at
        /// `headers.NAME` too (an error raised after the value would name only
        /// `headers`).
        struct Predicate<'a>(&'a str);
        impl<'de> de::DeserializeSeed<'de> for Predicate<'_> {
            type Value = (http::HeaderName, String);
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                let value = String::deserialize(d)?;
                let name = http::HeaderName::try_from(self.0)
                    .map_err(|_| de::Error::custom(format!("invalid header name {:?}", self.0)))?;
                if http::HeaderValue::try_from(value.as_str()).is_err() {
                    return Err(de::Error::custom("invalid header value"));
                }
                Ok((name, value))
            }
        }
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = HeaderPredicates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, (http::HeaderName, String))> = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    let p = m.next_value_seed(Predicate(&k))?;
                    out.push((k, p));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(HeaderPredicates(out.into_iter().map(|(_, p)| p).collect()))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("10").is_err());
        assert!(parse_size("10MB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn rates() {
        let r = parse_rate("100/s").unwrap();
        assert_eq!((r.count, r.per), (100, Duration::from_secs(1)));
        assert_eq!(r.interval(), Duration::from_millis(10));
        assert_eq!(parse_rate("6000/min").unwrap().per, Duration::from_secs(60));
        assert_eq!(parse_rate("50000/h").unwrap().count, 50000);
        assert_eq!(
            parse_rate("1000000/d").unwrap().per,
            Duration::from_secs(86400)
        );
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10/week").is_err());
        assert!(parse_rate("ten/s").is_err());
    }

    #[test]
    fn methods_are_tokens_without_lower_case() {
        assert_eq!(Method::parse("GET").unwrap().0, http::Method::GET);
        assert_eq!(Method::parse("PURGE").unwrap().as_str(), "PURGE");
        for bad in ["get", "Get", "purge", "BAD METHOD", "", "GET,POST"] {
            assert_eq!(
                Method::parse(bad).unwrap_err(),
                format!("invalid method {bad:?} (write it in upper case)")
            );
        }
    }

    #[test]
    fn hash_keys() {
        assert_eq!(HashKey::parse("ip"), Ok(HashKey::Ip));
        assert_eq!(HashKey::parse("path"), Ok(HashKey::Path));
        assert_eq!(
            HashKey::parse("header:X-Account-Id"),
            Ok(HashKey::Header(http::HeaderName::from_static(
                "x-account-id"
            )))
        );
        assert_eq!(HashKey::parse("param:id"), Ok(HashKey::Param("id".into())));
        for bad in ["", "IP", "param:", "header:", "header:bad name", "cookie:x"] {
            assert!(HashKey::parse(bad)
                .unwrap_err()
                .contains("invalid hash_key"));
        }
    }

    #[test]
    fn retry_conditions() {
        assert_eq!(RetryOn::parse("connect_error"), Ok(RetryOn::ConnectError));
        assert_eq!(RetryOn::parse("timeout"), Ok(RetryOn::Timeout));
        assert_eq!(RetryOn::parse("502"), Ok(RetryOn::Status(502)));
        assert_eq!(RetryOn::parse("599"), Ok(RetryOn::Status(599)));
        for bad in ["404", "600", "5xx", "reset", "", "-502"] {
            assert!(RetryOn::parse(bad)
                .unwrap_err()
                .contains("invalid retry condition"));
        }
    }

    #[test]
    fn version_sources() {
        assert_eq!(VersionSource::parse("path"), Ok(VersionSource::Path));
        assert_eq!(
            VersionSource::parse("header:API-Version"),
            Ok(VersionSource::Header(http::HeaderName::from_static(
                "api-version"
            )))
        );
        assert_eq!(
            VersionSource::parse("query:v"),
            Ok(VersionSource::Query("v".into()))
        );
        for bad in ["", "Path", "query:", "header:bad name", "cookie:v"] {
            assert!(VersionSource::parse(bad)
                .unwrap_err()
                .contains("invalid version source"));
        }
    }

    #[test]
    fn header_predicates_keep_the_written_names_order() {
        #[derive(Deserialize)]
        struct T {
            headers: HeaderPredicates,
        }
        let t: T = toml::from_str("headers = { x-b = \"2\", X-A = \"1\" }").unwrap();
        let names: Vec<&str> = t.headers.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        assert_eq!(t.headers.0[0].1, "1");
        let bad = toml::from_str::<T>("headers = { \"bad name\" = \"1\" }");
        assert!(bad.err().unwrap().message().contains("invalid header name"));
        let bad = toml::from_str::<T>("headers = { x-a = \"a\\u0001b\" }");
        assert!(bad
            .err()
            .unwrap()
            .message()
            .contains("invalid header value"));
    }
}

/// An address range written `"10.0.0.0/8"`, or one address (`"192.0.2.1"`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        super::validate_helpers::parse_cidr(&s)
            .map(Cidr)
            .map_err(de::Error::custom)
    }
}

/// Single-value checks made while a value is read (`#[serde(deserialize_with)]`),
/// so that a bad value is reported at its key with the parse errors and
/// `validate.rs` keeps only what relates several values.
pub mod checked {
    use super::{Dur, Size};
    use serde::{de, Deserialize, Deserializer};

    /// A duration longer than zero.
    pub fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let v = Dur::deserialize(d)?;
        if v.0.is_zero() {
            return Err(de::Error::custom("must be greater than zero"));
        }
        Ok(v)
    }

    /// A size larger than zero.
    pub fn nonzero_size<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        let v = Size::deserialize(d)?;
        if v.0 == 0 {
            return Err(de::Error::custom("must be greater than zero"));
        }
        Ok(v)
    }

    /// A header section limit of at least 1KiB.
    pub fn header_size<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        let v = Size::deserialize(d)?;
        if v.0 < 1024 {
            return Err(de::Error::custom("must be at least 1KiB"));
        }
        Ok(v)
    }

    /// A count of at least 1.
    pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let v = usize::deserialize(d)?;
        if v == 0 {
            return Err(de::Error::custom("must be at least 1"));
        }
        Ok(v)
    }

    /// Retry attempts: 1 to 10.
    pub fn attempts<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let v = usize::deserialize(d)?;
        if !(1..=10).contains(&v) {
            return Err(de::Error::custom("must be between 1 and 10"));
        }
        Ok(v)
    }
}
