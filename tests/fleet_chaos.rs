//! Fleet mode under failure (issue #22): three real `batchdrop` daemons on one shared drop
//! folder, one emulator, one PostgreSQL cluster of the test's own. Files keep arriving while
//! instances are SIGKILLed at random and restarted, one is SIGSTOPped past its lease and then
//! continued, and the database is stopped for longer than a lease and started again under the
//! three (each says it is not ready meanwhile, and none exits). At the end, checked from the platform's side: every record is in exactly
//! one successful batch, no batch is left open, every file has exactly one receipt and left
//! the drop folder, and nothing went to the failed folder. Prints the failover figure: how
//! long the in-flight batches of a killed instance stayed with it before another took them.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use batchdrop::api::{BatchQuery, BatchStatus};
use support::postgres::Postgres;
use support::*;

const INSTANCES: usize = 3;
const FILES: usize = 200;
const RECORDS_PER_FILE: usize = 5;
/// Every 2 s one step: a SIGKILL and restart of a random instance, except one SIGSTOP and one
/// database outage (so 21 SIGKILLs).
const STEPS: usize = 23;
/// The shortest lease the config allows, so that takeovers happen within the test's time.
const LEASE: Duration = Duration::from_secs(2);
/// How long the database stays down: past every lease, so that all are up for the taking
/// when it comes back.
const OUTAGE: Duration = Duration::from_secs(5);

/// Instance `i`'s config: the shared drop folder, database and platform; a state dir (admin
/// address, logs) of its own.
fn instance_config(env: &Env, pg: &Postgres, i: usize) -> PathBuf {
    pg.instance_config(&env.write_config("", "mode = \"poll\""), i, LEASE)
}

/// Instance `config`, as the real binary (its log beside the config, shared by the three).
fn spawn(config: &Path) -> Child {
    spawn_daemon(config, &[], &[("RUST_LOG", "batchdrop=info")])
}

async fn admin_pool(pg: &Postgres) -> sqlx::PgPool {
    let options = pg
        .url()
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .password(pg.password());
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap()
}

/// The fleet id of the instance running as `pid`, once it joined.
async fn instance_of(pool: &sqlx::PgPool, pid: u32) -> Option<String> {
    sqlx::query_scalar("SELECT id FROM instances WHERE pid = $1")
        .bind(i64::from(pid))
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Batches in flight leased to `instance`; `None` while the database does not answer.
async fn leased_to(pool: &sqlx::PgPool, instance: &str) -> Option<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM batches WHERE lease_owner = $1
           AND state IN ('sealed', 'creating', 'loading', 'completing', 'processing')",
    )
    .bind(instance)
    .fetch_one(pool)
    .await
    .ok()
}

