//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (watchers running, state database writable, platform reached on the last probe,
//! intake not paused, no watch blocked on a missing dataset). Loopback by default.
//!
//! `/metrics` and `/readyz` serve facts read from the store by one task, at most every
//! `FACTS_MAX_AGE` and only when asked: a flood of requests costs the state database nothing
//! more. It only reads state; it must never change the queue or talk to the platform itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{FileState, Store, StoreError, now_ms};
use crate::telemetry::{self, Health};
use batchdrop_emulator::http_server::{self, Limits};

/// Scrapers and health checks need a handful of connections; each must send its request
/// within 10 s (a hostile local client cannot hold the daemon's descriptors).
const LIMITS: Limits = Limits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(10),
};

/// How old the store's facts may be when served: however often `/metrics` and `/readyz` are
/// called, the store is asked at most once per this period.
const FACTS_MAX_AGE: Duration = Duration::from_secs(2);

/// What the store said the last time it was asked.
#[derive(Debug)]
struct Facts {
    at: Instant,
    queue: Result<Queue, String>,
    /// Whether a write to the state database succeeded.
    writable: Result<(), String>,
    /// What `/readyz` says of each watch blocked on a missing dataset.
    blocked: Result<Vec<String>, String>,
}

#[derive(Debug)]
struct Queue {
    /// Files per (dataset, state).
    counts: Vec<(String, FileState, i64)>,
    /// When the oldest unfinished file was found (unix ms).
    oldest_pending_ms: Option<i64>,
    /// Batches stuck on the platform (not a readiness matter: the daemon works on).
    stuck_batches: usize,
}

#[derive(Clone)]
struct Admin {
    health: Arc<Health>,
    /// `FACTS_MAX_AGE`, but for tests.
    max_age: Duration,
    facts: watch::Receiver<Option<Arc<Facts>>>,
    /// Wakes the task that asks the store.
    stale: Arc<Notify>,
}

/// Binds `addr` and serves until `shutdown`; returns the bound address (port 0 allowed).
pub async fn serve(
    addr: SocketAddr,
    store: Store,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let (facts_tx, facts) = watch::channel(None);
    let stale = Arc::new(Notify::new());
    tokio::spawn(refresh_facts(
        store,
        FACTS_MAX_AGE,
        facts_tx,
        stale.clone(),
        shutdown.clone(),
    ));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin {
            health,
            max_age: FACTS_MAX_AGE,
            facts,
            stale,
        });
    tokio::spawn(http_server::serve(
        listener,
        app,
        LIMITS,
        |stream, _| (stream, ()),
        async move { shutdown.cancelled().await },
    ));
    Ok(bound)
}

/// The one task that asks the store, when a request finds the facts older than
/// `FACTS_MAX_AGE` (never while nobody asks: an idle daemon stays idle).
async fn refresh_facts(
    store: Store,
    max_age: Duration,
    facts: watch::Sender<Option<Arc<Facts>>>,
    stale: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = stale.notified() => {}
        }
        if facts.borrow().as_ref().is_some_and(|f| f.fresh(max_age)) {
            // Refreshed since that request looked: it has been told already.
            continue;
        }
        let queue = async {
            Ok::<_, StoreError>(Queue {
                counts: store.file_counts().await?,
                oldest_pending_ms: store.oldest_pending_ms().await?,
                stuck_batches: store.stuck_batches().await?.len(),
            })
        }
        .await
        .map_err(|e| e.to_string());
        // In words: in fleet mode this is the shared database's reachability too.
        let writable = store.ping_write().await.map_err(|e| e.explain());
        let blocked = store
            .blocked_datasets()
            .await
            .map(|blocked| blocked.iter().map(crate::blocked::describe).collect())
            .map_err(|e| e.to_string());
        facts.send_replace(Some(Arc::new(Facts {
            at: Instant::now(),
            queue,
            writable,
            blocked,
        })));
    }
}

impl Facts {
    fn fresh(&self, max_age: Duration) -> bool {
        self.at.elapsed() < max_age
    }
}

