//! The operator's commands (`status`, `push`, `retry`, `abort`, `revert`, `check-config`,
//! `validate`, `plan`):
//! one file each, plus what they share here: their error type and exit codes, reaching the
//! platform from outside the daemon, and finding a file or batch by the name an operator gives.
//!
//! Every command works beside a running daemon: they open its state with
//! [`Store::open_shared`] (never the daemon lock), and record what they do there so the daemon
//! and `status` see it. This module must not parse arguments or set up logs (`main.rs` does),
//! and must not decide anything the daemon's stages decide: a requeued file is taken by the
//! daemon's watcher, an aborted batch is left alone by its uploader.

pub mod abort;
pub mod args;
pub mod check_config;
pub mod check_online;
pub mod completions;
pub mod healthcheck;
pub mod man;
pub mod map;
pub mod plan;
pub mod push;
mod push_repeats;
pub mod retry;
pub mod revert;
pub mod status;
pub mod status_fleet;
pub mod status_schedule;
pub mod status_watch;
pub mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{ApiClient, ApiError, ClientConfig, Secret, TokenSource};
use crate::config::{Config, ConfigError, Endpoint};
use crate::daemon::{EMBEDDED_TOKEN_FILE, EMBEDDED_URL_FILE, Platform, read_embedded_token};
use crate::store::{BatchRow, FileRow, Store, StoreError};
use batchdrop_emulator::Emulator;

/// Exit codes, distinct for each kind of trouble so scripts can tell them apart.
pub mod exit {
    /// Anything else: the platform or the state database could not be reached, a refusal...
    pub const RUNTIME: u8 = 1;
    /// Bad arguments (clap uses 2 for its own).
    pub const USAGE: u8 = 2;
    /// The config file is missing, unreadable or invalid.
    pub const CONFIG: u8 = 3;
    /// A file or batch failed to ingest.
    pub const INGEST_FAILED: u8 = 4;
}

/// Why a command failed. Every message names the file or batch and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `check-config` found problems (one per line).
    #[error("{0}")]
    ConfigProblems(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Platform(String),
    #[error("{0}")]
    NotFound(String),
    /// The command will not do this now (state, race, occupied path); the message says why.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    IngestFailed(String),
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config(_) | CommandError::ConfigProblems(_) => exit::CONFIG,
            CommandError::Usage(_) => exit::USAGE,
            CommandError::IngestFailed(_) => exit::INGEST_FAILED,
            _ => exit::RUNTIME,
        }
    }

    fn api(what: &str, e: ApiError) -> CommandError {
        CommandError::Platform(format!("{what}: {e}"))
    }
}

/// A connection to the platform for one command. With `endpoint = "embedded"` the platform
/// lives inside the daemon: the command uses the daemon's (its address is in the state dir),
/// or, when no daemon runs, starts it here for its own duration, holding the daemon lock so
/// that no daemon starts a second one on the same data meanwhile.
pub struct Connection {
    pub api: ApiClient,
    pub embedded: Option<Emulator>,
    _lock: Option<Store>,
}