/// The `/readyz` status of instance `i`, at the admin address it wrote last; `None` while it
/// does not answer (starting, or the address is a killed predecessor's).
async fn readyz(env: &Env, i: usize) -> Option<u16> {
    let state_dir = env.state_dir().with_file_name(format!("state-{i}"));
    let addr = std::fs::read_to_string(state_dir.join("admin-addr")).ok()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// Waits until every instance answers `/readyz` with `status`.
async fn all_say(env: &Env, status: u16, what: &str) {
    eventually(60, what, || async {
        for i in 0..INSTANCES {
            if readyz(env, i).await != Some(status) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Stops the database under the running fleet for [`OUTAGE`] and starts it again: every
/// instance says it is not ready meanwhile, none exits, and all are ready again after.
/// Returns how long the fleet took to be ready again once the database was back.
async fn database_outage(env: &Env, pg: &Postgres, children: &mut [Child]) -> Duration {
    all_say(env, 200, "every instance ready before the outage").await;
    pg.stop_server();
    let stopped = Instant::now();
    all_say(
        env,
        503,
        "every instance not ready while the database is down",
    )
    .await;
    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    for child in children.iter_mut() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "an instance rides out a database outage"
        );
    }
    pg.start_server();
    let started = Instant::now();
    all_say(env, 200, "every instance ready again after the outage").await;
    for child in children.iter_mut() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "an instance stays up after a database outage"
        );
    }
    started.elapsed()
}

/// Every batch of the test's dataset, as the platform lists them.
async fn platform_batches(env: &Env) -> Vec<batchdrop::api::BatchInfo> {
    let mut all = Vec::new();
    loop {
        let page = env
            .api
            .find_batches(&BatchQuery {
                dataset_id: Some(DATASET.into()),
                limit: Some(100),
                start: Some(all.len() as u64),
                ..Default::default()
            })
            .await
            .unwrap();
        let last = page.len() < 100;
        all.extend(page);
        if last {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_survive_kills_a_pause_and_a_database_restart_with_every_record_once() {
    let pg = Postgres::start();
    let env = Env::new().await;
    let pool = admin_pool(&pg).await;
    let configs: Vec<PathBuf> = (0..INSTANCES)
        .map(|i| instance_config(&env, &pg, i))
        .collect();
    let mut children: Vec<Child> = configs.iter().map(|c| spawn(c)).collect();

    // Files arrive all along, one every 250 ms.
    let drop = env.drop_dir();
    let writer = tokio::spawn(async move {
        for n in 0..FILES {
            let body = jsonl(n * RECORDS_PER_FILE, RECORDS_PER_FILE);
            write_atomic(&drop.join(format!("in/{n:04}.json")), body.as_bytes());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    // Kill one instance at random every 2 s and start it again; measure how long the batches
    // it held stayed leased to it (the failover).
    let mut failovers: Vec<Duration> = Vec::new();
    let mut watching = tokio::task::JoinSet::new();
    let mut seed = 0x9e37_79b9_u64;
    let mut back_after = None;
    for step in 0..STEPS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % INSTANCES as u64) as usize;
        if step == STEPS / 2 {
            // A pause past the lease: its batches pass to the others, and when it wakes it
            // must change nothing of theirs.
            signal(&children[victim], libc::SIGSTOP);
            tokio::time::sleep(LEASE * 3).await;
            signal(&children[victim], libc::SIGCONT);
            continue;
        }
        if step == STEPS / 4 {
            // The failovers measured so far end first: the outage would stretch them.
            while let Some(failover) = watching.join_next().await {
                failovers.push(failover.unwrap());
            }
            back_after = Some(database_outage(&env, &pg, &mut children).await);
            continue;
        }
        let instance = instance_of(&pool, children[victim].id()).await;
        signal(&children[victim], libc::SIGKILL);
        let killed_at = Instant::now();
        let _ = children[victim].wait();
        children[victim] = spawn(&configs[victim]);
        if let Some(instance) = instance
            && leased_to(&pool, &instance).await.unwrap() > 0
        {
            let pool = pool.clone();
            watching.spawn(async move {
                loop {
                    if leased_to(&pool, &instance).await == Some(0) {
                        return killed_at.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    }
    writer.await.unwrap();
    while let Some(failover) = watching.join_next().await {
        failovers.push(failover.unwrap());
    }

    let receipts = wait_receipts(&env.archive(), FILES, 120).await;
    // An instance restarted by the last step may still be starting, before it handles
    // SIGTERM (which then kills it, as it would any process): each must be up first.
    all_say(&env, 200, "every instance ready before it is asked to stop").await;
    for child in &children {
        signal(child, libc::SIGTERM);
    }
    for child in &mut children {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "an instance exits cleanly on SIGTERM: {status:?}"
        );
    }

    // Every file: exactly one receipt, a success, gone from the drop folder.
    let mut names: Vec<String> = receipts
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "success", "{r}");
            r["file"].as_str().unwrap().to_owned()
        })
        .collect();
    names.sort();
    let expected: Vec<String> = (0..FILES).map(|n| format!("in/{n:04}.json")).collect();
    assert_eq!(names, expected, "one receipt per file, no more");
    for name in &expected {
        assert!(
            !env.drop_dir().join(name).exists(),
            "{name} left the drop folder"
        );
    }
    assert!(
        support::receipts(&env.failed()).is_empty(),
        "nothing failed"
    );

    // The platform's side: no batch open, every record in exactly one successful batch.
    let batches = platform_batches(&env).await;
    let mut ingested = 0;
    for batch in &batches {
        assert!(
            matches!(
                batch.status,
                BatchStatus::Success | BatchStatus::Failed | BatchStatus::Aborted
            ),
            "batch {} left {:?}",
            batch.id,
            batch.status
        );
        if batch.status == BatchStatus::Success {
            ingested += records_in_batch(&env.api, &batch.id).await;
        }
    }
    assert_eq!(
        ingested,
        (FILES * RECORDS_PER_FILE) as u64,
        "every record exactly once in the platform"
    );
    // The queue agrees: each file done once, no batch left leased in flight.
    let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE state = 'done'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(done, FILES as i64);

    failovers.sort();
    let median = failovers
        .get(failovers.len() / 2)
        .copied()
        .unwrap_or_default();
    let max = failovers.last().copied().unwrap_or_default();
    println!(
        "fleet chaos: {} SIGKILLs, one {:?} SIGSTOP, one {OUTAGE:?} database outage (all \
         ready again {:?} after it ended), {} batches on the platform; failover (a killed \
         instance's in-flight batches taken over) with a {LEASE:?} lease: {} measured, \
         median {median:?}, max {max:?}",
        STEPS - 2,
        LEASE * 3,
        back_after.expect("the outage happened"),
        batches.len(),
        failovers.len()
    );
    pool.close().await;
}

/// The last lines of the instances' shared log, but for debug lines, for a failure's message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("DEBUG")).collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// An instance killed if the test fails before it stopped it: one left SIGSTOPped would stay.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Whether process `pid` is stopped (by SIGSTOP), as /proc tells.
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
}

/// Starts instance `config` told to stop itself at pause point `point`, drops `in/once.json`
/// (7 records) once it is ready, and waits until it stopped there.
async fn once_json_with_an_instance_paused_at(env: &Env, config: &Path, point: &str) -> KillOnDrop {
    let first = KillOnDrop(spawn_daemon(
        config,
        &[],
        &[
            ("RUST_LOG", "batchdrop=info"),
            ("BATCHDROP_PAUSE_AT", point),
        ],
    ));
    eventually(60, "the first instance ready", || async {
        (readyz(env, 0).await == Some(200)).then_some(())
    })
    .await;
    write_atomic(&env.drop_dir().join("in/once.json"), jsonl(0, 7).as_bytes());
    eventually(
        90,
        &format!("the first instance paused at {point}"),
        || async { stopped(first.0.id()).then_some(()) },
    )
    .await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_paused_between_its_check_and_its_write_records_nothing_its_successor_did() {
    let pg = Postgres::start();
    let env = Env::new().await;
    let pool = admin_pool(&pg).await;
    let configs: Vec<PathBuf> = (0..2).map(|i| instance_config(&env, &pg, i)).collect();
    // The first instance scans, finds the file new, and stops itself right before writing it.
    let mut first =
        once_json_with_an_instance_paused_at(&env, &configs[0], "record-ready-checked").await;

    // Its scan lease passes to the second, which records, sends and archives the file.
    let mut second = KillOnDrop(spawn(&configs[1]));
    let log = configs[0].with_file_name("daemon.log");
    let receipts = tokio::time::timeout(
        Duration::from_secs(90),
        wait_receipts(&env.archive(), 1, 90),
    )
    .await
    .unwrap_or_else(|_| panic!("no receipt; the instances' log:\n{}", log_tail(&log)));
    assert_eq!(receipts[0]["status"], "success", "{}", receipts[0]);

    // Woken, the first finds its write refused, and records nothing.
    signal(&first.0, libc::SIGCONT);
    wait_log_count(&log, "no longer the scanner", 1, 60).await;
    for KillOnDrop(child) in [&mut first, &mut second] {
        signal(child, libc::SIGTERM);
        let status = child.wait().unwrap();
        assert!(status.success(), "an instance exits cleanly: {status:?}");
    }
    let records: Vec<(String, String)> =
        sqlx::query_as("SELECT rel_path, state FROM files ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        records,
        [("in/once.json".to_owned(), "done".to_owned())],
        "one record of the file"
    );
    assert_eq!(
        records_ingested(&env.api, DATASET).await,
        7,
        "the file's records once in the platform"
    );
    assert_eq!(support::receipts(&env.archive()).len(), 1);
    pool.close().await;
}

/// Every file below `dir`, with its bytes (the receipts' too).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(dir).unwrap().to_owned(), bytes);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_paused_between_its_check_and_its_moves_undoes_nothing_its_successor_did() {
    let pg = Postgres::start();
    let env = Env::new().await;
    let pool = admin_pool(&pg).await;
    let configs: Vec<PathBuf> = (0..2).map(|i| instance_config(&env, &pg, i)).collect();
    // The first instance ingests the file, checks that it still holds the batch's lease, and
    // stops itself right before moving the file and writing its receipt.
    let mut first = once_json_with_an_instance_paused_at(&env, &configs[0], "archive-owned").await;
    let drop = env.drop_dir();
    let log = configs[0].with_file_name("daemon.log");
    assert!(
        drop.join("in/once.json").exists(),
        "paused before the move; the log:\n{}",
        log_tail(&log)
    );

    // Its batch's lease expires and passes to the second, which archives the file.
    let mut second = KillOnDrop(spawn(&configs[1]));
    let receipts = tokio::time::timeout(
        Duration::from_secs(90),
        wait_receipts(&env.archive(), 1, 90),
    )
    .await
    .unwrap_or_else(|_| panic!("no receipt; the instances' log:\n{}", log_tail(&log)));
    assert_eq!(receipts[0]["status"], "success", "{}", receipts[0]);
    // The successor's work, as it left it: the archived file and its receipt.
    let finished = tree(&env.archive());
    assert_eq!(finished.len(), 2, "the file and its receipt: {finished:?}");
    // Its receipt is written before the file is recorded as finished.
    let finished_at = eventually(60, "the successor recorded the file finished", || async {
        sqlx::query_scalar::<_, i64>("SELECT updated_at FROM files WHERE finalized")
            .fetch_optional(&pool)
            .await
            .unwrap()
    })
    .await;

    // Woken, the first finds the file finished, and leaves everything as it is.
    signal(&first.0, libc::SIGCONT);
    wait_log_count(&log, "already finished by another instance", 1, 60).await;
    for KillOnDrop(child) in [&mut first, &mut second] {
        signal(child, libc::SIGTERM);
        let status = child.wait().unwrap();
        assert!(status.success(), "an instance exits cleanly: {status:?}");
    }
    assert_eq!(
        tree(&env.archive()),
        finished,
        "one receipt, the successor's, intact; the file archived once"
    );
    assert!(
        !drop.join("in/once.json").exists(),
        "the file left the drop folder"
    );
    assert!(tree(&env.failed()).is_empty(), "nothing failed");
    let row: (String, bool, i64) = sqlx::query_as("SELECT state, finalized, updated_at FROM files")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row, ("done".to_owned(), true, finished_at), "recorded once");
    let finalized: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'finalized'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(finalized, 1, "one 'finalized' in the file's history");
    assert_eq!(
        records_ingested(&env.api, DATASET).await,
        7,
        "the file's records once in the platform"
    );
    pool.close().await;
}

/// Which instance drove each batch, as the database shows it (a batch's lease stays with its
/// driver, renewed by heartbeat, until that instance leaves), with every instance in the
/// fleet; `None` before the first instance made the schema.
async fn drivers(pool: &sqlx::PgPool) -> Option<(BTreeMap<i64, String>, Vec<String>)> {
    let leased: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, lease_owner FROM batches WHERE lease_owner IS NOT NULL")
            .fetch_all(pool)
            .await
            .ok()?;
    let instances = sqlx::query_scalar("SELECT id FROM instances ORDER BY id")
        .fetch_all(pool)
        .await
        .ok()?;
    Some((leased.into_iter().collect(), instances))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_spread_a_backlog_of_batches_over_all_of_them() {
    const FILES: usize = 36;
    let pg = Postgres::start();
    let env = Env::new().await;
    let pool = admin_pool(&pg).await;
    let shared = env.write_config("", "mode = \"poll\"\nmax_files = 4");
    let mut children: Vec<KillOnDrop> = (0..INSTANCES)
        .map(|i| KillOnDrop(spawn(&pg.instance_config(&shared, i, LEASE))))
        .collect();
    eventually(60, "every instance joined", || async {
        drivers(&pool)
            .await
            .filter(|(_, instances)| instances.len() == INSTANCES)
    })
    .await;

    // A backlog: the scanner finds it at once and seals it into nine batches of four files.
    let drop = env.drop_dir();
    for n in 0..FILES {
        write_atomic(
            &drop.join(format!("in/{n:02}.json")),
            jsonl(n * RECORDS_PER_FILE, RECORDS_PER_FILE).as_bytes(),
        );
    }
    let receipts = wait_receipts(&env.archive(), FILES, 120).await;
    let (driven, instances) = drivers(&pool).await.expect("the fleet's schema");
    for KillOnDrop(child) in &mut children {
        signal(child, libc::SIGTERM);
        let status = child.wait().unwrap();
        assert!(status.success(), "an instance exits cleanly: {status:?}");
    }

    let batches: BTreeSet<&str> = receipts
        .iter()
        .map(|r| r["batch"].as_str().unwrap())
        .collect();
    assert_eq!(receipts.len(), FILES, "one receipt per file");
    assert_eq!(driven.len(), batches.len(), "every batch had a driver");
    let mut spread: BTreeMap<&str, usize> = instances.iter().map(|i| (i.as_str(), 0)).collect();
    for driver in driven.values() {
        *spread
            .get_mut(driver.as_str())
            .expect("a driver of the fleet") += 1;
    }
    println!(
        "{} batches driven per instance: {:?}",
        driven.len(),
        spread.values().collect::<Vec<_>>()
    );
    assert!(
        spread.values().all(|&n| n > 0),
        "every instance drove a batch of the backlog: {spread:?}"
    );
    assert_eq!(
        records_ingested(&env.api, DATASET).await,
        (FILES * RECORDS_PER_FILE) as u64,
        "every record once"
    );
    pool.close().await;
}
