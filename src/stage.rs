//! The loop every long-running stage (batcher, uploader, archiver) runs, and how the daemon
//! watches its stages.
//!
//! - [`run`]: a pass, then wait for a wake-up, the time the pass asked for, or shutdown; a
//!   pass that fails on the state database is tried again after a backoff ([`StoreTrouble`]),
//!   without heeding wake-ups meanwhile. A stage is a [`Stage`]: its `pass` is what tests
//!   drive.
//! - [`supervise`]: how a stage task ended. Only a stage asked to stop may end; one that
//!   returns on its own, fails or panics is [`Ended::Unexpectedly`], and the daemon stops with
//!   an error (exit 1) instead of running on without it.
//!
//! This module must not know what any stage does, nor touch the store beyond reporting its
//! errors.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// What a pass asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another pass at once: this one stopped at a page boundary with more work left.
    Now,
    /// A pass after this long, or sooner when the stage is woken.
    After(Duration),
}

/// A stage of the pipeline: one pass over the work the store holds for it.
pub(crate) trait Stage {
    /// Its name in logs.
    const NAME: &'static str;

    async fn pass(&mut self) -> Result<Next, StoreError>;
}

/// Runs passes of `stage` until `shutdown`. Returns only then: state database errors are
/// waited out, never returned.
pub(crate) async fn run<S: Stage>(stage: &mut S, wake: &Notify, shutdown: &CancellationToken) {
    let mut trouble = StoreTrouble::new(S::NAME);
    loop {
        let (wait, wakeable) = match stage.pass().await {
            Ok(Next::Now) if !shutdown.is_cancelled() => {
                trouble.ok();
                continue;
            }
            Ok(Next::Now) => return,
            Ok(Next::After(wait)) => {
                trouble.ok();
                (wait, true)
            }
            Err(e) => (trouble.failed(&e), false),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified(), if wakeable => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How a stage task ended.
#[derive(Debug)]
pub enum Ended {
    /// It was asked to stop (shutdown, or a reload that removed its watch) and did.
    Stopped,
    /// It ended on its own: the daemon cannot run on without it.
    Unexpectedly(String),
}

/// Runs a stage task to its end and says how it ended; `stop` is the token that asks it to
/// stop. A panic is caught here (and said), so that the daemon hears of it with the stage's
/// name.
pub async fn supervise<F>(name: &str, stop: CancellationToken, stage: F) -> Ended
where
    F: Future<Output = Result<(), StoreError>>,
{
    match AssertUnwindSafe(stage).catch_unwind().await {
        Ok(Ok(())) if stop.is_cancelled() => Ended::Stopped,
        Ok(Ok(())) => Ended::Unexpectedly(format!("the {name} returned without being asked to")),
        Ok(Err(e)) => Ended::Unexpectedly(format!("the {name} stopped on {}", e.explain())),
        Err(panic) => {
            Ended::Unexpectedly(format!("the {name} panicked: {}", panic_message(&*panic)))
        }
    }
}

/// The text a panic was raised with, if it was text.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Keeps a stage running through state database errors (a lock held by another process, a
/// full disk): says why once, then every 30 s while it lasts, and when it is over; tells the
/// stage how long to wait before trying again (1 s, doubling to 10 s). Nothing is lost by
/// waiting: every stage starts over from what the database holds.
pub struct StoreTrouble {
    stage: &'static str,
    since: Option<std::time::Instant>,
    last_said: Option<std::time::Instant>,
    failures: u32,
}

impl StoreTrouble {
    pub fn new(stage: &'static str) -> StoreTrouble {
        StoreTrouble {
            stage,
            since: None,
            last_said: None,
            failures: 0,
        }
    }

    /// Records a failure; returns how long to wait before the next try.
    pub fn failed(&mut self, e: &StoreError) -> Duration {
        let now = std::time::Instant::now();
        self.since.get_or_insert(now);
        self.failures += 1;
        if self
            .last_said
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(30))
        {
            self.last_said = Some(now);
            tracing::error!(
                stage = self.stage,
                "{}; the {} waits and tries again (nothing is lost)",
                e.explain(),
                self.stage
            );
        }
        Duration::from_secs(1 << self.failures.min(4).saturating_sub(1))
            .min(Duration::from_secs(10))
    }

    /// Records a success; says so if it ends a run of failures.
    pub fn ok(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                stage = self.stage,
                "the state database works again after {:.0?}; the {} carries on",
                since.elapsed(),
                self.stage
            );
            self.last_said = None;
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A stage that counts its passes and ends each as told.
    struct Counting {
        passes: u32,
        next: Next,
        stop_after: u32,
        stop: CancellationToken,
    }

    impl Stage for Counting {
        const NAME: &'static str = "counter";

        async fn pass(&mut self) -> Result<Next, StoreError> {
            self.passes += 1;
            if self.passes == self.stop_after {
                self.stop.cancel();
            }
            Ok(self.next)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_asking_for_more_runs_again_at_once_and_a_wake_cuts_a_wait() {
        let stop = CancellationToken::new();
        let mut stage = Counting {
            passes: 0,
            next: Next::Now,
            stop_after: 3,
            stop: stop.clone(),
        };
        let started = tokio::time::Instant::now();
        run(&mut stage, &Notify::new(), &stop).await;
        assert_eq!(stage.passes, 3, "until shutdown, without waiting");
        assert_eq!(started.elapsed(), Duration::ZERO);

        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let mut stage = Counting {
            passes: 0,
            next: Next::After(Duration::from_secs(3600)),
            stop_after: 3,
            stop: stop.clone(),
        };
        let waker = wake.clone();
        let woken = tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                waker.notify_one();
            }
        });
        run(&mut stage, &wake, &stop).await;
        woken.await.unwrap();
        assert_eq!(stage.passes, 3, "one pass, then one per wake-up");
        assert!(started.elapsed() < Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn a_stage_may_end_only_when_asked() {
        let stop = CancellationToken::new();
        let ended = supervise("batcher", stop.clone(), async { Ok(()) }).await;
        assert!(
            matches!(&ended, Ended::Unexpectedly(why) if why.contains("batcher returned")),
            "{ended:?}"
        );
        stop.cancel();
        let ended = supervise("batcher", stop.clone(), async { Ok(()) }).await;
        assert!(matches!(ended, Ended::Stopped), "{ended:?}");
    }

    #[tokio::test]
    async fn a_panicking_stage_is_heard_of_with_its_name_and_message() {
        let stop = CancellationToken::new();
        stop.cancel(); // even while stopping: a panic is never a clean stop
        let ended = supervise("archiver", stop, async {
            if stop_now() {
                panic!("boom at {}", 42);
            }
            Ok(())
        })
        .await;
        match ended {
            Ended::Unexpectedly(why) => {
                assert!(why.contains("archiver panicked: boom at 42"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    fn stop_now() -> bool {
        true
    }
}
