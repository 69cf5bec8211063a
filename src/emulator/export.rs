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
                "size": f.size,
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
    let file = tokio::fs::File::open(state.store.file_path(&f.batch_id, &f.id))
        .await
        .map_err(|_| not_found())?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.size as u64));
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
        "SELECT file_path, row_no, code, message, raw FROM failed_rows WHERE batch_id = ? ORDER BY seq",
    )
    .bind(&batch_id)
    .fetch_all(&state.store.pool)
    .await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "name": r.file_path,
                "row": r.row_no,
                "record": r.raw,
                "errors": [{"code": r.code, "message": r.message}],
            })
        })
        .collect();
    Ok(axum::Json(json!({"data": data})).into_response())
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
