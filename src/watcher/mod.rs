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
//! `mod.rs` runs the watch (events, scans, the look at candidates); `scan` finds files,
//! `settle` decides when one is stable (pure), `intake` judges and records stable files,
//! `sidecars` handles `.replay` sidecars, `names` says which paths are data files.
//!
//! This module must not upload, batch or move anything: it only writes "ready" (or rejected)
//! rows.

mod intake;
mod names;
mod scan;
mod settle;
mod sidecars;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{Watch, WatchMode};
use crate::disk::{self, Dir};
use crate::replay::{self, ReplayError, Sidecar};
use crate::store::{Store, StoreError};
use crate::telemetry::Health;
use intake::{Admission, QueueCount, RECORD_CHUNK};
use settle::Look;

/// What a file looks like on disk (now in `disk`, where every file is judged).
pub use crate::disk::Identity;

pub use names::{MAX_DEPTH, MAX_PATH_BYTES, is_ignored_name, name_problem};
pub use sidecars::MAX_SIDECAR_BYTES;

/// Candidates held at most: about 200 bytes each. Beyond it files wait on disk for the next
/// scan, so a backlog of a million files costs what one of 20,000 does.
const CANDIDATE_CAP: usize = 20_000;

/// Recorded data files remembered at most (about 100 bytes each); rescans ask the store
/// about the others, a page at a time.
const RECORDED_CAP: usize = 50_000;

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
    /// At most this many candidates (`CANDIDATE_CAP`; smaller in tests).
    candidate_cap: usize,
    /// A file was left on disk unconsidered (candidates at their cap, a walk stopped early):
    /// a scan runs again as soon as the candidates are down to half their cap.
    missed: bool,
    /// Settled sidecars by the path of their data file.
    sidecars: HashMap<String, PendingSidecar>,
    /// Versions already handed to the store, so rescans do not ask it again: a cache of at
    /// most `recorded_cap` data files (sidecars always), the store answers for the rest.
    recorded: HashMap<String, Identity>,
    /// `RECORDED_CAP`, smaller in tests.
    recorded_cap: usize,
    /// How many files this watcher is waiting on (for `run --once`).
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Intake is paused: the state directory is (nearly) full.
    intake_paused: bool,
    /// Names never taken (symlinks to folders, pipes, sockets, devices) already named in the
    /// log.
    untaken: HashSet<PathBuf>,
    /// Intake is paused: `max_queued_files` files are queued (see `check_candidates`).
    queue_full: bool,
    /// The queue's size as last counted, plus what this watcher recorded since (counting
    /// reads every queued row: see `QueueCount`).
    queue_count: QueueCount,
    /// Events can no longer be trusted to mention every new file (a watch could not be
    /// added, e.g. the inotify watch limit was reached): scanning takes over.
    events_broken: bool,
    /// When the candidates are next looked at: the moment the first of them has waited its
    /// `settle` (so a quiet file is taken on time, not up to a tick late), and at most a tick
    /// away; sooner after a large file is found (see `scan::EARLY_LOOK`), so that its early
    /// hash can start. Events do not trigger a look: during a burst that would re-read every
    /// candidate for each event.
    next_check: Instant,
    /// In a fleet: this watcher scans and records only while its instance is the watch's
    /// scanner (the others upload and archive).
    pub leases: Option<crate::membership::Leases>,
    /// Until when the scanner role was last confirmed (asked again a few times per lease).
    scanner_until: Option<Instant>,
    /// The first scan ended (see `BacklogScan`).
    scanned_once: bool,
    /// Large candidates that held still between two looks are hashed here while they settle,
    /// for their upload (`crate::early_hash`); off by default.
    pub early: crate::early_hash::EarlyHashes,
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
            candidate_cap: CANDIDATE_CAP,
            missed: false,
            sidecars: HashMap::new(),
            recorded: HashMap::new(),
            recorded_cap: RECORDED_CAP,
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            next_check: Instant::now(),
            intake_paused: false,
            queue_full: false,
            queue_count: QueueCount::default(),
            untaken: HashSet::new(),
            events_broken: false,
            leases: None,
            scanner_until: None,
            scanned_once: false,
            early: Default::default(),
        }
    }

    /// Whether this watcher may scan and record now: always, but in a fleet only while its
    /// instance holds the watch's scan lease. A watcher that is not the scanner forgets its
    /// candidates: the scanner finds them itself.
    async fn scanner(&mut self) -> bool {
        let Some(leases) = &self.leases else {
            return true;
        };
        if self
            .scanner_until
            .is_some_and(|until| Instant::now() < until)
        {
            return true;
        }
        let confirmed = match leases.scan(&self.watch.name).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(watch = %self.watch.name, "cannot confirm the scanner role: {}; not scanning until it can", e.explain());
                false
            }
        };
        if confirmed {
            self.scanner_until = Some(Instant::now() + leases.member().fleet().lease() / 4);
        } else {
            self.scanner_until = None;
            self.candidates.clear();
            self.sidecars.clear();
            self.recorded.clear();
        }
        confirmed
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
        // all decisions are made here, on the async side. It leaves out what is never news
        // (reads, batchdrop's own folders): the queue holds every event until the watch loop
        // reads it, and during a long scan of a backlog the uploads and moves of the files
        // already taken made it grow by several events per file.
        let _watcher = match self.watch.mode {
            WatchMode::Poll => None,
            WatchMode::Events => {
                let tx = tx.clone();
                let own = [
                    self.watch.archive_dir.clone(),
                    self.watch.failed_dir.clone(),
                ];
                // A symlink to a folder is never followed: notify would otherwise watch (and
                // report) a folder outside the drop folder as if it were in it.
                let started = notify::RecommendedWatcher::new(
                    move |ev| {
                        if scan::may_be_news(&ev, &own) {
                            let _ = tx.send(ev);
                        }
                    },
                    notify::Config::default().with_follow_symlinks(false),
                )
                .and_then(|mut w| {
                    w.watch(&self.watch.path, RecursiveMode::Recursive)?;
                    // Batchdrop's own folders inside the drop folder are not watched at all:
                    // the archiver's moves and receipts there would otherwise cost the kernel
                    // and notify's thread several events per file, each only to be dropped by
                    // `may_be_news`. (One recreated while the daemon runs is watched again;
                    // the filter still drops its events.)
                    for own in [&self.watch.archive_dir, &self.watch.failed_dir] {
                        if own.starts_with(&self.watch.path) && own != &self.watch.path {
                            let _ = w.unwatch(own);
                        }
                    }
                    Ok(w)
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

        let mut next_scan = Instant::now();
        let mut trouble = crate::stage::StoreTrouble::new("watcher");
        loop {
            if !self.scanner().await {
                // Another instance scans this watch: nothing waits on this one.
                self.pending.store(0, std::sync::atomic::Ordering::SeqCst);
                let retry = self.leases.as_ref().map_or(tick, |l| l.retry_after());
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(retry) => {}
                }
                while rx.try_recv().is_ok() {}
                next_scan = Instant::now();
                continue;
            }
            if Instant::now() >= next_scan {
                self.scan().await?;
                next_scan = Instant::now() + rescan_every;
            }
            let mut pause = None;
            if Instant::now() >= self.next_check {
                // check_candidates brings this closer for a file due sooner.
                self.next_check = Instant::now() + tick;
                match self.check_candidates().await {
                    Ok(()) => trouble.ok(),
                    Err(e) => pause = Some(trouble.failed(&e)),
                }
            }
            if self.missed && self.candidates.len() <= self.candidate_cap / 2 {
                next_scan = Instant::now();
            }
            // A file left on disk for the next scan is waited on too (`run --once`).
            self.pending.store(
                self.candidates.len() + usize::from(self.missed),
                std::sync::atomic::Ordering::SeqCst,
            );
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
        let at = Instant::now();
        for (rel, c) in self.candidates.iter_mut() {
            // A file not yet due is not read again: a change meanwhile restarts its clock
            // when an event or a scan brings it (`consider_rel`), and one no event told of
            // (a write through a mapping, another host's on a network mount) is seen at the
            // look when it is due. During a burst, reading every waiting file each tick
            // cost more than anything else the watcher does. A large file is still looked
            // at each tick: two looks in a row that find it unchanged start its early hash.
            let due = settle::due(rel, c.since, c.hinted, settle);
            if at < due && !self.early.wants(c.identity.size) {
                self.next_check = self.next_check.min(due);
                continue;
            }
            let seen = Identity::read(&c.path).ok();
            match settle::look(
                rel,
                c.identity,
                c.since,
                c.hinted,
                settle,
                seen,
                Instant::now(),
            ) {
                Look::Gone => {
                    self.early.forget(c.identity);
                    gone.push(rel.clone());
                }
                Look::Changed(now) => {
                    self.early.forget(c.identity);
                    c.identity = now;
                    c.since = Instant::now();
                    c.hinted = false;
                }
                Look::Settled => {
                    early_hash(&self.early, &self.watch, c);
                    stable.push(rel.clone());
                }
                Look::Due(due) => {
                    early_hash(&self.early, &self.watch, c);
                    self.next_check = self.next_check.min(due);
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
        let data_files = stable
            .iter()
            .filter(|r| replay::data_file_of(r).is_none())
            .count() as i64;
        let queued = self
            .queue_count
            .queued(&self.store, self.max_queued_files, data_files)
            .await?;
        let mut room = (self.max_queued_files as i64 - queued).max(0);
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
            let queued = self.queue_count.recount(&self.store).await?;
            if queued >= self.max_queued_files as i64 {
                return Ok(false);
            }
            self.queue_full = false;
        }
        Ok(true)
    }
}

/// Starts hashing a candidate seen unchanged since the look before (a file still being written
/// is never hashed), for its upload; not a mapped watch's files, whose staged files are what is
/// sent.
fn early_hash(early: &crate::early_hash::EarlyHashes, watch: &Watch, c: &Candidate) {
    if watch.mapping.is_none() && c.problem.is_none() {
        early.start(&watch.path, &c.path, c.identity);
    }
}
