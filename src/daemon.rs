//! The daemon's wiring: open the state, reach the platform, then run the stages
//! watcher → store → batcher → uploader (→ API client) → poller → archiver until shutdown.
//!
//! Each stage is a task that reads its work from the store and records its result there;
//! `Notify` handles only wake the next stage sooner. Shutdown is one `CancellationToken`:
//! intake stops at once, uploads stop at a chunk or file boundary within `shutdown_grace`,
//! and whatever was cut is resumed from the store on the next start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::api::{ApiClient, ClientConfig, ClientSecret, ErrorKind, OAuth, Secret, TokenSource};
use crate::archiver::Archiver;
use crate::batcher::Batcher;
use crate::config::{Config, Credentials, Endpoint, SecretSource, Watch};
use crate::stage::{self, Ended};
use crate::store::{Store, StoreError, now_ms};
use crate::telemetry::Health;
use crate::uploader::Uploader;
use crate::watcher::Watcher;
use batchdrop_emulator::{Emulator, EmulatorConfig, GatewayConfig};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the embedded platform in {dir}: {message}")]
    Embedded { dir: String, message: String },
    #[error(
        "[platform.auth] client_secret_env names {var}, which is not set in the environment; set it or use client_secret_file"
    )]
    SecretEnv { var: String },
    #[error("cannot set up the platform client: {0}")]
    Client(String),
    /// `--once` cannot finish: the work left is all for datasets the platform does not know.
    #[error(
        "--once cannot finish: {0}. The files stay where they were dropped; run again once that is fixed"
    )]
    Blocked(String),
    /// A stage ended on its own (it failed, panicked or returned): the daemon does not run on
    /// without it.
    #[error(
        "{0}; batchdrop stopped rather than run on without it (what was done is in the state database: a restart resumes from there)"
    )]
    Stage(String),
    #[error(
        "cannot serve the admin listener on {addr}: {source}; set admin_listen to a free address, or \"off\""
    )]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// File in the state dir holding the embedded platform's base URL while a daemon runs it.
pub const EMBEDDED_URL_FILE: &str = "embedded-url";

/// File in the state dir holding the bearer token the embedded platform accepts (mode 0600):
/// made at the first start, the only token its gateway lets through, read by `push`, `abort`
/// and `revert` to reach a running daemon's platform.
pub const EMBEDDED_TOKEN_FILE: &str = "embedded-token";

