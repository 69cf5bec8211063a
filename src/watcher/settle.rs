//! When a file is settled: its identity (size, mtime, inode) held still for the watch's
//! `settle`, or a quarter of it for a sidecar whose writer said it is done. A pure decision,
//! tested like `batcher::plan`; the watcher looks at the files and applies it.
//!
//! This module must not read the disk or the store.

use std::time::{Duration, Instant};

use crate::config::WatchMode;
use crate::disk::Identity;
use crate::replay;

/// What a new look at a candidate decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// It is no longer there: forget it.
    Gone,
    /// It changed: its clock starts again from this identity.
    Changed(Identity),
    /// It held still long enough: take it.
    Settled,
    /// It holds still, but not for long enough yet: look again at this instant.
    Due(Instant),
}

/// The decision on a candidate whose clock started at `since` for `held`, now seen as `seen`
/// (`None`: gone).
pub(super) fn look(
    rel: &str,
    held: Identity,
    since: Instant,
    hinted: bool,
    settle: Duration,
    seen: Option<Identity>,
    now: Instant,
) -> Look {
    match seen {
        None => Look::Gone,
        Some(seen) if seen != held => Look::Changed(seen),
        Some(_) => {
            let due = due(rel, since, hinted, settle);
            if now >= due {
                Look::Settled
            } else {
                Look::Due(due)
            }
        }
    }
}

/// When a candidate whose clock started at `since` has held still long enough.
pub(super) fn due(rel: &str, since: Instant, hinted: bool, settle: Duration) -> Instant {
    since + needed_wait(rel, hinted, settle)
}

/// When the clock of a file seen for the first time starts: now, or `settle` ago for a file
/// whose mtime is already older than `settle` (its mtime proves no write happened since).
/// Only trusted with events, where the writers' clock is this machine's.
pub(super) fn clock_start(
    now: Instant,
    age: Duration,
    mode: WatchMode,
    settle: Duration,
) -> Instant {
    if mode == WatchMode::Events && age > settle {
        now.checked_sub(settle).unwrap_or(now)
    } else {
        now
    }
}

/// How long a candidate's identity must hold still. A close-write or moved-to hint only
/// shortens a sidecar's wait: a data file's `settle` is also the window for its sidecar to
/// arrive.
pub(super) fn needed_wait(rel: &str, hinted: bool, settle: Duration) -> Duration {
    if hinted && replay::data_file_of(rel).is_some() {
        settle / 4
    } else {
        settle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(size: u64) -> Identity {
        Identity {
            dev: 1,
            ino: 2,
            size,
            mtime_ns: 3,
        }
    }

    #[test]
    fn a_file_is_settled_once_it_held_still_for_settle() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(2);
        let held = identity(10);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(
            look("a.json", held, t0, false, settle, Some(held), at(1)),
            Look::Due(at(2))
        );
        assert_eq!(
            look("a.json", held, t0, false, settle, Some(held), at(2)),
            Look::Settled
        );
        assert_eq!(
            look("a.json", held, t0, false, settle, Some(identity(11)), at(5)),
            Look::Changed(identity(11)),
            "a change starts the clock again, however long it waited"
        );
        assert_eq!(
            look("a.json", held, t0, false, settle, None, at(5)),
            Look::Gone
        );
    }

    #[test]
    fn a_hint_shortens_only_a_sidecars_wait() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(4);
        let held = identity(10);
        let at_1s = t0 + Duration::from_secs(1);
        assert_eq!(
            look("a.json.replay", held, t0, true, settle, Some(held), at_1s),
            Look::Settled
        );
        assert_eq!(
            look("a.json.replay", held, t0, false, settle, Some(held), at_1s),
            Look::Due(t0 + settle)
        );
        assert_eq!(
            look("a.json", held, t0, true, settle, Some(held), at_1s),
            Look::Due(t0 + settle),
            "a data file's settle is also the window for its sidecar"
        );
    }

    #[test]
    fn an_old_file_starts_settled_only_where_events_are_trusted() {
        let now = Instant::now() + Duration::from_secs(60);
        let settle = Duration::from_secs(2);
        let old = Duration::from_secs(30);
        assert_eq!(
            clock_start(now, old, WatchMode::Events, settle),
            now - settle
        );
        assert_eq!(clock_start(now, old, WatchMode::Poll, settle), now);
        let fresh = Duration::from_secs(1);
        assert_eq!(clock_start(now, fresh, WatchMode::Events, settle), now);
    }
}
