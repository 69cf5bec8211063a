//! Request-body plumbing for uploads: file-path validation, `Content-Range` parsing and
//! streaming a body to a temp file (never holding it whole in memory).

use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;

/// Checks a client's file path (already percent-decoded). Sub-folders are allowed; the path is
/// only metadata (files are stored by id), but it is still held to the platform's rules.
pub fn validate_file_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the file path is empty".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "file path {path:?} is absolute; give a relative path"
        ));
    }
    if path.len() > 1024 {
        return Err(format!(
            "file path is {} bytes long; the limit is 1024",
            path.len()
        ));
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return Err(format!(
                "file path {path:?} has an empty segment (`//` or a trailing `/`)"
            ));
        }
        if seg == "." || seg == ".." {
            return Err(format!(
                "file path {path:?} has a {seg:?} segment; such paths are refused"
            ));
        }
        if seg.len() > 255 {
            return Err(format!(
                "file path {path:?} has a component of {} bytes; the limit is 255",
                seg.len()
            ));
        }
        if let Some(c) = seg.chars().find(|c| c.is_control()) {
            return Err(format!(
                "file path {path:?} contains the control character {c:?}"
            ));
        }
        if seg.contains('\\') {
            return Err(format!("file path {path:?} contains a backslash"));
        }
    }
    Ok(())
}

/// Parses `bytes S-E/T`, `bytes S-E/*` or `bytes S-E` (end inclusive).
pub fn parse_content_range(value: &str) -> Result<(u64, u64, Option<u64>), String> {
    let bad = || {
        format!(
            "Content-Range {value:?} is not of the form `bytes START-END/TOTAL` (END inclusive)"
        )
    };
    let rest = value.trim();
    let rest = rest
        .strip_prefix("bytes")
        .ok_or_else(bad)?
        .trim_start_matches([' ', '=']);
    let (range, total) = match rest.split_once('/') {
        Some((r, "*")) => (r, None),
        Some((r, t)) => (r, Some(t.trim().parse::<u64>().map_err(|_| bad())?)),
        None => (rest, None),
    };
    let (s, e) = range.trim().split_once('-').ok_or_else(bad)?;
    let start: u64 = s.trim().parse().map_err(|_| bad())?;
    let end: u64 = e.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(format!("Content-Range {value:?}: END is before START"));
    }
    if let Some(t) = total
        && end >= t
    {
        return Err(format!(
            "Content-Range {value:?}: END {end} is beyond the total size {t} (END is inclusive, so it is at most TOTAL-1)"
        ));
    }
    Ok((start, end, total))
}

#[derive(Debug)]
pub enum ReceiveError {
    /// The body grew past the limit.
    TooLarge { limit: u64 },
    /// The body's length is not the announced one.
    Length { expected: u64, got: u64 },
    /// The client went away or sent a broken body.
    Client(String),
    /// Writing to disk failed.
    Disk(std::io::Error),
}

/// Where a body goes, which decides how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A new file PUT whole.
    File,
    /// A chunk kept apart until its file's COMPLETE (it overlaps another chunk).
    Chunk,
    /// A chunk written in place, at this offset of its file's data (which may exist already).
    At(u64),
}

pub struct Received {
    pub len: u64,
    /// The inode written to (a chunk written in place counts only if its file's data is
    /// still that inode when it is recorded).
    pub ino: u64,
}

/// Streams `body` into `dest`, counting bytes. On any error a new file (`File`, `Chunk`) is
/// removed; data written in place is left (its range is simply not recorded).
pub async fn receive_to_file(
    body: Body,
    dest: &Path,
    limit: u64,
    expected: Option<u64>,
    into: BodyKind,
) -> Result<Received, ReceiveError> {
    let result = receive_inner(body, dest, limit, expected, into).await;
    if result.is_err() && !matches!(into, BodyKind::At(_)) {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

/// Opens the file a body is written to, positioned where it goes.
fn open_sink(dest: &Path, into: BodyKind) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    match into {
        BodyKind::File | BodyKind::Chunk => std::fs::File::create(dest),
        BodyKind::At(offset) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(dest)?;
            file.seek(SeekFrom::Start(offset))?;
            Ok(file)
        }
    }
}

fn inode(file: &std::fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.ino())
}

