//! E2: PUT a whole file into a loading batch (a new one, or a new version of a path), within
//! the limits of a PUT, of a batch's file count and of its bytes.

use std::path::{Path, PathBuf};
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
use crate::upload::{BodyKind, fits_in_memory, receive_in_memory, receive_to_file};

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

    let what = || format!("file {}", t.path);
    let arrived = match declared {
        Some(n) if fits_in_memory(declared, limit) => Arrived::InMemory(
            receive_in_memory(body, n)
                .await
                .map_err(|e| receive_error(e, &what()))?,
        ),
        _ => {
            let tmp = state.store.tmp_path();
            let got = receive_to_file(body, &tmp, limit, declared, BodyKind::File)
                .await
                .map_err(|e| receive_error(e, &what()))?;
            Arrived::OnDisk { tmp, len: got.len }
        }
    };
    let len = arrived.len();

    let lock = state.batch_lock(&t.batch_id);
    let _guard = lock.lock().await;
    let created = commit_put(&state, &t, arrived).await?;
    bump(&state.counters.puts);
    state
        .counters
        .bytes_received
        .fetch_add(len, Ordering::Relaxed);
    tracing::info!(batch = %t.batch_id, path = %t.path, bytes = len, created, "file stored");
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

/// A PUT of at most this many bytes is written and moved into place on the request's own
/// thread; a larger one on the blocking pool.
const PLACED_IN_PLACE_BYTES: u64 = 16 * 1024;

/// A PUT's body once received, waiting to be put in place under its batch's lock.
enum Arrived {
    /// A small body (see [`fits_in_memory`]): written to disk together with its move into
    /// place, so that a small PUT costs one trip to the blocking pool at most, not two.
    InMemory(Vec<u8>),
    /// A larger body, streamed to this temp file as it arrived.
    OnDisk { tmp: PathBuf, len: u64 },
}

impl Arrived {
    fn len(&self) -> u64 {
        match self {
            Arrived::InMemory(bytes) => bytes.len() as u64,
            Arrived::OnDisk { len, .. } => *len,
        }
    }
}

/// Under the batch lock: re-checks, puts the body in place (through a temp file, renamed: a
/// new version replaces the file at its path whole), records it. Returns whether the file is
/// new. The temp file is gone when this fails.
async fn commit_put(state: &AppState, t: &Target, arrived: Arrived) -> ApiResult<bool> {
    let tmp = match &arrived {
        Arrived::InMemory(_) => state.store.tmp_path(),
        Arrived::OnDisk { tmp, .. } => tmp.clone(),
    };
    let result = place_and_record(state, t, &tmp, arrived).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn place_and_record(
    state: &AppState,
    t: &Target,
    tmp: &Path,
    arrived: Arrived,
) -> ApiResult<bool> {
    let len = arrived.len();
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
    // The batch's folder exists after its first file: created only when the move finds it
    // missing, not asked for on every PUT.
    let place = move || {
        if let Arrived::InMemory(bytes) = &arrived {
            std::fs::write(&tmp, bytes)?;
        }
        match std::fs::rename(&tmp, &dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                std::fs::rename(tmp, dest)
            }
            moved => moved,
        }
    };
    if len <= PLACED_IN_PLACE_BYTES {
        // A few kilobytes into the page cache and a rename take less than the two thread
        // switches of a trip to the blocking pool and back.
        place()?;
    } else {
        // One trip to the blocking pool for all of it.
        tokio::task::spawn_blocking(place)
            .await
            .map_err(|e| ApiError::internal(format!("file store task failed: {e}")))??;
    }
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
