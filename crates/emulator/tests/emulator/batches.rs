//! E1 create batch and E7 batch actions: states, replay, revert.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

fn assert_service_error(status: StatusCode, body: &Value, want: u16, mentions: &[&str]) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert_eq!(body["status"], want, "{body}");
    assert!(body["type"].as_str().is_some(), "{body}");
    assert!(body["title"].as_str().is_some(), "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    for m in mentions {
        assert!(detail.contains(m), "detail {detail:?} should mention {m:?}");
    }
}

#[tokio::test]
async fn create_batch_returns_the_batch_object() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let (s, b) = env
        .create_batch_raw(json!({
            "datasetId": ds,
            "inputFormat": {"format": "JSON", "isMultiLineJson": true},
            "externalId": "ext-1",
            "tags": {"team": ["growth"]},
            "enableErrorDiagnostics": true,
            "partialIngestionPercent": 5,
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["id"].as_str().unwrap();
    assert_eq!(id.len(), 26);
    assert!(ulid::Ulid::from_string(id).is_ok());
    assert_eq!(b["status"], "loading");
    assert_eq!(b["imsOrg"], "TEST@AdobeOrg");
    assert_eq!(b["relatedObjects"], json!([{"type": "dataSet", "id": ds}]));
    assert_eq!(b["version"], "1.0.0");
    assert_eq!(b["externalId"], "ext-1");
    // The processing options come back as tags, in the spec's shape (arrays of strings).
    assert_eq!(
        b["tags"],
        json!({"team": ["growth"], "acp_enableErrorDiagnostics": ["true"],
               "acp_partialIngestionPercent": ["5"]})
    );
    assert_eq!(
        b["inputFormat"],
        json!({"format": "json", "isMultiLineJson": true})
    );
    assert_eq!(b["enableErrorDiagnostics"], true);
    assert_eq!(b["partialIngestionPercentage"], 5.0);
    assert!(
        b["created"].as_i64().unwrap() > 1_600_000_000_000,
        "epoch ms"
    );
    assert!(b.get("replay").is_none());
    // The Catalog shows the same batch, keyed by id.
    let c = env.batch(id).await;
    assert_eq!(c["externalId"], "ext-1");
    assert_eq!(c["status"], "loading");
    // Other formats, any case, and the other partial-ingestion name; CSV options.
    for f in ["csv", "CSV", "parquet", "Parquet", "json"] {
        let (s, b) = env
            .create_batch_raw(json!({"datasetId": ds, "inputFormat": {"format": f, "delimiter": ";", "header": true},
                                     "partialIngestionPercentage": 10}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{f}: {b}");
        assert_eq!(b["inputFormat"]["format"], f.to_lowercase());
        assert_eq!(b["inputFormat"]["delimiter"], ";");
        assert_eq!(b["partialIngestionPercentage"], 10.0);
    }
    assert_eq!(env.stats().batches_created, 6);
}

#[tokio::test]
async fn create_batch_refusals() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let cases = [
        (
            json!({"datasetId": "000000000000000000000000", "inputFormat": {"format": "json"}}),
            "does not exist",
        ),
        (
            json!({"datasetId": ds, "inputFormat": {"format": "xml"}}),
            "not supported",
        ),
        (json!({"datasetId": ds}), "inputFormat"),
        (json!({"inputFormat": {"format": "json"}}), "datasetId"),
        (
            json!({"datasetId": ds, "inputFormat": {"format": "json"}, "tags": {"a": "b"}}),
            "tags.a",
        ),
        (
            json!({"datasetId": ds, "inputFormat": {"format": "csv", "delimiter": ";;"}}),
            "delimiter",
        ),
        (
            json!({"datasetId": ds, "inputFormat": {"format": "json"}, "partialIngestionPercentage": 150}),
            "0 to 100",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, mention) in cases {
        let (s, b) = env.create_batch_raw(body.clone()).await;
        assert_service_error(s, &b, 400, &[mention]);
    }
    // Malformed JSON.
    let r = env
        .req(reqwest::Method::POST, &format!("{IMPORT}/batches"))
        .header("Content-Type", "application/json")
        .body("{\"datasetId\": ")
        .send()
        .await
        .unwrap();
    let s = r.status();
    let b: Value = r.json().await.unwrap();
    assert_service_error(s, &b, 400, &["not valid JSON"]);
    assert_eq!(env.stats().batches_created, 0);
}

#[tokio::test]
async fn batch_actions_follow_the_lifecycle() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;

    // Unknown batch and unknown action.
    let (s, b) = env.action("01HZZZZZZZZZZZZZZZZZZZZZZZ", "COMPLETE").await;
    assert_service_error(s, &b, 404, &["01HZZZZZZZZZZZZZZZZZZZZZZZ"]);
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let (s, b) = env.action(&batch, "EXPLODE").await;
    assert_service_error(s, &b, 400, &["EXPLODE"]);

    // COMPLETE needs a file.
    let (s, b) = env.action(&batch, "COMPLETE").await;
    assert_service_error(s, &b, 400, &[&batch, "at least one"]);

    // Lower-case action, then idempotent COMPLETE.
    assert_eq!(
        env.put(&batch, &ds, "a.json", b"{\"a\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    assert_eq!(env.action(&batch, "complete").await.0, StatusCode::OK);
    assert_eq!(env.action(&batch, "Complete").await.0, StatusCode::OK);
    let done = env.wait_status(&batch, &["success"]).await;
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    assert_eq!(env.stats().batches_completed, 1);
    assert!(done["started"].as_i64().unwrap() >= done["created"].as_i64().unwrap());
    assert!(done["completed"].as_i64().unwrap() >= done["started"].as_i64().unwrap());

    // ABORT of a success → 400 naming batch and rule; FAIL too.
    let (s, b) = env.action(&batch, "ABORT").await;
    assert_service_error(s, &b, 400, &[&batch, "success", "ABORT"]);
    let (s, b) = env.action(&batch, "FAIL").await;
    assert_service_error(s, &b, 400, &[&batch, "loading"]);

    // ABORT while loading; again is harmless; COMPLETE after → 400; PUT after → 400.
    let b2 = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&b2, &ds, "x.json", b"{}\n".to_vec()).await,
        StatusCode::OK
    );
    assert_eq!(env.action(&b2, "abort").await.0, StatusCode::OK);
    assert_eq!(env.action(&b2, "ABORT").await.0, StatusCode::OK);
    assert_eq!(env.batch(&b2).await["status"], "aborted");
    let (s, b) = env.action(&b2, "COMPLETE").await;
    assert_service_error(s, &b, 400, &[&b2, "aborted"]);
    let (s, b) = env.action(&b2, "REVERT").await;
    assert_service_error(s, &b, 400, &[&b2, "reverted"]);

    // FAIL while loading.
    let b3 = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(env.action(&b3, "FAIL").await.0, StatusCode::OK);
    assert_eq!(env.batch(&b3).await["status"], "failed");
    assert_eq!(env.action(&b3, "FAIL").await.0, StatusCode::OK);
    let (s, b) = env.action(&b3, "ABORT").await;
    assert_service_error(s, &b, 400, &[&b3, "failed"]);
}

#[tokio::test]
async fn intermediate_states_are_visible_and_abort_stops_processing() {
    let env = start(batchdrop_emulator::EmulatorConfig {
        processing_delay_ms: 400,
        ..cfg()
    })
    .await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&batch, &ds, "a.json", b"{\"a\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    assert_eq!(env.batch(&batch).await["status"], "staging");
    let b = env.wait_status(&batch, &["processing"]).await;
    assert!(b["started"].is_i64());
    env.wait_status(&batch, &["success"]).await;

    // Abort during processing wins over the processing result.
    let b2 = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&b2, &ds, "a.json", b"{\"a\":1}\n".to_vec()).await,
        StatusCode::OK
    );
    assert_eq!(env.action(&b2, "COMPLETE").await.0, StatusCode::OK);
    env.wait_status(&b2, &["processing"]).await;
    assert_eq!(env.action(&b2, "ABORT").await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(env.batch(&b2).await["status"], "aborted");
}

#[tokio::test]
async fn revert_makes_a_batch_inactive_then_deleted() {
    let env = start(cfg()).await;
    let (ds, batch, b) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "success");
    let (s, b) = env.action("01HZZZZZZZZZZZZZZZZZZZZZZZ", "REVERT").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let loading = env.create_batch(&ds, json!({"format": "json"})).await;
    let (s, b) = env.action(&loading, "REVERT").await;
    assert_service_error(s, &b, 400, &[&loading, "loading"]);

    assert_eq!(env.action(&batch, "revert").await.0, StatusCode::OK);
    assert_eq!(env.batch(&batch).await["status"], "inactive");
    assert_eq!(env.action(&batch, "REVERT").await.0, StatusCode::OK);
    env.wait_status(&batch, &["deleted"]).await;
    assert_eq!(env.action(&batch, "REVERT").await.0, StatusCode::OK);
    // Content is gone from disk.
    let files_dir = env.dir.path().join("files").join(&batch);
    assert!(!files_dir.exists());
}

#[tokio::test]
async fn replay_replaces_predecessors_when_it_succeeds() {
    let env = start(cfg()).await;
    let (ds, first, _) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    let second = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&second, &ds, "b.json", b"{\"a\":2}\n".to_vec())
            .await,
        StatusCode::OK
    );
    assert_eq!(env.action(&second, "COMPLETE").await.0, StatusCode::OK);
    env.wait_status(&second, &["success"]).await;

    // Predecessors with and without `$`, echoed without it.
    let (s, r) = env
        .create_batch_raw(json!({
            "datasetId": ds,
            "inputFormat": {"format": "json"},
            "replay": {"predecessors": [format!("${first}"), second.clone()], "reason": "replace"},
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(
        r["replay"],
        json!({"predecessors": [first, second], "reason": "replace"})
    );
    let replay = r["id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.put(&replay, &ds, "c.json", b"{\"a\":3}\n".to_vec())
            .await,
        StatusCode::OK
    );
    // Not replaced until the replay succeeds.
    assert_eq!(env.batch(&first).await["status"], "success");
    assert_eq!(env.action(&replay, "COMPLETE").await.0, StatusCode::OK);
    env.wait_status(&replay, &["success"]).await;
    for p in [&first, &second] {
        let b = env.batch(p).await;
        assert!(
            ["inactive", "deleted"].contains(&b["status"].as_str().unwrap()),
            "{b}"
        );
        assert_eq!(b["tags"]["acp_successor"], json!([replay]));
    }
    env.wait_status(&first, &["deleted"]).await;

    // Predecessor validation.
    let (s, b) = env
        .create_batch_raw(json!({"datasetId": ds, "inputFormat": {"format": "json"},
                                 "replay": {"predecessors": ["$01HZZZZZZZZZZZZZZZZZZZZZZZ"], "reason": "replace"}}))
        .await;
    assert_service_error(
        s,
        &b,
        400,
        &["01HZZZZZZZZZZZZZZZZZZZZZZZ", "does not exist"],
    );
    let other_ds = env.dataset().await;
    let (s, b) = env
        .create_batch_raw(json!({"datasetId": other_ds, "inputFormat": {"format": "json"},
                                 "replay": {"predecessors": [format!("${replay}")], "reason": "replace"}}))
        .await;
    assert_service_error(s, &b, 400, &[&replay, "same dataset"]);
    let (s, b) = env
        .create_batch_raw(json!({"datasetId": ds, "inputFormat": {"format": "json"},
                                 "replay": {"predecessors": [], "reason": "replace"}}))
        .await;
    assert_service_error(s, &b, 400, &["predecessors"]);
}

#[tokio::test]
async fn failed_replay_leaves_predecessors_alone() {
    let env = start(cfg()).await;
    let (ds, first, _) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    let (s, r) = env
        .create_batch_raw(json!({"datasetId": ds, "inputFormat": {"format": "json"},
                                 "replay": {"predecessors": [first.clone()]}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let replay = r["id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.put(&replay, &ds, "bad.json", b"not json\n".to_vec())
            .await,
        StatusCode::OK
    );
    env.action(&replay, "COMPLETE").await;
    env.wait_status(&replay, &["failed"]).await;
    let b = env.batch(&first).await;
    assert_eq!(b["status"], "success");
    assert!(b["tags"].get("acp_successor").is_none());
}

#[tokio::test]
async fn idle_loading_batches_are_abandoned_when_configured() {
    let env = start(batchdrop_emulator::EmulatorConfig {
        abandon_after_ms: 1500,
        ..cfg()
    })
    .await;
    let ds = env.dataset().await;
    let idle = env.create_batch(&ds, json!({"format": "json"})).await;
    let busy = env.create_batch(&ds, json!({"format": "json"})).await;
    let created = std::time::Instant::now();
    // Activity (uploads, far more often than the limit) keeps a batch alive, until the idle
    // one is abandoned.
    let mut i = 0;
    loop {
        assert_eq!(
            env.put(&busy, &ds, &format!("{i}.json"), b"{}\n".to_vec())
                .await,
            StatusCode::OK,
            "the busy batch, in use, must not be abandoned"
        );
        i += 1;
        let status = env.batch(&idle).await["status"].clone();
        if status == "abandoned" {
            break;
        }
        assert_eq!(status, "loading");
        assert!(
            created.elapsed() < std::time::Duration::from_secs(20),
            "the idle batch was never abandoned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        created.elapsed() >= std::time::Duration::from_millis(1500),
        "abandoned before abandon_after_ms"
    );
    assert_eq!(env.batch(&busy).await["status"], "loading");
    let (s, b) = env.action(&idle, "COMPLETE").await;
    assert_service_error(s, &b, 400, &[&idle, "abandoned"]);
    assert_eq!(
        env.put(&idle, &ds, "late.json", b"{}\n".to_vec()).await,
        StatusCode::BAD_REQUEST
    );
    // Nothing of it is readable.
    let (s, files) = env
        .get_json(&format!("{EXPORT}/batches/{idle}/files"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(files["data"], json!([]));
}
