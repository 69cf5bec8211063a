//! Batches stuck on the platform: `stalled` there (all its retries exhausted), or processing
//! past `max_processing_age`. When each was first seen so (`stuck_since`, so the ERROR log is
//! written once) and which are stuck now (the metric, `status`). What to do about them is the
//! poller's decision; aborting one is `commands`.

use super::{Store, StoreError};

impl Store {
    /// Marks processing batch `batch_id` stuck since `now`; true the first time (the caller
    /// logs it then).
    pub async fn mark_stuck(&self, batch_id: i64, now: i64) -> Result<bool, StoreError> {
        let marked = sqlx::query(
            "UPDATE batches SET stuck_since = $1 WHERE id = $2 AND stuck_since IS NULL",
        )
        .bind(now)
        .bind(batch_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(marked > 0)
    }

    /// The batches in flight marked stuck, with since when (unix ms), oldest first.
    pub async fn stuck_batches(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT id, stuck_since FROM batches WHERE stuck_since IS NOT NULL AND state IN ",
            in_flight!(),
            " ORDER BY stuck_since"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Since when batch `batch_id` is stuck (unix ms), if it is marked so and still in flight.
    pub async fn stuck_since(&self, batch_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(concat!(
            "SELECT stuck_since FROM batches WHERE id = $1 AND state IN ",
            in_flight!()
        ))
        .bind(batch_id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }
}
