//! The store's vocabulary: the rows it returns, the values it takes, the states of files and
//! batches. Plain data: no SQL is run here.

use std::path::{Path, PathBuf};

use sqlx::FromRow;

#[cfg(doc)]
use super::Store; // named in doc links only
use super::{BatchOutcome, BatchPhase, BatchState, FileState, Predecessors};
use crate::format::Format;

#[derive(Debug, Clone, FromRow)]
pub struct FileRow {
    pub id: i64,
    pub watch: String,
    pub dataset: String,
    pub format: Format,
    pub multiline_json: bool,
    pub root: String,
    pub rel_path: String,
    pub dev: i64,
    pub ino: i64,
    pub size: i64,
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub state: FileState,
    pub batch_id: Option<i64>,
    pub uploaded_bytes: i64,
    pub sent: bool,
    pub duplicate_of: Option<i64>,
    /// The batches a `.replay` sidecar (or `push --replaces`) asked this file to replace.
    #[sqlx(rename = "replay_json")]
    pub replay: Option<Predecessors>,
    pub sidecar: Option<String>,
    pub reason: Option<String>,
    pub final_path: Option<String>,
    pub finalized: bool,
    pub discovered_at: i64,
    pub updated_at: i64,
    pub raw_path: Option<Vec<u8>>,
    /// Another file whose outcome this ready file waits for (see [`Sealed::waiting`]).
    pub waits_for: Option<i64>,
    /// The file's own record count, when the platform gave one (Data Access, after success).
    pub records: Option<i64>,
    /// Where the archiver wrote its receipt, once it did.
    pub receipt_path: Option<String>,
}

impl FileRow {
    /// The identity the watcher recorded when it took the file.
    pub fn identity(&self) -> crate::disk::Identity {
        crate::disk::Identity {
            dev: self.dev as u64,
            ino: self.ino as u64,
            size: self.size as u64,
            mtime_ns: self.mtime_ns,
        }
    }

    pub fn abs_path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        match &self.raw_path {
            Some(raw) => PathBuf::from(std::ffi::OsStr::from_bytes(raw)),
            None => Path::new(&self.root).join(&self.rel_path),
        }
    }
}

/// A batch as the store holds it; its phase carries what each state knows.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub id: i64,
    /// The idempotency key, chosen when the batch was sealed, before create-batch.
    pub external_id: String,
    pub phase: BatchPhase,
    pub watch: String,
    pub dataset: String,
    /// The sandbox it was created in, which every call about it must name (`None`: sealed by
    /// a batchdrop that did not record it, so the `[platform]` sandbox).
    pub sandbox: Option<String>,
    pub format: Format,
    pub multiline_json: bool,
    /// The batches this one replaces once it succeeds.
    pub replay: Option<Predecessors>,
    /// Consecutive transient failures.
    pub attempts: i64,
    /// Unix ms: when it is due again.
    pub next_attempt_at: i64,
    pub first_error_at: Option<i64>,
    pub last_error: Option<String>,
    /// The Catalog's final view, once it ended.
    pub outcome: Option<BatchOutcome>,
    /// The platform id of the replay batch that replaced this one.
    pub replaced_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl BatchRow {
    pub fn state(&self) -> BatchState {
        self.phase.state()
    }

    /// The platform's id of the batch, once it created it.
    pub fn remote_id(&self) -> Option<&str> {
        self.phase.remote_id()
    }

    /// The name operators see: the platform's id once known, else the local one.
    pub fn label(&self) -> String {
        match self.remote_id() {
            Some(id) => id.to_owned(),
            None => format!("local batch #{}", self.id),
        }
    }
}

