//! The parts of a request's URL and headers that are text rules: percent-encoding of ids and
//! file paths (sub-folders kept, `.` and `..` refused), `Content-Range` of a chunk, and the
//! received prefix a `Range` answer tells.
//!
//! This module must not send anything.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is encoded, in path segments and query
/// values alike: names with spaces, `%`, `#`, `?`, `+`, `=` or non-ASCII then survive intact.
pub(super) const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment (an id), percent-encoded.
pub(super) fn segment(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// Each `/`-separated segment of `file_path` percent-encoded; the slashes are kept, so
/// sub-folders stay sub-folders. Empty, `.` and `..` segments are refused before sending:
/// URL normalisation would silently change such a path (even encoded, `%2E%2E` is `..`).
pub(crate) fn encode_file_path(file_path: &str) -> Result<String, String> {
    if file_path.is_empty() {
        return Err("the file path is empty".to_string());
    }
    let mut out = Vec::new();
    for seg in file_path.split('/') {
        match seg {
            "" => return Err(format!("file path {file_path:?} has an empty segment")),
            "." | ".." => {
                return Err(format!("file path {file_path:?} has a {seg:?} segment"));
            }
            _ => out.push(segment(seg)),
        }
    }
    Ok(out.join("/"))
}

/// `bytes {start}-{end}/{total}` with `end` inclusive.
pub(crate) fn content_range(start: u64, len: u64, total: u64) -> Result<String, String> {
    let end = start
        .checked_add(len)
        .filter(|&end| len > 0 && end <= total)
        .ok_or_else(|| format!("chunk {start}+{len} does not fit in a file of {total} bytes"))?;
    Ok(format!("bytes {start}-{}/{total}", end - 1))
}

/// `bytes=0-{n-1}` → n. Only a range starting at 0 makes sense: it is the received prefix.
pub(crate) fn received_from_range(header: &str) -> Result<u64, String> {
    let bad = || format!("unexpected Range header {header:?} (want bytes=0-N)");
    let h = header.trim();
    let spec = h
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes="))
        .map(|_| &h[6..])
        .ok_or_else(bad)?;
    // Several ranges ("0-99,200-299") can only mean the prefix is the first one.
    let first = spec.split(',').next().unwrap_or("").trim();
    let (from, to) = first.split_once('-').ok_or_else(bad)?;
    if from.trim() != "0" {
        return Err(bad());
    }
    let last: u64 = to.trim().parse().map_err(|_| bad())?;
    last.checked_add(1).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_encoded_segment_by_segment() {
        assert_eq!(
            encode_file_path("date=2026-11-29/orders 1%#?é+~.json").unwrap(),
            "date%3D2026-11-29/orders%201%25%23%3F%C3%A9%2B~.json"
        );
        assert_eq!(encode_file_path("a_b-c.d").unwrap(), "a_b-c.d");
        assert_eq!(
            encode_file_path("日本/ü").unwrap(),
            "%E6%97%A5%E6%9C%AC/%C3%BC"
        );
        assert_eq!(
            encode_file_path("...").unwrap(),
            "...",
            "only . and .. are special"
        );
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", ".."] {
            assert!(encode_file_path(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(0, 100, 250).unwrap(), "bytes 0-99/250");
        assert_eq!(content_range(200, 50, 250).unwrap(), "bytes 200-249/250");
        assert_eq!(
            content_range(67_108_864, 67_108_864, 300_000_000).unwrap(),
            "bytes 67108864-134217727/300000000"
        );
        assert!(content_range(0, 0, 10).is_err(), "empty chunk");
        assert!(content_range(200, 51, 250).is_err(), "past the end");
        assert!(content_range(u64::MAX, 2, u64::MAX).is_err(), "overflow");
    }

    #[test]
    fn range_headers() {
        assert_eq!(received_from_range("bytes=0-99").unwrap(), 100);
        assert_eq!(received_from_range("bytes=0-0").unwrap(), 1);
        assert_eq!(
            received_from_range(" Bytes=0-67108863 ").unwrap(),
            67_108_864
        );
        assert_eq!(received_from_range("bytes=0-99, 200-299").unwrap(), 100);
        for bad in [
            "bytes=10-99",
            "bytes=0-",
            "0-99",
            "bytes 0-99",
            "bytes=0-x",
            "",
            "bytés",
        ] {
            assert!(received_from_range(bad).is_err(), "{bad:?}");
        }
        assert!(received_from_range(&format!("bytes=0-{}", u64::MAX)).is_err());
    }
}
