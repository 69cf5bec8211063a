//! A watch's `include` / `exclude` glob lists: which files below the drop folder are its own.
//!
//! Patterns match the '/'-separated path relative to the watch folder: `*` stays within one
//! folder, `**` crosses folders, and a pattern without `/` matches the file name at any depth
//! (as in `.gitignore`). A `.replay` sidecar is judged by its data file's path, so a sidecar is
//! never split from its file. This module owns compiling and matching only; the watcher decides
//! what an unselected file means (it is never touched).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::replay;

/// The compiled lists, compared and shown by the patterns as written.
#[derive(Clone, Default)]
pub struct Patterns {
    include: Vec<String>,
    exclude: Vec<String>,
    include_set: GlobSet,
    exclude_set: GlobSet,
}

impl Patterns {
    /// Compiles both lists; an empty `include` takes every file.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Patterns, String> {
        Ok(Patterns {
            include_set: compile("include", include)?,
            exclude_set: compile("exclude", exclude)?,
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        })
    }

    /// Whether the file at `rel_path` (below the watch folder) belongs to this watch.
    pub fn selects(&self, rel_path: &str) -> bool {
        let rel_path = replay::data_file_of(rel_path).unwrap_or(rel_path);
        (self.include.is_empty() || self.include_set.is_match(rel_path))
            && !self.exclude_set.is_match(rel_path)
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

fn compile(key: &str, patterns: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let anchored = if pattern.contains('/') {
            pattern.trim_start_matches('/').to_owned()
        } else {
            format!("**/{pattern}")
        };
        let glob: Glob = GlobBuilder::new(&anchored)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("{key} pattern \"{pattern}\" is not a glob: {}", e.kind()))?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| format!("{key} patterns cannot be compiled: {e}"))
}

impl PartialEq for Patterns {
    fn eq(&self, other: &Patterns) -> bool {
        self.include == other.include && self.exclude == other.exclude
    }
}

/// `include *.json, orders/**; exclude **/draft-*`, as `check-config` prints it.
impl std::fmt::Display for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let include = if self.include.is_empty() {
            "every file".to_owned()
        } else {
            self.include.join(", ")
        };
        write!(f, "include {include}")?;
        if !self.exclude.is_empty() {
            write!(f, "; exclude {}", self.exclude.join(", "))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(include: &[&str], exclude: &[&str]) -> Patterns {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Patterns::new(&own(include), &own(exclude)).unwrap()
    }

    #[test]
    fn nothing_listed_takes_everything() {
        let all = patterns(&[], &[]);
        assert!(all.selects("a.json") && all.selects("x/y/z.csv"));
    }

    #[test]
    fn includes_and_excludes_match_the_relative_path() {
        let p = patterns(
            &["*.json", "orders/**/*.csv"],
            &["**/draft-*", "orders/old/**"],
        );
        assert!(p.selects("a.json"));
        assert!(p.selects("deep/er/a.json"), "no `/`: any depth");
        assert!(p.selects("orders/2026/x.csv"));
        assert!(!p.selects("x.csv"), "not included");
        assert!(!p.selects("other/x.csv"));
        assert!(!p.selects("draft-a.json"), "excluded");
        assert!(!p.selects("deep/draft-a.json"));
        assert!(!p.selects("orders/old/x.csv"));
        let anchored = patterns(&["top/*.json"], &[]);
        assert!(anchored.selects("top/a.json"));
        assert!(
            !anchored.selects("top/sub/a.json"),
            "`*` stays in one folder"
        );
    }

    #[test]
    fn a_sidecar_follows_its_data_file() {
        let p = patterns(&["*.json"], &["skip.json"]);
        assert!(p.selects("a.json.replay"));
        assert!(!p.selects("skip.json.replay"));
        assert!(!p.selects("a.csv.replay"));
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let err = Patterns::new(&["a[".into()], &[]).unwrap_err();
        assert!(err.contains("include pattern \"a[\""), "{err}");
    }

    #[test]
    fn patterns_print_as_written() {
        assert_eq!(
            patterns(&["*.json", "a/**"], &["x*"]).to_string(),
            "include *.json, a/**; exclude x*"
        );
        assert_eq!(
            patterns(&[], &["x*"]).to_string(),
            "include every file; exclude x*"
        );
    }

    #[test]
    fn equality_is_by_the_patterns_as_written() {
        assert_eq!(patterns(&["*.json"], &[]), patterns(&["*.json"], &[]));
        assert_ne!(patterns(&["*.json"], &[]), patterns(&[], &["*.json"]));
    }
}
