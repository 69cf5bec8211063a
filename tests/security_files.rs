//! Files and folders under attack (issue #16, H1–H3, M7, M8 and the file side of M2): each test
//! plays a producer who may write into a drop folder against the real binary, and checks that
//! the attack fails safely: what it aims at is untouched, nothing leaves the drop folder that
//! was not in it, the daemon keeps serving, and the attacker's file gets a receipt (or, for a
//! folder symlink that is never looked into, a log line) saying why it was refused.
//!
//! These tests run as root here, so permissions protect nothing in them: they attack what does
//! not depend on permissions (following symlinks, file types, sizes, identities) and check the
//! modes batchdrop sets where that is what a defence is made of.

use crate::support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use batchdrop::store::{FileState, Store};
use batchdrop_emulator::EmulatorConfig;
use sha2::{Digest, Sha256};
use support::*;

/// The daemon, as the real binary, logging into `daemon.log` beside its config.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(config: &Path) -> Proc {
        let log = config.with_file_name("daemon.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_batchdrop"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "batchdrop=debug")
            .env_remove("BATCHDROP_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("batchdrop binary runs");
        Proc { child, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's log contains `needle`.
    async fn logged(&self, needle: &str, secs: u64) {
        eventually(secs, &format!("the daemon to log {needle:?}"), || {
            let seen = self.log_text().contains(needle);
            async move { seen.then_some(()) }
        })
        .await;
    }

    /// The high-water mark of its resident memory, in kB.
    fn peak_rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The daemon still answers on its admin listener.
async fn serving(env: &Env) {
    let url = admin_url(&env.state_dir()).await;
    let (status, body) = http_get(&format!("{url}/healthz"))
        .await
        .expect("the daemon answers /healthz");
    assert!((200..300).contains(&status), "/healthz: {status} {body}");
}

/// The receipt below `dir` for `file`, once it is there. Planted symlinks with receipt names
/// are not receipts (and may point at anything): only regular files are read.
async fn receipt_of(dir: &Path, file: &str) -> serde_json::Value {
    let dir = dir.to_owned();
    eventually(
        60,
        &format!("a receipt for {file} in {}", dir.display()),
        || {
            let found = listing(&dir)
                .into_iter()
                .map(|rel| dir.join(rel))
                .filter(|p| p.to_string_lossy().ends_with(".receipt.json"))
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
                .filter_map(|p| {
                    serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).ok()?).ok()
                })
                .find(|r| r["file"] == file);
            async move { found }
        },
    )
    .await
}

fn reason(receipt: &serde_json::Value) -> String {
    receipt["reason"].as_str().unwrap_or_default().to_owned()
}

