//! Completed batch → terminal status: asks the Catalog, with a growing interval, until the
//! platform says `success` or `failed` (or that the batch is gone), and records the outcome
//! with the batch's error diagnostics (Data Access `row_errors`). A failed batch's files fail,
//! or travel again in halves (`on_batch_failure = "isolate"`); a batch stuck on the platform
//! is reported once and given up after `give_up_after`.
//!
//! This module must not move files (archiver) or send anything but Catalog and Data Access
//! reads; what an end means for each file is `outcome`'s decision. It is the uploader's last
//! step and imports nothing of it: its errors are its own.

use std::time::Duration;

use crate::api::{ApiClient, ApiError};
use crate::config::{OnBatchFailure, Outcomes, Upload};
use crate::outcome::{self, Ending, Vetting};
use crate::store::{
    BatchOutcome, BatchRow, FileRow, FileState, Split, Store, StoreError, Verdict, now_ms,
};

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
/// next look (see [`next_look`]), and reports a batch
/// stuck on the platform. What a failure means for the files follows the watch's `outcomes`.
pub async fn poll(
    store: &Store,
    api: &ApiClient,
    upload: &Upload,
    outcomes: &Outcomes,
    b: &BatchRow,
    remote: &str,
) -> Result<(), PollError> {
    crate::crashpoint::hit("polling");
    let Some(info) = api.get_batch(remote).await? else {
        return Err(PollError::Lost(format!(
            "the platform lost batch {remote} after it was completed"
        )));
    };
    let mut outcome = BatchOutcome(info.raw.clone());
    let verdict = match outcome::ending(&info.status) {
        Ending::Ended(verdict) => verdict,
        Ending::Stopped => {
            return Err(PollError::Lost(format!(
                "batch {remote} was {:?} on the platform before it finished",
                info.status
            )));
        }
        Ending::Stalled => return stuck(store, upload, b, remote, Stuck::Stalled).await,
        Ending::Pending => {
            let waited = (now_ms() - b.updated_at).max(0) as u64;
            if waited > upload.max_processing_age.as_millis() as u64 {
                return stuck(store, upload, b, remote, Stuck::Slow).await;
            }
            let next = next_look(waited, upload);
            store.delay_batch(b.id, now_ms() + next as i64).await?;
            return Ok(());
        }
    };
    let m = &info.metrics;
    crate::telemetry::batch_ended(b, verdict, m);
    if verdict == Verdict::Failed || m.failed_record_count.unwrap_or(0) > 0 {
        let diagnostics = crate::diagnostics::read(api, remote, &info.errors).await;
        outcome = outcome.with_diagnostics(&diagnostics);
    }
    let detail = format!(
        "{:?}: {} records in, {} out, {} failed",
        info.status,
        m.input_record_count.unwrap_or(0),
        m.output_record_count.unwrap_or(0),
        m.failed_record_count.unwrap_or(0)
    );
    if verdict != Verdict::Success {
        let errors: Vec<String> = info
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.description))
            .collect();
        let errors = errors.join("; ");
        tracing::warn!(batch = %remote, dataset = %b.dataset, "batch failed ({detail}): {errors}");
        failed(store, outcomes, b, remote, &outcome, &detail, &errors).await?;
        metrics::counter!(crate::telemetry::BATCHES, "outcome" => verdict.state().as_str(), "watch" => b.watch.clone())
            .increment(1);
        return Ok(());
    }
    tracing::info!(batch = %remote, dataset = %b.dataset, "batch succeeded ({detail})");
    // Each file's own count, for its receipt (the Catalog's metrics are the batch's), is
    // recorded with the ending, so that the archiver, woken by it, writes every receipt at
    // once; the batch's files are read from the store while Data Access lists them. Only a
    // nicety: the batch's outcome does not wait for it if Data Access fails.
    let (listing, files) = tokio::join!(
        api.list_batch_files(remote),
        store.batch_file_paths(b.id, FileState::Uploaded)
    );
    let files = files?;
    let counts = match listing {
        Ok(listing) => outcome::records_per_file(&files, &listing),
        Err(e) => {
            tracing::debug!(batch = %remote, "no per-file record counts for the receipts: {e}");
            Vec::new()
        }
    };
    if let Some(preds) = &b.replay {
        store.mark_replaced(&preds.0, remote).await?;
    }
    store
        .finish_succeeded_batch(b.id, &outcome, &detail, &counts)
        .await?;
    metrics::counter!(crate::telemetry::BATCHES, "outcome" => verdict.state().as_str(), "watch" => b.watch.clone())
        .increment(1);
    Ok(())
}

