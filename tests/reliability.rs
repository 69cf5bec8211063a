//! Reliability: tries hard to break the promise "every dropped file ends up ingested exactly
//! once, or quarantined with a reason, whatever happens" — against the real emulator over HTTP,
//! with real files, and the real `batchdrop` binary killed with real signals.
//!
//! Every random choice comes from one seed, printed at the start of each test; rerun a failure
//! with `BATCHDROP_SEED=<seed> cargo test --test it <name> -- --nocapture`.
//! `BATCHDROP_SOAK=1` makes the long variants (more kills, 50,000 files).
//!
//! The end state every test checks is read from the platform's side (Catalog + Data Access,
//! paged): each dropped file is in exactly one successful batch with all its records, no batch
//! is left open, and every file has a receipt beside it in the archive or the failed folder.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use batchdrop::api::{BatchQuery, BatchStatus};
use batchdrop::store::{FileState, Store};
use batchdrop_emulator::{EmulatorConfig, FaultConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;

/// These tests each drive a daemon hard (crash loops, thousands of files, a flaky platform);
/// run in parallel on a 2-core machine they starve each other past their deadlines, so they
/// take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

mod bad_files;
mod kills;
mod load;
mod platform_faults;
mod resources;

// ---- seeds, soak ---------------------------------------------------------------------------

/// The seed of this run: `BATCHDROP_SEED`, or a fresh one. Printed so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("BATCHDROP_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!(
        "[{test}] seed {seed} (replay: BATCHDROP_SEED={seed} cargo test --test it {test} -- --nocapture)"
    );
    seed
}

fn soak() -> bool {
    std::env::var("BATCHDROP_SOAK").is_ok_and(|v| v == "1")
}

// ---- the real binary -----------------------------------------------------------------------

