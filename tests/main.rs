//! The daemon's integration tests, as one test binary: every other file of `tests/` is a
//! module of it (`autotests = false` in Cargo.toml), so the daemon is linked once, not once per
//! file. Run one area with `cargo test --test it fleet::`, one test with its full path.
//! This file only declares the modules; helpers go to `support/`, tests to their area's file.

mod support;

// The daemon end to end, in-process and as the real binary.
mod budget;
mod content_and_datasets;
mod durability;
mod outcomes;
mod pipeline;
mod preflight;
mod retries;

// Mapping (`batchdrop map`, and watches that map before upload).
mod mapping;
mod mapping_watch;

// The operator's side: commands, replay, operations, the CLI's surface.
mod operations;
mod operator;
mod replay_and_commands;

// Hostile input and servers.
mod safety;
mod security_files;
mod security_servers;

// Fleet mode on PostgreSQL.
mod fleet;
mod fleet_chaos;
mod fleet_run;

// The reliability suite (kills, faults, bad files, resources, load).
mod reliability;

// The repository's Markdown links, and this binary's own layout.
mod docs;
mod layout;
