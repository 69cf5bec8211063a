//! Asynchronous batch processing (`staging → processing → success | failed`), in four steps:
//! `plan` (what the batch and its dataset ask for), `parse` (every record of every file read
//! and checked, off the async threads), `summarize` (pure: the outcome as the platform reports
//! it, with partial ingestion and error diagnostics) and `record` (the outcome written in one
//! transaction: failed rows, the merge of upsert batches into their dataset's current view,
//! replay bookkeeping). `upkeep` does the rest: recovery at start, abandoning idle batches,
//! garbage collection of inactive ones.

mod parse;
mod plan;
mod record;
mod summarize;
mod upkeep;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Semaphore, mpsc};

use crate::AppState;
use crate::formats::Cancelled;
use crate::stats::bump;
use crate::store::DbError;

pub use upkeep::{gc_loop, recover};

/// How many batches are parsed at once.
const PARALLEL_BATCHES: usize = 2;

/// Receives completed batch ids and processes them (a few at a time) until shutdown.
pub async fn worker(state: Arc<AppState>, mut rx: mpsc::UnboundedReceiver<String>) {
    let permits = Arc::new(Semaphore::new(PARALLEL_BATCHES));
    let mut shutdown = state.shutdown.clone();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            id = rx.recv() => {
                let Some(id) = id else { break };
                let state = state.clone();
                let permits = permits.clone();
                tasks.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    if let Err(e) = process_batch(&state, &id).await {
                        tracing::error!(batch = %id, error = %e, "batch processing failed; it will be retried at the next start");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Let running batches notice the shutdown and stop.
    while tasks.join_next().await.is_some() {}
}

/// Sleeps, or returns false if the emulator shuts down meanwhile.
async fn pause(state: &AppState, ms: u64) -> bool {
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

async fn process_batch(state: &Arc<AppState>, id: &str) -> Result<(), DbError> {
    use crate::store::BatchStatus::{Processing, Queued, Retrying, Staging, Stalled};
    let delay = state.config.processing_delay_ms;
    if !pause(state, delay).await {
        return Ok(());
    }
    let faults = &state.config.faults;
    if fault_roll(state, faults.queued_probability)
        && state.store.transition(id, &[Staging], Queued).await?
        && !pause(state, delay).await
    {
        return Ok(());
    }
    if !state.store.start_processing(id).await? {
        return Ok(()); // aborted meanwhile
    }
    if fault_roll(state, faults.stalled_probability) {
        state.store.transition(id, &[Processing], Stalled).await?;
        tracing::info!(batch = %id, "batch stalled by fault injection (faults.stalled_probability)");
        return Ok(());
    }
    if fault_roll(state, faults.retrying_probability)
        && state.store.transition(id, &[Processing], Retrying).await?
    {
        if !pause(state, delay).await {
            return Ok(());
        }
        if !state.store.transition(id, &[Retrying], Processing).await? {
            return Ok(()); // aborted meanwhile
        }
    }
    if !pause(state, delay).await {
        return Ok(());
    }
    let Some(batch) = state.store.batch(id).await? else {
        return Ok(());
    };
    let dataset = state.store.dataset(&batch.dataset_id).await?;
    let plan = plan::plan(
        &batch,
        dataset.as_ref(),
        &state.schemas,
        state.store.upsert_capture_path(id),
    );
    let inputs = parse::inputs(&state.store, id, &state.store.files_of(id).await?);
    let (results, captured) = if plan.refusals.is_empty() {
        match parse::parse(state, &plan, inputs).await {
            Ok(parsed) => parsed,
            Err(Cancelled) => {
                tracing::info!(batch = %id, "processing interrupted by shutdown; it resumes at the next start");
                return Ok(());
            }
        }
    } else {
        // Refused as a whole: nothing is read.
        (parse::unread(&inputs), None)
    };
    let forced = fault_forced(state);
    let outcome = summarize::summarize(id, &plan, &results, captured, forced);
    record::record(state, &batch, &results, &outcome).await
}

/// One draw of the seeded fault RNG (none when the knob is off, so a run without these knobs
/// replays the same faults as before they existed).
fn fault_roll(state: &AppState, probability: f64) -> bool {
    probability > 0.0
        && state
            .fault_rng
            .lock()
            .expect("fault rng")
            .random_bool(probability)
}

/// Whether fault injection fails this batch whatever its content: one of the first
/// `fail_first_batches` processed since start, or by `batch_failure_probability`.
fn fault_forced(state: &AppState) -> bool {
    let p = state.config.faults.batch_failure_probability;
    let nth = state.batches_processed.fetch_add(1, Ordering::SeqCst);
    let forced = nth < state.config.faults.fail_first_batches
        || p > 0.0 && state.fault_rng.lock().expect("fault rng").random_bool(p);
    if forced {
        bump(&state.counters.fault_batch_failure);
    }
    forced
}
