//! The Batch Ingestion endpoints: create a batch (E1), upload files whole (E2) or in chunks
//! (E3–E5), and signal the batch (E7).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::catalog::batch_json;
use super::error::{ApiError, ApiResult};
use super::gateway::{Caller, ResponseWillBeLost};
use super::stats::bump;
use super::store::{
    BatchRow, ChunkRow, FILE_COMPLETE, FILE_UPLOADING, FileRow, KIND_LARGE, KIND_PUT, now_ms,
};
use super::upload::{
    BodyKind, ReceiveError, parse_content_range, receive_to_file, validate_file_path,
};

pub const LOADING: &str = "loading";
pub const STAGING: &str = "staging";
pub const PROCESSING: &str = "processing";
pub const SUCCESS: &str = "success";
pub const FAILED: &str = "failed";
pub const ABORTED: &str = "aborted";
pub const INACTIVE: &str = "inactive";
pub const DELETED: &str = "deleted";
pub const ABANDONED: &str = "abandoned";

// ---------------------------------------------------------------------------------------------
// E1: create a batch

pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object with datasetId and inputFormat",
        ));
    };
    let dataset_id = req
        .get("datasetId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("datasetId is required (a string)"))?
        .to_owned();
    if state.store.dataset(&dataset_id).await?.is_none() {
        return Err(ApiError::bad_request(format!(
            "dataset {dataset_id} does not exist: create it with POST /data/foundation/catalog/dataSets first"
        )));
    }
    let input_format = normalize_input_format(req.get("inputFormat"))?;

    let external_id = match req.get("externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("externalId must be a string")),
    };
    let tags = match req.get("tags") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => validate_tags(v)?,
    };

    let mut options = Map::new();
    match req.get("enableErrorDiagnostics") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            options.insert("enableErrorDiagnostics".into(), Value::Bool(*b));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "enableErrorDiagnostics must be a boolean",
            ));
        }
    }
    for key in ["partialIngestionPercentage", "partialIngestionPercent"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let p = v
                    .as_f64()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{key} must be a number from 0 to 100"))
                    })?;
                options.insert("partialIngestionPercentage".into(), json!(p));
            }
        }
    }

    let replay = match req.get("replay") {
        None | Some(Value::Null) => None,
        Some(v) => Some(validate_replay(&state, v, &dataset_id).await?),
    };

    let id = state.new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO batches (id, dataset_id, status, input_format, external_id, tags, replay, options,
                              ims_org, sandbox, created_user, created, updated)
         VALUES (?, ?, 'loading', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&dataset_id)
    .bind(Value::Object(input_format).to_string())
    .bind(&external_id)
    .bind(Value::Object(tags).to_string())
    .bind(replay.as_ref().map(Value::to_string))
    .bind(Value::Object(options).to_string())
    .bind(&caller.org)
    .bind(&caller.sandbox)
    .bind(format!("{}@AdobeID", caller.api_key))
    .bind(now)
    .bind(now)
    .execute(&state.store.pool)
    .await?;
    bump(&state.counters.batches_created);
    tracing::info!(batch = %id, dataset = %dataset_id, "batch created");
    let row = state
        .store
        .batch(&id)
        .await?
        .ok_or_else(|| ApiError::internal("the batch just created is missing"))?;
    Ok((StatusCode::CREATED, axum::Json(batch_json(&row))).into_response())
}

fn normalize_input_format(v: Option<&Value>) -> ApiResult<Map<String, Value>> {
    let Some(Value::Object(obj)) = v else {
        return Err(ApiError::bad_request(
            "inputFormat is required: {\"format\": \"json\" | \"csv\" | \"parquet\"}",
        ));
    };
    let format = obj
        .get("format")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("inputFormat.format is required (a string)"))?
        .to_ascii_lowercase();
    if !matches!(format.as_str(), "json" | "csv" | "parquet") {
        return Err(ApiError::bad_request(format!(
            "inputFormat.format {format:?} is not supported: use json, csv or parquet"
        )));
    }
    let mut out = Map::new();
    out.insert("format".into(), Value::String(format.clone()));
    match obj.get("isMultiLineJson") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("isMultiLineJson".into(), Value::Bool(*b));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "inputFormat.isMultiLineJson must be a boolean",
            ));
        }
    }
    for key in ["delimiter", "quote", "escape"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.len() == 1 && s.is_ascii() => {
                out.insert(key.into(), Value::String(s.clone()));
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "inputFormat.{key} must be a single ASCII character"
                )));
            }
        }
    }
    match obj.get("charset") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let norm = s.to_ascii_lowercase().replace(['-', '_'], "");
            if !matches!(norm.as_str(), "utf8" | "usascii" | "ascii") {
                return Err(ApiError::bad_request(format!(
                    "inputFormat.charset {s:?} is not supported by the emulator: use UTF-8"
                )));
            }
            out.insert("charset".into(), Value::String(s.clone()));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "inputFormat.charset must be a string",
            ));
        }
    }
    match obj.get("header") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("header".into(), Value::Bool(*b));
        }
        Some(Value::String(s))
            if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
        {
            out.insert("header".into(), Value::Bool(s.eq_ignore_ascii_case("true")));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "inputFormat.header must be a boolean",
            ));
        }
    }
    Ok(out)
}

fn validate_tags(v: &Value) -> ApiResult<Map<String, Value>> {
    let Value::Object(map) = v else {
        return Err(ApiError::bad_request(
            "tags must be an object of arrays of strings, e.g. {\"key\": [\"value\"]}",
        ));
    };
    for (k, v) in map {
        let ok = matches!(v, Value::Array(items) if items.iter().all(Value::is_string));
        if !ok {
            return Err(ApiError::bad_request(format!(
                "tags.{k} must be an array of strings"
            )));
        }
    }
    Ok(map.clone())
}

