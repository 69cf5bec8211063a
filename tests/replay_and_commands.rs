//! `.replay` sidecars and the operator's commands, end to end against the emulator: real
//! folders, the daemon running (in-process, or as the real binary for the embedded platform),
//! and the real `batchdrop` binary for `status`, `push`, `retry`, `abort`, `revert` and
//! `check-config`, checked through their exit codes, their output, the receipts and the
//! platform's own view (Catalog and Data Access).

use crate::support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use batchdrop::api::{BatchStatus, CreateBatch, Format};
use batchdrop_emulator::EmulatorConfig;
use serde_json::Value;
use support::*;

mod sidecars;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn status_json(config: &Path, target: Option<&str>) -> Value {
    let c = config.to_str().unwrap();
    let mut args = vec!["status", "--json", "--config", c];
    if let Some(t) = target {
        args.push(t);
    }
    let o = bd(&args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// Waits until the latest record of `file` is in `state`. The archiver writes and syncs a
/// page of receipts before it records those files as finished, and the commands act on the
/// record: a test that saw a receipt waits for the record before it runs one.
async fn recorded(config: &Path, file: &str, state: &str) {
    eventually(30, &format!("{file} recorded as {state}"), || async {
        let s = status_json(config, Some(file)).await;
        (s["records"][0]["state"] == state).then_some(())
    })
    .await
}

fn receipt_for<'a>(receipts: &'a [Value], file: &str) -> &'a Value {
    receipts
        .iter()
        .find(|r| r["file"] == file)
        .unwrap_or_else(|| panic!("no receipt for {file} in {receipts:#?}"))
}

