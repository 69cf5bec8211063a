//! The state database: the only module with SQL in it.
//!
//! The store is batchdrop's only queue. Every stage reads its work from here and writes its
//! result back here before it tells anyone; in-process channels only wake stages up. This module
//! owns the schema (through `migrations/`), the durability settings, the one-daemon-per-state-dir
//! lock and every query. It must not do I/O on drop folders or talk to the platform.
//!
//! Its files follow a file's way through the daemon; each adds its part of the `Store` API:
//! - `sqlite.rs`: everything SQLite-specific: where the database lives (the state dir), its
//!   connection and durability settings, the daemon lock, migrations, the network-fs check.
//! - `model.rs`: the rows and values the API takes and returns (states, rows, requests).
//! - `events.rs`: the append-only history of files and batches.
//! - `intake.rs`: files becoming ready (the watcher, `push`), sidecars attached to them.
//! - `batching.rs`: ready files sealed into batches, with the one-copy-per-content rule.
//! - `upload.rs`: a batch's way to the platform: its states, retries, each file's transfer.
//! - `outcome.rs`: terminal batches and finished files (the poller and the archiver).
//! - `blocked.rs`: datasets the platform does not know.
//! - `budgets.rs`: the daily batch budget each watch runs under, for `status`.
//! - `staged.rs`: the staged files of watches that map their files.
//! - `commands.rs`: what the operator's commands and `/metrics` read and record.
//! - `per_row.rs`: how one statement gives each row of a page its own values, per backend.
//! - `postgres.rs`, `fleet.rs`: fleet mode's shared PostgreSQL database (connection and
//!   migrations; the instances, claims and leases that coordinate a fleet). The queue's own
//!   queries do not run on it yet (docs/fleet.md says what works).
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
//! - `temp_store = MEMORY`: statement journals (which undo one failed statement inside a
//!   transaction) stay in memory instead of temporary files; what a commit makes durable is
//!   the WAL's business alone, so durability is unchanged.

/// The batch states in flight as an SQL list, for `concat!` (`state IN ` + this); a test
/// holds it to [`BatchState::in_flight`].
macro_rules! in_flight {
    () => {
        "('sealed', 'creating', 'loading', 'completing', 'processing')"
    };
}

/// A file row's `state` as a value to check, not an index key to search by: for
/// `WHERE {row_state!()} = 'ready' AND id IN (…)`. SQLite's planner has no statistics and
/// takes `state = …` for a rare value, so it would walk every file of that state in
/// `files_state` to find the few listed (all the queue's ready files, each time); behind the
/// cast the listed ids are looked up by their key and only their state is checked.
/// PostgreSQL reads the cast as the plain column.
macro_rules! row_state {
    () => {
        "CAST(state AS TEXT)"
    };
}

mod dispatch;
mod fleet;
mod model;
mod per_row;
#[cfg(test)]
mod plans;
mod postgres;
mod sqlite;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod transitions;
mod values;

/// The queue's queries on SQLite: `queries.rs` with `Db` = SQLite (the `path` keeps its files
/// in this directory).
#[path = "."]
mod on_sqlite {
    type Db = sqlx::Sqlite;
    use super::per_row::sqlite::push_per_row;
    use super::sqlite::commit_without_flush;
    // The queries stay `pub` in their files: `dispatch.rs` is what makes them the API. Loading
    // them twice, once per `Db`, is the point.
    #[allow(unreachable_pub, clippy::duplicate_mod)]
    #[path = "queries.rs"]
    mod queries;
}

/// The same queries on PostgreSQL (fleet mode).
#[path = "."]
mod on_postgres {
    type Db = sqlx::Postgres;
    use super::per_row::postgres::push_per_row;
    use super::postgres::commit_without_flush;
    #[allow(unreachable_pub, clippy::duplicate_mod)]
    #[path = "queries.rs"]
    mod queries;
}

use std::fs::File;
use std::path::{Path, PathBuf};

pub use fleet::{
    Acquired, Claim, FileKey, Fleet, Guarded, InstanceRow, Lease, LeaseOn, Member, Renewed,
};
pub use model::*;
pub use sqlite::network_fs;
pub use values::{BatchOutcome, BatchPhase, BatchState, FileState, Predecessors, Step, Verdict};

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
    #[error(
        "fleet database {url}: {source}; check that PostgreSQL runs there and that the URL's user, database and [state] password are right"
    )]
    Postgres { url: String, source: sqlx::Error },
    #[error("migrating the fleet database {url}: {source}")]
    PostgresMigrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("fleet database password: {what}")]
    Password { what: String },
    #[error("migrating state database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
}

