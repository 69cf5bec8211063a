//! One copy of any content per dataset (issue #26) and watches whose dataset the platform
//! does not know (issue #25), end to end against the real emulator: what the platform holds is
//! read back over its Catalog and Data Access APIs, what the operator sees from receipts,
//! `/readyz` and `batchdrop status`.

use crate::support;

use batchdrop::api::{BatchQuery, BatchStatus};
use batchdrop_emulator::{EmulatorConfig, FaultConfig};
use support::*;

/// The successful batches of the dataset, as the Catalog lists them, with the records Data
/// Access holds for each.
async fn successful_batches(env: &Env) -> Vec<(String, u64)> {
    let batches = env
        .api
        .find_batches(&BatchQuery {
            dataset_id: Some(DATASET.into()),
            status: Some(BatchStatus::Success),
            limit: Some(100),
            ..BatchQuery::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let records = records_in_batch(&env.api, &b.id).await;
        out.push((b.id, records));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_files_dropped_together_are_ingested_once_and_the_rest_name_that_batch() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    let content = jsonl(0, 2);
    let names: Vec<String> = (0..5).map(|i| format!("copy-{i}.json")).collect();
    for name in &names {
        write_atomic(&env.drop_dir().join(name), content.as_bytes());
    }
    let receipts = wait_receipts(&env.archive(), names.len(), 60).await;
    daemon.stop().await;

    let ingested = successful_batches(&env).await;
    assert_eq!(
        ingested.len(),
        1,
        "the content is in exactly one successful batch: {ingested:?}"
    );
    let (batch, records) = &ingested[0];
    assert_eq!(*records, 2, "its two records, once");
    let success: Vec<_> = receipts
        .iter()
        .filter(|r| r["status"] == "success")
        .collect();
    assert_eq!(success.len(), 1, "{receipts:#?}");
    assert_eq!(success[0]["batch"], batch.as_str());
    assert_eq!(success[0]["file_records"], 2, "{}", success[0]);
    let dups: Vec<_> = receipts
        .iter()
        .filter(|r| r["status"] == "duplicate")
        .collect();
    assert_eq!(dups.len(), names.len() - 1, "{receipts:#?}");
    for d in dups {
        assert_eq!(d["duplicate_of"]["batch"], batch.as_str(), "{d}");
        assert_eq!(d["duplicate_of"]["file"], success[0]["file"], "{d}");
        assert!(d["batch"].is_null(), "a duplicate is in no batch: {d}");
    }
    assert!(
        support::receipts(&env.failed()).is_empty(),
        "nothing in the failed folder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_first_copy_fails_a_later_copy_is_ingested_after_all() {
    // The first batch processed fails whatever it holds: the one with the first copy.
    let env = Env::with_emulator(EmulatorConfig {
        faults: FaultConfig {
            fail_first_batches: 1,
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = Daemon::start(env.config("", ""));
    let content = jsonl(10, 2);
    for i in 0..3 {
        write_atomic(
            &env.drop_dir().join(format!("copy-{i}.json")),
            content.as_bytes(),
        );
    }
    let failed = wait_receipts(&env.failed(), 1, 60).await;
    let archived = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;

    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["status"], "failed", "{}", failed[0]);
    let ingested = successful_batches(&env).await;
    assert_eq!(ingested.len(), 1, "{ingested:?}");
    let (batch, records) = &ingested[0];
    assert_eq!(*records, 2);
    assert_ne!(
        failed[0]["batch"],
        batch.as_str(),
        "the failed copy's batch is not the one that ingested the content"
    );
    let success: Vec<_> = archived
        .iter()
        .filter(|r| r["status"] == "success")
        .collect();
    assert_eq!(success.len(), 1, "{archived:#?}");
    assert_eq!(success[0]["batch"], batch.as_str());
    assert_ne!(success[0]["file"], failed[0]["file"]);
    let dup = archived
        .iter()
        .find(|r| r["status"] == "duplicate")
        .expect("the third copy is a duplicate");
    assert_eq!(dup["duplicate_of"]["batch"], batch.as_str(), "{dup}");
}

/// `batchdrop status --json` run beside the daemon, as an operator would.
async fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .arg("status")
        .arg("--json")
        .arg("--config")
        .arg(config)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "status: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `/readyz`: its status code and body.
async fn readyz(state_dir: &std::path::Path) -> (u16, String) {
    let url = admin_url(state_dir).await;
    http_get(&format!("{url}/readyz"))
        .await
        .expect("/readyz answers")
}

/// The daemon in-process with a reload signal the test can send.
fn start_reloadable(
    config: batchdrop::config::Config,
) -> (std::sync::Arc<tokio::sync::Notify>, Daemon) {
    let reload = std::sync::Arc::new(tokio::sync::Notify::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(batchdrop::daemon::run(
        config,
        batchdrop::daemon::RunOptions {
            once: false,
            reload: Some(reload.clone()),
        },
        shutdown.clone(),
    ));
    (reload, Daemon { shutdown, handle })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_deleted_while_the_daemon_runs_blocks_its_watch_until_it_is_back() {
    let env = Env::new().await;
    let config_path = env.write_config("", "");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    write_atomic(&env.drop_dir().join("before.json"), jsonl(0, 3).as_bytes());
    wait_receipts(&env.archive(), 1, 60).await;
    assert_eq!(readyz(&env.state_dir()).await.0, 200);

    env.api.delete_dataset(DATASET).await.unwrap();
    let names = ["during-1.json", "during-2.json"];
    for (i, name) in names.iter().enumerate() {
        write_atomic(
            &env.drop_dir().join(name),
            jsonl(100 * (i + 1), 4).as_bytes(),
        );
    }
    let blocked = eventually(60, "status shows the watch as blocked", || async {
        let s = status_json(&config_path).await;
        let b = s["blocked"].as_array().cloned().unwrap_or_default();
        (!b.is_empty()).then_some(b)
    })
    .await;
    assert_eq!(blocked.len(), 1, "{blocked:#?}");
    assert_eq!(blocked[0]["dataset"], DATASET);
    assert_eq!(blocked[0]["watches"], serde_json::json!(["drop"]));
    // /readyz serves facts at most a couple of seconds old: the block shows within that.
    let (code, body) = eventually(30, "readyz reports the block", || async {
        let r = readyz(&env.state_dir()).await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("watch drop is blocked") && body.contains(DATASET),
        "{body}"
    );
    // Nothing failed, nothing moved: the files wait where they were dropped.
    for name in names {
        assert!(env.drop_dir().join(name).exists(), "{name} stays in place");
    }
    assert!(support::receipts(&env.failed()).is_empty());
    assert_eq!(support::receipts(&env.archive()).len(), 1);

    env.emulator
        .ensure_dataset(DATASET, "test dataset")
        .await
        .unwrap();
    let receipts = wait_receipts(&env.archive(), 3, 90).await;
    let (code, body) = eventually(30, "readyz is ready again", || async {
        let r = readyz(&env.state_dir()).await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        status_json(&config_path).await["blocked"],
        serde_json::json!([])
    );
    daemon.stop().await;

    let mut batches = std::collections::BTreeSet::new();
    for name in names {
        let r = receipts.iter().find(|r| r["file"] == name).unwrap();
        assert_eq!(r["status"], "success", "{r}");
        assert_eq!(r["file_records"], 4, "{r}");
        batches.insert(r["batch"].as_str().unwrap().to_owned());
    }
    let mut records = 0;
    for b in &batches {
        records += records_in_batch(&env.api, b).await;
    }
    assert_eq!(records, 8, "both files are in the platform, once");
    assert!(
        support::receipts(&env.failed()).is_empty(),
        "nothing in _failed/"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_missing_dataset_resumes_when_the_config_is_fixed_and_reloaded() {
    let env = Env::new().await;
    let wrong = "0000000000000000000000ff";
    let config_path = env.write(
        &env.config_file()
            .last_watch(|watch| watch.set("dataset", wrong)),
    );
    let (reload, daemon) = start_reloadable(batchdrop::config::Config::load(&config_path).unwrap());
    for i in 0..2 {
        write_atomic(
            &env.drop_dir().join(format!("f{i}.json")),
            jsonl(10 * i, 3).as_bytes(),
        );
    }
    eventually(60, "the watch is blocked", || async {
        let s = status_json(&config_path).await;
        (s["blocked"][0]["dataset"] == wrong).then_some(())
    })
    .await;
    assert!(support::receipts(&env.failed()).is_empty());

    env.write(&env.config_file());
    reload.notify_one();
    let receipts = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;
    for r in &receipts {
        assert_eq!(r["status"], "success", "{r}");
        assert_eq!(
            r["dataset"], DATASET,
            "ingested where the fixed config says: {r}"
        );
        assert_eq!(
            records_in_batch(&env.api, r["batch"].as_str().unwrap()).await,
            if receipts[0]["batch"] == receipts[1]["batch"] {
                6
            } else {
                3
            }
        );
    }
    assert!(support::receipts(&env.failed()).is_empty());
    assert_eq!(
        status_json(&config_path).await["blocked"],
        serde_json::json!([])
    );
}

/// A daemon process that is killed if the test ends before it stopped it.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_added_by_sighup_on_the_embedded_platform_ingests_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("embedded.toml");
    let first = ConfigFile::embedded()
        .set("admin_listen", "off")
        .watch("a", DATASET, |watch| watch);
    first.write_to(&config);
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = KillOnDrop(Some(
        std::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "batchdrop=info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let url_file = dir.path().join("state/embedded-url");
    let url = eventually(60, "the embedded platform", || {
        let u = std::fs::read_to_string(&url_file).ok();
        async move { u }
    })
    .await;

    // As a new user would: append a watch on dataset `b` and send SIGHUP.
    first.watch("b", "b", |watch| watch).write_to(&config);
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    // SAFETY: kill(2) on the pid of a child this test spawned; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    write_atomic(&dir.path().join("b/new.json"), jsonl(0, 7).as_bytes());
    let receipts = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        wait_receipts(&dir.path().join("b/_archive"), 1, 120),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no receipt for b/new.json; the daemon's log:\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        )
    });
    // The embedded platform takes only its own token (state_dir/embedded-token).
    let token = std::fs::read_to_string(dir.path().join("state/embedded-token")).unwrap();
    let api = client_with_token(&url, token.trim());
    let records = records_in_batch(&api, receipts[0]["batch"].as_str().unwrap()).await;
    let mut child = child.0.take().unwrap();
    // SAFETY: kill(2) on the pid of a child this test spawned; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(receipts[0]["status"], "success", "{}\n{log}", receipts[0]);
    assert_eq!(receipts[0]["dataset"], "b");
    assert_eq!(records, 7);
    assert!(
        support::receipts(&dir.path().join("b/_failed")).is_empty(),
        "{log}"
    );
}

/// Runs `batchdrop push FILES --dataset D --config C`.
async fn push(
    config: &std::path::Path,
    dataset: &str,
    files: &[&std::path::Path],
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"));
    cmd.arg("push");
    for f in files {
        cmd.arg(f);
    }
    cmd.args(["--dataset", dataset, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap()
}

/// Runs `batchdrop revert BATCH --config C`.
async fn revert(config: &std::path::Path, batch: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["revert", batch, "--config"])
        .arg(config)
        .output()
        .await
        .unwrap()
}

/// The batch a push's output names on its success line (`BATCH success: ...`).
fn success_batch(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains(" success: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("a success line: {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_beside_the_daemon_sends_no_content_twice() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    write_atomic(&env.drop_dir().join("dropped.json"), jsonl(0, 3).as_bytes());
    let dropped = wait_receipts(&env.archive(), 1, 60).await;
    let daemons_batch = dropped[0]["batch"].as_str().unwrap().to_owned();

    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let again = outside.join("again.json");
    std::fs::write(&again, jsonl(0, 3)).unwrap();
    let (new1, new2) = (outside.join("new-1.json"), outside.join("new-2.json"));
    std::fs::write(&new1, jsonl(50, 4)).unwrap();
    std::fs::write(&new2, jsonl(50, 4)).unwrap();
    let o = push(&config, DATASET, &[&again, &new1, &new2]).await;
    daemon.stop().await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}");
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("a line for {name}: {stdout}"))
            .to_owned()
    };
    let again_line = line("again.json");
    assert!(
        again_line.contains("duplicate") && again_line.contains(&daemons_batch),
        "names the daemon's batch: {again_line}"
    );
    assert!(line("new-2.json").contains("duplicate"), "{stdout}");
    let pushed = success_batch(&stdout);
    assert_eq!(
        records_in_batch(&env.api, &pushed).await,
        4,
        "one copy of new-*.json, nothing of again.json"
    );
    let batches = successful_batches(&env).await;
    assert_eq!(batches.len(), 2, "the daemon's and the push's: {batches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_sends_no_content_another_push_ingested() {
    // A script pushing a folder that grows (each run names other files, so each run is
    // another push) must not send again what an earlier run ingested.
    let env = Env::new().await;
    let config = env.write_config("", "");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let write = |name: &str, content: String| {
        let path = outside.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let a = write("a.json", jsonl(0, 3));
    let b = write("b.json", jsonl(10, 2));
    let o = push(&config, DATASET, &[&a, &b]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let first = success_batch(&String::from_utf8_lossy(&o.stdout));

    let copy = write("copy-of-a.json", jsonl(0, 3));
    let c = write("c.json", jsonl(20, 4));
    let o = push(&config, DATASET, &[&a, &copy, &c]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    for name in ["/a.json", "/copy-of-a.json"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("a line for {name}: {stdout}"));
        assert!(
            line.contains("duplicate") && line.contains("another push") && line.contains(&first),
            "names the earlier push's batch: {line}"
        );
    }
    let second = success_batch(&stdout);
    assert_eq!(
        records_in_batch(&env.api, &second).await,
        4,
        "c.json only, nothing of a.json or its copy"
    );

    // All of it held elsewhere: nothing is sent, and that is a success.
    let o = push(&config, DATASET, &[&b]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout.contains("b.json duplicate"), "{stdout}");
    let batches = successful_batches(&env).await;
    assert_eq!(
        batches.len(),
        2,
        "the first push's and the second's: {batches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_push_batch_is_not_pushed_again_by_its_push_but_frees_its_content() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let a = outside.join("a.json");
    std::fs::write(&a, jsonl(0, 3)).unwrap();
    let o = push(&config, DATASET, &[&a]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let pushed = success_batch(&String::from_utf8_lossy(&o.stdout));
    let status = |json: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"));
        cmd.arg("status");
        if json {
            cmd.arg("--json");
        }
        cmd.arg(&pushed).arg("--config").arg(&config).output()
    };
    let o = status(false).await.unwrap();
    let history = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        history.starts_with(&format!("batch {pushed}"))
            && history.contains("pushed by `batchdrop push` (state ")
            && history.contains("a.json"),
        "{history}"
    );

    // The daemon's state does not know the batch; the push's state does, and records it.
    let o = revert(&config, &pushed).await;
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        said.starts_with(&format!("reverted batch {pushed} of a push (state ")),
        "{said}"
    );
    assert!(successful_batches(&env).await.is_empty(), "the data is out");
    let o = status(true).await.unwrap();
    let history: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(history["batch"]["state"], "reverted", "{history:#}");
    assert!(
        history["push_state"]
            .as_str()
            .is_some_and(|dir| dir.starts_with(&env.state_dir().join("push").display().to_string())),
        "{history:#}"
    );

    // The same push again (a script on a schedule) does not undo the revert.
    let o = push(&config, DATASET, &[&a]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr.contains(&format!("batch {pushed} of an earlier push of these files"))
            && stderr.contains("was reverted")
            && stderr.contains("delete that folder and push again"),
        "{stderr}"
    );
    assert!(
        successful_batches(&env).await.is_empty(),
        "nothing was sent"
    );

    // Another push of the same content is no longer held back by the reverted batch.
    let copy = outside.join("copy-of-a.json");
    std::fs::write(&copy, jsonl(0, 3)).unwrap();
    let o = push(&config, DATASET, &[&copy]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(!stdout.contains("duplicate"), "{stdout}");
    let batches = successful_batches(&env).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].1, 3, "{batches:?}");

    // With the pushes' states gone, no state here knows the batch: the platform alone is
    // asked, and the output says so.
    let pushes = env.state_dir().join("push");
    std::fs::remove_dir_all(&pushes).unwrap();
    let o = revert(&config, &batches[0].0).await;
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        said.contains("is not one of this daemon's") && said.contains("asked to revert it"),
        "{said}"
    );
    assert!(successful_batches(&env).await.is_empty(), "the data is out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_batch_let_go_with_no_wait_is_reverted_on_the_platform() {
    // Its push state stops at `processing`: only the platform knows it succeeded, and the
    // data must be able to leave without running that push again.
    let env = Env::new().await;
    let config = env.write_config("", "");
    let a = env.dir.path().join("a.json");
    std::fs::write(&a, jsonl(0, 3)).unwrap();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .arg("push")
        .arg(&a)
        .args(["--no-wait", "--dataset", DATASET, "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let batch = eventually(30, "the platform ends the batch", || async {
        successful_batches(&env).await.pop().map(|(id, _)| id)
    })
    .await;

    let o = revert(&config, &batch).await;
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        said.contains("the platform was asked to revert it")
            && said.contains("that the push did not follow to its end")
            && said.contains("delete that folder"),
        "{said}"
    );
    assert!(successful_batches(&env).await.is_empty(), "the data is out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_a_pipe_or_a_folder_is_refused_naming_what_it_is() {
    // A push reads its files more than once (to hash, to upload, after a restart).
    let env = Env::new().await;
    let config = env.write_config("", "");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["push", "/dev/stdin", "--dataset", DATASET, "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The push may refuse before it reads: a closed pipe is no failure here.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, jsonl(0, 2).as_bytes()).await;
    drop(stdin);
    let o = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr.contains("/dev/stdin is a FIFO (named pipe); push takes regular files"),
        "{stderr}"
    );

    let o = push(&config, DATASET, &[env.dir.path()]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        stderr.contains(&format!(
            "{} is a folder; push takes regular files",
            env.dir.path().display()
        )),
        "{stderr}"
    );
    assert!(successful_batches(&env).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_missing_dataset_fails_nothing_and_says_what_to_do() {
    let env = Env::new().await;
    let config = env.write_config("", "");
    let file = env.dir.path().join("p.json");
    std::fs::write(&file, jsonl(0, 2)).unwrap();
    let missing = "0000000000000000000000aa";
    let o = push(&config, missing, &[&file]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stderr}");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr.contains(&format!("dataset {missing} does not exist"))
            && stderr.contains("run the same push again"),
        "{stderr}"
    );
    assert!(file.exists());

    // Created meanwhile: the same push again goes through.
    env.emulator.ensure_dataset(missing, "late").await.unwrap();
    let o = push(&config, missing, &[&file]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let batch = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(records_in_batch(&env.api, &batch).await, 2);
}
