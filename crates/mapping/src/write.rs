//! Writing mapped records: JSON Lines (one record per line, as it comes), or Parquet (columns
//! fixed once from the schema and the first rows, then written in batches of a few thousand
//! rows, with row groups cut at a bounded size so that memory stays flat).
//!
//! The Parquet file is written with Snappy compression (the platform's and Spark's default).
//! Rows that do not fit the fixed columns are rejected here, naming the field. This module must
//! not map (`mapper.rs`) nor decide column types (`shape.rs`).

use std::io::{BufWriter, Write};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::columns::Column;
use crate::datum::Datum;
use crate::mapper::{Mapper, Reason, ReasonKind, Rejection};
use crate::shape::Shape;

/// The output's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Parquet,
    JsonLines,
}

/// Rows kept until the Parquet columns are fixed (their types come from these rows where the
/// schema does not give them).
pub const INFERENCE_ROWS: usize = 1000;
/// Rows per record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 8192;
/// A row group is closed once its encoded data reaches this size.
const ROW_GROUP_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Where mapped records go.
pub(crate) enum Sink<W: Write + Send> {
    Discard,
    JsonLines(BufWriter<W>),
    Parquet(Box<ParquetSink<W>>),
}

pub(crate) struct ParquetSink<W: Write + Send> {
    /// Until the writer is made.
    out: Option<W>,
    mapper: Mapper,
    /// The first rows, kept (owned) until the columns are fixed.
    window: Vec<(u64, Option<u64>, Datum<'static>)>,
    shape: Option<Shape>,
    columns: Option<Column>,
    schema: Option<SchemaRef>,
    writer: Option<ArrowWriter<W>>,
    rows_in_batch: usize,
}

impl<W: Write + Send> Sink<W> {
    pub fn new(format: OutputFormat, out: W, mapper: &Mapper) -> Sink<W> {
        match format {
            OutputFormat::JsonLines => Sink::JsonLines(BufWriter::with_capacity(1 << 20, out)),
            OutputFormat::Parquet => Sink::Parquet(Box::new(ParquetSink {
                out: Some(out),
                mapper: mapper.clone(),
                window: Vec::new(),
                shape: None,
                columns: None,
                schema: None,
                writer: None,
                rows_in_batch: 0,
            })),
        }
    }

    /// Takes one mapped record; returns how many rows this call wrote (rows of the Parquet
    /// window are written, or rejected, once the columns are fixed).
    pub fn push(
        &mut self,
        row: u64,
        line: Option<u64>,
        record: Datum<'_>,
        rejected: &mut dyn FnMut(Rejection),
    ) -> Result<u64, WriteError> {
        match self {
            Sink::Discard => Ok(1),
            Sink::JsonLines(out) => {
                serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                Ok(1)
            }
            Sink::Parquet(parquet) => {
                if parquet.shape.is_none() {
                    parquet.window.push((row, line, record.into_owned()));
                    if parquet.window.len() < INFERENCE_ROWS {
                        return Ok(0);
                    }
                    return parquet.fix_columns(rejected);
                }
                parquet.write_row(row, line, record, rejected)
            }
        }
    }

    /// Ends the output; returns how many rows this call wrote.
    pub fn finish(self, rejected: &mut dyn FnMut(Rejection)) -> Result<u64, WriteError> {
        match self {
            Sink::Discard => Ok(0),
            Sink::JsonLines(mut out) => {
                out.flush()?;
                Ok(0)
            }
            Sink::Parquet(mut parquet) => {
                let written = if parquet.shape.is_none() {
                    parquet.fix_columns(rejected)?
                } else {
                    0
                };
                parquet.flush_batch()?;
                if let Some(writer) = parquet.writer.take() {
                    writer.close()?;
                }
                Ok(written)
            }
        }
    }
}

impl<W: Write + Send> ParquetSink<W> {
    /// Fixes the columns from the skeleton, the window's rows and the schema; writes the
    /// window.
    fn fix_columns(&mut self, rejected: &mut dyn FnMut(Rejection)) -> Result<u64, WriteError> {
        let mut shape = Shape::skeleton(self.mapper.mapping_set());
        for (_, _, record) in &self.window {
            shape.observe(record);
        }
        if let Some(schema) = self.mapper.schema() {
            shape.apply_schema(schema.root());
        }
        let shape = shape.finish();
        let arrow_schema = match shape.data_type() {
            arrow_schema::DataType::Struct(fields) => Arc::new(arrow_schema::Schema::new(fields)),
            other => Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
                "value", other, true,
            )])),
        };
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let out = self
            .out
            .take()
            .ok_or_else(|| std::io::Error::other("the Parquet output was already started"))?;
        self.writer = Some(ArrowWriter::try_new(
            out,
            arrow_schema.clone(),
            Some(properties),
        )?);
        self.columns = Some(Column::new(&shape));
        self.shape = Some(shape);
        self.schema = Some(arrow_schema);
        let mut written = 0;
        for (row, line, record) in std::mem::take(&mut self.window) {
            written += self.write_row(row, line, record, rejected)?;
        }
        Ok(written)
    }

    fn write_row(
        &mut self,
        row: u64,
        line: Option<u64>,
        mut record: Datum<'_>,
        rejected: &mut dyn FnMut(Rejection),
    ) -> Result<u64, WriteError> {
        let (Some(shape), Some(columns)) = (&self.shape, &mut self.columns) else {
            return Ok(0);
        };
        if let Err(misfit) = shape.fit(&mut record) {
            rejected(Rejection {
                row,
                line,
                reasons: vec![Reason {
                    kind: ReasonKind::Output,
                    message: format!("{}: {}", misfit.field, misfit.message),
                    field: Some(misfit.field),
                }],
            });
            return Ok(0);
        }
        columns.append(Some(&record));
        self.rows_in_batch += 1;
        if self.rows_in_batch >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(1)
    }

    fn flush_batch(&mut self) -> Result<(), WriteError> {
        if self.rows_in_batch == 0 {
            return Ok(());
        }
        let (Some(columns), Some(schema), Some(writer)) =
            (&mut self.columns, &self.schema, &mut self.writer)
        else {
            return Ok(());
        };
        let batch = RecordBatch::try_new(schema.clone(), columns.finish_fields()?)?;
        writer.write(&batch)?;
        self.rows_in_batch = 0;
        if writer.in_progress_size() >= ROW_GROUP_BYTES {
            writer.flush()?;
        }
        Ok(())
    }
}
