//! Sealed batch → platform: create it, upload its files, complete it; then hand it to the
//! poller. Each step is recorded in the store before the remote call (the intent) and after it
//! (the fact), so that a crash anywhere is resolved on the next start by asking the platform:
//! a batch found by its `externalId`, a large file resumed from the prefix HEAD reports, a small
//! file PUT again, COMPLETE repeated. All three are idempotent on the platform.
//!
//! This module decides nothing about grouping (batcher) or where files go afterwards
//! (archiver), and it never builds an HTTP request itself (api).

use std::collections::{HashMap, HashSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ApiClient, ApiError, BatchAction, BatchStatus, Body, CreateBatch, ErrorKind, Replay,
};
use crate::blocked::{self, DatasetCheck};
use crate::config::Upload;
use crate::crashpoint;
use crate::disk::Identity;
use crate::disk::{self, Kind, Links};
use crate::poller;
use crate::retry;
use crate::stage::{self, Next, Stage};
use crate::store::{
    BatchOutcome, BatchPhase, BatchRow, FileRow, FileState, Step, Store, StoreError, Uploaded,
    Verdict, now_ms,
};
use crate::telemetry;

/// Why a step stopped before its batch reached the next state.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bytes of a file that has since changed may be in the batch: it cannot be completed.
    #[error("{0}")]
    Tainted(String),
    /// The file cannot be read; it fails with this reason (and taints its batch if sent).
    #[error("{0}")]
    Unreadable(String),
    /// The process ran out of descriptors or memory while opening or reading a file: nothing
    /// is wrong with the file or the batch, which is driven again shortly. Nothing is failed.
    #[error("{0}")]
    Busy(String),
    #[error("stopping for shutdown")]
    Shutdown,
}

impl From<poller::PollError> for StepError {
    fn from(e: poller::PollError) -> StepError {
        match e {
            poller::PollError::Api(e) => StepError::Api(e),
            poller::PollError::Store(e) => StepError::Store(e),
            // Its end can no longer be a success: handled like a batch tainted by a change.
            poller::PollError::Lost(why) => StepError::Tainted(why),
        }
    }
}

pub struct Uploader {
    pub store: Store,
    pub api: ApiClient,
    pub upload: Upload,
    /// Limits concurrent file transfers across all batches.
    slots: Arc<Semaphore>,
    /// Limits the batches whose files are being sent at once: the earliest batches get the
    /// file slots and finish first, so the platform processes and the archiver finishes them
    /// while later ones upload (sharing the slots among all batches would finish every batch
    /// at the very end).
    loading: Arc<Semaphore>,
    /// Batches being driven right now (one task per batch at a time).
    active: Mutex<HashSet<i64>>,
    pub wake: Arc<Notify>,
    pub wake_archiver: Arc<Notify>,
}

impl Uploader {
    pub fn new(
        store: Store,
        api: ApiClient,
        upload: Upload,
        wake: Arc<Notify>,
        wake_archiver: Arc<Notify>,
    ) -> Arc<Uploader> {
        Arc::new(Uploader {
            slots: Arc::new(Semaphore::new(upload.concurrency)),
            loading: Arc::new(Semaphore::new(BATCHES_LOADING)),
            store,
            api,
            upload,
            active: Mutex::new(HashSet::new()),
            wake,
            wake_archiver,
        })
    }

