//! E3/E3b: INITIALIZE and COMPLETE a large file (its chunks, E4, are `chunks`), and E5: HEAD,
//! which bytes of a file arrived.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::assembly::{AssembleError, assemble, contiguous_prefix, plan_assembly, sources_of};
use super::{
    Target, action_of, check_batch_bytes, check_file_count, file_target, large_file, loading_batch,
    loading_batch_at, remove_parts, target_batch,
};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::store::{ChunkRow, FileKind, FileRow, FileState};

pub async fn post_file(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> ApiResult<Response> {
    let t = file_target(&uri, caller)?;
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
    let at = loading_batch_at(state, t).await?;
    match state.store.file(&t.batch_id, &t.path).await? {
        None => {
            check_file_count(state, &t.batch_id, at.other_files())?;
            state.store.insert_large_file(&t.batch_id, &t.path).await?;
            tracing::info!(batch = %t.batch_id, path = %t.path, "large file initialized");
        }
        Some(f) if f.kind == FileKind::Large && f.state == FileState::Uploading => {
            // Idempotent: a client that re-initializes after a crash keeps what arrived.
        }
        Some(f) => {
            // A finished file is replaced by a new upload (like PUT replaces).
            state.store.restart_as_large(&f.id).await?;
            let _ = tokio::fs::remove_file(state.store.file_path(&t.batch_id, &f.id)).await;
            tracing::info!(batch = %t.batch_id, path = %t.path, "finished file re-initialized as a new large upload");
        }
    }
    Ok(file_answer(t, 0))
}

async fn complete_file(state: &AppState, t: &Target) -> ApiResult<Response> {
    loading_batch(state, t).await?;
    let lock = state.batch_lock(&t.batch_id);
    let _guard = lock.lock().await;
    let at = loading_batch_at(state, t).await?;
    let f = large_file(state, t, "COMPLETE").await?;
    if f.state == FileState::Complete {
        return Ok(file_answer(t, f.size as u64));
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
    check_batch_bytes(state, &t.batch_id, at.other_bytes(), plan.total)?;
    assemble_file(state, t, &f, &chunks, plan.total).await?;
    state.store.complete_file(&f.id, plan.total).await?;
    remove_parts(state, &f.id).await?;
    tracing::info!(batch = %t.batch_id, path = %t.path, bytes = plan.total, "large file completed");
    Ok(file_answer(t, plan.total))
}

/// INITIALIZE's and COMPLETE's answer: the guide's `201 Created` with the spec's `File` body
/// (`{"name", "sizeInBytes"}`), so that a client written against either accepts it.
fn file_answer(t: &Target, size: u64) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"name": t.path, "sizeInBytes": size})),
    )
        .into_response()
}

/// Makes the file of its chunks, in place of its data, and moves it among the batch's files.
async fn assemble_file(
    state: &AppState,
    t: &Target,
    f: &FileRow,
    chunks: &[ChunkRow],
    total: u64,
) -> ApiResult<()> {
    let sources = sources_of(&state.store, &f.id, chunks);
    let data = state.store.data_path(&f.id);
    tokio::fs::create_dir_all(state.store.parts_dir(&f.id)).await?;
    let data2 = data.clone();
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
    Ok(())
}

// E5: HEAD, which bytes arrived

pub async fn head_file(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> ApiResult<Response> {
    let t = file_target(&uri, caller)?;
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
    let prefix = if f.state == FileState::Complete {
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