async fn receive_inner(
    body: Body,
    dest: &Path,
    limit: u64,
    expected: Option<u64>,
    into: BodyKind,
) -> Result<Received, ReceiveError> {
    if let Some(exp) = expected
        && fits_in_memory(expected, limit)
    {
        return receive_small(body, dest, exp, into).await;
    }
    // The network side and the disk side run on different threads, joined by a short queue of
    // the body's frames (hyper's own buffers, not copies) in runs of about RUN_BYTES: writing
    // one run overlaps receiving the next, the writer wakes once per run rather than once per
    // frame (frames are often a few KiB), and a slow disk holds the client back through the
    // queue instead of piling frames up in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(QUEUED_RUNS);
    let path = dest.to_owned();
    let writer = tokio::task::spawn_blocking(move || write_frames(&path, rx, into));
    let mut len = 0u64;
    let mut stream = body.into_data_stream();
    let received = async {
        let mut run: Vec<Bytes> = Vec::new();
        let mut run_bytes = 0usize;
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(|e| ReceiveError::Client(e.to_string()))?;
            len += frame.len() as u64;
            if len > limit {
                return Err(ReceiveError::TooLarge { limit });
            }
            if let Some(exp) = expected
                && len > exp
            {
                return Err(ReceiveError::Length {
                    expected: exp,
                    got: len,
                });
            }
            run_bytes += frame.len();
            run.push(frame);
            if run_bytes >= RUN_BYTES {
                run_bytes = 0;
                if tx.send(std::mem::take(&mut run)).await.is_err() {
                    // The writer stopped: its error is the one to report.
                    return Ok(());
                }
            }
        }
        if !run.is_empty() {
            let _ = tx.send(run).await;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ReceiveError::Disk(std::io::Error::other(format!("writer task: {e}"))))?;
    received?;
    let ino = written.map_err(ReceiveError::Disk)?;
    if let Some(exp) = expected
        && len != exp
    {
        return Err(ReceiveError::Length {
            expected: exp,
            got: len,
        });
    }
    Ok(Received { len, ino })
}

/// Bodies announced at this size or less are gathered in memory and written in one go: a
/// writer thread per request costs more than it saves for a few kilobytes.
const IN_MEMORY: u64 = 256 * 1024;

/// Whether a body announced as `expected` bytes (under a PUT limit of `limit`) is gathered in
/// memory (see [`receive_in_memory`]) rather than streamed to disk.
pub fn fits_in_memory(expected: Option<u64>, limit: u64) -> bool {
    expected.is_some_and(|exp| exp <= IN_MEMORY.min(limit))
}

/// Gathers a small body of exactly `expected` bytes in memory (see [`fits_in_memory`]); the
/// caller writes it where it goes.
pub async fn receive_in_memory(body: Body, expected: u64) -> Result<Vec<u8>, ReceiveError> {
    let mut bytes = Vec::with_capacity(expected as usize);
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| ReceiveError::Client(e.to_string()))?;
        if (bytes.len() + frame.len()) as u64 > expected {
            return Err(ReceiveError::Length {
                expected,
                got: (bytes.len() + frame.len()) as u64,
            });
        }
        bytes.extend_from_slice(&frame);
    }
    let len = bytes.len() as u64;
    if len != expected {
        return Err(ReceiveError::Length { expected, got: len });
    }
    Ok(bytes)
}

async fn receive_small(
    body: Body,
    dest: &Path,
    expected: u64,
    into: BodyKind,
) -> Result<Received, ReceiveError> {
    let bytes = receive_in_memory(body, expected).await?;
    let len = bytes.len() as u64;
    let path = dest.to_owned();
    let ino = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = open_sink(&path, into)?;
        file.write_all(&bytes)?;
        inode(&file)
    })
    .await
    .map_err(|e| ReceiveError::Disk(std::io::Error::other(format!("writer task: {e}"))))?
    .map_err(ReceiveError::Disk)?;
    Ok(Received { len, ino })
}

/// Bytes of frames handed to the writer at once, and how many such runs may wait for it.
const RUN_BYTES: usize = 1 << 20;
const QUEUED_RUNS: usize = 4;

