//! Watches whose dataset the platform does not know: telling that apart from bad data, blocking
//! the dataset, saying so, and lifting the block when the dataset appears.
//!
//! A dataset that does not exist (deleted, mistyped, or not visible in the configured sandbox)
//! is a configuration problem, not a property of any file: nothing may be failed for it. When
//! the platform refuses a batch with an answer that could mean "no such dataset", the Catalog
//! is asked about the dataset itself; only its 404 blocks it (error wording is never read).
//! While blocked, the dataset's watches take no new batch (their files stay where they were
//! dropped) and its batches in flight are not driven (`Store::batches_due` skips them); the
//! daemon asks the Catalog again on a backoff (5 s, doubling to 5 min) and lifts the block once
//! the dataset exists. A config reload lifts every block (see `daemon`).
//!
//! This module decides and reports; the store keeps the block, the stages honour it. It must
//! not move files or build HTTP requests itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError, ErrorKind};
use crate::config::Watch;
use crate::store::{BlockedDataset, Store, StoreError, now_ms};

/// The first check after a block, then doubling up to [`LAST_CHECK_EVERY`].
pub const FIRST_CHECK_AFTER: Duration = Duration::from_secs(5);
pub const LAST_CHECK_EVERY: Duration = Duration::from_secs(300);

/// What the Catalog says about a dataset a batch was refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetCheck {
    /// It exists: the refusal was about the batch or its data.
    Exists,
    /// 404: it does not exist, or is not visible in the configured sandbox.
    Missing,
}

/// Whether a refusal could mean that the dataset does not exist, so that the Catalog must be
/// asked before anything is failed for it: a 4xx about the request (400, 404, 410, 422).
/// Credentials (401, 403), throttling and sizes say something else.
pub fn may_mean_missing_dataset(e: &ApiError) -> bool {
    !e.is_config() && matches!(e.http_status(), Some(400 | 404 | 410 | 422))
}

/// Asks the Catalog whether `dataset` exists.
pub async fn check(api: &ApiClient, dataset: &str) -> Result<DatasetCheck, ApiError> {
    match api.get_dataset(dataset).await {
        Ok(Some(_)) => Ok(DatasetCheck::Exists),
        Ok(None) => Ok(DatasetCheck::Missing),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(DatasetCheck::Missing),
        Err(e) => Err(e),
    }
}

/// Blocks `dataset`, found missing by a batch of `watch` that the platform refused with
/// `refusal`. Whoever runs the stages says so: the daemon's [`recheck`] (with what to do), a
/// push in its own words.
pub async fn block(
    store: &Store,
    dataset: &str,
    watch: &str,
    refusal: &str,
) -> Result<(), StoreError> {
    let next = now_ms() + FIRST_CHECK_AFTER.as_millis() as i64;
    if store.block_dataset(dataset, watch, refusal, next).await? {
        tracing::debug!(watch, dataset, "dataset blocked: {refusal}");
    }
    Ok(())
}

/// The daemon's ERROR about a block: which watch, which dataset, what to do.
fn announce(b: &BlockedDataset) {
    tracing::error!(
        watch = %b.watch, dataset = %b.dataset,
        "watch {} is blocked: dataset {} does not exist (or is not visible in the configured sandbox); \
         its files stay where they were dropped and nothing is failed. Create the dataset, or set the watch's \
         `dataset` to one that exists and reload the config (SIGHUP); batchdrop checks again every {}s to {}s \
         and resumes by itself. The platform said: {}",
        b.watch,
        b.dataset,
        FIRST_CHECK_AFTER.as_secs(),
        LAST_CHECK_EVERY.as_secs(),
        b.reason
    );
}

/// The wait before the check after `checks` checks that found the dataset missing.
pub fn next_check_after(checks: i64) -> Duration {
    let doubled = FIRST_CHECK_AFTER.saturating_mul(1u32 << checks.clamp(0, 16) as u32);
    doubled.min(LAST_CHECK_EVERY)
}

