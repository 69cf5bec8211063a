//! Batches: created, listed, and moved from status to status. Every change of status is a
//! compare-and-set on the status it leaves, so that two requests (or a request and the
//! background processing) cannot both move one batch.

use super::datasets::{IN_SCOPE, Scope};
use super::rows::{BatchAtPath, BatchRow, BatchStatus, NewBatch};
use super::{DbError, Page, Store, now_ms};

/// What `GET /catalog/batches` filters by (each list: any of its values).
#[derive(Debug, Default)]
pub struct BatchFilter {
    pub datasets: Vec<String>,
    pub statuses: Vec<String>,
    pub external_ids: Vec<String>,
    /// Epoch milliseconds, exclusive.
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

impl Store {
    pub async fn batch(&self, id: &str) -> Result<Option<BatchRow>, DbError> {
        sqlx::query_as::<_, BatchRow>("SELECT * FROM batches WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The batch if the caller's organisation and sandbox can see it: a batch belongs to the
    /// sandbox (and organisation) it was created in, and is unknown from any other.
    pub async fn visible_batch(
        &self,
        id: &str,
        scope: Scope<'_>,
    ) -> Result<Option<BatchRow>, DbError> {
        let sql = format!("SELECT * FROM batches WHERE id = ? AND {IN_SCOPE}");
        sqlx::query_as::<_, BatchRow>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(scope.sandbox)
            .bind(scope.org)
            .fetch_optional(&self.pool)
            .await
    }

    /// The batch as [`Store::visible_batch`] finds it, with what it holds and the file at
    /// `path`: everything a PUT checks, in one look-up whatever the batch's size. On the PUT
    /// path's connection.
    pub async fn batch_at_path(
        &self,
        id: &str,
        path: &str,
        scope: Scope<'_>,
    ) -> Result<Option<BatchAtPath>, DbError> {
        // IN_SCOPE's columns are the batch's: `files` has none of those names.
        let sql = format!(
            "SELECT b.*, f.id AS path_file_id, f.kind AS path_file_kind, f.size AS path_file_size
             FROM batches b LEFT JOIN files f ON f.batch_id = b.id AND f.path = ?
             WHERE b.id = ? AND {IN_SCOPE}"
        );
        let mut conn = self.put_conn().await?;
        sqlx::query_as::<_, BatchAtPath>(sqlx::AssertSqlSafe(sql))
            .bind(path)
            .bind(id)
            .bind(scope.sandbox)
            .bind(scope.org)
            .fetch_optional(conn.get())
            .await
    }

    /// The dataset's most recently created batch the caller can see (the Catalog's
    /// `lastBatchId`).
    pub async fn last_batch_of(
        &self,
        dataset_id: &str,
        scope: Scope<'_>,
    ) -> Result<Option<BatchRow>, DbError> {
        self.last_batch_in(dataset_id, scope, None).await
    }

    /// The dataset's most recently created batch the caller can see, of this status if one
    /// is given (`lastSuccessfulBatchId`, `lastFailedBatchId`). A dataset the emulator's owner
    /// set up is seen from every sandbox; each sees only its own batches of it.
    pub async fn last_batch_in(
        &self,
        dataset_id: &str,
        scope: Scope<'_>,
        status: Option<BatchStatus>,
    ) -> Result<Option<BatchRow>, DbError> {
        let sql = format!(
            "SELECT * FROM batches WHERE dataset_id = ? AND (? IS NULL OR status = ?) AND {IN_SCOPE}
             ORDER BY created DESC, id DESC LIMIT 1"
        );
        sqlx::query_as::<_, BatchRow>(sqlx::AssertSqlSafe(sql))
            .bind(dataset_id)
            .bind(status)
            .bind(status)
            .bind(scope.sandbox)
            .bind(scope.org)
            .fetch_optional(&self.pool)
            .await
    }

    /// Creates a batch, `loading`.
    pub async fn insert_batch(&self, b: NewBatch<'_>) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO batches (id, dataset_id, status, input_format, external_id, tags, replay, options,
                                  ims_org, sandbox, created_user, created, updated)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(b.id)
        .bind(b.dataset_id)
        .bind(BatchStatus::Loading)
        .bind(b.input_format)
        .bind(b.external_id)
        .bind(b.tags)
        .bind(b.replay)
        .bind(b.options)
        .bind(b.ims_org)
        .bind(b.sandbox)
        .bind(b.created_user)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A page of the batches the caller can see (see [`Store::visible_batch`]) that pass the
    /// filter.
    pub async fn list_batches(
        &self,
        filter: &BatchFilter,
        scope: Scope<'_>,
        page: &Page,
    ) -> Result<Vec<BatchRow>, DbError> {
        let mut sql = format!("SELECT * FROM batches WHERE {IN_SCOPE}");
        let mut binds: Vec<&str> = vec![scope.sandbox, scope.org];
        for (column, values) in [
            ("dataset_id", &filter.datasets),
            ("status", &filter.statuses),
            ("external_id", &filter.external_ids),
        ] {
            if values.is_empty() {
                continue;
            }
            sql.push_str(&format!(
                " AND {column} IN ({})",
                vec!["?"; values.len()].join(",")
            ));
            binds.extend(values.iter().map(String::as_str));
        }
        if filter.created_after.is_some() {
            sql.push_str(" AND created > ?");
        }
        if filter.created_before.is_some() {
            sql.push_str(" AND created < ?");
        }
        sql.push_str(&page.clause());
        let mut query = sqlx::query_as::<_, BatchRow>(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b.to_owned());
        }
        for bound in [filter.created_after, filter.created_before]
            .into_iter()
            .flatten()
        {
            query = query.bind(bound);
        }
        query.fetch_all(&self.pool).await
    }

    /// Compare-and-set of a batch status; returns whether it changed.
    pub async fn transition(
        &self,
        id: &str,
        from: &[BatchStatus],
        to: BatchStatus,
    ) -> Result<bool, DbError> {
        let placeholders = vec!["?"; from.len()].join(",");
        let sql = format!(
            "UPDATE batches SET status = ?, updated = ? WHERE id = ? AND status IN ({placeholders})"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to)
            .bind(now_ms())
            .bind(id);
        for f in from {
            q = q.bind(*f);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() == 1)
    }

    /// A batch's processing starts (`staging` or `queued` → `processing`, unless it was aborted
    /// meanwhile); returns whether it did.
    pub async fn start_processing(&self, id: &str) -> Result<bool, DbError> {
        let moved = sqlx::query(
            "UPDATE batches SET status = ?, updated = ?, started = COALESCE(started, ?) WHERE id = ? AND status IN (?, ?)",
        )
        .bind(BatchStatus::Processing)
        .bind(now_ms())
        .bind(now_ms())
        .bind(id)
        .bind(BatchStatus::Staging)
        .bind(BatchStatus::Queued)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(moved == 1)
    }

    /// `?action=ABORT`: `aborted` whatever it was (the caller checked, under the batch lock,
    /// that it may be aborted; processing that ends meanwhile finds it aborted and stops).
    pub async fn abort_batch(&self, id: &str) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query("UPDATE batches SET status = ?, updated = ?, completed = ? WHERE id = ?")
            .bind(BatchStatus::Aborted)
            .bind(now)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `?action=FAIL`: `loading → failed`.
    pub async fn fail_loading_batch(&self, id: &str) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE batches SET status = ?, updated = ?, completed = ? WHERE id = ? AND status = ?",
        )
        .bind(BatchStatus::Failed)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(BatchStatus::Loading)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `success → inactive`, to be deleted at `gc_due` (epoch milliseconds).
    pub async fn revert_batch(&self, id: &str, gc_due: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE batches SET status = ?, updated = ?, gc_due = ? WHERE id = ? AND status = ?",
        )
        .bind(BatchStatus::Inactive)
        .bind(now_ms())
        .bind(gc_due)
        .bind(id)
        .bind(BatchStatus::Success)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `inactive → deleted` once its time has come; returns whether it changed.
    pub async fn delete_inactive(&self, id: &str) -> Result<bool, DbError> {
        let changed = sqlx::query(
            "UPDATE batches SET status = ?, updated = ?, gc_due = NULL WHERE id = ? AND status = ?",
        )
        .bind(BatchStatus::Deleted)
        .bind(now_ms())
        .bind(id)
        .bind(BatchStatus::Inactive)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// At start: batches cut mid-processing go back to `staging`.
    pub async fn restage_processing(&self) -> Result<(), DbError> {
        sqlx::query("UPDATE batches SET status = ? WHERE status IN (?, ?, ?)")
            .bind(BatchStatus::Staging)
            .bind(BatchStatus::Processing)
            .bind(BatchStatus::Queued)
            .bind(BatchStatus::Retrying)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The ids of the batches in `status`, oldest first.
    pub async fn batch_ids_with_status(&self, status: BatchStatus) -> Result<Vec<String>, DbError> {
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM batches WHERE status = ? ORDER BY created, id")
                .bind(status)
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// `loading` batches whose last change, and their files' last change, are before `cutoff`.
    pub async fn idle_loading_batches(&self, cutoff: i64) -> Result<Vec<String>, DbError> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM batches b WHERE status = ? AND updated < ?
               AND COALESCE((SELECT MAX(updated) FROM files f WHERE f.batch_id = b.id), 0) < ?",
        )
        .bind(BatchStatus::Loading)
        .bind(cutoff)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// `inactive` batches due for deletion at `now`.
    pub async fn inactive_due(&self, now: i64) -> Result<Vec<String>, DbError> {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM batches WHERE status = ? AND gc_due IS NOT NULL AND gc_due <= ?",
        )
        .bind(BatchStatus::Inactive)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }
}