impl Admin {
    /// The store's facts, at most `FACTS_MAX_AGE` old; `None` while shutting down.
    async fn facts(&self) -> Option<Arc<Facts>> {
        let mut facts = self.facts.clone();
        if let Some(f) = facts.borrow_and_update().as_ref()
            && f.fresh(self.max_age)
        {
            return Some(f.clone());
        }
        self.stale.notify_one();
        facts.changed().await.ok()?;
        facts.borrow().clone()
    }
}

const SHUTTING_DOWN: &str = "batchdrop is shutting down\n";

async fn metrics(State(a): State<Admin>) -> Result<String, (StatusCode, String)> {
    let Some(facts) = a.facts().await else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN.into()));
    };
    let queue = facts
        .queue
        .as_ref()
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.clone()))?;
    // Queue gauges come from the store (the truth), as it was at most FACTS_MAX_AGE ago.
    for (dataset, state, n) in &queue.counts {
        metrics::gauge!(telemetry::QUEUE_DEPTH, "dataset" => dataset.clone(), "state" => state.as_str())
            .set(*n as f64);
    }
    let age = queue
        .oldest_pending_ms
        .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!(telemetry::OLDEST_PENDING).set(age);
    metrics::gauge!(telemetry::BATCHES_STUCK).set(queue.stuck_batches as f64);
    let paused = a.health.paused();
    metrics::gauge!(telemetry::INTAKE_PAUSED).set(if paused { 1.0 } else { 0.0 });
    Ok(telemetry::prometheus().render() + &crate::process_metrics::render())
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, String) {
    let Some(facts) = a.facts().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN.into());
    };
    let mut problems = Vec::new();
    if !a.health.watchers_up.load(Ordering::SeqCst) {
        problems.push("watchers are not running yet".to_owned());
    }
    if let Err(e) = &facts.writable {
        problems.push(format!("state database is not writable: {e}"));
    }
    if !a.health.platform_reachable() {
        problems.push("the platform did not answer the last probe".to_owned());
    }
    if a.health.paused() {
        problems.push("intake is paused: a resource cap is reached".to_owned());
    }
    match &facts.blocked {
        Ok(blocked) => problems.extend(blocked.iter().cloned()),
        Err(e) => problems.push(format!("cannot read the blocked watches: {e}")),
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    async fn admin(dir: &Path, max_age: Duration) -> (Admin, CancellationToken) {
        let store = Store::open_exclusive(dir, false).await.unwrap();
        let (facts_tx, facts) = watch::channel(None);
        let stale = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        tokio::spawn(refresh_facts(
            store,
            max_age,
            facts_tx,
            stale.clone(),
            stop.clone(),
        ));
        let admin = Admin {
            health: Arc::new(Health::default()),
            max_age,
            facts,
            stale,
        };
        (admin, stop)
    }

    #[tokio::test]
    async fn the_store_is_asked_once_however_many_requests_come_within_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, stop) = admin(dir.path(), Duration::from_secs(3600)).await;
        let burst: Vec<_> = futures::future::join_all((0..50).map(|_| admin.facts()))
            .await
            .into_iter()
            .map(|f| f.expect("facts"))
            .collect();
        let first = burst[0].clone();
        assert!(
            burst.iter().all(|f| Arc::ptr_eq(f, &first)),
            "one read for the burst"
        );
        assert!(first.writable.is_ok() && first.queue.is_ok(), "{first:?}");
        for _ in 0..20 {
            let later = admin.facts().await.unwrap();
            assert!(Arc::ptr_eq(&later, &first), "still fresh: not asked again");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn stale_facts_are_read_again_and_none_come_after_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (admin, stop) = admin(dir.path(), Duration::ZERO).await;
        let first = admin.facts().await.unwrap();
        let second = admin.facts().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "stale: asked again");
        assert!(second.at >= first.at);
        stop.cancel();
        assert!(admin.facts().await.is_none(), "shutting down: 503");
    }
}
