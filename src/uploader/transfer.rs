//! One file's transfer into one remote batch: opened without following symlinks and checked
//! against the queued identity, then sent whole (PUT; from memory when small) or in chunks
//! (INITIALIZE, PATCH from the prefix the platform holds, COMPLETE), hashed as it is read.
//!
//! This module must not change a batch's state (the state machine in `mod.rs` does): it
//! records only this file's facts (bytes acknowledged, failed, superseded; its intent, `sent`,
//! is recorded ahead by `mod.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::StepError;
use super::read::{body_of, finish, memory_body, open_for_upload, read_ahead};
use crate::api::{ApiClient, ErrorKind};
use crate::config::Upload;
use crate::crashpoint;
use crate::disk::{self, Identity, Kind, Links};
use crate::store::{FileRow, StagedFile, Store, StoreError, Uploaded};
use crate::telemetry;

/// One file's transfer into one remote batch.
pub(super) struct FileJob {
    /// The batch's run of failures still has to be ended by the first progress of this drive.
    pub(super) failures_to_clear: Arc<std::sync::atomic::AtomicBool>,
    pub(super) store: Store,
    pub(super) api: ApiClient,
    pub(super) upload: Upload,
    pub(super) batch: String,
    pub(super) dataset: String,
    pub(super) watch: String,
    pub(super) shutdown: CancellationToken,
}

impl FileJob {
    /// Sends one file, or its staged file when its watch maps it (`crate::mapped`); returns the
    /// fact to record once it is acknowledged (None when the file was failed or superseded
    /// instead, which is recorded here).
    pub(super) async fn upload(
        &self,
        f: &FileRow,
        staged: Option<&StagedFile>,
    ) -> Result<Option<Uploaded>, StepError> {
        let Some(staged) = staged else {
            return self.upload_file(f).await;
        };
        let Some(mut fact) = self
            .upload_file(&crate::mapped::upload_view(f, staged))
            .await?
        else {
            return Ok(None);
        };
        if fact.sha256 != staged.sha256 {
            // The platform holds bytes that are not the staged file recorded: its batch
            // cannot be completed.
            let why = format!(
                "the staged file {} of {} changed after it was written (SHA-256 {} sent, {} recorded); \
                 its batch was given up: drop {} again to ingest it",
                staged.path, f.rel_path, fact.sha256, staged.sha256, f.rel_path
            );
            self.store.fail_file(f.id, &why).await?;
            return Err(StepError::Tainted(why));
        }
        // The file's hash stays the dropped file's (what the receipt and duplicates go by).
        fact.sha256 = staged.original_sha256.clone();
        Ok(Some(fact))
    }

