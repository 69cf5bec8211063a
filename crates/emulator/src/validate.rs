//! The per-record check of a dataset with a schema (or an upsert dataset): every format is
//! turned into a JSON object and checked by `batchdrop_xdm` (which owns the rules, the
//! conversions and the codes; this module only adapts the formats' records to it).
//!
//! - JSON records are checked as they are.
//! - CSV rows become records by header ([`CsvColumns`]: `a.b` names the nested field `/a/b`
//!   unless the schema spells a top-level field `a.b`); cells are text.
//! - Parquet columns must be fields of the schema (a file may carry a subset of them; a column
//!   the schema lacks refuses the file); each row is checked like a JSON object.
//!
//! For upsert datasets the rows that pass are written, with their identity, to a JSON Lines
//! file that processing merges into the dataset's current view once the batch succeeds.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use batchdrop_xdm::{CheckMode, CsvColumns, Issue, Schema, Source};
use serde_json::{Map, Value, json};

use super::codes::Code;
use super::formats::{Record, RecordCheck, RowIssue, parquet_row_json};

/// Checks the records of one file.
pub struct SchemaCheck<'a> {
    schema: Option<&'a Schema>,
    mode: CheckMode,
    /// For CSV: how the columns map to fields (made at the first row).
    csv_columns: Option<CsvColumns>,
    upsert: Option<&'a mut UpsertCapture>,
    issues: Vec<Issue>,
}

impl<'a> SchemaCheck<'a> {
    pub fn new(
        schema: Option<&'a Schema>,
        source: Source,
        upsert: Option<&'a mut UpsertCapture>,
    ) -> SchemaCheck<'a> {
        SchemaCheck {
            schema,
            mode: CheckMode {
                source,
                // Upsert rows carry only the fields they change.
                skip_required: upsert.is_some(),
                // As the platform's batch ingestion, which does not check them.
                patterns: false,
            },
            csv_columns: None,
            upsert,
            issues: Vec::new(),
        }
    }

    fn csv_object(&mut self, headers: &[String], fields: &csv::StringRecord) -> Map<String, Value> {
        let schema = self.schema;
        self.csv_columns
            .get_or_insert_with(|| CsvColumns::new(schema, headers))
            .record(fields.iter())
    }

    fn finish(&mut self, record: &Map<String, Value>) -> Result<(), Vec<RowIssue>> {
        self.issues.clear();
        if let Some(schema) = self.schema {
            schema.check(record, self.mode, &mut self.issues);
        }
        if let Some(up) = self.upsert.as_deref_mut() {
            match batchdrop_xdm::identity(record, &up.identity) {
                Ok(id) if self.issues.is_empty() => up.write(&id, record),
                Ok(_) => {}
                Err(issue) => self.issues.push(issue),
            }
        }
        if self.issues.is_empty() {
            return Ok(());
        }
        Err(self
            .issues
            .drain(..)
            .map(|i| RowIssue {
                code: i.code.into(),
                message: i.message,
                pointer: Some(i.pointer),
            })
            .collect())
    }
}

impl RecordCheck for SchemaCheck<'_> {
    fn check(&mut self, record: Record<'_>) -> Result<(), Vec<RowIssue>> {
        match record {
            Record::Json(Value::Object(m)) => self.finish(m),
            Record::Json(_) => Ok(()),
            Record::Csv { headers, fields } => {
                let obj = self.csv_object(headers, fields);
                self.finish(&obj)
            }
            Record::Parquet { batch, row } => match parquet_row_json(batch, row) {
                Value::Object(m) => self.finish(&m),
                _ => Ok(()),
            },
        }
    }

    fn parquet_columns(&mut self, arrow: &arrow_schema::Schema) -> Result<(), (Code, String)> {
        match self.schema {
            Some(schema) => batchdrop_xdm::parquet::check_columns(schema, arrow)
                .map_err(|(issue, message)| (issue.into(), message)),
            None => Ok(()),
        }
    }
}

/// The good rows of an upsert batch, with their identity, on their way to the current view.
pub struct UpsertCapture {
    /// JSON pointer of the identity field.
    pub identity: String,
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    error: Option<std::io::Error>,
    pub rows: u64,
}

impl UpsertCapture {
    pub fn create(path: &Path, identity: &str) -> std::io::Result<UpsertCapture> {
        Ok(UpsertCapture {
            identity: identity.to_owned(),
            path: path.to_path_buf(),
            out: BufWriter::new(std::fs::File::create(path)?),
            error: None,
            rows: 0,
        })
    }

    fn write(&mut self, id: &str, record: &Map<String, Value>) {
        let line = json!({"i": id, "r": record});
        let r = serde_json::to_writer(&mut self.out, &line)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"));
        match r {
            Ok(()) => self.rows += 1,
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    /// Flushes; returns the file to merge.
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.path)
    }
}

/// Merges an upsert row into the current record: objects merge field by field (recursively),
/// anything else (scalars, arrays) replaces what was there. Fields the row does not carry (or
/// carries as null) stay.
pub fn merge(current: &mut Value, update: &Value) {
    match (current, update) {
        (Value::Object(cur), Value::Object(upd)) => {
            for (k, v) in upd {
                if v.is_null() {
                    continue;
                }
                match cur.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        cur.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (cur, upd) => *cur = upd.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_what_the_update_does_not_carry() {
        let mut cur =
            json!({"id": "1", "name": {"first": "A", "last": "B"}, "tags": [1, 2], "n": 1});
        merge(
            &mut cur,
            &json!({"id": "1", "name": {"first": "C"}, "tags": [3], "n": null, "new": true}),
        );
        assert_eq!(
            cur,
            json!({"id": "1", "name": {"first": "C", "last": "B"}, "tags": [3], "n": 1, "new": true})
        );
    }
}
