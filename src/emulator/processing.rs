//! Asynchronous batch processing (`staging → processing → success | failed`), replay
//! bookkeeping, garbage collection of inactive batches, and recovery at start.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::AppState;
use super::error::EmulatorError;
use super::formats::{AcceptAll, Cancelled, InputFormat, Reader, RowFailure};
use super::import::{
    ABANDONED, DELETED, FAILED, INACTIVE, LOADING, PROCESSING, STAGING, SUCCESS,
    discard_batch_files,
};
use super::stats::bump;
use super::store::{FILE_COMPLETE, Store, now_ms};

/// How many failed rows are kept per batch for `GET /export/batches/{id}/failed`.
const MAX_STORED_FAILED_ROWS: usize = 1000;
/// How many batches are parsed at once.
const PARALLEL_BATCHES: usize = 2;

/// At start: removes leftovers of interrupted uploads and returns the batches to (re)process.
pub async fn recover(store: &Store) -> Result<Vec<String>, EmulatorError> {
    // Bodies that were being received when the emulator stopped: never acknowledged.
    let tmp = store.root.join("tmp");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    // Chunk parts renamed into place but not recorded (stopped between the two): unknown to
    // clients, so drop them.
    let parts = store.root.join("parts");
    if let Ok(dirs) = std::fs::read_dir(&parts) {
        for d in dirs.flatten() {
            let file_id = d.file_name().to_string_lossy().into_owned();
            let known: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM chunks WHERE file_id = ?")
                .bind(&file_id)
                .fetch_all(&store.pool)
                .await?;
            if let Ok(entries) = std::fs::read_dir(d.path()) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seq = name
                        .strip_suffix(".part")
                        .and_then(|s| s.parse::<i64>().ok());
                    if !seq.is_some_and(|s| known.iter().any(|(k,)| *k == s)) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
    // Chunks of files completed just before a stop (recorded complete, parts not yet removed).
    let stale: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT c.file_id FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.state = ?",
    )
    .bind(FILE_COMPLETE)
    .fetch_all(&store.pool)
    .await?;
    for (file_id,) in stale {
        sqlx::query("DELETE FROM chunks WHERE file_id = ?")
            .bind(&file_id)
            .execute(&store.pool)
            .await?;
        let _ = std::fs::remove_dir_all(store.parts_dir(&file_id));
    }
    // Batches cut mid-processing start again from staging.
    sqlx::query("UPDATE batches SET status = ? WHERE status = ?")
        .bind(STAGING)
        .bind(PROCESSING)
        .execute(&store.pool)
        .await?;
    let pending: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM batches WHERE status = ? ORDER BY created, id")
            .bind(STAGING)
            .fetch_all(&store.pool)
            .await?;
    if !pending.is_empty() {
        tracing::info!(
            count = pending.len(),
            "batches to process again after restart"
        );
    }
    Ok(pending.into_iter().map(|(id,)| id).collect())
}

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

struct FileResult {
    file_id: String,
    path: String,
    size: u64,
    records: u64,
    ok: u64,
    failed: u64,
    file_error: Option<(String, String)>,
    /// The failures kept for `GET .../failed` (capped per batch).
    failures: Vec<RowFailure>,
    /// Per error code: how many records, and the first one (never capped).
    by_code: Vec<(String, u64, RowFailure)>,
}

async fn process_batch(state: &Arc<AppState>, id: &str) -> Result<(), sqlx::Error> {
    let delay = state.config.processing_delay_ms;
    if !pause(state, delay).await {
        return Ok(());
    }
    // staging → processing (unless aborted meanwhile)
    let moved = sqlx::query(
        "UPDATE batches SET status = ?, updated = ?, started = COALESCE(started, ?) WHERE id = ? AND status = ?",
    )
    .bind(PROCESSING)
    .bind(now_ms())
    .bind(now_ms())
    .bind(id)
    .bind(STAGING)
    .execute(&state.store.pool)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(());
    }
    if !pause(state, delay).await {
        return Ok(());
    }
    let Some(batch) = state.store.batch(id).await? else {
        return Ok(());
    };
    let fmt = InputFormat::from_json(
        &serde_json::from_str::<Value>(&batch.input_format).unwrap_or(json!({})),
    );
    let files = state.store.files_of(id).await?;
    let inputs: Vec<(String, String, std::path::PathBuf)> = files
        .iter()
        .filter(|f| f.state == FILE_COMPLETE)
        .map(|f| {
            (
                f.id.clone(),
                f.path.clone(),
                state.store.file_path(id, &f.id),
            )
        })
        .collect();

    // Parse, off the async threads, watching for shutdown.
    let cancel = Arc::new(AtomicBool::new(false));
    let cancel2 = cancel.clone();
    let mut watcher_rx = state.shutdown.clone();
    let watcher = tokio::spawn(async move {
        let _ = watcher_rx.wait_for(|s| *s).await;
        cancel2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let fmt2 = fmt.clone();
    let parsed = tokio::task::spawn_blocking(move || parse_all(&inputs, &fmt2, &cancel)).await;
    watcher.abort();
    let results = match parsed {
        Ok(Ok(r)) => r,
        Ok(Err(Cancelled)) => {
            tracing::info!(batch = %id, "processing interrupted by shutdown; it resumes at the next start");
            return Ok(());
        }
        Err(e) => {
            tracing::error!(batch = %id, error = %e, "parser task panicked");
            Vec::new()
        }
    };

    // Metrics and errors.
    let mut errors: Vec<Value> = Vec::new();
    let (mut bytes, mut records, mut ok, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for r in &results {
        bytes += r.size;
        records += r.records;
        ok += r.ok;
        failed += r.failed;
        if let Some((code, desc)) = &r.file_error {
            errors.push(json!({"code": code, "description": desc, "recordCount": 0}));
        }
        // One entry per (file, code), with the first failing row as an example.
        for (code, count, first) in &r.by_code {
            errors.push(json!({
                "code": code,
                "description": format!(
                    "file '{}': {} record(s) could not be ingested; first: {}",
                    r.path, count, first.message
                ),
                "recordCount": count,
            }));
        }
    }
    if results.is_empty() {
        errors.push(json!({
            "code": "INGEST-1100-400",
            "description": format!("batch {id} has no readable files"),
            "recordCount": 0,
        }));
    }
    let forced = {
        let p = state.config.faults.batch_failure_probability;
        p > 0.0 && state.fault_rng.lock().expect("fault rng").random_bool(p)
    };
    if forced {
        bump(&state.counters.fault_batch_failure);
        errors.push(json!({
            "code": "EMULATOR-FAULT-500",
            "description": format!("batch {id} failed by fault injection (faults.batch_failure_probability); retry with a new batch"),
            "recordCount": 0,
        }));
    }
    let success = errors.is_empty();
    let metrics = json!({
        "inputFileCount": results.len(),
        "inputByteSize": bytes,
        "inputRecordCount": records,
        "outputRecordCount": if success { ok } else { 0 },
        "failedRecordCount": failed,
    });
    let status = if success { SUCCESS } else { FAILED };

    // Record the outcome in one transaction, only if the batch is still processing.
    let mut tx = state.store.pool.begin().await?;
    let now = now_ms();
    let changed = sqlx::query(
        "UPDATE batches SET status = ?, updated = ?, completed = ?, metrics = ?, errors = ?
         WHERE id = ? AND status = ?",
    )
    .bind(status)
    .bind(now)
    .bind(now)
    .bind(metrics.to_string())
    .bind(Value::Array(errors).to_string())
    .bind(id)
    .bind(PROCESSING)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        // Aborted meanwhile.
        return Ok(());
    }
    for r in &results {
        sqlx::query("UPDATE files SET records = ? WHERE id = ?")
            .bind(r.ok as i64)
            .bind(&r.file_id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM failed_rows WHERE batch_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let mut seq = 0i64;
    for r in &results {
        for f in &r.failures {
            seq += 1;
            sqlx::query(
                "INSERT INTO failed_rows (batch_id, seq, file_path, row_no, code, message, raw)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(seq)
            .bind(&r.path)
            .bind(f.row.map(|r| r as i64))
            .bind(&f.code)
            .bind(&f.message)
            .bind(&f.raw)
            .execute(&mut *tx)
            .await?;
        }
    }
    if success && let Some(replay) = batch.replay.as_deref() {
        let replay: Value = serde_json::from_str(replay).unwrap_or(json!({}));
        let due = now + state.config.revert_gc_delay_ms as i64;
        for pred in replay
            .get("predecessors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let tags: Option<(String, String)> =
                sqlx::query_as("SELECT tags, status FROM batches WHERE id = ?")
                    .bind(pred)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((tags, pstatus)) = tags else {
                continue;
            };
            let mut tags: Value = serde_json::from_str(&tags).unwrap_or(json!({}));
            if !tags.is_object() {
                tags = json!({});
            }
            let list = tags
                .as_object_mut()
                .expect("object")
                .entry("acp_successor")
                .or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut()
                && !a.iter().any(|v| v == id)
            {
                a.push(json!(id));
            }
            let (new_status, gc) = if pstatus == SUCCESS {
                (INACTIVE, Some(due))
            } else {
                (pstatus.as_str(), None)
            };
            sqlx::query(
                "UPDATE batches SET tags = ?, status = ?, updated = ?, gc_due = COALESCE(?, gc_due) WHERE id = ?",
            )
            .bind(tags.to_string())
            .bind(new_status)
            .bind(now)
            .bind(gc)
            .bind(pred)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    if success {
        bump(&state.counters.batches_succeeded);
    } else {
        bump(&state.counters.batches_failed);
    }
    tracing::info!(batch = %id, status, records, failed, "batch processed");
    Ok(())
}

fn parse_all(
    inputs: &[(String, String, std::path::PathBuf)],
    fmt: &InputFormat,
    cancel: &AtomicBool,
) -> Result<Vec<FileResult>, Cancelled> {
    let check = AcceptAll;
    let mut results = Vec::with_capacity(inputs.len());
    let mut stored = 0usize;
    for (file_id, path, disk) in inputs {
        let mut failures = Vec::new();
        let mut by_code: Vec<(String, u64, RowFailure)> = Vec::new();
        let mut on_failure = |f: RowFailure| {
            match by_code.iter_mut().find(|(c, _, _)| *c == f.code) {
                Some((_, n, _)) => *n += 1,
                None => by_code.push((f.code.clone(), 1, f.clone())),
            }
            if stored < MAX_STORED_FAILED_ROWS {
                stored += 1;
                failures.push(f);
            }
        };
        let mut reader = Reader {
            check: &check,
            cancel,
            on_failure: &mut on_failure,
        };
        let out = reader.read_file(disk, path, fmt)?;
        let size = std::fs::metadata(disk).map(|m| m.len()).unwrap_or(0);
        results.push(FileResult {
            file_id: file_id.clone(),
            path: path.clone(),
            size,
            records: out.records,
            ok: out.ok_records(),
            failed: out.failed,
            file_error: out.file_error,
            failures,
            by_code,
        });
    }
    Ok(results)
}

/// Turns `loading` batches without activity for `abandon_after_ms` into `abandoned`.
async fn abandon_idle(state: &AppState) {
    let cutoff = now_ms() - state.config.abandon_after_ms as i64;
    let idle: Result<Vec<(String,)>, _> = sqlx::query_as(
        "SELECT id FROM batches b WHERE status = ? AND updated < ?
           AND COALESCE((SELECT MAX(updated) FROM files f WHERE f.batch_id = b.id), 0) < ?",
    )
    .bind(LOADING)
    .bind(cutoff)
    .bind(cutoff)
    .fetch_all(&state.store.pool)
    .await;
    let Ok(idle) = idle else { return };
    for (id,) in idle {
        let lock = state.batch_lock(&id);
        let _g = lock.lock().await;
        if let Ok(true) = state.store.transition(&id, &[LOADING], ABANDONED).await {
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
        let due: Result<Vec<(String,)>, _> = sqlx::query_as(
            "SELECT id FROM batches WHERE status = ? AND gc_due IS NOT NULL AND gc_due <= ?",
        )
        .bind(INACTIVE)
        .bind(now_ms())
        .fetch_all(&state.store.pool)
        .await;
        let Ok(due) = due else { continue };
        for (id,) in due {
            let lock = state.batch_lock(&id);
            let _g = lock.lock().await;
            let r = sqlx::query(
                "UPDATE batches SET status = ?, updated = ?, gc_due = NULL WHERE id = ? AND status = ?",
            )
            .bind(DELETED)
            .bind(now_ms())
            .bind(&id)
            .bind(INACTIVE)
            .execute(&state.store.pool)
            .await;
            if matches!(r, Ok(ref r) if r.rows_affected() == 1) {
                discard_batch_files(&state, &id).await;
                tracing::info!(batch = %id, "inactive batch garbage-collected (deleted)");
            }
        }
    }
}