/// One line for an operator (`/readyz`, `status`): which watch, which dataset, what to do.
pub fn describe(b: &BlockedDataset) -> String {
    format!(
        "watch {} is blocked: dataset {} does not exist (or is not visible in the configured sandbox); \
         create it, or fix the watch's dataset and reload the config; checked again at {}",
        b.watch,
        b.dataset,
        chrono::DateTime::from_timestamp_millis(b.next_check_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    )
}

/// Says which watches are blocked (each block once, and again after a restart), checks the
/// blocked datasets when their time comes and lifts the blocks of those that exist again,
/// waking the stages that wait for them. Runs until `stop`.
pub async fn recheck(
    api: ApiClient,
    watches: Arc<RwLock<HashMap<String, Watch>>>,
    store: Store,
    wake: Vec<Arc<Notify>>,
    stop: CancellationToken,
) {
    let mut announced = std::collections::HashSet::new();
    loop {
        // Idle (nothing blocked), a look every few seconds is enough: the first check of a new
        // block is due only FIRST_CHECK_AFTER after it anyway.
        let mut wait = FIRST_CHECK_AFTER;
        match store.blocked_datasets().await {
            Ok(blocked) => {
                announced.retain(|d| blocked.iter().any(|b| &b.dataset == d));
                for b in &blocked {
                    if announced.insert(b.dataset.clone()) {
                        announce(b);
                    }
                }
                let now = now_ms();
                for b in blocked.iter().filter(|b| b.next_check_at <= now) {
                    // Asked in the sandbox of the watch that met the block (a `push`, or a
                    // watch removed since, in `[platform] sandbox`).
                    let sandbox = watches
                        .read()
                        .unwrap()
                        .get(&b.watch)
                        .map(|w| w.sandbox.clone());
                    match api.in_sandbox(sandbox.as_deref()) {
                        Ok(api) => recheck_one(&api, &store, b, &wake).await,
                        Err(e) => {
                            tracing::error!(watch = %b.watch, dataset = %b.dataset, "cannot check dataset {} again: {e}", b.dataset)
                        }
                    }
                }
                if !blocked.is_empty() {
                    wait = Duration::from_secs(1);
                }
            }
            Err(e) => tracing::debug!("cannot read the blocked datasets now: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn recheck_one(api: &ApiClient, store: &Store, b: &BlockedDataset, wake: &[Arc<Notify>]) {
    let result = match check(api, &b.dataset).await {
        Ok(DatasetCheck::Exists) => match store.unblock_dataset(&b.dataset).await {
            Ok(true) => {
                tracing::info!(watch = %b.watch, dataset = %b.dataset, "dataset {} exists now: watch {} resumes", b.dataset, b.watch);
                for w in wake {
                    w.notify_one();
                }
                Ok(())
            }
            other => other.map(|_| ()),
        },
        Ok(DatasetCheck::Missing) => {
            let wait = next_check_after(b.checks + 1);
            if wait == LAST_CHECK_EVERY {
                tracing::warn!(watch = %b.watch, dataset = %b.dataset, "{}", describe(b));
            }
            store
                .still_blocked(&b.dataset, now_ms() + wait.as_millis() as i64)
                .await
        }
        Err(e) => {
            // Unknown: ask again later, as if it were still missing.
            tracing::debug!(dataset = %b.dataset, "cannot check the blocked dataset now: {e}");
            let wait = next_check_after(b.checks + 1);
            store
                .still_blocked(&b.dataset, now_ms() + wait.as_millis() as i64)
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(dataset = %b.dataset, "cannot record the check of a blocked dataset now: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_back_off_from_five_seconds_to_five_minutes() {
        assert_eq!(next_check_after(0), Duration::from_secs(5));
        assert_eq!(next_check_after(1), Duration::from_secs(10));
        assert_eq!(next_check_after(5), Duration::from_secs(160));
        assert_eq!(next_check_after(6), Duration::from_secs(300));
        assert_eq!(next_check_after(1000), Duration::from_secs(300));
    }
}
