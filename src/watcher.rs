//! Drop folder → store: finds files, waits until each is completely written, records it.
//!
//! Sources of truth, in order of trust: a full scan (at start-up and every `rescan_interval`),
//! then inotify events, which only make a scan of one path happen sooner. Events are lost on
//! queue overflow and never arrive for writes made by other hosts on network filesystems, so
//! nothing here depends on them. A file is ready when its size and mtime stayed the same for
//! `settle`; close-write and moved-to events shorten that wait for `.replay` sidecars, never for
//! data files: `settle` is also the window in which a data file's sidecar may still arrive.
//!
//! `.replay` sidecars (see `replay`) are settled like data files and attached to theirs before
//! it is recorded: a data file whose sidecar is on disk but not settled yet is held; a sidecar
//! that comes first waits (up to the watch's `sidecar_timeout`) for its data file; one that
//! comes while its file is still queued is attached to it. A sidecar that cannot be honoured
//! (malformed, unknown predecessor, too late, or whose data file never came) sends its file, or
//! itself, to the failed folder with the reason.
//!
//! This module must not upload, batch or move anything: it only writes "ready" (or rejected)
//! rows.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{Watch, WatchMode};
use crate::disk::{self, Dir, Kind, Links};
use crate::format::Format;
use crate::replay::{self, ReplayError, Sidecar};
use crate::store::{FileState, NewFile, Recorded, Store, StoreError};
use crate::telemetry::{self, Health};

/// What a file looks like on disk (now in `disk`, where every file is judged).
pub use crate::disk::Identity;

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
    /// Why it must not be uploaded (found when it is admitted, see `Watcher::admit`), if so.
    problem: Option<String>,
    /// The real path (the key is a '/'-joined, possibly lossy, rendering of it).
    path: PathBuf,
}

/// A settled sidecar waiting for its data file.
struct PendingSidecar {
    /// The sidecar's own path below the root.
    rel: String,
    identity: Identity,
    /// When it settled: the start of its `sidecar_timeout`.
    since: Instant,
    parsed: Result<Sidecar, ReplayError>,
}

pub struct Watcher {
    watch: Watch,
    store: Store,
    wake_batcher: Arc<Notify>,
    health: Arc<Health>,
    max_queued_files: u64,
    candidates: HashMap<String, Candidate>,
    /// Settled sidecars by the path of their data file.
    sidecars: HashMap<String, PendingSidecar>,
    /// Versions already handed to the store, so rescans do not ask it again.
    recorded: HashMap<String, Identity>,
    /// How many files this watcher is waiting on (for `run --once`).
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Intake is paused: the state directory is (nearly) full.
    intake_paused: bool,
    /// Symlinks to folders already named in the log (they are never followed).
    folder_links: HashSet<PathBuf>,
    /// Intake is paused: `max_queued_files` files are queued (see `check_candidates`).
    queue_full: bool,
    /// Events can no longer be trusted to mention every new file (a watch could not be
    /// added, e.g. the inotify watch limit was reached): scanning takes over.
    events_broken: bool,
    /// When the candidates are next looked at: the moment the first of them has waited its
    /// `settle` (so a quiet file is taken on time, not up to a tick late), and at most a tick
    /// away. Events do not trigger a look: during a burst that would re-read every candidate
    /// for each event.
    next_check: Instant,
}

impl Watcher {
    pub fn new(
        watch: Watch,
        store: Store,
        wake_batcher: Arc<Notify>,
        health: Arc<Health>,
        max_queued_files: u64,
    ) -> Watcher {
        Watcher {
            watch,
            store,
            wake_batcher,
            health,
            max_queued_files,
            candidates: HashMap::new(),
            sidecars: HashMap::new(),
            recorded: HashMap::new(),
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            next_check: Instant::now(),
            intake_paused: false,
            queue_full: false,
            folder_links: HashSet::new(),
            events_broken: false,
        }
    }

