//! `.replay` sidecars: an empty sidecar written first, an explicit one written after its file
//! (by batch id and by name), and every sidecar error ending in the failed folder with a
//! receipt saying what to fix.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_sidecar_written_first_replaces_the_earlier_ingestion_of_its_file() {
    let env = Env::with_emulator(keep_replaced_batches()).await;
    let config = env.write_config("", "");
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    let old = ingest(&env, "orders.json", 5, 0).await;
    assert_eq!(records_in_batch(&env.api, &old).await, 5);

    // The sidecar first, then the corrected file.
    write_atomic(&env.drop_dir().join("orders.json.replay"), b"");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let new = ingest(&env, "orders.json", 7, 100).await;
    daemon.stop().await;

    assert_ne!(new, old);
    let r = receipts(&env.archive())
        .into_iter()
        .find(|r| r["batch"] == new.as_str())
        .unwrap();
    assert_eq!(r["replaces"], serde_json::json!([old]), "{r}");
    assert_eq!(r["replay_reason"], "replace");
    assert_eq!(r["sidecar"], "orders.json.replay");
    let archived_sidecar = r["sidecar_archived_to"].as_str().expect("sidecar archived");
    assert!(Path::new(archived_sidecar).exists(), "{archived_sidecar}");
    assert!(!env.drop_dir().join("orders.json.replay").exists());

    // The platform: the old batch is inactive, tagged with its successor, and its data is gone
    // from Data Access, while the new data is there.
    let info = env.api.get_batch(&old).await.unwrap().unwrap();
    assert_eq!(info.status, BatchStatus::Inactive);
    assert_eq!(info.tags.get("acp_successor"), Some(&vec![new.clone()]));
    assert!(env.api.list_batch_files(&old).await.unwrap().is_empty());
    assert_eq!(records_in_batch(&env.api, &new).await, 7);

    // status shows the predecessor as replaced.
    let s = status_json(&config, Some(&old)).await;
    assert_eq!(s["kind"], "batch");
    assert_eq!(s["batch"]["replaced_by"], new.as_str(), "{s}");
    let s = status_json(&config, Some(&new)).await;
    assert_eq!(s["batch"]["replaces"], serde_json::json!([old]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_sidecar_written_after_its_file_replaces_by_batch_id_and_by_name() {
    let env = Env::with_emulator(keep_replaced_batches()).await;
    let daemon = Daemon::start(env.config("", "settle = \"700ms\""));
    let a = ingest(&env, "a.json", 3, 0).await;
    let b = ingest(&env, "sub/b.json", 4, 10).await;

    // The data file first, its sidecar 250 ms later: within `settle`.
    write_atomic(&env.drop_dir().join("sub/c.json"), jsonl(50, 6).as_bytes());
    tokio::time::sleep(Duration::from_millis(250)).await;
    write_atomic(
        &env.drop_dir().join("sub/c.json.replay"),
        format!("replaces = [\"{a}\", \"b.json\"]\nreason = \"corrected prices\"\n").as_bytes(),
    );
    let rs = wait_receipts(&env.archive(), 3, 30).await;
    daemon.stop().await;

    let r = receipt_for(&rs, "sub/c.json");
    assert_eq!(r["status"], "success", "{r}");
    assert_eq!(r["replaces"], serde_json::json!([a, b]), "{r}");
    assert_eq!(r["replay_reason"], "corrected prices");
    assert_eq!(r["sidecar"], "sub/c.json.replay");
    let c = r["batch"].as_str().unwrap();
    for pred in [&a, &b] {
        assert_eq!(platform_status(&env, pred).await, BatchStatus::Inactive);
        assert!(env.api.list_batch_files(pred).await.unwrap().is_empty());
    }
    assert_eq!(records_in_batch(&env.api, c).await, 6);
    assert!(env.archive().join("sub/c.json.replay").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sidecar_error_ends_in_the_failed_folder_with_a_receipt_saying_what_to_fix() {
    const OTHER: &str = "6aaaa2648a19d218a888d2b9";
    let env = Env::new().await;
    env.emulator.ensure_dataset(OTHER, "other").await.unwrap();
    // A batch of another dataset, made directly on the platform.
    let other = env
        .api
        .create_batch(&CreateBatch::new(OTHER, Format::Json))
        .await
        .unwrap()
        .id;
    let body = jsonl(0, 2);
    let len = body.len() as u64;
    env.api
        .put_file(
            &other,
            OTHER,
            "x.json",
            batchdrop::api::Body::from(body),
            len,
        )
        .await
        .unwrap();
    env.api
        .batch_action(&other, batchdrop::api::BatchAction::Complete)
        .await
        .unwrap();

    let daemon = Daemon::start(env.config("", "sidecar_timeout = \"1s\""));
    let drop = env.drop_dir();
    let cases: [(&str, String); 5] = [
        ("malformed.json", "replaces = 3".into()),
        (
            "unknown-name.json",
            "replaces = [\"never-seen.json\"]".into(),
        ),
        (
            "unknown-batch.json",
            "replaces = [\"01ZZZZZZZZZZZZZZZZZZZZZZZZ\"]".into(),
        ),
        ("other-dataset.json", format!("replaces = [\"{other}\"]")),
        ("nothing-earlier.json", String::new()),
    ];
    for (name, sidecar) in &cases {
        write_atomic(&drop.join(format!("{name}.replay")), sidecar.as_bytes());
        write_atomic(&drop.join(name), jsonl(0, 2).as_bytes());
    }
    write_atomic(&drop.join("lonely.json.replay"), b"");
    let rs = wait_receipts(&env.failed(), 6, 30).await;
    daemon.stop().await;

    let expect = [
        (
            "malformed.json",
            "the sidecar malformed.json.replay is not valid",
        ),
        (
            "unknown-name.json",
            "names the predecessor \"never-seen.json\", which is neither a batch nor a file ingested into dataset",
        ),
        (
            "unknown-batch.json",
            "the platform refused the replay of [\"01ZZZZZZZZZZZZZZZZZZZZZZZZ\"] asked by the sidecar unknown-batch.json.replay",
        ),
        ("other-dataset.json", "belongs to dataset"),
        (
            "nothing-earlier.json",
            "no data of a file named nothing-earlier.json is in dataset",
        ),
        (
            "lonely.json.replay",
            "waited 1s for its data file lonely.json, which did not come",
        ),
    ];
    for (file, needle) in expect {
        let r = receipt_for(&rs, file);
        assert_eq!(r["status"], "failed", "{r}");
        let reason = r["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("reason: {r}"));
        assert!(reason.contains(needle), "{file}: {reason}");
        assert!(
            reason.contains("drop") || reason.contains("delete"),
            "says what to do: {reason}"
        );
        assert!(
            env.failed().join(file).exists(),
            "{file} in the failed folder"
        );
        assert!(!drop.join(file).exists(), "{file} left the drop folder");
        if file != "lonely.json.replay" {
            assert_eq!(r["sidecar"], format!("{file}.replay"), "{r}");
            assert!(env.failed().join(format!("{file}.replay")).exists());
            assert!(!drop.join(format!("{file}.replay")).exists());
        }
    }
    assert!(
        receipt_for(&rs, "other-dataset.json")["reason"]
            .as_str()
            .unwrap()
            .contains(OTHER)
    );
    assert!(receipts(&env.archive()).is_empty(), "nothing was ingested");
}
