//! E4: PATCH one chunk of a large file. A chunk that overlaps nothing is written straight to
//! its offset in the file's data (a reservation keeps two in-flight chunks from overlapping
//! there); one that overlaps stored chunks waits in a part of its own until compared (a
//! re-send with the same bytes is a duplicate; with other bytes, it replaces what it covers).

use std::path::Path;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::assembly::{covered, range_matches, sources_of};
use super::{
    Target, content_length, file_target, large_file, loading_batch, receive_error, refuse_multipart,
};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::gateway::ResponseWillBeLost;
use crate::stats::bump;
use crate::store::{ChunkPlace, ChunkRow, FileKind, FileRow, FileState};
use crate::upload::{BodyKind, parse_content_range, receive_to_file};

pub async fn patch_file(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    lost: Option<Extension<ResponseWillBeLost>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let t = file_target(&uri, caller)?;
    let boundary = form_boundary(&headers, &t)?;
    let (start, end, total) = chunk_range(&state, &t, &headers, boundary.is_none())?;
    let len = end - start + 1;
    let max = state.config.limits.max_chunk_bytes;
    let f = patchable_file(&state, &t, total).await?;

    let acked = lost.is_none();
    // The common case (each range once, in any order) goes straight to its offset; a chunk
    // overlapping a stored one (a re-send, or a conflict for COMPLETE to find) is kept apart
    // until compared.
    let reserved = Reservation::take(&state, &t, &f.id, start, end).await?;
    let (dest, into) = match reserved {
        Some(_) => {
            tokio::fs::create_dir_all(state.store.parts_dir(&f.id)).await?;
            (state.store.data_path(&f.id), BodyKind::At(start))
        }
        None => (state.store.tmp_path(), BodyKind::Chunk),
    };
    let body = match boundary {
        None => body,
        Some(boundary) => form_file_part(body, boundary, &t).await?,
    };
    let got = receive_to_file(body, &dest, max, Some(len), into)
        .await
        .map_err(|e| receive_error(e, &format!("chunk {start}-{end} of file {}", t.path)))?;
    let lock = state.batch_lock(&t.batch_id);
    let guard = lock.lock().await;
    let range = (start, end, total);
    let result = match reserved {
        Some(_) => commit_in_place(&state, &t, range, got.ino, acked).await,
        None => commit_chunk(&state, &t, &dest, range, acked).await,
    };
    drop(guard);
    drop(reserved);
    if into == BodyKind::Chunk {
        let _ = tokio::fs::remove_file(&dest).await;
    }
    let duplicate = result?;
    bump(&state.counters.chunks_received);
    state
        .counters
        .bytes_received
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    if duplicate {
        bump(&state.counters.duplicate_acknowledged_chunks);
    }
    tracing::debug!(batch = %t.batch_id, path = %t.path, start, end, duplicate, "chunk received");
    Ok((
        StatusCode::OK,
        axum::Json(json!({"name": t.path, "sizeInBytes": len})),
    )
        .into_response())
}

/// The boundary of a `multipart/form-data` chunk (the spec and the public Postman collection
/// send the chunk as a form's file field; the guide sends raw bytes: both are taken). Other
/// multipart kinds are refused.
fn form_boundary(headers: &HeaderMap, t: &Target) -> ApiResult<Option<String>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        refuse_multipart(headers, &t.path)?;
        return Ok(None);
    }
    multer::parse_boundary(content_type).map(Some).map_err(|e| {
        ApiError::bad_request(format!(
            "PATCH of file {}: multipart/form-data without a usable boundary ({e}); send the chunk as raw bytes with Content-Type: application/octet-stream, or as a form's file field (curl -F file=@chunk)",
            t.path
        ))
    })
}

/// The bytes of a form's file part: the first field with a file name, or the field `file`.
async fn form_file_part(body: Body, boundary: String, t: &Target) -> ApiResult<Body> {
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.file_name().is_some() || field.name() == Some("file") => {
                return Ok(Body::from_stream(field));
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(ApiError::bad_request(format!(
                    "PATCH of file {}: the multipart body has no file field; send the chunk as a field with a file name (curl -F file=@chunk)",
                    t.path
                )));
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "PATCH of file {}: the multipart body cannot be read ({e}); check the boundary and the form's framing",
                    t.path
                )));
            }
        }
    }
}

