//! Fault injection: each kind, its counter, and that /emulator/stats is never faulted.

use std::time::{Duration, Instant};

use batchdrop_emulator::{EmulatorConfig, FaultConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

fn with_faults(f: FaultConfig) -> EmulatorConfig {
    EmulatorConfig { faults: f, ..cfg() }
}

async fn list(env: &Env) -> reqwest::Result<reqwest::Response> {
    env.req(Method::GET, &format!("{CATALOG}/dataSets"))
        .send()
        .await
}

async fn stats_json(env: &Env) -> Value {
    let r = env
        .client
        .get(format!("{}/emulator/stats", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn http_500_503_429_are_injected_and_counted() {
    let env = start(with_faults(FaultConfig {
        http_500_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    for _ in 0..3 {
        let r = list(&env).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], 500);
    }
    let s = stats_json(&env).await;
    assert_eq!(s["faults_injected"]["http_500"], 3);
    assert_eq!(s["requests"], 3);

    let env = start(with_faults(FaultConfig {
        http_503_probability: 1.0,
        retry_after_secs: 7,
        ..FaultConfig::default()
    }))
    .await;
    let r = list(&env).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(env.stats().faults_injected.http_503, 1);

    let env = start(with_faults(FaultConfig {
        http_429_probability: 1.0,
        retry_after_secs: 3,
        ..FaultConfig::default()
    }))
    .await;
    // Faults come before authentication and before any effect.
    let ds = "5deac2648a19d218a888d2b1";
    env.emu().ensure_dataset(ds, "x").await.unwrap();
    let r = env
        .req(Method::POST, &format!("{IMPORT}/batches"))
        .json(&json!({"datasetId": ds, "inputFormat": {"format": "json"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "3");
    let v: Value = r.json().await.unwrap();
    assert!(v["error_code"].is_string());
    assert_eq!(env.stats().batches_created, 0);
    assert_eq!(env.stats().faults_injected.http_429, 1);
    assert_eq!(env.stats().faults_injected.total(), 1);
}

#[tokio::test]
async fn connection_reset_drops_the_request_mid_body_without_effect() {
    let env = start(with_faults(FaultConfig {
        connection_reset_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let ds = env.dataset().await;
    let r = env
        .req(Method::POST, &format!("{IMPORT}/batches"))
        .json(&json!({"datasetId": ds, "inputFormat": {"format": "json"}}))
        .send()
        .await;
    assert!(r.is_err(), "no response: {r:?}");
    // A large body is cut while it is being sent.
    let r = env
        .req(
            Method::PUT,
            &env.file_url("01HZZZZZZZZZZZZZZZZZZZZZZZ", &ds, "a.json"),
        )
        .header("Content-Type", "application/octet-stream")
        .body(vec![b' '; 4 << 20])
        .send()
        .await;
    assert!(r.is_err(), "no response: {r:?}");
    let s = stats_json(&env).await;
    assert_eq!(s["faults_injected"]["connection_reset"], 2);
    assert_eq!(s["batches_created"], 0);
    assert_eq!(s["puts"], 0);
    // The raw view: the connection closes with no HTTP response at all.
    let resp = env
        .raw(format!("GET {CATALOG}/dataSets HTTP/1.1\r\nHost: x\r\n{AUTH_HEADERS}\r\n").as_bytes())
        .await;
    assert_eq!(resp, "");
}

#[tokio::test]
async fn latency_is_added() {
    let env = start(with_faults(FaultConfig {
        latency_probability: 1.0,
        latency_ms: 150,
        ..FaultConfig::default()
    }))
    .await;
    let t = Instant::now();
    assert_eq!(list(&env).await.unwrap().status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));
    // Not on stats.
    let t = Instant::now();
    stats_json(&env).await;
    assert!(t.elapsed() < Duration::from_millis(150));
    assert_eq!(env.stats().faults_injected.latency, 1);
}

#[tokio::test]
async fn forced_batch_failure() {
    let env = start(with_faults(FaultConfig {
        batch_failure_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let (_, _, b) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    assert_eq!(b["errors"][0]["code"], "EMULATOR-FAULT-500", "{b}");
    assert_eq!(env.stats().faults_injected.batch_failure, 1);
    assert_eq!(env.stats().batches_failed, 1);
}

#[tokio::test]
async fn faults_are_reproducible_from_the_seed() {
    let f = FaultConfig {
        seed: 42,
        http_500_probability: 0.3,
        http_503_probability: 0.2,
        ..FaultConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let env = start(with_faults(f.clone())).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(list(&env).await.unwrap().status().as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&500) && runs[0].contains(&503) && runs[0].contains(&200),
        "{:?}",
        runs[0]
    );
}

#[tokio::test]
async fn config_file_is_toml_with_every_key_optional() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("emu.toml");
    std::fs::write(
        &p,
        r#"
processing_delay_ms = 50
revert_gc_delay_ms = 1000

[gateway]
tokens = ["t1"]
api_keys = ["k1"]
orgs = ["O@AdobeOrg"]
sandboxes = ["prod"]

[limits]
max_put_bytes = 1024

[[datasets]]
id = "5deac2648a19d218a888d2b1"
name = "orders"

[faults]
seed = 7
http_429_probability = 0.1
retry_after_secs = 2
"#,
    )
    .unwrap();
    let c = EmulatorConfig::from_file(&p).unwrap();
    assert_eq!(c.processing_delay_ms, 50);
    assert_eq!(c.gateway.tokens, vec!["t1"]);
    assert_eq!(c.limits.max_put_bytes, 1024);
    assert_eq!(c.limits.max_files_per_batch, 1500);
    assert_eq!(c.datasets[0].name, "orders");
    assert_eq!(c.faults.seed, 7);
    assert_eq!(c.faults.http_500_probability, 0.0);
    // Pre-created datasets exist at start.
    let env = start(EmulatorConfig {
        processing_delay_ms: 10,
        ..c
    })
    .await;
    let r = env
        .client
        .get(format!(
            "{}{CATALOG}/dataSets/5deac2648a19d218a888d2b1",
            env.base
        ))
        .header("Authorization", "Bearer t1")
        .header("x-api-key", "k1")
        .header("x-gw-ims-org-id", "O@AdobeOrg")
        .header("x-sandbox-name", "prod")
        .send()
        .await
        .unwrap();
    assert!(r.status() == StatusCode::OK || r.status() == StatusCode::TOO_MANY_REQUESTS);

    // Empty file → defaults.
    std::fs::write(&p, "").unwrap();
    let c = EmulatorConfig::from_file(&p).unwrap();
    assert_eq!(c.processing_delay_ms, 200);
    assert_eq!(c.limits.max_put_bytes, 268_435_456);
    // Errors name the file and the problem.
    std::fs::write(&p, "procesing_delay_ms = 5\n").unwrap();
    let e = EmulatorConfig::from_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("emu.toml") && e.contains("procesing_delay_ms"),
        "{e}"
    );
    std::fs::write(&p, "[faults]\nhttp_500_probability = 1.5\n").unwrap();
    let e = EmulatorConfig::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("http_500_probability"), "{e}");
    let e = EmulatorConfig::from_file(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
}

#[tokio::test]
async fn lost_response_applies_the_request_but_the_client_never_hears_of_it() {
    let env = start(with_faults(FaultConfig {
        lost_response_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let ds = env.dataset().await;
    let r = env
        .req(Method::POST, &format!("{IMPORT}/batches"))
        .json(&json!({"datasetId": ds, "inputFormat": {"format": "json"}}))
        .send()
        .await;
    assert!(r.is_err(), "no response: {r:?}");
    assert_eq!(
        env.stats().batches_created,
        1,
        "the batch exists: an orphan for the client"
    );
    assert_eq!(env.stats().faults_injected.lost_response, 1);
    let env = env.restart(cfg()).await;
    let all: Value = env
        .req(Method::GET, &format!("{CATALOG}/batches?dataSet={ds}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch = all
        .as_object()
        .unwrap()
        .keys()
        .next()
        .expect("the orphan batch")
        .clone();

    // A chunk whose acknowledgement was lost is not an acknowledged chunk.
    let env = env
        .restart(with_faults(FaultConfig {
            lost_response_probability: 1.0,
            ..FaultConfig::default()
        }))
        .await;
    let path = env.file_url(&batch, &ds, "f.json");
    let init = env
        .req(Method::POST, &format!("{path}?action=INITIALIZE"))
        .send()
        .await;
    assert!(init.is_err());
    let sent = env
        .req(Method::PATCH, &path)
        .header("Content-Range", "bytes 0-9/20")
        .header("Content-Type", "application/octet-stream")
        .body(vec![b' '; 10])
        .send()
        .await;
    assert!(sent.is_err());
    assert_eq!(env.stats().chunks_received, 1);
    let env = env.restart(cfg()).await;
    let (_, range) = crate::large::head_range(&env, &batch, &ds, "f.json").await;
    assert_eq!(range.as_deref(), Some("bytes=0-9"));
    // Re-sending it: not a duplicate of an acknowledged chunk (the first ack was lost)...
    assert_eq!(
        crate::large::patch(&env, &batch, &ds, "f.json", "bytes 0-9/20", &[b' '; 10])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 0);
    // ...but now it was acknowledged, so once more is.
    assert_eq!(
        crate::large::patch(&env, &batch, &ds, "f.json", "bytes 0-9/20", &[b' '; 10])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 1);
}

/// Issue #18 item 9: batches reach `queued`, `retrying` and `stalled`, so that clients'
/// handling of them can be tested. A processing delay long enough to be seen by polling.
#[tokio::test]
async fn batches_are_queued_retried_and_stalled_on_demand() {
    let slow = |f: FaultConfig| EmulatorConfig {
        faults: f,
        processing_delay_ms: 400,
        ..cfg()
    };
    async fn run(env: &Env) -> String {
        let ds = env.dataset().await;
        let batch = env.create_batch(&ds, json!({"format": "json"})).await;
        assert_eq!(
            env.put(&batch, &ds, "a.json", b"{\"a\":1}\n".to_vec())
                .await,
            StatusCode::OK
        );
        assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
        batch
    }

    let env = start(slow(FaultConfig {
        queued_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let batch = run(&env).await;
    env.wait_status(&batch, &["queued"]).await;
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");

    let env = start(slow(FaultConfig {
        retrying_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let batch = run(&env).await;
    env.wait_status(&batch, &["retrying"]).await;
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");

    let env = start(slow(FaultConfig {
        stalled_probability: 1.0,
        ..FaultConfig::default()
    }))
    .await;
    let batch = run(&env).await;
    env.wait_status(&batch, &["stalled"]).await;
    // Stalled stays stalled: a later batch of the same emulator ends, this one does not move.
    let other = run(&env).await;
    env.wait_status(&other, &["stalled"]).await;
    assert_eq!(env.batch(&batch).await["status"], "stalled");
    // A stalled batch can be aborted.
    assert_eq!(env.action(&batch, "ABORT").await.0, StatusCode::OK);
    assert_eq!(env.batch(&batch).await["status"], "aborted");

    // The knobs are probabilities, checked like the others.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emulator.toml");
    std::fs::write(&path, "[faults]\nstalled_probability = 2.0\n").unwrap();
    let refused = EmulatorConfig::from_file(&path).expect_err("2.0 is refused");
    assert!(
        refused.to_string().contains("stalled_probability"),
        "{refused}"
    );
}
