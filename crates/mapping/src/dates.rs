//! Dates as Data Prep reads and writes them: Java date-time patterns (`yyyy-MM-dd HH:mm:ss`,
//! `dd-MMM-yyyy`, `yyyy-MM-dd'T'HH:mm:ss.SSSX`) for `date()`, `format()` and `dformat()`, ISO
//! 8601 text, and the list of formats Data Prep tries when none is given (its data-handling
//! guide, "Date function conversions").
//!
//! A date without a time is midnight; a date-time without an offset is UTC. This module only
//! parses and prints; which value becomes which is decided by `functions/` and `xdm/`.

use std::sync::OnceLock;

use chrono::format::{Parsed, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};

/// A Java pattern, translated for chrono.
#[derive(Debug, Clone)]
pub struct JavaPattern {
    /// As written (for messages).
    pub source: String,
    /// For parsing.
    parse: String,
    /// For printing: strftime text, with ISO offsets (`X`) printed apart because they print
    /// `Z` for UTC.
    print: Vec<Print>,
}

#[derive(Debug, Clone)]
enum Print {
    Strftime(String),
    /// `X` (hours, plus minutes when not zero), `XX` (`+0800`), `XXX` (`+08:00`).
    IsoOffset(usize),
}

impl JavaPattern {
    /// Translates a pattern; letters that have no equivalent here are refused by name.
    pub fn compile(pattern: &str) -> Result<JavaPattern, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut parse = String::new();
        let mut print = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                // 'literal', and '' for a quote.
                if chars.get(i + 1) == Some(&'\'') {
                    push_literal(&mut parse, &mut text, '\'');
                    i += 2;
                    continue;
                }
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(format!("date pattern {pattern:?} has an unclosed quote"));
                        }
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            push_literal(&mut parse, &mut text, '\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&lit) => {
                            push_literal(&mut parse, &mut text, lit);
                            j += 1;
                        }
                    }
                }
                i = j + 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                push_literal(&mut parse, &mut text, c);
                i += 1;
                continue;
            }
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            i += n;
            let spec: &str = match (c, n) {
                ('y', 2) => "%y",
                ('y', _) => "%Y",
                ('u', _) => "%u",
                ('M' | 'L', 1) => "%-m",
                ('M' | 'L', 2) => "%m",
                ('M' | 'L', 3) => "%b",
                ('M' | 'L', _) => "%B",
                ('d', 1) => "%-d",
                ('d', _) => "%d",
                ('D', _) => "%j",
                ('H', 1) => "%-H",
                ('H', _) => "%H",
                ('h', 1) => "%-I",
                ('h', _) => "%I",
                ('m', 1) => "%-M",
                ('m', _) => "%M",
                ('s', 1) => "%-S",
                ('s', _) => "%S",
                ('S', 3) => "%3f",
                ('S', 6) => "%6f",
                ('S', 9) => "%9f",
                ('S', _) => {
                    return Err(format!(
                        "date pattern {pattern:?}: {n} S letters are not supported; write SSS (milliseconds), SSSSSS or SSSSSSSSS"
                    ));
                }
                ('a', _) => "%p",
                ('E', 1..=3) => "%a",
                ('E', _) => "%A",
                ('Z', _) => "%z",
                ('X' | 'x', 1..=3) => {
                    parse.push_str("%#z");
                    if !text.is_empty() {
                        print.push(Print::Strftime(std::mem::take(&mut text)));
                    }
                    print.push(Print::IsoOffset(n));
                    continue;
                }
                _ => {
                    return Err(format!(
                        "date pattern {pattern:?}: the letter {c:?} ({}) is not supported; supported letters: y M d D H h m s S a E u Z X, and 'quoted text'",
                        letter_meaning(c)
                    ));
                }
            };
            // Parsing is lenient about padding (and `Z` offsets with or without a colon).
            parse.push_str(match spec {
                "%-m" => "%m",
                "%-d" => "%d",
                "%-H" => "%H",
                "%-I" => "%I",
                "%-M" => "%M",
                "%-S" => "%S",
                "%z" => "%#z",
                other => other,
            });
            text.push_str(spec);
        }
        if !text.is_empty() {
            print.push(Print::Strftime(text));
        }
        Ok(JavaPattern {
            source: pattern.to_owned(),
            parse,
            print,
        })
    }

    /// Reads a date-time written in this pattern (midnight when it has no time, UTC when it
    /// has no offset).
    pub fn parse(&self, text: &str) -> Result<DateTime<FixedOffset>, String> {
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text.trim(), StrftimeItems::new(&self.parse)).map_err(
            |e| {
                format!(
                    "{text:?} does not match the date pattern {:?} ({e})",
                    self.source
                )
            },
        )?;
        assemble(&parsed).ok_or_else(|| {
            format!(
                "{text:?} matches the date pattern {:?} but is not a whole date (a year, month and day are needed)",
                self.source
            )
        })
    }

    /// Prints a date-time in this pattern, in its own offset.
    pub fn format(&self, at: &DateTime<FixedOffset>) -> String {
        let mut out = String::new();
        for piece in &self.print {
            match piece {
                Print::Strftime(spec) => {
                    use std::fmt::Write;
                    let _ = write!(out, "{}", at.format(spec));
                }
                Print::IsoOffset(n) => {
                    let secs = at.offset().local_minus_utc();
                    if secs == 0 {
                        out.push('Z');
                        continue;
                    }
                    let sign = if secs < 0 { '-' } else { '+' };
                    let (h, m) = (secs.abs() / 3600, secs.abs() % 3600 / 60);
                    match n {
                        1 if m == 0 => out.push_str(&format!("{sign}{h:02}")),
                        1 | 2 => out.push_str(&format!("{sign}{h:02}{m:02}")),
                        _ => out.push_str(&format!("{sign}{h:02}:{m:02}")),
                    }
                }
            }
        }
        out
    }
}