/// Drops `name` and waits for its (next) receipt in the archive; returns its batch id.
async fn ingest(env: &Env, name: &str, records: usize, first: usize) -> String {
    let before = receipts(&env.archive())
        .iter()
        .filter(|r| r["file"] == name)
        .count();
    write_atomic(&env.drop_dir().join(name), jsonl(first, records).as_bytes());
    let archive = env.archive();
    let r = eventually(30, &format!("{name} archived"), || {
        let rs: Vec<Value> = receipts(&archive)
            .into_iter()
            .filter(|r| r["file"] == name)
            .collect();
        async move { (rs.len() > before).then_some(rs) }
    })
    .await;
    let newest = r
        .iter()
        .max_by_key(|r| r["finished_at"].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(newest["status"], "success", "{newest}");
    newest["batch"].as_str().unwrap().to_owned()
}

async fn platform_status(env: &Env, batch: &str) -> BatchStatus {
    env.api.get_batch(batch).await.unwrap().unwrap().status
}

fn keep_replaced_batches() -> EmulatorConfig {
    EmulatorConfig {
        revert_gc_delay_ms: 600_000,
        ..EmulatorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_follows_a_file_through_the_states_of_a_running_daemon() {
    // Each state lasts a few seconds (the file ready until max_wait seals it, the batch in
    // processing), so that a `status` sample lands in each even when starting the binary
    // takes seconds on a loaded machine.
    let env = Env::with_emulator(EmulatorConfig {
        processing_delay_ms: 3000,
        ..EmulatorConfig::default()
    })
    .await;
    let config = env.write_config("", "max_wait = \"4s\"");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());

    // Right from the start (the daemon may still be creating its state).
    let s = status_json(&config, None).await;
    assert_eq!(s["datasets"][0]["dataset"], DATASET);
    assert_eq!(s["datasets"][0]["files"]["ready"], 0);
    let s = eventually(10, "status sees the daemon", || {
        let config = config.clone();
        async move {
            let s = status_json(&config, None).await;
            (s["daemon"]["running"] == true).then_some(s)
        }
    })
    .await;
    assert_eq!(s["datasets"][0]["dataset"], DATASET);
    assert_eq!(s["datasets"][0]["files"]["done"], 0);
    assert_eq!(s["in_flight"], serde_json::json!([]));

    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 3).as_bytes());
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_json(&config, None).await;
        let files = &s["datasets"][0]["files"];
        if files["ready"] == 1 {
            seen.insert("ready".to_owned());
        }
        if let Some(b) = s["in_flight"].as_array().and_then(|a| a.first()) {
            assert_eq!(b["files"], 1, "{b}");
            assert_eq!(b["dataset"], DATASET);
            seen.insert(format!("batch {}", b["state"].as_str().unwrap()));
        }
        if files["done"] == 1 {
            assert_eq!(s["in_flight"], serde_json::json!([]));
            let b = &s["recent_batches"][0];
            assert_eq!(b["state"], "success");
            assert_eq!(b["files_uploaded"], 1);
            assert_eq!(b["bytes_uploaded"], b["bytes"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("ready"), "{seen:?}");
    assert!(seen.contains("batch processing"), "{seen:?}");

    std::fs::write(env.drop_dir().join("bad.json"), "{broken\n").unwrap();
    wait_receipts(&env.failed(), 1, 30).await;
    // The receipt is written (and synced) before the archiver records the file as finished:
    // wait for the record, which follows within a pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status_json(&config, None).await;
        if s["datasets"][0]["files"]["failed"] == 1 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never counted as failed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let f = &s["recent_failures"][0];
    assert_eq!(f["file"], "bad.json");
    assert!(
        f["reason"].as_str().unwrap().contains("failed:"),
        "the batch's errors: {f}"
    );

    let h = status_json(&config, Some("bad.json")).await;
    assert_eq!(h["kind"], "file");
    assert_eq!(h["records"][0]["state"], "failed");
    assert_eq!(h["records"][0]["batch_state"], "failed");
    let kinds: Vec<&str> = h["records"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"ready") && kinds.contains(&"failed"),
        "{kinds:?}"
    );
    // Also by its path in the failed folder.
    let by_path = env.failed().join("bad.json");
    let h2 = status_json(&config, Some(by_path.to_str().unwrap())).await;
    assert_eq!(h2["records"][0]["id"], h["records"][0]["id"]);

    let o = bd(&["status", "--config", config.to_str().unwrap(), "nope.json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no batch or file named \"nope.json\""));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_exits_0_when_its_batch_succeeds_and_4_when_it_fails_even_beside_a_daemon() {
    let env = Env::with_emulator(keep_replaced_batches()).await;
    let config = env.write_config("", "");
    let c = config.to_str().unwrap();
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let good = outside.join("people.json");
    std::fs::write(&good, jsonl(0, 12)).unwrap();

    let o = bd(&[
        "push",
        good.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let batch = out.split_whitespace().next().unwrap().to_owned();
    assert!(out.contains("success"), "{out}");
    assert_eq!(records_in_batch(&env.api, &batch).await, 12);
    assert!(good.exists(), "push never moves the files it reads");
    // Plain progress lines when not on a terminal.
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("batch {batch}: ")));

    // The same push again: already done, nothing sent twice.
    let o = bd(&[
        "push",
        good.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already ingested"));

    // A replay push replacing the first one by its batch id.
    let fixed = outside.join("people-fixed.json");
    std::fs::write(&fixed, jsonl(0, 10)).unwrap();
    let o = bd(&[
        "push",
        fixed.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--replaces",
        &batch,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(platform_status(&env, &batch).await, BatchStatus::Inactive);

    // A predecessor no state knows: the push says what to fix there, not in a sidecar.
    let o = bd(&[
        "push",
        fixed.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--replaces",
        "never-pushed.json",
        "--config",
        c,
    ])
    .await;
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        said.contains("--replaces names the predecessor \"never-pushed.json\"")
            && said.contains("fix --replaces")
            && said.contains("then run the push again")
            && !said.contains("sidecar"),
        "{said}"
    );

    // --no-wait: exit once the platform took the batch; the same push again waits for it.
    let later = outside.join("later.json");
    std::fs::write(&later, jsonl(100, 3)).unwrap();
    let args = [
        "push",
        later.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ];
    let o = bd(&[&args[..], &["--no-wait"]].concat()).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("processing"),
        "{}",
        text(&o)
    );
    let o = bd(&args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("success: 1 file(s)"), "{out}");
    let later_batch = out.split_whitespace().next().unwrap();
    assert_eq!(records_in_batch(&env.api, later_batch).await, 3);

    let bad = outside.join("bad.json");
    std::fs::write(&bad, "{broken\n").unwrap();
    let o = bd(&[
        "push",
        bad.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("failed") && err.contains("push again"),
        "{err}"
    );

    // Two files failing with their batch: the push's advice, not the daemon's (a failed
    // folder, `retry`), which a push has no use for.
    let also = outside.join("also.json");
    std::fs::write(&also, jsonl(700, 2)).unwrap();
    let o = bd(&[
        "push",
        bad.to_str().unwrap(),
        also.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}: failed with the batch", also.display()))
            && err.contains(
                "does not say which file held the bad rows: fix the file at fault and push again"
            )
            && !err.contains("failed folder")
            && !err.contains("batchdrop retry"),
        "{err}"
    );

    let odd = outside.join("notes.txt");
    std::fs::write(&odd, "x").unwrap();
    let o = bd(&[
        "push",
        odd.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format"));
    let o = bd(&["push", "--dataset", DATASET, "--config", c]).await;
    assert_eq!(o.status.code(), Some(2), "clap usage error: {}", text(&o));
    let o = bd(&[
        "push",
        good.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        "/nonexistent/config.toml",
    ])
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_retry_and_revert_work_while_the_daemon_runs() {
    let env = Env::with_emulator(EmulatorConfig {
        processing_delay_ms: 700,
        revert_gc_delay_ms: 600_000,
        ..EmulatorConfig::default()
    })
    .await;
    let config = env.write_config("", "");
    let c = config.to_str().unwrap();
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());

    // abort: a batch in flight ends aborted; its file goes to the failed folder, not into a
    // new batch.
    write_atomic(&env.drop_dir().join("slow.json"), jsonl(0, 4).as_bytes());
    let batch = eventually(30, "a batch in flight with a platform id", || {
        let config = config.clone();
        async move {
            let s = status_json(&config, None).await;
            s["in_flight"][0]["batch"].as_str().map(str::to_owned)
        }
    })
    .await;
    let o = bd(&["abort", &batch, "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(platform_status(&env, &batch).await, BatchStatus::Aborted);
    let rs = wait_receipts(&env.failed(), 1, 30).await;
    let r = receipt_for(&rs, "slow.json");
    recorded(&config, "slow.json", "failed").await;
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("aborted by the operator"),
        "{r}"
    );
    // A file dropped after the abort is ingested: the aborted one was not sent again meanwhile.
    write_atomic(&env.drop_dir().join("probe.json"), jsonl(900, 2).as_bytes());
    let rs = wait_receipts(&env.archive(), 1, 30).await;
    assert_eq!(rs[0]["file"], "probe.json", "not re-batched: {rs:?}");
    assert_eq!(
        status_json(&config, Some(&batch)).await["batch"]["state"],
        "aborted"
    );

    // retry: the files of the aborted batch come back and are ingested by the daemon.
    let o = bd(&["retry", &batch, "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!env.failed().join("slow.json").exists());
    let rs = wait_receipts(&env.archive(), 2, 30).await;
    let again = receipt_for(&rs, "slow.json")["batch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(again, batch);
    assert_eq!(records_in_batch(&env.api, &again).await, 4);
    let o = bd(&["retry", &batch, "--config", c]).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "nothing left to retry: {}",
        text(&o)
    );

    // revert: the data leaves the dataset; the receipt, still in the archive, says so. The
    // archiver writes and syncs receipts before it records the files as finished, and revert
    // waits for that record: wait for it too.
    recorded(&config, "slow.json", "done").await;
    let o = bd(&["revert", &again, "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(platform_status(&env, &again).await, BatchStatus::Inactive);
    assert!(env.api.list_batch_files(&again).await.unwrap().is_empty());
    let r = receipt_for(&receipts(&env.archive()), "slow.json").clone();
    assert_eq!(r["status"], "reverted", "{r}");
    assert!(r["reverted_at"].is_string());
    assert!(env.archive().join("slow.json").exists());
    assert_eq!(
        status_json(&config, Some(&again)).await["batch"]["state"],
        "reverted"
    );
    let o = bd(&["abort", &again, "--config", c]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already ended"));

    // retry FILE: a rejected file, fixed in the failed folder, comes back by its name.
    std::fs::write(env.drop_dir().join("bad.json"), "{broken\n").unwrap();
    wait_receipts(&env.failed(), 1, 30).await;
    recorded(&config, "bad.json", "failed").await;
    std::fs::write(env.failed().join("bad.json"), jsonl(0, 2)).unwrap();
    let o = bd(&["retry", "bad.json", "--config", c]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rs = wait_receipts(&env.archive(), 3, 30).await;
    assert_eq!(receipt_for(&rs, "bad.json")["status"], "success");
    assert!(!env.failed().join("bad.json.receipt.json").exists());
    daemon.stop().await;
}

fn embedded_config(dir: &Path) -> std::path::PathBuf {
    ConfigFile::embedded()
        .set("state_dir", "estate")
        .watch("edrop", DATASET, |watch| watch)
        .write_to(&dir.join("embedded.toml"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_revert_reach_the_embedded_platform_with_or_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(dir.path());
    let c = config.to_str().unwrap();
    let file = dir.path().join("one.json");
    std::fs::write(&file, jsonl(0, 3)).unwrap();

    // No daemon: push runs the embedded platform itself.
    let o = bd(&[
        "push",
        file.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    // With the daemon (the real binary) holding the state and the platform.
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["run", "--config", c])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url_file = dir.path().join("estate/embedded-url");
    eventually(20, "the daemon records its platform's address", || {
        let ok = url_file.exists();
        async move { ok.then_some(()) }
    })
    .await;
    let two = dir.path().join("two.json");
    std::fs::write(&two, jsonl(10, 2)).unwrap();
    let o = bd(&[
        "push",
        two.to_str().unwrap(),
        "--dataset",
        DATASET,
        "--config",
        c,
    ])
    .await;
    let pushed = text(&o);
    let o2 = bd(&["revert", &first, "--config", c]).await;
    let reverted = text(&o2);
    // The embedded platform accepts only the daemon's own token.
    let token = std::fs::read_to_string(dir.path().join("estate/embedded-token")).unwrap();
    let api = client_with_token(
        std::fs::read_to_string(&url_file).unwrap().trim(),
        token.trim(),
    );
    let first_status = api.get_batch(&first).await.unwrap().map(|b| b.status);
    // SAFETY: stopping our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert_eq!(o.status.code(), Some(0), "{pushed}");
    assert_eq!(o2.status.code(), Some(0), "{reverted}");
    assert!(reverted.contains("of a push (state "), "{reverted}");
    assert_eq!(first_status, Some(BatchStatus::Inactive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_what_is_wrong_with_exit_3_and_what_is_watched_with_0() {
    let env = Env::new().await;
    let good = env.write_config("", "");
    let o = bd(&["check-config", "--config", good.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("-> dataset {DATASET}")), "{out}");
    assert!(out.contains("is valid"), "{out}");

    let blocker = env.dir.path().join("not-a-folder");
    std::fs::write(&blocker, "x").unwrap();
    let bad = ConfigFile::empty()
        .section("platform", |platform| {
            platform
                .set("endpoint", "https://platform.example.com")
                .set("access_token_file", "missing-token")
        })
        .watch("not-a-folder", DATASET, |watch| watch)
        .watch("drop", "d2", |watch| watch)
        .watch("drop/inner", "d3", |watch| watch)
        .write_to(&env.dir.path().join("bad.toml"));
    let o = bd(&["check-config", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing-token") && err.contains("cannot be read"),
        "{err}"
    );
    assert!(
        err.contains("not-a-folder") && err.contains("is not a folder"),
        "{err}"
    );
    assert!(err.contains("drop/inner is inside [[watch]] drop"), "{err}");

    let o = bd(&["check-config", "--config", "/nonexistent.toml"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

/// The systemd unit runs check-config before every start: an OAuth config must pass it (it
/// panicked with exit 101), and a client secret the daemon could not read must fail it.
#[tokio::test]
async fn check_config_passes_an_oauth_config_and_names_an_unreadable_client_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    let secret_value = "s3cr3t-of-check-config";
    std::fs::write(dir.path().join("secret"), secret_value).unwrap();
    let config = dir.path().join("config.toml");
    let write = |secret_file: &str| {
        ConfigFile::empty()
            .set("state_dir", "state")
            .section("platform", |platform| {
                platform.set("endpoint", "https://platform.example.com")
            })
            .section("platform.auth", |auth| {
                auth.set("client_id", "batchdrop-client")
                    .set("scopes", vec!["openid", "AdobeID"])
                    .set("client_secret_file", secret_file)
            })
            .watch("drop", DATASET, |watch| watch)
            .write_to(&config)
    };
    let args = ["check-config", "--config", config.to_str().unwrap()];

    write("secret");
    let o = bd(&args).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !text(&o).contains(secret_value),
        "the secret is never shown"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("OAuth client batchdrop-client"), "{out}");
    assert!(out.contains("is valid"), "{out}");

    // Missing, a folder, empty: each one is named with what to do.
    std::fs::create_dir(dir.path().join("a-folder")).unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    for (file, says) in [
        ("missing", "cannot be read"),
        ("a-folder", "cannot be read"),
        ("empty", "is empty"),
    ] {
        write(file);
        let o = bd(&args).await;
        assert_eq!(o.status.code(), Some(3), "{file}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("[platform.auth] client_secret_file")
                && err.contains(&format!("{file} {says}")),
            "{file}: {err}"
        );
    }
}
