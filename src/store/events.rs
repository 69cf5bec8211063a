//! The append-only history of files and batches (`batchdrop status FILE|BATCH` shows it).
//! Every other part of the store records its events through here.

use super::{EventRow, Store, StoreError, now_ms};

impl Store {
    pub async fn event(
        &self,
        file_id: Option<i64>,
        batch_id: Option<i64>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (at, file_id, batch_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(file_id)
        .bind(batch_id)
        .bind(kind)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn events_for_file(&self, file_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, file_id, batch_id, kind, detail FROM events
             WHERE file_id = ? OR batch_id = (SELECT batch_id FROM files WHERE id = ?)
             ORDER BY id",
        )
        .bind(file_id)
        .bind(file_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events_for_batch(&self, batch_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at, file_id, batch_id, kind, detail FROM events WHERE batch_id = ? ORDER BY id",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
