//! A local, on-disk emulator of the platform's Batch Ingestion, Catalog and Data Access APIs.
//!
//! It implements the platform's public contract, as its guides and API references describe it
//! (linked from docs/emulator.md, which also says what the emulator does not do): the real paths
//! under `/data/foundation/{import,catalog,export}`, the gateway's authentication checks, the
//! batch lifecycle with asynchronous processing that really parses JSON, CSV and Parquet. It
//! keeps its state in a data dir (SQLite metadata + files) so it survives restarts, and can
//! inject faults.
//! It shares no code with batchdrop's API client on purpose: a test of one against the other
//! checks both against the contract.
//!
//! `GET /emulator/stats` (outside the platform's paths, no authentication, never faulted)
//! returns [`EmulatorStats`] as JSON. `POST /ims/token/v3` (also outside the gateway) issues
//! OAuth server-to-server tokens that the gateway then accepts until they expire, unless a
//! `[gateway] tokens` allowlist is set while IMS issues tokens to anyone. Connections are
//! bounded (`[server]`, see `crate::http_server`).
//!
//! Module map: `gateway` (request counting, faults, authentication), `ims` (the token
//! endpoint and the check of its tokens), `import` (E1–E7), `catalog`, `export` (Data Access,
//! failed rows, the current view of upsert datasets, preview), `processing` (the batch
//! lifecycle in the background: validation, partial ingestion, upsert merge, replay, garbage
//! collection, recovery at start), `formats` (streaming readers of JSON Lines, JSON arrays, CSV
//! and Parquet, with a per-record check and a copy of the good rows), `schema` (XDM JSON
//! Schemas: compile, check a record with the platform's conversions, registry), `validate`
//! (the per-record check of each format against a schema, upsert capture), `upload` (names,
//! ranges, streaming bodies to disk), `store` (SQLite and the data dir's layout), `net`
//! (connections that can be cut, for the reset faults).

mod catalog;
mod config;
mod error;
mod export;
mod formats;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod import;
mod ims;
mod net;
mod parquet_pages;
mod processing;
mod schema;
mod stats;
mod store;
mod upload;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{
    DatasetSeed, EmulatorConfig, FaultConfig, GatewayConfig, ImsClient, ImsConfig, LimitsConfig,
    SchemaSeed, ServerConfig,
};
pub use error::EmulatorError;
pub use stats::{EmulatorStats, FaultCounts};

use error::ApiError;
use stats::Counters;
use store::Store;

/// Shared by every handler and background task.
pub(crate) struct AppState {
    pub store: Store,
    pub config: EmulatorConfig,
    /// Registered schemas.
    pub schemas: schema::Registry,
    /// Signs and checks the tokens of `/ims/token/v3`.
    pub signer: ims::Signer,
    pub counters: Arc<Counters>,
    pub fault_rng: Mutex<StdRng>,
    /// Batches whose processing ended since start (for `faults.fail_first_batches`).
    pub batches_processed: std::sync::atomic::AtomicU64,
    /// Requests answered with `Retry-After` ("METHOD URI" → until when), to count the ones
    /// repeated too early.
    pub retry_after: Mutex<HashMap<String, std::time::Instant>>,
    batch_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Ranges of large files being written in place right now, by file id: no other chunk
    /// may be written in place over them meanwhile.
    pub writing_in_place: Mutex<HashMap<String, Vec<(u64, u64)>>>,
    pub work_tx: mpsc::UnboundedSender<String>,
    ids: Mutex<ulid::Generator>,
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// A new ULID, strictly greater than the previous ones (so ids sort by creation).
    pub fn new_id(&self) -> String {
        let mut g = self.ids.lock().expect("id generator");
        g.generate()
            .unwrap_or_else(|_| ulid::Ulid::new())
            .to_string()
    }

