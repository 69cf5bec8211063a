//! The public `Store` API: each call goes to the same query of the backend the store runs on
//! (`queries.rs`, compiled for SQLite and for PostgreSQL). It says only where a call goes; what
//! a query does is documented at the query.
//!
//! This module must not hold SQL or any logic: a method of the queue that is not listed here
//! is not part of the API.

use std::collections::{HashMap, HashSet};

use super::{
    Backend, BatchOutcome, BatchProgress, BatchRow, BlockedDataset, Carried, Dedupe, EventRow,
    FileRow, FileState, Finalized, NewBatch, NewFile, Recorded, ReplayRequest, Sealed, Split,
    StagedFile, Step, Store, StoreError, Uploaded, Verdict, WatchBudget,
};

/// Writes each `pub async fn name(&self, arg: Type, …) -> Ret;` as a method of `Store` that
/// awaits the backend's own.
macro_rules! dispatch {
    ($(
        $(#[$meta:meta])*
        pub async fn $name:ident(&self $(, $arg:ident: $type:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $arg: $type)*) -> $ret {
                    match &self.backend {
                        Backend::Sqlite(queue) => queue.$name($($arg),*).await,
                        Backend::Postgres(queue) => queue.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

dispatch! {
    // intake.rs
    pub async fn record_ready_with(&self, f: &NewFile, replay: Option<&ReplayRequest>,) -> Result<Recorded, StoreError>;
    pub async fn record_ready_many(&self, files: &[NewFile]) -> Result<Vec<Recorded>, StoreError>;
    pub async fn record_rejected(&self, f: &NewFile, reason: &str,) -> Result<Option<i64>, StoreError>;
    pub async fn record_rejected_with(&self, f: &NewFile, reason: &str, sidecar: Option<&str>,) -> Result<Option<i64>, StoreError>;
    pub async fn attach_replay(&self, file_id: i64, replay: &ReplayRequest,) -> Result<bool, StoreError>;
    pub async fn reject_ready_with_sidecar(&self, file_id: i64, reason: &str, sidecar: &str,) -> Result<bool, StoreError>;
    pub async fn sidecar_claimed(&self, watch: &str, sidecar: &str) -> Result<bool, StoreError>;
    pub async fn unfinished_file(&self, watch: &str, rel_path: &str,) -> Result<Option<FileRow>, StoreError>;
    pub async fn queued_files(&self) -> Result<i64, StoreError>;
    pub async fn known_versions(&self, watch: &str, versions: &[(&str, crate::disk::Identity)],) -> Result<Vec<bool>, StoreError>;
    // batching.rs
    pub async fn ready_files(&self, watch: &str, limit: i64) -> Result<Vec<FileRow>, StoreError>;
    pub async fn size_seen(&self, dataset: &str, size: i64, except: i64,) -> Result<bool, StoreError>;
    pub async fn set_shas(&self, shas: &[(i64, String)]) -> Result<(), StoreError>;
    pub async fn set_unknown_shas(&self, shas: &[(i64, String)]) -> Result<(), StoreError>;
    pub async fn batches_sealed_since(&self, watch: &str, since: i64,) -> Result<crate::schedule::Sealed, StoreError>;
    pub async fn mark_validated(&self, ids: &[i64]) -> Result<(), StoreError>;
    pub async fn validated(&self, id: i64) -> Result<bool, StoreError>;
    pub async fn release_waiting(&self) -> Result<u64, StoreError>;
    pub async fn carried(&self, dataset: &str, contents: &[(String, i64)],) -> Result<HashMap<String, Carried>, StoreError>;
    pub async fn mark_duplicate_elsewhere(&self, file_id: i64, reason: &str,) -> Result<(), StoreError>;
    pub async fn seal_batch(&self, batch: &NewBatch<'_>, file_ids: &[i64], dedupe: Dedupe,) -> Result<Sealed, StoreError>;
    pub async fn inflight_bytes(&self) -> Result<i64, StoreError>;
    // upload.rs
    pub async fn batches_due(&self, now: i64) -> Result<Vec<BatchRow>, StoreError>;
    pub async fn batch_if_due(&self, id: i64, now: i64) -> Result<Option<BatchRow>, StoreError>;
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError>;
    pub async fn batch(&self, id: i64) -> Result<BatchRow, StoreError>;
    pub async fn batch_by_remote(&self, remote_id: &str) -> Result<Option<BatchRow>, StoreError>;
    pub async fn batch_files(&self, batch_id: i64) -> Result<Vec<FileRow>, StoreError>;
    pub async fn batch_files_in_state(&self, batch_id: i64, state: FileState,) -> Result<Vec<FileRow>, StoreError>;
    pub async fn batch_file_states(&self, batch_id: i64) -> Result<Vec<(FileState, i64)>, StoreError>;
    pub async fn batch_file_paths(&self, batch_id: i64, state: FileState,) -> Result<Vec<(i64, String)>, StoreError>;
    pub async fn advance_batch(&self, batch_id: i64, step: Step<'_>, detail: &str,) -> Result<(), StoreError>;
    pub async fn schedule_retry(&self, batch_id: i64, error: &str, next_at: i64, counts: bool,) -> Result<(i64, i64), StoreError>;
    pub async fn delay_batch(&self, batch_id: i64, next_at: i64) -> Result<(), StoreError>;
    pub async fn note_answered(&self, batch_id: i64) -> Result<(), StoreError>;
    pub async fn note_progress(&self, batch_id: i64) -> Result<(), StoreError>;
    pub async fn mark_sent(&self, file_id: i64) -> Result<(), StoreError>;
    pub async fn mark_sent_many(&self, file_ids: &[i64]) -> Result<(), StoreError>;
    pub async fn set_uploaded_bytes(&self, file_id: i64, bytes: i64) -> Result<(), StoreError>;
    pub async fn mark_uploaded_many(&self, done: &[Uploaded]) -> Result<(), StoreError>;
    pub async fn uploaded_without_hash(&self, batch_id: i64) -> Result<Vec<FileRow>, StoreError>;
    pub async fn record_hash(&self, file_id: i64, sha256: &str) -> Result<(), StoreError>;
    pub async fn fail_file(&self, file_id: i64, reason: &str) -> Result<(), StoreError>;
    pub async fn supersede(&self, file_id: i64, why: &str) -> Result<(), StoreError>;
    pub async fn abandon_batch(&self, batch_id: i64, reason: &str) -> Result<(), StoreError>;
    pub async fn replay_reason(&self, batch_id: i64) -> Result<Option<String>, StoreError>;
    // outcome.rs
    pub async fn finish_batch(&self, batch_id: i64, verdict: Verdict, outcome: &BatchOutcome, detail: &str,) -> Result<(), StoreError>;
    pub async fn fail_batch(&self, batch_id: i64, outcome: &BatchOutcome, detail: &str, requeue: &[i64], why: &str, reason: &str,) -> Result<(), StoreError>;
    pub async fn mark_replaced(&self, remote_ids: &[String], by: &str) -> Result<(), StoreError>;
    pub async fn files_to_finalize(&self, after: i64, limit: i64,) -> Result<Vec<FileRow>, StoreError>;
    pub async fn promised_among(&self, paths: &[String]) -> Result<Vec<String>, StoreError>;
    pub async fn set_final_paths(&self, intents: &[(i64, String)]) -> Result<(), StoreError>;
    pub async fn record_final_paths(&self, intents: &[(i64, String)]) -> Result<Vec<(i64, String)>, StoreError>;
    pub async fn mark_finalized(&self, file_id: i64, state: FileState, detail: &str,) -> Result<(), StoreError>;
    pub async fn mark_finalized_many(&self, done: &[Finalized]) -> Result<(), StoreError>;
    // commands.rs
    pub async fn file(&self, id: i64) -> Result<Option<FileRow>, StoreError>;
    pub async fn files_by_path(&self, rel_path: &str) -> Result<Vec<FileRow>, StoreError>;
    pub async fn live_batches_that_ingested(&self, dataset: &str, rel_path: &str,) -> Result<Vec<String>, StoreError>;
    pub async fn name_known(&self, dataset: &str, rel_path: &str) -> Result<bool, StoreError>;
    pub async fn find_batch(&self, name: &str) -> Result<Option<BatchRow>, StoreError>;
    pub async fn batch_progress(&self, batch_id: i64) -> Result<BatchProgress, StoreError>;
    pub async fn recent_batches(&self, limit: i64) -> Result<Vec<BatchRow>, StoreError>;
    pub async fn latest_batch(&self) -> Result<Option<BatchRow>, StoreError>;
    pub async fn files_by_final_path(&self, path: &str) -> Result<Vec<FileRow>, StoreError>;
    pub async fn abort_batch(&self, batch_id: i64, reason: &str) -> Result<bool, StoreError>;
    pub async fn mark_reverted(&self, batch_id: i64, detail: &str) -> Result<bool, StoreError>;
    pub async fn mark_requeued(&self, file_id: i64, detail: &str) -> Result<(), StoreError>;
    pub async fn file_counts(&self) -> Result<Vec<(String, FileState, i64)>, StoreError>;
    pub async fn batches_in_flight(&self) -> Result<Vec<BatchRow>, StoreError>;
    pub async fn files_in_state(&self, watch: &str, state: FileState,) -> Result<Vec<FileRow>, StoreError>;
    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<FileRow>, StoreError>;
    pub async fn work_left(&self) -> Result<bool, StoreError>;
    pub async fn work_left_unblocked(&self) -> Result<bool, StoreError>;
    pub async fn failed_count_since(&self, since_ms: i64) -> Result<i64, StoreError>;
    pub async fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError>;
    // events.rs
    pub async fn events_for_file(&self, file_id: i64) -> Result<Vec<EventRow>, StoreError>;
    pub async fn events_for_batch(&self, batch_id: i64) -> Result<Vec<EventRow>, StoreError>;
    // blocked.rs
    pub async fn block_dataset(&self, dataset: &str, watch: &str, reason: &str, next_check_at: i64,) -> Result<bool, StoreError>;
    pub async fn blocked_datasets(&self) -> Result<Vec<BlockedDataset>, StoreError>;
    pub async fn still_blocked(&self, dataset: &str, next_check_at: i64) -> Result<(), StoreError>;
    pub async fn unblock_dataset(&self, dataset: &str) -> Result<bool, StoreError>;
    pub async fn requeue_unsent_batches(&self, dataset: &str, reason: &str,) -> Result<usize, StoreError>;
    // budgets.rs
    pub async fn record_budgets(&self, budgets: &[WatchBudget]) -> Result<(), StoreError>;
    pub async fn watch_budgets(&self) -> Result<Vec<WatchBudget>, StoreError>;
    // isolation.rs
    pub async fn split_failed_batch(&self, batch_id: i64, outcome: &BatchOutcome, detail: &str, parts: &[Vec<i64>], max_extra: u32, why: &str,) -> Result<Split, StoreError>;
    // staged.rs
    pub async fn record_staged(&self, staged: &StagedFile) -> Result<bool, StoreError>;
    pub async fn staged_file(&self, file_id: i64) -> Result<Option<StagedFile>, StoreError>;
    pub async fn staged_of_batch(&self, batch_id: i64) -> Result<Vec<StagedFile>, StoreError>;
    pub async fn staged_of_files(&self, file_ids: &[i64]) -> Result<HashMap<i64, StagedFile>, StoreError>;
    pub async fn staged_among(&self, file_ids: &[i64]) -> Result<HashSet<i64>, StoreError>;
    pub async fn staged_paths_in_use(&self) -> Result<Vec<String>, StoreError>;
    // stuck.rs
    pub async fn mark_stuck(&self, batch_id: i64, now: i64) -> Result<bool, StoreError>;
    pub async fn stuck_batches(&self) -> Result<Vec<(i64, i64)>, StoreError>;
    pub async fn stuck_since(&self, batch_id: i64) -> Result<Option<i64>, StoreError>;
    // queries.rs
    pub async fn close(&self) -> ();
    pub async fn ping_write(&self) -> Result<(), StoreError>;
    // outcome.rs
    pub async fn finish_succeeded_batch(&self, batch_id: i64, outcome: &BatchOutcome, detail: &str, counts: &[(i64, i64)],) -> Result<(), StoreError>;
}
