//! Errors of the API client: which operation failed, how the platform answered, whether a retry
//! can help ([`ApiError::kind`]) and what an operator should do (the `Display` text).
//! An `ApiError` must never hold a secret: response bodies are scrubbed of the credentials
//! that were sent before they are kept, and no header is ever copied into one.

use std::fmt;
use std::time::{Duration, SystemTime};

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Try again later (after `retry_after` when the platform said so): network trouble,
    /// timeouts, 5xx, 408, 429, and 401 (the token is renewed before the next attempt).
    Transient { retry_after: Option<Duration> },
    /// The same request will fail again: other 4xx, invalid data, bad configuration.
    Permanent,
    /// 404: the batch, dataset or file does not exist (in this org and sandbox).
    NotFound,
}

/// The platform's own description of an error, from whichever body shape it used:
/// gateway `{"error_code", "message"}`, service `{"type", "status", "title", "detail"}`,
/// IMS `{"error", "error_description"}`, or plain text (kept as `detail`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformError {
    pub code: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
}

/// The longest piece of a response body kept in an error: enough for any platform message,
/// short enough that an HTML error page does not flood the log.
const MAX_BODY_TEXT: usize = 500;

/// Retry-After values beyond this are clamped: a misconfigured proxy must not park the daemon
/// for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl PlatformError {
    /// Parses an error body. `secrets` (the token and client secret that were sent) are
    /// replaced by `[redacted]` wherever the body echoes them.
    pub(crate) fn from_body(body: &[u8], secrets: &[&str]) -> PlatformError {
        let text = scrub(&String::from_utf8_lossy(body), secrets);
        let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&text)
        else {
            let text = one_line(&text);
            return PlatformError {
                detail: (!text.is_empty()).then_some(text),
                ..PlatformError::default()
            };
        };
        let field = |names: &[&str]| {
            names.iter().find_map(|n| match o.get(*n)? {
                serde_json::Value::String(s) if !s.trim().is_empty() => Some(one_line(s)),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let code = field(&["error_code", "code", "error", "type"]);
        let (title, detail) = if o.contains_key("title") || o.contains_key("detail") {
            (field(&["title"]), field(&["detail", "message"]))
        } else if o.contains_key("error_description") {
            (None, field(&["error_description"]))
        } else {
            (field(&["message"]), None)
        };
        if code.is_none() && title.is_none() && detail.is_none() {
            // JSON, but none of the known shapes: keep it whole, it is still the best clue.
            return PlatformError {
                detail: Some(one_line(&text)),
                ..PlatformError::default()
            };
        }
        PlatformError {
            code,
            title,
            detail,
        }
    }
}

/// Why the operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The platform answered with a status that is not a success.
    Status {
        status: u16,
        platform: PlatformError,
    },
    /// No complete answer: could not connect, TLS failed, timed out, the body broke.
    Transport { what: Transport, detail: String },
    /// A success status with an answer we cannot use.
    InvalidResponse(String),
    /// Refused before sending: these arguments cannot make a valid request.
    InvalidRequest(String),
    /// Client set-up or credentials (endpoint, CA file, secret file, header values).
    Config(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Connect,
    Timeout,
    /// Sending or receiving a body failed (including the caller's body stream).
    Body,
    Other,
}

/// An error from one call to the platform. `Display` is written for operators: what was being
/// done, what the platform said, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
// Boxed: errors are rare, and a small `Result` keeps every happy path cheap.
pub struct ApiError(Box<Repr>);

#[derive(Debug, Clone)]
struct Repr {
    operation: String,
    failure: Failure,
    retry_after: Option<Duration>,
    /// Set when the failure happened while getting an access token from IMS.
    during_token: bool,
    /// Set on a 401 answered to a static token, which no renewal can fix.
    static_token: bool,
}

impl ApiError {
    pub(crate) fn new(operation: impl Into<String>, failure: Failure) -> ApiError {
        ApiError(Box::new(Repr {
            operation: operation.into(),
            failure,
            retry_after: None,
            during_token: false,
            static_token: false,
        }))
    }

    pub(crate) fn status(
        operation: impl Into<String>,
        status: u16,
        platform: PlatformError,
        retry_after: Option<Duration>,
    ) -> ApiError {
        let mut e = ApiError::new(operation, Failure::Status { status, platform });
        e.0.retry_after = retry_after;
        e
    }

    pub(crate) fn config(operation: impl Into<String>, msg: impl Into<String>) -> ApiError {
        ApiError::new(operation, Failure::Config(msg.into()))
    }

    pub(crate) fn invalid_request(
        operation: impl Into<String>,
        msg: impl Into<String>,
    ) -> ApiError {
        ApiError::new(operation, Failure::InvalidRequest(msg.into()))
    }

    pub(crate) fn invalid_response(
        operation: impl Into<String>,
        msg: impl Into<String>,
    ) -> ApiError {
        ApiError::new(operation, Failure::InvalidResponse(msg.into()))
    }

    /// From a reqwest error (no HTTP answer, or a broken body). reqwest errors carry the URL,
    /// which never holds a secret here (tokens only travel in headers, secrets in form bodies).
    pub(crate) fn transport(operation: impl Into<String>, e: &reqwest::Error) -> ApiError {
        if e.is_builder() {
            return ApiError::invalid_request(operation, error_chain(e));
        }
        let what = if e.is_timeout() {
            Transport::Timeout
        } else if e.is_connect() {
            Transport::Connect
        } else if e.is_body() || e.is_decode() || e.is_request() {
            Transport::Body
        } else {
            Transport::Other
        };
        ApiError::new(
            operation,
            Failure::Transport {
                what,
                detail: error_chain(e),
            },
        )
    }

    /// Marks an error answered to a static (non-renewable) token.
    pub(crate) fn with_static_token(mut self) -> ApiError {
        self.0.static_token = true;
        self
    }

    /// Marks an IMS failure as having happened on behalf of `operation`.
    pub(crate) fn during_token_for(mut self, operation: &str) -> ApiError {
        self.0.operation = format!("{operation}: {}", self.0.operation);
        self.0.during_token = true;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        let transient = ErrorKind::Transient {
            retry_after: self.0.retry_after,
        };
        match &self.0.failure {
            Failure::Transport { .. } => transient,
            Failure::Status { status, .. } => match status {
                408 | 429 | 500..=599 => transient,
                // Any other refusal from IMS is about the credential or the token URL: asking
                // again cannot help (and a 404 there says nothing about the batch).
                _ if self.0.during_token => ErrorKind::Permanent,
                401 => transient,
                404 => ErrorKind::NotFound,
                _ => ErrorKind::Permanent,
            },
            Failure::InvalidResponse(_) | Failure::InvalidRequest(_) | Failure::Config(_) => {
                ErrorKind::Permanent
            }
        }
    }

    /// True when the platform could not be reached at all (connection refused, no route,
    /// DNS): nothing about the request itself is in question.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            &self.0.failure,
            Failure::Transport {
                what: Transport::Connect,
                ..
            }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind() {
            ErrorKind::Transient { retry_after } => retry_after,
            _ => None,
        }
    }

    /// True when the fault is in batchdrop's credentials or set-up (403, IMS refusals, a 401
    /// to a static token, missing org header, unreadable CA or secret file) rather than in the
    /// data: the daemon should pause and alert instead of failing files. A 401 to an OAuth
    /// token is not included: tokens expire routinely and are renewed.
    pub fn is_config(&self) -> bool {
        match &self.0.failure {
            Failure::Config(_) => true,
            Failure::Status { status, platform } => {
                *status == 403
                    || (*status == 401 && self.0.static_token)
                    || (self.0.during_token && self.kind() == ErrorKind::Permanent)
                    || platform.code.as_deref() == Some("400003")
            }
            _ => false,
        }
    }

    /// The HTTP status, when the platform answered.
    pub fn http_status(&self) -> Option<u16> {
        match &self.0.failure {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The platform's error code/title/detail, when it answered with an error body.
    pub fn platform_error(&self) -> Option<&PlatformError> {
        match &self.0.failure {
            Failure::Status { platform, .. } => Some(platform),
            _ => None,
        }
    }

    /// What was being done, e.g. "PUT file orders.json into batch 01H…".
    pub fn operation(&self) -> &str {
        &self.0.operation
    }

    fn render(&self) -> String {
        let mut s = format!("{} failed: ", self.0.operation);
        match &self.0.failure {
            Failure::Status { status, platform } => {
                s.push_str(&format!("HTTP {status}"));
                if let Some(reason) = reqwest::StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                {
                    s.push_str(&format!(" {reason}"));
                }
                if let Some(code) = &platform.code {
                    s.push_str(&format!(" [{code}]"));
                }
                if let Some(title) = &platform.title {
                    s.push_str(&format!(": {title}"));
                }
                if let Some(detail) = &platform.detail {
                    s.push_str(&format!(" — {detail}"));
                }
            }
            Failure::Transport { what, detail } => {
                s.push_str(match what {
                    Transport::Connect => "could not connect to the platform",
                    Transport::Timeout => "timed out",
                    Transport::Body => "the connection broke while sending or receiving data",
                    Transport::Other => "network error",
                });
                s.push_str(&format!(" ({detail})"));
            }
            Failure::InvalidResponse(msg) => {
                s.push_str(&format!("unexpected answer from the platform: {msg}"))
            }
            Failure::InvalidRequest(msg) => s.push_str(msg),
            Failure::Config(msg) => s.push_str(msg),
        }
        if let Some(hint) = self.hint() {
            s.push_str(". ");
            s.push_str(&hint);
        }
        s
    }

    fn hint(&self) -> Option<String> {
        let retry = match self.0.retry_after {
            Some(d) => format!("temporary: batchdrop retries after {} s", d.as_secs()),
            None => "temporary: batchdrop retries with backoff".to_string(),
        };
        let hint = match &self.0.failure {
            Failure::Status { status, platform } => match status {
                _ if self.0.during_token && self.kind() == ErrorKind::Permanent => {
                    "IMS refused the credentials: check client_id, the client secret file and \
                     scopes in [platform] config"
                        .to_string()
                }
                400 if platform.code.as_deref() == Some("400003") => {
                    "check org_id in [platform] config".to_string()
                }
                300..=399 => "the endpoint answered with a redirect, which batchdrop does not \
                              follow: set endpoint in [platform] config to the final https URL"
                    .to_string(),
                400 | 409 | 422 => return None, // the platform's detail names the rule broken
                401 if self.0.static_token => "the static access token was rejected or has \
                    expired: replace it in [platform] config"
                    .to_string(),
                401 => "the access token was rejected or has expired: it is renewed before the \
                        next attempt"
                    .to_string(),
                403 => "check x-api-key / org id / sandbox in [platform] config, and that the \
                        credential's product profile grants this sandbox"
                    .to_string(),
                404 => "it does not exist in this org and sandbox (check sandbox in [platform] \
                        config)"
                    .to_string(),
                413 => "too large for one request: use the chunked large-file upload (lower the \
                        large-file threshold)"
                    .to_string(),
                414 => "the URL is too long (2000 characters at most): shorten the file path"
                    .to_string(),
                408 | 429 | 500..=599 => retry,
                _ => return None,
            },
            Failure::Transport { what, .. } => match what {
                Transport::Connect => format!(
                    "{retry}; if it persists check endpoint in [platform] config, the network and \
                     proxy; behind a TLS-intercepting proxy set extra_ca_file"
                ),
                Transport::Timeout => {
                    format!("{retry}; raise request_timeout if it keeps happening")
                }
                Transport::Body | Transport::Other => retry,
            },
            Failure::InvalidResponse(_) => {
                "check that endpoint in [platform] config points at the platform".to_string()
            }
            Failure::InvalidRequest(_) | Failure::Config(_) => return None,
        };
        Some(hint)
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime), relative
/// to `now`. A date in the past means "now" (zero); anything unparsable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = parse_http_date(value)?;
        let now = chrono::DateTime::<chrono::Utc>::from(now);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

fn parse_http_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDateTime, TimeZone, Utc};
    if let Ok(d) = chrono::DateTime::parse_from_rfc2822(value) {
        return Some(d.with_timezone(&Utc));
    }
    // The two obsolete forms HTTP still requires recipients to accept (RFC 9110 §5.6.7).
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|naive| Utc.from_utc_datetime(&naive))
}

