//! What a batch's end on the platform means for it and for each of its files: the verdict a
//! Catalog status gives, which files of a failed batch fail and which travel again (never
//! decided from error text: the platform does not say which file held a bad row), how a
//! failed batch is bisected, and each file's own record count.
//!
//! Pure decisions, no I/O: the poller asks the platform and records what this module decides.
//! It must not import the stages.

use crate::api::{BatchStatus, DataSetFile};
use crate::store::Verdict;

/// What a batch's status on the platform says about its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It ended: success (also once inactive or deleted: its data went in first) or failure.
    Ended(Verdict),
    /// It was aborted or abandoned on the platform before it finished: it cannot succeed.
    Stopped,
    /// The platform gave up retrying it (`stalled`): it will not move on by itself; an operator
    /// decides (`batchdrop abort` or `retry`), or `give_up_after` does.
    Stalled,
    /// Still on its way (`queued`, `retrying`, `staged`, `loaded`, processing...): ask again
    /// later.
    Pending,
}

pub fn ending(status: &BatchStatus) -> Ending {
    match status {
        BatchStatus::Success | BatchStatus::Inactive | BatchStatus::Deleted => {
            Ending::Ended(Verdict::Success)
        }
        BatchStatus::Failed => Ending::Ended(Verdict::Failed),
        BatchStatus::Aborted | BatchStatus::Abandoned => Ending::Stopped,
        BatchStatus::Stalled => Ending::Stalled,
        _ => Ending::Pending,
    }
}

/// Why the files of a failed batch fail with it, and what to do (their receipts' `reason`).
/// `errors` is the platform's (`code: description; ...`), `failing` how many of the batch's
/// files fail with it (the others were validated clean and travel again), `isolated` whether
/// the watch bisected it (`on_batch_failure = "isolate"`, whose cap was then reached).
pub fn failed_with_batch(batch: &str, errors: &str, failing: usize, isolated: bool) -> String {
    let errors = match errors.trim_end().trim_end_matches('.') {
        "" => "the platform named no error",
        errors => errors,
    };
    if failing <= 1 {
        return format!(
            "batch {batch} failed: {errors}; the receipt's diagnostics show sample rows: fix the file and drop it again, or fix it in the failed folder and run `batchdrop retry {batch}`"
        );
    }
    let finding = if isolated {
        "isolate_max_extra_batches was reached before the culprits were alone"
    } else {
        "on_batch_failure = \"isolate\" has batchdrop find it by itself"
    };
    format!(
        "batch {batch} failed: {errors}; the platform does not say which of the {failing} files failing with it held the bad rows, so each fails with the batch: the receipts' diagnostics show sample rows; fix or delete the file at fault in the failed folder, then `batchdrop retry {batch}` sends the others again ({finding})"
    )
}

/// Whether `reason` is the one [`failed_with_batch`] gave a file of `batch`: advice for files
/// in a failed folder, which `batchdrop push` (whose files stay where they are) replaces.
pub fn is_failed_with_batch(reason: &str, batch: &str) -> bool {
    reason.starts_with(&format!("batch {batch} failed: "))
}

/// How much a file of a failed batch is known to be innocent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vetting {
    /// Nothing is known: it may hold the bad rows.
    Unvetted,
    /// batchdrop validated every record against the dataset's schema before sending it
    /// (pre-flight validation, `validate = "reject"` or `"warn"`): the batch's errors cannot be
    /// its own.
    ValidatedClean,
}

/// The files of a failed batch (`files`, each with its vetting), split into those that fail
/// with the batch's errors and those that travel again in a new batch: a file validated clean
/// travels again; every other file fails, since the platform never says which file a bad row
/// came from.
pub fn attribute<F>(files: Vec<(F, Vetting)>) -> (Vec<F>, Vec<F>) {
    let mut fail = Vec::new();
    let mut again = Vec::new();
    for (file, vetting) in files {
        match vetting {
            Vetting::Unvetted => fail.push(file),
            Vetting::ValidatedClean => again.push(file),
        }
    }
    (fail, again)
}

/// The two halves a failed batch's files (ids) are sent again in, when it is bisected; none
/// when there is one file (it is the culprit).
pub fn halves(files: &[i64]) -> Option<[Vec<i64>; 2]> {
    if files.len() < 2 {
        return None;
    }
    let (first, second) = files.split_at(files.len() / 2);
    Some([first.to_vec(), second.to_vec()])
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
    // By name, each listed count summed: a look-up per file, not a walk of the listing
    // (a batch holds thousands of files).
    let mut by_name: std::collections::HashMap<&str, i64> =
        files.iter().map(|(_, path)| (path.as_str(), 0)).collect();
    let named = !listing.is_empty()
        && listing.iter().all(|d| {
            d.name
                .as_deref()
                .and_then(|n| by_name.get_mut(n))
                .map(|sum| *sum += d.records.unwrap_or(0) as i64)
                .is_some()
        });
    if named {
        return files
            .iter()
            .map(|(id, path)| (*id, by_name[path.as_str()]))
            .collect();
    }
    match files {
        [(id, _)] => vec![(*id, total())],
        _ => Vec::new(),
    }
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
        // A file listed in several parts gets their sum; a file not listed, none.
        let parts_of_b = [listed(Some("b.json"), 3), listed(Some("b.json"), 4)];
        assert_eq!(records_per_file(&files, &parts_of_b), vec![(1, 0), (2, 7)]);
        // One name that is not an uploaded file's: nothing per file.
        let stray = [listed(Some("a.json"), 2), listed(Some("c.json"), 1)];
        assert_eq!(records_per_file(&files, &stray), vec![]);
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
    fn a_status_is_an_end_a_stop_or_not_yet() {
        assert_eq!(
            ending(&BatchStatus::Success),
            Ending::Ended(Verdict::Success)
        );
        assert_eq!(
            ending(&BatchStatus::Inactive),
            Ending::Ended(Verdict::Success)
        );
        assert_eq!(
            ending(&BatchStatus::Deleted),
            Ending::Ended(Verdict::Success)
        );
        assert_eq!(ending(&BatchStatus::Failed), Ending::Ended(Verdict::Failed));
        assert_eq!(ending(&BatchStatus::Aborted), Ending::Stopped);
        assert_eq!(ending(&BatchStatus::Abandoned), Ending::Stopped);
        assert_eq!(ending(&BatchStatus::Processing), Ending::Pending);
        assert_eq!(ending(&BatchStatus::Queued), Ending::Pending);
        assert_eq!(ending(&BatchStatus::Retrying), Ending::Pending);
        assert_eq!(ending(&BatchStatus::Loaded), Ending::Pending);
        assert_eq!(ending(&BatchStatus::Staging), Ending::Pending);
        assert_eq!(ending(&BatchStatus::Stalled), Ending::Stalled);
        assert_eq!(ending(&BatchStatus::Loading), Ending::Pending);
    }

    #[test]
    fn a_failed_batch_fails_every_file_not_validated_clean() {
        let (fail, again) = attribute(vec![
            (1, Vetting::Unvetted),
            (2, Vetting::ValidatedClean),
            (3, Vetting::Unvetted),
        ]);
        assert_eq!(fail, vec![1, 3]);
        assert_eq!(again, vec![2]);
    }

    #[test]
    fn a_batch_is_bisected_until_one_file_is_left() {
        assert_eq!(halves(&[1]), None);
        assert_eq!(halves(&[]), None);
        assert_eq!(halves(&[1, 2]), Some([vec![1], vec![2]]));
        assert_eq!(halves(&[1, 2, 3, 4, 5]), Some([vec![1, 2], vec![3, 4, 5]]));
    }
}