async fn validate_replay(state: &AppState, v: &Value, dataset_id: &str) -> ApiResult<Value> {
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request(
            "replay must be an object {\"predecessors\": [\"$batchId\"], \"reason\": \"replace\"}",
        ));
    };
    let preds = obj
        .get("predecessors")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("replay.predecessors must be a non-empty array of batch ids")
        })?;
    let mut ids = Vec::new();
    for p in preds {
        let raw = p
            .as_str()
            .ok_or_else(|| ApiError::bad_request("replay.predecessors must hold strings"))?;
        let id = raw.strip_prefix('$').unwrap_or(raw);
        let Some(pred) = state.store.batch(id).await? else {
            return Err(ApiError::bad_request(format!(
                "replay predecessor {raw} does not exist: a replay can only replace existing batches"
            )));
        };
        if pred.dataset_id != dataset_id {
            return Err(ApiError::bad_request(format!(
                "replay predecessor {id} belongs to dataset {} but the new batch is for dataset {dataset_id}: \
                 a replay must stay in the same dataset",
                pred.dataset_id
            )));
        }
        if !ids.contains(&id.to_owned()) {
            ids.push(id.to_owned());
        }
    }
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => "replace".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad_request("replay.reason must be a string")),
    };
    Ok(json!({"predecessors": ids, "reason": reason}))
}

// ---------------------------------------------------------------------------------------------
// Shared checks of the file endpoints

struct Target {
    batch_id: String,
    dataset_id: String,
    path: String,
}

/// Parses `/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{path...}` from the
/// raw URI and percent-decodes each part (so encoded slashes or dots are checked like plain
/// ones).
fn file_target(uri: &Uri) -> ApiResult<Target> {
    let raw = uri.path();
    let rest = raw
        .strip_prefix("/data/foundation/import/batches/")
        .ok_or_else(|| ApiError::not_found("no such endpoint"))?;
    let mut it = rest.splitn(5, '/');
    let (Some(batch), Some("datasets"), Some(dataset), Some("files"), Some(path)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(ApiError::not_found(
            "expected /batches/{batchId}/datasets/{datasetId}/files/{filePath}",
        ));
    };
    let decode = |s: &str, what: &str| -> ApiResult<String> {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
        String::from_utf8(bytes).map_err(|_| {
            ApiError::bad_request(format!(
                "the {what} in the URL is not valid UTF-8 once percent-decoded"
            ))
        })
    };
    let path = decode(path, "file path")?;
    validate_file_path(&path).map_err(ApiError::bad_request)?;
    Ok(Target {
        batch_id: decode(batch, "batch id")?,
        dataset_id: decode(dataset, "dataset id")?,
        path,
    })
}

/// The batch of a file endpoint: exists (404), belongs to the dataset of the URL (400).
async fn target_batch(state: &AppState, t: &Target) -> ApiResult<BatchRow> {
    let batch = state
        .store
        .batch(&t.batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("batch {} does not exist", t.batch_id)))?;
    if batch.dataset_id != t.dataset_id {
        return Err(ApiError::bad_request(format!(
            "the URL names dataset {} but batch {} belongs to dataset {}",
            t.dataset_id, batch.id, batch.dataset_id
        )));
    }
    Ok(batch)
}

fn require_loading(batch: &BatchRow) -> ApiResult<()> {
    if batch.status != LOADING {
        return Err(ApiError::bad_request(format!(
            "batch {} is {}: files can only be uploaded while the batch is loading",
            batch.id, batch.status
        )));
    }
    Ok(())
}

async fn loading_batch(state: &AppState, t: &Target) -> ApiResult<BatchRow> {
    let batch = target_batch(state, t).await?;
    require_loading(&batch)?;
    Ok(batch)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Uploads are raw bytes; a multipart body (curl -F) would be stored as the file's content, so
/// it is refused.
fn refuse_multipart(headers: &HeaderMap, path: &str) -> ApiResult<()> {
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if multipart {
        return Err(ApiError::Service {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            title: "Unsupported Media Type",
            detail: format!(
                "file {path}: the body is multipart; send the raw bytes with Content-Type: application/octet-stream (curl --data-binary, not -F)"
            ),
        });
    }
    Ok(())
}

fn action_of(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.eq_ignore_ascii_case("action")
            .then(|| v.to_ascii_uppercase())
    })
}

async fn count_other_files(state: &AppState, batch_id: &str, path: &str) -> ApiResult<(u64, u64)> {
    let (n, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE batch_id = ? AND path != ?",
    )
    .bind(batch_id)
    .bind(path)
    .fetch_one(&state.store.pool)
    .await?;
    Ok((n as u64, bytes as u64))
}

/// What a batch holds besides one path, and whether it holds that path: one look-up (the
/// `files_batch_sizes` index covers it) for the limits checked on every PUT.
struct Usage {
    others: u64,
    other_bytes: u64,
    has_path: bool,
}

async fn batch_usage(state: &AppState, batch_id: &str, path: &str) -> ApiResult<Usage> {
    let (others, other_bytes, has_path): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(path != ?1), 0), COALESCE(SUM(CASE WHEN path != ?1 THEN size END), 0),
                COALESCE(MAX(path = ?1), 0)
         FROM files WHERE batch_id = ?2",
    )
    .bind(path)
    .bind(batch_id)
    .fetch_one(&state.store.pool)
    .await?;
    Ok(Usage {
        others: others as u64,
        other_bytes: other_bytes as u64,
        has_path: has_path != 0,
    })
}

fn check_file_count(state: &AppState, batch_id: &str, others: u64) -> ApiResult<()> {
    let max = state.config.limits.max_files_per_batch;
    if others + 1 > max {
        return Err(ApiError::bad_request(format!(
            "batch {batch_id} already has {others} files: at most {max} files per batch; put the rest in another batch"
        )));
    }
    Ok(())
}

