//! The platform misbehaving: a flaky platform (5xx, 429/503 with `Retry-After`, reset
//! connections, latency), and the platform process killed and restarted mid-upload. The
//! daemon rides both out; nothing is quarantined, nothing doubled.

use super::*;

/// Every batch's events, read from the state database after the daemon stopped.
async fn batch_events(state_dir: &Path) -> Vec<(i64, Vec<batchdrop::store::EventRow>)> {
    let store = Store::open_shared(state_dir).await.unwrap();
    let mut out = Vec::new();
    let mut id = 1;
    while store.batch(id).await.is_ok() {
        out.push((id, store.events_for_batch(id).await.unwrap()));
        id += 1;
    }
    store.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_platform_everything_exactly_once_nothing_quarantined_and_retry_after_honoured() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("flaky_platform");
    let mut rng = StdRng::seed_from_u64(seed);
    let retry_after_secs = 1;
    let env = Env::with_emulator(EmulatorConfig {
        faults: FaultConfig {
            seed,
            http_500_probability: 0.08,
            http_503_probability: 0.08,
            http_429_probability: 0.08,
            connection_reset_probability: 0.08,
            retry_after_secs,
            latency_probability: 0.1,
            latency_ms: 300,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "flaky_platform");
    let config = env.write_config(
        "large_file_threshold = 8192\nchunk_size = 2048",
        "max_files = 12",
    );
    let drop = env.drop_dir();
    let mut w = Workload::new(drop.clone());
    w.small(&mut rng, if soak() { 400 } else { 60 });
    w.json("large0.json", 600);
    w.json("large1.json", 600);

    let mut daemon = spawn_daemon(&config, &[]);
    wait_archived(&drop, w.files.len(), 240, &mut daemon).await;
    daemon.stop().await;

    assert_all_archived(&drop, &w.files);
    // The daemon's requests only: the test's own reads below may come back within a
    // Retry-After the daemon was given (a listing it asked for and did without, say).
    let stats = env.emulator.stats();
    let platform = Platform::new(&env.emulator.base_url());
    platform.ingested().await.assert_exactly(&w.files);
    assert_eq!(stats.duplicate_acknowledged_chunks, 0, "{stats:?}");
    // This once caught a batch driven again from a stale list of due batches, a few ms after
    // its drive had been told to wait (fixed: the row is re-read once the batch is claimed).
    assert_eq!(
        stats.early_retries, 0,
        "requests repeated before their Retry-After passed: {stats:?}"
    );
    let f = &stats.faults_injected;
    assert!(
        f.http_429 + f.http_503 > 0 && f.connection_reset > 0 && f.http_500 > 0,
        "faults were injected: {f:?}"
    );

    // The daemon's side: after a 429 or 503 with Retry-After, the batch's next step waits it.
    let mut retries = 0;
    let mut waited = Vec::new();
    for (batch, events) in batch_events(&env.state_dir()).await {
        for pair in events.windows(2) {
            let (e, next) = (&pair[0], &pair[1]);
            if e.kind != "retry" {
                continue;
            }
            retries += 1;
            let detail = e.detail.as_deref().unwrap_or_default();
            if detail.contains("HTTP 429") || detail.contains("HTTP 503") {
                let gap = next.at - e.at;
                waited.push(gap);
                assert!(
                    gap >= retry_after_secs as i64 * 1000 - 100,
                    "batch #{batch}: next step {gap} ms after \"{detail}\""
                );
            }
        }
    }
    waited.sort();
    println!(
        "[flaky_platform] {} files, {} faults injected {f:?} over {} requests; {retries} retries \
         recorded by the daemon, {} after a Retry-After (waits from {:?} to {:?} ms); emulator {stats:?}",
        w.files.len(),
        f.total(),
        stats.requests,
        waited.len(),
        waited.first(),
        waited.last()
    );
}

/// A free port on 127.0.0.1 (bound, then released for the emulator to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `batchdrop emulator` as its own process, on a fixed port and data dir, so that it can be
/// killed and started again where the daemon expects it.
struct EmulatorProc {
    port: u16,
    data_dir: PathBuf,
    config: PathBuf,
    proc: Option<Proc>,
}

impl EmulatorProc {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchdrop"));
        cmd.arg("emulator")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config);
        let log = self.config.with_file_name("emulator.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        self.proc = Some(Proc {
            child: cmd.spawn().unwrap(),
            log,
            log_start: 0,
            ready_line: None,
        });
        let http = reqwest::Client::new();
        let url = format!("{}/emulator/stats", self.url());
        eventually(30, "the emulator answers", || {
            let r = http.get(&url).send();
            async move { r.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    async fn stats(&self) -> batchdrop_emulator::EmulatorStats {
        reqwest::get(format!("{}/emulator/stats", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// A daemon config for a platform at `url` (the `support` one points at the in-process emulator).
fn config_for(dir: &Path, url: &str, upload_extra: &str, watch_extra: &str) -> PathBuf {
    std::fs::write(dir.join("token"), "test-token\n").unwrap();
    std::fs::create_dir_all(dir.join("drop")).unwrap();
    ConfigFile::fast(url)
        .unset("probe_interval")
        .merge_text("upload", upload_extra)
        .merge_text("watch", watch_extra)
        .write_to(&dir.join("config.toml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_killed_and_restarted_mid_upload_the_daemon_rides_it_out() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("platform_restarts");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let _keep = KeepOnPanic(dir.path().to_owned(), "platform_restarts");
    let emu_config = dir.path().join("emulator.toml");
    std::fs::write(
        &emu_config,
        // Some latency, so that uploads are long enough to be cut.
        format!(
            "[[datasets]]\nid = \"{DATASET}\"\nname = \"test\"\n\
             [faults]\nseed = {seed}\nlatency_probability = 0.5\nlatency_ms = 20\n"
        ),
    )
    .unwrap();
    let mut emu = EmulatorProc {
        port: free_port(),
        data_dir: dir.path().join("platform"),
        config: emu_config,
        proc: None,
    };
    emu.start().await;
    let config = config_for(
        dir.path(),
        &emu.url(),
        "large_file_threshold = 8192\nchunk_size = 1024",
        "max_files = 20",
    );
    let drop = dir.path().join("drop");
    let mut w = Workload::new(drop.clone());
    w.small(&mut rng, 40);
    w.json("large0.json", 900);
    let mut daemon = spawn_daemon(&config, &[]);

    let restarts = if soak() { 20 } else { 5 };
    let mut duplicate_chunks = 0;
    let mut requests = 0;
    let state = Store::open_shared(&dir.path().join("state")).await.unwrap();
    let mut mid_upload = 0;
    for i in 0..restarts {
        let n = rng.random_range(5..20);
        w.small(&mut rng, n);
        w.json(&format!("large{}.json", i + 1), 900);
        if i % 2 == 0 {
            // Aimed: once a large file is part way through its chunks.
            let large = format!("large{}.json", i + 1);
            wait_file(&state, &large, "mid-upload", |f| {
                f.uploaded_bytes > 0 && f.state == FileState::Batched
            })
            .await;
            mid_upload += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1200))).await;
        }
        let stats = emu.stats().await;
        duplicate_chunks += stats.duplicate_acknowledged_chunks;
        requests += stats.requests;
        emu.kill9();
        let down = rng.random_range(100..1500);
        let snap = snapshot(&dir.path().join("state")).await;
        println!(
            "[platform_restarts] emulator SIGKILLed ({} requests served), down {down} ms; daemon: {snap}",
            stats.requests
        );
        tokio::time::sleep(Duration::from_millis(down)).await;
        assert!(
            daemon.alive(),
            "the daemon rides it out; log {}",
            daemon.log.display()
        );
        emu.start().await;
    }

    state.close().await;
    wait_archived(&drop, w.files.len(), 180, &mut daemon).await;
    daemon.stop().await;
    let stats = emu.stats().await;
    duplicate_chunks += stats.duplicate_acknowledged_chunks;
    requests += stats.requests;
    assert_all_archived(&drop, &w.files);
    Platform::new(&emu.url())
        .ingested()
        .await
        .assert_exactly(&w.files);
    assert_eq!(duplicate_chunks, 0, "no acknowledged chunk sent twice");
    println!(
        "[platform_restarts] {restarts} emulator kills ({mid_upload} aimed at a large file mid-upload); {} files, {} records exactly once; {requests} requests over all its lives",
        w.files.len(),
        w.files.values().sum::<u64>()
    );
    emu.kill9();
}
