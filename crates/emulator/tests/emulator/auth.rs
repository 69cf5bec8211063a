//! Gateway authentication: each refusal with its code and body.

use batchdrop_emulator::{EmulatorConfig, GatewayConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;

async fn call(env: &Env, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut r = env.client.get(format!("{}{CATALOG}/dataSets", env.base));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

const TOKEN: (&str, &str) = ("Authorization", "Bearer good-token");
const KEY: (&str, &str) = ("x-api-key", "good-key");
const ORG: (&str, &str) = ("x-gw-ims-org-id", "GOOD@AdobeOrg");
const SANDBOX: (&str, &str) = ("x-sandbox-name", "prod");

fn strict() -> EmulatorConfig {
    EmulatorConfig {
        gateway: GatewayConfig {
            tokens: vec!["good-token".into()],
            api_keys: vec!["good-key".into()],
            orgs: vec!["GOOD@AdobeOrg".into()],
            sandboxes: vec!["prod".into()],
            accept_issued_tokens: false,
        },
        ..cfg()
    }
}

fn assert_gateway(resp: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(resp.0.as_u16(), status, "{:?}", resp.1);
    assert_eq!(resp.1["error_code"], code, "{:?}", resp.1);
    assert!(resp.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn every_gateway_refusal_has_its_code() {
    let env = start(strict()).await;
    assert_gateway(&call(&env, &[KEY, ORG, SANDBOX]).await, 403, "403010");
    assert_gateway(
        &call(
            &env,
            &[("Authorization", "Bearer bad-token"), KEY, ORG, SANDBOX],
        )
        .await,
        401,
        "401013",
    );
    assert_gateway(
        &call(
            &env,
            &[("Authorization", "Basic Z29vZA=="), KEY, ORG, SANDBOX],
        )
        .await,
        401,
        "401013",
    );
    assert_gateway(
        &call(&env, &[("Authorization", "Bearer "), KEY, ORG, SANDBOX]).await,
        401,
        "401013",
    );
    assert_gateway(&call(&env, &[TOKEN, ORG, SANDBOX]).await, 403, "403000");
    assert_gateway(
        &call(&env, &[TOKEN, ("x-api-key", "other"), ORG, SANDBOX]).await,
        403,
        "403003",
    );
    assert_gateway(&call(&env, &[TOKEN, KEY, SANDBOX]).await, 400, "400003");
    assert_gateway(
        &call(
            &env,
            &[TOKEN, KEY, ("x-gw-ims-org-id", "EVIL@AdobeOrg"), SANDBOX],
        )
        .await,
        403,
        "403025",
    );
    // Missing sandbox: a service error body.
    let (s, body) = call(&env, &[TOKEN, KEY, ORG]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], 400);
    assert!(body["detail"].as_str().unwrap().contains("x-sandbox-name"));
    let (s, body) = call(&env, &[TOKEN, KEY, ORG, ("x-sandbox-name", "dev")]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");

    let (s, _) = call(&env, &[TOKEN, KEY, ORG, SANDBOX]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(env.stats().auth_failures, 10);
    assert_eq!(env.stats().requests, 11);
}

#[tokio::test]
async fn permissive_default_accepts_any_non_empty_values_but_not_missing_ones() {
    let env = start(cfg()).await;
    let (s, _) = call(
        &env,
        &[
            ("Authorization", "Bearer anything"),
            ("x-api-key", "whatever"),
            ("x-gw-ims-org-id", "X@AdobeOrg"),
            ("x-sandbox-name", "dev"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_gateway(&call(&env, &[KEY, ORG, SANDBOX]).await, 403, "403010");
    assert_gateway(
        &call(&env, &[("Authorization", ""), KEY, ORG, SANDBOX]).await,
        403,
        "403010",
    );
    assert_gateway(
        &call(&env, &[TOKEN, ("x-api-key", " "), ORG, SANDBOX]).await,
        403,
        "403000",
    );
}

#[tokio::test]
async fn auth_applies_to_every_platform_path_but_not_to_stats() {
    let env = start(strict()).await;
    for (method, path) in [
        (Method::POST, format!("{IMPORT}/batches")),
        (
            Method::PUT,
            format!("{IMPORT}/batches/X/datasets/Y/files/a.json"),
        ),
        (Method::GET, format!("{CATALOG}/batches/X")),
        (Method::GET, format!("{EXPORT}/files/X")),
        (Method::GET, "/data/foundation/nowhere".to_owned()),
    ] {
        let r = env
            .client
            .request(method.clone(), format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_code"], "403010");
    }
    let r = env
        .client
        .get(format!("{}/emulator/stats", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["auth_failures"], 5);
    assert_eq!(v["requests"], 5);
    assert!(v["faults_injected"]["http_500"].is_number());
    // Authenticated unknown path: a 404 service error.
    let r = env
        .client
        .get(format!("{}/data/foundation/nowhere", env.base))
        .header(TOKEN.0, TOKEN.1)
        .header(KEY.0, KEY.1)
        .header(ORG.0, ORG.1)
        .header(SANDBOX.0, SANDBOX.1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], 404);
    assert_eq!(v["title"], "Not Found");
}

#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_contain_the_token() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    // Global (thread-local defaults miss callsites cached by other tests running in parallel);
    // no other test installs a subscriber.
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets it");
    let env = start(strict()).await;
    let secret = "SECRET-TOKEN-4f2a9";
    for token in [secret, "good-token"] {
        let r = env
            .client
            .get(format!("{}{CATALOG}/dataSets", env.base))
            .header("Authorization", format!("Bearer {token}"))
            .header(KEY.0, KEY.1)
            .header(ORG.0, ORG.1)
            .header(SANDBOX.0, SANDBOX.1)
            .send()
            .await
            .unwrap();
        assert!(r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::OK);
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("platform request"),
        "requests are logged: {logs}"
    );
    assert!(logs.contains("status=401"), "{logs}");
    assert!(!logs.contains(secret), "the token leaked into the logs");
    assert!(
        !logs.contains("good-token"),
        "the token leaked into the logs"
    );
}
