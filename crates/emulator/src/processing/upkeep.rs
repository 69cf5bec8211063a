//! What the emulator does to batches on its own, apart from processing them: recovery at
//! start (leftovers of interrupted uploads removed, batches cut mid-processing queued again),
//! abandoning idle `loading` batches, and deleting `inactive` ones whose time has come.

use std::sync::Arc;

use crate::AppState;
use crate::error::EmulatorError;
use crate::import::discard_batch_files;
use crate::store::{BatchStatus, Store, now_ms};

use super::pause;

/// At start: removes leftovers of interrupted uploads and returns the batches to (re)process.
pub async fn recover(store: &Store) -> Result<Vec<String>, EmulatorError> {
    // Bodies that were being received when the emulator stopped: never acknowledged.
    let tmp = store.root.join("tmp");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    remove_unrecorded_parts(store).await?;
    // Chunks of files completed just before a stop (recorded complete, parts not yet removed).
    for file_id in store.complete_files_with_chunks().await? {
        store.delete_chunks(&file_id).await?;
        let _ = std::fs::remove_dir_all(store.parts_dir(&file_id));
    }
    // Batches cut mid-processing start again from staging.
    store.restage_processing().await?;
    let pending = store.batch_ids_with_status(BatchStatus::Staging).await?;
    if !pending.is_empty() {
        tracing::info!(
            count = pending.len(),
            "batches to process again after restart"
        );
    }
    Ok(pending)
}

/// Chunk parts renamed into place but not recorded (stopped between the two): unknown to
/// clients, so dropped. The file's data (chunks written in place) stays: bytes of a chunk not
/// recorded there are simply not counted, and are overwritten when it is sent again.
async fn remove_unrecorded_parts(store: &Store) -> Result<(), EmulatorError> {
    let Ok(dirs) = std::fs::read_dir(store.root.join("parts")) else {
        return Ok(());
    };
    for d in dirs.flatten() {
        let file_id = d.file_name().to_string_lossy().into_owned();
        let known = store.chunk_seqs(&file_id).await?;
        let Ok(entries) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "data" {
                continue;
            }
            let seq = name
                .strip_suffix(".part")
                .and_then(|s| s.parse::<i64>().ok());
            if !seq.is_some_and(|s| known.contains(&s)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Turns `loading` batches without activity for `abandon_after_ms` into `abandoned`.
async fn abandon_idle(state: &AppState) {
    let cutoff = now_ms() - state.config.abandon_after_ms as i64;
    let Ok(idle) = state.store.idle_loading_batches(cutoff).await else {
        return;
    };
    for id in idle {
        let lock = state.batch_lock(&id);
        let _g = lock.lock().await;
        if let Ok(true) = state
            .store
            .transition(&id, &[BatchStatus::Loading], BatchStatus::Abandoned)
            .await
        {
            discard_batch_files(state, &id).await;
            tracing::info!(batch = %id, "idle loading batch abandoned");
        }
    }
}

/// Turns `inactive` batches whose time has come into `deleted` and removes their content.
pub async fn gc_loop(state: Arc<AppState>) {
    let mut tick = (state.config.revert_gc_delay_ms / 4).clamp(10, 1000);
    if state.config.abandon_after_ms > 0 {
        tick = tick.min((state.config.abandon_after_ms / 4).clamp(10, 1000));
    }
    loop {
        if !pause(&state, tick).await {
            return;
        }
        if state.config.abandon_after_ms > 0 {
            abandon_idle(&state).await;
        }
        let Ok(due) = state.store.inactive_due(now_ms()).await else {
            continue;
        };
        for id in due {
            let lock = state.batch_lock(&id);
            let _g = lock.lock().await;
            if let Ok(true) = state.store.delete_inactive(&id).await {
                discard_batch_files(&state, &id).await;
                tracing::info!(batch = %id, "inactive batch garbage-collected (deleted)");
            }
        }
    }
}
