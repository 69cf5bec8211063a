//! The Data Access endpoints (reading back what was ingested) and the batch preview (E6).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::formats::InputFormat;
use super::import::SUCCESS;
use super::store::{FailedRow, FileRow};

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
    if batch.status != SUCCESS {
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
                "records": f.records.unwrap_or(0),
                "size": f.served_size.unwrap_or(f.size),
                "isValid": true,
                "created": f.created,
                "updated": f.updated,
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
    let f: Option<FileRow> = sqlx::query_as("SELECT * FROM files WHERE id = ?")
        .bind(&file_id)
        .fetch_optional(&state.store.pool)
        .await?;
    let not_found = || ApiError::not_found(format!("dataset file {file_id} does not exist"));
    let f = f.ok_or_else(not_found)?;
    let status: Option<(String,)> = sqlx::query_as("SELECT status FROM batches WHERE id = ?")
        .bind(&f.batch_id)
        .fetch_optional(&state.store.pool)
        .await?;
    if status.map(|(s,)| s).as_deref() != Some(SUCCESS) {
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
    if matches!(batch.status.as_str(), "inactive" | "deleted") {
        return Ok(axum::Json(json!({"data": []})).into_response());
    }
    let rows: Vec<FailedRow> = sqlx::query_as(
        "SELECT file_path, row_no, code, message, raw, errors FROM failed_rows WHERE batch_id = ? ORDER BY seq",
    )
    .bind(&batch_id)
    .fetch_all(&state.store.pool)
    .await?;
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
    let rows: Vec<(String, String, String, i64)> = match q.get("identity") {
        Some(identity) => {
            sqlx::query_as(
                "SELECT identity, record, batch_id, updated FROM upsert_rows WHERE dataset_id = ? AND identity = ?",
            )
            .bind(&dataset_id)
            .bind(identity)
            .fetch_all(&state.store.pool)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT identity, record, batch_id, updated FROM upsert_rows WHERE dataset_id = ?
                 ORDER BY identity LIMIT ? OFFSET ?",
            )
            .bind(&dataset_id)
            .bind(limit)
            .bind(start)
            .fetch_all(&state.store.pool)
            .await?
        }
    };
    let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM upsert_rows WHERE dataset_id = ?")
        .bind(&dataset_id)
        .fetch_one(&state.store.pool)
        .await?;
    let data: Vec<Value> = rows
        .into_iter()
        .map(|(identity, record, batch, updated)| {
            json!({
                "identity": identity,
                "record": serde_json::from_str::<Value>(&record).unwrap_or(Value::Null),
                "lastBatchId": batch,
                "updated": updated,
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
        .filter(|f| f.state == super::store::FILE_COMPLETE)
        .map(|f| state.store.file_path(&batch_id, &f.id))
        .collect();
    let rows =
        tokio::task::spawn_blocking(move || super::formats::preview_rows(&files, &fmt, nrow))
            .await
            .map_err(|e| ApiError::internal(format!("preview task failed: {e}")))?;
    Ok(axum::Json(json!({"data": rows})).into_response())
}
