//! The daemon's config as the tests write it: a small builder over a TOML table, rendered by
//! the `toml` crate, so that a path or a value with a quote in it is escaped and a test says
//! which keys it sets instead of concatenating text. It owns the test defaults (fast timings,
//! one watch on `drop` into `DATASET`); it must not start anything or read the daemon's types:
//! the daemon parses what it writes, as it would an operator's file.
//!
//! A test that checks how the daemon takes a broken file writes that text by hand.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::DATASET;

/// A config file being built.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    root: Table,
}

/// One table of the file: `[upload]`, `[platform.auth]`, a `[[watch]]`.
#[derive(Clone, Debug, Default)]
pub struct Section {
    table: Table,
}

impl Section {
    /// Sets `key` (a string, number, bool or array of them).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Section {
        self.table.insert(key.to_owned(), value.into());
        self
    }

    /// Removes `key`, for a test that checks what its absence does.
    pub fn unset(mut self, key: &str) -> Section {
        self.table.remove(key);
        self
    }
}

impl ConfigFile {
    /// A file with nothing in it yet.
    pub fn empty() -> ConfigFile {
        ConfigFile { root: Table::new() }
    }

    /// The tests' usual config against the platform at `url`: a static token read from
    /// `token`, state in `state`, an admin listener on a free port, fast timings (backoff, poll,
    /// settle, rescan) and one watch on `drop` into `DATASET`. Paths are relative to the file.
    pub fn fast(url: &str) -> ConfigFile {
        ConfigFile::empty()
            .set("state_dir", "state")
            .set("shutdown_grace", "5s")
            .set("admin_listen", "127.0.0.1:0")
            .set("probe_interval", "300ms")
            .section("platform", |platform| {
                platform
                    .set("endpoint", url)
                    .set("access_token_file", "token")
            })
            .section("upload", |upload| {
                upload
                    .set("backoff_initial", "100ms")
                    .set("backoff_max", "1s")
                    .set("poll_initial", "50ms")
                    .set("poll_max", "200ms")
            })
            .section("defaults", |defaults| {
                defaults
                    .set("settle", "300ms")
                    .set("max_wait", "200ms")
                    .set("rescan_interval", "1s")
            })
            .watch("drop", DATASET, |watch| watch)
    }

    /// A config on the embedded platform (the daemon runs it in-process), with the admin
    /// listener on a free port and fast poll and settle timings; no watch yet.
    pub fn embedded() -> ConfigFile {
        ConfigFile::empty()
            .set("state_dir", "state")
            // Not the default 9187, which another daemon on this machine may hold.
            .set("admin_listen", "127.0.0.1:0")
            .section("platform", |platform| platform.set("endpoint", "embedded"))
            .section("upload", |upload| {
                upload.set("poll_initial", "50ms").set("poll_max", "200ms")
            })
            .section("defaults", |defaults| {
                defaults.set("settle", "300ms").set("max_wait", "200ms")
            })
    }

    /// Sets a top-level `key`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> ConfigFile {
        self.root.insert(key.to_owned(), value.into());
        self
    }

    /// Removes a top-level `key`, for a test that checks what its absence does.
    pub fn unset(mut self, key: &str) -> ConfigFile {
        self.root.remove(key);
        self
    }

    /// Edits the table `name` (`upload`, or a dotted `platform.auth`), made if missing.
    pub fn section(mut self, name: &str, edit: impl FnOnce(Section) -> Section) -> ConfigFile {
        let mut table = &mut self.root;
        for part in name.split('.') {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            table = match entry {
                Value::Table(inner) => inner,
                other => panic!("test config: {name} is not a table but {other}"),
            };
        }
        let edited = edit(Section {
            table: std::mem::take(table),
        });
        *table = edited.table;
        self
    }

    /// Adds a `[[watch]]` on `path` into `dataset`, with whatever else `edit` sets.
    pub fn watch(
        mut self,
        path: &str,
        dataset: &str,
        edit: impl FnOnce(Section) -> Section,
    ) -> ConfigFile {
        let watch = edit(Section::default().set("path", path).set("dataset", dataset));
        match self
            .root
            .entry("watch")
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(watches) => watches.push(Value::Table(watch.table)),
            other => panic!("test config: watch is not an array but {other}"),
        }
        self
    }

    /// Edits the last `[[watch]]` added.
    pub fn last_watch(mut self, edit: impl FnOnce(Section) -> Section) -> ConfigFile {
        let Some(Value::Array(watches)) = self.root.get_mut("watch") else {
            panic!("test config: no [[watch]] to edit");
        };
        let Some(Value::Table(last)) = watches.last_mut() else {
            panic!("test config: no [[watch]] to edit");
        };
        *last = edit(Section {
            table: std::mem::take(last),
        })
        .table;
        self
    }

    /// Merges TOML text into the table `name` (`watch`: the last watch), for callers that still
    /// pass their extra keys as text (`Env::write_config`). The text is parsed here, so a typo
    /// fails the test at once, naming the text.
    pub fn merge_text(self, name: &str, text: &str) -> ConfigFile {
        assert!(
            !text.lines().any(|line| line.trim_start().starts_with('[')),
            "test config: {text:?} opens a table; build it with `section` or `watch` instead"
        );
        let extra: Table = text
            .parse()
            .unwrap_or_else(|e| panic!("test config: {text:?} is not TOML: {e}"));
        let merge = |section: Section| {
            extra
                .into_iter()
                .fold(section, |section, (key, value)| section.set(&key, value))
        };
        match name {
            "watch" => self.last_watch(merge),
            _ => self.section(name, merge),
        }
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        toml::to_string(&self.root).expect("a TOML table renders")
    }

    /// Writes the file to `path` and returns it.
    pub fn write_to(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.toml())
            .unwrap_or_else(|e| panic!("writing the test config {}: {e}", path.display()));
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the builder writes is what the daemon reads, quotes and backslashes in a path
    /// included; a second watch and a nested table land where they were put.
    #[test]
    fn the_daemon_reads_what_the_builder_writes_quotes_and_backslashes_included() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "test-token\n").unwrap();
        let odd = "dr\"op\\1";
        std::fs::create_dir_all(dir.path().join(odd)).unwrap();
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        let path = ConfigFile::fast("http://127.0.0.1:9")
            .section("upload", |upload| upload.set("max_attempts", 7))
            .section("limits", |limits| limits.set("max_queued_files", 2))
            .last_watch(|watch| watch.set("max_wait", "1500ms"))
            .watch(odd, "other", |watch| watch)
            .write_to(&dir.path().join("config.toml"));
        let config = batchdrop::config::Config::load(&path).unwrap();
        assert_eq!(config.upload.max_attempts, 7);
        assert_eq!(config.limits.max_queued_files, 2);
        assert_eq!(config.watches.len(), 2);
        assert_eq!(config.watches[0].dataset, DATASET);
        assert!(config.watches[1].path.ends_with(odd), "{config:?}");
        assert_eq!(config.watches[1].dataset, "other");
    }

    #[test]
    #[should_panic(expected = "opens a table")]
    fn extra_text_that_opens_a_table_is_refused() {
        let _ =
            ConfigFile::fast("http://127.0.0.1:9").merge_text("watch", "[[watch]]\npath = \"b\"");
    }
}
