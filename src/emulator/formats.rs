//! Reading ingested files, streaming, in constant memory: JSON Lines, one multi-line JSON array
//! (`isMultiLineJson`), CSV with a header row, Parquet.
//!
//! Each record goes through a [`RecordCheck`] (schema validation, see `validate`), each failure
//! is reported to the caller per record, and the good records can be copied, in the file's own
//! format, to a [`GoodWriter`] (what Data Access serves of a partially ingested file).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::Value;

/// The largest record read: a JSON Lines line, one element (or object) of a multi-line JSON
/// file, one CSV row. The platform's own records are far smaller (about 100 KB for Profile);
/// a bigger one is refused as one failed row, without ever being held in memory whole.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// The largest Parquet page read, compressed or not: pages are read one at a time, so this
/// bounds what a Parquet file can make the reader hold (writers use about 1 MiB).
pub const MAX_PARQUET_PAGE_BYTES: u64 = 32 * 1024 * 1024;

pub const CODE_EMPTY_FILE: &str = "106";
pub const CODE_CSV_EMPTY_HEADER: &str = "118";
pub const CODE_NOT_PARQUET: &str = "200";
pub const CODE_UNPARSABLE_ROW: &str = "INGEST-1401-400";

/// One record as read from a file.
pub enum Record<'a> {
    Json(&'a Value),
    Csv {
        headers: &'a [String],
        fields: &'a csv::StringRecord,
    },
    Parquet {
        batch: &'a RecordBatch,
        row: usize,
    },
}

/// One reason why one record is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIssue {
    pub code: String,
    pub message: String,
    /// JSON pointer of the field at fault (none for a row that cannot be parsed).
    pub pointer: Option<String>,
}

