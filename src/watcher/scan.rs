//! Finding files: full scans (at start-up and every `rescan_interval`, on a blocking thread,
//! never through a symlink to a folder), inotify events (which only make a look at one path
//! happen sooner), and the settle clock each file found starts or keeps.
//!
//! This module must not record anything: stable files are taken by `intake`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::EventKind;

use super::settle::{clock_start, needed_wait};
use super::{Candidate, Watcher, is_ignored_name};
use crate::config::Watch;
use crate::disk::{Dir, Identity, Kind};
use crate::store::StoreError;
use crate::telemetry;

impl Watcher {
    pub(super) async fn on_event(
        &mut self,
        ev: notify::Result<notify::Event>,
    ) -> Result<(), StoreError> {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                // Typically a sub-folder that could not be watched (the inotify watch limit):
                // files in it would never be mentioned.
                tracing::warn!(folder = %self.watch.path.display(), "watch error ({e}); rescanning");
                self.events_broken = true;
                return self.scan().await;
            }
        };
        if ev.need_rescan() {
            metrics::counter!(telemetry::OVERFLOWS).increment(1);
            tracing::warn!(folder = %self.watch.path.display(), "event queue overflowed; rescanning");
            return self.scan().await;
        }
        // Opening or reading a file (or listing a folder, as scans do) is not news; reacting
        // to those would make every scan trigger the next one.
        let relevant = match ev.kind {
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write,
            )) => true,
            EventKind::Access(_) | EventKind::Remove(_) => false,
            _ => true,
        };
        if !relevant {
            return Ok(());
        }
        let hint = matches!(
            ev.kind,
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write
            )) | EventKind::Modify(notify::event::ModifyKind::Name(
                notify::event::RenameMode::To
            ))
        );
        for path in ev.paths {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    // A folder moved in whole brings files no event will mention.
                    self.scan_dir(&path).await?;
                }
                Ok(m) if m.is_file() => self.consider(&path, Identity::of(&m), hint),
                Ok(m) if m.is_symlink() => match std::fs::metadata(&path) {
                    Ok(target) if target.is_file() => {
                        self.consider(&path, Identity::of(&target), hint)
                    }
                    Ok(target) if target.is_dir() => self.name_folder_link(&path),
                    _ => {}
                },
                _ => {}
            }
        }
        Ok(())
    }

    pub(super) async fn scan(&mut self) -> Result<(), StoreError> {
        metrics::counter!(telemetry::RESCANS).increment(1);
        let root = self.watch.path.clone();
        let (seen, links) = self.scan_dir(&root).await?;
        // Forget the versions of files no longer in the folder (archived, deleted): the map
        // stays the size of the folder instead of growing with every file ever seen.
        self.recorded.retain(|rel, _| seen.contains(rel));
        self.folder_links.retain(|link| links.contains(link));
        Ok(())
    }

    /// Walks `dir` (below the watch root) and considers every regular file in it; returns the
    /// relative paths of the data files found, and the symlinks to folders.
    pub(super) async fn scan_dir(
        &mut self,
        dir: &Path,
    ) -> Result<(HashSet<String>, HashSet<PathBuf>), StoreError> {
        let watch = self.watch.clone();
        let dir = dir.to_owned();
        let found = tokio::task::spawn_blocking(move || walk(&watch, &dir))
            .await
            .unwrap_or_default();
        let mut seen = HashSet::with_capacity(found.files.len());
        for (path, identity) in found.files {
            if let Some(rel) = self.relative(&path) {
                seen.insert(rel);
            }
            self.consider(&path, identity, false);
        }
        for link in &found.folder_links {
            self.name_folder_link(link);
        }
        Ok((seen, found.folder_links.into_iter().collect()))
    }

    /// Says once per link that a symlink to a folder is not followed: its files are someone
    /// else's (or a producer's way to have batchdrop read what they cannot).
    pub(super) fn name_folder_link(&mut self, link: &Path) {
        if self.relative(link).is_some() && self.folder_links.insert(link.to_owned()) {
            tracing::warn!(
                folder = %self.watch.path.display(), link = %link.display(),
                "{} is a symbolic link to a folder; batchdrop never follows one, so nothing in it \
                 is taken. Move the files themselves into the drop folder",
                link.display()
            );
        }
    }

    /// Starts (or restarts) the settle clock of a file unless this exact version is known.
    pub(super) fn consider(&mut self, path: &Path, identity: Identity, hint: bool) {
        let Some(rel) = self.relative(path) else {
            return;
        };
        if self.recorded.get(&rel) == Some(&identity) {
            return;
        }
        match self.candidates.get_mut(&rel) {
            Some(c) if c.identity == identity => {
                c.hinted |= hint;
                let due = c.since + needed_wait(&rel, c.hinted, self.watch.settle);
                self.next_check = self.next_check.min(due);
            }
            _ => {
                let age = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|now| now.as_nanos() as i64 - identity.mtime_ns)
                    .unwrap_or(0);
                let age = Duration::from_nanos(age.max(0) as u64);
                let since = clock_start(Instant::now(), age, self.watch.mode, self.watch.settle);
                let due = since + needed_wait(&rel, hint, self.watch.settle);
                self.next_check = self.next_check.min(due);
                self.candidates.insert(
                    rel,
                    Candidate {
                        identity,
                        since,
                        hinted: hint,
                        problem: None,
                        path: path.to_owned(),
                    },
                );
            }
        }
    }
}

/// Regular files below `dir` (below the watch root), skipping hidden and temp names and the
/// watch's own archive and failed folders. Folders are opened one by one relative to their
/// parent and never through a symlink: a symlink to a folder is not walked into, wherever it
/// points. Symlinks to files are listed with their target's identity (for the settle clock
/// only: the file is judged on its opened descriptor before it is taken, see `admit`). Runs on
/// a blocking thread.
fn walk(watch: &Watch, dir: &Path) -> Walked {
    let mut walked = Walked::default();
    let start = dir
        .strip_prefix(&watch.path)
        .map_err(|_| std::io::Error::other("outside the watch folder"))
        .and_then(|rel| Dir::anchor(&watch.path)?.sub(rel));
    let Ok(start) = start else {
        return walked;
    };
    let mut stack = vec![start];
    while let Some(d) = stack.pop() {
        let Ok(entries) = d.entries() else {
            continue;
        };
        for (name, st) in entries {
            if is_ignored_name(&name.to_string_lossy()) {
                continue;
            }
            let path = d.path().join(&name);
            match st.kind {
                Kind::Dir if path != watch.archive_dir && path != watch.failed_dir => {
                    if let Ok(sub) = d.sub(Path::new(&name)) {
                        stack.push(sub);
                    }
                }
                Kind::File => walked.files.push((path, st.identity)),
                Kind::Symlink => match std::fs::metadata(&path) {
                    Ok(target) if target.is_file() => {
                        walked.files.push((path, Identity::of(&target)))
                    }
                    Ok(target) if target.is_dir() => walked.folder_links.push(path),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    walked
}

/// What one walk found.
#[derive(Default)]
struct Walked {
    /// Data files (and symlinks to files), with the identity the settle clock starts from.
    files: Vec<(PathBuf, Identity)>,
    /// Symlinks to folders: never followed, named once in the log.
    folder_links: Vec<PathBuf>,
}
