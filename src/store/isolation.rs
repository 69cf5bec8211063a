//! Bisection of a failed batch (`on_batch_failure = "isolate"`): the failed batch ends and its
//! files go, in the same transaction, into new sealed batches that remember the batch the
//! bisection started from (`isolation_root`), so the extra batches one failure costs stay
//! within the watch's cap. It decides nothing about which files to split: the poller does.

use super::events::{Event, Kind, insert_event, insert_requeued};
use super::outcome::end_batch;
use super::{BatchOutcome, QueryBuilder, Split, Store, StoreError, Verdict, now_ms, push_ids};

impl Store {
    /// Ends failed batch `batch_id` and seals each of `parts` (its files' ids) into a new
    /// batch of the same watch, dataset and format, unless the extra batches already made for
    /// the same original batch plus these would pass `max_extra`.
    pub async fn split_failed_batch(
        &self,
        batch_id: i64,
        outcome: &BatchOutcome,
        detail: &str,
        parts: &[Vec<i64>],
        max_extra: u32,
        why: &str,
    ) -> Result<Split, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let root: i64 =
            sqlx::query_scalar("SELECT COALESCE(isolation_root, id) FROM batches WHERE id = $1")
                .bind(batch_id)
                .fetch_one(&mut *tx)
                .await?;
        let spent: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM batches WHERE isolation_root = $1")
                .bind(root)
                .fetch_one(&mut *tx)
                .await?;
        if spent + parts.len() as i64 > i64::from(max_extra) {
            return Ok(Split::OverCap { spent });
        }
        if !end_batch(&mut tx, batch_id, Verdict::Failed, outcome, detail, now).await? {
            return Ok(Split::NotInFlight);
        }
        let mut made = Vec::new();
        for part in parts.iter().filter(|p| !p.is_empty()) {
            let external_id = uuid::Uuid::now_v7().to_string();
            let new_id: i64 = sqlx::query_scalar(
                "INSERT INTO batches (external_id, watch, dataset, sandbox, format, multiline_json,
                   state, isolation_root, created_at, updated_at)
                 SELECT $1, watch, dataset, sandbox, format, multiline_json, 'sealed', $2, $3, $4
                 FROM batches WHERE id = $5 RETURNING id",
            )
            .bind(&external_id)
            .bind(root)
            .bind(now)
            .bind(now)
            .bind(batch_id)
            .fetch_one(&mut *tx)
            .await?;
            let mut q = QueryBuilder::new("UPDATE files SET state = 'batched', batch_id = ");
            q.push_bind(new_id)
                .push(", uploaded_bytes = 0, sent = FALSE, updated_at = ")
                .push_bind(now)
                .push(" WHERE batch_id = ")
                .push_bind(batch_id)
                .push(" AND state IN ('batched', 'uploaded') AND id IN (");
            push_ids(&mut q, part.iter().copied());
            q.build().execute(&mut *tx).await?;
            let detail = format!(
                "{} files, externalId {external_id}, isolating the files of local batch #{batch_id}",
                part.len()
            );
            insert_event(&mut *tx, now, Event::batch(new_id, Kind::Sealed, &detail)).await?;
            insert_requeued(&mut tx, now, batch_id, part, why).await?;
            made.push(new_id);
        }
        tx.commit().await?;
        Ok(Split::Into(made))
    }
}
