//! The units of SPEC §2: durations, sizes and rates, each parsed from the string a
//! user writes and kept with that string so errors and hashes can show it.

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
}