/// The disk side of [`receive_inner`]: writes the frames as they come.
fn write_frames(
    dest: &Path,
    mut runs: tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    into: BodyKind,
) -> std::io::Result<u64> {
    let mut file = open_sink(dest, into)?;
    // Where the body starts in the file, for the bodies that stay where they are written. A
    // chunk kept apart is copied into its file at COMPLETE and removed: putting it on the
    // disk first would only cost the disk time.
    let base = match into {
        BodyKind::File => Some(0),
        BodyKind::At(offset) => Some(offset),
        BodyKind::Chunk => None,
    };
    let mut written = 0u64;
    let mut kicked = 0u64; // bytes handed to write-back so far
    while let Some(run) = runs.blocking_recv() {
        write_pieces(&mut file, &run)?;
        written += run.iter().map(|b| b.len() as u64).sum::<u64>();
        if let Some(base) = base
            && written - kicked >= WRITE_BACK_STEP
        {
            start_write_back(&file, base + kicked, written - kicked);
            kicked = written;
        }
    }
    // No fsync: a crash of the emulator process loses nothing once the data is written; only
    // a power loss could, and the client re-uploads what HEAD does not show.
    inode(&file)
}

/// Writes the frames in pieces of at most [`WRITE_PIECE`] bytes: a frame of a large body (hyper
/// reads a few hundred KiB at a time) is then one `write()`, not several, while no single call
/// grows to the megabyte writes that ran slower into this host's page cache than smaller
/// ones (see bench/RESULTS.md), so neither a large buffer nor one `writev` of many frames is
/// used.
fn write_pieces(file: &mut std::fs::File, bufs: &[Bytes]) -> std::io::Result<()> {
    use std::io::Write;
    for buf in bufs {
        for piece in buf.chunks(WRITE_PIECE) {
            file.write_all(piece)?;
        }
    }
    Ok(())
}

/// How much of a body is written before the kernel is asked to start writing it to disk.
const WRITE_BACK_STEP: u64 = 8 << 20;

/// Starts write-back of a just-written range without waiting for it: a large upload then
/// reaches the disk while it is still arriving, instead of all at once at the next `sync` (or
/// when the kernel's dirty-page limit stalls every writer). Durability is not promised by it:
/// see the note on fsync in [`write_frames`].
#[cfg(target_os = "linux")]
fn start_write_back(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; it reads no memory of ours.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    // Only a hint: a failure here changes when the bytes reach the disk, not whether they do.
    let _ = rc;
}

#[cfg(not(target_os = "linux"))]
fn start_write_back(_file: &std::fs::File, _offset: u64, _len: u64) {}

const WRITE_PIECE: usize = 512 * 1024;

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Ok((0, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9"), Ok((5, 9, None)));
        assert_eq!(parse_content_range("bytes 5-9/*"), Ok((5, 9, None)));
        assert_eq!(parse_content_range("bytes=0-0/1"), Ok((0, 0, Some(1))));
        for bad in [
            "",
            "bytes",
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bits 0-1/2",
            "bytes -1/2",
            "bytes 0-1/-2",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_written_in_place_land_at_their_offset_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("data");
        std::fs::write(&dest, vec![b'.'; 100]).unwrap();
        // Frames below, at and above WRITE_PIECE, in runs as the receiver hands them over.
        let frames: Vec<Bytes> = [7, WRITE_PIECE, WRITE_PIECE + 3, 2 * WRITE_PIECE + 1, 1]
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                Bytes::from(
                    (0..len)
                        .map(|j| (i * 31 + j % 251) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_RUNS);
        tx.try_send(frames[..2].to_vec()).unwrap();
        tx.try_send(frames[2..].to_vec()).unwrap();
        drop(tx);
        write_frames(&dest, rx, BodyKind::At(40)).unwrap();

        let mut expected = vec![b'.'; 40];
        for frame in &frames {
            expected.extend_from_slice(frame);
        }
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "the file differs from the frames written at offset 40"
        );
    }

    #[test]
    fn file_path_rules() {
        for ok in [
            "a.json",
            "date=2026-11-29/orders.json",
            "a b/ç.csv",
            &"x".repeat(255),
        ] {
            assert!(validate_file_path(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "..",
            "a/../b",
            ".",
            "a\0b",
            "a\nb",
            "a\\b",
            &"x".repeat(256),
        ] {
            assert!(validate_file_path(bad).is_err(), "{bad:?}");
        }
    }
}
