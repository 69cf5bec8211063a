//! Terminal outcome → files moved and receipts written.
//!
//! A file leaves its drop folder only here, and only once its fate is recorded in the store:
//! its batch succeeded (archive, delete or keep, per watch), or it failed or its batch did
//! (failed folder). Every file gets `NAME.receipt.json` beside where it went. The destination
//! is recorded before the move, so a crash between the move and the record is finished on the
//! next pass; a file replaced on disk by a new version since its upload is left in place for the
//! watcher, and only its receipt is written.
//!
//! Every move, removal and receipt goes through `disk`: nothing here follows a symlink a
//! producer planted (not at a receipt's name, not in place of `_archive/`), and a move never
//! replaces what is at its destination: a destination taken since it was recorded is chosen
//! again. Receipts are written 0640, and the folders made here 0750 (see `watcher`).
//!
//! This module must not talk to the platform.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{AfterSuccess, Watch};
use crate::disk::{self, Create, Dir, Folders, Kind, Links};
use crate::receipt::{self, DuplicateOf, Receipt, Status};
use crate::stage::{self, Next, Stage};
use crate::store::{BatchRow, BatchState, FileRow, FileState, Finalized, Store, StoreError};

mod names;
mod receipts;

use names::{
    free_name, id_name, insert_after_stem, is_the_file, name_taken, real_destination,
    rel_below_root, stat_now, with_suffix,
};

pub struct Archiver {
    /// Shared with the daemon; a reload adds and updates watches but never removes one, so
    /// files of a removed watch still get finished.
    pub watches: Arc<std::sync::RwLock<HashMap<String, Watch>>>,
    pub store: Store,
    pub wake: Arc<Notify>,
    /// In a fleet: a file is finished only under its batch's lease (or, without a batch, its
    /// watch's scan lease), so that no instance moves a file another owns.
    pub leases: Option<crate::membership::Leases>,
}

