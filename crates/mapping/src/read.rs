//! Reading input files record by record, in constant memory: CSV with a header row, JSON Lines,
//! multi-line JSON (one array of objects, or objects one after another), Parquet.
//!
//! Each record is handed to the caller as it is read; a record that cannot be read is handed
//! over as unreadable (with the reason) and reading goes on where the format allows it. This
//! module must not map (`mapper.rs`) nor write (`write.rs`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

/// How to read an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFormat {
    /// A header row names the columns.
    Csv(CsvOptions),
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects, or objects one after another, spread over lines (the
    /// platform's `isMultiLineJson`).
    JsonMultiLine,
    Parquet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    /// `None`: a quote inside a quoted cell is doubled (`""`).
    pub escape: Option<u8>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            escape: None,
        }
    }
}

impl InputFormat {
    /// By extension (`.csv`, `.tsv`, `.jsonl`/`.ndjson`, `.parquet`/`.parq`), and for `.json`
    /// by content: a file starting with `[`, or whose first line is not a whole object, is
    /// multi-line JSON; otherwise JSON Lines.
    pub fn detect(path: &Path) -> Result<InputFormat, String> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Ok(InputFormat::Csv(CsvOptions::default())),
            "tsv" => Ok(InputFormat::Csv(CsvOptions {
                delimiter: b'\t',
                ..CsvOptions::default()
            })),
            "jsonl" | "ndjson" => Ok(InputFormat::JsonLines),
            "parquet" | "parq" => Ok(InputFormat::Parquet),
            "json" => {
                let file =
                    File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                let mut first = String::new();
                BufReader::new(file)
                    .take(1 << 20)
                    .read_line(&mut first)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let first = first.trim_start_matches('\u{feff}').trim();
                if first.starts_with('[') {
                    return Ok(InputFormat::JsonMultiLine);
                }
                match serde_json::from_str::<Value>(first) {
                    Ok(Value::Object(_)) => Ok(InputFormat::JsonLines),
                    _ => Ok(InputFormat::JsonMultiLine),
                }
            }
            other => Err(format!(
                "{}: cannot tell its format from the extension {other:?}; name it .csv, .json, .jsonl or .parquet",
                path.display()
            )),
        }
    }
}

/// What reading gives, in order.
pub(crate) enum Event<'r> {
    /// The CSV header (before the first row).
    Header(&'r [String]),
    Row {
        /// 1-based record number.
        row: u64,
        line: Option<u64>,
        data: RowData<'r>,
    },
}

