//! The IMS token endpoint (`POST /ims/token/v3`, OAuth server-to-server `client_credentials`),
//! outside the platform's gateway, and the check of the tokens it issues.
//!
//! Tokens are shaped like IMS's (three base64url parts, a JSON payload with `client_id`,
//! `created_at` and `expires_in` in milliseconds) and signed with HMAC-SHA256 by a key kept in
//! the data dir, so they stay valid across restarts and need no table. The gateway accepts a
//! valid issued token when `[gateway] tokens` is empty, when `[ims] clients` lists credentials
//! (issuing then takes a secret), or when `[gateway] accept_issued_tokens` is set (see
//! `gateway::IssuedTokens`), and refuses an expired one with its 401 `401013`.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::codes::ImsCode;
use super::config::ImsClient;
use super::error::EmulatorError;
use super::state::AppState;
use super::stats::bump;
use super::store::now_ms;

const ISSUER: &str = "batchdrop-emulator";
pub const KEY_FILE: &str = "emulator.ims-key";

/// The signing key.
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// What the gateway learns from a bearer token.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a token of this emulator's IMS: the `[gateway] tokens` rule applies.
    NotIssued,
    /// Issued here and still valid.
    Valid,
    /// Issued here, expired at this epoch-ms instant.
    Expired(i64),
    /// Shaped like an issued token but not signed by this emulator.
    Forged,
}

