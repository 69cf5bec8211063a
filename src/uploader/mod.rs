//! Sealed batch → platform: create it, upload its files, complete it; then hand it to the
//! poller. Each step is recorded in the store before the remote call (the intent) and after it
//! (the fact), so that a crash anywhere is resolved on the next start by asking the platform:
//! a batch found by its `externalId`, a large file resumed from the prefix HEAD reports, a small
//! file PUT again, COMPLETE repeated. All three are idempotent on the platform.
//!
//! This module is the batch's state machine; `transfer` sends one file, `read` reads a file
//! ahead of the network (and out of the page cache), `behind` takes a large file's hash after
//! its bytes are sent.
//!
//! This module decides nothing about grouping (batcher) or where files go afterwards
//! (archiver), and it never builds an HTTP request itself (api).

mod behind;
mod failure;
mod read;
#[cfg(test)]
mod tests;
mod transfer;

use transfer::FileJob;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, BatchAction, BatchStatus, CreateBatch, Replay};
use crate::config::{Outcomes, Upload};
use crate::crashpoint;
use crate::membership::{Drive, Leases};
use crate::poller;
use crate::stage::{self, Next, Stage};
use crate::store::{
    BatchPhase, BatchRow, FileRow, FileState, Step, Store, StoreError, Uploaded, now_ms,
};

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
    /// Each watch's outcome settings, by watch name (a reload replaces them); batches of a
    /// watch not listed (`push`, a watch removed since) get the defaults.
    pub outcomes: OutcomesByWatch,
    /// In a fleet: a batch is driven only under its lease.
    pub leases: Option<Leases>,
    /// Hashes of large files computed while they settled, shared with the watchers.
    pub early: crate::early_hash::EarlyHashes,
}

/// Each watch's [`Outcomes`], by watch name, shared with the daemon's reload.
pub type OutcomesByWatch = Arc<RwLock<HashMap<String, Outcomes>>>;

/// The outcome settings of each of `watches`, to share with an [`Uploader`].
pub fn outcomes_by_watch(watches: &[crate::config::Watch]) -> HashMap<String, Outcomes> {
    watches
        .iter()
        .map(|w| (w.name.clone(), w.outcomes))
        .collect()
}