pub(crate) enum RowData<'r> {
    Csv(&'r csv::StringRecord),
    Json(&'r Value),
    Unreadable(String),
}

/// A file that cannot be read at all.
#[derive(Debug)]
pub(crate) enum ReadError<E> {
    Io(std::io::Error),
    /// The file as a whole is unusable (not Parquet, an empty CSV header...).
    File(String),
    /// The caller stopped the reading.
    Stopped(E),
}

impl<E> From<std::io::Error> for ReadError<E> {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Every byte of a file, once and in order, for a caller that wants them as they pass (to hash
/// the file in the same read that maps it).
pub type OnBytes<'a> = &'a mut dyn FnMut(&[u8]);

/// Reads an opened file from its start, handing each record to `on_event`; an `Err` from it
/// stops the reading. With `on_bytes`, a file read to its end has handed it every byte: a
/// text file's as they are read, a Parquet file's in one sequential pass before its records
/// (which are read by seeking).
pub(crate) fn read<E>(
    file: File,
    format: &InputFormat,
    on_event: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
    on_bytes: Option<OnBytes<'_>>,
) -> Result<(), ReadError<E>> {
    let Some(on_bytes) = on_bytes else {
        return match format {
            InputFormat::Csv(options) => read_csv(file, options, on_event),
            InputFormat::JsonLines => read_json_lines(file, on_event),
            InputFormat::JsonMultiLine => read_json_multi(file, on_event),
            InputFormat::Parquet => read_parquet(file, on_event),
        };
    };
    if *format == InputFormat::Parquet {
        std::io::copy(&mut Tap::new(&file, on_bytes), &mut std::io::sink())?;
        std::io::Seek::rewind(&mut &file)?;
        return read_parquet(file, on_event);
    }
    let mut tapped = Tap::new(file, on_bytes);
    match format {
        InputFormat::Csv(options) => read_csv(&mut tapped, options, on_event)?,
        InputFormat::JsonLines => read_json_lines(&mut tapped, on_event)?,
        InputFormat::JsonMultiLine => read_json_multi(&mut tapped, on_event)?,
        InputFormat::Parquet => unreachable!("read above"),
    }
    // What a reader left after the last record (trailing whitespace) is the file's too.
    std::io::copy(&mut tapped, &mut std::io::sink())?;
    Ok(())
}

/// A reader that hands what it reads to `on_bytes`.
struct Tap<'a, R> {
    inner: R,
    on_bytes: OnBytes<'a>,
}

impl<'a, R: Read> Tap<'a, R> {
    fn new(inner: R, on_bytes: OnBytes<'a>) -> Self {
        Tap { inner, on_bytes }
    }
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        (self.on_bytes)(&buf[..read]);
        Ok(read)
    }
}

fn read_csv<E>(
    file: impl Read,
    options: &CsvOptions,
    on_event: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let file = BufReader::with_capacity(1 << 20, file);
    let mut builder = csv::ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .quote(options.quote);
    if let Some(escape) = options.escape {
        builder.escape(Some(escape)).double_quote(false);
    }
    let mut reader = builder.from_reader(file);
    let mut record = csv::StringRecord::new();
    let mut headers: Option<Vec<String>> = None;
    let mut row = 0u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map(|p| p.line());
                let Some(names) = &headers else {
                    let names: Vec<String> = record
                        .iter()
                        .enumerate()
                        .map(|(i, h)| {
                            let h = if i == 0 {
                                h.trim_start_matches('\u{feff}')
                            } else {
                                h
                            };
                            h.to_owned()
                        })
                        .collect();
                    if names.iter().all(|h| h.trim().is_empty()) {
                        return Err(ReadError::File(
                            "the CSV header row (line 1) is empty: the first row must name the columns".into(),
                        ));
                    }
                    on_event(Event::Header(&names)).map_err(ReadError::Stopped)?;
                    headers = Some(names);
                    continue;
                };
                row += 1;
                let data = if record.len() == names.len() {
                    RowData::Csv(&record)
                } else {
                    RowData::Unreadable(format!(
                        "{} fields where the header has {}",
                        record.len(),
                        names.len()
                    ))
                };
                on_event(Event::Row { row, line, data }).map_err(ReadError::Stopped)?;
            }
            Err(e) => {
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(ReadError::Io(std::io::Error::other(e.to_string())));
                }
                if headers.is_none() {
                    return Err(ReadError::File(format!(
                        "the CSV header row cannot be read: {e}"
                    )));
                }
                row += 1;
                let line = e.position().map(|p| p.line());
                let data = RowData::Unreadable(format!("unreadable CSV: {e}"));
                on_event(Event::Row { row, line, data }).map_err(ReadError::Stopped)?;
            }
        }
    }
}

fn read_json_lines<E>(
    file: impl Read,
    on_event: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(4096);
    let (mut line_no, mut row) = (0u64, 0u64);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let mut bytes = line.as_slice();
        if line_no == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        row += 1;
        let parsed = serde_json::from_slice::<Value>(bytes);
        let data = match &parsed {
            Ok(value @ Value::Object(_)) => RowData::Json(value),
            Ok(other) => RowData::Unreadable(format!(
                "a JSON Lines row must be an object, found {}",
                json_kind(other)
            )),
            Err(e) => RowData::Unreadable(format!("unreadable JSON: {e}")),
        };
        on_event(Event::Row {
            row,
            line: Some(line_no),
            data,
        })
        .map_err(ReadError::Stopped)?;
    }
}

