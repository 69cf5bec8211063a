//! JSON pointers (RFC 6901), the way issues and identity fields name a field: `/person/crmId`,
//! with `~0` for `~` and `~1` for `/` inside a field name.

use serde_json::{Map, Value};

/// `person.crmId` or `/person/crmId` → `/person/crmId`.
pub fn normalize_pointer(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        p.split('.')
            .map(escape_segment)
            .fold(String::new(), |mut acc, s| {
                acc.push('/');
                acc.push_str(&s);
                acc
            })
    }
}

/// A field name as a pointer segment.
pub(crate) fn escape_segment(s: &str) -> String {
    if s.contains(['~', '/']) {
        s.replace('~', "~0").replace('/', "~1")
    } else {
        s.to_owned()
    }
}

/// A pointer segment as a field name.
pub(crate) fn unescape_segment(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// Reads the value at a JSON pointer.
pub fn value_at<'v>(record: &'v Map<String, Value>, pointer: &str) -> Option<&'v Value> {
    let mut segs = pointer.split('/').skip(1);
    let first = segs.next()?;
    let mut v = record.get(&unescape_segment(first))?;
    for seg in segs {
        let seg = unescape_segment(seg);
        v = match v {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_normalize_escape_and_read() {
        assert_eq!(normalize_pointer("a.b"), "/a/b");
        assert_eq!(normalize_pointer("/a/b"), "/a/b");
        assert_eq!(normalize_pointer("a/b.c~d"), "/a~1b/c~0d");
        let record = json!({"a/b": {"c~d": [10, 20]}});
        let record = record.as_object().unwrap();
        assert_eq!(value_at(record, "/a~1b/c~0d/1"), Some(&json!(20)));
        assert_eq!(value_at(record, "/a~1b/c~0d/2"), None);
        assert_eq!(value_at(record, "/missing"), None);
    }
}
