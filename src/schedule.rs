//! When a watch's next batch is due, and why: how ready files group into batches (one format
//! each, within `max_files` / `max_bytes`), when a group may be sealed (full, big enough to
//! go at once (`seal_bytes`), `max_wait` waited, `min_batch_bytes` reached or `max_hold`
//! over), and the spacing of the daily batch
//! budget (`max_batches_per_day`) over a rolling 24 hours. Pure functions of what is ready,
//! what was sealed and the time: the batcher seals by them, `batchdrop status` shows them, so
//! the two cannot disagree.
//!
//! This module decides; it must not touch the store, the platform or files.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Watch;
use crate::store::FileRow;

/// The budget's window: batches sealed in the last 24 hours count against it.
pub const DAY_MS: i64 = 86_400_000;

/// The limits one watch asks for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_files: u64,
    pub max_bytes: u64,
    pub max_wait: Duration,
    /// A group smaller than this is held for more files (0: never)...
    pub min_batch_bytes: u64,
    /// ...until its oldest file waited this long.
    pub max_hold: Duration,
    /// A group of at least this many bytes is sealed without waiting out `max_wait` (0: never).
    pub seal_bytes: u64,
}

impl Limits {
    pub fn of(watch: &Watch) -> Limits {
        Limits {
            max_files: watch.max_files,
            max_bytes: watch.max_bytes,
            max_wait: watch.max_wait,
            min_batch_bytes: watch.min_batch_bytes,
            max_hold: watch.max_hold,
            seal_bytes: watch.seal_bytes,
        }
    }
}

/// Why a batch is (or will be) sealed when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The group reached `max_files` or `max_bytes`.
    Size,
    /// The group reached `seal_bytes`: big enough that waiting for more files only delays it.
    Big,
    /// Its oldest file waited `max_wait` (and the group holds `min_batch_bytes`).
    Wait,
    /// The group is below `min_batch_bytes`: it is held for more files, sealed when it
    /// reaches them or when its oldest file waited `max_hold`, whichever comes first.
    Hold,
    /// The daily batch budget: the spacing since the last batch, or the count of the last
    /// 24 hours, holds it back.
    Budget,
}

impl Why {
    /// In words, for `status` and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Why::Size => "full (max_files or max_bytes)",
            Why::Big => "big enough to go at once (seal_bytes)",
            Why::Wait => "its oldest file waited max_wait",
            Why::Hold => "held for min_batch_bytes, at most max_hold",
            Why::Budget => "the daily batch budget (max_batches_per_day) spaces batches",
        }
    }
}

/// One group of ready files of one format, as far as sealing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub files: u64,
    pub bytes: u64,
    /// When its oldest file was discovered (unix ms).
    pub oldest_ms: i64,
    /// Nothing more may join it: the next file did not fit, or it is a replay.
    pub closed: bool,
}

/// When `group` may be sealed (unix ms; at or before now: it may now) and why. Reaching
/// `min_batch_bytes` while held makes it `Wait` from then on, and reaching `seal_bytes` makes
/// it due at once (`Big`), so more files can only make a group due sooner.
pub fn group_due(group: Group, limits: Limits) -> (i64, Why) {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if group.closed || group.files >= limits.max_files || group.bytes >= limits.max_bytes {
        return (group.oldest_ms, Why::Size);
    }
    if group.bytes < limits.min_batch_bytes {
        let hold = ms(limits.max_hold.max(limits.max_wait));
        return (group.oldest_ms.saturating_add(hold), Why::Hold);
    }
    // Not a cap: max_files / max_bytes alone decide how files split into groups; this only
    // decides when a group may go. The platform ingests batches of hundreds of MB
    // efficiently: holding one that big for company only delays it.
    if limits.seal_bytes > 0 && group.bytes >= limits.seal_bytes {
        return (group.oldest_ms, Why::Big);
    }
    (
        group.oldest_ms.saturating_add(ms(limits.max_wait)),
        Why::Wait,
    )
}