fn check_batch_bytes(state: &AppState, batch_id: &str, others: u64, this: u64) -> ApiResult<()> {
    let max = state.config.limits.max_batch_bytes;
    if others.saturating_add(this) > max {
        return Err(ApiError::bad_request(format!(
            "batch {batch_id} would hold {} bytes: at most {max} bytes per batch; put the rest in another batch",
            others.saturating_add(this)
        )));
    }
    Ok(())
}

fn receive_error(e: ReceiveError, what: &str) -> ApiError {
    match e {
        ReceiveError::TooLarge { limit } => ApiError::too_large(format!(
            "{what} is larger than {limit} bytes: use the large-file calls (INITIALIZE, PATCH chunks, COMPLETE)"
        )),
        ReceiveError::Length { expected, got } => ApiError::bad_request(format!(
            "{what}: the body has {}{got} bytes but {expected} were announced",
            if got > expected { "at least " } else { "" }
        )),
        ReceiveError::Client(msg) => {
            ApiError::bad_request(format!("{what}: the request body could not be read: {msg}"))
        }
        ReceiveError::Disk(e) => ApiError::internal(format!("{what}: cannot store the body: {e}")),
    }
}

async fn remove_parts(state: &AppState, file_id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM chunks WHERE file_id = ?")
        .bind(file_id)
        .execute(&state.store.pool)
        .await?;
    let dir = state.store.parts_dir(file_id);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove chunk parts");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// E2: PUT a whole file

pub async fn put_file(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let t = file_target(&uri)?;
    refuse_multipart(&headers, &t.path)?;
    let limit = state.config.limits.max_put_bytes;
    let declared = content_length(&headers);
    if let Some(n) = declared
        && n > limit
    {
        return Err(ApiError::too_large(format!(
            "file {} is {n} bytes: a single PUT takes at most {limit} bytes; use the large-file calls (INITIALIZE, PATCH chunks, COMPLETE)",
            t.path
        )));
    }
    loading_batch(&state, &t).await?;
    let usage = batch_usage(&state, &t.batch_id, &t.path).await?;
    if !usage.has_path {
        check_file_count(&state, &t.batch_id, usage.others)?;
    }
    check_batch_bytes(
        &state,
        &t.batch_id,
        usage.other_bytes,
        declared.unwrap_or(0),
    )?;

    let tmp = state.store.tmp_path();
    let got = receive_to_file(body, &tmp, limit, declared, BodyKind::File)
        .await
        .map_err(|e| receive_error(e, &format!("file {}", t.path)))?;

    let lock = state.batch_lock(&t.batch_id);
    let _guard = lock.lock().await;
    let result = commit_put(&state, &t, &tmp, got.len).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    let created = result?;
    bump(&state.counters.puts);
    state
        .counters
        .bytes_received
        .fetch_add(got.len, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(batch = %t.batch_id, path = %t.path, bytes = got.len, created, "file stored");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(status.into_response())
}

/// Under the batch lock: re-checks, renames the temp file into place, records it. Returns
/// whether the file is new.
async fn commit_put(
    state: &AppState,
    t: &Target,
    tmp: &std::path::Path,
    len: u64,
) -> ApiResult<bool> {
    loading_batch(state, t).await?;
    let usage = batch_usage(state, &t.batch_id, &t.path).await?;
    let existing = match usage.has_path {
        true => state.store.file(&t.batch_id, &t.path).await?,
        false => None,
    };
    if existing.is_none() {
        check_file_count(state, &t.batch_id, usage.others)?;
    }
    check_batch_bytes(state, &t.batch_id, usage.other_bytes, len)?;
    let file_id = existing
        .as_ref()
        .map(|f| f.id.clone())
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let (dir, tmp, dest) = (
        state.store.batch_dir(&t.batch_id),
        tmp.to_owned(),
        state.store.file_path(&t.batch_id, &file_id),
    );
    // One trip to the blocking pool for both.
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(dir)?;
        std::fs::rename(tmp, dest)
    })
    .await
    .map_err(|e| ApiError::internal(format!("file store task failed: {e}")))??;
    let now = now_ms();
    sqlx::query(
        "INSERT INTO files (id, batch_id, path, kind, state, size, created, updated)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (batch_id, path) DO UPDATE SET kind = excluded.kind, state = excluded.state,
             size = excluded.size, updated = excluded.updated",
    )
    .bind(&file_id)
    .bind(&t.batch_id)
    .bind(&t.path)
    .bind(KIND_PUT)
    .bind(FILE_COMPLETE)
    .bind(len as i64)
    .bind(now)
    .bind(now)
    .execute(&state.store.pool)
    .await?;
    if let Some(f) = &existing
        && f.kind == KIND_LARGE
    {
        remove_parts(state, &f.id).await?;
    }
    Ok(existing.is_none())
}

// ---------------------------------------------------------------------------------------------
// E3 / E3b: INITIALIZE and COMPLETE a large file

pub async fn post_file(State(state): State<Arc<AppState>>, uri: Uri) -> ApiResult<Response> {
    let t = file_target(&uri)?;
    match action_of(&uri).as_deref() {
        Some("INITIALIZE") => initialize_file(&state, &t).await,
        Some("COMPLETE") => complete_file(&state, &t).await,
        other => Err(ApiError::bad_request(format!(
            "action {:?} is not supported on a file: use ?action=INITIALIZE or ?action=COMPLETE",
            other.unwrap_or("")
        ))),
    }
}

