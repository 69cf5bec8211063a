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
//!
//! Each PUT's two statements (its look-up and its record) run on a connection of their own,
//! outside the pool (`Store::put_conn`): a pooled query costs an extra trip to its
//! connection's thread (sqlx pings each connection that returns to the pool), and the
//! connection that writes most rows keeps its page cache warm, where each write by another
//! connection makes the others read their pages again.
//!
//! This module is the emulator's only SQL: `ddl` (tables, and upgrading an older data dir),
//! `datasets` (and the registered schemas' JSON), `batches` (statuses as compare-and-set),
//! `files` (and the chunks of large files), `outcome` (what processing records, and what Data
//! Access reads of it), `rows` (the row types and states). It must not decide what a request
//! or a batch's processing means: its callers do.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

use super::error::EmulatorError;

mod batches;
mod datasets;
mod ddl;
mod files;
mod outcome;
mod rows;

pub use batches::BatchFilter;
pub use datasets::Scope;
pub use outcome::{FileOutcome, OutcomeTx};
pub use rows::{
    BatchAtPath, BatchRow, BatchStatus, ChunkPlace, ChunkRow, DatasetRow, FailedRow, FileKind,
    FileRow, FileState, NewBatch, NewDataset, NewFailedRow,
};
/// What a metadata query fails with (outside this module, no code names the database crate).
pub use sqlx::Error as DbError;

pub const DB_FILE: &str = "emulator.sqlite";

/// The data dir and the metadata pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The PUT path's connection (see the module's doc); `None` once closed.
    put_conn: Arc<Mutex<Option<SqliteConnection>>>,
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
        let conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(db_err)?;
        ddl::create(conn).await.map_err(db_err)?;
        let put_conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(db_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // The ping before each query is a trip to the connection's thread for every
            // statement; the one sqlx makes when a connection returns to the pool still finds
            // a broken connection.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Ok(Store {
            pool,
            put_conn: Arc::new(Mutex::new(Some(put_conn))),
            root: root.to_path_buf(),
        })
    }

    /// Closes the metadata database (at shutdown).
    pub async fn close(&self) {
        if let Some(conn) = self.put_conn.lock().await.take() {
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }

    /// The PUT path's connection, for one statement at a time: requests for different batches
    /// take turns on it (SQLite runs one write at a time in any case).
    async fn put_conn(&self) -> Result<PutConn<'_>, DbError> {
        let guard = self.put_conn.lock().await;
        if guard.is_none() {
            return Err(DbError::PoolClosed);
        }
        Ok(PutConn(guard))
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
    /// Where the good rows of an upsert batch wait, during its processing, to be merged.
    pub fn upsert_capture_path(&self, batch_id: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("upsert-{batch_id}.jsonl"))
    }
    /// A fresh temp file name in `tmp/` (same filesystem as the final places, so rename works).
    pub fn tmp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.tmp", ulid::Ulid::new()))
    }
}

/// The PUT path's connection while a statement uses it.
struct PutConn<'a>(MutexGuard<'a, Option<SqliteConnection>>);

impl PutConn<'_> {
    fn get(&mut self) -> &mut SqliteConnection {
        self.0
            .as_mut()
            .expect("checked open when taken, and only `close` empties it")
    }
}

/// A page of a Catalog list: `limit` items from the `start`th, newest first.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub start: i64,
}

impl Page {
    /// Every row (for lists whose query is applied to the objects afterwards).
    pub fn everything() -> Page {
        Page {
            limit: i64::MAX,
            start: 0,
        }
    }

    /// ` ORDER BY ... LIMIT ... OFFSET ...`: newest first, ties by id.
    fn clause(&self) -> String {
        format!(
            " ORDER BY created DESC, id DESC LIMIT {} OFFSET {}",
            self.limit, self.start
        )
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