/// Every entry below `dir`, as paths relative to it.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_owned());
        }
    }
    out.sort();
    out
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_planted_at_predictable_names_are_never_written_through() {
    let env = Env::new().await;
    // What a producer would aim at: the daemon's state database.
    let outside = env.dir.path().join("victim");
    std::fs::create_dir_all(&outside).unwrap();
    let db = outside.join("batchdrop.db");
    std::fs::write(&db, "the state database").unwrap();
    // bad.json may share a batch with the good files: isolate sends them again without it.
    let config = env.write_config("", "on_batch_failure = \"isolate\"");
    let (archive, failed) = (env.archive(), env.failed());
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&failed).unwrap();
    // Every name batchdrop ever derived from a file's name: the receipt, its old temp name, the
    // old cross-filesystem temp name, in both folders.
    for name in [
        "a.json.receipt.json",
        "a.json.receipt.json.tmp",
        "a.batchdrop-tmp",
        "a.json.batchdrop-tmp",
    ] {
        symlink(&db, archive.join(name)).unwrap();
    }
    for name in ["bad.json.receipt.json", "bad.json.receipt.json.tmp"] {
        symlink(&db, failed.join(name)).unwrap();
    }
    // ...and at the archive destination of a second file itself.
    symlink(&db, archive.join("b.json")).unwrap();
    let daemon = Proc::spawn(&config);
    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 3).as_bytes());
    write_atomic(&env.drop_dir().join("b.json"), jsonl(10, 3).as_bytes());
    write_atomic(&env.drop_dir().join("bad.json"), b"{not json\n");

    let a = receipt_of(&archive, "a.json").await;
    let b = receipt_of(&archive, "b.json").await;
    let bad = receipt_of(&failed, "bad.json").await;
    serving(&env).await;
    daemon.stop();

    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        "the state database",
        "the planted symlinks' target is untouched"
    );
    assert_eq!(listing(&outside), [PathBuf::from("batchdrop.db")]);
    assert_eq!(a["status"], "success", "{a}");
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(bad["status"], "failed", "{bad}");
    // The receipts replaced the links (never followed them), and are batchdrop's: 0640.
    for receipt in [
        archive.join("a.json.receipt.json"),
        failed.join("bad.json.receipt.json"),
    ] {
        let meta = std::fs::symlink_metadata(&receipt).unwrap();
        assert!(meta.is_file(), "{} is a regular file", receipt.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o640,
            "{}",
            receipt.display()
        );
    }
    // b.json did not go through the link at its name: it got a name of its own.
    assert!(
        std::fs::symlink_metadata(archive.join("b.json"))
            .unwrap()
            .is_symlink()
    );
    let b_to = b["archived_to"].as_str().unwrap();
    assert_ne!(Path::new(b_to), archive.join("b.json"));
    assert_eq!(std::fs::read(b_to).unwrap(), jsonl(10, 3).as_bytes());
    // The folders batchdrop keeps in the drop folder are its own: 0750.
    for dir in [&archive, &failed] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750, "{}", dir.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_folder_replaced_by_a_symlink_receives_nothing() {
    let env = Env::new().await;
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = env.write_config("", "");
    let daemon = Proc::spawn(&config);
    write_atomic(&env.drop_dir().join("first.json"), jsonl(0, 2).as_bytes());
    receipt_of(&env.archive(), "first.json").await;

    // The producer swaps the archive for a symlink to a folder of their choosing.
    std::fs::rename(env.archive(), env.dir.path().join("moved-archive")).unwrap();
    symlink(&elsewhere, env.archive()).unwrap();
    write_atomic(&env.drop_dir().join("second.json"), jsonl(10, 2).as_bytes());
    // Ingested, but it cannot be archived: it waits where it is, and the daemon says why.
    daemon.logged("cannot finish 1 file(s) for now", 60).await;
    serving(&env).await;
    assert!(listing(&elsewhere).is_empty(), "{:?}", listing(&elsewhere));
    assert_eq!(
        std::fs::read(env.drop_dir().join("second.json")).unwrap(),
        jsonl(10, 2).as_bytes(),
        "the file waits in the drop folder"
    );
    assert!(
        daemon.log_text().contains(
            "a folder on the way is a symbolic link, which batchdrop never writes through"
        ),
        "the log says a symlink is in the way"
    );

    // Once the link is gone, batchdrop makes its own archive again and the file is finished.
    std::fs::remove_file(env.archive()).unwrap();
    let second = receipt_of(&env.archive(), "second.json").await;
    daemon.stop();
    assert_eq!(second["status"], "success", "{second}");
    assert!(listing(&elsewhere).is_empty());
    assert!(env.archive().join("second.json").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_symlinks_inside_the_drop_folder_are_never_followed() {
    let env = Env::new().await;
    // A folder only the daemon may read, with something worth stealing in it.
    let private = env.dir.path().join("private");
    std::fs::create_dir_all(private.join("deeper")).unwrap();
    std::fs::write(private.join("secret.json"), jsonl(0, 5)).unwrap();
    std::fs::write(private.join("deeper/more.json"), jsonl(5, 5)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = env.write_config("", "");
    std::fs::create_dir_all(env.drop_dir().join("sub")).unwrap();
    // One link before the daemon starts (the first scan), one while it runs (events), one a
    // folder down.
    symlink(&private, env.drop_dir().join("link")).unwrap();
    let daemon = Proc::spawn(&config);
    symlink(&private, env.drop_dir().join("later")).unwrap();
    symlink(&private, env.drop_dir().join("sub/nested")).unwrap();
    write_atomic(&env.drop_dir().join("ok.json"), jsonl(100, 2).as_bytes());

    receipt_of(&env.archive(), "ok.json").await;
    for link in ["link", "later", "sub/nested"] {
        let path = env.drop_dir().join(link);
        daemon
            .logged(
                &format!(
                    "{} is a symbolic link to a folder; batchdrop never follows one",
                    path.display()
                ),
                30,
            )
            .await;
    }
    serving(&env).await;
    daemon.stop();

    assert_eq!(
        env.emulator.stats().puts,
        1,
        "only ok.json was ever uploaded"
    );
    assert_eq!(
        std::fs::read(private.join("secret.json")).unwrap(),
        jsonl(0, 5).as_bytes()
    );
    assert_eq!(
        listing(&private),
        [
            PathBuf::from("deeper"),
            PathBuf::from("deeper/more.json"),
            PathBuf::from("secret.json")
        ]
    );
    let archived = listing(&env.archive());
    assert_eq!(
        archived,
        [
            PathBuf::from("ok.json"),
            PathBuf::from("ok.json.receipt.json")
        ],
        "nothing of the private folder was moved into the archive"
    );
    assert!(receipts(&env.failed()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_sockets_and_devices_in_the_drop_folder_are_named_and_never_opened() {
    let env = Env::new().await;
    // Rescans every second: each one sees the same pipe again.
    let config = env.write_config("", "rescan_interval = \"1s\"");
    let mkfifo = |path: &Path| {
        let made = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
    };
    // A pipe before the daemon starts (the first scan), a socket and links to a device and
    // to the pipe while it runs (events). Opening the pipe would wait for a writer forever;
    // reading /dev/zero would never end.
    let pipe = env.drop_dir().join("feed.json");
    mkfifo(&pipe);
    let daemon = Proc::spawn(&config);
    let socket_path = env.drop_dir().join("socket.json");
    let _socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let device = env.drop_dir().join("zero.json");
    symlink("/dev/zero", &device).unwrap();
    let pipe_link = env.drop_dir().join("pipe-link.json");
    symlink(&pipe, &pipe_link).unwrap();
    write_atomic(&env.drop_dir().join("ok.json"), jsonl(0, 2).as_bytes());

    let ok = receipt_of(&env.archive(), "ok.json").await;
    for (path, what) in [
        (&pipe, "is a FIFO (named pipe)"),
        (&socket_path, "is a socket"),
        (&device, "is a symbolic link to a device"),
        (&pipe_link, "is a symbolic link to a FIFO (named pipe)"),
    ] {
        daemon
            .logged(
                &format!(
                    "{} {what}; batchdrop takes regular files only and never opens anything else",
                    path.display()
                ),
                30,
            )
            .await;
    }
    serving(&env).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = daemon.log_text();
    daemon.stop();

    assert_eq!(ok["status"], "success", "{ok}");
    assert_eq!(env.emulator.stats().puts, 1, "only ok.json was uploaded");
    assert!(
        std::fs::symlink_metadata(&pipe)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(&socket_path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert!(std::fs::symlink_metadata(&device).unwrap().is_symlink());
    assert!(receipts(&env.failed()).is_empty());
    assert_eq!(
        text.matches("feed.json is a FIFO").count(),
        1,
        "the pipe is named once, however often it is seen: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_that_are_not_small_regular_files_are_refused_unread() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let drop = env.drop_dir();
    let daemon = Proc::spawn(&config);
    serving(&env).await;
    let before = daemon.peak_rss_kb();

    // Each sidecar is in place before its data file, so the file waits for it.
    let fifo = drop.join("fifo.json.replay");
    let made = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o660) }, 0);
    symlink("/dev/zero", drop.join("zero.json.replay")).unwrap();
    std::fs::File::create(drop.join("sparse.json.replay"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    for name in ["fifo.json", "zero.json", "sparse.json"] {
        write_atomic(&drop.join(name), jsonl(0, 2).as_bytes());
    }

    let fifo_r = receipt_of(&env.failed(), "fifo.json").await;
    let zero_r = receipt_of(&env.failed(), "zero.json").await;
    let sparse_r = receipt_of(&env.failed(), "sparse.json").await;
    // The folder's intake goes on.
    write_atomic(&drop.join("good.json"), jsonl(10, 2).as_bytes());
    let good = receipt_of(&env.archive(), "good.json").await;
    serving(&env).await;
    let peak = daemon.peak_rss_kb();
    daemon.stop();

    assert!(reason(&fifo_r).contains("FIFO"), "{fifo_r}");
    assert!(reason(&zero_r).contains("symbolic link"), "{zero_r}");
    assert!(
        reason(&sparse_r).contains("3221225472 bytes long")
            && reason(&sparse_r).contains("at most 65536 bytes"),
        "{sparse_r}"
    );
    for r in [&fifo_r, &zero_r, &sparse_r] {
        assert_eq!(r["status"], "failed", "{r}");
    }
    assert_eq!(good["status"], "success", "{good}");
    // Each sidecar went along with its file, unread (a rename moves the FIFO and the link
    // themselves).
    let failed = env.failed();
    assert!(
        std::fs::symlink_metadata(failed.join("fifo.json.replay"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(failed.join("zero.json.replay"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::metadata(failed.join("sparse.json.replay"))
            .unwrap()
            .len(),
        3 << 30
    );
    assert_eq!(env.emulator.stats().puts, 1, "only good.json was uploaded");
    // A 3 GiB sidecar read whole took the daemon to 2.7 GB; refused unread it costs nothing.
    assert!(
        peak < before + 256 * 1024,
        "peak RSS went from {before} kB to {peak} kB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_sparse_files_are_refused_with_a_receipt_without_being_read() {
    let env = Env::new().await;
    let config = env.write_config("", "max_file_bytes = 1000000000\nrefuse_sparse = true");
    let daemon = Proc::spawn(&config);
    serving(&env).await;
    let before = daemon.peak_rss_kb();
    let drop = env.drop_dir();
    // 1 TB made in an instant with `truncate`: over max_file_bytes.
    let huge = std::fs::File::create(drop.join(".huge.json")).unwrap();
    huge.set_len(1 << 40).unwrap();
    std::fs::rename(drop.join(".huge.json"), drop.join("huge.json")).unwrap();
    // 64 MiB of holes: within the size cap, but sparse.
    let holes = std::fs::File::create(drop.join(".holes.json")).unwrap();
    holes.set_len(64 << 20).unwrap();
    std::fs::rename(drop.join(".holes.json"), drop.join("holes.json")).unwrap();
    write_atomic(&drop.join("ok.json"), jsonl(0, 2).as_bytes());

    let huge_r = receipt_of(&env.failed(), "huge.json").await;
    let holes_r = receipt_of(&env.failed(), "holes.json").await;
    let ok = receipt_of(&env.archive(), "ok.json").await;
    serving(&env).await;
    let peak = daemon.peak_rss_kb();
    daemon.stop();

    assert!(
        reason(&huge_r).contains("more than max_file_bytes (1000000000)"),
        "{huge_r}"
    );
    assert!(reason(&holes_r).contains("sparse file"), "{holes_r}");
    assert_eq!(ok["status"], "success", "{ok}");
    let stats = env.emulator.stats();
    assert_eq!(stats.puts, 1, "only ok.json was uploaded");
    assert!(stats.bytes_received < 1 << 20, "{stats:?}");
    assert_eq!(
        std::fs::metadata(env.failed().join("huge.json"))
            .unwrap()
            .len(),
        1 << 40,
        "moved whole, unread"
    );
    assert!(
        peak < before + 256 * 1024,
        "peak RSS went from {before} kB to {peak} kB"
    );
}

/// A TCP gate in front of the emulator: closed, it drops every connection (the platform is
/// unreachable); open, it forwards.
struct Gate {
    addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
}

impl Gate {
    async fn new(upstream: std::net::SocketAddr) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let is_open = open.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Gate { addr, open }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_after_it_was_queued_is_not_uploaded_as_the_queued_version() {
    let env = Env::new().await;
    let gate = Gate::new(env.emulator.local_addr()).await;
    let config = env.write_config_for(&format!("http://{}", gate.addr), "max_attempts = 100", "");
    let daemon = Proc::spawn(&config);
    let queued = jsonl(0, 3);
    write_atomic(&env.drop_dir().join("swap.json"), queued.as_bytes());
    // Taken into a batch that cannot be created while the platform is unreachable.
    let store = eventually(30, "the state database", || {
        let dir = env.state_dir();
        async move { Store::open_for_command(&dir).await.ok().flatten() }
    })
    .await;
    eventually(30, "swap.json sealed into a batch", || {
        let store = store.clone();
        async move {
            let rows = store.files_by_path("swap.json").await.ok()?;
            rows.iter()
                .any(|f| f.state == FileState::Batched)
                .then_some(())
        }
    })
    .await;
    // The producer renames other content over it before its upload.
    let swapped = jsonl(100, 5);
    write_atomic(&env.drop_dir().join("swap.json"), swapped.as_bytes());
    gate.open.store(true, Ordering::SeqCst);

    let r = receipt_of(&env.archive(), "swap.json").await;
    serving(&env).await;
    daemon.stop();
    let rows = store.files_by_path("swap.json").await.unwrap();
    store.close().await;
    let first = rows.iter().min_by_key(|f| f.id).unwrap();
    assert_eq!(first.state, FileState::Superseded, "{first:?}");
    assert!(
        first
            .reason
            .as_deref()
            .is_some_and(|why| why.contains("changed on disk before its upload")),
        "{first:?}"
    );
    assert_eq!(
        first.sha256, None,
        "nothing was hashed under the queued identity"
    );
    // The swapped-in content went in only as the new version it is, under its own identity.
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["sha256"], sha256(swapped.as_bytes()), "{r}");
    let batch = r["batch"].as_str().unwrap();
    assert_eq!(records_in_batch(&env.api, batch).await, 5);
    assert_eq!(env.emulator.stats().puts, 1);
    assert_eq!(env.emulator.stats().batches_succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_while_opening_a_file_delays_it_never_fails_it() {
    // Every platform request takes a while: time to take descriptors away from the daemon
    // between the creation of the batch and the opening of its file.
    let mut cfg = EmulatorConfig::default();
    cfg.faults.latency_probability = 1.0;
    cfg.faults.latency_ms = 2500;
    let env = Env::with_emulator(cfg).await;
    let config = env.write_config("", "");
    let daemon = Proc::spawn(&config);
    write_atomic(&env.drop_dir().join("later.json"), jsonl(0, 4).as_bytes());
    eventually(60, "the batch created", || {
        let created = env.emulator.stats().batches_created;
        async move { (created >= 1).then_some(()) }
    })
    .await;
    // No new descriptor: the lowest free number is at the limit.
    let limit = lowest_free_fd(daemon.pid());
    let old = set_fd_limit(daemon.pid(), limit);
    daemon
        .logged("trying again in 2s (nothing is failed for this)", 60)
        .await;
    set_fd_limit(daemon.pid(), old);

    let r = receipt_of(&env.archive(), "later.json").await;
    daemon.stop();
    assert_eq!(r["status"], "success", "{r}");
    assert!(receipts(&env.failed()).is_empty(), "nothing was failed");
}

/// The smallest descriptor number the process `pid` does not use.
fn lowest_free_fd(pid: i32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// Sets the soft RLIMIT_NOFILE of `pid`; returns the previous one.
fn set_fd_limit(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        // SAFETY: reading the current limit into a valid struct.
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) },
        0
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    assert_eq!(
        // SAFETY: setting a limit from a valid struct; only the soft limit moves.
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) },
        0,
        "prlimit: {}",
        std::io::Error::last_os_error()
    );
    old.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_is_not_utf8_keeps_its_bytes_in_the_failed_folder() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = Proc::spawn(&config);
    let name = OsStr::from_bytes(b"latin1-\xe9t\xe9.json");
    std::fs::write(env.drop_dir().join(name), jsonl(0, 1)).unwrap();
    let r = wait_receipts(&env.failed(), 1, 60).await;
    daemon.stop();
    assert!(reason(&r[0]).contains("UTF-8"), "{}", r[0]);
    assert_eq!(
        std::fs::read(env.failed().join(name)).unwrap(),
        jsonl(0, 1).as_bytes(),
        "moved under its own bytes"
    );
    let mut receipt = name.to_owned();
    receipt.push(".receipt.json");
    assert!(env.failed().join(receipt).is_file());
    assert!(!env.drop_dir().join(name).exists());
}
