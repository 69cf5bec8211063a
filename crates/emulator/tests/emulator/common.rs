//! Helpers shared by the emulator tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batchdrop_emulator::{Emulator, EmulatorConfig, EmulatorStats};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The workspace's top folder. This file is compiled in `crates/emulator`'s tests and, through
/// `#[path]`, in the top package's `tests/mapping.rs` (the binary's `map` with the emulator),
/// whose manifest is the workspace's own.
/// A batch error entry's generic description and the emulator's own explanations
/// (`emulatorDetails`: which file, row and field), in one text.
pub fn details(error: &Value) -> String {
    let mut text = error["description"].as_str().unwrap_or_default().to_owned();
    for d in error["emulatorDetails"].as_array().into_iter().flatten() {
        text.push_str(" | ");
        text.push_str(d.as_str().unwrap_or_default());
    }
    text
}

pub fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("crates/emulator").is_dir() {
        manifest.to_path_buf()
    } else {
        manifest.join("../..")
    }
}

pub fn fixture(name: &str) -> PathBuf {
    // Copies of the real sample files from shared/fixtures (see tests/fixtures/README.md),
    // which also live in shared/ beside the work tree.
    let candidates = [
        workspace().join("tests/fixtures").join(name),
        workspace().join("../shared/fixtures").join(name),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("fixture {name} not found in {candidates:?}"))
}

/// A fast configuration for tests.
pub fn cfg() -> EmulatorConfig {
    EmulatorConfig {
        processing_delay_ms: 10,
        revert_gc_delay_ms: 150,
        ..EmulatorConfig::default()
    }
}

pub struct Env {
    pub emu: Option<Emulator>,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub base: String,
}

pub const IMPORT: &str = "/data/foundation/import";
pub const CATALOG: &str = "/data/foundation/catalog";
pub const EXPORT: &str = "/data/foundation/export";

pub async fn start(config: EmulatorConfig) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(dir, config).await
}

pub async fn start_in(dir: tempfile::TempDir, config: EmulatorConfig) -> Env {
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), dir.path(), config)
        .await
        .expect("emulator starts");
    let base = emu.base_url();
    Env {
        emu: Some(emu),
        dir,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base,
    }
}

impl Env {
    pub fn emu(&self) -> &Emulator {
        self.emu.as_ref().expect("running")
    }

    pub fn stats(&self) -> EmulatorStats {
        self.emu().stats()
    }

    /// Shuts the emulator down and starts a new one on the same data dir.
    pub async fn restart(mut self, config: EmulatorConfig) -> Env {
        self.emu.take().unwrap().shutdown().await;
        start_in(self.dir, config).await
    }

