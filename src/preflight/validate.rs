//! The local check of a file's records against its dataset's schema, before upload: the same
//! rules, conversions and codes as the platform's (`batchdrop_xdm`), and the same row numbers
//! (the line for JSON Lines and CSV, the element for a multi-line JSON array or a sequence of
//! objects). It reads from any `Read`, streaming, one record held at a time, so the caller can
//! feed it the bytes it hashes in the same pass.
//!
//! Records over the platform's size guardrail (`guardrails`) fail their row too.
//!
//! Parquet files are read by `parquet` (from a file: their footer comes first).
//!
//! It reads; it must not open, move or upload files, and knows nothing of receipts.

use std::io::{self, BufRead, BufReader, Read};

use batchdrop_xdm::{CheckMode, CsvColumns, Issue, Schema, Source};
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::guardrails::{self, RecordKind};
use crate::api::{Dataset, RegistrySchema};
use crate::config::Format;

/// The platform's code of a row that cannot be read or parsed.
pub const UNPARSABLE: &str = "INGEST-1401-400";
/// The platform's code for a CSV file whose header row is empty (the whole file fails).
pub const EMPTY_HEADER: &str = "118";
/// The largest record read, as the platform's emulator bounds it; larger ones fail the row.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Row problems kept per file (the rest are counted in `FileCheck::bad_rows`).
pub const MAX_PROBLEMS_KEPT: usize = 100;

/// One problem of one row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowProblem {
    /// 1-based, as the platform numbers rows.
    pub row: u64,
    pub code: String,
    /// JSON pointer of the field at fault (none when the row cannot be parsed).
    pub field: Option<String>,
    pub message: String,
}

/// What checking one file found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileCheck {
    pub records: u64,
    /// Rows with at least one problem.
    pub bad_rows: u64,
    /// The first [`MAX_PROBLEMS_KEPT`] problems.
    pub problems: Vec<RowProblem>,
    /// Not checked at all (a Parquet file too large to check locally), and why.
    pub skipped: Option<String>,
}

impl FileCheck {
    pub fn is_clean(&self) -> bool {
        self.bad_rows == 0
    }

    fn fail(&mut self, problems: impl IntoIterator<Item = RowProblem>) {
        self.bad_rows += 1;
        let room = MAX_PROBLEMS_KEPT.saturating_sub(self.problems.len());
        self.problems.extend(problems.into_iter().take(room));
    }

    fn unparsable(&mut self, row: u64, message: String) {
        self.fail([RowProblem {
            row,
            code: UNPARSABLE.to_owned(),
            field: None,
            message,
        }]);
    }
}

/// A compiled schema and how to check records against it.
pub struct Validator {
    schema: Schema,
    /// Rows of an upsert dataset carry only the fields they change: required fields are not
    /// checked.
    upsert: bool,
    /// The record-size guardrail of a Profile-enabled dataset.
    record_kind: Option<RecordKind>,
}

impl Validator {
    /// The check of records of `dataset` (when known: its tags decide upsert and the record
    /// size guardrail) against `schema`.
    pub fn new(schema: &RegistrySchema, dataset: Option<&Dataset>) -> Result<Validator, String> {
        let record_kind = dataset.and_then(|d| guardrails::record_kind(schema, d));
        let upsert = dataset.is_some_and(Dataset::is_upsert);
        let compiled = Schema::compile(&schema.document, Some(&schema.id), None, None)?;
        Ok(Validator {
            schema: compiled,
            upsert,
            record_kind,
        })
    }

    /// Whether a record of `bytes` bytes is over the guardrail: then its row fails (and its
    /// fields are not checked: the platform drops it whole).
    fn too_large(&self, out: &mut FileCheck, row: u64, bytes: usize) -> bool {
        let Some(kind) = self.record_kind.filter(|k| bytes > k.max_bytes()) else {
            return false;
        };
        out.records += 1;
        out.fail([RowProblem {
            row,
            code: guardrails::RECORD_TOO_LARGE.to_owned(),
            field: None,
            message: kind.message(bytes),
        }]);
        true
    }

