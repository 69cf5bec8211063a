//! Asynchronous processing: real parsing of JSON Lines, multi-line JSON, CSV and Parquet, with
//! metrics, and the failure codes.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn json_lines_fixture_succeeds_with_counts() {
    let env = start(cfg()).await;
    let jsonl = crm_jsonl();
    let size = jsonl.len();
    let (_, _, b) = env
        .ingest(json!({"format": "json"}), &[("profiles.json", jsonl)])
        .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(
        b["metrics"],
        json!({"inputFileCount": 1, "inputByteSize": size, "inputRecordCount": 16,
               "outputRecordCount": 16, "failedRecordCount": 0})
    );
    assert!(b.get("errors").is_none(), "{b}");
    assert_eq!(env.stats().batches_succeeded, 1);
}

#[tokio::test]
async fn multi_line_json_fixture_succeeds_with_is_multi_line_json() {
    let env = start(cfg()).await;
    let data = read(&fixture("CRM_profiles.json"));
    let (_, _, b) = env
        .ingest(
            json!({"format": "json", "isMultiLineJson": true}),
            &[("CRM_profiles.json", data.clone())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 16);
    assert_eq!(b["metrics"]["outputRecordCount"], 16);
    // The same file read as JSON Lines fails: its lines are not objects.
    let (_, batch, b) = env
        .ingest_with(
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true}),
            &[("CRM_profiles.json", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["errors"][0]["code"], "INGEST-1401-400");
    let failed = env.failed_rows(&batch).await;
    assert!(failed.len() > 100);
}

#[tokio::test]
async fn csv_fixture_succeeds_with_259_rows() {
    let env = start(cfg()).await;
    let data = read(&fixture("CRM_profiles.csv"));
    let (_, _, b) = env
        .ingest(json!({"format": "csv"}), &[("CRM_profiles.csv", data)])
        .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 259);
    assert_eq!(b["metrics"]["outputRecordCount"], 259);
    // Options: another delimiter, no header row.
    let (_, _, b) = env
        .ingest(
            json!({"format": "csv", "delimiter": ";", "header": false}),
            &[("x.csv", b"1;2\n3;4\n5;6\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 3);
}

#[tokio::test]
async fn parquet_succeeds_with_row_count() {
    let env = start(cfg()).await;
    let (_, _, b) = env
        .ingest(
            json!({"format": "parquet"}),
            &[
                ("a.parquet", parquet_bytes(1234)),
                ("b.parquet", parquet_bytes(10)),
            ],
        )
        .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputFileCount"], 2);
    assert_eq!(b["metrics"]["inputRecordCount"], 1244);
    assert_eq!(b["metrics"]["outputRecordCount"], 1244);
}

#[tokio::test]
async fn empty_file_fails_with_106() {
    let env = start(cfg()).await;
    for format in ["json", "csv", "parquet"] {
        let (_, _, b) = env
            .ingest(
                json!({"format": format}),
                &[
                    ("ok.json", b"{\"a\":1}\n".to_vec()),
                    ("empty.dat", Vec::new()),
                ],
            )
            .await;
        assert_eq!(b["status"], "failed", "{b}");
        let e = b["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["code"] == "106")
            .unwrap_or_else(|| panic!("{b}"));
        assert_eq!(e["description"], "Dataset file is empty.", "no file named");
        let d = details(e);
        assert!(d.contains("empty.dat"), "{d}");
        assert_eq!(b["metrics"]["outputRecordCount"], 0);
    }
}

#[tokio::test]
async fn csv_with_empty_header_row_fails_with_118() {
    let env = start(cfg()).await;
    let (_, _, b) = env
        .ingest(
            json!({"format": "csv"}),
            &[("x.csv", b"\na,b\n1,2\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "118", "{b}");
    assert!(!b["errors"][0]["description"].to_string().contains("x.csv"));
    assert!(details(&b["errors"][0]).contains("x.csv"));
    let (_, _, b) = env
        .ingest(
            json!({"format": "csv"}),
            &[("y.csv", b",,\n1,2,3\n".to_vec())],
        )
        .await;
    assert_eq!(b["errors"][0]["code"], "118", "{b}");
}

#[tokio::test]
async fn non_parquet_fails_with_200() {
    let env = start(cfg()).await;
    let (_, _, b) = env
        .ingest(
            json!({"format": "parquet"}),
            &[("x.parquet", b"this is not parquet at all".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "200", "{b}");
    assert!(
        !b["errors"][0]["description"]
            .to_string()
            .contains("x.parquet")
    );
    assert!(details(&b["errors"][0]).contains("x.parquet"));
    // Right magic, broken inside.
    let mut broken = parquet_bytes(100);
    let mid = broken.len() / 2;
    for b in &mut broken[8..mid] {
        *b = 0xFF;
    }
    let len = broken.len();
    for b in &mut broken[len - 40..len - 8] {
        *b = 0;
    }
    let (_, _, b) = env
        .ingest(json!({"format": "parquet"}), &[("y.parquet", broken)])
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "200", "{b}");
}

#[tokio::test]
async fn a_json_row_that_is_not_utf8_is_corrupted_data() {
    let env = start(cfg()).await;
    // Row 2's value is two bytes that are not UTF-8; JSON text is UTF-8, so the row is
    // corrupted, whether or not a schema inspects its records.
    let mut data = b"{\"a\":\"fine\"}\n{\"a\":\"".to_vec();
    data.extend_from_slice(b"\xff\xfe\"}\n{\"a\":\"also fine\"}\n");
    let (_, batch, b) = env
        .ingest_with(
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true}),
            &[("bytes.json", data)],
        )
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 3, "{b}");
    assert_eq!(b["metrics"]["failedRecordCount"], 1, "{b}");
    assert_eq!(b["errors"][0]["code"], "INGEST-1401-400", "{b}");
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["row"], 2);
}

#[tokio::test]
async fn unparsable_rows_fail_the_batch_with_ingest_1401() {
    let env = start(cfg()).await;
    let data = b"{\"a\":1}\nnot json\n{\"a\":3}\n\n[1,2]\n{\"a\":6}\n".to_vec();
    let size = data.len();
    let diag = json!({"enableErrorDiagnostics": true});
    // Diagnostics off: the platform's one summary, word for word (the emulator says where it
    // looked in a field of its own).
    let (_, _, b) = env
        .ingest(json!({"format": "json"}), &[("rows.json", data.clone())])
        .await;
    assert_eq!(b["status"], "failed");
    let errors = b["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{b}");
    assert_eq!(errors[0]["code"], "INGEST-1211-400");
    assert!(errors[0].get("recordCount").is_none(), "{b}");
    assert_eq!(
        errors[0]["description"],
        "Encountered errors while parsing, converting or otherwise validating the data. Please resend the data with error diagnostics enabled to collect additional information on failure types"
    );
    let d = details(&errors[0]);
    assert!(d.contains("rows.json") && d.contains("row 2"), "{d}");
    assert_eq!(b["metrics"]["failedRecordCount"], 2);
    // Diagnostics on: each code with its record count.
    let (_, batch, b) = env
        .ingest_with(
            json!({"format": "json"}),
            diag.clone(),
            &[("rows.json", data)],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(
        b["metrics"],
        json!({"inputFileCount": 1, "inputByteSize": size, "inputRecordCount": 5,
               "outputRecordCount": 0, "failedRecordCount": 2})
    );
    let e = &b["errors"][0];
    assert_eq!(e["code"], "INGEST-1401-400");
    assert_eq!(e["recordCount"], 2);
    assert_eq!(
        e["description"],
        "The row has corrupted data and cannot be read or parsed. Fix the corrupted data and try again."
    );
    let d = details(e);
    assert!(d.contains("rows.json") && d.contains("row 2"), "{d}");
    // The failed rows are listed with their errors.
    let failed = env.failed_rows(&batch).await;
    let rows = &failed;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "rows.json");
    assert_eq!(rows[0]["row"], 2);
    assert_eq!(rows[0]["record"], "not json");
    assert_eq!(rows[0]["errors"][0]["code"], "INGEST-1401-400");
    assert_eq!(rows[1]["row"], 5);

    // CSV rows with the wrong number of fields.
    let (_, _, b) = env
        .ingest_with(
            json!({"format": "csv"}),
            diag.clone(),
            &[("r.csv", b"a,b\n1,2\n3\n4,5\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["metrics"]["failedRecordCount"], 1);
    assert!(details(&b["errors"][0]).contains("row 3"), "{b}");

    // A broken multi-line JSON array.
    let (_, _, b) = env
        .ingest_with(
            json!({"format": "json", "isMultiLineJson": true}),
            diag,
            &[("m.json", b"[{\"a\":1},\n{\"a\":2},\n{\"a\":".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "INGEST-1401-400");
    assert_eq!(b["metrics"]["inputRecordCount"], 3);
    assert!(details(&b["errors"][0]).contains("row 3"), "{b}");
}

#[tokio::test]
async fn every_file_with_bad_rows_is_reported_even_past_the_stored_rows_cap() {
    let env = start(cfg()).await;
    let many_bad: Vec<u8> = (0..1500)
        .flat_map(|i| format!("bad {i}\n").into_bytes())
        .collect();
    let (_, batch, b) = env
        .ingest_with(
            json!({"format": "json"}),
            json!({"enableErrorDiagnostics": true}),
            &[
                ("a.json", many_bad),
                ("b.json", b"{\"ok\":1}\n[]\n".to_vec()),
            ],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["metrics"]["failedRecordCount"], 1501);
    assert_eq!(b["metrics"]["inputRecordCount"], 1502);
    // One entry per code, as the platform sends; each file in the emulator's own details.
    let errors = b["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["recordCount"], 1501);
    let details = errors[0]["emulatorDetails"].as_array().unwrap();
    assert!(details[0].as_str().unwrap().contains("'a.json'"));
    assert!(details[0].as_str().unwrap().contains("1500 record(s)"));
    assert!(details[1].as_str().unwrap().contains("'b.json'"));
    let failed = env.failed_rows(&batch).await;
    assert_eq!(failed.len(), 1000, "stored rows are capped");
}