/// Replaces every occurrence of a secret by `[redacted]`.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "[redacted]");
    }
    out
}

/// Whitespace collapsed to single spaces and cut at `MAX_BODY_TEXT` characters, so one error
/// is one log line.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_BODY_TEXT) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// An error and its causes on one line: reqwest's own message ("error sending request") says
/// little; the useful part ("Connection refused", "invalid peer certificate") is in the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Transient { .. } => f.write_str("transient"),
            ErrorKind::Permanent => f.write_str("permanent"),
            ErrorKind::NotFound => f.write_str("not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_err(status: u16, body: &str, retry_after: Option<Duration>) -> ApiError {
        ApiError::status(
            "PUT file orders.json into batch 01HXYZ",
            status,
            PlatformError::from_body(body.as_bytes(), &["tok-SECRET"]),
            retry_after,
        )
    }

    #[test]
    fn classification_by_status() {
        let transient = |s| matches!(status_err(s, "", None).kind(), ErrorKind::Transient { .. });
        for s in [401, 408, 429, 500, 502, 503, 504] {
            assert!(transient(s), "{s} should be transient");
        }
        for s in [400, 403, 405, 409, 413, 414, 422] {
            assert_eq!(status_err(s, "", None).kind(), ErrorKind::Permanent, "{s}");
        }
        assert_eq!(status_err(404, "", None).kind(), ErrorKind::NotFound);
    }

    #[test]
    fn retry_after_is_kept_only_for_transient_errors() {
        let wait = Some(Duration::from_secs(7));
        let e = status_err(429, "", wait);
        assert_eq!(e.kind(), ErrorKind::Transient { retry_after: wait });
        assert_eq!(e.retry_after(), wait);
        assert!(e.to_string().contains("retries after 7 s"), "{e}");
        assert_eq!(status_err(400, "", wait).retry_after(), None);
    }

    #[test]
    fn other_failures() {
        let e = ApiError::new(
            "op",
            Failure::Transport {
                what: Transport::Connect,
                detail: "Connection refused".into(),
            },
        );
        assert_eq!(e.kind(), ErrorKind::Transient { retry_after: None });
        assert!(!e.is_config());
        assert!(e.to_string().contains("Connection refused"));
        assert_eq!(
            ApiError::invalid_response("op", "x").kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            ApiError::invalid_request("op", "x").kind(),
            ErrorKind::Permanent
        );
        let c = ApiError::config("op", "x");
        assert_eq!(c.kind(), ErrorKind::Permanent);
        assert!(c.is_config());
    }

    #[test]
    fn ims_refusals_are_permanent_config_errors() {
        let e = ApiError::status(
            "get an access token from IMS",
            401,
            PlatformError::from_body(
                br#"{"error":"invalid_client","error_description":"invalid client_secret parameter"}"#,
                &[],
            ),
            None,
        )
        .during_token_for("PUT file a.json into batch B");
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert!(e.is_config());
        let text = e.to_string();
        assert!(
            text.starts_with("PUT file a.json into batch B: get an access token"),
            "{text}"
        );
        assert!(text.contains("[invalid_client]"), "{text}");
        assert!(text.contains("client secret file"), "{text}");

        let gone = ApiError::status("t", 404, PlatformError::default(), None).during_token_for("x");
        assert_eq!(
            gone.kind(),
            ErrorKind::Permanent,
            "a wrong token URL is not a missing batch"
        );
        assert!(gone.is_config());

        let busy = ApiError::status("t", 503, PlatformError::default(), None).during_token_for("x");
        assert!(matches!(busy.kind(), ErrorKind::Transient { .. }));
        assert!(!busy.is_config());
    }

    #[test]
    fn body_shapes() {
        let gw = PlatformError::from_body(
            br#"{"error_code":"403003","message":"Api Key is invalid"}"#,
            &[],
        );
        assert_eq!(gw.code.as_deref(), Some("403003"));
        assert_eq!(gw.title.as_deref(), Some("Api Key is invalid"));
        assert_eq!(gw.detail, None);

        let svc = PlatformError::from_body(
            br#"{"type":"https://ns.adobe.com/aep/errors/bad-file","status":400,
                 "title":"Bad file path","detail":"segment '..' in 'a/../b' of batch 01H"}"#,
            &[],
        );
        assert_eq!(
            svc.code.as_deref(),
            Some("https://ns.adobe.com/aep/errors/bad-file")
        );
        assert_eq!(svc.title.as_deref(), Some("Bad file path"));
        assert_eq!(
            svc.detail.as_deref(),
            Some("segment '..' in 'a/../b' of batch 01H")
        );

        let ims = PlatformError::from_body(
            br#"{"error":"invalid_scope","error_description":"scope x is invalid"}"#,
            &[],
        );
        assert_eq!(ims.code.as_deref(), Some("invalid_scope"));
        assert_eq!(ims.detail.as_deref(), Some("scope x is invalid"));

        let numeric = PlatformError::from_body(br#"{"error_code":401013,"message":"m"}"#, &[]);
        assert_eq!(numeric.code.as_deref(), Some("401013"));

        let html =
            PlatformError::from_body(b"<html>\n  <body>502 Bad Gateway</body>\n</html>", &[]);
        assert_eq!(
            html.detail.as_deref(),
            Some("<html> <body>502 Bad Gateway</body> </html>")
        );
        assert_eq!(PlatformError::from_body(b"", &[]), PlatformError::default());

        let long = "x".repeat(2000);
        let cut = PlatformError::from_body(long.as_bytes(), &[])
            .detail
            .unwrap();
        assert_eq!(cut.chars().count(), MAX_BODY_TEXT + 1);

        let odd = PlatformError::from_body(br#"{"foo":1}"#, &[]);
        assert_eq!(odd.detail.as_deref(), Some(r#"{"foo":1}"#));
    }

    #[test]
    fn display_names_operation_and_advice_and_never_the_token() {
        let e = status_err(
            403,
            r#"{"error_code":"403003","message":"Api Key is invalid for Bearer tok-SECRET"}"#,
            None,
        );
        let text = e.to_string();
        assert!(text.starts_with("PUT file orders.json into batch 01HXYZ failed: HTTP 403 Forbidden [403003]: Api Key is invalid"), "{text}");
        assert!(text.contains("check x-api-key / org id"), "{text}");
        assert!(!text.contains("tok-SECRET"), "{text}");
        assert!(!format!("{e:?}").contains("tok-SECRET"));
        assert!(e.is_config());

        let org = status_err(
            400,
            r#"{"error_code":"400003","message":"Missing org"}"#,
            None,
        );
        assert!(org.to_string().contains("check org_id"));
        assert!(org.is_config());

        let bad = status_err(
            400,
            r#"{"type":"t","status":400,"title":"Batch not loading","detail":"batch 01H is success"}"#,
            None,
        );
        assert!(!bad.is_config());
        assert!(
            bad.to_string()
                .ends_with("Batch not loading — batch 01H is success")
        );
        assert_eq!(bad.http_status(), Some(400));
        assert_eq!(
            bad.platform_error().unwrap().title.as_deref(),
            Some("Batch not loading")
        );
        assert!(
            status_err(413, "", None)
                .to_string()
                .contains("chunked large-file upload")
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn scrubbing() {
        assert_eq!(
            scrub("a tok b tok", &["tok", ""]),
            "a [redacted] b [redacted]"
        );
    }
}
