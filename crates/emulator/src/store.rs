//! Persistent state: metadata in SQLite (WAL) and file contents on disk under the data dir.
//!
//! Layout of the data dir:
//! - `emulator.sqlite` (+ `-wal`, `-shm`): datasets, batches, files, chunks, failed rows,
//!   registered schemas, the current view of upsert datasets.
//! - `files/{batchId}/{fileId}`: the content of a finished file (PUT, or a completed large file).
//! - `files/{batchId}/{fileId}.good`: its good rows only, when the batch was partially ingested
//!   (what Data Access serves then).
//! - `emulator.ims-key`: the key that signs the tokens of `/ims/token/v3` (mode 0600).
//! - `parts/{fileId}/data`: a large file being uploaded, each chunk at its offset;
//!   `parts/{fileId}/{seq}.part`: its chunks that overlapped others, kept apart until COMPLETE.
//! - `tmp/`: bodies being received; renamed into place when whole, emptied at start.
//! - `emulator.lock`: held (flock) while an emulator uses the dir.
//!
//! File names given by clients never become paths on disk: files are stored by generated id
//! and the client's path is metadata, so no name can escape the data dir.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqlitePool};

use super::error::EmulatorError;

pub const DB_FILE: &str = "emulator.sqlite";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS datasets (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        schema_ref TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        extra TEXT NOT NULL DEFAULT '{}',
        ims_org TEXT NOT NULL DEFAULT '',
        sandbox TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        identity_field TEXT
    )",
    "CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL,
        status TEXT NOT NULL,
        input_format TEXT NOT NULL,
        external_id TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        replay TEXT,
        options TEXT NOT NULL DEFAULT '{}',
        ims_org TEXT NOT NULL DEFAULT '',
        sandbox TEXT NOT NULL DEFAULT '',
        created_user TEXT NOT NULL DEFAULT '',
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        started INTEGER,
        completed INTEGER,
        metrics TEXT,
        errors TEXT,
        gc_due INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS batches_dataset ON batches(dataset_id, created)",
    "CREATE INDEX IF NOT EXISTS batches_status ON batches(status)",
    "CREATE INDEX IF NOT EXISTS batches_external ON batches(external_id)",
    "CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        records INTEGER,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        served_size INTEGER,
        UNIQUE (batch_id, path)
    )",
    // Covers the per-PUT count and size of a batch's other files (the 1,500-file and 100 GB
    // limits) without a table lookup per file: that lookup was most of a PUT's database time.
    "CREATE INDEX IF NOT EXISTS files_batch_sizes ON files(batch_id, path, size)",
    "CREATE TABLE IF NOT EXISTS chunks (
        file_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        start INTEGER NOT NULL,
        end_incl INTEGER NOT NULL,
        total INTEGER,
        sha256 TEXT NOT NULL, -- unused since chunks are compared byte for byte ('' now)
        acked INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (file_id, seq)
    )",
    "CREATE TABLE IF NOT EXISTS failed_rows (
        batch_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        file_path TEXT NOT NULL,
        row_no INTEGER,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        raw TEXT,
        errors TEXT,
        PRIMARY KEY (batch_id, seq)
    )",
    "CREATE TABLE IF NOT EXISTS schemas (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        identity_field TEXT,
        created INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS upsert_rows (
        dataset_id TEXT NOT NULL,
        identity TEXT NOT NULL,
        record TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, identity)
    )",
];

/// Columns added after the first release: (table, column, declaration). Added at start when an
/// older data dir lacks them (a new one gets them from `SCHEMA`).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // All the problems of a failed row, as a JSON array of {code, message, path}.
    ("failed_rows", "errors", "TEXT"),
    // Size of the good-rows copy Data Access serves for a partially ingested file.
    ("files", "served_size", "INTEGER"),
    // The identity field of an upsert dataset, when its config names one.
    ("datasets", "identity_field", "TEXT"),
    // 1: the chunk's bytes are at their offsets in the file's data (`data_path`), not in a
    // part of their own.
    ("chunks", "in_place", "INTEGER NOT NULL DEFAULT 0"),
];

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

    /// Tagged `unifiedProfile: ["enabled:true", "isUpsert:true"]`.
    pub fn is_upsert(&self) -> bool {
        let tags: serde_json::Value = serde_json::from_str(&self.tags).unwrap_or_default();
        tags.get("unifiedProfile")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(serde_json::Value::as_str)
                    .any(|t| t.eq_ignore_ascii_case("isUpsert:true"))
            })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: String,
    pub dataset_id: String,
    pub status: String,
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
    pub kind: String,
    pub state: String,
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

/// File statuses.
pub const FILE_UPLOADING: &str = "uploading";
pub const FILE_COMPLETE: &str = "complete";
pub const KIND_PUT: &str = "put";
pub const KIND_LARGE: &str = "large";

