//! Completed batch → terminal status: asks the Catalog, with a growing interval, until the
//! platform says `success` or `failed` (or that the batch is gone), and records the outcome.
//!
//! This module must not move files (archiver) or send anything but Catalog reads.

use crate::api::{ApiClient, BatchStatus, DataSetFile};
use crate::config::Upload;
use crate::store::{BatchOutcome, BatchRow, FileState, Store, Verdict, now_ms};
use crate::uploader::StepError;

/// One look at a processing batch. Records the outcome when terminal; otherwise schedules the
/// next look (interval doubling from `poll_initial` up to `poll_max`).
pub async fn poll(
    store: &Store,
    api: &ApiClient,
    upload: &Upload,
    b: &BatchRow,
    remote: &str,
) -> Result<(), StepError> {
    crate::crashpoint::hit("polling");
    let Some(info) = api.get_batch(remote).await? else {
        return Err(StepError::Tainted(format!(
            "the platform lost batch {remote} after it was completed"
        )));
    };
    let outcome = BatchOutcome(info.raw.clone());
    let verdict = match info.status {
        BatchStatus::Success | BatchStatus::Inactive | BatchStatus::Deleted => Verdict::Success,
        BatchStatus::Failed => Verdict::Failed,
        BatchStatus::Aborted | BatchStatus::Abandoned => {
            return Err(StepError::Tainted(format!(
                "batch {remote} was {:?} on the platform before it finished",
                info.status
            )));
        }
        _ => {
            let waited = (now_ms() - b.updated_at).max(0) as u64;
            let next = (waited / 2).clamp(
                upload.poll_initial.as_millis() as u64,
                upload.poll_max.as_millis() as u64,
            );
            store.delay_batch(b.id, now_ms() + next as i64).await?;
            return Ok(());
        }
    };
    let m = &info.metrics;
    let detail = format!(
        "{:?}: {} records in, {} out, {} failed",
        info.status,
        m.input_record_count.unwrap_or(0),
        m.output_record_count.unwrap_or(0),
        m.failed_record_count.unwrap_or(0)
    );
    if verdict == Verdict::Success {
        tracing::info!(batch = %remote, dataset = %b.dataset, "batch succeeded ({detail})");
        // Each file's own count, for its receipt (the Catalog's metrics are the batch's).
        // Only a nicety: the batch's outcome does not wait for it if Data Access fails.
        match api.list_batch_files(remote).await {
            Ok(listing) => {
                let files: Vec<(i64, String)> = store
                    .batch_files(b.id)
                    .await?
                    .into_iter()
                    .filter(|f| f.state == FileState::Uploaded)
                    .map(|f| (f.id, f.rel_path))
                    .collect();
                store
                    .set_file_records(&records_per_file(&files, &listing))
                    .await?;
            }
            Err(e) => {
                tracing::debug!(batch = %remote, "no per-file record counts for the receipts: {e}")
            }
        }
        if let Some(preds) = &b.replay {
            store.mark_replaced(&preds.0, remote).await?;
        }
    } else {
        let errors: Vec<String> = info
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.description))
            .collect();
        tracing::warn!(batch = %remote, dataset = %b.dataset, "batch failed ({detail}): {}", errors.join("; "));
        // A batch fails whole for one bad file. When the platform's errors name the culprits,
        // only they fail; the others travel again in a new batch.
        let files: Vec<_> = store
            .batch_files(b.id)
            .await?
            .into_iter()
            .filter(|f| f.state.in_batch())
            .collect();
        let (named, innocent): (Vec<_>, Vec<_>) = files.iter().partition(|f| {
            info.errors
                .iter()
                .any(|e| error_names_file(&e.description, &f.rel_path))
        });
        if !named.is_empty() && !innocent.is_empty() {
            let culprits: Vec<&str> = named.iter().map(|f| f.rel_path.as_str()).collect();
            let why = format!(
                "batch {remote} failed because of {}; this file was not at fault and goes into a new batch",
                culprits.join(", ")
            );
            tracing::warn!(
                batch = %remote, dataset = %b.dataset,
                "the platform's errors name {} of its {} files; the other {} go into a new batch",
                named.len(), files.len(), innocent.len()
            );
            let ids: Vec<i64> = innocent.iter().map(|f| f.id).collect();
            store
                .finish_batch_requeueing(b.id, &outcome, &detail, &ids, &why)
                .await?;
            return Ok(());
        }
    }
    store.finish_batch(b.id, verdict, &outcome, &detail).await?;
    metrics::counter!(crate::telemetry::BATCHES, "outcome" => verdict.state().as_str())
        .increment(1);
    Ok(())
}

