//! Olla's units as its file and environment write them: Go durations (`30s`, `1h30m`,
//! `500ms`) and go-units byte sizes (`512k`, `100MB`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A Go duration in the file (`"30s"`, `"1h30m"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Go(pub(super) Duration);

impl Go {
    pub(super) const fn secs(s: u64) -> Go {
        Go(Duration::from_secs(s))
    }
}

impl<'de> Deserialize<'de> for Go {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Go, D::Error> {
        struct GoVisitor;
        impl Visitor<'_> for GoVisitor {
            type Value = Go;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as \"30s\", \"5m\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Go, E> {
                parse_duration(s).map(Go).map_err(E::custom)
            }
        }
        d.deserialize_str(GoVisitor)
    }
}

/// A Go duration (`time.ParseDuration`): numbers with units `ns`, `us` (`µs`), `ms`,
/// `s`, `m`, `h`, fractions allowed (`1.5h`); `0` alone needs no unit. Negative ones are
/// refused (no timeout of ringway's can be).
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a Go duration (such as \"30s\", \"5m\" or \"1h30m\")");
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("{s:?}: a duration must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| {
                format!("{s:?} is not a Go duration: a number needs a unit (\"{number}s\", \"{number}m\")", number = rest)
            })?;
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        // Digits beyond nanoseconds do not change the result.
        let fraction = &fraction[..fraction.len().min(18)];
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| bad())?
        };
        nanos = whole
            .checked_mul(per)
            .and_then(|n| n.checked_add(fraction * per / scale))
            .and_then(|n| nanos.checked_add(n))
            .filter(|&n| n <= u128::from(u64::MAX))
            .ok_or_else(|| format!("{s:?}: too long a duration"))?;
        rest = after;
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// A size as Olla's `OLLA_SERVER_MAX_*_SIZE` read it (go-units `RAMInBytes`): a number,
/// optionally with a fraction, then an optional `k`, `m`, `g`, `t` or `p` (powers of
/// 1024), `i` and `b`: `1048576`, `512k`, `100MB`, `1.5GiB`.
pub(super) fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite())?;
    let mut unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    if unit.ends_with('b') {
        unit.pop();
    }
    if unit.len() == 2 && unit.ends_with('i') {
        unit.pop();
    }
    let power = match unit.as_str() {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (text, ms) in [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("0s", 0),
            ("0", 0),
            ("1.5s", 1500),
            (".5m", 30_000),
            ("2h45m30.5s", 9_930_500),
            ("1500us", 1),
            ("+10s", 10_000),
        ] {
            assert_eq!(parse_duration(text).unwrap().as_millis(), ms, "{text}");
        }
        assert_eq!(parse_duration("1µs").unwrap(), Duration::from_micros(1));
        assert_eq!(parse_duration("3ns").unwrap(), Duration::from_nanos(3));
        for bad in [
            "",
            "10",
            "5x",
            "s",
            "-5s",
            "1.2.3s",
            "1e3s",
            "9999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        for (text, bytes) in [
            ("1048576", 1_048_576),
            ("512k", 524_288),
            ("100MB", 104_857_600),
            ("1.5GiB", 1_610_612_736),
            ("2 mb", 2_097_152),
        ] {
            assert_eq!(parse_byte_size(text), Some(bytes), "{text}");
        }
        for bad in ["", "x", "10 xb", "-1"] {
            assert_eq!(parse_byte_size(bad), None, "{bad}");
        }
    }
}
