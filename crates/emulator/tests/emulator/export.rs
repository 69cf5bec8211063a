//! Data Access: listing a batch's files, downloading them, failed rows; data of inactive and
//! deleted batches disappears.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

async fn get_json(env: &Env, path: &str) -> (StatusCode, Value) {
    let r = env.req(Method::GET, path).send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn files_are_listed_downloaded_and_disappear_after_revert() {
    let env = start(cfg()).await;
    let a = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
    let c = read(&fixture("CRM_profiles.csv"));
    let ds = env.dataset().await;
    let batch = env.create_batch(&ds, json!({"format": "csv"})).await;
    assert_eq!(
        env.put(&batch, &ds, "x/CRM_profiles.csv", c.clone()).await,
        StatusCode::OK
    );
    assert_eq!(
        env.put(&batch, &ds, "small.csv", b"h\n1\n2\n".to_vec())
            .await,
        StatusCode::OK
    );
    // Before success: nothing to read.
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
    env.action(&batch, "COMPLETE").await;
    env.wait_status(&batch, &["success"]).await;

    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let f = &data[1];
    assert_eq!(f["name"], "x/CRM_profiles.csv");
    assert_eq!(f["dataSetId"], ds);
    assert_eq!(f["records"], "259");
    assert_eq!(f["size"], c.len().to_string());
    assert_eq!(data[0]["records"], "2");
    let id = f["dataSetFileId"].as_str().unwrap();
    let href = f["_links"]["self"]["href"].as_str().unwrap();
    assert_eq!(href, format!("{}{EXPORT}/files/{id}", env.base));
    let r = env
        .req(Method::GET, &format!("{EXPORT}/files/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], c.len().to_string().as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), c.as_slice());
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/failed")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));

    // Unknown ids.
    assert_eq!(
        get_json(
            &env,
            &format!("{EXPORT}/batches/01HZZZZZZZZZZZZZZZZZZZZZZZ/files")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_json(
            &env,
            &format!("{EXPORT}/batches/01HZZZZZZZZZZZZZZZZZZZZZZZ/failed")
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_json(&env, &format!("{EXPORT}/files/nope")).await.0,
        StatusCode::NOT_FOUND
    );

    // Revert: gone from Data Access at once.
    assert_eq!(env.action(&batch, "REVERT").await.0, StatusCode::OK);
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
    assert_eq!(
        get_json(&env, &format!("{EXPORT}/files/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    env.wait_status(&batch, &["deleted"]).await;
    assert_eq!(
        get_json(&env, &format!("{EXPORT}/files/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let _ = a;
}

#[tokio::test]
async fn failed_batches_expose_no_files_but_their_failed_rows() {
    let env = start(cfg()).await;
    let (_, batch, b) = env
        .ingest(
            json!({"format": "json"}),
            &[("a.json", b"{\"a\":1}\n{oops\n".to_vec())],
        )
        .await;
    assert_eq!(b["status"], "failed");
    let (s, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/files")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], json!([]));
    let (_, v) = get_json(&env, &format!("{EXPORT}/batches/{batch}/failed")).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["row"], 2);
    assert!(
        v["data"][0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("a.json")
    );
}

#[tokio::test]
async fn preview_shows_the_first_rows() {
    let env = start(cfg()).await;
    let (ds, batch, _) = env
        .ingest(
            json!({"format": "csv"}),
            &[("a.csv", read(&fixture("CRM_profiles.csv")))],
        )
        .await;
    let (s, v) = get_json(
        &env,
        &format!("{IMPORT}/batches/{batch}/datasets/{ds}/preview?format=json&nrow=3"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["F_NAME"], "Ewart");
    let (ds, batch, _) = env
        .ingest(
            json!({"format": "parquet"}),
            &[("p.parquet", parquet_bytes(10))],
        )
        .await;
    let (_, v) = get_json(
        &env,
        &format!("{IMPORT}/batches/{batch}/datasets/{ds}/preview?nrow=2"),
    )
    .await;
    assert_eq!(
        v["data"],
        json!([{"id": 0, "name": "name-0"}, {"id": 1, "name": "name-1"}])
    );
}