/// The embedded platform's token, from the state dir; a new random one (kept 0600) when there
/// is none yet, or when the one there is unusable (not a regular file of ours, readable by
/// others, empty).
pub fn embedded_token(state_dir: &Path) -> std::io::Result<Secret> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join(EMBEDDED_TOKEN_FILE);
    match read_embedded_token(state_dir) {
        Ok(token) => return Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::warn!(file = %path.display(), "replacing the embedded platform's token: {e}");
        }
        Err(e) => return Err(e),
    }
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tmp = state_dir.join(format!(
        ".{EMBEDDED_TOKEN_FILE}.{:016x}.tmp",
        rand::random::<u64>()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    Ok(Secret::new(token))
}

/// The embedded platform's token as the daemon keeps it. `InvalidData` when the file is not a
/// regular file owned by this user, is readable by others, or is empty.
pub fn read_embedded_token(state_dir: &Path) -> std::io::Result<Secret> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(state_dir.join(EMBEDDED_TOKEN_FILE))?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me {
        return Err(invalid("it is not a regular file owned by this user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(invalid("other users could read it (its mode is not 0600)"));
    }
    let mut token = String::new();
    file.take(1024).read_to_string(&mut token)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid("it is empty"));
    }
    Ok(Secret::new(token))
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Process what is present, then exit.
    pub once: bool,
    /// Notified on SIGHUP: re-read the config file.
    pub reload: Option<Arc<Notify>>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal, or `--once` with every file ingested (or a known duplicate).
    Done,
    /// `--once` finished, but this many files ended in the failed folder.
    Failures(i64),
    /// `--once` was stopped by a signal before its work was done.
    Interrupted,
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
                // Only the daemon's user can read this token: other local users cannot use
                // the platform's loopback port.
                let token =
                    embedded_token(&config.state_dir).map_err(|e| DaemonError::Embedded {
                        dir: data_dir.display().to_string(),
                        message: format!(
                            "cannot keep its token in {}: {e}",
                            config.state_dir.join(EMBEDDED_TOKEN_FILE).display()
                        ),
                    })?;
                let emulator_config = EmulatorConfig {
                    gateway: GatewayConfig {
                        tokens: vec![token.expose().to_owned()],
                        ..GatewayConfig::default()
                    },
                    ..EmulatorConfig::default()
                };
                let emu = Emulator::start(([127, 0, 0, 1], 0).into(), data_dir, emulator_config)
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
                (emu.base_url(), TokenSource::Static(token), Some(emu))
            }
            Endpoint::Url { url, credentials } => {
                let token = match credentials {
                    Credentials::OAuth(a) => TokenSource::ClientCredentials(OAuth {
                        token_url: a.ims_url.clone(),
                        client_id: a.client_id.clone(),
                        scope: a.scopes.clone(),
                        client_secret: match &a.secret {
                            SecretSource::File(path) => ClientSecret::File(path.clone()),
                            SecretSource::Inline(s) => ClientSecret::Value(Secret::new(s.clone())),
                            SecretSource::Env(var) => ClientSecret::Value(Secret::new(
                                std::env::var(var)
                                    .map_err(|_| DaemonError::SecretEnv { var: var.clone() })?,
                            )),
                        },
                    }),
                    Credentials::TokenFile(path) => TokenSource::File(path.clone()),
                };
                (url.clone(), token, None)
            }
        };
        let api = ApiClient::new(ClientConfig {
            endpoint,
            org_id: p.org_id.clone(),
            sandbox: p.sandbox.clone(),
            api_key: p.api_key.clone(),
            token,
            request_timeout: p.request_timeout,
            connect_timeout: Duration::from_secs(10),
            extra_ca_file: p.extra_ca_file.clone(),
        })
        .map_err(|e| DaemonError::Client(e.to_string()))?;
        Ok(Platform { api, embedded })
    }
}

