//! Test harness shared by the daemon's integration tests: a real emulator on 127.0.0.1:0 with
//! its data in a temp dir, a real config file, real drop folders, and the daemon either
//! in-process (`Daemon::start`) or as the real binary (`spawn_binary`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchdrop::api::{ApiClient, ClientConfig, Secret, TokenSource};
use batchdrop::config::Config;
use batchdrop::daemon::{self, Outcome, RunOptions};
use batchdrop_emulator::{Emulator, EmulatorConfig};
use tokio_util::sync::CancellationToken;

pub use config::ConfigFile;

pub const DATASET: &str = "5deac2648a19d218a888d2b1";
/// The organisation the test configs leave to its default: the platform (and the emulator)
/// shows a batch only to callers of the organisation and sandbox it was created in.
pub const ORG: &str = "batchdrop@AdobeOrg";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub emulator: Emulator,
    pub api: ApiClient,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_emulator(EmulatorConfig::default()).await
    }

    pub async fn with_emulator(cfg: EmulatorConfig) -> Env {
        // Logs show with `--nocapture` (RUST_LOG=batchdrop=debug for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let emulator = Emulator::start(
            ([127, 0, 0, 1], 0).into(),
            &dir.path().join("platform"),
            cfg,
        )
        .await
        .expect("emulator starts");
        emulator
            .ensure_dataset(DATASET, "test dataset")
            .await
            .unwrap();
        std::fs::write(dir.path().join("token"), "test-token\n").unwrap();
        let api = client(&emulator.base_url());
        Env { dir, emulator, api }
    }

    pub fn drop_dir(&self) -> PathBuf {
        self.dir.path().join("drop")
    }

    pub fn archive(&self) -> PathBuf {
        self.drop_dir().join("_archive")
    }

    pub fn failed(&self) -> PathBuf {
        self.drop_dir().join("_failed")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The tests' usual config against this emulator (`ConfigFile::fast`), to add to and
    /// `write`.
    pub fn config_file(&self) -> ConfigFile {
        ConfigFile::fast(&self.emulator.base_url())
    }

    /// Writes `config` as `config.toml` in the test's dir (where its relative paths point) and
    /// makes the drop folder.
    pub fn write(&self, config: &ConfigFile) -> PathBuf {
        std::fs::create_dir_all(self.drop_dir()).unwrap();
        config.write_to(&self.dir.path().join("config.toml"))
    }

    /// Writes the usual config with `upload_extra` merged into `[upload]` and `watch_extra`
    /// into the `[[watch]]` (TOML text, parsed on the way).
    pub fn write_config(&self, upload_extra: &str, watch_extra: &str) -> PathBuf {
        self.write_config_for(&self.emulator.base_url(), upload_extra, watch_extra)
    }

    /// The same, against the platform at `url`.
    pub fn write_config_for(&self, url: &str, upload_extra: &str, watch_extra: &str) -> PathBuf {
        self.write(
            &ConfigFile::fast(url)
                .merge_text("upload", upload_extra)
                .merge_text("watch", watch_extra),
        )
    }

    pub fn config(&self, upload_extra: &str, watch_extra: &str) -> Config {
        Config::load(&self.write_config(upload_extra, watch_extra)).unwrap()
    }

    /// A client of the emulator calling as the test config's organisation, into `sandbox`.
    pub fn client_in(&self, sandbox: &str) -> ApiClient {
        ApiClient::new(ClientConfig {
            endpoint: self.emulator.base_url(),
            org_id: self.config("", "").platform.org_id,
            sandbox: sandbox.into(),
            api_key: "test".into(),
            token: TokenSource::Static(Secret::new("test-token".to_owned())),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            extra_ca_file: None,
        })
        .unwrap()
    }

    /// Registers `schema` as `schema_id` in the emulator, makes `dataset` of it, and writes the
    /// test config (with `watch_extra`) on that dataset.
    pub async fn config_on_schema(
        &self,
        dataset: &str,
        schema_id: &str,
        schema: &serde_json::Value,
        watch_extra: &str,
    ) -> PathBuf {
        self.emulator
            .register_schema(schema_id, schema)
            .await
            .unwrap();
        self.emulator
            .ensure_dataset_with_schema(dataset, "test dataset with a schema", schema_id)
            .await
            .unwrap();
        self.write(
            &self
                .config_file()
                .merge_text("watch", watch_extra)
                .last_watch(|watch| watch.set("dataset", dataset)),
        )
    }
}

pub fn client(url: &str) -> ApiClient {
    client_with_token(url, "test-token")
}

/// A client of the platform at `url` that sends this bearer token.
pub fn client_with_token(url: &str, token: &str) -> ApiClient {
    ApiClient::new(ClientConfig {
        endpoint: url.to_owned(),
        org_id: ORG.into(),
        sandbox: "prod".into(),
        api_key: "test".into(),
        token: TokenSource::Static(Secret::new(token.to_owned())),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        extra_ca_file: None,
    })
    .unwrap()
}

