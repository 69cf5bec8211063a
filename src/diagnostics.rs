//! A batch's error diagnostics in the shape receipts and `status FILE` show: its error codes
//! with their record counts, a bounded sample of failing rows (code, message, the row's text)
//! and the names of the platform's diagnostics files, from which a user fetches the rest.
//!
//! It reads through the API client only (`meta?path=row_errors`) and writes nothing; the
//! poller stores what it returns with the batch's outcome. It must never attribute a row to an
//! input file: the platform does not say which file a row came from.

use serde::{Deserialize, Serialize};

use crate::api::{ApiClient, BatchError, MetaDir};

/// Failing rows kept per batch for its receipts.
pub const SAMPLE_ROWS: usize = 10;
/// Characters of a failing row's text kept in a sample.
const SAMPLE_RECORD_CHARS: usize = 500;

/// What the platform's diagnostics say about one batch (fields in the alphabetical order
/// receipts list their keys in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Each error code of the batch with the records it concerns (when the platform counts).
    pub error_codes: Vec<CodeCount>,
    /// The diagnostics files (`GET /data/foundation/export/batches/{batch}/meta?path=
    /// row_errors/{name}` downloads one; the platform keeps them 30 days).
    pub error_files: Vec<String>,
    /// The first failing rows, at most [`SAMPLE_ROWS`].
    pub failed_rows_sample: Vec<SampleRow>,
}

/// One error code of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCount {
    pub code: String,
    pub records: Option<u64>,
}

/// One failing row, as a diagnostics file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRow {
    pub code: String,
    pub message: String,
    /// The row's text (cut to 500 characters), when the platform kept it.
    pub record: Option<String>,
}

impl Diagnostics {
    /// Whether there is anything to show.
    pub fn is_empty(&self) -> bool {
        self.error_codes.is_empty()
            && self.failed_rows_sample.is_empty()
            && self.error_files.is_empty()
    }
}

/// The codes of a batch's Catalog errors, each once, with their record counts summed.
pub fn error_codes(errors: &[BatchError]) -> Vec<CodeCount> {
    let mut codes: Vec<CodeCount> = Vec::new();
    for e in errors {
        match codes.iter_mut().find(|c| c.code == e.code) {
            Some(c) => {
                c.records = match (c.records, e.record_count) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                }
            }
            None => codes.push(CodeCount {
                code: e.code.clone(),
                records: e.record_count,
            }),
        }
    }
    codes
}

/// Reads the diagnostics of platform batch `remote` (whose Catalog errors are `errors`). The
/// files are only a help: when they cannot be read, the codes are still returned and the
/// reason is logged.
pub async fn read(api: &ApiClient, remote: &str, errors: &[BatchError]) -> Diagnostics {
    let mut diagnostics = Diagnostics {
        error_codes: error_codes(errors),
        ..Diagnostics::default()
    };
    let files = match api.batch_meta_listing(remote, MetaDir::RowErrors).await {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(batch = %remote, "cannot list the error diagnostics of batch {remote}: {e}; the receipts carry its error codes only");
            return diagnostics;
        }
    };
    diagnostics.error_files = files.iter().map(|f| f.name.clone()).collect();
    for file in &files {
        if diagnostics.failed_rows_sample.len() >= SAMPLE_ROWS {
            break;
        }
        match api.batch_row_errors(remote, &file.name).await {
            Ok(rows) => {
                let room = SAMPLE_ROWS - diagnostics.failed_rows_sample.len();
                diagnostics
                    .failed_rows_sample
                    .extend(rows.into_iter().take(room).map(|row| {
                        let first = row.issues.first();
                        SampleRow {
                            code: first.map(|i| i.code.clone()).unwrap_or_default(),
                            message: row
                                .issues
                                .iter()
                                .map(|i| i.message.as_str())
                                .collect::<Vec<_>>()
                                .join("; "),
                            record: row
                                .record
                                .map(|r| r.chars().take(SAMPLE_RECORD_CHARS).collect()),
                        }
                    }));
            }
            Err(e) => {
                tracing::warn!(batch = %remote, "cannot read diagnostics file {} of batch {remote}: {e}", file.name)
            }
        }
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, records: Option<u64>) -> BatchError {
        BatchError {
            code: code.into(),
            description: "generic".into(),
            record_count: records,
        }
    }

    #[test]
    fn codes_are_listed_once_with_their_records_summed() {
        let codes = error_codes(&[
            error("INGEST-1212-400", None),
            error("INGEST-1542-400", Some(2)),
            error("INGEST-1542-400", Some(3)),
            error("INGEST-1401-400", Some(1)),
        ]);
        assert_eq!(
            codes,
            vec![
                CodeCount {
                    code: "INGEST-1212-400".into(),
                    records: None
                },
                CodeCount {
                    code: "INGEST-1542-400".into(),
                    records: Some(5)
                },
                CodeCount {
                    code: "INGEST-1401-400".into(),
                    records: Some(1)
                },
            ]
        );
        assert!(Diagnostics::default().is_empty());
    }
}
