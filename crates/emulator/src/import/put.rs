//! E2: PUT a whole file into a loading batch (a new one, or a new version of a path), within
//! the limits of a PUT, of a batch's file count and of its bytes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{
    Target, check_batch_bytes, check_file_count, content_length, file_target, loading_batch_at,
    receive_error, refuse_multipart, remove_parts,
};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::stats::bump;
use crate::store::{BatchAtPath, FileKind};
use crate::upload::{BodyKind, receive_to_file};

pub async fn put_file(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let t = file_target(&uri, caller)?;
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
    // Checked before the body is received only when that saves receiving a large one: the
    // checks under the batch lock (`commit_put`) decide, and a small PUT's look-up there is
    // its only one.
    if declared.is_none_or(|n| n > CHECK_FIRST_BYTES) {
        let at = loading_batch_at(&state, &t).await?;
        check_limits(&state, &t, &at, declared.unwrap_or(0))?;
    }

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
        .fetch_add(got.len, Ordering::Relaxed);
    tracing::info!(batch = %t.batch_id, path = %t.path, bytes = got.len, created, "file stored");
    // The guide answers 200 for a new file as for a replaced one, and a public client takes
    // anything else as an error; the spec documents both 200 and 201.
    Ok(StatusCode::OK.into_response())
}

/// The batch's file-count and bytes limits, for `len` bytes at the target's path (a new file,
/// or one replacing the file there).
fn check_limits(state: &AppState, t: &Target, at: &BatchAtPath, len: u64) -> ApiResult<()> {
    if at.file().is_none() {
        check_file_count(state, &t.batch_id, at.other_files())?;
    }
    check_batch_bytes(state, &t.batch_id, at.other_bytes(), len)
}

/// A PUT announcing more bytes than this is checked against its batch before its body is
/// received, as well as after.
const CHECK_FIRST_BYTES: u64 = 1 << 20;

/// Under the batch lock: re-checks, renames the temp file into place, records it. Returns
/// whether the file is new.
async fn commit_put(state: &AppState, t: &Target, tmp: &Path, len: u64) -> ApiResult<bool> {
    let at = loading_batch_at(state, t).await?;
    check_limits(state, t, &at, len)?;
    let existing = at.file();
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
    state
        .store
        .put_file(&file_id, &t.batch_id, &t.path, len)
        .await?;
    if let Some(f) = &existing
        && f.kind == FileKind::Large
    {
        remove_parts(state, &f.id).await?;
    }
    Ok(existing.is_none())
}
