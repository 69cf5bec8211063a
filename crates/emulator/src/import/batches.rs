//! The batch endpoints of Batch Ingestion: E1, create a batch (its input format, tags,
//! options and replay checked), and E7, act on it (COMPLETE, ABORT, REVERT, FAIL), each action
//! allowed from some statuses only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::discard_batch_files;
use crate::AppState;
use crate::catalog::batch_json;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::scope;
use crate::stats::bump;
use crate::store::{BatchRow, BatchStatus, FileState, NewBatch, now_ms};

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
    if state
        .store
        .visible_dataset(&dataset_id, caller.scope())
        .await?
        .is_none()
    {
        return Err(ApiError::bad_request(format!(
            "dataset {dataset_id} does not exist in sandbox {}: create it there with POST /data/foundation/catalog/dataSets first, or send the x-sandbox-name of its sandbox",
            caller.sandbox
        )));
    }
    let input_format = normalize_input_format(req.get("inputFormat"))?;

    let external_id = match req.get("externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::bad_request("externalId must be a string")),
    };
    let mut tags = match req.get("tags") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => validate_tags(v)?,
    };

    let options = batch_options(&req)?;
    // The platform hands the processing options back as tags on the Catalog batch; the docs
    // show bare values, the spec's tags are arrays of strings: the spec's shape is sent.
    if let Some(on) = options.get("enableErrorDiagnostics") {
        tags.insert("acp_enableErrorDiagnostics".into(), json!([on.to_string()]));
    }
    if let Some(p) = options
        .get("partialIngestionPercentage")
        .and_then(Value::as_f64)
    {
        tags.insert(
            "acp_partialIngestionPercent".into(),
            json!([format!("{p}")]),
        );
    }
    let replay = match req.get("replay") {
        None | Some(Value::Null) => None,
        Some(v) => Some(validate_replay(&state, &caller, v, &dataset_id).await?),
    };

    let id = state.new_id();
    let input_format = Value::Object(input_format).to_string();
    let tags = Value::Object(tags).to_string();
    let replay = replay.as_ref().map(Value::to_string);
    let options = Value::Object(options).to_string();
    let created_user = format!("{}@AdobeID", caller.api_key);
    state
        .store
        .insert_batch(NewBatch {
            id: &id,
            dataset_id: &dataset_id,
            input_format: &input_format,
            external_id: external_id.as_deref(),
            tags: &tags,
            replay: replay.as_deref(),
            options: &options,
            ims_org: &caller.org,
            sandbox: &caller.sandbox,
            created_user: &created_user,
        })
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

