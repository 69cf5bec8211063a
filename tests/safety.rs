//! Safety: odd and hostile file names, symlinks out of the folder, rotated credentials, and no
//! secret in logs or state — against the real emulator and the real binary.

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batchdrop::emulator::EmulatorConfig;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_are_ingested_under_their_own_name_or_refused_with_a_receipt() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    let long = format!("{}.json", "n".repeat(250)); // 255 bytes: the longest a name can be
    let good = [
        "with space.json",
        "caf\u{e9} \u{65e5}\u{672c}.json",
        "100%.json",
        "hash#tag.json",
        "what?.json",
        "plus+sign.json",
        long.as_str(),
    ];
    for (i, name) in good.iter().enumerate() {
        write_atomic(&env.drop_dir().join(name), jsonl(i * 10, 2).as_bytes());
    }
    // A name that is not UTF-8: the platform cannot take it, so it is refused with a receipt.
    let bad = env
        .drop_dir()
        .join(OsStr::from_bytes(b"latin1-\xe9t\xe9.json"));
    std::fs::write(&bad, jsonl(0, 1)).unwrap();

    let ok = wait_receipts(&env.archive(), good.len(), 60).await;
    let failed = wait_receipts(&env.failed(), 1, 60).await;
    daemon.stop().await;
    for name in good {
        let r = ok
            .iter()
            .find(|r| r["file"] == name)
            .unwrap_or_else(|| panic!("receipt for {name}"));
        assert_eq!(r["status"], "success", "{r}");
        let records = records_in_batch(&env.api, r["batch"].as_str().unwrap()).await;
        assert!(records >= 2, "{name}: {records} records");
        assert!(
            env.archive().join(name).exists(),
            "{name} archived under its own name"
        );
    }
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("UTF-8"),
        "{}",
        failed[0]
    );
    assert!(!bad.exists(), "moved out of the drop folder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_followed_inside_the_folder_and_refused_out_of_it() {
    let env = Env::new().await;
    let outside = env.dir.path().join("secret-area");
    std::fs::create_dir_all(&outside).unwrap();
    let target = outside.join("passwords.json");
    std::fs::write(&target, jsonl(0, 3)).unwrap();
    std::fs::create_dir_all(env.drop_dir().join("real")).unwrap();
    write_atomic(
        &env.drop_dir().join("real/inside.json"),
        jsonl(100, 4).as_bytes(),
    );
    let daemon = Daemon::start(env.config("", "max_wait = \"2s\""));
    std::os::unix::fs::symlink(&target, env.drop_dir().join("escape.json")).unwrap();
    std::os::unix::fs::symlink(
        env.drop_dir().join("real/inside.json"),
        env.drop_dir().join("alias.json"),
    )
    .unwrap();

    let failed = wait_receipts(&env.failed(), 1, 60).await;
    let ok = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;
    let r = &failed[0];
    assert_eq!(r["file"], "escape.json");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("outside the watch folder"),
        "{r}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        jsonl(0, 3),
        "the target is untouched"
    );
    assert!(
        ok.iter()
            .any(|r| r["file"] == "alias.json" && r["status"] == "success"),
        "{ok:?}"
    );
    assert!(
        env.emulator.stats().puts <= 2,
        "the outside file was never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let mut cfg = EmulatorConfig::default();
    cfg.gateway.tokens = vec!["token-two".into()];
    let env = Env::with_emulator(cfg).await;
    std::fs::write(env.dir.path().join("token"), "token-one\n").unwrap();
    let daemon = Daemon::start(env.config("max_attempts = 100", ""));
    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 3).as_bytes());
    // Refused (401) for a while: nothing fails, it is retried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receipts(&env.failed()).is_empty(),
        "a 401 is not a reason to quarantine"
    );
    std::fs::write(env.dir.path().join("token"), "token-two\n").unwrap();
    let ok = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;
    assert_eq!(ok[0]["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_receipts_or_the_state_database() {
    let env = Env::new().await;
    const TOKEN: &str = "tok-3f9a1c-never-print-me";
    std::fs::write(env.dir.path().join("token"), TOKEN).unwrap();
    let config = env.write_config("large_file_threshold = 2048\nchunk_size = 1000", "");
    write_atomic(&env.drop_dir().join("small.json"), jsonl(0, 3).as_bytes());
    write_atomic(
        &env.drop_dir().join("large.json"),
        jsonl(100, 100).as_bytes(),
    );
    write_atomic(&env.drop_dir().join("bad.json"), b"{broken\n");
    let log_path = env.dir.path().join("trace.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["run", "--once", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "run --once did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.len() > 10_000,
        "trace logging really ran ({} bytes)",
        log.len()
    );
    assert!(!log.contains(TOKEN), "the token appears in the trace log");
    for r in receipts(&env.archive())
        .into_iter()
        .chain(receipts(&env.failed()))
    {
        assert!(!r.to_string().contains(TOKEN));
    }
    for entry in std::fs::read_dir(env.state_dir()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            entry.path().display()
        );
    }
}