fn read_json_multi<E>(
    file: impl Read,
    on_event: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    // Skip a BOM and whitespace to see how the document starts.
    let first = loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let skip = if buf.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            buf.iter().take_while(|b| b.is_ascii_whitespace()).count()
        };
        if skip == 0 {
            break buf[0];
        }
        reader.consume(skip);
    };
    let mut row = 0u64;
    if first == b'[' {
        let mut stopped = None;
        let mut de = serde_json::Deserializer::from_reader(reader);
        let result = Elements {
            on_event: &mut *on_event,
            row: &mut row,
            stopped: &mut stopped,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if let Some(e) = stopped {
            return Err(ReadError::Stopped(e));
        }
        if let Err(e) = result {
            row += 1;
            let data = RowData::Unreadable(format!(
                "unreadable JSON: {e}; the rest of the file was not read"
            ));
            on_event(Event::Row {
                row,
                line: Some(e.line() as u64),
                data,
            })
            .map_err(ReadError::Stopped)?;
        }
        return Ok(());
    }
    for item in serde_json::Deserializer::from_reader(reader).into_iter::<Value>() {
        row += 1;
        let (data, stop) = match &item {
            Ok(value @ Value::Object(_)) => (RowData::Json(value), false),
            Ok(other) => (
                RowData::Unreadable(format!(
                    "expected a JSON object, found {}",
                    json_kind(other)
                )),
                false,
            ),
            Err(e) => (
                RowData::Unreadable(format!(
                    "unreadable JSON: {e}; the rest of the file was not read"
                )),
                true,
            ),
        };
        on_event(Event::Row {
            row,
            line: None,
            data,
        })
        .map_err(ReadError::Stopped)?;
        if stop {
            break;
        }
    }
    Ok(())
}

/// Streams the elements of a top-level JSON array one at a time.
struct Elements<'c, 'e, E> {
    on_event: &'c mut dyn FnMut(Event<'_>) -> Result<(), E>,
    row: &'c mut u64,
    stopped: &'e mut Option<E>,
}

impl<'de, E> DeserializeSeed<'de> for Elements<'_, '_, E> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E> Visitor<'de> for Elements<'_, '_, E> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            *self.row += 1;
            let data = match &value {
                Value::Object(_) => RowData::Json(&value),
                other => RowData::Unreadable(format!(
                    "expected a JSON object, found {}",
                    json_kind(other)
                )),
            };
            let event = Event::Row {
                row: *self.row,
                line: None,
                data,
            };
            if let Err(e) = (self.on_event)(event) {
                *self.stopped = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

fn read_parquet<E>(
    file: File,
    on_event: &mut dyn FnMut(Event<'_>) -> Result<(), E>,
) -> Result<(), ReadError<E>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| ReadError::File(format!("not a readable Parquet file: {e}")))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| {
            ReadError::File(format!("the Parquet file is corrupt after row {row}: {e}"))
        })?;
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            row += 1;
            let mut object = serde_json::Map::new();
            let mut problem = None;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                match arrow_json::value(column.as_ref(), i) {
                    Ok(Value::Null) => {}
                    Ok(value) => {
                        object.insert(field.name().clone(), value);
                    }
                    Err(e) => problem = Some(format!("column {}: {e}", field.name())),
                }
            }
            let value = Value::Object(object);
            let data = match problem {
                Some(message) => RowData::Unreadable(message),
                None => RowData::Json(&value),
            };
            on_event(Event::Row {
                row,
                line: None,
                data,
            })
            .map_err(ReadError::Stopped)?;
        }
    }
    Ok(())
}

/// What a JSON value is, for messages.
fn json_kind(v: &Value) -> &'static str {
    crate::datum::Datum::from_json(v).kind()
}

/// Arrow values as JSON, for Parquet input: structs are objects, lists arrays, maps objects,
/// dates `YYYY-MM-DD`, timestamps ISO 8601 (UTC).
mod arrow_json {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::{DataType, TimeUnit};
    use serde_json::Value;