/// The `batches` row as it is stored, before its state and remote id become a phase.
#[derive(FromRow)]
struct BatchRecord {
    id: i64,
    external_id: String,
    remote_id: Option<String>,
    watch: String,
    dataset: String,
    sandbox: Option<String>,
    format: Format,
    multiline_json: bool,
    replay_json: Option<Predecessors>,
    state: BatchState,
    attempts: i64,
    next_attempt_at: i64,
    first_error_at: Option<i64>,
    last_error: Option<String>,
    outcome_json: Option<BatchOutcome>,
    replaced_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl<'r, R: sqlx::Row> FromRow<'r, R> for BatchRow
where
    BatchRecord: FromRow<'r, R>,
{
    fn from_row(row: &'r R) -> Result<BatchRow, sqlx::Error> {
        let r = BatchRecord::from_row(row)?;
        let phase = BatchPhase::of(r.state, r.remote_id)
            .map_err(|message| sqlx::Error::Decode(format!("batch #{}: {message}", r.id).into()))?;
        Ok(BatchRow {
            id: r.id,
            external_id: r.external_id,
            phase,
            watch: r.watch,
            dataset: r.dataset,
            sandbox: r.sandbox,
            format: r.format,
            multiline_json: r.multiline_json,
            replay: r.replay_json,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            first_error_at: r.first_error_at,
            last_error: r.last_error,
            outcome: r.outcome_json,
            replaced_by: r.replaced_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Whether a batch may carry content already in its dataset (or on its way there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// The default: one copy of any content per dataset (see [`Store::seal_batch`]).
    OneCopy,
    /// `allow_duplicates = true`: every file is sealed as it is.
    AllowDuplicates,
}

/// A batch to seal: the columns it takes from its files' watch ([`Store::seal_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a> {
    pub watch: &'a str,
    pub dataset: &'a str,
    /// The watch's sandbox: the batch is created, followed and changed in it.
    pub sandbox: &'a str,
    pub format: Format,
    pub multiline_json: bool,
    /// What its one file replaces (a replay travels alone).
    pub replay: Option<&'a Predecessors>,
}

/// What [`Store::seal_batch`] did with the files it was given. Every file given is in exactly
/// one of these lists (or was no longer ready).
#[derive(Debug, Default)]
pub struct Sealed {
    /// The new batch, when a file went into it.
    pub batch_id: Option<i64>,
    /// The files sealed into it.
    pub files: Vec<i64>,
    /// Files whose content the dataset already holds, now `duplicate` of the file whose batch
    /// ingested it.
    pub duplicates: Vec<LeftOut>,
    /// Files left ready, out of the batcher's way until the file they wait for is out of
    /// flight ([`Store::release_waiting`]). It carries the same content, or has the same size
    /// and a content not known yet. Once released, a file whose content went in becomes a
    /// duplicate of it; otherwise it is sealed after all.
    pub waiting: Vec<LeftOut>,
    /// Files left ready because another file of their size is in the dataset (or arrived with
    /// them): they must be hashed before they can be sealed.
    pub to_hash: Vec<i64>,
}

/// Content a dataset holds or is about to hold, as [`Store::carried`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The file that carries it (or, while `ingested` is false, may: a file in flight of the
    /// same size whose content is not known yet).
    pub file: String,
    /// In a successful batch (else on its way).
    pub ingested: bool,
    /// That batch's platform id.
    pub batch: Option<String>,
}

/// A file left out of a batch because of another one (see [`Sealed`]).
#[derive(Debug, Clone)]
pub struct LeftOut {
    pub file: i64,
    /// The file that carries (or may carry) the same content.
    pub carrier: i64,
    pub carrier_path: String,
}

/// A dataset the platform said does not exist (or is not visible in the configured sandbox):
/// its watches take no new batch and its batches wait, until a check finds it again.
#[derive(Debug, Clone, FromRow)]
pub struct BlockedDataset {
    pub dataset: String,
    /// The watch whose batch found it missing.
    pub watch: String,
    /// The platform's refusal.
    pub reason: String,
    /// Unix ms.
    pub since: i64,
    /// Checks since then that found it still missing.
    pub checks: i64,
    /// Unix ms.
    pub next_check_at: i64,
}

/// A file that became ready in a drop folder.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub watch: String,
    pub dataset: String,
    pub format: Format,
    pub multiline_json: bool,
    pub root: String,
    pub rel_path: String,
    pub dev: i64,
    pub ino: i64,
    pub size: i64,
    pub mtime_ns: i64,
    /// The absolute path's bytes when the name is not valid UTF-8.
    pub raw_path: Option<Vec<u8>>,
}

/// The replay a `.replay` sidecar asks for, resolved to the platform's batch ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// The platform ids of the batches to replace.
    pub predecessors: Predecessors,
    /// `replay.reason` sent to the platform.
    pub reason: String,
    /// The sidecar's path below the watch root (`None` for `batchdrop push --replaces`).
    pub sidecar: Option<String>,
}

/// One in-flight batch with the upload progress of its files (`batchdrop status`, `push`).
#[derive(Debug, Clone, FromRow)]
pub struct BatchProgress {
    pub id: i64,
    pub files: i64,
    pub files_uploaded: i64,
    pub files_failed: i64,
    pub bytes: i64,
    pub bytes_uploaded: i64,
}

/// A file's transfer acknowledged by the platform, as the uploader reports it for recording.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub file_id: i64,
    /// SHA-256 of the bytes sent; `None` while the hasher behind the read is still at it
    /// (recorded by `Store::record_hash` before the batch's outcome is taken).
    pub sha256: Option<String>,
    pub size: i64,
    /// The file's row already holds this same `sha256` (the batcher hashed it before sealing):
    /// it is not written again, which would rewrite the file's entry in the hash index for
    /// nothing.
    pub hash_stored: bool,
}

