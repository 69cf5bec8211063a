//! Datasets the platform does not know (see `crate::blocked`): their watches take no new batch
//! and their batches wait until a check finds the dataset, or a reload lifts the block.

use super::{BlockedDataset, Store, StoreError, now_ms};

impl Store {
    /// Blocks a dataset the platform does not know. Returns false when it was blocked already
    /// (the first watch and reason to find it stay).
    pub async fn block_dataset(
        &self,
        dataset: &str,
        watch: &str,
        reason: &str,
        next_check_at: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO blocked_datasets (dataset, watch, reason, since, next_check_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dataset) DO NOTHING",
        )
        .bind(dataset)
        .bind(watch)
        .bind(reason)
        .bind(now_ms())
        .bind(next_check_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn blocked_datasets(&self) -> Result<Vec<BlockedDataset>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM blocked_datasets ORDER BY since, dataset")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records a check that found the dataset still missing, and when to check again.
    pub async fn still_blocked(&self, dataset: &str, next_check_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE blocked_datasets SET checks = checks + 1, next_check_at = $1 WHERE dataset = $2",
        )
        .bind(next_check_at)
        .bind(dataset)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Lifts a block; its batches are due again at once. Returns whether it was blocked.
    pub async fn unblock_dataset(&self, dataset: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM blocked_datasets WHERE dataset = $1")
            .bind(dataset)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Gives up the batches of `dataset` that the platform never created (it refused to:
    /// the dataset does not exist), sending their files back to the queue of their watch, which
    /// a reload pointed at another dataset. Returns how many batches.
    pub async fn requeue_unsent_batches(
        &self,
        dataset: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM batches WHERE dataset = $1 AND state IN ('sealed', 'creating')
               AND remote_id IS NULL",
        )
        .bind(dataset)
        .fetch_all(&self.pool)
        .await?;
        for id in &ids {
            self.abandon_batch(*id, reason).await?;
        }
        Ok(ids.len())
    }
}
