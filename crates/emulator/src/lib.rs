//! A local, on-disk emulator of the platform's Batch Ingestion, Catalog and Data Access APIs.
//!
//! It implements the platform's public contract, as its guides and API references describe it
//! (linked from docs/emulator.md, which also says what the emulator does not do): the real paths
//! under `/data/foundation/{import,catalog,export}`, the gateway's authentication checks, the
//! batch lifecycle with asynchronous processing that really parses JSON, CSV and Parquet. It
//! keeps its state in a data dir (SQLite metadata + files) so it survives restarts, and can
//! inject faults.
//! It shares no code with batchdrop's API client on purpose: a test of one against the other
//! checks both against the contract. As its own crate (`batchdrop-emulator`) it imports
//! nothing of the daemon; the daemon depends on it (embedded mode, the `emulator` command).
//!
//! `GET /emulator/stats` (outside the platform's paths, no authentication, never faulted)
//! returns [`EmulatorStats`] as JSON. `POST /ims/token/v3` (also outside the gateway) issues
//! OAuth server-to-server tokens that the gateway then accepts until they expire, unless a
//! `[gateway] tokens` allowlist is set while IMS issues tokens to anyone. Connections are
//! bounded (`[server]`, see [`http_server`]).
//!
//! Module map:
//! - Serving: `routes` (the paths, and serving them), `http_server` (connection-capped
//!   serving, also used by the daemon's admin listener), `net` (connections that can be cut,
//!   for the reset faults), `gateway` (request counting, faults, authentication), `ims` (the
//!   token endpoint and the check of its tokens), `codes` (every error code it answers with).
//! - Endpoints: `import` (Batch Ingestion E1–E7, one module per endpoint group), `catalog`,
//!   `export` (Data Access, failed rows, the current view of upsert datasets, preview),
//!   `diagnostics` (a batch's `meta?path=row_errors|input_files`),
//!   `upload` (file names, ranges, streaming bodies to disk).
//! - Processing: `processing` (the batch lifecycle in the background: plan, parse, summarize,
//!   record; upkeep: recovery at start, abandoning, garbage collection), `formats` (streaming
//!   readers of JSON Lines, JSON arrays, CSV and Parquet, with a per-record check and a copy
//!   of the good rows), `validate` (the formats' records checked by `batchdrop_xdm`, upsert
//!   capture and merge), `schemas` (the registered schemas).
//! - State: `store` (the only SQL: SQLite metadata and the data dir's layout), `state` (what
//!   handlers share), `setup` (the data dir and the config's datasets at start), `config`,
//!   `stats`, `error`.
//! - `fuzzing`: the private parsers reached by the fuzz targets in `fuzz/` (nothing calls it).

mod catalog;
mod catalog_query;
mod codes;
mod config;
mod dataset_patch;
mod diagnostics;
mod error;
mod export;
mod file_access;
mod formats;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
pub mod http_server;
mod import;
mod ims;
mod net;
mod processing;
mod routes;
mod schema_lookup;
mod schemas;
mod scope;
mod setup;
mod state;
mod stats;
mod store;
mod upload;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{
    DatasetSeed, EmulatorConfig, FaultConfig, GatewayConfig, ImsClient, ImsConfig, LimitsConfig,
    SchemaSeed, ServerConfig,
};
pub use error::EmulatorError;
pub use stats::{EmulatorStats, FaultCounts};

use setup::DirLock;
use state::AppState;
use store::Store;

/// A running emulator. Dropping it without [`Emulator::shutdown`] stops accepting connections
/// but does not wait for anything.
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown_tx: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    _lock: DirLock,
}

