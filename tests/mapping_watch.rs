//! A watch with a mapping set (`mapping = ...`, issue #24) end to end on the real emulator over
//! real HTTP: the guide's CRM CSV dropped, mapped into a staged Parquet file, uploaded,
//! ingested and read back through Data Access; the rejected rows in the receipt; a kill -9
//! while mapping (the real binary) then a restart, ingesting exactly once; a mapping set with
//! an unknown function refusing its watch at start.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const PROFILE_SCHEMA: &str = "https://ns.adobe.com/batchdrop/schemas/crm-profile";
const PROFILES: &str = "5deac2648a19d218a888d2d1";
const CSV_ROWS: u64 = 259;
/// Rows whose firstName breaks the schema's length limits (the crate's tests derive them).
const REJECTED: u64 = 32;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The CRM profile dataset (its schema registered), and the test config written with one watch
/// on it that maps with `mapping`.
async fn profile_watch(env: &Env, mapping: &Path) -> PathBuf {
    env.write(&profile_config(env, mapping).await)
}

/// The CRM profile dataset (its schema registered), and the test config with one watch on it
/// that maps with `mapping`.
async fn profile_config(env: &Env, mapping: &Path) -> ConfigFile {
    let schema: Value =
        serde_json::from_slice(&std::fs::read(fixture("CRM_profiles.schema.json")).unwrap())
            .unwrap();
    env.emulator
        .register_schema(PROFILE_SCHEMA, &schema)
        .await
        .unwrap();
    env.emulator
        .ensure_dataset_with_schema(PROFILES, "CRM profiles", PROFILE_SCHEMA)
        .await
        .unwrap();
    env.config_file().last_watch(|watch| {
        watch
            .set("dataset", PROFILES)
            .set("mapping", mapping.to_str().unwrap())
    })
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The mapped CSV is ingested as Parquet; Data Access serves the mapped records. Compared with
/// `CRM_profiles.json` field for field: person (name, gender, birth day and month, date, year),
/// identityMap (CRMID, ECID ×2, LOYALTYID with `primary`), homePhone, personalEmail and
/// homeAddress with `_schema.latitude/longitude` (within 1e-6), for the first five records
/// served: CSV rows 1, 2, 3, 5 and 6 (row 4, Friederike, breaks the schema and is rejected).
/// From row 6 on the sample adds an `Email` identity the mapping does not write: left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_watch_ingests_the_csv_as_parquet_and_serves_the_mapped_records() {
    let env = Env::new().await;
    let config = profile_watch(&env, &fixture("CRM_profiles.mapping.json")).await;
    let daemon = Daemon::start(batchdrop::config::Config::load(&config).unwrap());
    let dropped = env.drop_dir().join("CRM_profiles.csv");
    write_atomic(
        &dropped,
        &std::fs::read(fixture("CRM_profiles.csv")).unwrap(),
    );
    let receipts = wait_receipts(&env.archive(), 1, 90).await;
    daemon.stop().await;
    let receipt = &receipts[0];
    assert_eq!(receipt["status"], "success", "{receipt:#}");
    assert_eq!(receipt["format"], "parquet", "sent as the staged Parquet");
    let mapping = &receipt["mapping"];
    assert_eq!(mapping["original_format"], "csv");
    assert_eq!(
        mapping["original_sha256"],
        sha256_of(&fixture("CRM_profiles.csv"))
    );
    assert_eq!(receipt["sha256"], mapping["original_sha256"]);
    assert_eq!(
        mapping["mapping_sha256"],
        sha256_of(&fixture("CRM_profiles.mapping.json"))
    );
    assert_eq!(mapping["staged_file"], "CRM_profiles.csv.parquet");
    assert_ne!(mapping["staged_sha256"], mapping["original_sha256"]);
    assert_eq!(
        (
            &mapping["records_in"],
            &mapping["records_out"],
            &mapping["rejected"]
        ),
        (
            &json!(CSV_ROWS),
            &json!(CSV_ROWS - REJECTED),
            &json!(REJECTED)
        )
    );
    // The rows breaking the schema's firstName limits, by row number, with why.
    let rejected = mapping["rejected_rows"].as_array().unwrap();
    assert_eq!(rejected.len() as u64, REJECTED);
    let rows: Vec<u64> = rejected
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(&rows[..3], &[4, 11, 13]);
    assert_eq!(rejected[0]["line"], 5);
    assert_eq!(
        rejected[0]["reasons"][0],
        "person.name.firstName: \"Friederike\" has 10 characters; at most 8 are allowed"
    );
    for r in rejected {
        assert!(
            r["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with("person.name.firstName: "),
            "{r}"
        );
    }
    // The original is archived as it was dropped; the staged file is gone once finished.
    let archived = receipt["archived_to"].as_str().unwrap();
    assert_eq!(
        sha256_of(Path::new(archived)),
        sha256_of(&fixture("CRM_profiles.csv"))
    );
    let staged: Vec<_> = std::fs::read_dir(env.state_dir().join("staged"))
        .unwrap()
        .collect();
    assert!(staged.is_empty(), "staged files left: {staged:?}");

    // What Data Access serves is the mapped records.
    let batch = receipt["batch"].as_str().unwrap();
    let files = env.api.list_batch_files(batch).await.unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    // Data Access lists the file's parts, then serves each by name.
    let listing: Value =
        serde_json::from_slice(&env.api.download_file(&files[0].id).await.unwrap()).unwrap();
    let mut bytes = Vec::new();
    for part in listing["data"].as_array().unwrap() {
        let name = part["name"].as_str().unwrap();
        bytes.extend_from_slice(
            &env.api
                .download_file_part(&files[0].id, name)
                .await
                .unwrap(),
        );
    }
    let download = env.dir.path().join("download.parquet");
    std::fs::write(&download, &bytes).unwrap();
    let served = records::parquet_as_json(&download);
    assert_eq!(served.len() as u64, CSV_ROWS - REJECTED);
    let sample: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture("CRM_profiles.json")).unwrap()).unwrap();
    for (served_at, sample_at) in [(0, 0), (1, 1), (2, 2), (3, 4), (4, 5)] {
        let mut expected = sample[sample_at].clone();
        // The sample's `Email` identity (from EMAIL2) is not in the mapping (from row 6 on).
        expected["identityMap"]
            .as_object_mut()
            .unwrap()
            .remove("Email");
        records::assert_same(
            &expected,
            &served[served_at],
            &format!(
                "served record {} (CSV row {})",
                served_at + 1,
                sample_at + 1
            ),
        );
    }
    assert_eq!(
        records_ingested(&env.api, PROFILES).await,
        CSV_ROWS - REJECTED
    );
}

