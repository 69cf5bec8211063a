//! Retries: a dead platform is retried on a schedule that lives in SQLite (a restart continues
//! it), permanent errors fail fast with the platform's message, and `max_attempts` ends in a
//! receipt.

use crate::support;

use std::path::Path;

use batchdrop::store::Store;
use batchdrop_emulator::{Emulator, EmulatorConfig};
use support::*;

/// (retries recorded, first_error_at, last_error) of the only batch in flight.
async fn schedule(state: &Path) -> Option<(usize, Option<i64>, Option<String>)> {
    let store = Store::open_shared(state).await.ok()?;
    let b = store.batches_in_flight().await.ok()?.into_iter().next()?;
    let retries = store
        .events_for_batch(b.id)
        .await
        .ok()?
        .iter()
        .filter(|e| e.kind == "retry")
        .count();
    store.close().await;
    Some((retries, b.first_error_at, b.last_error))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_platform_is_retried_on_a_schedule_that_survives_a_restart() {
    let env = Env::new().await;
    // A port where nothing listens yet: the platform is "down".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = env.write_config_for(
        &url,
        "backoff_initial = \"200ms\"\nbackoff_max = \"400ms\"\nmax_attempts = 1000",
        "",
    );
    write_atomic(&env.drop_dir().join("waiting.json"), jsonl(0, 7).as_bytes());

    let first = spawn_daemon(&config, &[], &[]);
    let (before, first_error, err) = eventually(30, "a few failed attempts recorded", || async {
        schedule(&env.state_dir()).await.filter(|s| s.0 >= 3)
    })
    .await;
    assert!(
        err.unwrap_or_default().to_lowercase().contains("connect"),
        "the last error says why"
    );
    assert!(first_error.is_some());
    stop_daemon(first);
    let (after_stop, _, _) = schedule(&env.state_dir()).await.unwrap();
    assert!(after_stop >= before);

    // The restart continues the schedule (same outage, same age) instead of starting over.
    let second = spawn_daemon(&config, &[], &[]);
    let (_, first_error_after, _) =
        eventually(30, "more attempts on top of the earlier ones", || async {
            schedule(&env.state_dir())
                .await
                .filter(|s| s.0 > after_stop)
        })
        .await;
    assert_eq!(
        first_error_after, first_error,
        "the outage's start is remembered across the restart"
    );
    assert!(
        receipts(&env.failed()).is_empty(),
        "a dead network is not a reason to quarantine"
    );

    // The platform comes up on that port: the file goes through.
    let emu = Emulator::start(
        ([127, 0, 0, 1], port).into(),
        &env.dir.path().join("late-platform"),
        EmulatorConfig::default(),
    )
    .await
    .unwrap();
    emu.ensure_dataset(DATASET, "late").await.unwrap();
    let got = wait_receipts(&env.archive(), 1, 60).await;
    stop_daemon(second);
    assert_eq!(got[0]["status"], "success");
    assert_eq!(
        records_in_batch(
            &support::client(&emu.base_url()),
            got[0]["batch"].as_str().unwrap()
        )
        .await,
        7
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_fails_fast_with_the_platforms_message() {
    // A platform that takes one file per batch, and a watch that seals two together: the
    // second PUT is refused (400) for good. (A refused dataset is another matter: it blocks
    // the watch instead, see tests/content_and_datasets.rs.)
    let mut cfg = EmulatorConfig::default();
    cfg.limits.max_files_per_batch = 1;
    let env = Env::with_emulator(cfg).await;
    let config = env.config("", "max_files = 2\nmax_wait = \"30s\"");
    let daemon = Daemon::start(config);
    write_atomic(&env.drop_dir().join("one.json"), jsonl(0, 2).as_bytes());
    write_atomic(&env.drop_dir().join("two.json"), jsonl(2, 2).as_bytes());
    let failed = wait_receipts(&env.failed(), 2, 30).await;
    daemon.stop().await;
    let errors = failed[0]["errors"].to_string();
    assert!(
        errors.contains("at most 1 files per batch"),
        "carries the platform's message: {errors}"
    );
    assert!(
        errors.contains("400"),
        "carries the platform's answer: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_ends_in_a_receipt() {
    // A platform that answers, but only with 503: transient, retried, and given up on after
    // max_attempts.
    let mut cfg = EmulatorConfig::default();
    cfg.faults.http_503_probability = 1.0;
    let env = Env::with_emulator(cfg).await;
    let config = env.write_config(
        "backoff_initial = \"50ms\"\nbackoff_max = \"100ms\"\nmax_attempts = 3",
        "",
    );
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    write_atomic(&env.drop_dir().join("doomed.json"), jsonl(0, 2).as_bytes());
    let failed = wait_receipts(&env.failed(), 1, 30).await;
    daemon.stop().await;
    let errors = failed[0]["errors"].to_string();
    assert!(errors.contains("gave up after 3 attempts"), "{errors}");
    assert!(
        errors.contains("503"),
        "says what the platform answered: {errors}"
    );
    assert!(
        env.failed().join("doomed.json").exists(),
        "the file is kept, in the failed folder"
    );
}