async fn initialize_file(state: &AppState, t: &Target) -> ApiResult<Response> {
    loading_batch(state, t).await?;
    let lock = state.batch_lock(&t.batch_id);
    let _guard = lock.lock().await;
    loading_batch(state, t).await?;
    let now = now_ms();
    match state.store.file(&t.batch_id, &t.path).await? {
        None => {
            let (others, _) = count_other_files(state, &t.batch_id, &t.path).await?;
            check_file_count(state, &t.batch_id, others)?;
            sqlx::query(
                "INSERT INTO files (id, batch_id, path, kind, state, size, created, updated)
                 VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
            )
            .bind(ulid::Ulid::new().to_string())
            .bind(&t.batch_id)
            .bind(&t.path)
            .bind(KIND_LARGE)
            .bind(FILE_UPLOADING)
            .bind(now)
            .bind(now)
            .execute(&state.store.pool)
            .await?;
            tracing::info!(batch = %t.batch_id, path = %t.path, "large file initialized");
        }
        Some(f) if f.kind == KIND_LARGE && f.state == FILE_UPLOADING => {
            // Idempotent: a client that re-initializes after a crash keeps what arrived.
        }
        Some(f) => {
            // A finished file is replaced by a new upload (like PUT replaces).
            sqlx::query("UPDATE files SET kind = ?, state = ?, size = 0, updated = ? WHERE id = ?")
                .bind(KIND_LARGE)
                .bind(FILE_UPLOADING)
                .bind(now)
                .bind(&f.id)
                .execute(&state.store.pool)
                .await?;
            let _ = tokio::fs::remove_file(state.store.file_path(&t.batch_id, &f.id)).await;
            tracing::info!(batch = %t.batch_id, path = %t.path, "finished file re-initialized as a new large upload");
        }
    }
    Ok(StatusCode::CREATED.into_response())
}

async fn large_file(state: &AppState, t: &Target, verb: &str) -> ApiResult<FileRow> {
    let Some(f) = state.store.file(&t.batch_id, &t.path).await? else {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {} was not initialized: POST .../files/{}?action=INITIALIZE before {verb}",
            t.path, t.batch_id, t.path
        )));
    };
    Ok(f)
}

async fn complete_file(state: &AppState, t: &Target) -> ApiResult<Response> {
    loading_batch(state, t).await?;
    let lock = state.batch_lock(&t.batch_id);
    let _guard = lock.lock().await;
    loading_batch(state, t).await?;
    let f = large_file(state, t, "COMPLETE").await?;
    if f.state == FILE_COMPLETE {
        return Ok(StatusCode::CREATED.into_response());
    }
    let chunks = state.store.chunks_of(&f.id).await?;
    if chunks.is_empty() {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {}: no chunk has arrived; PATCH the chunks before COMPLETE",
            t.path, t.batch_id
        )));
    }
    let plan = plan_assembly(&chunks).map_err(|e| {
        ApiError::bad_request(format!("file {} of batch {}: {e}", t.path, t.batch_id))
    })?;
    let (_, other_bytes) = count_other_files(state, &t.batch_id, &t.path).await?;
    check_batch_bytes(state, &t.batch_id, other_bytes, plan.total)?;

    let sources = sources_of(state, &f.id, &chunks);
    let data = state.store.data_path(&f.id);
    tokio::fs::create_dir_all(state.store.parts_dir(&f.id)).await?;
    let data2 = data.clone();
    let total = plan.total;
    let assembled = tokio::task::spawn_blocking(move || assemble(&sources, &data2, total))
        .await
        .map_err(|e| ApiError::internal(format!("assembly task failed: {e}")))?;
    if let Err(e) = assembled {
        // Nothing was written: the chunks stay as they are, for a chunk that resolves it.
        return Err(match e {
            AssembleError::Conflict(msg) => ApiError::bad_request(format!(
                "file {} of batch {}: {msg}; re-send one chunk covering both ranges with the right bytes (it replaces them)",
                t.path, t.batch_id
            )),
            AssembleError::Io(e) => ApiError::from(e),
        });
    }
    tokio::fs::create_dir_all(state.store.batch_dir(&t.batch_id)).await?;
    tokio::fs::rename(&data, state.store.file_path(&t.batch_id, &f.id)).await?;
    sqlx::query("UPDATE files SET state = ?, size = ?, updated = ? WHERE id = ?")
        .bind(FILE_COMPLETE)
        .bind(plan.total as i64)
        .bind(now_ms())
        .bind(&f.id)
        .execute(&state.store.pool)
        .await?;
    remove_parts(state, &f.id).await?;
    tracing::info!(batch = %t.batch_id, path = %t.path, bytes = plan.total, "large file completed");
    Ok(StatusCode::CREATED.into_response())
}

struct Plan {
    total: u64,
}

/// Checks that the chunks cover `0..total` without gaps and agree on the total.
fn plan_assembly(chunks: &[ChunkRow]) -> Result<Plan, String> {
    let mut declared: Option<u64> = None;
    for c in chunks {
        if let Some(t) = c.total {
            match declared {
                Some(d) if d != t as u64 => {
                    return Err(format!(
                        "chunks disagree on the total size ({d} and {t} bytes)"
                    ));
                }
                _ => declared = Some(t as u64),
            }
        }
    }
    let mut next = 0u64;
    for c in chunks {
        let (s, e) = (c.start as u64, c.end_incl as u64);
        if s > next {
            return Err(format!(
                "bytes {next}-{} are missing (a gap before the chunk {s}-{e}); PATCH them before COMPLETE",
                s - 1
            ));
        }
        next = next.max(e + 1);
    }
    if let Some(total) = declared
        && next < total
    {
        return Err(format!(
            "bytes {next}-{} of {total} are missing; PATCH them before COMPLETE",
            total - 1
        ));
    }
    Ok(Plan { total: next })
}