/// The daemon running in-process.
pub struct Daemon {
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<Outcome, daemon::DaemonError>>,
}

impl Daemon {
    pub fn start(config: Config) -> Daemon {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(daemon::run(config, RunOptions::default(), shutdown.clone()));
        Daemon { shutdown, handle }
    }

    pub async fn stop(self) -> Outcome {
        self.shutdown.cancel();
        self.handle.await.unwrap().expect("daemon ends cleanly")
    }
}

/// The real binary, for a command or a daemon: stdin closed, and what a test must not inherit
/// from the environment removed (a config path, the crash, panic and pause hooks).
pub fn batchdrop() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"));
    cmd.stdin(std::process::Stdio::null())
        .env_remove("BATCHDROP_CONFIG")
        .env_remove("BATCHDROP_CRASH_AT")
        .env_remove("BATCHDROP_PANIC_AT")
        .env_remove("BATCHDROP_PAUSE_AT");
    cmd
}

/// The daemon as the real binary: `batchdrop run ARGS --config CONFIG` with `envs` (`RUST_LOG`
/// is `batchdrop=debug` unless given), its log appended to `daemon.log` beside the config (a
/// pipe nobody reads would fill up and block it).
pub fn spawn_daemon(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("daemon.log"))
        .unwrap();
    let mut cmd = batchdrop();
    cmd.arg("run")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "batchdrop=debug")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.spawn().expect("the batchdrop binary runs")
}

/// Sends `signal` (`libc::SIGTERM`, `SIGHUP`...) to a process this test spawned.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on the pid of a child this test spawned; no memory is involved.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// SIGTERM, then waits for the daemon to exit; panics if it is still running after 30 s.
pub fn stop_daemon(mut child: std::process::Child) -> std::process::ExitStatus {
    signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The base URL of the admin listener of the daemon on `state_dir`, once it has written it.
pub async fn admin_url(state_dir: &Path) -> String {
    let path = state_dir.join("admin-addr");
    let addr = eventually(30, "the admin listener", || {
        let addr = std::fs::read_to_string(&path).ok();
        async move { addr }
    })
    .await;
    format!("http://{addr}")
}

/// GET `url` (an admin listener's `/metrics`, `/readyz`, `/healthz`): its status and body, or
/// `None` while nothing answers there.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until `f` returns Some, or panics after `secs` with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every receipt below `dir`, parsed.
/// Runs the real binary with `args`; logs go to stderr (kept in the output for messages).
pub async fn bd(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("BATCHDROP_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("batchdrop binary runs")
}

pub fn receipts(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".receipt.json") {
                out.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    out
}

/// Waits for `n` receipts below `dir`.
pub async fn wait_receipts(dir: &Path, n: usize, secs: u64) -> Vec<serde_json::Value> {
    let dir = dir.to_owned();
    eventually(secs, &format!("{n} receipts in {}", dir.display()), || {
        let r = receipts(&dir);
        async move { (r.len() >= n).then_some(r) }
    })
    .await
}

/// Waits until the log file at `path` holds `needle` at least `count` times (a daemon's log
/// line is the observable event for what has no other outcome: a reload, a refusal); panics
/// after `secs` with what the log holds.
pub async fn wait_log_count(path: &Path, needle: &str, count: usize, secs: u64) -> String {
    eventually(
        secs,
        &format!("{count}× {needle:?} in {}", path.display()),
        || async {
            let log =
                String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
            (log.matches(needle).count() >= count).then_some(log)
        },
    )
    .await
}

/// Records ingested by a batch, counted through Data Access (the platform's own view).
pub async fn records_in_batch(api: &ApiClient, batch: &str) -> u64 {
    api.list_batch_files(batch)
        .await
        .unwrap()
        .iter()
        .map(|f| f.records.unwrap_or(0))
        .sum()
}

/// The records the platform holds for `dataset`, over every successful batch (a doubled file
/// would hide in another batch than its receipt names); fails if any batch was left loading.
pub async fn records_ingested(api: &ApiClient, dataset: &str) -> u64 {
    let batches = api
        .find_batches(&batchdrop::api::BatchQuery {
            dataset_id: Some(dataset.into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ingested = 0;
    for batch in &batches {
        assert_ne!(
            batch.status,
            batchdrop::api::BatchStatus::Loading,
            "batch {} left loading",
            batch.id
        );
        if batch.status == batchdrop::api::BatchStatus::Success {
            ingested += records_in_batch(api, &batch.id).await;
        }
    }
    ingested
}

/// Writes `n` JSON Lines records with ids starting at `first`.
pub fn jsonl(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"person {i}\"}}\n"))
        .collect()
}

pub fn write_atomic(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A short temp name: the final one may already be as long as names can be.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tmp = path.with_file_name(format!(".w{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
pub mod config;
pub mod postgres;
pub mod records;
