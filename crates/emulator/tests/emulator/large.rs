//! E3–E5: large files in chunks (INITIALIZE, PATCH with Content-Range, HEAD, COMPLETE).

use batchdrop_emulator::{EmulatorConfig, LimitsConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

pub async fn initialize(env: &Env, batch: &str, ds: &str, name: &str) -> StatusCode {
    env.req(
        Method::POST,
        &format!("{}?action=INITIALIZE", env.file_url(batch, ds, name)),
    )
    .send()
    .await
    .unwrap()
    .status()
}

pub async fn complete_file(env: &Env, batch: &str, ds: &str, name: &str) -> (StatusCode, Value) {
    let r = env
        .req(
            Method::POST,
            &format!("{}?action=COMPLETE", env.file_url(batch, ds, name)),
        )
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn patch(
    env: &Env,
    batch: &str,
    ds: &str,
    name: &str,
    range: &str,
    data: &[u8],
) -> (StatusCode, Value) {
    let r = env
        .req(Method::PATCH, &env.file_url(batch, ds, name))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", range)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

pub async fn head_range(
    env: &Env,
    batch: &str,
    ds: &str,
    name: &str,
) -> (StatusCode, Option<String>) {
    let r = env
        .req(Method::HEAD, &env.file_url(batch, ds, name))
        .send()
        .await
        .unwrap();
    (
        r.status(),
        r.headers()
            .get("range")
            .map(|v| v.to_str().unwrap().to_owned()),
    )
}

fn data(n: usize) -> Vec<u8> {
    // JSON Lines, so the batch can be processed afterwards.
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(
            format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 50)).as_bytes(),
        );
        i += 1;
    }
    out
}

