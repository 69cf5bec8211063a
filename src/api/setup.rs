//! Setting up the client: its configuration, the checks made before any call (headers,
//! token source, https off loopback, a CA file that holds certificates), and the HTTP clients
//! (loopback reached directly whatever the proxies say; redirects refused), and the same client
//! set up for another sandbox.
//!
//! This module must not send anything.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::auth::TokenSource;
use super::client::ApiClient;
use super::error::ApiError;

/// How to reach and authenticate to the platform.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://platform.adobe.io`, or `http://127.0.0.1:8089` for the
    /// emulator. Plain http is accepted for loopback addresses only, because the token would
    /// otherwise cross the network in clear.
    pub endpoint: String,
    /// `x-gw-ims-org-id`, e.g. `ABC123@AdobeOrg`.
    pub org_id: String,
    /// `x-sandbox-name`, e.g. `prod`.
    pub sandbox: String,
    /// `x-api-key`: the credential's client id.
    pub api_key: String,
    pub token: TokenSource,
    /// Upper bound for a call that moves little data; uploads get more (see `upload_timeout`).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM file with extra trusted roots (e.g. a TLS-intercepting corporate proxy). It adds to
    /// the system roots; certificate verification itself can never be turned off.
    pub extra_ca_file: Option<PathBuf>,
}

/// The headers every platform call carries, checked.
pub(super) fn platform_headers(op: &str, cfg: &ClientConfig) -> Result<HeaderMap, ApiError> {
    let mut headers = HeaderMap::new();
    for (name, field, value) in [
        ("x-api-key", "api_key", &cfg.api_key),
        ("x-gw-ims-org-id", "org_id", &cfg.org_id),
        ("x-sandbox-name", "sandbox", &cfg.sandbox),
    ] {
        let value = value.trim();
        if value.is_empty() {
            return Err(ApiError::config(
                op,
                format!("{field} is empty in [platform] config"),
            ));
        }
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            ApiError::config(
                op,
                format!("{field} contains characters not allowed in a header"),
            )
        })?;
        v.set_sensitive(name == "x-api-key");
        headers.insert(HeaderName::from_static(name), v);
    }
    Ok(headers)
}

/// Refuses a token source that can never work.
pub(super) fn check_token(op: &str, token: &TokenSource) -> Result<(), ApiError> {
    match token {
        TokenSource::Static(t) if t.expose().trim().is_empty() => {
            return Err(ApiError::config(op, "the access token is empty"));
        }
        TokenSource::Static(_) | TokenSource::File(_) => {}
        TokenSource::ClientCredentials(o) => {
            check_url(op, "the IMS token URL", &o.token_url)?;
            if o.client_id.trim().is_empty() {
                return Err(ApiError::config(op, "the OAuth client_id is empty"));
            }
        }
    }
    Ok(())
}

/// The HTTP clients for the platform and for the IMS token URL (the same one unless only one
/// of the two is on loopback).
pub(super) fn http_clients(
    op: &str,
    cfg: &ClientConfig,
    endpoint: &str,
) -> Result<(reqwest::Client, reqwest::Client), ApiError> {
    let extra_roots = match &cfg.extra_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ApiError::config(
                    op,
                    format!("cannot read extra_ca_file {}: {e}", path.display()),
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ApiError::config(op, format!("extra_ca_file {}: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(ApiError::config(
                    op,
                    format!("extra_ca_file {} holds no PEM certificate", path.display()),
                ));
            }
            certs
        }
        None => Vec::new(),
    };
    let build = |route: Route| {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("batchdrop/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout)
            // A redirect would replay neither a streamed body nor, across hosts, the
            // token: treat it as an error the operator sees.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_keepalive(Duration::from_secs(30))
            // Below the emulator's 30 s idle timeout, so a pooled connection is not
            // reused at the moment the server closes it.
            .pool_idle_timeout(Duration::from_secs(20));
        if route == Route::Direct {
            builder = builder.no_proxy();
        }
        if !extra_roots.is_empty() {
            builder = builder.tls_certs_merge(extra_roots.clone());
        }
        builder
            .build()
            .map_err(|e| ApiError::config(op, format!("cannot build the HTTP client: {e}")))
    };
    let platform_route = Route::to(endpoint);
    let http = build(platform_route)?;
    let ims_http = match &cfg.token {
        TokenSource::ClientCredentials(o) if Route::to(&o.token_url) != platform_route => {
            build(Route::to(&o.token_url))?
        }
        _ => http.clone(),
    };
    Ok((http, ims_http))
}

pub(super) fn check_url(op: &str, what: &str, url: &str) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::config(op, format!("{what} {url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(parsed.host_str().unwrap_or("")) => Ok(()),
        "http" => Err(ApiError::config(
            op,
            format!(
                "{what} {url:?} uses plain http, which would send the token in clear: use \
                 https (plain http is accepted for loopback addresses only)"
            ),
        )),
        other => Err(ApiError::config(
            op,
            format!("{what} {url:?}: unsupported scheme {other:?} (use https)"),
        )),
    }
}

