//! Sandboxes isolate datasets: one created in a sandbox (by the Catalog, or seeded with a
//! `sandbox`) is 404 from another, absent from its lists, and takes no batch from it.

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
