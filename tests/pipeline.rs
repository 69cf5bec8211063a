//! The daemon end to end, as an operator sees it: files dropped into a real folder end up in
//! the (emulated) platform, checked through Data Access, and archived with receipts.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use support::*;

fn parquet_bytes(rows: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let ids = Int64Array::from_iter_values(0..rows);
    let names = StringArray::from_iter_values((0..rows).map(|i| format!("person {i}")));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(names)]).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_csv_and_parquet_files_are_ingested_and_archived_with_receipts() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    let drop = env.drop_dir();
    write_atomic(&drop.join("people.json"), jsonl(0, 25).as_bytes());
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/CRM_profiles.csv"
        ),
        drop.join("crm.csv"),
    )
    .unwrap();
    write_atomic(&drop.join("people.parquet"), &parquet_bytes(40));

    let receipts = wait_receipts(&env.archive(), 3, 60).await;
    daemon.stop().await;

    let csv_rows = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/CRM_profiles.csv"
    ))
    .unwrap()
    .lines()
    .filter(|l| !l.trim().is_empty())
    .count() as u64
        - 1;
    for (name, expected) in [
        ("people.json", 25),
        ("crm.csv", csv_rows),
        ("people.parquet", 40),
    ] {
        let r = receipts
            .iter()
            .find(|r| r["file"] == name)
            .unwrap_or_else(|| panic!("receipt for {name}"));
        assert_eq!(r["status"], "success", "{r}");
        assert_eq!(r["dataset"], DATASET);
        assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
        let batch = r["batch"].as_str().unwrap();
        assert_eq!(
            records_in_batch(&env.api, batch).await,
            expected,
            "records of {name} in the platform"
        );
        assert!(env.archive().join(name).exists(), "{name} archived");
        assert!(!drop.join(name).exists(), "{name} left the drop folder");
    }
}

