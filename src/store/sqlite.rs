//! Everything SQLite-specific about the store: where the database lives (`state_dir`, created
//! private to its owner), its connection and durability settings (see the module above), the
//! one-daemon-per-state-dir lock, migrations (serialised between processes), and the refusal of
//! network filesystems, where SQLite's locks are unreliable.
//!
//! Fleet mode's shared database has its own such file (`postgres.rs`); the queries are shared.
//! This module must not hold queries of the queue itself.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Backend, Queue, Store, StoreError};

type Pool = sqlx::SqlitePool;

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
        if !allow_network_fs && let Some(fs) = network_fs(state_dir) {
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
        let path = state_dir.join(DB_FILE);
        // Short: a lock held longer by another process is reported (`StoreTrouble`) and
        // waited out by the stages, instead of stalling them silently.
        let pool = connect(&path, true, Duration::from_secs(5)).await?;
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
            backend: Backend::Sqlite(Queue { pool }),
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
        let path = state_dir.join(DB_FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if !path.exists() {
                return Ok(None);
            }
            let pool = connect(&path, false, Duration::from_secs(30)).await?;
            let applied: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
            if applied >= sqlx::migrate!("./migrations").iter().count() as i64 {
                return Ok(Some(Store {
                    backend: Backend::Sqlite(Queue { pool }),
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

    /// Bytes free for the state database on its filesystem, if the OS says (fleet mode's
    /// database server keeps its own disk: `None`).
    pub fn free_bytes(&self) -> Option<u64> {
        if self.is_shared() {
            return None;
        }
        let st = rustix::fs::statvfs(self.path.parent()?).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

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

/// Takes the daemon lock of a state dir: an exclusive `flock` on `batchdrop.lock`, with the
/// holder's pid written in it so a refused second daemon can say who holds it.
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

/// The kind of network filesystem `path` is on, if it is on one (the daemon refuses such a
/// state dir; `check-config` says so).
pub fn network_fs(path: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(path).ok()?;
    #[allow(clippy::unnecessary_cast)] // its type differs between targets
    match st.f_type as i64 {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        0x0102_1997 => Some("9p"),
        _ => None,
    }
}

/// The database's file in the state dir.
const DB_FILE: &str = "batchdrop.db";

/// One connection (see the durability notes of the store): WAL, `synchronous = NORMAL`,
/// foreign keys on, temporary storage in memory; `busy` is how long a statement waits for
/// another process's lock.
async fn connect(path: &Path, create: bool, busy: Duration) -> Result<Pool, StoreError> {
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .expect("static URL")
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // A statement of a multi-statement transaction keeps the pages it changes in a
        // statement journal (to undo it alone if it fails); beyond 64 KiB SQLite moves that
        // journal to a temporary file, which every page of the queue's multi-row updates was
        // then written to and deleted. In memory it costs at most the pages one statement
        // changes (a page of a few hundred files).
        .pragma("temp_store", "MEMORY")
        // Rows cross from SQLite's worker thread in a bounded channel: once it is full, every
        // row taken wakes the worker to send one more, two thread switches a row. The queue's
        // reads are pages of a few hundred rows (a batch's files: up to its `max_files`),
        // which `fetch_all` holds whole anyway.
        .row_buffer_size(1024)
        .busy_timeout(busy);
    SqlitePoolOptions::new()
        .max_connections(1)
        // The default ping before each use is one more round trip to that thread per
        // statement or transaction; a local file's connection does not drop like a socket's,
        // and a broken one fails the statement itself.
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Db {
            path: path.to_owned(),
            source,
        })
}

/// SQLite's twin of `postgres::commit_without_flush`: nothing to do, `synchronous = NORMAL`
/// already commits every transaction without a flush.
pub(super) async fn commit_without_flush(
    _: &mut sqlx::SqliteConnection,
) -> Result<(), sqlx::Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{sqlite_pool, temp_store};

    #[tokio::test]
    async fn the_connection_keeps_temporary_storage_in_memory() {
        // 2 is MEMORY; the bundled SQLite's default (1, FILE) spills statement journals over
        // 64 KiB to temporary files.
        let (_dir, store) = temp_store().await;
        let (mode,): (i64,) = sqlx::query_as("PRAGMA temp_store")
            .fetch_one(sqlite_pool(&store))
            .await
            .unwrap();
        assert_eq!(mode, 2);
    }

    #[tokio::test]
    async fn the_pool_sends_no_ping_before_each_statement() {
        let (_dir, store) = temp_store().await;
        assert!(!sqlite_pool(&store).options().get_test_before_acquire());
    }
}