impl Emulator {
    /// Binds `listen` (use 127.0.0.1:0 in tests), opens/creates `data_dir` (SQLite metadata +
    /// files), recovers state, serves in a background task.
    pub async fn start(
        listen: SocketAddr,
        data_dir: &Path,
        config: EmulatorConfig,
    ) -> Result<Emulator, EmulatorError> {
        config.validate().map_err(EmulatorError::Config)?;
        setup::create_private_dir(data_dir).map_err(|source| EmulatorError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(data_dir).await?;
        let store = Store::open(data_dir).await?;
        let signer = ims::Signer::open(data_dir)?;
        let schemas = schemas::Registry::default();
        schemas::setup_schemas(&store, &schemas, &config).await?;
        setup::setup_datasets(&store, &schemas, &config).await?;
        let pending = processing::recover(&store).await?;

        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;

        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState::new(
            store,
            schemas,
            signer,
            config,
            work_tx,
            shutdown_rx.clone(),
        ));
        for id in pending {
            let _ = state.work_tx.send(id);
        }
        let server = routes::serve(state.clone(), listener, shutdown_rx);
        let background = vec![
            tokio::spawn(processing::worker(state.clone(), work_rx)),
            tokio::spawn(processing::gc_loop(state.clone())),
        ];
        tracing::info!(%addr, data_dir = %data_dir.display(), "emulator started");
        Ok(Emulator {
            addr,
            state,
            shutdown_tx,
            server: Some(server),
            background,
            _lock: lock,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates the dataset with exactly this id if missing (the daemon's embedded mode makes
    /// one per watched folder).
    pub async fn ensure_dataset(&self, id: &str, name: &str) -> Result<(), EmulatorError> {
        store::validate_dataset_id(id).map_err(|reason| EmulatorError::InvalidDatasetId {
            id: id.to_owned(),
            reason,
        })?;
        let name = if name.is_empty() { id } else { name };
        self.state
            .store
            .insert_dataset_if_missing(store::NewDataset::bare(id, name))
            .await?;
        Ok(())
    }

    /// Registers a schema (the Schema Registry's JSON Schema export of an XDM schema) under
    /// this id, replacing one with the same id; datasets whose `schemaRef.id` names it are
    /// checked against it from their next batch on. It is kept in the data dir, so it stays
    /// registered after a restart.
    pub async fn register_schema(
        &self,
        id: &str,
        schema: &serde_json::Value,
    ) -> Result<(), EmulatorError> {
        let compiled =
            batchdrop_xdm::Schema::compile(schema, Some(id), None, None).map_err(|message| {
                EmulatorError::Schema {
                    id: id.to_owned(),
                    message,
                }
            })?;
        self.state
            .store
            .save_schema(id, &compiled.name, &schema.to_string(), None)
            .await?;
        self.state.schemas.insert(compiled);
        Ok(())
    }

    /// Like [`Emulator::ensure_dataset`], and makes the dataset reference the registered schema
    /// `schema_id` (also when it already existed).
    pub async fn ensure_dataset_with_schema(
        &self,
        id: &str,
        name: &str,
        schema_id: &str,
    ) -> Result<(), EmulatorError> {
        let Some(schema) = self.state.schemas.get(schema_id) else {
            return Err(EmulatorError::Schema {
                id: schema_id.to_owned(),
                message: "it is not registered: call register_schema first".into(),
            });
        };
        self.ensure_dataset(id, name).await?;
        self.state
            .store
            .update_dataset_setup(id, Some(&schemas::schema_ref_json(&schema.id)), None, None)
            .await?;
        Ok(())
    }

    /// The counters since this emulator started.
    pub fn stats(&self) -> EmulatorStats {
        self.state.counters.snapshot()
    }

    /// Graceful: stops accepting, finishes in-flight requests, stops background processing (a
    /// batch cut mid-processing is processed again at the next start), closes the database.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        self.state.store.close().await;
        tracing::info!(addr = %self.addr, "emulator stopped");
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("data_dir", &self.state.store.root)
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}

/// What `batchdrop emulator --listen ADDR --data-dir DIR [--config FILE]` runs: start, print
/// "batchdrop emulator listening on http://..." to stdout, serve until SIGINT/SIGTERM, shut
/// down gracefully.
pub async fn serve_until_signal(
    listen: SocketAddr,
    data_dir: &Path,
    config: EmulatorConfig,
) -> Result<(), EmulatorError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(EmulatorError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(EmulatorError::Signal)?;
    let emulator = Emulator::start(listen, data_dir, config).await?;
    println!("batchdrop emulator listening on {}", emulator.base_url());
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    emulator.shutdown().await;
    Ok(())
}
