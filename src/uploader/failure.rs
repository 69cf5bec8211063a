//! What becomes of a batch whose drive failed: a platform error classified into a retry
//! on a backoff (or a delay the platform asked for), a batch abandoned (its files go into a
//! new one) or failed (its files go to the failed folder), or a dataset blocked.
//!
//! This module must not send files or move a batch forward (the state machine in `mod.rs`).

use std::time::Duration;

use super::Uploader;
use crate::api::{ApiError, BatchAction, ErrorKind};
use crate::blocked::{self, DatasetCheck};
use crate::retry;
use crate::store::{BatchOutcome, BatchRow, StoreError, Verdict, now_ms};
use crate::telemetry;

impl Uploader {
    pub(super) async fn on_api_error(&self, b: &BatchRow, e: ApiError) -> Result<(), StoreError> {
        // Re-read: progress made during this drive reset the count of failures in a row.
        let b = &self.store.batch(b.id).await?;
        let label = b.label();
        // Credentials or set-up trouble (IMS refusing the client secret, a 403, a token the
        // platform rejects, an unreadable secret file) says nothing about this batch's data:
        // failing its files would quarantine good data for an operator's mistake. The batch
        // waits as it would for an unreachable platform, and the error says what to fix.
        let credentials = e.is_config() || e.http_status() == Some(401);
        let retry_after = match e.kind() {
            ErrorKind::Transient { retry_after } => Some(retry_after),
            _ if credentials => Some(None),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            return self.retry_later(b, &e, retry_after, credentials).await;
        }
        // A refusal that could mean the dataset is gone is a configuration problem, never the
        // files' fault: the Catalog decides (see `blocked`), and nothing fails meanwhile.
        if blocked::may_mean_missing_dataset(&e) {
            let check = match self.api_for(b) {
                Ok(api) => blocked::check(&api, &b.dataset).await,
                Err(e) => Err(e),
            };
            match check {
                Ok(DatasetCheck::Missing) => {
                    return blocked::block(&self.store, &b.dataset, &b.watch, &e.to_string()).await;
                }
                Ok(DatasetCheck::Exists) => {}
                Err(check) => {
                    return self
                        .retry_later(b, &check, check.retry_after(), false)
                        .await;
                }
            }
        }
        match e.kind() {
            ErrorKind::NotFound if b.remote_id().is_some() => {
                self.abandon(
                    b,
                    &format!("the platform no longer knows batch {label}: {e}"),
                )
                .await
            }
            _ if b.replay.is_some() && b.remote_id().is_none() => {
                // The platform refused the replay itself (a predecessor it does not know, or
                // of another dataset): say which sidecar asked for it and what to do.
                let asked_by = self
                    .store
                    .batch_files(b.id)
                    .await?
                    .into_iter()
                    .find_map(|f| f.sidecar)
                    .map(|s| format!("the sidecar {s}"));
                let again = match &asked_by {
                    Some(_) => {
                        "then drop the file and its sidecar again (or fix the sidecar in the failed folder and run `batchdrop retry` on the file)"
                    }
                    None => "then push again",
                };
                let why = format!(
                    "the platform refused the replay of {} asked by {}: {e}. Name in `replaces` a batch of this dataset that exists, {again}",
                    b.replay.clone().unwrap_or_default(),
                    asked_by.as_deref().unwrap_or("--replaces"),
                );
                self.fail_batch(b, &why).await
            }
            _ => self.fail_batch(b, &e.to_string()).await,
        }
    }

    /// A failure that says nothing final about the batch's data: schedule the next attempt,
    /// or fail the batch once `max_attempts` / `max_retry_age` are used up.
    async fn retry_later(
        &self,
        b: &BatchRow,
        e: &ApiError,
        retry_after: Option<Duration>,
        credentials: bool,
    ) -> Result<(), StoreError> {
        let label = b.label();
        let age = b.first_error_at.map(|t| now_ms() - t).unwrap_or(0);
        // A platform that cannot be reached at all (down, restarting) or that refuses
        // our credentials says nothing about this batch: only max_retry_age applies
        // then, and the waits grow with the outage's age. max_attempts counts the
        // platform's own refusals.
        let counts = !e.is_unreachable() && !credentials;
        if (counts && b.attempts + 1 >= self.upload.max_attempts as i64)
            || age >= self.upload.max_retry_age.as_millis() as i64
        {
            let why = format!(
                "gave up after {} attempts over {}s: {e}",
                b.attempts + 1,
                age / 1000
            );
            return self.fail_batch(b, &why).await;
        }
        let attempt = if counts {
            b.attempts as u32 + 1
        } else {
            retry::attempt_for_age(
                Duration::from_millis(age.max(0) as u64),
                self.upload.backoff_initial,
            )
        };
        let wait = retry::backoff_jittered(
            attempt,
            self.upload.backoff_initial,
            self.upload.backoff_max,
            retry_after,
        );
        let cause = match e.http_status() {
            _ if e.is_config() => "credentials",
            Some(429) => "throttled",
            Some(401) => "unauthorized",
            Some(s) if s >= 500 => "server_error",
            Some(_) => "other",
            None => "network",
        };
        metrics::counter!(telemetry::RETRIES, "cause" => cause, "watch" => b.watch.clone())
            .increment(1);
        if e.is_config() {
            tracing::error!(batch = %label, dataset = %b.dataset, attempt, "the platform refuses batchdrop's credentials or set-up; the files wait (nothing is failed for this): fix [platform] / [platform.auth] in the config (client_id, the secret, org_id, sandbox, the token file); retrying in {wait:?}: {e}");
        } else {
            tracing::warn!(batch = %label, dataset = %b.dataset, attempt, "transient failure, retrying in {wait:?}: {e}");
        }
        self.store
            .schedule_retry(
                b.id,
                &e.to_string(),
                now_ms() + wait.as_millis() as i64,
                counts,
            )
            .await?;
        Ok(())
    }

    /// The batch cannot be used any more: abort it on the platform (best effort) and send its
    /// files, untouched, into a new batch.
    pub(super) async fn abandon(&self, b: &BatchRow, why: &str) -> Result<(), StoreError> {
        tracing::warn!(batch = %b.label(), dataset = %b.dataset, "abandoning batch, its files go into a new one: {why}");
        if let Some(remote) = b.remote_id()
            && let Ok(api) = self.api_for(b)
        {
            let _ = api.batch_action(remote, BatchAction::Abort).await;
        }
        metrics::counter!(telemetry::BATCHES, "outcome" => "abandoned", "watch" => b.watch.clone())
            .increment(1);
        self.store.abandon_batch(b.id, why).await
    }

    /// A permanent failure: the batch's files go to the failed folder with `why`.
    pub(super) async fn fail_batch(&self, b: &BatchRow, why: &str) -> Result<(), StoreError> {
        tracing::error!(batch = %b.label(), dataset = %b.dataset, "batch failed: {why}");
        if let Some(remote) = b.remote_id()
            && let Ok(api) = self.api_for(b)
        {
            let _ = api.batch_action(remote, BatchAction::Abort).await;
        }
        for f in self.store.batch_files(b.id).await? {
            if f.state.in_batch() {
                self.store.fail_file(f.id, why).await?;
            }
        }
        let outcome = BatchOutcome::local_error(why);
        self.store
            .finish_batch(b.id, Verdict::Failed, &outcome, why)
            .await?;
        metrics::counter!(telemetry::BATCHES, "outcome" => "failed", "watch" => b.watch.clone())
            .increment(1);
        self.wake_archiver.notify_one();
        Ok(())
    }
}
