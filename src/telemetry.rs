//! What the daemon tells operators about itself: the Prometheus metrics (names live here, so
//! the list is in one place) and the health state behind `/healthz` and `/readyz`.
//!
//! Stages record through the small functions below; they never format metrics output or serve
//! HTTP (that is `admin`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const FILES_DISCOVERED: &str = "batchdrop_files_discovered_total";
pub const FILES_INGESTED: &str = "batchdrop_files_ingested_total";
pub const FILES_FAILED: &str = "batchdrop_files_failed_total";
pub const FILES_DUPLICATE: &str = "batchdrop_files_duplicate_total";
pub const BYTES_UPLOADED: &str = "batchdrop_bytes_uploaded_total";
pub const BATCHES: &str = "batchdrop_batches_total";
pub const RETRIES: &str = "batchdrop_retries_total";
pub const QUEUE_DEPTH: &str = "batchdrop_queue_files";
pub const OLDEST_PENDING: &str = "batchdrop_oldest_pending_seconds";
pub const UPLOAD_SECONDS: &str = "batchdrop_upload_seconds_total";
pub const RESCANS: &str = "batchdrop_watcher_rescans_total";
pub const OVERFLOWS: &str = "batchdrop_watcher_overflows_total";
pub const INTAKE_PAUSED: &str = "batchdrop_intake_paused";
pub const PLATFORM_UP: &str = "batchdrop_platform_reachable";

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process; several
/// in-process daemons in tests share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Liveness and readiness facts, updated by the stages and read by `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// Every watcher finished its first scan and runs.
    pub watchers_up: AtomicBool,
    /// Last time (unix ms) a call to the platform succeeded, and failed for a transient reason.
    pub platform_ok_at: AtomicI64,
    pub platform_err_at: AtomicI64,
    /// Intake paused because `max_queued_files` was reached.
    pub intake_paused: AtomicBool,
    /// Sealing paused because `max_inflight_bytes` was reached.
    pub batching_paused: AtomicBool,
}

impl Health {
    pub fn platform_result(&self, ok: bool) {
        let now = crate::store::now_ms();
        if ok {
            self.platform_ok_at.store(now, Ordering::SeqCst);
        } else {
            self.platform_err_at.store(now, Ordering::SeqCst);
        }
        metrics::gauge!(PLATFORM_UP).set(if ok { 1.0 } else { 0.0 });
    }

    pub fn paused(&self) -> bool {
        self.intake_paused.load(Ordering::SeqCst) || self.batching_paused.load(Ordering::SeqCst)
    }

    /// Whether the platform answered last time it was asked.
    pub fn platform_reachable(&self) -> bool {
        self.platform_ok_at.load(Ordering::SeqCst) > self.platform_err_at.load(Ordering::SeqCst)
    }
}
