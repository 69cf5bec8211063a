//! Completed batch → terminal status: asks the Catalog, with a growing interval, until the
//! platform says `success` or `failed` (or that the batch is gone), and records the outcome.
//!
//! This module must not move files (archiver) or send anything but Catalog and Data Access
//! reads; what an end means for each file is `outcome`'s decision. It is the uploader's last
//! step and imports nothing of it: its errors are its own.

use crate::api::{ApiClient, ApiError};
use crate::config::Upload;
use crate::outcome::{self, Ending};
use crate::store::{BatchOutcome, BatchRow, FileState, Store, StoreError, Verdict, now_ms};

/// Why a look at a processing batch did not record its end.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The platform lost the batch, or stopped it before it finished: it can never succeed.
    #[error("{0}")]
    Lost(String),
}

/// One look at a processing batch. Records the outcome when terminal; otherwise schedules the
/// next look (interval doubling from `poll_initial` up to `poll_max`).
pub async fn poll(
    store: &Store,
    api: &ApiClient,
    upload: &Upload,
    b: &BatchRow,
    remote: &str,
) -> Result<(), PollError> {
    crate::crashpoint::hit("polling");
    let Some(info) = api.get_batch(remote).await? else {
        return Err(PollError::Lost(format!(
            "the platform lost batch {remote} after it was completed"
        )));
    };
    let outcome = BatchOutcome(info.raw.clone());
    let verdict = match outcome::ending(&info.status) {
        Ending::Ended(verdict) => verdict,
        Ending::Stopped => {
            return Err(PollError::Lost(format!(
                "batch {remote} was {:?} on the platform before it finished",
                info.status
            )));
        }
        Ending::Pending => {
            let waited = (now_ms() - b.updated_at).max(0) as u64;
            let next = (waited / 2).clamp(
                upload.poll_initial.as_millis() as u64,
                upload.poll_max.as_millis() as u64,
            );
            store.delay_batch(b.id, now_ms() + next as i64).await?;
            return Ok(());
        }
    };
    let m = &info.metrics;
    crate::telemetry::batch_ended(b, verdict, m);
    let detail = format!(
        "{:?}: {} records in, {} out, {} failed",
        info.status,
        m.input_record_count.unwrap_or(0),
        m.output_record_count.unwrap_or(0),
        m.failed_record_count.unwrap_or(0)
    );
    if verdict == Verdict::Success {
        tracing::info!(batch = %remote, dataset = %b.dataset, "batch succeeded ({detail})");
        // Each file's own count, for its receipt (the Catalog's metrics are the batch's).
        // Only a nicety: the batch's outcome does not wait for it if Data Access fails.
        match api.list_batch_files(remote).await {
            Ok(listing) => {
                let files: Vec<(i64, String)> = store
                    .batch_files(b.id)
                    .await?
                    .into_iter()
                    .filter(|f| f.state == FileState::Uploaded)
                    .map(|f| (f.id, f.rel_path))
                    .collect();
                store
                    .set_file_records(&outcome::records_per_file(&files, &listing))
                    .await?;
            }
            Err(e) => {
                tracing::debug!(batch = %remote, "no per-file record counts for the receipts: {e}")
            }
        }
        if let Some(preds) = &b.replay {
            store.mark_replaced(&preds.0, remote).await?;
        }
    } else {
        let errors: Vec<String> = info
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.description))
            .collect();
        tracing::warn!(batch = %remote, dataset = %b.dataset, "batch failed ({detail}): {}", errors.join("; "));
        // When the platform's errors name the culprits, only they fail; the others travel
        // again in a new batch.
        let files: Vec<_> = store
            .batch_files(b.id)
            .await?
            .into_iter()
            .filter(|f| f.state.in_batch())
            .collect();
        let (named, innocent) = outcome::blame(&files, &info.errors);
        if !named.is_empty() && !innocent.is_empty() {
            let culprits: Vec<&str> = named.iter().map(|f| f.rel_path.as_str()).collect();
            let why = format!(
                "batch {remote} failed because of {}; this file was not at fault and goes into a new batch",
                culprits.join(", ")
            );
            tracing::warn!(
                batch = %remote, dataset = %b.dataset,
                "the platform's errors name {} of its {} files; the other {} go into a new batch",
                named.len(), files.len(), innocent.len()
            );
            let ids: Vec<i64> = innocent.iter().map(|f| f.id).collect();
            store
                .finish_batch_requeueing(b.id, &outcome, &detail, &ids, &why)
                .await?;
            // It failed all the same, whoever travels again.
            metrics::counter!(crate::telemetry::BATCHES, "outcome" => verdict.state().as_str())
                .increment(1);
            return Ok(());
        }
    }
    store.finish_batch(b.id, verdict, &outcome, &detail).await?;
    metrics::counter!(crate::telemetry::BATCHES, "outcome" => verdict.state().as_str())
        .increment(1);
    Ok(())
}
