//! Counters, read with `Emulator::stats()` or `GET /emulator/stats`. They count since this
//! process started the emulator (they are not persisted).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of the emulator's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EmulatorStats {
    /// Platform requests received (everything but `/emulator/stats`), faulted ones included.
    pub requests: u64,
    /// Faults injected, by kind.
    pub faults_injected: FaultCounts,
    /// Requests refused by the gateway (authentication headers).
    pub auth_failures: u64,
    /// PATCH chunks received whole (re-sends included).
    pub chunks_received: u64,
    /// PATCH chunks whose whole range had already been received and acknowledged with the same
    /// bytes (harmless re-sends; a client that records its progress keeps this at 0). A chunk
    /// whose response was lost by fault injection was not acknowledged.
    pub duplicate_acknowledged_chunks: u64,
    /// Requests repeated (same method and URL) before the `Retry-After` that the emulator
    /// answered them with had passed. A client that honours `Retry-After` keeps this at 0.
    #[serde(default)]
    pub early_retries: u64,
    /// Successful single-request PUT uploads.
    pub puts: u64,
    /// Body bytes stored by PUT and PATCH.
    pub bytes_received: u64,
    /// Batches created.
    pub batches_created: u64,
    /// Batches that went from `loading` to `staging` (COMPLETE accepted the first time).
    pub batches_completed: u64,
    /// Batches whose processing ended in `success`.
    pub batches_succeeded: u64,
    /// Batches whose processing ended in `failed`.
    pub batches_failed: u64,
    /// Tokens issued by `POST /ims/token/v3`.
    #[serde(default)]
    pub ims_tokens_issued: u64,
    /// Token requests refused by `POST /ims/token/v3` (bad credentials, grant type, scope).
    #[serde(default)]
    pub ims_refusals: u64,
}

/// Injected faults by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FaultCounts {
    pub http_500: u64,
    pub http_503: u64,
    pub http_429: u64,
    pub connection_reset: u64,
    pub lost_response: u64,
    pub latency: u64,
    pub batch_failure: u64,
}

impl FaultCounts {
    /// All faults injected.
    pub fn total(&self) -> u64 {
        self.http_500
            + self.http_503
            + self.http_429
            + self.connection_reset
            + self.lost_response
            + self.latency
            + self.batch_failure
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub auth_failures: AtomicU64,
    pub fault_500: AtomicU64,
    pub fault_503: AtomicU64,
    pub fault_429: AtomicU64,
    pub fault_reset: AtomicU64,
    pub fault_lost_response: AtomicU64,
    pub fault_latency: AtomicU64,
    pub fault_batch_failure: AtomicU64,
    pub chunks_received: AtomicU64,
    pub duplicate_acknowledged_chunks: AtomicU64,
    pub early_retries: AtomicU64,
    pub puts: AtomicU64,
    pub bytes_received: AtomicU64,
    pub batches_created: AtomicU64,
    pub batches_completed: AtomicU64,
    pub batches_succeeded: AtomicU64,
    pub batches_failed: AtomicU64,
    pub ims_tokens_issued: AtomicU64,
    pub ims_refusals: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> EmulatorStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EmulatorStats {
            requests: g(&self.requests),
            faults_injected: FaultCounts {
                http_500: g(&self.fault_500),
                http_503: g(&self.fault_503),
                http_429: g(&self.fault_429),
                connection_reset: g(&self.fault_reset),
                lost_response: g(&self.fault_lost_response),
                latency: g(&self.fault_latency),
                batch_failure: g(&self.fault_batch_failure),
            },
            auth_failures: g(&self.auth_failures),
            chunks_received: g(&self.chunks_received),
            duplicate_acknowledged_chunks: g(&self.duplicate_acknowledged_chunks),
            early_retries: g(&self.early_retries),
            puts: g(&self.puts),
            bytes_received: g(&self.bytes_received),
            batches_created: g(&self.batches_created),
            batches_completed: g(&self.batches_completed),
            batches_succeeded: g(&self.batches_succeeded),
            batches_failed: g(&self.batches_failed),
            ims_tokens_issued: g(&self.ims_tokens_issued),
            ims_refusals: g(&self.ims_refusals),
        }
    }
}
