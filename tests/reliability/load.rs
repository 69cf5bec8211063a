//! Load: thousands of small files dropped at once, all ingested in batches of at most 1,500,
//! peak memory reported.

use super::*;

/// Receipts below `dir`, counted by name only (cheap enough to poll with thousands).
fn count_receipts(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else if name.to_string_lossy().ends_with(".receipt.json") {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_thousands_of_small_files_dropped_at_once_all_ingested_in_batches_of_at_most_1500() {
    let _one_at_a_time = SERIAL.lock().await;
    let n: usize = if soak() { 50_000 } else { 5_000 };
    let env = Env::new().await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "load");
    let config = env.write_config("", "max_wait = \"1s\"");
    let drop = env.drop_dir();
    let mut daemon = spawn_daemon(&config, &[("RUST_LOG", "batchdrop=info")]);
    wait_log(&daemon.log, "batchdrop running", 30).await;

    // Dropped at once, while it runs: far more events than inotify queues by default.
    let started = Instant::now();
    let mut expected = BTreeMap::new();
    for i in 0..n {
        let name = format!("f{i:06}.json");
        write_atomic(&drop.join(&name), jsonl(i, 1).as_bytes());
        expected.insert(name, 1u64);
    }
    let dropped = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(if soak() { 3600 } else { 300 });
    let mut peak_kib = 0;
    loop {
        peak_kib = peak_kib.max(daemon.peak_rss_kib().unwrap_or(0));
        let done = count_receipts(&env.archive()) + count_receipts(&env.failed());
        if done >= n {
            break;
        }
        assert!(
            daemon.alive(),
            "the daemon exited; log {}",
            daemon.log.display()
        );
        assert!(
            Instant::now() < deadline,
            "{done} of {n} receipts; log {}",
            daemon.log.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    peak_kib = peak_kib.max(daemon.peak_rss_kib().unwrap_or(0));
    daemon.stop().await;

    let platform = Platform::new(&env.emulator.base_url());
    let ingested = platform.ingested().await;
    ingested.assert_exactly(&expected);
    let sizes: Vec<usize> = ingested.batches.values().copied().collect();
    assert!(sizes.iter().all(|&s| s <= 1500), "batch sizes {sizes:?}");
    assert_all_archived(&drop, &expected);
    println!(
        "[load] {n} files dropped in {dropped:.1?}, all ingested and archived {took:.1?} after the \
         first; {} batches of {sizes:?} files; peak RSS of the daemon (VmHWM) {} MiB",
        sizes.len(),
        peak_kib / 1024
    );
}
