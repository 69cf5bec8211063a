//! The daily batch budget each watch runs under, as the daemon settled it (`preflight::gate`,
//! at start and on every reload), for `batchdrop status` to read without asking the platform.
//! What counts against a budget is the batches table itself (`Store::batches_sealed_since`);
//! the row is `WatchBudget` (`model.rs`).

use super::{Store, StoreError, WatchBudget, now_ms};

impl Store {
    /// Replaces the recorded budgets with these (the watches that run now).
    pub async fn record_budgets(&self, budgets: &[WatchBudget]) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM watch_budgets")
            .execute(&mut *tx)
            .await?;
        for b in budgets {
            sqlx::query(
                "INSERT INTO watch_budgets (watch, dataset, max_batches_per_day, profile, recorded_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&b.watch)
            .bind(&b.dataset)
            .bind(b.max_batches_per_day)
            .bind(b.profile)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The budgets the daemon recorded last, by watch name.
    pub async fn watch_budgets(&self) -> Result<Vec<WatchBudget>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT watch, dataset, max_batches_per_day, profile FROM watch_budgets ORDER BY watch",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