/// Runs the daemon until `shutdown` is cancelled (or, with `--once`, until the files present
/// at start are all finished). Reads like the data flow: watchers → store → batcher →
/// uploader (→ api) → poller → archiver.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<Outcome, DaemonError> {
    let started = now_ms();
    // Installed before any stage counts anything.
    crate::telemetry::prometheus();
    let crate::membership::State { store, member } = crate::membership::open(&config).await?;
    let platform = Platform::connect(&config).await?;
    if let Some(emu) = &platform.embedded {
        // The operator's commands (`push`, `abort`, `revert`) reach the embedded platform,
        // which lives in this process, through this file (trusted only while the lock is held).
        let path = config.state_dir.join(EMBEDDED_URL_FILE);
        if let Err(e) = std::fs::write(&path, emu.base_url()) {
            tracing::warn!(file = %path.display(), "cannot record the embedded platform's address ({e}); push, abort and revert will not reach it");
        }
    }

    // Pre-flight: a watch that cannot work is refused, one whose dataset is missing blocked.
    let mut config = config;
    let admitted = crate::preflight::gate::admit(&platform.api, &store, &config).await;
    config.watches = admitted.watches;
    let validators: crate::batcher::Validators = Arc::new(RwLock::new(admitted.validators));
    let budgets = Arc::new(RwLock::new(admitted.budgets));
    let mappers: crate::mapped::Mappers = Arc::new(RwLock::new(admitted.mappers));
    if let Err(e) = crate::mapped::sweep(&store, &config.state_dir).await {
        tracing::warn!(
            "cannot look for staged files no file needs ({e}); they stay until the next start"
        );
    }

    let health = Arc::new(Health::default());
    let wake_batcher = Arc::new(Notify::new());
    let wake_uploader = Arc::new(Notify::new());
    let wake_archiver = Arc::new(Notify::new());
    let flush = Arc::new(AtomicBool::new(opts.once));
    // Intake (watchers, batcher) stops first; the uploader and archiver get the grace period.
    let intake = shutdown.child_token();
    let output = CancellationToken::new();
    // Every stage runs supervised: one that ends without being asked stops the daemon.
    let mut tasks: JoinSet<Ended> = JoinSet::new();
    // In a fleet, the leases live as long as the stages that use them.
    let beat = CancellationToken::new();
    let leases = member.clone().map(crate::membership::Leases::new);
    if let Some(leases) = &leases {
        tokio::spawn(crate::membership::heartbeat(leases.clone(), beat.clone()));
    }

    // The hashes of large files computed while they settle: started by the watchers, gone on
    // from by the batcher's local check, taken by the uploader.
    let early = crate::early_hash::EarlyHashes::new(config.upload.large_file_threshold);
    // watchers → store
    let mut watchers = Watchers {
        leases: leases.clone(),
        early: early.clone(),
        ..Watchers::default()
    };
    for w in &config.watches {
        watchers.start(
            w,
            &mut tasks,
            &store,
            &wake_batcher,
            &health,
            &config,
            &intake,
        );
    }
    // store → batcher → store
    let batch_watches = Arc::new(RwLock::new(config.watches.clone()));
    let batcher = Batcher {
        watches: batch_watches.clone(),
        validators: validators.clone(),
        budgets: budgets.clone(),
        mappers: mappers.clone(),
        state_dir: config.state_dir.clone(),
        checked: Default::default(),
        store: store.clone(),
        health: health.clone(),
        max_inflight_bytes: config.limits.max_inflight_bytes,
        wake: wake_batcher.clone(),
        wake_uploader: wake_uploader.clone(),
        leases: leases.clone(),
        early: early.clone(),
    }
    .run(intake.clone(), flush.clone());
    tasks.spawn(stage::supervise("batcher", intake.clone(), async {
        batcher.await;
        Ok(())
    }));
    // store → uploader → api → poller → store
    let upload_outcomes = Arc::new(RwLock::new(crate::uploader::outcomes_by_watch(
        &config.watches,
    )));
    let uploader = Uploader::new(
        store.clone(),
        platform.api.clone(),
        config.upload.clone(),
        wake_uploader.clone(),
        wake_archiver.clone(),
        upload_outcomes.clone(),
        leases.clone(),
        early,
    )
    .run(output.clone(), config.shutdown_grace);
    tasks.spawn(stage::supervise("uploader", output.clone(), async {
        uploader.await;
        Ok(())
    }));
    // store → archiver → folders
    let archive_watches = Arc::new(RwLock::new(
        config
            .watches
            .iter()
            .map(|w| (w.name.clone(), w.clone()))
            .collect::<HashMap<_, _>>(),
    ));
    let archiver = Archiver {
        watches: archive_watches.clone(),
        store: store.clone(),
        wake: wake_archiver,
        leases: leases.clone(),
    }
    .run(output.clone());
    tasks.spawn(stage::supervise("archiver", output.clone(), async {
        archiver.await;
        Ok(())
    }));

    // Blocked datasets (see `blocked`) are checked again on a backoff; a lifted block wakes
    // the stages that wait for it.
    tokio::spawn(crate::blocked::recheck(
        platform.api.clone(),
        archive_watches.clone(),
        store.clone(),
        vec![wake_batcher.clone(), wake_uploader.clone()],
        output.clone(),
    ));
    tokio::spawn(probe_platform(
        platform.api.clone(),
        health.clone(),
        config.probe_interval,
        output.clone(),
    ));
    if let Some(addr) = config.admin_listen {
        let bound = admin::serve(addr, store.clone(), health.clone(), output.clone())
            .await
            .map_err(|source| DaemonError::Admin { addr, source })?;
        let _ = std::fs::write(config.state_dir.join("admin-addr"), bound.to_string());
        tracing::info!(%bound, "admin listener: /metrics /healthz /readyz");
    }
    tracing::info!(watches = config.watches.len(), state = %config.state_dir.display(), "batchdrop running");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut watchdog = sd_watchdog_interval().map(tokio::time::interval);

    let mut failed: Option<String> = None;
    let mut stuck: Option<String> = None;
    let reload = opts.reload.clone().unwrap_or_default();
    loop {
        health
            .watchers_up
            .store(watchers.all_scanned(), Ordering::SeqCst);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(ended) = tasks.join_next() => {
                if let Some(why) = unexpected(ended) {
                    tracing::error!("stopping: {why}");
                    failed = Some(why);
                    shutdown.cancel();
                    break;
                }
            }
            _ = reload.notified() => {
                // systemd's notify-reload protocol: RELOADING=1 (with the clock) … READY=1.
                let _ = sd_notify::notify(&reload_started());
                match Config::load(&config.path) {
                    Err(e) => tracing::error!("config reload rejected, the previous config stays in force: {e}"),
                    Ok(mut new) => {
                        warn_unreloadable(&config, &new);
                        if let Some(emu) = &platform.embedded {
                            // As at start: the embedded platform has a dataset for every watch.
                            for w in &new.watches {
                                if let Err(e) = emu.ensure_dataset(&w.dataset, &w.name).await {
                                    tracing::error!(watch = %w.name, dataset = %w.dataset, "the embedded platform cannot create dataset {} for watch {}: {e}; fix the watch's dataset and reload", w.dataset, w.name);
                                }
                            }
                        }
                        lift_blocks(&store, &new).await;
                        let admitted = crate::preflight::gate::admit(&platform.api, &store, &new).await;
                        new.watches = admitted.watches;
                        *validators.write().unwrap() = admitted.validators;
                        *budgets.write().unwrap() = admitted.budgets;
                        *mappers.write().unwrap() = admitted.mappers;
                        wake_uploader.notify_one();
                        for w in watchers.reconcile(&new.watches) {
                            watchers.start(&w, &mut tasks, &store, &wake_batcher, &health, &new, &intake);
                        }
                        *batch_watches.write().unwrap() = new.watches.clone();
                        *upload_outcomes.write().unwrap() =
                            crate::uploader::outcomes_by_watch(&new.watches);
                        let mut archive = archive_watches.write().unwrap();
                        for w in &new.watches {
                            archive.insert(w.name.clone(), w.clone());
                        }
                        drop(archive);
                        tracing::info!(watches = new.watches.len(), "config reloaded");
                        config = new;
                    }
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = async { watchdog.as_mut().unwrap().tick().await }, if watchdog.is_some() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            // Housekeeping tick, until every watcher has scanned (a readiness fact) and for
            // `--once`'s end. Not otherwise: ten wake-ups a second were a third of an idle
            // daemon's CPU (B6).
            _ = tokio::time::sleep(Duration::from_millis(100)), if opts.once || !watchers.all_scanned() => {
                if opts.once && watchers.all_settled() {
                    // In a fleet, the instance scanning a watch may not have recorded what it
                    // found yet: the work is not known to be done before it is.
                    let names: Vec<String> = config.watches.iter().map(|w| w.name.clone()).collect();
                    if let Some(member) = &member
                        && member.scanned_elsewhere(&names).await?
                    {
                        continue;
                    }
                    if !store.work_left().await? {
                        break;
                    }
                    let blocked = store.blocked_datasets().await?;
                    if !blocked.is_empty() && !store.work_left_unblocked().await? {
                        let what: Vec<String> = blocked.iter().map(crate::blocked::describe).collect();
                        stuck = Some(what.join("; "));
                        break;
                    }
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: intake stopped, letting uploads reach a safe point");
    let interrupted = opts.once && shutdown.is_cancelled();
    intake.cancel();
    output.cancel();
    // Every stage stops at its next safe point, uploads within `shutdown_grace`; a stage
    // still running well after that is stuck: say which, and stop waiting (what is recorded
    // in the store is consistent at any instant; the next start resumes the rest).
    let limit = config.shutdown_grace + Duration::from_secs(10);
    let stopped = tokio::time::timeout(limit, async {
        while let Some(ended) = tasks.join_next().await {
            if let Some(why) = unexpected(ended) {
                tracing::error!("{why}");
                failed.get_or_insert(why);
            }
        }
    })
    .await;
    if stopped.is_err() {
        tracing::error!(
            stages_left = tasks.len(),
            "{} stage(s) did not stop within {limit:?} of the shutdown request; exiting anyway (the next start resumes from the state database)",
            tasks.len()
        );
        tasks.abort_all();
    }
    beat.cancel();
    if let Some(member) = &member {
        crate::membership::leave(member).await;
    }
    if let Some(emu) = platform.embedded {
        emu.shutdown().await;
    }
    if let Some(why) = failed {
        store.close().await;
        return Err(DaemonError::Stage(why));
    }
    if let Some(why) = stuck {
        store.close().await;
        return Err(DaemonError::Blocked(why));
    }
    let failures = if opts.once {
        store.failed_count_since(started).await?
    } else {
        0
    };
    store.close().await;
    Ok(if interrupted {
        Outcome::Interrupted
    } else if failures > 0 {
        Outcome::Failures(failures)
    } else {
        Outcome::Done
    })
}

/// What systemd hears when a reload starts: `RELOADING=1` and `MONOTONIC_USEC`, which
/// `Type=notify-reload` requires (without the clock, only `RELOADING=1`).
fn reload_started() -> Vec<sd_notify::NotifyState<'static>> {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    states.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
    states
}

/// The running watchers, by watch name, each with its own stop token (a reload stops one
/// without touching the others).
#[derive(Default)]
struct Watchers {
    running: HashMap<String, (Watch, CancellationToken, Arc<AtomicUsize>)>,
    /// In a fleet: each watcher scans only while its instance holds the watch's scan lease.
    leases: Option<crate::membership::Leases>,
    /// Shared with the uploader (see `crate::early_hash`).
    early: crate::early_hash::EarlyHashes,
}

impl Watchers {
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        w: &Watch,
        tasks: &mut JoinSet<Ended>,
        store: &Store,
        wake_batcher: &Arc<Notify>,
        health: &Arc<Health>,
        config: &Config,
        intake: &CancellationToken,
    ) {
        let token = intake.child_token();
        let mut watcher = Watcher::new(
            w.clone(),
            store.clone(),
            wake_batcher.clone(),
            health.clone(),
            config.limits.max_queued_files,
        );
        watcher.leases = self.leases.clone();
        watcher.early = self.early.clone();
        self.running.insert(
            w.name.clone(),
            (w.clone(), token.clone(), watcher.pending.clone()),
        );
        let run = watcher.run(token.clone());
        let name = format!("watcher of {}", w.path.display());
        tasks.spawn(async move { stage::supervise(&name, token, run).await });
    }

    /// Stops the watchers that are gone or changed; returns the watches to (re)start.
    fn reconcile(&mut self, wanted: &[Watch]) -> Vec<Watch> {
        let mut start = Vec::new();
        self.running.retain(|name, (w, token, _)| {
            let keep = wanted.iter().any(|n| n == w);
            if !keep {
                tracing::info!(folder = %name, "watch stopped (removed or changed in the config)");
                token.cancel();
            }
            keep
        });
        for w in wanted {
            if !self.running.contains_key(&w.name) {
                tracing::info!(folder = %w.path.display(), dataset = %w.dataset, "watch started");
                start.push(w.clone());
            }
        }
        start
    }

    /// Every watcher finished its first scan.
    fn all_scanned(&self) -> bool {
        self.running
            .values()
            .all(|(_, _, p)| p.load(Ordering::SeqCst) != usize::MAX)
    }

    /// Every watcher finished its first scan and has no file waiting to settle.
    fn all_settled(&self) -> bool {
        self.running
            .values()
            .all(|(_, _, p)| p.load(Ordering::SeqCst) == 0)
    }
}

/// A reload may have fixed what blocked a watch (see `blocked`): every block is lifted, and a
/// dataset still missing is found again on its next use. Batches the platform never created
/// for a dataset no watch names any more give their files back to their watch's queue, to
/// travel to the dataset the config names now.
async fn lift_blocks(store: &Store, config: &Config) {
    let blocked = match store.blocked_datasets().await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                "cannot read the blocked datasets after the reload: {}",
                e.explain()
            );
            return;
        }
    };
    for b in blocked {
        let named = config.watches.iter().any(|w| w.dataset == b.dataset);
        let lifted = async {
            if !named {
                let why = format!(
                    "dataset {} does not exist and no watch names it since the config was reloaded; the files go to their watch's dataset",
                    b.dataset
                );
                let n = store.requeue_unsent_batches(&b.dataset, &why).await?;
                if n > 0 {
                    tracing::info!(dataset = %b.dataset, batches = n, "{why}");
                }
            }
            store.unblock_dataset(&b.dataset).await
        };
        match lifted.await {
            Ok(_) => {
                tracing::info!(dataset = %b.dataset, watch = %b.watch, "config reloaded: dataset {} is no longer blocked; it is checked again on its next batch", b.dataset)
            }
            Err(e) => {
                tracing::error!(dataset = %b.dataset, "cannot lift the block after the reload: {}", e.explain())
            }
        }
    }
}

