//! State survives a restart: metadata, files, chunked uploads in progress, batches cut
//! mid-processing.

use batchdrop_emulator::{Emulator, EmulatorConfig, EmulatorError};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::large::{complete_file, head_range, initialize, patch};

#[tokio::test]
async fn batches_files_and_chunked_uploads_survive_a_restart() {
    let env = start(cfg()).await;
    // A finished batch.
    let (ds, done, _) = env
        .ingest(json!({"format": "json"}), &[("a.json", crm_jsonl())])
        .await;
    // A loading batch with a PUT file and a half-uploaded large file.
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&batch, &ds, "small.json", b"{\"s\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    let big: Vec<u8> = (0..300)
        .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
        .collect();
    let total = big.len();
    assert_eq!(
        initialize(&env, &batch, &ds, "big.json").await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(
            &env,
            &batch,
            &ds,
            "big.json",
            &format!("bytes 0-999/{total}"),
            &big[..1000]
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(
            &env,
            &batch,
            &ds,
            "big.json",
            &format!("bytes 1000-1999/{total}"),
            &big[1000..2000]
        )
        .await
        .0,
        StatusCode::OK
    );
    let port_before = env.addr();

    let env = env.restart(cfg()).await;
    assert_ne!(env.addr(), port_before, "a new port (127.0.0.1:0)");
    assert_eq!(env.stats().requests, 0, "counters are per process");
    assert_eq!(env.batch(&done).await["status"], "success");
    assert_eq!(env.batch(&done).await["metrics"]["outputRecordCount"], 16);
    assert_eq!(env.batch(&batch).await["status"], "loading");
    // The client resumes from HEAD.
    let (_, range) = head_range(&env, &batch, &ds, "big.json").await;
    assert_eq!(range.as_deref(), Some("bytes=0-1999"));
    assert_eq!(
        head_range(&env, &batch, &ds, "small.json")
            .await
            .1
            .as_deref(),
        Some("bytes=0-7")
    );
    // Re-sending an acknowledged chunk is recognized across the restart.
    assert_eq!(
        patch(
            &env,
            &batch,
            &ds,
            "big.json",
            &format!("bytes 1000-1999/{total}"),
            &big[1000..2000]
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 1);
    assert_eq!(
        patch(
            &env,
            &batch,
            &ds,
            "big.json",
            &format!("bytes 2000-{}/{total}", total - 1),
            &big[2000..]
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        complete_file(&env, &batch, &ds, "big.json").await.0,
        StatusCode::CREATED
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 301);
    // Downloads work after the restart.
    let got = env.batch_downloads(&done).await.remove(0).1;
    assert_eq!(got, crm_jsonl());
}

#[tokio::test]
async fn a_batch_cut_mid_processing_is_processed_at_the_next_start() {
    let slow = EmulatorConfig {
        processing_delay_ms: 60_000,
        ..cfg()
    };
    let env = start(slow).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        env.put(&batch, &ds, "a.json", b"{\"a\":1}\n{\"a\":2}\n".to_vec())
            .await,
        StatusCode::OK
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    assert_eq!(env.batch(&batch).await["status"], "staging");
    let started = std::time::Instant::now();
    let env = env.restart(cfg()).await;
    assert!(
        started.elapsed().as_secs() < 5,
        "shutdown does not wait for the processing delay"
    );
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 2);
}

#[tokio::test]
async fn inactive_batches_are_still_collected_after_a_restart() {
    let env = start(EmulatorConfig {
        revert_gc_delay_ms: 60_000,
        ..cfg()
    })
    .await;
    let (_, batch, _) = env
        .ingest(json!({"format": "json"}), &[("a.json", b"{}\n".to_vec())])
        .await;
    assert_eq!(env.action(&batch, "REVERT").await.0, StatusCode::OK);
    let env = env.restart(cfg()).await;
    assert_eq!(env.batch(&batch).await["status"], "inactive");
    // The due time was recorded at REVERT (60 s): still inactive a moment later.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(env.batch(&batch).await["status"], "inactive");
}

#[tokio::test]
async fn a_data_dir_is_used_by_one_emulator_at_a_time() {
    let env = start(cfg()).await;
    let second = Emulator::start("127.0.0.1:0".parse().unwrap(), env.dir.path(), cfg()).await;
    match second {
        Err(EmulatorError::DataDirLocked { path }) => assert_eq!(path, env.dir.path()),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second emulator started on the same data dir"),
    }
    let msg = EmulatorError::DataDirLocked {
        path: env.dir.path().into(),
    }
    .to_string();
    assert!(msg.contains("another running emulator"), "{msg}");
    // Bind errors say what to do.
    let taken = env.addr();
    let other = tempfile::tempdir().unwrap();
    let err = Emulator::start(taken, other.path(), cfg())
        .await
        .expect_err("port in use");
    assert!(err.to_string().contains("--listen"), "{err}");
    // After a clean shutdown the dir can be used again.
    let env = env.restart(cfg()).await;
    assert!(env.stats().requests == 0);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    // A slow upload in flight while shutdown starts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = format!("{}{}", env.base, env.file_url(&batch, &ds, "slow.json"));
    let client = env.client.clone();
    let upload = tokio::spawn(async move {
        client
            .put(url)
            .header("Authorization", "Bearer t")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", "TEST@AdobeOrg")
            .header("x-sandbox-name", "prod")
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(tokio_stream(rx)))
            .send()
            .await
            .map(|r| r.status())
    });
    tx.send(Ok(b"{\"a\":1}\n".to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let Env { emu, dir, .. } = env;
    let shutdown = tokio::spawn(async move { emu.unwrap().shutdown().await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tx.send(Ok(b"{\"a\":2}\n".to_vec())).await.unwrap();
    drop(tx);
    let status = upload.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    shutdown.await.unwrap();
    let env = start_in(dir, cfg()).await;
    assert_eq!(
        head_range(&env, &batch, &ds, "slow.json")
            .await
            .1
            .as_deref(),
        Some("bytes=0-15")
    );
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_until_signal_serves_then_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = dir.path().to_path_buf();
    let server =
        tokio::spawn(
            async move { batchdrop_emulator::serve_until_signal(addr, &data, cfg()).await },
        );
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("http://{addr}/emulator/stats"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(up, "the emulator answers on {addr}");
    // SAFETY: sends SIGTERM to this process, whose handler (installed by serve_until_signal
    // before it started listening) turns it into a graceful shutdown.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        client
            .get(format!("http://{addr}/emulator/stats"))
            .send()
            .await
            .is_err()
    );
    // The data dir is free again.
    let env = start_in(dir, cfg()).await;
    assert_eq!(env.stats().requests, 0);
}

#[tokio::test]
async fn a_batch_stopped_while_processing_is_processed_again() {
    let env = start(EmulatorConfig {
        processing_delay_ms: 400,
        ..cfg()
    })
    .await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "csv"})).await;
    assert_eq!(
        env.put(&batch, &ds, "a.csv", read(&fixture("CRM_profiles.csv")))
            .await,
        StatusCode::OK
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    env.wait_status(&batch, &["processing"]).await;
    let env = env.restart(cfg()).await;
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 259);
    assert_eq!(env.stats().batches_succeeded, 1);
}

const CHILD_ENV: &str = "BATCHDROP_EMULATOR_TEST_CHILD_DATA_DIR";

/// Not a test by itself: the entry point of the child process that
/// `state_survives_a_hard_kill` starts (this test binary, run again with the data dir in an
/// environment variable). Without the variable it has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_emulator_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cfg = EmulatorConfig {
        processing_delay_ms: 60_000,
        ..cfg()
    };
    batchdrop_emulator::serve_until_signal(
        "127.0.0.1:0".parse().unwrap(),
        std::path::Path::new(&dir),
        cfg,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_hard_kill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "restart::child_emulator_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let reading = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines.next().expect("the child prints its address").unwrap();
            // libtest may print its own "test ... " before our line.
            if let Some((_, url)) = line.split_once("batchdrop emulator listening on ") {
                return url.trim().to_owned();
            }
        }
    });
    let base = tokio::time::timeout(std::time::Duration::from_secs(60), reading)
        .await
        .expect("the child starts within 60 s")
        .unwrap();
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let client = reqwest::Client::new();
    let req = |m: Method, path: String| {
        client
            .request(m, format!("{base}{path}"))
            .header("Authorization", "Bearer t")
            .header("x-api-key", "k")
            .header("x-gw-ims-org-id", "TEST@AdobeOrg")
            .header("x-sandbox-name", "prod")
    };
    // A dataset, a batch being processed, a batch loading with a PUT file and a chunked file.
    let r = req(Method::POST, format!("{CATALOG}/dataSets"))
        .json(&json!({"name": "d", "schemaRef": {"id": "s"}}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let ds = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    let create = |format: &str| {
        req(Method::POST, format!("{IMPORT}/batches"))
            .json(&json!({"datasetId": ds, "inputFormat": {"format": format}}))
            .send()
    };
    let v: Value = create("json").await.unwrap().json().await.unwrap();
    let processed = v["id"].as_str().unwrap().to_owned();
    let file = |b: &str, p: &str| format!("{IMPORT}/batches/{b}/datasets/{ds}/files/{p}");
    let r = req(Method::PUT, file(&processed, "a.json"))
        .header("Content-Type", "application/octet-stream")
        .body("{\"a\":1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = req(
        Method::POST,
        format!("{IMPORT}/batches/{processed}?action=COMPLETE"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = create("json").await.unwrap().json().await.unwrap();
    let loading = v["id"].as_str().unwrap().to_owned();
    let r = req(Method::PUT, file(&loading, "small.json"))
        .header("Content-Type", "application/octet-stream")
        .body("{\"s\":1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = req(
        Method::POST,
        format!("{}?action=INITIALIZE", file(&loading, "big.json")),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = req(Method::PATCH, file(&loading, "big.json"))
        .header("Content-Range", "bytes 0-7/24")
        .header("Content-Type", "application/octet-stream")
        .body("{\"b\":1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A second chunk is half sent when the process dies.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: x\r\n{AUTH_HEADERS}Content-Range: bytes 8-15/24\r\nContent-Length: 8\r\n\r\n{{\"b\"",
            file(&loading, "big.json")
        );
        s.write_all(head.as_bytes()).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    child.0.kill().unwrap(); // SIGKILL: no shutdown at all
    child.0.wait().unwrap();
    drop(s);

    let env = start_in(dir, cfg()).await;
    assert_eq!(env.batch(&loading).await["status"], "loading");
    let (_, range) = crate::large::head_range(&env, &loading, &ds, "big.json").await;
    assert_eq!(
        range.as_deref(),
        Some("bytes=0-7"),
        "only the acknowledged chunk"
    );
    assert_eq!(
        std::fs::read_dir(env.dir.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        crate::large::head_range(&env, &loading, &ds, "small.json")
            .await
            .1
            .as_deref(),
        Some("bytes=0-7")
    );
    // The batch that was waiting for processing is processed.
    let b = env.wait_status(&processed, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    // The client resumes and finishes.
    let (s, _) = crate::large::patch(
        &env,
        &loading,
        &ds,
        "big.json",
        "bytes 8-23/24",
        b"{\"b\":2}\n{\"b\":3}\n",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        crate::large::complete_file(&env, &loading, &ds, "big.json")
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(env.action(&loading, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&loading, &["success", "failed"]).await;
    assert_eq!(b["metrics"]["inputRecordCount"], 4, "{b}");
}

/// Kills the child process if the test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
