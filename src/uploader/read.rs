//! A file's bytes on their way to the platform: read by one blocking task, ahead of the
//! network, in pieces that never straddle a chunk, hashed by a second blocking task that
//! follows the read without holding it back, and dropped from the page cache behind both; and
//! the request bodies made of them.
//!
//! This module must not talk to the platform or the store: it only reads.

use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::api::Body;
use crate::crashpoint;
use crate::disk;

/// A file's bytes from `offset` to `end`, read by one blocking task in pieces that never
/// straddle a multiple of `chunk` from `offset`, so that each chunk's body is whole pieces (see
/// [`body_of`]). Reading runs up to [`READ_AHEAD`] pieces ahead of the network, across chunks:
/// the next chunk's first pieces are ready while the platform answers the previous one.
///
/// With [`HashBy::Reading`] a second blocking task adds the bytes from `from` on to the hash of
/// the bytes before (see [`hash_behind`]). Hashing costs several times the read's copy: a
/// hasher that held the reader back would set the pace of the whole upload (on two cores, the
/// bytes of a 2 GiB file reached the platform a third later). So the reader hands the hasher
/// the pieces it has room for and goes on; the hasher reads what it missed again, from the
/// page cache, where it is kept until hashed. The file's identity, checked after the transfer,
/// says the bytes read twice are the bytes sent, as it does for a hash computed while the file
/// settled. With [`HashBy::Known`] (that hash) the pieces are only sent.
///
/// What has been read, and hashed, of a large file leaves the page cache
/// ([`disk::drop_cached`]).
pub(super) fn read_ahead(
    file: std::fs::File,
    offset: u64,
    end: u64,
    chunk: u64,
    hash_by: HashBy,
) -> std::io::Result<(Pieces, Hashing)> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(READ_AHEAD);
    let hashing = match hash_by {
        HashBy::Reading { state, from } => {
            let (send, to_hash) = std::sync::mpsc::sync_channel::<ToHash>(HASH_AHEAD);
            // A descriptor of its own to read what it missed (`read_at` moves no offset the
            // reader's shares).
            let own = file.try_clone()?;
            let given_up = Arc::new(AtomicBool::new(false));
            let behind = Behind {
                file: own,
                from,
                end,
                drop: DropBehind::new(offset, end),
                given_up: given_up.clone(),
            };
            let hashing = tokio::task::spawn_blocking(move || hash_behind(behind, state, to_hash));
            // The hasher's answer says whether every byte was read (only then is it sent
            // `End`), so the reader's own answer is not needed here.
            drop(spawn_reader(
                file,
                offset,
                end,
                chunk,
                tx,
                Reader::Hashed(ToHasher { send, from }),
            ));
            Hashing::Reading(HashTask { hashing, given_up })
        }
        HashBy::Known(sha256) => Hashing::Known {
            sha256,
            reading: spawn_reader(file, offset, end, chunk, tx, Reader::Alone),
        },
    };
    Ok((Arc::new(tokio::sync::Mutex::new(rx)), hashing))
}

/// Who else the reader hands its pieces to, and so who drops them from the page cache.
enum Reader {
    /// The hasher: it drops what it has hashed, and it is never ahead of the reader.
    Hashed(ToHasher),
    /// No one: the reader drops what it has read.
    Alone,
}

/// The bytes of a large range that whoever reads it last has passed, dropped from the page
/// cache in spans of [`DROP_BEHIND`]; a small range is not worth the system calls.
struct DropBehind {
    dropped_to: u64,
    end: u64,
    large: bool,
}

impl DropBehind {
    fn new(offset: u64, end: u64) -> DropBehind {
        DropBehind {
            dropped_to: offset,
            end,
            large: end - offset >= DROP_BEHIND,
        }
    }

    /// Everything before `at` has been read for the last time.
    fn passed(&mut self, file: &std::fs::File, at: u64) {
        if self.large && (at - self.dropped_to >= DROP_BEHIND || at == self.end) {
            disk::drop_cached(file, self.dropped_to, at);
            self.dropped_to = at;
        }
    }
}

