//! batchdrop: drop a file into a folder, and it is ingested through the Batch Ingestion API
//! exactly once, or quarantined with a receipt that says why.
//!
//! Data flows one way: watcher → store (queue) → batcher → uploader → API client → store.
//! `daemon::run` wires those stages; the emulator (`emulator`) is a separate module tree that
//! implements the platform and shares no types with the client (`api`).

#![warn(unreachable_pub)]

pub mod admin;
pub mod api;
pub mod archiver;
pub mod batcher;
pub mod blocked;
pub mod cli;
pub mod config;
pub mod crashpoint;
pub mod daemon;
pub mod disk;
// Its own crate will set its own lints (issue #17, part A).
#[allow(unreachable_pub)]
pub mod emulator;
pub mod format;
pub mod http_server;
pub mod outcome;
pub mod poller;
pub mod receipt;
pub mod replay;
pub mod retry;
pub mod stage;
pub mod store;
pub mod telemetry;
pub mod uploader;
pub mod watcher;
