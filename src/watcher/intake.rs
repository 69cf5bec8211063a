//! Taking stable files: each judged on what opening it finds (symlinks, identity, size,
//! sparseness), then recorded as ready, or refused with its reason, in as few transactions as
//! possible; and the caps that pause intake (a full disk, `max_queued_files`).
//!
//! This module must not decide when a file is settled (`settle`), nor look at sidecars beyond
//! handing one to the store with its file (`sidecars`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Candidate, PendingSidecar, Watcher, name_problem};
use crate::disk::{self, Dir, Identity, Kind, Links};
use crate::format::Format;
use crate::store::{Claim, FileKey, Member, NewFile, Recorded, Store, StoreError};
use crate::telemetry;

impl Watcher {
    /// Judges a stable data file on what opening it finds, not on its path: no folder on its
    /// way is a symlink, a symlinked file stays inside the watch folder (unless
    /// `follow_symlinks`), it is still the version that settled, and it is within the watch's
    /// size rules. Sets `c.problem` when it is to be refused with a receipt.
    pub(super) fn admit(&self, rel: &str, c: &mut Candidate) -> Admission {
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
            self.early.forget(c.identity);
            c.identity = st.identity;
            c.since = Instant::now();
            c.hinted = false;
            return Admission::Later;
        }
        let size = st.identity.size;
        if size == 0 {
            // The platform fails the whole batch for one empty file (code 106).
            c.problem = Some(format!(
                "{rel} is empty (0 bytes): the platform fails a whole batch for an empty file (106 \"Dataset file is empty\"), so it was never sent; write the data into it and drop it again, or skip such markers with an `exclude` pattern (e.g. \"_SUCCESS\") in the [[watch]] for {}",
                self.watch.name
            ));
        } else if size > self.watch.max_file_bytes {
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
    pub(super) async fn record_plain(
        &mut self,
        plain: Vec<(String, Candidate)>,
    ) -> Result<bool, StoreError> {
        let plain = match &self.leases {
            Some(leases) => self.claimed(leases.member().clone(), plain).await?,
            None => plain,
        };
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
                    self.queue_count.added(1);
                    metrics::counter!(telemetry::FILES_DISCOVERED, "dataset" => file.dataset.clone(), "watch" => file.watch.clone())
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
            self.remember(rel, c.identity);
        }
        Ok(new)
    }

    /// In a fleet: the files of `plain` this instance claimed (or had claimed); one another
    /// instance claimed is left to it, and not looked at again while its version stays.
    async fn claimed(
        &mut self,
        member: Member,
        plain: Vec<(String, Candidate)>,
    ) -> Result<Vec<(String, Candidate)>, StoreError> {
        let mut mine = Vec::with_capacity(plain.len());
        let mut rest = plain.into_iter().peekable();
        while rest.peek().is_some() {
            // In pages: one statement (and commit) per page, each short.
            let page: Vec<(String, Candidate)> = rest.by_ref().take(CLAIM_PAGE).collect();
            let keys: Vec<FileKey> = page
                .iter()
                .map(|(rel, c)| FileKey {
                    watch: self.watch.name.clone(),
                    rel_path: rel.clone(),
                    dev: c.identity.dev as i64,
                    ino: c.identity.ino as i64,
                    size: c.identity.size as i64,
                    mtime_ns: c.identity.mtime_ns,
                })
                .collect();
            let claims = match member.claim_files(&keys).await {
                Ok(claims) => claims,
                Err(e) => {
                    // Nothing recorded: they all stay candidates, as on any database error.
                    self.candidates.extend(mine);
                    self.candidates.extend(page);
                    self.candidates.extend(rest);
                    return Err(e);
                }
            };
            for ((rel, c), claim) in page.into_iter().zip(claims) {
                match claim {
                    Claim::Won => mine.push((rel, c)),
                    Claim::Held { owner } if owner == member.id() => mine.push((rel, c)),
                    Claim::Held { owner } => {
                        tracing::debug!(file = %rel, %owner, "claimed by another instance");
                        self.remember(rel, c.identity);
                    }
                }
            }
        }
        Ok(mine)
    }

    /// An older version of `rel` is still in flight: look at this one again after another
    /// `settle`.
    pub(super) fn defer(&mut self, rel: String, c: Candidate) {
        let c = Candidate {
            since: Instant::now(),
            hinted: false,
            ..c
        };
        self.candidates.insert(rel, c);
    }

    /// Why the file `rel` cannot be ingested whatever its content: a name the platform would
    /// refuse, or a format that cannot be told.
    pub(super) fn problem_of(&self, rel: &str) -> Option<String> {
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
    pub(super) fn room_for_new_files(&mut self) -> bool {
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
    pub(super) fn new_file(&self, rel: &str, id: Identity, path: &Path) -> NewFile {
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

    pub(super) async fn record(
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
                    self.remember(rel, id);
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
                    self.queue_count.added(1);
                    metrics::counter!(telemetry::FILES_DISCOVERED, "dataset" => w.dataset.clone(), "watch" => w.name.clone())
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
        self.remember(rel, id);
        Ok(true)
    }

    /// Remembers a version handed to the store, while there is room: past `recorded_cap`,
    /// scans ask the store instead.
    pub(super) fn remember(&mut self, rel: String, identity: Identity) {
        if self.recorded.len() < self.recorded_cap || self.recorded.contains_key(&rel) {
            self.recorded.insert(rel, identity);
        }
    }
}

/// What becomes of a stable data file once it is opened and judged (see `Watcher::admit`).
pub(super) enum Admission {
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
pub(super) const RECORD_CHUNK: usize = 1000;

/// Files claimed per statement in a fleet (see `Watcher::claimed`).
const CLAIM_PAGE: usize = RECORD_CHUNK;

/// How many files are queued, for `max_queued_files`, without counting them each time: a
/// count reads every queued row, and asked at each look at the candidates it made the cost of
/// a file grow with the backlog (issue #23: 0.12 ms a file at 100,000 queued, 0.34 at 300,000).
/// Between counts, the files this watcher recorded are added to the last count. Files only
/// leave the queue through the other stages, so that sum is never below the truth for this
/// watcher's own writes; other watches' and instances' are seen at the next count, which
/// comes when the sum would reach the cap, or `RECOUNT_AFTER` after the last one.
#[derive(Default)]
pub(super) struct QueueCount {
    /// The last count and when it was made.
    counted: Option<(i64, Instant)>,
    /// Files this watcher queued since.
    added: i64,
}

/// The longest a count is used for (the window in which other writers' files go unseen).
const RECOUNT_AFTER: Duration = Duration::from_secs(10);

impl QueueCount {
    /// The queued files, counted again when taking `wanted` more could reach `cap` by the
    /// last count, or when that count is too old: a decision to pause is always made on a
    /// fresh count.
    pub(super) async fn queued(
        &mut self,
        store: &Store,
        cap: u64,
        wanted: i64,
    ) -> Result<i64, StoreError> {
        if let Some((counted, at)) = self.counted
            && at.elapsed() < RECOUNT_AFTER
            && counted + self.added + wanted <= cap as i64
        {
            return Ok(counted + self.added);
        }
        self.recount(store).await
    }

    /// The queued files counted now: while intake is paused, to see whether the queue drained.
    pub(super) async fn recount(&mut self, store: &Store) -> Result<i64, StoreError> {
        let counted = store.queued_files().await?;
        self.counted = Some((counted, Instant::now()));
        self.added = 0;
        Ok(counted)
    }

    /// `n` more files were queued by this watcher.
    pub(super) fn added(&mut self, n: i64) {
        self.added += n;
    }
}