/// Where the reader hands its pieces to be hashed: the bytes from `from` on (the ones before
/// are in the hash already). A piece finding the hasher's queue full is not handed over: the
/// hasher reads it itself.
struct ToHasher {
    send: std::sync::mpsc::SyncSender<ToHash>,
    from: u64,
}

/// Reads `file` from `offset` to `end` on a blocking thread, as [`read_ahead`] says, into
/// `tx` (and to the hasher first, if any); answers whether it read every byte up to the end.
fn spawn_reader(
    file: std::fs::File,
    offset: u64,
    end: u64,
    chunk: u64,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    reader: Reader,
) -> tokio::task::JoinHandle<bool> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        use std::sync::mpsc::TrySendError;
        let mut file = file;
        // Pieces come back here once both the network and the hasher dropped them, to be read
        // into again: a fresh 1 MiB buffer per piece is page-faulted and zeroed by the kernel
        // each time, and the memory in use stays the few pieces read ahead, being hashed, and
        // held by the connection.
        let (returned, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let read = (|| {
            file.seek(SeekFrom::Start(offset))?;
            let mut at = offset;
            let mut drop = DropBehind::new(offset, end);
            while at < end {
                let to_chunk_end = chunk - (at - offset) % chunk;
                let want = READ_PIECE.min(end - at).min(to_chunk_end);
                let mut buf = spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(READ_PIECE as usize));
                buf.clear();
                // `read_to_end` reads into the spare capacity without zeroing it first.
                (&mut file).take(want).read_to_end(&mut buf)?;
                if (buf.len() as u64) < want {
                    // A file cut short: the body ends short of its announced length.
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                let starts = at;
                at += want;
                if let Reader::Alone = reader {
                    drop.passed(&file, at);
                }
                let piece = bytes::Bytes::from_owner(Piece {
                    buf,
                    back: returned.clone(),
                });
                if let Reader::Hashed(ToHasher { send, from }) = &reader
                    && at > *from
                    && let Err(TrySendError::Disconnected(_)) = send.try_send(ToHash::Piece {
                        at: starts,
                        bytes: piece.clone(),
                    })
                {
                    return Ok(false); // the upload was given up
                }
                if tx.blocking_send(Ok(piece)).is_err() {
                    return Ok(false); // the upload was given up
                }
            }
            if let Reader::Hashed(ToHasher { send, .. }) = &reader {
                let _ = send.send(ToHash::End);
            }
            Ok(true)
        })();
        match read {
            Ok(read_all) => read_all,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                false
            }
        }
    })
}

/// What the hasher of [`read_ahead`] works on: the bytes from `from` to `end` of `file` (its
/// own descriptor), dropped from the page cache behind it; until `given_up`.
struct Behind {
    file: std::fs::File,
    from: u64,
    end: u64,
    drop: DropBehind,
    given_up: Arc<AtomicBool>,
}

/// Adds the bytes from `from` to `end` to `state`, in order: each piece handed over, after the
/// bytes before it that were not (read again from the file); on `End`, the bytes after the
/// last piece. Drops from the page cache, as it goes, the large file's bytes it has passed
/// (the reader is ahead). An error when the reader stopped short of the end (a read error, a
/// file cut short, an upload given up) or a byte could not be read again.
fn hash_behind(
    behind: Behind,
    mut state: Sha256,
    to_hash: std::sync::mpsc::Receiver<ToHash>,
) -> std::io::Result<Sha256> {
    let Behind {
        file,
        from,
        end,
        mut drop,
        given_up,
    } = behind;
    let mut hashed = from;
    let mut hash_to = |to: u64, state: &mut Sha256, hashed: &mut u64| -> std::io::Result<()> {
        loop {
            drop.passed(&file, *hashed);
            if *hashed >= to {
                return Ok(());
            }
            // What it missed may be most of a large file: read again a span at a time, and
            // not for an upload that no longer wants the hash (it failed, and may be retried
            // with a hasher of its own).
            if given_up.load(Ordering::Relaxed) {
                return Err(std::io::Error::other(
                    "the upload no longer wants this hash",
                ));
            }
            let span_end = to.min(*hashed + DROP_BEHIND);
            disk::hash_range(&file, *hashed, span_end, state)?;
            *hashed = span_end;
        }
    };
    for message in to_hash {
        match message {
            ToHash::Piece { at, bytes } => {
                hash_to(at, &mut state, &mut hashed)?;
                let piece_end = at + bytes.len() as u64;
                if piece_end > hashed {
                    state.update(&bytes[(hashed - at) as usize..]);
                    hashed = piece_end;
                }
                hash_to(hashed, &mut state, &mut hashed)?;
            }
            ToHash::End => {
                hash_to(end, &mut state, &mut hashed)?;
                return Ok(state);
            }
        }
    }
    Err(stopped_short())
}

