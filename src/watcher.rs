//! Drop folder → store: finds files, waits until each is completely written, records it.
//!
//! Sources of truth, in order of trust: a full scan (at start-up and every `rescan_interval`),
//! then inotify events, which only make a scan of one path happen sooner. Events are lost on
//! queue overflow and never arrive for writes made by other hosts on network filesystems, so
//! nothing here depends on them. A file is ready when its size and mtime stayed the same for
//! `settle`; close-write and moved-to events shorten that wait but never skip it.
//!
//! This module must not upload, batch or move anything: it only writes "ready" rows.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{Watch, WatchMode};
use crate::store::{NewFile, Recorded, Store, StoreError};

/// What a file looks like on disk; a change in any of these means it is still being written
/// (or was replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }

    pub fn read(path: &Path) -> std::io::Result<Identity> {
        std::fs::symlink_metadata(path).map(|m| Identity::of(&m))
    }
}

/// Why a name in a drop folder is not a data file.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".receipt.json")
        || [".tmp", ".part", ".partial", ".crdownload", ".swp"]
            .iter()
            .any(|ext| name.to_ascii_lowercase().ends_with(ext))
}

/// A file seen on disk but not yet judged stable.
struct Candidate {
    identity: Identity,
    since: Instant,
    /// A close-write or moved-to event was seen for the current identity.
    hinted: bool,
}

pub struct Watcher {
    watch: Watch,
    store: Store,
    wake_batcher: Arc<Notify>,
    candidates: HashMap<String, Candidate>,
    /// Versions already handed to the store, so rescans do not ask it again.
    recorded: HashMap<String, Identity>,
    /// How many files this watcher is waiting on (for `run --once`).
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Intake is paused: the state directory is (nearly) full.
    intake_paused: bool,
    /// Events can no longer be trusted to mention every new file (a watch could not be
    /// added, e.g. the inotify watch limit was reached): scanning takes over.
    events_broken: bool,
}

impl Watcher {
    pub fn new(watch: Watch, store: Store, wake_batcher: Arc<Notify>) -> Watcher {
        Watcher {
            watch,
            store,
            wake_batcher,
            candidates: HashMap::new(),
            recorded: HashMap::new(),
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            intake_paused: false,
            events_broken: false,
        }
    }

