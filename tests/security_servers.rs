//! Attacks on batchdrop's servers and network paths (issue 16, M2–M6), each performed against
//! the real binary or the real emulator, each checked to fail safely: idle-connection floods
//! on the admin listener and the emulator, strangers' tokens on the embedded platform, tokens
//! from the emulator's own IMS past a gateway allowlist, proxies in the environment, and a
//! 1 GiB record without a newline.

use crate::support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use batchdrop::api::{BatchAction, BatchStatus, CreateBatch, Format};
use batchdrop_emulator::{
    Emulator, EmulatorConfig, GatewayConfig, ImsClient, ImsConfig, ServerConfig,
};
use support::*;

/// The real binary with `args`, its stderr in `log`; `setup` runs in the child before exec.
fn spawn(args: &[&str], log: &Path, envs: &[(&str, &str)], setup: fn()) -> Child {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchdrop"));
    cmd.args(args)
        .env("RUST_LOG", "batchdrop=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // SAFETY: `setup` only makes async-signal-safe calls (umask, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            setup();
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon config in `dir` with the embedded platform and the admin listener.
fn embedded_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    ConfigFile::embedded()
        .set("probe_interval", "300ms")
        .watch("drop", DATASET, |watch| watch)
        .write_to(&dir.join("config.toml"))
}

/// Waits for a file the daemon writes, and returns its content.
async fn written(path: &Path) -> String {
    let path = path.to_owned();
    eventually(30, &format!("the daemon writes {}", path.display()), || {
        let text = std::fs::read_to_string(&path).ok();
        async move { text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) }
    })
    .await
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The peak resident memory of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// One plain HTTP/1.1 GET on a new connection: the status code.
async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// Fewer descriptors than the flood below would take without the connection caps.
fn limit_descriptors() {
    let limit = libc::rlimit {
        rlim_cur: 512,
        rlim_max: 512,
    };
    // SAFETY: setrlimit with a valid struct; async-signal-safe.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
}

/// M2: 300 idle connections each to the admin listener and to the embedded emulator, against
/// a daemon allowed 512 descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_floods_take_neither_the_servers_nor_the_daemons_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    let daemon = spawn(
        &["run", "--config", config.to_str().unwrap()],
        &dir.path().join("daemon.log"),
        &[],
        limit_descriptors,
    );
    let pid = daemon.id();
    let admin = addr_of(&format!(
        "http://{}",
        written(&dir.path().join("state/admin-addr")).await
    ));
    let platform = addr_of(&written(&dir.path().join("state/embedded-url")).await);
    let archive = dir.path().join("drop/_archive");
    write_atomic(&dir.path().join("drop/before.json"), jsonl(0, 5).as_bytes());
    wait_receipts(&archive, 1, 60).await;
    let baseline = open_fds(pid);

    // The most descriptors the daemon holds at any moment of the flood.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(Ordering::SeqCst) {
                most = most.max(open_fds(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        })
    };
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(TcpStream::connect(admin).unwrap());
        flood.push(TcpStream::connect(platform).unwrap());
    }
    // Connections are accepted in order: once these are answered, the flood was taken in.
    let served = |addr, path: &'static str| async move {
        eventually(
            60,
            &format!("{path} is served during the flood"),
            || async move { (get_status(addr, path).await == Some(200)).then_some(()) },
        )
        .await
    };
    served(admin, "/healthz").await;
    served(platform, "/emulator/stats").await;
    write_atomic(
        &dir.path().join("drop/during.json"),
        jsonl(10, 5).as_bytes(),
    );
    let receipts = wait_receipts(&archive, 2, 60).await;
    sampling.store(false, Ordering::SeqCst);
    let during = sampler.join().unwrap();
    eprintln!("daemon descriptors: {baseline} before the flood, at most {during} during it");
    drop(flood);
    stop(daemon);

    assert!(
        receipts.iter().all(|r| r["status"] == "success"),
        "{receipts:?}"
    );
    // Caps: 64 on the admin listener, 256 on the emulator (one more waits for a slot each).
    let bound = baseline + 64 + 256 + 2 + 40;
    assert!(
        during <= bound,
        "the daemon held up to {during} descriptors during the flood (before: {baseline}, bound {bound})"
    );
}

