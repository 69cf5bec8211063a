//! Outcomes a user can act on (#19), against the emulator that is as terse as the platform: a
//! failed batch's diagnostics in every receipt, `on_batch_failure` (`fail`, `isolate` within its
//! cap), partial ingestion, batches stuck on the platform, and empty files refused locally.
//! The real daemon (in-process, or the binary for `status` and `abort`), the real emulator over
//! HTTP on 127.0.0.1.

use crate::support;

use std::path::Path;

use batchdrop::api::MetaDir;
use batchdrop_emulator::{EmulatorConfig, FaultConfig};
use serde_json::{Value, json};
use support::*;

/// Ten files of ten rows; `bad.json` holds two rows that cannot be parsed among eight good
/// ones. Written before the daemon starts, so that they fill one batch (`max_files = 10`).
fn ten_files_one_with_two_bad_rows(env: &Env) {
    for i in 0..9 {
        write_atomic(
            &env.drop_dir().join(format!("good-{i}.json")),
            jsonl(i * 10, 10).as_bytes(),
        );
    }
    let mut bad = jsonl(100, 4);
    bad.push_str("{broken\n");
    bad.push_str(&jsonl(104, 4));
    bad.push_str("{also broken\n");
    write_atomic(&env.drop_dir().join("bad.json"), bad.as_bytes());
}

/// One batch of all ten, sealed at once.
const ONE_BATCH: &str = "max_files = 10\nmax_wait = \"1m\"";

fn receipt_of<'a>(receipts: &'a [Value], file: &str) -> &'a Value {
    receipts
        .iter()
        .find(|r| r["file"] == file)
        .unwrap_or_else(|| panic!("no receipt for {file} in {receipts:#?}"))
}

