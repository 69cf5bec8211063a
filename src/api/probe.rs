//! One GET of batchdrop's own admin listener (`/healthz`, `/readyz`) for `batchdrop
//! healthcheck`: here because this module is the process's only HTTP client. It is not the
//! platform: no credentials, no proxy, no retries; the answer's body is read up to 4 KiB.

use std::time::Duration;

/// What the listener answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    pub status: u16,
    /// The body's first 4 KiB, as text.
    pub body: String,
}

const MAX_BODY: usize = 4096;

/// GET `url` within `timeout`; the error says why nothing answered.
pub async fn probe(url: &str, timeout: Duration) -> Result<ProbeAnswer, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {e}"))?;
    let mut response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_BODY);
    Ok(ProbeAnswer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Whether `url` is an http(s) URL, with its path ("/" when it has none).
pub fn url_path(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("not an http(s) URL".into());
    }
    Ok(parsed.path().to_owned())
}
