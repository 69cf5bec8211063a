//! Credentials: the `Secret` type that never prints, where the bearer token comes from
//! (`TokenSource`), and for OAuth server-to-server the IMS token request and its in-memory
//! cache (renewed a few minutes before expiry, dropped after a 401, one request in flight).
//! It must never log, format or put into an error a token or a client secret, and must never
//! write them anywhere: tokens live in memory only.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::answer::{Answer, read_error, read_json};
use super::error::{ApiError, ErrorKind};
use super::wire;

/// A string that never prints: `Debug` and `Display` show `[redacted]`. Read it with
/// [`Secret::expose`] only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A token obtained elsewhere (tests, the emulator, short manual runs). It is never renewed.
    Static(Secret),
    /// OAuth server-to-server: the client asks IMS for tokens itself.
    ClientCredentials(OAuth),
    /// A token kept in a file by someone else (a sidecar, a cron job, systemd credentials):
    /// read again within a second of a change and after a 401, so a rotated token is used
    /// without a restart.
    File(PathBuf),
}

/// OAuth server-to-server credential (`grant_type=client_credentials`).
#[derive(Debug, Clone)]
pub struct OAuth {
    /// Usually [`OAuth::IMS_TOKEN_URL`]; the emulator serves its own.
    pub token_url: String,
    /// The credential's client id (the same value as `x-api-key`).
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Comma-separated, e.g. `openid,AdobeID,read_organizations`.
    pub scope: String,
}

impl OAuth {
    pub const IMS_TOKEN_URL: &str = "https://ims-na1.adobelogin.com/ims/token/v3";
}

/// The client secret, preferably in a file so that it stays out of the config and can be
/// rotated: the file is read again for every token request, so a new secret is picked up
/// without a restart.
#[derive(Debug, Clone)]
pub enum ClientSecret {
    File(PathBuf),
    Value(Secret),
}

/// The credential as the client uses it.
pub(crate) enum Auth {
    Static(Secret),
    /// OAuth tokens from IMS.
    Ims {
        cfg: OAuth,
        cache: TokenCache,
    },
    File {
        path: PathBuf,
        cache: tokio::sync::Mutex<Option<FileToken>>,
    },
}

impl Auth {
    pub(crate) fn new(source: TokenSource) -> Auth {
        match source {
            TokenSource::Static(token) => Auth::Static(token),
            TokenSource::ClientCredentials(cfg) => Auth::Ims {
                cfg,
                cache: TokenCache::default(),
            },
            TokenSource::File(path) => Auth::File {
                path,
                cache: tokio::sync::Mutex::new(None),
            },
        }
    }

    /// Whether a 401 can be cured by asking for a new token.
    pub(crate) fn renewable(&self) -> bool {
        matches!(self, Auth::Ims { .. } | Auth::File { .. })
    }

    /// A token to send now, from the cache or from IMS. `operation` names the call it is for,
    /// so that an IMS failure reads "PUT file x into batch y: get an access token … failed".
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        operation: &str,
    ) -> Result<Secret, ApiError> {
        match self {
            Auth::Static(token) => Ok(token.clone()),
            Auth::Ims { cfg, cache } => cache
                .get_or_fetch(|| fetch_token(http, cfg))
                .await
                .map_err(|e| e.during_token_for(operation)),
            Auth::File { path, cache } => {
                let mut slot = cache.lock().await;
                // The file is looked at again at most every `TOKEN_FILE_RECHECK`: a stat per
                // request was a trip to the blocking pool for every small file uploaded.
                if let Some(held) = slot.as_ref()
                    && held.checked_at.elapsed() < TOKEN_FILE_RECHECK
                {
                    return Ok(held.token.clone());
                }
                let mtime = tokio::fs::metadata(path)
                    .await
                    .and_then(|m| m.modified())
                    .ok();
                if let (Some(held), Some(now)) = (slot.as_mut(), mtime)
                    && held.mtime == now
                {
                    held.checked_at = Instant::now();
                    return Ok(held.token.clone());
                }
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    ApiError::config(
                        operation,
                        format!("cannot read the access token file {}: {e}", path.display()),
                    )
                })?;
                let token = Secret::new(text.trim());
                if token.expose().is_empty() {
                    return Err(ApiError::config(
                        operation,
                        format!("the access token file {} is empty", path.display()),
                    ));
                }
                *slot = mtime.map(|mtime| FileToken {
                    mtime,
                    token: token.clone(),
                    checked_at: Instant::now(),
                });
                Ok(token)
            }
        }
    }

    /// Forgets `rejected` after the platform answered 401 to it.
    pub(crate) async fn invalidate(&self, rejected: &Secret) {
        match self {
            Auth::Ims { cache, .. } => cache.invalidate(rejected).await,
            Auth::File { cache, .. } => {
                let mut slot = cache.lock().await;
                if slot.as_ref().is_some_and(|held| held.token == *rejected) {
                    *slot = None;
                }
            }
            Auth::Static(_) => {}
        }
    }
}

