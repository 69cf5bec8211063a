//! What a batch's end on the platform means for it and for each of its files: the verdict a
//! Catalog status gives, which of the batch's errors name which file, which files a failed
//! batch blames (the others travel again), and each file's own record count.
//!
//! Pure decisions, no I/O: the poller asks the platform and records what this module decides;
//! receipts show a file's errors as it picks them. It must not import the stages.

use crate::api::{BatchError, BatchStatus, DataSetFile};
use crate::store::{FileRow, Verdict};

/// What a batch's status on the platform says about its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It ended: success (also once inactive or deleted: its data went in first) or failure.
    Ended(Verdict),
    /// It was aborted or abandoned on the platform before it finished: it cannot succeed.
    Stopped,
    /// Still on its way: ask again later.
    Pending,
}

pub fn ending(status: &BatchStatus) -> Ending {
    match status {
        BatchStatus::Success | BatchStatus::Inactive | BatchStatus::Deleted => {
            Ending::Ended(Verdict::Success)
        }
        BatchStatus::Failed => Ending::Ended(Verdict::Failed),
        BatchStatus::Aborted | BatchStatus::Abandoned => Ending::Stopped,
        _ => Ending::Pending,
    }
}

/// The files of a failed batch, split into those its errors name (they fail) and the others.
/// A batch fails whole for one bad file: when the errors name culprits, only they need fail,
/// and the others (returned second) can travel again in a new batch. Each error is read
/// against every name of the batch at once (see [`files_named`]).
pub fn blame<'a>(
    files: &'a [FileRow],
    errors: &[BatchError],
) -> (Vec<&'a FileRow>, Vec<&'a FileRow>) {
    let names: Vec<&str> = files.iter().map(|f| f.rel_path.as_str()).collect();
    let culprits: Vec<&str> = errors
        .iter()
        .flat_map(|e| files_named(&e.description, &names))
        .collect();
    files
        .iter()
        .partition(|f| culprits.contains(&f.rel_path.as_str()))
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
        assert_eq!(ending(&BatchStatus::Loading), Ending::Pending);
    }

    #[test]
    fn a_files_errors_are_those_naming_it_or_all_when_none_does() {
        let error = |description: &str| BatchError {
            code: "X".into(),
            description: description.into(),
            record_count: None,
        };
        let errors = [error("file 'b.json': bad row"), error("batch-wide")];
        let as_json: serde_json::Value = errors
            .iter()
            .map(|e| serde_json::json!({ "code": e.code, "description": e.description }))
            .collect();
        let mine = errors_about(&as_json, "b.json");
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0]["description"], "file 'b.json': bad row");
        assert_eq!(errors_about(&as_json, "a.json").len(), 2, "none names it");
        assert!(errors_about(&serde_json::Value::Null, "a.json").is_empty());
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