/// Why a stage task's end stops the daemon, if it does.
fn unexpected(ended: Result<Ended, tokio::task::JoinError>) -> Option<String> {
    match ended {
        Ok(Ended::Stopped) => None,
        Ok(Ended::Unexpectedly(why)) => Some(why),
        // `supervise` catches panics: only an abort (at the end of a shutdown) is left.
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some(format!("a stage ended: {e}")),
    }
}

/// Settings a reload cannot apply to a running daemon: say so instead of ignoring them.
fn warn_unreloadable(old: &Config, new: &Config) {
    for message in unreloadable(old, new) {
        tracing::warn!("{message}");
    }
}

/// What changed in the config that only a restart applies. Values are compared, not their
/// `Debug` text: that hides the API key and secrets, whose change must be noticed too.
fn unreloadable(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.state_dir != new.state_dir {
        changed.push("state_dir changed in the config: restart batchdrop to apply it");
    }
    if old.platform != new.platform {
        changed.push("[platform] changed in the config: restart batchdrop to apply it");
    }
    if old.upload != new.upload || old.admin_listen != new.admin_listen {
        changed
            .push("[upload] or admin_listen changed in the config: restart batchdrop to apply it");
    }
    changed
}

/// Asks the platform a cheap question every `every`, so `/readyz` knows whether it is reachable.
async fn probe_platform(
    api: ApiClient,
    health: Arc<Health>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        let mut wait = every;
        let ok = match api.get_batch("batchdrop-readiness-probe").await {
            Ok(_) => true,
            Err(e) => {
                // A throttled platform asked us to wait: the probe obeys like every other call.
                if let Some(after) = e.retry_after() {
                    wait = wait.max(after);
                }
                !matches!(e.kind(), ErrorKind::Transient { .. })
            }
        };
        health.platform_result(ok);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Half the watchdog period systemd asked for (`WatchdogSec=`), if it asked.
fn sd_watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config whose `[platform]` table ends with `extra`.
    fn config(extra: &str) -> Config {
        let text = format!(
            "[platform]\nendpoint = \"https://platform.example\"\n{extra}\n[[watch]]\npath = 'a'\ndataset = 'd'\n"
        );
        // Not a file: an inline secret is then allowed (no mode to check).
        Config::parse(&text, Path::new("/nonexistent/batchdrop.toml")).unwrap()
    }

    #[test]
    fn a_changed_api_key_or_secret_is_a_change_though_debug_hides_it() {
        let token = "access_token_file = 'token'";
        let old = config(&format!("api_key = 'one'\n{token}"));
        assert!(unreloadable(&old, &old.clone()).is_empty());
        let new = config(&format!("api_key = 'two'\n{token}"));
        assert_eq!(
            format!("{old:?}"),
            format!("{new:?}"),
            "Debug hides the key"
        );
        assert_eq!(
            unreloadable(&old, &new),
            ["[platform] changed in the config: restart batchdrop to apply it"]
        );

        let oauth = |secret: &str| {
            config(&format!(
                "[platform.auth]\nclient_id = 'id'\nclient_secret = '{secret}'"
            ))
        };
        let (old, new) = (oauth("first"), oauth("rotated"));
        assert_eq!(format!("{old:?}"), format!("{new:?}"), "Debug hides it");
        assert_eq!(unreloadable(&old, &new).len(), 1);
        assert!(unreloadable(&old, &oauth("first")).is_empty());
    }

    #[test]
    fn upload_settings_and_the_state_dir_need_a_restart_too() {
        let token = "access_token_file = 'token'";
        let old = config(token);
        let mut new = old.clone();
        new.upload.concurrency += 1;
        assert_eq!(unreloadable(&old, &new).len(), 1);
        let mut new = old.clone();
        new.state_dir = new.state_dir.join("elsewhere");
        assert_eq!(unreloadable(&old, &new).len(), 1);
        let mut new = old.clone();
        new.watches[0].dataset = "other".into();
        assert!(unreloadable(&old, &new).is_empty(), "watches do reload");
    }
}
