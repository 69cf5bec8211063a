//! Field paths as Data Prep writes them: `person.name.firstName`, `Full\.Name` (a dot inside a
//! name), `identityMap.CRMID[0].id` (a fixed array index), `emails[*].address` (every element).
//!
//! This module only parses and prints paths; what a path reads or writes is decided by the
//! mapper (`mapper.rs`) and the schema (`xdm/`).

use std::fmt;
use std::sync::Arc;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A field of an object (shared: a mapping set interns its names, see `mapping_set.rs`).
    Key(Arc<str>),
    /// A fixed element of an array (`[0]`).
    Index(usize),
    /// Every element of an array (`[*]`).
    Each,
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    pub segments: Vec<Segment>,
}

impl FieldPath {
    /// Parses `a.b\.c[0][*].d`. A backslash makes the next character part of the name.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let mut segments = Vec::new();
        let mut key = String::new();
        // Whether the current name was closed by `]` (so `a[0]b` is an error).
        let mut after_bracket = false;
        let mut chars = text.chars().peekable();
        let mut had_key = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let Some(next) = chars.next() else {
                        return Err(format!(
                            "path {text:?} ends with a lone backslash: write \\. for a dot inside a name"
                        ));
                    };
                    if after_bracket {
                        return Err(format!("path {text:?}: a name follows ']' without a dot"));
                    }
                    key.push(next);
                    had_key = true;
                }
                '.' => {
                    if !had_key && !after_bracket {
                        return Err(format!(
                            "path {text:?} has an empty name (two dots, or a leading dot)"
                        ));
                    }
                    if had_key {
                        segments.push(Segment::Key(std::mem::take(&mut key).into()));
                    }
                    had_key = false;
                    after_bracket = false;
                }
                '[' => {
                    if had_key {
                        segments.push(Segment::Key(std::mem::take(&mut key).into()));
                        had_key = false;
                    }
                    let mut inside = String::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(ch) => inside.push(ch),
                            None => {
                                return Err(format!("path {text:?} has an unclosed '['"));
                            }
                        }
                    }
                    let inside = inside.trim();
                    if inside == "*" {
                        segments.push(Segment::Each);
                    } else {
                        let index = inside.parse::<usize>().map_err(|_| {
                            format!(
                                "path {text:?}: [{inside}] is not an array index; write [0], [1], ... or [*]"
                            )
                        })?;
                        segments.push(Segment::Index(index));
                    }
                    after_bracket = true;
                }
                _ => {
                    if after_bracket {
                        return Err(format!("path {text:?}: a name follows ']' without a dot"));
                    }
                    key.push(c);
                    had_key = true;
                }
            }
        }
        if had_key {
            segments.push(Segment::Key(key.into()));
        } else if !after_bracket {
            return Err(if text.is_empty() {
                "the path is empty".to_owned()
            } else {
                format!("path {text:?} ends with a dot")
            });
        }
        Ok(FieldPath { segments })
    }

    /// A path of plain names (no array steps).
    pub fn from_keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> FieldPath {
        FieldPath {
            segments: keys
                .into_iter()
                .map(|k| Segment::Key(Arc::from(k.into())))
                .collect(),
        }
    }

    /// How many `[*]` steps it has.
    pub fn each_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Each))
            .count()
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.segments.len() >= other.segments.len()
            && self.segments[..other.segments.len()] == other.segments[..]
    }

    /// The names only, when there are no array steps (a CSV column, a top-level field).
    pub fn as_keys(&self) -> Option<Vec<&str>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Key(k) => Some(&**k),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for FieldPath {
    /// Prints the path back in the form it was parsed from (dots inside names escaped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for segment in &self.segments {
            match segment {
                Segment::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    for c in k.chars() {
                        if matches!(c, '.' | '[' | ']' | '\\') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
                Segment::Each => f.write_str("[*]")?,
            }
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Vec<Segment> {
        FieldPath::parse(path).unwrap().segments
    }

    #[test]
    fn nested_names_indices_and_iteration() {
        assert_eq!(
            keys("identityMap.CRMID[0].id"),
            vec![
                Segment::Key("identityMap".into()),
                Segment::Key("CRMID".into()),
                Segment::Index(0),
                Segment::Key("id".into()),
            ]
        );
        assert_eq!(
            keys("customerInfo.emails[*].name"),
            vec![
                Segment::Key("customerInfo".into()),
                Segment::Key("emails".into()),
                Segment::Each,
                Segment::Key("name".into()),
            ]
        );
        assert_eq!(
            keys("m[1][*]"),
            vec![Segment::Key("m".into()), Segment::Index(1), Segment::Each]
        );
        assert_eq!(
            keys("piList[0]"),
            vec![Segment::Key("piList".into()), Segment::Index(0)]
        );
    }

    #[test]
    fn escaped_dots_stay_inside_a_name() {
        assert_eq!(keys(r"Full\.Name"), vec![Segment::Key("Full.Name".into())]);
        assert_eq!(
            keys(r"address.street\.name"),
            vec![
                Segment::Key("address".into()),
                Segment::Key("street.name".into())
            ]
        );
        let p = FieldPath::parse(r"a\.b.c[2]").unwrap();
        assert_eq!(p.to_string(), r"a\.b.c[2]");
        assert_eq!(FieldPath::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn malformed_paths_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("a..b", "empty name"),
            (".a", "empty name"),
            ("a.", "ends with a dot"),
            ("a[", "unclosed"),
            ("a[x]", "not an array index"),
            ("a[0]b", "without a dot"),
            ("a\\", "lone backslash"),
        ] {
            let e = FieldPath::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn prefixes_and_iteration_counts() {
        let a = FieldPath::parse("a.b[*].c[*]").unwrap();
        assert_eq!(a.each_count(), 2);
        assert!(a.starts_with(&FieldPath::parse("a.b").unwrap()));
        assert!(!a.starts_with(&FieldPath::parse("a.c").unwrap()));
        assert_eq!(
            FieldPath::parse("a.b").unwrap().as_keys(),
            Some(vec!["a", "b"])
        );
        assert_eq!(a.as_keys(), None);
    }
}
