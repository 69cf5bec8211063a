//! What every platform request passes through before its handler: request counting, fault
//! injection, the URL length limit and the gateway's authentication checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rand::Rng;

use super::codes::GatewayCode;
use super::config::{EmulatorConfig, GatewayConfig};
use super::error::ApiError;
use super::ims::{Signer, Verdict};
use super::net::ConnHandle;
use super::state::AppState;
use super::stats::bump;

/// Who called: taken from the gateway headers, stored with what the call creates.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org: String,
    pub sandbox: String,
    pub api_key: String,
}

impl Caller {
    /// The datasets this caller may see: those of its organisation and sandbox.
    pub fn scope(&self) -> crate::store::Scope<'_> {
        crate::store::Scope {
            org: &self.org,
            sandbox: &self.sandbox,
        }
    }
}

/// What fault injection does to one request.
enum Fault {
    None,
    /// Answered with an error, not applied.
    Refuse(Refusal),
    /// The connection is cut while the request body arrives.
    Reset,
    /// Applied, then the connection is cut before the response.
    LostResponse,
}

/// An error answer instead of the request's.
#[derive(Clone, Copy)]
enum Refusal {
    Http500,
    Http503,
    Http429,
}

/// Put in a request's extensions when its response will be lost (the `lost_response` fault):
/// the handler applies the request but must not count it as acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct ResponseWillBeLost;

pub async fn platform_gate(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let conn = req.extensions().get::<ConnectInfo<ConnHandle>>().cloned();
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    bump(&state.counters.requests);
    let (req, key) = request_key(req).await;
    note_early_retry(&state, &key);

    let (fault, latency) = draw_faults(&state);
    if let Some(ms) = latency {
        bump(&state.counters.fault_latency);
        tracing::info!(%method, %path, latency_ms = ms, "fault injected: latency");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let lose_response = match fault {
        Fault::None => false,
        Fault::LostResponse => conn.is_some(),
        Fault::Refuse(refusal) => {
            let resp = refused(&state, refusal, key);
            tracing::info!(%method, %path, status = resp.status().as_u16(), "fault injected");
            return resp;
        }
        Fault::Reset => {
            bump(&state.counters.fault_reset);
            tracing::info!(%method, %path, remote = ?conn.as_ref().map(|c| c.0.remote), "fault injected: connection reset");
            if let Some(ConnectInfo(conn)) = &conn {
                read_part_of_body(req).await;
                conn.reset();
            }
            return ApiError::internal("connection reset by fault injection").into_response();
        }
    };
    let resp = admit(&state, req, next, lose_response).await;
    if lose_response && let Some(ConnectInfo(conn)) = &conn {
        bump(&state.counters.fault_lost_response);
        tracing::info!(%method, %path, status = resp.status().as_u16(), "fault injected: request applied, response lost");
        conn.reset();
        return resp;
    }
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "platform request"
    );
    resp
}

/// The answer of an injected refusal (503 and 429 say when to come back, and remember it).
fn refused(state: &AppState, refusal: Refusal, key: String) -> Response {
    let retry_after = state.config.faults.retry_after_secs;
    let mut resp = match refusal {
        Refusal::Http500 => {
            bump(&state.counters.fault_500);
            return ApiError::internal(
                "injected fault (faults.http_500_probability): the request was not processed; retry it",
            )
            .into_response();
        }
        Refusal::Http503 => {
            bump(&state.counters.fault_503);
            ApiError::Service {
                status: StatusCode::SERVICE_UNAVAILABLE,
                title: "Service Unavailable",
                detail: "injected fault (faults.http_503_probability): the request was not processed; retry it later".into(),
            }
            .into_response()
        }
        Refusal::Http429 => {
            bump(&state.counters.fault_429);
            ApiError::gateway(
                GatewayCode::TooManyRequests,
                "Too many requests (injected fault, faults.http_429_probability); retry after the Retry-After delay",
            )
            .into_response()
        }
    };
    set_retry_after(&mut resp, retry_after);
    hold_off(state, key, retry_after);
    resp
}

