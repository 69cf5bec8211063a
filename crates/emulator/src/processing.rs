//! Asynchronous batch processing (`staging → processing → success | failed`): every record
//! checked against the dataset's schema, partial ingestion and error diagnostics as the
//! platform reports them, the merge of upsert batches into their dataset's current view; replay
//! bookkeeping, garbage collection of inactive batches, and recovery at start.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::AppState;
use super::error::EmulatorError;
use super::formats::{
    AcceptAll, CODE_UNPARSABLE_ROW, Cancelled, GoodWriter, InputFormat, Reader, RecordCheck,
    RowFailure,
};
use super::import::{
    ABANDONED, DELETED, FAILED, INACTIVE, LOADING, PROCESSING, STAGING, SUCCESS,
    discard_batch_files,
};
use super::stats::bump;
use super::store::{FILE_COMPLETE, Store, now_ms};
use super::validate::{SchemaCheck, UpsertCapture, merge};
use batchdrop_xdm::{IssueCode, Schema, Source};

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
    // clients, so drop them. The file's data (chunks written in place) stays: bytes of a chunk
    // not recorded there are simply not counted, and are overwritten when it is sent again.
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
                    if name == "data" {
                        continue;
                    }
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

/// A batch refused as a whole: an upsert dataset takes Parquet only, and needs an identity
/// field (the emulator's code: the platform's public documentation names none).
pub const CODE_UPSERT: &str = "INGEST-1560-400";
/// Errors found, diagnostics off (the platform's code and wording).
pub const CODE_ERRORS_NO_DIAGNOSTICS: &str = "INGEST-1211-400";
/// Partial ingestion summary (the platform's code).
pub const CODE_PARTIAL_SUMMARY: &str = "INGEST-1212-400";
/// Distinct (code, field) error entries kept per file; further fields are counted per code.
const MAX_GROUPS_PER_FILE: usize = 50;

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
    /// Per (error code, field pointer): how many records, and the first one's message (never
    /// capped; pointers beyond `MAX_GROUPS_PER_FILE` are counted under (code, None)).
    groups: Vec<Group>,
    /// The good rows' copy (partial ingestion): where, and its size or why it failed.
    good: Option<(std::path::PathBuf, std::io::Result<u64>)>,
}

struct Group {
    code: String,
    pointer: Option<String>,
    count: u64,
    first: String,
}

/// What processing a batch's files needs to know about its dataset and options.
struct ParsePlan {
    schema: Option<Arc<Schema>>,
    /// Upsert datasets: the identity field's pointer, and where the good rows go.
    upsert: Option<(String, std::path::PathBuf)>,
    /// Partial ingestion is on: copy the good rows of each file.
    keep_good: bool,
}

struct Input {
    file_id: String,
    path: String,
    disk: std::path::PathBuf,
    good: std::path::PathBuf,
}