    /// The lock that serializes state changes of one batch (file commits, actions).
    pub fn batch_lock(&self, batch_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.batch_locks.lock().expect("batch lock map");
        if map.len() > 4096 {
            // Forget locks nobody holds (ids of finished requests, unknown ids).
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        map.entry(batch_id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }
}

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
        create_private_dir(data_dir).map_err(|source| EmulatorError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(data_dir).await?;
        let store = Store::open(data_dir).await?;
        let signer = ims::Signer::open(data_dir)?;
        let schemas = schema::Registry::default();
        setup_schemas(&store, &schemas, &config).await?;
        setup_datasets(&store, &schemas, &config).await?;
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
        let state = Arc::new(AppState {
            store,
            schemas,
            signer,
            fault_rng: Mutex::new(StdRng::seed_from_u64(config.faults.seed)),
            batches_processed: std::sync::atomic::AtomicU64::new(0),
            retry_after: Mutex::new(HashMap::new()),
            config,
            counters: Arc::new(Counters::default()),
            batch_locks: Mutex::new(HashMap::new()),
            writing_in_place: Mutex::new(HashMap::new()),
            work_tx,
            ids: Mutex::new(ulid::Generator::new()),
            shutdown: shutdown_rx.clone(),
        });
        for id in pending {
            let _ = state.work_tx.send(id);
        }

        let app = router(state.clone());
        let mut stop = shutdown_rx.clone();
        let limits = crate::http_server::Limits {
            max_connections: state.config.server.max_connections,
            header_read_timeout: std::time::Duration::from_secs(
                state.config.server.header_read_timeout_secs,
            ),
        };
        let server = tokio::spawn(crate::http_server::serve(
            listener,
            app,
            limits,
            net::wrap,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
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
            schema::Schema::compile(schema, Some(id), None, None).map_err(|message| {
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
            .update_dataset_setup(id, Some(&schema_ref_json(&schema.id)), None, None)
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
        self.state.store.pool.close().await;
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

/// Creates the data dir readable by its owner only (0700, whatever the umask: it holds the
/// uploaded data and the IMS signing key); parents that are missing get the usual mode.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// A dataset's `schemaRef` naming a registered schema.
fn schema_ref_json(id: &str) -> String {
    serde_json::json!({"id": id, "contentType": "application/vnd.adobe.xed-full+json;version=1"})
        .to_string()
}

/// Registers the schemas kept in the data dir, then those of the config (which win and are
/// kept in turn).
async fn setup_schemas(
    store: &Store,
    registry: &schema::Registry,
    config: &EmulatorConfig,
) -> Result<(), EmulatorError> {
    for (id, name, body, identity) in store.saved_schemas().await? {
        let compiled = serde_json::from_str(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| schema::Schema::compile(&v, Some(&id), Some(&name), identity.as_deref()));
        match compiled {
            Ok(s) => {
                registry.insert(s);
            }
            Err(e) => {
                tracing::warn!(schema = %id, error = %e, "stored schema no longer compiles; register it again")
            }
        }
    }
    for (i, seed) in config.schemas.iter().enumerate() {
        let path = match &config.base_dir {
            Some(base) if seed.file.is_relative() => base.join(&seed.file),
            _ => seed.file.clone(),
        };
        let bad = |what: String| {
            EmulatorError::Config(format!("schemas[{i}] (file {}): {what}", path.display()))
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("cannot be read: {e}; check the path (relative paths start at the config file's directory)")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("is not JSON: {e}")))?;
        let compiled = schema::Schema::compile(
            &json,
            Some(&seed.id),
            Some(&seed.name),
            Some(&seed.identity_field),
        )
        .map_err(bad)?;
        store
            .save_schema(
                &compiled.id,
                &compiled.name,
                &json.to_string(),
                compiled.identity_field.as_deref(),
            )
            .await?;
        tracing::info!(schema = %compiled.id, name = %compiled.name, "schema registered");
        registry.insert(compiled);
    }
    Ok(())
}

/// Creates the config's datasets, and gives them the schema, tags and identity field the
/// config names.
async fn setup_datasets(
    store: &Store,
    registry: &schema::Registry,
    config: &EmulatorConfig,
) -> Result<(), EmulatorError> {
    for d in &config.datasets {
        let name = if d.name.is_empty() { &d.id } else { &d.name };
        let schema_ref = if d.schema.is_empty() {
            None
        } else {
            let s = registry.get(&d.schema).ok_or_else(|| {
                EmulatorError::Config(format!(
                    "datasets: id {:?}: schema {:?} is not registered; add it under [[schemas]] (registered: {})",
                    d.id,
                    d.schema,
                    registry.ids().join(", ")
                ))
            })?;
            Some(schema_ref_json(&s.id))
        };
        let tags = (!d.tags.is_empty()).then(|| serde_json::json!(d.tags).to_string());
        let identity =
            (!d.identity_field.is_empty()).then(|| schema::normalize_pointer(&d.identity_field));
        store
            .insert_dataset_if_missing(store::NewDataset::bare(&d.id, name))
            .await?;
        if schema_ref.is_none() && tags.is_none() && identity.is_none() {
            continue;
        }
        store
            .update_dataset_setup(
                &d.id,
                schema_ref.as_deref(),
                tags.as_deref(),
                identity.as_deref(),
            )
            .await?;
    }
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    const IMPORT: &str = "/data/foundation/import";
    const CATALOG: &str = "/data/foundation/catalog";
    const EXPORT: &str = "/data/foundation/export";
    let file_route = axum::routing::put(import::put_file)
        .post(import::post_file)
        .patch(import::patch_file)
        .head(import::head_file);
    let platform = Router::new()
        .route(&format!("{IMPORT}/batches"), post(import::create_batch))
        .route(
            &format!("{IMPORT}/batches/{{batch_id}}"),
            post(import::batch_action),
        )
        .route(
            &format!("{IMPORT}/batches/{{batch_id}}/datasets/{{dataset_id}}/files/{{*path}}"),
            file_route,
        )
        .route(
            &format!("{IMPORT}/batches/{{batch_id}}/datasets/{{dataset_id}}/preview"),
            get(export::preview),
        )
        .route(&format!("{CATALOG}/batches"), get(catalog::list_batches))
        .route(
            &format!("{CATALOG}/batches/{{batch_id}}"),
            get(catalog::get_batch),
        )
        .route(
            &format!("{CATALOG}/dataSets"),
            get(catalog::list_datasets).post(catalog::create_dataset),
        )
        .route(
            &format!("{CATALOG}/dataSets/{{dataset_id}}"),
            get(catalog::get_dataset).delete(catalog::delete_dataset),
        )
        .route(
            &format!("{EXPORT}/batches/{{batch_id}}/files"),
            get(export::batch_files),
        )
        .route(
            &format!("{EXPORT}/batches/{{batch_id}}/failed"),
            get(export::batch_failed),
        )
        .route(
            &format!("{EXPORT}/files/{{file_id}}"),
            get(export::download),
        )
        .route(
            &format!("{EXPORT}/dataSets/{{dataset_id}}/current"),
            get(export::current_view),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gateway::platform_gate,
        ))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024));
    Router::new()
        .route("/emulator/stats", get(stats_handler))
        .route(
            "/ims/token/v3",
            post(ims::token).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .merge(platform)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri, method: axum::http::Method) -> ApiError {
    ApiError::not_found(format!(
        "no platform endpoint {method} {}: see the Batch Ingestion, Catalog and Data Access API paths",
        uri.path()
    ))
}

async fn stats_handler(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(state.counters.snapshot())
}

/// An exclusive lock on the data dir (flock on `emulator.lock`), held while the emulator runs.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    async fn acquire(dir: &Path) -> Result<DirLock, EmulatorError> {
        use std::os::fd::AsRawFd;
        let path: PathBuf = dir.join("emulator.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| EmulatorError::DataDir {
                path: path.clone(),
                source,
            })?;
        // A lock released a moment ago can still be held by a process forked meanwhile (the
        // descriptor is close-on-exec, but lives until the exec), and an emulator restarted
        // by a supervisor may come up while the old one exits: wait a little before refusing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file });
            }
            if std::time::Instant::now() >= deadline {
                return Err(EmulatorError::DataDirLocked {
                    path: dir.to_path_buf(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