/// A file's end, as the archiver reports it for recording.
#[derive(Debug, Clone)]
pub struct Finalized {
    pub file_id: i64,
    /// `Done`, `Failed` or `Duplicate`.
    pub state: FileState,
    /// Where it was moved, if it was.
    pub final_path: Option<String>,
    /// The event's text (status and receipt path).
    pub detail: String,
    /// Where its receipt was written, if one was.
    pub receipt: Option<String>,
}

/// What `record_ready` did with a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    New(i64),
    /// The same version is already queued, in flight or finished.
    Known,
    /// An older version of the same path is being uploaded or processed: this one is not
    /// recorded yet. Ask again later; it is taken once the older one is finished (or
    /// superseded because it changed).
    Deferred,
}

#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    pub at: i64,
    pub file_id: Option<i64>,
    pub batch_id: Option<i64>,
    pub kind: String,
    pub detail: Option<String>,
}

/// What became of a failed batch offered for bisection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Its files travel again in these new batches.
    Into(Vec<i64>),
    /// The cap on extra batches would be passed: nothing changed.
    OverCap { spent: i64 },
    /// The batch was no longer in flight (aborted meanwhile): nothing changed.
    NotInFlight,
}

/// A row the mapping or the schema rejected, as the receipt lists it (keys in alphabetical
/// order, as the receipt's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RejectedRow {
    /// Its line in the dropped file, where the format has lines (CSV, JSON Lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub reasons: Vec<String>,
    /// 1-based record number in the dropped file.
    pub row: u64,
}

/// The record of one staged file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub file_id: i64,
    /// The staged file (absolute).
    pub path: String,
    /// The name it is uploaded under.
    pub name: String,
    pub format: Format,
    /// The staged file's identity as it was written.
    pub identity: crate::disk::Identity,
    pub sha256: String,
    /// The dropped file's SHA-256, of the bytes that were mapped.
    pub original_sha256: String,
    /// What the dropped file was read as.
    pub original_format: Format,
    pub mapping_path: String,
    pub mapping_sha256: String,
    pub records_in: i64,
    pub records_out: i64,
    /// Rows rejected (all of them; `rejected_rows` keeps the first).
    pub rejected: i64,
    pub rejected_rows: Vec<RejectedRow>,
}

/// One watch's budget as the daemon settled it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WatchBudget {
    pub watch: String,
    pub dataset: String,
    /// `None`: no budget (unlimited).
    pub max_batches_per_day: Option<i64>,
    /// 1 when the Catalog tags the dataset Profile-enabled (the default of 90 comes from it).
    pub profile: i64,
}