impl Signer {
    /// Reads the key from the data dir, or creates it (mode 0600).
    pub fn open(data_dir: &Path) -> Result<Signer, EmulatorError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join(KEY_FILE);
        let err = |source| EmulatorError::DataDir {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                return Ok(Signer { key });
            }
            Ok(_) => {
                // Unusable (cut short by a crash): tokens signed with it die with it.
                let _ = std::fs::remove_file(&path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let key: [u8; 32] = rand::random();
        let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&key).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(Signer { key })
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in self.key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// A token for this client, valid `lifetime_ms` from `now`.
    pub fn issue(&self, client_id: &str, scope: &str, now: i64, lifetime_ms: i64) -> String {
        let header = b64(br#"{"alg":"HS256","typ":"JWT","x5u":"batchdrop-emulator"}"#);
        let nonce: [u8; 12] = rand::random();
        let payload = json!({
            "iss": ISSUER,
            "type": "access_token",
            "client_id": client_id,
            "scope": scope,
            "id": hex(&nonce),
            "created_at": now.to_string(),
            "expires_in": lifetime_ms.to_string(),
        });
        let body = format!("{header}.{}", b64(payload.to_string().as_bytes()));
        let sig = b64(&self.mac(body.as_bytes()));
        format!("{body}.{sig}")
    }

    /// What this token is, at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Verdict {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Verdict::NotIssued;
        };
        let Some(payload) = unb64(p).and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
            return Verdict::NotIssued;
        };
        if payload.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Verdict::NotIssued;
        }
        let expected = self.mac(format!("{h}.{p}").as_bytes());
        let given = unb64(s).unwrap_or_default();
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Verdict::Forged;
        }
        let ms = |k: &str| {
            payload.get(k).and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .or(v.as_i64())
            })
        };
        let (Some(created), Some(lifetime)) = (ms("created_at"), ms("expires_in")) else {
            return Verdict::Forged;
        };
        let expires = created.saturating_add(lifetime);
        if now >= expires {
            Verdict::Expired(expires)
        } else {
            Verdict::Valid
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` pairs.
fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn ims_error(status: StatusCode, error: ImsCode, description: String) -> Response {
    let mut r = (
        status,
        json!({"error": error.as_str(), "error_description": description}).to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

/// Why IMS refuses a token request (always a 400): its OAuth `error`, and what to do.
struct Refusal {
    error: ImsCode,
    description: String,
}

impl Refusal {
    fn new(error: ImsCode, description: impl Into<String>) -> Refusal {
        Refusal {
            error,
            description: description.into(),
        }
    }
}

/// What a token request asks for.
struct TokenRequest<'f> {
    client_id: &'f str,
    secret: &'f str,
    scope: &'f str,
}

/// `POST /ims/token/v3`: form fields `grant_type=client_credentials`, `client_id`,
/// `client_secret`, `scope` (the client id may also come in the query string, as IMS allows).
pub async fn token(State(state): State<Arc<AppState>>, uri: Uri, body: Bytes) -> Response {
    let mut fields = form_pairs(&String::from_utf8_lossy(&body));
    if let Some(q) = uri.query() {
        fields.extend(form_pairs(q));
    }
    let checked = token_request(&fields).and_then(|request| {
        check_client(&state.config.ims.clients, &request)?;
        Ok(request)
    });
    let request = match checked {
        Ok(request) => request,
        Err(Refusal { error, description }) => {
            bump(&state.counters.ims_refusals);
            tracing::info!(error = error.as_str(), %description, "IMS token request refused");
            return ims_error(StatusCode::BAD_REQUEST, error, description);
        }
    };
    let lifetime_secs = state.config.ims.token_lifetime_secs;
    let token = state.signer.issue(
        request.client_id,
        request.scope,
        now_ms(),
        (lifetime_secs as i64).saturating_mul(1000),
    );
    bump(&state.counters.ims_tokens_issued);
    tracing::info!(
        client_id = request.client_id,
        lifetime_secs,
        "IMS token issued"
    );
    let mut r = (
        StatusCode::OK,
        json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime_secs})
            .to_string(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The request's fields: a client-credentials grant, with a client id and a secret.
fn token_request(fields: &[(String, String)]) -> Result<TokenRequest<'_>, Refusal> {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(fk, _)| fk == k)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    match get("grant_type") {
        None => {
            return Err(Refusal::new(
                ImsCode::InvalidRequest,
                "grant_type is missing: send the form field grant_type=client_credentials (Content-Type: application/x-www-form-urlencoded)",
            ));
        }
        Some("client_credentials") => {}
        Some(other) => {
            return Err(Refusal::new(
                ImsCode::UnsupportedGrantType,
                format!(
                    "grant_type {other:?} is not supported: OAuth server-to-server credentials use grant_type=client_credentials (the JWT exchange is end-of-life)"
                ),
            ));
        }
    }
    let client_id = get("client_id").ok_or_else(|| {
        Refusal::new(
            ImsCode::InvalidRequest,
            "client_id is missing: send the credential's client id (form field client_id)",
        )
    })?;
    let secret = get("client_secret").ok_or_else(|| {
        Refusal::new(
            ImsCode::InvalidRequest,
            "client_secret is missing: send the credential's client secret (form field client_secret)",
        )
    })?;
    Ok(TokenRequest {
        client_id,
        secret,
        scope: get("scope").unwrap_or(""),
    })
}

/// With `[ims] clients` listed, only their credentials get tokens, for their scopes.
fn check_client(clients: &[ImsClient], request: &TokenRequest<'_>) -> Result<(), Refusal> {
    if clients.is_empty() {
        return Ok(());
    }
    let client_id = request.client_id;
    let Some(client) = clients.iter().find(|c| c.client_id == client_id) else {
        return Err(Refusal::new(
            ImsCode::InvalidClient,
            "invalid client_id parameter: no credential has this client id; check the client id of your OAuth server-to-server credential",
        ));
    };
    let secret = request.secret;
    let same = client.client_secret.len() == secret.len()
        && client
            .client_secret
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(Refusal::new(
            ImsCode::InvalidClient,
            format!(
                "invalid client_secret parameter for client {client_id}: the secret does not match; use the credential's current secret (it may have been rotated)"
            ),
        ));
    }
    if !client.scopes.is_empty()
        && let Some(bad) = request
            .scope
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .find(|s| !client.scopes.iter().any(|a| a == s))
    {
        return Err(Refusal::new(
            ImsCode::InvalidScope,
            format!(
                "scope {bad:?} is not granted to client {client_id}: ask only for {}",
                client.scopes.join(",")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_expire_and_resist_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::open(dir.path()).unwrap();
        let t = s.issue("cid", "openid", 1_000, 2_000);
        assert_eq!(s.verify(&t, 1_500), Verdict::Valid);
        assert_eq!(s.verify(&t, 3_000), Verdict::Expired(3_000));
        // The same key after a restart.
        let again = Signer::open(dir.path()).unwrap();
        assert_eq!(again.verify(&t, 1_500), Verdict::Valid);
        // Another key, or a changed payload: forged.
        let other = Signer::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.verify(&t, 1_500), Verdict::Forged);
        let parts: Vec<&str> = t.split('.').collect();
        let payload = String::from_utf8(unb64(parts[1]).unwrap())
            .unwrap()
            .replace("\"2000\"", "\"9999999\"");
        let tampered = format!("{}.{}.{}", parts[0], b64(payload.as_bytes()), parts[2]);
        assert_eq!(s.verify(&tampered, 5_000), Verdict::Forged);
        assert_eq!(s.verify("plain-token", 0), Verdict::NotIssued);
        assert_eq!(s.verify("a.b.c", 0), Verdict::NotIssued);
        for n in 0..10 {
            let data: Vec<u8> = (0..n).map(|i: u8| i.wrapping_mul(37)).collect();
            assert_eq!(unb64(&b64(&data)).unwrap(), data);
        }
        assert_eq!(
            form_pairs("a=1&b=x+y%2Fz&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y/z".into()),
                ("c".into(), "".into())
            ]
        );
    }
}