/// A token read from a token file, with the file's modification time when it was read and
/// when that time was last compared with the file's.
pub(crate) struct FileToken {
    mtime: std::time::SystemTime,
    token: Secret,
    checked_at: Instant,
}

/// How long a token read from a file is used before the file's modification time is looked
/// at again. A rotated file is picked up at most this much later, and at once after a 401
/// (which forgets the token).
const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(1);

/// The cached token. The lock is held while a new token is fetched: concurrent callers wait
/// for that one request and share its answer instead of each asking IMS, which throttles
/// clients that ask too often.
///
/// A refusal (wrong client secret, unknown client, unreadable secret file) is remembered too,
/// for a wait that doubles from one second up to `MAX_REFUSAL_WAIT`: every batch retries on
/// its own schedule, and without this each of them would ask IMS again with the same bad
/// secret. Network trouble and IMS's own 5xx are not remembered (the next caller asks again).
#[derive(Default)]
pub(crate) struct TokenCache {
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    token: Option<Cached>,
    refused: Option<Refused>,
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

struct Refused {
    error: ApiError,
    until: Instant,
    in_a_row: u32,
}

/// The longest a refused credential is trusted to stay refused: a rotated secret is picked up
/// within this time.
const MAX_REFUSAL_WAIT: Duration = Duration::from_secs(30);

impl TokenCache {
    pub(crate) async fn get_or_fetch<F, Fut>(&self, fetch: F) -> Result<Secret, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<wire::TokenAnswer, ApiError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(cached) = slot.token.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        if let Some(refused) = slot.refused.as_ref()
            && Instant::now() < refused.until
        {
            return Err(refused.error.clone());
        }
        match fetch().await {
            Ok(answer) => {
                let token = Secret::new(answer.access_token);
                slot.refused = None;
                slot.token = Some(Cached {
                    token: token.clone(),
                    renew_at: Instant::now() + renew_after(answer.expires_in),
                });
                Ok(token)
            }
            Err(e) => {
                let refusal = !matches!(e.kind(), ErrorKind::Transient { .. })
                    || e.http_status() == Some(401);
                if refusal {
                    let in_a_row = slot.refused.as_ref().map_or(0, |r| r.in_a_row) + 1;
                    let wait =
                        Duration::from_secs(1u64 << (in_a_row - 1).min(10)).min(MAX_REFUSAL_WAIT);
                    tracing::error!(
                        "the access token request was refused; asking again in {wait:?} (fix the credentials meanwhile): {e}"
                    );
                    slot.refused = Some(Refused {
                        error: e.clone(),
                        until: Instant::now() + wait,
                        in_a_row,
                    });
                }
                Err(e)
            }
        }
    }

    /// Drops the cached token if it is the one that was rejected. When many requests fail with
    /// the same expired token, only the first invalidation counts: the others find a newer
    /// token in the cache and keep it.
    pub(crate) async fn invalidate(&self, rejected: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot.token.as_ref().is_some_and(|c| c.token == *rejected) {
            slot.token = None;
        }
    }
}

/// When to renew a token that lives `lifetime`: five minutes early, or a quarter of its life
/// early for short-lived tokens, so that a request started just before expiry still carries a
/// valid token.
fn renew_after(lifetime: Duration) -> Duration {
    lifetime - (lifetime / 4).min(Duration::from_secs(300))
}