/// The data dir and the metadata pool.
#[derive(Debug, Clone)]
pub struct Store {
    pub pool: SqlitePool,
    pub root: PathBuf,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    pub async fn open(root: &Path) -> Result<Store, EmulatorError> {
        for sub in ["files", "parts", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| EmulatorError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        let db_path = root.join(DB_FILE);
        let db_err = |source| EmulatorError::Database {
            path: db_path.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_err)?
            .filename(&db_path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // All DDL on one connection, before the pool opens any: a pooled connection that cached
        // the schema before an ALTER TABLE would prepare `SELECT *` with the old columns, and
        // SQLite's silent re-prepare would then hand sqlx rows wider than it expects.
        {
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(db_err)?;
            for stmt in SCHEMA {
                sqlx::query(*stmt)
                    .execute(&mut conn)
                    .await
                    .map_err(db_err)?;
            }
            for (table, column, decl) in ADDED_COLUMNS {
                let cols: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}')"
                )))
                .fetch_all(&mut conn)
                .await
                .map_err(db_err)?;
                if !cols.iter().any(|(c,)| c == column) {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "ALTER TABLE {table} ADD COLUMN {column} {decl}"
                    )))
                    .execute(&mut conn)
                    .await
                    .map_err(db_err)?;
                }
            }
            conn.close().await.map_err(db_err)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Ok(Store {
            pool,
            root: root.to_path_buf(),
        })
    }

    pub fn file_path(&self, batch_id: &str, file_id: &str) -> PathBuf {
        self.root.join("files").join(batch_id).join(file_id)
    }
    pub fn batch_dir(&self, batch_id: &str) -> PathBuf {
        self.root.join("files").join(batch_id)
    }
    pub fn parts_dir(&self, file_id: &str) -> PathBuf {
        self.root.join("parts").join(file_id)
    }
    /// The good rows of a partially ingested file.
    pub fn good_path(&self, batch_id: &str, file_id: &str) -> PathBuf {
        self.root
            .join("files")
            .join(batch_id)
            .join(format!("{file_id}.good"))
    }
    /// A large file's bytes as they arrive, each chunk at its offset (chunks that overlap
    /// others wait in parts of their own).
    pub fn data_path(&self, file_id: &str) -> PathBuf {
        self.parts_dir(file_id).join("data")
    }
    pub fn part_path(&self, file_id: &str, seq: i64) -> PathBuf {
        self.parts_dir(file_id).join(format!("{seq}.part"))
    }
    /// A fresh temp file name in `tmp/` (same filesystem as the final places, so rename works).
    pub fn tmp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.tmp", ulid::Ulid::new()))
    }

    pub async fn dataset(&self, id: &str) -> Result<Option<DatasetRow>, sqlx::Error> {
        sqlx::query_as::<_, DatasetRow>("SELECT * FROM datasets WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn batch(&self, id: &str) -> Result<Option<BatchRow>, sqlx::Error> {
        sqlx::query_as::<_, BatchRow>("SELECT * FROM batches WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn files_of(&self, batch_id: &str) -> Result<Vec<FileRow>, sqlx::Error> {
        sqlx::query_as::<_, FileRow>("SELECT * FROM files WHERE batch_id = ? ORDER BY path")
            .bind(batch_id)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn file(&self, batch_id: &str, path: &str) -> Result<Option<FileRow>, sqlx::Error> {
        sqlx::query_as::<_, FileRow>("SELECT * FROM files WHERE batch_id = ? AND path = ?")
            .bind(batch_id)
            .bind(path)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn chunks_of(&self, file_id: &str) -> Result<Vec<ChunkRow>, sqlx::Error> {
        sqlx::query_as::<_, ChunkRow>(
            "SELECT * FROM chunks WHERE file_id = ? ORDER BY start, end_incl, seq",
        )
        .bind(file_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Creates a dataset with exactly this id if it does not exist (returns whether it did).
    pub async fn insert_dataset_if_missing(&self, d: NewDataset<'_>) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let r = sqlx::query(
            "INSERT OR IGNORE INTO datasets (id, name, schema_ref, tags, extra, ims_org, sandbox, created, updated, identity_field)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.id)
        .bind(d.name)
        .bind(d.schema_ref)
        .bind(d.tags)
        .bind(d.extra)
        .bind(d.ims_org)
        .bind(d.sandbox)
        .bind(now)
        .bind(now)
        .bind(d.identity_field)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets what the emulator's owner says about an existing dataset (config seeds, embedded
    /// mode): each `Some` replaces the stored value.
    pub async fn update_dataset_setup(
        &self,
        id: &str,
        schema_ref: Option<&str>,
        tags: Option<&str>,
        identity_field: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE datasets SET schema_ref = COALESCE(?, schema_ref), tags = COALESCE(?, tags),
                 identity_field = COALESCE(?, identity_field), updated = ? WHERE id = ?",
        )
        .bind(schema_ref)
        .bind(tags)
        .bind(identity_field)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a schema's JSON so it is registered again at the next start.
    pub async fn save_schema(
        &self,
        id: &str,
        name: &str,
        body: &str,
        identity_field: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO schemas (id, name, body, identity_field, created) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body,
                 identity_field = excluded.identity_field",
        )
        .bind(id)
        .bind(name)
        .bind(body)
        .bind(identity_field)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored schemas: (id, name, body, identity_field).
    pub async fn saved_schemas(
        &self,
    ) -> Result<Vec<(String, String, String, Option<String>)>, sqlx::Error> {
        sqlx::query_as("SELECT id, name, body, identity_field FROM schemas ORDER BY created, id")
            .fetch_all(&self.pool)
            .await
    }

    /// Compare-and-set of a batch status; returns whether it changed.
    pub async fn transition(&self, id: &str, from: &[&str], to: &str) -> Result<bool, sqlx::Error> {
        let placeholders = vec!["?"; from.len()].join(",");
        let sql = format!(
            "UPDATE batches SET status = ?, updated = ? WHERE id = ? AND status IN ({placeholders})"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to)
            .bind(now_ms())
            .bind(id);
        for f in from {
            q = q.bind(*f);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }
}

/// Dataset ids are used as given (the daemon picks them in embedded mode), so they must be safe
/// in a URL path segment.
pub fn validate_dataset_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".into());
    }
    if id.len() > 255 {
        return Err("it is longer than 255 bytes".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':')))
    {
        return Err(format!(
            "it contains {c:?}; use letters, digits and - _ . @ : only"
        ));
    }
    Ok(())
}

/// A new dataset id: 24 lowercase hex digits, like the platform's.
pub fn new_dataset_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
