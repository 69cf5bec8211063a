//! What every handler and background task shares: the store, the config, the registered
//! schemas, the counters, and the in-memory coordination of requests (batch locks, ranges
//! being written in place, `Retry-After` promises).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};

use crate::config::EmulatorConfig;
use crate::ims::Signer;
use crate::schemas::Registry;
use crate::stats::Counters;
use crate::store::Store;

/// Shared by every handler and background task.
pub(crate) struct AppState {
    pub store: Store,
    pub config: EmulatorConfig,
    /// Registered schemas.
    pub schemas: Registry,
    /// Signs and checks the tokens of `/ims/token/v3`.
    pub signer: Signer,
    pub counters: Arc<Counters>,
    pub fault_rng: Mutex<StdRng>,
    /// Batches whose processing ended since start (for `faults.fail_first_batches`).
    pub batches_processed: AtomicU64,
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
    pub fn new(
        store: Store,
        schemas: Registry,
        signer: Signer,
        config: EmulatorConfig,
        work_tx: mpsc::UnboundedSender<String>,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        AppState {
            store,
            schemas,
            signer,
            fault_rng: Mutex::new(StdRng::seed_from_u64(config.faults.seed)),
            batches_processed: AtomicU64::new(0),
            retry_after: Mutex::new(HashMap::new()),
            config,
            counters: Arc::new(Counters::default()),
            batch_locks: Mutex::new(HashMap::new()),
            writing_in_place: Mutex::new(HashMap::new()),
            work_tx,
            ids: Mutex::new(ulid::Generator::new()),
            shutdown,
        }
    }

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
