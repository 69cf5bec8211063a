//! Integration tests of the platform emulator, over real HTTP on 127.0.0.1 with real temp dirs.

#[path = "emulator/common.rs"]
mod common;

#[path = "emulator/auth.rs"]
mod auth;
#[path = "emulator/batches.rs"]
mod batches;
#[path = "emulator/catalog.rs"]
mod catalog;
#[path = "emulator/export.rs"]
mod export;
#[path = "emulator/faults.rs"]
mod faults;
#[path = "emulator/files.rs"]
mod files;
#[path = "emulator/ims.rs"]
mod ims;
#[path = "emulator/large.rs"]
mod large;
#[path = "emulator/limits.rs"]
mod limits;
#[path = "emulator/processing.rs"]
mod processing;
#[path = "emulator/readme.rs"]
mod readme;
#[path = "emulator/restart.rs"]
mod restart;
#[path = "emulator/sandboxes.rs"]
mod sandboxes;
#[path = "emulator/schema/mod.rs"]
mod schema;
