//! The queue's queries, written once and compiled once per backend (`mod.rs` includes this
//! file under `on_sqlite` and `on_postgres`, each naming its `Db`): the same text runs on
//! SQLite and on fleet mode's PostgreSQL (`$1` placeholders, `RETURNING`, `ON CONFLICT`, flags
//! compared to `FALSE`/`TRUE`). Each file below adds its part to `Queue<Db>`; `dispatch.rs`
//! sends every call of the public `Store` to the backend's.
//!
//! This module must not hold anything that only one backend understands: that belongs in
//! `sqlite.rs` or `postgres.rs`.

#[allow(unused_imports)] // the files below take their names from here
use crate::store::*;

use super::{Db, commit_without_flush, push_per_row};
use crate::store::per_row::PerRow;

/// The queue on this backend: the files below say `impl Store`.
type Store = crate::store::Queue<Db>;
/// A statement built piece by piece (lists of values, values per row): its placeholders are
/// the backend's own.
type QueryBuilder = sqlx::QueryBuilder<Db>;
/// One connection of the backend, for the steps of a transaction.
type Conn = <Db as sqlx::Database>::Connection;

#[path = "batching.rs"]
mod batching;
#[path = "blocked.rs"]
mod blocked;
#[path = "budgets.rs"]
mod budgets;
#[path = "commands.rs"]
mod commands;
#[path = "events.rs"]
mod events;
#[path = "intake.rs"]
mod intake;
#[path = "isolation.rs"]
mod isolation;
#[path = "outcome.rs"]
mod outcome;
#[path = "staged.rs"]
mod staged;
#[path = "stuck.rs"]
mod stuck;
#[path = "upload.rs"]
mod upload;

impl Store {
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

/// Collects `rows`, of a query that returns at most `limit` of them, into a vector that never
/// makes room for more: `fetch_all` doubles its room as rows arrive, so a page of a little
/// over a power of two rows held room for nearly twice as many, at the daemon's peak.
async fn fetch_page<T>(
    rows: impl futures::Stream<Item = Result<T, sqlx::Error>>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    use futures::TryStreamExt;
    let mut rows = std::pin::pin!(rows);
    let mut page = Vec::new();
    while let Some(row) = rows.try_next().await? {
        if page.len() == page.capacity() {
            let room = (page.capacity() * 2).max(8).min(limit.max(page.len() + 1));
            page.reserve_exact(room - page.len());
        }
        page.push(row);
    }
    Ok(page)
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
