//! `PATCH /catalog/dataSets/{id}`: a client's change to a dataset, as a JSON Patch
//! (`application/json-patch+json`, RFC 6902) or a merge (`application/json`, RFC 7396). It is
//! how Profile and upsert are switched on. It owns applying the change to the dataset's
//! document and checking the result; it must not touch batches or the dataset's rows.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::catalog::dataset_tags;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::state::AppState;

/// Fields the platform sets and a client cannot change.
const READ_ONLY: &[&str] = &[
    "id",
    "created",
    "updated",
    "imsOrg",
    "sandboxName",
    "version",
    "schemaRef",
    "viewId",
    "files",
    "lastBatchId",
    "lastBatchStatus",
];

pub async fn patch_dataset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let dataset = crate::scope::dataset(&state, &caller, &id).await?;
    let change: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "dataset {id}: the PATCH body is not valid JSON: {e}"
        ))
    })?;
    let mut doc = match serde_json::from_str(&dataset.extra) {
        Ok(Value::Object(extra)) => extra,
        _ => Map::new(),
    };
    doc.insert("name".into(), json!(dataset.name));
    doc.insert(
        "tags".into(),
        serde_json::from_str(&dataset.tags).unwrap_or_else(|_| json!({})),
    );
    let mut doc = Value::Object(doc);
    let is_json_patch = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json-patch"));
    if is_json_patch {
        let Value::Array(operations) = change else {
            return Err(ApiError::bad_request(format!(
                "dataset {id}: a JSON Patch body is an array of operations, e.g. \
                 [{{\"op\": \"add\", \"path\": \"/tags/unifiedProfile\", \"value\": [\"enabled:true\"]}}]"
            )));
        };
        for operation in &operations {
            apply(&mut doc, operation)
                .map_err(|e| ApiError::bad_request(format!("dataset {id}: {e}")))?;
        }
    } else {
        let Value::Object(_) = change else {
            return Err(ApiError::bad_request(format!(
                "dataset {id}: a merge PATCH body is a JSON object of the fields to change \
                 (or send Content-Type: application/json-patch+json with an array of operations)"
            )));
        };
        merge(&mut doc, change);
    }
    let Value::Object(mut doc) = doc else {
        return Err(ApiError::bad_request(format!(
            "dataset {id}: the patch would replace the whole dataset"
        )));
    };
    for field in READ_ONLY {
        if doc.contains_key(*field) {
            return Err(ApiError::bad_request(format!(
                "dataset {id}: {field} cannot be changed by a PATCH"
            )));
        }
    }
    let name = match doc.remove("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        _ => {
            return Err(ApiError::bad_request(format!(
                "dataset {id}: name must stay a non-empty string"
            )));
        }
    };
    let tags = dataset_tags(doc.remove("tags")).map_err(|_| {
        ApiError::bad_request(format!(
            "dataset {id}: tags must stay an object of arrays of strings, e.g. \
             {{\"unifiedProfile\": [\"enabled:true\", \"isUpsert:true\"]}}"
        ))
    })?;
    state
        .store
        .update_dataset(
            &id,
            &name,
            &tags.to_string(),
            &Value::Object(doc).to_string(),
        )
        .await?;
    tracing::info!(dataset = %id, "dataset patched");
    Ok(axum::Json(json!([format!("@/dataSets/{id}")])).into_response())
}

/// One RFC 6902 operation: `add`, `replace`, `remove` (others are refused).
fn apply(doc: &mut Value, operation: &Value) -> Result<(), String> {
    let op = operation["op"].as_str().unwrap_or("");
    let path = operation["path"]
        .as_str()
        .ok_or_else(|| format!("operation {operation} has no path"))?;
    let (parent, last) = match path.rsplit_once('/') {
        Some((parent, last)) if path.starts_with('/') => (parent, unescape(last)),
        _ => return Err(format!("path {path:?} must start with /")),
    };
    let target = doc
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("path {path:?}: {parent:?} is not an object of the dataset"))?;
    match op {
        "add" | "replace" => {
            let value = operation
                .get("value")
                .ok_or_else(|| format!("{op} {path:?} has no value"))?;
            if op == "replace" && !target.contains_key(&last) {
                return Err(format!(
                    "replace {path:?}: there is nothing there to replace"
                ));
            }
            target.insert(last, value.clone());
        }
        "remove" => {
            target
                .remove(&last)
                .ok_or_else(|| format!("remove {path:?}: there is nothing there"))?;
        }
        other => {
            return Err(format!(
                "operation {other:?} is not supported by the emulator: use add, replace or remove"
            ));
        }
    }
    Ok(())
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// RFC 7396: objects merge, `null` removes, anything else replaces.
fn merge(doc: &mut Value, change: Value) {
    match (doc, change) {
        (Value::Object(target), Value::Object(change)) => {
            for (key, value) in change {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (doc, change) => *doc = change,
    }
}
