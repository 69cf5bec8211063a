//! Named instants at which the process can be made to kill itself with SIGKILL, for the
//! durability tests: `BATCHDROP_CRASH_AT=chunk-sent:3` kills the daemon right after the third
//! chunk was acknowledged by the platform and before the store recorded it.
//! `BATCHDROP_PANIC_AT=point[:n]` panics there instead, for the tests of what a panicking
//! stage or batch task does; `BATCHDROP_PAUSE_AT=point[:n]` stops the whole process there with
//! SIGSTOP (a test continues it with SIGCONT), for fleet mode's tests of an instance paused
//! past its lease at the worst moment. Unset (always, in production), `hit` is one relaxed
//! load of a cached value.
//!
//! This module must not be used for anything but that: it changes no behaviour when unset.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Target {
    point: String,
    action: Action,
    nth: u64,
    seen: AtomicU64,
}

/// What the process does at its target point.
#[derive(Clone, Copy)]
enum Action {
    Kill,
    Panic,
    Pause,
}

static TARGET: OnceLock<Option<Target>> = OnceLock::new();

/// Marks that the process is at `point`; dies or stops here if told to.
pub fn hit(point: &str) {
    let target = TARGET.get_or_init(|| {
        let (spec, action) = [
            ("BATCHDROP_CRASH_AT", Action::Kill),
            ("BATCHDROP_PANIC_AT", Action::Panic),
            ("BATCHDROP_PAUSE_AT", Action::Pause),
        ]
        .into_iter()
        .find_map(|(var, action)| Some((std::env::var(var).ok()?, action)))?;
        let (point, nth) = match spec.split_once(':') {
            Some((p, n)) => (p.to_owned(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some(Target {
            point,
            action,
            nth,
            seen: AtomicU64::new(0),
        })
    });
    if let Some(t) = target
        && t.point == point
        && t.seen.fetch_add(1, Ordering::SeqCst) + 1 == t.nth
    {
        let signal = match t.action {
            Action::Panic => panic!("crash point {point} reached (BATCHDROP_PANIC_AT)"),
            Action::Kill => {
                eprintln!("batchdrop: crash point {point} reached: killing myself with SIGKILL");
                libc::SIGKILL
            }
            Action::Pause => {
                eprintln!("batchdrop: pause point {point} reached: stopping myself with SIGSTOP");
                libc::SIGSTOP
            }
        };
        // To this thread (`raise`, not `kill` of the pid): a signal sent to the process may be
        // taken by another thread, and this one would run on, past the point, until that one
        // got the CPU and stopped them all (the move a test stops before could happen).
        // SAFETY: a plain libc call on this thread.
        unsafe {
            libc::raise(signal);
        }
    }
}