    async fn upload_file(&self, f: &FileRow) -> Result<Option<Uploaded>, StepError> {
        let path = f.abs_path();
        let recorded = f.identity();
        // Opened once, no folder on its way followed; it is uploaded only if the descriptor
        // is the version the watcher queued, and every byte sent and hashed is read from it.
        let size = f.size as u64;
        let from_memory = size <= READ_WHOLE && size <= self.upload.large_file_threshold;
        let opened = {
            let (root, path) = (PathBuf::from(&f.root), path.clone());
            tokio::task::spawn_blocking(move || {
                open_for_upload(&root, &path, recorded, from_memory)
            })
            .await
            .expect("file open task panicked")
        };
        let (file, content) = match opened {
            Ok(o) if o.opened.stat.kind == Kind::File && o.opened.stat.identity == recorded => {
                (o.opened.file, o.content)
            }
            // Bytes of it may be in the batch already (a retry, or a restart): that is a
            // change during its upload.
            Ok(_) if f.sent => return self.changed(f, "during its upload").await.map(|()| None),
            Ok(_) => return self.changed(f, "before its upload").await.map(|()| None),
            Err(e) if disk::is_transient(&e) => return Err(busy(f, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || disk::is_symlink_refusal(&e) => {
                if f.sent {
                    let why = deleted_while_uploading(f, &self.batch);
                    self.store.fail_file(f.id, &why).await?;
                    return Err(StepError::Tainted(why));
                }
                let why = if disk::is_symlink_refusal(&e) {
                    format!(
                        "{} is no longer in its drop folder: a folder on its way is now a symbolic link, which batchdrop never follows; nothing was uploaded",
                        f.rel_path
                    )
                } else {
                    format!(
                        "{} was deleted before it could be uploaded; drop it again to ingest it",
                        f.rel_path
                    )
                };
                self.store.fail_file(f.id, &why).await?;
                return Ok(None);
            }
            Err(e) => {
                self.store
                    .fail_file(
                        f.id,
                        &format!(
                            "cannot read {}: {e}; fix its permissions and drop it again",
                            path.display()
                        ),
                    )
                    .await?;
                return Ok(None);
            }
        };
        // Its intent (`sent`) was recorded with its window's (`Uploader::load`).
        let started = std::time::Instant::now();
        let sent = match content {
            Some(read) => self.put_from_memory(f, read).await,
            None => {
                // The reader takes a duplicate; this one stays to look at the file afterwards.
                let reader = file.try_clone().map_err(|e| {
                    if disk::is_transient(&e) {
                        busy(f, e)
                    } else {
                        io_fail(f, e)
                    }
                })?;
                if size <= self.upload.large_file_threshold {
                    self.put_small(f, reader).await
                } else {
                    self.put_large(f, reader).await
                }
            }
        };
        // The file must be exactly the version we started with, or the platform holds a mix:
        // not written in place since (its descriptor's size and mtime), and still the file at
        // its name (not deleted or replaced). Checked whatever the transfer's outcome: a file
        // cut short while it was read makes a body shorter than announced, which is a change
        // of the file, not a platform failure.
        if !matches!(sent, Err(StepError::Shutdown)) {
            let held = file.metadata().map(|m| Identity::of(&m));
            let named = disk::Dir::anchor(Path::new(&f.root)).and_then(|root| {
                let below = path.strip_prefix(&f.root).map_err(std::io::Error::other)?;
                root.stat_file(below, Links::Anywhere)
            });
            match (held, named) {
                (Ok(held), Ok(named)) if held == recorded && named.identity == recorded => {}
                (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    let why = deleted_while_uploading(f, &self.batch);
                    self.store.fail_file(f.id, &why).await?;
                    return Err(StepError::Tainted(why));
                }
                (Err(e), _) | (_, Err(e)) if disk::is_transient(&e) => return Err(busy(f, e)),
                _ => return self.changed(f, "during its upload").await.map(|()| None),
            }
        }
        let sha = match sent {
            Ok(sha) => sha,
            Err(StepError::Unreadable(why)) => {
                self.store.fail_file(f.id, &why).await?;
                return Err(StepError::Tainted(why));
            }
            Err(e) => return Err(e),
        };
        metrics::counter!(telemetry::BYTES_UPLOADED, "dataset" => self.dataset.clone(), "watch" => self.watch.clone())
            .increment(f.size as u64);
        metrics::counter!(telemetry::UPLOAD_SECONDS, "dataset" => self.dataset.clone(), "watch" => self.watch.clone())
            .increment(started.elapsed().as_secs_f64() as u64);
        metrics::histogram!(telemetry::UPLOAD_DURATION, "dataset" => self.dataset.clone(), "watch" => self.watch.clone())
            .record(started.elapsed().as_secs_f64());
        self.progress(f).await?;
        tracing::info!(
            file = %f.rel_path, dataset = %self.dataset, batch = %self.batch,
            bytes = f.size, ms = started.elapsed().as_millis() as u64, "uploaded"
        );
        Ok(Some(Uploaded {
            file_id: f.id,
            sha256: sha,
            size: f.size,
        }))
    }

    async fn progress(&self, f: &FileRow) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        match f.batch_id {
            Some(id) if self.failures_to_clear.swap(false, Ordering::SeqCst) => {
                let noted = self.store.note_progress(id).await;
                if noted.is_err() {
                    self.failures_to_clear.store(true, Ordering::SeqCst);
                }
                noted
            }
            _ => Ok(()),
        }
    }

    async fn changed(&self, f: &FileRow, when: &str) -> Result<(), StepError> {
        let why = format!(
            "{} changed on disk {when}; its new version will be ingested once it is stable",
            f.rel_path
        );
        tracing::warn!(file = %f.rel_path, dataset = %self.dataset, batch = %self.batch, "{why}");
        self.store.supersede(f.id, &why).await?;
        if f.sent || when == "during its upload" {
            return Err(StepError::Tainted(why));
        }
        Ok(())
    }

    async fn put_small(&self, f: &FileRow, file: std::fs::File) -> Result<String, StepError> {
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let size = f.size as u64;
        let body = body_of(read_ahead(file, 0, size, size, hasher.clone()), size);
        self.api
            .put_file(&self.batch, &self.dataset, &f.rel_path, body, size)
            .await?;
        crashpoint::hit("put-sent");
        Ok(finish(hasher))
    }

    /// A small file, read and hashed when it was opened (one trip to the blocking pool for
    /// all three: a streamed body costs a trip per read), sent from memory.
    async fn put_from_memory(
        &self,
        f: &FileRow,
        read: std::io::Result<(bytes::Bytes, String)>,
    ) -> Result<String, StepError> {
        let size = f.size as u64;
        let (bytes, sha) = read.map_err(|e| {
            if disk::is_transient(&e) {
                busy(f, e)
            } else {
                io_fail(f, e)
            }
        })?;
        if bytes.len() as u64 != size {
            // The identity check after the transfer names it a change of the file.
            return Err(StepError::Unreadable(format!(
                "{} changed size while it was read ({} bytes, {} recorded)",
                f.rel_path,
                bytes.len(),
                f.size
            )));
        }
        self.api
            .put_file(
                &self.batch,
                &self.dataset,
                &f.rel_path,
                memory_body(bytes),
                f.size as u64,
            )
            .await?;
        crashpoint::hit("put-sent");
        Ok(sha)
    }

    /// INITIALIZE (if nothing arrived yet), then PATCH chunk by chunk from the prefix the
    /// platform says it holds, then file COMPLETE.
    async fn put_large(&self, f: &FileRow, file: std::fs::File) -> Result<String, StepError> {
        let total = f.size as u64;
        let mut offset = match self
            .api
            .received_prefix(&self.batch, &self.dataset, &f.rel_path)
            .await
        {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound) => 0,
            Err(e) => return Err(e.into()),
        };
        if let Some(id) = f.batch_id {
            self.store.note_answered(id).await?;
        }
        if offset != f.uploaded_bytes as u64 {
            tracing::info!(
                file = %f.rel_path, batch = %self.batch,
                "platform holds {offset} bytes, local record says {}; resuming from the platform's figure",
                f.uploaded_bytes
            );
        }
        if offset > total {
            return Err(StepError::Tainted(format!(
                "the platform holds {offset} bytes of {} but the file has {total}",
                f.rel_path
            )));
        }
        if offset == 0 {
            self.api
                .initialize_file(&self.batch, &self.dataset, &f.rel_path)
                .await?;
        }
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let file = if offset > 0 {
            // Only after a restart: the hash must cover the bytes sent before it.
            let prefix = hasher.clone();
            tokio::task::spawn_blocking(move || {
                disk::hash_into(&file, offset, &mut prefix.lock().unwrap()).map(|()| file)
            })
            .await
            .expect("hashing task panicked")
            .map_err(|e| io_fail(f, e))?
        } else {
            file
        };
        let chunk_size = self.upload.chunk_size;
        let pieces = read_ahead(file, offset, total, chunk_size, hasher.clone());
        while offset < total {
            if self.shutdown.is_cancelled() {
                return Err(StepError::Shutdown);
            }
            let len = chunk_size.min(total - offset);
            let body = body_of(pieces.clone(), len);
            self.api
                .patch_chunk(
                    &self.batch,
                    &self.dataset,
                    &f.rel_path,
                    offset,
                    len,
                    total,
                    body,
                )
                .await?;
            crashpoint::hit("chunk-sent");
            offset += len;
            self.store.set_uploaded_bytes(f.id, offset as i64).await?;
            self.progress(f).await?;
            crashpoint::hit("chunk-recorded");
            tracing::debug!(file = %f.rel_path, batch = %self.batch, offset, total, "chunk acknowledged");
        }
        self.api
            .complete_file(&self.batch, &self.dataset, &f.rel_path)
            .await?;
        Ok(finish(hasher))
    }
}

fn deleted_while_uploading(f: &FileRow, batch: &str) -> String {
    format!(
        "{} was deleted while it was being uploaded into batch {batch}; that batch was given up, \
         so nothing of it is ingested: drop it again to ingest it",
        f.rel_path
    )
}

fn busy(f: &FileRow, e: std::io::Error) -> StepError {
    StepError::Busy(format!(
        "cannot open or read {} now ({e}): batchdrop is out of file descriptors or memory",
        f.rel_path
    ))
}

fn io_fail(f: &FileRow, e: std::io::Error) -> StepError {
    StepError::Unreadable(format!(
        "cannot read {} while uploading it: {e}; fix the file or its permissions and drop it again",
        f.rel_path
    ))
}

/// Files up to this size are sent from memory (see `FileJob::put_from_memory`); at most
/// `[upload] concurrency` of them are held at once.
const READ_WHOLE: u64 = 1 << 20;