fn push_literal(parse: &mut String, print: &mut String, c: char) {
    if c == '%' {
        parse.push_str("%%");
        print.push_str("%%");
    } else {
        parse.push(c);
        print.push(c);
    }
}

fn letter_meaning(c: char) -> &'static str {
    match c {
        'G' => "era",
        'Y' => "week-based year",
        'w' | 'W' => "week",
        'F' => "day of week in month",
        'k' | 'K' => "hour variant",
        'z' | 'V' | 'O' => "time-zone name",
        'Q' | 'q' => "quarter",
        _ => "no meaning in date patterns",
    }
}

/// A date-time from parsed fields: the date is needed; time and offset default.
fn assemble(parsed: &Parsed) -> Option<DateTime<FixedOffset>> {
    let date = parsed.to_naive_date().ok()?;
    let time = if parsed.hour_div_12().is_none() && parsed.hour_mod_12().is_none() {
        NaiveTime::MIN
    } else {
        parsed.to_naive_time().ok()?
    };
    let offset = FixedOffset::east_opt(parsed.offset().unwrap_or(0))?;
    offset
        .from_local_datetime(&NaiveDateTime::new(date, time))
        .single()
}

/// The formats Data Prep tries, in its order, when a date has no format (after ISO 8601).
const DEFAULT_PATTERNS: [&str; 18] = [
    "yyyy-MM-dd HH:mm:ssZ",
    "yyyy-MM-dd HH:mm:ss.SSSZ",
    "yyyy-MM-dd HH:mm:ss.SSS",
    "yyyy-MM-dd'T'HH:mm:ss.SSSX",
    "yyyy-MM-dd'T'HH:mm:ss'Z'",
    "yyyy-MM-dd",
    "yyyy/MM/dd",
    "yyyy.MM.dd",
    "yyyy-MMM-dd",
    "yyyyMMdd",
    "MM-dd-yyyy",
    "MMddyyyy",
    "M/dd/yyyy",
    "dd.M.yyyy",
    "M/dd/yyyy hh:mm:ss a",
    "dd.M.yyyy hh:mm:ss a",
    "dd.MMM.yyyy",
    "dd-MMM-yyyy",
];