    /// The compact JSON size of a record, counted without holding it, only when a
    /// guardrail needs it.
    fn json_size(&self, value: &Value) -> usize {
        if self.record_kind.is_none() {
            return 0;
        }
        let mut counter = Counter(0);
        // Writing to a counter cannot fail.
        let _ = serde_json::to_writer(&mut counter, value);
        counter.0
    }

    /// Checks every record `reader` holds, read as `format`.
    pub fn check(
        &self,
        reader: impl Read,
        format: Format,
        multiline_json: bool,
    ) -> io::Result<FileCheck> {
        let mut out = FileCheck::default();
        let reader = BufReader::with_capacity(1 << 16, reader);
        match format {
            Format::Json if multiline_json => self.json_document(reader, &mut out)?,
            Format::Json => out = self.json_lines_in_blocks(reader)?,
            Format::Csv => self.csv(reader, &mut out)?,
            Format::Parquet => {
                out.skipped = Some(
                    "a Parquet file is checked from a file (Validator::check_file), not a stream"
                        .to_owned(),
                );
            }
        }
        Ok(out)
    }

    /// Checks every record of `file`, read as `format` (Parquet from its footer first).
    pub fn check_file(
        &self,
        file: std::fs::File,
        format: Format,
        multiline_json: bool,
    ) -> io::Result<FileCheck> {
        match format {
            Format::Parquet => self.check_parquet(file),
            _ => self.check(file, format, multiline_json),
        }
    }

    pub(super) fn schema(&self) -> &Schema {
        &self.schema
    }

    fn mode(&self, source: Source) -> CheckMode {
        CheckMode {
            source,
            skip_required: self.upsert,
            // As the platform's batch ingestion, which does not check them.
            patterns: false,
        }
    }

    pub(super) fn record(
        &self,
        out: &mut FileCheck,
        row: u64,
        record: &Map<String, Value>,
        source: Source,
    ) {
        out.records += 1;
        let mut issues: Vec<Issue> = Vec::new();
        self.schema.check(record, self.mode(source), &mut issues);
        if !issues.is_empty() {
            out.fail(issues.into_iter().map(|i| RowProblem {
                row,
                code: i.code.code().to_owned(),
                field: Some(i.pointer),
                message: i.message,
            }));
        }
    }

    fn value(&self, out: &mut FileCheck, row: u64, value: Value) {
        match value {
            Value::Object(record) => self.record(out, row, &record, Source::Json),
            other => {
                out.records += 1;
                out.unparsable(
                    row,
                    format!(
                        "expected a JSON object, found {}",
                        batchdrop_xdm::json_kind(&other)
                    ),
                );
            }
        }
    }

    /// A record of a multi-line JSON file: its size is measured as compact JSON.
    fn sized_value(&self, out: &mut FileCheck, row: u64, value: Value) {
        if !self.too_large(out, row, self.json_size(&value)) {
            self.value(out, row, value);
        }
    }

