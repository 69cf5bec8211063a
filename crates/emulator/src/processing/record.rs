//! The last step of processing a batch: its outcome recorded in one transaction, only if the
//! batch is still processing (an abort meanwhile wins): status, metrics and errors, its files'
//! record counts and served copies, its failed rows, the merge of its upsert rows into the
//! current view, and its replay predecessors made inactive. The SQL is the store's
//! (`OutcomeTx`); this module decides what is written.

use std::path::Path;

use serde_json::{Value, json};

use crate::AppState;
use crate::stats::bump;
use crate::store::{BatchRow, BatchStatus, DbError, FileOutcome, NewFailedRow, OutcomeTx, now_ms};
use crate::validate::merge;

use super::parse::FileResult;
use super::summarize::Outcome;

pub(super) async fn record(
    state: &AppState,
    batch: &BatchRow,
    results: &[FileResult],
    outcome: &Outcome,
) -> Result<(), DbError> {
    for path in &outcome.unserved {
        let _ = std::fs::remove_file(path);
    }
    let id = batch.id.as_str();
    let mut tx = state.store.begin_outcome().await?;
    let now = now_ms();
    let errors = Value::Array(outcome.errors.iter().map(|e| e.to_json()).collect());
    let finished = tx
        .finish_batch(
            id,
            outcome.status,
            now,
            &outcome.metrics.to_string(),
            &errors.to_string(),
        )
        .await?;
    if !finished {
        // Aborted meanwhile.
        if let Some(p) = &outcome.capture {
            let _ = std::fs::remove_file(p);
        }
        return Ok(());
    }
    let files: Vec<FileOutcome<'_>> = results
        .iter()
        .map(|r| FileOutcome {
            file_id: &r.file_id,
            records: r.ok,
            served_size: outcome
                .served
                .iter()
                .find(|(file_id, _)| *file_id == r.file_id)
                .map(|(_, size)| *size),
        })
        .collect();
    tx.set_file_outcomes(&files).await?;
    tx.replace_failed_rows(id, failed_rows(results)).await?;
    if outcome.succeeded() {
        if let Some(path) = &outcome.capture {
            merge_upserts(&mut tx, &batch.dataset_id, id, path, now).await?;
        }
        if let Some(replay) = batch.replay.as_deref() {
            let due = now + state.config.revert_gc_delay_ms as i64;
            replace_predecessors(&mut tx, id, replay, now, due).await?;
        }
    }
    tx.commit().await?;
    if let Some(p) = &outcome.capture {
        let _ = std::fs::remove_file(p);
    }
    if outcome.succeeded() {
        bump(&state.counters.batches_succeeded);
    } else {
        bump(&state.counters.batches_failed);
    }
    tracing::info!(batch = %id, status = outcome.status.as_str(), records = outcome.records, failed = outcome.failed, "batch processed");
    Ok(())
}

/// The failed rows kept, in the order they were found.
fn failed_rows(results: &[FileResult]) -> impl Iterator<Item = NewFailedRow<'_>> {
    results.iter().flat_map(|r| {
        r.failures.iter().map(|f| {
            let first = f.first();
            let all: Vec<Value> = f
                .issues
                .iter()
                .map(|i| {
                    let mut e = json!({"code": i.code.as_str(), "message": i.message});
                    if let Some(p) = &i.pointer {
                        e["path"] = json!(p);
                    }
                    e
                })
                .collect();
            NewFailedRow {
                file_path: &r.path,
                row_no: f.row,
                code: first.code.as_str(),
                message: &first.message,
                raw: f.raw.as_deref(),
                errors: Value::Array(all).to_string(),
            }
        })
    })
}

/// Merges the captured rows of a successful upsert batch into the dataset's current view.
async fn merge_upserts(
    tx: &mut OutcomeTx,
    dataset_id: &str,
    batch_id: &str,
    path: &Path,
    now: i64,
) -> Result<(), DbError> {
    use tokio::io::AsyncBufReadExt;
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(batch = %batch_id, error = %e, "upsert rows cannot be read back");
            return Ok(());
        }
    };
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut merged = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(row) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let (Some(identity), Some(update)) = (row.get("i").and_then(Value::as_str), row.get("r"))
        else {
            continue;
        };
        let mut record = tx
            .upsert_record(dataset_id, identity)
            .await?
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or_else(|| json!({}));
        merge(&mut record, update);
        tx.put_upsert_record(dataset_id, identity, &record.to_string(), batch_id, now)
            .await?;
        merged += 1;
    }
    tracing::info!(batch = %batch_id, dataset = %dataset_id, rows = merged, "upsert rows merged into the current view");
    Ok(())
}

/// A successful replay: each predecessor is tagged with its successor, and a successful one
/// becomes inactive (deleted at `due`).
async fn replace_predecessors(
    tx: &mut OutcomeTx,
    id: &str,
    replay: &str,
    now: i64,
    due: i64,
) -> Result<(), DbError> {
    let replay: Value = serde_json::from_str(replay).unwrap_or(json!({}));
    for pred in replay
        .get("predecessors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let Some((tags, status)) = tx.predecessor(pred).await? else {
            continue;
        };
        let tags = with_successor(&tags, id);
        let (new_status, gc) = if status == BatchStatus::Success {
            (BatchStatus::Inactive, Some(due))
        } else {
            (status, None)
        };
        tx.update_predecessor(pred, &tags.to_string(), new_status, now, gc)
            .await?;
    }
    Ok(())
}

/// A batch's tags (JSON) with `successor` added to `acp_successor`.
fn with_successor(tags: &str, successor: &str) -> Value {
    let mut tags: Value = serde_json::from_str(tags).unwrap_or(json!({}));
    if !tags.is_object() {
        tags = json!({});
    }
    if let Some(map) = tags.as_object_mut() {
        let list = map.entry("acp_successor").or_insert_with(|| json!([]));
        if let Some(a) = list.as_array_mut()
            && !a.iter().any(|v| v == successor)
        {
            a.push(json!(successor));
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_is_added_once_to_whatever_tags_there_were() {
        assert_eq!(with_successor("{}", "b2"), json!({"acp_successor": ["b2"]}));
        assert_eq!(
            with_successor(r#"{"acp_successor": ["b2"], "k": ["v"]}"#, "b2"),
            json!({"acp_successor": ["b2"], "k": ["v"]})
        );
        assert_eq!(
            with_successor("not json", "b3"),
            json!({"acp_successor": ["b3"]})
        );
        assert_eq!(
            with_successor("[1]", "b3"),
            json!({"acp_successor": ["b3"]})
        );
    }
}
