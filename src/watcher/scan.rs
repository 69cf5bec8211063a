//! Finding files: full scans (at start-up and every `rescan_interval`, on a blocking thread,
//! never through a symlink to a folder), inotify events (which only make a look at one path
//! happen sooner), and the settle clock each file found starts or keeps.
//!
//! This module must not record anything: stable files are taken by `intake`.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::EventKind;
use tokio::sync::mpsc;

use super::settle::{clock_start, due};
use super::{Candidate, Watcher, is_ignored_name};
use crate::config::Watch;
use crate::disk::{Dir, Identity, Kind};
use crate::store::StoreError;
use crate::telemetry::{self, BacklogScan};

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
        if !is_relevant(ev.kind) {
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
                    let scanned = self.scan_dir(&path).await?;
                    self.missed |= !scanned.complete;
                }
                Ok(m) if m.is_file() => self.consider(&path, Identity::of(&m), hint),
                Ok(m) if m.is_symlink() => match std::fs::metadata(&path) {
                    Ok(target) if target.is_file() => {
                        self.consider(&path, Identity::of(&target), hint)
                    }
                    Ok(target) => {
                        let what = Untaken::link_to(Kind::of_type(target.file_type()));
                        self.name_untaken(&path, what)
                    }
                    // Dangling: nothing to take, and it may be a link being made.
                    Err(_) => {}
                },
                Ok(m) => {
                    let what = Untaken::Special(Kind::of_type(m.file_type()));
                    self.name_untaken(&path, what)
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    pub(super) async fn scan(&mut self) -> Result<(), StoreError> {
        metrics::counter!(telemetry::RESCANS).increment(1);
        self.missed = false;
        let root = self.watch.path.clone();
        // Until it ends, however it ends: a backlog present at start-up is recorded first.
        let _backlog = (!self.scanned_once)
            .then(|| BacklogScan::start(&self.health, &self.watch.name, &self.wake_batcher));
        let scanned = self.scan_dir(&root).await?;
        self.scanned_once = true;
        if scanned.complete {
            // Forget the versions of files no longer in the folder (archived, deleted). Only
            // after a whole walk: a walk stopped early has not seen the rest.
            self.recorded.retain(|rel, _| scanned.seen.contains(rel));
            self.untaken.retain(|path| scanned.untaken.contains(path));
        } else {
            self.missed = true;
        }
        Ok(())
    }

    /// Walks `dir` (below the watch root) a page at a time and considers every regular file
    /// in it as the walk reads it. While the candidates are at their cap the stable ones are
    /// taken; if they cannot be (the queue is full, files still being written), the walk
    /// stops there and the next scan, run once there is room, finds the rest: memory stays
    /// the same whatever the size of the folder.
    pub(super) async fn scan_dir(&mut self, dir: &Path) -> Result<Scanned, StoreError> {
        let (pages, mut walked) = mpsc::channel::<Page>(2);
        let watch = self.watch.clone();
        let dir = dir.to_owned();
        let walker = tokio::task::spawn_blocking(move || walk(&watch, &dir, &pages));
        let mut scanned = Scanned {
            seen: HashSet::new(),
            untaken: HashSet::new(),
            complete: true,
        };
        while let Some(page) = walked.recv().await {
            for (path, what) in page.untaken {
                self.name_untaken(&path, what);
                scanned.untaken.insert(path);
            }
            if !self.consider_page(page.files, &mut scanned.seen).await {
                scanned.complete = false;
                break;
            }
        }
        // Dropping the receiver stops a walk that was cut short at its next page.
        drop(walked);
        let _ = walker.await;
        Ok(scanned)
    }

    /// Considers a page of files a walk found: versions already recorded are passed over,
    /// those remembered here without a question, the rest with one question to the store.
    /// Returns false when the candidates are full and cannot be taken: the walk stops.
    async fn consider_page(
        &mut self,
        files: Vec<(PathBuf, Identity)>,
        seen: &mut HashSet<String>,
    ) -> bool {
        let mut unknown = Vec::with_capacity(files.len());
        for (path, identity) in files {
            let Some(rel) = self.relative(&path) else {
                continue;
            };
            if let Some(known) = self.recorded.get(&rel) {
                let same = *known == identity;
                seen.insert(rel.clone());
                if same {
                    continue;
                }
            }
            if self.candidates.contains_key(&rel) {
                self.consider_rel(rel, &path, identity, false);
            } else {
                unknown.push((rel, path, identity));
            }
        }
        if unknown.is_empty() {
            return true;
        }
        let versions: Vec<(&str, Identity)> = unknown
            .iter()
            .map(|(rel, _, identity)| (rel.as_str(), *identity))
            .collect();
        let known = match self.store.known_versions(&self.watch.name, &versions).await {
            Ok(known) => known,
            Err(e) => {
                // Each is then judged as a candidate, where recording knows it again.
                tracing::debug!(folder = %self.watch.path.display(), "cannot ask which files are known ({e}); looking at each");
                vec![false; versions.len()]
            }
        };
        drop(versions);
        for ((rel, path, identity), known) in unknown.into_iter().zip(known) {
            if known {
                continue;
            }
            if self.candidates.len() >= self.candidate_cap && !self.make_room().await {
                self.missed = true;
                return false;
            }
            self.consider_rel(rel, &path, identity, false);
        }
        true
    }

    /// Takes the stable candidates now, so that a walk can go on; returns whether there is
    /// room for more.
    async fn make_room(&mut self) -> bool {
        if let Err(e) = self.check_candidates().await {
            // The watch loop's own look meets the same error and pauses on it.
            tracing::debug!(folder = %self.watch.path.display(), "scan stopped: {e}");
        }
        self.candidates.len() < self.candidate_cap
    }

    /// Says once per name that something in the drop folder is never taken: a symlink to a
    /// folder is not followed (its files are someone else's, or a producer's way to have
    /// batchdrop read what they cannot), and a pipe, socket or device is never opened (a
    /// pipe's open would wait for a writer, a device's read may never end).
    pub(super) fn name_untaken(&mut self, path: &Path, what: Untaken) {
        if self.relative(path).is_some() && self.untaken.insert(path.to_owned()) {
            tracing::warn!(
                folder = %self.watch.path.display(), path = %path.display(),
                "{}", what.explain(path)
            );
        }
    }

    /// Starts (or restarts) the settle clock of a file unless this exact version is known.
    pub(super) fn consider(&mut self, path: &Path, identity: Identity, hint: bool) {
        if let Some(rel) = self.relative(path) {
            self.consider_rel(rel, path, identity, hint);
        }
    }

    /// [`Watcher::consider`] for a path already made relative. A new candidate beyond the cap
    /// is left on disk, for the scan that runs once there is room (see `missed`).
    fn consider_rel(&mut self, rel: String, path: &Path, identity: Identity, hint: bool) {
        if self.recorded.get(&rel) == Some(&identity) {
            return;
        }
        if self.candidates.len() >= self.candidate_cap && !self.candidates.contains_key(&rel) {
            self.missed = true;
            return;
        }
        match self.candidates.get_mut(&rel) {
            Some(c) if c.identity == identity => {
                c.hinted |= hint;
                let due = due(&rel, c.since, c.hinted, self.watch.settle);
                self.next_check = self.next_check.min(due);
            }
            other => {
                if let Some(old) = other {
                    self.early.forget(old.identity);
                }
                let age = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|now| now.as_nanos() as i64 - identity.mtime_ns)
                    .unwrap_or(0);
                let age = Duration::from_nanos(age.max(0) as u64);
                let since = clock_start(Instant::now(), age, self.watch.mode, self.watch.settle);
                let due = due(&rel, since, hint, self.watch.settle);
                self.next_check = self.next_check.min(due);
                if self.early.wants(identity.size) {
                    // Its hash starts at the first look that finds it unchanged: a tick
                    // (a quarter of settle) would leave that much of the wait unused.
                    self.next_check = self.next_check.min(Instant::now() + EARLY_LOOK);
                }
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

/// Opening or reading a file (or listing a folder, as scans do) is not news; reacting to those
/// would make every scan trigger the next one.
fn is_relevant(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => {
            true
        }
        EventKind::Access(_) | EventKind::Remove(_) => false,
        _ => true,
    }
}

/// Whether an event is worth queueing for the watch loop (decided on notify's thread): errors
/// and overflows always are; reads, removals and events about batchdrop's own folders
/// (`own`: the archive and failed folders) never are.
pub(super) fn may_be_news(ev: &notify::Result<notify::Event>, own: &[PathBuf]) -> bool {
    let Ok(ev) = ev else {
        return true;
    };
    if ev.need_rescan() {
        return true;
    }
    use notify::event::{ModifyKind, RenameMode};
    // What a rename left is gone: only where it went can hold a file.
    let paths = match ev.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => return false,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => &ev.paths[ev.paths.len().min(1)..],
        _ => &ev.paths[..],
    };
    is_relevant(ev.kind)
        && (ev.paths.is_empty()
            || paths
                .iter()
                .any(|path| !own.iter().any(|dir| path.starts_with(dir))))
}

/// Regular files below `dir` (below the watch root), skipping hidden and temp names and the
/// watch's own archive and failed folders, sent in pages of `PAGE` as they are read. Folders
/// are opened one by one relative to the root and never through a symlink: a symlink to a
/// folder is not walked into, wherever it points. Symlinks to files are listed with their
/// target's identity (for the settle clock only: the file is judged on its opened descriptor
/// before it is taken, see `admit`). Runs on a blocking thread; stops when `pages` is closed.
fn walk(watch: &Watch, dir: &Path, pages: &mpsc::Sender<Page>) {
    let Ok(root) = Dir::anchor(&watch.path) else {
        return;
    };
    let Ok(start) = dir.strip_prefix(&watch.path) else {
        return;
    };
    // Paths below the root, each opened only when its turn comes: a folder of many
    // sub-folders does not hold a descriptor per sub-folder.
    let mut stack = vec![start.to_owned()];
    let mut page = Page::default();
    let mut open = true;
    while let Some(below) = stack.pop() {
        let Ok(folder) = root.sub(&below) else {
            continue;
        };
        let _ = folder.each_entry(|name, st| {
            if is_ignored_name(&name.to_string_lossy()) {
                return ControlFlow::Continue(());
            }
            let path = folder.path().join(name);
            match st.kind {
                Kind::Dir if path != watch.archive_dir && path != watch.failed_dir => {
                    stack.push(below.join(name));
                }
                Kind::File => page.files.push((path, st.identity)),
                Kind::Dir => {}
                Kind::Symlink => match std::fs::metadata(&path) {
                    Ok(target) if target.is_file() => {
                        page.files.push((path, Identity::of(&target)))
                    }
                    Ok(target) => {
                        let what = Untaken::link_to(Kind::of_type(target.file_type()));
                        page.untaken.push((path, what))
                    }
                    Err(_) => {}
                },
                kind => page.untaken.push((path, Untaken::Special(kind))),
            }
            if page.files.len() >= PAGE {
                open = pages.blocking_send(std::mem::take(&mut page)).is_ok();
                if !open {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if !open {
            return;
        }
    }
    if !page.files.is_empty() || !page.untaken.is_empty() {
        let _ = pages.blocking_send(page);
    }
}

/// Files a walk sends at a time: enough that the store is asked once per thousand files, few
/// enough that a page weighs about 100 KiB.
const PAGE: usize = 1024;

/// How soon a large file just found is looked at again (see `consider_rel`): long enough for a
/// writer still at work to have changed it, and short against any settle worth the name.
const EARLY_LOOK: Duration = Duration::from_millis(50);

/// Part of what one walk found.
#[derive(Default)]
struct Page {
    /// Data files (and symlinks to files), with the identity the settle clock starts from.
    files: Vec<(PathBuf, Identity)>,
    /// Names never taken (see [`Untaken`]), named once in the log.
    untaken: Vec<(PathBuf, Untaken)>,
}

/// Something in a drop folder batchdrop never takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Untaken {
    /// A symbolic link to a folder: never followed.
    FolderLink,
    /// A pipe, socket or device: never opened.
    Special(Kind),
    /// A symbolic link to a pipe, socket or device.
    LinkToSpecial(Kind),
}

impl Untaken {
    /// What a symbolic link to something of `kind` (not a regular file) is.
    fn link_to(kind: Kind) -> Untaken {
        match kind {
            Kind::Dir => Untaken::FolderLink,
            kind => Untaken::LinkToSpecial(kind),
        }
    }

    /// The log line: what `path` is, that nothing is taken from it, and what to do.
    fn explain(self, path: &Path) -> String {
        let path = path.display();
        match self {
            Untaken::FolderLink => format!(
                "{path} is a symbolic link to a folder; batchdrop never follows one, so nothing \
                 in it is taken. Move the files themselves into the drop folder"
            ),
            Untaken::Special(kind) => format!(
                "{path} is {}; batchdrop takes regular files only and never opens anything \
                 else, so nothing is read from it. Write the data to a file and move that into \
                 the drop folder",
                kind.describe()
            ),
            Untaken::LinkToSpecial(kind) => format!(
                "{path} is a symbolic link to {}; batchdrop takes regular files only and never \
                 opens anything else, so nothing is read from it. Write the data to a file and \
                 move that into the drop folder",
                kind.describe()
            ),
        }
    }
}

/// What a scan saw, for forgetting what is gone.
pub(super) struct Scanned {
    /// The remembered (`recorded`) paths still in the folder: never more than are remembered.
    seen: HashSet<String>,
    /// Names never taken.
    untaken: HashSet<PathBuf>,
    /// The walk went through the whole folder (it stops early while candidates are full).
    complete: bool,
}

#[cfg(test)]
mod tests {
    use super::super::tests::watcher_of;
    use super::*;

    fn write_files(folder: &Path, n: usize) {
        std::fs::create_dir_all(folder).unwrap();
        for i in 0..n {
            std::fs::write(folder.join(format!("{i}.json")), "{}\n").unwrap();
        }
    }

    #[tokio::test]
    async fn a_backlog_beyond_the_candidate_cap_is_taken_a_cap_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, store, _) = watcher_of(dir.path(), "0", 1_000_000).await;
        w.candidate_cap = 300;
        // More than a page (PAGE) in one folder, and more folders below.
        write_files(&dir.path().join("drop"), 1500);
        write_files(&dir.path().join("drop/a/b"), 400);
        write_files(&dir.path().join("drop/c"), 200);
        let mut scans = 0;
        loop {
            w.scan().await.unwrap();
            scans += 1;
            assert!(
                w.candidates.len() <= 300,
                "{} candidates",
                w.candidates.len()
            );
            w.check_candidates().await.unwrap();
            if !w.missed {
                break;
            }
            assert!(scans < 100, "the backlog is never all taken");
        }
        assert_eq!(store.queued_files().await.unwrap(), 2100);
        assert!(w.candidates.is_empty());
        // Taken while walking: the walk only stops when candidates cannot be taken.
        assert_eq!(scans, 1);
    }

    #[tokio::test]
    async fn only_the_first_scan_holds_back_the_batcher_and_only_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, store, _) = watcher_of(dir.path(), "0", 1_000_000).await;
        write_files(&dir.path().join("drop"), 50);
        let health = w.health.clone();
        let name = w.watch.name.clone();
        for first in [true, false] {
            {
                let mut scan = std::pin::pin!(w.scan());
                // One poll: the scan has started and waits for its walk (a thread) and the store.
                let pending = tokio::select! {
                    biased;
                    done = &mut scan => {
                        done.unwrap();
                        false
                    }
                    _ = std::future::ready(()) => true,
                };
                if pending {
                    assert_eq!(health.scanning_backlog(&name), first, "first scan: {first}");
                    scan.await.unwrap();
                }
            }
            assert!(!health.scanning_backlog(&name));
            w.check_candidates().await.unwrap();
        }
        assert_eq!(store.queued_files().await.unwrap(), 50);
    }

    #[tokio::test]
    async fn a_full_queue_leaves_the_rest_of_a_backlog_on_disk_for_later_scans() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, store, _) = watcher_of(dir.path(), "0", 50).await;
        w.candidate_cap = 80;
        write_files(&dir.path().join("drop"), 1200);
        write_files(&dir.path().join("drop/sub"), 100);
        w.scan().await.unwrap();
        w.check_candidates().await.unwrap();
        assert_eq!(store.queued_files().await.unwrap(), 50);
        assert!(w.queue_full);
        assert!(w.missed, "files were left on disk");
        assert!(
            w.candidates.len() <= 80,
            "{} candidates",
            w.candidates.len()
        );

        // The queue drains, 50 at a time: every scan finds what the last one left.
        let watch = w.watch.name.clone();
        for _ in 0..100 {
            for file in store.ready_files(&watch, 1000).await.unwrap() {
                store
                    .fail_file(file.id, "test: out of the queue")
                    .await
                    .unwrap();
            }
            w.check_candidates().await.unwrap();
            if w.missed && w.candidates.len() <= w.candidate_cap / 2 {
                w.scan().await.unwrap();
                w.check_candidates().await.unwrap();
            }
            assert!(
                w.candidates.len() <= 80,
                "{} candidates",
                w.candidates.len()
            );
            if !w.missed && w.candidates.is_empty() && store.queued_files().await.unwrap() == 0 {
                break;
            }
        }
        assert!(!w.missed);
        assert!(w.candidates.is_empty());
        let mut every = 0;
        for i in 0..1200 {
            every += store
                .files_by_path(&format!("{i}.json"))
                .await
                .unwrap()
                .len();
        }
        for i in 0..100 {
            every += store
                .files_by_path(&format!("sub/{i}.json"))
                .await
                .unwrap()
                .len();
        }
        assert_eq!(every, 1300, "each file recorded exactly once");
    }

    #[test]
    fn only_events_that_may_be_news_are_queued() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
        let own = [
            PathBuf::from("/drop/_archive"),
            PathBuf::from("/drop/_failed"),
        ];
        let event = |kind, paths: &[&str]| {
            let mut ev = notify::Event::new(kind);
            for path in paths {
                ev = ev.add_path(PathBuf::from(path));
            }
            Ok(ev)
        };
        let created = EventKind::Create(CreateKind::File);
        assert!(may_be_news(&event(created, &["/drop/a.json"]), &own));
        assert!(!may_be_news(
            &event(created, &["/drop/_archive/a.json.receipt.json"]),
            &own
        ));
        assert!(!may_be_news(
            &event(created, &["/drop/_failed/b.json"]),
            &own
        ));
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(may_be_news(
            &event(moved, &["/drop/_archive/a.json", "/drop/a.json"]),
            &own
        ));
        let archived = event(moved, &["/drop/a.json", "/drop/_archive/a.json"]);
        assert!(!may_be_news(&archived, &own));
        let left = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        assert!(!may_be_news(&event(left, &["/drop/a.json"]), &own));
        let came = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(may_be_news(&event(came, &["/drop/a.json"]), &own));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!may_be_news(&event(read, &["/drop/a.json"]), &own));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(may_be_news(&event(written, &["/drop/a.json"]), &own));
        assert!(may_be_news(
            &Err(notify::Error::generic("watch limit")),
            &own
        ));
    }

    #[tokio::test]
    async fn rescans_ask_the_store_about_files_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, store, _) = watcher_of(dir.path(), "0", 1000).await;
        w.recorded_cap = 4;
        let drop = dir.path().join("drop");
        write_files(&drop, 20);
        w.scan().await.unwrap();
        w.check_candidates().await.unwrap();
        assert_eq!(store.queued_files().await.unwrap(), 20);
        assert_eq!(w.recorded.len(), 4);

        w.scan().await.unwrap();
        assert!(w.candidates.is_empty(), "{:?}", w.candidates.keys());

        let changed = (0..20)
            .map(|i| format!("{i}.json"))
            .find(|rel| !w.recorded.contains_key(rel))
            .unwrap();
        std::fs::write(drop.join(&changed), "{\"changed\": true}\n").unwrap();
        w.scan().await.unwrap();
        assert_eq!(w.candidates.keys().collect::<Vec<_>>(), [&changed]);
    }
}
