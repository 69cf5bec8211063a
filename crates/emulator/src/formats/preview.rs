//! The batch preview (E6): the first records of a batch's files, as JSON objects, read by the
//! same readers as processing (failed rows are skipped).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::parquet::parquet_row_json;
use super::{InputFormat, Reader, Record, RecordCheck, RowFailure, RowIssue};

/// The first `limit` records of the files, as JSON objects.
pub fn preview_rows(files: &[PathBuf], fmt: &InputFormat, limit: usize) -> Vec<Value> {
    let stop = AtomicBool::new(false);
    let mut collect = Collect {
        rows: Vec::new(),
        limit,
        stop: &stop,
    };
    for f in files {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut ignore = |_f: RowFailure| {};
        let mut reader = Reader {
            check: &mut collect,
            cancel: &stop,
            on_failure: &mut ignore,
            good: None,
        };
        let _ = reader.read_file(f, "preview", fmt);
    }
    collect.rows
}

/// Collects records as JSON objects for the preview, stopping after `limit`.
struct Collect<'a> {
    rows: Vec<Value>,
    limit: usize,
    stop: &'a AtomicBool,
}

impl RecordCheck for Collect<'_> {
    fn check(&mut self, record: Record<'_>) -> Result<(), Vec<RowIssue>> {
        if self.rows.len() >= self.limit {
            self.stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        self.rows.push(record_to_json(&record));
        Ok(())
    }
}

/// A record as a JSON object (CSV cells as strings, keyed by header).
fn record_to_json(record: &Record<'_>) -> Value {
    match record {
        Record::Json(v) => (*v).clone(),
        Record::Csv { headers, fields } => Value::Object(
            headers
                .iter()
                .zip(fields.iter())
                .map(|(h, f)| (h.clone(), Value::String(f.to_owned())))
                .collect(),
        ),
        Record::Parquet { batch, row } => parquet_row_json(batch, *row),
    }
}