impl Connection {
    pub async fn open(config: &Config) -> Result<Connection, CommandError> {
        let Endpoint::Embedded { .. } = &config.platform.endpoint else {
            let p = Platform::connect(config)
                .await
                .map_err(|e| CommandError::Platform(e.to_string()))?;
            return Ok(Connection {
                api: p.api,
                embedded: None,
                _lock: None,
            });
        };
        match Store::open_exclusive(&config.state_dir, config.allow_network_state_dir).await {
            Ok(lock) => {
                let p = Platform::connect(config)
                    .await
                    .map_err(|e| CommandError::Platform(e.to_string()))?;
                Ok(Connection {
                    api: p.api,
                    embedded: p.embedded,
                    _lock: Some(lock),
                })
            }
            Err(StoreError::Locked { holder, .. }) => {
                let url = embedded_url(&config.state_dir).await.map_err(|e| {
                    CommandError::Platform(format!(
                        "the daemon using {} ({holder}) runs the embedded platform, but its address cannot be read from {}: {e}; wait until it has started, or restart it",
                        config.state_dir.display(),
                        config.state_dir.join(EMBEDDED_URL_FILE).display()
                    ))
                })?;
                let token = read_embedded_token(&config.state_dir).map_err(|e| {
                    CommandError::Platform(format!(
                        "the daemon using {} ({holder}) runs the embedded platform, but its token cannot be read from {}: {e}; run this command as the daemon's user",
                        config.state_dir.display(),
                        config.state_dir.join(EMBEDDED_TOKEN_FILE).display()
                    ))
                })?;
                let api = client(config, &url, token)?;
                Ok(Connection {
                    api,
                    embedded: None,
                    _lock: None,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops an embedded platform this command started.
    pub async fn close(self) {
        if let Some(emu) = self.embedded {
            emu.shutdown().await;
        }
    }
}

/// The embedded platform's address as the running daemon wrote it. A file older than the
/// daemon's lock is a previous daemon's: the current one is still starting, so wait (5 s).
async fn embedded_url(state_dir: &Path) -> std::io::Result<String> {
    let file = state_dir.join(EMBEDDED_URL_FILE);
    let lock = state_dir.join("batchdrop.lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let fresh = match (std::fs::metadata(&file), std::fs::metadata(&lock)) {
            (Ok(f), Ok(l)) => f.modified()? >= l.modified()?,
            (Err(e), _) if std::time::Instant::now() >= deadline => return Err(e),
            _ => false,
        };
        if fresh || std::time::Instant::now() >= deadline {
            return Ok(std::fs::read_to_string(&file)?.trim().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client(config: &Config, endpoint: &str, token: Secret) -> Result<ApiClient, CommandError> {
    let p = &config.platform;
    ApiClient::new(ClientConfig {
        endpoint: endpoint.to_owned(),
        org_id: p.org_id.clone(),
        sandbox: p.sandbox.clone(),
        api_key: p.api_key.clone(),
        token: TokenSource::Static(token),
        request_timeout: p.request_timeout,
        connect_timeout: Duration::from_secs(10),
        extra_ca_file: None,
    })
    .map_err(|e| CommandError::api("cannot set up the platform client", e))
}

/// Loads the config (exit 3 when it is bad).
pub fn load_config(path: &Path) -> Result<Config, CommandError> {
    Ok(Config::load(path)?)
}

/// The daemon's state, opened beside it; `None` when no daemon ever ran with this state dir.
pub async fn open_state(config: &Config) -> Result<Option<Store>, CommandError> {
    if let crate::config::StateBackend::Postgres(pg) = &config.state {
        let fleet = crate::store::Fleet::connect(pg).await?;
        return Ok(Some(Store::on_fleet(&fleet)));
    }
    Ok(Store::open_for_command(&config.state_dir).await?)
}

/// The batch `arg` (a platform id or `#N`) names in this daemon's state, with the state.
pub async fn known_batch(
    config: &Config,
    arg: &str,
) -> Result<Option<(Store, BatchRow)>, CommandError> {
    if let Some(store) = open_state(config).await? {
        if let Some(batch) = store.find_batch(arg).await? {
            return Ok(Some((store, batch)));
        }
        store.close().await;
    }
    Ok(None)
}

/// The batch with platform id `arg` in a push's state, with that state and its folder (the
/// states are opened one at a time, as a push reads them).
pub async fn pushed_batch(
    config: &Config,
    arg: &str,
) -> Result<Option<(Store, BatchRow, PathBuf)>, CommandError> {
    if !looks_like_batch_id(arg) {
        return Ok(None);
    }
    for dir in push_repeats::push_states(&config.state_dir.join("push")) {
        let store = match Store::open_for_command(&dir).await {
            Ok(Some(store)) => store,
            Ok(None) => continue,
            Err(e) => {
                eprintln!(
                    "warning: cannot read the push state in {} ({e}); a batch of that push is not looked for there",
                    dir.display()
                );
                continue;
            }
        };
        if let Some(batch) = store.find_batch(arg).await? {
            return Ok(Some((store, batch, dir)));
        }
        store.close().await;
    }
    Ok(None)
}

/// Sends `action` on the platform only, for a batch id no state here knows, and says so;
/// anything else that names nothing is [`not_found`].
pub async fn platform_only(
    config: &Config,
    arg: &str,
    action: crate::api::BatchAction,
) -> Result<(), CommandError> {
    if !looks_like_batch_id(arg) {
        return Err(not_found(config, arg));
    }
    let verb = action.as_str().to_lowercase();
    let conn = Connection::open(config).await?;
    let sent = conn.api.batch_action(arg, action).await;
    conn.close().await;
    sent.map_err(|e| CommandError::api(&format!("{verb} batch {arg}"), e))?;
    println!(
        "batch {arg} is not one of this daemon's (state dir {}); the platform was asked to {verb} it",
        config.state_dir.display()
    );
    Ok(())
}

/// What an operator's FILE|BATCH argument names.
pub enum Target {
    Batch(Box<BatchRow>),
    /// Every record of that file, newest first.
    File {
        name: String,
        rows: Vec<FileRow>,
    },
}

/// Finds a batch (platform id or `#N`) or a file (its path below a drop folder, or a path to it
/// in a drop, archive or failed folder) in the state.
pub async fn find_target(
    store: &Store,
    config: &Config,
    arg: &str,
    dataset: Option<&str>,
) -> Result<Option<Target>, CommandError> {
    if let Some(b) = store.find_batch(arg).await?
        && dataset.is_none_or(|d| d == b.dataset)
    {
        return Ok(Some(Target::Batch(Box::new(b))));
    }
    let mut names = vec![arg.trim_start_matches("./").to_owned()];
    let abs = std::path::absolute(arg).unwrap_or_else(|_| PathBuf::from(arg));
    for w in &config.watches {
        for dir in [&w.archive_dir, &w.failed_dir, &w.path] {
            if let Ok(rel) = abs.strip_prefix(dir) {
                let rel = rel.to_string_lossy().into_owned();
                if !rel.is_empty() && !names.contains(&rel) {
                    names.push(rel);
                }
            }
        }
    }
    let mut rows = store.files_by_final_path(&abs.to_string_lossy()).await?;
    for n in &names {
        for f in store.files_by_path(n).await? {
            if !rows.iter().any(|r| r.id == f.id) {
                rows.push(f);
            }
        }
    }
    rows.retain(|f| dataset.is_none_or(|d| d == f.dataset));
    rows.sort_by_key(|f| std::cmp::Reverse(f.id));
    Ok(rows
        .first()
        .map(|f| f.rel_path.clone())
        .map(|name| Target::File { name, rows }))
}

/// The error for a FILE|BATCH argument that names nothing known.
pub fn not_found(config: &Config, arg: &str) -> CommandError {
    CommandError::NotFound(format!(
        "no batch or file named {arg:?} in the state of {} (state dir {}); give a batch id or #N from `batchdrop status`, or a file's path relative to its drop folder",
        config.path.display(),
        config.state_dir.display()
    ))
}

/// A platform batch id, as opposed to a file name: ids have no dot, slash or blank.
pub fn looks_like_batch_id(arg: &str) -> bool {
    !arg.is_empty() && !arg.contains(['.', '/', ' ', '#'])
}

/// Epoch milliseconds → RFC 3339 (UTC, milliseconds).
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Bytes for people: 1.2 MB.
pub fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    for (unit, size) in [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if n >= size {
            return format!("{:.1} {unit}", n / size);
        }
    }
    format!("{n} B")
}