/// The chunk's range from its `Content-Range` (start, end inclusive, total if announced),
/// within the limits of a chunk and of a batch, and matching its `Content-Length` when the
/// body is the raw chunk (`raw`; a form's length includes its framing).
fn chunk_range(
    state: &AppState,
    t: &Target,
    headers: &HeaderMap,
    raw: bool,
) -> ApiResult<(u64, u64, Option<u64>)> {
    let range = headers
        .get(header::CONTENT_RANGE)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "PATCH of file {} needs a Content-Range header: bytes START-END/TOTAL (END inclusive)",
                t.path
            ))
        })?
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Range is not ASCII"))?;
    let (start, end, total) = parse_content_range(range).map_err(ApiError::bad_request)?;
    let batch_max = state.config.limits.max_batch_bytes;
    if end >= batch_max || total.is_some_and(|t| t > batch_max) {
        return Err(ApiError::bad_request(format!(
            "Content-Range {range} goes beyond {batch_max} bytes, the most a batch can hold"
        )));
    }
    let len = end - start + 1;
    let max = state.config.limits.max_chunk_bytes;
    if len > max {
        return Err(ApiError::too_large(format!(
            "chunk {start}-{end} of file {} is {len} bytes: each PATCH takes at most {max} bytes",
            t.path
        )));
    }
    if raw
        && let Some(cl) = content_length(headers)
        && cl != len
    {
        return Err(ApiError::bad_request(format!(
            "Content-Length {cl} does not match Content-Range {range} ({len} bytes)"
        )));
    }
    Ok((start, end, total))
}

/// A range of a large file claimed for writing in place; given back when dropped.
struct Reservation {
    state: Arc<AppState>,
    file_id: String,
    range: (u64, u64),
}

impl Reservation {
    /// Claims `start..=end` of the file's data if no stored chunk and no chunk being written
    /// in place overlaps it; None otherwise.
    async fn take(
        state: &Arc<AppState>,
        t: &Target,
        file_id: &str,
        start: u64,
        end: u64,
    ) -> ApiResult<Option<Reservation>> {
        let lock = state.batch_lock(&t.batch_id);
        let _guard = lock.lock().await;
        let overlaps = |(s, e): (u64, u64)| s <= end && e >= start;
        let chunks = state.store.chunks_of(file_id).await?;
        if chunks
            .iter()
            .any(|c| overlaps((c.start as u64, c.end_incl as u64)))
        {
            return Ok(None);
        }
        let mut writing = state.writing_in_place.lock().expect("in-place ranges");
        let ranges = writing.entry(file_id.to_owned()).or_default();
        if ranges.iter().any(|r| overlaps(*r)) {
            return Ok(None);
        }
        ranges.push((start, end));
        Ok(Some(Reservation {
            state: state.clone(),
            file_id: file_id.to_owned(),
            range: (start, end),
        }))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut writing = self.state.writing_in_place.lock().expect("in-place ranges");
        if let Some(ranges) = writing.get_mut(&self.file_id) {
            ranges.retain(|r| *r != self.range);
            if ranges.is_empty() {
                writing.remove(&self.file_id);
            }
        }
    }
}

/// Under the batch lock: records a chunk written in place. The file's data must still be
/// the one written to (an INITIALIZE of a new version meanwhile removed it).
async fn commit_in_place(
    state: &AppState,
    t: &Target,
    (start, end, total): (u64, u64, Option<u64>),
    ino: u64,
    acked: bool,
) -> ApiResult<bool> {
    use std::os::unix::fs::MetadataExt;
    let f = patchable_file(state, t, total).await?;
    let data = state.store.data_path(&f.id);
    if !tokio::fs::metadata(&data)
        .await
        .is_ok_and(|m| m.ino() == ino)
    {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {} was started again while chunk {start}-{end} arrived; send the chunk again",
            t.path, t.batch_id
        )));
    }
    let chunks = state.store.chunks_of(&f.id).await?;
    let seq = chunks.iter().map(|c| c.seq).max().unwrap_or(0) + 1;
    state
        .store
        .insert_chunk(&f.id, seq, (start, end, total), ChunkPlace::InPlace, acked)
        .await?;
    state.store.touch_file(&f.id).await?;
    Ok(false)
}

