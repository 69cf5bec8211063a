//! The append-only history of files and batches (`batchdrop status FILE|BATCH` shows it).
//! Every other part of the store records its events through [`insert_event`] (one) or
//! [`insert_events`] (a page of them, one statement), inside its own transaction.

use super::{BatchState, Conn, Db, EventRow, QueryBuilder, Store, StoreError};

/// What happened. Written as the `kind` column's text; `status` shows it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A file was queued.
    Ready,
    /// A file was refused at intake (the reason is the detail).
    Rejected,
    /// A `.replay` sidecar was attached to its queued file.
    Replay,
    /// A file's content is already in the dataset.
    Duplicate,
    /// A file waits for the outcome of another that carries (or may carry) its content.
    Waiting,
    /// A batch was sealed.
    Sealed,
    /// A batch moved on (an intent or a fact of the upload), or ended.
    Batch(BatchState),
    /// A transient failure of a batch, and when it is tried again.
    Retry,
    Failed,
    Superseded,
    /// A file went back to the queue (`retry`, or its batch failed without blaming it).
    Requeued,
    /// A file was moved and its receipt written.
    Finalized,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ready => "ready",
            Kind::Rejected => "rejected",
            Kind::Replay => "replay",
            Kind::Duplicate => "duplicate",
            Kind::Waiting => "waiting",
            Kind::Sealed => "sealed",
            Kind::Batch(state) => state.as_str(),
            Kind::Retry => "retry",
            Kind::Failed => "failed",
            Kind::Superseded => "superseded",
            Kind::Requeued => "requeued",
            Kind::Finalized => "finalized",
        }
    }
}

/// One event, of a file, of a batch, or of a file in a batch.
pub(super) struct Event<'a> {
    pub(super) file: Option<i64>,
    pub(super) batch: Option<i64>,
    pub(super) kind: Kind,
    pub(super) detail: &'a str,
}

impl<'a> Event<'a> {
    pub(super) fn file(file: i64, kind: Kind, detail: &'a str) -> Event<'a> {
        Event {
            file: Some(file),
            batch: None,
            kind,
            detail,
        }
    }

    pub(super) fn batch(batch: i64, kind: Kind, detail: &'a str) -> Event<'a> {
        Event {
            file: None,
            batch: Some(batch),
            kind,
            detail,
        }
    }
}

/// Records one event at `at` (unix ms).
pub(super) async fn insert_event<'c>(
    db: impl sqlx::Executor<'c, Database = Db>,
    at: i64,
    event: Event<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (at, file_id, batch_id, kind, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(at)
    .bind(event.file)
    .bind(event.batch)
    .bind(event.kind.as_str())
    .bind(event.detail)
    .execute(db)
    .await?;
    Ok(())
}

/// Records many events at `at` in one statement (a statement is a round trip to SQLite's
/// thread; a page of files costs one, not one per file). Callers keep pages to a few hundred.
pub(super) async fn insert_events(
    conn: &mut Conn,
    at: i64,
    events: &[Event<'_>],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::new("INSERT INTO events (at, file_id, batch_id, kind, detail) ");
    q.push_values(events, |mut row, event| {
        row.push_bind(at)
            .push_bind(event.file)
            .push_bind(event.batch)
            .push_bind(event.kind.as_str())
            .push_bind(event.detail.to_owned());
    });
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// Records that `files` left batch `batch` to travel again, with `why` (a page of a few
/// hundred at most, as [`insert_events`]).
pub(super) async fn insert_requeued(
    conn: &mut Conn,
    at: i64,
    batch: i64,
    files: &[i64],
    why: &str,
) -> Result<(), StoreError> {
    let events: Vec<Event> = files
        .iter()
        .map(|&file| Event {
            file: Some(file),
            batch: Some(batch),
            kind: Kind::Requeued,
            detail: why,
        })
        .collect();
    insert_events(conn, at, &events).await
}

impl Store {
    /// A file's events, and those of the batch it is (or was last) in.
    pub async fn events_for_file(&self, file_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, file_id, batch_id, kind, detail FROM events
             WHERE file_id = $1 OR batch_id = (SELECT batch_id FROM files WHERE id = $1)
             ORDER BY id",
        )
        .bind(file_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events_for_batch(&self, batch_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, file_id, batch_id, kind, detail FROM events WHERE batch_id = $1 ORDER BY id",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