#[tokio::test]
async fn chunked_upload_with_head_resume_and_gap_detection() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let name = "big/part-0001.json";
    let body = data(10_000);
    let total = body.len();
    let records = body.iter().filter(|b| **b == b'\n').count();

    assert_eq!(
        initialize(&env, &batch, &ds, name).await,
        StatusCode::CREATED
    );
    // Nothing yet: HEAD has no Range.
    assert_eq!(
        head_range(&env, &batch, &ds, name).await,
        (StatusCode::OK, None)
    );

    let cut1 = 3000;
    let cut2 = 7000;
    let (s, v) = patch(
        &env,
        &batch,
        &ds,
        name,
        &format!("bytes 0-{}/{total}", cut1 - 1),
        &body[..cut1],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"name": name, "sizeInBytes": cut1}));
    assert_eq!(
        head_range(&env, &batch, &ds, name).await.1.as_deref(),
        Some(format!("bytes=0-{}", cut1 - 1).as_str())
    );
    // The last chunk before the middle one: the prefix does not move.
    let (s, _) = patch(
        &env,
        &batch,
        &ds,
        name,
        &format!("bytes {cut2}-{}/{total}", total - 1),
        &body[cut2..],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        head_range(&env, &batch, &ds, name).await.1.as_deref(),
        Some(format!("bytes=0-{}", cut1 - 1).as_str())
    );
    // COMPLETE detects the gap.
    let (s, v) = complete_file(&env, &batch, &ds, name).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("bytes {cut1}-{}", cut2 - 1)),
        "{v}"
    );
    // Batch COMPLETE refuses a file still being uploaded.
    let (s, v) = env.action(&batch, "COMPLETE").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains(name), "{v}");
    // Fill the gap (without the total this time).
    let (s, _) = patch(
        &env,
        &batch,
        &ds,
        name,
        &format!("bytes {cut1}-{}", cut2 - 1),
        &body[cut1..cut2],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        head_range(&env, &batch, &ds, name).await.1.as_deref(),
        Some(format!("bytes=0-{}", total - 1).as_str())
    );
    let (s, v) = complete_file(&env, &batch, &ds, name).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Idempotent.
    assert_eq!(
        complete_file(&env, &batch, &ds, name).await.0,
        StatusCode::CREATED
    );
    // PATCH after COMPLETE is refused.
    let (s, _) = patch(&env, &batch, &ds, name, "bytes 0-0", &body[..1]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], records);
    assert_eq!(b["metrics"]["inputByteSize"], total);
    // The assembled file is byte-identical.
    let got = env.batch_downloads(&batch).await.remove(0).1;
    assert_eq!(got, body);
    let st = env.stats();
    assert_eq!(st.chunks_received, 3);
    assert_eq!(st.duplicate_acknowledged_chunks, 0);
    // Parts were cleaned up.
    assert_eq!(
        std::fs::read_dir(env.dir.path().join("parts"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn resent_chunks_are_harmless_and_counted() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let name = "f.json";
    let body = data(4000);
    let total = body.len();
    assert_eq!(
        initialize(&env, &batch, &ds, name).await,
        StatusCode::CREATED
    );
    // INITIALIZE again keeps what arrived.
    let r1 = format!("bytes 0-1999/{total}");
    assert_eq!(
        patch(&env, &batch, &ds, name, &r1, &body[..2000]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        initialize(&env, &batch, &ds, name).await,
        StatusCode::CREATED
    );
    assert_eq!(
        head_range(&env, &batch, &ds, name).await.1.as_deref(),
        Some("bytes=0-1999")
    );
    // Same range, same bytes.
    assert_eq!(
        patch(&env, &batch, &ds, name, &r1, &body[..2000]).await.0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 1);
    // A sub-range of what arrived, same bytes: also a duplicate.
    assert_eq!(
        patch(
            &env,
            &batch,
            &ds,
            name,
            &format!("bytes 100-199/{total}"),
            &body[100..200]
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 2);
    // An overlapping chunk with new bytes beyond: not a duplicate, and fine at COMPLETE.
    let r2 = format!("bytes 1500-{}/{total}", total - 1);
    assert_eq!(
        patch(&env, &batch, &ds, name, &r2, &body[1500..]).await.0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 2);
    assert_eq!(env.stats().chunks_received, 4);
    assert_eq!(
        complete_file(&env, &batch, &ds, name).await.0,
        StatusCode::CREATED
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputByteSize"], total);
}

#[tokio::test]
async fn conflicting_overlaps_are_refused_at_complete_and_fixed_by_a_covering_chunk() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let name = "f.json";
    assert_eq!(
        initialize(&env, &batch, &ds, name).await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, name, "bytes 0-99/150", &[b'a'; 100])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&env, &batch, &ds, name, "bytes 50-149/150", &[b'b'; 100])
            .await
            .0,
        StatusCode::OK
    );
    let (s, v) = complete_file(&env, &batch, &ds, name).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("conflicting overlap"),
        "{v}"
    );
    // Re-sending a chunk that covers the conflict replaces what it covers.
    assert_eq!(
        patch(&env, &batch, &ds, name, "bytes 0-149/150", &[b'c'; 150])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        complete_file(&env, &batch, &ds, name).await.0,
        StatusCode::CREATED
    );
    // Same range with new bytes: the last one wins.
    let name2 = "g.json";
    assert_eq!(
        initialize(&env, &batch, &ds, name2).await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, name2, "bytes 0-9/10", &[b'a'; 10])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&env, &batch, &ds, name2, "bytes 0-9/10", &[b'b'; 10])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 0);
    assert_eq!(
        complete_file(&env, &batch, &ds, name2).await.0,
        StatusCode::CREATED
    );
    let name = "i.json";
    assert_eq!(
        initialize(&env, &batch, &ds, name).await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, name, "bytes 0-99/150", &[b'a'; 100])
            .await
            .0,
        StatusCode::OK
    );
    // Totals that disagree are refused at PATCH.
    let (s, v) = patch(&env, &batch, &ds, name, "bytes 0-9/999", &[b'a'; 10]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("999"), "{v}");
    // Missing tail with a known total.
    let name3 = "h.json";
    assert_eq!(
        initialize(&env, &batch, &ds, name3).await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, name3, "bytes 0-9/20", &[b'a'; 10])
            .await
            .0,
        StatusCode::OK
    );
    let (s, v) = complete_file(&env, &batch, &ds, name3).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["detail"].as_str().unwrap().contains("bytes 10-19 of 20"),
        "{v}"
    );
}