/// The URL length limit and the gateway's checks; the handler's answer if they pass.
async fn admit(state: &AppState, mut req: Request, next: Next, lose_response: bool) -> Response {
    let uri_len = req.uri().to_string().len();
    if uri_len > 2000 {
        return ApiError::Service {
            status: StatusCode::URI_TOO_LONG,
            title: "URI Too Long",
            detail: format!("the request URL is {uri_len} characters long; the limit is 2000"),
        }
        .into_response();
    }
    let issued = IssuedTokens::from_config(&state.config);
    match check_auth(&state.config.gateway, issued, &state.signer, req.headers()) {
        Err(e) => {
            bump(&state.counters.auth_failures);
            // What was wrong, never the values themselves.
            let reason = match &e {
                ApiError::Gateway { code, message, .. } => format!("{code}: {message}"),
                ApiError::Service { detail, .. } => detail.clone(),
            };
            tracing::info!(method = %req.method(), path = %req.uri().path(), %reason, "gateway refused the request");
            e.into_response()
        }
        Ok(_) if !content_type_is_valid(&req) => {
            tracing::info!(method = %req.method(), path = %req.uri().path(), "gateway refused the request: a body without a valid Content-Type");
            ApiError::Service {
                status: StatusCode::BAD_REQUEST,
                title: "BadRequestError",
                detail: "A valid content-type must be specified".into(),
            }
            .into_response()
        }
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            if lose_response {
                req.extensions_mut().insert(ResponseWillBeLost);
            }
            next.run(req).await
        }
    }
}

/// The platform's gateway refuses a POST, PUT or PATCH whose body comes without a valid
/// `Content-Type` (`type/subtype`). Requests without a body (the guide's `?action=` POSTs,
/// sent by curl with no `Content-Type`) pass: refusing them would fail the guide's own calls.
fn content_type_is_valid(req: &Request) -> bool {
    use axum::http::Method;
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return true;
    }
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    if !has_body {
        return true;
    }
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    matches!(essence.split_once('/'), Some((kind, sub)) if token(kind) && token(sub))
}

/// What makes a request "the same request" again: method and URI, plus a digest of the body
/// for small POSTs (create-batch has one URL for every batch; its body holds the externalId).
async fn request_key(req: Request) -> (Request, String) {
    let key = format!("{} {}", req.method(), req.uri());
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > 0 && n <= 64 * 1024);
    if req.method() != axum::http::Method::POST || !small {
        return (req, key);
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => {
            use sha2::Digest;
            let digest = super::upload::hex(&sha2::Sha256::digest(&bytes)[..8]);
            (
                Request::from_parts(parts, Body::from(bytes)),
                format!("{key} body:{digest}"),
            )
        }
        // A body that cannot be read: the handler will say so.
        Err(_) => (Request::from_parts(parts, Body::empty()), key),
    }
}

/// Remembers that `key` (method and URI) was told to wait `secs`.
fn hold_off(state: &AppState, key: String, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    state
        .retry_after
        .lock()
        .expect("retry-after map")
        .insert(key, until);
}

/// Counts a request that comes back before the `Retry-After` it was given has passed.
fn note_early_retry(state: &AppState, key: &str) {
    let mut map = state.retry_after.lock().expect("retry-after map");
    let now = Instant::now();
    if let Some(until) = map.get(key).copied() {
        if now < until {
            bump(&state.counters.early_retries);
            tracing::warn!(request = %key, early_ms = (until - now).as_millis() as u64, "request repeated before its Retry-After passed");
        }
        map.remove(key);
    }
    map.retain(|_, until| *until > now);
}

fn set_retry_after(resp: &mut Response, secs: u64) {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
}

fn draw_faults(state: &AppState) -> (Fault, Option<u64>) {
    let f = &state.config.faults;
    let any = f.http_500_probability
        + f.http_503_probability
        + f.http_429_probability
        + f.connection_reset_probability
        + f.lost_response_probability
        + f.latency_probability;
    if any <= 0.0 {
        return (Fault::None, None);
    }
    let mut rng = state.fault_rng.lock().expect("fault rng lock");
    let latency = (f.latency_probability > 0.0 && rng.random_bool(f.latency_probability))
        .then_some(f.latency_ms);
    // One draw picks at most one of the exclusive outcomes.
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let mut fault = Fault::None;
    for (p, kind) in [
        (f.http_500_probability, Fault::Refuse(Refusal::Http500)),
        (f.http_503_probability, Fault::Refuse(Refusal::Http503)),
        (f.http_429_probability, Fault::Refuse(Refusal::Http429)),
        (f.connection_reset_probability, Fault::Reset),
        (f.lost_response_probability, Fault::LostResponse),
    ] {
        acc += p;
        if u < acc {
            fault = kind;
            break;
        }
    }
    (fault, latency)
}

