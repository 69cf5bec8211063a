//! Persistent state: metadata in SQLite (WAL) and file contents on disk under the data dir.
//!
//! Layout of the data dir:
//! - `emulator.sqlite` (+ `-wal`, `-shm`): datasets, batches, files, chunks, failed rows.
//! - `files/{batchId}/{fileId}`: the content of a finished file (PUT, or a completed large file).
//! - `parts/{fileId}/{seq}.part`: the chunks of a large file being uploaded.
//! - `tmp/`: bodies being received; renamed into place when whole, emptied at start.
//! - `emulator.lock`: held (flock) while an emulator uses the dir.
//!
//! File names given by clients never become paths on disk: files are stored by generated id
//! and the client's path is metadata, so no name can escape the data dir.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

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
        updated INTEGER NOT NULL
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
        UNIQUE (batch_id, path)
    )",
    "CREATE TABLE IF NOT EXISTS chunks (
        file_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        start INTEGER NOT NULL,
        end_incl INTEGER NOT NULL,
        total INTEGER,
        sha256 TEXT NOT NULL,
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
        PRIMARY KEY (batch_id, seq)
    )",
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
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChunkRow {
    pub seq: i64,
    pub start: i64,
    pub end_incl: i64,
    pub total: Option<i64>,
    pub sha256: String,
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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await.map_err(db_err)?;
        }
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
            "INSERT OR IGNORE INTO datasets (id, name, schema_ref, tags, extra, ims_org, sandbox, created, updated)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
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