    /// JSON Lines from the row after `rows_before` (a block of a file, `lines`, or all of it).
    pub(super) fn json_lines(
        &self,
        mut reader: impl BufRead,
        rows_before: u64,
        out: &mut FileCheck,
    ) -> io::Result<()> {
        let mut line = Vec::new();
        let mut row = rows_before;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_RECORD_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            row += 1;
            if line.len() > MAX_RECORD_BYTES && line.last() != Some(&b'\n') {
                // Skip the rest of this line without holding it.
                let mut sink = Vec::new();
                while (&mut reader).take(1 << 20).read_until(b'\n', &mut sink)? > 0
                    && sink.last() != Some(&b'\n')
                {
                    sink.clear();
                }
                out.records += 1;
                out.unparsable(row, format!("longer than {MAX_RECORD_BYTES} bytes"));
                continue;
            }
            let mut bytes = line.as_slice();
            if row == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if self.too_large(out, row, bytes.trim_ascii().len()) {
                continue;
            }
            // Most rows pass: checked while parsed, nothing held. Only a row that may not is
            // parsed again into a `Value` to learn its issues.
            if self.schema.passes_json(bytes, self.mode(Source::Json)) {
                out.records += 1;
                continue;
            }
            match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => self.value(out, row, v),
                Err(e) => {
                    out.records += 1;
                    out.unparsable(row, format!("unparsable JSON: {e}"));
                }
            }
        }
    }

    /// Multi-line JSON: one array of objects, or objects one after another.
    fn json_document(&self, mut reader: impl BufRead, out: &mut FileCheck) -> io::Result<()> {
        let first = loop {
            let buf = reader.fill_buf()?;
            let Some(&b) = buf.first() else {
                return Ok(());
            };
            if b.is_ascii_whitespace() || buf.starts_with(b"\xEF\xBB\xBF") {
                let skip = if b.is_ascii_whitespace() { 1 } else { 3 };
                reader.consume(skip);
                continue;
            }
            break b;
        };
        let mut de = serde_json::Deserializer::from_reader(reader);
        let mut row = 0u64;
        let result = if first == b'[' {
            de.deserialize_seq(Elements {
                validator: self,
                out,
                row: &mut row,
            })
            .and_then(|()| de.end())
        } else {
            let mut stream = de.into_iter::<Value>();
            loop {
                match stream.next() {
                    None => break Ok(()),
                    Some(Ok(v)) => {
                        row += 1;
                        self.sized_value(out, row, v);
                    }
                    Some(Err(e)) => break Err(e),
                }
            }
        };
        if let Err(e) = result {
            if e.is_io() {
                return Err(io::Error::other(e));
            }
            // Where the next record starts is unknown past a syntax error.
            out.records += 1;
            let row = row + 1;
            out.unparsable(
                row,
                format!("unparsable JSON: {e}; the rest of the file was not read"),
            );
        }
        Ok(())
    }

    fn csv(&self, mut reader: impl BufRead, out: &mut FileCheck) -> io::Result<()> {
        // An empty header row fails the whole file on the platform (118), whatever the rows
        // below hold; the csv reader would skip a blank first line and take the next row for
        // the header, so the first line is looked at before it reads anything.
        let head = reader.fill_buf()?;
        let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let first_line = first_line
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(first_line);
        if !head.is_empty()
            && first_line
                .iter()
                .all(|b| b.is_ascii_whitespace() || *b == b',' || *b == b'"')
        {
            out.records += 1;
            out.fail([RowProblem {
                row: 1,
                code: EMPTY_HEADER.to_owned(),
                field: None,
                message: "the CSV header row is empty: the first row must name the columns"
                    .to_owned(),
            }]);
            return Ok(());
        }
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(reader);
        let mut record = csv::StringRecord::new();
        let mut columns: Option<(Vec<String>, CsvColumns)> = None;
        loop {
            match csv.read_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => {
                    if let csv::ErrorKind::Io(_) = e.kind() {
                        return Err(io::Error::other(e.to_string()));
                    }
                    let row = e.position().map(|p| p.line()).unwrap_or(0);
                    out.records += 1;
                    out.unparsable(row, format!("unparsable CSV: {e}"));
                    continue;
                }
            }
            let row = record.position().map(|p| p.line()).unwrap_or(0);
            let Some((headers, fields)) = &columns else {
                let headers: Vec<String> = record
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        if i == 0 {
                            h.trim_start_matches('\u{feff}')
                        } else {
                            h
                        }
                        .to_owned()
                    })
                    .collect();
                let fields = CsvColumns::new(Some(&self.schema), &headers);
                columns = Some((headers, fields));
                continue;
            };
            if record.len() != headers.len() {
                out.records += 1;
                out.unparsable(
                    row,
                    format!(
                        "{} fields where the header has {}",
                        record.len(),
                        headers.len()
                    ),
                );
                continue;
            }
            // The row's fields and the commas between them.
            let bytes = record.as_slice().len() + record.len().saturating_sub(1);
            if self.too_large(out, row, bytes) {
                continue;
            }
            let object = fields.record(record.iter());
            self.record(out, row, &object, Source::Csv);
        }
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The elements of a top-level array, each checked as soon as it is parsed.
struct Elements<'a> {
    validator: &'a Validator,
    out: &'a mut FileCheck,
    row: &'a mut u64,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            *self.row += 1;
            self.validator.sized_value(self.out, *self.row, v);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The people schema (`id` integer, required; `name` at most 5 characters).
    pub(in crate::preflight) fn validator() -> Validator {
        let schema = RegistrySchema {
            id: "https://ns.adobe.com/test/schemas/people".into(),
            version: "1.0".into(),
            document: serde_json::json!({
                "type": "object",
                "properties": {"id": {"type": "integer"}, "name": {"type": "string", "maxLength": 5}},
                "required": ["id"]
            }),
        };
        Validator::new(&schema, None).unwrap()
    }

    fn rows(check: &FileCheck) -> Vec<(u64, &str, Option<&str>)> {
        check
            .problems
            .iter()
            .map(|p| (p.row, p.code.as_str(), p.field.as_deref()))
            .collect()
    }

    #[test]
    fn json_lines_rows_are_lines_blank_ones_counted_and_skipped() {
        let text =
            "{\"id\": 1}\n\n{\"id\": \"x\"}\n{oops\n[1]\n{\"name\": \"toolong\", \"id\": 2}\n";
        let check = validator()
            .check(text.as_bytes(), Format::Json, false)
            .unwrap();
        assert_eq!(check.records, 5);
        assert_eq!(check.bad_rows, 4);
        let found = rows(&check);
        assert_eq!(found[0].0, 3);
        assert_eq!(found[0].2, Some("/id"));
        assert_eq!((found[1].0, found[1].1, found[1].2), (4, UNPARSABLE, None));
        assert_eq!((found[2].0, found[2].1), (5, UNPARSABLE));
        assert_eq!((found[3].0, found[3].2), (6, Some("/name")));
    }

    #[test]
    fn json_lines_rows_that_are_not_utf8_fail_as_unparsable_where_they_break() {
        let mut text = b"{\"id\": 1, \"name\": \"a\xffb\"}\n{\"id\": 2}\n".to_vec();
        text.extend_from_slice(b"{\"id\": 3, \"other\": \"\xfe\"}\n");
        let check = validator()
            .check(text.as_slice(), Format::Json, false)
            .unwrap();
        assert_eq!((check.records, check.bad_rows), (3, 2));
        let found: Vec<(u64, &str, &str)> = check
            .problems
            .iter()
            .map(|p| (p.row, p.code.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    1,
                    UNPARSABLE,
                    "unparsable JSON: invalid unicode code point at line 1 column 21"
                ),
                (
                    3,
                    UNPARSABLE,
                    "unparsable JSON: invalid unicode code point at line 1 column 21"
                ),
            ]
        );
    }

    #[test]
    fn a_json_array_numbers_its_elements_and_stops_at_a_syntax_error() {
        let text = "[\n {\"id\": 1},\n {\"name\": \"a\"},\n {\"id\": 3}, {oops}]";
        let check = validator()
            .check(text.as_bytes(), Format::Json, true)
            .unwrap();
        let found = rows(&check);
        assert_eq!(found[0].0, 2, "the element missing its required id");
        assert_eq!((found[1].0, found[1].1), (4, UNPARSABLE));
        assert_eq!(check.records, 4);
    }

    #[test]
    fn csv_rows_are_file_lines_and_ragged_rows_fail() {
        let text = "id,name\n1,a\n2\nseven,b\n4,d\n";
        let check = validator()
            .check(text.as_bytes(), Format::Csv, false)
            .unwrap();
        assert_eq!(check.records, 4);
        let found = rows(&check);
        assert_eq!((found[0].0, found[0].1), (3, UNPARSABLE));
        assert_eq!((found[1].0, found[1].2), (4, Some("/id")));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn a_csv_file_with_an_empty_header_row_fails_as_a_whole_with_118() {
        for text in ["\n1,a\n2,b\n", ",\n1,a\n"] {
            let check = validator()
                .check(text.as_bytes(), Format::Csv, false)
                .unwrap();
            let found = rows(&check);
            assert_eq!(found.len(), 1, "{text:?}: {found:?}");
            assert_eq!((found[0].0, found[0].1), (1, EMPTY_HEADER), "{text:?}");
        }
    }

    #[test]
    fn records_over_the_profile_guardrail_fail_their_row_with_their_size_in_every_format() {
        let schema = RegistrySchema {
            id: "https://ns.adobe.com/test/schemas/events".into(),
            version: "1.0".into(),
            document: serde_json::json!({
                "meta:class": "https://ns.adobe.com/xdm/context/experienceevent",
                "type": "object",
                "properties": {"id": {"type": "integer"}, "note": {"type": "string"}},
            }),
        };
        let dataset = Dataset {
            id: "d".into(),
            name: None,
            schema_ref: None,
            tags: [("unifiedProfile".to_owned(), vec!["enabled:true".to_owned()])].into(),
            raw: Value::Null,
        };
        let events = Validator::new(&schema, Some(&dataset)).unwrap();
        let long = "x".repeat(11_000);
        let big = format!("{{\"id\":2,\"note\":\"{long}\"}}");
        let big_len = big.len();
        let lines = format!("{{\"id\": 1}}\n{big}\n");
        let array = format!("[{{\"id\": 1}},\n {big}]");
        let csv = format!("id,note\n1,a\n2,{long}\n");
        for (text, format, multiline, row, size) in [
            (lines, Format::Json, false, 2, big_len),
            (array, Format::Json, true, 2, big_len),
            (csv, Format::Csv, false, 3, long.len() + 2),
        ] {
            let check = events.check(text.as_bytes(), format, multiline).unwrap();
            assert_eq!((check.records, check.bad_rows), (2, 1), "{format:?}");
            let problem = &check.problems[0];
            assert_eq!(problem.row, row, "{format:?}");
            assert_eq!(problem.code, guardrails::RECORD_TOO_LARGE);
            assert!(
                problem.message.contains(&format!("{size} bytes"))
                    && problem.message.contains("10240"),
                "{format:?}: {}",
                problem.message
            );
        }
        // Not Profile-enabled: no guardrail.
        let lake = Validator::new(&schema, None).unwrap();
        let text = format!("{big}\n");
        assert!(
            lake.check(text.as_bytes(), Format::Json, false)
                .unwrap()
                .is_clean()
        );
    }

    /// A Parquet file with the given columns of one row each.
    fn parquet(columns: Vec<(&str, arrow_array::ArrayRef)>) -> std::fs::File {
        let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        use std::io::Seek;
        file.rewind().unwrap();
        file
    }

    #[test]
    fn parquet_columns_and_rows_are_checked_and_a_file_that_is_not_parquet_is_refused() {
        use arrow_array::{ArrayRef, Int64Array, StringArray};
        use std::sync::Arc;
        let ids = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let names = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
        let good = parquet(vec![
            ("id", ids(vec![1, 2])),
            ("name", names(vec!["a", "b"])),
        ]);
        let check = validator()
            .check_file(good, Format::Parquet, false)
            .unwrap();
        assert_eq!((check.records, check.bad_rows), (2, 0), "{check:?}");
        // A value the schema refuses, on its row.
        let long = parquet(vec![
            ("id", ids(vec![1, 2])),
            ("name", names(vec!["a", "toolong"])),
        ]);
        let check = validator()
            .check_file(long, Format::Parquet, false)
            .unwrap();
        assert_eq!(rows(&check), vec![(2, "INGEST-1543-400", Some("/name"))]);
        // A column of a type the field cannot take: every row.
        let typed = parquet(vec![("id", names(vec!["x", "y"]))]);
        let check = validator()
            .check_file(typed, Format::Parquet, false)
            .unwrap();
        assert_eq!(check.bad_rows, 2, "{check:?}");
        assert!(
            check
                .problems
                .iter()
                .all(|p| p.field.as_deref() == Some("/id"))
        );
        // A column the schema lacks: the whole file, as the platform refuses it.
        let unknown = parquet(vec![("id", ids(vec![1])), ("nickname", names(vec!["n"]))]);
        let check = validator()
            .check_file(unknown, Format::Parquet, false)
            .unwrap();
        let found = rows(&check);
        assert_eq!(
            (found[0].0, found[0].1),
            (0, "INGEST-1542-400"),
            "{check:?}"
        );
        assert!(
            check.problems[0].message.contains("'nickname'"),
            "{check:?}"
        );
        let mut text = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut text, b"{\"id\": 1}\n").unwrap();
        use std::io::Seek;
        text.rewind().unwrap();
        let check = validator()
            .check_file(text, Format::Parquet, false)
            .unwrap();
        assert_eq!(
            rows(&check),
            vec![(0, super::super::parquet::NOT_PARQUET, None)]
        );
    }
}
