//! Resources running out: a full state dir (a tmpfs it mounts), an immutable archive folder,
//! a state database locked by another process, an exhausted inotify watch limit. Scenarios
//! that need root or namespaces go through the parent's `skip`.

use super::*;

/// Runs a command, true when it exited 0.
fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Undoes a mount (lazily, so a busy one goes too) when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        run("umount", &["-l", &self.0.to_string_lossy()]);
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    // The last bytes, one at a time.
    while f.write(&[0]).is_ok_and(|k| k == 1) {
        n += 1;
    }
    let _ = f.flush();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_disk_full_stops_intake_says_why_loses_nothing_and_recovers() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("disk_full");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::new().await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "disk_full");
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    if !run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=48m",
            "tmpfs",
            &state.to_string_lossy(),
        ],
    ) {
        skip(
            "disk_full",
            "cannot mount a tmpfs on the state dir (needs root and mount rights)",
        );
        return;
    }
    let _mounted = Mounted(state.clone());
    let config = env.write_config("", "");
    let drop = env.drop_dir();
    let mut w = Workload::new(drop.clone());
    w.small(&mut rng, 20);
    let mut daemon = spawn_daemon(&config, &[]);
    wait_archived(&drop, 20, 60, &mut daemon).await;

    // Fill the disk while files are in flight (taken, not finished): their next writes hit
    // SQLITE_FULL.
    let store = Store::open_shared(&state).await.unwrap();
    w.small(&mut rng, 20);
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .file_counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.2)
        .sum::<i64>()
        < 25
    {
        assert!(Instant::now() < deadline, "files taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let in_flight = snapshot(&state).await;
    let filler = state.join("filler");
    let filled = fill(&filler);
    store.close().await;
    let before: BTreeMap<String, u64> = w.files.clone();
    w.small(&mut rng, 20);
    let log = wait_log(&daemon.log, "not taking new files", 60).await;
    let why = log
        .lines()
        .find(|l| l.contains("not taking new files"))
        .unwrap()
        .to_owned();
    // Long enough for the new files to have settled and been taken, were intake open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        daemon.alive(),
        "the daemon stays up; log {}",
        daemon.log.display()
    );
    let archived = receipts_by_name(&env.archive());
    for name in w.files.keys().filter(|n| !before.contains_key(*n)) {
        assert!(drop.join(name).exists(), "{name} waits in the drop folder");
        assert!(
            !archived.contains_key(name),
            "{name} was not taken while the disk was full"
        );
    }

    std::fs::remove_file(&filler).unwrap();
    wait_archived(&drop, w.files.len(), 120, &mut daemon).await;
    let log = wait_log(&daemon.log, "taking new files again", 30).await;
    daemon.stop().await;
    assert_all_archived(&drop, &w.files);
    Platform::new(&env.emulator.base_url())
        .ingested()
        .await
        .assert_exactly(&w.files);
    let after = log
        .lines()
        .find(|l| l.contains("taking new files again"))
        .unwrap_or_default()
        .to_owned();
    println!(
        "[disk_full] filled the 48 MiB state dir ({filled} bytes) with {in_flight}; the daemon said: {why}"
    );
    println!("[disk_full] after freeing it: {after}");
    println!(
        "[disk_full] writes refused with SQLITE_FULL meanwhile, reported and waited out: {}",
        log.matches("disk is full").count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_unwritable_files_wait_in_place_the_rest_flows_and_all_finish_once_it_is_back() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("archive_unwritable");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::new().await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "archive_unwritable");
    // broken.json shares a batch with good files: isolate sends them again without it (the
    // platform does not say which file held the bad row).
    let config = env.write_config("", "on_batch_failure = \"isolate\"");
    let drop = env.drop_dir();
    let mut w = Workload::new(drop.clone());
    w.small(&mut rng, 5);
    let mut daemon = spawn_daemon(&config, &[]);
    wait_archived(&drop, 5, 60, &mut daemon).await;

    // Root ignores permissions: make the archive folder immutable instead. Every folder of the
    // archive tree, not just its root: a file dropped into `sub1/` is archived into the
    // `_archive/sub1/` that an earlier file may already have created.
    let archive = env.archive();
    let mut folders = vec![archive.clone()];
    let mut i = 0;
    while i < folders.len() {
        for entry in std::fs::read_dir(&folders[i]).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            }
        }
        i += 1;
    }
    struct Immutable(Vec<PathBuf>);
    impl Drop for Immutable {
        fn drop(&mut self) {
            for folder in &self.0 {
                run("chattr", &["-i", &folder.to_string_lossy()]);
            }
        }
    }
    let mut immutable = Immutable(Vec::new());
    for folder in folders {
        if !run("chattr", &["+i", &folder.to_string_lossy()]) {
            skip(
                "archive_unwritable",
                "chattr +i is not available on this filesystem",
            );
            return;
        }
        immutable.0.push(folder);
    }
    let before = w.files.clone();
    w.small(&mut rng, 10);
    write_atomic(&drop.join("broken.json"), b"{\"id\": 1}\n{not json\n");

    // The bad file still reaches the failed folder, and the good ones reach the platform.
    let failed = env.failed();
    eventually(60, "broken.json's receipt", || {
        let ok = failed.join("broken.json.receipt.json").exists();
        async move { ok.then_some(()) }
    })
    .await;
    let platform = Platform::new(&env.emulator.base_url());
    let fresh: Vec<String> = w
        .files
        .keys()
        .filter(|n| !before.contains_key(*n))
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ingested = platform.ingested().await;
        if fresh.iter().all(|n| ingested.by_name.contains_key(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new files reach the platform"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = wait_log(&daemon.log, "file(s) for now", 30).await;
    let why = log
        .lines()
        .find(|l| l.contains("file(s) for now"))
        .unwrap()
        .to_owned();
    for name in &fresh {
        assert!(drop.join(name).exists(), "{name} waits in the drop folder");
    }
    assert!(daemon.alive());

    std::mem::drop(immutable);
    wait_archived(&drop, w.files.len() + 1, 60, &mut daemon).await;
    daemon.stop().await;
    std::fs::remove_file(failed.join("broken.json.receipt.json")).unwrap();
    std::fs::remove_file(failed.join("broken.json")).unwrap();
    assert_all_archived(&drop, &w.files);
    platform.ingested().await.assert_exactly(&w.files);
    println!("[archive_unwritable] while the archive was immutable the daemon said: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_database_locked_by_another_process_the_daemon_waits_says_why_and_loses_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    use sqlx::ConnectOptions;
    let seed = seed("sqlite_locked");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::new().await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "sqlite_locked");
    let config = env.write_config("", "");
    let drop = env.drop_dir();
    let mut w = Workload::new(drop.clone());
    w.small(&mut rng, 10);
    let mut daemon = spawn_daemon(&config, &[]);
    wait_archived(&drop, 10, 60, &mut daemon).await;

    // Another process (this test) takes the database's write lock and keeps it.
    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(env.state_dir().join("batchdrop.db"))
        .connect()
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    w.small(&mut rng, 10);
    let log = wait_log(&daemon.log, "locked by another process", 90).await;
    let why = log
        .lines()
        .find(|l| l.contains("locked by another process"))
        .unwrap()
        .to_owned();
    assert!(
        daemon.alive(),
        "the daemon waits; log {}",
        daemon.log.display()
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    std::mem::drop(other);

    wait_archived(&drop, w.files.len(), 120, &mut daemon).await;
    daemon.stop().await;
    assert_all_archived(&drop, &w.files);
    Platform::new(&env.emulator.base_url())
        .ingested()
        .await
        .assert_exactly(&w.files);
    println!("[sqlite_locked] while another process held the write lock the daemon said: {why}");
}

/// Starts the daemon in a user namespace of its own whose inotify watch limit is `limit`
/// (`/proc/sys/user/max_inotify_watches` is per user namespace): the kernel's real limit,
/// exhausted for this daemon only. None where user namespaces are not available.
fn spawn_with_inotify_limit(config: &Path, limit: u32) -> Option<Proc> {
    if !run("unshare", &["--user", "--map-root-user", "true"]) {
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_batchdrop"));
    Some(spawn_cmd(cmd, config, &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inotify_watch_limit_exhausted_falls_back_to_scanning_and_says_so() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("inotify_limit");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::new().await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "inotify_limit");
    // Only events or the fallback can find new files: the periodic full rescan is an hour away.
    let config = env.write_config("", "rescan_interval = \"1h\"");
    let drop = env.drop_dir();
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(drop.join(d)).unwrap();
    }
    let mut w = Workload::new(drop.clone());

    // 1. Enough watches at start (the folder and its three sub-folders), not for what comes
    //    later: new sub-folders exhaust the limit while the daemon runs.
    let Some(mut daemon) = spawn_with_inotify_limit(&config, 5) else {
        skip(
            "inotify_limit",
            "no user namespaces here (unshare --user fails)",
        );
        return;
    };
    w.json("a/first.json", 3);
    wait_archived(&drop, 1, 60, &mut daemon).await;
    for d in ["d", "e", "f", "g"] {
        std::fs::create_dir_all(drop.join(d)).unwrap();
    }
    let log = wait_log(&daemon.log, "falling back to scanning", 30).await;
    let later = log
        .lines()
        .find(|l| l.contains("falling back to scanning"))
        .unwrap()
        .to_owned();
    for d in ["d", "e", "f", "g"] {
        let n = rng.random_range(1..10);
        w.json(&format!("{d}/late.json"), n);
    }
    wait_archived(&drop, w.files.len(), 60, &mut daemon).await;
    daemon.stop().await;

    // 2. Not even enough at start.
    let mut daemon = spawn_with_inotify_limit(&config, 2).unwrap();
    let log = wait_log(&daemon.log, "cannot watch for events", 30).await;
    let at_start = log
        .lines()
        .find(|l| l.contains("cannot watch for events"))
        .unwrap()
        .to_owned();
    assert!(at_start.contains("falling back to scanning"), "{at_start}");
    for d in ["a", "b", "c", "g"] {
        w.json(&format!("{d}/restart.json"), 2);
    }
    wait_archived(&drop, w.files.len(), 60, &mut daemon).await;
    daemon.stop().await;
    assert_all_archived(&drop, &w.files);
    Platform::new(&env.emulator.base_url())
        .ingested()
        .await
        .assert_exactly(&w.files);
    println!("[inotify_limit] limit hit while running: {later}");
    println!("[inotify_limit] limit hit at start: {at_start}");
}
