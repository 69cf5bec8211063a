//! `GET /data/foundation/schemaregistry/tenant/schemas/{$id, URL-encoded}`: a registered schema
//! as the Schema Registry's lookup answers it, so that a client can fetch a dataset's
//! `schemaRef` and check records before upload. It owns that one read; registering and
//! compiling schemas are `schemas`' and `batchdrop_xdm`'s, and it must not change either.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The media type of the answer: the fully resolved schema, as the emulator keeps it.
const XED_FULL: &str = "application/vnd.adobe.xed-full+json; version=1";

pub async fn lookup(
    State(state): State<Arc<AppState>>,
    Path((container, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // The registry answers only its own media types, each with a version.
    if !accept.contains("application/vnd.adobe.xed") || !accept.contains("version=") {
        return Err(ApiError::Service {
            status: StatusCode::NOT_ACCEPTABLE,
            title: "Not Acceptable",
            detail: format!(
                "schema {key}: Accept {accept:?} is not a Schema Registry media type; send \
                 Accept: {XED_FULL}"
            ),
        });
    }
    let missing = || {
        ApiError::not_found(format!(
            "schema {key} is not registered in container {container} of this emulator: \
             register it (emulator config [[schemas]]) and use its $id"
        ))
    };
    if container != "tenant" {
        return Err(missing());
    }
    let schema = state.schemas.get(&key).ok_or_else(missing)?;
    let body = state
        .store
        .saved_schemas()
        .await?
        .into_iter()
        .find(|(id, ..)| *id == schema.id)
        .map(|(_, _, body, _)| body)
        .ok_or_else(missing)?;
    let mut document = match serde_json::from_str(&body) {
        Ok(Value::Object(document)) => document,
        _ => {
            return Err(ApiError::internal(format!(
                "schema {key}: its stored JSON is unreadable"
            )));
        }
    };
    let alt_id = format!(
        "_{}",
        schema
            .id
            .trim_start_matches("https://ns.adobe.com/")
            .replace('/', ".")
    );
    document.insert("$id".into(), json!(schema.id));
    for (field, value) in [
        ("meta:altId", json!(alt_id)),
        ("meta:resourceType", json!("schemas")),
        ("meta:containerId", json!("tenant")),
        ("title", json!(schema.name)),
        ("type", json!("object")),
        ("version", json!("1.0")),
    ] {
        document.entry(field).or_insert(value);
    }
    Ok((
        [(header::CONTENT_TYPE, XED_FULL)],
        Value::Object(document).to_string(),
    )
        .into_response())
}
