//! Pre-flight (issue #20) end to end against the real emulator, over real HTTP: datasets in two
//! sandboxes, an upsert dataset, the daemon in-process and `check-config --online` as the real
//! binary.

use crate::support;

use std::path::{Path, PathBuf};

use batchdrop::api::{BatchQuery, SchemaRef};
use support::*;

/// A dataset made through the Catalog in `sandbox` of the config's organisation (as a user of
/// that sandbox would), with these `unifiedProfile` tags.
async fn dataset_in(env: &Env, sandbox: &str, name: &str, profile_tags: &[&str]) -> String {
    let api = env.client_in(sandbox);
    let mut tags = std::collections::BTreeMap::new();
    if !profile_tags.is_empty() {
        tags.insert(
            "unifiedProfile".to_owned(),
            profile_tags.iter().map(|t| (*t).to_owned()).collect(),
        );
    }
    let schema = SchemaRef {
        id: "https://ns.adobe.com/tenant/schemas/unregistered".into(),
        content_type: "application/vnd.adobe.xed-full+json;version=1".into(),
    };
    api.create_dataset(name, Some(&schema), &tags)
        .await
        .unwrap()
}

/// The test config with a second watch on `dataset` in folder `second` (format `format`).
fn config_with_second_watch(env: &Env, dataset: &str, format: &str) -> PathBuf {
    write_with_second_watch(env, dataset, format, |watch| watch)
}

/// The same, with whatever else `edit` sets on the second watch.
fn write_with_second_watch(
    env: &Env,
    dataset: &str,
    format: &str,
    edit: impl FnOnce(support::config::Section) -> support::config::Section,
) -> PathBuf {
    std::fs::create_dir_all(env.dir.path().join("second")).unwrap();
    env.write(
        &env.config_file()
            .watch("second", dataset, |watch| edit(watch.set("format", format))),
    )
}

/// `batchdrop check-config --online`: exit code and the lines of its online checks.
async fn check_online(config: &Path) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["check-config", "--online", "--config"])
        .arg(config)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let online = stdout
        .split_once("online checks:\n")
        .unwrap_or_else(|| panic!("no online checks printed: {stdout}"))
        .1;
    (out.status.code().unwrap_or(-1), online.to_owned())
}

