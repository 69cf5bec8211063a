//! Safety: odd and hostile file names, symlinks out of the folder, rotated credentials, and no
//! secret in logs or state — against the real emulator and the real binary.

use crate::support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use batchdrop::config::Config;
use batchdrop_emulator::{EmulatorConfig, ImsClient};
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
    // The alias was read through its link (its content is the target's), and that content,
    // the same file's under two names, is ingested once: one of them names the other's batch.
    let alias = ok
        .iter()
        .find(|r| r["file"] == "alias.json")
        .expect("{ok:?}");
    let real = ok
        .iter()
        .find(|r| r["file"] == "real/inside.json")
        .expect("{ok:?}");
    assert_eq!(alias["sha256"], real["sha256"], "{ok:?}");
    let (first, second) = if alias["status"] == "success" {
        (alias, real)
    } else {
        (real, alias)
    };
    assert_eq!(first["status"], "success", "{ok:?}");
    assert_eq!(second["status"], "duplicate", "{ok:?}");
    assert_eq!(second["duplicate_of"]["batch"], first["batch"], "{ok:?}");
    assert_eq!(
        records_in_batch(&env.api, first["batch"].as_str().unwrap()).await,
        4
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
    // Refused (401) again and again: nothing fails, it is retried.
    let emulator = &env.emulator;
    eventually(
        60,
        "the emulator refused the old token three times",
        || async { (emulator.stats().auth_failures >= 3).then_some(()) },
    )
    .await;
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

// ---- OAuth server-to-server against the emulator's IMS ---------------------------------------

const CLIENT: &str = "batchdrop-test-client";
const RIGHT_SECRET: &str = "p8e-right-secret-4f1d";
const WRONG_SECRET: &str = "p8e-wrong-secret-9c2e";

fn ims_emulator(token_lifetime_secs: u64) -> EmulatorConfig {
    let mut cfg = EmulatorConfig::default();
    cfg.ims.clients = vec![ImsClient {
        client_id: CLIENT.into(),
        client_secret: RIGHT_SECRET.into(),
        scopes: vec!["openid".into(), "AdobeID".into()],
    }];
    cfg.ims.token_lifetime_secs = token_lifetime_secs;
    cfg
}

/// The test config with its static token file swapped for `[platform.auth]` against the
/// emulator's IMS, with the client secret in the file `secret` (written by the test).
fn with_oauth(env: &Env, config: ConfigFile) -> ConfigFile {
    config
        .section("platform", |platform| platform.unset("access_token_file"))
        .section("platform.auth", |auth| {
            auth.set(
                "ims_url",
                format!("{}/ims/token/v3", env.emulator.base_url()),
            )
            .set("client_id", CLIENT)
            .set("scopes", vec!["openid", "AdobeID"])
            .set("client_secret_file", "secret")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_expiring_every_two_seconds_never_stop_a_multi_chunk_upload() {
    let mut cfg = ims_emulator(2);
    // Every platform request takes 100 ms more, so the 64-chunk upload below outlives
    // several tokens (the token endpoint itself is not slowed).
    cfg.faults.latency_probability = 1.0;
    cfg.faults.latency_ms = 100;
    let env = Env::with_emulator(cfg).await;
    std::fs::write(env.dir.path().join("secret"), RIGHT_SECRET).unwrap();
    let chunk = 32 * 1024;
    let config = env.write(&with_oauth(
        &env,
        env.config_file().section("upload", |upload| {
            upload
                .set("large_file_threshold", chunk as i64)
                .set("chunk_size", chunk as i64)
        }),
    ));
    let large = jsonl(0, 70_000);
    let large = &large[..large[..64 * chunk].rfind('\n').unwrap() + 1];
    let records = large.lines().count() as u64;
    let chunks = large.len().div_ceil(chunk) as u64;
    assert_eq!(chunks, 64);

    let started = Instant::now();
    let daemon = Daemon::start(Config::load(&config).unwrap());
    write_atomic(&env.drop_dir().join("large.json"), large.as_bytes());
    write_atomic(
        &env.drop_dir().join("small.json"),
        jsonl(50_000, 5).as_bytes(),
    );
    let ok = wait_receipts(&env.archive(), 2, 120).await;
    let elapsed = started.elapsed();
    daemon.stop().await;

    assert!(ok.iter().all(|r| r["status"] == "success"), "{ok:?}");
    let batch = ok.iter().find(|r| r["file"] == "large.json").unwrap()["batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // The small file may share the large one's batch.
    let small_too = ok
        .iter()
        .any(|r| r["file"] == "small.json" && r["batch"] == batch.as_str());
    assert_eq!(
        records_in_batch(&env.api, &batch).await,
        records + if small_too { 5 } else { 0 }
    );
    let stats = env.emulator.stats();
    println!(
        "[oauth] {:.1}s, {} tokens issued, {} requests refused by the gateway, {} chunks",
        elapsed.as_secs_f64(),
        stats.ims_tokens_issued,
        stats.auth_failures,
        stats.chunks_received
    );
    // The upload really outlived its tokens: 64 chunks at ≥ 100 ms each.
    assert!(elapsed > Duration::from_secs(6), "{elapsed:?}");
    assert!(
        stats.ims_tokens_issued >= 3,
        "tokens were renewed during the upload: {stats:?}"
    );
    // Renewed at 1.5 s of a 2 s life, shared by all uploads: no storm.
    let bound = (elapsed.as_secs_f64() / 1.5).ceil() as u64 + 2;
    assert!(
        stats.ims_tokens_issued <= bound,
        "{} tokens in {elapsed:?} (at most {bound})",
        stats.ims_tokens_issued
    );
    assert_eq!(stats.ims_refusals, 0);
    assert_eq!(stats.chunks_received, chunks, "no chunk lost or sent twice");
    assert_eq!(stats.duplicate_acknowledged_chunks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_credentials_say_so_back_off_fail_nothing_and_a_fixed_secret_is_picked_up() {
    let env = Env::with_emulator(ims_emulator(3600)).await;
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, WRONG_SECRET).unwrap();
    let config = env.write(&with_oauth(
        &env,
        env.config_file()
            .section("upload", |upload| upload.set("max_attempts", 2)),
    ));
    for i in 0..3 {
        write_atomic(
            &env.drop_dir().join(format!("f{i}.json")),
            jsonl(i * 10, 3).as_bytes(),
        );
    }
    let log_path = env.dir.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    // Ten seconds of refusals: asked again after 1, 2, 4 s… — a handful of requests, not a
    // spin, although max_attempts = 2 and the batch retries every second or so.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let refused = env.emulator.stats().ims_refusals;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon keeps running: {log}"
    );
    let mut child = Kill(child);
    println!("[wrong credentials] {refused} token requests refused in 10 s");
    assert!(
        (1..=6).contains(&refused),
        "{refused} refused token requests"
    );
    assert!(
        receipts(&env.failed()).is_empty(),
        "wrong credentials are not the data's fault: nothing is failed"
    );
    for i in 0..3 {
        assert!(env.drop_dir().join(format!("f{i}.json")).exists());
    }
    let said = log
        .lines()
        .find(|l| l.contains("refuses batchdrop's credentials"))
        .unwrap_or_else(|| panic!("no clear error in the log:\n{log}"));
    assert!(said.contains("[platform.auth]"), "{said}");
    assert!(said.contains("invalid_client"), "{said}");
    for secret in [WRONG_SECRET, RIGHT_SECRET] {
        assert!(!log.contains(secret), "a secret is in the log");
    }

    // The operator fixes the secret file: picked up without a restart, everything flows.
    std::fs::write(&secret, RIGHT_SECRET).unwrap();
    let ok = wait_receipts(&env.archive(), 3, 90).await;
    assert!(ok.iter().all(|r| r["status"] == "success"), "{ok:?}");
    assert!(receipts(&env.failed()).is_empty());
    // SAFETY: kill(2) on the pid of a child this test spawned; no memory is involved.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
