//! The state database: the only module with SQL in it.
//!
//! SQLite is batchdrop's only queue. Every stage reads its work from here and writes its result
//! back here before it tells anyone; in-process channels only wake stages up. This module owns the
//! schema (through `migrations/`), the durability settings, the one-daemon-per-state-dir lock and
//! every query. It must not do I/O on drop folders or talk to the platform.
//!
//! Durability, chosen on purpose:
//! - `journal_mode = WAL`: readers (`batchdrop status`) never block the daemon, and a commit is
//!   one sequential append.
//! - `synchronous = NORMAL`: a commit survives `kill -9` of the process (it is in the WAL, which
//!   the OS holds); only a power loss can drop the last few commits. Every remote side effect is
//!   recorded as an intent *before* the call and reconciled with the platform on start-up
//!   (externalId lookup, HEAD for received bytes, idempotent PUT and COMPLETE), so a lost commit
//!   costs a repeated idempotent call, never a lost or doubled file. `FULL` would add an fsync
//!   per commit for no gain in that model.
//! - One connection for writes: SQLite has one writer anyway, and a single connection makes
//!   in-process write contention (and `SQLITE_BUSY`) impossible.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another batchdrop daemon already uses the state directory {path} ({holder}); stop it first, or give this one another state_dir"
    )]
    Locked { path: PathBuf, holder: String },
    #[error(
        "the state directory {path} is on a network filesystem ({fs}), where SQLite's locking is unreliable; put state_dir on a local disk"
    )]
    NetworkFs { path: PathBuf, fs: &'static str },
    #[error("state database {path}: {source}")]
    Db { path: PathBuf, source: sqlx::Error },
    #[error("state database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error(
        "the state database in {path} is not ready: the daemon ({holder}) is still setting it up, or is an older version of batchdrop; try again in a moment, or restart the daemon with this version"
    )]
    NotReady { path: PathBuf, holder: String },
    #[error("migrating state database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
}

impl StoreError {
    /// What an operator should know about an error met while running: the usual causes
    /// (another process holding the lock, a full disk) in words, then SQLite's own message.
    pub fn explain(&self) -> String {
        let code = match self {
            StoreError::Query(sqlx::Error::Database(db))
            | StoreError::Db {
                source: sqlx::Error::Database(db),
                ..
            } => db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff),
            _ => None,
        };
        let what = match code {
            Some(5) | Some(6) => {
                "the state database is locked by another process (a `sqlite3` shell or a backup \
                 holding a transaction?)"
            }
            Some(13) => "the state directory's disk is full",
            Some(8) => "the state database is read-only",
            Some(10) => "the state database cannot be read or written (I/O error)",
            _ => "the state database failed",
        };
        format!("{what}: {self}")
    }
}

/// Keeps a stage running through state database errors (a lock held by another process, a
/// full disk): says why once, then every 30 s while it lasts, and when it is over; tells the
/// stage how long to wait before trying again (1 s, doubling to 10 s). Nothing is lost by
/// waiting: every stage starts over from what the database holds.
pub struct StoreTrouble {
    stage: &'static str,
    since: Option<std::time::Instant>,
    last_said: Option<std::time::Instant>,
    failures: u32,
}

impl StoreTrouble {
    pub fn new(stage: &'static str) -> StoreTrouble {
        StoreTrouble {
            stage,
            since: None,
            last_said: None,
            failures: 0,
        }
    }

    /// Records a failure; returns how long to wait before the next try.
    pub fn failed(&mut self, e: &StoreError) -> Duration {
        let now = std::time::Instant::now();
        self.since.get_or_insert(now);
        self.failures += 1;
        if self
            .last_said
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(30))
        {
            self.last_said = Some(now);
            tracing::error!(
                stage = self.stage,
                "{}; the {} waits and tries again (nothing is lost)",
                e.explain(),
                self.stage
            );
        }
        Duration::from_secs(1 << self.failures.min(4).saturating_sub(1))
            .min(Duration::from_secs(10))
    }

    /// Records a success; says so if it ends a run of failures.
    pub fn ok(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                stage = self.stage,
                "the state database works again after {:.0?}; the {} carries on",
                since.elapsed(),
                self.stage
            );
            self.last_said = None;
            self.failures = 0;
        }
    }
}

/// Space kept free on the state directory's filesystem: below it, no new file is taken, so that
/// the files already taken can finish (each still needs a few small writes).
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// File states. `ready` → `batched` → `uploaded` → `done`; or `failed` / `duplicate`.
pub mod file_state {
    pub const READY: &str = "ready";
    pub const BATCHED: &str = "batched";
    pub const UPLOADED: &str = "uploaded";
    pub const DONE: &str = "done";
    pub const FAILED: &str = "failed";
    pub const DUPLICATE: &str = "duplicate";
    /// The file changed on disk after it was queued; its new version is a new record.
    pub const SUPERSEDED: &str = "superseded";
}

/// Batch states, in order. The first five are "in flight"; the rest are terminal.
pub mod batch_state {
    pub const SEALED: &str = "sealed";
    pub const CREATING: &str = "creating";
    pub const LOADING: &str = "loading";
    pub const COMPLETING: &str = "completing";
    pub const PROCESSING: &str = "processing";
    pub const SUCCESS: &str = "success";
    pub const FAILED: &str = "failed";
    pub const ABORTED: &str = "aborted";
    pub const ABANDONED: &str = "abandoned";
    pub const REVERTED: &str = "reverted";
}

