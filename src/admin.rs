//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (watchers running, state database writable, platform reached on the last probe,
//! intake not paused, no watch blocked on a missing dataset). Loopback by default.
//!
//! It only reads state; it must never change the queue or talk to the platform itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, now_ms};
use crate::telemetry::{self, Health};

#[derive(Clone)]
struct Admin {
    store: Store,
    health: Arc<Health>,
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
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Admin { store, health });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}

async fn metrics(State(a): State<Admin>) -> Result<String, (StatusCode, String)> {
    // Queue gauges are read from the store at scrape time: the store is the truth.
    let err = |e: crate::store::StoreError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    for (dataset, state, n) in a.store.file_counts().await.map_err(err)? {
        metrics::gauge!(telemetry::QUEUE_DEPTH, "dataset" => dataset, "state" => state)
            .set(n as f64);
    }
    let oldest = a.store.oldest_pending_ms().await.map_err(err)?;
    let age = oldest
        .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!(telemetry::OLDEST_PENDING).set(age);
    let paused = a.health.paused();
    metrics::gauge!(telemetry::INTAKE_PAUSED).set(if paused { 1.0 } else { 0.0 });
    Ok(telemetry::prometheus().render())
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if !a.health.watchers_up.load(Ordering::SeqCst) {
        problems.push("watchers are not running yet".to_owned());
    }
    if let Err(e) = a.store.ping_write().await {
        problems.push(format!("state database is not writable: {e}"));
    }
    if !a.health.platform_reachable() {
        problems.push("the platform did not answer the last probe".to_owned());
    }
    if a.health.paused() {
        problems.push("intake is paused: a resource cap is reached".to_owned());
    }
    match a.store.blocked_datasets().await {
        Ok(blocked) => problems.extend(blocked.iter().map(crate::blocked::describe)),
        Err(e) => problems.push(format!("cannot read the blocked watches: {e}")),
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
    }
}
