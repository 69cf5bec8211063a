//! Durability with the real `batchdrop` binary: killed with SIGKILL at chosen instants and
//! restarted, it ends with every record in the platform exactly once, no batch left `loading`,
//! and no acknowledged chunk sent twice. Also: SIGTERM during a large upload, `--once`.

use crate::support;

use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use support::*;

fn spawn(config: &Path, crash_at: Option<&str>, once: bool) -> Child {
    spawn_with(
        config,
        crash_at.map(|point| ("BATCHDROP_CRASH_AT", point)),
        once,
    )
}

/// [`spawn`], with one test hook set (`BATCHDROP_CRASH_AT` or `BATCHDROP_PANIC_AT`).
fn spawn_with(config: &Path, hook: Option<(&str, &str)>, once: bool) -> Child {
    let args: &[&str] = if once { &["--once"] } else { &[] };
    let envs: Vec<(&str, &str)> = hook.into_iter().collect();
    spawn_daemon(config, args, &envs)
}

/// Waits for the process to end on its own within `secs`.
fn wait_exit(child: &mut Child, secs: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("batchdrop did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The end state every crash case must reach: all records once, nothing loading, no chunk
/// acknowledged twice.
async fn assert_exactly_once(env: &Env, files: &[(&str, u64)]) {
    let receipts = wait_receipts(&env.archive(), files.len(), 90).await;
    let mut total = 0;
    let mut batches = std::collections::BTreeSet::new();
    for (name, records) in files {
        let r = receipts
            .iter()
            .find(|r| r["file"] == *name)
            .unwrap_or_else(|| panic!("no receipt for {name}: {receipts:?}"));
        assert_eq!(r["status"], "success", "{r}");
        batches.insert(r["batch"].as_str().unwrap().to_owned());
        total += records;
    }
    // Count what the platform holds across every successful batch of the dataset, not only
    // the ones the receipts name: a doubled file would hide in another batch.
    let ingested = records_ingested(&env.api, DATASET).await;
    assert_eq!(ingested, total, "every record exactly once in the platform");
    assert_eq!(
        env.emulator.stats().duplicate_acknowledged_chunks,
        0,
        "no acknowledged chunk sent twice"
    );
}

async fn crash_and_recover(point: &str, large: bool) {
    let env = Env::new().await;
    let upload = if large {
        "large_file_threshold = 2048\nchunk_size = 1000"
    } else {
        ""
    };
    let config = env.write_config(upload, "");
    let (a, b) = (jsonl(0, 150), jsonl(1000, 20));
    write_atomic(&env.drop_dir().join("a.json"), a.as_bytes());
    write_atomic(&env.drop_dir().join("b.json"), b.as_bytes());

    let mut first = spawn(&config, Some(point), false);
    let status = wait_exit(&mut first, 60);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the daemon died at {point}"
    );

    let mut second = spawn(&config, None, false);
    assert_exactly_once(&env, &[("a.json", 150), ("b.json", 20)]).await;
    // Each receipt carries the hash of the bytes ingested, wherever the crash came.
    let receipts = receipts(&env.archive());
    for (name, content) in [("a.json", &a), ("b.json", &b)] {
        use sha2::Digest;
        let r = receipts.iter().find(|r| r["file"] == name).unwrap();
        let sha = format!("{:x}", sha2::Sha256::digest(content.as_bytes()));
        assert_eq!(
            r["sha256"],
            sha.as_str(),
            "{name} after a crash at {point}: {r}"
        );
    }
    signal(&second, libc::SIGTERM);
    assert!(wait_exit(&mut second, 30).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_create_batch_was_sent() {
    crash_and_recover("create-sent", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_put() {
    crash_and_recover("mid-body", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_put_was_acknowledged_but_not_recorded() {
    crash_and_recover("put-sent", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_two_chunks() {
    crash_and_recover("chunk-recorded:2", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_chunk_was_sent_but_before_it_was_recorded() {
    crash_and_recover("chunk-sent:3", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_complete_was_sent() {
    crash_and_recover("complete-sent", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_complete_was_sent_for_a_batch_of_large_files() {
    crash_and_recover("complete-sent", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_polling() {
    crash_and_recover("polling:2", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_file_was_archived_but_before_it_was_recorded() {
    crash_and_recover("archive-moved", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stage_stops_the_daemon_with_exit_1_and_a_restart_finishes_its_work() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 150).as_bytes());
    write_atomic(&env.drop_dir().join("b.json"), jsonl(1000, 20).as_bytes());

    // The archiver panics once it moved its first file, before it recorded that.
    let mut first = spawn_with(
        &config,
        Some(("BATCHDROP_PANIC_AT", "archive-moved")),
        false,
    );
    let status = wait_exit(&mut first, 60);
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = std::fs::read_to_string(config.with_file_name("daemon.log")).unwrap();
    assert!(log.contains("the archiver panicked"), "{log}");
    assert!(
        log.contains("batchdrop stopped rather than run on"),
        "{log}"
    );

    let mut second = spawn(&config, None, false);
    assert_exactly_once(&env, &[("a.json", 150), ("b.json", 20)]).await;
    signal(&second, libc::SIGTERM);
    assert!(wait_exit(&mut second, 30).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_task_panics_is_driven_again_by_the_running_daemon() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 150).as_bytes());

    // The task driving the first batch panics right after create-batch was sent.
    let mut daemon = spawn_with(&config, Some(("BATCHDROP_PANIC_AT", "create-sent")), false);
    assert_exactly_once(&env, &[("a.json", 150)]).await;
    assert_eq!(daemon.try_wait().unwrap(), None, "the daemon runs on");
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(&mut daemon, 30).success());
    let log = std::fs::read_to_string(config.with_file_name("daemon.log")).unwrap();
    assert!(log.contains("panicked"), "{log}");
    assert!(log.contains("it is driven again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_large_upload_exits_zero_and_the_restart_finishes_the_file() {
    let env = Env::new().await;
    // Many small chunks so that SIGTERM lands mid-file.
    let config = env.write_config("large_file_threshold = 4096\nchunk_size = 2048", "");
    write_atomic(&env.drop_dir().join("big.json"), jsonl(0, 3000).as_bytes());
    let mut first = spawn(&config, None, false);
    support::eventually(30, "some chunks acknowledged", || {
        let n = env.emulator.stats().chunks_received;
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let t = Instant::now();
    signal(&first, libc::SIGTERM);
    let status = wait_exit(&mut first, 10);
    assert!(status.success(), "graceful exit 0, got {status:?}");
    assert!(t.elapsed() < Duration::from_secs(6), "within the 5 s grace");

    let mut second = spawn(&config, None, false);
    assert_exactly_once(&env, &[("big.json", 3000)]).await;
    signal(&second, libc::SIGTERM);
    assert!(wait_exit(&mut second, 30).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_exits_zero_when_all_succeeded_and_four_when_some_failed() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    write_atomic(&env.drop_dir().join("good.json"), jsonl(0, 3).as_bytes());
    let mut ok = spawn(&config, None, true);
    assert_eq!(wait_exit(&mut ok, 60).code(), Some(0));
    assert_eq!(
        receipts(&env.archive()).len(),
        1,
        "processed before exiting"
    );

    write_atomic(&env.drop_dir().join("bad.json"), b"{nope\n");
    let mut bad = spawn(&config, None, true);
    assert_eq!(wait_exit(&mut bad, 60).code(), Some(4));
    assert_eq!(receipts(&env.failed()).len(), 1);
}