    /// Runs until `shutdown`: scan, then react to events and rescans, checking candidates often.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StoreError> {
        if let Err(e) = std::fs::create_dir_all(&self.watch.path) {
            tracing::error!(folder = %self.watch.path.display(), "cannot create the drop folder: {e}");
        }
        // Without events, scanning is the only source: do it often.
        let scan_often = self
            .watch
            .rescan_interval
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(200));
        let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
        // The notify callback runs on its own thread and only forwards (the rust-analyzer way):
        // all decisions are made here, on the async side.
        let _watcher = match self.watch.mode {
            WatchMode::Poll => None,
            WatchMode::Events => {
                let tx = tx.clone();
                let started = notify::recommended_watcher(move |ev| {
                    let _ = tx.send(ev);
                })
                .and_then(|mut w| {
                    w.watch(&self.watch.path, RecursiveMode::Recursive)
                        .map(|_| w)
                });
                match started {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(
                            folder = %self.watch.path.display(),
                            "cannot watch for events ({e}); falling back to scanning every {scan_often:?}"
                        );
                        None
                    }
                }
            }
        };
        let mut rescan_every = match (self.watch.mode, &_watcher) {
            (WatchMode::Events, Some(_)) => self.watch.rescan_interval,
            _ => scan_often,
        };
        let tick =
            (self.watch.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));

        self.scan().await?;
        let mut next_scan = Instant::now() + rescan_every;
        let mut trouble = crate::store::StoreTrouble::new("watcher");
        loop {
            let mut pause = None;
            match self.check_candidates().await {
                Ok(()) => trouble.ok(),
                Err(e) => pause = Some(trouble.failed(&e)),
            }
            self.pending
                .store(self.candidates.len(), std::sync::atomic::Ordering::SeqCst);
            let wait = if let Some(pause) = pause {
                pause
            } else if self.candidates.is_empty() {
                next_scan.saturating_duration_since(Instant::now())
            } else {
                tick
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tracing::debug!(folder = %self.watch.path.display(), "watcher stopping");
                    drop(_watcher);
                    tracing::debug!(folder = %self.watch.path.display(), "watcher stopped");
                    return Ok(());
                }
                ev = rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev).await?;
                        // Drain what else is queued so a burst costs one pass.
                        while let Ok(ev) = rx.try_recv() {
                            self.on_event(ev).await?;
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            if self.events_broken && rescan_every > scan_often {
                tracing::warn!(
                    folder = %self.watch.path.display(),
                    "events no longer cover the whole folder; falling back to scanning every {scan_often:?}"
                );
                rescan_every = scan_often;
                next_scan = Instant::now();
            }
            if Instant::now() >= next_scan {
                self.scan().await?;
                next_scan = Instant::now() + rescan_every;
            }
        }
    }

    async fn on_event(&mut self, ev: notify::Result<notify::Event>) -> Result<(), StoreError> {
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
                _ => {}
            }
        }
        Ok(())
    }

    async fn scan(&mut self) -> Result<(), StoreError> {
        let root = self.watch.path.clone();
        let seen = self.scan_dir(&root).await?;
        // Forget the versions of files no longer in the folder (archived, deleted): the map
        // stays the size of the folder instead of growing with every file ever seen.
        self.recorded.retain(|rel, _| seen.contains(rel));
        Ok(())
    }

    /// Walks `dir` (below the watch root) and considers every regular file in it; returns the
    /// relative paths of the data files found.
    async fn scan_dir(&mut self, dir: &Path) -> Result<HashSet<String>, StoreError> {
        let watch = self.watch.clone();
        let dir = dir.to_owned();
        let found = tokio::task::spawn_blocking(move || walk(&watch, &dir))
            .await
            .unwrap_or_default();
        let mut seen = HashSet::with_capacity(found.len());
        for (path, identity) in found {
            if let Some(rel) = self.relative(&path) {
                seen.insert(rel);
            }
            self.consider(&path, identity, false);
        }
        Ok(seen)
    }

    /// Starts (or restarts) the settle clock of a file unless this exact version is known.
    fn consider(&mut self, path: &Path, identity: Identity, hint: bool) {
        let Some(rel) = self.relative(path) else {
            return;
        };
        if self.recorded.get(&rel) == Some(&identity) {
            return;
        }
        match self.candidates.get_mut(&rel) {
            Some(c) if c.identity == identity => c.hinted |= hint,
            _ => {
                // A file untouched for longer than `settle` already meets the rule (its mtime
                // proves no write happened since); only trusted where clocks are one machine's.
                let age = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|now| now.as_nanos() as i64 - identity.mtime_ns)
                    .unwrap_or(0);
                let old = self.watch.mode == WatchMode::Events
                    && age > self.watch.settle.as_nanos() as i64;
                let since = if old {
                    Instant::now()
                        .checked_sub(self.watch.settle)
                        .unwrap_or_else(Instant::now)
                } else {
                    Instant::now()
                };
                self.candidates.insert(
                    rel,
                    Candidate {
                        identity,
                        since,
                        hinted: hint,
                    },
                );
            }
        }
    }

    /// The '/'-separated path of `path` below the watch root, if it is a data file of this
    /// watch (not in the archive or failed folders, not a temp or hidden name).
    fn relative(&self, path: &Path) -> Option<String> {
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
        if parts.is_empty() || parts.last().is_some_and(|n| n.ends_with(".replay")) {
            return None;
        }
        Some(parts.join("/"))
    }

    /// Re-reads each candidate; records those whose identity held still for `settle`.
    async fn check_candidates(&mut self) -> Result<(), StoreError> {
        if self.candidates.is_empty() {
            return Ok(());
        }
        let settle = self.watch.settle;
        let mut stable = Vec::new();
        let mut gone = Vec::new();
        for (rel, c) in self.candidates.iter_mut() {
            match Identity::read(&self.watch.path.join(rel)) {
                Err(_) => gone.push(rel.clone()),
                Ok(now) if now != c.identity => {
                    c.identity = now;
                    c.since = Instant::now();
                    c.hinted = false;
                }
                Ok(_) => {
                    let needed = if c.hinted { settle / 4 } else { settle };
                    if c.since.elapsed() >= needed {
                        stable.push(rel.clone());
                    }
                }
            }
        }
        for rel in gone {
            self.candidates.remove(&rel);
        }
        if !stable.is_empty() && !self.room_for_new_files() {
            return Ok(()); // they stay candidates, taken once there is room
        }
        let mut woke = false;
        for rel in stable {
            let Some(c) = self.candidates.remove(&rel) else {
                continue;
            };
            let recorded = match self.record(rel.clone(), c.identity).await {
                Ok(r) => r,
                Err(e) => {
                    // Still stable: taken as soon as the database works again.
                    self.candidates.insert(rel, c);
                    if woke {
                        self.wake_batcher.notify_one();
                    }
                    return Err(e);
                }
            };
            if recorded {
                woke = true;
            } else {
                // An older version is still in flight: look again after another `settle`.
                self.candidates.insert(
                    rel,
                    Candidate {
                        identity: c.identity,
                        since: Instant::now(),
                        hinted: false,
                    },
                );
            }
        }
        if woke {
            self.wake_batcher.notify_one();
        }
        Ok(())
    }

    /// Whether the state directory has room for new work; says so when that changes.
    fn room_for_new_files(&mut self) -> bool {
        let free = self.store.free_bytes();
        let full = free.is_some_and(|f| f < crate::store::MIN_FREE_BYTES);
        let mib = free.unwrap_or(0) / (1024 * 1024);
        let dir = self
            .store
            .path()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if full && !self.intake_paused {
            tracing::error!(
                folder = %self.watch.path.display(),
                "the state directory {dir} has {mib} MiB free, less than the {} MiB batchdrop \
                 keeps in reserve: not taking new files until space is freed (files already \
                 taken carry on; nothing is lost: new files wait in the drop folder)",
                crate::store::MIN_FREE_BYTES / (1024 * 1024)
            );
        } else if !full && self.intake_paused {
            tracing::info!(
                folder = %self.watch.path.display(),
                "the state directory {dir} has {mib} MiB free again: taking new files again"
            );
        }
        self.intake_paused = full;
        !full
    }

    /// Hands a stable file to the store. Returns false when it has to wait for an older
    /// version of the same path to finish.
    async fn record(&mut self, rel: String, id: Identity) -> Result<bool, StoreError> {
        let w = &self.watch;
        let format = w.format_for(&rel);
        let file = NewFile {
            watch: w.name.clone(),
            dataset: w.dataset.clone(),
            format: format.map(|f| f.as_str()).unwrap_or("json").to_owned(),
            multiline_json: w.multiline_json,
            root: w.path.to_string_lossy().into_owned(),
            rel_path: rel.clone(),
            dev: id.dev as i64,
            ino: id.ino as i64,
            size: id.size as i64,
            mtime_ns: id.mtime_ns,
        };
        let problem = name_problem(&rel).or_else(|| {
            format.is_none().then(|| {
                format!(
                    "cannot tell the format of {rel}: name it *.json, *.csv or *.parquet, or set `format` in the [[watch]] for {}",
                    w.name
                )
            })
        });
        if let Some(reason) = problem {
            if let Some(id) = self.store.record_rejected(&file, &reason).await? {
                tracing::warn!(file = %rel, dataset = %w.dataset, file_id = id, "rejected: {reason}");
            }
        } else {
            match self.store.record_ready(&file).await? {
                Recorded::New(id) => {
                    tracing::info!(file = %rel, dataset = %w.dataset, file_id = id, size = file.size, "ready")
                }
                Recorded::Known => {}
                Recorded::Deferred => {
                    tracing::debug!(file = %rel, dataset = %w.dataset, "a new version waits for the one in flight to finish");
                    return Ok(false);
                }
            }
        }
        self.recorded.insert(rel, id);
        Ok(true)
    }
}