/// The platform's description of an error code (first sentence of a batch error entry).
fn code_text(code: &str) -> &'static str {
    if code == CODE_UNPARSABLE_ROW {
        return "The row has corrupted data and cannot be read or parsed. Fix the corrupted data and try again.";
    }
    IssueCode::ALL
        .iter()
        .find(|c| c.code() == code)
        .map_or("The row was refused.", |c| c.description())
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
    let options: Value = serde_json::from_str(&batch.options).unwrap_or(json!({}));
    let diagnostics = options
        .get("enableErrorDiagnostics")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let partial_pct = options
        .get("partialIngestionPercentage")
        .and_then(Value::as_f64)
        .filter(|p| *p > 0.0);

    // What the dataset asks of its records.
    let dataset = state.store.dataset(&batch.dataset_id).await?;
    let schema = dataset
        .as_ref()
        .and_then(|d| d.schema_id())
        .and_then(|sid| state.schemas.get(&sid));
    let mut refusals: Vec<Value> = Vec::new();
    let mut upsert = None;
    if let Some(d) = dataset.as_ref().filter(|d| d.is_upsert()) {
        let identity = d
            .identity_field
            .clone()
            .or_else(|| schema.as_ref().and_then(|s| s.identity_field.clone()));
        if fmt.format != "parquet" {
            refusals.push(json!({
                "code": CODE_UPSERT,
                "description": format!(
                    "dataset {} is an upsert dataset (tags unifiedProfile: isUpsert:true): it takes Parquet files only, and batch {id} is {}; send the rows as Parquet in a new batch",
                    d.id, fmt.format
                ),
                "recordCount": 0,
            }));
        }
        match identity {
            None => refusals.push(json!({
                "code": CODE_UPSERT,
                "description": format!(
                    "upsert dataset {} has no identity field to merge rows by: set identity_field in its [[datasets]] entry or in its schema's [[schemas]] entry of the emulator config",
                    d.id
                ),
                "recordCount": 0,
            })),
            Some(identity) => {
                let tmp = state.store.root.join("tmp").join(format!("upsert-{id}.jsonl"));
                upsert = Some((identity, tmp));
            }
        }
    }

    let files = state.store.files_of(id).await?;
    let inputs: Vec<Input> = files
        .iter()
        .filter(|f| f.state == FILE_COMPLETE)
        .map(|f| Input {
            file_id: f.id.clone(),
            path: f.path.clone(),
            disk: state.store.file_path(id, &f.id),
            good: state.store.good_path(id, &f.id),
        })
        .collect();

    let (results, captured) = if refusals.is_empty() {
        let plan = ParsePlan {
            schema: schema.clone(),
            upsert: upsert.clone(),
            keep_good: partial_pct.is_some(),
        };
        // Parse, off the async threads, watching for shutdown.
        let cancel = Arc::new(AtomicBool::new(false));
        let cancel2 = cancel.clone();
        let mut watcher_rx = state.shutdown.clone();
        let watcher = tokio::spawn(async move {
            let _ = watcher_rx.wait_for(|s| *s).await;
            cancel2.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let fmt2 = fmt.clone();
        let parsed =
            tokio::task::spawn_blocking(move || parse_all(&inputs, &fmt2, &plan, &cancel)).await;
        watcher.abort();
        match parsed {
            Ok(Ok(r)) => r,
            Ok(Err(Cancelled)) => {
                tracing::info!(batch = %id, "processing interrupted by shutdown; it resumes at the next start");
                return Ok(());
            }
            Err(e) => {
                tracing::error!(batch = %id, error = %e, "parser task panicked");
                (Vec::new(), None)
            }
        }
    } else {
        // Refused as a whole: nothing is read.
        let results = inputs
            .iter()
            .map(|i| FileResult {
                file_id: i.file_id.clone(),
                path: i.path.clone(),
                size: std::fs::metadata(&i.disk).map(|m| m.len()).unwrap_or(0),
                records: 0,
                ok: 0,
                failed: 0,
                file_error: None,
                failures: Vec::new(),
                groups: Vec::new(),
                good: None,
            })
            .collect();
        (results, None)
    };

    // Metrics and errors.
    let mut errors: Vec<Value> = refusals;
    let (mut bytes, mut records, mut ok, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for r in &results {
        bytes += r.size;
        records += r.records;
        ok += r.ok;
        failed += r.failed;
        if let Some((code, desc)) = &r.file_error {
            errors.push(json!({"code": code, "description": desc, "recordCount": 0}));
        }
    }
    if results.is_empty() {
        errors.push(json!({
            "code": "INGEST-1100-400",
            "description": format!("batch {id} has no readable files"),
            "recordCount": 0,
        }));
    }
    // Storage trouble with the good-rows copies or the upsert rows fails the batch (it would
    // otherwise serve or merge the wrong rows).
    for r in &results {
        if let Some((path, Err(e))) = &r.good {
            errors.push(json!({
                "code": "EMULATOR-STORAGE-500",
                "description": format!("the emulator could not store the good rows of file '{}' at {}: {e}; free disk space and send the batch again", r.path, path.display()),
                "recordCount": 0,
            }));
        }
    }
    let capture_path = match captured {
        Some(Err(e)) => {
            errors.push(json!({
                "code": "EMULATOR-STORAGE-500",
                "description": format!("the emulator could not store the upsert rows of batch {id}: {e}; free disk space and send the batch again"),
                "recordCount": 0,
            }));
            None
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let whole_batch_ok = errors.is_empty();
    let partial_ok = whole_batch_ok
        && failed > 0
        && partial_pct.is_some_and(|p| (failed as f64) * 100.0 <= p * records as f64);
    if failed > 0 {
        if diagnostics {
            if partial_ok {
                errors.push(json!({
                    "code": CODE_PARTIAL_SUMMARY,
                    "description": format!(
                        "Encountered {failed} errors in the data. Successfully ingested {ok} rows. Please review the associated diagnostic files for more details (GET /data/foundation/export/batches/{id}/failed)."
                    ),
                }));
            }
            for r in &results {
                for g in &r.groups {
                    let field = match &g.pointer {
                        Some(p) if !p.is_empty() => format!(", field {p}"),
                        Some(_) => String::new(),
                        None if g.code == CODE_UNPARSABLE_ROW => String::new(),
                        None => ", other fields".into(),
                    };
                    errors.push(json!({
                        "code": g.code,
                        "description": format!(
                            "{} file '{}'{field}: {} record(s); first: {}",
                            code_text(&g.code), r.path, g.count, g.first
                        ),
                        "recordCount": g.count,
                    }));
                }
            }
        } else {
            // As the platform: one summary. The emulator adds where it saw the problems.
            let seen: Vec<String> = results
                .iter()
                .filter(|r| r.failed > 0)
                .take(10)
                .filter_map(|r| {
                    r.groups
                        .first()
                        .map(|g| format!("{} ({})", g.first, g.code))
                })
                .collect();
            errors.push(json!({
                "code": CODE_ERRORS_NO_DIAGNOSTICS,
                "description": format!(
                    "Encountered errors while parsing, converting or otherwise validating the data. Please resend the data with error diagnostics enabled to collect additional information on failure types. The emulator saw {failed} failed record(s): {}",
                    seen.join("; ")
                ),
            }));
        }
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
    let success = !forced && whole_batch_ok && (failed == 0 || partial_ok);
    let metrics = json!({
        "inputFileCount": results.len(),
        "inputByteSize": bytes,
        "inputRecordCount": records,
        "outputRecordCount": if success { ok } else { 0 },
        "failedRecordCount": failed,
    });
    let status = if success { SUCCESS } else { FAILED };

    // The good-rows copies are served only for files of a successful batch that lost rows.
    let mut served: Vec<(&str, u64)> = Vec::new();
    for r in &results {
        if let Some((path, size)) = &r.good {
            match size {
                Ok(n) if success && r.failed > 0 => served.push((&r.file_id, *n)),
                _ => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }

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
        if let Some(p) = &capture_path {
            let _ = std::fs::remove_file(p);
        }
        return Ok(());
    }
    for r in &results {
        sqlx::query("UPDATE files SET records = ?, served_size = NULL WHERE id = ?")
            .bind(r.ok as i64)
            .bind(&r.file_id)
            .execute(&mut *tx)
            .await?;
    }
    for (file_id, size) in &served {
        sqlx::query("UPDATE files SET served_size = ? WHERE id = ?")
            .bind(*size as i64)
            .bind(*file_id)
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
            let first = f.first();
            let all: Vec<Value> = f
                .issues
                .iter()
                .map(|i| {
                    let mut e = json!({"code": i.code, "message": i.message});
                    if let Some(p) = &i.pointer {
                        e["path"] = json!(p);
                    }
                    e
                })
                .collect();
            sqlx::query(
                "INSERT INTO failed_rows (batch_id, seq, file_path, row_no, code, message, raw, errors)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(seq)
            .bind(&r.path)
            .bind(f.row.map(|r| r as i64))
            .bind(&first.code)
            .bind(&first.message)
            .bind(&f.raw)
            .bind(Value::Array(all).to_string())
            .execute(&mut *tx)
            .await?;
        }
    }
    if success && let Some(path) = &capture_path {
        merge_upserts(&mut tx, &batch.dataset_id, id, path, now).await?;
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
    if let Some(p) = &capture_path {
        let _ = std::fs::remove_file(p);
    }
    if success {
        bump(&state.counters.batches_succeeded);
    } else {
        bump(&state.counters.batches_failed);
    }
    tracing::info!(batch = %id, status, records, failed, "batch processed");
    Ok(())
}

/// Merges the captured rows of a successful upsert batch into the dataset's current view.
async fn merge_upserts(
    tx: &mut sqlx::SqliteConnection,
    dataset_id: &str,
    batch_id: &str,
    path: &std::path::Path,
    now: i64,
) -> Result<(), sqlx::Error> {
    use tokio::io::AsyncBufReadExt;
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(batch = %batch_id, error = %e, "upsert rows cannot be read back");
            return Ok(());
        }
    };
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut merged = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(row) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (Some(identity), Some(update)) = (row.get("i").and_then(Value::as_str), row.get("r"))
        else {
            continue;
        };
        let current: Option<(String,)> =
            sqlx::query_as("SELECT record FROM upsert_rows WHERE dataset_id = ? AND identity = ?")
                .bind(dataset_id)
                .bind(identity)
                .fetch_optional(&mut *tx)
                .await?;
        let mut record = current
            .and_then(|(r,)| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or_else(|| json!({}));
        merge(&mut record, update);
        sqlx::query(
            "INSERT INTO upsert_rows (dataset_id, identity, record, batch_id, updated) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (dataset_id, identity) DO UPDATE SET record = excluded.record,
                 batch_id = excluded.batch_id, updated = excluded.updated",
        )
        .bind(dataset_id)
        .bind(identity)
        .bind(record.to_string())
        .bind(batch_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        merged += 1;
    }
    tracing::info!(batch = %batch_id, dataset = %dataset_id, rows = merged, "upsert rows merged into the current view");
    Ok(())
}

type Parsed = (Vec<FileResult>, Option<std::io::Result<std::path::PathBuf>>);

fn parse_all(
    inputs: &[Input],
    fmt: &InputFormat,
    plan: &ParsePlan,
    cancel: &AtomicBool,
) -> Result<Parsed, Cancelled> {
    let source = match fmt.format.as_str() {
        "csv" => Source::Csv,
        "parquet" => Source::Parquet,
        _ => Source::Json,
    };
    let mut capture = match &plan.upsert {
        Some((identity, path)) => match UpsertCapture::create(path, identity) {
            Ok(c) => Some(c),
            Err(e) => return Ok((Vec::new(), Some(Err(e)))),
        },
        None => None,
    };
    let validates = plan.schema.is_some() || capture.is_some();
    let mut results = Vec::with_capacity(inputs.len());
    let mut stored = 0usize;
    for input in inputs {
        let mut failures = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut on_failure = |f: RowFailure| {
            for issue in &f.issues {
                let mut pointer = issue.pointer.clone();
                let known = groups
                    .iter()
                    .position(|g| g.code == issue.code && g.pointer == pointer);
                let idx = match known {
                    Some(i) => Some(i),
                    None if groups.len() >= MAX_GROUPS_PER_FILE => {
                        pointer = None;
                        groups
                            .iter()
                            .position(|g| g.code == issue.code && g.pointer.is_none())
                    }
                    None => None,
                };
                match idx {
                    Some(i) => groups[i].count += 1,
                    None => groups.push(Group {
                        code: issue.code.clone(),
                        pointer,
                        count: 1,
                        first: issue.message.clone(),
                    }),
                }
            }
            if stored < MAX_STORED_FAILED_ROWS {
                stored += 1;
                failures.push(f);
            }
        };
        let mut good = if plan.keep_good {
            match GoodWriter::create(&input.good, fmt) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(file = %input.good.display(), error = %e, "cannot create the good-rows copy");
                    None
                }
            }
        } else {
            None
        };
        let mut accept = AcceptAll;
        let mut schema_check;
        let check: &mut dyn RecordCheck = if validates {
            schema_check = SchemaCheck::new(plan.schema.as_deref(), source, capture.as_mut());
            &mut schema_check
        } else {
            &mut accept
        };
        let mut reader = Reader {
            check,
            cancel,
            on_failure: &mut on_failure,
            good: good.as_mut(),
        };
        let out = reader.read_file(&input.disk, &input.path, fmt)?;
        let size = std::fs::metadata(&input.disk).map(|m| m.len()).unwrap_or(0);
        let good = good.map(|g| {
            let path = g.path().to_path_buf();
            (path, g.finish())
        });
        results.push(FileResult {
            file_id: input.file_id.clone(),
            path: input.path.clone(),
            size,
            records: out.records,
            ok: out.ok_records(),
            failed: out.failed,
            file_error: out.file_error,
            failures,
            groups,
            good,
        });
    }
    let captured = capture.map(UpsertCapture::finish);
    Ok((results, captured))
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
