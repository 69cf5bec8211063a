//! The per-record check of a dataset with a schema (or an upsert dataset): every format is
//! turned into a JSON object and checked by [`Schema::check`].
//!
//! - JSON records are checked as they are.
//! - CSV rows map their columns to fields by header; a header `a.b` names the nested field
//!   `/a/b` unless the schema has a top-level field spelled `a.b`. An empty cell is an absent
//!   value; cells are text and convert like JSON strings (and to booleans from true/false).
//! - Parquet columns must be fields of the schema (a file may carry a subset of them; a column
//!   the schema lacks refuses the file); each row is checked like a JSON object.
//!
//! For upsert datasets the rows that pass are written, with their identity, to a JSON Lines
//! file that processing merges into the dataset's current view once the batch succeeds.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::formats::{Record, RecordCheck, RowIssue, parquet_row_json};
use super::schema::{CODE_REQUIRED, CODE_TYPE, CheckMode, Issue, Schema, Source, value_at};

/// Checks the records of one file.
pub struct SchemaCheck<'a> {
    schema: Option<&'a Schema>,
    mode: CheckMode,
    /// For CSV: each column's path of field names (computed at the first row).
    csv_paths: Option<Vec<Vec<String>>>,
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
            },
            csv_paths: None,
            upsert,
            issues: Vec::new(),
        }
    }

    fn csv_object(&mut self, headers: &[String], fields: &csv::StringRecord) -> Map<String, Value> {
        let schema = self.schema;
        let paths = self.csv_paths.get_or_insert_with(|| {
            headers
                .iter()
                .map(|h| {
                    let literal = schema.is_none_or(|s| s.has_top_field(h));
                    if literal || !h.contains('.') {
                        vec![h.clone()]
                    } else {
                        h.split('.').map(str::to_owned).collect()
                    }
                })
                .collect()
        });
        let mut root = Map::new();
        for (path, cell) in paths.iter().zip(fields.iter()) {
            if cell.is_empty() {
                continue;
            }
            insert_path(&mut root, path, Value::String(cell.to_owned()));
        }
        root
    }

    fn finish(&mut self, record: &Map<String, Value>) -> Result<(), Vec<RowIssue>> {
        self.issues.clear();
        if let Some(schema) = self.schema {
            schema.check(record, self.mode, &mut self.issues);
        }
        if let Some(up) = self.upsert.as_deref_mut() {
            match value_at(record, &up.identity) {
                Some(v @ (Value::String(_) | Value::Number(_))) if !is_blank(v) => {
                    if self.issues.is_empty() {
                        let id = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        up.write(&id, record);
                    }
                }
                Some(Value::Null) | None => self.issues.push(Issue {
                    code: CODE_REQUIRED,
                    pointer: up.identity.clone(),
                    message: format!(
                        "{}: the identity field is missing or null: every row of an upsert dataset must carry its identity",
                        up.identity
                    ),
                }),
                Some(_) => self.issues.push(Issue {
                    code: CODE_TYPE,
                    pointer: up.identity.clone(),
                    message: format!(
                        "{}: the identity must be a non-empty string or a number",
                        up.identity
                    ),
                }),
            }
        }
        if self.issues.is_empty() {
            return Ok(());
        }
        Err(self
            .issues
            .drain(..)
            .map(|i| RowIssue {
                code: i.code.to_owned(),
                message: i.message,
                pointer: Some(i.pointer),
            })
            .collect())
    }
}

fn is_blank(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.trim().is_empty())
}

fn insert_path(root: &mut Map<String, Value>, path: &[String], v: Value) {
    let (last, parents) = path
        .split_last()
        .expect("a header has at least one segment");
    let mut cur = root;
    for p in parents {
        let slot = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut().expect("just made an object");
    }
    cur.insert(last.clone(), v);
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

    fn parquet_columns(&mut self, arrow: &arrow_schema::Schema) -> Result<(), (String, String)> {
        let Some(schema) = self.schema else {
            return Ok(());
        };
        let mut paths: Vec<Vec<String>> = Vec::new();
        for f in arrow.fields() {
            collect_paths(f, Vec::new(), &mut paths);
        }
        for path in &paths {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Err(at) = schema.check_path(&segs) {
                let column = path.join(".");
                let field = path[..=at].join(".");
                let fields = schema.top_fields().join(", ");
                let where_ = if at == 0 {
                    format!("the schema's record fields are: {fields}")
                } else {
                    format!("'{}' has no field '{}'", path[..at].join("."), path[at])
                };
                return Err((
                    CODE_TYPE.to_owned(),
                    format!(
                        "Parquet column '{column}' is not a field of schema {} ('{field}' is unknown; {where_}): a Parquet file must carry a subset of the dataset's fields; rename or drop the column",
                        schema.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The leaf paths of a Parquet column (through structs and lists of structs).
fn collect_paths(f: &arrow_schema::Field, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    use arrow_schema::DataType;
    prefix.push(f.name().clone());
    let mut dt = f.data_type();
    while let DataType::List(inner) | DataType::LargeList(inner) = dt {
        dt = inner.data_type();
    }
    match dt {
        DataType::Struct(children) if !children.is_empty() => {
            for c in children {
                collect_paths(c, prefix.clone(), out);
            }
        }
        _ => out.push(prefix),
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

    #[test]
    fn csv_headers_map_to_nested_fields() {
        let schema = Schema::compile(
            &json!({"type": "object", "properties": {
                "a.b": {"type": "integer"},
                "person": {"type": "object", "properties": {"age": {"type": "integer"}}}}}),
            Some("s"),
            None,
            None,
        )
        .unwrap();
        let mut check = SchemaCheck::new(Some(&schema), Source::Csv, None);
        let headers = vec!["a.b".to_owned(), "person.age".to_owned(), "x".to_owned()];
        let ok = csv::StringRecord::from(vec!["1", "2", ""]);
        assert!(
            check
                .check(Record::Csv {
                    headers: &headers,
                    fields: &ok
                })
                .is_ok()
        );
        let bad = csv::StringRecord::from(vec!["x", "y", "z"]);
        let issues = check
            .check(Record::Csv {
                headers: &headers,
                fields: &bad,
            })
            .unwrap_err();
        let ptrs: Vec<_> = issues.iter().map(|i| i.pointer.clone().unwrap()).collect();
        assert_eq!(ptrs, vec!["/a.b", "/person/age"]);
    }
}