impl Archiver {
    /// Finishes files until `shutdown` (see `stage::run`).
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = self.wake.clone();
        let mut stage = Archiving {
            archiver: self,
            said: None,
        };
        stage::run(&mut stage, &wake, &shutdown).await;
    }

    /// Says which files cannot be finished (when that changes, then every 30 s), and when
    /// they all could be.
    fn report_stuck(&self, stuck: &[String], said: &mut Option<(usize, std::time::Instant)>) {
        if stuck.is_empty() {
            if said.take().is_some() {
                tracing::info!("every file whose batch ended is finished again");
            }
            return;
        }
        let due = match said {
            Some((n, at)) => *n != stuck.len() || at.elapsed() >= Duration::from_secs(30),
            None => true,
        };
        if due {
            *said = Some((stuck.len(), std::time::Instant::now()));
            tracing::error!(
                "cannot finish {} file(s) for now; they stay where they are (nothing is lost) and \
                 are tried again; e.g. {}",
                stuck.len(),
                stuck[0]
            );
        }
    }

    /// Finalizes every file whose fate is known, page by page. A file that cannot be finished
    /// now (its destination unwritable, its watch gone from the config) is skipped and tried
    /// again on the next pass: it never holds up the files after it.
    pub async fn pass(&self) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        let mut after = 0;
        loop {
            let mut files = self.store.files_to_finalize(after, 200).await?;
            let Some(last) = files.last() else {
                return Ok(pass);
            };
            after = last.id;
            if let Some(leases) = &self.leases {
                files = self.own(leases, files).await?;
                if !files.is_empty() {
                    // After the lease check, before any move: what the file system fences
                    // (see `receipts`), as the database cannot.
                    crate::crashpoint::hit("archive-owned");
                }
            }
            let mut batches: HashMap<i64, BatchRow> = HashMap::new();
            for f in &files {
                if let Some(id) = f.batch_id
                    && let std::collections::hash_map::Entry::Vacant(e) = batches.entry(id)
                {
                    e.insert(self.store.batch(id).await?);
                }
            }
            // The page's folders are opened once, for all its files.
            let mut folders = Folders::default();
            self.record_destinations(&mut files, &batches, &mut folders)
                .await?;
            // Files a watch mapped: their receipts name the staged file too.
            let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
            let staged = self.store.staged_of_files(&ids).await?;
            // The facts of a page's finished files are recorded together at its end: one
            // transaction, not a round trip per file. A crash before that repeats their
            // receipts on the next pass (each move's intent, `final_path`, is already
            // recorded, and a moved file is recognised there).
            let mut finished = Vec::new();
            // Receipts are made durable a page at a time, before the page's facts are
            // recorded: one sync per filesystem instead of two per file (12 ms each here).
            let mut unsynced = disk::PendingSync::default();
            for f in &files {
                let batch = f.batch_id.and_then(|id| batches.get(&id));
                match self
                    .finalize(f, batch, staged.get(&f.id), &mut unsynced, &mut folders)
                    .await
                {
                    Ok(Some(done)) => {
                        finished.push(done);
                        pass.done += 1;
                    }
                    Ok(None) => {}
                    Err(FinalizeError::Store(e)) => {
                        if self.synced(&mut unsynced, &mut finished, &mut pass) {
                            let _ = self.store.mark_finalized_many(&finished).await;
                        }
                        return Err(e);
                    }
                    Err(FinalizeError::Io(e)) => {
                        tracing::debug!(file = %f.rel_path, dataset = %f.dataset, "cannot finish this file: {e}");
                        pass.stuck.push(format!("{}: {e}", f.rel_path));
                    }
                }
            }
            if self.synced(&mut unsynced, &mut finished, &mut pass) {
                self.store.mark_finalized_many(&finished).await?;
            }
        }
    }

    /// The files of `page` this instance may finish: those of batches whose lease it holds
    /// or takes, and those without a batch of watches it scans.
    async fn own(
        &self,
        leases: &crate::membership::Leases,
        page: Vec<FileRow>,
    ) -> Result<Vec<FileRow>, StoreError> {
        let mut mine = Vec::with_capacity(page.len());
        let mut answers: HashMap<String, bool> = HashMap::new();
        for file in page {
            let key = match file.batch_id {
                Some(batch) => format!("batch {batch}"),
                None => format!("scan {}", file.watch),
            };
            let ours = match answers.get(&key) {
                Some(ours) => *ours,
                None => {
                    let ours = match file.batch_id {
                        Some(batch) => leases.batch(batch).await?,
                        None => leases.scan(&file.watch).await?,
                    };
                    answers.insert(key, ours);
                    ours
                }
            };
            if ours {
                mine.push(file);
            }
        }
        Ok(mine)
    }

    /// Makes the page's receipts durable; when that fails, its files are not recorded as
    /// finished (the next pass writes their receipts again) and the pass says why.
    fn synced(
        &self,
        unsynced: &mut disk::PendingSync,
        finished: &mut Vec<Finalized>,
        pass: &mut Pass,
    ) -> bool {
        match unsynced.sync() {
            Ok(()) => true,
            Err(e) => {
                pass.done -= finished.len();
                pass.stuck.extend(finished.drain(..).map(|f| {
                    format!(
                        "file #{}: its receipt cannot be synced to disk: {e}",
                        f.file_id
                    )
                }));
                false
            }
        }
    }

    /// Records where each file of the page that is to be moved will go (the moves' intents),
    /// in one statement for the page rather than one per file. Names are chosen as
    /// [`free_name`] does, and never one already promised to another file (two watches may
    /// share an archive, and a move can fail and wait while the name is free on disk).
    async fn record_destinations(
        &self,
        files: &mut [FileRow],
        batches: &HashMap<i64, BatchRow>,
        folders: &mut Folders,
    ) -> Result<(), StoreError> {
        let watches = self.watches.read().unwrap().clone();
        let mut chosen = Vec::new();
        for f in files.iter_mut().filter(|f| f.final_path.is_none()) {
            let Some(watch) = watches.get(&f.watch) else {
                continue;
            };
            let batch = f.batch_id.and_then(|id| batches.get(&id));
            let (_, _, Action::Move(dir)) = fate(f, batch, watch) else {
                continue;
            };
            if !stat_now(f, folders).is_ok_and(|now| now.identity == f.identity()) {
                continue; // not moved (see finalize)
            }
            let anchors = anchors(watch, f);
            let rel = rel_below_root(f);
            let dest = free_name(&dir, &rel, f.id, &anchors, folders);
            chosen.push((f.id, dir.join(&rel), dest.to_string_lossy().into_owned()));
        }
        // Names promised to files not moved yet (their move failed, say, while the archive
        // was unwritable) are taken too: a free name is one nobody is going to. Only the
        // names chosen here are looked up.
        let names: Vec<String> = chosen.iter().map(|(_, _, dest)| dest.clone()).collect();
        let mut claimed: std::collections::HashSet<String> = self
            .store
            .promised_among(&names)
            .await?
            .into_iter()
            .collect();
        let mut intents = Vec::with_capacity(chosen.len());
        for (id, at, dest) in chosen {
            let dest = if claimed.insert(dest.clone()) {
                dest
            } else {
                let dest = id_name(&at, id).to_string_lossy().into_owned();
                claimed.insert(dest.clone());
                dest
            };
            intents.push((id, dest));
        }
        // The first intent recorded stands: another instance that finishes these files too (in
        // a fleet, a paused one woken past its lease) moves them to the same place.
        let recorded: HashMap<i64, String> = self
            .store
            .record_final_paths(&intents)
            .await?
            .into_iter()
            .collect();
        for f in files.iter_mut().filter(|f| f.final_path.is_none()) {
            f.final_path = recorded.get(&f.id).cloned();
        }
        Ok(())
    }

    /// Moves one file and writes its receipt; returns the fact to record, or None when it is
    /// left for later (its watch is no longer in the config, or it has no destination yet).
    async fn finalize(
        &self,
        f: &FileRow,
        batch: Option<&BatchRow>,
        staged: Option<&crate::store::StagedFile>,
        unsynced: &mut disk::PendingSync,
        folders: &mut Folders,
    ) -> Result<Option<Finalized>, FinalizeError> {
        let Some(watch) = self.watches.read().unwrap().get(&f.watch).cloned() else {
            return Ok(None);
        };
        let watch = &watch;
        let (final_state, status, action) = fate(f, batch, watch);
        let succeeded =
            batch.is_some_and(|b| b.state() == BatchState::Success) && f.state != FileState::Failed;
        let receipt_dir = match &action {
            Action::Move(dir) => dir.clone(),
            _ => watch.archive_dir.clone(),
        };
        let mut receipt = self.receipt(f, batch, status).await?;
        if let Some(staged) = staged {
            receipt.mapping = Some(receipt::Mapping::of(staged));
            // Its batch is over: the staged bytes are not needed again.
            if let Err(e) = crate::mapped::remove(staged) {
                tracing::warn!(file = %f.rel_path, staged = %staged.path, "cannot remove the staged file ({e}); remove it by hand");
            }
        }

        let anchors = anchors(watch, f);
        let anchors = &anchors[..];
        let root = [Path::new(&f.root)];
        let src = f.abs_path();
        let recorded = f.identity();
        let same_version = stat_now(f, folders).is_ok_and(|now| now.identity == recorded);
        if succeeded && !same_version {
            self.set_aside_if_appended(f, batch, &mut receipt).await?;
        }
        let io = |what: String| move |e: std::io::Error| FinalizeError::Io(format!("{what}: {e}"));
        let dest = match (&action, same_version) {
            (Action::Move(_), true) => {
                // The intent is recorded before the move (by `record_destinations`), so after
                // a crash the next pass finds where it was going. A file without one changed
                // back under us since that look: the next pass records its destination, among
                // the names already promised, rather than this one picking a name alone.
                let Some(dest) = f
                    .final_path
                    .as_deref()
                    .map(|p| real_destination(p, &rel_below_root(f)))
                else {
                    return Ok(None);
                };
                let dest = self.move_to(f, &src, dest, anchors, folders).await?;
                crate::crashpoint::hit("archive-moved");
                Some(dest)
            }
            (Action::Move(_), false) => {
                // Moved already (crash after the move, or by another instance that took the
                // batch over since this page was read), deleted by someone, or replaced by a
                // newer version that the watcher will take: write the receipt only.
                let found_at = |path: &str, folders: &mut Folders| {
                    let dest = real_destination(path, &rel_below_root(f));
                    folders
                        .stat_file(&dest, anchors, Links::Anywhere)
                        .is_ok_and(|st| is_the_file(&st, &recorded))
                        .then_some(dest)
                };
                let mut moved = f.final_path.as_deref().and_then(|p| found_at(p, folders));
                if moved.is_none() {
                    // What this page says may be stale: the file's row says where it went.
                    match self.store.file(f.id).await? {
                        Some(now) if now.finalized => {
                            tracing::info!(file = %f.rel_path, dataset = %f.dataset, "already finished by another instance; left as it is");
                            return Ok(None);
                        }
                        Some(now) => {
                            moved = now.final_path.as_deref().and_then(|p| found_at(p, folders));
                        }
                        None => return Ok(None),
                    }
                }
                if moved.is_none() && receipt.note.is_none() {
                    receipt.note = Some(
                        "the file was no longer in the drop folder (or had changed) when its batch ended; nothing was moved"
                            .into(),
                    );
                }
                moved
            }
            (Action::Delete, true) => {
                let (dir, name) = folders
                    .folder_of(&src, &root, Create::No)
                    .map_err(io(format!("deleting {}", src.display())))?;
                dir.remove(name)
                    .map_err(io(format!("deleting {}", src.display())))?;
                None
            }
            _ => None,
        };
        if let Some(side) = &f.sidecar {
            // The sidecar travels with its file (deleted with it under after_success =
            // "delete"; never left behind, where the watcher would take it again).
            let side_src = Path::new(&f.root).join(side);
            let side_dest = match (&dest, &action) {
                (Some(d), _) => Some(with_suffix(d, crate::replay::SUFFIX)),
                (None, Action::Delete) => None,
                (None, _) => Some(free_name(
                    &receipt_dir,
                    Path::new(side),
                    f.id,
                    anchors,
                    folders,
                )),
            };
            match side_dest {
                Some(to) => {
                    if name_taken(&side_src, &root, folders) && !name_taken(&to, anchors, folders) {
                        let moving =
                            format!("moving sidecar {} to {}", side_src.display(), to.display());
                        let (from_dir, from_name) = folders
                            .folder_of(&side_src, &root, Create::No)
                            .map_err(io(moving.clone()))?;
                        let (to_dir, to_name) = folders
                            .folder_of(&to, anchors, Create::Mode(disk::OWN_FOLDER_MODE))
                            .map_err(io(moving.clone()))?;
                        disk::move_file(&from_dir, from_name, &to_dir, to_name)
                            .map_err(io(moving))?;
                    }
                    if name_taken(&to, anchors, folders) {
                        receipt.sidecar_archived_to = Some(to.to_string_lossy().into_owned());
                    }
                }
                None => {
                    if name_taken(&side_src, &root, folders) {
                        let deleting = format!("deleting sidecar {}", side_src.display());
                        let (dir, name) = folders
                            .folder_of(&side_src, &root, Create::No)
                            .map_err(io(deleting.clone()))?;
                        dir.remove(name).map_err(io(deleting))?;
                    }
                }
            }
        }
        let receipt_path = match &dest {
            Some(d) => receipt::path_for(d, f.id),
            None => receipt::path_for(
                &free_name(&receipt_dir, &rel_below_root(f), f.id, anchors, folders),
                f.id,
            ),
        };
        if let Some(d) = &dest {
            receipt.archived_to = Some(d.to_string_lossy().into_owned());
        }
        let writing = format!("writing receipt {}", receipt_path.display());
        let (dir, name) = folders
            .folder_of(&receipt_path, anchors, Create::Mode(disk::OWN_FOLDER_MODE))
            .map_err(io(writing.clone()))?;
        let written = receipts::write(&dir, name, &receipt, unsynced).map_err(io(writing))?;
        let done = Finalized {
            file_id: f.id,
            state: final_state,
            final_path: dest.as_deref().map(|p| p.to_string_lossy().into_owned()),
            detail: format!("{}; receipt {}", status.as_str(), receipt_path.display()),
            receipt: Some(receipt_path.to_string_lossy().into_owned()),
        };
        if written == receipts::Written::AlreadyThere {
            // Recorded as finished (if it is not yet) but not counted: whoever wrote the
            // receipt counted it.
            tracing::info!(
                file = %f.rel_path, dataset = %f.dataset,
                "already finished by another instance (or by this one before a restart): its receipt {} is left as it is",
                receipt_path.display()
            );
            return Ok(Some(done));
        }
        let counter = match final_state {
            FileState::Done => crate::telemetry::FILES_INGESTED,
            FileState::Duplicate => crate::telemetry::FILES_DUPLICATE,
            _ => crate::telemetry::FILES_FAILED,
        };
        metrics::counter!(counter, "dataset" => f.dataset.clone(), "watch" => f.watch.clone())
            .increment(1);
        if final_state == FileState::Done {
            crate::telemetry::file_succeeded(f);
        }
        tracing::info!(
            file = %f.rel_path, dataset = %f.dataset,
            batch = batch.map(|b| b.label()).unwrap_or_default(), status = status.as_str(), "file finished; {}", receipt_path.display()
        );
        Ok(Some(done))
    }

    /// A file that grew after its content was ingested starts with exactly the ingested bytes:
    /// taking the grown file as a new version would ingest those records twice. It is recorded
    /// as failed (so the failed folder gets it, with a receipt saying why) before the ingested
    /// version is finalized, so the watcher never takes it as new.
    async fn set_aside_if_appended(
        &self,
        f: &FileRow,
        batch: Option<&BatchRow>,
        receipt: &mut Receipt,
    ) -> Result<(), FinalizeError> {
        let Some(sha) = f.sha256.clone() else {
            return Ok(());
        };
        // Opened once, not following a symlink; what was ingested is compared with the first
        // bytes of that very descriptor.
        let abs = f.abs_path();
        let Ok(below) = abs.strip_prefix(&f.root) else {
            return Ok(());
        };
        let Ok(opened) =
            Dir::anchor(Path::new(&f.root)).and_then(|root| root.open_file(below, Links::Refuse))
        else {
            return Ok(());
        };
        let now = opened.stat.identity;
        if opened.stat.kind != Kind::File || now.size <= f.size as u64 {
            return Ok(());
        }
        let len = f.size as u64;
        let prefix = tokio::task::spawn_blocking(move || disk::sha256(&opened.file, len))
            .await
            .ok()
            .and_then(Result::ok);
        if prefix.as_deref() != Some(sha.as_str()) {
            return Ok(()); // rewritten, not appended: a new version, for the watcher
        }
        let batch_label = batch.map(|b| b.label()).unwrap_or_default();
        let reason = format!(
            "{} grew from {} to {} bytes after its first {} bytes were ingested in batch {batch_label}: \
             what was written after byte {} was appended once the file had been taken. It is not \
             sent again, so that no record is ingested twice; put only the new records in a new \
             file to ingest them",
            f.rel_path, f.size, now.size, f.size, f.size
        );
        let grown = crate::store::NewFile {
            watch: f.watch.clone(),
            dataset: f.dataset.clone(),
            format: f.format,
            multiline_json: f.multiline_json,
            root: f.root.clone(),
            rel_path: f.rel_path.clone(),
            dev: now.dev as i64,
            ino: now.ino as i64,
            size: now.size as i64,
            mtime_ns: now.mtime_ns,
            raw_path: f.raw_path.clone(),
        };
        if self.store.record_rejected(&grown, &reason).await?.is_some() {
            tracing::warn!(file = %f.rel_path, dataset = %f.dataset, "{reason}");
        }
        receipt.note = Some(format!(
            "{} grew after it was ingested; the grown file was set aside in the failed folder (see its receipt)",
            f.rel_path
        ));
        Ok(())
    }

    /// The file's receipt, with what other rows tell: its replay's reason, the file its
    /// content repeats.
    async fn receipt(
        &self,
        f: &FileRow,
        batch: Option<&BatchRow>,
        status: Status,
    ) -> Result<Receipt, StoreError> {
        let mut r = Receipt::new(f, batch, status, crate::store::now_ms());
        if let Some(b) = batch
            && b.replay.is_some()
        {
            r.replay_reason = Some(
                self.store
                    .replay_reason(b.id)
                    .await?
                    .unwrap_or_else(|| crate::replay::DEFAULT_REASON.into()),
            );
        }
        if let Some(of) = f.duplicate_of
            && let Some(earlier) = self.store.file(of).await?
        {
            let earlier_batch = match earlier.batch_id {
                Some(id) => self.store.batch(id).await?.remote_id().map(str::to_owned),
                None => None,
            };
            r.reason = Some(format!(
                "the same content was already ingested into dataset {} from {}{}; not ingested again (set allow_duplicates = true to ingest repeats)",
                f.dataset,
                earlier.rel_path,
                earlier_batch
                    .as_ref()
                    .map(|b| format!(" in batch {b}"))
                    .unwrap_or_default()
            ));
            r.duplicate_of = Some(DuplicateOf {
                batch: earlier_batch,
                file: earlier.rel_path,
            });
        }
        Ok(r)
    }
}