/// The daemon binary, with `BATCHDROP_CRASH_AT` set to `crash_at` if given.
fn spawn(config: &Path, crash_at: Option<&str>) -> Child {
    match crash_at {
        Some(point) => spawn_daemon(config, &[], &[("BATCHDROP_CRASH_AT", point)]),
        None => spawn_daemon(config, &[], &[]),
    }
}

/// Waits for a daemon that kills itself to be gone.
fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("batchdrop did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: Child) {
    assert!(stop_daemon(child).success());
}

async fn killed_while_mapping_then_restarted(point: &str) {
    let env = Env::new().await;
    let config = profile_watch(&env, &fixture("CRM_profiles.mapping.json")).await;
    write_atomic(
        &env.drop_dir().join("CRM_profiles.csv"),
        &std::fs::read(fixture("CRM_profiles.csv")).unwrap(),
    );
    let mut first = spawn(&config, Some(point));
    let status = wait_exit(&mut first, 60);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the daemon died at {point}"
    );
    assert_eq!(
        env.emulator.stats().puts,
        0,
        "nothing was uploaded before the kill"
    );

    let second = spawn(&config, None);
    let receipts = wait_receipts(&env.archive(), 1, 90).await;
    terminate(second);
    assert_eq!(receipts[0]["status"], "success", "{:#}", receipts[0]);
    assert_eq!(receipts[0]["mapping"]["records_out"], CSV_ROWS - REJECTED);
    assert_eq!(
        records_ingested(&env.api, PROFILES).await,
        CSV_ROWS - REJECTED,
        "every mapped record exactly once in the platform"
    );
    let left: Vec<_> = std::fs::read_dir(env.state_dir().join("staged"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "staged files left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_staged_file_half_written_maps_again_and_ingests_once() {
    killed_while_mapping_then_restarted("mapped-unsynced").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_staged_file_written_but_unrecorded_ingests_once() {
    killed_while_mapping_then_restarted("staged-unrecorded").await;
}

/// A staged file written but not recorded when the daemon died, whose original is then taken
/// away, is nobody's: the next start removes it, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_staged_file_whose_original_is_gone_is_removed_at_start() {
    let env = Env::new().await;
    let config = profile_watch(&env, &fixture("CRM_profiles.mapping.json")).await;
    let dropped = env.drop_dir().join("CRM_profiles.csv");
    write_atomic(
        &dropped,
        &std::fs::read(fixture("CRM_profiles.csv")).unwrap(),
    );
    let mut first = spawn(&config, Some("staged-unrecorded"));
    wait_exit(&mut first, 60);
    let staged_dir = env.state_dir().join("staged");
    let litter: Vec<_> = std::fs::read_dir(&staged_dir).unwrap().flatten().collect();
    assert_eq!(litter.len(), 1, "the unrecorded staged file: {litter:?}");
    std::fs::remove_file(&dropped).unwrap();

    let second = spawn(&config, None);
    let log = wait_log_count(
        &config.with_file_name("daemon.log"),
        "removed staged files no file needs",
        1,
        60,
    )
    .await;
    terminate(second);
    let left: Vec<_> = std::fs::read_dir(&staged_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "staged files left: {left:?}\n{log}");
    assert_eq!(env.emulator.stats().puts, 0, "nothing was sent");
}

/// A mapping set naming a function batchdrop does not know refuses its watch at start, naming
/// the function; the other watch runs; the refused watch's file stays where it was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_with_an_unknown_function_refuses_its_watch_at_start_naming_it() {
    let env = Env::new().await;
    let bad = env.dir.path().join("bad.mapping.json");
    let text = std::fs::read_to_string(fixture("CRM_profiles.mapping.json"))
        .unwrap()
        .replace("to_decimal(LAT)", "to_double(LAT)");
    std::fs::write(&bad, text).unwrap();
    let config = env.write(&profile_config(&env, &bad).await.watch(
        "plain",
        support::DATASET,
        |watch| watch,
    ));
    let plain = env.dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let dropped = env.drop_dir().join("CRM_profiles.csv");
    write_atomic(
        &dropped,
        &std::fs::read(fixture("CRM_profiles.csv")).unwrap(),
    );
    write_atomic(&plain.join("fine.json"), jsonl(0, 2).as_bytes());

    let daemon = spawn(&config, None);
    let receipts = wait_receipts(&plain.join("_archive"), 1, 60).await;
    terminate(daemon);
    assert_eq!(receipts[0]["status"], "success", "the other watch runs");
    let log = std::fs::read_to_string(config.with_file_name("daemon.log")).unwrap();
    let refusal = log
        .lines()
        .find(|l| l.contains("is refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        refusal.contains("unknown function 'to_double'")
            && refusal.contains("homeAddress._schema.latitude")
            && refusal.contains(&bad.display().to_string()),
        "{refusal}"
    );
    assert!(
        dropped.exists(),
        "the refused watch's file stays where it was dropped"
    );
    assert!(support::receipts(&env.drop_dir()).is_empty());
}

/// `batchdrop map --dataset D` takes the dataset's schema from the config's platform, as the
/// daemon's pre-flight does: the same 32 rows are rejected as in a watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_with_dataset_fetches_the_schema_from_the_platform() {
    let env = Env::new().await;
    let config = profile_watch(&env, &fixture("CRM_profiles.mapping.json")).await;
    let csv = fixture("CRM_profiles.csv");
    let mapping = fixture("CRM_profiles.mapping.json");
    let out = bd(&[
        "--config",
        config.to_str().unwrap(),
        "map",
        csv.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--dataset",
        PROFILES,
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stdout.contains("rejected rows (32):"), "{stdout}");
    assert!(
        stdout.contains("row 4 (line 5): person.name.firstName: \"Friederike\" has 10 characters"),
        "{stdout}"
    );
    // The preview is the mapped records.
    let first: Value = serde_json::from_str(
        stdout
            .lines()
            .find(|l| l.starts_with('{'))
            .expect("a preview row"),
    )
    .unwrap();
    assert_eq!(first["person"]["birthYear"], json!(2004));
}
