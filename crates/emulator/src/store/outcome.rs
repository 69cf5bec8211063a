//! What processing leaves behind: a batch's outcome (status, metrics, errors), its files'
//! record counts, its failed rows, the current view of upsert datasets, and the replay
//! bookkeeping of its predecessors; all written in one transaction ([`OutcomeTx`]), and read
//! back by Data Access.

use sqlx::{Sqlite, Transaction};

use super::rows::{BatchStatus, CurrentRow, FailedRow, NewFailedRow};
use super::{DbError, Store};

/// One batch's outcome being recorded: nothing of it is visible until [`OutcomeTx::commit`].
/// A file's outcome, for [`OutcomeTx::set_file_outcomes`].
pub struct FileOutcome<'a> {
    pub file_id: &'a str,
    pub records: u64,
    pub served_size: Option<u64>,
}

/// Files per statement of [`OutcomeTx::set_file_outcomes`] (three parameters each, well under
/// SQLite's limit of 32,766).
const OUTCOMES_PER_STATEMENT: usize = 500;

pub struct OutcomeTx {
    tx: Transaction<'static, Sqlite>,
}

impl Store {
    pub async fn begin_outcome(&self) -> Result<OutcomeTx, DbError> {
        Ok(OutcomeTx {
            tx: self.pool.begin().await?,
        })
    }

    /// The failed rows kept for a batch, in the order they were found.
    pub async fn failed_rows(&self, batch_id: &str) -> Result<Vec<FailedRow>, DbError> {
        sqlx::query_as(
            "SELECT file_path, row_no, code, message, raw, errors FROM failed_rows WHERE batch_id = ? ORDER BY seq",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The current record of one identity of an upsert dataset.
    pub async fn current_record(
        &self,
        dataset_id: &str,
        identity: &str,
    ) -> Result<Vec<CurrentRow>, DbError> {
        sqlx::query_as(
            "SELECT identity, record, batch_id, updated FROM upsert_rows WHERE dataset_id = ? AND identity = ?",
        )
        .bind(dataset_id)
        .bind(identity)
        .fetch_all(&self.pool)
        .await
    }

    /// A page of an upsert dataset's current view, ordered by identity.
    pub async fn current_view(
        &self,
        dataset_id: &str,
        limit: i64,
        start: i64,
    ) -> Result<Vec<CurrentRow>, DbError> {
        sqlx::query_as(
            "SELECT identity, record, batch_id, updated FROM upsert_rows WHERE dataset_id = ?
             ORDER BY identity LIMIT ? OFFSET ?",
        )
        .bind(dataset_id)
        .bind(limit)
        .bind(start)
        .fetch_all(&self.pool)
        .await
    }

    /// How many identities an upsert dataset's current view holds.
    pub async fn current_view_size(&self, dataset_id: &str) -> Result<i64, DbError> {
        let (total,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM upsert_rows WHERE dataset_id = ?")
                .bind(dataset_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(total)
    }
}

impl OutcomeTx {
    /// Sets the batch's terminal status, metrics and errors, only if it is still
    /// `processing`; returns whether it was (an abort meanwhile wins).
    pub async fn finish_batch(
        &mut self,
        id: &str,
        status: BatchStatus,
        now: i64,
        metrics: &str,
        errors: &str,
    ) -> Result<bool, DbError> {
        let changed = sqlx::query(
            "UPDATE batches SET status = ?, updated = ?, completed = ?, metrics = ?, errors = ?
             WHERE id = ? AND status = ?",
        )
        .bind(status)
        .bind(now)
        .bind(now)
        .bind(metrics)
        .bind(errors)
        .bind(id)
        .bind(BatchStatus::Processing)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Each file's good records, and whether Data Access serves a good-rows copy of `size`
    /// bytes instead of the file (`None`: the file itself). A few hundred files per statement:
    /// each statement is a round trip to SQLite's worker thread, which one per file made most
    /// of the cost of recording a batch of small files.
    pub async fn set_file_outcomes(&mut self, files: &[FileOutcome<'_>]) -> Result<(), DbError> {
        for part in files.chunks(OUTCOMES_PER_STATEMENT) {
            let values = vec!["(?, ?, ?)"; part.len()].join(", ");
            let sql = format!(
                "UPDATE files SET records = o.column2, served_size = o.column3 \
                 FROM (VALUES {values}) AS o WHERE files.id = o.column1"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for f in part {
                query = query
                    .bind(f.file_id)
                    .bind(f.records as i64)
                    .bind(f.served_size.map(|n| n as i64));
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Replaces the failed rows kept for a batch.
    pub async fn replace_failed_rows<'r>(
        &mut self,
        batch_id: &str,
        rows: impl IntoIterator<Item = NewFailedRow<'r>>,
    ) -> Result<(), DbError> {
        sqlx::query("DELETE FROM failed_rows WHERE batch_id = ?")
            .bind(batch_id)
            .execute(&mut *self.tx)
            .await?;
        for (seq, row) in (1i64..).zip(rows) {
            sqlx::query(
                "INSERT INTO failed_rows (batch_id, seq, file_path, row_no, code, message, raw, errors)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(batch_id)
            .bind(seq)
            .bind(row.file_path)
            .bind(row.row_no.map(|r| r as i64))
            .bind(row.code)
            .bind(row.message)
            .bind(row.raw)
            .bind(row.errors)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// The current record of an identity of an upsert dataset (JSON), if it has one.
    pub async fn upsert_record(
        &mut self,
        dataset_id: &str,
        identity: &str,
    ) -> Result<Option<String>, DbError> {
        let current: Option<(String,)> =
            sqlx::query_as("SELECT record FROM upsert_rows WHERE dataset_id = ? AND identity = ?")
                .bind(dataset_id)
                .bind(identity)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(current.map(|(r,)| r))
    }

    /// Sets the current record of an identity, as of batch `batch_id`.
    pub async fn put_upsert_record(
        &mut self,
        dataset_id: &str,
        identity: &str,
        record: &str,
        batch_id: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO upsert_rows (dataset_id, identity, record, batch_id, updated) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (dataset_id, identity) DO UPDATE SET record = excluded.record,
                 batch_id = excluded.batch_id, updated = excluded.updated",
        )
        .bind(dataset_id)
        .bind(identity)
        .bind(record)
        .bind(batch_id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// A replay predecessor's tags (JSON) and status.
    pub async fn predecessor(
        &mut self,
        id: &str,
    ) -> Result<Option<(String, BatchStatus)>, DbError> {
        sqlx::query_as("SELECT tags, status FROM batches WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
    }

    /// A replay predecessor's new tags and status, and when it is deleted (`None`: as before).
    pub async fn update_predecessor(
        &mut self,
        id: &str,
        tags: &str,
        status: BatchStatus,
        now: i64,
        gc_due: Option<i64>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE batches SET tags = ?, status = ?, updated = ?, gc_due = COALESCE(?, gc_due) WHERE id = ?",
        )
        .bind(tags)
        .bind(status)
        .bind(now)
        .bind(gc_due)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await
    }
}
