//! The string formats a schema can ask for (`format`: `date-time`, `date`, `email`, `uri`), as
//! the platform's conversions accept them. Pure functions of a string.

/// A `format` keyword the checks understand (others are ignored, as JSON Schema allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DateTime,
    Date,
    Email,
    Uri,
}

impl Format {
    pub(crate) fn from_keyword(keyword: &str) -> Option<Format> {
        match keyword {
            "date-time" => Some(Format::DateTime),
            "date" => Some(Format::Date),
            "email" => Some(Format::Email),
            "uri" => Some(Format::Uri),
            _ => None,
        }
    }

    /// Whether the platform's conversion takes `s` as this format.
    pub fn accepts(self, s: &str) -> bool {
        match self {
            Format::DateTime => is_date_time(s),
            Format::Date => is_date(s),
            Format::Email => is_email(s),
            Format::Uri => is_uri(s),
        }
    }

    /// What a value that the format refuses is not, and what to send instead.
    pub fn refusal(self) -> &'static str {
        match self {
            Format::DateTime => {
                "is not a date-time: use ISO 8601, e.g. 2024-05-01T12:30:00Z (or a long in epoch milliseconds)"
            }
            Format::Date => "is not a date: use YYYY-MM-DD, e.g. 2024-05-01",
            Format::Email => "is not an email address (name@domain.tld)",
            Format::Uri => "is not a URI: it needs a scheme, e.g. https://example.com/x",
        }
    }
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

fn two(b: &[u8]) -> u32 {
    u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0')
}

/// A leading `YYYY-M[M]-D[D]` that is a real calendar day, and where it ends. Months and days
/// may have one digit (`1979-01-3`), as the platform's conversion accepts. The one reading of
/// such a date: the checks here and the mapping's conversions (`batchdrop-mapping`) use it.
pub fn date_prefix(b: &[u8]) -> Option<(chrono::NaiveDate, usize)> {
    if b.len() < 8 || !digits(&b[0..4]) || b[4] != b'-' {
        return None;
    }
    let number = |from: usize| -> Option<(u32, usize)> {
        let n = b[from..]
            .iter()
            .take(2)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 {
            return None;
        }
        let v = b[from..from + n]
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
        Some((v, from + n))
    };
    let (month, at) = number(5)?;
    if b.get(at) != Some(&b'-') {
        return None;
    }
    let (day, end) = number(at + 1)?;
    if b.get(end).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let year = two(&b[0..2]) * 100 + two(&b[2..4]);
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    Some((date, end))
}

/// `YYYY-MM-DD` (months and days may have one digit), a real calendar day.
pub fn is_date(s: &str) -> bool {
    date_prefix(s.as_bytes()).is_some_and(|(_, end)| end == s.len())
}

/// ISO 8601 date-time: a date (as [`is_date`]), then `THH:MM[:SS[.fff]]` with `Z`, an offset,
/// or none (a space may replace the `T`); a date alone converts too (midnight).
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let Some((_, d)) = date_prefix(b) else {
        return false;
    };
    if d == b.len() {
        return true;
    }
    if b.len() < d + 6 || !matches!(b[d], b'T' | b't' | b' ') {
        return false;
    }
    let t = &b[d + 1..];
    // HH:MM
    if !(digits(&t[0..2]) && t[2] == b':' && digits(&t[3..5])) {
        return false;
    }
    if two(&t[0..2]) > 23 || two(&t[3..5]) > 59 {
        return false;
    }
    let mut rest = &t[5..];
    if rest.first() == Some(&b':') {
        if rest.len() < 3 || !digits(&rest[1..3]) || two(&rest[1..3]) > 60 {
            return false;
        }
        rest = &rest[3..];
        if rest.first() == Some(&b'.') || rest.first() == Some(&b',') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            rest = &rest[1 + n..];
        }
    }
    match rest {
        [] | [b'Z'] | [b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] | [b'+' | b'-', h1, h2, m1, m2] => {
            let (h, m) = ([*h1, *h2], [*m1, *m2]);
            digits(&h) && digits(&m) && two(&h) <= 23 && two(&m) <= 59
        }
        [b'+' | b'-', h1, h2] => digits(&[*h1, *h2]) && two(&[*h1, *h2]) <= 23,
        _ => false,
    }
}

/// `local@domain.tld`, no spaces.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
}

/// `scheme:rest` (RFC 3986 scheme), no spaces.
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_formats() {
        for ok in [
            "2024-05-01T12:30:00Z",
            "2024-05-01T12:30Z",
            "2024-05-01 12:30:00",
            "2024-05-01T12:30:00.123456+05:30",
            "2024-05-01T12:30:00-0800",
            "2024-05-01",
            "1979-01-3",
            "1979-1-3T01:02:03Z",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        assert!(is_date("1979-01-3") && is_date("2024-2-29"));
        assert!(!is_date("2023-2-29") && !is_date("2023-02-290") && !is_date("2023--02"));
        for bad in [
            "2024-13-01T00:00:00Z",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:30:00+",
            "2024-05-01X12:30",
            "yesterday",
            "",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
        assert!(is_email("a.b+c@example.co.uk") && !is_email("a@b") && !is_email("a b@c.d"));
        assert!(is_uri("urn:isbn:1") && is_uri("https://x/y") && !is_uri("/rel") && !is_uri("x"));
    }
}
