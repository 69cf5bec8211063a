//! Reading CSV: the batch's dialect (delimiter, quote, escape, header row), rows as records
//! keyed by header, one row held at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::limits::{Capped, Line, RecordBudget, next_line, too_large};
use super::{FileOutcome, InputFormat, MAX_RECORD_BYTES, ReadStop, Reader, Record, cut};
use crate::codes::Code;

/// The columns, known from the first row.
struct Columns {
    headers: Vec<String>,
    /// No row was read yet.
    first: bool,
}

/// What to do after a row that could not be read.
enum AfterError {
    Continue,
    Stop,
}

impl Reader<'_> {
    pub(super) fn read_csv(
        &mut self,
        path: &Path,
        name: &str,
        fmt: &InputFormat,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
        let Some(head) = self.csv_first_line(&mut r, name, fmt, out)? else {
            return Ok(());
        };
        let budget = RecordBudget::new(MAX_RECORD_BYTES);
        let mut csv = csv_reader(fmt).from_reader(Capped {
            inner: std::io::Cursor::new(head).chain(r),
            budget: &budget,
        });
        let mut columns = Columns {
            headers: Vec::new(),
            first: true,
        };
        let mut record = csv::StringRecord::new();
        loop {
            budget.mark();
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => self.csv_row(&mut columns, &record, name, fmt, out)?,
                Err(e) => {
                    let after = if matches!(e.kind(), csv::ErrorKind::Io(_)) && budget.tripped() {
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
                        AfterError::Stop
                    } else {
                        self.csv_error(&e, &columns, name, fmt, out)?
                    };
                    if let AfterError::Stop = after {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// The first line, checked before the CSV parser sees it: a header row must name the
    /// columns and fit in `MAX_RECORD_BYTES`. `None`: the file is refused (`out` says why).
    fn csv_first_line(
        &mut self,
        r: &mut impl BufRead,
        name: &str,
        fmt: &InputFormat,
        out: &mut FileOutcome,
    ) -> Result<Option<Vec<u8>>, ReadStop> {
        let mut first_line = Vec::new();
        if let Line::TooLong { bytes } = next_line(r, &mut first_line)? {
            let message = too_large(name, "row 1", bytes);
            if fmt.header {
                out.file_error = Some((
                    Code::CsvEmptyHeader,
                    format!("CSV file '{name}': the header row cannot be read: {message}"),
                ));
                return Ok(None);
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
                Code::CsvEmptyHeader,
                format!(
                    "CSV file '{name}' has an empty header row (line 1): the first row must name the columns"
                ),
            ));
            return Ok(None);
        }
        Ok(Some(head.to_vec()))
    }

    /// One row the parser read: the header row, or a record.
    fn csv_row(
        &mut self,
        columns: &mut Columns,
        record: &csv::StringRecord,
        name: &str,
        fmt: &InputFormat,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if columns.first {
            columns.first = false;
            if fmt.header {
                columns.headers = record.iter().map(str::to_owned).collect();
                if let Some(g) = self.good.as_deref_mut() {
                    g.csv_record(record);
                }
                return Ok(());
            }
            columns.headers = (0..record.len()).map(|i| format!("_c{i}")).collect();
        }
        if line.is_multiple_of(4096) && self.cancelled() {
            return Err(ReadStop::Cancelled);
        }
        if record.len() != columns.headers.len() {
            out.records += 1;
            let raw = record.iter().collect::<Vec<_>>().join(",");
            self.fail(
                out,
                Some(line),
                format!(
                    "file '{name}' row {line}: {} fields where the header has {}",
                    record.len(),
                    columns.headers.len()
                ),
                Some(cut(&raw)),
            );
            return Ok(());
        }
        let rec = Record::Csv {
            headers: &columns.headers,
            fields: record,
        };
        let ok = self.checked(out, name, line, rec, || {
            record.iter().collect::<Vec<_>>().join(",")
        });
        if ok && let Some(g) = self.good.as_deref_mut() {
            g.csv_record(record);
        }
        Ok(())
    }

    /// A row the parser could not read (not for being too long): a failed row, or the file
    /// refused when it is the header row.
    fn csv_error(
        &mut self,
        e: &csv::Error,
        columns: &Columns,
        name: &str,
        fmt: &InputFormat,
        out: &mut FileOutcome,
    ) -> Result<AfterError, ReadStop> {
        if let csv::ErrorKind::Io(_) = e.kind() {
            return Err(ReadStop::Io(std::io::Error::other(e.to_string())));
        }
        if columns.first && fmt.header {
            out.file_error = Some((
                Code::UnparsableRow,
                format!("CSV file '{name}': the header row cannot be read: {e}"),
            ));
            return Ok(AfterError::Stop);
        }
        let line = e.position().map(|p| p.line());
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
        Ok(AfterError::Continue)
    }
}

/// A CSV parser for the batch's dialect; rows are checked against the header by the reader
/// (rows of another width are failed rows, not errors).
fn csv_reader(fmt: &InputFormat) -> csv::ReaderBuilder {
    let mut builder = csv::ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(true)
        .delimiter(fmt.delimiter)
        .quote(fmt.quote);
    if let Some(e) = fmt.escape {
        builder.escape(Some(e)).double_quote(false);
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
        assert_eq!(code, Code::CsvEmptyHeader);
        assert!(
            msg.contains("header row") && msg.contains("16777216"),
            "{msg}"
        );
    }
}