/// M2: a client that sends its body slowly is never cut, by the connection cap or by the
/// header-read timeout; idle connections are closed by that timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_outlives_the_connection_cap_and_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(
        ([127, 0, 0, 1], 0).into(),
        &dir.path().join("platform"),
        EmulatorConfig {
            processing_delay_ms: 10,
            server: ServerConfig {
                max_connections: 2,
                header_read_timeout_secs: 1,
            },
            ..EmulatorConfig::default()
        },
    )
    .await
    .unwrap();
    emu.ensure_dataset(DATASET, "d").await.unwrap();
    let api = client(&emu.base_url());
    let batch = api
        .create_batch(&CreateBatch::new(DATASET, Format::Json))
        .await
        .unwrap();
    let body = jsonl(0, 2000);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    tx.unbounded_send(Ok(first.to_vec())).unwrap();
    let upload = {
        let api = api.clone();
        let id = batch.id.clone();
        let len = body.len() as u64;
        tokio::spawn(async move {
            api.put_file(
                &id,
                DATASET,
                "slow.json",
                batchdrop::api::Body::stream(rx),
                len,
            )
            .await
        })
    };
    // Counted as the gateway lets the request through, before its body is read.
    eventually(30, "the upload's request is in flight", || {
        let requests = emu.stats().requests;
        async move { (requests >= 2).then_some(()) }
    })
    .await;

    // Idle connections over the cap of 2: each newcomer pushes out the oldest idle one (the
    // upload's connection is asked too, and goes on).
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(emu.local_addr()).unwrap())
        .collect();
    let addr = emu.local_addr();
    eventually(
        30,
        "a new request is served beside the upload",
        || async move { (get_status(addr, "/emulator/stats").await == Some(200)).then_some(()) },
    )
    .await;
    // Every idle connection ends: pushed out, or timed out waiting for its headers.
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!(conn.read(&mut buf), Ok(0) | Err(_)),
            "an idle connection stayed open"
        );
    }
    // The body's second half, after longer than the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tx.unbounded_send(Ok(rest.to_vec())).unwrap();
    drop(tx);
    upload.await.unwrap().expect("the slow upload completes");
    let done = complete_and_wait(&api, &batch.id, 30).await;
    assert_eq!(done.status, BatchStatus::Success, "{:?}", done.errors);
    assert_eq!(records_in_batch(&api, &batch.id).await, 2000);
    emu.shutdown().await;
}

/// Completes a batch and waits (up to `secs`) until it succeeded or failed.
async fn complete_and_wait(
    api: &batchdrop::api::ApiClient,
    id: &str,
    secs: u64,
) -> batchdrop::api::BatchInfo {
    api.batch_action(id, BatchAction::Complete).await.unwrap();
    eventually(secs, "the batch is processed", || async move {
        let b = api.get_batch(id).await.ok()??;
        matches!(b.status, BatchStatus::Success | BatchStatus::Failed).then_some(b)
    })
    .await
}

