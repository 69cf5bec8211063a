//! The copy of a file's good records, in the file's own format (what Data Access serves of a
//! partially ingested file). The readers feed it; it must not judge records.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use serde_json::Value;

use super::InputFormat;

/// A copy of a file's good records in the file's own format: JSON Lines keep their bytes, a
/// JSON array is written again element by element, CSV rows are written again with the same
/// options, Parquet rows are written again with the file's columns.
pub struct GoodWriter {
    path: PathBuf,
    out: GoodOut,
    error: Option<std::io::Error>,
}

enum GoodOut {
    Lines(BufWriter<File>),
    JsonArray {
        w: BufWriter<File>,
        first: bool,
    },
    Csv(Box<csv::Writer<BufWriter<File>>>),
    Parquet {
        file: Option<File>,
        writer: Option<Box<parquet::arrow::ArrowWriter<File>>>,
        schema: Option<arrow_schema::SchemaRef>,
    },
}

impl GoodWriter {
    pub fn create(path: &Path, fmt: &InputFormat) -> std::io::Result<GoodWriter> {
        let file = File::create(path)?;
        let out = match fmt.format.as_str() {
            "csv" => {
                let mut b = csv::WriterBuilder::new();
                b.delimiter(fmt.delimiter).quote(fmt.quote).flexible(true);
                if let Some(e) = fmt.escape {
                    b.escape(e).double_quote(false);
                }
                GoodOut::Csv(Box::new(b.from_writer(BufWriter::new(file))))
            }
            "parquet" => GoodOut::Parquet {
                file: Some(file),
                writer: None,
                schema: None,
            },
            _ if fmt.multi_line_json => {
                let mut w = BufWriter::with_capacity(1 << 20, file);
                w.write_all(b"[")?;
                GoodOut::JsonArray { w, first: true }
            }
            _ => GoodOut::Lines(BufWriter::with_capacity(1 << 20, file)),
        };
        Ok(GoodWriter {
            path: path.to_path_buf(),
            out,
            error: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn keep(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    pub(super) fn line(&mut self, bytes: &[u8]) {
        if let GoodOut::Lines(w) = &mut self.out {
            let r = w.write_all(bytes).and_then(|()| {
                if bytes.ends_with(b"\n") {
                    Ok(())
                } else {
                    w.write_all(b"\n")
                }
            });
            self.keep(r);
        }
    }

    pub(super) fn value(&mut self, v: &Value) {
        if let GoodOut::JsonArray { w, first } = &mut self.out {
            let sep: &[u8] = if *first { b"\n" } else { b",\n" };
            *first = false;
            let r = w
                .write_all(sep)
                .and_then(|()| serde_json::to_writer(&mut *w, v).map_err(std::io::Error::other));
            self.keep(r);
        }
    }

    pub(super) fn csv_record(&mut self, rec: &csv::StringRecord) {
        if let GoodOut::Csv(w) = &mut self.out {
            let r = w.write_record(rec).map_err(std::io::Error::other);
            self.keep(r);
        }
    }

    pub(super) fn parquet_rows(&mut self, batch: &RecordBatch, start: usize, len: usize) {
        if let GoodOut::Parquet {
            file,
            writer,
            schema,
        } = &mut self.out
        {
            if schema.is_none() {
                *schema = Some(batch.schema());
            }
            if len == 0 {
                return;
            }
            let r = (|| {
                if writer.is_none()
                    && let Some(f) = file.take()
                {
                    *writer = Some(Box::new(
                        parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None)
                            .map_err(std::io::Error::other)?,
                    ));
                }
                if let Some(w) = writer {
                    w.write(&batch.slice(start, len))
                        .map_err(std::io::Error::other)?;
                }
                Ok(())
            })();
            self.keep(r);
        }
    }

    /// Ends the file; returns its size.
    pub fn finish(self) -> std::io::Result<u64> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.out {
            GoodOut::Lines(mut w) => w.flush()?,
            GoodOut::JsonArray { mut w, .. } => {
                w.write_all(b"\n]\n")?;
                w.flush()?;
            }
            GoodOut::Csv(mut w) => w.flush()?,
            GoodOut::Parquet {
                file,
                writer,
                schema,
            } => match (writer, file, schema) {
                (Some(w), _, _) => {
                    w.close().map_err(std::io::Error::other)?;
                }
                (None, Some(f), Some(schema)) => {
                    // No good row: a valid Parquet file without rows.
                    parquet::arrow::ArrowWriter::try_new(f, schema, None)
                        .and_then(|w| w.close())
                        .map_err(std::io::Error::other)?;
                }
                _ => {}
            },
        }
        Ok(std::fs::metadata(&self.path)?.len())
    }
}
