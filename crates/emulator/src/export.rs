//! The Data Access endpoints (reading back what was ingested) and the batch preview (E6).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::catalog::view_id;
use super::error::{ApiError, ApiResult};
use super::formats::InputFormat;
use super::gateway::Caller;
use super::scope;
use super::state::AppState;
use super::store::{BatchRow, BatchStatus, FileRow, FileState};

/// The base URL the client used (for `_links`).
pub(crate) fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The readable files of `batch` from the `start`-th, `limit` of them at most, and whether
/// more follow. Files of a successful batch are readable; nothing else is (inactive and
/// deleted batches disappear from Data Access).
async fn readable_page(
    state: &AppState,
    batch: &BatchRow,
    start: usize,
    limit: usize,
) -> ApiResult<(Vec<FileRow>, bool)> {
    if batch.status != BatchStatus::Success {
        return Ok((Vec::new(), false));
    }
    // One more than the page, to know whether there is a next one.
    let mut files = state
        .store
        .files_page(&batch.id, start as u64, limit as u64 + 1)
        .await?;
    let more = files.len() > limit;
    files.truncate(limit);
    Ok((files, more))
}

/// `start`/`limit` of a Data Access list: `limit` defaults to and is capped at 100 (the spec:
/// "100 dataset files is the maximum number ... in a single API request"). The spec documents
/// no 400 for these lists, so a `limit` that is not a positive number is the default and a
/// `start` that is not a number is 0, rather than an error.
fn page(q: &HashMap<String, String>) -> (usize, usize) {
    let limit = q
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .map_or(100, |n| n.min(100));
    let start = q
        .get("start")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    (start, limit)
}

/// A batch's dataset files, a page at a time (`_links.next` while more remain).
pub async fn batch_files(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(batch_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (start, limit) = page(&q);
    // An unknown batch has no files to read: the spec documents 200, 401 and 500 here, not
    // 404, so it is an empty page, as for a batch that has not succeeded.
    let Some(batch) = scope::shown_batch(&state, &caller, &batch_id).await? else {
        return Ok(axum::Json(
            json!({"data": [], "_page": {"limit": limit, "count": 0}, "_links": {}}),
        )
        .into_response());
    };
    let (files, more) = readable_page(&state, &batch, start, limit).await?;
    let base = base(&headers);
    let view = view_id(&batch.dataset_id);
    let data: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "dataSetFileId": f.id,
                "dataSetId": batch.dataset_id,
                "dataSetViewId": view,
                "version": "1.0.0",
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
    let here = format!("{base}/data/foundation/export/batches/{batch_id}/files");
    let mut links = serde_json::Map::new();
    if more {
        links.insert(
            "next".into(),
            json!({"href": format!("{here}?start={}&limit={limit}", start + count)}),
        );
    }
    links.insert(
        "page".into(),
        json!({"href": format!("{here}?start={{start}}&limit={{limit}}"), "templated": true}),
    );
    Ok(axum::Json(json!({
        "data": data,
        "_page": {"limit": limit, "count": count},
        "_links": links,
    }))
    .into_response())
}

/// `GET /export/batches/{id}/failed`: the platform's listing of the batch's failed files
/// (`{"data": [{"name", "length", "_links"}], "_page"}`, the spec's `files` schema), one per
/// input file with failed rows; `?path=NAME` downloads that file's failed records as JSON Lines,
/// each with its errors attached: `{"_corrupt_record", "_errors": [{"code", "message"}],
/// "_filename", "_row"}` (`_row`, the row's number in the input file, is the emulator's own
/// addition; a client of the platform cannot count on it).
pub async fn batch_failed(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(batch_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Unknown, inactive and deleted batches have no failed rows to show (the spec documents
    // 200, 401 and 500 here, not 404).
    let shown = scope::shown_batch(&state, &caller, &batch_id).await?;
    let rows = if shown.is_some() {
        state.store.failed_rows(&batch_id).await?
    } else {
        Vec::new()
    };
    // The failed records of each file, in the order they failed, as JSON Lines.
    let mut files: Vec<(String, String)> = Vec::new();
    for row in &rows {
        let errors = row
            .errors
            .as_deref()
            .and_then(|e| serde_json::from_str::<Value>(e).ok())
            .unwrap_or_else(|| json!([{"code": row.code, "message": row.message}]));
        let line = json!({
            "_corrupt_record": row.raw.as_deref().map(|raw| raw.trim_end_matches(['\n', '\r'])),
            "_errors": errors,
            "_filename": row.file_path,
            "_row": row.row_no,
        });
        match files.iter_mut().find(|(name, _)| *name == row.file_path) {
            Some((_, text)) => {
                text.push_str(&line.to_string());
                text.push('\n');
            }
            None => files.push((row.file_path.clone(), format!("{line}\n"))),
        }
    }
    if let Some(wanted) = q.get("path") {
        // A name the listing does not have holds no failed records: an empty download (the
        // spec documents 200, 401 and 500 here, not 404).
        let text = files
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, text)| text.clone())
            .unwrap_or_default();
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], text).into_response());
    }
    let (start, limit) = page(&q);
    let here = format!(
        "{}/data/foundation/export/batches/{batch_id}/failed",
        base(&headers)
    );
    let data: Vec<Value> = files
        .iter()
        .skip(start)
        .take(limit)
        .map(|(name, text)| {
            json!({
                "name": name,
                "length": text.len().to_string(),
                "_links": {"self": {"href": format!(
                    "{here}?path={}",
                    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                )}},
            })
        })
        .collect();
    let count = data.len();
    Ok(
        axum::Json(json!({"data": data, "_page": {"limit": limit, "count": count}}))
            .into_response(),
    )
}