fn stopped_short() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the file's read stopped before its end, so its hash is not known",
    )
}

/// The hasher's task; dropped unfinished (its upload failed or was given up), it tells the
/// hasher to stop reading.
pub(super) struct HashTask {
    hashing: tokio::task::JoinHandle<std::io::Result<Sha256>>,
    given_up: Arc<AtomicBool>,
}

impl Drop for HashTask {
    fn drop(&mut self) {
        self.given_up.store(true, Ordering::Relaxed);
    }
}

/// Where the SHA-256 of the bytes [`read_ahead`] reads comes from.
pub(super) enum HashBy {
    /// A second blocking task hashes the bytes read from `from` on (at least the offset),
    /// after `state`, the hash of the bytes before `from`.
    Reading { state: Sha256, from: u64 },
    /// The hash of the whole file, computed while it settled (`crate::early_hash`) for exactly
    /// the version being read: the pieces are only sent.
    Known(String),
}

/// What the reader hands the hasher: a piece and where it starts, or the word that every byte
/// was read.
enum ToHash {
    Piece { at: u64, bytes: bytes::Bytes },
    End,
}

/// The SHA-256 of the file [`read_ahead`] reads, being computed.
pub(super) enum Hashing {
    /// From the pieces read (after the prefix), and the bytes read again.
    Reading(HashTask),
    /// Known before the read, which tells whether it read every byte up to the end.
    Known {
        sha256: String,
        reading: tokio::task::JoinHandle<bool>,
    },
}

impl Hashing {
    /// The hex SHA-256 once every byte up to the end was read and hashed; an error when the
    /// read stopped before (a read error or a file cut short, which also fail its body).
    pub(super) async fn finish(self) -> std::io::Result<String> {
        match self {
            Hashing::Reading(mut task) => (&mut task.hashing)
                .await
                .expect("hashing task panicked")
                .map(|hasher| format!("{:x}", hasher.finalize())),
            Hashing::Known { sha256, reading } => {
                if reading.await.expect("reading task panicked") {
                    Ok(sha256)
                } else {
                    Err(stopped_short())
                }
            }
        }
    }
}

/// A file opened for its upload (see [`open_for_upload`]), and its content when it was read
/// in the same trip.
pub(super) struct ForUpload {
    pub opened: disk::Opened,
    /// The whole file and its SHA-256 (or why it could not be read), when it was small and is
    /// the version queued.
    pub content: Option<std::io::Result<(bytes::Bytes, String)>>,
}

/// Opens `path` below `root` (see [`disk::open_below`]) and, when `read_whole` and it is the
/// `recorded` version, reads and hashes it whole, one byte beyond `recorded.size` at most (a
/// file that grew is a change, not a shorter body): a small file's open, read and hash are one
/// trip to the blocking pool, not one each. Blocking: call it on a blocking thread.
pub(super) fn open_for_upload(
    root: &std::path::Path,
    path: &std::path::Path,
    recorded: disk::Identity,
    read_whole: bool,
) -> std::io::Result<ForUpload> {
    let opened = disk::open_below(root, path, disk::Links::Anywhere)?;
    let wanted = opened.stat.kind == disk::Kind::File && opened.stat.identity == recorded;
    let content = (read_whole && wanted).then(|| {
        disk::read_capped(&opened.file, recorded.size).map(|bytes| {
            let sha = format!("{:x}", Sha256::digest(&bytes));
            (bytes::Bytes::from(bytes), sha)
        })
    });
    Ok(ForUpload { opened, content })
}