/// In how many ms to look again at a batch that has been processing for `waited` ms: a
/// sixteenth of that, within `poll_initial` and `poll_max`. The end of a long processing (a
/// large batch) is then seen at most a sixteenth of its time late (~100 ms of a 2 GiB file's
/// 1.7 s on the emulator; an eighth left B2 ~150 ms late), for a few more looks: about 140
/// until the interval reaches a 30 s `poll_max` (at 480 s), each one Catalog read; from then
/// on one every `poll_max`. The Catalog documents 138 to 2,000 requests a minute per user.
fn next_look(waited: u64, upload: &Upload) -> u64 {
    (waited / 16).clamp(
        upload.poll_initial.as_millis() as u64,
        upload.poll_max.as_millis() as u64,
    )
}

/// What a failed batch means for its files. The platform never says which file held the bad
/// rows, so: with `isolate`, the files travel again in halves until each culprit is alone,
/// within the watch's cap on extra batches; otherwise (and once the cap is reached) every file
/// fails with the batch's errors (`errors`, and a reason that says what to do), except files
/// validated clean, which travel again.
async fn failed(
    store: &Store,
    outcomes: &Outcomes,
    b: &BatchRow,
    remote: &str,
    outcome: &BatchOutcome,
    detail: &str,
    errors: &str,
) -> Result<(), PollError> {
    let files: Vec<FileRow> = store
        .batch_files(b.id)
        .await?
        .into_iter()
        .filter(|f| f.state.in_batch())
        .collect();
    // A replay batch is not split: its halves could not each replace the predecessors.
    let isolating = outcomes.on_batch_failure == OnBatchFailure::Isolate && b.replay.is_none();
    if isolating {
        let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
        if let Some(halves) = outcome::halves(&ids) {
            let why = format!(
                "batch {remote} failed and the platform does not say which file held the bad rows; this file travels again in a smaller batch (on_batch_failure = \"isolate\")"
            );
            let cap = outcomes.isolate_max_extra_batches;
            match store
                .split_failed_batch(b.id, outcome, detail, &halves, cap, &why)
                .await?
            {
                Split::Into(batches) => {
                    tracing::info!(
                        batch = %remote, dataset = %b.dataset,
                        "batch failed; its {} files travel again in {} smaller batches to find the culprits",
                        files.len(), batches.len()
                    );
                    return Ok(());
                }
                Split::OverCap { spent } => tracing::warn!(
                    batch = %remote, dataset = %b.dataset,
                    "batch failed and {spent} extra batches were already spent isolating its files (isolate_max_extra_batches = {cap}): its {} files fail together",
                    files.len()
                ),
                Split::NotInFlight => return Ok(()),
            }
        }
    }
    // Pre-flight validation (#20) vouches for the files it checked clean against the
    // dataset's schema: the bad rows cannot be theirs, so they travel again. When every file
    // was checked clean, the platform refused something the local check does not see: none
    // can be cleared, and all fail (sending them again would fail again, forever).
    let mut vetted: Vec<(&FileRow, Vetting)> = Vec::with_capacity(files.len());
    for file in &files {
        let vetting = if store.validated(file.id).await? {
            Vetting::ValidatedClean
        } else {
            Vetting::Unvetted
        };
        vetted.push((file, vetting));
    }
    if vetted.iter().all(|(_, v)| *v == Vetting::ValidatedClean) {
        for (_, vetting) in &mut vetted {
            *vetting = Vetting::Unvetted;
        }
    }
    let (fail, again) = outcome::attribute(vetted);
    let reason = outcome::failed_with_batch(remote, errors, fail.len(), isolating);
    let why = format!(
        "batch {remote} failed; this file was validated clean before it was sent and goes into a new batch"
    );
    let requeue: Vec<i64> = again.iter().map(|f| f.id).collect();
    store
        .fail_batch(b.id, outcome, detail, &requeue, &why, &reason)
        .await?;
    Ok(())
}

