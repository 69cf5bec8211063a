//! Named instants at which the process can be made to kill itself with SIGKILL, for the
//! durability tests: `BATCHDROP_CRASH_AT=chunk-sent:3` kills the daemon right after the third
//! chunk was acknowledged by the platform and before the store recorded it.
//! `BATCHDROP_PANIC_AT=point[:n]` panics there instead, for the tests of what a panicking
//! stage or batch task does. Unset (always, in production), `hit` is one relaxed load of a
//! cached value.
//!
//! This module must not be used for anything but that: it changes no behaviour when unset.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Target {
    point: String,
    /// Panic instead of SIGKILL.
    panic: bool,
    nth: u64,
    seen: AtomicU64,
}

static TARGET: OnceLock<Option<Target>> = OnceLock::new();

/// Marks that the process is at `point`; dies here if told to.
pub fn hit(point: &str) {
    let target = TARGET.get_or_init(|| {
        let (spec, panic) = match std::env::var("BATCHDROP_CRASH_AT") {
            Ok(spec) => (spec, false),
            Err(_) => (std::env::var("BATCHDROP_PANIC_AT").ok()?, true),
        };
        let (point, nth) = match spec.split_once(':') {
            Some((p, n)) => (p.to_owned(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some(Target {
            point,
            panic,
            nth,
            seen: AtomicU64::new(0),
        })
    });
    if let Some(t) = target
        && t.point == point
        && t.seen.fetch_add(1, Ordering::SeqCst) + 1 == t.nth
    {
        if t.panic {
            panic!("crash point {point} reached (BATCHDROP_PANIC_AT)");
        }
        eprintln!("batchdrop: crash point {point} reached: killing myself with SIGKILL");
        // SAFETY: plain libc calls on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