/// The diagnostics a receipt carries for the two unparsable rows.
fn assert_two_bad_rows(receipt: &Value) {
    let d = &receipt["diagnostics"];
    assert!(
        d["error_codes"]
            .as_array()
            .unwrap()
            .contains(&json!({"code": "INGEST-1401-400", "records": 2})),
        "{receipt:#}"
    );
    let sample = d["failed_rows_sample"].as_array().unwrap();
    assert_eq!(sample.len(), 2, "{receipt:#}");
    assert_eq!(sample[0]["code"], "1401");
    assert_eq!(sample[0]["record"], "{broken");
    assert_eq!(sample[1]["record"], "{also broken");
    assert_eq!(d["error_files"], json!(["parsing_errors_0.json"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_every_file_of_the_batch_fails_with_its_codes_counts_and_sample_rows() {
    let env = Env::new().await;
    ten_files_one_with_two_bad_rows(&env);
    let daemon = Daemon::start(env.config("", ONE_BATCH));
    let failed = wait_receipts(&env.failed(), 10, 60).await;
    daemon.stop().await;

    assert!(receipts(&env.archive()).is_empty());
    let batch = &failed[0]["batch"];
    for r in &failed {
        assert_eq!(r["status"], "failed", "{r:#}");
        assert_eq!(&r["batch"], batch, "one batch");
        assert_two_bad_rows(r);
        assert!(r["errors"].to_string().contains("INGEST-1401-400"), "{r:#}");
        // What happened, and what to do, since nothing tells which file was at fault.
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with(&format!(
                "batch {} failed: INGEST-1401-400: ",
                batch.as_str().unwrap()
            )) && reason.contains("does not say which of the 10 files failing with it")
                && reason.contains(&format!("`batchdrop retry {}`", batch.as_str().unwrap()))
                && reason.contains("on_batch_failure = \"isolate\""),
            "{r:#}"
        );
    }
    assert_eq!(env.emulator.stats().batches_created, 1);
    // The client reads the batch's input files too: the ten sent, and nothing else.
    let batch = batch.as_str().unwrap();
    let listed = env
        .api
        .batch_meta_listing(batch, MetaDir::InputFiles)
        .await
        .unwrap();
    let mut paths = Vec::new();
    for file in &listed {
        paths.extend(env.api.batch_input_paths(batch, &file.name).await.unwrap());
    }
    paths.sort();
    let mut sent: Vec<String> = failed
        .iter()
        .map(|r| r["file"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    assert_eq!(paths, sent);

    // As the receipts advise: delete the file at fault, retry the batch.
    std::fs::remove_file(env.failed().join("bad.json")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["retry", batch, "--config"])
        .arg(env.write_config("", ONE_BATCH))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        said.contains("left out: bad.json is no longer at")
            && said.matches("requeued good-").count() == 9
            && said.contains("the daemon takes these 9 files again"),
        "{said}"
    );
    assert!(env.drop_dir().join("good-0.json").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_isolate_nine_files_succeed_and_only_the_bad_one_fails_within_the_cap() {
    let env = Env::new().await;
    ten_files_one_with_two_bad_rows(&env);
    let extra =
        format!("{ONE_BATCH}\non_batch_failure = \"isolate\"\nisolate_max_extra_batches = 8");
    let daemon = Daemon::start(env.config("", &extra));
    let failed = wait_receipts(&env.failed(), 1, 90).await;
    let archived = wait_receipts(&env.archive(), 9, 90).await;
    daemon.stop().await;

    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["file"], "bad.json");
    assert_two_bad_rows(&failed[0]);
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("failed: INGEST-1401-400: ") && reason.contains("fix the file"),
        "alone at last, it is the culprit: {reason}"
    );
    assert!(archived.iter().all(|r| r["status"] == "success"));
    assert!(archived.iter().all(|r| r["file"] != "bad.json"));
    // Bisection of ten files: at most 2 extra batches per halving (10, 5, 3, 2).
    let created = env.emulator.stats().batches_created;
    assert!((3..=9).contains(&created), "{created} batches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_isolate_the_files_left_together_at_the_cap_fail_together() {
    let env = Env::new().await;
    ten_files_one_with_two_bad_rows(&env);
    let extra =
        format!("{ONE_BATCH}\non_batch_failure = \"isolate\"\nisolate_max_extra_batches = 2");
    let daemon = Daemon::start(env.config("", &extra));
    // One halving (two extra batches): the bad half's five files fail together.
    let failed = wait_receipts(&env.failed(), 5, 90).await;
    let archived = wait_receipts(&env.archive(), 5, 90).await;
    daemon.stop().await;

    assert_eq!((failed.len(), archived.len()), (5, 5));
    let reason = receipt_of(&failed, "bad.json")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("which of the 5 files failing with it")
            && reason.contains("isolate_max_extra_batches was reached"),
        "{reason}"
    );
    assert_eq!(env.emulator.stats().batches_created, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_partial_ingestion_all_ten_succeed_and_the_receipts_show_the_failed_rows() {
    let env = Env::new().await;
    ten_files_one_with_two_bad_rows(&env);
    let extra = format!("{ONE_BATCH}\npartial_ingestion_percent = 10");
    let daemon = Daemon::start(env.config("", &extra));
    let archived = wait_receipts(&env.archive(), 10, 60).await;
    daemon.stop().await;

    assert!(receipts(&env.failed()).is_empty());
    for r in &archived {
        assert_eq!(r["status"], "success", "{r:#}");
        assert_eq!(r["partial_ingestion"], true, "{r:#}");
    }
    let bad = receipt_of(&archived, "bad.json");
    assert_two_bad_rows(bad);
    assert_eq!(bad["records"]["failedRecordCount"], 2);
    assert_eq!(bad["records"]["outputRecordCount"], 98);
    // Each file's own count, from the Data Access listing.
    assert_eq!(bad["file_records"], 8, "{bad:#}");
    assert_eq!(receipt_of(&archived, "good-0.json")["file_records"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_never_reaches_the_platform() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    write_atomic(&env.drop_dir().join("empty.json"), b"");
    write_atomic(&env.drop_dir().join("data.json"), jsonl(0, 3).as_bytes());
    let failed = wait_receipts(&env.failed(), 1, 60).await;
    let archived = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;

    assert_eq!(failed[0]["file"], "empty.json");
    assert_eq!(failed[0]["batch"], Value::Null, "{:#}", failed[0]);
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("empty") && reason.contains("exclude"),
        "{reason}"
    );
    assert_eq!(archived[0]["file"], "data.json");
    assert_eq!(env.emulator.stats().puts, 1, "only data.json was sent");
}

fn stalling_emulator() -> EmulatorConfig {
    EmulatorConfig {
        faults: FaultConfig {
            stalled_probability: 1.0,
            ..FaultConfig::default()
        },
        ..EmulatorConfig::default()
    }
}

async fn status_json(config: &Path) -> Value {
    let o = bd(&["status", "--json", "--config", config.to_str().unwrap()]).await;
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_batch_is_reported_and_abort_clears_it() {
    let env = Env::with_emulator(stalling_emulator()).await;
    let config = env.write_config("", "");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    write_atomic(&env.drop_dir().join("stuck.json"), jsonl(0, 3).as_bytes());
    let batch = eventually(60, "the batch reported stuck in `status`", || {
        let config = config.clone();
        async move {
            let s = status_json(&config).await;
            let b = &s["in_flight"][0];
            b["stuck_since"].as_str()?;
            b["batch"].as_str().map(str::to_owned)
        }
    })
    .await;
    let o = bd(&["status", "--config", config.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("STUCK"), "{text}");
    let admin = std::fs::read_to_string(env.state_dir().join("admin-addr")).unwrap();
    eventually(30, "batchdrop_batches_stuck 1 on /metrics", || {
        let url = format!("http://{admin}/metrics");
        async move {
            let (_, text) = http_get(&url).await?;
            text.lines()
                .any(|l| l == "batchdrop_batches_stuck 1")
                .then_some(())
        }
    })
    .await;
    let (ready, _) = http_get(&format!("http://{admin}/readyz")).await.unwrap();
    assert_eq!(ready, 200, "a stuck batch does not make the daemon unready");

    let o = bd(&["abort", &batch, "--config", config.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let failed = wait_receipts(&env.failed(), 1, 30).await;
    assert_eq!(failed[0]["file"], "stuck.json");
    let s = status_json(&config).await;
    daemon.stop().await;
    assert_eq!(s["in_flight"], json!([]), "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_batch_is_given_up_after_give_up_after_with_a_receipt_that_says_why() {
    let env = Env::with_emulator(stalling_emulator()).await;
    let daemon = Daemon::start(env.config("give_up_after = \"2s\"", ""));
    write_atomic(&env.drop_dir().join("stuck.json"), jsonl(0, 3).as_bytes());
    let failed = wait_receipts(&env.failed(), 1, 60).await;
    daemon.stop().await;

    let r = &failed[0];
    assert_eq!(r["status"], "failed");
    let errors = r["errors"].to_string();
    assert!(
        errors.contains("stalled") && errors.contains("give_up_after") && errors.contains("retry"),
        "{r:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_processing_past_max_processing_age_is_reported_and_still_finishes() {
    // Processing takes a few seconds; one second is the most the config allows.
    let env = Env::with_emulator(EmulatorConfig {
        processing_delay_ms: 2500,
        ..EmulatorConfig::default()
    })
    .await;
    let config = env.write_config("max_processing_age = \"1s\"", "");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    write_atomic(&env.drop_dir().join("slow.json"), jsonl(0, 3).as_bytes());
    eventually(60, "the slow batch reported stuck in `status`", || {
        let config = config.clone();
        async move {
            let s = status_json(&config).await;
            s["in_flight"][0]["stuck_since"].as_str().map(str::to_owned)
        }
    })
    .await;
    let archived = wait_receipts(&env.archive(), 1, 60).await;
    let s = status_json(&config).await;
    daemon.stop().await;
    assert_eq!(archived[0]["status"], "success");
    assert_eq!(s["in_flight"], json!([]), "no longer stuck: {s:#}");
}
