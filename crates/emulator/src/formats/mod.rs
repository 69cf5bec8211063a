//! Reading ingested files, streaming, in constant memory: JSON Lines, one multi-line JSON array
//! (`isMultiLineJson`), CSV with a header row, Parquet (one module each).
//!
//! Each record goes through a [`RecordCheck`] (schema validation, see `validate`), each failure
//! is reported to the caller per record, and the good records can be copied, in the file's own
//! format, to a [`GoodWriter`] (`good`: what Data Access serves of a partially ingested file).
//! `limits` bounds what one record may make a reader hold; `preview` reads the first records
//! of a batch for E6; `parts` cuts a big JSON Lines file into parts read on their own.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use serde_json::Value;

use crate::codes::Code;
pub(crate) use batchdrop_xdm::json_kind;

mod csv;
mod good;
mod json;
mod limits;
mod parquet;
mod parquet_pages;
mod parts;
mod preview;

pub use good::GoodWriter;
pub use parquet::parquet_row_json;
pub use parts::{PartOutcome, line_parts, renumber, splits};
pub use preview::preview_rows;

/// The largest record read: a JSON Lines line, one element (or object) of a multi-line JSON
/// file, one CSV row. The platform's own records are far smaller (about 100 KB for Profile);
/// a bigger one is refused as one failed row, without ever being held in memory whole.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// The largest Parquet page read, compressed or not: pages are read one at a time, so this
/// bounds what a Parquet file can make the reader hold (writers use about 1 MiB).
pub const MAX_PARQUET_PAGE_BYTES: u64 = 32 * 1024 * 1024;

/// One record as read from a file.
pub enum Record<'a> {
    Json(&'a Value),
    Csv {
        headers: &'a [String],
        fields: &'a ::csv::StringRecord,
    },
    Parquet {
        batch: &'a RecordBatch,
        row: usize,
    },
}

/// One reason why one record is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIssue {
    pub code: Code,
    pub message: String,
    /// JSON pointer of the field at fault (none for a row that cannot be parsed).
    pub pointer: Option<String>,
}

impl RowIssue {
    pub fn unparsable(message: String) -> RowIssue {
        RowIssue {
            code: Code::UnparsableRow,
            message,
            pointer: None,
        }
    }
}

/// A per-record check (schema validation).
pub trait RecordCheck: Send {
    /// Checks one well-formed record; `Err` lists its problems (at least one).
    fn check(&mut self, record: Record<'_>) -> Result<(), Vec<RowIssue>>;

    /// Whether `check` looks at the records. When it does not, JSON rows are still fully parsed
    /// and checked to be objects, but without building a `Value` (about twice as fast).
    fn inspects_records(&self) -> bool {
        true
    }

    /// Called once per Parquet file with its columns, before its rows: `Err((code,
    /// description))` refuses the whole file (columns the schema does not have).
    fn parquet_columns(&mut self, _schema: &arrow_schema::Schema) -> Result<(), (Code, String)> {
        Ok(())
    }
}

/// Accepts every well-formed record.
pub struct AcceptAll;

impl RecordCheck for AcceptAll {
    fn check(&mut self, _record: Record<'_>) -> Result<(), Vec<RowIssue>> {
        Ok(())
    }
    fn inspects_records(&self) -> bool {
        false
    }
}

/// How to read the files of a batch (from its `inputFormat`).
#[derive(Debug, Clone)]
pub struct InputFormat {
    pub format: String,
    pub multi_line_json: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub header: bool,
}

impl InputFormat {
    pub fn from_json(v: &Value) -> InputFormat {
        let ch = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .and_then(|s| s.bytes().next())
        };
        InputFormat {
            format: v
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or("json")
                .to_ascii_lowercase(),
            multi_line_json: v
                .get("isMultiLineJson")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            delimiter: ch("delimiter").unwrap_or(b','),
            quote: ch("quote").unwrap_or(b'"'),
            escape: ch("escape"),
            header: v.get("header").and_then(Value::as_bool).unwrap_or(true),
        }
    }
}

/// A record that failed.
#[derive(Debug, Clone)]
pub struct RowFailure {
    /// 1-based row (line for JSON Lines and CSV, element for a JSON array, row for Parquet).
    pub row: Option<u64>,
    /// Its problems (at least one), each message prefixed with the file and row.
    pub issues: Vec<RowIssue>,
    /// The raw record, cut to a few hundred bytes.
    pub raw: Option<String>,
}

impl RowFailure {
    /// The first problem (what a one-line summary shows).
    pub fn first(&self) -> &RowIssue {
        &self.issues[0]
    }
}

/// What reading one file gave.
#[derive(Debug, Default)]
pub struct FileOutcome {
    /// Records read (good and bad).
    pub records: u64,
    /// Records refused.
    pub failed: u64,
    /// The file as a whole is unusable: (code, description).
    pub file_error: Option<(Code, String)>,
}