/// The large file a PATCH goes to, if its batch and it can still take chunks with this
/// total (checked before a chunk is received, and again under the batch lock).
async fn patchable_file(state: &AppState, t: &Target, total: Option<u64>) -> ApiResult<FileRow> {
    loading_batch(state, t).await?;
    let f = large_file(state, t, "PATCH").await?;
    check_patchable(t, &f)?;
    check_total(state, &f, total).await?;
    Ok(f)
}

fn check_patchable(t: &Target, f: &FileRow) -> ApiResult<()> {
    if f.kind != FileKind::Large || f.state != FileState::Uploading {
        return Err(ApiError::bad_request(format!(
            "file {} of batch {} is already complete: INITIALIZE it again to upload a new version",
            t.path, t.batch_id
        )));
    }
    Ok(())
}

async fn check_total(state: &AppState, f: &FileRow, total: Option<u64>) -> ApiResult<()> {
    let Some(total) = total else { return Ok(()) };
    if let Some(other) = state.store.other_total(&f.id, total).await? {
        return Err(ApiError::bad_request(format!(
            "file {}: Content-Range announces a total of {total} bytes but earlier chunks announced {other}",
            f.path
        )));
    }
    Ok(())
}

/// Under the batch lock: records the chunk, unless its whole range already arrived with the same
/// bytes (returns true then, and nothing changes).
async fn commit_chunk(
    state: &AppState,
    t: &Target,
    tmp: &Path,
    (start, end, total): (u64, u64, Option<u64>),
    acked: bool,
) -> ApiResult<bool> {
    let f = patchable_file(state, t, total).await?;
    let chunks = state.store.chunks_of(&f.id).await?;
    if covered(&chunks, start, end) {
        // Compared byte for byte: re-sent chunks are rare, and hashing every chunk to
        // recognise them would slow every upload.
        let same = {
            let sources = sources_of(&state.store, &f.id, &chunks);
            let tmp = tmp.to_owned();
            tokio::task::spawn_blocking(move || range_matches(&tmp, start, end, &sources))
                .await
                .map_err(|e| ApiError::internal(format!("compare task failed: {e}")))??
        };
        if same {
            // Nothing new to store. It is a duplicate of an acknowledged chunk only if
            // acknowledged chunks alone cover the range.
            let acked_chunks: Vec<ChunkRow> = chunks.iter().filter(|c| c.acked).cloned().collect();
            let duplicate = covered(&acked_chunks, start, end);
            if acked {
                // The client now knows these bytes arrived.
                state.store.ack_chunks(&f.id, start, end).await?;
            }
            return Ok(duplicate);
        }
    }
    let seq = chunks.iter().map(|c| c.seq).max().unwrap_or(0) + 1;
    tokio::fs::create_dir_all(state.store.parts_dir(&f.id)).await?;
    tokio::fs::rename(tmp, state.store.part_path(&f.id, seq)).await?;
    state
        .store
        .insert_chunk(&f.id, seq, (start, end, total), ChunkPlace::Part, acked)
        .await?;
    // The new chunk supersedes earlier chunks that lie wholly inside its range (a re-sent
    // range with new bytes replaces the old ones); partial overlaps stay and are compared at
    // COMPLETE.
    let superseded: Vec<i64> = chunks
        .iter()
        .filter(|c| c.start as u64 >= start && c.end_incl as u64 <= end)
        .map(|c| c.seq)
        .collect();
    for old in &superseded {
        state.store.delete_chunk(&f.id, *old).await?;
        let _ = tokio::fs::remove_file(state.store.part_path(&f.id, *old)).await;
    }
    state.store.touch_file(&f.id).await?;
    Ok(false)
}
