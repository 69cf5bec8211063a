//! E2: single-request PUT uploads, names, limits and states.

use batchdrop_emulator::{EmulatorConfig, LimitsConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn put_creates_then_replaces_and_keeps_sub_folders() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let name = "date=2026-11-29/orders.json";
    assert_eq!(
        env.put(&batch, &ds, name, b"{\"a\":1}\n".to_vec()).await,
        StatusCode::OK
    );
    assert_eq!(
        env.put(&batch, &ds, name, b"{\"a\":1}\n{\"a\":2}\n".to_vec())
            .await,
        StatusCode::OK
    );
    // Percent-encoded slash is the same path.
    assert_eq!(
        env.put(
            &batch,
            &ds,
            "date=2026-11-29%2Forders.json",
            b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n".to_vec()
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        env.put(&batch, &ds, "other.json", b"{\"b\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    assert_eq!(env.stats().puts, 4);
    // HEAD on a PUT file gives its full range.
    let r = env
        .req(Method::HEAD, &env.file_url(&batch, &ds, "other.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["range"], "bytes=0-7");

    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let b = env.wait_status(&batch, &["success"]).await;
    assert_eq!(b["metrics"]["inputFileCount"], 2);
    assert_eq!(b["metrics"]["inputRecordCount"], 4);
    let files = env.batch_files(&batch).await;
    let names: Vec<&str> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![name, "other.json"]);
}

#[tokio::test]
async fn put_refuses_bad_names_without_escaping_the_data_dir() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let long = "a".repeat(256);
    let bad = [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2E%2E/escape.json",
        "../escape.json",
        "a/../../escape.json",
        "./a.json",
        "a//b.json",
        "dir/",
        "%2Fabsolute.json",
        "nul%00byte.json",
        "new%0Aline.json",
        "tab%09.json",
        "back%5C..%5Cslash.json",
        "bad%FFutf8.json",
        long.as_str(),
    ];
    for name in bad {
        let path = env.file_url(&batch, &ds, name);
        let req = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\n{AUTH_HEADERS}Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{{}}\n"
        );
        let resp = env.raw(req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{name}: {resp}");
        assert!(resp.contains("\"detail\""), "{name}: {resp}");
    }
    // A 255-byte component is fine.
    let ok = "b".repeat(250) + ".json";
    assert_eq!(
        env.put(&batch, &ds, &ok, b"{}\n".to_vec()).await,
        StatusCode::OK
    );
    // Nothing was written outside the data dir's own places.
    let parent = env.dir.path().parent().unwrap();
    assert!(!parent.join("escape.json").exists());
    let mut top: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("emulator."))
        .collect();
    top.sort();
    assert_eq!(top, vec!["files", "parts", "tmp"]);
}

#[tokio::test]
async fn put_over_256_mb_is_refused_up_front_with_413() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let path = env.file_url(&batch, &ds, "huge.json");
    // Claim 256 MB + 1 byte and send only a few bytes: the answer comes before the body.
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\n{AUTH_HEADERS}Content-Type: application/octet-stream\r\nContent-Length: 268435457\r\n\r\n{{\"a\":1}}"
    );
    let resp = env.raw(req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("268435456"), "{resp}");
    // Exactly 256 MB announced is not refused up front (the emulator waits for the body).
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\n{AUTH_HEADERS}Content-Type: application/octet-stream\r\nContent-Length: 268435456\r\n\r\n"
    );
    let mut s = tokio::net::TcpStream::connect(env.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(r.is_err(), "no early answer for an allowed size");
    drop(s);
    assert_eq!(env.stats().puts, 0);
}

#[tokio::test]
async fn put_counts_streamed_bytes_against_the_limit() {
    let env = start(EmulatorConfig {
        limits: LimitsConfig {
            max_put_bytes: 1000,
            ..LimitsConfig::default()
        },
        ..cfg()
    })
    .await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    // Chunked transfer encoding: no Content-Length to check up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b' '; 400])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = env
        .req(Method::PUT, &env.file_url(&batch, &ds, "big.json"))
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    assert_eq!(
        env.put(&batch, &ds, "ok.json", vec![b' '; 1000]).await,
        StatusCode::OK
    );
    // Nothing left behind in tmp/.
    assert_eq!(
        std::fs::read_dir(env.dir.path().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn put_enforces_files_and_bytes_per_batch() {
    let env = start(EmulatorConfig {
        limits: LimitsConfig {
            max_files_per_batch: 3,
            max_batch_bytes: 100,
            ..LimitsConfig::default()
        },
        ..cfg()
    })
    .await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    for i in 0..3 {
        assert_eq!(
            env.put(&batch, &ds, &format!("{i}.json"), vec![b' '; 10])
                .await,
            StatusCode::OK
        );
    }
    let r = env
        .req(Method::PUT, &env.file_url(&batch, &ds, "3.json"))
        .header("Content-Type", "application/octet-stream")
        .body(vec![b' '; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("at most 3 files"),
        "{v}"
    );
    // Replacing an existing file is not a new file; but the bytes limit holds.
    assert_eq!(
        env.put(&batch, &ds, "0.json", vec![b' '; 80]).await,
        StatusCode::OK
    );
    let r = env
        .req(Method::PUT, &env.file_url(&batch, &ds, "1.json"))
        .header("Content-Type", "application/octet-stream")
        .body(vec![b' '; 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("at most 100 bytes"),
        "{v}"
    );
    // INITIALIZE counts as a file too.
    let r = env
        .req(
            Method::POST,
            &format!(
                "{}?action=INITIALIZE",
                env.file_url(&batch, &ds, "big.json")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn put_only_while_loading_into_a_known_batch_of_that_dataset() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let other = env.dataset().await;
    let r = env
        .req(
            Method::PUT,
            &env.file_url("01HZZZZZZZZZZZZZZZZZZZZZZZ", &ds, "a.json"),
        )
        .header("Content-Type", "application/octet-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let r = env
        .req(Method::PUT, &env.file_url(&batch, &other, "a.json"))
        .header("Content-Type", "application/octet-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains(&other), "{v}");

    assert_eq!(
        env.put(&batch, &ds, "a.json", b"{}\n".to_vec()).await,
        StatusCode::OK
    );
    assert_eq!(env.action(&batch, "COMPLETE").await.0, StatusCode::OK);
    let r = env
        .req(Method::PUT, &env.file_url(&batch, &ds, "late.json"))
        .header("Content-Type", "application/octet-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains(&batch) && detail.contains("loading"),
        "{detail}"
    );
    assert!(
        ["staging", "processing", "success"]
            .iter()
            .any(|s| detail.contains(&format!("is {s}"))),
        "{detail}"
    );
}

#[tokio::test]
async fn urls_longer_than_2000_characters_get_414() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let r = env
        .req(
            Method::GET,
            &format!("{CATALOG}/batches?dataSet={ds}&x={}", "y".repeat(2100)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
}

#[tokio::test]
async fn put_streams_bodies_larger_than_any_in_memory_limit() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let size = 24 << 20;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        data.extend_from_slice(b"{\"payload\":\"0123456789abcdef0123456789abcdef\"}\n");
    }
    let len = data.len();
    assert_eq!(env.put(&batch, &ds, "big.json", data).await, StatusCode::OK);
    let r = env
        .req(Method::HEAD, &env.file_url(&batch, &ds, "big.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["range"],
        format!("bytes=0-{}", len - 1).as_str()
    );
    assert_eq!(env.stats().bytes_received, len as u64);
}

#[tokio::test]
async fn multipart_uploads_are_refused() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let r = env
        .req(Method::PUT, &env.file_url(&batch, &ds, "a.json"))
        .header("Content-Type", "multipart/form-data; boundary=xyz")
        .body("--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n{}\r\n--xyz--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"].as_str().unwrap().contains("--data-binary"),
        "{v}"
    );
    assert_eq!(env.stats().puts, 0);
}

#[tokio::test]
async fn a_body_without_a_valid_content_type_is_refused_by_the_gateway() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let url = env.file_url(&batch, &ds, "a.json");
    for content_type in [None, Some("json"), Some("")] {
        let mut put = env.req(Method::PUT, &url).body("{}\n");
        if let Some(value) = content_type {
            put = put.header("Content-Type", value);
        }
        let r = put.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{content_type:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["title"], "BadRequestError", "{v}");
        assert_eq!(v["detail"], "A valid content-type must be specified", "{v}");
    }
    assert_eq!(env.stats().puts, 0);
    // The guide's body-less action POSTs carry no Content-Type, and pass.
    let (status, _) = env.action(&batch, "ABORT").await;
    assert_eq!(status, StatusCode::OK);
}

/// PUTs share one connection to the database while COMPLETE and processing write through
/// others: every PUT of several batches sent at once, some replacing a file just stored, while
/// the batches before them are completed and processed, is recorded once, with its last bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_across_batches_are_each_recorded_while_others_are_processed() {
    const BATCHES: usize = 4;
    const FILES: usize = 20;
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let mut batches = Vec::new();
    for _ in 0..BATCHES {
        batches.push(env.create_batch(&ds, json!({"format": "json"})).await);
    }
    let content = |batch: usize, file: usize| format!("{{\"batch\":{batch},\"file\":{file}}}\n");
    let load_and_complete = |index: usize| {
        let (env, ds, batch) = (&env, &ds, &batches[index]);
        async move {
            let puts = (0..FILES).map(|file| async move {
                let name = format!("{file}.json");
                // Every third file is sent twice: the second PUT replaces the first.
                if file % 3 == 0 {
                    let first = env.put(batch, ds, &name, b"{\"old\":1}\n".to_vec()).await;
                    assert_eq!(first, StatusCode::OK, "batch {index}, file {name}");
                }
                let last = env.put(batch, ds, &name, content(index, file).into_bytes());
                assert_eq!(last.await, StatusCode::OK, "batch {index}, file {name}");
            });
            futures::future::join_all(puts).await;
            assert_eq!(env.action(batch, "COMPLETE").await.0, StatusCode::OK);
        }
    };
    futures::future::join_all((0..BATCHES).map(load_and_complete)).await;
    for (index, batch) in batches.iter().enumerate() {
        let done = env.wait_status(batch, &["success", "failed"]).await;
        assert_eq!(done["status"], "success", "{done:#}");
        assert_eq!(done["metrics"]["inputFileCount"], FILES, "{done:#}");
        assert_eq!(done["metrics"]["inputRecordCount"], FILES, "{done:#}");
        let mut downloads = env.batch_downloads(batch).await;
        downloads.sort_by_key(|(file, _)| file["name"].as_str().unwrap().to_owned());
        let mut expected: Vec<(String, String)> = (0..FILES)
            .map(|file| (format!("{file}.json"), content(index, file)))
            .collect();
        expected.sort();
        let got: Vec<(String, String)> = downloads
            .iter()
            .map(|(file, bytes)| {
                let name = file["name"].as_str().unwrap().to_owned();
                (name, String::from_utf8(bytes.clone()).unwrap())
            })
            .collect();
        assert_eq!(got, expected, "batch {index}");
    }
}
