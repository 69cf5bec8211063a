//! Reading JSON: JSON Lines (one object per line), and multi-line JSON (`isMultiLineJson`:
//! one array of objects, or objects one after another), streaming, one record held at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

use super::limits::{Capped, Line, RecordBudget, next_line, too_large};
use super::{FileOutcome, MAX_RECORD_BYTES, ReadStop, Reader, Record, cut, json_kind};

/// Whether a line is one JSON object, well formed and UTF-8 throughout: the quick verdict on
/// a record no check inspects. Skipping a value (`IgnoredAny`) checks its syntax without
/// decoding its keys or strings, so the line's UTF-8 is checked first, in one sweep: a row
/// this says no to is parsed again in full, which names its fault.
fn plain_object(bytes: &[u8]) -> bool {
    let opens_object = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        == Some(&b'{');
    opens_object
        && std::str::from_utf8(bytes).is_ok()
        && serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

impl Reader<'_> {
    pub(super) fn read_json_lines(
        &mut self,
        path: &Path,
        name: &str,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        let r = BufReader::with_capacity(1 << 20, File::open(path)?);
        self.json_lines(r, true, name, out).map(|_lines| ())
    }

    /// The lines of `r` (the whole file, or a part of it that starts at a line's start, see
    /// [`Reader::read_part`]), numbered from 1; `file_start`: `r` starts at the file's first
    /// byte (where a byte order mark may be). Returns how many lines it read.
    pub(super) fn json_lines(
        &mut self,
        mut r: impl BufRead,
        file_start: bool,
        name: &str,
        out: &mut FileOutcome,
    ) -> Result<u64, ReadStop> {
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
            if line_no == 1 && file_start {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                self.json_line(out, name, line_no, bytes);
            }
        }
        Ok(line_no)
    }

    /// One line of JSON Lines that is not blank.
    fn json_line(&mut self, out: &mut FileOutcome, name: &str, line_no: u64, bytes: &[u8]) {
        if !self.check.inspects_records() && plain_object(bytes) {
            out.records += 1;
            if let Some(g) = self.good.as_deref_mut() {
                g.line(bytes);
            }
            return;
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

    pub(super) fn read_json_multi(
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
        match document_start(&mut r)? {
            None => Ok(()),
            Some(b'[') => self.json_array(r, &budget, name, out),
            // Pretty-printed objects one after another (also multi-line JSON).
            Some(_) => self.json_objects(r, &budget, name, out),
        }
    }

    /// The elements of one top-level array, each checked as it is parsed.
    fn json_array(
        &mut self,
        r: impl BufRead,
        budget: &RecordBudget,
        name: &str,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
        budget.mark();
        let mut de = serde_json::Deserializer::from_reader(r);
        let mut index = 0u64;
        let res = ArraySeed {
            reader: self,
            out,
            name,
            index: &mut index,
            budget,
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
                    format!("file '{name}' row {row} (array element {row}): unparsable JSON: {e}")
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

    /// Objects one after another; the first one that cannot be parsed ends the file.
    fn json_objects(
        &mut self,
        r: impl BufRead,
        budget: &RecordBudget,
        name: &str,
        out: &mut FileOutcome,
    ) -> Result<(), ReadStop> {
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

/// Skips a BOM and whitespace; the document's first byte, if any.
fn document_start(r: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let skip = if buf.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            buf.iter().take_while(|b| b.is_ascii_whitespace()).count()
        };
        if skip == 0 {
            return Ok(Some(buf[0]));
        }
        r.consume(skip);
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

#[cfg(test)]
mod tests {
    use super::super::MAX_RECORD_BYTES;
    use super::super::test_support::*;
    use crate::codes::Code;

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
        assert_eq!(failures[0].first().code, Code::UnparsableRow);
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
}
