//! Records that are not JSON objects yet, made into one the way the platform reads them, and
//! the identity of an upsert row.
//!
//! - CSV rows map their columns to fields by header; a header `a.b` names the nested field
//!   `/a/b` unless the schema has a top-level field spelled `a.b`. An empty cell is an absent
//!   value; cells are text (they convert as `check` says for [`crate::Source::Csv`]).
//! - An upsert row must carry its identity: a non-empty string or a number.

use serde_json::{Map, Value};

use crate::issue::{Issue, IssueCode};
use crate::pointer::value_at;
use crate::schema::Schema;

/// How a CSV file's columns map to a record's fields.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    /// Each column's path of field names.
    paths: Vec<Vec<String>>,
}

impl CsvColumns {
    /// The columns of a header row. Without a schema, every header names a top-level field.
    pub fn new(schema: Option<&Schema>, headers: &[String]) -> CsvColumns {
        let paths = headers
            .iter()
            .map(|h| {
                let literal = schema.is_none_or(|s| s.has_top_field(h));
                if literal || !h.contains('.') {
                    vec![h.clone()]
                } else {
                    h.split('.').map(str::to_owned).collect()
                }
            })
            .collect();
        CsvColumns { paths }
    }

    /// One row as a record: each non-empty cell a string at its column's field.
    pub fn record<'c>(&self, cells: impl IntoIterator<Item = &'c str>) -> Map<String, Value> {
        let mut root = Map::new();
        for (path, cell) in self.paths.iter().zip(cells) {
            if cell.is_empty() {
                continue;
            }
            insert_path(&mut root, path, Value::String(cell.to_owned()));
        }
        root
    }
}

fn insert_path(root: &mut Map<String, Value>, path: &[String], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = root;
    for p in parents {
        let slot = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            unreachable!("made an object just above")
        };
        cur = next;
    }
    cur.insert(last.clone(), v);
}

/// The identity of an upsert row (the value at `pointer`, as text), or the issue that it has
/// none an upsert dataset can merge by.
pub fn identity(record: &Map<String, Value>, pointer: &str) -> Result<String, Issue> {
    match value_at(record, pointer) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Null) | None => Err(Issue {
            code: IssueCode::Required,
            pointer: pointer.to_owned(),
            message: format!(
                "{pointer}: the identity field is missing or null: every row of an upsert dataset must carry its identity"
            ),
        }),
        Some(_) => Err(Issue {
            code: IssueCode::Type,
            pointer: pointer.to_owned(),
            message: format!("{pointer}: the identity must be a non-empty string or a number"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_headers_map_to_nested_fields_unless_the_schema_spells_them() {
        let schema = Schema::compile(
            &json!({"type": "object", "properties": {
                "a.b": {"type": "integer"},
                "person": {"type": "object", "properties": {"age": {"type": "integer"}}}}}),
            Some("s"),
            None,
            None,
        )
        .unwrap();
        let headers = vec!["a.b".to_owned(), "person.age".to_owned(), "x".to_owned()];
        let columns = CsvColumns::new(Some(&schema), &headers);
        assert_eq!(
            Value::Object(columns.record(["1", "2", ""])),
            json!({"a.b": "1", "person": {"age": "2"}})
        );
        let plain = CsvColumns::new(None, &headers);
        assert_eq!(
            Value::Object(plain.record(["1", "2", "3"])),
            json!({"a.b": "1", "person.age": "2", "x": "3"})
        );
    }

    #[test]
    fn an_identity_is_a_non_empty_string_or_a_number() {
        let row = json!({"id": "a", "n": 7, "blank": " ", "list": [1], "none": null});
        let row = row.as_object().unwrap();
        assert_eq!(identity(row, "/id"), Ok("a".to_owned()));
        assert_eq!(identity(row, "/n"), Ok("7".to_owned()));
        assert_eq!(identity(row, "/blank").unwrap_err().code, IssueCode::Type);
        assert_eq!(identity(row, "/list").unwrap_err().code, IssueCode::Type);
        assert_eq!(
            identity(row, "/none").unwrap_err().code,
            IssueCode::Required
        );
        let missing = identity(row, "/missing").unwrap_err();
        assert_eq!(missing.code, IssueCode::Required);
        assert!(
            missing.message.starts_with("/missing: "),
            "{}",
            missing.message
        );
    }
}