fn no_umask() {
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0) };
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// M3 (and M4 on the embedded platform): only the daemon's own token, kept 0600 in a 0700
/// state dir, reaches the embedded platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_platform_takes_only_its_own_token_kept_from_other_users() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    let daemon = spawn(
        &["run", "--config", config.to_str().unwrap()],
        &dir.path().join("daemon.log"),
        &[],
        no_umask,
    );
    let url = written(&dir.path().join("state/embedded-url")).await;
    write_atomic(&dir.path().join("drop/a.json"), jsonl(0, 3).as_bytes());
    let receipts = wait_receipts(&dir.path().join("drop/_archive"), 1, 60).await;
    let batch = receipts[0]["batch"].as_str().unwrap().to_owned();
    let state = dir.path().join("state");
    let token_file = state.join("embedded-token");
    let modes = (
        mode(&state),
        mode(&token_file),
        mode(&state.join("platform")),
    );

    // A stranger: any token that is not the daemon's.
    let stranger = client_with_token(&url, "embedded");
    let list = stranger
        .find_batches(&batchdrop::api::BatchQuery::default())
        .await;
    let get = stranger.get_batch(&batch).await;
    let abort = stranger.batch_action(&batch, BatchAction::Abort).await;
    let revert = stranger.batch_action(&batch, BatchAction::Revert).await;
    let files = stranger.list_batch_files(&batch).await;
    // A token from the embedded platform's own IMS endpoint does no better.
    let issued = reqwest::Client::new()
        .post(format!("{url}/ims/token/v3"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "x"),
            ("client_secret", "y"),
        ])
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let issued = issued["access_token"].as_str().unwrap().to_owned();
    let with_issued = client_with_token(&url, &issued).get_batch(&batch).await;
    let owner = client_with_token(&url, &std::fs::read_to_string(&token_file).unwrap());
    let seen = owner.get_batch(&batch).await;
    stop(daemon);

    assert_eq!(
        modes,
        (0o700, 0o600, 0o700),
        "state dir, token, platform data"
    );
    for (what, status) in [
        ("list", list.err().and_then(|e| e.http_status())),
        ("get", get.err().and_then(|e| e.http_status())),
        ("abort", abort.err().and_then(|e| e.http_status())),
        ("revert", revert.err().and_then(|e| e.http_status())),
        ("files", files.err().and_then(|e| e.http_status())),
        ("issued", with_issued.err().and_then(|e| e.http_status())),
    ] {
        assert!(
            matches!(status, Some(401 | 403)),
            "{what} with a stranger's token: {status:?}"
        );
    }
    let seen = seen.unwrap().expect("the batch exists");
    assert_eq!(
        seen.status,
        BatchStatus::Success,
        "neither aborted nor reverted"
    );
}

fn strict_gateway(ims_clients: Vec<ImsClient>, accept_issued_tokens: bool) -> EmulatorConfig {
    EmulatorConfig {
        gateway: GatewayConfig {
            tokens: vec!["the-only-token".into()],
            accept_issued_tokens,
            ..GatewayConfig::default()
        },
        ims: ImsConfig {
            clients: ims_clients,
            ..ImsConfig::default()
        },
        ..EmulatorConfig::default()
    }
}

