//! One file's transfer into one remote batch: opened without following symlinks and checked
//! against the queued identity, then sent whole (PUT; from memory when small) or in chunks
//! (INITIALIZE, PATCH from the prefix the platform holds, COMPLETE), hashed as it is read, or
//! from where its hash stopped while it settled (`crate::early_hash`).
//!
//! This module must not change a batch's state (the state machine in `mod.rs` does): it
//! records only this file's facts (bytes acknowledged, failed, superseded; its intent, `sent`,
//! is recorded ahead by `mod.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::StepError;
use super::behind::Behind;
use super::read::{ForUpload, HashBy, Hashing, body_of, memory_body, open_for_upload, read_ahead};
use crate::api::{ApiClient, ErrorKind};
use crate::config::Upload;
use crate::crashpoint;
use crate::disk::{self, Identity, Kind, Links};
use crate::early_hash::Outcome;
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
    /// Hashes of large files computed while they settled (`crate::early_hash`).
    pub(super) early: crate::early_hash::EarlyHashes,
}

/// One file's transfer, acknowledged: what to record of it, with its hash or with the hash
/// still being computed behind its read.
pub(super) struct Transferred {
    file_id: i64,
    size: i64,
    pub(super) hash: SentHash,
}

/// The SHA-256 of a file whose bytes are on the platform.
pub(super) enum SentHash {
    /// Known now; `stored`: the file's row holds it already.
    Known { sha256: String, stored: bool },
    /// Still being computed (see [`Hash::Behind`]).
    Behind(Behind),
}

impl Transferred {
    /// The fact to record now (without a hash still behind), and that hash.
    pub(super) fn into_parts(self) -> (Uploaded, Option<Behind>) {
        let (sha256, hash_stored, behind) = match self.hash {
            SentHash::Known { sha256, stored } => (Some(sha256), stored, None),
            SentHash::Behind(behind) => (None, false, Some(behind)),
        };
        let fact = Uploaded {
            file_id: self.file_id,
            sha256,
            size: self.size,
            hash_stored,
        };
        (fact, behind)
    }
}

/// What is known of a file's SHA-256 once the platform holds every byte of it.
enum Hash {
    Known(String),
    /// A large file is read faster than it hashes: its hasher may still be reading. The batch
    /// is completed meanwhile (the platform's processing needs no hash of ours); the hash is
    /// taken before the batch's outcome, which the receipts and the one-copy rule go by.
    Behind(Hashing),
}

impl FileJob {
    /// Sends one file, or its staged file when its watch maps it (`crate::mapped`); returns the
    /// fact to record once it is acknowledged (None when the file was failed or superseded
    /// instead, which is recorded here).
    ///
    /// `opened` is the file opened (and read, when small) ahead by [`open_ahead`]; without it
    /// the file is opened here. It is not used for a staged file.
    pub(super) async fn upload(
        &self,
        f: &FileRow,
        staged: Option<&StagedFile>,
        opened: Option<std::io::Result<ForUpload>>,
    ) -> Result<Option<Transferred>, StepError> {
        let Some(staged) = staged else {
            return self.upload_file(f, opened).await;
        };
        let Some(sent) = self
            .upload_file(&crate::mapped::upload_view(f, staged), None)
            .await?
        else {
            return Ok(None);
        };
        // A staged file's hash tells whether the platform holds what was staged: it is
        // waited for before its batch is completed.
        let sha = match sent.hash {
            SentHash::Known { sha256, .. } => sha256,
            SentHash::Behind(behind) => match behind.hash().await {
                Ok(sha) => sha,
                Err(why) => {
                    let why = format!(
                        "cannot read the staged file {} of {} while uploading it: {why}; \
                         its batch was given up: drop {} again to ingest it",
                        staged.path, f.rel_path, f.rel_path
                    );
                    self.store.fail_file(f.id, &why).await?;
                    return Err(StepError::Tainted(why));
                }
            },
        };
        if sha != staged.sha256 {
            // The platform holds bytes that are not the staged file recorded: its batch
            // cannot be completed.
            let why = format!(
                "the staged file {} of {} changed after it was written (SHA-256 {} sent, {} recorded); \
                 its batch was given up: drop {} again to ingest it",
                staged.path, f.rel_path, sha, staged.sha256, f.rel_path
            );
            self.store.fail_file(f.id, &why).await?;
            return Err(StepError::Tainted(why));
        }
        // The file's hash stays the dropped file's (what the receipt and duplicates go by).
        Ok(Some(Transferred {
            hash: SentHash::Known {
                stored: f.sha256.as_deref() == Some(staged.original_sha256.as_str()),
                sha256: staged.original_sha256.clone(),
            },
            ..sent
        }))
    }

