//! The local check of a Parquet file, as the platform reads one: its columns must be fields
//! of the dataset's schema (a column the schema lacks refuses the whole file), then each row,
//! decoded a batch of rows at a time and turned into a JSON object by `batchdrop_xdm::parquet`
//! (the emulator's reading), is checked like any record, with the Parquet conversions. A file
//! that is not Parquet is refused with the platform's `200`.
//!
//! Parquet needs its footer first, so it is read from a `File` (not a stream): the caller
//! hashes it in a pass of its own. Memory is bounded by the rows of one batch and the pages
//! being decoded; a file whose column chunks declare more than [`MAX_CHUNK_BYTES`] is left to
//! the platform (`FileCheck::skipped`), and a malformed file that makes the Parquet crate
//! panic is refused, not the daemon brought down.
//!
//! It reads; it must not move or upload files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use batchdrop_xdm::Source;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use super::validate::{FileCheck, RowProblem, Validator};

/// The platform's code of a file that is not Parquet (or cannot be read as Parquet).
pub const NOT_PARQUET: &str = "200";
/// Column chunks declaring more (uncompressed) are not checked locally.
pub const MAX_CHUNK_BYTES: i64 = 1 << 30;
/// Rows decoded at a time.
const BATCH_ROWS: usize = 1024;

impl Validator {
    /// Checks every row of the Parquet file `file`.
    pub fn check_parquet(&self, mut file: File) -> io::Result<FileCheck> {
        let mut out = FileCheck::default();
        let size = file.metadata()?.len();
        let mut magic = [0u8; 4];
        let mut tail = [0u8; 4];
        let framed = size >= 12 && {
            // The caller may have read it already (to hash it).
            file.seek(SeekFrom::Start(0))?;
            file.read_exact(&mut magic)?;
            file.seek(SeekFrom::End(-4))?;
            file.read_exact(&mut tail)?;
            file.seek(SeekFrom::Start(0))?;
            &magic == b"PAR1" && &tail == b"PAR1"
        };
        if !framed {
            refuse(
                &mut out,
                NOT_PARQUET,
                "the file is not a valid Parquet file (bad magic: a Parquet file starts and ends with PAR1)".into(),
            );
            return Ok(out);
        }
        let builder = match unpanicked(|| ParquetRecordBatchReaderBuilder::try_new(file)) {
            Ok(Ok(builder)) => builder,
            Ok(Err(e)) => {
                refuse(
                    &mut out,
                    NOT_PARQUET,
                    format!("cannot read its Parquet metadata: {e}"),
                );
                return Ok(out);
            }
            Err(panic) => {
                refuse(
                    &mut out,
                    NOT_PARQUET,
                    format!("its Parquet metadata broke the reader: {panic}"),
                );
                return Ok(out);
            }
        };
        let largest = builder
            .metadata()
            .row_groups()
            .iter()
            .flat_map(|group| group.columns())
            .map(|column| column.uncompressed_size())
            .max()
            .unwrap_or(0);
        if largest > MAX_CHUNK_BYTES {
            out.skipped = Some(format!(
                "a column chunk of {largest} bytes (uncompressed) is over the {MAX_CHUNK_BYTES} bytes checked locally; the platform checks it"
            ));
            return Ok(out);
        }
        if let Err((code, message)) =
            batchdrop_xdm::parquet::check_columns(self.schema(), builder.schema())
        {
            refuse(&mut out, code.code(), message);
            return Ok(out);
        }
        let mut reader = match builder.with_batch_size(BATCH_ROWS).build() {
            Ok(reader) => reader,
            Err(e) => {
                refuse(
                    &mut out,
                    NOT_PARQUET,
                    format!("cannot read it as Parquet: {e}"),
                );
                return Ok(out);
            }
        };
        let mut row = 0u64;
        loop {
            let batch = match unpanicked(|| reader.next()) {
                Ok(None) => return Ok(out),
                Ok(Some(Ok(batch))) => batch,
                Ok(Some(Err(e))) => {
                    refuse(
                        &mut out,
                        NOT_PARQUET,
                        format!("corrupt Parquet data after row {row}: {e}"),
                    );
                    return Ok(out);
                }
                Err(panic) => {
                    refuse(
                        &mut out,
                        NOT_PARQUET,
                        format!("its Parquet data after row {row} broke the reader: {panic}"),
                    );
                    return Ok(out);
                }
            };
            for i in 0..batch.num_rows() {
                row += 1;
                if let Value::Object(record) = batchdrop_xdm::parquet::row_json(&batch, i) {
                    self.record(&mut out, row, &record, Source::Parquet);
                }
            }
        }
    }
}

/// The file as a whole is refused (row 0: no row of it is taken).
fn refuse(out: &mut FileCheck, code: &str, message: String) {
    out.bad_rows += 1;
    out.problems.push(RowProblem {
        row: 0,
        code: code.to_owned(),
        field: None,
        message,
    });
}

/// Runs a step of the Parquet crate, turning a panic (it still asserts on some malformed
/// files) into its message.
fn unpanicked<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        let text = panic.downcast_ref::<&str>().map(|s| (*s).to_owned());
        text.or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned())
    })
}