    pub fn value(column: &dyn Array, i: usize) -> Result<Value, String> {
        if column.is_null(i) {
            return Ok(Value::Null);
        }
        let number = |f: f64| {
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        Ok(match column.data_type() {
            DataType::Null => Value::Null,
            DataType::Boolean => Value::Bool(column.as_boolean().value(i)),
            DataType::Int8 => column.as_primitive::<Int8Type>().value(i).into(),
            DataType::Int16 => column.as_primitive::<Int16Type>().value(i).into(),
            DataType::Int32 => column.as_primitive::<Int32Type>().value(i).into(),
            DataType::Int64 => column.as_primitive::<Int64Type>().value(i).into(),
            DataType::UInt8 => column.as_primitive::<UInt8Type>().value(i).into(),
            DataType::UInt16 => column.as_primitive::<UInt16Type>().value(i).into(),
            DataType::UInt32 => column.as_primitive::<UInt32Type>().value(i).into(),
            DataType::UInt64 => column.as_primitive::<UInt64Type>().value(i).into(),
            DataType::Float32 => number(f64::from(column.as_primitive::<Float32Type>().value(i))),
            DataType::Float64 => number(column.as_primitive::<Float64Type>().value(i)),
            DataType::Decimal128(_, scale) => number(
                column.as_primitive::<Decimal128Type>().value(i) as f64
                    / 10f64.powi(i32::from(*scale)),
            ),
            DataType::Utf8 => Value::String(column.as_string::<i32>().value(i).to_owned()),
            DataType::LargeUtf8 => Value::String(column.as_string::<i64>().value(i).to_owned()),
            DataType::Utf8View => Value::String(column.as_string_view().value(i).to_owned()),
            DataType::Date32 => {
                let days = column.as_primitive::<Date32Type>().value(i);
                let day = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|epoch| {
                        epoch.checked_add_signed(chrono::Duration::days(i64::from(days)))
                    })
                    .ok_or_else(|| format!("date {days} days from 1970 is out of range"))?;
                Value::String(day.format("%Y-%m-%d").to_string())
            }
            DataType::Timestamp(unit, _) => {
                let raw = match unit {
                    TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(i),
                    TimeUnit::Millisecond => {
                        column.as_primitive::<TimestampMillisecondType>().value(i)
                    }
                    TimeUnit::Microsecond => {
                        column.as_primitive::<TimestampMicrosecondType>().value(i)
                    }
                    TimeUnit::Nanosecond => {
                        column.as_primitive::<TimestampNanosecondType>().value(i)
                    }
                };
                let nanos_per_unit: i64 = match unit {
                    TimeUnit::Second => 1_000_000_000,
                    TimeUnit::Millisecond => 1_000_000,
                    TimeUnit::Microsecond => 1_000,
                    TimeUnit::Nanosecond => 1,
                };
                let units_per_second = 1_000_000_000 / nanos_per_unit;
                let at = chrono::DateTime::from_timestamp(
                    raw.div_euclid(units_per_second),
                    (raw.rem_euclid(units_per_second) * nanos_per_unit) as u32,
                )
                .ok_or_else(|| format!("timestamp {raw} is out of range"))?;
                Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            DataType::Struct(fields) => {
                let s = column.as_struct();
                let mut object = serde_json::Map::new();
                for (f, child) in fields.iter().zip(s.columns()) {
                    let v = value(child.as_ref(), i)?;
                    if !v.is_null() {
                        object.insert(f.name().clone(), v);
                    }
                }
                Value::Object(object)
            }
            DataType::List(_) => items(column.as_list::<i32>().value(i).as_ref())?,
            DataType::LargeList(_) => items(column.as_list::<i64>().value(i).as_ref())?,
            DataType::Map(_, _) => {
                let entries = column.as_map().value(i);
                let mut object = serde_json::Map::new();
                for e in 0..entries.len() {
                    let key = match value(entries.column(0).as_ref(), e)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    object.insert(key, value(entries.column(1).as_ref(), e)?);
                }
                Value::Object(object)
            }
            other => return Err(format!("the Parquet type {other} cannot be mapped")),
        })
    }

    fn items(list: &dyn Array) -> Result<Value, String> {
        (0..list.len())
            .map(|i| value(list, i))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }
}