/// A token from `POST /ims/token/v3` (`client_id`/`client_secret`), and what the gateway
/// answers to a Catalog call with it.
async fn issued_token_status(emu: &Emulator, id: &str, secret: &str) -> (u16, Option<u16>) {
    let answer = reqwest::Client::new()
        .post(format!("{}/ims/token/v3", emu.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let issued = answer.status().as_u16();
    let token = answer.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .map(str::to_owned);
    let Some(token) = token else {
        return (issued, None);
    };
    let status = match client_with_token(&emu.base_url(), &token)
        .get_dataset(DATASET)
        .await
    {
        Ok(_) => 200,
        Err(e) => e.http_status().unwrap_or(0),
    };
    (issued, Some(status))
}

/// M4: the emulator's IMS issues tokens to anyone when it has no clients; they must not pass a
/// gateway allowlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_emulators_ims_do_not_pass_a_gateway_allowlist() {
    let client = ImsClient {
        client_id: "batchdrop".into(),
        client_secret: "s3cret".into(),
        scopes: Vec::new(),
    };
    let mut outcomes = Vec::new();
    for (name, config) in [
        (
            "allowlist, no IMS clients",
            strict_gateway(Vec::new(), false),
        ),
        (
            "allowlist, IMS clients",
            strict_gateway(vec![client], false),
        ),
        (
            "allowlist, accept_issued_tokens",
            strict_gateway(Vec::new(), true),
        ),
        ("no allowlist (the default)", EmulatorConfig::default()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let emu = Emulator::start(([127, 0, 0, 1], 0).into(), dir.path(), config)
            .await
            .unwrap();
        emu.ensure_dataset(DATASET, "d").await.unwrap();
        let anyone = issued_token_status(&emu, "anyone", "anything").await;
        let listed = issued_token_status(&emu, "batchdrop", "s3cret").await;
        let static_token = client_with_token(&emu.base_url(), "the-only-token")
            .get_dataset(DATASET)
            .await
            .is_ok();
        outcomes.push((name, anyone, listed, static_token));
        emu.shutdown().await;
    }
    assert_eq!(
        outcomes,
        [
            // Anyone gets a token, which the gateway refuses.
            (
                "allowlist, no IMS clients",
                (200, Some(401)),
                (200, Some(401)),
                true
            ),
            // IMS asks for the secret: only its clients get a token, which then passes.
            (
                "allowlist, IMS clients",
                (400, None),
                (200, Some(200)),
                true
            ),
            (
                "allowlist, accept_issued_tokens",
                (200, Some(200)),
                (200, Some(200)),
                true
            ),
            (
                "no allowlist (the default)",
                (200, Some(200)),
                (200, Some(200)),
                true
            ),
        ]
    );
}

/// A listener standing for a proxy: counts the connections it gets, answers none.
fn fake_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (url, hits)
}

/// M5: with every proxy variable pointing at a listener we control, the daemon ingests on
/// loopback (an http://127.0.0.1 endpoint, and the embedded platform) and nothing reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_in_the_environment_never_see_loopback_traffic() {
    let (proxy, hits) = fake_proxy();
    let envs: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .iter()
    .map(|v| (*v, proxy.as_str()))
    .collect();
    let env = Env::new().await;
    let url_config = env.write_config("", "");
    let embedded_dir = tempfile::tempdir().unwrap();
    for (config, drop_dir) in [
        (url_config, env.drop_dir()),
        (
            embedded_config(embedded_dir.path()),
            embedded_dir.path().join("drop"),
        ),
    ] {
        let daemon = spawn(
            &["run", "--config", config.to_str().unwrap()],
            &config.with_file_name("daemon.log"),
            &envs,
            || {},
        );
        write_atomic(&drop_dir.join("p.json"), jsonl(0, 4).as_bytes());
        let receipts = wait_receipts(&drop_dir.join("_archive"), 1, 60).await;
        stop(daemon);
        assert_eq!(receipts[0]["status"], "success", "{receipts:?}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the proxy was asked to carry loopback traffic"
    );
}

/// M6: 1 GiB without a newline, uploaded to the real emulator binary: one failed row, and the
/// emulator's memory stays far below the file's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_record_without_a_newline_fails_its_row_in_flat_memory() {
    const SIZE: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("emulator.toml");
    std::fs::write(
        &config,
        format!(
            "processing_delay_ms = 10\n[limits]\nmax_put_bytes = {}\n[[datasets]]\nid = \"{DATASET}\"\n",
            SIZE + 1
        ),
    )
    .unwrap();
    let mut emulator = spawn(
        &[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("platform").to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &dir.path().join("emulator.log"),
        &[],
        || {},
    );
    let mut first_line = String::new();
    BufReader::new(emulator.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let url = first_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first_line:?}"))
        .to_owned();
    let pid = emulator.id();
    let before = peak_rss(pid);

    let api = client(&url);
    let mut create = CreateBatch::new(DATASET, Format::Json);
    create.enable_error_diagnostics = true;
    let batch = api.create_batch(&create).await.unwrap();
    // `{"a": "xxxx…` for 1 GiB, generated as it is sent.
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let head = bytes::Bytes::from_static(b"{\"a\": \"");
    let parts = std::iter::once(head.clone()).chain((0..SIZE / (1 << 20)).map(move |i| {
        if i == 0 {
            chunk.slice(head.len()..)
        } else {
            chunk.clone()
        }
    }));
    let body =
        batchdrop::api::Body::stream(futures::stream::iter(parts.map(Ok::<_, std::io::Error>)));
    api.put_file(&batch.id, DATASET, "huge.json", body, SIZE)
        .await
        .unwrap();
    let done = complete_and_wait(&api, &batch.id, 300).await;
    let failed = api.failed_rows(&batch.id).await.unwrap();
    let peak = peak_rss(pid);
    eprintln!("emulator peak RSS: {before} bytes at start, {peak} after the 1 GiB record");
    stop(emulator);

    assert_eq!(done.status, BatchStatus::Failed, "{:?}", done.raw);
    let text = serde_json::Value::from(failed).to_string();
    assert!(
        text.contains("row 1") && text.contains("1073741824 bytes long"),
        "{text}"
    );
    assert!(
        peak < before + 200 * 1024 * 1024,
        "the emulator's peak memory went from {before} to {peak} bytes"
    );
}