impl RowIssue {
    pub fn unparsable(message: String) -> RowIssue {
        RowIssue {
            code: CODE_UNPARSABLE_ROW.into(),
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
    fn parquet_columns(&mut self, _schema: &arrow_schema::Schema) -> Result<(), (String, String)> {
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

/// Parses a JSON value completely without keeping it, telling whether it was an object.
struct ObjectProbe(bool);

impl<'de> serde::Deserialize<'de> for ObjectProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ObjectProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ObjectProbe, A::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(ObjectProbe(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<ObjectProbe, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ObjectProbe(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ObjectProbe, E> {
                Ok(ObjectProbe(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ObjectProbe, E> {
                Ok(ObjectProbe(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ObjectProbe, E> {
                Ok(ObjectProbe(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ObjectProbe, E> {
                Ok(ObjectProbe(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<ObjectProbe, E> {
                Ok(ObjectProbe(false))
            }
            fn visit_unit<E>(self) -> Result<ObjectProbe, E> {
                Ok(ObjectProbe(false))
            }
        }
        d.deserialize_any(V)
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
    pub file_error: Option<(String, String)>,
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

    fn line(&mut self, bytes: &[u8]) {
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

    fn value(&mut self, v: &Value) {
        if let GoodOut::JsonArray { w, first } = &mut self.out {
            let sep: &[u8] = if *first { b"\n" } else { b",\n" };
            *first = false;
            let r = w
                .write_all(sep)
                .and_then(|()| serde_json::to_writer(&mut *w, v).map_err(std::io::Error::other));
            self.keep(r);
        }
    }

    fn csv_record(&mut self, rec: &csv::StringRecord) {
        if let GoodOut::Csv(w) = &mut self.out {
            let r = w.write_record(rec).map_err(std::io::Error::other);
            self.keep(r);
        }
    }

    fn parquet_rows(&mut self, batch: &RecordBatch, start: usize, len: usize) {
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
                out.file_error = Some((
                    CODE_UNPARSABLE_ROW.into(),
                    format!("file '{display_name}' cannot be read: {e}"),
                ));
                return Ok(out);
            }
        };
        if size == 0 {
            out.file_error = Some((
                CODE_EMPTY_FILE.into(),
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
                out.file_error = Some((
                    CODE_UNPARSABLE_ROW.into(),
                    format!("file '{display_name}' cannot be read: {e}"),
                ));
                Ok(out)
            }
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// A row that cannot be parsed.
    fn fail(
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
    fn checked(
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

    fn read_json_lines(
        &mut self,
        path: &Path,
        name: &str,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut line = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            let read = next_line(&mut r, &mut line)?;
            if read == Line::End {
                break;
            }
            line_no += 1;
            if line_no.is_multiple_of(4096) && self.cancelled() {
                return Err(ReadStop::Cancelled);
            }
            if let Line::TooLong { bytes } = read {
                out.records += 1;
                self.fail(
                    out,
                    Some(line_no),
                    too_large(name, &format!("row {line_no}"), bytes),
                    None,
                );
                continue;
            }
            let mut bytes = line.as_slice();
            if line_no == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if !self.check.inspects_records()
                && let Ok(ObjectProbe(true)) = serde_json::from_slice::<ObjectProbe>(bytes)
            {
                out.records += 1;
                if let Some(g) = self.good.as_deref_mut() {
                    g.line(bytes);
                }
                continue;
            }
            // Slow path: the check wants the record, or the row is bad (reported in detail).
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v @ Value::Object(_)) => {
                    let ok = self.checked(out, name, line_no, Record::Json(&v), || {
                        String::from_utf8_lossy(bytes).into_owned()
                    });
                    if ok && let Some(g) = self.good.as_deref_mut() {
                        g.line(bytes);
                    }
                }
                Ok(other) => {
                    out.records += 1;
                    self.fail(
                        out,
                        Some(line_no),
                        format!(
                            "file '{name}' row {line_no}: a JSON Lines row must be a JSON object, found {}",
                            json_kind(&other)
                        ),
                        Some(cut(&String::from_utf8_lossy(bytes))),
                    );
                }
                Err(e) => {
                    out.records += 1;
                    self.fail(
                        out,
                        Some(line_no),
                        format!("file '{name}' row {line_no}: unparsable JSON: {e}"),
                        Some(cut(&String::from_utf8_lossy(bytes))),
                    );
                }
            }
        }
        Ok(())
    }

    fn read_json_multi(
        &mut self,
        path: &Path,
        name: &str,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        const BUFFER: usize = 1 << 20;
        let budget = RecordBudget::new(MAX_RECORD_BYTES);
        let file = Capped {
            inner: File::open(path)?,
            budget: &budget,
        };
        let mut r = BufReader::with_capacity(BUFFER, file);
        // Skip a BOM and whitespace to see how the document starts.
        let first = loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                break None;
            }
            let skip = if buf.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                buf.iter().take_while(|b| b.is_ascii_whitespace()).count()
            };
            if skip == 0 {
                break Some(buf[0]);
            }
            r.consume(skip);
        };
        match first {
            None => Ok(()),
            Some(b'[') => {
                budget.mark();
                let mut de = serde_json::Deserializer::from_reader(r);
                let mut index = 0u64;
                let res = ArraySeed {
                    reader: self,
                    out,
                    name,
                    index: &mut index,
                    budget: &budget,
                }
                .deserialize(&mut de)
                .and_then(|()| de.end());
                match res {
                    Ok(()) => Ok(()),
                    Err(_) if self.cancelled() => Err(ReadStop::Cancelled),
                    Err(e) => {
                        out.records += 1;
                        let row = index + 1;
                        let message = if budget.tripped() {
                            too_large(name, &format!("row {row} (array element {row})"), 0)
                        } else {
                            format!(
                                "file '{name}' row {row} (array element {row}): unparsable JSON: {e}"
                            )
                        };
                        self.fail(
                            out,
                            Some(row),
                            format!("{message}; the rest of the file was not read"),
                            None,
                        );
                        Ok(())
                    }
                }
            }
            Some(_) => {
                // Pretty-printed objects one after another (also multi-line JSON).
                let mut stream = serde_json::Deserializer::from_reader(r).into_iter::<Value>();
                let mut row = 0u64;
                loop {
                    budget.mark();
                    let Some(item) = stream.next() else { break };
                    row += 1;
                    if row.is_multiple_of(4096) && self.cancelled() {
                        return Err(ReadStop::Cancelled);
                    }
                    match item {
                        Ok(v @ Value::Object(_)) => {
                            if self.checked(out, name, row, Record::Json(&v), || v.to_string())
                                && let Some(g) = self.good.as_deref_mut()
                            {
                                g.value(&v);
                            }
                        }
                        Ok(other) => {
                            out.records += 1;
                            self.fail(
                                out,
                                Some(row),
                                format!(
                                    "file '{name}' row {row}: expected a JSON array of objects (isMultiLineJson), found {}",
                                    json_kind(&other)
                                ),
                                Some(cut(&other.to_string())),
                            );
                        }
                        Err(e) => {
                            out.records += 1;
                            let message = if budget.tripped() {
                                too_large(name, &format!("row {row}"), 0)
                            } else {
                                format!("file '{name}' row {row}: unparsable JSON: {e}")
                            };
                            self.fail(
                                out,
                                Some(row),
                                format!("{message}; the rest of the file was not read"),
                                None,
                            );
                            break;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn read_csv(
        &mut self,
        path: &Path,
        name: &str,
        fmt: &InputFormat,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut first_line = Vec::new();
        if let Line::TooLong { bytes } = next_line(&mut r, &mut first_line)? {
            let message = too_large(name, "row 1", bytes);
            if fmt.header {
                out.file_error = Some((
                    CODE_CSV_EMPTY_HEADER.into(),
                    format!("CSV file '{name}': the header row cannot be read: {message}"),
                ));
                return Ok(());
            }
            out.records += 1;
            self.fail(out, Some(1), message, None);
        }
        let mut head: &[u8] = &first_line;
        head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let blank = head
            .iter()
            .all(|b| b.is_ascii_whitespace() || *b == fmt.delimiter || *b == fmt.quote);
        if fmt.header && blank {
            out.file_error = Some((
                CODE_CSV_EMPTY_HEADER.into(),
                format!(
                    "CSV file '{name}' has an empty header row (line 1): the first row must name the columns"
                ),
            ));
            return Ok(());
        }
        let head = head.to_vec();
        let mut builder = csv::ReaderBuilder::new();
        builder
            .has_headers(false)
            .flexible(true)
            .delimiter(fmt.delimiter)
            .quote(fmt.quote);
        if let Some(e) = fmt.escape {
            builder.escape(Some(e)).double_quote(false);
        }
        let budget = RecordBudget::new(MAX_RECORD_BYTES);
        let mut csv = builder.from_reader(Capped {
            inner: std::io::Cursor::new(head).chain(r),
            budget: &budget,
        });
        let mut headers: Vec<String> = Vec::new();
        let mut record = csv::StringRecord::new();
        let mut first = true;
        loop {
            budget.mark();
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let line = record.position().map(|p| p.line()).unwrap_or(0);
                    if first && fmt.header {
                        first = false;
                        headers = record.iter().map(str::to_owned).collect();
                        if let Some(g) = self.good.as_deref_mut() {
                            g.csv_record(&record);
                        }
                        continue;
                    }
                    if first {
                        first = false;
                        headers = (0..record.len()).map(|i| format!("_c{i}")).collect();
                    }
                    if line.is_multiple_of(4096) && self.cancelled() {
                        return Err(ReadStop::Cancelled);
                    }
                    if record.len() != headers.len() {
                        out.records += 1;
                        let raw = record.iter().collect::<Vec<_>>().join(",");
                        self.fail(
                            out,
                            Some(line),
                            format!(
                                "file '{name}' row {line}: {} fields where the header has {}",
                                record.len(),
                                headers.len()
                            ),
                            Some(cut(&raw)),
                        );
                        continue;
                    }
                    let rec = Record::Csv {
                        headers: &headers,
                        fields: &record,
                    };
                    let ok = self.checked(out, name, line, rec, || {
                        record.iter().collect::<Vec<_>>().join(",")
                    });
                    if ok && let Some(g) = self.good.as_deref_mut() {
                        g.csv_record(&record);
                    }
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line());
                    match e.kind() {
                        csv::ErrorKind::Io(_) if budget.tripped() => {
                            // Where a record ends is unknown past this point: stop here.
                            let row = csv.position().line();
                            out.records += 1;
                            let message = too_large(name, &format!("row {row}"), 0);
                            self.fail(
                                out,
                                Some(row),
                                format!("{message}; the rest of the file was not read"),
                                None,
                            );
                            return Ok(());
                        }
                        csv::ErrorKind::Io(_) => {
                            return Err(ReadStop::Io(std::io::Error::other(e.to_string())));
                        }
                        _ => {
                            if first && fmt.header {
                                out.file_error = Some((
                                    CODE_UNPARSABLE_ROW.into(),
                                    format!(
                                        "CSV file '{name}': the header row cannot be read: {e}"
                                    ),
                                ));
                                return Ok(());
                            }
                            out.records += 1;
                            self.fail(
                                out,
                                line,
                                format!(
                                    "file '{name}' row {}: unparsable CSV: {e}",
                                    line.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
                                ),
                                None,
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn read_parquet(
        &mut self,
        path: &Path,
        name: &str,
        size: u64,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let mut f = File::open(path)?;
        let bad = |detail: String| {
            (
                CODE_NOT_PARQUET.to_owned(),
                format!("file '{name}' is not a valid Parquet file: {detail}"),
            )
        };
        let too_big = |detail: String| {
            (
                CODE_NOT_PARQUET.to_owned(),
                format!("Parquet file '{name}' cannot be read in bounded memory: {detail}"),
            )
        };
        if size < 12 {
            out.file_error = Some(bad(format!("only {size} bytes (bad magic)")));
            return Ok(());
        }
        let mut magic = [0u8; 4];
        f.read_exact(&mut magic)?;
        let mut tail = [0u8; 4];
        f.seek(SeekFrom::End(-4))?;
        f.read_exact(&mut tail)?;
        if &magic != b"PAR1" || &tail != b"PAR1" {
            out.file_error = Some(bad(
                "bad magic: a Parquet file starts and ends with PAR1".into()
            ));
            return Ok(());
        }
        let file = super::parquet_pages::CheckedFile::new(f, size);
        let pages = file.check.clone();
        let builder = match unpanicked(|| {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        }) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                out.file_error = Some(bad(format!("cannot read its metadata: {e}")));
                return Ok(());
            }
            Err(panic) => {
                out.file_error = Some(bad(format!("its metadata broke the reader: {panic}")));
                return Ok(());
            }
        };
        if let Err(detail) = column_chunks_within(builder.metadata(), size) {
            out.file_error = Some(bad(detail));
            return Ok(());
        }
        if let Err(refusal) = self.check.parquet_columns(builder.schema()) {
            out.file_error = Some(refusal);
            return Ok(());
        }
        let batch_size = match pages.plan(builder.metadata()) {
            Ok(rows) => rows,
            Err(why) => {
                out.file_error = Some(too_big(why));
                return Ok(());
            }
        };
        let mut reader = match builder.with_batch_size(batch_size).build() {
            Ok(r) => r,
            Err(e) => {
                out.file_error = Some(
                    pages
                        .refusal()
                        .map_or_else(|| bad(format!("cannot read it: {e}")), too_big),
                );
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
                        || bad(format!("corrupt data after row {row}: {e}")),
                        too_big,
                    ));
                    return Ok(());
                }
                Err(panic) => {
                    out.file_error = Some(bad(format!(
                        "its data after row {row} broke the reader: {panic}"
                    )));
                    return Ok(());
                }
            };
            // Good rows are copied in runs.
            let mut run_start = 0usize;
            for i in 0..batch.num_rows() {
                row += 1;
                let rec = Record::Parquet {
                    batch: &batch,
                    row: i,
                };
                let ok = self.checked(out, name, row, rec, || {
                    parquet_row_json(&batch, i).to_string()
                });
                if !ok {
                    if let Some(g) = self.good.as_deref_mut() {
                        g.parquet_rows(&batch, run_start, i - run_start);
                    }
                    run_start = i + 1;
                }
            }
            if let Some(g) = self.good.as_deref_mut() {
                g.parquet_rows(&batch, run_start, batch.num_rows() - run_start);
            }
        }
        Ok(())
    }
}

/// What [`next_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Nothing: the end of the file.
    End,
    /// A line (with its `\n`, if any), in the buffer.
    Read,
    /// A line of this many bytes (without its `\n`) beyond `MAX_RECORD_BYTES`: read to its
    /// end, not kept.
    TooLong { bytes: u64 },
}

/// Reads the next line into `line`, keeping at most `MAX_RECORD_BYTES` of it.
fn next_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Line> {
    line.clear();
    let mut total = 0u64;
    let mut kept = true;
    let mut ended = false;
    while !ended {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = match memchr::memchr(b'\n', buf) {
            Some(i) => {
                ended = true;
                i + 1
            }
            None => buf.len(),
        };
        total += take as u64;
        if kept && total - u64::from(ended) > MAX_RECORD_BYTES {
            kept = false;
            line.clear();
        }
        if kept {
            line.extend_from_slice(&buf[..take]);
        }
        r.consume(take);
    }
    Ok(match (total, kept) {
        (0, _) => Line::End,
        (_, true) => Line::Read,
        (bytes, false) => Line::TooLong {
            bytes: bytes - u64::from(ended),
        },
    })
}

/// How much one record may read: reads through [`Capped`] fail once more than `limit` bytes
/// were read since the last `mark` (set at each record's start), so a parser never holds more
/// of one record than that. A buffer above `Capped` has read ahead when the mark is set, so a
/// record of up to `limit` bytes always passes, and one longer than `limit` plus the buffer
/// never does.
struct RecordBudget {
    limit: u64,
    read: std::cell::Cell<u64>,
    mark: std::cell::Cell<u64>,
    tripped: std::cell::Cell<bool>,
}

impl RecordBudget {
    fn new(limit: u64) -> RecordBudget {
        RecordBudget {
            limit,
            read: 0.into(),
            mark: 0.into(),
            tripped: false.into(),
        }
    }

    /// A record starts here.
    fn mark(&self) {
        self.mark.set(self.read.get());
    }

    /// A read failed because the record went past the limit.
    fn tripped(&self) -> bool {
        self.tripped.get()
    }
}

/// A reader that stops one record at its [`RecordBudget`].
struct Capped<'b, R> {
    inner: R,
    budget: &'b RecordBudget,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let b = self.budget;
        if b.read.get() - b.mark.get() > b.limit {
            b.tripped.set(true);
            return Err(std::io::Error::other(format!(
                "a record is longer than {MAX_RECORD_BYTES} bytes"
            )));
        }
        let n = self.inner.read(buf)?;
        b.read.set(b.read.get() + n as u64);
        Ok(n)
    }
}

/// The failure message of a record beyond `MAX_RECORD_BYTES` (`bytes`, when known).
fn too_large(name: &str, row: &str, bytes: u64) -> String {
    let size = if bytes > MAX_RECORD_BYTES {
        format!("{bytes} bytes long")
    } else {
        "too long".to_owned()
    };
    format!(
        "file '{name}' {row}: the record is {size}, over the {MAX_RECORD_BYTES} bytes (16 MiB) one record may take; \
         split it into smaller records (the platform's own limits are far lower, e.g. 100 KB per Profile record)"
    )
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

/// Every column chunk the metadata describes lies within the file's `size` bytes (the Parquet
/// crate asserts on a negative offset or length, and would seek past the end).
fn column_chunks_within(
    metadata: &parquet::file::metadata::ParquetMetaData,
    size: u64,
) -> Result<(), String> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or(chunk.data_page_offset());
            let len = chunk.compressed_size();
            let within = u64::try_from(start)
                .ok()
                .zip(u64::try_from(len).ok())
                .and_then(|(start, len)| start.checked_add(len))
                .is_some_and(|end| end <= size);
            if !within {
                return Err(format!(
                    "column {c} of row group {g} claims bytes {start}+{len}, outside the file's {size} bytes"
                ));
            }
        }
    }
    Ok(())
}

enum ReadStop {
    Cancelled,
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadStop {
    fn from(e: std::io::Error) -> Self {
        ReadStop::Io(e)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Streams the elements of a top-level JSON array one at a time.
struct ArraySeed<'r, 'a, 'o> {
    reader: &'r mut Reader<'a>,
    out: &'o mut FileOutcome,
    name: &'o str,
    index: &'o mut u64,
    /// Marked before each element.
    budget: &'o RecordBudget,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = {
            self.budget.mark();
            seq.next_element::<Value>()?
        } {
            *self.index += 1;
            let row = *self.index;
            if row.is_multiple_of(4096) && self.reader.cancelled() {
                return Err(serde::de::Error::custom("cancelled"));
            }
            if v.is_object() {
                let ok = self
                    .reader
                    .checked(self.out, self.name, row, Record::Json(&v), || v.to_string());
                if ok && let Some(g) = self.reader.good.as_deref_mut() {
                    g.value(&v);
                }
            } else {
                self.out.records += 1;
                self.reader.fail(
                    self.out,
                    Some(row),
                    format!(
                        "file '{}' row {row} (array element {row}): expected a JSON object, found {}",
                        self.name,
                        json_kind(&v)
                    ),
                    Some(cut(&v.to_string())),
                );
            }
        }
        Ok(())
    }
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
pub fn record_to_json(record: &Record<'_>) -> Value {
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

/// A Parquet row as a JSON object: structs become objects, lists arrays, maps objects,
/// timestamps ISO 8601 date-times (UTC), dates `YYYY-MM-DD`; null columns are left out.
pub fn parquet_row_json(batch: &RecordBatch, row: usize) -> Value {
    let schema = batch.schema();
    let mut obj = serde_json::Map::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let v = arrow_value(batch.column(i).as_ref(), row);
        if !v.is_null() {
            obj.insert(field.name().clone(), v);
        }
    }
    Value::Object(obj)
}

fn arrow_value(col: &dyn arrow_array::Array, row: usize) -> Value {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::{DataType, TimeUnit};
    if col.is_null(row) {
        return Value::Null;
    }
    macro_rules! prim {
        ($t:ty) => {
            Value::from(col.as_primitive::<$t>().value(row))
        };
    }
    match col.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float16 => json_num(col.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => json_num(f64::from(col.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => json_num(col.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => json_num(
            col.as_primitive::<Decimal128Type>().value(row) as f64 / 10f64.powi(i32::from(*scale)),
        ),
        DataType::Utf8 => Value::String(col.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(col.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(col.as_string_view().value(row).to_owned()),
        DataType::Binary => {
            Value::String(String::from_utf8_lossy(col.as_binary::<i32>().value(row)).into_owned())
        }
        DataType::LargeBinary => {
            Value::String(String::from_utf8_lossy(col.as_binary::<i64>().value(row)).into_owned())
        }
        DataType::Date32 => {
            let days = i64::from(col.as_primitive::<Date32Type>().value(row));
            date_json(days.saturating_mul(86_400_000))
        }
        DataType::Date64 => date_json(col.as_primitive::<Date64Type>().value(row)),
        DataType::Timestamp(unit, _) => {
            let (secs, nanos) = match unit {
                TimeUnit::Second => (col.as_primitive::<TimestampSecondType>().value(row), 0),
                TimeUnit::Millisecond => {
                    let v = col.as_primitive::<TimestampMillisecondType>().value(row);
                    (v.div_euclid(1000), v.rem_euclid(1000) * 1_000_000)
                }
                TimeUnit::Microsecond => {
                    let v = col.as_primitive::<TimestampMicrosecondType>().value(row);
                    (v.div_euclid(1_000_000), v.rem_euclid(1_000_000) * 1000)
                }
                TimeUnit::Nanosecond => {
                    let v = col.as_primitive::<TimestampNanosecondType>().value(row);
                    (v.div_euclid(1_000_000_000), v.rem_euclid(1_000_000_000))
                }
            };
            match chrono::DateTime::from_timestamp(secs, nanos as u32) {
                Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => Value::String(format!("<timestamp {secs}s out of range>")),
            }
        }
        DataType::Struct(fields) => {
            let s = col.as_struct();
            let mut obj = serde_json::Map::new();
            for (i, f) in fields.iter().enumerate() {
                let v = arrow_value(s.column(i).as_ref(), row);
                if !v.is_null() {
                    obj.insert(f.name().clone(), v);
                }
            }
            Value::Object(obj)
        }
        DataType::List(_) => {
            let items = col.as_list::<i32>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| arrow_value(items.as_ref(), i))
                    .collect(),
            )
        }
        DataType::LargeList(_) => {
            let items = col.as_list::<i64>().value(row);
            Value::Array(
                (0..items.len())
                    .map(|i| arrow_value(items.as_ref(), i))
                    .collect(),
            )
        }
        DataType::Map(_, _) => {
            let entries = col.as_map().value(row);
            let mut obj = serde_json::Map::new();
            for i in 0..arrow_array::Array::len(&entries) {
                let key = match arrow_value(entries.column(0).as_ref(), i) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                obj.insert(key, arrow_value(entries.column(1).as_ref(), i));
            }
            Value::Object(obj)
        }
        other => Value::String(format!("<unsupported Parquet type {other}>")),
    }
}

fn date_json(ms: i64) -> Value {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.date_naive().format("%Y-%m-%d").to_string()),
        None => Value::String(format!("<date {ms}ms out of range>")),
    }
}

fn json_num(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// The first `limit` records of the files, as JSON objects.
pub fn preview_rows(files: &[std::path::PathBuf], fmt: &InputFormat, limit: usize) -> Vec<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = MAX_RECORD_BYTES as usize + 2 * 1024 * 1024;

    /// Reads `content` as `fmt` with no schema: (outcome, failures).
    fn read(content: &[u8], fmt: &InputFormat) -> (FileOutcome, Vec<RowFailure>) {
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

    fn format(v: Value) -> InputFormat {
        InputFormat::from_json(&v)
    }

    fn huge_object() -> Vec<u8> {
        let mut v = b"{\"a\": \"".to_vec();
        v.resize(BIG, b'x');
        v.extend_from_slice(b"\"}");
        v
    }

    #[test]
    fn a_json_line_over_the_cap_is_one_failed_row_and_the_next_lines_are_read() {
        let mut content = b"{\"id\": 1}\n".to_vec();
        content.extend_from_slice(&huge_object());
        content.extend_from_slice(b"\n{\"id\": 3}\n");
        let (out, failures) = read(&content, &format(serde_json::json!({"format": "json"})));
        assert_eq!((out.records, out.failed), (3, 1));
        assert_eq!(failures[0].row, Some(2));
        let msg = &failures[0].first().message;
        assert!(msg.contains("row 2") && msg.contains("16777216"), "{msg}");
        assert_eq!(failures[0].first().code, CODE_UNPARSABLE_ROW);
        // At the cap exactly, a line is read.
        let mut at_cap = b"{\"a\": \"".to_vec();
        at_cap.resize(MAX_RECORD_BYTES as usize - 2, b'y');
        at_cap.extend_from_slice(b"\"}\n");
        let (out, failures) = read(&at_cap, &format(serde_json::json!({"format": "json"})));
        assert_eq!((out.records, out.failed), (1, 0), "{failures:?}");
    }

    #[test]
    fn a_multi_line_json_record_over_the_cap_fails_its_row() {
        let fmt = format(serde_json::json!({"format": "json", "isMultiLineJson": true}));
        let mut array = b"[{\"id\": 1},\n".to_vec();
        array.extend_from_slice(&huge_object());
        array.extend_from_slice(b"]");
        let (out, failures) = read(&array, &fmt);
        assert_eq!((out.records, out.failed), (2, 1));
        let msg = &failures[0].first().message;
        assert!(msg.contains("row 2 (array element 2)"), "{msg}");
        assert!(msg.contains("16777216"), "{msg}");
        let mut objects = b"{\"id\": 1}\n".to_vec();
        objects.extend_from_slice(&huge_object());
        let (out, failures) = read(&objects, &fmt);
        assert_eq!((out.records, out.failed), (2, 1));
        assert!(failures[0].first().message.contains("16777216"));
        // Big records under the cap, many of them: each has its own allowance.
        let element = format!("{{\"a\": \"{}\"}}", "z".repeat(4 * 1024 * 1024));
        let many = format!("[{}]", vec![element; 6].join(",\n"));
        let (out, failures) = read(many.as_bytes(), &fmt);
        assert_eq!((out.records, out.failed), (6, 0), "{failures:?}");
    }

    #[test]
    fn a_csv_row_or_header_over_the_cap_is_refused() {
        let fmt = format(serde_json::json!({"format": "csv"}));
        let mut content = b"id,name\n1,a\n2,\"".to_vec();
        content.resize(BIG, b'n');
        content.extend_from_slice(b"\"\n3,c\n");
        let (out, failures) = read(&content, &fmt);
        assert_eq!((out.records, out.failed), (2, 1), "{failures:?}");
        let msg = &failures[0].first().message;
        assert!(msg.contains("row 3") && msg.contains("16777216"), "{msg}");
        let mut header = b"id,".to_vec();
        header.resize(BIG, b'h');
        header.extend_from_slice(b"\n1,2\n");
        let (out, _) = read(&header, &fmt);
        let (code, msg) = out.file_error.unwrap();
        assert_eq!(code, CODE_CSV_EMPTY_HEADER);
        assert!(
            msg.contains("header row") && msg.contains("16777216"),
            "{msg}"
        );
    }

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
        assert_eq!(code, CODE_NOT_PARQUET);
        assert!(
            msg.contains("33554432") && msg.contains("smaller pages"),
            "{msg}"
        );
        // A page under the cap reads.
        let (out, _) = read(&write("s".repeat(1024 * 1024)), &fmt);
        assert!(out.file_error.is_none(), "{:?}", out.file_error);
        assert_eq!((out.records, out.failed), (1, 0));
    }

    /// Reads `input` (a fuzz target's input: its first byte holds the target's options) as a
    /// file of `format`, accepting every well-formed record.
    fn read_fuzz_input(input: &[u8], format: &str) -> FileOutcome {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, &input[1..]).unwrap();
        let fmt = InputFormat::from_json(&serde_json::json!({ "format": format }));
        let cancel = AtomicBool::new(false);
        let mut reader = Reader {
            check: &mut AcceptAll,
            cancel: &cancel,
            on_failure: &mut |_| {},
            good: None,
        };
        reader
            .read_file(&path, "input", &fmt)
            .unwrap_or_else(|_| panic!("not cancelled"))
    }

    /// Found by `fuzz/` (target `parquet`): a column chunk with a negative offset made the
    /// Parquet crate assert, and the batch's processing panicked.
    #[test]
    fn a_parquet_column_chunk_outside_the_file_is_refused_without_a_panic() {
        let input = include_bytes!("../../fuzz/corpus/parquet/regression-negative-column-offset");
        let out = read_fuzz_input(input, "parquet");
        let (code, description) = out.file_error.expect("the file is refused");
        assert_eq!(code, CODE_NOT_PARQUET);
        assert!(description.contains("outside the file"), "{description}");
        assert_eq!(out.records, 0);
    }
}
