//! Completed batch → terminal status: asks the Catalog, with a growing interval, until the
//! platform says `success` or `failed` (or that the batch is gone), and records the outcome.
//!
//! This module must not move files (archiver) or send anything but Catalog reads.

use crate::api::{ApiClient, BatchStatus, DataSetFile};
use crate::config::Upload;
use crate::store::{BatchRow, Store, batch_state, file_state, now_ms};
use crate::uploader::StepError;

/// One look at a processing batch. Records the outcome when terminal; otherwise schedules the
/// next look (interval doubling from `poll_initial` up to `poll_max`).
pub async fn poll(
    store: &Store,
    api: &ApiClient,
    upload: &Upload,
    b: &BatchRow,
) -> Result<(), StepError> {
    let remote = b
        .remote_id
        .as_deref()
        .expect("a processing batch has a remote id");
    crate::crashpoint::hit("polling");
    let Some(info) = api.get_batch(remote).await? else {
        return Err(StepError::Tainted(format!(
            "the platform lost batch {remote} after it was completed"
        )));
    };
    let outcome = info.raw.to_string();
    let state = match info.status {
        BatchStatus::Success | BatchStatus::Inactive | BatchStatus::Deleted => batch_state::SUCCESS,
        BatchStatus::Failed => batch_state::FAILED,
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
    if state == batch_state::SUCCESS {
        tracing::info!(batch = %remote, dataset = %b.dataset, "batch succeeded ({detail})");
        // Each file's own count, for its receipt (the Catalog's metrics are the batch's).
        // Only a nicety: the batch's outcome does not wait for it if Data Access fails.
        match api.list_batch_files(remote).await {
            Ok(listing) => {
                let files: Vec<(i64, String)> = store
                    .batch_files(b.id)
                    .await?
                    .into_iter()
                    .filter(|f| f.state == file_state::UPLOADED)
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
        if let Some(preds) = &b.replay_json {
            let preds: Vec<String> = serde_json::from_str(preds).unwrap_or_default();
            store.mark_replaced(&preds, remote).await?;
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
            .filter(|f| f.state == file_state::BATCHED || f.state == file_state::UPLOADED)
            .collect();
        let names: Vec<&str> = files.iter().map(|f| f.rel_path.as_str()).collect();
        let culprits: Vec<&str> = info
            .errors
            .iter()
            .flat_map(|e| files_named(&e.description, &names))
            .collect();
        let (named, innocent): (Vec<_>, Vec<_>) = files
            .iter()
            .partition(|f| culprits.contains(&f.rel_path.as_str()));
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
                .finish_batch_requeueing(b.id, state, &outcome, &detail, &ids, &why)
                .await?;
            return Ok(());
        }
    }
    store.finish_batch(b.id, state, &outcome, &detail).await?;
    metrics::counter!(crate::telemetry::BATCHES, "outcome" => state).increment(1);
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
    !files_named(description, &[rel_path]).is_empty()
}

/// The files of one batch, among `names`, that a platform error description quotes. A name may
/// contain quotes itself (`b.json' x` quoted holds a quoted `b.json`): where quoted names
/// overlap, the one that starts first and, at the same start, the longest wins, so that one
/// file's name can never make another file of its batch a culprit.
pub fn files_named<'a>(description: &str, names: &[&'a str]) -> Vec<&'a str> {
    let mut found: Vec<(usize, usize, &'a str)> = Vec::new();
    for &name in names {
        for quote in ['\'', '"'] {
            let quoted = format!("{quote}{name}{quote}");
            found.extend(
                description
                    .match_indices(&quoted)
                    .map(|(at, _)| (at, at + quoted.len(), name)),
            );
        }
    }
    found.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
    let mut named = Vec::new();
    let mut covered = 0;
    for (start, end, name) in found {
        if start >= covered {
            covered = end;
            if !named.contains(&name) {
                named.push(name);
            }
        }
    }
    named
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

    #[test]
    fn a_name_holding_a_quote_cannot_make_a_co_batched_file_a_culprit() {
        let names = ["b.json", "b.json' x", "c.json"];
        // The platform's error about the hostile file quotes its whole name.
        let d = "file 'b.json' x': 1 record(s) could not be ingested; first: row 1";
        assert_eq!(files_named(d, &names), ["b.json' x"]);
        // A name that spells out a second quoted name inside it, in either quote.
        let names = ["b.json", "x.json': row 1; file 'b.json"];
        let d = "file 'x.json': row 1; file 'b.json': unparsable JSON";
        assert_eq!(files_named(d, &names), ["x.json': row 1; file 'b.json"]);
        let names = ["b.json", "y\" and \"b.json"];
        assert_eq!(
            files_named("CSV file \"y\" and \"b.json\" has an empty header", &names),
            ["y\" and \"b.json"]
        );
        // Two files really named, each once, in order of appearance.
        let names = ["a.json", "b.json"];
        let d = "file 'b.json' row 2: bad; file 'a.json' row 1: bad";
        assert_eq!(files_named(d, &names), ["b.json", "a.json"]);
    }
}