/// Groups ready files into batches. A group is sealed when `group_due` says it is due, or on
/// `flush` (shutdown, `--once`). Files carrying a replay request travel alone: a replay batch
/// replaces exactly what its sidecar names. A file larger than `max_bytes` travels alone.
pub fn plan(files: &[FileRow], limits: Limits, now_ms: i64, flush: bool) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for (ids, group) in groups(files, limits) {
        if flush || group_due(group, limits).0 <= now_ms {
            out.push(ids);
        }
    }
    out
}

/// The batches `files` make, each with its summary, in `plan`'s order: replays first (alone),
/// then per (format, multi-line JSON) the full groups and the last, partial one.
pub fn groups(files: &[FileRow], limits: Limits) -> Vec<(Vec<i64>, Group)> {
    let mut by_kind: BTreeMap<(&str, bool), Vec<&FileRow>> = BTreeMap::new();
    let mut out = Vec::new();
    let mut close = |current: &mut Vec<&FileRow>, bytes: &mut u64, closed: bool| {
        let group = Group {
            files: current.len() as u64,
            bytes: *bytes,
            oldest_ms: current.iter().map(|f| f.discovered_at).min().unwrap_or(0),
            closed,
        };
        out.push((current.iter().map(|f| f.id).collect(), group));
        current.clear();
        *bytes = 0;
    };
    for file in files {
        if file.replay.is_some() {
            // Due as soon as it is ready: nothing may join it.
            close(&mut vec![file], &mut (file.size.max(0) as u64), true);
            continue;
        }
        by_kind
            .entry((file.format.as_str(), file.multiline_json))
            .or_default()
            .push(file);
    }
    for (_, kind) in by_kind {
        let mut current: Vec<&FileRow> = Vec::new();
        let mut bytes = 0u64;
        for file in kind {
            let size = file.size.max(0) as u64;
            if !current.is_empty()
                && (current.len() as u64 >= limits.max_files || bytes + size > limits.max_bytes)
            {
                close(&mut current, &mut bytes, true);
            }
            current.push(file);
            bytes += size;
        }
        if !current.is_empty() {
            close(&mut current, &mut bytes, false);
        }
    }
    out
}

/// What a watch sealed in the budget's window (the last 24 hours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    pub count: i64,
    /// When the first and the last of them were sealed (unix ms).
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// The earliest time (unix ms) a watch with a budget of `per_day` batches may seal its next
/// one: `per_day` batches in the last 24 hours wait for the oldest to leave the window, and
/// batches are spaced at least 24 h / `per_day` apart.
pub fn budget_opens(per_day: u32, sealed: Sealed) -> i64 {
    let per_day = i64::from(per_day.max(1));
    let spaced = sealed
        .last_ms
        .map_or(i64::MIN, |last| last + DAY_MS / per_day);
    if sealed.count >= per_day {
        let frees = sealed.first_ms.map_or(i64::MIN, |first| first + DAY_MS);
        return frees.max(spaced);
    }
    spaced
}

/// Whether a watch with a budget of `per_day` may seal a batch now. `flush` (shutdown,
/// `--once`) skips the spacing, never the count.
pub fn budget_allows(per_day: u32, sealed: Sealed, now_ms: i64, flush: bool) -> bool {
    if sealed.count >= i64::from(per_day) {
        return false;
    }
    flush || budget_opens(per_day, sealed) <= now_ms
}

/// The next batch of a watch: when, and why then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub at_ms: i64,
    pub why: Why,
    /// The group it would be (before the budget's wait lets it grow).
    pub group: Group,
}

