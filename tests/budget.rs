//! The platform's guardrails (issue #20) end to end, against the real emulator: batching
//! (`min_batch_bytes` holds small batches for more files, `seal_bytes` sends big ones without
//! waiting out `max_wait`; `batchdrop status`, the real binary,
//! shows per watch the next batch due and why, and the daily batch budget used) and the
//! record-size limits of Profile-enabled datasets, caught before upload.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::*;

/// `batchdrop status --json` of the config at `config`.
async fn status_json(config: &Path) -> Value {
    let out = bd(&["status", "--json", "--config", config.to_str().unwrap()]).await;
    assert!(out.status.success(), "status: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `schedule` entry of the one watch of the test config (an empty one while the daemon
/// has not made its state database yet).
async fn schedule(config: &Path) -> Value {
    let status = status_json(config).await;
    let all = status["schedule"].as_array().cloned().unwrap_or_default();
    assert!(all.len() <= 1, "one watch: {status}");
    all.first().cloned().unwrap_or(Value::Null)
}

/// No batch was created and no byte uploaded between the two snapshots of the emulator.
fn nothing_spent(
    before: &batchdrop_emulator::EmulatorStats,
    after: &batchdrop_emulator::EmulatorStats,
) {
    assert_eq!(
        after.batches_created, before.batches_created,
        "no batch spent"
    );
    assert_eq!(
        after.bytes_received, before.bytes_received,
        "nothing uploaded"
    );
}

/// Milliseconds since the epoch of an RFC 3339 time `status` printed.
fn ms(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap())
        .unwrap_or_else(|e| panic!("{time}: {e}"))
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_below_min_batch_bytes_is_held_for_more_files_and_status_says_so() {
    let env = Env::new().await;
    // max_wait is 200 ms in the test config: without the hold, the first file would go alone.
    let config_path = env.write_config("", "min_batch_bytes = 400\nmax_hold = \"1h\"");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let small = jsonl(0, 1);
    write_atomic(&env.drop_dir().join("small.json"), small.as_bytes());
    let held = eventually(30, "status shows the small file held", || {
        let path = config_path.clone();
        async move {
            let s = schedule(&path).await;
            (s["ready_files"] == 1 && s["next_batch"]["why"] == "hold").then_some(s)
        }
    })
    .await;
    assert_eq!(held["next_batch"]["bytes"], small.len() as u64, "{held}");
    assert_eq!(held["next_batch"]["due_now"], false, "{held}");
    // Held until max_hold (1 h) after the file came, at the latest.
    let due_in = ms(&held["next_batch"]["due_at"]) - chrono::Utc::now().timestamp_millis();
    assert!(
        (3_000_000..=3_600_000).contains(&due_in),
        "due in {due_in} ms: {held}"
    );
    let text = bd(&["status", "--config", config_path.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("held for min_batch_bytes"), "{text}");

    // Enough bytes: the batch goes, with both files.
    write_atomic(&env.drop_dir().join("large.json"), jsonl(1, 20).as_bytes());
    let receipts = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;
    let batches: std::collections::BTreeSet<&str> = receipts
        .iter()
        .map(|r| r["batch"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "one batch of both files: {receipts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_reaches_seal_bytes_goes_without_waiting_out_max_wait() {
    let env = Env::new().await;
    // max_wait is an hour: only seal_bytes can send a batch within this test.
    let config_path = env.write_config("", "max_wait = \"1h\"\nseal_bytes = 400");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let small = jsonl(0, 1);
    assert!(small.len() < 400);
    write_atomic(&env.drop_dir().join("small.json"), small.as_bytes());
    let waiting = eventually(30, "status shows the small file waiting max_wait", || {
        let path = config_path.clone();
        async move {
            let s = schedule(&path).await;
            (s["ready_files"] == 1 && s["next_batch"]["why"] == "wait").then_some(s)
        }
    })
    .await;
    assert_eq!(waiting["next_batch"]["due_now"], false, "{waiting}");
    let before = env.emulator.stats();

    // The group reaches seal_bytes: it goes now, with both files, an hour before max_wait.
    let large = jsonl(1, 20);
    assert!(small.len() + large.len() >= 400);
    write_atomic(&env.drop_dir().join("large.json"), large.as_bytes());
    let receipts = wait_receipts(&env.archive(), 2, 60).await;
    let after = env.emulator.stats();
    let status = status_json(&config_path).await;
    daemon.stop().await;
    assert!(
        receipts.iter().all(|r| r["status"] == "success"),
        "{receipts:?}"
    );
    let batches: std::collections::BTreeSet<&str> = receipts
        .iter()
        .map(|r| r["batch"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "one batch of both files: {receipts:?}");
    assert_eq!(
        after.batches_created,
        before.batches_created + 1,
        "{status}"
    );
    let first_batch = status["recent_batches"]
        .as_array()
        .and_then(|b| b.first())
        .unwrap_or_else(|| panic!("the batch is listed: {status}"));
    // Sealed well inside the hour the small file would have waited.
    assert!(
        ms(&first_batch["created_at"]) < ms(&waiting["next_batch"]["due_at"]),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_next_batch_held_by_the_daily_budget_and_the_budget_used() {
    let env = Env::new().await;
    // Two a day: one every 12 hours.
    let config_path = env.write_config("", "max_batches_per_day = 2");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    write_atomic(&env.drop_dir().join("first.json"), jsonl(0, 2).as_bytes());
    wait_receipts(&env.archive(), 1, 60).await;
    write_atomic(&env.drop_dir().join("second.json"), jsonl(2, 2).as_bytes());
    let waiting = eventually(30, "status shows the second file waiting", || {
        let path = config_path.clone();
        async move {
            let s = schedule(&path).await;
            (s["ready_files"] == 1).then_some(s)
        }
    })
    .await;
    let status = status_json(&config_path).await;
    daemon.stop().await;
    let first_batch = status["recent_batches"]
        .as_array()
        .and_then(|b| b.first())
        .unwrap_or_else(|| panic!("the first batch is listed: {status}"));
    let sealed = ms(&first_batch["created_at"]);
    let next = &waiting["next_batch"];
    assert_eq!(next["why"], "budget", "{waiting}");
    assert_eq!(next["due_now"], false, "{waiting}");
    let spacing = 12 * 3600 * 1000;
    assert!(
        (ms(&next["due_at"]) - (sealed + spacing)).abs() < 2_000,
        "due 12 h after the first batch ({}): {waiting}",
        first_batch["created_at"]
    );
    let budget = &waiting["budget"];
    assert_eq!(budget["used"], 1, "{waiting}");
    assert_eq!(budget["max_batches_per_day"], 2, "{waiting}");
    assert_eq!(budget["spacing_seconds"], 43_200, "{waiting}");
    assert!(
        (ms(&budget["next_frees_at"]) - (sealed + 2 * spacing)).abs() < 2_000,
        "{waiting}"
    );
    let text = bd(&["status", "--config", config_path.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("budget 1 of 2 batches in the last 24 h")
            && text.contains("the daily batch budget (max_batches_per_day) spaces batches"),
        "{text}"
    );
}

/// A Profile-enabled dataset of an ExperienceEvent schema (10 KB records at most), made
/// through the Catalog as a user of the config's sandbox would; the config points at it.
async fn profile_event_dataset(env: &Env) -> std::path::PathBuf {
    let schema_id = "https://ns.adobe.com/tenant/schemas/visits";
    let schema = serde_json::json!({
        "meta:class": "https://ns.adobe.com/xdm/context/experienceevent",
        "type": "object",
        "properties": {"id": {"type": "integer"}, "note": {"type": "string"}},
    });
    env.emulator
        .register_schema(schema_id, &schema)
        .await
        .unwrap();
    let path = env.write_config("", "");
    let sandbox = batchdrop::config::Config::load(&path)
        .unwrap()
        .platform
        .sandbox;
    let api = env.client_in(&sandbox);
    let tags = [("unifiedProfile".to_owned(), vec!["enabled:true".to_owned()])].into();
    let schema_ref = batchdrop::api::SchemaRef {
        id: schema_id.into(),
        content_type: "application/vnd.adobe.xed-full+json;version=1".into(),
    };
    let dataset = api
        .create_dataset("visits", Some(&schema_ref), &tags)
        .await
        .unwrap();
    env.write(
        &env.config_file()
            .last_watch(|watch| watch.set("dataset", dataset.as_str())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experience_event_over_10_kb_is_refused_before_upload_naming_its_row_and_size() {
    let env = Env::new().await;
    let config_path = profile_event_dataset(&env).await;
    let big = format!("{{\"id\": 2, \"note\": \"{}\"}}", "x".repeat(12_000));
    let content = format!("{{\"id\": 1}}\n{big}\n");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let before = env.emulator.stats();
    write_atomic(&env.drop_dir().join("visits.json"), content.as_bytes());
    let receipts = wait_receipts(&env.failed(), 1, 60).await;
    // The same check from the command line agrees.
    let copy = env.dir.path().join("visits-copy.json");
    std::fs::write(&copy, &content).unwrap();
    let out = bd(&[
        "validate",
        copy.to_str().unwrap(),
        "--dataset",
        &batchdrop::config::Config::load(&config_path)
            .unwrap()
            .watches[0]
            .dataset,
        "--config",
        config_path.to_str().unwrap(),
    ])
    .await;
    daemon.stop().await;
    let receipt = &receipts[0];
    let reason = receipt["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "file 'visits.json' row 2: the record is {} bytes",
            big.len()
        )) && reason.contains("(BATCHDROP-RECORD-SIZE-400)")
            && reason.contains("10 KB for an ExperienceEvent"),
        "{receipt}"
    );
    nothing_spent(&before, &env.emulator.stats());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(printed.contains("BATCHDROP-RECORD-SIZE-400"), "{printed}");
}

/// A Parquet file of `ids` and `names`, one row each.
fn parquet_file(ids: Vec<i64>, names: Vec<&str>) -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
    ])
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_file_with_a_bad_row_is_refused_locally_and_validate_names_the_row() {
    let env = Env::new().await;
    let schema_id = "https://ns.adobe.com/tenant/schemas/people";
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 5}},
    });
    let dataset = "5deac2648a19d218a888d2c2";
    let config_path = env
        .config_on_schema(dataset, schema_id, &schema, "format = \"parquet\"")
        .await;
    let content = parquet_file(vec![1, 2, 3], vec!["Anna", "Friederike", "Bo"]);

    let copy = env.dir.path().join("people.parquet");
    std::fs::write(&copy, &content).unwrap();
    let out = bd(&[
        "validate",
        copy.to_str().unwrap(),
        "--dataset",
        dataset,
        "--json",
        "--config",
        config_path.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let reports: Value =
        serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    let report = &reports[0];
    assert_eq!(report["records"], 3, "{report}");
    assert_eq!(report["problems"][0]["row"], 2, "{report}");
    assert_eq!(report["problems"][0]["code"], "INGEST-1543-400", "{report}");
    assert_eq!(report["problems"][0]["field"], "/name", "{report}");

    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let before = env.emulator.stats();
    write_atomic(&env.drop_dir().join("people.parquet"), &content);
    let receipts = wait_receipts(&env.failed(), 1, 60).await;
    daemon.stop().await;
    let reason = receipts[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("file 'people.parquet' row 2: /name: ")
            && reason.contains("(INGEST-1543-400)"),
        "{}",
        receipts[0]
    );
    nothing_spent(&before, &env.emulator.stats());
}
