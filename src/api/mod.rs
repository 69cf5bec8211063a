//! The platform's API client: the only module that speaks HTTP to Adobe Experience Platform
//! (Batch Ingestion, Catalog, Data Access, and IMS for tokens), following the platform's public
//! guides and API references (linked from docs/emulator.md). It must not import anything from
//! the emulator crate (the emulator has its own wire types, so that a contract test between them
//! means something), must not touch the store or the file system beyond the CA and secret
//! files, and must never log or return a credential.
//!
//! - `client.rs`: `ApiClient`, one fn per endpoint, URLs and headers.
//! - `wire.rs`: JSON bodies and tolerant response readers.
//! - `answer.rs`: reading answers within their bounds, errors from non-2xx answers.
//! - `paths.rs`: percent-encoding of ids and file paths, ranges.
//! - `setup.rs`: `ClientConfig`, the checks before any call, the HTTP clients and their routes.
//! - `types.rs`: what callers pass in and get back.
//! - `body.rs`: `Body`, what an upload sends (bytes in memory or a stream of them).
//! - `error.rs`: `ApiError` and its classification.
//! - `auth.rs`: `Secret`, token sources, the IMS token cache.
//! - `registry.rs`: the Schema Registry's lookup of a dataset's schema (`xed-full`).
//! - `probe.rs`: one GET of batchdrop's own admin listener (`batchdrop healthcheck`).

mod answer;
mod auth;
mod body;
mod client;
mod error;
mod meta;
mod paths;
mod probe;
mod registry;
mod setup;
mod types;
mod wire;

pub use auth::{ClientSecret, OAuth, Secret, TokenSource};
pub use body::Body;
pub use client::ApiClient;
pub use error::{ApiError, ErrorKind, PlatformError};
pub use meta::{MetaDir, MetaFile, RowError, RowIssue};
// For the fuzz target of the one header the client parses (`fuzz/`).
#[doc(hidden)]
pub use error::{MAX_RETRY_AFTER, parse_retry_after};
pub use probe::{ProbeAnswer, probe, url_path};
pub use registry::XED_FULL;
pub use setup::ClientConfig;
pub use types::{
    BatchAction, BatchError, BatchInfo, BatchMetrics, BatchQuery, BatchStatus, CreateBatch,
    DataSetFile, Dataset, Format, RegistrySchema, Replay, SchemaRef,
};