/// When a watch's next batch is due: the group due first, later if the budget says so.
/// `None` when nothing is ready.
pub fn next_due(files: &[FileRow], limits: Limits, budget: Option<(u32, Sealed)>) -> Option<Due> {
    let (at_ms, why, group) = groups(files, limits)
        .into_iter()
        .map(|(_, group)| {
            let (at, why) = group_due(group, limits);
            (at, why, group)
        })
        .min_by_key(|(at, _, _)| *at)?;
    if let Some((per_day, sealed)) = budget {
        let opens = budget_opens(per_day, sealed);
        if opens > at_ms {
            return Some(Due {
                at_ms: opens,
                why: Why::Budget,
                group,
            });
        }
    }
    Some(Due { at_ms, why, group })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ready file of `size` bytes discovered at `at` (unix ms).
    pub(crate) fn file(id: i64, format: &str, size: i64, at: i64) -> FileRow {
        FileRow {
            id,
            watch: "w".into(),
            dataset: "d".into(),
            format: crate::format::Format::parse(format).unwrap(),
            multiline_json: false,
            root: "/r".into(),
            rel_path: format!("f{id}"),
            dev: 1,
            ino: id,
            size,
            mtime_ns: 0,
            sha256: None,
            state: crate::store::FileState::Ready,
            batch_id: None,
            uploaded_bytes: 0,
            sent: false,
            duplicate_of: None,
            replay: None,
            sidecar: None,
            reason: None,
            final_path: None,
            finalized: false,
            discovered_at: at,
            updated_at: at,
            raw_path: None,
            waits_for: None,
            records: None,
            receipt_path: None,
        }
    }

    const L: Limits = Limits {
        max_files: 3,
        max_bytes: 100,
        max_wait: Duration::from_secs(5),
        min_batch_bytes: 0,
        max_hold: Duration::from_secs(3600),
        seal_bytes: 0,
    };

    #[test]
    fn a_young_partial_group_waits() {
        let files = vec![file(1, "json", 10, 1000)];
        assert!(plan(&files, L, 2000, false).is_empty());
        assert_eq!(plan(&files, L, 6000, false), vec![vec![1]]);
        assert_eq!(plan(&files, L, 2000, true), vec![vec![1]]);
    }

    #[test]
    fn groups_split_on_file_count_and_bytes_and_never_mix_formats() {
        let files: Vec<_> = (1..=7).map(|i| file(i, "json", 10, 1000)).collect();
        assert_eq!(
            plan(&files, L, 1000, false),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
        let files = vec![
            file(1, "json", 60, 0),
            file(2, "json", 60, 0),
            file(3, "csv", 1, 0),
        ];
        assert_eq!(
            plan(&files, L, 10_000, false),
            vec![vec![3], vec![1], vec![2]]
        );
    }

    #[test]
    fn a_file_larger_than_max_bytes_still_travels_alone() {
        let files = vec![file(1, "json", 500, 0), file(2, "json", 5, 0)];
        assert_eq!(plan(&files, L, 0, false), vec![vec![1]]);
    }

    #[test]
    fn replay_files_travel_alone() {
        let mut f = file(2, "json", 1, 0);
        f.replay = Some(crate::store::Predecessors(vec!["X".into()]));
        let files = vec![file(1, "json", 1, 0), f, file(3, "json", 1, 0)];
        assert_eq!(plan(&files, L, 10_000, false), vec![vec![2], vec![1, 3]]);
    }

    #[test]
    fn a_group_below_min_batch_bytes_is_held_until_it_reaches_them_or_max_hold_is_over() {
        let held = Limits {
            min_batch_bytes: 50,
            ..L
        };
        let small = vec![file(1, "json", 10, 0)];
        // Past max_wait, below min_batch_bytes: held.
        assert!(plan(&small, held, 6_000, false).is_empty());
        assert_eq!(
            next_due(&small, held, None).map(|d| (d.at_ms, d.why)),
            Some((3_600_000, Why::Hold))
        );
        assert_eq!(plan(&small, held, 3_600_000, false), vec![vec![1]]);
        assert_eq!(plan(&small, held, 6_000, true), vec![vec![1]], "flush");
        // Reaching min_batch_bytes: due at max_wait of its oldest file.
        let enough = vec![file(1, "json", 10, 0), file(2, "json", 45, 5_000)];
        assert_eq!(plan(&enough, held, 5_000, false), vec![vec![1, 2]]);
        assert_eq!(
            next_due(&enough, held, None).map(|d| (d.at_ms, d.why)),
            Some((5_000, Why::Wait))
        );
    }

    #[test]
    fn a_group_that_reaches_seal_bytes_is_due_at_once_and_keeps_the_hard_caps() {
        let big = Limits {
            seal_bytes: 50,
            ..L
        };
        // Below seal_bytes: it waits max_wait as before.
        let small = vec![file(1, "json", 49, 1_000)];
        assert!(plan(&small, big, 1_000, false).is_empty());
        assert_eq!(
            next_due(&small, big, None).map(|d| (d.at_ms, d.why)),
            Some((6_000, Why::Wait))
        );
        // One file of seal_bytes, or files adding up to it: due as soon as they are ready.
        let one = vec![file(1, "json", 50, 1_000)];
        assert_eq!(plan(&one, big, 1_000, false), vec![vec![1]]);
        assert_eq!(
            next_due(&one, big, None).map(|d| (d.at_ms, d.why)),
            Some((1_000, Why::Big))
        );
        let two = vec![file(1, "json", 20, 1_000), file(2, "json", 30, 1_500)];
        assert_eq!(plan(&two, big, 1_500, false), vec![vec![1, 2]]);
        // Off (0): the same file waits max_wait.
        assert!(plan(&one, L, 1_000, false).is_empty());
        // max_files and max_bytes still split groups: the big rule seals what they leave.
        let files = vec![
            file(1, "json", 60, 0),
            file(2, "json", 60, 0),
            file(3, "json", 10, 0),
        ];
        assert_eq!(plan(&files, big, 0, false), vec![vec![1], vec![2, 3]]);
        assert_eq!(
            groups(&files, big)
                .into_iter()
                .map(|(_, g)| group_due(g, big).1)
                .collect::<Vec<_>>(),
            vec![Why::Size, Why::Big]
        );
        // With min_batch_bytes (at most seal_bytes, as the config requires): held below it,
        // at once from seal_bytes.
        let held = Limits {
            min_batch_bytes: 50,
            ..big
        };
        assert_eq!(
            next_due(&small, held, None).map(|d| (d.at_ms, d.why)),
            Some((3_601_000, Why::Hold))
        );
        assert_eq!(plan(&two, held, 1_500, false), vec![vec![1, 2]]);
        // The daily budget still spaces a big batch.
        let one_sealed = Sealed {
            count: 1,
            first_ms: Some(0),
            last_ms: Some(0),
        };
        let due = next_due(&one, big, Some((4, one_sealed))).unwrap();
        assert_eq!((due.at_ms, due.why), (DAY_MS / 4, Why::Budget));
    }

    #[test]
    fn the_budget_spaces_batches_and_caps_them_over_a_rolling_day() {
        let per_day = 4; // one every 6 h
        let six_h = DAY_MS / 4;
        let none = Sealed::default();
        assert!(budget_allows(per_day, none, 0, false));
        let one = Sealed {
            count: 1,
            first_ms: Some(0),
            last_ms: Some(0),
        };
        assert!(!budget_allows(per_day, one, six_h - 1, false));
        assert!(budget_allows(per_day, one, six_h - 1, true), "flush");
        assert!(budget_allows(per_day, one, six_h, false));
        let full = Sealed {
            count: 4,
            first_ms: Some(0),
            last_ms: Some(3 * six_h),
        };
        assert_eq!(budget_opens(per_day, full), DAY_MS);
        assert!(
            !budget_allows(per_day, full, DAY_MS, true),
            "never past the count"
        );
        let files = vec![file(1, "json", 10, 3 * six_h)];
        let due = next_due(&files, L, Some((per_day, full))).unwrap();
        assert_eq!((due.at_ms, due.why), (DAY_MS, Why::Budget));
        // A group due after the budget opens keeps its own reason.
        let due = next_due(&files, L, Some((per_day, none))).unwrap();
        assert_eq!((due.at_ms, due.why), (3 * six_h + 5_000, Why::Wait));
    }
}