/// Why a batch is stuck on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stuck {
    /// `stalled`: the platform exhausted its retries.
    Stalled,
    /// Still processing past `max_processing_age`.
    Slow,
}

/// A batch stuck on the platform: reported once (ERROR log, the stuck gauge, `status`), then
/// looked at every `poll_max` (a stalled batch may still be aborted or retried by someone) until
/// an operator acts or it is older than `give_up_after`, when its files fail with a receipt
/// that says what happened and what to do.
async fn stuck(
    store: &Store,
    upload: &Upload,
    b: &BatchRow,
    remote: &str,
    why: Stuck,
) -> Result<(), PollError> {
    let now = now_ms();
    let age = Duration::from_millis((now - b.updated_at).max(0) as u64);
    let what = match why {
        Stuck::Stalled => "stalled on the platform (it exhausted its retries)".to_owned(),
        Stuck::Slow => format!(
            "still processing on the platform after {}, past max_processing_age",
            human(age)
        ),
    };
    if age >= upload.give_up_after {
        let reason = format!(
            "batch {remote} was {what} and batchdrop gave up on it after give_up_after ({}); check the batch on the platform (its data may still land), then put the file back in the folder or run `batchdrop retry FILE` to send it again",
            human(upload.give_up_after)
        );
        tracing::error!(batch = %remote, dataset = %b.dataset, "{reason}");
        store
            .finish_batch(
                b.id,
                Verdict::Failed,
                &BatchOutcome::local_error(&reason),
                &reason,
            )
            .await?;
        metrics::counter!(crate::telemetry::BATCHES, "outcome" => Verdict::Failed.state().as_str(), "watch" => b.watch.clone())
            .increment(1);
        return Ok(());
    }
    if store.mark_stuck(b.id, now).await? {
        tracing::error!(
            batch = %remote, dataset = %b.dataset,
            "batch {remote} is {what}; its files stay in it until `batchdrop abort {remote}` fails them (`batchdrop retry {remote}` then sends them again), or until give_up_after ({}) passes",
            human(upload.give_up_after)
        );
    }
    store
        .delay_batch(b.id, now + upload.poll_max.as_millis() as i64)
        .await?;
    Ok(())
}

/// A duration as operators write it in the config (`6h`, `90s`).
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(initial_ms: u64, max_ms: u64) -> Upload {
        let s = Duration::from_secs(1);
        Upload {
            large_file_threshold: 1,
            chunk_size: 1,
            concurrency: 1,
            max_attempts: 1,
            max_retry_age: s,
            backoff_initial: s,
            backoff_max: s,
            poll_initial: Duration::from_millis(initial_ms),
            poll_max: Duration::from_millis(max_ms),
            max_processing_age: s,
            give_up_after: s,
        }
    }

    #[test]
    fn the_next_look_is_a_sixteenth_of_the_wait_within_the_bounds() {
        let u = upload(25, 30_000);
        assert_eq!(next_look(0, &u), 25, "at once after COMPLETE: poll_initial");
        assert_eq!(next_look(60, &u), 25);
        assert_eq!(next_look(4_000, &u), 250);
        assert_eq!(next_look(3_600_000, &u), 30_000, "never beyond poll_max");
    }

    #[test]
    fn an_end_is_seen_at_most_a_sixteenth_of_its_processing_late_in_few_looks() {
        let u = upload(25, 30_000);
        // The bound on looks: up to the interval reaching poll_max (16 x poll_max of
        // waiting), then one per poll_max.
        for (done, most) in [
            (30u64, 2),
            (500, 20),
            (1_700, 42),
            (3_600, 55),
            (61_000, 100),
            (600_000, 140),
            (3_600_000, 240),
        ] {
            let (mut at, mut looks) = (0u64, 0);
            while at < done {
                at += next_look(at, &u);
                looks += 1;
            }
            assert!(
                at - done <= (done / 16).clamp(25, 30_000),
                "a batch done after {done} ms was seen at {at} ms"
            );
            assert!(looks <= most, "{looks} looks for {done} ms");
        }
    }
}