async fn fetch_token(http: &reqwest::Client, cfg: &OAuth) -> Result<wire::TokenAnswer, ApiError> {
    const OP: &str = "get an access token from IMS";
    let secret = match &cfg.client_secret {
        ClientSecret::Value(s) => s.clone(),
        ClientSecret::File(path) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                ApiError::config(
                    OP,
                    format!("cannot read the client secret file {}: {e}", path.display()),
                )
            })?;
            Secret::new(text.trim())
        }
    };
    if secret.expose().is_empty() {
        return Err(ApiError::config(OP, "the client secret is empty"));
    }
    let started = Instant::now();
    let resp = http
        .post(&cfg.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", secret.expose()),
            ("scope", cfg.scope.as_str()),
        ])
        .send()
        .await
        .map_err(|e| ApiError::transport(OP, &e))?;
    tracing::debug!(
        method = "POST",
        path = resp.url().path(),
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "IMS token request"
    );
    if !resp.status().is_success() {
        return Err(read_error(OP, resp, &[secret.expose()]).await);
    }
    let answer = read_json(OP, resp, Answer::Ims).await?;
    wire::token_answer(&answer).map_err(|msg| ApiError::invalid_response(OP, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("eyJhbGciOi-very-secret");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let src = TokenSource::ClientCredentials(OAuth {
            token_url: OAuth::IMS_TOKEN_URL.into(),
            client_id: "cid".into(),
            client_secret: ClientSecret::Value(Secret::new("p8e-SECRET")),
            scope: "openid".into(),
        });
        assert!(!format!("{src:?}").contains("SECRET"));
        assert!(!format!("{:?}", TokenSource::Static(s)).contains("secret"));
    }

    #[tokio::test]
    async fn a_token_file_is_read_again_after_a_401() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "token-one\n").unwrap();
        let auth = Auth::new(TokenSource::File(path.clone()));
        let http = reqwest::Client::new();
        let first = auth.token(&http, "test").await.unwrap();
        assert_eq!(first.expose(), "token-one");
        assert_eq!(auth.token(&http, "test").await.unwrap(), first);
        // Rotated: the token held may still be used for up to `TOKEN_FILE_RECHECK`, but not
        // once the platform refused it.
        std::fs::write(&path, "token-two\n").unwrap();
        auth.invalidate(&first).await;
        let second = auth.token(&http, "test").await.unwrap();
        assert_eq!(second.expose(), "token-two");
        // A refusal of a token no longer held forgets nothing.
        auth.invalidate(&first).await;
        std::fs::remove_file(&path).unwrap();
        let kept = auth.token(&http, "test").await;
        assert!(
            kept.is_err() || kept.unwrap() == second,
            "a token is never one that was refused"
        );
    }

    #[test]
    fn renewal_is_a_few_minutes_early() {
        assert_eq!(
            renew_after(Duration::from_secs(86399)),
            Duration::from_secs(86099)
        );
        assert_eq!(
            renew_after(Duration::from_secs(60)),
            Duration::from_secs(45)
        );
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }

    fn answer(token: &str, secs: u64) -> wire::TokenAnswer {
        wire::TokenAnswer {
            access_token: token.into(),
            expires_in: Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_the_cache() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(|| async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(answer("t1", 3600))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_or_rejected_tokens_are_renewed_once() {
        let cache = TokenCache::default();
        // A zero lifetime is due for renewal at once.
        let t = cache
            .get_or_fetch(|| async { Ok(answer("short", 0)) })
            .await;
        assert_eq!(t.unwrap().expose(), "short");
        let t = cache
            .get_or_fetch(|| async { Ok(answer("t1", 3600)) })
            .await;
        assert_eq!(t.unwrap().expose(), "t1");

        // A 401 to an older token must not throw away the newer one.
        cache.invalidate(&Secret::new("short")).await;
        let t = cache
            .get_or_fetch(|| async { Ok(answer("unused", 3600)) })
            .await;
        assert_eq!(t.unwrap().expose(), "t1");

        cache.invalidate(&Secret::new("t1")).await;
        let t = cache
            .get_or_fetch(|| async { Ok(answer("t2", 3600)) })
            .await;
        assert_eq!(t.unwrap().expose(), "t2");

        // A fetch that failed in the network leaves nothing cached: the next caller asks again.
        cache.invalidate(&Secret::new("t2")).await;
        let e = cache
            .get_or_fetch(|| async { Err(ApiError::status("t", 503, Default::default(), None)) })
            .await;
        assert!(e.is_err());
        let t = cache
            .get_or_fetch(|| async { Ok(answer("t3", 3600)) })
            .await;
        assert_eq!(t.unwrap().expose(), "t3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_credential_is_not_asked_again_until_its_wait_is_over() {
        let cache = TokenCache::default();
        let fetches = AtomicUsize::new(0);
        let refuse = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Err(ApiError::status("t", 400, Default::default(), None))
        };
        // 1 s, then 2 s, 4 s, … up to 30 s between requests, whatever the number of callers.
        for _ in 0..100 {
            assert!(cache.get_or_fetch(refuse).await.is_err());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(cache.get_or_fetch(refuse).await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(cache.get_or_fetch(refuse).await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "the second wait is 2 s");
        for _ in 0..10 {
            tokio::time::advance(MAX_REFUSAL_WAIT).await;
            let _ = cache.get_or_fetch(refuse).await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 12, "capped at one per 30 s");
        // Once the secret is fixed, the next request after the wait succeeds and is cached.
        tokio::time::advance(MAX_REFUSAL_WAIT).await;
        let t = cache
            .get_or_fetch(|| async { Ok(answer("ok", 3600)) })
            .await;
        assert_eq!(t.unwrap().expose(), "ok");
        assert!(cache.get_or_fetch(refuse).await.is_ok());
    }

    #[tokio::test]
    async fn secret_file_is_read_at_each_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let cfg = OAuth {
            // Nothing listens on port 9 of loopback: the request fails after the file is read.
            token_url: "http://127.0.0.1:9/ims/token/v3".into(),
            client_id: "cid".into(),
            client_secret: ClientSecret::File(path.clone()),
            scope: "openid".into(),
        };
        let http = reqwest::Client::new();
        let missing = fetch_token(&http, &cfg).await.unwrap_err();
        assert!(missing.is_config(), "{missing}");
        assert!(
            missing.to_string().contains("client secret file"),
            "{missing}"
        );

        std::fs::write(&path, "p8e-ROTATED\n").unwrap();
        let e = fetch_token(&http, &cfg).await.unwrap_err();
        assert!(!e.is_config(), "the file was read; the network failed: {e}");
        assert!(!e.to_string().contains("p8e-ROTATED"));
    }
}
