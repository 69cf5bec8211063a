//! Reading Parquet files: the file's columns checked against the dataset's schema first, its
//! pages read one at a time within bounds (`parquet_pages`), rows decoded in batches. A
//! Parquet row as JSON (for the schema check, failed rows and the preview) is
//! `batchdrop_xdm::parquet`'s, shared with the daemon.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::parquet_pages::{CheckedFile, PageCheck, column_chunks_within};
use super::{FileOutcome, ReadStop, Reader, Record};
use crate::codes::Code;
use arrow_array::RecordBatch;
pub use batchdrop_xdm::parquet::row_json as parquet_row_json;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// Why a file is refused as a whole: (code, description).
type Refusal = (Code, String);

fn not_parquet(name: &str, detail: String) -> Refusal {
    (
        Code::NotParquet,
        format!("file '{name}' is not a valid Parquet file: {detail}"),
    )
}

fn too_big(name: &str, detail: String) -> Refusal {
    (
        Code::NotParquet,
        format!("Parquet file '{name}' cannot be read in bounded memory: {detail}"),
    )
}

impl Reader<'_> {
    pub(super) fn read_parquet(
        &mut self,
        path: &Path,
        name: &str,
        size: u64,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let (mut reader, pages) = match self.open_parquet(path, name, size)? {
            Ok(opened) => opened,
            Err(refusal) => {
                out.file_error = Some(refusal);
                return Ok(());
            }
        };
        let mut row = 0u64;
        loop {
            if self.cancelled() {
                return Err(ReadStop::Cancelled);
            }
            let batch = match unpanicked(|| reader.next()) {
                Ok(None) => break,
                Ok(Some(Ok(b))) => b,
                Ok(Some(Err(e))) => {
                    out.file_error = Some(pages.refusal().map_or_else(
                        || not_parquet(name, format!("corrupt data after row {row}: {e}")),
                        |why| too_big(name, why),
                    ));
                    return Ok(());
                }
                Err(panic) => {
                    out.file_error = Some(not_parquet(
                        name,
                        format!("its data after row {row} broke the reader: {panic}"),
                    ));
                    return Ok(());
                }
            };
            self.parquet_batch(out, name, &batch, &mut row);
        }
        Ok(())
    }

    /// Opens a Parquet file to read in bounded memory, or says why it is refused: not Parquet,
    /// columns the schema lacks, row groups or pages too large.
    fn open_parquet(
        &mut self,
        path: &Path,
        name: &str,
        size: u64,
    ) -> Result<Result<(ParquetRecordBatchReader, std::sync::Arc<PageCheck>), Refusal>, ReadStop>
    {
        let mut f = File::open(path)?;
        if size < 12 {
            return Ok(Err(not_parquet(
                name,
                format!("only {size} bytes (bad magic)"),
            )));
        }
        let mut magic = [0u8; 4];
        f.read_exact(&mut magic)?;
        let mut tail = [0u8; 4];
        f.seek(SeekFrom::End(-4))?;
        f.read_exact(&mut tail)?;
        if &magic != b"PAR1" || &tail != b"PAR1" {
            return Ok(Err(not_parquet(
                name,
                "bad magic: a Parquet file starts and ends with PAR1".into(),
            )));
        }
        let file = CheckedFile::new(f, size);
        let pages = file.check.clone();
        let builder = match unpanicked(|| ParquetRecordBatchReaderBuilder::try_new(file)) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                return Ok(Err(not_parquet(
                    name,
                    format!("cannot read its metadata: {e}"),
                )));
            }
            Err(panic) => {
                return Ok(Err(not_parquet(
                    name,
                    format!("its metadata broke the reader: {panic}"),
                )));
            }
        };
        if let Err(detail) = column_chunks_within(builder.metadata(), size) {
            return Ok(Err(not_parquet(name, detail)));
        }
        if let Err(refusal) = self.check.parquet_columns(builder.schema()) {
            return Ok(Err(refusal));
        }
        let batch_size = match pages.plan(builder.metadata()) {
            Ok(rows) => rows,
            Err(why) => return Ok(Err(too_big(name, why))),
        };
        Ok(match builder.with_batch_size(batch_size).build() {
            Ok(reader) => Ok((reader, pages)),
            Err(e) => Err(pages.refusal().map_or_else(
                || not_parquet(name, format!("cannot read it: {e}")),
                |why| too_big(name, why),
            )),
        })
    }

    /// Checks one batch of decoded rows (`row`: rows before it); good rows are copied in runs.
    fn parquet_batch(
        &mut self,
        out: &mut FileOutcome,
        name: &str,
        batch: &RecordBatch,
        row: &mut u64,
    ) {
        let mut run_start = 0usize;
        for i in 0..batch.num_rows() {
            *row += 1;
            let rec = Record::Parquet { batch, row: i };
            let ok = self.checked(out, name, *row, rec, || {
                parquet_row_json(batch, i).to_string()
            });
            if !ok {
                if let Some(g) = self.good.as_deref_mut() {
                    g.parquet_rows(batch, run_start, i - run_start);
                }
                run_start = i + 1;
            }
        }
        if let Some(g) = self.good.as_deref_mut() {
            g.parquet_rows(batch, run_start, batch.num_rows() - run_start);
        }
    }
}

