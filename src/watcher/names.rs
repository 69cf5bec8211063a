//! Which paths in a drop folder are data files, and which the platform would refuse: temp,
//! hidden and receipt names are not files to ingest; paths too deep, too long or not valid
//! UTF-8 are refused with a receipt.
//!
//! This module must not read the disk.

use std::path::Path;

use super::Watcher;

/// Why a name in a drop folder is not a data file.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".receipt.json")
        || [".tmp", ".part", ".partial", ".crdownload", ".swp"]
            .iter()
            .any(|ext| name.to_ascii_lowercase().ends_with(ext))
}

/// Hard limits on what a drop folder may hold: deeper or longer paths are refused with a
/// receipt (the platform's URLs are capped at 2000 characters, percent-encoding included).
pub const MAX_DEPTH: usize = 32;
pub const MAX_PATH_BYTES: usize = 1024;

/// Why the platform would refuse this relative path, if it would (reference §2, E2).
pub fn name_problem(rel: &str) -> Option<String> {
    if rel.split('/').count() > MAX_DEPTH {
        return Some(format!(
            "{rel:?} is nested deeper than {MAX_DEPTH} folders; move it up"
        ));
    }
    if rel.len() > MAX_PATH_BYTES {
        return Some(format!(
            "the path {rel:?} is longer than {MAX_PATH_BYTES} bytes, too long for the platform's URLs; shorten it"
        ));
    }
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Some(format!(
                "the path {rel:?} has an empty or relative segment, which the platform refuses"
            ));
        }
        if seg.len() > 255 {
            return Some(format!(
                "a segment of {rel:?} is longer than 255 bytes, which the platform refuses; shorten the name"
            ));
        }
        if seg.chars().any(|c| c.is_control()) {
            return Some(format!(
                "the name {rel:?} contains control characters, which the platform refuses; rename the file"
            ));
        }
        if seg.contains('\u{FFFD}') {
            return Some(format!(
                "the name {rel:?} is not valid UTF-8, which the platform cannot accept; rename the file"
            ));
        }
    }
    None
}

impl Watcher {
    /// The '/'-separated path of `path` below the watch root, if it is a data file of this
    /// watch (not in the archive or failed folders, not a temp or hidden name, selected by its
    /// patterns).
    pub(super) fn relative(&self, path: &Path) -> Option<String> {
        if path.starts_with(&self.watch.archive_dir) || path.starts_with(&self.watch.failed_dir) {
            return None;
        }
        let rel = path.strip_prefix(&self.watch.path).ok()?;
        let mut parts = Vec::new();
        for c in rel.components() {
            let s = c.as_os_str().to_string_lossy();
            if is_ignored_name(&s) {
                return None;
            }
            parts.push(s.into_owned());
        }
        if parts.is_empty() {
            return None;
        }
        let rel = parts.join("/");
        // Not this watch's (`include` / `exclude`): never touched, never given a receipt.
        self.watch.patterns.selects(&rel).then_some(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_and_hidden_names_are_ignored() {
        for n in [
            ".hidden.json",
            "a.json.tmp",
            "a.part",
            "a.PARTIAL",
            "a.json~",
            "x.receipt.json",
        ] {
            assert!(is_ignored_name(n), "{n}");
        }
        for n in ["a.json", "orders.csv", "part-0001.parquet"] {
            assert!(!is_ignored_name(n), "{n}");
        }
    }

    #[test]
    fn names_the_platform_refuses_are_found() {
        assert!(name_problem("ok/file one.json").is_none());
        assert!(name_problem("a/../b.json").is_some());
        assert!(name_problem("bad\u{7}.json").is_some());
        assert!(name_problem(&"x".repeat(256)).is_some());
        assert!(name_problem("caf\u{FFFD}.json").is_some());
    }
}