impl FileOutcome {
    pub fn ok_records(&self) -> u64 {
        self.records - self.failed
    }
}

#[derive(Debug)]
pub struct Cancelled;

pub struct Reader<'a> {
    pub check: &'a mut dyn RecordCheck,
    pub cancel: &'a AtomicBool,
    pub on_failure: &'a mut dyn FnMut(RowFailure),
    /// Where the good records go, if anywhere.
    pub good: Option<&'a mut GoodWriter>,
}

/// How much of a failed row's raw text is kept.
const RAW_MAX: usize = 512;

fn cut(s: &str) -> String {
    if s.len() <= RAW_MAX {
        return s.to_owned();
    }
    let mut end = RAW_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Reader<'_> {
    /// Reads one file. `Err(Cancelled)` when the emulator is shutting down.
    pub fn read_file(
        &mut self,
        path: &Path,
        display_name: &str,
        fmt: &InputFormat,
    ) -> Result<FileOutcome, Cancelled> {
        let mut out = FileOutcome::default();
        let size = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) => {
                out.file_error = Some(unreadable(display_name, &e));
                return Ok(out);
            }
        };
        if size == 0 {
            out.file_error = Some((
                Code::EmptyFile,
                format!("Dataset file is empty: file '{display_name}' has 0 bytes"),
            ));
            return Ok(out);
        }
        let result = match fmt.format.as_str() {
            "csv" => self.read_csv(path, display_name, fmt, &mut out),
            "parquet" => self.read_parquet(path, display_name, size, &mut out),
            _ if fmt.multi_line_json => self.read_json_multi(path, display_name, &mut out),
            _ => self.read_json_lines(path, display_name, &mut out),
        };
        match result {
            Ok(()) => Ok(out),
            Err(ReadStop::Cancelled) => Err(Cancelled),
            Err(ReadStop::Io(e)) => {
                out.file_error = Some(unreadable(display_name, &e));
                Ok(out)
            }
        }
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// A row that cannot be parsed.
    pub(super) fn fail(
        &mut self,
        out: &mut FileOutcome,
        row: Option<u64>,
        message: String,
        raw: Option<String>,
    ) {
        self.fail_with(out, row, vec![RowIssue::unparsable(message)], raw);
    }

    fn fail_with(
        &mut self,
        out: &mut FileOutcome,
        row: Option<u64>,
        issues: Vec<RowIssue>,
        raw: Option<String>,
    ) {
        out.failed += 1;
        (self.on_failure)(RowFailure { row, issues, raw });
    }

    /// Checks a parsed record; a refused one is reported with its file and row.
    pub(super) fn checked(
        &mut self,
        out: &mut FileOutcome,
        name: &str,
        row: u64,
        rec: Record<'_>,
        raw: impl FnOnce() -> String,
    ) -> bool {
        out.records += 1;
        match self.check.check(rec) {
            Ok(()) => true,
            Err(mut issues) => {
                for i in &mut issues {
                    i.message = format!("file '{name}' row {row}: {}", i.message);
                }
                self.fail_with(out, Some(row), issues, Some(cut(&raw())));
                false
            }
        }
    }
}

/// A file that cannot be read (as `FileOutcome::file_error`).
fn unreadable(display_name: &str, e: &std::io::Error) -> (Code, String) {
    (
        Code::UnparsableRow,
        format!("file '{display_name}' cannot be read: {e}"),
    )
}

/// Why a reader stopped before the end of a file.
enum ReadStop {
    Cancelled,
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadStop {
    fn from(e: std::io::Error) -> Self {
        ReadStop::Io(e)
    }
}

/// What the readers' tests share.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;

    pub const BIG: usize = MAX_RECORD_BYTES as usize + 2 * 1024 * 1024;

    /// Reads `content` as `fmt` with no schema: (outcome, failures).
    pub fn read(content: &[u8], fmt: &InputFormat) -> (FileOutcome, Vec<RowFailure>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, content).unwrap();
        let cancel = AtomicBool::new(false);
        let mut failures = Vec::new();
        let mut on_failure = |f: RowFailure| failures.push(f);
        let mut check = AcceptAll;
        let out = Reader {
            check: &mut check,
            cancel: &cancel,
            on_failure: &mut on_failure,
            good: None,
        }
        .read_file(&path, "f", fmt)
        .ok()
        .unwrap();
        (out, failures)
    }

    pub fn format(v: Value) -> InputFormat {
        InputFormat::from_json(&v)
    }

    pub fn huge_object() -> Vec<u8> {
        let mut v = b"{\"a\": \"".to_vec();
        v.resize(BIG, b'x');
        v.extend_from_slice(b"\"}");
        v
    }
}
