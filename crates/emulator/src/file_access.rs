//! `GET`/`HEAD /export/files/{dataSetFileId}`: a dataset file as Data Access serves it — a JSON
//! listing of the file's parts without `?path=`, a part's bytes with it (`Range` answered with
//! `206`/`Content-Range`, `HEAD` with `Content-Length` and `Accept-Ranges`).
//!
//! The platform stores a dataset file as a directory of parts (what it wrote while ingesting);
//! the emulator keeps each ingested file whole, so every dataset file has exactly one part,
//! named as the file was uploaded. The byte-range rules (suffix ranges, 416 with
//! `Content-Range: bytes */size`, `If-Range`) are HTTP's, done by tower-http's file service
//! rather than by hand. This module must not read other batches' files or anything of a batch
//! that is not `success` (Data Access shows only successful batches' data).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use tower_http::services::ServeFile;

use super::error::{ApiError, ApiResult};
use super::export::base;
use super::gateway::Caller;
use super::state::AppState;
use super::store::{BatchStatus, FileRow};

/// What a `?path=` value keeps unescaped in the listing's links.
const PATH_QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The dataset file, if a successful batch holds it, and where its served bytes are.
struct Served {
    file: FileRow,
    disk: PathBuf,
    size: u64,
}

async fn served(state: &AppState, caller: &Caller, file_id: &str) -> ApiResult<Served> {
    let not_found = || ApiError::not_found(format!("dataset file {file_id} does not exist"));
    let file = state
        .store
        .file_by_id(file_id)
        .await?
        .ok_or_else(not_found)?;
    // A file is read through its batch: one of another sandbox does not exist for the caller.
    let batch = state
        .store
        .visible_batch(&file.batch_id, caller.scope())
        .await?;
    if batch.map(|b| b.status) != Some(BatchStatus::Success) {
        return Err(not_found());
    }
    // A partially ingested file is served as its good rows.
    let (disk, size) = match file.served_size {
        Some(n) => (state.store.good_path(&file.batch_id, &file.id), n),
        None => (state.store.file_path(&file.batch_id, &file.id), file.size),
    };
    Ok(Served {
        file,
        disk,
        size: size.max(0) as u64,
    })
}

/// `GET` and `HEAD` of one dataset file: the listing, or with `?path=` one part's bytes.
pub async fn file(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(file_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> ApiResult<Response> {
    let served = served(&state, &caller, &file_id).await?;
    match query.get("path") {
        None if request.method() == Method::HEAD => Err(ApiError::bad_request(format!(
            "HEAD of dataset file {file_id} needs ?path=PART: the part whose headers you want (GET without path lists the parts)"
        ))),
        None => Ok(listing(&served, request.headers())),
        Some(part) if *part != served.file.path => Err(ApiError::not_found(format!(
            "dataset file {file_id} has no part {part:?}: GET it without ?path= to list its parts"
        ))),
        Some(_) => part(served, request).await,
    }
}

/// The spec's `files` listing: one part per dataset file here.
fn listing(served: &Served, headers: &HeaderMap) -> Response {
    let href = format!(
        "{}/data/foundation/export/files/{}?path={}",
        base(headers),
        served.file.id,
        utf8_percent_encode(&served.file.path, PATH_QUERY)
    );
    axum::Json(json!({
        "data": [{
            "name": served.file.path,
            // The spec writes lengths as strings.
            "length": served.size.to_string(),
            "_links": {"self": {"href": href}},
        }],
        "_page": {"limit": 100, "count": 1},
    }))
    .into_response()
}

/// One part's bytes, whole or a range of them.
async fn part(served: Served, request: Request) -> ApiResult<Response> {
    let name = served
        .file
        .path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace('"', "");
    let mut service = ServeFile::new(&served.disk);
    let answer = service
        .try_call(request)
        .await
        .map_err(|e| ApiError::internal(format!("reading dataset file {}: {e}", served.file.id)))?;
    if answer.status() == axum::http::StatusCode::NOT_FOUND {
        return Err(ApiError::not_found(format!(
            "dataset file {} is gone from the emulator's data dir",
            served.file.id
        )));
    }
    let (mut parts, body) = answer.into_parts();
    // The bytes are data, whatever the name's extension suggests.
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        parts.headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}
