//! The crash loop: the real binary killed with SIGKILL, again and again, at random instants
//! and at the named crash points, while files keep arriving; every file ends up ingested
//! exactly once. The harness (processes, workload, the platform's view) is the parent's.

use super::*;

/// Instants named in the code (`src/crashpoint.rs`) where a kill is most likely to break
/// something; the loop mixes them with kills at random times.
const CRASH_POINTS: &[&str] = &[
    "create-sent",
    "mid-body",
    "put-sent",
    "chunk-sent",
    "chunk-recorded",
    "complete-sent",
    "polling",
    "archive-moved",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_sigkill_at_random_instants_ingests_everything_exactly_once() {
    let _one_at_a_time = SERIAL.lock().await;
    let seed = seed("crash_loop");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = Env::new().await;
    let _keep = KeepOnPanic(env.dir.path().to_owned(), "crash_loop");
    // Small batches and chunks, so that kills land in every phase of many batches.
    let config = env.write_config(
        "large_file_threshold = 8192\nchunk_size = 1024",
        "max_files = 40",
    );
    let drop = env.drop_dir();
    let mut w = Workload::new(drop.clone());
    let (kills, per_round, initial) = if soak() { (120, 25, 200) } else { (24, 10, 80) };
    w.small(&mut rng, initial);
    for i in 0..2 {
        w.json(&format!("large{i}.json"), 700); // ~24 KB: a dozen chunks
    }
    // TODO(replay sidecars): once `.replay` sidecars land, drop a few here (replacing batches
    // ingested in earlier rounds) and check the replaced batches end inactive.

    let mut by_point = BTreeMap::<String, usize>::new();
    let mut interrupted = BTreeMap::<String, usize>::new();
    for round in 0..kills {
        let point = rng.random_bool(0.4).then(|| {
            format!(
                "{}:{}",
                CRASH_POINTS[rng.random_range(0..CRASH_POINTS.len())],
                rng.random_range(1..4)
            )
        });
        let env_vars: Vec<(&str, &str)> = match &point {
            Some(p) => vec![("BATCHDROP_CRASH_AT", p.as_str())],
            None => vec![],
        };
        let mut daemon = spawn_daemon(&config, &env_vars);
        // A random instant; a round aimed at a named point gives it longer to get there.
        let delay = if point.is_some() {
            4000
        } else {
            rng.random_range(50..1500)
        };
        // Files keep arriving while it runs; a large one now and then.
        let arrive_at = rng.random_range(0..delay.min(1000));
        tokio::time::sleep(Duration::from_millis(arrive_at)).await;
        let n = rng.random_range(0..per_round);
        w.small(&mut rng, n);
        if round % 4 == 1 {
            w.json(&format!("large{}.json", 10 + round), 500);
        }
        let started = Instant::now();
        while daemon.alive() && started.elapsed() < Duration::from_millis(delay - arrive_at) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let how = if daemon.alive() {
            daemon.kill9();
            let ms = arrive_at + started.elapsed().as_millis() as u64;
            match &point {
                Some(p) => format!("SIGKILL after {ms} ms ({p} not reached)"),
                None => format!("SIGKILL after {ms} ms"),
            }
        } else {
            let status = daemon.child.wait().unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "died only by the crash point; log {}",
                daemon.log.display()
            );
            let p = point.clone().unwrap();
            *by_point.entry(p.clone()).or_default() += 1;
            format!("crash point {p}")
        };
        let snap = snapshot(&env.state_dir()).await;
        for state in ["sealed", "creating", "loading", "completing", "processing"] {
            if snap.contains(&format!("\"{state}\"")) {
                *interrupted.entry(state.to_owned()).or_default() += 1;
            }
        }
        println!("[crash_loop] kill {:>3}: {how:<28} {snap}", round + 1);
    }

    let mut last = spawn_daemon(&config, &[]);
    wait_archived(&drop, w.files.len(), 180, &mut last).await;
    last.stop().await;
    assert_all_archived(&drop, &w.files);
    let platform = Platform::new(&env.emulator.base_url());
    let ingested = platform.ingested().await;
    ingested.assert_exactly(&w.files);
    let stats = env.emulator.stats();
    assert_eq!(
        stats.duplicate_acknowledged_chunks, 0,
        "no acknowledged chunk sent twice: {stats:?}"
    );
    println!(
        "[crash_loop] {kills} kills ({} at named crash points: {by_point:?}); batches in flight \
         at a kill, by state: {interrupted:?}; {} files, {} records, {} successful batches, \
         platform batches by status {:?}; emulator {stats:?}",
        by_point.values().sum::<usize>(),
        w.files.len(),
        w.files.values().sum::<u64>(),
        ingested.batches.len(),
        ingested.statuses
    );
}