enum AssembleError {
    Conflict(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for AssembleError {
    fn from(e: std::io::Error) -> Self {
        AssembleError::Io(e)
    }
}

/// Where a chunk's bytes are: a file, and the offset in the large file of that file's first
/// byte (0 for the file's data, where chunks sit at their offsets; the chunk's start for a
/// part of its own).
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    origin: u64,
}

impl Source {
    /// Opens the source positioned at `pos` (an offset in the large file).
    fn open_at(&self, pos: u64) -> std::io::Result<std::fs::File> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(pos - self.origin))?;
        Ok(f)
    }
}

fn sources_of(state: &AppState, file_id: &str, chunks: &[ChunkRow]) -> Vec<(ChunkRow, Source)> {
    chunks
        .iter()
        .map(|c| {
            let source = match c.in_place {
                true => Source {
                    path: state.store.data_path(file_id),
                    origin: 0,
                },
                false => Source {
                    path: state.store.part_path(file_id, c.seq),
                    origin: c.start as u64,
                },
            };
            (c.clone(), source)
        })
        .collect()
}

/// Makes `data` the whole file: checks first that overlapping chunks agree (nothing is
/// written if they do not), then copies the chunks kept in parts to their offsets (the
/// chunks written in place are there already: the common case copies nothing).
fn assemble(
    chunks: &[(ChunkRow, Source)],
    data: &std::path::Path,
    total: u64,
) -> Result<(), AssembleError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut next = 0u64; // first byte no earlier chunk covers (chunks are sorted by start)
    for (i, (c, source)) in chunks.iter().enumerate() {
        let (s, e) = (c.start as u64, c.end_incl as u64);
        if s < next {
            let upto = e.min(next - 1);
            if !agrees_with(&chunks[..i], source, s, upto)? {
                return Err(AssembleError::Conflict(format!(
                    "chunk {s}-{e} overlaps an earlier chunk with different bytes (a conflicting overlap)"
                )));
            }
        }
        next = next.max(e + 1);
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(data)?;
    for (c, source) in chunks.iter().filter(|(c, _)| !c.in_place) {
        let (s, e) = (c.start as u64, c.end_incl as u64);
        let mut src = source.open_at(s)?;
        out.seek(SeekFrom::Start(s))?;
        let n = std::io::copy(&mut (&mut src).take(e + 1 - s), &mut out)?;
        if n != e + 1 - s {
            return Err(AssembleError::Io(std::io::Error::other(format!(
                "chunk part {} is shorter than its range",
                source.path.display()
            ))));
        }
    }
    out.set_len(total)?;
    out.flush()?;
    Ok(())
}

/// Whether `mine` (a source of bytes `from..=to`) has the same bytes there as the chunks
/// `earlier`, which cover that range.
fn agrees_with(
    earlier: &[(ChunkRow, Source)],
    mine: &Source,
    from: u64,
    to: u64,
) -> std::io::Result<bool> {
    let mut pos = from;
    while pos <= to {
        let Some((c, theirs)) = earlier
            .iter()
            .filter(|(c, _)| c.start as u64 <= pos && c.end_incl as u64 >= pos)
            .max_by_key(|(c, _)| c.end_incl)
        else {
            return Ok(false);
        };
        let upto = (c.end_incl as u64).min(to);
        if !same_bytes(
            &mut mine.open_at(pos)?,
            &mut theirs.open_at(pos)?,
            upto - pos + 1,
        )? {
            return Ok(false);
        }
        pos = upto + 1;
    }
    Ok(true)
}

fn same_bytes(
    a: &mut impl std::io::Read,
    b: &mut impl std::io::Read,
    mut n: u64,
) -> std::io::Result<bool> {
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    while n > 0 {
        let k = n.min(ba.len() as u64) as usize;
        a.read_exact(&mut ba[..k])?;
        b.read_exact(&mut bb[..k])?;
        if ba[..k] != bb[..k] {
            return Ok(false);
        }
        n -= k as u64;
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// E4: PATCH one chunk

pub async fn patch_file(
    State(state): State<Arc<AppState>>,
    lost: Option<Extension<ResponseWillBeLost>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let t = file_target(&uri)?;
    refuse_multipart(&headers, &t.path)?;
    let range = headers
        .get(header::CONTENT_RANGE)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "PATCH of file {} needs a Content-Range header: bytes START-END/TOTAL (END inclusive)",
                t.path
            ))
        })?
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Range is not ASCII"))?;
    let (start, end, total) = parse_content_range(range).map_err(ApiError::bad_request)?;
    let batch_max = state.config.limits.max_batch_bytes;
    if end >= batch_max || total.is_some_and(|t| t > batch_max) {
        return Err(ApiError::bad_request(format!(
            "Content-Range {range} goes beyond {batch_max} bytes, the most a batch can hold"
        )));
    }
    let len = end - start + 1;
    let max = state.config.limits.max_chunk_bytes;
    if len > max {
        return Err(ApiError::too_large(format!(
            "chunk {start}-{end} of file {} is {len} bytes: each PATCH takes at most {max} bytes",
            t.path
        )));
    }
    if let Some(cl) = content_length(&headers)
        && cl != len
    {
        return Err(ApiError::bad_request(format!(
            "Content-Length {cl} does not match Content-Range {range} ({len} bytes)"
        )));
    }
    let f = patchable_file(&state, &t, total).await?;

    let acked = lost.is_none();
    // The common case (each range once, in any order) goes straight to its offset; a chunk
    // overlapping a stored one (a re-send, or a conflict for COMPLETE to find) is kept apart
    // until compared.
    let reserved = Reservation::take(&state, &t, &f.id, start, end).await?;
    let (dest, into) = match reserved {
        Some(_) => {
            tokio::fs::create_dir_all(state.store.parts_dir(&f.id)).await?;
            (state.store.data_path(&f.id), BodyKind::At(start))
        }
        None => (state.store.tmp_path(), BodyKind::Chunk),
    };
    let got = receive_to_file(body, &dest, max, Some(len), into)
        .await
        .map_err(|e| receive_error(e, &format!("chunk {start}-{end} of file {}", t.path)))?;
    let lock = state.batch_lock(&t.batch_id);
    let guard = lock.lock().await;
    let range = (start, end, total);
    let result = match reserved {
        Some(_) => commit_in_place(&state, &t, range, got.ino, acked).await,
        None => commit_chunk(&state, &t, &dest, range, acked).await,
    };
    drop(guard);
    drop(reserved);
    if into == BodyKind::Chunk {
        let _ = tokio::fs::remove_file(&dest).await;
    }
    let duplicate = result?;
    bump(&state.counters.chunks_received);
    state
        .counters
        .bytes_received
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    if duplicate {
        bump(&state.counters.duplicate_acknowledged_chunks);
    }
    tracing::debug!(batch = %t.batch_id, path = %t.path, start, end, duplicate, "chunk received");
    Ok((
        StatusCode::OK,
        axum::Json(json!({"name": t.path, "sizeInBytes": len})),
    )
        .into_response())
}