async fn batches_of(env: &Env, dataset: &str) -> usize {
    env.api
        .find_batches(&BatchQuery {
            dataset_id: Some(dataset.into()),
            limit: Some(100),
            ..BatchQuery::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_dataset_of_another_sandbox_is_held_at_start_naming_both() {
    let env = Env::new().await;
    let dev_only = dataset_in(&env, "dev", "dev profiles", &[]).await;
    let config_path = config_with_second_watch(&env, &dev_only, "json");

    let (code, out) = check_online(&config_path).await;
    assert_eq!(code, 3, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&dev_only))
        .unwrap_or_else(|| panic!("a line names {dev_only}: {out}"));
    assert!(
        line.starts_with("FAILED") && line.contains("sandbox prod"),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains(support::DATASET)),
        "the other watch's dataset is fine: {out}"
    );

    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    write_atomic(
        &env.dir.path().join("second").join("held.json"),
        jsonl(0, 2).as_bytes(),
    );
    write_atomic(&env.drop_dir().join("fine.json"), jsonl(10, 2).as_bytes());
    let receipts = wait_receipts(&env.archive(), 1, 60).await;
    assert_eq!(
        receipts[0]["dataset"],
        support::DATASET,
        "the other watch runs"
    );
    let store = batchdrop::store::Store::open_shared(&env.state_dir())
        .await
        .unwrap();
    let blocked = store.blocked_datasets().await.unwrap();
    daemon.stop().await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].dataset, dev_only);
    assert!(
        blocked[0].reason.contains("sandbox prod"),
        "{}",
        blocked[0].reason
    );
    assert!(
        env.dir.path().join("second").join("held.json").exists(),
        "its file stays where it was dropped"
    );
    assert_eq!(batches_of(&env, &dev_only).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_with_its_own_sandbox_ingests_there_and_its_batches_are_followed_there() {
    let env = Env::new().await;
    let dev_only = dataset_in(&env, "dev", "dev profiles", &[]).await;
    let config_path =
        write_with_second_watch(&env, &dev_only, "json", |watch| watch.set("sandbox", "dev"));

    // Both datasets are found, each in its sandbox (check-config still exits 3: the test
    // dataset's schema is not registered).
    let (_, out) = check_online(&config_path).await;
    assert!(!out.contains("does not exist"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains(&dev_only) && l.contains("sandbox dev")),
        "{out}"
    );

    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let second = env.dir.path().join("second");
    write_atomic(&second.join("dev.json"), jsonl(0, 2).as_bytes());
    write_atomic(&env.drop_dir().join("prod.json"), jsonl(10, 2).as_bytes());
    let dev_receipts = wait_receipts(&second.join("_archive"), 1, 60).await;
    let prod_receipts = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;

    // The dev watch's batch exists in dev only: created, completed and polled to success there.
    let dev_batch = dev_receipts[0]["batch"].as_str().unwrap().to_owned();
    let dev = env.client_in("dev");
    let found = dev.get_batch(&dev_batch).await.unwrap();
    assert_eq!(
        found.map(|b| b.status.to_string()).as_deref(),
        Some("success")
    );
    assert!(
        env.api.get_batch(&dev_batch).await.unwrap().is_none(),
        "unknown in prod"
    );
    assert_eq!(records_in_batch(&dev, &dev_batch).await, 2);
    // The other watch still uses [platform] sandbox.
    let prod_batch = prod_receipts[0]["batch"].as_str().unwrap();
    assert!(
        dev.get_batch(prod_batch).await.unwrap().is_none(),
        "unknown in dev"
    );
    assert_eq!(records_in_batch(&env.api, prod_batch).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_watch_on_an_upsert_dataset_is_refused_and_the_others_run() {
    let env = Env::new().await;
    let upsert = dataset_in(
        &env,
        "prod",
        "upsert profiles",
        &["enabled: true", "isUpsert: true"],
    )
    .await;
    let config_path = config_with_second_watch(&env, &upsert, "json");

    let (code, out) = check_online(&config_path).await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAILED")
            && l.contains(&upsert)
            && l.contains("set format = \"parquet\"")),
        "{out}"
    );

    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    write_atomic(
        &env.dir.path().join("second").join("refused.json"),
        jsonl(0, 2).as_bytes(),
    );
    write_atomic(&env.drop_dir().join("fine.json"), jsonl(10, 2).as_bytes());
    let receipts = wait_receipts(&env.archive(), 1, 60).await;
    daemon.stop().await;
    assert_eq!(receipts[0]["dataset"], support::DATASET);
    assert!(env.dir.path().join("second").join("refused.json").exists());
    assert_eq!(batches_of(&env, &upsert).await, 0, "no batch spent on it");
}

/// `batchdrop validate --json` as the real binary: exit code and its report per file.
async fn validate_json(
    config: &Path,
    dataset: &str,
    files: &[PathBuf],
) -> (i32, serde_json::Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["validate", "--json", "--dataset", dataset, "--config"])
        .arg(config)
        .args(files)
        .output()
        .await
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("validate --json prints JSON ({e}): {out:?}"));
    (out.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_agrees_with_the_platforms_processing_row_for_row_on_the_shared_fixtures() {
    let env = Env::new().await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // The platform's side runs without the local check, on multi-line JSON.
    let (profiles, config_path) =
        objectxdm_dataset(&env, "validate = \"off\"\nmultiline_json = true").await;

    let json = fixtures.join("CRM_profiles.json");
    let (code, local) = validate_json(&config_path, profiles, std::slice::from_ref(&json)).await;
    assert_eq!(code, 4, "{local}");
    let mut local_rows: Vec<(u64, String, String)> = local[0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["row"].as_u64().unwrap(),
                p["code"].as_str().unwrap().to_owned(),
                p["field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    local_rows.sort();
    assert!(!local_rows.is_empty());

    // The platform's side: the same file through the daemon, without the local check.
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    std::fs::copy(&json, env.drop_dir().join("CRM_profiles.json")).unwrap();
    let receipts = wait_receipts(&env.failed(), 1, 60).await;
    daemon.stop().await;
    let batch = receipts[0]["batch"].as_str().unwrap();
    let failed = env.api.failed_rows(batch).await.unwrap();
    let mut platform_rows: Vec<(u64, String, String)> = Vec::new();
    for row in &failed {
        for e in row["_errors"].as_array().unwrap() {
            platform_rows.push((
                row["_row"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    platform_rows.sort();
    assert_eq!(local_rows, platform_rows, "{failed:?}");
}

/// The test config on a dataset checked against objectXDM (registered in the emulator).
async fn objectxdm_dataset(env: &Env, watch_extra: &str) -> (&'static str, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("objectXDM.schema.json")).unwrap())
            .unwrap();
    let schema_id = "https://ns.adobe.com/tenant/schemas/objectxdm";
    let dataset = "5deac2648a19d218a888d2c1";
    let path = env
        .config_on_schema(dataset, schema_id, &schema, watch_extra)
        .await;
    (dataset, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_a_bad_row_is_refused_locally_with_the_platforms_code_and_never_uploaded() {
    let env = Env::new().await;
    let (_, config_path) = objectxdm_dataset(&env, "").await;
    let good = r#"{"person": {"name": {"firstName": "Anna"}}}"#;
    let bad = r#"{"person": {"name": {"firstName": "Friederike"}}}"#;
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let before = env.emulator.stats();
    write_atomic(
        &env.drop_dir().join("people.json"),
        format!("{good}\n{bad}\n").as_bytes(),
    );
    let receipts = wait_receipts(&env.failed(), 1, 60).await;
    daemon.stop().await;
    let reason = receipts[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let receipt = &receipts[0];
    assert!(
        reason.contains("file 'people.json' row 2: /person/name/firstName: ")
            && reason.contains("(INGEST-1543-400)"),
        "{receipt}"
    );
    assert!(reason.contains("1 of 2 records"), "{receipt}");
    let after = env.emulator.stats();
    assert_eq!(
        after.batches_created, before.batches_created,
        "no batch spent"
    );
    assert_eq!(after.puts, before.puts, "nothing uploaded");
    assert_eq!(after.bytes_received, before.bytes_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_fed_every_100ms_makes_no_more_batches_than_its_daily_budget_allows() {
    let env = Env::new().await;
    // 86400 / 2: one batch every 2 s at most.
    let config = env.config("", "max_batches_per_day = 43200");
    let daemon = Daemon::start(config);
    let started = std::time::Instant::now();
    let files = 40;
    for i in 0..files {
        write_atomic(
            &env.drop_dir().join(format!("tick-{i}.json")),
            jsonl(i, 1).as_bytes(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let receipts = wait_receipts(&env.archive(), files, 120).await;
    let elapsed = started.elapsed().as_secs_f64();
    daemon.stop().await;
    let batches: std::collections::BTreeSet<&str> = receipts
        .iter()
        .map(|r| r["batch"].as_str().unwrap())
        .collect();
    let allowed = (elapsed / 2.0).floor() as usize + 1;
    println!(
        "{} files in {} batches over {elapsed:.1} s (budget allows {allowed})",
        receipts.len(),
        batches.len()
    );
    assert!(
        batches.len() <= allowed,
        "{} batches in {elapsed:.1} s: more than one per 2 s",
        batches.len()
    );
    assert!(
        batches.len() >= 2,
        "the files did not wait for one batch at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_batches_and_refusals_and_moves_and_uploads_nothing() {
    let env = Env::new().await;
    let (_, config_path) = objectxdm_dataset(&env, "max_files = 2").await;
    let drop = env.drop_dir();
    let good =
        |name: &str| format!("{{\"person\": {{\"name\": {{\"firstName\": \"{name}\"}}}}}}\n");
    let files: Vec<(&str, String)> = vec![
        ("a.json", good("Anna")),
        ("b.json", good("Bert")),
        ("c.json", good("Carl")),
        ("copy-of-a.json", good("Anna")),
        ("empty.json", String::new()),
        ("notes.txt", "hello\n".to_owned()),
        ("bad.json", good("Friederike")),
    ];
    for (name, content) in &files {
        write_atomic(&drop.join(name), content.as_bytes());
    }
    // What the daemon never takes, said as its log says it.
    let made = std::process::Command::new("mkfifo")
        .arg(drop.join("feed.json"))
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/null", drop.join("null.json")).unwrap();
    let before = env.emulator.stats();
    for args in [&["plan"][..], &["run", "--once", "--dry-run"][..]] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchdrop"))
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(text.contains("batch 1 (json, 2 files"), "{text}");
        assert!(text.contains("batch 2 (json, 1 files"), "{text}");
        for (file, why) in [
            ("copy-of-a.json", "the same content as a.json"),
            ("empty.json", "empty"),
            ("notes.txt", "format is not known"),
            ("bad.json", "INGEST-1543-400"),
            (
                "feed.json",
                "a FIFO (named pipe): batchdrop takes regular files only",
            ),
            (
                "null.json",
                "a symbolic link to a device: batchdrop takes regular files only",
            ),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains(&format!("refused {file}: ")) && l.contains(why)),
                "{file} refused because {why}: {text}"
            );
        }
    }
    for (name, _) in &files {
        assert!(
            drop.join(name).exists(),
            "{name} stays where it was dropped"
        );
    }
    assert!(!env.archive().exists() && !env.failed().exists());
    let after = env.emulator.stats();
    assert_eq!(after.batches_created, before.batches_created);
    assert_eq!(after.puts, before.puts);
}

/// Files validated clean travel again when their batch fails (the bad rows were someone
/// else's); when every file of the failed batch was validated clean, the platform refused
/// something the local check cannot see, and sending them again would fail again forever:
/// they fail, once, with the batch's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_of_files_all_validated_clean_fails_once_instead_of_looping() {
    let env = Env::with_emulator(batchdrop_emulator::EmulatorConfig {
        faults: batchdrop_emulator::FaultConfig {
            batch_failure_probability: 1.0,
            ..batchdrop_emulator::FaultConfig::default()
        },
        ..batchdrop_emulator::EmulatorConfig::default()
    })
    .await;
    let (_, config_path) = objectxdm_dataset(&env, "").await;
    // Present before the daemon starts, so that they travel in one batch.
    for name in ["a.json", "b.json"] {
        write_atomic(
            &env.drop_dir().join(name),
            br#"{"person": {"name": {"firstName": "Anna"}}}
"#,
        );
    }
    let daemon = Daemon::start(batchdrop::config::Config::load(&config_path).unwrap());
    let receipts = wait_receipts(&env.failed(), 2, 60).await;
    daemon.stop().await;
    let batches: std::collections::BTreeSet<&str> = receipts
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "failed", "{r}");
            r["batch"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        env.emulator.stats().batches_created,
        batches.len() as u64,
        "one batch spent per failure, not one per round of sending the same files again"
    );
}