/// The options the batch's processing follows: error diagnostics, partial ingestion.
fn batch_options(req: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
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

    Ok(options)
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

async fn validate_replay(
    state: &AppState,
    caller: &Caller,
    v: &Value,
    dataset_id: &str,
) -> ApiResult<Value> {
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
        let Some(pred) = state.store.visible_batch(id, caller.scope()).await? else {
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

/// E7: what a client can do to a batch (`?action=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Complete,
    Abort,
    Revert,
    Fail,
}

impl Action {
    fn parse(action: &str) -> Option<Action> {
        match action {
            "COMPLETE" => Some(Action::Complete),
            "ABORT" => Some(Action::Abort),
            "REVERT" => Some(Action::Revert),
            "FAIL" => Some(Action::Fail),
            _ => None,
        }
    }
}

pub async fn batch_action(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(batch_id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let action = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("action"))
        .map(|(_, v)| v.to_ascii_uppercase())
        .unwrap_or_default();
    let Some(action) = Action::parse(&action) else {
        return Err(ApiError::bad_request(format!(
            "action {action:?} is not supported: use ?action=COMPLETE, ABORT, REVERT or FAIL"
        )));
    };
    // In a task of its own: a client that goes away mid-request (a daemon killed while it
    // waits for the answer) drops the request's future, and a COMPLETE cut between its status
    // change and the processing queue would leave the batch in `staging` forever.
    let work = tokio::spawn(async move {
        let lock = state.batch_lock(&batch_id);
        let _guard = lock.lock().await;
        let batch = scope::batch(&state, &caller, &batch_id).await?;
        match action {
            Action::Complete => complete(&state, &batch).await?,
            Action::Abort => abort(&state, &batch).await?,
            Action::Revert => revert(&state, &batch).await?,
            Action::Fail => fail(&state, &batch).await?,
        }
        // The spec answers an action with the batch as it now is.
        state
            .store
            .batch(&batch_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("batch {batch_id} does not exist")))
    });
    let row = work
        .await
        .map_err(|e| ApiError::internal(format!("the batch action stopped: {e}")))??;
    Ok((StatusCode::OK, axum::Json(batch_json(&row))).into_response())
}

/// The refusal of an action a batch's status does not allow.
fn refuse(batch: &BatchRow, rule: &str) -> ApiError {
    ApiError::bad_request(format!("batch {} is {}: {rule}", batch.id, batch.status))
}

/// `loading → staging`, processing queued; again on a batch past loading changes nothing.
async fn complete(state: &AppState, batch: &BatchRow) -> ApiResult<()> {
    use BatchStatus::*;
    match batch.status {
        Loading => {}
        Staging | Queued | Processing | Retrying | Success | Failed | Inactive | Deleted
        | Stalled => return Ok(()),
        Aborted | Abandoned => {
            return Err(refuse(
                batch,
                "a batch that was aborted or abandoned cannot be completed",
            ));
        }
    }
    let files = state.store.files_of(&batch.id).await?;
    if files.is_empty() {
        return Err(refuse(batch, "COMPLETE needs at least one uploaded file"));
    }
    if let Some(f) = files.iter().find(|f| f.state == FileState::Uploading) {
        return Err(ApiError::bad_request(format!(
            "batch {}: large file {} was initialized but not completed; \
             POST .../files/{}?action=COMPLETE (or PUT it) before completing the batch",
            batch.id, f.path, f.path
        )));
    }
    if state
        .store
        .transition(&batch.id, &[Loading], Staging)
        .await?
    {
        bump(&state.counters.batches_completed);
        tracing::info!(batch = %batch.id, files = files.len(), "batch completed; processing queued");
        let _ = state.work_tx.send(batch.id.clone());
    }
    Ok(())
}

/// Aborted while loading or processing, its content discarded.
async fn abort(state: &AppState, batch: &BatchRow) -> ApiResult<()> {
    use BatchStatus::*;
    match batch.status {
        Loading | Staging | Queued | Processing | Retrying | Stalled => {
            state.store.abort_batch(&batch.id).await?;
            discard_batch_files(state, &batch.id).await;
            tracing::info!(batch = %batch.id, "batch aborted");
            Ok(())
        }
        Aborted => Ok(()),
        _ => Err(refuse(
            batch,
            "ABORT is only allowed while a batch is loading or processing, not once it is \
             success or failed; use REVERT to remove a successful batch",
        )),
    }
}

/// `success → inactive`, deleted after `revert_gc_delay_ms`.
async fn revert(state: &AppState, batch: &BatchRow) -> ApiResult<()> {
    use BatchStatus::*;
    match batch.status {
        Success => {
            let due = now_ms() + state.config.revert_gc_delay_ms as i64;
            state.store.revert_batch(&batch.id, due).await?;
            tracing::info!(batch = %batch.id, "batch reverted (inactive)");
            Ok(())
        }
        Inactive | Deleted => Ok(()),
        _ => Err(refuse(batch, "only a successful batch can be reverted")),
    }
}

/// The client gives up on a loading batch.
async fn fail(state: &AppState, batch: &BatchRow) -> ApiResult<()> {
    use BatchStatus::*;
    match batch.status {
        Loading => {
            state.store.fail_loading_batch(&batch.id).await?;
            tracing::info!(batch = %batch.id, "batch failed by the client");
            Ok(())
        }
        Failed => Ok(()),
        _ => Err(refuse(
            batch,
            "FAIL is only allowed while a batch is loading",
        )),
    }
}