fn default_patterns() -> &'static [JavaPattern] {
    static PATTERNS: OnceLock<Vec<JavaPattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        DEFAULT_PATTERNS
            .iter()
            .map(|p| JavaPattern::compile(p).expect("the built-in date patterns translate"))
            .collect()
    })
}

/// A date-time from text without a given format: ISO 8601 first, then Data Prep's list.
pub fn parse_any(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    parse_iso(text).or_else(|| {
        default_patterns()
            .iter()
            .find_map(|pattern| pattern.parse(text).ok())
    })
}

/// ISO 8601: `YYYY-M[M]-D[D]` (a real day), optionally `T` (or a space) and
/// `HH:MM[:SS[.fraction]]`, then `Z`, `±HH`, `±HHMM`, `±HH:MM` or nothing (UTC).
pub fn parse_iso(text: &str) -> Option<DateTime<FixedOffset>> {
    let bytes = text.as_bytes();
    let (date, end) = batchdrop_xdm::date_prefix(bytes)?;
    let utc = FixedOffset::east_opt(0)?;
    if end == bytes.len() {
        return utc
            .from_local_datetime(&date.and_time(NaiveTime::MIN))
            .single();
    }
    if !matches!(bytes[end], b'T' | b't' | b' ') {
        return None;
    }
    let mut rest = &bytes[end + 1..];
    let hour = two_digits(rest)?;
    if rest.get(2) != Some(&b':') {
        return None;
    }
    let minute = two_digits(&rest[3..])?;
    rest = &rest[5..];
    let mut second = 0;
    let mut nanos = 0u32;
    if rest.first() == Some(&b':') {
        second = two_digits(&rest[1..])?;
        rest = &rest[3..];
        if matches!(rest.first(), Some(b'.' | b',')) {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for (i, d) in rest[1..=digits].iter().enumerate() {
                if i < 9 {
                    nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
                }
            }
            rest = &rest[1 + digits..];
        }
    }
    let offset_secs = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let h = two_digits(tail)?;
            let m = match &tail[2..] {
                [] => 0,
                [b':', m @ ..] | m if m.len() == 2 => two_digits(m)?,
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second.min(59), nanos)?;
    FixedOffset::east_opt(offset_secs)?
        .from_local_datetime(&date.and_time(time))
        .single()
}

/// `YYYY-M[M]-D[D]` exactly (a real calendar day).
pub fn parse_iso_date(text: &str) -> Option<NaiveDate> {
    match batchdrop_xdm::date_prefix(text.trim().as_bytes()) {
        Some((date, end)) if end == text.trim().len() => Some(date),
        _ => None,
    }
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [a, c, ..] if a.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(c - b'0'))
        }
        _ => None,
    }
}

