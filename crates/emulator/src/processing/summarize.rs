//! The third step of processing a batch: what its files' results make of it, as the platform
//! reports it: success or failure (partial ingestion lets a share of records fail), metrics,
//! and the error entries (one per code and field with diagnostics on, one summary without).
//! Pure: no I/O, no clock.

use std::io;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::codes::Code;
use crate::store::BatchStatus;

use super::parse::FileResult;
use super::plan::{BatchError, Plan};

/// What processing concluded about a batch.
#[derive(Debug)]
pub(super) struct Outcome {
    pub status: BatchStatus,
    pub metrics: Value,
    pub errors: Vec<BatchError>,
    /// Records read, and refused.
    pub records: u64,
    pub failed: u64,
    /// The upsert rows to merge into the current view when the batch succeeded (the file is
    /// removed either way).
    pub capture: Option<PathBuf>,
    /// The good-rows copies Data Access serves: those of files of a successful batch that lost
    /// rows (file id, size).
    pub served: Vec<(String, u64)>,
    /// The good-rows copies to remove (all the others).
    pub unserved: Vec<PathBuf>,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status == BatchStatus::Success
    }
}

/// The outcome of batch `id` planned as `plan`, whose files gave `results` (and the upsert
/// rows `captured`); `forced`: fault injection fails it whatever its content.
pub(super) fn summarize(
    id: &str,
    plan: &Plan,
    results: &[FileResult],
    captured: Option<io::Result<PathBuf>>,
    forced: bool,
) -> Outcome {
    let totals = Totals::of(results);
    let mut errors = plan.refusals.clone();
    errors.extend(file_errors(id, results));
    errors.extend(storage_errors(results));
    let capture = match captured {
        Some(Err(e)) => {
            errors.push(capture_error(id, &e));
            None
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let whole_batch_ok = errors.is_empty();
    let partial_ok = whole_batch_ok
        && totals.failed > 0
        && plan
            .partial_pct
            .is_some_and(|p| (totals.failed as f64) * 100.0 <= p * totals.records as f64);
    if totals.failed > 0 {
        errors.extend(row_errors(plan, results, partial_ok, &totals));
    }
    if forced {
        errors.push(BatchError::new(
            Code::Fault,
            format!("batch {id} failed by fault injection (faults.batch_failure_probability or fail_first_batches); retry with a new batch"),
            Some(0),
        ));
    }
    let success = !forced && whole_batch_ok && (totals.failed == 0 || partial_ok);
    let (served, unserved) = good_copies(results, success);
    Outcome {
        status: if success {
            BatchStatus::Success
        } else {
            BatchStatus::Failed
        },
        metrics: totals.metrics(results.len(), success),
        errors,
        records: totals.records,
        failed: totals.failed,
        capture,
        served,
        unserved,
    }
}

/// What a batch's files hold, summed.
struct Totals {
    bytes: u64,
    records: u64,
    ok: u64,
    failed: u64,
}

impl Totals {
    fn of(results: &[FileResult]) -> Totals {
        let mut totals = Totals {
            bytes: 0,
            records: 0,
            ok: 0,
            failed: 0,
        };
        for r in results {
            totals.bytes += r.size;
            totals.records += r.records;
            totals.ok += r.ok;
            totals.failed += r.failed;
        }
        totals
    }

    /// The batch's `metrics` (a failed batch outputs no record).
    fn metrics(&self, files: usize, success: bool) -> Value {
        json!({
            "inputFileCount": files,
            "inputByteSize": self.bytes,
            "inputRecordCount": self.records,
            "outputRecordCount": if success { self.ok } else { 0 },
            "failedRecordCount": self.failed,
        })
    }
}

/// Files that could not be read as a whole, or no file at all.
fn file_errors(id: &str, results: &[FileResult]) -> Vec<BatchError> {
    let mut errors: Vec<BatchError> = results
        .iter()
        .filter_map(|r| r.file_error.as_ref())
        .map(|(code, detail)| {
            BatchError::new(*code, code.description().to_owned(), Some(0))
                .with_details(vec![detail.clone()])
        })
        .collect();
    if results.is_empty() {
        errors.push(BatchError::new(
            Code::NoReadableFiles,
            format!("batch {id} has no readable files"),
            Some(0),
        ));
    }
    errors
}

/// Storage trouble with the upsert rows fails the batch (it would merge the wrong rows
/// otherwise).
fn capture_error(id: &str, e: &io::Error) -> BatchError {
    BatchError::new(
        Code::Storage,
        format!(
            "the emulator could not store the upsert rows of batch {id}: {e}; free disk space and send the batch again"
        ),
        Some(0),
    )
}

/// Storage trouble with the good-rows copies fails the batch (it would serve the wrong rows
/// otherwise).
fn storage_errors(results: &[FileResult]) -> Vec<BatchError> {
    results
        .iter()
        .filter_map(|r| match &r.good {
            Some((path, Err(e))) => Some(BatchError::new(
                Code::Storage,
                format!(
                    "the emulator could not store the good rows of file '{}' at {}: {e}; free disk space and send the batch again",
                    r.path,
                    path.display()
                ),
                Some(0),
            )),
            _ => None,
        })
        .collect()
}

/// The entries about refused records, as generic as the platform's: without diagnostics its
/// one summary; with them a partial-ingestion summary (when it applies) and one entry per code
/// with its record count. Which file, row and field stay in `emulatorDetails` (and in the
/// batch's `row_errors` files).
fn row_errors(
    plan: &Plan,
    results: &[FileResult],
    partial_ok: bool,
    totals: &Totals,
) -> Vec<BatchError> {
    let (ok, failed) = (totals.ok, totals.failed);
    if !plan.diagnostics {
        let seen: Vec<String> = results
            .iter()
            .filter(|r| r.failed > 0)
            .take(10)
            .filter_map(|r| {
                r.groups
                    .first()
                    .map(|g| format!("{} ({})", g.first, g.code))
            })
            .collect();
        let summary = Code::ErrorsNoDiagnostics;
        return vec![
            BatchError::new(summary, summary.description().to_owned(), None).with_details(seen),
        ];
    }
    let mut errors = Vec::new();
    if partial_ok {
        errors.push(BatchError::new(
            Code::PartialSummary,
            format!(
                "Encountered {failed} errors in the data. Successfully ingested {ok} rows. Please review the associated diagnostic files for more details."
            ),
            None,
        ));
    }
    let mut per_code: Vec<BatchError> = Vec::new();
    for r in results {
        for g in &r.groups {
            let field = match &g.pointer {
                Some(p) if !p.is_empty() => format!(", field {p}"),
                Some(_) => String::new(),
                None if g.code == Code::UnparsableRow => String::new(),
                None => ", other fields".into(),
            };
            let detail = format!(
                "file '{}'{field}: {} record(s); first: {}",
                r.path, g.count, g.first
            );
            match per_code.iter_mut().find(|e| e.code == g.code) {
                Some(entry) => {
                    entry.record_count = Some(entry.record_count.unwrap_or(0) + g.count);
                    entry.details.push(detail);
                }
                None => per_code.push(
                    BatchError::new(g.code, g.code.row_description().to_owned(), Some(g.count))
                        .with_details(vec![detail]),
                ),
            }
        }
    }
    errors.extend(per_code);
    errors
}

/// Which good-rows copies are served (files of a successful batch that lost rows) and which
/// are removed.
fn good_copies(results: &[FileResult], success: bool) -> (Vec<(String, u64)>, Vec<PathBuf>) {
    let mut served = Vec::new();
    let mut unserved = Vec::new();
    for r in results {
        if let Some((path, size)) = &r.good {
            match size {
                Ok(n) if success && r.failed > 0 => served.push((r.file_id.clone(), *n)),
                _ => unserved.push(path.clone()),
            }
        }
    }
    (served, unserved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::InputFormat;
    use crate::processing::parse::Group;
    use batchdrop_xdm::IssueCode;

    fn plan(diagnostics: bool, partial_pct: Option<f64>) -> Plan {
        Plan {
            fmt: InputFormat::from_json(&json!({"format": "json"})),
            diagnostics,
            partial_pct,
            schema: None,
            upsert: None,
            refusals: Vec::new(),
        }
    }

    /// A file of `records` records, `failed` of them refused at field /age.
    fn file(records: u64, failed: u64, good: Option<u64>) -> FileResult {
        FileResult {
            file_id: "f1".into(),
            path: "p.json".into(),
            size: 100,
            records,
            ok: records - failed,
            failed,
            file_error: None,
            failures: Vec::new(),
            groups: (failed > 0)
                .then(|| Group {
                    code: IssueCode::Type.into(),
                    pointer: Some("/age".into()),
                    count: failed,
                    first: "file 'p.json' row 2: /age: expected an integer".into(),
                })
                .into_iter()
                .collect(),
            good: good.map(|n| (PathBuf::from("p.good"), Ok(n))),
        }
    }

    #[test]
    fn a_clean_batch_succeeds_with_its_metrics() {
        let o = summarize("b", &plan(false, None), &[file(10, 0, None)], None, false);
        assert!(o.succeeded());
        assert!(o.errors.is_empty());
        assert_eq!(o.metrics["inputRecordCount"], 10);
        assert_eq!(o.metrics["outputRecordCount"], 10);
        assert_eq!(o.metrics["inputByteSize"], 100);
    }

    #[test]
    fn failed_records_fail_the_batch_unless_within_the_partial_share() {
        let o = summarize("b", &plan(false, None), &[file(10, 1, None)], None, false);
        assert_eq!(o.status, BatchStatus::Failed);
        assert_eq!(o.metrics["outputRecordCount"], 0);
        assert_eq!(o.errors.len(), 1);
        assert_eq!(o.errors[0].code, Code::ErrorsNoDiagnostics);
        assert!(o.errors[0].description.ends_with("on failure types"));
        assert!(!o.errors[0].description.contains("p.json"));
        assert!(o.errors[0].details[0].contains("/age: expected an integer (INGEST-1542-400)"));
        assert_eq!(o.errors[0].to_json().get("recordCount"), None);

        let o = summarize(
            "b",
            &plan(true, Some(10.0)),
            &[file(10, 1, Some(90))],
            None,
            false,
        );
        assert!(o.succeeded());
        assert_eq!(o.metrics["outputRecordCount"], 9);
        let codes: Vec<Code> = o.errors.iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            vec![Code::PartialSummary, Code::Record(IssueCode::Type)]
        );
        assert!(!o.errors[1].description.contains("p.json"));
        assert_eq!(o.errors[1].record_count, Some(1));
        assert!(o.errors[1].details[0].contains("file 'p.json', field /age: 1 record(s)"));
        assert_eq!(o.served, vec![("f1".to_owned(), 90)]);
        assert!(o.unserved.is_empty());

        // Over the share: failed, and the copy is not served.
        let o = summarize(
            "b",
            &plan(true, Some(5.0)),
            &[file(10, 1, Some(90))],
            None,
            false,
        );
        assert_eq!(o.status, BatchStatus::Failed);
        assert_eq!(o.served, vec![]);
        assert_eq!(o.unserved, vec![PathBuf::from("p.good")]);
    }

    #[test]
    fn no_files_storage_trouble_and_faults_fail_the_batch() {
        let o = summarize("b", &plan(false, None), &[], None, false);
        assert_eq!(o.errors[0].code, Code::NoReadableFiles);
        assert_eq!(o.status, BatchStatus::Failed);

        let mut broken = file(10, 0, None);
        broken.good = Some((PathBuf::from("p.good"), Err(io::Error::other("disk full"))));
        let o = summarize("b", &plan(false, Some(50.0)), &[broken], None, false);
        assert_eq!(o.errors[0].code, Code::Storage);
        assert!(o.errors[0].description.contains("disk full"));
        assert_eq!(o.status, BatchStatus::Failed);

        let o = summarize(
            "b",
            &plan(false, None),
            &[file(1, 0, None)],
            Some(Err(io::Error::other("gone"))),
            false,
        );
        assert_eq!(o.errors[0].code, Code::Storage);
        assert_eq!(o.capture, None);

        let o = summarize(
            "b",
            &plan(false, None),
            &[file(1, 0, None)],
            Some(Ok("c".into())),
            true,
        );
        assert_eq!(o.errors[0].code, Code::Fault);
        assert_eq!(o.status, BatchStatus::Failed);
        assert_eq!(o.capture, Some(PathBuf::from("c")));
    }
}
