//! Terminal batches and finished files: the Catalog's outcome of a batch (files it does not
//! blame requeued), each file's record count, the archiver's intents (destinations) and facts
//! (finalized, with the receipt's place).

use super::{FileRow, Finalized, QueryBuilder, Store, StoreError, now_ms, push_case, push_ids};

impl Store {
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

    /// Records each file's own record count, as the platform listed it after its batch
    /// succeeded.
    pub async fn set_file_records(&self, counts: &[(i64, i64)]) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in counts.chunks(400) {
            let mut q = QueryBuilder::new("UPDATE files SET");
            push_case(&mut q, "records", part, |(id, n)| (*id, *n));
            q.push(" WHERE id IN (");
            push_ids(&mut q, part.iter().map(|(id, _)| *id));
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
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
            let mut q = QueryBuilder::new("UPDATE files SET");
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
            let mut q = QueryBuilder::new("UPDATE files SET finalized = 1, updated_at = ");
            q.push_bind(now).push(",");
            push_case(&mut q, "state", part, |d| (d.file_id, &d.state));
            q.push(",");
            push_case(&mut q, "final_path", part, |d| (d.file_id, &d.final_path));
            q.push(" WHERE id IN (");
            push_ids(&mut q, part.iter().map(|d| d.file_id));
            q.build().execute(&mut *tx).await?;
            let mut events = QueryBuilder::new("INSERT INTO events (at, file_id, kind, detail) ");
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
}
