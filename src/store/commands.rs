//! What the operator's commands (`status`, `retry`, `abort`, `revert`, `push`), `run --once`
//! and `/metrics` read, and the few facts the commands record (an abort, a revert, a requeue).

use super::events::{Event, Kind, insert_event};
use super::upload::end_in_flight;
use super::{BatchProgress, BatchRow, BatchState, FileRow, FileState, Store, StoreError, now_ms};

impl Store {
    pub async fn file(&self, id: i64) -> Result<Option<FileRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM files WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Files last recorded under this relative path (any watch), newest first.
    pub async fn files_by_path(&self, rel_path: &str) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE rel_path = $1 ORDER BY id DESC")
                .bind(rel_path)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Remote ids of the batches whose data for this file name is in the dataset now: they
    /// succeeded and were neither replaced nor reverted. What an empty sidecar replaces.
    pub async fn live_batches_that_ingested(
        &self,
        dataset: &str,
        rel_path: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT b.remote_id FROM files f JOIN batches b ON b.id = f.batch_id
             WHERE f.dataset = $1 AND f.rel_path = $2 AND f.state IN ('uploaded', 'done')
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
            sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE dataset = $1 AND rel_path = $2")
                .bind(dataset)
                .bind(rel_path)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// A batch by the name an operator gives: the platform's id, or `#N` for a local one.
    pub async fn find_batch(&self, name: &str) -> Result<Option<BatchRow>, StoreError> {
        let name = name.trim().trim_start_matches('$');
        if let Some(n) = name.strip_prefix('#')
            && let Ok(id) = n.parse::<i64>()
        {
            return Ok(sqlx::query_as("SELECT * FROM batches WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?);
        }
        self.batch_by_remote(name).await
    }

    /// Upload progress of one batch.
    // PostgreSQL sums BIGINTs into NUMERIC: the casts keep the sums 64-bit on both backends.
    pub async fn batch_progress(&self, batch_id: i64) -> Result<BatchProgress, StoreError> {
        Ok(sqlx::query_as(
            "SELECT $1 AS id, COUNT(id) AS files,
                    COALESCE(SUM(CASE WHEN state IN ('uploaded', 'done') THEN 1 ELSE 0 END), 0) AS files_uploaded,
                    COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS files_failed,
                    CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes,
                    CAST(COALESCE(SUM(CASE WHEN state IN ('uploaded', 'done') THEN size
                                      ELSE uploaded_bytes END), 0) AS BIGINT) AS bytes_uploaded
             FROM files WHERE batch_id = $2",
        )
        .bind(batch_id)
        .bind(batch_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The latest batches that ended (any terminal state), newest first.
    pub async fn recent_batches(&self, limit: i64) -> Result<Vec<BatchRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT * FROM batches
             WHERE state NOT IN ",
            in_flight!(),
            "
             ORDER BY updated_at DESC, id DESC LIMIT $1"
        ))
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
            sqlx::query_as("SELECT * FROM files WHERE final_path = $1 ORDER BY id DESC")
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
        if !end_in_flight(&mut tx, batch_id, BatchState::Aborted, reason, now).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE files SET state = 'failed', reason = $1, updated_at = $2
             WHERE batch_id = $3 AND state IN ('ready', 'batched', 'uploaded') AND finalized = FALSE",
        )
        .bind(reason)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that a successful batch was reverted on the platform (`batchdrop revert`).
    pub async fn mark_reverted(&self, batch_id: i64, detail: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE batches SET state = 'reverted', updated_at = $1 WHERE id = $2 AND state = 'success'",
        )
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            let event = Event::batch(batch_id, Kind::Batch(BatchState::Reverted), detail);
            insert_event(&mut *tx, now, event).await?;
            tx.commit().await?;
        }
        Ok(n > 0)
    }

    /// Retires a failed file's record because `batchdrop retry` put the file back in its drop
    /// folder: the watcher records it anew, and this record stays as history.
    pub async fn mark_requeued(&self, file_id: i64, detail: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE files SET state = 'superseded', updated_at = $1 WHERE id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(file_id)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut *tx, now, Event::file(file_id, Kind::Requeued, detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts of files per (dataset, state).
    pub async fn file_counts(&self) -> Result<Vec<(String, FileState, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT dataset, state, COUNT(*) FROM files GROUP BY dataset, state ORDER BY dataset, state")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn batches_in_flight(&self) -> Result<Vec<BatchRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT * FROM batches WHERE state IN ",
            in_flight!(),
            " ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The files of a watch in one state, oldest first.
    pub async fn files_in_state(
        &self,
        watch: &str,
        state: FileState,
    ) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE watch = $1 AND state = $2 ORDER BY id")
                .bind(watch)
                .bind(state)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM files WHERE state = 'failed' ORDER BY updated_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether any work is left: a file not yet finalized or a batch not terminal. Asked ten
    /// times a second by `run --once`: EXISTS stops at the first row (a count read every
    /// unfinished file each time, 23 ms at 20,000 files in fleet mode).
    pub async fn work_left(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM files WHERE finalized = FALSE)
                 OR EXISTS (SELECT 1 FROM batches WHERE state IN ",
            in_flight!(),
            ")"
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// [`Store::work_left`] outside the blocked datasets (`run --once` cannot finish what
    /// only waits for a block to be lifted).
    pub async fn work_left_unblocked(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM files WHERE finalized = FALSE
                              AND dataset NOT IN (SELECT dataset FROM blocked_datasets))
                 OR EXISTS (SELECT 1 FROM batches WHERE state IN ",
            in_flight!(),
            "             AND dataset NOT IN (SELECT dataset FROM blocked_datasets))"
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Files that ended failed (not duplicates), for `run --once`'s exit code.
    pub async fn failed_count_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM files WHERE state = 'failed' AND updated_at >= $1",
        )
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?)
    }

    /// When the oldest file still waiting for its outcome was found (unix ms).
    pub async fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(discovered_at) FROM files WHERE finalized = FALSE")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{on_both_backends, ready, sealed_batch};
    use crate::store::{FileState, Store};

    on_both_backends!(work_is_left_while_a_file_is_unfinished_or_a_batch_in_flight,);

    async fn work_is_left_while_a_file_is_unfinished_or_a_batch_in_flight(store: Store) {
        assert!(!store.work_left().await.unwrap(), "an empty queue");
        let file = ready(&store, &[("a", 10, None)]).await[0];
        assert!(store.work_left().await.unwrap(), "a file queued");
        assert!(store.work_left_unblocked().await.unwrap());
        store.block_dataset("d", "w", "gone", 0).await.unwrap();
        assert!(
            !store.work_left_unblocked().await.unwrap(),
            "its dataset is blocked"
        );
        store
            .mark_finalized(file, FileState::Failed, "moved")
            .await
            .unwrap();
        assert!(!store.work_left().await.unwrap(), "the file finished");

        let other = ready(&store, &[("b", 11, None)]).await;
        let batch = sealed_batch(&store, &other).await;
        store
            .mark_finalized(other[0], FileState::Failed, "moved")
            .await
            .unwrap();
        assert!(
            store.work_left().await.unwrap(),
            "batch {batch} is still in flight"
        );
        assert!(!store.work_left_unblocked().await.unwrap());
    }
}