    /// A request with the headers the permissive default accepts.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", "Bearer test-token")
            .header("x-api-key", "test-key")
            .header("x-gw-ims-org-id", "TEST@AdobeOrg")
            .header("x-sandbox-name", "prod")
    }

    pub async fn dataset(&self) -> String {
        let id = format!("{:024x}", rand::random::<u128>() >> 32);
        self.emu()
            .ensure_dataset(&id, "test dataset")
            .await
            .unwrap();
        id
    }

    pub async fn create_batch_raw(&self, body: Value) -> (StatusCode, Value) {
        let r = self
            .req(Method::POST, &format!("{IMPORT}/batches"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_batch(&self, ds: &str, format: Value) -> String {
        let (status, body) = self
            .create_batch_raw(json!({"datasetId": ds, "inputFormat": format}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create batch: {body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub fn file_url(&self, batch: &str, ds: &str, path: &str) -> String {
        format!("{IMPORT}/batches/{batch}/datasets/{ds}/files/{path}")
    }

    pub async fn put(&self, batch: &str, ds: &str, path: &str, data: Vec<u8>) -> StatusCode {
        self.req(Method::PUT, &self.file_url(batch, ds, path))
            .header("Content-Type", "application/octet-stream")
            .body(data)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn action(&self, batch: &str, action: &str) -> (StatusCode, Value) {
        let r = self
            .req(
                Method::POST,
                &format!("{IMPORT}/batches/{batch}?action={action}"),
            )
            .send()
            .await
            .unwrap();
        let s = r.status();
        let text = r.text().await.unwrap();
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn batch(&self, id: &str) -> Value {
        let r = self
            .req(Method::GET, &format!("{CATALOG}/batches/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        v[id].clone()
    }

    /// Polls the batch until its status is one of `wanted` (10 s at most).
    pub async fn wait_status(&self, id: &str, wanted: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let b = self.batch(id).await;
            if wanted.contains(&b["status"].as_str().unwrap_or("")) {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "batch {id} never reached {wanted:?}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Create, upload one file, complete, wait for the end.
    pub async fn ingest(
        &self,
        format: Value,
        files: &[(&str, Vec<u8>)],
    ) -> (String, String, Value) {
        self.ingest_with(format, json!({}), files).await
    }

    /// Like `ingest`, with more fields in the create-batch body (e.g. enableErrorDiagnostics).
    pub async fn ingest_with(
        &self,
        format: Value,
        options: Value,
        files: &[(&str, Vec<u8>)],
    ) -> (String, String, Value) {
        let ds = self.dataset().await;
        let (batch, b) = self.ingest_into(&ds, format, options, files).await;
        (ds, batch, b)
    }

    /// Creates a batch in this dataset (with more fields in its body), uploads the files,
    /// completes it and waits for its end: (batch id, batch).
    pub async fn ingest_into(
        &self,
        ds: &str,
        format: Value,
        options: Value,
        files: &[(&str, Vec<u8>)],
    ) -> (String, Value) {
        let mut body = json!({"datasetId": ds, "inputFormat": format});
        for (k, v) in options.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let (status, created) = self.create_batch_raw(body).await;
        assert_eq!(status, StatusCode::CREATED, "create batch: {created}");
        let batch = created["id"].as_str().unwrap().to_owned();
        for (name, data) in files {
            assert_eq!(
                self.put(&batch, ds, name, data.clone()).await,
                StatusCode::OK
            );
        }
        let (s, _) = self.action(&batch, "COMPLETE").await;
        assert_eq!(s, StatusCode::OK);
        let b = self.wait_status(&batch, &["success", "failed"]).await;
        (batch, b)
    }

    /// The failed rows of a batch, through `GET /export/batches/{id}/failed` (the listing of
    /// failed files) and each file's JSON Lines, as `{name, row, record, errors}` objects (the
    /// wire's `_filename`, `_row`, `_corrupt_record`, `_errors`), in order.
    pub async fn failed_rows(&self, batch: &str) -> Vec<Value> {
        let (status, listing) = self
            .get_json(&format!("{EXPORT}/batches/{batch}/failed?limit=100"))
            .await;
        assert_eq!(status, StatusCode::OK, "{listing}");
        let mut rows = Vec::new();
        for file in listing["data"].as_array().unwrap() {
            let href = file["_links"]["self"]["href"].as_str().unwrap();
            let path = href.strip_prefix(&self.base).unwrap_or(href);
            let r = self.req(Method::GET, path).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{href}");
            for line in r.text().await.unwrap().lines() {
                let line: Value = serde_json::from_str(line).unwrap();
                rows.push(json!({
                    "name": line["_filename"],
                    "row": line["_row"],
                    "record": line["_corrupt_record"],
                    "errors": line["_errors"],
                }));
            }
        }
        rows
    }

    /// A dataset file's bytes as a Data Access client reads them: the listing of its parts,
    /// then each part by its `?path=` link.
    pub async fn download(&self, file_id: &str) -> Vec<u8> {
        let (status, listing) = self.get_json(&format!("{EXPORT}/files/{file_id}")).await;
        assert_eq!(status, StatusCode::OK, "listing of {file_id}: {listing}");
        let mut bytes = Vec::new();
        for part in listing["data"].as_array().expect("a listing of parts") {
            let href = part["_links"]["self"]["href"].as_str().unwrap();
            let path = href.strip_prefix(&self.base).unwrap_or(href);
            let r = self.req(Method::GET, path).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "part {href}");
            bytes.extend_from_slice(&r.bytes().await.unwrap());
        }
        bytes
    }

    /// Data Access's listing of a batch's dataset files (`data`: `dataSetFileId`, `name`,
    /// `records`...).
    pub async fn batch_files(&self, batch: &str) -> Value {
        let (status, files) = self
            .get_json(&format!("{EXPORT}/batches/{batch}/files"))
            .await;
        assert_eq!(status, StatusCode::OK, "files of {batch}: {files}");
        files
    }

    /// Every dataset file of a successful batch, as listed, with its bytes.
    pub async fn batch_downloads(&self, batch: &str) -> Vec<(Value, Vec<u8>)> {
        let files = self.batch_files(batch).await;
        let mut out = Vec::new();
        for file in files["data"].as_array().unwrap() {
            let id = file["dataSetFileId"].as_str().unwrap();
            out.push((file.clone(), self.download(id).await));
        }
        out
    }

    /// GET a path with the permissive headers → (status, JSON body or Null).
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(Method::GET, path).send().await.unwrap();
        let s = r.status();
        let text = r.text().await.unwrap();
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.emu().local_addr()
    }

    /// Sends raw bytes over TCP and returns what came back (for requests that reqwest would
    /// normalize or refuse to send).
    pub async fn raw(&self, request: &[u8]) -> String {
        raw_request(self.addr(), request).await
    }
}

pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if let Some(head_end) = find(&out, b"\r\n\r\n") {
                    // Stop once the whole body (by Content-Length) is in.
                    let head = String::from_utf8_lossy(&out[..head_end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if out.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub const AUTH_HEADERS: &str = "Authorization: Bearer t\r\nx-api-key: k\r\nx-gw-ims-org-id: TEST@AdobeOrg\r\nx-sandbox-name: prod\r\n";

/// A small Parquet file with `rows` rows (id: int64, name: utf8).
pub fn parquet_bytes(rows: usize) -> Vec<u8> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|i| format!("name-{i}")),
    ));
    let batch = RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// The multi-line JSON fixture as JSON Lines.
/// Runs `statements` on the emulator's SQLite file in `data_dir` (made if missing) while no
/// emulator runs there: how a test makes the data dir an older release left behind. The only
/// SQL in the emulator's tests; everything else goes through the HTTP API.
pub async fn rewrite_data_dir(data_dir: &Path, statements: &[&'static str]) {
    use sqlx::Connection;
    let url = format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("emulator.sqlite").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for statement in statements {
        sqlx::query(*statement)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    conn.close().await.unwrap();
}

pub fn crm_jsonl() -> Vec<u8> {
    let arr: Vec<Value> =
        serde_json::from_slice(&std::fs::read(fixture("CRM_profiles.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for v in arr {
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
