//! The Data Access endpoints (reading back what was ingested) and the batch preview (E6).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::formats::InputFormat;
use super::state::AppState;
use super::store::{BatchStatus, FileRow, FileState};

/// The base URL the client used (for `_links`).
fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Files of a successful batch are readable; nothing else is (inactive and deleted batches
/// disappear from Data Access).
async fn readable_files(state: &AppState, batch_id: &str) -> ApiResult<Vec<FileRow>> {
    let batch = state
        .store
        .batch(batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("batch {batch_id} does not exist")))?;
    if batch.status != BatchStatus::Success {
        return Ok(Vec::new());
    }
    Ok(state.store.files_of(batch_id).await?)
}

pub async fn batch_files(
    State(state): State<Arc<AppState>>,
    Path(batch_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let batch = state
        .store
        .batch(&batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("batch {batch_id} does not exist")))?;
    let files = readable_files(&state, &batch_id).await?;
    let base = base(&headers);
    let data: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "dataSetFileId": f.id,
                "dataSetId": batch.dataset_id,
                "name": f.path,
                // The spec's dataSetFiles schema writes these numbers as strings.
                "records": f.records.unwrap_or(0).to_string(),
                "size": f.served_size.unwrap_or(f.size).to_string(),
                "isValid": true,
                "created": f.created.to_string(),
                "updated": f.updated.to_string(),
                "_links": {"self": {"href": format!("{base}/data/foundation/export/files/{}", f.id)}},
            })
        })
        .collect();
    let count = data.len();
    Ok(
        axum::Json(json!({"data": data, "_page": {"limit": count, "count": count}}))
            .into_response(),
    )
}

pub async fn download(
    State(state): State<Arc<AppState>>,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found(format!("dataset file {file_id} does not exist"));
    let f = state
        .store
        .file_by_id(&file_id)
        .await?
        .ok_or_else(not_found)?;
    if state.store.batch_status(&f.batch_id).await? != Some(BatchStatus::Success) {
        return Err(not_found());
    }
    // A partially ingested file is served as its good rows.
    let (disk, size) = match f.served_size {
        Some(n) => (state.store.good_path(&f.batch_id, &f.id), n),
        None => (state.store.file_path(&f.batch_id, &f.id), f.size),
    };
    let file = tokio::fs::File::open(disk).await.map_err(|_| not_found())?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size as u64));
    let name = f.path.rsplit('/').next().unwrap_or("file").replace('"', "");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

pub async fn batch_failed(
    State(state): State<Arc<AppState>>,
    Path(batch_id): Path<String>,
) -> ApiResult<Response> {
    let batch = state
        .store
        .batch(&batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("batch {batch_id} does not exist")))?;
    if matches!(batch.status, BatchStatus::Inactive | BatchStatus::Deleted) {
        return Ok(axum::Json(json!({"data": []})).into_response());
    }
    let rows = state.store.failed_rows(&batch_id).await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let errors = r
                .errors
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok())
                .unwrap_or_else(|| json!([{"code": r.code, "message": r.message}]));
            json!({
                "name": r.file_path,
                "row": r.row_no,
                "record": r.raw,
                "errors": errors,
            })
        })
        .collect();
    Ok(axum::Json(json!({"data": data})).into_response())
}

/// The current view of an upsert dataset: one record per identity, each the merge of every
/// row its successful batches carried. `?identity=ID` reads one; `limit` (default 100, at most
/// 1000) and `start` page through the rest, ordered by identity.
pub async fn current_view(
    State(state): State<Arc<AppState>>,
    Path(dataset_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let d = state
        .store
        .dataset(&dataset_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("dataset {dataset_id} does not exist")))?;
    if !d.is_upsert() {
        return Err(ApiError::bad_request(format!(
            "dataset {dataset_id} is not an upsert dataset (tags unifiedProfile: [\"enabled:true\", \"isUpsert:true\"]): \
             it has no current view; read its batches' files instead (GET /export/batches/{{batchId}}/files)"
        )));
    }
    let num = |k: &str, default: i64, max: i64| -> ApiResult<i64> {
        match q.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && *n <= max)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{k} must be an integer from 0 to {max}"))
                }),
        }
    };
    let limit = num("limit", 100, 1000)?.max(1);
    let start = num("start", 0, i64::MAX)?;
    let rows = match q.get("identity") {
        Some(identity) => state.store.current_record(&dataset_id, identity).await?,
        None => state.store.current_view(&dataset_id, limit, start).await?,
    };
    let total = state.store.current_view_size(&dataset_id).await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            json!({
                "identity": row.identity,
                "record": serde_json::from_str::<Value>(&row.record).unwrap_or(Value::Null),
                "lastBatchId": row.batch_id,
                "updated": row.updated,
            })
        })
        .collect();
    let count = data.len();
    Ok(axum::Json(json!({
        "data": data,
        "_page": {"limit": limit, "start": start, "count": count, "total": total},
    }))
    .into_response())
}

/// E6: the first `nrow` records (default 5) of a batch's files, as JSON.
pub async fn preview(
    State(state): State<Arc<AppState>>,
    Path((batch_id, dataset_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let batch = state
        .store
        .batch(&batch_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("batch {batch_id} does not exist")))?;
    if batch.dataset_id != dataset_id {
        return Err(ApiError::bad_request(format!(
            "the URL names dataset {dataset_id} but batch {batch_id} belongs to dataset {}",
            batch.dataset_id
        )));
    }
    let nrow: usize = match q.get("nrow") {
        None => 5,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n >= 1 && *n <= 1000)
            .ok_or_else(|| ApiError::bad_request("nrow must be an integer from 1 to 1000"))?,
    };
    let fmt = InputFormat::from_json(
        &serde_json::from_str::<Value>(&batch.input_format).unwrap_or(json!({})),
    );
    let files: Vec<_> = state
        .store
        .files_of(&batch_id)
        .await?
        .into_iter()
        .filter(|f| f.state == FileState::Complete)
        .map(|f| state.store.file_path(&batch_id, &f.id))
        .collect();
    let rows =
        tokio::task::spawn_blocking(move || super::formats::preview_rows(&files, &fmt, nrow))
            .await
            .map_err(|e| ApiError::internal(format!("preview task failed: {e}")))?;
    Ok(axum::Json(json!({"data": rows})).into_response())
}
