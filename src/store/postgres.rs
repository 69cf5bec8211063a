//! Everything PostgreSQL-specific about fleet mode's database: connecting with the password
//! read from its file or environment variable (never logged, never in the URL), the pool, and
//! the migrations of `migrations/postgres/` (PostgreSQL's migrator serialises concurrent
//! instances itself, with an advisory lock, so a fleet starting at once migrates once), and
//! the commit that need not wait for the disk (`commit_without_flush`).
//!
//! This module must not hold queries of the queue or of the fleet's coordination.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreError;
use crate::config::{PasswordSource, PostgresState};

pub(super) type PgPool = sqlx::PgPool;

/// Connects to the database of `state` and brings its schema up to date. The connections of
/// an `instance` of the fleet carry its id, by which the database refuses that instance's
/// changes to batches leased to another (migration 0090).
pub(super) async fn connect(
    state: &PostgresState,
    instance: Option<&str>,
) -> Result<PgPool, StoreError> {
    let db_error = |source| StoreError::Postgres {
        url: state.url.clone(),
        source,
    };
    let mut options = PgConnectOptions::from_str(&state.url).map_err(db_error)?;
    if let Some(source) = &state.password {
        options = options.password(read_password(source)?.trim_end_matches(['\r', '\n']));
    }
    // An instance frozen in the middle of a transaction (SIGSTOP, a paused VM, a debugger)
    // would hold its row locks for as long as it stays frozen, and every other instance's
    // statement on those rows would wait as long: the server ends such a session instead.
    // batchdrop's transactions hold no work but the database's, so none of them is ever idle
    // this long while its instance runs.
    let mut startup = vec![("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)];
    if let Some(id) = instance {
        startup.push(("batchdrop.instance", id));
    }
    options = options.options(startup);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        // A database that does not answer pauses the caller's stage for this long, then the
        // stage reports it and tries again (a database outage pauses work, it loses none).
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(db_error)?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|source| StoreError::PostgresMigrate {
            url: state.url.clone(),
            source,
        })?;
    Ok(pool)
}

/// How long the server lets a session sit idle inside a transaction (see `connect`): far
/// beyond any gap inside a transaction of a running instance, and under a minute of the
/// fleet's time lost to a frozen one.
const IDLE_IN_TRANSACTION: &str = "45s";

/// The password, read now (a rotated file is picked up by the next connection).
fn read_password(source: &PasswordSource) -> Result<String, StoreError> {
    match source {
        PasswordSource::File(path) => {
            std::fs::read_to_string(path).map_err(|error| StoreError::Password {
                what: format!(
                    "cannot read the database password file {}: {error}",
                    path.display()
                ),
            })
        }
        PasswordSource::Env(var) => std::env::var(var).map_err(|_| StoreError::Password {
            what: format!(
                "the environment variable {var} (named by [state] password_env) is not set"
            ),
        }),
    }
}

/// Lets the transaction on `conn` commit without waiting for its WAL to reach the disk, for
/// facts whose loss costs a repeated idempotent call (see the callers), as SQLite's
/// `synchronous = NORMAL` commits every transaction. Only a crash of the database server can
/// lose such a commit, and never alone: any later commit that waits (the next intent) writes
/// the WAL up to itself, this one included.
pub(super) async fn commit_without_flush(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::IDLE_IN_TRANSACTION;
    use crate::store::testing::{postgres_pool, temp_postgres_store};

    #[tokio::test]
    async fn the_server_ends_a_session_left_idle_in_a_transaction() {
        let store = temp_postgres_store().await;
        let pool = postgres_pool(&store);
        let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(timeout, IDLE_IN_TRANSACTION);
    }
}
