//! Terminal batches and finished files: the Catalog's outcome of a batch (files it does not
//! blame requeued), each file's record count, the archiver's intents (destinations) and facts
//! (finalized, with the receipt's place).

use super::events::{Event, Kind, insert_event, insert_events, insert_requeued};
use super::{
    BatchOutcome, FileRow, FileState, Finalized, PerRow, QueryBuilder, Store, StoreError, Verdict,
    now_ms, push_binds, push_ids, push_per_row,
};

impl Store {
    /// Records a batch's terminal outcome. Only a batch in flight ends so: one an operator
    /// aborted meanwhile stays aborted.
    pub async fn finish_batch(
        &self,
        batch_id: i64,
        verdict: Verdict,
        outcome: &BatchOutcome,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.finish(batch_id, verdict, outcome, detail, &[], "", None)
            .await
    }

    /// Records a batch the platform failed, in one transaction: its files in `requeue`
    /// (those the platform's errors do not blame) go back to the queue for a new batch, with
    /// `why` in their history; the others fail with it, with `reason` (what happened and
    /// what to do) for their receipts.
    pub async fn fail_batch(
        &self,
        batch_id: i64,
        outcome: &BatchOutcome,
        detail: &str,
        requeue: &[i64],
        why: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.finish(
            batch_id,
            Verdict::Failed,
            outcome,
            detail,
            requeue,
            why,
            Some(reason),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        batch_id: i64,
        verdict: Verdict,
        outcome: &BatchOutcome,
        detail: &str,
        requeue: &[i64],
        why: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if !end_batch(&mut tx, batch_id, verdict, outcome, detail, now).await? {
            return Ok(());
        }
        for part in requeue.chunks(400) {
            let mut q = QueryBuilder::new(
                "UPDATE files SET state = 'ready', batch_id = NULL, uploaded_bytes = 0, sent = FALSE,
                   updated_at = ",
            );
            q.push_bind(now)
                .push(" WHERE batch_id = ")
                .push_bind(batch_id)
                .push(" AND state IN ('batched', 'uploaded') AND id IN (");
            push_ids(&mut q, part.iter().copied());
            q.build().execute(&mut *tx).await?;
            insert_requeued(&mut tx, now, batch_id, part, why).await?;
        }
        if let Some(reason) = reason {
            // After the requeue: what is still in the batch fails with it.
            sqlx::query(
                "UPDATE files SET reason = $1, updated_at = $2
                  WHERE batch_id = $3 AND state IN ('batched', 'uploaded')",
            )
            .bind(reason)
            .bind(now)
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn mark_replaced(&self, remote_ids: &[String], by: &str) -> Result<(), StoreError> {
        for id in remote_ids {
            sqlx::query(
                "UPDATE batches SET replaced_by = $1, updated_at = $2 WHERE remote_id = $3",
            )
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
    ///
    /// Looked up by state, and per terminal batch (the batches first: `CROSS JOIN` keeps
    /// SQLite to that order), through the partial index `files_unfinished_by_state`: a pass
    /// costs what it finds and the number of batches, not the length of the queue (ready
    /// files and batches still in flight are never read).
    pub async fn files_to_finalize(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<FileRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM (
                SELECT f.* FROM files f
                 WHERE f.finalized = FALSE AND f.state IN ('failed', 'duplicate') AND f.id > $1
                UNION ALL
                SELECT f.* FROM batches b CROSS JOIN files f
                 WHERE b.state IN ('success', 'failed', 'aborted') AND f.batch_id = b.id
                   AND f.finalized = FALSE AND f.state IN ('batched', 'uploaded') AND f.id > $1
             ) AS due ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
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
            let rows = PerRow::new(part.iter().map(|(id, _)| *id)).text(
                "final_path",
                part.iter().map(|(_, path)| Some(path.as_str())),
            );
            let mut q = QueryBuilder::new("UPDATE files SET");
            push_per_row(&mut q, &rows);
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Which of `paths` are promised to files not finished yet (their recorded intents): the
    /// names the archiver is about to choose, looked up in the partial index
    /// `files_pending_destinations`, so a page's look costs its own names, not every
    /// destination pending (a stuck archive's included).
    pub async fn promised_among(&self, paths: &[String]) -> Result<Vec<String>, StoreError> {
        let mut promised = Vec::new();
        for part in paths.chunks(400) {
            let mut q = QueryBuilder::new(
                "SELECT final_path FROM files WHERE finalized = FALSE AND final_path IN (",
            );
            push_binds(&mut q, part.iter().map(String::as_str));
            promised.extend(
                q.build_query_scalar::<String>()
                    .fetch_all(&self.pool)
                    .await?,
            );
        }
        Ok(promised)
    }

    /// The intents of several moves, each recorded only where none is yet: two archivers on
    /// one file (in a fleet, one paused past its lease and its successor) then agree on the
    /// first one's. Returns each file's recorded destination after it.
    ///
    /// One statement per 400 intents, each its own transaction (an intent stands alone): the
    /// update returns the intents it recorded, and only files that had one already (another
    /// instance's) are read again.
    pub async fn record_final_paths(
        &self,
        intents: &[(i64, String)],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut recorded = Vec::with_capacity(intents.len());
        for part in intents.chunks(400) {
            let rows = PerRow::new(part.iter().map(|(id, _)| *id)).text(
                "final_path",
                part.iter().map(|(_, path)| Some(path.as_str())),
            );
            let mut q = QueryBuilder::new("UPDATE files SET");
            push_per_row(&mut q, &rows);
            q.push(" AND final_path IS NULL RETURNING id, final_path");
            let set: Vec<(i64, String)> = q.build_query_as().fetch_all(&self.pool).await?;
            if set.len() < part.len() {
                let done: std::collections::HashSet<i64> = set.iter().map(|(id, _)| *id).collect();
                let mut q = QueryBuilder::new(
                    "SELECT id, final_path FROM files WHERE final_path IS NOT NULL AND id IN (",
                );
                push_ids(
                    &mut q,
                    part.iter()
                        .map(|(id, _)| *id)
                        .filter(|id| !done.contains(id)),
                );
                recorded.extend(
                    q.build_query_as::<(i64, String)>()
                        .fetch_all(&self.pool)
                        .await?,
                );
            }
            recorded.extend(set);
        }
        Ok(recorded)
    }

    /// Records that a file ended in `state` without being moved (`push` leaves its files
    /// where they are).
    pub async fn mark_finalized(
        &self,
        file_id: i64,
        state: FileState,
        detail: &str,
    ) -> Result<(), StoreError> {
        let done = Finalized {
            file_id,
            state,
            final_path: None,
            detail: detail.to_owned(),
            receipt: None,
        };
        self.mark_finalized_many(&[done]).await
    }

    /// [`Store::mark_finalized`] for a page of files, in one transaction.
    pub async fn mark_finalized_many(&self, done: &[Finalized]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for part in done.chunks(200) {
            let rows = PerRow::new(part.iter().map(|d| d.file_id))
                .text("state", part.iter().map(|d| Some(d.state.as_str())))
                .text("final_path", part.iter().map(|d| d.final_path.as_deref()))
                .text("receipt_path", part.iter().map(|d| d.receipt.as_deref()));
            let mut q = QueryBuilder::new("UPDATE files SET finalized = TRUE, updated_at = ");
            q.push_bind(now).push(",");
            push_per_row(&mut q, &rows);
            // A file is finished once: another instance that finished it too (one paused past
            // its lease, woken after its successor did) records nothing over it.
            q.push(" AND finalized = FALSE RETURNING id");
            let updated: Vec<i64> = q.build_query_scalar().fetch_all(&mut *tx).await?;
            let events = part
                .iter()
                .filter(|d| updated.contains(&d.file_id))
                .map(|d| Event::file(d.file_id, Kind::Finalized, &d.detail))
                .collect::<Vec<_>>();
            insert_events(&mut tx, now, &events).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Ends batch `batch_id` with `verdict` in `tx`, if it is still in flight (an operator may
/// have aborted it meanwhile): false when it was not.
pub(super) async fn end_batch(
    tx: &mut sqlx::Transaction<'_, super::Db>,
    batch_id: i64,
    verdict: Verdict,
    outcome: &BatchOutcome,
    detail: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let moved = sqlx::query(concat!(
        "UPDATE batches SET state = $1, outcome_json = $2, updated_at = $3 WHERE id = $4
           AND state IN ",
        in_flight!()
    ))
    .bind(verdict.state())
    .bind(outcome)
    .bind(now)
    .bind(batch_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(false);
    }
    let event = Event::batch(batch_id, Kind::Batch(verdict.state()), detail);
    insert_event(&mut **tx, now, event).await?;
    Ok(true)
}

impl Store {
    /// [`Store::finish_batch`] for a successful batch, with each file's own record count (as
    /// the platform listed it) in the same transaction: a receipt that needs a count
    /// finds it recorded as soon as the batch is seen ended, and the ending costs one commit.
    /// The counts are kept even when the batch is not in flight any more (an operator aborted
    /// it meanwhile), as when they were recorded on their own before the ending.
    pub async fn finish_succeeded_batch(
        &self,
        batch_id: i64,
        outcome: &BatchOutcome,
        detail: &str,
        counts: &[(i64, i64)],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for part in counts.chunks(400) {
            let rows = PerRow::new(part.iter().map(|(id, _)| *id))
                .int("records", part.iter().map(|(_, n)| *n));
            let mut q = QueryBuilder::new("UPDATE files SET");
            push_per_row(&mut q, &rows);
            q.build().execute(&mut *tx).await?;
        }
        end_batch(&mut tx, batch_id, Verdict::Success, outcome, detail, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::testing::{on_both_backends, ready, sealed_batch};
    use crate::store::{BatchOutcome, BatchState, FileState, Finalized, Step};

    on_both_backends!(
        a_succeeded_batch_ends_with_each_files_own_record_count,
        an_aborted_batch_stays_aborted_and_keeps_the_record_counts,
        of_the_names_asked_only_those_promised_to_unfinished_files_are_taken,
    );

    async fn of_the_names_asked_only_those_promised_to_unfinished_files_are_taken(store: Store) {
        let ids = ready(&store, &[("a", 10, None), ("b", 11, None), ("c", 12, None)]).await;
        for id in &ids {
            store.fail_file(*id, "bad").await.unwrap();
        }
        let intents: Vec<(i64, String)> = ids.iter().map(|id| (*id, format!("/f/{id}"))).collect();
        store.set_final_paths(&intents[..2]).await.unwrap();
        // The second file is finished: its name is its own now, no longer a promise.
        store
            .mark_finalized_many(&[Finalized {
                file_id: ids[1],
                state: FileState::Failed,
                final_path: Some(intents[1].1.clone()),
                detail: "failed".into(),
                receipt: None,
            }])
            .await
            .unwrap();
        let asked: Vec<String> = intents
            .iter()
            .map(|(_, path)| path.clone())
            .chain(["/f/elsewhere".to_owned()])
            .collect();
        assert_eq!(
            store.promised_among(&asked).await.unwrap(),
            [intents[0].1.clone()]
        );
        assert!(store.promised_among(&[]).await.unwrap().is_empty());
    }

    /// A batch of three files, processing on the platform as `remote`; its id and the files'.
    async fn processing(store: &Store, remote: &str) -> (i64, Vec<i64>) {
        let files = ready(store, &[("a", 10, None), ("b", 11, None), ("c", 12, None)]).await;
        let batch = sealed_batch(store, &files).await;
        for step in [
            Step::Creating,
            Step::Loading { remote_id: remote },
            Step::Completing,
            Step::Processing,
        ] {
            store.advance_batch(batch, step, "step").await.unwrap();
        }
        (batch, files)
    }

    async fn a_succeeded_batch_ends_with_each_files_own_record_count(store: Store) {
        let (batch, files) = processing(&store, "B1").await;
        let counts: Vec<(i64, i64)> = files.iter().rev().map(|id| (*id, id * 3)).collect();
        let outcome = BatchOutcome(serde_json::json!({"status": "success"}));
        store
            .finish_succeeded_batch(batch, &outcome, "Success", &counts)
            .await
            .unwrap();
        assert_eq!(
            store.batch(batch).await.unwrap().state(),
            BatchState::Success
        );
        // What the archiver reads for the receipts once the batch has ended.
        let due = store.files_to_finalize(0, 10).await.unwrap();
        assert_eq!(due.len(), 3, "{due:?}");
        for file in due {
            assert_eq!(file.records, Some(file.id * 3), "file {}", file.id);
        }
    }

    async fn an_aborted_batch_stays_aborted_and_keeps_the_record_counts(store: Store) {
        let (batch, files) = processing(&store, "B1").await;
        assert!(store.abort_batch(batch, "operator").await.unwrap());
        let counts: Vec<(i64, i64)> = files.iter().map(|id| (*id, 5)).collect();
        let outcome = BatchOutcome(serde_json::json!({"status": "success"}));
        store
            .finish_succeeded_batch(batch, &outcome, "Success", &counts)
            .await
            .unwrap();
        assert_eq!(
            store.batch(batch).await.unwrap().state(),
            BatchState::Aborted,
            "a success seen after the operator aborted does not end it again"
        );
        for id in files {
            assert_eq!(store.file(id).await.unwrap().unwrap().records, Some(5));
        }
    }
}
