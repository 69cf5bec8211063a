//! Mapping a whole file: read it record by record, map each, write the mapped records,
//! report each rejected row as it is found, and count rows in and out. Memory stays flat
//! whatever the file's size (one record at a time, plus the Parquet writer's bounded buffers).
//!
//! This is the function the daemon's staging step and `batchdrop map` call; it must not know
//! where files come from or go (paths and writers are given).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::mapper::{CsvBinding, Mapper, Reason, ReasonKind, Rejection};
use crate::mapping_set::MappingError;
use crate::read::{self, Event, InputFormat, OnBytes, ReadError, RowData};
use crate::write::{OutputFormat, Sink, WriteError};

/// Where the mapped records go.
pub struct Output<W: Write + Send> {
    pub format: OutputFormat,
    pub writer: W,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// How many mapped records to keep as JSON for a preview.
    pub preview_rows: usize,
}

/// What mapping a file did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Records read (good and bad).
    pub rows_in: u64,
    /// Records written (or, without an output, that would have been).
    pub rows_out: u64,
    /// Records rejected (each reported once).
    pub rejected: u64,
    /// The first mapped records, as JSON.
    pub preview: Vec<serde_json::Value>,
}

/// Why a file could not be mapped at all (a rejected row is not an error: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// The mapping set does not fit the file (a column it reads is missing).
    #[error("{path}: {source}")]
    Mapping { path: PathBuf, source: MappingError },
    #[error("cannot write the mapped records of {path}: {source}")]
    Write { path: PathBuf, source: WriteError },
}

/// Maps one file. `output: None` maps and checks everything but writes nothing.
pub fn map_file<W: Write + Send>(
    mapper: &Mapper,
    input: &Path,
    format: &InputFormat,
    output: Option<Output<W>>,
    options: &Options,
    on_rejected: &mut dyn FnMut(Rejection),
) -> Result<Summary, MapError> {
    let file = std::fs::File::open(input).map_err(|source| MapError::Read {
        path: input.to_path_buf(),
        source,
    })?;
    map_seeing(
        mapper,
        file,
        input,
        format,
        output,
        options,
        on_rejected,
        None,
    )
}

/// Maps a file the caller opened (and checked), read from its start; `input` names it in
/// errors. Otherwise as [`map_file`]. With `on_bytes`, every byte of the file is handed to it
/// as it is read (once, in order; see [`OnBytes`]), so that one read both maps and hashes it;
/// a Parquet file's records are read by seeking, so its bytes are read once more, first.
#[allow(clippy::too_many_arguments)]
pub fn map_seeing<W: Write + Send>(
    mapper: &Mapper,
    file: std::fs::File,
    input: &Path,
    format: &InputFormat,
    output: Option<Output<W>>,
    options: &Options,
    on_rejected: &mut dyn FnMut(Rejection),
    on_bytes: Option<OnBytes<'_>>,
) -> Result<Summary, MapError> {
    let mut summary = Summary::default();
    let mut sink = match output {
        Some(out) => Sink::new(out.format, out.writer, mapper),
        None => Sink::Discard,
    };
    let mut rejected = 0u64;
    let mut report = |rejection: Rejection| {
        rejected += 1;
        on_rejected(rejection);
    };
    let mut binding: Option<CsvBinding> = None;
    let write_error = |source| MapError::Write {
        path: input.to_path_buf(),
        source,
    };
    let result = read::read(
        file,
        format,
        &mut |event: Event<'_>| -> Result<(), MapError> {
            match event {
                Event::Header(headers) => {
                    binding =
                        Some(
                            mapper
                                .bind_csv(headers)
                                .map_err(|source| MapError::Mapping {
                                    path: input.to_path_buf(),
                                    source,
                                })?,
                        );
                    Ok(())
                }
                Event::Row { row, line, data } => {
                    summary.rows_in += 1;
                    let mapped = match data {
                        RowData::Csv(record) => match &binding {
                            Some(binding) => {
                                let fields = mapper.csv_fields(binding, record);
                                mapper.map_fields(&fields)
                            }
                            None => Err(vec![unreadable("a CSV row before the header")]),
                        },
                        RowData::Json(value) => {
                            let fields = mapper.json_fields(value);
                            mapper.map_fields(&fields)
                        }
                        RowData::Unreadable(message) => Err(vec![unreadable(&message)]),
                    };
                    match mapped {
                        Ok(record) => {
                            if summary.preview.len() < options.preview_rows {
                                summary.preview.push(record.to_json());
                            }
                            summary.rows_out += sink
                                .push(row, line, record, &mut report)
                                .map_err(write_error)?;
                        }
                        Err(reasons) => report(Rejection { row, line, reasons }),
                    }
                    Ok(())
                }
            }
        },
        on_bytes,
    );
    match result {
        Ok(()) => {}
        Err(ReadError::Stopped(e)) => return Err(e),
        Err(ReadError::Io(source)) => {
            return Err(MapError::Read {
                path: input.to_path_buf(),
                source,
            });
        }
        Err(ReadError::File(message)) => {
            return Err(MapError::Input {
                path: input.to_path_buf(),
                message,
            });
        }
    }
    summary.rows_out += sink.finish(&mut report).map_err(write_error)?;
    summary.rejected = rejected;
    Ok(summary)
}

fn unreadable(message: &str) -> Reason {
    Reason {
        kind: ReasonKind::Unreadable,
        field: None,
        message: message.to_owned(),
    }
}