/// The pieces of a file read by [`read_ahead`], shared by the bodies of its chunks in turn.
pub(super) type Pieces =
    Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>>>;

/// A request body of the next `len` bytes of `pieces`.
pub(super) fn body_of(pieces: Pieces, len: u64) -> Body {
    let stream = futures::stream::unfold((pieces, len), |(pieces, left)| async move {
        if left == 0 {
            return None;
        }
        let piece = pieces.lock().await.recv().await?;
        let left = match &piece {
            Ok(p) => {
                crashpoint::hit("mid-body");
                left.saturating_sub(p.len() as u64)
            }
            Err(_) => 0, // the body fails with it
        };
        Some((piece, (pieces, left)))
    });
    Body::stream(stream)
}

/// A piece of a body being sent; its buffer goes back to the reader when the piece is dropped.
struct Piece {
    buf: Vec<u8>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        // The reader may be gone (its body ended): the buffer is then simply freed.
        let _ = self.back.send(std::mem::take(&mut self.buf));
    }
}

/// Pieces of 1 MiB: with 256 KiB ones the hand-offs between the reader thread and the
/// sender cost a 2 GiB upload 10% more daemon CPU (perf: task switches and wake-ups).
const READ_PIECE: u64 = 1 << 20;
const READ_AHEAD: usize = 4;
/// Pieces queued for the hasher; the ones that find the queue full it reads again itself.
const HASH_AHEAD: usize = 4;
/// Files (or what is left of them) this large leave the page cache as they are read, in
/// spans of this size (see [`disk::drop_cached`]); smaller ones are not worth a system call.
const DROP_BEHIND: u64 = 8 << 20;