    /// Runs until `shutdown`: scan, then react to events and rescans, checking candidates often.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let created = !self.watch.path.exists();
        match std::fs::create_dir_all(&self.watch.path) {
            Err(e) => {
                tracing::error!(folder = %self.watch.path.display(), "cannot create the drop folder: {e}")
            }
            // Sticky: a producer may rename or remove only their own files in it, not others'
            // and not batchdrop's _archive/ and _failed/ (see docs/security-files.md).
            Ok(()) if created => {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(&self.watch.path) {
                    let mode = meta.permissions().mode() | 0o1000;
                    let _ = std::fs::set_permissions(
                        &self.watch.path,
                        std::fs::Permissions::from_mode(mode),
                    );
                }
            }
            Ok(()) => {}
        }
        // Events name files by their real path: compare against the real root (the configured
        // one may go through a symlink).
        if let Ok(real) = std::fs::canonicalize(&self.watch.path)
            && real != self.watch.path
        {
            let rebase = |p: &Path| match p.strip_prefix(&self.watch.path) {
                Ok(rest) => real.join(rest),
                Err(_) => p.to_owned(),
            };
            self.watch.archive_dir = rebase(&self.watch.archive_dir);
            self.watch.failed_dir = rebase(&self.watch.failed_dir);
            self.watch.path = real;
        }
        self.prepare_own_folders();
        for loose in disk::loose_folders(&self.watch.path) {
            tracing::warn!(folder = %self.watch.path.display(), "{loose}");
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
                // A symlink to a folder is never followed: notify would otherwise watch (and
                // report) a folder outside the drop folder as if it were in it.
                let started = notify::RecommendedWatcher::new(
                    move |ev| {
                        let _ = tx.send(ev);
                    },
                    notify::Config::default().with_follow_symlinks(false),
                )
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
        let mut trouble = crate::stage::StoreTrouble::new("watcher");
        loop {
            let mut pause = None;
            if Instant::now() >= self.next_check {
                // check_candidates brings this closer for a file due sooner.
                self.next_check = Instant::now() + tick;
                match self.check_candidates().await {
                    Ok(()) => trouble.ok(),
                    Err(e) => pause = Some(trouble.failed(&e)),
                }
            }
            self.pending
                .store(self.candidates.len(), std::sync::atomic::Ordering::SeqCst);
            let wait = if let Some(pause) = pause {
                self.next_check = Instant::now() + pause;
                pause
            } else if self.candidates.is_empty() && self.sidecars.is_empty() {
                next_scan.saturating_duration_since(Instant::now())
            } else {
                self.next_check.saturating_duration_since(Instant::now())
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

    /// Creates the archive and failed folders that lie inside the drop folder, as batchdrop's
    /// own (mode 0750: producers may read them, not rename, replace or plant anything in
    /// them), narrows ones it made earlier to that, and says what it cannot fix: a
    /// symlink in their place, or a folder a producer created first.
    fn prepare_own_folders(&self) {
        for dir in [&self.watch.archive_dir, &self.watch.failed_dir] {
            let Ok(rel) = dir.strip_prefix(&self.watch.path) else {
                continue; // a folder of the operator's, elsewhere: theirs to set up
            };
            let made = Dir::anchor(&self.watch.path)
                .and_then(|root| root.sub_created(rel, Some(disk::OWN_FOLDER_MODE)))
                .and_then(|own| own.narrow_to(disk::OWN_FOLDER_MODE));
            match made {
                Ok(st) if st.uid != disk::effective_uid() && st.uid != 0 => tracing::warn!(
                    folder = %dir.display(),
                    "{} belongs to uid {}, not to batchdrop: whoever owns it can rename or \
                     replace what batchdrop moves there. Move it away: batchdrop creates its own",
                    dir.display(),
                    st.uid
                ),
                Ok(_) => {}
                Err(e) if disk::is_symlink_refusal(&e) => tracing::error!(
                    folder = %dir.display(),
                    "{} is a symbolic link (or reached through one); batchdrop never writes \
                     through one, so files wait in the drop folder until it is a real folder \
                     again: remove the link (to keep files elsewhere, set archive_dir or \
                     failed_dir in the [[watch]])",
                    dir.display()
                ),
                Err(e) => {
                    tracing::warn!(folder = %dir.display(), "cannot create {}: {e}", dir.display())
                }
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

    async fn scan(&mut self) -> Result<(), StoreError> {
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
    async fn scan_dir(
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
    fn name_folder_link(&mut self, link: &Path) {
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
    fn consider(&mut self, path: &Path, identity: Identity, hint: bool) {
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
        if parts.is_empty() {
            return None;
        }
        Some(parts.join("/"))
    }

    /// Re-reads each candidate; records those whose identity held still for `settle`.
    async fn check_candidates(&mut self) -> Result<(), StoreError> {
        self.check_sidecars().await?;
        if self.candidates.is_empty() {
            return Ok(());
        }
        // While intake is paused the candidates are not looked at, only whether there is room
        // again: re-reading 50,000 waiting files every tick kept a core busy for nothing. A
        // file that changed meanwhile is seen changed when they are looked at again.
        if (self.intake_paused || self.queue_full) && !self.room_again().await? {
            return Ok(());
        }
        let settle = self.watch.settle;
        let mut stable = Vec::new();
        let mut gone = Vec::new();
        for (rel, c) in self.candidates.iter_mut() {
            match Identity::read(&c.path) {
                Err(_) => gone.push(rel.clone()),
                Ok(now) if now != c.identity => {
                    c.identity = now;
                    c.since = Instant::now();
                    c.hinted = false;
                }
                Ok(_) => {
                    let due = c.since + needed_wait(rel, c.hinted, settle);
                    if Instant::now() >= due {
                        stable.push(rel.clone());
                    } else {
                        self.next_check = self.next_check.min(due);
                    }
                }
            }
        }
        for rel in gone {
            self.candidates.remove(&rel);
        }
        if stable.is_empty() {
            return Ok(());
        }
        if !self.room_for_new_files() {
            return Ok(()); // they stay candidates, taken once there is room
        }
        // Cap on queued files: stable files wait here (on disk, nothing lost) until the queue
        // drains below the cap.
        let queued = self.store.queued_files().await?;
        let mut room = (self.max_queued_files as i64 - queued).max(0);
        let data_files = stable
            .iter()
            .filter(|r| replay::data_file_of(r).is_none())
            .count() as i64;
        let full = data_files > room;
        self.queue_full = full;
        if full
            != self
                .health
                .intake_paused
                .swap(full, std::sync::atomic::Ordering::SeqCst)
            && full
        {
            tracing::warn!(folder = %self.watch.path.display(), queued, cap = self.max_queued_files, "intake paused: max_queued_files reached; new files wait in the folder");
        }
        // Sidecars first, so that a data file settling in the same pass finds its sidecar.
        stable.sort_by_key(|rel| replay::data_file_of(rel).is_none());
        let mut woke = false;
        let mut plain = Vec::new();
        for rel in stable {
            if replay::data_file_of(&rel).is_some() {
                if let Some(c) = self.candidates.remove(&rel) {
                    self.take_sidecar(rel, c.identity, &c.path).await?;
                    woke = true;
                }
                continue;
            }
            if self.sidecar_unsettled(&rel) {
                continue; // held (still a candidate) until its sidecar settles
            }
            if room == 0 {
                break; // the rest wait on disk, as candidates, until the queue drains
            }
            let Some(mut c) = self.candidates.remove(&rel) else {
                continue;
            };
            match self.admit(&rel, &mut c) {
                Admission::Take => {}
                Admission::Later => {
                    self.candidates.insert(rel, c);
                    continue;
                }
                Admission::Gone => continue,
            }
            room -= 1;
            let sidecar = self.sidecars.remove(&rel);
            if sidecar.is_none() && c.problem.is_none() && self.problem_of(&rel).is_none() {
                // The common case, recorded with the others in one transaction below.
                plain.push((rel, c));
                if plain.len() == RECORD_CHUNK {
                    woke |= self.record_plain(std::mem::take(&mut plain)).await?;
                }
                continue;
            }
            let recorded = match self
                .record(rel.clone(), c.identity, c.problem.clone(), &c.path, sidecar)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // Still stable: taken as soon as the database works again.
                    self.candidates.insert(rel, c);
                    self.candidates.extend(plain);
                    if woke {
                        self.wake_batcher.notify_one();
                    }
                    return Err(e);
                }
            };
            if recorded {
                woke = true;
            } else {
                self.defer(rel, c);
            }
        }
        if !plain.is_empty() {
            woke |= self.record_plain(plain).await?;
        }
        if woke {
            self.wake_batcher.notify_one();
        }
        Ok(())
    }

    /// Whether intake, paused, can go on: the state directory has room again, and fewer than
    /// `max_queued_files` files are queued.
    async fn room_again(&mut self) -> Result<bool, StoreError> {
        if !self.room_for_new_files() {
            return Ok(false);
        }
        if self.queue_full {
            let queued = self.store.queued_files().await?;
            if queued >= self.max_queued_files as i64 {
                return Ok(false);
            }
            self.queue_full = false;
        }
        Ok(true)
    }

    /// Judges a stable data file on what opening it finds, not on its path: no folder on its
    /// way is a symlink, a symlinked file stays inside the watch folder (unless
    /// `follow_symlinks`), it is still the version that settled, and it is within the watch's
    /// size rules. Sets `c.problem` when it is to be refused with a receipt.
    fn admit(&self, rel: &str, c: &mut Candidate) -> Admission {
        let links = if self.watch.follow_symlinks {
            Links::Anywhere
        } else {
            Links::Beneath
        };
        let Ok(below) = c.path.strip_prefix(&self.watch.path) else {
            return Admission::Gone;
        };
        let judged = Dir::anchor(&self.watch.path).and_then(|root| root.stat_file(below, links));
        let st = match judged {
            Ok(st) => st,
            // Out of descriptors or memory: nothing is wrong with the file; next tick.
            Err(e) if disk::is_transient(&e) => {
                tracing::debug!(file = %rel, "cannot look at it now ({e}); trying again");
                return Admission::Later;
            }
            Err(e) if disk::is_escape(&e) => {
                let target = std::fs::read_link(&c.path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "a file".into());
                c.problem = Some(format!(
                    "{} is a symlink to {target}, outside the watch folder; batchdrop does not follow it (copy the file in, or set follow_symlinks = true for this watch)",
                    c.path.display()
                ));
                return Admission::Take;
            }
            // Gone, or a folder on its way is (now) a symlink: not a file of this folder.
            Err(_) => return Admission::Gone,
        };
        if st.kind != Kind::File {
            return Admission::Gone;
        }
        if st.identity != c.identity {
            c.identity = st.identity;
            c.since = Instant::now();
            c.hinted = false;
            return Admission::Later;
        }
        let size = st.identity.size;
        if size > self.watch.max_file_bytes {
            c.problem = Some(format!(
                "{rel} is {size} bytes, more than max_file_bytes ({}) for this folder; split it into smaller files, or raise max_file_bytes in the [[watch]] for {}",
                self.watch.max_file_bytes, self.watch.name
            ));
        } else if self.watch.refuse_sparse && is_sparse(size, st.allocated) {
            c.problem = Some(format!(
                "{rel} is a sparse file: {size} bytes long but only {} bytes on disk, and this folder refuses sparse files (refuse_sparse = true in the [[watch]] for {}); write it out in full (e.g. `cp --sparse=never`), or set refuse_sparse = false",
                st.allocated, self.watch.name
            ));
        }
        Admission::Take
    }

    /// Records stable files that need nothing but recording (no sidecar, no problem) in one
    /// transaction; returns whether any was new. On a database error they all stay
    /// candidates, taken as soon as it works again.
    async fn record_plain(&mut self, plain: Vec<(String, Candidate)>) -> Result<bool, StoreError> {
        let files: Vec<NewFile> = plain
            .iter()
            .map(|(rel, c)| self.new_file(rel, c.identity, &c.path))
            .collect();
        let outcomes = match self.store.record_ready_many(&files).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.candidates.extend(plain);
                return Err(e);
            }
        };
        let mut new = false;
        for (((rel, c), file), outcome) in plain.into_iter().zip(&files).zip(outcomes) {
            match outcome {
                Recorded::New(id) => {
                    new = true;
                    metrics::counter!(telemetry::FILES_DISCOVERED, "dataset" => file.dataset.clone())
                        .increment(1);
                    tracing::info!(file = %rel, dataset = %file.dataset, file_id = id, size = file.size, replaces = "", "ready");
                }
                Recorded::Known => {}
                Recorded::Deferred => {
                    tracing::debug!(file = %rel, dataset = %file.dataset, "a new version waits for the one in flight to finish");
                    self.defer(rel, c);
                    continue;
                }
            }
            self.recorded.insert(rel, c.identity);
        }
        Ok(new)
    }

    /// An older version of `rel` is still in flight: look at this one again after another
    /// `settle`.
    fn defer(&mut self, rel: String, c: Candidate) {
        let c = Candidate {
            since: Instant::now(),
            hinted: false,
            ..c
        };
        self.candidates.insert(rel, c);
    }

    /// Why the file `rel` cannot be ingested whatever its content: a name the platform would
    /// refuse, or a format that cannot be told.
    fn problem_of(&self, rel: &str) -> Option<String> {
        name_problem(rel).or_else(|| {
            self.watch.format_for(rel).is_none().then(|| {
                format!(
                    "cannot tell the format of {rel}: name it *.json, *.csv or *.parquet, or set `format` in the [[watch]] for {}",
                    self.watch.name
                )
            })
        })
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

    /// The store's description of a file of this watch.
    fn new_file(&self, rel: &str, id: Identity, path: &Path) -> NewFile {
        use std::os::unix::ffi::OsStrExt;
        let w = &self.watch;
        NewFile {
            watch: w.name.clone(),
            dataset: w.dataset.clone(),
            format: w.format_for(rel).unwrap_or(Format::Json),
            multiline_json: w.multiline_json,
            root: w.path.to_string_lossy().into_owned(),
            rel_path: rel.to_owned(),
            dev: id.dev as i64,
            ino: id.ino as i64,
            size: id.size as i64,
            mtime_ns: id.mtime_ns,
            raw_path: path
                .to_str()
                .is_none()
                .then(|| path.as_os_str().as_bytes().to_vec()),
        }
    }

    async fn record(
        &mut self,
        rel: String,
        id: Identity,
        problem: Option<String>,
        path: &Path,
        sidecar: Option<PendingSidecar>,
    ) -> Result<bool, StoreError> {
        // Returns false when it has to wait for an older version of the same path to finish.
        let file = self.new_file(&rel, id, path);
        let problem = problem.or_else(|| self.problem_of(&rel));
        let w = &self.watch;
        let side_rel = sidecar.as_ref().map(|s| s.rel.clone());
        let replay = match (&problem, sidecar) {
            (None, Some(sc)) => match self.resolve(&rel, sc).await {
                Ok(req) => Some(req),
                Err(reason) => {
                    let side = side_rel.as_deref().expect("a sidecar");
                    match self
                        .store
                        .record_rejected_with(&file, &reason, Some(side))
                        .await?
                    {
                        Some(id) => {
                            tracing::warn!(file = %rel, dataset = %self.watch.dataset, file_id = id, "rejected: {reason}");
                        }
                        // This version of the file is known already: the sidecar is news for it.
                        None => {
                            if !self.attach_to_queued(&rel, side, Err(reason)).await? {
                                self.reject_late_sidecar(&rel, side).await?;
                            }
                        }
                    }
                    self.recorded.insert(rel, id);
                    return Ok(true);
                }
            },
            _ => None,
        };
        if let Some(reason) = problem {
            if let Some(id) = self
                .store
                .record_rejected_with(&file, &reason, side_rel.as_deref())
                .await?
            {
                tracing::warn!(file = %rel, dataset = %w.dataset, file_id = id, "rejected: {reason}");
            }
        } else {
            match self.store.record_ready_with(&file, replay.as_ref()).await? {
                Recorded::New(id) => {
                    metrics::counter!(telemetry::FILES_DISCOVERED, "dataset" => w.dataset.clone())
                        .increment(1);
                    tracing::info!(
                        file = %rel, dataset = %w.dataset, file_id = id, size = file.size,
                        replaces = replay.as_ref().map(|r| r.predecessors.to_string()).unwrap_or_default(),
                        "ready"
                    );
                }
                Recorded::Deferred => {
                    tracing::debug!(file = %rel, dataset = %w.dataset, "a new version waits for the one in flight to finish");
                    return Ok(false);
                }
                Recorded::Known => {
                    if let (Some(req), Some(side)) = (&replay, &side_rel)
                        && !self.attach_to_queued(&rel, side, Ok(req.clone())).await?
                    {
                        self.reject_late_sidecar(&rel, side).await?;
                    }
                }
            }
        }
        self.recorded.insert(rel, id);
        Ok(true)
    }

    /// Whether the data file `rel` must wait for a sidecar that is on disk but not settled
    /// (or not even seen yet: events can lag behind a scan).
    fn sidecar_unsettled(&mut self, rel: &str) -> bool {
        if self.sidecars.contains_key(rel) {
            return false;
        }
        let side = format!("{rel}{}", replay::SUFFIX);
        if self.candidates.contains_key(&side) {
            return true;
        }
        let path = self.watch.path.join(&side);
        match Identity::read(&path) {
            Ok(id) if self.recorded.get(&side) != Some(&id) => {
                self.consider(&path, id, false);
                true
            }
            _ => false,
        }
    }

    /// A sidecar settled: attach it to its file if that is queued, else keep it until the file
    /// comes (or until `sidecar_timeout`).
    async fn take_sidecar(
        &mut self,
        rel: String,
        id: Identity,
        path: &Path,
    ) -> Result<(), StoreError> {
        let data = replay::data_file_of(&rel).expect("a sidecar").to_owned();
        self.recorded.insert(rel.clone(), id);
        if self.store.sidecar_claimed(&self.watch.name, &rel).await? {
            return Ok(()); // attached before a restart: nothing new
        }
        let origin = format!("the sidecar {rel}");
        let parsed = match read_sidecar(&self.watch.path, path) {
            Ok(text) => replay::parse(&origin, &data, &text),
            Err(SidecarRead::Refused(why)) => {
                tracing::warn!(sidecar = %rel, file = %data, dataset = %self.watch.dataset, "sidecar refused: {why}");
                Err(ReplayError::Refused {
                    origin,
                    file: data.clone(),
                    why,
                })
            }
            Err(SidecarRead::Later) => {
                self.recorded.remove(&rel); // gone or unreadable for now: the next scan sees
                return Ok(());
            }
        };
        tracing::info!(sidecar = %rel, file = %data, dataset = %self.watch.dataset, "replay sidecar found");
        let queued = self.store.unfinished_file(&self.watch.name, &data).await?;
        match queued {
            Some(f) if f.sidecar.is_none() && f.state == FileState::Ready => {
                // The file came first and is still queued: it takes the sidecar now.
                let pending = PendingSidecar {
                    rel: rel.clone(),
                    identity: id,
                    since: Instant::now(),
                    parsed,
                };
                let resolved = self.resolve(&data, pending).await;
                if !self.attach_to_queued(&data, &rel, resolved).await? {
                    self.reject_late_sidecar(&data, &rel).await?;
                }
            }
            Some(f) if f.sidecar.is_none() && f.state.in_batch() => {
                self.reject_late_sidecar(&data, &rel).await?;
            }
            _ => {
                self.sidecars.insert(
                    data,
                    PendingSidecar {
                        rel,
                        identity: id,
                        since: Instant::now(),
                        parsed,
                    },
                );
            }
        }
        Ok(())
    }

    /// Attaches a resolved sidecar (or its error) to the queued record of `data`. False when
    /// the file had left the queue (sealed into a batch) in the meantime.
    async fn attach_to_queued(
        &mut self,
        data: &str,
        side: &str,
        resolved: Result<crate::store::ReplayRequest, String>,
    ) -> Result<bool, StoreError> {
        let Some(f) = self.store.unfinished_file(&self.watch.name, data).await? else {
            return Ok(false);
        };
        match resolved {
            Ok(req) => {
                let done = self.store.attach_replay(f.id, &req).await?;
                if done {
                    tracing::info!(file = %data, sidecar = %side, replaces = %req.predecessors, "replay attached to the queued file");
                }
                Ok(done)
            }
            Err(reason) => {
                let done = self
                    .store
                    .reject_ready_with_sidecar(f.id, &reason, side)
                    .await?;
                if done {
                    tracing::warn!(file = %data, sidecar = %side, "rejected: {reason}");
                }
                Ok(done)
            }
        }
    }

    /// A sidecar that came after its file was sealed into a batch: the file goes on as new
    /// data; the sidecar goes to the failed folder saying so.
    async fn reject_late_sidecar(&mut self, data: &str, side: &str) -> Result<(), StoreError> {
        let batch = match self.store.unfinished_file(&self.watch.name, data).await? {
            Some(f) => match f.batch_id {
                Some(b) => format!(" (batch {})", self.store.batch(b).await?.label()),
                None => String::new(),
            },
            None => String::new(),
        };
        let reason = format!(
            "the sidecar {side} arrived after {data} had been taken into a batch{batch}, so {data} is ingested as new data, not as a replay. Write the sidecar first (or within `settle` of its data file); to replace now, drop {data} again together with this sidecar"
        );
        self.reject_sidecar_file(side, &reason).await
    }

    /// Sends a sidecar alone to the failed folder with `reason`.
    async fn reject_sidecar_file(&mut self, side: &str, reason: &str) -> Result<(), StoreError> {
        let Ok(id) = Identity::read(&self.watch.path.join(side)) else {
            return Ok(());
        };
        let file = self.new_file(side, id, &self.watch.path.join(side));
        if let Some(fid) = self.store.record_rejected(&file, reason).await? {
            tracing::warn!(sidecar = %side, dataset = %self.watch.dataset, file_id = fid, "rejected: {reason}");
        }
        self.recorded.insert(side.to_owned(), id);
        self.wake_batcher.notify_one();
        Ok(())
    }

    /// Forgets sidecars that were removed or changed, and fails those whose data file did not
    /// come within `sidecar_timeout`.
    async fn check_sidecars(&mut self) -> Result<(), StoreError> {
        if self.sidecars.is_empty() {
            return Ok(());
        }
        let timeout = self.watch.sidecar_timeout;
        let mut expired = Vec::new();
        let mut gone = Vec::new();
        for (data, sc) in &self.sidecars {
            match Identity::read(&self.watch.path.join(&sc.rel)) {
                Ok(now) if now == sc.identity => {}
                // Changed (it is a candidate again) or removed: forget this version.
                _ => gone.push(data.clone()),
            }
            if sc.since.elapsed() >= timeout && !self.candidates.contains_key(data) {
                expired.push(data.clone());
            }
        }
        for data in gone {
            if let Some(sc) = self.sidecars.remove(&data) {
                self.recorded.remove(&sc.rel);
            }
        }
        for data in expired {
            let Some(sc) = self.sidecars.remove(&data) else {
                continue;
            };
            let reason = format!(
                "the sidecar {} waited {} for its data file {data}, which did not come. Drop {data} together with its sidecar (the sidecar first, or within `settle` of it), or delete the sidecar; `sidecar_timeout` in the [[watch]] sets this wait",
                sc.rel,
                human(timeout)
            );
            self.reject_sidecar_file(&sc.rel, &reason).await?;
        }
        Ok(())
    }

    /// A pending sidecar → the replay to record with its file, or the reason it cannot be.
    async fn resolve(
        &self,
        data: &str,
        sc: PendingSidecar,
    ) -> Result<crate::store::ReplayRequest, String> {
        let sidecar = match sc.parsed {
            Ok(s) => s,
            Err(e) => return Err(e.to_string()),
        };
        replay::resolve(
            &self.store,
            &self.watch.dataset,
            data,
            &format!("the sidecar {}", sc.rel),
            Some(&sc.rel),
            &sidecar,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && s % 60.0 == 0.0 {
        format!("{}m", s / 60.0)
    } else {
        format!("{s}s")
    }
}

/// How long a candidate's identity must hold still. A close-write or moved-to hint only
/// shortens a sidecar's wait: a data file's `settle` is also the window for its sidecar to
/// arrive.
fn needed_wait(rel: &str, hinted: bool, settle: Duration) -> Duration {
    if hinted && replay::data_file_of(rel).is_some() {
        settle / 4
    } else {
        settle
    }
}

/// A sidecar is a few lines of TOML: anything longer is refused unread.
pub const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// Why a sidecar's text could not be had.
enum SidecarRead {
    /// Gone, unreadable for now, or the process is out of descriptors: the next scan sees.
    Later,
    /// Never to be read: the receipt says why.
    Refused(String),
}

/// The text of the sidecar at `path` (below `root`): a regular file, judged on its descriptor
/// (opened `O_NOFOLLOW | O_NONBLOCK`, so that neither a symlink to `/dev/zero` nor a FIFO is
/// read), of at most [`MAX_SIDECAR_BYTES`] (a sparse 3 GiB sidecar is never read).
fn read_sidecar(root: &Path, path: &Path) -> Result<String, SidecarRead> {
    let below = path.strip_prefix(root).map_err(|_| SidecarRead::Later)?;
    let opened = match Dir::anchor(root).and_then(|r| r.open_file(below, Links::Refuse)) {
        Ok(opened) => opened,
        Err(e) if disk::is_symlink_refusal(&e) => {
            return Err(SidecarRead::Refused(
                "it is a symbolic link (or reached through one), and a sidecar is read only from a regular file in the drop folder itself".into(),
            ));
        }
        Err(_) => return Err(SidecarRead::Later),
    };
    if opened.stat.kind != Kind::File {
        return Err(SidecarRead::Refused(format!(
            "it is {}, and a sidecar is read only from a regular file",
            opened.stat.kind.describe()
        )));
    }
    let too_long = || {
        SidecarRead::Refused(format!(
            "it is {} bytes long, and a sidecar is at most {MAX_SIDECAR_BYTES} bytes",
            opened.stat.identity.size
        ))
    };
    if opened.stat.identity.size > MAX_SIDECAR_BYTES {
        return Err(too_long());
    }
    match disk::read_capped(&opened.file, MAX_SIDECAR_BYTES) {
        Ok(bytes) if bytes.len() as u64 > MAX_SIDECAR_BYTES => Err(too_long()),
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => Err(SidecarRead::Later),
    }
}

/// What becomes of a stable data file once it is opened and judged (see `Watcher::admit`).
enum Admission {
    /// Recorded: as ready, or refused with the reason in its `problem`.
    Take,
    /// Looked at again later: it changed, or the process is out of descriptors.
    Later,
    /// Not a file of this folder (any more): forgotten until a scan finds it again.
    Gone,
}

/// A file with fewer than a sixteenth of its bytes on disk, and at least 1 MiB of holes: a
/// `truncate -s 1T` file, not one with a few unwritten blocks.
fn is_sparse(size: u64, allocated: u64) -> bool {
    size.saturating_sub(allocated) >= 1 << 20 && allocated < size / 16
}

/// Files recorded per transaction when many become stable at once.
const RECORD_CHUNK: usize = 1000;

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
        let mut w = Watcher::new(
            config.watches[0].clone(),
            store,
            Arc::new(Notify::new()),
            Arc::default(),
            1000,
        );
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

    #[tokio::test]
    async fn waiting_files_are_not_looked_at_while_intake_is_paused() {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        let text = format!("[[watch]]\npath = {drop:?}\ndataset = \"d\"\nsettle = \"0\"\n");
        let config = crate::config::Config::parse(&text, &dir.path().join("c.toml")).unwrap();
        let store = Store::open_shared(&dir.path().join("state")).await.unwrap();
        let mut w = Watcher::new(
            config.watches[0].clone(),
            store.clone(),
            Arc::new(Notify::new()),
            Arc::default(),
            1,
        );
        std::fs::create_dir_all(&drop).unwrap();
        for i in 0..3 {
            std::fs::write(drop.join(format!("{i}.json")), "{}\n").unwrap();
        }
        w.scan().await.unwrap();
        w.check_candidates().await.unwrap();
        assert_eq!(w.recorded.len(), 1, "max_queued_files = 1");
        assert!(w.queue_full);
        let mut waiting: Vec<String> = w.candidates.keys().cloned().collect();
        waiting.sort();
        assert_eq!(waiting.len(), 2);

        // Removed while intake is paused: nobody looks, so nobody notices.
        std::fs::remove_file(drop.join(&waiting[0])).unwrap();
        w.check_candidates().await.unwrap();
        assert_eq!(w.candidates.len(), 2, "the waiting files were not re-read");

        // The queue drains: they are looked at again, the removed one forgotten.
        let taken = w.recorded.keys().next().unwrap().clone();
        let id = store.files_by_path(&taken).await.unwrap()[0].id;
        store.fail_file(id, "test: out of the queue").await.unwrap();
        w.check_candidates().await.unwrap();
        assert!(!w.queue_full);
        assert!(w.candidates.is_empty(), "{:?}", w.candidates.keys());
        assert!(w.recorded.contains_key(&waiting[1]));
        assert!(!w.recorded.contains_key(&waiting[0]));
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