#[tokio::test]
async fn patch_refusals() {
    let env = start(EmulatorConfig {
        limits: LimitsConfig {
            max_chunk_bytes: 100,
            ..LimitsConfig::default()
        },
        ..cfg()
    })
    .await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    // Not initialized.
    let (s, v) = patch(&env, &batch, &ds, "x.json", "bytes 0-9/10", &[b' '; 10]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("INITIALIZE"), "{v}");
    assert_eq!(
        initialize(&env, &batch, &ds, "x.json").await,
        StatusCode::CREATED
    );
    // No Content-Range.
    let r = env
        .req(Method::PATCH, &env.file_url(&batch, &ds, "x.json"))
        .header("Content-Type", "application/octet-stream")
        .body(vec![b' '; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Malformed ranges.
    for range in [
        "bytes 5-1/10",
        "bytes 0-9/5",
        "items 0-9",
        "bytes a-b/10",
        "bytes 0-9/x",
    ] {
        let (s, v) = patch(&env, &batch, &ds, "x.json", range, &[b' '; 10]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{range}: {v}");
    }
    // Body length differs from the range.
    let (s, v) = patch(&env, &batch, &ds, "x.json", "bytes 0-19/20", &[b' '; 10]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // Too large a chunk.
    let (s, _) = patch(&env, &batch, &ds, "x.json", "bytes 0-199/200", &[b' '; 200]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // HEAD on an unknown file; COMPLETE of an unknown file.
    assert_eq!(
        head_range(&env, &batch, &ds, "nope.json").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        complete_file(&env, &batch, &ds, "nope.json").await.0,
        StatusCode::BAD_REQUEST
    );
    // COMPLETE with no chunk.
    let (s, v) = complete_file(&env, &batch, &ds, "x.json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("no chunk"), "{v}");
    // Unknown file action.
    let r = env
        .req(
            Method::POST,
            &format!("{}?action=EXPLODE", env.file_url(&batch, &ds, "x.json")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // PUT replaces an unfinished large upload.
    assert_eq!(
        patch(&env, &batch, &ds, "x.json", "bytes 0-9/20", &[b' '; 10])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        env.put(&batch, &ds, "x.json", b"{\"a\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    assert_eq!(
        head_range(&env, &batch, &ds, "x.json").await.1.as_deref(),
        Some("bytes=0-7")
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    // Chunks only while loading.
    let (s, v) = patch(&env, &batch, &ds, "x.json", "bytes 0-9/10", &[b' '; 10]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("loading"), "{v}");
}

#[tokio::test]
async fn a_chunk_cut_by_the_client_leaves_no_trace() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        initialize(&env, &batch, &ds, "f.json").await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, "f.json", "bytes 0-9/30", &[b' '; 10])
            .await
            .0,
        StatusCode::OK
    );
    // The client dies after sending half of the next chunk.
    {
        use tokio::io::AsyncWriteExt;
        let path = env.file_url(&batch, &ds, "f.json");
        let mut s = tokio::net::TcpStream::connect(env.addr()).await.unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\n{AUTH_HEADERS}Content-Range: bytes 10-19/30\r\nContent-Length: 10\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b' '; 5]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        head_range(&env, &batch, &ds, "f.json").await.1.as_deref(),
        Some("bytes=0-9")
    );
    assert_eq!(env.stats().chunks_received, 1);
    assert_eq!(
        std::fs::read_dir(env.dir.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    // The client resumes from HEAD.
    assert_eq!(
        patch(&env, &batch, &ds, "f.json", "bytes 10-29/30", &[b' '; 20])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        complete_file(&env, &batch, &ds, "f.json").await.0,
        StatusCode::CREATED
    );
    assert_eq!(env.stats().duplicate_acknowledged_chunks, 0);
}

#[tokio::test]
async fn a_replaced_chunk_is_what_gets_assembled() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        initialize(&env, &batch, &ds, "f.json").await,
        StatusCode::CREATED
    );
    assert_eq!(
        patch(&env, &batch, &ds, "f.json", "bytes 0-7/16", b"{\"a\":1}\n")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&env, &batch, &ds, "f.json", "bytes 8-15/16", b"{\"b\":2}\n")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&env, &batch, &ds, "f.json", "bytes 0-7/16", b"{\"c\":3}\n")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        complete_file(&env, &batch, &ds, "f.json").await.0,
        StatusCode::CREATED
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    env.wait_status(&batch, &["success"]).await;
    let got = env.batch_downloads(&batch).await.remove(0).1;
    assert_eq!(got, b"{\"c\":3}\n{\"b\":2}\n");
    // The superseded part is gone from disk.
    assert_eq!(
        std::fs::read_dir(env.dir.path().join("parts"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_into_one_batch() {
    let env = std::sync::Arc::new(start(cfg()).await);
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    // 40 PUTs and the 16 chunks of one large file, all at once.
    let body = data(16 * 1024);
    assert_eq!(
        initialize(&env, &batch, &ds, "big.json").await,
        StatusCode::CREATED
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (env, batch, ds) = (env.clone(), batch.clone(), ds.clone());
        tasks.spawn(async move {
            env.put(
                &batch,
                &ds,
                &format!("small/{i}.json"),
                format!("{{\"i\":{i}}}\n").into_bytes(),
            )
            .await
        });
    }
    let total = body.len();
    for k in 0..16 {
        let (env, batch, ds) = (env.clone(), batch.clone(), ds.clone());
        let start = k * total / 16;
        let end = (k + 1) * total / 16;
        let chunk = body[start..end].to_vec();
        tasks.spawn(async move {
            patch(
                &env,
                &batch,
                &ds,
                "big.json",
                &format!("bytes {start}-{}/{total}", end - 1),
                &chunk,
            )
            .await
            .0
        });
    }
    while let Some(r) = tasks.join_next().await {
        let s = r.unwrap();
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s}");
    }
    assert_eq!(
        complete_file(&env, &batch, &ds, "big.json").await.0,
        StatusCode::CREATED
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputFileCount"], 41);
    let records = body.iter().filter(|c| **c == b'\n').count();
    assert_eq!(b["metrics"]["inputRecordCount"], 40 + records);
    assert_eq!(env.stats().puts, 40);
    assert_eq!(env.stats().chunks_received, 16);
}

/// A multipart/form-data body of one file field holding `data`.
fn form(boundary: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"chunk\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn a_chunk_sent_as_a_form_file_field_is_stored_as_its_bytes() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    assert_eq!(
        initialize(&env, &batch, &ds, "f.json").await,
        StatusCode::CREATED
    );
    // The first chunk raw (the guide), the second as a form (the spec and Postman).
    let first = b"{\"a\":1}\n";
    let second = b"{\"a\":2}\n{\"a\":3}\n";
    let total = first.len() + second.len();
    let (s, v) = patch(
        &env,
        &batch,
        &ds,
        "f.json",
        &format!("bytes 0-{}/{total}", first.len() - 1),
        first,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = env
        .req(Method::PATCH, &env.file_url(&batch, &ds, "f.json"))
        .header("Content-Type", "multipart/form-data; boundary=b0undary")
        .header(
            "Content-Range",
            format!("bytes {}-{}/{total}", first.len(), total - 1),
        )
        .body(form("b0undary", second))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sizeInBytes"], second.len());
    // A form without a file field, or with a broken frame, is refused and stores nothing.
    for (body, what) in [
        (
            b"--b0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--b0undary--\r\n".to_vec(),
            "no file field",
        ),
        (b"not a form at all".to_vec(), "no framing"),
    ] {
        let r = env
            .req(Method::PATCH, &env.file_url(&batch, &ds, "f.json"))
            .header("Content-Type", "multipart/form-data; boundary=b0undary")
            .header("Content-Range", format!("bytes 0-{}/{total}", first.len() - 1))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what}");
    }
    assert_eq!(
        complete_file(&env, &batch, &ds, "f.json").await.0,
        StatusCode::CREATED
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&batch, &["success", "failed"]).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["metrics"]["inputRecordCount"], 3);
    let id = env.batch_downloads(&batch).await;
    let expected: Vec<u8> = [first.as_slice(), second.as_slice()].concat();
    assert_eq!(id[0].1, expected);
}
