//! The rows the store reads and writes, and the states they can be in. Types only: the SQL is
//! in the sibling modules.

/// A batch's status, as the Catalog shows it (stored as its lowercase name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum BatchStatus {
    /// Created; files are uploaded.
    Loading,
    /// Completed by the client; waiting for processing.
    Staging,
    Processing,
    Success,
    Failed,
    Aborted,
    /// Reverted (or replaced by a replay): hidden from Data Access; deleted when its time comes.
    Inactive,
    Deleted,
    /// Loading without activity for too long (`abandon_after_ms`).
    Abandoned,
    /// Waiting for the platform to start processing it (fault knob `queued_probability`).
    Queued,
    /// Processing hit a problem the platform retries on its own (`retrying_probability`);
    /// processing goes on afterwards.
    Retrying,
    /// All the platform's retries were exhausted (`stalled_probability`): it stays so.
    Stalled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Loading => "loading",
            BatchStatus::Staging => "staging",
            BatchStatus::Processing => "processing",
            BatchStatus::Success => "success",
            BatchStatus::Failed => "failed",
            BatchStatus::Aborted => "aborted",
            BatchStatus::Inactive => "inactive",
            BatchStatus::Deleted => "deleted",
            BatchStatus::Abandoned => "abandoned",
            BatchStatus::Queued => "queued",
            BatchStatus::Retrying => "retrying",
            BatchStatus::Stalled => "stalled",
        }
    }
}

impl std::fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a file arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum FileKind {
    /// One PUT of the whole file.
    Put,
    /// INITIALIZE, PATCH chunks, COMPLETE.
    Large,
}

/// Whether a file's bytes are all there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum FileState {
    /// A large file whose chunks are arriving.
    Uploading,
    Complete,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DatasetRow {
    pub id: String,
    pub name: String,
    pub schema_ref: Option<String>,
    pub tags: String,
    pub extra: String,
    pub ims_org: String,
    pub sandbox: String,
    pub created: i64,
    pub updated: i64,
    pub identity_field: Option<String>,
}

impl DatasetRow {
    /// The `schemaRef.id` it names, if any.
    pub fn schema_id(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.schema_ref.as_deref()?).ok()?;
        v.get("id")?.as_str().map(str::to_owned)
    }

    /// Tagged `unifiedProfile: ["enabled:true", "isUpsert:true"]`, spelled with or without the
    /// space after the colon (the docs and the spec's examples write `"isUpsert: true"`).
    pub fn is_upsert(&self) -> bool {
        let tags: serde_json::Value = serde_json::from_str(&self.tags).unwrap_or_default();
        tags.get("unifiedProfile")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| {
                a.iter().filter_map(serde_json::Value::as_str).any(|t| {
                    let t: String = t.chars().filter(|c| !c.is_whitespace()).collect();
                    t.eq_ignore_ascii_case("isUpsert:true")
                })
            })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: String,
    pub dataset_id: String,
    pub status: BatchStatus,
    pub input_format: String,
    pub external_id: Option<String>,
    pub tags: String,
    pub replay: Option<String>,
    pub options: String,
    pub ims_org: String,
    pub sandbox: String,
    pub created_user: String,
    pub created: i64,
    pub updated: i64,
    pub started: Option<i64>,
    pub completed: Option<i64>,
    pub metrics: Option<String>,
    pub errors: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub batch_id: String,
    pub path: String,
    pub kind: FileKind,
    pub state: FileState,
    pub size: i64,
    pub records: Option<i64>,
    pub created: i64,
    pub updated: i64,
    /// Set when Data Access serves the good rows only (`{fileId}.good`).
    pub served_size: Option<i64>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChunkRow {
    pub seq: i64,
    pub start: i64,
    pub end_incl: i64,
    pub total: Option<i64>,
    /// Whether the bytes are in the file's data at their offsets (else in the chunk's part).
    pub in_place: bool,
    /// Whether the client was sent the 200 for this chunk.
    pub acked: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedRow {
    pub file_path: String,
    pub row_no: Option<i64>,
    pub code: String,
    pub message: String,
    pub raw: Option<String>,
    pub errors: Option<String>,
}

/// A dataset to insert (JSON columns as text).
pub struct NewDataset<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub schema_ref: Option<&'a str>,
    pub tags: &'a str,
    pub extra: &'a str,
    pub ims_org: &'a str,
    pub sandbox: &'a str,
    pub identity_field: Option<&'a str>,
}

impl<'a> NewDataset<'a> {
    /// A dataset made by the emulator's owner (config or `ensure_dataset`), with no schema.
    pub fn bare(id: &'a str, name: &'a str) -> Self {
        NewDataset {
            id,
            name,
            schema_ref: None,
            tags: "{}",
            extra: "{}",
            ims_org: "",
            sandbox: "",
            identity_field: None,
        }
    }
}

/// A batch to insert (JSON columns as text); it starts `loading`.
pub struct NewBatch<'a> {
    pub id: &'a str,
    pub dataset_id: &'a str,
    pub input_format: &'a str,
    pub external_id: Option<&'a str>,
    pub tags: &'a str,
    pub replay: Option<&'a str>,
    pub options: &'a str,
    pub ims_org: &'a str,
    pub sandbox: &'a str,
    pub created_user: &'a str,
}

/// Where a chunk's bytes were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPlace {
    /// At their offsets in the file's data.
    InPlace,
    /// In a part of their own, until COMPLETE compares and copies them.
    Part,
}

/// A batch as a file endpoint sees it: the batch, what it holds (kept by triggers, see
/// `ddl::FILE_COUNTERS`), and the file at the endpoint's path, if there is one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchAtPath {
    #[sqlx(flatten)]
    pub batch: BatchRow,
    file_count: i64,
    file_bytes: i64,
    path_file_id: Option<String>,
    path_file_kind: Option<FileKind>,
    path_file_size: Option<i64>,
}

/// The file at a batch's path, as [`BatchAtPath`] found it.
#[derive(Debug, Clone)]
pub struct FileAtPath {
    pub id: String,
    pub kind: FileKind,
}

impl BatchAtPath {
    pub fn file(&self) -> Option<FileAtPath> {
        Some(FileAtPath {
            id: self.path_file_id.clone()?,
            kind: self.path_file_kind?,
        })
    }

    /// How many files the batch holds besides the one at the path.
    pub fn other_files(&self) -> u64 {
        let at_path = i64::from(self.path_file_id.is_some());
        (self.file_count - at_path).max(0) as u64
    }

    /// The bytes of the batch's files besides the one at the path.
    pub fn other_bytes(&self) -> u64 {
        (self.file_bytes - self.path_file_size.unwrap_or(0)).max(0) as u64
    }
}

/// A failed row to keep for `GET /export/batches/{id}/failed`.
pub struct NewFailedRow<'a> {
    pub file_path: &'a str,
    pub row_no: Option<u64>,
    pub code: &'a str,
    pub message: &'a str,
    pub raw: Option<&'a str>,
    /// All its problems, a JSON array of {code, message, path}.
    pub errors: String,
}

/// One record of an upsert dataset's current view.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CurrentRow {
    pub identity: String,
    pub record: String,
    pub batch_id: String,
    pub updated: i64,
}
