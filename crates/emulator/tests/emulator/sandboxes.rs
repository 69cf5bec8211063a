//! Sandboxes isolate datasets and batches: one created in a sandbox (by the Catalog, or seeded
//! with a `sandbox`) is 404 from another, absent from its lists, and takes no batch from it; a
//! batch is known only in the sandbox it was created in, even for a dataset every sandbox sees.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

/// A request from the `dev` sandbox of the same organisation.
fn from_dev(env: &Env, method: Method, path: &str) -> reqwest::RequestBuilder {
    env.client
        .request(method, format!("{}{path}", env.base))
        .header("Authorization", "Bearer test-token")
        .header("x-api-key", "test-key")
        .header("x-gw-ims-org-id", "TEST@AdobeOrg")
        .header("x-sandbox-name", "dev")
}

async fn listed(request: reqwest::RequestBuilder) -> Vec<String> {
    let v: Value = request.send().await.unwrap().json().await.unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn a_dataset_of_another_sandbox_is_404_unlisted_and_takes_no_batch() {
    let env = start(cfg()).await;
    let r = from_dev(&env, Method::POST, &format!("{CATALOG}/dataSets"))
        .json(&json!({"name": "dev only", "schemaRef": {"id": "https://ns.adobe.com/tenant/schemas/x", "contentType": "application/vnd.adobe.xed+json;version=1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let id = v[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned();
    // Seen from everywhere: set up by the emulator's owner without a sandbox.
    let shared = env.dataset().await;

    let r = from_dev(&env, Method::GET, &format!("{CATALOG}/dataSets/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "seen from its own sandbox");
    let r = env
        .req(Method::GET, &format!("{CATALOG}/dataSets/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "404 from prod");
    let body = r.text().await.unwrap();
    assert!(body.contains(&id) && body.contains("prod"), "{body}");

    let prod = listed(env.req(Method::GET, &format!("{CATALOG}/dataSets"))).await;
    assert!(!prod.contains(&id), "prod lists only its own: {prod:?}");
    assert!(prod.contains(&shared), "{prod:?}");
    let dev = listed(from_dev(&env, Method::GET, &format!("{CATALOG}/dataSets"))).await;
    assert!(dev.contains(&id) && dev.contains(&shared), "{dev:?}");

    let (status, body) = env
        .create_batch_raw(json!({"datasetId": id, "inputFormat": {"format": "json"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let r = env
        .req(Method::DELETE, &format!("{CATALOG}/dataSets/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "prod cannot delete it");
    let r = from_dev(&env, Method::GET, &format!("{CATALOG}/dataSets/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "still there for dev");
}

#[tokio::test]
async fn a_seeded_dataset_with_a_sandbox_belongs_to_it() {
    let mut config = cfg();
    config.datasets = vec![batchdrop_emulator::DatasetSeed {
        id: "5deac2648a19d218a888d2b9".into(),
        sandbox: "dev".into(),
        ..Default::default()
    }];
    let env = start(config).await;
    let path = format!("{CATALOG}/dataSets/5deac2648a19d218a888d2b9");
    let prod = env.req(Method::GET, &path).send().await.unwrap().status();
    let dev = from_dev(&env, Method::GET, &path)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!((prod, dev), (StatusCode::NOT_FOUND, StatusCode::OK));
}

async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.unwrap().status()
}

async fn json_of(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_batch_of_another_sandbox_does_not_exist_for_any_endpoint() {
    let env = start(cfg()).await;
    // A dataset every sandbox sees; its batch is prod's.
    let (ds, batch, done) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n".to_vec())],
        )
        .await;
    assert_eq!(done["status"], "success", "{done}");
    let file_id = env.batch_downloads(&batch).await[0].0["dataSetFileId"]
        .as_str()
        .unwrap()
        .to_owned();

    // The Catalog: 404, unlisted, not the dataset's last batch, its files unlisted.
    let r = from_dev(&env, Method::GET, &format!("{CATALOG}/batches/{batch}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body = r.text().await.unwrap();
    assert!(body.contains(&batch) && body.contains("dev"), "{body}");
    assert!(
        listed(env.req(Method::GET, &format!("{CATALOG}/batches")))
            .await
            .contains(&batch)
    );
    let dev = listed(from_dev(&env, Method::GET, &format!("{CATALOG}/batches"))).await;
    assert!(!dev.contains(&batch), "{dev:?}");
    let (_, prod_ds) = env.get_json(&format!("{CATALOG}/dataSets/{ds}")).await;
    assert_eq!(prod_ds[&ds]["lastBatchId"], batch.as_str(), "{prod_ds}");
    let (status, dev_ds) = json_of(from_dev(
        &env,
        Method::GET,
        &format!("{CATALOG}/dataSets/{ds}"),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(dev_ds[&ds].get("lastBatchId").is_none(), "{dev_ds}");
    let dev = listed(from_dev(
        &env,
        Method::GET,
        &format!("{CATALOG}/lastBatches"),
    ))
    .await;
    assert!(!dev.contains(&ds), "{dev:?}");
    assert!(
        listed(env.req(Method::GET, &format!("{CATALOG}/dataSetFiles")))
            .await
            .contains(&file_id)
    );
    let dev = listed(from_dev(
        &env,
        Method::GET,
        &format!("{CATALOG}/dataSetFiles"),
    ))
    .await;
    assert!(!dev.contains(&file_id), "{dev:?}");

    // Data Access: empty listings where the spec has no 404, 404 where it has.
    let (status, files) = json_of(from_dev(
        &env,
        Method::GET,
        &format!("{EXPORT}/batches/{batch}/files"),
    ))
    .await;
    assert_eq!(
        (status, files["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{files}"
    );
    let (status, failed) = json_of(from_dev(
        &env,
        Method::GET,
        &format!("{EXPORT}/batches/{batch}/failed"),
    ))
    .await;
    assert_eq!(
        (status, failed["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{failed}"
    );
    for path in [
        format!("{EXPORT}/files/{file_id}"),
        format!("{EXPORT}/batches/{batch}/meta?path=input_files"),
        format!("{IMPORT}/batches/{batch}/datasets/{ds}/preview"),
    ] {
        assert_eq!(
            status_of(from_dev(&env, Method::GET, &path)).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            status_of(env.req(Method::GET, &path)).await,
            StatusCode::OK,
            "{path} from prod"
        );
    }
    let preview_path = format!("{EXPORT}/datasets/{ds}/preview");
    let (_, prod_rows) = json_of(env.req(Method::GET, &preview_path)).await;
    let (_, dev_rows) = json_of(from_dev(&env, Method::GET, &preview_path)).await;
    assert_eq!(
        (
            prod_rows["data"].as_array().map(Vec::len),
            dev_rows["data"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0)),
        "{prod_rows} / {dev_rows}"
    );

    // Batch Ingestion: no action on it, no replay of it.
    let revert = from_dev(
        &env,
        Method::POST,
        &format!("{IMPORT}/batches/{batch}?action=REVERT"),
    );
    assert_eq!(status_of(revert).await, StatusCode::NOT_FOUND);
    assert_eq!(env.batch(&batch).await["status"], "success", "untouched");
    let replay = from_dev(&env, Method::POST, &format!("{IMPORT}/batches")).json(&json!({
        "datasetId": ds,
        "inputFormat": {"format": "json"},
        "replay": {"predecessors": [format!("${batch}")], "reason": "replace"},
    }));
    let (status, body) = json_of(replay).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn files_cannot_be_sent_into_a_batch_of_another_sandbox() {
    let env = start(cfg()).await;
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "json"})).await;
    let url = env.file_url(&batch, &ds, "a.json");
    let put = from_dev(&env, Method::PUT, &url)
        .header("Content-Type", "application/octet-stream")
        .body(b"{\"a\":1}\n".to_vec());
    assert_eq!(status_of(put).await, StatusCode::NOT_FOUND);
    let init = from_dev(&env, Method::POST, &format!("{url}?action=INITIALIZE"));
    assert_eq!(status_of(init).await, StatusCode::NOT_FOUND);
    let complete = from_dev(
        &env,
        Method::POST,
        &format!("{IMPORT}/batches/{batch}?action=COMPLETE"),
    );
    assert_eq!(status_of(complete).await, StatusCode::NOT_FOUND);
    assert_eq!(
        env.batch(&batch).await["status"],
        "loading",
        "still prod's, still loading"
    );
    assert_eq!(
        env.put(&batch, &ds, "a.json", b"{\"a\":1}\n".to_vec())
            .await,
        StatusCode::OK
    );
    let head = from_dev(&env, Method::HEAD, &url);
    assert_eq!(status_of(head).await, StatusCode::NOT_FOUND);
}
