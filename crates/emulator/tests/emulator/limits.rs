//! A batch's file-count and bytes limits (issue #23): checked against counters kept beside the
//! batch, which must hold what the batch's files hold across restarts, concurrent PUTs, large
//! files and data dirs of an emulator older than the counters.

use batchdrop_emulator::{EmulatorConfig, LimitsConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::large::{complete_file, initialize, patch};

fn limited(files: u64, bytes: u64) -> EmulatorConfig {
    EmulatorConfig {
        limits: LimitsConfig {
            max_files_per_batch: files,
            max_batch_bytes: bytes,
            ..LimitsConfig::default()
        },
        ..cfg()
    }
}

/// PUTs `len` bytes at `path` and returns the status with the error's detail, if any.
async fn put_detail(
    env: &Env,
    batch: &str,
    ds: &str,
    path: &str,
    len: usize,
) -> (StatusCode, String) {
    let r = env
        .req(Method::PUT, &env.file_url(batch, ds, path))
        .header("Content-Type", "application/octet-stream")
        .body(vec![b' '; len])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["detail"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn the_limits_count_a_batch_s_files_across_a_restart_large_files_included() {
    let env = start(limited(3, 100)).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&batch, &ds, "a.json", vec![b' '; 10]).await,
        StatusCode::OK
    );
    assert_eq!(
        initialize(&env, &batch, &ds, "big.json").await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, "big.json", "bytes 0-29/30", &[b' '; 30])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        complete_file(&env, &batch, &ds, "big.json").await.0,
        StatusCode::CREATED
    );

    let env = env.restart(limited(3, 100)).await;
    assert_eq!(
        put_detail(&env, &batch, &ds, "b.json", 10).await.0,
        StatusCode::OK
    );
    let (status, detail) = put_detail(&env, &batch, &ds, "c.json", 1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        detail.contains("already has 3 files") && detail.contains("at most 3"),
        "{detail}"
    );
    // 30 + 10 besides a.json: it may grow to 60 bytes, not 61.
    let (status, detail) = put_detail(&env, &batch, &ds, "a.json", 61).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail.contains("would hold 101 bytes"), "{detail}");
    assert_eq!(
        put_detail(&env, &batch, &ds, "a.json", 60).await.0,
        StatusCode::OK
    );
    // Replacing a file frees its old bytes: b.json shrinks to 0, then only 10 fit again.
    assert_eq!(
        put_detail(&env, &batch, &ds, "b.json", 0).await.0,
        StatusCode::OK
    );
    assert_eq!(
        put_detail(&env, &batch, &ds, "b.json", 11).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put_detail(&env, &batch, &ds, "b.json", 10).await.0,
        StatusCode::OK
    );
    // A re-initialized large file holds nothing until its COMPLETE, which is checked again.
    assert_eq!(
        initialize(&env, &batch, &ds, "big.json").await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, "big.json", "bytes 0-30/31", &[b' '; 31])
            .await
            .0,
        StatusCode::OK
    );
    let (status, v) = complete_file(&env, &batch, &ds, "big.json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("would hold 101 bytes"),
        "{v}"
    );
    // Another batch has limits of its own.
    let other = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        put_detail(&env, &other, &ds, "a.json", 100).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_puts_into_one_batch_stop_at_its_file_limit() {
    let env = start(limited(5, 1 << 30)).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let puts = (0..20).map(|i| {
        let (env, batch, ds) = (&env, &batch, &ds);
        async move {
            put_detail(env, batch, ds, &format!("{i}.json"), 100)
                .await
                .0
        }
    });
    let statuses = futures::future::join_all(puts).await;
    let stored = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(stored, 5, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let done = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(done["status"], "success", "{done:#}");
    assert_eq!(env.batch_downloads(&batch).await.len(), 5);
}

#[tokio::test]
async fn a_data_dir_from_before_the_counters_has_its_batches_counted() {
    let env = start(limited(3, 1000)).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    for name in ["a.json", "b.json"] {
        assert_eq!(
            env.put(&batch, &ds, name, vec![b' '; 400]).await,
            StatusCode::OK
        );
    }
    let mut env = env;
    env.emu.take().unwrap().shutdown().await;
    // What the emulator's data dir held before the counters: no triggers, no columns.
    rewrite_data_dir(
        env.dir.path(),
        &[
            "DROP TRIGGER files_counted_in",
            "DROP TRIGGER files_counted_again",
            "DROP TRIGGER files_counted_out",
            "ALTER TABLE batches DROP COLUMN file_count",
            "ALTER TABLE batches DROP COLUMN file_bytes",
        ],
    )
    .await;
    let env = start_in(env.dir, limited(3, 1000)).await;
    let (status, detail) = put_detail(&env, &batch, &ds, "c.json", 201).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail.contains("would hold 1001 bytes"), "{detail}");
    assert_eq!(
        put_detail(&env, &batch, &ds, "c.json", 200).await.0,
        StatusCode::OK
    );
    let (status, detail) = put_detail(&env, &batch, &ds, "d.json", 0).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail.contains("already has 3 files"), "{detail}");
}
