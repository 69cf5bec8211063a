//! A batch's way to the platform: which batches are due, the states that record each remote
//! side effect (an intent before the call, a fact after it), the retry schedule, and each
//! file's transfer (sent, acknowledged bytes, uploaded, failed, superseded).

use super::events::{Event, Kind, insert_event};
use super::{
    BatchRow, BatchState, Conn, FileRow, FileState, PerRow, QueryBuilder, Step, Store, StoreError,
    Uploaded, commit_without_flush, now_ms, push_ids, push_per_row,
};

impl Store {
    /// Batches with remote work to do whose retry time has come (not those of a blocked
    /// dataset: they wait for the block to be lifted).
    pub async fn batches_due(&self, now: i64) -> Result<Vec<BatchRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT * FROM batches WHERE state IN ",
            in_flight!(),
            "
               AND next_attempt_at <= $1 AND dataset NOT IN (SELECT dataset FROM blocked_datasets)
             ORDER BY id"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The batch `id` as it is now, if it is still in flight and due. A list from
    /// `batches_due` can be stale by the time a batch is claimed: a drive that ended meanwhile
    /// may have moved it on, or scheduled its retry for later (re-driving it from the stale
    /// row would repeat a request before the platform's `Retry-After`).
    pub async fn batch_if_due(&self, id: i64, now: i64) -> Result<Option<BatchRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT * FROM batches WHERE id = $1
               AND state IN ",
            in_flight!(),
            "
               AND next_attempt_at <= $2 AND dataset NOT IN (SELECT dataset FROM blocked_datasets)"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The earliest retry time among in-flight batches, to sleep until it.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT MIN(next_attempt_at) FROM batches
             WHERE state IN ",
            in_flight!(),
            "
               AND dataset NOT IN (SELECT dataset FROM blocked_datasets)"
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn batch(&self, id: i64) -> Result<BatchRow, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn batch_by_remote(&self, remote_id: &str) -> Result<Option<BatchRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM batches WHERE remote_id = $1")
            .bind(remote_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn batch_files(&self, batch_id: i64) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE batch_id = $1 ORDER BY id")
                .bind(batch_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The files of a batch in `state`, in id order: a drive needs only those it still has
    /// to send, not the batch's whole list.
    pub async fn batch_files_in_state(
        &self,
        batch_id: i64,
        state: FileState,
    ) -> Result<Vec<FileRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM files WHERE batch_id = $1 AND state = $2 ORDER BY id")
                .bind(batch_id)
                .bind(state)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// How many files of a batch are in each state (states with none are left out).
    pub async fn batch_file_states(
        &self,
        batch_id: i64,
    ) -> Result<Vec<(FileState, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT state, COUNT(*) FROM files WHERE batch_id = $1 GROUP BY state")
                .bind(batch_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The id and path of each file of a batch in `state`, in id order.
    pub async fn batch_file_paths(
        &self,
        batch_id: i64,
        state: FileState,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, rel_path FROM files WHERE batch_id = $1 AND state = $2 ORDER BY id",
        )
        .bind(batch_id)
        .bind(state)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a step of a batch in flight (and the platform's id, once it created the
    /// batch), resetting its retry schedule: progress was made.
    pub async fn advance_batch(
        &self,
        batch_id: i64,
        step: Step<'_>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let remote_id = match step {
            Step::Loading { remote_id } => Some(remote_id),
            _ => None,
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Only a batch in flight moves on: one an operator aborted (`batchdrop abort`) while a
        // step was under way stays aborted.
        let moved = sqlx::query(concat!(
            "UPDATE batches SET state = $1, remote_id = COALESCE($2, remote_id), attempts = 0,
               next_attempt_at = 0, first_error_at = NULL, updated_at = $3 WHERE id = $4
               AND state IN ",
            in_flight!()
        ))
        .bind(step.state())
        .bind(remote_id)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(());
        }
        let event = Event::batch(batch_id, Kind::Batch(step.state()), detail);
        insert_event(&mut *tx, now, event).await?;
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
        let mut tx = self.pool.begin().await?;
        let row: (i64, i64) = sqlx::query_as(
            "UPDATE batches SET attempts = attempts + $1, last_error = $2, next_attempt_at = $3,
               first_error_at = COALESCE(first_error_at, $4), updated_at = $5 WHERE id = $6
             RETURNING attempts, first_error_at",
        )
        .bind(counts as i64)
        .bind(error)
        .bind(next_at)
        .bind(now)
        .bind(now)
        .bind(batch_id)
        .fetch_one(&mut *tx)
        .await?;
        insert_event(&mut *tx, now, Event::batch(batch_id, Kind::Retry, error)).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Delays the next poll of a processing batch. The platform answered, so the run of
    /// transient failures (if any) is over.
    pub async fn delay_batch(&self, batch_id: i64, next_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET next_attempt_at = $1, attempts = 0, first_error_at = NULL WHERE id = $2",
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
        sqlx::query("UPDATE batches SET attempts = 0 WHERE id = $1 AND attempts > 0")
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
            "UPDATE batches SET attempts = 0, first_error_at = NULL WHERE id = $1 AND attempts > 0",
        )
        .bind(batch_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The intent before the first PUT or INITIALIZE of a file: from now on its batch may hold
    /// bytes of it, so a change of the file on disk taints the whole batch.
    pub async fn mark_sent(&self, file_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET sent = TRUE, updated_at = $1 WHERE id = $2 AND sent = FALSE")
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The intents of several files' transfers in one statement, recorded before the first
    /// byte of any of them leaves (see `mark_sent`).
    pub async fn mark_sent_many(&self, file_ids: &[i64]) -> Result<(), StoreError> {
        if file_ids.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::new("UPDATE files SET sent = TRUE, updated_at = ");
        q.push_bind(now_ms());
        q.push(" WHERE sent = FALSE AND id IN (");
        push_ids(&mut q, file_ids.iter().copied());
        q.build().execute(&self.pool).await?;
        Ok(())
    }

    /// Records acknowledged bytes of a file (after a 2xx, never before).
    pub async fn set_uploaded_bytes(&self, file_id: i64, bytes: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET uploaded_bytes = $1, updated_at = $2 WHERE id = $3")
            .bind(bytes)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Files of a batch sent to the platform whose SHA-256 is not recorded: their hashes
    /// were still being computed when the process stopped (see `uploader::transfer`).
    pub async fn uploaded_without_hash(&self, batch_id: i64) -> Result<Vec<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM files WHERE batch_id = $1 AND state = 'uploaded' AND sha256 IS NULL ORDER BY id",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the SHA-256 of a file's bytes on the platform, taken after they were sent.
    pub async fn record_hash(&self, file_id: i64, sha256: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE files SET sha256 = $1, updated_at = $2 WHERE id = $3")
            .bind(sha256)
            .bind(now_ms())
            .bind(file_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The facts after several files' transfers, in one statement per few hundred files.
    /// Only a file still `batched` moves on (one failed or superseded meanwhile stays so).
    /// Deferring these facts a little is safe: a file not recorded as uploaded is PUT again
    /// after a crash, and a PUT replaces the file on the platform; so their commit does not
    /// wait for the disk either.
    pub async fn mark_uploaded_many(&self, done: &[Uploaded]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        commit_without_flush(&mut tx).await?;
        // Files whose row holds their hash already go in statements that leave `sha256` out:
        // naming a column in `SET` rewrites its index entries even for the same value.
        let (stored, to_write): (Vec<&Uploaded>, Vec<&Uploaded>) = done
            .iter()
            .partition(|d| d.hash_stored || d.sha256.is_none());
        for (part, with_hash) in (stored.chunks(200).map(|part| (part, false)))
            .chain(to_write.chunks(200).map(|part| (part, true)))
        {
            let mut rows = PerRow::new(part.iter().map(|d| d.file_id));
            if with_hash {
                rows = rows.text("sha256", part.iter().map(|d| d.sha256.as_deref()));
            }
            let rows = rows.int("uploaded_bytes", part.iter().map(|d| d.size));
            let mut q = QueryBuilder::new("UPDATE files SET state = 'uploaded', updated_at = ");
            q.push_bind(now).push(",");
            push_per_row(&mut q, &rows);
            q.push(concat!(" AND ", row_state!(), " = 'batched'"));
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes a file out of the pipeline for good; the archiver moves it with `reason`.
    pub async fn fail_file(&self, file_id: i64, reason: &str) -> Result<(), StoreError> {
        self.end_file(file_id, FileEnd::Failed, reason).await
    }

    /// Retires the record of a file that changed on disk after it was queued. Its current
    /// version is left where it is for the watcher to pick up as a new record once it is stable
    /// again, so old and new bytes are never mixed in one upload.
    pub async fn supersede(&self, file_id: i64, why: &str) -> Result<(), StoreError> {
        self.end_file(file_id, FileEnd::Superseded, why).await
    }

    /// Ends file `file_id` as `end` says, with `reason`, and records the event.
    async fn end_file(&self, file_id: i64, end: FileEnd, reason: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(end.update())
            .bind(reason)
            .bind(now)
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut *tx, now, Event::file(file_id, end.kind(), reason)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives a batch up (it can no longer be used on the platform): its files that are still
    /// good go back to the queue, to travel in a new batch.
    pub async fn abandon_batch(&self, batch_id: i64, reason: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if !end_in_flight(&mut tx, batch_id, BatchState::Abandoned, reason, now).await? {
            // Ended meanwhile (an operator's abort): its files are not requeued.
            return Ok(());
        }
        sqlx::query(
            "UPDATE files SET state = 'ready', batch_id = NULL, uploaded_bytes = 0, sent = FALSE, updated_at = $1
             WHERE batch_id = $2 AND state IN ('batched', 'uploaded')",
        )
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The `replay.reason` of a replay batch (its file's sidecar's), if one was given.
    pub async fn replay_reason(&self, batch_id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT replay_reason FROM files WHERE batch_id = $1 AND replay_reason IS NOT NULL
             ORDER BY id LIMIT 1",
        )
        .bind(batch_id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }
}

/// How [`Store::end_file`] takes a file out of the pipeline.
#[derive(Clone, Copy)]
enum FileEnd {
    /// For good: the archiver moves it to the failed folder.
    Failed,
    /// Its record only (the file changed on disk): finalized, nothing to move.
    Superseded,
}

impl FileEnd {
    /// The update, with `$1` the reason, `$2` the time and `$3` the file's id.
    fn update(self) -> &'static str {
        match self {
            FileEnd::Failed => {
                "UPDATE files SET state = 'failed', reason = $1, updated_at = $2 WHERE id = $3"
            }
            FileEnd::Superseded => {
                "UPDATE files SET state = 'superseded', finalized = TRUE, reason = $1, updated_at = $2
                 WHERE id = $3"
            }
        }
    }

    fn kind(self) -> Kind {
        match self {
            FileEnd::Failed => Kind::Failed,
            FileEnd::Superseded => Kind::Superseded,
        }
    }
}

/// Ends batch `batch_id` as `end` (abandoned, aborted) with `reason` and records the event, if
/// it is still in flight; false when it had ended already, and then nothing is written.
pub(super) async fn end_in_flight(
    conn: &mut Conn,
    batch_id: i64,
    end: BatchState,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let moved = sqlx::query(concat!(
        "UPDATE batches SET state = $1, last_error = $2, updated_at = $3 WHERE id = $4
           AND state IN ",
        in_flight!()
    ))
    .bind(end)
    .bind(reason)
    .bind(now)
    .bind(batch_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    insert_event(
        &mut *conn,
        now,
        Event::batch(batch_id, Kind::Batch(end), reason),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::{loading_batch, on_both_backends, ready, sealed_batch};
    use crate::store::{BatchPhase, BatchState, Step};

    on_both_backends!(
        a_batch_is_created_then_loading_with_its_platform_id,
        later_steps_keep_the_platform_id_and_an_aborted_batch_stays_aborted,
    );

    async fn a_batch_is_created_then_loading_with_its_platform_id(store: Store) {
        let file = ready(&store, &[("a.json", 10, None)]).await[0];
        let batch = sealed_batch(&store, &[file]).await;
        assert_eq!(store.batch(batch).await.unwrap().phase, BatchPhase::Sealed);
        store
            .advance_batch(batch, Step::Creating, "create-batch sent")
            .await
            .unwrap();
        assert_eq!(
            store.batch(batch).await.unwrap().phase,
            BatchPhase::Creating
        );
        let step = Step::Loading { remote_id: "B1" };
        store.advance_batch(batch, step, "created").await.unwrap();
        let row = store.batch(batch).await.unwrap();
        assert_eq!(
            row.phase,
            BatchPhase::Loading {
                remote_id: "B1".into()
            }
        );
        assert_eq!(
            store.batch_by_remote("B1").await.unwrap().unwrap().id,
            batch
        );
    }

    async fn later_steps_keep_the_platform_id_and_an_aborted_batch_stays_aborted(store: Store) {
        let (batch, _) = loading_batch(&store, "a.json", "B1").await;
        store
            .advance_batch(batch, Step::Completing, "COMPLETE sent")
            .await
            .unwrap();
        let completing = store.batch(batch).await.unwrap();
        assert_eq!(completing.state(), BatchState::Completing);
        assert_eq!(completing.remote_id(), Some("B1"));
        store
            .advance_batch(batch, Step::Processing, "COMPLETE accepted")
            .await
            .unwrap();
        assert_eq!(
            store.batch(batch).await.unwrap().phase,
            BatchPhase::Processing {
                remote_id: "B1".into()
            }
        );

        assert!(store.abort_batch(batch, "operator").await.unwrap());
        store
            .advance_batch(batch, Step::Processing, "late answer")
            .await
            .unwrap();
        assert_eq!(
            store.batch(batch).await.unwrap().state(),
            BatchState::Aborted,
            "a step under way when the operator aborted does not move it on"
        );
    }
}