/// A range of a large file claimed for writing in place; given back when dropped.
struct Reservation {
    state: Arc<AppState>,
    file_id: String,
    range: (u64, u64),
}

impl Reservation {
    /// Claims `start..=end` of the file's data if no stored chunk and no chunk being written
    /// in place overlaps it; None otherwise.
    async fn take(
        state: &Arc<AppState>,
        t: &Target,
        file_id: &str,
        start: u64,
        end: u64,
    ) -> ApiResult<Option<Reservation>> {
        let lock = state.batch_lock(&t.batch_id);
        let _guard = lock.lock().await;
        let overlaps = |(s, e): (u64, u64)| s <= end && e >= start;
        let chunks = state.store.chunks_of(file_id).await?;
        if chunks
            .iter()
            .any(|c| overlaps((c.start as u64, c.end_incl as u64)))
        {
            return Ok(None);
        }
        let mut writing = state.writing_in_place.lock().expect("in-place ranges");
        let ranges = writing.entry(file_id.to_owned()).or_default();
        if ranges.iter().any(|r| overlaps(*r)) {
            return Ok(None);
        }
        ranges.push((start, end));
        Ok(Some(Reservation {
            state: state.clone(),
            file_id: file_id.to_owned(),
            range: (start, end),
        }))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut writing = self.state.writing_in_place.lock().expect("in-place ranges");
        if let Some(ranges) = writing.get_mut(&self.file_id) {
            ranges.retain(|r| *r != self.range);
            if ranges.is_empty() {
                writing.remove(&self.file_id);
            }
        }
    }
}

/// Under the batch lock: records a chunk written in place. The file's data must still be
/// the one written to (an INITIALIZE of a new version meanwhile removed it).
async fn commit_in_place(
    state: &AppState,
    t: &Target,
    (start, end, total): (u64, u64, Option<u64>),
    ino: u64,
    acked: bool,
) -> ApiResult<bool> {
    use std::os::unix::fs::MetadataExt;
    let f = patchable_file(state, t, total).await?;
    let data = state.store.data_path(&f.id);
    if !tokio::fs::metadata(&data)
        .await
        .is_ok_and(|m| m.ino() == ino)
    {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {} was started again while chunk {start}-{end} arrived; send the chunk again",
            t.path, t.batch_id
        )));
    }
    let chunks = state.store.chunks_of(&f.id).await?;
    let seq = chunks.iter().map(|c| c.seq).max().unwrap_or(0) + 1;
    sqlx::query(
        "INSERT INTO chunks (file_id, seq, start, end_incl, total, sha256, acked, in_place)
         VALUES (?, ?, ?, ?, ?, '', ?, 1)",
    )
    .bind(&f.id)
    .bind(seq)
    .bind(start as i64)
    .bind(end as i64)
    .bind(total.map(|t| t as i64))
    .bind(acked)
    .execute(&state.store.pool)
    .await?;
    touch_file(state, &f.id).await?;
    Ok(false)
}

/// Records that a large file was just written to (Data Access lists when each file changed).
async fn touch_file(state: &AppState, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE files SET updated = ? WHERE id = ?")
        .bind(now_ms())
        .bind(id)
        .execute(&state.store.pool)
        .await?;
    Ok(())
}

/// The large file a PATCH goes to, if its batch and it can still take chunks with this
/// total (checked before a chunk is received, and again under the batch lock).
async fn patchable_file(state: &AppState, t: &Target, total: Option<u64>) -> ApiResult<FileRow> {
    loading_batch(state, t).await?;
    let f = large_file(state, t, "PATCH").await?;
    check_patchable(t, &f)?;
    check_total(state, &f, total).await?;
    Ok(f)
}

fn check_patchable(t: &Target, f: &FileRow) -> ApiResult<()> {
    if f.kind != KIND_LARGE || f.state != FILE_UPLOADING {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {} is already complete: INITIALIZE it again to upload a new version",
            t.path, t.batch_id
        )));
    }
    Ok(())
}

async fn check_total(state: &AppState, f: &FileRow, total: Option<u64>) -> ApiResult<()> {
    let Some(total) = total else { return Ok(()) };
    let known: Option<(i64,)> = sqlx::query_as(
        "SELECT total FROM chunks WHERE file_id = ? AND total IS NOT NULL AND total != ? LIMIT 1",
    )
    .bind(&f.id)
    .bind(total as i64)
    .fetch_optional(&state.store.pool)
    .await?;
    if let Some((other,)) = known {
        return Err(ApiError::bad_request(format!(
            "file {}: Content-Range announces a total of {total} bytes but earlier chunks announced {other}",
            f.path
        )));
    }
    Ok(())
}

