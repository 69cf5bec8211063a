//! Data Access's batch metadata, `GET /export/batches/{id}/meta?path=...`: where the platform
//! keeps a batch's error diagnostics (`row_errors`: `parsing_errors_N.json` for rows that
//! cannot be read, `conversion_errors_N.json` for rows that break their schema) and the list
//! of its input files (`input_files`). Listings and JSON Lines files only: the failed rows come
//! from the store as processing kept them; it must not judge records itself.
//!
//! As on the platform, the row errors exist only for batches created with
//! `enableErrorDiagnostics`, and nothing in them names the input file a row came from
//! (`_filename` is the diagnostics file's own name).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::codes::Code;
use crate::error::{ApiError, ApiResult};
use crate::gateway::Caller;
use crate::scope;
use crate::state::AppState;
use crate::store::{BatchStatus, FailedRow};

/// Failed rows per diagnostics file.
const ROWS_PER_FILE: usize = 500;

/// The diagnostics files of a batch, by name, each with its JSON Lines text.
fn error_files(rows: &[FailedRow]) -> Vec<(String, String)> {
    let unparsable = Code::UnparsableRow.as_str();
    let (parsing, conversion): (Vec<&FailedRow>, Vec<&FailedRow>) =
        rows.iter().partition(|r| r.code == unparsable);
    let mut files = Vec::new();
    for (kind, rows) in [("parsing", parsing), ("conversion", conversion)] {
        for (n, part) in rows.chunks(ROWS_PER_FILE).enumerate() {
            let name = format!("{kind}_errors_{n}.json");
            let text: String = part
                .iter()
                .map(|r| format!("{}\n", error_record(r, &name)))
                .collect();
            files.push((name, text));
        }
    }
    files
}

/// One failed row as the platform writes it into a diagnostics file.
fn error_record(row: &FailedRow, file_name: &str) -> Value {
    let listed: Vec<Value> = row
        .errors
        .as_deref()
        .and_then(|e| serde_json::from_str::<Vec<Value>>(e).ok())
        .unwrap_or_else(|| vec![json!({"code": row.code, "message": row.message})]);
    let errors: Vec<Value> = listed
        .iter()
        .map(|e| {
            json!({
                "code": short_code(e["code"].as_str().unwrap_or_default()),
                "message": without_location(e["message"].as_str().unwrap_or_default(), &row.file_path),
            })
        })
        .collect();
    let raw = row.raw.as_deref().map(|r| r.trim_end_matches(['\r', '\n']));
    json!({"_corrupt_record": raw, "_errors": errors, "_filename": file_name})
}

/// `INGEST-1401-400` as the diagnostics files write it: `1401`.
fn short_code(code: &str) -> &str {
    code.strip_prefix("INGEST-")
        .and_then(|c| c.strip_suffix("-400"))
        .unwrap_or(code)
}

/// A row message without the emulator's `file 'NAME' row N: ` prefix: the platform's row
/// messages do not name the input file.
fn without_location<'a>(message: &'a str, file_path: &str) -> &'a str {
    let prefix = format!("file '{file_path}' ");
    match message.strip_prefix(prefix.as_str()) {
        Some(rest) => rest.split_once(": ").map_or(rest, |(_, m)| m),
        None => message,
    }
}

/// The input files' metadata files: one per file, each a line naming it.
fn input_files(paths: &[String]) -> Vec<(String, String)> {
    paths
        .iter()
        .enumerate()
        .map(|(n, path)| {
            (
                format!("input_file_{n}.json"),
                format!("{}\n", json!({ "path": path })),
            )
        })
        .collect()
}

fn listing(base: &str, batch_id: &str, dir: &str, files: &[(String, String)]) -> Value {
    let data: Vec<Value> = files
        .iter()
        .map(|(name, text)| {
            let path = match dir {
                "" => name.clone(),
                dir => format!("{dir}%2F{name}"),
            };
            json!({
                "name": name,
                // The platform writes lengths as strings.
                "length": text.len().to_string(),
                "_links": {"self": {"href": format!(
                    "{base}/data/foundation/export/batches/{batch_id}/meta?path={path}"
                )}},
            })
        })
        .collect();
    let count = data.len();
    json!({"data": data, "_page": {"limit": 100, "count": count}})
}

pub async fn batch_meta(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(batch_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let batch = scope::batch(&state, &caller, &batch_id).await?;
    let path = q.get("path").map(String::as_str).unwrap_or_default();
    let (dir, file) = match path.split_once('/') {
        Some((dir, file)) => (dir, Some(file)),
        None => (path, None),
    };
    let gone = matches!(batch.status, BatchStatus::Inactive | BatchStatus::Deleted);
    let files = match dir {
        "row_errors" => {
            let options: Value = serde_json::from_str(&batch.options).unwrap_or_default();
            let diagnostics = options["enableErrorDiagnostics"].as_bool() == Some(true);
            if diagnostics && !gone {
                error_files(&state.store.failed_rows(&batch_id).await?)
            } else {
                Vec::new()
            }
        }
        "input_files" => {
            let paths: Vec<String> = state
                .store
                .files_of(&batch_id)
                .await?
                .into_iter()
                .map(|f| f.path)
                .collect();
            input_files(&paths)
        }
        // The meta directory itself: its two directories.
        "" => ["row_errors", "input_files"]
            .map(|d| (d.to_owned(), String::new()))
            .to_vec(),
        // The spec documents 404 for a path that is not there.
        _ => {
            return Err(ApiError::not_found(format!(
                "batch {batch_id} has no meta path {path:?}: use row_errors, input_files or a file under them (row_errors/NAME)"
            )));
        }
    };
    match file {
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("127.0.0.1");
            let body = listing(&format!("http://{host}"), &batch_id, dir, &files);
            Ok(axum::Json(body).into_response())
        }
        Some(name) => {
            let (_, text) = files.into_iter().find(|(n, _)| n == name).ok_or_else(|| {
                ApiError::not_found(format!(
                    "batch {batch_id} has no {dir} file {name:?}: list them with ?path={dir}"
                ))
            })?;
            let mut resp = text.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(code: &str, message: &str) -> FailedRow {
        FailedRow {
            file_path: "a.json".into(),
            row_no: Some(2),
            code: code.into(),
            message: message.into(),
            raw: Some("not json\n".into()),
            errors: None,
        }
    }

    #[test]
    fn rows_go_to_parsing_or_conversion_files_without_the_input_file_name() {
        let rows = [
            row("INGEST-1401-400", "file 'a.json' row 2: unparsable JSON: x"),
            row(
                "INGEST-1542-400",
                "file 'a.json' row 3: /age: expected an integer",
            ),
        ];
        let files = error_files(&rows);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["parsing_errors_0.json", "conversion_errors_0.json"]);
        let parsed: Value = serde_json::from_str(files[0].1.trim()).unwrap();
        assert_eq!(parsed["_corrupt_record"], "not json");
        assert_eq!(parsed["_errors"][0]["code"], "1401");
        assert_eq!(parsed["_errors"][0]["message"], "unparsable JSON: x");
        assert_eq!(parsed["_filename"], "parsing_errors_0.json");
        assert!(!files[1].1.contains("a.json"), "{}", files[1].1);
    }

    #[test]
    fn input_files_name_one_path_each() {
        let files = input_files(&["x/F1.json".into()]);
        assert_eq!(files[0].0, "input_file_0.json");
        assert_eq!(files[0].1, "{\"path\":\"x/F1.json\"}\n");
    }
}
