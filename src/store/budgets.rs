//! The daily batch budget each watch runs under, as the daemon settled it (`preflight::gate`,
//! at start and on every reload), for `batchdrop status` to read without asking the platform.
//! What counts against a budget is the batches table itself (`Store::batches_sealed_since`).

use super::{Store, StoreError, now_ms};

/// One watch's budget as the daemon settled it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WatchBudget {
    pub watch: String,
    pub dataset: String,
    /// `None`: no budget (unlimited).
    pub max_batches_per_day: Option<i64>,
    /// 1 when the Catalog tags the dataset Profile-enabled (the default of 90 comes from it).
    pub profile: i64,
}

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
