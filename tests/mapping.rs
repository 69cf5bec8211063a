//! `batchdrop map` (the real binary) on the guide's CRM pair, and the emulator taking what it
//! wrote: the mapped Parquet uploaded in a batch, ingested, and read back through Data Access.

// The emulator tests' HTTP helpers (a test kit shared by both is issue #17's part C).
#[path = "../crates/emulator/tests/emulator/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use batchdrop_emulator::{DatasetSeed, EmulatorConfig, SchemaSeed};

use serde_json::{Value, json};

use crate::support::records;
use common::fixture;
use records::{json_lines, parquet_as_json};

const PROFILE_SCHEMA: &str = "https://ns.adobe.com/batchdrop/schemas/crm-profile";
const PROFILES: &str = "crm-profiles";

fn batchdrop(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(args)
        .output()
        .expect("batchdrop runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The row numbers `map` listed under "rejected rows".
fn listed_rows(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("row "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn map_lists_the_rejected_rows_and_writes_parquet_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("crm.parquet");
    let (code, stdout, stderr) = batchdrop(&[
        "map",
        arg(&fixture("CRM_profiles.csv")),
        "--mapping",
        arg(&fixture("CRM_profiles.mapping.json")),
        "--schema",
        arg(&fixture("objectXDM.schema.json")),
        "--out",
        arg(&out),
        "--preview",
        "2",
    ]);
    assert_eq!(code, 4, "some rows are rejected: {stdout}\n{stderr}");
    assert!(stdout.contains("rejected rows (32):"), "{stdout}");
    assert!(
        stdout.contains(
            "row 4 (line 5): person.name.firstName: \"Friederike\" has 10 characters; at most 8 are allowed"
        ),
        "{stdout}"
    );
    let rows = listed_rows(&stdout);
    assert_eq!(rows.len(), 32);
    assert_eq!(&rows[..3], &[4, 11, 13]);
    assert!(
        stdout.contains("259 rows in, 227 written to") && stdout.contains("32 rejected"),
        "{stdout}"
    );
    // The preview is the first rows as JSON.
    let preview: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preview.len(), 2);
    assert_eq!(preview[0]["person"]["name"]["firstName"], "Ewart");
    // objectXDM has no identityMap, address...: said before anything is written.
    assert!(
        stderr.contains("has no field identityMap (written by mappings[7]"),
        "{stderr}"
    );
    assert!(!dir.path().join("crm.parquet.partial").exists());

    let batches = read_parquet(&out);
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        227
    );
    let batch = &batches[0];
    let person = batch.column_by_name("person").unwrap().as_struct();
    let name = person.column_by_name("name").unwrap().as_struct();
    let first = name.column_by_name("firstName").unwrap().as_string::<i32>();
    assert_eq!(
        (first.value(0), first.value(3)),
        ("Ewart", "Evita"),
        "row 4 (Friederike) is not in the file"
    );
    // birthYear is a short in objectXDM; the rest is typed by the mapping's expressions.
    let years = person.column_by_name("birthYear").unwrap();
    assert_eq!(years.data_type(), &DataType::Int16);
    assert_eq!(years.as_primitive::<Int16Type>().value(0), 2004);
    let address = batch.column_by_name("homeAddress").unwrap().as_struct();
    let position = address.column_by_name("_schema").unwrap().as_struct();
    let longitude = position.column_by_name("longitude").unwrap();
    assert!((longitude.as_primitive::<Float64Type>().value(1) - -80.8108885).abs() < 1e-9);
    let identities = batch.column_by_name("identityMap").unwrap().as_struct();
    let loyalty = identities
        .column_by_name("LOYALTYID")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    let loyalty = loyalty.as_struct();
    assert_eq!(
        loyalty
            .column_by_name("id")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "2e33192000007456-0365c00000000000"
    );
    assert!(
        loyalty
            .column_by_name("primary")
            .unwrap()
            .as_boolean()
            .value(0)
    );
}

#[test]
fn map_exits_0_when_every_row_maps_3_for_a_bad_mapping_set_2_for_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("crm.jsonl");
    let (code, stdout, stderr) = batchdrop(&[
        "map",
        arg(&fixture("CRM_profiles.csv")),
        "--mapping",
        arg(&fixture("CRM_profiles.mapping.json")),
        "--out",
        arg(&out),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("259 rows in, 259 written to"), "{stdout}");
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count(), 259);
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["person"]["birthYear"], json!(2004));

    let bad = dir.path().join("bad.mapping.json");
    let text = std::fs::read_to_string(fixture("CRM_profiles.mapping.json"))
        .unwrap()
        .replace("to_decimal(LAT)", "to_double(LAT)");
    std::fs::write(&bad, text).unwrap();
    let (code, _, stderr) = batchdrop(&[
        "map",
        arg(&fixture("CRM_profiles.csv")),
        "--mapping",
        arg(&bad),
        "--out",
        arg(&dir.path().join("never.parquet")),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("unknown function 'to_double'")
            && stderr.contains("homeAddress._schema.latitude"),
        "{stderr}"
    );
    assert!(!dir.path().join("never.parquet").exists());

    // --dataset reaches the platform through the config: one that is not there is named.
    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = batchdrop(&[
        "--config",
        arg(&missing),
        "map",
        arg(&fixture("CRM_profiles.csv")),
        "--mapping",
        arg(&fixture("CRM_profiles.mapping.json")),
        "--dataset",
        "5deac2648a19d218a888d2b1",
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains(arg(&missing)), "{stderr}");
    let (code, _, _) = batchdrop(&["map", arg(&fixture("CRM_profiles.csv"))]);
    assert_eq!(code, 2, "--mapping is required");
}

/// Runs `batchdrop map` with the profile schema; returns the output file.
fn map_with(dir: &Path, schema: Option<&str>, format: &str, name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec![
        "map".to_owned(),
        fixture("CRM_profiles.csv").display().to_string(),
        "--mapping".into(),
        fixture("CRM_profiles.mapping.json").display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--format".into(),
        format.into(),
    ];
    if let Some(schema) = schema {
        args.push("--schema".into());
        args.push(fixture(schema).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = batchdrop(&args);
    assert!(code == 0 || code == 4, "{stdout}\n{stderr}");
    out
}

async fn start_emulator(dir: &Path) -> common::Env {
    common::start(EmulatorConfig {
        schemas: vec![SchemaSeed {
            file: fixture("CRM_profiles.schema.json"),
            ..SchemaSeed::default()
        }],
        datasets: vec![DatasetSeed {
            id: PROFILES.into(),
            schema: PROFILE_SCHEMA.into(),
            ..DatasetSeed::default()
        }],
        base_dir: Some(dir.to_path_buf()),
        ..common::cfg()
    })
    .await
}

/// The files of a batch, downloaded through Data Access.
async fn download(env: &common::Env, batch: &str, dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for (i, (_, bytes)) in env.batch_downloads(batch).await.into_iter().enumerate() {
        let path = dir.join(format!("download-{i}.parquet"));
        std::fs::write(&path, bytes).unwrap();
        paths.push(path);
    }
    paths
}

#[tokio::test]
async fn the_emulator_ingests_the_mapped_parquet_and_serves_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_emulator(dir.path()).await;
    let parquet = map_with(
        dir.path(),
        Some("CRM_profiles.schema.json"),
        "parquet",
        "crm.parquet",
    );
    let jsonl = map_with(
        dir.path(),
        Some("CRM_profiles.schema.json"),
        "json",
        "crm.jsonl",
    );
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            json!({"enableErrorDiagnostics": true}),
            &[("crm.parquet", std::fs::read(&parquet).unwrap())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["outputRecordCount"], 227);
    let files = download(&env, &batch, dir.path()).await;
    assert_eq!(files.len(), 1);
    // What Data Access serves is what the mapping wrote, row for row: nested structs, the
    // identityMap map of lists of structs, dates, shorts and doubles.
    let served: Vec<Value> = files.iter().flat_map(|f| parquet_as_json(f)).collect();
    let mapped = json_lines(&std::fs::read(&jsonl).unwrap());
    assert_eq!(served.len(), 227);
    assert_eq!(served, mapped);
    assert_eq!(served[3]["person"]["birthDate"], "1974-02-28");
    assert_eq!(
        served[0]["identityMap"]["ECID"][1]["id"],
        "55019962992006103186215643814973128178"
    );
    let downloaded = read_parquet(&files[0]);
    assert!(matches!(
        downloaded[0]
            .schema()
            .field_with_name("identityMap")
            .unwrap()
            .data_type(),
        DataType::Map(_, _)
    ));
}

/// Mapped without the schema (so nothing is rejected on the way), every row goes up; under
/// partial ingestion the platform refuses exactly the rows the mapper refuses with the schema.
#[tokio::test]
async fn unvalidated_parquet_fails_on_the_platform_at_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_emulator(dir.path()).await;
    let parquet = map_with(dir.path(), None, "parquet", "all.parquet");
    let (batch, b) = env
        .ingest_into(
            PROFILES,
            json!({"format": "parquet"}),
            json!({"enableErrorDiagnostics": true, "partialIngestionPercentage": 20}),
            &[("all.parquet", std::fs::read(&parquet).unwrap())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert_eq!(b["metrics"]["inputRecordCount"], 259);
    assert_eq!(b["metrics"]["failedRecordCount"], 32);
    let failed = env.failed_rows(&batch).await;
    let platform_rows: Vec<u64> = failed.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    for row in &failed {
        assert_eq!(
            row["errors"][0]["path"], "/person/name/firstName",
            "{row:#}"
        );
    }
    let (_, stdout, _) = batchdrop(&[
        "map",
        arg(&fixture("CRM_profiles.csv")),
        "--mapping",
        arg(&fixture("CRM_profiles.mapping.json")),
        "--schema",
        arg(&fixture("CRM_profiles.schema.json")),
    ]);
    assert_eq!(platform_rows, listed_rows(&stdout));
    let served: usize = download(&env, &batch, dir.path())
        .await
        .iter()
        .map(|f| {
            read_parquet(f)
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
        })
        .sum();
    assert_eq!(served, 227, "the good rows are served");
}

#[test]
fn map_refuses_a_pipe_it_would_read_twice() {
    // Its first line tells JSON Lines from a JSON document, then the mapping reads it from
    // its start again: through a pipe, the first read's bytes would be lost.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rows.json");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchdrop"))
        .args(["map", arg(&fifo), "--mapping"])
        .arg(fixture("CRM_profiles.mapping.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening a pipe nobody writes to waits forever: that is what must not happen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("map opened the pipe and waited for a writer");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (code, stdout, stderr) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is a FIFO (named pipe): map reads its input more than once, so it takes a regular file",
            fifo.display()
        )),
        "{stderr}"
    );
}