/// What one archiver pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Files moved (or deleted) with their receipt written.
    pub done: usize,
    /// Files that could not be finished now, with why.
    pub stuck: Vec<String>,
}

/// The archiver as a stage: a pass, with what it last said about files it cannot finish.
struct Archiving {
    archiver: Archiver,
    said: Option<(usize, std::time::Instant)>,
}

impl Stage for Archiving {
    const NAME: &'static str = "archiver";

    async fn pass(&mut self) -> Result<Next, StoreError> {
        let pass = self.archiver.pass().await?;
        self.archiver.report_stuck(&pass.stuck, &mut self.said);
        Ok(if pass.done > 0 {
            Next::Now
        } else if pass.stuck.is_empty() {
            Next::After(Duration::from_millis(500))
        } else {
            Next::After(Duration::from_secs(2))
        })
    }
}

/// What becomes of a file whose batch ended: its final state, the receipt's status, and the
/// move the watch's settings ask for.
fn fate(f: &FileRow, batch: Option<&BatchRow>, watch: &Watch) -> (FileState, Status, Action) {
    let succeeded =
        batch.is_some_and(|b| b.state() == BatchState::Success) && f.state != FileState::Failed;
    let (final_state, status) = if f.state == FileState::Duplicate {
        (FileState::Duplicate, Status::Duplicate)
    } else if succeeded {
        (FileState::Done, Status::Success)
    } else {
        (FileState::Failed, Status::Failed)
    };
    let action = match status {
        Status::Failed => Action::Move(watch.failed_dir.clone()),
        Status::Success | Status::Duplicate => match watch.after_success {
            AfterSuccess::Archive => Action::Move(watch.archive_dir.clone()),
            AfterSuccess::Delete => Action::Delete,
            AfterSuccess::Keep => Action::Keep,
        },
    };
    (final_state, status, action)
}