impl StoreError {
    /// What an operator should know about an error met while running: the usual causes
    /// (another process holding a lock, a full disk, fleet mode's database out of reach) in
    /// words, for the backend that raised it, then the database's own message.
    pub fn explain(&self) -> String {
        let source = match self {
            StoreError::Query(source)
            | StoreError::Db { source, .. }
            | StoreError::Postgres { source, .. } => Some(source),
            _ => None,
        };
        let what = match source {
            Some(sqlx::Error::Database(db)) => {
                match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    Some(pg) => postgres_cause(pg.code()),
                    None => sqlite_cause(db.code().and_then(|c| c.parse::<i64>().ok())),
                }
            }
            Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                "the state database does not answer (fleet mode: is PostgreSQL running and \
                 reachable from this machine?)"
            }
            _ => "the state database failed",
        };
        format!("{what}: {self}")
    }
}

/// SQLite's primary result code (the low byte of its extended code) in words.
fn sqlite_cause(code: Option<i64>) -> &'static str {
    match code.map(|c| c & 0xff) {
        Some(5) | Some(6) => {
            "the state database is locked by another process (a `sqlite3` shell or a backup \
             holding a transaction?)"
        }
        Some(13) => "the state directory's disk is full",
        Some(8) => "the state database is read-only",
        Some(10) => "the state database cannot be read or written (I/O error)",
        _ => "the state database failed",
    }
}

/// PostgreSQL's SQLSTATE in words.
fn postgres_cause(sqlstate: &str) -> &'static str {
    match sqlstate {
        "BD001" => {
            "this instance no longer holds the batch's lease (it was paused or cut off past it, \
             and another instance took the batch over): the change was refused and the batch is \
             left to its new owner"
        }
        "BD002" => {
            "this instance is no longer the scanner of the file's watch (it was paused or cut off \
             past its scan lease, and another instance took the role over): the file was not \
             recorded by this instance, and the new scanner records it"
        }
        "53100" => "the fleet database's disk is full",
        "25006" => "the fleet database is read-only (a standby, or default_transaction_read_only?)",
        "40001" | "40P01" => {
            "two instances changed the same rows at once and PostgreSQL gave up on one"
        }
        "55P03" => "a row or table of the fleet database is locked by another session",
        code if code.starts_with("53") => {
            "the fleet database is out of resources (memory, connections)"
        }
        code if code.starts_with("57P") || code.starts_with("08") => {
            "the fleet database is shutting down, restarting or unreachable"
        }
        code if code.starts_with("28") => {
            "the fleet database refused this user or password (see [state] password_file or password_env)"
        }
        _ => "the fleet database failed",
    }
}

/// Space kept free on the state directory's filesystem: below it, no new file is taken, so that
/// the files already taken can finish (each still needs a few small writes).
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Handle to the state database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Where the state lives, for messages: the SQLite file, or fleet mode's database URL
    /// (which never holds the password).
    path: PathBuf,
    // Held for the life of the daemon: the OS drops the lock when the process dies, even by
    // SIGKILL, so a stale lock can never keep a restarted daemon out.
    _lock: Option<std::sync::Arc<File>>,
}

/// The database the queue runs on; every call of the API goes to the same queries
/// (`queries.rs`) compiled for it (see `dispatch.rs`).
#[derive(Clone)]
enum Backend {
    Sqlite(Queue<sqlx::Sqlite>),
    Postgres(Queue<sqlx::Postgres>),
}

/// The queue on one backend: the query files add their methods to it once per backend.
struct Queue<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
}

impl<DB: sqlx::Database> Clone for Queue<DB> {
    fn clone(&self) -> Self {
        Queue {
            pool: self.pool.clone(),
        }
    }
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the queue in fleet mode's shared database, on a pool [`Fleet::connect`] opened
    /// (and migrated): the instances of a fleet share one queue, so no lock is taken.
    pub fn on_fleet(fleet: &Fleet) -> Store {
        Store {
            backend: Backend::Postgres(Queue {
                pool: fleet.pool().clone(),
            }),
            path: PathBuf::from(fleet.url()),
            _lock: None,
        }
    }

    /// Whether the queue is fleet mode's shared database.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
}