/// Runs a step of the Parquet crate, turning its panic into an error. The crate still asserts
/// on some malformed files (found by `fuzz/`, target `parquet`), and a producer's file must
/// not take the batch's processing down.
fn unpanicked<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn parquet_pages_over_the_cap_are_refused_before_they_are_inflated() {
        use arrow_array::{ArrayRef, Int64Array, StringArray};
        use parquet::basic::{Compression, ZstdLevel};
        use parquet::file::properties::WriterProperties;
        let write = |value: String| {
            let batch = RecordBatch::try_from_iter([
                (
                    "id",
                    std::sync::Arc::new(Int64Array::from(vec![1])) as ArrayRef,
                ),
                (
                    "blob",
                    std::sync::Arc::new(StringArray::from(vec![value])) as ArrayRef,
                ),
            ])
            .unwrap();
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_dictionary_enabled(false)
                .build();
            let mut bytes = Vec::new();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
                    .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            bytes
        };
        let fmt = format(serde_json::json!({"format": "parquet"}));
        // 40 MiB of one letter: a few KiB compressed, a page of 40 MiB inflated.
        let bomb = write("b".repeat(40 * 1024 * 1024));
        assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
        let (out, _) = read(&bomb, &fmt);
        let (code, msg) = out.file_error.expect("refused");
        assert_eq!(code, Code::NotParquet);
        assert!(
            msg.contains("33554432") && msg.contains("smaller pages"),
            "{msg}"
        );
        // A page under the cap reads.
        let (out, _) = read(&write("s".repeat(1024 * 1024)), &fmt);
        assert!(out.file_error.is_none(), "{:?}", out.file_error);
        assert_eq!((out.records, out.failed), (1, 0));
    }

    /// Found by `fuzz/` (target `parquet`): a column chunk with a negative offset made the
    /// Parquet crate assert, and the batch's processing panicked.
    #[test]
    fn a_parquet_column_chunk_outside_the_file_is_refused_without_a_panic() {
        // A fuzz target's input: its first byte holds the target's options, the rest is the file.
        let input =
            include_bytes!("../../../../fuzz/corpus/parquet/regression-negative-column-offset");
        let (out, _) = read(
            &input[1..],
            &format(serde_json::json!({"format": "parquet"})),
        );
        let (code, description) = out.file_error.expect("the file is refused");
        assert_eq!(code, Code::NotParquet);
        assert!(description.contains("outside the file"), "{description}");
        assert_eq!(out.records, 0);
    }
}
