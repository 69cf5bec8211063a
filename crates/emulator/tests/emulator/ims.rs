//! The IMS token endpoint (`POST /ims/token/v3`): credentials and lifetime from the config,
//! IMS-style errors, issued tokens valid at the gateway until they expire.

use std::time::Duration;

use batchdrop_emulator::{EmulatorConfig, FaultConfig, GatewayConfig, ImsClient, ImsConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;

const CLIENT: &str = "batchdrop-client";
const SECRET: &str = "p8e-very-secret-value";

fn ims_config(lifetime: u64) -> EmulatorConfig {
    EmulatorConfig {
        gateway: GatewayConfig {
            tokens: vec!["static-token".into()],
            api_keys: vec![CLIENT.into()],
            orgs: vec![],
            sandboxes: vec![],
            accept_issued_tokens: false,
        },
        ims: ImsConfig {
            clients: vec![ImsClient {
                client_id: CLIENT.into(),
                client_secret: SECRET.into(),
                scopes: vec![
                    "openid".into(),
                    "AdobeID".into(),
                    "read_organizations".into(),
                ],
            }],
            token_lifetime_secs: lifetime,
        },
        ..cfg()
    }
}

/// POSTs a form to the token endpoint (no gateway headers) → (status, JSON body, raw body).
async fn token_request(env: &Env, form: &[(&str, &str)]) -> (StatusCode, Value, String) {
    let body: String = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let r = env
        .client
        .post(format!("{}/ims/token/v3", env.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    let text = r.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

async fn issue(env: &Env) -> String {
    let (s, v, _) = token_request(
        env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", "openid,AdobeID"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// A Catalog call with this bearer token → (status, body).
async fn call_with(env: &Env, token: &str) -> (StatusCode, Value) {
    let r = env
        .client
        .get(format!("{}{CATALOG}/dataSets", env.base))
        .header("Authorization", format!("Bearer {token}"))
        .header("x-api-key", CLIENT)
        .header("x-gw-ims-org-id", "ORG@AdobeOrg")
        .header("x-sandbox-name", "prod")
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_issued_token_opens_the_gateway() {
    let env = start(ims_config(86_399)).await;
    let (s, v, _) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", "openid,AdobeID,read_organizations"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 86_399, "seconds, as IMS says");
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "shaped like an IMS JWT");
    assert!(!token.contains(SECRET));
    // Valid at the gateway, though [gateway] tokens lists only the static token.
    assert_eq!(call_with(&env, token).await.0, StatusCode::OK);
    assert_eq!(call_with(&env, "static-token").await.0, StatusCode::OK);
    let (s, e) = call_with(&env, "some-other-token").await;
    assert_eq!(
        (s, &e["error_code"]),
        (StatusCode::UNAUTHORIZED, &"401013".into())
    );
    // A token shaped like an issued one but tampered with is refused.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let (s, e) = call_with(&env, &parts.join(".")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error_code"], "401013");
    // The client id may come in the query string, as IMS allows.
    let r = env
        .client
        .post(format!("{}/ims/token/v3?client_id={CLIENT}", env.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_secret={SECRET}&scope=openid"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let st = env.stats();
    assert_eq!(st.ims_tokens_issued, 2);
    assert_eq!(st.ims_refusals, 0);
}

#[tokio::test]
async fn bad_token_requests_get_ims_errors() {
    let env = start(ims_config(86_399)).await;
    type Form<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Form, &str, &str)> = vec![
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", "wrong-secret"),
                ("scope", "openid"),
            ],
            "invalid_client",
            "client_secret",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "someone-else"),
                ("client_secret", SECRET),
            ],
            "invalid_client",
            "client_id",
        ),
        (
            vec![("client_id", CLIENT), ("client_secret", SECRET)],
            "invalid_request",
            "grant_type",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
            "unsupported_grant_type",
            "client_credentials",
        ),
        (
            vec![("grant_type", "client_credentials"), ("client_id", CLIENT)],
            "invalid_request",
            "client_secret",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
                ("scope", "openid,admin_everything"),
            ],
            "invalid_scope",
            "admin_everything",
        ),
    ];
    let n = cases.len() as u64;
    for (form, error, mention) in cases {
        let (s, v, raw) = token_request(&env, &form).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{form:?}: {raw}");
        assert_eq!(v["error"], error, "{form:?}: {raw}");
        let d = v["error_description"].as_str().unwrap();
        assert!(d.contains(mention), "{form:?}: {d}");
        assert!(!raw.contains(SECRET), "the secret is never echoed: {raw}");
        assert!(v.get("access_token").is_none());
    }
    let st = env.stats();
    assert_eq!(st.ims_refusals, n);
    assert_eq!(st.ims_tokens_issued, 0);
    // The token endpoint is not behind the gateway: no platform request was counted.
    assert_eq!(st.requests, 0);
}

#[tokio::test]
async fn an_expired_token_gets_the_gateways_401() {
    // Permissive gateway (any token), 2 s tokens: expiry is still enforced for issued tokens.
    let mut config = ims_config(2);
    config.gateway = GatewayConfig::default();
    let env = start(config).await;
    let token = issue(&env).await;
    assert_eq!(call_with(&env, &token).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (s, e) = call_with(&env, &token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    assert_eq!(e["error_code"], "401013");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("expired") && m.contains("/ims/token/v3"), "{m}");
    assert!(!m.contains(&token), "the token is never echoed");
    // A new token works again, also after a restart (the signing key lives in the data dir).
    let fresh = issue(&env).await;
    assert_eq!(call_with(&env, &fresh).await.0, StatusCode::OK);
    let mut config = ims_config(2);
    config.gateway = GatewayConfig::default();
    let env = env.restart(config).await;
    assert_eq!(call_with(&env, &fresh).await.0, StatusCode::OK);
    assert_eq!(call_with(&env, &token).await.0, StatusCode::UNAUTHORIZED);
    assert!(env.stats().auth_failures >= 1);
}

#[tokio::test]
async fn the_token_endpoint_is_outside_the_gateway_and_its_faults() {
    // Every platform request fails by fault injection; the token endpoint still answers.
    let mut config = ims_config(60);
    config.faults = FaultConfig {
        http_500_probability: 1.0,
        ..FaultConfig::default()
    };
    // Empty clients: any non-empty client id and secret.
    config.ims.clients.clear();
    let env = start(config).await;
    let (s, v, _) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "anyone"),
            ("client_secret", "anything"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["expires_in"], 60);
    let r = env
        .req(Method::GET, &format!("{CATALOG}/dataSets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // An empty secret is still refused.
    let (s, v, _) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "anyone"),
            ("client_secret", ""),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_request");
}
