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
//! - `staged.rs`: the staged files of watches that map their files.
//! - `commands.rs`: what the operator's commands and `/metrics` read and record.
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

/// The batch states in flight as an SQL list, for `concat!` (`state IN ` + this); a test
/// holds it to [`BatchState::in_flight`].
macro_rules! in_flight {
    () => {
        "('sealed', 'creating', 'loading', 'completing', 'processing')"
    };
}

mod batching;
mod blocked;
mod commands;
mod events;
mod fleet;
mod intake;
mod isolation;
mod model;
mod outcome;
#[cfg(test)]
mod plans;
mod postgres;
mod sqlite;
mod staged;
mod stuck;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod transitions;
mod upload;
mod values;

use std::fs::File;
use std::path::{Path, PathBuf};

use sqlite::{Db, Pool};

pub use fleet::{Claim, FileKey, Fleet, Guarded, InstanceRow, Lease, LeaseOn, Member};
pub use isolation::Split;
pub use model::*;
pub use sqlite::network_fs;
pub use staged::{RejectedRow, StagedFile};
pub use values::{BatchOutcome, BatchPhase, BatchState, FileState, Predecessors, Step, Verdict};

/// A statement built piece by piece (lists of values, one `CASE` per row): its placeholders
/// are the backend's own.
type QueryBuilder = sqlx::QueryBuilder<Db>;
/// One connection of the backend, for the steps of a transaction.
type Conn = <Db as sqlx::Database>::Connection;

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

/// Space kept free on the state directory's filesystem: below it, no new file is taken, so that
/// the files already taken can finish (each still needs a few small writes).
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Handle to the state database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    path: PathBuf,
    // Held for the life of the daemon: the OS drops the lock when the process dies, even by
    // SIGKILL, so a stale lock can never keep a restarted daemon out.
    _lock: Option<std::sync::Arc<File>>,
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Readiness: the database takes a write (a full disk or a read-only mount fails it).
    pub async fn ping_write(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM health_probe")
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO health_probe (at) VALUES ($1)")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Appends `id1, id2, …)`: the end of a ` WHERE id IN (` list.
fn push_ids(q: &mut QueryBuilder, ids: impl Iterator<Item = i64>) {
    push_binds(q, ids);
}

/// Appends `v1, v2, …)`: the end of an ` IN (` list of bound values.
fn push_binds<'a, V>(q: &mut QueryBuilder, values: impl Iterator<Item = V>)
where
    V: 'a + sqlx::Encode<'a, Db> + sqlx::Type<Db>,
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
    q: &mut QueryBuilder,
    column: &str,
    rows: &'a [T],
    each: impl Fn(&'a T) -> (i64, V),
) where
    V: sqlx::Encode<'a, Db> + sqlx::Type<Db>,
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
