//! A local, on-disk emulator of the platform's Batch Ingestion, Catalog and Data Access APIs.
//!
//! It implements the contract in `batch-ingestion-api.md` (the real paths under
//! `/data/foundation/{import,catalog,export}`, the gateway's authentication checks, the batch
//! lifecycle with asynchronous processing that really parses JSON, CSV and Parquet), keeps its
//! state in a data dir (SQLite metadata + files) so it survives restarts, and can inject faults.
//! It shares no code with batchdrop's API client on purpose: a test of one against the other
//! checks both against the contract.
//!
//! `GET /emulator/stats` (outside the platform's paths, no authentication, never faulted)
//! returns [`EmulatorStats`] as JSON.

mod catalog;
mod config;
mod error;
mod export;
mod formats;
mod gateway;
mod import;
mod net;
mod processing;
mod stats;
mod store;
mod upload;

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

pub use config::{DatasetSeed, EmulatorConfig, FaultConfig, GatewayConfig, LimitsConfig};
pub use error::EmulatorError;
pub use stats::{EmulatorStats, FaultCounts};

use error::ApiError;
use stats::Counters;
use store::Store;

/// Shared by every handler and background task.
pub(crate) struct AppState {
    pub store: Store,
    pub config: EmulatorConfig,
    pub counters: Arc<Counters>,
    pub fault_rng: Mutex<StdRng>,
    /// Requests answered with `Retry-After` ("METHOD URI" → until when), to count the ones
    /// repeated too early.
    pub retry_after: Mutex<HashMap<String, std::time::Instant>>,
    batch_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub work_tx: mpsc::UnboundedSender<String>,
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// The lock that serializes state changes of one batch (file commits, actions).
    pub fn batch_lock(&self, batch_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.batch_locks.lock().expect("batch lock map");
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
        std::fs::create_dir_all(data_dir).map_err(|source| EmulatorError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(data_dir)?;
        let store = Store::open(data_dir).await?;
        for d in &config.datasets {
            let name = if d.name.is_empty() { &d.id } else { &d.name };
            store
                .insert_dataset_if_missing(&d.id, name, None, "{}", "{}", "", "")
                .await?;
        }
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
            fault_rng: Mutex::new(StdRng::seed_from_u64(config.faults.seed)),
            retry_after: Mutex::new(HashMap::new()),
            config,
            counters: Arc::new(Counters::default()),
            batch_locks: Mutex::new(HashMap::new()),
            work_tx,
            shutdown: shutdown_rx.clone(),
        });
        for id in pending {
            let _ = state.work_tx.send(id);
        }

        let app = router(state.clone());
        let mut stop = shutdown_rx.clone();
        let server = tokio::spawn(async move {
            let listener = net::KillableListener { inner: listener };
            let result = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<net::ConnHandle>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "emulator server stopped with an error");
            }
        });
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
            .insert_dataset_if_missing(id, name, None, "{}", "{}", "", "")
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
            get(catalog::get_dataset),
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
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gateway::platform_gate,
        ))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024));
    Router::new()
        .route("/emulator/stats", get(stats_handler))
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
    fn acquire(dir: &Path) -> Result<DirLock, EmulatorError> {
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
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(EmulatorError::DataDirLocked {
                path: dir.to_path_buf(),
            });
        }
        Ok(DirLock { _file: file })
    }
}
