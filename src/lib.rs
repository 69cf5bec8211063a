//! batchdrop: drop a file into a folder, and it is ingested through the Batch Ingestion API
//! exactly once, or quarantined with a receipt that says why.
//!
//! Data flows one way: watcher → store (queue) → batcher → uploader → API client → store.
//! `daemon::run` wires those stages; the emulator is a separate crate (`batchdrop-emulator`, in
//! `crates/emulator`) that implements the platform and imports nothing of this one, so it
//! cannot share types with the client (`api`).

#![warn(unreachable_pub)]

// The store's unit tests share `tests/support/postgres.rs` with the integration tests, which
// name this crate `batchdrop`.
#[cfg(test)]
extern crate self as batchdrop;

pub mod admin;
pub mod api;
pub mod archiver;
pub mod batcher;
pub mod blocked;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod config_watch;
pub mod crashpoint;
pub mod daemon;
pub mod diagnostics;
pub mod disk;
pub mod early_hash;
pub mod envsubst;
pub mod format;
pub mod logging;
pub mod mapped;
pub mod membership;
pub mod outcome;
pub mod patterns;
pub mod poller;
pub mod preflight;
pub mod process_metrics;
pub mod receipt;
pub mod replay;
pub mod retry;
pub mod schedule;
pub mod stage;
pub mod store;
pub mod telemetry;
pub mod units;
pub mod uploader;
pub mod watcher;
