//! The Batch Ingestion endpoints, one module per endpoint group: `batches` (E1 create, E7
//! actions), `put` (E2, a whole file), `large` (E3/E3b INITIALIZE and COMPLETE a large file,
//! E5 HEAD), `chunks` (E4 PATCH), and `assembly` (which bytes arrived, and making a file of
//! its chunks). This module holds what the file endpoints share: the URL's target, the batch
//! it must be in, the limits, and discarding a batch's content.

use axum::http::{HeaderMap, StatusCode, Uri, header};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::scope;
use crate::store::{BatchAtPath, BatchRow, BatchStatus, FileRow};
use crate::upload::{ReceiveError, validate_file_path};

mod assembly;
mod batches;
mod chunks;
mod large;
mod put;

pub use batches::{batch_action, create_batch};
pub use chunks::patch_file;
pub use large::{head_file, post_file};
pub use put::put_file;

/// What a file endpoint's URL names, and who asks (a batch is only seen from its sandbox).
struct Target {
    batch_id: String,
    dataset_id: String,
    path: String,
    caller: Caller,
}

/// Parses `/data/foundation/import/batches/{batch}/datasets/{dataset}/files/{path...}` from the
/// raw URI and percent-decodes each part (so encoded slashes or dots are checked like plain
/// ones).
fn file_target(uri: &Uri, caller: Caller) -> ApiResult<Target> {
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
        caller,
    })
}

/// The batch of a file endpoint: exists in the caller's sandbox (404), belongs to the dataset
/// of the URL (400).
async fn target_batch(state: &AppState, t: &Target) -> ApiResult<BatchRow> {
    let batch = scope::batch(state, &t.caller, &t.batch_id).await?;
    same_dataset(&batch, t)?;
    Ok(batch)
}

fn same_dataset(batch: &BatchRow, t: &Target) -> ApiResult<()> {
    if batch.dataset_id != t.dataset_id {
        return Err(ApiError::bad_request(format!(
            "the URL names dataset {} but batch {} belongs to dataset {}",
            t.dataset_id, batch.id, batch.dataset_id
        )));
    }
    Ok(())
}

fn require_loading(batch: &BatchRow) -> ApiResult<()> {
    if batch.status != BatchStatus::Loading {
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

/// [`loading_batch`], with what the batch holds and the file at the target's path, in one
/// look-up (see [`crate::store::Store::batch_at_path`]).
async fn loading_batch_at(state: &AppState, t: &Target) -> ApiResult<BatchAtPath> {
    let found = state
        .store
        .batch_at_path(&t.batch_id, &t.path, t.caller.scope())
        .await?
        .ok_or_else(|| scope::batch_not_found(&t.batch_id, &t.caller))?;
    same_dataset(&found.batch, t)?;
    require_loading(&found.batch)?;
    Ok(found)
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

/// Forgets a large file's chunks and removes their bytes.
async fn remove_parts(state: &AppState, file_id: &str) -> ApiResult<()> {
    state.store.delete_chunks(file_id).await?;
    let dir = state.store.parts_dir(file_id);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove chunk parts");
    }
    Ok(())
}

/// The file of a large upload, which INITIALIZE must have created.
async fn large_file(state: &AppState, t: &Target, verb: &str) -> ApiResult<FileRow> {
    let Some(f) = state.store.file(&t.batch_id, &t.path).await? else {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {} was not initialized: POST .../files/{}?action=INITIALIZE before {verb}",
            t.path, t.batch_id, t.path
        )));
    };
    Ok(f)
}

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
