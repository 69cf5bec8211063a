//! Errors: `EmulatorError` for the emulator's own life (start, config), `ApiError` for what the
//! platform answers to a client.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::codes::GatewayCode;
use crate::store::DbError;

/// Why the emulator could not start, stop or do what its owner asked.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot read emulator config {path}: {source}; check the path given with --config")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("emulator config {path} is invalid: {message}; fix the file (every key is optional)")]
    ConfigInvalid { path: PathBuf, message: String },
    #[error("emulator config is invalid: {0}; fix the value (every key is optional)")]
    Config(String),
    #[error("cannot use data dir {path}: {source}; check that it is a writable directory")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data dir {path} is already used by another running emulator; stop it or choose another --data-dir"
    )]
    DataDirLocked { path: PathBuf },
    #[error(
        "cannot listen on {addr}: {source}; choose a free address with --listen (port 0 picks one)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "emulator metadata database {path}: {source}; if the file is corrupt, move the data dir away and start again"
    )]
    Database {
        path: PathBuf,
        #[source]
        source: DbError,
    },
    #[error(
        "emulator metadata query failed: {0}; check that the data dir is writable and its disk not full"
    )]
    Query(#[from] DbError),
    #[error("invalid dataset id {id:?}: {reason}")]
    InvalidDatasetId { id: String, reason: String },
    #[error("schema {id:?} cannot be used: {message}")]
    Schema { id: String, message: String },
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// An error answered to a client: either a gateway error (`{"error_code","message"}`) or a
/// service error (`{"type","status","title","detail"}`).
#[derive(Debug)]
pub enum ApiError {
    Gateway {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    Service {
        status: StatusCode,
        title: &'static str,
        detail: String,
    },
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::Service {
            status: StatusCode::BAD_REQUEST,
            title: "Bad Request",
            detail: detail.into(),
        }
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::Service {
            status: StatusCode::NOT_FOUND,
            title: "Not Found",
            detail: detail.into(),
        }
    }
    pub fn too_large(detail: impl Into<String>) -> Self {
        ApiError::Service {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            title: "Payload Too Large",
            detail: detail.into(),
        }
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::Service {
            status: StatusCode::FORBIDDEN,
            title: "Forbidden",
            detail: detail.into(),
        }
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::Service {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal Server Error",
            detail: detail.into(),
        }
    }
    pub fn gateway(code: GatewayCode, message: impl Into<String>) -> Self {
        let (status, code) = code.status_and_code();
        ApiError::Gateway {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "emulator metadata query failed");
        ApiError::internal(format!("emulator metadata query failed: {e}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        tracing::error!(error = %e, "emulator storage error");
        ApiError::internal(format!("emulator storage error: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Gateway {
                status,
                code,
                message,
            } => (status, json!({"error_code": code, "message": message})),
            ApiError::Service {
                status,
                title,
                detail,
            } => (
                status,
                json!({
                    "type": format!("https://ns.adobe.com/aep/errors/batchdrop-emulator-{}", status.as_u16()),
                    "status": status.as_u16(),
                    "title": title,
                    "detail": detail,
                }),
            ),
        };
        let mut resp = (status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