/// The current view of an upsert dataset: one record per identity, each the merge of every
/// row its successful batches carried. `?identity=ID` reads one; `limit` (default 100, at most
/// 1000) and `start` page through the rest, ordered by identity.
pub async fn current_view(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dataset_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let d = scope::dataset(&state, &caller, &dataset_id).await?;
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

/// How many rows a preview shows when `nrow` is absent or 0 (the spec's default is 0, "the
/// number of rows to parse", without saying what 0 means: here, the default).
const PREVIEW_ROWS: usize = 5;

/// The `nrow` of a preview: 0 or absent is the default, at most 1000.
fn preview_rows_wanted(q: &HashMap<String, String>) -> ApiResult<usize> {
    match q.get("nrow") {
        None => Ok(PREVIEW_ROWS),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(PREVIEW_ROWS),
            Ok(n) if n <= 1000 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "nrow {v:?} must be an integer from 0 (the default, {PREVIEW_ROWS} rows) to 1000"
            ))),
        },
    }
}

/// E6: the first `nrow` records of a batch's files, in the spec's `PreviewResponse` shape:
/// the format parameters used (the batch's `inputFormat`, overridden by the query's
/// `format`, `isMultiLineJson`, `delimiter`, `quote`, `escape`, `header`), the columns (the
/// records' top-level fields in order of appearance, `cid` counting from 0) and the rows (one
/// object per record, keyed by `cid`, values as text: nested values as their JSON).
pub async fn preview(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((batch_id, dataset_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let batch = scope::batch(&state, &caller, &batch_id).await?;
    if batch.dataset_id != dataset_id {
        return Err(ApiError::bad_request(format!(
            "the URL names dataset {dataset_id} but batch {batch_id} belongs to dataset {}",
            batch.dataset_id
        )));
    }
    let nrow = preview_rows_wanted(&q)?;
    let mut params = serde_json::from_str::<Value>(&batch.input_format).unwrap_or(json!({}));
    if !params.is_object() {
        params = json!({});
    }
    for key in ["format", "delimiter", "quote", "escape", "charset"] {
        if let Some(v) = q.get(key) {
            params[key] = json!(v);
        }
    }
    for key in ["isMultiLineJson", "header"] {
        if let Some(v) = q.get(key) {
            let flag = v
                .parse::<bool>()
                .map_err(|_| ApiError::bad_request(format!("{key} {v:?} must be true or false")))?;
            params[key] = json!(flag);
        }
    }
    let fmt = InputFormat::from_json(&params);
    let files: Vec<_> = state
        .store
        .files_of(&batch_id)
        .await?
        .into_iter()
        .filter(|f| f.state == FileState::Complete)
        .map(|f| state.store.file_path(&batch_id, &f.id))
        .collect();
    let records =
        tokio::task::spawn_blocking(move || super::formats::preview_rows(&files, &fmt, nrow))
            .await
            .map_err(|e| ApiError::internal(format!("preview task failed: {e}")))?;
    let format_params = json!({
        "format": params.get("format").and_then(Value::as_str).unwrap_or("json").to_ascii_lowercase(),
        "delimiter": params.get("delimiter").and_then(Value::as_str).unwrap_or(","),
        "quote": params.get("quote").and_then(Value::as_str).unwrap_or("\""),
        "escape": params.get("escape").and_then(Value::as_str).unwrap_or("\\"),
        "charset": params.get("charset").and_then(Value::as_str).unwrap_or("UTF-8"),
        "header": params.get("header").and_then(Value::as_bool).unwrap_or(true),
    });
    Ok(axum::Json(json!({
        "formatParams": format_params,
        "preview": as_columns(&records),
    }))
    .into_response())
}

/// Records as the spec's `Preview`: `columns` `[{cid, name}]` and `rows` keyed by `cid`.
fn as_columns(records: &[Value]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for record in records {
        for key in record.as_object().into_iter().flat_map(|o| o.keys()) {
            if !names.contains(&key.as_str()) {
                names.push(key);
            }
        }
    }
    let columns: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(cid, name)| json!({"cid": cid.to_string(), "name": name}))
        .collect();
    let rows: Vec<Value> = records
        .iter()
        .map(|record| {
            let mut row = serde_json::Map::new();
            for (cid, name) in names.iter().enumerate() {
                let text = match record.get(*name) {
                    None | Some(Value::Null) => continue,
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                row.insert(cid.to_string(), json!(text));
            }
            Value::Object(row)
        })
        .collect();
    json!({"columns": columns, "rows": rows})
}

/// `GET /export/datasets/{id}/preview`: the dataset's first rows (at most 100, as the spec
/// says), read from its successful batches' files, oldest batch first.
pub async fn dataset_preview(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dataset_id): Path<String>,
) -> ApiResult<Response> {
    const ROWS: usize = 100;
    scope::dataset(&state, &caller, &dataset_id).await?;
    // At most ROWS files can each contribute a row.
    let files = state
        .store
        .readable_files_of_dataset(&dataset_id, caller.scope(), ROWS as i64)
        .await?;
    let paths: Vec<(std::path::PathBuf, InputFormat)> = files
        .into_iter()
        .map(|(file, input_format)| {
            let path = match file.served_size {
                Some(_) => state.store.good_path(&file.batch_id, &file.id),
                None => state.store.file_path(&file.batch_id, &file.id),
            };
            let fmt = InputFormat::from_json(
                &serde_json::from_str::<Value>(&input_format).unwrap_or(json!({})),
            );
            (path, fmt)
        })
        .collect();
    let rows = tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        for (path, fmt) in paths {
            if rows.len() >= ROWS {
                break;
            }
            let left = ROWS - rows.len();
            rows.extend(super::formats::preview_rows(
                std::slice::from_ref(&path),
                &fmt,
                left,
            ));
        }
        rows
    })
    .await
    .map_err(|e| ApiError::internal(format!("preview task failed: {e}")))?;
    Ok(axum::Json(json!({"data": rows})).into_response())
}