/// Data Access lists a batch's files 100 at a time: each receipt's own record count comes from
/// that listing, so a batch of more than 100 files needs every page of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_a_batch_over_one_listing_page_each_carry_their_own_record_count() {
    let env = Env::new().await;
    let drop = env.drop_dir();
    // Present before the daemon starts, so that its first scan puts them in one batch.
    for i in 0..130 {
        write_atomic(
            &drop.join(format!("f{i:03}.json")),
            jsonl(i * 10, 1 + i % 7).as_bytes(),
        );
    }
    let daemon = Daemon::start(env.config("", "max_wait = \"3s\""));
    let receipts = wait_receipts(&env.archive(), 130, 120).await;
    daemon.stop().await;
    let mut batches = std::collections::BTreeMap::<String, usize>::new();
    for r in &receipts {
        let name = r["file"].as_str().unwrap();
        let i: usize = name[1..4].parse().unwrap();
        assert_eq!(r["status"], "success", "{r}");
        assert_eq!(r["file_records"], 1 + i % 7, "{name}: {r}");
        *batches
            .entry(r["batch"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let mut total = 0;
    for batch in batches.keys() {
        total += records_in_batch(&env.api, batch).await;
    }
    assert_eq!(total, (0..130).map(|i| 1 + i % 7).sum::<usize>() as u64);
    assert!(
        batches.values().any(|&files| files > 100),
        "at least one batch of over 100 files (one listing page): {batches:?}"
    );
}

/// The listing of a large batch is asked several pages at a time (`list_batch_files`): every
/// page must be read once and none dropped, past the first wave of pages too, or a file's
/// count in its receipt is doubled or missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_a_batch_listed_in_several_waves_of_pages_carry_their_own_record_count() {
    const FILES: usize = 1_050;
    let env = Env::new().await;
    let drop = env.drop_dir();
    // Present before the daemon starts, so that its first scan puts them in one batch.
    for i in 0..FILES {
        write_atomic(
            &drop.join(format!("f{i:04}.json")),
            jsonl(i * 10, 1 + i % 5).as_bytes(),
        );
    }
    let daemon = Daemon::start(env.config("", "max_wait = \"3s\""));
    let receipts = wait_receipts(&env.archive(), FILES, 300).await;
    daemon.stop().await;
    let mut batches = std::collections::BTreeSet::new();
    for r in &receipts {
        let name = r["file"].as_str().unwrap();
        let i: usize = name[1..5].parse().unwrap();
        assert_eq!(r["status"], "success", "{r}");
        assert_eq!(r["file_records"], 1 + i % 5, "{name}: {r}");
        batches.insert(r["batch"].as_str().unwrap().to_owned());
    }
    let mut listed = Vec::new();
    for batch in &batches {
        for file in env.api.list_batch_files(batch).await.unwrap() {
            listed.push(file.name.unwrap());
        }
    }
    listed.sort();
    let expected: Vec<String> = (0..FILES).map(|i| format!("f{i:04}.json")).collect();
    assert_eq!(listed, expected, "each file listed once");
    assert_eq!(batches.len(), 1, "one batch of {FILES} files: {batches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_files_are_grouped_into_batches_within_max_files() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", "max_files = 3\nmax_wait = \"1s\""));
    // 45 files: more than one page of ready files (6 x max_files + 1 = 19) for the batcher.
    for i in 0..45 {
        write_atomic(
            &env.drop_dir().join(format!("f{i}.json")),
            jsonl(i * 10, 10).as_bytes(),
        );
    }
    let receipts = wait_receipts(&env.archive(), 45, 90).await;
    daemon.stop().await;
    let mut per_batch = std::collections::BTreeMap::<String, usize>::new();
    for r in &receipts {
        assert_eq!(r["status"], "success");
        *per_batch
            .entry(r["batch"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        per_batch.values().all(|&n| n <= 3),
        "no batch over max_files: {per_batch:?}"
    );
    assert!(
        per_batch.len() >= 15,
        "45 files need at least 15 batches of 3: {per_batch:?}"
    );
    let mut total = 0;
    for b in per_batch.keys() {
        total += records_in_batch(&env.api, b).await;
    }
    assert_eq!(total, 450, "every record exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_slowly_is_not_taken_before_it_is_complete() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", "settle = \"700ms\""));
    let path = env.drop_dir().join("slow.json");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        // Pieces arrive every 250 ms, well inside `settle`, for about 2.5 s.
        for i in 0..10 {
            f.write_all(jsonl(i * 5, 5).as_bytes()).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let receipts = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;
    assert_eq!(receipts.len(), 1, "one file, one receipt: {receipts:?}");
    let batch = receipts[0]["batch"].as_str().unwrap();
    assert_eq!(
        records_in_batch(&env.api, batch).await,
        50,
        "the whole file, not a prefix"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_into_the_folder_is_taken_and_temp_names_are_not() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    let tmp = env.drop_dir().join("incoming.json.part");
    std::fs::write(&tmp, jsonl(0, 3)).unwrap();
    // A file written after it is ingested: the .part file was seen by then, and left alone.
    write_atomic(&env.drop_dir().join("later.json"), jsonl(10, 3).as_bytes());
    let receipts = wait_receipts(&env.archive(), 1, 60).await;
    assert_eq!(receipts[0]["file"], "later.json");
    assert!(tmp.exists(), "a .part file is never taken");
    std::fs::rename(&tmp, env.drop_dir().join("incoming.json")).unwrap();
    let receipts = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;
    let incoming = receipts
        .iter()
        .find(|r| r["file"] == "incoming.json")
        .expect("taken once renamed");
    assert_eq!(incoming["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_go_through_chunks() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("large_file_threshold = 4096\nchunk_size = 1000", ""));
    let content = jsonl(0, 300); // ~9 KB: ten chunks
    assert!(content.len() > 9000);
    write_atomic(&env.drop_dir().join("big.json"), content.as_bytes());
    let receipts = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;
    assert_eq!(receipts[0]["status"], "success", "{}", receipts[0]);
    let batch = receipts[0]["batch"].as_str().unwrap();
    assert_eq!(records_in_batch(&env.api, batch).await, 300);
    let stats = env.emulator.stats();
    assert!(stats.chunks_received >= 10, "sent in chunks: {stats:?}");
    assert_eq!(stats.duplicate_acknowledged_chunks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_content_dropped_again_is_a_duplicate_naming_the_earlier_batch() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    write_atomic(&env.drop_dir().join("a.json"), jsonl(0, 5).as_bytes());
    let first = wait_receipts(&env.archive(), 1, 60).await;
    let batch = first[0]["batch"].as_str().unwrap().to_owned();
    write_atomic(&env.drop_dir().join("again.json"), jsonl(0, 5).as_bytes());
    let both = wait_receipts(&env.archive(), 2, 60).await;
    daemon.stop().await;
    let dup = both.iter().find(|r| r["file"] == "again.json").unwrap();
    assert_eq!(dup["status"], "duplicate", "{dup}");
    assert_eq!(dup["duplicate_of"]["batch"], batch.as_str());
    assert!(dup["reason"].as_str().unwrap().contains(&batch));
    assert_eq!(
        records_in_batch(&env.api, &batch).await,
        5,
        "not ingested twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_platform_rejects_lands_in_the_failed_folder_with_its_errors() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    write_atomic(
        &env.drop_dir().join("broken.json"),
        b"{\"id\": 1}\n{not json\n",
    );
    write_atomic(&env.drop_dir().join("mystery.bin"), b"what is this");
    let receipts = wait_receipts(&env.failed(), 2, 60).await;
    daemon.stop().await;
    let broken = receipts
        .iter()
        .find(|r| r["file"] == "broken.json")
        .unwrap();
    assert_eq!(broken["status"], "failed");
    let errors = broken["errors"].to_string();
    assert!(
        errors.contains("INGEST-1401-400"),
        "the platform's error code: {errors}"
    );
    assert!(env.failed().join("broken.json").exists());
    let mystery = receipts
        .iter()
        .find(|r| r["file"] == "mystery.bin")
        .unwrap();
    assert!(
        mystery["reason"].as_str().unwrap().contains("format"),
        "{mystery}"
    );
    assert!(env.failed().join("mystery.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watches_sharing_an_archive_keep_both_files_of_one_name() {
    // The archive is blocked (a plain file where its folder should be) until both batches
    // have succeeded: both files get their destinations (in one archiver pass, or in two)
    // before either can move there, and must not get the same name.
    let env = Env::new().await;
    let shared = env.dir.path().join("shared-archive");
    std::fs::write(&shared, "not a folder").unwrap();
    let second = env.dir.path().join("drop2");
    std::fs::create_dir_all(&second).unwrap();
    let shared_text = shared.to_str().unwrap();
    let config = env
        .config_file()
        .last_watch(|watch| watch.set("archive_dir", shared_text))
        .watch(second.to_str().unwrap(), DATASET, |watch| {
            watch.set("archive_dir", shared_text)
        });
    let daemon = Daemon::start(batchdrop::config::Config::load(&env.write(&config)).unwrap());
    write_atomic(&env.drop_dir().join("same.json"), jsonl(0, 3).as_bytes());
    write_atomic(&second.join("same.json"), jsonl(100, 5).as_bytes());
    // Both batches succeed; their files cannot be archived while `shared` is a file.
    eventually(60, "both batches succeed", || async {
        let batches = env
            .api
            .find_batches(&batchdrop::api::BatchQuery {
                dataset_id: Some(DATASET.into()),
                status: Some(batchdrop::api::BatchStatus::Success),
                limit: Some(10),
                ..Default::default()
            })
            .await
            .ok()?;
        (batches.len() == 2).then_some(())
    })
    .await;
    std::fs::remove_file(&shared).unwrap();
    let receipts = wait_receipts(&shared, 2, 60).await;
    daemon.stop().await;
    let mut archived: Vec<String> = receipts
        .iter()
        .map(|r| r["archived_to"].as_str().expect("archived").to_owned())
        .collect();
    archived.sort();
    archived.dedup();
    assert_eq!(archived.len(), 2, "two destinations: {receipts:?}");
    let mut lines: Vec<usize> = archived
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .collect();
    lines.sort();
    assert_eq!(lines, [3, 5], "each file kept whole under its own name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_sub_folders_keep_their_relative_path() {
    let env = Env::new().await;
    let daemon = Daemon::start(env.config("", ""));
    write_atomic(
        &env.drop_dir().join("date=2026-11-29/orders.json"),
        jsonl(0, 4).as_bytes(),
    );
    let receipts = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;
    assert_eq!(receipts[0]["file"], "date=2026-11-29/orders.json");
    assert!(env.archive().join("date=2026-11-29/orders.json").exists());
    let batch = receipts[0]["batch"].as_str().unwrap();
    let files = env.api.list_batch_files(batch).await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(records_in_batch(&env.api, batch).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    let env = Env::new().await;
    let config = env.config("", "");
    let first = Daemon::start(config.clone());
    let lock = config.state_dir.join("batchdrop.lock");
    let me = format!("pid {}", std::process::id());
    eventually(30, "the first daemon holds the state dir", || async {
        std::fs::read_to_string(&lock)
            .ok()
            .filter(|held| held.trim() == me)
    })
    .await;
    let second = batchdrop::daemon::run(config, Default::default(), Default::default()).await;
    let err = second.expect_err("the state dir is taken").to_string();
    assert!(
        err.contains("another batchdrop daemon") && err.contains("pid"),
        "{err}"
    );
    first.stop().await;
}