#[derive(Debug, Clone, FromRow)]
pub struct FileRow {
    pub id: i64,
    pub watch: String,
    pub dataset: String,
    pub format: String,
    pub multiline_json: bool,
    pub root: String,
    pub rel_path: String,
    pub dev: i64,
    pub ino: i64,
    pub size: i64,
    pub mtime_ns: i64,
    pub sha256: Option<String>,
    pub state: String,
    pub batch_id: Option<i64>,
    pub uploaded_bytes: i64,
    pub sent: bool,
    pub duplicate_of: Option<i64>,
    pub replay_json: Option<String>,
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

#[derive(Debug, Clone, FromRow)]
pub struct BatchRow {
    pub id: i64,
    pub external_id: String,
    pub remote_id: Option<String>,
    pub watch: String,
    pub dataset: String,
    pub format: String,
    pub multiline_json: bool,
    pub replay_json: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub first_error_at: Option<i64>,
    pub last_error: Option<String>,
    pub outcome_json: Option<String>,
    pub replaced_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl BatchRow {
    /// The name operators see: the platform's id once known, else the local one.
    pub fn label(&self) -> String {
        match &self.remote_id {
            Some(id) => id.clone(),
            None => format!("local batch #{}", self.id),
        }
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

/// A file that carries some content into a dataset: on its way (ready to travel again, or in
/// a batch in flight), or ingested (in a successful batch not replaced nor reverted).
#[derive(Debug, Clone)]
struct Carrier {
    id: i64,
    rel_path: String,
    ingested: bool,
}

/// A file being sealed under [`Dedupe::OneCopy`].
#[derive(Debug, FromRow)]
struct Candidate {
    id: i64,
    rel_path: String,
    size: i64,
    sha256: Option<String>,
    replay_json: Option<String>,
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
    pub format: String,
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
    /// JSON array of predecessor remote batch ids (without the `$` prefix).
    pub predecessors_json: String,
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
    /// SHA-256 of the bytes sent.
    pub sha256: String,
    pub size: i64,
}

/// A file's end, as the archiver reports it for recording.
#[derive(Debug, Clone)]
pub struct Finalized {
    pub file_id: i64,
    /// `done`, `failed` or `duplicate`.
    pub state: String,
    /// Where it was moved, if it was.
    pub final_path: Option<String>,
    /// The event's text (status and receipt path).
    pub detail: String,
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

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Handle to the state database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
    // Held for the life of the daemon: the OS drops the lock when the process dies, even by
    // SIGKILL, so a stale lock can never keep a restarted daemon out.
    _lock: Option<std::sync::Arc<File>>,
}

impl Store {
    /// Opens the daemon's state: takes the exclusive lock, refuses network filesystems unless
    /// `allow_network_fs`, applies migrations.
    pub async fn open_exclusive(
        state_dir: &Path,
        allow_network_fs: bool,
    ) -> Result<Store, StoreError> {
        create_state_dir(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        if !allow_network_fs && let Some(fs) = network_fs_kind(state_dir) {
            return Err(StoreError::NetworkFs {
                path: state_dir.to_owned(),
                fs,
            });
        }
        let lock = take_lock(state_dir)?;
        let mut store = Store::open_shared(state_dir).await?;
        store._lock = Some(std::sync::Arc::new(lock));
        Ok(store)
    }

    /// Opens the state without the daemon lock: for `status` and the other commands that run
    /// beside a daemon. Writes are still serialised by SQLite.
    pub async fn open_shared(state_dir: &Path) -> Result<Store, StoreError> {
        create_state_dir(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join("batchdrop.db");
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .expect("static URL")
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Short: a lock held longer by another process is reported (`StoreTrouble`) and
            // waited out by the stages, instead of stalling them silently.
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Db {
                path: path.clone(),
                source,
            })?;
        // SQLite's migrator takes no lock across processes: a daemon starting on a fresh state
        // dir while `batchdrop status` opens it would both apply migration 1, and one fails.
        let _migrating = migration_lock(state_dir).await?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            pool,
            path,
            _lock: None,
        })
    }

    /// Opens the state for an operator's command beside a daemon, without racing the daemon's
    /// own set-up: `None` when no daemon ever created it; while the daemon is creating or
    /// migrating it (first start, upgrade), waits up to 5 s for it. Migrates it only when no
    /// daemon holds the lock (holding the lock meanwhile), so that a command can never make a
    /// starting daemon's migration fail.
    pub async fn open_for_command(state_dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = state_dir.join("batchdrop.db");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if !path.exists() {
                return Ok(None);
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(
                    SqliteConnectOptions::from_str("sqlite:")
                        .expect("static URL")
                        .filename(&path)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .foreign_keys(true)
                        .busy_timeout(Duration::from_secs(30)),
                )
                .await
                .map_err(|source| StoreError::Db {
                    path: path.clone(),
                    source,
                })?;
            let applied: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
            if applied >= sqlx::migrate!("./migrations").iter().count() as i64 {
                return Ok(Some(Store {
                    pool,
                    path,
                    _lock: None,
                }));
            }
            pool.close().await;
            match take_lock(state_dir) {
                Ok(_lock) => return Store::open_shared(state_dir).await.map(Some),
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StoreError::Locked { path: dir, holder }) => {
                    return Err(StoreError::NotReady { path: dir, holder });
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes free for the state database on its filesystem, if the OS says.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let dir = self.path.parent()?;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs is plain old data, for which all-zero bytes are a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Readiness: the database takes a write (a full disk or a read-only mount fails it).
    pub async fn ping_write(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM health_probe")
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO health_probe (at) VALUES (?)")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// When the oldest file still waiting for its outcome was found (unix ms).
    pub async fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(discovered_at) FROM files WHERE finalized = 0")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Files queued but not finished (the resource cap on intake counts these).
    pub async fn queued_files(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE finalized = 0 AND state IN ('ready', 'batched', 'uploaded')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Bytes of the files in batches sealed but not finished.
    pub async fn inflight_bytes(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(f.size), 0) FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE b.state IN ('sealed', 'creating', 'loading', 'completing', 'processing')
               AND f.state IN ('batched', 'uploaded')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Cheap liveness check of the database (used by readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- events ----------------------------------------------------------------------------

    pub async fn event(
        &self,
        file_id: Option<i64>,
        batch_id: Option<i64>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (at, file_id, batch_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(file_id)
        .bind(batch_id)
        .bind(kind)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn events_for_file(&self, file_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, file_id, batch_id, kind, detail FROM events
             WHERE file_id = ? OR batch_id = (SELECT batch_id FROM files WHERE id = ?)
             ORDER BY id",
        )
        .bind(file_id)
        .bind(file_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events_for_batch(&self, batch_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, file_id, batch_id, kind, detail FROM events WHERE batch_id = ? ORDER BY id",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- files: intake ---------------------------------------------------------------------

    /// Records a file that became stable. A version already known (same path and identity, in
    /// any state) is not queued again; a queued-but-unbatched record of the same path whose
    /// content changed is updated in place. The replay its `.replay` sidecar asks for is set
    /// in the same transaction: the batcher can never see the file without it.
    pub async fn record_ready_with(
        &self,
        f: &NewFile,
        replay: Option<&ReplayRequest>,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.pool.begin().await?;
        let recorded = record_ready_in(&mut tx, f, replay).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// [`Store::record_ready_with`] (no replay) for several files in one transaction: one commit (one WAL
    /// append) instead of one per file, which was most of the cost of queueing a backlog.
    /// Outcomes are in the order of `files`.
    ///
    /// Paths never seen before (the usual case: a backlog at start-up, a burst of new files) are
    /// inserted with one multi-row statement per few hundred files; a statement costs a round
    /// trip to SQLite's thread, which per file was most of the time. Paths with history go
    /// through the per-file rules.
    pub async fn record_ready_many(&self, files: &[NewFile]) -> Result<Vec<Recorded>, StoreError> {
        use std::collections::{HashMap, HashSet};
        const BULK: usize = 500; // 13 values per row, well under SQLite's 32766 variables
        let mut tx = self.pool.begin().await?;
        let mut out: Vec<Option<Recorded>> = files.iter().map(|_| None).collect();
        // Which paths have rows already, in any state.
        let mut by_watch: HashMap<&str, Vec<&str>> = HashMap::new();
        for f in files {
            by_watch.entry(&f.watch).or_default().push(&f.rel_path);
        }
        let mut known: HashSet<(String, String)> = HashSet::new();
        for (watch, paths) in by_watch {
            for part in paths.chunks(BULK) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "SELECT DISTINCT rel_path FROM files WHERE watch = ",
                );
                q.push_bind(watch).push(" AND rel_path IN (");
                let mut list = q.separated(", ");
                for p in part {
                    list.push_bind(*p);
                }
                q.push(")");
                let found: Vec<String> = q.build_query_scalar().fetch_all(&mut *tx).await?;
                known.extend(found.into_iter().map(|p| (watch.to_owned(), p)));
            }
        }
        let mut first_time = HashSet::new();
        let fresh: Vec<usize> = (0..files.len())
            .filter(|&i| {
                let key = (files[i].watch.clone(), files[i].rel_path.clone());
                !known.contains(&key) && first_time.insert(key)
            })
            .collect();
        let now = now_ms();
        for part in fresh.chunks(BULK) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO files (watch, dataset, format, multiline_json, root, rel_path, dev, ino,
                   size, mtime_ns, state, discovered_at, updated_at) ",
            );
            q.push_values(part, |mut row, &i| {
                let f = &files[i];
                row.push_bind(&f.watch)
                    .push_bind(&f.dataset)
                    .push_bind(&f.format)
                    .push_bind(f.multiline_json)
                    .push_bind(&f.root)
                    .push_bind(&f.rel_path)
                    .push_bind(f.dev)
                    .push_bind(f.ino)
                    .push_bind(f.size)
                    .push_bind(f.mtime_ns)
                    .push("'ready'")
                    .push_bind(now)
                    .push_bind(now);
            });
            q.push(" RETURNING id, watch, rel_path");
            let rows: Vec<(i64, String, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
            let ids: HashMap<(String, String), i64> =
                rows.into_iter().map(|(id, w, p)| ((w, p), id)).collect();
            let mut events = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO events (at, file_id, kind, detail) ",
            );
            events.push_values(part, |mut row, &i| {
                let f = &files[i];
                let id = ids[&(f.watch.clone(), f.rel_path.clone())];
                out[i] = Some(Recorded::New(id));
                row.push_bind(now)
                    .push_bind(id)
                    .push("'ready'")
                    .push_bind(format!("{} bytes", f.size));
            });
            events.build().execute(&mut *tx).await?;
        }
        let mut done = Vec::with_capacity(files.len());
        for (f, o) in files.iter().zip(out) {
            done.push(match o {
                Some(o) => o,
                None => record_ready_in(&mut tx, f, None).await?,
            });
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Records a file that cannot be ingested at all (unknown format, bad name...): it goes
    /// straight to the failed folder with `reason` in its receipt.
    pub async fn record_rejected(
        &self,
        f: &NewFile,
        reason: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.record_rejected_with(f, reason, None).await
    }

    /// [`Store::record_rejected`] for a file that came with a `.replay` sidecar (at `sidecar`,
    /// relative to the root): the archiver moves both to the failed folder.
    pub async fn record_rejected_with(
        &self,
        f: &NewFile,
        reason: &str,
        sidecar: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        let known: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM files WHERE watch = ? AND rel_path = ? AND dev = ? AND ino = ? AND size = ?
               AND mtime_ns = ? LIMIT 1",
        )
        .bind(&f.watch)
        .bind(&f.rel_path)
        .bind(f.dev)
        .bind(f.ino)
        .bind(f.size)
        .bind(f.mtime_ns)
        .fetch_optional(&self.pool)
        .await?;
        if known.is_some() {
            return Ok(None);
        }
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO files (watch, dataset, format, multiline_json, root, rel_path, dev, ino, size,
               mtime_ns, state, reason, discovered_at, updated_at, sidecar, raw_path)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&f.watch)
        .bind(&f.dataset)
        .bind(&f.format)
        .bind(f.multiline_json)
        .bind(&f.root)
        .bind(&f.rel_path)
        .bind(f.dev)
        .bind(f.ino)
        .bind(f.size)
        .bind(f.mtime_ns)
        .bind(reason)
        .bind(now)
        .bind(now)
        .bind(sidecar)
        .bind(&f.raw_path)
        .fetch_one(&self.pool)
        .await?;
        self.event(Some(id), None, "rejected", reason).await?;
        Ok(Some(id))
    }

    pub async fn set_replay(
        &self,
        file_id: i64,
        replay_json: &str,
        sidecar: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET replay_json = ?, sidecar = ?, updated_at = ? WHERE id = ? AND state = 'ready'")
            .bind(replay_json)
            .bind(sidecar)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- files: batching -------------------------------------------------------------------

    /// The oldest `limit` files of a watch waiting to be batched (not those waiting for another
    /// file's outcome: see [`Sealed::waiting`]).
    pub async fn ready_files(&self, watch: &str, limit: i64) -> Result<Vec<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM files WHERE watch = ? AND state = 'ready' AND waits_for IS NULL
             ORDER BY id LIMIT ?",
        )
        .bind(watch)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a file of this size was ingested (or is on its way) into the dataset: only then
    /// is it worth hashing a file before its upload to find duplicates.
    pub async fn size_seen(
        &self,
        dataset: &str,
        size: i64,
        except: i64,
    ) -> Result<bool, StoreError> {
        // EXISTS, not COUNT: files of a common size are many, and one is enough.
        let n: i64 = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM files WHERE dataset = ? AND size = ? AND id != ?
               AND state IN ('ready', 'batched', 'uploaded', 'done'))",
        )
        .bind(dataset)
        .bind(size)
        .bind(except)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Records the hashes of several files in one transaction.
    pub async fn set_shas(&self, shas: &[(i64, String)]) -> Result<(), StoreError> {
        if shas.is_empty() {
            return Ok(());
        }
        // One statement per few hundred files: a statement is a round trip to SQLite's thread.
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for part in shas.chunks(400) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE files SET");
            push_case(&mut q, "sha256", part, |(id, sha)| (*id, sha));
            q.push(", updated_at = ")
                .push_bind(now)
                .push(" WHERE id IN (");
            push_ids(&mut q, part.iter().map(|(id, _)| *id));
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lets waiting files go back to the batcher once their reason to wait is over: the file
    /// they wait for left flight (its batch ended, or it failed or changed), or its content,
    /// once known, differs from theirs. Returns how many went back.
    pub async fn release_waiting(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE files SET waits_for = NULL WHERE waits_for IS NOT NULL AND (state != 'ready'
               OR NOT EXISTS (SELECT 1 FROM files h LEFT JOIN batches b ON b.id = h.batch_id
                 WHERE h.id = files.waits_for
                   AND (h.state = 'ready' OR (h.state IN ('batched', 'uploaded') AND b.state IN
                        ('sealed', 'creating', 'loading', 'completing', 'processing')))
                   AND (h.sha256 IS NULL OR h.sha256 = files.sha256)))",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// How `dataset` holds each of `contents` (SHA-256, size), as this state knows it, read
    /// only: for a push beside the daemon (see `cli::push`). A content absent from the answer
    /// is carried by none of this state's files.
    pub async fn carried(
        &self,
        dataset: &str,
        contents: &[(String, i64)],
    ) -> Result<std::collections::HashMap<String, Carried>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let shas: Vec<&str> = contents.iter().map(|(sha, _)| sha.as_str()).collect();
        let sizes: Vec<i64> = contents.iter().map(|(_, size)| *size).collect();
        let (carriers, _) = carriers_of(&mut conn, dataset, &shas).await?;
        let unknown = unknown_by_size(&mut conn, dataset, &sizes).await?;
        let mut out = std::collections::HashMap::new();
        for (sha, size) in contents {
            let Some(c) = carriers.get(sha).or_else(|| unknown.get(size)) else {
                continue;
            };
            let batch: Option<String> = if c.ingested {
                sqlx::query_scalar(
                    "SELECT b.remote_id FROM files f JOIN batches b ON b.id = f.batch_id WHERE f.id = ?",
                )
                .bind(c.id)
                .fetch_optional(&mut *conn)
                .await?
                .flatten()
            } else {
                None
            };
            out.insert(
                sha.clone(),
                Carried {
                    file: c.rel_path.clone(),
                    ingested: c.ingested,
                    batch,
                },
            );
        }
        Ok(out)
    }

    /// Takes a ready file out as a duplicate of content that another state (the daemon's,
    /// for a push) says is in the dataset; `reason` says where.
    pub async fn mark_duplicate_elsewhere(
        &self,
        file_id: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE files SET state = 'duplicate', reason = ?, updated_at = ? WHERE id = ? AND state = 'ready'",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(file_id)
        .execute(&self.pool)
        .await?;
        self.event(Some(file_id), None, "duplicate", reason).await
    }

    /// Seals a batch: the batch row and its files' assignment are one transaction, so a file is
    /// never in two batches and never in none. With [`Dedupe::OneCopy`] the same transaction
    /// keeps a second copy of any content out of the dataset (see [`Sealed`] for what happens
    /// to the files left out); a batch is created only when a file remains for it.
    #[allow(clippy::too_many_arguments)] // one per column of the batch, plus the rule
    pub async fn seal_batch(
        &self,
        watch: &str,
        dataset: &str,
        format: &str,
        multiline_json: bool,
        replay_json: Option<&str>,
        file_ids: &[i64],
        dedupe: Dedupe,
    ) -> Result<Sealed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut sealed = Sealed::default();
        let ids = match dedupe {
            Dedupe::AllowDuplicates => file_ids.to_vec(),
            Dedupe::OneCopy => one_copy_in(&mut tx, dataset, file_ids, now, &mut sealed).await?,
        };
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(sealed);
        }
        let external_id = uuid::Uuid::now_v7().to_string();
        let batch_id: i64 = sqlx::query_scalar(
            "INSERT INTO batches (external_id, watch, dataset, format, multiline_json, replay_json, state,
               created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, 'sealed', ?, ?) RETURNING id",
        )
        .bind(&external_id)
        .bind(watch)
        .bind(dataset)
        .bind(format)
        .bind(multiline_json)
        .bind(replay_json)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // A statement per few hundred files, not per file (each is a round trip to SQLite).
        // The files take the batch's dataset: a reload may have pointed their watch elsewhere
        // since they were queued, and their receipts must name where they went.
        for part in ids.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "UPDATE files SET state = 'batched', batch_id = ",
            );
            q.push_bind(batch_id)
                .push(", dataset = ")
                .push_bind(dataset)
                .push(", uploaded_bytes = 0, sent = 0, updated_at = ")
                .push_bind(now)
                .push(" WHERE state = 'ready' AND id IN (");
            push_ids(&mut q, part.iter().copied());
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO events (at, batch_id, kind, detail) VALUES (?, ?, 'sealed', ?)")
            .bind(now)
            .bind(batch_id)
            .bind(format!("{} files, externalId {external_id}", ids.len()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sealed.batch_id = Some(batch_id);
        sealed.files = ids;
        Ok(sealed)
    }

    // ---- batches: upload -------------------------------------------------------------------

    /// Batches with remote work to do whose retry time has come (not those of a blocked
    /// dataset: they wait for the block to be lifted).
    pub async fn batches_due(&self, now: i64) -> Result<Vec<BatchRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE state IN ('sealed', 'creating', 'loading', 'completing', 'processing')
               AND next_attempt_at <= ? AND dataset NOT IN (SELECT dataset FROM blocked_datasets)
             ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The batch `id` as it is now, if it is still in flight and due. A list from
    /// `batches_due` can be stale by the time a batch is claimed: a drive that ended meanwhile
    /// may have moved it on, or scheduled its retry for later (re-driving it from the stale
    /// row would repeat a request before the platform's `Retry-After`).
    pub async fn batch_if_due(&self, id: i64, now: i64) -> Result<Option<BatchRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE id = ?
               AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')
               AND next_attempt_at <= ? AND dataset NOT IN (SELECT dataset FROM blocked_datasets)",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The earliest retry time among in-flight batches, to sleep until it.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM batches
             WHERE state IN ('sealed', 'creating', 'loading', 'completing', 'processing')
               AND dataset NOT IN (SELECT dataset FROM blocked_datasets)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn batch(&self, id: i64) -> Result<BatchRow, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn batch_by_remote(&self, remote_id: &str) -> Result<Option<BatchRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE remote_id = ?")
            .bind(remote_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn batch_files(&self, batch_id: i64) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE batch_id = ? ORDER BY id")
                .bind(batch_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Moves a batch to `state` (and sets its remote id when given), resetting its retry
    /// schedule: progress was made.
    pub async fn set_batch_state(
        &self,
        batch_id: i64,
        state: &str,
        remote_id: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Only a batch in flight moves on: one an operator aborted (`batchdrop abort`) while a
        // step was under way stays aborted.
        let moved = sqlx::query(
            "UPDATE batches SET state = ?, remote_id = COALESCE(?, remote_id), attempts = 0,
               next_attempt_at = 0, first_error_at = NULL, updated_at = ? WHERE id = ?
               AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')",
        )
        .bind(state)
        .bind(remote_id)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(());
        }
        sqlx::query("INSERT INTO events (at, batch_id, kind, detail) VALUES (?, ?, ?, ?)")
            .bind(now)
            .bind(batch_id)
            .bind(state)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a transient failure and when to try again; `counts` says whether it counts
    /// toward `max_attempts` (not when the platform could not be reached at all). Returns the
    /// attempt count and the time of the first failure in this run of failures.
    pub async fn schedule_retry(
        &self,
        batch_id: i64,
        error: &str,
        next_at: i64,
        counts: bool,
    ) -> Result<(i64, i64), StoreError> {
        let now = now_ms();
        let row: (i64, i64) = sqlx::query_as(
            "UPDATE batches SET attempts = attempts + ?, last_error = ?, next_attempt_at = ?,
               first_error_at = COALESCE(first_error_at, ?), updated_at = ? WHERE id = ?
             RETURNING attempts, first_error_at",
        )
        .bind(counts as i64)
        .bind(error)
        .bind(next_at)
        .bind(now)
        .bind(now)
        .bind(batch_id)
        .fetch_one(&self.pool)
        .await?;
        self.event(None, Some(batch_id), "retry", error).await?;
        Ok(row)
    }

    /// Delays the next poll of a processing batch. The platform answered, so the run of
    /// transient failures (if any) is over.
    pub async fn delay_batch(&self, batch_id: i64, next_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET next_attempt_at = ?, attempts = 0, first_error_at = NULL WHERE id = ?",
        )
        .bind(next_at)
        .bind(batch_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The platform answered a request about this batch: whatever fails next starts a new run
    /// of failures for `max_attempts` (which counts drives in a row where the platform answered
    /// nothing). `max_retry_age` keeps counting until real progress (`note_progress`).
    pub async fn note_answered(&self, batch_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE batches SET attempts = 0 WHERE id = ? AND attempts > 0")
            .bind(batch_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a batch's run of transient failures: a file or chunk of it was just acknowledged.
    /// `max_attempts` and `max_retry_age` count failures in a row, not over a batch's life, so a
    /// batch that keeps moving forward on a flaky platform is never given up.
    pub async fn note_progress(&self, batch_id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET attempts = 0, first_error_at = NULL WHERE id = ? AND attempts > 0",
        )
        .bind(batch_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The intent before the first PUT or INITIALIZE of a file: from now on its batch may hold
    /// bytes of it, so a change of the file on disk taints the whole batch.
    pub async fn mark_sent(&self, file_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET sent = 1, updated_at = ? WHERE id = ? AND sent = 0")
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records acknowledged bytes of a file (after a 2xx, never before).
    pub async fn set_uploaded_bytes(&self, file_id: i64, bytes: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET uploaded_bytes = ?, updated_at = ? WHERE id = ?")
            .bind(bytes)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The facts after several files' transfers, in one statement per few hundred files.
    /// Only a file still `batched` moves on (one failed or superseded meanwhile stays so).
    /// Deferring these facts a little is safe: a file not recorded as uploaded is PUT again
    /// after a crash, and a PUT replaces the file on the platform.
    pub async fn mark_uploaded_many(&self, done: &[Uploaded]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for part in done.chunks(200) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "UPDATE files SET state = 'uploaded', updated_at = ",
            );
            q.push_bind(now).push(",");
            push_case(&mut q, "sha256", part, |d| (d.file_id, &d.sha256));
            q.push(",");
            push_case(&mut q, "uploaded_bytes", part, |d| (d.file_id, d.size));
            q.push(" WHERE state = 'batched' AND id IN (");
            push_ids(&mut q, part.iter().map(|d| d.file_id));
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes a file out of the pipeline for good; the archiver moves it with `reason`.
    pub async fn fail_file(&self, file_id: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET state = 'failed', reason = ?, updated_at = ? WHERE id = ?")
            .bind(reason)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        self.event(Some(file_id), None, "failed", reason).await
    }

    /// Retires the record of a file that changed on disk after it was queued. Its current
    /// version is left where it is for the watcher to pick up as a new record once it is stable
    /// again, so old and new bytes are never mixed in one upload.
    pub async fn supersede(&self, file_id: i64, why: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE files SET state = 'superseded', finalized = 1, reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(why)
        .bind(now_ms())
        .bind(file_id)
        .execute(&self.pool)
        .await?;
        self.event(Some(file_id), None, "superseded", why).await
    }

    /// Gives a batch up (it can no longer be used on the platform): its files that are still
    /// good go back to the queue, to travel in a new batch.
    pub async fn abandon_batch(&self, batch_id: i64, reason: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE batches SET state = 'abandoned', last_error = ?, updated_at = ? WHERE id = ?
               AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')",
        )
        .bind(reason)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            // Ended meanwhile (an operator's abort): its files are not requeued.
            return Ok(());
        }
        sqlx::query(
            "UPDATE files SET state = 'ready', batch_id = NULL, uploaded_bytes = 0, sent = 0, updated_at = ?
             WHERE batch_id = ? AND state IN ('batched', 'uploaded')",
        )
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (at, batch_id, kind, detail) VALUES (?, ?, 'abandoned', ?)",
        )
        .bind(now)
        .bind(batch_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a batch's terminal outcome from the Catalog.
    pub async fn finish_batch(
        &self,
        batch_id: i64,
        state: &str,
        outcome_json: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE batches SET state = ?, outcome_json = ?, updated_at = ? WHERE id = ?
               AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')",
        )
        .bind(state)
        .bind(outcome_json)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(());
        }
        sqlx::query("INSERT INTO events (at, batch_id, kind, detail) VALUES (?, ?, ?, ?)")
            .bind(now)
            .bind(batch_id)
            .bind(state)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed batch's outcome and, in the same transaction, sends `requeue` (files of
    /// it that the platform's errors do not blame) back to the queue for a new batch.
    pub async fn finish_batch_requeueing(
        &self,
        batch_id: i64,
        state: &str,
        outcome_json: &str,
        detail: &str,
        requeue: &[i64],
        why: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE batches SET state = ?, outcome_json = ?, updated_at = ? WHERE id = ?")
            .bind(state)
            .bind(outcome_json)
            .bind(now)
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO events (at, batch_id, kind, detail) VALUES (?, ?, ?, ?)")
            .bind(now)
            .bind(batch_id)
            .bind(state)
            .bind(detail)
            .execute(&mut *tx)
            .await?;
        for id in requeue {
            sqlx::query(
                "UPDATE files SET state = 'ready', batch_id = NULL, uploaded_bytes = 0, sent = 0,
                   updated_at = ? WHERE id = ? AND batch_id = ? AND state IN ('batched', 'uploaded')",
            )
            .bind(now)
            .bind(id)
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO events (at, file_id, batch_id, kind, detail) VALUES (?, ?, ?, 'requeued', ?)",
            )
            .bind(now)
            .bind(id)
            .bind(batch_id)
            .bind(why)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- files: outcome --------------------------------------------------------------------

    /// Files whose fate is known but who have not been moved and given a receipt yet, after
    /// file id `after` (a page at a time).
    pub async fn files_to_finalize(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT f.* FROM files f LEFT JOIN batches b ON b.id = f.batch_id
             WHERE f.finalized = 0 AND f.id > ? AND (
                   f.state IN ('failed', 'duplicate')
                OR (f.state IN ('batched', 'uploaded') AND b.state IN ('success', 'failed', 'aborted')))
             ORDER BY f.id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Where files not finished yet are about to be moved (their recorded intents).
    pub async fn pending_destinations(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT final_path FROM files WHERE finalized = 0 AND final_path IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The intents of several moves (file id, destination), in one transaction.
    pub async fn set_final_paths(&self, intents: &[(i64, String)]) -> Result<(), StoreError> {
        if intents.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in intents.chunks(400) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE files SET");
            push_case(&mut q, "final_path", part, |(id, path)| (*id, path));
            q.push(" WHERE id IN (");
            push_ids(&mut q, part.iter().map(|(id, _)| *id));
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn mark_finalized(
        &self,
        file_id: i64,
        state: &str,
        final_path: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query("UPDATE files SET state = ?, finalized = 1, final_path = ?, updated_at = ? WHERE id = ?")
            .bind(state)
            .bind(final_path)
            .bind(now)
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        self.event(Some(file_id), None, "finalized", detail).await
    }

    /// [`Store::mark_finalized`] for a page of files, in one transaction.
    pub async fn mark_finalized_many(&self, done: &[Finalized]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for part in done.chunks(200) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "UPDATE files SET finalized = 1, updated_at = ",
            );
            q.push_bind(now).push(",");
            push_case(&mut q, "state", part, |d| (d.file_id, &d.state));
            q.push(",");
            push_case(&mut q, "final_path", part, |d| (d.file_id, &d.final_path));
            q.push(" WHERE id IN (");
            push_ids(&mut q, part.iter().map(|d| d.file_id));
            q.build().execute(&mut *tx).await?;
            let mut events = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO events (at, file_id, kind, detail) ",
            );
            events.push_values(part, |mut row, d| {
                row.push_bind(now)
                    .push_bind(d.file_id)
                    .push("'finalized'")
                    .push_bind(&d.detail);
            });
            events.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn file(&self, id: i64) -> Result<Option<FileRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM files WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Files last recorded under this relative path (any watch), newest first.
    pub async fn files_by_path(&self, rel_path: &str) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE rel_path = ? ORDER BY id DESC")
                .bind(rel_path)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Remote ids of the successful batches that carried a file of this name into the dataset.
    pub async fn batches_that_ingested(
        &self,
        dataset: &str,
        rel_path: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT b.remote_id FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE f.dataset = ? AND f.rel_path = ? AND b.state = 'success' AND b.remote_id IS NOT NULL",
        )
        .bind(dataset)
        .bind(rel_path)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn mark_replaced(&self, remote_ids: &[String], by: &str) -> Result<(), StoreError> {
        for id in remote_ids {
            sqlx::query("UPDATE batches SET replaced_by = ?, updated_at = ? WHERE remote_id = ?")
                .bind(by)
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Counts of files per (dataset, state).
    pub async fn file_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT dataset, state, COUNT(*) FROM files GROUP BY dataset, state ORDER BY dataset, state")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn batches_in_flight(&self) -> Result<Vec<BatchRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches WHERE state IN ('sealed', 'creating', 'loading', 'completing', 'processing') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The files of a watch in one state, oldest first.
    pub async fn files_in_state(
        &self,
        watch: &str,
        state: &str,
    ) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE watch = ? AND state = ? ORDER BY id")
                .bind(watch)
                .bind(state)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM files WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether any work is left: files not yet finalized or batches not terminal.
    pub async fn pending_work(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM files WHERE finalized = 0)
                  + (SELECT COUNT(*) FROM batches WHERE state IN ('sealed','creating','loading','completing','processing'))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// [`Store::pending_work`] outside the blocked datasets (`run --once` cannot finish what
    /// only waits for a block to be lifted).
    pub async fn pending_work_unblocked(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM files WHERE finalized = 0
                       AND dataset NOT IN (SELECT dataset FROM blocked_datasets))
                  + (SELECT COUNT(*) FROM batches WHERE state IN ('sealed','creating','loading','completing','processing')
                       AND dataset NOT IN (SELECT dataset FROM blocked_datasets))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Files that ended failed (not duplicates), for `run --once`'s exit code.
    pub async fn failed_count_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE state = 'failed' AND updated_at >= ?",
        )
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    // ---- replays and operator commands ----------------------------------------------------
    // (`.replay` sidecars, `batchdrop status|push|retry|abort|revert`)

    /// Remote ids of the batches whose data for this file name is in the dataset now: they
    /// succeeded and were neither replaced nor reverted. What an empty sidecar replaces.
    pub async fn live_batches_that_ingested(
        &self,
        dataset: &str,
        rel_path: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT b.remote_id FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE f.dataset = ? AND f.rel_path = ? AND f.state IN ('uploaded', 'done')
               AND b.state = 'success' AND b.replaced_by IS NULL AND b.remote_id IS NOT NULL
             ORDER BY b.id",
        )
        .bind(dataset)
        .bind(rel_path)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether any file of this name was ever recorded for the dataset.
    pub async fn name_known(&self, dataset: &str, rel_path: &str) -> Result<bool, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE dataset = ? AND rel_path = ?")
                .bind(dataset)
                .bind(rel_path)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// The `replay.reason` of a replay batch (its file's sidecar's), if one was given.
    pub async fn replay_reason(&self, batch_id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT replay_reason FROM files WHERE batch_id = ? AND replay_reason IS NOT NULL
             ORDER BY id LIMIT 1",
        )
        .bind(batch_id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Whether a sidecar at this path already belongs to a file still in the pipeline.
    pub async fn sidecar_claimed(&self, watch: &str, sidecar: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE watch = ? AND sidecar = ? AND finalized = 0",
        )
        .bind(watch)
        .bind(sidecar)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The unfinished record of a path in a watch (ready, in a batch, or about to be moved).
    pub async fn unfinished_file(
        &self,
        watch: &str,
        rel_path: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM files WHERE watch = ? AND rel_path = ? AND finalized = 0
             ORDER BY id DESC LIMIT 1",
        )
        .bind(watch)
        .bind(rel_path)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Attaches a sidecar that arrived after its file was queued. Only a file still `ready`
    /// (not yet in a batch) can take it; returns whether it did.
    pub async fn attach_replay(
        &self,
        file_id: i64,
        replay: &ReplayRequest,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE files SET replay_json = ?, replay_reason = ?, sidecar = ?, updated_at = ?
             WHERE id = ? AND state = 'ready' AND sidecar IS NULL",
        )
        .bind(&replay.predecessors_json)
        .bind(&replay.reason)
        .bind(&replay.sidecar)
        .bind(now_ms())
        .bind(file_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 {
            self.event(
                Some(file_id),
                None,
                "replay",
                &format!(
                    "{} replaces {}",
                    replay.sidecar.as_deref().unwrap_or("replay"),
                    replay.predecessors_json
                ),
            )
            .await?;
        }
        Ok(n > 0)
    }

    /// Fails a queued (`ready`) file because of its sidecar, which goes with it to the failed
    /// folder. Returns whether the file was still ready.
    pub async fn reject_ready_with_sidecar(
        &self,
        file_id: i64,
        reason: &str,
        sidecar: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE files SET state = 'failed', reason = ?, sidecar = ?, updated_at = ?
             WHERE id = ? AND state = 'ready' AND sidecar IS NULL",
        )
        .bind(reason)
        .bind(sidecar)
        .bind(now_ms())
        .bind(file_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 {
            self.event(Some(file_id), None, "failed", reason).await?;
        }
        Ok(n > 0)
    }

    /// A batch by the name an operator gives: the platform's id, or `#N` for a local one.
    pub async fn find_batch(&self, name: &str) -> Result<Option<BatchRow>, StoreError> {
        let name = name.trim().trim_start_matches('$');
        if let Some(n) = name.strip_prefix('#')
            && let Ok(id) = n.parse::<i64>()
        {
            return Ok(sqlx::query_as("SELECT * FROM batches WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?);
        }
        self.batch_by_remote(name).await
    }

    /// Upload progress of the batches in flight, oldest first.
    pub async fn in_flight_progress(&self) -> Result<Vec<BatchProgress>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT b.id AS id, COUNT(f.id) AS files,
                    COALESCE(SUM(f.state IN ('uploaded', 'done')), 0) AS files_uploaded,
                    COALESCE(SUM(f.state = 'failed'), 0) AS files_failed,
                    COALESCE(SUM(f.size), 0) AS bytes,
                    COALESCE(SUM(CASE WHEN f.state IN ('uploaded', 'done') THEN f.size
                                      ELSE f.uploaded_bytes END), 0) AS bytes_uploaded
             FROM batches b LEFT JOIN files f ON f.batch_id = b.id
             WHERE b.state IN ('sealed', 'creating', 'loading', 'completing', 'processing')
             GROUP BY b.id ORDER BY b.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Upload progress of one batch.
    pub async fn batch_progress(&self, batch_id: i64) -> Result<BatchProgress, StoreError> {
        Ok(sqlx::query_as(
            "SELECT ? AS id, COUNT(id) AS files,
                    COALESCE(SUM(state IN ('uploaded', 'done')), 0) AS files_uploaded,
                    COALESCE(SUM(state = 'failed'), 0) AS files_failed,
                    COALESCE(SUM(size), 0) AS bytes,
                    COALESCE(SUM(CASE WHEN state IN ('uploaded', 'done') THEN size
                                      ELSE uploaded_bytes END), 0) AS bytes_uploaded
             FROM files WHERE batch_id = ?",
        )
        .bind(batch_id)
        .bind(batch_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The latest batches that ended (any terminal state), newest first.
    pub async fn recent_batches(&self, limit: i64) -> Result<Vec<BatchRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM batches
             WHERE state NOT IN ('sealed', 'creating', 'loading', 'completing', 'processing')
             ORDER BY updated_at DESC, id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest batch of this state database (a push follows the one it sealed).
    pub async fn latest_batch(&self) -> Result<Option<BatchRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM batches ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every file recorded whose final place is `path` (archived or failed).
    pub async fn files_by_final_path(&self, path: &str) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE final_path = ? ORDER BY id DESC")
                .bind(path)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// An operator's abort, recorded before ABORT is sent: the batch ends `aborted` and its
    /// unfinished files fail with `reason`, so the daemon neither continues the batch nor
    /// requeues its files when it sees the platform's abort. Returns false when the batch was
    /// no longer in flight.
    pub async fn abort_batch(&self, batch_id: i64, reason: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE batches SET state = 'aborted', last_error = ?, updated_at = ? WHERE id = ?
               AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')",
        )
        .bind(reason)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE files SET state = 'failed', reason = ?, updated_at = ?
             WHERE batch_id = ? AND state IN ('ready', 'batched', 'uploaded') AND finalized = 0",
        )
        .bind(reason)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO events (at, batch_id, kind, detail) VALUES (?, ?, 'aborted', ?)")
            .bind(now)
            .bind(batch_id)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that a successful batch was reverted on the platform (`batchdrop revert`).
    pub async fn mark_reverted(&self, batch_id: i64, detail: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE batches SET state = 'reverted', updated_at = ? WHERE id = ? AND state = 'success'",
        )
        .bind(now_ms())
        .bind(batch_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 {
            self.event(None, Some(batch_id), "reverted", detail).await?;
        }
        Ok(n > 0)
    }

    // ---- blocked datasets (see `blocked`) ---------------------------------------------------

    /// Blocks a dataset the platform does not know. Returns false when it was blocked already
    /// (the first watch and reason to find it stay).
    pub async fn block_dataset(
        &self,
        dataset: &str,
        watch: &str,
        reason: &str,
        next_check_at: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO blocked_datasets (dataset, watch, reason, since, next_check_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset) DO NOTHING",
        )
        .bind(dataset)
        .bind(watch)
        .bind(reason)
        .bind(now_ms())
        .bind(next_check_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn blocked_datasets(&self) -> Result<Vec<BlockedDataset>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM blocked_datasets ORDER BY since, dataset")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records a check that found the dataset still missing, and when to check again.
    pub async fn still_blocked(&self, dataset: &str, next_check_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE blocked_datasets SET checks = checks + 1, next_check_at = ? WHERE dataset = ?",
        )
        .bind(next_check_at)
        .bind(dataset)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lifts a block; its batches are due again at once. Returns whether it was blocked.
    pub async fn unblock_dataset(&self, dataset: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM blocked_datasets WHERE dataset = ?")
            .bind(dataset)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Gives up the batches of `dataset` that the platform never created (it refused to:
    /// the dataset does not exist), sending their files back to the queue of their watch, which
    /// a reload pointed at another dataset. Returns how many batches.
    pub async fn requeue_unsent_batches(
        &self,
        dataset: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM batches WHERE dataset = ? AND state IN ('sealed', 'creating')
               AND remote_id IS NULL",
        )
        .bind(dataset)
        .fetch_all(&self.pool)
        .await?;
        for id in &ids {
            self.abandon_batch(*id, reason).await?;
        }
        Ok(ids.len())
    }

    /// Records each file's own record count, as the platform listed it after its batch
    /// succeeded.
    pub async fn set_file_records(&self, counts: &[(i64, i64)]) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in counts.chunks(400) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE files SET");
            push_case(&mut q, "records", part, |(id, n)| (*id, *n));
            q.push(" WHERE id IN (");
            push_ids(&mut q, part.iter().map(|(id, _)| *id));
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Where the archiver wrote a finished file's receipt (from its `finalized` event).
    pub async fn receipt_path(&self, file_id: i64) -> Result<Option<String>, StoreError> {
        let detail: Option<Option<String>> = sqlx::query_scalar(
            "SELECT detail FROM events WHERE file_id = ? AND kind = 'finalized' ORDER BY id DESC LIMIT 1",
        )
        .bind(file_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(detail
            .flatten()
            .and_then(|d| d.split_once("; receipt ").map(|(_, p)| p.to_owned())))
    }

    /// Retires a failed file's record because `batchdrop retry` put the file back in its drop
    /// folder: the watcher records it anew, and this record stays as history.
    pub async fn mark_requeued(&self, file_id: i64, detail: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE files SET state = 'superseded', updated_at = ? WHERE id = ? AND state = 'failed'",
        )
        .bind(now_ms())
        .bind(file_id)
        .execute(&self.pool)
        .await?;
        self.event(Some(file_id), None, "requeued", detail).await
    }
}

/// Takes the daemon lock of a state dir: an exclusive `flock` on `batchdrop.lock`, with the
/// holder's pid written in it so a refused second daemon can say who holds it.
/// Creates the state dir readable by its owner only (0700, whatever the umask: it holds the
/// queue and the embedded platform's token); missing parents get the usual mode.
fn create_state_dir(state_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = state_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(state_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && state_dir.is_dir() => Ok(()),
        other => other,
    }
}

fn take_lock(state_dir: &Path) -> Result<File, StoreError> {
    let path = state_dir.join("batchdrop.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = writeln!(file, "pid {}", std::process::id());
            Ok(file)
        }
        Err(_) => {
            let holder = std::fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            Err(StoreError::Locked {
                path: state_dir.to_owned(),
                holder: if holder.is_empty() {
                    "unknown process".into()
                } else {
                    holder
                },
            })
        }
    }
}

/// Serialises migrations between processes (an `flock` on `batchdrop.migrate.lock`, held
/// until the returned file is dropped).
async fn migration_lock(state_dir: &Path) -> Result<File, StoreError> {
    let path = state_dir.join("batchdrop.migrate.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
    loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            // Locked, or a filesystem without locks (the migrations then run as before).
            _ => return Ok(file),
        }
    }
}

/// The kind of network filesystem `path` is on, if it is on one.
fn network_fs_kind(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        0x0102_1997 => Some("9p"),
        _ => None,
    }
}

/// The kind of network filesystem `path` is on, if any (for `check-config`: the state dir must
/// not be on one).
pub fn network_fs(path: &Path) -> Option<&'static str> {
    network_fs_kind(path)
}

/// The checks and writes of [`Store::record_ready_with`], inside the caller's transaction.
async fn record_ready_in(
    conn: &mut sqlx::SqliteConnection,
    f: &NewFile,
    replay: Option<&ReplayRequest>,
) -> Result<Recorded, StoreError> {
    let same: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM files WHERE watch = ? AND rel_path = ? AND dev = ? AND ino = ?
           AND size = ? AND mtime_ns = ? AND NOT (state IN ('failed', 'superseded') AND finalized = 1)
         LIMIT 1",
    )
    .bind(&f.watch)
    .bind(&f.rel_path)
    .bind(f.dev)
    .bind(f.ino)
    .bind(f.size)
    .bind(f.mtime_ns)
    .fetch_optional(&mut *conn)
    .await?;
    if same.is_some() {
        return Ok(Recorded::Known);
    }
    // A path still in flight under an older identity: the uploader checks identity before
    // and after sending and restarts or fails that record, so it is left alone here, and
    // the new version waits (`Deferred`) until the older one is finished.
    let in_flight: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, state FROM files WHERE watch = ? AND rel_path = ?
           AND state IN ('ready', 'batched', 'uploaded') AND finalized = 0 LIMIT 1",
    )
    .bind(&f.watch)
    .bind(&f.rel_path)
    .fetch_optional(&mut *conn)
    .await?;
    let now = now_ms();
    let id = match in_flight {
        Some((id, state)) if state == file_state::READY => {
            sqlx::query(
                "UPDATE files SET dev = ?, ino = ?, size = ?, mtime_ns = ?, sha256 = NULL,
                   waits_for = NULL, format = ?, updated_at = ? WHERE id = ?",
            )
            .bind(f.dev)
            .bind(f.ino)
            .bind(f.size)
            .bind(f.mtime_ns)
            .bind(&f.format)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            if let Some(r) = replay {
                sqlx::query(
                    "UPDATE files SET replay_json = ?, replay_reason = ?, sidecar = ? WHERE id = ?",
                )
                .bind(&r.predecessors_json)
                .bind(&r.reason)
                .bind(&r.sidecar)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            return Ok(Recorded::Known);
        }
        Some(_) => return Ok(Recorded::Deferred),
        None => {
            sqlx::query_scalar(
                "INSERT INTO files (watch, dataset, format, multiline_json, root, rel_path, dev, ino,
                   size, mtime_ns, state, discovered_at, updated_at, replay_json, replay_reason, sidecar)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&f.watch)
            .bind(&f.dataset)
            .bind(&f.format)
            .bind(f.multiline_json)
            .bind(&f.root)
            .bind(&f.rel_path)
            .bind(f.dev)
            .bind(f.ino)
            .bind(f.size)
            .bind(f.mtime_ns)
            .bind(now)
            .bind(now)
            .bind(replay.map(|r| &r.predecessors_json))
            .bind(replay.map(|r| &r.reason))
            .bind(replay.and_then(|r| r.sidecar.as_deref()))
            .fetch_one(&mut *conn)
            .await?
        }
    };
    sqlx::query("INSERT INTO events (at, file_id, kind, detail) VALUES (?, ?, 'ready', ?)")
        .bind(now)
        .bind(id)
        .bind(format!("{} bytes", f.size))
        .execute(&mut *conn)
        .await?;
    Ok(Recorded::New(id))
}

/// The batch states in flight, for queries (`IN` + this).
const IN_FLIGHT: &str = "('sealed', 'creating', 'loading', 'completing', 'processing')";

/// A file `f` whose batch `b` carries its content into the dataset: in flight, or successful
/// and neither replaced nor reverted (content of those is no longer in the dataset).
const CARRIES: &str = "((f.state IN ('batched', 'uploaded')
      AND b.state IN ('sealed', 'creating', 'loading', 'completing', 'processing'))
   OR (f.state IN ('batched', 'uploaded', 'done') AND b.state = 'success' AND b.replaced_by IS NULL))";

/// Files of `dataset` in flight whose content is not known yet, by size (the first of each):
/// a file of one of these sizes cannot be told apart from them yet.
async fn unknown_by_size(
    conn: &mut sqlx::SqliteConnection,
    dataset: &str,
    sizes: &[i64],
) -> Result<std::collections::HashMap<i64, Carrier>, StoreError> {
    use std::collections::HashMap;
    let mut unknown: HashMap<i64, Carrier> = HashMap::new();
    for part in sizes.chunks(400) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT f.size, f.id, f.rel_path FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE f.dataset = ",
        );
        q.push_bind(dataset)
            .push(" AND f.sha256 IS NULL AND f.state IN ('batched', 'uploaded') AND b.state IN ")
            .push(IN_FLIGHT)
            .push(" AND f.size IN (");
        push_binds(&mut q, part.iter().copied());
        q.push(" ORDER BY f.id");
        let rows: Vec<(i64, i64, String)> = q.build_query_as().fetch_all(&mut *conn).await?;
        for (size, id, rel_path) in rows {
            unknown.entry(size).or_insert(Carrier {
                id,
                rel_path,
                ingested: false,
            });
        }
    }
    Ok(unknown)
}

/// Who carries each of `shas` into `dataset` now: the claim's holder while it is alive (ready
/// to travel again, in a batch in flight, or ingested), else any file ingested or on its way
/// with that content. Also returns the claims to record for the latter.
#[allow(clippy::type_complexity)]
async fn carriers_of(
    conn: &mut sqlx::SqliteConnection,
    dataset: &str,
    shas: &[&str],
) -> Result<
    (
        std::collections::HashMap<String, Carrier>,
        Vec<(String, i64)>,
    ),
    StoreError,
> {
    use std::collections::HashMap;
    let mut carriers: HashMap<String, Carrier> = HashMap::new();
    let mut claims: Vec<(String, i64)> = Vec::new();
    for part in shas.chunks(400) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT c.sha256, f.id, f.rel_path, b.state = 'success' FROM content_claims c
               JOIN files f ON f.id = c.file_id LEFT JOIN batches b ON b.id = f.batch_id
             WHERE c.dataset = ",
        );
        // A claim's holder waiting to travel again (its batch was given up) still carries it.
        q.push_bind(dataset)
            .push(" AND f.sha256 = c.sha256 AND (f.state = 'ready' OR ")
            .push(CARRIES)
            .push(") AND c.sha256 IN (");
        push_binds(&mut q, part.iter().copied());
        let rows: Vec<(String, i64, String, Option<bool>)> =
            q.build_query_as().fetch_all(&mut *conn).await?;
        for (sha, id, rel_path, ingested) in rows {
            let ingested = ingested.unwrap_or(false);
            carriers.insert(
                sha,
                Carrier {
                    id,
                    rel_path,
                    ingested,
                },
            );
        }
    }
    let unclaimed: Vec<&str> = shas
        .iter()
        .copied()
        .filter(|sha| !carriers.contains_key(*sha))
        .collect();
    for part in unclaimed.chunks(400) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT f.sha256, f.id, f.rel_path, b.state = 'success' AS ingested
             FROM files f JOIN batches b ON b.id = f.batch_id WHERE f.dataset = ",
        );
        q.push_bind(dataset)
            .push(" AND ")
            .push(CARRIES)
            .push(" AND f.sha256 IN (");
        push_binds(&mut q, part.iter().copied());
        // An ingested carrier first: it settles the question at once.
        q.push(" ORDER BY ingested DESC, f.id");
        let rows: Vec<(String, i64, String, bool)> =
            q.build_query_as().fetch_all(&mut *conn).await?;
        for (sha, id, rel_path, ingested) in rows {
            if let std::collections::hash_map::Entry::Vacant(e) = carriers.entry(sha) {
                claims.push((e.key().clone(), id));
                e.insert(Carrier {
                    id,
                    rel_path,
                    ingested,
                });
            }
        }
    }
    Ok((carriers, claims))
}

/// The [`Dedupe::OneCopy`] rule of [`Store::seal_batch`], inside its transaction: of the ready
/// files `ids`, returns those that may be sealed, and records what becomes of the others in
/// `out` (and in the store). A file may be sealed when
/// - it is a replay (the same content again is its point), or
/// - its content is not known and no other file of the dataset has its size (a file that
///   does must be hashed first), or
/// - its content is known and nobody else carries it into the dataset: it then takes the
///   claim on (dataset, content). A carrier that is ingested makes it a duplicate of that
///   carrier; one on its way makes it wait for that carrier's outcome; so does a file in
///   flight of its size whose content is not known yet.
///
/// The claim row (the primary key of `content_claims`) is what makes a second carrier
/// impossible for any writer; carriers found without one (older rows, replays, files of
/// watches that allow duplicates) are given it here.
async fn one_copy_in(
    conn: &mut sqlx::SqliteConnection,
    dataset: &str,
    ids: &[i64],
    now: i64,
    out: &mut Sealed,
) -> Result<Vec<i64>, StoreError> {
    use std::collections::{HashMap, HashSet};
    let mut candidates: Vec<Candidate> = Vec::new();
    for part in ids.chunks(400) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT id, rel_path, size, sha256, replay_json FROM files
             WHERE state = 'ready' AND id IN (",
        );
        push_ids(&mut q, part.iter().copied());
        candidates.extend(
            q.build_query_as::<Candidate>()
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    candidates.sort_by_key(|c| c.id);
    let mut sealable = Vec::new();
    let (mut hashed, mut unhashed) = (Vec::new(), Vec::new());
    for c in candidates {
        match (&c.replay_json, &c.sha256) {
            (Some(_), _) => sealable.push(c.id),
            (None, Some(_)) => hashed.push(c),
            (None, None) => unhashed.push(c),
        }
    }

    // Content not known: only a file alone with its size in the dataset goes as it is.
    if !unhashed.is_empty() {
        let mut here: HashMap<i64, usize> = HashMap::new();
        for c in &unhashed {
            *here.entry(c.size).or_default() += 1;
        }
        let sizes: Vec<i64> = here.keys().copied().collect();
        let mut known: HashMap<i64, (i64, i64)> = HashMap::new();
        for part in sizes.chunks(400) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "SELECT size, MIN(id), MAX(id) FROM files WHERE dataset = ",
            );
            q.push_bind(dataset)
                .push(" AND state IN ('ready', 'batched', 'uploaded', 'done') AND size IN (");
            push_binds(&mut q, part.iter().copied());
            q.push(" GROUP BY size");
            let rows: Vec<(i64, i64, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
            known.extend(rows.into_iter().map(|(size, lo, hi)| (size, (lo, hi))));
        }
        for c in unhashed {
            let alone = here[&c.size] == 1
                && known
                    .get(&c.size)
                    .is_none_or(|&(lo, hi)| lo == c.id && hi == c.id);
            if alone {
                sealable.push(c.id);
            } else {
                out.to_hash.push(c.id);
            }
        }
    }
    if hashed.is_empty() {
        return Ok(sealable);
    }

    let sizes: Vec<i64> = hashed
        .iter()
        .map(|c| c.size)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let unknown = unknown_by_size(conn, dataset, &sizes).await?;
    let shas: Vec<&str> = hashed
        .iter()
        .filter_map(|c| c.sha256.as_deref())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (mut carriers, mut claims) = carriers_of(conn, dataset, &shas).await?;

    let mut duplicates: Vec<(i64, Carrier)> = Vec::new();
    let mut waiting: Vec<(i64, Carrier, &'static str)> = Vec::new();
    for c in hashed {
        let sha = c.sha256.clone().expect("hashed");
        match carriers.get(&sha) {
            Some(h) if h.id == c.id => sealable.push(c.id),
            Some(h) if h.ingested => duplicates.push((c.id, h.clone())),
            _ if unknown.contains_key(&c.size) => waiting.push((
                c.id,
                unknown[&c.size].clone(),
                "same size, content not known yet",
            )),
            Some(h) => waiting.push((c.id, h.clone(), "same content")),
            None => {
                sealable.push(c.id);
                claims.push((sha.clone(), c.id));
                carriers.insert(
                    sha,
                    Carrier {
                        id: c.id,
                        rel_path: c.rel_path,
                        ingested: false,
                    },
                );
            }
        }
    }
    for part in claims.chunks(300) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO content_claims (dataset, sha256, file_id) ",
        );
        q.push_values(part, |mut row, (sha, id)| {
            row.push_bind(dataset).push_bind(sha).push_bind(*id);
        });
        q.push(" ON CONFLICT (dataset, sha256) DO UPDATE SET file_id = excluded.file_id");
        q.build().execute(&mut *conn).await?;
    }
    for part in duplicates.chunks(200) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "UPDATE files SET state = 'duplicate', waits_for = NULL, updated_at = ",
        );
        q.push_bind(now).push(",");
        push_case(&mut q, "duplicate_of", part, |(id, h)| (*id, h.id));
        q.push(" WHERE state = 'ready' AND id IN (");
        push_ids(&mut q, part.iter().map(|(id, _)| *id));
        q.build().execute(&mut *conn).await?;
        let mut events = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (at, file_id, kind, detail) ",
        );
        events.push_values(part, |mut row, (id, h)| {
            row.push_bind(now)
                .push_bind(*id)
                .push("'duplicate'")
                .push_bind(format!("same content as {}", h.rel_path));
        });
        events.build().execute(&mut *conn).await?;
    }
    for part in waiting.chunks(200) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE files SET updated_at = ");
        q.push_bind(now).push(",");
        push_case(&mut q, "waits_for", part, |(id, h, _)| (*id, h.id));
        q.push(" WHERE state = 'ready' AND id IN (");
        push_ids(&mut q, part.iter().map(|(id, _, _)| *id));
        q.build().execute(&mut *conn).await?;
        let mut events = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (at, file_id, kind, detail) ",
        );
        events.push_values(part, |mut row, (id, h, why)| {
            row.push_bind(now)
                .push_bind(*id)
                .push("'waiting'")
                .push_bind(format!("waits for the outcome of {} ({why})", h.rel_path));
        });
        events.build().execute(&mut *conn).await?;
    }
    let left_out = |id: i64, h: Carrier| LeftOut {
        file: id,
        carrier: h.id,
        carrier_path: h.rel_path,
    };
    out.duplicates = duplicates
        .into_iter()
        .map(|(id, h)| left_out(id, h))
        .collect();
    out.waiting = waiting
        .into_iter()
        .map(|(id, h, _)| left_out(id, h))
        .collect();
    Ok(sealable)
}

/// Appends `id1, id2, …)`: the end of a ` WHERE id IN (` list.
fn push_ids(q: &mut sqlx::QueryBuilder<sqlx::Sqlite>, ids: impl Iterator<Item = i64>) {
    push_binds(q, ids);
}

/// Appends `v1, v2, …)`: the end of an ` IN (` list of bound values.
fn push_binds<'a, V>(q: &mut sqlx::QueryBuilder<sqlx::Sqlite>, values: impl Iterator<Item = V>)
where
    V: 'a + sqlx::Encode<'a, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    let mut list = q.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    q.push(")");
}

/// Appends ` col = CASE id WHEN id1 THEN v1 … END` to an UPDATE: one statement sets a
/// different value per row (see the `*_many` methods).
fn push_case<'a, T, V>(
    q: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    column: &str,
    rows: &'a [T],
    each: impl Fn(&'a T) -> (i64, V),
) where
    V: sqlx::Encode<'a, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    q.push(format_args!(" {column} = CASE id"));
    for row in rows {
        let (id, value) = each(row);
        q.push(" WHEN ")
            .push_bind(id)
            .push(" THEN ")
            .push_bind(value);
    }
    q.push(" END");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file(rel: &str, size: i64) -> NewFile {
        NewFile {
            watch: "w".into(),
            dataset: "d".into(),
            format: "json".into(),
            multiline_json: false,
            root: "/nowhere".into(),
            rel_path: rel.into(),
            dev: 1,
            ino: rel.len() as i64 + size,
            size,
            mtime_ns: 0,
            raw_path: None,
        }
    }

    async fn ready(store: &Store, files: &[(&str, i64, Option<&str>)]) -> Vec<i64> {
        let new: Vec<NewFile> = files.iter().map(|(r, s, _)| new_file(r, *s)).collect();
        let ids: Vec<i64> = store
            .record_ready_many(&new)
            .await
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Recorded::New(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        let shas: Vec<(i64, String)> = ids
            .iter()
            .zip(files)
            .filter_map(|(id, (_, _, sha))| sha.map(|s| (*id, s.to_owned())))
            .collect();
        store.set_shas(&shas).await.unwrap();
        ids
    }

    async fn seal(store: &Store, ids: &[i64]) -> Sealed {
        store
            .seal_batch("w", "d", "json", false, None, ids, Dedupe::OneCopy)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_copy_per_content_waits_for_the_first_and_follows_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_exclusive(dir.path(), false).await.unwrap();
        let ids = ready(
            &store,
            &[
                ("a", 5, Some("X")),
                ("b", 5, Some("X")),
                ("c", 5, Some("X")),
            ],
        )
        .await;
        let first = seal(&store, &ids).await;
        assert_eq!(first.files, vec![ids[0]]);
        let waiting: Vec<(i64, i64)> = first.waiting.iter().map(|w| (w.file, w.carrier)).collect();
        assert_eq!(waiting, vec![(ids[1], ids[0]), (ids[2], ids[0])]);
        assert!(
            store.ready_files("w", 10).await.unwrap().is_empty(),
            "waiting files are out of the way"
        );
        assert_eq!(
            store.release_waiting().await.unwrap(),
            0,
            "the first is still in flight"
        );

        // Its batch fails: the next copy goes after all, the last one waits for it.
        let batch = first.batch_id.unwrap();
        store
            .finish_batch(batch, batch_state::FAILED, "{}", "failed")
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 2);
        let second = seal(&store, &ids[1..]).await;
        assert_eq!(second.files, vec![ids[1]]);
        assert_eq!(second.waiting.len(), 1);

        // That one succeeds: the last copy is its duplicate.
        let batch = second.batch_id.unwrap();
        store
            .finish_batch(batch, batch_state::SUCCESS, "{}", "ok")
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 1);
        let third = seal(&store, &ids[2..]).await;
        assert_eq!(third.batch_id, None);
        assert_eq!(third.duplicates.len(), 1);
        assert_eq!(third.duplicates[0].carrier, ids[1]);
        let dup = store.file(ids[2]).await.unwrap().unwrap();
        assert_eq!(
            (dup.state.as_str(), dup.duplicate_of),
            ("duplicate", Some(ids[1]))
        );
    }

    #[tokio::test]
    async fn a_file_of_the_size_of_one_in_flight_with_no_hash_yet_waits_for_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_exclusive(dir.path(), false).await.unwrap();
        let first = ready(&store, &[("big", 9, None)]).await;
        let sealed = seal(&store, &first).await;
        assert_eq!(
            sealed.files, first,
            "alone with its size: sealed without a hash"
        );

        // Same size: unhashed, it must be hashed first; hashed, it waits for the first's hash.
        let second = ready(&store, &[("twin", 9, None)]).await;
        assert_eq!(seal(&store, &second).await.to_hash, second);
        store.set_shas(&[(second[0], "Y".into())]).await.unwrap();
        let waits = seal(&store, &second).await;
        assert_eq!(waits.waiting[0].carrier, first[0]);

        // The first one's upload tells its content: another one, so the twin goes.
        store
            .mark_uploaded_many(&[Uploaded {
                file_id: first[0],
                sha256: "Z".into(),
                size: 9,
            }])
            .await
            .unwrap();
        assert_eq!(store.release_waiting().await.unwrap(), 1);
        assert_eq!(seal(&store, &second).await.files, second);
    }
}