/// Reads about half of the declared body (at least one frame) so the client is cut while it is
/// still sending.
async fn read_part_of_body(req: Request) {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let want = (declared / 2).max(1);
    let mut stream = Body::into_data_stream(req.into_body());
    let mut got = 0u64;
    while got < want {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(frame))) => got += frame.len() as u64,
            _ => break,
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn allowed(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == value)
}

/// Whether a valid token issued by the emulator's `POST /ims/token/v3` passes the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuedTokens {
    /// `[gateway] tokens` is empty (any token passes anyway), `[ims] clients` makes IMS ask
    /// for a secret before it issues one, or `[gateway] accept_issued_tokens` says so.
    Accepted,
    /// `[gateway] tokens` is set and IMS issues tokens to anyone who asks: accepting them
    /// would let anyone past the allowlist.
    Refused,
}

impl IssuedTokens {
    pub fn from_config(config: &EmulatorConfig) -> IssuedTokens {
        let gateway = &config.gateway;
        if gateway.tokens.is_empty()
            || !config.ims.clients.is_empty()
            || gateway.accept_issued_tokens
        {
            IssuedTokens::Accepted
        } else {
            IssuedTokens::Refused
        }
    }
}

/// The gateway's checks, in the platform's order. The token value is never logged. A token
/// issued by the emulator's IMS endpoint is accepted while valid if `issued` says so, and
/// refused once expired.
pub fn check_auth(
    cfg: &GatewayConfig,
    issued: IssuedTokens,
    signer: &Signer,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    check_token(cfg, issued, signer, headers)?;
    let Some(api_key) = header_str(headers, "x-api-key") else {
        return Err(ApiError::gateway(
            GatewayCode::ApiKeyMissing,
            "Api Key is required",
        ));
    };
    if !allowed(&cfg.api_keys, api_key) {
        return Err(ApiError::gateway(
            GatewayCode::ApiKeyInvalid,
            "Api Key is invalid",
        ));
    }
    let Some(org) = header_str(headers, "x-gw-ims-org-id") else {
        return Err(ApiError::gateway(
            GatewayCode::OrgMissing,
            "Missing x-gw-ims-org-id header: the organization id is required",
        ));
    };
    if !allowed(&cfg.orgs, org) {
        return Err(ApiError::gateway(
            GatewayCode::OrgInvalid,
            "Profile is not valid: the x-gw-ims-org-id is not an organization of this credential",
        ));
    }
    let Some(sandbox) = header_str(headers, "x-sandbox-name") else {
        return Err(ApiError::bad_request(
            "the x-sandbox-name header is missing: every call must name its sandbox (e.g. prod)",
        ));
    };
    if !allowed(&cfg.sandboxes, sandbox) {
        return Err(ApiError::forbidden(format!(
            "sandbox {sandbox:?} does not exist or this credential has no access to it"
        )));
    }
    Ok(Caller {
        org: org.to_owned(),
        sandbox: sandbox.to_owned(),
        api_key: api_key.to_owned(),
    })
}

/// The `Authorization` header: a token of `[gateway] tokens` (any, when none is listed), or a
/// valid token of this emulator's IMS when `issued` accepts them.
fn check_token(
    cfg: &GatewayConfig,
    issued: IssuedTokens,
    signer: &Signer,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(auth) = header_str(headers, "authorization") else {
        return Err(ApiError::gateway(
            GatewayCode::TokenMissing,
            "Oauth token is missing.",
        ));
    };
    let token = match auth.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    };
    let invalid = |why: &str| {
        Err(ApiError::gateway(
            GatewayCode::TokenInvalid,
            format!("Oauth token is not valid{why}"),
        ))
    };
    match signer.verify(token, super::store::now_ms()) {
        Verdict::Valid if issued == IssuedTokens::Accepted => {}
        Verdict::Valid => {
            return invalid(
                ": tokens from POST /ims/token/v3 are not accepted here, because [gateway] tokens is set and [ims] clients is empty (anyone could get one); use a token of [gateway] tokens, or list [ims] clients",
            );
        }
        Verdict::Expired(at) => {
            let when = chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| at.to_string());
            return invalid(&format!(
                ": it expired at {when}; request a new access token (POST /ims/token/v3)"
            ));
        }
        Verdict::Forged => {
            return invalid(
                ": it was not issued by this IMS; request a token from POST /ims/token/v3",
            );
        }
        Verdict::NotIssued => {
            if token.is_empty() || !allowed(&cfg.tokens, token) {
                return invalid("");
            }
        }
    }
    Ok(())
}
