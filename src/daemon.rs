//! The daemon's wiring: open the state, reach the platform, then run the stages
//! watcher → store → batcher → uploader (→ API client) → poller → archiver until shutdown.
//!
//! Each stage is a task that reads its work from the store and records its result there;
//! `Notify` handles only wake the next stage sooner. Shutdown is one `CancellationToken`:
//! intake stops at once, uploads stop at a chunk or file boundary within `shutdown_grace`,
//! and whatever was cut is resumed from the store on the next start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ClientConfig, Secret, TokenSource};
use crate::archiver::Archiver;
use crate::batcher::Batcher;
use crate::config::{Config, Endpoint};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::store::{Store, StoreError, now_ms};
use crate::uploader::Uploader;
use crate::watcher::Watcher;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the embedded platform in {dir}: {message}")]
    Embedded { dir: String, message: String },
    #[error(
        "cannot read the access token from {path}: {source}; write the bearer token into that file"
    )]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the platform client: {0}")]
    Client(String),
}

/// File in the state dir holding the embedded platform's base URL while a daemon runs it.
pub const EMBEDDED_URL_FILE: &str = "embedded-url";

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Process what is present, then exit.
    pub once: bool,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal, or `--once` with every file ingested (or a known duplicate).
    Done,
    /// `--once` finished, but this many files ended in the failed folder.
    Failures(i64),
}

/// The platform the daemon talks to, and the embedded emulator when it runs one.
pub struct Platform {
    pub api: ApiClient,
    pub embedded: Option<Emulator>,
}

impl Platform {
    pub async fn connect(config: &Config) -> Result<Platform, DaemonError> {
        let p = &config.platform;
        let (endpoint, token, embedded) = match &p.endpoint {
            Endpoint::Embedded { data_dir } => {
                let emu = Emulator::start(
                    ([127, 0, 0, 1], 0).into(),
                    data_dir,
                    EmulatorConfig::default(),
                )
                .await
                .map_err(|e| DaemonError::Embedded {
                    dir: data_dir.display().to_string(),
                    message: e.to_string(),
                })?;
                for w in &config.watches {
                    emu.ensure_dataset(&w.dataset, &w.name).await.map_err(|e| {
                        DaemonError::Embedded {
                            dir: data_dir.display().to_string(),
                            message: e.to_string(),
                        }
                    })?;
                }
                tracing::info!(url = %emu.base_url(), data = %data_dir.display(), "embedded platform started");
                (emu.base_url(), "embedded".to_owned(), Some(emu))
            }
            Endpoint::Url(url) => {
                let path = p
                    .access_token_file
                    .as_ref()
                    .expect("validated: a URL endpoint has a token file");
                let token = std::fs::read_to_string(path).map_err(|source| DaemonError::Token {
                    path: path.display().to_string(),
                    source,
                })?;
                (url.clone(), token.trim().to_owned(), None)
            }
        };
        let api = ApiClient::new(ClientConfig {
            endpoint,
            org_id: p.org_id.clone(),
            sandbox: p.sandbox.clone(),
            api_key: p.api_key.clone(),
            token: TokenSource::Static(Secret::new(token)),
            request_timeout: p.request_timeout,
            connect_timeout: Duration::from_secs(10),
            extra_ca_file: None,
        })
        .map_err(|e| DaemonError::Client(e.to_string()))?;
        Ok(Platform { api, embedded })
    }
}

/// Runs the daemon until `shutdown` is cancelled (or, with `--once`, until the files present
/// at start are all finished).
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<Outcome, DaemonError> {
    let started = now_ms();
    let store = Store::open_exclusive(&config.state_dir, false).await?;
    let platform = Platform::connect(&config).await?;
    if let Some(emu) = &platform.embedded {
        // The operator's commands (`push`, `abort`, `revert`) reach the embedded platform,
        // which lives in this process, through this file (trusted only while the lock is held).
        let path = config.state_dir.join(EMBEDDED_URL_FILE);
        if let Err(e) = std::fs::write(&path, emu.base_url()) {
            tracing::warn!(file = %path.display(), "cannot record the embedded platform's address ({e}); push, abort and revert will not reach it");
        }
    }

    let wake_batcher = Arc::new(Notify::new());
    let wake_uploader = Arc::new(Notify::new());
    let wake_archiver = Arc::new(Notify::new());
    let flush = Arc::new(AtomicBool::new(opts.once));
    // Intake (watchers, batcher) stops first; the uploader and archiver get the grace period.
    let intake = shutdown.child_token();
    let output = CancellationToken::new();

    let mut tasks: JoinSet<(&'static str, Result<(), StoreError>)> = JoinSet::new();
    let mut pending = Vec::new();
    for w in &config.watches {
        let watcher = Watcher::new(w.clone(), store.clone(), wake_batcher.clone());
        pending.push(watcher.pending.clone());
        let run = watcher.run(intake.clone());
        tasks.spawn(async move { ("watcher", run.await) });
    }
    let batcher = Batcher {
        watches: config.watches.clone(),
        store: store.clone(),
        wake: wake_batcher.clone(),
        wake_uploader: wake_uploader.clone(),
    }
    .run(intake.clone(), flush.clone());
    tasks.spawn(async move { ("batcher", batcher.await) });
    let uploader = Uploader::new(
        store.clone(),
        platform.api.clone(),
        config.upload.clone(),
        wake_uploader.clone(),
        wake_archiver.clone(),
    );
    let uploader = uploader.run(output.clone(), config.shutdown_grace);
    tasks.spawn(async move { ("uploader", uploader.await) });
    let archiver = Archiver {
        watches: config
            .watches
            .iter()
            .map(|w| (w.name.clone(), w.clone()))
            .collect::<HashMap<_, _>>(),
        store: store.clone(),
        wake: wake_archiver.clone(),
    }
    .run(output.clone());
    tasks.spawn(async move { ("archiver", archiver.await) });
    tracing::info!(watches = config.watches.len(), state = %config.state_dir.display(), "batchdrop running");

    let mut failed: Option<StoreError> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tasks.join_next() => {
                // A stage only returns early on a state database error: stop everything.
                if let Some(Ok((stage, Err(e)))) = r {
                    tracing::error!("stopping: the {stage} stopped on {e}");
                    failed = Some(e);
                    shutdown.cancel();
                    break;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if opts.once => {
                let scanning = pending.iter().any(|p| p.load(Ordering::SeqCst) != 0);
                if !scanning && store.pending_work().await? == 0 {
                    break;
                }
            }
        }
    }
    tracing::info!("shutting down: intake stopped, letting uploads reach a safe point");
    intake.cancel();
    output.cancel();
    while let Some(r) = tasks.join_next().await {
        tracing::debug!("stage ended: {r:?}");
    }
    tracing::debug!("all stages ended");
    if let Some(emu) = platform.embedded {
        emu.shutdown().await;
    }
    if let Some(e) = failed {
        store.close().await;
        return Err(e.into());
    }
    let failures = if opts.once {
        store.failed_count_since(started).await?
    } else {
        0
    };
    store.close().await;
    Ok(if failures > 0 {
        Outcome::Failures(failures)
    } else {
        Outcome::Done
    })
}