/// Epoch milliseconds as a UTC date-time.
pub fn from_epoch_millis(ms: i64) -> Option<DateTime<FixedOffset>> {
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&chrono::Utc.fix()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    #[test]
    fn java_patterns_parse_like_data_prep() {
        let p = JavaPattern::compile("yyyy-MM-dd HH:mm").unwrap();
        assert_eq!(
            p.parse("2019-10-23 11:24").unwrap(),
            at("2019-10-23T11:24:00Z")
        );
        let p = JavaPattern::compile("dd-MMM-yyyy").unwrap();
        assert_eq!(p.parse("05-Mar-2021").unwrap(), at("2021-03-05T00:00:00Z"));
        let p = JavaPattern::compile("yyyy-MM-dd'T'HH:mm:ss.SSSX").unwrap();
        assert_eq!(
            p.parse("2019-10-23T11:24:35.123-08:00").unwrap(),
            at("2019-10-23T11:24:35.123-08:00")
        );
        assert_eq!(
            p.parse("2019-10-23T11:24:35.000Z").unwrap(),
            at("2019-10-23T11:24:35Z")
        );
        let p = JavaPattern::compile("M/dd/yyyy hh:mm:ss a").unwrap();
        assert_eq!(
            p.parse("7/04/2020 01:02:03 PM").unwrap(),
            at("2020-07-04T13:02:03Z")
        );
        let p = JavaPattern::compile("yyyy-MM-dd").unwrap();
        assert_eq!(p.parse("1979-01-3").unwrap(), at("1979-01-03T00:00:00Z"));
        assert!(p.parse("December 31st, 2020").is_err());
        assert!(p.parse("2021-02-30").is_err());
    }

    #[test]
    fn java_patterns_print_like_data_prep() {
        let t = at("2019-10-23T11:24:35Z");
        assert_eq!(
            JavaPattern::compile("yyyy-MM-dd'T'HH:mm:ss.SSSX")
                .unwrap()
                .format(&t),
            "2019-10-23T11:24:35.000Z"
        );
        assert_eq!(
            JavaPattern::compile("yyyy-MM-dd HH:mm:ss")
                .unwrap()
                .format(&t),
            "2019-10-23 11:24:35"
        );
        let paris = at("2019-10-23T13:24:35+02:00");
        assert_eq!(
            JavaPattern::compile("dd MMM yy, h:mm a XXX 'o''clock' 100%")
                .unwrap()
                .format(&paris),
            "23 Oct 19, 1:24 PM +02:00 o'clock 100%"
        );
        assert_eq!(
            JavaPattern::compile("EEEE d MMMM yyyy Z")
                .unwrap()
                .format(&paris),
            "Wednesday 23 October 2019 +0200"
        );
    }

    #[test]
    fn unsupported_letters_are_named() {
        let e = JavaPattern::compile("yyyy-ww").unwrap_err();
        assert!(e.contains("'w'") && e.contains("week"), "{e}");
        let e = JavaPattern::compile("HH:mm zzz").unwrap_err();
        assert!(e.contains("'z'"), "{e}");
        assert!(JavaPattern::compile("yyyy-MM-dd'T").is_err());
        assert!(JavaPattern::compile("ss.SS").unwrap_err().contains("SSS"));
    }

    #[test]
    fn text_without_a_format_tries_iso_then_the_data_prep_list() {
        assert_eq!(
            parse_any("2019-10-23T11:24:00Z").unwrap(),
            at("2019-10-23T11:24:00Z")
        );
        assert_eq!(
            parse_any("2019-10-23 11:24:00").unwrap(),
            at("2019-10-23T11:24:00Z")
        );
        assert_eq!(
            parse_any("2024-05-01T12:30:00.5+05:30").unwrap(),
            at("2024-05-01T12:30:00.5+05:30")
        );
        assert_eq!(parse_any("2019/10/23").unwrap(), at("2019-10-23T00:00:00Z"));
        assert_eq!(parse_any("20191023").unwrap(), at("2019-10-23T00:00:00Z"));
        assert_eq!(parse_any("10-23-2019").unwrap(), at("2019-10-23T00:00:00Z"));
        assert_eq!(
            parse_any("23-Oct-2019").unwrap(),
            at("2019-10-23T00:00:00Z")
        );
        assert_eq!(
            parse_any("2019-10-23 11:24:00-0800").unwrap(),
            at("2019-10-23T11:24:00-08:00")
        );
        assert_eq!(parse_any("yesterday"), None);
        assert_eq!(parse_any("2019-13-01"), None);
    }

    #[test]
    fn iso_dates_allow_one_digit_months_and_days() {
        assert_eq!(
            parse_iso_date("1979-01-3"),
            NaiveDate::from_ymd_opt(1979, 1, 3)
        );
        assert_eq!(parse_iso_date("2023-2-29"), None);
        assert_eq!(parse_iso_date("2023-02-290"), None);
        assert!(parse_iso("2024-05-01T25:00:00Z").is_none());
        assert!(parse_iso("2024-05-01T12:30:00+").is_none());
        assert_eq!(
            parse_iso("1979-1-3T01:02:03Z").unwrap(),
            at("1979-01-03T01:02:03Z")
        );
        assert_eq!(
            from_epoch_millis(1571829875000).unwrap(),
            at("2019-10-23T11:24:35Z")
        );
    }
}