/// Under the batch lock: records the chunk, unless its whole range already arrived with the same
/// bytes (returns true then, and nothing changes).
async fn commit_chunk(
    state: &AppState,
    t: &Target,
    tmp: &PathBuf,
    (start, end, total): (u64, u64, Option<u64>),
    acked: bool,
) -> ApiResult<bool> {
    let f = patchable_file(state, t, total).await?;
    let chunks = state.store.chunks_of(&f.id).await?;
    if covered(&chunks, start, end) {
        // Compared byte for byte: re-sent chunks are rare, and hashing every chunk to
        // recognise them would slow every upload.
        let same = {
            let sources = sources_of(state, &f.id, &chunks);
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || range_matches(&tmp, start, end, &sources))
                .await
                .map_err(|e| ApiError::internal(format!("compare task failed: {e}")))??
        };
        if same {
            // Nothing new to store. It is a duplicate of an acknowledged chunk only if
            // acknowledged chunks alone cover the range.
            let acked_chunks: Vec<ChunkRow> = chunks.iter().filter(|c| c.acked).cloned().collect();
            let duplicate = covered(&acked_chunks, start, end);
            if acked {
                // The client now knows these bytes arrived.
                sqlx::query(
                    "UPDATE chunks SET acked = 1 WHERE file_id = ? AND start >= ? AND end_incl <= ?",
                )
                .bind(&f.id)
                .bind(start as i64)
                .bind(end as i64)
                .execute(&state.store.pool)
                .await?;
            }
            return Ok(duplicate);
        }
    }
    let seq = chunks.iter().map(|c| c.seq).max().unwrap_or(0) + 1;
    tokio::fs::create_dir_all(state.store.parts_dir(&f.id)).await?;
    tokio::fs::rename(tmp, state.store.part_path(&f.id, seq)).await?;
    sqlx::query(
        "INSERT INTO chunks (file_id, seq, start, end_incl, total, sha256, acked) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&f.id)
    .bind(seq)
    .bind(start as i64)
    .bind(end as i64)
    .bind(total.map(|t| t as i64))
    .bind("") // no longer computed: see the comparison above
    .bind(acked)
    .execute(&state.store.pool)
    .await?;
    // The new chunk supersedes earlier chunks that lie wholly inside its range (a re-sent
    // range with new bytes replaces the old ones); partial overlaps stay and are compared at
    // COMPLETE.
    let superseded: Vec<i64> = chunks
        .iter()
        .filter(|c| c.start as u64 >= start && c.end_incl as u64 <= end)
        .map(|c| c.seq)
        .collect();
    for old in &superseded {
        sqlx::query("DELETE FROM chunks WHERE file_id = ? AND seq = ?")
            .bind(&f.id)
            .bind(old)
            .execute(&state.store.pool)
            .await?;
        let _ = tokio::fs::remove_file(state.store.part_path(&f.id, *old)).await;
    }
    touch_file(state, &f.id).await?;
    Ok(false)
}

/// Whether `start..=end` lies wholly inside what the chunks cover.
fn covered(chunks: &[ChunkRow], start: u64, end: u64) -> bool {
    let mut pos = start;
    // chunks are sorted by start
    loop {
        let next = chunks
            .iter()
            .filter(|c| c.start as u64 <= pos && c.end_incl as u64 >= pos)
            .map(|c| c.end_incl as u64)
            .max();
        match next {
            Some(e) if e >= end => return true,
            Some(e) => pos = e + 1,
            None => return false,
        }
    }
}

/// Whether the new chunk in `tmp` (covering start..=end) has the same bytes as the stored
/// chunks there.
fn range_matches(
    tmp: &std::path::Path,
    start: u64,
    end: u64,
    chunks: &[(ChunkRow, Source)],
) -> std::io::Result<bool> {
    let mine = Source {
        path: tmp.to_owned(),
        origin: start,
    };
    agrees_with(chunks, &mine, start, end)
}

// ---------------------------------------------------------------------------------------------
// E5: HEAD — which bytes arrived

pub async fn head_file(State(state): State<Arc<AppState>>, uri: Uri) -> ApiResult<Response> {
    let t = file_target(&uri)?;
    target_batch(&state, &t).await?;
    let f = state
        .store
        .file(&t.batch_id, &t.path)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "file {} of batch {} does not exist",
                t.path, t.batch_id
            ))
        })?;
    let prefix = if f.state == FILE_COMPLETE {
        f.size as u64
    } else {
        let chunks = state.store.chunks_of(&f.id).await?;
        contiguous_prefix(&chunks)
    };
    let mut resp = StatusCode::OK.into_response();
    if prefix > 0 {
        resp.headers_mut().insert(
            header::RANGE,
            HeaderValue::from_str(&format!("bytes=0-{}", prefix - 1)).expect("ascii"),
        );
    }
    Ok(resp)
}

/// Length of the received prefix `0..n` (chunks sorted by start).
pub fn contiguous_prefix(chunks: &[ChunkRow]) -> u64 {
    let mut next = 0u64;
    for c in chunks {
        if c.start as u64 > next {
            break;
        }
        next = next.max(c.end_incl as u64 + 1);
    }
    next
}

// ---------------------------------------------------------------------------------------------
// E7: batch actions