enum Action {
    Move(PathBuf),
    Delete,
    Keep,
}

#[derive(Debug, thiserror::Error)]
enum FinalizeError {
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The folders a path of this file may lie below: its drop folder as recorded and as
/// configured, and the watch's archive and failed folders (see `disk::anchored`).
pub fn anchors<'a>(watch: &'a Watch, f: &'a FileRow) -> [&'a Path; 4] {
    [
        Path::new(&f.root),
        &watch.path,
        &watch.archive_dir,
        &watch.failed_dir,
    ]
}

impl Archiver {
    /// Moves the file at `src` to `dest` (both through `disk`). A destination that something
    /// took since it was recorded (a name is checked at the moment of the move, never
    /// replaced) gets a new, unguessable name, recorded before the move is tried again.
    async fn move_to(
        &self,
        f: &FileRow,
        src: &Path,
        mut dest: PathBuf,
        anchors: &[&Path],
        folders: &mut Folders,
    ) -> Result<PathBuf, FinalizeError> {
        let failed = |dest: &Path, e: std::io::Error| {
            let why = if disk::is_symlink_refusal(&e) {
                "a folder on the way is a symbolic link, which batchdrop never writes through; \
                 remove it (batchdrop then makes its own folder; to keep files elsewhere, set \
                 archive_dir or failed_dir)"
                    .to_owned()
            } else {
                e.to_string()
            };
            FinalizeError::Io(format!(
                "moving {} to {}: {why}",
                src.display(),
                dest.display()
            ))
        };
        let (from, from_name) = folders
            .folder_of(src, &[Path::new(&f.root)], Create::No)
            .map_err(|e| failed(&dest, e))?;
        for _ in 0..3 {
            let (to, to_name) = folders
                .folder_of(&dest, anchors, Create::Mode(disk::OWN_FOLDER_MODE))
                .map_err(|e| failed(&dest, e))?;
            match disk::move_file(&from, from_name, &to, to_name) {
                Ok(()) => return Ok(dest),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let fresh = insert_after_stem(
                        &dest,
                        &format!(".{}.{:08x}", f.id, rand::random::<u32>()),
                    );
                    tracing::warn!(
                        file = %f.rel_path, dataset = %f.dataset,
                        "{} was taken since it was chosen; moving to {} instead",
                        dest.display(),
                        fresh.display()
                    );
                    self.store
                        .set_final_paths(&[(f.id, fresh.to_string_lossy().into_owned())])
                        .await?;
                    dest = fresh;
                }
                Err(e) => return Err(failed(&dest, e)),
            }
        }
        Err(FinalizeError::Io(format!(
            "moving {} to {}: every name tried was taken; tried again later",
            src.display(),
            dest.display()
        )))
    }
}