/// A `batchdrop` process. Killed (SIGKILL) if still running when dropped, so a failing test
/// leaves nothing behind.
struct Proc {
    child: Child,
    log: PathBuf,
    /// The log's length when this process was started (the log is shared by restarts).
    log_start: usize,
    /// The line it logs once it handles signals, if any.
    ready_line: Option<&'static str>,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits (without blocking the runtime) for the process to end on its own.
    async fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "batchdrop (pid {}) did not exit within {secs}s; log: {}",
                    self.pid(),
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, and the graceful exit must be a success. A process that has only just been
    /// started (everything may be done already) is first let up to where it handles signals:
    /// a SIGTERM before that kills it, which is not what is being checked.
    async fn stop(mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(ready) = self.ready_line
            && self.alive()
            && Instant::now() < deadline
        {
            let log = std::fs::read(&self.log).unwrap_or_default();
            let ours = String::from_utf8_lossy(log.get(self.log_start..).unwrap_or_default());
            if ours.contains(ready) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(60).await;
        assert!(status.success(), "graceful stop exits 0, got {status:?}");
    }

    /// Peak resident memory (VmHWM) of the live process, in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

/// Starts `batchdrop run` on `config`; its log is appended to `daemon.log` beside the config.
fn spawn_daemon(config: &Path, env: &[(&str, &str)]) -> Proc {
    spawn_cmd(Command::new(env!("CARGO_BIN_EXE_batchdrop")), config, env)
}

fn spawn_cmd(mut cmd: Command, config: &Path, env: &[(&str, &str)]) -> Proc {
    cmd.arg("run").arg("--config").arg(config);
    let log = config.with_file_name("daemon.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    cmd.env("RUST_LOG", "batchdrop=debug")
        .env_remove("BATCHDROP_CRASH_AT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log_start = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
    Proc {
        child: cmd.spawn().expect("batchdrop binary runs"),
        log,
        log_start,
        ready_line: Some("batchdrop running"),
    }
}

/// On a failing test (or any, with `BATCHDROP_KEEP=1`), keeps a copy of its directory (state,
/// logs, drop folders) in /tmp and says where.
struct KeepOnPanic(PathBuf, &'static str);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("BATCHDROP_KEEP").is_ok_and(|v| v == "1") {
            let to = std::env::temp_dir().join(format!(
                "batchdrop-failed-{}-{}",
                self.1,
                std::process::id()
            ));
            let _ = Command::new("cp").arg("-a").arg(&self.0).arg(&to).status();
            eprintln!("[{}] test directory kept in {}", self.1, to.display());
        }
    }
}

fn read_log(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Waits until the log at `path` contains `needle`.
async fn wait_log(path: &Path, needle: &str, secs: u64) -> String {
    let path = path.to_owned();
    eventually(secs, &format!("{needle:?} in {}", path.display()), || {
        let log = read_log(&path);
        async move { log.contains(needle).then_some(log) }
    })
    .await
}

// ---- workload --------------------------------------------------------------------------------

/// What was dropped: file name → records, with globally unique ids so that no two files have
/// the same content (the daemon would rightly skip a repeat).
#[derive(Default)]
struct Workload {
    drop: PathBuf,
    next_id: usize,
    files: BTreeMap<String, u64>,
}

impl Workload {
    fn new(drop: PathBuf) -> Workload {
        std::fs::create_dir_all(&drop).unwrap();
        Workload {
            drop,
            next_id: 0,
            files: BTreeMap::new(),
        }
    }

    fn ids(&mut self, n: usize) -> usize {
        let first = self.next_id;
        self.next_id += n;
        first
    }

    fn json(&mut self, name: &str, n: usize) {
        let first = self.ids(n);
        write_atomic(&self.drop.join(name), jsonl(first, n).as_bytes());
        self.files.insert(name.to_owned(), n as u64);
    }

    fn csv(&mut self, name: &str, n: usize) {
        let first = self.ids(n);
        let mut s = String::from("id,name\n");
        for i in first..first + n {
            s.push_str(&format!("{i},person {i}\n"));
        }
        write_atomic(&self.drop.join(name), s.as_bytes());
        self.files.insert(name.to_owned(), n as u64);
    }

    fn parquet(&mut self, name: &str, n: usize) {
        let first = self.ids(n) as i64;
        write_atomic(&self.drop.join(name), &parquet_bytes(first, n as i64));
        self.files.insert(name.to_owned(), n as u64);
    }

    /// `n` small files of mixed formats, some in sub-folders.
    fn small(&mut self, rng: &mut StdRng, n: usize) {
        for _ in 0..n {
            let k = self.files.len();
            let dir = if rng.random_bool(0.2) {
                format!("sub{}/", k % 3)
            } else {
                String::new()
            };
            let records = rng.random_range(1..25);
            match rng.random_range(0..10) {
                0..5 => self.json(&format!("{dir}s{k:05}.json"), records),
                5..8 => self.csv(&format!("{dir}s{k:05}.csv"), records),
                _ => self.parquet(&format!("{dir}s{k:05}.parquet"), records),
            }
        }
    }
}

fn parquet_bytes(first: i64, rows: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let ids = Int64Array::from_iter_values(first..first + rows);
    let names = StringArray::from_iter_values((first..first + rows).map(|i| format!("person {i}")));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(names)]).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

// ---- the platform's view -----------------------------------------------------------------------

/// Data Access, read with plain HTTP (the client's `DataSetFile` has no name).
struct Platform {
    base: String,
    http: reqwest::Client,
    api: batchdrop::api::ApiClient,
}

impl Platform {
    fn new(base: &str) -> Platform {
        Platform {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            api: client(base),
        }
    }

    /// GET, retried while the platform is faulty or away (the checks must not be).
    async fn get(&self, path: &str) -> reqwest::Response {
        for _ in 0..600 {
            let sent = self
                .http
                .get(format!("{}{path}", self.base))
                .bearer_auth("test-token")
                .header("x-api-key", "test")
                .header("x-gw-ims-org-id", support::ORG)
                .header("x-sandbox-name", "prod")
                .send()
                .await;
            let wait = match sent {
                Ok(r) if r.status().is_success() => return r,
                Ok(r) if r.status().as_u16() < 429 => panic!("GET {path}: {}", r.status()),
                // Honour Retry-After like the daemon must (the emulator counts early repeats).
                Ok(r) => r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(|s| Duration::from_millis(s * 1000 + 50))
                    .unwrap_or(Duration::from_millis(100)),
                Err(_) => Duration::from_millis(100),
            };
            tokio::time::sleep(wait).await;
        }
        panic!("GET {path} kept failing");
    }

    /// Every batch of the dataset, paging 100 at a time.
    async fn all_batches(&self) -> Vec<batchdrop::api::BatchInfo> {
        let mut out = Vec::new();
        loop {
            let query = BatchQuery {
                dataset_id: Some(DATASET.into()),
                limit: Some(100),
                start: Some(out.len() as u64),
                order_by: Some("asc:created".into()),
                ..Default::default()
            };
            let mut tries = 0;
            let page = loop {
                match self.api.find_batches(&query).await {
                    Ok(page) => break page,
                    Err(e) if tries < 600 => {
                        tries += 1;
                        let wait = e.retry_after().unwrap_or_default();
                        tokio::time::sleep(wait + Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("listing batches: {e}"),
                }
            };
            let n = page.len();
            out.extend(page);
            if n < 100 {
                return out;
            }
        }
    }

    /// (name, dataSetFileId, records) of each file of a successful batch, every page.
    async fn batch_files(&self, batch: &str) -> Vec<(String, String, u64)> {
        let mut files = Vec::new();
        loop {
            let v: serde_json::Value = self
                .get(&format!(
                    "/data/foundation/export/batches/{batch}/files?start={}&limit=100",
                    files.len()
                ))
                .await
                .json()
                .await
                .unwrap();
            let page = v["data"].as_array().unwrap();
            files.extend(page.iter().map(|f| {
                (
                    f["name"].as_str().unwrap().to_owned(),
                    f["dataSetFileId"].as_str().unwrap().to_owned(),
                    // Data Access writes counts as strings (its spec's dataSetFiles schema).
                    f["records"].as_str().unwrap().parse::<u64>().unwrap(),
                )
            }));
            if v["_links"]["next"].is_null() {
                return files;
            }
        }
    }

    /// A dataset file's bytes: its listing of parts, then each part by `?path=`.
    async fn download(&self, file_id: &str) -> Vec<u8> {
        let listing: serde_json::Value = self
            .get(&format!("/data/foundation/export/files/{file_id}"))
            .await
            .json()
            .await
            .unwrap();
        let mut bytes = Vec::new();
        for part in listing["data"].as_array().unwrap() {
            let href = part["_links"]["self"]["href"].as_str().unwrap();
            let path = &href[href.find("/data/foundation/").unwrap()..];
            bytes.extend_from_slice(&self.get(path).await.bytes().await.unwrap());
        }
        bytes
    }

    /// What the dataset holds: file name → [(batch, dataSetFileId, records)], over every
    /// successful batch.
    async fn ingested(&self) -> Ingested {
        let mut by_name: BTreeMap<String, Vec<(String, String, u64)>> = BTreeMap::new();
        let mut batches = BTreeMap::<String, usize>::new();
        let mut statuses = BTreeMap::<String, usize>::new();
        let mut open = Vec::new();
        for b in self.all_batches().await {
            *statuses.entry(format!("{:?}", b.status)).or_default() += 1;
            if matches!(
                b.status,
                BatchStatus::Loading | BatchStatus::Staging | BatchStatus::Processing
            ) {
                open.push(format!("{} {:?}", b.id, b.status));
            }
            if b.status == BatchStatus::Success {
                let files = self.batch_files(&b.id).await;
                assert!(
                    files.len() <= 1500,
                    "batch {} has {} files, over the platform's 1500",
                    b.id,
                    files.len()
                );
                batches.insert(b.id.clone(), files.len());
                for (name, id, records) in files {
                    by_name
                        .entry(name)
                        .or_default()
                        .push((b.id.clone(), id, records));
                }
            }
        }
        Ingested {
            by_name,
            batches,
            statuses,
            open,
        }
    }
}

struct Ingested {
    by_name: BTreeMap<String, Vec<(String, String, u64)>>,
    /// Successful batch → number of files.
    batches: BTreeMap<String, usize>,
    statuses: BTreeMap<String, usize>,
    /// Batches not terminal (loading, staging, processing).
    open: Vec<String>,
}

impl Ingested {
    /// Each expected file in exactly one successful batch with all its records, nothing else
    /// in the dataset, and no batch left open.
    fn assert_exactly(&self, expected: &BTreeMap<String, u64>) {
        assert!(self.open.is_empty(), "batches left open: {:?}", self.open);
        let mut problems = Vec::new();
        for (name, records) in expected {
            match self.by_name.get(name).map(Vec::as_slice) {
                None | Some([]) => problems.push(format!("{name}: not in the platform")),
                Some([(_, _, got)]) if got == records => {}
                Some([(b, _, got)]) => {
                    problems.push(format!("{name}: {got} records in {b}, dropped {records}"))
                }
                Some(many) => {
                    problems.push(format!("{name}: ingested {} times: {many:?}", many.len()))
                }
            }
        }
        for name in self.by_name.keys() {
            if !expected.contains_key(name) {
                problems.push(format!("{name}: in the platform but not expected"));
            }
        }
        let want: u64 = expected.values().sum();
        let got: u64 = self.by_name.values().flatten().map(|(_, _, r)| r).sum();
        assert!(
            problems.is_empty(),
            "{} problem(s), e.g. {:#?}",
            problems.len(),
            &problems[..problems.len().min(20)]
        );
        assert_eq!(got, want, "records in the platform");
    }
}

/// Receipts below `dir`, by file name (a name with two receipts panics).
fn receipts_by_name(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for r in receipts(dir) {
        let name = r["file"].as_str().unwrap().to_owned();
        if let Some(prev) = out.insert(name.clone(), r.clone()) {
            panic!("two receipts for {name}: {prev}\n{r}");
        }
    }
    out
}

/// Asserts every expected file is archived (moved, with a success receipt), nothing failed,
/// and nothing is left in the drop folder.
fn assert_all_archived(env_drop: &Path, expected: &BTreeMap<String, u64>) {
    let archive = env_drop.join("_archive");
    let got = receipts_by_name(&archive);
    for name in expected.keys() {
        let r = got.get(name).unwrap_or_else(|| {
            panic!(
                "no receipt for {name} in the archive; failed: {:#?}",
                receipts(&env_drop.join("_failed"))
            )
        });
        assert_eq!(r["status"], "success", "{r}");
        assert!(archive.join(name).exists(), "{name} archived");
    }
    assert_eq!(got.len(), expected.len(), "one receipt per file");
    let failed = receipts(&env_drop.join("_failed"));
    assert!(failed.is_empty(), "nothing failed: {failed:#?}");
    let left = data_files_left(env_drop);
    assert!(left.is_empty(), "left in the drop folder: {left:?}");
}

/// Data files still in the drop folder (outside the archive and failed folders).
fn data_files_left(drop: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![drop.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "_archive" && name != "_failed" {
                    stack.push(p);
                }
            } else if !name.starts_with('.') {
                out.push(p.strip_prefix(drop).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Waits until `n` files have a receipt (archive or failed folder), while checking the daemon
/// stays up. The assertions that follow say what went wrong, if anything.
async fn wait_archived(drop: &Path, n: usize, secs: u64, daemon: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = receipts(&drop.join("_archive")).len() + receipts(&drop.join("_failed")).len();
        if got >= n {
            return;
        }
        assert!(
            daemon.alive(),
            "the daemon exited; log: {}",
            daemon.log.display()
        );
        assert!(
            Instant::now() < deadline,
            "{got} of {n} receipts after {secs}s; log {}",
            daemon.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts of files and batches per state, read from the state database (the daemon is dead or
/// runs beside: WAL readers never block it).
async fn snapshot(state_dir: &Path) -> String {
    let store = Store::open_shared(state_dir).await.unwrap();
    let files = store.file_counts().await.unwrap();
    let batches = store.batches_in_flight().await.unwrap();
    store.close().await;
    let mut b = BTreeMap::<String, usize>::new();
    for row in &batches {
        *b.entry(row.state().to_string()).or_default() += 1;
    }
    let f: BTreeMap<String, i64> = files
        .into_iter()
        .map(|(_, s, n)| (s.to_string(), n))
        .collect();
    format!("batches in flight {b:?}, files {f:?}")
}

/// Polls the daemon's state database (read-only, beside it) until `rel`'s newest record
/// satisfies `pred`.
async fn wait_file(
    store: &Store,
    rel: &str,
    what: &str,
    pred: impl Fn(&batchdrop::store::FileRow) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(f) = store.files_by_path(rel).await.unwrap().first()
            && pred(f)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{rel}: never {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A scenario that needs privileges this machine does not give says so and passes, except
/// where `BATCHDROP_REQUIRE_PRIVILEGED=1` (set by `.ci/run`, on a machine that has them): there
/// a skip would hide a scenario that silently stopped running, so it fails.
fn skip(scenario: &str, why: &str) {
    if std::env::var_os("BATCHDROP_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("[{scenario}] cannot run: {why}; BATCHDROP_REQUIRE_PRIVILEGED=1 forbids a skip");
    }
    println!("[{scenario}] SKIP: {why}");
}