/// A body of bytes already in memory, handed over in the pieces a streamed body would have
/// (so that a crash in the middle of a body means the same for both).
pub(super) fn memory_body(bytes: bytes::Bytes) -> Body {
    const PIECE: usize = 256 * 1024;
    let pieces: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(PIECE)
        .map(|at| bytes.slice(at..(at + PIECE).min(bytes.len())))
        .collect();
    let stream = futures::stream::iter(pieces).map(|piece| {
        crashpoint::hit("mid-body");
        Ok::<_, std::io::Error>(piece)
    });
    Body::stream(stream)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// 20 MiB of bytes that differ from piece to piece, written to disk and read back once,
    /// so that all its pages are cached and clean.
    fn cached_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
        let path = dir.join("big.json");
        std::fs::write(&path, &data).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        (path, data)
    }

    /// `path` read from `offset` to `end` in chunks of `chunk`, and hashed from `offset`.
    fn read_hashed(path: &Path, offset: u64, end: u64, chunk: u64) -> (Pieces, Hashing) {
        let file = std::fs::File::open(path).unwrap();
        let hash_by = HashBy::Reading {
            state: Sha256::new(),
            from: offset,
        };
        read_ahead(file, offset, end, chunk, hash_by).unwrap()
    }

    async fn read_all(path: &Path, offset: u64, chunk: u64) -> (Vec<bytes::Bytes>, String) {
        let end = std::fs::metadata(path).unwrap().len();
        let (pieces, hashing) = read_hashed(path, offset, end, chunk);
        let mut got = Vec::new();
        while let Some(piece) = pieces.lock().await.recv().await {
            got.push(piece.unwrap());
        }
        (got, hashing.finish().await.unwrap())
    }

    #[tokio::test]
    async fn read_ahead_gives_every_byte_from_the_offset_in_pieces_within_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let (offset, chunk) = (3u64 << 20, (5u64 << 20) + 12345);
        let (pieces, sha) = read_all(&path, offset, chunk).await;

        let mut at = offset;
        for p in &pieces {
            let next = at + p.len() as u64;
            assert!(
                (next - offset).div_ceil(chunk) == (at - offset) / chunk + 1,
                "the piece {at}..{next} straddles a chunk boundary"
            );
            assert_eq!(&p[..], &data[at as usize..next as usize]);
            at = next;
        }
        assert_eq!(at, data.len() as u64);
        assert_eq!(
            sha,
            format!("{:x}", Sha256::digest(&data[offset as usize..]))
        );
    }

    #[tokio::test]
    async fn a_resumed_read_of_many_chunks_hashes_to_the_whole_files_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let offset = (2u64 << 20) + 777;
        let file = std::fs::File::open(&path).unwrap();
        let mut prefix = Sha256::new();
        disk::hash_into(&file, offset, &mut prefix).unwrap();
        let (pieces, hashing) = read_ahead(
            file,
            offset,
            data.len() as u64,
            3 << 20,
            HashBy::Reading {
                state: prefix,
                from: offset,
            },
        )
        .unwrap();
        // Each piece is dropped once checked, so its buffer is read into again while the
        // hasher may still be behind: a buffer reused too early would change the hash.
        let mut at = offset as usize;
        while let Some(piece) = pieces.lock().await.recv().await {
            let piece = piece.unwrap();
            assert_eq!(&piece[..], &data[at..at + piece.len()]);
            at += piece.len();
        }
        assert_eq!(at, data.len());
        assert_eq!(
            hashing.finish().await.unwrap(),
            format!("{:x}", Sha256::digest(&data))
        );
    }

    #[tokio::test]
    async fn a_hash_handed_over_mid_piece_goes_on_from_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        // The early hash stopped inside the third piece; the upload reads from the start.
        let from = (2u64 << 20) + 4321;
        let mut state = Sha256::new();
        state.update(&data[..from as usize]);
        let file = std::fs::File::open(&path).unwrap();
        let (pieces, hashing) = read_ahead(
            file,
            0,
            data.len() as u64,
            8 << 20,
            HashBy::Reading { state, from },
        )
        .unwrap();
        let mut got = Vec::new();
        while let Some(piece) = pieces.lock().await.recv().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, data, "every byte is sent, hashed or not");
        assert_eq!(
            hashing.finish().await.unwrap(),
            format!("{:x}", Sha256::digest(&data)),
            "the bytes before the hand-over are not hashed twice, the others once"
        );
    }

    #[tokio::test]
    async fn a_hasher_that_falls_behind_holds_no_piece_back_and_reads_what_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let file = std::fs::File::open(&path).unwrap();
        let hashers_own = file.try_clone().unwrap();
        let end = data.len() as u64;
        // A hasher that takes nothing until the upload has every piece: its queue fills after
        // HASH_AHEAD of the 20 pieces.
        let (send, to_hash) = std::sync::mpsc::sync_channel::<ToHash>(HASH_AHEAD);
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let reading = spawn_reader(
            file,
            0,
            end,
            8 << 20,
            tx,
            Reader::Hashed(ToHasher { send, from: 0 }),
        );
        let mut sent = Vec::new();
        // Up to the last byte (the reader then waits to hand the hasher its `End`).
        let every_piece = async {
            while (sent.len() as u64) < end {
                sent.extend_from_slice(&rx.recv().await.unwrap().unwrap());
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), every_piece)
            .await
            .expect("the reader waited for a hasher that took nothing");
        assert_eq!(sent, data);
        let hashing = tokio::task::spawn_blocking(move || {
            let behind = Behind {
                file: hashers_own,
                from: 0,
                end,
                drop: DropBehind::new(0, end),
                given_up: Arc::new(AtomicBool::new(false)),
            };
            hash_behind(behind, Sha256::new(), to_hash)
        });
        assert!(reading.await.unwrap(), "the reader read every byte");
        assert_eq!(
            format!("{:x}", hashing.await.unwrap().unwrap().finalize()),
            format!("{:x}", Sha256::digest(&data)),
            "the pieces it was not handed are read again, in their place"
        );
    }

    #[test]
    fn a_hasher_behind_an_upload_given_up_stops_reading_what_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let hash_all_it_missed = |given_up: bool| {
            let (send, to_hash) = std::sync::mpsc::sync_channel(1);
            send.send(ToHash::End).unwrap(); // the reader handed it nothing
            let behind = Behind {
                file: std::fs::File::open(&path).unwrap(),
                from: 0,
                end: data.len() as u64,
                drop: DropBehind::new(0, data.len() as u64),
                given_up: Arc::new(AtomicBool::new(given_up)),
            };
            hash_behind(behind, Sha256::new(), to_hash)
        };
        assert_eq!(
            format!("{:x}", hash_all_it_missed(false).unwrap().finalize()),
            format!("{:x}", Sha256::digest(&data))
        );
        assert!(hash_all_it_missed(true).is_err());
    }

    #[tokio::test]
    async fn a_known_hash_is_given_only_once_every_byte_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let known = "e".repeat(64);
        let read = |announced: u64| {
            let file = std::fs::File::open(&path).unwrap();
            read_ahead(file, 0, announced, 8 << 20, HashBy::Known(known.clone())).unwrap()
        };
        let (pieces, hashing) = read(data.len() as u64);
        while let Some(piece) = pieces.lock().await.recv().await {
            piece.unwrap();
        }
        assert_eq!(hashing.finish().await.unwrap(), known);
        // Cut short since it was hashed: no hash for a body that ended short.
        let (pieces, hashing) = read(data.len() as u64 + 1);
        while let Some(Ok(_)) = pieces.lock().await.recv().await {}
        assert!(hashing.finish().await.is_err());
    }

    #[tokio::test]
    async fn a_file_cut_short_ends_its_pieces_with_an_error_and_gives_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        // Announced 3 MiB longer than it is: a file truncated after it was recorded.
        let announced = data.len() as u64 + (3 << 20);
        let (pieces, hashing) = read_hashed(&path, 0, announced, 8 << 20);
        let mut sent = 0u64;
        let error = loop {
            match pieces.lock().await.recv().await {
                Some(Ok(piece)) => sent += piece.len() as u64,
                Some(Err(e)) => break e,
                None => panic!("the pieces ended after {sent} bytes without an error"),
            }
        };
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(sent, data.len() as u64);
        assert!(hashing.finish().await.is_err());
    }

    #[tokio::test]
    async fn a_read_given_up_ends_its_hasher_without_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = cached_file(dir.path());
        let (pieces, hashing) = read_hashed(&path, 0, data.len() as u64, 1 << 30);
        let first = pieces.lock().await.recv().await.unwrap().unwrap();
        assert_eq!(&first[..], &data[..first.len()]);
        drop(pieces); // the upload is given up after its first piece
        // Returns only once the hasher's thread has ended: the reader stopped and let it go.
        assert!(hashing.finish().await.is_err());
    }

    /// Pages of `path` in the page cache, counted with mincore(2) over a read-only mapping.
    #[cfg(target_os = "linux")]
    fn cached_pages(path: &Path, from: u64, to: u64) -> usize {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        // SAFETY: a shared read-only mapping of a file we hold open, unmapped before return;
        // mincore writes one byte per page into a vector of that many bytes.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut resident = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
            resident[from as usize / page..(to as usize).div_ceil(page)]
                .iter()
                .filter(|&&r| r & 1 == 1)
                .count()
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_large_file_leaves_the_page_cache_as_it_is_read_for_upload() {
        // Beside the test binary rather than in /tmp: a tmpfs /tmp (Fedora, Arch) keeps its
        // files in memory and can never drop them.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let (path, data) = cached_file(dir.path());
        let (offset, end) = (4u64 << 20, data.len() as u64);
        let before = cached_pages(&path, offset, end);
        assert!(before > 0, "the test file should start in the page cache");

        let (pieces, _) = read_all(&path, offset, 8 << 20).await;
        assert_eq!(
            pieces.iter().map(|p| p.len() as u64).sum::<u64>(),
            end - offset
        );
        // Not necessarily none: the kernel does not drop a page still held in another core's
        // LRU batch, and with large folios one such page is 2 MiB (512 pages of 4 KiB left,
        // seen once on a 2-core machine). A reader that dropped nothing leaves all 4,096, one
        // that dropped every other span half of them.
        let after = cached_pages(&path, offset, end);
        assert!(
            after <= before / 4,
            "{before} pages of the uploaded range were cached before; {after} still are after"
        );
    }
}