/// Why the platform would refuse this relative path, if it would (reference §2, E2).
pub fn name_problem(rel: &str) -> Option<String> {
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

/// Regular files below `dir`, skipping hidden and temp names, symlinks and the watch's own
/// archive and failed folders. Runs on a blocking thread.
fn walk(watch: &Watch, dir: &Path) -> Vec<(PathBuf, Identity)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if is_ignored_name(&name.to_string_lossy()) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if path != watch.archive_dir && path != watch.failed_dir {
                    stack.push(path);
                }
            } else if meta.is_file() {
                out.push((path, Identity::of(&meta)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_of_files_gone_from_the_folder_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[[watch]]\npath = {:?}\ndataset = \"d\"\nsettle = \"0\"\n",
            dir.path().join("drop")
        );
        let config = crate::config::Config::parse(&text, &dir.path().join("c.toml")).unwrap();
        let store = Store::open_shared(&dir.path().join("state")).await.unwrap();
        let mut w = Watcher::new(config.watches[0].clone(), store, Arc::new(Notify::new()));
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("drop/{i}.json")), "{}\n").unwrap();
        }
        w.scan().await.unwrap();
        w.check_candidates().await.unwrap();
        assert_eq!(w.recorded.len(), 3);
        std::fs::remove_file(dir.path().join("drop/0.json")).unwrap();
        std::fs::remove_file(dir.path().join("drop/1.json")).unwrap();
        w.scan().await.unwrap();
        assert_eq!(w.recorded.keys().collect::<Vec<_>>(), ["2.json"]);
    }

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
