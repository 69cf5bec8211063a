//! Durations and sizes as operators write them in the config: `"1h30m"`, `"250ms"`, `"1.5s"`;
//! `"64MiB"`, `"100GB"` or a plain integer of bytes.
//!
//! This module owns reading those two kinds of values (with `humantime` and `bytesize`) and
//! their upper bound for durations; which key takes which kind, defaults and limits per key
//! belong to `config`.

use std::time::Duration;

/// The longest duration any key may be set to. Longer is a typo, and a value near
/// `Duration::MAX` overflows where it is added to an instant.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// `"250ms"`, `"1.5s"`, `"5m"`, `"1h30m"`, `"2 days"`, `"0"` → Duration, at most
/// [`MAX_DURATION`]. A number without a unit is refused: `"5"` could mean seconds or minutes.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .ok()
        .or_else(|| parse_decimal_duration(text))
        .filter(|d| *d <= MAX_DURATION)
}

/// One decimal number and one unit (`"1.5s"`, `"0.5h"`), which humantime does not read.
fn parse_decimal_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// `"64MiB"`, `"100GB"`, `"1.5 GB"`, `"1000"` → bytes. Decimal units are powers of 1000 and
/// binary ones (`KiB`, `MiB`, `GiB`) powers of 1024, as the platform's limits are written.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(bytes) = text.parse::<u64>() {
        return Some(bytes);
    }
    text.parse::<bytesize::ByteSize>()
        .ok()
        .map(|size| size.as_u64())
}

/// A size key's value: an integer of bytes or a string with a unit, read (and refused, at the
/// key's line) while the TOML is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Size, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: an integer number of bytes, or a string such as \"64MiB\" or \"100GB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<Size, E> {
                Ok(Size(bytes))
            }
            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<Size, E> {
                u64::try_from(bytes)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{bytes} is negative: a size is at least 0")))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Size, E> {
                parse_size(text).map(Size).ok_or_else(|| {
                    E::custom(format!(
                        "\"{text}\" is not a size: write bytes as an integer, or a number and a unit such as \"64MiB\", \"500MB\" or \"100GB\""
                    ))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m 5s"), Some(Duration::from_secs(5405)));
        assert_eq!(
            parse_duration("2days"),
            Some(Duration::from_secs(2 * 86400))
        );
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("365d"), Some(MAX_DURATION));
        // Beyond what a Duration holds, and merely absurd.
        assert_eq!(parse_duration("99999999999999999999999h"), None);
        assert_eq!(parse_duration("366d"), None);
        assert_eq!(parse_duration(&format!("{}s", u64::MAX)), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("64MiB"), Some(64 * 1024 * 1024));
        assert_eq!(parse_size("64 MiB"), Some(64 * 1024 * 1024));
        assert_eq!(parse_size("100GB"), Some(100_000_000_000));
        assert_eq!(parse_size("500 kB"), Some(500_000));
        assert_eq!(parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-5MB"), None);
    }

    #[test]
    fn a_size_key_takes_integers_and_units_and_names_a_bad_value() {
        #[derive(serde::Deserialize)]
        struct Keys {
            a: Size,
            b: Size,
        }
        let keys: Keys = toml::from_str("a = 42\nb = \"2KiB\"").unwrap();
        assert_eq!((keys.a, keys.b), (Size(42), Size(2048)));
        let err = toml::from_str::<Keys>("a = 1\nb = \"2 parsecs\"")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("\"2 parsecs\" is not a size"),
            "{err}"
        );
        let err = toml::from_str::<Keys>("a = -1\nb = 1")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("negative"), "{err}");
    }
}