    async fn upload_file(
        &self,
        f: &FileRow,
        opened: Option<std::io::Result<ForUpload>>,
    ) -> Result<Option<Transferred>, StepError> {
        let path = f.abs_path();
        let recorded = f.identity();
        // Opened once, no folder on its way followed; it is uploaded only if the descriptor
        // is the version the watcher queued, and every byte sent and hashed is read from it.
        let size = f.size as u64;
        let opened = match opened {
            Some(opened) => opened,
            None => {
                let from_memory = sent_from_memory(size, &self.upload);
                let (root, path) = (PathBuf::from(&f.root), path.clone());
                tokio::task::spawn_blocking(move || {
                    open_for_upload(&root, &path, recorded, from_memory)
                })
                .await
                .expect("file open task panicked")
            }
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
            Some(read) => self.put_from_memory(f, read).await.map(Hash::Known),
            None => {
                // The reader takes a duplicate; this one stays to look at the file afterwards.
                let reader = file.try_clone().map_err(|e| read_fail(f, e))?;
                if size <= self.upload.large_file_threshold {
                    self.put_small(f, reader).await.map(Hash::Known)
                } else {
                    self.put_large(f, reader, started).await
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
        let hash = match sent {
            Ok(hash) => hash,
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
        let hash = match hash {
            Hash::Known(sha256) => SentHash::Known {
                stored: f.sha256.as_deref() == Some(sha256.as_str()),
                sha256,
            },
            Hash::Behind(hashing) => SentHash::Behind(Behind::new(f, file, hashing)),
        };
        Ok(Some(Transferred {
            file_id: f.id,
            size: f.size,
            hash,
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
        let size = f.size as u64;
        let (pieces, hashing) = read_ahead(
            file,
            0,
            size,
            size,
            HashBy::Reading {
                state: Sha256::new(),
                from: 0,
            },
        )
        .map_err(|e| read_fail(f, e))?;
        let body = body_of(pieces, size);
        self.api
            .put_file(&self.batch, &self.dataset, &f.rel_path, body, size)
            .await?;
        crashpoint::hit("put-sent");
        hashing.finish().await.map_err(|e| io_fail(f, e))
    }

    /// A small file, read and hashed when it was opened (one trip to the blocking pool for
    /// all three: a streamed body costs a trip per read), sent from memory.
    async fn put_from_memory(
        &self,
        f: &FileRow,
        read: std::io::Result<(bytes::Bytes, String)>,
    ) -> Result<String, StepError> {
        let size = f.size as u64;
        let (bytes, sha) = read.map_err(|e| read_fail(f, e))?;
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
    async fn put_large(
        &self,
        f: &FileRow,
        mut file: std::fs::File,
        started: std::time::Instant,
    ) -> Result<Hash, StepError> {
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
        // The hash computed while the file settled, if it is of exactly this version: done,
        // or stopped and handed over, so that nothing is hashed twice.
        let early = match self.early.take(f.identity()) {
            Some(job) => job.hand_over().await,
            None => None,
        };
        let hash_by = match early {
            Some(Outcome::Done(sha256)) => {
                tracing::debug!(file = %f.rel_path, batch = %self.batch, "sending without hashing: hashed while it settled");
                HashBy::Known(sha256)
            }
            handed => {
                let (state, at) = match handed {
                    Some(Outcome::HandedOver { at, state }) => {
                        tracing::debug!(file = %f.rel_path, batch = %self.batch, hashed = at, "hashing goes on from where it stopped while the file settled");
                        (state, at)
                    }
                    _ => (Sha256::new(), 0),
                };
                if at < offset {
                    // Only after a restart: the hash must cover the bytes sent before it.
                    let (reopened, state) = tokio::task::spawn_blocking(move || {
                        let mut state = state;
                        disk::hash_range(&file, at, offset, &mut state).map(|()| (file, state))
                    })
                    .await
                    .expect("hashing task panicked")
                    .map_err(|e| io_fail(f, e))?;
                    file = reopened;
                    HashBy::Reading {
                        state,
                        from: offset,
                    }
                } else {
                    HashBy::Reading { state, from: at }
                }
            }
        };
        let chunk_size = self.upload.chunk_size;
        let (pieces, hashing) =
            read_ahead(file, offset, total, chunk_size, hash_by).map_err(|e| read_fail(f, e))?;
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
        // Every byte is on the platform; its hash, which does not hold the read back, may
        // still be on its way (see `Hash::Behind`).
        tracing::info!(
            file = %f.rel_path, dataset = %self.dataset, batch = %self.batch,
            bytes = total, ms = started.elapsed().as_millis() as u64, "file sent"
        );
        match hashing {
            Hashing::Reading(_) => Ok(Hash::Behind(hashing)),
            known @ Hashing::Known { .. } => known
                .finish()
                .await
                .map(Hash::Known)
                .map_err(|e| io_fail(f, e)),
        }
    }
}

fn deleted_while_uploading(f: &FileRow, batch: &str) -> String {
    format!(
        "{} was deleted while it was being uploaded into batch {batch}; that batch was given up, \
         so nothing of it is ingested: drop it again to ingest it",
        f.rel_path
    )
}

/// A file that could not be opened or read again now: out of descriptors or memory is
/// retried, anything else fails the file.
fn read_fail(f: &FileRow, e: std::io::Error) -> StepError {
    if disk::is_transient(&e) {
        busy(f, e)
    } else {
        io_fail(f, e)
    }
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
/// `[upload] concurrency` of them are held at once, and [`AHEAD_BYTES`] of those read ahead.
const READ_WHOLE: u64 = 1 << 20;

/// Whether a file of `size` bytes is read whole when it is opened and sent from memory.
fn sent_from_memory(size: u64, upload: &Upload) -> bool {
    size <= READ_WHOLE && size <= upload.large_file_threshold
}

/// Opens, reads and hashes the small files of `files` (those sent from memory, up to
/// [`AHEAD_BYTES`] of them in all) on one trip to the blocking pool, by file id; the others are
/// opened by their own transfer. One trip per file cost a hand-off to a blocking thread and
/// back per small file. Each result is what that file's own trip would have given, and is
/// judged by its transfer the same way.
pub(super) async fn open_ahead(
    files: &[&FileRow],
    upload: &Upload,
) -> HashMap<i64, std::io::Result<ForUpload>> {
    let mut budget = AHEAD_BYTES;
    let mut wanted = Vec::new();
    for f in files {
        let size = f.size as u64;
        if sent_from_memory(size, upload) && size <= budget {
            budget -= size;
            wanted.push((f.id, PathBuf::from(&f.root), f.abs_path(), f.identity()));
        }
    }
    if wanted.len() < 2 {
        return HashMap::new(); // no trip saved
    }
    tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(id, root, path, recorded)| (id, open_for_upload(&root, &path, recorded, true)))
            .collect()
    })
    .await
    .expect("file open task panicked")
}

/// Bytes of small files read ahead of their transfers at once (see [`open_ahead`]).
const AHEAD_BYTES: u64 = 4 << 20;

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    fn upload(large_file_threshold: u64) -> Upload {
        let s = Duration::from_secs(1);
        Upload {
            large_file_threshold,
            chunk_size: large_file_threshold,
            concurrency: 4,
            max_attempts: 1,
            max_retry_age: s,
            backoff_initial: s,
            backoff_max: s,
            poll_initial: s,
            poll_max: s,
            max_processing_age: s,
            give_up_after: s,
        }
    }

    /// A row for the file `name` of `root` as it is on disk now.
    fn queued(id: i64, root: &Path, name: &str) -> FileRow {
        let meta = std::fs::metadata(root.join(name)).unwrap();
        let now = Identity::of(&meta);
        let mut f = crate::schedule::tests::file(id, "json", meta.len() as i64, 0);
        f.root = root.to_string_lossy().into_owned();
        f.rel_path = name.into();
        f.dev = now.dev as i64;
        f.ino = now.ino as i64;
        f.mtime_ns = now.mtime_ns;
        f
    }

    #[tokio::test]
    async fn files_opened_ahead_get_the_verdict_their_own_trip_would() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (name, bytes) in [
            ("same.json", &b"{\"a\":1}\n"[..]),
            ("grown.json", b"{\"b\":2}\n"),
            ("gone.json", b"{\"c\":3}\n"),
            ("large.json", &[b'x'; 64][..]),
        ] {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        let rows: Vec<FileRow> = ["same.json", "grown.json", "gone.json", "large.json"]
            .iter()
            .zip(1..)
            .map(|(name, id)| queued(id, root, name))
            .collect();
        std::fs::write(root.join("grown.json"), b"{\"b\":2}\n{\"b\":3}\n").unwrap();
        std::fs::remove_file(root.join("gone.json")).unwrap();

        // A 32-byte threshold: large.json is sent streamed, so it is not read ahead.
        let mut opened = open_ahead(&rows.iter().collect::<Vec<_>>(), &upload(32)).await;
        assert_eq!(opened.len(), 3, "the small files only");
        let same = opened.remove(&1).unwrap().unwrap();
        assert_eq!(same.opened.stat.identity, rows[0].identity());
        let (bytes, sha) = same.content.unwrap().unwrap();
        assert_eq!(&bytes[..], b"{\"a\":1}\n");
        assert_eq!(sha, format!("{:x}", Sha256::digest(b"{\"a\":1}\n")));
        let grown = opened.remove(&2).unwrap().unwrap();
        assert_ne!(grown.opened.stat.identity, rows[1].identity());
        assert!(grown.content.is_none(), "a changed file is not read");
        let gone = opened.remove(&3).unwrap().err().unwrap();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);

        // One small file saves no trip: it is opened by its own transfer.
        assert!(open_ahead(&[&rows[0]], &upload(32)).await.is_empty());
    }

    /// A real emulator with one dataset, a client of it, a batch created in it, and a store.
    pub(in crate::uploader) struct Platform {
        pub(in crate::uploader) dir: tempfile::TempDir,
        _emulator: batchdrop_emulator::Emulator,
        pub(in crate::uploader) api: ApiClient,
        pub(in crate::uploader) batch: String,
        pub(in crate::uploader) store: Store,
    }

    pub(in crate::uploader) const DATASET: &str = "5deac2648a19d218a888d2b1";

    pub(in crate::uploader) async fn platform() -> Platform {
        platform_with(batchdrop_emulator::EmulatorConfig::default()).await
    }

    /// A platform made as `config` says (its faults, say), with a dataset and a batch.
    pub(in crate::uploader) async fn platform_with(
        config: batchdrop_emulator::EmulatorConfig,
    ) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let emulator = batchdrop_emulator::Emulator::start(
            ([127, 0, 0, 1], 0).into(),
            &dir.path().join("platform"),
            config,
        )
        .await
        .unwrap();
        emulator.ensure_dataset(DATASET, "test").await.unwrap();
        let api = ApiClient::new(crate::api::ClientConfig {
            endpoint: emulator.base_url(),
            org_id: "batchdrop@AdobeOrg".into(),
            sandbox: "prod".into(),
            api_key: "test".into(),
            token: crate::api::TokenSource::Static(crate::api::Secret::new("test-token")),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            extra_ca_file: None,
        })
        .unwrap();
        let batch = api
            .create_batch(&crate::api::CreateBatch::new(
                DATASET,
                crate::format::Format::Json,
            ))
            .await
            .unwrap()
            .id;
        let store = Store::open_shared(&dir.path().join("state")).await.unwrap();
        Platform {
            dir,
            _emulator: emulator,
            api,
            batch,
            store,
        }
    }

    impl Platform {
        /// A transfer into the batch, in chunks of 1 MiB for files over 1 MiB.
        fn job(&self, early: &crate::early_hash::EarlyHashes) -> FileJob {
            FileJob {
                failures_to_clear: Arc::default(),
                store: self.store.clone(),
                api: self.api.clone(),
                upload: upload(1 << 20),
                batch: self.batch.clone(),
                dataset: DATASET.into(),
                watch: "w".into(),
                shutdown: CancellationToken::new(),
                early: early.clone(),
            }
        }

        /// `row` uploaded whole into the batch, with `early`'s hashes: the SHA-256 recorded for
        /// it, with its fact or once the hash behind its read is done.
        async fn upload(&self, early: &crate::early_hash::EarlyHashes, row: &FileRow) -> String {
            let sent = self
                .job(early)
                .upload(row, None, None)
                .await
                .unwrap()
                .unwrap();
            match sent.hash {
                SentHash::Known { sha256, .. } => sha256,
                SentHash::Behind(behind) => behind.hash().await.unwrap(),
            }
        }
    }

    /// 3 MiB of JSON Lines (three chunks of 1 MiB), `tag` in every record.
    fn large_file(root: &Path, name: &str, tag: &str) -> Vec<u8> {
        let mut data = Vec::new();
        let mut i = 0;
        while data.len() < 3 << 20 {
            data.extend_from_slice(format!("{{\"tag\":\"{tag}\",\"n\":{i}}}\n").as_bytes());
            i += 1;
        }
        std::fs::write(root.join(name), &data).unwrap();
        data
    }

    #[tokio::test]
    async fn a_large_file_hashed_while_it_settled_is_sent_without_hashing_it_again() {
        let platform = platform().await;
        let dir = tempfile::tempdir().unwrap();
        large_file(dir.path(), "big.json", "a");
        let row = queued(1, dir.path(), "big.json");
        let early = crate::early_hash::EarlyHashes::new(1 << 20);
        // A hash no read of the file gives: the one recorded can only be the early hash's.
        let planted = "e".repeat(64);
        early.known(row.identity(), &planted);
        let sha = platform.upload(&early, &row).await;
        assert_eq!(sha, planted);
        assert!(
            early.take(row.identity()).is_none(),
            "the upload took the early hash out of the registry"
        );
        // Every byte went out all the same.
        assert_eq!(
            platform
                .api
                .received_prefix(&platform.batch, DATASET, "big.json")
                .await
                .unwrap(),
            row.size as u64
        );
    }

    #[tokio::test]
    async fn a_file_changed_after_its_early_hash_started_is_hashed_by_its_upload() {
        let platform = platform().await;
        let dir = tempfile::tempdir().unwrap();
        large_file(dir.path(), "big.json", "first");
        let early = crate::early_hash::EarlyHashes::new(1 << 20);
        let first = queued(1, dir.path(), "big.json").identity();
        let hashing = early
            .start(dir.path(), &dir.path().join("big.json"), first)
            .unwrap();
        // Rewritten (a different size, so its identity differs whatever the clock's grain).
        let second = large_file(dir.path(), "big.json", "second, longer");
        let row = queued(2, dir.path(), "big.json");
        assert_ne!(row.identity(), first);
        let sha = platform.upload(&early, &row).await;
        assert_eq!(sha, format!("{:x}", Sha256::digest(&second)));
        // The first version's hash, if it got to the end at all, was not taken.
        let ended = hashing.finish().await;
        assert_ne!(ended.as_deref(), Some(sha.as_str()));
    }

    #[tokio::test]
    async fn an_early_hash_being_computed_is_taken_over_by_the_upload() {
        let platform = platform().await;
        let dir = tempfile::tempdir().unwrap();
        let data = large_file(dir.path(), "big.json", "a");
        let row = queued(1, dir.path(), "big.json");
        let early = crate::early_hash::EarlyHashes::new(1 << 20);
        let started = early
            .start(dir.path(), &dir.path().join("big.json"), row.identity())
            .unwrap();
        let sha = platform.upload(&early, &row).await;
        assert_eq!(sha, format!("{:x}", Sha256::digest(&data)));
        // Done before the upload asked, or stopped and handed over: it ended either way.
        assert!(started.outcome().is_some());
        assert!(
            early.take(row.identity()).is_none(),
            "the upload took the early hash"
        );
    }
}
