//! Entry points for the fuzz targets in `fuzz/` (and their regression tests): each drives one of
//! the emulator's parsers on bytes a stranger controls, the way a request or an uploaded file
//! reaches it, and checks what the parser promises.
//!
//! Nothing in the emulator calls this module; it adds no behaviour, only reaches the private
//! parsers (`upload`, `formats`, `validate`) from outside the crate. Schemas are
//! `batchdrop_xdm`'s, re-exported here so that the targets need only this crate.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde_json::Value;

pub use batchdrop_xdm::Schema;
use batchdrop_xdm::Source;

use crate::formats::{
    AcceptAll, FileOutcome, GoodWriter, InputFormat, Reader, RecordCheck, RowFailure,
};
use crate::validate::SchemaCheck;

/// `Content-Range` of a chunk: a parsed range is never backwards nor beyond its total.
pub fn content_range(value: &str) {
    if let Ok((start, end, total)) = crate::upload::parse_content_range(value) {
        assert!(start <= end, "{value:?} parsed backwards");
        if let Some(total) = total {
            assert!(end < total, "{value:?} ends beyond its total");
        }
    }
}

/// A client's file path: an accepted one has no empty, `.` or `..` segment and no control
/// character.
pub fn file_path(path: &str) {
    if crate::upload::validate_file_path(path).is_ok() {
        assert!(!path.starts_with('/') && !path.chars().any(char::is_control));
        assert!(
            path.split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        );
    }
}

/// A compiled schema for [`read_file`]; `None` when `json` is not one the emulator accepts.
pub fn schema(json: &Value) -> Option<Schema> {
    Schema::compile(json, Some("fuzz"), None, None).ok()
}

/// Which reader: the emulator picks it from the batch's `inputFormat`.
#[derive(Debug, Clone, Copy)]
pub enum Format {
    JsonLines,
    JsonArray,
    Csv {
        delimiter: u8,
        quote: u8,
        escape: Option<u8>,
        header: bool,
    },
    Parquet,
}

/// Writes `bytes` as a file in `dir`, reads it as `format` checking every record against
/// `schema` (with the good-rows copy when `keep_good`), and checks the outcome's counts.
pub fn read_file(
    dir: &Path,
    bytes: &[u8],
    format: Format,
    schema: Option<&Schema>,
    keep_good: bool,
) {
    let input = dir.join("input");
    std::fs::write(&input, bytes).expect("the fuzz input is written to its temp dir");
    let (fmt, source) = reader_format(format);
    let mut good = keep_good
        .then(|| GoodWriter::create(&dir.join("good"), &fmt))
        .transpose()
        .expect("the good-rows copy is created in the temp dir");
    let mut failures = 0u64;
    let mut on_failure = |f: RowFailure| {
        assert!(!f.issues.is_empty(), "a failed row says why");
        failures += 1;
    };
    let cancel = AtomicBool::new(false);
    // As processing does: without a schema every well-formed record passes, on the fast path.
    let mut accept = AcceptAll;
    let mut schema_check;
    let check: &mut dyn RecordCheck = match schema {
        Some(schema) => {
            schema_check = SchemaCheck::new(Some(schema), source, None);
            &mut schema_check
        }
        None => &mut accept,
    };
    let mut reader = Reader {
        check,
        cancel: &cancel,
        on_failure: &mut on_failure,
        good: good.as_mut(),
    };
    let out: FileOutcome = reader
        .read_file(&input, "fuzz-input", &fmt)
        .unwrap_or_else(|_| panic!("nothing cancelled the read"));
    assert!(out.failed <= out.records, "{out:?}");
    assert_eq!(out.failed, failures, "every failed row was reported");
    if let Some(good) = good {
        // A write error is the disk's; the fuzz input may only make rows fail.
        let _ = good.finish();
    }
}

/// The batch's `inputFormat` that picks `format`'s reader, and how its records convert.
fn reader_format(format: Format) -> (InputFormat, Source) {
    match format {
        Format::JsonLines | Format::JsonArray => (
            InputFormat {
                format: "json".into(),
                multi_line_json: matches!(format, Format::JsonArray),
                delimiter: b',',
                quote: b'"',
                escape: None,
                header: true,
            },
            Source::Json,
        ),
        Format::Csv {
            delimiter,
            quote,
            escape,
            header,
        } => (
            InputFormat {
                format: "csv".into(),
                multi_line_json: false,
                delimiter,
                quote,
                escape,
                header,
            },
            Source::Csv,
        ),
        Format::Parquet => (
            InputFormat {
                format: "parquet".into(),
                multi_line_json: false,
                delimiter: b',',
                quote: b'"',
                escape: None,
                header: true,
            },
            Source::Parquet,
        ),
    }
}