impl Uploader {
    /// An uploader taking the hashes the watchers computed early from `early` (off, by
    /// default: then every upload hashes as it reads).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        api: ApiClient,
        upload: Upload,
        wake: Arc<Notify>,
        wake_archiver: Arc<Notify>,
        outcomes: OutcomesByWatch,
        leases: Option<Leases>,
        early: crate::early_hash::EarlyHashes,
    ) -> Arc<Uploader> {
        Arc::new(Uploader {
            early,
            slots: Arc::new(Semaphore::new(upload.concurrency)),
            loading: Arc::new(Semaphore::new(BATCHES_LOADING)),
            store,
            api,
            upload,
            active: Mutex::new(HashSet::new()),
            wake,
            wake_archiver,
            outcomes,
            leases,
        })
    }

    /// The client for calls about `batch`: in the sandbox it was created in.
    pub(super) fn api_for(&self, batch: &BatchRow) -> Result<ApiClient, ApiError> {
        self.api.in_sandbox(batch.sandbox.as_deref())
    }

    /// The outcome settings of `watch`'s batches.
    pub fn outcomes_of(&self, watch: &str) -> Outcomes {
        self.outcomes
            .read()
            .unwrap()
            .get(watch)
            .copied()
            .unwrap_or_default()
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
                    if let Some(leases) = &me.leases {
                        let wait = match leases.drive(driving.batch).await {
                            Ok(Drive::Mine) => None,
                            // Another instance drives it: asked again after a while (the
                            // batch stays marked active meanwhile, so no pass spins on it).
                            Ok(Drive::Elsewhere) => Some(leases.retry_after()),
                            // Left for an instance with less to drive: asked again soon, in
                            // case none takes it.
                            Ok(Drive::LeftToOthers) => Some(LEFT_TO_OTHERS_WAIT),
                            Err(e) => {
                                tracing::error!(batch = %b.label(), "cannot take the batch's lease: {}; will retry", e.explain());
                                Some(Duration::from_secs(1))
                            }
                        };
                        if let Some(wait) = wait {
                            tokio::select! {
                                _ = token.cancelled() => {}
                                _ = tokio::time::sleep(wait) => {}
                            }
                            return;
                        }
                    }
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
        // Hashes of this drive's large files still being computed after their last byte was
        // sent: the batch is completed without waiting for them (see `transfer::Hash`).
        let mut behind = Vec::new();
        loop {
            if shutdown.is_cancelled() {
                return Err(StepError::Shutdown);
            }
            match &b.phase {
                BatchPhase::Sealed | BatchPhase::Creating => self.create(&b).await?,
                BatchPhase::Loading { remote_id } => {
                    behind.extend(self.load(&b, remote_id, shutdown).await?)
                }
                BatchPhase::Completing { remote_id } => self.complete(&b, remote_id).await?,
                BatchPhase::Processing { remote_id } => {
                    self.record_hashes(&b, std::mem::take(&mut behind)).await?;
                    let outcomes = self.outcomes_of(&b.watch);
                    poller::poll(
                        &self.store,
                        &self.api_for(&b)?,
                        &self.upload,
                        &outcomes,
                        &b,
                        remote_id,
                    )
                    .await?;
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
                .api_for(b)?
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
        // Always: without diagnostics the platform says only "resend with diagnostics
        // enabled", and nothing a user can act on.
        req.enable_error_diagnostics = true;
        let outcomes = self.outcomes_of(&b.watch);
        req.partial_ingestion_percent =
            (outcomes.partial_ingestion_percent > 0).then_some(outcomes.partial_ingestion_percent);
        let created = self.api_for(b)?.create_batch(&req).await?;
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
    ) -> Result<Vec<behind::Behind>, StepError> {
        // The platform may have moved on while we were away (completed before a crash, aborted
        // by someone, expired): believe it over our record.
        let info = self.api_for(b)?.get_batch(remote).await?;
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
                    BatchStatus::Staging
                        | BatchStatus::Processing
                        | BatchStatus::Retrying
                        | BatchStatus::Queued
                        | BatchStatus::Loaded
                        | BatchStatus::Stalled
                ) || info.status.is_terminal()
                    && !matches!(info.status, BatchStatus::Aborted | BatchStatus::Abandoned) =>
            {
                self.store
                    .advance_batch(b.id, Step::Processing, "already completed on the platform")
                    .await?;
                return Ok(Vec::new());
            }
            Some(info) => {
                return Err(StepError::Tainted(format!(
                    "batch {remote} is {:?} on the platform and can no longer take files",
                    info.status
                )));
            }
        }

        // The turn first, the files after: every sealed batch has a task here, and a backlog
        // of a million files is hundreds of them; read while waiting, their rows (~600 bytes
        // a file) made memory grow with the backlog (issue #23, B4 at 300,000 files).
        let _turn = tokio::select! {
            turn = self.loading.clone().acquire_owned() => turn.expect("never closed"),
            _ = shutdown.cancelled() => return Err(StepError::Shutdown),
        };
        let files: Vec<FileRow> = self
            .store
            .batch_files_in_state(b.id, FileState::Batched)
            .await?;
        let mut set = JoinSet::new();
        let mut worst: Option<StepError> = None;
        // Acknowledged transfers are recorded a few dozen at a time, and always before this
        // function returns (so a clean stop never sends a file again).
        let mut facts: Vec<Uploaded> = Vec::new();
        let mut behind: Vec<behind::Behind> = Vec::new();
        // Failures are only counted when a drive ends, so a batch with none at its start has
        // no run of failures for this drive's progress to end: no write per file for it.
        let failures_to_clear = Arc::new(std::sync::atomic::AtomicBool::new(
            b.attempts > 0 || b.first_error_at.is_some(),
        ));
        // Files of a watch that maps its files are sent as their staged files.
        let mut staged: HashMap<i64, crate::store::StagedFile> = self
            .store
            .staged_of_batch(b.id)
            .await?
            .into_iter()
            .map(|s| (s.file_id, s))
            .collect();
        let mut files = files.into_iter().peekable();
        'windows: while files.peek().is_some() {
            // The intents (`sent`) of a window of files in one statement before any of them is
            // sent, not one per file. A file of the window not sent yet when the process stops
            // is only treated as sent on the next start: its change taints the batch instead of
            // superseding the file alone, which is safe.
            let window: Vec<FileRow> = files.by_ref().take(SENT_AHEAD).collect();
            let unsent: Vec<i64> = window.iter().filter(|f| !f.sent).map(|f| f.id).collect();
            self.store.mark_sent_many(&unsent).await?;
            let plain: Vec<&FileRow> = window
                .iter()
                .filter(|f| !staged.contains_key(&f.id))
                .collect();
            let mut opened = transfer::open_ahead(&plain, &self.upload).await;
            for f in window {
                // Finished uploads are reaped as we go: a batch of 1,500 files would otherwise
                // keep 1,500 finished tasks in memory until the last one is spawned.
                while let Some(r) = set.try_join_next() {
                    self.reap(r, &mut worst, &mut facts, &mut behind).await?;
                }
                let permit = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                if shutdown.is_cancelled() {
                    break 'windows;
                }
                let job = FileJob {
                    failures_to_clear: failures_to_clear.clone(),
                    store: self.store.clone(),
                    api: self.api_for(b)?,
                    upload: self.upload.clone(),
                    batch: remote.to_owned(),
                    dataset: b.dataset.clone(),
                    watch: b.watch.clone(),
                    shutdown: shutdown.clone(),
                    early: self.early.clone(),
                };
                let staged = staged.remove(&f.id);
                let opened = opened.remove(&f.id);
                set.spawn(async move {
                    let r = job.upload(&f, staged.as_ref(), opened).await;
                    drop(permit);
                    r
                });
            }
        }
        while let Some(r) = set.join_next().await {
            self.reap(r, &mut worst, &mut facts, &mut behind).await?;
        }
        self.store.mark_uploaded_many(&facts).await?;
        if let Some(e) = worst {
            return Err(e);
        }
        if shutdown.is_cancelled() {
            return Err(StepError::Shutdown);
        }
        // Counts by state are all the end of a drive needs (not the batch's rows again).
        let states = self.store.batch_file_states(b.id).await?;
        let any_in = |state: FileState| states.iter().any(|(s, n)| *s == state && *n > 0);
        if any_in(FileState::Batched) {
            return Ok(behind); // more to do on the next drive
        }
        if !any_in(FileState::Uploaded) {
            // Nothing left to ingest (every file failed or changed): completing would fail it
            // with "empty batch", so abort it and say why in the files' receipts.
            let _ = self
                .api_for(b)?
                .batch_action(remote, BatchAction::Abort)
                .await;
            self.store
                .abandon_batch(b.id, "no file of this batch could be uploaded")
                .await?;
            return Ok(Vec::new());
        }
        self.store
            .advance_batch(b.id, Step::Completing, "COMPLETE sent")
            .await?;
        Ok(behind)
    }

    /// Takes one finished transfer: its fact joins `facts` (written when there are enough),
    /// its hash still being computed joins `behind`, its error joins `worst`. A tainted batch
    /// stops at once, after writing the facts so far.
    async fn reap(
        &self,
        joined: Result<Result<Option<transfer::Transferred>, StepError>, tokio::task::JoinError>,
        worst: &mut Option<StepError>,
        facts: &mut Vec<Uploaded>,
        behind: &mut Vec<behind::Behind>,
    ) -> Result<(), StepError> {
        let r = match joined.expect("upload task panicked") {
            Ok(Some(sent)) => {
                let (fact, hash_behind) = sent.into_parts();
                facts.push(fact);
                behind.extend(hash_behind);
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

    /// Records the hashes of the batch's files that were still being computed when it was
    /// completed (`behind`, from this drive), and reads again those of files sent before a stop
    /// that came before theirs were recorded: all before the batch's outcome is taken, since
    /// the receipts and the one-copy rule go by them. A file that cannot be hashed is still
    /// ingested (its bytes are on the platform); it keeps no hash, and says why.
    async fn record_hashes(
        &self,
        b: &BatchRow,
        behind: Vec<behind::Behind>,
    ) -> Result<(), StepError> {
        for job in behind {
            let started = std::time::Instant::now();
            let (file_id, rel_path) = (job.file_id, job.rel_path.clone());
            match job.hash().await {
                Ok(sha) => {
                    self.store.record_hash(file_id, &sha).await?;
                    tracing::debug!(file = %rel_path, batch_id = b.id, waited_ms = started.elapsed().as_millis() as u64, "hash recorded after the upload");
                }
                // Read again from the disk below, if it can be.
                Err(why) => {
                    tracing::debug!(file = %rel_path, batch_id = b.id, "its hash behind the upload failed: {why}")
                }
            }
        }
        for f in self.store.uploaded_without_hash(b.id).await? {
            let rel_path = f.rel_path.clone();
            let id = f.id;
            let again = tokio::task::spawn_blocking(move || behind::hash_again(&f))
                .await
                .expect("hashing task panicked");
            match again {
                Ok(sha) => self.store.record_hash(id, &sha).await?,
                Err(why) => tracing::warn!(
                    file = %rel_path, dataset = %b.dataset,
                    "{rel_path} was uploaded but its SHA-256 could not be taken afterwards ({why}): \
                     its receipt will carry no hash, and a later copy of it will not be recognized \
                     as a duplicate"
                ),
            }
        }
        Ok(())
    }

    /// completing → processing. COMPLETE is idempotent, so after a crash it is simply sent again.
    async fn complete(&self, b: &BatchRow, remote: &str) -> Result<(), StepError> {
        self.api_for(b)?
            .batch_action(remote, BatchAction::Complete)
            .await?;
        crashpoint::hit("complete-sent");
        tracing::info!(batch = %remote, dataset = %b.dataset, "batch completed; waiting for the platform");
        self.store
            .advance_batch(b.id, Step::Processing, "COMPLETE accepted")
            .await?;
        Ok(())
    }
}

/// Batches whose files are sent at the same time (see `Uploader::loading`): two, so that one
/// batch's last slow file, or a large file, leaves the slots to the next batch.
const BATCHES_LOADING: usize = 2;

/// Acknowledged transfers recorded per statement (see `Store::mark_uploaded_many`).
const FACTS_PER_WRITE: usize = 32;

/// Files whose intents are recorded in one statement ahead of their transfers (see `load`):
/// few, so that a stop leaves few files recorded as sent that were not.
const SENT_AHEAD: usize = 32;

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

/// How long a batch waits when the process ran out of descriptors or memory.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// How long a batch this instance left to the fleet's others (it drives its share) waits
/// before it is asked about again (see `membership::Leases::drive`).
const LEFT_TO_OTHERS_WAIT: Duration = Duration::from_millis(500);

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
