//! `batchdrop status`'s view of what comes next, per watch: when its next batch is due and
//! why (full, big enough (`seal_bytes`), `max_wait`, held for `min_batch_bytes`, or the daily
//! batch budget), and how much
//! of its budget the last 24 hours used, by the same rules the batcher seals by
//! (`crate::schedule`).
//!
//! It reads the state database (the budgets the daemon recorded at start or reload, the ready
//! files, the batches sealed); it must not change the state or talk to the platform.

use serde::Serialize;

use super::{CommandError, human_bytes, iso};
use crate::config::Watch;
use crate::schedule::{self, DAY_MS, Limits, Why};
use crate::store::{Store, now_ms};

/// Ready files looked at per watch: more than one batch's worth says nothing more about the next.
const READY_PAGE: i64 = 30_000;

/// What comes next for one watch.
#[derive(Debug, Serialize)]
pub struct ScheduleJson {
    pub watch: String,
    pub dataset: String,
    /// Files ready for a batch (up to the first 30,000).
    pub ready_files: u64,
    pub ready_bytes: u64,
    /// Null when nothing is ready.
    pub next_batch: Option<NextBatchJson>,
    /// Null when the watch has no daily budget (or the daemon never ran).
    pub budget: Option<BudgetJson>,
}

#[derive(Debug, Serialize)]
pub struct NextBatchJson {
    /// When it may be sealed (in the past: as soon as the batcher's next pass).
    pub due_at: String,
    pub due_now: bool,
    pub why: Why,
    /// `why` in words.
    pub reason: String,
    /// The batch it would be now (it may grow while it waits).
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct BudgetJson {
    /// Batches sealed in the last 24 hours.
    pub used: i64,
    pub max_batches_per_day: i64,
    /// The budget is the guardrail's default for a Profile-enabled dataset.
    pub profile_default: bool,
    /// At least this long between two batches.
    pub spacing_seconds: i64,
    /// The window rolls: when the oldest batch counted leaves it (null: none counted).
    pub next_frees_at: Option<String>,
}

/// The schedule of each configured watch (of `dataset` only, when given).
pub async fn schedule(
    store: &Store,
    watches: &[Watch],
    dataset: Option<&str>,
) -> Result<Vec<ScheduleJson>, CommandError> {
    let budgets = store.watch_budgets().await?;
    let now = now_ms();
    let mut out = Vec::new();
    for watch in watches {
        if dataset.is_some_and(|d| d != watch.dataset) {
            continue;
        }
        // The daemon's settled budget; before its first start, the configured one.
        let recorded = budgets.iter().find(|b| b.watch == watch.name);
        let per_day = match recorded {
            Some(b) => b.max_batches_per_day,
            None => watch.max_batches_per_day.map(i64::from),
        };
        let per_day = per_day
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0);
        let sealed = store
            .batches_sealed_since(&watch.name, now - DAY_MS)
            .await?;
        let ready = store.ready_files(&watch.name, READY_PAGE).await?;
        let limits = Limits::of(watch);
        let next = schedule::next_due(&ready, limits, per_day.map(|n| (n, sealed)));
        out.push(ScheduleJson {
            watch: watch.name.clone(),
            dataset: watch.dataset.clone(),
            ready_files: ready.len() as u64,
            ready_bytes: ready.iter().map(|f| f.size.max(0) as u64).sum(),
            next_batch: next.map(|due| NextBatchJson {
                due_at: iso(due.at_ms.max(0)),
                due_now: due.at_ms <= now,
                why: due.why,
                reason: due.why.describe().to_owned(),
                files: due.group.files,
                bytes: due.group.bytes,
            }),
            budget: per_day.map(|n| BudgetJson {
                used: sealed.count,
                max_batches_per_day: i64::from(n),
                profile_default: recorded.is_some_and(|b| b.profile == 1)
                    && watch.max_batches_per_day.is_none(),
                spacing_seconds: DAY_MS / i64::from(n) / 1000,
                next_frees_at: sealed.first_ms.map(|first| iso(first + DAY_MS)),
            }),
        });
    }
    Ok(out)
}

/// The lines `status` prints for one watch.
pub fn render(s: &ScheduleJson) -> String {
    let next = match &s.next_batch {
        None => "nothing ready".to_owned(),
        Some(n) => format!(
            "next batch ({} files, {}) due {}{}: {}",
            n.files,
            human_bytes(n.bytes as i64),
            if n.due_now { "now, since " } else { "at " },
            n.due_at,
            n.reason
        ),
    };
    let budget = match &s.budget {
        None => String::new(),
        Some(b) => format!(
            "; budget {} of {} batches in the last 24 h{} (one per {} s at most){}",
            b.used,
            b.max_batches_per_day,
            if b.profile_default {
                ", the default for a Profile-enabled dataset"
            } else {
                ""
            },
            b.spacing_seconds,
            b.next_frees_at
                .as_deref()
                .map(|t| format!(", the oldest leaves the window at {t}"))
                .unwrap_or_default()
        ),
    };
    format!("  watch {} ({}): {next}{budget}\n", s.watch, s.dataset)
}