/// Each uploaded file's own record count from a successful batch's Data Access listing: by
/// the listing's names where it gives the uploaded names, else all of it for the batch's only
/// file. Files it cannot tell about are left out (their receipts say null).
pub fn records_per_file(files: &[(i64, String)], listing: &[DataSetFile]) -> Vec<(i64, i64)> {
    let total = || {
        listing
            .iter()
            .map(|d| d.records.unwrap_or(0) as i64)
            .sum::<i64>()
    };
    let named = !listing.is_empty()
        && listing.iter().all(|d| {
            d.name
                .as_ref()
                .is_some_and(|n| files.iter().any(|(_, p)| p == n))
        });
    if named {
        return files
            .iter()
            .map(|(id, path)| {
                let n = listing
                    .iter()
                    .filter(|d| d.name.as_deref() == Some(path))
                    .map(|d| d.records.unwrap_or(0) as i64)
                    .sum();
                (*id, n)
            })
            .collect();
    }
    match files {
        [(id, _)] => vec![(*id, total())],
        _ => Vec::new(),
    }
}

/// Whether a platform error description is about the file uploaded as `rel_path`: the
/// platform quotes file names (`file 'a/b.json': ...`).
pub fn error_names_file(description: &str, rel_path: &str) -> bool {
    description.contains(&format!("'{rel_path}'"))
        || description.contains(&format!("\"{rel_path}\""))
}

/// Of a batch's errors (`all`, the platform's array), those about the file uploaded as
/// `rel_path`, or all of them when none names it (the platform does not always name files).
pub fn errors_about(all: &serde_json::Value, rel_path: &str) -> Vec<serde_json::Value> {
    let all = all.as_array().map(Vec::as_slice).unwrap_or_default();
    let mine: Vec<serde_json::Value> = all
        .iter()
        .filter(|e| {
            e["description"]
                .as_str()
                .is_some_and(|d| error_names_file(d, rel_path))
        })
        .cloned()
        .collect();
    if mine.is_empty() { all.to_vec() } else { mine }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: Option<&str>, records: u64) -> DataSetFile {
        DataSetFile {
            id: "F".into(),
            dataset_id: None,
            name: name.map(str::to_owned),
            records: Some(records),
            size: None,
        }
    }

    #[test]
    fn records_per_file_by_name_or_for_a_batch_of_one() {
        let files = vec![(1, "a.json".to_owned()), (2, "b.json".to_owned())];
        let by_name = [listed(Some("b.json"), 3), listed(Some("a.json"), 2)];
        assert_eq!(records_per_file(&files, &by_name), vec![(1, 2), (2, 3)]);
        // The platform's own listing names no input file: only a batch of one can be told.
        let unnamed = [listed(None, 3), listed(None, 2)];
        assert_eq!(records_per_file(&files, &unnamed), vec![]);
        assert_eq!(records_per_file(&files[..1], &unnamed), vec![(1, 5)]);
        // Names that are not the uploaded ones (output parts) say nothing per file.
        let parts = [listed(Some("part-0.parquet"), 5)];
        assert_eq!(records_per_file(&files, &parts), vec![]);
        assert_eq!(records_per_file(&files[1..], &parts), vec![(2, 5)]);
    }

    #[test]
    fn errors_name_files_only_when_quoted_whole() {
        let d = "file 'data.json': 1 record(s) could not be ingested; first: row 2";
        assert!(error_names_file(d, "data.json"));
        assert!(!error_names_file(d, "a.json"), "a suffix is not the name");
        assert!(error_names_file(
            "CSV file \"x/y.csv\" has an empty header",
            "x/y.csv"
        ));
        assert!(!error_names_file(
            "batch failed by fault injection",
            "data.json"
        ));
    }
}