/// How a URL is reached. The environment's proxies (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`) would otherwise also take plain-http loopback traffic, bearer token included,
/// to whoever runs the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Loopback: always directly, whatever the environment says.
    Direct,
    /// Elsewhere: through the environment's proxy, if any (`NO_PROXY` honoured).
    EnvironmentProxy,
}

impl Route {
    fn to(url: &str) -> Route {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        if host.is_some_and(|h| is_loopback(&h)) {
            Route::Direct
        } else {
            Route::EnvironmentProxy
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A valid configuration for tests, against `endpoint`.
#[cfg(test)]
pub(super) fn config(endpoint: &str) -> ClientConfig {
    ClientConfig {
        endpoint: endpoint.into(),
        org_id: "ABC123@AdobeOrg".into(),
        sandbox: "prod".into(),
        api_key: "cid".into(),
        token: TokenSource::Static(super::Secret::new("tok-SECRET")),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        extra_ca_file: None,
    }
}

/// Clients for other sandboxes: a per-watch `sandbox` (issue #21).
impl ApiClient {
    /// The same client (connections, token) calling into `sandbox`; itself when `None` or
    /// when it already does. A batch is only known in the sandbox it was created in, so every
    /// call about it goes through the client of its sandbox.
    pub fn in_sandbox(&self, sandbox: Option<&str>) -> Result<ApiClient, ApiError> {
        let Some(sandbox) = sandbox else {
            return Ok(self.clone());
        };
        if self
            .headers
            .get("x-sandbox-name")
            .and_then(|v| v.to_str().ok())
            == Some(sandbox)
        {
            return Ok(self.clone());
        }
        let value = HeaderValue::from_str(sandbox.trim())
            .ok()
            .filter(|_| !sandbox.trim().is_empty())
            .ok_or_else(|| {
                ApiError::config(
                    "set up the platform client",
                    format!("sandbox {sandbox:?} is not a valid sandbox name"),
                )
            })?;
        let mut headers = (*self.headers).clone();
        headers.insert(HeaderName::from_static("x-sandbox-name"), value);
        Ok(ApiClient {
            inner: Arc::clone(&self.inner),
            headers: Arc::new(headers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{ClientSecret, OAuth};
    use crate::api::{ApiClient, Secret};

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]", "LOCALHOST"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["platform.adobe.io", "10.0.0.1", "", "localhost.evil.com"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn new_checks_the_config() {
        assert!(ApiClient::new(config("https://platform.adobe.io/")).is_ok());
        assert!(ApiClient::new(config("http://127.0.0.1:8089")).is_ok());
        assert!(ApiClient::new(config("http://[::1]:8089")).is_ok());

        let e = ApiClient::new(config("http://platform.adobe.io"))
            .err()
            .unwrap();
        assert!(e.is_config());
        assert!(e.to_string().contains("plain http"), "{e}");
        assert!(ApiClient::new(config("ftp://x")).is_err());
        assert!(ApiClient::new(config("not a url")).is_err());

        let mut c = config("https://platform.adobe.io");
        c.sandbox = " ".into();
        let e = ApiClient::new(c).err().unwrap();
        assert!(e.to_string().contains("sandbox is empty"), "{e}");

        let mut c = config("https://platform.adobe.io");
        c.token = TokenSource::Static(Secret::new(""));
        assert!(ApiClient::new(c).is_err());

        let mut c = config("https://platform.adobe.io");
        c.token = TokenSource::ClientCredentials(OAuth {
            token_url: "http://ims.example.com/ims/token/v3".into(),
            client_id: "cid".into(),
            client_secret: ClientSecret::Value(Secret::new("s")),
            scope: "openid".into(),
        });
        assert!(
            ApiClient::new(c)
                .err()
                .unwrap()
                .to_string()
                .contains("IMS token URL")
        );
    }

    #[test]
    fn extra_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("https://platform.adobe.io");
        c.extra_ca_file = Some(dir.path().join("missing.pem"));
        let e = ApiClient::new(c.clone()).err().unwrap();
        assert!(
            e.is_config() && e.to_string().contains("missing.pem"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        c.extra_ca_file = Some(empty);
        let e = ApiClient::new(c).err().unwrap();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn loopback_is_reached_directly_whatever_the_proxies() {
        for url in [
            "http://127.0.0.1:8089",
            "http://127.3.2.1/x",
            "http://localhost:1",
            "http://[::1]:8089/ims/token/v3",
        ] {
            assert_eq!(Route::to(url), Route::Direct, "{url}");
        }
        for url in ["https://platform.adobe.io", "https://127.0.0.1.example.com"] {
            assert_eq!(Route::to(url), Route::EnvironmentProxy, "{url}");
        }
    }
}
