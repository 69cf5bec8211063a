//! Terminal outcome → files moved and receipts written.
//!
//! A file leaves its drop folder only here, and only once its fate is recorded in the store:
//! its batch succeeded (archive, delete or keep, per watch), or it failed or its batch did
//! (failed folder). Every file gets `NAME.receipt.json` beside where it went. The destination
//! is recorded before the move, so a crash between the move and the record is finished on the
//! next pass; a file replaced on disk by a new version since its upload is left in place for the
//! watcher, and only its receipt is written.
//!
//! This module must not talk to the platform.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{AfterSuccess, Watch};
use crate::store::{BatchRow, FileRow, Finalized, Store, StoreError, batch_state, file_state};
use crate::watcher::Identity;

pub struct Archiver {
    /// Shared with the daemon; a reload adds and updates watches but never removes one, so
    /// files of a removed watch still get finished.
    pub watches: Arc<std::sync::RwLock<HashMap<String, Watch>>>,
    pub store: Store,
    pub wake: Arc<Notify>,
}

impl Archiver {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let mut trouble = crate::store::StoreTrouble::new("archiver");
        let mut said: Option<(usize, std::time::Instant)> = None;
        loop {
            let wait = match self.pass().await {
                Ok(p) => {
                    trouble.ok();
                    self.report_stuck(&p.stuck, &mut said);
                    if p.done > 0 {
                        continue;
                    }
                    if p.stuck.is_empty() {
                        Duration::from_millis(500)
                    } else {
                        Duration::from_secs(2)
                    }
                }
                Err(e) => trouble.failed(&e),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
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
            let mut batches: HashMap<i64, BatchRow> = HashMap::new();
            for f in &files {
                if let Some(id) = f.batch_id
                    && let std::collections::hash_map::Entry::Vacant(e) = batches.entry(id)
                {
                    e.insert(self.store.batch(id).await?);
                }
            }
            self.record_destinations(&mut files, &batches).await?;
            // The facts of a page's finished files are recorded together at its end: one
            // transaction, not a round trip per file. A crash before that repeats their
            // receipts on the next pass (each move's intent, `final_path`, is already
            // recorded, and a moved file is recognised there).
            let mut finished = Vec::new();
            for f in &files {
                let batch = f.batch_id.and_then(|id| batches.get(&id));
                match self.finalize(f, batch).await {
                    Ok(Some(done)) => {
                        finished.push(done);
                        pass.done += 1;
                    }
                    Ok(None) => {}
                    Err(FinalizeError::Store(e)) => {
                        let _ = self.store.mark_finalized_many(&finished).await;
                        return Err(e);
                    }
                    Err(FinalizeError::Io(e)) => {
                        tracing::debug!(file = %f.rel_path, dataset = %f.dataset, "cannot finish this file: {e}");
                        pass.stuck.push(format!("{}: {e}", f.rel_path));
                    }
                }
            }
            self.store.mark_finalized_many(&finished).await?;
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
    ) -> Result<(), StoreError> {
        let watches = self.watches.read().unwrap().clone();
        // Names promised to files not moved yet (their move failed, say, while the archive
        // was unwritable) are taken too: a free name is one nobody is going to.
        let mut claimed: std::collections::HashSet<PathBuf> = self
            .store
            .pending_destinations()
            .await?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let mut intents = Vec::new();
        for f in files.iter_mut().filter(|f| f.final_path.is_none()) {
            let Some(watch) = watches.get(&f.watch) else {
                continue;
            };
            let batch = f.batch_id.and_then(|id| batches.get(&id));
            let (_, _, Action::Move(dir)) = fate(f, batch, watch) else {
                continue;
            };
            let recorded = Identity {
                dev: f.dev as u64,
                ino: f.ino as u64,
                size: f.size as u64,
                mtime_ns: f.mtime_ns,
            };
            if !Identity::read(&f.abs_path()).is_ok_and(|now| now == recorded) {
                continue; // not moved (see finalize)
            }
            let mut dest = free_name(&dir, &f.rel_path, f.id);
            if !claimed.insert(dest.clone()) {
                dest = id_name(&dir.join(&f.rel_path), f.id);
                claimed.insert(dest.clone());
            }
            let dest = dest.to_string_lossy().into_owned();
            intents.push((f.id, dest.clone()));
            f.final_path = Some(dest);
        }
        self.store.set_final_paths(&intents).await
    }

    /// Moves one file and writes its receipt; returns the fact to record, or None when it is
    /// left for later (its watch is no longer in the config, or it has no destination yet).
    async fn finalize(
        &self,
        f: &FileRow,
        batch: Option<&BatchRow>,
    ) -> Result<Option<Finalized>, FinalizeError> {
        let Some(watch) = self.watches.read().unwrap().get(&f.watch).cloned() else {
            return Ok(None);
        };
        let watch = &watch;
        let (final_state, status, action) = fate(f, batch, watch);
        let succeeded =
            batch.is_some_and(|b| b.state == batch_state::SUCCESS) && f.state != file_state::FAILED;
        let receipt_dir = match &action {
            Action::Move(dir) => dir.clone(),
            _ => watch.archive_dir.clone(),
        };
        let mut receipt = self.receipt(f, batch, status).await?;

        let src = f.abs_path();
        let recorded = Identity {
            dev: f.dev as u64,
            ino: f.ino as u64,
            size: f.size as u64,
            mtime_ns: f.mtime_ns,
        };
        let same_version = Identity::read(&src).is_ok_and(|now| now == recorded);
        if succeeded && !same_version {
            self.set_aside_if_appended(f, batch, &src, &mut receipt)
                .await?;
        }
        let dest = match (&action, same_version) {
            (Action::Move(_), true) => {
                // The intent is recorded before the move (by `record_destinations`), so after
                // a crash the next pass finds where it was going. A file without one changed
                // back under us since that look: the next pass records its destination, among
                // the names already promised, rather than this one picking a name alone.
                let Some(dest) = f.final_path.as_ref().map(PathBuf::from) else {
                    return Ok(None);
                };
                move_file(&src, &dest).map_err(|e| {
                    FinalizeError::Io(format!(
                        "moving {} to {}: {e}",
                        src.display(),
                        dest.display()
                    ))
                })?;
                crate::crashpoint::hit("archive-moved");
                Some(dest)
            }
            (Action::Move(_), false) => {
                // Moved already (crash after the move), deleted by someone, or replaced by a
                // newer version that the watcher will take: write the receipt only.
                match &f.final_path {
                    Some(p) if Path::new(p).exists() => Some(PathBuf::from(p)),
                    _ => {
                        if receipt.get("note").is_none() {
                            receipt["note"] = json!(
                                "the file was no longer in the drop folder (or had changed) when its batch ended; nothing was moved"
                            );
                        }
                        None
                    }
                }
            }
            (Action::Delete, true) => {
                std::fs::remove_file(&src)
                    .map_err(|e| FinalizeError::Io(format!("deleting {}: {e}", src.display())))?;
                None
            }
            _ => None,
        };
        if let Some(side) = &f.sidecar {
            // The sidecar travels with its file (deleted with it under after_success =
            // "delete"; never left behind, where the watcher would take it again).
            let side_src = Path::new(&f.root).join(side);
            let side_dest = match (&dest, &action) {
                (Some(d), _) => Some(PathBuf::from(format!(
                    "{}{}",
                    d.display(),
                    crate::replay::SUFFIX
                ))),
                (None, Action::Delete) => None,
                (None, _) => Some(free_name(&receipt_dir, side, f.id)),
            };
            match side_dest {
                Some(to) => {
                    if side_src.exists() && !to.exists() {
                        move_file(&side_src, &to).map_err(|e| {
                            FinalizeError::Io(format!(
                                "moving sidecar {} to {}: {e}",
                                side_src.display(),
                                to.display()
                            ))
                        })?;
                    }
                    if to.exists() {
                        receipt["sidecar_archived_to"] = json!(to.to_string_lossy());
                    }
                }
                None => {
                    if side_src.exists() {
                        std::fs::remove_file(&side_src).map_err(|e| {
                            FinalizeError::Io(format!(
                                "deleting sidecar {}: {e}",
                                side_src.display()
                            ))
                        })?;
                    }
                }
            }
        }
        let receipt_path = match &dest {
            Some(d) => receipt_for(d, f.id),
            None => receipt_for(&free_name(&receipt_dir, &f.rel_path, f.id), f.id),
        };
        if let Some(d) = &dest {
            receipt["archived_to"] = json!(d.to_string_lossy());
        }
        write_atomically(
            &receipt_path,
            &serde_json::to_vec_pretty(&receipt).expect("json"),
        )
        .map_err(|e| {
            FinalizeError::Io(format!("writing receipt {}: {e}", receipt_path.display()))
        })?;
        let done = Finalized {
            file_id: f.id,
            state: final_state.to_owned(),
            final_path: dest.as_deref().map(|p| p.to_string_lossy().into_owned()),
            detail: format!("{status}; receipt {}", receipt_path.display()),
        };
        let counter = match final_state {
            file_state::DONE => crate::telemetry::FILES_INGESTED,
            file_state::DUPLICATE => crate::telemetry::FILES_DUPLICATE,
            _ => crate::telemetry::FILES_FAILED,
        };
        metrics::counter!(counter, "dataset" => f.dataset.clone()).increment(1);
        tracing::info!(
            file = %f.rel_path, dataset = %f.dataset,
            batch = batch.map(|b| b.label()).unwrap_or_default(), status, "file finished; {}", receipt_path.display()
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
        src: &Path,
        receipt: &mut serde_json::Value,
    ) -> Result<(), FinalizeError> {
        let Some(sha) = f.sha256.clone() else {
            return Ok(());
        };
        let Ok(meta) = std::fs::symlink_metadata(src) else {
            return Ok(());
        };
        let now = Identity::of(&meta);
        if !meta.is_file() || now.size <= f.size as u64 {
            return Ok(());
        }
        let path = src.to_owned();
        let len = f.size as u64;
        let prefix = tokio::task::spawn_blocking(move || sha256_prefix(&path, len))
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
            format: f.format.clone(),
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
        receipt["note"] = json!(format!(
            "{} grew after it was ingested; the grown file was set aside in the failed folder (see its receipt)",
            f.rel_path
        ));
        Ok(())
    }

    async fn receipt(
        &self,
        f: &FileRow,
        batch: Option<&BatchRow>,
        status: &str,
    ) -> Result<serde_json::Value, StoreError> {
        let outcome: serde_json::Value = batch
            .and_then(|b| b.outcome_json.as_deref())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null);
        let metrics = outcome
            .get("metrics")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let failed_records = metrics
            .get("failedRecordCount")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let mut errors = outcome.get("errors").cloned().unwrap_or(json!([]));
        // Of a batch's errors, the ones about this file (when the platform names files).
        if let Some(all) = errors.as_array() {
            let mine: Vec<serde_json::Value> = all
                .iter()
                .filter(|e| {
                    e["description"]
                        .as_str()
                        .is_some_and(|d| crate::poller::error_names_file(d, &f.rel_path))
                })
                .cloned()
                .collect();
            if !mine.is_empty() {
                errors = serde_json::Value::Array(mine);
            }
        }
        if errors.as_array().is_none_or(|a| a.is_empty())
            && let Some(b) = batch
            && b.state != batch_state::SUCCESS
            && let Some(e) = &b.last_error
            && f.reason.as_deref() != Some(e.as_str())
        {
            errors = json!([{ "code": "batchdrop", "description": e }]);
        }
        let mut r = json!({
            "file": f.rel_path,
            "folder": f.root,
            "dataset": f.dataset,
            "status": status,
            "batch": batch.and_then(|b| b.remote_id.clone()),
            "format": f.format,
            "size": f.size,
            "sha256": f.sha256,
            // The batch's metrics (kept under `records`, its first name, for compatibility).
            "records": metrics.clone(),
            "batch_records": metrics,
            "file_records": f.records,
            "partial_ingestion": status == "success" && failed_records > 0,
            "errors": errors,
            "discovered_at": iso(f.discovered_at),
            "finished_at": iso(crate::store::now_ms()),
        });
        if let Some(reason) = &f.reason {
            r["reason"] = json!(reason);
        }
        if let Some(b) = batch
            && let Some(p) = &b.replay_json
        {
            r["replaces"] = serde_json::from_str(p).unwrap_or(json!([]));
            r["replay_reason"] = json!(
                self.store
                    .replay_reason(b.id)
                    .await?
                    .unwrap_or_else(|| crate::replay::DEFAULT_REASON.into())
            );
        }
        if let Some(s) = &f.sidecar {
            r["sidecar"] = json!(s);
        }
        if let Some(of) = f.duplicate_of
            && let Some(earlier) = self.store.file(of).await?
        {
            let earlier_batch = match earlier.batch_id {
                Some(id) => self.store.batch(id).await?.remote_id,
                None => None,
            };
            r["duplicate_of"] = json!({ "file": earlier.rel_path, "batch": earlier_batch });
            r["reason"] = json!(format!(
                "the same content was already ingested into dataset {} from {}{}; not ingested again (set allow_duplicates = true to ingest repeats)",
                f.dataset,
                earlier.rel_path,
                earlier_batch
                    .map(|b| format!(" in batch {b}"))
                    .unwrap_or_default()
            ));
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

/// What becomes of a file whose batch ended: its final state, the receipt's status, and the
/// move the watch's settings ask for.
fn fate(
    f: &FileRow,
    batch: Option<&BatchRow>,
    watch: &Watch,
) -> (&'static str, &'static str, Action) {
    let succeeded =
        batch.is_some_and(|b| b.state == batch_state::SUCCESS) && f.state != file_state::FAILED;
    let (final_state, status) = if f.state == file_state::DUPLICATE {
        (file_state::DUPLICATE, "duplicate")
    } else if succeeded {
        (file_state::DONE, "success")
    } else {
        (file_state::FAILED, "failed")
    };
    let action = match status {
        "failed" => Action::Move(watch.failed_dir.clone()),
        _ => match watch.after_success {
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

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `dir/rel`, or `dir/stem.ID.ext` when that name is taken: an archive never overwrites an
/// earlier file of the same name.
fn free_name(dir: &Path, rel: &str, id: i64) -> PathBuf {
    let p = dir.join(rel);
    if !p.exists() {
        return p;
    }
    id_name(&p, id)
}

/// `dir/name.ext` → `dir/name.ID.ext`: a name no other file of the store can want.
fn id_name(p: &Path, id: i64) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let renamed = match name.split_once('.') {
        Some((stem, ext)) => format!("{stem}.{id}.{ext}"),
        None => format!("{name}.{id}"),
    };
    p.with_file_name(renamed)
}

/// Renames, or copies and removes across filesystems. The copy is synced before the source
/// goes, so a crash leaves two copies at worst, never none.
fn move_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = dest.with_extension("batchdrop-tmp");
            std::fs::copy(src, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, dest)?;
            std::fs::remove_file(src)
        }
        Err(e) => Err(e),
    }
}

/// `NAME.receipt.json` beside `file`; a name too long for that (file names stop at 255 bytes)
/// keeps its first 200 bytes and gets the file's id.
fn receipt_for(file: &Path, id: i64) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let receipt = if name.len() + ".receipt.json.tmp".len() <= 255 {
        format!("{name}.receipt.json")
    } else {
        let mut cut = 200;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}~{id}.receipt.json", &name[..cut])
    };
    file.with_file_name(receipt)
}

/// SHA-256 of the first `len` bytes of a file.
fn sha256_prefix(path: &Path, len: u64) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
