//! Reading the platform's answers: a 2xx body within the bound its kind allows, JSON or an
//! error naming what came instead (never quoting an IMS answer, which may hold a token), a
//! non-2xx answer as an `ApiError` with its secrets scrubbed, an ignored body drained.
//!
//! This module must not build or send requests (the client does).

use std::time::SystemTime;

use reqwest::Response;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;

use super::error::{ApiError, PlatformError, parse_retry_after};

/// The most of an error body that is read: platform errors are small, and a proxy's HTML page
/// need not be read to the end.
pub(super) const MAX_ERROR_BODY: usize = 64 * 1024;

/// What an answer holds, which bounds how much of it is read and whether it may be quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A platform JSON document (a Catalog listing, failed rows...): up to 64 MiB, and the
    /// start of one that is not JSON is quoted in the error (a proxy's page says what is
    /// wrong).
    Platform,
    /// A dataset file from Data Access, kept in memory by the caller: up to 1 GiB.
    Download,
    /// An IMS token answer: up to 64 KiB, and never quoted, since it may hold a token.
    Ims,
}

impl Answer {
    pub(super) fn max_bytes(self) -> usize {
        match self {
            Answer::Platform => 64 * 1024 * 1024,
            Answer::Download => 1024 * 1024 * 1024,
            Answer::Ims => 64 * 1024,
        }
    }
}

/// Turns a non-2xx answer into an `ApiError`, reading at most `MAX_ERROR_BODY` of its body and
/// scrubbing `secrets` from it.
pub(crate) async fn read_error(op: &str, mut resp: Response, secrets: &[&str]) -> ApiError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut body = Vec::new();
    // A body that breaks off is not worth a second error: the status says what matters.
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    ApiError::status(
        op,
        status,
        PlatformError::from_body(&body, secrets),
        retry_after,
    )
}

/// Reads a 2xx answer's body, refusing one larger than `answer` allows.
pub(crate) async fn read_body(
    op: &str,
    mut resp: Response,
    answer: Answer,
) -> Result<bytes::Bytes, ApiError> {
    let max = answer.max_bytes();
    let too_large = |n: String| {
        ApiError::invalid_response(
            op,
            format!("the answer is {n} bytes long, more than the {max} expected of it"),
        )
    };
    if let Some(len) = resp.content_length()
        && len > max as u64
    {
        return Err(too_large(len.to_string()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ApiError::transport(op, &e))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large(format!("over {max}")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

pub(crate) async fn read_json(op: &str, resp: Response, answer: Answer) -> Result<Value, ApiError> {
    let body = read_body(op, resp, answer).await?;
    serde_json::from_slice(&body).map_err(|e| {
        let what = match answer {
            Answer::Ims => format!("not JSON ({e}; its content is not shown, it may hold a token)"),
            Answer::Platform | Answer::Download => {
                let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                format!("not JSON ({e}): {start:?}")
            }
        };
        ApiError::invalid_response(op, what)
    })
}

/// Reads an ignored body to its end so the connection goes back to the pool, keeping none of
/// it; past `MAX_ERROR_BODY` the connection is dropped instead.
pub(super) async fn discard(mut resp: Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        if read > MAX_ERROR_BODY {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: Vec<u8>) -> Response {
        Response::from(axum::http::Response::new(body))
    }

    #[tokio::test]
    async fn an_ims_answer_that_is_not_json_is_never_quoted() {
        let body = b"access_token=eyJ-part-of-a-real-token&expires_in=86399".to_vec();
        let err = read_json("get a token", answer(body.clone()), Answer::Ims)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not JSON"), "{err}");
        assert!(!err.contains("eyJ"), "the body leaked: {err}");
        // A platform answer is quoted: a proxy's page says what went wrong.
        let err = read_json("list batches", answer(body), Answer::Platform)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("access_token=eyJ"), "{err}");
    }

    #[tokio::test]
    async fn answers_larger_than_their_bound_are_refused() {
        let max = Answer::Ims.max_bytes();
        let big = format!("{{\"access_token\": \"{}\"}}", "x".repeat(max));
        let err = read_json("get a token", answer(big.into_bytes()), Answer::Ims)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 65536 expected"), "{err}");
        assert!(!err.contains("xxxx"), "{err}");
        let fits = format!("{{\"access_token\": \"{}\"}}", "x".repeat(max - 100));
        let v = read_json("get a token", answer(fits.into_bytes()), Answer::Ims)
            .await
            .unwrap();
        assert_eq!(v["access_token"].as_str().unwrap().len(), max - 100);
        // A body without a Content-Length is cut as it arrives.
        let chunks = futures::stream::iter(
            (0..80).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
        );
        let streamed = Response::from(axum::http::Response::new(reqwest::Body::wrap_stream(
            chunks,
        )));
        let err = read_body("get a token", streamed, Answer::Ims)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 65536 expected"), "{err}");
    }
}