pub async fn batch_action(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(batch_id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let action = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("action"))
        .map(|(_, v)| v.to_ascii_uppercase())
        .unwrap_or_default();
    if !matches!(action.as_str(), "COMPLETE" | "ABORT" | "REVERT" | "FAIL") {
        return Err(ApiError::bad_request(format!(
            "action {action:?} is not supported: use ?action=COMPLETE, ABORT, REVERT or FAIL"
        )));
    }
    let lock = state.batch_lock(&batch_id);
    let _guard = lock.lock().await;
    let batch = state
        .store
        .batch(&batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("batch {batch_id} does not exist")))?;
    let status = batch.status.as_str();
    let refuse = |rule: &str| {
        Err(ApiError::bad_request(format!(
            "batch {batch_id} is {status}: {rule}"
        )))
    };
    match action.as_str() {
        "COMPLETE" => match status {
            LOADING => {
                let files = state.store.files_of(&batch_id).await?;
                if files.is_empty() {
                    return refuse("COMPLETE needs at least one uploaded file");
                }
                if let Some(f) = files.iter().find(|f| f.state == FILE_UPLOADING) {
                    return Err(ApiError::bad_request(format!(
                        "batch {batch_id}: large file {} was initialized but not completed; \
                         POST .../files/{}?action=COMPLETE (or PUT it) before completing the batch",
                        f.path, f.path
                    )));
                }
                if state.store.transition(&batch_id, &[LOADING], STAGING).await? {
                    bump(&state.counters.batches_completed);
                    tracing::info!(batch = %batch_id, files = files.len(), "batch completed; processing queued");
                    let _ = state.work_tx.send(batch_id.clone());
                }
            }
            STAGING | PROCESSING | SUCCESS | FAILED | INACTIVE | DELETED => {}
            _ => return refuse("a batch that was aborted or abandoned cannot be completed"),
        },
        "ABORT" => match status {
            LOADING | STAGING | PROCESSING => {
                sqlx::query(
                    "UPDATE batches SET status = ?, updated = ?, completed = ? WHERE id = ?",
                )
                .bind(ABORTED)
                .bind(now_ms())
                .bind(now_ms())
                .bind(&batch_id)
                .execute(&state.store.pool)
                .await?;
                discard_batch_files(&state, &batch_id).await;
                tracing::info!(batch = %batch_id, "batch aborted");
            }
            ABORTED => {}
            _ => {
                return refuse(
                    "ABORT is only allowed while a batch is loading or processing, not once it is \
                     success or failed; use REVERT to remove a successful batch",
                );
            }
        },
        "REVERT" => match status {
            SUCCESS => {
                let due = now_ms() + state.config.revert_gc_delay_ms as i64;
                sqlx::query(
                    "UPDATE batches SET status = ?, updated = ?, gc_due = ? WHERE id = ? AND status = ?",
                )
                .bind(INACTIVE)
                .bind(now_ms())
                .bind(due)
                .bind(&batch_id)
                .bind(SUCCESS)
                .execute(&state.store.pool)
                .await?;
                tracing::info!(batch = %batch_id, "batch reverted (inactive)");
            }
            INACTIVE | DELETED => {}
            _ => return refuse("only a successful batch can be reverted"),
        },
        _ /* FAIL */ => match status {
            LOADING => {
                sqlx::query(
                    "UPDATE batches SET status = ?, updated = ?, completed = ? WHERE id = ? AND status = ?",
                )
                .bind(FAILED)
                .bind(now_ms())
                .bind(now_ms())
                .bind(&batch_id)
                .bind(LOADING)
                .execute(&state.store.pool)
                .await?;
                tracing::info!(batch = %batch_id, "batch failed by the client");
            }
            FAILED => {}
            _ => return refuse("FAIL is only allowed while a batch is loading"),
        },
    }
    Ok(StatusCode::OK.into_response())
}

/// Removes the stored content of a batch (aborted or deleted); metadata stays.
pub async fn discard_batch_files(state: &AppState, batch_id: &str) {
    if let Ok(files) = state.store.files_of(batch_id).await {
        for f in files {
            let _ = remove_parts(state, &f.id).await;
        }
    }
    let dir = state.store.batch_dir(batch_id);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove batch files");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: i64, end_incl: i64, total: Option<i64>) -> ChunkRow {
        ChunkRow {
            seq: 0,
            start,
            end_incl,
            total,
            in_place: true,
            acked: true,
        }
    }

    #[test]
    fn prefix_and_coverage() {
        let chunks = vec![chunk(0, 9, None), chunk(5, 14, None), chunk(20, 29, None)];
        assert_eq!(contiguous_prefix(&chunks), 15);
        assert_eq!(contiguous_prefix(&[chunk(1, 9, None)]), 0);
        assert_eq!(contiguous_prefix(&[]), 0);
        assert!(covered(&chunks, 3, 12));
        assert!(covered(&chunks, 20, 29));
        assert!(!covered(&chunks, 10, 20));
        assert!(!covered(&chunks, 0, 30));
    }

    #[test]
    fn assembly_plan_finds_gaps_and_totals() {
        assert_eq!(
            plan_assembly(&[chunk(0, 9, Some(20)), chunk(10, 19, Some(20))])
                .unwrap()
                .total,
            20
        );
        assert_eq!(
            plan_assembly(&[chunk(0, 9, None), chunk(5, 19, None)])
                .unwrap()
                .total,
            20
        );
        let gap = plan_assembly(&[chunk(0, 9, None), chunk(12, 19, None)])
            .err()
            .unwrap();
        assert!(gap.contains("bytes 10-11"), "{gap}");
        let tail = plan_assembly(&[chunk(0, 9, Some(30))]).err().unwrap();
        assert!(tail.contains("bytes 10-29 of 30"), "{tail}");
        let head = plan_assembly(&[chunk(5, 9, None)]).err().unwrap();
        assert!(head.contains("bytes 0-4"), "{head}");
        let totals = plan_assembly(&[chunk(0, 9, Some(10)), chunk(0, 9, Some(11))])
            .err()
            .unwrap();
        assert!(totals.contains("disagree"), "{totals}");
    }
}