    /// Drives every due batch until `shutdown`; then lets running steps reach a safe point
    /// (a chunk or file boundary) within `grace`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let mut stage = Uploading {
            uploader: self.clone(),
            tasks: Tasks::default(),
            shutdown: shutdown.clone(),
        };
        stage::run(&mut stage, &self.wake, &shutdown).await;
        let mut tasks = stage.tasks.running;
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown grace of {grace:?} ran out; in-flight requests are cut, the next start resumes them"
            );
            tasks.abort_all();
        }
    }

    /// One pass: a task for every due batch not being driven already; the tasks that ended
    /// are collected. Asks for the next pass when the next batch is due (at most 1 s away).
    pub async fn pass(
        self: &Arc<Self>,
        tasks: &mut Tasks,
        shutdown: &CancellationToken,
    ) -> Result<Next, StoreError> {
        let due = self.store.batches_due(now_ms()).await?;
        for b in due {
            if self.active.lock().unwrap().insert(b.id) {
                let driving_id = b.id;
                let driving = Driving {
                    uploader: self.clone(),
                    batch: b.id,
                };
                let token = shutdown.clone();
                let task = tasks.running.spawn(async move {
                    let me = &driving.uploader;
                    // Only the row read after claiming the batch counts (see batch_if_due).
                    match me.store.batch_if_due(driving.batch, now_ms()).await {
                        Ok(Some(fresh)) => me.drive(fresh, &token).await,
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(batch = %b.label(), "{}; will retry", e.explain());
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
                tasks.batches.insert(task.id(), driving_id);
            }
        }
        while let Some(ended) = tasks.running.try_join_next_with_id() {
            let (id, panic) = match ended {
                Ok((id, ())) => (id, None),
                Err(e) => (e.id(), e.try_into_panic().ok()),
            };
            let batch = tasks.batches.remove(&id);
            if let (Some(panic), Some(batch)) = (panic, batch) {
                // A bug, not the batch's fault: it is driven again (its record says where it
                // was), after a pause so that a panic that repeats does not spin.
                tracing::error!(
                    batch,
                    "the task driving batch #{batch} panicked: {}; it is driven again in {BUSY_WAIT:?}",
                    stage::panic_message(&*panic)
                );
                self.store
                    .delay_batch(batch, now_ms() + BUSY_WAIT.as_millis() as i64)
                    .await?;
            }
        }
        let sleep = match self.store.next_due().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(10, 1000) as u64),
            _ => Duration::from_secs(1),
        };
        Ok(Next::After(sleep))
    }

    /// Moves one batch as far as it can go now; on failure records the retry schedule.
    async fn drive(&self, b: BatchRow, shutdown: &CancellationToken) {
        let label = b.label();
        let result = self.step(b.clone(), shutdown).await;
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(StepError::Shutdown) => Ok(()),
            Err(StepError::Unreadable(why)) | Err(StepError::Tainted(why)) => {
                // Re-read: this drive may have created the batch, and only the fresh row
                // knows its remote id (without it the batch is never aborted on the platform).
                match self.store.batch(b.id).await {
                    Ok(fresh) => self.abandon(&fresh, &why).await,
                    Err(e) => Err(e),
                }
            }
            Err(StepError::Api(e)) => self.on_api_error(&b, e).await,
            Err(StepError::Busy(why)) => {
                tracing::warn!(batch = %label, dataset = %b.dataset, "{why}; trying again in {BUSY_WAIT:?} (nothing is failed for this)");
                self.store
                    .delay_batch(b.id, now_ms() + BUSY_WAIT.as_millis() as i64)
                    .await
            }
            Err(StepError::Store(e)) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::error!(batch = %label, dataset = %b.dataset, "{}; will retry", e.explain());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn step(&self, mut b: BatchRow, shutdown: &CancellationToken) -> Result<(), StepError> {
        loop {
            if shutdown.is_cancelled() {
                return Err(StepError::Shutdown);
            }
            match &b.phase {
                BatchPhase::Sealed | BatchPhase::Creating => self.create(&b).await?,
                BatchPhase::Loading { remote_id } => self.load(&b, remote_id, shutdown).await?,
                BatchPhase::Completing { remote_id } => self.complete(&b, remote_id).await?,
                BatchPhase::Processing { remote_id } => {
                    poller::poll(&self.store, &self.api, &self.upload, &b, remote_id).await?;
                    self.wake_archiver.notify_one();
                    return Ok(());
                }
                BatchPhase::Ended { .. } => return Ok(()),
            }
            b = self.store.batch(b.id).await?;
        }
    }

    /// sealed/creating → loading. The external id was chosen when the batch was sealed; a
    /// batch in `creating` may exist on the platform already, so it is looked up first.
    async fn create(&self, b: &BatchRow) -> Result<(), StepError> {
        let found = if b.phase == BatchPhase::Creating {
            let found = self
                .api
                .find_batch_by_external_id(&b.dataset, &b.external_id)
                .await?;
            self.store.note_answered(b.id).await?;
            found
        } else {
            None
        };
        if let Some(found) = found {
            if found.status == BatchStatus::Loading {
                tracing::info!(batch = %found.id, dataset = %b.dataset, "found the batch created before the restart");
                let step = Step::Loading {
                    remote_id: &found.id,
                };
                self.store
                    .advance_batch(b.id, step, "recovered by externalId")
                    .await?;
                return Ok(());
            }
            return Err(StepError::Tainted(format!(
                "batch {} (externalId {}) is {:?} on the platform and can no longer take files",
                found.id, b.external_id, found.status
            )));
        }
        if b.phase == BatchPhase::Sealed {
            self.store
                .advance_batch(b.id, Step::Creating, "create-batch sent")
                .await?;
        }
        let reason = match b.replay {
            Some(_) => self.store.replay_reason(b.id).await?,
            None => None,
        };
        let replay = b.replay.as_ref().map(|predecessors| Replay {
            predecessors: predecessors.0.clone(),
            reason: reason.unwrap_or_else(|| crate::replay::DEFAULT_REASON.into()),
        });
        let mut req = CreateBatch::new(&b.dataset, b.format);
        req.multiline_json = b.multiline_json;
        req.external_id = Some(b.external_id.clone());
        req.replay = replay;
        let created = self.api.create_batch(&req).await?;
        crashpoint::hit("create-sent");
        tracing::info!(batch = %created.id, dataset = %b.dataset, "batch created");
        let step = Step::Loading {
            remote_id: &created.id,
        };
        self.store.advance_batch(b.id, step, "created").await?;
        Ok(())
    }

    /// loading → completing: uploads every file of the batch not acknowledged yet.
    async fn load(
        &self,
        b: &BatchRow,
        remote: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), StepError> {
        // The platform may have moved on while we were away (completed before a crash, aborted
        // by someone, expired): believe it over our record.
        let info = self.api.get_batch(remote).await?;
        self.store.note_answered(b.id).await?;
        match info {
            None => {
                return Err(StepError::Tainted(format!(
                    "the platform no longer knows batch {remote}"
                )));
            }
            Some(info) if info.status == BatchStatus::Loading => {}
            Some(info)
                if matches!(
                    info.status,
                    BatchStatus::Staging | BatchStatus::Processing | BatchStatus::Retrying
                ) || info.status.is_terminal()
                    && !matches!(info.status, BatchStatus::Aborted | BatchStatus::Abandoned) =>
            {
                self.store
                    .advance_batch(b.id, Step::Processing, "already completed on the platform")
                    .await?;
                return Ok(());
            }
            Some(info) => {
                return Err(StepError::Tainted(format!(
                    "batch {remote} is {:?} on the platform and can no longer take files",
                    info.status
                )));
            }
        }

        let files: Vec<FileRow> = self
            .store
            .batch_files(b.id)
            .await?
            .into_iter()
            .filter(|f| f.state == FileState::Batched)
            .collect();
        let _turn = tokio::select! {
            turn = self.loading.clone().acquire_owned() => turn.expect("never closed"),
            _ = shutdown.cancelled() => return Err(StepError::Shutdown),
        };
        let mut set = JoinSet::new();
        let mut worst: Option<StepError> = None;
        // Acknowledged transfers are recorded a few dozen at a time, and always before this
        // function returns (so a clean stop never sends a file again).
        let mut facts: Vec<Uploaded> = Vec::new();
        // Failures are only counted when a drive ends, so a batch with none at its start has
        // no run of failures for this drive's progress to end: no write per file for it.
        let failures_to_clear = Arc::new(std::sync::atomic::AtomicBool::new(
            b.attempts > 0 || b.first_error_at.is_some(),
        ));
        for f in files {
            // Finished uploads are reaped as we go: a batch of 1,500 files would otherwise
            // keep 1,500 finished tasks in memory until the last one is spawned.
            while let Some(r) = set.try_join_next() {
                self.reap(r, &mut worst, &mut facts).await?;
            }
            let permit = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            if shutdown.is_cancelled() {
                break;
            }
            let job = FileJob {
                failures_to_clear: failures_to_clear.clone(),
                store: self.store.clone(),
                api: self.api.clone(),
                upload: self.upload.clone(),
                batch: remote.to_owned(),
                dataset: b.dataset.clone(),
                shutdown: shutdown.clone(),
            };
            set.spawn(async move {
                let r = job.upload(&f).await;
                drop(permit);
                r
            });
        }
        while let Some(r) = set.join_next().await {
            self.reap(r, &mut worst, &mut facts).await?;
        }
        self.store.mark_uploaded_many(&facts).await?;
        if let Some(e) = worst {
            return Err(e);
        }
        if shutdown.is_cancelled() {
            return Err(StepError::Shutdown);
        }
        let files = self.store.batch_files(b.id).await?;
        if files.iter().any(|f| f.state == FileState::Batched) {
            return Ok(()); // more to do on the next drive
        }
        if !files.iter().any(|f| f.state == FileState::Uploaded) {
            // Nothing left to ingest (every file failed or changed): completing would fail it
            // with "empty batch", so abort it and say why in the files' receipts.
            let _ = self.api.batch_action(remote, BatchAction::Abort).await;
            self.store
                .abandon_batch(b.id, "no file of this batch could be uploaded")
                .await?;
            return Ok(());
        }
        self.store
            .advance_batch(b.id, Step::Completing, "COMPLETE sent")
            .await?;
        Ok(())
    }

    /// Takes one finished transfer: its fact joins `facts` (written when there are enough),
    /// its error joins `worst`. A tainted batch stops at once, after writing the facts so far.
    async fn reap(
        &self,
        joined: Result<Result<Option<Uploaded>, StepError>, tokio::task::JoinError>,
        worst: &mut Option<StepError>,
        facts: &mut Vec<Uploaded>,
    ) -> Result<(), StepError> {
        let r = match joined.expect("upload task panicked") {
            Ok(Some(fact)) => {
                facts.push(fact);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = absorb(worst, r) {
            self.store.mark_uploaded_many(facts).await?;
            return Err(e);
        }
        if facts.len() >= FACTS_PER_WRITE {
            self.store.mark_uploaded_many(facts).await?;
            facts.clear();
        }
        Ok(())
    }

    /// completing → processing. COMPLETE is idempotent, so after a crash it is simply sent again.
    async fn complete(&self, b: &BatchRow, remote: &str) -> Result<(), StepError> {
        self.api.batch_action(remote, BatchAction::Complete).await?;
        crashpoint::hit("complete-sent");
        tracing::info!(batch = %remote, dataset = %b.dataset, "batch completed; waiting for the platform");
        self.store
            .advance_batch(b.id, Step::Processing, "COMPLETE accepted")
            .await?;
        Ok(())
    }

    async fn on_api_error(&self, b: &BatchRow, e: ApiError) -> Result<(), StoreError> {
        // Re-read: progress made during this drive reset the count of failures in a row.
        let b = &self.store.batch(b.id).await?;
        let label = b.label();
        // Credentials or set-up trouble (IMS refusing the client secret, a 403, a token the
        // platform rejects, an unreadable secret file) says nothing about this batch's data:
        // failing its files would quarantine good data for an operator's mistake. The batch
        // waits as it would for an unreachable platform, and the error says what to fix.
        let credentials = e.is_config() || e.http_status() == Some(401);
        let retry_after = match e.kind() {
            ErrorKind::Transient { retry_after } => Some(retry_after),
            _ if credentials => Some(None),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            return self.retry_later(b, &e, retry_after, credentials).await;
        }
        // A refusal that could mean the dataset is gone is a configuration problem, never the
        // files' fault: the Catalog decides (see `blocked`), and nothing fails meanwhile.
        if blocked::may_mean_missing_dataset(&e) {
            match blocked::check(&self.api, &b.dataset).await {
                Ok(DatasetCheck::Missing) => {
                    return blocked::block(&self.store, &b.dataset, &b.watch, &e.to_string()).await;
                }
                Ok(DatasetCheck::Exists) => {}
                Err(check) => {
                    return self
                        .retry_later(b, &check, check.retry_after(), false)
                        .await;
                }
            }
        }
        match e.kind() {
            ErrorKind::NotFound if b.remote_id().is_some() => {
                self.abandon(
                    b,
                    &format!("the platform no longer knows batch {label}: {e}"),
                )
                .await
            }
            _ if b.replay.is_some() && b.remote_id().is_none() => {
                // The platform refused the replay itself (a predecessor it does not know, or
                // of another dataset): say which sidecar asked for it and what to do.
                let asked_by = self
                    .store
                    .batch_files(b.id)
                    .await?
                    .into_iter()
                    .find_map(|f| f.sidecar)
                    .map(|s| format!("the sidecar {s}"));
                let again = match &asked_by {
                    Some(_) => {
                        "then drop the file and its sidecar again (or fix the sidecar in the failed folder and run `batchdrop retry` on the file)"
                    }
                    None => "then push again",
                };
                let why = format!(
                    "the platform refused the replay of {} asked by {}: {e}. Name in `replaces` a batch of this dataset that exists, {again}",
                    b.replay.clone().unwrap_or_default(),
                    asked_by.as_deref().unwrap_or("--replaces"),
                );
                self.fail_batch(b, &why).await
            }
            _ => self.fail_batch(b, &e.to_string()).await,
        }
    }

    /// A failure that says nothing final about the batch's data: schedule the next attempt,
    /// or fail the batch once `max_attempts` / `max_retry_age` are used up.
    async fn retry_later(
        &self,
        b: &BatchRow,
        e: &ApiError,
        retry_after: Option<Duration>,
        credentials: bool,
    ) -> Result<(), StoreError> {
        let label = b.label();
        let age = b.first_error_at.map(|t| now_ms() - t).unwrap_or(0);
        // A platform that cannot be reached at all (down, restarting) or that refuses
        // our credentials says nothing about this batch: only max_retry_age applies
        // then, and the waits grow with the outage's age. max_attempts counts the
        // platform's own refusals.
        let counts = !e.is_unreachable() && !credentials;
        if (counts && b.attempts + 1 >= self.upload.max_attempts as i64)
            || age >= self.upload.max_retry_age.as_millis() as i64
        {
            let why = format!(
                "gave up after {} attempts over {}s: {e}",
                b.attempts + 1,
                age / 1000
            );
            return self.fail_batch(b, &why).await;
        }
        let attempt = if counts {
            b.attempts as u32 + 1
        } else {
            retry::attempt_for_age(
                Duration::from_millis(age.max(0) as u64),
                self.upload.backoff_initial,
            )
        };
        let wait = retry::backoff_jittered(
            attempt,
            self.upload.backoff_initial,
            self.upload.backoff_max,
            retry_after,
        );
        let cause = match e.http_status() {
            _ if e.is_config() => "credentials",
            Some(429) => "throttled",
            Some(401) => "unauthorized",
            Some(s) if s >= 500 => "server_error",
            Some(_) => "other",
            None => "network",
        };
        metrics::counter!(telemetry::RETRIES, "cause" => cause).increment(1);
        if e.is_config() {
            tracing::error!(batch = %label, dataset = %b.dataset, attempt, "the platform refuses batchdrop's credentials or set-up; the files wait (nothing is failed for this): fix [platform] / [platform.auth] in the config (client_id, the secret, org_id, sandbox, the token file); retrying in {wait:?}: {e}");
        } else {
            tracing::warn!(batch = %label, dataset = %b.dataset, attempt, "transient failure, retrying in {wait:?}: {e}");
        }
        self.store
            .schedule_retry(
                b.id,
                &e.to_string(),
                now_ms() + wait.as_millis() as i64,
                counts,
            )
            .await?;
        Ok(())
    }

    /// The batch cannot be used any more: abort it on the platform (best effort) and send its
    /// files, untouched, into a new batch.
    async fn abandon(&self, b: &BatchRow, why: &str) -> Result<(), StoreError> {
        tracing::warn!(batch = %b.label(), dataset = %b.dataset, "abandoning batch, its files go into a new one: {why}");
        if let Some(remote) = b.remote_id() {
            let _ = self.api.batch_action(remote, BatchAction::Abort).await;
        }
        metrics::counter!(telemetry::BATCHES, "outcome" => "abandoned").increment(1);
        self.store.abandon_batch(b.id, why).await
    }

    /// A permanent failure: the batch's files go to the failed folder with `why`.
    async fn fail_batch(&self, b: &BatchRow, why: &str) -> Result<(), StoreError> {
        tracing::error!(batch = %b.label(), dataset = %b.dataset, "batch failed: {why}");
        if let Some(remote) = b.remote_id() {
            let _ = self.api.batch_action(remote, BatchAction::Abort).await;
        }
        for f in self.store.batch_files(b.id).await? {
            if f.state.in_batch() {
                self.store.fail_file(f.id, why).await?;
            }
        }
        let outcome = BatchOutcome::local_error(why);
        self.store
            .finish_batch(b.id, Verdict::Failed, &outcome, why)
            .await?;
        metrics::counter!(telemetry::BATCHES, "outcome" => "failed").increment(1);
        self.wake_archiver.notify_one();
        Ok(())
    }
}

/// One file's transfer into one remote batch.
struct FileJob {
    /// The batch's run of failures still has to be ended by the first progress of this drive.
    failures_to_clear: Arc<std::sync::atomic::AtomicBool>,
    store: Store,
    api: ApiClient,
    upload: Upload,
    batch: String,
    dataset: String,
    shutdown: CancellationToken,
}

impl FileJob {
    /// Sends one file; returns the fact to record once it is acknowledged (None when the
    /// file was failed or superseded instead, which is recorded here).
    async fn upload(&self, f: &FileRow) -> Result<Option<Uploaded>, StepError> {
        let path = f.abs_path();
        let recorded = f.identity();
        // Opened once, no folder on its way followed; it is uploaded only if the descriptor
        // is the version the watcher queued, and every byte sent and hashed is read from it.
        let opened = {
            let (root, path) = (PathBuf::from(&f.root), path.clone());
            tokio::task::spawn_blocking(move || disk::open_below(&root, &path, Links::Anywhere))
                .await
                .expect("file open task panicked")
        };
        let file = match opened {
            Ok(o) if o.stat.kind == Kind::File && o.stat.identity == recorded => o.file,
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
        // The reader takes a duplicate; this one stays to look at the file afterwards.
        let reader = file.try_clone().map_err(|e| {
            if disk::is_transient(&e) {
                busy(f, e)
            } else {
                io_fail(f, e)
            }
        })?;
        self.store.mark_sent(f.id).await?;
        let started = std::time::Instant::now();
        let sent = if (f.size as u64) <= self.upload.large_file_threshold {
            self.put_small(f, reader).await
        } else {
            self.put_large(f, reader).await
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
        metrics::counter!(telemetry::BYTES_UPLOADED, "dataset" => self.dataset.clone())
            .increment(f.size as u64);
        metrics::counter!(telemetry::UPLOAD_SECONDS, "dataset" => self.dataset.clone())
            .increment(started.elapsed().as_secs_f64() as u64);
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
        if f.size as u64 <= READ_WHOLE {
            return self.put_from_memory(f, file).await;
        }
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let size = f.size as u64;
        let body = body_of(read_ahead(file, 0, size, size, hasher.clone()), size);
        self.api
            .put_file(&self.batch, &self.dataset, &f.rel_path, body, size)
            .await?;
        crashpoint::hit("put-sent");
        Ok(finish(hasher))
    }

    /// A small file is read and hashed in one trip to the blocking pool (a streamed body
    /// costs a trip per read) and sent from memory.
    async fn put_from_memory(&self, f: &FileRow, file: std::fs::File) -> Result<String, StepError> {
        let size = f.size as u64;
        let read = tokio::task::spawn_blocking(move || {
            // One byte more than recorded: a file that grew is a change, not a shorter body.
            disk::read_capped(&file, size).map(|bytes| {
                let sha = format!("{:x}", Sha256::digest(&bytes));
                (bytes::Bytes::from(bytes), sha)
            })
        })
        .await
        .expect("file read task panicked");
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

/// Batches whose files are sent at the same time (see `Uploader::loading`): two, so that one
/// batch's last slow file, or a large file, leaves the slots to the next batch.
const BATCHES_LOADING: usize = 2;

/// Acknowledged transfers recorded per statement (see `Store::mark_uploaded_many`).
const FACTS_PER_WRITE: usize = 32;

/// Folds one file's upload outcome into the batch's: a tainted batch stops at once (a file
/// we have sent bytes of changed: nothing else of this batch matters); other errors keep the
/// gravest.
fn absorb(worst: &mut Option<StepError>, r: Result<(), StepError>) -> Result<(), StepError> {
    match r {
        Ok(()) => Ok(()),
        Err(e @ StepError::Tainted(_)) => Err(e),
        Err(e) => {
            *worst = Some(graver(worst.take(), e));
            Ok(())
        }
    }
}

/// Of two errors of one drive, the one the batch's retry must be scheduled by: a state
/// database error first, then the transient error with the longest `Retry-After`, so that no
/// request the platform asked to wait is repeated sooner because another file of the batch
/// failed differently.
fn graver(prev: Option<StepError>, e: StepError) -> StepError {
    fn wait(e: &StepError) -> Option<Duration> {
        match e {
            StepError::Api(a) => a.retry_after(),
            _ => None,
        }
    }
    match prev {
        None => e,
        Some(p @ StepError::Store(_)) => p,
        Some(_) if matches!(e, StepError::Store(_)) => e,
        Some(p) if wait(&e) > wait(&p) => {
            let _ = p;
            e
        }
        Some(p) => p,
    }
}

fn deleted_while_uploading(f: &FileRow, batch: &str) -> String {
    format!(
        "{} was deleted while it was being uploaded into batch {batch}; that batch was given up, \
         so nothing of it is ingested: drop it again to ingest it",
        f.rel_path
    )
}

/// How long a batch waits when the process ran out of descriptors or memory.
const BUSY_WAIT: Duration = Duration::from_secs(2);

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

/// A file's bytes from `offset` to `end`, read by one blocking task that also feeds every
/// byte to `hasher` (the file's SHA-256 comes from the same read as its upload), in pieces
/// that never straddle a multiple of `chunk` from `offset`, so that each chunk's body is whole
/// pieces (see [`body_of`]). Reading and hashing run up to [`READ_AHEAD`] pieces ahead of the
/// network, across chunks: the next chunk's first pieces are ready while the platform answers
/// the previous one. What it has read of a large file leaves the page cache ([`drop_cached`]).
fn read_ahead(
    file: std::fs::File,
    offset: u64,
    end: u64,
    chunk: u64,
    hasher: Arc<Mutex<Sha256>>,
) -> Pieces {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let mut file = file;
        // Pieces come back here once sent, to be read into again: a fresh 1 MiB buffer per
        // piece is page-faulted and zeroed by the kernel each time, and the memory in use
        // stays READ_AHEAD pieces and the few the connection holds.
        let (returned, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let read = (|| {
            file.seek(SeekFrom::Start(offset))?;
            let mut at = offset;
            let mut dropped_to = offset;
            while at < end {
                let to_chunk_end = chunk - (at - offset) % chunk;
                let want = READ_PIECE.min(end - at).min(to_chunk_end);
                let mut buf = spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(READ_PIECE as usize));
                buf.clear();
                // `read_to_end` reads into the spare capacity without zeroing it first.
                (&mut file).take(want).read_to_end(&mut buf)?;
                if (buf.len() as u64) < want {
                    // A file cut short: the body ends short of its announced length.
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                hasher.lock().unwrap().update(&buf);
                at += want;
                if end - offset >= DROP_BEHIND && (at - dropped_to >= DROP_BEHIND || at == end) {
                    drop_cached(&file, dropped_to, at);
                    dropped_to = at;
                }
                let piece = bytes::Bytes::from_owner(Piece {
                    buf,
                    back: returned.clone(),
                });
                if tx.blocking_send(Ok(piece)).is_err() {
                    break; // the upload was given up
                }
            }
            Ok(())
        })();
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Arc::new(tokio::sync::Mutex::new(rx))
}

/// Tells the kernel that bytes `from..to` of `file` will not be read again, so their pages in
/// the page cache can go now (advice: an error changes nothing and is ignored).
///
/// batchdrop reads a file from a drop folder once: only a retried upload, one resumed after a
/// restart, or the archiver's check of a file that grew read it again, then from the disk.
/// Caching it would push pages other programs use out of the host's cache, and in a container
/// it counts against the memory limit. On a VM that gives memory the guest has not
/// used for a while back to the host (this bench machine does), the pages freed here are also
/// the ones the next writes on the host get, without a round trip to the hypervisor: with the
/// local emulator, B2's 2 GiB upload went from 525–540 to 700–770 MB/s (interleaved runs).
fn drop_cached(file: &std::fs::File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return;
        };
        // SAFETY: advice about a range of a file we hold open; no memory is involved.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), from, len, libc::POSIX_FADV_DONTNEED) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

/// The pieces of a file read by [`read_ahead`], shared by the bodies of its chunks in turn.
type Pieces = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>>>;

/// A request body of the next `len` bytes of `pieces`.
fn body_of(pieces: Pieces, len: u64) -> Body {
    let stream = futures::stream::unfold((pieces, len), |(pieces, left)| async move {
        if left == 0 {
            return None;
        }
        let piece = pieces.lock().await.recv().await?;
        let left = match &piece {
            Ok(p) => {
                crashpoint::hit("mid-body");
                left.saturating_sub(p.len() as u64)
            }
            Err(_) => 0, // the body fails with it
        };
        Some((piece, (pieces, left)))
    });
    Body::stream(stream)
}

/// A piece of a body being sent; its buffer goes back to the reader when the piece is dropped.
struct Piece {
    buf: Vec<u8>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        // The reader may be gone (its body ended): the buffer is then simply freed.
        let _ = self.back.send(std::mem::take(&mut self.buf));
    }
}

/// Pieces of 1 MiB: with 256 KiB ones the hand-offs between the reader thread and the
/// sender cost a 2 GiB upload 10% more daemon CPU (perf: task switches and wake-ups).
const READ_PIECE: u64 = 1 << 20;
const READ_AHEAD: usize = 4;
/// Files (or what is left of them) this large leave the page cache as they are read, in
/// spans of this size (see [`drop_cached`]); smaller ones are not worth a system call.
const DROP_BEHIND: u64 = 8 << 20;

/// Files up to this size are sent from memory (see `FileJob::put_from_memory`); at most
/// `[upload] concurrency` of them are held at once.
const READ_WHOLE: u64 = 1 << 20;

/// A body of bytes already in memory, handed over in the pieces a streamed body would have
/// (so that a crash in the middle of a body means the same for both).
fn memory_body(bytes: bytes::Bytes) -> Body {
    const PIECE: usize = 256 * 1024;
    let pieces: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(PIECE)
        .map(|at| bytes.slice(at..(at + PIECE).min(bytes.len())))
        .collect();
    let stream = futures::stream::iter(pieces).map(|piece| {
        crashpoint::hit("mid-body");
        Ok::<_, std::io::Error>(piece)
    });
    Body::stream(stream)
}

fn finish(hasher: Arc<Mutex<Sha256>>) -> String {
    let h = std::mem::take(&mut *hasher.lock().unwrap());
    format!("{:x}", h.finalize())
}

/// The tasks driving batches, one per batch, and which batch each drives.
#[derive(Default)]
pub struct Tasks {
    running: JoinSet<()>,
    batches: HashMap<tokio::task::Id, i64>,
}

/// The uploader as a stage.
struct Uploading {
    uploader: Arc<Uploader>,
    tasks: Tasks,
    shutdown: CancellationToken,
}

impl Stage for Uploading {
    const NAME: &'static str = "uploader";

    async fn pass(&mut self) -> Result<Next, StoreError> {
        self.uploader.pass(&mut self.tasks, &self.shutdown).await
    }
}

/// A batch being driven by a task: released when the task ends, however it ends (a task that
/// panicked must not keep its batch from being driven again).
struct Driving {
    uploader: Arc<Uploader>,
    batch: i64,
}

impl Drop for Driving {
    fn drop(&mut self) {
        // Never a second panic while unwinding from one: a poisoned set is still the set.
        let mut active = self
            .uploader
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        active.remove(&self.batch);
        drop(active);
        self.uploader.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 MiB of bytes that differ from piece to piece, written to disk and read back once,
    /// so that all its pages are cached and clean.
    fn cached_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
        let path = dir.join("big.json");
        std::fs::write(&path, &data).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        (path, data)
    }

    async fn read_all(path: &Path, offset: u64, chunk: u64) -> (Vec<bytes::Bytes>, String) {
        let file = std::fs::File::open(path).unwrap();
        let end = file.metadata().unwrap().len();
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let pieces = read_ahead(file, offset, end, chunk, hasher.clone());
        let mut got = Vec::new();
        while let Some(piece) = pieces.lock().await.recv().await {
            got.push(piece.unwrap());
        }
        (got, finish(hasher))
    }

    #[tokio::test]
    async fn read_ahead_gives_every_byte_from_the_offset_in_pieces_within_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let (offset, chunk) = (3u64 << 20, (5u64 << 20) + 12345);
        let (pieces, sha) = read_all(&path, offset, chunk).await;

        let mut at = offset;
        for p in &pieces {
            let next = at + p.len() as u64;
            assert!(
                (next - offset).div_ceil(chunk) == (at - offset) / chunk + 1,
                "the piece {at}..{next} straddles a chunk boundary"
            );
            assert_eq!(&p[..], &data[at as usize..next as usize]);
            at = next;
        }
        assert_eq!(at, data.len() as u64);
        assert_eq!(
            sha,
            format!("{:x}", Sha256::digest(&data[offset as usize..]))
        );
    }

    /// Pages of `path` in the page cache, counted with mincore(2) over a read-only mapping.
    #[cfg(target_os = "linux")]
    fn cached_pages(path: &Path, from: u64, to: u64) -> usize {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        // SAFETY: a shared read-only mapping of a file we hold open, unmapped before return;
        // mincore writes one byte per page into a vector of that many bytes.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut resident = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
            resident[from as usize / page..(to as usize).div_ceil(page)]
                .iter()
                .filter(|&&r| r & 1 == 1)
                .count()
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_large_file_leaves_the_page_cache_as_it_is_read_for_upload() {
        // Beside the test binary rather than in /tmp: a tmpfs /tmp (Fedora, Arch) keeps its
        // files in memory and can never drop them.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let (path, data) = cached_file(dir.path());
        let (offset, end) = (4u64 << 20, data.len() as u64);
        let before = cached_pages(&path, offset, end);
        assert!(before > 0, "the test file should start in the page cache");

        let (pieces, _) = read_all(&path, offset, 8 << 20).await;
        assert_eq!(
            pieces.iter().map(|p| p.len() as u64).sum::<u64>(),
            end - offset
        );
        assert_eq!(
            cached_pages(&path, offset, end),
            0,
            "{before} pages of the uploaded range were cached before; none should be after"
        );
    }
}
